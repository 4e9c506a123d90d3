"""Figures: ``matplotlib.figure.Figure`` objects rendered straight to files (no pyplot, no backend
switch, no screen needed); files are written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..metrics import GroupReport
from .io import _atomic


def plot_class_vs_worst_group(report: GroupReport, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Class accuracy beside worst-subgroup accuracy for every class (Fig. 5 of Chiu et al.).

    A gap between the two lines is hidden stratification inside that class.
    """
    from matplotlib.figure import Figure

    ct = report.class_table
    x = range(len(ct))
    fig = Figure(figsize=(max(5.0, 0.6 * len(ct) + 2), 3.6), dpi=120)
    ax = fig.subplots()
    ax.plot(x, 100 * ct["accuracy"], "o-", color="tab:red", label="class accuracy")
    ax.plot(x, 100 * ct["worst_group_accuracy"], "s-", color="black", label="worst subgroup in class")
    ax.set_xticks(list(x))
    ax.set_xticklabels(ct["class_name"], rotation=45 if len(ct) > 6 else 0, ha="right" if len(ct) > 6 else "center")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or f"Worst-group {100 * report.worst_group_accuracy:.1f}% vs average {100 * report.average_accuracy:.1f}%")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    return save_figure_atomic(fig, path)


def save_figure_atomic(fig: "Any", path: str | os.PathLike[str]) -> Path:
    """Save a matplotlib figure (format from the suffix, png by default) atomically. Figures here are
    built as ``matplotlib.figure.Figure`` objects, not through pyplot, so no backend is chosen or
    changed (the user's own ``matplotlib.use`` is left alone) and nothing needs closing; a pyplot
    figure is closed after saving."""
    try:
        return _atomic(path, lambda p: fig.savefig(p, format=Path(path).suffix.lstrip(".") or "png"))
    finally:
        import sys

        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close(fig)
