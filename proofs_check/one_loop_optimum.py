"""The one-loop (L = 1) loss in closed form and its global minimiser, derived with SymPy.

Setting: u = 0, no label noise, whitened letters (docs/conventions.md): A~ = Rx A Rx, B~ = A~^T,
W = Rx sigma_w Rx, S = S~ with n S ~ Wishart_d(n, I). For L = 1, H = I - B~ S and

  f = E tr(H W H^T) = tr W - 2 tr(B~ E[S] W) + tr(B~ E[S W S] B~^T).

Wishart second moment (derived here, then verified): with S = (1/n) sum_i x_i x_i^T,
E[S M S] = (1/n^2) [n (n - 1) M + n E(x x^T M x x^T)] and, by Isserlis,
E(x x^T M x x^T) = M + M^T + tr(M) I, so

  E[S] = I,   E[S M S] = M + (M^T + tr(M) I) / n.

General prior (W symmetric PSD):
  f = tr W - 2 tr(A~ W) + ((n + 1)/n) tr(A~^T W A~) + (tr W / n) ||A~||_F^2,
a convex quadratic whose stationarity equations K A~ = W, K = ((n + 1) W + tr(W) I)/n, give
the unique minimiser
  A~* = n ((n + 1) W + tr(W) I)^{-1} W,   i.e.   A* = n ((n + 1) sigma_w sigma_x + tr(sigma_x sigma_w) I)^{-1} sigma_w
(symmetric, since sigma_w and the bracket's transpose intertwine; no square roots needed).
Gatmiry prior (sigma_w = sigma_x^{-1}, W = I):
  f = d - 2 tr(A~) + ((n + d + 1)/n) ||A~||_F^2,   A~* = n/(n + d + 1) I,   A* = n/(n + d + 1) sigma_x^{-1}.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from sympy.polys.fields import sfield

from looptheory import Task, optimal_preconditioner, population_loss, population_loss_grad
from looptheory.loss import main0_expansion, part_expansion
from looptheory.reference import wick_expectation

from .runner import CheckOutcome

n = sp.Symbol("n", positive=True)


# --- the Wishart second moment ----------------------------------------------------------------


def wishart_second_moment(M, nn=n):
    """The claimed identity E[S M S] = M + (M^T + tr(M) I)/n (replaceable in `check`)."""
    return M + (M.T + M.trace() * sp.eye(M.shape[0])) / nn


def gaussian_expectation(poly_expr, xs):
    """E over x ~ N(0, I) of a polynomial in the symbols xs, by Isserlis: for independent
    standard normals a monomial prod x_i^{k_i} has mean prod (k_i - 1)!! (all k_i even), else 0."""
    P = sp.Poly(sp.expand(poly_expr), *xs)
    total = sp.Integer(0)
    for exps, coef in P.terms():
        if any(k % 2 for k in exps):
            continue
        total += coef * sp.Mul(*[sp.factorial2(k - 1) for k in exps])
    return sp.expand(total)


def derived_second_moment(d: int):
    """(E[x x^T], E[S M S]) for symbolic M (d x d), symbolic n, derived from the sample structure
    of S and Isserlis on symbolic entries of x (no appeal to the identity being tested)."""
    xs = sp.symbols(f"x0:{d}")
    x = sp.Matrix(d, 1, xs)
    M = sp.Matrix(d, d, lambda i, j: sp.Symbol(f"m{i}{j}"))
    second = (x * x.T).applyfunc(lambda e: gaussian_expectation(e, xs))
    fourth = (x * x.T * M * x * x.T).applyfunc(lambda e: gaussian_expectation(e, xs))
    # Of the n^2 index pairs (i, j) in S M S, the n(n-1) with i != j factor into E[x x^T] M E[x x^T]
    # by independence; the n diagonal ones carry the Gaussian fourth moment.
    sms = ((n * (n - 1) * second * M * second + n * fourth) / n**2).applyfunc(sp.expand)
    return M, second, sms


def wick_second_moment_entries(d: int = 2):
    """E[(S E_kl S)_{ij}] = E tr(S E_kl S E_ji) for every basis matrix E_kl, by the brute-force
    Wick pairings of looptheory.reference with symbolic n: an independent route that also
    counts the coincident sample indices itself. Returns {(k, l): d x d SymPy matrix}."""
    basis = {f"E{i}{j}": np.array([[int(a == i and b == j) for b in range(d)] for a in range(d)]) for i in range(d) for j in range(d)}
    out = {}
    for k in range(d):
        for l in range(d):
            out[(k, l)] = sp.Matrix(d, d, lambda i, j: wick_expectation([["S", f"E{k}{l}", "S", f"E{j}{i}"]], basis, n=n))
    return out


# --- the loss ---------------------------------------------------------------------------------


def symbols_matrix(name: str, d: int, symmetric: bool = False):
    """A d x d SymPy matrix of symbols name_ij (name_min,max when symmetric)."""
    if symmetric:
        return sp.Matrix(d, d, lambda i, j: sp.Symbol(f"{name}{min(i, j)}{max(i, j)}"))
    return sp.Matrix(d, d, lambda i, j: sp.Symbol(f"{name}{i}{j}"))


def derived_loss(At, W, second_moment=wishart_second_moment):
    """f = tr W - 2 tr(B E[S] W) + tr(B E[S W S] B^T), B = A~^T (E[S] = I), expanded."""
    B = At.T
    return sp.expand(W.trace() - 2 * (B * W).trace() + (B * second_moment(W) * B.T).trace())


def general_loss_formula(At, W):
    """The stated general-prior closed form."""
    return sp.expand(W.trace() - 2 * (At * W).trace() + (n + 1) / n * (At.T * W * At).trace()
                     + W.trace() / n * sum(a**2 for a in At))


def unit_prior_loss(At):
    """The stated Gatmiry-prior (W = I) closed form d - 2 tr A~ + ((n + d + 1)/n) ||A~||_F^2."""
    d = At.shape[0]
    return sp.expand(d - 2 * At.trace() + (n + d + 1) / n * sum(a**2 for a in At))


def general_minimiser(W):
    """A~* = n ((n + 1) W + tr(W) I)^{-1} W."""
    d = W.shape[0]
    return n * ((n + 1) * W + W.trace() * sp.eye(d)).inv() * W


def engine_loss_L1(At, W):
    """The engine's L = 1 expansion (looptheory.loss) evaluated with symbolic letters, as an
    independent route to the same polynomial (B = A~^T, E = I - B, sigma_x = I)."""
    d = At.shape[0]
    B = At.T
    I = sp.eye(d)
    mats = {0: None, 1: B, 2: B.T, 3: I - B, 4: (I - B).T, 5: W}
    total = sp.Integer(0)
    for exp in (main0_expansion(1), part_expansion(1, "main")):
        traces = {(): sp.Integer(d)}
        for w in exp.constant_words():
            if w:
                P = I
                for c in w:
                    P = P * mats[c]
                traces[w] = P.trace()
        total += exp.evaluate(traces, n)
    return sp.expand(total)


def stationary_point(f, At):
    """Solve grad f = 0 (a linear system in the entries of A~); None unless the solution is unique."""
    unknowns = list(At)
    sols = sp.linsolve([sp.diff(f, a) for a in unknowns], unknowns)
    if len(sols) != 1:
        return None
    sol = next(iter(sols))
    if any(s.free_symbols & set(unknowns) for s in sol):
        return None
    return sp.Matrix(At.shape[0], At.shape[1], list(sol))


def _is_zero_matrix(M) -> bool:
    """Every entry is 0 as a rational function of its symbols: each entry is read into a field
    of rational functions over QQ (sparse polynomials in lowest terms), exact like
    cancel(together(e)) == 0 and ~40x faster on the d = 3 minimiser."""
    return all(sfield(e)[1] == 0 for e in M)


# --- numeric cross-check against the engine ------------------------------------------------------


def raw_minimiser(sigma_x, sigma_w, nn):
    """A* = n ((n + 1) sigma_w sigma_x + tr(sigma_x sigma_w) I)^{-1} sigma_w (floats)."""
    d = sigma_x.shape[0]
    return nn * np.linalg.solve((nn + 1) * sigma_w @ sigma_x + np.trace(sigma_x @ sigma_w) * np.eye(d), sigma_w)


def _sqrtm_spd(M):
    ev, V = np.linalg.eigh(M)
    return (V * np.sqrt(ev)) @ V.T


def numeric_crosscheck(seed: int = 3, d: int = 3, nn: int = 5, minimiser=raw_minimiser, starts: int = 2):
    """At a random (sigma_x, sigma_w): the closed-form loss equals population_loss at a random
    A, grad f vanishes at `minimiser`, and optimal_preconditioner(with_u=False) finds it.
    Returns (loss rel. error, grad ratio, distance to the optimiser's A)."""
    rng = np.random.default_rng(seed)
    G1, G2 = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    sx = G1 @ G1.T / d + 0.5 * np.eye(d)
    sw = G2 @ G2.T / d + 0.3 * np.eye(d)
    task = Task(d, nn, sigma_x=sx, sigma_w=sw)
    Rx = _sqrtm_spd(sx)
    W = Rx @ sw @ Rx
    A = rng.standard_normal((d, d))
    At = Rx @ A @ Rx
    f_closed = (np.trace(W) - 2 * np.trace(At @ W) + (nn + 1) / nn * np.trace(At.T @ W @ At)
                + np.trace(W) / nn * np.sum(At**2))
    f_engine = population_loss(task, A, 1)
    loss_err = abs(f_closed - f_engine) / abs(f_engine)
    A_star = minimiser(sx, sw, nn)
    g_star = population_loss_grad(task, A_star, 1)[1]
    g_zero = population_loss_grad(task, np.zeros((d, d)), 1)[1]
    grad_ratio = np.linalg.norm(g_star) / np.linalg.norm(g_zero)
    opt = optimal_preconditioner(task, 1, starts=starts, seed=seed, with_u=False)
    dist = np.linalg.norm(opt.A - A_star) / np.linalg.norm(A_star)
    return float(loss_err), float(grad_ratio), float(dist)


# --- the check ---------------------------------------------------------------------------------


#: The quick run (`looptheory verify --quick`): the symbolic derivations at d = 2 only (the full
#: run adds d = 3), the numeric cross-check at d = 2 with the optimiser from A = 0 alone.
QUICK = dict(dims=(2,), numeric=(2, 5, 1))


def check(dims=(2, 3), numeric=(3, 5, 2), second_moment=None, unit_loss=None, minimiser=None, raw=None) -> CheckOutcome:
    """L = 1: E[SMS] = M + (M^T + tr M I)/n; f = d - 2 tr A~ + ((n+d+1)/n)||A~||^2, A* = n/(n+d+1) sigma_x^{-1}; general prior A~* = n((n+1)W + tr(W) I)^{-1} W.

    dims: the d of the symbolic derivations; numeric: (d, n, optimiser starts) of the numeric
    cross-check at a random (sigma_x, sigma_w).
    second_moment, unit_loss, minimiser, raw: replace the identity E[S M S], the W = I closed
    form, the general-prior minimiser formula (of W) and its raw float form (sigma_x, sigma_w, n)
    (negative controls)."""
    second_moment = second_moment or wishart_second_moment
    unit_loss = unit_loss or unit_prior_loss
    minimiser = minimiser or general_minimiser
    raw = raw or raw_minimiser
    bad, notes = [], []

    # 1. The Wishart identity: derived by Isserlis, then the stated formula compared with it.
    for d in dims:
        M, second, sms = derived_second_moment(d)
        if second != sp.eye(d):
            bad.append(f"E[x x^T] != I (d = {d})")
        if not _is_zero_matrix(sms - second_moment(M)):
            bad.append(f"E[S M S] differs from the Isserlis derivation (d = {d})")
    wick = wick_second_moment_entries(2)
    for (k, l), val in wick.items():
        Ekl = sp.Matrix(2, 2, lambda i, j: int(i == k and j == l))
        if not _is_zero_matrix(val - second_moment(Ekl)):
            bad.append(f"E[S E_{k}{l} S] differs from the Wick pairings")
            break

    # 2. Gatmiry prior (W = I): closed form and the minimiser from the stationarity equations.
    for d in dims:
        At = symbols_matrix("a", d)
        f = derived_loss(At, sp.eye(d), second_moment)
        if sp.expand(f - unit_loss(At)) != 0:
            bad.append(f"W = I loss differs from the closed form (d = {d})")
        sol = stationary_point(f, At)
        if sol is None or not _is_zero_matrix(sol - n / (n + d + 1) * sp.eye(d)):
            bad.append(f"stationary point != n/(n+d+1) I (d = {d}): {sol}")
        # A convex quadratic: its Hessian is constant; positive definite means the stationary
        # point is the global minimiser.
        Hs = sp.hessian(f, list(At))
        if not _is_zero_matrix(Hs - 2 * (n + d + 1) / n * sp.eye(d * d)):
            bad.append(f"Hessian != 2 (n+d+1)/n I (d = {d})")

    # 3. General prior, symbolic symmetric W: closed form, engine agreement, minimiser.
    for d in dims:
        At, W = symbols_matrix("a", d), symbols_matrix("w", d, symmetric=True)
        f = derived_loss(At, W, second_moment)
        if sp.expand(f - general_loss_formula(At, W)) != 0:
            bad.append(f"general-prior loss differs from its closed form (d = {d})")
        if sp.expand(f - engine_loss_L1(At, W)) != 0:
            bad.append(f"general-prior loss differs from the engine's L = 1 expansion (d = {d})")
        sol = stationary_point(f, At)
        if sol is None or not _is_zero_matrix(sol - minimiser(W)):
            bad.append(f"general-prior stationary point differs from the stated minimiser (d = {d})")
            continue
        if not _is_zero_matrix(sol - sol.T):
            bad.append(f"general-prior minimiser not symmetric (d = {d})")
        unit = {w: int(w.name[1] == w.name[2]) for w in W.free_symbols}
        if not _is_zero_matrix(sol.subs(unit) - n / (n + d + 1) * sp.eye(d)):
            bad.append(f"general-prior minimiser at W = I is not n/(n+d+1) I (d = {d})")

    # 4. Numbers: the engine's loss, its gradient at the minimiser, and the optimiser.
    nd, nn, starts = numeric
    loss_err, grad_ratio, dist = numeric_crosscheck(d=nd, nn=nn, minimiser=raw, starts=starts)
    notes.append(f"numeric d={nd}, n={nn} ({starts} optimiser start{'s' if starts > 1 else ''}): |f_closed - f_engine|/f = {loss_err:.1e}, "
                 f"||grad f(A*)||/||grad f(0)|| = {grad_ratio:.1e}, ||A_opt - A*||/||A*|| = {dist:.1e}")
    if loss_err > 1e-12:
        bad.append("closed-form loss != population_loss")
    if grad_ratio > 1e-9:
        bad.append("gradient does not vanish at the stated minimiser")
    if dist > 1e-6:
        bad.append("optimal_preconditioner disagrees with the stated minimiser")

    detail = (f"d in {list(dims)}, symbolic n: E[SMS] = M + (M^T + tr M I)/n (Isserlis, Wick); "
              "W = I: f = d - 2 tr A~ + ((n+d+1)/n)||A~||_F^2, unique stationary point n/(n+d+1) I; "
              "symbolic symmetric W: f = tr W - 2 tr(A~W) + ((n+1)/n) tr(A~^T W A~) + (tr W/n)||A~||_F^2 "
              "(= engine), minimiser A~* = n((n+1)W + tr(W) I)^{-1} W, i.e. "
              "A* = n((n+1) sigma_w sigma_x + tr(sigma_x sigma_w) I)^{-1} sigma_w; " + "; ".join(notes))
    if bad:
        detail += "; failures: " + "; ".join(bad)
    return CheckOutcome("one_loop_optimum", not bad, detail)
