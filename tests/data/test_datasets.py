import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stratalab.data import SPLITS, Split, available, load
from tests.conftest import shared_file


def test_registry_lists_every_documented_dataset():
    names = {d.name for d in available()}
    assert {"synthetic-gmm", "u-digits", "u-mnist", "spurious-mnist", "cifar10-b", "waterbirds", "celeba",
            "civilcomments", "multinli"} <= names


# ---------------------------------------------------------------- synthetic-gmm
def test_synthetic_gmm_fig2_layout():
    ds = load("synthetic-gmm", seed=0, n_train=20000)
    tr = ds.train
    # g = 2*y + z2; rare subclasses (z2 == y) are ~5% of each class, in opposite corners
    assert np.array_equal(tr.g // 2, tr.y)
    rare = (tr.g % 2) == tr.y
    assert rare.mean() == pytest.approx(0.05, abs=0.01)
    means = np.array([tr.x[tr.g == k].mean(0) for k in range(4)])
    np.testing.assert_allclose(means, [[-1, -2], [-1, 2], [1, -2], [1, 2]], atol=0.15)
    # the class moves the mean along axis 0, the hidden attribute along axis 1
    assert ds.test.g.tolist().count(0) == pytest.approx(500, abs=80)  # balanced eval
    np.testing.assert_allclose(tr.x[tr.g == 1].std(0), [1, 1], atol=0.05)


def test_synthetic_gmm_is_deterministic_and_configurable():
    a = load("synthetic-gmm", seed=3)
    b = load("synthetic-gmm", seed=3)
    np.testing.assert_array_equal(a.train.x, b.train.x)
    c = load("synthetic-gmm", seed=3, n_attributes=3, label_attributes=(0, 1), dim=6, separation=3.0)
    assert c.train.x.shape == (2000, 6) and len(c.group_names) == 8
    z = c.train.attrs["z"]
    np.testing.assert_array_equal(c.train.y, (z[:, 0] + z[:, 1]) % 2)
    with pytest.raises(ValueError, match="label_attributes"):
        load("synthetic-gmm", label_attributes=(5,))
    with pytest.raises(TypeError, match="no option 'bogus'"):
        load("synthetic-gmm", bogus=1)


# ---------------------------------------------------------------- u-digits
def test_u_digits_construction():
    from sklearn.datasets import load_digits

    ds = load("u-digits", seed=0)
    assert ds.n_classes == 2 and ds.group_names == [str(d) for d in range(10)]
    for s in SPLITS:
        sp = ds.splits[s]
        np.testing.assert_array_equal(sp.y, (sp.g >= 5).astype(int))
        x = sp.load_x()
        assert x.shape[1:] == (1, 8, 8) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1.0
    # exact sizes: per digit, round(20%) to test, round(20%) of the whole (= 25% of the rest) to val,
    # and in train only the digit 8 keeps n - int(0.75 n)
    n_d = np.bincount(load_digits().target)
    for d in range(10):
        test = round(0.2 * n_d[d])
        val = round(0.25 * (n_d[d] - test))
        train = n_d[d] - test - val
        if d == 8:
            train -= int(0.75 * train)
        got = [int((ds.splits[s].g == d).sum()) for s in SPLITS]
        assert got == [train, val, test], f"digit {d}"
    n8 = int((ds.train.g == 8).sum())
    assert 25 <= n8 < 0.3 * np.mean([(ds.train.g == d).sum() for d in (5, 6, 7, 9)])


def test_u_digits_splits_do_not_overlap():
    from sklearn.datasets import load_digits

    ds = load("u-digits", seed=1)
    # every image appears no more often across splits than in the source (digits has exact duplicates)
    allx = np.concatenate([ds.splits[s].x.reshape(len(ds.splits[s]), -1) for s in SPLITS])
    ref = np.rint(load_digits().images.reshape(1797, -1) * (255 / 16)).astype(np.uint8)
    rows_ref, ref_counts = np.unique(ref, axis=0, return_counts=True)
    rows_got, got_counts = np.unique(allx, axis=0, return_counts=True)
    lookup = {r.tobytes(): c for r, c in zip(rows_ref, ref_counts)}
    assert all(c <= lookup[r.tobytes()] for r, c in zip(rows_got, got_counts))


def test_u_digits_seed_changes_split_but_not_sizes():
    a, b = load("u-digits", seed=0), load("u-digits", seed=1)
    assert len(a.train) == len(b.train)
    assert not np.array_equal(a.train.x, b.train.x)


# ---------------------------------------------------------------- MNIST-based
def test_u_mnist_matches_george_construction(shared_data):
    shared_file("mnist.npz")
    ds = load("u-mnist", data_dir=shared_data, seed=0)
    assert len(ds.train) == 43554 and (ds.train.g == 8).sum() == 235
    assert len(ds.val) == 12000 and len(ds.test) == 10000
    assert ds.train.x.shape[1:] == (1, 32, 32)
    # val has round(20%) of every digit of the 60k train set
    counts = np.bincount(ds.val.g, minlength=10)
    assert counts.tolist() == [1185, 1348, 1192, 1226, 1168, 1084, 1184, 1253, 1170, 1190]
    ds2 = load("u-mnist", data_dir=shared_data, seed=1)
    assert len(ds2.train) == 43554 and not np.array_equal(ds.val.x[:50], ds2.val.x[:50])


def test_spurious_mnist_correlation_and_balance(shared_data):
    shared_file("mnist.npz")
    ds = load("spurious-mnist", data_dir=shared_data, seed=0, class_imbalance=3.0)
    tr = ds.train
    a = tr.attrs["spurious"]
    assert (a == tr.y).mean() == pytest.approx(0.95, abs=0.01)
    n0, n1 = np.bincount(tr.y)
    assert n0 / n1 == pytest.approx(3.0, rel=0.05)
    for s in ("val", "test"):
        counts = np.bincount(ds.splits[s].g, minlength=4)
        assert len(set(counts)) == 1 and counts[0] > 1000
    # the spurious feature is really in the pixels: the patch corner is white
    x = tr.load_x(np.arange(200))
    tl = x[:, 0, 1:5, 1:5].mean(axis=(1, 2))
    assert np.all(tl[a[:200] == 0] == 1.0)
    col = load("spurious-mnist", data_dir=shared_data, spurious="color", n_train=500)
    assert col.train.x.shape[1:] == (3, 32, 32) and len(col.train) == 500


def test_cifar10_b_groups_on_test(shared_data):
    shared_file("cifar10_jpeg.npz")
    ds = load("cifar10-b", data_dir=shared_data, max_train=1000)
    assert ds.train.g is None and len(ds.train) == 1000 and len(ds.val) == 5000
    sizes = np.bincount(ds.test.g, minlength=8).tolist()
    assert sizes == [2863, 1040, 2467, 676, 401, 2114, 168, 271]  # shared/data/README.md
    assert ds.test.load_x(np.arange(4)).shape == (4, 3, 32, 32)


def test_missing_data_dir_and_file_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("STRATALAB_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="pass data_dir"):
        load("u-mnist", data_dir=None)
    with pytest.raises(FileNotFoundError, match="mnist.npz"):
        load("u-mnist", data_dir=tmp_path)
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="lacks array 'y_train'"):
        load("u-mnist", data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown data set"):
        load("no-such-set")


# ---------------------------------------------------------------- standard benchmarks on fixtures
def _tiny_image(path, color):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 5), color).save(path)


