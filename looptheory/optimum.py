"""The best scalar preconditioner: A = gamma * sigma_x^{-1}, u = 0, and the loss along that line.

With A = gamma sigma_x^{-1} the whitened preconditioner is B~ = Rx A^T Rx = gamma I
(docs/conventions.md, "The population loss in closed form"), so H = I - gamma S~ and
G = sum_{k<L} H^k are polynomials in S~ alone and

  f(gamma) = E tr(H^L W~ H^L) + (noise / n) gamma^2 E tr(G S~ G)
           = (tr(sigma_x sigma_w) / d) E tr (I - gamma S~)^{2L} + (noise / n) gamma^2 E tr(S~ G^2).

The first line drops the U~ term (u = 0). The second uses that the law of S~ is invariant under
S~ -> O S~ O^T for every orthogonal O, so for any polynomial p the matrix E p(S~) commutes with
every O and is therefore (E tr p(S~) / d) I; then E tr(p(S~) W~) = (E tr p(S~) / d) tr W~ with
tr W~ = tr(Rx sigma_w Rx) = tr(sigma_x sigma_w). Expanding in gamma,

  E tr (I - gamma S~)^{2L} = sum_i C(2L, i) (-gamma)^i m_i,           m_i = E tr S~^i,
  gamma^2 S~ G^2 = gamma r(gamma S~),  r(x) = x q(x)^2,  q(x) = sum_{k<L} (1 - x)^k
                                                               = sum_j (-1)^j C(L, j + 1) x^j,

so f is a polynomial of degree 2L in gamma with exact rational coefficients built from
`trace_moments`. At n = inf, S~ = I and the noise term vanishes: f = tr(sigma_x sigma_w)(1 - gamma)^{2L}.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from math import comb

import numpy as np
from scipy import optimize as _opt
from scipy.sparse import linalg as _sla

from . import _validate as V
from ._threads import single_blas_thread
from .loss import (MAX_LOOPS, check_loss_memory, float_routes, population_loss_grad, population_loss_grad_route,
                   population_loss_hvp)
from .moments import check_moment_cost, trace_moments
from .task import Task

__all__ = ["optimal_scale", "scale_loss", "optimal_preconditioner", "OptimumResult"]

# Roots of f' are located on the grid 2^-_BITS before the final, relative-precision refinement.
_BITS = 64
# Relative precision (in bits) of the returned minimiser; far below float64's 53 bits of output.
_REL_BITS = 64


# Exact work of the scalar family: the polynomial has degree 2L and coefficients of about
# L log2(n) bits, and the Rolle cascade handles 2L derivatives, so the cost grows like
# loops^3 (log2 n + 20) (measured: 20 s at loops = 200, n = 10^6; 131 s at loops = 100,
# n = 10^400). Calls above _MAX_SCALE_WORK (about a minute) are refused up front.
_MAX_SCALE_WORK = 1e9


def _check(task, loops):
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
    return V.positive_int("loops", loops)


def _check_scale_cost(task, loops, what):
    if V.is_infinite(task.n):
        return
    work = float(min(loops, 10**30)) ** 3 * (math.log2(task.n) + 20)
    if work > _MAX_SCALE_WORK:
        raise ValueError(
            f"loops: {what} at loops = {V.number_text(loops)}, n = {V.number_text(task.n)} would take far too long "
            f"(exact work grows like loops^3 (log2 n + 20) = {work:.2g}, above the limit {_MAX_SCALE_WORK:.0e}, "
            "about a minute: loops up to about 200 at n = 10^6, 90 at n = 10^400)"
        )
    try:
        check_moment_cost(2 * loops, task.n, task.d)
    except ValueError as exc:
        raise ValueError(f"loops: {what} needs the trace moments up to 2 loops; {exc}") from None


def _trace_product(task: Task) -> Fraction:
    """tr(sigma_x sigma_w) as a Fraction: exact for exact (object) inputs, else the float64 value.

    A float input is already rounded, so an exact sum of its products would not be more correct
    than the float sum; the minimiser depends on it only through its ratio to the noise.
    """
    sx, sw = task.sigma_x, task.sigma_w
    if sx.dtype == object or sw.dtype == object:
        d = task.d
        return sum((Fraction(sx[i, j]) * Fraction(sw[j, i]) for i in range(d) for j in range(d)), Fraction(0))
    return Fraction(float(np.einsum("ij,ji->", np.asarray(sx, float), np.asarray(sw, float))))


def _loss_polynomial(task: Task, loops: int) -> list[Fraction]:
    """Coefficients a_0..a_{2L} of f(gamma) = sum_i a_i gamma^i for finite n (module docstring)."""
    L = loops
    n, d = task.n, task.d
    c = _trace_product(task) / d
    noise = Fraction(task.noise)
    m = trace_moments(2 * L, n, d)
    a = [c * comb(2 * L, i) * (-1) ** i * m[i] for i in range(2 * L + 1)]
    if noise:
        q = [(-1) ** j * comb(L, j + 1) for j in range(L)]
        r = [0] * (2 * L)  # r(x) = x q(x)^2 has degree 2L - 1
        for i, qi in enumerate(q):
            for j, qj in enumerate(q):
                r[i + j + 1] += qi * qj
        scale = noise / n
        for j in range(1, 2 * L):
            a[j + 1] += scale * r[j] * m[j]
    return a


def scale_loss(task: Task, loops: int, gamma) -> float:
    """The population loss f(gamma) at A = gamma * sigma_x^{-1}, u = 0 (module docstring).

    f(gamma) = (tr(sigma_x sigma_w)/d) E tr (I - gamma S~)^{2L} + (noise/n) gamma^2 E tr(S~ G^2),
    G = sum_{k<L} (I - gamma S~)^k; at n = inf, tr(sigma_x sigma_w) (1 - gamma)^{2L}.
    Evaluated exactly in rationals (gamma converted exactly), then rounded once to float.
    Limits: at finite n the exact work grows like loops^3 (log2 n + 20); above about a
    minute's worth (loops ~ 200 at n = 10^6) the call is refused up front (ValueError naming loops).
    """
    loops = _check(task, loops)
    g = Fraction(V.real_scalar("gamma", gamma))
    _check_scale_cost(task, loops, "scale_loss")
    if V.is_infinite(task.n):
        return float(_trace_product(task) * (1 - g) ** (2 * loops))
    value = Fraction(0)
    for coef in reversed(_loss_polynomial(task, loops)):
        value = value * g + coef
    return float(value)


# ---------------------------------------------------------------------------------------------
# Exact real-root location. Points are integers x on the grid 2^-bits, i.e. gamma = x / 2^bits,
# and a polynomial with integer coefficients P is evaluated as the integer
#   2^(bits * deg) * P(x / 2^bits) = sum_i P_i x^i 2^(bits (deg - i)),
# whose sign is the exact sign of P(gamma): no rounding anywhere, however large the
# cancellation (at n = 10^6 and L = 50 the loss near its minimum is ~10^-200 of its terms).


def _eval(P: list[int], x: int, bits: int) -> int:
    deg = len(P) - 1
    acc = P[deg]
    for i in range(deg - 1, -1, -1):
        acc = acc * x + (P[i] << (bits * (deg - i)))
    return acc


def _derivative(P: list[int]) -> list[int]:
    return [i * P[i] for i in range(1, len(P))] or [0]


def _sign(v: int) -> int:
    return (v > 0) - (v < 0)


def _bracketed_root(P, lo, hi, v_lo, v_hi, bits) -> int:
    """A grid point within one grid step of the unique root of P in (lo, hi); v_lo, v_hi are
    P's scaled values there, of opposite signs (P monotone between lo and hi, or at least one
    sign change). Illinois regula falsi, with a bisection every third step so that the bracket
    at least halves every three evaluations whatever the shape of P."""
    step = 0
    f_lo, f_hi = v_lo, v_hi  # the values used for the secant; Illinois halves a stale one
    side = 0
    while hi - lo > 1:
        step += 1
        if step % 3 == 0 or f_hi == f_lo:
            x = (lo + hi) // 2
        else:
            x = lo + (f_lo * (lo - hi)) // (f_hi - f_lo)
            x = min(max(x, lo + 1), hi - 1)
        v = _eval(P, x, bits)
        if v == 0:
            return x
        if _sign(v) == _sign(v_lo):
            lo, v_lo, f_lo = x, v, v
            if side == -1:
                f_hi //= 2
            side = -1
        else:
            hi, v_hi, f_hi = x, v, v
            if side == 1:
                f_lo //= 2
            side = 1
    return lo if abs(v_lo) <= abs(v_hi) else hi


def _critical_points(A: list[int], lo: int, hi: int, bits: int) -> list[int]:
    """All roots of A' in [lo, hi] (grid points, each within one step of a true root).

    Rolle cascade: between consecutive real roots of P' the polynomial P is monotone, so it has
    at most one root there, found by a sign test and a bracketed search. Starting from the
    constant top derivative (no roots) and going down to A', every real root of every derivative
    in [lo, hi] is found; none can be missed, unlike a sign-change scan on a fixed grid.
    """
    derivs = [A]
    while len(derivs[-1]) > 1:
        derivs.append(_derivative(derivs[-1]))
    roots: list[int] = []
    for P in reversed(derivs[1:-1]):  # from the linear derivative down to A' itself
        pts = [lo] + [x for x in roots if lo < x < hi] + [hi]
        vals = [_eval(P, x, bits) for x in pts]
        found = set()
        for i in range(len(pts) - 1):
            if vals[i] == 0:
                found.add(pts[i])
            elif _sign(vals[i]) * _sign(vals[i + 1]) < 0:
                found.add(_bracketed_root(P, pts[i], pts[i + 1], vals[i], vals[i + 1], bits))
        if vals[-1] == 0:
            found.add(hi)
        roots = sorted(found)
    return roots


def _refine(P: list[int], x: int, bits: int) -> Fraction:
    """Refine a root of P known to within one step of x on the 2^-bits grid to relative
    precision 2^-_REL_BITS, by re-bracketing on finer grids (a root near 0 needs many bits)."""
    while x.bit_length() < _REL_BITS + 1:
        extra = _REL_BITS + 2 - x.bit_length()
        fine = bits + extra
        lo, hi = max((x - 1) << extra, 0), (x + 1) << extra
        v_lo, v_hi = _eval(P, lo, fine), _eval(P, hi, fine)
        if v_lo == 0:
            return Fraction(lo, 1 << fine)
        if _sign(v_lo) * _sign(v_hi) >= 0:  # a touching (double) root: no sign change to follow
            break
        x, bits = _bracketed_root(P, lo, hi, v_lo, v_hi, fine), fine
    return Fraction(x, 1 << bits)


def optimal_scale(task: Task, loops: int) -> float:
    """The global minimiser over real gamma of f(gamma) = loss at A = gamma sigma_x^{-1}, u = 0.

    f is the degree-2L polynomial of `scale_loss`. Where the minimiser lies:
    - n = inf: f = tr(sigma_x sigma_w)(1 - gamma)^{2L}, so gamma = 1.
    - tr(sigma_x sigma_w) > 0, finite n: by Jensen twice (x^{2L} convex, E tr S~ = d),
      E tr (I - gamma S~)^{2L} >= d (1 - gamma)^{2L}, which exceeds d = its value at gamma = 0
      for gamma outside [0, 2]; the noise term is >= 0 and vanishes at 0, so f(gamma) > f(0)
      there. Also f'(0) = -2L tr(sigma_x sigma_w) < 0. So the global minimiser is a critical
      point in (0, 2). All real roots of f' there are found exactly (Rolle cascade with exact
      integer sign evaluation), f is compared exactly at each, and the best is refined to
      relative precision 2^-64.
    - tr(sigma_x sigma_w) = 0 (sigma_w = 0), noise > 0: f = (noise/n) gamma^2 E tr(S~ G^2) >= 0
      vanishes only at gamma = 0 (G(0) = L I), so gamma = 0.
    - tr(sigma_x sigma_w) = 0 and noise = 0 (or n = inf, where the noise term drops): f is
      constant and ValueError is raised, the minimiser not being unique.

    Limits: the exact work grows like loops^3 (log2 n + 20) (20 s at loops = 200, n = 10^6);
    above about a minute's worth (loops ~ 200 at n = 10^6, ~ 90 at n = 10^400) the call is
    refused up front (ValueError naming loops). n may be any integer.
    """
    loops = _check(task, loops)
    _check_scale_cost(task, loops, "optimal_scale")
    tr = _trace_product(task)
    if tr == 0 and (task.noise == 0 or V.is_infinite(task.n)):
        raise ValueError(
            "task: the loss is constant in gamma (tr(sigma_x sigma_w) = 0 and no noise term), "
            "so the minimiser is not unique"
        )
    if V.is_infinite(task.n):
        return 1.0
    if tr == 0:
        return 0.0
    a = _loss_polynomial(task, loops)
    den = 1
    for coef in a:
        den = den * coef.denominator // math.gcd(den, coef.denominator)
    A = [int(coef * den) for coef in a]
    while len(A) > 1 and A[-1] == 0:
        A.pop()
    bits = _BITS
    lo, hi = 0, 2 << bits
    crit = _critical_points(A, lo, hi, bits)
    if not crit:  # impossible by the argument above; kept as a loud guard
        raise ArithmeticError("optimal_scale: no critical point found in (0, 2)")
    best = min(crit, key=lambda x: _eval(A, x, bits))
    return float(_refine(_derivative(A), best, bits))


# --- the global minimiser over all (A, u) -------------------------------------------------------


@dataclass(frozen=True)
class OptimumResult:
    """The best (A, u) found and how it compares with the structured candidates.

    A, u, loss, grad_norm: the minimiser found, its loss (a Certified float) and gradient
    norm (A and u together).
    start_losses: the final loss from each start (start 0 is A = 0, u = 0).
    agree: how many starts ended within 1e-9 relative of the best loss.
    scale: optimal_scale(task, loops) when sigma_w = sigma_x^{-1} (else None);
    distance_to_scale: ||A - scale sigma_x^{-1}||_F / ||scale sigma_x^{-1}||_F (else None);
    u_norm: ||u||; commutator: ||A sigma_x - sigma_x A||_F / (||A||_F ||sigma_x||_F).
    converged: the scaled gradient norm (below) is at most CONVERGED_TOL;
    scaled_grad_norm: the gradient in the scaled variable of the last refinement,
    ||(s_A grad_A f sigma_x^{-1}, s_u grad_u f)|| / f, with s_A = ||I - A^T sigma_x||_F and
    s_u = sqrt(f): how far from stationary the point is relative to the loss' own scale;
    status: what the optimiser reached, in words.
    """

    A: np.ndarray
    u: np.ndarray
    loss: float
    grad_norm: float
    start_losses: tuple
    agree: int
    scale: float | None
    distance_to_scale: float | None
    u_norm: float
    commutator: float
    converged: bool = False
    scaled_grad_norm: float = math.nan
    status: str = ""


def _is_gatmiry_prior(task: Task) -> bool:
    sx = np.asarray(task.sigma_x, dtype=float)
    sw = np.asarray(task.sigma_w, dtype=float)
    return np.allclose(sw @ sx, np.eye(task.d), rtol=0, atol=1e-12 * task.d)


def newton_polish(fg, hvp, z, f, g, route, steps=4):
    """Newton steps from z (where fg gave f, g and route) with the exact Hessian, applied as
    Hessian-vector products (`hvp(z, v, route)`, a complex step: loss.population_loss_hvp,
    multilayer.multilayer_loss_hvp) and solved by MINRES; a step is kept only if it lowers the
    gradient norm (so it cannot make things worse). fg(z) -> (f, gradient, route). Returns
    (z, f, g, route) of the last point kept.

    MINRES from 0 needs no factorisation, takes a symmetric indefinite Hessian (Newton goes to
    the nearest critical point, a saddle too: the gradient norm is the test) and stays in the
    Krylov space of g, so on a singular Hessian it takes the minimum-norm step: the minimiser
    is not isolated when the task has symmetries (at sigma_x = sigma_w = I the loss is
    invariant under A -> O A O^T, u -> O u, and the non-symmetric minimisers form a manifold),
    and a minimum-norm step does not wander along it."""
    m = z.size
    for _ in range(steps):
        zz, rr = z, route
        op = _sla.LinearOperator((m, m), matvec=lambda v: hvp(zz, v, rr), dtype=float)
        step, _ = _sla.minres(op, g, rtol=_MINRES_RTOL, maxiter=m)
        if not np.all(np.isfinite(step)):
            break
        z_new = z - step
        f_new, g_new, r_new = fg(z_new)
        gn, gn_new = np.linalg.norm(g), np.linalg.norm(g_new)
        if not np.isfinite(f_new) or gn_new >= gn:
            break
        z, f, g, route = z_new, f_new, g_new, r_new
        if gn_new > gn / 2:
            break  # not even halved: at the gradient's rounding floor, or outside Newton's region
    return z, f, g, route


#: Relative residual of the Newton equations solved by MINRES (at most m Hessian-vector
#: products): an inexact Newton step multiplies the gradient norm by about this, plus the
#: quadratic term, so two steps from an L-BFGS point (|g| ~ 1e-7) reach the rounding floor.
_MINRES_RTOL = 1e-6


#: A minimiser is reported converged when its scaled gradient norm is at most this.
CONVERGED_TOL = 1e-6


@dataclass(frozen=True)
class Scaling:
    """The variable of `scaled_refine` scaled to a point's own size: at z with loss f,
    z' = z + T y, T = linear(z, f) a linear map (a function y -> T y) that is self-adjoint, so
    that T also pulls a gradient back (grad_y = T grad_z). The first size_A entries of z are the
    matrices' and the rest the vectors'; the scaled gradient norm is the hypot of the two
    blocks' norms (`scaled_gradient_norm`)."""

    linear: object
    size_A: int


