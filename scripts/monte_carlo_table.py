"""The Monte Carlo estimators against the exact engine: the table of docs/monte-carlo.md.

    PYTHONPATH=. python scripts/monte_carlo_table.py            # the z-score table and the precision rows
    PYTHONPATH=. python scripts/monte_carlo_table.py --part z   # only the z-score table
    PYTHONPATH=. python scripts/monte_carlo_table.py --part precision

Everything below was declared before the table was first run: the parameter rule, the seeds and
the sample sizes. The table is the result; no seed or size is changed after seeing it.

Parameters (one rule for every cell, drawn from numpy's default_rng(PARAM_SEED + d)):
  Σx = M M^T / d + 0.5 I and Σw = N N^T / d + 0.3 I (M, N standard normal d x d), general SPD
  covariances; A = Rx^{-1} (0.5 I + 0.1 G / sqrt(d)) Rx^{-1} with G a d x d standard normal matrix (so A is
  not symmetric; in whitened letters A~ = 0.5 I + 0.1 G / sqrt(d)), u = 0.3 g / sqrt(d),
  noise σ² = 0.3. The cells with the same d share the parameters.
Monte Carlo: SAMPLES prompts per cell and method, seed 1000 d + 10 n + L (the same for every method).
Precision: d = 10, n = 20, loops = 3, PRECISION_SAMPLES prompts, seeds PRECISION_SEEDS, plain
against the default estimator; the ratio of their standard errors, seed by seed.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np

import looptheory as lt

PARAM_SEED = 14_000
DS, NS, LOOPS = (2, 4), (3, 10), (1, 2, 3, 4, 5, 6)
SAMPLES = 1_000_000
#: (label, method, proposal): the default estimator, the conditional one without importance
#: sampling, and the plain one.
ESTIMATORS = (("conditional, spike IS (default)", "conditional", "spike"),
              ("conditional, X from the task", "conditional", "target"),
              ("plain", "plain", "target"))
PRECISION_CELL = (10, 20, 3)
PRECISION_SAMPLES = 100_000
PRECISION_SEEDS = (1, 2, 3, 4, 5)


def cell_task(d: int, n: int):
    """(task, A, u) of the declared parameter rule for dimension d and context length n."""
    rng = np.random.default_rng(PARAM_SEED + d)
    M = rng.standard_normal((d, d))
    N = rng.standard_normal((d, d))
    sx = M @ M.T / d + 0.5 * np.eye(d)
    sw = N @ N.T / d + 0.3 * np.eye(d)
    ev, evec = np.linalg.eigh(sx)
    rx_inv = (evec / np.sqrt(ev)) @ evec.T
    A = rx_inv @ (0.5 * np.eye(d) + 0.1 * rng.standard_normal((d, d)) / math.sqrt(d)) @ rx_inv
    u = 0.3 * rng.standard_normal(d) / math.sqrt(d)
    return lt.Task(d, n, sx, sw, noise=0.3), A, u


def mc_seed(d: int, n: int, loops: int) -> int:
    return 1000 * d + 10 * n + loops


def run_cell(d, n, loops, method, proposal, samples=SAMPLES, seed=None):
    """(exact, MonteCarloResult, z, CPU seconds of the Monte Carlo run) for one cell; the
    warning of an untrusted result is kept in the result (trusted, why), not printed."""
    task, A, u = cell_task(d, n)
    exact = float(lt.population_loss(task, A, loops, u))
    t0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = lt.monte_carlo_loss(task, A, loops, u, samples=samples, seed=mc_seed(d, n, loops) if seed is None else seed,
                                method=method, proposal=proposal)
    return exact, r, (r.mean - exact) / r.stderr, time.process_time() - t0


def z_table():
    print(f"z = (Monte Carlo mean - exact) / standard error, {SAMPLES:,} prompts per cell and estimator\n")
    print("| d | n | L | exact | estimator | mean | stderr | z | ESS | top-10 share | top-0.1% share | trusted | CPU-s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    worst = {}
    for d in DS:
        for n in NS:
            for L in LOOPS:
                for label, method, proposal in ESTIMATORS:
                    exact, r, z, cpu = run_cell(d, n, L, method, proposal)
                    worst[label] = max(worst.get(label, 0.0), abs(z))
                    print(f"| {d} | {n} | {L} | {exact:.6g} | {label} | {r.mean:.6g} | {r.stderr:.3g} | {z:+.2f} | "
                          f"{r.ess:.3g} | {r.top10_share:.3f} | {r.top_permille_share:.3f} | "
                          f"{'yes' if r.trusted else 'no: ' + r.why} | {cpu:.1f} |", flush=True)
    print()
    for label, z in worst.items():
        print(f"max |z|, {label}: {z:.2f}")


def precision_table():
    d, n, L = PRECISION_CELL
    print(f"\nPrecision at d = {d}, n = {n}, loops = {L}, {PRECISION_SAMPLES:,} prompts per run\n")
    print("| seed | exact | plain mean ± stderr | default mean ± stderr | stderr ratio (default / plain) | "
          "CPU-s plain | CPU-s default |")
    print("|---|---|---|---|---|---|---|")
    ratios = []
    for seed in PRECISION_SEEDS:
        exact, p, _, cp = run_cell(d, n, L, "plain", "target", PRECISION_SAMPLES, seed)
        _, c, _, cc = run_cell(d, n, L, "conditional", "spike", PRECISION_SAMPLES, seed)
        ratios.append(c.stderr / p.stderr)
        print(f"| {seed} | {exact:.6g} | {p.mean:.5g} ± {p.stderr:.3g} | {c.mean:.5g} ± {c.stderr:.3g} | "
              f"{ratios[-1]:.3f} | {cp:.2f} | {cc:.2f} |", flush=True)
    print(f"\nlargest ratio {max(ratios):.3f}, smallest {min(ratios):.3f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("all", "z", "precision"), default="all")
    args = ap.parse_args(argv)
    if args.part in ("all", "z"):
        z_table()
    if args.part in ("all", "precision"):
        precision_table()


if __name__ == "__main__":
    main()
