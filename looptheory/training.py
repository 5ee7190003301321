"""Training looped and multi-layer linear Transformers on sampled prompts, in NumPy.

As in the papers' experiments, every step draws a fresh minibatch of prompts from the task and
takes an Adam or SGD step on the empirical loss mean_b (yhat_b - y_q,b)^2 (docs/conventions.md: no
factor 1/2, not divided by d). The gradient is hand-derived backpropagation through the loops
(checked against finite differences and the Taylor test in tests/test_training.py).

Backpropagation through one layer Z' = Z - (1/n) P G Q Z with G = Z M Z^T (M = diag(I_n, 0)),
given D = dloss/dZ' (all per prompt; shared weights sum over the batch):
  T = G Q Z,     dloss/dP = -(1/n) sum_b D T^T,
  E = -(1/n) P^T D,   dG = E (Q Z)^T,   d(QZ) = G E,   dloss/dQ = sum_b d(QZ) Z^T,
  dloss/dZ = D + Q^T d(QZ) + (dG + dG^T) Z M.
A looped model sums the per-layer weight gradients; a multi-layer model keeps them apart.

Models (the parameter dicts that `train`, `batch_loss_grad` and the checkpoints use):
  "full"              {"P": (d+1, d+1), "Q": (d+1, d+1)}, every entry trainable, looped.
  "sparse"            {"A": (d, d), "u": (d,)}: Q = [[A, 0], [0, 0]], P = [[0, 0], [u^T, 1]], looped.
  "multilayer"        {"P": (L, d+1, d+1), "Q": (L, d+1, d+1)}, one free pair per layer.
  "multilayer_sparse" {"A": (L, d, d), "u": (L, d)}, one sparse pair per layer.
"""

from __future__ import annotations

import errno
import itertools
import json
import math
import os
import secrets
import warnings
import zipfile
from dataclasses import dataclass, field, replace

import numpy as np

from . import _validate as V
from .model import make_prompt, sparse_weights
from .task import Task

MODELS = ("full", "sparse", "multilayer", "multilayer_sparse")
OPTIMIZERS = ("adam", "sgd")
SAMPLINGS = ("prompts", "statistics")


def check_model(model):
    """`model` if it names one of MODELS, else ValueError naming model."""
    if model not in MODELS:
        raise ValueError(f"model: expected one of {', '.join(MODELS)}, got {model!r}")
    return model


def layer_weights(params: dict, model: str, loops: int) -> list:
    """The (P, Q) pair of each of the `loops` layers applied, from a parameter dict (validated:
    the keys and shapes of the module docstring's table, finite real entries; a multi-layer
    model needs loops = its number of layers). The list holds `loops` references, so a loop
    count whose list would exceed the memory cap is refused (ValueError naming loops)."""
    check_model(model)
    loops = V.positive_int("loops", loops)
    if not isinstance(params, dict):
        raise TypeError(f"params: expected a dict of arrays, got {type(params).__name__}")
    d, n_layers = _param_sizes(params, model)
    if n_layers is not None and n_layers != loops:
        raise ValueError(f"loops: a multi-layer model has {n_layers} layers, got loops = {loops}")
    params = check_params(params, model, d, loops)
    V.check_memory("loops", f"layer_weights with loops = {V.number_text(loops)}", 8 * loops,
                   "a list of loops references x 8 bytes")
    return _layers(params, model, loops)


def _param_sizes(params, model):
    """(d, number of layers or None for a looped model) read off a parameter dict's first array."""
    key = "P" if model in ("full", "multilayer") else "A"
    if key not in params:
        raise ValueError(f"params: model {model!r} needs key {key!r}, got keys {sorted(map(str, params))}")
    shape = np.shape(params[key])
    looped = model in ("full", "sparse")
    if len(shape) != (2 if looped else 3) or shape[-1] < (2 if key == "P" else 1):
        want = {"full": "(d+1, d+1)", "sparse": "(d, d)", "multilayer": "(L, d+1, d+1)", "multilayer_sparse": "(L, d, d)"}
        raise ValueError(f"params[{key!r}]: expected shape {want[model]} for model {model!r}, got {shape}")
    d = shape[-1] - (1 if key == "P" else 0)
    return d, (None if looped else shape[0])


def _layers(params, model, loops):
    """layer_weights without the checks (params already validated)."""
    if model == "full":
        return [(params["P"], params["Q"])] * loops
    if model == "sparse":
        return [sparse_weights(params["A"], params["u"])] * loops
    if model == "multilayer":
        return list(zip(params["P"], params["Q"]))
    return [sparse_weights(A, u) for A, u in zip(params["A"], params["u"])]


def init_params(model: str, d: int, loops: int, rng, scale: float = 0.1) -> dict:
    """Small random initial weights: every free entry N(0, scale^2 / (d+1)).

    The all-zero point is a saddle of the full model (both P and Q enter every prediction), so
    the full models start from a small random point, as in the papers' experiments. rng: a
    numpy Generator or an integer seed >= 0; scale: finite and >= 0. Weights that would not fit
    in the memory cap are refused up front (ValueError naming d, or loops for the multi-layer
    models).
    """
    check_model(model)
    d = V.positive_int("d", d)
    loops = V.positive_int("loops", loops)
    rng = V.rng_from("rng", rng)
    scale = V.nonnegative_float("scale", scale)
    _check_param_memory(model, d, loops)
    m = d + 1
    s = scale / math.sqrt(m)
    if model == "full":
        return {"P": s * rng.standard_normal((m, m)), "Q": s * rng.standard_normal((m, m))}
    if model == "sparse":
        return {"A": s * rng.standard_normal((d, d)), "u": np.zeros(d)}
    if model == "multilayer":
        return {"P": s * rng.standard_normal((loops, m, m)), "Q": s * rng.standard_normal((loops, m, m))}
    return {"A": s * rng.standard_normal((loops, d, d)), "u": np.zeros((loops, d))}


def _param_entries(model, d, loops):
    m = d + 1
    return {"full": 2 * m * m, "sparse": d * d + d, "multilayer": 2 * loops * m * m,
            "multilayer_sparse": loops * (d * d + d)}[model]


def _check_param_memory(model, d, loops):
    """Refuse weights (and the optimizer's two moments, the last iterate and the tail average:
    5 copies in train) that would not fit in the memory cap."""
    nbytes = 5 * _param_entries(model, d, loops) * 8
    name = "loops" if 5 * _param_entries(model, d, 1) * 8 <= V.memory_cap() < nbytes else "d"
    V.check_memory(name, f"the {model} model's weights at d = {V.number_text(d)}, loops = {V.number_text(loops)}",
                   nbytes, "5 copies (weights, two optimizer moments, last iterate, average) x 8 bytes")


def _step_bytes(model, method, batch, d, n, loops, sampled):
    """Estimated peak memory of one gradient evaluation on `batch` prompts (the caches of each
    method of batch_loss_grad), plus drawing them when `sampled` (True or "prompts": the prompts;
    "statistics": their statistics, sample_statistics), or else (prompts given to
    batch_loss_grad) its validated copy of them and, for gd and gram, their statistics. For given
    prompts an upper bound within 2x of the traced peak (0.75 to 0.96 of it measured with
    tracemalloc and ru_maxrss, every method, batch 64 to 5000, n 10 to 2000; tests/test_training.py)."""
    m, k = d + 1, n + 1
    sparse = model in ("sparse", "multilayer_sparse")
    if method == "gd" or (method == "auto" and sparse):
        work = 3 * batch * d * d + (loops + 8) * batch * d + 8 * loops
    elif method in ("auto", "gram"):
        work = (5 * loops + 4) * min(batch, _BLOCK) * m * m + 8 * loops
    else:  # layers: the per-layer cache of the full prompts, and up to 8 prompt-sized arrays of
        # backpropagation besides it (Z_L, D, E and its temporaries, dR, Q^T dR, dZ, tensordot's copies)
        work = loops * (3 * batch * m * k + batch * m * m) + 8 * batch * m * k
    if sampled == "statistics":  # G, q and the Bartlett factors
        prompts = 4 * batch * m * m + (batch * d * k if n < d else 0)
    elif sampled:  # X and its transform, and Z
        prompts = 3 * batch * m * k
    else:  # the float copy of Z (_real_array) and its isfinite mask, 1 byte an entry
        prompts = (9 * batch * m * k + 7) // 8
        if method != "layers":  # G = Zc Zc^T / n and the product before the division
            prompts += 2 * batch * m * m
    return 8 * (work + prompts)


