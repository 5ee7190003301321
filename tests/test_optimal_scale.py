"""optimal_scale and scale_loss: closed forms, an independent minimisation, stationarity,
global optimality on a grid, and Monte Carlo of the real looped forward pass."""

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from looptheory import Task, monte_carlo_loss
from looptheory.moments import trace_moments
from looptheory.optimum import optimal_scale, scale_loss
from test_moments import partition_moments  # partition_trace_moments, shared with test_moments

SX = np.array([[1.0, 0.3], [0.3, 2.0]])
SW = np.array([[1.5, -0.2], [-0.2, 0.5]])


def independent_loss_coefficients(n, d, loops, noise, trace_xw, moments_fn=partition_moments):
    """Coefficients of f(gamma), built without looptheory.optimum: SymPy expands the matrix
    polynomials in a commuting letter x standing for S~, and x^j is replaced by E tr S~^j."""
    g, x = sympy.symbols("g x")
    m = moments_fn(2 * loops, n, d)
    first = sympy.Poly(sympy.expand((1 - g * x) ** (2 * loops)), g, x)
    G = sum((1 - g * x) ** k for k in range(loops))
    second = sympy.Poly(sympy.expand(g**2 * x * G**2), g, x)
    c = Fraction(trace_xw) / d
    coef = [Fraction(0)] * (2 * loops + 1)
    for (i, j), v in first.terms():
        coef[i] += c * Fraction(int(v)) * m[j]
    for (i, j), v in second.terms():
        coef[i] += Fraction(noise) / n * Fraction(int(v)) * m[j]
    return coef


def poly_eval(coef, x):
    v = 0
    for c in reversed(coef):
        v = v * x + c
    return v


def poly_der(coef):
    return [i * coef[i] for i in range(1, len(coef))]


def independent_minimiser(coef, dps=80):
    """Global minimiser by a dense grid on [-0.5, 2.5] in mpmath, then Newton on f'."""
    with mpmath.workdps(dps):
        c = [mpmath.mpf(x.numerator) / x.denominator for x in coef]
        c1 = poly_der(c)
        c2 = poly_der(c1)
        grid = [mpmath.mpf(-0.5) + 3 * mpmath.mpf(i) / 6000 for i in range(6001)]
        best = min(grid, key=lambda t: poly_eval(c, t))
        root = mpmath.findroot(lambda t: poly_eval(c1, t), best, df=lambda t: poly_eval(c2, t), solver="newton")
        return float(root)


def tr_xw(task):
    return float(np.trace(np.asarray(task.sigma_x, float) @ np.asarray(task.sigma_w, float)))


# ---------------------------------------------------------------------------------------------
# closed forms


@pytest.mark.parametrize("n, d", [(1, 1), (5, 3), (20, 10), (100, 7), (3, 40)])
def test_one_loop_gatmiry_closed_form(n, d):
    # docs/conventions.md: L = 1, sigma_w = sigma_x^{-1}, no noise -> A* = n/(n + d + 1) sigma_x^{-1}.
    assert optimal_scale(Task.gatmiry(d, n), 1) == pytest.approx(n / (n + d + 1), rel=1e-14)
    assert optimal_scale(Task.gatmiry(2, n, sigma_x=SX), 1) == pytest.approx(n / (n + 3), rel=1e-14)


def test_one_loop_loss_closed_form():
    # f = d - 2 tr(A~) + ((n + d + 1)/n) ||A~||_F^2 with A~ = gamma I.
    n, d, g = 7, 3, 0.37
    want = d - 2 * g * d + (n + d + 1) / n * g * g * d
    assert scale_loss(Task.gatmiry(d, n), 1, g) == pytest.approx(want, rel=1e-14)