def test_waterbirds_real_metadata_counts(tmp_path):
    meta = shared_file("waterbirds_metadata.csv")
    ds = load("waterbirds", data_dir=meta.parent, metadata=meta.name, check_files=False)
    sizes = {s: len(ds.splits[s]) for s in SPLITS}
    assert sizes == {"train": 4795, "val": 1199, "test": 5794}
    assert np.bincount(ds.train.g).tolist() == [3525, 186, 54, 1030]
    assert np.bincount(ds.test.g).tolist() == [2255, 2255, 642, 642]
    with pytest.raises(FileNotFoundError, match="image files listed"):
        load("waterbirds", data_dir=meta.parent, metadata=meta.name)


def test_waterbirds_with_images(tmp_path):
    meta = shared_file("waterbirds_metadata.csv")
    df = pd.read_csv(meta).groupby(["split", "y", "place"]).head(2)
    df.to_csv(tmp_path / "metadata.csv", index=False)
    for f, y in zip(df["img_filename"], df["y"]):
        _tiny_image(tmp_path / f, (0, 0, 255) if y else (0, 255, 0))
    ds = load("waterbirds", data_dir=tmp_path, image_size=8)
    x = ds.test.load_x()
    assert x.shape == (8, 3, 8, 8)
    # waterbirds (y=1) were drawn blue
    assert np.allclose(x[ds.test.y == 1][:, 2], 1.0, atol=0.02) and np.allclose(x[ds.test.y == 0][:, 2], 0.0, atol=0.02)  # JPEG is lossy
    np.testing.assert_array_equal(ds.test.g, 2 * ds.test.y + ds.test.attrs["place"])


