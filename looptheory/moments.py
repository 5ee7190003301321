"""Exact trace moments of the normalised real Wishart matrix, by a recurrence in k.

S~ = X X^T / n with X a d x n matrix of i.i.d. N(0, 1) entries, so W = n S~ ~ Wishart_d(n, I)
(the Laguerre orthogonal ensemble). Write M_k = E tr W^k; then E tr S~^k = M_k / n^k.
M_k is a polynomial in (n, d) with integer coefficients, symmetric under n <-> d because
tr (X X^T)^k = tr (X^T X)^k for k >= 1.

The recurrence (k >= 4), with s = n + d and a = n - d:

  (k + 1) M_k = (s - 1)(4k - 1) M_{k-1}
              + [5k^3 - 16k^2 - (4s^2 + 2a^2 - 8s - 13) k + 6s^2 + 3a^2 - 12s - 1] M_{k-2}
              - (s - 1)[10k^3 - 68k^2 - (4a^2 - 150) k + 11a^2 - 107] M_{k-3}
              - (k - 4)((k - 2)^2 - a^2)((2k - 7)^2 - a^2) M_{k-4},

started from M_0 = d, M_1 = n d, M_2 = n d (n + d + 1), M_3 = n d (n^2 + d^2 + 3nd + 3n + 3d + 4).
It is the real-Wishart analogue of Ledoux's five-term recursion for GOE moments (Ledoux 2009,
Ann. IHP 45, 754-769; compare its first term (4p - 1)(2N - 1)), and plays the role the
three-term Haagerup-Thorbjornsen recursion plays for complex Wishart. We obtained the
coefficients by fitting an order-4 ansatz with coefficients of degree 5 in k to moments from the
independent partition route (looptheory/reference.py) and then checked it, not just
fitted it: it holds as an identity of polynomials in (n, d) for every k <= 24, at integer
(n, d) in {1..5, 7, 10, 50} x {1..5, 8, 13, 100} up to k = 32, and at d = 1 and n = 1 it
reproduces the chi-square moments m (m + 2) ... (m + 2k - 2) up to k = 200
(tests/test_moments.py repeats these checks). That is strong evidence, not a proof for every k;
the exact division by k + 1 is asserted at every step, a free consistency check.
"""

from __future__ import annotations

import math
import numbers
from fractions import Fraction
from functools import lru_cache

from . import _validate as V

__all__ = ["trace_moments", "wishart_trace_moments", "check_moment_cost", "MAX_SYMBOLIC_KMAX"]


def _recurrence_coefficients(k: int, n, d):
    """(P1, P2, P3, P4) with (k + 1) M_k = P1 M_{k-1} + P2 M_{k-2} + P3 M_{k-3} + P4 M_{k-4}.

    n and d may be ints or SymPy Polys: only ring operations are used.
    """
    s = n + d
    a2 = (n - d) ** 2
    p1 = (s - 1) * (4 * k - 1)
    p2 = (5 * k**3 - 16 * k**2 + 13 * k - 1) - (4 * k - 6) * s**2 - (2 * k - 3) * a2 + (8 * k - 12) * s
    p3 = -(s - 1) * ((10 * k**3 - 68 * k**2 + 150 * k - 107) + (11 - 4 * k) * a2)
    p4 = -(k - 4) * ((k - 2) ** 2 - a2) * ((2 * k - 7) ** 2 - a2)
    return p1, p2, p3, p4


def _initial_moments(n, d):
    """M_0..M_3, the exact low moments (docs/conventions.md and the chi-square check at d = 1)."""
    return [
        d * 1,
        n * d,
        n * d * (n + d + 1),
        n * d * (n**2 + d**2 + 3 * n * d + 3 * n + 3 * d + 4),
    ]


@lru_cache(maxsize=64)
def _wishart_int(kmax: int, n: int, d: int) -> tuple:
    """(M_0, ..., M_kmax) for integer n, d; exact Python ints."""
    m = _initial_moments(n, d)[: kmax + 1]
    for k in range(4, kmax + 1):
        p1, p2, p3, p4 = _recurrence_coefficients(k, n, d)
        q, r = divmod(p1 * m[k - 1] + p2 * m[k - 2] + p3 * m[k - 3] + p4 * m[k - 4], k + 1)
        if r:
            raise ArithmeticError(f"real-Wishart recurrence: non-integer moment at k = {k} (n = {n}, d = {d})")
        m.append(q)
    return tuple(m)


