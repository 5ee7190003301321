"""Monte Carlo estimate of the population loss by running the real looped forward pass.

No shortcut formula is used: prompts are sampled from the task, pushed through
`looped_forward` with the sparse weights, and the squared error of the prediction against the
noiseless query target is averaged. This is the independent, sampling-based route against
which the exact engine is checked.
"""

from __future__ import annotations

import math

import numpy as np

from . import _validate as V
from .model import looped_forward, make_prompt, multilayer_forward, prediction, sparse_weights
from .task import Task

# Prompts per chunk are chosen so that a chunk's Z holds about this many float64 entries;
# the chunking is fixed by the task's shape, not by the machine, so results are reproducible.
_CHUNK_ENTRIES = 4_000_000


def monte_carlo_loss(task: Task, A, loops: int, u=None, samples: int = 100_000, seed: int = 0):
    """Estimate f(A, u) = E (yhat - y_q)^2 by simulation.

    Returns (mean, stderr), stderr = sample standard deviation / sqrt(samples). The same seed
    (an integer >= 0) gives the same numbers. n = math.inf cannot be sampled (ValueError).

    Limits (docs/user-guide.md, "Limits and errors"): prompts are drawn in chunks of about 4M
    numbers, so memory stays near 6 x max(chunk, one prompt) x 8 bytes; a single prompt too big
    for the memory cap is refused (ValueError naming task, e.g. n = 10^9). A run that would draw
    more than the work cap of random numbers (samples x (d + 1) x (n + 1) > 10^11 by default,
    LOOPTHEORY_WORK_CAP) is refused up front (ValueError naming samples) instead of running
    for days.
    """
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
    if V.is_infinite(task.n):
        raise ValueError("task.n: Monte Carlo needs a finite n (n = inf cannot be sampled)")
    A = V.square_matrix("A", A, task.d, allow_exact=False)
    u = None if u is None else V.vector("u", u, task.d, allow_exact=False)
    loops = V.positive_int("loops", loops)
    samples = V.positive_int("samples", samples, minimum=2)
    seed = V.seed("seed", seed)
    P, Q = sparse_weights(A, u)
    return _sample_mean(task, lambda Z: looped_forward(Z, P, Q, loops), samples, seed)


def monte_carlo_multilayer_loss(task: Task, As, us=None, samples: int = 100_000, seed: int = 0):
    """Estimate the untied multi-layer loss E (yhat - y_q)^2 by simulation: prompts through
    `multilayer_forward` with layer l's sparse weights (A_l, u_l). As: L matrices (layer 1
    first), us: None or L vectors. Returns (mean, stderr); limits as `monte_carlo_loss`."""
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
    if V.is_infinite(task.n):
        raise ValueError("task.n: Monte Carlo needs a finite n (n = inf cannot be sampled)")
    As = V.as_real_array("As", As, 3, allow_exact=False)
    if As.shape[1:] != (task.d, task.d) or len(As) < 1:
        raise ValueError(f"As: expected shape (L, {task.d}, {task.d}), got {As.shape}")
    if us is not None:
        us = V.as_real_array("us", us, 2, allow_exact=False)
        if us.shape != (len(As), task.d):
            raise ValueError(f"us: expected shape ({len(As)}, {task.d}), one vector per layer, got {us.shape}")
    samples = V.positive_int("samples", samples, minimum=2)
    seed = V.seed("seed", seed)
    weights = [sparse_weights(A, None if us is None else us[l]) for l, A in enumerate(As)]
    Ps, Qs = [p for p, _ in weights], [q for _, q in weights]
    return _sample_mean(task, lambda Z: multilayer_forward(Z, Ps, Qs), samples, seed)


def _sample_mean(task, forward, samples, seed):
    """(mean, stderr) of (prediction(forward(Z)) - y_q)^2 over `samples` sampled prompts."""
    rng = np.random.default_rng(seed)
    per_prompt = (task.d + 1) * (task.n + 1)
    chunk = max(1, _CHUNK_ENTRIES // per_prompt)
    V.check_memory("task", f"monte_carlo_loss at d = {task.d}, n = {V.number_text(task.n)}",
                   6 * min(chunk, samples) * per_prompt * 8, "6 x prompts per chunk x (d + 1) x (n + 1) x 8 bytes")
    V.check_work("samples", f"monte_carlo_loss with samples = {V.number_text(samples)} at d = {task.d}, "
                 f"n = {V.number_text(task.n)}", samples * per_prompt, "samples x (d + 1) x (n + 1)")
    mean = 0.0
    m2 = 0.0  # sum of squared deviations, combined chunk by chunk (Chan et al.) for accuracy
    done = 0
    while done < samples:
        b = min(chunk, samples - done)
        X, y, x_q, y_q, _ = task.sample(b, rng)
        err = prediction(forward(make_prompt(X, y, x_q))) - y_q
        sq = err * err
        c_mean = float(np.mean(sq))
        c_m2 = float(np.sum((sq - c_mean) ** 2))
        delta = c_mean - mean
        tot = done + b
        mean += delta * b / tot
        m2 += c_m2 + delta * delta * done * b / tot
        done = tot
    var = m2 / (samples - 1)
    return mean, math.sqrt(var / samples)
