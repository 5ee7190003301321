"""Benchmarks of the exact engine (issue 3 targets; absolute times on this machine).

- time to the first loss in a fresh process (building the expansion or loading a shipped one);
- one loss + gradient at d = 10 (u and noise parts included where stated);
- the same value by Monte Carlo: time for 1e-3 relative standard error, as a ratio.

Run: python benchmarks/bench_engine.py [--max-loops L]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np

import looptheory as lt

FIRST_LOSS = """
import time, numpy as np, looptheory as lt
t = time.perf_counter()
lt.population_loss(lt.Task(3, 10, noise=0.1), 0.3 * np.eye(3), {L}, u=np.ones(3))
print(time.perf_counter() - t)
"""


def first_loss_seconds(loops):
    out = subprocess.run([sys.executable, "-c", FIRST_LOSS.format(L=loops)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def best_of(fn, repeat=20):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-loops", type=int, default=lt.MAX_LOOPS)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    d = 10
    M = rng.standard_normal((d, d))
    task = lt.Task(d, 20, M @ M.T / d + np.eye(d), np.eye(d), noise=0.1)
    A = 0.05 * rng.standard_normal((d, d)) + 0.5 * np.linalg.inv(task.sigma_x)
    u = 0.1 * rng.standard_normal(d)
    print(f"{'loops':>5} | {'first loss (s)':>14} | {'loss+grad u=0 (ms)':>18} | {'loss+grad all parts (ms)':>24} | {'MC for 1e-3 rel (s)':>19} | {'MC / exact':>10}")
    for L in range(1, args.max_loops + 1):
        first = first_loss_seconds(L)
        lt.population_loss_grad(task, A, L, u)  # build
        t0 = best_of(lambda: lt.population_loss_grad(lt.Task(d, 20, task.sigma_x, task.sigma_w), A, L))
        t1 = best_of(lambda: lt.population_loss_grad(task, A, L, u))
        exact = lt.population_loss(task, A, L, u)
        t = time.perf_counter()
        mean, se = lt.monte_carlo_loss(task, A, L, u, samples=20_000, seed=1)
        tmc = time.perf_counter() - t
        # samples needed for stderr = 1e-3 * value scale linearly in time
        need = (se * np.sqrt(20_000) / (1e-3 * exact)) ** 2
        tneed = tmc * need / 20_000
        t_exact = best_of(lambda: lt.population_loss(task, A, L, u))
        print(f"{L:>5} | {first:>14.3f} | {t0 * 1e3:>18.2f} | {t1 * 1e3:>24.2f} | {tneed:>19.1f} | {tneed / t_exact:>10.2e}")


if __name__ == "__main__":
    main()
