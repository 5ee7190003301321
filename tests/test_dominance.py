"""Gradient-dominance ratios: closed forms at n = inf, and the worst-case searches."""

import math

import numpy as np
import pytest

import looptheory as lt
from looptheory.dominance import dominance_ratio, ratio_at_scalar_infinite_n, worst_dominance, worst_dominance_spectral


@pytest.mark.parametrize("d, loops, a", [(2, 2, 0.3), (5, 3, 1.4), (3, 4, -0.2)])
def test_scalar_ratio_at_infinite_n(d, loops, a):
    """f = d (1-a)^{2L}, grad = -2L (1-a)^{2L-1} I: ratio 4 L^2 d^{-(L-1)/L} (docs/conventions.md)."""
    r, _ = dominance_ratio(lt.Task(d, math.inf), a * np.eye(d), loops)
    assert r == pytest.approx(4 * loops**2 * d ** (-(loops - 1) / loops), rel=1e-10)
    assert ratio_at_scalar_infinite_n(d, loops) == pytest.approx(4 * loops**2 * d ** (-(loops - 1) / loops), rel=1e-14)


def test_non_symmetric_goes_lower_at_infinite_n():
    """docs/conventions.md: A = I - J_3 (J_3 the 3 x 3 nilpotent Jordan block), L = 2, n = inf, has a
    ratio below the symmetric infimum 4 L^2 d^{-(L-1)/L}."""
    J = np.diag([1.0, 1.0], 1)
    r, _ = dominance_ratio(lt.Task(3, math.inf), np.eye(3) - J, 2)
    assert r < ratio_at_scalar_infinite_n(3, 2)


def test_excess_ratio_vanishes_at_a_non_global_critical_point():
    """At d = 2, n = 20, loops = 3 the scalar critical point is not the global minimum (see
    test_optimum_flow): its gradient is zero while f - f* > 0."""
    task = lt.Task(2, 20)
    g = lt.optimal_scale(task, 3)
    f_star = lt.optimal_preconditioner(task, 3, starts=3).loss
    r, ex = dominance_ratio(task, g * np.eye(2), 3, f_star=f_star)
    assert ex < 1e-12 and lt.population_loss(task, g * np.eye(2), 3) - f_star > 1e-3


def test_spectral_search_finds_the_scalar_infimum():
    for d in (2, 100, 10**6):
        w = worst_dominance_spectral(d, math.inf, 2, 0.1, 0.0, starts=3)
        assert w.value == pytest.approx(16 * d ** (-1 / 2), rel=1e-6)  # 4 L^2 d^{-(L-1)/L} at L = 2


def test_general_search_respects_the_region():
    task = lt.Task(2, 8)
    f_star = lt.optimal_preconditioner(task, 2, starts=3).loss
    w = worst_dominance(task, 2, 0.1, f_star, excess=True, starts=3)
    f = lt.population_loss(task, w.A, 2)
    assert f - f_star >= 0.1 * (w.f0 - f_star) * (1 - 1e-6)
    assert dominance_ratio(task, w.A, 2, f_star)[1] == pytest.approx(w.value, rel=1e-8)


def _one_dimensional_loss(n, loops):
    """At d = 1 (sigma_x = sigma_w = 1, no noise) the looped model runs w_L = (1 - (1 - aS)^L) w*
    with S = chi^2_n / n, so f(a) = E (1 - aS)^{2L}, a polynomial in a with the moments
    E S^k = prod_{j<k} (n + 2j) / n (coefficients in increasing powers of a)."""
    m = [math.prod((n + 2 * j) / n for j in range(k)) for k in range(2 * loops + 1)]
    return np.array([math.comb(2 * loops, k) * (-1) ** k * m[k] for k in range(2 * loops + 1)])


@pytest.mark.parametrize("excess, rho", [(False, 0.3), (True, 0.1)])
def test_searches_reach_the_one_dimensional_infimum(excess, rho):
    """At d = 1 every A is a scalar a and the region R(rho) is an interval: the smallest ratio
    over it, found here from the polynomial f(a) alone (a root of the region's boundary, or a
    fine grid where the minimum is inside), is what both searches must reach. With excess=False
    the minimum lies on the boundary f - f* = rho (f(0) - f*); a declared candidate outside the
    region (the minimiser a*, where the plain ratio is 0) must not be taken."""
    from numpy.polynomial import polynomial as Pl

    n, L = 4, 2
    c = _one_dimensional_loss(n, L)
    dc = Pl.polyder(c)
    crit = [r.real for r in np.roots(dc[::-1]) if abs(r.imag) < 1e-12]
    a_star = min(crit, key=lambda a: Pl.polyval(a, c))
    f_star = Pl.polyval(a_star, c)
    floor = f_star + rho * (c[0] - f_star)

    def ratio(a):
        b = Pl.polyval(a, c) - (f_star if excess else 0.0)
        return Pl.polyval(a, dc) ** 2 / b**1.5

    grid = np.linspace(-3, 3, 600001)  # the searches keep the whitened entries in [-3, 3]
    inside = grid[Pl.polyval(grid, c) >= floor]
    shifted = c.copy()
    shifted[0] -= floor
    edges = [r.real for r in np.roots(shifted[::-1]) if abs(r.imag) < 1e-12 and abs(r.real) <= 3]
    points = list(edges) + [inside[np.argmin(ratio(inside))]]
    where = min(points, key=ratio)
    # candidates outside the region where the plain ratio is small: just beside a*, and at
    # a = 0.38, where f is above rho (f(0) - f*) but f - f* is not
    outside = [(np.array([[a]]), "outside R(rho)") for a in (a_star + 0.02, 0.38)]
    assert all(Pl.polyval(A[0, 0], c) - f_star < floor - f_star for A, _ in outside)
    w = worst_dominance(lt.Task(1, n), L, rho, f_star, excess=excess, starts=2, candidates=outside)
    assert w.found_by == "search" and w.value == pytest.approx(ratio(where), rel=1e-7)
    assert w.A.shape == (1, 1) and w.A[0, 0] == pytest.approx(where, abs=1e-4)
    if not excess:
        s = worst_dominance_spectral(1, n, L, rho, f_star, excess=excess, starts=3)
        assert s.value == pytest.approx(ratio(where), rel=1e-7) and s.A == pytest.approx([where], abs=1e-4)


