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


def _float_array(name, value, min_ndim):
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "fiu":
        arr = V.as_real_array(name, value, arr.ndim, allow_exact=False)
    arr = np.asarray(arr, dtype=float)
    if arr.ndim < min_ndim:
        raise ValueError(f"{name}: expected at least {min_ndim} dimensions, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: entries must be finite (found NaN or inf)")
    return arr


def make_prompt(X, y, x_q) -> np.ndarray:
    """Z_0 = [[X, x_q], [y, 0]] of shape (..., d+1, n+1) from X (..., d, n), y (..., n), x_q (..., d)."""
    X = _float_array("X", X, 2)
    y = _float_array("y", y, 1)
    x_q = _float_array("x_q", x_q, 1)
    d, n = X.shape[-2:]
    if y.shape[-1] != n:
        raise ValueError(f"y: expected last axis of length n = {n}, got shape {y.shape}")
    if x_q.shape[-1] != d:
        raise ValueError(f"x_q: expected last axis of length d = {d}, got shape {x_q.shape}")
    batch = np.broadcast_shapes(X.shape[:-2], y.shape[:-1], x_q.shape[:-1])
    Z = np.zeros(batch + (d + 1, n + 1))
    Z[..., :d, :n] = X
    Z[..., :d, n] = x_q
    Z[..., d, :n] = y
    return Z


def _check_weights(Z, P, Q):
    m = Z.shape[-2]
    for name, W in (("P", P), ("Q", Q)):
        if W.shape[-2:] != (m, m):
            raise ValueError(f"{name}: expected shape (..., {m}, {m}) to match Z with {m} rows, got {W.shape}")


def attention_layer(Z, P, Q) -> np.ndarray:
    """One linear self-attention layer: Z - (1/n) P Z M Z^T Q Z (M masks the query column)."""
    n = Z.shape[-1] - 1
    Zc = Z[..., :n]
    # (d+1)x(d+1) Gram matrix first: O(d^2 n) instead of O(d n^2).
    G = Zc @ np.swapaxes(Zc, -1, -2)
    return Z - (P @ G @ Q @ Z) / n


def looped_forward(Z, P, Q, loops: int) -> np.ndarray:
    """Apply the same layer (P, Q) `loops` times to prompts Z of shape (..., d+1, n+1)."""
    Z = _float_array("Z", Z, 2)
    P = _float_array("P", P, 2)
    Q = _float_array("Q", Q, 2)
    loops = V.positive_int("loops", loops)
    if Z.shape[-1] < 2:
        raise ValueError(f"Z: needs n >= 1 example columns plus the query, got shape {Z.shape}")
    _check_weights(Z, P, Q)
    for _ in range(loops):
        Z = attention_layer(Z, P, Q)
    return Z


def multilayer_forward(Z, Ps, Qs) -> np.ndarray:
    """Apply layers (P_1, Q_1), ..., (P_L, Q_L) in turn (one weight pair per layer)."""
    Z = _float_array("Z", Z, 2)
    Ps = [_float_array("Ps", P, 2) for P in Ps]
    Qs = [_float_array("Qs", Q, 2) for Q in Qs]
    if len(Ps) != len(Qs) or not Ps:
        raise ValueError(f"Ps, Qs: expected equally long non-empty lists, got {len(Ps)} and {len(Qs)}")
    for P, Q in zip(Ps, Qs):
        _check_weights(Z, P, Q)
        Z = attention_layer(Z, P, Q)
    return Z


def prediction(Z) -> np.ndarray:
    """yhat = -[Z]_{d+1, n+1}: minus the query's label slot."""
    return -np.asarray(Z)[..., -1, -1]


def sparse_weights(A, u=None):
    """(P, Q) with Q = [[A, 0], [0, 0]] and P = [[0, 0], [u^T, 1]] (u = 0 when None)."""
    A = V.as_real_array("A", A, 2, allow_exact=False)
    d = A.shape[0]
    if A.shape != (d, d):
        raise ValueError(f"A: expected a square matrix, got shape {A.shape}")
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
    X = _float_array("X", X, 2)
    y = _float_array("y", y, 1)
    B = _float_array("B", B, 2)
    loops = V.positive_int("loops", loops, minimum=0)
    d, n = X.shape[-2:]
    if y.shape[-1] != n:
        raise ValueError(f"y: expected last axis of length n = {n}, got shape {y.shape}")
    if B.shape[-2:] != (d, d):
        raise ValueError(f"B: expected shape ({d}, {d}), got {B.shape}")
    batch = np.broadcast_shapes(X.shape[:-2], y.shape[:-1], B.shape[:-2])
    w = np.zeros(batch + (d,)) if w0 is None else np.broadcast_to(_float_array("w0", w0, 1), batch + (d,)).copy()
    path = [w]
    for _ in range(loops):
        r = y - np.einsum("...dn,...d->...n", X, w)
        w = w + np.einsum("...ij,...j->...i", B, np.einsum("...dn,...n->...d", X, r)) / n
        path.append(w)
    return np.stack(path, axis=-2) if return_path else w
