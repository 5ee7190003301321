"""Chen et al. (arXiv 2410.11268): encodings, per-prompt GD bounds, Gaussian condition numbers."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import looptheory as lt
from looptheory import chen

VERDICTS = {"holds", "fails", "vacuous"}


def _prompt(seed, d, n, noise):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((d, n))
    w = rng.standard_normal(d)
    y = X.T @ w + math.sqrt(noise) * rng.standard_normal(n)
    return X, y, rng.standard_normal(d)


def _rel(a, b):
    return np.linalg.norm(np.asarray(a) - np.asarray(b)) / max(np.linalg.norm(b), 1e-300)


def _eta(X):
    return 1.0 / np.linalg.eigvalsh(X @ X.T / X.shape[1])[-1]


@given(d=st.integers(1, 6), n=st.integers(1, 12), loops=st.integers(1, 8), seed=st.integers(0, 2**31),
       noisy=st.booleans())
def test_label_row_encoding_is_gd(d, n, loops, seed, noisy):
    X, y, x_q = _prompt(seed, d, n, 0.3 if noisy else 0.0)
    eta = _eta(X)
    P, Q = lt.sparse_weights(eta * np.eye(d))  # B = A^T = eta I
    ZL = lt.looped_forward(lt.make_prompt(X, y, x_q), P, Q, loops)
    w = lt.preconditioned_gd(X, y, eta * np.eye(d), loops)
    assert abs(lt.prediction(ZL) - x_q @ w) <= 1e-10 * max(abs(x_q @ w), 1e-12 * np.linalg.norm(x_q) * np.linalg.norm(w))


@given(d=st.integers(1, 6), n=st.integers(1, 12), loops=st.integers(1, 8), seed=st.integers(0, 2**31),
       noisy=st.booleans())
def test_chen_encoding_last_column_only_is_gd(d, n, loops, seed, noisy):
    X, y, _ = _prompt(seed, d, n, 0.3 if noisy else 0.0)
    eta = _eta(X)
    P, Q = chen.chen_weights(d, eta)
    Z = chen.chen_forward(chen.chen_prompt(X, y), P, Q, loops, update="last")
    w = lt.preconditioned_gd(X, y, eta * np.eye(d), loops)
    assert _rel(chen.chen_readout(Z), w) <= 1e-10
    assert Z[d, -1] == 1.0


@given(d=st.integers(1, 6), n=st.integers(1, 12), seed=st.integers(0, 2**31), noisy=st.booleans())
def test_chen_encoding_one_loop_of_the_project_layer_is_one_gd_step(d, n, seed, noisy):
    X, y, w0 = _prompt(seed, d, n, 0.3 if noisy else 0.0)
    eta = _eta(X)
    P, Q = chen.chen_weights(d, eta)
    Z1 = lt.looped_forward(chen.chen_prompt(X, y, w0), P, Q, 1)
    w1 = w0 - eta / n * X @ (X.T @ w0 - y)
    assert _rel(chen.chen_readout(Z1), w1) <= 1e-10


def test_chen_encoding_through_project_layer_is_not_gd_from_loop_two():
    # The documented finding of claim C1: the value matrix also rewrites the data columns.
    X, y, _ = _prompt(7, 3, 8, 0.0)
    eta = _eta(X)
    P, Q = chen.chen_weights(3, eta)
    Z0 = chen.chen_prompt(X, y)
    Z2 = lt.looped_forward(Z0, P, Q, 2)
    drift = X - eta / 8 * X @ (X.T @ X - np.outer(y, y))
    assert np.allclose(lt.looped_forward(Z0, P, Q, 1)[:3, :8], drift, rtol=1e-12, atol=1e-12)
    assert _rel(chen.chen_readout(Z2), lt.preconditioned_gd(X, y, eta * np.eye(3), 2)) > 1e-3


def test_chen_weights_key_query_product():
    d = 4
    X, y, w = _prompt(3, d, 6, 0.1)
    P, Q = chen.chen_weights(d, 0.7)
    Z = chen.chen_prompt(X, y, w)
    assert np.allclose(Z[:, :6].T @ Q @ Z[:, -1], X.T @ w - y, atol=1e-12)
    assert np.array_equal(P, 0.7 * np.diag(np.r_[np.ones(d), 0.0]))


@given(d=st.integers(1, 6), extra=st.integers(0, 20), seed=st.integers(0, 2**31), noisy=st.booleans())
def test_bounds_hold_on_random_prompts(d, extra, seed, noisy):
    n = d + extra
    X, y, _ = _prompt(seed, d, n, 0.5 if noisy else 0.0)
    loops = [0, 1, 2, 5, 10, 40]
    err = chen.gd_error_after(X, y, loops)
    b = chen.gd_bounds(X, y, loops)
    assert np.all(err <= b["linear"] * (1 + 1e-8) + 1e-12 * b["alpha"])
    assert np.all(b["linear"] <= b["chen"] * (1 + 1e-12))
    assert abs(err[0] - b["alpha"]) <= 1e-9 * max(b["alpha"], 1.0)
    # the closed form equals the iteration
    it = lt.preconditioned_gd(X, y, _eta(X) * np.eye(d), 10)
    assert abs(np.linalg.norm(it - chen.least_squares_solution(X, y)) - err[4]) <= 1e-8 * max(b["alpha"], 1.0)
    if math.isfinite(b["kappa"]):
        assert chen.best_exponent(err, b["alpha"], b["kappa"], loops) >= 1 - 1e-6


def test_noiseless_least_squares_is_w_star():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 30))
    w = rng.standard_normal(4)
    assert np.allclose(chen.least_squares_solution(X, X.T @ w), w, atol=1e-12)


@pytest.mark.parametrize("d, n", [(3, 1), (5, 4), (10, 2), (2, 1)])
def test_kappa_is_inf_for_n_below_d(d, n):
    X = np.random.default_rng(d * n).standard_normal((d, n))
    assert chen.prompt_condition_number(X) == math.inf
    y = np.ones(n)
    b = chen.gd_bounds(X, y, 5)
    assert b["kappa"] == math.inf and b["chen"] == b["alpha"] and not math.isnan(b["linear"])
    err = chen.gd_error_after(X, y, [0, 5, 1000])
    assert np.all(np.isfinite(err)) and err[-1] < err[0]
    # minimum-norm solution: interpolates and lies in the span of the x_i
    w = chen.least_squares_solution(X, y)
    assert np.allclose(X.T @ w, y, atol=1e-9)


def test_kappa_singular_and_zero_data_do_not_crash():
    X = np.ones((2, 5))  # rank one with n > d
    assert chen.prompt_condition_number(X) == math.inf
    assert chen.prompt_condition_number(np.zeros((3, 4))) == math.inf


@pytest.mark.parametrize("call, name", [
    (lambda: chen.prompt_condition_number(np.ones(3)), "X"),
    (lambda: chen.prompt_condition_number([[1.0, np.nan]]), "X"),
    (lambda: chen.gd_error_after(np.eye(2), np.ones(3), 1), "y"),
    (lambda: chen.gd_error_after(np.eye(2), np.ones(2), -1), "loops"),
    (lambda: chen.gd_error_after(np.eye(2), np.ones(2), 1, eta=0.0), "eta"),
    (lambda: chen.chen_weights(0, 1.0), "d"),
    (lambda: chen.chen_weights(2, -1.0), "eta"),
    (lambda: chen.chen_forward(np.zeros((3, 4)), *chen.chen_weights(2, 1.0), 2, update="x"), "update"),
    (lambda: chen.c2_ratio_required(3, 1.5), "eps"),
    (lambda: chen.log10_n_required_g1(2, 0, 0.1), "loops"),
    (lambda: chen.ds_t_for(0.0), "delta"),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises((ValueError, TypeError)) as e:
        call()
    assert str(e.value).startswith(name)


def test_bidiagonal_wishart_sampler_matches_direct_sampling():
    d, n, m = 4, 9, 3000
    lo, hi = chen.wishart_extreme_eigenvalues(d, n, m, np.random.default_rng(1))
    G = np.random.default_rng(2).standard_normal((m, d, n))
    ev = np.linalg.eigvalsh(G @ np.swapaxes(G, -1, -2))
    assert stats.ks_2samp(hi, ev[:, -1]).pvalue > 1e-3
    assert stats.ks_2samp(lo, ev[:, 0]).pvalue > 1e-3
    # n < d: the non-zero spectrum, lambda_min = 0
    lo2, hi2 = chen.wishart_extreme_eigenvalues(6, 3, 2000, np.random.default_rng(3))
    G2 = np.random.default_rng(4).standard_normal((2000, 6, 3))
    assert np.all(lo2 == 0) and stats.ks_2samp(hi2, np.linalg.eigvalsh(G2 @ np.swapaxes(G2, -1, -2))[:, -1]).pvalue > 1e-3


def test_divergence_probability_crosses_at_mp_threshold_for_large_d():
    rows = chen.divergence_table([1000], [3, 4.5, 8, 12], samples=100, seed=5)
    p = {r["ratio"]: r["p_diverge"] for r in rows}
    assert p[3] == 1.0 and p[4.5] >= 0.95
    assert p[8] <= 0.05 and p[12] == 0.0
    assert abs(chen.DIVERGENCE_THRESHOLD - 5.828427) < 1e-6
    assert abs((1 + math.sqrt(1 / chen.DIVERGENCE_THRESHOLD)) ** 2 - 2) < 1e-12


def test_kappa_table_davidson_szarek_and_mp():
    rows = chen.gaussian_kappa_table([50], [2, 10], samples=100, delta=0.05, seed=0)
    for r in rows:
        assert r["fraction_above_ds"] <= 0.05
        assert r["davidson_szarek"] >= r["marchenko_pastur"]
    assert chen.mp_kappa(1.0) == math.inf and abs(chen.mp_kappa(4) - 9) < 1e-12
    assert chen.davidson_szarek_kappa(10, 12, 1.0) == math.inf


def test_sample_complexity():
    # C2: K = L/(2 log(1/eps)) <= 1 means no n suffices
    assert chen.c2_ratio_required(2, 0.01) == math.inf
    r = chen.c2_ratio_required(40, 0.01)
    assert abs(chen.mp_kappa(r) - chen.kappa_target(40, 0.01)) < 1e-9
    n = chen.n_required_c2_ds(10, 40, 0.01)
    t = chen.ds_t_for(0.05)
    assert chen.davidson_szarek_kappa(10, n, t) <= chen.kappa_target(40, 0.01) < chen.davidson_szarek_kappa(10, n - 1, t)
    assert abs(chen.log10_n_required_g1(2, 1, 8.0) - math.log10(64 * 16)) < 1e-12
    rows = chen.sample_complexity_table([10], [20, 30], [0.01])
    assert all(row["log10_n_g1"] > row["log10_n_c2_ds"] for row in rows)


def test_best_exponent_and_tightness():
    assert chen.best_exponent([math.exp(-2)], 1.0, 4.0, 8) == pytest.approx(1.0)
    assert chen.best_exponent([0.0], 1.0, 4.0, 8) == math.inf
    assert chen.tightness(0.5, 1.0) == 0.5 and chen.tightness(0.0, 0.0) == 1.0
    assert type(chen.tightness(0.5, 1.0)) is float  # a scalar in, a float out; arrays elementwise
    assert np.array_equal(chen.tightness([0.5, 0.0, 1.0], [1.0, 0.0, 0.0]), [0.5, 1.0, np.inf])


def test_claims_quick_return_valid_verdicts():
    c1 = chen.claim_c1(True)
    c2 = chen.claim_c2(True)
    assert c1.id == "C1" and c1.verdict in VERDICTS and c1.evidence["rows"] and c1.params
    assert c2.id == "C2" and c2.verdict in VERDICTS and c2.evidence["rows"] and c2.params
    assert all(r["label_row_exact"] for r in c1.evidence["rows"])
    # the verdicts docs/claims.md reports (the same in the quick and the full run)
    assert (c1.verdict, c2.verdict) == ("fails", "holds")


def test_c1_verdicts():
    """C1 holds where both encodings run GD exactly (one loop) and fails from two loops, where the
    [w_t; 1] encoding through the project's layer also rewrites the data columns."""
    from looptheory.claims import REGISTRY

    c1 = REGISTRY["C1"]
    base = {**c1.params(True), "noise": [0.0, 0.25], "prompts per cell": 10}
    out = c1.check(True, {**base, "cells (d, n, loops)": [(2, 5, 1), (3, 4, 1)]})
    assert out.verdict == "holds" and out.counterexample is None, out.summary
    assert all(r["label_row_exact"] and r["chen_exact"] for r in out.evidence["rows"])
    out = c1.check(True, {**base, "cells (d, n, loops)": [(2, 5, 1), (2, 5, 2)]})
    assert out.verdict == "fails" and out.counterexample["loops"] == 2, out.summary
    assert [r["chen_exact"] for r in out.evidence["rows"]] == [True, True, False, False]
    assert all(r["label_row_exact"] and r["chen_last_column_only_max_rel"] <= chen.C1_TOL for r in out.evidence["rows"])


