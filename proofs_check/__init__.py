"""proofs_check: each module re-derives one result symbolically with SymPy and says PASS or FAIL.

Run `python -m proofs_check [--list] [--only NAME] [--json]`. Every check is a function
returning a `CheckOutcome`; the tests call the same functions, and each has a negative
control (a deliberately wrong formula must FAIL), so no check is unable to fail.
"""

from .runner import CHECKS, CheckOutcome, run

__all__ = ["CHECKS", "CheckOutcome", "run"]
