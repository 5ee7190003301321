"""Your own claim, tested: the public claim API (docs/own-claims.md).

  Claim(id, statement, source, region, check)
      region: a `Grid` (every combination of its axes is a case) or a hypothesis strategy of
      parameter dicts (searched); check(**params) returns a margin (the case holds iff
      margin >= 0) or a `Case`.
  Case(margin, vacuous=False, resolved=True, evidence={}, error=None)
  verify_claim(claim, max_examples=DEFAULT_EXAMPLES, executor=None) -> looptheory.Record

A claim gets one of the four verdicts of docs/conventions.md, "Verdicts":

  holds       every case has margin >= 0 and at least one is not vacuous;
  fails       a case has margin < 0, confirmed (below); it is the record's counterexample;
  vacuous     every case holds only because the statement says nothing there (Case.vacuous);
  unresolved  the evidence could not decide: a case the check marks unresolved (an optimisation
              that did not converge), a negative margin within its error bound, a check that
              raised or returned NaN (the record says where and what), an executor that died.

A case's margin may carry an error bound: a `Certified` float (what population_loss returns;
arithmetic on Certified floats keeps the bound, so f(A1) - f(A2) is certified), Case.error, or an
exact Fraction (error 0). A plain float is taken at its value. Before "fails" is said the
counterexample is confirmed: its check is run again with the engine's exact-rational route
(`looptheory.loss.exact_route`: every loss of the given float inputs in exact rationals, rounded
once) and must give margin + error < 0; if the exact route is unaffordable, the float engine's
certified bound must. A negative margin inside its bound is not a failure: it is "unresolved".

A strategy region is searched with hypothesis: derandomised (the same examples on every run, no
example database replayed between runs), `max_examples` examples, guided by hypothesis.target
towards the most negative margin; a violation is shrunk by hypothesis. Then it is polished: a
bounded Nelder-Mead minimisation of the margin over the float entries of the parameters (each
kept within the range of values the search drew for it), started from the shrunk violation, or,
when the search found none, from the examples with the lowest margins (a violation found that
way is simplified entry by entry, towards 0 and short decimals, the way hypothesis shrinks).
The search runs one example at a time (hypothesis drives it sequentially); `executor`
parallelises Grid regions only.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

import numpy as np

from . import _validate as V
from .loss import Certified, exact_route
from .record import Outcome, Record
from .sweeps import Grid, SweepError, require_importable, sweep

#: Examples a strategy region's search draws by default (hypothesis's own default is 100).
DEFAULT_EXAMPLES = 200

#: Starting points of the local polish when the search found no violation.
POLISH_STARTS = 3

#: The fewest evaluations one polish start gets.
POLISH_MIN = 50


@dataclass(frozen=True)
class Case:
    """One case's outcome: margin >= 0 means the statement holds there.

    vacuous: the statement holds here only because it says nothing (a bound that is trivial);
    resolved: False when the evidence cannot decide (an optimisation that did not converge);
    the margin is then not used (it may be NaN); evidence: numbers to keep in the record;
    error: a bound on |margin - true margin| (None: taken from a Certified margin, 0 for an
    exact one, else unknown)."""

    margin: Any
    vacuous: bool = False
    resolved: bool = True
    evidence: dict = field(default_factory=dict)
    error: float | None = None

    def __post_init__(self):
        V.boolean("vacuous", self.vacuous)
        V.boolean("resolved", self.resolved)
        m = self.margin
        if isinstance(m, (bool, np.bool_)) or not isinstance(m, (int, float, Fraction, np.integer, np.floating)):
            if not (m is None and not self.resolved):
                raise TypeError(f"margin: expected a real number (float, Fraction, Certified), got {m!r}")
        if self.resolved and m is not None and not isinstance(m, Fraction) and math.isnan(float(m)):
            raise ValueError("margin: NaN; a case whose evidence cannot decide is Case(margin, resolved=False)")
        if not isinstance(self.evidence, dict):
            raise TypeError(f"evidence: expected a dict, got {type(self.evidence).__name__}")
        err = self.error
        if err is None:
            if isinstance(m, Certified):
                err = m.error
            elif isinstance(m, (int, Fraction, np.integer)):
                err = 0.0
        elif not (isinstance(err, (int, float)) and err >= 0):
            raise ValueError(f"error: expected None or a number >= 0, got {err!r}")
        object.__setattr__(self, "error", None if err is None else float(err))

    @property
    def status(self) -> str:
        """"unresolved", "fails" (margin + error < 0), "within error" (margin < 0 <= margin +
        error), "vacuous" or "holds"."""
        if not self.resolved:
            return "unresolved"
        m = self.margin
        if m < 0:
            if self.error is None or isinstance(m, Fraction) or float(m) + self.error < 0:
                return "fails"
            return "within error"
        return "vacuous" if self.vacuous else "holds"


@dataclass(frozen=True)
class Claim:
    """A statement to test: id, the statement in words, its source (a paper and theorem, or
    your name), its region (a `Grid` or a hypothesis strategy of parameter dicts) and
    check(**params) returning a margin (>= 0 where the statement holds) or a `Case`.

    conclude: optional, for claims whose report needs its own summary and tables (the papers'
    claims use it): conclude(cases) with cases the list of (params, Case) in grid order returns
    a `looptheory.record.Outcome`; its verdict must equal the one the cases give."""

    id: str
    statement: str
    source: str
    region: Any
    check: Callable
    conclude: Callable | None = None

    def __post_init__(self):
        for name in ("id", "statement", "source"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise TypeError(f"{name}: expected a non-empty string, got {getattr(self, name)!r}")
        V.function("check", self.check)
        if self.conclude is not None:
            V.function("conclude", self.conclude)
        if not isinstance(self.region, Grid) and not _is_strategy(self.region):
            raise TypeError(f"region: expected a looptheory.Grid or a hypothesis strategy of parameter dicts, "
                            f"got {type(self.region).__name__}")
        if self.conclude is not None and not isinstance(self.region, Grid):
            raise TypeError("conclude: only a Grid region can have one")


def _is_strategy(region) -> bool:
    """A hypothesis SearchStrategy, recognised without importing hypothesis for Grid regions."""
    if not type(region).__module__.startswith("hypothesis"):
        return False
    from hypothesis.strategies import SearchStrategy

    return isinstance(region, SearchStrategy)


@dataclass(frozen=True)
class Evaluated:
    """The check at one point: its Case, or why there is none (`error`, with the traceback's
    last lines). A module-level type, so that worker processes can return it."""

    case: Case | None
    error: str = ""
    trace: str = ""


def as_case(value) -> Case:
    """A check's return value as a Case: a Case is kept, a real number becomes Case(value);
    TypeError for anything else (a bool, None, an array)."""
    if isinstance(value, Case):
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, Fraction, np.integer, np.floating)):
        raise TypeError(f"check: returned {value!r} ({type(value).__name__}); expected a margin (a real number, "
                        f">= 0 where the statement holds) or a looptheory.Case")
    if not isinstance(value, Fraction) and math.isnan(float(value)):
        raise ValueError("check: returned NaN; a case the evidence cannot decide is Case(margin, resolved=False)")
    return Case(value)


def run_check(check, params) -> Evaluated:
    """check(**params) as an Evaluated: an exception or a bad return value becomes its error."""
    try:
        return Evaluated(as_case(check(**params)))
    except Exception as exc:  # reported in the record, with where it happened
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        return Evaluated(None, f"{type(exc).__name__}: {exc}", "".join(tb[-3:]))


def _check_call(check, params):
    return run_check(check, params)


def _plain(x):
    """params for the record: arrays as nested lists, exact numbers kept."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def _margin_text(case: Case) -> str:
    err = "" if case.error is None else f" (error bound {case.error:.1e})"
    return f"{float(case.margin):.6g}{err}"


