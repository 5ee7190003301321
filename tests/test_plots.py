"""The plotting API (looptheory.plots) and the report's figures, checked on the Axes: integer
axes have integer ticks, legend entries match the traces in distinct colours, the thresholds
that decide a verdict are drawn, every figure the report draws has a caption, and nothing is
written to disk. Agg backend, small data (synthetic records where a real run takes minutes)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

import looptheory as lt  # noqa: E402
from looptheory import plots, report  # noqa: E402
from looptheory.claims import MU_REPORTED  # noqa: E402


# --- data --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flows():
    """Two real gradient flows at d = 2, loops = 2 (one from 0.1 I, one from a random A0)."""
    task = lt.Task(2, 20)
    a = lt.gradient_flow(task, 0.1 * np.eye(2), 2)
    b = lt.gradient_flow(task, np.array([[0.3, 0.1], [-0.05, 0.2]]), 2, A_ref=a.A, t_max=5.0)
    return task, a, b


def _flow_dict(fl, f_star, label):
    """A flow as claim G3 records it in its evidence."""
    idx = slice(None, None, max(1, len(fl.t) // 60))
    return {"label": label, "t": fl.t.tolist(), "loss": fl.loss.tolist(), "excess": (fl.loss - f_star).tolist(),
            "f_star": f_star, "loops": fl.loops, "status": fl.status, "grad_norm": fl.grad_norm.tolist(),
            "distance": fl.distance.tolist(), "dominance": fl.dominance.tolist(),
            "eigs": [np.sort(np.linalg.eigvals(A).real).tolist() for A in fl.path[idx]], "eig_t": fl.t[idx].tolist()}


@pytest.fixture(scope="module")
def g3(flows):
    _, a, b = flows
    f_star = float(min(a.loss.min(), b.loss.min())) - 1e-9
    # seven flows: more than one colour cycle would give with 2-eigenvalue traces (14 traces)
    fl = [_flow_dict(x, f_star, f"flow {k}") for k, x in enumerate([a, b] * 3 + [a])]
    return SimpleNamespace(id="G3", params={"xi": 1e-6}, evidence={"flows": fl, "rows": []})


def _g2():
    rows = []
    for L in (2, 3):
        for d in (2, 100, 10**4, 10**6):
            rows.append({"family": "spectral", "d": d, "loops": L, "n": math.inf, "rho": 0.1,
                         "min_excess_ratio": 4 * L * L * d ** (-(L - 1) / L) * 1.1})
        for d in (2, 5):
            for n in (d, 4 * d, math.inf):
                rows.append({"family": "general", "d": d, "loops": L, "n": n, "rho": 0.1,
                             "min_excess_ratio": 0.5 / n if math.isfinite(n) else 1e-15})
    return SimpleNamespace(id="G2", evidence={"rows": rows})


def _g5():
    tl = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
    trained = []
    for L, blow in ((2, 1e76), (5, 1e20)):
        mean_exact = [0.5 / k if k < 24 else blow ** (k / 64) for k in tl]
        trained.append({"train_loops": L, "test_loops": tl, "mean_exact": mean_exact,
                        "mean_mc": [m if m < 1e30 else math.inf for m in mean_exact],
                        "median_mc": [0.3 / k**2 for k in tl]})
    return SimpleNamespace(id="G5", evidence={
        "optimal_losses": [{"loops": L, "f*_general": 1.0 / L, "f*_scalar": 1.0 / L} for L in range(1, 7)],
        "scalar_curve": [1.0 / L for L in range(1, 21)], "trained": trained})


def _curve():
    curves = []
    for n in (10, 40, 200):
        Ls = list(range(1, 21))
        loss = [1.0 / (L * math.log(n)) for L in Ls]
        curves.append({"n": n, "loops": Ls, "gamma": [n / (n + 6) + 0.01 * L for L in Ls], "loss": loss,
                       "engine": loss[:6], "mc": [(v * 1.01, v * 0.6) for v in loss[:3]]})
    return {"d": 5, "curves": curves}


def _experiments():
    h = list(np.exp(-np.linspace(0, 3, 200)) + 0.4)
    e1 = SimpleNamespace(id="E1", params={"steps": 1500}, evidence={"history": h[:188], "f_star": 0.4})
    e2 = SimpleNamespace(id="E2", params={"steps": 1500}, evidence={"history": h[:188], "f_star_sparse": 0.4})
    rows = [{"loops": L, "f_star_looped_exact": 1.0 / L, "sparse_mc": 1.0 / L + 0.01, "sparse_se": 0.002,
             "multilayer_sparse_mc": 1.0 / L, "multilayer_sparse_se": 0.002, "multilayer_minus_looped": -0.01 * L,
             "difference_se": 0.001} for L in (1, 2, 3)]
    e3 = SimpleNamespace(id="E3", evidence={"exact": [{"loops": L, "f_star": 1.0 / L} for L in (1, 2, 3)], "rows": rows})
    tl = [1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64]
    curves = [{"train_loops": L, "test_loops": tl, "median_mc": [0.3 / k for k in tl],
               "mean_mc": [0.5 / k if k < 32 else 1e40 for k in tl],
               "mean_exact": [0.5 / k if k <= 6 else None for k in tl]} for L in (2, 5)]
    e4 = SimpleNamespace(id="E4", evidence={"curves": curves})
    return [e1, e2, e3, e4]


def _g6():
    rows = [{"d": d, "layers": L, "n": n, "f*_looped": 1.0 / L**1.5 / n, "f*_untied": 1.0 / L**2 / n,
             "f*_schedule": 1.0 / L**2 / n, "looped/untied": L**0.5} for d, n in ((2, 5), (2, 20), (3, 20)) for L in (1, 2, 3, 4)]
    return SimpleNamespace(id="G6", params={"threshold f*_looped / f*_untied": 1.10}, evidence={"rows": rows})


@pytest.fixture(scope="module")
def chen_data():
    from looptheory.chen import chen_figure_data

    return chen_figure_data(quick=True)


@pytest.fixture(scope="module")
def specs(g3, chen_data):
    """The report's figures (stem, size, draw) for a full set of results."""
    claims = [g3, _g2(), _g5(), _g6()]
    return report._figure_specs(_curve(), chen_data, claims, _experiments(), [_scalar_limit()])


