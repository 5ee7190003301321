"""One result record for everything the toolkit verifies, and the declaration that produces it.

Every item `looptheory verify` runs returns a `Record`: the toolkit's own checks
(`looptheory.checks`, kind "check"), the symbolic re-derivations of `proofs_check` (kind
"proof"), the papers' claims (`looptheory.claims`, `looptheory.chen`, kind "claim") and the
trained-model experiments (`looptheory.experiments`, kind "experiment"). The report,
results.json and the command line handle this one shape.

The field `verdict` has one vocabulary per kind:

  claims:                      holds / fails / vacuous / unresolved
  checks, proofs, experiments: pass / fail / unresolved

  holds      every declared case satisfies the statement, and at least one is non-vacuous;
  fails      a declared case violates it (the case is in `counterexample`);
  vacuous    true in every declared case only because the bound says nothing there;
  pass/fail  a check of the toolkit (or a symbolic derivation) agrees / disagrees with its
             independent route; an experiment ran its declared budget and every number its
             summary rests on is resolved and any declared target is met (pass), or a declared
             target was missed or it crashed (fail);
  unresolved the evidence could not decide: an optimisation it rests on did not converge (the
             record says what it reached, in `optimiser`), a Monte Carlo estimate whose error
             cannot be trusted (a heavy tail the sample cannot resolve), a budget too small for
             its target, or the item crashed before deciding (`complete` is then False).

A `Spec` declares one item once: its id, kind, title, statement, source (the paper and its
theorem as reported, or "looptheory"), its declared region (the parameters, fixed before any
result is seen; a dict, or a function of `quick` returning one) and the function that checks it.
`Spec.run(quick)` calls `check(quick, params)` with the declared parameters and wraps the
`Outcome` it returns into a `Record`, timed, with the spec's identity; an exception becomes a
record too (verdict "fail", or "unresolved" for a claim, with `complete=False`). A user-facing
claim such as `Claim(id, statement, source, region, check)` with a grid or a strategy as region is
a `Spec` whose check walks that region.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import numpy as np

KINDS = ("check", "claim", "experiment", "proof")
CLAIM_VERDICTS = ("holds", "fails", "vacuous", "unresolved")
STATUS_VERDICTS = ("pass", "fail", "unresolved")


def verdicts_for(kind: str) -> tuple:
    """The verdicts a record of this kind may carry."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    return CLAIM_VERDICTS if kind == "claim" else STATUS_VERDICTS


def _texts(name, value) -> tuple:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    try:
        out = tuple(value)
    except TypeError:
        raise TypeError(f"{name}: expected a tuple of strings, got {type(value).__name__}") from None
    if not all(isinstance(v, str) for v in out):
        raise TypeError(f"{name}: expected a tuple of strings")
    return out


@dataclass(frozen=True)
class Record:
    """The result of one verified item.

    id, kind ("check" | "claim" | "experiment" | "proof"), title: what it is;
    source: the paper and its theorem as reported (claims), or "looptheory";
    statement: what is tested, in looptheory's conventions (docs/conventions.md);
    verdict: see the module docstring (claims: holds / fails / vacuous / unresolved; the other
    kinds: pass / fail / unresolved); summary: one paragraph, with the numbers;
    params: the declared parameters (region, seeds, sample sizes), fixed before running;
    evidence: numbers and tables (a list of dicts under "rows" is the item's table);
    worst_case: the case closest to (or furthest beyond) the statement's limit, or None;
    counterexample: a case that violates the statement, or None;
    examples_run: how many cases (cells, prompts, flows, ...) the verdict rests on, or None;
    optimiser: the status text of every optimisation the verdict rests on (what it reached);
    figures: names of the report figures drawn from this record's evidence;
    complete: False when the item stopped before covering its declared parameters (a crash);
    mode: "quick" or "full" (the numbers are from that run); seconds: running time.
    """

    id: str
    kind: str
    title: str
    verdict: str
    summary: str
    source: str = "looptheory"
    statement: str = ""
    params: dict = field(default_factory=dict)
    evidence: dict = field(default_factory=dict)
    worst_case: Any = None
    counterexample: Any = None
    examples_run: int | None = None
    optimiser: tuple = ()
    figures: tuple = ()
    complete: bool = True
    mode: str = ""
    seconds: float = 0.0

    def __post_init__(self):
        for name in ("id", "title", "summary", "source", "statement", "mode"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name}: expected a string, got {type(getattr(self, name)).__name__}")
        if self.verdict not in verdicts_for(self.kind):
            raise ValueError(f"verdict: a {self.kind} record has one of {', '.join(verdicts_for(self.kind))}, "
                             f"got {self.verdict!r}")
        if self.mode not in ("", "quick", "full"):
            raise ValueError(f"mode: expected 'quick', 'full' or '', got {self.mode!r}")
        object.__setattr__(self, "optimiser", _texts("optimiser", self.optimiser))
        object.__setattr__(self, "figures", _texts("figures", self.figures))
        object.__setattr__(self, "params", dict(self.params or {}))
        object.__setattr__(self, "evidence", dict(self.evidence or {}))
        object.__setattr__(self, "complete", bool(self.complete))
        object.__setattr__(self, "seconds", float(self.seconds))

    def to_dict(self) -> dict:
        """The record as a plain dict (field order), for JSON."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "Record":
        """A record from `to_dict`'s output (as read back from JSON); unknown keys are refused."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"data: unknown record fields {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class Outcome:
    """What a check function computes: the verdict and its evidence. `Spec.run` adds the
    identity (id, kind, title, source, statement), the declared parameters, mode and time.
    params: for items whose parameters are fixed inside the check itself (no declared region)."""

    verdict: str
    summary: str
    evidence: dict = field(default_factory=dict)
    params: dict | None = None
    worst_case: Any = None
    counterexample: Any = None
    examples_run: int | None = None
    optimiser: tuple = ()
    figures: tuple = ()
    complete: bool = True


