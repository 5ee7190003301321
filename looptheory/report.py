"""The verification report: runs the checks, writes DIR/report.md, DIR/results.json and figures.

Nothing the user had is overwritten: the folder must be new or empty unless force=True.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import time
from dataclasses import asdict

import numpy as np

from . import __version__
from .checks import loss_curve_data, run_checks
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


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else str(v)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)


def _fmt(v):
    """A table cell: numbers to 6 significant digits, and '|' escaped for Markdown tables."""
    text = f"{v:.6g}" if isinstance(v, float) else str(v)
    return text.replace("|", "\\|")


def _details(title, verdict, summary, params_heading, params, evidence) -> list:
    """A report section: verdict, declared parameters, and the evidence rows as a table
    (list-valued columns, such as matrices, stay in results.json)."""
    head = f"Verdict: **{verdict}**. {summary}" if verdict else f"Result: {summary}"
    lines = [f"### {title}", "", head, "", params_heading, ""]
    lines += [f"- {k}: {_fmt(v)}" for k, v in params.items()]
    scalars = {k: v for k, v in evidence.items() if isinstance(v, (int, float, str, bool, np.floating)) or v is None}
    if scalars:
        lines += ["", "Evidence:", ""] + [f"- {k}: {_fmt(v)}" for k, v in scalars.items()]
    rows = evidence.get("rows")
    if rows and isinstance(rows, list) and isinstance(rows[0], dict):
        keys = [k for k in rows[0] if not isinstance(rows[0][k], list)]
        lines += ["", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_fmt(row.get(k)) for k in keys) + " |" for row in rows]
    return lines + [""]


# --- figures ------------------------------------------------------------------------------------
# Every figure of the report is drawn by the public functions of looptheory.plots onto an Axes
# made here; only the file names (the stems, keys of plots.FIGURE_CAPTIONS), sizes and saving
# (PNG and SVG) belong to the report.


def _figure_specs(curve, chen, claims, experiments):
    """(stem, figure size, draw(fig)) for every figure the report draws from these results; a
    figure whose claim or experiment did not run is left out. plots is looked up at call time."""
    from . import plots as P
    from .claims import MU_REPORTED

    by_id = {c.id: c for c in claims}
    by_exp = {e.id: e for e in experiments}
    specs = []

    def one(fn, *args, **kw):
        return lambda fig: fn(*args, ax=fig.add_subplot(), **kw)

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
    if chen is not None:
        specs += [("chen_error_vs_loops", (9.4, 4.8), one(P.plot_chen_error, chen)),
                  ("chen_kappa_vs_ratio", (9.0, 4.8), one(P.plot_chen_kappa, chen)),
                  ("chen_divergence_vs_ratio", (8.6, 4.6), one(P.plot_chen_divergence, chen)),
                  ("chen_sample_complexity", (9.4, 4.8), one(P.plot_sample_complexity, chen))]
    training = [by_exp[i] for i in ("E1", "E2") if i in by_exp]
    if training:
        specs.append(("training_curves", (7.4, 4.4), one(P.plot_training, training)))
    if "E3" in by_exp:
        def e3(fig, rec=by_exp["E3"]):
            a1, a2 = fig.subplots(1, 2)
            P.plot_looped_vs_multilayer(rec, ax=a1, panel="loss")
            P.plot_looped_vs_multilayer(rec, ax=a2, panel="difference")

        specs.append(("looped_vs_multilayer", (12.5, 4.6), e3))
    if "E4" in by_exp:
        specs.append(("test_time_loops", (8.6, 4.8), one(P.plot_test_time_loops, by_exp["E4"])))
    return specs


def _write_figures(out_dir, curve, chen, claims, experiments) -> list:
    """Draw and save (PNG and SVG) every figure of the report; returns the file paths. Figures are
    matplotlib Figure objects (no pyplot, so no global state and nothing left open)."""
    from matplotlib.figure import Figure

    paths = []
    for stem, size, draw in _figure_specs(curve, chen, claims, experiments):
        fig = Figure(figsize=size, layout="constrained")
        draw(fig)
        for ext in ("png", "svg"):
            path = os.path.join(out_dir, f"{stem}.{ext}")
            fig.savefig(path, dpi=130, bbox_inches="tight")
            paths.append(path)
    return paths


def write_report(out_dir: str, quick: bool, progress=None, experiment_progress=None, bars=None) -> dict:
    """Run every check, claim and experiment; write the report and figures into out_dir and
    return the results dict. progress(i, total, result) after each check or claim (i = 0 for
    claims); experiment_progress(result) after each trained-model experiment; bars: tqdm bars
    during training (None: only on a terminal)."""
    from .claims import check_claims
    from .chen import chen_figure_data
    from .experiments import run_experiments
    from .plots import figure_markdown

    t0 = time.perf_counter()
    results = run_checks(quick=quick, progress=progress)
    claims = check_claims(quick=quick, progress=(lambda r: progress(0, 0, r)) if progress else None)
    curve = loss_curve_data(quick)
    chen = chen_figure_data(quick)
    experiments = run_experiments(quick=quick, progress=experiment_progress, bars=bars)
    figs = _write_figures(out_dir, curve, chen, claims, experiments)
    total = time.perf_counter() - t0
    meta = {
        "looptheory": __version__,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "seconds": total,
    }
    payload = {"meta": meta, "claims": [asdict(c) for c in claims], "checks": [asdict(r) for r in results],
               "experiments": [asdict(e) for e in experiments],
               "figures": [os.path.basename(f) for f in figs], "loss_curve": curve}
    with open(os.path.join(out_dir, "results.json"), "w") as fh:
        json.dump(_jsonable(payload), fh, indent=1)
    lines = [
        "# looptheory verification report",
        "",
        f"looptheory {meta['looptheory']}, {meta['mode']} run, {meta['date']}, {total:.1f} s "
        f"(Python {meta['python']}, NumPy {meta['numpy']}).",
        "",
        "Conventions: docs/conventions.md in the looptheory repository (loss not divided by d, no factor 1/2;",
        "prediction -[Z_L]_{d+1,n+1}; sparse weights Q = [[A,0],[0,0]], P = [[0,0],[u^T,1]]).",
        "",
        "## Claims of the papers",
        "",
        "Verdicts: holds / fails (with the counterexample) / vacuous (true only because the bound is trivial) / unresolved (the evidence could not decide, e.g. an optimisation that did not converge).",
        "Parameters and regions are declared in `looptheory/claims.py` before any result is seen.",
        "",
        "| claim | statement | verdict | evidence |",
        "|---|---|---|---|",
    ]
    for c in claims:
        lines.append(f"| {c.id} | {_fmt(c.statement)} | **{c.verdict}** | {_fmt(c.summary)} |")
    lines += [
        "",
        "## Checks of the toolkit",
        "",
        "| check | verdict | evidence | seconds |",
        "|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {_fmt(r.title)} (`{r.id}`) | **{r.verdict}** | {_fmt(r.summary)} | {r.seconds:.1f} |")
    passed = sum(r.verdict == "pass" for r in results)
    lines += ["", f"{passed} passed, {len(results) - passed} failed.", ""]
    lines += [
        "## Trained models against the exact theory",
        "",
        "Models trained in NumPy on fresh minibatches of sampled prompts (looptheory.training), compared",
        "with the exact engine and with Monte Carlo of the reference forward pass. Settings are declared",
        "in `looptheory/experiments.py`.",
        "",
        "| experiment | result | seconds |",
        "|---|---|---|",
    ]
    for e in experiments:
        lines.append(f"| {e.id}: {_fmt(e.title)} | {_fmt(e.summary)} | {e.seconds:.1f} |")
    lines += ["", "## Figures", ""]
    for f in figs:
        if f.endswith(".png"):
            name = os.path.basename(f)
            lines += [figure_markdown(name[:-4], name), ""]
    lines += ["## Claim details", ""]
    for c in claims:
        lines += _details(f"{c.id}: {c.statement}", c.verdict, c.summary, "Declared parameters:", c.params, c.evidence)
    lines += ["## Experiment details", ""]
    for e in experiments:
        lines += _details(f"{e.id}: {e.title}", None, e.summary, "Declared settings:", e.params, e.evidence)
    lines += ["## Check details", ""]
    for r in results:
        lines += _details(r.title, r.verdict, r.summary, "Parameters (fixed before running):", r.params, r.evidence)
    with open(os.path.join(out_dir, "report.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return payload