def test_c2_verdicts(monkeypatch):
    """C2 holds on prompts with n > d (finite kappa, the bound proved); is vacuous when n < d
    (kappa = inf: the bound promises nothing); and fails when the same errors are held against a
    bound e^50 times smaller (the tolerance moved to -50 in log space)."""
    from looptheory.claims import REGISTRY

    c2 = REGISTRY["C2"]
    base = {**c2.params(True), "d": [2], "noise": [0.0], "prompts per cell": 10}
    out = c2.check(True, {**base, "n/d (target)": [4], "cells (d, n)": [(2, 8)]})
    assert out.verdict == "holds" and out.evidence["rows"][0]["violations"] == 0, out.summary
    assert out.evidence["rows"][0]["non_vacuous_cases"] > 0
    assert out.examples_run == 10 * len(chen.C2_LOOPS) and f"in {10 * len(chen.C2_LOOPS)} (prompt, L) cases" in out.summary
    out = c2.check(True, {**base, "n/d (target)": [0.5], "cells (d, n)": [(2, 1)]})
    assert out.verdict == "vacuous" and out.evidence["rows"][0]["non_vacuous_cases"] == 0, out.summary
    monkeypatch.setattr(chen, "C2_TOL", -50.0)
    out = c2.check(True, {**base, "n/d (target)": [4], "cells (d, n)": [(2, 8)]})
    assert out.verdict == "fails" and out.counterexample["n"] == 8, out.summary
    row = out.evidence["rows"][0]
    assert row["first_violation"]["error"] <= row["first_violation"]["bound"]  # below C2's own bound


