"""The hand-derived gradient of the population loss equals SymPy's derivative of the exact loss.

Symbolic side: the exact loss as a polynomial in the entries of A (and u) and m = 1/n, d = 2,
built from the engine's expansions (looptheory.loss.part_expansion: main, u, noise parts, plus
the n^0 main part tr(E^L W E^LT)) evaluated with symbolic letter matrices
  M_B = A^T sigma_x, M_Bt = A sigma_x, M_E = I - M_B, M_Et = I - M_Bt,
  M_W = sigma_w sigma_x, M_U = u u^T sigma_x          (rational sigma_x, sigma_w),
so f = main0 + main + u + noise * noise_part; then grad = df/da_ij (and df/du_i) by SymPy's
exact polynomial differentiation, evaluated exactly at rational points. For L <= 3 and
sigma_x = I (sigma_w general, u symbolic) the polynomial f itself is also checked against an
engine-free route (fixed_point.exact_loss_d2: expand in the entries of S, then exact Wishart
moments of those entries).

Hand side: looptheory.population_loss_grad, which differentiates each trace word by hand and
applies the chain rule grad_A = sigma_x (G_B - G_E)^T + (G_Bt - G_Et) sigma_x,
grad_u = G_U sigma_x u + sigma_x G_U^T u (looptheory/loss.py). It exists only in floats, so the
two are compared at random points and several n (including n = inf) to 1e-10 relative.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from sympy.polys.domains import QQ
from sympy.polys.rings import ring

from looptheory import Task, population_loss, population_loss_grad
from looptheory.loss import _main0, part_expansion

from .runner import CheckOutcome

D = 2
SIGMA_X = ((Fraction(2), Fraction(1, 2)), (Fraction(1, 2), Fraction(1)))
SIGMA_W = ((Fraction(1), Fraction(-1, 3)), (Fraction(-1, 3), Fraction(3, 2)))
IDENTITY = ((Fraction(1), Fraction(0)), (Fraction(0), Fraction(1)))

#: (loops, sigma_x, sigma_w, noise, with_u)
CASES = (
    (1, IDENTITY, IDENTITY, Fraction(0), False),
    (2, IDENTITY, IDENTITY, Fraction(0), False),
    (3, IDENTITY, IDENTITY, Fraction(0), False),
    (2, SIGMA_X, SIGMA_W, Fraction(1, 4), True),
    (3, SIGMA_X, SIGMA_W, Fraction(1, 4), True),
)
N_VALUES = (3, 10, 1000, float("inf"))

R, *GENS = ring("a00 a01 a10 a11 u0 u1 m", QQ)
A_GENS, U_GENS, M = GENS[:4], GENS[4:6], GENS[6]


def _mat(rows):
    return [[R(QQ(x.numerator, x.denominator)) for x in row] for row in rows]


def _mul(X, Y):
    return [[sum((X[i][k] * Y[k][j] for k in range(D)), R.zero) for j in range(D)] for i in range(D)]


def _sub(X, Y):
    return [[X[i][j] - Y[i][j] for j in range(D)] for i in range(D)]


def _transpose(X):
    return [[X[j][i] for j in range(D)] for i in range(D)]


def symbolic_loss(loops: int, sigma_x=IDENTITY, sigma_w=IDENTITY, noise=Fraction(0), with_u=False, drop_power=None):
    """The exact loss as a ring element of QQ[a00, a01, a10, a11, u0, u1, m], m = 1/n.

    drop_power: leave out the n^{-k} terms of the expansions for this k (negative controls)."""
    sx, sw = _mat(sigma_x), _mat(sigma_w)
    A = [[A_GENS[0], A_GENS[1]], [A_GENS[2], A_GENS[3]]]
    I = _mat(IDENTITY)
    mB = _mul(_transpose(A), sx)
    mBt = _mul(A, sx)
    u = [[U_GENS[0]], [U_GENS[1]]]
    uu = [[u[i][0] * u[j][0] for j in range(D)] for i in range(D)]
    zero = [[R.zero] * D for _ in range(D)]
    mats = [None, mB, mBt, _sub(I, mB), _sub(I, mBt), _mul(sw, sx), _mul(uu, sx) if with_u else zero]
    parts = [(_main0(loops), 1), (part_expansion(loops, "main"), 1)]
    if with_u:
        parts.append((part_expansion(loops, "u"), 1))
    if noise:
        parts.append((part_expansion(loops, "noise"), QQ(noise.numerator, noise.denominator)))
    prefix = {(): I}

    def trace(word):
        # Shared prefixes are multiplied once (the words of an expansion share many).
        for k in range(1, len(word) + 1):
            if word[:k] not in prefix:
                prefix[word[:k]] = _mul(prefix[word[: k - 1]], mats[word[k - 1]])
        P = prefix[word]
        return P[0][0] + P[1][1]

    total = R.zero
    for exp, weight in parts:
        traces = {(): R(D)}
        for w in exp.constant_words():
            if w:
                traces[w] = trace(w)
        for (p, words), c in exp.items():
            if p == drop_power:
                continue
            term = R(c) * weight * M**p
            for w in words:
                term = term * traces[w]
            total += term
    return total


def symbolic_gradient(loss, with_u: bool):
    """SymPy's exact differentiation of the loss polynomial (PolyElement.diff, the sparse-polynomial
    form of sympy.diff; the Expr route gives the same polynomial but is ~10x slower at L = 3)
    with respect to a_ij (and u_i)."""
    return [loss.diff(x) for x in A_GENS + (U_GENS if with_u else [])]


def _qq(x: float):
    fr = Fraction(float(x))
    return QQ(fr.numerator, fr.denominator)


def evaluate(poly, A, u, n_value):
    """Exact value of a ring element at float A, u (taken exactly) and n (inf: m = 0), as a float."""
    m = QQ(0) if n_value == float("inf") else QQ(1, int(n_value))
    vals = [_qq(x) for x in np.ravel(A)] + [_qq(x) for x in u] + [m]
    v = poly(*vals)
    return float(Fraction(int(v.numerator), int(v.denominator)))


def compare_case(loops, sigma_x, sigma_w, noise, with_u, points=3, seed=0, hand_gradient=None, drop_power=None):
    """Worst relative differences (loss, grad) between the symbolic side and the engine over
    `points` random (A, u) and every n in N_VALUES."""
    hand_gradient = hand_gradient or population_loss_grad
    loss = symbolic_loss(loops, sigma_x, sigma_w, noise, with_u, drop_power)
    grads = symbolic_gradient(loss, with_u)
    sx = np.array([[float(x) for x in r] for r in sigma_x])
    sw = np.array([[float(x) for x in r] for r in sigma_w])
    rng = np.random.default_rng(seed)
    worst_f = worst_g = 0.0
    for _ in range(points):
        A = rng.standard_normal((D, D)) * 0.6
        u = rng.standard_normal(D) * 0.5 if with_u else np.zeros(D)
        for nn in N_VALUES:
            task = Task(D, nn, sigma_x=sx, sigma_w=sw, noise=float(noise))
            f_sym = evaluate(loss, A, u, nn)
            g_sym = np.array([evaluate(g, A, u, nn) for g in grads])
            f_eng = population_loss(task, A, loops, u if with_u else None)
            _, gA, gu = hand_gradient(task, A, loops, u if with_u else None)
            g_eng = np.concatenate([np.ravel(gA), gu]) if with_u else np.ravel(gA)
            worst_f = max(worst_f, abs(f_sym - f_eng) / abs(f_sym))
            worst_g = max(worst_g, float(np.linalg.norm(g_sym - g_eng) / np.linalg.norm(g_sym)))
    return worst_f, worst_g


def engine_free_agreement(loops: int, with_u: bool) -> bool:
    """The symbolic loss (sigma_x = I, sigma_w = SIGMA_W, no noise) equals the engine-free route of
    fixed_point.exact_loss_d2 (entries of S, then Wishart moments from the MGF) as a polynomial
    in (A, u, 1/n)."""
    from .fixed_point import exact_loss_d2

    mine = symbolic_loss(loops, IDENTITY, SIGMA_W, Fraction(0), with_u)
    ref = exact_loss_d2(loops, W=SIGMA_W, with_u=with_u)
    # Same generators and domain, so the two sparse polynomials compare term by term.
    return dict(mine) == dict(ref)


def check(cases=CASES, hand_gradient=None, drop_power=None, tol=1e-10) -> CheckOutcome:
    """d = 2, L <= 3 (u = 0; and u, sigma_x, sigma_w, noise general): population_loss_grad = SymPy derivative of the exact loss polynomial, to 1e-10 relative.

    hand_gradient: replaces population_loss_grad; drop_power: drops the n^{-k} terms of the
    symbolic loss (negative controls)."""
    bad, rows = [], []
    for loops, sx, sw, noise, with_u in cases:
        wf, wg = compare_case(loops, sx, sw, noise, with_u, hand_gradient=hand_gradient, drop_power=drop_power)
        label = f"L={loops}" + (", general sigma, noise, u" if with_u else ", sigma = I, u = 0")
        rows.append(f"{label}: loss {wf:.0e}, grad {wg:.0e}")
        if wf > tol:
            bad.append(f"{label}: loss differs by {wf:.1e}")
        if wg > tol:
            bad.append(f"{label}: gradient differs by {wg:.1e}")
    for loops, with_u in ((1, False), (2, False), (2, True), (3, True)):
        if not engine_free_agreement(loops, with_u):
            bad.append(f"L={loops}{' with u' if with_u else ''}: engine loss polynomial != engine-free route")
    detail = (f"d = 2, n in {[int(x) if x != float('inf') else 'inf' for x in N_VALUES]}, 3 random points each; "
              "symbolic loss from the engine expansions (= engine-free route for L <= 3, sigma_x = I); "
              "worst relative differences: " + "; ".join(rows))
    if bad:
        detail += "; failures: " + "; ".join(bad)
    return CheckOutcome("gradient_formula", not bad, detail)
