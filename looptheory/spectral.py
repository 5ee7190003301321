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

Accuracy (docs/engine.md, "5. Numerical accuracy"): like population_loss, the result is a
`Certified` float vouched for to RTOL = 1e-8 relative by a rigorous bound; the routes are the
expansion in S, its centred form (loops <= 4; the main part then has only E letters, so every
constant word is a T_{0,k}), and the same polynomial in exact rationals.
"""

from __future__ import annotations

import math
from collections import defaultdict
from fractions import Fraction
from functools import lru_cache

import numpy as np

from . import _validate as V
from .compensated import U as U_ROUND
from .compensated import gamma
from .loss import (_B, _BT, _E, _ET, _U, CENTRED_MAX_LOOPS, MAX_LOOPS, RTOL, Certified, main0_expansion, part_expansion,
                   rounding_error)


def _type(word):
    j = sum(1 for c in word if c in (_B, _BT))
    k = sum(1 for c in word if c in (_E, _ET))
    if any(c == _U for c in word):
        raise ValueError("the spectral family has u = 0")
    return (j, k)


@lru_cache(maxsize=None)
def _polynomial(loops: int, with_noise: bool, centred: bool = False):
    """{(part, p, dpow, sorted types): coef} with part 0 = signal, 1 = noise; the signal's main
    part in the S form (main0 + main) or centred."""
    poly = defaultdict(int)
    if centred:
        exps = [(0, part_expansion(loops, "centred"))]
    else:
        exps = [(0, main0_expansion(loops)), (0, part_expansion(loops, "main"))]
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


def _evaluate(items, types, a, mult, n, d, noise, exact=False, absolute=False):
    """(f, df/da) of the polynomial at eigenvalues a: in float, in exact rationals (exact), or
    with every quantity replaced by its absolute value (absolute: the sums the error bound
    needs). n may be any positive int (its powers are formed from the exact 1/n) or inf."""
    if exact:
        a = np.array([Fraction(float(x)) for x in a], dtype=object)
        mult = np.array([Fraction(int(m)) for m in mult], dtype=object)
        one = Fraction(1)
        noise = Fraction(noise)
    else:
        one = 1.0
    one_minus = one - a
    if absolute:
        a, one_minus = np.abs(a), np.abs(one_minus)
    jmax = max((j for j, _ in types), default=0)
    kmax = max((k for _, k in types), default=0)
    apow = [a * 0 + one]
    for _ in range(jmax):
        apow.append(apow[-1] * a)
    epow = [a * 0 + one]
    for _ in range(kmax):
        epow.append(epow[-1] * one_minus)
    T = {t: np.sum(mult * apow[t[0]] * epow[t[1]]) for t in types}
    inv = None if V.is_infinite(n) else Fraction(1, int(n))
    dT = {}
    f = 0 * one
    for (part, p, dpow, ts), c in items:
        if p and inv is None:
            continue
        w = Fraction(c) * (noise if part else 1) * Fraction(d) ** dpow * (inv**p if p else 1)
        w = w if exact else float(w)
        if absolute:
            w = abs(w)
        vals = [T[t] for t in ts]
        f += w * math.prod(vals)
        for i, t in enumerate(ts):
            dT[t] = dT.get(t, 0) + w * math.prod(vals[:i] + vals[i + 1:])
    grad = a * 0
    for (j, k), g in dT.items():
        term = a * 0
        if j:
            term = term + j * apow[j - 1] * epow[k]
        if k:
            term = term + (k if absolute else -k) * apow[j] * epow[k - 1]
        grad = grad + g * term
    return f, grad


def _rounding_count(items, types, size, grad):
    """Roundings behind a term (gamma_N times the absolute sums bounds the error; see
    CompiledExpansion.rounding_count): the powers, the power sums over `size` eigenvalues, the
    weight and the factors; for the gradient also the sums over items and types."""
    jk = max((j + k for j, k in types), default=0)
    nf = max((len(ts) for (_, _, _, ts), _ in items), default=0)
    N = jk + 3 + size + nf + 8
    if grad:
        N += len(items) + len(types) + 4
    return N


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
    (10**400 too: the 1/n^p terms are then below the float range) or math.inf.

    f is a `Certified` float (see looptheory.loss.Certified) within RTOL = 1e-8 relative of the
    exact value for these float inputs; the gradient within RTOL of max(||grad||, f / ||1 - a||)
    (norms over all d copies)."""
    a, n, loops, noise, mult = _check(a, n, loops, noise, multiplicity)
    d = int(round(mult.sum()))
    with_noise = noise != 0 and not V.is_infinite(n)
    e_norm = float(np.sqrt(np.sum(mult * (1.0 - a) ** 2)))
    tried = []
    routes = [("expansion", False)] + ([("centred", True)] if loops <= CENTRED_MAX_LOOPS else [])
    for route, centred in routes:
        items, types = _polynomial(loops, with_noise, centred)
        f, grad = _evaluate(items, types, a, mult, n, d, noise)
        fa, ga = _evaluate(items, types, a, mult, n, d, noise, absolute=True)
        err = 1.01 * gamma(_rounding_count(items, types, a.size, False)) * fa + U_ROUND * abs(f)
        gerr = 1.01 * gamma(_rounding_count(items, types, a.size, True)) * float(np.sqrt(np.sum(mult * ga * ga)))
        gnorm = float(np.sqrt(np.sum(mult * grad * grad)))
        if math.isfinite(f) and err <= RTOL * (f - err) and gerr <= RTOL * max(gnorm, (f - err) / max(e_norm, 1e-300)):
            return Certified(f, err, route, (gerr, 0.0)), grad
        tried.append(route)
    items, types = _polynomial(loops, with_noise, False)
    f, grad = _evaluate(items, types, a, mult, n, d, noise, exact=True)
    gf = np.array([float(g) for g in grad])
    # the one rounding's error computed exactly (u |f| is not a bound where f is subnormal)
    # (the gradient's norm is over all d copies: at most sqrt(max multiplicity) times the vector's)
    gerr = math.nextafter(rounding_error(grad, gf) * math.sqrt(float(np.max(mult))), math.inf)
    return Certified(float(f), rounding_error(f, float(f)), "exact", (gerr, 0.0)), gf


def spectral_loss(a, n, loops: int, noise=0.0, multiplicity=None) -> float:
    """The loss alone (see spectral_loss_grad): a `Certified` float."""
    return spectral_loss_grad(a, n, loops, noise, multiplicity)[0]
