"""Mixup, CutMix and Cutout: exact invariants of the formulas of Zhang et al. 2018, Yun et al.
2019 and DeVries & Taylor 2017."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stratalab.augment import (
    BATCH_AUGMENTATIONS,
    CutMix,
    Cutout,
    Mixup,
    cutmix,
    cutout,
    cutout_images,
    make_batch_augmentation,
    mixup,
    sample_beta,
    soft_cross_entropy,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _distinct_constants(n: int, c: int = 3, h: int = 32, w: int = 32) -> torch.Tensor:
    """Image k is the constant k + 1 (all non-zero and distinct)."""
    return (torch.arange(n, dtype=torch.float32) + 1)[:, None, None, None].expand(n, c, h, w).clone()


# ------------------------------------------------------------------------------ Beta sampler

@pytest.mark.parametrize("a, b", [(1.0, 1.0), (0.2, 0.2), (2.0, 2.0), (2.0, 5.0), (0.5, 3.0)])
def test_beta_sampler_matches_the_moments(a, b):
    s = sample_beta(a, b, 20_000, gen(0))
    assert s.dtype == torch.float64 and ((s >= 0) & (s <= 1)).all()
    mean = a / (a + b)
    var = a * b / ((a + b) ** 2 * (a + b + 1))
    assert abs(float(s.mean()) - mean) < 4 * math.sqrt(var / s.numel()) + 1e-3
    assert abs(float(s.var()) - var) < 0.06 * var


def test_beta_sampler_is_deterministic_and_tiny_alpha_stays_finite():
    assert torch.equal(sample_beta(0.4, 0.4, 100, gen(3)), sample_beta(0.4, 0.4, 100, gen(3)))
    s = sample_beta(1e-3, 1e-3, 1000, gen(0))
    assert torch.isfinite(s).all()
    assert ((s < 1e-6) | (s > 1 - 1e-6)).float().mean() > 0.9  # Beta(eps, eps) sits at 0 and 1


# ------------------------------------------------------------------------------ Mixup

def test_mixup_is_the_convex_combination_with_the_returned_lam_and_perm():
    x = torch.randn(16, 3, 8, 8, generator=gen(0))
    y = torch.arange(16) % 5
    xm, ys, d = mixup(x, y, 5, gen(1), alpha=0.4, details=True)
    lam = float(d.lam[0])
    assert torch.all(d.lam == lam) and 0 <= lam <= 1
    assert sorted(d.perm.tolist()) == list(range(16))
    assert torch.equal(xm, x * lam + x[d.perm] * (1 - lam))
    onehot = F.one_hot(y, 5).float()
    torch.testing.assert_close(ys, lam * onehot + (1 - lam) * onehot[d.perm])
    torch.testing.assert_close(ys.sum(1), torch.ones(16))


def test_mixup_draws_are_the_documented_ones():
    """lam = sample_beta(alpha, alpha, 1, g), then perm = randperm(N, g): recomputed here."""
    x = torch.randn(10, 4)  # any (N, ...) batch
    y = torch.arange(10) % 3
    xm, ys = mixup(x, y, 3, gen(5), alpha=1.0)
    g = gen(5)
    lam = float(sample_beta(1.0, 1.0, 1, g)[0])
    perm = torch.randperm(10, generator=g)
    assert torch.equal(xm, x * lam + x[perm] * (1 - lam))
    assert not torch.equal(xm, x)


def test_mixup_lambda_is_beta_distributed_over_batches():
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
    g = gen(0)
    lams = torch.tensor([float(mixup(x, y, 2, g, alpha=0.2, details=True)[2].lam[0]) for _ in range(2000)])
    assert abs(float(lams.mean()) - 0.5) < 0.03
    assert abs(float(lams.var()) - 1 / (4 * 1.4)) < 0.015  # Beta(0.2, 0.2): var = 1 / (4 (2a + 1))


def test_mixup_determinism_and_seed_dependence():
    x = torch.randn(32, 3, 4, 4)
    y = torch.arange(32) % 10
    a = mixup(x, y, 10, gen(0))
    b = mixup(x, y, 10, gen(0))
    c = mixup(x, y, 10, gen(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_mixup_accepts_soft_targets_so_mixings_chain():
    x = torch.randn(8, 3, 8, 8)
    y = torch.arange(8) % 4
    x1, y1 = cutmix(x, y, 4, gen(0))
    x2, y2 = mixup(x1, y1, 4, gen(1))
    torch.testing.assert_close(y2.sum(1), torch.ones(8))


# ------------------------------------------------------------------------------ CutMix

@pytest.mark.parametrize("h, w", [(32, 32), (7, 11)])
def test_cutmix_label_weight_is_the_exact_fraction_of_own_pixels(h, w):
    """Images are distinct constants with distinct labels, so the pixels that differ from the
    original came from the partner: their fraction must be 1 - (weight of the own label)."""
    n = 12
    x = _distinct_constants(n, h=h, w=w)
    y = torch.arange(n)
    clipped = inside = 0
    for seed in range(80):
        xm, ys, d = cutmix(x, y, n, gen(seed), details=True)
        torch.testing.assert_close(ys.sum(1), torch.ones(n))
        changed = (xm != x).any(1)  # (n, h, w)
        frac = changed.float().mean(dim=(1, 2))
        own = ys[torch.arange(n), torch.arange(n)]
        assert torch.all((frac - (1 - own)).abs() < 0.25 / (h * w)), seed
        y0, y1, x0, x1 = d.boxes[0].tolist()
        assert 0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w
        box = torch.zeros(h, w, dtype=torch.bool)
        box[y0:y1, x0:x1] = True
        moved = d.perm != torch.arange(n)
        # the changed pixels are exactly the box, holding the partner's value
        assert torch.equal(changed[moved], box.expand(int(moved.sum()), h, w))
        assert not changed[~moved].any()
        assert torch.equal(xm[:, :, box], x[d.perm][:, :, box])
        area = (y1 - y0) * (x1 - x0)
        assert float(d.lam[0]) == pytest.approx(1 - area / (h * w))
        clipped += area > 0 and (y0 == 0 or y1 == h or x0 == 0 or x1 == w)
        inside += 0 < y0 and y1 < h and 0 < x0 and x1 < w
    assert clipped > 5 and inside > 5  # both cases were exercised


def test_cutmix_box_is_the_drawn_square_clipped_at_the_border():
    """Recompute the documented draws (u, lam, perm, cy, cx) and the clipped box."""
    h, w = 9, 13
    x = _distinct_constants(4, h=h, w=w)
    y = torch.arange(4)
    clipped = 0
    for seed in range(60):
        _, _, d = cutmix(x, y, 4, gen(seed), details=True)
        g = gen(seed)
        torch.rand(1, generator=g, dtype=torch.float64)
        lam = float(sample_beta(1.0, 1.0, 1, g)[0])
        torch.randperm(4, generator=g)
        cy = int(torch.randint(0, h, (1,), generator=g)[0])
        cx = int(torch.randint(0, w, (1,), generator=g)[0])
        sh, sw = round(h * math.sqrt(1 - lam)), round(w * math.sqrt(1 - lam))
        lo_y, lo_x = cy - sh // 2, cx - sw // 2
        expected = [max(lo_y, 0), min(lo_y + sh, h), max(lo_x, 0), min(lo_x + sw, w)]
        assert d.boxes[0].tolist() == expected
        clipped += lo_y < 0 or lo_y + sh > h or lo_x < 0 or lo_x + sw > w
    assert clipped > 10


def test_cutmix_probability_p_skips_whole_batches():
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8) % 2
    xm, ys, d = cutmix(x, y, 2, gen(0), p=0.0, details=True)
    assert not d.applied and torch.equal(xm, x)
    assert torch.equal(ys, F.one_hot(y, 2).float())
    applied = sum(cutmix(x, y, 2, g, p=0.5, details=True)[2].applied for g in [gen(s) for s in range(400)])
    assert 150 < applied < 250


def test_cutmix_determinism():
    x, y = torch.randn(16, 3, 16, 16), torch.arange(16) % 4
    a, b, c = cutmix(x, y, 4, gen(4)), cutmix(x, y, 4, gen(4)), cutmix(x, y, 4, gen(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))


# ------------------------------------------------------------------------------ Cutout

@pytest.mark.parametrize("size, h, w", [(16, 32, 32), (5, 9, 12), (40, 32, 32)])
def test_cutout_zeroes_exactly_the_clipped_square_once_per_image(size, h, w):
    n = 200
    x = _distinct_constants(n, c=2, h=h, w=w)
    y = torch.arange(n) % 10
    xm, ys, d = cutout(x, y, 10, gen(0), size=size, details=True)
    assert torch.equal(ys, F.one_hot(y, 10).float())  # label unchanged
    over_border = 0
    for k in range(n):
        zero = xm[k] == 0
        assert torch.equal(zero[0], zero[1])  # all channels
        y0, y1, x0, x1 = d.boxes[k].tolist()
        hole = torch.zeros(h, w, dtype=torch.bool)
        hole[y0:y1, x0:x1] = True
        assert torch.equal(zero[0], hole)  # one axis-aligned hole, exactly the box
        assert (y1 - y0) <= size and (x1 - x0) <= size
        assert torch.all(xm[k][~zero] == x[k][~zero])
        over_border += (y1 - y0) * (x1 - x0) < size * size
    if size < h:
        assert over_border > 0  # squares do hang over the border and get clipped


def test_cutout_centres_are_uniform_and_holes_clip_as_expected():
    """Centre (cy, cx) uniform over the pixels: the expected hole area of a size-s square in an
    H x W image is E[rows] * E[cols] with E[rows] = mean over cy of |[cy - s//2, cy - s//2 + s) & [0, H)|."""
    h = w = 32
    s = 16
    x = torch.ones(4000, 1, h, w)
    out = cutout_images(x, gen(0), size=s)
    rows = sum(min(cy - s // 2 + s, h) - max(cy - s // 2, 0) for cy in range(h)) / h
    expected = rows * rows
    assert abs(float((out == 0).sum(dim=(1, 2, 3)).float().mean()) - expected) < 3


def test_cutout_fill_per_channel_and_images_hook_matches_cutout():
    x = torch.rand(5, 3, 8, 8) + 2
    a = cutout_images(x, gen(1), size=4, fill=(0.1, 0.2, 0.3))
    b, _ = cutout(x, torch.zeros(5, dtype=torch.long), 1, gen(1), size=4, fill=(0.1, 0.2, 0.3))
    assert torch.equal(a, b)
    for ch, v in enumerate((0.1, 0.2, 0.3)):
        assert torch.isclose(a[:, ch][a[:, ch] < 1], torch.tensor(v)).all()
    with pytest.raises(ValueError, match="fill"):
        cutout_images(x, gen(1), fill=(0.1, 0.2))


# ------------------------------------------------------------------------------ loss, classes, checks

def test_soft_cross_entropy():
    logits = torch.randn(6, 4, generator=gen(0))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(soft_cross_entropy(logits, F.one_hot(y, 4).float()), F.cross_entropy(logits, y))
    ys = torch.softmax(torch.randn(6, 4, generator=gen(1)), 1)
    per = soft_cross_entropy(logits, ys, reduction="none")
    torch.testing.assert_close(per, -(ys * torch.log_softmax(logits, 1)).sum(1))
    torch.testing.assert_close(soft_cross_entropy(logits, ys), per.mean())
    # mixing the targets with lam mixes the loss with lam (linearity in y)
    lam, a, b = 0.3, F.one_hot(y, 4).float(), F.one_hot(y.flip(0), 4).float()
    torch.testing.assert_close(soft_cross_entropy(logits, lam * a + (1 - lam) * b),
                               lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y.flip(0)))
    with pytest.raises(ValueError, match="n_classes"):
        soft_cross_entropy(logits, ys[:, :3])


def test_classes_and_registry():
    assert set(BATCH_AUGMENTATIONS) == {"mixup", "cutmix", "cutout"}
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8) % 3
    for name, cls in BATCH_AUGMENTATIONS.items():
        aug = cls()
        assert aug.name == name
        assert aug.soft_targets == (name != "cutout")
        xm, ys = aug(x, y, 3, gen(0))
        assert xm.shape == x.shape and ys.shape == (8, 3)
        torch.testing.assert_close(ys.sum(1), torch.ones(8))
    assert torch.equal(Mixup(0.5)(x, y, 3, gen(2))[0], mixup(x, y, 3, gen(2), alpha=0.5)[0])
    assert torch.equal(CutMix(2.0)(x, y, 3, gen(2))[0], cutmix(x, y, 3, gen(2), alpha=2.0)[0])
    assert torch.equal(Cutout(4).images(x, gen(2)), cutout_images(x, gen(2), size=4))
    assert make_batch_augmentation("cutmix", alpha=0.5).alpha == 0.5
    with pytest.raises(ValueError, match="unknown batch augmentation"):
        make_batch_augmentation("augmix")
    with pytest.raises(ValueError, match="bad parameters"):
        make_batch_augmentation("cutout", alpha=1.0)


@pytest.mark.parametrize("alpha", [0, -1, float("nan"), float("inf"), "a", True])
def test_alpha_must_be_finite_and_positive(alpha):
    with pytest.raises(ValueError, match="alpha"):
        Mixup(alpha)
    with pytest.raises(ValueError, match="alpha"):
        cutmix(torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), 2, gen(0), alpha=alpha)


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_cutout_size_must_be_a_positive_integer(size):
    with pytest.raises(ValueError, match="size"):
        Cutout(size)


