"""Hypothesis strategies for looptheory's inputs, in the style of hypothesis.extra.numpy.

Each function returns a hypothesis `SearchStrategy`; draw from it inside a `@given` test, or pass
it (in a `st.fixed_dictionaries`) as the region of a `looptheory.Claim`:

  spd_matrices(d, max_condition=20.0, scale=1.0)   symmetric positive definite d x d covariances
  matrices(d, scale=1.0, symmetric=False)           real d x d matrices, non-symmetric by default
  tasks(d=..., n=..., prior=..., noise=...)         `looptheory.Task`s
  preconditioners(task, max_norm=1.0)               matrices A for that task

The bounds are chosen so that every drawn example is a valid input to every public function of
looptheory (docs/conventions.md, "Names"): covariances are well conditioned (condition number at
most `max_condition`), entries are bounded, n is finite (Monte Carlo needs it) and d small by
default, so that exact rationals and Monte Carlo stay affordable.

Matrices are built from a drawn integer seed with NumPy's generator (Gaussian entries, random
eigenbases): the distribution is the natural one for a random covariance or weight matrix, and
the same seed gives the same matrix on every machine. A failing example shrinks towards seed 0
and towards the simplest scalar parameters (d = 1, small n, noise 0).

hypothesis is needed by this module only: `import looptheory` does not import it.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from . import _validate as V
from .task import Task

#: The priors `tasks` draws (docs/conventions.md, "Data").
PRIORS = ("gatmiry", "isotropic", "general")

#: Gaussian entries of `matrices` are clipped at this many times `scale` (a draw beyond it has
#: probability about 1e-15 per entry), so every entry is bounded.
CLIP = 8.0


def _finite_positive(name, value) -> float:
    return V.positive_float(name, value)  # real_scalar refuses inf and nan


def _dimension(d) -> int:
    return V.positive_int("d", d)


def _seeds():
    return st.integers(0, 2**32 - 1)


def _spd_from_seed(seed: int, d: int, max_condition: float, scale: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    ev = np.exp(rng.uniform(0, np.log(max_condition), d)) / np.sqrt(max_condition)
    m = (q * (scale * ev)) @ q.T
    return (m + m.T) / 2


def spd_matrices(d: int, max_condition: float = 20.0, scale: float = 1.0):
    """Symmetric positive definite d x d float matrices: scale x Q diag(e) Q^T with Q a random
    orthogonal matrix (QR of a Gaussian matrix) and eigenvalues e log-uniform in
    [max_condition^(-1/2), max_condition^(1/2)], so the condition number is at most max_condition.
    d: an integer >= 1; max_condition: a finite number >= 1; scale: a finite number > 0."""
    d = _dimension(d)
    max_condition = _finite_positive("max_condition", max_condition)
    if max_condition < 1:
        raise ValueError(f"max_condition: expected a number >= 1, got {max_condition!r}")
    scale = _finite_positive("scale", scale)
    return _seeds().map(lambda seed: _spd_from_seed(seed, d, max_condition, scale))


def _matrix_from_seed(seed: int, d: int, scale: float, symmetric: bool) -> np.ndarray:
    m = np.random.default_rng(seed).standard_normal((d, d))
    if symmetric:
        m = (m + m.T) / math.sqrt(2)
    return np.clip(m, -CLIP, CLIP) * scale


def matrices(d: int, scale: float = 1.0, symmetric: bool = False):
    """Real d x d float matrices with independent N(0, scale^2) entries clipped at CLIP x scale
    (non-symmetric by default; symmetric=True gives (G + G^T)/sqrt(2), entries of the same
    variance off the diagonal). d: an integer >= 1; scale: a finite number > 0."""
    d = _dimension(d)
    scale = _finite_positive("scale", scale)
    symmetric = V.boolean("symmetric", symmetric)
    return _seeds().map(lambda seed: _matrix_from_seed(seed, d, scale, symmetric))


def _as_strategy(name, value, check):
    """value as a strategy: a strategy is kept (its draws are checked when drawn), anything
    else is checked now and becomes st.just(value)."""
    if isinstance(value, st.SearchStrategy):
        return value.map(lambda v: check(name, v))
    return st.just(check(name, value))


def tasks(d=st.integers(1, 4), n=st.integers(1, 50), prior: str = "gatmiry", noise=0.0,
          max_condition: float = 20.0):
    """`looptheory.Task`s. d, n and noise are values or strategies of values (d an integer >= 1,
    n an integer >= 1 or math.inf, noise a finite number >= 0); prior:

      "gatmiry"    Σx from spd_matrices(d, max_condition), Σw = Σx^{-1} (Task.gatmiry's prior);
      "isotropic"  Σx = Σw = I;
      "general"    Σx and Σw drawn independently from spd_matrices(d, max_condition).

    The defaults (d in 1..4, n in 1..50, no noise) keep exact rationals and Monte Carlo cheap; a
    task with n = math.inf is valid everywhere except in sampling (Task.sample, Monte Carlo)."""
    if prior not in PRIORS:
        raise ValueError(f"prior: expected one of {', '.join(map(repr, PRIORS))}, got {prior!r}")
    max_condition = _finite_positive("max_condition", max_condition)
    ds = _as_strategy("d", d, V.positive_int)
    ns = _as_strategy("n", n, V.context_length)
    noises = _as_strategy("noise", noise, V.nonnegative_float)

    @st.composite
    def draw_task(draw):
        dd = draw(ds)
        nn = draw(ns)
        sigma2 = draw(noises)
        if prior == "isotropic":
            return Task(dd, nn, noise=sigma2)
        sx = draw(spd_matrices(dd, max_condition))
        if prior == "gatmiry":
            sw = np.linalg.inv(sx)
            return Task(dd, nn, sx, (sw + sw.T) / 2, sigma2)
        return Task(dd, nn, sx, draw(spd_matrices(dd, max_condition)), sigma2)

    return draw_task()


def _preconditioner_from_seed(seed, task, t, size):
    d = task.d
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((d, d))
    norm = np.linalg.norm(G, 2)
    M = size * (t * np.eye(d) + (1 - t) * (G / norm if norm > 0 else np.zeros((d, d))))
    ev, q = np.linalg.eigh(np.asarray(task.sigma_x, dtype=float))
    rx_inv = (q / np.sqrt(ev)) @ q.T
    return rx_inv @ M @ rx_inv


def preconditioners(task: Task, max_norm: float = 1.0):
    """Matrices A for `task`: A = Σx^{-1/2} M Σx^{-1/2} with M = s (t I + (1 - t) G / ||G||_2),
    G a Gaussian matrix (non-symmetric), t in [0, 1] and s in [0, max_norm], so the whitened
    preconditioner Rx A Rx = M has spectral norm at most max_norm (docs/conventions.md, "The
    population loss in closed form"). t = 1 gives the scalar family A = s Σx^{-1}. With the
    default max_norm = 1 the n = inf loss is at most tr(Σx Σw) 2^(2 loops)."""
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
    max_norm = _finite_positive("max_norm", max_norm)
    return st.builds(lambda seed, t, s: _preconditioner_from_seed(seed, task, t, s),
                     _seeds(), st.floats(0.0, 1.0), st.floats(0.0, max_norm))
