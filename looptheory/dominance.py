"""Gradient dominance of the exact loss (claim G2 of docs/conventions.md; Gatmiry et al. 2024).

The reported condition is ||grad_A f||_F^2 >= mu f^{(2L-1)/L} with mu = 1/16 "where the loss is
not already tiny". At finite n, f* > 0 and grad f(A*) = 0, so the condition on f itself must
fail near A*; we therefore measure both

  ratio(A)        = ||grad_A f(A)||_F^2 / f(A)^{(2L-1)/L},
  excess_ratio(A) = ||grad_A f(A)||_F^2 / (f(A) - f*)^{(2L-1)/L},

and search for their smallest values over regions declared before searching,
  R(rho) = {A : f(A) - f* >= rho (f(0) - f*)},
with u = 0 and sigma_w = sigma_x^{-1} (the setting of G2 is sigma_x = I; the loss depends on
sigma_x only through the whitened A, so sigma_x = I loses no generality).

At n = inf and A = a I the ratio equals 4 L^2 d^{-(L-1)/L}; any critical point other than the
global minimum (a saddle or a local minimum) has excess_ratio = 0 and defeats any mu > 0 in
every region that contains it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize as opt

from . import _validate as V
from ._threads import single_blas_thread
from .loss import MAX_LOOPS, float_routes, population_loss_grad, population_loss_hvp
from .spectral import spectral_loss_grad
from .task import Task


def ratio_at_scalar_infinite_n(d: int, loops: int) -> float:
    """4 L^2 d^{-(L-1)/L}: the ratio at n = inf, A = a I (any a != 1)."""
    return 4.0 * loops**2 * d ** (-(loops - 1) / loops)


def dominance_ratio(task: Task, A, loops: int, f_star: float | None = None):
    """(ratio, excess_ratio) at A (u = 0):

      ratio = ||grad_A f||_F^2 / f^{(2L-1)/L},   excess_ratio = ||grad_A f||_F^2 / (f - f_star)^{(2L-1)/L}.

    excess_ratio is nan unless f_star (the minimum of f, >= 0) is given. Where a quotient is
    undefined, because f = 0 or because |f - f_star| lies within the error bounds of f (a
    `Certified` float) and f_star (its `.error` if it has one, else one rounding), it is nan
    and a RuntimeWarning says why; an f_star above f(A) by more than those bounds is a
    ValueError (f_star is then not the minimum)."""
    import warnings

    loops = V.positive_int("loops", loops)
    if f_star is not None:
        f_star_err = float(getattr(f_star, "error", 0.0))
        f_star = V.real_scalar("f_star", f_star, allow_exact=False)
        if f_star < 0:
            raise ValueError(f"f_star: the minimum of a loss is >= 0, got {f_star!r}")
        f_star_err = max(f_star_err, 2.0**-53 * abs(f_star))
    f, gA, _ = population_loss_grad(task, A, loops)
    g2 = float(np.sum(gA * gA))
    p = (2 * loops - 1) / loops
    if f > 0:
        ratio = g2 / f**p
    else:
        warnings.warn("dominance_ratio: f(A) = 0 (the global minimum at n = inf): the ratio is undefined there", RuntimeWarning, stacklevel=2)
        ratio = math.nan
    if f_star is None:
        return ratio, math.nan
    ex = float(f) - f_star
    err = f.error + f_star_err
    if ex < -err:
        raise ValueError(
            f"f_star: {f_star!r} exceeds f(A) = {float(f)!r} by more than their error bounds ({err:.2g}); "
            "f_star must be the minimum of f"
        )
    if ex <= err:
        warnings.warn(
            f"dominance_ratio: f(A) - f_star = {ex:.3g} is within the error bounds ({err:.2g}): "
            "the excess ratio is undefined here",
            RuntimeWarning,
            stacklevel=2,
        )
        return ratio, math.nan
    return ratio, g2 / ex**p


@dataclass(frozen=True)
class WorstCase:
    """The smallest value found of `quantity` over R(rho), and where.

    value: the smallest ratio found; A (or eigenvalues a in the spectral family): where;
    rho, f_star, f0 = f(0): the region; starts: how many starts; found_by: "search" or the
    name of a structured candidate that was evaluated (e.g. "scalar critical point").
    """

    quantity: str
    value: float
    A: np.ndarray
    rho: float
    f_star: float
    f0: float
    starts: int
    found_by: str


def _hvp(grad, x, v, h=None):
    """Hessian-vector product by central differences of the exact gradient."""
    nv = np.linalg.norm(v)
    if nv == 0:
        return np.zeros_like(x)
    h = h or 1e-6 * (1.0 + np.linalg.norm(x)) / nv
    return (grad(x + h * v) - grad(x - h * v)) / (2 * h)


def _last_point_cache(fg):
    """fg remembering its last point: SLSQP asks for the objective, the constraint and its
    Jacobian at the same x in turn, and each would otherwise re-evaluate the loss."""
    last = [None, None]

    def cached(x):
        key = np.asarray(x, dtype=float).tobytes()
        if last[0] != key:
            last[0], last[1] = key, fg(x)
        return last[1]

    return cached


@single_blas_thread()
def _search(fg, x_dim, f_star, f0, rho, loops, excess, inits, extra_points=(), full_g2=None, bound=None, hvp=None):
    """Minimise log(ratio) over {f - f* >= rho (f0 - f*)} by SLSQP from each init.

    fg(x) -> (f, gradient in x). When x parameterises A redundantly (the spectral groups),
    full_g2(x) gives ||grad_A f||_F^2 and the objective's gradient is taken by central
    differences in the few parameters; otherwise it is exact up to a finite-difference
    Hessian-vector product of the exact gradient (`hvp(x, v)` when given)."""
    p = (2 * loops - 1) / loops
    floor = rho * (f0 - f_star)
    fg = _last_point_cache(fg)

    def value(x):
        f, g = fg(x)
        b = (f - f_star) if excess else f
        g2 = float(g @ g) if full_g2 is None else full_g2(x)
        if b <= 0 or g2 <= 0:
            return -700.0, f, g, b, g2
        return math.log(g2) - p * math.log(b), f, g, b, g2

    def obj(x):
        val, f, g, b, g2 = value(x)
        if val == -700.0:
            return val, np.zeros_like(x)
        if full_g2 is None:
            hv = _hvp(lambda z: fg(z)[1], x, g) if hvp is None else hvp(x, g)
            return val, 2 * hv / g2 - p * g / b
        h = 1e-6 * (1.0 + np.abs(x))
        grad = np.array([(value(x + h[i] * e)[0] - value(x - h[i] * e)[0]) / (2 * h[i]) for i, e in enumerate(np.eye(len(x)))])
        return val, grad

    cons = {"type": "ineq", "fun": lambda x: fg(x)[0] - f_star - floor, "jac": lambda x: fg(x)[1]}
    best_val, best_x, how = math.inf, None, "search"
    for x, name in extra_points:
        if fg(x)[0] - f_star - floor >= 0:
            v = obj(x)[0]
            if v < best_val:
                best_val, best_x, how = v, x, name
    for x0 in inits:
        if fg(x0)[0] - f_star - floor < 0:
            continue
        try:
            bounds = None if bound is None else [(-bound, bound)] * x_dim
            with np.errstate(over="ignore", invalid="ignore"):
                res = opt.minimize(obj, x0, jac=True, method="SLSQP", constraints=[cons], bounds=bounds,
                                   options={"maxiter": 100, "ftol": 1e-10})
            x = res.x
        except (ValueError, FloatingPointError, OverflowError):
            continue
        if not np.all(np.isfinite(x)) or fg(x)[0] - f_star - floor < -1e-9 * abs(floor + 1e-300):
            continue
        v = obj(x)[0]
        if v < best_val:
            best_val, best_x, how = v, x, "search"
    return (math.exp(best_val) if best_x is not None else math.nan), best_x, how


def _check_search(rho, f_star, excess, starts, seed):
    return (V.nonnegative_float("rho", rho), V.nonnegative_float("f_star", f_star), V.boolean("excess", excess),
            V.positive_int("starts", starts), V.seed("seed", seed))


def _check_candidates(candidates, d):
    """[(A, name)] with A a finite d x d matrix and name a string."""
    if isinstance(candidates, (str, bytes)) or not isinstance(candidates, (list, tuple)):
        raise TypeError(f"candidates: expected a list of (A, name) pairs, got {type(candidates).__name__}")
    out = []
    for i, pair in enumerate(candidates):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not isinstance(pair[1], str):
            raise TypeError(f"candidates: entry {i} must be an (A, name) pair with a string name, got {pair!r}")
        out.append((V.square_matrix(f"candidates[{i}]", pair[0], d, allow_exact=False), pair[1]))
    return out


def worst_dominance(task: Task, loops: int, rho: float, f_star: float, excess: bool = True, starts: int = 6,
                    seed: int = 0, candidates=()) -> WorstCase:
    """Smallest ratio (excess=False) or excess ratio (excess=True) found over R(rho) for general
    real A (u = 0). candidates: (A, name) pairs evaluated besides the search (e.g. the scalar
    critical point), declared by the caller before the search.

    rho, f_star: finite and >= 0; excess: True or False; starts >= 1; seed: an integer >= 0.
    The starts: A0 = a sigma_x^{-1} + s Z / sqrt(d) with a ~ U(-1, 2), Z a standard Gaussian
    d x d matrix and s ~ U(0.05, 1), drawn in that order, start after start, from
    numpy.random.default_rng(seed).
    Memory: as population_loss_grad (refused up front above the memory cap)."""
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
    loops = V.positive_int("loops", loops)
    rho, f_star, excess, starts, seed = _check_search(rho, f_star, excess, starts, seed)
    d = task.d
    candidates = _check_candidates(candidates, d)

    def fg(x):
        f, gA, _ = population_loss_grad(task, x.reshape(d, d), loops)
        return f, gA.ravel()

    def hvp(x, v):
        # exact to rounding (complex step) on the float route that certified f at x; after an
        # exact-route evaluation, central differences of the certified gradient
        route = fg(x)[0].route
        if route not in float_routes(loops):
            return _hvp(lambda z: fg(z)[1], x, v)
        return population_loss_hvp(task, x.reshape(d, d), loops, v.reshape(d, d), route=route)[0].ravel()

    f0 = fg(np.zeros(d * d))[0]
    rng = np.random.default_rng(seed)
    sx_inv = np.linalg.inv(np.asarray(task.sigma_x, float))
    inits = [(rng.uniform(-1, 2) * np.eye(d) @ sx_inv + rng.standard_normal((d, d)) * rng.uniform(0.05, 1.0) / math.sqrt(d)).ravel()
             for _ in range(starts)]
    extra = [(np.asarray(A, float).ravel(), name) for A, name in candidates]
    # Entries of the whitened A are searched within [-3, 3]: the optimum is near gamma I with
    # gamma in (0, 1], and the ratio is scale-free far out (f ~ |A|^{2L}, |grad f|^2 ~ |A|^{4L-2}).
    val, x, how = _search(fg, d * d, f_star, f0, rho, loops, excess, inits, extra, bound=3.0, hvp=hvp)
    return WorstCase("excess_ratio" if excess else "ratio", val, None if x is None else x.reshape(d, d), rho, f_star, f0, starts, how)


def worst_dominance_spectral(d: int, n, loops: int, rho: float, f_star: float, excess: bool = True, starts: int = 6,
                             seed: int = 0, groups: int = 4) -> WorstCase:
    """The same search in the symmetric (spectral) family, where the loss depends only on the
    eigenvalues a of the whitened preconditioner: any d, 10^6 included. To keep the search
    dimension small at large d, the eigenvalues take `groups` distinct values with fixed
    multiplicities d/groups (rounded); the gradient is exact for that parameterisation.

    d: an integer >= 1; n: an integer >= 1 or math.inf; groups >= 1; rho, f_star, excess,
    starts, seed as in worst_dominance. The starts: the group values uniform in [-0.5, 1.8],
    one vector after another from numpy.random.default_rng(seed)."""
    d = V.positive_int("d", d)
    n = V.context_length("n", n)
    loops = V.positive_int("loops", loops)
    if loops > MAX_LOOPS:
        raise ValueError(f"loops: the exact engine supports loops <= {MAX_LOOPS}, got {loops}")
    rho, f_star, excess, starts, seed = _check_search(rho, f_star, excess, starts, seed)
    groups = V.positive_int("groups", groups)
    sizes = np.diff(np.round(np.linspace(0, d, min(groups, d) + 1)).astype(int))
    sizes = sizes[sizes > 0]

    def expand(x):
        return np.repeat(x, sizes)

    def fg(x):
        f, g = spectral_loss_grad(x, n, loops, multiplicity=sizes)
        # one parameter moves a whole group: its derivative is the group's sum
        return f, g * sizes

    def full_g2(x):
        # ||grad_A f||_F^2 = sum_i (df/da_i)^2 for a spectral function of a symmetric A
        g = spectral_loss_grad(x, n, loops, multiplicity=sizes)[1]
        return float(np.sum(sizes * g * g))

    k = len(sizes)
    f0 = fg(np.zeros(k))[0]
    rng = np.random.default_rng(seed)
    inits = [rng.uniform(-0.5, 1.8, k) for _ in range(starts)]
    val, x, how = _search(fg, k, f_star, f0, rho, loops, excess, inits, full_g2=full_g2)
    return WorstCase("excess_ratio" if excess else "ratio", val, None if x is None else expand(x), rho, f_star, f0, starts, how)
