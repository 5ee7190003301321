"""The population loss of the untied multi-layer sparse model, exactly, and its hand-derived gradient.

Layer l (l = 1 first) has Q_l = [[A_l, 0], [0, 0]], P_l = [[0, 0], [u_l^T, 1]]; the data, prompt,
mask, prediction and loss are those of docs/conventions.md. By docs/derivations.md, "1.3
Multi-layer version", the model runs w_{l+1} = w_l + B_l (s + S u_l - S w_l), B_l = A_l^T, and
(docs/derivations.md, "8. The untied multi-layer loss") with the whitened letters
B_l = Rx A_l^T Rx, W = Rx sigma_w Rx, U_lm = Rx u_l u_m^T Rx, H_l = I - B_l S,
P = H_L ... H_1 and P_{>l} = H_L ... H_{l+1}:

  f(A_1..A_L, u_1..u_L) = E tr(P W P^T)                                   (main part)
      + sum_{l, m} E tr(P_{>l} B_l S U_lm S B_m^T P_{>m}^T)                (u part)
      + (noise / n) E tr(N S N^T),   N = sum_l P_{>l} B_l                   (noise part).

Each part is a sum of trace words in S and the letters B_l, B_l^T, W, U_lm (U_ml the transpose
of U_lm), which the engine (`looptheory.expectations`, which knows words, not models) turns
into exact polynomials in 1/n; the n^0 part of the main term is the single word
tr(E_L ... E_1 W E_1^T ... E_L^T), E_l = I - B_l, and the centred form (H_l = E_l - D + E_l D,
D = S - I) serves near the optimum at large n (layers <= CENTRED_MAX_LAYERS). The raw letters
are M_{B_l} = A_l^T sigma_x, M_{Bt_l} = A_l sigma_x, M_{E_l} = I - A_l^T sigma_x,
M_{Et_l} = I - A_l sigma_x, M_W = sigma_w sigma_x, M_{U_lm} = u_l u_m^T sigma_x (no square
root: docs/derivations.md, "2.5 No square root in exact mode"), and the chain rule gives

  grad_{A_l} f = sigma_x (G_{B_l} - G_{E_l})^T + (G_{Bt_l} - G_{Et_l}) sigma_x,
  grad_{u_l} f = sum_m G_{U_lm} sigma_x u_m + sigma_x G_{U_ml}^T u_m,        G_X = df/dM_X.

The expansions for 1 to MAX_LAYERS layers ship as evaluation layouts
(looptheory/data/multilayer_L{layers}_{form}.npz, built by `python scripts/build_expansions.py --multilayer`).
"""

from __future__ import annotations

import itertools
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

from . import _validate as V
from .compensated import U as U_ROUND
from .compensated import gamma, product
from .expectations import Alphabet, Engine, Expansion
from .layout import CompiledExpansion, build_arrays, select_arrays
from .loss import (
    COMPLEX_STEP,
    DATA_DIR,
    LAYOUT_PARTS,
    certified_evaluation,
    check_layout_memory,
    exact_evaluation,
    exact_matrix,
    exact_task,
    inf_on_overflow,
    load_layout,
)
from .task import Task

__all__ = ["MAX_LAYERS", "CENTRED_MAX_LAYERS", "Letters", "build_multilayer_part", "multilayer_population_loss",
           "multilayer_population_loss_grad", "multilayer_loss_grad_uncertified", "multilayer_loss_hvp", "multilayer_float_routes"]

#: The most layers the shipped expansions cover (4: about 1 M terms, 30 CPU-s and 0.9 GB to build).
MAX_LAYERS = 4
#: The centred main part ships up to this many layers (at 4 it has 1.7 M terms and takes 3 minutes and
#: 2.6 GB to build; the S form and the exact route serve there).
CENTRED_MAX_LAYERS = 3


