"""Benchmark (issue 4 target): gradient flow from A0 = 0 to gradient norm 1e-10 at d = 10,
n = 20, loops = 4 (target <= 1 s on this machine), with the expansion already loaded.

Run: python benchmarks/bench_flow.py
"""

import time

import numpy as np

import looptheory as lt

task = lt.Task(10, 20)
lt.population_loss_grad(task, np.eye(10), 4)  # load the expansion first
best = float("inf")
for _ in range(3):
    t = time.perf_counter()
    r = lt.gradient_flow(task, np.zeros((10, 10)), 4, tol=1e-10)
    best = min(best, time.perf_counter() - t)
print(f"flow d=10 n=20 loops=4 from A0=0: {best:.2f} s (best of 3), status {r.status}, "
      f"{len(r.t)} steps, final grad norm {r.grad_norm[-1]:.1e}")
