"""The proportional limit of the scalar family: n = alpha d, noise = rho d, d -> inf.

In the scalar family A = gamma sigma_x^{-1}, u = 0, with the prior sigma_w = sigma_x^{-1} (or any
prior with tr(sigma_x sigma_w) = d), the loss divided by d is (docs/derivations.md, "6.4 The scalar
line for any L")

  f(gamma) / d = (1/d) E tr (I - gamma S)^{2L} + (noise / (n d)) gamma^2 E tr(S G(S)^2),
  G(x) = sum_{k<L} (1 - gamma x)^k,

and as d -> inf with n = alpha d and noise = rho d the normalised trace moments (1/d) E tr S^k tend
to the moments of the Marchenko-Pastur law of ratio c = d / n = 1 / alpha (Marchenko and Pastur
1967; the Narayana polynomials, e.g. Bai and Silverstein, Spectral Analysis of Large Dimensional
Random Matrices, 2010, Lemma 3.1):

  m_k = sum_{r=0}^{k-1} C(k, r) C(k-1, r) / (r + 1) c^r,

while noise / (n d) = rho / alpha. So the limit is the polynomial

  F(gamma) = sum_i C(2L, i) (-gamma)^i m_i + (rho / alpha) gamma sum_j r_j gamma^j m_j,
  r(x) = x q(x)^2,  q(x) = sum_{j<L} (-1)^j C(L, j + 1) x^j

(the same coefficients as `optimum._loss_polynomial`, with the Marchenko-Pastur moments and
rho / alpha in place of noise / n). Its coefficients are rational for rational alpha and rho, and
its global minimiser lies in (0, 2) (the argument of `optimal_scale`: by Jensen, F(gamma) >=
(1 - gamma)^{2L} > 1 = F(0) outside [0, 2], and F'(0) = -2L < 0). `scalar_family_limit` isolates
every real root of F' there exactly (SymPy's isolating intervals over the rationals), refines
each to width 10^-(digits + 20), compares F at each with mpmath at that precision, and returns
the minimiser and the minimum exactly (Fractions) when the minimiser is rational (recognised as
the one fraction of denominator below 10^(digits/2 + 9) in its interval, and checked by exact
evaluation of F'), else to the requested number of digits (mpmath).

When is it rational: at rho = 0, x dMP(x) is a semicircle centred at 1 + c (the density of MP is
sqrt((b - x)(x - a)) / (2 pi c x) on [a, b] = [(1 - sqrt c)^2, (1 + sqrt c)^2], plus an atom at 0
that x removes), so F'(gamma) = -2L int x (1 - gamma x)^{2L-1} dMP vanishes at gamma = 1 / (1 + c)
= alpha / (alpha + 1) for every L (the odd central moments of a symmetric law vanish), and F is
convex: the minimiser is alpha / (alpha + 1), rational. With rho > 0 it is rational at L = 1,
gamma = alpha / (alpha + 1 + rho), and in general algebraic.

At L = 1, F* = (1 + rho) / (alpha + 1 + rho). Lu, Letey, Zavatone-Veth, Maiti and Pehlevan
(PNAS 2025) report the infinite-task limit of linear attention with an extra "+ rho" from the
noise of the query's label; looptheory's target y_q = <w*, x_q> is noiseless (docs/conventions.md,
"Data"), so the two agree after that term is removed (docs/derivations.md, "10. The proportional
limit of the scalar family").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from math import comb

import numpy as np

from . import _validate as V

__all__ = ["LimitResult", "marchenko_pastur_moments", "limit_loss_polynomial", "scalar_family_limit",
           "scalar_family_convergence"]

#: Loop counts above this are refused (the exact root isolation of a degree 2L - 1 polynomial
#: takes seconds at 50 loops and grows quickly).
MAX_LIMIT_LOOPS = 100


@dataclass(frozen=True)
class LimitResult:
    """The proportional limit's optimum: gamma, the minimiser of F, and loss_per_d = F(gamma) =
    lim f* / d; Fractions when exact (the minimiser is rational), else mpmath numbers with
    `digits` significant digits. alpha, rho: the exact inputs (Fractions)."""

    alpha: Fraction
    loops: int
    rho: Fraction
    gamma: object
    loss_per_d: object
    exact: bool
    digits: int


def _positive_rational(name, x, allow_zero=False):
    v = V.real_scalar(name, x)
    f = v if isinstance(v, Fraction) else Fraction(v)
    if f < 0 or (f == 0 and not allow_zero):
        raise ValueError(f"{name}: expected a number {'>= 0' if allow_zero else '> 0'}, got {V.number_text(x)}")
    return f


def marchenko_pastur_moments(kmax: int, c) -> list:
    """[m_0 .. m_kmax] of the Marchenko-Pastur law of ratio c (Fraction or int; the Narayana
    polynomials of the module docstring): m_0 = 1, m_1 = 1, m_2 = 1 + c, m_3 = 1 + 3c + c^2."""
    c = Fraction(c)
    return [Fraction(1)] + [sum((Fraction(comb(k, r) * comb(k - 1, r), r + 1) * c**r for r in range(k)), Fraction(0))
                            for k in range(1, kmax + 1)]


def limit_loss_polynomial(alpha, loops: int, rho=0) -> list:
    """Coefficients F_0 .. F_{2L} of F(gamma) = lim f(gamma) / d (module docstring), exact."""
    alpha = _positive_rational("alpha", alpha)
    rho = _positive_rational("rho", rho, allow_zero=True)
    L = V.positive_int("loops", loops)
    m = marchenko_pastur_moments(2 * L, 1 / alpha)
    a = [comb(2 * L, i) * (-1) ** i * m[i] for i in range(2 * L + 1)]
    if rho:
        q = [(-1) ** j * comb(L, j + 1) for j in range(L)]
        r = [0] * (2 * L)
        for i, qi in enumerate(q):
            for j, qj in enumerate(q):
                r[i + j + 1] += qi * qj
        for j in range(1, 2 * L):
            a[j + 1] += rho / alpha * r[j] * m[j]
    return a


def scalar_family_limit(alpha, loops: int, rho=0, digits: int = 30) -> LimitResult:
    """The optimal scale gamma and the optimal loss divided by d of the scalar family in the
    proportional limit n = alpha d, noise = rho d, d -> inf (module docstring).

    alpha > 0 and rho >= 0: ints, Fractions, SymPy Rationals or floats (a float is taken exactly
    as the binary number it is); loops: 1 to MAX_LIMIT_LOOPS; digits: the precision of a result
    that is not rational. Exact (Fractions) when the minimiser is rational: at rho = 0 for
    every L (gamma = alpha / (alpha + 1)), and at L = 1 (gamma = alpha / (alpha + 1 + rho))."""
    import mpmath
    import sympy

    alpha = _positive_rational("alpha", alpha)
    rho = _positive_rational("rho", rho, allow_zero=True)
    L = V.positive_int("loops", loops)
    if L > MAX_LIMIT_LOOPS:
        raise ValueError(f"loops: at most MAX_LIMIT_LOOPS = {MAX_LIMIT_LOOPS}, got {L}")
    digits = V.positive_int("digits", digits)
    a = limit_loss_polynomial(alpha, L, rho)
    g = sympy.Symbol("g")
    F = sympy.Poly([sympy.Rational(x.numerator, x.denominator) for x in reversed(a)], g, domain="QQ")
    D = F.diff(g)
    prec = digits + 20
    eps = sympy.Rational(1, 10**prec)
    # isolating intervals of D's real roots in [0, 2] (exact, Vincent-Akritas-Strzebonski), each
    # refined to width 10^-prec; a rational root is recognised exactly (below)
    crit = []
    for (lo, hi), _ in D.intervals(inf=0, sup=2):
        if lo != hi:
            lo, hi = D.refine_root(lo, hi, eps=eps)
        if 0 < hi and lo < 2:
            crit.append(_exact_or_interval(D, Fraction(int(lo.p), int(lo.q)), Fraction(int(hi.p), int(hi.q)), prec))
    if not crit:  # impossible by the argument in the module docstring; a loud guard
        raise ArithmeticError("scalar_family_limit: no critical point in (0, 2)")
    coeffs = [Fraction(x) for x in a]
    with mpmath.workdps(prec):
        def value(r):
            x = mpmath.mpf(r.numerator) / r.denominator
            return mpmath.polyval([mpmath.mpf(c.numerator) / c.denominator for c in reversed(coeffs)], x)

        best = min(crit, key=lambda r: value(r[0]))
        gam, is_exact = best
        if is_exact:
            return LimitResult(alpha, L, rho, gam, sum((c * gam**i for i, c in enumerate(coeffs)), Fraction(0)), True, digits)
        val = value(gam)
    with mpmath.workdps(digits):
        return LimitResult(alpha, L, rho, +(mpmath.mpf(gam.numerator) / gam.denominator), +val, False, digits)


def _exact_or_interval(D, lo, hi, prec):
    """(root, True) for a root of D known to lie in [lo, hi] that is a rational number with a
    denominator below 10^(prec/2 - 1) (the unique such fraction in an interval this narrow,
    checked by exact evaluation), else (the midpoint, False)."""
    if lo == hi:
        return lo, True
    mid = (lo + hi) / 2
    cand = mid.limit_denominator(10 ** (prec // 2 - 1))
    if lo <= cand <= hi and D.eval(cand) == 0:
        return cand, True
    return mid, False


def scalar_family_convergence(alpha, loops: int, rho=0, ds=(8, 16, 32, 64, 128)) -> dict:
    """The finite-d exact optima of the scalar family at n = alpha d, noise = rho d
    (`optimum.optimal_scale` and `scale_loss` on Task(d, alpha d, noise=rho d), sigma_x =
    sigma_w = I) against the limit: {"limit": LimitResult, "rows": [{d, n, gamma_d,
    loss_per_d, error}], "rate": the slope of log |f*_d / d - F*| against log d over the rows
    (a least-squares fit; about -1 for an O(1/d) approach)}. alpha d must be an integer for every d."""
    from .optimum import optimal_scale, scale_loss
    from .task import Task

    lim = scalar_family_limit(alpha, loops, rho)
    ds = [V.positive_int("ds", d) for d in ds]
    if len(ds) < 2:
        raise ValueError("ds: expected at least two dimensions (the rate is a fit)")
    rows = []
    for d in ds:
        n = lim.alpha * d
        if n.denominator != 1:
            raise ValueError(f"ds: alpha d must be an integer, got alpha = {lim.alpha} and d = {d}")
        task = Task(d, int(n), noise=lim.rho * d)
        g = optimal_scale(task, lim.loops)
        f = scale_loss(task, lim.loops, g) / d
        rows.append({"d": d, "n": int(n), "gamma_d": g, "loss_per_d": f, "error": abs(f - float(lim.loss_per_d)),
                     "gamma_error": abs(g - float(lim.gamma))})
    err = np.array([r["error"] for r in rows])
    ok = err > 0
    rate = float(np.polyfit(np.log([r["d"] for r in rows])[ok], np.log(err[ok]), 1)[0]) if ok.sum() >= 2 else math.nan
    return {"limit": lim, "rows": rows, "rate": rate}
