"""Random crop (zero padding) + horizontal flip: the standard CIFAR augmentation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stratalab.augment import compose, cutout_images, random_crop, random_crop_flip, random_hflip


def _ramp(n: int, c: int = 3, h: int = 32, w: int = 32) -> torch.Tensor:
    """Every pixel of every image distinct and non-zero, so a window can be located exactly."""
    i = torch.arange(h)[:, None]
    j = torch.arange(w)[None, :]
    ch = torch.arange(c)[:, None, None]
    img = (1 + j + 100 * i + 10_000 * ch).to(torch.float64)
    return img[None] + 1_000_000 * torch.arange(n, dtype=torch.float64)[:, None, None, None]


def _locate(out: torch.Tensor, x: torch.Tensor, pad: int) -> list[tuple[int, int, bool]]:
    """For each output image the (dy, dx, flipped) windows of the padded input it equals."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    found = []
    for k in range(x.shape[0]):
        hits = [(dy, dx, fl) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1) for fl in (False, True)
                if torch.equal(out[k], (lambda win: win.flip(-1) if fl else win)(padded[k, :, dy:dy + h, dx:dx + w]))]
        assert len(hits) == 1, f"image {k} is not exactly one shifted (maybe mirrored) window: {hits}"
        found.append(hits[0])
    return found


def test_every_crop_is_a_window_of_the_zero_padded_image_and_offsets_cover_the_range():
    x = _ramp(400, c=2, h=10, w=12)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), padding=4)
    assert out.shape == x.shape and out.dtype == x.dtype
    found = _locate(out, x, 4)
    assert {dy for dy, _, _ in found} == set(range(9))
    assert {dx for _, dx, _ in found} == set(range(9))
    assert len({(dy, dx) for dy, dx, _ in found}) > 75  # row and column offsets drawn independently (81 pairs)
    flips = sum(fl for _, _, fl in found)
    assert 150 < flips < 250  # p = 1/2
    # the padding is zero and only the padding is: zeros per image = area outside the input
    for k, (dy, dx, _) in enumerate(found):
        zero_rows, zero_cols = abs(dy - 4), abs(dx - 4)
        expected = 10 * 12 - (10 - zero_rows) * (12 - zero_cols)
        assert int((out[k, 0] == 0).sum()) == expected


def test_flip_mirrors_the_last_axis():
    x = _ramp(5)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(random_crop_flip(x, g, padding=0, flip_p=1.0), x.flip(-1))
    assert torch.equal(random_crop_flip(x, g, padding=0, flip_p=0.0), x)
    assert torch.equal(random_hflip(x, g, p=1.0), x.flip(-1))
    assert torch.equal(random_hflip(x, g, p=0.0), x)
    # a non-square image: a flip of the wrong axis would not even keep the values per row
    y = _ramp(3, h=6, w=9)
    assert torch.equal(random_crop_flip(y, g, padding=0, flip_p=1.0), y.flip(-1))


def test_crop_only_never_flips():
    x = _ramp(100, c=1, h=8, w=8)
    found = _locate(random_crop(x, torch.Generator().manual_seed(2), padding=2), x, 2)
    assert not any(fl for _, _, fl in found)


def test_same_seed_same_batch_other_seed_other_batch_and_global_rng_untouched():
    x = torch.rand(64, 3, 32, 32)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = random_crop_flip(x, torch.Generator().manual_seed(7))
    assert torch.equal(torch.rand(3), expected_next)  # only the given generator is used
    b = random_crop_flip(x, torch.Generator().manual_seed(7))
    c = random_crop_flip(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_float64_and_empty_batches():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    assert random_crop_flip(x, g).dtype == torch.float64
    assert random_crop_flip(torch.zeros(0, 3, 8, 8), g).shape == (0, 3, 8, 8)


def test_compose_applies_left_to_right_with_one_generator():
    x = torch.rand(6, 3, 16, 16) + 0.5
    hook = compose(random_crop_flip, cutout_images)
    a = hook(x, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    b = cutout_images(random_crop_flip(x, g), g)
    assert torch.equal(a, b)
    with pytest.raises(TypeError, match="argument 1"):
        compose(random_crop_flip, 3)


@pytest.mark.parametrize("kwargs, match", [
    ({"padding": -1}, "padding"), ({"padding": 1.5}, "padding"), ({"flip_p": 1.5}, "flip_p"),
    ({"flip_p": float("nan")}, "flip_p"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        random_crop_flip(torch.rand(2, 3, 8, 8), torch.Generator(), **kwargs)


def test_bad_inputs_are_named():
    g = torch.Generator()
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        random_crop_flip(torch.rand(3, 8, 8), g)
    with pytest.raises(ValueError, match="float"):
        random_crop_flip(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), g)
    with pytest.raises(TypeError, match="torch.Generator"):
        random_crop_flip(torch.rand(2, 3, 8, 8), 0)  # type: ignore[arg-type]


def test_works_as_the_fit_hook():
    from stratalab.data import load
    from stratalab.models import build_model
    from stratalab.train import TrainConfig, fit

    ds = load("u-digits", seed=0)
    cfg = TrainConfig(epochs=1, batch_size=128, seed=0)
    res = fit(build_model("mlp", (1, 8, 8), 2, seed=0), ds.train, cfg,
              augment=lambda xb, gen: random_crop_flip(xb, gen, padding=1))
    assert len(res.history) == 1


def test_random_resized_crop_is_the_identity_at_full_scale_and_zooms_into_its_box():
    from stratalab.augment.basic import random_resized_crop_flip

    x = torch.rand(3, 3, 12, 12)
    same = random_resized_crop_flip(x, torch.Generator().manual_seed(0), scale=(1, 1), ratio=(1, 1), flip_p=0)
    assert torch.allclose(same, x, atol=1e-6)
    ramp = torch.arange(16.0).repeat(16, 1)[None, None].repeat(4, 3, 1, 1)  # value = column index
    out = random_resized_crop_flip(ramp, torch.Generator().manual_seed(1), scale=(0.25, 0.25), ratio=(1, 1), flip_p=0)
    width = out[:, 0, 0, -1] - out[:, 0, 0, 0]  # a box half as wide spans about half the columns
    assert torch.all((width > 6.5) & (width < 8.5)), width
    a = random_resized_crop_flip(x, torch.Generator().manual_seed(5))
    b = random_resized_crop_flip(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.allclose(a, x)
