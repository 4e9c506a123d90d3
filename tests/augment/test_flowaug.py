"""FlowAug (Chiu, Chen & Ma 2023, Sec. 3.3): Algorithm 1's truncated Gaussian on z, Algorithm 2's
same-class mixing of z with m >= tr, the views and weights of objectives (2)-(4), the encoding
cache, and the training loop's use of the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from stratalab.augment.flowaug import OBJECTIVES, FlowAugmenter, draw_partners, gaussian_z, mix_partners, mix_z, truncated_normal
from stratalab.models.flow import DecoupledFlow, FlowConfig

SMALL = dict(image_shape=(3, 8, 8), steps=1, hidden=8, z_dim=4)


def _flow(seed: int = 0) -> DecoupledFlow:
    flow = DecoupledFlow(FlowConfig(**SMALL, seed=seed))
    g = torch.Generator().manual_seed(seed)
    flow.train()
    flow.loss_terms(torch.rand(8, 3, 8, 8, generator=g))
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return flow.eval()


def test_truncated_normal_stays_in_bounds_and_has_the_truncated_moments():
    g = torch.Generator().manual_seed(0)
    eps = truncated_normal((200_000,), g, mu=0.0, sigma=1.0, bound=0.5).double()
    want = stats.truncnorm(-0.5, 0.5)
    # the whole distribution, not just the bounds (a clamp of plain normals would pile mass on +-0.5)
    assert stats.kstest(eps.numpy(), want.cdf).pvalue > 1e-3
    assert float((eps.abs() > 0.499).double().mean()) < 0.005
    assert float(eps.std()) == pytest.approx(want.std(), rel=0.01)
    # the paper's setting: sigma 0.1, bound 4 (in z's units) never binds, so it is N(0, 0.01)
    wide = truncated_normal((200_000,), g).double()
    assert float(wide.std()) == pytest.approx(0.1, rel=0.01)
    assert stats.kstest(wide.numpy(), stats.norm(scale=0.1).cdf).pvalue > 1e-3
    # shifted mean: bounds are mu +- b
    sh = truncated_normal((10_000,), g, mu=2.0, sigma=1.0, bound=0.25)
    assert sh.min() >= 1.75 and sh.max() <= 2.25
    a = truncated_normal((5,), torch.Generator().manual_seed(3))
    assert torch.equal(a, truncated_normal((5,), torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="sigma > 0"):
        truncated_normal((2,), g, sigma=0.0)


def test_gaussian_z_adds_exactly_the_truncated_draw():
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    out = gaussian_z(z, torch.Generator().manual_seed(5), sigma=0.3, bound=0.4)
    assert torch.allclose(out - z, truncated_normal((6, 4), torch.Generator().manual_seed(5), sigma=0.3, bound=0.4), atol=1e-6)


def test_mix_partners_are_other_images_of_the_same_class():
    y = torch.tensor([0, 1, 0, 2, 1, 0, 1])
    for seed in range(20):
        p = mix_partners(y, torch.Generator().manual_seed(seed), same_class=True)
        for i, j in enumerate(p.tolist()):
            if i == 3:
                assert j == 3  # alone in its class: left as it is
            else:
                assert j != i and y[j] == y[i]
        q = mix_partners(y, torch.Generator().manual_seed(seed), same_class=False)
        assert all(j != i for i, j in enumerate(q.tolist()))
    # every same-class partner is drawn
    seen = {int(mix_partners(y, torch.Generator().manual_seed(s), same_class=True)[0]) for s in range(40)}
    assert seen == {2, 5}


def test_mix_z_keeps_most_of_each_images_own_z():
    z = torch.randn(4000, 3, generator=torch.Generator().manual_seed(0))
    part = torch.roll(torch.arange(4000), 1)
    new, m = mix_z(z, z[part], torch.Generator().manual_seed(1), alpha=1.0, threshold=0.5)
    assert m.min() >= 0.5 and m.max() <= 1.0
    assert float(m.mean()) == pytest.approx(0.75, abs=0.01)  # Beta(1, 1) folded onto [0.5, 1]
    assert torch.allclose(new, m[:, None] * z + (1 - m[:, None]) * z[part], atol=1e-6)
    with pytest.raises(ValueError, match="threshold"):
        mix_z(z, z[part], torch.Generator(), threshold=1.5)


@pytest.mark.parametrize("objective, weights", [
    ("gauss", [1.0]), ("mix", [1.0]), ("gauss+std", [1.0, 0.05]), ("mix+std", [1.0, 0.05]),
    ("gauss+mix", [1.0, 0.7]), ("gauss+mix+std", [1.0, 0.7, 0.05]),
])
def test_views_and_weights_follow_the_objective(objective, weights):
    flow = _flow()
    aug = FlowAugmenter(flow, objective=objective, std_weight=0.05, mix_weight=0.7)
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    views = aug.views(x, y, None, torch.Generator().manual_seed(3))
    assert [w for _, w in views] == weights
    z, nu = flow.encode(x)
    for name, (v, _) in zip(OBJECTIVES[objective], views):
        assert v.shape == x.shape and v.min() >= 0 and v.max() <= 1
        if name == "std":
            assert v is x
        else:
            assert (v - x).abs().mean() > 1e-4  # an edit of z changes the image
    if objective == "gauss":  # exactly F_dec(z + eps, nu) with the generator's draw
        eps = truncated_normal((6, 4), torch.Generator().manual_seed(3))
        assert torch.allclose(views[0][0], flow.decode(z + eps, nu), atol=1e-5)


def test_a_tiny_sigma_gives_back_the_image_and_the_flow_is_frozen():
    flow = _flow()
    aug = FlowAugmenter(flow, objective="gauss", sigma=1e-7)
    assert not any(p.requires_grad for p in flow.parameters())
    x = torch.randint(0, 256, (4, 3, 8, 8), generator=torch.Generator().manual_seed(0)) / 255.0
    (v, _), = aug.views(x, torch.zeros(4, dtype=torch.long), None, torch.Generator().manual_seed(0))
    assert torch.allclose(v, x, atol=1e-4)


def test_the_training_set_is_encoded_once_in_fixed_chunks():
    """Cached encodings do not depend on which batches asked first (so a resumed run continues
    exactly), and each image is encoded once."""
    flow = _flow()
    x_all = torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    calls = []

    def loader(i):
        calls.append(list(i))
        return x_all[torch.as_tensor(i)]

    aug = FlowAugmenter(flow, objective="gauss", train_x=loader, train_y=torch.zeros(10, dtype=torch.long), chunk=4)
    z1, nu1 = aug.encode(x_all[[7, 2]], torch.tensor([7, 2]))
    z2, nu2 = aug.encode(x_all[[3]], torch.tensor([3]))
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    other = FlowAugmenter(flow, objective="gauss", train_x=loader, train_y=torch.zeros(10, dtype=torch.long), chunk=4)
    assert torch.equal(other.encode(x_all[[3]], torch.tensor([3]))[1], nu2)
    zf, nuf = flow.encode(x_all[[7, 2]])
    assert torch.allclose(z1, zf, atol=1e-5) and torch.allclose(nu1, nuf, atol=1e-4)


def test_partners_come_from_the_whole_class():
    train_y = torch.tensor([0, 1, 0, 2, 1, 0, 1, 0])
    idx = torch.tensor([0, 3, 4, 7])
    seen = {0: set(), 4: set(), 7: set()}
    for s in range(60):
        j = draw_partners(idx, train_y, torch.Generator().manual_seed(s), same_class=True)
        assert int(j[1]) == 3  # class 2 has one example
        for pos, i in ((0, 0), (2, 4), (3, 7)):
            assert int(j[pos]) != i and train_y[j[pos]] == train_y[i]
            seen[i].add(int(j[pos]))
    assert seen == {0: {2, 5, 7}, 4: {1, 6}, 7: {0, 2, 5}}  # every other member is drawn
    anyj = torch.stack([draw_partners(idx, train_y, torch.Generator().manual_seed(s), same_class=False) for s in range(60)])
    assert (anyj != idx).all() and set(anyj[:, 0].tolist()) == set(range(1, 8))


def test_bad_settings_are_refused():
    flow = _flow()
    with pytest.raises(ValueError, match="objective must be one of"):
        FlowAugmenter(flow, objective="gauss+cutmix")
    with pytest.raises(ValueError, match="pairs must be"):
        FlowAugmenter(flow, pairs="other_class")
    with pytest.raises(ValueError, match="std_weight must be"):
        FlowAugmenter(flow, std_weight=-1.0)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        FlowAugmenter(flow, sigma=0.0)
    with pytest.raises(ValueError, match="threshold"):
        FlowAugmenter(flow, threshold=2.0)
    with pytest.raises(ValueError, match="together"):
        FlowAugmenter(flow, train_y=torch.zeros(3, dtype=torch.long))


def test_the_training_loop_weighs_each_view(monkeypatch):
    """Views whose images carry the wrong class: with weight 1 on them and 0 on the clean batch
    the model learns the wrong mapping; with the weights swapped, the right one. So the loop's loss
    is sum_k lambda_k L(view_k), not an unweighted mean."""
    import stratalab.augment.pipeline as pipeline
    from stratalab.data.core import Split
    from stratalab.models import build_model
    from stratalab.train import TrainConfig
    from stratalab.train.loop import fit

    rng = np.random.default_rng(0)

    def make(n):
        y = np.arange(n) % 2
        x = rng.normal(0, 0.05, (n, 3, 8, 8)).astype(np.float32) + 0.5
        x[:, 0] += np.where(y == 1, 0.3, -0.3)[:, None, None]
        return Split(x=np.clip(x, 0, 1).astype(np.float32), y=y, g=y.copy())

    train, val, test = make(200), make(50), make(100)

    class Swap:
        def __init__(self, w_wrong, w_clean):
            self.w = (w_wrong, w_clean)

        def views(self, x, y, idx, g):
            wrong = x.clone()
            wrong[:, 0] = 1.0 - wrong[:, 0]  # the class cue flipped
            return [(wrong, self.w[0]), (x, self.w[1])]

    accs = {}
    for ws in ((1.0, 0.0), (0.0, 1.0)):
        monkeypatch.setattr(pipeline, "make_views", lambda cfg, train, ws=ws: Swap(*ws))
        cfg = TrainConfig(model="mlp", epochs=15, lr=1e-2, batch_size=50, augment="flowaug", flow="unused.pt", select="val_avg")
        model = build_model("mlp", (3, 8, 8), 2, seed=0)
        r = fit(model, train, cfg, val=val, test=test)
        accs[ws] = r.history[-1]["test"]["average_accuracy"]
    assert accs[(1.0, 0.0)] < 0.1 and accs[(0.0, 1.0)] > 0.9, accs


def test_a_view_whose_inverse_blows_up_is_replaced_by_its_clean_image():
    flow = _flow()
    real = flow.flow_inverse

    def unstable(nu, z):
        out = real(nu, z)
        out[1] = float("inf")  # example 1 explodes
        out[2, 0, 0, 0] = 40.0  # example 2 leaves the pixel range far behind
        return out

    flow.flow_inverse = unstable  # type: ignore[method-assign]
    aug = FlowAugmenter(flow, objective="gauss+mix")
    x = torch.randint(0, 256, (4, 3, 8, 8), generator=torch.Generator().manual_seed(0)) / 255.0
    views = aug.views(x, torch.zeros(4, dtype=torch.long), None, torch.Generator().manual_seed(1))
    for v, _ in views:
        assert torch.isfinite(v).all()
        assert torch.equal(v[1], x[1]) and torch.equal(v[2], x[2])
        assert not torch.equal(v[0], x[0])
    assert (aug.failed, aug.decoded) == (4, 8)


def test_algorithm_2_draws_partners_from_any_class_by_default():
    """The paper's Alg. 2 mixes x1, x2 ~ X: by default a partner may be of any class (issue 21).
    In a batch whose four images are each alone in their class, a same-class partner is the image
    itself (its z unchanged), while the default mixes in another image's z."""
    from stratalab.train import TrainConfig

    assert TrainConfig().flowaug_pairs == "any" and FlowAugmenter(_flow()).pairs == "any"
    flow = _flow()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 1, 2, 3])
    (own, _), = FlowAugmenter(flow, objective="mix", pairs="same_class").views(x, y, None, torch.Generator().manual_seed(1))
    (mixed, _), = FlowAugmenter(flow, objective="mix").views(x, y, None, torch.Generator().manual_seed(1))
    z, nu = flow.encode(x)
    assert torch.allclose(own, flow.decode(z, nu).clamp(0, 1), atol=1e-5)
    assert (mixed - own).abs().flatten(1).mean(1).min() > 1e-4  # every image got another's z
