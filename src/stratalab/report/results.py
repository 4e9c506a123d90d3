"""One reader for every result file the ``stratalab`` command writes (``-o FILE.json``).

:func:`load_result` reads a file, recognises its kind and checks it; the :class:`RunResult` it
returns gives the same three views of every kind:

- :meth:`RunResult.records`: a tidy long table, one row per (method, setting, seed, metric), the
  input of ``stratalab bench`` (mean ± std and intervals over seeds and files);
- :meth:`RunResult.group_tables`: the per-group accuracy tables the file holds, worst group marked;
- :meth:`RunResult.labels_used`: which labels (group labels above all) each row used.

Kinds
-----
============  ==========================================================================
kind          written by
============  ==========================================================================
audit         ``stratalab audit PREDS --y .. --pred .. --group .. -o F.json`` (Chiu et al.)
train         ``stratalab train ... -o F.json``
run george    ``stratalab run george ... -o F.json`` (GEORGE, Sohoni et al. Table 1)
run d3m       ``stratalab run d3m ... -o F.json`` (D3M Table 1 and Fig. 2, Jain et al.)
run scaling   ``stratalab run scaling ... -o F.json`` (LaBonte et al. scaling figure)
spectral      ``stratalab spectral ... -o F.json`` (LaBonte et al. spectral imbalance)
============  ==========================================================================

A file with an ``invocation`` dict names its kind in ``invocation["command"]``; audit and spectral
files (and result files from before ``invocation`` existed) are recognised by their keys.

Metric names (one vocabulary for every kind)
--------------------------------------------
A group report's summary metrics are named ``<split>_<metric>``, split ``test`` or ``val``:

====================  ===========================  ===============================================
metric                GroupReport key              also written in files as
====================  ===========================  ===============================================
``*_wga``             ``worst_group_accuracy``     d3m ``test_wga`` / ``val_wga``; scaling
                                                   ``test_wga``; GEORGE ``robust_accuracy`` (test)
``*_average``         ``average_accuracy``         d3m ``test_average``; scaling ``test_avg``;
                                                   GEORGE ``overall_accuracy`` (test)
``*_balanced``        ``balanced_accuracy``        d3m ``test_balanced``
``*_wca``             ``worst_class_accuracy``
``*_weighted_std``    ``weighted_std`` (eq. 5)
``*_macro_std``       ``macro_std`` (eq. 6)
``*_train_weighted``  ``train_weighted_accuracy``
====================  ===========================  ===============================================

GEORGE's "robust accuracy" is exactly the test worst-group accuracy (the minimum over the true test
subclasses) and its "overall accuracy" the test average accuracy, so they are ``test_wga`` and
``test_average`` here (:data:`METRIC_ALIASES` maps every name a file uses to this vocabulary). An
audit does not know which split its predictions come from, so its metrics carry no split prefix
(``wga``, ``average``, ...). Other metrics: ``test_wga_last`` / ``test_average_last`` (scaling: at
the last epoch rather than the selected one), ``n_removed`` (d3m: train examples left out, a count),
``cluster_ari`` / ``cluster_nmi`` (GEORGE's clusters against the true train subclasses),
``rho:<class>`` and ``accuracy_gap:<class>`` (spectral imbalance per class). Accuracies are
fractions in [0, 1] as in the files.

Method names
------------
Lower-case keys of the method registry (``stratalab.train.METHODS``) wherever a row is one of its
methods: ``erm``, ``gdro`` (GEORGE's "GDRO (true subclasses)" too: Group DRO on the true train
groups, selected on val worst-group accuracy), ``jtt``, ``dfr`` (D3M Table 1's "DFR*"), ``rwg``,
``subg``, ``subsetting``, ``upsampling``, ``upweighting``, ``mixture``; plus ``george``, ``d3m`` and
``auto-d3m``. An audit's single row is ``predictions`` (the audited model is not known), a spectral
file's row the training method its source names (else ``features``). :meth:`RunResult.method_names`
gives each key's name as the file prints it.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from .._validation import parse_structured

__all__ = ["RunResult", "GroupTable", "COLUMN_FORMATS", "load_result", "result_from_dict", "summarise", "KINDS", "METRIC_ALIASES",
           "REPORT_METRICS", "RECORD_COLUMNS", "metric_label", "metric_range", "is_fraction_metric", "is_count_metric"]

KINDS = ("audit", "train", "run george", "run d3m", "run scaling", "run cifar-b", "spectral")
RECORD_COLUMNS = ["source", "kind", "dataset", "method", "setting", "seed", "metric", "value", "ci_low", "ci_high"]

# GroupReport summary key -> metric name (without split prefix), in display order
REPORT_METRICS: dict[str, str] = {
    "worst_group_accuracy": "wga",
    "average_accuracy": "average",
    "balanced_accuracy": "balanced",
    "worst_class_accuracy": "wca",
    "weighted_std": "weighted_std",
    "macro_std": "macro_std",
    "train_weighted_accuracy": "train_weighted",
}
# every metric name a result file uses -> the name in records()
METRIC_ALIASES: dict[str, str] = {
    "robust_accuracy": "test_wga",  # GEORGE: min over true test subclasses
    "overall_accuracy": "test_average",  # GEORGE
    "test_avg": "test_average",  # run scaling
    "test_avg_last": "test_average_last",  # run scaling
    "test_wga": "test_wga", "test_wga_last": "test_wga_last", "test_balanced": "test_balanced",
    "test_average": "test_average", "val_wga": "val_wga", "n_removed": "n_removed",
    **{f"{s}_{k}": f"{s}_{v}" for s in ("test", "val") for k, v in REPORT_METRICS.items()},
}
_GEORGE_METHODS = {"ERM": "erm", "GEORGE": "george", "GDRO (true subclasses)": "gdro"}
_BALANCING_NAMES = {"erm": "none (ERM)", "subsetting": "subsetting", "upsampling": "upsampling",
                    "upweighting": "upweighting", "mixture": "mixture"}
_COUNT_METRICS = {"n_removed"}
_PLAIN_METRICS = {"cluster_ari", "cluster_nmi"}
_METRIC_WORDS = {"wga": "worst-group", "average": "average", "balanced": "balanced", "wca": "worst-class",
                 "weighted_std": "WeightedStd", "macro_std": "MacroStd", "train_weighted": "train-weighted",
                 "wga_last": "worst-group, last epoch", "average_last": "average, last epoch"}


def is_count_metric(metric: str) -> bool:
    """Whether ``metric`` counts examples (formatted as an integer, not a percentage)."""
    return metric in _COUNT_METRICS


def is_fraction_metric(metric: str) -> bool:
    """Whether ``metric`` is a fraction in [0, 1] (accuracies, WeightedStd/MacroStd, gaps): shown as a percentage."""
    return not (metric in _COUNT_METRICS or metric in _PLAIN_METRICS or metric.startswith("rho:"))


def metric_range(metric: str) -> tuple[float, float] | None:
    """The values ``metric`` can take, for clipping an interval (an ARI interval of 0.71-1.07 went
    past its maximum); None where unbounded (counts, rho)."""
    if metric.endswith("cluster_ari"):
        return (-1.0, 1.0)
    if metric.endswith("cluster_nmi") or is_fraction_metric(metric):
        return (0.0, 1.0)
    return None


def metric_label(metric: str) -> str:
    """A short human name of a metric, e.g. ``test_wga`` -> "test worst-group"."""
    if metric.startswith("corrupted_"):
        return "corrupted, " + metric_label(metric[len("corrupted_"):])
    if ":" in metric:
        what, cls = metric.split(":", 1)
        return {"rho": "rho", "accuracy_gap": "accuracy gap"}.get(what, what) + f" ({cls})"
    for split in ("test_", "val_"):
        if metric.startswith(split) and metric[len(split):] in _METRIC_WORDS:
            return f"{split[:-1]} {_METRIC_WORDS[metric[len(split):]]}"
    return {"n_removed": "train examples removed", "cluster_ari": "cluster ARI",
            "cluster_nmi": "cluster NMI"}.get(metric, _METRIC_WORDS.get(metric, metric.replace("_", " ")))


# how each column of a group table is shown: "text", "int" (a count), "pct" (a fraction, as a
# percentage) or "num" (any other quantity)
COLUMN_FORMATS: dict[str, str] = {
    "class": "text", "group": "text", "subclass": "text", "minority group": "text", "majority group": "text",
    "n": "int", "train_n": "int", "best cluster": "int",
    "accuracy": "pct", "accuracy_low": "pct", "accuracy_high": "pct", "auroc": "pct", "precision": "pct",
    "recall": "pct", "accuracy minority": "pct", "accuracy majority": "pct", "accuracy gap": "pct",
    "loss": "num", "lambda_1 minority": "num", "lambda_1 majority": "num", "rho": "num",
}


class GroupTable(NamedTuple):
    """One per-group table, a 4-tuple: ``title``; ``table`` (one row per group); ``worst`` (row
    position of the worst group, or None); ``ci`` (the (low, high) interval columns, or None).
    :attr:`formats` tells how each column is shown."""

    title: str
    table: pd.DataFrame
    worst: int | None
    ci: tuple[str, str] | None = None

    @property
    def formats(self) -> dict[str, str]:
        """Column -> "text" | "int" | "pct" | "num" (:data:`COLUMN_FORMATS`; other numeric columns "num")."""
        return {c: COLUMN_FORMATS.get(c, "num" if pd.api.types.is_numeric_dtype(self.table[c]) else "text")
                for c in self.table.columns}


class _Bad(Exception):
    """Internal: a result whose content is not what its kind needs (turned into one ValueError)."""


@dataclass
class RunResult:
    """One result file: ``path``, ``kind`` (one of :data:`KINDS`), ``dataset``, ``invocation``
    (the command and its settings, {} when the file has none) and ``raw`` (the whole JSON dict)."""

    path: Path
    kind: str
    dataset: str
    invocation: dict[str, Any]
    raw: dict[str, Any]
    _records: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    @property
    def source(self) -> str:
        """The file name (the ``source`` column of :meth:`records`)."""
        return self.path.name

    # ------------------------------------------------------------------ records
    def records(self) -> pd.DataFrame:
        """The tidy long table: one row per (method, setting, seed, metric) with columns
        :data:`RECORD_COLUMNS` (``seed`` -1 when the file has none; ``ci_low`` / ``ci_high`` the
        bootstrap interval where the file has one, else NaN). Methods and metrics use the one
        vocabulary of the module docstring, so records of many files and kinds can be stacked."""
        if self._records is None:
            rows = _RECORDS[self.kind](self.raw)
            df = pd.DataFrame(
                [{"source": self.source, "kind": self.kind, "dataset": self.dataset, "method": m, "setting": s,
                  "seed": int(seed), "metric": metric, "value": float(v),
                  "ci_low": float("nan") if ci is None else float(ci[0]),
                  "ci_high": float("nan") if ci is None else float(ci[1])}
                 for m, s, seed, metric, v, ci in rows], columns=RECORD_COLUMNS)
            self._records = df.astype({"seed": "int64", "value": "float64", "ci_low": "float64", "ci_high": "float64"})
        return self._records.copy()

    def summary(self) -> pd.DataFrame:
        """:func:`summarise` of this file's records: mean ± std over seeds per (method, setting, metric)."""
        return summarise(self.records())

    # ------------------------------------------------------------------ group tables
    def group_tables(self) -> list[GroupTable]:
        """The per-group tables of the file, each with its worst group: audit, its groups (Chiu et
        al.); train, val and test; run d3m, the test groups of every method at the first seed; run
        george, the first run's cluster recovery (worst = the subclass its best cluster recalls
        least); spectral, the per-class imbalance (no worst row). Scaling files hold none."""
        return _GROUP_TABLES[self.kind](self.raw)

    # ------------------------------------------------------------------ labels
    def labels_used(self) -> dict[str, str]:
        """Method key -> which labels it used, as the file says (train / val group labels for the
        D3M Table 1 rows); "unknown" where the file does not say."""
        return _LABELS[self.kind](self.raw)

    def method_names(self) -> dict[str, str]:
        """Method key (as in :meth:`records`) -> its name as the file prints it (e.g. "DFR*")."""
        return _NAMES[self.kind](self.raw)

    def seeds(self) -> list[int]:
        """The seeds of the rows (empty when the file has none)."""
        return sorted(s for s in self.records()["seed"].unique().tolist() if s >= 0)