def scaled_gradient_norm(f, g, z, scaling: Scaling):
    """||T grad f|| / f at z, T = scaling.linear(z, f) (see scaled_refine): how far from
    stationary z is relative to the loss' own scale."""
    if not (f > 0):
        return 0.0 if f == 0 else math.inf
    y = scaling.linear(z, f)(g)
    k = scaling.size_A
    return float(math.hypot(np.linalg.norm(y[:k]), np.linalg.norm(y[k:]))) / float(f)


def scaled_refine(fg, hvp, z, f, g, route, scaling: Scaling, rounds=6):
    """Minimise again in a variable scaled to the point's own size, so that a loss of 1e-22 at
    n = 1e11 (where E = I - A^T sigma_x is of order 1/n) is as well conditioned as a loss of 1:

      z = z_k + T y,   F(y) = f(z) / f(z_k),

    T = scaling.linear(z_k, f(z_k)) (`looped_scaling`: A = A_k + s_A Y sigma_x^{-1},
    s_A = ||I - A_k^T sigma_x||_F, the distance to the n = inf minimiser, the only scale the
    loss has; u = u_k + s_u v, s_u = sqrt(f(A_k, u_k)), as u enters f quadratically). Rounds of
    L-BFGS and Newton (`newton_polish`, with the Hessian-vector products T H T v / f(z_k)) from
    y = 0 re-centre and re-scale until the loss stops falling. z is where fg gave f, g and
    route. Returns (z, f, g, scaled gradient norm); starts nothing new, so it is as blind as
    the starts before it."""
    sgn = scaled_gradient_norm(f, g, z, scaling)
    if sgn <= CONVERGED_TOL * 1e-3:
        return z, f, g, sgn  # already stationary in the scaled variable: nothing to refine
    for _ in range(rounds):
        if not (f > 0):
            break
        f0 = float(f)
        z0 = z
        lift = scaling.linear(z0, f0)  # self-adjoint: it maps y to z - z0 and pulls gradients back

        def FG(y):
            fy, gy, ry = fg(z0 + lift(y))
            return float(fy) / f0, lift(gy) / f0, ry

        def HV(y, v, r):
            return lift(hvp(z0 + lift(y), lift(v), r)) / f0

        y0 = np.zeros(z.size)
        res = _opt.minimize(lambda y: FG(y)[:2], y0, jac=True, method="L-BFGS-B",
                            options={"maxiter": 500, "gtol": 1e-10, "ftol": 1e-15})
        y, _, gy, _ = newton_polish(FG, HV, res.x, *FG(res.x))
        z_new = z0 + lift(y)
        f_new, g_new, r_new = fg(z_new)
        sgn = float(np.linalg.norm(gy))
        improved = f_new < f
        if improved:
            z, f, g, route = z_new, f_new, g_new, r_new
        if not improved or f_new > f0 * (1 - 1e-12):
            break
    return z, f, g, sgn


