"""The exact engine: E[prod_j tr(V_j)] for words V_j in one Wishart letter and constant letters.

The random letter is S = X X^T / n (X a d x n matrix of i.i.d. N(0, 1) entries); every other
letter is a constant d x d matrix, and each letter has a named transpose. The engine knows trace words and matrices, not models: `looptheory.loss`
turns the looped model into words.

Mathematics (docs/derivations.md, section 3; docs/engine.md): Gaussian
integration by parts (Stein's identity) on the columns of X removes one random letter at a
time. With the factor holding the chosen S rotated to tr(S R) and F the other factors,

  E[tr(S R) F] = E[tr(R) F]
     + (1/n) sum_{R = R1 S R2}        E[tr(R1^T S R2) F] + E[tr(R1 S) tr(R2) F]
     + (1/n) sum_{S in V, V in F}     E[tr(K S R) F'] + E[tr(K^T S R) F'],   K = V2 V1, F' = F / tr(V).

Every term has one S fewer. Results are exact polynomials in 1/n with integer coefficients
over products of traces of constant words; the empty word's trace is d. States (multisets of
words) are keyed canonically: a trace is invariant under rotation and under
reversal-with-transposition, and factors commute.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .compensated import gamma

Word = tuple  # tuple of letter codes (ints)


@dataclass(frozen=True)
class Alphabet:
    """Letter names, the code of each letter's transpose, and which letter is the random S.

    `names[c]` is the name of code c (at most 256 letters), `transpose[c]` the code of its
    transpose (itself for a symmetric letter), `random` the code of S = X X^T / n.
    """

    names: tuple
    transpose: tuple
    random: int

    def __post_init__(self):
        k = len(self.names)
        if not 0 < k <= 256:
            raise ValueError("names: expected 1 to 256 letters")
        if sorted(self.transpose) != list(range(k)):
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
    sum coef * n^{-p} * prod_{w in words} tr(w), with tr(()) = d. Words are canonical tuples of
    letter codes, sorted within a key."""

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

    def to_json(self) -> dict:
        """A JSON-able form: letters as characters chr(48 + code), one string per word."""
        return {
            "format": 1,
            "names": list(self.alphabet.names),
            "transpose": list(self.alphabet.transpose),
            "random": self.alphabet.random,
            "terms": [[p, c, ["".join(chr(48 + x) for x in w) for w in ws]] for (p, ws), c in sorted(self.items())],
        }

    @classmethod
    def from_json(cls, data: dict) -> "Expansion":
        if data.get("format") != 1:
            raise ValueError(f"data: unknown expansion format {data.get('format')!r}")
        al = Alphabet(tuple(data["names"]), tuple(data["transpose"]), data["random"])
        return cls(al, {(p, tuple(tuple(ord(ch) - 48 for ch in w) for w in ws)): c for p, c, ws in data["terms"]})

    def __repr__(self):
        parts = []
        for (p, words), c in sorted(self.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            tr = " ".join(f"tr({self.alphabet.spell(w)})" for w in words)
            parts.append(f"{c:+d} n^-{p} {tr}")
        return "Expansion(" + "; ".join(parts) + ")"


_P = 1 << 40  # a key packs (power of 1/n) * _P + (id of the multiset of constant words)


class Engine:
    """Gaussian integration by parts, organised as a push over levels of S-count.

    Every application of Stein's identity removes exactly one S, so the states (multisets of
    canonical words that contain S) fall into levels by their number of S. Level m holds
    {state: {key: coefficient}}, the key recording the power of 1/n and the constant traces
    split off so far. Each state is expanded once and its whole combination pushed into its
    children on level m - 1; the answer is the empty state on level 0. Only two levels live at
    a time and no per-state results are stored, so the cost is the number of (state, key)
    pairs pushed, not the size of memoised sub-results (loops = 6: 1.3 M states, under a
    minute, about 1 GB; the earlier memoised pull needed hours).

    Any choice of which S to eliminate gives the same (canonical) result; the choice changes
    how many states are reached. With a `hint` letter (one that occurs once per word, like W in
    tr(... W ...)) the S right after it is taken, else the first S of the longest factor:
    this reaches about 4 times fewer states than "the first S" for the loss's words.
    Words are bytes internally (one byte per letter code).
    """

    def __init__(self, alphabet: Alphabet, centred: bool = False):
        if not isinstance(centred, bool):
            raise TypeError(f"centred: expected a bool, got {centred!r}")
        self.alphabet = alphabet
        #: The random letter stands for D = S - I instead of S (docs/engine.md, "5. Numerical accuracy").
        self.centred = centred
        self._Ttab = bytes(alphabet.transpose) + bytes(range(len(alphabet.transpose), 256))
        self._rb = bytes([alphabet.random])
        self._can = {}
        self._word_id = {}
        self._words = []
        self._ms_id = {(): 0}
        self._ms = [()]
        self._c_id = {(): 0}
        self._cs = [()]
        self._kmaps = {}
        self.states = 0

    # --- words -------------------------------------------------------------------------
    def transpose(self, w: Word) -> Word:
        T = self.alphabet.transpose
        return tuple(T[c] for c in reversed(w))

    def canonical(self, w: Word) -> Word:
        """The canonical representative of tr(w): the least rotation of w or of its transpose
        (for a word with S, the least among rotations that start with S)."""
        return tuple(self._canon(bytes(w)))

    def _canon(self, w: bytes) -> bytes:
        c = self._can.get(w)
        if c is not None:
            return c
        k = len(w)
        wt = w[::-1].translate(self._Ttab)
        if k <= 1:
            c = min(w, wt)
        else:
            ww, tt = w + w, wt + wt
            r = self.alphabet.random
            if r in w:
                cands = [ww[i:i + k] for i in range(k) if w[i] == r] + [tt[i:i + k] for i in range(k) if wt[i] == r]
            else:
                cands = [ww[i:i + k] for i in range(k)] + [tt[i:i + k] for i in range(k)]
            c = min(cands)
        self._can[w] = c
        return c

    def _cid(self, consts) -> int:
        """Id of the sorted multiset of canonical constant words."""
        ids = []
        for w in consts:
            c = self._canon(w)
            i = self._word_id.get(c)
            if i is None:
                i = self._word_id[c] = len(self._words)
                self._words.append(c)
            ids.append(i)
        t = tuple(sorted(ids))
        j = self._c_id.get(t)
        if j is None:
            j = self._c_id[t] = len(self._cs)
            self._cs.append(t)
        return j

    def _new_key(self, k, dp, cid):
        t = tuple(sorted(self._ms[k % _P] + self._cs[cid]))
        v = self._ms_id.get(t)
        if v is None:
            v = self._ms_id[t] = len(self._ms)
            self._ms.append(t)
        return (k // _P + dp) * _P + v

    # --- Stein's identity ----------------------------------------------------------------
    def _pick(self, state, hint):
        rb = self._rb
        if hint is not None:
            for a, w in enumerate(state):
                iw = w.find(hint)
                if iw >= 0:
                    j = w.find(rb, iw + 1)
                    return a, (j if j >= 0 else w.find(rb))
        a = max(range(len(state)), key=lambda a: (len(state[a]), -a))
        return a, state[a].find(rb)

    def _split(self, state, hint):
        """(the other factors F, the rest R of the picked factor read from after its picked S):
        the state written as tr(S R) F."""
        a, i = self._pick(state, hint)
        w = state[a]
        return state[:a] + state[a + 1:], w[i + 1:] + w[:i]

    def _children(self, state, hint):
        """{(dp, constants id, child state): multiplicity} for Stein's identity on the picked S
        (the formula in the module docstring, with R the rest of its word read from after it)."""
        rb, Tt, canon = self._rb, self._Ttab, self._canon
        F, R = self._split(state, hint)
        g = defaultdict(int)
        if rb in R:
            g[(0, 0, tuple(sorted(F + (canon(R),))))] += 1
        else:
            g[(0, self._cid([R]), F)] += 1
        j = R.find(rb)
        while j >= 0:
            R1, R2 = R[:j], R[j + 1:]
            g[(1, 0, tuple(sorted(F + (canon(R1[::-1].translate(Tt) + rb + R2),))))] += 1
            x = canon(R1 + rb)
            if rb in R2:
                g[(1, 0, tuple(sorted(F + (x, canon(R2)))))] += 1
            else:
                g[(1, self._cid([R2]), tuple(sorted(F + (x,))))] += 1
            j = R.find(rb, j + 1)
        for Fp, K, mult in self._other_sites(F):
            g[(1, 0, tuple(sorted(Fp + (canon(K + rb + R),))))] += mult
            g[(1, 0, tuple(sorted(Fp + (canon(K[::-1].translate(Tt) + rb + R),))))] += mult
        return g

    def _other_sites(self, F):
        """(F without the factor V, K = V2 V1, multiplicity) for every random letter of every
        other factor V = V1 S V2; equal factors are visited once, with their multiplicity."""
        rb = self._rb
        nF = len(F)
        for b in range(nF):
            V = F[b]
            if b and V == F[b - 1]:
                continue
            mult = 1
            while b + mult < nF and F[b + mult] == V:
                mult += 1
            Fp = F[:b] + F[b + 1:]
            j = V.find(rb)
            while j >= 0:
                yield Fp, V[j + 1:] + V[:j], mult
                j = V.find(rb, j + 1)

    def _children_centred(self, state, hint):
        """Stein's identity for the centred letter D = S - I: E[tr(D R) F] is the formula for
        tr(S R) without its first term E[tr(R) F] (the -I cancels it), and every S that the
        identity produces is I + D, so each child splits into the word with D and the word
        with that letter removed. A child has one or two random letters fewer."""
        rb, Tt, canon = self._rb, self._Ttab, self._canon
        F, R = self._split(state, hint)
        g = defaultdict(int)

        def emit(rest, new_words, mult):
            rands = list(rest)
            consts = []
            for x in new_words:
                if rb in x:
                    rands.append(canon(x))
                else:
                    consts.append(x)
            g[(1, self._cid(consts) if consts else 0, tuple(sorted(rands)))] += mult

        j = R.find(rb)
        while j >= 0:
            R1, R2 = R[:j], R[j + 1:]
            R1t = R1[::-1].translate(Tt)
            emit(F, (R1t + rb + R2,), 1)
            emit(F, (R1t + R2,), 1)
            emit(F, (R1 + rb, R2), 1)
            emit(F, (R1, R2), 1)
            j = R.find(rb, j + 1)
        for Fp, K, mult in self._other_sites(F):
            Kt = K[::-1].translate(Tt)
            emit(Fp, (K + rb + R,), mult)
            emit(Fp, (K + R,), mult)
            emit(Fp, (Kt + rb + R,), mult)
            emit(Fp, (Kt + R,), mult)
        return g

    def expect(self, terms, hint=None) -> Expansion:
        """E[sum_k coef_k prod_j tr(words_kj)] for terms = iterable of (int coef, words), each
        word a sequence of letter codes. hint: a letter code to steer the elimination order
        (see the class docstring); it never changes the result."""
        rb = self._rb
        hint_b = None if hint is None else bytes([hint])
        levels = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
        for coef, words in terms:
            if not coef:
                continue
            words = [bytes(tuple(w)) for w in words]
            consts = [w for w in words if rb not in w]
            rands = tuple(sorted(self._canon(w) for w in words if rb in w))
            key = self._new_key(0, 0, self._cid(consts) if consts else 0)
            levels[sum(w.count(rb) for w in rands)][rands][key] += coef
        top = max(levels, default=0)
        kmaps, new_key = self._kmaps, self._new_key
        children = self._children_centred if self.centred else self._children
        for m in range(top, 0, -1):
            cur = levels.pop(m, {})
            nxt = levels[m - 1]
            for state, poly in cur.items():
                self.states += 1
                items = [(k, c) for k, c in poly.items() if c]
                if not items:
                    continue
                for (dp, cid, child), mult in children(state, hint_b).items():
                    # a centred child can lose two random letters at once
                    tgt = levels[sum(x.count(rb) for x in child)][child] if self.centred else nxt[child]
                    if cid:
                        km = kmaps.get((dp, cid))
                        if km is None:
                            km = kmaps[(dp, cid)] = {}
                        for k, c in items:
                            nk = km.get(k)
                            if nk is None:
                                nk = km[k] = new_key(k, dp, cid)
                            tgt[nk] += mult * c
                    else:
                        sh = dp * _P
                        for k, c in items:
                            tgt[k + sh] += mult * c
            del cur
        out = {}
        for k, c in levels[0].get((), {}).items():
            if c:
                out[(k // _P, tuple(sorted(tuple(self._words[i]) for i in self._ms[k % _P])))] = c
        return Expansion(self.alphabet, out)


def expect(alphabet: Alphabet, terms, hint=None) -> Expansion:
    """One-off expectation with a fresh engine (see Engine.expect)."""
    return Engine(alphabet).expect(terms, hint)


# --- fast evaluation -------------------------------------------------------------------------


class CompiledExpansion:
    """Expansions laid out for fast evaluation of their (weighted) sum and of its gradient with
    respect to each constant letter matrix.

    Several expansions (the parts of a loss) share one layout; each evaluation weighs part k
    by scales[k]. Factors tr(()) = d are folded into a power of d. Every distinct prefix of
    every word is a node of a trie, computed once: P_node = P_parent M_letter, level by level,
    one GEMM per (level, letter). The gradient is reverse mode through the same trie: with
    c_w = df/dtr(w) (the product of the other factors of each term), the adjoint of a node is
    G_node = c_w I (if it ends word w) + sum over its children of G_child M_child^T, and
    df/dM_c = sum over nodes that append c of P_parent^T G_node. This is the derivative of each
    trace word written out by hand (for tr(M_1 ... M_k), d/dM_i is the transposed rest of the
    word), organised so that shared prefixes are shared.
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
        for w in words:
            for k in range(1, len(w) + 1):
                seq = w[:k]
                if seq not in nodes:
                    nodes[seq] = len(parent)
                    parent.append(nodes[w[: k - 1]])
                    letter.append(w[k - 1])
                    depth.append(k)
        self.word_node = np.array([nodes[w] for w in words], dtype=np.intp)
        self.grad_letters = tuple(grad_letters)
        self.parent = np.array(parent, dtype=np.intp)
        self.letter = np.array(letter, dtype=np.intp)
        depth = np.array(depth)
        self.n_nodes = len(parent)
        self.levels = [np.flatnonzero(depth == k) for k in range(1, int(depth.max()) + 1)] if len(depth) > 1 else []
        # One step per (level, letter): the nodes it makes, their parents, and, for the
        # backward pass, the parents' scatter-add as a sorted reduceat.
        self._steps = []
        for ids in self.levels:
            let = self.letter[ids]
            for c in np.unique(let):
                sel = ids[let == c]
                par = self.parent[sel]
                order = np.argsort(par, kind="stable")
                upar, starts = np.unique(par[order], return_index=True)
                self._steps.append((sel, par, int(c), order, upar, starts))
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
        # Terms that share their factors (and differ in the power of 1/n, of d, or in the part)
        # are one monomial with a weight summed per call: 7 times fewer products at loops = 6.
        # Monomials are grouped by their number of factors k, so products cost sum_k k m_k.
        counts = np.array([len(f) for f in facs], dtype=np.intp)
        if len(facs):
            mono, self._mono_of_term = np.unique(fac, axis=0, return_inverse=True)
            self._mono_of_term = self._mono_of_term.ravel()
            mono_count = np.zeros(len(mono), dtype=np.intp)
            mono_count[self._mono_of_term] = counts
        else:
            mono, self._mono_of_term, mono_count = fac[:0], np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
        self.n_monomials = len(mono)
        self._groups = []
        for kk in np.unique(mono_count):
            ids = np.flatnonzero(mono_count == kk)
            self._groups.append((ids, np.ascontiguousarray(mono[ids, :kk].T)))
        self.coef = coef
        self.coef_float = np.array([float(c) for c in coef])
        self.power = np.array(power, dtype=np.intp)
        self.dpow = np.array(dpow, dtype=np.intp)
        self.part = np.array(part, dtype=np.intp)
        self.n_parts = len(expansions)
        # Rounding counts for the error bound (see `evaluate`): per term, the letters of its
        # words, its number of factors, and how many terms share its monomial.
        lens = np.array([[len(w) for w in words]], dtype=np.intp)
        sumlen = np.zeros(len(facs), dtype=np.intp)
        wlen = np.array([len(w) for w in words] + [0], dtype=np.intp)
        if len(facs):
            sumlen = wlen[fac].sum(axis=1)
        del lens
        self._max_letters = int(sumlen.max()) if len(facs) else 0
        self._max_factors = int(counts.max()) if len(facs) else 0
        self._max_share = int(np.bincount(self._mono_of_term).max()) if len(facs) else 0
        self._max_depth = len(self.levels)
        self._max_step = max((len(st[0]) for st in self._steps), default=0)
        per_trace = np.bincount(mono[mono < len(words)].ravel(), minlength=len(words)) if len(facs) else np.zeros(0)
        self._max_uses = int(per_trace.max(initial=0))
        self._coef_exact = all(abs(c) < 2**53 for c in coef)

    def __len__(self):
        return len(self.coef)

    # --- float evaluation with a rigorous error bound ------------------------------------
    #
    # Running error analysis (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed.,
    # Sec. 3.5 and 3.6): every computed quantity x carries a bound e_x >= |x_exact - x|,
    # propagated with the computed values themselves, so a product whose entries cancel (E^2
    # of a nilpotent-like E, a loss of 1e-13 made of letters of size 0.1) gets an error bound
    # of its own small size, not of |E|^2. For a matrix product with inner dimension k,
    #   e(X Y) <= e_X (|Y| + e_Y) + |X| (e_Y + gamma_k |Y|)
    # (|fl(X Y) - X Y| <= gamma_k |X| |Y| for any order of summation). The bounds themselves are
    # computed in float; their own relative error is below 1e-12 and is covered by a factor 1.01.

    def _products(self, mats, d, errs=None):
        """Node products P (and, with errs, their running error bounds eP)."""
        P = np.empty((self.n_nodes, d, d))
        P[0] = np.eye(d)
        eP = None
        if errs is not None:
            eP = np.empty((self.n_nodes, d, d))
            eP[0] = 0.0
            absM = np.abs(mats)
            hiM = absM + errs
            loM = errs + gamma(d) * absM
        for sel, par, c, *_ in self._steps:
            Pp = P[par].reshape(-1, d)
            P[sel] = (Pp @ mats[c]).reshape(-1, d, d)
            if errs is not None:
                eP[sel] = (eP[par].reshape(-1, d) @ hiM[c] + np.abs(Pp) @ loM[c]).reshape(-1, d, d)
        return P, eP

    def _term_weights(self, n, d, scales):
        """c_t s_part d^q n^-p per term, in float (n may be an int of any size or math.inf:
        n^-p is formed from the exact rational, so 10**400 underflows to 0 instead of
        overflowing)."""
        s = np.ones(self.n_parts) if scales is None else np.asarray(scales, dtype=float)
        dn = float(d) ** np.arange(self.dpow.max(initial=0) + 1)
        pmax = int(self.power.max(initial=0))
        if n == float("inf"):
            nn = (np.arange(pmax + 1) == 0).astype(float)
        else:
            inv = Fraction(1, int(n)) if isinstance(n, (int, np.integer)) else 1 / Fraction(n)
            nn = np.array([float(inv**p) for p in range(pmax + 1)])
        # one small table, gathered per term: no per-term powers
        table = s[:, None, None] * dn[None, :, None] * nn[None, None, :]
        return self.coef_float * table[self.part, self.dpow, self.power]

    def _monomial_sum(self, t, w_all, need_grad):
        """(list of the monomials' float values, df/dtr per word) for traces t and monomial
        weights w_all."""
        vals_out = []
        dt = np.zeros(len(t)) if need_grad else None
        for ids, fac in self._groups:
            w = w_all[ids]
            k = fac.shape[0]
            if k == 0:
                vals_out.append(w)
                continue
            vals = t[fac]  # (k, terms)
            if not need_grad:
                vals_out.append(w * np.prod(vals, axis=0))
                continue
            # df/dtr(w): product of the other factors, by prefix and suffix products (no division)
            pre = np.empty_like(vals)
            suf = np.empty_like(vals)
            pre[0] = w
            suf[k - 1] = 1.0
            for j in range(1, k):
                np.multiply(pre[j - 1], vals[j - 1], out=pre[j])
                np.multiply(suf[k - j], vals[k - j], out=suf[k - 1 - j])
            vals_out.append(pre[k - 1] * vals[k - 1])
            pre *= suf
            dt += np.bincount(fac.ravel(), weights=pre.ravel(), minlength=len(t))
        return vals_out, dt

    def _relative_errors(self, t, et):
        """Per monomial, r = sum over its factors of e_t / (|t| + e_t): then
        |prod t_exact - prod t| <= r prod (|t| + e_t) (telescoping, every e_t <= |t| + e_t)."""
        hi = np.abs(t) + et
        q = np.divide(et, hi, out=np.zeros_like(et), where=hi > 0)
        r = np.zeros(self.n_monomials)
        for ids, fac in self._groups:
            if fac.shape[0]:
                r[ids] = q[fac].sum(axis=0)
        return hi, r

    def _reverse(self, P, mats, dt, d, eP=None, errs=None, edt=None):
        """Reverse mode through the trie: {letter: df/dM_letter} for word adjoints dt, and with
        eP, errs, edt the running error bounds of each {letter: bound}."""
        G = np.zeros((self.n_nodes, d, d))
        idx = np.arange(d)
        G[self.word_node[:, None], idx, idx] += dt[: len(self.words), None]  # word nodes are distinct
        grads = {g: np.zeros((d, d)) for g in self.grad_letters}
        bound = eP is not None
        if bound:
            eG = np.zeros((self.n_nodes, d, d))
            eG[self.word_node[:, None], idx, idx] += edt[: len(self.words), None]
            egrads = {g: np.zeros((d, d)) for g in self.grad_letters}
            absM = np.abs(mats)
            hiM = absM + errs
            loM = errs + gamma(d) * absM
            # the adjoint of a node sums at most one product per letter, plus its own dt I
            g_add = gamma(len(mats) + 1)
        for sel, par, c, order, upar, starts in reversed(self._steps):
            Gs = G[sel]
            Pp = P[par].reshape(-1, d)
            if c in grads:
                grads[c] += Pp.T @ Gs.reshape(-1, d)
            back = (Gs.reshape(-1, d) @ mats[c].T).reshape(-1, d, d)
            G[upar] += np.add.reduceat(back[order], starts, axis=0)
            if bound:
                eGs = eG[sel].reshape(-1, d)
                aGs = np.abs(Gs.reshape(-1, d))
                if c in grads:
                    # inner dimension len(sel) d, then one more addition per step
                    gk = gamma(len(sel) * d + len(self._steps))
                    egrads[c] += (np.abs(Pp) + eP[par].reshape(-1, d)).T @ eGs + eP[par].reshape(-1, d).T @ aGs + gk * (np.abs(Pp).T @ aGs)
                eback = (eGs @ hiM[c].T + aGs @ loM[c].T + g_add * np.abs(back.reshape(-1, d))).reshape(-1, d, d)
                eG[upar] += np.add.reduceat(eback[order], starts, axis=0)
        if not bound:
            return grads, None
        return grads, egrads

    def evaluate(self, mats, n, d, need_grad=True, scales=None, errs=None):
        """Float evaluation with a rigorous error bound.

        mats: array (letters, d, d) indexed by letter code; scales: one weight per part;
        errs: entrywise bounds on the letters' own errors (default 0: letters exact as given).
        Returns (value, {letter: df/dM}, error bound on the value, {letter: entrywise error
        bound on df/dM}); the value is summed with math.fsum (correctly rounded) and the bounds
        come from running error analysis (see the comment above `_products`).
        """
        import math

        mats = np.asarray(mats, dtype=float)
        errs = np.zeros_like(mats) if errs is None else np.asarray(errs, dtype=float)
        w = self._term_weights(n, d, scales)
        w_mono = np.bincount(self._mono_of_term, weights=w, minlength=self.n_monomials)
        # the weights: six roundings each, then a sum over the terms sharing a monomial
        e_w = gamma(6 + self._max_share) * np.bincount(self._mono_of_term, weights=np.abs(w), minlength=self.n_monomials)
        P, eP = self._products(mats, d, errs)
        Pw, ePw = P[self.word_node], eP[self.word_node]
        t = np.append(np.trace(Pw, axis1=1, axis2=2), 1.0)
        et = np.append(np.trace(ePw, axis1=1, axis2=2) + gamma(d) * np.abs(np.diagonal(Pw, axis1=1, axis2=2)).sum(axis=1), 0.0)
        hi, r = self._relative_errors(t, et)
        g_mul = gamma(self._max_factors + 1)
        vals, dt = self._monomial_sum(t, w_mono, need_grad)
        allv = np.concatenate(vals) if vals else np.zeros(0)
        # math.fsum refuses inf - inf; an overflow is reported as a non-finite value instead
        value = math.fsum(allv) if np.all(np.isfinite(allv)) else float(np.sum(allv))
        # the error of each monomial: its factors' (r) and its own roundings (g_mul), its weight's
        ew_all = np.abs(w_mono) * (r + g_mul) + e_w
        if need_grad:
            ew_all = ew_all * (1 + gamma(self._max_uses)) + gamma(self._max_uses) * np.abs(w_mono)
        evals, edt = self._monomial_sum(hi, ew_all, need_grad)
        err = 1.01 * float(sum(np.sum(a) for a in evals)) + 2.0**-53 * abs(value)
        if not need_grad:
            return value, {}, err, {}
        grads, egrads = self._reverse(P, mats, dt, d, eP, errs, edt)
        return value, grads, err, {c: 1.01 * g for c, g in egrads.items()}

    def value_and_grad(self, mats, n, d, need_grad=True, scales=None):
        """Float evaluation without the bound: (value, {letter code: df/dM_letter})."""
        mats = np.asarray(mats, dtype=float)
        P, _ = self._products(mats, d)
        t = np.append(np.trace(P[self.word_node], axis1=1, axis2=2), 1.0)
        w_mono = np.bincount(self._mono_of_term, weights=self._term_weights(n, d, scales), minlength=self.n_monomials)
        vals, dt = self._monomial_sum(t, w_mono, need_grad)
        value = float(sum(np.sum(v) for v in vals))
        if not need_grad:
            return value, {}
        return value, self._reverse(P, mats, dt, d)[0]

    # --- exact evaluation ----------------------------------------------------------------
    def _exact_setup(self, mats, n, d, scales):
        prods = {0: np.array([[Fraction(int(i == j)) for j in range(d)] for i in range(d)], dtype=object)}
        for ids in self.levels:
            for k in ids:
                prods[int(k)] = prods[int(self.parent[k])].dot(mats[int(self.letter[k])])
        t = [sum(np.diagonal(prods[int(node)]), Fraction(0)) for node in self.word_node]
        t.append(Fraction(1))
        s = [Fraction(1)] * self.n_parts if scales is None else [Fraction(x) for x in scales]
        inv_n = Fraction(0) if n == float("inf") else Fraction(1, int(n))
        return prods, t, s, inv_n

    def value_exact(self, mats, n, d, scales=None):
        """Exact evaluation: mats maps letter code to an object array of Fractions; n an int
        (or math.inf); scales one exact weight per part. Returns a Fraction."""
        return self.value_and_grad_exact(mats, n, d, scales, need_grad=False)[0]

    def value_and_grad_exact(self, mats, n, d, scales=None, need_grad=True):
        """Exact value and {letter: df/dM_letter} (object arrays of Fractions): the same
        reverse mode as the float path, in rational arithmetic."""
        prods, t, s, inv_n = self._exact_setup(mats, n, d, scales)
        total = Fraction(0)
        dt = [Fraction(0)] * len(t)
        for c, p, dp, part, fac in zip(self.coef, self.power, self.dpow, self.part, self.factors):
            if p and n == float("inf"):
                continue
            if s[part] == 0:
                continue
            wgt = Fraction(c) * s[part] * inv_n ** int(p) * Fraction(d) ** int(dp)
            term = wgt
            for f in fac:
                term *= t[f]
            total += term
            if need_grad:
                for a, f in enumerate(fac):
                    if f == len(t) - 1:
                        continue
                    other = wgt
                    for b, g in enumerate(fac):
                        if b != a:
                            other *= t[g]
                    dt[f] += other
        if not need_grad:
            return total, {}
        zero = np.array([[Fraction(0)] * d for _ in range(d)], dtype=object)
        G = {}
        for i, node in enumerate(self.word_node):
            if dt[i]:
                G[int(node)] = G.get(int(node), zero) + np.diag([dt[i]] * d).astype(object) + zero
        grads = {g: zero.copy() for g in self.grad_letters}
        for ids in reversed(self.levels):
            for k in ids:
                k = int(k)
                if k not in G:
                    continue
                par, c = int(self.parent[k]), int(self.letter[k])
                if c in grads:
                    grads[c] = grads[c] + prods[par].T.dot(G[k])
                G[par] = G.get(par, zero) + G[k].dot(mats[c].T)
        return total, grads
