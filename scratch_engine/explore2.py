import sys, time
from explore import *
import explore as E

def mk(wside, fallback, within="first"):
    def ch(state):
        for a, w in enumerate(state):
            if W in w:
                k = len(w); iw = w.index(W)
                for d in range(1, k):
                    idx = (iw + d) % k if wside > 0 else (iw - d) % k
                    if w[idx] == S: return a, idx
        if fallback == "fewest":
            a = min(range(len(state)), key=lambda a: (state[a].count(S), a))
        elif fallback == "most":
            a = min(range(len(state)), key=lambda a: (-state[a].count(S), a))
        elif fallback == "longest":
            a = min(range(len(state)), key=lambda a: (-len(state[a]), a))
        elif fallback == "shortest":
            a = min(range(len(state)), key=lambda a: (len(state[a]), a))
        else:
            a = 0
        w = state[a]
        if within == "first": return a, w.index(S)
        if within == "last": return a, len(w) - 1 - w[::-1].index(S)
        if within == "mid":
            idx = [i for i, c in enumerate(w) if c == S]; return a, idx[len(idx)//2]
    return ch

L = int(sys.argv[1])
for ws in (1, -1):
    for fb in ("fewest", "most", "longest", "shortest", "first"):
        for wi in ("first", "last", "mid"):
            t = time.time(); n, e = explore(L, mk(ws, fb, wi))
            print(f"L={L} wside={ws} fb={fb} within={wi}: states={n} edges={e} {time.time()-t:.1f}s", flush=True)
