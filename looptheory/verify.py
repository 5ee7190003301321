"""The items `looptheory verify` runs, and a run folder that survives an interruption.

Every item is a `looptheory.record.Spec` (checks, proofs_check modules, claims, experiments, in
the report's order); `all_items()` lists them and `select(only)` picks some by id. A run folder
DIR holds:

  DIR/run.json          written at the start: the package version, quick or full, the --only
                        selection and the ordered item ids; --resume refuses a folder whose
                        run.json differs from what it is asked to do;
  DIR/items/<id>.json   one file per finished item (its Record), written atomically (a temporary
                        file in the same folder, then os.replace), so an interruption leaves
                        either the whole record or none;
  DIR/report.md, DIR/results.json   rewritten after every item (looptheory.report), marked
                        "incomplete (k of N items)" until the last item and the figures are done.

Nothing here imports the heavy modules at import time, so the command line can list the items
and check its arguments before any work.
"""

from __future__ import annotations

import json
import math
import os
import tempfile

import numpy as np

from .record import Record, Spec

RUN_FILE = "run.json"
ITEMS_DIR = "items"
FORMAT = 1


def all_items() -> list[Spec]:
    """Every item `looptheory verify` runs, in the report's order: the toolkit's checks, the
    proofs_check modules, the claims, the experiments."""
    from .checks import CHECKS, proof_specs
    from .claims import REGISTRY as CLAIMS
    from .experiments import REGISTRY as EXPERIMENTS

    return list(CHECKS) + proof_specs() + list(CLAIMS.values()) + list(EXPERIMENTS.values())


def select(only=None, items=None) -> list[Spec]:
    """The items to run: all of them (only None), or those named in `only` (ids as `--list`
    prints them; a proofs_check module also by its bare name when no other item has that id),
    in the report's order. ValueError naming --only, in one line, for an unknown id."""
    items = all_items() if items is None else list(items)
    if only is None:
        return items
    by_id = {s.id: s for s in items}
    alias = {}
    for s in items:
        if s.kind == "proof" and "." in s.id:
            bare = s.id.split(".", 1)[1]
            if bare not in by_id:
                alias[bare] = s.id
    wanted = set()
    for name in only:
        key = name if name in by_id else alias.get(name)
        if key is None:
            raise ValueError(f"--only: unknown id {name!r}; valid ids: {', '.join(by_id)}")
        wanted.add(key)
    return [s for s in items if s.id in wanted]


def groups(specs) -> list:
    """The items to run, as lists of ids that one worker process runs in order (--jobs): an item
    whose `after` names another pending item joins that item's group, so that a computation they
    share (G1's cells, which G1-structure reads) is made once, as in a serial run."""
    ids = [s.id for s in specs]
    out, where = [], {}
    for s in specs:
        lead = getattr(s, "after", "")
        if lead in where:
            out[where[lead]].append(s.id)
            where[s.id] = where[lead]
        else:
            where[s.id] = len(out)
            out.append([s.id])
    assert sorted(i for g in out for i in g) == sorted(ids)
    return out


def worker_init() -> None:
    """In a --jobs worker process: Ctrl-C is the parent's to handle (it stops the workers), and
    SIGTERM ends the worker at once."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_items(ids, quick: bool) -> list:
    """Run the items `ids` in order in this process (a --jobs worker) and return their Records."""
    from ._threads import single_blas_thread

    specs = {s.id: s for s in all_items()}
    with single_blas_thread():  # as in a serial run: each item's linear algebra is small
        return [specs[i].run(quick, **({"progress": False} if specs[i].kind == "experiment" else {})) for i in ids]


def settings(quick: bool, only_ids) -> dict:
    """What a run is asked to do, as recorded in run.json and compared by --resume."""
    from . import __version__

    return {"looptheory": __version__, "mode": "quick" if quick else "full",
            "only": None if only_ids is None else list(only_ids)}


def atomic_write(path: str, text) -> None:
    """Write text (a str, or bytes) to path so that readers see the old file or the new one,
    never a part: a temporary file in the same folder, flushed to disk, then os.replace."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=folder)
    binary = isinstance(text, bytes)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def plain(x):
    """x as JSON data: arrays and tuples to lists, numpy scalars to Python numbers; non-finite
    floats stay floats (the item files are read back by Python's json, which keeps them)."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return plain(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    if isinstance(x, (str, int)) or x is None:
        return x
    return str(x)


def record_json(rec: Record) -> str:
    """The record as the JSON text of its item file."""
    return json.dumps(plain(rec.to_dict()), indent=1)


def _safe_name(item_id: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in item_id)


def item_path(out: str, item_id: str) -> str:
    """out/items/<id>.json (characters other than letters, digits, '.', '_', '-' become '_')."""
    return os.path.join(out, ITEMS_DIR, _safe_name(item_id) + ".json")


def start_run(out: str, quick: bool, items, only_ids) -> dict:
    """Record a new run in out/run.json (and create out/items); returns the run's settings."""
    run = {**settings(quick, only_ids), "format": FORMAT, "items": [s.id for s in items]}
    os.makedirs(os.path.join(out, ITEMS_DIR), exist_ok=True)
    atomic_write(os.path.join(out, RUN_FILE), json.dumps(run, indent=1))
    return run