def test_least_squares_solution_is_the_minimum_norm_one_when_n_is_below_d():
    """n < d: the normal equations have a null space; w_LS is the minimum-norm solution, pinv(X^T) y."""
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((4, 2)), rng.standard_normal(2)
    w = chen.least_squares_solution(X, y)
    assert np.allclose(w, np.linalg.pinv(X.T) @ y, rtol=1e-12, atol=1e-14)
    assert np.allclose(X.T @ w, y, rtol=1e-12)  # interpolates the labels


def test_chen_weights_memory_estimate(monkeypatch):
    """The guard counts two (d + 1) x (d + 1) float64 matrices: 1600 bytes at d = 9."""
    monkeypatch.setenv("LOOPTHEORY_MEMORY_CAP", "1600")
    P, Q = chen.chen_weights(9, 0.1)
    assert P.nbytes + Q.nbytes == 1600
    monkeypatch.setenv("LOOPTHEORY_MEMORY_CAP", "1599")
    with pytest.raises(ValueError, match="^d: "):
        chen.chen_weights(9, 0.1)


def test_c2_prompts_carry_the_declared_label_noise():
    """C2's prompts: y = X^T w* + noise of variance sigma^2; with n > d the least-squares residual
    variance RSS / (n - d), averaged over prompts, estimates sigma^2 (0 without noise)."""
    for noise in (0.0, 0.25):
        X, y = chen._sample_identity(2, 12, noise, 400, np.random.default_rng(7))
        w = np.linalg.solve(X @ np.swapaxes(X, -1, -2), np.einsum("pdn,pn->pd", X, y)[..., None])[..., 0]
        s2 = np.sum((y - np.einsum("pdn,pd->pn", X, w)) ** 2, axis=-1) / (12 - 2)
        assert abs(s2.mean() - noise) <= 4 * s2.std(ddof=1) / math.sqrt(s2.size) + 1e-12


