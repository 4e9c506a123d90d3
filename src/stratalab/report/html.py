"""A self-contained HTML report of result files (``stratalab report``).

One page, no network asset of any kind (inline CSS, an inline vanilla-JS table sorter, figures
embedded as ``data:`` URIs), with per result file:

- its kind, data set, seeds, and the invocation / config as pretty JSON in a ``<details>``;
- a summary table, one row per method (and setting): the headline metrics, mean ± std over seeds
  where the file has several, the bootstrap interval where it has one (an audit's), and the labels
  each row used;
- the paper-style figure: audit -> class accuracy beside worst-subgroup accuracy (Chiu et al.
  Fig. 1); run d3m -> val worst-group accuracy against examples removed (D3M Fig. 2); run scaling ->
  test worst-group accuracy against parameters per class-balancing method (LaBonte et al. scaling
  figure); run george -> robust vs overall test accuracy per row (GEORGE Table 1 as bars);
- the per-group tables (:meth:`RunResult.group_tables`), sortable by clicking a header, the worst
  group's row carrying the CSS class ``worst`` and a visible marker.

Numbers are shown one way per quantity everywhere on the page: fractions (accuracies, WeightedStd,
MacroStd, AUROC, gaps) as percentages with one decimal, counts as integers, other quantities (loss,
rho, eigenvalues, ARI/NMI) with three decimals. Every numeric cell keeps its raw value in
``data-value`` (the mean, for a mean ± std cell, with ``data-std``, ``data-low``/``data-high`` for
an interval), so sorting is numeric and the page can be checked against the JSON.
"""

from __future__ import annotations

import base64
import io
import json
import math
import numbers
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import write_atomic
from .results import GroupTable, RunResult, is_count_metric, is_fraction_metric, metric_label, summarise

__all__ = ["render_html", "write_html", "figures", "SUMMARY_METRICS"]

# headline metrics of each kind's summary table, in column order (those present in the file)
SUMMARY_METRICS: dict[str, tuple[str, ...]] = {
    "audit": ("wga", "average", "balanced", "wca", "weighted_std", "macro_std", "train_weighted"),
    "train": ("test_wga", "test_average", "test_balanced", "test_wca", "val_wga", "val_average"),
    "run george": ("test_wga", "test_average", "cluster_ari", "cluster_nmi"),
    "run d3m": ("test_wga", "test_balanced", "test_average", "val_wga", "n_removed"),
    "run scaling": ("test_wga", "test_wga_last", "test_average", "test_average_last"),
    "run cifar-b": ("test_average", "test_weighted_std", "test_macro_std", "test_wga", "corrupted_test_average",
                    "corrupted_test_macro_std"),
}
_HEADERS = {"run george": {"test_wga": "robust accuracy (test worst-group)", "test_average": "overall accuracy (test average)"}}
PAPERS = {
    "audit": "Subgroup audit of predictions: class accuracy beside worst-subgroup accuracy (Chiu et al., Fig. 1)",
    "train": "One training run: val and test subgroup reports",
    "run george": "GEORGE (Sohoni et al. 2020): ERM, GEORGE and Group DRO on true subclasses (Table 1)",
    "run d3m": "D3M (Jain et al. 2024): Table 1 rows and the Fig. 2 removal sweep",
    "run scaling": "LaBonte et al. (2024): model scaling x class balancing (the scaling figure)",
    "run cifar-b": "Chiu, Chen and Ma: accuracy, WeightedStd and MacroStd on the colour subgroups per augmentation (Tables 1-2)",
    "spectral": "LaBonte et al. (2024): spectral imbalance per class",
}