# ---------------------------------------------------------------------- loading
def load_result(path: str | os.PathLike[str]) -> RunResult:
    """Read a result file written by ``stratalab ... -o FILE.json`` (JSON only, never pickle).

    Raises one ValueError naming the file and the fix when it is missing, a folder, not JSON,
    holds NaN or infinity, is not a stratalab result, or lacks what its kind needs.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"result file {p} is a directory; give a .json file written with `stratalab ... -o FILE.json`.")
    if not p.is_file():
        raise ValueError(f"result file {p} does not exist; write one with e.g. `stratalab run george --dataset u-digits -o {p.name}`.")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"result file {p} is not text (not UTF-8); give a .json file written with `stratalab ... -o FILE.json`.") from None
    except OSError as e:
        raise ValueError(f"result file {p} cannot be read ({e.strerror or e}).") from None

    def refuse_constant(name: str) -> Any:
        raise _Bad(name)

    try:
        raw = parse_structured(text, f"result file {p}", parse_constant=refuse_constant)
    except _Bad as e:
        raise ValueError(f"result file {p} holds {e} (not valid JSON); stratalab writes missing numbers as null: "
                         "regenerate the file with the command that wrote it.") from None
    except json.JSONDecodeError as e:
        hint = ("it may be truncated: regenerate it with the command that wrote it" if p.suffix.lower() == ".json" else
                f"a {p.suffix or 'suffix-less'} file? give the .json file written with `stratalab ... -o FILE.json`")
        raise ValueError(f"result file {p} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); {hint}.") from None
    return result_from_dict(raw, p)


def result_from_dict(raw: Any, path: str | os.PathLike[str] = "<dict>") -> RunResult:
    """A :class:`RunResult` from an already parsed result dict (``path`` names it in messages and in
    the ``source`` column). Checks it fully (records, group tables, labels) before returning."""
    p = Path(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{p} is not a stratalab result: it holds a JSON {type(raw).__name__}, not an object; "
                         "give a file written by `stratalab audit|train|run ...|spectral -o FILE.json`.")
    _check_finite(raw, p)
    inv = raw.get("invocation")
    if inv is not None and not isinstance(inv, dict):
        raise ValueError(f"{p}: 'invocation' must be an object (command, dataset, config, seeds), got {type(inv).__name__}.")
    inv = dict(inv or {})
    kind = _kind(raw, inv, p)
    try:
        res = RunResult(path=p, kind=kind, dataset=_dataset(kind, raw, inv), invocation=inv, raw=raw)
        res.records()
        res.group_tables()
        res.labels_used()
        res.method_names()
    except (_Bad, KeyError, TypeError, IndexError, AttributeError, ValueError) as e:
        what = f"missing key {e.args[0]!r}" if isinstance(e, KeyError) else str(e) or type(e).__name__
        raise ValueError(f"{p}: a `{kind}` result that is incomplete or edited ({what}); regenerate it with "
                         f"`stratalab {kind} ... -o {p.name}`.") from None
    return res


def _check_finite(obj: Any, p: Path, where: str = "") -> None:
    """No NaN or infinity anywhere (a dict built in Python may hold them; JSON text cannot)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"{p}: {where or 'a value'} is {obj}; stratalab writes missing numbers as null, so the "
                         "result was not written by it or was edited: regenerate it.")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, p, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_finite(v, p, f"{where}[{i}]")


