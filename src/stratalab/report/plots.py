"""Figures: ``matplotlib.figure.Figure`` objects rendered straight to files (no pyplot, no backend
switch, no screen needed); files are written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .._io import save_figure_atomic
from ..metrics import GroupReport

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def plot_class_vs_worst_group(report: GroupReport, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Class accuracy beside worst-subgroup accuracy for every class (Fig. 5 of Chiu et al.).

    A gap between the two lines is hidden stratification inside that class.
    """
    fig = class_vs_worst_group_figure(report.class_table, report.worst_group_accuracy, report.average_accuracy, title)
    return save_figure_atomic(fig, path)


def class_vs_worst_group_figure(class_table: "pd.DataFrame", worst_group_accuracy: float, average_accuracy: float,
                                title: str | None = None) -> "Figure":
    """The figure of :func:`plot_class_vs_worst_group` as a ``matplotlib.figure.Figure``, from a
    report's ``class_table`` (or the ``classes`` records of its JSON: columns ``class_name``,
    ``accuracy``, ``worst_group_accuracy``)."""
    from matplotlib.figure import Figure

    ct = class_table
    x = range(len(ct))
    fig = Figure(figsize=(max(5.0, 0.6 * len(ct) + 2), 3.6), dpi=120)
    ax = fig.subplots()
    ax.plot(x, 100 * ct["accuracy"], "o-", color="tab:red", label="class accuracy")
    ax.plot(x, 100 * ct["worst_group_accuracy"], "s-", color="black", label="worst subgroup in class")
    ax.set_xticks(list(x))
    ax.set_xticklabels(ct["class_name"], rotation=45 if len(ct) > 6 else 0, ha="right" if len(ct) > 6 else "center")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or f"Worst-group {100 * worst_group_accuracy:.1f}% vs average {100 * average_accuracy:.1f}%")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


SWEEP_STYLES = {"d3m": ("D3M", "tab:green"), "random": ("Random", "tab:blue"), "balance": ("Balancing (majority)", "tab:orange")}
BALANCING_COLOURS = {"erm": "tab:gray", "subsetting": "tab:blue", "upsampling": "tab:orange", "upweighting": "tab:red",
                     "mixture": "tab:green"}
BALANCING_LABELS = {"erm": "none", "subsetting": "subsetting", "upsampling": "upsampling", "upweighting": "upweighting",
                    "mixture": "mixture"}


def d3m_sweep_figure(sweep_mean: "pd.DataFrame", sweep: "pd.DataFrame", dataset: str) -> "Figure":
    """D3M Fig. 2 as a Figure: val worst-group accuracy against training examples removed per removal
    order (D3M, random, balancing the majority group), mean over seeds with a +-1 std band, from the
    ``sweep_mean`` and ``sweep`` records of a ``run d3m`` result (``D3MTable.sweep_mean()`` /
    ``sweep()``); the star marks the heuristic k (A_i < 0), mean over seeds of k and of its val WGA."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for curve, (label, colour) in SWEEP_STYLES.items():
        sub = sweep_mean[sweep_mean["curve"] == curve] if len(sweep_mean) else sweep_mean
        if sub.empty:
            continue
        ax.plot(sub["k"], sub["val_wga_mean"], marker="o", color=colour, label=label)
        if sub["seeds"].max() > 1:
            ax.fill_between(sub["k"], sub["val_wga_mean"] - sub["val_wga_std"], sub["val_wga_mean"] + sub["val_wga_std"],
                            color=colour, alpha=0.15)
    star = sweep[sweep["heuristic"].astype(bool)] if "heuristic" in sweep else sweep.iloc[:0]
    if not star.empty:
        ax.scatter(star["k"].mean(), star["val_wga"].mean(), marker="*", s=250, color="tab:green", zorder=5,
                   label="D3M heuristic (A < 0)")
    ax.set_xlabel("training examples removed")
    ax.set_ylabel("val worst-group accuracy")
    seeds = sweep["seed"].nunique() if "seed" in sweep else 0
    ax.set_title(f"{dataset}: removal order ({seeds} seed(s))")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def scaling_figure(table: "pd.DataFrame", methods: list[str], title: str, *, last_epoch: bool = False) -> "Figure":
    """LaBonte et al.'s scaling figure as a Figure: test worst-group accuracy against parameter count
    (log scale), one line per class-balancing method, mean over seeds with a +-1 std band, from the
    ``table`` records of a ``run scaling`` result (``ScalingResult.table()``)."""
    from matplotlib.figure import Figure

    m, s = ("wga_last_mean", "wga_last_std") if last_epoch else ("wga_mean", "wga_std")
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for method in methods:
        sub = table[table["method"] == method].sort_values("params")
        colour = BALANCING_COLOURS.get(method)
        ax.plot(sub["params"], 100 * sub[m], marker="o", color=colour, label=BALANCING_LABELS.get(method, method))
        ax.fill_between(sub["params"], 100 * (sub[m] - sub[s]), 100 * (sub[m] + sub[s]), color=colour, alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("test worst-group accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(title="class balancing", fontsize=8)
    fig.tight_layout()
    return fig


def robust_vs_overall_figure(table: "pd.DataFrame", title: str) -> "Figure":
    """GEORGE Table 1 as bars: robust (worst true subclass) and overall test accuracy per row, mean
    over seeds with +-1 std error bars, from the ``table`` records of a ``run george`` result
    (columns method, robust_mean, robust_std, overall_mean, overall_std)."""
    import numpy as np
    from matplotlib.figure import Figure

    x = np.arange(len(table))
    fig = Figure(figsize=(max(5.0, 1.6 * len(table) + 1.5), 3.6))
    ax = fig.subplots()
    w = 0.38
    for off, (col, label, colour) in zip((-w / 2, w / 2), (("robust", "robust (worst subclass)", "tab:red"),
                                                          ("overall", "overall", "tab:gray"))):
        mean, std = 100 * table[f"{col}_mean"].to_numpy(float), 100 * table[f"{col}_std"].to_numpy(float)
        bars = ax.bar(x + off, mean, w, yerr=std, capsize=3, color=colour, label=label)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in mean], padding=2, fontsize=8)
    ax.set_xticks(list(x))
    ax.set_xticklabels(table["method"])
    ax.set_ylim(0, 119)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
