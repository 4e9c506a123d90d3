"""Rich tables of group reports. Accuracies are printed as percentages."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from rich.console import JustifyMethod
from rich.table import Table

from ..metrics import GroupReport


def _pct(v: float | None, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.{digits}f}"


def group_table(report: GroupReport, title: str = "Accuracy per subgroup (%)", max_rows: int | None = 60) -> Table:
    """One row per (class, group) cell, worst cell marked."""
    t = Table(title=title, title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (("class", "left"), ("group", "left"), ("n", "right"), ("accuracy", "right"))
    for col, just in columns:
        t.add_column(col, justify=just)
    df = report.table
    has_ci = "accuracy_low" in df
    extra = [c for c in ("loss", "auroc", "train_n") if c in df]
    if has_ci:
        t.add_column(f"{int(100 * (report.confidence or 0.95))}% CI", justify="right")
    for c in extra:
        t.add_column(c, justify="right")
    rows = df if max_rows is None or len(df) <= max_rows else df.nsmallest(max_rows, "accuracy")
    wc, wg = report.worst_group
    for r in rows.itertuples(index=False):
        worst = (r[0], r[1]) == (wc, wg)
        cells = [str(r.class_name), str(r.group_name), str(r.n), _pct(r.accuracy)]
        if has_ci:
            cells.append(f"{_pct(r.accuracy_low)}-{_pct(r.accuracy_high)}")
        for c in extra:
            v = getattr(r, c)
            cells.append(_pct(v) if c == "auroc" else (f"{v:.3f}" if c == "loss" else f"{v:.0f}"))
        t.add_row(*cells, style="bold red" if worst else None)
    if rows is not df:
        t.caption = f"showing the {max_rows} worst of {len(df)} subgroups"
    return t


def summary_table(report: GroupReport, title: str = "Summary") -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    if report.intervals:
        t.add_column(f"{int(100 * (report.confidence or 0.95))}% CI", justify="right")
    labels = {
        "average_accuracy": "average accuracy (%)",
        "balanced_accuracy": "balanced accuracy, mean over subgroups (%)",
        "worst_group_accuracy": "worst-group accuracy (%)",
        "worst_class_accuracy": "worst-class accuracy (%)",
        "weighted_std": "WeightedStd (eq. 5, % points)",
        "macro_std": "MacroStd (eq. 6, % points)",
        "train_weighted_accuracy": "train-proportion-weighted accuracy (%)",
    }
    for k, v in report.summary().items():
        if v is None:
            continue
        row = [labels[k], _pct(v, 2)]
        if report.intervals:
            lo, hi = report.intervals.get(k, (float("nan"), float("nan")))
            row.append(f"{_pct(lo, 2)}-{_pct(hi, 2)}")
        t.add_row(*row)
    return t


def counts_table(counts: pd.DataFrame, title: str) -> Table:
    """Counts per split x class x group, one column per split."""
    pivot = counts.pivot_table(index=["class_name", "group_name"], columns="split", values="n", aggfunc="sum",
                               fill_value=0, sort=False)
    t = Table(title=title, title_justify="left")
    t.add_column("class")
    t.add_column("group")
    splits = [s for s in ("train", "val", "test") if s in pivot.columns]
    for s in splits:
        t.add_column(s, justify="right")
    for (c, g), row in pivot.iterrows():
        t.add_row(str(c), str(g), *[str(int(row[s])) for s in splits])
    t.add_row("[b]total[/b]", "", *[f"[b]{int(pivot[s].sum())}[/b]" for s in splits])
    return t


def datasets_table(items: list[Any]) -> Table:
    """The data sets ``stratalab.data.available()`` lists."""
    t = Table(title="Data sets (stratalab datasets show NAME for counts)", title_justify="left")
    t.add_column("name", style="bold")
    t.add_column("what")
    t.add_column("needs files in --data-dir")
    for i in items:
        t.add_row(i.name, i.summary, i.needs_files or "none (works anywhere)")
    return t


def _table(title: str, columns: list[str], left: tuple[str, ...] = ()) -> Table:
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, justify="left" if col in left else "right")
    return t


def george_table(summary: pd.DataFrame, dataset: str, seeds: str) -> Table:
    """GEORGE's result table (Table 2 of Sohoni et al.): robust and overall test accuracy per row,
    mean ± std over seeds (``summary`` from :func:`stratalab.experiments.summarise`)."""
    t = _table(f"GEORGE on {dataset}: test accuracy (%), mean ± std over seeds {seeds}",
               ["method", "robust accuracy (min over true subclasses)", "overall accuracy"], left=("method",))
    for r in summary.itertuples(index=False):
        t.add_row(r.method, f"{100 * r.robust_mean:.1f} ± {100 * r.robust_std:.1f}",
                  f"{100 * r.overall_mean:.1f} ± {100 * r.overall_std:.1f}")
    return t


def george_rows_table(rows: dict[str, dict[str, float]], title: str) -> Table:
    """One GEORGE run's rows: robust and overall test accuracy."""
    t = _table(title, ["method", "robust", "overall"], left=("method",))
    for name, row in rows.items():
        t.add_row(name, _pct(row["robust_accuracy"]), _pct(row["overall_accuracy"]))
    return t


