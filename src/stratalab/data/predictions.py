"""A model's predictions as a table: one row per example with its true label, predicted label and
subgroup (and optionally a class for per-class summaries and a class-1 probability) - the input of
an audit (:func:`stratalab.metrics.group_report`, ``stratalab audit``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import check_input_file
from .._validation import as_label_array

__all__ = ["Predictions", "read_predictions", "PREDICTION_SUFFIXES"]

PREDICTION_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class Predictions:
    """The columns of a predictions file as arrays: ``y`` (true labels), ``pred`` (predicted
    labels), ``group`` (subgroup ids), ``classes`` (the class of per-class summaries, or None) and
    ``score`` (the probability of class 1 of a binary task, or None)."""

    y: np.ndarray
    pred: np.ndarray
    group: np.ndarray
    classes: np.ndarray | None = None
    score: np.ndarray | None = None


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty; write a header line and one row per example.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} could not be read as CSV: {str(e).splitlines()[0]}") from None
    except Exception as e:  # noqa: BLE001 - pyarrow raises its own types for a bad Parquet file
        raise ValueError(f"{path} could not be read as Parquet ({type(e).__name__}: {str(e).splitlines()[0][:160]}).") from None


def _column(df: pd.DataFrame, col: str, path: Path, what: str, *, integer: bool = True) -> np.ndarray:
    if col not in df.columns:
        raise ValueError(f"{path} has no column {col!r} (for {what}); columns are: {', '.join(map(str, df.columns))}.")
    s = df[col]
    if s.isna().any():
        raise ValueError(f"column {col!r} of {path} has {int(s.isna().sum())} missing value(s) (first at row "
                         f"{int(np.flatnonzero(s.isna().to_numpy())[0])}); drop or fill them.")
    v = s.to_numpy()
    if v.dtype.kind not in "iufb":
        bad = int(np.flatnonzero(pd.to_numeric(s, errors="coerce").isna().to_numpy())[0]) if len(v) else 0
        raise ValueError(f"column {col!r} of {path} must hold "
                         + (f"integer labels, row {bad} is {v[bad]!r}; encode labels as 0..K-1 (e.g. pandas.factorize)."
                            if integer else f"numbers, row {bad} is {v[bad]!r}."))
    if not integer:
        v = v.astype(float)
        if not np.isfinite(v).all():
            i = int(np.flatnonzero(~np.isfinite(v))[0])
            raise ValueError(f"column {col!r} of {path} has an infinite value at row {i}.")
        return v
    return as_label_array(v, f"column {col!r} of {path}")  # whole numbers, no NaN/inf


def read_predictions(path: str | os.PathLike[str], *, y: str, pred: str, group: str, classes: str | None = None,
                     score: str | None = None) -> Predictions:
    """Read a CSV or Parquet predictions file (never pickle) and return its named columns as
    :class:`Predictions`. Every problem (a missing file or column, an empty table, missing or
    non-integer labels, a score given for a multi-class task) is one ValueError naming the column
    and the fix.

    >>> p = read_predictions("examples/predictions.csv", y="label", pred="prediction", group="digit")
    >>> p.y.shape == p.pred.shape == p.group.shape
    True
    """
    p = check_input_file(path, "predictions file", PREDICTION_SUFFIXES)
    df = _read_table(p)
    if len(df) == 0:
        raise ValueError(f"{p} has no rows.")
    out = Predictions(y=_column(df, y, p, "y (--y)"), pred=_column(df, pred, p, "pred (--pred)"),
                      group=_column(df, group, p, "group (--group)"),
                      classes=_column(df, classes, p, "classes (--class)") if classes else None,
                      score=_column(df, score, p, "score (--score)", integer=False) if score else None)
    if out.score is not None:
        labels = np.unique(np.concatenate([out.y, out.pred]))
        if labels.size > 2 or labels.max() > 1:
            raise ValueError(f"score column {score!r} (--score) takes the probability of class 1 of a binary task, but "
                             f"y/pred hold {labels.size} "
                             f"labels ({', '.join(map(str, labels[:5]))}{', ...' if labels.size > 5 else ''}); leave the "
                             "score column out for multi-class predictions.")
    return out