@lru_cache(maxsize=8)
def _wishart_poly(kmax: int) -> tuple:
    """(M_0, ..., M_kmax) as SymPy Polys in two generic generators (N, D) over the integers."""
    import sympy

    N, D = sympy.symbols("N D")
    n = sympy.Poly(N, N, D, domain="ZZ")
    d = sympy.Poly(D, N, D, domain="ZZ")
    m = _initial_moments(n, d)[: kmax + 1]
    for k in range(4, kmax + 1):
        p1, p2, p3, p4 = _recurrence_coefficients(k, n, d)
        # exquo_ground raises if k + 1 does not divide every coefficient: the same check as above.
        m.append((p1 * m[k - 1] + p2 * m[k - 2] + p3 * m[k - 3] + p4 * m[k - 4]).exquo_ground(k + 1))
    return tuple(m)


def _poly_to_expr(poly, n, d, shift: int):
    """The SymPy expression sum c n^(i - shift) d^j of a Poly sum c N^i D^j; building it term by
    term is much faster than substituting into the Poly's expression and expanding."""
    import sympy

    n, d = sympy.sympify(n), sympy.sympify(d)
    return sympy.expand(sympy.Add(*[c * n ** (i - shift) * d**j for (i, j), c in poly.terms()]))


def _is_symbolic(x) -> bool:
    return type(x).__module__.startswith("sympy") and not getattr(x, "is_Number", False)


def _check_kmax(kmax) -> int:
    if isinstance(kmax, bool) or not isinstance(kmax, numbers.Integral):
        raise TypeError(f"kmax: expected a non-negative integer, got {kmax!r}")
    if kmax < 0:
        raise ValueError(f"kmax: expected a non-negative integer, got {kmax}")
    return int(kmax)


def _check_size(name: str, value, *, allow_inf: bool):
    """An int >= 1 (SymPy Integers and integral floats accepted), math.inf if allowed, or a
    SymPy symbol/expression, returned unchanged."""
    if _is_symbolic(value):
        return value
    if type(value).__module__.startswith("sympy"):
        import sympy

        if allow_inf and value == sympy.oo:
            return math.inf
        if getattr(value, "is_Integer", False):
            value = int(value)
    if isinstance(value, float) and math.isinf(value) and value > 0 and allow_inf:
        return math.inf
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        kind = "an integer >= 1 or math.inf" if allow_inf else "an integer >= 1"
        raise TypeError(f"{name}: expected {kind} (or a SymPy symbol), got {value!r}")
    if value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value}")
    return int(value)


# Limits (docs/user-guide.md, "Limits and errors"). The moments are exact integers of about
# 2 k log2(n + d) bits, so kmax moments hold about kmax^2 log2(n + d) bits, checked against the
# memory cap. trace_moments also reduces each M_k / n^k to lowest terms, a gcd of two
# k log2(n + d)-bit integers: its cost grows like kmax^3 log2(n + d)^2, measured at 13 s for
# kmax = 4000, n = 10^6, d = 100 on this machine, so it is capped at _MAX_GCD_WORK (about a
# minute). SymPy symbols: the polynomial route is slow beyond a few dozen (14 s at kmax = 60).
_MAX_GCD_WORK = 1e14
_GCD_WORK_PER_SECOND = 1e12  # measured: 2.6 s at kmax = 4000, n = 20, d = 10
MAX_SYMBOLIC_KMAX = 64


def _bits(n, d) -> float:
    """log2 of the recurrence's growth per step, about log2 of (sqrt n + sqrt d)^2 <= 4 max(n, d)."""
    return math.log2(4 * max(n, d))


