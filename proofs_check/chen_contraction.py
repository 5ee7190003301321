"""Claim C2: L loops of GD with eta = 1/lambda_max(S) contract the error by (1 - 1/kappa)^L <= exp(-L/(2 kappa)).

GD on the prompt's least squares, w_{t+1} = w_t - (eta/n) X (X^T w_t - y), S = X X^T / n. At the
least-squares solution X y = X X^T w_LS (normal equations), so e_t = w_t - w_LS obeys

    e_{t+1} = (I - eta S) e_t.

With eta = 1/lambda_max the eigenvalues 1 - lambda_i/lambda_max of the symmetric I - eta S lie in
[0, 1 - 1/kappa] (kappa = lambda_max/lambda_min), so

    ||e_L|| <= (1 - 1/kappa)^L ||e_0|| <= exp(-L/kappa) ||e_0|| <= exp(-L/(2 kappa)) ||e_0||,

using log(1 - x) <= -x on [0, 1). The first bound is attained for e_0 along the bottom eigenvector
of S; the reported exp(-L/(2 kappa)) is looser than exp(-L/kappa) by the factor exp(L/(2 kappa)).
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp
from sympy.polys.domains import QQ
from sympy.polys.fields import field
from sympy.polys.matrices import DomainMatrix

from .runner import CheckOutcome


def recursion(S, eta):
    """The claimed error map: e_{t+1} = (I - eta S) e_t."""
    return sp.eye(S.shape[0]) - eta * S


def tight_rate(kappa, L):
    """The claimed exact worst-case contraction after L loops: (1 - 1/kappa)^L."""
    return (1 - 1 / kappa) ** L


def reported_rate(kappa, L):
    """The rate as reported for C2: exp(-L / (2 kappa))."""
    return sp.exp(-L / (2 * kappa))


def log_bound(x):
    """The claimed upper bound of log(1 - x) on [0, 1): -x."""
    return -x


def _symbols(d: int, n: int):
    X = [[sp.Symbol(f"x{i}_{j}") for j in range(n)] for i in range(d)]
    y = [sp.Symbol(f"y{j}") for j in range(n)]
    return X, y


def recursion_residuals(d: int, n: int, rec=recursion):
    """(det G (G w_LS - X y), det G (w_{t+1} - w_LS - M e_t)) for G = X X^T and symbolic X, y,
    e_t, eta, with w_t = w_LS + e_t and M = rec(S, eta): DomainMatrix objects over the
    polynomial ring QQ[X, y, e, eta], exact (zero iff their expansions are). w_LS = adj(G) X y /
    det G; multiplying by det G keeps both residuals polynomial. The formula under test gets
    S = G/n as a SymPy Matrix and returns one."""
    X, y = _symbols(d, n)
    e = [sp.Symbol(f"e{i}") for i in range(d)]
    eta = sp.Symbol("eta")
    K = QQ[tuple(sum(X, []) + y + e + [eta])]

    def mat(rows):
        return DomainMatrix([[K.from_sympy(sp.sympify(v)) for v in r] for r in rows], (len(rows), len(rows[0])), K)

    Xm, ym, em = mat(X), mat([[v] for v in y]), mat([[v] for v in e])
    G = Xm * Xm.transpose()
    det = G.det()
    v = G.adjugate() * Xm * ym  # det * w_LS
    normal = G * v - Xm * ym * det
    w = v + em * det  # det * w_t
    w_next = w - Xm * (Xm.transpose() * w - ym * det) * K.from_sympy(eta / n)
    M = mat(rec(G.to_Matrix() / n, eta).tolist())
    step = w_next - v - M * em * det
    return normal, step


def noiseless_is_truth(d: int = 2, n: int = 3) -> bool:
    """Without noise (y = X^T w*) the least-squares solution is w*: adj(G) X X^T w* = det(G) w*,
    exactly in QQ[X, w*]."""
    X, _ = _symbols(d, n)
    ws = [sp.Symbol(f"w{i}") for i in range(d)]
    K = QQ[tuple(sum(X, []) + ws)]
    Xm = DomainMatrix([[K.from_sympy(v) for v in r] for r in X], (d, n), K)
    wm = DomainMatrix([[K.from_sympy(v)] for v in ws], (d, 1), K)
    G = Xm * Xm.transpose()
    return (G.adjugate() * G * wm - wm * G.det()).is_zero_matrix


def spectrum_in_range():
    """lambda_min = a > 0, lambda_max = a + b (b >= 0), lambda = a + s b with s = u/(1+u) in
    [0, 1): (1 - lambda/lambda_max >= 0, (1 - 1/kappa) - (1 - lambda/lambda_max) >= 0), both as
    sign facts SymPy proves, plus the endpoints lambda = lambda_max -> 0 and lambda_min -> 1 - 1/kappa."""
    a, u = sp.symbols("a u", positive=True)
    b = sp.Symbol("b", nonnegative=True)
    lmin, lmax = a, a + b
    lam = a + u / (1 + u) * b
    eig = 1 - lam / lmax
    kappa = lmax / lmin
    return (
        sp.factor(sp.simplify(eig)).is_nonnegative,
        sp.factor(sp.simplify((1 - 1 / kappa) - eig)).is_nonnegative,
        sp.simplify(1 - lmax / lmax) == 0 and sp.simplify((1 - lmin / lmax) - (1 - 1 / kappa)) == 0,
    )


def eigenbasis_norm_identity(L: int = 3) -> bool:
    """For a 2 x 2 symmetric S = R diag(l1, l2) R^T (R a rational rotation, symbolic angle
    parameter), ||(I - eta S)^L e||^2 = sum_i c_i^2 (1 - eta l_i)^{2L}, c = R^T e: the norm is
    a weighted sum of the eigenvalue powers, so the worst case is the largest |1 - eta l_i|^L.
    Decided exactly in the field QQ(r, l1, l2, eta, e0, e1) of rational functions."""
    _, r, l1, l2, eta, e0, e1 = field("r l1 l2 eta e0 e1", QQ)
    c, s = (1 - r**2) / (1 + r**2), 2 * r / (1 + r**2)
    R = [[c, -s], [s, c]]
    lam = (l1, l2)
    # I - eta S = R diag(1 - eta l_i) R^T, formed entrywise
    M = [[(1 if i == j else 0) - eta * sum(R[i][k] * lam[k] * R[j][k] for k in range(2)) for j in range(2)]
         for i in range(2)]
    v = [e0, e1]
    for _ in range(L):
        v = [M[i][0] * v[0] + M[i][1] * v[1] for i in range(2)]
    coords = [R[0][k] * e0 + R[1][k] * e1 for k in range(2)]  # R^T e
    want = sum(coords[k] ** 2 * (1 - eta * lam[k]) ** (2 * L) for k in range(2))
    return v[0] ** 2 + v[1] ** 2 - want == 0


def scalar_chain(log_rhs=log_bound, rep=reported_rate):
    """Returns (log inequality proved, exp(-L/kappa) <= rep proved, rep / exp(-L/kappa)).
    log(1 - x) <= log_rhs(x) on [0, 1) is proved as: equal-or-below at x = 0 and the gap
    log_rhs(x) - log(1 - x) nondecreasing, its derivative written with x = s/(1+s), s >= 0."""
    x, s = sp.Symbol("x"), sp.Symbol("s", nonnegative=True)
    gap = log_rhs(x) - sp.log(1 - x)
    at0 = sp.simplify(gap.subs(x, 0))
    slope = sp.factor(sp.simplify(sp.diff(gap, x).subs(x, s / (1 + s))))
    log_ok = bool(at0.is_nonnegative) and bool(slope.is_nonnegative)
    L, kappa = sp.symbols("L kappa", positive=True)
    # (1 - 1/kappa)^L = exp(L log(1 - 1/kappa)) <= exp(L log_rhs(1/kappa)) by monotonicity of exp.
    margin = sp.simplify(sp.expand_log(sp.log(rep(kappa, L)), force=True) + L / kappa)
    factor = sp.simplify(rep(kappa, L) / sp.exp(-L / kappa))
    return log_ok, bool(margin.is_nonnegative), factor


def random_prompts(seed: int = 0):
    """(d, n, L, X, y) for a handful of Gaussian prompts with label noise (so w_LS != w*)."""
    rng = np.random.default_rng(seed)
    out = []
    for d, n in [(2, 2), (2, 5), (3, 10), (5, 10), (5, 50), (10, 20), (10, 100), (20, 40)]:
        X = rng.standard_normal((d, n))
        w_star = rng.standard_normal(d)
        y = X.T @ w_star + 0.3 * rng.standard_normal(n)
        for L in (1, 3, 10, 30):
            out.append((d, n, L, X, y))
    return out


def numeric_chain(tight=tight_rate, rep=reported_rate, seed: int = 0, rtol: float = 1e-6):
    """Run GD on random prompts: from w_0 = 0 and from w_0 = w_LS + alpha v_min. Returns
    (failures, rows) where rows hold kappa, the observed ||e_L||/alpha, the rates, and the decay
    exponent per loop along v_min, -log(1 - 1/kappa), against the reported 1/(2 kappa)."""
    fails, rows, tight_tested = [], [], 0
    for d, n, L, X, y in random_prompts(seed):
        S = X @ X.T / n
        lam, V = np.linalg.eigh(S)
        kappa = lam[-1] / lam[0]
        eta = 1.0 / lam[-1]
        w_ls = np.linalg.solve(X @ X.T, X @ y)
        t_rate = float(tight(kappa, L))
        r_rate = float(rep(kappa, L))
        mid = math.exp(-L / kappa)
        if not (t_rate <= mid * (1 + 1e-12) and mid <= r_rate * (1 + 1e-12)):
            fails.append(("chain order", d, n, L, t_rate, mid, r_rate))
        for start in ("zero", "v_min"):
            w = np.zeros(d) if start == "zero" else w_ls + np.linalg.norm(w_ls) * V[:, 0]
            alpha = np.linalg.norm(w - w_ls)
            for _ in range(L):
                w = w - (eta / n) * X @ (X.T @ w - y)
            ratio = np.linalg.norm(w - w_ls) / alpha
            # Round-off in w - w_LS is about kappa * eps * |w_LS|; allow it above the bound.
            slack = 1e-9 + 100 * kappa * np.finfo(float).eps * np.linalg.norm(w_ls) / alpha
            if ratio > t_rate * (1 + 1e-9) + slack or ratio > r_rate * (1 + 1e-9) + slack:
                fails.append(("bound violated", start, d, n, L, ratio, t_rate, r_rate))
            # Tightness is only measurable where the bound is well above the round-off floor.
            if start == "v_min" and t_rate > 1e3 * slack:
                tight_tested += 1
                if abs(ratio / t_rate - 1) > rtol:
                    fails.append(("not tight on v_min", d, n, L, ratio, t_rate))
        rows.append(
            {
                "d": d,
                "n": n,
                "L": L,
                "kappa": float(kappa),
                "tight": t_rate,
                "reported": r_rate,
                "exponent_per_loop": -math.log1p(-1 / kappa) if kappa > 1 else math.inf,
                "reported_exponent_per_loop": float(1 / (2 * kappa)),
            }
        )
    if tight_tested < len(rows) // 2:
        fails.append(("tightness measurable on too few prompts", tight_tested))
    return fails, rows


#: The quick run (`looptheory verify --quick`): the symbolic recursion for (d, n) up to (3, 3);
#: the full run adds (d, n) = (3, 4). The eigenbasis identity, the scalar chain and the 32
#: random prompts are the same in both.
QUICK = dict(sizes=((2, 2), (2, 3), (3, 3)))


def check(sizes=((2, 2), (2, 3), (3, 3), (3, 4)), eigen_Ls=(2, 3), recursion=recursion, tight_rate=tight_rate,
          reported_rate=reported_rate, log_bound=log_bound) -> CheckOutcome:
    """e_{t+1} = (I - eta S) e_t; ||e_L|| <= (1 - 1/kappa)^L ||e_0|| <= exp(-L/kappa) ||e_0|| <= exp(-L/(2 kappa)) ||e_0||, tight on v_min.

    sizes: the (d, n) of the symbolic normal equations and error recursion; eigen_Ls: the L of
    the 2 x 2 eigenbasis norm identity. recursion, tight_rate, reported_rate, log_bound: the
    formulas under test."""
    fails, data = [], {}
    for d, n in sizes:
        normal, step = recursion_residuals(d, n, recursion)
        if not normal.is_zero_matrix:
            fails.append(f"normal equations at (d, n) = {(d, n)}")
        if not step.is_zero_matrix:
            fails.append(f"error recursion at (d, n) = {(d, n)}")
    if not noiseless_is_truth():
        fails.append("w_LS != w* without noise")
    nonneg, below_top, ends = spectrum_in_range()
    if not (nonneg and below_top and ends):
        fails.append(f"spectrum of I - eta S in [0, 1 - 1/kappa]: {(nonneg, below_top, ends)}")
    for L in eigen_Ls:
        if not eigenbasis_norm_identity(L):
            fails.append(f"eigenbasis norm identity at L = {L}")
    log_ok, rep_ok, factor = scalar_chain(log_bound, reported_rate)
    Ls, ks = sp.symbols("L kappa", positive=True)
    if not log_ok:
        fails.append(f"log(1 - x) <= {log_bound(sp.Symbol('x'))} not proved on [0, 1)")
    if not rep_ok:
        fails.append(f"exp(-L/kappa) <= {reported_rate(ks, Ls)} not proved")
    if sp.simplify(factor - sp.exp(Ls / (2 * ks))) != 0:
        data["looseness_factor"] = str(factor)
    else:
        data["looseness_factor"] = "exp(L/(2 kappa))"
    bad, rows = numeric_chain(tight_rate, reported_rate)
    if bad:
        fails.append(f"numerical chain: {bad[:4]}{' ...' if len(bad) > 4 else ''}")
    data["prompts"] = rows
    ratio = [r["exponent_per_loop"] / r["reported_exponent_per_loop"] for r in rows]
    data["exponent_over_reported"] = (min(ratio), max(ratio))
    detail = (
        f"X y = X X^T w_LS and e_{{t+1}} = (I - eta S) e_t for symbolic X, (d, n) in {list(sizes)}; eig(I - eta S) in "
        f"[0, 1 - 1/kappa]; 2 x 2 eigenbasis norm identity at L in {list(eigen_Ls)}; log(1-x) <= -x; reported bound looser by "
        f"{data['looseness_factor']}; {len(rows)} random prompts: bound holds, tight on v_min; true exponent per loop "
        f"-log(1 - 1/kappa) is {min(ratio):.2f}-{max(ratio):.2f} x the reported 1/(2 kappa)"
    )
    if fails:
        detail += "; failures: " + "; ".join(fails)
    return CheckOutcome("chen_contraction", not fails, detail, data=data)
