"""One BLAS thread for the small optimisations, the caller's thread settings left as they were.

The optimisers (`optimal_preconditioner`, the dominance searches, the gradient-flow integrator)
take thousands of steps whose linear algebra is on d x d matrices with d of about 2 to 20. A
multi-threaded BLAS wakes its threads for each such call, and on a busy machine every wake-up
waits for a core: measured on the 2-core machine with SciPy's OpenBLAS at 2 threads, one small
SLSQP / L-BFGS-B step took 2.7 ms instead of 8 us (issue 13), `looptheory verify --quick` 187 s
instead of 106 s. `single_blas_thread` limits every loaded BLAS to one thread for the duration
of a block (threadpoolctl, which restores the previous limits on exit, also on an exception),
so the user's own settings, and every later computation of theirs, are untouched.

threadpoolctl is imported on first use, so that `import looptheory` stays light.
"""

from __future__ import annotations

from contextlib import contextmanager

__all__ = ["single_blas_thread"]


@contextmanager
def single_blas_thread():
    """Within the block (or the function decorated with `@single_blas_thread()`), every BLAS
    library loaded in the process runs on one thread; on exit each library's previous limit is
    restored. Nested blocks are fine (each restores what it found).

    One thread costs less CPU time at every d this package evaluates: on the busy 2-core
    machine one loss + gradient took 6 ms instead of 31 at d = 10, loops = 6, and 85 ms instead
    of 1.1 s at d = 100, loops = 3 (benchmarks/bench_optimum.py measures it).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
