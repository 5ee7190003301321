"""The public claim API: a false claim's counterexample is found and confirmed, a true claim
holds, a vacuous one is vacuous, verdicts are reproducible, and bad claims say what happened.
Issue 15's acceptance claim ("no A beats γ_3 I") runs in tests/test_own_claims_doc.py, from the
docs."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import strategies as st

import looptheory as lt
from looptheory.loss import exact_route

TASK = lt.Task(2, 20)
G3 = lt.optimal_scale(TASK, 3)
F0 = lt.population_loss(TASK, G3 * np.eye(2), 3)


def beats_gamma3(E):
    return lt.population_loss(TASK, G3 * np.eye(2) + E, 3) - F0


def exact_loss_of_floats(A):
    fr = np.vectorize(Fraction, otypes=[object])
    return lt.population_loss(TASK, fr(np.asarray(A, dtype=float)), 3, exact=True)


def far_from_half(x, y):
    return abs(x - 0.5) + abs(y + 0.25) - 0.01  # fails only in a small square around (0.5, -0.25)


def test_verdicts_are_reproducible_and_shrunk_counterexamples_are_simple():
    region = st.fixed_dictionaries({"x": st.floats(-1, 1), "y": st.floats(-1, 1)})
    claim = lt.Claim("far", "|x - 1/2| + |y + 1/4| >= 0.01", "me", region, far_from_half)
    one, two = lt.verify_claim(claim, max_examples=30), lt.verify_claim(claim, max_examples=30)
    assert one.verdict == "fails" and one.counterexample["confirmed"] == "as given"  # a plain float: no bound
    assert one.counterexample == two.counterexample and one.summary == two.summary
    assert one.counterexample["shrunk"]["params"] == {"x": 0.5, "y": -0.25}


def test_certified_arithmetic_bounds_the_true_difference():
    E = np.array([[0.01, 0.27], [-0.26, 0.02]])
    m = beats_gamma3(E)
    exact = exact_loss_of_floats(G3 * np.eye(2) + E) - exact_loss_of_floats(G3 * np.eye(2))
    assert isinstance(m, lt.Certified) and abs(Fraction(float(m)) - exact) <= Fraction(m.error)
    with exact_route():
        me = beats_gamma3(E)
    assert me.route == "exact+expansion"  # F0 was computed outside the context
    assert abs(Fraction(float(me)) - exact) <= Fraction(me.error) and me.error < m.error


def one_loop_excess(n, a):
    """f(a I) - f(a* I) at one loop, Σx = Σw = I, d = 2: >= 0, the optimum a* = n/(n + d + 1)."""
    task = lt.Task(2, n)
    best = n / (n + 3)
    return lt.population_loss(task, a * np.eye(2), 1) - lt.population_loss(task, best * np.eye(2), 1)


def test_a_true_claim_holds_on_a_grid_and_a_vacuous_one_is_vacuous():
    rec = lt.verify_claim(lt.Claim("opt1", "n/(n+d+1) I is optimal at one loop", "docs", lt.Grid(n=[3, 20], a=[0.5, 0.9, 1.1]),
                                   one_loop_excess))
    assert rec.verdict == "holds" and rec.examples_run == 6 and rec.counterexample is None
    assert rec.worst_case["margin"] >= 0

    def trivial(n):  # a bound f <= c with c >= f(0) = d says nothing
        return lt.Case(2.0 - 0.0, vacuous=True)

    assert lt.verify_claim(lt.Claim("triv", "f <= d", "docs", lt.Grid(n=[3, 5]), trivial)).verdict == "vacuous"


def test_bad_claims_say_what_happened():
    def raises(x):
        if x == 2:
            raise ZeroDivisionError("x = 2")
        return 1.0

    rec = lt.verify_claim(lt.Claim("r", "s", "me", lt.Grid(x=[1, 2, 3]), raises))
    assert rec.verdict == "unresolved" and not rec.complete and "ZeroDivisionError" in rec.summary and "{'x': 2}" in rec.summary
    rec = lt.verify_claim(lt.Claim("n", "s", "me", lt.Grid(x=[1, 3]), lambda x: math.nan if x == 3 else 1.0))
    assert rec.verdict == "unresolved" and "NaN" in rec.summary
    rec = lt.verify_claim(lt.Claim("r", "s", "me", st.fixed_dictionaries({"x": st.integers(0, 5)}), raises), max_examples=20)
    assert rec.verdict == "unresolved" and "x = 2" in rec.summary
    with pytest.raises(ValueError, match="region: the strategy gave no example"):
        lt.verify_claim(lt.Claim("e", "s", "me", st.fixed_dictionaries({"x": st.integers().filter(lambda x: False)}),
                                 lambda x: 1.0), max_examples=5)
    with pytest.raises(ValueError, match="axis 'x' has no values"):
        lt.Grid(x=[])
    assert "check: returned True" in lt.verify_claim(lt.Claim("b", "s", "me", lt.Grid(x=[1]), lambda x: True)).summary
    with pytest.raises(TypeError, match="region: expected a looptheory.Grid"):
        lt.Claim("b", "s", "me", [{"x": 1}], lambda x: 1.0)
    with pytest.raises(ValueError, match="executor: a strategy region is searched one example at a time"):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as ex:
            lt.verify_claim(lt.Claim("s", "s", "me", st.fixed_dictionaries({"x": st.just(1)}), lambda x: 1.0), executor=ex)


def test_a_margin_within_its_error_bound_is_not_a_failure():
    rec = lt.verify_claim(lt.Claim("w", "s", "me", lt.Grid(x=[1]), lambda x: lt.Case(-1e-12, error=1e-10)))
    assert rec.verdict == "unresolved" and rec.counterexample is None
