"""Expansions laid out for fast evaluation: the value, the gradient with respect to every letter
matrix, and rigorous running error bounds on both (docs/engine.md, sections 4, 5 and 8).

An expansion is a polynomial in traces of constant words, sum_m w_m prod_f tr(word_f). The
layout evaluates it in three stages.

1. Words as prefix x suffix. tr(w) is invariant under rotation, so each word is rotated to
   start with its rarest letter (W or U for the loss) and cut in two halves,
   tr(w) = tr(P Q) = sum(P * Q^T), P the first ceil(len/2) letters. Every distinct prefix P is
   a node of a trie, P_node = P_parent M_c; every distinct suffix Q too, stored transposed,
   R = Q^T = (M_c Q_child)^T = R_child M_c^T, so both halves are right multiplications over
   an extended alphabet (letter c and its matrix transpose, written c + L). At loops = 6 (all
   parts) that is 417 products where the trie of whole words needed 12 433. Prefix nodes come
   first, then suffix nodes, each by depth, so that the levels a word length pairs with are
   adjacent: the traces are Frobenius products, one GEMM per suffix level and its span of
   partner prefix levels (a "group").
2. The polynomial. Each monomial is written t_x Pi_j: one factor x (its rarest word) times the
   product Pi_j of the others, the "rest", a node of a second trie (1 975 rests at loops = 6
   for 73 029 monomials). The sums over monomials and the adjoints are sparse matrix products
   (scipy.sparse), with rows of at most _CHUNK monomials (_COL_CHUNK on the rests' side, whose
   rows are then summed per rest) so that every sum has a known number of roundings; one
   matrix per side holds |w| with the sign of w in the column index, so the value's pass and
   the bound's passes read the same matrix (CompiledExpansion._weights). The weights, the same
   on every call for one (n, d, scales), are cached.
3. Reverse mode. d tr(P Q)/dP = Q^T = R and d/dR = P give the nodes' adjoints, one GEMM per
   group; they flow back through the trie (G_parent += G_node M^T; df/dM_c += P_parent^T G_node,
   transposed for a suffix letter). The adjoints are added into the parents directly, round by
   round (every parent's r-th child in round r) or run by run (every parent has one child in a
   run of one letter).

Running error analysis (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed.,
Sec. 3.5-3.6) gives every computed quantity x a bound e_x >= |x_exact - x| from the computed
values themselves. With u = 2^-53, gamma_k = k u / (1 - k u), A = |X|, hi = |M| + e_M:
- node:   e(X M) <= (e_X + gamma_d A) hi + A e_M, computed as e_X hi + A (gamma_d hi + e_M) up
          to d = _SMALL_D; above it A e_M <= rowsum(A) colmax(e_M), a rank-one term carried
          as one more row of the same GEMM (one GEMM per node instead of two);
- trace:  e_t <= <e_P, |R| + e_R> + <A_P, e_R + gamma_K (|R| + e_R)>, K = d^2 for the flat
          Frobenius GEMM (d <= _FLAT_D), else 2d (d GEMMs of inner dimension d, then a sum);
          above _SMALL_D the first product is bounded as <colmax(e_P), colsum(|R| + e_R)>;
- monomial: |prod t_exact - prod t| <= r prod (|t| + e_t), r = sum e_t / (|t| + e_t), plus
          gamma_N |w| prod(|t| + e_t) for the N roundings on its path and the weight's own
          error b = beta |w| + b' (b' = 0 unless its term weights differ in sign); the final
          sum of at most 64 numbers is correctly rounded (math.fsum);
- adjoints: the same rules through the transposed products, the additions into a node
          counted (g_add), each word's df/dt with the roundings of its own uses.
The bounds are computed in float; their own relative error is far below 1e-12 and is covered
by a factor 1.01.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, defaultdict
from fractions import Fraction

import numpy as np

from .compensated import NORMAL_MIN
from .compensated import U as _U
from .compensated import gamma

#: Monomials per row of the sparse sums (a sum of at most this many products per row).
_CHUNK = 8
#: Monomials per row of the rest side's sums (a rest's monomials are summed in rows of at most
#: this many, then the rows' sums per rest: about 2 sqrt(c) roundings for c monomials instead of
#: c, 130 instead of 4 313 for the largest rest at loops = 6; the bound on df/dt counts them).
_COL_CHUNK = 64
#: Up to this d the traces are one Frobenius GEMM with inner dimension d^2 (error gamma_{d^2});
#: above it d GEMMs of inner dimension d and a sum (error gamma_{2d}).
_FLAT_D = 16
#: Up to this d ("small d") a trie level is one stacked matmul over all its letters (gathered
#: letter matrices) and the error bounds use full products; above it each letter run is one
#: GEMM in cache-sized pieces, and a node's own error matrix in the bounds is bounded by its
#: row or column maxima (a rank-one upper bound: d times fewer flops than the full product).
_SMALL_D = 24
#: Weight tables kept per layout, keyed by (n, d, scales): about 2.4 MB each at loops = 6, 14 ms
#: to rebuild.
_WEIGHT_CACHE = 4
#: A pairing group whose words fill less than 1 / _SPARSE_RATIO of its (own x partner) block is
#: sparse: its traces are row-wise dot products of the gathered node pairs and its adjoints a
#: sparse matrix product, instead of one dense GEMM over every pair (the untied multi-layer
#: layouts, whose letters differ per layer, pair few of their nodes; the looped ones about half).
_SPARSE_RATIO = 8
#: Blocks smaller than this stay dense (one small GEMM is cheaper than a gather).
_SPARSE_MIN = 256
#: Gathered node pairs per piece of the sparse path (doubles per gathered array, 8 MB).
_GATHER = 1 << 20
#: The version of the array layout (`to_arrays`, the shipped .npz files).
LAYOUT_FORMAT = 1


def _bincount(idx, weights, minlength):
    """np.bincount for real or complex weights (the real and imaginary parts alike)."""
    if np.iscomplexobj(weights):
        return np.bincount(idx, weights.real, minlength) + 1j * np.bincount(idx, weights.imag, minlength)
    return np.bincount(idx, weights=weights, minlength=minlength)


def _cut_rows(keys, chunk):
    """Row pointers of a sorted key sequence: runs of equal keys, cut every `chunk` items."""
    m = len(keys)
    if not m:
        return np.zeros(1, dtype=np.int64)
    newrow = np.ones(m, dtype=bool)
    newrow[1:] = keys[1:] != keys[:-1]
    run_start = np.maximum.accumulate(np.where(newrow, np.arange(m), 0))
    newrow |= (np.arange(m) - run_start) % chunk == 0
    return np.append(np.flatnonzero(newrow), m)


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
    # words that are rotations of each other are one trace and must be one word: cut the same
    # way, they would share a prefix and a suffix, and the pairing adjoints' scatter of df/dt
    # (one entry per (prefix, suffix)) would keep only one of their df/dt. The engine's words
    # are canonical; a hand-written expansion's need not be. Each word stands for the first
    # word seen with its least rotation (canonical words: themselves, the layout unchanged).
    rep, first = {}, {}
    for e in expansions:
        for _, ws in e:
            for w in ws:
                if w and w not in rep:
                    rep[w] = first.setdefault(min(w[i:] + w[:i] for i in range(len(w))), w)
    words = sorted(first.values(), key=lambda w: (len(w), w))
    nw = len(words)
    widx = {w: i for i, w in enumerate(words)}
    widx.update((w, widx[r]) for w, r in rep.items())
    # stage 1: the split, one trie over letters c (prefixes) and c + L (reversed suffixes, transposed)
    count = defaultdict(int)
    for w in words:
        for c in w:
            count[c] += 1
    rank = {c: (count[c], c) for c in count}
    halves = [_split_word(w, rank) for w in words]
    # the prefix trie's nodes first, then the suffix trie's (their root is node 0 too): the
    # prefix levels of one word length are adjacent, and so are the suffix levels
    pparent, pletter, poffsets, pindex = _trie([p for p, _ in halves])
    sstr = [tuple(c + L for c in reversed(q)) for _, q in halves]
    sparent, sletter, soffsets, sindex = _trie(sstr)
    split = len(pparent)
    parent = np.concatenate([pparent, (sparent + np.where(sparent > 0, split - 1, 0))[1:]])
    letter = np.concatenate([pletter, sletter[1:]])
    offsets = np.concatenate([poffsets, soffsets[2:] + split - 1])
    word_pre = np.array([pindex[p] for p, _ in halves], dtype=np.int64)
    word_suf = np.array([sindex[q] for q in sstr], dtype=np.int64)
    word_suf = np.where(word_suf > 0, word_suf + split - 1, 0)
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
        "node_split": np.array(split),
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
_STORED = {"node_split": np.int32, "words": np.int16, "word_pre": np.int32, "word_suf": np.int32, "node_parent": np.int32,
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
        # drop the levels left empty
        return np.concatenate([new[:1], new[1:][np.diff(new) > 0]])

    out = dict(arrays)
    out["parts"] = arrays["parts"][keep]
    out["words"] = arrays["words"][wmask]
    out["word_pre"] = nr[arrays["word_pre"][wmask]]
    out["word_suf"] = nr[arrays["word_suf"][wmask]]
    out["node_parent"] = nr[npar[nmask]]
    out["node_letter"] = arrays["node_letter"][nmask]
    out["node_levels"] = offsets(levels, nmask)
    out["node_split"] = np.array(int(nmask[: int(arrays["node_split"])].sum()))
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


class _Level:
    """One level of a trie: nodes lo:hi, their parents (all in the range plo:phi) and letters,
    the runs of one letter (contiguous; within a run every parent is distinct), and the
    rounds: round r holds the r-th child (in node order) of every parent with more than r
    children here, as (positions in the level, parents). Adding into the parents round by
    round adds into each parent in node order, the order the runs add in, with fewer calls."""

    __slots__ = ("lo", "hi", "par", "let", "runs", "plo", "phi", "rounds")

    def __init__(self, lo, hi, par, let):
        self.lo, self.hi, self.par, self.let = lo, hi, par, let
        self.plo, self.phi = int(par.min()), int(par.max()) + 1
        cuts = np.flatnonzero(np.diff(let)) + 1
        starts = np.concatenate([[0], cuts]).astype(np.int64)
        ends = np.concatenate([cuts, [len(let)]]).astype(np.int64)
        self.runs = [(int(let[a]), int(a), int(b), par[a:b]) for a, b in zip(starts, ends)]
        rank = np.zeros(len(par), dtype=np.int64)
        seen = defaultdict(int)
        for i, p in enumerate(par.tolist()):
            rank[i] = seen[p]
            seen[p] += 1
        self.rounds = [(_slice_or_index(np.flatnonzero(rank == r)), _slice_or_index(par[rank == r]))
                       for r in range(int(rank.max(initial=0)) + 1)]


def _signed(v):
    """[v_0, -v_0, v_1, -v_1, ...]: the vector of the value's pass over a signed-column matrix
    (CompiledExpansion._weights)."""
    out = np.empty(2 * len(v), dtype=v.dtype)
    out[0::2] = v
    np.negative(v, out=out[1::2])
    return out


def _slice_or_index(idx):
    """A slice where the indices are consecutive (a view instead of a gathered copy)."""
    if len(idx) and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def _spans(ranges):
    """Merge (lo, hi) ranges that touch into spans: [((lo, hi), [indices of the ranges])]."""
    out = []
    for i in sorted(range(len(ranges)), key=lambda i: ranges[i][0]):
        lo, hi = ranges[i]
        if out and out[-1][0][1] == lo:
            out[-1] = ((out[-1][0][0], hi), out[-1][1] + [i])
        else:
            out.append(((lo, hi), [i]))
    return out


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
        self.n_letters = len(a["names"])
        self.n_parts = len(a["parts"])
        nw = self.n_words = len(a["word_pre"])
        # the trie: node 0 the identity, then the prefix trie's levels (letters c < L), then
        # the suffix trie's (letters c + L: transposes)
        parent, letter, offs = a["node_parent"], a["node_letter"], a["node_levels"]
        self.n_nodes = N = len(parent)
        split = int(a["node_split"])
        self._levels = [_Level(int(lo), int(hi), parent[lo:hi], letter[lo:hi]) for lo, hi in zip(offs[1:-1], offs[2:])]
        self._parent = parent
        self._letter = letter
        pre_levels = [(lv.lo, lv.hi) for lv in self._levels if lv.lo < split]
        suf_levels = [(0, 1)] + [(lv.lo, lv.hi) for lv in self._levels if lv.lo >= split]
        level_of = np.zeros(N, dtype=np.int64)
        for i, (lo, hi) in enumerate(pre_levels):
            level_of[lo:hi] = i
        for i, (lo, hi) in enumerate(suf_levels):
            level_of[lo:hi] = i
        # pairing groups: words whose prefix and suffix levels pair, the partner levels merged
        # where they are adjacent (one GEMM per group)
        wp, ws = a["word_pre"], a["word_suf"]
        self._word_pre, self._word_suf = wp, ws
        lp, ls = level_of[wp], level_of[ws]
        # (dense groups, sparse groups) per half: the sparse ones (`_SPARSE_RATIO`) are evaluated
        # after the dense ones, which alone use the shared buffers of `_setup_fast`
        self._by_suffix, self._sparse_suffix = self._groups(suf_levels, pre_levels, ls, lp, ws, wp)
        self._by_prefix, self._sparse_prefix = self._groups(pre_levels, suf_levels, lp, ls, wp, ws)
        every = self._by_suffix + self._by_prefix + self._sparse_suffix + self._sparse_prefix
        self._max_block = max((max(hi - lo, ohi - olo) for (lo, hi), (olo, ohi), *_ in every), default=0)
        in_groups = np.zeros(N, dtype=np.int64)
        for (lo, hi), *_ in every:
            in_groups[lo:hi] += 1
        # how many adjoint contributions one node sums: one per group it is in, one per child
        children = np.bincount(parent[1:], minlength=N) if N > 1 else np.zeros(1, dtype=np.int64)
        self._max_adds = int((in_groups + children).max(initial=0))
        # the polynomial: rests, leaves (monomials), terms
        self._rest_parent, self._rest_x = a["rest_parent"], a["rest_x"]
        ro = a["rest_levels"]
        self.n_rests = len(self._rest_parent)
        # (first node of the previous level, lo, hi, parents, words)
        self._rest_levels = [(int(plo), int(lo), int(hi), self._rest_parent[lo:hi], self._rest_x[lo:hi])
                             for plo, lo, hi in zip(ro[:-2], ro[1:-1], ro[2:])]
        self._rest_depth = np.searchsorted(ro, np.arange(self.n_rests), side="right") - 1
        lx, lj = a["leaf_x"], a["leaf_j"]
        self.n_monomials = len(lx)
        self._leaf_x, self._leaf_j = lx, lj
        # rows of the x-side sums: runs of equal x, cut every _CHUNK monomials
        self._row_ptr = _cut_rows(lx, _CHUNK)
        self._row_x = lx[self._row_ptr[:-1]]
        # the rest-side sums: monomials ordered by rest, in rows of at most _COL_CHUNK, and
        # the rest of each row (its sum is added into the rest's by `_rest_sums`)
        self._jperm = np.lexsort((lx, lj))
        self._col_x = lx[self._jperm]
        self._col_ptr = _cut_rows(lj[self._jperm], _COL_CHUNK)
        self._col_rest = lj[self._jperm][self._col_ptr[:-1]]
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
        # df/dt_f sums products of at most K + 1 factors (K + 2 multiplications with the weight);
        # each product reaches df/dt_f through the additions counted by _path_additions
        self._grad_gamma = np.append((self._max_factors + 2 + self._path_additions()) * _U, 0.0)
        self._grad_gamma /= 1.0 - self._grad_gamma
        self._weights_cache = OrderedDict()
        self._exact_cache = None
        self._inc = None
        self._hpairs = None
        self._work = threading.local()
        self._setup_fast()

    def _path_additions(self):
        """Per word f: the most additions on the path of one product into df/dt_f, as `_poly`
        sums them (a sum of k numbers starting from zero rounds k - 1 times):
        - through the rows of f: at most _CHUNK - 1 in a row, rows_f - 1 in the bincount over
          the rows, 1 for adding the rests' share;
        - through a rest j whose factor is f: D(j) in j's adjoint, n_f - 1 in the bincount over
          the n_f rests with factor f, 1 for adding it into df/dt_f; where D(j) is, for the c_j
          monomials of rest j, min(c_j, _COL_CHUNK) - 1 in a row of the column pass and
          ceil(c_j / _COL_CHUNK) - 1 in the sum of j's rows, + 1 for adding its children's sum,
          and for a product from below, D(child) + k_j - 1 + 1 (the bincount over j's k_j
          children, then the addition into j).
        (The count used before was the word's number of uses plus _CHUNK, 62 000 for the most
        used word at loops = 6, with the rests' monomials summed in one row each; the most
        additions on one path there are now 255.)"""
        nw, nJ = self.n_words, self.n_rests
        rows = np.bincount(self._row_x, minlength=nw + 1)[:nw]
        count = np.where(rows > 0, _CHUNK - 1 + rows, 0)
        if nJ > 1:
            cj = np.bincount(self._leaf_j, minlength=nJ)
            kids = np.bincount(self._rest_parent[1:], minlength=nJ)
            rows_j = -(-cj // _COL_CHUNK)
            D = np.maximum(np.minimum(cj, _COL_CHUNK) - 1, 0) + np.maximum(rows_j - 1, 0) + (kids > 0)
            for _, lo, hi, par, _ in reversed(self._rest_levels):
                np.maximum.at(D, par, D[lo:hi] + kids[par])
            xs = self._rest_x[1:]
            n_f = np.bincount(xs, minlength=nw + 1)[:nw]
            best = np.zeros(nw + 1, dtype=np.int64)
            np.maximum.at(best, xs, D[1:])
            count = np.maximum(count, np.where(n_f > 0, best[:nw] + n_f, 0))
        return count

    def _setup_fast(self):
        """Index arrays that let one call replace a loop over levels (all A-independent)."""
        nw, nJ = self.n_words, self.n_rests
        # each rest's factors root first, padded with the word nw (t = 1, e_t = 0): its product
        # is one multiply.reduce along the chain, in the order the trie multiplies
        chain = np.full((nJ, max(len(self._rest_levels), 1)), nw, dtype=np.int64)
        for k, (_, lo, hi, par, x) in enumerate(self._rest_levels):
            chain[lo:hi] = chain[par]
            chain[lo:hi, k] = x
        self._rest_chain = np.ascontiguousarray(chain.T)  # (depth, rests): reduced along axis 0
        # the rest trie's reverse pass on three columns: one bincount per level over three
        # blocks of parents (the sums of each block in the order one column's bincount takes)
        self._rest_back = []
        for plo, lo, hi, par, x in reversed(self._rest_levels):
            m = lo - plo
            rel = par - plo
            self._rest_back.append((plo, lo, hi, np.concatenate([rel, rel + m, rel + 2 * m]), x, m))
        # the value's pairwise sum (_value_sum): padded to 64 * 2^k numbers, k halvings
        n, k = len(self._row_x), 0
        while (n + (1 << k) - 1) >> k > 64:
            k += 1
        self._sum_plan = (64 << k if n > 64 else n, k, (n + (1 << k) - 1) >> k if n else 0)
        # the traces: every suffix group's (prefix, suffix) matrix in one buffer, and the words'
        # positions in it
        self._trace_offsets, pos, o = [], [], 0
        for (slo, shi), (plo, phi), _, si, pi, _ in self._by_suffix:
            self._trace_offsets.append(o)
            pos.append(o + pi * (shi - slo) + si)
            o += (phi - plo) * (shi - slo)
        self._trace_size = o
        self._trace_pos = np.concatenate(pos) if pos else np.zeros(0, dtype=np.int64)
        self._trace_word = np.concatenate([g[2] for g in self._by_suffix]) if pos else np.zeros(0, dtype=np.int64)
        # the pairing adjoints: which dense group writes its own nodes first, and the nodes no
        # dense group writes (zeroed instead; the sparse groups add to them afterwards)
        seen, self._pair_first = set(), []
        for (lo, hi), *_ in self._by_prefix + self._by_suffix:
            self._pair_first.append((lo, hi) not in seen)
            seen.add((lo, hi))
        covered = np.zeros(self.n_nodes, dtype=bool)
        for lo, hi in seen:
            covered[lo:hi] = True
        cuts = np.flatnonzero(np.diff(np.concatenate([[0], (~covered).astype(np.int8), [0]])))
        self._pair_unwritten = [(int(a), int(b)) for a, b in zip(cuts[0::2], cuts[1::2])]
        # the pairing adjoints: every group's matrix C (own nodes x partner nodes) in one buffer
        self._pair_offsets, pos, o = [], [], 0
        for (lo, hi), (olo, ohi), wi, _, _, flat in self._by_prefix + self._by_suffix:
            self._pair_offsets.append(o)
            pos.append(o + flat)
            o += (hi - lo) * (ohi - olo)
        self._pair_size = o
        self._pair_pos = np.concatenate(pos) if pos else np.zeros(0, dtype=np.int64)
        self._pair_word = np.concatenate([g[2] for g in self._by_prefix + self._by_suffix]) if pos else np.zeros(0, dtype=np.int64)
        # every node's letter, and for the letter gradients the nodes by letter and their parents
        self._let1 = self._letter[1:]
        perm, letters, starts = self._by_letter()
        self._letter_par = self._parent[1:][perm]

    @staticmethod
    def _groups(own_levels, other_levels, own_level, other_level, own_node, other_node):
        """For each level of one half (prefixes or suffixes): its words, grouped by spans of
        adjacent partner levels of the other half: [(own range, partner span, words, rows,
        columns, flat positions)], rows indexing the own range and columns the span, as two lists:
        the dense groups and the sparse ones (fewer than 1 / _SPARSE_RATIO of the block's pairs
        are words, in a block of at least _SPARSE_MIN pairs), whose last entry is instead the CSR
        structure (order of the words, columns, row pointers) of their (own x partner) matrix."""
        dense, sparse = [], []
        for i, (lo, hi) in enumerate(own_levels):
            wi_all = np.flatnonzero(own_level == i)
            if not len(wi_all):
                continue
            partners = sorted(set(other_level[wi_all].tolist()))
            for (plo, phi), members in _spans([other_levels[j] for j in partners]):
                keep = np.isin(other_level[wi_all], [partners[m] for m in members])
                wi = wi_all[keep]
                rows, cols = own_node[wi] - lo, other_node[wi] - plo
                if len(wi) * _SPARSE_RATIO < (hi - lo) * (phi - plo) and (hi - lo) * (phi - plo) >= _SPARSE_MIN:
                    order = np.lexsort((cols, rows))
                    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=hi - lo))])
                    sparse.append(((lo, hi), (plo, phi), wi, rows, cols, (order, cols[order], indptr)))
                else:
                    dense.append(((lo, hi), (plo, phi), wi, rows, cols, rows * (phi - plo) + cols))
        return dense, sparse

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
        # a term weight that is not zero exactly but near or below float's underflow (n^-p below
        # 2^-1022 at n = 10^170, say): each of its three products may lose up to 2^-1075 in
        # absolute terms, amplified by the later factors, so its error is also bounded
        # absolutely, by 2^-1072 max(1, |c|) max(1, |s|) max(1, d^q) (added to b below)
        exact_nonzero = (self.coef != 0) & (s[self.part] != 0) & ((self.power == 0) | (n != float("inf")))
        near = exact_nonzero & (np.abs(wt) < 2 * NORMAL_MIN)
        nm = self.n_monomials
        w = np.bincount(self._term_mono, weights=wt, minlength=nm)
        # six roundings per term weight (seven if a coefficient is not exact in float), then
        # the sum over the terms sharing a monomial
        rounds = 6 + (0 if self._coef_exact else 1) + self._max_share
        b = gamma(rounds) * np.bincount(self._term_mono, weights=np.abs(wt), minlength=nm)
        if near.any():
            lost = 2.0**-1072 * np.maximum(1.0, np.abs(self.coef_float[near])) * np.maximum(1.0, np.abs(s[self.part[near]]))
            b += np.bincount(self._term_mono[near], weights=lost * np.maximum(1.0, dn[self.dpow[near]]), minlength=nm)
        a = np.abs(w)
        from scipy import sparse

        def rows(v):
            return sparse.csr_matrix((v, self._leaf_j, self._row_ptr), shape=(len(self._row_x), self.n_rests))

        def cols(v):
            return sparse.csr_matrix((v[self._jperm], self._col_x, self._col_ptr), shape=(len(self._col_rest), self.n_words + 1))

        # b = beta a + b' with b' >= 0 (zero when a monomial's term weights share one sign, as
        # in every loss: their float sums of |wt| and of wt are then equal): beta a H joins the
        # R H of the bound as (R + beta) H, and b' needs a pass only where it is not zero
        beta = gamma(rounds)
        bp = np.maximum(b - beta * a, 0.0)
        mixed = bool(np.any(bp > 0))
        # One matrix per side for the value and the bound: |w| with the sign of w moved into
        # the column (2 j for w >= 0, 2 j + 1 for w < 0), against a vector whose entries 2 j and
        # 2 j + 1 are v_j and -v_j for the value (|w| (-v) = w v exactly, so each row is summed
        # in the same order with the same roundings as C v) and v_j twice for the bound's sums
        # of |w| v: three passes over the same (cached) matrix instead of one over each of C
        # and A, and the same for the rest side.
        neg = np.signbit(w).astype(np.int64)
        out = {"w": w, "beta": beta,
               "RA": sparse.csr_matrix((a, 2 * self._leaf_j + neg, self._row_ptr), shape=(len(self._row_x), 2 * self.n_rests)),
               "CA": sparse.csr_matrix((a[self._jperm], 2 * self._col_x + neg[self._jperm], self._col_ptr),
                                       shape=(len(self._col_rest), 2 * (self.n_words + 1))),
               "Bp": rows(bp) if mixed else None, "Bpt": cols(bp) if mixed else None,
               "bp": bp if mixed else None}
        self._weights_cache[key] = out
        if len(self._weights_cache) > _WEIGHT_CACHE:
            self._weights_cache.popitem(last=False)
        return out

    # --- stage 1: the trie and the traces -------------------------------------------------------

    def _letter_stacks(self, mats, errs, d, bound):
        """Right-multiplication matrices of the extended alphabet, M_c and M_c^T, and with
        bound {hi: |M| + e_M, and for d <= _SMALL_D Kf = gamma_d hi + e_M and its transpose Kb,
        so that (e_X + gamma_d |X|) hi + |X| e_M = e_X hi + |X| Kf is two products; above it
        colE / rowE: the column / row maxima of e_M, for the rank-one term}."""
        M = np.concatenate([mats, mats.transpose(0, 2, 1)])
        if not bound:
            return M, None
        E = np.concatenate([errs, errs.transpose(0, 2, 1)])
        hi = np.abs(M) + E
        lb = {"hi": hi}
        if d <= _SMALL_D:
            # Kf = gamma_d hi + e_M, so that (e_X + gamma_d |X|) hi + |X| e_M = e_X hi + |X| Kf is
            # two products, and Kb = ((gamma_d + g_add) hi + e_M)^T for the adjoints (the backward
            # adds g_add |G M^T| <= g_add |G| hi^T for the sum into the parent)
            lb["Kf"] = gamma(d) * hi + E
            lb["Kb"] = ((gamma(d) + gamma(self._max_adds + 1)) * hi + E).transpose(0, 2, 1)
        else:
            # [hi; colmax(e_M)] and [hi^T; rowmax(e_M)]: the rank-one term as one more row, so
            # that [T | rowsum(|X|)] [hi; colE] = T hi + rowsum(|X|) colE is one GEMM
            lb["hiA"] = np.concatenate([hi, E.max(axis=1)[:, None, :]], axis=1)
            lb["hiTA"] = np.concatenate([hi.transpose(0, 2, 1), E.max(axis=2)[:, None, :]], axis=1)
        return M, lb

    @staticmethod
    def _pieces(a, b, pp, d):
        """Sub-pieces (first, end, parents) of at most about 0.5 MB of the piece a:b with parents
        pp: the bounds' elementwise work with its temporaries in the 2 MB L2 cache (7% faster
        at d = 100 than on the 2 MB pieces, measured paired; the value's products stay on the
        pieces of _chunks, whose letter-gradient sums they fix)."""
        step = max(1, (1 << 16) // (d * d))
        for i in range(a, b, step):
            j = min(b, i + step)
            if isinstance(pp, slice):
                yield i, j, slice(pp.start + i - a, pp.start + j - a)
            else:
                yield i, j, pp[i - a:j - a]

    def _chunks(self, lv, d):
        """(letter, first, end, parents) pieces of a level's letter runs of at most about 2 MB
        each (the large-d path keeps its temporaries in cache); parents a slice where they are
        consecutive nodes (a view instead of a gathered copy)."""
        step = max(1, (1 << 18) // (d * d))
        for c, a, b, _ in lv.runs:
            for i in range(a, b, step):
                j = min(b, i + step)
                pp = lv.par[i:j]
                if pp[-1] - pp[0] == j - i - 1 and np.all(np.diff(pp) == 1):
                    pp = slice(int(pp[0]), int(pp[-1]) + 1)
                yield c, i, j, pp

    def _forward(self, M, lb, d, bound):
        """Node products X (and with bound the dict aux of |X| "A", running error bounds "E"
        and, above _SMALL_D, the row and column maxima of e_X "rmax", "cmax"):
        e(X M) <= (e_X + gamma_d |X|) (|M| + e_M) + rowsum(|X|) colmax(e_M)."""
        if d <= _SMALL_D:
            return self._forward_small(M, lb, d, bound)
        N = self.n_nodes
        X = np.empty((N, d, d), dtype=M.dtype)
        X[0] = np.eye(d)
        aux = None
        if bound:
            AX = np.empty((N, d, d))
            AX[0] = np.eye(d)
            eX = np.empty((N, d, d))
            eX[0] = 0.0
            aux = {"A": AX, "E": eX}
        # large d: one GEMM per piece of a letter run, temporaries in cache; the bound's
        # product and its rank-one term in one GEMM: [e_X + gamma_d |X| | rowsum(|X|)] [hi; colE]
        if bound:
            gd = gamma(d)
            hiA = lb["hiA"]
            ones = np.ones(d)
            rmax = aux["rmax"] = np.zeros((N, d))
            cmax = aux["cmax"] = np.zeros((N, d))
        for lv in self._levels:
            lo = lv.lo
            for c, a, b, pp in self._chunks(lv, d):
                k = b - a
                np.matmul(X[pp].reshape(k * d, d), M[c], out=X[lo + a:lo + b].reshape(k * d, d))
                if not bound:
                    continue
                for a2, b2, pp2 in self._pieces(a, b, pp, d):
                    k = b2 - a2
                    Ap = AX[pp2]
                    T = np.empty((k, d, d + 1))
                    T[:, :, d] = (Ap.reshape(k * d, d) @ ones).reshape(k, d)  # row sums (gemv)
                    np.multiply(Ap, gd, out=T[:, :, :d])
                    T[:, :, :d] += eX[pp2]
                    out = eX[lo + a2:lo + b2]
                    np.matmul(T.reshape(k * d, d + 1), hiA[c], out=out.reshape(k * d, d))
                    np.abs(X[lo + a2:lo + b2], out=AX[lo + a2:lo + b2])
                    np.max(out, axis=2, out=rmax[lo + a2:lo + b2])
                    np.max(out, axis=1, out=cmax[lo + a2:lo + b2])
        return X, aux

    def _forward_small(self, M, lb, d, bound):
        """The forward pass up to _SMALL_D: one stacked product per level, the letters of all
        nodes gathered once; with bound e(X M) <= e_X hi + |X| Kf (the exact form, no rank-one
        term) and the dict aux of |X| "A", e_X "E" and, for the traces and the adjoints,
        Hi = |X| + e_X and Lo = g |X| + (1 + g) e_X = g Hi + e_X with g the rounding of the
        traces' GEMMs ("Lo") and of the adjoints' ("Loa")."""
        N = self.n_nodes
        X = np.empty((N, d, d), dtype=M.dtype)
        X[0] = np.eye(d)
        if not bound:
            for lv in self._levels:
                np.matmul(X[lv.par], M[lv.let], out=X[lv.lo:lv.hi])
            return X, None
        AX = np.empty((N, d, d))
        AX[0] = np.eye(d)
        eX = np.empty((N, d, d))
        eX[0] = 0.0
        hiL, KfL = lb["hi"], lb["Kf"]
        for lv in self._levels:
            lo, hi, par, let = lv.lo, lv.hi, lv.par, lv.let
            np.matmul(X[par], M[let], out=X[lo:hi])
            np.matmul(eX[par], hiL[let], out=eX[lo:hi])
            eX[lo:hi] += np.matmul(AX[par], KfL[let])
            np.abs(X[lo:hi], out=AX[lo:hi])
        Hi = AX + eX
        Lo = Hi * self._pair_rounding(d)
        Lo += eX
        Loa = Hi * max(self._adjoint_rounding(), gamma(d + N + 1))
        Loa += eX
        return X, {"A": AX, "E": eX, "Hi": Hi, "Lo": Lo, "Loa": Loa}

    def _pair_rounding(self, d):
        """Roundings of one computed trace: a Frobenius product of d^2 terms in one GEMM
        (d <= _FLAT_D), else d GEMMs of inner dimension d and a sum of d."""
        return gamma(d * d if d <= _FLAT_D else 2 * d)

    def _traces(self, X, aux, d, bound):
        """t_w = sum(P * R) for each word, one GEMM per group (a suffix level against its
        adjacent partner prefix levels), and with bound
        e_t = <e_P, |R| + e_R> + <|P|, e_R + gamma_K (|R| + e_R)>: up to _SMALL_D two GEMMs
        per group, <e_P, Hi_R> + <|P|, Lo_R> with Hi = |R| + e_R and
        Lo = gamma_K |R| + (1 + gamma_K) e_R (_forward_small); above it the first product
        bounded column by column, <colmax(e_P), colsum(|R| + e_R)>."""
        nw, N = self.n_words, self.n_nodes
        t = np.empty(nw + 1, dtype=X.dtype)
        t[nw] = 1.0
        X2 = X.reshape(N, d * d)
        flat = d <= _FLAT_D
        if not flat:
            X3 = X.transpose(1, 0, 2)  # (row, node, column): d GEMMs of inner dimension d
        et = None
        small = d <= _SMALL_D
        if bound:
            et = np.empty(nw + 1)
            et[nw] = 0.0
            AX, eX = aux["A"], aux["E"]
            A2 = AX.reshape(N, d * d)
            E2 = eX.reshape(N, d * d)
            if small:
                Hi = aux["Hi"].reshape(N, d * d)
                Lo = aux["Lo"].reshape(N, d * d)
            else:
                gK = self._pair_rounding(d)
        Tb = np.empty(self._trace_size, dtype=X.dtype)
        if bound:
            eb = np.empty(self._trace_size)
        for ((slo, shi), (plo, phi), wi, *_), o in zip(self._by_suffix, self._trace_offsets):
            T = Tb[o:o + (phi - plo) * (shi - slo)].reshape(phi - plo, shi - slo)
            if flat:
                np.matmul(X2[plo:phi], X2[slo:shi].T, out=T)
            else:
                self._row_sum_traces(X3, plo, phi, slo, shi, T)
            if not bound:
                continue
            e = eb[o:o + (phi - plo) * (shi - slo)].reshape(phi - plo, shi - slo)
            if small:
                np.matmul(A2[plo:phi], Lo[slo:shi].T, out=e)
                e += E2[plo:phi] @ Hi[slo:shi].T
            else:
                # over the suffix nodes: |R| + e_R and e_R + gamma_K (|R| + e_R)
                HiS = AX[slo:shi] + eX[slo:shi]
                Y2 = HiS.reshape(shi - slo, d * d) * gK
                Y2 += E2[slo:shi]
                np.matmul(A2[plo:phi], Y2.T, out=e)
                e += aux["cmax"][plo:phi] @ (np.ones((1, d)) @ HiS)[:, 0, :].T
        t[self._trace_word] = Tb.take(self._trace_pos)
        if bound:
            et[self._trace_word] = eb.take(self._trace_pos)
        if self._sparse_suffix:
            stacks = self._sparse_stacks(X2, aux, d, bound)
            for (slo, _), (plo, _), wi, si, pi, _ in self._sparse_suffix:
                self._sparse_traces(stacks, d, bound, t, et, wi, pi + plo, si + slo)
        return t, et

    @staticmethod
    def _row_sum_traces(X3, plo, phi, slo, shi, T):
        """T = sum over rows i of P_i R_i^T (X3[i] the i-th rows of all nodes), summed in the
        order i = 0, 1, ... as one sum over a (d, P, S) stack would, but a block of rows at a
        time with the running sum in front of the block (about 1 MB live instead of d P S)."""
        d = X3.shape[0]
        b = max(1, min(d, (1 << 17) // max(1, (phi - plo) * (shi - slo)) - 1))
        B = np.empty((b + 1, phi - plo, shi - slo), dtype=X3.dtype)
        P, R = X3[:, plo:phi], X3[:, slo:shi].transpose(0, 2, 1)
        np.matmul(P[:b], R[:b], out=B[1:])
        np.add.reduce(B[1:], axis=0, out=T)
        for i in range(b, d, b):
            j = min(d, i + b)
            B[0] = T
            np.matmul(P[i:j], R[i:j], out=B[1:1 + j - i])
            np.add.reduce(B[:1 + j - i], axis=0, out=T)

    @staticmethod
    def _sparse_stacks(X2, aux, d, bound):
        """Per node, the rows a sparse group's pairs gather: [X | |X| | e_X] for the prefix side and
        [X | g |X| + (1 + g) e_X | |X| + e_X] for the suffix side, g = gamma_{d^2} (without bound,
        X alone), so that one gather per side serves the trace and its bound."""
        if not bound:
            return X2, X2
        N = X2.shape[0]
        g = gamma(d * d)
        A2, E2 = aux["A"].reshape(N, d * d), aux["E"].reshape(N, d * d)
        return np.concatenate([X2, A2, E2], axis=1), np.concatenate([X2, g * A2 + (1.0 + g) * E2, A2 + E2], axis=1)

    @staticmethod
    def _sparse_traces(stacks, d, bound, t, et, wi, pn, sn):
        """A sparse group's traces t_w = <P, R> as row-wise dot products of the gathered pairs
        (a sum of d^2 products, gamma_{d^2}), and with bound the exact form of the bound,
        e_t = <|P|, gamma |R| + (1 + gamma) e_R> + <e_P, |R| + e_R>, at every d (`_sparse_stacks`)."""
        SP, SQ = stacks
        k = d * d
        step = max(1, _GATHER // SP.shape[1])
        for a in range(0, len(wi), step):
            w = wi[a:a + step]
            P, Q = SP[pn[a:a + step]], SQ[sn[a:a + step]]
            t[w] = np.einsum("ij,ij->i", P[:, :k], Q[:, :k])
            if bound:
                et[w] = np.einsum("ij,ij->i", P[:, k:], Q[:, k:])

    def _adjoint_rounding(self):
        """gamma for a pairing GEMM of the adjoints (inner dimension at most _max_block) and
        its addition into a node's adjoint."""
        return gamma(self._max_block) + gamma(self._max_adds + 1)

    # --- stage 2: the polynomial -----------------------------------------------------------------

    def _value_sum(self, v):
        """The sum of v (one number per row): pairwise additions down to at most 64 numbers
        (`_pair_levels` roundings per summand), then the correctly rounded math.fsum. v is
        padded with zeros to 64 * 2^k numbers once (_sum_plan): each halving then adds the
        same pairs as halving with a zero appended at odd lengths, whose sums x + 0 are x."""
        if np.iscomplexobj(v):  # value_and_grad's complex step: the real and imaginary parts alike
            return complex(self._value_sum(v.real.copy()), self._value_sum(v.imag.copy()))
        size, halvings, keep = self._sum_plan
        if halvings:
            buf = np.zeros(size)
            buf[:len(v)] = v
            for _ in range(halvings):
                buf = buf[0::2] + buf[1::2]
            v = buf[:keep]
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

    def _value_rounding(self):
        """gamma for the value path of a monomial: the rest's product (K - 2 roundings), the
        weight (1), the row sum (_CHUNK - 1), the factor x (1), the pairwise additions."""
        return gamma(self._max_factors + _CHUNK + self._pair_levels(len(self._row_x)) + 1)

    def _poly(self, t, et, W, need_grad, bound, refine=False):
        """value, error bound, df/dt, bounds on df/dt (None without bound).

        Per monomial m = w_m t_x Pi_j (x its chosen factor, j its rest): the value is
        sum over rows of t_x (C Pi)_row. With hi = |t| + e_t, q = e_t / hi, H_j and R_j the
        product of hi and the sum of q over the rest, a = |w| and b = beta a + b' the weights'
        error bound, the error is at most sum_m [a (q_x + R_j + g) + b] hi_x H_j (module
        docstring), that is sum over rows of (e_x + g hi_x) (A H)_row
        + hi_x (A ((R + beta) H) + B' H)_row. The bounds on df/dt are the gradient of the same
        bound polynomial with respect to hi; with refine, the traces' errors enter them through
        the signed Hessian instead (`_hessian_bound`)."""
        nw, nJ = self.n_words, self.n_rests
        rx = self._row_x
        if not bound:
            Pi = np.multiply.reduce(t[self._rest_chain], axis=0)
            y = W["RA"] @ _signed(Pi)
            value = self._value_sum(t[rx] * y)
            if not need_grad:
                return value, None, None, None
            dt = _bincount(rx, y, nw + 1)
            APi = self._rest_sums(W["CA"] @ _signed(t))
            for plo, lo, hi_, par, x in reversed(self._rest_levels):
                APi[plo:lo] += _bincount(par - plo, APi[lo:hi_] * t[x], lo - plo)
            if nJ > 1:
                dt += _bincount(self._rest_x[1:], APi[1:] * Pi[self._rest_parent[1:]], nw + 1)
            return value, None, dt, None
        beta = W["beta"]
        hi = np.abs(t) + et
        q = np.divide(et, hi, out=np.zeros_like(et), where=hi > 0)
        # the rests' products of t and of hi along their chains (Pi as the trie multiplies),
        # and the sums of q
        ch = self._rest_chain
        Pi = np.multiply.reduce(t[ch], axis=0)
        H = np.multiply.reduce(hi[ch], axis=0)
        R = np.add.reduce(q[ch], axis=0)
        RA = W["RA"]
        y = RA @ _signed(Pi)
        u1 = RA @ np.repeat(H, 2)
        u2 = RA @ np.repeat((R + beta) * H, 2)
        if W["Bp"] is not None:
            u2 += W["Bp"] @ H
        value = self._value_sum(t[rx] * y)
        g_val = self._value_rounding()
        hx = hi[rx]
        err = 1.01 * float(np.dot(et[rx] + g_val * hx, u1) + np.dot(hx, u2)) + _U * abs(value)
        if not need_grad:
            return value, err, None, None
        # df/dt, and its bound: the gradient in hi of sum_m [a (q_x + R_j) + b] hi_x H_j plus
        # g_f times that of sum_m a hi_x H_j, g_f = gamma for word f's own count of roundings
        gg = self._grad_gamma
        dt = np.bincount(rx, weights=y, minlength=nw + 1)
        if refine:
            # the rounding and the weights' errors as before; the traces' errors below
            q = np.zeros_like(q)
            R = np.zeros_like(R)
            u2 = RA @ np.repeat(beta * H, 2)
            if W["Bp"] is not None:
                u2 += W["Bp"] @ H
        edt = np.bincount(rx, weights=(q + gg)[rx] * u1 + u2, minlength=nw + 1)
        # rest adjoints of the value, the absolute polynomial and the bound: Ct t, At hi and
        # At e + Bt hi + R At hi, carried up the rests' trie together
        A3 = np.empty((3, nJ))  # value, absolute polynomial, bound
        CA = W["CA"]
        A3[0] = self._rest_sums(CA @ _signed(t))
        A3[1] = self._rest_sums(CA @ np.repeat(hi, 2))
        A3[2] = 0.0 if refine else self._rest_sums(CA @ np.repeat(et, 2))
        A3[2] += (R + beta) * A3[1]
        if W["Bpt"] is not None:
            A3[2] += self._rest_sums(W["Bpt"] @ hi)
        if nJ > 1:
            T3 = np.stack([t, hi, hi])
            for plo, lo, hi_, idx3, x, m in self._rest_back:
                up = A3[:, lo:hi_] * T3[:, x]
                A3[:, plo:lo] += np.bincount(idx3, weights=up.ravel(), minlength=3 * m).reshape(3, m)
            rp, rxs = self._rest_parent[1:], self._rest_x[1:]
            dt += np.bincount(rxs, weights=A3[0, 1:] * Pi[rp], minlength=nw + 1)
            edt += np.bincount(rxs, weights=(A3[2, 1:] + gg[rxs] * A3[1, 1:]) * H[rp], minlength=nw + 1)
        if refine:
            edt += self._hessian_bound(t, hi, et, W)
        # edt is a bound computed in float: its own rounding (relative 1e-12 or less, all terms
        # non-negative) is covered by the factor 1.01 on the letters' bounds (_backward)
        return value, err, dt, edt

    def _hessian_pairs(self):
        """The pattern of the polynomial's Hessian in the traces, built once: the monomials with
        k >= 2 word factors grouped by k (their indices and factors, n_k x k, and for each
        unordered pair of positions the k - 2 other positions), each entry's cell (f, v) of
        the Hessian (an entry per monomial, pair and orientation), the cells' words, the
        rounding count of one cell (k - 1 multiplications, the additions of the most entries
        one cell sums), and every monomial's factors (padded with the word "1")."""
        if self._hpairs is None:
            nw = self.n_words
            F = np.concatenate([self._leaf_x[None, :], self._rest_chain[:, self._leaf_j]]).T
            real = F < nw
            k = real.sum(axis=1)
            groups, codes = [], []
            for kk in range(2, int(k.max(initial=0)) + 1):
                ms = np.flatnonzero(k == kk)
                if not len(ms):
                    continue
                Fk = F[ms][real[ms]].reshape(len(ms), kk)
                pairs = np.array([(i, j) for i in range(kk) for j in range(i + 1, kk)])
                others = np.array([[m for m in range(kk) if m != i and m != j] for i, j in pairs],
                                  dtype=np.int64).reshape(len(pairs), kk - 2)
                groups.append((ms, Fk, others))
                fa, fb = Fk[:, pairs[:, 0]].ravel(), Fk[:, pairs[:, 1]].ravel()
                codes += [fa * (nw + 1) + fb, fb * (nw + 1) + fa]
            codes = np.concatenate(codes) if codes else np.zeros(0, dtype=np.int64)
            cells, inv = np.unique(codes, return_inverse=True)
            adds = int(np.bincount(inv).max(initial=0)) if len(inv) else 0
            self._hpairs = (groups, inv, cells // (nw + 1), cells % (nw + 1), int(k.max(initial=0)) + adds, F)
        return self._hpairs

    def _hessian_bound(self, t, hi, et, W):
        """Per word f, a bound on |df/dt_f(exact traces) - df/dt_f(computed traces)|, both with
        the exact weights, through the Hessian H of the polynomial in the traces:
        sum_v e_v (|fl(H_fv)| + Hc_fv). fl(H_fv) is H_fv at the computed traces and the float
        weights, computed in float; Hc_fv sums over the cell's entries c_m prod(hi of the
        others), with c_m = gamma_K a_m + b_m + Q (a_m + b_m) / 2 covering fl(H)'s rounding (K
        its multiplications and additions), the weights' errors b_m (a_m = |w_m|) and the
        terms of second and higher order in the errors: for one term of df/dt_f with factors
        l, prod(t + delta) - prod(t) - sum_k delta_k prod_{l != k} t is at most
        sum_{k < k'} e_k e_k' prod_{l != k, k'} hi <= Q / 2 sum_k e_k prod_{l != k} hi, Q the
        largest sum of e / hi over one monomial's factors. The absolute form of `_poly` takes
        absolute values before the sum over monomials; this one after it, where monomials
        sharing a pair (f, v) cancel (docs/engine.md, "5. Numerical accuracy")."""
        groups, inv, cf, cv, count, F = self._hessian_pairs()
        nw = self.n_words
        if not len(inv):
            return np.zeros(nw + 1)
        q = np.divide(et, hi, out=np.zeros_like(et), where=hi > 0)
        q[nw] = 0.0
        Q = float(q[F].sum(axis=1).max(initial=0.0))
        w = W["w"]
        a = np.abs(w)
        b = W["beta"] * a + (0.0 if W["bp"] is None else W["bp"])
        c = gamma(count) * a + b + 0.5 * Q * (a + b)
        vals, cvals = [], []
        for ms, Fk, others in groups:
            pt = np.multiply.reduce(t[Fk][:, others], axis=2)
            ph = np.multiply.reduce(hi[Fk][:, others], axis=2)
            v = (w[ms][:, None] * pt).ravel()
            vc = (c[ms][:, None] * ph).ravel()
            vals += [v, v]
            cvals += [vc, vc]
        Hv = np.bincount(inv, weights=np.concatenate(vals), minlength=len(cf))
        Hc = np.bincount(inv, weights=np.concatenate(cvals), minlength=len(cf))
        return np.bincount(cf, weights=(np.abs(Hv) + Hc) * et[cv], minlength=nw + 1)

    def _rest_sums(self, rows):
        """Per rest, the sum of its rows' sums (the rest side's rows of _COL_CHUNK monomials)."""
        return _bincount(self._col_rest, rows, self.n_rests)

    # --- stage 3: reverse mode -------------------------------------------------------------------

    def _by_letter(self):
        """Nodes 1.. grouped by their extended letter (a permutation and group starts), for the
        small-d path's sums of the letter gradients."""
        if self._inc is None:
            let = self._letter[1:]
            perm = np.argsort(let, kind="stable")
            letters, starts = np.unique(let[perm], return_index=True)
            self._inc = (perm, letters, starts)
        return self._inc

    def _pair_adjoints(self, X, aux, dt, edt, d, bound):
        """G_node (and its bound) from the traces: dt/dP = R and dt/dR = P, one GEMM per group;
        e(C R) + g_add |C R| <= |C| (gb |R| + e_R) + e_C (|R| + e_R) (with Lo and Hi up to
        _SMALL_D: Lo = g |X| + (1 + g) e_X, _forward_small), the e_R term bounded row by row,
        |C| rowmax(e_R) 1^T, above it."""
        N = self.n_nodes
        X2 = X.reshape(N, d * d)
        # the groups' own ranges are written first by a product (out=, no temporary and no
        # zeroing: 0 + C R is C R, which BLAS never returns as -0), the other nodes zeroed
        G = np.empty((N, d, d), dtype=X.dtype)
        G2 = G.reshape(N, d * d)
        for lo, hi in self._pair_unwritten:
            G[lo:hi] = 0.0
        eG = None
        small = d <= _SMALL_D
        if bound:
            eG = np.empty((N, d, d))
            eG2 = eG.reshape(N, d * d)
            for lo, hi in self._pair_unwritten:
                eG[lo:hi] = 0.0
            if small:
                Loa = aux["Loa"].reshape(N, d * d)
                Hi = aux["Hi"].reshape(N, d * d)
            else:
                gb = self._adjoint_rounding()
                A2 = aux["A"].reshape(N, d * d)
                rmax = aux["rmax"]
        # every group's C (and e_C, |C|) in one buffer, zero but for the groups' words, whose
        # entries are written in one scatter
        Cb, eCb, aCb, views = self._pair_buffers(dt.dtype)
        Cb[self._pair_pos] = dt[self._pair_word]
        if bound:
            eCb[self._pair_pos] = edt[self._pair_word]
            np.abs(Cb, out=aCb)
        for ((lo, hi), (olo, ohi), *_), (C, eC, aC), first in zip(self._by_prefix + self._by_suffix, views, self._pair_first):
            if first:
                np.matmul(C, X2[olo:ohi], out=G2[lo:hi])
            else:
                G2[lo:hi] += C @ X2[olo:ohi]
            if bound:
                if small:
                    if first:
                        np.matmul(aC, Loa[olo:ohi], out=eG2[lo:hi])
                    else:
                        eG2[lo:hi] += aC @ Loa[olo:ohi]
                    eG2[lo:hi] += eC @ Hi[olo:ohi]
                    continue
                F = aC * gb
                F += eC
                aC += eC
                if first:
                    np.matmul(F, A2[olo:ohi], out=eG2[lo:hi])
                else:
                    eG2[lo:hi] += F @ A2[olo:ohi]
                eG[lo:hi] += (aC @ rmax[olo:ohi])[:, :, None]
        # the sparse groups add to what the dense ones wrote (or to zeros: `_pair_unwritten`)
        for own, other, wi, _, _, sp in self._sparse_prefix + self._sparse_suffix:
            self._sparse_adjoints(X2, aux, dt, edt, d, bound, G, eG, own, other, wi, sp)
        return G, eG

    def _pair_buffers(self, dtype=float):
        """Three flat buffers (C, e_C, |C|) holding every pairing group's matrix, zero but for
        the groups' words, and per group the views of its matrices; kept between calls (no
        allocation and zeroing per call, one scatter for all groups). Per thread
        (threading.local), so concurrent evaluations never share them; nothing in them is
        read before the call that uses it has written it."""
        key = "pairs" if dtype == float else "pairs_complex"  # the complex step's own set
        bufs = getattr(self._work, key, None)
        if bufs is None:
            flat = [np.zeros(self._pair_size, dtype=dtype) for _ in range(3)]
            views = [tuple(b[o:o + (hi - lo) * (ohi - olo)].reshape(hi - lo, ohi - olo) for b in flat)
                     for ((lo, hi), (olo, ohi), *_), o in zip(self._by_prefix + self._by_suffix, self._pair_offsets)]
            bufs = (*flat, views)
            setattr(self._work, key, bufs)
        return bufs

    def _sparse_adjoints(self, X2, aux, dt, edt, d, bound, G, eG, own, other, wi, sp):
        """A sparse group's share of _pair_adjoints: C R with C the group's (own x partner)
        matrix of df/dt in CSR form, and the same bound (the rounding of a sum over a row's
        non-zeros is covered by that of the dense product, _adjoint_rounding)."""
        from scipy import sparse

        (lo, hi), (olo, ohi) = own, other
        N = X2.shape[0]
        order, indices, indptr = sp
        shape = (hi - lo, ohi - olo)
        C = sparse.csr_matrix((dt[wi[order]], indices, indptr), shape=shape)
        G.reshape(N, d * d)[lo:hi] += C @ X2[olo:ohi]
        if not bound:
            return
        eG2 = eG.reshape(N, d * d)
        aC = abs(C)
        eC = sparse.csr_matrix((edt[wi[order]], indices, indptr), shape=shape)
        if d > _SMALL_D:
            eG2[lo:hi] += (aC * self._adjoint_rounding() + eC) @ aux["A"].reshape(N, d * d)[olo:ohi]
            eG[lo:hi] += ((aC + eC) @ aux["rmax"][olo:ohi])[:, :, None]
        else:
            eG2[lo:hi] += aC @ aux["Loa"].reshape(N, d * d)[olo:ohi]
            eG2[lo:hi] += eC @ aux["Hi"].reshape(N, d * d)[olo:ohi]

    def _backward(self, X, aux, M, lb, dt, edt, d, bound):
        """{letter: df/dM_letter} (and with bound {letter: entrywise error bound}): reverse
        mode through the pairing and the trie, deepest level first (module docstring for the
        bounds). A level's adjoints are complete once the deeper levels are done:
        G_parent += G_node M^T and df/dM_c += X_parent^T G_node."""
        N, L = self.n_nodes, self.n_letters
        G, eG = self._pair_adjoints(X, aux, dt, edt, d, bound)
        MT = M.transpose(0, 2, 1)
        if bound and d > _SMALL_D:
            AX = aux["A"]
            g_add = gamma(self._max_adds + 1)
        want = np.zeros(2 * L, dtype=bool)
        for c in self.grad_letters:
            want[c] = want[c + L] = True
        gsum = np.zeros((2 * L, d, d), dtype=G.dtype)
        egsum = np.zeros((2 * L, d, d)) if bound else None
        if d <= _SMALL_D:
            # small d: stacked products per level, scattered into the parents round by round
            # (in node order, as run by run); X_parent^T G node by node (inner dimension d),
            # then summed per letter over at most N nodes
            gs2 = gsum.reshape(2 * L, d * d)
            if bound:
                egs2 = egsum.reshape(2 * L, d * d)
                hiT, Kb = lb["hi"].transpose(0, 2, 1), lb["Kb"]
            for lv in reversed(self._levels):
                if lv.phi == 1:
                    continue  # children of the root: its adjoint is not used
                lo, hi, let = lv.lo, lv.hi, lv.let
                Gs = G[lo:hi]
                back = np.matmul(Gs, MT[let])
                if bound:
                    # e(G M^T) + g_add |G M^T| <= e_G hi^T + |G| ((gamma_d + g_add) hi + e_M)^T
                    # = e_G hi^T + |G| Kb (g_add for the addition into the parent)
                    eback = np.matmul(eG[lo:hi], hiT[let])
                    eback += np.matmul(np.abs(Gs), Kb[let])
                for idx, rp in lv.rounds:  # within a round every parent is distinct
                    G[rp] += back[idx]
                    if bound:
                        eG[rp] += eback[idx]
            # all nodes at once: X_parent^T G node by node, summed per letter
            perm, letters, starts = self._by_letter()
            par = self._letter_par
            Gs = G[1:][perm]
            gs2[letters] += np.add.reduceat(np.matmul(X[par].transpose(0, 2, 1), Gs), starts).reshape(len(letters), d * d)
            if bound:
                # |X~^T G~ - fl(X^T G)| <= (|X| + e_X)^T e_G + (g |X| + e_X)^T |G| with
                # g = gamma_{d + N + 1} (Hi and Loa, _forward_small)
                eZ = np.matmul(aux["Hi"][par].transpose(0, 2, 1), eG[1:][perm])
                eZ += np.matmul(aux["Loa"][par].transpose(0, 2, 1), np.abs(Gs))
                egs2[letters] += np.add.reduceat(eZ, starts).reshape(len(letters), d * d)
        else:
            # large d: one GEMM per piece of a letter run (every parent distinct within a
            # run); X_parent^T G summed over the piece in one GEMM (inner dimension k d)
            if bound:
                g_grad = gamma(N * d + 1)
                gd = gamma(d) + g_add  # g_add |G M^T| <= g_add |G| hi^T: the sum into the parent
                hiTA = lb["hiTA"]
                cmax = aux["cmax"]
                ones = np.ones(d)
            for lv in reversed(self._levels):
                lo = lv.lo
                for c, a, b, pp in self._chunks(lv, d):
                    k = b - a
                    Gs = G[lo + a:lo + b]
                    G2s = Gs.reshape(k * d, d)
                    G[pp] += (G2s @ MT[c]).reshape(k, d, d)
                    here = want[c]
                    if here:
                        gsum[c] += X[pp].reshape(k * d, d).T @ G2s
                    if not bound:
                        continue
                    for a2, b2, pp2 in self._pieces(a, b, pp, d):
                        k = b2 - a2
                        # e(G M^T) + g_add |G M^T| <= [e_G + gd |G| | rowsum(|G|)] [hi^T; rowE]
                        aG = np.abs(G[lo + a2:lo + b2])
                        T = np.empty((k, d, d + 1))
                        T[:, :, d] = (aG.reshape(k * d, d) @ ones).reshape(k, d)  # row sums (gemv)
                        np.multiply(aG, gd, out=T[:, :, :d])
                        T[:, :, :d] += eG[lo + a2:lo + b2]
                        eG[pp2] += (T.reshape(k * d, d + 1) @ hiTA[c]).reshape(k, d, d)
                        if here:
                            # |X~^T G~ - fl(X^T G)| <= |X|^T (e_G + g |G|) + colmax(e_X) colsum(e_G + |G|)
                            F = T[:, :, :d]
                            colsum = ones @ F + (1.0 - gd) * (ones @ aG)
                            F += (g_grad - gd) * aG
                            egsum[c] += AX[pp2].reshape(k * d, d).T @ F.reshape(k * d, d)
                            egsum[c] += cmax[pp2].T @ colsum
        grads, egrads = {}, {}
        for c in self.grad_letters:
            grads[c] = gsum[c] + gsum[c + L].T
            if bound:
                egrads[c] = 1.01 * (egsum[c] + egsum[c + L].T)
        return grads, (egrads if bound else None)

    # --- public evaluation -----------------------------------------------------------------------

    def evaluate(self, mats, n, d, need_grad=True, scales=None, errs=None, refine=False):
        """Float evaluation with a rigorous error bound.

        mats: array (letters, d, d) indexed by letter code; scales: one weight per part;
        errs: entrywise bounds on the letters' own errors (default 0: letters exact as given).
        Returns (value, {letter: df/dM}, error bound on the value, {letter: entrywise error
        bound on df/dM}); the bounds come from running error analysis (module docstring).
        """
        mats = np.asarray(mats, dtype=float)
        errs = np.zeros_like(mats) if errs is None else np.asarray(errs, dtype=float)
        W = self._weights(n, d, scales)
        M, lb = self._letter_stacks(mats, errs, d, True)
        X, aux = self._forward(M, lb, d, True)
        t, et = self._traces(X, aux, d, True)
        value, err, dt, edt = self._poly(t, et, W, need_grad, True, refine)
        if not need_grad:
            return value, {}, err, {}
        grads, egrads = self._backward(X, aux, M, lb, dt, edt, d, True)
        return value, grads, err, egrads

    def value_and_grad(self, mats, n, d, need_grad=True, scales=None):
        """Float evaluation without the bound: (value, {letter code: df/dM_letter}).

        Complex mats are evaluated in complex arithmetic by the same operations (no absolute
        value or conjugate on this path, so the result is the polynomial's analytic extension):
        with mats = M + i h V, Im(df/dM) / h is the derivative of the gradient along V to
        O(h^2) with no cancellation (the complex step, Squire and Trapp, SIAM Rev. 40, 1998)."""
        mats = np.asarray(mats)
        mats = mats.astype(complex if np.iscomplexobj(mats) else float, copy=False)
        W = self._weights(n, d, scales)
        M = self._letter_stacks(mats, None, d, False)[0]
        X, _ = self._forward(M, None, d, False)
        t, _ = self._traces(X, None, d, False)
        value, _, dt, _ = self._poly(t, None, W, need_grad, False)
        if not need_grad:
            return value, {}
        return value, self._backward(X, None, M, None, dt, None, d, False)[0]

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

    def _exact_products(self, mats, d, nodes):
        """The exact node products X[k] for the nodes `nodes` and their ancestors (node indices
        grow with depth, so every parent is formed before its children)."""
        one = np.array([[Fraction(int(i == j)) for j in range(d)] for i in range(d)], dtype=object)
        ext = [np.asarray(m, dtype=object) for m in mats] + [np.asarray(m, dtype=object).T for m in mats]
        need = np.zeros(self.n_nodes, dtype=bool)
        need[np.asarray(sorted(nodes), dtype=np.int64)] = True
        for lv in reversed(self._levels):
            need[lv.par[need[lv.lo:lv.hi]]] = True
        X = [one] + [None] * (self.n_nodes - 1)
        for k in np.flatnonzero(need[1:]) + 1:
            X[k] = X[int(self._parent[k])].dot(ext[int(self._letter[k])])
        return X, ext

    def value_exact(self, mats, n, d, scales=None):
        """Exact evaluation: mats maps letter code to an object array of Fractions; n an int
        (or math.inf); scales one exact weight per part. Returns a Fraction."""
        return self.value_and_grad_exact(mats, n, d, scales, need_grad=False)[0]

    def value_and_grad_exact(self, mats, n, d, scales=None, need_grad=True):
        """Exact value and {letter: df/dM_letter} (object arrays of Fractions): the same
        reverse mode as the float path, in rational arithmetic."""
        nw = self.n_words
        s = [Fraction(1)] * self.n_parts if scales is None else [Fraction(x) for x in scales]
        inv_n = Fraction(0) if n == float("inf") else Fraction(1, int(n))
        facs = self._exact_terms()
        # exact weight per monomial: sum of c s_part n^-p d^q over its terms, in integers over
        # one common denominator (a gcd per monomial instead of per term)
        table = {}
        for key in set(zip(self.part.tolist(), self.power.tolist(), self.dpow.tolist())):
            part, p, dp = key
            table[key] = Fraction(0) if p and n == float("inf") else s[part] * inv_n**p * Fraction(d) ** dp
        den = math.lcm(*(f.denominator for f in table.values())) if table else 1
        num = {key: int(f * den) for key, f in table.items()}
        wsum = [0] * self.n_monomials
        for c, part, p, dp, m in zip(self.coef.tolist(), self.part.tolist(), self.power.tolist(), self.dpow.tolist(), self._term_mono.tolist()):
            wsum[m] += c * num[(part, p, dp)]
        wm = [Fraction(v, den) if v else 0 for v in wsum]
        # only the words of monomials with a non-zero weight (at n = inf, the n^0 terms alone)
        used = sorted({f for w, fac in zip(wm, facs) if w for f in fac} - {nw})
        X, ext = self._exact_products(mats, d, [int(self._word_pre[i]) for i in used] + [int(self._word_suf[i]) for i in used])
        t = [None] * nw + [Fraction(1)]
        for i in used:
            t[i] = sum((X[int(self._word_pre[i])] * X[int(self._word_suf[i])]).ravel(), Fraction(0))
        total = Fraction(0)
        dt = [Fraction(0)] * (nw + 1)
        for w, fac in zip(wm, facs):
            if not w:
                continue
            k = len(fac)
            vals = [t[f] for f in fac]
            pre = [w] * (k + 1)  # pre[i] = w t_0 ... t_{i-1}
            for i in range(k):
                pre[i + 1] = pre[i] * vals[i]
            total += pre[k]
            if need_grad:
                suf = Fraction(1)  # t_{i+1} ... t_{k-1}
                for i in range(k - 1, -1, -1):
                    dt[fac[i]] += pre[i] * suf
                    suf *= vals[i]
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
