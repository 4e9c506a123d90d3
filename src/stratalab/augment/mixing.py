"""Mixup, CutMix and Cutout on tensor batches: the "mixing" and "fill-in-the-blank" baselines of
Chiu, Chen & Ma, *Better May Not Be Fairer* (2023), section 4.2, without torchvision or numpy.

* **Mixup** (Zhang, Cisse, Dauphin & Lopez-Paz, ICLR 2018): ``lam ~ Beta(alpha, alpha)``, one per
  batch, a random permutation ``perm`` of the batch, ``x = lam * x + (1 - lam) * x[perm]`` and
  ``y = lam * y + (1 - lam) * y[perm]`` (one-hot labels). alpha = 1 is their CIFAR-10 setting.
* **CutMix** (Yun, Han, Oh, Chun, Choe & Yoo, ICCV 2019): ``lam ~ Beta(alpha, alpha)`` (alpha = 1),
  one box per batch of side ``(round(H * sqrt(1 - lam)), round(W * sqrt(1 - lam)))`` centred at a
  uniform pixel, clipped at the image borders, filled with the same box of ``x[perm]``; ``lam`` is
  then recomputed as ``1 - (clipped box area) / (H * W)`` and labels are mixed with that exact
  pixel fraction. Their reference code applies it to a batch with probability ``cutmix_prob``
  (0.5 in their CIFAR runs): our ``p`` (default 1).
* **Cutout** (DeVries & Taylor, 2017): one square hole of side ``size`` per image (16 for
  CIFAR-10, their best setting), centred at a uniform pixel, allowed to extend past the border
  (only the part inside is filled), filled with ``fill``; the label is unchanged.

Each function takes an explicit ``torch.Generator`` (the only randomness) and returns
``(x_mixed, y_soft)``, ``y_soft`` of shape ``(N, n_classes)`` with rows summing to 1 (one-hot for
Cutout); ``details=True`` also returns a :class:`MixDetails` (the draws), so tests and callers can
check ``x_mixed`` against the formula. Train on ``y_soft`` with :func:`soft_cross_entropy`.

Note on the fill value: the paper (and DeVries & Taylor) fill with 0 *after* mean/std
normalisation, i.e. the dataset mean. The loaders of :mod:`stratalab.data.images` give [0, 1]
images without normalisation, where 0 is black; pass ``fill=(mean_r, mean_g, mean_b)`` (per
channel) to fill with the mean there.

Wiring: ``fit(augment=...)`` only passes ``(x_batch, generator)``, so Mixup and CutMix (which
change labels) need the caller to use ``y_soft`` and :func:`soft_cross_entropy` (the classes
below have ``soft_targets = True``). Cutout keeps labels: :func:`cutout_images` is a plain
``augment(x, generator)`` hook.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, overload

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MixDetails", "sample_beta", "mixup", "cutmix", "cutout", "cutout_images", "soft_cross_entropy",
    "Mixup", "CutMix", "Cutout", "BatchMixer", "BATCH_AUGMENTATIONS", "make_batch_augmentation",
]


@dataclass(frozen=True)
class MixDetails:
    """What a mixing call drew.

    ``lam`` (N,): weight of each example's own label in ``y_soft`` before adding the partner's
    (Mixup: the drawn lambda; CutMix: the recomputed 1 - box area / (H W); Cutout: 1).
    ``perm`` (N,): the partner of each example (``arange(N)`` for Cutout).
    ``boxes`` (N, 4) int64 ``(y0, y1, x0, x1)``, half-open, clipped to the image: the pasted box
    (CutMix, the same for every image) or the hole (Cutout); ``None`` for Mixup.
    ``applied``: False when CutMix skipped the batch (probability ``1 - p``).
    """

    lam: Tensor
    perm: Tensor
    boxes: Tensor | None = None
    applied: bool = True


# ---------------------------------------------------------------------------------------------
# argument checks


def _check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)), "
                        f"got {type(generator).__name__}.")


def _check_alpha(alpha: float, name: str = "alpha") -> float:
    try:
        v = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number > 0 (the Beta(alpha, alpha) parameter), got {alpha!r}.") from None
    if isinstance(alpha, bool) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0 (the Beta(alpha, alpha) parameter; 1 for CIFAR), "
                         f"got {alpha!r}.")
    return v


def _check_prob(p: float, name: str) -> float:
    try:
        v = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}.") from None
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}.")
    return v


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an integer >= 1 (side of the Cutout square in pixels; 16 for CIFAR-10), "
                         f"got {size!r}.")
    return size


def _check_x(x: Tensor, *, images: bool) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise ValueError(f"x must be a float tensor, got dtype {x.dtype}.")
    if images and x.ndim != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}.")
    if not images and x.ndim < 1:
        raise ValueError("x must have a batch dimension (N, ...), got a 0-d tensor.")


def _targets(y: Tensor, n: int, n_classes: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``y`` as (n, n_classes) targets: integer labels become one-hot; soft targets (n, n_classes)
    with rows on the simplex are passed through (so mixings can be chained)."""
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise ValueError(f"n_classes must be an integer >= 1, got {n_classes!r}.")
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor of labels (N,) or soft targets (N, n_classes), got {type(y).__name__}.")
    if y.ndim == 1:
        if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
            raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}.")
        if y.shape[0] != n:
            raise ValueError(f"y has {y.shape[0]} labels but x has {n} examples; pass one label per example.")
        if n and (int(y.min()) < 0 or int(y.max()) >= n_classes):
            bad = y[(y < 0) | (y >= n_classes)][0]
            raise ValueError(f"y holds label {int(bad)}, outside 0..{n_classes - 1} (n_classes={n_classes}).")
        return F.one_hot(y.to(device=device, dtype=torch.int64), n_classes).to(dtype)
    if y.ndim == 2:
        if tuple(y.shape) != (n, n_classes):
            raise ValueError(f"soft targets y must have shape (N, n_classes) = ({n}, {n_classes}), got {tuple(y.shape)}.")
        if not y.is_floating_point():
            raise ValueError(f"soft targets y must be float, got dtype {y.dtype}.")
        if n and (not torch.isfinite(y).all() or (y < 0).any()
                  or not torch.allclose(y.sum(1), torch.ones(n, dtype=y.dtype, device=y.device), atol=1e-4)):
            raise ValueError("soft targets y must be finite, >= 0 and have rows summing to 1.")
        return y.to(device=device, dtype=dtype)
    raise ValueError(f"y must be labels (N,) or soft targets (N, n_classes), got shape {tuple(y.shape)}.")


