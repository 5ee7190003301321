"""Registry and runner of the symbolic checks.

Each module's `check()` returns a `CheckOutcome` (name, passed, detail); the tests call these
directly, with deliberately wrong formulas as negative controls. `run()` returns one
`looptheory.record.Record` per module (kind "proof", id "proofs_check.NAME", verdict "pass" or
"fail"), the record every verified item of looptheory returns; `SPECS` declares them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from fractions import Fraction


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    detail: str
    seconds: float = 0.0
    data: dict = field(default_factory=dict)


def _registry():
    from . import (
        chen_contraction,
        dominance_infinite_n,
        fixed_point,
        flow_bound,
        gd_equivalence,
        gradient_formula,
        one_loop_optimum,
        wishart_moments,
    )

    return {
        "gd_equivalence": gd_equivalence.check,
        "wishart_moments": wishart_moments.check,
        "one_loop_optimum": one_loop_optimum.check,
        "fixed_point": fixed_point.check,
        "gradient_formula": gradient_formula.check,
        "dominance_infinite_n": dominance_infinite_n.check,
        "flow_bound": flow_bound.check,
        "chen_contraction": chen_contraction.check,
    }


CHECKS = _registry()

PREFIX = "proofs_check."


def _plain(value):
    """A default argument as report text: numbers and tuples as written, fractions as p/q."""
    if isinstance(value, Fraction):
        return str(value)
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_plain(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def declared_params(fn) -> dict:
    """The parameters a check runs with: its data defaults (cases, dimensions, tolerances) as
    written in the module, and the names of the formulas under test (the arguments that the
    negative-control tests replace with wrong ones)."""
    params, formulas = {}, []
    for name, p in inspect.signature(fn).parameters.items():
        if p.default is inspect.Parameter.empty:
            continue
        if p.default is None or callable(p.default):
            formulas.append(name)
        else:
            params[name] = _plain(p.default)
    if formulas:
        params["formulas under test (replaced by wrong ones in the negative-control tests)"] = ", ".join(formulas)
    return params


def _title(fn, name) -> str:
    return ((fn.__doc__ or name).strip().splitlines() or [name])[0]


def _make_spec(name, fn):
    from looptheory.record import Outcome, Spec

    def check(quick, params):
        res = fn()
        return Outcome("pass" if res.passed else "fail", res.detail, dict(res.data or {}))

    module = inspect.getmodule(fn)
    statement = " ".join((module.__doc__ or "").strip().split("\n\n")[0].split()) if module else ""
    return Spec(PREFIX + name, "proof", _title(fn, name), check, statement=statement,
                source=f"looptheory (proofs_check/{name}.py)", region=declared_params(fn))


SPECS = {name: _make_spec(name, fn) for name, fn in CHECKS.items()}


def resolve(name: str) -> str:
    """The module name for `name` given as NAME or proofs_check.NAME; ValueError naming --only."""
    bare = name[len(PREFIX):] if isinstance(name, str) and name.startswith(PREFIX) else name
    if bare not in CHECKS:
        raise ValueError(f"--only: unknown check {name!r}; known: {', '.join(CHECKS)}")
    return bare


def run(only=None) -> list:
    """Run every check (or only the named one, NAME or proofs_check.NAME) and return their
    Records (looptheory.record.Record, kind "proof"), timed."""
    names = list(CHECKS) if only is None else [resolve(only)]
    return [SPECS[name].run(quick=False) for name in names]