def _scalar_limit():
    conv = [{"limit": {"alpha": "2", "loops": L, "rho": "0"}, "rate": -1.0,
             "rows": [{"d": d, "error": 0.2 * L / d} for d in (8, 16, 32, 64, 128)]} for L in (1, 3)]
    return SimpleNamespace(id="scalar_limit", kind="check", evidence={"convergence": conv})


@pytest.fixture(scope="module")
def drawn(specs):
    """Every figure of the report drawn on a Figure (nothing saved): stem -> Figure."""
    out = {}
    for stem, size, draw in specs:
        fig = Figure(figsize=size, layout="constrained")
        draw(fig)
        fig.canvas.draw()  # ticks and legends are laid out as in the saved file
        out[stem] = fig
    return out


def _ax(fig, i=0):
    return fig.axes[i]


# --- helpers for the checks -------------------------------------------------------------------


def _integer_ticks(ax, axis="x"):
    """The axis has a MaxNLocator(integer=True), or every tick in view is an integer."""
    a = ax.xaxis if axis == "x" else ax.yaxis
    loc = a.get_major_locator()
    if isinstance(loc, MaxNLocator):
        return bool(loc._integer)
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    ticks = [v for v in a.get_majorticklocs() if lo <= v <= hi]
    labels = [t.get_text() for t in a.get_majorticklabels() if t.get_text()]
    return bool(ticks) and all(float(v).is_integer() for v in ticks) and all(s.lstrip("−-").isdigit() for s in labels)


def _legends(ax):
    found = [a for a in ax.get_children() if isinstance(a, Legend)]
    return found


def _handle_colour(h):
    if isinstance(h, Line2D):
        c = h.get_color()
        if h.get_linestyle() in ("None", "", " ") and h.get_marker() not in (None, "None", ""):
            mec = h.get_markeredgecolor()
            c = mec if to_rgba(h.get_markerfacecolor())[3] == 0 else h.get_markerfacecolor()
        return to_rgba(c)
    if isinstance(h, PolyCollection):
        return to_rgba(h.get_facecolor()[0])
    return None


def _traces(ax):
    """The labelled lines (one per flow, curve or series; markers and bars are labelled "_...")."""
    return [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]


