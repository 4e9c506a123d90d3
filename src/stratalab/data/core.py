"""The one data model every data set in stratalab uses.

A :class:`Dataset` has splits ``train``, ``val`` and ``test``. Each :class:`Split` holds inputs ``x``
(an array, or file paths / texts together with a loader), class labels ``y`` in 0..C-1, the true
subgroup ``g`` in 0..G-1 where it is known (``None`` where not), and optional extra attribute columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from .._validation import as_label_array

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split of a data set.

    Attributes
    ----------
    x : ndarray or array of str
        Inputs. Either the data themselves (images ``(n, C, H, W)`` float32, feature vectors ``(n, d)``)
        or file paths / texts, in which case ``loader`` turns a batch of them into an array.
    y : ndarray of int64, shape (n,)
        Class labels 0..C-1.
    g : ndarray of int64, shape (n,), or None
        True subgroup 0..G-1 where known.
    attrs : dict of str -> ndarray
        Extra per-example attribute columns (e.g. ``place`` for Waterbirds, identity columns).
    loader : callable, optional
        ``loader(x_batch) -> ndarray`` for path or text inputs.
    """

    x: Any
    y: np.ndarray
    g: np.ndarray | None = None
    attrs: dict[str, np.ndarray] = field(default_factory=dict)
    loader: Callable[[Any], np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.y = as_label_array(self.y, "y")
        n = self.y.shape[0]
        if len(self.x) != n:
            raise ValueError(f"x has {len(self.x)} entries but y has {n}; they must match one to one.")
        if self.g is not None:
            self.g = as_label_array(self.g, "g", n=n, n_name="y")
        for k, v in self.attrs.items():
            if len(v) != n:
                raise ValueError(f"attribute column {k!r} has {len(v)} entries but the split has {n}.")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def is_lazy(self) -> bool:
        """True when ``x`` holds paths or texts that ``loader`` must read."""
        return self.loader is not None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input as the loader gives it (e.g. ``(1, 32, 32)``), read from the
        first example, so lazy splits read one file only."""
        return tuple(np.asarray(self.load_x(np.arange(1))).shape[1:])

    def load_x(self, index: Any = None) -> np.ndarray:
        """Return the inputs (all, or those at ``index``) as an array, reading files if needed."""
        xs = self.x if index is None else _take(self.x, index)
        return self.loader(xs) if self.loader is not None else np.asarray(xs)

    def subset(self, index: Any) -> "Split":
        """A new split with the examples at ``index`` (an integer or boolean array)."""
        index = np.asarray(index)
        return Split(
            x=_take(self.x, index),
            y=self.y[index],
            g=None if self.g is None else self.g[index],
            attrs={k: np.asarray(v)[index] for k, v in self.attrs.items()},
            loader=self.loader,
        )


def read_texts(x: Any) -> np.ndarray:
    """The loader of text inputs: the strings unchanged (a text encoder tokenises them,
    :func:`stratalab.models.hf.tokenized`). Its identity marks a split as text."""
    return np.asarray(x, dtype=object)


def _take(x: Any, index: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x[index]
    arr = np.asarray(x, dtype=object)
    return arr[index]


@dataclass
class Dataset:
    """A data set with train/val/test splits, class names and (where known) subgroup names."""

    name: str
    splits: dict[str, Split]
    class_names: list[str]
    group_names: list[str] | None = None
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    root: str | None = None  # the folder its files were read from (derived files, e.g. token caches, go beside them)

    def __post_init__(self) -> None:
        missing = [s for s in SPLITS if s not in self.splits]
        if missing:
            raise ValueError(f"data set {self.name!r} has no {missing[0]!r} split; every data set needs train, val and test.")
        n_classes = len(self.class_names)
        for sname, split in self.splits.items():
            if len(split) == 0:
                raise ValueError(
                    f"split {sname!r} of data set {self.name!r} has no examples; check the split column "
                    "or the split fractions."
                )
            if split.y.max() >= n_classes:
                raise ValueError(
                    f"split {sname!r} of {self.name!r} has class label {int(split.y.max())} but only "
                    f"{n_classes} class names; labels must be 0..{n_classes - 1}."
                )
            if split.g is not None:
                if self.group_names is None:
                    raise ValueError(f"split {sname!r} has groups but the data set has no group_names.")
                if split.g.max() >= len(self.group_names):
                    raise ValueError(
                        f"split {sname!r} of {self.name!r} has group {int(split.g.max())} but only "
                        f"{len(self.group_names)} group names; groups must be 0..{len(self.group_names) - 1}."
                    )

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def val(self) -> Split:
        return self.splits["val"]

    @property
    def test(self) -> Split:
        return self.splits["test"]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_groups(self) -> int:
        return 0 if self.group_names is None else len(self.group_names)

    def with_train(self, index: Any) -> "Dataset":
        """The same data set with only the training examples at ``index`` (val and test unchanged):
        the subsets of D3M's removal, of TRAK's alpha-subset ensembles and of LDS."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        if idx.size == 0:
            raise ValueError(f"the training subset of {self.name!r} is empty; keep at least one example.")
        return replace(self, splits={**self.splits, "train": self.train.subset(idx)})

    def counts(self) -> pd.DataFrame:
        """Example counts per split x class x group (group ``-1`` / ``unknown`` where not labelled)."""
        frames = []
        for sname in SPLITS:
            split = self.splits[sname]
            g = split.g if split.g is not None else np.full(len(split), -1)
            df = pd.DataFrame({"class": split.y, "group": g})
            c = df.value_counts(["class", "group"]).rename("n").reset_index()
            c.insert(0, "split", sname)
            frames.append(c)
        out = pd.concat(frames, ignore_index=True)
        out["class_name"] = [self.class_names[int(c)] for c in out["class"]]
        out["group_name"] = [
            "unknown" if g < 0 or self.group_names is None else self.group_names[int(g)] for g in out["group"]
        ]
        order = {s: i for i, s in enumerate(SPLITS)}
        out = out.sort_values(["split", "class", "group"], key=lambda s: s.map(order) if s.name == "split" else s)
        return out[["split", "class", "class_name", "group", "group_name", "n"]].reset_index(drop=True)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description: sizes, names and counts."""
        return {
            "name": self.name,
            "description": self.description,
            "options": self.options,
            "class_names": list(self.class_names),
            "group_names": None if self.group_names is None else list(self.group_names),
            "sizes": {s: len(self.splits[s]) for s in SPLITS},
            "counts": self.counts().to_dict(orient="records"),
        }


def groups_from_pairs(y: np.ndarray, a: np.ndarray, n_attr: int) -> np.ndarray:
    """Group id of the (class, attribute) pair: ``g = y * n_attr + a`` (the group_DRO convention)."""
    return np.asarray(y, dtype=np.int64) * n_attr + np.asarray(a, dtype=np.int64)


def pair_group_names(class_names: Sequence[str], attr_names: Sequence[str]) -> list[str]:
    """Names matching :func:`groups_from_pairs`: ``"<class>/<attr>"``."""
    return [f"{c}/{a}" for c in class_names for a in attr_names]


def uint8_to_float(x: np.ndarray) -> np.ndarray:
    """Loader for uint8 image arrays: float32 in [0, 1]."""
    return np.asarray(x, dtype=np.float32) / 255.0