def _check_step_memory(model, method, batch, d, n, loops, sampled, batch_name):
    """Refuse up front a gradient evaluation that would not fit in the memory cap, naming what
    drives it: one prompt too big (task, or Z), the loop count's caches (loops), or the batch."""
    nbytes = _step_bytes(model, method, batch, d, n, loops, sampled)
    cap = V.memory_cap()
    if nbytes <= cap:
        return
    if _step_bytes(model, method, 1, d, n, 1, sampled) > cap:
        name = "task" if sampled else "Z"
    elif _step_bytes(model, method, batch, d, n, 1, sampled) <= cap:
        name = "loops"
    else:
        name = batch_name
    V.check_memory(name, f"a gradient step of the {model} model on {V.number_text(batch)} prompts at d = {d}, "
                   f"n = {V.number_text(n)}, loops = {V.number_text(loops)}", nbytes,
                   "the prompts and the per-loop caches of backpropagation, 8 bytes per entry")


def _real_array(name, value):
    try:
        arr = np.asarray(value)
    except ValueError:
        raise ValueError(f"{name}: expected a real array, got a ragged sequence") from None
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a real array, got dtype {arr.dtype}")
    arr = arr.astype(float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: entries must be finite")
    return arr


def check_params(params, model, d, loops):
    """A validated float copy of a parameter dict: the keys and shapes of the module docstring's
    table for this model, d and number of layers, finite real entries (ValueError or TypeError
    naming params otherwise)."""
    if not isinstance(params, dict):
        raise TypeError(f"params: expected a dict of arrays, got {type(params).__name__}")
    m = d + 1
    shapes = {
        "full": {"P": (m, m), "Q": (m, m)},
        "sparse": {"A": (d, d), "u": (d,)},
        "multilayer": {"P": (loops, m, m), "Q": (loops, m, m)},
        "multilayer_sparse": {"A": (loops, d, d), "u": (loops, d)},
    }[model]
    out = {}
    for key, shape in shapes.items():
        if key not in params:
            raise ValueError(f"params: model {model!r} needs key {key!r}, got keys {sorted(params)}")
        arr = _real_array(f"params[{key!r}]", params[key])
        if arr.shape != shape:
            raise ValueError(f"params[{key!r}]: expected shape {shape} for model {model!r}, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"params[{key!r}]: entries must be finite")
        out[key] = arr
    return out


def _forward_cached(Z, weights):
    """Forward through the layers, keeping what backpropagation needs."""
    n = Z.shape[-1] - 1
    cache = []
    for P, Q in weights:
        Zc = Z[..., :n]
        G = Zc @ np.swapaxes(Zc, -1, -2)
        R = Q @ Z
        T = G @ R
        cache.append((Z, G, R, T))
        Z = Z - (P @ T) / n
    return Z, cache


def _backward(D, weights, cache):
    """Per-layer (dP, dQ) from D = dloss/dZ_L, in layer order."""
    grads = []
    for (P, Q), (Z, G, R, T) in zip(reversed(weights), reversed(cache)):
        n = Z.shape[-1] - 1
        dP = -np.tensordot(D, T, axes=([0, 2], [0, 2])) / n
        E = -(np.swapaxes(P, -1, -2) @ D) / n
        dG = E @ np.swapaxes(R, -1, -2)
        dR = G @ E
        dQ = np.tensordot(dR, Z, axes=([0, 2], [0, 2]))
        dZ = D + np.swapaxes(Q, -1, -2) @ dR
        dZ[..., :n] += (dG + np.swapaxes(dG, -1, -2)) @ Z[..., :n]
        D = dZ
        grads.append((dP, dQ))
    return grads[::-1]


def _prompt_statistics(Z):
    """(G, q) of prompts Z (batch, d+1, n+1): G = Z M Z^T / n (M = diag(I_n, 0)) and the query
    column q = Z[:, :, n]. They determine every model's prediction (see _gram_loss_grad)."""
    n = Z.shape[-1] - 1
    Zc = Z[:, :, :n]
    return (Zc @ np.swapaxes(Zc, 1, 2)) / n, Z[:, :, n]


def _gram_loss_grad(weights, G, q, y_q, batch_total):
    """Loss (summed, divided by batch_total) and per-layer (dP, dQ) through the Gram form.

    A prompt enters the prediction only through G = Z M Z^T / n ((d+1) x (d+1)) and its query
    column q: one layer is Z <- H Z with H = I - P G Q, hence
        G <- H G H^T,   q <- H q,
    O((d+1)^3) per prompt and layer instead of O((d+1)^2 n). Backpropagation, given Gbar' and
    qbar' for the layer's output (K = G Q):
        Hbar = qbar' q^T + (Gbar' + Gbar'^T) H G,   Kbar = -P^T Hbar,
        dP = -sum_b Hbar K^T,   dQ = sum_b G Kbar,
        qbar = H^T qbar',   Gbar = H^T Gbar' H + Kbar Q^T.
    """
    B, m, _ = G.shape
    d = m - 1
    eye = np.eye(m)
    cache = []
    for P, Q in weights:
        K = (G.reshape(-1, m) @ Q).reshape(B, m, m)
        H = eye - P @ K
        HG = H @ G
        cache.append((G, q, K, H, HG))
        q = np.einsum("bij,bj->bi", H, q)
        G = HG @ np.swapaxes(H, 1, 2)
    r = -q[:, d] - y_q
    loss = float(r @ r) / batch_total
    qbar = np.zeros((B, m))
    qbar[:, d] = -2.0 * r / batch_total
    Gbar = None
    grads = []
    for (P, Q), (G, q, K, H, HG) in zip(reversed(weights), reversed(cache)):
        Hbar = qbar[:, :, None] * q[:, None, :]
        if Gbar is not None:
            Hbar += (Gbar + np.swapaxes(Gbar, 1, 2)) @ HG
        # sum_b Hbar K^T and sum_b G Kbar (G symmetric) as single products over all prompts
        dP = -(np.swapaxes(Hbar, 0, 1).reshape(m, -1) @ np.swapaxes(K, 0, 1).reshape(m, -1).T)
        Kbar = -(P.T @ Hbar)
        dQ = G.reshape(-1, m).T @ Kbar.reshape(-1, m)
        grads.append((dP, dQ))
        qbar = np.einsum("bi,bij->bj", qbar, H)
        Gin = (Kbar.reshape(-1, m) @ Q.T).reshape(B, m, m)
        if Gbar is not None:
            Gin += np.swapaxes(H, 1, 2) @ Gbar @ H
        Gbar = Gin
    return loss, grads[::-1]


def _statistics_sampler(task):
    """A function (batch, rng) -> (G, q, y_q) drawing the statistics of `batch` fresh prompts of
    `task` (see sample_statistics), with the task's factors computed once."""
    d, n = task.d, task.n
    eye = np.eye(d)
    sx = np.asarray(task.sigma_x, dtype=float)
    sw = np.asarray(task.sigma_w, dtype=float)
    # multiplying by the identity changes nothing, so it is skipped (exactly the same numbers)
    cxT = None if np.array_equal(sx, eye) else np.linalg.cholesky(sx).T
    ev, evec = np.linalg.eigh(sw)
    cwT = None if np.array_equal(sw, eye) else (evec * np.sqrt(np.clip(ev, 0.0, None))).T
    sigma = math.sqrt(float(task.noise))
    low = np.tril_indices(d, -1)
    diag = np.arange(d)
    dof = n - diag  # Bartlett: T_ii^2 ~ chi^2 with n, n-1, ..., n-d+1 degrees of freedom
    k = len(low[0])

    def draw(batch, rng):
        G = np.empty((batch, d + 1, d + 1))
        z = rng.standard_normal((batch, 2 * d + (k if n >= d else 0)))
        w = z[:, :d] if cwT is None else z[:, :d] @ cwT
        x_q = z[:, d:2 * d] if cxT is None else z[:, d:2 * d] @ cxT
        if n >= d:
            T = np.zeros((batch, d, d))
            T[:, low[0], low[1]] = z[:, 2 * d:]
            T[:, diag, diag] = np.sqrt(rng.chisquare(dof, size=(batch, d)))
            R = T if cxT is None else cxT.T @ T  # X = R V^T with V^T V = I_d
            v = (w[:, None, :] @ R)[:, 0]  # V^T y = R^T w + V^T eps
            if sigma > 0:
                v += sigma * rng.standard_normal((batch, d))
            yy = np.einsum("bi,bi->b", v, v)
            if sigma > 0 and n > d:  # the part of eps orthogonal to the rows of X
                yy += sigma * sigma * rng.chisquare(n - d, size=batch)
            G[:, :d, :d] = R @ np.swapaxes(R, 1, 2)
            G[:, :d, d] = (R @ v[:, :, None])[:, :, 0]
        else:  # X X^T is singular: draw the prompts themselves
            X = rng.standard_normal((batch, d, n))
            if cxT is not None:
                X = cxT.T @ X
            y = np.einsum("bd,bdn->bn", w, X)
            if sigma > 0:
                y += sigma * rng.standard_normal((batch, n))
            G[:, :d, :d] = X @ np.swapaxes(X, 1, 2)
            G[:, :d, d] = np.einsum("bdn,bn->bd", X, y)
            yy = np.einsum("bn,bn->b", y, y)
        G[:, d, d] = yy
        G /= n
        G[:, d, :d] = G[:, :d, d]
        q = np.zeros((batch, d + 1))
        q[:, :d] = x_q
        return G, q, np.einsum("bi,bi->b", w, x_q)

    return draw


def _check_statistics_n(task):
    """The chi-square degrees of freedom of sample_statistics are floats: n up to 2^53."""
    if task.n > 2**53:
        raise ValueError(f"task: sample_statistics needs n <= 2^53 (its chi-square degrees of freedom are floats), "
                         f"got n = {V.number_text(task.n)}")


def sample_statistics(task: Task, batch: int, rng):
    """The statistics of `batch` fresh prompts of `task` that every model's prediction depends
    on, drawn without drawing the prompts: (G, q, y_q) with
        G = Z M Z^T / n = [[S, s], [s^T, y^T y / n]],  S = X X^T / n,  s = X y / n,
        q = [x_q; 0] (the prompt's query column),  y_q = <w*, x_q>,
    shapes (batch, d+1, d+1), (batch, d+1), (batch,); the same joint law as the statistics of
    `task.sample`'s prompts (docs/conventions.md, "Data"), from d(d+1)/2 + 2d (+ d + 1 with
    label noise) random numbers per prompt instead of d n + 2d (+ n).

    Route (n >= d; Bartlett): X = L T V^T with L the lower Cholesky factor of Sigma_x, T lower
    triangular with T_ij ~ N(0, 1) below the diagonal and T_ii^2 ~ chi^2_{n-i+1} (i = 1 ... d),
    and V (n x d, V^T V = I) Haar-distributed and independent of T. With R = L T (lower
    triangular) and v = V^T y = R^T w* + sigma z (z = V^T eps / sigma ~ N(0, I_d)):
        X X^T = R R^T,   X y = R v,   y^T y = |v|^2 + sigma^2 chi^2_{n-d},
    the chi^2 being the part of the noise orthogonal to the rows of X, independent of the rest.
    For n < d (X X^T singular) the prompts are drawn and reduced. rng: a numpy Generator or an
    integer seed >= 0; batch: an integer >= 1; the task's n must be finite. Memory: about
    4 x batch x (d+1)^2 x 8 bytes, refused up front above the memory cap (ValueError naming batch).
    """
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
    if V.is_infinite(task.n):
        raise ValueError("task: sample_statistics draws prompts' statistics, so n must be finite")
    batch = V.positive_int("batch", batch)
    rng = V.rng_from("rng", rng)
    _check_statistics_n(task)
    m = task.d + 1
    V.check_memory("batch", f"sample_statistics of {V.number_text(batch)} prompts at d = {task.d}",
                   4 * batch * m * m * 8 + (batch * task.d * task.n * 8 if task.n < task.d else 0),
                   "4 x batch x (d + 1)^2 x 8 bytes")
    return _statistics_sampler(task)(batch, rng)


# Blocks of prompts small enough that the temporaries stay in cache (about 5x faster at
# batch 4096 than one block; measured in benchmarks/bench_training.py's notes).
_BLOCK = 256


def _fold_grads(grads, model, d):
    """Chain rule from the per-layer (dP, dQ) to the model's free parameters."""
    if model == "full":
        return {"P": sum(g[0] for g in grads), "Q": sum(g[1] for g in grads)}
    if model == "multilayer":
        return {"P": np.stack([g[0] for g in grads]), "Q": np.stack([g[1] for g in grads])}
    # Sparse: A sits in Q[:d, :d] and u in P[d, :d]; the other entries are fixed.
    gA = [g[1][:d, :d] for g in grads]
    gu = [g[0][d, :d] for g in grads]
    if model == "sparse":
        return {"A": sum(gA), "u": sum(gu)}
    return {"A": np.stack(gA), "u": np.stack(gu)}


def _sparse_layers(params, model, loops):
    if model == "sparse":
        return [params["A"]] * loops, [params["u"]] * loops
    return list(params["A"]), list(params["u"])


def _sparse_loss_grad(params, model, G, q, y_q, loops):
    """The sparse models through their GD form (docs/conventions.md, "What the sparse
    model computes"): with S = X X^T/n, s = X y/n (blocks of G) and B_l = A_l^T,
        w_{l+1} = w_l + B_l (s + S u_l - S w_l),   yhat = <w_L, x_q> - Z[d, n],
    which costs O(d^2) per prompt and loop instead of O(d^2 n). Backpropagation (adjoint
    lam_l = dloss/dw_l, r_l = s + S u_l - S w_l, mu = B_l^T lam_{l+1}):
        dB_l = sum_b lam_{l+1} r_l^T,  du_l = sum_b S mu,  lam_l = lam_{l+1} - S mu.
    """
    B = G.shape[0]
    d = G.shape[1] - 1
    S = np.ascontiguousarray(G[:, :d, :d])
    s, x_q, c = G[:, :d, d], q[:, :d], q[:, d]
    As, us = _sparse_layers(params, model, loops)
    S2 = S.reshape(-1, d)
    shared = s + (S2 @ us[0]).reshape(B, d) if model == "sparse" else None  # one u for every loop
    w = None
    rs = []
    for A, u in zip(As, us):
        r = shared if shared is not None else s + (S2 @ u).reshape(B, d)
        if w is not None:  # w_0 = 0
            r = r - np.einsum("bij,bj->bi", S, w)
        rs.append(r)
        w = r @ A if w is None else w + r @ A  # B r with B = A^T, row-vector form
    res = np.einsum("bi,bi->b", w, x_q) - c - y_q
    loss = float(res @ res) / B
    lam = (2.0 / B) * res[:, None] * x_q
    gA, gu = [], []
    for A, r in zip(reversed(As), reversed(rs)):
        gA.append(r.T @ lam)  # dA = dB^T = sum_b r lam^T
        mu = lam @ A.T
        Smu = np.einsum("bij,bj->bi", S, mu)
        gu.append(Smu.sum(axis=0))
        lam = lam - Smu
    gA, gu = gA[::-1], gu[::-1]
    if model == "sparse":
        return loss, {"A": sum(gA), "u": sum(gu)}
    return loss, {"A": np.stack(gA), "u": np.stack(gu)}


def _statistics_loss_grad(params, model, G, q, y_q, loops, method="auto"):
    """batch_loss_grad's GD and Gram forms from the prompts' statistics (G, q) (validated)."""
    if method == "gd" or (method == "auto" and model in ("sparse", "multilayer_sparse")):
        return _sparse_loss_grad(params, model, G, q, y_q, loops)
    weights = _layers(params, model, loops)
    B = len(y_q)
    loss, grads = 0.0, None
    for i in range(0, B, _BLOCK):
        lb, gb = _gram_loss_grad(weights, G[i:i + _BLOCK], q[i:i + _BLOCK], y_q[i:i + _BLOCK], B)
        loss += lb
        grads = gb if grads is None else [(a[0] + b[0], a[1] + b[1]) for a, b in zip(grads, gb)]
    return loss, _fold_grads(grads, model, G.shape[1] - 1)


METHODS = ("auto", "gd", "gram", "layers")


def batch_loss_grad(params: dict, model: str, Z, y_q, loops: int, method: str = "auto"):
    """The empirical loss mean_b (yhat_b - y_q,b)^2 on prompts Z (batch, d+1, n+1) and its
    gradient with respect to every free parameter (a dict shaped like params).

    method: "gd" (sparse models only: the GD form), "gram" (any model: the (d+1) x (d+1) Gram
    form), "layers" (any model: backpropagation through the full prompt, layer by layer), or
    "auto" (gd for the sparse models, gram otherwise). The three are independent derivations
    of one gradient; the tests hold them against each other and against finite differences.
    Memory grows with loops (each method caches every layer); a call whose estimate is above the
    memory cap is refused up front (ValueError naming loops, or Z)."""
    model = check_model(model)
    Z = _real_array("Z", Z)
    y_q = _real_array("y_q", y_q)
    if Z.ndim != 3 or Z.shape[0] < 1 or Z.shape[1] < 2 or Z.shape[2] < 2:
        raise ValueError(f"Z: expected shape (batch, d+1, n+1) with batch, d, n >= 1, got {Z.shape}")
    if y_q.shape != Z.shape[:1]:
        raise ValueError(f"y_q: expected shape {Z.shape[:1]}, got {y_q.shape}")
    d = Z.shape[1] - 1
    loops = V.positive_int("loops", loops)
    params = check_params(params, model, d, loops)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    sparse = model in ("sparse", "multilayer_sparse")
    if method == "gd" and not sparse:
        raise ValueError(f"method: 'gd' needs a sparse model, got model {model!r}")
    _check_step_memory(model, method, Z.shape[0], d, Z.shape[2] - 1, loops, False, "Z")
    if method != "layers":
        G, q = _prompt_statistics(Z)
        return _statistics_loss_grad(params, model, G, q, y_q, loops, method)
    weights = _layers(params, model, loops)
    ZL, cache = _forward_cached(Z, weights)
    r = -ZL[:, d, -1] - y_q
    loss = float(np.mean(r * r))
    D = np.zeros_like(ZL)
    D[:, d, -1] = -2.0 * r / len(r)
    return loss, _fold_grads(_backward(D, weights, cache), model, d)


def predict(params: dict, model: str, Z, loops: int) -> np.ndarray:
    """yhat = -[Z_loops]_{d+1, n+1} for prompts Z (..., d+1, n+1). A looped model ("full",
    "sparse") may be run with any number of loops, not only the number it was trained with;
    memory does not grow with loops (time does)."""
    model = check_model(model)
    Z = _real_array("Z", Z)
    if Z.ndim < 2 or Z.shape[-2] < 2 or Z.shape[-1] < 2:
        raise ValueError(f"Z: expected shape (..., d+1, n+1) with d, n >= 1, got {Z.shape}")
    d = Z.shape[-2] - 1
    loops = V.positive_int("loops", loops)
    if not isinstance(params, dict):
        raise TypeError(f"params: expected a dict of arrays, got {type(params).__name__}")
    n_layers = _param_sizes(params, model)[1]
    if n_layers is None:
        n_layers = loops
    elif n_layers != loops:
        raise ValueError(f"loops: a multi-layer model has {n_layers} layers, got loops = {loops}")
    params = check_params(params, model, d, n_layers)
    if model in ("full", "sparse"):  # one pair, applied loops times: no list of loops references
        pair = (params["P"], params["Q"]) if model == "full" else sparse_weights(params["A"], params["u"])
        weights = itertools.repeat(pair, loops)
    else:
        weights = _layers(params, model, loops)
    with np.errstate(over="ignore", invalid="ignore"):
        ZL = _forward(Z, weights)
    return -ZL[..., d, -1]


def _forward(Z, weights):
    """Forward through the layers, keeping nothing (memory independent of the loop count)."""
    n = Z.shape[-1] - 1
    for P, Q in weights:
        Zc = Z[..., :n]
        Z = Z - (P @ ((Zc @ np.swapaxes(Zc, -1, -2)) @ (Q @ Z))) / n
    return Z


@dataclass(frozen=True)
class TrainResult:
    """A trained model and its training record.

    params: the final weights (dict, see the module docstring); model, loops, task: what was
    trained; history: the minibatch loss at every step (before the step); steps, batch,
    optimizer, lr, lr_final, seed: the settings; state: the optimizer's moments, step count, the
    last iterate (params may be a tail average) and the random generator's state, so that training can resume exactly (`train(..., resume=...)`).
    checkpoint: the file train(checkpoint=...) saved the result in (None if none was asked
    for or the write failed); checkpoint_error: why the result is not saved as asked (the write
    failed, or the name was taken during training and `checkpoint` is a sibling), else None.
    sampling: how the minibatches were drawn ("prompts" or "statistics", see train);
    provenance: None, or what made a stored result (save_checkpoint's provenance: the command,
    seed, package version and source hash, date), as read back by load_checkpoint.
    """

    params: dict
    model: str
    loops: int
    task: Task
    history: np.ndarray
    steps: int
    batch: int
    optimizer: str
    lr: float
    lr_final: float
    seed: int
    state: dict = field(default_factory=dict, repr=False)
    checkpoint: str | None = None
    checkpoint_error: str | None = None
    sampling: str = "prompts"
    provenance: dict | None = None


def _lr_at(step, steps, lr, lr_final):
    """Geometric decay from lr to lr_final over the run: late small steps average out the
    minibatch noise that otherwise keeps SGD a noise-ball away from the optimum."""
    if steps <= 1 or lr_final == lr:
        return lr
    return lr * (lr_final / lr) ** (step / (steps - 1))


def train(task: Task, model: str = "sparse", loops: int = 3, steps: int = 2000, batch: int = 512,
          optimizer: str = "adam", lr: float = 1e-2, lr_final: float | None = None, seed: int = 0,
          init: dict | None = None, init_scale: float = 0.1, average: float = 0.0, clip: float | None = None,
          resume: TrainResult | None = None, progress: bool | None = None,
          checkpoint: str | None = None, sampling: str = "prompts") -> TrainResult:
    """Train a model on fresh minibatches of prompts sampled from `task`.

    optimizer "adam" (beta1 = 0.9, beta2 = 0.999, eps = 1e-8) or "sgd" (plain, no momentum);
    the step size decays geometrically from lr to lr_final (default lr: constant). `seed` fixes
    the initialisation and every minibatch. average: the returned weights are the mean of the
    iterates over the last `average` fraction of the steps (Polyak-Ruppert tail averaging, which
    cancels most of the minibatch noise; 0 returns the last iterate). clip: rescale the
    minibatch gradient to Frobenius norm <= clip (all parameters together) before the optimizer
    sees it; heavy-tailed prompts otherwise throw the full model off a good point. `init` gives starting weights (else init_params);
    `resume` continues a previous TrainResult for `steps` more steps from its last iterate,
    optimizer state and random stream (seed is then ignored); with a constant lr and average = 0
    this reproduces the uninterrupted run exactly, while a decay and the tail average restart
    over the resumed steps. progress: show a tqdm bar (None: only on a terminal). checkpoint:
    save the result there as .npz at the end (see save_checkpoint: the file appears complete or
    not at all, even after SIGKILL). Before training, a taken name, a missing or unwritable
    folder, or settings beyond CHECKPOINT_LIMITS give ValueError naming checkpoint, and nothing
    is created under the name while training runs. A finished run is never lost: if the name
    was taken meanwhile, the result goes to the next free NAME-2.npz, NAME-3.npz, ... (never
    replacing a file); if the write fails (a full disk), the result is returned unsaved. Both
    warn and are recorded in the result's checkpoint and checkpoint_error.
    progress: True, False, or None (only on a terminal). seed: an integer >= 0; init_scale:
    finite and >= 0. sampling: "prompts" draws each minibatch as prompts (task.sample) and
    reduces them; "statistics" draws the statistics the models depend on directly, with the same
    joint law (sample_statistics: d(d+1)/2 + 2d random numbers per prompt instead of d n + 2d;
    about 4x cheaper per step at d = 5, n = 20). The two give different random streams, hence
    different (equally valid) runs for one seed. Training runs with one BLAS thread
    (threadpoolctl, restored afterwards): its products are small, and a second thread only
    spins (2x the CPU time on a 2-core machine); the numbers are the same. Memory: one step's prompts and backpropagation caches (about
    3 x batch x (d+1) x (n+1) x 8 bytes plus per-loop caches) and the weights must fit in the
    memory cap, else the call is refused before anything is allocated (ValueError naming task,
    batch, loops or d; docs/user-guide.md).
    """
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
    if V.is_infinite(task.n):
        raise ValueError("task: training samples prompts, so n must be finite")
    model = check_model(model)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    loops = V.positive_int("loops", loops)
    steps = V.positive_int("steps", steps)
    batch = V.positive_int("batch", batch)
    lr = V.positive_float("lr", lr)
    lr_final = lr if lr_final is None else V.positive_float("lr_final", lr_final)
    seed = V.seed("seed", seed)
    init_scale = V.nonnegative_float("init_scale", init_scale)
    average = float(V.real_scalar("average", average, allow_exact=False))
    if not 0.0 <= average <= 1.0:
        raise ValueError(f"average: expected a fraction in [0, 1], got {average}")
    if clip is not None:
        clip = V.positive_float("clip", clip)
    progress = V.optional_boolean("progress", progress)
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling: expected one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if sampling == "statistics":
        _check_statistics_n(task)
    _check_param_memory(model, task.d, loops)
    _check_step_memory(model, "auto", batch, task.d, task.n, loops, sampling, "batch")
    if checkpoint is not None:
        checkpoint = _checkpoint_path(checkpoint, "checkpoint")
        if os.path.lexists(checkpoint):
            raise ValueError(f"checkpoint: {checkpoint!r} exists; choose a new file (nothing was trained)")
        folder = os.path.dirname(checkpoint) or "."
        if not os.path.isdir(folder):
            raise ValueError(f"checkpoint: folder {folder!r} does not exist (nothing was trained)")
        total = steps + (resume.steps if isinstance(resume, TrainResult) else 0)
        for name, value in (("d", task.d), ("n", task.n), ("loops", loops), ("steps", total), ("batch", batch)):
            if value > CHECKPOINT_LIMITS[name]:
                raise ValueError(f"checkpoint: {name} = {value} exceeds the checkpoint format's limit "
                                 f"{CHECKPOINT_LIMITS[name]} (nothing was trained)")
        try:
            _check_writable_folder(checkpoint)
        except OSError as exc:
            raise ValueError(f"checkpoint: cannot write in folder {folder!r} ({exc.strerror or exc}); "
                             f"nothing was trained") from None
    d = task.d
    rng = np.random.default_rng(seed)
    if resume is not None:
        if not isinstance(resume, TrainResult):
            raise TypeError(f"resume: expected a TrainResult, got {type(resume).__name__}")
        if (resume.model, resume.loops, resume.optimizer) != (model, loops, optimizer) or not _same_task(resume.task, task):
            raise ValueError("resume: model, loops, task and optimizer must match the run being resumed")
        if batch != resume.batch:
            raise ValueError(f"batch: the resumed run used batch = {resume.batch}, got {batch}")
        if sampling != resume.sampling:
            raise ValueError(f"sampling: the resumed run used sampling = {resume.sampling!r}, got {sampling!r}")
        if not all(key in resume.state for key in ("last", "m", "v", "t", "rng")) or resume.state["rng"] is None:
            raise ValueError("resume: this TrainResult carries no optimizer state to resume from")
        seed = resume.seed
        params = {k: v.copy() for k, v in resume.state["last"].items()}
        rng.bit_generator.state = resume.state["rng"]
        mom = {k: v.copy() for k, v in resume.state["m"].items()}
        vel = {k: v.copy() for k, v in resume.state["v"].items()}
        t0 = int(resume.state["t"])
        history = list(resume.history)
    else:
        params = init_params(model, d, loops, rng, init_scale) if init is None else check_params(init, model, d, loops)
        mom = {k: np.zeros_like(v) for k, v in params.items()}
        vel = {k: np.zeros_like(v) for k, v in params.items()}
        t0 = 0
        history = []
    # Nothing is created under the checkpoint name before the end: a run killed meanwhile
    # leaves no empty or partial file there (the name is checked above, and a name taken during
    # training is handled by _save_finished).
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        result = _run(task, model, loops, steps, batch, optimizer, lr, lr_final, seed, average, clip, progress,
                      params, mom, vel, t0, history, rng, sampling)
    return result if checkpoint is None else _save_finished(result, checkpoint)


def _save_finished(result, path):
    """Save a finished run without ever losing it: a failed write (a full disk) or a name taken
    during training is reported (warning, and the result's checkpoint_error), never raised."""
    try:
        written = _store(result, path, overwrite=False, sibling=True)
    except Exception as exc:  # noqa: BLE001 - whatever the write raises, the trained result is kept
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
        message = f"checkpoint: could not write {path!r} ({reason}); the trained result is returned unsaved"
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        return replace(result, checkpoint=None, checkpoint_error=message)
    if written != path:
        message = f"checkpoint: {path!r} was created by someone else during training; saved as {written!r} instead"
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        return replace(result, checkpoint=written, checkpoint_error=message)
    return replace(result, checkpoint=written)


def _run(task, model, loops, steps, batch, optimizer, lr, lr_final, seed, average, clip, progress,
         params, mom, vel, t0, history, rng, sampling):
    """The optimisation loop of train (arguments validated there)."""
    draw = _statistics_sampler(task) if sampling == "statistics" else None
    b1, b2, eps = 0.9, 0.999, 1e-8
    tail_from = steps - int(round(average * steps))
    tail = {k: np.zeros_like(v) for k, v in params.items()}
    with _progress_bar(steps, progress, f"train {model} L={loops}") as bar:
        for i in range(steps):
            if draw is None:
                X, y, x_q, y_q, _ = task.sample(batch, rng)
                G, q = _prompt_statistics(make_prompt(X, y, x_q))
            else:
                G, q, y_q = draw(batch, rng)
            with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected just below
                loss, grads = _statistics_loss_grad(params, model, G, q, y_q, loops)
            if not (math.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())):
                raise FloatingPointError(f"lr: training diverged at step {t0 + i} (loss {loss}); lower lr")
            history.append(loss)
            if clip is not None:
                norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
                if norm > clip:
                    grads = {k: g * (clip / norm) for k, g in grads.items()}
            step_lr = _lr_at(i, steps, lr, lr_final)
            t = t0 + i + 1
            for k, g in grads.items():
                if optimizer == "sgd":
                    params[k] -= step_lr * g
                    continue
                mom[k] = b1 * mom[k] + (1 - b1) * g
                vel[k] = b2 * vel[k] + (1 - b2) * g * g
                mhat = mom[k] / (1 - b1**t)
                vhat = vel[k] / (1 - b2**t)
                params[k] -= step_lr * mhat / (np.sqrt(vhat) + eps)
            if i >= tail_from:
                for k in tail:
                    tail[k] += params[k]
            bar.update(1)
            if i % 50 == 0:
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
    state = {"m": mom, "v": vel, "t": t0 + steps, "rng": rng.bit_generator.state, "last": params}
    final = {k: tail[k] / (steps - tail_from) for k in tail} if tail_from < steps else params
    return TrainResult(final, model, loops, task, np.asarray(history), t0 + steps, batch, optimizer,
                       lr, lr_final, seed, state, sampling=sampling)


def _same_task(a, b):
    """Equal as numbers (a task read back from a checkpoint holds floats, not exact entries)."""
    return (a.d, a.n, float(a.noise)) == (b.d, b.n, float(b.noise)) and all(
        np.array_equal(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        for x, y in ((a.sigma_x, b.sigma_x), (a.sigma_w, b.sigma_w)))


def _progress_bar(total, progress, desc):
    from tqdm.auto import tqdm

    disable = None if progress is None else not progress
    return tqdm(total=total, desc=desc, disable=disable, leave=False, mininterval=0.5)


def _checkpoint_path(path, name="path"):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a file name, got {type(path).__name__}")
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"{name}: expected a file name as text, got {type(path).__name__}")
    if path == "" or path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)):
        raise ValueError(f"{name}: expected a file name, got {path!r}")
    return path if path.endswith(".npz") else path + ".npz"


