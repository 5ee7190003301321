"""Run the bad-input sweep of tests/test_bad_inputs.py case by case, each in a child process
with a time limit and an address-space limit, and sort the outcomes:

  clear    ValueError or TypeError whose message starts with the parameter's name
  unclear  another exception, or a message that does not start with the parameter's name
  silent   the call returned
  hang     over the time limit, or out of memory (MemoryError, or the child was killed)

    python scripts/bad_input_sweep.py [--timeout 10] [--memory-gib 6] [--verbose]

Exit status 0 when every case is clear with the expected exception type, else 1.
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import signal
import sys
import time
from collections import Counter

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import test_bad_inputs as cases  # noqa: E402


class _Timeout(BaseException):
    pass


def _run_child(call, timeout, memory):
    def alarm(signum, frame):
        raise _Timeout()

    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(timeout)
    t0 = time.perf_counter()
    try:
        call()
        out = ("returned", None, None)
    except _Timeout:
        out = ("timeout", None, None)
    except MemoryError as exc:
        out = ("memory", "MemoryError", str(exc)[:300])
    except BaseException as exc:  # noqa: BLE001 - classifying every outcome is the point
        out = ("raised", type(exc).__name__, str(exc)[:300])
    signal.alarm(0)
    return out + (time.perf_counter() - t0,)


def run_case(call, timeout, memory):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            res = _run_child(call, timeout, memory)
        except BaseException as exc:  # noqa: BLE001
            res = ("raised", type(exc).__name__, str(exc)[:300], 0.0)
        with os.fdopen(w, "wb") as fh:
            pickle.dump(res, fh)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        return ("killed", f"status {status}", None, float("nan"))
    return pickle.loads(data)


def classify(outcome, name):
    kind, exc, msg, _ = outcome
    if kind in ("timeout", "memory", "killed"):
        return "hang"
    if kind == "returned":
        return "silent"
    if exc in ("ValueError", "TypeError") and msg.startswith(name):
        return "clear"
    return "unclear"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timeout", type=int, default=10, help="seconds per case (default 10)")
    p.add_argument("--memory-gib", type=float, default=6.0, help="address-space limit per case (default 6 GiB)")
    p.add_argument("--verbose", action="store_true", help="print every case, not only the ones that are not clear")
    args = p.parse_args(argv)
    memory = int(args.memory_gib * 2**30)
    counts = Counter()
    wrong_type = []
    for case_id, call, exc, name in cases.CASES:
        out = run_case(call, args.timeout, memory)
        verdict = classify(out, name)
        counts[verdict] += 1
        if verdict == "clear" and out[1] != exc.__name__:
            wrong_type.append(case_id)
        if verdict != "clear" or args.verbose or case_id in wrong_type:
            detail = f"{out[1]}: {out[2]}" if out[1] else out[0]
            print(f"{verdict:8s} {case_id:50s} {out[3]:6.2f}s  {detail}", flush=True)
    total = sum(counts.values())
    print(f"\n{total} cases: " + ", ".join(f"{counts[k]} {k}" for k in ("clear", "unclear", "silent", "hang")))
    if wrong_type:
        print(f"clear but not the expected exception type: {wrong_type}")
    return 0 if counts["clear"] == total and not wrong_type else 1


if __name__ == "__main__":
    sys.exit(main())