def test_celeba_official_text_format(tmp_path):
    root = tmp_path / "celeba"
    names = ["Blond_Hair", "Male", "Young"]
    rows = [("000001.jpg", 1, -1, 1), ("000002.jpg", -1, 1, 1), ("000003.jpg", 1, 1, -1),
            ("000004.jpg", -1, -1, -1), ("000005.jpg", 1, -1, 1), ("000006.jpg", -1, 1, -1)]
    lines = [str(len(rows)), " ".join(names)] + [f"{r[0]} " + "  ".join(f"{v:2d}" for v in r[1:]) for r in rows]
    root.mkdir()
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("\n".join(f"{r[0]} {i % 3}" for i, r in enumerate(rows)) + "\n")
    for r in rows:
        _tiny_image(root / "img_align_celeba" / r[0], (200, 180, 20))
    ds = load("celeba", data_dir=tmp_path, image_size=4)
    assert ds.train.y.tolist() == [1, 0] and ds.train.g.tolist() == [2, 0]  # g = 2*blond + male
    young = load("celeba", data_dir=tmp_path, target="Young", spurious="Male", image_size=4)
    assert young.class_names == ["not Young", "Young"] and young.test.y.tolist() == [0, 0]
    with pytest.raises(ValueError, match="no attribute 'Smiling'"):
        load("celeba", data_dir=tmp_path, target="Smiling")


def test_civilcomments_wilds_format(tmp_path):
    ident = ["male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white"]
    df = pd.DataFrame({
        "id": range(6),
        "comment_text": ["a", "b", "c", "d", "e", "f"],
        "split": ["train", "train", "val", "val", "test", "test"],
        "toxicity": [0.9, 0.1, 0.5, 0.49, 0.0, 0.7],
        **{k: [0.0] * 6 for k in ident},
    })
    df.loc[0, "muslim"] = 0.8
    df.loc[3, "female"] = 0.6
    df.loc[3, "black"] = 0.9
    df.loc[5, "white"] = 0.2
    df.to_csv(tmp_path / "all_data_with_identities.csv")
    coarse = load("civilcomments", data_dir=tmp_path)
    assert coarse.train.y.tolist() == [1, 0] and coarse.train.g.tolist() == [3, 0]
    assert coarse.val.g.tolist() == [2, 1]
    fine = load("civilcomments", data_dir=tmp_path, grouping="fine")
    assert len(fine.group_names) == 18
    assert fine.train.g.tolist() == [9 + 5, 0]  # toxic, muslim (index 4 -> a = 5)
    assert fine.val.g.tolist() == [9, 2]  # female first of (female, black)
    assert fine.val.attrs["black"].tolist() == [0, 1]
    assert fine.test.load_x().tolist() == ["e", "f"]


def test_multinli_metadata(tmp_path):
    meta = pd.DataFrame({"gold_label": [0, 1, 2, 0, 1, 2], "sentence2_has_negation": [1, 0, 0, 0, 1, 1],
                         "split": [0, 0, 1, 1, 2, 2]})
    meta.to_csv(tmp_path / "metadata_random.csv")
    ds = load("multinli", data_dir=tmp_path)
    assert ds.train.g.tolist() == [1, 2] and ds.test.g.tolist() == [3, 5]
    pd.DataFrame({"sentence1": list("PQRSTU"), "sentence2": list("pqrstu")}).to_csv(tmp_path / "multinli_text.csv", index=False)
    ds = load("multinli", data_dir=tmp_path)
    assert ds.val.load_x().tolist() == ["R [SEP] r", "S [SEP] s"]
    meta.assign(gold_label=[0, 1, 5, 0, 1, 2]).to_csv(tmp_path / "metadata_random.csv")
    with pytest.raises(ValueError, match="gold_label must be 0/1/2"):
        load("multinli", data_dir=tmp_path)


