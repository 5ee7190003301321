"""Tests of the slow reference implementations in looptheory.reference.

Known closed forms (docs/engine.md, docs/conventions.md), chi-square moments, a Monte Carlo
check of each route, and a cross-check of the two routes against each other through the
whitened closed form of the loss.
"""

import functools
import math
from fractions import Fraction as F

import numpy as np
import pytest
import sympy as sp

import looptheory as lt
from looptheory.reference import isserlis_loss, wick_expectation

n_, d_ = sp.symbols("n d", positive=True)


def frac_matrix(rows):
    return np.array([[F(x) for x in row] for row in rows], dtype=object)


def random_frac_matrix(rng, shape, scale, den=10):
    return np.array([F(int(k), den) for k in rng.integers(-scale, scale + 1, size=shape).ravel()], dtype=object).reshape(shape)


def fmat(M):
    return np.array(M, dtype=float)


# ------------------------------------------------------------------------------------------
# wick_expectation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "k, expected",
    [
        (2, n_ * d_ * (n_ + d_ + 1)),
        (3, n_ * d_ * (n_**2 + d_**2 + 3 * n_ * d_ + 3 * n_ + 3 * d_ + 4)),
        (
            4,
            n_ * d_ * (n_**3 + d_**3 + 6 * n_**2 * d_ + 6 * n_ * d_**2 + 6 * n_**2 + 6 * d_**2
                       + 17 * n_ * d_ + 21 * n_ + 21 * d_ + 20),
        ),
    ],
)
def test_wishart_trace_moments_symbolic(k, expected):
    # W = n S, so E tr W^k = n^k E tr S^k.
    got = wick_expectation([["S"] * k], n=n_, d=d_)
    assert sp.expand(n_**k * got - expected) == 0


@pytest.mark.parametrize("k", range(1, 8))
def test_chi_square_moments(k):
    got = wick_expectation([["S"] * k], n=n_, d=1)
    expected = sp.prod([n_ + 2 * j for j in range(k)])
    assert sp.expand(n_**k * got - expected) == 0


def test_wishart_trace_moment_exact_numbers():
    n, d = 5, 3
    got = wick_expectation([["S", "S", "S"]], n=n, d=d)
    assert isinstance(got, F)
    assert got * n**3 == n * d * (n**2 + d**2 + 3 * n * d + 3 * n + 3 * d + 4)


def test_two_constant_letters_formula():
    rng = np.random.default_rng(20240601)
    d = 3
    B1 = random_frac_matrix(rng, (d, d), 9, den=3)
    B2 = random_frac_matrix(rng, (d, d), 9, den=4)
    letters = {"B1": B1, "B2": B2}
    t12, t12t = np.trace(B1 @ B2), np.trace(B1 @ B2.T)
    tr1, tr2 = np.trace(B1), np.trace(B2)
    # Symbolic n with exact constant letters.
    got = wick_expectation([["B1", "S", "B2", "S"]], letters, n=n_)
    expected = n_**2 * sp.Rational(t12) + n_ * sp.Rational(t12t) + n_ * sp.Rational(tr1 * tr2)
    assert sp.expand(n_**2 * got - expected) == 0
    for n in (1, 2, 7):
        got = wick_expectation([["B1", "S", "B2", "S"]], letters, n=n)
        assert isinstance(got, F)
        assert got * n**2 == n**2 * t12 + n * t12t + n * tr1 * tr2
    # Float letters give a float of the same value.
    gotf = wick_expectation([["B1", "S", "B2", "S"]], {k: fmat(v) for k, v in letters.items()}, n=4.0)
    assert isinstance(gotf, float)
    assert gotf == pytest.approx(float((16 * t12 + 4 * t12t + 4 * tr1 * tr2) / 16), rel=1e-12)


def test_wick_against_monte_carlo():
    # Non-symmetric constant letters, a product of two traces, 5 copies of S.
    rng = np.random.default_rng(7)
    d, n, samples = 3, 4, 200_000
    B = rng.normal(size=(d, d))
    C = rng.normal(size=(d, d))
    letters = {"B": B, "C": C, "Bt": B.T}
    factors = [["B", "S", "C", "S", "S"], ["S", "Bt", "S"]]
    exact = wick_expectation(factors, letters, n=n)

    X = rng.standard_normal((samples, d, n))
    S = X @ np.swapaxes(X, 1, 2) / n
    t1 = np.einsum("bii->b", B @ S @ C @ S @ S)
    t2 = np.einsum("bii->b", S @ B.T @ S)
    vals = t1 * t2
    mean, se = vals.mean(), vals.std(ddof=1) / math.sqrt(samples)
    assert abs(mean - exact) < 5 * se, (mean, se, exact)


