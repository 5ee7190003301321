"""Optima of the untied multi-layer sparse model: the blind search over every A_l (and u_l), and
the best per-layer scalar schedule A_l = a_l sigma_x^{-1}, exactly.

The schedule. At A_l = a_l sigma_x^{-1}, u_l = 0 the whitened letters are B_l = a_l I, every
factor commutes with S and, by the orthogonal invariance of S (docs/derivations.md, "6.4 The
scalar line for any L"), with q(x) = prod_l (1 - a_l x) = 1 + sum_{k=1}^L c_k x^k and
N = sum_l P_{>l} B_l = r(S), r(x) = (1 - q(x)) / x (the sum telescopes: N S = I - P),

  f(a) = (tr(sigma_x sigma_w) / d) E tr q(S)^2 + (noise / n) E tr(S r(S)^2)
       = w (m_0 + 2 b^T c + c^T M c) + (noise / n) c^T M' c,

w = tr(sigma_x sigma_w) / d, m_k = E tr S^k (`trace_moments`), b_k = m_k, M_jk = m_{j+k},
M'_jk = m_{j+k-1} (j, k = 1..L): a quadratic in the coefficients c of q. M is a positive
definite Hankel matrix at finite n (S has a continuous spectrum), so the minimiser is the
unique solution of (w M + (noise/n) M') c = -w b, rational for rational inputs, and the best
loss w (m_0 + b^T c) is an exact rational: no search. The schedule is a_l = 1 / x_l over the
roots x_l of q (all real at the optimum without noise: q is then, up to a factor, an orthogonal
polynomial of a positive measure on (0, inf), docs/derivations.md, "9. The best per-layer
schedule"; with noise they can be complex, and the best real schedule is searched); the order
of the layers does not matter (the factors commute). At n = inf, S = I and f = w d q(1)^2: the
minimum 0 is reached by every schedule with some a_l = 1 (the result takes a_l = 1 for all l).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy import optimize as _opt

from . import _validate as V
from ._threads import single_blas_thread
from .loss import Certified
from .moments import trace_moments
from .multilayer import (
    MAX_LAYERS,
    multilayer_loss_grad_uncertified,
    multilayer_loss_hvp,
    multilayer_population_loss_grad,
)
from .optimum import CONVERGED_TOL, Scaling, newton_polish, remembered, scaled_gradient_norm, scaled_refine
from .task import Task

__all__ = ["MultilayerOptimum", "optimal_multilayer", "ScheduleResult", "optimal_schedule", "certainly_above"]


# --- the best schedule --------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleResult:
    """The best per-layer scalar schedule A_l = a_l sigma_x^{-1}, u_l = 0.

    a: the scales a_1..a_L (floats, ascending; any order gives the same loss).
    real: True when every root of the best polynomial q* (over all coefficients) is real: then
    a is the minimiser over real schedules (to double precision), loss is the exact minimal loss
    and coefficients the exact c_1..c_L of q*(x) = prod (1 - a_l x) = 1 + sum c_k x^k.
    False when q* has complex roots (it can with noise): no real schedule reaches its loss, so a
    is the best real schedule a local search from several starts found (not proved global),
    loss is the exact loss of exactly that a (attained) and coefficients are its q's.
    lower_bound: the loss of q*, a Fraction no real schedule goes below (equal to loss when
    real). Fractions are exact in the task's float inputs (or its exact inputs).
    d: the dimension of the task the schedule was computed for (`As` refuses a task of another d)."""

    a: tuple
    loss: Fraction
    coefficients: tuple
    real: bool
    lower_bound: Fraction
    d: int

    def As(self, task: Task) -> np.ndarray:
        """The schedule's matrices a_l sigma_x^{-1}, stacked (L, d, d), for a task of the schedule's
        d. The scalars a_l are optimal for the (n, noise) they were computed at; a task with
        another n or noise is accepted (to evaluate the same schedule there), and the loss of
        these matrices is then not that task's optimum."""
        if not isinstance(task, Task):
            raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
        if task.d != self.d:
            raise ValueError(f"task: expected a Task of dimension d = {self.d} (the schedule's), got d = {task.d}")
        inv = np.linalg.inv(np.asarray(task.sigma_x, dtype=float))
        return np.stack([a * inv for a in self.a])


