"""Data augmentation baselines without torchvision (issue #12, item 3): the "Standard", Mixup,
Cutout, CutMix and AutoAugment baselines of Chiu, Chen & Ma, *Better May Not Be Fairer* (2023),
section 4.2.

* :mod:`.basic`: random crop (zero padding 4) + horizontal flip, a ``fit(augment=...)`` hook.
* :mod:`.mixing`: Mixup (Zhang et al. 2018), CutMix (Yun et al. 2019), Cutout (DeVries & Taylor
  2017) on batches with a ``torch.Generator``, returning ``(x, y_soft)``; :func:`soft_cross_entropy`.
* :mod:`.autoaugment`: AutoAugment's CIFAR-10 policy (Cubuk et al. 2019) with Pillow.
* :mod:`.corruptions`: the 15 CIFAR-10-C corruptions at 5 severities (Hendrycks & Dietterich 2019).
* :mod:`.flowaug`: FlowAug (Chiu et al. 2023, Algorithms 1-2, objectives 2-4) on the decoupled
  flow of :mod:`stratalab.models.flow`.
* :mod:`.pipeline`: the augmentation of a training run from ``TrainConfig.augment``.

Batch hooks take the loaders' float32 images in [0, 1] (:func:`stratalab.data.core.uint8_to_float`).
"""

from .autoaugment import CIFAR10_POLICY, MAX_LEVEL, OPS, POLICIES, SIGNED_OPS, AutoAugment, apply_op, autoaugment_batch, op_magnitude
from .basic import BatchAugment, compose, random_crop, random_crop_flip, random_hflip
from .corruptions import CORRUPTIONS, FAMILIES, corrupt, corrupted_test_set
from .flowaug import OBJECTIVES, FlowAugmenter, gaussian_z, mix_partners, mix_z, truncated_normal
from .mixing import (
    BATCH_AUGMENTATIONS,
    BatchMixer,
    CutMix,
    Cutout,
    MixDetails,
    Mixup,
    cutmix,
    cutout,
    cutout_images,
    make_batch_augmentation,
    mixup,
    sample_beta,
    soft_cross_entropy,
)
from .pipeline import AUGMENTATIONS, make_augmentation, make_views

__all__ = [
    "BatchAugment", "compose", "random_crop", "random_crop_flip", "random_hflip",
    "BATCH_AUGMENTATIONS", "BatchMixer", "CutMix", "Cutout", "MixDetails", "Mixup", "cutmix", "cutout",
    "cutout_images", "make_batch_augmentation", "mixup", "sample_beta", "soft_cross_entropy",
    "CIFAR10_POLICY", "MAX_LEVEL", "OPS", "POLICIES", "SIGNED_OPS", "AutoAugment", "apply_op",
    "autoaugment_batch", "op_magnitude", "CORRUPTIONS", "FAMILIES", "corrupt", "corrupted_test_set",
    "AUGMENTATIONS", "make_augmentation", "make_views",
    "OBJECTIVES", "FlowAugmenter", "gaussian_z", "mix_partners", "mix_z", "truncated_normal",
]
