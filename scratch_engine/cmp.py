import pickle, sys
sys.path.insert(0, '.')
from fwd import Fwd, main_terms
L = int(sys.argv[1]); ch = sys.argv[2]
out = Fwd((0, 2, 1, 4, 3, 5, 6), choose=ch).run(main_terms(L))
ref = pickle.load(open(f"ref_main_L{L}.pkl", "rb"))
a = set(out) - set(ref); b = set(ref) - set(out)
print(len(a), len(b))
for k in list(a)[:5]: print("new", k, out[k])
for k in list(b)[:5]: print("ref", k, ref[k])
import numpy as np
rng = np.random.default_rng(0)
d = 3; n = 7
M = {1: rng.standard_normal((d, d)), 5: None}
Wm = rng.standard_normal((d, d)); Wm = Wm + Wm.T; M[5] = Wm; M[2] = M[1].T
def ev(e):
    tot = 0.0
    for (p, ws), c in e.items():
        t = c / n**p
        for w in ws:
            if not w: t *= d; continue
            X = np.eye(d)
            for l in w: X = X @ M[l]
            t *= np.trace(X)
        tot += t
    return tot
print(ev(out), ev(ref))
