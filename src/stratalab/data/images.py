"""Image data sets: ``u-digits`` (embedded default), ``u-mnist``, ``u-mnist-2rare``, ``spurious-mnist``,
``cifar10-b``, ``cifar10-b-spurious``, ``cifar10-super``, ``cifar100-b``.

Images are kept as uint8 arrays ``(n, C, H, W)`` and turned into float32 in [0, 1] by the split's
loader (``split.load_x()``), so a 70k-image MNIST costs 70 MB rather than 290 MB.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._indices import balance_groups
from .._validation import check_finite, check_int
from ._split import drop_fraction, take_per_label
from .core import Dataset, Split, groups_from_pairs, pair_group_names, uint8_to_float
from .files import read_npz
from .registry import register, require_file

SUPERCLASS_NAMES = ["< 5", ">= 5"]
DIGIT_NAMES = [str(d) for d in range(10)]


def pad_to(images: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad ``(n, H, W)`` or ``(n, C, H, W)`` images symmetrically to ``size x size``."""
    h, w = images.shape[-2:]
    if h > size or w > size:
        raise ValueError(f"images of {h}x{w} are larger than the target size {size}.")
    top, left = (size - h) // 2, (size - w) // 2
    pad = [(0, 0)] * (images.ndim - 2) + [(top, size - h - top), (left, size - w - left)]
    return np.pad(images, pad)


