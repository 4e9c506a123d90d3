"""The standard CIFAR training augmentation, on float tensor batches, without torchvision.

"Standard" in Chiu, Chen & Ma, *Better May Not Be Fairer* (2023), and the baseline pre-processing
that Mixup, Cutout, CutMix and AutoAugment are added to: pad each 32x32 image with 4 zero pixels
on every side, take a random 32x32 crop, and flip it left-right with probability 1/2 (He et al.
2016's CIFAR recipe, ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``).

Every function takes a float batch ``(N, C, H, W)`` and a ``torch.Generator`` and returns a new
batch of the same shape, dtype and device, so it can be passed as ``fit(..., augment=...)``
(:func:`stratalab.train.loop.fit` calls ``augment(x_batch, generator)`` on training batches only).
Crop and flip are one vectorised gather (no Python loop over images).

Padding value: the loaders of :mod:`stratalab.data.images` give float32 in [0, 1] (no mean/std
normalisation), so ``fill=0.0`` is black, as torchvision's ``RandomCrop`` pads the raw image
before ``Normalize``. On a normalised batch 0 is the channel mean instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

BatchAugment = Callable[[Tensor, torch.Generator], Tensor]

__all__ = ["BatchAugment", "random_crop_flip", "random_crop", "random_hflip", "compose"]


def _check_images(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}.")
    if x.ndim != 4:
        raise ValueError(f"{name} must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor (the loaders' float32), got dtype {x.dtype}.")


def _check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)), "
                        f"got {type(generator).__name__}.")


def _check_prob(p: float, name: str) -> float:
    try:
        v = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}.") from None
    if not 0.0 <= v <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}.")
    return v


def _check_padding(padding: int) -> int:
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an integer >= 0 (pixels on each side; 4 for CIFAR), got {padding!r}.")
    return padding


def random_crop_flip(x: Tensor, generator: torch.Generator, *, padding: int = 4, flip_p: float = 0.5,
                     fill: float = 0.0) -> Tensor:
    """Random crop with zero padding and random horizontal flip, the standard CIFAR augmentation.

    Each image is padded by ``padding`` pixels of value ``fill`` on every side and an ``H x W``
    window is taken at offsets ``(dy, dx)`` drawn uniformly from ``{0, ..., 2 * padding}``; with
    probability ``flip_p`` the window is mirrored left-right (the last axis). Random draws, in this
    order, all from ``generator``: ``dy`` (N,), ``dx`` (N,), then N uniforms for the flips.

    Parameters
    ----------
    x : Tensor (N, C, H, W), float
    generator : torch.Generator
        The only source of randomness: the same generator state gives the same batch.
    padding : int
        Pixels added on each side (4 for 32x32 CIFAR images); 0 turns the crop off.
    flip_p : float
        Probability of a left-right flip per image; 0 turns flipping off.
    fill : float
        Value of the padded pixels (0 = black for the loaders' [0, 1] images).
    """
    _check_images(x)
    _check_generator(generator)
    padding = _check_padding(padding)
    flip_p = _check_prob(flip_p, "flip_p")
    n, c, h, w = x.shape
    gd = generator.device
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=gd).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=gd).to(x.device)
    flip = (torch.rand(n, generator=generator, device=gd) < flip_p).to(x.device)
    if n == 0:
        return x.clone()
    padded = F.pad(x, (padding, padding, padding, padding), value=float(fill)) if padding else x
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = dy[:, None] + ar_h[None, :]  # (N, H): padded row read by each output row
    cols = dx[:, None] + torch.where(flip[:, None], (w - 1 - ar_w)[None, :], ar_w[None, :])  # (N, W)
    # one gather: flat index into each image's padded plane, shared by all channels
    wp = w + 2 * padding
    flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
    out = padded.reshape(n, c, -1).gather(2, flat)
    return out.reshape(n, c, h, w)


def random_crop(x: Tensor, generator: torch.Generator, *, padding: int = 4, fill: float = 0.0) -> Tensor:
    """Only the random crop of :func:`random_crop_flip` (no flips; the flip uniforms are still drawn)."""
    return random_crop_flip(x, generator, padding=padding, flip_p=0.0, fill=fill)


def random_hflip(x: Tensor, generator: torch.Generator, *, p: float = 0.5) -> Tensor:
    """Only the left-right flip of :func:`random_crop_flip`, each image with probability ``p``."""
    _check_images(x)
    _check_generator(generator)
    p = _check_prob(p, "p")
    flip = (torch.rand(x.shape[0], generator=generator, device=generator.device) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_resized_crop_flip(x: Tensor, generator: torch.Generator, *, scale: tuple[float, float] = (0.7, 1.0),
                             ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.5) -> Tensor:
    """The backbone papers' training transform on a batch (Sagawa et al.'s Waterbirds / CelebA
    augmentation, torchvision's ``RandomResizedCrop(scale=(0.7, 1))`` then ``RandomHorizontalFlip``):
    per image a box of area ``U(scale) * H * W`` and aspect ``exp(U(log ratio))`` (clipped to the
    image; torchvision retries instead of clipping), placed uniformly, resized back to ``H x W``
    bilinearly, then flipped left-right with probability ``flip_p``. Every draw (4 per image) comes
    from ``generator``, on the CPU."""
    import math

    _check_images(x)
    _check_generator(generator)
    if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1 and ratio 0 < min <= max, got {scale}, {ratio}.")
    n, _, h, w = x.shape
    u = torch.rand(n, 4, generator=generator, dtype=torch.float64)
    area = (scale[0] + (scale[1] - scale[0]) * u[:, 0]) * h * w
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1])
    bw = torch.sqrt(area * aspect).clamp(1, w)
    bh = torch.sqrt(area / aspect).clamp(1, h)
    x0 = u[:, 2] * (w - bw)
    y0 = u[:, 3] * (h - bh)
    # an affine grid per image maps the output onto its box (align_corners=False: pixel centres)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = bw / w
    theta[:, 1, 1] = bh / h
    theta[:, 0, 2] = (2 * x0 + bw) / w - 1
    theta[:, 1, 2] = (2 * y0 + bh) / h - 1
    grid = torch.nn.functional.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="border", align_corners=False)
    return random_hflip(out, generator, p=flip_p)


def compose(*augments: BatchAugment) -> BatchAugment:
    """Chain batch augmentations ``f(x, generator)`` left to right into one ``fit(augment=...)`` hook,
    e.g. ``compose(autoaugment_batch, random_crop_flip)`` (AutoAugment on top of the standard
    crop and flip, as Cubuk et al. 2019 trained on CIFAR-10)."""
    for i, f in enumerate(augments):
        if not callable(f):
            raise TypeError(f"compose takes callables f(x, generator); argument {i} is {type(f).__name__}.")

    def chained(x: Tensor, generator: torch.Generator) -> Tensor:
        for f in augments:
            x = f(x, generator)
        return x

    chained.__name__ = "compose(" + ", ".join(getattr(f, "__name__", type(f).__name__) for f in augments) + ")"
    return chained