def _verdict(cases) -> str:
    statuses = {c.status for c in cases}
    if "fails" in statuses:
        return "fails"
    if statuses & {"unresolved", "within error"}:
        return "unresolved"
    return "holds" if "holds" in statuses else "vacuous"


# --- confirmation ------------------------------------------------------------------------------


def _confirm(check, params, case: Case) -> tuple:
    """(how, case): how a failing case is confirmed ("exact", "engine bound", "as given" for a
    margin without a bound, or "" when it is not), and the case the confirmation rests on."""
    if isinstance(case.margin, Fraction):
        return ("exact" if case.margin < 0 else ""), case
    if case.error is None:
        return ("as given" if case.margin < 0 else ""), case
    try:
        with exact_route():
            again = as_case(check(**params))
    except Exception:  # the exact route is unaffordable here: the float bound decides
        again = None
    if again is not None and isinstance(again.margin, Certified) and again.margin.route == "exact":
        return ("exact" if again.status == "fails" else ""), again
    return ("engine bound" if case.status == "fails" else ""), case


#: Negative margins within their error bound that are evaluated again in exact rationals.
SETTLE_MAX = 5


def _settle(check, params, case: Case) -> Case:
    """A case whose negative margin lies within its error bound, evaluated again with the
    engine's exact-rational route; the exact case if it decides (holds, vacuous or fails), else
    the case as it was (a rounding at an equality point, f(A) = f(A*), is settled this way)."""
    try:
        with exact_route():
            again = as_case(check(**params))
    except Exception:
        return case
    exact = isinstance(again.margin, Certified) and again.margin.route == "exact"
    return again if exact and again.status != "within error" else case


