"""The sparse looped attention prediction equals preconditioned GD, symbolically.

With symbolic entries of X, y, x_q, A and u (small d, n, loops), the real layer
Z <- Z - (1/n) P Z M Z^T Q Z applied L times with Q = [[A, 0], [0, 0]], P = [[0, 0], [u^T, 1]]
gives a prediction -[Z_L]_{d+1,n+1} whose difference from <x_q, w_L>, w_L the L-th iterate of
w_{t+1} = w_t + (1/n) A^T X (y + X^T u - X^T w_t), expands to exactly 0.
"""

from __future__ import annotations

import sympy as sp

from .runner import CheckOutcome


def difference(d: int, n: int, loops: int, with_u: bool = True, gd_step=None):
    """Expanded prediction(looped attention) - prediction(GD). gd_step overrides the GD
    update (negative controls)."""
    X = sp.Matrix(d, n, lambda i, j: sp.Symbol(f"x{i}_{j}"))
    y = sp.Matrix(n, 1, lambda i, j: sp.Symbol(f"y{i}"))
    xq = sp.Matrix(d, 1, lambda i, j: sp.Symbol(f"q{i}"))
    A = sp.Matrix(d, d, lambda i, j: sp.Symbol(f"a{i}_{j}"))
    u = sp.Matrix(d, 1, lambda i, j: sp.Symbol(f"u{i}")) if with_u else sp.zeros(d, 1)
    Z = sp.zeros(d + 1, n + 1)
    Z[:d, :n] = X
    Z[:d, n] = xq
    Z[d, :n] = y.T
    Q = sp.zeros(d + 1, d + 1)
    Q[:d, :d] = A
    P = sp.zeros(d + 1, d + 1)
    P[d, :d] = u.T
    P[d, d] = 1
    M = sp.diag(*([1] * n + [0]))
    for _ in range(loops):
        Z = (Z - P * Z * M * Z.T * Q * Z / n).expand()
    pred = -Z[d, n]
    w = sp.zeros(d, 1)
    labels = y + X.T * u
    step = gd_step or (lambda w: w + A.T * X * (labels - X.T * w) / n)
    for _ in range(loops):
        w = step(w)
    return sp.expand(pred - (xq.T * w)[0, 0])


def check(cases=((1, 2, 3), (2, 2, 2), (2, 3, 2))) -> CheckOutcome:
    """Sparse looped attention prediction minus preconditioned-GD prediction expands to 0 (with u)."""
    bad = [c for c in cases if difference(*c) != 0]
    return CheckOutcome(
        "gd_equivalence",
        not bad,
        f"(d, n, loops) in {list(cases)} with symbolic X, y, x_q, A, u: difference "
        + ("expands to 0" if not bad else f"non-zero at {bad}"),
    )
