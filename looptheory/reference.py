"""Slow, obviously-correct reference implementations (in the spirit of thewalrus's reference.py).

The fast exact engine is tested against these two routes, so they share no code with it and
use no clever identities beyond the textbook ones:

* `wick_expectation`: E[prod_j tr(V_j)] for words V_j in S = X X^T / n and constant matrices,
  by summing over all (2m - 1)!! Wick pairings of the 2m vector slots of the m copies of S.
* `isserlis_loss`: the population loss f(A, u) of the sparse looped model at tiny d and n, by
  running preconditioned GD symbolically in the entries of X and integrating the resulting
  polynomial against the Gaussian law of X one monomial at a time (Isserlis / Stein).

Both are exponential in the problem size; they are meant for m <= 7 and d <= 2, n <= 3.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections import defaultdict
from fractions import Fraction
from functools import lru_cache

import numpy as np

from . import _validate as V

__all__ = ["wick_expectation", "isserlis_loss", "isserlis_multilayer_loss", "wick_multilayer_loss",
           "multilayer_loss_infinite_n", "partition_trace_moments", "partition_wishart_moments",
           "sqrtm_spd", "one_loop_closed_form"]

_MAX_S = 7


# ---------------------------------------------------------------------------------------------
# Shared scalar helpers
# ---------------------------------------------------------------------------------------------


def _is_sympy(x) -> bool:
    return type(x).__module__.startswith("sympy")


def _exact_entry(name: str, x) -> Fraction:
    """int / Fraction / SymPy Rational / integer-valued float -> Fraction, else TypeError."""
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name}: expected exact rational entries, got a boolean")
    if V.is_exact_scalar(x):
        return V.to_fraction(x)
    if isinstance(x, (float, np.floating)) and math.isfinite(x) and float(x).is_integer():
        return Fraction(int(x))
    raise TypeError(
        f"{name}: expected exact entries (int, Fraction, SymPy Rational or an integer-valued "
        f"float), got {x!r}"
    )


def _exact_matrix(name: str, value, shape) -> list:
    arr = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    return np.array([_exact_entry(name, x) for x in arr.ravel()], dtype=object).reshape(shape).tolist()


# ---------------------------------------------------------------------------------------------
# 1. Brute-force Wick pairings
# ---------------------------------------------------------------------------------------------


def _perfect_matchings(items):
    """All perfect matchings of a list of even length, as lists of pairs ((2k-1)!! of them)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for k in range(len(rest)):
        others = rest[:k] + rest[k + 1:]
        for tail in _perfect_matchings(others):
            yield [(first, rest[k])] + tail


class _UnionFind:
    def __init__(self, size):
        self.parent = list(range(size))

    def find(self, a):
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


def _letters_and_mode(letters, d):
    """Validate the constant letters; return (dict name -> matrix, d, mode) with mode 'exact'
    (object arrays of Fractions) or 'float'."""
    if letters is None:
        letters = {}
    if not isinstance(letters, dict):
        raise TypeError(f"letters: expected a dict mapping names to matrices, got {type(letters).__name__}")
    out = {}
    exact = True
    size = None
    for name, mat in letters.items():
        if not isinstance(name, str):
            raise TypeError(f"letters: names must be strings, got {name!r}")
        if name == "S":
            raise ValueError("letters: the name 'S' is reserved for the random matrix X X^T / n")
        arr = np.asarray(mat) if not isinstance(mat, np.ndarray) else mat
        if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
            raise ValueError(f"letters: {name!r} must be a square matrix, got shape {arr.shape}")
        if size is None:
            size = arr.shape[0]
        elif arr.shape[0] != size:
            raise ValueError(f"letters: all matrices must have the same size, {name!r} has shape {arr.shape}")
        if arr.dtype.kind in "iu":
            out[name] = np.array([Fraction(int(v)) for v in arr.ravel()], dtype=object).reshape(arr.shape)
        elif arr.dtype == object and all(V.is_exact_scalar(v) for v in arr.ravel()):
            out[name] = np.array([V.to_fraction(v) for v in arr.ravel()], dtype=object).reshape(arr.shape)
        else:
            out[name] = V.as_real_array(f"letters[{name!r}]", arr, 2, allow_exact=False)
            exact = False
    if size is not None:
        if d is not None and (_is_sympy(d) or d != size):
            raise ValueError(f"d: must be None or equal to the size {size} of the constant letters, got {d!r}")
        d = size
    elif d is None:
        raise ValueError("d: must be given when there are no constant letters")
    elif not _is_sympy(d):
        d = V.positive_int("d", d)
    if not exact:
        out = {k: np.asarray(v, dtype=float) for k, v in out.items()}
    return out, d, ("exact" if exact else "float")