def recovery_table(recovery: pd.DataFrame, overall: dict[str, float], seed: int) -> Table:
    """How well GEORGE's clusters recover each true subclass (best cluster's precision and recall)."""
    t = _table(f"Cluster recovery on train (seed {seed}): ARI {overall['ari']:.3f}, NMI {overall['nmi']:.3f}",
               ["subclass", "n", "best cluster", "precision (%)", "recall (%)"])
    for r in recovery.itertuples(index=False):
        t.add_row(str(r.subclass_name), str(r.n), str(r.best_cluster), _pct(r.precision), _pct(r.recall))
    return t


def d3m_table(summary: pd.DataFrame, dataset: str, seeds: str) -> Table:
    """D3M Table 1: worst-group and balanced test accuracy, mean ± std over seeds, with the group
    labels each row used and the train examples it leaves out."""
    t = _table(f"D3M Table 1 on {dataset}: test accuracy (%), mean ± std over seeds {seeds}",
               ["method", "group labels train / val", "worst-group", "balanced", "train examples removed"],
               left=("method", "group labels train / val"))
    for _, r in summary.iterrows():
        t.add_row(r["name"], r["group_info"], f"{100 * r['wga_mean']:.1f} ± {100 * r['wga_std']:.1f}",
                  f"{100 * r['balanced_mean']:.1f} ± {100 * r['balanced_std']:.1f}", f"{r['removed_mean']:.0f}")
    return t


def cells_table(cells: pd.DataFrame, seed: int, top: int = 8) -> Table:
    """D3M Fig. 4 as a table: train (class, group) cells by mean alignment, most negative first."""
    t = _table(f"Train cells by mean D3M alignment, most negative first (seed {seed}; D3M Fig. 4)",
               ["class", "group", "n", "mean alignment", "removed"], left=("class", "group"))
    for _, r in cells.head(top).iterrows():
        t.add_row(str(r["class"]), str(r["attribute"]), str(r["n"]), f"{r['mean_alignment']:.3g}",
                  f"{r['removed']} ({100 * r['removed_share']:.0f}%)")
    return t


def sweep_table(sweep_mean: pd.DataFrame) -> Table:
    """D3M Fig. 2 as a table: val worst-group accuracy by examples removed, mean (± std) over seeds
    on a common grid of k (``D3MTable.sweep_mean``)."""
    seeds = int(sweep_mean["seeds"].max()) if len(sweep_mean) else 0
    t = _table(f"Val worst-group accuracy (%) by examples removed (D3M Fig. 2; mean over {seeds} seed(s), "
               "each seed interpolated on a common grid of k)", ["curve", "removed", "val worst-group"], left=("curve",))
    for r in sweep_mean.itertuples(index=False):
        std = f" ± {100 * r.val_wga_std:.1f}" if r.seeds > 1 else ""
        t.add_row(r.curve, str(r.k), f"{100 * r.val_wga_mean:.1f}{std}")
    return t


def scaling_table(table: pd.DataFrame, dataset: str, select: str) -> Table:
    """LaBonte et al. scaling study: test WGA (selected epoch and last epoch) and average accuracy
    per class-balancing method and width, mean ± std over seeds."""
    t = _table(f"Finetuning on {dataset}: test accuracy (%), mean ± std over seeds (WGA at the epoch chosen by {select} "
               "and at the last epoch)", ["balancing", "width", "params", "WGA", "WGA last epoch", "average"],
               left=("balancing",))
    for r in table.itertuples(index=False):
        t.add_row("none" if r.method == "erm" else r.method, f"{r.width:g}", f"{r.params:,}",
                  f"{100 * r.wga_mean:.1f} ± {100 * r.wga_std:.1f}", f"{100 * r.wga_last_mean:.1f} ± {100 * r.wga_last_std:.1f}",
                  f"{100 * r.avg_mean:.1f} ± {100 * r.avg_std:.1f}")
    return t


