"""Benchmarks of the untied multi-layer loss (issue 16, item 5), in CPU time on one core.

Per number of layers L (1 to MAX_LAYERS), at d = 10 and n = 50, all parts (random A_l, u_l and
noise):

- first loss: `multilayer_population_loss` in a fresh process, after `import looptheory` (the
  shipped layout is read on first use), and the whole process;
- loss and loss + gradient: the certified evaluations (`multilayer_population_loss`,
  `multilayer_population_loss_grad(..., fallback=False)`, the route an optimiser's final point
  takes), and the uncertified float expansion an optimiser's inner steps use
  (`multilayer_loss_grad_uncertified`), median of repeated calls.

Run: python benchmarks/bench_multilayer.py [--d D] [--repeat R]
"""

from __future__ import annotations

import os

# one core: BLAS single-threaded in this process and its children (set before numpy loads)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import looptheory as lt  # noqa: E402
from looptheory.multilayer import MAX_LAYERS, multilayer_loss_grad_uncertified  # noqa: E402

FIRST = """
import resource, time
import numpy as np
t0 = time.process_time()
import looptheory as lt
t1 = time.process_time()
rng = np.random.default_rng(0)
lt.multilayer_population_loss(lt.Task({d}, 50, noise=0.1), 0.3 * rng.standard_normal(({L}, {d}, {d})),
                              0.3 * rng.standard_normal(({L}, {d})))
t2 = time.process_time()
r = resource.getrusage(resource.RUSAGE_SELF)
print(t1 - t0, t2 - t1, r.ru_utime + r.ru_stime)
"""


def cpu(f, repeat):
    f()  # warm: the layout and the weights of this (n, d) are cached after the first call
    times = []
    for _ in range(repeat):
        t = time.process_time()
        f()
        times.append(time.process_time() - t)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    d = args.d
    print(f"d = {d}, n = 50, noise 0.1, random A_l and u_l; CPU seconds on one core (BLAS single-threaded)")
    print("| L | terms | first loss (after import) | process | loss | loss + gradient | uncertified loss + gradient |")
    print("|---|---|---|---|---|---|---|")
    for L in range(1, MAX_LAYERS + 1):
        out = subprocess.run([sys.executable, "-c", FIRST.format(L=L, d=d)], capture_output=True, text=True, check=True)
        _, first, proc = (float(x) for x in out.stdout.split())
        rng = np.random.default_rng(L)
        task = lt.Task(d, 50, noise=0.1)
        As = 0.3 * rng.standard_normal((L, d, d))
        us = 0.3 * rng.standard_normal((L, d))
        t_loss = cpu(lambda: lt.multilayer_population_loss(task, As, us), args.repeat)
        t_grad = cpu(lambda: lt.multilayer_population_loss_grad(task, As, us, fallback=False), args.repeat)
        t_fast = cpu(lambda: multilayer_loss_grad_uncertified(task, As, us), args.repeat)
        from looptheory.multilayer import compiled

        terms = len(compiled(L, ("main0", "main", "u", "noise")))
        print(f"| {L} | {terms} | {first:.3f} | {proc:.2f} | {t_loss * 1e3:.1f} ms | {t_grad * 1e3:.1f} ms | "
              f"{t_fast * 1e3:.1f} ms |", flush=True)


if __name__ == "__main__":
    main()
