"""CIFAR-100-B: the loader reads CIFAR-100 in its three canonical forms (npz, the binary release,
the python release through an array-only unpickler), matches test images to their colour group by
(class, position in class), and refuses crafted or truncated files with one clear error."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stratalab.data import load
from stratalab.data.images import index_in_class, read_cifar100

from ..conftest import shared_file

NAMES = sorted(f"class{c:02d}" for c in range(100))


def make_cifar100(n_train_per_class: int = 2, n_test_per_class: int = 3, seed: int = 0, names=NAMES):
    """Tiny CIFAR-100: every image a distinct random uint8 (3, 32, 32); test in a shuffled class order."""
    rng = np.random.default_rng(seed)
    y_train = np.repeat(np.arange(100), n_train_per_class)
    y_test = rng.permutation(np.repeat(np.arange(100), n_test_per_class))
    x_train = rng.integers(0, 256, (y_train.size, 3, 32, 32), dtype=np.uint8)
    x_test = rng.integers(0, 256, (y_test.size, 3, 32, 32), dtype=np.uint8)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "names": list(names)}


def write(folder: Path, d: dict, form: str) -> Path:
    if form == "npz":
        np.savez(folder / "cifar100.npz", x_train=d["x_train"].transpose(0, 2, 3, 1), y_train=d["y_train"],
                 x_test=d["x_test"].transpose(0, 2, 3, 1), y_test=d["y_test"], classes=np.array(d["names"]))
    elif form == "binary":
        b = folder / "cifar-100-binary"
        b.mkdir()
        for s in ("train", "test"):
            y = d[f"y_{s}"].astype(np.uint8)
            rec = np.concatenate([(y // 5)[:, None], y[:, None], d[f"x_{s}"].reshape(y.size, -1)], axis=1)
            rec.astype(np.uint8).tofile(b / f"{s}.bin")
        (b / "fine_label_names.txt").write_text("\n".join(d["names"]) + "\n")
    else:
        p = folder / "cifar-100-python"
        p.mkdir()
        for s in ("train", "test"):
            with open(p / s, "wb") as f:
                pickle.dump({b"data": d[f"x_{s}"].reshape(d[f"y_{s}"].size, -1), b"fine_labels": d[f"y_{s}"].tolist(),
                             b"coarse_labels": (d[f"y_{s}"] // 5).tolist(), b"filenames": [b"x.png"] * d[f"y_{s}"].size}, f)
        with open(p / "meta", "wb") as f:
            pickle.dump({b"fine_label_names": [n.encode() for n in d["names"]], b"coarse_label_names": []}, f)
    return folder


def groups_csv(folder: Path, d: dict) -> pd.DataFrame:
    """A groups file keyed like the real one: group = (class + position in class) % 8."""
    y = d["y_test"]
    pos = np.array([np.sum(y[:i] == y[i]) for i in range(y.size)])  # by hand: earlier images of the same class
    df = pd.DataFrame({"class_name": [d["names"][c] for c in y], "index_in_class": pos, "group": (y + pos) % 8})
    df.sample(frac=1, random_state=0).to_csv(folder / "cifar100_b_groups.csv", index=False)
    return df


def test_index_in_class_counts_earlier_examples_of_the_same_class():
    y = np.array([3, 1, 3, 3, 1, 0])
    assert index_in_class(y).tolist() == [0, 0, 1, 2, 1, 0]


@pytest.mark.parametrize("form", ["npz", "binary", "python"])
def test_every_canonical_form_gives_the_same_images_labels_and_groups(tmp_path, form):
    d = make_cifar100()
    write(tmp_path, d, form)
    expected = groups_csv(tmp_path, d)
    got, names, read_as = read_cifar100(tmp_path)
    assert read_as == form and names == d["names"]
    for s in ("train", "test"):
        assert np.array_equal(got[f"x_{s}"], d[f"x_{s}"]) and np.array_equal(got[f"y_{s}"], d[f"y_{s}"])
    ds = load("cifar100-b", data_dir=tmp_path, val_fraction=0.5)
    assert np.array_equal(ds.test.g, expected["group"].to_numpy())  # every test image its own group, order kept
    assert np.array_equal(ds.test.x, d["x_test"]) and ds.class_names == d["names"]
    assert len(ds.train) == len(ds.val) == 100 and ds.train.g is None
    x = ds.test.load_x(np.arange(2))
    assert x.dtype == np.float32 and x.shape == (2, 3, 32, 32) and 0 <= x.min() and x.max() <= 1


def test_a_crafted_python_file_is_refused_without_running_code(tmp_path):
    d = make_cifar100()
    write(tmp_path, d, "python")
    groups_csv(tmp_path, d)
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "cifar-100-python" / "train", "wb") as f:
        pickle.dump({b"data": Evil(), b"fine_labels": []}, f)
    with pytest.raises(ValueError, match="refused global"):
        load("cifar100-b", data_dir=tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "cifar-100-binary" / "test.bin").write_bytes(b"\x00" * 3075), "not a whole number of 3,074-byte"),
    (lambda p: (p / "cifar-100-binary" / "fine_label_names.txt").write_text("a\nb\n"), "names 2 classes, not 100"),
    (lambda p: (p / "cifar-100-binary" / "train.bin").unlink(), "train.bin is missing"),
])
def test_damaged_binary_release_is_named(tmp_path, damage, message):
    d = make_cifar100()
    write(tmp_path, d, "binary")
    groups_csv(tmp_path, d)
    damage(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load("cifar100-b", data_dir=tmp_path)


def test_missing_images_groups_or_classes_are_named(tmp_path):
    d = make_cifar100()
    groups_csv(tmp_path, d)
    with pytest.raises(FileNotFoundError, match="no CIFAR-100 in"):
        load("cifar100-b", data_dir=tmp_path)
    write(tmp_path, d, "binary")
    (tmp_path / "cifar100_b_groups.csv").unlink()
    with pytest.raises(FileNotFoundError, match="cifar100_b_groups.csv"):
        load("cifar100-b", data_dir=tmp_path)
    other = tmp_path / "other.csv"
    pd.DataFrame({"class_name": ["zebra"], "index_in_class": [0], "group": [1]}).to_csv(other, index=False)
    with pytest.raises(ValueError, match="names class 'zebra'"):
        load("cifar100-b", data_dir=tmp_path, groups_csv=str(other))


def test_the_real_cifar100_b_groups_file_matches_the_canonical_class_list(tmp_path):
    """The shipped groups file: 100 classes x 100 test images, group 0..7, keyed by the 100
    canonical fine names (alphabetical, as the release's meta file lists them)."""
    csv = shared_file("cifar100_b_groups.csv")
    real = pd.read_csv(csv)
    names = sorted(real["class_name"].unique())
    assert len(names) == 100 and len(real) == 10_000 and set(real["group"]) <= set(range(8))
    d = make_cifar100(n_train_per_class=2, n_test_per_class=100, names=names)
    write(tmp_path, d, "binary")
    ds = load("cifar100-b", data_dir=tmp_path, groups_csv=str(csv), val_fraction=0.5)
    lookup = {(c, i): g for c, i, g in real.itertuples(index=False)}
    pos = index_in_class(d["y_test"])
    assert [lookup[(names[c], p)] for c, p in zip(d["y_test"], pos)] == ds.test.g.tolist()
    assert np.bincount(ds.test.g, minlength=8).tolist() == [2205, 1189, 2508, 1245, 759, 1635, 207, 252]


@pytest.mark.parametrize("name", ["cifar10-b", "cifar100-b"])
@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_max_train_is_named_when_out_of_range(tmp_path, name, bad):
    """--option max_train=0 was reported as an empty split without naming the option."""
    from stratalab.data import load

    with pytest.raises(ValueError, match="option max_train"):
        load(name, data_dir=tmp_path, max_train=bad)
