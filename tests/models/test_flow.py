"""The decoupled flow behind FlowAug (Ma et al. 2021; Chiu et al. 2023, eq. 1): exact inverse,
log-determinant equal to the Jacobian's, the ELBO in bits/dim by hand, free bits, determinism, and
safe save/load."""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import torch

from stratalab.models.flow import DecoupledFlow, FlowConfig, bits_per_dim, dequantize, load_flow, save_flow, squeeze, train_flow, unsqueeze

SMALL = dict(image_shape=(3, 8, 8), steps=2, hidden=16, z_dim=4)


def _perturbed(seed: int = 0, **kw) -> DecoupledFlow:
    """A small flow moved away from its identity start, with ActNorm initialised on a batch."""
    flow = DecoupledFlow(FlowConfig(**{**SMALL, **kw}))
    g = torch.Generator().manual_seed(seed)
    flow.train()
    flow.loss_terms(torch.rand(16, *flow.config.image_shape, generator=g))
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return flow.eval()


def test_squeeze_is_a_permutation_with_an_inverse():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    s = squeeze(x)
    assert s.shape == (2, 12, 2, 2)
    assert torch.equal(torch.sort(s.flatten()).values, torch.sort(x.flatten()).values)
    assert torch.equal(unsqueeze(s), x)
    # the 2x2 block at the top left becomes the first pixel's channels 0..3 of channel 0
    assert s[0, :4, 0, 0].tolist() == [x[0, 0, 0, 0], x[0, 0, 0, 1], x[0, 0, 1, 0], x[0, 0, 1, 1]]


@pytest.mark.parametrize("kw", [{}, {"z_affine": True}, {"coupling_kernel": 1}])
def test_decode_inverts_encode_and_the_flow_inverts_for_any_z(kw):
    flow = _perturbed(**kw)
    x = torch.randint(0, 256, (6, 3, 8, 8), generator=torch.Generator().manual_seed(1)) / 255.0
    z, nu = flow.encode(x)
    assert z.shape == (6, 4) and nu.shape == (6, 48, 2, 2)
    assert torch.allclose(flow.decode(z, nu), x, atol=1e-5)  # 8-bit images come back
    with pytest.raises(ValueError, match="decode needs z of shape"):
        flow.decode(z, nu[:, :12])
    z2 = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    nu2, _ = flow.flow_forward(x, z2)
    assert torch.allclose(flow.flow_inverse(nu2, z2), x, atol=1e-5)
    # z matters: the same nu under another z decodes to another image
    assert (flow.flow_inverse(nu, z2) - x).abs().max() > 1e-3


@pytest.mark.parametrize("kw", [{}, {"z_affine": True}, {"coupling_kernel": 1}])
def test_log_determinant_equals_the_jacobians(kw):
    flow = _perturbed(**kw)
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    z = torch.randn(1, 4, generator=torch.Generator().manual_seed(4))
    _, logdet = flow.flow_forward(x, z)
    jac = torch.autograd.functional.jacobian(lambda t: flow.flow_forward(t.view(1, 3, 8, 8), z)[0].flatten(), x.flatten())
    sign, want = torch.linalg.slogdet(jac.double())
    assert sign != 0 and float(logdet.detach()) == pytest.approx(float(want), rel=1e-4, abs=1e-3)


def test_bits_per_dim_by_hand_at_the_start():
    """At initialisation q(z|x) = N(0, I) (KL 0) and the couplings ignore z (zero last layer), so
    -ELBO = ||nu||^2 / 2 + D/2 log(2 pi) - log|det J|, with log|det J| from the autograd Jacobian;
    bits/dim = (-ELBO + D ln 256) / (D ln 2) on the same dequantised pixels."""
    flow = DecoupledFlow(FlowConfig(**SMALL)).eval()
    x = torch.as_tensor(np.random.default_rng(0).integers(0, 256, (3, 3, 8, 8)) / 255.0, dtype=torch.float32)
    got = bits_per_dim(flow, x.numpy(), seed=7)
    xd = dequantize(x, torch.Generator().manual_seed(7))
    d, z = 3 * 8 * 8, torch.zeros(1, 4)
    want = []
    for xi in xd:
        nu = flow.flow_forward(xi[None], z)[0]
        jac = torch.autograd.functional.jacobian(lambda t: flow.flow_forward(t.view(1, 3, 8, 8), z)[0].flatten(), xi.flatten())
        nll = 0.5 * float(nu.detach().pow(2).sum()) + 0.5 * d * math.log(2 * math.pi) - float(torch.linalg.slogdet(jac.double())[1])
        want.append((nll + d * math.log(256)) / (d * math.log(2)))
    assert got == pytest.approx(float(np.mean(want)), rel=1e-5)


