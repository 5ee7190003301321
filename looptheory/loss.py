"""The population loss of the sparse looped model, exactly, and its hand-derived gradient.

This module is where the population loss is computed. With S = X X^T / n whitened
(S = Rx S~ Rx, Rx = sigma_x^{1/2}), B = Rx A^T Rx, W = Rx sigma_w Rx, U = Rx u u^T Rx and
H = I - B S (docs/conventions.md, "The population loss in closed form"):

  f(A, u) = E tr(H^L W H^LT) + E tr((I - H^L) U (I - H^L)^T) + (noise/n) E tr(G B S B^T G^T),

with G = sum_{k<L} H^k. Expanding by the binomial theorem (B S commutes with I),
  H^L = sum_k C(L, k) (-1)^k (B S)^k,   I - H^L = -sum_{k>=1} C(L, k) (-1)^k (B S)^k,
  G B S = I - H^L, so G B = sum_{j<L} (-1)^j C(L, j+1) (B S)^j B,
each part is a sum of traces of words in S, B, B^T and one W or U, which the engine
(`looptheory.expectations`) turns into exact polynomials in 1/n over traces of constant words.

Two choices keep the numbers right:
- No square roots: every letter stands between two Rx's, so a trace of whitened letters is
  the trace of the product of the raw letters each multiplied on the right by sigma_x
  (B -> A^T sigma_x, W -> sigma_w sigma_x, U -> u u^T sigma_x). Rational inputs therefore give
  an exact rational loss.
- Stability: the n^0 part of the main term equals tr(E^L W E^{LT}) with E = I - B, and is
  computed in that form, so a loss near the optimum at large n is not formed by cancelling
  binomial terms of size C(2L, L).

The gradient is derived by hand from the expansion: for tr(M_1 ... M_k) the derivative with
respect to M_i is the transposed rest of the word (expectations.CompiledExpansion), and the
chain rule through M_B = A^T sigma_x, M_Bt = A sigma_x, M_E = I - A^T sigma_x,
M_Et = I - A sigma_x, M_U = u u^T sigma_x gives
  grad_A = sigma_x (G_B - G_E)^T + (G_Bt - G_Et) sigma_x,
  grad_u = G_U sigma_x u + sigma_x G_U^T u,
where G_X = df/dM_X.
"""

from __future__ import annotations

import contextlib
import contextvars
import gzip
import json
import math
import os
import sys
import warnings
from collections import defaultdict
from fractions import Fraction
from functools import lru_cache
from math import comb

import numpy as np

from . import _validate as V
from .compensated import NORMAL_MIN
from .compensated import U as U_ROUND
from .compensated import gamma, product
from .expectations import Alphabet, Engine, Expansion
from .layout import CompiledExpansion, build_arrays, load_arrays, select_arrays
from .task import Task

#: Loop counts the engine supports. Expansions for every supported loop count ship as package
#: data (looptheory/data); building loops = 7 would take tens of minutes and several GB.
MAX_LOOPS = 6

ALPHABET = Alphabet(
    names=("S", "B", "Bt", "E", "Et", "W", "U"),
    transpose=(0, 2, 1, 4, 3, 5, 6),
    random=0,
)
_S, _B, _BT, _E, _ET, _W, _U = range(7)
_GRAD_LETTERS = (_B, _BT, _E, _ET, _U)

PARTS = ("main", "u", "noise")

#: The centred form of the main part (docs/engine.md, "5. Numerical accuracy"): H = I - B S written
#: as E - D + E D with E = I - B and D = S - I, so that near the optimum at large n every term
#: is as small as the loss itself. Shipped for loops <= CENTRED_MAX_LOOPS.
CENTRED_MAX_LOOPS = 4
ALPHABET_CENTRED = Alphabet(names=("D",) + ALPHABET.names[1:], transpose=ALPHABET.transpose, random=0)


def _power_words(coeffs):
    """[(coef, (B S)^k)] from {k: coef}."""
    return [(c, (_B, _S) * k) for k, c in coeffs.items() if c]


def _sandwich(left, middle, right_coeffs=None):
    """sum_{j,k} a_j a_k tr(Y_j middle Y_k^T) for Y_k = left words; grouped by canonical word."""
    right = left if right_coeffs is None else right_coeffs
    T = ALPHABET.transpose
    out = defaultdict(int)
    for c1, w1 in left:
        for c2, w2 in right:
            w2t = tuple(T[c] for c in reversed(w2))
            out[w1 + middle + w2t] += c1 * c2
    return [(c, [w]) for w, c in out.items() if c]


@lru_cache(maxsize=None)
def _engine():
    return Engine(ALPHABET)


def build_centred_main(loops: int) -> Expansion:
    """The main part E tr(H^L W H^LT), n^0 part included, in the centred letters.

    Whitened, H = I - B S = I - (I - E)(I + D) = E - D + E D (E = I - B, D = S - I), so H^L is
    the sum over the 3^L sequences of the factors E, -D, E D, and the engine's centred mode
    (Engine(centred=True)) takes the expectation over D. A term with a letters E and b letters
    D carries n^-p with p >= ceil(b / 2) and a + b >= 2L factors of size at least E or D^(1/2):
    near the optimum (E of order 1/n) every term is of order n^-L or smaller, like the loss.
    """
    import itertools

    L = loops
    Y = []
    for seq in itertools.product((0, 1, 2), repeat=L):
        w, sign = (), 1
        for f in seq:
            w += ((_E,), (_S,), (_E, _S))[f]
            sign = -sign if f == 1 else sign
        Y.append((sign, w))
    return Engine(ALPHABET_CENTRED, centred=True).expect(_sandwich(Y, (_W,)), hint=_W)