def looped_scaling(d, with_u, sx_inv) -> Scaling:
    """The scaled variable of the looped search (scaled_refine): A = A_k + s_A Y sigma_x^{-1},
    s_A = ||I - A_k^T sigma_x||_F (1 if 0), u = u_k + sqrt(f) v; z the flattened (A, u)."""

    def linear(z, f):
        s_A = float(np.linalg.norm(np.eye(d) - z[: d * d].reshape(d, d).T @ np.linalg.inv(sx_inv))) or 1.0
        s_u = math.sqrt(float(f))

        def T(y):
            # self-adjoint: Y -> Y sigma_x^{-1} is, sigma_x^{-1} being symmetric
            zz = np.zeros_like(y)
            zz[: d * d] = s_A * (y[: d * d].reshape(d, d) @ sx_inv).ravel()
            if with_u:
                zz[d * d:] = s_u * y[d * d:]
            return zz

        return T

    return Scaling(linear, d * d)


def remembered(fn, size=4):
    """fn(z) remembered for the last `size` points z (by their bytes): SciPy and the
    refinements ask again for the point they ended at."""
    memo = OrderedDict()

    def wrapped(z):
        key = z.tobytes()
        hit = memo.get(key)
        if hit is not None:
            return hit
        out = memo[key] = fn(z)
        if len(memo) > size:
            memo.popitem(last=False)
        return out

    return wrapped


