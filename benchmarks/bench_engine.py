"""Benchmarks of the exact engine (issue 13, item 3), in CPU time on one core, beside the floor
they are measured against.

- one loss + gradient at loops 4-6, d = 10 and d = 100, all parts (u and noise): with the
  certified error bounds (population_loss_grad(..., fallback=False), the float route an
  optimiser takes), and the same evaluation without bounds (CompiledExpansion.value_and_grad);
- the floor: the CPU time of the d x d GEMMs that evaluation needs, alone (random matrices,
  the same batched calls): three products per trie node (the node, its adjoint, its letter
  gradient) and three Frobenius pairing passes (the traces and the two halves' adjoints);
  "floor with bound" adds the products the running error bounds need;
- the default call at loops = 6 (fallback=True), which adds the gradient bound's second stage
  where the first cannot vouch (docs/engine.md, "5. Numerical accuracy");
- the first loss at loops = 6 in a fresh process, and `import looptheory`;
- memory: peak RSS of one loss + gradient at d = 200, loops = 6 (u and noise);
- optionally (--mc) the same value by Monte Carlo: time for 1e-3 relative standard error.

Run: python benchmarks/bench_engine.py [--max-loops L] [--quick] [--mc] [--reference CHECKOUT]
(--reference: the certified call of another checkout, e.g. the main branch, timed in
alternation with this one, which a loaded machine moves alike, and its values compared bit for
bit.)
Targets (issue 13): loss + gradient at loops = 6 at most 3 ms at d = 10 and 0.3 s at d = 100; the
first loss at loops = 6 at most 1 CPU-second; the import at most 0.2 s.
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
from looptheory import layout as LY  # noqa: E402
from looptheory import loss as LS  # noqa: E402

FIRST_LOSS = """
import resource, time
t0 = time.process_time()
import numpy as np, looptheory as lt
t1 = time.process_time()
lt.population_loss_grad(lt.Task(3, 10, noise=0.1), 0.3 * np.eye(3), {L}, u=np.ones(3))
t2 = time.process_time()
r = resource.getrusage(resource.RUSAGE_SELF)
print(t1 - t0, t2 - t1, r.ru_utime + r.ru_stime)
"""

IMPORT = """
import resource, time
t0 = time.process_time()
import numpy
t1 = time.process_time()
import looptheory
t2 = time.process_time()
r = resource.getrusage(resource.RUSAGE_SELF)
print(t1 - t0, t2 - t1, r.ru_utime + r.ru_stime)
"""

MEMORY = """
import resource, time, numpy as np, looptheory as lt
d, L = {d}, {L}
rng = np.random.default_rng(0)
M = rng.standard_normal((d, d))
task = lt.Task(d, 20, M @ M.T / d + np.eye(d), np.eye(d), noise=0.1)
A = 0.05 * np.sqrt(10 / d) * rng.standard_normal((d, d)) + 0.5 * np.linalg.inv(task.sigma_x)
u = 0.1 * rng.standard_normal(d)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.process_time()
lt.population_loss_grad(task, A, L, u, fallback=False)
print(time.process_time() - t, base / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def child(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [float(x) for x in out.stdout.split()]


def cpu_best(fn, repeat, calls=1):
    """The least CPU time per call over `repeat` runs of `calls` calls each."""
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - t) / calls)
    return best


def reference_package(path):
    """The looptheory package of another checkout (e.g. the main branch), imported under the
    name looptheory_reference from a temporary copy (its relative imports keep it apart)."""
    import importlib
    import shutil
    import tempfile

    tmp = tempfile.mkdtemp(prefix="looptheory_ref_")
    shutil.copytree(os.path.join(path, "looptheory"), os.path.join(tmp, "looptheory_reference"))
    sys.path.insert(0, tmp)
    return importlib.import_module("looptheory_reference")


