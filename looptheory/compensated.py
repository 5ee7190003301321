"""Matrix products without the rounding that would swamp small letters: compensated (double-double)
dot products with a rigorous error bound.

Near the optimum the letter M_E = I - A^T sigma_x is of size 1e-11 while A^T sigma_x is of size 1;
forming it in plain float64 leaves an absolute error of about 1e-16 per unit of |A^T| |sigma_x|,
which is a relative error of 1e-5 or worse in E, and the loss near the optimum is a polynomial of
degree 2L in E. `product` computes C + s X Y accurately and rounds it once, with an entrywise
bound on its error, by one of two algorithms:

- Dot2 (small products): every product a_ik b_kj is split exactly into p + e (Dekker's
  TwoProduct) and the 2k + 1 numbers of each entry are summed with TwoSum in double-double
  (Ogita, Rump and Oishi, "Accurate sum and dot product", SIAM J. Sci. Comput. 26, 2005,
  Algorithm Dot2). Their Proposition 5.5 (u = 2^-53, gamma_k = k u / (1 - k u)):

    |fl(C + s X Y) - (C + s X Y)| <= u |C + s X Y| + gamma_{2k+1}^2 (|C| + |X| |Y|).

- Error-free splitting (large products, Ozaki, Ogita, Oishi and Rump, "Error-free
  transformations of matrix multiplication by using fast routines of matrix multiplication",
  Numer. Algorithms 59, 2012): X is cut row by row into slices X_1 + ... + X_s + R_X whose
  entries are integer multiples of a power of two per row with at most 54 - beta bits, Y
  column by column likewise, with 2 beta >= 55 + log2 k, so that every X_a Y_b is computed
  EXACTLY by an ordinary BLAS GEMM (all partial sums are integers below 2^53 times a power of
  two). The s^2 exact products and C are summed with Sum2 (cascaded TwoSum, their
  Proposition 4.5) and rounded once; the dropped remainders add |R_X| |Y| + |X - R_X| |R_Y|:

    |M - (C + s X Y)| <= u (1 + 2u) |M| + 2 gamma_{n-1}^2 (|C| + sum |X_a Y_b|)
                         + (1 + 2 gamma_k) (|R_X| |Y| + (|X| + |R_X|) |R_Y|),   n = s^2 + 1.

  It costs s^2 + 2 GEMMs instead of k vectorised passes over a (rows, k, m) array, which at
  d = 100 is 40 times faster and needs no (rows, k, m) temporaries.
"""

from __future__ import annotations

import numpy as np

U = 2.0**-53
#: The smallest normal float: below it a product's rounding error is absolute (up to 2^-1075,
#: gradual underflow), not relative.
NORMAL_MIN = 2.0**-1022
_SPLIT = 134217729.0  # 2^27 + 1
#: Products with at most this many scalar products (rows x k x m) use Dot2.
_DOT2_MAX = 1 << 17
#: Slices per factor in the error-free splitting.
_SLICES = 4


def gamma(k) -> float:
    """gamma_k = k u / (1 - k u), the classical bound on k successive roundings."""
    k = float(k)
    return k * U / (1.0 - k * U)


def _two_sum(a, b):
    s = a + b
    z = s - a
    return s, (a - (s - z)) + (b - z)


def _split(a):
    c = _SPLIT * a
    hi = c - (c - a)
    return hi, a - hi


