"""Benchmark of the blind optimiser (issue 13, item 3): optimal_preconditioner at d = 10, n = 20,
loops = 6 with u (6 starts, seed 0), in CPU time, beside the floor it is measured against.

The floor is what its evaluations cost alone: (inner gradients without bound) x (one such
gradient) + (Hessian-vector products) x (one product) + (certified evaluations) x (one
certified loss + gradient), each cost the best of several repeats at the optimum found. The
counts come from wrapping the evaluation functions the optimiser calls.

Two runs: in this process (BLAS limited to one thread by the environment, as in
bench_engine.py) and in a child process with the machine's default BLAS threads, where the
optimiser limits itself to one thread (looptheory/_threads.py) and leaves the setting as it was.

Run: python benchmarks/bench_optimum.py [--loops L] [--d D] [--no-child]
Target (issue 13): at most 10 CPU-seconds for the answer of the code before (f* within 1e-9
relative, A* within 1e-6).
"""

from __future__ import annotations

import os

# one core: BLAS single-threaded in this process (set before numpy loads); the child run below
# gets the machine's default instead
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_CALLER_ENV = dict(os.environ)
for _var in _THREAD_VARS:
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import looptheory as lt  # noqa: E402
from looptheory import loss as LS  # noqa: E402
from looptheory import optimum as OPT  # noqa: E402

from bench_engine import cpu_best  # noqa: E402  (this folder is on sys.path when run as a script)

CHILD = """
import json, sys, time
import numpy as np, looptheory as lt
from threadpoolctl import threadpool_info
d, n, L = {d}, {n}, {L}
task = lt.Task(d, n)
lt.population_loss_grad(task, np.zeros((d, d)), L, np.zeros(d))  # the layout, loaded once
before = [i["num_threads"] for i in threadpool_info()]
t = time.process_time()
r = lt.optimal_preconditioner(task, L)
cpu = time.process_time() - t
print(json.dumps({{"cpu": cpu, "f": float(r.loss), "threads_before": before,
                  "threads_after": [i["num_threads"] for i in threadpool_info()]}}))
"""


def counted_run(task, loops):
    """optimal_preconditioner with its evaluations counted: (result, CPU seconds, counts)."""
    counts = {"grad": 0, "hvp": 0, "certified": 0}
    real = {name: getattr(OPT, name) for name in ("population_loss_grad_route", "population_loss_hvp", "population_loss_grad")}

    def counting(name, key):
        def fn(*args, **kwargs):
            counts[key] += 1
            return real[name](*args, **kwargs)
        return fn

    OPT.population_loss_grad_route = counting("population_loss_grad_route", "grad")
    OPT.population_loss_hvp = counting("population_loss_hvp", "hvp")
    OPT.population_loss_grad = counting("population_loss_grad", "certified")
    try:
        t = time.process_time()
        r = lt.optimal_preconditioner(task, loops)
        cpu = time.process_time() - t
    finally:
        for name, fn in real.items():
            setattr(OPT, name, fn)
    return r, cpu, counts


def structure(A, u):
    """A = c I + K with K skew: the spread of the symmetric part's eigenvalues, their mean c, and
    the singular values of K (all equal at the d = 10 optimum: K^2 = -s^2 I)."""
    S = (A + A.T) / 2
    ev = np.linalg.eigvalsh(S)
    sv = np.linalg.svd((A - A.T) / 2, compute_uv=False)
    return ev.mean(), ev.max() - ev.min(), sv.min(), sv.max(), float(np.linalg.norm(u))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--loops", type=int, default=6)
    ap.add_argument("--no-child", action="store_true", help="skip the run with the default BLAS threads")
    args = ap.parse_args()
    d, n, L = args.d, args.n, args.loops
    task = lt.Task(d, n)
    lt.population_loss_grad(task, np.zeros((d, d)), L, np.zeros(d))  # the layout, loaded once

    r, cpu, counts = counted_run(task, L)
    A, u = r.A, r.u
    rng = np.random.default_rng(0)
    dA, du = rng.standard_normal((d, d)), rng.standard_normal(d)
    t_grad = cpu_best(lambda: LS.population_loss_grad_route(task, A, L, u), 20)
    t_hvp = cpu_best(lambda: LS.population_loss_hvp(task, A, L, dA, u, du), 20)
    t_cert = cpu_best(lambda: LS.population_loss_grad(task, A, L, u, fallback=False), 20)
    floor = counts["grad"] * t_grad + counts["hvp"] * t_hvp + counts["certified"] * t_cert

    print(f"optimal_preconditioner at d = {d}, n = {n}, loops = {L}, with u, 6 starts (seed 0)")
    print(f"  CPU time (one BLAS thread):   {cpu:.2f} s")
    print(f"  f* = {float(r.loss):.15g} (bound {r.loss.error:.1e}); {r.status}")
    c, spread, smin, smax, un = structure(A, u)
    print(f"  A* = c I + K: c = {c:.10f} (symmetric part's eigenvalues within {spread:.1e}), "
          f"K's singular values {smin:.10f}..{smax:.10f}; ||u*|| = {un:.1e}")
    print(f"  start losses: {', '.join(f'{x:.12g}' for x in r.start_losses)}")
    print("  evaluations and their cost (best of 20, at A*):")
    print(f"    inner gradients, no bound:  {counts['grad']:5d} x {t_grad * 1e3:6.2f} ms = {counts['grad'] * t_grad:.2f} s")
    print(f"    Hessian-vector products:    {counts['hvp']:5d} x {t_hvp * 1e3:6.2f} ms = {counts['hvp'] * t_hvp:.2f} s")
    print(f"    certified loss + gradient:  {counts['certified']:5d} x {t_cert * 1e3:6.2f} ms = {counts['certified'] * t_cert:.2f} s")
    print(f"  floor (the evaluations alone): {floor:.2f} s; the optimiser's own work: {cpu - floor:.2f} s "
          f"({cpu / floor:.2f}x the floor)")
    print(f"  one certified loss + gradient: {t_cert * 1e3:.2f} ms "
          f"(the whole optimisation = {cpu / t_cert:.0f} of them)")

    if not args.no_child:
        env = {k: v for k, v in _CALLER_ENV.items() if k not in _THREAD_VARS}
        out = subprocess.run([sys.executable, "-c", CHILD.format(d=d, n=n, L=L)], capture_output=True, text=True,
                             check=True, env=env)
        res = json.loads(out.stdout)
        print(f"  child process, the machine's default BLAS threads {res['threads_before']} "
              f"(after: {res['threads_after']}): {res['cpu']:.2f} CPU-s, f* = {res['f']:.15g}")


if __name__ == "__main__":
    main()