def build_part_expansion(loops: int, part: str) -> Expansion:
    """Build one part of the loss's expansion with the engine (no shipped data).

    main:  E tr(H^L W H^LT) without its n^0 part (which is tr(E^L W E^LT), see `main0_expansion`);
    u:     E tr((I - H^L) U (I - H^L)^T);
    noise: (1/n) E tr(G B S B^T G^T)  (multiply by the noise variance).
    """
    L = loops
    eng = _engine()
    if part == "main":
        Y = _power_words({k: comb(L, k) * (-1) ** k for k in range(L + 1)})
        full = eng.expect(_sandwich(Y, (_W,)), hint=_W)
        return Expansion(ALPHABET, {k: v for k, v in full.items() if k[0] > 0})
    if part == "u":
        Y = _power_words({k: -comb(L, k) * (-1) ** k for k in range(1, L + 1)})
        return eng.expect(_sandwich(Y, (_U,)), hint=_U)
    if part == "noise":
        # G B S B^T G^T = sum_{j,k} g_j g_k (B S)^j B S B^T (S B^T)^k
        Y = [(c, w + (_B,)) for c, w in _power_words({j: (-1) ** j * comb(L, j + 1) for j in range(L)})]
        e = eng.expect(_sandwich(Y, (_S,)))
        return Expansion(ALPHABET, {(p + 1, ws): c for (p, ws), c in e.items()})
    raise ValueError(f"part: expected one of {PARTS}, got {part!r}")


DATA_DIR = os.path.join(os.path.dirname(__file__), "data")


def data_path(loops: int, part: str) -> str:
    """The shipped expansion file of `part` ("main", "u" or "noise") at this loop count."""
    return os.path.join(DATA_DIR, f"loss_L{loops}_{part}.json.gz")


@lru_cache(maxsize=None)
def part_expansion(loops: int, part: str) -> Expansion:
    """One part of the loss's exact expansion (see build_part_expansion; part "centred" is
    build_centred_main), loaded from the package data when shipped
    (scripts/build_expansions.py regenerates it; the tests check it against a fresh build and
    against independent routes), else built."""
    if part not in PARTS + ("centred",):
        raise ValueError(f"part: expected one of {PARTS + ('centred',)}, got {part!r}")
    alphabet = ALPHABET_CENTRED if part == "centred" else ALPHABET
    path = data_path(loops, part)
    if os.path.exists(path):
        with gzip.open(path, "rt") as fh:
            e = Expansion.from_json(json.load(fh))
        if e.alphabet != alphabet:
            raise ValueError(f"{path}: the shipped expansion's alphabet differs from the loss's")
        return e
    return build_centred_main(loops) if part == "centred" else build_part_expansion(loops, part)


def main0_expansion(loops: int) -> Expansion:
    """The n^0 part of the main term, tr(E^L W E^{LT}), as a one-word expansion."""
    return Expansion(ALPHABET, {(0, ((_E,) * loops + (_W,) + (_ET,) * loops,)): 1})


#: The parts each shipped evaluation layout holds, by form (looptheory/data/layout_L{L}_{form}.npz):
#: a route's layout is the shipped one with only the parts it needs (`layout.select_arrays`).
LAYOUT_PARTS = {"S": ("main0", "main", "u", "noise"), "centred": ("centred", "u", "noise")}


def layout_path(loops: int, form: str) -> str:
    """The shipped evaluation layout of `form` ("S" or "centred") at this loop count."""
    return os.path.join(DATA_DIR, f"layout_L{loops}_{form}.npz")


def build_layout(loops: int, form: str) -> dict:
    """The evaluation layout of all of a form's parts as arrays, built from the expansions
    (scripts/build_expansions.py ships it; tests/test_shipped_expansions.py checks it)."""
    parts = LAYOUT_PARTS[form]
    exps = [main0_expansion(loops) if p == "main0" else part_expansion(loops, p) for p in parts]
    return build_arrays(exps, parts)


@lru_cache(maxsize=None)
def _layout_arrays(loops: int, form: str) -> dict:
    alphabet = ALPHABET_CENTRED if form == "centred" else ALPHABET
    return load_layout(layout_path(loops, form), alphabet, LAYOUT_PARTS[form], lambda: build_layout(loops, form))


def load_layout(path: str, alphabet, parts, build) -> dict:
    """The layout arrays shipped at `path`, checked against the alphabet and parts they must
    have (ValueError otherwise), or build() when nothing is shipped there."""
    if not os.path.exists(path):
        return build()
    arrays = load_arrays(path)
    if (tuple(str(x) for x in arrays["names"]) != alphabet.names or tuple(int(x) for x in arrays["transpose"]) != alphabet.transpose
            or tuple(str(x) for x in arrays["parts"]) != tuple(parts)):
        raise ValueError(f"{path}: the shipped layout's alphabet or parts differ from the loss's")
    return arrays


@lru_cache(maxsize=None)
def _compiled(loops: int, parts: tuple) -> CompiledExpansion:
    """One layout for the requested parts ("main0" is the n^0 part of the main term): the
    shipped layout (loaded lazily, once per loop count) restricted to these parts."""
    form = "centred" if "centred" in parts else "S"
    full = LAYOUT_PARTS[form]
    if len(set(parts)) == len(parts) and all(p in full for p in parts):
        arrays = _layout_arrays(loops, form)
        if tuple(parts) != full:
            arrays = select_arrays(arrays, [full.index(p) for p in parts])
        return CompiledExpansion.from_arrays(arrays, _GRAD_LETTERS)
    exps = [main0_expansion(loops) if p == "main0" else part_expansion(loops, p) for p in parts]
    return CompiledExpansion(exps, _GRAD_LETTERS, parts)


