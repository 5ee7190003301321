"""Matrix products without the rounding that would swamp small letters: compensated (double-double)
dot products with a rigorous error bound.

Near the optimum the letter M_E = I - A^T sigma_x is of size 1e-11 while A^T sigma_x is of size 1;
forming it in plain float64 leaves an absolute error of about 1e-16 per unit of |A^T| |sigma_x|,
which is a relative error of 1e-5 or worse in E, and the loss near the optimum is a polynomial of
degree 2L in E. Here every product a_ik b_kj is split exactly into p + e (Dekker's TwoProduct) and
the 2d + 1 numbers of each entry are summed with TwoSum in double-double (Ogita, Rump and Oishi,
"Accurate sum and dot product", SIAM J. Sci. Comput. 26, 2005, Algorithm Dot2). The result,
rounded once to float64, satisfies

    |fl(C + s X Y) - (C + s X Y)| <= u |C + s X Y| + gamma_{2d+1}^2 (|C| + |X| |Y|)

entrywise (their Proposition 5.5 with u = 2^-53, gamma_k = k u / (1 - k u)), which `product`
returns beside the value.
"""

from __future__ import annotations

import numpy as np

U = 2.0**-53
_SPLIT = 134217729.0  # 2^27 + 1


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


def product(X, Y, C=None, sign=1.0):
    """(M, err): M = fl(C + sign * X @ Y) computed in double-double and rounded once, and an
    entrywise bound err >= |M - (C + sign X Y)| (see the module docstring).

    X, Y: float arrays (d, k) and (k, m); C: (d, m) or None (zero); sign: +1 or -1. Entries
    above 1e150 in magnitude could overflow the exact splitting; they fall back to the plain
    product with the classical bound gamma_k |X| |Y|.
    """
    X = np.asarray(X, dtype=float)
    Y = np.asarray(Y, dtype=float)
    k = X.shape[1]
    absC = 0.0 if C is None else np.abs(C)
    mag = np.abs(X) @ np.abs(Y) + absC
    if max(np.max(np.abs(X), initial=0.0), np.max(np.abs(Y), initial=0.0)) > 1e150:
        M = (0.0 if C is None else C) + sign * (X @ Y)
        return M, gamma(k + 1) * mag
    # all k products at once: (d, k, m)
    p, e = _two_product(X[:, :, None], Y[None, :, :])
    if sign < 0:
        p, e = -p, -e
    s = np.zeros((X.shape[0], Y.shape[1])) if C is None else np.array(C, dtype=float)
    c = np.zeros_like(s)
    for j in range(k):
        s, q = _two_sum(s, p[:, j, :])
        c = c + (q + e[:, j, :])
    M = s + c
    return M, U * np.abs(M) + gamma(2 * k + 1) ** 2 * mag