def test_a_declared_candidate_inside_the_region_is_reported():
    """With f_star = 0 and rho = 0.1 the minimiser a* of f (d = 1, n = 4, loops = 2) lies inside
    R(rho), and the plain ratio f'^2 / f^{3/2} vanishes there: declared as a candidate it is the
    worst case found, reported by its name."""
    from numpy.polynomial import polynomial as Pl

    c = _one_dimensional_loss(4, 2)
    dc = Pl.polyder(c)
    a_star = min((r.real for r in np.roots(dc[::-1]) if abs(r.imag) < 1e-12), key=lambda a: Pl.polyval(a, c))
    assert Pl.polyval(a_star, c) >= 0.1 * c[0]  # inside R(0.1)
    w = worst_dominance(lt.Task(1, 4), 2, 0.1, 0.0, excess=False, starts=1, candidates=[(np.array([[a_star]]), "a*")])
    assert w.found_by == "a*" and w.value < 1e-20 and w.A[0, 0] == pytest.approx(a_star, rel=1e-12)


@pytest.mark.parametrize("candidates, error, match", [
    ([(np.eye(2), "fits"), (np.eye(3), "wrong shape")], ValueError, r"candidates\[1\]"),
    ([(np.eye(2), 3)], TypeError, "candidates: entry 0"),
    ([np.eye(2)], TypeError, "candidates: entry 0"),
])
def test_bad_candidates_are_refused(candidates, error, match):
    with pytest.raises(error, match=match):
        worst_dominance(lt.Task(2, 8), 2, 0.1, 0.0, candidates=candidates)


def test_hessian_vector_product_scales_its_step_with_the_point():
    """The central difference (g(x + h v) - g(x - h v)) / 2h with h = 1e-6 (1 + |x|) / |v|: for
    g(x) = x^3 (elementwise) the product is 3 x^2 v, and far from 0 (|x| ~ 1e6, where a step of
    1e-6 would be rounded in x + h v to a relative 1e-4) it stays accurate."""
    from looptheory.dominance import _hvp

    x, v = np.array([1e6, 2e6]), np.array([1.0, -1.0])
    assert _hvp(lambda z: z**3, x, v) == pytest.approx(3 * x**2 * v, rel=1e-9)
    assert _hvp(lambda z: z**3, np.array([0.5, -1.0]), 2 * v) == pytest.approx([1.5, -6.0], rel=1e-9)
    assert np.array_equal(_hvp(lambda z: z**3, x, np.zeros(2)), np.zeros(2))


def test_searches_start_where_declared(monkeypatch):
    """The starts are a stated function of the seed (worst_dominance's and
    worst_dominance_spectral's docstrings), recomputed here; the spectral search looks at the
    excess ratio unless told otherwise, like the general one."""
    import looptheory.dominance as D

    seen = []
    monkeypatch.setattr(D, "_search", lambda fg, x_dim, f_star, f0, rho, loops, excess, inits, *a, **k: (
        seen.append((excess, [np.array(x) for x in inits])) or (math.nan, None, "search")))
    sx = np.array([[2.0, 0.5], [0.5, 1.0]])
    w = worst_dominance(lt.Task(2, 8, sigma_x=sx), 2, 0.1, 0.0, starts=3, seed=5)
    rng = np.random.default_rng(5)
    expected = []
    for _ in range(3):
        a = rng.uniform(-1, 2)
        Z = rng.standard_normal((2, 2))
        expected.append((a * np.linalg.inv(sx) + Z * rng.uniform(0.05, 1.0) / math.sqrt(2)).ravel())
    assert w.quantity == "excess_ratio" and seen[0][0] is True
    assert all(np.allclose(x, e, rtol=1e-14, atol=0) for x, e in zip(seen[0][1], expected, strict=True))
    w = worst_dominance_spectral(8, math.inf, 2, 0.1, 0.0, starts=3, seed=5)
    rng = np.random.default_rng(5)
    assert w.quantity == "excess_ratio" and seen[1][0] is True
    assert all(np.array_equal(x, rng.uniform(-0.5, 1.8, 4)) for x in seen[1][1]) and len(seen[1][1]) == 3
