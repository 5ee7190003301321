"""The optimiser's inner evaluations (looptheory.loss): one route without its bound
(`population_loss_grad_route`) and the Hessian-vector product by a complex step
(`population_loss_hvp`), against the certified path and against exact rationals."""

from fractions import Fraction

import numpy as np
import pytest
import sympy as sp

import looptheory as lt
from looptheory.diagnostics import taylor_test
from looptheory.loss import float_routes, population_loss_grad_route, population_loss_hvp

F = Fraction


def _flat(gA, gu):
    return np.concatenate([np.ravel(gA), gu])


def _task_point(d, n, seed, noise=0.0):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((d, d))
    task = lt.Task(d, n, M @ M.T / d + np.eye(d), np.eye(d), noise=noise)
    A = 0.4 * np.linalg.inv(task.sigma_x) + 0.2 * rng.standard_normal((d, d))
    return task, A, 0.3 * rng.standard_normal(d), rng


@pytest.mark.parametrize("n, loops, near_optimum", [(20, 2, False), (10**11, 2, True), (7, 5, False)])
def test_route_gives_the_certified_numbers_bit_for_bit(n, loops, near_optimum):
    """population_loss_grad(..., fallback=False) says which route it took; the same route
    without the bound returns the same floats exactly (the same letters, the same operations).
    Near the optimum at n = 1e11 the certified call takes the centred route."""
    task, A, u, _ = _task_point(2, n, 1, noise=0.0 if near_optimum else 0.3)
    if near_optimum:
        A, u = (1 - 1e-9) * np.linalg.inv(task.sigma_x), 1e-9 * u
    f, gA, gu = lt.population_loss_grad(task, A, loops, u, fallback=False)
    assert f.route == ("centred" if near_optimum else "expansion")
    f2, gA2, gu2 = population_loss_grad_route(task, A, loops, u, f.route)
    assert float(f) == f2 and np.array_equal(gA, gA2) and np.array_equal(gu, gu2)


