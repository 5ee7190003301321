"""Consistency checks that `looptheory verify` runs: each states its parameters up front,
computes, and returns a verdict with its evidence. Nothing here chooses where to look after
seeing results: parameters, seeds and tolerances are fixed in the functions below.

Each check is declared once in CHECKS (a `looptheory.record.Spec` of kind "check") and returns
a `looptheory.record.Record` through `Spec.run`. Verdicts: "pass" or "fail" for these internal
cross-checks ("unresolved" only if a check crashed before deciding); the claims of the papers
get "holds" / "fails" / "vacuous" / "unresolved" in their own registry.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np

from . import _validate as V
from .diagnostics import taylor_test
from .loss import MAX_LOOPS, population_loss, population_loss_grad
from .model import looped_forward, make_prompt, prediction, preconditioned_gd, sparse_weights
from .moments import trace_moments
from .montecarlo import monte_carlo_loss
from .optimum import optimal_scale, scale_loss
from .record import Outcome, Record, Spec
from .reference import one_loop_closed_form
from .task import Task

#: Kept for code written against earlier versions: every item now returns a Record.
CheckResult = Record


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def check_gd_equivalence(quick: bool, params=None) -> Outcome:
    """The sparse looped model's prediction and label row equal preconditioned GD (B = A^T)."""
    cases = [(d, n, L, with_u) for d in (1, 3, 5) for n in (2, 10) for L in (1, 3, 6) for with_u in (False, True)]
    rng = np.random.default_rng(2024)
    worst = 0.0
    for d, n, L, with_u in cases:
        X = rng.standard_normal((20, d, n))
        y = rng.standard_normal((20, n))
        x_q = rng.standard_normal((20, d))
        A = rng.standard_normal((d, d)) * 0.5 / math.sqrt(d)
        u = rng.standard_normal(d) if with_u else None
        P, Q = sparse_weights(A, u)
        ZL = looped_forward(make_prompt(X, y, x_q), P, Q, L)
        labels = y if u is None else y + np.einsum("bdn,d->bn", X, u)
        w = preconditioned_gd(X, labels, A.T, L)
        worst = max(worst, _rel(prediction(ZL), np.einsum("bd,bd->b", x_q, w)))
        worst = max(worst, _rel(ZL[:, d, :n], y - np.einsum("bdn,bd->bn", X, w)))
    ok = worst < 1e-10
    return Outcome(
        "pass" if ok else "fail",
        f"max relative difference {worst:.1e} over {len(cases)} settings x 20 prompts (tolerance 1e-10)",
        {"max_relative_difference": worst},
        params={"d": [1, 3, 5], "n": [2, 10], "loops": [1, 3, 6], "u": "zero and random", "prompts per setting": 20,
                "seed": 2024, "tolerance (relative)": 1e-10},
        worst_case={"max_relative_difference": worst}, examples_run=20 * len(cases),
    )


def _mc_row(r, reference) -> dict:
    """A Monte Carlo result against a reference value, with its tail diagnostics
    (looptheory.montecarlo.MonteCarloResult)."""
    return {"monte_carlo": r.mean, "stderr": r.stderr, "z": (r.mean - reference) / r.stderr, "ess": r.ess,
            "top10_share": r.top10_share, "trusted": r.trusted, "why_untrusted": r.why}


def _mc_verdict(rows) -> str:
    """pass: every |z| < 4 with a trusted standard error; fail: some |z| >= 4 with a trusted one;
    else unresolved (a standard error the diagnostics do not trust decides nothing)."""
    if any(r["trusted"] and abs(r["z"]) >= 4 for r in rows):
        return "fail"
    return "pass" if all(r["trusted"] for r in rows) else "unresolved"


def _mc(task, A, loops, u, samples, seed):
    with warnings.catch_warnings():  # the diagnostics go into the evidence instead
        warnings.simplefilter("ignore", RuntimeWarning)
        return monte_carlo_loss(task, A, loops, u, samples=samples, seed=seed)


_MC_HOW = ("monte_carlo_loss, conditional estimator: X sampled (spike importance sampling), w*, noise and x_q "
           "averaged exactly (docs/monte-carlo.md)")


