"""Disaggregated (per-subgroup) classification metrics.

The unit of every table here is a *cell*: one (class, group) pair that occurs in the data. When
group ids are already unique per class (GEORGE subclasses, Waterbirds groups ``2*y + place``) a cell
is just a group; when a group id is shared by several classes (the background colours of CIFAR-10-B)
the cells are the (class, colour) pairs, which is what "subgroup accuracy" means in Chiu et al.

All computations are vectorised with ``np.bincount`` over a cell index: there is no Python loop over
examples or over groups, so a report on 1M predictions and 1,000 groups takes tens of milliseconds
(see ``benchmarks/metrics_speed.py``).

References
----------
- Sagawa et al., "Distributionally Robust Neural Networks for Group Shifts", ICLR 2020
  (worst-group accuracy; the train-proportion-weighted average used for Waterbirds).
- Chiu, Chen, Ma, "Better May Not Be Fairer" (WeightedStd, eq. 5; MacroStd, eq. 6).
- Sohoni et al., "No Subclass Left Behind", NeurIPS 2020 (robust accuracy = min over subclasses;
  subclass AUROC against the other class).
- Tsirigotis et al., "Group Robust Classification Without Any Group Information", NeurIPS 2023
  (bias-unsupervised validation score).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._validation import as_label_array, check_fits_in_memory, check_probabilities, check_random_state

__all__ = [
    "GroupReport",
    "group_report",
    "weighted_std",
    "macro_std",
    "bias_unsupervised_score",
]


def _check_cells(values: Any, weights: Any) -> tuple[np.ndarray, np.ndarray]:
    """``values`` and ``weights`` as 1-D float arrays of equal length: finite, weights >= 0."""
    try:
        s = np.asarray(values, dtype=np.float64)
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"values and weights must be numbers ({e}).") from None
    if s.shape != w.shape or s.ndim != 1:
        raise ValueError(f"values and weights must be 1-D of equal length, got {s.shape} and {w.shape}.")
    if not np.isfinite(s).all():
        raise ValueError("values contains NaN or infinite values; pass one finite accuracy per subgroup.")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and non-negative (the number of examples of each subgroup).")
    return s, w


def weighted_std(values: Any, weights: Any) -> float:
    """Weighted standard deviation of subgroup accuracies, eq. (5) of Chiu et al.

    ``sigma_w = sqrt( sum_i w_i (s_i - s_bar)^2 / (sum_i w_i - 1) )`` with ``s_bar`` the
    ``w``-weighted mean and ``w_i`` the number of examples of subgroup ``i`` (frequency weights,
    hence the ``- 1``). No subgroup, one subgroup, or a total weight of at most one has no spread:
    0.0. The result is in the units of ``values`` (fractions here; the paper prints percentages).
    """
    s, w = _check_cells(values, weights)
    return float(_weighted_std_rows(s[None, :], w)[0])


def _weighted_std_rows(s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Eq. (5) for each row of ``s`` (shape (B, K)) with shared weights ``w`` (K,). Row-wise
    reductions only, so a row's result does not depend on the other rows (the bootstrap relies on
    this to give the same intervals whatever its chunk size)."""
    total = w.sum()
    if s.shape[1] <= 1 or total <= 1:
        return np.zeros(s.shape[0])
    mean = (s * w).sum(axis=1, keepdims=True) / total
    var = ((s - mean) ** 2 * w).sum(axis=1) / (total - 1.0)
    return np.sqrt(np.maximum(var, 0.0))


def macro_std(values: Any, weights: Any, cell_class: Any) -> float:
    """MacroStd, eq. (6) of Chiu et al.: ``sqrt( mean_c sigma_w^(c)^2 )``.

    ``sigma_w^(c)`` is the :func:`weighted_std` of the subgroup accuracies inside class ``c``;
    a class with a single subgroup contributes 0, and no subgroup at all gives 0.0.
    """
    s, w = _check_cells(values, weights)
    c = as_label_array(cell_class, "cell_class", n=s.shape[0])
    if s.size == 0:
        return 0.0
    return float(_macro_std_rows(s[None, :], w, _ClassSegments(c))[0])