def test_wick_validation():
    with pytest.raises(ValueError, match="^factors"):
        wick_expectation([["S"] * 8], n=3, d=2)
    with pytest.raises(ValueError, match="^d"):
        wick_expectation([["S"]], n=3)
    with pytest.raises(ValueError, match="^factors"):
        wick_expectation([["S", "B"]], n=3, d=2)
    with pytest.raises(ValueError, match="^n"):
        wick_expectation([["S"]], n=math.inf, d=2)
    with pytest.raises(TypeError, match="^factors"):
        wick_expectation(["SS"], n=3, d=2)
    with pytest.raises(ValueError, match="^letters"):
        wick_expectation([["S"]], {"S": np.eye(2)}, n=3)


def test_empty_word_and_constant_only():
    B = frac_matrix([[1, 2], [3, 4]])
    assert wick_expectation([[], ["B", "B"]], {"B": B}, n=3) == 2 * np.trace(B @ B)
    assert wick_expectation([["S"]], n=n_, d=d_) == d_


# ------------------------------------------------------------------------------------------
# isserlis_loss
# ------------------------------------------------------------------------------------------


def inverse(M):
    return np.array(sp.Matrix(M.tolist()).inv().tolist(), dtype=object)


@pytest.mark.parametrize("d, n", [(1, 1), (1, 3), (2, 1), (2, 2), (2, 3)])
def test_one_loop_closed_form(d, n):
    # sigma_x = R^2 with R rational symmetric positive definite, so Rx = R stays rational.
    R = frac_matrix([[1, F(1, 2)], [F(1, 2), F(3, 2)]])[:d, :d]
    Sx = R @ R
    task = lt.Task(d, n, sigma_x=Sx, sigma_w=inverse(Sx))
    rng = np.random.default_rng(100 * d + n)
    A = random_frac_matrix(rng, (d, d), 8)
    At = R @ A @ R
    expected = d - 2 * np.trace(At) + F(n + d + 1, n) * sum(x * x for x in At.ravel())
    got = isserlis_loss(task, A, 1)
    assert isinstance(got, F)
    assert got == expected


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("loops", [1, 2, 3, 4])
def test_scalar_case_chi_square(n, loops):
    # d = 1: S = sx chi2_n / n, H = 1 - a S, and every term is a polynomial in chi2_n whose
    # moments are n (n + 2) ... (n + 2k - 2).
    sx, sw, a, u, s2 = F(3, 2), F(2, 3), F(-2, 5), F(1, 3), F(1, 4)
    q = lambda x: sp.Rational(x.numerator, x.denominator)  # noqa: E731
    c = sp.Symbol("c")
    S = q(sx) * c / n
    H = 1 - q(a) * S
    G = sum(H**k for k in range(loops))
    integrand = (q(sx) * q(sw) * H ** (2 * loops)
                 + q(u) ** 2 * q(sx) * (1 - H**loops) ** 2
                 + q(s2) * q(sx) * q(a) ** 2 * G**2 * S / n)
    poly = sp.Poly(sp.expand(integrand), c)
    expected = sum(coef * sp.prod([n + 2 * j for j in range(k)]) for (k,), coef in poly.terms())
    task = lt.Task(1, n, sigma_x=[[sx]], sigma_w=[[sw]], noise=s2)
    got = isserlis_loss(task, [[a]], loops, [u])
    assert got == F(int(expected.p), int(expected.q))


_TRANSPOSE = {"B": "Bt", "Bt": "B", "S": "S", "W": "W", "U": "U"}


def _wmul(p, q):
    out = {}
    for w1, c1 in p.items():
        for w2, c2 in q.items():
            out[w1 + w2] = out.get(w1 + w2, 0) + c1 * c2
    return out


def _wadd(p, q, cq=1):
    out = dict(p)
    for w, c in q.items():
        out[w] = out.get(w, 0) + cq * c
    return out


def _wtranspose(p):
    return {tuple(_TRANSPOSE[x] for x in reversed(w)): c for w, c in p.items()}


def _wexpect(p, letters, n):
    return sum((c * wick_expectation([list(w)], letters, n=n) for w, c in p.items() if c), F(0))


def wick_closed_form(loops, n, R, Sw, A, u, noise):
    """The whitened closed form of docs/conventions.md (sigma_x = R^2) with every expectation taken
    by brute-force Wick pairings: a route that shares nothing with the engine or Isserlis."""
    Bw = R @ A.T @ R
    Ru = R @ u
    letters = {"B": Bw, "Bt": Bw.T, "W": R @ Sw @ R, "U": np.outer(Ru, Ru)}
    one = {(): F(1)}
    H = {(): F(1), ("B", "S"): F(-1)}
    HL, G = one, {}
    for _ in range(loops):
        G = _wadd(G, HL)
        HL = _wmul(HL, H)
    IH = _wadd(one, HL, -1)
    term_w = _wmul(_wmul(HL, {("W",): F(1)}), _wtranspose(HL))
    term_u = _wmul(_wmul(IH, {("U",): F(1)}), _wtranspose(IH))
    term_e = _wmul(_wmul(G, {("B", "S", "Bt"): F(1)}), _wtranspose(G))
    return (_wexpect(term_w, letters, n) + _wexpect(term_u, letters, n)
            + noise / n * _wexpect(term_e, letters, n))