def check_mc_one_loop(quick: bool, params=None) -> Outcome:
    """Monte Carlo (the conditional estimator, whose formula is checked against the real forward
    pass in tests/test_montecarlo.py) against the loops = 1 closed form of docs/conventions.md."""
    samples = 50_000 if quick else 400_000
    rows = []
    for seed, (d, n) in enumerate([(2, 5), (3, 10), (5, 20)]):
        rng = np.random.default_rng(300 + seed)
        M = rng.standard_normal((d, d))
        sx = M @ M.T / d + 0.5 * np.eye(d)
        task = Task.gatmiry(d, n, sx)
        A = np.linalg.inv(sx) * 0.6 + 0.1 * rng.standard_normal((d, d))
        closed = one_loop_closed_form(task, A)
        rows.append({"d": d, "n": n, "closed_form": closed, **_mc_row(_mc(task, A, 1, None, samples, seed), closed)})
    zmax = max(abs(r["z"]) for r in rows)
    return Outcome(
        _mc_verdict(rows),
        f"max |z| = {zmax:.2f} over {len(rows)} settings ({samples} prompts each; pass if < 4 with trusted standard "
        f"errors; smallest ESS {min(r['ess'] for r in rows):.3g})",
        {"rows": rows},
        params={"samples": samples, "seeds": [0, 1, 2], "settings (d, n)": [(r["d"], r["n"]) for r in rows],
                "estimator": _MC_HOW,
                "pass if": "|z| < 4, z = (Monte Carlo - closed form) / standard error, and the diagnostics trust it"},
        worst_case=max(rows, key=lambda r: abs(r["z"])), examples_run=samples * len(rows),
    )


def _rational_task(rng, d, n):
    def rmat():
        return np.array([[Fraction(int(rng.integers(-5, 6)), 7) for _ in range(d)] for _ in range(d)], dtype=object)

    R, M = rmat(), rmat()
    sx = R.dot(R.T) + np.eye(d, dtype=object) * Fraction(1, 2)
    return Task(d, n, sx, M.dot(M.T), noise=Fraction(1, 4)), rmat()


def check_exact_vs_reference(quick: bool, params=None) -> Outcome:
    """Engine (exact rational mode) against the entry-wise Isserlis reference, which integrates
    the GD recursion polynomial in the entries of X and shares no code with the engine."""
    from .reference import isserlis_loss

    cases = [(1, 2, 3), (2, 1, 2), (2, 2, 3), (2, 3, 2)] + ([] if quick else [(2, 2, 4), (2, 3, 3), (1, 3, 4)])
    rows = []
    for k, (d, n, L) in enumerate(cases):
        rng = np.random.default_rng(400 + k)
        task, A = _rational_task(rng, d, n)
        u = np.array([Fraction(int(rng.integers(-3, 4)), 5) for _ in range(d)], dtype=object)
        a = population_loss(task, A, L, u, exact=True)
        b = isserlis_loss(task, A, L, u)
        rows.append({"d": d, "n": n, "loops": L, "engine": str(a), "reference": str(b), "equal": a == b})
    ok = all(r["equal"] for r in rows)
    return Outcome(
        "pass" if ok else "fail",
        f"{sum(r['equal'] for r in rows)}/{len(rows)} cases equal as exact rationals (u, noise, general sigma_x, sigma_w)",
        {"rows": rows},
        params={"cases (d, n, loops)": cases, "seeds": "400 + k (case k)"},
        counterexample=next((r for r in rows if not r["equal"]), None), examples_run=len(rows),
    )