def _check_colour_legend(ax):
    """ax.get_legend(): one entry per trace group, labels and colours distinct, and each entry's
    colour is that of a drawn trace with the same label."""
    leg = ax.get_legend()
    assert leg is not None
    handles = leg.legend_handles if hasattr(leg, "legend_handles") else leg.legendHandles
    labels = [t.get_text() for t in leg.get_texts()]
    assert len(labels) == len(set(labels)), labels
    colours = [_handle_colour(h) for h in handles]
    assert len(set(colours)) == len(colours), (labels, colours)
    drawn = {}
    for line in ax.get_lines():
        drawn.setdefault(line.get_label(), set()).add(to_rgba(line.get_color()))
    for lab, col in zip(labels, colours):
        if lab in drawn:
            assert col in drawn[lab] or any(np.allclose(col, c) for c in drawn[lab]), (lab, col, drawn[lab])
    return labels, colours


def _thresholds(ax):
    """(y or x value, label) of the labelled straight reference lines (axhline / axvline)."""
    out = []
    for line in ax.get_lines():
        x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        if line.get_label().startswith("_") or len(y) != 2:
            continue
        if y[0] == y[1] and list(x) == [0, 1]:
            out.append(("h", float(y[0]), line.get_label()))
        if x[0] == x[1] and list(y) == [0, 1]:
            out.append(("v", float(x[0]), line.get_label()))
    return out


# --- plot_flow on gradient_flow's output ---------------------------------------------------


def test_plot_flow_draws_one_line_per_flow_on_the_given_axes(flows):
    _, a, b = flows
    fig = Figure()
    ax = fig.add_subplot()
    assert lt.plot_flow(a, ax=ax) is ax
    traces = _traces(ax)
    assert len(traces) == 1
    assert np.allclose(traces[0].get_ydata(), a.loss[a.t > 0]) and "time" in ax.get_xlabel()
    ax2 = fig.add_subplot(2, 1, 2)
    assert lt.plot_flow([a, b], "grad_norm", ax=ax2) is ax2
    assert len(_traces(ax2)) == 2
    _check_colour_legend(ax2)


def test_plot_flow_without_ax_makes_a_figure(flows):
    _, a, _ = flows
    ax = lt.plot_flow(a)
    try:
        assert ax.figure is not None and len(_traces(ax)) == 1
    finally:
        plt.close(ax.figure)


def test_plot_flow_every_quantity(flows):
    _, a, b = flows
    f_star = float(min(a.loss.min(), b.loss.min())) - 1e-9
    for q in plots.QUANTITIES:
        fig = Figure()
        ax = fig.add_subplot()
        fl = [b] if q == "distance" else [a, b]
        assert lt.plot_flow(fl, q, ax=ax, f_star=f_star) is ax
        assert len(_traces(ax)) == len(fl)
        assert len([ln for ln in ax.get_lines() if ln.get_label() == "_end"]) <= len(fl)
    # dominance with f_star is the excess ratio G2 tests, not FlowResult.dominance (ratio on f)
    ax = Figure().add_subplot()
    lt.plot_flow(a, "dominance", ax=ax, f_star=f_star, mu=MU_REPORTED)
    p = 3 / 2
    y = _traces(ax)[0].get_ydata()
    want = (a.dominance * (a.loss / (a.loss - f_star)) ** p)[a.t > 0]
    assert np.allclose(y[np.isfinite(y)], want[np.isfinite(y)])
    assert "f − f*" in ax.get_ylabel()
    assert ("h", MU_REPORTED, "μ = 1/16: dominance fails below") in _thresholds(ax)


def test_plot_flow_bad_input_names_the_parameter(flows):
    _, a, _ = flows
    ax = Figure().add_subplot()
    with pytest.raises(ValueError, match="^quantity"):
        lt.plot_flow(a, quantity="nope", ax=ax)
    with pytest.raises(TypeError, match="^ax"):
        lt.plot_flow(a, ax="x")
    with pytest.raises(ValueError, match="^flows"):
        lt.plot_flow([], ax=ax)
    with pytest.raises(TypeError, match="^flows"):
        lt.plot_flow(3, ax=ax)
    with pytest.raises(TypeError, match="^flows"):
        lt.plot_flow([a, "x"], ax=ax)
    with pytest.raises(ValueError, match="^f_star"):
        lt.plot_flow(a, "excess", ax=ax)
    with pytest.raises(ValueError, match="^f_star"):
        lt.plot_flow([a, a], "excess", ax=ax, f_star=[0.1])
    with pytest.raises(ValueError, match="^flows"):
        lt.plot_flow(a, "distance", ax=ax)  # run without A_ref
    with pytest.raises(ValueError, match="^mu"):
        lt.plot_flow(a, "dominance", ax=ax, mu=-1)
    with pytest.raises(ValueError, match="^labels"):
        lt.plot_flow([a, a], ax=ax, labels=["one"])
    with pytest.raises(TypeError, match="^title"):
        lt.plot_flow(a, ax=ax, title=3)


