"""trace_moments (the four-step real-Wishart recurrence) against independent routes.

Independent routes: Gaussian integration by parts over partitions (looptheory.reference), the
chi-square moments at d = 1 and at n = 1 (rank one: tr W^k = |x|^{2k}, |x|^2 ~ chi^2_d), the
closed forms of docs/conventions.md / docs/engine.md, and the n <-> d symmetry of the
partition route itself.
"""

import functools
import math
from fractions import Fraction

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from looptheory import moments
from looptheory.reference import partition_trace_moments, partition_wishart_moments
from looptheory.moments import trace_moments, wishart_trace_moments

n_sym, d_sym = sympy.symbols("n d", positive=True)

KNOWN = {
    0: d_sym,
    1: n_sym * d_sym,
    2: n_sym * d_sym * (n_sym + d_sym + 1),
    3: n_sym * d_sym * (n_sym**2 + d_sym**2 + 3 * n_sym * d_sym + 3 * n_sym + 3 * d_sym + 4),
    4: n_sym
    * d_sym
    * (
        n_sym**3 + d_sym**3 + 6 * n_sym**2 * d_sym + 6 * n_sym * d_sym**2 + 6 * n_sym**2 + 6 * d_sym**2
        + 17 * n_sym * d_sym + 21 * n_sym + 21 * d_sym + 20
    ),
}


def chi_square_moment(k, m):
    """E (chi^2_m)^k = m (m + 2) ... (m + 2k - 2)."""
    return math.prod(m + 2 * i for i in range(k))


def test_known_polynomials_symbolic():
    got = wishart_trace_moments(4, n_sym, d_sym)
    for k, want in KNOWN.items():
        assert sympy.expand(got[k] - want) == 0, k
    # and the normalised version: E tr S~^k = E tr W^k / n^k
    s = trace_moments(4, n_sym, d_sym)
    for k, want in KNOWN.items():
        assert sympy.simplify(s[k] - want / n_sym**k) == 0, k


def test_reference_known_polynomials():
    ref = partition_trace_moments(4, n_sym, d_sym)
    for k, want in KNOWN.items():
        assert sympy.simplify(ref[k] - want / n_sym**k) == 0, k


def test_recurrence_equals_partition_route_symbolically():
    # An identity of polynomials in (n, d): covers every n, d at once for k <= 14.
    got = trace_moments(14, n_sym, d_sym)
    ref = partition_trace_moments(14, n_sym, d_sym)
    for k in range(15):
        assert sympy.expand(got[k] - ref[k]) == 0, k


def test_recurrence_equals_partition_route_as_integer_polynomials_to_k22():
    # The same identity further, compared coefficient by coefficient (no SymPy simplification).
    from looptheory.reference import _BiPoly

    N, D = _BiPoly({(1, 0): 1}), _BiPoly({(0, 1): 1})
    ref = partition_wishart_moments(22, N, D)
    got = moments._wishart_poly(22)
    for k in range(1, 23):
        assert dict(got[k].terms()) == {key: c for key, c in ref[k].terms.items()}, k


def test_mixed_symbolic_and_integer_arguments():
    got = trace_moments(8, n_sym, 3)
    ref = partition_trace_moments(8, n_sym, 3)
    assert all(sympy.expand(a - b) == 0 for a, b in zip(got, ref))
    got = trace_moments(8, 7, d_sym)
    ref = partition_trace_moments(8, 7, d_sym)
    assert all(sympy.expand(a - b) == 0 for a, b in zip(got, ref))


@functools.lru_cache(maxsize=None)
def _partition_moments(kmax, n, d):
    return tuple(partition_trace_moments(kmax, n, d))


def partition_moments(kmax, n, d):
    """partition_trace_moments(kmax, n, d), computed once per argument triple: to k = 40 the
    partition route costs about 1.7 CPU-s per (n, d), and the 20-loop cases of
    tests/test_optimal_scale.py need it at (8, 2) and (40, 4), two of the points below."""
    return list(_partition_moments(kmax, n, d))


