"""The proportional limit of the scalar family (looptheory.limit) against independent routes: the
published one-loop formula (Lu et al., noisy query label removed), the semicircle argument at
rho = 0, the large-d limit of the exact finite-d trace moments, a quadrature of the
Marchenko-Pastur density with a float minimisation, and the finite-d exact optima converging."""

import math
from fractions import Fraction as F

import mpmath
import numpy as np
import pytest
from scipy import integrate, optimize

import looptheory as lt
from looptheory.limit import MAX_LIMIT_LOOPS, limit_loss_polynomial, marchenko_pastur_moments
from looptheory.moments import trace_moments


@pytest.mark.parametrize("alpha, rho", [(1, 0), (F(1, 2), F(1, 3)), (3, 2), (F(7, 5), 0)])
def test_one_loop_is_the_published_formula_without_the_query_noise(alpha, rho):
    """Lu, Letey, Zavatone-Veth, Maiti, Pehlevan (PNAS 2025), with their "+ rho" from the noisy
    query label removed: f*/d = (1 + rho) / (alpha + 1 + rho), gamma = alpha / (alpha + 1 + rho)."""
    r = lt.scalar_family_limit(alpha, 1, rho)
    assert r.exact
    assert r.loss_per_d == (1 + F(rho)) / (F(alpha) + 1 + F(rho))
    assert r.gamma == F(alpha) / (F(alpha) + 1 + F(rho))


@pytest.mark.parametrize("loops", [2, 3, 7])
def test_noiseless_minimiser_is_alpha_over_alpha_plus_one(loops):
    alpha = F(5, 3)
    r = lt.scalar_family_limit(alpha, loops)
    assert r.exact and r.gamma == alpha / (alpha + 1)
    m = marchenko_pastur_moments(2 * loops, 1 / alpha)
    g = r.gamma
    assert r.loss_per_d == sum(math.comb(2 * loops, i) * (-g) ** i * m[i] for i in range(2 * loops + 1))


def test_marchenko_pastur_moments_are_the_large_d_limit_of_the_exact_moments():
    alpha, d = F(3, 2), 2 * 10**6
    m = marchenko_pastur_moments(6, 1 / alpha)
    assert m[:4] == [1, 1, 1 + 1 / alpha, 1 + 3 / alpha + 1 / alpha**2]
    exact = trace_moments(6, int(alpha * d), d)
    for k in range(7):
        assert float(exact[k]) / d == pytest.approx(float(m[k]), rel=3e-5)


def _quadrature_limit(alpha, loops, rho):
    """F(gamma) by quadrature of the Marchenko-Pastur density (and its atom at 0 when c > 1),
    minimised in float: shares only the formula of F with looptheory.limit."""
    c = 1 / alpha
    a, b = (1 - math.sqrt(c)) ** 2, (1 + math.sqrt(c)) ** 2
    dens = lambda x: math.sqrt(max((b - x) * (x - a), 0.0)) / (2 * math.pi * c * x)  # noqa: E731
    atom = max(0.0, 1 - 1 / c)

    def F_(g):
        G = lambda x: sum((1 - g * x) ** k for k in range(loops))  # noqa: E731
        main = integrate.quad(lambda x: (1 - g * x) ** (2 * loops) * dens(x), a, b, epsabs=1e-14, epsrel=1e-13)[0] + atom
        noise = integrate.quad(lambda x: x * G(x) ** 2 * dens(x), a, b, epsabs=1e-14, epsrel=1e-13)[0]
        return main + rho / alpha * g * g * noise

    res = optimize.minimize_scalar(F_, bounds=(0.01, 1.99), method="bounded", options={"xatol": 1e-12})
    return res.x, res.fun


@pytest.mark.parametrize("alpha, loops, rho", [(1.5, 3, 0.5), (0.5, 2, 0.3)])
def test_irrational_case_against_quadrature_of_the_density(alpha, loops, rho):
    r = lt.scalar_family_limit(alpha, loops, rho)
    assert not r.exact and r.digits == 30
    g, f = _quadrature_limit(alpha, loops, rho)
    assert float(r.gamma) == pytest.approx(g, rel=1e-6)
    assert float(r.loss_per_d) == pytest.approx(f, rel=1e-9)
    # the polynomial route itself, at the returned gamma, to 30 digits
    with mpmath.workdps(40):
        poly = limit_loss_polynomial(alpha, loops, rho)
        val = mpmath.polyval([mpmath.mpf(x.numerator) / x.denominator for x in reversed(poly)], r.gamma)
        assert abs(val - r.loss_per_d) <= mpmath.mpf(10) ** -28 * abs(val)


def test_more_digits_agree():
    a = lt.scalar_family_limit(F(3, 2), 3, F(1, 2), digits=30)
    b = lt.scalar_family_limit(F(3, 2), 3, F(1, 2), digits=60)
    with mpmath.workdps(60):
        assert abs(a.gamma - b.gamma) <= mpmath.mpf(10) ** -29
        assert abs(b.gamma) > 0 and mpmath.nstr(b.gamma, 60) != mpmath.nstr(a.gamma, 60)


@pytest.mark.parametrize("alpha, loops, rho", [(2, 2, 0), (1, 3, 0), (2, 2, 1)])
def test_finite_d_optima_converge_at_rate_one_over_d(alpha, loops, rho):
    c = lt.scalar_family_convergence(alpha, loops, rho, ds=(8, 16, 32, 64))
    err = [r["error"] for r in c["rows"]]
    assert all(e2 < e1 for e1, e2 in zip(err, err[1:]))
    assert -1.2 < c["rate"] < -0.8
    assert c["rows"][-1]["gamma_error"] < c["rows"][0]["gamma_error"]


def test_bad_input_names_the_parameter():
    with pytest.raises(ValueError, match="^alpha"):
        lt.scalar_family_limit(0, 2)
    with pytest.raises(ValueError, match="^rho"):
        lt.scalar_family_limit(1, 2, rho=-1)
    with pytest.raises(ValueError, match="^loops"):
        lt.scalar_family_limit(1, 0)
    with pytest.raises(ValueError, match="^loops"):
        lt.scalar_family_limit(1, MAX_LIMIT_LOOPS + 1)
    with pytest.raises(ValueError, match="^digits"):
        lt.scalar_family_limit(1, 2, digits=0)
    with pytest.raises(ValueError, match="^ds"):
        lt.scalar_family_convergence(F(1, 3), 2, ds=(4, 8))
    with pytest.raises(ValueError, match="^ds"):
        lt.scalar_family_convergence(2, 2, ds=(4,))


def test_bad_scalar_is_printed_as_a_plain_number():
    # the value as a user writes it, not Fraction(-3, 7)
    with pytest.raises(ValueError, match=r"^alpha: expected a number > 0, got -3/7$"):
        lt.scalar_family_convergence(F(-3, 7), 2, ds=(7, 14))
    with pytest.raises(ValueError, match=r"^rho: expected a number >= 0, got -1/2$"):
        lt.scalar_family_convergence(1, 2, rho=F(-1, 2), ds=(4, 8))
    with pytest.raises(ValueError, match=r"^alpha: expected a number > 0, got -0.25$"):
        lt.scalar_family_limit(-0.25, 2)
