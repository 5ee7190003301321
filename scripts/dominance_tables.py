"""The gradient-dominance tables of issue 4 (claim G2), for general real A.

For d in {2, 5, 10}, loops 2 to 6, n in {d, 4d, 100d, inf} and the regions
R(rho) = {A : f(A) - f* >= rho (f(0) - f*)}, rho in {0.1, 0.01}: the smallest
excess ratio ||grad f||^2 / (f - f*)^{(2L-1)/L} and plain ratio ||grad f||^2 / f^{(2L-1)/L}
found by looptheory.worst_dominance (2 SLSQP starts each, plus the scalar critical point as a
declared candidate), sigma_x = I, u = 0, f* from optimal_preconditioner (3 blind starts).
These are the settings of looptheory.claims.claim_g2, over a larger grid than verify runs.

Run: python scripts/dominance_tables.py > docs/dominance-tables.md   (about 30 minutes)
"""

import math
import time

import numpy as np

import looptheory as lt
from looptheory.dominance import ratio_at_scalar_infinite_n

t_start = time.time()
print("# Gradient-dominance tables (claim G2, general real A)\n")
print(__doc__.strip().split("\n\nRun:")[0] + "\n")
print("Reported constant: 1/16 = 0.0625. At n = inf the symmetric infimum is 4 L^2 d^{-(L-1)/L}.\n")
print("| d | loops | n | f* | rho | min excess ratio | found by | min ratio | 4L^2 d^-(L-1)/L |")
print("|---|---|---|---|---|---|---|---|---|")
for d in (2, 5, 10):
    for L in (2, 3, 4, 5, 6):
        for n in (d, 4 * d, 100 * d, math.inf):
            task = lt.Task(d, n)
            f_star = 0.0 if math.isinf(n) else lt.optimal_preconditioner(task, L, starts=3, seed=1).loss
            cand = [] if math.isinf(n) else [(lt.optimal_scale(task, L) * np.eye(d), "scalar critical point")]
            for rho in (0.1, 0.01):
                ex = lt.worst_dominance(task, L, rho, f_star, excess=True, starts=2, seed=2, candidates=cand)
                pl = lt.worst_dominance(task, L, rho, f_star, excess=False, starts=2, seed=3)
                print(f"| {d} | {L} | {n} | {f_star:.4g} | {rho} | {ex.value:.4g} | {ex.found_by} | {pl.value:.4g} | "
                      f"{ratio_at_scalar_infinite_n(d, L):.4g} |", flush=True)
print(f"\nGenerated in {time.time() - t_start:.0f} s on a 2-core machine.")
