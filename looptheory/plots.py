"""Plotting API (matplotlib): draw results of looptheory onto a matplotlib Axes.

Every function follows matplotlib's conventions: it takes result objects (a `FlowResult` or a
list of them, a claim or experiment record, the data dicts of `checks.loss_curve_data` and
`chen.chen_figure_data`), draws onto `ax` (a new figure only when `ax` is None), and returns the
Axes. Nothing here writes a file, chooses a file name or sets a title unless you pass `title=`:
the verify report (report.py) does its own saving, sizes and file names, and draws every
figure of the report through these functions.

A record is read by duck typing: anything with an `.evidence` dict (ClaimResult,
ExperimentResult), a dict with an "evidence" key (an entry of results.json), or the evidence
dict itself. Lists of numbers may be lists, tuples or NumPy arrays; results.json's "inf" strings
are read as infinity.

Conventions of the drawings: integer quantities (loops, layers, training steps) get integer
ticks; a threshold that decides a verdict is a black reference line with a legend entry;
points outside the drawn range are marked at the edge and counted in a note below the axes.
`FIGURE_CAPTIONS` holds the captions of the report's figures and `figure_markdown(stem)` the
Markdown that embeds one.

matplotlib is imported when a function is called, not when looptheory is imported.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import numpy as np

QUANTITIES = ("loss", "excess", "grad_norm", "distance", "dominance")
NOTE_GID = "looptheory-note"  # the gid of the note text below an Axes (clipped points, floors)
LEGEND_FONTSIZE = 8
THRESHOLD_STYLE = {"color": "k", "lw": 1.4, "zorder": 4}


# --- helpers -----------------------------------------------------------------------------------


def _axes(ax, figsize=(6.4, 4.2)):
    """ax itself (checked), or the Axes of a new pyplot figure when ax is None."""
    from matplotlib.axes import Axes

    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize, layout="constrained")  # room for labels, notes, legends
        return ax
    if not isinstance(ax, Axes):
        raise TypeError(f"ax: expected a matplotlib Axes or None, got {type(ax).__name__}")
    return ax


def _title(ax, title):
    if title is not None:
        if not isinstance(title, str):
            raise TypeError(f"title: expected a string or None, got {type(title).__name__}")
        ax.set_title(title)


def _num(x) -> float:
    """A float from a number or results.json's "inf" / "nan" strings; None -> nan."""
    if x is None:
        return math.nan
    if isinstance(x, str):
        return float(x)
    return float(x)


def _arr(values) -> np.ndarray:
    return np.array([_num(v) for v in np.ravel(np.asarray(values, dtype=object))], dtype=float)


def _evidence(record, name: str, keys: Sequence[str], what: str) -> Mapping:
    """The evidence dict of a record (duck typing), which must hold one of keys."""
    ev = getattr(record, "evidence", None)
    if ev is None and isinstance(record, Mapping):
        ev = record.get("evidence", record)
    if not isinstance(ev, Mapping):
        raise TypeError(f"{name}: expected {what} (an object with an .evidence dict), got {type(record).__name__}")
    if not any(k in ev for k in keys):
        rid = getattr(record, "id", None) or (record.get("id") if isinstance(record, Mapping) else None)
        raise ValueError(f"{name}: expected {what}; the evidence of {rid or 'this record'} has none of {list(keys)}")
    return ev


def _params(record) -> Mapping:
    for attr in ("params", "parameters"):
        p = getattr(record, attr, None)
        if p is None and isinstance(record, Mapping):
            p = record.get(attr)
        if isinstance(p, Mapping):
            return p
    return {}


def _colors(k: int) -> list:
    """k colours, all distinct: tab10 up to 10, tab20 up to 20, then a sampled colormap."""
    from matplotlib import colormaps

    if k <= 10:
        return [colormaps["tab10"](i) for i in range(k)]
    if k <= 20:
        return [colormaps["tab20"](i) for i in range(k)]
    cmap = colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.0, 0.95, k)]


def _widths(k: int, thin: float = 1.1, thick: float = 3.0) -> list:
    """Line widths from thick (first trace) to thin (last): where traces coincide, the earlier ones
    show as a coloured rim around the later ones instead of disappearing under them."""
    if k <= 1:
        return [1.5] * k
    return [thick - (thick - thin) * i / (k - 1) for i in range(k)]


def _integer_axis(axis):
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))


def _integer_log_axis(axis, values):
    """A log axis over positive integers: ticks at the powers of 2 in range, labelled as integers."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    vals = [v for v in values if v > 0]
    lo, hi = min(vals), max(vals)
    ticks = [2**k for k in range(int(math.floor(math.log2(lo))), int(math.ceil(math.log2(hi))) + 1)]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(round(v))}"))


def _plain_log_ticks(axis, values):
    """A log axis labelled in plain numbers at 1, 2, 5 x 10^k (n/d from 1 to 50 reads better so)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    vals = [v for v in values if v > 0 and math.isfinite(v)]
    lo, hi = min(vals), max(vals)
    ticks = [m * 10.0**k for k in range(int(math.floor(math.log10(lo))), int(math.ceil(math.log10(hi))) + 1)
             for m in (1, 2, 5) if lo / 1.2 <= m * 10.0**k <= hi * 1.2]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _note(ax, lines):
    """A note below the Axes (below the x label), for clipped points and floors."""
    lines = list(dict.fromkeys(s for s in lines if s))  # in order, each once
    if not lines:
        return None
    return ax.annotate("\n".join(lines), xy=(0, 0), xycoords="axes fraction", xytext=(0, -40),
                       textcoords="offset points", ha="left", va="top", fontsize=LEGEND_FONTSIZE,
                       annotation_clip=False, gid=NOTE_GID)


def _legends(ax, colour_handles, style_handles=(), colour_title=None, style_title=None, outside=None,
             loc="best", style_loc="lower left"):
    """A legend of the coloured traces (ax.get_legend()) and, if given, a second one of the line
    styles and reference lines, both at LEGEND_FONTSIZE; outside the Axes on the right when long."""
    colour_handles = [h for h in colour_handles if h is not None]
    style_handles = [h for h in style_handles if h is not None]
    if outside is None:
        outside = len(colour_handles) + len(style_handles) > 5
    kw = {"fontsize": LEGEND_FONTSIZE, "title_fontsize": LEGEND_FONTSIZE, "framealpha": 0.9}
    first = None
    if style_handles and colour_handles:
        if outside:
            first = ax.legend(handles=style_handles, title=style_title, loc="lower left",
                              bbox_to_anchor=(1.02, 0.0), borderaxespad=0.0, **kw)
        else:
            first = ax.legend(handles=style_handles, title=style_title, loc=style_loc, **kw)
        ax.add_artist(first)
        first.set_clip_on(False)  # add_artist clips to the Axes, which would cut a legend outside it
    handles = colour_handles or style_handles
    title = colour_title if colour_handles else style_title
    if outside:
        return ax.legend(handles=handles, title=title, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                         borderaxespad=0.0, **kw)
    return ax.legend(handles=handles, title=title, loc=loc, **kw)


def _proxy(label, **style):
    from matplotlib.lines import Line2D

    style.setdefault("color", "0.25")
    return Line2D([], [], label=label, **style)


def _threshold(ax, y, label, ls="--", vertical=False):
    """A reference line that decides a verdict: black, labelled, in the legend."""
    if vertical:
        return ax.axvline(y, ls=ls, label=label, **THRESHOLD_STYLE)
    return ax.axhline(y, ls=ls, label=label, **THRESHOLD_STYLE)


def _frac_text(x: float) -> str:
    for q in (2, 4, 8, 16, 32, 64):
        if abs(x * q - round(x * q)) < 1e-12 and round(x * q) != 0 and abs(x) < 1:
            return f"{int(round(x * q))}/{q}"
    return f"{x:g}"


# --- gradient flows -------------------------------------------------------------------------------


