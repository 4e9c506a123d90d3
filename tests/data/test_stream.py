"""Folder-backed data read by worker processes, the decoded-image cache and the centre crop
(issue 20, item 4): the numbers never depend on the worker count."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stratalab.data import load
from stratalab.data.files import ImageLoader
from stratalab.data.stream import check_workers, iter_batches
from stratalab.models import build_model, embed
from stratalab.models.build import write_features
from stratalab.train import TrainConfig, run
from tests.conftest import write_waterbirds_folder


def test_crop_keeps_the_centre_of_the_resized_image(tmp_path):
    img = np.zeros((64, 64, 3), dtype=np.uint8)
    img[:4] = 255  # a white band at the top: rows 0-3 of the 64 px the crop resizes to, outside its central 56
    Image.fromarray(img).save(tmp_path / "a.png")
    full = ImageLoader(56)([str(tmp_path / "a.png")])
    centre = ImageLoader(56, crop=0.875)([str(tmp_path / "a.png")])
    assert full.shape == centre.shape == (1, 3, 56, 56)
    assert full[0, :, 0].mean() > 0.9 and centre[0, :, 0].mean() < 0.6  # the band is (mostly) cropped away
    with pytest.raises(ValueError, match="crop must be in"):
        ImageLoader(56, crop=1.5)


def test_the_cache_is_bounded_and_returns_the_same_pixels(tmp_path):
    files = []
    for i in range(5):
        Image.fromarray(np.full((16, 16, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        files.append(str(tmp_path / f"{i}.png"))
    one = 16 * 16 * 3  # bytes of one decoded image (uint8)
    loader = ImageLoader(None, cache_mb=2.5 * one / 2**20)
    first = loader(files)
    assert len(loader._cache) == 2 and loader._cached_bytes <= 2.5 * one  # the two most recent
    assert np.array_equal(loader(files), first)
    assert np.array_equal(ImageLoader(None)(files), first)  # no cache: the same pixels
    import pickle

    assert pickle.loads(pickle.dumps(loader))._cache == {}  # a worker starts with its own empty cache


def test_worker_count_does_not_change_batches(tmp_path):
    ds = load("waterbirds", data_dir=write_waterbirds_folder(tmp_path / "wb", n=32), image_size=16)
    batches = [np.arange(s, min(s + 5, 16)) for s in range(0, 16, 5)]
    a = [b.numpy() for b in iter_batches(ds.train, batches, workers=0)]
    b = [b.numpy() for b in iter_batches(ds.train, batches, workers=2)]
    assert len(a) == len(b) == 4 and all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="workers must be an integer >= 0"):
        check_workers(-1)


def test_training_gives_the_same_numbers_with_0_and_2_workers(tmp_path):
    ds = load("waterbirds", data_dir=write_waterbirds_folder(tmp_path / "wb", n=48), image_size=16)
    out = [run(ds, TrainConfig(model="mlp", epochs=2, batch_size=8, augment="flip_crop",
                               workers=w, select="val_avg", device="cpu")) for w in (0, 2)]
    assert out[0].history == out[1].history
    assert out[0].reports["test"].to_dict() == out[1].reports["test"].to_dict()


def test_features_stream_into_an_npz_that_equals_embed(tmp_path):
    ds = load("u-digits")
    model = build_model("mlp", ds.train.input_shape, ds.n_classes, seed=3)
    path = write_features(model, ds.splits, tmp_path / "f.npz", batch_size=97)
    arr = np.load(path)
    for s in ("train", "val", "test"):
        assert np.array_equal(arr[s], embed(model, ds.splits[s]).features)
        assert np.array_equal(arr[f"y_{s}"], ds.splits[s].y) and np.array_equal(arr[f"g_{s}"], ds.splits[s].g)
    assert not [p for p in tmp_path.iterdir() if p.name != "f.npz"]  # written atomically: no temporary file left