def resize_to(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 ``(n, H, W)`` grey images to ``size x size`` with PIL's bilinear filter, as
    torchvision's ``Resize((size, size))`` does on PIL images (the GEORGE reference loader's U-MNIST:
    28x28 digits stretched to fill the 32x32 LeNet-5 input, rather than zero-padded)."""
    from PIL import Image

    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"resize_to needs uint8 images (n, H, W), got {images.dtype} {images.shape}.")
    out = np.empty((images.shape[0], size, size), dtype=np.uint8)
    for i, im in enumerate(images):
        out[i] = np.asarray(Image.fromarray(im, mode="L").resize((size, size), Image.Resampling.BILINEAR))
    return out


def _split_images(x: np.ndarray, y: np.ndarray, g: np.ndarray | None, idx: np.ndarray, **attrs: np.ndarray) -> Split:
    return Split(
        x=x[idx], y=y[idx], g=None if g is None else g[idx],
        attrs={k: v[idx] for k, v in attrs.items()}, loader=uint8_to_float,
    )


def _sklearn_digit_splits(seed: int, val_fraction: float,
                          test_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.random.Generator]:
    """sklearn's 8x8 digits as uint8 images (n, 1, 8, 8), their digit, and train / val / test masks
    drawn per digit (``round(test_fraction * n_d)`` to test, then val, one seeded generator, which
    is returned for further draws)."""
    from sklearn.datasets import load_digits

    if val_fraction <= 0 or test_fraction <= 0 or val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction and test_fraction must be positive and sum to less than 1.")
    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    digit = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = take_per_label(digit, test_fraction, rng)
    rest = np.flatnonzero(~test)
    val_rel = take_per_label(digit[rest], val_fraction / (1 - test_fraction), rng)
    val = np.zeros_like(test)
    val[rest[val_rel]] = True
    return images, digit, ~(test | val), val, test, rng


@register("u-digits", "scikit-learn's 8x8 digits as U-MNIST in miniature: < 5 vs >= 5, subclass = digit, 8 rare (embedded default)")
def u_digits(*, seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2, rare_digit: int = 8, rare_keep: float = 0.25) -> Dataset:
    """The embedded default: sklearn's bundled 8x8 digits (1,797 images), no files needed.

    Superclass ``digit >= 5``, subclass = digit. Per digit, ``round(test_fraction * n)`` go to test
    and ``round(val_fraction * n)`` to val (one seeded permutation); then, in train only, all but
    ``rare_keep`` of the ``rare_digit`` examples are removed, so that digit is rare within its
    superclass (about 26 of ~100) yet enough to form a cluster. Images are 1x8x8, values 0..16
    scaled to [0, 1].
    """
    rare_digit = _one_digit(rare_digit)
    if not 0 < rare_keep <= 1:
        raise ValueError(f"rare_keep must be in (0, 1], got {rare_keep}.")
    images, digit, train, val, test, rng = _sklearn_digit_splits(seed, val_fraction, test_fraction)
    keep = drop_fraction(train & (digit == rare_digit), 1 - rare_keep, rng)
    train &= keep
    y = (digit >= 5).astype(np.int64)
    splits = {
        name: _split_images(images, y, digit, np.flatnonzero(m))
        for name, m in (("train", train), ("val", val), ("test", test))
    }
    return Dataset(
        name="u-digits", splits=splits, class_names=SUPERCLASS_NAMES, group_names=DIGIT_NAMES,
        description=f"sklearn digits 8x8, superclass digit>=5, subclass = digit, digit {rare_digit} kept at {rare_keep:.0%} in train",
    )


def _read_mnist(data_dir: Path | None, dataset: str) -> dict[str, np.ndarray]:
    path = require_file(data_dir, "mnist.npz", dataset, "mnist/mnist.npz")
    keys = ("x_train", "y_train", "x_test", "y_test")
    f = read_npz(path, keys, what=" (MNIST: x_train, y_train, x_test, y_test, uint8)")
    out = {k: f[k] for k in keys}
    for s in ("train", "test"):
        if out[f"x_{s}"].ndim != 3 or out[f"x_{s}"].shape[0] != out[f"y_{s}"].shape[0]:
            raise ValueError(f"{path}: x_{s} must be (n, 28, 28) matching y_{s}, got {out[f'x_{s}'].shape}.")
    return out


@register("u-mnist", "GEORGE's U-MNIST: MNIST < 5 vs >= 5, subclass = digit, 95% of train 8s removed, resized to 32x32", "mnist.npz")
def u_mnist(*, data_dir: Path | None = None, seed: int = 0, val_fraction: float = 0.2, rare_digit: int = 8,
            remove_fraction: float = 0.95, resize: bool = True) -> Dataset:
    """U-MNIST of Sohoni et al.: val = ``round(val_fraction * n_d)`` of every digit of the 60k train
    set (seeded shuffle); then, in train only, ``int(remove_fraction * n_8)`` of the 8s are removed;
    test = the official 10k. Images 1x32x32 (the LeNet-5 input): stretched from 28x28 by bilinear
    resizing as the GEORGE reference code does (:func:`resize_to`), or with ``resize=False``
    zero-padded (this project's loader before 2026-11-30; GEORGE's robust accuracy is 1.6 points
    lower that way, BENCHMARKS.md). With seed 0 this gives 43,554 train images (235 eights) and
    12,000 val.
    """
    return _mnist_superclass("u-mnist", data_dir, seed, val_fraction, (_one_digit(rare_digit),), remove_fraction, resize)


@register("u-mnist-2rare", "MNIST < 5 vs >= 5 with two rare subclasses, one per class: 95% of train 3s and 9s removed, 32x32",
          "mnist.npz")
def u_mnist_2rare(*, data_dir: Path | None = None, seed: int = 0, val_fraction: float = 0.2, rare_digits: tuple[int, ...] | str = (3, 9),
                  remove_fraction: float = 0.95, resize: bool = True) -> Dataset:
    """U-MNIST with two rare subclasses in different classes (issue 22: a hidden-stratification data
    set GEORGE's defaults were not tuned on). Built as :func:`u_mnist`, with ``remove_fraction`` of
    the train examples of each digit in ``rare_digits`` removed (a tuple or a comma-separated string such
    as ``"2,7"``; default 3 in
    class ``< 5`` and 9 in ``>= 5``, each the digit of its class most often written like a digit of
    the other class: 3 like 5 and 8, 9 like 4). Val and test keep every digit."""
    digits = _digit_list(rare_digits)
    return _mnist_superclass("u-mnist-2rare", data_dir, seed, val_fraction, digits, remove_fraction, resize)


def _digit_list(spec: Any, name: str = "rare_digits") -> tuple[int, ...]:
    """Distinct digits 0..9 from a tuple, a list, one integer or a comma-separated string."""
    if isinstance(spec, (list, tuple)):
        parts = list(spec)
    else:
        parts = [p.strip() for p in spec.split(",") if p.strip()] if isinstance(spec, str) else [spec]
    try:
        digits = tuple(check_int(p, name) if not isinstance(p, str) else int(p) for p in parts)
    except (TypeError, ValueError):
        digits = ()
    if not digits or any(not 0 <= d <= 9 for d in digits) or len(set(digits)) != len(digits):
        raise ValueError(f"{name} must be distinct digits 0..9, comma-separated (e.g. '3,9'), got {spec!r}.")
    return digits


def _one_digit(spec: Any) -> int:
    """One digit 0..9 (u-digits' and u-mnist's ``rare_digit``)."""
    try:
        digits = _digit_list(spec, "rare_digit")
    except ValueError:
        digits = ()
    if len(digits) != 1:
        raise ValueError(f"rare_digit must be one digit 0..9, got {spec!r} (u-mnist-2rare takes several, as rare_digits).")
    return digits[0]


def _check_remove_fraction(remove_fraction: Any) -> float:
    """The share of the rare subclass's train examples removed: a number in [0, 1)."""
    v = check_finite(remove_fraction, "remove_fraction", low=0)
    if v >= 1:
        raise ValueError(f"remove_fraction must be in [0, 1), got {remove_fraction!r}; 1 would leave no rare example.")
    return v


def _mnist_superclass(name: str, data_dir: Path | None, seed: int, val_fraction: float, rare: tuple[int, ...],
                      remove_fraction: float, resize: bool) -> Dataset:
    """MNIST as ``digit >= 5`` with subclass = digit; ``remove_fraction`` of the train examples of
    every digit in ``rare`` (checked by :func:`_digit_list`) removed (after val is drawn per digit);
    test = the official 10k."""
    remove_fraction = _check_remove_fraction(remove_fraction)
    m = _read_mnist(data_dir, name)
    rng = np.random.default_rng(seed)
    digit = m["y_train"].astype(np.int64)
    val = take_per_label(digit, val_fraction, rng)
    train = ~val
    for d in rare:  # one draw per digit, in the given order (one rare digit: the u-mnist construction)
        train &= drop_fraction(~val & (digit == d), remove_fraction, rng)
    if not isinstance(resize, (bool, np.bool_)):
        raise ValueError(f"resize must be true or false, got {resize!r}.")
    to32 = resize_to if resize else pad_to
    x = to32(m["x_train"], 32)[:, None]
    xt = to32(m["x_test"], 32)[:, None]
    dt = m["y_test"].astype(np.int64)
    y = (digit >= 5).astype(np.int64)
    splits = {
        "train": _split_images(x, y, digit, np.flatnonzero(train)),
        "val": _split_images(x, y, digit, np.flatnonzero(val)),
        "test": Split(x=xt, y=(dt >= 5).astype(np.int64), g=dt, loader=uint8_to_float),
    }
    removed = " and ".join(f"{d}s" for d in rare)
    return Dataset(
        name=name, splits=splits, class_names=SUPERCLASS_NAMES, group_names=DIGIT_NAMES,
        description=f"MNIST superclass digit>=5, subclass = digit, {remove_fraction:.0%} of train {removed} removed, "
                    f"{'resized' if resize else 'zero-padded'} to 32x32",
    )


@register("spurious-mnist", "Waterbirds-like MNIST: < 5 vs >= 5 with a spurious patch/colour agreeing with the class in 95% of train", "mnist.npz")
def spurious_mnist(
    *,
    data_dir: Path | None = None,
    seed: int = 0,
    spurious_correlation: float = 0.95,
    spurious: str = "patch",
    class_imbalance: float = 1.0,
    val_fraction: float = 0.2,
    n_train: int | None = None,
    n_eval: int | None = None,
) -> Dataset:
    """MNIST with a spurious feature. Class ``y = digit >= 5``; spurious value ``a`` in {0, 1}.

    In train, ``a == y`` for a fraction ``spurious_correlation`` of each class (the rest get the
    other value); in val and test ``a`` is a fair coin and each split is then subsampled to equal
    group sizes. Groups are ``g = 2 * y + a``. ``spurious="patch"``: a 4x4 white patch in the
    top-left (a=0) or bottom-right (a=1) corner of the 1x32x32 image; ``spurious="color"``: the
    digit drawn in red (a=0) or green (a=1) on a 3x32x32 image. ``class_imbalance`` = r > 1 keeps
    only 1/r of class 1 in train (so class 0 is r times larger), as in LaBonte et al.'s
    class-imbalanced settings. ``n_train`` caps the train split (seeded); ``n_eval`` caps val and
    test at ``n_eval // 4`` examples per group each (seeded; for studies with many evaluations).
    """
    if not 0 <= spurious_correlation <= 1:
        raise ValueError(f"spurious_correlation must be in [0, 1], got {spurious_correlation}.")
    if spurious not in ("patch", "color"):
        raise ValueError(f"spurious must be 'patch' or 'color', got {spurious!r}.")
    if class_imbalance < 1:
        raise ValueError(f"class_imbalance must be >= 1 (the ratio class 0 : class 1 in train), got {class_imbalance}.")
    if n_eval is not None and int(n_eval) < 4:
        raise ValueError(f"n_eval must be >= 4 (one example per group of val and test), got {n_eval}.")
    m = _read_mnist(data_dir, "spurious-mnist")
    rng = np.random.default_rng(seed)
    digit = m["y_train"].astype(np.int64)
    val = take_per_label(digit, val_fraction, rng)
    y_all = (digit >= 5).astype(np.int64)
    train_idx = np.flatnonzero(~val)
    if class_imbalance > 1:
        c1 = train_idx[y_all[train_idx] == 1]
        drop = rng.permutation(c1)[: c1.size - int(round(c1.size / class_imbalance))]
        train_idx = np.setdiff1d(train_idx, drop)
    if n_train is not None and n_train < train_idx.size:
        train_idx = np.sort(rng.permutation(train_idx)[:n_train])
    val_idx = np.flatnonzero(val)

    def make(images: np.ndarray, digits: np.ndarray, agree_p: float | None) -> Split:
        y = (digits >= 5).astype(np.int64)
        if agree_p is None:
            a = rng.integers(0, 2, size=y.size)
        else:
            a = np.where(rng.random(y.size) < agree_p, y, 1 - y)
        x = _add_spurious(pad_to(images, 32), a, spurious)
        g = groups_from_pairs(y, a, 2)
        idx = np.arange(y.size) if agree_p is not None else balance_groups(
            g, rng, per_group=None if n_eval is None else int(n_eval) // 4)
        return _split_images(x, y, g, idx, digit=digits, spurious=a)

    splits = {
        "train": make(m["x_train"][train_idx], digit[train_idx], spurious_correlation),
        "val": make(m["x_train"][val_idx], digit[val_idx], None),
        "test": make(m["x_test"], m["y_test"].astype(np.int64), None),
    }
    return Dataset(
        name="spurious-mnist", splits=splits, class_names=SUPERCLASS_NAMES,
        group_names=pair_group_names(SUPERCLASS_NAMES, [f"{spurious}0", f"{spurious}1"]),
        description=(f"MNIST digit>=5 with a spurious {spurious} agreeing with the class in {spurious_correlation:.0%} "
                     f"of train, class imbalance {class_imbalance}:1"),
    )


@register("mnist-digits", "MNIST 10-way digit classification (a pretraining source task; groups = digits)", "mnist.npz")
def mnist_digits(*, data_dir: Path | None = None, seed: int = 0, val_fraction: float = 0.1, n_train: int | None = None) -> Dataset:
    """Plain MNIST, 10 classes, images zero-padded to 1x32x32: a source task for ``stratalab
    pretrain`` (LaBonte et al. finetune pretrained models; nothing can be downloaded here, so the
    pretraining is ours). Val = ``round(val_fraction * n_d)`` of each digit of the 60k train images
    (seeded); test = the official 10k. ``n_train`` caps train (seeded). No spurious feature: the
    targets built on MNIST (``spurious-mnist``, ``u-mnist``) are binary tasks with other labels.
    """
    m = _read_mnist(data_dir, "mnist-digits")
    rng = np.random.default_rng(seed)
    digit = m["y_train"].astype(np.int64)
    val = take_per_label(digit, val_fraction, rng)
    train_idx = np.flatnonzero(~val)
    if n_train is not None:
        if int(n_train) < 10:
            raise ValueError(f"n_train must be >= 10, got {n_train}.")
        if n_train < train_idx.size:
            train_idx = np.sort(rng.permutation(train_idx)[: int(n_train)])
    x = pad_to(m["x_train"], 32)[:, None]
    xt = pad_to(m["x_test"], 32)[:, None]
    dt = m["y_test"].astype(np.int64)
    splits = {
        "train": _split_images(x, digit, digit, train_idx),
        "val": _split_images(x, digit, digit, np.flatnonzero(val)),
        "test": Split(x=xt, y=dt, g=dt, loader=uint8_to_float),
    }
    return Dataset(name="mnist-digits", splits=splits, class_names=DIGIT_NAMES, group_names=DIGIT_NAMES,
                   description="MNIST, 10 digit classes, 1x32x32 (a pretraining source task)")


@register("digits", "scikit-learn's 8x8 digits, 10-way (embedded; a pretraining source task for u-digits)")
def digits10(*, seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2) -> Dataset:
    """sklearn's bundled 8x8 digits as a 10-class task (groups = digits), split per digit like
    ``u-digits`` (same fractions and seed give the same split): the embedded pretraining source for
    finetuning on ``u-digits`` in tests and demos."""
    images, digit, train, val, test, _ = _sklearn_digit_splits(seed, val_fraction, test_fraction)
    splits = {name: _split_images(images, digit, digit, np.flatnonzero(m))
              for name, m in (("train", train), ("val", val), ("test", test))}
    return Dataset(name="digits", splits=splits, class_names=DIGIT_NAMES, group_names=DIGIT_NAMES,
                   description="sklearn digits 8x8, 10 classes (a pretraining source task)")


def _add_spurious(images: np.ndarray, a: np.ndarray, kind: str) -> np.ndarray:
    if kind == "patch":
        out = images[:, None].copy()
        zero = a == 0
        out[zero, 0, 1:5, 1:5] = 255
        out[~zero, 0, -5:-1, -5:-1] = 255
        return out
    out = np.zeros((images.shape[0], 3) + images.shape[1:], dtype=np.uint8)
    out[a == 0, 0] = images[a == 0]
    out[a == 1, 1] = images[a == 1]
    return out


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# The CIFAR-B release does not name its groups; these are inferred from mean border colour
# (see shared/data/README.md) and are marked as such.
CIFAR_B_GROUPS = ["green?", "gray?", "blue?", "white?", "black?", "brown?", "red?", "others?"]


def decode_jpegs(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Decode concatenated JPEG files (``blob[offsets[i]:offsets[i+1]]``) into uint8 (n, 3, H, W)."""
    from PIL import Image

    n = offsets.shape[0] - 1
    first = np.asarray(Image.open(io.BytesIO(blob[offsets[0]:offsets[1]].tobytes())).convert("RGB"))
    out = np.empty((n,) + first.shape, dtype=np.uint8)
    raw = blob.tobytes()
    for i in range(n):
        with Image.open(io.BytesIO(raw[offsets[i]:offsets[i + 1]])) as im:
            out[i] = np.asarray(im.convert("RGB"))
    return out.transpose(0, 3, 1, 2)


def _check_max_train(max_train: int | None) -> None:
    """``max_train=0`` used to surface as "an empty split" without naming the option."""
    if max_train is not None and (isinstance(max_train, bool) or int(max_train) != max_train or max_train < 1):
        raise ValueError(f"option max_train (train images kept) must be an integer >= 1, or left out for all; got {max_train!r}.")


@register("cifar10-b", "CIFAR-10 (JPEG copy) with the CIFAR-10-B background-colour groups on test (Chiu et al.)", "cifar10_jpeg.npz, cifar10_b_groups.csv")
def cifar10_b(*, data_dir: Path | None = None, seed: int = 0, val_fraction: float = 0.1, max_train: int | None = None,
              classes: tuple[str, ...] | str | None = None) -> Dataset:
    """CIFAR-10 with the CIFAR-10-B subgroups (8 background colours) of every test image.

    Val = ``round(val_fraction)`` of each train class (seeded); train and val have no group labels
    (``g = None``), test has the colour group of ``cifar10_b_groups.csv`` matched on
    ``(class_name, index_in_class)``. Group names are inferred, not official (marked ``?``).
    Subgroups are shared across classes, so metrics use (class, colour) cells. ``classes`` keeps
    only those CIFAR-10 classes (names, a tuple or comma-separated), relabelled 0..k-1 in the
    order given: e.g. ``airplane,automobile,ship,truck``, the pretraining source of the
    ``cifar10-b-spurious`` animals task (LaBonte et al.'s finetuning study, issue 21).
    """
    _check_max_train(max_train)
    npz = require_file(data_dir, "cifar10_jpeg.npz", "cifar10-b")
    csv = require_file(data_dir, "cifar10_b_groups.csv", "cifar10-b")
    need = ["classes", "train_jpeg", "train_offsets", "train_labels", "test_jpeg", "test_offsets", "test_labels", "test_index_in_class"]
    d = read_npz(npz, need, what=" (see shared/data/README.md for the format)")
    names = [str(c) for c in d["classes"]]
    keep = list(range(len(names))) if classes is None else [names.index(c) for c in _class_list(classes, names, "classes")]
    relabel = np.full(len(names), -1, dtype=np.int64)
    relabel[keep] = np.arange(len(keep))
    test_y = d["test_labels"].astype(np.int64)
    test_g = _cifar_b_groups(csv, names, test_y, d["test_index_in_class"])
    rng = np.random.default_rng(seed)
    train_y = d["train_labels"].astype(np.int64)
    val = take_per_label(train_y, val_fraction, rng)
    kept = relabel[train_y] >= 0
    train_idx = np.flatnonzero(~val & kept)
    if max_train is not None and max_train < train_idx.size:
        train_idx = np.sort(rng.permutation(train_idx)[:max_train])
    val_idx, test_idx = np.flatnonzero(val & kept), np.flatnonzero(relabel[test_y] >= 0)
    xtr = decode_jpegs(d["train_jpeg"], d["train_offsets"])
    xte = decode_jpegs(d["test_jpeg"], d["test_offsets"])
    splits = {
        "train": Split(x=xtr[train_idx], y=relabel[train_y[train_idx]], loader=uint8_to_float),
        "val": Split(x=xtr[val_idx], y=relabel[train_y[val_idx]], loader=uint8_to_float),
        "test": Split(x=xte[test_idx], y=relabel[test_y[test_idx]], g=test_g[test_idx], loader=uint8_to_float,
                      attrs={"index_in_class": d["test_index_in_class"].astype(np.int64)[test_idx]}),
    }
    chosen = "" if classes is None else f", classes {', '.join(names[k] for k in keep)}"
    return Dataset(
        name="cifar10-b", splits=splits, class_names=[names[k] for k in keep], group_names=CIFAR_B_GROUPS,
        description=f"CIFAR-10 (lossy JPEG copy){chosen}; test subgroups = CIFAR-10-B background colour (names inferred)",
    )


def _class_list(spec: Any, names: list[str], option: str) -> tuple[str, ...]:
    """Distinct class names from a tuple, a list or a comma-separated string, each one of ``names``."""
    parts = list(spec) if isinstance(spec, (list, tuple)) else [p.strip() for p in str(spec).split(",") if p.strip()]
    parts = [str(p) for p in parts]
    unknown = [p for p in parts if p not in names]
    if not parts or unknown or len(set(parts)) != len(parts):
        why = f"{unknown[0]!r} is not one of them" if unknown else "each named once, at least one"
        raise ValueError(f"option {option} must be CIFAR-10 class names, comma-separated ({', '.join(names)}): {why}; "
                         f"got {spec!r}.")
    return tuple(parts)


@register("cifar10-b-spurious", "CIFAR-10 animals, cat/dog vs deer/horse, with the CIFAR-10-B green background as a spurious "
          "feature (class-imbalanced, LaBonte et al.)", "cifar10_jpeg.npz, cifar10_b_groups.csv")
def cifar10_b_spurious(*, data_dir: Path | None = None, seed: int = 0, class0: tuple[str, ...] | str = ("cat", "dog"),
                       class1: tuple[str, ...] | str = ("deer", "horse"), colour: int = 0, spurious_correlation: float = 0.9,
                       class_imbalance: float = 1.0, n_val: int = 75, n_test: int = 150) -> Dataset:
    """A Waterbirds-like task of natural images whose spurious feature is a real background: the
    CIFAR-10-B background colour (Chiu et al.) of the CIFAR-10 test images, the only images that
    have it. Built for LaBonte et al.'s finetuning study (issue 21) with a CIFAR backbone pretrained
    on other classes (``cifar10-b`` with ``classes=airplane,automobile,ship,truck``).

    ``y = 1`` for the classes in ``class1`` (default deer and horse, which stand on green in 55% of
    CIFAR-10-B), ``0`` for ``class0`` (cat and dog, 22%); ``a = 1`` where the background is CIFAR-10-B
    group ``colour`` (0, inferred "green"); groups ``g = 2 y + a``. Val and test take ``n_val`` and
    ``n_test`` images of each group (seeded, group-balanced). Train is the rest, subsampled so that
    ``a == y`` in a fraction ``spurious_correlation`` of each class (as near as the integer counts
    allow), at a class ratio ``class0 : class1`` of ``class_imbalance`` (both classes subsampled the
    same way, so the correlation stays), the larger class cut when the other has too few; the
    description states the fraction and ratio obtained. A setting that leaves a class no
    disagreeing train image (with ``spurious_correlation < 1``) is refused. Seed 0, train groups
    (class 0 not green, green; class 1 not green, green): ``class_imbalance=1`` 871 / 97 / 97 / 871;
    5: 1,332 / 148 / 30 / 266; 20: 1,332 / 148 / 7 / 67; 50: 1,305 / 145 / 3 / 26. Images 3x32x32
    from the JPEG copy (lossy).
    """
    p = check_finite(spurious_correlation, "spurious_correlation", low=0.5, high=1)
    r = check_finite(class_imbalance, "class_imbalance", low=1, hint="The ratio class 0 : class 1 in train, e.g. 5.")
    n_val, n_test = check_int(n_val, "n_val"), check_int(n_test, "n_test")
    if n_val < 1 or n_test < 1:
        raise ValueError(f"n_val and n_test (images per group in val and test) must be >= 1, got {n_val} and {n_test}.")
    npz = require_file(data_dir, "cifar10_jpeg.npz", "cifar10-b-spurious")
    csv = require_file(data_dir, "cifar10_b_groups.csv", "cifar10-b-spurious")
    need = ["classes", "test_jpeg", "test_offsets", "test_labels", "test_index_in_class"]
    d = read_npz(npz, need, what=" (see shared/data/README.md for the format)")
    names = [str(c) for c in d["classes"]]
    c0, c1 = _class_list(class0, names, "class0"), _class_list(class1, names, "class1")
    if set(c0) & set(c1):
        raise ValueError(f"class0 and class1 share {sorted(set(c0) & set(c1))[0]!r}; give disjoint classes.")
    colour = check_int(colour, "colour")  # a YAML 0.0 reads as 0 and indexes the names below
    if colour not in range(len(CIFAR_B_GROUPS)):
        raise ValueError(f"colour must be a CIFAR-10-B group 0..{len(CIFAR_B_GROUPS) - 1} ({', '.join(CIFAR_B_GROUPS)}), got {colour!r}.")
    test_y = d["test_labels"].astype(np.int64)
    colours = _cifar_b_groups(csv, names, test_y, d["test_index_in_class"])  # only the test images carry a colour
    cls = np.array(names)[test_y]
    y = np.where(np.isin(cls, c1), 1, np.where(np.isin(cls, c0), 0, -1))
    pool = np.flatnonzero(y >= 0)
    y, a = y[pool], (colours[pool] == colour).astype(np.int64)
    g = groups_from_pairs(y, a, 2)
    rng = np.random.default_rng(seed)
    sizes = np.bincount(g, minlength=4)
    if sizes.min() <= n_val + n_test:
        raise ValueError(f"group sizes {sizes.tolist()} leave no train images after {n_val} + {n_test} per group for val "
                         "and test; lower n_val / n_test or choose other classes.")
    order = rng.permutation(g.size)
    rank = np.empty(g.size, dtype=np.int64)
    for k in range(4):  # position of each image among its group, in one seeded order
        members = order[g[order] == k]
        rank[members] = np.arange(members.size)
    val, test = rank < n_val, (rank >= n_val) & (rank < n_val + n_test)
    rest = ~(val | test)
    def pool_of(c: int, agrees: bool) -> np.ndarray:  # train candidates of class c, in the seeded order
        idx = np.flatnonzero(rest & (y == c) & ((a == c) == agrees))
        return idx[np.argsort(rank[idx])]

    agree, other = [pool_of(c, True) for c in (0, 1)], [pool_of(c, False) for c in (0, 1)]
    n_agree, n_other = _correlated_counts([agree[c].size for c in (0, 1)], [other[c].size for c in (0, 1)], p, r)
    if n_agree[1] + n_other[1] < 1:
        raise ValueError(f"class_imbalance={r:g} leaves class 1 without train images; lower it.")
    if p < 1 and min(n_other) < 1:
        raise ValueError(f"spurious_correlation={p:g} with class_imbalance={r:g} leaves class {int(np.argmin(n_other))} no "
                         "train image that disagrees with its spurious feature; lower one of them.")
    train = np.concatenate([np.concatenate([agree[c][:n_agree[c]], other[c][:n_other[c]]]) for c in (0, 1)])
    got_p = (n_agree[0] + n_agree[1]) / train.size
    got_r = (n_agree[0] + n_other[0]) / (n_agree[1] + n_other[1])
    x = decode_jpegs(d["test_jpeg"], d["test_offsets"])[pool]
    split = {name: Split(x=x[np.sort(idx)], y=y[np.sort(idx)], g=g[np.sort(idx)], loader=uint8_to_float,
                         attrs={"spurious": a[np.sort(idx)]})
             for name, idx in (("train", train), ("val", np.flatnonzero(val)), ("test", np.flatnonzero(test)))}
    cnames = ["/".join(c0), "/".join(c1)]
    colour_name = CIFAR_B_GROUPS[colour]
    return Dataset(
        name="cifar10-b-spurious", splits=split, class_names=cnames,
        group_names=pair_group_names(cnames, [f"not {colour_name}", colour_name]),
        description=(f"CIFAR-10 test images, {cnames[0]} vs {cnames[1]}, spurious background {colour_name} (CIFAR-10-B) "
                     f"agreeing with the class in {got_p:.1%} of train (asked {p:g}), class imbalance {got_r:.2f}:1 "
                     f"(asked {r:g})"),
    )


def _correlated_counts(agree: list[int], other: list[int], p: float, r: float) -> tuple[list[int], list[int]]:
    """Train images to keep per class, (agreeing, disagreeing), from ``agree[c]`` and ``other[c]``
    available: the largest class sizes ``n_c`` whose fraction ``p`` agrees, at a ratio ``n_0 : n_1``
    of ``r`` (the larger class cut), in integers: ``k_c = round(p n_c)`` (half up), kept within what
    is available, so the fraction is as near ``p`` as the counts allow."""
    most = [agree[c] if p >= 1 else int(np.floor(min(agree[c] / p, other[c] / (1 - p)) + 1e-9)) for c in (0, 1)]
    n1 = min(most[1], int(np.floor(most[0] / r + 1e-9)))
    n = [min(most[0], int(np.floor(n1 * r + 0.5))), n1]
    k = [min(agree[c], max(n[c] - other[c], int(np.floor(p * n[c] + 0.5)))) for c in (0, 1)]
    return k, [n[c] - k[c] for c in (0, 1)]


CIFAR10_VEHICLES = ("airplane", "automobile", "ship", "truck")


@register("cifar10-super", "CIFAR-10 as vehicles vs animals, subclass = CIFAR class, 95% of train birds removed (hidden stratification)",
          "cifar10_jpeg.npz")
def cifar10_super(*, data_dir: Path | None = None, seed: int = 0, val_fraction: float = 0.1, rare_class: str = "bird",
                  remove_fraction: float = 0.95, max_train: int | None = None) -> Dataset:
    """CIFAR-10 as a superclass task with a rare subclass, as U-MNIST makes MNIST's 8s rare (issue
    22: a hidden-stratification data set of natural images that GEORGE's defaults were not tuned on).

    ``y = 1`` for the six animals (bird, cat, deer, dog, frog, horse), ``0`` for the four vehicles;
    the subclass ``g`` is the CIFAR-10 class (group names = class names). Val = ``round(val_fraction
    * n_c)`` of every train class (seeded); then, in train only, ``int(remove_fraction * n)`` of the
    ``rare_class`` images are removed (default: birds, the animals an ERM model most easily takes for
    airplanes: sky backgrounds), so with seed 0 train holds 225 birds among 22,725 animals; val and
    test (the official 10k) keep every class. ``max_train`` keeps a seeded subset of the rest of train
    (after the removal) for quick runs. Images 3x32x32 from the JPEG copy (lossy, see the data README).
    """
    _check_max_train(max_train)
    remove_fraction = _check_remove_fraction(remove_fraction)
    npz = require_file(data_dir, "cifar10_jpeg.npz", "cifar10-super")
    need = ["classes", "train_jpeg", "train_offsets", "train_labels", "test_jpeg", "test_offsets", "test_labels"]
    d = read_npz(npz, need, what=" (see shared/data/README.md for the format)")
    classes = [str(c) for c in d["classes"]]
    if sorted(CIFAR10_VEHICLES) != sorted(c for c in classes if c in CIFAR10_VEHICLES) or len(classes) != 10:
        raise ValueError(f"{npz}: expected the 10 CIFAR-10 class names, got {classes}.")
    if rare_class not in classes:
        raise ValueError(f"rare_class must be a CIFAR-10 class name ({', '.join(classes)}), got {rare_class!r}.")
    animal = np.array([c not in CIFAR10_VEHICLES for c in classes], dtype=np.int64)
    rng = np.random.default_rng(seed)
    train_c = d["train_labels"].astype(np.int64)
    val = take_per_label(train_c, val_fraction, rng)
    train = ~val & drop_fraction(~val & (train_c == classes.index(rare_class)), remove_fraction, rng)
    train_idx = np.flatnonzero(train)
    if max_train is not None and max_train < train_idx.size:
        train_idx = np.sort(rng.permutation(train_idx)[:max_train])
    xtr = decode_jpegs(d["train_jpeg"], d["train_offsets"])
    test_c = d["test_labels"].astype(np.int64)
    splits = {
        "train": _split_images(xtr, animal[train_c], train_c, train_idx),
        "val": _split_images(xtr, animal[train_c], train_c, np.flatnonzero(val)),
        "test": Split(x=decode_jpegs(d["test_jpeg"], d["test_offsets"]), y=animal[test_c], g=test_c, loader=uint8_to_float),
    }
    return Dataset(
        name="cifar10-super", splits=splits, class_names=["vehicle", "animal"], group_names=classes,
        description=f"CIFAR-10 (lossy JPEG copy) as vehicles vs animals, subclass = class, {remove_fraction:.0%} of train "
                    f"{rare_class} images removed",
    )


def _cifar_b_groups(csv: Path, classes: list[str], test_y: np.ndarray, index_in_class: np.ndarray) -> np.ndarray:
    """The CIFAR-B colour group of every test image, matched on (class name, index in class)."""
    groups = pd.read_csv(csv)
    cols = {"class_name", "index_in_class", "group"}
    if not cols <= set(groups.columns):
        raise ValueError(f"{csv} must have columns class_name,index_in_class,group; found {list(groups.columns)}.")
    unknown = sorted(set(groups["class_name"].astype(str)) - set(classes))
    if unknown:
        raise ValueError(f"{csv} names class {unknown[0]!r}, which the images' class list does not have "
                         f"({len(unknown)} unknown); is it the groups file of another data set?")
    lookup = {(str(c), int(i)): int(g) for c, i, g in groups[["class_name", "index_in_class", "group"]].itertuples(index=False)}
    keys = [(classes[c], int(i)) for c, i in zip(test_y, index_in_class)]
    missing = [k for k in keys if k not in lookup]
    if missing:
        raise ValueError(f"{csv} has no group for test image {missing[0]} ({len(missing)} missing).")
    return np.array([lookup[k] for k in keys], dtype=np.int64)


def index_in_class(y: np.ndarray) -> np.ndarray:
    """0-based position of every example among the examples of its class, in the given order (the
    key of the CIFAR-B group files, counted in the original CIFAR test order)."""
    y = np.asarray(y, dtype=np.int64)
    order = np.argsort(y, kind="stable")
    starts = np.searchsorted(y[order], y[order], side="left")
    out = np.empty_like(y)
    out[order] = np.arange(y.size) - starts
    return out


class _ArrayOnlyUnpickler:
    """Reads the canonical CIFAR-100 python files (``cifar-100-python/{train,test,meta}``), which are
    pickles, without running code from them: only dicts, lists, bytes, strings, numbers and numpy
    arrays are built; any other global the file names (``os.system``, ...) is refused. The same
    guarantee as ``torch.load(weights_only=True)``."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    @classmethod
    def load(cls, path: Path) -> object:
        import pickle

        class Restricted(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> object:
                if (module, name) in cls.ALLOWED:
                    return super().find_class(module, name)
                raise pickle.UnpicklingError(f"refused global {module}.{name}")

        try:
            with open(path, "rb") as f:
                return Restricted(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
            raise ValueError(f"{path} is not a CIFAR-100 python file ({e}); it is read without running code, so "
                             "only arrays, lists and dicts are accepted. Use the official cifar-100-python files, "
                             "cifar-100-binary or a cifar100.npz.") from None


def _get(d: object, key: str, path: Path) -> Any:
    if not isinstance(d, dict):
        raise ValueError(f"{path} does not hold a dict (a CIFAR-100 python file does).")
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise ValueError(f"{path} has no entry {key!r} (a CIFAR-100 python file has data, fine_labels, ...).")


def _cifar100_names(raw: object, path: Path) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in _get(raw, "fine_label_names", path)]


def read_cifar100(data_dir: Path) -> tuple[dict[str, np.ndarray], list[str], str]:
    """CIFAR-100 from ``data_dir`` in one of its canonical forms, first found wins:

    - ``cifar100.npz``: arrays ``x_train``, ``y_train``, ``x_test``, ``y_test`` (uint8 images
      (n, 32, 32, 3) or (n, 3, 32, 32), fine labels 0..99) and ``classes`` (the 100 fine names);
    - ``cifar-100-binary/``: ``train.bin``, ``test.bin`` (records of coarse label, fine label and
      3,072 pixel bytes, channel-major) and ``fine_label_names.txt``;
    - ``cifar-100-python/``: ``train``, ``test``, ``meta`` (read with an array-only unpickler).

    Returns ``{"x_train", "y_train", "x_test", "y_test"}`` with images uint8 (n, 3, 32, 32), the
    fine class names, and the form read. Test images stay in the file's order (the official one),
    which is what the CIFAR-100-B ``index_in_class`` counts."""
    npz, binary, python = data_dir / "cifar100.npz", data_dir / "cifar-100-binary", data_dir / "cifar-100-python"
    out: dict[str, np.ndarray] = {}
    if npz.is_file():
        from .files import verify_checksum

        verify_checksum(npz)
        d = read_npz(npz, ("x_train", "y_train", "x_test", "y_test", "classes"),
                     what=" (CIFAR-100: x_train, y_train, x_test, y_test, classes)")
        names = [str(c) for c in d["classes"]]
        for s in ("train", "test"):
            x = np.asarray(d[f"x_{s}"])
            if x.ndim == 4 and x.shape[-1] == 3 and x.shape[1] != 3:
                x = x.transpose(0, 3, 1, 2)
            out[f"x_{s}"], out[f"y_{s}"] = x, np.asarray(d[f"y_{s}"])
        form = "npz"
    elif binary.is_dir():
        names_file = binary / "fine_label_names.txt"
        if not names_file.is_file():
            raise FileNotFoundError(f"{names_file} is missing (the 100 fine class names, one per line).")
        names = [n.strip() for n in names_file.read_text().splitlines() if n.strip()]
        for s in ("train", "test"):
            f = binary / f"{s}.bin"
            if not f.is_file():
                raise FileNotFoundError(f"{f} is missing (cifar-100-binary holds train.bin and test.bin).")
            raw = np.fromfile(f, dtype=np.uint8)
            if raw.size == 0 or raw.size % 3074:
                raise ValueError(f"{f} has {raw.size} bytes, not a whole number of 3,074-byte CIFAR-100 records "
                                 "(coarse label, fine label, 3,072 pixels); it may be truncated.")
            rec = raw.reshape(-1, 3074)
            out[f"y_{s}"], out[f"x_{s}"] = rec[:, 1].copy(), rec[:, 2:].reshape(-1, 3, 32, 32)
        form = "binary"
    elif python.is_dir():
        for part in ("train", "test", "meta"):
            if not (python / part).is_file():
                raise FileNotFoundError(f"{python / part} is missing (cifar-100-python holds train, test and meta).")
        names = _cifar100_names(_ArrayOnlyUnpickler.load(python / "meta"), python / "meta")
        for s in ("train", "test"):
            pickled = _ArrayOnlyUnpickler.load(python / s)
            out[f"x_{s}"] = np.asarray(_get(pickled, "data", python / s)).reshape(-1, 3, 32, 32)
            out[f"y_{s}"] = np.asarray(_get(pickled, "fine_labels", python / s))
        form = "python"
    else:
        raise FileNotFoundError(f"no CIFAR-100 in {data_dir}: put cifar100.npz, cifar-100-binary/ or cifar-100-python/ "
                                "there (the official CIFAR-100 release; nothing is downloaded).")
    if len(names) != 100:
        raise ValueError(f"CIFAR-100 ({form}) in {data_dir} names {len(names)} classes, not 100.")
    for s in ("train", "test"):
        x, y = out[f"x_{s}"], out[f"y_{s}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (3, 32, 32) or x.shape[0] != y.shape[0]:
            raise ValueError(f"CIFAR-100 ({form}) {s} images must be uint8 (n, 3, 32, 32) with one label each; "
                             f"got {x.dtype} {x.shape} and {y.shape[0]} labels.")
        if y.size and (y.min() < 0 or y.max() > 99):
            raise ValueError(f"CIFAR-100 ({form}) {s} labels must be fine labels 0..99, got {int(y.min())}..{int(y.max())}.")
        out[f"y_{s}"] = y.astype(np.int64)
    return out, names, form


@register("cifar100-b", "CIFAR-100 with the CIFAR-100-B background-colour groups on test (Chiu et al.)",
          "cifar100_b_groups.csv + CIFAR-100 (cifar100.npz, cifar-100-binary/ or cifar-100-python/)")
def cifar100_b(*, data_dir: Path | None = None, seed: int = 0, val_fraction: float = 0.1, max_train: int | None = None,
               groups_csv: str | None = None) -> Dataset:
    """CIFAR-100 (fine labels) with the CIFAR-100-B subgroups (8 background colours) of every test
    image, as ``cifar10-b``: val = ``round(val_fraction)`` of each train class (seeded), train and
    val without groups, test grouped by ``cifar100_b_groups.csv`` matched on (class name, position
    among the test images of that class in the official order). The images are the user's CIFAR-100
    in any canonical form (:func:`read_cifar100`); the groups file comes with the project's data
    (``cifar100_b_groups.csv`` in ``data_dir``, or the path ``groups_csv``)."""
    _check_max_train(max_train)
    if groups_csv is not None:
        csv = Path(groups_csv).expanduser()
        if not csv.is_file():
            raise FileNotFoundError(f"groups_csv {csv} does not exist (the CIFAR-100-B groups file, "
                                    "shared/data/cifar100_b_groups.csv).")
        if data_dir is None:
            raise FileNotFoundError("cifar100-b reads CIFAR-100 from a data directory: pass data_dir=... (CLI: --data-dir).")
    else:
        csv = require_file(data_dir, "cifar100_b_groups.csv", "cifar100-b")
    assert data_dir is not None  # both branches above raise when it is None
    d, classes, _ = read_cifar100(Path(data_dir))
    test_g = _cifar_b_groups(csv, classes, d["y_test"], index_in_class(d["y_test"]))
    rng = np.random.default_rng(seed)
    val = take_per_label(d["y_train"], val_fraction, rng)
    train_idx = np.flatnonzero(~val)
    if max_train is not None and max_train < train_idx.size:
        train_idx = np.sort(rng.permutation(train_idx)[:max_train])
    splits = {
        "train": Split(x=d["x_train"][train_idx], y=d["y_train"][train_idx], loader=uint8_to_float),
        "val": Split(x=d["x_train"][val], y=d["y_train"][val], loader=uint8_to_float),
        "test": Split(x=d["x_test"], y=d["y_test"], g=test_g, loader=uint8_to_float,
                      attrs={"index_in_class": index_in_class(d["y_test"])}),
    }
    return Dataset(name="cifar100-b", splits=splits, class_names=classes, group_names=CIFAR_B_GROUPS,
                   description="CIFAR-100 fine classes; test subgroups = CIFAR-100-B background colour (names inferred)")