class _Flow:
    """One flow, from a FlowResult or from a dict of a claim's evidence (G3's "flows")."""

    def __init__(self, src, label, f_star):
        get = (lambda k: src.get(k)) if isinstance(src, Mapping) else (lambda k: getattr(src, k, None))
        self.label = label if label is not None else get("label")
        self.t = _arr(get("t"))
        loss = get("loss")
        self.loss = None if loss is None else _arr(loss)
        fs = f_star if f_star is not None else get("f_star")
        self.f_star = None if fs is None else _num(fs)
        ex = get("excess")
        if self.f_star is not None and self.loss is not None:
            self.excess = self.loss - self.f_star
        else:
            self.excess = None if ex is None else _arr(ex)
        self.grad_norm = None if get("grad_norm") is None else _arr(get("grad_norm"))
        self.dominance = None if get("dominance") is None else _arr(get("dominance"))
        self.distance = None if get("distance") is None else _arr(get("distance"))
        self.loops = get("loops")
        self.status = get("status")
        path = get("path")
        if get("eigs") is not None:
            self.eig_t = _arr(get("eig_t"))
            self.eigs = np.asarray(get("eigs"), float)
        elif path is not None:
            path = np.asarray(path, float)
            idx = np.arange(0, len(path), max(1, len(path) // 200))
            self.eig_t = self.t[idx]
            self.eigs = np.sort(np.linalg.eigvals(path[idx]).real, axis=-1)
        else:
            self.eig_t = self.eigs = None


def _flows(flows, labels, f_star) -> list[_Flow]:
    from .flow import FlowResult

    def is_flow(x):
        return isinstance(x, FlowResult) or (isinstance(x, Mapping) and "t" in x) or (
            hasattr(x, "t") and hasattr(x, "loss"))

    if is_flow(flows):
        items = [flows]
    elif hasattr(flows, "evidence") or (isinstance(flows, Mapping) and "evidence" in flows):
        items = list(_evidence(flows, "flows", ["flows"], "a record whose evidence has 'flows' (claim G3)")["flows"])
    elif isinstance(flows, Mapping) and "flows" in flows:
        items = list(flows["flows"])
    elif isinstance(flows, (list, tuple)):
        items = list(flows)
    else:
        raise TypeError(f"flows: expected a FlowResult (gradient_flow's output), a list of them or a G3 record, "
                        f"got {type(flows).__name__}")
    if not items:
        raise ValueError("flows: empty list; expected at least one FlowResult")
    bad = [type(x).__name__ for x in items if not is_flow(x)]
    if bad:
        raise TypeError(f"flows: expected FlowResults (gradient_flow's output), got a {bad[0]} in the list")
    if labels is not None:
        if isinstance(labels, str) or not isinstance(labels, Sequence) or len(labels) != len(items):
            raise ValueError(f"labels: expected a list of {len(items)} strings, one per flow")
    if f_star is None or isinstance(f_star, numbers.Real):
        fs = [f_star] * len(items)
    elif isinstance(f_star, (Sequence, np.ndarray)) and not isinstance(f_star, str) and len(f_star) == len(items):
        fs = list(f_star)
    else:
        raise ValueError(f"f_star: expected a number or a list of {len(items)} numbers, one per flow")
    for v in fs:
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v)):
            raise ValueError(f"f_star: expected finite real numbers, got {v!r}")
    out = []
    for k, (x, f) in enumerate(zip(items, fs)):
        fl = _Flow(x, None if labels is None else labels[k], f)
        if fl.label is None:
            extra = f"L = {fl.loops}" if fl.loops is not None else ""
            extra += f", {fl.status}" if fl.status else ""
            fl.label = f"flow {k + 1}" + (f" ({extra})" if extra else "") if len(items) > 1 else (extra or "flow")
        out.append(fl)
    return out


def _flow_xlim(ax, fls):
    """Start the log time axis a decade and a half before the first flow starts to move (its loss
    changes by 0.1%): the solver's first steps are tiny, and a flat stretch over 1e-9 < t < 1e-2
    would take most of the width. Nothing after a flow starts to move is cut."""
    starts, tmin = [], []
    for fl in fls:
        y = fl.loss if fl.loss is not None else fl.excess
        pos = fl.t > 0
        if y is None or not np.any(pos):
            continue
        tmin.append(float(np.min(fl.t[pos])))
        moved = np.flatnonzero(pos & (np.abs(y - y[0]) > 1e-3 * max(abs(y[0]), 1e-300)))
        starts.append(float(fl.t[moved[0]]) if moved.size else float(np.max(fl.t)))
    if starts and tmin:
        left = max(min(starts) / 30.0, min(tmin))
        ax.set_xlim(left=left)


_FLOW_YLABEL = {
    "loss": "loss f(A(t))",
    "excess": "f(A(t)) − f*",
    "grad_norm": "‖∇f(A(t))‖",
    "distance": "‖A(t) − A_ref‖_F / ‖A_ref‖_F",
}


def plot_flow(flows, quantity: str = "loss", ax=None, f_star=None, mu=None, xi=None, labels=None, title=None):
    """Draw gradient flows against time t and return the Axes. Time is on a log axis, which
    starts shortly before the first flow starts to move (the solver's first steps are tiny).

    flows: a FlowResult (the output of gradient_flow), a list of them, or a record whose
    evidence has "flows" (claim G3; each flow a dict with t, loss, f_star, loops, ...).
    quantity: "loss" (f), "excess" (f - f*, needs f_star), "grad_norm", "distance" (to the A_ref
    passed to gradient_flow), or "dominance": with f_star the excess ratio
    ||grad_A f||^2 / (f - f*)^((2L-1)/L) (what claims G2 and G3 test), drawn where f - f* > xi;
    without f_star the ratio on f itself (FlowResult.dominance).
    f_star: the optimal loss (a number, or one per flow); a G3 record carries its own.
    mu: with "excess", the bound ((f0 - f*)^(-(L-1)/L) + mu (L-1) t / L)^(-L/(L-1)) of claim G3
    is drawn dashed in each flow's colour; with "dominance", the line y = mu. xi: with "excess",
    the target line y = xi; with "dominance", only points with f - f* > xi are drawn (default:
    where f - f* is above rounding, 1e-12 (1 + |f*|)).
    labels: one legend label per flow (default: the record's labels, or "flow k (L = .., status)").
    One line per flow, each in its own colour. ValueError or TypeError naming the parameter for
    bad input (an unknown quantity, an empty list, ax that is not an Axes).
    """
    if not isinstance(quantity, str) or quantity not in QUANTITIES:
        raise ValueError(f"quantity: expected one of {', '.join(map(repr, QUANTITIES))}, got {quantity!r}")
    for name, v in (("mu", mu), ("xi", xi)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real) or not v > 0 or not math.isfinite(v)):
            raise ValueError(f"{name}: expected a finite number > 0 or None, got {v!r}")
    fls = _flows(flows, labels, f_star)
    ax = _axes(ax)
    notes = []
    if quantity in ("excess",) or (quantity == "dominance" and f_star is not None):
        missing = [f.label for f in fls if f.excess is None]
        if missing:
            raise ValueError(f"f_star: quantity={quantity!r} needs f* (the optimal loss); none given for {missing[0]!r}")
    excess_ratio = quantity == "dominance" and all(f.excess is not None for f in fls)
    if excess_ratio:
        lacking = [f.label for f in fls if f.loss is None or f.loops is None or f.dominance is None]
        if lacking:
            if f_star is not None:
                raise ValueError(f"flows: the excess ratio needs each flow's loss, loops and dominance; "
                                 f"{lacking[0]!r} lacks one")
            excess_ratio = False  # an older record: only the ratio on f can be drawn, and is labelled so
    colors = _colors(len(fls))
    handles = []
    style = []
    ends = False
    for fl, c, lw in zip(fls, colors, _widths(len(fls), thick=2.6)):
        t = fl.t
        pos = t > 0
        if quantity == "loss":
            y = fl.loss
        elif quantity == "excess":
            y = fl.excess.copy()
            floor = 1e-14 * max(1.0, abs(fl.f_star or 0.0))
            if np.any(y < floor):
                notes.append(f"f − f* below {floor:.0e} (rounding of f) is not drawn")
            y[y < floor] = np.nan
        elif quantity == "grad_norm":
            y = fl.grad_norm
        elif quantity == "distance":
            y = fl.distance
            if y is None or not np.any(np.isfinite(y)):
                raise ValueError("flows: quantity='distance' needs flows run with a reference point "
                                 "(gradient_flow(..., A_ref=...))")
        else:
            if fl.dominance is None:
                raise ValueError("flows: quantity='dominance' needs the dominance ratio along each flow")
            y = fl.dominance
            if excess_ratio:
                L = int(fl.loops)
                p = (2 * L - 1) / L
                cut = xi if xi is not None else 1e-12 * (1.0 + abs(fl.f_star or 0.0))
                with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                    y = np.where(fl.excess > cut, fl.dominance * (fl.loss / fl.excess) ** p, np.nan)
        if y is None:
            raise ValueError(f"flows: the flow {fl.label!r} has no {quantity!r} data")
        y = np.asarray(y, float)
        (line,) = ax.plot(t[pos], y[pos], "-", color=c, lw=lw, label=fl.label)
        handles.append(line)
        shown = np.flatnonzero(pos & np.isfinite(y))
        if shown.size and shown[-1] == len(t) - 1:  # where the flow stops (converged, blew up, t_max)
            ax.plot(t[shown[-1]], y[shown[-1]], "o", color=c, ms=5, mec="k", mew=0.5, zorder=5, label="_end")
            ends = True
        if quantity == "excess" and mu is not None and fl.loops is not None and int(fl.loops) >= 2:
            L = int(fl.loops)
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                b = (fl.excess[0] ** (-(L - 1) / L) + mu * (L - 1) * t / L) ** (-L / (L - 1))
            ax.plot(t[pos], b[pos], "--", color=c, lw=1.0, label="_bound")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _flow_xlim(ax, fls)
    ax.set_xlabel("time t (log scale)")
    if quantity == "dominance":
        p_txt = "(2L−1)/L"
        ax.set_ylabel(f"‖∇f‖² / (f − f*)^{p_txt}" if excess_ratio else f"‖∇f‖² / f^{p_txt}  (ratio on f)")
        if excess_ratio:
            notes.append(f"drawn where f − f* > {xi:g}" if xi is not None else "drawn where f − f* is above rounding")
        if mu is not None:
            style.append(_threshold(ax, mu, f"μ = {_frac_text(mu)}: dominance fails below"))
    else:
        ax.set_ylabel(_FLOW_YLABEL[quantity])
        if quantity == "excess" and mu is not None:
            style.insert(0, _proxy(f"bound with μ = {_frac_text(mu)} (dashed)", ls="--"))
            style.insert(0, _proxy("f − f* (solid)", ls="-"))
        if quantity == "excess" and xi is not None:
            style.append(_threshold(ax, xi, f"ξ = {xi:g} (target)", ls=":"))
    if ends and style:  # alone, the dot at a curve's end needs no legend of its own
        style.append(_proxy("end of the flow", ls="", marker="o", ms=5, mec="k", mew=0.5))
    ax.grid(True, which="major", alpha=0.3)
    _legends(ax, handles, style)
    _note(ax, sorted(set(notes)))
    _title(ax, title)
    return ax


