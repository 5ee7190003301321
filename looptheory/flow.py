"""Gradient flow dA/dt = -grad_A f(A, u) (and du/dt = -grad_u f when u is trained) on the exact
population loss, integrated with scipy.integrate.solve_ivp.

Gatmiry et al. (2024) study this flow (claim G3 in docs/conventions.md): with a gradient-dominance
constant mu, f(t) - f* <= ((f_0 - f*)^{-(L-1)/L} + mu (L-1) t / L)^{-L/(L-1)} for L >= 2.
The integrator is LSODA (switches to a stiff method when needed) with dense output; events stop
it at convergence (||grad f|| <= tol) and at blow-up (f above 1e8 (f_0 + 1), or not finite),
so a diverging flow ends with a status, not with an exception deep inside SciPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp

from . import _validate as V
from ._threads import single_blas_thread
from .loss import float_routes, population_loss_grad, population_loss_grad_route
from .task import Task


@dataclass(frozen=True)
class FlowResult:
    """Arrays over the solver's time points, and the end point.

    t, loss, grad_norm (of grad_A and grad_u together), dominance = ||grad_A f||_F^2 / f^{(2L-1)/L},
    distance = ||A(t) - A_ref||_F / ||A_ref||_F to the reference point (the optimum passed in, or
    nan without one); path[k] is A at t[k] (the stacked A_l, shape (L, d, d), for
    multilayer_gradient_flow), u_path[k] is u; A and u are the final values.
    status: "converged" (gradient norm <= tol), "blow-up", "t_max", or "failed" (message says why).
    """

    t: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    dominance: np.ndarray
    distance: np.ndarray
    path: np.ndarray
    u_path: np.ndarray
    A: np.ndarray
    u: np.ndarray
    status: str
    message: str
    loops: int


@single_blas_thread()
def gradient_flow(
    task: Task,
    A0,
    loops: int,
    u0=None,
    t_max: float = 1e4,
    tol: float = 1e-9,
    A_ref=None,
    rtol: float = 1e-10,
    atol: float = 1e-13,
) -> FlowResult:
    """Integrate the gradient flow of the exact loss from A0 (and u0; u stays 0 when u0 is None).

    A_ref: the point the `distance` column measures to (e.g. optimal_preconditioner(...).A).
    t_max, tol and the solver's rtol, atol: finite and > 0. Memory: as population_loss_grad
    (refused up front above the memory cap).
    """
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
    d = task.d
    A0 = V.square_matrix("A0", A0, d, allow_exact=False)
    loops = V.positive_int("loops", loops)
    train_u = u0 is not None
    u0 = V.vector("u0", u0, d, allow_exact=False) if train_u else np.zeros(d)
    t_max, tol, rtol, atol = _solver_options(t_max, tol, rtol, atol)
    ref = None if A_ref is None else V.square_matrix("A_ref", A_ref, d, allow_exact=False)
    return _integrate(lambda A, u: population_loss_grad(task, A, loops, u),
                      lambda A, u, r: population_loss_grad_route(task, A, loops, u, route=r), float_routes(loops),
                      A0, u0, train_u, loops, t_max, tol, ref, rtol, atol)


@single_blas_thread()
def multilayer_gradient_flow(task: Task, As0, us0=None, *, t_max: float = 1e4, tol: float = 1e-9, As_ref=None,
                             rtol: float = 1e-10, atol: float = 1e-13) -> FlowResult:
    """The gradient flow dA_l/dt = -grad_{A_l} f (and du_l/dt = -grad_{u_l} f when us0 is given)
    of the exact untied multi-layer loss (`multilayer_population_loss`), from As0 ((L, d, d),
    L <= MAX_LAYERS). The result is a FlowResult whose path has shape (times, L, d, d) (u_path
    (times, L, d)), loops = L, dominance = ||grad_As f||^2 / f^{(2L-1)/L}, distance measured to
    As_ref. Arguments as in `gradient_flow`."""
    from .multilayer import (MAX_LAYERS, multilayer_float_routes, multilayer_loss_grad_uncertified,
                             multilayer_population_loss_grad)

    if not isinstance(task, Task):
        raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
    d = task.d
    As0 = V.as_real_array("As0", As0, 3, allow_exact=False)
    L = As0.shape[0]
    if not 1 <= L <= MAX_LAYERS or As0.shape[1:] != (d, d):
        raise ValueError(f"As0: expected shape (L, {d}, {d}) with 1 <= L <= MAX_LAYERS = {MAX_LAYERS}, got {As0.shape}")
    train_u = us0 is not None
    us0 = V.as_real_array("us0", us0, 2, allow_exact=False) if train_u else np.zeros((L, d))
    if us0.shape != (L, d):
        raise ValueError(f"us0: expected shape ({L}, {d}), one vector per layer, got {us0.shape}")
    t_max, tol, rtol, atol = _solver_options(t_max, tol, rtol, atol)
    ref = None if As_ref is None else V.as_real_array("As_ref", As_ref, 3, allow_exact=False)
    if ref is not None and ref.shape != As0.shape:
        raise ValueError(f"As_ref: expected shape {As0.shape}, got {ref.shape}")

    def fg(A, u):
        f, gA, gu = multilayer_population_loss_grad(task, A, u)
        return f, gA, (np.zeros((L, d)) if gu is None else gu)

    def route_grad(A, u, r):
        f, gA, gu = multilayer_loss_grad_uncertified(task, A, u, r)
        return f, gA, (np.zeros((L, d)) if gu is None else gu)

    return _integrate(fg, route_grad, multilayer_float_routes(L), As0, us0, train_u, L, t_max, tol, ref, rtol, atol)


def _solver_options(t_max, tol, rtol, atol):
    return tuple(V.positive_float(k, v) for k, v in zip(("t_max", "tol", "rtol", "atol"), (t_max, tol, rtol, atol)))


def _integrate(loss_grad, route_grad, routes, A0, u0, train_u, loops, t_max, tol, ref, rtol, atol) -> FlowResult:
    """The flow of the certified loss_grad(A, u) -> (f, grad_A, grad_u) from (A0, u0), A and u of
    any shape (u trained only with train_u), with the events, diagnostics and statuses of
    gradient_flow; the solver's intermediate stages take route_grad(A, u, route), the same
    gradient on one float route without its bound, on the route (one of `routes`) that
    certified the last step."""
    m = A0.size
    shape_A, shape_u = A0.shape, u0.shape

    def unpack(z):
        return z[:m].reshape(shape_A), (z[m:].reshape(shape_u) if train_u else None)

    cache = {}
    route = ["expansion"]

    def fg(z):
        # both events and the diagnostics ask for the same points (the solver's steps): each is
        # evaluated once, certified, and sets the float route the right-hand side takes
        key = z.tobytes()
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = loss_grad(*unpack(z))
            if hit[0].route in routes:
                route[0] = hit[0].route
        return hit

    def rhs(t, z):
        # the solver's stages between steps: the gradient on the route that certified the last
        # step, without its bound (a third of the cost); every reported point is certified by fg
        key = z.tobytes()
        if key in cache:
            _, gA, gu = cache[key]
        else:
            _, gA, gu = route_grad(*unpack(z), route[0])
        return -np.concatenate([gA.ravel(), gu.ravel()]) if train_u else -gA.ravel()

    z0 = np.concatenate([A0.ravel(), u0.ravel()]) if train_u else A0.ravel()
    f0 = fg(z0)[0]
    limit = 1e8 * (abs(f0) + 1.0)

    def converged(t, z):
        _, gA, gu = fg(z)
        return math.sqrt(np.sum(gA * gA) + (np.sum(gu * gu) if train_u else 0.0)) - tol

    converged.terminal = True
    converged.direction = -1

    def blowup(t, z):
        f = fg(z)[0]
        return limit - f if np.isfinite(f) else -1.0

    blowup.terminal = True
    blowup.direction = -1

    status, message = "failed", ""
    try:
        with np.errstate(over="raise", invalid="raise"):
            sol = solve_ivp(rhs, (0.0, t_max), z0, method="LSODA", rtol=rtol, atol=atol, events=[converged, blowup])
        ts, Z = sol.t, sol.y.T
        if sol.status == 1 and len(sol.t_events[0]):
            status = "converged"
        elif sol.status == 1 and len(sol.t_events[1]):
            status = "blow-up"
        elif sol.status == 0:
            status = "t_max"
        message = sol.message
    except (FloatingPointError, OverflowError) as exc:
        status, message = "blow-up", f"overflow while integrating: {exc}"
        ts, Z = np.array([0.0]), z0[None, :]
    loss, gn, dom, dist = [], [], [], []
    for z in Z:
        f, gA, gu = fg(z)
        loss.append(f)
        g2 = float(np.sum(gA * gA))
        gn.append(math.sqrt(g2 + (float(np.sum(gu * gu)) if train_u else 0.0)))
        dom.append(g2 / f ** ((2 * loops - 1) / loops) if f > 0 else math.inf)
        A, _ = unpack(z)
        dist.append(float(np.linalg.norm(A - ref) / np.linalg.norm(ref)) if ref is not None else math.nan)
    path = Z[:, :m].reshape((-1,) + shape_A)
    u_path = Z[:, m:].reshape((-1,) + shape_u) if train_u else np.zeros((len(ts),) + shape_u)
    return FlowResult(np.asarray(ts), np.array(loss), np.array(gn), np.array(dom), np.array(dist), path, u_path,
                      path[-1].copy(), u_path[-1].copy(), status, message, loops)