# n > d (twice), n < d, n = 1 and d = 1
@pytest.mark.parametrize("n, d", [(8, 2), (40, 4), (1, 7), (50, 1)])
def test_recurrence_equals_partition_route_to_k40(n, d):
    assert trace_moments(40, n, d) == partition_moments(40, n, d)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 80), d=st.integers(1, 80), kmax=st.integers(0, 20))
def test_recurrence_equals_partition_route_random(n, d, kmax):
    got = trace_moments(kmax, n, d)
    assert got == partition_trace_moments(kmax, n, d)
    assert all(isinstance(x, Fraction) for x in got)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 10**6), k=st.integers(0, 200))
def test_chi_square_d1(n, k):
    assert wishart_trace_moments(k, n, 1)[k] == chi_square_moment(k, n)
    assert trace_moments(k, n, 1)[k] == Fraction(chi_square_moment(k, n), n**k)


@settings(max_examples=40, deadline=None)
@given(d=st.integers(1, 10**6), k=st.integers(1, 200))
def test_rank_one_n1(d, k):
    # n = 1: W = x x^T, tr W^k = |x|^{2k} with |x|^2 ~ chi^2_d.
    assert wishart_trace_moments(k, 1, d)[k] == chi_square_moment(k, d)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), d=st.integers(1, 40), k=st.integers(1, 16))
def test_n_d_symmetry(n, d, k):
    # E tr (X X^T)^k = E tr (X^T X)^k for k >= 1: checked on the independent partition route,
    # and on the recurrence far beyond the reference's reach.
    assert partition_wishart_moments(k, n, d)[k] == partition_wishart_moments(k, d, n)[k]
    assert wishart_trace_moments(120, n, d)[1:] == wishart_trace_moments(120, d, n)[1:]


def test_infinite_n_is_identity():
    assert trace_moments(5, math.inf, 4) == [Fraction(4)] * 6
    assert trace_moments(3, math.inf, d_sym) == [d_sym] * 4
    assert partition_trace_moments(3, math.inf, 4) == [Fraction(4)] * 4


def test_large_n_approaches_identity():
    # E tr S~^k = d + O(1/n): at n = 10^12 the deviation is tiny but exact.
    m = trace_moments(10, 10**12, 5)
    assert all(abs(float(x) - 5) < 1e-8 for x in m)
    assert all(x > 5 for x in m[2:])


def test_high_orders_run():
    """kmax = 200 at n = 10^6 computes (its cost is measured in benchmarks/bench_moments.py,
    not asserted here): every moment exceeds d and they increase with k."""
    moments._wishart_int.cache_clear()
    for n, d in [(20, 10), (10**6, 100)]:
        m = trace_moments(200, n, d)
        assert len(m) == 201 and m[0] == d and all(b > a for a, b in zip(m[1:], m[2:]))


@pytest.mark.parametrize(
    "args, exc, name",
    [
        ((-1, 3, 2), ValueError, "kmax"),
        ((2.0, 3, 2), TypeError, "kmax"),
        ((True, 3, 2), TypeError, "kmax"),
        ((3, 0, 2), ValueError, "n"),
        ((3, 2.5, 2), TypeError, "n"),
        ((3, "5", 2), TypeError, "n"),
        ((3, 5, 0), ValueError, "d"),
        ((3, 5, math.inf), TypeError, "d"),
    ],
)
def test_validation(args, exc, name):
    with pytest.raises(exc, match=f"^{name}:"):
        trace_moments(*args)


@pytest.mark.parametrize("kmax", [5, 20])
def test_memory_guard_counts_at_least_the_moments_real_size(kmax, monkeypatch):
    """The guard's estimate never undercounts: at a cap one byte below the size the moments
    really take (the list, each Fraction and its two ints), the call is refused up front."""
    import sys

    m = trace_moments(kmax, 3, 2)
    real = sys.getsizeof(m) + sum(sys.getsizeof(x) + sys.getsizeof(x.numerator) + sys.getsizeof(x.denominator) for x in m)
    monkeypatch.setenv("LOOPTHEORY_MEMORY_CAP", str(real - 1))
    with pytest.raises(ValueError, match="^kmax:.*memory cap"):
        moments.check_moment_cost(kmax, 3, 2)
