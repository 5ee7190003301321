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