def task_record(task):
    """The task as plain JSON-able numbers (d, n, sigma_x, sigma_w, noise), as checkpoints store it."""
    return {"d": task.d, "n": task.n, "sigma_x": np.asarray(task.sigma_x, dtype=float).tolist(),
            "sigma_w": np.asarray(task.sigma_w, dtype=float).tolist(), "noise": float(task.noise)}


# ---------------------------------------------------------------------------------------------
# Checkpoint files.
#
# Format "looptheory-checkpoint-2": a .npz (zip of .npy members, stored or deflated) holding
# "meta" (a 0-d unicode array of JSON: format, model, loops, task, steps, batch, optimizer, lr,
# lr_final, seed, t, rng, sampling, provenance), "history" (float64, shape (steps,)), "param_K"
# for every parameter K of the model, and the optimizer state "m_K", "v_K", "last_K", each slot
# complete or absent. provenance is null or a flat JSON object of text and numbers (what made
# the file: command, seed, version, date). Format 1 is format 2 without sampling ("prompts")
# and provenance (null), and is still read. The reader accepts exactly this and nothing else,
# so that a damaged or hostile file fails with a ValueError instead of allocating what it
# claims or resuming from a state it never had.

CHECKPOINT_FORMAT = "looptheory-checkpoint-2"
_OLD_FORMATS = ("looptheory-checkpoint-1",)