def test_every_public_function_refuses_bad_input():
    ax = Figure().add_subplot()
    for fn in (lt.plot_dominance, lt.plot_optimal_loss, lt.plot_test_time_loops, lt.plot_looped_vs_multilayer):
        with pytest.raises(TypeError, match="^record"):
            fn(object(), ax=ax)
        with pytest.raises(ValueError, match="^record"):
            fn(SimpleNamespace(id="X", evidence={"other": 1}), ax=ax)
        with pytest.raises(TypeError, match="^ax"):
            fn(_g2() if fn is lt.plot_dominance else _g5() if fn in (lt.plot_optimal_loss, lt.plot_test_time_loops)
               else _experiments()[2], ax="x")
    for fn in (lt.plot_loss_vs_loops, lt.plot_optimal_scale):
        with pytest.raises(TypeError, match="^data"):
            fn("x", ax=ax)
        with pytest.raises(ValueError, match="^data"):
            fn({"curves": []}, ax=ax)
    for fn in (lt.plot_chen_error, lt.plot_chen_kappa, lt.plot_chen_divergence, lt.plot_sample_complexity):
        with pytest.raises(TypeError, match="^data"):
            fn({}, ax=ax)
    with pytest.raises(ValueError, match="^records"):
        lt.plot_training([], ax=ax)
    with pytest.raises(ValueError, match="^panel"):
        lt.plot_looped_vs_multilayer(_experiments()[2], ax=ax, panel="nope")
    with pytest.raises(ValueError, match="^stem"):
        plots.figure_markdown("nope")
    with pytest.raises(ValueError, match="^panel"):
        lt.plot_looped_vs_untied(_g6(), ax=ax, panel="nope")
    with pytest.raises(ValueError, match="^record"):
        lt.plot_looped_vs_untied(SimpleNamespace(id="G6", evidence={"rows": []}), ax=ax)
    with pytest.raises(TypeError, match="^results"):
        lt.plot_scalar_limit([], ax=ax)


def test_scalar_limit_plot_draws_one_line_per_result():
    ax = Figure().add_subplot()
    res = [lt.scalar_family_convergence(2, L, ds=(4, 8, 16)) for L in (1, 2)]
    assert lt.plot_scalar_limit(res, ax=ax) is ax
    assert len(ax.get_lines()) == 2 and ax.get_xscale() == ax.get_yscale() == "log"
    assert all("rate d^" in t.get_text() for t in ax.get_legend().get_texts())


def test_records_are_read_by_duck_typing_and_from_results_json():
    """A dict with "evidence" (an entry of results.json, where inf is the string "inf") works
    like the record object."""
    rec = _g2()
    as_json = {"id": "G2", "evidence": {"rows": [{**r, "n": "inf" if math.isinf(r["n"]) else r["n"]}
                                                 for r in rec.evidence["rows"]]}}
    a, b = Figure().add_subplot(), Figure().add_subplot()
    lt.plot_dominance(rec, ax=a)
    lt.plot_dominance(as_json, ax=b)
    assert [ln.get_label() for ln in a.get_lines()] == [ln.get_label() for ln in b.get_lines()]


# --- the report's figures -------------------------------------------------------------------------


def test_every_figure_the_report_draws_has_a_caption(specs):
    stems = [s for s, _, _ in specs]
    assert len(stems) == len(set(stems)) == 16
    assert set(stems) == set(plots.FIGURE_CAPTIONS), "a caption without a figure, or a figure without one"
    for stem in stems:
        md = plots.figure_markdown(stem)
        assert md.startswith("![") and f"]({stem}.png)" in md
        assert plots.FIGURE_CAPTIONS[stem].split(". ", 1)[1].replace("*", "\\*") in md  # f* escaped
        # each caption says which claim, check or experiment its figure supports
        assert any(w in plots.FIGURE_CAPTIONS[stem] for w in ("G1", "G2", "G3", "G5", "G6", "C2", "E1", "E3", "E4", "check"))