@dataclass(frozen=True)
class Letters:
    """The letter codes of the L-layer model: S (0; D in the centred form), B_l, Bt_l, E_l, Et_l
    (l = 1..L), W, and U_lm for every pair (l, m); Bt_l is the transpose of B_l, Et_l of E_l and
    U_ml of U_lm."""

    layers: int

    def B(self, l):
        return l

    def Bt(self, l):
        return self.layers + l

    def E(self, l):
        return 2 * self.layers + l

    def Et(self, l):
        return 3 * self.layers + l

    @property
    def W(self):
        return 4 * self.layers + 1

    def U(self, l, m):
        return 4 * self.layers + 2 + (l - 1) * self.layers + (m - 1)

    @property
    def count(self):
        return 4 * self.layers + 2 + self.layers**2

    def alphabet(self, centred: bool = False) -> Alphabet:
        L = self.layers
        r = range(1, L + 1)
        names = ["D" if centred else "S"] + [f"B{l}" for l in r] + [f"Bt{l}" for l in r] + [f"E{l}" for l in r]
        names += [f"Et{l}" for l in r] + ["W"] + [f"U{l}{m}" for l in r for m in r]
        T = list(range(self.count))
        for l in r:
            T[self.B(l)], T[self.Bt(l)], T[self.E(l)], T[self.Et(l)] = self.Bt(l), self.B(l), self.Et(l), self.E(l)
            for m in r:
                T[self.U(l, m)] = self.U(m, l)
        return Alphabet(tuple(names), tuple(T), 0)

    def grad_letters(self) -> tuple:
        L = self.layers
        r = range(1, L + 1)
        return tuple(c for l in r for c in (self.B(l), self.Bt(l), self.E(l), self.Et(l))) + tuple(
            self.U(l, m) for l in r for m in r)


# --- the expansions ------------------------------------------------------------------------------


def _layers_text(L):
    """'1 layer', '3 layers': the layer count in messages."""
    return f"{L} layer{'' if L == 1 else 's'}"


def _products(letters, layers, factors):
    """H_{max} ... H_{min} over `layers` (highest first) as [(sign, word)], each H_l written as
    the sum of the words factors(l) (with their signs): the sum over every choice of one word
    per layer."""
    out = []
    for choice in itertools.product(*(factors(l) for l in sorted(layers, reverse=True))):
        sign, word = 1, ()
        for s, w in choice:
            sign *= s
            word += w
        out.append((sign, word))
    return out


def _sandwich(alphabet, left, middle, right):
    """sum over pairs of tr(Y middle Z^T) for Y in left, Z in right, grouped by word."""
    T = alphabet.transpose
    out = defaultdict(int)
    for c1, w1 in left:
        for c2, w2 in right:
            out[w1 + middle + tuple(T[c] for c in reversed(w2))] += c1 * c2
    return [(c, [w]) for w, c in out.items() if c]


def build_multilayer_part(layers: int, part: str) -> Expansion:
    """One part of the untied loss's expansion, built with the engine (module docstring):

    main:    E tr(P W P^T) without its n^0 part (the word of `main0`);
    u:       sum_{l,m} E tr(P_{>l} B_l S U_lm S B_m^T P_{>m}^T);
    noise:   (1/n) E tr(N S N^T), N = sum_l P_{>l} B_l (multiply by the noise variance);
    centred: E tr(P W P^T) in the centred letters, H_l = E_l - D + E_l D (n^0 part included).
    """
    layers = V.positive_int("layers", layers)
    K = Letters(layers)
    al = K.alphabet(centred=part == "centred")
    S, W = 0, K.W
    steps = lambda l: [(1, ()), (-1, (K.B(l), S))]  # noqa: E731  H_l = I - B_l S
    every = range(1, layers + 1)
    if part == "main":
        P = _products(K, every, steps)
        full = Engine(al).expect(_sandwich(al, P, (W,), P), hint=W)
        return Expansion(al, {k: v for k, v in full.items() if k[0] > 0})
    if part == "u":
        eng = Engine(al)
        total = defaultdict(int)
        V_ = {l: [(c, w + (K.B(l), S)) for c, w in _products(K, range(l + 1, layers + 1), steps)] for l in every}
        for l in every:
            for m in every:
                for k, v in eng.expect(_sandwich(al, V_[l], (K.U(l, m),), V_[m]), hint=K.U(l, m)).items():
                    total[k] += v
        return Expansion(al, {k: v for k, v in total.items() if v})
    if part == "noise":
        N = [(c, w + (K.B(l),)) for l in every for c, w in _products(K, range(l + 1, layers + 1), steps)]
        e = Engine(al).expect(_sandwich(al, N, (S,), N))
        return Expansion(al, {(p + 1, ws): c for (p, ws), c in e.items()})
    if part == "centred":
        Y = _products(K, every, lambda l: [(1, (K.E(l),)), (-1, (S,)), (1, (K.E(l), S))])
        return Engine(al, centred=True).expect(_sandwich(al, Y, (W,), Y), hint=W)
    raise ValueError(f"part: expected one of main, u, noise, centred, got {part!r}")


