"""The in-context linear regression task (docs/conventions.md, "Data").

x_1, ..., x_n, x_q i.i.d. N(0, sigma_x); w* ~ N(0, sigma_w); y_i = <w*, x_i> + eps_i with
eps_i ~ N(0, noise); the query target y_q = <w*, x_q> is noiseless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _validate as V


@dataclass(frozen=True, eq=False)
class Task:
    """Specification of the prompt distribution.

    Parameters
    ----------
    d : int >= 1, dimension of the covariates.
    n : int >= 1 or math.inf, number of in-context examples.
    sigma_x : (d, d) symmetric positive definite, covariance of x (None: identity).
    sigma_w : (d, d) symmetric positive semi-definite, covariance of w* (None: identity).
        Gatmiry et al. take sigma_w = sigma_x^{-1}; see `Task.gatmiry`.
    noise : variance sigma^2 >= 0 of the label noise.

    Entries given as ints, fractions.Fraction or SymPy Rationals are kept exact (object
    arrays of Fractions) so that `population_loss(..., exact=True)` can return a rational.
    The arrays are read-only.

    Limits: the two d x d covariances are held in memory, so d is refused up front (ValueError
    naming d) when about 4 d^2 x 8 bytes (the matrices and their validation copies) exceed the
    memory cap (4 GiB by default, LOOPTHEORY_MEMORY_CAP; docs/user-guide.md, "Limits and
    errors"): d = 10^4 fits, d = 10^6 would need 29 TiB. n may be any integer, 10**400 included.
    """

    d: int
    n: int | float
    sigma_x: np.ndarray | None = None
    sigma_w: np.ndarray | None = None
    noise: float = 0.0

    def __post_init__(self):
        d = V.positive_int("d", self.d)
        V.check_memory("d", f"a Task at d = {d}", 4 * d * d * 8,
                       "sigma_x and sigma_w with their validation copies, 4 x d^2 x 8 bytes")
        n = V.context_length("n", self.n)
        sx = np.eye(d) if self.sigma_x is None else V.symmetric_matrix("sigma_x", self.sigma_x, d, definite=True)
        sw = np.eye(d) if self.sigma_w is None else V.symmetric_matrix("sigma_w", self.sigma_w, d, definite=False)
        noise = V.nonnegative_scalar("noise", self.noise)
        object.__setattr__(self, "d", d)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "sigma_x", V.freeze(sx))
        object.__setattr__(self, "sigma_w", V.freeze(sw))
        object.__setattr__(self, "noise", noise)

    @classmethod
    def gatmiry(cls, d, n, sigma_x=None) -> "Task":
        """The setting of Gatmiry et al.: sigma_w = sigma_x^{-1}, no label noise."""
        if sigma_x is None:
            return cls(d, n)
        sx = V.symmetric_matrix("sigma_x", sigma_x, V.positive_int("d", d), definite=True)
        if sx.dtype == object:
            import sympy

            sw = np.array(sympy.Matrix(sx.tolist()).inv().tolist(), dtype=object)
        else:
            sw = np.linalg.inv(sx)
            sw = (sw + sw.T) / 2
        return cls(d, n, sigma_x=sx, sigma_w=sw)

    def __repr__(self) -> str:
        def mat(m):
            if m.dtype != object and np.array_equal(m, np.eye(self.d)):
                return "I"
            return np.array2string(np.asarray(m), precision=4, separator=",").replace("\n", "")

        try:
            n = str(self.n)
        except ValueError:  # an integer with more than 4300 digits
            n = V.number_text(self.n)
        return f"Task(d={self.d}, n={n}, sigma_x={mat(self.sigma_x)}, sigma_w={mat(self.sigma_w)}, noise={self.noise})"

    def with_n(self, n) -> "Task":
        """The same task with another context length."""
        return Task(self.d, n, self.sigma_x, self.sigma_w, self.noise)

    def sample(self, batch, rng):
        """Draw `batch` prompts.

        Returns (X, y, x_q, y_q, w_star) with shapes (batch, d, n), (batch, n), (batch, d),
        (batch,), (batch, d); the columns of X are the examples x_i. rng: a numpy Generator or an
        integer seed >= 0. About 2 x batch x d x n x 8 bytes are needed; a batch above the memory
        cap is refused up front (ValueError naming batch, or n when one prompt is too big).
        """
        batch = V.positive_int("batch", batch)
        rng = V.rng_from("rng", rng)
        if V.is_infinite(self.n):
            raise ValueError("n: cannot sample prompts with n = inf; use a finite n")
        d, n = self.d, self.n
        per_prompt = 2 * (d + 1) * (n + 1) * 8
        V.check_memory("n" if per_prompt > V.memory_cap() else "batch",
                       f"sampling {V.number_text(batch)} prompts at d = {d}, n = {V.number_text(n)}",
                       batch * per_prompt, "2 x batch x (d + 1) x (n + 1) x 8 bytes")
        cx = np.linalg.cholesky(np.asarray(self.sigma_x, dtype=float))
        ev, evec = np.linalg.eigh(np.asarray(self.sigma_w, dtype=float))
        cw = evec * np.sqrt(np.clip(ev, 0.0, None))
        X = cx @ rng.standard_normal((batch, d, n))
        x_q = (cx @ rng.standard_normal((batch, d, 1)))[..., 0]
        w_star = (cw @ rng.standard_normal((batch, d, 1)))[..., 0]
        y = np.einsum("bd,bdn->bn", w_star, X)
        if self.noise > 0:
            y = y + math.sqrt(float(self.noise)) * rng.standard_normal((batch, n))
        y_q = np.einsum("bd,bd->b", w_star, x_q)
        return X, y, x_q, y_q, w_star