# --- inputs ----------------------------------------------------------------------------------


# Trie nodes of the evaluation layout (`_compiled(loops, parts).n_nodes`: prefixes and suffixes
# of the split words) by loop count, the most any route needs without and with the u part
# (tests/test_bad_inputs.py checks it bounds the real layouts).
_TRIE_NODES = {1: (9, 11), 2: (25, 32), 3: (55, 70), 4: (111, 142), 5: (152, 215), 6: (291, 418)}
# Arrays of nodes x d^2 doubles alive at once: the products, their absolute values and their
# error bounds, plus the pairing's and the levels' temporaries (a loss); the adjoints and their
# bounds on top (a gradient). Measured peak at d = 200, loops = 6 with u: 3.6 and 5.5.
_FLOAT_COPIES = (4, 6)
# Bytes per exact entry (a Fraction with its two ints) in exact mode: a rough, generous figure.
_FRACTION_BYTES = 200
def _check(task, A, loops, u, exact, grad=False):
    """Validated (task, loops, A, u); refuses up front what would not fit in memory."""
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
    loops = V.positive_int("loops", loops)
    if loops > MAX_LOOPS:
        raise ValueError(
            f"loops: the exact engine supports loops <= {MAX_LOOPS}, got {loops} "
            "(use monte_carlo_loss, or optimal_scale / the scalar family, for more loops)"
        )
    exact = V.boolean("exact", exact)
    check_loss_memory(task.d, loops, u is not None, exact, grad)
    A = V.square_matrix("A", A, task.d, allow_exact=exact)
    u = None if u is None else V.vector("u", u, task.d, allow_exact=exact)
    return task, loops, A, u


def check_loss_memory(d: int, loops: int, with_u: bool = False, exact: bool = False, grad: bool = False) -> None:
    """Refuse (ValueError naming task) a loss evaluation at dimension d whose memory is above the
    cap (`looptheory._validate.memory_cap`): the layout's trie holds nodes x d^2 entries, 8 bytes
    each in float mode, in 4 arrays for a loss (the products, their absolute values, their error
    bounds, temporaries) and 6 with the gradient's adjoints, about 200 bytes each in exact mode.
    loops <= MAX_LOOPS."""
    check_layout_memory(d, _TRIE_NODES[loops][bool(with_u)], exact, grad, "population_loss", f"loops = {loops}")


def check_layout_memory(d: int, nodes: int, exact: bool, grad: bool, name: str, where: str) -> None:
    """Refuse (ValueError naming task) an evaluation of a layout with `nodes` trie nodes at
    dimension d above the memory cap (see check_loss_memory); `name` is the function and
    `where` the rest of its description in the message (e.g. "loops = 6")."""
    if exact:
        V.check_memory("task", f"{name}(exact=True) at d = {d}, {where}",
                       nodes * d * d * _FRACTION_BYTES,
                       f"{nodes} trie nodes x d^2 Fractions x about {_FRACTION_BYTES} bytes")
        return
    copies = _FLOAT_COPIES[bool(grad)]
    name = f"{name}_grad" if grad else name
    V.check_memory("task", f"{name} at d = {d}, {where}", copies * nodes * d * d * 8,
                   f"{copies} x {nodes} trie nodes x d^2 x 8 bytes")


def inf_on_overflow(value, name: str = "population_loss"):
    """The loss of finite inputs is finite and >= 0: NaN or inf means float64 overflowed (a
    RuntimeWarning from `name`, and inf)."""
    if math.isfinite(value):
        return value
    warnings.warn(f"{name}: the loss overflows float64 (finite inputs, but too large: the loss "
                  "grows like |A|^(2 loops)); returning inf", RuntimeWarning, stacklevel=3)
    return math.inf


def exact_matrix(name, M):
    """M as an object array of Fractions (rational entries or integer-valued floats), else TypeError naming it."""
    if M.dtype == object:
        return M
    out = np.empty(M.shape, dtype=object)
    for idx, v in np.ndenumerate(M):
        if not float(v).is_integer():
            raise TypeError(
                f"{name}: exact=True needs rational inputs (int, fractions.Fraction or SymPy Rational), "
                f"got the float {v!r}"
            )
        out[idx] = Fraction(int(v))
    return out


def _letters(A, u, sigma_x, sigma_w, d, one):
    """Raw letter matrices M_X = X_raw sigma_x, indexed by letter code."""
    # one: the exact unit (Fraction(1)) in exact mode, None in float mode
    if one is None:
        eye = np.eye(d)
    else:
        eye = np.array([[one if i == j else 0 * one for j in range(d)] for i in range(d)], dtype=object)
    mB = A.T.dot(sigma_x)
    mBt = A.dot(sigma_x)
    uu = np.outer(u, u) if u is not None else 0 * eye
    return [eye, mB, mBt, eye - mB, eye - mBt, sigma_w.dot(sigma_x), uu.dot(sigma_x)]


def _parts_needed(n, noise, u):
    """The parts that can be non-zero, and their weights (the noise part's is the variance)."""
    parts, scales = ["main0", "main"], [1, 1]
    if u is not None and any(x != 0 for x in u):
        parts.append("u")
        scales.append(1)
    if noise != 0 and not V.is_infinite(n):  # math.isinf(10**400) raises OverflowError
        parts.append("noise")
        scales.append(noise)
    return tuple(parts), scales


#: The relative accuracy a float result is vouched for: a route whose error bound exceeds it
#: is not used (docs/engine.md, "5. Numerical accuracy").
RTOL = 1e-8

