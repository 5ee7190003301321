"""looptheory.testing: each helper passes on a right answer and fails, saying what it saw, on
a wrong one."""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest

import looptheory as lt
import looptheory.testing as T

TASK = lt.Task(2, 8, sigma_x=np.array([[2.0, 0.3], [0.3, 1.0]]))
A0 = np.array([[0.4, 0.1], [-0.2, 0.5]])


def loss(A):
    return float(lt.population_loss(TASK, A, 2))


def grad(A):
    return lt.population_loss_grad(TASK, A, 2)[1]


def test_assert_gradient_passes_the_engines_gradient_and_reports_a_wrong_slope():
    T.assert_gradient(loss, A0, grad)
    T.assert_gradient(lambda A: (loss(A), grad(A)), A0)  # f returning (value, gradient)
    with pytest.raises(AssertionError, match=r"Taylor slope (0\.9|1\.0)\d* .*finite differences"):
        T.assert_gradient(loss, A0, lambda A: grad(A).T)  # the classic transposition mistake
    with pytest.raises(ValueError, match="grad: expected an array of shape"):
        T.assert_gradient(loss, A0, lambda A: grad(A).ravel())


def test_assert_exact_equal():
    A = np.array([[F(1, 2), 0], [F(1, 3), 1]], dtype=object)
    exact = lt.population_loss(lt.Task(2, 5), A, 1, exact=True)
    T.assert_exact_equal(exact, lt.reference.isserlis_loss(lt.Task(2, 5), A, 1))  # an independent route
    T.assert_exact_equal(np.array([F(1, 3), 2], dtype=object), [F(2, 6), 2])
    with pytest.raises(AssertionError, match=r"at \(1,\): actual 3, expected 2, difference 1"):
        T.assert_exact_equal([F(1, 3), 3], [F(1, 3), 2])
    with pytest.raises(TypeError, match="expected: expected exact rationals"):
        T.assert_exact_equal(F(1, 3), 1 / 3)


def test_assert_monte_carlo_agrees_and_a_wrong_exact_value_is_caught(monkeypatch):
    T.assert_monte_carlo_agrees(TASK, A0, 2, samples=4000, seed=1)
    monkeypatch.setattr(T, "population_loss", lambda *a, **k: 1.2 * lt.population_loss(*a, **k))
    with pytest.raises(AssertionError, match=r"z = -\d+"):
        T.assert_monte_carlo_agrees(TASK, A0, 2, samples=4000, seed=1)
