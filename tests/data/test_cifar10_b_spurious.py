"""``cifar10-b-spurious`` (issue 21: a CIFAR task with a real background as its spurious feature,
for LaBonte et al.'s finetuning study) and ``cifar10-b``'s ``classes`` option (its pretraining
source). Counts are checked by hand on a canonical-format fixture written here, and on the real
files of ../shared/data where they are present."""

import numpy as np
import pandas as pd
import pytest

from stratalab.data import load
from tests.conftest import shared_file
from tests.data.test_hidden_strat_sets import CIFAR_CLASSES, _jpegs

GREEN = {"cat": 15, "dog": 15, "deer": 35, "horse": 35}  # of 60 test images per class; other classes 10


def _fixture(path, per_class_test=60):
    """cifar10_jpeg.npz plus cifar10_b_groups.csv. Every image is flat: channel 0 = its class
    (20 c + 10), channel 1 = its colour group (30 k), channel 2 = its index in class (4 i), so the
    decoded pixels say which image landed where."""
    out = {"classes": np.array(CIFAR_CLASSES)}
    rows = []
    for split, n in (("train", 6), ("test", per_class_test)):
        labels = np.repeat(np.arange(10), n).astype(np.uint8)
        index = np.tile(np.arange(n), 10)
        colour = np.array([0 if i < GREEN.get(CIFAR_CLASSES[c], 10) else 1 + i % 7 for c, i in zip(labels, index)])
        images = np.stack([np.stack([np.full((32, 32), v, dtype=np.uint8) for v in (20 * c + 10, 30 * k, 4 * i)])
                           for c, k, i in zip(labels, colour, index)])
        out[f"{split}_jpeg"], out[f"{split}_offsets"] = _jpegs(images)
        out[f"{split}_labels"] = labels
        out[f"{split}_index_in_class"] = index.astype(np.int32)
        if split == "test":
            rows = [(CIFAR_CLASSES[c], int(i), int(k)) for c, i, k in zip(labels, index, colour)]
    np.savez(path / "cifar10_jpeg.npz", **out)
    pd.DataFrame(rows, columns=["class_name", "index_in_class", "group"]).to_csv(path / "cifar10_b_groups.csv", index=False)


def _decoded(split):
    """(class, colour group, index in class) of every image, read back from its pixels."""
    m = split.load_x().mean(axis=(2, 3)) * 255
    return np.rint((m[:, 0] - 10) / 20).astype(int), np.rint(m[:, 1] / 30).astype(int), np.rint(m[:, 2] / 4).astype(int)


def test_groups_correlation_and_imbalance_counted_by_hand(tmp_path):
    _fixture(tmp_path)
    # test pool: cat/dog 90 not green + 30 green, deer/horse 50 not green + 70 green; 5 + 10 of each group
    # go to val and test, leaving 75 / 15 / 35 / 55. At p = 0.9 class 0 can hold floor(75 / 0.9) = 83, class 1
    # floor(55 / 0.9) = 61; ratio 1 cuts class 0 to 61: round(0.9 * 61) = 55 agree + 6; ratio 5 cuts class 1
    # to floor(83 / 5) = 16 (round(14.4) = 14 + 2) and class 0 to 5 * 16 = 80 (72 + 8).
    for ratio, want in ((1, [55, 6, 6, 55]), (5, [72, 8, 2, 14])):
        ds = load("cifar10-b-spurious", data_dir=tmp_path, seed=0, n_val=5, n_test=10, class_imbalance=ratio)
        assert np.bincount(ds.train.g, minlength=4).tolist() == want, ratio
        assert np.bincount(ds.val.g, minlength=4).tolist() == [5] * 4
        assert np.bincount(ds.test.g, minlength=4).tolist() == [10] * 4
        seen = set()
        for split in ds.splits.values():
            c, k, i = _decoded(split)
            names = np.array(CIFAR_CLASSES)[c]
            np.testing.assert_array_equal(split.y, np.isin(names, ["deer", "horse"]))  # class 1 = deer/horse
            assert np.isin(names, ["cat", "dog", "deer", "horse"]).all()
            np.testing.assert_array_equal(split.attrs["spurious"], k == 0)  # a = 1 on the green background
            np.testing.assert_array_equal(split.g, 2 * split.y + (k == 0))
            ids = set(zip(c.tolist(), i.tolist()))
            assert len(ids) == len(split) and not ids & seen  # no image twice, no image in two splits
            seen |= ids
    assert ds.group_names == ["cat/dog/not green?", "cat/dog/green?", "deer/horse/not green?", "deer/horse/green?"]
    again = load("cifar10-b-spurious", data_dir=tmp_path, seed=0, n_val=5, n_test=10, class_imbalance=5)
    np.testing.assert_array_equal(again.train.x, ds.train.x)  # seeded
    other = load("cifar10-b-spurious", data_dir=tmp_path, seed=1, n_val=5, n_test=10, class_imbalance=5)
    assert not np.array_equal(other.test.x, ds.test.x)