@dataclass(frozen=True)
class Spec:
    """The declaration of one verified item, made once: id, kind, title, the function
    `check(quick, params, **options) -> Outcome`, the statement, its source and its declared
    region (a dict of parameters, or a function of `quick` returning one; None when the check
    declares its parameters itself, in `Outcome.params`). `figures`: the report figures drawn
    from its evidence. `after`: the id of an item whose computation this one reuses when it runs
    right after it in the same process (`looptheory verify --jobs` keeps the two together)."""

    id: str
    kind: str
    title: str
    check: Callable
    statement: str = ""
    source: str = "looptheory"
    region: Any = None
    figures: tuple = ()
    after: str = ""

    def __post_init__(self):
        verdicts_for(self.kind)
        if not callable(self.check):
            raise TypeError(f"check: expected a function, got {type(self.check).__name__}")

    def params(self, quick: bool) -> dict:
        """The declared parameters for a quick or a full run."""
        region = self.region(quick) if callable(self.region) else self.region
        return dict(region or {})

    def run(self, quick: bool, **options) -> Record:
        """Run the check on the declared parameters and return its Record (never raises for a
        failure inside the check: the error is the record's summary, `complete=False`)."""
        params = self.params(quick)
        t0 = time.perf_counter()
        try:
            out = self.check(quick, params, **options)
            if not isinstance(out, Outcome):
                raise TypeError(f"{self.id}: check returned {type(out).__name__}, not an Outcome")
        except Exception as exc:  # a crash is reported, not hidden
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            out = Outcome("unresolved" if self.kind == "claim" else "fail", f"error: {exc!r}",
                          {"error": repr(exc), "traceback": "".join(tb[-3:])}, complete=False)
        return Record(
            id=self.id, kind=self.kind, title=self.title, verdict=out.verdict, summary=out.summary,
            source=self.source, statement=self.statement,
            params=params if out.params is None else {**params, **out.params},
            evidence=out.evidence, worst_case=out.worst_case, counterexample=out.counterexample,
            examples_run=out.examples_run, optimiser=out.optimiser,
            figures=tuple(out.figures) or tuple(self.figures), complete=out.complete,
            mode="quick" if quick else "full", seconds=time.perf_counter() - t0,
        )


def mc_tail(errors, top: int = 10) -> float:
    """Share of the sum of `errors` (non-negative) carried by its `top` largest values; 1.0
    when any value is infinite. A share above HEAVY_TAIL_SHARE means the sample mean is set by
    a few prompts and its standard error cannot be trusted."""
    e = np.asarray(errors, dtype=float).ravel()
    if e.size == 0:
        return math.nan
    if not np.all(np.isfinite(e)):
        return 1.0
    total = float(np.sum(e))
    if total <= 0:
        return 0.0
    k = min(top, e.size)
    return float(np.sum(np.partition(e, e.size - k)[e.size - k:]) / total)


#: The 10 largest of the sampled errors may carry at most this share of their sum for a Monte
#: Carlo mean (and its standard error) to count as resolved. A light tail keeps it near
#: 10 x (a few times the mean) / samples, far below 0.1 at 20 000 prompts; a prompt on which
#: the looped model diverges carries nearly all of it.
HEAVY_TAIL_SHARE = 0.1


#: A Monte Carlo mean counts as resolved when it is finite, its 10 largest errors carry at most
#: HEAVY_TAIL_SHARE of the sum, and its standard error is at most this fraction of the mean.
RESOLVED_REL_SE = 0.1


def mc_summary(errors) -> dict:
    """Mean, standard error, the 10 largest errors' share of the sum (`mc_tail`) and whether
    the mean is resolved (see HEAVY_TAIL_SHARE, RESOLVED_REL_SE), with the reason when not."""
    e = np.asarray(errors, dtype=float).ravel()
    share = mc_tail(e)
    if e.size < 2 or not np.all(np.isfinite(e)):
        why = "overflow on some prompts (the model diverges there)" if e.size >= 2 else "fewer than 2 prompts"
        return {"mean": math.inf if e.size >= 2 else math.nan, "se": math.inf, "top10_share": share,
                "resolved": False, "why": why}
    mean = float(np.mean(e))
    se = float(np.std(e, ddof=1) / math.sqrt(e.size))
    why = ""
    if share > HEAVY_TAIL_SHARE:
        why = f"heavy tail: the 10 largest of {e.size} errors carry {share:.0%} of the sum"
    elif mean > 0 and se > RESOLVED_REL_SE * mean:
        why = f"standard error {se / mean:.0%} of the mean"
    return {"mean": mean, "se": se, "top10_share": share, "resolved": not why, "why": why}


def median_interval(errors, z: float = 1.96) -> tuple:
    """(median, lower, upper): the sample median and its distribution-free 95% interval from
    the order statistics at n/2 -+ z sqrt(n)/2 (no assumption on the tail)."""
    e = np.sort(np.asarray(errors, dtype=float).ravel())
    m = e.size
    h = z * math.sqrt(m) / 2
    lo, hi = max(0, int(math.floor(m / 2 - h)) - 1), min(m - 1, int(math.ceil(m / 2 + h)))
    return float(np.median(e)), float(e[lo]), float(e[hi])
