"""Per-example gradients from one batched backward equal vmap(grad) over single examples; the
Kronecker projection equals its dense equivalent matrix; TRAK gives the same scores either way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from stratalab.attribution import TRAK
from stratalab.attribution.per_example import KroneckerProjector, hooks_unsupported, per_example_grads
from stratalab.attribution.trak import margin
from stratalab.models import build_model


class Strided(nn.Module):
    """Conv2d with stride, padding, dilation, no bias, then a Linear on a 3-d input (tokens)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=2, bias=False)
        self.tok = nn.Linear(4, 5)
        self.head = nn.Linear(5 * 9, 3)

    def forward(self, x):
        h = torch.tanh(self.conv(x))  # (B, 4, 3, 3)
        t = torch.tanh(self.tok(h.flatten(2).transpose(1, 2)))  # (B, 9, 5): the Linear sees 9 positions
        return self.head(t.flatten(1))


def _vmap_grads(model, x, y, names):
    theta = {n: p.detach() for n, p in model.named_parameters()}

    def f(th, xi, yi):
        return margin(functional_call(model, th, (xi.unsqueeze(0),)), yi.unsqueeze(0)).squeeze(0)

    g = vmap(grad(f), in_dims=(None, 0, 0))(theta, x, y)
    return {n: g[n].reshape(len(x), -1) for n in names}


@pytest.mark.parametrize("make, shape, classes", [
    (lambda: build_model("lenet5", (1, 32, 32), 2, seed=0), (1, 32, 32), 2),
    (lambda: Strided(), (2, 7, 7), 3),
    (lambda: build_model("mlp", (3, 4, 4), 4, seed=1), (3, 4, 4), 4),
    (lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding="valid"), nn.Flatten(), nn.Linear(3 * 5 * 5, 2)), (2, 7, 7), 2),
])
def test_hooks_equal_vmap_grad(make, shape, classes):
    torch.manual_seed(0)
    model = make().eval()
    names = [n for n, _ in model.named_parameters()]
    assert hooks_unsupported(model, names) is None
    x = torch.randn(12, *shape)
    y = torch.randint(0, classes, (12,))
    got, out = per_example_grads(model, x, names, lambda o: margin(o, y))
    want = _vmap_grads(model, x, y, names)
    for n in names:
        assert got[n].shape == want[n].shape
        assert torch.allclose(got[n], want[n], atol=1e-5, rtol=1e-4), n
    assert torch.allclose(out, model(x), atol=1e-6)
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated on the model


def test_unsupported_layers_are_named_and_trak_falls_back_to_vmap():
    model = build_model("cifarnet", (3, 16, 16), 3, width=0.25, seed=0).eval()
    names = [n for n, _ in model.named_parameters()]
    why = hooks_unsupported(model, names)
    assert why is not None and "BatchNorm" in why
    assert TRAK(model, proj_dim=8).grads == "vmap"
    with pytest.raises(ValueError, match="Linear or Conv2d parameters only"):
        TRAK(model, proj_dim=8, grads="hooks")
    head_only = TRAK(model, proj_dim=8, params=lambda n: n.startswith("head"))
    assert head_only.grads == "hooks"
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 2))
    assert "grouped" in hooks_unsupported(grouped, [n for n, _ in grouped.named_parameters()])


def test_a_layer_used_twice_is_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(torch.tanh(self.lin(x)))

    m = Twice()
    with pytest.raises(RuntimeError, match="runs twice"):
        per_example_grads(m, torch.randn(4, 3), ["lin.weight", "lin.bias"], lambda o: margin(o, torch.zeros(4, dtype=torch.long)))


def test_a_frozen_model_still_gives_gradients_and_stays_frozen():
    model = build_model("lenet5", (1, 32, 32), 2, seed=0).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    names = [n for n, _ in model.named_parameters()]
    x, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 1, 0])
    got, _ = per_example_grads(model, x, names, lambda o: margin(o, y))
    assert torch.allclose(got["head.weight"], _vmap_grads(model, x, y, ["head.weight"])["head.weight"], atol=1e-5)
    assert not any(p.requires_grad for p in model.parameters())


