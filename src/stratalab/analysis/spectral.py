"""Spectral imbalance of group covariance matrices (LaBonte et al. 2024, "The Group Robustness is
in the Details", Sec. 6, Figs. 4-5 and Table 5).

For penultimate features ``z`` (from :func:`stratalab.models.embed`, the one feature path) and each
group ``g``, the covariance ``Sigma_g = (1 / n_g) sum_i (z_i - mu_g)(z_i - mu_g)^T`` (centred,
divided by ``n_g``) and its eigenvalues, largest first. Within each class ``y``, the intra-class
spectral-norm ratio

    rho(y) = lambda_1(Sigma_{minority group of y}) / lambda_1(Sigma_{majority group of y}),

where the minority (majority) group of ``y`` is its group with the fewest (most) examples *of class
y* (ties: the lower id is the minority, the next one the majority), counted in ``group_counts`` (the
training set's (class, group) cells, :func:`cell_counts`) or else in the data given. The paper finds
``rho(y) >= 1`` for almost every class: minority groups have the larger spectral norm.

The reference code (tmlabonte/revisiting-finetuning, ``exps/postprocess.py``) takes these covariances
on the **training split without augmentation**, from the backbone's unpooled ``last_hidden_state``
flattened per example (C x H x W for a CNN, every token for BERT), centred by the group mean and
divided by ``n_g``; it keeps the top 50 eigenvalues from ``torch.lobpcg``, where we compute them
exactly (``eigvalsh``). Its released code stops at the eigenvalues: which group is the minority is
the paper's definition above. ``stratalab spectral`` follows this by default (train split, unpooled
features where the model has them, minority within each class by train counts).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._validation import as_feature_matrix, as_label_array


@dataclass
class SpectralReport:
    """``spectra``: one row per (class, group): n, count used for minority/majority, and the top-k
    eigenvalues (``eig_1`` ... ``eig_k``); ``ratios``: one row per class with its minority and
    majority group, ``rho`` and, when predictions were given, the accuracy gap (majority minus
    minority accuracy)."""

    spectra: pd.DataFrame
    ratios: pd.DataFrame
    top_k: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: missing eigenvalues (NaN) and an infinite rho are written as null."""
        def clean(df: pd.DataFrame) -> list[dict[str, Any]]:
            return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
                    for r in df.to_dict(orient="records")]

        return {"top_k": self.top_k, "spectra": clean(self.spectra), "ratios": clean(self.ratios)}


def _check(features: Any, y: Any, groups: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = as_feature_matrix(features, "features")
    yy = as_label_array(y, "y", n=z.shape[0])
    gg = as_label_array(groups, "groups", n=z.shape[0])
    return z, yy, gg


def group_spectra(features: Any, y: Any, groups: Any, *, top_k: int = 10) -> dict[tuple[int, int], np.ndarray]:
    """Eigenvalues (largest first, at most ``top_k``) of the covariance of every (class, group)
    cell with at least 2 examples: centred, divided by ``n_g`` (not ``n_g - 1``), from
    ``numpy.linalg.eigvalsh`` on the symmetric ``d x d`` matrix (or, when ``n_g < d``, on the
    ``n_g x n_g`` Gram matrix, which has the same non-zero eigenvalues)."""
    if int(top_k) != top_k or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}.")
    return _spectra(*_check(features, y, groups), int(top_k))


def _spectra(z: np.ndarray, yy: np.ndarray, gg: np.ndarray, top_k: int) -> dict[tuple[int, int], np.ndarray]:
    """:func:`group_spectra` on checked arrays."""
    out: dict[tuple[int, int], np.ndarray] = {}
    for c, g in sorted({(int(a), int(b)) for a, b in zip(yy, gg)}):
        zc = z[(yy == c) & (gg == g)]
        n = zc.shape[0]
        if n < 2:
            continue
        zc = zc - zc.mean(0)
        small = zc @ zc.T if n < zc.shape[1] else zc.T @ zc
        eig = np.linalg.eigvalsh(small / n)[::-1]
        out[(c, g)] = np.clip(eig[: int(top_k)], 0.0, None)
    return out


def cell_counts(y: Any, groups: Any) -> dict[tuple[int, int], int]:
    """Examples per (class, group) cell, e.g. of the training set: the ``group_counts`` that decide
    each class's minority and majority group within the class."""
    yy = as_label_array(y, "y")
    gg = as_label_array(groups, "groups", n=yy.shape[0])
    cells, n = np.unique(np.stack([yy, gg], 1), axis=0, return_counts=True)
    return {(int(c), int(g)): int(k) for (c, g), k in zip(cells, n)}


def _count(group_counts: dict[Any, int] | None, c: int, g: int, here: int) -> int:
    """A cell's count for choosing minority and majority: by (class, group), else by group, else ``here``."""
    if group_counts is None:
        return here
    return int(group_counts.get((c, g), group_counts.get(g, here)))


