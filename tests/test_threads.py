"""single_blas_thread (looptheory/_threads.py): one BLAS thread inside the optimisers, and the
caller's thread settings as they were afterwards (issue 13)."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg  # noqa: F401  (loads SciPy's own BLAS, so that both libraries are checked)
from threadpoolctl import threadpool_info, threadpool_limits

import looptheory as lt
from looptheory import dominance, flow, optimum
from looptheory._threads import single_blas_thread


def _blas_threads():
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


@pytest.fixture
def two_threads():
    """The caller's setting during a test: 2 BLAS threads (restored after the test)."""
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        if not before or max(before.values()) < 2:
            pytest.skip("no BLAS library here that runs 2 threads: nothing to restore")
        yield before


def test_one_thread_inside_and_the_callers_setting_after(two_threads):
    with single_blas_thread():
        inside = _blas_threads()
    assert inside.keys() == two_threads.keys() and set(inside.values()) == {1}
    assert _blas_threads() == two_threads


def test_restored_after_an_exception(two_threads):
    with pytest.raises(ZeroDivisionError):
        with single_blas_thread():
            1 / 0
    assert _blas_threads() == two_threads


def _spy(monkeypatch, module, name, seen):
    """Record the BLAS thread counts each time module.name (an evaluation) is called."""
    real = getattr(module, name)

    def spy(*args, **kwargs):
        seen.append(set(_blas_threads().values()))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)


@pytest.mark.parametrize("module, run, before_search", [
    (optimum, lambda: lt.optimal_preconditioner(lt.Task(2, 6), 1, starts=2), 0),
    (flow, lambda: lt.gradient_flow(lt.Task(2, 6), np.zeros((2, 2)), 1, t_max=1.0), 0),
    # worst_dominance evaluates f(0) once before its search
    (dominance, lambda: lt.worst_dominance(lt.Task(2, 6), 1, 0.5, 0.0, starts=1, seed=2), 1),
], ids=["optimal_preconditioner", "gradient_flow", "worst_dominance"])
def test_optimisers_run_on_one_thread_and_restore(monkeypatch, two_threads, module, run, before_search):
    seen = []
    _spy(monkeypatch, module, "population_loss_grad", seen)
    run()
    assert len(seen) > before_search + 1 and all(s == {1} for s in seen[before_search:])
    assert _blas_threads() == two_threads


def test_import_looptheory_does_not_load_threadpoolctl():
    code = "import sys, looptheory; print('threadpoolctl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
