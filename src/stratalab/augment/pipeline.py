"""The augmentation of a training run, from its config (``TrainConfig.augment``): the rows of
Chiu, Chen and Ma's Tables 1-4, each on top of the standard CIFAR recipe.

============  =====================================================================  ============
augment       training batches get                                                   targets
============  =====================================================================  ============
none          nothing                                                                hard
flip_crop     pad 4, random 32x32 crop, random horizontal flip (the paper's Standard) hard
autoaugment   the CIFAR-10 AutoAugment policy (Cubuk et al. 2019), then flip_crop    hard
cutout        flip_crop, then one 16x16 hole (DeVries & Taylor 2017)                 hard
mixup         flip_crop, then Mixup with Beta(a, a) (Zhang et al. 2018)               soft (mixed)
cutmix        flip_crop, then CutMix with Beta(a, a) (Yun et al. 2019)                soft (area)
flowaug       FlowAug views of the clean batch (Chiu et al. 2023, eqs. 2-4), each    hard
              then flip_crop; see :mod:`stratalab.augment.flowaug`
resized_crop  random resized crop (area 0.7-1, aspect 3/4-4/3) and flip: the        hard
              Waterbirds / CelebA training transform of the backbone papers
============  =====================================================================  ============

Cutout fills its hole with the batch's per-channel mean, the equivalent of DeVries & Taylor's 0
after normalisation (our loaders give [0, 1] without normalising). Every random draw comes from
the training loop's augmentation generator, so a run is reproducible and resumable.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .basic import random_crop_flip

AUGMENTATIONS = ("none", "flip_crop", "autoaugment", "cutout", "mixup", "cutmix", "flowaug", "resized_crop")

InputAugment = Callable[[Tensor, torch.Generator], Tensor]
BatchAugment = Callable[[Tensor, Tensor, int, torch.Generator], "tuple[Tensor, Tensor]"]


def _flip_crop(x: Tensor, g: torch.Generator) -> Tensor:
    if x.ndim != 4:
        raise ValueError(f"augment needs image batches (N, C, H, W), got inputs of shape {tuple(x.shape)}; "
                         "use augment='none' for feature vectors.")
    return random_crop_flip(x, g, padding=4)


def _then(first: InputAugment, second: InputAugment) -> InputAugment:
    return lambda x, g: second(first(x, g), g)


def make_augmentation(cfg: Any) -> tuple[InputAugment | None, BatchAugment | None]:
    """``(input_aug, batch_aug)`` for ``cfg.augment``: ``input_aug(x, g) -> x`` changes images only;
    ``batch_aug(x, y, n_classes, g) -> (x, y_soft)`` also mixes the labels (Mixup, CutMix)."""
    name = cfg.augment
    if name not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}; got {name!r}.")
    if name == "none":
        return None, None
    if name == "resized_crop":
        from .basic import random_resized_crop_flip

        def rrc(x: Tensor, g: torch.Generator) -> Tensor:
            if x.ndim != 4:
                raise ValueError(f"augment needs image batches (N, C, H, W), got inputs of shape {tuple(x.shape)}.")
            return random_resized_crop_flip(x, g)

        return rrc, None
    if name in ("flip_crop", "flowaug"):  # FlowAug's views are cropped and flipped (make_views)
        return _flip_crop, None
    if name == "autoaugment":
        from .autoaugment import autoaugment_batch

        # the reference order (Cubuk et al.'s code): the policy on the clean image, then crop and flip
        return _then(lambda x, g: autoaugment_batch(x, g), _flip_crop), None
    if name == "cutout":
        from .mixing import cutout_images

        size = cfg.cutout_size

        def hole(x: Tensor, g: torch.Generator) -> Tensor:
            return cutout_images(x, g, size=size, fill=x.mean(dim=(0, 2, 3)).tolist())

        return _then(_flip_crop, hole), None
    from .mixing import make_batch_augmentation

    mixer = make_batch_augmentation(name, alpha=cfg.mix_alpha)
    return _flip_crop, mixer


def load_flow_for(path: Any, train: Any) -> "tuple[Any, dict[str, Any]]":
    """The flow at ``path`` (read with ``weights_only``) and its record, refused unless it models
    images of the shape of ``train``'s inputs. Used before any training (``run cifar-b``) and by
    :func:`make_views`."""
    from ..models.flow import load_flow

    flow, record = load_flow(path)
    shape = train.input_shape
    if shape != tuple(flow.config.image_shape):
        raise ValueError(f"the flow at {path} models images of shape {tuple(flow.config.image_shape)}; this training "
                         f"split has inputs of shape {shape}. Train a flow on this data set (`stratalab flow train`).")
    return flow, record


def make_views(cfg: Any, train: Any) -> "Any | None":
    """The :class:`~stratalab.augment.flowaug.FlowAugmenter` of a ``flowaug`` run (None otherwise):
    the flow at ``cfg.flow`` (:func:`load_flow_for`), encoding the whole training set once;
    ``flow_sha256`` names the flow file's bytes."""
    if cfg.augment != "flowaug":
        return None
    import numpy as np

    from .flowaug import FlowAugmenter

    flow, record = load_flow_for(cfg.flow, train)
    aug = FlowAugmenter(flow, objective=cfg.flowaug_objective, std_weight=cfg.flowaug_std_weight,
                        mix_weight=cfg.flowaug_mix_weight, sigma=cfg.flowaug_sigma, pairs=cfg.flowaug_pairs,
                        train_x=lambda i: torch.as_tensor(np.asarray(train.load_x(i)), dtype=torch.float32),
                        train_y=torch.as_tensor(np.asarray(train.y, dtype=np.int64)))
    aug.flow_sha256 = record["sha256"]  # type: ignore[attr-defined]
    return aug