def _second_derivative_exact(task, A, u, v, loops, degree):
    """d^2/dt^2 f(A + t vA, u + t vu) at t = 0 exactly: f along a line is a polynomial of
    degree <= `degree` in t, fitted through degree + 1 exact evaluations."""
    d = task.d
    ts = [F(j, 4) for j in range(-(degree // 2), degree - degree // 2 + 1)]
    vals = []
    for t in ts:
        At = np.array([[A[i][j] + t * v[0][i][j] for j in range(d)] for i in range(d)], dtype=object)
        ut = np.array([u[i] + t * v[1][i] for i in range(d)], dtype=object)
        vals.append(lt.population_loss(task, At, loops, ut, exact=True))
    # the Vandermonde system in exact rationals (SymPy); only the t^2 coefficient is needed
    rat = lambda x: sp.Rational(x.numerator, x.denominator)  # noqa: E731
    V = sp.Matrix([[rat(t) ** p for p in range(len(ts))] for t in ts])
    c2 = V.LUsolve(sp.Matrix([rat(F(y)) for y in vals]))[2]
    return F(int(c2.p), int(c2.q)) * 2


def test_hvp_against_exact_rationals():
    """<w, H v> from the complex step against the exact second directional derivatives of the
    exact-rational loss (polarisation: <w, H v> = (q(v + w) - q(v - w)) / 4, q(x) = <x, H x>),
    at d = 2, loops = 2 with u and noise; every input a dyadic rational, exact in float."""
    d, L = 2, 2
    sx = np.array([[F(3, 2), F(1, 4)], [F(1, 4), F(1)]], dtype=object)
    task = lt.Task(d, 5, sx, np.eye(d, dtype=int).astype(object) * F(1), noise=F(1, 2))
    A = [[F(1, 2), F(-1, 8)], [F(1, 4), F(3, 8)]]
    u = [F(1, 4), F(-3, 8)]
    v = ([[F(1), F(-1, 2)], [F(1, 4), F(1, 2)]], [F(1, 2), F(1)])
    w = ([[F(-1, 4), F(1)], [F(1), F(-1, 2)]], [F(-1), F(1, 4)])
    plus = tuple([[a + b for a, b in zip(ra, rb)] for ra, rb in zip(x, y)] if i == 0 else [a + b for a, b in zip(x, y)]
                 for i, (x, y) in enumerate(zip(v, w)))
    minus = tuple([[a - b for a, b in zip(ra, rb)] for ra, rb in zip(x, y)] if i == 0 else [a - b for a, b in zip(x, y)]
                  for i, (x, y) in enumerate(zip(v, w)))
    degree = 2 * L + 2  # 2L in A, 2 more in u
    exact = (_second_derivative_exact(task, A, u, plus, L, degree) - _second_derivative_exact(task, A, u, minus, L, degree)) / 4
    fl = lambda M: np.array(M, dtype=float)  # noqa: E731
    ftask = lt.Task(d, 5, fl(sx), np.eye(d), noise=0.5)
    for route in float_routes(L):
        HA, Hu = population_loss_hvp(ftask, fl(A), L, fl(v[0]), fl(u), fl(v[1]), route=route)
        got = float(np.sum(HA * fl(w[0])) + Hu @ fl(w[1]))
        assert got == pytest.approx(float(exact), rel=1e-12), route


@pytest.mark.parametrize("d, loops, noise", [(3, 3, 0.2), (3, 6, 0.0), (26, 1, 0.1)])
def test_hvp_taylor_and_central_differences(d, loops, noise):
    """H w is the gradient of phi(z) = <w, grad f(z)>: Taylor remainders of phi shrink like
    h^2 with it; and H v matches central differences of the certified gradient. H is symmetric.
    d = 26 takes the evaluation's large-d path (d > 24)."""
    task, A, u, rng = _task_point(d, 20, d + loops, noise)
    m = d * d

    def split(z):
        return z[:m].reshape(d, d), z[m:]

    def grad(z):
        Az, uz = split(z)
        _, gA, gu = lt.population_loss_grad(task, Az, loops, uz, fallback=False)
        return _flat(gA, gu)

    def hvp(z, x):
        (Az, uz), (dA, du) = split(z), split(x)
        return _flat(*population_loss_hvp(task, Az, loops, dA, uz, du))

    z = _flat(A, u)
    v, w = rng.standard_normal(z.size), rng.standard_normal(z.size)
    Hv, Hw = hvp(z, v), hvp(z, w)
    assert taylor_test(lambda x: float(w @ grad(x)), lambda x: hvp(x, w), z, v).passed
    h = 1e-5
    fd = (grad(z + h * v) - grad(z - h * v)) / (2 * h)
    assert np.linalg.norm(Hv - fd) <= 1e-6 * np.linalg.norm(Hv)
    assert w @ Hv == pytest.approx(v @ Hw, rel=1e-10)


def test_hvp_at_u_zero_keeps_the_u_block():
    """f is quadratic in u: at u = 0 (u None) the u block H_uu du is not 0, and H_uA dA = 0."""
    task, A, _, rng = _task_point(3, 10, 4)
    du = rng.standard_normal(3)
    HA, Hu = population_loss_hvp(task, A, 2, np.zeros((3, 3)), None, du)
    h = 1e-5
    fd = (lt.population_loss_grad(task, A, 2, h * du)[2] - lt.population_loss_grad(task, A, 2, -h * du)[2]) / (2 * h)
    assert np.linalg.norm(HA) <= 1e-12 * np.linalg.norm(Hu)
    assert np.allclose(Hu, fd, rtol=1e-7, atol=1e-12 * np.linalg.norm(Hu))
    assert population_loss_hvp(task, A, 2, np.zeros((3, 3)))[1].tolist() == [0.0, 0.0, 0.0]


def test_hvp_memory_guard_counts_the_u_part_when_du_is_given(monkeypatch):
    """A direction in u brings in the u part, whose layout is larger (loops 1: 11 trie nodes
    against 9, 6 arrays of nodes x d^2 doubles with the gradient): at a cap between the two
    estimates the product in A alone runs and one with du is refused."""
    d = 40
    monkeypatch.setenv("LOOPTHEORY_MEMORY_CAP", str(6 * 10 * d * d * 8))
    task, A = lt.Task(d, 10), 0.1 * np.eye(d)
    HA, Hu = population_loss_hvp(task, A, 1, np.eye(d))
    assert HA.shape == (d, d)
    with pytest.raises(ValueError, match="^task: population_loss_grad at d = 40, loops = 1"):
        population_loss_hvp(task, A, 1, np.eye(d), du=np.ones(d))


@pytest.mark.parametrize("call, exc, match", [
    (lambda t: population_loss_grad_route(t, np.eye(2), 5, route="centred"), ValueError, "route"),
    (lambda t: population_loss_grad_route(t, np.eye(2), 2, route="exact"), ValueError, "route"),
    (lambda t: population_loss_hvp(t, np.eye(2), 2, np.eye(3)), ValueError, "dA"),
    (lambda t: population_loss_hvp(t, np.eye(2), 2, np.eye(2), du=[1.0, np.nan]), ValueError, "du"),
    (lambda t: float_routes(0), ValueError, "loops"),
])
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call(lt.Task(2, 10))
