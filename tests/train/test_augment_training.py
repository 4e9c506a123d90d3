"""Augmentation in the one training loop (TrainConfig.augment): the soft targets of Mixup/CutMix
reach the loss, Cutout fills with the batch mean, settings are checked, runs are reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stratalab.augment.pipeline as pipeline
from stratalab.data.core import Dataset, Split
from stratalab.train import TrainConfig, run


def tiny_images(seed: int = 0, n: int = 240) -> Dataset:
    """Two classes of 3x8x8 images told apart by brightness."""
    rng = np.random.default_rng(seed)

    def split(m: int) -> Split:
        y = np.arange(m) % 2
        x = (rng.random((m, 3, 8, 8)) * 0.3 + 0.6 * y[:, None, None, None]).astype(np.float32)
        return Split(x=x, y=y, g=y.copy())

    return Dataset(name="tiny", splits={"train": split(n), "val": split(80), "test": split(80)},
                   class_names=["dark", "bright"], group_names=["dark", "bright"])


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"model": "resnet", "width": 0.25, "epochs": 3, "lr": 1e-2, "select": "val_avg", **kw})


@pytest.mark.parametrize("kw, message", [
    (dict(augment="randaugment"), "augment must be one of none, flip_crop"),
    (dict(mix_alpha=0), "mix_alpha"),
    (dict(cutout_size=0), "cutout_size must be an integer >= 1"),
    (dict(label_smoothing=1.0), "label_smoothing must be in"),
])
def test_bad_augmentation_settings_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kw)


def test_soft_targets_of_a_batch_augmentation_are_what_the_model_learns(monkeypatch):
    """A batch augmentation that hands out the *other* class as target: the model learns to be
    wrong, so the loss must use the soft targets, not the batch's labels."""
    def swap(x, y, n_classes, g):
        return x, torch.nn.functional.one_hot(1 - y, n_classes).float()

    ds = tiny_images()
    honest = run(ds, cfg(model="mlp", epochs=30)).reports["test"].average_accuracy
    monkeypatch.setattr(pipeline, "make_augmentation", lambda c: (None, swap))
    liar = run(ds, cfg(model="mlp", epochs=30, augment="mixup")).history[-1]["test"]["average_accuracy"]  # last epoch
    assert honest > 0.9 and liar < 0.1


def test_upweighting_weighs_a_soft_target_by_its_class_shares(monkeypatch):
    seen = {}
    import stratalab.train.loop as loop

    real = loop.class_weights

    def spy(y, n):
        w = real(y, n)
        seen["w"] = w
        return w

    monkeypatch.setattr(loop, "class_weights", spy)
    ds = tiny_images()
    keep = np.flatnonzero((ds.train.y == 1) | (np.arange(len(ds.train)) % 4 == 0))  # class 0 rarer
    r = run(ds.with_train(keep), cfg(method="upweighting", augment="mixup", epochs=1))
    assert seen["w"][0] > seen["w"][1] and np.isfinite(r.history[-1]["train_loss"])


def test_cutout_fills_one_square_with_the_batch_mean():
    inp, batch = pipeline.make_augmentation(cfg(augment="cutout", cutout_size=4))
    assert batch is None
    x = torch.rand(6, 3, 16, 16) * 0.5 + 0.25
    out = inp(x, torch.Generator().manual_seed(0))
    cropped = pipeline._flip_crop(x, torch.Generator().manual_seed(0))  # the same draws, without the hole
    mean = cropped.mean(dim=(0, 2, 3))
    for i in range(6):
        hole = (out[i] != cropped[i]).any(dim=0)
        area = int(hole.sum())
        assert 0 < area <= 16  # one 4x4 hole, clipped at the border
        rows, cols = torch.nonzero(hole, as_tuple=True)
        assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == area  # one rectangle
        assert torch.allclose(out[i][:, hole], mean[:, None].expand(3, area))


def test_flip_crop_on_feature_vectors_is_refused():
    from stratalab.data import load

    with pytest.raises(ValueError, match="augment needs image batches"):
        run(load("synthetic-gmm", seed=0), TrainConfig(model="mlp", epochs=1, augment="flip_crop"))


@pytest.mark.parametrize("augment", ["flip_crop", "cutout", "mixup", "cutmix", "autoaugment"])
def test_augmented_runs_are_reproducible(augment):
    ds = tiny_images()
    a = run(ds, cfg(augment=augment, epochs=2, cutout_size=4))
    b = run(ds, cfg(augment=augment, epochs=2, cutout_size=4))
    assert a.history == b.history
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))
