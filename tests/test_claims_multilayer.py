"""The claims about the untied model (A1, A1-global, G6, B1): declared in the registry with
their regions, and their verdict logic: a search that did not converge decides nothing, a found
point below a candidate is a counterexample whatever the search reached, and A1's test tells a
stationary point from a perturbed one."""

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest

import looptheory.claims_multilayer as CM
from looptheory.claims import REGISTRY, check_claims
from looptheory.loss import Certified

IDS = ("A1", "A1-global", "G6", "B1")


def test_registered_with_regions_declared_for_both_modes():
    for i in IDS:
        spec = REGISTRY[i]
        assert spec.kind == "claim" and spec.source and spec.statement
        for quick in (True, False):
            cells = spec.params(quick)["cells (d, layers, n)"]
            assert cells and all(1 <= L <= 4 for _, L, _ in cells)
    assert max(L for _, L, _ in REGISTRY["G6"].params(False)["cells (d, layers, n)"]) == 4
    assert REGISTRY["G6"].figures == ("looped_vs_untied_optimum",)


@pytest.mark.slow
def test_quick_verdicts():
    """The verdicts the evidence supports (docs/claims.md), pinned so that a change is noticed."""
    res = {r.id: r for r in check_claims(list(IDS), quick=True)}
    assert res["A1"].verdict == "holds"
    assert res["A1-global"].verdict == "holds"
    assert res["B1"].verdict == "holds"
    assert res["G6"].verdict == "fails"
    rows = res["G6"].evidence["rows"]
    assert all(r["looped converged"] and r["untied converged"] for r in rows)
    assert next(r for r in rows if r["layers"] == 1)["looped/untied"] == pytest.approx(1.0, rel=1e-8)


def _fake_cells(monkeypatch, converged, factor):
    """Searches replaced by fakes: the looped optimum at the scalar candidate, the untied one at
    the schedule's loss times `factor`, converged or not."""
    def looped(task, L, starts, seed, with_u):
        inv = np.linalg.inv(np.asarray(task.sigma_x, dtype=float))
        A = CM.optimal_scale(task, L) * inv
        return SimpleNamespace(A=A, loss=CM.population_loss(task, A, L), converged=True, status="fake looped search")

    def untied(task, L, starts, seed, inits):
        f = float(CM.optimal_schedule(task, L).loss) * factor
        return SimpleNamespace(As=inits[0], loss=Certified(f, 1e-15 * f, "exact"), converged=converged,
                               scaled_grad_norm=0.0 if converged else 1.0,
                               status="fake untied search" + ("" if converged else " (not converged)"))

    monkeypatch.setattr(CM, "optimal_preconditioner", looped)
    monkeypatch.setattr(CM, "optimal_multilayer", untied)
    monkeypatch.setattr(CM, "_CELLS", {})
    params = {"cells (d, layers, n)": [(2, 1, 20), (2, 2, 20)], "starts": 1}
    return {"A1-global": CM.check_a1_global(True, {**params, "tolerance (relative loss gain)": CM.A1_GLOBAL_TOL}),
            "G6": CM.check_g6(True, {**params, "threshold f*_looped / f*_untied": CM.G6_RATIO}),
            "B1": CM.check_b1(True, {**params, "threshold (f_schedule - f*_untied) / f*_untied": CM.B1_GAP})}


def test_an_unconverged_untied_search_decides_nothing(monkeypatch):
    out = _fake_cells(monkeypatch, converged=False, factor=1.0)
    assert {k: v.verdict for k, v in out.items()} == {"A1-global": "unresolved", "G6": "unresolved", "B1": "unresolved"}
    assert "did not converge" in out["A1-global"].summary and "undecided" in out["G6"].summary


def test_a_point_below_the_schedule_is_a_counterexample_even_unconverged(monkeypatch):
    out = _fake_cells(monkeypatch, converged=False, factor=0.95)
    assert out["A1-global"].verdict == "fails" and out["B1"].verdict == "fails"
    assert out["A1-global"].counterexample is not None


def test_an_untied_optimum_above_a_feasible_candidate_is_not_converged(monkeypatch):
    """An untied 'optimum' worse than the looped optimum (a feasible point) makes G6 undecided."""
    out = _fake_cells(monkeypatch, converged=True, factor=1.5)
    assert out["G6"].verdict == "unresolved" and out["A1-global"].verdict == "unresolved"


def test_a1_tells_a_perturbed_schedule_from_the_best_one(monkeypatch):
    real = CM.optimal_schedule
    params = {"cells (d, layers, n)": [(2, 2, 20), (2, 3, 20)]}
    assert CM.check_a1(True, params).verdict == "holds"

    def off(task, L):
        s = real(task, L)
        return dataclasses.replace(s, a=(s.a[0] * 1.05,) + tuple(s.a[1:]))

    monkeypatch.setattr(CM, "optimal_schedule", off)
    res = CM.check_a1(True, params)
    assert res.verdict == "fails" and res.counterexample["scaled_grad"] > CM.A1_TOL


def test_a1_at_infinite_n_is_exact():
    res = CM.check_a1(True, {"cells (d, layers, n)": [(2, 3, math.inf)]})
    assert res.verdict == "holds" and res.evidence["rows"][0]["f(schedule)"] == 0.0