def _kind(raw: dict[str, Any], inv: dict[str, Any], p: Path) -> str:
    command = inv.get("command")
    if command is not None:
        if command not in KINDS:
            raise ValueError(f"{p} was written by `stratalab {command}`, which this report does not read; "
                             f"it reads results of: {', '.join('stratalab ' + k for k in KINDS)}.")
        return str(command)
    keys = set(raw)
    if {"spectra", "ratios"} <= keys:
        return "spectral"
    if {"groups", "worst_group_accuracy", "average_accuracy"} <= keys:
        return "audit"
    if {"table", "rows", "sweep", "seeds"} <= keys:
        return "run d3m"
    if {"table", "runs", "pretraining"} <= keys:
        return "run scaling"
    if {"table", "runs", "severity_curves"} <= keys:
        return "run cifar-b"
    if {"table", "runs", "labels_used"} <= keys:
        return "run george"
    if {"metrics", "history", "labels_used"} <= keys:
        return "train"
    shown = ", ".join(sorted(map(str, keys))[:8]) or "nothing"
    raise ValueError(f"{p} is not a stratalab result file (its keys: {shown}); give a file written by "
                     "`stratalab audit|train|run george|run d3m|run scaling|spectral ... -o FILE.json`.")


def _dataset(kind: str, raw: dict[str, Any], inv: dict[str, Any]) -> str:
    if kind in ("audit", "spectral"):
        return str(raw.get("source", "unknown"))
    if kind in ("run scaling", "run cifar-b"):
        return str((raw.get("config") or inv.get("config") or {}).get("dataset", "unknown"))
    d = raw.get("dataset")
    if isinstance(d, dict):  # train: the data set's options, with its name
        d = d.get("name")
    return str(d if d is not None else inv.get("dataset", "unknown"))


