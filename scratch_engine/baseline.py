"""Reference: the current engine's expansions, pickled for comparison."""
import sys, time, pickle, resource
sys.path.insert(0, "/work/main")
from math import comb
from looptheory.expectations import Engine
from looptheory import loss as LS

def main_terms(L):
    Y = LS._power_words({k: comb(L, k) * (-1) ** k for k in range(L + 1)})
    return LS._sandwich(Y, (LS._W,))

if __name__ == "__main__":
    L = int(sys.argv[1]); part = sys.argv[2] if len(sys.argv) > 2 else "main"
    eng = Engine(LS.ALPHABET)
    t = time.time()
    if part == "main":
        e = eng.expect(main_terms(L))
    else:
        e = LS.part_expansion.__wrapped__(L, part)
    dt = time.time() - t
    print(f"L={L} part={part} time={dt:.2f}s states={eng.states} terms={len(e)} words={len(e.constant_words())} maxrss={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1e6:.2f}GB")
    pickle.dump(dict(e), open(f"ref_{part}_L{L}.pkl", "wb"))
