"""Expansions laid out for fast evaluation: the value, the gradient with respect to every letter
matrix, and rigorous running error bounds on both (docs/engine.md, sections 4, 5 and 8).

An expansion is a polynomial in traces of constant words, sum_m w_m prod_f tr(word_f). The
layout evaluates it in three stages.

1. Words as prefix x suffix. tr(w) is invariant under rotation, so each word is rotated to
   start with its rarest letter (W or U for the loss) and cut in two halves,
   tr(w) = tr(P Q) = sum(P * Q^T), P the first ceil(len/2) letters. Every distinct prefix P is
   a node of a trie, P_node = P_parent M_c; every distinct suffix Q too, stored transposed,
   R = Q^T = (M_c Q_child)^T = R_child M_c^T, so both halves are one trie over an extended
   alphabet (letter c and its matrix transpose, written c + L). At loops = 6 (all parts) that
   is 417 nodes where the unsplit trie of whole words had 12 433. The traces are Frobenius
   products of a prefix level with a suffix level, one dense GEMM per (prefix depth, suffix
   depth) block.
2. The polynomial. Each monomial is written x_m * Pi_j: one factor x_m (its rarest word) times
   the product Pi_j of the others, the "rest", a node of a second trie (4 052 rests at
   loops = 6 for 73 029 monomials). The sum over monomials and the adjoints are then sparse
   matrix products (scipy.sparse), with rows of at most _CHUNK monomials so that every sum has
   a known number of roundings.
3. Reverse mode. d tr(P Q)/dP = Q^T = R and d/dR = P; the adjoints flow back through both
   tries (G_parent += G_node M^T per letter, df/dM_c += P_parent^T G_node; for the suffix
   letters the transposes).

Running error analysis (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed.,
Sec. 3.5-3.6) gives every computed quantity x a bound e_x >= |x_exact - x| from the computed
values themselves. With u = 2^-53, gamma_k = k u / (1 - k u), A = |X|:
- node:   e(X M) <= (e_X + gamma_d A) (|M| + e_M) + (A 1) colmax(e_M)   (entrywise; the last
          term is a rank-one upper bound of A e_M, one GEMM per node instead of two);
- trace:  e_t <= <e_P, |R| + e_R> + <A_P, e_R + gamma_K (|R| + e_R)>, K = d^2 for the flat
          Frobenius GEMM (d <= _FLAT_D), else 2d (d GEMMs of inner dimension d, then a sum);
- monomial: |prod t_exact - prod t| <= r prod (|t| + e_t), r = sum e_t / (|t| + e_t), plus
          gamma_N |w| prod(|t| + e_t) for the N roundings on its path and the weight's own
          error;
- adjoints: the same rules through the transposed products, with the additions counted.
The bounds are computed in float; their own relative error is far below 1e-12 and is covered
by a factor 1.01.
"""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from fractions import Fraction

import numpy as np

from .compensated import U as _U
from .compensated import gamma

#: Monomials per row of the sparse sums (a sum of at most this many products per row).
_CHUNK = 8
#: Up to this d the traces are one Frobenius GEMM with inner dimension d^2 (error gamma_{d^2});
#: above it d GEMMs of inner dimension d and a sum (error gamma_{2d}).
_FLAT_D = 16
#: Up to this d a trie level is one stacked matmul over all its letters (gathered letter
#: matrices); above it one GEMM per (level, letter) run.
_STACK_D = 24
#: Above this d the error bounds of the traces and of the adjoints bound a node's own error
#: matrix by its row or column maxima (a rank-one upper bound, d times fewer flops than the
#: full product); up to it they use the full products (fewer, larger calls).
_RANK1_D = 0
#: Weight tables kept per layout, keyed by (n, d, scales).
_WEIGHT_CACHE = 8
#: The version of the array layout (`to_arrays`, the shipped .npz files).
LAYOUT_FORMAT = 1


# --- building --------------------------------------------------------------------------------


def _trie(strings):
    """The prefix trie of `strings` (tuples of ints), node 0 the empty string, ordered by depth,
    then by last letter, then by parent: (parent, letter, level offsets, {string: node})."""
    by_depth = defaultdict(set)
    for s in strings:
        for k in range(1, len(s) + 1):
            by_depth[k].add(s[:k])
    index = {(): 0}
    parent, letter, offsets = [0], [-1], [0, 1]
    for k in range(1, max(by_depth, default=0) + 1):
        for s in sorted(by_depth[k], key=lambda s: (s[-1], index[s[:-1]])):
            index[s] = len(parent)
            parent.append(index[s[:-1]])
            letter.append(s[-1])
        offsets.append(len(parent))
    return np.array(parent, dtype=np.int64), np.array(letter, dtype=np.int64), np.array(offsets, dtype=np.int64), index


def _split_word(w, rank):
    """(prefix, suffix) with prefix + suffix a rotation of w starting with its rarest letter
    (lowest rank), the least such rotation, cut after ceil(len / 2) letters."""
    k = len(w)
    first = min(w, key=rank.__getitem__)
    r = min(w[i:] + w[:i] for i in range(k) if w[i] == first)
    h = (k + 1) // 2
    return r[:h], r[h:]


