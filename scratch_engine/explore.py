"""Count reachable canonical random states under different choices of the S to eliminate."""
import sys, time
from math import comb
S, B, BT, W = 0, 1, 2, 5
T = {0: 0, 1: 2, 2: 1, 3: 4, 4: 3, 5: 5, 6: 6}
_can = {}
def tr(w): return tuple(T[c] for c in reversed(w))
def canon(w):
    c = _can.get(w)
    if c is None:
        if len(w) <= 1: c = w
        else:
            wt = tr(w); k = len(w)
            c = min(min(w[i:] + w[:i] for i in range(k)), min(wt[i:] + wt[:i] for i in range(k)))
        _can[w] = c
    return c

def children(state, choose):
    a, i = choose(state)
    w = state[a]; F = list(state[:a] + state[a+1:])
    R = w[i+1:] + w[:i]
    yield 0, [R] + F
    for j, c in enumerate(R):
        if c != S: continue
        R1, R2 = R[:j], R[j+1:]
        yield 1, [tr(R1) + (S,) + R2] + F
        yield 1, [R1 + (S,), R2] + F
    for b, V in enumerate(F):
        Fp = F[:b] + F[b+1:]
        for j, c in enumerate(V):
            if c != S: continue
            K = V[j+1:] + V[:j]
            yield 1, [K + (S,) + R] + Fp
            yield 1, [tr(K) + (S,) + R] + Fp

def key(words):
    return tuple(sorted(canon(w) for w in words if S in w))

def ch_first(state): return 0, state[0].index(S)
def ch_fewest(state):
    a = min(range(len(state)), key=lambda a: (state[a].count(S), a)); return a, state[a].index(S)
def ch_most(state):
    a = min(range(len(state)), key=lambda a: (-state[a].count(S), a)); return a, state[a].index(S)
def ch_W(state):
    for a, w in enumerate(state):
        if W in w:
            k = len(w); iw = w.index(W)
            for d in range(1, k):
                if w[(iw + d) % k] == S: return a, (iw + d) % k
    return ch_fewest(state)
def ch_W2(state):
    for a, w in enumerate(state):
        if W in w:
            k = len(w); iw = w.index(W)
            for d in range(1, k):
                if w[(iw - d) % k] == S: return a, (iw - d) % k
    return ch_fewest(state)

STRATS = dict(first=ch_first, fewest=ch_fewest, most=ch_most, W=ch_W, W2=ch_W2)

def roots(L):
    ws = set()
    for j in range(L+1):
        for k in range(L+1):
            w = (B, S) * j + (W,) + tr((B, S) * k)
            ws.add(key([w]))
    return ws

def explore(L, choose):
    seen = set(); stack = list(roots(L)); edges = 0
    while stack:
        s = stack.pop()
        if s in seen or not s: continue
        seen.add(s)
        for dp, ws in children(s, choose):
            edges += 1
            k = key(ws)
            if k not in seen: stack.append(k)
    return len(seen), edges

if __name__ == "__main__":
    L = int(sys.argv[1])
    for name in sys.argv[2:]:
        t = time.time(); n, e = explore(L, STRATS[name])
        print(f"L={L} {name}: states={n} edges={e} time={time.time()-t:.1f}s", flush=True)