def _target_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


# ---------------------------------------------------------------------------------------------
# Beta(a, b) from a torch.Generator (torch.distributions.Beta cannot take one)


def _log_gamma(shape: float, n: int, generator: torch.Generator) -> Tensor:
    """log of n Gamma(shape, 1) draws: Marsaglia & Tsang (2000) for shape >= 1, with their boost
    ``G(a) = G(a + 1) * U**(1/a)`` (in logs, so tiny shapes do not underflow) for shape < 1."""
    boost = shape < 1.0
    a = shape + 1.0 if boost else shape
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(n, dtype=torch.float64)
    pending = torch.arange(n)
    while pending.numel():
        m = pending.numel()
        z = torch.randn(m, generator=generator, dtype=torch.float64, device=generator.device).cpu()
        u = torch.rand(m, generator=generator, dtype=torch.float64, device=generator.device).cpu()
        v = (1.0 + c * z) ** 3
        pos = v > 0
        log_v = torch.log(torch.where(pos, v, torch.ones_like(v)))
        ok = pos & (torch.log(u) < 0.5 * z * z + d - d * v + d * log_v)
        out[pending[ok]] = math.log(d) + log_v[ok]
        pending = pending[~ok]
    if boost:
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device).cpu()
        out = out + torch.log(u.clamp_min(torch.finfo(torch.float64).tiny)) / shape
    return out


def sample_beta(a: float, b: float, n: int, generator: torch.Generator) -> Tensor:
    """``n`` draws of Beta(a, b) as float64 (n,), from ``generator`` only: ``G_a / (G_a + G_b)``
    with Gamma draws (Marsaglia & Tsang), computed as ``sigmoid(log G_a - log G_b)``."""
    a, b = _check_alpha(a, "a"), _check_alpha(b, "b")
    _check_generator(generator)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}.")
    return torch.sigmoid(_log_gamma(a, n, generator) - _log_gamma(b, n, generator))


