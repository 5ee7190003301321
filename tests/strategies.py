"""Hypothesis strategies shared by the tests: random SPD covariances, matrices, n and loops."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


@st.composite
def matrices(draw, d, scale=1.0):
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).standard_normal((d, d)) * scale


@st.composite
def spd_matrices(draw, d, cond_max=20.0):
    """A random SPD matrix with eigenvalues in [1, cond_max] / sqrt(cond_max), random eigenbasis."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    ev = np.exp(rng.uniform(0, np.log(cond_max), d)) / np.sqrt(cond_max)
    m = (q * ev) @ q.T
    return (m + m.T) / 2
