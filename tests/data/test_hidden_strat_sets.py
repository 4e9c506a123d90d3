"""The hidden-stratification data sets added for issue 22 (data GEORGE's defaults were not tuned on):
``u-mnist-2rare`` (two rare digits, one per class) and ``cifar10-super`` (vehicles vs animals with
rare birds). Counts are checked on small canonical-format fixtures written here, and on the real
files of ../shared/data where they are present."""

import io

import numpy as np
import pytest
from PIL import Image

from stratalab.data import load
from tests.conftest import shared_file

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _mnist_fixture(path, per_digit=100):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), per_digit)
    rng.shuffle(y)
    np.savez_compressed(path, x_train=rng.integers(0, 255, (y.size, 28, 28), dtype=np.uint8), y_train=y,
                        x_test=rng.integers(0, 255, (50, 28, 28), dtype=np.uint8), y_test=np.arange(50) % 10)


def _jpegs(images):
    blobs = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(im.transpose(1, 2, 0)).save(buf, format="JPEG", quality=90)
        blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    offsets = np.concatenate([[0], np.cumsum([b.size for b in blobs])]).astype(np.int64)
    return np.concatenate(blobs), offsets


def _cifar_fixture(path, per_class=40, per_class_test=4):
    """cifar10_jpeg.npz in the shared data's format: classes, {split}_jpeg, _offsets, _labels,
    sorted by class. Each class's images have their own flat colour, so decoding can be checked."""
    out = {"classes": np.array(CIFAR_CLASSES)}
    for split, n in (("train", per_class), ("test", per_class_test)):
        labels = np.repeat(np.arange(10), n).astype(np.uint8)
        images = np.stack([np.full((3, 32, 32), 20 * c + 10, dtype=np.uint8) for c in labels])
        out[f"{split}_jpeg"], out[f"{split}_offsets"] = _jpegs(images)
        out[f"{split}_labels"] = labels
        out[f"{split}_index_in_class"] = np.tile(np.arange(n), 10).astype(np.int32)
    np.savez(path, **out)


def test_u_mnist_2rare_makes_one_rare_digit_in_each_class(tmp_path):
    _mnist_fixture(tmp_path / "mnist.npz", per_digit=100)
    ds = load("u-mnist-2rare", data_dir=tmp_path, seed=0)
    val = np.bincount(ds.val.g, minlength=10)
    assert val.tolist() == [20] * 10  # round(20%) of every digit, rare ones included
    train = np.bincount(ds.train.g, minlength=10)
    # 80 of each digit left after val; int(0.95 * 80) = 76 of the 3s and the 9s removed
    assert train.tolist() == [80, 80, 80, 4, 80, 80, 80, 80, 80, 4]
    np.testing.assert_array_equal(ds.train.y, ds.train.g >= 5)  # 3 is in class < 5, 9 in class >= 5
    assert len(ds.test) == 50 and ds.train.input_shape == (1, 32, 32)
    other = load("u-mnist-2rare", data_dir=tmp_path, seed=0, rare_digits="2,7", remove_fraction=0.5)
    assert np.bincount(other.train.g, minlength=10)[[2, 7, 3]].tolist() == [40, 40, 80]
    # one rare digit gives u-mnist exactly (same draws in the same order)
    one = load("u-mnist-2rare", data_dir=tmp_path, seed=3, rare_digits="8")
    um = load("u-mnist", data_dir=tmp_path, seed=3)
    np.testing.assert_array_equal(one.train.x, um.train.x)
    np.testing.assert_array_equal(one.val.g, um.val.g)