def _randperm(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def _randint(high: int, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.randint(0, high, (n,), generator=generator, device=generator.device).to(device)


def _box_bounds(centre: Tensor, side: int, limit: int) -> tuple[Tensor, Tensor]:
    """Half-open ``[centre - side // 2, centre - side // 2 + side)`` clipped to ``[0, limit]``."""
    lo = centre - side // 2
    return lo.clamp(0, limit), (lo + side).clamp(0, limit)


# ---------------------------------------------------------------------------------------------
# the three methods


@overload
def mixup(x: Tensor, y: Tensor, n_classes: int, generator: torch.Generator, *, alpha: float = ...,
          details: Literal[False] = ...) -> tuple[Tensor, Tensor]: ...
@overload
def mixup(x: Tensor, y: Tensor, n_classes: int, generator: torch.Generator, *, alpha: float = ...,
          details: Literal[True]) -> tuple[Tensor, Tensor, MixDetails]: ...
def mixup(x: Tensor, y: Tensor, n_classes: int, generator: torch.Generator, *, alpha: float = 1.0,
          details: bool = False) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, MixDetails]:
    """Mixup (Zhang et al. 2018, eq. 1): ``x~ = lam x_i + (1 - lam) x_j``, ``y~ = lam y_i + (1 - lam) y_j``.

    One ``lam ~ Beta(alpha, alpha)`` per batch and partner ``j = perm[i]`` of a random permutation,
    as in the authors' code. Draws, in order: ``lam = sample_beta(alpha, alpha, 1, generator)``,
    then ``perm = torch.randperm(N, generator=generator)``. ``x`` is any float batch (N, ...);
    ``y`` integer labels (N,) or soft targets (N, n_classes).
    """
    _check_x(x, images=False)
    _check_generator(generator)
    alpha = _check_alpha(alpha)
    n = x.shape[0]
    y1 = _targets(y, n, n_classes, _target_dtype(x), x.device)
    lam = float(sample_beta(alpha, alpha, 1, generator)[0])
    perm = _randperm(n, generator, x.device)
    x_mixed = x * lam + x[perm] * (1.0 - lam)
    y_soft = y1 * lam + y1[perm] * (1.0 - lam)
    if details:
        return x_mixed, y_soft, MixDetails(lam=torch.full((n,), lam, dtype=torch.float64), perm=perm)
    return x_mixed, y_soft


@overload
def cutmix(x: Tensor, y: Tensor, n_classes: int, generator: torch.Generator, *, alpha: float = ..., p: float = ...,
           details: Literal[False] = ...) -> tuple[Tensor, Tensor]: ...
@overload
def cutmix(x: Tensor, y: Tensor, n_classes: int, generator: torch.Generator, *, alpha: float = ..., p: float = ...,
           details: Literal[True]) -> tuple[Tensor, Tensor, MixDetails]: ...
def cutmix(x: Tensor, y: Tensor, n_classes: int, generator: torch.Generator, *, alpha: float = 1.0, p: float = 1.0,
           details: bool = False) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, MixDetails]:
    """CutMix (Yun et al. 2019, eqs. 1-2): ``x~ = M * x_i + (1 - M) * x_j`` with a box mask ``M``.

    ``lam ~ Beta(alpha, alpha)``; the box has sides ``round(H sqrt(1 - lam))`` x
    ``round(W sqrt(1 - lam))``, centre ``(cy, cx)`` uniform over the pixels, rows
    ``[cy - h // 2, cy - h // 2 + h)`` (columns alike) clipped to the image; the same box for the
    whole batch, pasted from ``x[perm]``. Labels: ``y~ = lam' y_i + (1 - lam') y_j`` with the
    *recomputed* ``lam' = 1 - box area / (H W)``, the exact fraction of own pixels.
    Draws, in order: one uniform ``u`` (the batch is mixed if ``u < p``), ``lam``, ``perm``,
    ``cy``, ``cx``. ``y``: integer labels (N,) or soft targets (N, n_classes).
    """
    _check_x(x, images=True)
    _check_generator(generator)
    alpha = _check_alpha(alpha)
    p = _check_prob(p, "p")
    n, _, h, w = x.shape
    y1 = _targets(y, n, n_classes, _target_dtype(x), x.device)
    u = float(torch.rand(1, generator=generator, dtype=torch.float64, device=generator.device)[0])
    if not u < p:
        out = (x.clone(), y1.clone())
        if details:
            return (*out, MixDetails(lam=torch.ones(n, dtype=torch.float64), perm=torch.arange(n, device=x.device),
                                     boxes=torch.zeros(n, 4, dtype=torch.int64), applied=False))
        return out
    lam = float(sample_beta(alpha, alpha, 1, generator)[0])
    perm = _randperm(n, generator, x.device)
    cy = _randint(h, 1, generator, torch.device("cpu"))
    cx = _randint(w, 1, generator, torch.device("cpu"))
    r = math.sqrt(1.0 - lam)
    y0, y1_ = (int(t) for t in _box_bounds(cy, int(round(h * r)), h))
    x0, x1_ = (int(t) for t in _box_bounds(cx, int(round(w * r)), w))
    x_mixed = x.clone()
    x_mixed[:, :, y0:y1_, x0:x1_] = x[perm, :, y0:y1_, x0:x1_]
    lam_adj = 1.0 - (y1_ - y0) * (x1_ - x0) / (h * w)
    y_soft = y1 * lam_adj + y1[perm] * (1.0 - lam_adj)
    if details:
        boxes = torch.tensor([[y0, y1_, x0, x1_]], dtype=torch.int64).expand(n, 4).clone()
        return x_mixed, y_soft, MixDetails(lam=torch.full((n,), lam_adj, dtype=torch.float64), perm=perm, boxes=boxes)
    return x_mixed, y_soft


