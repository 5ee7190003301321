"""The optima of the untied multi-layer model: the exact best per-layer schedule against the
loops = 1 closed form, the engine and a float search over schedules; the blind search against its
own certified stationarity and the schedule it must not be worse than; the untied gradient flow
against the looped one at one layer."""

import math
from fractions import Fraction as F

import numpy as np
import pytest
from scipy import optimize

import looptheory as lt
from looptheory.multilayer_optimum import certified_loss


def _sx(d, seed):
    M = np.random.default_rng(seed).standard_normal((d, d))
    return M @ M.T / d + np.eye(d)


@pytest.mark.parametrize("d, n", [(1, 1), (2, 5), (3, 40)])
def test_one_layer_schedule_is_the_closed_form(d, n):
    """docs/conventions.md, "Exact values to test against": A* = n/(n + d + 1) sigma_x^{-1} and
    f* = d (d + 1)/(n + d + 1) for the Gatmiry prior, in exact rationals."""
    task = lt.Task(d, n)
    sch = lt.optimal_schedule(task, 1)
    assert sch.loss == F(d * (d + 1), n + d + 1)
    assert sch.a[0] == pytest.approx(n / (n + d + 1), rel=1e-15)


@pytest.mark.parametrize("L", [2, 3])
def test_schedule_loss_is_the_engines_loss_at_the_schedule(L):
    """The moment route (exact rationals) against the engine at the float schedule, with a
    general prior and noise."""
    d = 2
    task = lt.Task(d, 7, _sx(d, L), np.array([[1.0, 0.3], [0.3, 0.6]]), noise=0.4)
    sch = lt.optimal_schedule(task, L)
    assert sch.real
    f = lt.multilayer_population_loss(task, sch.As(task))
    assert float(f) == pytest.approx(float(sch.loss), rel=1e-12)


@pytest.mark.parametrize("L, noise", [(2, 0.0), pytest.param(3, 0.5, marks=pytest.mark.slow)])
def test_no_float_schedule_does_better(L, noise):
    """A float search over (a_1..a_L) through the engine never goes below the exact optimum."""
    d = 2
    task = lt.Task.gatmiry(d, 9, _sx(d, 7))
    task = lt.Task(d, 9, task.sigma_x, task.sigma_w, noise=noise)
    sch = lt.optimal_schedule(task, L)
    inv = np.linalg.inv(task.sigma_x)
    f = lambda a: float(lt.multilayer_population_loss(task, np.stack([x * inv for x in a])))  # noqa: E731
    best = min(optimize.minimize(f, x0, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14}).fun
               for x0 in (np.full(L, 0.5), np.linspace(0.2, 1.5, L)))
    assert best >= float(sch.loss) * (1 - 1e-12)
    assert best <= float(sch.loss) * (1 + 1e-6)


def test_schedule_at_infinite_n_and_bad_input():
    sch = lt.optimal_schedule(lt.Task(2, math.inf), 3)
    assert sch.loss == 0 and sch.a == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="^layers"):
        lt.optimal_schedule(lt.Task(2, 5), 0)
    with pytest.raises(TypeError, match="^task"):
        lt.optimal_schedule("task", 2)
    # a schedule's matrices are d x d for the d it was computed at: another d is refused
    sch = lt.optimal_schedule(lt.Task(2, 5), 2)
    assert sch.d == 2 and sch.As(lt.Task(2, 9)).shape == (2, 2, 2)
    with pytest.raises(ValueError, match="^task: expected a Task of dimension d = 2 .*got d = 3"):
        sch.As(lt.Task(3, 5))
    with pytest.raises(ValueError, match="^layers: .*MAX_LAYERS = 4"):
        lt.optimal_multilayer(lt.Task(2, 5), 5)
    with pytest.raises(ValueError, match=r"^inits\[0\]"):
        lt.optimal_multilayer(lt.Task(2, 5), 2, inits=[np.zeros((3, 2, 2))])