# The ranges a checkpoint's settings must lie in: far beyond any run of this toolkit, small enough
# that what they imply (array sizes, the work of a resumed run) is not absurd. train() checks them
# before training when asked for a checkpoint, so every run it starts can be saved.
CHECKPOINT_LIMITS = {"d": 1000, "n": 10**9, "loops": 10_000, "steps": 10**8, "batch": 10**8}
_MAX_ARRAY_BYTES = 2**31  # all arrays of one checkpoint together
_MAX_META_BYTES = 2**28  # the JSON record, stored as UTF-32 (sigma_x, sigma_w at d = 1000: ~200 MB)
# A member may expand at most _MAX_RATIO-fold (numpy writes them uncompressed; deflated floats
# gain ~1.1x): a zip bomb (1 GB of zeros deflate to 1 MB) is refused from the zip directory alone.
_MAX_RATIO, _RATIO_SLACK = 20, 2**20
_SLOTS = ("param", "m", "v", "last")


class _Damaged(Exception):
    """A checkpoint problem; load_checkpoint turns it into ValueError naming the path."""


def _param_shapes(model, d, loops):
    m = d + 1
    return {
        "full": {"P": (m, m), "Q": (m, m)},
        "sparse": {"A": (d, d), "u": (d,)},
        "multilayer": {"P": (loops, m, m), "Q": (loops, m, m)},
        "multilayer_sparse": {"A": (loops, d, d), "u": (loops, d)},
    }[model]


