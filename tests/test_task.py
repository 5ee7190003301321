import math
from fractions import Fraction

import numpy as np
import pytest

import looptheory as lt


def test_defaults_are_identity_and_frozen():
    t = lt.Task(3, 10)
    assert np.array_equal(t.sigma_x, np.eye(3)) and np.array_equal(t.sigma_w, np.eye(3))
    with pytest.raises(Exception):
        t.d = 4
    with pytest.raises(ValueError):
        t.sigma_x[0, 0] = 2.0  # read-only arrays


def test_infinite_n_allowed_but_not_sampled():
    t = lt.Task(2, math.inf)
    assert t.n == math.inf
    with pytest.raises(ValueError, match="n"):
        t.sample(3, np.random.default_rng(0))


def test_exact_entries_are_kept_exact():
    t = lt.Task(2, 3, sigma_x=[[Fraction(2), Fraction(1, 2)], [Fraction(1, 2), 1]], noise=Fraction(1, 3))
    assert t.sigma_x.dtype == object and t.sigma_x[0, 1] == Fraction(1, 2)
    assert t.noise == Fraction(1, 3)


def test_gatmiry_prior_is_inverse():
    sx = np.array([[2.0, 0.3], [0.3, 1.0]])
    t = lt.Task.gatmiry(2, 5, sx)
    assert np.allclose(t.sigma_w @ sx, np.eye(2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(d=0, n=3), "d"),
        (dict(d=2, n=0), "n"),
        (dict(d=2, n=2.5), "n"),
        (dict(d=2, n=3, sigma_x=np.eye(3)), "sigma_x"),
        (dict(d=2, n=3, sigma_x=[[1.0, 0.5], [0.0, 1.0]]), "sigma_x"),
        (dict(d=2, n=3, sigma_x=[[1.0, 2.0], [2.0, 1.0]]), "sigma_x"),
        (dict(d=2, n=3, sigma_x=[[1.0, 0.0], [0.0, np.nan]]), "sigma_x"),
        (dict(d=2, n=3, sigma_w=[[1.0, 0.0], [0.0, -1.0]]), "sigma_w"),
        (dict(d=2, n=3, noise=-0.1), "noise"),
        (dict(d=2, n=3, noise=float("inf")), "noise"),
    ],
)
def test_bad_task_names_the_parameter(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        lt.Task(**kwargs)


def test_semidefinite_prior_allowed():
    lt.Task(2, 3, sigma_w=[[1.0, 0.0], [0.0, 0.0]])


def test_sample_shapes_and_labels():
    t = lt.Task(3, 7, noise=0.0)
    X, y, x_q, y_q, w = t.sample(5, np.random.default_rng(0))
    assert X.shape == (5, 3, 7) and y.shape == (5, 7) and x_q.shape == (5, 3) and y_q.shape == (5,) and w.shape == (5, 3)
    assert np.allclose(y, np.einsum("bd,bdn->bn", w, X))
    assert np.allclose(y_q, np.einsum("bd,bd->b", w, x_q))


def test_sample_covariances():
    # Sample covariances within 5 standard errors of sigma_x, sigma_w and the noise variance.
    sx = np.array([[2.0, 0.6], [0.6, 1.0]])
    sw = np.array([[0.5, -0.2], [-0.2, 0.3]])
    t = lt.Task(2, 4, sx, sw, noise=0.25)
    X, y, x_q, y_q, w = t.sample(50_000, np.random.default_rng(1))
    xs = np.swapaxes(X, 1, 2).reshape(-1, 2)
    for samp, cov in ((xs, sx), (w, sw)):
        emp = samp.T @ samp / len(samp)
        se = np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / len(samp))
        assert np.all(np.abs(emp - cov) < 5 * se)
    eps = y - np.einsum("bd,bdn->bn", w, X)
    assert abs(eps.var() - 0.25) < 5 * 0.25 * np.sqrt(2 / eps.size)


def test_sample_reproducible():
    t = lt.Task(2, 3)
    a = t.sample(4, np.random.default_rng(7))
    b = t.sample(4, np.random.default_rng(7))
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