def test_kl_is_the_closed_form_and_free_bits_floor_each_dimension():
    flow = DecoupledFlow(FlowConfig(**SMALL, free_bits=0.5)).eval()
    mu = torch.tensor([0.0, 1.0, 2.0, 0.1])
    logvar = torch.tensor([0.0, 0.0, math.log(0.25), 0.0])
    with torch.no_grad():
        flow.encoder.head.bias.copy_(torch.cat([mu, logvar]))
    t = flow.loss_terms(torch.rand(3, 3, 8, 8))
    per_dim = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar)
    assert torch.allclose(t["kl"], per_dim.sum().expand(3), atol=1e-5)
    assert torch.allclose(t["kl_free"], per_dim.clamp(min=0.5).sum().expand(3), atol=1e-5)


def test_training_lowers_bits_per_dim_and_is_deterministic():
    rng = np.random.default_rng(0)
    x = np.clip(rng.normal(0.5, 0.05, (64, 3, 8, 8)), 0, 1).round(3).astype(np.float32)
    x = np.round(x * 255) / 255
    cfg = FlowConfig(**SMALL, epochs=3, batch_size=16, warmup=5, lr=3e-3)
    before = bits_per_dim(DecoupledFlow(cfg), x)
    rows = []
    flow, hist = train_flow(x, cfg, val_images=x[:16], progress=rows.append)
    assert len(hist) == 3 and rows == hist and {"train_bpd", "kl_nats", "seconds", "val_bpd"} <= set(hist[0])
    after = bits_per_dim(flow, x)
    assert after < before - 1.0, (before, after)
    again, _ = train_flow(x, cfg)
    assert all(torch.equal(a, b) for a, b in zip(flow.state_dict().values(), again.state_dict().values()))
    other, _ = train_flow(x, FlowConfig(**{**cfg.to_dict(), "seed": 1}))
    assert not torch.equal(flow.encoder.head.weight, other.encoder.head.weight)
    # a KL warm-up changes what is learnt; the z-affine flow trains too
    warm, _ = train_flow(x, FlowConfig(**{**cfg.to_dict(), "kl_warmup": 1000}))
    assert not torch.equal(flow.encoder.head.weight, warm.encoder.head.weight)
    aff, _ = train_flow(x, FlowConfig(**{**cfg.to_dict(), "z_affine": True}))
    assert bits_per_dim(aff, x) < before - 1.0


def test_building_a_flow_leaves_the_callers_random_state_alone():
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    a = DecoupledFlow(FlowConfig(**SMALL, seed=5))
    assert torch.equal(torch.rand(3), want)
    b = DecoupledFlow(FlowConfig(**SMALL, seed=5))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_save_and_load_round_trip(tmp_path):
    flow = _perturbed()
    path = save_flow(flow, tmp_path / "f.pt", history=[{"epoch": 1, "train_bpd": 5.0}], extra={"test_bpd": 4.5})
    back, record = load_flow(path)
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(back.encode(x)[1], flow.encode(x)[1])
    assert record["config"] == flow.config.to_dict() and record["extra"] == {"test_bpd": 4.5}
    assert len(record["sha256"]) == 64
    assert FlowConfig.from_dict(record["config"]) == flow.config
    assert [p.name for p in tmp_path.iterdir()] == ["f.pt"]  # nothing half-written left beside it


def test_load_refuses_pickles_foreign_files_and_missing_ones(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "stratalab-decoupled-flow", "x": Payload()}))
    with pytest.raises(ValueError, match="not a readable flow file"):
        load_flow(evil)
    assert not marker.exists()
    foreign = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="not a stratalab flow file"):
        load_flow(foreign)
    with pytest.raises(FileNotFoundError, match="stratalab flow train"):
        load_flow(tmp_path / "none.pt")
    good = save_flow(_perturbed(), tmp_path / "g.pt")
    payload = torch.load(good, weights_only=True)
    payload["config"]["hidden"] = 32
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="do not fit the recorded config"):
        load_flow(tmp_path / "mismatch.pt")


@pytest.mark.parametrize("kw, message", [
    (dict(image_shape=(3, 30, 30)), "divisible by 2\\*\\*levels"),
    (dict(image_shape=(3, 32)), "image_shape must be"),
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(batch_size=1), "batch_size must be an integer >= 2"),
    (dict(free_bits=-1.0), "free_bits must be a finite number >= 0"),
    (dict(lr=float("nan")), "lr must be a finite number > 0"),
    (dict(seed=-1), "seed must be an integer"),
])
def test_bad_configs_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        FlowConfig(**kw)


