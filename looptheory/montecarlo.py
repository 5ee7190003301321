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
from .model import looped_forward, make_prompt, prediction, sparse_weights
from .task import Task

# Prompts per chunk are chosen so that a chunk's Z holds about this many float64 entries;
# the chunking is fixed by the task's shape, not by the machine, so results are reproducible.
_CHUNK_ENTRIES = 4_000_000


def monte_carlo_loss(task: Task, A, loops: int, u=None, samples: int = 100_000, seed: int = 0):
    """Estimate f(A, u) = E (yhat - y_q)^2 by simulation.

    Returns (mean, stderr), stderr = sample standard deviation / sqrt(samples). The same seed
    gives the same numbers. n = math.inf cannot be sampled (ValueError).
    """
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
    if math.isinf(task.n):
        raise ValueError("task.n: Monte Carlo needs a finite n (n = inf cannot be sampled)")
    A = V.square_matrix("A", A, task.d, allow_exact=False)
    u = None if u is None else V.vector("u", u, task.d, allow_exact=False)
    loops = V.positive_int("loops", loops)
    samples = V.positive_int("samples", samples, minimum=2)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    P, Q = sparse_weights(A, u)
    chunk = max(1, _CHUNK_ENTRIES // ((task.d + 1) * (task.n + 1)))
    mean = 0.0
    m2 = 0.0  # sum of squared deviations, combined chunk by chunk (Chan et al.) for accuracy
    done = 0
    while done < samples:
        b = min(chunk, samples - done)
        X, y, x_q, y_q, _ = task.sample(b, rng)
        err = prediction(looped_forward(make_prompt(X, y, x_q), P, Q, loops)) - y_q
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
