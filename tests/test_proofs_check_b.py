"""proofs_check (second batch): dominance at n = inf, the flow bound, Chen et al.'s contraction.

Each check passes, and a deliberately wrong formula injected through its parameters makes it FAIL.
The negative controls run on the quick run's parameters (each must fail there too); the full
runs are in the slow tier.
"""

import math

import pytest
import sympy as sp

from proofs_check import CheckOutcome
from proofs_check import chen_contraction, dominance_infinite_n, flow_bound

MODULES = [dominance_infinite_n, flow_bound, chen_contraction]


@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_check_passes(module):
    res = module.check()
    assert isinstance(res, CheckOutcome)
    assert res.name == module.__name__.rsplit(".", 1)[-1]
    assert res.passed, res.detail
    assert (module.check.__doc__ or "").strip().splitlines()[0]


# dominance_infinite_n -------------------------------------------------------------------------


@pytest.mark.slow
def test_dominance_thresholds_and_jordan_values():
    res = dominance_infinite_n.check()
    assert res.data["integer_thresholds"] == {2: 65537, 3: 13825, 4: 10322, 5: 10120, 6: 10839}
    assert res.data["jordan"]["ratio"] == "8"
    # Independent integer arithmetic: the first d with d^{L-1} > (64 L^2)^L.
    for L, D in res.data["integer_thresholds"].items():
        assert D ** (L - 1) > (64 * L * L) ** L >= (D - 1) ** (L - 1)


@pytest.mark.parametrize(
    "wrong",
    [
        lambda L, d: 4 * L**2 * d ** (-(L - 1) / (2 * sp.sympify(L))),  # exponent halved: too large
        lambda L, d: 4 * L**2 * d ** (-sp.sympify(L) / (L - 1)),  # exponent inverted: too small
        lambda L, d: L**2 * d ** (-(L - 1) / sp.sympify(L)),  # constant 1 instead of 4
    ],
    ids=["exponent/2", "exponent-inverted", "factor-1"],
)
def test_dominance_wrong_constant_fails(wrong):
    assert not dominance_infinite_n.check(**dominance_infinite_n.QUICK, constant=wrong).passed


def test_dominance_wrong_threshold_fails():
    wrong = lambda L: (64 * sp.sympify(L) ** 2) ** ((L - 1) / sp.sympify(L))  # noqa: E731
    assert not dominance_infinite_n.check(**dominance_infinite_n.QUICK, threshold=wrong).passed
    wrong_c = lambda L: (16 * sp.sympify(L) ** 2) ** (sp.sympify(L) / (L - 1))  # noqa: E731
    assert not dominance_infinite_n.check(**dominance_infinite_n.QUICK, threshold=wrong_c).passed


def test_dominance_exact_helpers():
    # f and ||grad f||^2 at diag(1/2, 1/3), L = 2, by hand: sum (1 - a_i)^4 and 16 sum (1 - a_i)^6
    f, g2 = dominance_infinite_n.at(2, 2, sp.diag(sp.Rational(1, 2), sp.Rational(1, 3)))
    assert f == sp.Rational(1, 16) + sp.Rational(16, 81) and g2 == 16 * (sp.Rational(1, 64) + sp.Rational(64, 729))
    assert dominance_infinite_n.diagonal_formulas_hold(2, 2) and dominance_infinite_n.symmetric_reduces_to_spectrum(2)
    # the tangent identity holds for the tangent form and fails when h is not of that form
    assert dominance_infinite_n.tangent_identity_holds(3)
    curved = lambda x, p: dominance_infinite_n.tangent_form(x, p) + (x - 1) ** 2  # noqa: E731
    assert not dominance_infinite_n.tangent_identity_holds(2, h=curved)
    assert not dominance_infinite_n.tangent_identity_holds(3, h=lambda x, p: x**p - 2 - p * (x - 1))


