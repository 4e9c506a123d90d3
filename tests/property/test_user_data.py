"""Properties of ``stratalab.data.load(path)`` on a user's own ``.npz`` (x_/y_/g_{train,val,test})
and ``.csv`` (id,filename,split,y,a plus image files): a Dataset whose arrays equal what was
written, or a ValueError / FileNotFoundError (TypeError for a wrongly typed column) naming the
problem. The tests named test_regression_* pin bugs this suite found (all fixed), so each would come back as a failure."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from stratalab.data import load
from tests.property._support import examples, no_numeric_warnings, raises_naming, tick

SPLITS = ("train", "val", "test")
LOAD_ERRORS = (ValueError, FileNotFoundError, TypeError)


# ---------------------------------------------------------------- .npz

@st.composite
def npz_arrays(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """Valid arrays of a user .npz: features (n, d) of any numeric dtype, or images (n, C, H, W)
    as uint8 (scaled to [0, 1] on load) or float; labels of any integer-like dtype; groups or not."""
    kind = draw(st.sampled_from(["features", "uint8_images", "float_images"]))
    if kind == "features":
        dtype = draw(st.sampled_from(["float32", "float64", "int64", "int16", "uint8", "bool"]))
        tail = (draw(st.integers(1, 4)),)
    else:
        dtype = "uint8" if kind == "uint8_images" else draw(st.sampled_from(["float32", "float64"]))
        tail = (draw(st.sampled_from([1, 3])), draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    n_classes = draw(st.integers(1, 3))
    with_groups = draw(st.booleans())
    label_dtype = draw(st.sampled_from(["int64", "int32", "uint8", "float64"]))
    out = {}
    for s in SPLITS:
        n = draw(st.integers(n_classes if s == "train" else 1, 6), label=f"n_{s}")
        elements = (st.floats(allow_nan=False, allow_infinity=False, width=32 if dtype == "float32" else 64)
                    if dtype.startswith("float") else None)
        out[f"x_{s}"] = draw(hnp.arrays(dtype, (n, *tail), elements=elements), label=f"x_{s}")
        labels = draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n))
        if s == "train":  # every class has train examples (a class without any is refused)
            labels = draw(st.permutations(list(range(n_classes)) + labels[n_classes:]))
        out[f"y_{s}"] = np.asarray(labels, dtype=label_dtype)
        if with_groups:
            out[f"g_{s}"] = np.asarray(draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)), dtype=label_dtype)
    return out


def _save_npz(arrays: dict, tmp: str, compressed: bool = False, name: str = "data.npz") -> Path:
    path = Path(tmp) / name
    with open(path, "wb") as fh:  # a file object: np.savez would append ".npz" to "x.NPZ"
        (np.savez_compressed if compressed else np.savez)(fh, **arrays)
    return path


@settings(max_examples=examples(0.6))
@given(npz_arrays(), st.booleans(), st.sampled_from(["data.npz", "My Data.NPZ"]))
def test_npz_loads_what_was_written(arrays, compressed, name):
    tick("user npz valid")
    with tempfile.TemporaryDirectory() as tmp:
        path = _save_npz(arrays, tmp, compressed, name)
        with no_numeric_warnings():
            ds = load(path)
    assert ds.name == name
    n_classes = max(int(arrays[f"y_{s}"].max()) for s in SPLITS) + 1
    assert ds.n_classes == n_classes
    has_g = "g_train" in arrays
    assert (ds.group_names is None) == (not has_g)
    if has_g:
        assert ds.n_groups == max(int(arrays[f"g_{s}"].max()) for s in SPLITS) + 1
    for s in SPLITS:
        sp = ds.splits[s]
        x = arrays[f"x_{s}"]
        assert sp.x.dtype == x.dtype and np.array_equal(sp.x, x)
        assert sp.y.dtype == np.int64 and np.array_equal(sp.y, arrays[f"y_{s}"].astype(np.int64))
        if has_g:
            assert np.array_equal(sp.g, arrays[f"g_{s}"].astype(np.int64))
        else:
            assert sp.g is None
        loaded = sp.load_x()
        if x.dtype == np.uint8 and x.ndim == 4:
            assert loaded.dtype == np.float32 and np.array_equal(loaded, x.astype(np.float32) / 255.0)
        else:
            assert np.array_equal(loaded, x)
        idx = np.arange(len(x))[::-1]
        assert np.array_equal(sp.load_x(idx), loaded[idx])


# (A single .npy array saved under a .npz name was a bug (fixed), pinned by test_regression_npy_named_npz.)
NPZ_BREAKS = ["missing_key", "partial_groups", "x_nan", "x_inf", "x_strings", "y_nan", "y_fraction", "y_negative",
              "y_strings", "y_matrix", "y_longer", "g_longer", "g_negative", "pickled", "not_zip", "truncated",
              "class_not_in_train"]


@settings(max_examples=examples(0.6))
@given(npz_arrays(), st.sampled_from(NPZ_BREAKS), st.sampled_from(SPLITS), st.data())
def test_npz_bad_file_raises_naming_the_problem(arrays, how, split, data):
    tick("user npz bad")
    arrays = dict(arrays)
    x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
    n = len(y)
    i = data.draw(st.integers(0, n - 1), label="row")
    names: tuple[str, ...] = (f"x_{split}",)
    raw = None
    if how == "missing_key":
        key = data.draw(st.sampled_from([f"{k}_{s}" for k in "xy" for s in SPLITS]), label="dropped")
        del arrays[key]
        names = (key,)
    elif how == "partial_groups":
        for s in SPLITS:
            arrays.pop(f"g_{s}", None)
        arrays[f"g_{split}"] = np.zeros(n, dtype=int)
        names = ("g_train", "groups")
    elif how in ("x_nan", "x_inf"):
        x = x.astype(np.float64)
        x.flat[data.draw(st.integers(0, x.size - 1), label="cell")] = np.nan if how == "x_nan" else -np.inf
        arrays[f"x_{split}"] = x
    elif how == "x_strings":
        arrays[f"x_{split}"] = x.astype(str)
    elif how.startswith("y_") or how.startswith("g_"):
        key = "y" if how.startswith("y_") else "g"
        if key == "g":
            for s in SPLITS:
                arrays.setdefault(f"g_{s}", np.zeros(len(arrays[f"y_{s}"]), dtype=int))
        v = arrays[f"{key}_{split}"]
        names = (f"'{split}'",)  # errors are "<file>, split 'val': y ..."
        if how == "y_nan":
            v = v.astype(float)
            v[i] = np.nan
        elif how == "y_fraction":
            v = v.astype(float)
            v[i] += 0.5
        elif how in ("y_negative", "g_negative"):
            v = v.astype(np.int64)
            v[i] = -1
        elif how == "y_strings":
            v = v.astype(str)
        elif how == "y_matrix":
            v = np.stack([v, v])
        else:  # longer than x
            v = np.concatenate([v, v[:1]])
        arrays[f"{key}_{split}"] = v
    elif how == "class_not_in_train":  # labels {1, 2}: class 0 would be a phantom output
        for s in SPLITS:
            arrays[f"y_{s}"] = np.asarray(arrays[f"y_{s}"], dtype=np.int64) + 1
        names = ("class 0", "no train examples")
    elif how == "pickled":
        arrays[f"y_{split}"] = np.array([{"label": 1}] * n, dtype=object)
        names = ("pickle", "Python objects")
    else:
        names = ("data.npz",)
        raw = b"this is not a zip archive"
    with tempfile.TemporaryDirectory() as tmp:
        if how == "pickled":
            path = Path(tmp) / "data.npz"
            np.savez(path, **arrays)  # allow_pickle is on for saving
        elif how == "truncated":
            path = _save_npz(arrays, tmp)
            data_bytes = path.read_bytes()
            cut = data.draw(st.integers(1, len(data_bytes) - 1), label="cut")
            path.write_bytes(data_bytes[:cut])
        elif raw is not None:
            path = Path(tmp) / "data.npz"
            path.write_bytes(raw)
        else:
            path = _save_npz(arrays, tmp)
        raises_naming(lambda: load(path), *names, types=LOAD_ERRORS)


def test_missing_npz_and_folder():
    with tempfile.TemporaryDirectory() as tmp:
        raises_naming(lambda: load(Path(tmp) / "absent.npz"), "absent.npz", types=(FileNotFoundError,))
        folder = Path(tmp) / "folder.npz"
        folder.mkdir()
        raises_naming(lambda: load(folder), "folder", types=(ValueError,))


# ---------------------------------------------------------------- .csv with image files

SPLIT_SPELLINGS = {"train": ["train", "TRAIN", " train ", "0"], "val": ["val", "valid", "Validation", "1"], "test": ["test", "2"]}


@st.composite
def csv_dataset(draw: st.DrawFn) -> dict:
    """Rows id,filename,split,y,a (every split present), and the pixels of each row's image."""
    n = draw(st.integers(3, 12))
    splits = ["train", "val", "test"] + draw(st.lists(st.sampled_from(SPLITS), min_size=n - 3, max_size=n - 3))
    splits = draw(st.permutations(splits))
    if draw(st.booleans(), label="numeric split codes"):
        spelled: list = [SPLITS.index(s) for s in splits]  # an integer column 0/1/2
    else:
        spelled = [draw(st.sampled_from(SPLIT_SPELLINGS[s])) for s in splits]  # names, any case, padded, or "0"/"1"/"2"
    train = [i for i, sp in enumerate(splits) if sp == "train"]
    k = draw(st.integers(1, min(3, len(train))), label="classes")
    y = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    for j, c in zip(draw(st.permutations(train)), range(k)):
        y[j] = c  # every class has train examples (a class without any is refused)
    a = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    size = draw(st.integers(1, 3))
    mode = draw(st.sampled_from(["RGB", "L"]))
    pixels = [draw(hnp.arrays(np.uint8, (size, size, 3) if mode == "RGB" else (size, size))) for _ in range(n)]
    ids = [f"ex{i}" for i in range(n)] if draw(st.booleans()) else list(range(100, 100 + n))
    return {"ids": ids, "splits": splits, "spelled": spelled, "y": y, "a": a, "pixels": pixels, "mode": mode}


