"""Timings of the exact real-Wishart trace moments and of the optimal scalar preconditioner.

Run: python benchmarks/bench_moments.py
Each number is the best of a few cold runs (the moment cache is cleared before each run), so
it measures the recurrence itself, not a cache hit.
"""

from __future__ import annotations

import time

from looptheory import Task
from looptheory import moments
from looptheory.moments import trace_moments
from looptheory.optimum import optimal_scale


def best_time(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        moments._wishart_int.cache_clear()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    print(f"{'what':<34}{'(n, d)':>14}{'size':>8}{'seconds':>12}")
    for n, d in [(20, 10), (10**6, 100)]:
        for k in (40, 200):
            t = best_time(lambda: trace_moments(k, n, d))
            print(f"{'trace_moments':<34}{f'({n}, {d})':>14}{f'k={k}':>8}{t:>12.5f}")
    for n, d, noise in [(20, 10, 0.0), (10**6, 100, 0.0), (20, 10, 1.0)]:
        for loops in (20, 50):
            task = Task(d, n, noise=noise)
            t = best_time(lambda: optimal_scale(task, loops))
            label = "optimal_scale" + (f" (noise {noise})" if noise else "")
            print(f"{label:<34}{f'({n}, {d})':>14}{f'L={loops}':>8}{t:>12.5f}")


if __name__ == "__main__":
    main()