# ---------------------------------------------------------------- user data
def test_user_npz_features(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for s, n in (("train", 20), ("val", 10), ("test", 10)):
        arrays[f"x_{s}"] = rng.standard_normal((n, 5)).astype(np.float32)
        arrays[f"y_{s}"] = rng.integers(0, 2, n)
        arrays[f"g_{s}"] = rng.integers(0, 4, n)
    np.savez(tmp_path / "feats.npz", **arrays)
    ds = load(str(tmp_path / "feats.npz"))
    assert ds.train.x.shape == (20, 5) and ds.n_groups == 4
    bad = dict(arrays)
    bad["y_val"] = np.array([0, 1, 2, 0.5, 0, 1, 0, 1, 0, 1])
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(ValueError, match="split 'val'.*integer labels"):
        load(tmp_path / "bad.npz")
    del bad["y_val"]
    np.savez(tmp_path / "bad2.npz", **bad)
    with pytest.raises(ValueError, match="lacks array 'x_val'|lacks array 'y_val'"):
        load(tmp_path / "bad2.npz")


def test_user_csv_images(tmp_path):
    rows = []
    for i, (split, y, a) in enumerate([("train", 0, 0), ("train", 1, 1), ("val", 0, 1), ("test", 1, 0)]):
        f = f"img/{i}.png"
        _tiny_image(tmp_path / f, (10 * i, 0, 0))
        rows.append((i, f, split, y, a))
    pd.DataFrame(rows, columns=["id", "filename", "split", "y", "a"]).to_csv(tmp_path / "data.csv", index=False)
    ds = load(tmp_path / "data.csv", image_size=4)
    assert ds.train.g.tolist() == [0, 3] and ds.group_names[3] == "1/a=1"
    assert ds.test.load_x().shape == (1, 3, 4, 4)
    pd.DataFrame(rows, columns=["id", "file", "split", "y", "a"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="no column 'filename'"):
        load(tmp_path / "bad.csv")


def test_split_validation():
    with pytest.raises(ValueError, match="x has 2 entries but y has 3"):
        Split(x=np.zeros((2, 3)), y=[0, 1, 1])
    with pytest.raises(ValueError, match="has no 'test' split"):
        from stratalab.data import Dataset

        Dataset("d", {"train": Split(np.zeros((1, 1)), [0]), "val": Split(np.zeros((1, 1)), [0])}, ["a"])


def test_user_npz_uint8_images_are_scaled(tmp_path):
    arrays = {}
    for s, n in (("train", 6), ("val", 4), ("test", 4)):
        arrays[f"x_{s}"] = np.full((n, 1, 4, 4), 255, dtype=np.uint8)
        arrays[f"y_{s}"] = np.arange(n) % 2
    np.savez(tmp_path / "imgs.npz", **arrays)
    ds = load(tmp_path / "imgs.npz")
    x = ds.train.load_x()
    assert x.dtype == np.float32 and x.max() == 1.0


def _mnist_like(path, n=12):
    rng = np.random.default_rng(0)
    np.savez_compressed(path, x_train=rng.integers(0, 255, (n, 28, 28), dtype=np.uint8), y_train=np.arange(n) % 10,
                        x_test=rng.integers(0, 255, (n, 28, 28), dtype=np.uint8), y_test=np.arange(n) % 10)
    return path


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "empty", "garbage"])
def test_corrupt_mnist_gives_one_clear_error(tmp_path, damage):
    """A truncated, bit-flipped, empty or garbage mnist.npz is refused with a ValueError naming the
    file (before: BadZipFile / zlib tracebacks, "Aborted." for an empty file)."""
    path = _mnist_like(tmp_path / "mnist.npz")
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "bitflip":
        b = bytearray(raw)
        b[len(b) // 3] ^= 0xFF
        path.write_bytes(bytes(b))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(ValueError, match=r"mnist\.npz"):
        load("u-mnist", data_dir=tmp_path)


def test_checksum_file_beside_data_is_verified(tmp_path):
    """A SHA256SUMS beside the data file is checked: a matching sum loads, a mismatch is refused."""
    import hashlib

    from stratalab.data.files import verify_checksum

    path = _mnist_like(tmp_path / "mnist.npz", n=40)
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "SHA256SUMS").write_text(f"{good}  mnist.npz\n{'0' * 64}  other.csv\n")
    assert verify_checksum(path) is True
    assert verify_checksum(tmp_path / "SHA256SUMS") is False  # not listed: nothing known
    (tmp_path / "SHA256SUMS").write_text(f"{'ab' * 32}  mnist.npz\n")
    with pytest.raises(ValueError, match="does not match its checksum"):
        load("u-mnist", data_dir=tmp_path)


