"""Slow, independent reference for the real-Wishart trace moments (the partition route).

Used only to check `looptheory.moments.trace_moments` (and later merged into
`looptheory/reference.py`). Nothing here is clever on purpose: it is Gaussian integration by
parts (exact-expectations.md, "One step of Gaussian integration by parts") specialised to words
made of the single letter W = X X^T, X a d x n matrix of i.i.d. N(0, 1) entries.

With only W letters a product of traces prod_j tr W^{p_j} is determined by the multiset
{p_j}, an integer partition, and Stein's identity applied to the first factor tr W^p
(p >= 1) with the rest F = prod_{q in rest} tr W^q gives

  E[tr W^p F] = (n + p - 1) E[tr W^{p-1} F]
              + sum_{a=0}^{p-2} E[tr W^{a+1} tr W^{p-2-a} F]
              + sum_{q in rest} 2 q E[tr W^{p+q-1} F / tr W^q],

with tr W^0 = d. (The three lines are: the trace term plus the (p - 1) "R1^T S R2" terms,
the (p - 1) splittings "tr(R1 S) tr(R2)", and the 2q ways to join another factor.) Every term
has one W fewer, so the recursion ends at the empty product, whose expectation is 1.
Memoising on the sorted partition makes the cost the number of partitions of m < k,
sum_{m<k} p(m): fine up to k of about 30 for numbers, about 14 for exact polynomials.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache


class _BiPoly:
    """A polynomial in two commuting indeterminates N, D with integer coefficients,
    stored as {(i, j): c} for c N^i D^j. Only the ring operations the recursion needs."""

    __slots__ = ("terms",)

    def __init__(self, terms=None):
        self.terms = {k: v for k, v in (terms or {}).items() if v}

    @staticmethod
    def _lift(other):
        if isinstance(other, _BiPoly):
            return other
        if isinstance(other, int):
            return _BiPoly({(0, 0): other})
        return NotImplemented

    def __add__(self, other):
        other = self._lift(other)
        if other is NotImplemented:
            return other
        out = dict(self.terms)
        for k, v in other.terms.items():
            out[k] = out.get(k, 0) + v
        return _BiPoly(out)

    __radd__ = __add__

    def __mul__(self, other):
        other = self._lift(other)
        if other is NotImplemented:
            return other
        out: dict = {}
        for (i1, j1), c1 in self.terms.items():
            for (i2, j2), c2 in other.terms.items():
                key = (i1 + i2, j1 + j2)
                out[key] = out.get(key, 0) + c1 * c2
        return _BiPoly(out)

    __rmul__ = __mul__

    def __eq__(self, other):
        other = self._lift(other)
        return other is not NotImplemented and self.terms == other.terms

    def to_sympy(self, n, d):
        import sympy

        return sympy.Add(*[c * n**i * d**j for (i, j), c in self.terms.items()])


def _wishart_partition_moments(kmax: int, n, d) -> list:
    """[E tr W^k for k = 0..kmax], W ~ Wishart_d(n, I), in the ring of n and d (ints or _BiPoly)."""

    @lru_cache(maxsize=None)
    def expect(state: tuple):
        # state: a partition with parts >= 1 in decreasing order; the empty one has E = 1.
        if not state:
            return 1
        p, rest = state[0], state[1:]
        total = (n + (p - 1)) * expect_with(rest, p - 1)
        for a in range(p - 1):
            total = total + expect_with(expect_key(rest, a + 1), p - 2 - a)
        seen = set()
        for idx, q in enumerate(rest):
            # Equal parts give equal terms: count each distinct part once, times its multiplicity.
            if q in seen:
                continue
            seen.add(q)
            mult = rest.count(q)
            others = rest[:idx] + rest[idx + 1:]
            total = total + (2 * q * mult) * expect_with(others, p + q - 1)
        return total

    def expect_key(parts: tuple, extra: int) -> tuple:
        return tuple(sorted(parts + (extra,), reverse=True))

    def expect_with(parts: tuple, extra: int):
        # A factor tr W^0 = d is pulled out as a number rather than kept in the state.
        if extra == 0:
            return d * expect(parts)
        return expect(expect_key(parts, extra))

    out = [d * 1]
    for k in range(1, kmax + 1):
        out.append(expect((k,)))
    return out


def _is_symbolic(x) -> bool:
    return type(x).__module__.startswith("sympy") and not getattr(x, "is_Number", False)


def partition_trace_moments(kmax: int, n, d) -> list:
    """The slow reference for [E tr S~^k for k = 0..kmax], S~ = X X^T / n (X d x n, i.i.d. N(0, 1)).

    E tr S~^k = E tr W^k / n^k with W = n S~ ~ Wishart_d(n, I), computed by Gaussian integration
    by parts over integer partitions (module docstring). Python ints n >= 1, d >= 1 give
    fractions.Fraction values; n = math.inf gives d for every k (S~ = I); SymPy symbols (or
    expressions) for n and/or d give SymPy expressions, polynomials in 1/n and d. Exponential in
    kmax: a test oracle, not an engine.
    """
    if isinstance(kmax, bool) or not isinstance(kmax, int):
        raise TypeError(f"kmax: expected a non-negative integer, got {kmax!r}")
    if kmax < 0:
        raise ValueError(f"kmax: expected a non-negative integer, got {kmax}")
    sym_n, sym_d = _is_symbolic(n), _is_symbolic(d)
    if not sym_n and n == math.inf:
        if sym_d:
            return [d for _ in range(kmax + 1)]
        return [Fraction(int(d)) for _ in range(kmax + 1)]
    if sym_n or sym_d:
        N = _BiPoly({(1, 0): 1}) if sym_n else int(n)
        D = _BiPoly({(0, 1): 1}) if sym_d else int(d)
        import sympy

        raw = _wishart_partition_moments(kmax, N, D)
        out = []
        for k, m in enumerate(raw):
            m = _BiPoly._lift(m)
            out.append(sympy.expand(m.to_sympy(n, d) / sympy.sympify(n) ** k))
        return out
    n, d = int(n), int(d)
    if n < 1:
        raise ValueError(f"n: expected an integer >= 1 or math.inf, got {n}")
    if d < 1:
        raise ValueError(f"d: expected an integer >= 1, got {d}")
    return [Fraction(m, n**k) for k, m in enumerate(_wishart_partition_moments(kmax, n, d))]


def partition_wishart_moments(kmax: int, n, d) -> list:
    """[E tr W^k for k = 0..kmax] for W ~ Wishart_d(n, I) with integer n, d (exact ints), or
    _BiPoly polynomials when n, d are given as _BiPoly indeterminates. The raw reference."""
    return _wishart_partition_moments(kmax, n, d)
