"""``previous_features``: the activations one block before the penultimate layer, read by the one
feature-extraction path (``embed(..., layer="previous")``) for GEORGE's ``feature_layer``."""

import numpy as np
import pytest
import torch
from torch import nn

from stratalab.data import Split
from stratalab.models import MLP, CifarNet, CifarResNet, LeNet5, LinearHead, check_feature_layer, embed


def _input_of(module: nn.Module, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What ``module`` receives when ``model`` runs on ``x`` (a forward pre-hook)."""
    seen = []
    h = module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        model(x)
    h.remove()
    return seen[0]


@pytest.mark.parametrize("make, last, pool", [
    (lambda: LeNet5(2), lambda m: m.body[6], lambda t: t.flatten(1)),  # the input of the last convolution
    (lambda: CifarResNet(2, blocks=(1, 1)), lambda m: m.body[4], lambda t: t.mean(dim=(2, 3))),  # the last stage's input
    (lambda: CifarNet(2, width=0.25), lambda m: m.body[5], lambda t: t.amax(dim=(2, 3))),  # the last block's input
    (lambda: MLP(3 * 32 * 32, 2, hidden=(16, 8)), lambda m: m.body[3], lambda t: t),  # the last hidden layer's input
])
def test_previous_features_are_the_input_of_the_last_block(make, last, pool):
    torch.manual_seed(0)
    model = make().eval()
    x = torch.rand(4, 3 if not isinstance(model, LeNet5) else 1, 32, 32)
    with torch.no_grad():
        got = model.previous_features(x)
    want = pool(_input_of(last(model), model, x))
    assert got.shape == want.shape and got.shape[1] != model.feature_dim
    torch.testing.assert_close(got, want)


def test_one_hidden_layer_mlp_reads_the_flattened_input():
    model = MLP(64, 2, hidden=(16,))
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(model.previous_features(x), x.flatten(1))


def test_embed_reads_the_layer_and_keeps_the_models_outputs():
    torch.manual_seed(0)
    model = LeNet5(2).eval()
    x = np.random.default_rng(0).random((6, 1, 32, 32)).astype(np.float32)
    split = Split(x=x, y=np.array([0, 1, 0, 1, 1, 0]))
    pen, prev = embed(model, split), embed(model, split, layer="previous")
    assert pen.features.shape == (6, 120) and prev.features.shape == (6, 16 * 5 * 5)
    np.testing.assert_allclose(prev.features, model.previous_features(torch.from_numpy(x)).detach().numpy(), rtol=1e-6)
    np.testing.assert_array_equal(pen.loss, prev.loss)  # the logits are the model's own either way
    np.testing.assert_array_equal(pen.pred, prev.pred)


def test_a_layer_the_model_lacks_is_refused_before_any_batch():
    with pytest.raises(ValueError, match="no layer before its penultimate one"):
        check_feature_layer(LinearHead(4, 2), "previous")
    with pytest.raises(ValueError, match="penultimate, previous"):
        check_feature_layer(LeNet5(2), "first")
    with pytest.raises(ValueError, match="no hidden layer"):
        MLP(4, 2, hidden=()).previous_features(torch.zeros(1, 4))
    split = Split(x=np.zeros((2, 4), np.float32), y=np.array([0, 1]))
    with pytest.raises(ValueError, match="no layer before"):
        embed(LinearHead(4, 2), split, layer="previous")
