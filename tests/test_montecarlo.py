"""The Monte Carlo estimator against closed forms. Seeds and regions are fixed in advance."""

import math

import numpy as np
import pytest

import looptheory as lt
from looptheory.reference import one_loop_closed_form


@pytest.mark.parametrize("seed, d, n", [(0, 2, 5), (1, 3, 10), (2, 4, 3)])
def test_one_loop_matches_closed_form(seed, d, n):
    rng = np.random.default_rng(100 + seed)
    M = rng.standard_normal((d, d))
    sx = M @ M.T / d + 0.5 * np.eye(d)
    task = lt.Task.gatmiry(d, n, sx)
    A = np.linalg.inv(sx) * 0.6 + 0.1 * rng.standard_normal((d, d))
    mean, se = lt.monte_carlo_loss(task, A, 1, samples=200_000, seed=seed)
    assert abs(mean - one_loop_closed_form(task, A)) < 4 * se


def test_reproducible_and_seed_dependent():
    t = lt.Task(2, 4)
    a = lt.monte_carlo_loss(t, np.eye(2) * 0.5, 2, samples=1000, seed=3)
    b = lt.monte_carlo_loss(t, np.eye(2) * 0.5, 2, samples=1000, seed=3)
    c = lt.monte_carlo_loss(t, np.eye(2) * 0.5, 2, samples=1000, seed=4)
    assert a == b and a != c


