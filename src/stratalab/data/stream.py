"""Batches of a split read by worker processes: folder-backed image data sets (Waterbirds, CelebA,
a user's image CSV) decode in ``workers`` processes with ``prefetch`` batches each in flight, while
the training process computes.

Decoding has no randomness (the seeded augmentations run afterwards, in the training process, from
the run's own generator), so a run gives the same numbers with 0, 2 or 8 workers; each worker is
still seeded from torch's per-worker seed, so a loader with randomness of its own stays
deterministic per worker. Inputs held in memory are never sent through workers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .core import Split

__all__ = ["iter_batches", "check_workers", "eval_batch_size"]

EVAL_BATCH_BYTES = 64 * 2**20  # an evaluation batch of file-backed inputs decodes to at most this (float32)


def eval_batch_size(split: Split, batch_size: int) -> int:
    """``batch_size`` for evaluating ``split``, capped for file-backed inputs so that one decoded
    batch stays under 64 MiB (512 images at 224x224 are 308 MiB, times the batches in flight);
    in-memory inputs keep ``batch_size``, so their numbers never change."""
    if not split.is_lazy or len(split) == 0:
        return batch_size
    per_example = 4 * int(np.prod(split.input_shape))
    return max(1, min(batch_size, EVAL_BATCH_BYTES // max(per_example, 1)))


def check_workers(workers: int) -> int:
    """``workers``: an integer >= 0 (0 reads in the training process)."""
    if isinstance(workers, bool) or int(workers) != workers or workers < 0:
        raise ValueError(f"workers must be an integer >= 0 (loader processes; 0 reads in this process), got {workers!r}.")
    return int(workers)


class _Batches(torch.utils.data.Dataset):
    """Batch ``i`` of a split: its inputs at ``batches[i]``, as float32."""

    def __init__(self, split: Split, batches: Sequence[np.ndarray]) -> None:
        self.split, self.batches = split, list(batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.ascontiguousarray(self.split.load_x(self.batches[i]), dtype=np.float32)


def _seed_worker(worker_id: int) -> None:
    """numpy and random seeded from torch's seed of this worker (which the loader's generator sets)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def iter_batches(split: Split, batches: Sequence[np.ndarray], *, workers: int = 0, prefetch: int = 2,
                 pin_memory: bool = False) -> Iterator[torch.Tensor]:
    """The inputs of each index batch of ``split``, in order, as float32 CPU tensors.

    With ``workers > 0`` and a split whose inputs are files (``split.is_lazy``), a
    :class:`torch.utils.data.DataLoader` decodes them in that many processes, ``prefetch`` batches
    ahead per worker; otherwise they are read here, one batch at a time. ``pin_memory`` (for a CUDA
    device) lets the copy to the GPU overlap the next batch. Workers start for each pass over the
    batches (each epoch, each evaluation), so a worker's decoded-image cache lasts one pass; the
    training process's own cache (``workers=0``) lasts the run.
    """
    workers = check_workers(workers)
    if workers == 0 or not split.is_lazy or len(batches) <= 1:
        for b in batches:
            yield torch.as_tensor(np.asarray(split.load_x(b)), dtype=torch.float32)
        return
    loader = torch.utils.data.DataLoader(
        _Batches(split, batches), batch_size=None, shuffle=False, num_workers=min(workers, len(batches)),
        prefetch_factor=max(1, int(prefetch)), worker_init_fn=_seed_worker, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(0))
    for x in loader:
        yield x
