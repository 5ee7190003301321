"""The verification report: runs the items of `looptheory.verify` (checks, proofs_check modules,
claims, experiments), writes DIR/report.md, DIR/results.json and figures, one item at a time.

Every item returns a `looptheory.record.Record`; each finished one is saved in DIR/items/ and the
report and results.json are rewritten after it, marked "incomplete (k of N items)" until every
item and the figures are done, so an interrupted run leaves a valid partial report that
`looptheory verify --resume DIR` completes. Nothing the user had is overwritten: a new run's
folder must be new or empty unless force=True.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import time

import numpy as np

from . import __version__
from . import verify as _verify
from ._threads import single_blas_thread
from .checks import loss_curve_data
from .record import Record
from .runlock import LOCK_NAME, probe_writable


def prepare_out_dir(out: str | None, force: bool = False) -> str:
    """The output folder of a run, created if new, checked before any work; returns its name.

    out None: a new timestamped folder. Otherwise out must not exist, or be an empty folder (the
    lock file of looptheory.runlock does not count), or force must be set. ValueError naming
    --out, in one line, for: an empty name, a dangling symlink, a path under a file (or under a
    dangling symlink), a folder that cannot be created (read-only parent) or written (read-only
    folder). Writability is tested by creating and removing a file (runlock.probe_writable),
    since root passes every permission check; nothing stays created unless every check passes.
    """
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = f"looptheory-verify-{stamp}"
        k = 1
        while os.path.lexists(out):
            k += 1
            out = f"looptheory-verify-{stamp}-{k}"
    if not isinstance(out, (str, os.PathLike)):
        raise ValueError(f"--out: expected a folder name, got {out!r}")
    out = os.fspath(out)
    if not str(out).strip():
        raise ValueError("--out: empty folder name; give a folder such as --out results")
    if "\0" in out:
        raise ValueError(f"--out: {out!r} contains a NUL character")
    if os.path.islink(out) and not os.path.exists(out):
        raise ValueError(f"--out: {out!r} is a symlink to {os.readlink(out)!r}, which does not exist")
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise ValueError(f"--out: {out!r} exists and is not a folder")
        try:
            entries = [e for e in os.listdir(out) if e != LOCK_NAME]
        except OSError as exc:
            raise ValueError(f"--out: cannot read folder {out!r} ({exc.strerror or exc})") from None
        if entries and not force:
            raise ValueError(f"--out: folder {out!r} is not empty; choose a new folder or pass --force")
        try:
            probe_writable(out)
        except OSError as exc:
            raise ValueError(f"--out: folder {out!r} is read-only ({exc.strerror or exc})") from None
        return out
    parent = _existing_ancestor(out)
    if not os.path.isdir(parent):
        dangling = os.path.islink(parent) and not os.path.exists(parent)
        what = "a symlink to a missing target" if dangling else "a file, not a folder"
        raise ValueError(f"--out: {out!r} is under {parent!r}, which is {what}")
    try:
        probe_writable(parent)
    except OSError as exc:
        raise ValueError(f"--out: cannot create {out!r}: folder {parent!r} is read-only "
                         f"({exc.strerror or exc})") from None
    try:
        os.makedirs(out)
    except OSError as exc:
        raise ValueError(f"--out: cannot create folder {out!r} ({exc.strerror or exc})") from None
    return out


def _existing_ancestor(path: str) -> str:
    """The longest leading part of path that exists (as anything, a dangling symlink too); "." if none."""
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent in ("", path):
            return parent or "."
        path = parent
    return path


# --- rendering ---------------------------------------------------------------------------------

KIND_HEADINGS = {
    "claim": ("Claims of the papers", "Claim details"),
    "check": ("Checks of the toolkit", "Check details"),
    "proof": ("Symbolic derivations of proofs_check", "Symbolic derivation details"),
    "experiment": ("Trained models against the exact theory", "Experiment details"),
}
KIND_ORDER = ("claim", "check", "proof", "experiment")

#: What a cell with no value means, when its row gives no reason of its own.
NA = "n/a"


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fmt(v):
    """A table cell: numbers to 6 significant digits, no value as n/a, '|' escaped for Markdown."""
    if _is_missing(v):
        text = NA
    elif isinstance(v, float):
        text = f"{v:.6g}"
    elif isinstance(v, dict):
        text = ", ".join(f"{k} = {_fmt(x)}" for k, x in v.items() if not isinstance(x, list))
    else:
        text = str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(rows) -> list:
    """A Markdown table of the rows' scalar columns (list-valued columns, such as matrices and
    curves, stay in results.json), with a note where a cell has no value."""
    keys = []
    for row in rows:
        for k, v in row.items():
            if k not in keys:
                keys.append(k)
    keys = [k for k in keys if not any(isinstance(r.get(k), list) for r in rows)]
    if not keys:
        return []
    lines = ["| " + " | ".join(_fmt(k) for k in keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(row.get(k)) for k in keys) + " |" for row in rows]
    missing = [k for k in keys if any(_is_missing(r.get(k)) for r in rows)]
    if missing:
        lines += ["", f"{NA}: no value for that row (the column does not apply to it): {', '.join(missing)}."]
    return lines


def _mode(rec_or_mode) -> str:
    mode = rec_or_mode if isinstance(rec_or_mode, str) else rec_or_mode.mode
    return f"{mode} run" if mode else "run"


def _details(rec: Record, present: set) -> list:
    """A record's section: verdict and summary, source and statement, declared parameters (when
    it has any), the optimisations it rests on, worst case, counterexample, and the evidence
    (scalars, then its tables)."""
    lines = [f"### {rec.id}: {rec.title}", ""]
    lines += [f"Verdict: **{rec.verdict}** ({_mode(rec)}{'' if rec.complete else ', incomplete'}). {rec.summary}", ""]
    if rec.kind == "claim" or rec.source != "looptheory":
        lines += [f"Source: {rec.source}.", ""]
    if rec.statement and rec.statement != rec.title:
        lines += [f"Statement: {rec.statement}", ""]
    if rec.params:
        lines += ["Declared parameters (fixed before running):", ""]
        lines += [f"- {k}: {_fmt(v)}" for k, v in rec.params.items()] + [""]
    if rec.optimiser:
        lines += ["Optimisations the verdict rests on (what each reached):", ""]
        lines += [f"- {_fmt(t)}" for t in rec.optimiser] + [""]
    if rec.worst_case is not None:
        lines += [f"Worst case: {_fmt(rec.worst_case)}.", ""]
    if rec.counterexample is not None:
        lines += [f"Counterexample: {_fmt(rec.counterexample)} (in full in results.json).", ""]
    if rec.examples_run is not None:
        lines += [f"Cases run: {rec.examples_run}.", ""]
    ev = rec.evidence
    scalars = {k: v for k, v in ev.items()
               if (isinstance(v, (int, float, str, bool)) or v is None) and k != "same_table_as"}
    if scalars:
        lines += ["Evidence:", ""] + [f"- {k}: {_fmt(v)}" for k, v in scalars.items()] + [""]
    rows = ev.get("rows")
    ref = ev.get("same_table_as")
    if rows and isinstance(rows, list) and isinstance(rows[0], dict):
        if ref and ref in present:
            lines += [f"Cells: the table under {ref} above (the same cells and the same searches, computed once).", ""]
        else:
            lines += _table(rows) + [""]
    for title, trows in (ev.get("tables") or {}).items():
        if trows and isinstance(trows, list) and isinstance(trows[0], dict):
            lines += [f"{title}:", ""] + _table(trows) + [""]
    return lines


# --- figures ------------------------------------------------------------------------------------
# Every figure of the report is drawn by the public functions of looptheory.plots onto an Axes
# made here; only the file names (the stems, keys of plots.FIGURE_CAPTIONS), sizes and saving
# (PNG and SVG) belong to the report.


def _figure_specs(curve, chen, claims, experiments, checks=()):
    """(stem, figure size, draw(fig)) for every figure the report draws from these results; a
    figure whose claim or experiment did not run is left out. plots is looked up at call time."""
    from . import plots as P
    from .claims import MU_REPORTED

    by_id = {c.id: c for c in claims}
    by_exp = {e.id: e for e in experiments}
    specs = []

    def one(fn, *args, **kw):
        return lambda fig: fn(*args, ax=fig.add_subplot(), **kw)

    def panels(fn, rec, *names):  # one record, side by side, one panel each
        return lambda fig: [fn(rec, ax=a, panel=p) for a, p in zip(fig.subplots(1, len(names)), names)]

    if curve is not None:
        specs += [("loss_vs_loops", (7.8, 4.4), one(P.plot_loss_vs_loops, curve)),
                  ("optimal_scale_vs_loops", (7.8, 4.4), one(P.plot_optimal_scale, curve))]
    if "G3" in by_id:
        g3 = by_id["G3"]
        xi = getattr(g3, "params", {}).get("xi", 1e-6)
        specs += [("flow_excess", (8.6, 4.8), one(P.plot_flow, g3, quantity="excess", mu=MU_REPORTED, xi=xi)),
                  ("flow_eigenvalues", (8.6, 4.6), one(P.plot_flow_eigenvalues, g3)),
                  ("flow_dominance", (8.6, 4.8), one(P.plot_flow, g3, quantity="dominance", mu=MU_REPORTED, xi=xi))]
    if "G2" in by_id:
        specs.append(("dominance_vs_d", (8.6, 4.8), one(P.plot_dominance, by_id["G2"], mu=MU_REPORTED)))
    if "G5" in by_id:
        def g5(fig, rec=by_id["G5"]):
            a1, a2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.25]})
            P.plot_optimal_loss(rec, ax=a1)
            P.plot_test_time_loops(rec, ax=a2)

        specs.append(("optimal_loss_and_test_loops", (13.5, 4.6), g5))
    if "G6" in by_id:
        specs.append(("looped_vs_untied_optimum", (14.5, 4.8), panels(P.plot_looped_vs_untied, by_id["G6"], "loss", "ratio")))
    if chen is not None:
        specs += [("chen_error_vs_loops", (9.4, 4.8), one(P.plot_chen_error, chen)),
                  ("chen_kappa_vs_ratio", (9.0, 4.8), one(P.plot_chen_kappa, chen)),
                  ("chen_divergence_vs_ratio", (8.6, 4.6), one(P.plot_chen_divergence, chen)),
                  ("chen_sample_complexity", (9.4, 4.8), one(P.plot_sample_complexity, chen))]
    training = [by_exp[i] for i in ("E1", "E2") if i in by_exp]
    if training:
        specs.append(("training_curves", (7.4, 4.4), one(P.plot_training, training)))
    if "E3" in by_exp:
        specs.append(("looped_vs_multilayer", (12.5, 4.6), panels(P.plot_looped_vs_multilayer, by_exp["E3"], "loss", "difference")))
    if "E4" in by_exp:
        specs.append(("test_time_loops", (8.6, 4.8), one(P.plot_test_time_loops, by_exp["E4"])))
    limit = next((c for c in checks if c.id == "scalar_limit"), None)
    if limit is not None and limit.evidence.get("convergence"):
        specs.append(("scalar_limit", (8.0, 4.6), one(P.plot_scalar_limit, limit.evidence["convergence"])))
    return specs


def _status(done: int, total: int, figures_done: bool) -> str:
    if done == total and figures_done:
        return "complete"
    if done == total:
        return f"incomplete ({done} of {total} items; figures not drawn yet)"
    return f"incomplete ({done} of {total} items)"


def render(records: list, meta: dict, figures: list, pending: list, figure_notes=()) -> str:
    """report.md's text for the records finished so far (in the report's order), the figure
    files drawn, and the ids still to run."""
    from .plots import figure_markdown

    status = meta["status"]
    mode = meta["mode"]
    lines = ["# looptheory verification report", ""]
    if status != "complete":
        lines += [f"**Status: {status}.** The run stopped or is still running; the items below are finished and "
                  f"final. Resume it with `looptheory verify --resume {meta['folder']}`.", ""]
    lines += [
        f"looptheory {meta['looptheory']}, **{mode} run**, {meta['date']}, {meta['seconds']:.1f} s "
        f"(Python {meta['python']}, NumPy {meta['numpy']}). Status: {status}.",
        "",
    ]
    if mode == "quick":
        lines += ["Every number below is from a quick run (`--quick`): smaller Monte Carlo samples, fewer cases and "
                  "shorter training than the full run (`looptheory verify` without `--quick`); docs/claims.md labels "
                  "which of its numbers are quick and which full.", ""]
    else:
        lines += ["Every number below is from a full run (`looptheory verify` without `--quick`).", ""]
    if meta.get("only"):
        lines += [f"Selected items only (`--only {' '.join(meta['only'])}`).", ""]
    lines += [
        "Conventions: docs/conventions.md in the looptheory repository (loss not divided by d, no factor 1/2;",
        "prediction -[Z_L]_{d+1,n+1}; sparse weights Q = [[A,0],[0,0]], P = [[0,0],[u^T,1]]).",
        "",
        "Verdicts: claims hold / fail (with the counterexample) / are vacuous (true only because the bound is "
        "trivial) / unresolved (the evidence could not decide: an optimisation that did not converge, a Monte Carlo "
        "estimate whose error cannot be trusted); checks, symbolic derivations and experiments pass / fail / are "
        "unresolved. A verdict never rests on an optimisation that did not converge.",
        "Parameters and regions are declared in the code (`looptheory/claims.py`, `looptheory/chen.py`, "
        "`looptheory/checks.py`, `looptheory/experiments.py`, `proofs_check/`) before any result is seen.",
        "",
    ]
    by_kind = {k: [r for r in records if r.kind == k] for k in KIND_ORDER}
    for kind in KIND_ORDER:
        recs = by_kind[kind]
        if not recs:
            continue
        lines += [f"## {KIND_HEADINGS[kind][0]} ({mode} run)", ""]
        if kind == "experiment":
            lines += ["Models trained in NumPy on fresh minibatches of sampled prompts (looptheory.training), compared",
                      "with the exact engine and with Monte Carlo of the reference forward pass (for a sparse model's loss",
                      "in E5, the conditional estimator of monte_carlo_loss, docs/monte-carlo.md). Monte Carlo means carry",
                      "their standard errors; a mean whose sample cannot resolve a heavy tail is marked unresolved.", ""]
        lines += ["| item | verdict | evidence | seconds |", "|---|---|---|---|"]
        for r in recs:
            lines.append(f"| {_fmt(r.id)}: {_fmt(r.title)} | **{r.verdict}** | {_fmt(r.summary)} | {r.seconds:.1f} |")
        if kind in ("check", "proof"):
            passed = sum(r.verdict == "pass" for r in recs)
            lines += ["", f"{passed} passed, {len(recs) - passed} failed or unresolved."]
        lines.append("")
    if pending:
        lines += ["## Not run yet", "", ", ".join(f"`{i}`" for i in pending), ""]
    lines += ["## Figures", ""]
    if status != "complete" and not figures:
        lines += ["Figures are drawn when every item has finished.", ""]
    for f in figures:
        if f.endswith(".png"):
            name = os.path.basename(f)
            lines += [figure_markdown(name[:-4], name), ""]
    lines += [f"- {n}" for n in figure_notes] + ([""] if figure_notes else [])
    present = {r.id for r in records}
    for kind in KIND_ORDER:
        if by_kind[kind]:
            lines += [f"## {KIND_HEADINGS[kind][1]} ({mode} run)", ""]
            for r in by_kind[kind]:
                lines += _details(r, present)
    return "\n".join(lines) + "\n"


# --- figures -----------------------------------------------------------------------------------


def draw_figures(out_dir: str, records: list, quick: bool) -> tuple:
    """Draw the report's figures from the finished records (only those of the items present)
    through the public functions of looptheory.plots (`_figure_specs`); returns (files, notes,
    extra data for results.json). A figure that cannot be drawn is a note, not a crash."""
    from matplotlib.figure import Figure

    from .chen import chen_figure_data

    by_id = {r.id: r for r in records}
    files, notes, extra = [], [], {}
    curve = chen = None
    if "G5" in by_id:
        try:
            curve = extra["loss_curve"] = loss_curve_data(quick)
        except Exception as exc:  # a figure's data must not cost the report
            notes.append(f"loss-against-loops data could not be computed: {exc!r}")
    if "C2" in by_id:
        try:
            chen = chen_figure_data(quick)
        except Exception as exc:
            notes.append(f"Chen et al. figure data could not be computed: {exc!r}")
    claims = [r for r in records if r.kind == "claim"]
    experiments = [r for r in records if r.kind == "experiment"]
    checks = [r for r in records if r.kind == "check"]
    for stem, size, draw in _figure_specs(curve, chen, claims, experiments, checks):
        try:
            fig = Figure(figsize=size, layout="constrained")
            draw(fig)
            # the quick run saves PNG only, without the tight bounding box's second drawing pass
            # (the constrained layout already fits the figure): a third of the drawing cost
            for ext in ("png",) if quick else ("png", "svg"):
                path = os.path.join(out_dir, f"{stem}.{ext}")
                fig.savefig(path, dpi=100 if quick else 130, **({} if quick else {"bbox_inches": "tight"}))
                files.append(path)
        except Exception as exc:
            notes.append(f"figure {stem} could not be drawn: {exc!r}")
    return files, notes, extra


# --- a run -------------------------------------------------------------------------------------


def _meta(run: dict, out_dir: str, seconds: float, status: str, done: int, total: int) -> dict:
    return {"looptheory": __version__, "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "mode": run["mode"], "only": run.get("only"), "python": platform.python_version(),
            "numpy": np.__version__, "seconds": seconds, "status": status, "items done": done,
            "items total": total, "folder": out_dir}


def write_outputs(out_dir: str, run: dict, records: dict, seconds: float, figures=(), figure_notes=(),
                  extra=None, figures_done: bool = False, encoded=None) -> dict:
    """Rewrite out_dir/report.md and out_dir/results.json (atomically) for the finished records
    ({id: Record}) of the run; returns the results dict. encoded: a dict the caller keeps across
    the calls of one run, holding each record's JSON form once made (a run rewrites the files
    after every item, and encoding every record again each time grew with the square of the
    items: 40% of a quick run's own time)."""
    encoded = {} if encoded is None else encoded
    order = [i for i in run["items"] if i in records]
    recs = [records[i] for i in order]
    pending = [i for i in run["items"] if i not in records]
    status = _status(len(recs), len(run["items"]), figures_done)
    meta = _meta(run, out_dir, seconds, status, len(recs), len(run["items"]))
    fig_names = [os.path.basename(f) for f in figures]
    def enc(r):
        hit = encoded.get(id(r))
        if hit is None or hit[0] is not r:
            hit = encoded[id(r)] = (r, _verify.jsonable(r.to_dict()))
        return hit[1]

    payload = {"meta": _verify.jsonable(meta), "complete": status == "complete", "pending": pending,
               "records": [enc(r) for r in recs]}
    for kind, key in (("claim", "claims"), ("check", "checks"), ("proof", "proofs"), ("experiment", "experiments")):
        payload[key] = [enc(r) for r in recs if r.kind == kind]
    payload["figures"] = fig_names
    payload.update(_verify.jsonable(extra or {}))
    # indented (readable) only in the final write: an indent makes json use its pure-Python
    # encoder, and the rewrites after every item would pay it again on the growing payload
    _verify.atomic_write(os.path.join(out_dir, "results.json"),
                         json.dumps(payload, indent=1 if status == "complete" else None))
    _verify.atomic_write(os.path.join(out_dir, "report.md"), render(recs, meta, list(figures), pending, figure_notes))
    return payload