def _fill_tensor(fill: float | Sequence[float], x: Tensor) -> Tensor:
    t = torch.as_tensor(fill, dtype=torch.float64).reshape(-1)
    c = x.shape[1]
    if t.numel() not in (1, c) or not torch.isfinite(t).all():
        raise ValueError(f"fill must be one finite number or one per channel ({c}), got {fill!r}.")
    return t.to(dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)


def _cutout_boxes(x: Tensor, generator: torch.Generator, size: int) -> Tensor:
    n, _, h, w = x.shape
    cy = _randint(h, n, generator, torch.device("cpu"))
    cx = _randint(w, n, generator, torch.device("cpu"))
    y0, y1 = _box_bounds(cy, size, h)
    x0, x1 = _box_bounds(cx, size, w)
    return torch.stack([y0, y1, x0, x1], 1)


def _apply_holes(x: Tensor, boxes: Tensor, fill: Tensor) -> Tensor:
    _, _, h, w = x.shape
    b = boxes.to(x.device)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows[None, :] >= b[:, 0:1]) & (rows[None, :] < b[:, 1:2])  # (N, H)
    in_cols = (cols[None, :] >= b[:, 2:3]) & (cols[None, :] < b[:, 3:4])  # (N, W)
    hole = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (N, 1, H, W)
    return torch.where(hole, fill, x)


def cutout_images(x: Tensor, generator: torch.Generator, *, size: int = 16,
                  fill: float | Sequence[float] = 0.0) -> Tensor:
    """Cutout (DeVries & Taylor 2017) on images only: a ``fit(augment=...)`` hook.

    Per image, a centre ``(cy, cx)`` uniform over the pixels (draws: ``cy`` (N,), then ``cx``
    (N,)); rows ``[cy - size // 2, cy - size // 2 + size)`` and the same for columns, clipped to
    the image (the square may hang over the border), are set to ``fill``. One hole per image.
    """
    _check_x(x, images=True)
    _check_generator(generator)
    size = _check_size(size)
    fill_t = _fill_tensor(fill, x)
    return _apply_holes(x, _cutout_boxes(x, generator, size), fill_t)


@overload
def cutout(x: Tensor, y: Tensor, n_classes: int, generator: torch.Generator, *, size: int = ...,
           fill: float | Sequence[float] = ..., details: Literal[False] = ...) -> tuple[Tensor, Tensor]: ...
@overload
def cutout(x: Tensor, y: Tensor, n_classes: int, generator: torch.Generator, *, size: int = ...,
           fill: float | Sequence[float] = ..., details: Literal[True]) -> tuple[Tensor, Tensor, MixDetails]: ...
def cutout(x: Tensor, y: Tensor, n_classes: int, generator: torch.Generator, *, size: int = 16,
           fill: float | Sequence[float] = 0.0, details: bool = False) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, MixDetails]:
    """Cutout (DeVries & Taylor 2017) with the batch interface of :func:`mixup`: images as in
    :func:`cutout_images` (same draws), ``y_soft`` the unchanged one-hot labels."""
    _check_x(x, images=True)
    _check_generator(generator)
    size = _check_size(size)
    fill_t = _fill_tensor(fill, x)
    n = x.shape[0]
    y1 = _targets(y, n, n_classes, _target_dtype(x), x.device)
    boxes = _cutout_boxes(x, generator, size)
    x_out = _apply_holes(x, boxes, fill_t)
    if details:
        return x_out, y1, MixDetails(lam=torch.ones(n, dtype=torch.float64), perm=torch.arange(n, device=x.device),
                                     boxes=boxes)
    return x_out, y1


