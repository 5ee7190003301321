"""The engine against brute-force Wick pairings and the known Wishart polynomials."""

from fractions import Fraction as F

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from looptheory.expectations import Alphabet, CompiledExpansion, Engine
from looptheory.reference import wick_expectation

NAMES = ("S", "B", "Bt", "C", "Ct")
ALPHA = Alphabet(NAMES, (0, 2, 1, 4, 3), 0)


def spell(word):
    return [NAMES[c] for c in word]


n_, d_ = sp.symbols("n d")


@pytest.mark.parametrize(
    "k, poly",
    [
        (2, n_ * d_ * (n_ + d_ + 1)),
        (3, n_ * d_ * (n_**2 + d_**2 + 3 * n_ * d_ + 3 * n_ + 3 * d_ + 4)),
        (4, n_ * d_ * (n_**3 + d_**3 + 6 * n_**2 * d_ + 6 * n_ * d_**2 + 6 * n_**2 + 6 * d_**2 + 17 * n_ * d_ + 21 * n_ + 21 * d_ + 20)),
    ],
)
def test_wishart_trace_moments(k, poly):
    e = Engine(ALPHA).expect([(1, [(0,) * k])])
    got = e.evaluate({(): d_}, n_)
    assert sp.simplify(got * n_**k - poly) == 0


def test_two_constants_reference_point():
    """E tr(B1 W B2 W) = n^2 tr(B1 B2) + n tr(B1 B2^T) + n tr(B1) tr(B2) (docs/engine.md, section 7),
    i.e. E tr(B S C S) = tr(B C) + (tr(B C^T) + tr(B) tr(C)) / n."""
    for hint in (None, 1, 3):
        e = Engine(ALPHA).expect([(1, [(1, 0, 3, 0)])], hint=hint)
        rng = np.random.default_rng(0)
        Bm, Cm = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
        mats = {1: Bm, 2: Bm.T, 3: Cm, 4: Cm.T}
        tr = {w: np.trace(np.linalg.multi_dot([np.eye(3)] + [mats[c] for c in w] + [np.eye(3)])) for _, ws in e for w in ws}
        n = 7
        expected = np.trace(Bm @ Cm) + (np.trace(Bm @ Cm.T) + np.trace(Bm) * np.trace(Cm)) / n
        assert e.evaluate(tr, n) == pytest.approx(expected, rel=1e-12)


words = st.lists(st.sampled_from([0, 0, 1, 2, 3, 4]), min_size=1, max_size=6)


@settings(max_examples=30)
@given(factors=st.lists(words, min_size=1, max_size=3), hint=st.sampled_from([None, 1, 3]), seed=st.integers(0, 10**6), n=st.integers(1, 6))
def test_random_words_match_wick_pairings(factors, hint, seed, n):
    # the brute-force pairings grow as (2k - 1)!!: at most 6 S in all (an example with more is
    # discarded, not passed)
    assume(sum(w.count(0) for w in factors) <= 6)
    rng = np.random.default_rng(seed)
    d = 2
    Bm = np.array([[F(int(x), 3) for x in row] for row in rng.integers(-3, 4, (d, d))], dtype=object)
    Cm = np.array([[F(int(x), 2) for x in row] for row in rng.integers(-3, 4, (d, d))], dtype=object)
    letters = {"B": Bm, "Bt": Bm.T.copy(), "C": Cm, "Ct": Cm.T.copy()}
    ref = wick_expectation([spell(w) for w in factors], letters, n=n, d=d)
    e = Engine(ALPHA).expect([(1, factors)], hint=hint)
    mats = {0: None, 1: Bm, 2: Bm.T.copy(), 3: Cm, 4: Cm.T.copy()}
    traces = {}
    for _, ws in e:
        for w in ws:
            if w not in traces:
                M = np.eye(d, dtype=object) * F(1)
                for c in w:
                    M = M.dot(mats[c])
                traces[w] = F(d) if not w else sum(np.diagonal(M), F(0))
    assert e.evaluate(traces, n) == ref


def test_compiled_gradient_is_transposed_rest_of_word():
    """d tr(B C B^T C) / dB by the compiled expansion equals the textbook matrix derivative."""
    al = ALPHA
    from looptheory.expectations import Expansion

    exp = Expansion(al, {(0, ((1, 3, 2, 3),)): 1})
    comp = CompiledExpansion(exp, grad_letters=(1, 2, 3))
    rng = np.random.default_rng(0)
    Bm, Cm = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    Cm = Cm + Cm.T  # C enters twice: keep it symmetric so tr(B C Bt C) is as written
    mats = np.stack([np.eye(3), Bm, Bm.T, Cm, Cm])
    val, g = comp.value_and_grad(mats, 5, 3)
    assert val == pytest.approx(np.trace(Bm @ Cm @ Bm.T @ Cm))
    # treating B and B^T as separate letters: d/dB tr(B C Bt C) = (C Bt C)^T, d/dBt = (C B C)^T... rotated
    assert np.allclose(g[1], (Cm @ Bm.T @ Cm).T)
    assert np.allclose(g[2], (Cm @ Bm @ Cm).T)


def test_evaluate_at_infinite_n_keeps_only_the_n0_terms():
    """At n = inf every term with a power of 1/n vanishes, wherever it sits in the expansion:
    E tr(S^3) -> tr(I) = d (S -> I), and a hand-made expansion 5 d / n + 2 d -> 2 d."""
    import math

    from looptheory.expectations import Expansion

    e = Engine(ALPHA).expect([(1, [(0, 0, 0)])])
    assert e.evaluate({(): 4}, math.inf) == 4
    assert Expansion(ALPHA, {(1, ((),)): 5, (0, ((),)): 2}).evaluate({(): 3}, math.inf) == 6
    assert Expansion(ALPHA, {(1, ((),)): 5, (0, ((),)): 2}).evaluate({(): 3}, 5) == 9


def test_expansion_repr_lists_terms_by_power():
    from looptheory.expectations import Expansion

    e = Expansion(ALPHA, {(1, ((), (1,))): -2, (0, ((1, 3),)): 1})
    assert repr(e) == "Expansion(+1 n^-0 tr(B C); -2 n^-1 tr(I) tr(B))"


def test_zero_coefficient_terms_are_skipped_not_stopping():
    """A term with coefficient 0 contributes nothing, wherever it stands in the input."""
    want = dict(Engine(ALPHA).expect([(1, [(0, 0)])]))
    for centred in (False, True):
        got = Engine(ALPHA, centred=centred).expect([(0, [(0, 1, 0)]), (1, [(0, 0)])])
        assert dict(got) == dict(Engine(ALPHA, centred=centred).expect([(1, [(0, 0)])]))
    assert dict(Engine(ALPHA).expect([(0, [(0, 1, 0)]), (1, [(0, 0)])])) == want