def check_exact_vs_monte_carlo(quick: bool, params=None) -> Outcome:
    """Engine (float) against Monte Carlo (the conditional estimator), loops 1 to 3, non-symmetric
    A, general sigma_x, sigma_w, u and noise, in a light-tailed region (n = 6, |A_ij| <= 0.6)."""
    samples = 50_000 if quick else 300_000
    rows = []
    for L in (1, 2, 3):
        rng = np.random.default_rng(500 + L)
        d, n = 3, 6
        M = rng.standard_normal((d, d))
        sx = M @ M.T / 4 + 0.5 * np.eye(d)
        sw = np.diag([1.0, 0.5, 0.25])
        task = Task(d, n, sx, sw, noise=0.2)
        A = rng.uniform(-0.3, 0.3, (d, d)) + 0.3 * np.eye(d)
        u = rng.uniform(-0.3, 0.3, d)
        exact = population_loss(task, A, L, u)
        rows.append({"loops": L, "exact": exact, **_mc_row(_mc(task, A, L, u, samples, L), exact)})
    zmax = max(abs(r["z"]) for r in rows)
    return Outcome(
        _mc_verdict(rows),
        f"max |z| = {zmax:.2f} for loops 1-3 ({samples} prompts each; pass if < 4 with trusted standard errors; "
        f"smallest ESS {min(r['ess'] for r in rows):.3g})",
        {"rows": rows},
        params={"d": 3, "n": 6, "loops": [1, 2, 3], "samples": samples, "seeds": [1, 2, 3], "estimator": _MC_HOW,
                "pass if": "|z| < 4, z = (Monte Carlo - exact) / standard error, and the diagnostics trust it"},
        worst_case=max(rows, key=lambda r: abs(r["z"])), examples_run=samples * len(rows),
    )


def check_gradient(quick: bool, params=None) -> Outcome:
    """Hand-derived gradient: Taylor remainder slope ~2 for every supported loop count."""
    rows = []
    for L in range(1, MAX_LOOPS + 1):
        rng = np.random.default_rng(600 + L)
        d = 3
        M = rng.standard_normal((d, d))
        task = Task(d, 8, M @ M.T / d + np.eye(d), np.eye(d), noise=0.3)
        x0 = np.concatenate([0.3 * rng.standard_normal(d * d), rng.standard_normal(d)])
        v = rng.standard_normal(d * d + d)

        def f(z):
            return population_loss(task, z[: d * d].reshape(d, d), L, z[d * d:])

        def g(z):
            _, gA, gu = population_loss_grad(task, z[: d * d].reshape(d, d), L, z[d * d:])
            return np.concatenate([gA.ravel(), gu])

        res = taylor_test(f, g, x0, v)
        rows.append({"loops": L, "slope": res.slope, "remainders": res.remainder.tolist(), "h": res.h.tolist()})
    ok = all(r["slope"] > 1.8 for r in rows)
    return Outcome(
        "pass" if ok else "fail",
        "slopes " + ", ".join(f"L={r['loops']}: {r['slope']:.2f}" for r in rows) + " (pass if > 1.8; a wrong gradient gives ~1)",
        {"rows": rows},
        params={"d": 3, "n": 8, "noise": 0.3, "loops": list(range(1, MAX_LOOPS + 1)), "seeds": "600 + loops",
                "pass if": "Taylor remainder slope > 1.8"},
        worst_case=min(rows, key=lambda r: r["slope"]), examples_run=len(rows),
    )


def check_trace_moments(quick: bool, params=None) -> Outcome:
    """Moment recurrence against the partition (integration-by-parts) route and chi-square."""
    from .reference import partition_trace_moments

    kmax = 10 if quick else 14
    bad = []
    for n, d in [(1, 1), (3, 2), (7, 5), (20, 10)]:
        if trace_moments(kmax, n, d) != partition_trace_moments(kmax, n, d):
            bad.append((n, d))
    for n in (1, 2, 9):
        chi = [Fraction(math.prod(n + 2 * i for i in range(k)), n**k) for k in range(41)]
        if trace_moments(40, n, 1) != chi:
            bad.append((n, 1, "chi-square"))
    return Outcome(
        "pass" if not bad else "fail",
        f"k <= {kmax} against the partition route at 4 (n, d); k <= 40 against chi-square at d = 1"
        + ("" if not bad else f"; mismatches {bad}"),
        {"mismatches": bad, "mismatch count": len(bad)},
        params={"kmax": kmax, "(n, d) against the partition route": [(1, 1), (3, 2), (7, 5), (20, 10)],
                "n against chi-square (d = 1, k <= 40)": [1, 2, 9]},
        counterexample={"mismatches": bad} if bad else None, examples_run=7,
    )