def plot_flow_eigenvalues(flows, ax=None, labels=None, title=None):
    """Real parts of the eigenvalues of A(t) along gradient flows, against time (log axis).

    flows: as plot_flow (FlowResults, whose .path gives A(t), or a G3 record, whose flows carry
    "eigs" and "eig_t"). All eigenvalues of one flow share that flow's colour and one legend
    entry, so the legend has one entry per flow, each a distinct colour; earlier flows are drawn
    wider and every second flow dashed, so flows that coincide stay visible. Returns the Axes."""
    fls = _flows(flows, labels, None)
    ax = _axes(ax)
    handles = []
    for k, (fl, c, lw) in enumerate(zip(fls, _colors(len(fls)), _widths(len(fls), thick=3.4))):
        if fl.eigs is None:
            raise ValueError(f"flows: the flow {fl.label!r} has neither a path nor eigenvalues")
        pos = fl.eig_t > 0
        eigs = np.atleast_2d(fl.eigs)
        for i in range(eigs.shape[1]):
            (line,) = ax.plot(fl.eig_t[pos], eigs[pos, i], ls="-" if k % 2 == 0 else (0, (4, 1.5)), color=c, lw=lw,
                              label=fl.label if i == 0 else "_" + fl.label)
            if i == 0:
                handles.append(line)
    ax.set_xscale("log")
    _flow_xlim(ax, fls)
    ax.set_xlabel("time t (log scale)")
    ax.set_ylabel("Re eig A(t)")
    ax.grid(True, alpha=0.3)
    _legends(ax, handles)
    _title(ax, title)
    return ax


# --- loss against loops ---------------------------------------------------------------------


def _curves(data, name, what):
    if isinstance(data, Mapping) and "curves" in data:
        curves = data["curves"]
    elif isinstance(data, (list, tuple)):
        curves = data
    else:
        raise TypeError(f"{name}: expected {what} (a dict with 'curves'), got {type(data).__name__}")
    if not curves:
        raise ValueError(f"{name}: no curves to draw")
    return curves


def plot_loss_vs_loops(data, ax=None, title=None):
    """Loss at the optimal scale A = gamma_L sigma_x^{-1} against loops, one colour per n.

    data: the dict of checks.loss_curve_data(), or a list of curves; each curve a dict with n,
    loops, loss (the exact curve, drawn as a line) and optionally engine (the exact engine's
    values at the first loop counts, circles) and mc (Monte Carlo (mean, stderr) pairs, drawn
    with +-2 standard-error bars in black with caps; a lower bar that would reach 0 on the log
    axis is clipped at 1e-3 of the mean, and a note says so). Returns the Axes."""
    curves = _curves(data, "data", "loss-against-loops data")
    ax = _axes(ax)
    handles, notes = [], []
    worst_rel = 0.0
    has_engine = has_mc = False
    for c, col in zip(curves, _colors(len(curves))):
        Ls = _arr(c["loops"])
        (line,) = ax.plot(Ls, _arr(c["loss"]), "-", color=col, lw=1.5, label=f"n = {c['n']}")
        handles.append(line)
        eng = c.get("engine")
        if eng:
            has_engine = True
            ax.plot(Ls[: len(eng)], _arr(eng), "o", ms=7, mfc="none", mec=col, mew=1.4, label="_engine")
        mc = c.get("mc")
        if mc:
            has_mc = True
            m = np.array([_num(v[0]) for v in mc])
            se2 = 2 * np.array([_num(v[1]) for v in mc])
            lower = np.minimum(se2, m * (1 - 1e-3))
            if np.any(lower < se2):
                notes.append("lower error bars reaching 0 are clipped at 1e-3 of the mean (log axis)")
            worst_rel = max(worst_rel, float(np.max(se2 / m)))
            ax.errorbar(Ls[: len(m)], m, yerr=[lower, se2], fmt="D", ms=4, mfc=col, mec="k", mew=0.6, ecolor="k",
                        elinewidth=1.2, capsize=5, capthick=1.2, zorder=5, label="_mc")
    ax.set_yscale("log")
    ax.set_xlabel("loops L")
    ax.set_ylabel("population loss at A = γ_L Σx⁻¹")
    _integer_axis(ax.xaxis)
    ax.grid(True, which="both", alpha=0.3)
    style = [_proxy("exact (moments)", ls="-")]
    if has_engine:
        style.append(_proxy("exact engine", ls="", marker="o", mfc="none", ms=7))
    if has_mc:
        style.append(_proxy("Monte Carlo ± 2 se", ls="-", marker="D", ms=4, color="k"))
        notes.append(f"Monte Carlo: 2 standard errors are at most {100 * worst_rel:.2g}% of the mean "
                     "(bars shorter than the marker show as its caps)")
    _legends(ax, handles, style, colour_title=None)
    _note(ax, notes)
    _title(ax, title)
    return ax


def plot_optimal_scale(data, ax=None, title=None):
    """gamma_L (optimal_scale) against loops, one colour per n; data as plot_loss_vs_loops, each
    curve with n, loops and gamma. Where data has d, the loops-1 closed form n/(n+d+1) is marked
    at L = 1 (stars). Returns the Axes."""
    curves = _curves(data, "data", "loss-against-loops data")
    ax = _axes(ax)
    d = data.get("d") if isinstance(data, Mapping) else None
    handles, style = [], []
    for c, col in zip(curves, _colors(len(curves))):
        (line,) = ax.plot(_arr(c["loops"]), _arr(c["gamma"]), "o-", ms=3, color=col, label=f"n = {c['n']}")
        handles.append(line)
        if d is not None:
            n = _num(c["n"])
            ax.plot([1], [n / (n + d + 1)], "*", ms=12, mfc="none", mec=col, mew=1.2, label="_closed")
    if d is not None:
        style.append(_proxy("n / (n + d + 1), the closed form at L = 1", ls="", marker="*", ms=10, mfc="none"))
    ax.set_xlabel("loops L")
    ax.set_ylabel("γ_L = optimal_scale")
    _integer_axis(ax.xaxis)
    ax.grid(True, alpha=0.3)
    _legends(ax, handles, style)
    _title(ax, title)
    return ax


