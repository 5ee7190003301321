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

# The evaluation layout lives in looptheory/layout.py; imported here for compatibility.
from .layout import CompiledExpansion  # noqa: E402,F401