def test_blind_search_at_one_layer_finds_the_closed_form():
    d, n = 2, 5
    task = lt.Task.gatmiry(d, n, _sx(d, 3))
    opt = lt.optimal_multilayer(task, 1, starts=2, seed=1, with_u=True)
    assert opt.converged
    np.testing.assert_allclose(opt.As[0], n / (n + d + 1) * np.linalg.inv(task.sigma_x), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(opt.us, 0, atol=1e-8)


def test_blind_search_is_stationary_and_no_worse_than_the_schedule():
    """The schedule is a feasible point: a search that ends above it has failed, whatever the
    claims say; the returned point's certified gradient must back `converged`."""
    d, L = 2, 2
    task = lt.Task.gatmiry(d, 20, _sx(d, 4))
    opt = lt.optimal_multilayer(task, L, starts=2, seed=0)
    sch = certified_loss(lt.optimal_schedule(task, L).loss)
    assert opt.converged and opt.scaled_grad_norm <= 1e-6
    assert opt.loss <= sch + opt.loss.error + sch.error
    f, gA, _ = lt.multilayer_population_loss_grad(task, opt.As)
    assert float(f) == pytest.approx(float(opt.loss), rel=1e-12)
    assert np.linalg.norm(gA) == pytest.approx(opt.grad_norm, rel=1e-6, abs=1e-14)


def test_a_stationary_point_above_the_schedule_is_not_called_converged():
    """At sigma_x = I the start As = 0 keeps every layer equal and ends at the looped optimum:
    gradient zero, loss 0.499 at d = 5, n = 20, L = 2, above the best schedule's 0.3612 (a
    saddle of the untied loss). One start must not report it as the minimum; two find it."""
    task = lt.Task.gatmiry(5, 20)
    one = lt.optimal_multilayer(task, 2, starts=1)
    assert one.scaled_grad_norm <= 1e-6 and float(one.loss) == pytest.approx(0.499007388007256, rel=1e-9)
    assert not one.converged and "saddle" in one.status
    two = lt.optimal_multilayer(task, 2, starts=2)
    assert two.converged and float(two.loss) == pytest.approx(float(lt.optimal_schedule(task, 2).loss), rel=1e-12)


def test_with_noise_the_best_polynomial_can_have_complex_roots():
    """d = 2, n = 3, noise 2, L = 3: q* has complex roots, so no real schedule reaches its loss
    (a lower bound only). The result is then the best real schedule found, its loss exactly that
    of its a (the engine agrees), above the lower bound; an independent Nelder-Mead search over
    real schedules through the engine does not beat it."""
    task = lt.Task(2, 3, noise=2.0)
    sch = lt.optimal_schedule(task, 3)
    assert not sch.real and sch.lower_bound < sch.loss
    assert float(lt.multilayer_population_loss(task, sch.As(task))) == pytest.approx(float(sch.loss), rel=1e-12)
    f = lambda a: float(lt.multilayer_population_loss(task, np.stack([x * np.eye(2) for x in a])))  # noqa: E731
    best = min(optimize.minimize(f, x0, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14}).fun
               for x0 in (np.full(3, 0.3), np.array([0.1, 0.3, 0.6])))
    assert best >= float(sch.loss) * (1 - 1e-9)
    # the exact coefficients are those of the returned a
    a = [F(x) for x in sch.a]
    c1 = -sum(a)
    assert sch.coefficients[0] == c1 and sch.coefficients[2] == -a[0] * a[1] * a[2]


@pytest.mark.slow
def test_high_degree_schedules_are_real_at_enough_digits():
    """Without noise the roots are real (an orthogonal polynomial); at L = 40 a 50-digit root
    search leaves spurious imaginary parts, which more digits remove."""
    sch = lt.optimal_schedule(lt.Task(2, 20), 40)
    assert sch.real and sch.loss == sch.lower_bound and all(x > 0 for x in sch.a)


