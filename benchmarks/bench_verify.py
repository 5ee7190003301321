"""CPU time and peak memory of `looptheory verify`, the README's first command.

    python benchmarks/bench_verify.py            # the quick run (target: 30 CPU-s, 800 MB)
    python benchmarks/bench_verify.py --full     # also the full run (target: 600 CPU-s)

Each run is a fresh process writing into a temporary folder. CPU time is user + system of the
process and of every child it waited for (resource.RUSAGE_CHILDREN), so worker processes count;
peak memory is the largest resident set of any of them. Wall time is printed for information
only: this machine is shared, and wall time says more about the neighbours than about the code.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

#: (CPU seconds, peak MB) per run; issue 13 sets no memory target for the full run
TARGETS = {"quick": (30.0, 800.0), "full": (600.0, None)}


def run(mode: str, jobs: int | None = None) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "report")
        cmd = [sys.executable, "-m", "looptheory", "verify", "--out", out] + (["--quick"] if mode == "quick" else [])
        if jobs:
            cmd += ["--jobs", str(jobs)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        verdicts = ""
        try:
            with open(os.path.join(out, "results.json")) as fh:
                data = json.load(fh)
            verdicts = ", ".join(f"{r['id']} {r['verdict']}" for r in data["records"] if r["kind"] in ("claim", "experiment"))
        except (OSError, ValueError, KeyError):
            pass
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"mode": mode, "exit": proc.returncode, "cpu_s": cpu, "peak_mb": after.ru_maxrss / 1024, "wall_s": wall,
            "verdicts": verdicts, "stderr_tail": proc.stderr.strip().splitlines()[-1:] if proc.returncode else []}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="also time the full run (about 10 CPU-minutes)")
    args = ap.parse_args(argv)
    modes = ["quick"] + (["full"] if args.full else [])
    print(f"{'run':6s} {'exit':>4s} {'CPU s':>8s} {'target':>7s} {'peak MB':>8s} {'target':>7s} {'wall s':>7s}")
    for mode in modes:
        r = run(mode)
        cpu_t, mem_t = TARGETS[mode]
        mem_text = f"{mem_t:7.0f}" if mem_t else f"{'-':>7s}"
        print(f"{mode:6s} {r['exit']:4d} {r['cpu_s']:8.1f} {cpu_t:7.0f} {r['peak_mb']:8.0f} {mem_text} {r['wall_s']:7.1f}")
        if r["verdicts"]:
            print(f"       verdicts: {r['verdicts']}")
        if r["stderr_tail"]:
            print(f"       failed: {r['stderr_tail'][0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