def _check_counts(group_counts: dict[Any, int] | None, yy: np.ndarray, gg: np.ndarray) -> None:
    """Counts keyed by group id are totals over classes: refuse them where a group spans classes
    (CIFAR-B's colours), since the minority of a class must be decided by that class's counts."""
    if group_counts is None:
        return
    if any(not isinstance(k, tuple) for k in group_counts):
        classes_of: dict[int, set[int]] = {}
        for c, g in set(zip(yy.tolist(), gg.tolist())):
            classes_of.setdefault(int(g), set()).add(int(c))
        shared = sorted(g for g, cs in classes_of.items() if len(cs) > 1 and g in group_counts)
        if shared:
            raise ValueError(f"group {shared[0]} occurs in several classes, so group_counts keyed by group id are totals "
                             "over classes and cannot decide a class's minority group; key them by (class, group), "
                             "e.g. cell_counts(train_y, train_groups).")


def spectral_imbalance(features: Any, y: Any, groups: Any, *, top_k: int = 10, pred: Any = None,
                       group_counts: dict[Any, int] | None = None, class_names: list[str] | None = None,
                       group_names: list[str] | None = None) -> SpectralReport:
    """Group spectra and the intra-class spectral-norm ratio ``rho(y)`` (LaBonte et al. 2024).

    Parameters
    ----------
    features : (n, d) array
        Penultimate features (``stratalab.models.embed(model, split).features``).
    y, groups : (n,) int arrays
        Class and group of each example; a group may span classes (cells are (class, group)).
    pred : (n,) int array, optional
        Predictions, for each class's accuracy gap between its majority and minority group.
    group_counts : dict, optional
        Examples defining minority and majority (e.g. the train counts, :func:`cell_counts`), keyed
        by ``(class, group)``: the minority is decided within the class. Keys by group id are read
        only where no group spans two classes (refused otherwise); default: the counts here.
    """
    if int(top_k) != top_k or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}.")
    z, yy, gg = _check(features, y, groups)
    top_k = min(int(top_k), z.shape[1])  # a d-dimensional covariance has d eigenvalues (top_k 1e9 used to hang)
    _check_counts(group_counts, yy, gg)
    spectra = _spectra(z, yy, gg, top_k)  # the features are checked and converted once
    pv = None if pred is None else as_label_array(pred, "pred", n=yy.shape[0])
    rows, ratios = [], []
    for c in np.unique(yy):
        sizes = [(int(g), int(((yy == c) & (gg == g)).sum())) for g in np.unique(gg[yy == c])]
        cells = [(g, n, _count(group_counts, int(c), g, n)) for g, n in sizes]
        for g, n, count in cells:
            eig = spectra.get((int(c), g))
            rows.append({"class": int(c), "group": g, "class_name": class_names[c] if class_names else str(c),
                         "group_name": group_names[g] if group_names else str(g), "n": n, "count": count,
                         **{f"eig_{i + 1}": (float(eig[i]) if eig is not None and i < eig.size else np.nan)
                            for i in range(int(top_k))}})
        usable = [(g, n, count) for g, n, count in cells if (int(c), g) in spectra]
        if len(usable) < 2:
            continue
        minority = min(usable, key=lambda t: (t[2], t[0]))
        majority = max((u for u in usable if u[0] != minority[0]), key=lambda t: (t[2], -t[0]))  # never the same group
        lam_min, lam_maj = spectra[(int(c), minority[0])][0], spectra[(int(c), majority[0])][0]
        row = {"class": int(c), "class_name": class_names[c] if class_names else str(c),
               "minority_group": minority[0], "majority_group": majority[0],
               "lambda1_minority": float(lam_min), "lambda1_majority": float(lam_maj),
               "rho": float(lam_min / lam_maj) if lam_maj > 0 else float("inf")}
        if pv is not None:
            acc = {g: float((pv[(yy == c) & (gg == g)] == c).mean()) for g in (minority[0], majority[0])}
            row.update(accuracy_minority=acc[minority[0]], accuracy_majority=acc[majority[0]],
                       accuracy_gap=acc[majority[0]] - acc[minority[0]])
        ratios.append(row)
    return SpectralReport(spectra=pd.DataFrame(rows), ratios=pd.DataFrame(ratios), top_k=int(top_k))


def plot_group_spectra(report: SpectralReport, path: str | os.PathLike[str], title: str = "") -> Path:
    """LaBonte et al. Fig. 4 style: the top-k eigenvalues of every group's covariance, one line per
    (class, group), solid for each class's majority group and dashed for the others."""
    from matplotlib.figure import Figure

    from .._io import save_figure_atomic

    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    majority = set(zip(report.ratios.get("class", []), report.ratios.get("majority_group", [])))
    cols = [f"eig_{i + 1}" for i in range(report.top_k)]
    for r in report.spectra.itertuples(index=False):
        vals = np.array([getattr(r, c) for c in cols], dtype=float)
        if np.isnan(vals).all():
            continue
        style = "-" if (r[0], r[1]) in majority else "--"
        ax.plot(np.arange(1, report.top_k + 1), vals, style, marker="o", ms=3,
                label=f"{r.class_name} / {r.group_name} (n={r.n})")
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue index")
    ax.set_ylabel("eigenvalue of group covariance")
    ax.set_title(title or "Top eigenvalues per group (solid: majority group of its class)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure_atomic(fig, path)