def test_one_layer_flow_is_the_looped_flow():
    task = lt.Task(2, 8)
    A0 = np.array([[0.1, 0.05], [-0.02, 0.2]])
    ml = lt.multilayer_gradient_flow(task, A0[None], t_max=2.0, rtol=1e-8)
    lo = lt.gradient_flow(task, A0, 1, t_max=2.0, rtol=1e-8)
    assert ml.status == lo.status == "t_max" and ml.loss[-1] < 0.9 * ml.loss[0]
    np.testing.assert_array_equal(ml.t, lo.t)
    np.testing.assert_allclose(ml.path[:, 0], lo.path, rtol=1e-12, atol=1e-14)
    assert ml.path.shape == (len(ml.t), 1, 2, 2)
    with pytest.raises(ValueError, match="^us0"):
        lt.multilayer_gradient_flow(task, np.stack([A0, A0]), us0=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="^As0"):
        lt.multilayer_gradient_flow(task, np.zeros((5, 2, 2)))


def test_one_layer_flow_with_u_is_the_looped_flow_with_u():
    """One untied layer is one loop: with u trained too (us0 given) the flow of A and u is the
    looped model's, step for step."""
    task = lt.Task(2, 8)
    A0, u0 = np.array([[0.1, 0.05], [-0.02, 0.2]]), np.array([0.1, -0.2])
    ml = lt.multilayer_gradient_flow(task, A0[None], us0=u0[None], t_max=2.0, rtol=1e-8)
    lo = lt.gradient_flow(task, A0, 1, u0=u0, t_max=2.0, rtol=1e-8)
    assert ml.status == lo.status == "t_max" and np.linalg.norm(lo.u_path[-1]) < 0.5 * np.linalg.norm(u0)
    np.testing.assert_array_equal(ml.t, lo.t)
    np.testing.assert_allclose(ml.u_path[:, 0], lo.u_path, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ml.path[:, 0], lo.path, rtol=1e-12, atol=1e-14)
    assert ml.u_path.shape == (len(ml.t), 1, 2)
    # the gradient norm counts u's gradient too: sqrt(|grad_A f|^2 + |grad_u f|^2) at the start
    _, gA, gu = lt.population_loss_grad(task, A0, 1, u0)
    for r in (ml, lo):
        assert r.grad_norm[0] == pytest.approx(math.hypot(np.linalg.norm(gA), np.linalg.norm(gu)), rel=1e-12)


def test_untied_flow_reads_exact_starts_as_floats():
    """Exact (Fraction) As0 and us0 are read as floats, as gradient_flow reads A0: the same flow,
    in floats, as from the float starts."""
    task = lt.Task(2, 8)
    As0 = np.array([[[F(1, 10), F(1, 20)], [F(-1, 50), F(1, 5)]]], dtype=object)
    us0 = np.array([[F(1, 10), F(-1, 5)]], dtype=object)
    ex = lt.multilayer_gradient_flow(task, As0, us0=us0, t_max=0.5, rtol=1e-8)
    fl = lt.multilayer_gradient_flow(task, As0.astype(float), us0=us0.astype(float), t_max=0.5, rtol=1e-8)
    assert ex.path.dtype == ex.u_path.dtype == ex.loss.dtype == float
    np.testing.assert_array_equal(ex.t, fl.t)
    np.testing.assert_array_equal(ex.path, fl.path)
    np.testing.assert_array_equal(ex.u_path, fl.u_path)
    np.testing.assert_array_equal(ex.loss, fl.loss)


@pytest.mark.slow
def test_untied_flow_decreases_to_the_searched_optimum():
    task = lt.Task(2, 8)
    As0 = np.stack([[[0.1, 0.05], [-0.02, 0.2]], [[0.05, 0.0], [0.01, 0.1]]])
    fl = lt.multilayer_gradient_flow(task, As0, us0=np.full((2, 2), 0.1), t_max=1e4)
    assert fl.status == "converged" and fl.u_path.shape == (len(fl.t), 2, 2)
    assert np.all(np.diff(fl.loss) <= 1e-14 * fl.loss[0])
    opt = lt.optimal_multilayer(task, 2, starts=2)
    assert fl.loss[-1] == pytest.approx(float(opt.loss), rel=1e-7)
