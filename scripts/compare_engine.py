"""Compare this checkout's float engine with another checkout's (e.g. the main branch) on random
inputs: the values and gradients of population_loss_grad(..., fallback=False) and of
population_loss must be bit-identical and take the same route, and the error bounds may differ
only by the rounding of their own computation.

    python scripts/compare_engine.py /path/to/other/checkout [--count 300] [--seed 0] [--bounds]

With --bounds, a change that moves numbers within their error bounds (e.g. another order of a
sum) is accepted: where values or gradients differ, the difference must be within the sum of
the two engines' bounds, and the largest share of that sum is reported.

The inputs: d from 1 to 24 (both sides of the flat-trace and small-d limits of
looptheory/layout.py, loops 1-6 up to d = 10 and 1-4 above), plus a few at d = 26-100 and
loops 5-6 (the large-d path with several pieces per level); n from 1 to 10^12 and infinity,
noise 0 or not, u absent, zero or not, A random, near the optimum scale or just below the
inverse covariance. Exit status 0 when every case agrees.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import looptheory as NEW  # noqa: E402


def other_package(path):
    """The other checkout's looptheory, imported as looptheory_other from a temporary copy."""
    tmp = tempfile.mkdtemp(prefix="looptheory_other_")
    shutil.copytree(os.path.join(path, "looptheory"), os.path.join(tmp, "looptheory_other"))
    sys.path.insert(0, tmp)
    return importlib.import_module("looptheory_other")


def case(rng, d, loops):
    n = rng.choice([1, 2, 3, 20, 10**3, 10**6, 10**12, math.inf])
    n = n if n == math.inf else int(n)
    noise = float(rng.choice([0.0, 0.1, 2.0]))
    Mx = rng.standard_normal((d, d))
    sx = Mx @ Mx.T / d + rng.uniform(0.05, 1) * np.eye(d)
    Mw = rng.standard_normal((d, d))
    sw = Mw @ Mw.T / d + 0.1 * np.eye(d)
    kind = int(rng.integers(0, 3))
    if kind == 0:
        A = rng.standard_normal((d, d)) * rng.uniform(0.01, 1) / math.sqrt(d)
    elif kind == 1:
        A = rng.uniform(0.2, 1.0) * np.linalg.inv(sx) + 1e-3 * rng.standard_normal((d, d))
    else:
        A = np.linalg.inv(sx) * (1 - rng.uniform(1e-9, 1e-3))
    u = None if rng.random() < 0.3 else (np.zeros(d) if rng.random() < 0.1 else 0.3 * rng.standard_normal(d))
    return dict(d=d, loops=loops, n=n, noise=noise, sx=sx, sw=sw, A=A, u=u)


def run(pkg, c, with_value):
    task = pkg.Task(c["d"], c["n"], c["sx"], c["sw"], noise=c["noise"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            g = pkg.population_loss_grad(task, c["A"], c["loops"], c["u"], fallback=False)
            v = pkg.population_loss(task, c["A"], c["loops"], c["u"]) if with_value else None
        except ValueError as e:
            return str(e), None
    return g, v


def bits(x):
    return np.asarray(x, dtype=float).tobytes()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("other", help="the other checkout (a directory holding looptheory/)")
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bounds", action="store_true", help="accept differences within the two engines' error bounds")
    args = ap.parse_args()
    OLD = other_package(args.other)
    rng = np.random.default_rng(args.seed)
    cases = []
    for _ in range(args.count):
        d = int(rng.choice([1, 2, 3, 4, 5, 8, 10, 16, 17, 20, 24]))
        cases.append(case(rng, d, int(rng.integers(1, 7 if d <= 10 else 5))))
    cases += [case(rng, d, L) for d, L in [(26, 6), (40, 6), (100, 6), (30, 5)]]
    t0 = time.process_time()
    bad, worst, routes, moved, share = [], 0.0, {}, 0, 0.0
    for i, c in enumerate(cases):
        # population_loss may take the exact route: only where that is cheap
        with_value = c["d"] <= 3 or c["loops"] <= 4
        (go, vo), (gn, vn) = run(OLD, c, with_value), run(NEW, c, with_value)
        label = f"case {i}: d = {c['d']}, loops = {c['loops']}, n = {c['n']}"
        if isinstance(go, str) or isinstance(gn, str):
            if go != gn:
                bad.append(f"{label}: {go!r:.100} / {gn!r:.100}")
            continue
        same = (bits(float(go[0])) == bits(float(gn[0])) and bits(go[1]) == bits(gn[1]) and bits(go[2]) == bits(gn[2])
                and go[0].route == gn[0].route)
        if vo is not None:
            same = same and bits(float(vo)) == bits(float(vn)) and vo.route == vn.route
        if not same and args.bounds and go[0].route == gn[0].route and (vo is None or vo.route == vn.route):
            # the same route: the differences as shares of the two bounds' sum
            shares = [abs(float(go[0]) - float(gn[0])) / max(go[0].error + gn[0].error, 1e-300)]
            shares += [float(np.linalg.norm(a - b)) / max(ea + eb, 1e-300)
                       for a, b, ea, eb in zip(go[1:], gn[1:], go[0].grad_error, gn[0].grad_error)]
            if vo is not None:
                shares.append(abs(float(vo) - float(vn)) / max(vo.error + vn.error, 1e-300))
            share = max(share, *shares)
            if max(shares) <= 1:
                moved += 1
                same = True
        if not same:
            bad.append(f"{label}: {float(go[0])!r} ({go[0].route}) / {float(gn[0])!r} ({gn[0].route})")
            continue
        routes[gn[0].route] = routes.get(gn[0].route, 0) + 1
        pairs = [(go[0].error, gn[0].error)] + list(zip(go[0].grad_error or (), gn[0].grad_error or ()))
        for a, b in pairs:
            if a != b:
                worst = max(worst, abs(a - b) / max(abs(a), abs(b)))
    print(f"{len(cases) - len(bad) - moved}/{len(cases)} cases bit-identical, {moved} within the bounds (largest share "
          f"of the bounds' sum {share:.1e}) (routes {routes}); largest relative difference of an error bound {worst:.1e}; "
          f"{time.process_time() - t0:.0f} CPU-s")
    for b in bad:
        print("  DIFFERS", b)
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
