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
    nan without one); path[k] is A at t[k], u_path[k] is u; A and u are the final values.
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
    t_max = V.positive_float("t_max", t_max)
    tol = V.positive_float("tol", tol)
    rtol = V.positive_float("rtol", rtol)
    atol = V.positive_float("atol", atol)
    ref = None if A_ref is None else V.square_matrix("A_ref", A_ref, d, allow_exact=False)
    m = d * d

    def unpack(z):
        return z[:m].reshape(d, d), (z[m:] if train_u else None)

    cache = {}
    route = ["expansion"]

    def fg(z):
        # both events and the diagnostics ask for the same points (the solver's steps): each is
        # evaluated once, certified, and sets the float route the right-hand side takes
        key = z.tobytes()
        hit = cache.get(key)
        if hit is None:
            A, u = unpack(z)
            hit = cache[key] = population_loss_grad(task, A, loops, u)
            if hit[0].route in float_routes(loops):
                route[0] = hit[0].route
        return hit

    def rhs(t, z):
        # the solver's stages between steps: the gradient on the route that certified the last
        # step, without its bound (a third of the cost); every reported point is certified by fg
        key = z.tobytes()
        if key in cache:
            _, gA, gu = cache[key]
        else:
            A, u = unpack(z)
            _, gA, gu = population_loss_grad_route(task, A, loops, u, route=route[0])
        return -np.concatenate([gA.ravel(), gu]) if train_u else -gA.ravel()

    z0 = np.concatenate([A0.ravel(), u0]) if train_u else A0.ravel()
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
    path = Z[:, :m].reshape(-1, d, d)
    u_path = Z[:, m:] if train_u else np.zeros((len(ts), d))
    return FlowResult(np.asarray(ts), np.array(loss), np.array(gn), np.array(dom), np.array(dist), path, u_path,
                      path[-1].copy(), u_path[-1].copy(), status, message, loops)
