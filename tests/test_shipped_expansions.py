"""The shipped expansions (looptheory/data) against a fresh build (loops <= 5) and, for every
loop count, against the independent Isserlis reference in exact arithmetic."""

import os
from fractions import Fraction as F

import numpy as np
import pytest

import looptheory as lt
from looptheory.expectations import Engine
from looptheory.loss import ALPHABET, PARTS, build_part_expansion, data_path, part_expansion
from looptheory.reference import isserlis_loss


@pytest.mark.parametrize("loops", range(1, lt.MAX_LOOPS + 1))
def test_every_supported_loop_count_ships(loops):
    for part in PARTS:
        assert os.path.exists(data_path(loops, part)), data_path(loops, part)


@pytest.mark.parametrize("loops", [1, 2, 3, 4, pytest.param(5, marks=pytest.mark.slow)])
def test_shipped_equals_fresh_build(loops, monkeypatch):
    import looptheory.loss as L

    # a fresh engine, so nothing built earlier in this process is reused
    monkeypatch.setattr(L, "_engine", lambda: Engine(ALPHABET))
    for part in PARTS:
        assert dict(part_expansion(loops, part)) == dict(build_part_expansion(loops, part))


def _rational_case(rng, d):
    def rmat():
        return np.array([[F(int(rng.integers(-4, 5)), 6) for _ in range(d)] for _ in range(d)], dtype=object)

    R, M = rmat(), rmat()
    sx = R.dot(R.T) + np.eye(d, dtype=object) * F(1, 2)
    sw = M.dot(M.T) + np.eye(d, dtype=object) * F(1, 3)
    u = np.array([F(int(rng.integers(-3, 4)), 5) for _ in range(d)], dtype=object)
    return sx, sw, rmat(), u


@pytest.mark.slow
@pytest.mark.parametrize("loops", [5, 6])
@pytest.mark.parametrize("d, n", [(1, 1), (1, 3), (2, 1), (2, 2)])
def test_large_loop_counts_equal_isserlis_reference(loops, d, n):
    rng = np.random.default_rng(100 * loops + 10 * d + n)
    sx, sw, A, u = _rational_case(rng, d)
    task = lt.Task(d, n, sx, sw, noise=F(2, 7))
    assert lt.population_loss(task, A, loops, u, exact=True) == isserlis_loss(task, A, loops, u)


@pytest.mark.parametrize("loops", [5, 6])
def test_large_loop_counts_against_monte_carlo(loops):
    rng = np.random.default_rng(loops)
    d, n = 2, 8
    task = lt.Task(d, n, np.array([[1.0, 0.3], [0.3, 0.6]]), np.eye(d) * 0.5, noise=0.1)
    A = 0.35 * np.eye(d) + rng.uniform(-0.1, 0.1, (d, d))
    u = np.array([0.2, -0.1])
    mean, se = lt.monte_carlo_loss(task, A, loops, u, samples=200_000, seed=loops)
    assert abs(mean - lt.population_loss(task, A, loops, u)) < 4 * se
