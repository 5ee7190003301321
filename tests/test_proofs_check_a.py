"""proofs_check one_loop_optimum, fixed_point, gradient_formula: each passes, and each has
negative controls (a deliberately wrong formula) that must FAIL. The negative controls run on
the quick run's parameters (the full ones in the slow tier); each must fail there too."""

from fractions import Fraction

import numpy as np
import pytest
import sympy as sp
from sympy.polys.domains import QQ

from proofs_check import fixed_point, gradient_formula, one_loop_optimum
from looptheory import population_loss_grad

n = one_loop_optimum.n
OLO = one_loop_optimum.QUICK


@pytest.mark.slow
def test_checks_pass():
    for mod in (one_loop_optimum, fixed_point, gradient_formula):
        r = mod.check()
        assert r.passed, (r.name, r.detail)
        assert r.name == mod.__name__.rsplit(".", 1)[1]
        assert (mod.check.__doc__ or "").strip().splitlines()[0]


# --- one_loop_optimum --------------------------------------------------------------------------


def test_one_loop_wishart_identity_negative_control():
    # Dropping the M^T / n term of E[S M S] must contradict Isserlis and the Wick pairings.
    wrong = lambda M: M + M.trace() * sp.eye(M.shape[0]) / n  # noqa: E731
    r = one_loop_optimum.check(**OLO, second_moment=wrong)
    assert not r.passed and "Isserlis" in r.detail


def test_one_loop_closed_form_negative_control():
    # (n + d)/n instead of (n + d + 1)/n in the W = I closed form.
    def wrong(At):
        d = At.shape[0]
        return sp.expand(d - 2 * At.trace() + (n + d) / n * sum(a**2 for a in At))

    r = one_loop_optimum.check(**OLO, unit_loss=wrong)
    # caught, and nothing else fails: every other statement of the check holds
    assert not r.passed and r.detail.split("; failures: ")[1] == "W = I loss differs from the closed form (d = 2)"


def test_one_loop_general_minimiser_negative_controls():
    # The minimiser without the tr(W) I / n term is wrong symbolically ...
    wrong = lambda W: n * ((n + 1) * W).inv() * W  # noqa: E731
    r = one_loop_optimum.check(**OLO, minimiser=wrong)
    assert not r.passed and "stated minimiser" in r.detail
    # ... and numerically: the engine's gradient does not vanish there.
    wrong_raw = lambda sx, sw, nn: nn / (nn + 1) * np.linalg.inv(sx)  # noqa: E731
    r = one_loop_optimum.check(**OLO, raw=wrong_raw)
    assert not r.passed and "gradient does not vanish" in r.detail


def test_one_loop_non_symmetric_minimiser_negative_control():
    """A wrong second moment with an extra tr(M) E_00 / n makes the general-prior loss's stationary
    point n ((n + 1) W + tr(W) (I + E_00))^{-1} W (by hand: B Q = W with Q = E[S W S]), which does
    not commute with W: stated as the minimiser, it matches the stationary point, and the check
    must still report that it is not symmetric."""
    E00 = sp.Matrix(2, 2, lambda i, j: int(i == j == 0))
    wrong = lambda M: M + (M.T + M.trace() * sp.eye(2)) / n + M.trace() * E00 / n  # noqa: E731
    matching = lambda W: n * ((n + 1) * W + W.trace() * (sp.eye(2) + E00)).inv() * W  # noqa: E731
    r = one_loop_optimum.check(**OLO, second_moment=wrong, minimiser=matching)
    assert not r.passed and "general-prior minimiser not symmetric (d = 2)" in r.detail
    assert "stationary point differs from the stated minimiser" not in r.detail


def test_one_loop_helpers():
    M, second, sms = one_loop_optimum.derived_second_moment(2)
    assert second == sp.eye(2)
    assert all(sp.simplify(e) == 0 for e in sms - one_loop_optimum.wishart_second_moment(M))
    # the exact zero test of rational functions: zero only when the entry is
    w, x = sp.symbols("w x")
    assert one_loop_optimum._is_zero_matrix(sp.Matrix([[n / (n + w) - 1 + w / (n + w), 0]]))
    assert not one_loop_optimum._is_zero_matrix(sp.Matrix([[0, n / (n + w) - 1 + x / (n + w)]]))


@pytest.mark.parametrize("d", [1, 2])
def test_one_loop_stated_forms_equal_the_derivation(d):
    """The stated closed forms against the Isserlis derivation, symbolically: the general-prior
    loss, the engine's L = 1 expansion, the W = I loss, and the minimiser at W = I."""
    O = one_loop_optimum
    At, W = O.symbols_matrix("a", d), O.symbols_matrix("w", d, symmetric=True)
    f = O.derived_loss(At, W)
    assert sp.expand(f - O.general_loss_formula(At, W)) == 0
    assert sp.expand(f - O.engine_loss_L1(At, W)) == 0
    assert sp.expand(O.derived_loss(At, sp.eye(d)) - O.unit_prior_loss(At)) == 0
    assert all(sp.simplify(e) == 0 for e in O.general_minimiser(sp.eye(d)) - n / (n + d + 1) * sp.eye(d))