# ---------------------------------------------------------------------- helpers
Row = tuple[str, str, int, str, float, "tuple[float, float] | None"]


def _num(v: Any, what: str) -> float | None:
    """A number of the file as float (None stays None); anything else is refused by name."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Bad(f"{what} must be a number, got {v!r}")
    return float(v)


def _report_rows(rep: dict[str, Any], prefix: str, method: str, setting: str, seed: int, what: str) -> list[Row]:
    """The summary metrics of one GroupReport dict (with its intervals, if any)."""
    if not isinstance(rep, dict) or "worst_group_accuracy" not in rep:
        raise _Bad(f"{what} is not a group report (no worst_group_accuracy)")
    intervals = rep.get("intervals") or {}
    out: list[Row] = []
    for key, name in REPORT_METRICS.items():
        v = _num(rep.get(key), f"{what}.{key}")
        if v is None:
            continue
        ci = intervals.get(key)
        ci_t = None
        if ci is not None:
            lo, hi = _num(ci[0], f"{what}.intervals.{key}"), _num(ci[1], f"{what}.intervals.{key}")
            ci_t = None if lo is None or hi is None else (lo, hi)
        out.append((method, setting, seed, f"{prefix}{name}", v, ci_t))
    return out


def _canonical(name: str) -> str:
    return _GEORGE_METHODS.get(name, name.lower().rstrip("*").replace(" ", "-"))


def _report_table(rep: dict[str, Any], title: str) -> GroupTable:
    """A GroupReport dict's ``groups`` as a table: class, group, n, accuracy (+ CI, loss, AUROC, train n)."""
    groups = rep["groups"]
    if not isinstance(groups, list):
        raise _Bad("groups must be a list of per-group records")
    rows = []
    for g in groups:
        row = {"class": str(g.get("class_name", g["class"])), "group": str(g.get("group_name", g["group"])),
               "n": int(g["n"]), "accuracy": _num(g["accuracy"], "groups[].accuracy")}
        for k in ("accuracy_low", "accuracy_high", "loss", "auroc", "train_n"):
            if k in g:
                row[k] = _num(g[k], f"groups[].{k}")
        rows.append(row)
    df = pd.DataFrame(rows)
    worst = None
    wg = rep.get("worst_group")
    if isinstance(wg, dict):
        hits = [i for i, g in enumerate(groups) if g.get("class") == wg.get("class") and g.get("group") == wg.get("group")]
        worst = hits[0] if hits else None
    if worst is None and len(df) and df["accuracy"].notna().any():
        worst = int(df["accuracy"].astype(float).idxmin())
    ci = ("accuracy_low", "accuracy_high") if {"accuracy_low", "accuracy_high"} <= set(df.columns) else None
    return GroupTable(title, df, worst, ci)