def main0(layers: int) -> Expansion:
    """The n^0 part of the main term, tr(E_L ... E_1 W E_1^T ... E_L^T), as a one-word expansion."""
    K = Letters(layers)
    word = tuple(K.E(l) for l in range(layers, 0, -1)) + (K.W,) + tuple(K.Et(l) for l in range(1, layers + 1))
    return Expansion(K.alphabet(), {(0, (word,)): 1})


def layout_path(layers: int, form: str) -> str:
    """The shipped evaluation layout of `form` ("S" or "centred") for this many layers."""
    return os.path.join(DATA_DIR, f"multilayer_L{layers}_{form}.npz")


def build_layout(layers: int, form: str) -> dict:
    """The evaluation layout of all of a form's parts (loss.LAYOUT_PARTS) as arrays, built with
    the engine (`python scripts/build_expansions.py --multilayer` ships it)."""
    exps = [main0(layers) if p == "main0" else build_multilayer_part(layers, p) for p in LAYOUT_PARTS[form]]
    return build_arrays(exps, LAYOUT_PARTS[form])


@lru_cache(maxsize=None)
def _layout_arrays(layers: int, form: str) -> dict:
    return load_layout(layout_path(layers, form), Letters(layers).alphabet(centred=form == "centred"), LAYOUT_PARTS[form],
                       lambda: build_layout(layers, form))


@lru_cache(maxsize=None)
def compiled(layers: int, parts: tuple) -> CompiledExpansion:
    """The layout of the requested parts ("main0" the n^0 part of the main term; "centred" the
    centred main part): the shipped layout of their form, restricted to them."""
    form = "centred" if "centred" in parts else "S"
    full = LAYOUT_PARTS[form]
    if len(set(parts)) != len(parts) or not all(p in full for p in parts):
        raise ValueError(f"parts: expected distinct parts of {full}, got {parts}")
    arrays = _layout_arrays(layers, form)
    if tuple(parts) != full:
        arrays = select_arrays(arrays, [full.index(p) for p in parts])
    return CompiledExpansion.from_arrays(arrays, Letters(layers).grad_letters())


# --- inputs ------------------------------------------------------------------------------------

# Trie nodes of the shipped layouts (`compiled(layers, parts).n_nodes`), the most any route needs
# without and with the u part (tests/test_multilayer.py checks them against the layouts).
TRIE_NODES = {1: (9, 11), 2: (47, 71), 3: (408, 672), 4: (3676, 6378)}