def _int_in(meta, key, low, high):
    v = meta.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Damaged(f"{key}: expected an integer, got {v!r}")
    if not low <= v <= high:
        raise _Damaged(f"{key}: {v} is outside {low}..{high}")
    return v


def _rng_problem(state):
    """The problem with a random generator state, or None if a PCG64 generator takes it and gives
    it back unchanged (a state that does not round-trip would resume a stream no run ever had)."""
    if state is None:
        return None
    if not isinstance(state, dict):
        return f"rng: expected a generator state record, got {type(state).__name__}"
    gen = np.random.Generator(np.random.PCG64(0))
    try:
        gen.bit_generator.state = state
        back = gen.bit_generator.state
    except Exception as exc:  # noqa: BLE001 - numpy raises ValueError, TypeError, KeyError, OverflowError
        return f"rng: not a PCG64 generator state ({type(exc).__name__}: {exc})"
    if back != state:
        return "rng: the generator state does not round-trip through PCG64"
    return None


def _matrix(name, value, d):
    ok = isinstance(value, list) and len(value) == d and all(
        isinstance(row, list) and len(row) == d
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in row)
        for row in value)
    if not ok:
        raise _Damaged(f"task.{name}: expected a {d} x {d} list of finite numbers")
    return value


_META_KEYS_1 = {"format", "model", "loops", "task", "steps", "batch", "optimizer", "lr", "lr_final", "seed", "t", "rng"}
_META_KEYS = _META_KEYS_1 | {"sampling", "provenance"}
_MAX_PROVENANCE = 64  # entries