#: Exact rational evaluation is the last route; past this many (terms x d^3) it would take
#: minutes, and the function raises instead (loops 5 and 6 at d <= 4 stay well inside).
EXACT_FALLBACK_LIMIT = 5e8

#: Above this many (terms x d^3) the exact fallback says so (RuntimeWarning): measured at 0.4 to
#: 4 CPU-microseconds per counted operation (loops 3 to 6, d = 2 and 3, the gradient about 3x
#: the loss alone), so a warned call takes from half a second (loops 5, d = 3, the loss) to
#: minutes (docs/engine.md, "5. Numerical accuracy").
EXACT_FALLBACK_WARN = 1e6


class Certified(float):
    """A float that carries a rigorous bound on its error.

    error: an upper bound on |value - exact value| covering the rounding of the letters and of
    the evaluation; route: how it was computed ("expansion", "centred" or "exact");
    grad_error: for population_loss_grad, bounds on the Frobenius norms of the errors of
    (grad_A, grad_u), else None.
    """

    __slots__ = ("error", "route", "grad_error")

    def __new__(cls, value, error, route, grad_error=None):
        obj = super().__new__(cls, value)
        obj.error = float(error)
        obj.route = route
        obj.grad_error = grad_error
        return obj

    def __reduce__(self):
        # copy.deepcopy, pickle and dataclasses.asdict rebuild the value with its bound (the
        # default passes only the float to __new__, which also needs error and route)
        return (type(self), (float(self), self.error, self.route, self.grad_error))

    @property
    def rel_error(self) -> float:
        """error / |value| (inf at 0 unless the error is 0)."""
        v = abs(float(self))
        return self.error / v if v else (0.0 if self.error == 0 else math.inf)

    # Arithmetic keeps the bound, so that a margin such as f(A1) - f(A2) written by a user
    # (looptheory.claim) is still certified: for r = fl(a op b), |r - (a op b)| <= ulp(r), and the
    # operands' errors propagate to first order plus the product of the errors (rigorous, not
    # estimated). A plain int or float operand counts as exact; anything else (a NumPy array, a
    # NumPy scalar on the left) falls back to float arithmetic and drops the bound.
    def _bound(self, other):
        if isinstance(other, Certified):
            return float(other), other.error, other.route
        if isinstance(other, (int, float, np.integer, np.floating)) and not isinstance(other, (bool, np.bool_)):
            return float(other), 0.0, None
        return None

    def _result(self, value, error, other_route):
        routes = {r for r in (self.route, other_route) if r is not None}
        route = "+".join(sorted(routes)) if routes else self.route
        if not math.isfinite(value) or not math.isfinite(error):
            return Certified(value, math.inf, route)
        return Certified(value, error + math.ulp(value), route)

    def __add__(self, other):
        b = self._bound(other)
        if b is None:
            return NotImplemented
        return self._result(float(self) + b[0], self.error + b[1], b[2])

    __radd__ = __add__

    def __sub__(self, other):
        b = self._bound(other)
        if b is None:
            return NotImplemented
        return self._result(float(self) - b[0], self.error + b[1], b[2])

    def __rsub__(self, other):
        b = self._bound(other)
        if b is None:
            return NotImplemented
        return self._result(b[0] - float(self), self.error + b[1], b[2])

    def __mul__(self, other):
        b = self._bound(other)
        if b is None:
            return NotImplemented
        a, ea = float(self), self.error
        return self._result(a * b[0], abs(a) * b[1] + abs(b[0]) * ea + ea * b[1], b[2])

    __rmul__ = __mul__

    def _divide(self, a, ea, b, eb, route):
        if abs(b) <= eb:
            return self._result(a / b if b else math.inf, math.inf, route)
        return self._result(a / b, (abs(a) * eb + abs(b) * ea) / (abs(b) * (abs(b) - eb)), route)

    def __truediv__(self, other):
        b = self._bound(other)
        if b is None:
            return NotImplemented
        return self._divide(float(self), self.error, b[0], b[1], b[2])

    def __rtruediv__(self, other):
        b = self._bound(other)
        if b is None:
            return NotImplemented
        return self._divide(b[0], b[1], float(self), self.error, b[2])

    def __neg__(self):
        return Certified(-float(self), self.error, self.route)

    def __pos__(self):
        return self

    def __abs__(self):
        return Certified(abs(float(self)), self.error, self.route)


#: Set by `exact_route()`: float inputs are evaluated in exact rationals (the last route).
_EXACT_ROUTE = contextvars.ContextVar("looptheory_exact_route", default=False)


@contextlib.contextmanager
def exact_route():
    """Within this context, `population_loss` and `population_loss_grad` evaluate float inputs by
    their exact-rational route directly: the loss of the given float matrices in exact rationals,
    rounded once (route "exact", error half an ulp; docs/engine.md, "5. Numerical accuracy").
    `looptheory.verify_claim` uses it to confirm a counterexample exactly. A call whose exact
    evaluation is unaffordable raises ValueError as the fallback does."""
    token = _EXACT_ROUTE.set(True)
    try:
        yield
    finally:
        _EXACT_ROUTE.reset(token)


