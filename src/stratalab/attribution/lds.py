"""Linear datamodeling score (LDS; Park et al. 2023, Sec. 2.2): how well attribution scores
predict the margins of models retrained on random subsets of the training set."""

from __future__ import annotations

from typing import Any

import numpy as np


def random_subsets(n_train: int, n_subsets: int, alpha: float = 0.5, seed: int = 0) -> np.ndarray:
    """``n_subsets`` boolean masks (n_subsets, n_train), each choosing ``round(alpha * n_train)``
    training examples uniformly without replacement (the alpha-subsets of TRAK and LDS)."""
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}.")
    if n_subsets < 1:
        raise ValueError(f"n_subsets must be >= 1, got {n_subsets}.")
    rng = np.random.default_rng(seed)
    size = max(1, int(round(alpha * n_train)))
    masks = np.zeros((n_subsets, n_train), dtype=bool)
    for m in range(n_subsets):
        masks[m, rng.choice(n_train, size=size, replace=False)] = True
    return masks


def linear_datamodeling_score(scores: Any, subset_masks: Any, margins: Any) -> tuple[float, np.ndarray]:
    """Mean over targets of the Spearman correlation, across subsets, between the predicted margin
    ``sum_{i in S_m} tau[i, t]`` and the margin that the model trained on ``S_m`` actually gives
    target ``t`` (the LDS of the TRAK paper, eq. 2-3).

    Parameters
    ----------
    scores : (n_train, n_targets) attribution matrix (:meth:`stratalab.attribution.TRAK.score`).
    subset_masks : (m, n_train) boolean, the training subsets ``S_m`` (:func:`random_subsets`).
    margins : (m, n_targets) margins of the models retrained on each subset.

    Returns the mean LDS and the per-target correlations (NaN where a target's margins are constant).
    """
    from scipy.stats import spearmanr

    t = np.asarray(scores, dtype=np.float64)
    s = np.asarray(subset_masks, dtype=bool)
    m = np.asarray(margins, dtype=np.float64)
    if t.ndim != 2 or s.ndim != 2 or m.ndim != 2:
        raise ValueError("scores, subset_masks and margins must be 2-D.")
    if s.shape[1] != t.shape[0] or m.shape != (s.shape[0], t.shape[1]):
        raise ValueError(f"shapes do not match: scores {t.shape}, subset_masks {s.shape}, margins {m.shape}; "
                         "expected (n_train, T), (m, n_train), (m, T).")
    if s.shape[0] < 3:
        raise ValueError("LDS needs at least 3 retrained subsets.")
    if not (np.isfinite(t).all() and np.isfinite(m).all()):
        raise ValueError("scores and margins must be finite.")
    predicted = s.astype(np.float64) @ t  # (m, T)
    corr = np.full(t.shape[1], np.nan)
    for j in range(t.shape[1]):
        if np.ptp(m[:, j]) > 0 and np.ptp(predicted[:, j]) > 0:
            corr[j] = spearmanr(predicted[:, j], m[:, j]).statistic
    if np.isnan(corr).all():
        raise ValueError("every target has constant margins or predictions across the subsets; LDS is undefined.")
    return float(np.nanmean(corr)), corr


lds = linear_datamodeling_score  # the short name used in the TRAK paper