def test_dominance_constant_and_thresholds_fast_parts():
    """The pieces of the check that decide the 1/16 threshold, on their own: the derived constant
    equals the stated 4 L^2 d^{-(L-1)/L}; at L = 2 it equals 1/16 at d = (64 L^2)^{L/(L-1)} =
    256^2 = 65536, so 65537 is the first d below 1/16; for every L = 1 + m > 1 the constant
    equals 1/16 at the threshold and falls with d."""
    assert dominance_infinite_n.derived_constant_gap()[1] == 0
    assert dominance_infinite_n.threshold_failure(2) == (None, 65537)
    on_boundary, slope = dominance_infinite_n.general_threshold()
    assert on_boundary == 0 and slope.is_negative
    # a constant 4 x too small moves the threshold: caught by the solve
    wrong = lambda L, d: L**2 * d ** (-(L - 1) / sp.sympify(L))  # noqa: E731
    assert dominance_infinite_n.threshold_failure(2, constant=wrong)[0].startswith("L = 2: solve gives")


def test_dominance_sharpness_at_two_by_two():
    """At d = L = 2: f = 2 t^4 and ||grad f||^2 = 32 t^6 at A = (1 - t) I give the ratio
    16 / sqrt(2) = 4 L^2 d^{-(L-1)/L}, and a diagonal A off the scalar line goes strictly above;
    a constant 4 x too small is caught there."""
    assert dominance_infinite_n.sharpness_failures(cells=((2, 2),)) == []
    wrong = lambda L, d: L**2 * d ** (-(L - 1) / sp.sympify(L))  # noqa: E731
    assert dominance_infinite_n.sharpness_failures(wrong, cells=((2, 2),))[0].startswith("ratio at aI, (d, L) = (2, 2)")
    # strictness: at diag(-3/7, 2/7) (1 - a = 10/7, 5/7) the ratio 16 (10^6 + 5^6) 7^-6 / ((10^4 + 5^4) 7^-4)^{3/2}
    # = 14.84 lies below a claimed constant 16, which the strictness step must report
    ratio = 16 * sp.Rational(10**6 + 5**6, 7**6) / sp.Rational(10**4 + 5**4, 7**4) ** sp.Rational(3, 2)
    assert 14.8 < ratio < 14.9
    fails = dominance_infinite_n.sharpness_failures(lambda L, d: sp.Integer(16), cells=((2, 2),))
    assert any(f.startswith("not strictly above the constant at diag(-3/7, 2/7), (2, 2)") for f in fails), fails


def test_dominance_convexity_certificate_values():
    """h(x) = x^p - 1 - p (x - 1) with p = (2L - 1)/L, L = 1 + m: h(1) = h'(1) = 0, h'' > 0, and
    h(0) = p - 1 = m / (1 + m) (by hand)."""
    m = sp.Symbol("m", positive=True)
    h1, dh1, h2pos, h0 = dominance_infinite_n.convexity_certificate()
    assert h1 == 0 and dh1 == 0 and h2pos is True and sp.simplify(h0 - m / (1 + m)) == 0


def test_chen_scalar_chain():
    """log(1 - x) <= -x on [0, 1), hence (1 - 1/kappa)^L <= exp(-L/kappa) <= exp(-L/(2 kappa)), the
    reported rate, which is looser by the factor exp(L/(2 kappa))."""
    L, kappa = sp.symbols("L kappa", positive=True)
    log_ok, rate_ok, factor = chen_contraction.scalar_chain()
    assert log_ok and rate_ok and sp.simplify(factor - sp.exp(L / (2 * kappa))) == 0
    assert not chen_contraction.scalar_chain(log_rhs=lambda x: -2 * x)[0]  # log(1 - x) <= -2x is false


def test_dominance_numeric_cross_check():
    """looptheory.dominance_ratio against the n = inf closed forms (diagonal A, scalar A, and
    I - 0.7 J_3, whose ratio is 8): every relative error below 1e-9."""
    bad, errs = dominance_infinite_n.numeric_cross_check()
    assert bad == [] and len(errs) == 7 and max(e[3] for e in errs) < 1e-9


def test_chen_numeric_chain_on_random_prompts():
    """GD on Gaussian prompts: the tight rate (1 - 1/kappa)^L is attained along v_min and never
    exceeded, and it lies below exp(-L/kappa) and the reported exp(-L/(2 kappa))."""
    fails, rows = chen_contraction.numeric_chain()
    assert fails == [] and len(rows) == 32