def _check_provenance(value):
    """None, or a flat dict of at most _MAX_PROVENANCE text keys with text, integer, finite float
    or boolean values; _Damaged (or, through check_provenance, ValueError) otherwise."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Damaged(f"provenance: expected a JSON object or null, got {type(value).__name__}")
    if len(value) > _MAX_PROVENANCE:
        raise _Damaged(f"provenance: {len(value)} entries, more than {_MAX_PROVENANCE}")
    for key, v in value.items():
        ok = isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v))
        if not isinstance(key, str) or not ok:
            raise _Damaged(f"provenance[{key!r}]: expected text, an integer, a finite float or a boolean, got {v!r}")
    return value


def _check_meta(meta):
    """The expected array members {name: shape} of a checkpoint whose meta record is `meta`, and
    its task; _Damaged naming the first problem. No array is allocated here."""
    if not isinstance(meta, dict):
        raise _Damaged("the meta record is not a JSON object")
    if meta.get("format") not in (CHECKPOINT_FORMAT, *_OLD_FORMATS):
        raise _Damaged(f"unknown format {meta.get('format')!r} (expected {CHECKPOINT_FORMAT!r})")
    keys = _META_KEYS if meta["format"] == CHECKPOINT_FORMAT else _META_KEYS_1
    if set(meta) != keys:
        missing, extra = sorted(keys - set(meta)), sorted(set(meta) - keys)
        raise _Damaged(f"meta record: missing keys {missing}" if missing else f"meta record: unexpected keys {extra}")
    if meta.get("sampling", "prompts") not in SAMPLINGS:
        raise _Damaged(f"sampling: expected one of {', '.join(SAMPLINGS)}, got {meta['sampling']!r}")
    _check_provenance(meta.get("provenance"))
    if meta["model"] not in MODELS:
        raise _Damaged(f"model: expected one of {', '.join(MODELS)}, got {meta['model']!r}")
    if meta["optimizer"] not in OPTIMIZERS:
        raise _Damaged(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {meta['optimizer']!r}")
    lim = CHECKPOINT_LIMITS
    loops = _int_in(meta, "loops", 1, lim["loops"])
    steps = _int_in(meta, "steps", 0, lim["steps"])
    _int_in(meta, "batch", 1, lim["batch"])
    _int_in(meta, "seed", 0, 2**128)
    if _int_in(meta, "t", 0, lim["steps"]) != steps:
        raise _Damaged(f"t: the optimizer step count {meta['t']} differs from steps = {steps}")
    for key in ("lr", "lr_final"):
        v = meta[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise _Damaged(f"{key}: expected a finite number > 0, got {v!r}")
    problem = _rng_problem(meta["rng"])
    if problem:
        raise _Damaged(problem)
    tr = meta["task"]
    if not isinstance(tr, dict) or set(tr) != {"d", "n", "sigma_x", "sigma_w", "noise"}:
        raise _Damaged("task: expected a record with d, n, sigma_x, sigma_w, noise")
    d = _int_in(tr, "d", 1, lim["d"])
    n = _int_in(tr, "n", 1, lim["n"])
    noise = tr["noise"]
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not (math.isfinite(noise) and noise >= 0):
        raise _Damaged(f"task.noise: expected a finite number >= 0, got {noise!r}")
    shapes = {"history": (steps,)}
    for slot in _SLOTS:
        shapes.update({f"{slot}_{k}": s for k, s in _param_shapes(meta["model"], d, loops).items()})
    total = 8 * sum(math.prod(s) for s in shapes.values())
    if total > _MAX_ARRAY_BYTES:
        raise _Damaged(f"its settings (d = {d}, loops = {loops}, steps = {steps}) imply {total} bytes of arrays, "
                       f"more than the format's limit {_MAX_ARRAY_BYTES}")
    try:
        task = Task(d, n, sigma_x=_matrix("sigma_x", tr["sigma_x"], d), sigma_w=_matrix("sigma_w", tr["sigma_w"], d),
                    noise=noise)
    except (ValueError, TypeError) as exc:
        raise _Damaged(f"task: {exc}") from None
    return shapes, task


def _check_members(present, shapes):
    """Every required member there, each optimizer slot complete or absent, nothing else."""
    keys = [k for k in shapes if k.startswith("param_")] + ["history"]
    missing = [k for k in keys if k not in present]
    for slot in _SLOTS[1:]:
        have = [k for k in shapes if k.startswith(slot + "_") and k in present]
        if have:
            missing += [k for k in shapes if k.startswith(slot + "_") and k not in present]
    unexpected = sorted(set(present) - set(shapes) - {"meta"})
    if missing or unexpected:
        parts = ([f"missing members {sorted(missing)}"] if missing else []) + (
            [f"unexpected members {unexpected}"] if unexpected else [])
        raise _Damaged(", ".join(parts))


def _directory(zf):
    """The members {key: ZipInfo} of an open zip, checked from its directory alone (nothing is
    decompressed): .npy names only, no duplicates, no encryption or exotic compression, and no
    member that would expand absurdly (zip bomb)."""
    infos = zf.infolist()
    if len(infos) > 64:  # a checkpoint has at most 10 (meta, history, four slots of two arrays)
        raise _Damaged(f"{len(infos)} members, far more than a checkpoint has")
    members = {}
    for info in infos:
        name = info.filename
        if not name.endswith(".npy") or name[:-4] in members:
            raise _Damaged(f"unexpected or repeated member {name!r}")
        if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _Damaged(f"member {name!r} is encrypted or uses an unsupported compression")
        if info.file_size > _MAX_RATIO * info.compress_size + _RATIO_SLACK:
            raise _Damaged(f"member {name!r} would expand from {info.compress_size} to {info.file_size} bytes "
                           f"(more than {_MAX_RATIO}-fold: a zip bomb?)")
        members[name[:-4]] = info
    return members


def _read_header(zf, info):
    """(shape, fortran_order, dtype, header length) of a .npy member, reading only its header."""
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise _Damaged(f"member {info.filename!r} has .npy version {version}")
        return shape, fortran, dtype, fh.tell()


def _read_member(zf, info, shape, kind):
    """The array of a member whose header says `shape` and a dtype of `kind` ("f": float64,
    "U": text), checked before reading and with the member's CRC checked at its end."""
    got, _, dtype, head = _read_header(zf, info)
    if got != shape or dtype.kind != kind or (kind == "f" and dtype.itemsize != 8):
        raise _Damaged(f"member {info.filename!r} holds {dtype} {got}, expected "
                       f"{'float64' if kind == 'f' else 'text'} {shape}")
    if info.file_size != head + math.prod(shape) * dtype.itemsize:
        raise _Damaged(f"member {info.filename!r} is {info.file_size} bytes, its header implies "
                       f"{head + math.prod(shape) * dtype.itemsize}")
    with zf.open(info) as fh:
        arr = np.lib.format.read_array(fh, allow_pickle=False)
        if fh.read(1):  # also reads to the end, where zipfile checks the CRC
            raise _Damaged(f"member {info.filename!r} has bytes after its array")
    if kind == "f" and not np.all(np.isfinite(arr)):
        raise _Damaged(f"member {info.filename!r} has entries that are not finite")
    return arr


