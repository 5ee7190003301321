"""The exact engine: E[prod_j tr(V_j)] for words V_j in one Wishart letter and constant letters.

The random letter is S = X X^T / n (X a d x n matrix of i.i.d. N(0, 1) entries) or its
centred form D = S - I; every other letter is a constant d x d matrix, and each letter has a
named transpose. The engine knows trace words and matrices, not models: `looptheory.loss`
turns the looped model into words.

Mathematics (docs/derivations.md, ../shared/design/exact-expectations.md): Gaussian
integration by parts (Stein's identity) on the columns of X removes one random letter at a
time. For the uncentred letter, with the first factor rotated to tr(S R) and F the other factors,

  E[tr(S R) F] = E[tr(R) F]
     + (1/n) sum_{R = R1 S R2}        E[tr(R1^T S R2) F] + E[tr(R1 S) tr(R2) F]
     + (1/n) sum_{S in V, V in F}     E[tr(K S R) F'] + E[tr(K^T S R) F'],   K = V2 V1, F' = F / tr(V).

For D = S - I the first term vanishes and every S produced on the right is I + D, so each
right-hand term splits in two; every term still has fewer random letters. Results are exact
polynomials in 1/n with integer coefficients over products of traces of constant words; the
empty word's trace is d. States (multisets of words) are memoised under a canonical key:
a trace is invariant under rotation and under reversal-with-transposition, and factors commute.

The centred letter is what makes float evaluation stable near the optimum at large n: moments
of D are O(1/n), so small losses are never formed by cancelling large terms.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

Word = tuple  # tuple of letter codes (ints)


@dataclass(frozen=True)
class Alphabet:
    """Letter names, the code of each letter's transpose, and which letter is random.

    `names[c]` is the name of code c, `transpose[c]` the code of its transpose (itself for a
    symmetric letter), `random` the code of the random letter, `centred` whether that letter
    is D = S - I (True) or S (False).
    """

    names: tuple
    transpose: tuple
    random: int
    centred: bool

    def __post_init__(self):
        k = len(self.names)
        if len(self.transpose) != k or sorted(set(self.transpose)) != sorted(self.transpose):
            raise ValueError("transpose: expected a permutation of the letter codes")
        if any(self.transpose[self.transpose[c]] != c for c in range(k)):
            raise ValueError("transpose: must be an involution")
        if self.transpose[self.random] != self.random:
            raise ValueError("random: the random letter must be symmetric")

    def code(self, name: str) -> int:
        return self.names.index(name)

    def word(self, text) -> Word:
        """A word from a sequence of letter names."""
        return tuple(self.code(x) for x in text)

    def spell(self, word: Word) -> str:
        return " ".join(self.names[c] for c in word) if word else "I"


class Expansion(dict):
    """An exact expectation: {(p, words): integer coefficient} meaning
    sum coef * n^{-p} * prod_{w in words} tr(w), with tr(()) = d."""

    def __init__(self, alphabet: Alphabet, *args):
        super().__init__(*args)
        self.alphabet = alphabet

    @property
    def max_power(self) -> int:
        return max((p for p, _ in self), default=0)

    def constant_words(self) -> list:
        """The distinct constant words that appear, in a fixed order."""
        seen = {}
        for _, words in self:
            for w in words:
                seen.setdefault(w, None)
        return sorted(seen, key=lambda w: (len(w), w))

    def evaluate(self, traces, n):
        """sum coef n^{-p} prod traces[w]; `traces` maps each word to its trace (() to d).
        n may be an int, Fraction, float, math.inf or a SymPy symbol."""
        total = 0
        for (p, words), c in self.items():
            if p > 0 and n == float("inf"):
                continue
            term = c
            for w in words:
                term = term * traces[w]
            total = total + (term / n**p if p else term)
        return total

    def __repr__(self):
        parts = []
        for (p, words), c in sorted(self.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            tr = " ".join(f"tr({self.alphabet.spell(w)})" for w in words)
            parts.append(f"{c:+d} n^-{p} {tr}")
        return "Expansion(" + "; ".join(parts) + ")"


class Engine:
    """Memoised Gaussian integration by parts over canonical states of one alphabet."""

    def __init__(self, alphabet: Alphabet):
        self.alphabet = alphabet
        self._T = alphabet.transpose
        self._r = alphabet.random
        self._canon = {}
        self._memo = {(): {(0, ()): 1}}

    # --- words -------------------------------------------------------------------------
    def transpose(self, w: Word) -> Word:
        T = self._T
        return tuple(T[c] for c in reversed(w))

    def canonical(self, w: Word) -> Word:
        """Smallest rotation of w or of its transpose: one key per trace value."""
        c = self._canon.get(w)
        if c is None:
            if len(w) <= 1:
                c = w
            else:
                wt = self.transpose(w)
                k = len(w)
                c = min(min(w[i:] + w[:i] for i in range(k)), min(wt[i:] + wt[:i] for i in range(k)))
            self._canon[w] = c
        return c

    def _split(self, words):
        """(sorted constant words, sorted random words), each canonical."""
        r = self._r
        consts, rands = [], []
        for w in words:
            w = tuple(w)
            (rands if r in w else consts).append(self.canonical(w))
        consts.sort()
        rands.sort()
        return tuple(consts), tuple(rands)

    # --- the recursion -------------------------------------------------------------------
    def _children(self, state):
        """Stein's identity on the first random letter of the first factor:
        yields (power of 1/n added, list of words) with coefficient 1 each."""
        r, tr = self._r, self.transpose
        w = state[0]
        F = list(state[1:])
        i = w.index(r)
        R = w[i + 1:] + w[:i]
        centred = self.alphabet.centred
        if not centred:
            yield 0, [R] + F
        for j, c in enumerate(R):
            if c != r:
                continue
            R1, R2 = R[:j], R[j + 1:]
            t1 = tr(R1)
            if centred:
                yield 1, [t1 + R2] + F
                yield 1, [R1, R2] + F
            yield 1, [t1 + (r,) + R2] + F
            yield 1, [R1 + (r,), R2] + F
        for a, V in enumerate(F):
            Fp = F[:a] + F[a + 1:]
            for j, c in enumerate(V):
                if c != r:
                    continue
                K = V[j + 1:] + V[:j]
                tK = tr(K)
                if centred:
                    yield 1, [K + R] + Fp
                    yield 1, [tK + R] + Fp
                yield 1, [K + (r,) + R] + Fp
                yield 1, [tK + (r,) + R] + Fp

    def _expect_state(self, state):
        hit = self._memo.get(state)
        if hit is not None:
            return hit
        grouped = defaultdict(int)
        for dp, words in self._children(state):
            consts, rands = self._split(words)
            grouped[(dp, rands, consts)] += 1
        out = defaultdict(int)
        for (dp, rands, consts), mult in grouped.items():
            sub = self._expect_state(rands)
            for (p, ck), c in sub.items():
                key = (p + dp, tuple(sorted(ck + consts)) if consts else ck)
                out[key] += mult * c
        res = {k: v for k, v in out.items() if v}
        self._memo[state] = res
        return res

    def expect(self, terms) -> Expansion:
        """E[sum_k coef_k prod_j tr(words_kj)] for terms = iterable of (int coef, words)."""
        grouped = defaultdict(int)
        for coef, words in terms:
            consts, rands = self._split(words)
            grouped[(rands, consts)] += coef
        out = defaultdict(int)
        for (rands, consts), coef in grouped.items():
            if not coef:
                continue
            for (p, ck), c in self._expect_state(rands).items():
                out[(p, tuple(sorted(ck + consts)) if consts else ck)] += coef * c
        return Expansion(self.alphabet, {k: v for k, v in out.items() if v})

    @property
    def states(self) -> int:
        return len(self._memo)


def expect(alphabet: Alphabet, terms) -> Expansion:
    """One-off expectation with a fresh engine (see Engine.expect)."""
    return Engine(alphabet).expect(terms)


# --- fast evaluation -------------------------------------------------------------------------


class CompiledExpansion:
    """Expansions laid out for fast evaluation of their (weighted) sum and of its gradient with
    respect to each constant letter matrix.

    Several expansions (the parts of a loss) share one layout; each evaluation weighs part k
    by scales[k]. Word products are computed once per distinct prefix (a trie evaluated level by
    level with batched matrix products). Factors tr(()) = d are folded into a power of d. For
    tr(M_1 ... M_k) the derivative with respect to M_i is (M_{i+1} ... M_k M_1 ... M_{i-1})^T,
    so the gradient with respect to a letter is the sum over its occurrences of
    (df/dtr(w)) times the transposed rest of the word.
    """

    def __init__(self, expansions, grad_letters=()):
        if isinstance(expansions, Expansion):
            expansions = [expansions]
        self.alphabet = expansions[0].alphabet
        seen = {}
        for e in expansions:
            for w in e.constant_words():
                if w:
                    seen.setdefault(w, None)
        words = sorted(seen, key=lambda w: (len(w), w))
        self.words = words
        widx = {w: i for i, w in enumerate(words)}
        nodes = {(): 0}
        parent = [0]
        letter = [-1]
        depth = [0]

        def node_of(seq):
            k = nodes.get(seq)
            if k is None:
                pk = node_of(seq[:-1])
                k = len(parent)
                nodes[seq] = k
                parent.append(pk)
                letter.append(seq[-1])
                depth.append(len(seq))
            return k

        self.word_node = np.array([node_of(w) for w in words], dtype=np.intp)
        self.grad_letters = tuple(grad_letters)
        occ = {g: ([], []) for g in self.grad_letters}
        for i, w in enumerate(words):
            for j, c in enumerate(w):
                if c in occ:
                    occ[c][0].append(i)
                    occ[c][1].append(node_of(w[j + 1:] + w[:j]))
        self.occurrences = {g: (np.array(a, dtype=np.intp), np.array(b, dtype=np.intp)) for g, (a, b) in occ.items()}
        self.parent = np.array(parent, dtype=np.intp)
        self.letter = np.array(letter, dtype=np.intp)
        depth = np.array(depth)
        self.levels = [np.flatnonzero(depth == k) for k in range(1, int(depth.max()) + 1)] if len(depth) > 1 else []
        # Within a level, nodes that append the same letter form one (k d) x d by d x d GEMM.
        self._steps = []
        for ids in self.levels:
            let = self.letter[ids]
            for c in np.unique(let):
                sel = ids[let == c]
                self._steps.append((sel, self.parent[sel], int(c)))
        self.n_nodes = len(parent)
        coef, power, dpow, part, facs = [], [], [], [], []
        for k, e in enumerate(expansions):
            for (p, ws), c in e.items():
                coef.append(c)
                power.append(p)
                dpow.append(sum(1 for w in ws if not w))
                part.append(k)
                facs.append([widx[w] for w in ws if w])
        kmax = max((len(f) for f in facs), default=0)
        fac = np.full((len(facs), max(kmax, 1)), len(words), dtype=np.intp)  # pad: a trace of 1
        for t, f in enumerate(facs):
            fac[t, : len(f)] = f
        self.factors = fac
        self._factors_t = np.ascontiguousarray(fac.T)  # one contiguous row per factor slot
        self._factors_flat = self._factors_t.ravel()
        self.coef = coef
        self.coef_float = np.array([float(c) for c in coef])
        self.power = np.array(power, dtype=np.intp)
        self.dpow = np.array(dpow, dtype=np.intp)
        self.part = np.array(part, dtype=np.intp)
        self.n_parts = len(expansions)

    def __len__(self):
        return len(self.coef)

    def _products(self, mats, d):
        P = np.empty((self.n_nodes, d, d))
        P[0] = np.eye(d)
        for sel, par, c in self._steps:
            P[sel] = (P[par].reshape(-1, d) @ mats[c]).reshape(-1, d, d)
        return P

    def _weights(self, n, d, scales):
        s = np.ones(self.n_parts) if scales is None else np.asarray(scales, dtype=float)
        dn = float(d) ** np.arange(self.dpow.max() + 1)
        nn = (np.arange(self.power.max() + 1) == 0).astype(float) if n == float("inf") else float(n) ** -np.arange(self.power.max() + 1.0)
        # one small table, gathered per term: no per-term powers
        table = s[:, None, None] * dn[None, :, None] * nn[None, None, :]
        return self.coef_float * table[self.part, self.dpow, self.power]

    def value_and_grad(self, mats, n, d, need_grad=True, scales=None):
        """Float evaluation. mats: array (letters, d, d) indexed by letter code; scales: one
        weight per part (default 1). Returns (value, {letter code: df/dM_letter})."""
        mats = np.asarray(mats, dtype=float)
        P = self._products(mats, d)
        t = np.trace(P[self.word_node], axis1=1, axis2=2)
        tt = np.append(t, 1.0)
        vals = tt[self._factors_t]  # (slots, terms)
        w = self._weights(n, d, scales)
        k = vals.shape[0]
        if not need_grad:
            return float(np.dot(w, np.prod(vals, axis=0))), {}
        # df/dtr(w): product of the other factors, by prefix and suffix products (no division).
        pre = np.empty_like(vals)
        suf = np.empty_like(vals)
        pre[0] = w
        suf[k - 1] = 1.0
        for j in range(1, k):
            np.multiply(pre[j - 1], vals[j - 1], out=pre[j])
            np.multiply(suf[k - j], vals[k - j], out=suf[k - 1 - j])
        value = float(np.dot(pre[k - 1], vals[k - 1]))
        pre *= suf
        dt = np.bincount(self._factors_flat, weights=pre.ravel(), minlength=len(tt))
        grads = {}
        for g, (wi, rest) in self.occurrences.items():
            if len(wi) == 0:
                grads[g] = np.zeros((d, d))
            else:
                grads[g] = np.tensordot(dt[wi], P[rest], axes=1).T
        return value, grads

    def value_exact(self, mats, n, d, scales=None):
        """Exact evaluation: mats maps letter code to an object array of Fractions; n an int
        (or math.inf); scales one exact weight per part. Returns a Fraction."""
        prods = {0: np.array([[Fraction(int(i == j)) for j in range(d)] for i in range(d)], dtype=object)}
        for ids in self.levels:
            for k in ids:
                prods[int(k)] = prods[int(self.parent[k])].dot(mats[int(self.letter[k])])
        t = [sum(np.diagonal(prods[int(node)]), Fraction(0)) for node in self.word_node]
        t.append(Fraction(1))
        s = [Fraction(1)] * self.n_parts if scales is None else [Fraction(x) for x in scales]
        inv_n = Fraction(0) if n == float("inf") else Fraction(1, int(n))
        total = Fraction(0)
        for c, p, dp, part, fac in zip(self.coef, self.power, self.dpow, self.part, self.factors):
            if p and n == float("inf"):
                continue
            if s[part] == 0:
                continue
            term = Fraction(c) * s[part] * inv_n ** int(p) * Fraction(d) ** int(dp)
            for f in fac:
                term *= t[f]
            total += term
        return total
