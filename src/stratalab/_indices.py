"""Seeded index pickers shared by data construction (splits, balanced subsets) and training
(class-balancing by subsetting): below both, so neither imports the other."""

from __future__ import annotations

import numpy as np

__all__ = ["first_per_label", "balance_groups"]


def first_per_label(labels: np.ndarray, cap: np.ndarray | int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of the first ``cap[l]`` examples of every label ``l`` in one seeded
    permutation of all examples (LaBonte et al.'s subsetting order; also how splits are drawn).
    ``cap`` is one number for every label, or an array indexed by label."""
    perm = rng.permutation(labels.shape[0])
    plab = labels[perm]
    # rank of each example among those of its label, in permutation order
    order = np.argsort(plab, kind="stable")
    sorted_lab = plab[order]
    starts = np.searchsorted(sorted_lab, sorted_lab, side="left")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size) - starts
    caps = np.asarray(cap)
    limit = caps[plab] if caps.ndim else np.full(plab.shape, int(caps))
    return np.sort(perm[rank < limit])


def balance_groups(groups: np.ndarray, rng: np.random.Generator, per_group: int | None = None) -> np.ndarray:
    """Sorted indices with the same number of examples from every group (the smallest group's size)."""
    uniq, counts = np.unique(groups, return_counts=True)
    m = int(counts.min()) if per_group is None else min(per_group, int(counts.min()))
    out = [rng.permutation(np.flatnonzero(groups == g))[:m] for g in uniq]
    return np.sort(np.concatenate(out))