# ---------------------------------------------------------------------- formatting
def _finite(v: Any) -> bool:
    """Whether ``v`` is a real, finite number (numpy scalars too; not a bool, None or NaN)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _fmt(v: float, how: str) -> str:
    """One number as shown on the page: "pct" 100*v with 1 decimal, "int" thousands-separated,
    "num" 3 decimals."""
    if how == "pct":
        return f"{100 * v:.1f}"
    if how == "int":
        return f"{v:,.0f}"
    return f"{v:.3f}"


def _cell(v: Any, how: str) -> dict[str, Any]:
    """A table cell: text and, for numbers, the raw value for ``data-value``."""
    if how == "text":
        return {"text": "" if v is None else str(v), "num": False, "attrs": {}, "extra": "", "marker": False}
    if not _finite(v):
        return {"text": "–", "num": True, "attrs": {}, "extra": "", "marker": False}
    return {"text": _fmt(float(v), how), "num": True, "attrs": {"data-value": repr(float(v))}, "extra": "", "marker": False}


def _metric_format(metric: str) -> str:
    return "int" if is_count_metric(metric) else "pct" if is_fraction_metric(metric) else "num"


def _header(kind: str, metric: str) -> str:
    label = _HEADERS.get(kind, {}).get(metric, metric_label(metric))
    return label + (" (%)" if _metric_format(metric) == "pct" else "")


# ---------------------------------------------------------------------- summary table
def _summary_table(res: RunResult) -> dict[str, Any]:
    """Method (and setting) x headline metrics: mean ± std over seeds, the interval where the file
    has one, the labels each row used."""
    summ = summarise(res.records())
    present = list(dict.fromkeys(summ["metric"]))
    wanted = SUMMARY_METRICS.get(res.kind)
    metrics = [m for m in wanted if m in present] if wanted else present
    has_setting = bool((summ["setting"] != "").any())
    names, labels = res.method_names(), res.labels_used()
    columns = [{"label": "method", "num": False}]
    if has_setting:
        columns.append({"label": "setting", "num": False})
    columns.append({"label": "seeds", "num": True})
    columns += [{"label": _header(res.kind, m), "num": True, "metric": m} for m in metrics]
    columns.append({"label": "labels used", "num": False})
    rec = res.records()
    rec = rec[rec["seed"] >= 0]
    seed_counts = rec.groupby(["method", "setting"], sort=False)["seed"].nunique().to_dict()
    rows = []
    for (method, setting), sub in summ.groupby(["method", "setting"], sort=False):
        by_metric = {r.metric: r for r in sub.itertuples(index=False)}
        cells = [_cell(names.get(method, method), "text")]
        if has_setting:
            cells.append(_cell(setting, "text"))
        n_seeds = seed_counts.get((method, setting), 0)
        cells.append(_cell(n_seeds if n_seeds else None, "int"))
        for m in metrics:
            r = by_metric.get(m)
            how = _metric_format(m)
            if r is None:
                cells.append(_cell(None, how))
                continue
            c = _cell(r.mean, how)
            c["attrs"]["data-seeds"] = str(int(r.seeds))
            if r.seeds > 1:
                c["attrs"]["data-std"] = repr(float(r.std))
                c["extra"] = f"± {_fmt(float(r.std), how)}"
            elif _finite(r.ci_low) and _finite(r.ci_high):
                c["attrs"]["data-low"] = repr(float(r.ci_low))
                c["attrs"]["data-high"] = repr(float(r.ci_high))
                c["extra"] = f"[{_fmt(float(r.ci_low), how)}, {_fmt(float(r.ci_high), how)}]"
            cells.append(c)
        cells.append(_cell(labels.get(method, "unknown"), "text"))
        rows.append({"cells": cells, "cls": ""})
    conf = res.raw.get("confidence") if res.kind == "audit" else None
    seeds = res.seeds()
    note = (f"mean ± std (ddof 0) over {len(seeds)} seeds" if len(seeds) > 1 else
            f"in brackets: {100 * float(conf):.0f}% bootstrap interval ({res.raw.get('n_bootstrap', '?')} resamples)"
            if conf else "one run")
    return {"columns": columns, "rows": rows, "note": note}


# ---------------------------------------------------------------------- group tables
def _group_table(gt: GroupTable) -> dict[str, Any]:
    df, formats = gt.table, dict(gt.formats)
    ci = gt.ci
    shown = [c for c in df.columns if not (ci and c in ci)]
    columns = []
    for c in shown:
        how = formats[c]
        columns.append({"label": c + (" (%)" if how == "pct" else ""), "num": how != "text", "key": c, "how": how})
        if ci and c == "accuracy":
            columns.append({"label": "CI (%)", "num": True, "key": "__ci__", "how": "pct"})
    rows = []
    for i, rec in enumerate(df.to_dict(orient="records")):
        cells = []
        for col in columns:
            if col["key"] == "__ci__":
                assert ci is not None  # the CI column is only added when gt.ci is set
                lo, hi = rec[ci[0]], rec[ci[1]]
                if _finite(lo) and _finite(hi):
                    c = _cell(lo, "pct")
                    c["text"] = f"{_fmt(lo, 'pct')}–{_fmt(hi, 'pct')}"
                    c["attrs"].update({"data-low": repr(float(lo)), "data-high": repr(float(hi))})
                    cells.append(c)
                else:
                    cells.append(_cell(None, "pct"))
                continue
            cells.append(_cell(rec[col["key"]], col["how"]))
        worst = gt.worst is not None and i == gt.worst
        if worst:
            cells[0]["marker"] = True
        rows.append({"cells": cells, "cls": "worst" if worst else ""})
    return {"title": gt.title, "columns": columns, "rows": rows}


# ---------------------------------------------------------------------- figures
def _data_uri(fig: Any) -> str:
    """A matplotlib Figure as an embedded SVG ``data:`` URI (deterministic: fixed ids, no date)."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "stratalab", "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figures(res: RunResult) -> list[tuple[str, Any]]:
    """The paper-style figures of one result as (caption, ``matplotlib.figure.Figure``): audit ->
    Chiu et al. Fig. 1 (class vs worst-subgroup accuracy); run d3m -> D3M Fig. 2 (sweep); run
    scaling -> LaBonte et al.'s scaling figure; run george -> GEORGE Table 1 as bars; train ->
    class vs worst-subgroup accuracy on test. None for spectral."""
    from .plots import class_vs_worst_group_figure, d3m_sweep_figure, robust_vs_overall_figure, scaling_figure

    raw, out = res.raw, []
    if res.kind in ("audit", "train"):
        rep = raw if res.kind == "audit" else raw["metrics"].get("test")
        if rep and rep.get("classes"):
            ct = pd.DataFrame(rep["classes"])
            if {"class_name", "accuracy", "worst_group_accuracy"} <= set(ct.columns):
                out.append(("Class accuracy (red) beside the worst subgroup inside each class (black): a gap is hidden "
                            "stratification (Chiu et al., Fig. 1)" + (", test split" if res.kind == "train" else ""),
                            class_vs_worst_group_figure(ct, rep["worst_group_accuracy"], rep["average_accuracy"])))
    elif res.kind == "run d3m":
        sm, sw = pd.DataFrame(raw.get("sweep_mean") or []), pd.DataFrame(raw.get("sweep") or [])
        if not sm.empty and not sw.empty:
            out.append(("D3M Fig. 2: val worst-group accuracy against training examples removed, by removal order "
                        "(mean over seeds, ± 1 std band; star: the A < 0 heuristic)",
                        d3m_sweep_figure(sm, sw, res.dataset)))
    elif res.kind == "run scaling":
        tab = pd.DataFrame(raw.get("table") or [])
        if not tab.empty:
            cfg = raw.get("config") or {}
            methods = list(dict.fromkeys(cfg.get("methods") or tab["method"].tolist()))
            seeds = cfg.get("seeds") or []
            title = (f"{cfg.get('model', '?')} finetuned on {res.dataset} ({len(seeds)} seeds, selected by "
                     f"{cfg.get('select', '?')})")
            out.append(("LaBonte et al. scaling figure: test worst-group accuracy against parameters per "
                        "class-balancing method (mean over seeds, ± 1 std band)", scaling_figure(tab, methods, title)))
    elif res.kind == "run george":
        tab = pd.DataFrame(raw.get("table") or [])
        if not tab.empty:
            out.append(("GEORGE Table 1: robust (worst true subclass) and overall test accuracy per row, mean over "
                        "seeds (± 1 std)", robust_vs_overall_figure(tab, f"GEORGE on {res.dataset}")))
    return out