@pytest.mark.parametrize("n, d, noise", [(10, 3, 2.0), (4, 6, 0.25), (50, 2, 7.0)])
def test_one_loop_with_noise_closed_form(n, d, noise):
    # L = 1: f = c(d - 2 gamma d + gamma^2 d (n+d+1)/n) + noise gamma^2 d / n, c = tr(Sx Sw)/d,
    # so gamma* = c n / (c (n + d + 1) + noise).
    task = Task(2, n, sigma_x=SX, sigma_w=SW, noise=noise) if d == 2 else Task(d, n, noise=noise)
    c = tr_xw(task) / task.d
    assert optimal_scale(task, 1) == pytest.approx(c * n / (c * (n + task.d + 1) + noise), rel=1e-12)


@pytest.mark.parametrize("eps", [1e-12, 1e-30, 1e-100])
def test_tiny_optimal_scale_has_full_relative_precision(eps):
    # Signal eps against unit noise: gamma* = eps n / (eps (n + d + 1) + 1) ~ eps n, far below the
    # 2^-64 grid on which roots are first located; the refinement must be relative.
    task = Task(2, 5, sigma_w=eps * np.eye(2), noise=1.0)
    assert optimal_scale(task, 1) == pytest.approx(eps * 5 / (eps * 8 + 1), rel=1e-14)
    check_stationary_and_global(task, 4)


def test_infinite_n():
    task = Task(3, math.inf, noise=1.0)
    assert optimal_scale(task, 7) == 1.0
    assert scale_loss(task, 2, 0.5) == pytest.approx(3 * 0.5**4)
    assert scale_loss(task, 2, 1.0) == 0.0


def test_constant_loss_raises():
    zero = np.zeros((2, 2))
    with pytest.raises(ValueError, match="^task:.*not unique"):
        optimal_scale(Task(2, 5, sigma_w=zero), 3)
    with pytest.raises(ValueError, match="^task:.*not unique"):
        optimal_scale(Task(2, math.inf, sigma_w=zero, noise=1.0), 3)
    # Pure noise: f = (noise/n) gamma^2 E tr(S G^2) >= 0, zero only at gamma = 0.
    assert optimal_scale(Task(2, 5, sigma_w=zero, noise=1.0), 3) == 0.0


def test_validation():
    with pytest.raises(TypeError, match="^task:"):
        optimal_scale("task", 2)
    with pytest.raises(ValueError, match="^loops:"):
        optimal_scale(Task(2, 5), 0)
    with pytest.raises(ValueError, match="^gamma:"):
        scale_loss(Task(2, 5), 2, float("nan"))
    with pytest.raises(TypeError, match="^gamma:"):
        scale_loss(Task(2, 5), 2, "1")


# ---------------------------------------------------------------------------------------------
# against an independent construction and minimisation


CASES = [
    # (n, d, loops, noise, sigma_x, sigma_w)
    (10, 3, 2, 0.0, None, None),
    (20, 10, 5, 0.0, None, None),
    (5, 5, 10, 0.5, None, None),
    (12, 2, 6, 0.3, SX, SW),
    (40, 4, 20, 0.0, None, None),
    (8, 2, 20, 1.0, None, None),
    (30, 1, 2, 30.0, None, None),  # two local minima (near 0.29 and 1.18): the global one is 0.29
    (10**6, 100, 5, 0.0, None, None),  # heavy cancellation: f(gamma*) ~ 1e-17 of terms ~ 1e3
]


@pytest.mark.parametrize("n, d, loops, noise, sx, sw", CASES)
def test_against_independent_minimisation(n, d, loops, noise, sx, sw):
    task = Task(d, n, sigma_x=sx, sigma_w=sw, noise=noise)
    coef = independent_loss_coefficients(n, d, loops, noise, Fraction(tr_xw(task)))
    want = independent_minimiser(coef)
    got = optimal_scale(task, loops)
    assert got == pytest.approx(want, rel=1e-7)
    # scale_loss is the same polynomial
    for g in (0.0, 0.3, got, 1.1):
        assert scale_loss(task, loops, g) == pytest.approx(float(poly_eval(coef, Fraction(g))), rel=1e-12, abs=0)


