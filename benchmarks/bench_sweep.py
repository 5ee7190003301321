"""Benchmark (issue 15): lt.sweep over a grid of 8 cells, serially and on a ProcessPoolExecutor
with 2 worker processes; each cell is a blind search for the optimal preconditioner at d = 3,
n = 20 (about half a CPU-second). Reports wall time, CPU time (this process and its finished
children) and the speed-up; checks that the two results are equal.

Run: python benchmarks/bench_sweep.py
"""

import os
import time
from concurrent.futures import ProcessPoolExecutor

import looptheory as lt


def optimum_cell(loops, seed):
    """f* at d = 3, n = 20 by optimal_preconditioner (module level: worker processes import it)."""
    return float(lt.optimal_preconditioner(lt.Task(3, 20), loops, starts=1, seed=seed).loss)


def timed(run):
    t0, c0 = time.perf_counter(), os.times()
    out = run()
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system) + (c1.children_user - c0.children_user) + \
          (c1.children_system - c0.children_system)
    return out, time.perf_counter() - t0, cpu


if __name__ == "__main__":
    grid = lt.Grid(loops=[2, 3], seed=[0, 1, 2, 3])
    lt.sweep(optimum_cell, lt.Grid(loops=[2], seed=[9]))  # load the expansions first
    serial, wall1, cpu1 = timed(lambda: lt.sweep(optimum_cell, grid))

    def parallel():
        with ProcessPoolExecutor(2) as ex:  # fork: the workers start with the expansions loaded
            return lt.sweep(optimum_cell, grid, executor=ex)

    par, wall2, cpu2 = timed(parallel)
    print(f"sweep of {len(grid)} cells (optimal_preconditioner, d = 3, n = 20, loops 2-3), {os.cpu_count()} cores:")
    print(f"  serial:      wall {wall1:6.2f} s, CPU {cpu1:6.2f} s")
    print(f"  2 processes: wall {wall2:6.2f} s, CPU {cpu2:6.2f} s (workers included)")
    print(f"  speed-up {wall1 / wall2:.2f}x wall; results equal to serial: {par == serial}")