def _check(task, As, us, exact, grad=False):
    """Validated (task, As as an (L, d, d) array, us as an (L, d) array or None)."""
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
    exact = V.boolean("exact", exact)
    d = task.d
    if isinstance(As, (str, bytes)) or As is None:
        raise TypeError(f"As: expected L matrices of shape ({d}, {d}), one per layer (1 <= L <= {MAX_LAYERS})")
    try:
        nd = np.ndim(As)
    except ValueError:  # numpy refuses a ragged list without naming the parameter
        raise ValueError(f"As: expected L matrices of shape ({d}, {d}), one per layer; got matrices of different "
                         "shapes") from None
    if nd == 1 and len(As) == 0:
        raise ValueError(f"As: the exact untied engine supports 1 to MAX_LAYERS = {MAX_LAYERS} layers, got none")
    if nd == 2:
        raise ValueError(f"As: expected L matrices of shape ({d}, {d}), an (L, {d}, {d}) array, got one matrix of "
                         f"shape {np.shape(As)} (for one layer pass [A])")
    As = V.as_real_array("As", As, 3, allow_exact=exact)
    L = As.shape[0]
    if not 1 <= L <= MAX_LAYERS:
        raise ValueError(f"As: the exact untied engine supports 1 to MAX_LAYERS = {MAX_LAYERS} layers, got {L} "
                         "(monte_carlo_multilayer_loss samples any number of layers)")
    if As.shape[1:] != (d, d):
        raise ValueError(f"As: expected shape (L, d, d) = ({L}, {d}, {d}), one d x d matrix per layer, got {As.shape}")
    if us is not None:
        us = V.as_real_array("us", us, 2, allow_exact=exact)
        if us.shape != (L, d):
            raise ValueError(f"us: expected shape (L, d) = ({L}, {d}), one vector per layer of As, got {us.shape}")
    check_layout_memory(d, TRIE_NODES[L][us is not None], exact, grad, "multilayer_population_loss", _layers_text(L))
    return task, As, us


def _parts(n, noise, us):
    """The parts that can be non-zero and their weights (the noise part's is the variance)."""
    u = us is not None and any(x != 0 for x in us.ravel())
    noisy = noise != 0 and not V.is_infinite(n)  # math.isinf(10**400) raises OverflowError
    return ("main0", "main") + ("u",) * u + ("noise",) * noisy, [1, 1] + [1] * u + [noise] * noisy


# --- letters -----------------------------------------------------------------------------------


def _exact_letters(K, As, us, sx, sw, d):
    """Raw letter matrices M_X = X_raw sigma_x in exact rationals (object arrays), by code."""
    return _letters(K, As, us, sx, sw, np.array([[Fraction(int(i == j)) for j in range(d)] for i in range(d)], dtype=object))


def _letters(K, As, us, sx, sw, eye):
    """Raw letter matrices M_X = X_raw sigma_x by code, each product formed directly in the
    inputs' arithmetic (exact rationals, or the complex step's complex floats); eye: the
    identity in that arithmetic."""
    zero = eye * 0
    mats = [eye] + [zero] * (K.count - 1)
    for l in range(1, K.layers + 1):
        A = As[l - 1]
        mats[K.B(l)], mats[K.Bt(l)] = A.T.dot(sx), A.dot(sx)
        mats[K.E(l)], mats[K.Et(l)] = eye - mats[K.B(l)], eye - mats[K.Bt(l)]
        for m in range(1, K.layers + 1):
            if us is not None:
                mats[K.U(l, m)] = np.outer(us[l - 1], us[m - 1]).dot(sx)
    mats[K.W] = sw.dot(sx)
    return mats


def _float_letters(K, As, us, sx, sw, d):
    """Letter matrices by compensated products (one rounding each) and their entrywise error
    bounds: one stacked product A_l^T sigma_x (for B_l and E_l = I - A_l^T sigma_x), A_l sigma_x
    (Bt_l, Et_l), sigma_w sigma_x and u_m^T sigma_x; U_lm = u_l (sigma_x u_m)^T."""
    L = K.layers
    eye, zero = np.eye(d), np.zeros((d, d))
    AT = [A.T for A in As]
    rows = AT + AT + list(As) + list(As) + [sw] + ([] if us is None else [us])
    X = np.concatenate(rows)
    C = np.concatenate([zero] * L + [eye] * L + [zero] * L + [eye] * L + [zero] + ([] if us is None else [np.zeros((L, d))]))
    sign = np.ones(len(X))
    sign[L * d:2 * L * d] = sign[3 * L * d:4 * L * d] = -1.0
    M, err = product(X, sx, C, sign)
    mats = np.zeros((K.count, d, d))
    errs = np.zeros((K.count, d, d))
    mats[0] = eye
    for k, code in enumerate([K.B(l) for l in range(1, L + 1)] + [K.E(l) for l in range(1, L + 1)]
                             + [K.Bt(l) for l in range(1, L + 1)] + [K.Et(l) for l in range(1, L + 1)] + [K.W]):
        mats[code], errs[code] = M[k * d:(k + 1) * d], err[k * d:(k + 1) * d]
    if us is not None:
        v, ev = M[(4 * L + 1) * d:], err[(4 * L + 1) * d:]
        for l in range(1, L + 1):
            for m in range(1, L + 1):
                c = K.U(l, m)
                mats[c] = np.outer(us[l - 1], v[m - 1])
                errs[c] = np.abs(np.outer(us[l - 1], ev[m - 1])) + U_ROUND * np.abs(mats[c])
    return mats, errs


