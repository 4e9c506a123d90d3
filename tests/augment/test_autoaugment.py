"""AutoAugment (Cubuk et al. 2019), CIFAR-10 policy, with Pillow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stratalab.augment import CIFAR10_POLICY, MAX_LEVEL, OPS, SIGNED_OPS, AutoAugment, apply_op, autoaugment_batch, compose, op_magnitude, random_crop_flip

GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
ENHANCE = ("Color", "Contrast", "Brightness", "Sharpness")


def _img(c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, c), dtype=np.uint8)


def test_policy_table_is_25_pairs_with_valid_probabilities_and_levels():
    assert len(CIFAR10_POLICY) == 25
    for sub in CIFAR10_POLICY:
        assert len(sub) == 2
        for op, p, level in sub:
            assert op in OPS
            assert 0.0 <= p <= 1.0
            assert isinstance(level, int) and 0 <= level <= MAX_LEVEL
    # pinned against the paper's table (first, a middle and last sub-policy)
    assert CIFAR10_POLICY[0] == (("Invert", 0.1, 7), ("Contrast", 0.2, 6))
    assert CIFAR10_POLICY[14] == (("Solarize", 0.5, 2), ("Invert", 0.0, 3))
    assert CIFAR10_POLICY[-1] == (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1))
    assert len(AutoAugment("cifar10")) == 25


def test_magnitude_ranges():
    assert op_magnitude("ShearX", 9) == pytest.approx(0.3)
    assert op_magnitude("ShearY", 0) == 0
    assert op_magnitude("TranslateX", 9, size=331) == 150
    assert op_magnitude("TranslateY", 9, size=32) == 15  # round(150 / 331 * 32)
    assert op_magnitude("Rotate", 9) == pytest.approx(30)
    for op in ENHANCE:
        assert op_magnitude(op, 9) == pytest.approx(0.9)  # factor 1 +/- 0.9 in [0.1, 1.9]
    assert [op_magnitude("Posterize", m) for m in range(10)] == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert op_magnitude("Solarize", 0) == 256 and op_magnitude("Solarize", 9) == 0
    with pytest.raises(ValueError, match="level"):
        op_magnitude("Rotate", 10)
    with pytest.raises(ValueError, match="unknown AutoAugment operation"):
        op_magnitude("Blur", 3)


@pytest.mark.parametrize("c", [1, 3])
def test_every_op_keeps_shape_dtype_and_range(c):
    img = _img(c, h=12, w=10)
    for op in OPS:
        for level in range(MAX_LEVEL + 1):
            for sign in (1, -1):
                out = apply_op(img, op, level, sign=sign)
                assert out.shape == img.shape and out.dtype == np.uint8, (op, level)
                assert out.min() >= 0 and out.max() <= 255
    assert np.array_equal(img, _img(c, h=12, w=10))  # the input is never modified


@pytest.mark.parametrize("c", [1, 3])
def test_level_zero_of_geometric_and_enhancement_ops_is_the_identity(c):
    img = _img(c)
    for op in GEOMETRIC + ENHANCE:
        for sign in (1, -1):
            assert np.array_equal(apply_op(img, op, 0, sign=sign), img), op
    # and a level > 0 does change the image (Color has nothing to change on a grey image)
    for op in GEOMETRIC + ENHANCE[c == 1:]:
        assert not np.array_equal(apply_op(img, op, 5), img), op


def test_translate_moves_the_right_axis_by_the_right_amount():
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    img[:, :, 0] = np.arange(32, dtype=np.uint8)[None, :]  # column index
    img[:, :, 1] = np.arange(32, dtype=np.uint8)[:, None]  # row index
    img[:, :, 2] = 200
    for sign in (1, -1):
        out = apply_op(img, "TranslateX", 9, sign=sign, fill=7)
        t = 15 * sign
        shifted = out[:, :, 0].astype(int) - np.arange(32)[None, :]
        inside = out[:, :, 2] == 200
        assert np.all(shifted[inside] == t)  # every column moved by t, rows untouched
        assert np.array_equal(out[:, :, 1][inside], img[:, :, 1][inside])
        assert (~inside).sum() == 15 * 32 and np.all(out[~inside] == 7)  # uncovered pixels are the fill
        out = apply_op(img, "TranslateY", 9, sign=sign)
        inside = out[:, :, 2] == 200
        assert np.all(out[:, :, 1][inside].astype(int) - np.nonzero(inside)[0] == t)
        assert np.array_equal(out[:, :, 0][inside], img[:, :, 0][inside])


def test_invert_solarize_posterize_exact():
    img = _img(3)
    inv = apply_op(img, "Invert", 0)
    assert np.array_equal(inv, 255 - img)
    assert np.array_equal(apply_op(inv, "Invert", 5), img)  # twice is the identity
    assert np.array_equal(apply_op(img, "Solarize", 0), img)  # threshold 256 inverts nothing
    assert np.array_equal(apply_op(img, "Solarize", 9), 255 - img)  # threshold 0 inverts all
    thr = op_magnitude("Solarize", 4)
    assert np.array_equal(apply_op(img, "Solarize", 4), np.where(img >= thr, 255 - img, img))
    assert np.array_equal(apply_op(img, "Posterize", 0), img)
    assert np.array_equal(apply_op(img, "Posterize", 9), img & 0xF0)


def test_enhancement_sign_goes_both_ways():
    img = _img(3)
    up = apply_op(img, "Brightness", 9, sign=1)
    down = apply_op(img, "Brightness", 9, sign=-1)
    assert up.astype(int).sum() > img.astype(int).sum() > down.astype(int).sum()
    assert set(SIGNED_OPS) == set(GEOMETRIC + ENHANCE)


def test_same_seed_same_images_other_seed_other_images():
    aa = AutoAugment()
    imgs = [_img(3, seed=s) for s in range(30)]
    a = [aa(im, np.random.default_rng(0)) for im in imgs]
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    b = [aa(im, r1) for im in imgs]
    c = [aa(im, r2) for im in imgs]
    assert all(np.array_equal(u, v) for u, v in zip(b, c))
    d = [aa(im, np.random.default_rng(6)) for im in imgs]
    assert not all(np.array_equal(u, v) for u, v in zip(a, d))


def test_probabilities_are_respected():
    img = _img(3)
    never = AutoAugment([(("Invert", 0.0, 0), ("Solarize", 0.0, 9))])
    always = AutoAugment([(("Invert", 1.0, 0), ("Solarize", 0.0, 9))])
    rng = np.random.default_rng(0)
    assert np.array_equal(never(img, rng), img)
    assert np.array_equal(always(img, rng), 255 - img)
    third = AutoAugment([(("Invert", 0.3, 0), ("Invert", 0.0, 0))])
    changed = np.mean([not np.array_equal(third(img, rng), img) for _ in range(2000)])
    assert abs(changed - 0.3) < 0.04
    # the CIFAR-10 policy changes most images but not all (some ops are skipped)
    aa = AutoAugment()
    changed = np.mean([not np.array_equal(aa(img, rng), img) for _ in range(500)])
    assert 0.5 < changed < 0.98


def test_bad_policies_and_images_are_named():
    with pytest.raises(ValueError, match="unknown AutoAugment policy"):
        AutoAugment("imagenet")
    with pytest.raises(ValueError, match="2 operations"):
        AutoAugment([(("Invert", 0.5, 0),)])
    with pytest.raises(ValueError, match="probability"):
        AutoAugment([(("Invert", 1.5, 0), ("Invert", 0.5, 0))])
    with pytest.raises(ValueError, match="level"):
        AutoAugment([(("Rotate", 0.5, 12), ("Invert", 0.5, 0))])
    with pytest.raises(ValueError, match="uint8"):
        AutoAugment()(np.zeros((8, 8, 3), dtype=np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        apply_op(np.zeros((3, 8, 8), dtype=np.uint8), "Invert", 0)  # CHW, not HWC
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        AutoAugment()(_img(), 0)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ batch wrapper

def _loader_batch(n: int = 16, c: int = 3, hw: int = 32, seed: int = 0) -> torch.Tensor:
    """As the loaders of stratalab.data.images give it: uint8 / 255 in float32."""
    u8 = np.random.default_rng(seed).integers(0, 256, size=(n, c, hw, hw), dtype=np.uint8)
    from stratalab.data.images import uint8_to_float
    return torch.from_numpy(uint8_to_float(u8))


@pytest.mark.parametrize("c", [1, 3])
def test_batch_wrapper_keeps_the_loaders_scaling(c):
    x = _loader_batch(c=c)
    out = autoaugment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    k = out * 255
    assert torch.equal(k, k.round())  # still uint8 / 255
    assert not torch.equal(out, x)
    # images the policy leaves alone come back bit for bit
    ident = AutoAugment([(("Invert", 0.0, 0), ("Invert", 0.0, 0))])
    assert torch.equal(autoaugment_batch(x, torch.Generator().manual_seed(0), policy=ident), x)


def test_batch_wrapper_agrees_with_the_per_image_policy():
    x = _loader_batch(n=6)
    inv = AutoAugment([(("Invert", 1.0, 0), ("Posterize", 1.0, 9))])
    out = autoaugment_batch(x, torch.Generator().manual_seed(0), policy=inv)
    u8 = np.rint(x.numpy() * 255).astype(np.uint8)
    expected = (255 - u8) & 0xF0
    assert torch.equal(out, torch.from_numpy(expected.astype(np.float32) / 255))


def test_batch_wrapper_inverts_a_normalisation():
    x = _loader_batch(n=8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    m, s = torch.tensor(mean)[None, :, None, None], torch.tensor(std)[None, :, None, None]
    xn = (x - m) / s
    inv = AutoAugment([(("Invert", 1.0, 0), ("Invert", 0.0, 0))])
    out = autoaugment_batch(xn, torch.Generator().manual_seed(0), policy=inv, mean=mean, std=std)
    torch.testing.assert_close(out, ((1 - x) - m) / s, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="pass the mean and std"):
        autoaugment_batch(xn, torch.Generator().manual_seed(0))


def test_batch_wrapper_determinism_and_checks():
    x = _loader_batch(n=32)
    a = autoaugment_batch(x, torch.Generator().manual_seed(1))
    b = autoaugment_batch(x, torch.Generator().manual_seed(1))
    c = autoaugment_batch(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="1- or 3-channel"):
        autoaugment_batch(torch.rand(2, 2, 8, 8), torch.Generator())
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        autoaugment_batch(torch.rand(3, 8, 8), torch.Generator())
    with pytest.raises(ValueError, match="std must be > 0"):
        autoaugment_batch(x, torch.Generator(), mean=0.5, std=0.0)


def test_autoaugment_crop_flip_pipeline_as_a_fit_hook():
    from stratalab.data import load
    from stratalab.models import build_model
    from stratalab.train import TrainConfig, fit

    ds = load("u-digits", seed=0)
    cfg = TrainConfig(epochs=1, batch_size=256, seed=0)
    res = fit(build_model("mlp", (1, 8, 8), 2, seed=0), ds.train, cfg,
              augment=compose(autoaugment_batch, lambda xb, g: random_crop_flip(xb, g, padding=1)))
    assert np.isfinite(res.history[0]["train_loss"])