# --- grids -------------------------------------------------------------------------------------


def _grid_evaluations(claim, executor) -> tuple:
    """[(params, Evaluated or None)] in grid order and the executor's failure text ("" if none)."""
    cells = list(claim.region)
    if executor is None:
        return [(p, run_check(claim.check, p)) for p in cells], ""
    require_importable("check", claim.check)
    import functools

    try:
        out = sweep(functools.partial(_check_call, claim.check), Grid(params=cells), executor=executor)
        return list(zip(cells, out)), ""
    except SweepError as exc:
        cause = exc.__cause__
        return ([(p, exc.done.get(i)) for i, p in enumerate(cells)],
                f"the executor stopped working after {len(exc.done)} of {exc.total} cases "
                f"({type(cause).__name__}: {cause})".replace("\n", " "))


def _errors_text(errors) -> str:
    p, ev = errors[0]
    return f"the check raised or returned no margin in {len(errors)} case(s), first at {_plain(p)}: {ev.error}"


def _grid_outcome(claim, executor) -> Outcome:
    evals, died = _grid_evaluations(claim, executor)
    done = [(p, e.case) for p, e in evals if e is not None and e.case is not None]
    undecided = [k for k, (_, c) in enumerate(done) if c.status == "within error"][:SETTLE_MAX]
    for k in undecided:
        done[k] = (done[k][0], _settle(claim.check, *done[k]))
    errors = [(p, e) for p, e in evals if e is not None and e.case is None]
    missing = sum(1 for _, e in evals if e is None)
    cases = [c for _, c in done]
    verdict = _verdict(cases) if cases else "unresolved"
    counterexample = None
    failing = sorted((float(c.margin), k) for k, (_, c) in enumerate(done) if c.status == "fails")
    unconfirmed = []
    for _, k in failing[:3]:
        p, c = done[k]
        how, c2 = _confirm(claim.check, p, c)
        if how:
            counterexample = {"params": _plain(p), "margin": float(c2.margin), "error": c2.error, "confirmed": how,
                              "evidence": c2.evidence}
            break
        unconfirmed.append(p)
    if verdict == "fails" and counterexample is None:
        verdict = "unresolved"
    if verdict != "fails" and (errors or died or missing):
        verdict = "unresolved"
    complete = not (errors or died or missing)
    if claim.conclude is not None and complete and not unconfirmed:
        out = claim.conclude(done)
        if not isinstance(out, Outcome):
            raise TypeError(f"conclude: returned {type(out).__name__}, not a looptheory.record.Outcome")
        if out.verdict != verdict:
            raise RuntimeError(f"{claim.id}: conclude says {out.verdict!r} but the cases give {verdict!r}")
        return out
    resolved = [(p, c) for p, c in done if c.resolved]
    worst = min(resolved, key=lambda pc: float(pc[1].margin)) if resolved else None
    counts = {s: sum(1 for c in cases if c.status == s) for s in ("holds", "fails", "vacuous", "unresolved", "within error")}
    parts = [f"{len(cases)} of {len(evals)} cases evaluated: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)]
    if counterexample:
        parts.append(f"margin {counterexample['margin']:.6g} < 0 at {counterexample['params']} "
                     f"(confirmed: {counterexample['confirmed']})")
    elif unconfirmed:
        parts.append(f"negative margins at {len(unconfirmed)} case(s) could not be confirmed (within their error bound)")
    if worst is not None:
        parts.append(f"smallest margin {_margin_text(worst[1])} at {_plain(worst[0])}")
    if errors:
        parts.append(_errors_text(errors))
    if died:
        parts.append(died)
    evidence = {"rows": [{**_plain(p), "margin": None if c.margin is None else float(c.margin), "error": c.error,
                          "status": c.status, **c.evidence} for p, c in done]}
    if errors:
        evidence["errors"] = [{"params": _plain(p), "error": e.error, "traceback": e.trace} for p, e in errors]
    return Outcome(verdict, "; ".join(parts), evidence,
                   worst_case=None if worst is None else {"params": _plain(worst[0]), "margin": float(worst[1].margin),
                                                          "error": worst[1].error},
                   counterexample=counterexample, examples_run=len(cases), complete=complete)


# --- strategies --------------------------------------------------------------------------------


class _Violation(Exception):
    def __init__(self, params, case):
        super().__init__("violation")
        self.params, self.case = params, case


class _CheckError(Exception):
    def __init__(self, params, evaluated):
        super().__init__(evaluated.error)
        self.params, self.evaluated = params, evaluated


def _float_slots(params) -> list:
    """(key, index) of every float entry of params: float scalars (index None) and the entries
    of float arrays."""
    slots = []
    for k, v in params.items():
        if isinstance(v, (float, np.floating)) and not isinstance(v, Certified):
            slots.append((k, None))
        elif isinstance(v, np.ndarray) and v.dtype.kind == "f":
            slots += [(k, idx) for idx in np.ndindex(v.shape)]
    return slots


def _pack(params, slots) -> np.ndarray:
    return np.array([float(params[k] if i is None else params[k][i]) for k, i in slots])


def _unpack(params, slots, x) -> dict:
    out = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in params.items()}
    for (k, i), xv in zip(slots, x):
        if i is None:
            out[k] = float(xv)
        else:
            out[k][i] = xv
    return out


