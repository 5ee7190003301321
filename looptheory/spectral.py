"""The spectral family: symmetric whitened preconditioners, where the loss depends only on the
eigenvalues, at any d (10^6 included).

Setting: sigma_w = sigma_x^{-1} (Gatmiry et al.), u = 0, and a whitened preconditioner
B = Rx A^T Rx that is symmetric with eigenvalues a_1..a_d (for sigma_x = I: A symmetric with
eigenvalues a). S~ is orthogonally invariant, so rotating B to diag(a) does not change the
loss, and with W = I every constant word of the expansion is a product of the commuting
diagonal letters B = B^T = diag(a) and E = E^T = diag(1 - a). Its trace is

  T_{j,k}(a) = sum_i a_i^j (1 - a_i)^k     (j letters B, k letters E),

so f is a polynomial in 1/n, d and a handful of such sums: O(d) work per loss, no d x d matrix.
The gradient follows from dT_{j,k}/da_i = j a_i^{j-1} (1 - a_i)^k - k a_i^j (1 - a_i)^{k-1}.
"""

from __future__ import annotations

import math
from collections import defaultdict
from functools import lru_cache

import numpy as np

from . import _validate as V
from .loss import _B, _BT, _E, _ET, _U, MAX_LOOPS, _main0, part_expansion


def _type(word):
    j = sum(1 for c in word if c in (_B, _BT))
    k = sum(1 for c in word if c in (_E, _ET))
    if any(c == _U for c in word):
        raise ValueError("the spectral family has u = 0")
    return (j, k)


@lru_cache(maxsize=None)
def _polynomial(loops: int, with_noise: bool):
    """{(part, p, dpow, sorted types): coef} with part 0 = signal, 1 = noise."""
    poly = defaultdict(int)
    exps = [(0, _main0(loops)), (0, part_expansion(loops, "main"))]
    if with_noise:
        exps.append((1, part_expansion(loops, "noise")))
    for part, e in exps:
        for (p, words), c in e.items():
            dpow = sum(1 for w in words if not w)
            types = tuple(sorted(_type(w) for w in words if w))
            poly[(part, p, dpow, types)] += c
    items = [(k, v) for k, v in poly.items() if v]
    types = sorted({t for (_, _, _, ts), _ in items for t in ts})
    return items, types


def _check(a, n, loops, noise, multiplicity):
    a = V.as_real_array("a", a, 1, allow_exact=False)
    if a.size < 1:
        raise ValueError("a: expected at least one eigenvalue")
    if multiplicity is None:
        mult = np.ones(a.size)
    else:
        mult = np.asarray(multiplicity)
        if mult.shape != a.shape or mult.dtype.kind not in "iu" or np.any(mult < 1):
            raise ValueError(f"multiplicity: expected positive integers, one per eigenvalue in a (shape {a.shape})")
        mult = mult.astype(float)
    n = V.context_length("n", n)
    loops = V.positive_int("loops", loops)
    if loops > MAX_LOOPS:
        raise ValueError(f"loops: the exact engine supports loops <= {MAX_LOOPS}, got {loops}")
    noise = V.nonnegative_scalar("noise", noise)
    return a, n, loops, float(noise), mult


def spectral_loss_grad(a, n, loops: int, noise=0.0, multiplicity=None):
    """(f, df/da) for the whitened symmetric preconditioner with eigenvalues a
    (sigma_w = sigma_x^{-1}, u = 0). f equals population_loss(Task.gatmiry(d, n, sigma_x, noise), A, loops)
    for any sigma_x and A with Rx A^T Rx = Q diag(a) Q^T.

    multiplicity: optional positive integers, eigenvalue a[i] repeated multiplicity[i] times
    (d = sum of them), so that a d = 10^6 matrix with few distinct eigenvalues costs O(1);
    df/da[i] is then the derivative of one copy (the same for every copy). n: an integer >= 1
    (10**400 too: the 1/n^p terms are then below the float range) or math.inf."""
    a, n, loops, noise, mult = _check(a, n, loops, noise, multiplicity)
    d = int(round(mult.sum()))
    with_noise = noise != 0 and not V.is_infinite(n)
    items, types = _polynomial(loops, with_noise)
    one_minus = 1.0 - a
    jmax = max((j for j, _ in types), default=0)
    kmax = max((k for _, k in types), default=0)
    apow = [np.ones(a.size)]
    for _ in range(jmax):
        apow.append(apow[-1] * a)
    epow = [np.ones(a.size)]
    for _ in range(kmax):
        epow.append(epow[-1] * one_minus)
    T = {t: float(np.sum(mult * apow[t[0]] * epow[t[1]])) for t in types}
    dT = {}
    f = 0.0
    inv_n = [V.inverse_power(n, p) for p in range(max((k[1] for k, _ in items), default=0) + 1)]
    for (part, p, dpow, ts), c in items:
        if p and V.is_infinite(n):
            continue
        w = c * (noise if part else 1.0) * float(d) ** dpow * inv_n[p]
        vals = [T[t] for t in ts]
        f += w * math.prod(vals)
        for i, t in enumerate(ts):
            dT[t] = dT.get(t, 0.0) + w * math.prod(vals[:i] + vals[i + 1:])
    grad = np.zeros(a.size)
    for (j, k), g in dT.items():
        term = np.zeros(a.size)
        if j:
            term += j * apow[j - 1] * epow[k]
        if k:
            term -= k * apow[j] * epow[k - 1]
        grad += g * term
    return f, grad


def spectral_loss(a, n, loops: int, noise=0.0, multiplicity=None) -> float:
    """The loss alone (see spectral_loss_grad)."""
    return spectral_loss_grad(a, n, loops, noise, multiplicity)[0]
