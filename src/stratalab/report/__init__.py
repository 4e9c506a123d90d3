"""Rendering of reports: rich tables for the terminal, matplotlib figures, safe file writes."""

from .io import check_output_path, write_json_atomic, write_table_atomic
from .plots import plot_class_vs_worst_group, save_figure_atomic
from .tables import (
    cells_table,
    counts_table,
    d3m_table,
    datasets_table,
    george_rows_table,
    george_table,
    group_table,
    recovery_table,
    scaling_table,
    spectral_table,
    summary_table,
    sweep_table,
)

__all__ = [
    "group_table", "summary_table", "counts_table", "datasets_table", "george_table", "george_rows_table",
    "recovery_table", "d3m_table", "cells_table", "sweep_table", "scaling_table", "spectral_table", "plot_class_vs_worst_group", "save_figure_atomic",
    "write_json_atomic", "write_table_atomic", "check_output_path",
]