def _inner_evaluators(task, loops, with_u):
    """fg(z) -> (f, gradient, route) and hvp(z, v, route) -> H v for the inner steps, z the
    flattened (A, u) (A alone without u).

    fg gives population_loss_grad(..., fallback=False)'s numbers (the certified best float
    route, no exact fallback: the final point is certified separately); where the loss has a
    single float route (loops > CENTRED_MAX_LOOPS) they are computed without the bound, bit for
    bit the same at a third of the cost (loss.population_loss_grad_route). The last few points
    are remembered (`remembered`). hvp is the exact Hessian-vector product on the route fg
    took there (a complex step, loss.population_loss_hvp)."""
    d = task.d
    one_route = len(float_routes(loops)) == 1

    def split(z):
        return z[: d * d].reshape(d, d), (z[d * d:] if with_u else None)

    def fg(z):
        A, u = split(z)
        if one_route:
            f, gA, gu = population_loss_grad_route(task, A, loops, u, "expansion")
            route = "expansion"
        else:
            f, gA, gu = population_loss_grad(task, A, loops, u, fallback=False)
            route = f.route if f.route in float_routes(loops) else "expansion"
        return f, np.concatenate([gA.ravel(), gu]) if with_u else gA.ravel(), route

    def hvp(z, v, route):
        A, u = split(z)
        dA, du = split(v)
        HA, Hu = population_loss_hvp(task, A, loops, dA, u, du, route)
        return np.concatenate([HA.ravel(), Hu]) if with_u else HA.ravel()

    return remembered(fg), hvp