# --- fixed_point ---------------------------------------------------------------------------------

SMALL = dict(loops=(1, 2), grid_d=(2,), grid_n=(10,), big_d=(10,), symbolic_loops=(2,))


def test_fixed_point_wrong_moment_negative_control():
    # m_4 with its n^-3 term dropped: not caught by the m_1..m_3 sanity checks, so the failure
    # must come from the derivation (the gradient at gamma_2 no longer vanishes).
    m = list(fixed_point.moments(8))
    m4 = sp.expand(m[4])
    m[4] = sp.expand(m4 - m4.coeff(n, -3) * n**-3)
    assert sp.expand(m[4] - m4) != 0
    r = fixed_point.check(m=m, **SMALL)
    assert not r.passed
    assert "L=2: ||grad f" in r.detail and "grad f(gamma I) !=" in r.detail
    # a dropped 1/n term of m_2 is caught as well
    m = list(fixed_point.moments(8))
    m[2] = fixed_point.d
    assert not fixed_point.check(m=m, **SMALL).passed


def test_fixed_point_wrong_limit_and_root_negative_controls():
    assert fixed_point.check(**SMALL).passed  # the stated limits and roots, on the small grid
    d = fixed_point.d
    limits = dict(fixed_point.C_LIMIT)
    limits[2] = (3 * d**2 + 8 * d + 8) / (3 * (d + 1))
    r = fixed_point.check(limits=limits, **SMALL)
    # the wrong limit at L = 2 is caught, and only it
    failures = r.detail.split("; failures: ")[1].split("; ")
    assert not r.passed and len(failures) == 1 and failures[0].startswith("L=2: lim n(1 - gamma_L)")
    r = fixed_point.check(root_shift=1e-6, **SMALL)
    assert not r.passed and "||grad f(gamma_L" in r.detail


def test_fixed_point_reports_every_grid_point_without_a_unique_root():
    """Moments m_1..m_4 = 2/25, 11/50, 1/2, 1 make phi_2'(gamma) / 4 = gamma^3 - 1.5 gamma^2 + 0.66 gamma - 0.08
    = (gamma - 0.2)(gamma - 0.5)(gamma - 0.8) at every n and d (by hand): three real roots, reported
    at each grid point, not only at the first."""
    R = sp.Rational
    m = list(fixed_point.moments(8))
    m[1], m[2], m[3], m[4] = R(8, 100), R(22, 100), R(1, 2), sp.Integer(1)
    r = fixed_point.check(m=m, loops=(1, 2), grid_d=(2,), grid_n=(1, 10), big_d=(10,), symbolic_loops=())
    assert not r.passed
    assert "phi_2' has 3 real roots at n=2, d=2" in r.detail and "phi_2' has 3 real roots at n=20, d=2" in r.detail


def test_fixed_point_reports_no_real_critical_point_instead_of_crashing():
    """m_4 = 0 leaves phi_2'(gamma) = -4 m_1 + 12 m_2 gamma - 12 m_3 gamma^2 (by hand), whose
    discriminant 48 (3 m_2^2 - 4 m_1 m_3) = -48 d^2 (1 + 6(d+1)/n + (d^2+6d+13)/n^2) is negative
    at every n, d (m_1 = d, m_2 = d + d(d+1)/n, m_3 = d + 3d(d+1)/n + d(d^2+3d+4)/n^2): no real
    root at (n, d) = (7, 3) either, where the gradient check places gamma_2. A failed check
    naming it, not an IndexError."""
    m = list(fixed_point.moments(8))
    m[4] = sp.Integer(0)
    r = fixed_point.check(m=m, loops=(1, 2), grid_d=(2,), grid_n=(10,), big_d=(10,), symbolic_loops=())
    assert not r.passed
    assert "phi_2' has 0 real roots at n=20, d=2" in r.detail
    assert "L=2: phi_2' has no real root at n=7, d=3 (no real critical point" in r.detail
    assert "L=1: ||grad f" not in r.detail  # L = 1 does not involve m_4 and still passes


def test_fixed_point_stated_limits_at_three_and_four_loops():
    """lim n (1 - gamma_L) = C_LIMIT[L] (d symbolic) from the stationarity polynomial, for the two
    loop counts the small grid of the other tests does not reach."""
    m = fixed_point.moments(8)
    for L in (3, 4):
        ok, c = fixed_point.asymptotic_constant(fixed_point.stationarity(L, m), L)
        assert ok and sp.cancel(c - fixed_point.C_LIMIT[L]) == 0


