"""Assertion helpers for a user's tests, in the style of numpy.testing.

  assert_gradient(f, x, grad=None)          a hand-derived gradient against the Taylor slope
                                            and central finite differences
  assert_exact_equal(actual, expected)       exact rationals (or arrays of them), compared exactly
  assert_monte_carlo_agrees(task, A, loops)  the exact population loss against a Monte Carlo
                                            estimate of the real forward pass, by z-score

Each raises AssertionError with the numbers it saw (the slope, the worst entry, the z-score),
and ValueError or TypeError naming the parameter for bad input. They are the routes the
project's own tests use (docs/conventions.md, "Exact values to test against"): a gradient is
checked by two routes, an exact value against exact rationals or Monte Carlo with its
standard error.
"""

from __future__ import annotations

import math

import numpy as np

from . import _validate as V
from .diagnostics import finite_difference_gradient, taylor_test
from .loss import population_loss
from .montecarlo import monte_carlo_loss

#: The Taylor slope a right gradient shows (2 in theory); a wrong one shows about 1.
MIN_SLOPE = 1.8


def _value_and_grad(f, grad, x):
    if grad is None:
        out = f(x)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("f: with grad=None, f(x) must return (value, gradient)")
        return float(out[0]), np.asarray(out[1], dtype=float)
    return float(f(x)), np.asarray(grad(x), dtype=float)


def assert_gradient(f, x, grad=None, direction=None, *, h: float = 1e-6, rtol: float = 1e-6, atol=None,
                    min_slope: float = MIN_SLOPE, seed: int = 0) -> None:
    """Assert that grad is the gradient of f at x, by two routes (looptheory.diagnostics):

    - the Taylor test along `direction` (a seeded Gaussian direction when None): the remainder
      |f(x + t v) - f(x) - t <g, v>| must shrink like t^2, i.e. a slope of log r against log t
      of at least min_slope (a wrong gradient gives about 1);
    - central differences with step h: ||g - g_fd|| <= rtol max(||g||, ||g_fd||) + atol, atol
      defaulting to the rounding floor of central differences, 100 eps (|f(x)| + 1) / h.

    f(x) returns a number, grad(x) an array shaped like x; with grad=None, f(x) returns
    (value, gradient). x: a finite real array (any shape). The message says the slope seen and
    the worst entry of the difference."""
    V.function("f", f)
    if grad is not None:
        V.function("grad", grad)
    x = V.float_array("x", x, 0)
    h = V.positive_float("h", h)
    rtol = V.nonnegative_float("rtol", rtol)
    min_slope = V.positive_float("min_slope", min_slope)
    seed = V.seed("seed", seed)
    f0, g = _value_and_grad(f, grad, x)
    if g.shape != x.shape:
        raise ValueError(f"grad: expected an array of shape {x.shape} (like x), got {g.shape}")
    if direction is None:
        direction = np.random.default_rng(seed).standard_normal(x.shape)
    value = (lambda z: _value_and_grad(f, None, z)[0]) if grad is None else f
    gradient = (lambda z: _value_and_grad(f, None, z)[1]) if grad is None else grad
    tt = taylor_test(value, gradient, x, direction)
    g_fd = finite_difference_gradient(value, x, h)
    atol = 100 * np.finfo(float).eps * (abs(f0) + 1) / h if atol is None else V.nonnegative_float("atol", atol)
    diff = np.abs(g - g_fd)
    gap = float(np.linalg.norm(diff))
    allowed = rtol * max(float(np.linalg.norm(g)), float(np.linalg.norm(g_fd))) + atol
    problems = []
    if not tt.slope >= min_slope:
        problems.append(f"Taylor slope {tt.slope:.3g} (expected >= {min_slope:g}; a right gradient gives 2, a wrong one "
                        f"about 1); remainders {np.array2string(tt.remainder, precision=2)} at steps "
                        f"{np.array2string(tt.h, precision=1)}")
    if not gap <= allowed:
        worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape)) if diff.ndim else ()
        problems.append(f"||grad - finite differences|| = {gap:.3g} > {allowed:.3g}; worst entry {worst}: "
                        f"grad {g[worst]:.10g}, finite differences {g_fd[worst]:.10g}")
    if problems:
        raise AssertionError("gradient check failed at f(x) = {:.10g}: ".format(f0) + "; ".join(problems))