def test_wrong_inputs_are_named():
    flow = DecoupledFlow(FlowConfig(**SMALL))
    with pytest.raises(ValueError, match="built for images of shape"):
        flow.encode(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        bits_per_dim(flow, np.full((2, 3, 8, 8), 2.0, dtype=np.float32))
    with pytest.raises(ValueError, match="must have shape"):
        train_flow(np.zeros((4, 3, 16, 16), np.float32), FlowConfig(**SMALL))


def test_z_affine_lets_z_set_the_colour_and_kl_warmup_is_checked():
    """With z_affine, z's per-channel shift moves every decoded pixel of a channel by the same amount
    (the affine map is the first step of f, so its inverse is the last of the decoder)."""
    flow = _perturbed(z_affine=True)
    assert flow.z_affine is not None and DecoupledFlow(FlowConfig(**SMALL)).z_affine is None  # off by default
    x = torch.randint(0, 256, (2, 3, 8, 8), generator=torch.Generator().manual_seed(5)) / 255.0
    z, nu = flow.encode(x)
    with torch.no_grad():
        h = flow.flow_inverse(nu, z)
        shift, log_scale = flow._z_affine(z)
        base = (h - 0.5 - shift) * torch.exp(-log_scale)  # what the levels' inverse gave
        flow.z_affine.bias[0] += 0.1  # raise the red channel's shift
        moved = flow.flow_inverse(nu, z)
    assert torch.allclose(moved[:, 0] - h[:, 0], torch.full_like(h[:, 0], 0.1), atol=1e-5)
    assert torch.allclose(moved[:, 1:], h[:, 1:], atol=1e-6) and base.shape == x.shape
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="kl_warmup"):
            FlowConfig(**SMALL, kl_warmup=bad)
    with pytest.raises(ValueError, match="z_affine"):
        FlowConfig(**SMALL, z_affine=1)
    with pytest.raises(ValueError, match="coupling_kernel"):
        FlowConfig(**SMALL, coupling_kernel=5)


def test_a_one_by_one_coupling_sees_no_neighbour():
    """coupling_kernel=1: changing one pixel changes nu only inside its own squeezed block (the two
    levels of an 8x8 image make 2x2 positions of 4x4 pixels), not the other blocks."""
    flow = _perturbed(coupling_kernel=1)
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    z = torch.zeros(1, 4)
    nu, _ = flow.flow_forward(x, z)
    x2 = x.clone()
    x2[0, 0, 0, 0] += 0.3  # a pixel of the top-left 4x4 block
    with torch.no_grad():
        changed = (flow.flow_forward(x2, z)[0] - nu).abs().amax(dim=1)[0] > 1e-6  # per position of the 2x2 grid
        assert changed.tolist() == [[True, False], [False, False]]
        wide = _perturbed()  # the default 3x3 couplings see the neighbouring blocks
        assert ((wide.flow_forward(x2, z)[0] - wide.flow_forward(x, z)[0]).abs().amax(dim=1)[0] > 1e-6).sum() > 1


def test_colour_term_by_hand_and_outside_the_bound():
    """colour_std: 0.5 ((shift(z) - (mean colour - 0.5)) / std)^2 summed over channels, per image;
    the training loss adds it, bits/dim (the ELBO) does not, and it needs z_affine."""
    flow = _perturbed(z_affine=True, colour_std=0.02)
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(8)
    t = flow.loss_terms(x, g)
    mu, logvar = flow.encoder(x - 0.5)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=torch.Generator().manual_seed(8))
    shift = flow._z_affine(z)[0].flatten(1)
    want = 0.5 * (((shift - (x.mean((2, 3)) - 0.5)) / 0.02) ** 2).sum(1)
    assert torch.allclose(t["colour"], want, rtol=1e-5) and (want > 0).all()
    off = _perturbed(z_affine=True)  # the same weights without the term: the ELBO terms are the same
    t0 = off.loss_terms(x, torch.Generator().manual_seed(8))
    assert torch.allclose(t0["nll"], t["nll"]) and torch.equal(t0["colour"], torch.zeros(3))
    xs = np.random.default_rng(0).integers(0, 256, (4, 3, 8, 8)).astype(np.float32) / 255
    assert bits_per_dim(flow, xs) == pytest.approx(bits_per_dim(off, xs))  # not part of the bound
    # trained, the term pulls z's shift to the image's mean colour
    imgs = np.clip(np.random.default_rng(1).random((64, 3, 8, 8)) * 0.2 + np.random.default_rng(2).random((64, 3, 1, 1)) * 0.8,
                   0, 1)
    imgs = (np.round(imgs * 255) / 255).astype(np.float32)
    errs = {}
    for std in (0.0, 0.01):
        f, _ = train_flow(imgs, FlowConfig(**SMALL, z_affine=True, colour_std=std, epochs=8, batch_size=8, warmup=10, lr=5e-3))
        with torch.no_grad():
            z, _ = f.encode(torch.as_tensor(imgs))
            errs[std] = float((f._z_affine(z)[0].flatten(1) - (torch.as_tensor(imgs).mean((2, 3)) - 0.5)).abs().mean())
    assert errs[0.01] < 0.6 * errs[0.0], errs  # measured: 0.077 against 0.161
    for bad in (-0.1, float("nan"), True):
        with pytest.raises(ValueError, match="colour_std"):
            FlowConfig(**SMALL, z_affine=True, colour_std=bad)
    with pytest.raises(ValueError, match="needs z_affine"):
        FlowConfig(**SMALL, colour_std=0.01)