def check_optimal_scale(quick: bool, params=None) -> Outcome:
    """optimal_scale at loops = 1 equals n/(n+d+1) (docs/conventions.md), and is stationary."""
    rows = []
    for d, n in [(2, 3), (5, 20), (10, 100)]:
        task = Task(d, n)
        g1 = optimal_scale(task, 1)
        rows.append({"d": d, "n": n, "gamma_1": g1, "n/(n+d+1)": n / (n + d + 1)})
    err = max(abs(r["gamma_1"] - r["n/(n+d+1)"]) / r["n/(n+d+1)"] for r in rows)
    table = []
    for n in (5, 20, 100):
        task = Task(5, n)
        table.append({"n": n, "gammas": [optimal_scale(task, L) for L in range(1, 21)]})
    return Outcome(
        "pass" if err < 1e-12 else "fail",
        f"max relative error {err:.1e} at 3 (d, n)",
        {"rows": rows, "gamma_table_d5": table},
        params={"cases (d, n)": [(r["d"], r["n"]) for r in rows], "tolerance (relative)": 1e-12},
        worst_case={"max_relative_error": err}, examples_run=len(rows),
    )


#: The proportional limit's declared cases: (alpha, loops, rho) compared with finite d, the
#: dimensions, and the accepted range of the fitted rate (an O(1/d) approach has rate -1).
LIMIT_CASES = ((2, 1, 0), (2, 3, 0), (1, 4, 0), (2, 3, Fraction(1, 2)))
LIMIT_DS = (8, 16, 32, 64, 128)
LIMIT_RATE = (-1.3, -0.7)


def check_scalar_limit(quick: bool, params=None) -> Outcome:
    """scalar_family_limit (n = alpha d, noise = rho d, d -> inf) against independent values: at
    loops = 1 the infinite-task limit of Lu, Letey, Zavatone-Veth, Maiti and Pehlevan (PNAS 2025)
    without its query-noise term, (1 + rho) / (alpha + 1 + rho) exactly; at every declared case the
    exact finite-d optima (optimal_scale, scale_loss at n = alpha d) approach it, |f*_d / d - F*|
    falling with d at a fitted rate in LIMIT_RATE."""
    from .limit import scalar_family_convergence, scalar_family_limit

    rows = []
    for alpha in (Fraction(1, 2), 2, 5):
        for rho in (0, Fraction(1, 2)):
            lim = scalar_family_limit(alpha, 1, rho)
            lu = (1 + Fraction(rho)) / (Fraction(alpha) + 1 + Fraction(rho))
            rows.append({"alpha": str(alpha), "rho": str(rho), "F*": str(lim.loss_per_d), "(1 + rho)/(alpha + 1 + rho)": str(lu),
                         "equal": lim.loss_per_d == lu})
    conv = []
    for alpha, L, rho in LIMIT_CASES:
        res = scalar_family_convergence(alpha, L, rho, LIMIT_DS)
        lim = res["limit"]
        errs = [r["error"] for r in res["rows"]]
        conv.append({"limit": {"alpha": str(lim.alpha), "loops": lim.loops, "rho": str(lim.rho), "gamma": float(lim.gamma),
                               "loss_per_d": float(lim.loss_per_d), "exact": lim.exact},
                     "rows": res["rows"], "rate": res["rate"],
                     "falls": all(b < a for a, b in zip(errs, errs[1:])),
                     "rate_in_range": LIMIT_RATE[0] <= res["rate"] <= LIMIT_RATE[1]})
    bad = [r for r in rows if not r["equal"]] + [c for c in conv if not (c["falls"] and c["rate_in_range"])]
    rates = ", ".join(f"{c['rate']:.2f}" for c in conv)
    return Outcome(
        "fail" if bad else "pass",
        f"loops = 1: F* = (1 + rho)/(alpha + 1 + rho) exactly in {sum(r['equal'] for r in rows)}/{len(rows)} cases; "
        f"finite-d optima approach the limit at fitted rates {rates} (accepted {LIMIT_RATE[0]} to {LIMIT_RATE[1]}; "
        f"d = {LIMIT_DS[0]} ... {LIMIT_DS[-1]})",
        {"rows": rows, "convergence": conv},
        params={"loops-1 cases (alpha, rho)": [(r["alpha"], r["rho"]) for r in rows],
                "convergence cases (alpha, loops, rho)": [(str(a), L, str(r)) for a, L, r in LIMIT_CASES],
                "d": list(LIMIT_DS), "accepted rate": list(LIMIT_RATE)},
        worst_case={"rates": [c["rate"] for c in conv]}, examples_run=len(rows) + len(conv) * len(LIMIT_DS),
    )