def _chain(K, G, sx, us, d):
    """(grad_As (L, d, d), grad_us (L, d)) from the letter adjoints (module docstring); works on
    float and on exact (object) arrays."""
    L = K.layers
    gA = np.stack([sx.dot((G[K.B(l)] - G[K.E(l)]).T) + (G[K.Bt(l)] - G[K.Et(l)]).dot(sx) for l in range(1, L + 1)])
    if us is None:
        return gA, np.zeros((L, d))
    gu = np.stack([sum(G[K.U(l, m)].dot(sx).dot(us[m - 1]) + sx.dot(G[K.U(m, l)].T).dot(us[m - 1])
                       for m in range(1, L + 1)) for l in range(1, L + 1)])
    return gA, gu


def _chain_error(K, G, Gerr, sx, us, d):
    """Frobenius bounds on the errors of (grad_As, grad_us) from the adjoints' bounds."""
    ax = np.abs(sx)
    L = K.layers
    g = lambda c: Gerr[c] + gamma(d + 3) * np.abs(G[c])  # noqa: E731
    eA = sum(float(np.linalg.norm(ax @ (g(K.B(l)) + g(K.E(l))).T + (g(K.Bt(l)) + g(K.Et(l))) @ ax)) ** 2
             for l in range(1, L + 1))
    if us is None:
        return math.sqrt(eA), 0.0
    au = np.abs(us)
    # grad_u of a layer: 2 L terms of two products of inner dimension d each, summed
    gu = lambda c: Gerr[c] + gamma(2 * d + 2 * L + 1) * np.abs(G[c])  # noqa: E731
    eu = sum(float(np.linalg.norm(sum(gu(K.U(l, m)) @ ax @ au[m - 1] + ax @ gu(K.U(m, l)).T @ au[m - 1]
                                      for m in range(1, L + 1)))) ** 2 for l in range(1, L + 1))
    return math.sqrt(eA), math.sqrt(eu)


# --- the loss ----------------------------------------------------------------------------------


def multilayer_population_loss(task: Task, As, us=None, exact: bool = False):
    """The exact population loss f = E (yhat - y_q)^2 of the untied L-layer sparse model.

    Layer l has Q_l = [[A_l, 0], [0, 0]], P_l = [[0, 0], [u_l^T, 1]] (docs/conventions.md, "The
    multi-layer model"); the three-part formula is in the module docstring and its derivation
    in docs/derivations.md, "8. The untied multi-layer loss". With every A_l = A and u_l = u it
    is `population_loss(task, A, L, u)`.

    As: L real d x d matrices (an (L, d, d) array or a list), 1 <= L <= MAX_LAYERS = 4, layer 1
    first; us: None (all u_l = 0) or L vectors of length d. n may be math.inf (only the n^0
    parts remain). exact=True needs rational inputs and returns a fractions.Fraction. The float
    result is a `Certified` float within RTOL = 1e-8 relative of the exact loss of the float
    inputs (routes: the expansion in S, its centred form for L <= CENTRED_MAX_LAYERS = 3, exact
    rationals; docs/engine.md, "9. The untied multi-layer model"). Memory is checked up front
    against the memory cap as in `population_loss`.
    """
    task, As, us = _check(task, As, us, exact)
    if exact:
        return _exact_loss(task, As, us)
    with np.errstate(over="ignore", invalid="ignore"):
        value = _certified(task, As, us, need_grad=False)[0]
    return inf_on_overflow(value, "multilayer_population_loss")


