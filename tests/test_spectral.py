"""The spectral family against the dense exact loss (random rotations and sigma_x)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from looptheory.strategies import spd_matrices

import looptheory as lt
from looptheory.diagnostics import taylor_test
from looptheory.spectral import spectral_loss, spectral_loss_grad


@settings(max_examples=12)
@given(d=st.integers(1, 5), n=st.sampled_from([1, 2, 7, 50, math.inf]), loops=st.integers(1, lt.MAX_LOOPS),
       noise=st.sampled_from([0.0, 0.4]), seed=st.integers(0, 10**6), data=st.data())
def test_matches_dense_loss(d, n, loops, noise, seed, data):
    rng = np.random.default_rng(seed)
    sx = data.draw(spd_matrices(d, max_condition=4.0))
    a = rng.uniform(0.0, 1.2, d)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    ev, V = np.linalg.eigh(sx)
    rx = (V * np.sqrt(ev)) @ V.T
    rxi = np.linalg.inv(rx)
    A = (rxi @ ((Q * a) @ Q.T) @ rxi).T  # so that Rx A^T Rx = Q diag(a) Q^T
    g = lt.Task.gatmiry(d, n, sx)
    task = lt.Task(d, n, g.sigma_x, g.sigma_w, noise=noise)
    assert spectral_loss(a, n, loops, noise) == pytest.approx(lt.population_loss(task, A, loops), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("loops", range(1, lt.MAX_LOOPS + 1))
def test_gradient_taylor(loops):
    rng = np.random.default_rng(loops)
    a = rng.uniform(0.2, 1.0, 6)
    res = taylor_test(lambda x: spectral_loss(x, 12, loops, 0.2), lambda x: spectral_loss_grad(x, 12, loops, 0.2)[1], a, rng.standard_normal(6))
    assert res.passed, res


def test_gradient_matches_dense_gradient_on_the_diagonal():
    # sigma_x = I, A = diag(a): the dense gradient's diagonal is df/da.
    a = np.array([0.3, 0.7, 1.1])
    f, g = spectral_loss_grad(a, 9, 3, 0.1)
    f2, gA, _ = lt.population_loss_grad(lt.Task(3, 9, noise=0.1), np.diag(a), 3)
    assert f == pytest.approx(f2, rel=1e-12)
    assert np.allclose(g, np.diag(gA), rtol=1e-10)


def test_large_d_is_cheap_and_equal_eigenvalues_scale_with_d():
    # With all eigenvalues equal the loss is a function of d through tr(I) = d and the T sums;
    # at n = inf it is d (1 - a)^{2L}.
    a = np.full(10**6, 0.9)
    assert spectral_loss(a, math.inf, 3) == pytest.approx(1e6 * 0.1**6, rel=1e-12)
    assert spectral_loss(a, 10**8, 3) > spectral_loss(a, math.inf, 3)


def test_bad_input():
    with pytest.raises(ValueError, match="a"):
        spectral_loss([], 3, 2)
    with pytest.raises(ValueError, match="loops"):
        spectral_loss([0.5], 3, lt.MAX_LOOPS + 1)
    with pytest.raises(ValueError, match="noise"):
        spectral_loss([0.5], 3, 1, noise=-1)


def test_multiplicity_equals_repeated_eigenvalues():
    a = np.array([0.2, 0.9, 1.3])
    m = np.array([3, 1, 2])
    f1, g1 = spectral_loss_grad(a, 7, 3, 0.2, multiplicity=m)
    f2, g2 = spectral_loss_grad(np.repeat(a, m), 7, 3, 0.2)
    assert f1 == pytest.approx(f2, rel=1e-13)
    assert np.allclose(g1, g2[np.cumsum(m) - 1], rtol=1e-12)