def test_two_local_minima_picks_global():
    task = Task(1, 30, noise=30.0)
    g = optimal_scale(task, 2)
    assert g == pytest.approx(0.2906595357781, rel=1e-10)
    assert scale_loss(task, 2, g) < scale_loss(task, 2, 1.178540917061471)


def check_stationary_and_global(task, loops, moments_fn=trace_moments):
    g = optimal_scale(task, loops)
    coef = independent_loss_coefficients(task.n, task.d, loops, task.noise, Fraction(tr_xw(task)), moments_fn)
    d1, d2 = poly_der(coef), poly_der(poly_der(coef))
    gf = Fraction(g)
    # Newton step from gamma*: the distance to the exact critical point, at float rounding level.
    assert abs(poly_eval(d1, gf) / poly_eval(d2, gf)) <= 1e-12 * max(g, 1e-300)
    f_star = poly_eval(coef, gf)
    for t in np.linspace(-0.5, 2.5, 121):
        assert poly_eval(coef, Fraction(float(t))) >= f_star
    return g


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 60),
    d=st.integers(1, 12),
    loops=st.integers(1, 8),
    noise=st.sampled_from([0.0, 0.1, 1.0, 10.0, 100.0]),
)
def test_stationary_and_beats_grid_random(n, d, loops, noise):
    check_stationary_and_global(Task(d, n, noise=noise), loops)


@pytest.mark.parametrize("n, d, loops", [(10**6, 100, 20), (20, 10, 20), (3, 8, 15)])
def test_stationary_and_beats_grid_large(n, d, loops):
    check_stationary_and_global(Task(d, n), loops)


def test_loops_20_runs():
    """Timing lives in benchmarks/; here only that loops = 20 gives a scale in (0, 2)."""
    for task in (Task(100, 10**6), Task(10, 20, noise=1.0)):
        assert 0 < optimal_scale(task, 20) < 2


# ---------------------------------------------------------------------------------------------
# Monte Carlo of the real looped forward pass (seeds fixed in advance)


@pytest.mark.parametrize(
    "task, loops, gamma, seed",
    [
        (Task(2, 5, sigma_x=SX, sigma_w=SW, noise=0.5), 2, 0.4, 1),
        (Task(3, 8, noise=1.0), 3, None, 2),  # None: at the optimal scale
    ],
)
def test_scale_loss_against_monte_carlo(task, loops, gamma, seed):
    if gamma is None:
        gamma = optimal_scale(task, loops)
    A = gamma * np.linalg.inv(np.asarray(task.sigma_x, float))
    mean, se = monte_carlo_loss(task, A, loops, samples=200_000, seed=seed)
    assert abs(scale_loss(task, loops, gamma) - mean) <= 4 * se


@pytest.mark.parametrize("coeffs, roots", [
    ([0, 0, -3, 1], [0, 2]),              # A' = 3 g (g - 2): roots on both ends of [0, 2]
    ([0, -1, 1], [Fraction(1, 2)]),      # A' = 2 g - 1: a root exactly on the grid
    ([0, -6, 0, 1], [math.sqrt(2)]),     # A' = 3 g^2 - 6: an irrational root
    ([0, 3, -3, 1], [1]),                # A' = 3 (g - 1)^2: a double root, where A' touches 0
])
def test_critical_points_finds_every_root_of_the_derivative(coeffs, roots):
    """The exact root finder behind optimal_scale: every real root of A' in [0, 2] (A given by its
    integer coefficients, lowest first), each within one step of the grid 2^-bits."""
    from looptheory import optimum as O

    bits = 20
    found = O._critical_points(coeffs, 0, 2 << bits, bits)
    assert len(found) == len(roots)
    assert all(abs(x / 2**bits - float(r)) <= 2.0**-bits for x, r in zip(found, roots))
