"""Gradient diagnostics as a reusable tool (in the spirit of pymanopt's checkgradient).

The Taylor test: for a smooth f with gradient g, the first-order remainder
  r(h) = |f(x + h v) - f(x) - h <g(x), v>|
shrinks like h^2; a wrong gradient leaves a remainder that shrinks only like h. The slope of
log r against log h is therefore ~2 for a right gradient and ~1 for a wrong one. Large steps
see higher-order terms and tiny steps see rounding, so the slope reported is the median of the
slopes between consecutive steps whose remainders stand clear of the rounding floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _validate as V


@dataclass(frozen=True)
class TaylorResult:
    h: np.ndarray          # step sizes, decreasing
    remainder: np.ndarray  # first-order remainders r(h)
    slope: float           # least-squares slope of log r against log h

    @property
    def passed(self) -> bool:
        return self.slope > 1.8


def _steps(h) -> np.ndarray:
    """Step sizes: one number or a 1-d list, each finite and > 0."""
    if np.ndim(h) == 0:
        return np.array([V.positive_float("h", h)])
    arr = V.float_array("h", h, 1)
    if arr.ndim != 1 or arr.size == 0 or np.any(arr <= 0):
        raise ValueError(f"h: expected step sizes > 0 (a number or a non-empty 1-d list), got {h!r}")
    return arr


def taylor_test(f, grad, x, direction, h=None) -> TaylorResult:
    """Taylor remainders of f at x along `direction` (arrays of any shape; grad(x) the same
    shape as x). Steps default to 10^-2 ... 10^-5 relative to |x| + 1; h, if given, is one
    step or a list of steps, each finite and > 0. x and direction: finite real arrays."""
    V.function("f", f)
    V.function("grad", grad)
    x = V.float_array("x", x, 0)
    v = V.float_array("direction", direction, 0)
    if v.shape != x.shape:
        raise ValueError(f"direction: expected shape {x.shape}, got {v.shape}")
    scale = (np.linalg.norm(x) + 1.0) / max(np.linalg.norm(v), 1e-300)
    h = scale * np.logspace(-2, -5, 7) if h is None else _steps(h)
    f0 = f(x)
    slope0 = float(np.sum(np.asarray(grad(x)) * v))
    r = np.array([abs(f(x + hh * v) - f0 - hh * slope0) for hh in h])
    floor = 1e-11 * (abs(f0) + 1.0)  # below this, float rounding dominates the remainder
    ok = r > floor
    slopes = [
        np.log(r[i] / r[i + 1]) / np.log(h[i] / h[i + 1]) for i in range(len(h) - 1) if ok[i] and ok[i + 1]
    ]
    # All remainders at the rounding floor means the linear model is exact to working precision.
    s = float(np.median(slopes)) if slopes else float("inf")
    return TaylorResult(h, r, s)


def finite_difference_gradient(f, x, h=1e-6) -> np.ndarray:
    """Central differences, entry by entry (O(h^2) truncation error); h finite and > 0, x a
    finite real array."""
    V.function("f", f)
    x = V.float_array("x", x, 0)
    h = V.positive_float("h", h)
    g = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        g[idx] = (f(x + e) - f(x - e)) / (2 * h)
    return g