def _seed_of(d: dict[str, Any], key: str = "seed") -> int:
    s = d.get(key)
    if s is None:
        return -1
    if isinstance(s, bool) or not isinstance(s, int):
        raise _Bad(f"seed must be an integer, got {s!r}")
    return s


def _d(raw: dict[str, Any], key: str, kind: type = dict) -> Any:
    v = raw[key]
    if not isinstance(v, kind):
        raise _Bad(f"{key!r} must be a {'list' if kind is list else 'mapping'}, got {type(v).__name__}")
    return v


# ---------------------------------------------------------------------- audit
def _audit_records(raw: dict[str, Any]) -> list[Row]:
    return _report_rows(raw, "", "predictions", "", -1, "the audit")


def _audit_tables(raw: dict[str, Any]) -> list[GroupTable]:
    conf = raw.get("confidence")
    extra = f", {100 * float(conf):.0f}% bootstrap intervals" if conf else ""
    return [_report_table(raw, f"Accuracy per subgroup of {raw.get('source', 'the predictions')}{extra}")]


# ---------------------------------------------------------------------- train
def _train_cfg(raw: dict[str, Any]) -> dict[str, Any]:
    cfg = raw.get("config") or (raw.get("invocation") or {}).get("config")
    if not isinstance(cfg, dict):
        raise _Bad("no config")
    return cfg


def _train_records(raw: dict[str, Any]) -> list[Row]:
    cfg = _train_cfg(raw)
    method, seed = str(cfg.get("method", "unknown")), _seed_of(cfg)
    out: list[Row] = []
    for split, rep in _d(raw, "metrics").items():
        out += _report_rows(rep, f"{split}_", method, "", seed, f"metrics.{split}")
    return out


def _train_tables(raw: dict[str, Any]) -> list[GroupTable]:
    cfg = _train_cfg(raw)
    name = next(iter(_train_names(raw).values()))
    metrics = _d(raw, "metrics")
    order = [s for s in ("test", "val") if s in metrics] + [s for s in metrics if s not in ("test", "val")]
    return [_report_table(metrics[s], f"{name}, seed {cfg.get('seed', '?')}: {s} accuracy per group") for s in order]


def _train_labels(raw: dict[str, Any]) -> dict[str, str]:
    lu = raw.get("labels_used")
    text = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in lu.items()) if isinstance(lu, dict) and lu else "unknown"
    return {str(_train_cfg(raw).get("method", "unknown")): text}


def _train_names(raw: dict[str, Any]) -> dict[str, str]:
    m = str(_train_cfg(raw).get("method", "unknown"))
    try:
        from ..train.registry import METHODS

        return {m: METHODS[m].title}
    except Exception:  # noqa: BLE001 - a method this version does not know: its key
        return {m: m}