def _figures_html(res: RunResult) -> list[dict[str, str]]:
    """The figures as captions and data URIs. Names from the file are drawn as plain text (no
    mathtext: a "$" in a data set name is not a formula); a figure that cannot be drawn from an
    unusual file is replaced by a line saying why, and the rest of the report still renders."""
    import matplotlib

    try:
        with matplotlib.rc_context({"text.parse_math": False}):
            return [{"caption": cap, "uri": _data_uri(fig)} for cap, fig in figures(res)]
    except Exception as e:  # noqa: BLE001 - the tables matter more than a figure
        return [{"caption": f"The figure could not be drawn from {res.source} ({type(e).__name__}: {e}).", "uri": ""}]


# ---------------------------------------------------------------------- page
def _settings(res: RunResult) -> dict[str, Any]:
    """What the <details> shows: the invocation, or the scalar settings of a file without one."""
    if res.invocation:
        return res.invocation
    return {k: v for k, v in res.raw.items() if not isinstance(v, (list, dict))}


def _section(i: int, res: RunResult) -> dict[str, Any]:
    seeds = res.seeds()
    return {
        "id": f"r{i}",
        "number": i,
        "kind": res.kind,
        "dataset": res.dataset,
        "source": res.source,
        "path": str(res.path),
        "paper": PAPERS.get(res.kind, res.kind),
        "seeds": ", ".join(map(str, seeds)) if seeds else "none recorded",
        "settings": json.dumps(_settings(res), indent=2, sort_keys=False, default=str),
        "summary": _summary_table(res),
        "figures": _figures_html(res),
        "groups": [_group_table(gt) for gt in res.group_tables()],
    }