def multilayer_population_loss_grad(task: Task, As, us=None, fallback: bool = True):
    """(f, grad_As of shape (L, d, d), grad_us of shape (L, d) or None when us is None).

    The gradient is derived by hand (module docstring), vouched for to RTOL relative to
    max(||grad||, f / ||E||_F), E the stacked I - A_l^T sigma_x; f is a `Certified` float whose
    grad_error bounds the Frobenius norms of the gradients' errors. fallback=False skips the
    exact-rational route and returns the float route with the smallest bound (for an
    optimiser's inner steps). Inputs as in `multilayer_population_loss`.
    """
    task, As, us = _check(task, As, us, exact=False, grad=True)
    fallback = V.boolean("fallback", fallback)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported once, below
        f, gA, gu = _certified(task, As, us, need_grad=True, fallback=fallback)
    return inf_on_overflow(f, "multilayer_population_loss_grad"), gA, (None if us is None else gu)


def multilayer_loss_grad_uncertified(task: Task, As, us=None, route: str = "expansion"):
    """(f, grad_As, grad_us or None) from one float route (by default the expansion in S) in
    plain float, without the running error bounds, the other routes or the exact fallback: 3 to
    6 times faster than `multilayer_population_loss_grad` at 4 layers, and NOT certified (f is a
    plain float whose accuracy nothing vouches for; near the optimum at large n the expansion in
    S cancels large terms). For an optimiser's inner steps and the flow's intermediate stages
    only; `optimal_multilayer` and `multilayer_gradient_flow` certify the points they report.
    route: one of multilayer_float_routes(L)."""
    task, As, us = _check(task, As, us, exact=False, grad=True)
    d, L = task.d, As.shape[0]
    K = Letters(L)
    sx = np.asarray(task.sigma_x, dtype=float)
    mats, _ = _float_letters(K, np.asarray(As, dtype=float), us, sx, np.asarray(task.sigma_w, dtype=float), d)
    parts, scales = _parts(task.n, float(task.noise), us)
    comp, scales = _route(L, parts, scales, route)
    with np.errstate(over="ignore", invalid="ignore"):
        value, G = comp.value_and_grad(mats, task.n, d, True, scales)
    gA, gu = _chain(K, G, sx, us, d)
    return value, gA, (None if us is None else gu)


def multilayer_loss_hvp(task: Task, As, dAs, us=None, dus=None, route: str = "expansion"):
    """The Hessian of the untied loss applied to (dAs, dus): (H_AA dAs + H_Au dus, H_uA dAs +
    H_uu dus), by a complex step through the gradient of one float route, as
    `loss.population_loss_hvp` does for the looped loss:

      H v = Im grad f(z + i h v) / h,   h = loss.COMPLEX_STEP / |v|,

    exact to rounding (no difference is taken; the evaluation is a polynomial in the letters,
    whose products are formed directly in complex arithmetic). Without a bound: for the Newton
    steps of `optimal_multilayer`, whose result is checked by the gradient. As, us as in
    `multilayer_population_loss` (us None: all u_l = 0); dAs of the shape of As, dus None
    (0) or of shape (L, d); route: "expansion" or, up to CENTRED_MAX_LAYERS, "centred".
    Returns (HA of shape (L, d, d), Hu of shape (L, d))."""
    task, As, us = _check(task, As, us, exact=False, grad=True)
    d, L = task.d, As.shape[0]
    dAs = V.as_real_array("dAs", dAs, 3, allow_exact=False)
    if dAs.shape != As.shape:
        raise ValueError(f"dAs: expected the shape of As, {As.shape}, got {dAs.shape}")
    if dus is not None:
        dus = V.as_real_array("dus", dus, 2, allow_exact=False)
        if dus.shape != (L, d):
            raise ValueError(f"dus: expected shape (L, d) = ({L}, {d}), got {dus.shape}")
        # a direction in u brings in the u part
        check_layout_memory(d, TRIE_NODES[L][True], False, True, "multilayer_loss_hvp", _layers_text(L))
    us = np.zeros((L, d)) if us is None else np.asarray(us, dtype=float)
    dus = np.zeros((L, d)) if dus is None else dus
    scale = math.hypot(np.linalg.norm(dAs), np.linalg.norm(dus))
    if scale == 0:
        return np.zeros((L, d, d)), np.zeros((L, d))
    h = COMPLEX_STEP / scale
    Ac, uc = np.asarray(As, dtype=float) + 1j * h * dAs, us + 1j * h * dus
    K = Letters(L)
    sx = np.asarray(task.sigma_x, dtype=float)
    mats = np.stack(_letters(K, Ac, uc, sx, np.asarray(task.sigma_w, dtype=float), np.eye(d)))
    parts, scales = _parts(task.n, float(task.noise), uc)
    comp, sc = _route(L, parts, scales, route)
    _, G = comp.value_and_grad(mats, task.n, d, True, sc)
    gA, gu = _chain(K, G, sx, uc, d)
    return gA.imag / h, gu.imag / h