def _write_csv(case: dict, tmp: str, rows: pd.DataFrame | None = None, skip_image: int | None = None) -> Path:
    root = Path(tmp)
    (root / "img").mkdir(exist_ok=True)
    for i, px in enumerate(case["pixels"]):
        if i != skip_image:
            Image.fromarray(px).save(root / "img" / f"{i}.png")
    df = rows if rows is not None else _rows(case)
    path = root / "data.csv"
    df.to_csv(path, index=False)
    return path


def _rows(case: dict) -> pd.DataFrame:
    n = len(case["y"])
    return pd.DataFrame({"id": case["ids"], "filename": [f"img/{i}.png" for i in range(n)], "split": case["spelled"],
                         "y": case["y"], "a": case["a"]})


@settings(max_examples=examples(0.3))
@given(csv_dataset())
def test_csv_loads_what_was_written(case):
    tick("user csv valid")
    with tempfile.TemporaryDirectory() as tmp:
        path = _write_csv(case, tmp)
        with no_numeric_warnings():
            ds = load(path, image_size=None)
            n_attr = max(case["a"]) + 1
            assert ds.n_classes == max(case["y"]) + 1
            assert ds.n_groups == ds.n_classes * n_attr
            for s in SPLITS:
                idx = [i for i, sp in enumerate(case["splits"]) if sp == s]
                sp = ds.splits[s]
                assert list(sp.x) == [str(Path(tmp) / f"img/{i}.png") for i in idx]
                assert sp.y.tolist() == [case["y"][i] for i in idx]
                assert sp.g.tolist() == [case["y"][i] * n_attr + case["a"][i] for i in idx]
                assert sp.attrs["a"].tolist() == [case["a"][i] for i in idx]
                assert [str(v) for v in sp.attrs["id"]] == [str(case["ids"][i]) for i in idx]
                images = sp.load_x()
                want = []
                for i in idx:
                    px = case["pixels"][i]
                    rgb = np.repeat(px[:, :, None], 3, axis=2) if px.ndim == 2 else px
                    want.append(rgb.astype(np.float32).transpose(2, 0, 1) / 255.0)
                assert images.dtype == np.float32 and np.array_equal(images, np.stack(want))