def spectral_table(ratios: pd.DataFrame, title: str, group_names: list[str] | None = None) -> Table:
    """LaBonte et al. spectral imbalance per class: minority and majority group, their top
    eigenvalues, rho(y) and, when predictions were given, their accuracies and gap."""
    has_acc = "accuracy_gap" in ratios
    cols = ["class", "minority", "majority", "lambda_1 minority", "lambda_1 majority", "rho"]
    cols += ["acc. minority (%)", "acc. majority (%)", "gap (points)"] if has_acc else []
    t = _table(title, cols, left=("class",))
    name = (lambda g: group_names[g]) if group_names else str
    for r in ratios.itertuples(index=False):
        row = [r.class_name, name(r.minority_group), name(r.majority_group), f"{r.lambda1_minority:.4g}",
               f"{r.lambda1_majority:.4g}", f"{r.rho:.2f}"]
        if has_acc:
            row += [_pct(r.accuracy_minority), _pct(r.accuracy_majority), f"{100 * r.accuracy_gap:.1f}"]
        t.add_row(*row)
    return t


def bench_rich_table(table: pd.DataFrame, confidence: float, n_files: int) -> Table:
    """``stratalab bench``: one row per (data set, configuration, method, setting, metric): seeds,
    mean ± std over them and the confidence interval (fractions shown in %, counts as numbers)."""
    from .results import is_fraction_metric

    has_setting = bool(len(table)) and bool((table["setting"].astype(str) != "").any())
    cols = ["data set", "config", "method"] + (["setting"] if has_setting else []) + [
        "metric", "n", "mean ± std", f"{100 * confidence:g}% CI", "seeds"]
    t = _table(f"{len(table)} rows from {n_files} file(s): mean ± std over seeds and the {100 * confidence:g}% "
               "interval (accuracies in %)", cols, left=("data set", "config", "method", "setting", "metric", "seeds"))

    def fmt(v: float, metric: str) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{100 * v:.1f}" if is_fraction_metric(metric) else f"{v:.4g}"

    for r in table.itertuples(index=False):
        ci = f"{fmt(r.ci_low, r.metric)}-{fmt(r.ci_high, r.metric)}" if r.interval else "-"
        spread = f"{fmt(r.mean, r.metric)} ± {fmt(r.std, r.metric)}" if r.n >= 2 else f"{fmt(r.mean, r.metric)} (1 seed)"
        row = [r.dataset, r.config, r.method] + ([r.setting] if has_setting else []) + [
            r.metric, str(r.n), spread, ci, r.seeds or "-"]
        t.add_row(*row)
    return t


def cifar_b_table(table: pd.DataFrame, dataset: str, corrupted: bool) -> Table:
    """Chiu et al. Tables 1-2: per augmentation, test accuracy, WeightedStd and MacroStd (points),
    worst subgroup, mean ± std over seeds; with corruptions, the same averaged over them."""
    cols = ["augmentation", "seeds", "accuracy (%)", "WeightedStd", "MacroStd", "worst subgroup (%)"]
    if corrupted:
        cols += ["corrupted acc. (%)", "corrupted WeightedStd", "corrupted MacroStd"]
    t = _table(f"{dataset}: accuracy and subgroup spread on the colour subgroups of test (WeightedStd, MacroStd in "
               "% points; mean ± std over seeds)", cols, left=("augmentation",))

    def ms(r: Any, col: str) -> str:
        return f"{100 * getattr(r, col + '_mean'):.2f} ± {100 * getattr(r, col + '_std'):.2f}"

    for r in table.itertuples(index=False):
        row = [r.name, str(r.seeds), ms(r, "accuracy"), ms(r, "weighted_std"), ms(r, "macro_std"), ms(r, "worst_group_accuracy")]
        if corrupted:
            row += [ms(r, "corrupted_accuracy"), ms(r, "corrupted_weighted_std"), ms(r, "corrupted_macro_std")]
        t.add_row(*row)
    return t
