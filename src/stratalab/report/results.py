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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol, Sequence, runtime_checkable

import pandas as pd

from .._validation import parse_structured

__all__ = ["RunResult", "GroupTable", "ResultReader", "Row", "BadResult", "COLUMN_FORMATS", "load_result", "result_from_dict",
           "read_result_file", "summarise", "METRIC_ALIASES", "num", "report_rows", "report_table", "seed_of", "field_of",
           "REPORT_METRICS", "RECORD_COLUMNS", "metric_label", "metric_range", "is_fraction_metric", "is_count_metric"]

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


class BadResult(Exception):
    """A result whose content is not what its kind needs (turned into one ValueError)."""


# one record: (method, setting, seed, metric, value, (ci_low, ci_high) or None)
Row = tuple[str, str, int, str, float, "tuple[float, float] | None"]


@runtime_checkable
class ResultReader(Protocol):
    """The views of one kind of result file (every registered experiment is one:
    :data:`stratalab.experiments.EXPERIMENTS`). Each method reads the whole result dict and raises
    :class:`BadResult` (or KeyError/TypeError) where the dict lacks what the kind needs."""

    command: ClassVar[str]
    recognise: ClassVar[frozenset[str]]  # keys a file of this kind holds when it records no invocation

    def records(self, raw: dict[str, Any]) -> list[Row]: ...
    def group_tables(self, raw: dict[str, Any]) -> list[GroupTable]: ...
    def method_names(self, raw: dict[str, Any]) -> dict[str, str]: ...
    def labels_used(self, raw: dict[str, Any]) -> dict[str, str]: ...
    def dataset_name(self, raw: dict[str, Any], inv: dict[str, Any]) -> str: ...


@dataclass
class RunResult:
    """One result file: ``path``, ``kind`` (its command, e.g. ``run george``), ``dataset``,
    ``invocation`` (the command and its settings, {} when the file has none), ``raw`` (the whole
    JSON dict) and ``reader`` (the kind's views)."""

    path: Path
    kind: str
    dataset: str
    invocation: dict[str, Any]
    raw: dict[str, Any]
    reader: ResultReader = field(repr=False, compare=False)
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
            rows = self.reader.records(self.raw)
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
        return self.reader.group_tables(self.raw)

    # ------------------------------------------------------------------ labels
    def labels_used(self) -> dict[str, str]:
        """Method key -> which labels it used, as the file says (train / val group labels for the
        D3M Table 1 rows); "unknown" where the file does not say."""
        return self.reader.labels_used(self.raw)

    def method_names(self) -> dict[str, str]:
        """Method key (as in :meth:`records`) -> its name as the file prints it (e.g. "DFR*")."""
        return self.reader.method_names(self.raw)

    def seeds(self) -> list[int]:
        """The seeds of the rows (empty when the file has none)."""
        return sorted(s for s in self.records()["seed"].unique().tolist() if s >= 0)


# ---------------------------------------------------------------------- loading
def load_result(path: str | os.PathLike[str], readers: Sequence[ResultReader]) -> RunResult:
    """Read a result file written by ``stratalab ... -o FILE.json`` (JSON only, never pickle), of
    one of the kinds ``readers`` read (:func:`stratalab.experiments.load_result` passes them all).

    Raises one ValueError naming the file and the fix when it is missing, a folder, not JSON,
    holds NaN or infinity, is not a stratalab result, or lacks what its kind needs.
    """
    p = Path(path).expanduser()
    return result_from_dict(read_result_file(p), p, readers)


def read_result_file(path: str | os.PathLike[str]) -> Any:
    """The parsed JSON of a result file, or one ValueError naming the file and the fix."""
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
        raise BadResult(name)

    try:
        raw = parse_structured(text, f"result file {p}", parse_constant=refuse_constant)
    except BadResult as e:
        raise ValueError(f"result file {p} holds {e} (not valid JSON); stratalab writes missing numbers as null: "
                         "regenerate the file with the command that wrote it.") from None
    except json.JSONDecodeError as e:
        hint = ("it may be truncated: regenerate it with the command that wrote it" if p.suffix.lower() == ".json" else
                f"a {p.suffix or 'suffix-less'} file? give the .json file written with `stratalab ... -o FILE.json`")
        raise ValueError(f"result file {p} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); {hint}.") from None
    return raw