@single_blas_thread()
def optimal_preconditioner(task: Task, loops: int, starts: int = 6, seed: int = 0, with_u: bool = True) -> OptimumResult:
    """The global minimiser of the exact population loss over all real d x d A (not only
    symmetric) and all u, found without being told the answer: L-BFGS with the exact gradient
    from A = 0 and `starts - 1` random non-symmetric starts, then Newton polishing with the
    exact Hessian (complex-step Hessian-vector products, `loss.population_loss_hvp`, solved by
    MINRES: see `newton_polish`), then rounds in a variable scaled to the point's own size
    (see `scaled_refine`), which is what makes the search converge at huge n (at n = 1e11 the
    loss near the optimum is 1e-22). The structured candidate gamma_L sigma_x^{-1} (Gatmiry et
    al., Thm. on the global minimiser) is compared with the result, never substituted for it
    nor used as a start. with_u=False fixes u = 0.

    The inner steps take population_loss_grad(..., fallback=False)'s numbers, without the bound
    where that changes nothing (`_inner_evaluators`); the reported loss and gradient are
    certified. The BLAS runs one thread meanwhile (looptheory/_threads.py; the caller's
    setting is restored). Cost at d = 10, n = 20, loops = 6 with u, 6 starts: 2.4-4 CPU-s
    (benchmarks/bench_optimum.py; docs/engine.md, "8. Limits").

    The result says what was reached: `converged` (scaled gradient norm <= CONVERGED_TOL),
    the scaled and raw gradient norms, and `status`. When the task has symmetries the
    minimiser need not be isolated (at sigma_x = sigma_w = I, A -> O A O^T leaves the loss
    unchanged), and A is then one point of the set of minimisers: which one depends on the
    path from the start.
    seed: an integer >= 0. Memory: as population_loss_grad (refused up front above the memory cap).
    """
    loops = _check(task, loops)
    starts = V.positive_int("starts", starts)
    seed = V.seed("seed", seed)
    with_u = V.boolean("with_u", with_u)
    if loops > MAX_LOOPS:
        raise ValueError(f"loops: the exact engine supports loops <= {MAX_LOOPS}, got {loops}")
    check_loss_memory(task.d, loops, with_u, grad=True)
    d = task.d
    V.check_memory("starts", f"optimal_preconditioner with starts = {V.number_text(starts)} at d = {d}",
                   starts * (d * d + d) * 8 * 2, "2 x starts x (d^2 + d) x 8 bytes of start points and results")
    rng = np.random.default_rng(seed)
    sx = np.asarray(task.sigma_x, dtype=float)
    sx_inv = np.linalg.inv(sx)
    m = d * d + (d if with_u else 0)
    scaling = looped_scaling(d, with_u, sx_inv)

    fg, hvp = _inner_evaluators(task, loops, with_u)

    inits = [np.zeros(m)]
    for _ in range(starts - 1):
        A0 = rng.standard_normal((d, d)) * 0.5 / np.sqrt(d) @ sx_inv
        u0 = rng.standard_normal(d) * 0.3 if with_u else np.zeros(0)
        inits.append(np.concatenate([A0.ravel(), u0]))
    finals = []
    for z0 in inits:
        res = _opt.minimize(lambda z: fg(z)[:2], z0, jac=True, method="L-BFGS-B",
                            options={"maxiter": 5000, "gtol": 1e-12, "ftol": 1e-15})
        z, f, g, route = newton_polish(fg, hvp, res.x, *fg(res.x))
        z, f, g, sgn = scaled_refine(fg, hvp, z, f, g, route, scaling)
        finals.append((f, z, g, sgn))
    _, z, g, sgn = min(finals, key=lambda t: t[0])
    A = z[: d * d].reshape(d, d)
    u = z[d * d:] if with_u else np.zeros(d)
    # the reported loss and gradient carry their error bounds (.error, .grad_error); the exact
    # route, which can cost tens of seconds at loops 5-6, is left to callers that need 1e-8
    f_best, gA, gu = population_loss_grad(task, A, loops, u if with_u else None, fallback=False)
    g = np.concatenate([gA.ravel(), gu]) if with_u else gA.ravel()
    agree = sum(1 for f, *_ in finals if abs(f - f_best) <= 1e-9 * max(abs(f_best), 1e-300))
    scale = dist = None
    if _is_gatmiry_prior(task) and (task.noise == 0 or V.is_infinite(task.n)):
        scale = optimal_scale(task, loops)
        ref = scale * sx_inv
        dist = float(np.linalg.norm(A - ref) / np.linalg.norm(ref))
    nA = np.linalg.norm(A)
    comm = float(np.linalg.norm(A @ sx - sx @ A) / (nA * np.linalg.norm(sx))) if nA > 0 else 0.0
    converged = bool(sgn <= CONVERGED_TOL)
    status = (
        f"converged: scaled gradient {sgn:.1e} <= {CONVERGED_TOL:g}" if converged
        else f"not converged: scaled gradient {sgn:.1e} > {CONVERGED_TOL:g} after the scaled rounds"
    ) + f"; {agree}/{len(finals)} starts agree within 1e-9"
    return OptimumResult(A, u, f_best, float(np.linalg.norm(g)), tuple(float(f) for f, *_ in finals), agree,
                         scale, dist, float(np.linalg.norm(u)), comm, converged, sgn, status)