def _check_n(n):
    """Return (n, kind) with kind in {'exact', 'float', 'symbolic'}."""
    if n is None or isinstance(n, (bool, np.bool_)):
        raise TypeError(f"n: expected a positive number or a SymPy expression, got {n!r}")
    if _is_sympy(n) and not getattr(n, "is_Number", False):
        return n, "symbolic"
    if V.is_exact_scalar(n):
        n = V.to_fraction(n)
        if n <= 0:
            raise ValueError(f"n: must be positive, got {n}")
        return n, "exact"
    if isinstance(n, numbers.Real) or _is_sympy(n):
        v = float(n)
        if not math.isfinite(v):
            raise ValueError(f"n: must be finite, got {V.number_text(n)}")
        if v <= 0:
            raise ValueError(f"n: must be positive, got {V.number_text(n)}")
        return v, "float"
    raise TypeError(f"n: expected a positive number or a SymPy expression, got {type(n).__name__}")


def wick_expectation(factors, letters=None, *, n, d=None):
    """E[ prod_j tr(V_j) ] by brute force over all Wick pairings.

    Each word V_j is a sequence of letter names; "S" is the random matrix
    S = X X^T / n = (1/n) sum_{i=1}^n x_i x_i^T with x_i i.i.d. N(0, I_d), every other name is a key
    of `letters` (a d x d constant matrix; a transpose is passed as its own letter). The empty
    word has trace d.

    With m copies of S in all, each copy s carries a sample index i_s and two vector slots
    (x_{i_s} on the left, x_{i_s}^T on the right). By Isserlis' theorem

        E[prod] = n^{-m} sum_{pairings pi of the 2m slots} n^{g(pi)} prod_{cycles c of pi} tr(C_c),

    where g(pi) is the number of connected components of the graph on the copies of S whose
    edges are the pairs of pi (a pair of slots forces equal sample indices, and each free
    sample index is summed over n values), and pairing two slots identifies the two matrix
    indices they carry; the constant letters then close up into cycles, each giving the trace of
    the product of its letters read along the cycle (a letter met against its orientation enters
    transposed), and a cycle with no constant letter gives tr(I) = d.

    Parameters
    ----------
    factors : sequence of words, each a sequence (list/tuple) of letter names.
    letters : dict name -> (d, d) matrix; float arrays give a float result, integer arrays or
        object arrays of Fractions / SymPy Rationals an exact one.
    n : positive int, Fraction or float, or a SymPy expression (e.g. a Symbol).
    d : int or SymPy expression; required when there are no constant letters, else inferred.

    Returns a Fraction (exact letters and exact n, d), a float (any float input) or a SymPy
    expression (symbolic n or d). At most 7 copies of S (ValueError on `factors` otherwise).
    """
    mats, d, mode = _letters_and_mode(letters, d)
    n, n_kind = _check_n(n)

    if isinstance(factors, (str, bytes)):
        raise TypeError("factors: expected a sequence of words, got a string")
    words = []
    for w in factors:
        if isinstance(w, (str, bytes)):
            raise TypeError(f"factors: each word must be a list/tuple of letter names, got the string {w!r}")
        w = tuple(w)
        for name in w:
            if name != "S" and name not in mats:
                raise ValueError(f"factors: unknown letter {name!r} (not 'S' and not a key of letters)")
        words.append(w)
    m = sum(w.count("S") for w in words)
    if m > _MAX_S:
        raise ValueError(f"factors: {m} copies of S; the brute-force reference supports at most {_MAX_S}")

    # Index nodes: node (j, t) is the matrix index between letters t-1 and t of word j
    # (cyclically), so letter t of word j reads M[node(j, t), node(j, t+1)].
    node_count = 0
    const_edges = []  # (name, row_node, col_node)
    slot_nodes = []  # slot 2s: left (row) index of copy s, slot 2s+1: right (column) index
    empty_words = 0
    for w in words:
        k = len(w)
        if k == 0:
            empty_words += 1
            continue
        base = node_count
        node_count += k
        for t, name in enumerate(w):
            row, col = base + t, base + (t + 1) % k
            if name == "S":
                slot_nodes += [row, col]
            else:
                const_edges.append((name, row, col))

    one = Fraction(1) if mode == "exact" else 1.0

    trace_cache = {}

    def trace_of(word):
        val = trace_cache.get(word)
        if val is None:
            prod = None
            for name, transposed in word:
                M = mats[name].T if transposed else mats[name]
                prod = M if prod is None else prod @ M
            val = prod.trace()
            val = Fraction(val) if mode == "exact" else float(val)
            trace_cache[word] = val
        return val

    # Accumulate per (number of sample groups, number of letter-free cycles); this keeps n and d
    # symbolic until the end and makes the n-dependence visible.
    coeff = {}
    for pairing in _perfect_matchings(list(range(2 * m))):
        idx = _UnionFind(node_count)
        groups = _UnionFind(m)
        for p, q in pairing:
            idx.union(slot_nodes[p], slot_nodes[q])
            groups.union(p // 2, q // 2)
        g = len({groups.find(s) for s in range(m)})

        ends = {}  # class -> list of (edge, side); side 0 = row end, 1 = column end
        for e, (_, r, c) in enumerate(const_edges):
            ends.setdefault(idx.find(r), []).append((e, 0))
            ends.setdefault(idx.find(c), []).append((e, 1))
        classes = {idx.find(v) for v in range(node_count)}
        free_cycles = sum(1 for c in classes if c not in ends) + empty_words

        value = one
        seen = [False] * len(const_edges)
        for e0 in range(len(const_edges)):
            if seen[e0]:
                continue
            word = []
            e, side_in = e0, 0  # traverse e0 forward: enter at its row end
            while True:
                seen[e] = True
                word.append((const_edges[e][0], side_in == 1))
                side_out = 1 - side_in
                cls = idx.find(const_edges[e][1 + side_out])
                here = ends[cls]
                assert len(here) == 2, "every index class meets exactly two letter ends"
                e, side_in = here[1] if here[0] == (e, side_out) else here[0]
                if (e, side_in) == (e0, 0):
                    break
            value = value * trace_of(tuple(word))
        key = (g, free_cycles)
        coeff[key] = coeff.get(key, 0) + value

    symbolic = n_kind == "symbolic" or _is_sympy(d)
    if symbolic:
        import sympy

        def conv(x):
            if isinstance(x, Fraction):
                return sympy.Rational(x.numerator, x.denominator)
            if isinstance(x, float):
                return sympy.Float(x)
            return sympy.sympify(x)

        nn, dd = conv(n), conv(d)
        total = sum((conv(c) * nn ** (g - m) * dd**f for (g, f), c in coeff.items()), sympy.Integer(0))
        return sympy.expand(total)
    if mode == "exact" and n_kind == "exact":
        return sum((Fraction(c) * n ** (g - m) * Fraction(d) ** f for (g, f), c in coeff.items()), Fraction(0))
    n = float(n)
    return float(sum(float(c) * n ** (g - m) * float(d) ** f for (g, f), c in coeff.items()))


# ---------------------------------------------------------------------------------------------
# 2. Exact loss by Isserlis in the entries of X
# ---------------------------------------------------------------------------------------------
#
# Polynomials in the n*d entries X[a, i] are dicts {packed exponent: int coefficient}. The
# exponent vector is packed into one Python int with a fixed-width bit field per variable, so
# that multiplying monomials is adding keys; the field width exceeds the largest possible
# exponent, so fields never carry into each other. Coefficients are kept integral by pulling
# every denominator out into an explicit scalar factor (tracked next to each polynomial matrix).


def _padd(p, q, cq=1):
    r = dict(p)
    for k, c in q.items():
        v = r.get(k, 0) + cq * c
        if v:
            r[k] = v
        else:
            r.pop(k, None)
    return r


def _pscale(p, c):
    return {k: c * v for k, v in p.items()} if c else {}


def _pmul(p, q):
    r = {}
    get = r.get
    for k1, c1 in p.items():
        for k2, c2 in q.items():
            k = k1 + k2
            r[k] = get(k, 0) + c1 * c2
    return {k: v for k, v in r.items() if v}


def _pmul_into(acc, p, q):
    get = acc.get
    for k1, c1 in p.items():
        for k2, c2 in q.items():
            k = k1 + k2
            acc[k] = get(k, 0) + c1 * c2


def _lincomb(coeffs, polys):
    """sum_k coeffs[k] * polys[k] for integer coeffs."""
    r = {}
    for c, p in zip(coeffs, polys):
        if c:
            for k, v in p.items():
                r[k] = r.get(k, 0) + c * v
    return {k: v for k, v in r.items() if v}


def _int_matrix(F):
    """Fraction matrix (list of lists) -> (integer matrix, common denominator D), F = Mint / D."""
    D = 1
    for row in F:
        for x in row:
            D = D * x.denominator // math.gcd(D, x.denominator)
    return [[int(x * D) for x in row] for row in F], D


def _column_moments(sigma_int, d):
    """E[prod_a x_a^{k_a}] for x ~ N(0, sigma_int), by Stein's identity
    E[x_a m(x)] = sum_b sigma[a, b] E[d m / d x_b], memoised on the exponent tuple. Integer
    covariance gives integer moments."""

    @lru_cache(maxsize=None)
    def mom(k):
        if sum(k) % 2:
            return 0
        a = next((i for i, e in enumerate(k) if e), None)
        if a is None:
            return 1
        rest = list(k)
        rest[a] -= 1  # x^k = x_a * x^rest; differentiate x^rest in each x_b
        total = 0
        for b in range(d):
            if rest[b] and sigma_int[a][b]:
                kk = list(rest)
                kk[b] -= 1
                total += sigma_int[a][b] * rest[b] * mom(tuple(kk))
        return total

    return mom


def _task_fields(task):
    for attr in ("d", "n", "sigma_x", "sigma_w", "noise"):
        if not hasattr(task, attr):
            raise TypeError(f"task: expected a looptheory.Task (missing attribute {attr!r})")
    return V.positive_int("task.d", task.d)


def isserlis_loss(task, A, loops, u=None) -> Fraction:
    """Exact population loss f(A, u) = E (yhat - y_q)^2 of the sparse looped model, from its
    definition, as a Fraction (tiny d and n only): `isserlis_multilayer_loss` with every layer
    equal to (A, u).

    The model runs preconditioned GD with B = A^T on the labels y + X^T u (docs/conventions.md),

        w_0 = 0,   w_{t+1} = w_t + (1/n) B X (y + X^T u - X^T w_t),   yhat = <x_q, w_L>,

    with y = X^T w* + eps. Every input must be exact: ints, Fractions, SymPy Rationals, or
    integer-valued floats (TypeError naming the parameter otherwise). n must be finite. Feasible
    for d <= 2, n <= 3, loops <= 4 in seconds; the cost grows quickly with d * n * loops.
    """
    d = _task_fields(task)
    loops = V.positive_int("loops", loops)
    Am = _exact_matrix("A", A, (d, d))
    uv = None if u is None else _exact_matrix("u", u, (d,))
    return isserlis_multilayer_loss(task, [Am] * loops, None if uv is None else [uv] * loops)


def isserlis_multilayer_loss(task, As, us=None) -> Fraction:
    """Exact population loss of the untied multi-layer sparse model (layer l: A_l, u_l), from
    its definition, as a Fraction (tiny d and n only).

    The model runs w_0 = 0, w_{t+1} = w_t + (1/n) B_t X (y + X^T u_t - X^T w_t), B_t = A_t^T,
    yhat = <x_q, w_L> (docs/derivations.md, "1.3 Multi-layer version"), with y = X^T w* + eps.
    The iteration is run on coefficients, w_t = M_t w* + c_t + E_t eps,
        M_{t+1} = M_t + (1/n) B_t X X^T (I - M_t),   c_{t+1} = c_t + (1/n) B_t X X^T (u_t - c_t),
        E_{t+1} = E_t + (1/n) B_t X (I_n - X^T E_t),
    M_0 = 0, c_0 = 0, E_0 = 0, whose entries are polynomials in the entries of X. Then
    w_L - w* = (M_L - I) w* + c_L + E_L eps, and averaging over the independent x_q, w*, eps
    (quadratic forms of zero-mean Gaussians) gives

        f = E_X[ tr((M_L - I)^T Sx (M_L - I) Sw) + c_L^T Sx c_L + noise tr(E_L^T Sx E_L) ].

    The outer expectation is over the columns x_i ~ N(0, Sx) i.i.d.: each monomial factorises
    over columns and each column moment comes from Stein's identity with the covariance Sx
    itself (no square root of Sx is ever formed).

    As: a list of L exact d x d matrices (layer 1 first); us: None or L exact vectors. Every
    input must be exact (TypeError naming the parameter otherwise); n must be finite. Feasible
    for d <= 2, n <= 3 and a few layers in seconds.
    """
    d = _task_fields(task)
    if isinstance(task.n, float) and math.isinf(task.n):
        raise ValueError("task.n: must be finite (the exact Isserlis reference has no n = inf limit)")
    n = V.positive_int("task.n", task.n)
    if isinstance(As, (str, bytes)) or not hasattr(As, "__len__") or len(As) < 1:
        raise TypeError("As: expected a non-empty list of d x d matrices, one per layer")
    loops = len(As)
    if us is not None and (not hasattr(us, "__len__") or len(us) != loops):
        raise ValueError(f"us: expected one vector per layer ({loops}), got {us!r}")
    Sx = _exact_matrix("task.sigma_x", task.sigma_x, (d, d))
    Sw = _exact_matrix("task.sigma_w", task.sigma_w, (d, d))
    noise = _exact_entry("task.noise", task.noise)
    Ams = [_exact_matrix(f"As[{t}]", A, (d, d)) for t, A in enumerate(As)]
    uvs = [[Fraction(0)] * d] * loops if us is None else [_exact_matrix(f"us[{t}]", u, (d,)) for t, u in enumerate(us)]

    # Integer forms with one denominator per kind: B_t = Bi[t] / DB, Sx = Sxi / Dx, Sw = Swi / Dw,
    # u_t = ui[t] / Du.
    Bflat, DB = _int_matrix([[Am[j][i] for j in range(d)] for Am in Ams for i in range(d)])
    Bis = [Bflat[t * d:(t + 1) * d] for t in range(loops)]
    Sxi, Dx = _int_matrix(Sx)
    Swi, Dw = _int_matrix(Sw)
    uis, Du = _int_matrix(uvs)

    # Packed exponents: variable X[a, i] owns bits [(i*d + a)*W, (i*d + a + 1)*W); column i's
    # block is contiguous so its exponent tuple is read off with one shift and mask.
    max_deg = 4 * loops + 2
    W = max_deg.bit_length() + 1
    fmask = (1 << W) - 1
    cmask = (1 << (W * d)) - 1
    X = [[{1 << ((i * d + a) * W): 1} for i in range(n)] for a in range(d)]
    XXt = [[_lincomb([1] * n, [_pmul(X[a][i], X[b][i]) for i in range(n)]) for b in range(d)] for a in range(d)]

    # M_t = Mi / K^t, c_t = ci / (K^t Du) and E_t = Ei / K^t with K = DB * n, so that one step reads
    # Mi_{t+1} = K Mi_t + BXXt_t (K^t I - Mi_t),   ci_{t+1} = K ci_t + BXXt_t (K^t ui_t - ci_t),
    # Ei_{t+1} = K Ei_t + BX_t (K^t I_n - X^T Ei_t).
    K = DB * n
    Mi = [[{} for _ in range(d)] for _ in range(d)]
    ci = [{} for _ in range(d)]
    Ei = [[{} for _ in range(n)] for _ in range(d)]
    for t in range(loops):
        Bi = Bis[t]
        # B X (d x n) and B X X^T (d x d) as integer polynomials; the true matrices are these / DB.
        BX = [[_lincomb(Bi[a], [X[b][i] for b in range(d)]) for i in range(n)] for a in range(d)]
        BXXt = [[_lincomb(Bi[a], [XXt[c][b] for c in range(d)]) for b in range(d)] for a in range(d)]
        Kt = K**t
        IminusM = [[_padd({0: Kt} if a == b else {}, Mi[a][b], -1) for b in range(d)] for a in range(d)]
        uminusc = [_padd({0: Kt * uis[t][a]} if uis[t][a] else {}, ci[a], -1) for a in range(d)]
        XtE = [[_lincomb([1] * d, [_pmul(X[c][i], Ei[c][j]) for c in range(d)]) for j in range(n)] for i in range(n)]
        IminusXtE = [[_padd({0: Kt} if i == j else {}, XtE[i][j], -1) for j in range(n)] for i in range(n)]
        newM = [[{} for _ in range(d)] for _ in range(d)]
        newc = [{} for _ in range(d)]
        for a in range(d):
            for b in range(d):
                acc = _pscale(Mi[a][b], K)
                for c in range(d):
                    _pmul_into(acc, BXXt[a][c], IminusM[c][b])
                newM[a][b] = {k: v for k, v in acc.items() if v}
            acc = _pscale(ci[a], K)
            for c in range(d):
                _pmul_into(acc, BXXt[a][c], uminusc[c])
            newc[a] = {k: v for k, v in acc.items() if v}
        newE = [[{} for _ in range(n)] for _ in range(d)]
        for a in range(d):
            for j in range(n):
                acc = _pscale(Ei[a][j], K)
                for i in range(n):
                    _pmul_into(acc, BX[a][i], IminusXtE[i][j])
                newE[a][j] = {k: v for k, v in acc.items() if v}
        Mi, ci, Ei = newM, newc, newE
    KL = K**loops

    mom = _column_moments(tuple(tuple(r) for r in Sxi), d)
    col_cache = {}

    def expect(poly):
        """E_X[poly] with X's columns ~ N(0, Sxi) -> Fraction; moments of total degree 2r under
        Sx = Sxi / Dx carry the factor Dx^{-r}."""
        by_deg = {}
        for key, c in poly.items():
            prod = c
            deg = 0
            kk = key
            for _ in range(n):
                ck = kk & cmask
                kk >>= W * d
                entry = col_cache.get(ck)
                if entry is None:
                    exps = tuple((ck >> (a * W)) & fmask for a in range(d))
                    entry = (mom(exps), sum(exps))
                    col_cache[ck] = entry
                prod *= entry[0]
                deg += entry[1]
                if not prod:
                    break
            if prod:
                by_deg[deg] = by_deg.get(deg, 0) + prod
        return sum((Fraction(v, Dx ** (g // 2)) for g, v in by_deg.items()), Fraction(0))

    # w* part: tr((M - I)^T Sx (M - I) Sw) = sum_{a,b} (M - I)[a, b] (Sx (M - I) Sw)[a, b].
    Dm = [[_padd(Mi[a][b], {0: KL} if a == b else {}, -1) for b in range(d)] for a in range(d)]
    SxD = [[_lincomb(Sxi[a], [Dm[c][b] for c in range(d)]) for b in range(d)] for a in range(d)]
    SxDSw = [[_lincomb([Swi[c][b] for c in range(d)], SxD[a]) for b in range(d)] for a in range(d)]
    acc = {}
    for a in range(d):
        for b in range(d):
            _pmul_into(acc, Dm[a][b], SxDSw[a][b])
    f_w = expect(acc) / (KL * KL * Dx * Dw)

    # u part: c^T Sx c.
    f_u = Fraction(0)
    if any(any(row) for row in uis):
        Sxc = [_lincomb(Sxi[a], ci) for a in range(d)]
        acc = {}
        for a in range(d):
            _pmul_into(acc, ci[a], Sxc[a])
        f_u = expect(acc) / (KL * KL * Dx * Du * Du)

    # noise part: noise * tr(E^T Sx E).
    f_e = Fraction(0)
    if noise:
        SxE = [[_lincomb(Sxi[a], [Ei[c][j] for c in range(d)]) for j in range(n)] for a in range(d)]
        acc = {}
        for a in range(d):
            for j in range(n):
                _pmul_into(acc, Ei[a][j], SxE[a][j])
        f_e = noise * expect(acc) / (KL * KL * Dx)

    return f_w + f_u + f_e


# ---------------------------------------------------------------------------------------------
# The untied multi-layer loss by two more routes: Wick pairings of the whitened closed form, and
# the n = inf recursion
# ---------------------------------------------------------------------------------------------


def _matrix_any(name, value, shape):
    """An object array of Fractions when every entry is exact (integer-valued floats included),
    else a float array."""
    arr = np.asarray(value)
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    try:
        return np.array(_exact_matrix(name, arr, shape), dtype=object)
    except TypeError:
        return V.as_real_array(name, arr.astype(float), len(shape), allow_exact=False)


def multilayer_loss_infinite_n(task, As, us=None):
    """The untied multi-layer loss at n = inf, where S = X X^T / n is sigma_x itself: the
    recursion w_{l+1} = w_l + A_l^T sigma_x (w* + u_l - w_l) run on its coefficients,
    w_l = M_l w* + c_l, and f = tr((M_L - I)^T Sx (M_L - I) Sw) + c_L^T Sx c_L (no noise part: it
    carries 1/n). Exact (a Fraction) when every input is rational, else a float. No engine, no
    whitening."""
    d = _task_fields(task)
    Sx = _matrix_any("task.sigma_x", task.sigma_x, (d, d))
    Sw = _matrix_any("task.sigma_w", task.sigma_w, (d, d))
    As = [_matrix_any(f"As[{t}]", A, (d, d)) for t, A in enumerate(As)]
    us = [None] * len(As) if us is None else [_matrix_any(f"us[{t}]", u, (d,)) for t, u in enumerate(us)]
    exact = all(M.dtype == object for M in [Sx, Sw] + As + [u for u in us if u is not None])
    one = Fraction(1) if exact else 1.0
    eye = np.array([[one * (i == j) for j in range(d)] for i in range(d)], dtype=object if exact else float)
    M, c = eye * 0, np.array([one * 0] * d, dtype=eye.dtype)
    for A, u in zip(As, us):
        BS = A.T.dot(Sx)
        M = M + BS.dot(eye - M)
        c = c + BS.dot((0 * c if u is None else u) - c)
    D = M - eye
    value = np.trace(D.T.dot(Sx).dot(D).dot(Sw)) + c.dot(Sx).dot(c)
    return Fraction(value) if exact else float(value)


def wick_multilayer_loss(task, As, us=None, sqrt_sigma_x=None):
    """The untied multi-layer loss from the whitened closed form of docs/derivations.md, "8. The
    untied multi-layer loss", with every expectation taken by brute-force Wick pairings
    (`wick_expectation`): a route that shares nothing with the engine or with Isserlis.

      f = E tr(P W P^T) + sum_{l,m} E tr(P_{>l} B_l S U_lm S B_m^T P_{>m}^T)
          + (noise / n) E tr(N S N^T),

    P = H_L ... H_1, P_{>l} = H_L ... H_{l+1}, H_l = I - B_l S, N = sum_l P_{>l} B_l, with the
    whitened letters B_l = R A_l^T R, W = R sigma_w R, U_lm = R u_l u_m^T R, R = sigma_x^{1/2}.
    sqrt_sigma_x: R (exact R with R R = sigma_x gives an exact result); None: the float
    square root. n finite (int, Fraction or a SymPy symbol). At most 7 copies of S per word:
    L <= 3 layers.
    """
    d = _task_fields(task)
    n = task.n
    if isinstance(n, float) and math.isinf(n):
        raise ValueError("task.n: must be finite (use multilayer_loss_infinite_n at n = inf)")
    L = len(As)
    if not 1 <= L <= 3:
        raise ValueError(f"As: the Wick route takes 1 to 3 layers (at most 7 copies of S per word), got {L}")
    R = sqrtm_spd(task.sigma_x) if sqrt_sigma_x is None else _matrix_any("sqrt_sigma_x", sqrt_sigma_x, (d, d))
    Sx = _matrix_any("task.sigma_x", task.sigma_x, (d, d))
    if sqrt_sigma_x is not None and not np.allclose(np.asarray(R.dot(R) - Sx, dtype=float), 0, atol=1e-12):
        raise ValueError("sqrt_sigma_x: R R must equal task.sigma_x")
    Sw = _matrix_any("task.sigma_w", task.sigma_w, (d, d))
    As = [_matrix_any(f"As[{t}]", A, (d, d)) for t, A in enumerate(As)]
    us = None if us is None else [_matrix_any(f"us[{t}]", u, (d,)) for t, u in enumerate(us)]
    letters = {"W": R.dot(Sw).dot(R)}
    transpose = {"S": "S", "W": "W"}
    for l in range(1, L + 1):
        B = R.dot(As[l - 1].T).dot(R)
        letters[f"B{l}"], letters[f"Bt{l}"] = B, B.T
        transpose[f"B{l}"], transpose[f"Bt{l}"] = f"Bt{l}", f"B{l}"
        for m in range(1, L + 1):
            transpose[f"U{l}{m}"] = f"U{m}{l}"
            if us is not None:
                letters[f"U{l}{m}"] = np.outer(R.dot(us[l - 1]), R.dot(us[m - 1]))

    def mul(p, q):  # products of sums of words
        out = defaultdict(int)
        for (w1, c1), (w2, c2) in itertools.product(p.items(), q.items()):
            out[w1 + w2] += c1 * c2
        return out

    def tr(p):
        return {tuple(transpose[x] for x in reversed(w)): c for w, c in p.items()}

    def above(l):  # P_{>l} = H_L ... H_{l+1}
        out = {(): 1}
        for k in range(L, l, -1):
            out = mul(out, {(): 1, (f"B{k}", "S"): -1})
        return out

    def expect(p):
        return sum(c * wick_expectation([list(w)], letters, n=n) for w, c in p.items() if c)

    P = above(0)
    total = expect(mul(mul(P, {("W",): 1}), tr(P)))
    if us is not None:
        for l in range(1, L + 1):
            for m in range(1, L + 1):
                Vl = mul(above(l), {(f"B{l}", "S"): 1})
                Vm = mul(above(m), {(f"B{m}", "S"): 1})
                total = total + expect(mul(mul(Vl, {(f"U{l}{m}",): 1}), tr(Vm)))
    noise = task.noise
    if noise:
        N = {}
        for l in range(1, L + 1):
            for w, c in mul(above(l), {(f"B{l}",): 1}).items():
                N[w] = N.get(w, 0) + c
        ex = noise if isinstance(noise, (Fraction, int)) else float(noise)
        total = total + ex / n * expect(mul(mul(N, {("S",): 1}), tr(N)))
    return total


# ---------------------------------------------------------------------------------------------
# The partition route for real-Wishart trace moments
# ---------------------------------------------------------------------------------------------

"""Slow, independent reference for the real-Wishart trace moments (the partition route).

Used only to check `looptheory.moments.trace_moments` . Nothing here is clever on purpose: it is Gaussian integration by
parts (docs/derivations.md, "3.1 One step of Gaussian integration by parts") specialised to words
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


# ---------------------------------------------------------------------------------------------
# The loops = 1 closed form of docs/conventions.md
# ---------------------------------------------------------------------------------------------


def sqrtm_spd(M) -> np.ndarray:
    """The symmetric square root Rx = M^{1/2} of an SPD matrix, by eigendecomposition (float)."""
    ev, q = np.linalg.eigh(np.asarray(M, dtype=float))
    return (q * np.sqrt(ev)) @ q.T


def one_loop_closed_form(task, A) -> float:
    """docs/conventions.md, loops = 1, sigma_w = sigma_x^{-1}, u = 0, no noise:
    f = d - 2 tr(A~) + ((n + d + 1)/n) ||A~||_F^2 with A~ = Rx A Rx (float)."""
    rx = sqrtm_spd(task.sigma_x)
    At = rx @ np.asarray(A, dtype=float) @ rx
    d, n = task.d, task.n
    return float(d - 2 * np.trace(At) + (n + d + 1) / n * np.sum(At * At))

