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
    """An Expansion laid out for fast evaluation of its value and of its gradient with respect
    to each constant letter matrix.

    Word products are computed once per distinct prefix (a trie evaluated level by level with
    batched matrix products). For tr(M_1 ... M_k) the derivative with respect to M_i is
    (M_{i+1} ... M_k M_1 ... M_{i-1})^T, so the gradient with respect to a letter is
    sum over its occurrences of (df/dtr(w)) times the transposed rest of the word.
    """

    def __init__(self, expansion: Expansion, grad_letters=()):
        self.alphabet = expansion.alphabet
        words = expansion.constant_words()
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
        self.empty_word = np.array([len(w) == 0 for w in words], dtype=bool)
        self.grad_letters = tuple(grad_letters)
        occ = {g: ([], []) for g in self.grad_letters}
        for i, w in enumerate(words):
            for j, c in enumerate(w):
                if c in occ:
                    rest = w[j + 1:] + w[:j]
                    occ[c][0].append(i)
                    occ[c][1].append(node_of(rest))
        self.occurrences = {g: (np.array(a, dtype=np.intp), np.array(b, dtype=np.intp)) for g, (a, b) in occ.items()}
        self.parent = np.array(parent, dtype=np.intp)
        self.letter = np.array(letter, dtype=np.intp)
        depth = np.array(depth)
        self.levels = [np.flatnonzero(depth == k) for k in range(1, int(depth.max()) + 1)] if len(depth) > 1 else []
        items = list(expansion.items())
        self.coef = [c for _, c in items]
        self.power = np.array([p for (p, _), _ in items], dtype=np.intp)
        kmax = max((len(ws) for (_, ws), _ in items), default=0)
        fac = np.full((len(items), max(kmax, 1)), len(words), dtype=np.intp)  # pad: a trace of 1
        for t, ((_, ws), _) in enumerate(items):
            fac[t, : len(ws)] = [widx[w] for w in ws]
        self.factors = fac
        self.coef_float = np.array([float(c) for c in self.coef])
        self.n_nodes = len(parent)

    def __len__(self):
        return len(self.coef)

    def _products(self, mats, d):
        P = np.empty((self.n_nodes, d, d))
        P[0] = np.eye(d)
        for ids in self.levels:
            P[ids] = P[self.parent[ids]] @ mats[self.letter[ids]]
        return P

    def _weights(self, n):
        if n == float("inf"):
            return np.where(self.power == 0, self.coef_float, 0.0)
        return self.coef_float * float(n) ** (-self.power.astype(float))

    def value_and_grad(self, mats, n, d, need_grad=True):
        """Float evaluation. mats: array (letters, d, d) indexed by letter code.
        Returns (value, {letter code: df/dM_letter})."""
        mats = np.asarray(mats, dtype=float)
        P = self._products(mats, d)
        t = np.trace(P[self.word_node], axis1=1, axis2=2)
        t = np.where(self.empty_word, float(d), t)
        tt = np.append(t, 1.0)
        vals = tt[self.factors]
        w = self._weights(n)
        terms = w * np.prod(vals, axis=1)
        value = float(np.sum(terms))
        if not need_grad:
            return value, {}
        # df/dtr(w): product of the other factors, by prefix and suffix products (no division).
        k = vals.shape[1]
        pre = np.ones_like(vals)
        suf = np.ones_like(vals)
        for j in range(1, k):
            pre[:, j] = pre[:, j - 1] * vals[:, j - 1]
            suf[:, k - 1 - j] = suf[:, k - j] * vals[:, k - j]
        dterm = w[:, None] * pre * suf
        dt = np.zeros(len(tt))
        np.add.at(dt, self.factors.ravel(), dterm.ravel())
        grads = {}
        for g, (wi, rest) in self.occurrences.items():
            if len(wi) == 0:
                grads[g] = np.zeros((d, d))
            else:
                grads[g] = np.einsum("k,kij->ji", dt[wi], P[rest])
        return value, grads

    def value_exact(self, mats, n, d):
        """Exact evaluation: mats maps letter code to an object array of Fractions;
        n an int (or math.inf). Returns a Fraction."""
        prods = {0: np.array([[Fraction(int(i == j)) for j in range(d)] for i in range(d)], dtype=object)}
        for ids in self.levels:
            for k in ids:
                prods[int(k)] = prods[int(self.parent[k])].dot(mats[int(self.letter[k])])
        t = []
        for i, node in enumerate(self.word_node):
            t.append(Fraction(d) if self.empty_word[i] else sum(np.diagonal(prods[int(node)]), Fraction(0)))
        t.append(Fraction(1))
        inv_n = Fraction(0) if n == float("inf") else Fraction(1, int(n))
        total = Fraction(0)
        for c, p, fac in zip(self.coef, self.power, self.factors):
            if p and n == float("inf"):
                continue
            term = Fraction(c) * inv_n ** int(p)
            for f in fac:
                term *= t[f]
            total += term
        return total
