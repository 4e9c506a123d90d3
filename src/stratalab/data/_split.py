"""Seeded, per-label splitting helpers of the data set constructors (the samplers themselves,
:func:`~stratalab._indices.first_per_label` and :func:`~stratalab._indices.balance_groups`,
live in :mod:`stratalab._indices`, below data and train)."""

from __future__ import annotations

import numpy as np

from .._indices import first_per_label


def take_per_label(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask choosing ``round(fraction * n_l)`` examples of every label ``l``.

    The examples are taken in the order of one seeded permutation of all indices, so the choice
    depends only on the seed and the labels.
    """
    counts = np.bincount(labels)
    caps = np.array([int(round(fraction * int(c))) for c in counts], dtype=np.int64)
    mask = np.zeros(labels.shape[0], dtype=bool)
    mask[first_per_label(labels, caps, rng)] = True
    return mask


def drop_fraction(mask_of: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean keep-mask that removes ``int(fraction * n)`` of the examples where ``mask_of`` is True."""
    keep = np.ones(mask_of.shape[0], dtype=bool)
    idx = np.flatnonzero(mask_of)
    idx = idx[rng.permutation(idx.size)]
    keep[idx[: int(fraction * idx.size)]] = False
    return keep