def _two_product(a, b):
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def product(X, Y, C=None, sign=1.0, method=None):
    """(M, err): M = fl(C + sign * X @ Y) computed accurately and rounded once, and an
    entrywise bound err >= |M - (C + sign X Y)| (see the module docstring).

    X, Y: float arrays (d, k) and (k, m); C: (d, m) or None (zero); sign: +1 or -1, or one
    sign per row of X (shape (d,) or (d, 1)). method: "dot2" or "split" to force an algorithm
    (default: Dot2 for at most _DOT2_MAX scalar products, else the error-free splitting).
    Entries above 1e150 in magnitude could overflow the exact splitting; they fall back to
    the plain product with the classical bound gamma_k |X| |Y|.
    """
    X = np.asarray(X, dtype=float)
    Y = np.asarray(Y, dtype=float)
    r, k = X.shape
    m = Y.shape[1]
    sgn = np.asarray(sign, dtype=float)
    sgn = sgn.reshape(r, 1) if sgn.ndim else sgn
    absC = 0.0 if C is None else np.abs(C)
    aX, aY = np.abs(X), np.abs(Y)
    big = max(np.max(aX, initial=0.0), np.max(aY, initial=0.0))
    if big > 1e150:
        M = (0.0 if C is None else C) + sgn * (X @ Y)
        return M, gamma(k + 1) * (np.abs(X) @ np.abs(Y) + absC)
    if method is None:
        method = "dot2" if r * k * m <= _DOT2_MAX else "split"
    if method == "split":
        out = _split_product(X, Y, C, sgn)
        if out is not None:
            return out
    mag = aX @ aY + absC
    # all k products at once, term by term: (k, d, m)
    p, e = _two_product(X.T[:, :, None], Y[:, None, :])
    if sgn.ndim:
        p *= sgn[None, :, :]
        e *= sgn[None, :, :]
    elif sgn < 0:
        p, e = -p, -e
    # Dot2's cascade s_j = s_{j-1} + p_j (s_0 = C) first, then the TwoSum errors q_j of all
    # its steps at once, then c_j = c_{j-1} + (q_j + e_j) (c_0 = 0): the additions of a loop
    # over j in the same order, with the elementwise work done once over all j
    S = np.empty((k + 1, r, m))
    S[0] = 0.0 if C is None else C
    S[1:] = p
    for j in range(k):
        np.add(S[j], S[j + 1], out=S[j + 1])
    a, s = S[:-1], S[1:]
    z = s - a
    q = a - (s - z)
    q += p - z
    q += e
    c = np.zeros((r, m))
    for j in range(k):
        c += q[j]
    M = S[-1] + c
    return M, U * np.abs(M) + gamma(2 * k + 1) ** 2 * mag


def _slices(Z, axis, beta, s):
    """Z = Z_1 + ... + Z_s + R (exactly), each Z_a with entries integer multiples of one power
    of two per row (axis=1) or column (axis=0), at most 54 - beta bits; None if a slice could
    lose bits to underflow."""
    mu = np.max(np.abs(Z), axis=axis, keepdims=True)
    _, e = np.frexp(mu)  # mu <= 2^e
    if np.any(mu > 0) and int(e[mu > 0].min()) - s * (53 - beta) - 53 < -1000:
        return None, None
    sigma = np.where(mu > 0, np.ldexp(1.0, e + beta), 0.0)
    out = []
    R = Z.copy()
    for _ in range(s):
        Za = (R + sigma) - sigma
        R -= Za  # exact: the rounding error of R + sigma
        out.append(Za)
        sigma = sigma * 2.0 ** (beta - 53)
    return out, R


def _split_product(X, Y, C, sgn):
    k = X.shape[1]
    beta = int(np.ceil((55 + np.log2(max(k, 1))) / 2))
    s = _SLICES
    Xs, RX = _slices(X, 1, beta, s)
    Ys, RY = _slices(Y, 0, beta, s)
    if Xs is None or Ys is None:
        return None
    # the exact partial products, largest first, summed with Sum2 (cascaded TwoSum)
    S = np.zeros((X.shape[0], Y.shape[1])) if C is None else np.array(C, dtype=float)
    mag = np.abs(S)
    c = np.zeros_like(S)
    for total in range(2 * s - 1):
        for a in range(s):
            b = total - a
            if 0 <= b < s:
                P = Xs[a] @ Ys[b]
                mag += np.abs(P)
                if sgn.ndim or sgn < 0:
                    P *= sgn
                S, q = _two_sum(S, P)
                c += q
    M = S + c
    aRX, aRY = np.abs(RX), np.abs(RY)
    tail = aRX @ np.abs(Y) + (np.abs(X) + aRX) @ aRY
    n = s * s + 1
    err = U * (1 + 2 * U) * np.abs(M) + 2 * gamma(n - 1) ** 2 * mag + (1 + 2 * gamma(k)) * tail
    return M, err