def test_gd_bounds_from_a_nonzero_start():
    """alpha = ||w_0 - w_LS|| (w_LS from numpy's least squares), both bounds scale with it."""
    rng = np.random.default_rng(11)
    X, y, w0 = rng.standard_normal((3, 9)), rng.standard_normal(9), np.array([0.5, -1.0, 2.0])
    w_ls = np.linalg.lstsq(X.T, y, rcond=None)[0]
    b = chen.gd_bounds(X, y, [0, 4], w0=w0)
    alpha = np.linalg.norm(w0 - w_ls)
    assert b["alpha"] == pytest.approx(alpha, rel=1e-12)
    assert b["chen"] == pytest.approx([alpha, alpha * math.exp(-4 / (2 * b["kappa"]))], rel=1e-12)
    assert chen.gd_error_after(X, y, 0, w0=w0) == pytest.approx(alpha, rel=1e-12)


def test_c2_runs_its_declared_seeds(monkeypatch):
    """C2 declares the seed of each cell: 2000 + 100 i + 10 j + k (d index i, ratio index j,
    noise index k); the check must draw each cell's prompts from that seed."""
    from looptheory.claims import REGISTRY

    seeds = []
    real = chen._c2_cell

    def spy(d, n, noise, prompts, seed, loops):
        seeds.append(seed)
        return real(d, n, noise, prompts, seed, loops)

    monkeypatch.setattr(chen, "_c2_cell", spy)
    c2 = REGISTRY["C2"]
    cells = [(d, max(1, round(r * d))) for d in (2, 5) for r in (1, 4)]
    c2.check(True, {**c2.params(True), "d": [2, 5], "n/d (target)": [1, 4], "cells (d, n)": cells,
                    "noise": [0.0, 0.25], "prompts per cell": 2})
    assert seeds == [2000 + 100 * i + 10 * j + k for i in range(2) for j in range(2) for k in range(2)]