def check_moment_cost(kmax: int, n, d, reduce: bool = True) -> None:
    """Refuse up front (ValueError naming kmax) moments up to kmax at (n, d) whose memory is above
    the cap or, with reduce (trace_moments' reduction to lowest terms), whose cost is above about a
    minute; SymPy symbols allow kmax <= MAX_SYMBOLIC_KMAX. See the comment above for the model."""
    if not _is_symbolic(n) and n == math.inf:  # every moment is d
        V.check_memory("kmax", f"moments up to kmax = {V.number_text(kmax)}", 128 * (float(min(kmax, 10**30)) + 1),
                       "about 128 bytes per moment")
        return
    if _is_symbolic(n) or _is_symbolic(d):
        if kmax > MAX_SYMBOLIC_KMAX:
            raise ValueError(f"kmax: with SymPy symbols for n or d the moments are polynomials whose cost grows "
                             f"like kmax^3 (14 s at kmax = 60); the limit is kmax <= {MAX_SYMBOLIC_KMAX}, got {kmax}")
        return
    b = _bits(n, d)
    k = float(min(kmax, 10**30))  # estimates only: keeps float arithmetic from overflowing
    what = f"moments up to kmax = {V.number_text(kmax)} at n = {V.number_text(n)}, d = {V.number_text(d)}"
    V.check_memory("kmax", what, k * k * b / 4 + 128 * (k + 1), "kmax^2 x log2(4 max(n, d)) / 4 bytes of exact integers")
    work = k**3 * b * b
    if reduce and work > _MAX_GCD_WORK:
        secs = work / _GCD_WORK_PER_SECOND
        took = f"{secs / 3600:.2g} hours" if secs > 5400 else f"{secs / 60:.2g} minutes"
        raise ValueError(f"kmax: {what} would take about {took} (reducing M_k / n^k to lowest terms costs about "
                         f"kmax^3 log2(4 max(n, d))^2 = {work:.2g}, above the limit {_MAX_GCD_WORK:.0e}, about a "
                         f"minute); use a smaller kmax, or wishart_trace_moments for the integers E tr W^k")


def wishart_trace_moments(kmax: int, n, d) -> list:
    """[E tr W^k for k = 0..kmax], W = X X^T ~ Wishart_d(n, I), X d x n with i.i.d. N(0, 1).

    Integer n, d give exact Python ints; SymPy symbols/expressions give SymPy polynomials in them.
    Computed by the four-step recurrence of the module docstring: O(kmax) big-integer
    operations. Limits: the kmax^2 log2(4 max(n, d)) / 4 bytes of the result must fit in the
    memory cap; symbolic n or d allow kmax <= MAX_SYMBOLIC_KMAX (ValueError naming kmax).
    """
    kmax = _check_kmax(kmax)
    n = _check_size("n", n, allow_inf=False)
    d = _check_size("d", d, allow_inf=False)
    check_moment_cost(kmax, n, d, reduce=False)
    if _is_symbolic(n) or _is_symbolic(d):
        return [_poly_to_expr(p, n, d, 0) for p in _wishart_poly(kmax)]
    return list(_wishart_int(kmax, n, d))


def trace_moments(kmax: int, n, d) -> list:
    """The exact list [E tr S~^k for k = 0..kmax], S~ = X X^T / n, X d x n with i.i.d. N(0, 1).

    Convention: n S~ = W ~ Wishart_d(n, I) (docs/conventions.md, "The population loss in closed form"), so
    E tr S~^k = E tr W^k / n^k and E tr S~^0 = d.

    - Python ints n >= 1, d >= 1: fractions.Fraction values.
    - n = math.inf: S~ = I, so every entry is d (a Fraction, or d itself if d is symbolic).
    - SymPy symbols (or expressions) for n and/or d: SymPy expressions, polynomials in 1/n and d
      (fine for k up to a few dozen; the numeric path is the fast one).

    Cost: kmax steps of a four-term integer recurrence (module docstring), so k = 200 takes a
    few milliseconds even at n = 10^6; reducing each moment to lowest terms grows like
    kmax^3 log2(4 max(n, d))^2 (13 s at kmax = 4000, n = 10^6). Limits (ValueError naming kmax):
    that cost at most 1e14 (about a minute; kmax up to about 5000 at n = 10^6, 2000 at
    n = 10^30), the result within the memory cap, and kmax <= MAX_SYMBOLIC_KMAX for symbols.
    n may be any integer (10**400 too) or math.inf.
    """
    kmax = _check_kmax(kmax)
    n = _check_size("n", n, allow_inf=True)
    d = _check_size("d", d, allow_inf=False)
    check_moment_cost(kmax, n, d, reduce=True)
    if not _is_symbolic(n) and n == math.inf:
        if _is_symbolic(d):
            return [d for _ in range(kmax + 1)]
        return [Fraction(d) for _ in range(kmax + 1)]
    if _is_symbolic(n) or _is_symbolic(d):
        return [_poly_to_expr(p, n, d, k) for k, p in enumerate(_wishart_poly(kmax))]
    raw = _wishart_int(kmax, n, d)
    out = []
    scale = 1
    for m in raw:
        out.append(Fraction(m, scale))
        scale *= n
    return out