def build_arrays(expansions, parts=None) -> dict:
    """The layout of `expansions` (one per part) as a dict of arrays (see CompiledExpansion)."""
    al = expansions[0].alphabet
    L = len(al.names)
    seen = {}
    for e in expansions:
        for _, ws in e:
            for w in ws:
                if w:
                    seen.setdefault(w, None)
    words = sorted(seen, key=lambda w: (len(w), w))
    nw = len(words)
    widx = {w: i for i, w in enumerate(words)}
    # stage 1: the split, one trie over letters c (prefixes) and c + L (reversed suffixes, transposed)
    count = defaultdict(int)
    for w in words:
        for c in w:
            count[c] += 1
    rank = {c: (count[c], c) for c in count}
    halves = [_split_word(w, rank) for w in words]
    strings = [p for p, _ in halves] + [tuple(c + L for c in reversed(q)) for _, q in halves]
    parent, letter, offsets, index = _trie(strings)
    word_pre = np.array([index[p] for p, _ in halves], dtype=np.int64)
    word_suf = np.array([index[tuple(c + L for c in reversed(q))] for _, q in halves], dtype=np.int64)
    # stage 2: the polynomial
    coef, power, dpow, part, mono_of_term = [], [], [], [], []
    mono_id = {}
    for k, e in enumerate(expansions):
        for (p, ws), c in e.items():
            key = tuple(sorted(widx[w] for w in ws if w))
            m = mono_id.get(key)
            if m is None:
                m = mono_id[key] = len(mono_id)
            coef.append(c)
            power.append(p)
            dpow.append(sum(1 for w in ws if not w))
            part.append(k)
            mono_of_term.append(m)
    monos = list(mono_id)
    freq = defaultdict(int)
    for key in monos:
        for f in key:
            freq[f] += 1
    xs, rests = [], []
    for key in monos:
        if not key:
            xs.append(nw)
            rests.append(())
            continue
        x = min(key, key=lambda f: (freq[f], -f))
        rest = list(key)
        rest.remove(x)
        xs.append(x)
        rests.append(tuple(sorted(rest, key=lambda f: (-freq[f], f))))
    rparent, rx, roffsets, rindex = _trie(rests)
    leaf_x = np.array(xs, dtype=np.int64)
    leaf_j = np.array([rindex[r] for r in rests], dtype=np.int64)
    # monomials in (x, rest) order: the rows of the sparse sums are contiguous
    order = np.lexsort((leaf_j, leaf_x))
    new_id = np.empty(len(order), dtype=np.int64)
    new_id[order] = np.arange(len(order))
    for c in coef:
        if abs(c) >= 2**62:
            raise ValueError("expansion: a coefficient does not fit in 62 bits")
    maxlen = max((len(w) for w in words), default=0)
    wpad = np.full((nw, max(maxlen, 1)), -1, dtype=np.int16)
    for i, w in enumerate(words):
        wpad[i, : len(w)] = w
    # terms sorted by monomial (then part, power of 1/n, power of d): compact to store
    tm = new_id[np.array(mono_of_term, dtype=np.int64)] if coef else np.zeros(0, dtype=np.int64)
    tcols = [np.array(v, dtype=np.int64) for v in (coef, power, dpow, part)]
    torder = np.lexsort((tcols[2], tcols[1], tcols[3], tm))
    return {
        "format": np.array(LAYOUT_FORMAT),
        "names": np.array(al.names),
        "transpose": np.array(al.transpose, dtype=np.int64),
        "random": np.array(al.random),
        "parts": np.array(list(parts) if parts is not None else [str(k) for k in range(len(expansions))]),
        "words": wpad,
        "word_pre": word_pre,
        "word_suf": word_suf,
        "node_parent": parent,
        "node_letter": letter,
        "node_levels": offsets,
        "rest_parent": rparent,
        "rest_x": np.where(rx < 0, nw, rx),
        "rest_levels": roffsets,
        "leaf_x": leaf_x[order],
        "leaf_j": leaf_j[order],
        "term_mono": tm[torder],
        "term_coef": tcols[0][torder],
        "term_power": tcols[1][torder],
        "term_dpow": tcols[2][torder],
        "term_part": tcols[3][torder],
    }


#: Integer arrays of the layout and the dtype they are stored with.
_STORED = {"words": np.int16, "word_pre": np.int32, "word_suf": np.int32, "node_parent": np.int32,
           "node_letter": np.int16, "node_levels": np.int32, "rest_parent": np.int32, "rest_x": np.int32,
           "rest_levels": np.int32, "leaf_x": np.int32, "leaf_j": np.int32, "term_mono": np.int32,
           "term_coef": np.int64, "term_power": np.int8, "term_dpow": np.int8, "term_part": np.int8}


def save_arrays(path, arrays) -> None:
    """Write a layout as a compressed .npz (the integer arrays in their smallest safe dtype)."""
    out = {}
    for k, v in arrays.items():
        if k in _STORED:
            t = _STORED[k]
            v = np.asarray(v)
            if v.size and (v.min() < np.iinfo(t).min or v.max() > np.iinfo(t).max):
                raise ValueError(f"{k}: values do not fit in {np.dtype(t).name}")
            v = v.astype(t)
        out[k] = v
    np.savez_compressed(path, **out)


