"""Rendering of reports: rich tables for the terminal, matplotlib figures, safe file writes."""

from .io import check_output_path, write_json_atomic, write_table_atomic
from .plots import plot_class_vs_worst_group, save_figure_atomic
from .tables import counts_table, group_table, summary_table

__all__ = [
    "group_table", "summary_table", "counts_table", "plot_class_vs_worst_group", "save_figure_atomic",
    "write_json_atomic", "write_table_atomic", "check_output_path",
]