def _solve(Mat, rhs):
    """Exact Gaussian elimination over the rationals (the matrices are L x L, L <= a few)."""
    n = len(rhs)
    a = [list(row) + [r] for row, r in zip(Mat, rhs)]
    for k in range(n):
        p = next(i for i in range(k, n) if a[i][k] != 0)
        a[k], a[p] = a[p], a[k]
        for i in range(n):
            if i != k and a[i][k] != 0:
                f = a[i][k] / a[k][k]
                a[i] = [x - f * y for x, y in zip(a[i], a[k])]
    return [a[i][n] / a[i][i] for i in range(n)]


def _exact_scalar(name, x):
    return V.to_fraction(x) if V.is_exact_scalar(x) else Fraction(float(x))


def optimal_schedule(task: Task, layers: int) -> ScheduleResult:
    """The best per-layer schedule A_l = a_l sigma_x^{-1} (u_l = 0) of the untied L-layer model and
    its exact loss (module docstring): the coefficients of q solve an L x L rational linear system;
    the a_l are the reciprocals of q's roots (to double precision; mpmath at 50 digits, more
    where the roots of a high degree need it). If q has complex roots (possible with noise), the
    best real schedule is searched instead and `real` is False (see ScheduleResult).

    Any prior, noise and n (math.inf: a_l = 1, loss 0 without noise). layers: 1 to any integer the
    moments afford (the moments up to 2L are exact polynomials in 1/n). Float task entries are
    taken exactly as given (Fraction of each float)."""
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
    L = V.positive_int("layers", layers)
    d = task.d
    sx, sw = np.asarray(task.sigma_x), np.asarray(task.sigma_w)
    w = sum((_exact_scalar("sigma_x", sx[i, j]) * _exact_scalar("sigma_w", sw[j, i]) for i in range(d) for j in range(d)),
            Fraction(0)) / d
    noise = _exact_scalar("noise", task.noise)
    if V.is_infinite(task.n):
        c = tuple(Fraction(0) for _ in range(L - 1)) + (Fraction(-1),)
        return ScheduleResult((1.0,) * L, Fraction(0), c, True, Fraction(0), d)
    m = trace_moments(2 * L, task.n, d)
    s = noise / task.n
    Mat = [[w * m[j + k] + s * m[j + k - 1] for k in range(1, L + 1)] for j in range(1, L + 1)]

    def loss_of(c):
        return w * (m[0] + 2 * sum(c[k - 1] * m[k] for k in range(1, L + 1))) + sum(
            c[j - 1] * c[k - 1] * Mat[j - 1][k - 1] for j in range(1, L + 1) for k in range(1, L + 1))

    if w == 0 and s == 0:
        c = [Fraction(0)] * L
    else:
        c = _solve(Mat, [-w * m[k] for k in range(1, L + 1)])
    best = loss_of(c)
    a, real = _schedule_from(c)
    if real:
        return ScheduleResult(a, best, tuple(c), True, best, d)
    a = _best_real_schedule(L, [float(x) for x in m], [[float(x) for x in row] for row in Mat], float(w), a)
    c_a = _q_coefficients([Fraction(x) for x in a], Fraction(1))[1:]
    return ScheduleResult(a, loss_of(c_a), tuple(c_a), False, best, d)


def _q_coefficients(a, one):
    """[1, c_1, ..., c_L] of q(x) = prod (1 - a_l x), c_k = (-1)^k e_k(a), in the arithmetic of
    `one` (Fraction(1): exact for exact a; 1.0: float)."""
    c = [one] + [one * 0] * len(a)
    for x in a:
        for k in range(len(c) - 1, 0, -1):
            c[k] -= x * c[k - 1]
    return c