class _Search:
    """The state of one strategy search: every point evaluated, the range drawn per float entry."""

    def __init__(self, check):
        self.check = check
        self.calls = 0
        self.lowest = []  # (margin, params) of resolved, non-failing cases, the lowest kept
        self.hull = {}  # key -> (shape, lo, hi) over the drawn examples
        self.cases = []
        self.errors = []
        self.best = None  # (margin, params, case): the lowest resolved margin seen
        self.undecided = []  # (params, index in cases) of negative margins within their bound

    def see_draw(self, params):
        for k, v in params.items():
            if isinstance(v, (float, np.floating)):
                v = np.array(float(v))
            if isinstance(v, np.ndarray) and v.dtype.kind == "f":
                lo, hi = self.hull.get((k, v.shape), (v, v))
                self.hull[(k, v.shape)] = (np.minimum(lo, v), np.maximum(hi, v))

    def slots(self, params) -> list:
        """The float entries of params that the search drew values for (at this shape)."""
        return [(k, i) for k, i in _float_slots(params) if (k, np.shape(params[k])) in self.hull]

    def bounds(self, params, slots):
        out = []
        for k, i in slots:
            lo, hi = self.hull[(k, np.shape(params[k]))]
            out.append((float(lo if i is None else lo[i]), float(hi if i is None else hi[i])))
        return out

    def evaluate(self, params, drawn=True) -> Evaluated:
        self.calls += 1
        ev = run_check(self.check, params)
        if drawn:
            self.see_draw(params)
        if ev.case is None:
            self.errors.append((params, ev))
            return ev
        self.cases.append(ev.case)
        if ev.case.status == "within error":
            self.undecided.append((params, len(self.cases) - 1))
        if ev.case.resolved:
            m = float(ev.case.margin)
            if self.best is None or m < self.best[0]:
                self.best = (m, params, ev.case)
            if ev.case.status != "fails":
                self.lowest.append((m, self.calls, params))
                self.lowest = sorted(self.lowest, key=lambda t: t[:2])[:4 * POLISH_STARTS]
        return ev