class WorkerDied(RuntimeError):
    """A --jobs worker process died (killed, out of memory) while running items; the items
    finished before are saved, and the run can be resumed."""


def _run_parallel(specs, quick, jobs, finish) -> None:
    """Run the items on `jobs` worker processes (spawned: they share no file descriptor, such as
    the run folder's lock, with this process), calling finish(record) here as each finishes.
    On Ctrl-C or SIGTERM (raised here by the caller's handler) the workers are stopped at once."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")
    ex = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_verify.worker_init)
    futures = {}
    try:
        for ids in _verify.groups(specs):
            futures[ex.submit(_verify.run_items, ids, quick)] = ids
        for fut in as_completed(futures):
            try:
                recs = fut.result()
            except BrokenProcessPool as exc:
                raise WorkerDied(f"a worker process died while running {', '.join(futures[fut])} ({exc})") from None
            for rec in recs:
                finish(rec)
    except BaseException:
        for fut in futures:
            fut.cancel()
        for child in mp.active_children():  # the pool's workers: stop their current items now
            child.terminate()
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)


def run_verify(out_dir: str, quick: bool, only=None, resume: bool = False, progress=None, bars=None,
               jobs: int = 1) -> dict:
    """Run the items of a verify run in out_dir (a prepared, locked folder) and write the report.

    New run (resume False): records the settings in out_dir/run.json, then runs the items (all,
    or those named in `only`). resume True: reads out_dir/run.json (the caller has compared it
    with what was asked, `verify.resume_refusal`) and runs only the items without a finished
    record. After each item its record is saved and the report rewritten; at the end the
    figures are drawn and the report is marked complete. progress(i, total, record) after each
    item; bars: tqdm bars during training (None: only on a terminal). KeyboardInterrupt (and
    whatever the caller raises from a signal handler) passes through, leaving the partial report.
    jobs: run the items on this many worker processes (the report keeps the items' order; each
    finished item is saved as it arrives); WorkerDied if a worker process dies."""
    t0 = time.perf_counter()
    _verify.clean_partials(out_dir)
    if resume:
        run = _verify.read_run(out_dir)
        specs = _verify.select(run.get("only"))
        known = {s.id for s in specs}
        missing = [i for i in run["items"] if i not in known]
        if missing:
            raise ValueError(f"--resume: the run in {out_dir!r} has items this looptheory does not: {', '.join(missing)}")
        specs = [s for s in specs if s.id in set(run["items"])]
        done = _verify.load_done(out_dir, run["items"])
        previous = sum(r.seconds for r in done.values())  # the earlier session's items
    else:
        specs = _verify.select(only)
        run = _verify.start_run(out_dir, quick, specs, None if only is None else [s.id for s in specs])
        done = {}
        previous = 0.0
    quick = run["mode"] == "quick"

    def elapsed():
        return previous + (time.perf_counter() - t0)

    encoded = {}
    write_outputs(out_dir, run, done, elapsed(), encoded=encoded)
    total = len(run["items"])

    def finish(rec):
        done[rec.id] = _verify.save_item(out_dir, rec)
        write_outputs(out_dir, run, done, elapsed(), encoded=encoded)
        if progress:
            progress(len(done), total, done[rec.id])

    pending = [s for s in specs if s.id not in done]
    if jobs > 1 and len(pending) > 1:
        _run_parallel(pending, quick, jobs, finish)
    else:
        for spec in pending:
            options = {"progress": bars} if spec.kind == "experiment" else {}
            # one BLAS thread per item: its linear algebra is small (issue 13: verify --quick took
            # 106 CPU-s instead of 187 so); the caller's settings come back after each item
            with single_blas_thread():
                rec = spec.run(quick, **options)
            finish(rec)
    records = [done[i] for i in run["items"] if i in done]
    figures, notes, extra = draw_figures(out_dir, records, quick)
    return write_outputs(out_dir, run, done, elapsed(), figures, notes, extra, figures_done=True, encoded=encoded)


def write_report(out_dir: str, quick: bool, progress=None, experiment_progress=None, bars=None, only=None) -> dict:
    """Run every item (or those in `only`) into out_dir and write the report; returns the
    results dict. progress(i, total, record) after each item; experiment_progress(record)
    after each experiment too; bars: tqdm bars during training (None: only on a terminal)."""
    def both(i, total, rec):
        if progress:
            progress(i, total, rec)
        if experiment_progress and rec.kind == "experiment":
            experiment_progress(rec)

    return run_verify(out_dir, quick, only=only, progress=both, bars=bars)
