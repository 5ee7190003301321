"""Forward (push) exact engine: propagate linear combinations level by level in the number of S.

A level holds {random state: {key: coef}} where key = p * P + msid encodes the power of 1/n and an
interned multiset of constant words (canonical) produced so far. Each state is expanded once (Stein's
identity on one S) and its whole combination is pushed into its children; level m-1 is complete once
level m is processed (each step removes exactly one S). The empty state at level 0 holds the answer.
"""
import sys, time, resource
from collections import defaultdict

S = 0
P = 1 << 40  # key = p * P + msid


class Fwd:
    def __init__(self, transpose, random=0, choose="W", wletter=5):
        self.T = transpose
        self.r = random
        self._can = {}
        self.word_id = {}      # canonical constant word -> id
        self.words = []
        self.ms_id = {(): 0}   # sorted tuple of word ids -> msid
        self.ms = [()]
        self.add_id = {}       # (dp, consts tuple) -> addition id
        self.adds = []
        self.union = {}        # (msid, consts tuple) -> msid
        self.choose = choose
        self.wl = wletter
        self.kids = {}

    def tr(self, w):
        T = self.T
        return tuple(T[c] for c in reversed(w))

    def canon(self, w):
        c = self._can.get(w)
        if c is None:
            if len(w) <= 1:
                c = w
            else:
                wt = self.tr(w)
                k = len(w)
                c = min(min(w[i:] + w[:i] for i in range(k)), min(wt[i:] + wt[:i] for i in range(k)))
            self._can[w] = c
        return c

    def wid(self, w):
        i = self.word_id.get(w)
        if i is None:
            i = len(self.words)
            self.word_id[w] = i
            self.words.append(w)
        return i

    def split(self, words):
        r = self.r
        consts, rands = [], []
        for w in words:
            if r in w:
                rands.append(self.canon(w))
            else:
                consts.append(self.wid(self.canon(w)))
        consts.sort()
        rands.sort()
        return tuple(consts), tuple(rands)

    def pick(self, state):
        r = self.r
        if self.choose == "W":
            wl = self.wl
            for a, w in enumerate(state):
                if wl in w:
                    k = len(w)
                    iw = w.index(wl)
                    for d in range(1, k):
                        if w[(iw + d) % k] == r:
                            return a, (iw + d) % k
        if self.choose in ("W", "fewest"):
            a = min(range(len(state)), key=lambda a: (state[a].count(r), a))
            return a, state[a].index(r)
        return 0, state[0].index(r)

    def children(self, state):
        """[(dp, consts tuple, child state, multiplicity)] for Stein on the picked S."""
        r, tr = self.r, self.tr
        a, i = self.pick(state)
        w = state[a]
        F = list(state[:a] + state[a + 1:])
        R = w[i + 1:] + w[:i]
        raw = [(0, [R] + F)]
        for j, c in enumerate(R):
            if c != r:
                continue
            R1, R2 = R[:j], R[j + 1:]
            raw.append((1, [tr(R1) + (r,) + R2] + F))
            raw.append((1, [R1 + (r,), R2] + F))
        for b, V in enumerate(F):
            Fp = F[:b] + F[b + 1:]
            for j, c in enumerate(V):
                if c != r:
                    continue
                K = V[j + 1:] + V[:j]
                raw.append((1, [K + (r,) + R] + Fp))
                raw.append((1, [tr(K) + (r,) + R] + Fp))
        g = defaultdict(int)
        for dp, ws in raw:
            consts, rands = self.split(ws)
            g[(dp, consts, rands)] += 1
        return [(dp, consts, rands, m) for (dp, consts, rands), m in g.items()]

    def merge_ms(self, msid, consts):
        k = (msid, consts)
        v = self.union.get(k)
        if v is None:
            t = tuple(sorted(self.ms[msid] + consts))
            v = self.ms_id.get(t)
            if v is None:
                v = len(self.ms)
                self.ms_id[t] = v
                self.ms.append(t)
            self.union[k] = v
        return v

    def run(self, terms, stats=None):
        """terms: iterable of (coef, words). Returns {(p, tuple of canonical words): coef}."""
        levels = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
        for coef, words in terms:
            consts, rands = self.split(words)
            m = sum(w.count(self.r) for w in rands)
            key = self.merge_ms(0, consts)
            levels[m][rands][key] += coef
        top = max(levels)
        nstates = 0
        work = 0
        for m in range(top, 0, -1):
            cur = levels.pop(m, {})
            nxt = levels[m - 1]
            for state, poly in cur.items():
                nstates += 1
                poly = {k: c for k, c in poly.items() if c}
                if not poly:
                    continue
                for dp, consts, child, mult in self.children(state):
                    tgt = nxt[child]
                    work += len(poly)
                    if consts:
                        un = self.union
                        shift = dp * P
                        for k, c in poly.items():
                            ms = k % P
                            v = un.get((ms, consts))
                            if v is None:
                                v = self.merge_ms(ms, consts)
                            tgt[k - ms + v + shift] += mult * c
                    else:
                        shift = dp * P
                        for k, c in poly.items():
                            tgt[k + shift] += mult * c
            if stats is not None:
                stats.append((m, len(cur), sum(len(p) for p in cur.values())))
            del cur
        final = levels[0].get((), {})
        out = {}
        words = self.words
        for k, c in final.items():
            if c:
                out[(k // P, tuple(sorted(words[i] for i in self.ms[k % P])))] = c
        self.nstates = nstates
        self.work = work
        return out


def main_terms(L):
    from math import comb
    B, BT, W = 1, 2, 5
    T = (0, 2, 1, 4, 3, 5, 6)
    out = defaultdict(int)
    Y = [(comb(L, k) * (-1) ** k, (B, S) * k) for k in range(L + 1)]
    for c1, w1 in Y:
        for c2, w2 in Y:
            out[w1 + (W,) + tuple(T[c] for c in reversed(w2))] += c1 * c2
    return [(c, [w]) for w, c in out.items() if c]


if __name__ == "__main__":
    import pickle, os
    L = int(sys.argv[1])
    choose = sys.argv[2] if len(sys.argv) > 2 else "W"
    eng = Fwd((0, 2, 1, 4, 3, 5, 6), choose=choose)
    t = time.time()
    stats = []
    out = eng.run(main_terms(L), stats)
    dt = time.time() - t
    words = {w for _, ws in out for w in ws}
    print(f"L={L} choose={choose} time={dt:.2f}s states={eng.nstates} work={eng.work} terms={len(out)} words={len(words)} "
          f"maxrss={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1e6:.2f}GB", flush=True)
    for s in stats:
        print("  level", s)
    ref = f"ref_main_L{L}.pkl"
    if os.path.exists(ref):
        r = pickle.load(open(ref, "rb"))
        print("  matches reference:", r == out)