def test_report_embeds_figures_with_their_captions(tmp_path):
    """The report's figure specs drawn and saved as draw_figures does, then report.md rendered:
    the figures are embedded through figure_markdown, caption included."""
    from matplotlib.figure import Figure

    files = []
    for stem, size, draw in report._figure_specs(_curve(), None, [], []):
        fig = Figure(figsize=size, layout="constrained")
        draw(fig)
        for ext in ("png", "svg"):
            fig.savefig(tmp_path / f"{stem}.{ext}")
            files.append(str(tmp_path / f"{stem}.{ext}"))
    meta = report._meta({"mode": "quick", "items": []}, str(tmp_path), 0.0, "complete", 0, 0)
    text = report.render([], meta, files, [])
    for stem in ("loss_vs_loops", "optimal_scale_vs_loops"):
        assert plots.figure_markdown(stem) in text
        assert (tmp_path / f"{stem}.png").exists() and (tmp_path / f"{stem}.svg").exists()


def test_integer_axes_have_integer_ticks(drawn):
    cases = [("loss_vs_loops", 0, "x"), ("optimal_scale_vs_loops", 0, "x"), ("optimal_loss_and_test_loops", 0, "x"),
             ("optimal_loss_and_test_loops", 1, "x"), ("chen_error_vs_loops", 0, "x"),
             ("chen_sample_complexity", 0, "x"), ("training_curves", 0, "x"), ("looped_vs_multilayer", 0, "x"),
             ("looped_vs_multilayer", 1, "x"), ("test_time_loops", 0, "x")]
    for stem, i, axis in cases:
        assert _integer_ticks(_ax(drawn[stem], i), axis), f"{stem} panel {i}: non-integer ticks on the {axis} axis"


def test_legends_match_traces_in_distinct_colours_at_readable_size(drawn):
    for stem, fig in drawn.items():
        for ax in fig.axes:
            if ax.get_legend() is None:
                continue
            _check_colour_legend(ax)
            for leg in _legends(ax):
                assert all(t.get_fontsize() >= 8 for t in leg.get_texts()), stem


def test_flow_eigenvalues_one_colour_per_flow(drawn, g3):
    ax = _ax(drawn["flow_eigenvalues"])
    labels, colours = _check_colour_legend(ax)
    assert labels == [f["label"] for f in g3.evidence["flows"]]
    by_label = dict(zip(labels, colours))
    traces = ax.get_lines()  # every eigenvalue trace, labelled or not
    assert len(traces) == sum(len(f["eigs"][0]) for f in g3.evidence["flows"]) == 14
    for line in traces:
        assert to_rgba(line.get_color()) == by_label[line.get_label().lstrip("_")]


def test_deciding_thresholds_are_drawn(drawn, chen_data):
    def has(stem, kind, value, word, panel=0):
        th = _thresholds(_ax(drawn[stem], panel))
        assert any(k == kind and math.isclose(v, value, rel_tol=1e-12, abs_tol=1e-15) and word in lab
                   for k, v, lab in th), (stem, th)

    has("flow_dominance", "h", MU_REPORTED, "1/16")
    has("dominance_vs_d", "h", MU_REPORTED, "1/16")
    has("flow_excess", "h", 1e-6, "ξ")
    has("chen_divergence_vs_ratio", "v", chen_data["divergence_threshold"], "threshold")
    has("chen_sample_complexity", "v", 2 * math.log(100), "C2")
    has("training_curves", "h", 0.4, "f*")
    has("looped_vs_multilayer", "h", 0.0, "no difference", panel=1)
    # G3's bound: a dashed curve per flow in the flow's colour, and a legend entry for it
    ax = _ax(drawn["flow_excess"])
    bounds = [ln for ln in ax.get_lines() if ln.get_label() == "_bound"]
    assert len(bounds) == 7
    assert any("bound with μ = 1/16" in t.get_text() for leg in _legends(ax) for t in leg.get_texts())


def test_flow_dominance_plots_the_excess_ratio(drawn):
    ax = _ax(drawn["flow_dominance"])
    assert "f − f*" in ax.get_ylabel() and "ratio on f" not in ax.get_ylabel()