# --- claims G2, G5 ------------------------------------------------------------------------------


def plot_dominance(record, ax=None, mu=1 / 16, title=None):
    """Claim G2: the smallest excess dominance ratio ||grad f||^2 / (f - f*)^((2L-1)/L) found,
    against d (log-log), with the threshold mu (default 1/16) the verdict compares with.

    record: the G2 record (evidence "rows": family, d, loops, n, rho, min_excess_ratio). Spectral
    family at n = inf: a line per L with 4 L^2 d^(-(L-1)/L) as a wide pale line in the same colour
    (the ratio at the scalar point, which the search often finds); general A:
    markers at every (n, rho) searched (offset a few % in d per L, and the note says so). Values
    below the axis floor (1e-6 of the threshold) are drawn at the floor as triangles and counted in
    a note. Returns the Axes."""
    ev = _evidence(record, "record", ["rows"], "the record of claim G2")
    rows = [r for r in ev["rows"] if isinstance(r, Mapping)]
    if not rows:
        raise ValueError("record: G2's evidence has no rows")
    ax = _axes(ax)
    Ls = sorted({int(r["loops"]) for r in rows})
    colors = dict(zip(Ls, _colors(len(Ls))))
    allv = [_num(r["min_excess_ratio"]) for r in rows]
    floor = mu * 1e-6
    handles, notes = [], []
    has_spec = has_gen = has_ref = False
    for L in Ls:
        col = colors[L]
        first = None
        sp = sorted((_num(r["d"]), _num(r["min_excess_ratio"])) for r in rows
                    if r.get("family") == "spectral" and int(r["loops"]) == L and math.isinf(_num(r["n"])))
        if sp:
            has_spec = has_ref = True
            ds = np.array([x for x, _ in sp])
            (first,) = ax.plot(ds, np.maximum([y for _, y in sp], floor), "o-", color=col, ms=5, label=f"L = {L}")
            # wide and pale, so it stays visible where the search found the scalar point itself
            ax.plot(ds, 4 * L * L * ds ** (-(L - 1) / L), "-", color=col, lw=6, alpha=0.25, zorder=1, label="_ref")
        spf = [(_num(r["d"]), _num(r["min_excess_ratio"])) for r in rows
               if r.get("family") == "spectral" and int(r["loops"]) == L and not math.isinf(_num(r["n"]))]
        if spf:
            (ln,) = ax.plot([x for x, _ in spf], np.maximum([y for _, y in spf], floor), "s", color=col, ms=5,
                            mfc="none", label=f"L = {L}" if first is None else "_spf")
            first = first or ln
        ge = [(_num(r["d"]), _num(r["min_excess_ratio"])) for r in rows
              if r.get("family") == "general" and int(r["loops"]) == L]
        if ge:
            has_gen = True
            # the general-A points of one d sit at the same x: spread them a little by L
            shift = 1.0 + 0.06 * (Ls.index(L) - (len(Ls) - 1) / 2)
            if len(Ls) > 1:
                notes.append("crosses of different L are drawn a few % apart in d, so that they do not hide each other")
            (ln,) = ax.plot([x * shift for x, _ in ge], np.maximum([y for _, y in ge], floor), "x", color=col, ms=7,
                            mew=1.5, label=f"L = {L}" if first is None else "_ge")
            first = first or ln
        handles.append(first)
    low = [v for v in allv if v < floor]
    if low:
        for r in rows:
            v = _num(r["min_excess_ratio"])
            if v < floor:
                ax.plot([_num(r["d"])], [floor], "v", color=colors[int(r["loops"])], ms=7, mec="k", mew=0.6,
                        clip_on=False, label="_clipped")
        notes.append(f"{len(low)} values below {floor:.0e} drawn as ▼ at {floor:.0e} (smallest {min(low):.2g})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("d (log scale)")
    ax.set_ylabel("smallest ‖∇f‖² / (f − f*)^((2L−1)/L) found")
    style = []
    if has_spec:
        style.append(_proxy("spectral family, n = ∞", ls="-", marker="o", ms=5))
    if any(r.get("family") == "spectral" and not math.isinf(_num(r["n"])) for r in rows):
        style.append(_proxy("spectral family, finite n", ls="", marker="s", mfc="none", ms=5))
    if has_gen:
        style.append(_proxy("general A, every n and ρ", ls="", marker="x", ms=7, mew=1.5))
    if has_ref:
        style.append(_proxy("4L² d^(−(L−1)/L), scalar point at n = ∞", ls="-", lw=6, alpha=0.25))
    style.append(_threshold(ax, mu, f"μ = {_frac_text(mu)}: G2 fails below this line"))
    ax.grid(True, which="major", alpha=0.3)
    _legends(ax, handles, style, colour_title="loops", outside=True)
    _note(ax, notes)
    _title(ax, title)
    return ax


def plot_optimal_loss(record, ax=None, title=None):
    """Claim G5 (a): the optimal loss against loops, over all real A (the blind optimum, circles)
    and in the scalar family A = gamma_L sigma_x^{-1} (line). record: the G5 record (evidence
    "optimal_losses" and "scalar_curve"). Returns the Axes."""
    ev = _evidence(record, "record", ["optimal_losses"], "the record of claim G5")
    ax = _axes(ax)
    ol = ev["optimal_losses"]
    sc = _arr(ev.get("scalar_curve", []))
    c = _colors(2)
    h = []
    if len(sc):
        (l2,) = ax.plot(np.arange(1, len(sc) + 1), sc, "-", color=c[1], lw=1.5, label="A = γ_L Σx⁻¹ (scalar family)")
        h.append(l2)
    (l1,) = ax.plot([int(r["loops"]) for r in ol], [_num(r["f*_general"]) for r in ol], "o", ms=7, mfc="none",
                    mec=c[0], mew=1.5, color=c[0], label="all real A (blind optimum)")
    h.insert(0, l1)
    ax.set_yscale("log")
    ax.set_xlabel("loops L")
    ax.set_ylabel("optimal loss")
    _integer_axis(ax.xaxis)
    ax.grid(True, which="major", alpha=0.3)
    _legends(ax, h, outside=False)
    _title(ax, title)
    return ax


def plot_test_time_loops(record, ax=None, top=None, title=None):
    """A model trained with few loops, run with more at test time: median (solid) and mean
    (dashed) squared error over prompts, exact mean (circles) where known.

    record: the G5 record (evidence "trained") or the E4 record (evidence "curves"); each curve has
    train_loops, test_loops, median_mc and mean_exact and/or mean_mc (optionally mean_mc_se or
    mean_se: +-2 standard-error bars). top: the upper end of the y axis (default 10^3 times the
    largest median, rounded up to a power of 10). Where a value is above top (or infinite: the
    simulation overflowed) a triangle marks it at the top edge, one per curve and loop count
    (offset a little per curve so both show), and a note counts them. Loops on a log axis with
    integer ticks. Returns the Axes."""
    ev = _evidence(record, "record", ["trained", "curves"], "the record of claim G5 or experiment E4")
    curves = ev.get("trained", ev.get("curves"))
    if not curves:
        raise ValueError("record: no test-time curves in its evidence")
    if top is not None and (isinstance(top, bool) or not isinstance(top, numbers.Real) or not top > 0):
        raise ValueError(f"top: expected a number > 0 or None, got {top!r}")
    ax = _axes(ax)
    meds = np.concatenate([_arr(c["median_mc"]) for c in curves])
    meds = meds[np.isfinite(meds) & (meds > 0)]
    if top is None:
        top = 10.0 ** (math.ceil(math.log10(float(np.max(meds)))) + 3) if meds.size else 1e3
    handles, notes = [], []
    n_clipped, biggest = 0, []
    all_x, lows = [], ([float(np.min(meds))] if meds.size else [])
    has_mc_mean = has_exact = has_se = False
    for k, (c, col) in enumerate(zip(curves, _colors(len(curves)))):
        x = _arr(c["test_loops"])
        all_x += list(x)
        series = [_arr(c["median_mc"])]
        (line,) = ax.plot(x, np.where(series[0] <= top, series[0], np.nan), "-", color=col, lw=1.6,
                          label=f"trained with L = {c['train_loops']}")
        handles.append(line)
        if c.get("mean_mc") is not None:
            has_mc_mean = True
            m = _arr(c["mean_mc"])
            series.append(m)
            shown = np.where(m <= top, m, np.nan)
            ax.plot(x, shown, "--", color=col, lw=1.3, label="_mean")
            se = c.get("mean_mc_se", c.get("mean_se"))
            if se is not None:
                has_se = True
                s2 = 2 * _arr(se)
                ok = np.isfinite(shown) & np.isfinite(s2)
                lower = np.minimum(s2, shown * (1 - 1e-3))
                ax.errorbar(x[ok], shown[ok], yerr=[lower[ok], s2[ok]], fmt="none", ecolor="k", elinewidth=1.0,
                            capsize=4, zorder=5, label="_se")
        if c.get("mean_exact") is not None:
            exact = _arr(c["mean_exact"])  # None (not computed) reads as nan: neither drawn nor clipped
            if np.any(np.isfinite(exact)):
                has_exact = True
                series.append(np.where(np.isnan(exact), -np.inf, exact))
                ax.plot(x, np.where(exact <= top, exact, np.nan), marker="o", ls="none" if has_mc_mean else "--",
                        ms=7, mfc="none", mec=col, mew=1.3, color=col, label="_exact")
        for v in series:
            lows += [float(u) for u in v[np.isfinite(v) & (v > 0)]]
        over = np.zeros(len(x), bool)
        for v in series:
            over |= ~(v <= top)  # nan (overflow) and inf count as above
        if np.any(over):
            shift = 1.0 + 0.035 * (k - (len(curves) - 1) / 2)
            ax.plot(x[over] * shift, np.full(int(np.sum(over)), top), "^", color=col, ms=8, mec="k", mew=0.6,
                    clip_on=False, zorder=6, label="_clipped")
            n_clipped += int(np.sum(over))
            vals = np.concatenate([v[over] for v in series])
            biggest += [float(u) if math.isfinite(u) else math.inf for u in vals if not (u <= top)]
    ax.set_xscale("log")
    ax.set_yscale("log")
    bottom = 10.0 ** math.floor(math.log10(min(lows))) if lows else None
    ax.set_ylim(bottom, top)
    _integer_log_axis(ax.xaxis, all_x)
    ax.set_xlabel("loops at test time (log scale)")
    ax.set_ylabel("squared error over prompts")
    ax.grid(True, which="major", alpha=0.3)
    if n_clipped:
        finite = [b for b in biggest if math.isfinite(b)]
        size = f"largest {max(finite):.2g}" if finite else ""
        if len(finite) < len(biggest):
            size += ("; " if size else "") + "inf where the simulation overflowed"
        notes.append(f"▲: a value above {top:.0e} ({size}), drawn at the top edge ({n_clipped} curve points)")
    style = [_proxy("median (simulation)", ls="-")]
    if has_mc_mean:
        style.append(_proxy("mean (simulation" + (", ± 2 se)" if has_se else ")"), ls="--"))
    if has_exact:
        style.append(_proxy("mean (exact)", ls="--" if not has_mc_mean else "", marker="o", mfc="none", ms=7))
    if n_clipped:
        style.append(_proxy(f"above {top:.0e}: off the axis", ls="", marker="^", ms=8, mec="k", mew=0.6))
    _legends(ax, handles, style, outside=True)
    _note(ax, notes)
    _title(ax, title)
    return ax


# --- Chen et al. (claims C1, C2): data of chen.chen_figure_data --------------------------------


def _chen(data, key, name="data"):
    if not isinstance(data, Mapping) or key not in data:
        raise TypeError(f"{name}: expected the dict of looptheory.chen.chen_figure_data() (with {key!r}), "
                        f"got {type(data).__name__}")
    rows = data[key]
    if not rows:
        raise ValueError(f"{name}: {key!r} is empty")
    return rows


def plot_chen_error(data, ax=None, title=None):
    """||w_L - w_LS|| against loops for one prompt per n/d (chen_figure_data()["error_curves"]),
    with the linear rate (1 - 1/kappa)^L alpha (dotted) and claim C2's bound
    alpha exp(-L/(2 kappa)) (dashed) in the same colour. Errors below 1e-16 (rounding) are not
    drawn. Returns the Axes."""
    curves = _chen(data, "error_curves")
    ax = _axes(ax)
    handles = []
    for c, col in zip(curves, _colors(len(curves))):
        Ls = _arr(c["loops"])
        err = _arr(c["error"])
        (line,) = ax.plot(Ls, np.where(err >= 1e-16, err, np.nan), "-", color=col, lw=1.6,
                          label=f"n/d = {c['ratio']:g} (κ = {_num(c['kappa']):.3g})")
        handles.append(line)
        ax.plot(Ls, _arr(c["linear"]), ":", color=col, lw=1.2, label="_linear")
        ax.plot(Ls, _arr(c["chen"]), "--", color=col, lw=1.2, label="_chen")
    ax.set_yscale("log")
    top = max(_num(c["alpha"]) for c in curves)
    ax.set_ylim(1e-16, 10 * top)
    ax.set_xlabel("loops L")
    ax.set_ylabel("‖w_L − w_LS‖₂")
    _integer_axis(ax.xaxis)
    ax.grid(True, which="major", alpha=0.3)
    style = [_proxy("GD error, η = 1/λ_max(S)", ls="-"),
             _proxy("(1 − 1/κ)^L α (contraction)", ls=":"),
             _proxy("α e^(−L/2κ): C2's bound", ls="--")]
    d = curves[0].get("d")
    _legends(ax, handles, style, colour_title=f"one prompt per n/d, d = {d}" if d else None, outside=True)
    _note(ax, ["errors below 1e-16 are rounding and not drawn"])
    _title(ax, title)
    return ax


def plot_chen_kappa(data, ax=None, title=None):
    """kappa(S) of Gaussian designs against n/d (chen_figure_data()["kappa"]): simulated median
    (line) and 5-95% band per d, the Davidson-Szarek bound (dashed, probability >= 1 - delta)
    and the Marchenko-Pastur limit (black dotted). Returns the Axes."""
    rows = _chen(data, "kappa")
    ax = _axes(ax)
    dims = sorted({int(r["d"]) for r in rows})
    handles = []
    qs = delta = None
    for d, col in zip(dims, _colors(len(dims))):
        rr = sorted((r for r in rows if int(r["d"]) == d), key=lambda r: _num(r["ratio"]))
        x = [_num(r["ratio"]) for r in rr]
        qs = sorted(rr[0]["quantiles"], key=_num)
        lo = [_num(r["quantiles"][qs[0]]) for r in rr]
        md = [_num(r["quantiles"][qs[len(qs) // 2]]) for r in rr]
        hi = [_num(r["quantiles"][qs[-1]]) for r in rr]
        (line,) = ax.plot(x, md, "o-", ms=4, color=col, lw=1.5, label=f"d = {d}")
        handles.append(line)
        ax.fill_between(x, lo, hi, color=col, alpha=0.18, lw=0)
        ds = [(_num(r["ratio"]), _num(r["davidson_szarek"])) for r in rr if math.isfinite(_num(r["davidson_szarek"]))]
        ax.plot([p[0] for p in ds], [p[1] for p in ds], "--", color=col, lw=1.2, label="_ds")
        delta = rr[0].get("delta")
    mp = sorted({(_num(r["ratio"]), _num(r["marchenko_pastur"])) for r in rows})
    ax.plot([m[0] for m in mp], [m[1] for m in mp], ":", color="k", lw=2, label="Marchenko–Pastur limit")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n / d (log scale)")
    ax.set_ylabel("κ(S) = λ_max / λ_min")
    ax.grid(True, which="major", alpha=0.3)
    band = f"{100 * _num(qs[0]):g}–{100 * _num(qs[-1]):g}% band" if qs else "band"
    style = [_proxy(f"simulated median, {band}", ls="-", marker="o", ms=4),
             _proxy(f"Davidson–Szarek, δ = {delta}" if delta is not None else "Davidson–Szarek", ls="--"),
             _proxy("Marchenko–Pastur limit", ls=":", lw=2, color="k")]
    _plain_log_ticks(ax.xaxis, [m[0] for m in mp])
    _legends(ax, handles, style, outside=True)
    _title(ax, title)
    return ax


def plot_chen_divergence(data, ax=None, title=None):
    """P(lambda_max(S) > 2 lambda_max(sigma_x)) against n/d (chen_figure_data()["divergence"]):
    the probability that the population step 1/lambda_max(sigma_x) diverges on the prompt, with
    +-2 standard-error bars (black, capped; where every sample agreed, the rule-of-three 95% bound
    3 / samples) and the Marchenko-Pastur threshold (1 + sqrt 2)^2 as
    a vertical line. Returns the Axes."""
    rows = _chen(data, "divergence")
    ax = _axes(ax)
    dims = sorted({int(r["d"]) for r in rows})
    handles = []
    zero_se = False
    for d, col in zip(dims, _colors(len(dims))):
        rr = sorted((r for r in rows if int(r["d"]) == d), key=lambda r: _num(r["ratio"]))
        x = np.array([_num(r["ratio"]) for r in rr])
        p = np.array([_num(r["p_diverge"]) for r in rr])
        se = np.array([_num(r["stderr"]) for r in rr])
        lower, upper = 2 * se, 2 * se
        samples = [r.get("samples") for r in rr]
        if all(s is not None for s in samples):
            # every sample agreed: the binomial standard error is 0, the rule of three is not
            three = 3.0 / np.array([_num(s) for s in samples])
            lower = np.where(p == 1, three, lower)
            upper = np.where(p == 0, three, upper)
            zero_se |= bool(np.any((p == 0) | (p == 1)))
        (line,) = ax.plot(x, p, "o-", ms=5, color=col, lw=1.4, label=f"d = {d}")
        ax.errorbar(x, p, yerr=[lower, upper], fmt="none", ecolor="k", elinewidth=1.0, capsize=4, capthick=1.0,
                    zorder=5, label="_se")
        handles.append(line)
    thr = data.get("divergence_threshold")
    style = [_proxy("± 2 standard errors", ls="-", marker="|", ms=8, color="k")]
    if thr is not None:
        style.append(_threshold(ax, _num(thr), f"n/d = (1 + √2)² ≈ {_num(thr):.2f}: MP threshold", ls=":",
                                vertical=True))
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis, [_num(r["ratio"]) for r in rows])
    ax.set_ylim(-0.04, 1.04)
    ax.set_xlabel("n / d (log scale)")
    ax.set_ylabel("P(λ_max(S) > 2 λ_max(Σx))")
    ax.grid(True, which="major", alpha=0.3)
    _legends(ax, handles, style, outside=True)
    if zero_se:
        _note(ax, ["where every sample agreed (P = 0 or 1) the bar is the one-sided 95% bound 3 / samples "
                   "(rule of three), not 2 standard errors"])
    _title(ax, title)
    return ax


def plot_sample_complexity(data, ax=None, title=None):
    """The number of examples n needed against loops (chen_figure_data()["sample_complexity"]):
    G1's n > 64 L^2 d^4 (8/eps)^(4L) against C2's (Marchenko-Pastur ratio x d, and the
    Davidson-Szarek version), which exists only for L > 2 ln(1/eps) (a vertical line). The y axis
    is log10 n on a log scale, labelled as n = 10^k. Returns the Axes."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    rows = _chen(data, "sample_complexity")
    ax = _axes(ax)
    groups = sorted({(int(r["d"]), _num(r["eps"])) for r in rows})
    handles, style = [], []
    ys = []
    for (d, eps), col in zip(groups, _colors(len(groups))):
        rr = sorted((r for r in rows if int(r["d"]) == d and _num(r["eps"]) == eps), key=lambda r: int(r["loops"]))
        (line,) = ax.plot([int(r["loops"]) for r in rr], [_num(r["log10_n_g1"]) for r in rr], "-", color=col, lw=1.6,
                          label=f"d = {d}, ε = {eps:g}")
        handles.append(line)
        ys += [_num(r["log10_n_g1"]) for r in rr]
        fin = [r for r in rr if r["c2_achievable"]]
        ax.plot([int(r["loops"]) for r in fin], [_num(r["log10_n_c2_mp"]) for r in fin], "--", color=col, lw=1.4,
                label="_mp")
        ax.plot([int(r["loops"]) for r in fin], [_num(r["log10_n_c2_ds"]) for r in fin], ":", color=col, lw=1.6,
                label="_ds")
        ys += [_num(r["log10_n_c2_mp"]) for r in fin] + [_num(r["log10_n_c2_ds"]) for r in fin]
        style.append(_threshold(ax, 2 * math.log(1 / eps), f"L = 2 ln(1/ε) = {2 * math.log(1 / eps):.1f} (ε = {eps:g}): "
                                f"C2 needs more", ls="-.", vertical=True))
    ys = [y for y in ys if math.isfinite(y) and y > 0]
    ax.set_yscale("log")
    lo, hi = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    ticks = [v * 10.0**k for k in range(lo, hi + 1) for v in (1, 3) if min(ys) / 3 <= v * 10.0**k <= max(ys) * 3]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"$10^{{{v:g}}}$"))
    ax.set_xlabel("loops L")
    ax.set_ylabel("examples n required (log10 n on a log axis)")
    _integer_axis(ax.xaxis)
    ax.grid(True, which="major", alpha=0.3)
    style = [_proxy("G1: 64 L² d⁴ (8/ε)^(4L)", ls="-"),
             _proxy("C2, Marchenko–Pastur κ", ls="--"),
             _proxy("C2, Davidson–Szarek κ", ls=":")] + style
    _legends(ax, handles, style, outside=True)
    _note(ax, ["C2's n is infinite (not drawn) left of the dash-dotted line"])
    _title(ax, title)
    return ax


# --- trained models (experiments E1 to E4) ------------------------------------------------------


def plot_training(records, ax=None, title=None):
    """Training curves: minibatch loss against step, one colour per record (experiments E1 and
    E2: evidence "history", declared "steps"), with the exact sparse optimum f* (evidence
    "f_star" or "f_star_sparse") as a black dashed line. records: one record or a list (None
    entries are skipped). Returns the Axes."""
    if not isinstance(records, (list, tuple)):
        records = [records]
    records = [r for r in records if r is not None]
    if not records:
        raise ValueError("records: empty; expected experiment records with a training history (E1, E2)")
    evs = [_evidence(r, "records", ["history"], "an experiment record with a training history (E1, E2)")
           for r in records]
    ax = _axes(ax)
    handles = []
    f_star = None
    names = {"E1": "sparse A, u (E1)", "E2": "full P, Q (E2)"}
    for r, ev, col in zip(records, evs, _colors(len(records))):
        h = _arr(ev["history"])
        steps = _params(r).get("steps")
        x = np.arange(len(h), dtype=float)
        if steps:
            s = max(1, int(steps) // 200)
            x = x * (s if math.ceil(int(steps) / s) == len(h) else int(steps) / len(h))
        rid = getattr(r, "id", None) or (r.get("id") if isinstance(r, Mapping) else None)
        (line,) = ax.plot(x, h, "-", color=col, lw=0.9, label=names.get(rid, rid or f"run {len(handles) + 1}"))
        handles.append(line)
        f_star = ev.get("f_star", ev.get("f_star_sparse", f_star))
    style = []
    if f_star is not None:
        style.append(_threshold(ax, _num(f_star), f"exact sparse optimum f* = {_num(f_star):.4g}"))
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("minibatch loss")
    _integer_axis(ax.xaxis)
    ax.grid(True, which="major", alpha=0.3)
    _legends(ax, handles, style, outside=False)
    _title(ax, title)
    return ax


def _panel_rows(record, panel, panels, rid, kind, keys):
    """(evidence, its non-empty "rows") of a two-panel record plot, the panel checked and every
    row holding `keys` (another item's record has rows too, of other columns)."""
    if panel not in panels:
        raise ValueError(f"panel: expected {' or '.join(repr(p) for p in panels)}, got {panel!r}")
    ev = _evidence(record, "record", ["rows"], f"the record of {kind} {rid}")
    if not ev["rows"]:
        raise ValueError(f"record: {rid}'s evidence has no rows")
    bad = [k for k in keys if not all(isinstance(r, Mapping) and k in r for r in ev["rows"])]
    if bad:
        raise ValueError(f"record: expected the record of {kind} {rid}, whose rows hold {', '.join(keys)}; "
                         f"these rows lack {', '.join(bad)} (record {getattr(record, 'id', '?')!r})")
    return ev, ev["rows"]


def plot_looped_vs_multilayer(record, ax=None, panel="loss", title=None):
    """Experiment E3 (evidence "rows" and "exact"), against loops (= layers).

    panel="loss": the exact optimal losses of the looped model (solid line, hollow circles) and
    of the untied multi-layer model (dashed line, filled diamonds), trained looped and
    trained multi-layer models (Monte Carlo, +-2 standard-error bars in black with caps; the two
    are offset by +-0.1 so the bars do not overlap). panel="difference": multi-layer minus
    looped loss, paired on the same prompts, +-2 standard errors, with the line 0 (no
    difference). Returns the Axes."""
    ev, rows = _panel_rows(record, panel, ("loss", "difference"), "E3", "experiment",
                           ("loops", "sparse_mc", "sparse_se", "multilayer_sparse_mc", "multilayer_sparse_se",
                            "multilayer_minus_looped", "difference_se"))
    ax = _axes(ax)
    Ls = np.array([int(r["loops"]) for r in rows], float)
    c = _colors(2)
    handles, style = [], []
    if panel == "loss":
        ex = ev.get("exact") or [{"loops": r["loops"], "f_star": r["f_star_looped_exact"]} for r in rows]
        (h0,) = ax.plot([int(r["loops"]) for r in ex], [_num(r["f_star"]) for r in ex], "-", color="0.3", lw=1.2,
                        marker="o", ms=6, mfc="white", mew=1.2, label="looped, exact optimum f*")
        handles.append(h0)
        if all("f_star_untied" in r for r in ex):  # records made before the untied optimum was added have none
            (h1,) = ax.plot([int(r["loops"]) for r in ex], [_num(r["f_star_untied"]) for r in ex], "--", color="0.3", lw=1.2,
                            marker="D", ms=5, mfc="0.3", label="multi-layer, exact optimum f*")
            handles.append(h1)
        for key, lab, mk, col, dx in (("sparse", "looped, trained", "s", c[0], -0.1),
                                      ("multilayer_sparse", "multi-layer, trained", "^", c[1], 0.1)):
            m = np.array([_num(r[f"{key}_mc"]) for r in rows])
            se2 = 2 * np.array([_num(r[f"{key}_se"]) for r in rows])
            h = ax.errorbar(Ls + dx, m, yerr=se2, fmt=mk, ms=6, mfc=col, mec="k", mew=0.6, color=col, ecolor="k",
                            elinewidth=1.2, capsize=5, capthick=1.2, zorder=5, label="_" + lab)
            h.lines[0].set_label(lab)
            handles.append(h.lines[0])
        ax.set_ylabel("population loss (Monte Carlo for trained models)")
        style.append(_proxy("± 2 standard errors", ls="-", marker="_", ms=10, color="k"))
    else:
        dm = np.array([_num(r["multilayer_minus_looped"]) for r in rows])
        se2 = 2 * np.array([_num(r["difference_se"]) for r in rows])
        h = ax.errorbar(Ls, dm, yerr=se2, fmt="o", ms=6, mfc=c[1], mec="k", mew=0.6, color=c[1], ecolor="k",
                        elinewidth=1.2, capsize=5, capthick=1.2, zorder=5, label="_difference")
        h.lines[0].set_label("multi-layer − looped (paired)")
        handles.append(h.lines[0])
        style.append(_threshold(ax, 0.0, "0: no difference", ls="--"))
        style.append(_proxy("± 2 standard errors", ls="-", marker="_", ms=10, color="k"))
        ax.set_ylabel("loss difference, multi-layer − looped")
        hi, lo = max(0.0, float(np.nanmax(dm + se2))), min(0.0, float(np.nanmin(dm - se2)))
        span = (hi - lo) or 1.0
        ax.set_ylim(lo - 0.08 * span, hi + 0.3 * span)  # headroom: the legends sit above the data
    ax.set_xlabel("loops (looped) = layers (multi-layer)")
    ax.set_xlim(Ls.min() - 0.5, Ls.max() + 0.5)
    _integer_axis(ax.xaxis)
    ax.grid(True, alpha=0.3)
    _legends(ax, handles, style, outside=False, loc="upper right",
             style_loc="lower left" if panel == "loss" else "lower right")
    _title(ax, title)
    return ax


def plot_looped_vs_untied(record, ax=None, panel="loss", title=None):
    """Claim G6 (evidence "rows": one per cell (d, layers, n) with f*_looped, f*_untied,
    f*_schedule), against L. panel="loss": the exact optimal losses, looped (hollow circles) and
    untied (filled squares), and the best per-layer schedule (line), one colour per (d, n).
    panel="ratio": f*_looped / f*_untied with G6's threshold 1.10. Returns the Axes."""
    _, rows = _panel_rows(record, panel, ("loss", "ratio"), "G6", "claim",
                          ("d", "layers", "n", "f*_looped", "f*_untied", "f*_schedule", "looped/untied"))
    ax = _axes(ax)
    groups = sorted({(int(r["d"]), _num(r["n"])) for r in rows})
    cols = _colors(len(groups))
    handles = []
    for (d, n), col in zip(groups, cols):
        rs = sorted((r for r in rows if int(r["d"]) == d and _num(r["n"]) == n), key=lambda r: int(r["layers"]))
        Ls = [int(r["layers"]) for r in rs]
        if panel == "loss":
            (h,) = ax.plot(Ls, [_num(r["f*_schedule"]) for r in rs], "-", color=col, lw=1.2, label=f"d = {d}, n = {n:g}")
            ax.plot(Ls, [_num(r["f*_looped"]) for r in rs], "o", ms=7, mfc="none", mec=col, mew=1.4)
            ax.plot(Ls, [_num(r["f*_untied"]) for r in rs], "s", ms=4, color=col)
        else:
            (h,) = ax.plot(Ls, [_num(r["looped/untied"]) for r in rs], "o-", color=col, ms=5, label=f"d = {d}, n = {n:g}")
        handles.append(h)
    if panel == "loss":
        ax.set_yscale("log")
        ax.set_ylabel("optimal loss")
        style = [_proxy("looped, blind optimum", ls="none", marker="o", mfc="none", ms=7),
                 _proxy("untied, blind optimum", ls="none", marker="s", ms=4),
                 _proxy("best per-layer schedule (exact)", ls="-")]
    else:
        params = _params(record)
        style = [_threshold(ax, float(params.get("threshold f*_looped / f*_untied", 1.10)), "G6: 1.10")]
        ax.set_ylabel("f*_looped / f*_untied")
    ax.set_xlabel("loops (looped) = layers (untied)")
    _integer_axis(ax.xaxis)
    ax.grid(True, which="major", alpha=0.3)
    _legends(ax, handles, style, colour_title="cell", outside=True)
    _title(ax, title)
    return ax


def plot_scalar_limit(results, ax=None, title=None):
    """The finite-d exact optimum of the scalar family against its proportional limit: |f*_d / d -
    F*| against d (log-log), one line per result of `limit.scalar_family_convergence` (a dict with
    "limit" and "rows", or a list of them), labelled with alpha, L, rho and the fitted rate.
    Returns the Axes."""
    if isinstance(results, Mapping):
        results = [results]
    if not isinstance(results, Sequence) or not results or not all(isinstance(r, Mapping) and "rows" in r for r in results):
        raise TypeError("results: expected the dict of scalar_family_convergence, or a non-empty list of them")
    if not all(r["rows"] and all(isinstance(x, Mapping) and "d" in x and "error" in x for x in r["rows"]) for r in results):
        raise ValueError("results: every result needs non-empty rows with 'd' and 'error' (scalar_family_convergence's)")
    ax = _axes(ax)
    cols = _colors(len(results))
    handles, ds = [], []
    for res, col in zip(results, cols):
        lim = res.get("limit")
        get = (lambda k: lim.get(k, "?")) if isinstance(lim, Mapping) else (lambda k: getattr(lim, k, "?"))  # noqa: E731
        rows = res["rows"]
        d = [int(r["d"]) for r in rows]
        ds += d
        lab = f"α = {get('alpha')}, L = {get('loops')}, ρ = {get('rho')}: rate d^{_num(res.get('rate')):.2f}"
        (h,) = ax.plot(d, [_num(r["error"]) for r in rows], "o-", color=col, ms=5, label=lab)
        handles.append(h)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _integer_log_axis(ax.xaxis, ds)
    ax.set_xlabel("d (n = α d, noise = ρ d)")
    ax.set_ylabel("|f*_d / d − F*|")
    ax.grid(True, which="major", alpha=0.3)
    _legends(ax, handles, outside=False)
    _title(ax, title)
    return ax


# --- captions of the report's figures -----------------------------------------------------------

FIGURE_CAPTIONS = {
    "loss_vs_loops": (
        "Loss at the optimal scale against loops. The loss of A = γ_L Σx⁻¹ (d = 5) for three n: the "
        "exact scalar-family curve from the trace moments (line), the exact engine (circles) and Monte Carlo "
        "(the conditional estimator of monte_carlo_loss; diamonds, ±2 standard errors in black). A cross-check of the toolkit: the engine "
        "must sit on the curve and the Monte Carlo bars must reach it (the comparison the check "
        "exact_vs_monte_carlo makes at other settings)."),
    "optimal_scale_vs_loops": (
        "Optimal scale against loops. γ_L = optimal_scale for three n (d = 5, Σw = Σx⁻¹); the stars at "
        "L = 1 are the closed form n/(n + d + 1). Supports the check optimal_scale_one_loop (each line must "
        "start on its star); γ_L Σx⁻¹ is the candidate G1-structure compares the blind optimum with."),
    "flow_excess": (
        "Gradient flows of claim G3. f(A(t)) − f* against time (solid) from A0 = 0 and a random A0, with "
        "G3's bound for the reported μ = 1/16 (dashed, same colour) and the target ξ (dotted); a dot marks "
        "where each flow stops. G3 holds if every solid curve stays below its dashed bound and crosses ξ; "
        "a curve that levels off above ξ is a flow that stopped at a critical point above f*."),
    "flow_eigenvalues": (
        "Eigenvalues of A(t) along the flows of claim G3. Real parts, one colour per flow (every "
        "eigenvalue of a flow in its colour; a complex pair shows as one line). From A0 = 0 the eigenvalues "
        "stay equal (the flow stays on the scalar line A = γ I); from a random A0 they end at the blind "
        "optimum's. Context for G3 and for G1-structure."),
    "flow_dominance": (
        "Gradient dominance along the flows of claim G3. The excess ratio ‖∇f‖² / (f − f*)^((2L−1)/L), "
        "the quantity G2's verdict and G3's 'μ along path' use, drawn where f − f* > ξ, against time; the "
        "black line is the reported μ = 1/16. Where a curve falls below the line, dominance with μ = 1/16 "
        "fails at that point of the path (G2 tests the same inequality over whole regions); a plunge to 0 "
        "is a flow stopping at a critical point above f*."),
    "dominance_vs_d": (
        "Worst gradient dominance found by claim G2's searches. The smallest excess ratio against d for "
        "each L: the spectral family at n = ∞ (line; wide pale line: the scalar point's 4L² d^(−(L−1)/L)) "
        "and general A at every n and ρ (crosses). G2's verdict: fails if any point lies below the black "
        "line μ = 1/16, holds otherwise (each point is an upper bound on the infimum over its region)."),
    "optimal_loss_and_test_loops": (
        "More loops (claim G5). Left: the optimal loss against loops over all real A (circles) and in the "
        "scalar family (line); G5 (a) holds if both fall. Right: the scalar optimum for L = 2 and L = 5, run "
        "with more loops at test time: median (solid) and mean (dashed) squared error over simulated "
        "prompts, and the exact mean (circles); G5 (b) rests on the median falling. Values beyond the axis "
        "are drawn as triangles at the top edge (the note says how many and how large): the exact mean "
        "diverges while the median falls, a heavy tail the simulated mean underestimates."),
    "chen_error_vs_loops": (
        "Per-prompt GD error (claim C2). ‖w_L − w_LS‖ against loops for one Gaussian prompt per n/d "
        "(d = 20, η = 1/λ_max(S)), with the exact contraction (1 − 1/κ)^L α (dotted) and C2's bound "
        "α e^(−L/2κ) (dashed). C2 holds on a prompt if its solid curve stays below its dashed one; C2's "
        "verdict rests on many prompts per cell (its table)."),
    "chen_kappa_vs_ratio": (
        "Condition number of the empirical covariance (context for C2). κ(S) of Gaussian designs "
        "(Σx = I) against n/d: simulated median and 5–95% band, the Davidson–Szarek bound and the "
        "Marchenko–Pastur limit. C2's rate depends on κ, which stays bounded only for n/d well above 1."),
    "chen_divergence_vs_ratio": (
        "When the population step diverges (context for C2's step η = 1/λ_max(S)). The probability that "
        "λ_max(S) > 2 λ_max(Σx), i.e. that GD with the fixed step 1/λ_max(Σx) diverges on the prompt, "
        "against n/d, ±2 standard errors (where every sample agreed, the rule-of-three bound); the vertical "
        "line is the Marchenko–Pastur threshold (1 + √2)²."),
    "chen_sample_complexity": (
        "Examples needed against loops (G1 against C2). G1's n > 64 L² d⁴ (8/ε)^(4L) against C2's n "
        "(Marchenko–Pastur and Davidson–Szarek κ), d = 10, ε = 0.01; C2 needs L > 2 ln(1/ε) (vertical "
        "line) and is infinite left of it. The y axis is doubly logarithmic (log10 n on a log scale)."),
    "training_curves": (
        "Training on sampled prompts (experiments E1 and E2). Minibatch loss against step for the sparse "
        "model (E1) and the full model (E2), d = 5, n = 20, loops = 3; the black line is the exact sparse "
        "optimum f*, which E1's model should approach and E2's full model, not restricted to the sparse "
        "form, may go below."),
    "looped_vs_multilayer": (
        "Looped against multi-layer (experiment E3). Left: the exact optimal losses of the looped model "
        "(solid grey line) and of the untied multi-layer model (dashed, filled diamonds), and trained looped "
        "and multi-layer models (Monte Carlo, ±2 standard errors in black). "
        "Right: multi-layer minus looped loss, paired on the same prompts, ±2 standard errors; bars that "
        "do not reach the line 0 are a significant difference."),
    "scalar_limit": (
        "The proportional limit of the scalar family (check scalar_limit). The distance |f*_d / d − F*| "
        "between the exact optimal loss per dimension of A = γ Σx⁻¹ at finite d (n = α d, noise = ρ d) and "
        "its limit F* (scalar_family_limit, from Marchenko–Pastur moments), against d, log-log, one line per "
        "declared case; the legend gives the fitted rate (−1: an O(1/d) approach)."),
    "looped_vs_untied_optimum": (
        "Looped against untied layers, exactly (claim G6). Left: the exact optimal loss against L of the "
        "looped model (hollow circles) and of the untied multi-layer model (filled squares), both found by "
        "blind multi-start searches, and of the best per-layer schedule A_l = a_l Σx⁻¹ (line, exact), one "
        "colour per (d, n). Right: f*_looped / f*_untied with G6's threshold 1.10 (black); G6 holds in a "
        "cell at or below it."),
    "test_time_loops": (
        "Looping trained models longer (experiment E4). Models trained with 2 and 5 loops run with up to "
        "64: median (solid) and mean (dashed) squared error over the same simulated prompts, exact mean "
        "where the engine reaches (circles). A mean that climbs while the median falls is a heavy tail: "
        "rare prompts diverge. Values beyond the axis are drawn as triangles at the top edge (see the note)."),
}


def figure_markdown(stem: str, file: str | None = None) -> str:
    """The Markdown that embeds the report's figure `stem` (a key of FIGURE_CAPTIONS): an image
    line whose alt text is the caption's first sentence, then the caption. file: the image's
    file name (default stem + ".png")."""
    if stem not in FIGURE_CAPTIONS:
        raise ValueError(f"stem: no caption for figure {stem!r}; known: {', '.join(FIGURE_CAPTIONS)}")
    cap = FIGURE_CAPTIONS[stem].replace("*", "\\*")  # f* is not Markdown emphasis
    head, _, rest = cap.partition(". ")
    return f"![{head}]({file or stem + '.png'})\n\n*Figure `{stem}`: {head}.* {rest}"
