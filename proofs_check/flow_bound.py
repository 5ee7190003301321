"""The gradient-flow bound of claim G3 from a dominance constant mu, for L >= 2 and L = 1.

With p = (2L-1)/L and q = (L-1)/L (so p = 1 + q), the solution of df/dt = -mu f^p, f(0) = f0 > 0, is

    f(t) = (f0^{-(L-1)/L} + mu (L-1) t / L)^{-L/(L-1)},

and it reaches f <= xi at

    T(xi) = (L / (mu (L-1))) (xi^{-(L-1)/L} - f0^{-(L-1)/L}) <= (L / (mu (L-1))) (1/xi)^{(L-1)/L},

a power of 1/xi below 1 (polynomial in 1/xi). Under gradient flow with a dominance inequality,
g = f - f* obeys g' = -||grad f||^2 <= -mu g^p, and d/dt g^{-q} = q mu + (slack) >= q mu because
p - q - 1 = 0, so g(t) is at most the solution above (comparison). For L = 1 (p = 1) the solution
is f0 exp(-mu t) with T(xi) = log(f0 / xi) / mu: linear convergence, and also the q -> 0 limit of
both formulas. At n = inf, L = 1, ||grad f||^2 = 4 f exactly, so mu = 4 there.
"""

from __future__ import annotations

import sympy as sp

from .runner import CheckOutcome

t, mu, f0, xi = sp.symbols("t mu f_0 xi", positive=True)


def solution(L, t, mu, f0):
    """The claimed solution: (f0^{-(L-1)/L} + mu (L-1) t / L)^{-L/(L-1)}."""
    return (f0 ** (-(L - 1) / L) + mu * (L - 1) * t / L) ** (-L / (L - 1))


def hitting_time(L, xi, mu, f0):
    """The claimed time to reach xi: (L / (mu (L-1))) (xi^{-(L-1)/L} - f0^{-(L-1)/L})."""
    return L / (mu * (L - 1)) * (xi ** (-(L - 1) / L) - f0 ** (-(L - 1) / L))


def _L():
    # L = 1 + m with m > 0 lets SymPy's assumptions know L > 1 (so q > 0 and p > 1).
    m = sp.Symbol("m", positive=True)
    return m, 1 + m


def ode_residual(sol=solution):
    """(df/dt + mu f^p simplified, f(0) - f0 simplified) for general L = 1 + m > 1."""
    _, L = _L()
    f = sol(L, t, mu, f0)
    p = (2 * L - 1) / L
    return sp.simplify(sp.diff(f, t) + mu * f**p), sp.simplify(f.subs(t, 0) - f0)


def dsolve_agrees(Ls=(2, 3, 4), sol=solution):
    """sympy.dsolve of f' = -mu f^P for symbolic P (its Bernoulli solution, valid for P != 1),
    with the constant fixed by f(0) = f0, then P = (2L-1)/L: compared with sol at each L.
    Returns the list of L where it differs. (dsolve with ics at fixed rational P reports several
    branches, so solve it for symbolic P and fix the constant by hand. The Bernoulli hint gives
    the explicit solution directly; the default separable route reaches the same one through
    solve() and simplify, 3x slower.)"""
    P, C1 = sp.Symbol("P", positive=True), sp.Symbol("C1")
    F = sp.Function("f")
    general = sp.dsolve(sp.Eq(F(t).diff(t), -mu * F(t) ** P), F(t), hint="Bernoulli").rhs
    if general.has(F):
        return ["dsolve gave no explicit solution"]
    base, expo = general.as_base_exp()
    # base(0)^expo = f0 with a positive base means base(0) = f0^{1/expo}.
    c1 = sp.solve(sp.Eq(base.subs(t, 0), f0 ** (1 / expo)), C1)
    bad = []
    for L in Ls:
        Pv = sp.Rational(2 * L - 1, L)
        got = (base.subs(C1, c1[0]).subs(P, Pv)) ** expo.subs(P, Pv)
        want = sol(sp.Integer(L), t, mu, f0)
        if sp.simplify(sp.powsimp(got - want, force=True)) != 0:
            bad.append(L)
    return bad


def hitting_time_residual(sol=solution, T=hitting_time):
    """(f(T(xi)) - xi, df/dt sign, T(f0), lim_{xi->0} T xi^q) for general L = 1 + m."""
    _, L = _L()
    f = sol(L, t, mu, f0)
    q = (L - 1) / L
    at_T = sp.simplify(sp.powsimp(f.subs(t, T(L, xi, mu, f0)) - xi, force=True))
    # SymPy signs the derivative as it stands (a negative constant times a power of a positive
    # base); simplify only if it cannot.
    slope = sp.diff(f, t)
    slope_negative = slope.is_negative if slope.is_negative is not None else sp.simplify(slope).is_negative
    start = sp.simplify(T(L, f0, mu, f0))
    try:
        lead = sp.simplify(sp.limit(T(L, xi, mu, f0) * xi**q, xi, 0, "+"))
    except NotImplementedError:  # SymPy cannot sign the exponent: not the claimed power of 1/xi
        lead = None
    return at_T, slope_negative, start, lead


