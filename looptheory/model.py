"""Looped and multi-layer linear self-attention, and preconditioned gradient descent.

Conventions (docs/conventions.md, "Prompt and layer"):
  Z_0 = [[x_1 ... x_n, x_q], [y_1 ... y_n, 0]] in R^{(d+1) x (n+1)},  M = diag(I_n, 0),
  one layer  Z <- Z - (1/n) P Z M Z^T Q Z,  prediction yhat = -[Z_L]_{d+1, n+1}.
Sparse weights Q = [[A, 0], [0, 0]], P = [[0, 0], [u^T, 1]] make the looped model run
preconditioned GD with preconditioner B = A^T on the labels y + X^T u
(Gatmiry et al. 2024, Lemma on the sparse form; Ahn et al. 2023):
  w_0 = 0,  w_{t+1} = w_t + (1/n) B X (y + X^T u - X^T w_t).
Every function is batched over the leading axes.
"""

from __future__ import annotations

import numpy as np

from . import _validate as V


def _batch_shape(pairs):
    """np.broadcast_shapes of the leading (batch) axes, with an error naming the argument."""
    shape = ()
    for name, sh in pairs:
        try:
            shape = np.broadcast_shapes(shape, sh)
        except ValueError:
            raise ValueError(f"{name}: batch shape {sh} does not broadcast with {shape} of the other arguments") from None
    return shape


def make_prompt(X, y, x_q) -> np.ndarray:
    """Z_0 = [[X, x_q], [y, 0]] of shape (..., d+1, n+1) from X (..., d, n), y (..., n), x_q (..., d).

    d, n >= 1; finite real entries; leading (batch) axes must broadcast together."""
    X = V.float_array("X", X, 2)
    y = V.float_array("y", y, 1)
    x_q = V.float_array("x_q", x_q, 1)
    d, n = X.shape[-2:]
    if d < 1 or n < 1:
        raise ValueError(f"X: expected shape (..., d, n) with d, n >= 1, got {X.shape}")
    if y.shape[-1] != n:
        raise ValueError(f"y: expected last axis of length n = {n}, got shape {y.shape}")
    if x_q.shape[-1] != d:
        raise ValueError(f"x_q: expected last axis of length d = {d}, got shape {x_q.shape}")
    batch = _batch_shape([("X", X.shape[:-2]), ("y", y.shape[:-1]), ("x_q", x_q.shape[:-1])])
    Z = np.zeros(batch + (d + 1, n + 1))
    Z[..., :d, :n] = X
    Z[..., :d, n] = x_q
    Z[..., d, :n] = y
    return Z


def _check_weights(Z, P, Q, names=("P", "Q")):
    m = Z.shape[-2]
    for name, W in zip(names, (P, Q)):
        if W.shape[-2:] != (m, m):
            raise ValueError(f"{name}: expected shape (..., {m}, {m}) to match Z with {m} rows, got {W.shape}")
    _batch_shape([("Z", Z.shape[:-2]), (names[0], P.shape[:-2]), (names[1], Q.shape[:-2])])


def _check_prompts(Z):
    if Z.shape[-2] < 2 or Z.shape[-1] < 2:
        raise ValueError(f"Z: expected shape (..., d+1, n+1) with d, n >= 1 (n example columns plus the query), "
                         f"got {Z.shape}")


def _layer(Z, P, Q):
    n = Z.shape[-1] - 1
    Zc = Z[..., :n]
    # (d+1)x(d+1) Gram matrix first: O(d^2 n) instead of O(d n^2).
    G = Zc @ np.swapaxes(Zc, -1, -2)
    return Z - (P @ G @ Q @ Z) / n


def attention_layer(Z, P, Q) -> np.ndarray:
    """One linear self-attention layer: Z - (1/n) P Z M Z^T Q Z (M masks the query column).

    Z (..., d+1, n+1) with d, n >= 1, P and Q (..., d+1, d+1); finite real entries."""
    Z = V.float_array("Z", Z, 2)
    P = V.float_array("P", P, 2)
    Q = V.float_array("Q", Q, 2)
    _check_prompts(Z)
    _check_weights(Z, P, Q)
    return _layer(Z, P, Q)


def looped_forward(Z, P, Q, loops: int) -> np.ndarray:
    """Apply the same layer (P, Q) `loops` times to prompts Z of shape (..., d+1, n+1)."""
    Z = V.float_array("Z", Z, 2)
    P = V.float_array("P", P, 2)
    Q = V.float_array("Q", Q, 2)
    loops = V.positive_int("loops", loops)
    _check_prompts(Z)
    _check_weights(Z, P, Q)
    for _ in range(loops):
        Z = _layer(Z, P, Q)
    return Z