def result_from_dict(raw: Any, path: str | os.PathLike[str], readers: Sequence[ResultReader]) -> RunResult:
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
    reader = _reader(raw, inv, p, readers)
    kind = reader.command
    try:
        res = RunResult(path=p, kind=kind, dataset=reader.dataset_name(raw, inv), invocation=inv, raw=raw, reader=reader)
        res.records()
        res.group_tables()
        res.labels_used()
        res.method_names()
    except (BadResult, KeyError, TypeError, IndexError, AttributeError, ValueError) as e:
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


def _reader(raw: dict[str, Any], inv: dict[str, Any], p: Path, readers: Sequence[ResultReader]) -> ResultReader:
    """The reader of the file's kind: the one its invocation names, else the first whose
    :attr:`~ResultReader.recognise` keys the file holds (files without an invocation)."""
    by_command = {r.command: r for r in readers}
    command = inv.get("command")
    if command is not None:
        if command not in by_command:
            raise ValueError(f"{p} was written by `stratalab {command}`, which this report does not read; "
                             f"it reads results of: {', '.join('stratalab ' + k for k in by_command)}.")
        return by_command[command]
    keys = set(raw)
    for r in sorted(readers, key=lambda r: (-len(r.recognise), r.command)):  # the most specific first
        if r.recognise and r.recognise <= keys:
            return r
    shown = ", ".join(sorted(map(str, keys))[:8]) or "nothing"
    raise ValueError(f"{p} is not a stratalab result file (its keys: {shown}); give a file written by "
                     f"`stratalab {'|'.join(by_command)} ... -o FILE.json`.")


# ---------------------------------------------------------------------- helpers


def num(v: Any, what: str) -> float | None:
    """A number of the file as float (None stays None); anything else is refused by name."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BadResult(f"{what} must be a number, got {v!r}")
    return float(v)


def report_rows(rep: dict[str, Any], prefix: str, method: str, setting: str, seed: int, what: str) -> list[Row]:
    """The summary metrics of one GroupReport dict (with its intervals, if any)."""
    if not isinstance(rep, dict) or "worst_group_accuracy" not in rep:
        raise BadResult(f"{what} is not a group report (no worst_group_accuracy)")
    intervals = rep.get("intervals") or {}
    out: list[Row] = []
    for key, name in REPORT_METRICS.items():
        v = num(rep.get(key), f"{what}.{key}")
        if v is None:
            continue
        ci = intervals.get(key)
        ci_t = None
        if ci is not None:
            lo, hi = num(ci[0], f"{what}.intervals.{key}"), num(ci[1], f"{what}.intervals.{key}")
            ci_t = None if lo is None or hi is None else (lo, hi)
        out.append((method, setting, seed, f"{prefix}{name}", v, ci_t))
    return out


def report_table(rep: dict[str, Any], title: str) -> GroupTable:
    """A GroupReport dict's ``groups`` as a table: class, group, n, accuracy (+ CI, loss, AUROC, train n)."""
    groups = rep["groups"]
    if not isinstance(groups, list):
        raise BadResult("groups must be a list of per-group records")
    rows = []
    for g in groups:
        row = {"class": str(g.get("class_name", g["class"])), "group": str(g.get("group_name", g["group"])),
               "n": int(g["n"]), "accuracy": num(g["accuracy"], "groups[].accuracy")}
        for k in ("accuracy_low", "accuracy_high", "loss", "auroc", "train_n"):
            if k in g:
                row[k] = num(g[k], f"groups[].{k}")
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


def seed_of(d: dict[str, Any], key: str = "seed") -> int:
    s = d.get(key)
    if s is None:
        return -1
    if isinstance(s, bool) or not isinstance(s, int):
        raise BadResult(f"seed must be an integer, got {s!r}")
    return s


def field_of(raw: dict[str, Any], key: str, kind: type = dict) -> Any:
    v = raw[key]
    if not isinstance(v, kind):
        raise BadResult(f"{key!r} must be a {'list' if kind is list else 'mapping'}, got {type(v).__name__}")
    return v


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