def test_chunking_does_not_change_the_estimate(monkeypatch):
    # A different chunking draws different prompts: the two estimates must agree statistically.
    import looptheory.montecarlo as mc

    t = lt.Task(2, 3)
    A = np.eye(2) * 0.4
    ref = lt.monte_carlo_loss(t, A, 2, samples=5000, seed=1)
    monkeypatch.setattr(mc, "_CHUNK_ENTRIES", 500)
    small = lt.monte_carlo_loss(t, A, 2, samples=5000, seed=1)
    assert abs(small[0] - ref[0]) < 4 * math.hypot(small[1], ref[1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(task=lt.Task(2, math.inf), A=np.eye(2), loops=1), "n"),
        (dict(task=lt.Task(2, 3), A=np.eye(3), loops=1), "A"),
        (dict(task=lt.Task(2, 3), A=np.eye(2), loops=0), "loops"),
        (dict(task=lt.Task(2, 3), A=np.eye(2), loops=1, samples=1), "samples"),
        (dict(task=lt.Task(2, 3), A=np.eye(2), loops=1, u=[1.0]), "u"),
        (dict(task="task", A=np.eye(2), loops=1), "task"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        lt.monte_carlo_loss(**kwargs)


# --- the conditional estimator (issue 14, part 2) -------------------------------------------------
# Parameters and seeds below are fixed in advance; the general cells come from the declared rule of
# scripts/monte_carlo_table.py (non-symmetric A, u, noise 0.3, general SPD sigma_x and sigma_w).

import importlib.util
import os
import warnings

from looptheory.montecarlo import conditional_loss, sphere_moment, tail_diagnostics
from looptheory.record import mc_tail


def _table_script():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "monte_carlo_table.py")
    spec = importlib.util.spec_from_file_location("monte_carlo_table", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TABLE = _table_script()


def _general_case():
    """d = 2, n = 3, loops = 3 with a fixed X and general parameters."""
    sx = np.array([[1.0, 1 / 3], [1 / 3, 1 / 9 + 1 / 4]])
    sw = np.array([[0.25, -0.125], [-0.125, 1 / 16 + 1]])
    task = lt.Task(2, 3, sx, sw, noise=0.25)
    A = np.array([[0.3, -0.2], [0.1, 0.4]])
    u = np.array([0.5, -1 / 3])
    X = np.array([[1.0, -2.0, 0.5], [0.5, 1.0, -1.5]])
    return task, A, u, X


def test_conditional_loss_is_the_average_of_the_real_forward_pass_over_w_noise_and_query():
    # brute force: X fixed, (w*, noise, x_q) drawn from the task's law, the real attention layers
    task, A, u, X = _general_case()
    loops, m = 3, 200_000
    rng = np.random.default_rng(14)
    lx = np.linalg.cholesky(task.sigma_x)
    lw = np.linalg.cholesky(task.sigma_w)
    w = rng.standard_normal((m, 2)) @ lw.T
    x_q = rng.standard_normal((m, 2)) @ lx.T
    y = w @ X + math.sqrt(task.noise) * rng.standard_normal((m, 3))
    P, Q = lt.sparse_weights(A, u)
    err = lt.prediction(lt.looped_forward(lt.make_prompt(np.broadcast_to(X, (m, 2, 3)), y, x_q), P, Q, loops)) \
        - np.sum(w * x_q, axis=1)
    sq = err ** 2
    z = (np.mean(sq) - conditional_loss(task, A, loops, X, u)) / (np.std(sq, ddof=1) / math.sqrt(m))
    assert abs(z) < 4, z


def _gaussian_expectation(poly):
    """E of a polynomial in independent N(0, 1) symbols: E z^k = (k - 1)!! for even k, 0 for odd."""
    total = 0
    for powers, coeff in poly.terms():
        term = coeff
        for k in powers:
            term *= 0 if k % 2 else math.prod(range(k - 1, 0, -2))
        total += term
    return total


def test_conditional_loss_equals_the_exact_rational_expectation_of_the_symbolic_forward_pass():
    # the attention layer of docs/conventions.md run in exact rationals on symbolic w*, noise,
    # x_q (written as Cw z_w, sigma e, Cx z_q), the square expanded and integrated monomial by monomial
    import sympy as sp

    task, A, u, X = _general_case()
    d, n, loops = 2, 3, 3
    R = sp.Rational
    Cx = sp.Matrix([[1, 0], [R(1, 3), R(1, 2)]])
    Cw = sp.Matrix([[R(1, 2), 0], [R(-1, 4), 1]])
    sigma = R(1, 2)
    As = sp.Matrix([[R(3, 10), R(-1, 5)], [R(1, 10), R(2, 5)]])
    us = sp.Matrix([R(1, 2), R(-1, 3)])
    Xs = sp.Matrix([[1, -2, R(1, 2)], [R(1, 2), 1, R(-3, 2)]])
    zq, zw, e = sp.symbols("zq0:2"), sp.symbols("zw0:2"), sp.symbols("e0:3")
    xq, ws = Cx * sp.Matrix(zq), Cw * sp.Matrix(zw)
    y = [sp.expand((ws.T * Xs[:, i])[0] + sigma * e[i]) for i in range(n)]
    Z = sp.zeros(d + 1, n + 1)
    Z[:d, :n], Z[:d, n] = Xs, xq
    for i in range(n):
        Z[d, i] = y[i]
    P, Q = sp.zeros(d + 1, d + 1), sp.zeros(d + 1, d + 1)
    P[d, :d], P[d, d], Q[:d, :d] = us.T, 1, As
    Mask = sp.diag(*([1] * n + [0]))
    for _ in range(loops):
        Z = (Z - P * Z * Mask * Z.T * Q * Z / n).applyfunc(sp.expand)
    err = sp.expand(-Z[d, n] - (ws.T * xq)[0])
    exact = _gaussian_expectation(sp.Poly(err ** 2, *zq, *zw, *e))
    # the float task of _general_case is this one: sigma_x = Cx Cx^T, sigma_w = Cw Cw^T, noise = sigma^2
    assert np.allclose(np.array(Cx * Cx.T, dtype=float), task.sigma_x, rtol=0, atol=1e-15)
    assert np.allclose(np.array(Cw * Cw.T, dtype=float), task.sigma_w, rtol=0, atol=1e-15)
    assert exact.is_Rational and exact > 0
    assert conditional_loss(task, A, loops, X, u) == pytest.approx(float(exact), rel=1e-12)


def test_conditional_loss_batches_and_averages_to_the_population_loss_shape():
    task, A, u, X = _general_case()
    batch = np.stack([X, 2 * X, -X])
    out = conditional_loss(task, A, 3, batch, u)
    assert out.shape == (3,)
    assert out[0] == out[2] == conditional_loss(task, A, 3, X, u)  # c(X) is even in X
    # A = 0 predicts 0: c(X) = tr(sigma_x sigma_w) for every X (docs/conventions.md, "Exact values to test against")
    assert conditional_loss(task, np.zeros((2, 2)), 2, X, u) == pytest.approx(np.trace(task.sigma_x @ task.sigma_w), rel=1e-14)


def test_sphere_moment_against_an_average_over_directions_and_closed_cases():
    rng = np.random.default_rng(5)
    G = rng.standard_normal((3, 4))
    W = G @ G.T
    v = rng.standard_normal((400_000, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    q = np.einsum("bi,ij,bj->b", v, W, v) ** 4
    z = (math.exp(sphere_moment(W, 4)) - q.mean()) / (q.std(ddof=1) / math.sqrt(q.size))
    assert abs(z) < 4, z
    # d = 1: W^m; W = c I: c^m; m = 1: tr W / d
    assert math.exp(sphere_moment(np.array([[3.0]]), 5)) == pytest.approx(3.0 ** 5, rel=1e-13)
    assert math.exp(sphere_moment(2.5 * np.eye(4), 7)) == pytest.approx(2.5 ** 7, rel=1e-13)
    assert math.exp(sphere_moment(W, 1)) == pytest.approx(np.trace(W) / 3, rel=1e-13)
    # m = 2: E (v^T W v)^2 = (tr(W)^2 + 2 tr(W^2)) / (d (d + 2))
    assert math.exp(sphere_moment(W, 2)) == pytest.approx((np.trace(W) ** 2 + 2 * np.trace(W @ W)) / 15, rel=1e-13)


@pytest.mark.parametrize("d, n, loops, proposal", [(2, 3, 6, "spike"), (4, 10, 2, "spike"), (2, 10, 2, "target")])
def test_z_against_the_exact_engine_at_cheap_cells(d, n, loops, proposal):
    exact, r, z, _ = TABLE.run_cell(d, n, loops, "conditional", proposal, samples=20_000, seed=77)
    assert r.trusted, r.why
    assert abs(z) < 4, (exact, r)


def test_result_unpacks_as_mean_and_stderr_and_carries_diagnostics():
    task, A, u = TABLE.cell_task(2, 10)
    r = lt.monte_carlo_loss(task, A, 2, u, samples=2000, seed=3)
    mean, se = r
    assert (mean, se) == (r.mean, r.stderr) == (r[0], r[1]) and len(r) == 2
    assert isinstance(r, lt.MonteCarloResult) and r.method == "conditional" and r.proposal == "spike"
    assert r.samples == 2000 and 0 < r.ess <= 2000 and 0 < r.weight_ess <= 2000
    assert 0 < r.top_permille_share <= r.top10_share < 1  # the top 0.1% of 2000 draws is the largest 2
    assert r.as_dict()["ess"] == r.ess
    with pytest.warns(RuntimeWarning, match="10 largest"):  # 2000 squared errors of whole prompts: a heavy tail
        p = lt.monte_carlo_loss(task, A, 2, u, samples=2000, seed=3, method="plain")
    assert p.proposal == "target" and p.weight_ess == pytest.approx(2000)


def test_tail_diagnostics_of_a_constructed_heavy_tailed_sample():
    # 19 990 draws of 1 and 10 of 1000: every number by hand
    h = np.concatenate([np.ones(19_990), np.full(10, 1000.0)])
    np.random.default_rng(0).shuffle(h)
    t = tail_diagnostics(h)
    total = 19_990 + 10_000
    assert t["ess"] == pytest.approx(total ** 2 / (19_990 + 10 * 1000.0 ** 2), rel=1e-12)  # 88.9
    assert t["top10_share"] == pytest.approx(10_000 / total, rel=1e-12) == mc_tail(h)
    assert t["top_permille_share"] == pytest.approx(10_010 / total, rel=1e-12)  # the 20 largest
    assert t["weight_ess"] == 20_000
    w = np.where(np.arange(h.size) % 2 == 0, 1.0, 3.0)
    assert tail_diagnostics(h, w)["weight_ess"] == pytest.approx((4 * 10_000) ** 2 / (10 * 10_000), rel=1e-12)
    # a Pareto sample with tail index 1.2 (infinite variance): a few draws carry the sum
    p = tail_diagnostics(np.random.default_rng(1).pareto(1.2, 100_000) + 1)
    assert p["ess"] < 1000 and p["top_permille_share"] > 0.1
    assert tail_diagnostics([0.0, 0.0])["ess"] == 2  # all equal
    assert tail_diagnostics([1.0, math.inf])["top10_share"] == 1.0


def test_untrusted_standard_error_warns_and_the_default_does_not():
    task, A, u = TABLE.cell_task(2, 3)
    with pytest.warns(RuntimeWarning, match="cannot be trusted.*effective sample size"):
        r = lt.monte_carlo_loss(task, A, 6, u, samples=20_000, seed=5, method="conditional", proposal="target")
    assert not r.trusted and r.ess < 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lt.monte_carlo_loss(task, A, 6, u, samples=20_000, seed=5).trusted
    # a light-looking sample that never reached the tail: only the unseen-tail rule sees it
    task, A, u = TABLE.cell_task(2, 10)
    with pytest.warns(RuntimeWarning, match="unseen tail"):
        r = lt.monte_carlo_loss(task, A, 6, u, samples=20_000, seed=5, method="conditional", proposal="target")
    assert r.unseen_tail * r.mean > r.stderr


def test_conditional_standard_error_is_below_half_the_plain_one_at_d10_n20_loops3():
    # issue 14: at d = 10, n = 20, loops = 3 and the same number of prompts (measured: about 0.21)
    d, n, L = TABLE.PRECISION_CELL
    _, p, _, _ = TABLE.run_cell(d, n, L, "plain", "target", samples=10_000, seed=8)
    _, c, z, _ = TABLE.run_cell(d, n, L, "conditional", "spike", samples=10_000, seed=8)
    assert c.stderr < 0.35 * p.stderr, (c.stderr, p.stderr)
    assert abs(z) < 4


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(method="exact"), ValueError, "^method"),
        (dict(method=1), TypeError, "^method"),
        (dict(proposal="radial"), ValueError, "^proposal"),
        (dict(proposal=0.5), TypeError, "^proposal"),
        (dict(method="plain", proposal="spike"), ValueError, "^proposal"),
    ],
)
def test_bad_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        lt.monte_carlo_loss(lt.Task(2, 3), np.eye(2), 1, samples=10, **kwargs)


def test_bad_input_to_the_helpers():
    task, A, u, X = _general_case()
    with pytest.raises(ValueError, match="^X"):
        conditional_loss(task, A, 2, X[:, :2])
    with pytest.raises(ValueError, match="^X"):
        conditional_loss(task, A, 2, np.zeros((2, 2, 2, 3)))
    with pytest.raises(TypeError, match="^task"):
        conditional_loss("task", A, 2, X)
    with pytest.raises(ValueError, match="^loops"):
        conditional_loss(task, A, 0, X)
    with pytest.raises(ValueError, match="^contributions"):
        tail_diagnostics([1.0, -1.0])
    with pytest.raises(ValueError, match="^weights"):
        tail_diagnostics([1.0, 2.0], [1.0])


@pytest.mark.slow
def test_the_whole_z_table_of_docs_monte_carlo():
    # the default estimator over every declared cell, at the script's sample size: |z| <= 4
    rows = []
    for d in TABLE.DS:
        for n in TABLE.NS:
            for L in TABLE.LOOPS:
                exact, r, z, _ = TABLE.run_cell(d, n, L, "conditional", "spike")
                rows.append((d, n, L, z, r.trusted))
    assert all(abs(z) <= 4 for *_, z, _ in rows), rows
    assert all(t for *_, t in rows), rows


@pytest.mark.parametrize("offset_se, trusted, verdict", [(0.5, True, "pass"), (5.0, True, "fail"), (0.5, False, "unresolved"),
                                                         (5.0, False, "unresolved")])
def test_verify_check_verdicts_follow_z_and_trust(monkeypatch, offset_se, trusted, verdict):
    # checks.check_mc_one_loop: pass needs |z| < 4 with trusted standard errors; an untrusted one decides nothing
    from looptheory import checks
    from looptheory.reference import one_loop_closed_form

    def fake(task, A, loops, u, samples, seed):
        exact = one_loop_closed_form(task, A)
        return lt.MonteCarloResult(exact + offset_se * 0.01, 0.01, samples, "conditional", "spike", 1e4, samples, 0.01,
                                   0.02, 0.0, trusted, "" if trusted else "constructed")

    monkeypatch.setattr(checks, "monte_carlo_loss", fake)
    out = checks.check_mc_one_loop(True)
    assert out.verdict == verdict
    assert all(r["z"] == pytest.approx(offset_se) and r["trusted"] is trusted and r["ess"] == 1e4 for r in out.evidence["rows"])


@pytest.mark.parametrize("loops", [1, 4])
def test_spike_weights_average_to_one(loops):
    # with A = 0 the loss given X is the constant tr(sigma_x sigma_w), so the estimate is that constant
    # times the mean importance weight, whose expectation is 1 exactly when p/q is normalised right
    task = TABLE.cell_task(2, 3)[0]
    r = lt.monte_carlo_loss(task, np.zeros((2, 2)), loops, samples=20_000, seed=21)
    f0 = float(np.trace(task.sigma_x @ task.sigma_w))
    assert r.stderr > 1e-3 * f0 and r.weight_ess < 0.9 * r.samples  # the weights do vary
    assert abs(r.mean - f0) < 4 * r.stderr, (r.mean, f0, r.stderr)