def test_dominance_d2_certificate_negative():
    assert dominance_infinite_n.d2_certificate(3)
    assert not dominance_infinite_n.d2_certificate(3, d_power=1)  # 2^{L-2}: the inequality is false
    assert not dominance_infinite_n.d2_certificate(3, d_power=3)  # 2^L: true but not sharp at a = b


# flow_bound ---------------------------------------------------------------------------------


WRONG_EXP = lambda L, t, mu, f0: (f0 ** (-(L - 1) / L) + mu * (L - 1) * t / L) ** (-(L - 1) / L)  # noqa: E731
WRONG_RATE = lambda L, t, mu, f0: (f0 ** (-(L - 1) / L) + mu * L * t / (L - 1)) ** (-L / (L - 1))  # noqa: E731
WRONG_FACTOR = lambda L, xi, mu, f0: (L - 1) / (mu * L) * (xi ** (-(L - 1) / L) - f0 ** (-(L - 1) / L))  # noqa: E731
WRONG_POWER = lambda L, xi, mu, f0: L / (mu * (L - 1)) * (xi ** (-L / (L - 1)) - f0 ** (-L / (L - 1)))  # noqa: E731


def test_flow_wrong_formulas_fail_their_steps():
    # One step each (the whole check with a wrong formula costs 1-1.5 CPU-s; those are slow below).
    res, ic = flow_bound.ode_residual(WRONG_RATE)
    assert res != 0 and ic == 0
    assert flow_bound.dsolve_agrees((2,), sol=WRONG_EXP) == [2]
    at_T, decreasing, start, lead = flow_bound.hitting_time_residual(flow_bound.solution, WRONG_POWER)
    assert at_T != 0 and decreasing is True and start == 0


@pytest.mark.slow
def test_flow_wrong_solution_fails():
    assert not flow_bound.check(**flow_bound.QUICK, solution=WRONG_EXP).passed
    assert not flow_bound.check(**flow_bound.QUICK, solution=WRONG_RATE).passed
    assert flow_bound.dsolve_agrees(sol=WRONG_EXP) == [2, 3, 4]


@pytest.mark.slow
def test_flow_wrong_hitting_time_fails():
    assert not flow_bound.check(**flow_bound.QUICK, hitting_time=WRONG_FACTOR).passed
    assert not flow_bound.check(**flow_bound.QUICK, hitting_time=WRONG_POWER).passed


# chen_contraction ---------------------------------------------------------------------------


def test_chen_wrong_recursion_fails():
    half = lambda S, eta: sp.eye(S.shape[0]) - eta * S / 2  # noqa: E731
    normal, step = chen_contraction.recursion_residuals(2, 3, half)
    assert normal.is_zero_matrix and not step.is_zero_matrix
    normal, step = chen_contraction.recursion_residuals(2, 3)
    assert normal.is_zero_matrix and step.is_zero_matrix
    assert not chen_contraction.check(**chen_contraction.QUICK, recursion=half).passed
    assert chen_contraction.noiseless_is_truth() and chen_contraction.eigenbasis_norm_identity(2)


@pytest.mark.parametrize(
    "kw",
    [
        dict(tight_rate=lambda k, L: (1 - 1 / k) ** (L + 1)),  # one loop too many: violated on v_min
        dict(tight_rate=lambda k, L: math.exp(-L / k)),  # valid bound, but not attained
        dict(reported_rate=lambda k, L: sp.exp(-2 * L / k)),  # exponent doubled: below the truth
        dict(log_bound=lambda x: -2 * x),  # false scalar inequality
        dict(log_bound=lambda x: -x - x**2),  # false near 0 (log(1-x) = -x - x^2/2 - ...)
    ],
    ids=["rate-L+1", "rate-exp", "reported-2L", "log-2x", "log-x-x2"],
)
def test_chen_wrong_rate_fails(kw):
    assert not chen_contraction.check(**chen_contraction.QUICK, **kw).passed


@pytest.mark.slow
def test_chen_reports_looseness_and_exponent():
    res = chen_contraction.check()
    assert res.data["looseness_factor"] == "exp(L/(2 kappa))"
    lo, hi = res.data["exponent_over_reported"]
    assert 2 <= lo <= hi  # -log(1 - 1/kappa) >= 1/kappa = 2 x the reported 1/(2 kappa)