def _read_checkpoint(path):
    with zipfile.ZipFile(path) as zf:
        members = _directory(zf)
        if "meta" not in members:
            raise _Damaged("is not a looptheory checkpoint (no meta record)")
        info = members["meta"]
        if info.file_size > _MAX_META_BYTES:
            raise _Damaged(f"meta record of {info.file_size} bytes, more than the format's limit {_MAX_META_BYTES}")
        shape, _, dtype, _ = _read_header(zf, info)
        if shape != () or dtype.kind != "U":
            raise _Damaged("is not a looptheory checkpoint (the meta record is not text)")
        try:
            meta = json.loads(str(_read_member(zf, info, (), "U")))
        except json.JSONDecodeError as exc:
            raise _Damaged(f"the meta record is not JSON ({exc})") from None
        shapes, task = _check_meta(meta)
        _check_members(members, shapes)
        # every header before any array: a wrong size is found before anything is allocated
        for key in members:
            if key != "meta":
                got, _, dtype, head = _read_header(zf, members[key])
                if got != shapes[key] or dtype.kind != "f" or dtype.itemsize != 8:
                    raise _Damaged(f"member {key!r} holds {dtype} {got}, expected float64 {shapes[key]}")
        arrays = {key: _read_member(zf, members[key], shapes[key], "f") for key in members if key != "meta"}
    return meta, task, arrays


def load_checkpoint(path) -> TrainResult:
    """Read a checkpoint written by save_checkpoint (or train(checkpoint=...)).

    Anything but such a file gives ValueError naming the path and the problem, found before any
    large allocation: a truncated file or a flipped byte (zip CRC), missing or unexpected
    members, arrays of the wrong shape or type, settings outside CHECKPOINT_LIMITS (such as
    loops = 10**9), a generator state that does not round-trip, a member that would expand more
    than 20-fold (zip bomb). Arrays are allocated only at the sizes the checked settings imply.
    """
    path = _checkpoint_path(path)
    if not os.path.exists(path):
        raise ValueError(f"path: no checkpoint at {path!r}")
    if not os.path.isfile(path):
        raise ValueError(f"path: {path!r} is not a file")
    try:
        meta, task, arrays = _read_checkpoint(path)
    except _Damaged as exc:
        text = str(exc)
        raise ValueError(f"path: {path!r} " + (text if text.startswith("is ") else f"is not a usable looptheory "
                                               f"checkpoint: {text}")) from None
    except Exception as exc:  # noqa: BLE001 - whatever a damaged zip makes zipfile, zlib or numpy raise
        raise ValueError(f"path: {path!r} is damaged or not a looptheory checkpoint "
                         f"({type(exc).__name__}: {exc})") from None
    slot = {s: {k[len(s) + 1:]: v for k, v in arrays.items() if k.startswith(s + "_")} for s in _SLOTS}
    # a setting whose training step could not run here (n = 10**9) is refused now, not on resume
    _check_meta_sizes(meta, slot["param"], path)
    state = {"m": slot["m"], "v": slot["v"], "t": meta["t"], "rng": meta["rng"], "last": slot["last"] or slot["param"]}
    return TrainResult(slot["param"], meta["model"], meta["loops"], task, arrays["history"], meta["steps"],
                       meta["batch"], meta["optimizer"], meta["lr"], meta["lr_final"], meta["seed"], state,
                       sampling=meta.get("sampling", "prompts"), provenance=meta.get("provenance"))


def _checkpoint_record(result):
    """(meta, arrays) of a TrainResult as a checkpoint stores them; ValueError naming result if
    load_checkpoint would refuse them, so that every file written can be read back."""
    if not isinstance(result, TrainResult):
        raise TypeError(f"result: expected a TrainResult, got {type(result).__name__}")
    meta = {
        "format": CHECKPOINT_FORMAT, "model": result.model, "loops": result.loops,
        "task": task_record(result.task), "steps": result.steps, "batch": result.batch,
        "optimizer": result.optimizer, "lr": result.lr, "lr_final": result.lr_final, "seed": result.seed,
        "t": int(result.state.get("t", result.steps)), "rng": result.state.get("rng"),
        "sampling": result.sampling, "provenance": result.provenance,
    }
    arrays = {f"param_{k}": v for k, v in result.params.items()}
    for slot in ("m", "v", "last"):
        arrays.update({f"{slot}_{k}": v for k, v in result.state.get(slot, {}).items()})
    arrays["history"] = result.history
    try:
        arrays = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}
        meta = json.loads(json.dumps(meta))  # as the reader will see it (tuples become lists)
        shapes, _ = _check_meta(meta)
        _check_members(arrays, shapes)
        for k, v in arrays.items():
            if v.shape != shapes[k]:
                raise _Damaged(f"{k} has shape {v.shape}, expected {shapes[k]}")
            if not np.all(np.isfinite(v)):
                raise _Damaged(f"{k} has entries that are not finite")
    except (_Damaged, TypeError, ValueError) as exc:
        raise ValueError(f"result: cannot be stored as a checkpoint ({exc})") from None
    arrays["meta"] = np.array(json.dumps(meta))
    return meta, arrays