def paired(fns, rounds, calls):
    """Per-call CPU times of several functions timed in alternation (the machine's load moves
    all of them alike): the least of each, and the median ratio of each to the first."""
    times = [[] for _ in fns]
    for r in range(rounds):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            t = time.process_time()
            for _ in range(calls):
                fns[i]()
            times[i].append((time.process_time() - t) / calls)
    ratios = [float(np.median(np.array(ts) / np.array(times[0]))) for ts in times]
    return [min(ts) for ts in times], ratios


def task_point(d):
    """The benchmark point: a non-trivial covariance, A near half the inverse covariance with a
    perturbation whose size does not grow with d, u and noise non-zero, n = 20."""
    rng = np.random.default_rng(0)
    M = rng.standard_normal((d, d))
    task = lt.Task(d, 20, M @ M.T / d + np.eye(d), np.eye(d), noise=0.1)
    A = 0.05 * np.sqrt(10 / d) * rng.standard_normal((d, d)) + 0.5 * np.linalg.inv(task.sigma_x)
    u = 0.1 * rng.standard_normal(d)
    return task, A, u


def gemm_floor(comp, d, repeat, bound):
    """CPU seconds of the evaluation's d x d GEMMs alone: per trie level, batched products of
    its nodes (3 per node; with bound 9 up to d = 24 and 6 above, where the nodes' own error
    terms are rank-one), and the pairing GEMMs of each group (3 passes; with bound 9 / 6)."""
    rng = np.random.default_rng(1)
    N = comp.n_nodes
    X = rng.random((N, d, d))
    per_node = 3 if not bound else (9 if d <= LY._SMALL_D else 6)
    per_pair = 3 if not bound else (9 if d <= LY._SMALL_D else 6)
    mats = rng.random((2 * comp.n_letters, d, d))
    X2 = X.reshape(N, d * d)

    def run():
        for lv in comp._levels:
            Xp = X[lv.par]
            for _ in range(per_node):
                np.matmul(Xp, mats[lv.let])
        for _ in range(per_pair):
            for (slo, shi), (plo, phi), *_ in comp._by_suffix:
                X2[plo:phi] @ X2[slo:shi].T

    return cpu_best(run, repeat)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-loops", type=int, default=lt.MAX_LOOPS)
    ap.add_argument("--quick", action="store_true", help="d = 10 only, no memory run")
    ap.add_argument("--mc", action="store_true", help="also time Monte Carlo for 1e-3 relative error")
    ap.add_argument("--reference", metavar="CHECKOUT", help="also time the certified call of another checkout's "
                    "looptheory (e.g. the main branch), in alternation with this one, at loops = 6")
    args = ap.parse_args()
    loops_list = [L for L in (4, 5, 6) if L <= args.max_loops]
    dims = [10] if args.quick else [10, 100]
    print("One loss + gradient, all parts (u and noise), one core, CPU time:")
    head = (f"{'d':>4} {'loops':>5} | {'certified':>10} | {'no bound':>9} | {'floor':>9} | "
            f"{'floor w/ bound':>14} | {'nodes':>5} | route, bound")
    print(head)
    for d in dims:
        task, A, u = task_point(d)
        for L in loops_list:
            f = lt.population_loss_grad(task, A, L, u, fallback=False)[0]  # loads the layout
            rep, calls = (3, 200) if d <= 10 else (3, 3)
            t_cert = cpu_best(lambda: lt.population_loss_grad(task, A, L, u, fallback=False), rep, calls)
            parts, scales = LS._parts_needed(task.n, task.noise, u)
            comp = LS._compiled(L, parts)
            mats, _ = LS._float_letters(A, u, np.asarray(task.sigma_x), np.asarray(task.sigma_w), d)
            sc = [float(x) for x in scales]
            t_plain = cpu_best(lambda: comp.value_and_grad(mats, task.n, d, True, sc), rep, calls)
            t_floor = gemm_floor(comp, d, 30 if d <= 10 else 9, False)
            t_floor_b = gemm_floor(comp, d, 30 if d <= 10 else 9, True)
            unit, k = ("ms", 1e3)
            print(f"{d:>4} {L:>5} | {t_cert * k:>7.2f} {unit} | {t_plain * k:>6.2f} {unit} | {t_floor * k:>6.2f} {unit} | "
                  f"{t_floor_b * k:>11.2f} {unit} | {comp.n_nodes:>5} | {f.route}, {f.rel_error:.1e}")
    if 6 <= args.max_loops:
        print("\nThe default call at loops = 6 (fallback=True: where the first bound cannot vouch for the "
              "gradient, its second stage, then the exact route):")
        for d in dims:
            task, A, u = task_point(d)
            first = lt.population_loss_grad(task, A, 6, u, fallback=False)[0]
            f = lt.population_loss_grad(task, A, 6, u)[0]
            rep, calls = (3, 20) if d <= 10 else (3, 1)
            t_def = cpu_best(lambda: lt.population_loss_grad(task, A, 6, u), rep, calls)
            stage = "second stage" if f.grad_error != first.grad_error else "first stage"
            print(f"  d = {d:>3}: {t_def * 1e3:.1f} ms, route {f.route}, gradient certified by the {stage} "
                  f"(bound {np.hypot(*f.grad_error):.1e}; first stage {np.hypot(*first.grad_error):.1e})")
    if args.reference and 6 <= args.max_loops:
        ref = reference_package(args.reference)
        print(f"\nThe certified call against {args.reference}, timed in alternation (loops = 6):")
        for d in dims:
            task, A, u = task_point(d)
            rtask = ref.Task(d, task.n, task.sigma_x, task.sigma_w, noise=task.noise)
            fns = [lambda: ref.population_loss_grad(rtask, A, 6, u, fallback=False),
                   lambda: lt.population_loss_grad(task, A, 6, u, fallback=False)]
            fr, fn = fns[0](), fns[1]()
            same = float(fr[0]) == float(fn[0]) and np.array_equal(fr[1], fn[1]) and np.array_equal(fr[2], fn[2])
            (t_ref, t_new), (_, ratio) = paired(fns, *((60, 10) if d <= 10 else (10, 1)))
            print(f"  d = {d:>3}: reference {t_ref * 1e3:.2f} ms, this {t_new * 1e3:.2f} ms (least of each); "
                  f"median paired ratio {ratio:.2f}; values and gradients {'bit-identical' if same else 'DIFFER'}")
    if 6 <= args.max_loops:
        imp = min((child(IMPORT) for _ in range(3)), key=lambda r: r[1])
        print(f"\nimport looptheory: {imp[1]:.3f} CPU-s after numpy ({imp[0]:.3f} s); whole process {imp[2]:.3f} CPU-s")
        first = min((child(FIRST_LOSS.format(L=6)) for _ in range(3)), key=lambda r: r[2])
        print(f"first loss + gradient at loops = 6 (d = 3, u and noise), fresh process: {first[1]:.3f} CPU-s "
              f"after import ({first[0]:.3f} s import); whole process {first[2]:.3f} CPU-s")
        if not args.quick:
            t, base, peak = child(MEMORY.format(d=200, L=6))
            print(f"loss + gradient at d = 200, loops = 6 (u and noise): {t:.2f} CPU-s, peak RSS {peak:.0f} MB "
                  f"({peak - base:.0f} MB above the {base:.0f} MB before it)")
    if args.mc:
        d = 10
        task, A, u = task_point(d)
        print("\nMonte Carlo for 1e-3 relative standard error, d = 10:")
        for L in loops_list:
            exact = lt.population_loss(task, A, L, u)
            t = time.process_time()
            mean, se = lt.monte_carlo_loss(task, A, L, u, samples=20_000, seed=1)
            tmc = time.process_time() - t
            need = (se * np.sqrt(20_000) / (1e-3 * exact)) ** 2
            t_exact = cpu_best(lambda: lt.population_loss(task, A, L, u), 10)
            print(f"  loops = {L}: {tmc * need / 20_000:.1f} CPU-s, {tmc * need / 20_000 / t_exact:.1e} x the exact loss")


if __name__ == "__main__":
    main()