def _template() -> Any:
    from importlib.resources import files

    try:
        import jinja2
    except ImportError:  # pragma: no cover - a core dependency
        raise ImportError("the HTML report needs Jinja2: pip install jinja2 (a dependency of stratalab).") from None

    text = files("stratalab.report").joinpath("templates", "report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(text)


def render_html(results: list[RunResult], title: str | None = None) -> str:
    """The report of ``results`` as one self-contained HTML page (a contents list first when there
    are several). Raises ValueError for an empty list or something that is not a RunResult."""
    results = list(results)
    if not results:
        raise ValueError("no result to report; give at least one result file (stratalab ... -o FILE.json).")
    bad = [r for r in results if not isinstance(r, RunResult)]
    if bad:
        raise ValueError(f"render_html takes RunResult objects (stratalab.experiments.load_result), got "
                         f"{type(bad[0]).__name__}.")
    sections = [_section(i, r) for i, r in enumerate(results, 1)]
    if title is None:
        title = (f"stratalab report: {results[0].kind} on {results[0].dataset}" if len(results) == 1
                 else f"stratalab report: {len(results)} results")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return _template().render(title=title, sections=sections, generated=stamp)


def write_html(path: str | os.PathLike[str], results: list[RunResult], title: str | None = None) -> Path:
    """Write the report of ``results`` (RunResult objects, read with
    :func:`stratalab.experiments.load_result`) to ``path`` atomically; returns the path."""
    p = Path(path)
    if p.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"report {p}: unknown format {p.suffix or '(no suffix)'!r}; use .html.")
    page = render_html(list(results), title)
    return write_atomic(p, lambda tmp: tmp.write_text(page, encoding="utf-8"))
