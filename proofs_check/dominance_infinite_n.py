"""Gradient dominance at n = inf (claim G2): the constant 4 L^2 d^{-(L-1)/L}, its d-threshold, and I - J_3.

At n = inf with sigma_x = sigma_w = I and u = 0 the loss is f(A) = ||(I - A^T)^L||_F^2. For a
diagonal A = diag(a_i) (and, by orthogonal invariance, any symmetric A, via its eigenvalues)

    f = sum_i (1 - a_i)^{2L},    ||grad_A f||_F^2 = 4 L^2 sum_i (1 - a_i)^{2(2L-1)}.

With s_i = (1 - a_i)^{2L} >= 0 and p = (2L-1)/L this reads ||grad f||^2 = 4 L^2 sum_i s_i^p, and
the power-mean inequality sum_i s_i^p >= d^{1-p} (sum_i s_i)^p gives

    ||grad f||_F^2 >= 4 L^2 d^{-(L-1)/L} f^{(2L-1)/L},

with equality exactly when all |1 - a_i| are equal (strict convexity of x^p for L >= 2). So the
d-free constant 1/16 of G2 fails once 4 L^2 d^{-(L-1)/L} < 1/16, i.e. d > (64 L^2)^{L/(L-1)}.
A non-symmetric A goes lower: A = I - c J_3 (J_3 the upper nilpotent 3x3 Jordan block), L = 2,
has ratio ||grad f||^2 / f^{3/2} = 8 for every c != 0, below 16 / sqrt(3) = 9.24 at d = 3.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import sympy as sp
from sympy.polys.domains import QQ
from sympy.polys.rings import ring

from .runner import CheckOutcome

G2_CONSTANT = sp.Rational(1, 16)


def constant(L, d):
    """The claimed sharp constant over symmetric A: 4 L^2 d^{-(L-1)/L}."""
    return 4 * L**2 * d ** (-(L - 1) / sp.sympify(L))


def threshold(L):
    """The claimed boundary: 4 L^2 d^{-(L-1)/L} < 1/16 iff d > (64 L^2)^{L/(L-1)}."""
    return (64 * sp.sympify(L) ** 2) ** (sp.sympify(L) / (L - 1))


@functools.lru_cache(maxsize=None)
def loss_and_grad(d: int, L: int):
    """(A, f, grad) for a generic symbolic d x d matrix A: f = ||(I - A^T)^L||_F^2 and grad the
    list of partial derivatives df/dA_ij (row-major), exact polynomials in QQ[a_ij] (SymPy's
    sparse polynomial ring: the Expr route took 4 s at d = L = 3). Differentiating the loss
    itself (not a matrix-calculus formula) keeps the check independent of any hand-derived
    gradient. A is the matrix of the symbols a_ij."""
    A = sp.Matrix(d, d, lambda i, j: sp.Symbol(f"a{i}_{j}", real=True))
    R, *gens = ring(list(A), QQ)
    a = [gens[i * d:(i + 1) * d] for i in range(d)]
    H = [[int(i == j) - a[j][i] for j in range(d)] for i in range(d)]  # I - A^T
    HL = H
    for _ in range(L - 1):
        HL = [[sum((HL[i][k] * H[k][j] for k in range(d)), R.zero) for j in range(d)] for i in range(d)]
    f = sum((e**2 for row in HL for e in row), R.zero)
    return A, f, [f.diff(g) for g in gens]


def substitute(p, images, target):
    """The ring element p with its i-th generator replaced by images[i] (elements of the ring
    `target`), powers formed once."""
    powers = [[target.one] for _ in images]
    out = target.zero
    for monom, c in p.items():
        term = target(c)
        for i, e in enumerate(monom):
            if e:
                while len(powers[i]) <= e:
                    powers[i].append(powers[i][-1] * images[i])
                term *= powers[i][e]
        out += term
    return out


def at_ring(d: int, L: int, values: sp.Matrix):
    """(T, f, ||grad f||_F^2) at the matrix `values` (entries: polynomials over QQ in any
    symbols), f and ||grad f||^2 as elements of T = QQ[the symbols of `values`]."""
    A, f, grad = loss_and_grad(d, L)
    values = sp.Matrix(values)
    syms = sorted(values.free_symbols, key=str) or [sp.Dummy("none")]
    T = ring(syms, QQ)[0]
    images = [T.from_expr(v) if v.free_symbols else T(QQ.from_sympy(v)) for v in values]
    g2 = sum((substitute(g, images, T) ** 2 for g in grad), T.zero)
    return T, substitute(f, images, T), g2


def at(d: int, L: int, values: sp.Matrix):
    """(f, ||grad f||_F^2) at the matrix `values` (entries: polynomials over QQ in any symbols),
    as SymPy expressions."""
    _, f, g2 = at_ring(d, L, values)
    return f.as_expr(), g2.as_expr()


def diagonal_formulas_hold(d: int, L: int) -> bool:
    """f and ||grad f||^2 at diag(a_i) equal the two sums (symbolic a_i); this also checks that
    the off-diagonal partial derivatives vanish there, since they enter ||grad f||^2. Compared
    as exact polynomials in the a_i."""
    a = sp.symbols(f"b0:{d}", real=True)
    T, f, g2 = at_ring(d, L, sp.diag(*a))
    return (f == T.from_expr(sum((1 - x) ** (2 * L) for x in a))
            and g2 == T.from_expr(4 * L**2 * sum((1 - x) ** (2 * (2 * L - 1)) for x in a)))


def symmetric_reduces_to_spectrum(L: int = 2) -> bool:
    """For symmetric A (2 x 2, symbolic): f = tr H^{2L} and ||grad f||^2 = 4 L^2 tr H^{2(2L-1)},
    H = I - A, i.e. functions of the eigenvalues only, so the diagonal analysis covers all
    symmetric A. Compared as exact polynomials in the entries."""
    a, b, c = sp.symbols("p q r", real=True)
    T, f, g2 = at_ring(2, L, sp.Matrix([[a, b], [b, c]]))
    ta, tb, tc = (T.from_expr(v) for v in (a, b, c))
    H = [[1 - ta, -tb], [-tb, 1 - tc]]

    def trace_power(k):
        P = H
        for _ in range(k - 1):
            P = [[P[i][0] * H[0][j] + P[i][1] * H[1][j] for j in range(2)] for i in range(2)]
        return P[0][0] + P[1][1]

    return f == trace_power(2 * L) and g2 == 4 * L**2 * trace_power(2 * (2 * L - 1))


def tangent_form(x, p):
    """h(x) = x^p - 1 - p (x - 1), the gap between x^p and its tangent at x = 1."""
    return x**p - 1 - p * (x - 1)


def tangent_identity_holds(d: int, h=tangent_form) -> bool:
    """sum s_i^p - d m^p = m^p sum_i h(s_i / m), m = mean(s), h(x) = x^p - 1 - p (x - 1),
    for symbolic p > 0: the tangent-line form of Jensen, so h >= 0 gives the power mean.
    The mean is a symbol M > 0 and the last s_{d-1} = d M - (the others), so the identity is
    one in independent symbols that expand() decides (no simplify). h(x, p): replaces the
    tangent form (negative controls)."""
    p = sp.Symbol("p", positive=True)
    M = sp.Symbol("M", positive=True)
    s = list(sp.symbols(f"s0:{d - 1}", positive=True))
    s.append(d * M - sum(s))
    expr = sum(si**p for si in s) - d * M**p - M**p * sum(h(si / M, p) for si in s)
    return sp.expand(sp.expand_power_base(expr)) == 0


def convexity_certificate():
    """h(x) = x^p - 1 - p (x - 1), p = (2L-1)/L, L = 1 + m with m > 0 symbolic:
    (h(1), h'(1), h''(x) > 0 for x > 0, h(0)). h(1) = h'(1) = 0 and h'' > 0 make x = 1 the
    unique zero of h on [0, inf), hence equality iff all s_i are equal. Each quantity is
    brought to one factored fraction (together, factor), where SymPy reads off 0 and signs."""
    m = sp.Symbol("m", positive=True)
    x = sp.Symbol("x", positive=True)
    L = 1 + m
    p = (2 * L - 1) / L
    h = tangent_form(x, p)

    def canon(e):
        return sp.factor(sp.together(e))

    return (
        canon(h.subs(x, 1)),
        canon(sp.diff(h, x).subs(x, 1)),
        canon(sp.diff(h, x, 2)).is_positive,
        canon(h.subs(x, 0)),
    )


def d2_certificate(L: int, d_power=None) -> bool:
    """An independent certificate at d = 2 with r_i = (1 - a_i)^2 >= 0: raising the inequality
    to the power L gives E(a, b) = 2^{L-1} (a^{2L-1} + b^{2L-1})^L - (a^L + b^L)^{2L-1} >= 0;
    check E = (a - b)^2 Q with all coefficients of Q positive (Q > 0 off the origin, so
    equality iff a = b). d_power overrides L - 1 (negative control)."""
    a, b = sp.symbols("a b", nonnegative=True)
    k = L - 1 if d_power is None else d_power
    E = sp.expand(2**k * (a ** (2 * L - 1) + b ** (2 * L - 1)) ** L - (a**L + b**L) ** (2 * L - 1))
    Q, r = sp.div(E, sp.expand((a - b) ** 2), a, b)
    if r != 0 or Q == 0:
        return False
    return all(c > 0 for c in sp.Poly(Q, a, b).coeffs())


def integer_threshold(L: int, thr=threshold) -> int:
    """The smallest integer d with d > thr(L)."""
    return int(sp.floor(sp.nsimplify(thr(L)))) + 1


def jordan_ratio():
    """(f, ||grad f||^2, ratio) at A = I - c J_3, L = 2, with symbolic c > 0."""
    c = sp.Symbol("c", positive=True)
    J = sp.Matrix(3, 3, lambda i, j: 1 if j == i + 1 else 0)
    f, g2 = at(3, 2, sp.eye(3) - c * J)
    return f, g2, sp.simplify(g2 / f ** sp.Rational(3, 2))


def numeric_cross_check(rng_seed: int = 0, tol: float = 1e-9):
    """Relative errors of looptheory.dominance_ratio against the closed forms."""
    from looptheory import Task, dominance_ratio

    rng = np.random.default_rng(rng_seed)
    errs = []
    for d, L in [(3, 2), (3, 3), (4, 4), (2, 5)]:
        a = rng.uniform(-0.5, 1.5, d)
        r, _ = dominance_ratio(Task(d, math.inf), np.diag(a), L)
        t = np.abs(1 - a)
        exact = 4 * L**2 * np.sum(t ** (2 * (2 * L - 1))) / np.sum(t ** (2 * L)) ** ((2 * L - 1) / L)
        errs.append(("diag", d, L, abs(r / exact - 1)))
    for d, L in [(5, 3), (7, 2)]:
        r, _ = dominance_ratio(Task(d, math.inf), 0.3 * np.eye(d), L)
        errs.append(("scalar", d, L, abs(r / (4 * L**2 * d ** (-(L - 1) / L)) - 1)))
    J = np.diag([1.0, 1.0], 1)
    r, _ = dominance_ratio(Task(3, math.inf), np.eye(3) - 0.7 * J, 2)
    errs.append(("I - 0.7 J_3", 3, 2, abs(r / 8 - 1)))
    return [e for e in errs if not e[3] < tol], errs


def derived_constant_gap(constant=constant):
    """(derived, derived - constant) for symbolic L, d: the constant the power-mean argument gives,
    4 L^2 d m^p / f^p with m = f / d and p = (2L - 1)/L, i.e. 4 L^2 d^{1-p}, and its difference
    from the claimed constant (0 when they agree)."""
    Lsym, dsym = sp.symbols("L d", positive=True)
    p = (2 * Lsym - 1) / Lsym
    derived = 4 * Lsym**2 * dsym ** (1 - p)
    return derived, sp.simplify(sp.powsimp(derived - constant(Lsym, dsym), force=True))


def threshold_failure(L: int, constant=constant, threshold=threshold):
    """(None, D) when constant(L, d) = 1/16 has the single solution threshold(L) and D, the first
    integer above it, is the first d where the constant is below 1/16 (exact decision at D and
    D - 1); else (what fails, D or None)."""
    dsym = sp.Symbol("d", positive=True)
    sols = sp.solve(sp.Eq(constant(L, dsym), G2_CONSTANT), dsym)
    if len(sols) != 1 or sp.simplify(sols[0] - threshold(L)) != 0:
        return f"L = {L}: solve gives {sols}, claimed threshold {threshold(L)}", None
    D = integer_threshold(L, threshold)
    # Exact decision at D and D - 1: d^{L-1} vs (64 L^2)^L for the stated constant.
    below = sp.simplify(constant(L, D) - G2_CONSTANT).is_negative
    not_below_prev = sp.simplify(constant(L, D - 1) - G2_CONSTANT).is_nonnegative
    if not (below and not_below_prev):
        return f"L = {L}: integer threshold {D} not the first d below 1/16", D
    return None, D


def general_threshold(constant=constant, threshold=threshold):
    """(constant at the threshold minus 1/16, d-derivative of the constant) for a symbolic loop
    count L = 1 + m > 1: 0 and a negative slope mean 1/16 fails exactly beyond the threshold."""
    m = sp.Symbol("m", positive=True)
    dsym = sp.Symbol("d", positive=True)
    on_boundary = sp.simplify(sp.powsimp(constant(1 + m, threshold(1 + m)), force=True) - G2_CONSTANT)
    slope = sp.simplify(sp.diff(constant(1 + m, dsym), dsym))
    return on_boundary, slope


#: The (d, L) cells of the full run's loss and gradient formulas and its sharpness and strictness step.
SHARPNESS_CELLS = ((2, 2), (2, 3), (3, 2), (3, 3))


def sharpness_failures(constant=constant, cells=SHARPNESS_CELLS) -> list:
    """What fails of: at A = aI (t = 1 - a symbolic) f = d t^{2L}, ||grad f||^2 = 4 L^2 d t^{2(2L-1)}
    and their ratio equals the constant (sharpness); at a diagonal A with unequal |1 - a_i| the
    ratio is strictly above it (exact algebraic numbers). Empty when everything holds."""
    fails = []
    t = sp.Symbol("t", positive=True)  # t = 1 - a
    for d, L in cells:
        f = d * t ** (2 * L)
        g2 = 4 * L**2 * d * t ** (2 * (2 * L - 1))
        f_chk, g2_chk = at(d, L, (1 - t) * sp.eye(d))
        if sp.expand(f_chk - f) != 0 or sp.expand(g2_chk - g2) != 0:
            fails.append(f"scalar-matrix loss at {(d, L)}")
        r = sp.simplify(g2 / f ** sp.Rational(2 * L - 1, L))
        if sp.simplify(r - constant(L, d)) != 0:
            fails.append(f"ratio at aI, (d, L) = {(d, L)}: {r} != constant {constant(L, d)}")
        pts = [sp.Rational(k, 7) for k in (-3, 2, 5, 9, 1, 4)][:d]
        f_u, g_u = at(d, L, sp.diag(*pts))
        gap = (g_u / f_u ** sp.Rational(2 * L - 1, L) - constant(L, d)).evalf(50)
        if not gap > 0:
            fails.append(f"not strictly above the constant at diag{tuple(pts)}, {(d, L)}: gap {gap}")
    return fails


#: The quick run (`looptheory verify --quick`): the loss and gradient formulas and the sharpness
#: at (d, L) in {(2, 2), (2, 3), (3, 2)} (the full run adds (3, 3)), the d = 2 certificates and
#: the integer thresholds at L = 2, 3 (full: L <= 5 and L <= 6); the general-L steps (tangent
#: identity, convexity, the derived constant, the threshold identity), the symmetric reduction
#: and the I - c J_3 example as in the full run.
QUICK = dict(cases=((2, 2), (2, 3), (3, 2)), cert_Ls=(2, 3), Ls=(2, 3))


def check(cases=SHARPNESS_CELLS, tangent_d=(2, 3), cert_Ls=(2, 3, 4, 5), Ls=(2, 3, 4, 5, 6),
          constant=constant, threshold=threshold) -> CheckOutcome:
    """n = inf: ||grad f||^2 >= 4 L^2 d^{-(L-1)/L} f^{(2L-1)/L} (sharp, symmetric A); 1/16 fails for d > (64 L^2)^{L/(L-1)}; I - J_3 goes lower.

    cases: the (d, L) of the loss and gradient formulas and of the sharpness at a I; tangent_d:
    the d of the tangent identity; cert_Ls: the L of the d = 2 certificates; Ls: the L whose
    integer threshold is computed. constant, threshold: the formulas under test."""
    fails, data = [], {}
    Lsym, dsym = sp.symbols("L d", positive=True)

    # 1. The loss and gradient formulas, by differentiating the loss of a generic matrix.
    for d, L in cases:
        if not diagonal_formulas_hold(d, L):
            fails.append(f"diagonal formulas at (d, L) = {(d, L)}")
    if not symmetric_reduces_to_spectrum(2):
        fails.append("symmetric A is not a function of its spectrum")

    # 2. Power mean for every d and L >= 2: the tangent identity and the convexity of h.
    for d in tangent_d:
        if not tangent_identity_holds(d):
            fails.append(f"tangent identity at d = {d}")
    h1, dh1, h2pos, h0 = convexity_certificate()
    if not (h1 == 0 and dh1 == 0 and h2pos is True and h0.is_positive):
        fails.append(f"convexity certificate (h(1), h'(1), h''>0, h(0)) = {(h1, dh1, h2pos, h0)}")
    derived, gap = derived_constant_gap(constant)
    if gap != 0:
        fails.append(f"derived constant {derived} != claimed {constant(Lsym, dsym)}")
    for L in cert_Ls:
        if not d2_certificate(L):
            fails.append(f"d = 2 polynomial certificate at L = {L}")

    # 3. Sharpness at A = aI, strictness away from it (exact algebraic numbers).
    fails += sharpness_failures(constant, cases)

    # 4. Where the d-free 1/16 fails. Solving at each L, then the general-L identity.
    thresholds = {}
    for L in Ls:
        failure, D = threshold_failure(L, constant, threshold)
        if failure:
            fails.append(failure)
        if D is not None:
            thresholds[L] = D
    on_boundary, slope = general_threshold(constant, threshold)
    if on_boundary != 0 or slope.is_negative is not True:
        fails.append(f"general L: constant at threshold - 1/16 = {on_boundary}, d-slope {slope}")
    data["integer_thresholds"] = thresholds

    # 5. The non-symmetric example: lower than the symmetric infimum at d = 3, L = 2.
    fJ, gJ, rJ = jordan_ratio()
    c3 = constant(2, 3)
    if not (rJ == 8 and sp.simplify(c3 - rJ).is_positive):
        fails.append(f"I - c J_3: ratio {rJ} (f = {fJ}, |grad|^2 = {gJ}) not below {c3}")
    data["jordan"] = {"f": str(fJ), "grad2": str(gJ), "ratio": str(rJ), "symmetric_inf_d3_L2": str(c3)}

    # 6. The project's numerical dominance ratio agrees with the closed forms.
    bad_num, errs = numeric_cross_check()
    if bad_num:
        fails.append(f"looptheory.dominance_ratio disagrees: {bad_num}")
    data["numeric_max_rel_err"] = max(e[3] for e in errs)

    detail = (
        f"f = sum (1-a_i)^{{2L}}, |grad|^2 = 4L^2 sum (1-a_i)^{{2(2L-1)}} and sharpness at a I for (d, L) in {list(cases)} "
        f"(symbolic); power mean via tangent identity (d in {list(tangent_d)}) + convexity (all d, L >= 2) and "
        f"d = 2 certificates (L in {list(cert_Ls)}); equality iff |1-a_i| equal; "
        f"1/16 fails for d >= {thresholds} (general L: the threshold identity); I - cJ_3 (L = 2) ratio {rJ} < 16/sqrt(3)"
    )
    if fails:
        detail += "; failures: " + "; ".join(fails)
    return CheckOutcome("dominance_infinite_n", not fails, detail, data=data)