# ---------------------------------------------------------------------- run george
def _george_records(raw: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for run in _d(raw, "runs", list):
        seed = _seed_of(run)
        for name, row in _d(run, "rows").items():
            for key in ("robust_accuracy", "overall_accuracy"):
                v = _num(row.get(key), f"runs[].rows.{name}.{key}")
                if v is not None:
                    out.append((_canonical(name), "", seed, METRIC_ALIASES[key], v, None))
        for key, v in (run.get("recovery_overall") or {}).items():
            v = _num(v, f"runs[].recovery_overall.{key}")
            if v is not None:
                out.append(("george", "", seed, f"cluster_{key}", v, None))
    return out


def _george_tables(raw: dict[str, Any]) -> list[GroupTable]:
    runs = _d(raw, "runs", list)
    if not runs or not _recovery(runs[0]):
        return []
    first = runs[0]
    df = pd.DataFrame([{"subclass": str(r.get("subclass_name", r["subclass"])), "n": int(r["n"]),
                        "best cluster": int(r["best_cluster"]), "precision": _num(r["precision"], "recovery.precision"),
                        "recall": _num(r["recall"], "recovery.recall")} for r in first["recovery"]])
    worst = int(df["recall"].idxmin()) if len(df) else None
    ov = first.get("recovery_overall") or {}
    extra = (f" (ARI {ov['ari']:.3f}, NMI {ov['nmi']:.3f})" if isinstance(ov.get("ari"), (int, float))
             and isinstance(ov.get("nmi"), (int, float)) else "")
    return [GroupTable(f"GEORGE cluster recovery on train, seed {first.get('seed', '?')}{extra}: best cluster of each "
                       "true subclass (worst = lowest recall)", df, worst, None)]


def _recovery(run: dict[str, Any]) -> list[dict[str, Any]]:
    rec = run.get("recovery") or []
    if not isinstance(rec, list):
        raise _Bad("runs[].recovery must be a list")
    return rec


def _george_names(raw: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for run in _d(raw, "runs", list):
        for name in _d(run, "rows"):
            out.setdefault(_canonical(name), name)
    return out


def _george_labels(raw: dict[str, Any]) -> dict[str, str]:
    lu = raw.get("labels_used") if isinstance(raw.get("labels_used"), dict) else {}
    out = {}
    for key, name in _george_names(raw).items():
        if name in lu:
            out[key] = str(lu[name])
        elif key == "erm" and str(lu.get("GEORGE", "")).startswith("class labels only"):
            # the ERM row is GEORGE's step 1, which the file says uses class labels only
            out[key] = "class labels only (GEORGE's step-1 ERM)"
        else:
            out[key] = "unknown"
    return out


# ---------------------------------------------------------------------- run d3m
def _d3m_records(raw: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    rows = _d(raw, "rows", list)
    seeds = raw.get("seeds") or []
    if isinstance(seeds, list) and seeds and all(isinstance(s, dict) and "metrics" in s for s in seeds):
        for s in seeds:
            seed = _seed_of(s)
            for method, splits in _d(s, "metrics").items():
                for split in [x for x in ("test", "val") if x in splits] + [x for x in splits if x not in ("test", "val")]:
                    out += _report_rows(splits[split], f"{split}_", method, "", seed, f"seeds[].metrics.{method}.{split}")
        for r in rows:
            v = _num(r.get("n_removed"), "rows[].n_removed")
            if v is not None:
                out.append((r["method"], "", _seed_of(r), "n_removed", v, None))
        return out
    for r in rows:  # a file without per-seed metrics: the rows of Table 1
        for key in ("test_wga", "test_balanced", "test_average", "val_wga", "n_removed"):
            v = _num(r.get(key), f"rows[].{key}")
            if v is not None:
                out.append((r["method"], "", _seed_of(r), METRIC_ALIASES[key], v, None))
    return out


def _d3m_names(raw: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in _d(raw, "table", list) + _d(raw, "rows", list):
        out.setdefault(str(r["method"]), str(r.get("name", r["method"])))
    return out


def _d3m_labels(raw: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in _d(raw, "table", list) + _d(raw, "rows", list):
        info = r.get("group_info")
        out.setdefault(str(r["method"]), f"group labels train / val: {info}" if info else "unknown")
    return out


def _d3m_tables(raw: dict[str, Any]) -> list[GroupTable]:
    seeds = raw.get("seeds") or []
    if not isinstance(seeds, list) or not seeds or not isinstance(seeds[0], dict) or "metrics" not in seeds[0]:
        return []
    names = _d3m_names(raw)
    first = seeds[0]
    return [_report_table(splits["test"], f"{names.get(m, m)}, seed {first.get('seed', '?')}: test accuracy per group")
            for m, splits in _d(first, "metrics").items() if "test" in splits]


# ---------------------------------------------------------------------- run scaling
def _scaling_records(raw: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for r in _d(raw, "runs", list):
        setting = f"width={_num(r['width'], 'runs[].width'):g}"
        for key in ("test_wga", "test_avg", "test_wga_last", "test_avg_last"):
            v = _num(r.get(key), f"runs[].{key}")
            if v is not None:
                out.append((str(r["method"]), setting, _seed_of(r), METRIC_ALIASES[key], v, None))
    return out


def _scaling_names(raw: dict[str, Any]) -> dict[str, str]:
    return {str(r["method"]): _BALANCING_NAMES.get(str(r["method"]), str(r["method"])) for r in _d(raw, "runs", list)}


def _scaling_labels(raw: dict[str, Any]) -> dict[str, str]:
    select = str((raw.get("config") or {}).get("select", "val_wga"))
    out = {}
    for m in _scaling_names(raw):
        try:
            from ..train.registry import METHODS

            out[m] = f"group labels train / val: {METHODS[m].group_labels(select)} (selected by {select})"
        except Exception:  # noqa: BLE001 - a method this version does not know
            out[m] = "unknown"
    return out


# ---------------------------------------------------------------------- run cifar-b
_CIFAR_B_METRICS = {"accuracy": "test_average", "weighted_std": "test_weighted_std", "macro_std": "test_macro_std",
                    "worst_group_accuracy": "test_wga"}
_CIFAR_B_NAMES = {"flip_crop": "Standard (flip + crop)", "mixup": "Mixup", "cutout": "Cutout", "cutmix": "CutMix",
                  "autoaugment": "AutoAugment", "flowaug": "FlowAug"}


def _cifar_b_name(raw: dict[str, Any], augment: str) -> str:
    """The row's name; FlowAug's says which objective (eqs. 2-4) its config used."""
    if augment == "flowaug":
        from ..experiments.cifar_b import FLOWAUG_ROWS

        cfg = raw.get("config") if isinstance(raw.get("config"), dict) else {}
        return FLOWAUG_ROWS.get(str(cfg.get("flowaug_objective", "gauss+std")), "FlowAug")
    return _CIFAR_B_NAMES.get(augment, augment)


def _cifar_b_records(raw: dict[str, Any]) -> list[Row]:
    """Chiu et al.'s study: per (augmentation, seed) the clean test metrics on the colour subgroups
    and, with corruptions, their mean over every (corruption, severity) as ``corrupted_*``."""
    out: list[Row] = []
    for r in _d(raw, "runs", list):
        m, seed = str(r["augment"]), _seed_of(r)
        clean = r.get("clean")
        if not isinstance(clean, dict):
            raise _Bad("runs[].clean must be a dict of metrics")
        for key, name in _CIFAR_B_METRICS.items():
            v = _num(clean.get(key), f"runs[].clean.{key}")
            if v is not None:
                out.append((m, "", seed, name, v, None))
        cor = r.get("corrupted") or []
        if cor:
            for key, name in _CIFAR_B_METRICS.items():
                vals = [_num(c.get(key), f"runs[].corrupted[].{key}") for c in cor]
                vals = [v for v in vals if v is not None]
                if vals:
                    out.append((m, "", seed, f"corrupted_{name}", float(sum(vals) / len(vals)), None))
    return out


def _cifar_b_tables(raw: dict[str, Any]) -> list[GroupTable]:
    """Per augmentation (first seed): each class's accuracy beside its worst colour subgroup; the
    worst row is the class whose worst subgroup is lowest."""
    out, seen = [], set()
    for r in _d(raw, "runs", list):
        if r["augment"] in seen:
            continue
        seen.add(r["augment"])
        rows = [{"class": str(c["class_name"]), "accuracy": _num(c["accuracy"], "classes[].accuracy"),
                 "worst subgroup": str(c.get("worst_group", "")),
                 "worst subgroup accuracy": _num(c["worst_group_accuracy"], "classes[].worst_group_accuracy")}
                for c in r.get("classes") or []]
        if not rows:
            continue
        df = pd.DataFrame(rows)
        worst = int(df["worst subgroup accuracy"].astype(float).idxmin())
        out.append(GroupTable(f"{_cifar_b_name(raw, str(r['augment']))}, seed {r['seed']}: class accuracy and "
                              "its worst colour subgroup (Chiu et al. Fig. 1/5)", df, worst, None))
    return out


def _cifar_b_names(raw: dict[str, Any]) -> dict[str, str]:
    return {str(r["augment"]): _cifar_b_name(raw, str(r["augment"])) for r in _d(raw, "runs", list)}


def _cifar_b_labels(raw: dict[str, Any]) -> dict[str, str]:
    return {m: "class labels only; colour groups used only to audit the test set" for m in _cifar_b_names(raw)}


# ---------------------------------------------------------------------- spectral
_SPECTRAL_SOURCE = re.compile(r"features of (?P<method>[\w-]+) \(.*seed (?P<seed>\d+)")


def _spectral_who(raw: dict[str, Any]) -> tuple[str, int]:
    m = _SPECTRAL_SOURCE.search(str(raw.get("source", "")))
    return (m["method"], int(m["seed"])) if m else ("features", -1)


def _spectral_records(raw: dict[str, Any]) -> list[Row]:
    method, seed = _spectral_who(raw)
    out: list[Row] = []
    for r in _d(raw, "ratios", list):
        cls = str(r.get("class_name", r["class"]))
        for key in ("rho", "accuracy_gap"):
            v = _num(r.get(key), f"ratios[].{key}")
            if v is not None:
                out.append((method, "", seed, f"{key}:{cls}", v, None))
    return out


def _spectral_tables(raw: dict[str, Any]) -> list[GroupTable]:
    rows = []
    for r in _d(raw, "ratios", list):
        row = {"class": str(r.get("class_name", r["class"])), "minority group": str(r["minority_group"]),
               "majority group": str(r["majority_group"]),
               "lambda_1 minority": _num(r["lambda1_minority"], "ratios[].lambda1_minority"),
               "lambda_1 majority": _num(r["lambda1_majority"], "ratios[].lambda1_majority"),
               "rho": _num(r["rho"], "ratios[].rho")}
        for k, name in (("accuracy_minority", "accuracy minority"), ("accuracy_majority", "accuracy majority"),
                        ("accuracy_gap", "accuracy gap")):
            if k in r:
                row[name] = _num(r[k], f"ratios[].{k}")
        rows.append(row)
    return [GroupTable("Spectral imbalance per class: rho = lambda_1(minority) / lambda_1(majority)",
                       pd.DataFrame(rows), None, None)]


def _spectral_names(raw: dict[str, Any]) -> dict[str, str]:
    m, _ = _spectral_who(raw)
    return {m: m}


def _unknown_labels(names: Any) -> Any:
    return lambda raw: {m: "unknown" for m in names(raw)}


_RECORDS = {"audit": _audit_records, "train": _train_records, "run george": _george_records, "run d3m": _d3m_records,
            "run scaling": _scaling_records, "run cifar-b": _cifar_b_records, "spectral": _spectral_records}
_GROUP_TABLES = {"audit": _audit_tables, "train": _train_tables, "run george": _george_tables, "run d3m": _d3m_tables,
                 "run scaling": lambda raw: [], "run cifar-b": _cifar_b_tables, "spectral": _spectral_tables}
_NAMES = {"audit": lambda raw: {"predictions": "audited predictions"}, "train": _train_names, "run george": _george_names,
          "run d3m": _d3m_names, "run scaling": _scaling_names, "run cifar-b": _cifar_b_names, "spectral": _spectral_names}
_LABELS = {"audit": _unknown_labels(_NAMES["audit"]), "train": _train_labels, "run george": _george_labels,
           "run d3m": _d3m_labels, "run scaling": _scaling_labels, "run cifar-b": _cifar_b_labels,
           "spectral": _unknown_labels(_spectral_names)}


# ---------------------------------------------------------------------- summary over seeds
def summarise(records: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof 0, as the files' own tables) over seeds per (source, kind, dataset,
    method, setting, metric), in the order of first appearance. Columns: those keys, ``seeds``
    (rows averaged), ``mean``, ``std``, ``ci_low``, ``ci_high`` (the file's interval when it is
    a single row with one, else NaN)."""
    keys = ["source", "kind", "dataset", "method", "setting", "metric"]
    cols = keys + ["seeds", "mean", "std", "ci_low", "ci_high"]
    if records.empty:
        return pd.DataFrame(columns=cols)
    g = records.groupby(keys, sort=False)
    out = g.agg(seeds=("value", "size"), mean=("value", "mean"), std=("value", lambda v: float(v.std(ddof=0))),
                ci_low=("ci_low", "first"), ci_high=("ci_high", "first")).reset_index()
    many = out["seeds"] > 1
    out.loc[many, ["ci_low", "ci_high"]] = float("nan")
    return out[cols]
