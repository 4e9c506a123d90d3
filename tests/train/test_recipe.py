"""airbench's pieces of the CPU CIFAR recipe (issue 20, item 2): flip test-time augmentation and
the whitening initialisation of cifarnet's stem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stratalab.data.core import Split
from stratalab.models.convnets import CifarNet
from stratalab.train import TrainConfig, predict


def test_flip_tta_averages_the_logits_of_an_image_and_its_mirror():
    torch.manual_seed(0)
    model = CifarNet(3, 3, width=0.25).eval()
    x = np.random.default_rng(0).random((6, 3, 16, 16)).astype(np.float32)
    split = Split(x=x, y=np.zeros(6, dtype=np.int64))
    t = torch.as_tensor(x)
    with torch.no_grad():
        want = torch.softmax(0.5 * (model(t) + model(t.flip(-1))), dim=1).numpy()
    assert np.allclose(predict(model, split, tta="flip"), want, atol=1e-7, rtol=0)
    assert not np.allclose(predict(model, split), want, atol=1e-6, rtol=0)  # without TTA: another answer
    with pytest.raises(ValueError, match="mirrors images"):
        predict(torch.nn.Linear(4, 2), Split(x=np.zeros((2, 4), np.float32), y=np.zeros(2, np.int64)), tta="flip")


def test_whitening_makes_the_stem_outputs_uncorrelated_with_unit_variance():
    model = CifarNet(10, 3, width=1.0)
    x = torch.rand(128, 3, 32, 32) ** 2  # skewed, correlated channels
    model.whiten_(x)
    with torch.no_grad():
        out = model.body[0]((x - model.mean) / model.std).permute(0, 2, 3, 1).reshape(-1, 24).double()
    cov = torch.cov(out.T)
    assert torch.allclose(cov.diagonal(), torch.ones(24, dtype=torch.float64), atol=0.01)
    assert abs(cov[0, 2]) < 1e-3 and cov[0, 1] < -0.99  # different eigenvectors uncorrelated; each with both signs


def test_recipe_options_are_checked():
    assert TrainConfig(model="cifarnet", whiten=True, tta="flip").tta == "flip"
    with pytest.raises(ValueError, match="whiten initialises cifarnet"):
        TrainConfig(model="mlp", whiten=True)
    with pytest.raises(ValueError, match="tta must be"):
        TrainConfig(tta="crops")


def test_flip_shift_tta_weights_the_shifted_views_a_quarter_each():
    from stratalab.train.loop import _tta_logits

    torch.manual_seed(1)
    model = CifarNet(3, 3, width=0.25).eval()
    x = torch.rand(4, 3, 16, 16)
    pad = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")

    def fm(v):
        return 0.5 * (model(v) + model(v.flip(-1)))

    with torch.no_grad():
        want = 0.5 * fm(x) + 0.25 * fm(pad[..., :16, :16]) + 0.25 * fm(pad[..., 2:, 2:])
        assert torch.allclose(_tta_logits(model, x, "flip_shift"), want, atol=1e-6)
        assert torch.allclose(_tta_logits(model, x, "flip"), fm(x), atol=1e-6)
