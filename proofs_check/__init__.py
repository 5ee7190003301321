"""proofs_check: each module re-derives one result symbolically with SymPy and says PASS or FAIL.

Run `python -m proofs_check [--list] [--only NAME] [--json] [--quick]`; --quick runs each
module on its QUICK parameters (fewer, smaller cases; `looptheory verify --quick` does the
same). Every check is a function returning a `CheckOutcome`; the tests call the same
functions, and each has a negative control (a deliberately wrong formula must FAIL), so no
check is unable to fail.
"""

from .runner import CHECKS, QUICK, CheckOutcome, run

__all__ = ["CHECKS", "QUICK", "CheckOutcome", "run"]