def load_arrays(path) -> dict:
    """Read a layout written by save_arrays (integer arrays widened to int64)."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    if int(out["format"]) != LAYOUT_FORMAT:
        raise ValueError(f"{path}: unknown layout format {int(out['format'])}")
    for k in _STORED:
        out[k] = out[k].astype(np.int64)
    return out


def select_arrays(arrays: dict, keep) -> dict:
    """The layout of the parts `keep` (indices into arrays["parts"], in the order wanted): the
    terms of those parts, and the monomials, words and trie nodes they use, renumbered in the
    same order (so every ordering the layout relies on still holds)."""
    keep = [int(k) for k in keep]
    part_map = np.full(len(arrays["parts"]), -1, dtype=np.int64)
    part_map[keep] = np.arange(len(keep))
    tmask = part_map[arrays["term_part"]] >= 0
    nm = len(arrays["leaf_x"])
    mmask = np.zeros(nm, dtype=bool)
    mmask[arrays["term_mono"][tmask]] = True
    nw = len(arrays["word_pre"])
    # rest nodes on the kept monomials' chains
    rparent, rx = arrays["rest_parent"], arrays["rest_x"]
    jmask = np.zeros(len(rparent), dtype=bool)
    jmask[arrays["leaf_j"][mmask]] = True
    jmask[0] = True
    for lo, hi in reversed(list(zip(arrays["rest_levels"][1:-1], arrays["rest_levels"][2:]))):
        sel = np.flatnonzero(jmask[lo:hi]) + lo
        jmask[rparent[sel]] = True
    wmask = np.zeros(nw + 1, dtype=bool)
    wmask[arrays["leaf_x"][mmask]] = True
    wmask[rx[jmask]] = True
    wmask = wmask[:nw]
    npar = arrays["node_parent"]
    nmask = np.zeros(len(npar), dtype=bool)
    nmask[arrays["word_pre"][wmask]] = True
    nmask[arrays["word_suf"][wmask]] = True
    nmask[0] = True
    levels = arrays["node_levels"]
    for lo, hi in reversed(list(zip(levels[1:-1], levels[2:]))):
        sel = np.flatnonzero(nmask[lo:hi]) + lo
        nmask[npar[sel]] = True

    def renum(mask):
        r = np.full(len(mask), -1, dtype=np.int64)
        r[mask] = np.arange(int(mask.sum()))
        return r

    wr = np.append(renum(wmask), int(wmask.sum()))  # the pad index nw -> new pad
    nr, jr, mr = renum(nmask), renum(jmask), renum(mmask)

    def offsets(old, mask):
        c = np.concatenate([[0], np.cumsum(mask)])
        new = c[old]
        # drop empty trailing levels
        while len(new) > 2 and new[-1] == new[-2]:
            new = new[:-1]
        return new

    out = dict(arrays)
    out["parts"] = arrays["parts"][keep]
    out["words"] = arrays["words"][wmask]
    out["word_pre"] = nr[arrays["word_pre"][wmask]]
    out["word_suf"] = nr[arrays["word_suf"][wmask]]
    out["node_parent"] = nr[npar[nmask]]
    out["node_letter"] = arrays["node_letter"][nmask]
    out["node_levels"] = offsets(levels, nmask)
    out["rest_parent"] = jr[rparent[jmask]]
    out["rest_x"] = wr[rx[jmask]]
    out["rest_levels"] = offsets(arrays["rest_levels"], jmask)
    out["leaf_x"] = wr[arrays["leaf_x"][mmask]]
    out["leaf_j"] = jr[arrays["leaf_j"][mmask]]
    out["term_mono"] = mr[arrays["term_mono"][tmask]]
    for k in ("term_coef", "term_power", "term_dpow"):
        out[k] = arrays[k][tmask]
    out["term_part"] = part_map[arrays["term_part"][tmask]]
    out["node_parent"][0] = 0
    out["rest_parent"][0] = 0
    return out


# --- the layout --------------------------------------------------------------------------------


def _max_rows(X):
    """Row maxima of each matrix of a stack (..., d, d): max over the last axis (a loop over
    columns: numpy's reduction over a short last axis is several times slower)."""
    m = X[..., 0].copy()
    for j in range(1, X.shape[-1]):
        np.maximum(m, X[..., j], out=m)
    return m


def _max_cols(X):
    """Column maxima of each matrix of a stack (..., d, d): max over the row axis."""
    m = X[..., 0, :].copy()
    for i in range(1, X.shape[-2]):
        np.maximum(m, X[..., i, :], out=m)
    return m


class _Level:
    """One depth of a trie: nodes lo:hi, their parents and letters, and the runs of one letter
    (contiguous; within a run every parent is distinct)."""

    __slots__ = ("lo", "hi", "par", "let", "runs", "run_starts")

    def __init__(self, lo, hi, par, let):
        self.lo, self.hi, self.par, self.let = lo, hi, par, let
        cuts = np.flatnonzero(np.diff(let)) + 1
        starts = np.concatenate([[0], cuts]).astype(np.int64)
        ends = np.concatenate([cuts, [len(let)]]).astype(np.int64)
        self.runs = [(int(let[a]), int(a), int(b), par[a:b]) for a, b in zip(starts, ends)]
        self.run_starts = starts


class CompiledExpansion:
    """Expansions laid out for fast evaluation of their (weighted) sum and of its gradient with
    respect to each constant letter matrix, with rigorous running error bounds
    (`looptheory.layout` module docstring; docs/engine.md, sections 4 and 5).

    Several expansions (the parts of a loss) share one layout; each evaluation weighs part k
    by scales[k]. Factors tr(()) = d are folded into a power of d. Each trace word is computed
    as tr(P Q) from a prefix P and a suffix Q, each a node of one trie; the gradient is
    reverse mode through the same trie (for tr(M_1 ... M_k), d/dM_i is the transposed rest of
    the word, organised so that shared prefixes and suffixes are shared).

    CompiledExpansion(expansions, grad_letters) builds the layout (slow at loops = 6, seconds);
    CompiledExpansion.from_arrays loads a shipped one.
    """

    def __init__(self, expansions, grad_letters=(), parts=None):
        from .expectations import Expansion

        if isinstance(expansions, Expansion):
            expansions = [expansions]
        self._setup(build_arrays(list(expansions), parts), grad_letters)
        self._alphabet = expansions[0].alphabet

    @classmethod
    def from_arrays(cls, arrays, grad_letters=()):
        """A layout from `build_arrays` / `load_arrays` / `select_arrays` output."""
        obj = cls.__new__(cls)
        obj._setup(arrays, grad_letters)
        obj._alphabet = None
        return obj

    def to_arrays(self) -> dict:
        return dict(self._arrays)

    def select(self, keep, grad_letters=None):
        """The layout of the parts `keep` (indices, in the order wanted)."""
        gl = self.grad_letters if grad_letters is None else grad_letters
        return CompiledExpansion.from_arrays(select_arrays(self._arrays, keep), gl)

    @property
    def alphabet(self):
        if self._alphabet is None:
            from .expectations import Alphabet

            a = self._arrays
            self._alphabet = Alphabet(tuple(str(x) for x in a["names"]), tuple(int(x) for x in a["transpose"]), int(a["random"]))
        return self._alphabet

    @property
    def words(self):
        """The distinct non-empty constant words (tuples of letter codes), sorted by (length, word)."""
        if self._words is None:
            self._words = [tuple(int(c) for c in row if c >= 0) for row in self._arrays["words"]]
        return self._words

    def __len__(self):
        return len(self.coef)

    # --- derived structures ------------------------------------------------------------------

    def _setup(self, a, grad_letters):
        self._arrays = a
        self._words = None
        self.grad_letters = tuple(int(g) for g in grad_letters)
        self.n_letters = L = len(a["names"])
        self.n_parts = len(a["parts"])
        nw = self.n_words = len(a["word_pre"])
        # the trie: node 0 the identity, letters c < L (prefixes) and c + L (suffixes, transposed)
        parent, letter, offs = a["node_parent"], a["node_letter"], a["node_levels"]
        self.n_nodes = len(parent)
        self._levels = [_Level(int(lo), int(hi), parent[lo:hi], letter[lo:hi]) for lo, hi in zip(offs[1:-1], offs[2:])]
        self._parent = parent
        self._letter = letter
        depth = np.searchsorted(offs, np.arange(self.n_nodes), side="right") - 1
        self._node_depth = depth
        self._max_run = max((b - a_ for lv in self._levels for _, a_, b, _ in lv.runs), default=0)
        self._n_runs = sum(len(lv.runs) for lv in self._levels)
        # pairing blocks: prefix nodes of one depth against suffix nodes of one depth
        wp, ws = a["word_pre"], a["word_suf"]
        self._word_pre, self._word_suf = wp, ws
        dp, ds = depth[wp], depth[ws]
        self._blocks = []
        key = dp * (int(depth.max(initial=0)) + 1) + ds
        for kv in np.unique(key):
            wi = np.flatnonzero(key == kv)
            a_, b_ = int(dp[wi[0]]), int(ds[wi[0]])
            plo, phi = self._prefix_range(a_)
            slo, shi = self._suffix_range(b_)
            self._blocks.append((plo, phi, slo, shi, wi, wp[wi] - plo, ws[wi] - slo))
        self._max_block = max((max(b[1] - b[0], b[3] - b[2]) for b in self._blocks), default=0)
        # how many adjoint contributions one node sums: one per block it is in, one per child
        in_blocks = np.zeros(self.n_nodes, dtype=np.int64)
        for plo, phi, slo, shi, *_ in self._blocks:
            in_blocks[plo:phi] += 1
            in_blocks[slo:shi] += 1
        children = np.bincount(parent[1:], minlength=self.n_nodes) if self.n_nodes > 1 else np.zeros(1, dtype=np.int64)
        self._max_adds = int((in_blocks + children).max(initial=0))
        # the polynomial: rests, leaves (monomials), terms
        self._rest_parent, self._rest_x = a["rest_parent"], a["rest_x"]
        ro = a["rest_levels"]
        self.n_rests = len(self._rest_parent)
        # (first node of the previous level, lo, hi, parents, words)
        self._rest_levels = [(int(plo), int(lo), int(hi), self._rest_parent[lo:hi], self._rest_x[lo:hi])
                             for plo, lo, hi in zip(ro[:-2], ro[1:-1], ro[2:])]
        self._rest_depth = np.searchsorted(ro, np.arange(self.n_rests), side="right") - 1
        lx, lj = a["leaf_x"], a["leaf_j"]
        self.n_monomials = nm = len(lx)
        self._leaf_x, self._leaf_j = lx, lj
        # rows of the x-side sums: runs of equal x, cut every _CHUNK monomials
        if nm:
            newrow = np.ones(nm, dtype=bool)
            newrow[1:] = lx[1:] != lx[:-1]
            run_start = np.maximum.accumulate(np.where(newrow, np.arange(nm), 0))
            newrow |= (np.arange(nm) - run_start) % _CHUNK == 0
            self._row_ptr = np.append(np.flatnonzero(newrow), nm)
        else:
            self._row_ptr = np.zeros(1, dtype=np.int64)
        self._row_x = lx[self._row_ptr[:-1]]
        # the rest-side sums: monomials ordered by rest
        self._jperm = np.lexsort((lx, lj))
        self._col_ptr = np.concatenate([[0], np.cumsum(np.bincount(lj, minlength=self.n_rests))])
        self._col_x = lx[self._jperm]
        # terms
        self.coef = a["term_coef"]
        self.power = a["term_power"]
        self.dpow = a["term_dpow"]
        self.part = a["term_part"]
        self._term_mono = a["term_mono"]
        self.coef_float = self.coef.astype(float)
        self._coef_exact = bool(np.all(np.abs(self.coef) < 2**53))
        # rounding counts (see `_poly`)
        kfac = np.where(lx < nw, self._rest_depth[lj] + 1, 0)
        self._max_factors = int(kfac.max(initial=0))
        self._max_share = int(np.bincount(self._term_mono).max(initial=0)) if len(self._term_mono) else 0
        uses = np.bincount(lx, minlength=nw + 1)[:nw].copy()
        if self.n_rests > 1:
            # a rest node's word occurs once in every monomial below it
            below = np.bincount(lj, minlength=self.n_rests).astype(np.int64)
            for _, lo, hi, par, _ in reversed(self._rest_levels):
                np.add.at(below, par, below[lo:hi])
            uses += np.bincount(self._rest_x[1:], weights=below[1:], minlength=nw + 1)[:nw].astype(np.int64)
        self._max_uses = int(uses.max(initial=0))
        self._weights_cache = OrderedDict()
        self._exact_cache = None
        self._inc = None

    def _prefix_range(self, depth):
        lv = self._levels[depth - 1]
        return lv.lo, lv.lo + int(np.searchsorted(lv.let, self.n_letters))

    def _suffix_range(self, depth):
        if depth == 0:
            return 0, 1
        lv = self._levels[depth - 1]
        return lv.lo + int(np.searchsorted(lv.let, self.n_letters)), lv.hi

    # --- weights (the same on every call for the same n, d, scales) ---------------------------

    def _weights(self, n, d, scales):
        """Per monomial: the weight sum_t c_t s_part d^q n^-p (float), its absolute value and a
        bound on its error, and the sparse matrices of the sums; cached per (n, d, scales)."""
        s = np.ones(self.n_parts) if scales is None else np.asarray(scales, dtype=float)
        key = (n, int(d), tuple(float(x) for x in s))
        hit = self._weights_cache.get(key)
        if hit is not None:
            self._weights_cache.move_to_end(key)
            return hit
        dn = float(d) ** np.arange(int(self.dpow.max(initial=0)) + 1)
        pmax = int(self.power.max(initial=0))
        if n == float("inf"):
            nn = (np.arange(pmax + 1) == 0).astype(float)
        else:
            inv = Fraction(1, int(n)) if isinstance(n, (int, np.integer)) else 1 / Fraction(n)
            nn = np.array([float(inv**p) for p in range(pmax + 1)])
        table = s[:, None, None] * dn[None, :, None] * nn[None, None, :]
        wt = self.coef_float * table[self.part, self.dpow, self.power]
        nm = self.n_monomials
        w = np.bincount(self._term_mono, weights=wt, minlength=nm)
        # six roundings per term weight, then the sum over the terms sharing a monomial
        b = gamma(6 + self._max_share) * np.bincount(self._term_mono, weights=np.abs(wt), minlength=nm)
        a = np.abs(w)
        from scipy import sparse

        def rows(v):
            return sparse.csr_matrix((v, self._leaf_j, self._row_ptr), shape=(len(self._row_x), self.n_rests))

        def cols(v):
            return sparse.csr_matrix((v[self._jperm], self._col_x, self._col_ptr), shape=(self.n_rests, self.n_words + 1))

        out = {"w": w, "C": rows(w), "A": rows(a), "B": rows(b), "Ct": cols(w), "At": cols(a), "Bt": cols(b)}
        self._weights_cache[key] = out
        if len(self._weights_cache) > _WEIGHT_CACHE:
            self._weights_cache.popitem(last=False)
        return out

    # --- stage 1: the trie and the traces -------------------------------------------------------

    def _letter_stacks(self, mats, errs, d, bound):
        """Right-multiplication matrices of the extended alphabet, M_c and M_c^T; with bound
        also |M| + e_M and the column and row maxima of e_M."""
        M = np.concatenate([mats, mats.transpose(0, 2, 1)])
        if not bound:
            return M, None, None, None
        E = np.concatenate([errs, errs.transpose(0, 2, 1)])
        return M, np.abs(M) + E, E.max(axis=1), E.max(axis=2)

    def _forward(self, M, hiM, colE, d, bound):
        """Node products X (and with bound |X| and running error bounds e_X):
        e(X M) <= (e_X + gamma_d |X|) (|M| + e_M) + rowsum(|X|) colmax(e_M)."""
        N = self.n_nodes
        X = np.empty((N, d, d))
        X[0] = np.eye(d)
        AX = eX = None
        if bound:
            AX = np.empty((N, d, d))
            AX[0] = np.eye(d)
            eX = np.empty((N, d, d))
            eX[0] = 0.0
            gd = gamma(d)
        stacked = d <= _STACK_D
        for lv in self._levels:
            lo, hi, par = lv.lo, lv.hi, lv.par
            Xp = X[par]
            if stacked:
                np.matmul(Xp, M[lv.let], out=X[lo:hi])
            else:
                for c, a, b, _ in lv.runs:
                    np.matmul(Xp[a:b], M[c], out=X[lo + a:lo + b])
            if bound:
                Ap = AX[par]
                T = eX[par]
                T += gd * Ap
                rs = Ap @ np.ones((d, 1))
                if stacked:
                    np.matmul(T, hiM[lv.let], out=eX[lo:hi])
                    eX[lo:hi] += rs * colE[lv.let][:, None, :]
                else:
                    for c, a, b, _ in lv.runs:
                        np.matmul(T[a:b], hiM[c], out=eX[lo + a:lo + b])
                        eX[lo + a:lo + b] += rs[a:b] * colE[c]
                np.abs(X[lo:hi], out=AX[lo:hi])
        return X, AX, eX

    def _pair_rounding(self, d):
        """Roundings of one computed trace: a Frobenius product of d^2 terms in one GEMM
        (d <= _FLAT_D), else d GEMMs of inner dimension d and a sum of d."""
        return gamma(d * d if d <= _FLAT_D else 2 * d)

    def _traces(self, X, AX, eX, d, bound):
        """t_w = sum(P * R) for each word, and with bound
        e_t = <e_P, |R| + e_R> + <|P|, e_R + gamma_K (|R| + e_R)>, the first product bounded
        column by column, <colmax(e_P), colsum(|R| + e_R)>, above _RANK1_D."""
        nw, N = self.n_words, self.n_nodes
        t = np.empty(nw + 1)
        t[nw] = 1.0
        X2 = X.reshape(N, d * d)
        flat = d <= _FLAT_D
        if not flat:
            X3 = X.transpose(1, 0, 2)  # (row, node, column): d GEMMs of inner dimension d
        et = None
        if bound:
            et = np.empty(nw + 1)
            et[nw] = 0.0
            gK = self._pair_rounding(d)
            rank1 = d > _RANK1_D
            Hi = AX + eX
            H2 = Hi.reshape(N, d * d)
            if rank1:
                cs = (np.ones((1, d)) @ Hi)[:, 0, :]  # column sums of |R| + e_R
                cm = _max_cols(eX)
            E2 = eX.reshape(N, d * d)
            Y2 = H2 * gK
            Y2 += E2
            A2 = AX.reshape(N, d * d)
        for plo, phi, slo, shi, wi, pi, si in self._blocks:
            if flat:
                T = X2[plo:phi] @ X2[slo:shi].T
            else:
                T = np.matmul(X3[:, plo:phi], X3[:, slo:shi].transpose(0, 2, 1)).sum(axis=0)
            t[wi] = T[pi, si]
            if bound:
                e = A2[plo:phi] @ Y2[slo:shi].T
                if rank1:
                    e += cm[plo:phi] @ cs[slo:shi].T
                else:
                    e += E2[plo:phi] @ H2[slo:shi].T
                et[wi] = e[pi, si]
        return t, et

    # --- stage 2: the polynomial -----------------------------------------------------------------

    @staticmethod
    def _value_sum(v):
        """The sum of v: pairwise additions down to at most 64 numbers (`_pair_levels` roundings
        per summand), then the correctly rounded math.fsum."""
        while len(v) > 64:
            if len(v) % 2:
                v = np.append(v, 0.0)
            v = v[0::2] + v[1::2]
        vals = v.tolist()
        if all(math.isfinite(x) for x in vals):
            return math.fsum(vals)
        return float(np.sum(v))  # math.fsum refuses inf - inf: an overflow is reported as non-finite

    @staticmethod
    def _pair_levels(n):
        levels = 0
        while n > 64:
            n = (n + 1) // 2
            levels += 1
        return levels

    def _rounding_counts(self):
        pair_levels = self._pair_levels(len(self._row_x))
        # value path of a monomial: the rest's product (K - 2), the weight (1), the row sum
        # (_CHUNK - 1), the factor x (1), the pairwise additions
        n_val = self._max_factors + _CHUNK + pair_levels + 1
        # gradient paths: at most K + 1 products and (uses - 1) additions per word, plus rows
        n_grad = self._max_factors + 2 + self._max_uses + _CHUNK
        return gamma(n_val), gamma(n_grad)

    def _poly(self, t, et, W, need_grad, bound):
        """value, error bound, df/dt, bounds on df/dt (None without bound)."""
        nw = self.n_words
        Pi = np.empty(self.n_rests)
        Pi[0] = 1.0
        if bound:
            hi = np.abs(t) + et
            q = np.divide(et, hi, out=np.zeros_like(et), where=hi > 0)
            H = np.empty(self.n_rests)
            R = np.empty(self.n_rests)
            H[0], R[0] = 1.0, 0.0
        for _, lo, hi_, par, x in self._rest_levels:
            np.multiply(Pi[par], t[x], out=Pi[lo:hi_])
            if bound:
                np.multiply(H[par], hi[x], out=H[lo:hi_])
                np.add(R[par], q[x], out=R[lo:hi_])
        y = W["C"] @ Pi
        rx = self._row_x
        value = self._value_sum(t[rx] * y)
        err = dt = edt = None
        if bound:
            g_val, g_grad = self._rounding_counts()
            u1 = W["A"] @ H
            u2 = W["A"] @ (R * H) + W["B"] @ H
            err = 1.01 * float(np.sum((et[rx] + g_val * hi[rx]) * u1 + hi[rx] * u2)) + _U * abs(value)
        if not need_grad:
            return value, err, None, None
        dt = np.bincount(rx, weights=y, minlength=nw + 1)
        APi = W["Ct"] @ t
        if bound:
            edt = np.bincount(rx, weights=(q[rx] + g_grad) * u1 + u2, minlength=nw + 1)
            AH = W["At"] @ et + (R + g_grad) * (W["At"] @ hi) + W["Bt"] @ hi
        for plo, lo, hi_, par, x in reversed(self._rest_levels):
            APi[plo:lo] += np.bincount(par - plo, weights=APi[lo:hi_] * t[x], minlength=lo - plo)
            if bound:
                AH[plo:lo] += np.bincount(par - plo, weights=AH[lo:hi_] * hi[x], minlength=lo - plo)
        if self.n_rests > 1:
            rp, rxs = self._rest_parent[1:], self._rest_x[1:]
            dt += np.bincount(rxs, weights=APi[1:] * Pi[rp], minlength=nw + 1)
            if bound:
                edt += np.bincount(rxs, weights=AH[1:] * H[rp], minlength=nw + 1)
        if bound:
            edt *= 1.01
        return value, err, dt, edt

    # --- stage 3: reverse mode -------------------------------------------------------------------

    def _incidence(self):
        """Sparse 0/1 matrices: per level, parents x children (the adjoints' scatter-add),
        and extended letter x node (the letter gradients' sums)."""
        if self._inc is None:
            from scipy import sparse

            inc = []
            prev = 0
            for lv in self._levels:
                k = lv.hi - lv.lo
                inc.append(sparse.csr_matrix((np.ones(k), (lv.par - prev, np.arange(k))), shape=(lv.lo - prev, k)))
                prev = lv.lo
            N = self.n_nodes
            let = self._letter[1:]
            self._inc = (inc, sparse.csr_matrix((np.ones(N - 1), (let, np.arange(N - 1))), shape=(2 * self.n_letters, N - 1)))
        return self._inc

    def _backward(self, X, AX, eX, M, hiM, rowE, dt, edt, d, bound):
        """{letter: df/dM_letter} (and with bound {letter: entrywise error bound}): reverse
        mode through the pairing and the trie (module docstring for the bounds)."""
        N, L = self.n_nodes, self.n_letters
        X2 = X.reshape(N, d * d)
        G = np.zeros((N, d, d))
        G2 = G.reshape(N, d * d)
        level_inc, letter_inc = self._incidence()
        if bound:
            eG = np.zeros((N, d, d))
            eG2 = eG.reshape(N, d * d)
            g_add = gamma(self._max_adds + 1)
            gb = gamma(self._max_block) + g_add
            A2 = AX.reshape(N, d * d)
            E2 = eX.reshape(N, d * d)
            rank1 = d > _RANK1_D
            if rank1:
                rm = _max_rows(eX)
        # the traces' adjoints, dt/dP = R and dt/dR = P, block by block:
        # e(C R) + g_add |C R| <= (gb |C| + e_C) |R| + (|C| + e_C) e_R, the last term bounded
        # row by row, ((|C| + e_C) rowmax(e_R)) 1^T, above _RANK1_D
        Cn = np.zeros((N, N))
        Cn[self._word_pre, self._word_suf] = dt[: self.n_words]
        if bound:
            eCn = np.zeros((N, N))
            eCn[self._word_pre, self._word_suf] = edt[: self.n_words]
        for plo, phi, slo, shi, *_ in self._blocks:
            C = Cn[plo:phi, slo:shi]
            G2[plo:phi] += C @ X2[slo:shi]
            G2[slo:shi] += C.T @ X2[plo:phi]
            if bound:
                eC = eCn[plo:phi, slo:shi]
                aC = np.abs(C)
                F = gb * aC + eC
                H = aC + eC
                eG2[plo:phi] += F @ A2[slo:shi]
                eG2[slo:shi] += F.T @ A2[plo:phi]
                if rank1:
                    eG[plo:phi] += (H @ rm[slo:shi])[:, :, None]
                    eG[slo:shi] += (H.T @ rm[plo:phi])[:, :, None]
                else:
                    eG2[plo:phi] += H @ E2[slo:shi]
                    eG2[slo:shi] += H.T @ E2[plo:phi]
        del Cn
        MT = M.transpose(0, 2, 1)
        if bound:
            hiMT = hiM.transpose(0, 2, 1)
            gd = gamma(d)
        stacked = d <= _STACK_D
        prev_lo = [0] + [lv.lo for lv in self._levels[:-1]]
        # the trie, deepest level first: G_parent += G_node M^T (scatter-add by incidence)
        for lv, inc, plo in zip(reversed(self._levels), reversed(level_inc), reversed(prev_lo)):
            lo, hi = lv.lo, lv.hi
            Gs = G[lo:hi]
            if stacked:
                back = np.matmul(Gs, MT[lv.let])
            else:
                back = np.empty_like(Gs)
                for c, a, b, _ in lv.runs:
                    np.matmul(Gs[a:b], MT[c], out=back[a:b])
            G2[plo:lo] += inc @ back.reshape(hi - lo, d * d)
            if bound:
                # e(G M^T) <= (e_G + gamma_d |G|) (|M| + e_M)^T + rowsum(|G|) rowmax(e_M),
                # plus g_add |G M^T| for the addition into the parent
                aG = np.abs(Gs)
                T = aG * gd
                T += eG[lo:hi]
                rs = aG @ np.ones((d, 1))
                if stacked:
                    eback = np.matmul(T, hiMT[lv.let])
                    eback += rs * rowE[lv.let][:, None, :]
                else:
                    eback = np.empty_like(T)
                    for c, a, b, _ in lv.runs:
                        np.matmul(T[a:b], hiMT[c], out=eback[a:b])
                        eback[a:b] += rs[a:b] * rowE[c]
                np.abs(back, out=back)
                back *= g_add
                eback += back
                eG2[plo:lo] += inc @ eback.reshape(hi - lo, d * d)
        # letter gradients: df/dM_c = sum over the nodes appending c of X_parent^T G_node
        # (and its transpose for the suffix letter c + L), in chunks of nodes
        want = np.zeros(2 * L, dtype=bool)
        for c in self.grad_letters:
            want[c] = want[c + L] = True
        gsum = np.zeros((2 * L, d * d))
        egsum = np.zeros((2 * L, d * d)) if bound else None
        if bound:
            g_grad = gamma(d + N + 1)
        step = max(1, (1 << 22) // (d * d))
        for lo in range(1, N, step):
            hi = min(N, lo + step)
            par = self._parent[lo:hi]
            Z = np.matmul(X[par].transpose(0, 2, 1), G[lo:hi])
            sub = letter_inc if hi - lo == N - 1 else letter_inc[:, lo - 1:hi - 1]
            gsum += sub @ Z.reshape(hi - lo, d * d)
            if bound:
                # |X~^T G~ - fl(X^T G)| <= |X|^T (e_G + gamma |G|) + e_X^T (e_G + |G|), the last
                # term bounded as colmax(e_X) colsum(e_G + |G|) above _RANK1_D
                aG = np.abs(G[lo:hi])
                F = aG * g_grad
                F += eG[lo:hi]
                eZ = np.matmul(AX[par].transpose(0, 2, 1), F)
                F += aG * (1.0 - g_grad)
                if rank1:
                    eZ += _max_cols(eX[par])[:, :, None] * (np.ones((1, d)) @ F)
                else:
                    eZ += np.matmul(eX[par].transpose(0, 2, 1), F)
                egsum += sub @ eZ.reshape(hi - lo, d * d)
        grads, egrads = {}, {}
        for c in self.grad_letters:
            grads[c] = gsum[c].reshape(d, d) + gsum[c + L].reshape(d, d).T
            if bound:
                egrads[c] = 1.01 * (egsum[c].reshape(d, d) + egsum[c + L].reshape(d, d).T)
        return grads, (egrads if bound else None)

    # --- public evaluation -----------------------------------------------------------------------

    def evaluate(self, mats, n, d, need_grad=True, scales=None, errs=None):
        """Float evaluation with a rigorous error bound.

        mats: array (letters, d, d) indexed by letter code; scales: one weight per part;
        errs: entrywise bounds on the letters' own errors (default 0: letters exact as given).
        Returns (value, {letter: df/dM}, error bound on the value, {letter: entrywise error
        bound on df/dM}); the bounds come from running error analysis (module docstring).
        """
        mats = np.asarray(mats, dtype=float)
        errs = np.zeros_like(mats) if errs is None else np.asarray(errs, dtype=float)
        W = self._weights(n, d, scales)
        M, hiM, colE, rowE = self._letter_stacks(mats, errs, d, True)
        X, AX, eX = self._forward(M, hiM, colE, d, True)
        t, et = self._traces(X, AX, eX, d, True)
        value, err, dt, edt = self._poly(t, et, W, need_grad, True)
        if not need_grad:
            return value, {}, err, {}
        grads, egrads = self._backward(X, AX, eX, M, hiM, rowE, dt, edt, d, True)
        return value, grads, err, egrads

    def value_and_grad(self, mats, n, d, need_grad=True, scales=None):
        """Float evaluation without the bound: (value, {letter code: df/dM_letter})."""
        mats = np.asarray(mats, dtype=float)
        W = self._weights(n, d, scales)
        M = self._letter_stacks(mats, None, d, False)[0]
        X, _, _ = self._forward(M, None, None, d, False)
        t, _ = self._traces(X, None, None, d, False)
        value, _, dt, _ = self._poly(t, None, W, need_grad, False)
        if not need_grad:
            return value, {}
        return value, self._backward(X, None, None, M, None, None, dt, None, d, False)[0]

    # --- exact evaluation ------------------------------------------------------------------------

    def _exact_terms(self):
        """Per monomial, its factors (word indices), for the exact path."""
        if self._exact_cache is None:
            nw = self.n_words
            chains = [()] * self.n_rests
            for _, lo, hi, _, _ in self._rest_levels:
                for k in range(lo, hi):
                    chains[k] = chains[int(self._rest_parent[k])] + (int(self._rest_x[k]),)
            facs = [(() if x == nw else (int(x),)) + chains[int(j)] for x, j in zip(self._leaf_x, self._leaf_j)]
            self._exact_cache = facs
        return self._exact_cache

    def _exact_products(self, mats, d):
        one = np.array([[Fraction(int(i == j)) for j in range(d)] for i in range(d)], dtype=object)
        L = self.n_letters
        ext = [np.asarray(m, dtype=object) for m in mats] + [np.asarray(m, dtype=object).T for m in mats]
        X = [one] + [None] * (self.n_nodes - 1)
        for k in range(1, self.n_nodes):
            X[k] = X[int(self._parent[k])].dot(ext[int(self._letter[k])])
        del L
        return X, ext

    def value_exact(self, mats, n, d, scales=None):
        """Exact evaluation: mats maps letter code to an object array of Fractions; n an int
        (or math.inf); scales one exact weight per part. Returns a Fraction."""
        return self.value_and_grad_exact(mats, n, d, scales, need_grad=False)[0]

    def value_and_grad_exact(self, mats, n, d, scales=None, need_grad=True):
        """Exact value and {letter: df/dM_letter} (object arrays of Fractions): the same
        reverse mode as the float path, in rational arithmetic."""
        X, ext = self._exact_products(mats, d)
        nw = self.n_words
        t = [sum((X[int(p)] * X[int(s)]).ravel(), Fraction(0)) for p, s in zip(self._word_pre, self._word_suf)]
        t.append(Fraction(1))
        s = [Fraction(1)] * self.n_parts if scales is None else [Fraction(x) for x in scales]
        inv_n = Fraction(0) if n == float("inf") else Fraction(1, int(n))
        facs = self._exact_terms()
        total = Fraction(0)
        dt = [Fraction(0)] * (nw + 1)
        for c, p, dp, part, m in zip(self.coef.tolist(), self.power.tolist(), self.dpow.tolist(), self.part.tolist(), self._term_mono.tolist()):
            if p and n == float("inf"):
                continue
            if s[part] == 0:
                continue
            wgt = Fraction(c) * s[part] * inv_n**p * Fraction(d) ** dp
            fac = facs[m]
            term = wgt
            for f in fac:
                term *= t[f]
            total += term
            if need_grad:
                for a_, f in enumerate(fac):
                    other = wgt
                    for b_, g in enumerate(fac):
                        if b_ != a_:
                            other *= t[g]
                    dt[f] += other
        if not need_grad:
            return total, {}
        zero = np.array([[Fraction(0)] * d for _ in range(d)], dtype=object)
        G = {}
        for i in range(nw):
            if dt[i]:
                p, q = int(self._word_pre[i]), int(self._word_suf[i])
                G[p] = G.get(p, zero) + dt[i] * X[q]
                G[q] = G.get(q, zero) + dt[i] * X[p]
        L = self.n_letters
        gsum = {}
        for k in range(self.n_nodes - 1, 0, -1):
            if k not in G:
                continue
            par, c = int(self._parent[k]), int(self._letter[k])
            if c in self.grad_letters or c - L in self.grad_letters:
                gsum[c] = gsum.get(c, zero) + X[par].T.dot(G[k])
            G[par] = G.get(par, zero) + G[k].dot(ext[c].T)
        grads = {}
        for c in self.grad_letters:
            g = zero.copy()
            if c in gsum:
                g = g + gsum[c]
            if c + L in gsum:
                g = g + gsum[c + L].T
            grads[c] = g
        return total, grads