def population_loss(task: Task, A, loops: int, u=None, exact: bool = False):
    """The exact population loss f(A, u) = E (yhat - y_q)^2 of the sparse looped model.

    docs/conventions.md: f(A, u) = E tr(H^L W H^LT) + E tr((I - H^L) U (I - H^L)^T)
    + (sigma^2/n) E tr(G B S B^T G^T) (whitened letters; see this module's docstring),
    Gatmiry et al. (2024), Sec. 3; a polynomial in 1/n computed without sampling.

    A: any real d x d matrix; u: vector of length d (None: 0); n may be math.inf (only the
    n^0 part remains and the noise term drops). With exact=True every input must be rational
    (ints, fractions.Fraction, SymPy Rationals; integer-valued floats are accepted) and the
    result is a fractions.Fraction.

    The float result is a `Certified` float: within RTOL = 1e-8 relative of the exact loss of
    the given float inputs, with `.error` a rigorous bound. It tries, in order, the expansion
    in S, its centred form (loops <= CENTRED_MAX_LOOPS) and exact rationals, and returns the
    first whose bound vouches for RTOL (docs/engine.md, "5. Numerical accuracy"); it raises
    ValueError if none can at an affordable cost.

    Limits (docs/user-guide.md, "Limits and errors"): exact must be True or False. Memory is
    about 4 x (trie nodes) x d^2 x 8 bytes, with at most 9, 25, 55, 111, 152, 291 nodes at loops
    1 ... 6 (11, 32, 70, 142, 215, 418 with a non-zero u: 0.6 GB at d = 200, loops = 6), and
    about 200 bytes per entry in exact mode; a call above the memory cap (4 GiB by default,
    LOOPTHEORY_MEMORY_CAP) is refused before anything is allocated (ValueError naming task),
    e.g. d = 2000 at loops = 6. Any n
    is evaluated as it is (10**400 too: its weights n^-p below float's range are bounded
    absolutely, docs/engine.md, "8. Limits"). A loss that
    overflows float64 (A = 1e200 I) is returned as inf with a RuntimeWarning, never NaN.
    """
    task, loops, A, u = _check(task, A, loops, u, exact)
    if exact:
        return _exact_loss(task, A, loops, u)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported once, below
        value = _certified(task, A, loops, u, need_grad=False)[0]
    return inf_on_overflow(value)


def population_loss_grad(task: Task, A, loops: int, u=None, fallback: bool = True):
    """(f, grad_A f, grad_u f) at (A, u), accurate to RTOL = 1e-8.

    The gradient is derived by hand from the expansion (derivative of each trace word; see
    the module docstring), not by finite differences. grad_u is the gradient at the given u
    (at u = 0 when u is None, where it vanishes since f is quadratic in u): always length d.
    f is a `Certified` float whose grad_error bounds the Frobenius norms of the gradients'
    errors; the gradient is vouched for to RTOL relative to max(||grad||, f / ||E||_F),
    E = I - A^T sigma_x (near a stationary point: relative in the variable scaled by ||E||).

    fallback=False skips the exact-rational route (for the inner steps of an optimiser, where
    speed matters and the final point is certified separately): the float route with the
    smallest bound is returned, and its `error` and `grad_error` still say how accurate it is,
    possibly less than RTOL.

    Memory is about 6 x (trie nodes) x d^2 x 8 bytes (0.8 GB at d = 200, loops = 6 with u),
    checked against the memory cap as in `population_loss`; any n is evaluated as it is (its
    weights n^-p below the float range bounded absolutely).
    """
    task, loops, A, u = _check(task, A, loops, u, exact=False, grad=True)
    fallback = V.boolean("fallback", fallback)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported once, below
        f, gA, gu = _certified(task, A, loops, u, need_grad=True, fallback=fallback)
    return inf_on_overflow(f, "population_loss_grad"), gA, gu


def float_routes(loops: int) -> tuple:
    """The float routes `population_loss` tries at this loop count, in order: "expansion" (the
    expansion in S) and, for loops <= CENTRED_MAX_LOOPS, "centred" (docs/engine.md,
    "5. Numerical accuracy")."""
    loops = V.positive_int("loops", loops)
    return ("expansion", "centred") if loops <= CENTRED_MAX_LOOPS else ("expansion",)


def _route_parts(task, loops, route, u):
    if route not in float_routes(loops):
        raise ValueError(f"route: expected one of {float_routes(loops)} at loops = {loops}, got {route!r}")
    parts, scales = _parts_needed(task.n, task.noise, u)
    scales = [float(x) for x in scales]
    if route == "centred":
        parts, scales = ("centred",) + parts[2:], scales[1:]
    return _compiled(loops, parts), scales


def population_loss_grad_route(task: Task, A, loops: int, u=None, route: str = "expansion"):
    """(f, grad_A f, grad_u f) in float by one route, without the error bound: the numbers
    `population_loss_grad` computes on that route, bit for bit (the same letters and the same
    operations; tests/test_loss_hvp.py checks it), at about a third of the cost. f is a plain float.

    For the inner steps of an optimiser: where `float_routes(loops)` has one route (loops above
    CENTRED_MAX_LOOPS) these are exactly population_loss_grad(..., fallback=False)'s numbers,
    whose bound cannot change the route taken. Nothing here vouches for their accuracy: a
    reported point is evaluated by `population_loss_grad`. route: one of float_routes(loops).
    Memory: refused up front wherever population_loss_grad is (its estimate, generous here: no
    error bounds are kept), so that a caller certifying its points with it is refused at the
    start, not midway.
    """
    task, loops, A, u = _check(task, A, loops, u, exact=False, grad=True)
    d = task.d
    sx = np.asarray(task.sigma_x, dtype=float)
    mats, _ = _float_letters(A, u, sx, np.asarray(task.sigma_w, dtype=float), d)
    comp, scales = _route_parts(task, loops, route, u)
    value, G = comp.value_and_grad(mats, task.n, d, True, scales)
    gA, gu = _chain(G, sx, u, d)
    return value, gA, gu


