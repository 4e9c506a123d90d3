"""A user's own data: one entry point, :func:`load_user`, for ``.npz`` arrays (images or
precomputed features) and for a CSV of image files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._validation import as_label_array
from .core import SPLITS, Dataset, Split, groups_from_pairs, pair_group_names, uint8_to_float
from .files import ImageLoader, check_files_exist, normalise_split_column, read_csv_checked, read_npz


def load_user(
    path: str | Path,
    *,
    seed: int = 0,
    root: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    group_names: Sequence[str] | None = None,
    image_size: int | None = 64,
    crop: float = 1.0,
    cache_mb: float = 256.0,
) -> Dataset:
    """Load a user's data set from ``path``.

    - ``.npz``: keys ``x_train, y_train, x_val, y_val, x_test, y_test`` and optionally
      ``g_train, g_val, g_test`` (all three or none). ``x`` may be images ``(n, C, H, W)`` or
      features ``(n, d)`` (e.g. pretrained embeddings); floats are used as is, uint8 images
      ``(n, C, H, W)`` are scaled to [0, 1].
    - ``.csv``: columns ``id,filename,split,y,a``; ``split`` is train/val/test (or 0/1/2), ``y`` the
      class, ``a`` the attribute; groups are ``g = y * A + a`` with ``A = max(a) + 1``. Images are
      read from ``root`` (default: the CSV's folder), resized to ``image_size`` (``crop`` < 1:
      to ``image_size / crop``, then the central ``image_size``), with ``cache_mb`` MiB of decoded
      images kept per process (:class:`~stratalab.data.files.ImageLoader`).
    ``seed`` is accepted for a uniform interface; nothing here is random.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{p} is a directory; give the path of your .npz or .csv file.")
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist; give the path of your .npz or .csv file.")
    if p.suffix.lower() == ".npz":
        return _load_npz(p, class_names, group_names)
    return _load_csv(p, Path(root).expanduser() if root is not None else p.parent, class_names, group_names,
                     ImageLoader(image_size, crop=crop, cache_mb=cache_mb))


def _load_npz(p: Path, class_names: Sequence[str] | None, group_names: Sequence[str] | None) -> Dataset:
    need = [f"{k}_{s}" for s in SPLITS for k in ("x", "y")]
    arrays = read_npz(p, need, what="; a data-set .npz needs x_train, y_train, x_val, y_val, x_test, y_test "
                                    "(and optionally g_train, g_val, g_test)")
    has_g = [f"g_{s}" in arrays for s in SPLITS]
    if any(has_g) and not all(has_g):
        raise ValueError(f"{p} has groups for some splits only; give g_train, g_val and g_test, or none.")
    splits = {}
    shapes = {}
    for s in SPLITS:
        x = arrays[f"x_{s}"]
        if x.dtype.kind not in "fiub":
            raise ValueError(f"{p}: x_{s} must be numeric, got dtype {x.dtype}.")
        if x.ndim < 2:
            raise ValueError(f"{p}: x_{s} must have one row per example, shape (n, d) or (n, C, H, W); got shape {x.shape}.")
        if x.shape[0] == 0:
            raise ValueError(f"{p}: split {s!r} has no examples (x_{s} has 0 rows); every split needs examples.")
        shapes[s] = x.shape[1:]
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise ValueError(f"{p}: x_{s} contains NaN or infinite values; clean them before loading.")
        # uint8 images (n, C, H, W) are scaled to [0, 1] like the built-in image data sets
        loader = uint8_to_float if (x.dtype == np.uint8 and x.ndim == 4) else None
        try:
            yv = as_label_array(arrays[f"y_{s}"], f"y_{s}")
            gv = None if f"g_{s}" not in arrays else as_label_array(arrays[f"g_{s}"], f"g_{s}", n=yv.shape[0], n_name=f"y_{s}")
            splits[s] = Split(x=x, y=yv, g=gv, loader=loader)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{p}, split {s!r}: {e}") from None
    odd = [s for s in SPLITS if shapes[s] != shapes["train"]]
    if odd:
        raise ValueError(f"{p}: x_{odd[0]} has examples of shape {shapes[odd[0]]} but x_train {shapes['train']}; "
                         "every split needs the same example shape.")
    n_total = sum(len(sp) for sp in splits.values())
    n_classes = max(int(sp.y.max()) for sp in splits.values()) + 1
    _check_dense(p, "y", n_classes, n_total)
    _check_classes_present(p, splits["train"].y, n_classes)
    cnames = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
    gnames = None
    if all(has_g):
        n_groups = max(int(sp.g.max()) for sp in splits.values()) + 1  # type: ignore[union-attr]
        _check_dense(p, "g", n_groups, n_total)
        gnames = list(group_names) if group_names is not None else [str(i) for i in range(n_groups)]
    return Dataset(name=p.name, splits=splits, class_names=cnames, group_names=gnames,
                   description=f"user arrays from {p}")


