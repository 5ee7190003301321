"""Benchmark: training throughput (prompts per second) of the NumPy looped model against an
equivalent PyTorch CPU implementation (autograd), same process, same machine.

Two measurements per setting and model:
  (a) loss + gradient only, on one fixed minibatch of prompts (the same NumPy arrays for both;
      torch gets them through torch.from_numpy, outside the timed region);
  (b) whole training steps: sample a minibatch (Task.sample + make_prompt in NumPy for BOTH, so
      the sampling cost is identical; torch converts with torch.from_numpy inside the timed
      step), forward through `loops` loops, backward, Adam update (beta1 = 0.9, beta2 = 0.999,
      eps = 1e-8; NumPy: looptheory.training.train itself, torch: torch.optim.Adam).
Models: "full" (P, Q both free, (d+1) x (d+1)) and "sparse" (A d x d, u d). The torch version
of "sparse" builds P, Q from A, u and differentiates the general layer by autograd; looptheory
uses its GD-form fast path for the sparse model, and for the full model its Gram form (each
layer acts on the (d+1) x (d+1) matrix Z M Z^T and the query column, in blocks of 256 prompts),
while the torch version runs the layer on the whole prompt as written in docs/conventions.md. Both
rows therefore compare implementations as a user would write them, algorithm included; a torch
port of the Gram form would narrow the full-model gap.
Both run in float64; torch float32 is an extra column (looptheory has no float32 path).
Times are best of k (time.perf_counter) after a warm-up; torch uses as many threads as NumPy's
BLAS (threadpoolctl if installed, else os.cpu_count()). A correctness guard compares the torch
float64 gradient with the NumPy gradient on the same prompts (max relative difference).
All NumPy timings run before torch is imported: torch's live allocations change how glibc trims
the heap, which by itself made NumPy's full-model gradient ~2x faster in the same process
(NumPy here allocates and frees ~1 MB temporaries, and each fresh one page-faults).

torch is NOT a dependency of looptheory: it is imported here only, and when it is missing the
NumPy numbers are still reported.

Run: python benchmarks/bench_training.py [--budget SECONDS] [--threads N]
(also run by benchmarks/run_all.py, which picks up every bench_*.py)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import time

import numpy as np

import looptheory as lt
from looptheory.model import make_prompt
from looptheory.training import batch_loss_grad, init_params, train

SETTINGS = [  # (d, n, loops, batch)
    (5, 20, 3, 1024),
    (5, 20, 3, 4096),
    (10, 40, 4, 1024),
]
MODELS = ("full", "sparse")
STEPS_PER_RUN = 5  # training steps per timed run in (b)


def blas_threads():
    """(threads NumPy's BLAS uses, how it was found)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return os.cpu_count() or 1, "os.cpu_count() (threadpoolctl not installed)"
    blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    if not blas:
        return os.cpu_count() or 1, "os.cpu_count() (no BLAS found by threadpoolctl)"
    return int(blas[0]["num_threads"]), f"threadpoolctl ({blas[0].get('internal_api')})"


def best_time(fn, budget, min_repeat=3, max_repeat=50):
    """Best wall time of fn() over repeats filling about `budget` seconds, after one warm-up
    (at least min_repeat runs, or 2 when one run alone takes longer than the budget)."""
    fn()
    best, spent, k = float("inf"), 0.0, 0
    while k < 2 or (k < min_repeat and best < budget) or (spent < budget and k < max_repeat):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best, spent, k = min(best, dt), spent + dt, k + 1
    return best


# ---------------------------------------------------------------- torch implementation

def torch_model(torch, model, d, dtype):
    """The function params -> (P, Q) of the looped model in torch (sparse: built from A, u)."""
    m = d + 1

    def weights(p):
        if model == "full":
            return p["P"], p["Q"]
        A, u = p["A"], p["u"]
        Q = torch.nn.functional.pad(A, (0, 1, 0, 1))  # [[A, 0], [0, 0]]
        last = torch.cat([u, torch.ones(1, dtype=dtype)])
        P = torch.cat([torch.zeros(d, m, dtype=dtype), last[None, :]], dim=0)  # [[0, 0], [u^T, 1]]
        return P, Q

    return weights


def torch_loss(torch, P, Q, Z, y_q, loops):
    """mean (yhat - y_q)^2, yhat = -Z_L[d, n], layer Z <- Z - (1/n) P (Z M Z^T) Q Z."""
    n = Z.shape[-1] - 1
    d = Z.shape[-2] - 1
    for _ in range(loops):
        Zc = Z[..., :n]
        G = Zc @ Zc.transpose(-1, -2)
        Z = Z - (P @ (G @ (Q @ Z))) / n
    r = -Z[:, d, n] - y_q
    return (r * r).mean()


def leaves(torch, params, dtype):
    return {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in params.items()}


def torch_grad_fn(torch, model, d, loops, params, Z, y_q, dtype):
    weights = torch_model(torch, model, d, dtype)
    p = leaves(torch, params, dtype)
    Zt = torch.from_numpy(Z).to(dtype)
    yt = torch.from_numpy(y_q).to(dtype)
    keys = list(p)

    def run():
        loss = torch_loss(torch, *weights(p), Zt, yt, loops)
        grads = torch.autograd.grad(loss, [p[k] for k in keys])
        return float(loss.detach()), dict(zip(keys, grads))

    return run


def torch_step_fn(torch, model, task, loops, batch, params, dtype, seed=1):
    weights = torch_model(torch, model, task.d, dtype)
    p = leaves(torch, params, dtype)
    opt = torch.optim.Adam(list(p.values()), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    rng = np.random.default_rng(seed)

    def steps():
        for _ in range(STEPS_PER_RUN):
            X, y, x_q, y_q, _ = task.sample(batch, rng)
            Z = torch.from_numpy(make_prompt(X, y, x_q)).to(dtype)
            yt = torch.from_numpy(y_q).to(dtype)
            opt.zero_grad(set_to_none=True)
            loss = torch_loss(torch, *weights(p), Z, yt, loops)
            loss.backward()
            opt.step()

    return steps


# ---------------------------------------------------------------- main

def case(d, n, loops, batch, model):
    """The fixed inputs of one setting: task, initial params, one minibatch of prompts."""
    task = lt.Task(d, n)
    rng = np.random.default_rng(0)
    params = init_params(model, d, loops, rng)
    if model == "sparse":  # a generic point: u = 0 would hide the u-gradient path
        params["u"] = 0.1 * rng.standard_normal(d)
        params["A"] = params["A"] + 0.3 * np.eye(d)
    X, y, x_q, y_q, _ = task.sample(batch, rng)
    return {"label": f"d={d} n={n} L={loops} B={batch} {model}", "task": task, "model": model, "d": d,
            "loops": loops, "batch": batch, "params": params, "Z": make_prompt(X, y, x_q), "y_q": y_q}


def measure_numpy(c, budget):
    """(a) seconds per loss+gradient, (b) seconds per training step, and the loss and gradient."""
    params, model, Z, y_q, loops = c["params"], c["model"], c["Z"], c["y_q"], c["loops"]
    loss, grads = batch_loss_grad(params, model, Z, y_q, loops)
    t_a = best_time(lambda: batch_loss_grad(params, model, Z, y_q, loops), budget)

    def steps():  # looptheory's own train(): sampling, forward, backward, Adam
        train(c["task"], model, loops, steps=STEPS_PER_RUN, batch=c["batch"], lr=1e-3, seed=1, init=params,
              progress=False)

    t_b = best_time(steps, budget) / STEPS_PER_RUN
    return {"a": t_a, "b": t_b, "loss": loss, "grads": grads}


def measure_torch(torch, c, budget, ref):
    """Per dtype: (a) seconds per loss+gradient and (b) per training step; float64's gradient
    against NumPy's (max relative difference, loss included)."""
    args = (torch, c["model"], c["d"], c["loops"], c["params"], c["Z"], c["y_q"])
    run64 = torch_grad_fn(*args, torch.float64)
    loss_t, g_t = run64()
    scale = max(float(np.max(np.abs(g))) for g in ref["grads"].values())
    rel = max(float(np.max(np.abs(g_t[k].numpy() - ref["grads"][k]))) for k in ref["grads"]) / scale
    rel = max(rel, abs(loss_t - ref["loss"]) / abs(ref["loss"]))
    out = {"rel": rel}
    for name, dtype in (("f64", torch.float64), ("f32", torch.float32)):
        out[name + "a"] = best_time(torch_grad_fn(*args, dtype), budget)
        step = torch_step_fn(torch, c["model"], c["task"], c["loops"], c["batch"], c["params"], dtype)
        out[name + "b"] = best_time(step, budget) / STEPS_PER_RUN
    return out


def print_table(title, rows, with_torch):
    print(title)
    head = f"{'setting':<30} | {'numpy /s':>10}"
    if with_torch:
        head += f" | {'torch f64 /s':>12} | {'numpy/torch':>11} | {'torch f32 /s':>12} | {'numpy/t32':>9}"
        if rows[0][4] is not None:
            head += f" | {'grad rel diff':>13}"
    print(head)
    for label, a, b, c, rel in rows:
        line = f"{label:<30} | {a:>10.3g}"
        if with_torch:
            line += f" | {b:>12.3g} | {a / b:>11.2f} | {c:>12.3g} | {a / c:>9.2f}"
            if rel is not None:
                line += f" | {rel:>13.1e}"
        print(line)
    print()


def run(args, have_torch):
    t_start = time.perf_counter()
    threads, how = blas_threads()
    torch_version = importlib.metadata.version("torch") if have_torch else "not installed"
    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch_version}, cores {os.cpu_count()}")
    print(f"NumPy BLAS threads: {threads} (from {how}{', set by --threads' if args.threads else ''})"
          + (f"; torch threads: {threads} (torch.set_num_threads)" if have_torch else ""))
    if not have_torch:
        print("torch not installed; pip install torch (CPU) to run the comparison")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if load > 0.5:
        print(f"warning: 1-minute load average {load:.1f} on {os.cpu_count()} cores: other processes compete, "
              "timings are noisy (torch's OpenMP threads suffer most; try --threads 1)")
    if have_torch:
        print("float64 in both (torch float32 as an extra column); prompts/s from the best of k runs.")
        print("(b) samples prompts with Task.sample + make_prompt (NumPy) for both; torch uses torch.from_numpy.")
        print("NumPy is timed first, before torch is imported: torch's live allocations change glibc's heap")
        print("trimming and can make NumPy ~2x faster than in a NumPy-only process, which is how looptheory runs.\n")
    else:
        print("float64; prompts/s from the best of k runs.\n")

    cases = [case(d, n, loops, batch, model) for d, n, loops, batch in SETTINGS for model in MODELS]
    ref = [measure_numpy(c, args.budget) for c in cases]
    tor = None
    if have_torch:
        import torch

        torch.set_num_threads(threads)
        tor = [measure_torch(torch, c, args.budget, r) for c, r in zip(cases, ref)]
    nan = float("nan")
    for part, title in (("a", "(a) loss + gradient on fixed prompts"),
                        ("b", "(b) whole training step: sample + forward + backward + Adam")):
        rows = []
        for k, c in enumerate(cases):
            b = c["batch"]
            t64, t32 = (b / tor[k]["f64" + part], b / tor[k]["f32" + part]) if tor else (nan, nan)
            rel = tor[k]["rel"] if tor and part == "a" else None
            rows.append((c["label"], b / ref[k][part], t64, t32, rel))
        print_table(title, rows, have_torch)
    if have_torch:
        worst = max(t["rel"] for t in tor)
        verdict = "ok" if worst < 1e-10 else "MISMATCH"
        print(f"gradient guard: max relative difference torch f64 vs numpy {worst:.1e} ({verdict}, need < 1e-10)")
        ratios = [t["f64" + part] / r[part] for t, r in zip(tor, ref) for part in "ab"]
        print(f"target NumPy >= torch f64 (ratio >= 1): met in {sum(x >= 1 for x in ratios)} of {len(ratios)} rows")
    print(f"total benchmark time {time.perf_counter() - t_start:.0f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=0.3, help="seconds of repeats per timing (default 0.3)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for both NumPy's BLAS (needs threadpoolctl) and torch (default: NumPy's BLAS threads)")
    args = ap.parse_args()
    have_torch = importlib.util.find_spec("torch") is not None  # imported only after the NumPy timings
    if args.threads is None:
        run(args, have_torch)
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise SystemExit("--threads needs threadpoolctl to set NumPy's BLAS threads (pip install threadpoolctl)") from None
    with threadpool_limits(args.threads, user_api="blas"):
        run(args, have_torch)


if __name__ == "__main__":
    main()
