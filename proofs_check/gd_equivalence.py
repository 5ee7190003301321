"""The sparse looped attention prediction equals preconditioned GD, symbolically.

With symbolic entries of X, y, x_q, A and u (small d, n, loops), the real layer
Z <- Z - (1/n) P Z M Z^T Q Z applied L times with Q = [[A, 0], [0, 0]], P = [[0, 0], [u^T, 1]]
gives a prediction -[Z_L]_{d+1,n+1} whose difference from <x_q, w_L>, w_L the L-th iterate of
w_{t+1} = w_t + (1/n) A^T X (y + X^T u - X^T w_t), expands to exactly 0.
"""

from __future__ import annotations

import sympy as sp
from sympy.polys.domains import QQ
from sympy.polys.matrices import DomainMatrix

from .runner import CheckOutcome


def gd_step(w, A, X, y, u, c):
    """The preconditioned GD step w + c A^T X (y + X^T u - X^T w), c = 1/n (replaceable in
    `difference`: the negative controls pass wrong steps with this signature). The arguments
    are DomainMatrix objects over one polynomial ring, c an element of it."""
    Xt = X.transpose()
    return w + A.transpose() * X * (y + Xt * u - Xt * w) * c


def difference(d: int, n: int, loops: int, with_u: bool = True, gd_step=gd_step):
    """prediction(looped attention) - prediction(GD) as an element of the polynomial ring
    QQ[x, y, q, a, u] over the symbolic entries (exact sparse polynomial arithmetic: the
    difference is 0 exactly when its expansion is). gd_step overrides the GD update (negative
    controls)."""
    X = [[sp.Symbol(f"x{i}_{j}") for j in range(n)] for i in range(d)]
    y = [sp.Symbol(f"y{j}") for j in range(n)]
    xq = [sp.Symbol(f"q{i}") for i in range(d)]
    A = [[sp.Symbol(f"a{i}_{j}") for j in range(d)] for i in range(d)]
    u = [sp.Symbol(f"u{i}") for i in range(d)] if with_u else []
    K = QQ[tuple(sum(X, []) + y + xq + sum(A, []) + u)]

    def mat(rows):
        return DomainMatrix([[K.from_sympy(sp.sympify(v)) for v in r] for r in rows], (len(rows), len(rows[0])), K)

    uu = u or [0] * d
    Z = mat([X[i] + [xq[i]] for i in range(d)] + [y + [0]])
    Q = mat([A[i] + [0] for i in range(d)] + [[0] * (d + 1)])
    P = mat([[0] * (d + 1) for _ in range(d)] + [uu + [1]])
    M = DomainMatrix.diag([K.one] * n + [K.zero], K)
    c = K.convert(QQ(1, n))
    for _ in range(loops):
        Z = Z - P * Z * M * Z.transpose() * Q * Z * c
    pred = -Z.to_list()[d][n]
    Xm, Am = mat(X), mat(A)
    ym, um = mat([[v] for v in y]), mat([[v] for v in uu])
    w = DomainMatrix.zeros((d, 1), K)
    for _ in range(loops):
        w = gd_step(w, Am, Xm, ym, um, c)
    return pred - (mat([xq]) * w).to_list()[0][0]


#: The quick run's cases (`looptheory verify --quick`); the full run adds (2, 2, 3) and (3, 2, 2).
QUICK = dict(cases=((1, 2, 3), (2, 2, 2), (2, 3, 2)))


def check(cases=((1, 2, 3), (2, 2, 2), (2, 3, 2), (2, 2, 3), (3, 2, 2))) -> CheckOutcome:
    """Sparse looped attention prediction minus preconditioned-GD prediction expands to 0 (with u)."""
    bad = [c for c in cases if difference(*c) != 0]
    return CheckOutcome(
        "gd_equivalence",
        not bad,
        f"(d, n, loops) in {list(cases)} with symbolic X, y, x_q, A, u: difference "
        + ("expands to 0" if not bad else f"non-zero at {bad}"),
    )