def _settings(max_examples):
    from hypothesis import HealthCheck, Phase, Verbosity, settings

    return settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                    phases=(Phase.generate, Phase.target, Phase.shrink), suppress_health_check=list(HealthCheck),
                    report_multiple_bugs=False, verbosity=Verbosity.quiet, print_blob=False)


def _hypothesis_search(claim, search: _Search, max_examples) -> tuple:
    """Run the hypothesis search; returns (violation params or None, error or None)."""
    from hypothesis import given, target
    from hypothesis.errors import Unsatisfiable

    def body(params):
        if not isinstance(params, dict):
            raise TypeError(f"region: the strategy must give dicts of parameters, got {type(params).__name__}")
        ev = search.evaluate(params)
        if ev.case is None:
            raise _CheckError(params, ev)
        case = ev.case
        if case.status == "fails":
            raise _Violation(params, case)
        if case.resolved and not case.vacuous and math.isfinite(float(case.margin)):
            target(-float(case.margin), label="-margin")

    test = _settings(max_examples)(given(claim.region)(body))
    try:
        test()
    except _Violation as exc:
        return exc.params, None
    except _CheckError as exc:
        return None, (exc.params, exc.evaluated)
    except Unsatisfiable as exc:
        raise ValueError(f"region: the strategy gave no example (hypothesis: {exc})".replace("\n", " ")) from None
    return None, None


def _polish(search: _Search, start, budget) -> tuple:
    """Bounded Nelder-Mead on the margin over start's float entries, each within the range the
    search drew; returns (params, case) of the lowest resolved margin reached (start if none)."""
    from scipy.optimize import minimize

    slots = search.slots(start)
    bounds = search.bounds(start, slots)
    free = [j for j, (lo, hi) in enumerate(bounds) if hi > lo]
    if not free or budget <= 0:
        return None
    x0 = _pack(start, slots)
    best = [math.inf, None, None]

    def full(z):
        x = x0.copy()
        x[free] = np.clip(z, [bounds[j][0] for j in free], [bounds[j][1] for j in free])
        return x

    def objective(z):
        params = _unpack(start, slots, full(z))
        ev = search.evaluate(params, drawn=False)
        if ev.case is None or not ev.case.resolved:
            return math.inf
        m = float(ev.case.margin)
        if m < best[0]:
            best[:] = [m, params, ev.case]
        return m

    z0 = x0[free]
    simplex = [z0]
    for j_free, j in enumerate(free):
        lo, hi = bounds[j]
        step = 0.1 * (hi - lo)
        z = z0.copy()
        z[j_free] = z0[j_free] + step if z0[j_free] + step <= hi else z0[j_free] - step
        simplex.append(z)
    minimize(objective, z0, method="Nelder-Mead", bounds=[bounds[j] for j in free],
             options={"maxfev": budget, "initial_simplex": np.array(simplex), "xatol": 1e-12, "fatol": 0.0})
    return None if best[1] is None else (best[1], best[2])