def test_shared_data_checksums_hold(shared_data):
    from stratalab.data.files import verify_checksum

    for name in ("mnist.npz", "cifar10_b_groups.csv", "waterbirds_metadata.csv"):
        assert verify_checksum(shared_data / name) is True


def test_user_npz_never_unpickles(tmp_path):
    """An .npz holding an object array would need pickle: refused, never loaded."""
    arrays = {f"{k}_{s}": np.zeros((4, 2)) if k == "x" else np.arange(4) % 2 for s in ("train", "val", "test") for k in "xy"}
    arrays["x_train"] = np.array([{"evil": 1}] * 4, dtype=object)
    np.savez(tmp_path / "obj.npz", **arrays)
    with pytest.raises(ValueError, match="pickle"):
        load(tmp_path / "obj.npz")
    with pytest.raises(ValueError, match="is a directory"):
        load(tmp_path)


def test_u_mnist_resize_stretches_digits_bilinearly_like_the_reference(tmp_path):
    """resize=True (the GEORGE reference loader: torchvision Resize((32, 32)) on PIL images) gives
    the bilinear upsampling of each 28x28 digit (checked against torch's bilinear interpolation,
    align_corners=False, to one grey level), not the zero-padded image; splits are unchanged."""
    import torch

    path = _mnist_like(tmp_path / "mnist.npz", n=40)
    pad = load("u-mnist", data_dir=tmp_path, seed=0, resize=False)
    res = load("u-mnist", data_dir=tmp_path, seed=0)  # the default: resized, as the reference code
    assert res.train.x.shape[1:] == (1, 32, 32) and res.train.x.dtype == np.uint8
    np.testing.assert_array_equal(res.train.y, pad.train.y)
    np.testing.assert_array_equal(res.test.g, pad.test.g)
    raw = np.load(path)["x_test"]
    want = torch.nn.functional.interpolate(torch.tensor(raw, dtype=torch.float64)[:, None], size=(32, 32),
                                           mode="bilinear", align_corners=False).numpy()
    assert np.abs(res.test.x.astype(float) - want).max() <= 1.0
    assert (pad.test.x[:, :, :2] == 0).all() and (res.test.x[:, :, :2] > 0).any()  # padding vs stretched
    with pytest.raises(TypeError, match="resize"):
        load("u-mnist", data_dir=tmp_path, seed=0, resize="yes")


def test_every_mnist_based_data_set_loads_from_the_canonical_file(tmp_path):
    """u-mnist, spurious-mnist and mnist-digits all load a small mnist.npz fixture into 1x32x32."""
    _mnist_like(tmp_path / "mnist.npz", n=200)
    for name, opts in (("u-mnist", {}), ("u-mnist", {"resize": False}), ("mnist-digits", {}), ("spurious-mnist", {})):
        ds = load(name, data_dir=tmp_path, seed=0, **opts)
        assert ds.train.load_x(np.arange(2)).shape == (2, 1, 32, 32), name
        assert ds.train.input_shape == ds.test.input_shape == (1, 32, 32), name
    assert load("synthetic-gmm", seed=0).train.input_shape == (load("synthetic-gmm", seed=0).train.x.shape[1],)