def _exact_array(name, value):
    arr = np.asarray(value, dtype=object)
    flat = arr.ravel()
    bad = [v for v in flat if not V.is_exact_scalar(v)]
    if bad:
        raise TypeError(f"{name}: expected exact rationals (int, fractions.Fraction, SymPy Rational) or arrays of "
                        f"them, got {type(bad[0]).__name__} {bad[0]!r}; floats cannot be compared exactly")
    out = np.empty(arr.shape, dtype=object)
    out.ravel()[:] = [V.to_fraction(v) for v in flat]
    return out


def assert_exact_equal(actual, expected) -> None:
    """Assert that two exact rationals (int, fractions.Fraction, SymPy Rational), or two arrays
    of them of one shape, are equal exactly; a float on either side is a TypeError (compare
    floats with a tolerance instead). The message shows the first differing entry and the
    difference, exactly and as a float."""
    a = _exact_array("actual", actual)
    b = _exact_array("expected", expected)
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: actual {a.shape}, expected {b.shape}")
    for idx in np.ndindex(a.shape):
        if a[idx] != b[idx]:
            diff = a[idx] - b[idx]
            where = f" at {idx}" if idx else ""
            raise AssertionError(f"not exactly equal{where}: actual {a[idx]}, expected {b[idx]}, difference {diff} "
                                 f"(~{float(diff):.3g}, relative ~{float(diff / b[idx]) if b[idx] else math.inf:.3g})")


def _mean_and_se(result):
    """(mean, standard error) of monte_carlo_loss's result: the (mean, se) pair it returns."""
    mean, se = result
    return float(mean), float(se)


def assert_monte_carlo_agrees(task, A, loops: int, u=None, *, samples: int = 100_000, seed: int = 0,
                              z: float = 4.0) -> None:
    """Assert that the exact loss population_loss(task, A, loops, u) agrees with the Monte Carlo
    estimate of the real forward pass, monte_carlo_loss(task, A, loops, u, samples, seed):

      |mean - f| <= z se + f.error,

    se the estimator's standard error and f.error the exact engine's bound (docs/engine.md,
    "5. Numerical accuracy"). z: the allowed z-score (default 4: a false alarm about once in
    16 000 independent calls). An estimate whose standard error is not finite and positive
    (a diverging model, too few samples) cannot agree: the message says so. task.n must be finite.

    A heavy-tailed error (a looped model that diverges on some prompts, docs/conventions.md,
    "G5: more loops") makes the standard error itself unreliable: keep such A out of this
    assertion, or compare medians."""
    z = V.positive_float("z", z)
    exact = population_loss(task, A, loops, u)
    mean, se = _mean_and_se(monte_carlo_loss(task, A, loops, u=u, samples=samples, seed=seed))
    bound = float(getattr(exact, "error", 0.0))
    where = f"(samples {samples}, seed {seed}, loops {loops})"
    if not (math.isfinite(se) and se > 0 and math.isfinite(mean)):
        raise AssertionError(f"Monte Carlo estimate unresolved {where}: mean {mean!r}, standard error {se!r}; "
                             f"exact {float(exact):.10g}")
    score = (mean - float(exact)) / se
    if abs(mean - float(exact)) > z * se + bound:
        raise AssertionError(f"Monte Carlo disagrees with the exact loss {where}: mean {mean:.10g} +- {se:.3g} "
                             f"(standard error), exact {float(exact):.10g} (bound {bound:.1e}): z = {score:.2f}, "
                             f"allowed {z:g}")