CSV_BREAKS = ["missing_column", "y_missing", "a_missing", "y_fraction", "y_negative", "a_negative", "y_text",
              "split_bad", "split_absent", "image_missing", "zero_bytes", "garbage", "class_not_in_train"]


@settings(max_examples=examples(0.3))
@given(csv_dataset(), st.sampled_from(CSV_BREAKS), st.data())
def test_csv_bad_file_raises_naming_the_problem(case, how, data):
    tick("user csv bad")
    df = _rows(case)
    n = len(df)
    i = data.draw(st.integers(0, n - 1), label="row")
    skip_image = None
    raw = None
    if how == "missing_column":
        col = data.draw(st.sampled_from(["id", "filename", "split", "y", "a"]), label="column")
        df = df.drop(columns=[col])
        names: tuple[str, ...] = (f"'{col}'",)
    elif how in ("y_missing", "a_missing"):
        col = how[0]
        df[col] = df[col].astype(float)
        df.loc[i, col] = np.nan
        names = (f"'{col}'",)
    elif how == "y_fraction":
        df["y"] = df["y"] + 0.5
        names = ("'y'",)
    elif how in ("y_negative", "a_negative"):
        col = how[0]
        df.loc[i, col] = -1
        names = (f"'{col}'",)
    elif how == "y_text":
        df["y"] = df["y"].astype(object)
        df.loc[i, "y"] = "cat"
        names = ("'y'",)
    elif how == "split_bad":
        df["split"] = df["split"].astype(object)
        df.loc[i, "split"] = data.draw(st.sampled_from(["training", "3", "", "tset"]), label="split value")
        names = ("split",)
    elif how == "split_absent":
        gone = data.draw(st.sampled_from(SPLITS), label="absent split")
        keep = [j for j, s in enumerate(case["splits"]) if s != gone]
        df = df.iloc[keep]
        names = (f"'{gone}'",)
    elif how == "class_not_in_train":  # labels shifted by one: class 0 has no examples anywhere
        df["y"] = df["y"] + 1
        names = ("class 0", "no train examples")
    elif how == "image_missing":
        skip_image = i
        names = (f"img/{i}.png",)
    else:
        raw = b"" if how == "zero_bytes" else b"\xff\xfe\x00binary\x00junk"
        names = ("data.csv",)
    with tempfile.TemporaryDirectory() as tmp:
        path = _write_csv(case, tmp, rows=df, skip_image=skip_image)
        if raw is not None:
            path.write_bytes(raw)
        raises_naming(lambda: load(path, image_size=None), *names, types=LOAD_ERRORS)


