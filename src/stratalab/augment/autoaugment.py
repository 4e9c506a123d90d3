"""AutoAugment with the CIFAR-10 policy of Cubuk, Zoph, Mane, Vasudevan & Le, "AutoAugment:
Learning Augmentation Strategies from Data" (CVPR 2019), with Pillow only (no torchvision).

The "combinations of image manipulations" baseline ("Autoaug") of Chiu, Chen & Ma, *Better May Not
Be Fairer* (2023), section 4.2. A policy is 25 sub-policies; for each image one sub-policy is
drawn uniformly and its two operations are applied in order, each with its probability and
magnitude. Magnitudes are levels 0..9 mapped linearly onto each operation's range (the paper's
Table 1 ranges, with the conventions of the widely used PIL reference implementations):

=========================  ============================================================  ======
operation                  level m in 0..9 gives                                         sign
=========================  ============================================================  ======
ShearX, ShearY             shear ``0.3 * m / 9`` (affine about the top-left corner)      random
TranslateX, TranslateY     ``round(150/331 * m / 9 * size)`` pixels (size = W or H;      random
                           the paper's [-150, 150] px on 331 px images as a fraction;
                           up to 15 px on 32 px CIFAR)
Rotate                     ``30 * m / 9`` degrees about the centre                       random
Color, Contrast,           enhancement factor ``1 + 0.9 * m / 9``, i.e. in [0.1, 1.9]    random
Brightness, Sharpness
Posterize                  ``round(8 - 4 * m / 9)`` bits kept (8, 8, 7, 7, ..., 4, 4)     --
Solarize                   invert pixels ``>= 256 - 256 * m / 9`` (256: none)             --
AutoContrast, Equalize,    no magnitude (the level in the table is ignored)              --
Invert
=========================  ============================================================  ======

The factor convention for the four enhancement operations (1 +/- a magnitude, so level 0 is the
identity) is the one of the PIL re-implementations and torchvision; Google's original TensorFlow
code maps levels unsigned onto [0.1, 1.9) instead. Geometric operations resample with nearest
neighbour and fill uncovered pixels with ``fill`` (default 128, mid-grey, as the reference code).

Cubuk et al. apply the policy to CIFAR-10 *on top of* the standard crop + flip and followed by
Cutout 16x16: ``compose(autoaugment_batch, random_crop_flip, cutout_images)`` with the functions
of this package gives that pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps
from torch import Tensor

__all__ = [
    "CIFAR10_POLICY", "POLICIES", "OPS", "SIGNED_OPS", "MAX_LEVEL", "SubPolicy",
    "op_magnitude", "apply_op", "AutoAugment", "autoaugment_batch",
]

MAX_LEVEL = 9
TRANSLATE_FRACTION = 150 / 331

# (operation, probability, level) pairs; level on the 0..9 scale.
SubPolicy = tuple[tuple[str, float, int], tuple[str, float, int]]

# The 25 sub-policies found on reduced CIFAR-10: Cubuk et al. (CVPR 2019), Appendix, table
# "Policy found on reduced CIFAR-10" (the policy used for CIFAR-10 and CIFAR-100 in the paper),
# as listed there and in the widely used PIL re-implementations. Levels of AutoContrast,
# Equalize and Invert are listed as in the table but have no effect.
CIFAR10_POLICY: tuple[SubPolicy, ...] = (
    (("Invert", 0.1, 7), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 5), ("Equalize", 0.5, 1)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 3)),
    (("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)),
    (("Equalize", 0.2, 8), ("Equalize", 0.6, 4)),
    (("Color", 0.9, 9), ("Equalize", 0.6, 6)),
    (("AutoContrast", 0.8, 4), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 8), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)),
)

POLICIES: dict[str, tuple[SubPolicy, ...]] = {"cifar10": CIFAR10_POLICY}

SIGNED_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Color", "Contrast", "Brightness", "Sharpness")
OPS = SIGNED_OPS + ("Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")

Fill = int | tuple[int, ...]


def _check_level(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= int(level) <= MAX_LEVEL:
        raise ValueError(f"level must be an integer 0..{MAX_LEVEL} (AutoAugment's magnitude scale), got {level!r}.")
    return int(level)


def _check_op(op: str) -> str:
    if op not in OPS:
        raise ValueError(f"unknown AutoAugment operation {op!r}; choose one of {', '.join(OPS)}.")
    return op


def op_magnitude(op: str, level: int, size: int = 32) -> float:
    """The unsigned magnitude of level ``level`` for ``op`` (see the module table): shear factor,
    translation in pixels for an image side of ``size``, degrees, enhancement offset (factor
    ``1 +/- value``), bits kept (Posterize) or threshold (Solarize); 0 for the others."""
    _check_op(op)
    m = _check_level(level) / MAX_LEVEL
    if op in ("ShearX", "ShearY"):
        return 0.3 * m
    if op in ("TranslateX", "TranslateY"):
        return float(round(TRANSLATE_FRACTION * m * size))
    if op == "Rotate":
        return 30.0 * m
    if op in ("Color", "Contrast", "Brightness", "Sharpness"):
        return 0.9 * m
    if op == "Posterize":
        return float(round(8 - 4 * m))
    if op == "Solarize":
        return 256.0 - 256.0 * m
    return 0.0


def _affine(img: Image.Image, coeffs: tuple[float, ...], fill: Fill) -> Image.Image:
    # PIL's AFFINE maps each output pixel (x, y) to the input pixel (a x + b y + c, d x + e y + f).
    return img.transform(img.size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.NEAREST, fillcolor=fill)


def _pil_op(img: Image.Image, op: str, level: int, sign: int, fill: Fill) -> Image.Image:
    w, h = img.size
    if op == "ShearX":
        return _affine(img, (1, sign * op_magnitude(op, level), 0, 0, 1, 0), fill)
    if op == "ShearY":
        return _affine(img, (1, 0, 0, sign * op_magnitude(op, level), 1, 0), fill)
    if op == "TranslateX":
        return _affine(img, (1, 0, sign * op_magnitude(op, level, w), 0, 1, 0), fill)
    if op == "TranslateY":
        return _affine(img, (1, 0, 0, 0, 1, sign * op_magnitude(op, level, h)), fill)
    if op == "Rotate":
        return img.rotate(sign * op_magnitude(op, level), resample=Image.Resampling.NEAREST, fillcolor=fill)
    if op in ("Color", "Contrast", "Brightness", "Sharpness"):
        enhancer = getattr(ImageEnhance, op)(img)
        return enhancer.enhance(1.0 + sign * op_magnitude(op, level))
    if op == "Posterize":
        return ImageOps.posterize(img, int(op_magnitude(op, level)))
    if op == "Solarize":
        # PIL annotates the threshold as int but only compares levels with it: the fractional threshold is meant
        return ImageOps.solarize(img, op_magnitude(op, level))  # type: ignore[arg-type]
    if op == "AutoContrast":
        return ImageOps.autocontrast(img)
    if op == "Equalize":
        return ImageOps.equalize(img)
    return ImageOps.invert(img)  # Invert


def _check_image(img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (1, 3):
        what = f"{img.dtype} array of shape {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"the image must be a uint8 array (H, W, C) with C = 1 or 3, got a {what}.")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"the image must have H, W >= 1, got shape {img.shape}.")


def _pil_fill(fill: Fill, channels: int) -> Fill:
    vals = (fill,) if isinstance(fill, (int, np.integer)) and not isinstance(fill, bool) else tuple(fill)  # type: ignore[arg-type]
    if len(vals) not in (1, channels) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= int(v) <= 255 for v in vals):
        raise ValueError(f"fill must be an integer 0..255 or one per channel ({channels}), got {fill!r}.")
    if channels == 1:
        return int(vals[0])
    return tuple(int(v) for v in vals) if len(vals) == channels else (int(vals[0]),) * channels


def _to_pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(img[:, :, 0] if img.shape[2] == 1 else img))


def _from_pil(im: Image.Image, channels: int) -> np.ndarray:
    a = np.asarray(im, dtype=np.uint8)
    return a[:, :, None].copy() if channels == 1 else a.copy()


def apply_op(img: np.ndarray, op: str, level: int, *, sign: int = 1, fill: Fill = 128) -> np.ndarray:
    """Apply one AutoAugment operation to a uint8 image (H, W, C), C = 1 or 3, and return a new
    uint8 (H, W, C) array. ``sign`` (+1 or -1) is the direction of the signed operations (see
    :data:`SIGNED_OPS`; ignored by the others); ``fill`` is the value of pixels a geometric
    operation uncovers."""
    _check_image(img)
    _check_op(op)
    level = _check_level(level)
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign!r}.")
    c = img.shape[2]
    return _from_pil(_pil_op(_to_pil(img), op, level, sign, _pil_fill(fill, c)), c)


def _check_policy(policy: str | Sequence[SubPolicy]) -> tuple[SubPolicy, ...]:
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise ValueError(f"unknown AutoAugment policy {policy!r}; choose one of {', '.join(POLICIES)} "
                             "or pass a list of sub-policies.")
        return POLICIES[policy]
    subs = tuple(policy)
    if not subs:
        raise ValueError("an AutoAugment policy needs at least one sub-policy.")
    out = []
    for i, sub in enumerate(subs):
        try:
            pairs = tuple((str(op), float(p), int(lv)) for op, p, lv in sub)
        except (TypeError, ValueError):
            raise ValueError(f"sub-policy {i} must be pairs (operation, probability, level), got {sub!r}.") from None
        if len(pairs) != 2:
            raise ValueError(f"sub-policy {i} must have 2 operations, got {len(pairs)}.")
        for op, p, lv in pairs:
            _check_op(op)
            _check_level(lv)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"sub-policy {i}: probability of {op} must be in [0, 1], got {p!r}.")
        out.append(pairs)
    return tuple(out)


class AutoAugment:
    """AutoAugment (Cubuk et al. 2019) on single uint8 images (H, W, C) with a numpy Generator.

    ``policy``: ``"cifar10"`` (the 25 sub-policies of :data:`CIFAR10_POLICY`) or your own list of
    ``((op, p, level), (op, p, level))``. Per call, draws in order: the sub-policy index
    ``rng.integers(n_sub_policies)``; then per operation ``rng.random() < p`` and, if applied
    and signed, ``rng.random() < 0.5`` for a negative sign.
    """

    def __init__(self, policy: str | Sequence[SubPolicy] = "cifar10", fill: Fill = 128) -> None:
        self.policy_name = policy if isinstance(policy, str) else "custom"
        self.sub_policies = _check_policy(policy)
        _pil_fill(fill, 3)
        self.fill = fill

    def __len__(self) -> int:
        return len(self.sub_policies)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_image(img)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}.")
        c = img.shape[2]
        fill = _pil_fill(self.fill, c)
        sub = self.sub_policies[int(rng.integers(len(self.sub_policies)))]
        im = None
        for op, p, level in sub:
            if rng.random() < p:
                sign = -1 if (op in SIGNED_OPS and rng.random() < 0.5) else 1
                im = _pil_op(_to_pil(img) if im is None else im, op, level, sign, fill)
        return img.copy() if im is None else _from_pil(im, c)

    def __repr__(self) -> str:
        return f"AutoAugment(policy={self.policy_name!r}, n_sub_policies={len(self)}, fill={self.fill!r})"


_DEFAULT: dict[str, AutoAugment] = {}


def _channel_stats(v: float | Sequence[float] | None, c: int, name: str, default: float) -> Tensor:
    t = torch.as_tensor(default if v is None else v, dtype=torch.float64).reshape(-1)
    if t.numel() not in (1, c) or not torch.isfinite(t).all():
        raise ValueError(f"{name} must be one finite number or one per channel ({c}), got {v!r}.")
    if name == "std" and (t <= 0).any():
        raise ValueError(f"std must be > 0, got {v!r}.")
    return t.expand(c).reshape(1, c, 1, 1).clone()


def autoaugment_batch(x: Tensor, generator: torch.Generator, *, policy: str | AutoAugment = "cifar10",
                      mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None) -> Tensor:
    """AutoAugment on a float batch (N, C, H, W), C = 1 or 3: a ``fit(augment=...)`` hook.

    The loaders of :mod:`stratalab.data.images` give float32 ``uint8 / 255`` in [0, 1] with no
    mean/std normalisation, the default here. For a normalised batch pass the ``mean`` and
    ``std`` that were used (per channel): ``x * std + mean`` is taken back to [0, 1], then to
    uint8 with ``round(255 * v)`` (exact for the loaders' images), the policy is applied per
    image with Pillow, and the result is scaled back (``/ 255``, then ``(v - mean) / std``), in
    ``x``'s dtype and device. Values outside [0, 1] after un-normalising (beyond 1e-3) are an
    error: the batch was scaled differently. The per-image numpy Generator is seeded by one
    ``torch.randint`` draw from ``generator``, so the same generator state gives the same batch.
    """
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a float batch of images (N, C, H, W), got {shape}.")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}.")
    n, c = x.shape[:2]
    if c not in (1, 3):
        raise ValueError(f"AutoAugment works on 1- or 3-channel images, got {c} channels.")
    if isinstance(policy, str):
        if policy not in _DEFAULT:
            _DEFAULT[policy] = AutoAugment(policy)
        aa = _DEFAULT[policy]
    elif isinstance(policy, AutoAugment):
        aa = policy
    else:
        raise TypeError(f"policy must be a policy name or an AutoAugment, got {type(policy).__name__}.")
    m = _channel_stats(mean, c, "mean", 0.0)
    s = _channel_stats(std, c, "std", 1.0)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)[0])
    rng = np.random.default_rng(seed)
    v = x.detach().to(device="cpu", dtype=torch.float64) * s + m
    if n and (not torch.isfinite(v).all() or v.min() < -1e-3 or v.max() > 1 + 1e-3):
        hint = "" if mean is not None else " If the batch is normalised, pass the mean and std used."
        raise ValueError(f"x must be images in [0, 1] after un-normalising; got values in "
                         f"[{float(v.min()):.3g}, {float(v.max()):.3g}].{hint}")
    u8 = (v.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = np.stack([aa(u8[i], rng) for i in range(n)]) if n else u8
    y = torch.from_numpy(out).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    if mean is not None or std is not None:
        y = ((y.to(torch.float64) - m) / s)
    return y.to(dtype=x.dtype, device=x.device).contiguous()
