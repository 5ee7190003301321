"""Level-by-level exploration with a greedy choice: the S whose children add fewest new states."""
import sys, time
from explore import *
from explore2 import mk
def kids(state, a, i):
    return {key(ws) for dp, ws in children(state, lambda s: (a, i))}
def run(L, mode):
    lev = {}
    for r in roots(L):
        lev.setdefault(sum(w.count(S) for w in r), set()).add(r)
    top = max(lev); total = 0; edges = 0
    wfirst = mk(1, "fewest", "mid")
    for m in range(top, 0, -1):
        cur = lev.pop(m, set()); nxt = lev.setdefault(m - 1, set())
        total += len(cur)
        for s in cur:
            if mode == "greedy":
                best = None
                for a, w in enumerate(s):
                    if a and w == s[a-1]: continue
                    for i, c in enumerate(w):
                        if c != S: continue
                        ks = kids(s, a, i); new = len(ks - nxt)
                        if best is None or new < best[0]: best = (new, ks)
                ks = best[1]
            else:
                ks = {key(ws) for dp, ws in children(s, wfirst)}
            edges += len(ks)
            nxt |= ks
    return total, edges
L = int(sys.argv[1])
for mode in sys.argv[2:]:
    t = time.time(); print(L, mode, run(L, mode), f"{time.time()-t:.1f}s", flush=True)
