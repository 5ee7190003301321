"""The claims about the untied multi-layer sparse model (docs/conventions.md, "Claims under test";
docs/claims.md): A1 and A1-global (Ahn et al.), G6 (Gatmiry et al.), B1 (Bordelon et al.), each
declared once as a `looptheory.record.Spec` with its region and thresholds fixed here before
any result was seen, and registered in `looptheory.claims.REGISTRY` through the Claim API
(`multilayer_claims`).

Setting of all four: sigma_w = sigma_x^{-1} (the Gatmiry prior; Ahn et al. as reported take
w* ~ N(0, sigma_x^{-1})), no label noise, a fixed random SPD sigma_x per cell. The untied
optimum over all real A_l is searched blind (`optimal_multilayer`), the looped one too
(`optimal_preconditioner`); the best per-layer schedule A_l = a_l sigma_x^{-1} is exact
(`optimal_schedule`). u_l = 0 throughout: the u part of either loss is the expectation of a
square with no cross term (docs/derivations.md, "8. The untied multi-layer loss"), so no u
lowers the loss. A verdict never rests on a search that did not converge.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .loss import population_loss
from .multilayer import multilayer_population_loss, multilayer_population_loss_grad
from .multilayer_optimum import certainly_above, certified_loss, optimal_multilayer, optimal_schedule, untied_scaling
from .optimum import CONVERGED_TOL, optimal_preconditioner, optimal_scale, scaled_gradient_norm
from .record import Outcome
from .task import Task

AHN = "Ahn, Cheng, Daneshmand, Sra (NeurIPS 2023)"
GATMIRY = "Gatmiry, Saunshi, Reddi, Jegelka, Kumar (ICML 2024)"
BORDELON = "Bordelon et al. (2025)"

INF = math.inf

#: A1: the schedule is stationary when its scaled gradient (optimum.scaled_gradient_norm, per
#: layer s_l = ||I - A_l^T sigma_x||_F) is at most this: the optimiser's own stationarity test.
A1_TOL = CONVERGED_TOL
#: A1's control: the same point with a_1 scaled by 1.01 must have a scaled gradient above
#: A1_CONTROL x A1_TOL, else the test cannot tell a stationary point from another in that cell.
A1_CONTROL = 1e3
#: A1-global: a searched untied point that beats the schedule by more than this relative loss
#: (beyond the certified error bounds) is a counterexample.
A1_GLOBAL_TOL = 1e-6
#: G6: L loops come close to L untied layers when f*_looped / f*_untied <= this.
G6_RATIO = 1.10
#: B1: the best schedule is within this relative loss of the untied optimum.
B1_GAP = 0.01


def _sigma(d, seed):
    """A fixed random SPD matrix, eigenvalues in [1, about 3] (as claims._sigma)."""
    M = np.random.default_rng(seed).standard_normal((d, d))
    return M @ M.T / d + np.eye(d)


def _cell(r):
    return f"(d, L, n) = ({r['d']}, {r['layers']}, {r['n']})"


# --- A1 ----------------------------------------------------------------------------------------------


def _a1_region(quick: bool) -> dict:
    # the full region leaves out L = 4 at n = 1000: no float route certifies a gradient there (no
    # centred form at 4 layers) and the exact route costs about 80 CPU-s per point
    cells = ([(2, 1, 20), (2, 2, 20), (2, 3, 20), (2, 2, INF)] if quick else
             [(d, L, n) for d in (2, 3) for L in (1, 2, 3, 4) for n in (5, 20, 100, 1000, INF) if (L, n) != (4, 1000)])
    return {"cells (d, layers, n)": cells, "sigma_x": "fixed random SPD per cell (seed 70 + k)", "sigma_w": "sigma_x^{-1}",
            "noise": 0, "point": "the best schedule A_l = a_l Σx⁻¹ (optimal_schedule: exact loss, a_l to double precision)",
            "stationary (finite n)": f"scaled gradient plus its certified error <= {A1_TOL:g}; not stationary: scaled "
                                     f"gradient minus its certified error > {A1_TOL:g} (multilayer_population_loss_grad, "
                                     "the best float route)",
            "control": f"a_1 x 1.01 must give a scaled gradient above {A1_CONTROL:g} x {A1_TOL:g} (minus its error)",
            "n = inf": "a_l = 1: the exact loss at the rational point (Σx as its binary fractions, Σx⁻¹ exact) is 0, "
                       "the minimum of a non-negative loss, hence stationary",
            "budget": "L = 4 at n = 1000 left out (the exact route would cost about 80 CPU-s per point)"}


def _exact_inverse(M):
    import sympy

    R = sympy.Matrix([[sympy.Rational(Fraction(float(x)).numerator, Fraction(float(x)).denominator) for x in row]
                      for row in M])
    inv = R.inv()
    to = lambda X: np.array([[Fraction(int(x.p), int(x.q)) for x in X.row(i)] for i in range(X.rows)], dtype=object)  # noqa: E731
    return to(R), to(inv)


def check_a1(quick: bool, params: dict) -> Outcome:
    """A1: the best schedule A_l = a_l sigma_x^{-1} is a stationary point of the untied loss over
    all real A_l: at finite n its certified scaled gradient is at most A1_TOL (and a perturbed
    control is not); at n = inf the schedule a_l = 1 has exact loss 0."""
    rows = []
    for k, (d, L, n) in enumerate(params["cells (d, layers, n)"]):
        sx = _sigma(d, 70 + k)
        if n == INF:
            sxe, inv = _exact_inverse(sx)
            task = Task(d, INF, sxe, inv)
            f = multilayer_population_loss(task, np.stack([inv] * L), exact=True)
            rows.append({"d": d, "layers": L, "n": "inf", "a": [1.0] * L, "f(schedule)": float(f), "scaled_grad": 0.0 if f == 0 else math.nan,
                         "scaled_grad_error": 0.0, "grad_norm": "0 (exact minimum)" if f == 0 else "n/a",
                         "control_scaled_grad": "n/a", "stationary": f == 0, "not stationary": False, "informative": True,
                         "how": "exact loss 0 at the rational point"})
            continue
        task = Task.gatmiry(d, n, sx)
        sch = optimal_schedule(task, L)
        As = sch.As(task)

        def scaled(As_):
            """(f, scaled gradient, its certified error in the same units): s_l ||grad error||
            ||sigma_x^{-1}||_2 / f per layer bounds the error of s_l grad_{A_l} sigma_x^{-1} / f."""
            f, gA, _ = multilayer_population_loss_grad(task, As_, fallback=False)
            scale = max(float(np.linalg.norm(np.eye(d) - A.T @ sx)) or 1.0 for A in As_) * float(np.linalg.norm(inv, 2))
            err = scale * (f.grad_error[0] if f.grad_error else math.inf) / max(float(f) - f.error, 1e-300)
            return f, gA, scaled_gradient_norm(f, gA.ravel(), As_.ravel(), _pull(d, L, sx)), err

        inv = np.linalg.inv(sx)
        f, gA, sgn, err = scaled(As)
        ctrl = As.copy()
        ctrl[0] *= 1.01
        _, _, csgn, cerr = scaled(ctrl)
        rows.append({"d": d, "layers": L, "n": n, "a": list(sch.a), "f(schedule)": float(f), "f exact": float(sch.loss),
                     "scaled_grad": sgn, "scaled_grad_error": err, "grad_norm": float(np.linalg.norm(gA)),
                     "control_scaled_grad": csgn, "stationary": bool(sgn + err <= A1_TOL),
                     "not stationary": bool(sgn - err > A1_TOL),
                     "informative": bool(csgn - cerr > A1_CONTROL * A1_TOL), "how": f"certified gradient ({f.route})"})
    bad = [r for r in rows if r["informative"] and r["not stationary"]]
    uninformative = [r for r in rows if not r["informative"] or not (r["stationary"] or r["not stationary"])]
    verdict = "fails" if bad else ("unresolved" if uninformative else "holds")
    finite = [r for r in rows if r["n"] != "inf"]
    decided = [r for r in finite if r not in uninformative]
    worst = max(decided or finite or rows, key=lambda r: r["scaled_grad"] + r["scaled_grad_error"])
    summary = (f"the best schedule is not stationary in {len(bad)}/{len(rows)} cells: " + ", ".join(_cell(r) for r in bad)
               if bad else
               f"stationary in all {len(rows) - len(uninformative)} decided cells: largest scaled gradient "
               f"{worst['scaled_grad']:.1e} ± {worst['scaled_grad_error']:.1e} (threshold {A1_TOL:g}) at {_cell(worst)}; "
               "the 1% control gives at least "
               f"{min((r['control_scaled_grad'] for r in finite), default=math.nan):.1e}; at n = ∞ the exact loss is 0")
    if uninformative:
        summary += (f"; undecided in {len(uninformative)} cell(s) (the control cannot tell, or the certified error "
                    "straddles the threshold): " + ", ".join(_cell(r) for r in uninformative))
    return Outcome(verdict, summary, {"rows": rows},
                   worst_case={k: worst[k] for k in ("d", "layers", "n", "scaled_grad", "scaled_grad_error")},
                   counterexample=dict(bad[0]) if bad else None, examples_run=len(rows))


def _pull(d, L, sx):
    """The per-layer scaling of the untied search, as scaled_gradient_norm reads it."""
    return untied_scaling(d, L, False, sx, np.linalg.inv(sx))


# --- the untied optima: A1-global, G6, B1 ------------------------------------------------------------


def _untied_region(quick: bool) -> dict:
    cells = ([(2, L, 20) for L in (1, 2, 3)] if quick else
             [(2, L, n) for L in (1, 2, 3, 4) for n in (5, 20, 100)] + [(3, L, n) for L in (1, 2, 3) for n in (5, 20, 100)])
    return {"cells (d, layers, n)": cells, "starts": 2 if quick else 3,
            "sigma_x": "fixed random SPD per cell (seed 80 + k)", "sigma_w": "sigma_x^{-1}", "noise": 0, "u": 0,
            "looped optimum": "optimal_preconditioner(task, L, starts, seed k, with_u=False), blind",
            "untied optimum": "optimal_multilayer(task, L, starts, seed k), blind, with the looped optimum (repeated per "
                              "layer) as one more start",
            "schedule": "optimal_schedule (exact)",
            "converged": "scaled gradient <= 1e-6, and no worse than the feasible candidates (looped: γ_L Σx⁻¹; untied: "
                         "the looped optimum and the schedule) beyond the certified error bounds"}


#: The untied cells, computed once for A1-global, G6 and B1 in a process (keyed by the region).
_CELLS: dict = {}


def untied_cells(params) -> list:
    """One row per declared cell: the blind looped and untied optima and the exact schedule."""
    key = (tuple(map(tuple, params["cells (d, layers, n)"])), params["starts"])
    if key in _CELLS:
        return _CELLS[key]
    rows = []
    for k, (d, L, n) in enumerate(params["cells (d, layers, n)"]):
        task = Task.gatmiry(d, n, _sigma(d, 80 + k))
        inv = np.linalg.inv(np.asarray(task.sigma_x, dtype=float))
        lo = optimal_preconditioner(task, L, starts=params["starts"], seed=k, with_u=False)
        f_scalar = population_loss(task, optimal_scale(task, L) * inv, L)
        lo_ok = lo.converged and not certainly_above(lo.loss, f_scalar)
        un = optimal_multilayer(task, L, starts=params["starts"], seed=k, inits=[np.stack([lo.A] * L)])
        sch = optimal_schedule(task, L)
        f_sch = certified_loss(sch.loss)
        # converged already means no worse than the schedule (optimal_multilayer checks it)
        un_ok = un.converged and not certainly_above(un.loss, lo.loss)
        rows.append({
            "d": d, "layers": L, "n": n, "f*_looped": float(lo.loss), "f*_untied": float(un.loss), "f*_schedule": float(sch.loss),
            "f*_looped error": lo.loss.error, "f*_untied error": un.loss.error,
            "looped/untied": float(lo.loss) / float(un.loss),
            "schedule gap (f_sched - f*_untied)/f*_untied": (float(sch.loss) - float(un.loss)) / float(un.loss),
            "schedule beaten by (f_sched - f*_untied)/f_sched": (float(sch.loss) - float(un.loss)) / float(sch.loss),
            "beaten beyond the error bounds": certainly_above(f_sch, un.loss),
            "schedule a": list(sch.a), "looped converged": lo_ok, "untied converged": un_ok,
            "looped optimiser": lo.status + ("" if not certainly_above(lo.loss, f_scalar) else "; worse than γ_L Σx⁻¹"),
            "untied optimiser": un.status + ("" if un_ok or not un.converged else "; worse than a feasible candidate"),
            "untied scaled gradient": un.scaled_grad_norm,
        })
    _CELLS.clear()
    _CELLS[key] = rows
    return rows


def _table(rows):
    """The rows without the optimisers' status texts (the record's `optimiser` field has them)."""
    return [{k: v for k, v in r.items() if not k.endswith(" optimiser")} for r in rows]


def _optimiser(rows, which=("looped", "untied")):
    return tuple(f"{_cell(r)} {w}: {r[f'{w} optimiser']}" for r in rows for w in which)


def _a1_global_region(quick: bool) -> dict:
    return {**_untied_region(quick), "tolerance (relative loss gain)": A1_GLOBAL_TOL}


def check_a1_global(quick: bool, params: dict) -> Outcome:
    """A1-global (our reading): the best schedule is the global untied minimum. A searched point
    beating it by more than the tolerance and the error bounds is a counterexample whether or
    not the search converged (a loss attained); otherwise every search must have converged."""
    rows = untied_cells(params)
    tol = params["tolerance (relative loss gain)"]
    key = "schedule beaten by (f_sched - f*_untied)/f_sched"
    beaten = [r for r in rows if r[key] > tol and r["beaten beyond the error bounds"]]
    return _against_schedule(
        rows, key, beaten,
        lambda top: (f"an untied point beats the best schedule in {len(beaten)}/{len(rows)} cells, by up to "
                     f"{top[key]:.3g} relative at {_cell(top)}"),
        lambda top: (f"no untied point found below the best schedule in {len(rows)} cells (largest relative gain "
                     f"{top[key]:.1e}, tolerance {tol:g})"), "relative gain")


def _against_schedule(rows, key, bad, fails_text, holds_text, name) -> Outcome:
    """A1-global and B1: a cell in `bad` (a found point against the schedule) decides even
    when its search did not converge; otherwise every untied search must have converged."""
    unconv = [r for r in rows if not r["untied converged"]]
    verdict = "fails" if bad else ("unresolved" if unconv else "holds")
    top = max(rows, key=lambda r: r[key])
    summary = fails_text(top) if bad else holds_text(top)
    if unconv and not bad:
        summary += f"; the untied search did not converge in {len(unconv)} cell(s): " + ", ".join(_cell(r) for r in unconv)
    return Outcome(verdict, summary, {"rows": _table(rows), "same_table_as": "G6"}, worst_case={"cell": _cell(top), name: top[key]},
                   counterexample=_table(bad)[0] if bad else None, examples_run=len(rows), optimiser=_optimiser(rows, ("untied",)))


def _g6_region(quick: bool) -> dict:
    return {**_untied_region(quick), "threshold f*_looped / f*_untied": G6_RATIO}


def check_g6(quick: bool, params: dict) -> Outcome:
    """G6: L loops come close to L untied layers: f*_looped / f*_untied <= 1.10 in every cell.
    A cell decides only when both searches converged (an untied optimum worse than the looped
    one, a feasible point for it, counts as not converged)."""
    rows = untied_cells(params)
    thr = params["threshold f*_looped / f*_untied"]
    ok = [r for r in rows if r["looped converged"] and r["untied converged"]]
    far = [r for r in ok if r["looped/untied"] > thr]
    unresolved = [r for r in rows if r not in ok]
    verdict = "fails" if far else ("unresolved" if unresolved else "holds")
    top = max(rows, key=lambda r: r["looped/untied"])
    by_L = {}
    for r in ok:
        by_L.setdefault(r["layers"], []).append(r["looped/untied"])
    spread = "; ".join(f"L = {L}: {min(v):.3g} to {max(v):.3g}" for L, v in sorted(by_L.items()))
    summary = (f"f*_looped / f*_untied > {thr:g} in {len(far)}/{len(rows)} cells, up to {top['looped/untied']:.3g} at "
               f"{_cell(top)} (ratios by L: {spread})" if far else
               f"f*_looped / f*_untied <= {thr:g} in all {len(ok)} decided cells (ratios by L: {spread})")
    if unresolved:
        summary += f"; {len(unresolved)} cell(s) undecided (a search did not converge): " + ", ".join(_cell(r) for r in unresolved)
    return Outcome(verdict, summary, {"rows": _table(rows)}, worst_case={"cell": _cell(top), "looped/untied": top["looped/untied"]},
                   counterexample=_table(far)[0] if far else None, examples_run=len(rows), optimiser=_optimiser(rows),
                   figures=("looped_vs_untied_optimum",))


def _b1_region(quick: bool) -> dict:
    return {**_untied_region(quick), "threshold (f_schedule - f*_untied) / f*_untied": B1_GAP}


def check_b1(quick: bool, params: dict) -> Outcome:
    """B1: the best per-layer schedule comes within 1% (relative loss) of the untied optimum. A gap
    above 1% against a found untied point is a counterexample whether or not the search
    converged (a loss attained is at least the minimum); within 1%, the search must have
    converged."""
    rows = untied_cells(params)
    thr = params["threshold (f_schedule - f*_untied) / f*_untied"]
    key = "schedule gap (f_sched - f*_untied)/f*_untied"
    far = [r for r in rows if r[key] > thr]
    return _against_schedule(
        rows, key, far,
        lambda top: (f"the best schedule is more than {thr:.0%} above the untied optimum in {len(far)}/{len(rows)} cells, "
                     f"up to {top[key]:.3g} at {_cell(top)}"),
        lambda top: (f"the best schedule is within {thr:.0%} of the untied optimum in all {len(rows)} cells (largest gap "
                     f"{top[key]:.1e} at {_cell(top)})"), "gap")


def multilayer_claims() -> tuple:
    """The four claims' declarations, in report order, for `looptheory.claims` to register
    through the Claim API as its other claims are (each a dict of id, statement, source, region,
    check, figures, after). G6 comes before A1-global and B1, whose tables are G6's (the same
    cells and searches, computed once in one process: `after`, and shown once)."""
    return (
        dict(id="A1", statement="The best per-layer schedule A_l = a_l Σx⁻¹ is a stationary point of the untied loss over all real A_l",
             source=f'{AHN}: the critical points of the L-layer sparse model, as reported (docs/conventions.md, '
                    '"A1: critical points of the untied model")', region=_a1_region, check=check_a1),
        dict(id="G6", statement="L loops come close to L untied layers: f*_looped / f*_untied ≤ 1.10",
             source=f'{GATMIRY}: looped against multi-layer, as reported (docs/conventions.md, "G6: loops against untied layers")',
             region=_g6_region, check=check_g6, figures=("looped_vs_untied_optimum",)),
        dict(id="A1-global", statement="The best per-layer schedule A_l = a_l Σx⁻¹ is the global untied minimum (our reading)",
             source=f'{AHN}: the critical points as reported; reading them as the global minimum is a common '
                    'reading, ours, not theirs (docs/conventions.md, "A1: critical points of the untied model")',
             region=_a1_global_region, check=check_a1_global, after="G6"),
        dict(id="B1", statement="The best per-step schedule A_l = a_l Σx⁻¹ is within 1% of the untied optimum",
             source=f'{BORDELON}: deep linear attention as L steps of GD with the best step per step, as reported '
                    '(docs/conventions.md, "B1: the best schedule")', region=_b1_region, check=check_b1, after="G6"),
    )