def loss_curve_data(quick: bool) -> dict:
    """Loss at the optimal scale against loops (scalar family, exact), with exact-engine and
    Monte Carlo points: the data of the report's first figure."""
    d = 5
    out = {"d": d, "curves": []}
    # the quick run checks the engine at loops <= 4, where a float route certifies it; at loops
    # 5-6 near the optimum the engine may need its exact route (seconds per point)
    engine_loops = min(4, MAX_LOOPS) if quick else MAX_LOOPS
    for n in (10, 40, 200):
        task = Task(d, n)
        Ls = list(range(1, 21))
        gam = [optimal_scale(task, L) for L in Ls]
        exact = [scale_loss(task, L, g) for L, g in zip(Ls, gam)]
        eng = [population_loss(task, g * np.eye(d), L) for L, g in zip(Ls[:engine_loops], gam)]
        mc = [_mc(task, g * np.eye(d), L, None, 5_000 if quick else 40_000, L) for L, g in zip(Ls[:3], gam)]
        out["curves"].append({"n": n, "loops": Ls, "gamma": gam, "loss": exact, "engine": eng, "mc": [tuple(r) for r in mc],
                              "mc_diagnostics": [r.as_dict() for r in mc]})
    return out


def _spec(id, title, fn):
    return Spec(id, "check", title, fn, statement=" ".join((fn.__doc__ or "").strip().split("\n\n")[0].split()))


#: The toolkit's checks, each declared once: id, title, the check function (which sets its own
#: parameters; they are in the record's params).
CHECKS = [
    _spec("gd_equivalence", "Sparse looped attention = preconditioned GD", check_gd_equivalence),
    _spec("mc_one_loop_closed_form", "Monte Carlo = loops-1 closed form", check_mc_one_loop),
    _spec("exact_vs_isserlis", "Exact loss = Isserlis reference (rational)", check_exact_vs_reference),
    _spec("exact_vs_monte_carlo", "Exact loss = Monte Carlo (conditional estimator)", check_exact_vs_monte_carlo),
    _spec("gradient_taylor", "Hand-derived gradient passes the Taylor test", check_gradient),
    _spec("trace_moments", "E tr S^k recurrence = partition route and chi-square", check_trace_moments),
    _spec("optimal_scale_one_loop", "optimal_scale(loops=1) = n/(n+d+1)", check_optimal_scale),
    _spec("scalar_limit", "Proportional limit of the scalar family = finite-d optima and Lu et al.", check_scalar_limit),
]


def proof_specs() -> list[Spec]:
    """The symbolic checks of proofs_check, one Spec (kind "proof") per module."""
    try:
        from proofs_check.runner import SPECS
    except ImportError as exc:  # proofs_check ships with looptheory: its absence is a failure
        def missing(quick, params, exc=exc):
            return Outcome("fail", f"cannot import proofs_check: {exc}", complete=False)

        return [Spec("proofs_check", "proof", "Symbolic checks (proofs_check)", missing)]
    return list(SPECS.values())


def run_checks(quick: bool = False, progress=None) -> list[Record]:
    """Run every check, then the symbolic ones of proofs_check, and return their Records;
    `progress(i, total, record)` is called after each."""
    quick = V.boolean("quick", quick)
    if progress is not None:
        V.function("progress", progress)
    specs = CHECKS + proof_specs()
    results = []
    for i, spec in enumerate(specs):
        res = spec.run(quick)
        results.append(res)
        if progress:
            progress(i + 1, len(specs), res)
    return results