#: The imaginary step of `population_loss_hvp`, relative to the direction's norm: its error is
#: of relative order (step / size of the letters)^2, far below float64's resolution.
COMPLEX_STEP = 1e-20


def population_loss_hvp(task: Task, A, loops: int, dA, u=None, du=None, route: str = "expansion"):
    """The Hessian of f(A, u) applied to (dA, du): (H_AA dA + H_Au du, H_uA dA + H_uu du), by
    a complex step through the gradient of one float route (`population_loss_grad_route`):

      H v = Im grad f(z + i h v) / h + O(h^2),

    exact to rounding: no difference is taken, so h can be 1e-20 relative to |v| (Squire and
    Trapp, "Using complex variables to estimate derivatives of real functions", SIAM Rev. 40,
    1998; the evaluation is a polynomial in the letters, computed without absolute values or
    conjugates, so it is analytic). Costs 2-2.5 float gradients, and about the memory of
    population_loss_grad (complex numbers, but none of the bounds' arrays). Without a bound,
    like population_loss_grad_route: for Newton steps, whose result is checked by the gradient.
    u None means u = 0 (f is quadratic in u, so H_uu du is not 0); du None means du = 0.
    Returns (HA, Hu), Hu of length d.
    """
    task, loops, A, u = _check(task, A, loops, u, exact=False, grad=True)
    d = task.d
    if du is not None:
        check_loss_memory(d, loops, True, grad=True)  # a direction in u brings in the u part
    dA = V.square_matrix("dA", dA, d, allow_exact=False)
    u = np.zeros(d) if u is None else u
    du = np.zeros(d) if du is None else V.vector("du", du, d, allow_exact=False)
    scale = math.hypot(np.linalg.norm(dA), np.linalg.norm(du))
    if scale == 0:
        return np.zeros((d, d)), np.zeros(d)
    h = COMPLEX_STEP / scale
    Ac, uc = A + 1j * h * dA, u + 1j * h * du
    sx = np.asarray(task.sigma_x, dtype=float)
    mats = np.stack(_letters(Ac, uc, sx, np.asarray(task.sigma_w, dtype=float), d, None))
    comp, scales = _route_parts(task, loops, route, uc)
    _, G = comp.value_and_grad(mats, task.n, d, True, scales)
    gA, gu = _chain(G, sx, uc, d)
    return gA.imag / h, np.asarray(gu).imag / h


def _float_letters(A, u, sx, sw, d):
    """Letter matrices formed with compensated products (one rounding each) and their entrywise
    error bounds: one stacked product for all of them (A^T sigma_x twice, for B = A^T sigma_x
    and E = I - A^T sigma_x; A sigma_x twice; sigma_w sigma_x; u^T sigma_x)."""
    eye = np.eye(d)
    zero = np.zeros((d, d))
    rows = [A.T, A.T, A, A, sw] + ([] if u is None else [u[None, :]])
    X = np.concatenate(rows)
    C = np.concatenate([zero, eye, zero, eye, zero] + ([] if u is None else [np.zeros((1, d))]))
    sign = np.ones(len(X))
    sign[d:2 * d] = sign[3 * d:4 * d] = -1.0
    M, err = product(X, sx, C, sign)
    mB, mE, mBt, mEt, mW = (M[i * d:(i + 1) * d] for i in range(5))
    eB, eE, eBt, eEt, eW = (err[i * d:(i + 1) * d] for i in range(5))
    if u is None:
        mU, eU = zero, zero
    else:
        v, ev = M[5 * d], err[5 * d]
        mU = np.outer(u, v)
        eU = np.abs(np.outer(u, ev)) + U_ROUND * np.abs(mU)
    mats = np.stack([eye, mB, mBt, mE, mEt, mW, mU])
    errs = np.stack([zero, eB, eBt, eE, eEt, eW, eU])
    return mats, errs


def _routes(loops, parts, scales):
    """The float routes in order of cost: the expansion in S, then the centred main part."""
    yield "expansion", parts, scales
    if loops <= CENTRED_MAX_LOOPS:
        yield "centred", ("centred",) + parts[2:], scales[1:]


def _certified(task, A, loops, u, need_grad, fallback=True):
    d = task.d
    sx = np.asarray(task.sigma_x, dtype=float)
    sw = np.asarray(task.sigma_w, dtype=float)
    A = np.asarray(A, dtype=float)
    uf = None if u is None else np.asarray(u, dtype=float)
    if _EXACT_ROUTE.get():
        return _exact_fallback(task, A, loops, uf, need_grad, ["float routes skipped: exact_route()"], call=None)
    mats, errs = _float_letters(A, uf, sx, sw, d)
    parts, scales = _parts_needed(task.n, task.noise, uf)
    scales = [float(x) for x in scales]
    return certified_evaluation(
        _routes(loops, parts, scales), lambda ps: _compiled(loops, ps), mats, errs, task.n, d, need_grad, fallback,
        chain=lambda G: _chain(G, sx, uf, d), chain_error=lambda G, Gerr: _chain_error(G, Gerr, sx, uf, d),
        e_norm=float(np.linalg.norm(mats[_E])),
        exact=lambda tried: _exact_fallback(task, A, loops, uf, need_grad, tried,
                                            call="population_loss_grad" if need_grad else "population_loss"))