def _weight_list(name, Ws):
    if isinstance(Ws, (str, bytes)) or not isinstance(Ws, (list, tuple, np.ndarray)):
        raise TypeError(f"{name}: expected a list of (d+1, d+1) matrices, one per layer, got {type(Ws).__name__}")
    return [V.float_array(f"{name}[{i}]", W, 2) for i, W in enumerate(Ws)]


def multilayer_forward(Z, Ps, Qs) -> np.ndarray:
    """Apply layers (P_1, Q_1), ..., (P_L, Q_L) in turn (one weight pair per layer); Ps and Qs
    are equally long lists (or stacked arrays) of (d+1, d+1) matrices."""
    Z = V.float_array("Z", Z, 2)
    Ps = _weight_list("Ps", Ps)
    Qs = _weight_list("Qs", Qs)
    if len(Ps) != len(Qs) or not Ps:
        raise ValueError(f"Ps, Qs: expected equally long non-empty lists, got {len(Ps)} and {len(Qs)}")
    _check_prompts(Z)
    for i, (P, Q) in enumerate(zip(Ps, Qs)):
        _check_weights(Z, P, Q, (f"Ps[{i}]", f"Qs[{i}]"))
    for P, Q in zip(Ps, Qs):
        Z = _layer(Z, P, Q)
    return Z


def prediction(Z) -> np.ndarray:
    """yhat = -[Z]_{d+1, n+1}: minus the query's label slot. Z (..., d+1, n+1), real; inf or
    NaN entries (a diverged model's output) pass through."""
    Z = V.float_array("Z", Z, 2, finite=False)
    _check_prompts(Z)
    return -Z[..., -1, -1]


def sparse_weights(A, u=None):
    """(P, Q) with Q = [[A, 0], [0, 0]] and P = [[0, 0], [u^T, 1]] (u = 0 when None)."""
    A = V.as_real_array("A", A, 2, allow_exact=False)
    d = A.shape[0]
    if A.shape != (d, d) or d < 1:
        raise ValueError(f"A: expected a square d x d matrix with d >= 1, got shape {A.shape}")
    u = np.zeros(d) if u is None else V.vector("u", u, d, allow_exact=False)
    P = np.zeros((d + 1, d + 1))
    P[d, :d] = u
    P[d, d] = 1.0
    Q = np.zeros((d + 1, d + 1))
    Q[:d, :d] = A
    return P, Q


def preconditioned_gd(X, y, B, loops: int, w0=None, return_path: bool = False):
    """L steps of preconditioned GD on the prompt's least squares (1/2n)||y - X^T w||^2:

        w_{t+1} = w_t + (1/n) B X (y - X^T w_t),   w_0 = 0 (or w0).

    X (..., d, n), y (..., n), B (d, d) or (..., d, d). Returns w_L (..., d), or all iterates
    (..., loops+1, d) with return_path.
    """
    X = V.float_array("X", X, 2)
    y = V.float_array("y", y, 1)
    B = V.float_array("B", B, 2)
    loops = V.positive_int("loops", loops, minimum=0)
    return_path = V.boolean("return_path", return_path)
    d, n = X.shape[-2:]
    if d < 1 or n < 1:
        raise ValueError(f"X: expected shape (..., d, n) with d, n >= 1, got {X.shape}")
    if y.shape[-1] != n:
        raise ValueError(f"y: expected last axis of length n = {n}, got shape {y.shape}")
    if B.shape[-2:] != (d, d):
        raise ValueError(f"B: expected shape ({d}, {d}), got {B.shape}")
    batch = _batch_shape([("X", X.shape[:-2]), ("y", y.shape[:-1]), ("B", B.shape[:-2])])
    if w0 is None:
        w = np.zeros(batch + (d,))
    else:
        w0 = V.float_array("w0", w0, 1)
        if w0.shape[-1] != d:
            raise ValueError(f"w0: expected last axis of length d = {d}, got shape {w0.shape}")
        batch = _batch_shape([("X, y, B", batch), ("w0", w0.shape[:-1])])
        w = np.broadcast_to(w0, batch + (d,)).copy()
    path = [w]
    for _ in range(loops):
        r = y - np.einsum("...dn,...d->...n", X, w)
        w = w + np.einsum("...ij,...j->...i", B, np.einsum("...dn,...n->...d", X, r)) / n
        path.append(w)
    return np.stack(path, axis=-2) if return_path else w