def _best_real_schedule(L, m, Mat, w, starts):
    """The best real (a_1..a_L) a local search finds for f(c(a)) = w (m_0 + 2 b^T c) + c^T K c,
    c_k = (-1)^k e_k(a), from the real parts of the complex optimum's scales and from evenly
    spaced scales (a_k = g k / L, g = 0.5 and 1): a quasi-Newton search (BFGS) in float with the
    exact chain rule dc_k/da_l = -c_{k-1}(a without a_l)."""
    K = np.array(Mat)
    b = np.array(m[1:L + 1])

    def coeffs(a):
        return np.array(_q_coefficients([float(x) for x in a], 1.0))

    def fg(a):
        c = coeffs(a)[1:]
        f = w * (m[0] + 2 * b @ c) + c @ K @ c
        df = 2 * w * b + 2 * K @ c
        J = np.empty((L, L))  # J[k, l] = dc_{k+1} / da_l
        for i in range(L):
            J[:, i] = -coeffs(np.delete(a, i))[:L]
        return f, J.T @ df

    cands = [np.array(starts, dtype=float)]
    for g in (0.5, 1.0):
        cands.append(np.full(L, g / max(L, 1)) * np.arange(1, L + 1))
    best = None
    for a0 in cands:
        r = _opt.minimize(fg, a0, jac=True, method="BFGS", options={"gtol": 1e-14, "maxiter": 2000})
        if best is None or r.fun < best.fun:
            best = r
    return tuple(sorted(float(x) for x in best.x))