# One task for the Wick route at every n: the isserlis test below (n = 3) and
# tests/test_loss.py::test_large_n_against_wick_pairings (n = 10, 1000, 10^6) share it.
WICK_R = frac_matrix([[1, F(1, 2)], [F(1, 2), 1]])
WICK_SW = frac_matrix([[1, F(1, 3)], [F(1, 3), F(1, 2)]])
WICK_A = frac_matrix([[F(3, 10), F(-1, 5)], [F(1, 10), F(2, 5)]])
WICK_U = np.array([F(1, 2), F(-1, 3)], dtype=object)
WICK_NOISE = F(1, 4)


@functools.lru_cache(maxsize=None)
def _wick_loss_in_n(loops):
    return wick_closed_form(loops, n_, WICK_R, WICK_SW, WICK_A, WICK_U, WICK_NOISE)


def wick_loss(loops, n):
    """wick_closed_form of the WICK_* task at the integer n, exactly. The Wick pairings are
    enumerated once per loop count with n symbolic (wick_expectation collects them by their
    power of n, so symbolic n costs what one integer n does; the 10395 pairings of the six copies
    of S at loops = 3 take about 2 CPU-s) and the rational function of n is evaluated here."""
    value = _wick_loss_in_n(loops).subs(n_, n)
    assert value.is_Rational, value
    return F(int(value.p), int(value.q))


@pytest.mark.parametrize("loops", [1, 2, 3])
def test_isserlis_matches_whitened_closed_form_via_wick(loops):
    # The two reference routes are independent: the whitened closed form of docs/conventions.md
    # evaluated with brute-force Wick pairings must equal the Isserlis loss exactly.
    task = lt.Task(2, 3, sigma_x=WICK_R @ WICK_R, sigma_w=WICK_SW, noise=WICK_NOISE)
    assert isserlis_loss(task, WICK_A, loops, WICK_U) == wick_loss(loops, 3)
    # the symbolic-n evaluation is the integer-n one (a cheap check at loops <= 2)
    if loops <= 2:
        assert wick_loss(loops, 3) == wick_closed_form(loops, 3, WICK_R, WICK_SW, WICK_A, WICK_U, WICK_NOISE)


@pytest.mark.parametrize("loops, seed", [(1, 11), (2, 12), (3, 13)])
def test_isserlis_against_monte_carlo(loops, seed):
    Sx = frac_matrix([[1, F(1, 4)], [F(1, 4), F(3, 4)]])
    Sw = frac_matrix([[1, F(1, 3)], [F(1, 3), F(1, 2)]])
    A = frac_matrix([[F(3, 10), F(-1, 5)], [F(1, 10), F(2, 5)]])
    u = np.array([F(1, 2), F(-1, 3)], dtype=object)
    task = lt.Task(2, 3, sigma_x=Sx, sigma_w=Sw, noise=F(1, 4))
    exact = float(isserlis_loss(task, A, loops, u))
    mean, se = lt.monte_carlo_loss(task, fmat(A), loops, fmat(u), samples=400_000, seed=seed)
    assert abs(mean - exact) < 4 * se, (mean, se, exact)


def test_isserlis_validation():
    task = lt.Task(2, 2)
    A = np.eye(2)  # integer-valued floats are accepted
    assert isserlis_loss(task, A, 1) == isserlis_loss(task, frac_matrix([[1, 0], [0, 1]]), 1)
    with pytest.raises(TypeError, match="^A"):
        isserlis_loss(task, 0.3 * np.eye(2), 1)
    with pytest.raises(TypeError, match="^u"):
        isserlis_loss(task, A, 1, u=[0.5, 0.0])
    with pytest.raises(TypeError, match="^task"):
        isserlis_loss(lt.Task(2, 2, noise=0.5), A, 1)
    with pytest.raises(TypeError, match="^task"):
        isserlis_loss(lt.Task(2, 2, sigma_x=0.5 * np.eye(2)), A, 1)
    with pytest.raises(ValueError, match="^task.n"):
        isserlis_loss(lt.Task(2, math.inf), A, 1)
    with pytest.raises(ValueError, match="^loops"):
        isserlis_loss(task, A, 0)
    with pytest.raises(TypeError, match="^task"):
        isserlis_loss(object(), A, 1)