def test_out_of_range_values_are_clipped_and_noted(drawn):
    ax = _ax(drawn["optimal_loss_and_test_loops"], 1)
    lo, hi = ax.get_ylim()
    assert hi <= 1e6 and lo > 0
    notes = [t.get_text() for t in ax.texts if t.get_gid() == plots.NOTE_GID]
    assert notes and "above" in notes[0] and "largest 1e+76" in notes[0] and "overflowed" in notes[0]
    ax = _ax(drawn["test_time_loops"])
    assert ax.get_ylim()[1] <= 1e6
    assert any("inf" in t.get_text() or "above" in t.get_text() for t in ax.texts)
    ax = _ax(drawn["dominance_vs_d"])
    assert any("below" in t.get_text() for t in ax.texts)  # the 1e-15 point is drawn at the floor


def test_sample_complexity_axis_says_what_it_shows(drawn):
    ax = _ax(drawn["chen_sample_complexity"])
    assert ax.get_yscale() == "log"
    assert "log10 n on a log axis" in ax.get_ylabel()
    assert all(t.get_text().startswith("$10^{") for t in ax.get_yticklabels() if t.get_text())


def test_error_bars_are_visible(drawn):
    """Monte Carlo error bars: black (contrasting with the coloured markers), with caps."""
    for stem, panel in (("loss_vs_loops", 0), ("looped_vs_multilayer", 0), ("looped_vs_multilayer", 1),
                        ("chen_divergence_vs_ratio", 0)):
        ax = _ax(drawn[stem], panel)
        caps = [ln for ln in ax.get_lines() if ln.get_marker() in ("_", "|") and ln.get_label().startswith("_")]
        bars = [c for c in ax.collections if c.__class__.__name__ == "LineCollection"]
        assert caps and bars, stem
        assert all(np.allclose(to_rgba(c.get_color()[0])[:3], (0, 0, 0)) for c in bars), stem


def test_plots_write_no_files_and_set_no_titles(tmp_path, monkeypatch, specs):
    monkeypatch.chdir(tmp_path)

    def refuse(*a, **k):
        raise AssertionError("a plotting function saved a figure")

    monkeypatch.setattr(Figure, "savefig", refuse)
    for stem, size, draw in specs:
        fig = Figure(figsize=size)
        draw(fig)
        assert all(ax.get_title() == "" for ax in fig.axes), stem
    assert os.listdir(tmp_path) == []
    ax = Figure().add_subplot()
    lt.plot_optimal_loss(_g5(), ax=ax, title="mine")
    assert ax.get_title() == "mine"


def test_importing_looptheory_leaves_the_matplotlib_backend_alone():
    code = "import sys, looptheory; print('matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "False", out.stderr


def test_looped_vs_multilayer_draws_both_exact_optima_when_the_record_has_them():
    e3 = _experiments()[2]
    ax = lt.plot_looped_vs_multilayer(e3, ax=Figure().add_subplot())
    assert [ln.get_label() for ln in ax.lines if "exact" in ln.get_label()] == ["looped, exact optimum f*"]
    exact = [{"loops": L, "f_star": 1.0 / L, "f_star_untied": 0.5 / L} for L in (1, 2, 3)]
    ax = lt.plot_looped_vs_multilayer(SimpleNamespace(id="E3", evidence={"exact": exact, "rows": e3.evidence["rows"]}),
                                      ax=Figure().add_subplot())
    untied = [ln for ln in ax.lines if ln.get_label() == "multi-layer, exact optimum f*"]
    assert len(untied) == 1 and list(untied[0].get_ydata()) == [0.5, 0.25, 0.5 / 3]


def test_untied_plots_refuse_another_item_s_record_by_name():
    """A record of another item has rows too, of other columns: refused naming `record` (or
    `results`), not a KeyError from inside the drawing."""
    ax = Figure().add_subplot()
    a1 = SimpleNamespace(id="A1", evidence={"rows": [{"d": 2, "layers": 2, "n": 20, "gradient": 1e-15}]})
    with pytest.raises(ValueError, match="^record.*f\\*_schedule"):
        lt.plot_looped_vs_untied(a1, ax=ax)
    with pytest.raises(ValueError, match="^record.*loops"):
        lt.plot_looped_vs_multilayer(_g6(), ax=ax)
    with pytest.raises(ValueError, match="^record.*d, layers"):
        lt.plot_looped_vs_untied(_experiments()[2], ax=ax)
    with pytest.raises(ValueError, match="^results"):
        lt.plot_scalar_limit({"rows": []}, ax=ax)
