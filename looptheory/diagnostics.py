"""Gradient diagnostics as a reusable tool (in the spirit of pymanopt's checkgradient).

The Taylor test: for a smooth f with gradient g, the first-order remainder
  r(h) = |f(x + h v) - f(x) - h <g(x), v>|
shrinks like h^2; a wrong gradient leaves a remainder that shrinks only like h. The slope of
log r against log h over a range of h is therefore ~2 for a right gradient and ~1 for a wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TaylorResult:
    h: np.ndarray          # step sizes, decreasing
    remainder: np.ndarray  # first-order remainders r(h)
    slope: float           # least-squares slope of log r against log h

    @property
    def passed(self) -> bool:
        return self.slope > 1.8


def taylor_test(f, grad, x, direction, h=None) -> TaylorResult:
    """Taylor remainders of f at x along `direction` (arrays of any shape; grad(x) the same
    shape as x). Steps default to 10^-1 ... 10^-4 relative to |x| + 1."""
    x = np.asarray(x, dtype=float)
    v = np.asarray(direction, dtype=float)
    if v.shape != x.shape:
        raise ValueError(f"direction: expected shape {x.shape}, got {v.shape}")
    scale = (np.linalg.norm(x) + 1.0) / max(np.linalg.norm(v), 1e-300)
    h = np.asarray(h if h is not None else scale * np.logspace(-1, -4, 7), dtype=float)
    f0 = f(x)
    slope0 = float(np.sum(np.asarray(grad(x)) * v))
    r = np.array([abs(f(x + hh * v) - f0 - hh * slope0) for hh in h])
    ok = r > 0
    s = float(np.polyfit(np.log(h[ok]), np.log(r[ok]), 1)[0]) if ok.sum() >= 2 else float("inf")
    return TaylorResult(h, r, s)


def finite_difference_gradient(f, x, h=1e-6) -> np.ndarray:
    """Central differences, entry by entry (O(h^2) truncation error)."""
    x = np.asarray(x, dtype=float)
    g = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        g[idx] = (f(x + e) - f(x - e)) / (2 * h)
    return g