def certified_evaluation(routes, compile, mats, errs, n, d, need_grad, fallback, chain, chain_error, e_norm, exact):
    """The loss (and gradient) by the first float route whose running error bound vouches for
    RTOL, else by `exact` (docs/engine.md, "5. Numerical accuracy"); the model-independent part
    of `population_loss_grad`, shared with `looptheory.multilayer`.

    routes: (name, parts, scales) in order of cost; compile(parts): their CompiledExpansion;
    mats, errs: the letter matrices and their entrywise error bounds; chain(G): the model's
    two gradients from the letter adjoints G = {letter: df/dM}; chain_error(G, Gerr): bounds on
    the Frobenius norms of their errors; e_norm: the scale ||E|| of the gradient's test, which
    must hold to RTOL relative to max(||grad||, f / ||E||); exact(tried): the exact-rational
    route's (f, grad_1, grad_2), given the routes tried. With fallback=False the float route
    with the smallest bound is returned instead of `exact`. Returns (Certified f, grad_1,
    grad_2), the gradients None without need_grad.
    """
    tried = []
    best = None
    mats, errs = _normal_letters(mats, errs)
    for route, ps, sc in routes:
        comp = compile(ps)
        value, G, err, Gerr = comp.evaluate(mats, n, d, need_grad, sc, errs)
        if not math.isfinite(value):
            # float64 overflow (finite inputs): no route can do better in float; the caller
            # reports it (population_loss returns inf with a warning)
            f = Certified(value, math.inf, "overflow")
            return (f, None, None) if not need_grad else (f, *chain(G))
        if 0 < abs(value) < SAFE_MIN:
            # the running bounds model every rounding as relative; near float's underflow it is
            # absolute: this route cannot vouch, and its bound says nothing
            tried.append(f"{route}: the value {abs(value):.1e} is near float underflow (below {SAFE_MIN:.1e}), where its bound does not hold")
            if not fallback and best is None:
                best = ((Certified(value, math.inf, route, (math.inf, math.inf)), *chain(G)) if need_grad
                        else (Certified(value, math.inf, route), None, None))
            continue
        ok = value_ok = err <= RTOL * (value - err)
        better = not fallback and (best is None or err < best[0].error)
        if need_grad and (ok or better):
            # the gradients and their bounds once, for the test and for the best route kept
            g1, g2 = chain(G)
            e1, e2 = chain_error(G, Gerr)
        if ok and need_grad:
            scale = max(math.hypot(np.linalg.norm(g1), np.linalg.norm(g2)), (value - err) / max(e_norm, 1e-300))
            ok = math.hypot(e1, e2) <= RTOL * scale
            if not ok and fallback:
                # before the exact route: the same numbers with the traces' errors taken
                # through the signed Hessian (CompiledExpansion._hessian_bound; about five
                # evaluations' time, where the exact route takes seconds or is refused)
                _, G, _, Gerr = comp.evaluate(mats, n, d, need_grad, sc, errs, refine=True)
                e1, e2 = chain_error(G, Gerr)
                ok = math.hypot(e1, e2) <= RTOL * scale
        if ok:
            if not need_grad:
                return Certified(value, err, route), None, None
            return Certified(value, err, route, (e1, e2)), g1, g2
        rel = err / abs(value) if value else math.inf
        if need_grad and value_ok:  # the value passed, the gradient did not
            tried.append(f"{route}: relative bound {rel:.1e}, the gradient's {math.hypot(e1, e2) / scale:.1e}")
        else:
            tried.append(f"{route}: relative bound {rel:.1e}")
        if better:
            best = ((Certified(value, err, route, (e1, e2)), g1, g2) if need_grad
                    else (Certified(value, err, route), None, None))
    if not fallback:
        return best
    return exact(tried)


#: 2^53 times the smallest normal float: a float route's value must be above it (or zero), so that
#: its bound of u |f| and the bound's own arithmetic stay in the normal range.
SAFE_MIN = NORMAL_MIN / U_ROUND


def _normal_letters(mats, errs):
    """The letters with every subnormal entry replaced by zero, its magnitude added to the entry's
    error bound, and 2^-1074 added to every bound: the running bounds' relative model of
    rounding needs normal operands, and a letter formed by a product that underflowed (u u^T
    sigma_x at u = 1e-200 is zero in float) is off by up to that much absolutely."""
    mats = np.asarray(mats, dtype=float)
    errs = np.zeros_like(mats) if errs is None else np.asarray(errs, dtype=float)
    tiny = np.abs(mats) < NORMAL_MIN
    return np.where(tiny, 0.0, mats), errs + np.where(tiny, np.abs(mats), 0.0) + 2.0**-1074


def _chain(G, sx, u, d):
    grad_A = sx @ (G[_B] - G[_E]).T + (G[_BT] - G[_ET]) @ sx
    grad_u = np.zeros(d) if u is None else G[_U] @ sx @ u + sx @ G[_U].T @ u
    return grad_A, grad_u


def _chain_error(G, Gerr, sx, u, d):
    """Frobenius bounds on the errors of (grad_A, grad_u) from the letter adjoints' bounds."""
    ax = np.abs(sx)
    g = lambda c: Gerr[c] + gamma(d + 3) * np.abs(G[c])  # noqa: E731
    eA = ax @ (g(_B) + g(_E)).T + (g(_BT) + g(_ET)) @ ax
    if u is None:
        return float(np.linalg.norm(eA)), 0.0
    au = np.abs(u)
    # grad_u: two products of inner dimension d each, then one addition
    gu = Gerr[_U] + gamma(2 * d + 2) * np.abs(G[_U])
    eu = gu @ ax @ au + ax @ gu.T @ au
    return float(np.linalg.norm(eA)), float(np.linalg.norm(eu))