def _check_classes_present(p: Path, train_y: np.ndarray, n_classes: int) -> None:
    """Every class 0..K-1 must have train examples: labels {1, 2} would otherwise make a 3-output
    model with a phantom class 0 (and fail later in the audit, after training)."""
    missing = np.flatnonzero(np.bincount(train_y, minlength=n_classes) == 0)
    if missing.size:
        seen = ", ".join(str(v) for v in np.unique(train_y)[:10])
        raise ValueError(f"{p}: class {int(missing[0])} has no train examples (train labels: {seen}"
                         f"{', ...' if np.unique(train_y).size > 10 else ''}); labels must be 0..K-1 with every class in "
                         "train. Renumber them, e.g. y = numpy.unique(y, return_inverse=True)[1] over all splits together.")


def _check_dense(p: Path, what: str, n_ids: int, n_examples: int) -> None:
    """Labels must be ids 0..K-1: a largest id far beyond the number of examples is a mistake (and
    would make K names and K-row tables)."""
    if n_ids > max(1024, 2 * n_examples):
        raise ValueError(f"{p}: {what} holds id {n_ids - 1} but there are only {n_examples} examples; "
                         f"{what} must be ids 0..K-1 (re-encode them, e.g. with numpy.unique(..., return_inverse=True)).")


def _load_csv(p: Path, root: Path, class_names: Sequence[str] | None, group_names: Sequence[str] | None,
              loader: ImageLoader) -> Dataset:
    df = read_csv_checked(p, ["id", "filename", "split", "y", "a"])
    if len(df) == 0:
        raise ValueError(f"{p} has a header but no rows; write one row per image (id,filename,split,y,a).")
    split = normalise_split_column(df["split"], p)
    for col in ("y", "a"):
        if df[col].isna().any():
            raise ValueError(f"{p}: column {col!r} has empty values (first at row {int(df[col].isna().to_numpy().argmax())}).")
    from .._validation import as_label_array

    y = as_label_array(df["y"].to_numpy(), f"{p.name} column 'y'")
    a = as_label_array(df["a"].to_numpy(), f"{p.name} column 'a'")
    n_attr = int(a.max()) + 1
    n_classes = int(y.max()) + 1
    _check_dense(p, "y", n_classes, len(df))
    _check_dense(p, "a", n_attr, len(df))
    files = np.array([str(root / f) for f in df["filename"].astype(str)], dtype=object)
    check_files_exist(files, p)
    splits = {}
    for s in SPLITS:
        m = split == s
        if not m.any():
            raise ValueError(f"{p} has no rows with split {s!r}; every data set needs train, val and test rows.")
        splits[s] = Split(x=files[m], y=y[m], g=groups_from_pairs(y[m], a[m], n_attr),
                          attrs={"a": a[m], "id": df["id"].to_numpy()[m]}, loader=loader)
    _check_classes_present(p, splits["train"].y, n_classes)
    cnames = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
    gnames = list(group_names) if group_names is not None else pair_group_names(cnames, [f"a={i}" for i in range(n_attr)])
    return Dataset(name=p.name, splits=splits, class_names=cnames, group_names=gnames,
                   description=f"user CSV {p} with images under {root}; groups = (y, a)", root=str(root))
