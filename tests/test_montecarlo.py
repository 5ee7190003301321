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
    monkeypatch.setattr(mc, "_CHUNK_ENTRIES", 50)
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