def _exact_fallback(task, A, loops, u, need_grad, tried, call=None):
    """The loss (and gradient) of the float inputs in exact rationals, rounded once; call: the
    public function that fell back (exact_evaluation's warning), None when the exact route was
    asked for."""
    d = task.d
    fr = lambda M: np.vectorize(Fraction, otypes=[object])(np.asarray(M, dtype=float))  # noqa: E731
    mats = _letters(fr(A), None if u is None else fr(u), fr(task.sigma_x), fr(task.sigma_w), d, Fraction(1))
    parts, scales = _parts_needed(task.n, Fraction(float(task.noise)), u)
    sxe, ue = fr(task.sigma_x), None if u is None else fr(u)
    return exact_evaluation(_compiled(loops, parts), mats, task.n, d, scales, need_grad,
                            lambda G: _chain(G, sxe, ue, d), tried, "loops", f"loops = {loops}", "or fewer loops", call)


def exact_evaluation(comp, mats, n, d, scales, need_grad, chain, tried, name, where, advice, call=None):
    """The exact-rational route: `comp` evaluated on the exact letters `mats`, the value
    rounded once, the gradients chain(G) rounded once each (a Certified with error and
    grad_error of one rounding). Refused (ValueError naming `name`, stating `where` and the
    float routes `tried`) above EXACT_FALLBACK_LIMIT rational operations (terms x d^3); above
    EXACT_FALLBACK_WARN a RuntimeWarning naming `call` (the public function that fell back; None:
    the exact route was asked for, no warning) says why the call is slow."""
    cost = len(comp) * d**3
    at = f"at {where}, d = {d}, n = {V.number_text(n)} no float route reaches relative accuracy {RTOL:g}"
    if cost > EXACT_FALLBACK_LIMIT:
        raise ValueError(
            f"{name}: {at} ({'; '.join(tried)}) and exact evaluation would cost about {cost:.1e} rational "
            f"operations (limit {EXACT_FALLBACK_LIMIT:.0e}); use exact=True with rational inputs, {advice}"
        )
    if call is not None and cost > EXACT_FALLBACK_WARN:
        # the per-route bounds are left out so that the text, and the default filter's
        # once-per-location display, does not change from one evaluation to the next
        warnings.warn(f"{call}: {at}; falling back to exact rational arithmetic, about {cost:.1e} rational "
                      f"operations (0.4 to 4 CPU-seconds per million measured)", RuntimeWarning, stacklevel=_caller_level())
    value, G = comp.value_and_grad_exact(mats, n, d, scales=scales, need_grad=need_grad)
    # one rounding of the exact value, its error computed exactly (u |f| is not a bound where
    # the value is subnormal or underflows to zero)
    f = Certified(_float_or_inf(value), rounding_error(value, _float_or_inf(value)), "exact")
    if not need_grad:
        return f, None, None
    G = {c: np.vectorize(lambda x: x, otypes=[object])(g) for c, g in G.items()}
    e1, e2 = (np.asarray(g, dtype=object) for g in chain(G))
    g1, g2 = (np.array([_float_or_inf(x) for x in e.ravel()]).reshape(e.shape) for e in (e1, e2))
    f.grad_error = (rounding_error(e1, g1), rounding_error(e2, g2))
    return f, g1, g2


def _float_or_inf(x) -> float:
    """float(x), or +-inf where x is beyond the float range (float() raises OverflowError)."""
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


def _up(x: Fraction) -> float:
    """The least float >= the non-negative rational x."""
    v = float(x)
    return v if Fraction(v) >= x else math.nextafter(v, math.inf)


def rounding_error(exact, rounded) -> float:
    """A float bound, rounded up, on |rounded - exact| for an exact number, or on the Frobenius
    norm of the difference for arrays: computed in exact rationals (the exact route's one
    rounding, including where the result is subnormal or underflows to zero)."""
    ex, ro = np.ravel(np.asarray(exact, dtype=object)), np.ravel(np.asarray(rounded, dtype=float))
    if ex.shape != ro.shape:
        raise ValueError(f"rounded: expected {ex.size} numbers, one per exact number, got {ro.size}")
    if not np.all(np.isfinite(ro)):
        return math.inf
    diffs = [abs(Fraction(float(r)) - Fraction(x)) for x, r in zip(ex, ro)]
    m = max(diffs, default=Fraction(0))
    if m == 0:
        return 0.0
    # the norm as m sqrt(sum (e / m)^2), so that no square underflows
    s = sum((e / m) ** 2 for e in diffs)
    try:
        return math.nextafter(_up(m) * math.nextafter(math.sqrt(_up(s)), math.inf), math.inf)
    except OverflowError:  # a difference beyond the float range
        return math.inf


def _caller_level() -> int:
    """The warnings.warn stacklevel, for its caller, of the first frame outside this package
    (the public call is reached through different depths of private helpers)."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _exact_loss(task, A, loops, u):
    sx, sw, noise = exact_task(task)
    A = exact_matrix("A", A)
    u = None if u is None else exact_matrix("u", u)
    mats = _letters(A, u, sx, sw, task.d, Fraction(1))
    parts, scales = _parts_needed(task.n, noise, u)
    return _compiled(loops, parts).value_exact(mats, task.n, task.d, scales=scales)


def exact_task(task):
    """(sigma_x, sigma_w, noise) of a task in exact rationals for exact=True (TypeError naming
    the parameter for a non-integer float)."""
    sx = exact_matrix("sigma_x", np.asarray(task.sigma_x))
    sw = exact_matrix("sigma_w", np.asarray(task.sigma_w))
    noise = task.noise
    if isinstance(noise, float):
        if not noise.is_integer():
            raise TypeError("noise: exact=True needs a rational noise variance (use fractions.Fraction)")
        noise = Fraction(int(noise))
    return sx, sw, noise