def test_kronecker_projection_is_its_dense_matrix_and_keeps_norms_on_average():
    torch.manual_seed(0)
    model = Strided().eval()
    names = [n for n, _ in model.named_parameters()]
    x, y = torch.randn(10, 2, 7, 7), torch.randint(0, 3, (10,))
    kp = KroneckerProjector(model, names, 40, seed=3)
    proj, _ = kp.project(model, x, lambda o: margin(o, y))
    g, _ = per_example_grads(model, x, names, lambda o: margin(o, y))
    flat = torch.cat([g[n] for n in names], dim=1)
    dense = kp.matrix(names, model)
    assert proj.shape == (10, kp.dim) and dense.shape == (flat.shape[1], kp.dim)
    assert torch.allclose(proj, flat @ dense, atol=1e-5)
    # E ||P^T v||^2 = ||v||^2 over the random draw: the mean of P P^T's diagonal is 1
    diag = torch.stack([torch.diagonal(KroneckerProjector(model, names, 40, seed=s).matrix(names, model)
                                       @ KroneckerProjector(model, names, 40, seed=s).matrix(names, model).T)
                        for s in range(200)]).mean(0)
    assert float(diag.mean()) == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="projects whole layers"):
        KroneckerProjector(model, ["tok.weight"], 8)


def test_trak_scores_agree_across_gradient_paths_and_kronecker_is_deterministic():
    rng = np.random.default_rng(0)
    model = build_model("lenet5", (1, 32, 32), 2, seed=0).eval()
    x = rng.normal(size=(40, 1, 32, 32)).astype(np.float32)
    y = rng.integers(0, 2, 40)
    a = TRAK(model, proj_dim=32, grads="hooks", projector="gaussian").featurize(x, y).score(x[:5], y[:5])
    b = TRAK(model, proj_dim=32, grads="vmap").featurize(x, y).score(x[:5], y[:5])
    assert np.allclose(a, b, rtol=1e-3, atol=1e-5 * np.abs(b).max())
    k1 = TRAK(model, proj_dim=32, projector="kronecker").featurize(x, y).score(x[:5], y[:5])
    k2 = TRAK(model, proj_dim=32, projector="kronecker").featurize(x, y).score(x[:5], y[:5])
    assert np.array_equal(k1, k2) and k1.shape == (40, 5)
    with pytest.raises(ValueError, match="projector must be"):
        TRAK(model, projector="srht")


def test_inplace_ops_and_shared_weights_are_caught_not_silently_wrong():
    inplace = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).eval()
    names = [n for n, _ in inplace.named_parameters()]
    x, y = torch.randn(5, 1, 6, 6), torch.tensor([0, 1, 0, 1, 1])
    from stratalab.attribution.per_example import HooksUnsafe

    with pytest.raises(HooksUnsafe, match="modified in place"):
        per_example_grads(inplace, x, names, lambda o: margin(o, y))
    # TRAK in auto mode falls back to vmap (with a warning) and gives vmap's scores: with the Gaussian
    # projection asked for, and with the default projector="auto", which had chosen Kronecker
    rng = np.random.default_rng(0)
    xs, ys = rng.normal(size=(30, 1, 6, 6)).astype(np.float32), rng.integers(0, 2, 30)
    ref = TRAK(inplace, proj_dim=8, grads="vmap").featurize(xs, ys).score(xs[:3], ys[:3])
    with pytest.warns(UserWarning, match="falls back to vmap"):
        gauss = TRAK(inplace, proj_dim=8, projector="gaussian").featurize(xs, ys).score(xs[:3], ys[:3])
    assert np.allclose(gauss, ref, rtol=1e-4, atol=1e-6)
    auto = TRAK(inplace, proj_dim=8)
    assert auto.projector == "kronecker"  # what the layers allow, before the forward pass shows the in-place op
    with pytest.warns(UserWarning, match="takes projector='gaussian' with vmap"):
        got = auto.featurize(xs, ys).score(xs[:3], ys[:3])
    assert auto.projector == "gaussian" and auto.grads == "vmap"
    assert np.allclose(got, ref, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="needs the hooks path"):
        TRAK(inplace, proj_dim=8, projector="kronecker").featurize(xs, ys)
    with pytest.raises(ValueError, match=r"grads='hooks' cannot run this model; pass grads='vmap'"):  # not a projector's fault
        TRAK(inplace, proj_dim=8, grads="hooks", projector="gaussian").featurize(xs, ys)
    lin, tied = nn.Linear(4, 4), nn.Linear(4, 4)
    tied.weight = lin.weight  # two modules, one parameter
    shared = nn.Sequential(lin, nn.Tanh(), tied, nn.Linear(4, 2))
    assert "shared" in hooks_unsupported(shared, [n for n, _ in shared.named_parameters()])
    with pytest.raises(ValueError, match="kronecker' works on"):
        TRAK(build_model("lenet5", (1, 32, 32), 2), projector="kronecker", grads="vmap")