def test_other_classes_and_full_correlation(tmp_path):
    _fixture(tmp_path)
    ds = load("cifar10-b-spurious", data_dir=tmp_path, class0="airplane", class1=("frog",), spurious_correlation=1.0,
              n_val=3, n_test=3)
    assert ds.class_names == ["airplane", "frog"]
    # p = 1: only agreeing images (44 airplanes not on green, 4 frogs on green), and ratio 1 cuts the airplanes to 4
    assert np.bincount(ds.train.g, minlength=4).tolist() == [4, 0, 0, 4]
    c, _, _ = _decoded(ds.train)
    np.testing.assert_array_equal(np.array(CIFAR_CLASSES)[c] == "frog", ds.train.y == 1)


def test_a_whole_float_colour_reads_as_the_int(tmp_path):
    """YAML and JSON may give ``colour: 2.0``: the same data as 2, and the group named by its colour."""
    _fixture(tmp_path)
    as_int = load("cifar10-b-spurious", data_dir=tmp_path, colour=2, n_val=1, n_test=1, spurious_correlation=0.6)
    as_float = load("cifar10-b-spurious", data_dir=tmp_path, colour=2.0, n_val=1, n_test=1, spurious_correlation=0.6)
    np.testing.assert_array_equal(as_float.train.x, as_int.train.x)
    assert as_float.group_names == as_int.group_names and as_int.group_names[1] == "cat/dog/blue?"


@pytest.mark.parametrize("opts, match", [
    ({"class0": "cat,deer"}, "share 'deer'"), ({"class1": "zebra"}, "'zebra' is not one of them"),
    ({"class0": "cat,cat"}, "each named once"), ({"n_val": 40, "n_test": 30}, "leave no train images"),
    ({"spurious_correlation": 0.3}, "spurious_correlation"), ({"class_imbalance": 0.5}, "class_imbalance"),
    ({"colour": 8}, "colour must be a CIFAR-10-B group"), ({"n_test": 0}, "n_val and n_test"),
    ({"spurious_correlation": 0.99, "class_imbalance": 5, "n_val": 5, "n_test": 10}, "leaves class 1 no train image that disagrees")])
def test_bad_options_are_named(tmp_path, opts, match):
    _fixture(tmp_path)
    with pytest.raises(ValueError, match=match):
        load("cifar10-b-spurious", data_dir=tmp_path, **opts)


def test_cifar10_b_keeps_the_named_classes_in_the_order_given(tmp_path):
    _fixture(tmp_path)
    ds = load("cifar10-b", data_dir=tmp_path, val_fraction=0.5, classes="ship,airplane")
    assert ds.class_names == ["ship", "airplane"]
    for split, n in (("train", 6), ("val", 6), ("test", 120)):
        sp = ds.splits[split]
        c, _, _ = _decoded(sp)
        np.testing.assert_array_equal(np.array(CIFAR_CLASSES)[c], np.array(["ship", "airplane"])[sp.y])
        assert len(sp) == n, split
    _, _, index = _decoded(ds.test)
    np.testing.assert_array_equal(ds.test.attrs["index_in_class"], index)  # each test image keeps its own key
    with pytest.raises(ValueError, match="option classes must be CIFAR-10 class names"):
        load("cifar10-b", data_dir=tmp_path, classes="ship,boat")


def test_real_files_give_the_documented_counts(shared_data):
    shared_file("cifar10_jpeg.npz")
    for ratio, want in ((1, [871, 97, 97, 871]), (5, [1332, 148, 30, 266]), (20, [1332, 148, 7, 67]), (50, [1305, 145, 3, 26])):
        ds = load("cifar10-b-spurious", data_dir=shared_data, seed=0, class_imbalance=ratio)
        assert np.bincount(ds.train.g, minlength=4).tolist() == want, ratio
        assert np.bincount(ds.test.g).tolist() == [150] * 4 and np.bincount(ds.val.g).tolist() == [75] * 4


def test_the_description_states_the_correlation_obtained(tmp_path):
    """Few images cannot give every fraction: n_val=14 and n_test=15 leave 1 green cat/dog, so class 0
    holds 2 images and p = 0.6 becomes 1 of 2. The set says so rather than claiming 60% (it used to
    round both counts to 2 and silently keep no disagreeing image at all)."""
    _fixture(tmp_path)
    ds = load("cifar10-b-spurious", data_dir=tmp_path, n_val=14, n_test=15, spurious_correlation=0.6)
    assert np.bincount(ds.train.g, minlength=4).tolist() == [1, 1, 1, 1]
    assert "in 50.0% of train (asked 0.6), class imbalance 1.00:1 (asked 1)" in ds.description
