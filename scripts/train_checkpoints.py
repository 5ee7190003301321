"""Train the models the experiments declare and ship them as checkpoints.

Every model of looptheory.experiments.TRAININGS is trained by experiments.train_declared -- the
very function, seeds and budgets the full `looptheory verify` run trains with -- and written to
looptheory/data/checkpoints/{name}.npz (compressed; package data). Each file's provenance names
the exact command, the seed, the declared settings (as canonical JSON, which the quick run checks
against the code's declaration), the number of prompts, the looptheory and numpy versions, the
SHA-256 of the training code (experiments.source_hash), the date and the CPU time it took.

`looptheory verify --quick` loads these files and re-evaluates them against the exact engine
instead of training (its records say so); the full run retrains and reports whether its weights
are bit-for-bit identical to these.

    python scripts/train_checkpoints.py                  # all models (about 3 CPU-minutes)
    python scripts/train_checkpoints.py --only e1_sparse_L3,sparse_L5
    python scripts/train_checkpoints.py --out /tmp/ckpt  # somewhere else
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from dataclasses import replace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import looptheory  # noqa: E402
from looptheory import experiments as X  # noqa: E402
from looptheory.training import save_checkpoint  # noqa: E402


def provenance(name: str, result, command: str, cpu_seconds: float) -> dict:
    """What made the checkpoint of `name`: the flat record stored in the file."""
    return {
        "name": name,
        "command": command,
        "seed": result.seed,
        "settings": X.declared_settings(name),
        "prompts": result.steps * result.batch,
        "looptheory": looptheory.__version__,
        "source_sha256": X.source_hash(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_seconds": round(cpu_seconds, 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None,
                        help=f"comma-separated model names (default: all of {', '.join(X.TRAININGS)})")
    parser.add_argument("--out", default=X.CHECKPOINT_DIR, help="folder to write NAME.npz into")
    args = parser.parse_args(argv)
    names = list(X.TRAININGS) if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in names if s not in X.TRAININGS]
    if unknown:
        parser.error(f"--only: unknown model(s) {', '.join(unknown)}; expected some of {', '.join(X.TRAININGS)}")
    os.makedirs(args.out, exist_ok=True)
    command = "python scripts/train_checkpoints.py" + "".join(" " + shlex.quote(a) for a in (argv or sys.argv[1:]))
    total = 0.0
    for name in names:
        t0 = time.process_time()
        result = X.train_declared(name, progress=None)
        cpu = time.process_time() - t0
        total += cpu
        path = save_checkpoint(os.path.join(args.out, f"{name}.npz"),
                               replace(result, provenance=provenance(name, result, command, cpu)),
                               overwrite=True, compress=True)
        print(f"{name:28s} {result.steps * result.batch / 1e6:6.2f}M prompts  {cpu:7.1f} CPU-s  "
              f"{os.path.getsize(path) / 1024:6.1f} KiB  -> {os.path.relpath(path, ROOT)}", flush=True)
    print(f"total {total:.1f} CPU-s for {len(names)} model(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