def test_rare_digits_given_on_the_command_line_as_a_tuple_or_a_string(tmp_path):
    """The CLI reads ``--option rare_digits=2,7`` as the tuple (2, 7); it was refused while the
    default was the string '3,9'. Both forms now pick the same digits."""
    from typer.testing import CliRunner

    from stratalab.cli.main import app

    _mnist_fixture(tmp_path / "mnist.npz", per_digit=100)
    a = load("u-mnist-2rare", data_dir=tmp_path, seed=0, rare_digits=(2, 7))
    b = load("u-mnist-2rare", data_dir=tmp_path, seed=0, rare_digits="2,7")
    np.testing.assert_array_equal(a.train.g, b.train.g)
    assert np.bincount(a.train.g, minlength=10)[[2, 7, 3, 9]].tolist() == [4, 4, 80, 80]
    for form in ("rare_digits=2,7", "rare_digits='2,7'"):
        res = CliRunner().invoke(app, ["datasets", "show", "u-mnist-2rare", "--data-dir", str(tmp_path), "--option", form])
        assert res.exit_code == 0 and "95% of train 2s and 7s removed" in res.output, (form, res.output)


@pytest.mark.parametrize("name, opts, match", [
    ("u-mnist-2rare", {"rare_digits": "3,3"}, "distinct digits"), ("u-mnist-2rare", {"rare_digits": "3,x"}, "distinct digits"),
    ("u-mnist-2rare", {"rare_digits": "10"}, "distinct digits"), ("u-mnist-2rare", {"rare_digits": (3, 2.5)}, "distinct digits"),
    ("u-mnist-2rare", {"remove_fraction": 1.0}, "remove_fraction"), ("u-mnist", {"remove_fraction": float("nan")}, "remove_fraction"),
    ("u-mnist", {"rare_digit": 12}, "rare_digit must be one digit 0..9")])
def test_mnist_superclass_sets_refuse_bad_options(tmp_path, name, opts, match):
    _mnist_fixture(tmp_path / "mnist.npz", per_digit=10)
    with pytest.raises(ValueError, match=match):
        load(name, data_dir=tmp_path, **opts)


def test_cifar10_super_superclasses_and_rare_birds(tmp_path):
    _cifar_fixture(tmp_path / "cifar10_jpeg.npz", per_class=40)
    ds = load("cifar10-super", data_dir=tmp_path, seed=0)
    assert ds.class_names == ["vehicle", "animal"] and ds.group_names == CIFAR_CLASSES
    train = np.bincount(ds.train.g, minlength=10)
    assert train.tolist() == [36, 36, 2, 36, 36, 36, 36, 36, 36, 36]  # 4 of 40 to val; int(0.95 * 36) = 34 birds removed
    assert np.bincount(ds.val.g, minlength=10).tolist() == [4] * 10
    assert np.bincount(ds.test.g, minlength=10).tolist() == [4] * 10
    for split in ds.splits.values():  # animals (classes 2-7) are 1, vehicles 0
        np.testing.assert_array_equal(split.y, (split.g >= 2) & (split.g <= 7))
    x = ds.train.load_x()
    assert x.shape[1:] == (3, 32, 32)
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)) * 255, 20 * ds.train.g + 10, atol=2)  # each image is its class
    small = load("cifar10-super", data_dir=tmp_path, seed=0, max_train=50, rare_class="cat")
    assert len(small.train) == 50 and len(small.val) == 40
    with pytest.raises(ValueError, match="rare_class must be a CIFAR-10 class"):
        load("cifar10-super", data_dir=tmp_path, rare_class="zebra")


def test_real_files_give_the_documented_counts(shared_data):
    shared_file("mnist.npz")
    two = load("u-mnist-2rare", data_dir=shared_data, seed=0)
    counts = np.bincount(two.train.g, minlength=10)
    assert len(two.train) == 38820 and counts[3] == 246 and counts[9] == 238
    assert counts[[3, 9]].sum() / len(two.train) < 0.013  # each rare digit is ~1% of its class
    shared_file("cifar10_jpeg.npz")
    sup = load("cifar10-super", data_dir=shared_data, seed=0)
    assert len(sup.train) == 40725 and np.bincount(sup.train.g)[2] == 225
    assert np.bincount(sup.train.y).tolist() == [18000, 22725] and len(sup.test) == 10000