class _ClassSegments:
    """Cells grouped by class, for per-class sums with ``np.add.reduceat`` (no cells x classes
    one-hot matrix, whose size would be K x C).

    ``order`` sorts the cells by class (None when they already are, as in :func:`group_report`,
    whose cells come sorted by (class, group)); ``starts`` is the first sorted cell of each class
    and ``sizes`` the number of cells of each class, classes in increasing order of id.
    """

    def __init__(self, cell_class: np.ndarray) -> None:
        c = np.asarray(cell_class)
        if c.size and (np.diff(c) < 0).any():
            self.order: np.ndarray | None = np.argsort(c, kind="stable")
            c = c[self.order]
        else:
            self.order = None
        self.starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]]) if c.size else np.zeros(0, dtype=np.intp)
        self.sizes = np.diff(np.r_[self.starts, c.size])

    def sort(self, a: np.ndarray) -> np.ndarray:
        """``a`` (..., K) with its last axis in class order."""
        return a if self.order is None else a[..., self.order]

    def sums(self, a: np.ndarray) -> np.ndarray:
        """Per-class sums over the last axis of a class-sorted ``a``: (..., C)."""
        return np.add.reduceat(a, self.starts, axis=-1)


def _class_weighted_std_rows(s: np.ndarray, w: np.ndarray, seg: _ClassSegments) -> np.ndarray:
    """Per-class WeightedStd for each row of ``s`` (B, K): returns (B, n_classes_present), ordered by class id."""
    s, w = seg.sort(s), seg.sort(w)
    wsum = seg.sums(w)  # (C,)
    mean = seg.sums(s * w) / np.where(wsum > 0, wsum, 1.0)  # (B, C)
    dev2 = (s - np.repeat(mean, seg.sizes, axis=1)) ** 2 * w  # (B, K)
    denom = wsum - 1.0
    ok = (seg.sizes > 1) & (denom > 0)
    var = np.where(ok, seg.sums(dev2) / np.where(ok, denom, 1.0), 0.0)
    return np.sqrt(np.maximum(var, 0.0))


def _macro_std_rows(s: np.ndarray, w: np.ndarray, seg: _ClassSegments) -> np.ndarray:
    per_class = _class_weighted_std_rows(s, w, seg)
    return np.sqrt((per_class**2).mean(axis=1))


