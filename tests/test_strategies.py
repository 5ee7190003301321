"""looptheory.strategies: drawn examples are valid inputs to the public functions, the bounds
they promise hold, and `import looptheory` does not import hypothesis."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import looptheory as lt
from looptheory.strategies import matrices, preconditioners, spd_matrices, tasks


@settings(max_examples=10, deadline=None)
@given(d=st.integers(1, 4), c=st.sampled_from([1.0, 3.0, 20.0]), data=st.data())
def test_spd_matrices_respect_the_condition_bound(d, c, data):
    M = data.draw(spd_matrices(d, max_condition=c, scale=2.0))
    ev = np.linalg.eigvalsh(M)
    assert np.array_equal(M, M.T) and ev[0] > 0
    assert ev[-1] / ev[0] <= c * (1 + 1e-12)


@settings(max_examples=10, deadline=None)
@given(d=st.integers(1, 4), data=st.data())
def test_matrices_are_bounded_and_non_symmetric_by_default(d, data):
    A = data.draw(matrices(d, scale=0.5))
    S = data.draw(matrices(d, symmetric=True))
    assert A.shape == (d, d) and np.max(np.abs(A)) <= 8 * 0.5
    assert np.array_equal(S, S.T)
    if d > 1:
        assert not np.array_equal(A, A.T)  # a Gaussian matrix is symmetric with probability 0


@settings(max_examples=6, deadline=None)
@given(prior=st.sampled_from(["gatmiry", "isotropic", "general"]), data=st.data())
def test_drawn_tasks_and_preconditioners_are_valid_inputs(prior, data):
    task = data.draw(tasks(d=st.integers(1, 3), n=st.integers(2, 12), prior=prior, noise=st.sampled_from([0.0, 0.5])))
    A = data.draw(preconditioners(task))
    Rx = lt.reference.sqrtm_spd(task.sigma_x)
    assert np.linalg.norm(Rx @ A @ Rx, 2) <= 1 + 1e-9  # the promised whitened norm
    if prior == "gatmiry":
        assert np.allclose(task.sigma_w @ task.sigma_x, np.eye(task.d), atol=1e-8)
    f, gA, _ = lt.population_loss_grad(task, A, 2)
    assert math.isfinite(f) and f >= 0 and np.all(np.isfinite(gA))
    mean, se = lt.monte_carlo_loss(task, A, 2, samples=200, seed=0)
    assert math.isfinite(mean) and math.isfinite(se)


def test_bad_arguments_name_the_parameter():
    for call, name in [(lambda: spd_matrices(0), "d"), (lambda: spd_matrices(2, max_condition=0.5), "max_condition"),
                       (lambda: matrices(2, scale=math.inf), "scale"), (lambda: tasks(prior="flat"), "prior"),
                       (lambda: preconditioners("task"), "task")]:
        with pytest.raises((ValueError, TypeError), match=name):
            call()


def test_import_looptheory_does_not_import_hypothesis():
    code = "import sys, looptheory; print('hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
