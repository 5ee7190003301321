"""The experiments' building blocks: prompt errors through the reference forward pass agree
with the exact loss (Monte Carlo within its standard error) and across model families that
represent the same function; bad ids are refused. The experiments themselves run in the
verify --quick test (test_cli) and the acceptance run (test_training)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import looptheory as lt
from looptheory import experiments as X


def test_prompt_errors_mean_is_the_exact_loss():
    task = lt.Task(2, 6, sigma_x=[[1.5, 0.4], [0.4, 0.7]], noise=0.1)
    A = np.array([[0.5, 0.1], [-0.2, 0.9]])
    u = np.array([0.2, -0.1])
    e = lt.prompt_errors({"A": A, "u": u}, "sparse", task, 3, 200_000, seed=1)
    se = e.std(ddof=1) / math.sqrt(len(e))
    assert abs(e.mean() - lt.population_loss(task, A, 3, u)) < 4 * se


def test_model_families_that_represent_one_function_give_one_error():
    task = lt.Task(3, 5)
    rng = np.random.default_rng(0)
    A, u = 0.4 * rng.standard_normal((3, 3)), 0.3 * rng.standard_normal(3)
    P, Q = lt.sparse_weights(A, u)
    base = lt.prompt_errors({"A": A, "u": u}, "sparse", task, 4, 500, seed=3)
    same = [
        lt.prompt_errors({"P": P, "Q": Q}, "full", task, 4, 500, seed=3),
        lt.prompt_errors({"P": np.stack([P] * 4), "Q": np.stack([Q] * 4)}, "multilayer", task, 4, 500, seed=3),
        lt.prompt_errors({"A": np.stack([A] * 4), "u": np.stack([u] * 4)}, "multilayer_sparse", task, 4, 500, seed=3),
    ]
    for s in same:
        np.testing.assert_allclose(s, base, rtol=1e-9, atol=1e-12)


def test_prompt_errors_report_divergence_as_inf():
    e = lt.prompt_errors({"A": 1e3 * np.eye(2), "u": np.zeros(2)}, "sparse", lt.Task(2, 4), 120, 100, seed=0)
    assert np.isinf(e).any() and not np.isnan(e).any()
    assert X._mc(e) == (math.inf, math.inf)


def test_bad_input():
    with pytest.raises(ValueError, match="ids"):
        lt.run_experiments(["E9"])
    with pytest.raises(TypeError, match="task"):
        lt.prompt_errors({"A": np.eye(2), "u": np.zeros(2)}, "sparse", "task", 1, 10, 0)
    with pytest.raises(ValueError, match="samples"):
        lt.prompt_errors({"A": np.eye(2), "u": np.zeros(2)}, "sparse", lt.Task(2, 3), 1, 0, 0)


def test_training_is_memoised_within_a_run():
    task = lt.Task(2, 4)
    a = X._train(task, "sparse", 1, steps=3, batch=4, seed=0, progress=False)
    b = X._train(task, "sparse", 1, steps=3, batch=4, seed=0, progress=False)
    c = X._train(task, "sparse", 1, steps=3, batch=4, seed=1, progress=False)
    assert a is b and c is not a


@pytest.mark.slow
def test_e5_tests_the_models_e1_and_e2_trained(monkeypatch):
    # E5 must reuse E1's and E2's trained models (memoised), not train new ones: E5's every
    # training request must hit a key that E1 + E2 created, and it must make some.
    monkeypatch.setattr(X, "train", lambda *a, **k: _fake_result(a, k))
    monkeypatch.setattr(X, "_TRAINED", {})
    requested = []
    real = X._train

    def spy(task, model, loops, **kw):
        requested.append(model)
        return real(task, model, loops, **kw)

    monkeypatch.setattr(X, "_train", spy)
    for fn in (X.experiment_sparse_vs_exact, X.experiment_full_vs_sparse):
        try:
            fn(quick=True)
        except Exception:
            pass  # fake weights need not survive the evaluation, only the training requests count
    keys_e12 = set(X._TRAINED)
    requested.clear()
    try:
        X.experiment_out_of_distribution(quick=True)
    except Exception:
        pass
    assert "sparse" in requested and "full" in requested
    assert set(X._TRAINED) == keys_e12


def _fake_result(a, k):
    task, model, loops = a
    params = lt.init_params(model, task.d, loops, 0)
    return lt.TrainResult(params, model, loops, task, np.ones(k["steps"]), k["steps"], k["batch"], "adam", 1e-2, 1e-3, 0)


def test_prompt_errors_and_run_experiments_reject_bad_input_by_name():
    task = lt.Task(2, 3)
    good = {"A": np.eye(2), "u": np.zeros(2)}
    with pytest.raises(ValueError, match="chunk"):
        lt.prompt_errors(good, "sparse", task, 1, 10, 0, chunk=0)
    with pytest.raises(ValueError, match="loops"):
        lt.prompt_errors(good, "sparse", task, 0, 10, 0)
    with pytest.raises(ValueError, match="params"):
        lt.prompt_errors({"A": np.eye(2)}, "sparse", task, 1, 10, 0)
    with pytest.raises(ValueError, match="params"):
        lt.prompt_errors({"A": np.eye(3), "u": np.zeros(2)}, "sparse", task, 1, 10, 0)
    with pytest.raises(TypeError, match="params"):
        lt.prompt_errors([np.eye(2)], "sparse", task, 1, 10, 0)
    with pytest.raises(TypeError, match="ids"):
        lt.run_experiments(5)
    with pytest.raises(ValueError, match="ids"):
        lt.run_experiments("E7")
