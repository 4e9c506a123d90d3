"""Which examples each epoch sees: class balancing (LaBonte et al. 2024), group balancing
(Idrissi et al. 2022) and JTT upsampling (Liu et al. 2021), all as index plans for one loop.

A plan is fixed at the start of training (``subset`` and ``weights``/``repeats``); every epoch then
draws its index sequence from a seeded numpy Generator, so a run is reproducible and resumable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._indices import first_per_label


@dataclass
class SamplingPlan:
    """``subset``: indices trained on; ``mode``: 'shuffle' (a permutation of the subset), 'weighted'
    (``n_draws`` draws with replacement with probabilities ``weights``) or 'repeat' (each subset
    example ``repeats[i]`` times, shuffled)."""

    subset: np.ndarray
    mode: str = "shuffle"
    weights: np.ndarray | None = None
    repeats: np.ndarray | None = None
    n_draws: int | None = None

    def epoch(self, rng: np.random.Generator) -> np.ndarray:
        if self.mode == "shuffle":
            return self.subset[rng.permutation(self.subset.size)]
        if self.mode == "weighted":
            assert self.weights is not None
            n = self.n_draws or self.subset.size
            return self.subset[rng.choice(self.subset.size, size=n, replace=True, p=self.weights)]
        if self.mode == "repeat":
            assert self.repeats is not None
            idx = np.repeat(self.subset, self.repeats)
            return idx[rng.permutation(idx.size)]
        raise ValueError(f"unknown sampling mode {self.mode!r}")

    @property
    def epoch_size(self) -> int:
        if self.mode == "weighted":
            return int(self.n_draws or self.subset.size)
        if self.mode == "repeat":
            assert self.repeats is not None
            return int(np.sum(self.repeats))
        return int(self.subset.size)


def _inverse_frequency(labels: np.ndarray) -> np.ndarray:
    counts = np.bincount(labels)
    w = 1.0 / counts[labels]
    return w / w.sum()


def make_plan(
    method: str,
    y: np.ndarray,
    g: np.ndarray | None,
    rng: np.random.Generator,
    *,
    mixture_ratio: float | None = None,
    gdro_balanced_sampler: bool = False,
    repeats: np.ndarray | None = None,
) -> SamplingPlan:
    """The sampling plan of a method, from its :class:`~stratalab.train.registry.MethodSpec`'s
    ``sampling`` rule:

    - ``all`` (erm, upweighting, gdro, dfr): every example once per epoch; ``gdro`` with
      ``gdro_balanced_sampler`` draws group-balanced batches instead, as ``rwg``.
    - ``class_subset`` (subsetting): the first ``m`` of each class in a seeded permutation, ``m`` =
      smallest class.
    - ``class_upsample`` (upsampling): ``N`` draws with replacement, probability proportional to ``1 / n_y``.
    - ``class_mixture`` (mixture): each class capped at ``floor(r * m)`` in the same seeded order, then
      upsampling inside that subset (``N'`` = subset size draws with probability ``1 / n'_y``).
    - ``group_subset`` (subg): every group subsampled to the smallest group (seeded);
      ``group_upsample`` (rwg): ``N`` draws with probability ``1 / n_g`` (balanced batches).
    - ``repeat`` (jtt's second stage): each example ``repeats[i]`` times per epoch; without
      ``repeats`` (JTT's first stage) every example once.
    """
    from .registry import get_method

    spec = get_method(method)
    sampling = spec.sampling
    if spec.loss == "group_dro" and gdro_balanced_sampler:
        sampling = "group_upsample"
    if sampling == "repeat" and repeats is None:
        sampling = "all"  # JTT's first stage is plain ERM
    n = y.shape[0]
    everything = np.arange(n)
    if spec.train_groups and g is None:
        raise ValueError(f"{method} needs train group labels; this data set has none in train "
                         "(pass groups, e.g. GEORGE clusters).")
    if sampling == "all":
        return SamplingPlan(everything)
    if sampling == "class_subset":
        return SamplingPlan(first_per_label(y, _smallest(y), rng))
    if sampling == "class_upsample":
        return SamplingPlan(everything, "weighted", weights=_inverse_frequency(y), n_draws=n)
    if sampling == "class_mixture":
        if mixture_ratio is None or mixture_ratio < 1:
            raise ValueError("mixture needs a ratio r >= 1 (each class is capped at r times the smallest class); "
                             "pass mixture_ratio / --mixture-ratio, e.g. 2.")
        subset = first_per_label(y, int(np.floor(mixture_ratio * _smallest(y))), rng)
        return SamplingPlan(subset, "weighted", weights=_inverse_frequency(y[subset]) if subset.size else None,
                            n_draws=subset.size)
    assert g is not None or sampling == "repeat"
    if sampling == "group_subset":
        assert g is not None
        return SamplingPlan(first_per_label(g, _smallest(g), rng))
    if sampling == "group_upsample":
        assert g is not None
        return SamplingPlan(everything, "weighted", weights=_inverse_frequency(g), n_draws=n)
    if sampling == "repeat":
        reps = np.asarray(repeats, dtype=np.int64)
        if reps.shape != (n,) or (reps < 0).any():
            raise ValueError(f"repeats must hold one non-negative count per training example ({n}), got shape {reps.shape}.")
        return SamplingPlan(everything, "repeat", repeats=reps)
    raise ValueError(f"unknown sampling rule {sampling!r}")  # pragma: no cover (the registry checks it)


def _smallest(labels: np.ndarray) -> int:
    """Size of the smallest label present."""
    counts = np.bincount(labels)
    return int(counts[counts > 0].min())


def examples_left_out(method: str, y: np.ndarray, g: np.ndarray | None, *, mixture_ratio: float | None = None) -> int:
    """How many training examples a method never trains on (its fixed subset leaves them out):
    SUBG, subsetting and mixture; 0 for every other method."""
    from .registry import get_method

    spec = get_method(method)
    if not spec.subsamples:
        return 0
    plan = make_plan(method, y, g, np.random.default_rng(0), mixture_ratio=mixture_ratio)
    return int(y.shape[0] - np.unique(plan.subset).size)