def _simplify(search: _Search, params):
    """A violation found by the polish, made simpler entry by entry (towards 0, then to 1, 2,
    ... significant digits), keeping each change that still fails and stays in the drawn range."""
    slots = search.slots(params)
    bounds = search.bounds(params, slots)
    x = _pack(params, slots)
    case = None
    for j, (lo, hi) in enumerate(bounds):
        v = x[j]
        for candidate in [0.0] + [float(f"{v:.{k}g}") for k in range(1, 7)]:
            if candidate == v or not lo <= candidate <= hi:
                continue
            trial = x.copy()
            trial[j] = candidate
            ev = search.evaluate(_unpack(params, slots, trial), drawn=False)
            if ev.case is not None and ev.case.status == "fails":
                x, case = trial, ev.case
                break
    return _unpack(params, slots, x), case


def _strategy_outcome(claim, max_examples) -> Outcome:
    search = _Search(claim.check)
    violation, error = _hypothesis_search(claim, search, max_examples)
    search_calls = search.calls
    shrunk = polished = None
    found_by = ""
    if violation is not None:
        found_by = "hypothesis search (targeted), shrunk by hypothesis"
        shrunk = (violation, run_check(claim.check, violation).case)
        polished = _polish(search, violation, max_examples)
    elif error is None:
        starts, seen = [], set()
        for m, _, p in search.lowest:
            key = tuple(_pack(p, _float_slots(p)).round(12))
            if key not in seen:
                seen.add(key)
                starts.append(p)
        for p in starts[:POLISH_STARTS]:
            got = _polish(search, p, max(POLISH_MIN, max_examples // POLISH_STARTS))
            if got is not None and got[1].status == "fails":
                found_by = "local polish (Nelder-Mead) from the search's lowest margins, then simplified"
                polished = got
                simple, case = _simplify(search, got[0])
                shrunk = (simple, case) if case is not None else got
                break
    settled = []
    for p, k in search.undecided[:SETTLE_MAX]:
        search.cases[k] = _settle(claim.check, p, search.cases[k])
        if search.cases[k].status == "fails":
            settled.append((p, search.cases[k]))
    if polished is None and settled:
        found_by = "exact re-evaluation of a margin within its error bound"
        polished = settled[0]
    counterexample = None
    tried = []
    for label, pc in (("polished", polished), ("shrunk", shrunk)):
        if pc is None or pc[1] is None or pc[1].status != "fails":
            continue
        how, case = _confirm(claim.check, pc[0], pc[1])
        entry = {"params": _plain(pc[0]), "margin": float(case.margin), "error": case.error, "confirmed": how}
        tried.append((label, entry))
    confirmed = [(entry["margin"], label, entry) for label, entry in tried if entry["confirmed"]]
    if confirmed:
        _, label, entry = min(confirmed)
        counterexample = {**entry, "found_by": found_by, "point": label, **{lb: e for lb, e in tried}}
    cases = search.cases
    verdict = "fails" if counterexample else (_verdict(cases) if cases else "unresolved")
    if verdict == "fails" and counterexample is None:
        verdict = "unresolved"
    if verdict != "fails" and (error or search.errors):
        verdict = "unresolved"
    best = search.best
    parts = [f"{search_calls} examples searched (hypothesis, derandomised, max_examples {max_examples}), "
             f"{search.calls - search_calls} more in the polish and confirmation"]
    if counterexample:
        parts.append(f"margin {counterexample['margin']:.6g} < 0 at {counterexample['params']} (found by {found_by}; "
                     f"confirmed: {counterexample['confirmed']})")
    elif tried:
        parts.append(f"a negative margin {tried[0][1]['margin']:.3g} at {tried[0][1]['params']} could not be confirmed "
                     f"(within its error bound)")
    elif best is not None:
        parts.append(f"smallest margin {_margin_text(best[2])} at {_plain(best[1])}")
    errs = [(p, e) for p, e in search.errors]
    if errs:
        parts.append(_errors_text(errs))
    statuses = [c.status for c in cases]
    evidence = {"cases": {s: statuses.count(s) for s in ("holds", "fails", "vacuous", "unresolved", "within error")},
                "search examples": search_calls, "polish evaluations": search.calls - search_calls}
    if error is not None:
        evidence["error at (shrunk)"] = {"params": _plain(error[0]), "error": error[1].error, "traceback": error[1].trace}
    if errs:
        evidence["errors"] = [{"params": _plain(p), "error": e.error} for p, e in errs[:10]]
    return Outcome(verdict, "; ".join(parts), evidence,
                   worst_case=None if best is None else {"params": _plain(best[1]), "margin": best[0],
                                                         "error": best[2].error},
                   counterexample=counterexample, examples_run=search.calls, complete=not errs)


# --- the entry points --------------------------------------------------------------------------


def claim_outcome(claim: Claim, max_examples: int = DEFAULT_EXAMPLES, executor=None) -> Outcome:
    """What verify_claim decides, as a `looptheory.record.Outcome` (for a `looptheory.record.Spec`
    whose check is a Claim: the papers' claims in looptheory.claims)."""
    if not isinstance(claim, Claim):
        raise TypeError(f"claim: expected a looptheory.Claim, got {type(claim).__name__}")
    max_examples = V.positive_int("max_examples", max_examples)
    if isinstance(claim.region, Grid):
        return _grid_outcome(claim, executor)
    if executor is not None:
        raise ValueError("executor: a strategy region is searched one example at a time (hypothesis drives the search "
                         "sequentially); pass executor=None, or give the claim a Grid region to parallelise")
    return _strategy_outcome(claim, max_examples)


def verify_claim(claim: Claim, max_examples: int = DEFAULT_EXAMPLES, executor=None) -> Record:
    """Test a `Claim` on its region and return its `looptheory.Record` (kind "claim"): the
    verdict (holds / fails / vacuous / unresolved), a one-paragraph summary, the worst case (the
    lowest margin), the confirmed counterexample when it fails, and the evidence.

    Grid region: every case is evaluated, serially or on `executor` (any
    concurrent.futures.Executor; the check must then be a module-level function), in grid order;
    max_examples is not used. Strategy region: a derandomised hypothesis search of max_examples
    examples (plus its shrinking) targeted at the most negative margin, then a local polish and
    an exact confirmation (module docstring); it runs one example at a time, so executor must
    be None (ValueError otherwise).

    A check that raises or returns NaN does not stop the run: the record says where and what,
    and the verdict is "unresolved" unless a confirmed counterexample exists (complete=False).
    An executor that dies leaves the cases it finished in the record, verdict "unresolved"
    (or "fails" if one of them is a confirmed counterexample). A strategy that gives no example
    is a ValueError naming region."""
    t0 = time.perf_counter()
    out = claim_outcome(claim, max_examples, executor)
    region = claim.region
    params = ({"region": repr(region), "cases": len(region)} if isinstance(region, Grid) else
              {"region": repr(region), "max_examples": max_examples,
               "search": "hypothesis, derandomised, no example database; targeted at the most negative margin"})
    return Record(id=claim.id, kind="claim", title=claim.statement, verdict=out.verdict, summary=out.summary,
                  source=claim.source, statement=claim.statement, params=params if out.params is None else {**params, **out.params},
                  evidence=out.evidence, worst_case=out.worst_case, counterexample=out.counterexample,
                  examples_run=out.examples_run, optimiser=out.optimiser, figures=out.figures, complete=out.complete,
                  seconds=time.perf_counter() - t0)
