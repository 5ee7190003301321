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
from math import gcd

import numpy as np
from sympy.polys.domains import QQ
from sympy.polys.rings import ring

from looptheory import Task, population_loss, population_loss_grad
from looptheory.loss import main0_expansion, part_expansion

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
    parts = [(main0_expansion(loops), 1), (part_expansion(loops, "main"), 1)]
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

    # Terms with the same trace words are summed first (their coefficients are polynomials in m
    # alone), and products of traces share prefixes: each big product is formed once.
    traces = {(): R(D)}
    grouped = {}
    for exp, weight in parts:
        for w in exp.constant_words():
            if w and w not in traces:
                traces[w] = trace(w)
        for (p, words), c in exp.items():
            if p == drop_power:
                continue
            grouped[words] = grouped.get(words, R.zero) + R(c) * weight * M**p
    products = {(): R.one}

    def product(words):
        for k in range(1, len(words) + 1):
            if words[:k] not in products:
                products[words[:k]] = products[words[: k - 1]] * traces[words[k - 1]]
        return products[words]

    return sum((coef * product(words) for words, coef in grouped.items() if coef), R.zero)


def symbolic_gradient(loss, with_u: bool):
    """SymPy's exact differentiation of the loss polynomial (PolyElement.diff, the sparse-polynomial
    form of sympy.diff; the Expr route gives the same polynomial but is ~10x slower at L = 3)
    with respect to a_ij (and u_i)."""
    return [loss.diff(x) for x in A_GENS + (U_GENS if with_u else [])]


def specialise(poly, A, u) -> dict:
    """A ring element at float A, u (taken exactly: a float is an integer over a power of 2) as
    {k: exact coefficient of m^k (Fraction)}: one pass over its terms in integer arithmetic
    over one common denominator, after which every n costs a few operations."""
    xs = [Fraction(float(x)) for x in list(np.ravel(A)) + list(u)]
    if len(xs) != len(R.gens) - 1:
        raise ValueError(f"A, u: expected {len(R.gens) - 1} entries in all (m is the last generator), got {len(xs)}")
    K = max(x.denominator for x in xs)  # a power of 2, a multiple of every denominator
    nums = [x.numerator * (K // x.denominator) for x in xs]
    Q = 1
    for c in poly.values():
        Q = Q * int(c.denominator) // gcd(Q, int(c.denominator))
    top = max((sum(e[:-1]) for e in poly), default=0)
    powers = [[1] for _ in nums]
    acc = {}
    for exps, c in poly.items():
        term = int(c.numerator) * (Q // int(c.denominator)) * K ** (top - sum(exps[:-1]))
        for i, e in enumerate(exps[:-1]):
            if e:
                while len(powers[i]) <= e:
                    powers[i].append(powers[i][-1] * nums[i])
                term *= powers[i][e]
        acc[exps[-1]] = acc.get(exps[-1], 0) + term
    den = Q * K**top
    return {k: Fraction(v, den) for k, v in acc.items() if v}


def at_n(coeffs: dict, n_value) -> float:
    """The specialised polynomial sum_k c_k m^k at m = 1/n (n = inf: m = 0), exactly, as a float."""
    m = Fraction(0) if n_value == float("inf") else Fraction(1, int(n_value))
    return float(sum((c * m**k for k, c in coeffs.items()), Fraction(0)))


def evaluate(poly, A, u, n_value):
    """Exact value of a ring element at float A, u (taken exactly) and n (inf: m = 0), as a float."""
    return at_n(specialise(poly, A, u), n_value)


def compare_case(loops, sigma_x, sigma_w, noise, with_u, points=3, n_values=N_VALUES, seed=0, hand_gradient=None,
                 drop_power=None):
    """Worst relative differences (loss, grad) between the symbolic side and the engine over
    `points` random (A, u) and every n in n_values."""
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
        f_at = specialise(loss, A, u)
        g_at = [specialise(g, A, u) for g in grads]
        for nn in n_values:
            task = Task(D, nn, sigma_x=sx, sigma_w=sw, noise=float(noise))
            f_sym = at_n(f_at, nn)
            g_sym = np.array([at_n(g, nn) for g in g_at])
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



#: The (loops, with_u) at which the engine's loss polynomial is compared with the engine-free
#: route (sigma_x = I, sigma_w = SIGMA_W, no noise).
ENGINE_FREE = ((1, False), (2, False), (2, True), (3, True))

#: The quick run (`looptheory verify --quick`): L <= 3 with sigma = I and u = 0, L = 2 with
#: general sigma, noise and u, at n in {3, 1000, inf} and 2 random points; the engine-free
#: route for L <= 2. The full run adds L = 3 with general sigma, noise and u (4021 terms, most
#: of its time), n = 10, a third point and the engine-free route at L = 3 with u.
QUICK = dict(cases=CASES[:4], n_values=(3, 1000, float("inf")), points=2, engine_free=ENGINE_FREE[:3])


def check(cases=CASES, n_values=N_VALUES, points=3, engine_free=ENGINE_FREE, hand_gradient=None, drop_power=None,
          tol=1e-10) -> CheckOutcome:
    """d = 2, L <= 3 (u = 0; and u, sigma_x, sigma_w, noise general): population_loss_grad = SymPy derivative of the exact loss polynomial, to 1e-10 relative.

    cases: (loops, sigma_x, sigma_w, noise, with_u); n_values, points: the n and the number of
    random (A, u) at which each case is compared; engine_free: the (loops, with_u) of the
    engine-free comparison. hand_gradient: replaces population_loss_grad; drop_power: drops the
    n^{-k} terms of the symbolic loss (negative controls)."""
    bad, rows = [], []
    for loops, sx, sw, noise, with_u in cases:
        wf, wg = compare_case(loops, sx, sw, noise, with_u, points=points, n_values=n_values,
                              hand_gradient=hand_gradient, drop_power=drop_power)
        label = f"L={loops}" + (", general sigma, noise, u" if with_u else ", sigma = I, u = 0")
        rows.append(f"{label}: loss {wf:.0e}, grad {wg:.0e}")
        if wf > tol:
            bad.append(f"{label}: loss differs by {wf:.1e}")
        if wg > tol:
            bad.append(f"{label}: gradient differs by {wg:.1e}")
    for loops, with_u in engine_free:
        if not engine_free_agreement(loops, with_u):
            bad.append(f"L={loops}{' with u' if with_u else ''}: engine loss polynomial != engine-free route")
    free = ", ".join(f"L={loops}{' with u' if with_u else ''}" for loops, with_u in engine_free)
    detail = (f"d = 2, n in {[int(x) if x != float('inf') else 'inf' for x in n_values]}, {points} random points each; "
              f"symbolic loss from the engine expansions (= engine-free route, sigma_x = I, at {free}); "
              "worst relative differences: " + "; ".join(rows))
    if bad:
        detail += "; failures: " + "; ".join(bad)
    return CheckOutcome("gradient_formula", not bad, detail)