def soft_cross_entropy(logits: Tensor, y_soft: Tensor, reduction: Literal["mean", "none"] = "mean") -> Tensor:
    """Cross-entropy with soft targets, ``-sum_k y_soft[i, k] * log_softmax(logits)[i, k]``, averaged
    over the batch (``reduction="mean"``) or per example (``"none"``, for group objectives).
    Equals ``F.cross_entropy(logits, y)`` for one-hot ``y_soft``."""
    if not isinstance(logits, Tensor) or not isinstance(y_soft, Tensor):
        raise TypeError("logits and y_soft must be torch.Tensors.")
    if logits.ndim != 2 or tuple(y_soft.shape) != tuple(logits.shape):
        raise ValueError(f"logits and y_soft must both be (N, n_classes); got {tuple(logits.shape)} and "
                         f"{tuple(y_soft.shape)}.")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")
    per = -(y_soft.to(logits.dtype) * F.log_softmax(logits, dim=1)).sum(1)
    return per.mean() if reduction == "mean" else per


# ---------------------------------------------------------------------------------------------
# configured objects and the registry


class BatchMixer(Protocol):
    """``mixer(x, y, n_classes, generator) -> (x_mixed, y_soft)``."""

    name: str
    soft_targets: bool

    def __call__(self, x: Tensor, y: Tensor, n_classes: int, generator: torch.Generator) -> tuple[Tensor, Tensor]: ...


class Mixup:
    """Mixup (Zhang et al. 2018) with a fixed ``alpha`` (1.0, their CIFAR-10 setting)."""

    name = "mixup"
    soft_targets = True

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = _check_alpha(alpha)

    def __call__(self, x: Tensor, y: Tensor, n_classes: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return mixup(x, y, n_classes, generator, alpha=self.alpha)

    def __repr__(self) -> str:
        return f"Mixup(alpha={self.alpha:g})"


class CutMix:
    """CutMix (Yun et al. 2019) with ``alpha`` (1.0) and batch probability ``p`` (1.0; their CIFAR
    runs used 0.5)."""

    name = "cutmix"
    soft_targets = True

    def __init__(self, alpha: float = 1.0, p: float = 1.0) -> None:
        self.alpha = _check_alpha(alpha)
        self.p = _check_prob(p, "p")

    def __call__(self, x: Tensor, y: Tensor, n_classes: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return cutmix(x, y, n_classes, generator, alpha=self.alpha, p=self.p)

    def __repr__(self) -> str:
        return f"CutMix(alpha={self.alpha:g}, p={self.p:g})"


class Cutout:
    """Cutout (DeVries & Taylor 2017): one ``size`` x ``size`` hole (16 for CIFAR-10) filled with ``fill``."""

    name = "cutout"
    soft_targets = False

    def __init__(self, size: int = 16, fill: float | Sequence[float] = 0.0) -> None:
        self.size = _check_size(size)
        t = torch.as_tensor(fill, dtype=torch.float64).reshape(-1)
        if t.numel() < 1 or not torch.isfinite(t).all():
            raise ValueError(f"fill must be one finite number or one per channel, got {fill!r}.")
        self.fill = fill

    def __call__(self, x: Tensor, y: Tensor, n_classes: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return cutout(x, y, n_classes, generator, size=self.size, fill=self.fill)

    def images(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """The ``fit(augment=...)`` hook: :func:`cutout_images` with this size and fill."""
        return cutout_images(x, generator, size=self.size, fill=self.fill)

    def __repr__(self) -> str:
        return f"Cutout(size={self.size}, fill={self.fill!r})"


BATCH_AUGMENTATIONS: dict[str, type[Mixup] | type[CutMix] | type[Cutout]] = {
    "mixup": Mixup,
    "cutmix": CutMix,
    "cutout": Cutout,
}


def make_batch_augmentation(name: str, **params: float) -> BatchMixer:
    """``BATCH_AUGMENTATIONS[name](**params)`` with a clear error for unknown names or parameters."""
    if name not in BATCH_AUGMENTATIONS:
        raise ValueError(f"unknown batch augmentation {name!r}; choose one of {', '.join(BATCH_AUGMENTATIONS)}.")
    try:
        return BATCH_AUGMENTATIONS[name](**params)  # type: ignore[arg-type]
    except TypeError as e:
        raise ValueError(f"bad parameters for {name!r}: {e}.") from None