@dataclass
class GroupReport:
    """Result of :func:`group_report`. Accuracies are fractions in [0, 1].

    Attributes
    ----------
    table : DataFrame
        One row per (class, group) cell: ``class, group, class_name, group_name, n, correct,
        accuracy`` and, where available, ``loss``, ``auroc``, ``train_n``, ``accuracy_low``,
        ``accuracy_high``.
    class_table : DataFrame
        One row per class: ``class, class_name, n, accuracy, n_groups, worst_group,
        worst_group_accuracy, weighted_std``.
    average_accuracy, balanced_accuracy, worst_group_accuracy, worst_class_accuracy,
    weighted_std, macro_std : float
        Summary metrics (see :func:`group_report`).
    train_weighted_accuracy : float or None
        Cell accuracies weighted by the train proportions (the Waterbirds convention), when
        ``train_group_counts`` was given.
    intervals : dict
        ``metric -> (low, high)`` bootstrap percentile intervals, when requested.
    missing_groups : list
        Groups that were expected (named, or with train counts) but have no evaluated example.
    """

    table: pd.DataFrame
    class_table: pd.DataFrame
    average_accuracy: float
    balanced_accuracy: float
    worst_group_accuracy: float
    worst_group: tuple[int, int]
    worst_class_accuracy: float
    weighted_std: float
    macro_std: float
    train_weighted_accuracy: float | None = None
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    confidence: float | None = None
    n_bootstrap: int = 0
    missing_groups: list[Any] = field(default_factory=list)

    SUMMARY_KEYS = (
        "average_accuracy",
        "balanced_accuracy",
        "worst_group_accuracy",
        "worst_class_accuracy",
        "weighted_std",
        "macro_std",
        "train_weighted_accuracy",
    )

    @property
    def n(self) -> int:
        return int(self.table["n"].sum())

    def summary(self) -> dict[str, float | None]:
        """The scalar metrics as a dict (fractions)."""
        return {k: getattr(self, k) for k in self.SUMMARY_KEYS}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the summary metrics, ``groups`` (one dict per cell) and ``classes``."""
        out: dict[str, Any] = {k: _json_float(v) for k, v in self.summary().items()}
        out["worst_group"] = {"class": int(self.worst_group[0]), "group": int(self.worst_group[1])}
        out["n"] = self.n
        out["groups"] = _records(self.table)
        out["classes"] = _records(self.class_table)
        out["missing_groups"] = [_json_scalar(g) for g in self.missing_groups]
        if self.intervals:
            out["intervals"] = {k: [_json_float(a), _json_float(b)] for k, (a, b) in self.intervals.items()}
            out["confidence"] = self.confidence
            out["n_bootstrap"] = self.n_bootstrap
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GroupReport":
        """The report back from :meth:`to_dict` (e.g. a stored grid task's result), so that
        ``GroupReport.from_dict(r.to_dict()).to_dict() == r.to_dict()``. Missing values (JSON null)
        come back as NaN."""
        try:
            intervals = {k: (_nan(a), _nan(b)) for k, (a, b) in d.get("intervals", {}).items()}
            twa = d.get("train_weighted_accuracy")
            return cls(table=pd.DataFrame(d["groups"]), class_table=pd.DataFrame(d["classes"]),
                       average_accuracy=_nan(d["average_accuracy"]), balanced_accuracy=_nan(d["balanced_accuracy"]),
                       worst_group_accuracy=_nan(d["worst_group_accuracy"]),
                       worst_group=(int(d["worst_group"]["class"]), int(d["worst_group"]["group"])),
                       worst_class_accuracy=_nan(d["worst_class_accuracy"]), weighted_std=_nan(d["weighted_std"]),
                       macro_std=_nan(d["macro_std"]), train_weighted_accuracy=None if twa is None else float(twa),
                       intervals=intervals, confidence=d.get("confidence"), n_bootstrap=int(d.get("n_bootstrap", 0)),
                       missing_groups=list(d.get("missing_groups", [])))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a group report dict (GroupReport.to_dict): {type(e).__name__} {e}") from None


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _json_float(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _json_scalar(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return _json_float(v)
    if isinstance(v, tuple):
        return [_json_scalar(x) for x in v]
    return v


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _json_scalar(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def _cell_index(cls: np.ndarray, grp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Map each example to a dense cell id. Returns (cell_of_example, cell_class, cell_group, cell_n)."""
    n = cls.shape[0]
    gspan = int(grp.max()) + 1 if n else 1
    cspan = int(cls.max()) + 1 if n else 1
    if cspan * gspan <= max(4 * n, 1 << 16):
        key = cls * gspan + grp
        counts = np.bincount(key, minlength=cspan * gspan)
        present = np.flatnonzero(counts)
        lut = np.full(cspan * gspan, -1, dtype=np.int64)
        lut[present] = np.arange(present.size)
        cell = lut[key]
        return cell, present // gspan, present % gspan, counts[present]
    # Sparse ids (e.g. hashed group ids): fall back to a sort.
    pairs = np.stack([cls, grp], axis=1)
    uniq, cell, counts = np.unique(pairs, axis=0, return_inverse=True, return_counts=True)
    return cell.reshape(-1), uniq[:, 0], uniq[:, 1], counts


def _train_weights(
    train_group_counts: Mapping[Any, float] | Sequence[float] | np.ndarray,
    cell_class: np.ndarray,
    cell_group: np.ndarray,
) -> tuple[np.ndarray, list[Any]]:
    """Train counts per evaluated cell, and the train groups absent from evaluation."""
    if not isinstance(train_group_counts, Mapping) and hasattr(train_group_counts, "items") and hasattr(train_group_counts, "index"):
        train_group_counts = dict(train_group_counts.items())  # a pandas Series: keyed by its index, not by position
    if isinstance(train_group_counts, Mapping):
        mapping = {_count_key(k): _count_value(v) for k, v in train_group_counts.items()}
    else:
        try:
            arr = np.asarray(train_group_counts, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("train_group_counts must hold numbers: a 1-D array of counts indexed by group, "
                             "or a dict {group: count}.") from None
        if arr.ndim != 1:
            raise ValueError("train_group_counts must be a 1-D array indexed by group, or a dict.")
        mapping = {i: _count_value(v) for i, v in enumerate(arr)}
    by_cell = any(isinstance(k, tuple) for k in mapping)
    keys: list[int | tuple[int, int]]
    if by_cell:
        keys = [(int(c), int(g)) for c, g in zip(cell_class, cell_group)]
    else:
        groups_classes: dict[int, set[int]] = {}
        for c, g in zip(cell_class, cell_group):
            groups_classes.setdefault(int(g), set()).add(int(c))
        shared = [g for g, cs in groups_classes.items() if len(cs) > 1]
        if shared:
            raise ValueError(
                f"group {shared[0]} occurs in several classes, so train_group_counts keyed by group is "
                "ambiguous; key it by (class, group) tuples instead."
            )
        keys = [int(g) for g in cell_group]
    missing_in_train = [k for k in keys if k not in mapping]
    if missing_in_train:
        raise ValueError(
            f"train_group_counts has no entry for evaluated group {missing_in_train[0]}; "
            "give a count (possibly 0) for every group."
        )
    w = np.array([mapping[k] for k in keys], dtype=np.float64)
    seen = set(keys)
    absent = sorted((k for k, v in mapping.items() if v > 0 and k not in seen), key=lambda k: (isinstance(k, tuple), k))
    return w, absent


def _count_key(k: Any) -> int | tuple[int, int]:
    """A key of ``train_group_counts``: a group id, or a (class, group) tuple of ids."""
    if isinstance(k, tuple) and len(k) == 2:
        return (_int_key(k[0], k), _int_key(k[1], k))
    return _int_key(k, k)


def _int_key(x: Any, key: Any) -> int:
    if isinstance(x, (numbers.Integral, np.integer)) and not isinstance(x, (bool, np.bool_)):
        return int(x)
    if isinstance(x, (float, np.floating)) and math.isfinite(x) and float(x).is_integer():
        return int(x)  # e.g. the float index of value_counts() on a float column
    raise ValueError(f"train_group_counts keys must be integer group ids or (class, group) tuples of ids, got {key!r}.")


def _count_value(v: Any) -> float:
    try:
        out = float(v)
    except (TypeError, ValueError):
        out = float("nan")
    if not math.isfinite(out) or out < 0:
        raise ValueError(f"train_group_counts must hold finite, non-negative counts, got {v!r}.")
    return out


def group_report(
    y_true: Any,
    y_pred: Any,
    groups: Any,
    *,
    classes: Any = None,
    train_group_counts: Mapping[Any, float] | Sequence[float] | np.ndarray | None = None,
    y_score: Any = None,
    class_names: Sequence[str] | None = None,
    group_names: Sequence[str] | None = None,
    n_bootstrap: int = 0,
    confidence: float = 0.95,
    random_state: int | np.random.Generator | None = 0,
) -> GroupReport:
    """Disaggregate classification accuracy over subgroups.

    Parameters
    ----------
    y_true, y_pred : array of shape (n,)
        Integer class labels and predictions. ``y_pred`` may be None when ``y_score`` has shape
        (n, C); the prediction is then its arg-max.
    groups : array of shape (n,)
        Integer subgroup ids (0..G-1). Combined with the class into (class, group) cells.
    classes : array of shape (n,), optional
        The class each example belongs to for the per-class summaries (worst-class accuracy,
        worst subgroup per class, MacroStd). Defaults to ``y_true``.
    train_group_counts : dict or array, optional
        Number of *training* examples per group (array indexed by group id, a dict
        ``{group: n}``, or ``{(class, group): n}`` when groups are shared across classes). Gives
        ``train_weighted_accuracy`` = sum over cells of train proportion x test accuracy
        (Sagawa et al.'s Waterbirds convention) and a ``train_n`` column.
    y_score : array of shape (n,) or (n, C), optional
        Probabilities: of class 1 for binary tasks (then ``y_true`` must be 0/1), or of every
        class. Adds per-cell mean cross-entropy ``loss`` and, for binary tasks, per-cell ``auroc``:
        the AUROC of the cell's examples against all examples of the other class (Sohoni et al.'s
        subclass AUROC). ``auroc`` is NaN when ``y_true`` holds a single class (no other class to
        rank against).
    class_names, group_names : sequence of str, optional
        Names for class and group ids, used in tables. Named groups with no example are reported
        in ``missing_groups``.
    n_bootstrap : int, default 0
        If > 0, adds percentile confidence intervals (level ``confidence``) for every summary
        metric and per-cell accuracy: a bootstrap stratified by cell, drawn in closed form
        (Binomial(n, c/n) / n per cell of n examples, c correct) in chunks of about 64 MB
        (:func:`_bootstrap` says how, and why intervals of a minimum or a spread need not contain
        the point estimate).
    random_state : int, Generator or None
        Seed of the bootstrap (a non-negative integer, a ``numpy.random.Generator`` or None).

    Returns
    -------
    GroupReport
        With ``average_accuracy`` (over examples), ``balanced_accuracy`` (unweighted mean over
        cells), ``worst_group_accuracy`` (min over cells), ``worst_class_accuracy`` (min over
        classes of the class accuracy), ``weighted_std`` (eq. 5 of Chiu et al. over all cells,
        weights = cell sizes) and ``macro_std`` (eq. 6: root mean square of the per-class
        WeightedStd).

    Edge cases
    ----------
    A cell with one example has accuracy 0 or 1 and counts like any other. A class with a
    single subgroup has WeightedStd 0. A group that is named in ``group_names`` or has a positive
    count in ``train_group_counts`` but has no evaluated example is listed in
    ``missing_groups`` with a warning; it is excluded from every summary (never counted as 0 or 1),
    and ``train_weighted_accuracy`` is then NaN because its weight has no accuracy to go with it.
    """
    y_true_arr, y_pred_arr, grp, cls, scores = _check_report_inputs(
        y_true, y_pred, groups, classes, y_score, class_names, group_names, n_bootstrap, confidence)
    correct = (y_true_arr == y_pred_arr).astype(np.float64)
    cell, cell_class, cell_group, cell_n = _cell_index(cls, grp)
    cell_correct = np.bincount(cell, weights=correct, minlength=cell_n.shape[0])
    cell_acc = cell_correct / cell_n
    table = _cell_table(cell_class, cell_group, cell_n, cell_correct, class_names, group_names)
    if scores is not None:
        table["loss"] = _cell_loss(scores, y_true_arr, cell, cell_n)
        n_score_classes = 2 if scores.ndim == 1 else scores.shape[1]
        if n_score_classes == 2 and set(np.unique(y_true_arr)) <= {0, 1}:
            pos = scores if scores.ndim == 1 else scores[:, 1]
            table["auroc"] = _cell_auroc(pos, y_true_arr, cell, cell_n)
    seg = _ClassSegments(cell_class)
    class_table = _class_table(cell_class, cell_group, cell_n, cell_correct, seg, class_names)
    worst = int(np.argmin(cell_acc))
    w = cell_n.astype(np.float64)
    report = GroupReport(
        table=table,
        class_table=class_table,
        average_accuracy=float(correct.mean()),
        balanced_accuracy=float(cell_acc.mean()),
        worst_group_accuracy=float(cell_acc[worst]),
        worst_group=(int(cell_class[worst]), int(cell_group[worst])),
        worst_class_accuracy=float(class_table["accuracy"].min()),
        weighted_std=float(_weighted_std_rows(cell_acc[None, :], w)[0]),
        macro_std=float(_macro_std_rows(cell_acc[None, :], w, seg)[0]),
    )
    _expected_groups(report, cell_class, cell_group, cell_acc, group_names, train_group_counts)
    if n_bootstrap:
        _bootstrap(report, cell_n, cell_correct, seg, n_bootstrap, confidence, random_state)
    return report


def _check_report_inputs(y_true: Any, y_pred: Any, groups: Any, classes: Any, y_score: Any, class_names: Any,
                         group_names: Any, n_bootstrap: Any,
                         confidence: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`group_report`'s arguments checked: labels, predictions (or the arg-max of the
    scores), groups and classes as int64 arrays of one length, the scores, and the options."""
    y_true_arr = as_label_array(y_true, "y_true")
    n = y_true_arr.shape[0]
    if n == 0:
        raise ValueError("y_true is empty: there are no predictions to evaluate.")
    scores = None if y_score is None else check_probabilities(y_score, n)
    if y_pred is None:
        if scores is None or scores.ndim != 2:
            raise ValueError("y_pred is None: pass predictions, or y_score of shape (n, C) to take its arg-max.")
        y_pred_arr = scores.argmax(axis=1).astype(np.int64)
    else:
        y_pred_arr = as_label_array(y_pred, "y_pred", n=n)
    grp = as_label_array(groups, "groups", n=n)
    cls = y_true_arr if classes is None else as_label_array(classes, "classes", n=n)
    if not isinstance(confidence, numbers.Real) or isinstance(confidence, (bool, np.bool_)):
        raise TypeError(f"confidence must be a number in (0, 1), e.g. 0.95; got {confidence!r}.")
    if not 0 < confidence < 1:  # type: ignore[operator]  # typeshed's numbers.Real declares no __gt__ for the reflected 0 < x
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence}.")
    if not isinstance(n_bootstrap, (numbers.Integral, np.integer)) or isinstance(n_bootstrap, (bool, np.bool_)):
        raise TypeError(f"n_bootstrap must be an integer number of resamples (0 = none, e.g. 1000); got {n_bootstrap!r}.")
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0 (0 = no intervals), got {n_bootstrap}.")
    # one float per resample for each of up to 7 summaries, plus the ~64 MB working chunk
    check_fits_in_memory(7 * 8 * float(n_bootstrap) + _BOOTSTRAP_CHUNK_BYTES, f"n_bootstrap={n_bootstrap}",
                         "ask for fewer resamples (10,000 give percentile intervals to about 0.1 point)")
    for arg, names in (("class_names", class_names), ("group_names", group_names)):
        if isinstance(names, (str, bytes)):
            raise TypeError(f"{arg} must be a sequence of names, one per id, not a single string ({names!r}).")
    return y_true_arr, y_pred_arr, grp, cls, scores


def _cell_table(cell_class: np.ndarray, cell_group: np.ndarray, cell_n: np.ndarray, cell_correct: np.ndarray,
                class_names: Sequence[str] | None, group_names: Sequence[str] | None) -> pd.DataFrame:
    """One row per (class, group) cell: ids, names, size, correct and accuracy."""
    return pd.DataFrame(
        {
            "class": cell_class.astype(np.int64),
            "group": cell_group.astype(np.int64),
            "class_name": _names(cell_class, class_names, "class_names"),
            "group_name": _names(cell_group, group_names, "group_names"),
            "n": cell_n.astype(np.int64),
            "correct": cell_correct.astype(np.int64),
            "accuracy": cell_correct / cell_n,
        }
    )


def _class_table(cell_class: np.ndarray, cell_group: np.ndarray, cell_n: np.ndarray, cell_correct: np.ndarray,
                 seg: "_ClassSegments", class_names: Sequence[str] | None) -> pd.DataFrame:
    """One row per class: size, accuracy, its number of groups, its worst group and WeightedStd."""
    cell_acc = cell_correct / cell_n
    class_ids, cell_ci = np.unique(cell_class, return_inverse=True)
    n_classes = class_ids.size
    class_n = np.bincount(cell_ci, weights=cell_n, minlength=n_classes)
    class_correct = np.bincount(cell_ci, weights=cell_correct, minlength=n_classes)
    order = np.lexsort((cell_acc, cell_ci))  # by class, then accuracy ascending
    worst_cell_of_class = order[np.searchsorted(cell_ci[order], np.arange(n_classes))]
    return pd.DataFrame(
        {
            "class": class_ids.astype(np.int64),
            "class_name": _names(class_ids, class_names, "class_names"),
            "n": class_n.astype(np.int64),
            "accuracy": class_correct / class_n,
            "n_groups": np.bincount(cell_ci, minlength=n_classes).astype(np.int64),
            "worst_group": cell_group[worst_cell_of_class].astype(np.int64),
            "worst_group_accuracy": cell_acc[worst_cell_of_class],
            "weighted_std": _class_weighted_std_rows(cell_acc[None, :], cell_n.astype(float), seg)[0],
        }
    )


def _expected_groups(report: GroupReport, cell_class: np.ndarray, cell_group: np.ndarray, cell_acc: np.ndarray,
                     group_names: Sequence[str] | None, train_group_counts: Any) -> None:
    """The train-weighted accuracy and the groups expected (named, or counted in train) but
    never evaluated: listed in ``missing_groups`` with one warning."""
    missing: list[Any] = []
    if group_names is not None:
        seen = set(int(g) for g in cell_group)
        missing.extend(g for g in range(len(group_names)) if g not in seen)
    if train_group_counts is not None:
        tw, absent = _train_weights(train_group_counts, cell_class, cell_group)
        report.table["train_n"] = tw
        missing.extend(a for a in absent if a not in missing)
        if absent:
            report.train_weighted_accuracy = float("nan")
        elif tw.sum() <= 0:
            raise ValueError("train_group_counts sum to zero over the evaluated groups.")
        else:
            report.train_weighted_accuracy = float((tw * cell_acc).sum() / tw.sum())
    if missing:
        report.missing_groups = missing
        warnings.warn(
            f"{len(missing)} expected group(s) have no evaluated example ({missing[:5]}); they are "
            "excluded from the summaries. Check the split or the group column.",
            UserWarning,
            stacklevel=3,
        )


def _names(ids: np.ndarray, names: Sequence[str] | None, arg: str) -> list[str]:
    if names is None:
        return [str(int(i)) for i in ids]
    names = list(names)
    if ids.size and int(ids.max()) >= len(names):
        raise ValueError(
            f"{arg} has {len(names)} entries but label {int(ids.max())} occurs; "
            f"give one name per id 0..{int(ids.max())}."
        )
    return [str(names[int(i)]) for i in ids]


def _cell_loss(scores: np.ndarray, y: np.ndarray, cell: np.ndarray, cell_n: np.ndarray) -> np.ndarray:
    if scores.ndim == 1:
        if int(y.max()) > 1:
            raise ValueError(
                f"y_score has shape (n,), the probability of class 1 of a binary task, but y_true has label "
                f"{int(y.max())}; pass y_score of shape (n, C) with one probability column per class."
            )
        p_true = np.where(y == 1, scores, 1.0 - scores)
    else:
        if int(y.max()) >= scores.shape[1]:
            raise ValueError(f"y_score has {scores.shape[1]} columns but label {int(y.max())} occurs.")
        p_true = scores[np.arange(y.shape[0]), y]
    nll = -np.log(np.clip(p_true, 1e-12, 1.0))
    return np.bincount(cell, weights=nll, minlength=cell_n.size) / cell_n


def _cell_auroc(pos_score: np.ndarray, y: np.ndarray, cell: np.ndarray, cell_n: np.ndarray) -> np.ndarray:
    """AUROC of each cell against all examples of the other class (Mann-Whitney, ties count 1/2).

    For a positive example with score s, its contribution is the fraction of negatives scored
    below s (plus half the ties); a cell's AUROC is the mean contribution over its examples, so
    one ``searchsorted`` and one ``bincount`` give every cell at once.
    """
    neg = np.sort(pos_score[y == 0])
    posv = np.sort(pos_score[y == 1])
    contrib = np.full(y.shape[0], np.nan)
    if neg.size:
        s = pos_score[y == 1]
        lo = np.searchsorted(neg, s, side="left")
        hi = np.searchsorted(neg, s, side="right")
        contrib[y == 1] = (lo + 0.5 * (hi - lo)) / neg.size
    if posv.size:
        s = pos_score[y == 0]
        lo = np.searchsorted(posv, s, side="left")
        hi = np.searchsorted(posv, s, side="right")
        contrib[y == 0] = (posv.size - hi + 0.5 * (hi - lo)) / posv.size
    out = np.full(cell_n.size, np.nan)
    valid = ~np.isnan(contrib)
    sums = np.bincount(cell[valid], weights=contrib[valid], minlength=cell_n.size)
    cnt = np.bincount(cell[valid], minlength=cell_n.size)
    np.divide(sums, cnt, out=out, where=cnt > 0)
    return out


# Working memory of one chunk of bootstrap resamples (a handful of float64 (rows, cells) arrays).
_BOOTSTRAP_CHUNK_BYTES = 64 * 2**20
_BOOTSTRAP_ARRAYS = 8  # (rows, cells) arrays alive at once while a chunk's summaries are computed


def _bootstrap(
    report: GroupReport,
    cell_n: np.ndarray,
    cell_correct: np.ndarray,
    seg: _ClassSegments,
    n_bootstrap: int,
    confidence: float,
    random_state: int | np.random.Generator | None,
) -> None:
    """Percentile intervals from ``n_bootstrap`` cell-stratified resamples, drawn in chunks.

    Stratified by cell (each cell keeps its size), a resample of a cell of n examples with c
    correct is exactly Binomial(n, c/n) / n, so it is drawn in closed form without resampling
    rows; per-cell intervals come from per-cell histograms of the resampled counts, so extra
    memory is O(chunk + n + 56 bytes x n_bootstrap) and the intervals do not depend on the chunk
    size. Intervals of the accuracies (average, balanced, per cell, train-weighted: unbiased
    under resampling) contain the point estimate in practice (with a hundred resamples or more);
    those of worst-group / worst-class accuracy and of the two stds need not: a minimum or a
    spread of noisy resampled accuracies is biased (down, resp. up), so e.g. many cells of equal
    accuracy give a WeightedStd of 0 whose interval lies above 0.

    Resample ``b`` is one row of Binomial(cell_n, cell accuracy) counts; rows are drawn in order
    from one generator, so chunking does not change the draws, and every summary of a row is a
    row-wise reduction, so it does not change the summaries either. Each summary keeps its
    ``n_bootstrap`` values (one float each) for ``np.quantile``; per-cell accuracies are kept as a
    histogram of the resampled counts (``sum(cell_n) + n_cells`` integers), from which the same
    order statistics, hence the same interval, are read as from the full (n_bootstrap, cells)
    matrix, which is never built.
    """
    try:
        rng = check_random_state(random_state)
    except (TypeError, ValueError):
        raise ValueError(f"random_state must be a non-negative integer, a numpy Generator or None; got {random_state!r}.") from None
    k = cell_n.size
    n_int = cell_n.astype(np.int64)
    p = cell_correct / cell_n
    w = cell_n.astype(np.float64)
    class_n = seg.sums(seg.sort(w))
    tw = report.table.get("train_n")
    tw_arr = None
    if tw is not None and report.train_weighted_accuracy is not None and not math.isnan(report.train_weighted_accuracy):
        tw_arr = tw.to_numpy(dtype=np.float64)
    keys = ["average_accuracy", "balanced_accuracy", "worst_group_accuracy", "worst_class_accuracy",
            "weighted_std", "macro_std"] + (["train_weighted_accuracy"] if tw_arr is not None else [])
    samples = {key: np.empty(n_bootstrap) for key in keys}
    # Per-cell histogram of resampled correct counts: cell j's count c lands in hist[offsets[j] + c].
    offsets = np.concatenate([[0], np.cumsum(n_int + 1)[:-1]])
    hist = np.zeros(int(n_int.sum()) + k, dtype=np.int64)
    rows = max(1, min(n_bootstrap, _BOOTSTRAP_CHUNK_BYTES // (8 * _BOOTSTRAP_ARRAYS * max(k, 1))))
    for start in range(0, n_bootstrap, rows):
        stop = min(start + rows, n_bootstrap)
        corr = rng.binomial(n_int, p, size=(stop - start, k))
        hist += np.bincount((corr + offsets).ravel(), minlength=hist.size)
        corr_f = corr.astype(np.float64)
        del corr
        acc = corr_f / cell_n
        b = slice(start, stop)
        samples["average_accuracy"][b] = corr_f.sum(axis=1) / cell_n.sum()
        samples["balanced_accuracy"][b] = acc.mean(axis=1)
        samples["worst_group_accuracy"][b] = acc.min(axis=1)
        samples["worst_class_accuracy"][b] = (seg.sums(seg.sort(corr_f)) / class_n).min(axis=1)
        del corr_f
        samples["weighted_std"][b] = _weighted_std_rows(acc, w)
        samples["macro_std"][b] = _macro_std_rows(acc, w, seg)
        if tw_arr is not None:
            samples["train_weighted_accuracy"][b] = (acc * tw_arr).sum(axis=1) / tw_arr.sum()
        del acc
    alpha = (1.0 - confidence) / 2.0
    qs = [alpha, 1.0 - alpha]
    intervals: dict[str, tuple[float, float]] = {}
    for key, v in samples.items():
        q_low, q_high = np.quantile(v, qs)
        intervals[key] = (float(q_low), float(q_high))
    report.intervals = intervals
    lo, hi = (_histogram_quantile(hist, offsets, cell_n, n_bootstrap, q) for q in qs)
    report.table["accuracy_low"] = lo
    report.table["accuracy_high"] = hi
    report.confidence = confidence
    report.n_bootstrap = n_bootstrap


def _histogram_quantile(hist: np.ndarray, offsets: np.ndarray, cell_n: np.ndarray, n_samples: int, q: float) -> np.ndarray:
    """Per cell, ``np.quantile(counts / cell_n, q)`` (method 'linear') over the ``n_samples``
    resampled counts whose histogram is ``hist`` (cell j's counts at ``offsets[j]:offsets[j]+cell_n[j]+1``).

    The i-th smallest count of cell j is the first value whose cumulative count exceeds i; the
    interpolation between the two order statistics is numpy's, step for step.
    """
    cum = np.cumsum(hist)  # cell j's block ends at (j + 1) * n_samples
    base = np.arange(cell_n.size, dtype=np.int64) * n_samples
    virtual = (n_samples - 1) * q
    prev = math.floor(virtual)
    if virtual >= n_samples - 1:
        prev = nxt = n_samples - 1
    else:
        nxt = prev + 1
    gamma = virtual - prev

    def order_stat(i: int) -> np.ndarray:
        return (np.searchsorted(cum, base + i, side="right") - offsets) / cell_n

    a, b = order_stat(prev), order_stat(nxt)
    diff = b - a
    out = a + diff * gamma
    if gamma >= 0.5:
        out = b - diff * (1 - gamma)
    return out


def bias_unsupervised_score(y_true: Any, y_pred: Any, bias_pred: Any) -> float:
    """Bias-unsupervised validation score (Tsirigotis et al. 2023; used by LaBonte et al. 2024).

    The mean accuracy over the non-empty cells (bias-proxy prediction, class): the predictions of
    a bias proxy (e.g. an ERM model) stand in for the unknown spurious attribute, so the score is
    the balanced accuracy over pseudo-groups and needs no group labels.
    """
    bias = as_label_array(bias_pred, "bias_pred")
    return group_report(y_true, y_pred, bias).balanced_accuracy
