"""The gradient-dominance tables of issue 4 (claim G2), for general real A.

For d in {2, 5, 10}, loops 2 to 6, n in {d, 4d, 100d, inf} and the regions
R(rho) = {A : f(A) - f* >= rho (f(0) - f*)}, rho in {0.1, 0.01}: the smallest
excess ratio ||grad f||^2 / (f - f*)^{(2L-1)/L} and plain ratio ||grad f||^2 / f^{(2L-1)/L}
found by looptheory.worst_dominance (2 SLSQP starts each, plus the scalar critical point as a
declared candidate), sigma_x = I, u = 0, f* from optimal_preconditioner (3 blind starts).
These are the settings of looptheory.claims.claim_g2, over a larger grid than verify runs.

Run: python scripts/dominance_tables.py [--jobs N] [--cache DIR] > docs/dominance-tables.md
(about 35 minutes on one core; --jobs N runs the (d, loops, n) cells on N processes with
lt.sweep, and --cache DIR keeps finished cells, so an interrupted run resumes where it stopped)
"""

import argparse
import math
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import looptheory as lt
from looptheory.dominance import ratio_at_scalar_infinite_n

RHOS = (0.1, 0.01)


def cell(d, loops, n_over_d):
    """The table's rows for one (d, loops, n): f* and, for each rho, the two searched ratios."""
    n = math.inf if math.isinf(n_over_d) else n_over_d * d
    task = lt.Task(d, n)
    f_star = 0.0 if math.isinf(n) else float(lt.optimal_preconditioner(task, loops, starts=3, seed=1).loss)
    cand = [] if math.isinf(n) else [(lt.optimal_scale(task, loops) * np.eye(d), "scalar critical point")]
    rows = []
    for rho in RHOS:
        ex = lt.worst_dominance(task, loops, rho, f_star, excess=True, starts=2, seed=2, candidates=cand)
        pl = lt.worst_dominance(task, loops, rho, f_star, excess=False, starts=2, seed=3)
        rows.append((d, loops, n, f_star, rho, float(ex.value), ex.found_by, float(pl.value)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1: serial)")
    parser.add_argument("--cache", metavar="DIR", help="keep finished cells in DIR (a rerun skips them)")
    args = parser.parse_args()
    t_start = time.time()
    grid = lt.Grid(d=[2, 5, 10], loops=[2, 3, 4, 5, 6], n_over_d=[1, 4, 100, math.inf])
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as ex:
            cells = lt.sweep(cell, grid, executor=ex, cache=args.cache)
    else:
        cells = lt.sweep(cell, grid, cache=args.cache)
    print("# Gradient-dominance tables (claim G2, general real A)\n")
    print(__doc__.strip().split("\n\nRun:")[0] + "\n")
    print("Reported constant: 1/16 = 0.0625. At n = inf the symmetric infimum is 4 L^2 d^{-(L-1)/L}.\n")
    print("| d | loops | n | f* | rho | min excess ratio | found by | min ratio | 4L^2 d^-(L-1)/L |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rows in cells:
        for d, L, n, f_star, rho, ex, found_by, pl in rows:
            print(f"| {d} | {L} | {n} | {f_star:.4g} | {rho} | {ex:.4g} | {found_by} | {pl:.4g} | "
                  f"{ratio_at_scalar_infinite_n(d, L):.4g} |")
    print(f"\nGenerated in {time.time() - t_start:.0f} s on a 2-core machine"
          + (f" ({args.jobs} processes)." if args.jobs > 1 else "."))


if __name__ == "__main__":
    main()