def comparison_residual():
    """With g' = -mu g^p - r (r >= 0 the slack of the dominance inequality), d/dt g^{-q} minus
    (q mu + q r g^{-q-1}) simplifies to 0; the slack term is >= 0, so g^{-q} grows at least
    like q mu t and g stays below the solution."""
    _, L = _L()
    q, p = (L - 1) / L, (2 * L - 1) / L
    g, r = sp.symbols("g r", positive=True)
    gdot = -mu * g**p - r
    rate = -q * g ** (-q - 1) * gdot
    return sp.simplify(sp.powsimp(sp.expand(rate - q * mu - q * r * g ** (-q - 1)), force=True))


def linear_case():
    """L = 1: (dsolve solution - f0 exp(-mu t), q -> 0 limit of the L >= 2 solution and of T
    minus the exponential ones, ||grad f||^2 - 4 f at n = inf for a generic 2 x 2 A)."""
    F = sp.Function("f")
    ds = sp.dsolve(sp.Eq(F(t).diff(t), -mu * F(t)), F(t), ics={F(0): f0})
    exp_sol = f0 * sp.exp(-mu * t)
    q = sp.Symbol("q", positive=True)
    # Write the L >= 2 formulas in q = (L-1)/L: L/(L-1) = 1/q.
    lim_f = sp.limit((f0 ** (-q) + mu * q * t) ** (-1 / q), q, 0, "+")
    lim_T = sp.limit((xi ** (-q) - f0 ** (-q)) / (mu * q), q, 0, "+")
    A = sp.Matrix(2, 2, lambda i, j: sp.Symbol(f"a{i}_{j}", real=True))
    f = sum(e**2 for e in (sp.eye(2) - A.T))
    g2 = sum(sp.diff(f, a) ** 2 for a in A)
    return (
        sp.simplify(ds.rhs - exp_sol),
        sp.simplify(lim_f - exp_sol),
        sp.simplify(sp.expand_log(lim_T - sp.log(f0 / xi) / mu, force=True)),
        sp.expand(g2 - 4 * f),
    )


#: The quick run (`looptheory verify --quick`): the comparison with sympy.dsolve at L = 2 only
#: (the full run: L = 2, 3, 4); every general-L step (symbolic L > 1) is the same in both.
QUICK = dict(dsolve_Ls=(2,))


def check(dsolve_Ls=(2, 3, 4), solution=solution, hitting_time=hitting_time) -> CheckOutcome:
    """df/dt = -mu f^{(2L-1)/L}: f = (f0^{-(L-1)/L} + mu (L-1) t/L)^{-L/(L-1)}, T(xi) = L/(mu(L-1)) (xi^{-(L-1)/L} - f0^{-(L-1)/L}); L = 1: exp.

    dsolve_Ls: the L at which the solution is compared with sympy.dsolve's; solution,
    hitting_time: the formulas under test."""
    fails = []
    res, ic = ode_residual(solution)
    if res != 0 or ic != 0:
        fails.append(f"ODE residual {res}, initial condition residual {ic}")
    bad = dsolve_agrees(dsolve_Ls, sol=solution)
    if bad:
        fails.append(f"dsolve disagrees at L = {bad}")
    at_T, decreasing, start, lead = hitting_time_residual(solution, hitting_time)
    m, L = _L()
    want_lead = sp.simplify(L / (mu * (L - 1)))
    if at_T != 0 or decreasing is not True or start != 0 or lead is None or sp.simplify(lead - want_lead) != 0:
        fails.append(f"hitting time: f(T) - xi = {at_T}, decreasing {decreasing}, T(f0) = {start}, T xi^q -> {lead}")
    comp = comparison_residual()
    if comp != 0:
        fails.append(f"comparison identity residual {comp}")
    lin = linear_case()
    if any(v != 0 for v in lin):
        fails.append(f"L = 1 residuals (dsolve, lim f, lim T, |grad|^2 - 4f) = {lin}")
    detail = (
        f"ODE and f(0) = f0 verified for symbolic L > 1, matches dsolve at L in {list(dsolve_Ls)}; f(T(xi)) = xi, f decreasing, "
        "T(xi) ~ L/(mu(L-1)) xi^{-(L-1)/L} as xi -> 0; comparison (p - q - 1 = 0) covers f' <= -mu f^p; "
        "L = 1: f0 exp(-mu t) = the q -> 0 limit, T = log(f0/xi)/mu, and |grad f|^2 = 4 f at n = inf"
    )
    if fails:
        detail += "; failures: " + "; ".join(fails)
    return CheckOutcome("flow_bound", not fails, detail)