def test_exact_loss_d2_with_a_general_prior():
    """The engine-free d = 2 loss (sigma_x = I, a general sigma_w) against the exact engine."""
    from fractions import Fraction as F

    import looptheory as lt

    sw = np.array([[F(1), F(-1, 3)], [F(-1, 3), F(3, 2)]], dtype=object)
    A = np.array([[F(1, 2), F(1, 5)], [F(-1, 4), F(2, 3)]], dtype=object)
    task = lt.Task(2, 5, np.eye(2, dtype=object) * F(1), sw)
    for L in (1, 2):
        poly = fixed_point.exact_loss_d2(L, W=gradient_formula.SIGMA_W)
        assert poly(A[0, 0], A[0, 1], A[1, 0], A[1, 1], 0, 0, sp.Rational(1, 5)) == lt.population_loss(task, A, L, exact=True)


def test_fixed_point_symbolic_identity_helper():
    assert fixed_point.symbolic_gradient_identity(2) == (True, True)
    m = list(fixed_point.moments(4))
    m[3] = m[3] + 1 / n**2
    assert fixed_point.symbolic_gradient_identity(2, m) == (False, False)


def test_fixed_point_exact_roots():
    # phi_1'(gamma) = 2 (gamma m_2 - d): its root is d / m_2 = n / (n + d + 1), exactly.
    P = fixed_point.at_point(fixed_point.stationarity(1), 7, 3)
    (root,) = fixed_point.real_roots(P)
    assert root[0] <= QQ(7, 11) <= root[1] and root[2] == 1
    assert fixed_point.root_value(P, root) == pytest.approx(Fraction(7, 11), abs=1e-20)
    assert fixed_point.root_in_unit_interval(P)
    # gamma_2 < gamma_1 at (n, d) = (7, 3); a root is never strictly below itself
    Q = fixed_point.at_point(fixed_point.stationarity(2), 7, 3)
    (root2,) = fixed_point.real_roots(Q)
    assert fixed_point.root_below(Q, root2, P, root) and not fixed_point.root_below(P, root, Q, root2)
    assert not fixed_point.root_below(P, root, P, root)
    # a root outside (0, 1): gamma - 2
    assert not fixed_point.root_in_unit_interval(sp.Poly(fixed_point.gamma - 2, fixed_point.gamma, domain=QQ))


# --- gradient_formula ----------------------------------------------------------------------------

L2 = (gradient_formula.CASES[1],)
L2U = (gradient_formula.CASES[3],)
GQ = dict(n_values=gradient_formula.QUICK["n_values"], points=gradient_formula.QUICK["points"], engine_free=())


def test_gradient_formula_wrong_gradient_negative_controls():
    def transposed(task, A, loops, u=None):
        f, gA, gu = population_loss_grad(task, A, loops, u)
        return f, gA.T, gu

    def no_finite_n(task, A, loops, u=None):  # every 1/n term dropped
        return population_loss_grad(task.with_n(float("inf")), A, loops, u)

    def doubled_u(task, A, loops, u=None):
        f, gA, gu = population_loss_grad(task, A, loops, u)
        return f, gA, 2 * gu

    for fn, cases in ((transposed, L2), (no_finite_n, L2), (doubled_u, L2U)):
        r = gradient_formula.check(cases=cases, hand_gradient=fn, **GQ)
        assert not r.passed and "gradient differs" in r.detail, fn.__name__


def test_gradient_formula_wrong_loss_negative_control():
    # Dropping the n^-2 terms of the symbolic loss: loss and gradient both disagree.
    r = gradient_formula.check(cases=L2, drop_power=2, **GQ)
    assert not r.passed and "gradient differs" in r.detail and "loss differs" in r.detail


def test_gradient_formula_exact_evaluation():
    # specialise (integer arithmetic over one denominator) = the ring's own exact evaluation
    loss = gradient_formula.symbolic_loss(2, gradient_formula.SIGMA_X, gradient_formula.SIGMA_W, Fraction(1, 4), True)
    rng = np.random.default_rng(7)
    A, u = rng.standard_normal((2, 2)), rng.standard_normal(2)
    coeffs = gradient_formula.specialise(loss, A, u)
    exact = [QQ(*Fraction(float(x)).as_integer_ratio()) for x in list(A.ravel()) + list(u)]
    for nn in (3, 1000):
        v = loss(*exact, QQ(1, nn))
        assert sum(c * Fraction(1, nn) ** k for k, c in coeffs.items()) == Fraction(int(v.numerator), int(v.denominator))
    assert gradient_formula.at_n(coeffs, float("inf")) == float(coeffs[0])
