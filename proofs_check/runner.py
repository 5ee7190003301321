"""Registry and runner of the symbolic checks.

Each module's `check()` returns a `CheckOutcome` (name, passed, detail); the tests call these
directly, with deliberately wrong formulas as negative controls. `run()` returns one
`looptheory.record.Record` per module (kind "proof", id "proofs_check.NAME", verdict "pass" or
"fail"), the record every verified item of looptheory returns; `SPECS` declares them.

Quick and full runs: `check()`'s data defaults are the full run's parameters; each module's
`QUICK` dict (written next to `check`, before any result) overrides some of them for the quick
run (`looptheory verify --quick`, `python -m proofs_check --quick`): smaller symbolic sizes,
fewer cases. The same assertions run on fewer cases, and the summary line names the cases run.
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


def data_params(fn) -> list:
    """The names of a check's data parameters (cases, dimensions, tolerances): those with a
    default that is neither None nor a function (those are the formulas under test)."""
    return [name for name, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty and p.default is not None and not callable(p.default)]


def build_registry() -> dict:
    """{name: (check function, its quick-run overrides)} for every module, in the order they
    run; ValueError when a module's QUICK names something that is not a data parameter of its
    check() (a misspelt override would silently leave the quick run at full size)."""
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

    out = {}
    for module in (gd_equivalence, wishart_moments, one_loop_optimum, fixed_point, gradient_formula,
                   dominance_infinite_n, flow_bound, chen_contraction):
        name = module.__name__.rsplit(".", 1)[1]
        unknown = set(module.QUICK) - set(data_params(module.check))
        if unknown:
            raise ValueError(f"proofs_check.{name}.QUICK: {sorted(unknown)} are not data parameters of check()")
        out[name] = (module.check, dict(module.QUICK))
    return out


_REGISTRY = build_registry()

#: {name: check function}; each returns a CheckOutcome, with the full run's parameters by default.
CHECKS = {name: fn for name, (fn, _) in _REGISTRY.items()}

#: {name: the keyword arguments of check() for the quick run} (each module's QUICK).
QUICK = {name: quick for name, (_, quick) in _REGISTRY.items()}

PREFIX = "proofs_check."


def _plain(value):
    """A default argument as report text: numbers and tuples as written, fractions as p/q."""
    if isinstance(value, Fraction):
        return str(value)
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_plain(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def declared_params(fn, overrides=None) -> dict:
    """The parameters a check runs with: its data defaults (cases, dimensions, tolerances) as
    written in the module, replaced by `overrides` (the quick run's) where given, and the names
    of the formulas under test (the arguments that the negative-control tests replace with wrong
    ones)."""
    overrides = overrides or {}
    data = data_params(fn)
    params, formulas = {}, []
    for name, p in inspect.signature(fn).parameters.items():
        if name in data:
            params[name] = _plain(overrides.get(name, p.default))
        elif p.default is not inspect.Parameter.empty:
            formulas.append(name)
    if formulas:
        params["formulas under test (replaced by wrong ones in the negative-control tests)"] = ", ".join(formulas)
    return params


def _title(fn, name) -> str:
    return ((fn.__doc__ or name).strip().splitlines() or [name])[0]


def _make_spec(name, fn, quick_args):
    from looptheory.record import Outcome, Spec

    def check(quick, params):
        res = fn(**(quick_args if quick else {}))
        return Outcome("pass" if res.passed else "fail", res.detail, dict(res.data or {}))

    def region(quick):
        return declared_params(fn, quick_args if quick else None)

    module = inspect.getmodule(fn)
    statement = " ".join((module.__doc__ or "").strip().split("\n\n")[0].split()) if module else ""
    return Spec(PREFIX + name, "proof", _title(fn, name), check, statement=statement,
                source=f"looptheory (proofs_check/{name}.py)", region=region)


SPECS = {name: _make_spec(name, fn, QUICK[name]) for name, fn in CHECKS.items()}


def resolve(name: str) -> str:
    """The module name for `name` given as NAME or proofs_check.NAME; ValueError naming --only."""
    bare = name[len(PREFIX):] if isinstance(name, str) and name.startswith(PREFIX) else name
    if bare not in CHECKS:
        raise ValueError(f"--only: unknown check {name!r}; known: {', '.join(CHECKS)}")
    return bare


def run(only=None, quick: bool = False) -> list:
    """Run every check (or only the named one, NAME or proofs_check.NAME), with the full run's
    parameters or (quick=True) each module's QUICK ones, and return their Records
    (looptheory.record.Record, kind "proof", mode "quick" or "full"), timed."""
    if not isinstance(quick, bool):
        raise TypeError(f"quick: expected True or False, got {type(quick).__name__}")
    names = list(CHECKS) if only is None else [resolve(only)]
    return [SPECS[name].run(quick=quick) for name in names]