def _schedule_from(c):
    """a_l = 1 / x_l over the roots x_l of q(x) = 1 + sum c_k x^k (a_l = 0 for a missing degree),
    and whether every root is real. The roots are found at 50 digits, and again at 150 and 400
    when some look complex there: the roots of a high-degree q are ill-conditioned (at L = 40 a
    50-digit search leaves imaginary parts of 0.3 of their size that 200 digits remove), while
    genuinely complex roots stay complex at every precision. Complex roots give their real
    parts (a start for the real search)."""
    import mpmath

    L = len(c)
    deg = max((k + 1 for k in range(L) if c[k] != 0), default=0)
    if deg == 0:
        return (0.0,) * L, True
    roots, real = None, False
    for dps in (50, 150, 400):
        with mpmath.workdps(dps):
            coeffs = [mpmath.mpf(c[k].numerator) / c[k].denominator for k in range(deg - 1, -1, -1)] + [mpmath.mpf(1)]
            try:
                roots = mpmath.polyroots(coeffs, maxsteps=200 + 20 * deg, extraprec=4 * dps)
            except mpmath.libmp.NoConvergence:
                continue
            real = all(abs(mpmath.im(r)) <= mpmath.mpf(10) ** (-(dps * 3) // 5) * abs(r) for r in roots)
            if real:
                break
    if roots is None:  # no convergence at any precision: double-precision roots, not vouched real
        roots = [complex(r) for r in np.roots([float(x) for x in reversed(c[:deg])] + [1.0])]
    a = sorted([float(mpmath.re(1 / r)) for r in roots] + [0.0] * (L - deg))
    return tuple(a), real


# --- the blind search --------------------------------------------------------------------------


@dataclass(frozen=True)
class MultilayerOptimum:
    """The best (A_1..A_L, u_1..u_L) found by `optimal_multilayer`.

    As (L, d, d), us (L, d); loss: a Certified float (its bound says how accurate it is);
    grad_norm: ||(grad_As, grad_us)|| there (certified evaluation); start_losses: the final loss
    from each start, in order (start 0 is As = 0, then the caller's starts, then the random ones);
    agree: how many ended within 1e-9 relative of the best; converged: the scaled gradient
    (below) is at most CONVERGED_TOL and the loss is not above the best per-layer schedule's
    (`optimal_schedule`, a feasible point, beyond the two error bounds: else the point is a
    saddle or a local minimum); scaled_grad_norm: ||(s_l grad_{A_l} f sigma_x^{-1},
    sqrt(f) grad_{u_l} f)|| / f, s_l = ||I - A_l^T sigma_x||_F, from the certified gradient at the
    returned point; status: what the search reached, in words."""

    As: np.ndarray
    us: np.ndarray
    loss: float
    grad_norm: float
    start_losses: tuple
    agree: int
    converged: bool
    scaled_grad_norm: float
    status: str


def untied_scaling(d, L, with_u, sx, sx_inv) -> Scaling:
    """The scaled variable of the untied search (optimum.scaled_refine): A_l = A_l,k + s_l Y_l
    sigma_x^{-1}, s_l = ||I - A_l,k^T sigma_x||_F (1 if 0), and u_l = u_l,k + sqrt(f) v_l."""
    m = L * d * d

    def linear(z, f):
        s = np.array([float(np.linalg.norm(np.eye(d) - A.T @ sx)) or 1.0 for A in z[:m].reshape(L, d, d)])
        s_u = math.sqrt(float(f))

        def T(y):
            # self-adjoint: Y_l -> s_l Y_l sigma_x^{-1} is, sigma_x^{-1} being symmetric
            out = np.zeros_like(y)
            out[:m] = (s[:, None, None] * (y[:m].reshape(L, d, d) @ sx_inv)).ravel()
            if with_u:
                out[m:] = s_u * y[m:]
            return out

        return T

    return Scaling(linear, m)


@single_blas_thread()
def optimal_multilayer(task: Task, layers: int, starts: int = 4, seed: int = 0, with_u: bool = False,
                       inits=()) -> MultilayerOptimum:
    """The global minimiser of the untied L-layer loss over all real A_l (and u_l with with_u),
    searched blind: L-BFGS from As = 0, from the caller's `inits` (each an (L, d, d) array, e.g.
    a looped optimum repeated per layer) and from `starts - 1` random non-symmetric starts
    (seeded), then Newton steps with the exact Hessian (complex-step Hessian-vector products,
    `multilayer_loss_hvp`, solved by MINRES: optimum.newton_polish) and rounds in a variable
    scaled per layer (optimum.scaled_refine). Inner steps use the uncertified float expansion
    (`multilayer_loss_grad_uncertified`); the returned point is evaluated by the certified
    `multilayer_population_loss_grad(..., fallback=False)`, and `converged` rests on that
    evaluation. The structured candidates (the best schedule, the looped optimum) are never
    substituted for the result.

    with_u=False fixes u_l = 0, which loses nothing: the u part of the loss is the expectation
    of a square and the cross terms with w* and the noise vanish (docs/derivations.md, "8. The
    untied multi-layer loss"), so f(A, u) >= f(A, 0) for every u.
    """
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
    L = V.positive_int("layers", layers)
    if L > MAX_LAYERS:
        raise ValueError(f"layers: the exact untied engine supports 1 to MAX_LAYERS = {MAX_LAYERS} layers, got {L}")
    starts = V.positive_int("starts", starts)
    seed = V.seed("seed", seed)
    with_u = V.boolean("with_u", with_u)
    d = task.d
    inits = [V.as_real_array(f"inits[{i}]", z, 3, allow_exact=False) for i, z in enumerate(inits)]
    for i, z in enumerate(inits):
        if z.shape != (L, d, d):
            raise ValueError(f"inits[{i}]: expected shape ({L}, {d}, {d}), got {z.shape}")
    sx = np.asarray(task.sigma_x, dtype=float)
    sx_inv = np.linalg.inv(sx)
    m = L * d * d
    size = m + (L * d if with_u else 0)
    split = lambda z: (z[:m].reshape(L, d, d), z[m:].reshape(L, d) if with_u else None)  # noqa: E731

    def fg(z):
        f, gA, gu = multilayer_loss_grad_uncertified(task, *split(z))
        return f, (np.concatenate([gA.ravel(), gu.ravel()]) if with_u else gA.ravel()), "expansion"

    def hvp(z, v, route):
        As, us = split(z)
        dAs, dus = split(v)
        HA, Hu = multilayer_loss_hvp(task, As, dAs, us, dus, route)
        return np.concatenate([HA.ravel(), Hu.ravel()]) if with_u else HA.ravel()

    def certified(z):
        f, gA, gu = multilayer_population_loss_grad(task, *split(z), fallback=False)
        return f, (np.concatenate([gA.ravel(), gu.ravel()]) if with_u else gA.ravel())

    rng = np.random.default_rng(seed)
    points = [np.zeros(size)] + [np.concatenate([z.ravel(), np.zeros(size - m)]) for z in inits]
    for _ in range(starts - 1):
        A0 = rng.standard_normal((L, d, d)) * 0.5 / np.sqrt(d) @ sx_inv
        points.append(np.concatenate([A0.ravel(), rng.standard_normal(size - m) * 0.3]))
    scaling = untied_scaling(d, L, with_u, sx, sx_inv)
    finals = []
    fg = remembered(fg)
    for z0 in points:
        with np.errstate(over="ignore", invalid="ignore"):
            res = _opt.minimize(lambda z: fg(z)[:2], z0, jac=True, method="L-BFGS-B",
                                options={"maxiter": 3000, "gtol": 1e-12, "ftol": 1e-15})
            z, f, g, route = newton_polish(fg, hvp, res.x, *fg(res.x))
            z, f, g, _ = scaled_refine(fg, hvp, z, f, g, route, scaling)
        finals.append((float(f), z))
    _, z = min(finals, key=lambda t: t[0] if math.isfinite(t[0]) else math.inf)
    f_best, g = certified(z)
    sgn = scaled_gradient_norm(f_best, g, z, scaling)
    agree = sum(1 for f, _ in finals if abs(f - f_best) <= 1e-9 * max(abs(f_best), 1e-300))
    # a zero gradient is not a minimum: a start with every layer equal keeps them equal (at
    # sigma_x = I the start As = 0 does) and can end at the looped optimum, a saddle of the
    # untied loss. The best schedule is a feasible untied point with an exact loss, never a
    # start: a result above it is not the global minimum
    sch = optimal_schedule(task, L)
    f_sch = certified_loss(sch.loss)
    above = certainly_above(f_best, f_sch)
    converged = bool(sgn <= CONVERGED_TOL) and not above
    if above:
        status = (f"not converged: a stationary point (scaled gradient {sgn:.1e}) whose loss {float(f_best):.6g} is above "
                  f"that of the best per-layer schedule, {float(f_sch):.6g} (optimal_schedule, a feasible point): a saddle "
                  "or a local minimum; more starts may reach the minimum")
    elif converged:
        status = f"converged: scaled gradient {sgn:.1e} <= {CONVERGED_TOL:g}"
    else:
        status = f"not converged: scaled gradient {sgn:.1e} > {CONVERGED_TOL:g} after the scaled rounds"
    status += f"; {agree}/{len(finals)} starts agree within 1e-9; loss certified to {f_best.rel_error:.1e} relative ({f_best.route})"
    As, us = split(z)
    return MultilayerOptimum(As.copy(), np.zeros((L, d)) if us is None else us.copy(), f_best, float(np.linalg.norm(g)),
                             tuple(f for f, _ in finals), agree, converged, sgn, status)


def certified_loss(value) -> Certified:
    """A schedule's exact loss as a Certified float (one rounding), for comparisons with the
    searched optima's certified losses."""
    v = float(value)
    return Certified(v, 2.0**-53 * abs(v), "exact")


def certainly_above(f: Certified, ref: Certified) -> bool:
    """True when loss f is above loss ref beyond both certified bounds,
    float(f) - float(ref) > f.error + ref.error: then a search that ended at f missed a point
    as good as ref (the test `optimal_multilayer`, claim G6 and experiment E3 apply to the
    searched optima)."""
    return bool(float(f) - float(ref) > f.error + ref.error)