def _remove_quietly(name):
    try:
        os.remove(name)
    except FileNotFoundError:
        pass


def _fsync_folder(folder):
    """Make a new directory entry durable (POSIX); skipped where a folder cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_name(path):
    """A hidden name beside path, unique to this process and call: `.NAME.tmp-PID-RANDOM`."""
    folder, base = os.path.split(path)
    return os.path.join(folder, f".{base}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _check_writable_folder(path):
    """Create and remove a temporary file beside path: the folder must exist and take a new file
    (os.access alone is not enough: root passes it on a read-only mount). OSError otherwise."""
    probe = _temp_name(path)
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    os.remove(probe)


# File systems without hard links answer os.link with one of these.
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def _publish(tmp, path, overwrite):
    """Give the complete file tmp the name path at once; False (and nothing changed) if path is
    taken and overwrite is False. tmp stays for the caller to remove."""
    if overwrite:
        os.replace(tmp, path)
        return True
    try:
        os.link(tmp, path)  # fails if path exists, in one step: no other file can be replaced
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
    # Without hard links: reserve the name exclusively, then rename over the reservation. Only
    # here can a kill between the two steps leave an empty file under the name.
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        return False
    os.replace(tmp, path)
    return True


def _store(result, path, overwrite, sibling, compress=False):
    """Write result to path through a temporary file: written, flushed to disk, then renamed or
    linked into place, so path never holds a partial file. If path is taken (overwrite False):
    with sibling, the next free NAME-2.npz, NAME-3.npz, ...; without, None. Returns the name
    written; on any failure the temporary file is removed and the error raised. compress:
    deflate the members (a member the reader would take for a zip bomb is refused: ValueError
    naming compress)."""
    _, arrays = _checkpoint_record(result)
    tmp = _temp_name(path)
    try:
        with open(tmp, "xb") as fh:
            (np.savez_compressed if compress else np.savez)(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        if compress:
            with zipfile.ZipFile(tmp) as zf:
                try:
                    _directory(zf)
                except _Damaged as exc:
                    raise ValueError(f"compress: the reader would refuse the compressed file ({exc}); "
                                     f"store it with compress=False") from None
        stem = path[:-4]
        for k in range(1, 1000):
            target = path if k == 1 else f"{stem}-{k}.npz"
            if _publish(tmp, target, overwrite):
                _fsync_folder(os.path.dirname(path) or ".")
                return target
            if not sibling:
                return None
        raise FileExistsError(errno.EEXIST, f"{path!r} and its siblings up to {stem}-999.npz are all taken")
    finally:
        _remove_quietly(tmp)


def save_checkpoint(path, result: TrainResult, overwrite: bool = False, compress: bool = False) -> str:
    """Write a TrainResult to `path` (".npz" appended if missing) and return the file name.

    The file holds the weights, the loss history, the optimizer state, the settings, the
    sampling and result.provenance (None, or a flat dict of text and numbers saying what made the
    result: at most 64 entries; ValueError naming result otherwise). compress: deflate the arrays
    (for files that are shipped or archived; load_checkpoint reads both).

    The data go to a temporary file beside path (`.NAME.tmp-PID-RANDOM`), flushed to disk, and
    only then appear under path (a hard link, or os.replace with overwrite=True), so path never
    holds a partial file, even after SIGKILL or a full disk. An existing file is never replaced
    unless overwrite=True (ValueError naming path), also when it appears while writing. A
    TrainResult that load_checkpoint would refuse is refused here (ValueError naming result); a
    failed write raises OSError naming path, having changed nothing there.
    """
    if not isinstance(result, TrainResult):
        raise TypeError(f"result: expected a TrainResult, got {type(result).__name__}")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite: expected True or False, got {overwrite!r}")
    compress = V.boolean("compress", compress)
    path = _checkpoint_path(path)
    if os.path.lexists(path) and not overwrite:
        raise ValueError(f"path: {path!r} exists; pass overwrite=True to replace it")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise ValueError(f"path: folder {folder!r} does not exist")
    try:
        written = _store(result, path, overwrite, sibling=False, compress=compress)
    except OSError as exc:
        message = f"path: could not write {path!r} ({exc.strerror or exc}); nothing there was changed"
        raise (OSError(exc.errno, message) if exc.errno else OSError(message)) from exc
    if written is None:
        raise ValueError(f"path: {path!r} appeared while writing and was left alone; pass overwrite=True to replace it")
    return written


def _check_meta_sizes(meta, params, path):
    """The sizes a checkpoint's meta record claims (model, loops, d, n, steps, batch) checked
    before they are used: integers of the right kind, consistent with the stored weights, and a
    training step of that size within the memory cap (a damaged or hand-edited file saying
    loops = 10^9 is refused here, not by a MemoryError later). ValueError naming path."""
    def bad(what):
        return ValueError(f"path: {path!r} is not a usable looptheory checkpoint ({what})")

    def count(key, value, minimum=1):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise bad(f"its meta record has {key} = {value!r}, expected an integer >= {minimum}")
        return value

    model = meta.get("model")
    if model not in MODELS:
        raise bad(f"its meta record has model = {model!r}")
    loops = count("loops", meta.get("loops"))
    count("steps", meta.get("steps"))
    batch = count("batch", meta.get("batch"))
    count("t", meta.get("t"), minimum=0)
    tr = meta.get("task")
    if not isinstance(tr, dict):
        raise bad("its meta record has no task")
    d = count("task d", tr.get("d"))
    n = tr.get("n")
    if not (V.is_infinite(n) or isinstance(n, int) and not isinstance(n, bool)):
        raise bad(f"its meta record has task n = {n!r}")
    n = count("task n", n) if not V.is_infinite(n) else n
    try:
        check_params(params, model, d, loops)
        _check_param_memory(model, d, loops)
        if not V.is_infinite(n):
            _check_step_memory(model, "auto", batch, d, n, loops, True, "batch")
    except (TypeError, ValueError) as exc:
        raise bad(str(exc)) from None


def fix_scale(P, Q):
    """The scale freedom (P, Q) -> (cP, Q/c) fixed by P[d, d] = 1 (c = 1 / P[d, d]).

    Returns (P', Q', parts): parts holds A = Q'[:d, :d], u = P'[d, :d], and the Frobenius norms of
    the blocks the sparse form sets to 0: P'[:d, :] ("P_top"), Q'[d, :] and Q'[:, d] ("Q_edge").
    """
    P = V.as_real_array("P", P, 2, allow_exact=False).astype(float)
    Q = V.as_real_array("Q", Q, 2, allow_exact=False).astype(float)
    m = P.shape[0]
    if P.shape != (m, m) or m < 2:
        raise ValueError(f"P: expected a square (d+1) x (d+1) matrix with d >= 1, got shape {P.shape}")
    if Q.shape != (m, m):
        raise ValueError(f"Q: expected shape {(m, m)} to match P, got {Q.shape}")
    d = m - 1
    if P[d, d] == 0:
        raise ValueError("P: P[d, d] = 0, so the scale cannot be fixed by P[d, d] = 1")
    c = 1.0 / P[d, d]
    P2, Q2 = c * P, Q / c
    edge = np.concatenate([Q2[d, :], Q2[:d, d]])
    parts = {
        "A": Q2[:d, :d].copy(), "u": P2[d, :d].copy(),
        "P_top": float(np.linalg.norm(P2[:d, :])), "Q_edge": float(np.linalg.norm(edge)),
        "c": float(c),
    }
    return P2, Q2, parts