def multilayer_float_routes(layers: int) -> tuple:
    """The float routes `multilayer_population_loss` tries with this many layers, in order:
    "expansion" (the expansion in S) and, for layers <= CENTRED_MAX_LAYERS, "centred"."""
    layers = V.positive_int("layers", layers)
    return ("expansion", "centred") if layers <= CENTRED_MAX_LAYERS else ("expansion",)


def _routes(L, parts, scales):
    yield "expansion", parts, scales
    if L <= CENTRED_MAX_LAYERS:
        yield "centred", ("centred",) + parts[2:], scales[1:]


def _route(L, parts, scales, route):
    """The layout and part weights of one float route (ValueError naming route otherwise)."""
    for name, ps, sc in _routes(L, parts, scales):
        if name == route:
            return compiled(L, ps), sc
    raise ValueError(f"route: expected one of {multilayer_float_routes(L)} at {_layers_text(L)}, got {route!r}")


def _certified(task, As, us, need_grad, fallback=True):
    d = task.d
    L = As.shape[0]
    K = Letters(L)
    sx = np.asarray(task.sigma_x, dtype=float)
    sw = np.asarray(task.sigma_w, dtype=float)
    As = np.asarray(As, dtype=float)
    uf = None if us is None else np.asarray(us, dtype=float)
    mats, errs = _float_letters(K, As, uf, sx, sw, d)
    parts, scales = _parts(task.n, float(task.noise), uf)
    e_norm = float(np.linalg.norm(mats[[K.E(l) for l in range(1, L + 1)]]))

    def exact(tried):
        fr = lambda M: np.vectorize(Fraction, otypes=[object])(np.asarray(M, dtype=float))  # noqa: E731
        sxe, ue = fr(sx), None if uf is None else fr(uf)
        mats_e = _exact_letters(K, fr(As), ue, sxe, fr(sw), d)
        ps, sc = _parts(task.n, Fraction(float(task.noise)), uf)
        return exact_evaluation(compiled(L, ps), mats_e, task.n, d, sc, need_grad, lambda G: _chain(K, G, sxe, ue, d),
                                tried, "As", _layers_text(L), "or fewer layers",
                                "multilayer_population_loss_grad" if need_grad else "multilayer_population_loss")

    return certified_evaluation(
        _routes(L, parts, scales), lambda ps: compiled(L, ps), mats, errs, task.n, d, need_grad, fallback,
        chain=lambda G: _chain(K, G, sx, uf, d), chain_error=lambda G, Gerr: _chain_error(K, G, Gerr, sx, uf, d),
        e_norm=e_norm, exact=exact)


def _exact_loss(task, As, us):
    sx, sw, noise = exact_task(task)
    As = exact_matrix("As", As)
    us = None if us is None else exact_matrix("us", us)
    K = Letters(As.shape[0])
    parts, scales = _parts(task.n, noise, us)
    return compiled(K.layers, parts).value_exact(_exact_letters(K, As, us, sx, sw, task.d), task.n, task.d, scales=scales)