def test_labels_and_shapes_are_checked():
    x = torch.rand(4, 3, 8, 8)
    g = gen(0)
    with pytest.raises(ValueError, match="outside 0..2"):
        mixup(x, torch.tensor([0, 1, 2, 3]), 3, g)
    with pytest.raises(ValueError, match="outside"):
        cutout(x, torch.tensor([0, -1, 2, 0]), 3, g)
    with pytest.raises(ValueError, match="3 labels but x has 4"):
        cutmix(x, torch.tensor([0, 1, 2]), 3, g)
    with pytest.raises(ValueError, match="integer class labels"):
        mixup(x, torch.tensor([0.0, 1.0, 0.0, 1.0]), 3, g)
    with pytest.raises(ValueError, match="n_classes"):
        mixup(x, torch.tensor([0, 1, 0, 1]), 0, g)
    with pytest.raises(ValueError, match="rows summing to 1"):
        mixup(x, torch.full((4, 3), 0.5), 3, g)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        cutmix(torch.rand(4, 8), torch.tensor([0, 1, 0, 1]), 3, g)
    with pytest.raises(ValueError, match="float"):
        mixup(torch.zeros(4, 3, dtype=torch.long), torch.tensor([0, 1, 0, 1]), 3, g)
    with pytest.raises(TypeError, match="torch.Generator"):
        mixup(x, torch.tensor([0, 1, 0, 1]), 3, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="probability"):
        CutMix(p=1.5)


def test_no_global_rng_use():
    x, y = torch.rand(8, 3, 8, 8), torch.arange(8) % 2
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    for f in (mixup, cutmix, cutout):
        f(x, y, 2, gen(1))
    assert torch.equal(torch.rand(2), expected)
