"""Figures for the verification report (matplotlib, Agg backend; PNG and SVG).

Plotting only: every function takes data computed elsewhere and writes files.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, out_dir, name):
    paths = []
    for ext in ("png", "svg"):
        p = os.path.join(out_dir, f"{name}.{ext}")
        fig.savefig(p, dpi=120, bbox_inches="tight")
        paths.append(p)
    plt.close(fig)
    return paths


def plot_loss_against_loops(data: dict, out_dir: str):
    """Loss at the optimal scale A = gamma_L sigma_x^{-1} against loops: the exact scalar-family
    curve, the exact engine's points and Monte Carlo points with 2-standard-error bars."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for c in data["curves"]:
        (line,) = ax.semilogy(c["loops"], c["loss"], "-", label=f"n = {c['n']} (exact, moments)")
        ax.semilogy(c["loops"][: len(c["engine"])], c["engine"], "o", mfc="none", color=line.get_color())
        m = [v[0] for v in c["mc"]]
        e = [2 * v[1] for v in c["mc"]]
        ax.errorbar(c["loops"][: len(m)], m, yerr=e, fmt="x", color=line.get_color(), capsize=3)
    ax.set_xlabel("loops L")
    ax.set_ylabel("population loss at A = γ_L Σx⁻¹")
    ax.set_title(f"d = {data['d']}: exact curve, engine (o), Monte Carlo ±2 se (x)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, out_dir, "loss_vs_loops")


def plot_optimal_scale(data: dict, out_dir: str):
    """gamma_L (optimal_scale) against loops for several n."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for c in data["curves"]:
        ax.plot(c["loops"], c["gamma"], "o-", ms=3, label=f"n = {c['n']}")
    ax.set_xlabel("loops L")
    ax.set_ylabel("γ_L = optimal_scale")
    ax.set_title(f"Optimal scale of A = γ Σx⁻¹ (d = {data['d']}, Σw = Σx⁻¹)")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return _save(fig, out_dir, "optimal_scale_vs_loops")