# ---------------------------------------------------------------- regressions: bugs this suite found in stratalab/data (fixed)

def _arrays(**override):
    rng = np.random.default_rng(0)
    out = {}
    for s in SPLITS:
        out[f"x_{s}"] = rng.standard_normal((4, 3)).astype(np.float32)
        out[f"y_{s}"] = np.array([0, 1, 0, 1])
    out.update(override)
    return out


@pytest.mark.parametrize("empty", ["y", "g"])
def test_regression_npz_empty_split(empty):
    extra = {"x_val": np.zeros((0, 3), np.float32), "y_val": np.zeros(0, int)}
    if empty == "g":
        extra.update(g_train=np.zeros(4, int), g_val=np.zeros(0, int), g_test=np.zeros(4, int))
    with tempfile.TemporaryDirectory() as tmp:
        path = _save_npz(_arrays(**extra), tmp)
        raises_naming(lambda: load(path), "'val'", "no examples", types=LOAD_ERRORS)


@pytest.mark.parametrize("x_val", ["other_width", "one_dim", "scalar"])
def test_regression_npz_x_shapes(x_val):
    bad = {"other_width": np.zeros((4, 5), np.float32), "one_dim": np.zeros(4, np.float32), "scalar": np.float32(1.0)}[x_val]
    with tempfile.TemporaryDirectory() as tmp:
        path = _save_npz(_arrays(x_val=bad), tmp)
        e = raises_naming(lambda: load(path), "x_val", types=LOAD_ERRORS)
        assert "unsized" not in str(e)


@pytest.mark.parametrize("where", ["npz", "csv"])
def test_regression_infinite_label(where):
    with tempfile.TemporaryDirectory() as tmp:
        if where == "npz":
            path = _save_npz(_arrays(y_val=np.array([0, 1, np.inf, 0])), tmp)
        else:
            path = Path(tmp) / "data.csv"
            path.write_text("id,filename,split,y,a\n0,a.png,train,inf,0\n1,b.png,val,0,0\n2,c.png,test,1,0\n")
        raises_naming(lambda: load(path), "'y'", "y_val", types=LOAD_ERRORS)


def test_regression_csv_header_only():
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.csv"
        path.write_text("id,filename,split,y,a\n")
        raises_naming(lambda: load(path), "no rows", "no examples", types=(ValueError,))


def test_regression_npy_named_npz():
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.npz"
        with open(path, "wb") as fh:
            np.save(fh, np.zeros((4, 3)))
        raises_naming(lambda: load(path), "data.npz", types=LOAD_ERRORS)


def test_regression_text_named_npz_is_not_called_pickled():
    """A CSV saved under an .npz name was reported as holding "Python objects (pickled)"."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.npz"
        path.write_text("a,b\n1,2\n")
        e = raises_naming(lambda: load(path), "data.npz", "a text file", types=LOAD_ERRORS)
        assert "pickle" not in str(e)
