"""The sparse looped model computes preconditioned GD (docs/conventions.md, "What the sparse model computes")."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from looptheory.strategies import matrices

import looptheory as lt


def _prompts(seed, batch, d, n):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, d, n)), rng.standard_normal((batch, n)), rng.standard_normal((batch, d))


def _rel(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


@given(
    d=st.integers(1, 5),
    n=st.integers(1, 9),
    loops=st.integers(1, 6),
    seed=st.integers(0, 2**31),
    with_u=st.booleans(),
    data=st.data(),
)
def test_sparse_looped_model_is_preconditioned_gd(d, n, loops, seed, with_u, data):
    X, y, x_q = _prompts(seed, 3, d, n)
    # A scaled so GD neither explodes nor vanishes: relative errors stay meaningful.
    A = data.draw(matrices(d, scale=0.5 / np.sqrt(d)))
    u = np.random.default_rng(seed + 1).standard_normal(d) if with_u else None
    P, Q = lt.sparse_weights(A, u)
    ZL = lt.looped_forward(lt.make_prompt(X, y, x_q), P, Q, loops)
    labels = y if u is None else y + np.einsum("bdn,d->bn", X, u)
    path = lt.preconditioned_gd(X, labels, A.T, loops, return_path=True)
    wL = path[:, -1]
    pred_gd = np.einsum("bd,bd->b", x_q, wL)
    assert _rel(lt.prediction(ZL), pred_gd) < 1e-10
    # The label row holds the residuals y_i - <w_L, x_i> of the original labels.
    resid = y - np.einsum("bdn,bd->bn", X, wL)
    assert _rel(ZL[:, d, :n], resid) < 1e-10
    # The x rows never change.
    assert np.array_equal(ZL[:, :d, :], lt.make_prompt(X, y, x_q)[:, :d, :])


def test_gd_recursion_hand_example():
    # d = 1, n = 1, x = 2, y = 3, B = 1/4: w_1 = (1/4) 2 (3 - 0) = 1.5, w_2 = 1.5 + (1/4) 2 (3 - 3) = 1.5
    w = lt.preconditioned_gd(np.array([[2.0]]), np.array([3.0]), np.array([[0.25]]), 2, return_path=True)
    assert np.allclose(w[:, 0], [0.0, 1.5, 1.5])
    # loops = 0 runs no step: w_0 itself (0, or the w0 given), a path of one point
    X, y, B = np.array([[2.0]]), np.array([3.0]), np.array([[0.25]])
    assert np.array_equal(lt.preconditioned_gd(X, y, B, 0), [0.0])
    assert np.array_equal(lt.preconditioned_gd(X, y, B, 0, w0=[0.7]), [0.7])
    assert np.array_equal(lt.preconditioned_gd(X, y, B, 0, w0=[0.7], return_path=True), [[0.7]])
    # from w0 = 0.7: w_1 = 0.7 + (1/4) 2 (3 - 1.4) = 1.5
    assert lt.preconditioned_gd(X, y, B, 1, w0=[0.7]) == pytest.approx([1.5], rel=1e-15)


def test_multilayer_with_shared_weights_equals_looped():
    X, y, x_q = _prompts(0, 4, 3, 6)
    rng = np.random.default_rng(1)
    P, Q = rng.standard_normal((4, 4)) * 0.3, rng.standard_normal((4, 4)) * 0.3
    Z = lt.make_prompt(X, y, x_q)
    assert np.allclose(lt.multilayer_forward(Z, [P] * 3, [Q] * 3), lt.looped_forward(Z, P, Q, 3), rtol=1e-13, atol=0)


def test_layer_matches_definition_with_explicit_mask():
    X, y, x_q = _prompts(2, 1, 2, 4)
    Z = lt.make_prompt(X, y, x_q)[0]
    rng = np.random.default_rng(3)
    P, Q = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    M = np.diag([1.0] * 4 + [0.0])
    expected = Z - P @ Z @ M @ Z.T @ Q @ Z / 4
    assert np.allclose(lt.attention_layer(Z, P, Q), expected, rtol=1e-13, atol=1e-13)


def test_batched_equals_one_by_one():
    X, y, x_q = _prompts(4, 5, 3, 7)
    P, Q = lt.sparse_weights(np.eye(3) * 0.5)
    Z = lt.make_prompt(X, y, x_q)
    full = lt.looped_forward(Z, P, Q, 4)
    for b in range(5):
        assert np.allclose(full[b], lt.looped_forward(Z[b], P, Q, 4), rtol=1e-14, atol=1e-14)


def test_sparse_weights_layout():
    P, Q = lt.sparse_weights(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([5.0, 6.0]))
    assert np.array_equal(Q, [[1, 2, 0], [3, 4, 0], [0, 0, 0]])
    assert np.array_equal(P, [[0, 0, 0], [0, 0, 0], [5, 6, 1]])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: lt.looped_forward(np.zeros((3, 5)), np.eye(3), np.eye(3), 0), "loops"),
        (lambda: lt.looped_forward(np.zeros((3, 5)), np.eye(2), np.eye(3), 1), "P"),
        (lambda: lt.looped_forward(np.full((3, 5), np.nan), np.eye(3), np.eye(3), 1), "Z"),
        (lambda: lt.sparse_weights(np.ones((2, 3))), "A"),
        (lambda: lt.sparse_weights(np.eye(2), [1.0, 2.0, 3.0]), "u"),
        (lambda: lt.make_prompt(np.zeros((2, 4)), np.zeros(3), np.zeros(2)), "y"),
        (lambda: lt.preconditioned_gd(np.zeros((2, 4)), np.zeros(4), np.eye(3), 1), "B"),
        (lambda: lt.multilayer_forward(np.zeros((3, 5)), [], []), "Ps"),
        # every layer's weights are checked, not only the first
        (lambda: lt.multilayer_forward(np.zeros((3, 5)), [np.eye(3), np.eye(4)], [np.eye(3)] * 2), r"Ps\[1\]"),
    ],
)
def test_bad_input_names_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()