def read_run(out: str) -> dict:
    """The settings in out/run.json; ValueError naming --resume, in one line, when there is no
    readable run there."""
    if not os.path.isdir(out):
        raise ValueError(f"--resume: {out!r} is not a folder")
    path = os.path.join(out, RUN_FILE)
    if not os.path.exists(path):
        raise ValueError(f"--resume: {out!r} has no {RUN_FILE}: it is not the folder of a looptheory verify run "
                         f"that can be resumed")
    try:
        with open(path, encoding="utf-8") as fh:
            run = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--resume: cannot read {path!r} ({exc})".replace("\n", " ")) from None
    need = {"looptheory": str, "mode": str, "items": list}
    if not isinstance(run, dict) or any(not isinstance(run.get(k), t) for k, t in need.items()):
        raise ValueError(f"--resume: {path!r} is not a run record of looptheory verify")
    return run


def resume_refusal(run: dict, quick, only) -> str | None:
    """Why the run recorded in `run` cannot be resumed by this command (None if it can).
    quick: None when the command did not say; only: None when it did not say."""
    from . import __version__

    if run.get("format") != FORMAT:
        return f"it was written in another run-folder format ({run.get('format')!r}, this is {FORMAT})"
    if run["looptheory"] != __version__:
        return f"it was started by looptheory {run['looptheory']}, this is looptheory {__version__}"
    if quick is not None and run["mode"] != ("quick" if quick else "full"):
        return f"it is a {run['mode']} run and this command asks for a {'quick' if quick else 'full'} one"
    if only is not None:
        asked = sorted(s.id for s in select(only))
        was = None if run.get("only") is None else sorted(run["only"])
        if was != asked:
            return (f"it runs {'every item' if was is None else '--only ' + ' '.join(was)}, and this command asks for "
                    f"--only {' '.join(asked)}")
    return None


def clean_partials(out: str) -> None:
    """Remove temporary files an interruption left between a write and its os.replace."""
    for folder in (out, os.path.join(out, ITEMS_DIR)):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if name.startswith(".tmp-") and name.endswith(".part"):
                try:
                    os.remove(os.path.join(folder, name))
                except OSError:
                    pass


def load_done(out: str, ids) -> dict:
    """The finished items of the run in out: {id: Record} for each id whose item file reads
    back as a complete record of that id (a file that does not is run again)."""
    done = {}
    for item_id in ids:
        path = item_path(out, item_id)
        if not os.path.exists(path):
            continue
        try:
            with open(path, encoding="utf-8") as fh:
                rec = Record.from_dict(json.load(fh))
        except (OSError, ValueError, TypeError):
            continue
        if rec.id == item_id:
            done[item_id] = rec
    return done


def save_item(out: str, rec: Record) -> Record:
    """Write a finished item to out/items/<id>.json (atomically); returns it as read back."""
    text = record_json(rec)
    atomic_write(item_path(out, rec.id), text)
    return Record.from_dict(json.loads(text))


def jsonable(x):
    """x as strict JSON (results.json): like `plain`, with non-finite floats as strings."""
    x = plain(x)
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x
