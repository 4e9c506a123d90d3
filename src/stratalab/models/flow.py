"""A decoupled generative flow at CPU scale: the model behind FlowAug.

Ma, Kong, Zhang & Hovy, "Decoupling Global and Local Representations via Invertible Generative
Flows" (ICLR 2021), as used by Chiu, Chen & Ma, "Better May Not Be Fairer" (Sec. 3.1, eq. 1):

* an **encoder** ``q(z | x) = N(mu(x), diag sigma(x)^2)`` gives the global latent ``z`` (``d_z``
  numbers: colour, style, background);
* a **conditional Glow** ``nu = f(x; z)`` (squeeze, then per level ``steps`` x [ActNorm,
  invertible 1x1 convolution, affine coupling whose network also sees ``z``]) maps the image to the
  local latent ``nu`` of the image's own size, with prior ``nu ~ N(0, I)``; its inverse is the
  decoder ``x = f^-1(nu; z)``.

Training maximises the evidence lower bound (Ma et al., eq. 3) on uniformly dequantised pixels,
``log p(x) >= E_q[log p(nu) + log|det df/dx|] - KL(q(z|x) || N(0, I))``, and :func:`bits_per_dim`
reports the bound in bits per dimension of the 8-bit image (``(-ELBO + D ln 256) / (D ln 2)``, the
figure Chiu et al. quote as 3.27 on CIFAR-10 for their GPU-scale flow). ``free_bits`` keeps each
dimension of ``z`` carrying at least that many nats (Kingma et al. 2016), so that the powerful flow
decoder cannot ignore ``z`` (posterior collapse would make FlowAug's edits of ``z`` a no-op).

:meth:`DecoupledFlow.encode` is ``F_enc`` (``z`` is the posterior mean, so ``decode(*encode(x))``
gives ``x`` back up to float rounding) and :meth:`DecoupledFlow.decode` is ``F_dec``. Weights are
saved with their config and read back with ``torch.load(weights_only=True)``
(:func:`save_flow` / :func:`load_flow`). The reference implementation (``wolf``) uses a deeper
multi-scale Glow with a flow prior on ``z``; this one is sized to train in minutes on 2 cores.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._config import config_from_dict, config_to_dict
from .._device import autocast, check_precision, grad_scaler, model_device, resolve_device, to_device
from .._io import file_sha256

__all__ = ["FlowConfig", "DecoupledFlow", "train_flow", "bits_per_dim", "save_flow", "load_flow", "file_sha256", "FLOW_FORMAT"]

FLOW_FORMAT = "stratalab-decoupled-flow"


@dataclass
class FlowConfig:
    """Architecture and training settings of :class:`DecoupledFlow`; round-trips to JSON.

    ``image_shape`` (C, H, W) with H, W divisible by 4 (two squeezes); ``levels`` squeeze levels
    with ``steps`` flow steps each; ``hidden`` channels in each coupling network; ``z_dim`` size
    of the global latent; ``free_bits`` nats per ``z`` dimension below which the KL is not pushed.
    Training: Adam at ``lr`` with ``warmup`` steps of linear warm-up, ``epochs`` over the images in
    batches of ``batch_size``, gradient norm clipped at ``clip``; ``seed`` fixes everything.

    Two levers that push the global look into ``z`` (issue 21; off by default, the flow as before):
    ``z_affine`` puts a per-channel affine map of the pixels, its shift and log-scale linear in
    ``z`` (zero-initialised), before the first level, so ``nu`` is the image with a ``z``-given
    colour and contrast taken out; ``kl_warmup`` raises the KL term's weight linearly from 0 to 1
    over that many steps, so the decoder learns to read ``z`` before ``z`` is made to pay for itself;
    ``coupling_kernel=1`` makes the coupling networks 1x1 (the default 3 sees neighbours), so the
    local flow models each squeezed block alone and whatever spans blocks must come from ``z``.
    ``colour_std`` (> 0, needs ``z_affine``) adds a training term: the image's mean colour (its
    per-channel pixel mean) under a Gaussian centred on the ``z``-given shift with that std, i.e. an
    auxiliary decoder of the colour from ``z``. The ELBO alone lets the local flow model the colour
    (``z`` then moves it about 25% of the way, issue 21); with this term the colour must be read from
    ``z``. It is not part of the bound: :func:`bits_per_dim` reports the ELBO without it.
    """

    image_shape: tuple[int, int, int] = (3, 32, 32)
    levels: int = 2
    steps: int = 4
    hidden: int = 64
    z_dim: int = 64
    free_bits: float = 0.1
    epochs: int = 4
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200
    clip: float = 50.0
    seed: int = 0
    z_affine: bool = False
    kl_warmup: int = 0
    coupling_kernel: int = 3
    colour_std: float = 0.0

    def __post_init__(self) -> None:
        self.image_shape = tuple(int(v) for v in self.image_shape)  # type: ignore[assignment]
        c, h, w = self.image_shape if len(self.image_shape) == 3 else (0, 0, 0)
        if len(self.image_shape) != 3 or c < 1 or h < 1 or w < 1:
            raise ValueError(f"image_shape must be (channels, height, width), got {self.image_shape}.")
        for name in ("levels", "steps", "hidden", "z_dim", "epochs", "batch_size"):
            v = getattr(self, name)
            low = 2 if name == "batch_size" else 1
            if isinstance(v, bool) or int(v) != v or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}.")
        if h % (2 ** self.levels) or w % (2 ** self.levels):
            raise ValueError(f"the image sides ({h}x{w}) must be divisible by 2**levels = {2 ** self.levels}; "
                             "use fewer levels or resize the images.")
        for name, min_value in (("free_bits", 0.0), ("lr", 0.0), ("clip", 0.0)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < min_value or (name != "free_bits" and v == 0):
                raise ValueError(f"{name} must be a finite number {'>= 0' if name == 'free_bits' else '> 0'}, got {v!r}.")
        for name in ("warmup", "kl_warmup"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}.")
        if self.coupling_kernel not in (1, 3) or isinstance(self.coupling_kernel, bool):
            raise ValueError(f"coupling_kernel must be 1 or 3, got {self.coupling_kernel!r}.")
        if not isinstance(self.z_affine, bool):
            raise ValueError(f"z_affine must be True or False, got {self.z_affine!r}.")
        v = self.colour_std
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"colour_std must be a finite number >= 0 (0: off), got {v!r}.")
        self.colour_std = float(v)
        if self.colour_std > 0 and not self.z_affine:
            raise ValueError("colour_std trains z's per-channel shift to the image's mean colour; it needs z_affine=True "
                             "(--z-affine).")
        if int(self.seed) != self.seed or not 0 <= self.seed < 2 ** 32:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed!r}.")

    @property
    def dims(self) -> int:
        return int(np.prod(self.image_shape))

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FlowConfig":
        return config_from_dict(cls, d, "flow config")


def squeeze(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, 4C, H/2, W/2), Glow's space-to-depth."""
    n, c, h, w = x.shape
    x = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(n, c * 4, h // 2, w // 2)


def unsqueeze(x: Tensor) -> Tensor:
    """The inverse of :func:`squeeze`."""
    n, c, h, w = x.shape
    x = x.view(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c // 4, h * 2, w * 2)


class ActNorm(nn.Module):
    """Per-channel affine ``y = (x + b) * exp(s)``, initialised from the first training batch so
    its output has zero mean and unit variance (Kingma & Dhariwal 2018, Sec. 3.1)."""

    initialized: Tensor  # a buffer, registered in __init__

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            with torch.no_grad():
                mean = x.mean(dim=(0, 2, 3), keepdim=True)
                std = x.std(dim=(0, 2, 3), keepdim=True)
                self.bias.copy_(-mean)
                self.logs.copy_(-torch.log(std + 1e-6))
                self.initialized.fill_(1)
        y = (x + self.bias) * torch.exp(self.logs)
        return y, self.logs.sum().expand(x.shape[0]) * (x.shape[2] * x.shape[3])

    def inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self.logs) - self.bias


class InvConv1x1(nn.Module):
    """Invertible 1x1 convolution with a random orthogonal start (Kingma & Dhariwal 2018, Sec. 3.2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        w = torch.linalg.qr(torch.randn(channels, channels))[0]
        self.weight = nn.Parameter(w)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = torch.linalg.slogdet(self.weight)[1] * (x.shape[2] * x.shape[3])
        return F.conv2d(x, self.weight[:, :, None, None]), logdet.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return F.conv2d(y, torch.linalg.inv(self.weight)[:, :, None, None])


class CondCoupling(nn.Module):
    """Affine coupling conditioned on ``z``: the second half of the channels is shifted and scaled by
    a network of the first half and of ``z`` (broadcast over space); Glow's ``sigmoid(. + 2)`` scale
    (kept in log space) and a zero-initialised last layer, so each step starts as a fixed scaling
    by sigmoid(2) = 0.88 of the second half, the same for every ``z``."""

    # the channels passed through unchanged; the name shadows nn.Module.half() on this module
    half: int  # type: ignore[assignment]

    def __init__(self, channels: int, hidden: int, z_dim: int, cond_channels: int = 8, kernel: int = 3) -> None:
        super().__init__()
        self.half = channels // 2
        self.cond = nn.Linear(z_dim, cond_channels)
        self.net = nn.Sequential(
            nn.Conv2d(self.half + cond_channels, hidden, kernel, padding=kernel // 2), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
            nn.Conv2d(hidden, 2 * (channels - self.half), kernel, padding=kernel // 2),
        )
        last = self.net[-1]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _params(self, a: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        c = self.cond(z)[:, :, None, None].expand(-1, -1, a.shape[2], a.shape[3])
        h = self.net(torch.cat([a, c], dim=1))
        shift, raw = h[:, 0::2], h[:, 1::2]
        return shift, F.logsigmoid(raw + 2.0)

    def forward(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x[:, :self.half], x[:, self.half:]
        shift, log_scale = self._params(a, z)
        return torch.cat([a, (b + shift) * torch.exp(log_scale)], dim=1), log_scale.flatten(1).sum(1)

    def inverse(self, y: Tensor, z: Tensor) -> Tensor:
        a, b = y[:, :self.half], y[:, self.half:]
        shift, log_scale = self._params(a, z)
        return torch.cat([a, b * torch.exp(-log_scale) - shift], dim=1)


class FlowStep(nn.Module):
    def __init__(self, channels: int, hidden: int, z_dim: int, kernel: int = 3) -> None:
        super().__init__()
        self.norm = ActNorm(channels)
        self.mix = InvConv1x1(channels)
        self.coupling = CondCoupling(channels, hidden, z_dim, kernel=kernel)

    def forward(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        x, l1 = self.norm(x)
        x, l2 = self.mix(x)
        x, l3 = self.coupling(x, z)
        return x, l1 + l2 + l3

    def inverse(self, y: Tensor, z: Tensor) -> Tensor:
        return self.norm.inverse(self.mix.inverse(self.coupling.inverse(y, z)))


class Encoder(nn.Module):
    """``q(z | x)``: a small strided CNN giving the mean and log-variance of ``z``; the last layer
    starts at zero, so ``q`` starts as the prior N(0, I)."""

    def __init__(self, in_channels: int, z_dim: int, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.ELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ELU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.ELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, 2 * z_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.head(self.body(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)


class DecoupledFlow(nn.Module):
    """Global ``z`` from an encoder, local ``nu`` from a conditional Glow (see the module docstring).

    The flow models dequantised 8-bit pixels ``(k + u) / 256`` (centred to [-0.5, 0.5] inside).
    ``encode(x)`` takes the loaders' images ``k / 255`` in [0, 1] and places each pixel at the centre
    of its bin, ``(k + 0.5) / 256``; ``decode(z, nu)`` maps back, ``(256 v - 0.5) / 255`` clamped to
    [0, 1], so ``decode(*encode(x))`` gives 8-bit images back. ``loss_terms(x_dequantised)`` gives
    the negative ELBO per example in nats, for training.
    """

    def __init__(self, config: FlowConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or FlowConfig()
        c = cfg.image_shape[0]
        with torch.random.fork_rng(devices=[]):  # initialised from the flow's seed; the caller's RNG is left as it was
            torch.manual_seed(cfg.seed)
            self.encoder = Encoder(c, cfg.z_dim)
            self.z_affine = None
            if cfg.z_affine:  # per-channel shift and log-scale of the pixels from z, starting at the identity
                self.z_affine = nn.Linear(cfg.z_dim, 2 * c)
                nn.init.zeros_(self.z_affine.weight)
                nn.init.zeros_(self.z_affine.bias)
            self.levels = nn.ModuleList()
            for level in range(cfg.levels):
                channels = c * 4 ** (level + 1)
                self.levels.append(nn.ModuleList(FlowStep(channels, cfg.hidden, cfg.z_dim, cfg.coupling_kernel)
                                                 for _ in range(cfg.steps)))

    # f(x; z): image -> nu, with log|det|
    def flow_forward(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        h = x - 0.5
        logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        if self.z_affine is not None:
            shift, log_scale = self._z_affine(z)
            h = (h - shift) * torch.exp(-log_scale)
            logdet = logdet - log_scale.flatten(1).sum(1) * (h.shape[2] * h.shape[3])
        for steps in self.levels:
            assert isinstance(steps, nn.ModuleList)  # one ModuleList of FlowSteps per level
            h = squeeze(h)
            for step in steps:
                h, ld = step(h, z)
                logdet = logdet + ld
        return h, logdet

    def flow_inverse(self, nu: Tensor, z: Tensor) -> Tensor:
        h = nu
        for steps in reversed(self.levels):
            assert isinstance(steps, nn.ModuleList)
            for step in reversed(steps):
                assert isinstance(step, FlowStep)
                h = step.inverse(h, z)
            h = unsqueeze(h)
        if self.z_affine is not None:
            shift, log_scale = self._z_affine(z)
            h = h * torch.exp(log_scale) + shift
        return h + 0.5

    def _z_affine(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """The ``z``-given per-channel shift and log-scale (N, C, 1, 1); log-scale kept in [-3, 3]."""
        assert self.z_affine is not None
        shift, raw = self.z_affine(z)[:, :, None, None].chunk(2, dim=1)
        return shift, 3.0 * torch.tanh(raw / 3.0)

    def _check(self, x: Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.config.image_shape):
            raise ValueError(f"the flow was built for images of shape {self.config.image_shape}, got a batch of shape "
                             f"{tuple(x.shape)}.")

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``F_enc`` of images in [0, 1]: ``z`` = the posterior mean of ``q(z | x)``, ``nu = f(x; z)``."""
        self._check(x)
        v = (torch.round(x * 255.0) + 0.5) / 256.0
        z = self.encoder(v - 0.5)[0]
        return z, self.flow_forward(v, z)[0]

    def decode(self, z: Tensor, nu: Tensor) -> Tensor:
        """``F_dec``: ``f^-1(nu; z)`` as images in [0, 1]."""
        c, h, w = self.config.image_shape
        want = (c * 4 ** self.config.levels, h >> self.config.levels, w >> self.config.levels)
        if nu.ndim != 4 or tuple(nu.shape[1:]) != want or z.ndim != 2 or z.shape != (nu.shape[0], self.config.z_dim):
            raise ValueError(f"decode needs z of shape (N, {self.config.z_dim}) and nu of shape (N, {', '.join(map(str, want))}) "
                             f"as encode gives them; got {tuple(z.shape)} and {tuple(nu.shape)}.")
        return self.to_image(self.flow_inverse(nu, z))

    @staticmethod
    def to_image(v: Tensor) -> Tensor:
        """Flow-space pixels ``v`` (dequantised, in [0, 1)) as images in [0, 1]: ``(256 v - 0.5) / 255``,
        clamped; non-finite values (an inverse that blew up) become finite."""
        v = torch.nan_to_num(v, nan=0.5, posinf=1.0, neginf=0.0)
        return ((v * 256.0 - 0.5) / 255.0).clamp(0.0, 1.0)

    def loss_terms(self, x: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Per-example terms of the negative ELBO (nats) on ``x``, which the caller has already
        dequantised: ``nll`` (of ``nu`` under N(0, I) minus log|det|), ``kl`` (exact, summed over
        ``z``), ``kl_free`` (the free-bits version the optimiser sees) and ``colour`` (the
        ``colour_std`` term, 0 when off; a training term outside the bound)."""
        self._check(x)
        mu, logvar = self.encoder(x - 0.5)
        # drawn on the generator's device (the CPU's for a seeded run: the same draws on every device), then moved
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype,
                          device=generator.device if generator is not None else mu.device).to(mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps
        nu, logdet = self.flow_forward(x, z)
        d = nu[0].numel()
        log_pnu = -0.5 * nu.pow(2).flatten(1).sum(1) - 0.5 * d * math.log(2 * math.pi)
        kl_dims = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
        kl_free = torch.clamp(kl_dims.mean(0), min=self.config.free_bits).sum().expand(x.shape[0])
        colour = torch.zeros_like(kl_free)
        if self.config.colour_std > 0:  # -log N(mean colour; z's shift, colour_std^2), up to a constant
            shift = self._z_affine(z)[0].flatten(1)
            colour = 0.5 * ((shift - (x.mean((2, 3)) - 0.5)) / self.config.colour_std).pow(2).sum(1)
        return {"nll": -(log_pnu + logdet), "kl": kl_dims.sum(1), "kl_free": kl_free, "colour": colour}


def dequantize(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform dequantisation of [0, 1] images that hold 8-bit values: ``(round(255 x) + u) / 256``."""
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype)
    return (torch.round(x * 255.0) + u) / 256.0


def _to_bpd(neg_elbo_nats: Tensor | float, dims: int) -> float:
    return float((neg_elbo_nats + dims * math.log(256.0)) / (dims * math.log(2.0)))


@torch.no_grad()
def bits_per_dim(flow: DecoupledFlow, images: np.ndarray | Tensor, *, batch_size: int = 500, seed: int = 0) -> float:
    """The ELBO bound on the negative log-likelihood of 8-bit ``images`` (N, C, H, W in [0, 1]), in
    bits per dimension: ``mean(-ELBO + D ln 256) / (D ln 2)``, one dequantisation and one ``z``
    sample per image drawn from ``seed``, on the flow's device. Lower is better; uniform noise over
    256 levels is 8."""
    x_all = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if x_all.ndim != 4 or len(x_all) == 0:
        raise ValueError(f"bits_per_dim needs a non-empty image batch (N, C, H, W), got shape {tuple(x_all.shape)}.")
    if not torch.isfinite(x_all).all() or x_all.min() < 0 or x_all.max() > 1:
        raise ValueError("images must be finite and in [0, 1] (the loaders' format).")
    flow.eval()
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for s in range(0, len(x_all), batch_size):
        t = flow.loss_terms(to_device(dequantize(x_all[s:s + batch_size], g), model_device(flow)), g)
        total += float((t["nll"] + t["kl"]).sum())
    return _to_bpd(total / len(x_all), flow.config.dims)


def train_flow(images: np.ndarray, config: FlowConfig | None = None, *, val_images: np.ndarray | None = None,
               progress: Callable[[dict[str, Any]], None] | None = None,
               on_step: Callable[[int, int], None] | None = None, device: str = "cpu",
               precision: str = "fp32") -> tuple[DecoupledFlow, list[dict[str, Any]]]:
    """Fit a :class:`DecoupledFlow` to ``images`` (N, C, H, W in [0, 1], 8-bit values) by the
    free-bits ELBO; returns the flow (eval mode) and one history row per epoch (train bits/dim of
    the bound, KL of ``z`` in nats, seconds, and val bits/dim when ``val_images`` is given);
    ``on_step(step, total_steps)`` after every optimiser step (progress bars). Deterministic for a
    seed on one machine and thread count. ``device`` / ``precision`` as in
    :mod:`stratalab._device`: batches, dequantisation noise and ``z`` samples are drawn on the CPU
    from the seed and moved, so the draws are the same on every device; the flow's log-determinants
    stay in fp32 outside the autocast regions torch keeps in fp32."""
    cfg = config or FlowConfig()
    dev = torch.device(resolve_device(device))
    precision = check_precision(precision, str(dev))
    x_all = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if x_all.ndim != 4 or tuple(x_all.shape[1:]) != cfg.image_shape:
        raise ValueError(f"images must have shape (N, {', '.join(map(str, cfg.image_shape))}) to match the flow's "
                         f"image_shape; got {tuple(x_all.shape)}.")
    if len(x_all) < 2:
        raise ValueError("train_flow needs at least 2 images.")
    if not torch.isfinite(x_all).all() or x_all.min() < 0 or x_all.max() > 1:
        raise ValueError("images must be finite and in [0, 1] (the loaders' format).")
    flow = DecoupledFlow(cfg).to(dev)
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(flow.parameters(), lr=cfg.lr)
    scaler = grad_scaler(dev, precision)
    history: list[dict[str, Any]] = []
    step = 0
    dims = cfg.dims
    total_steps = cfg.epochs * (len(x_all) // cfg.batch_size + (len(x_all) % cfg.batch_size >= 2))
    for epoch in range(cfg.epochs):
        flow.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(x_all), generator=g)
        tot_nll = tot_kl = 0.0
        seen = 0
        for s in range(0, len(order), cfg.batch_size):
            xb = dequantize(x_all[order[s:s + cfg.batch_size]], g)
            if len(xb) < 2:  # a last batch of one: free bits average over the batch
                continue
            for pg in opt.param_groups:
                pg["lr"] = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))
            with autocast(dev, precision):
                t = flow.loss_terms(to_device(xb, dev), g)
            t = {k: v.float() for k, v in t.items()}
            beta = min(1.0, (step + 1) / cfg.kl_warmup) if cfg.kl_warmup else 1.0
            loss = (t["nll"] + beta * t["kl_free"] + t["colour"]).mean() / dims
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the flow's loss became {float(loss)} at epoch {epoch + 1}, step {step + 1}; "
                                         "lower lr or raise warmup.")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)  # clip the true gradients (a no-op unless fp16)
            torch.nn.utils.clip_grad_norm_(flow.parameters(), cfg.clip)
            scaler.step(opt)
            scaler.update()
            step += 1
            if on_step is not None:
                on_step(step, total_steps)
            tot_nll += float(t["nll"].detach().sum())
            tot_kl += float(t["kl"].detach().sum())
            seen += len(xb)
        row: dict[str, Any] = {"epoch": epoch + 1, "train_bpd": _to_bpd((tot_nll + tot_kl) / seen, dims),
                               "kl_nats": tot_kl / seen, "seconds": time.perf_counter() - t0}
        if val_images is not None:
            row["val_bpd"] = bits_per_dim(flow, val_images, seed=cfg.seed)
        history.append(row)
        if progress is not None:
            progress(row)
    flow.eval()
    return flow, history


def save_flow(flow: DecoupledFlow, path: str | Path, *, history: list[dict[str, Any]] | None = None,
              extra: dict[str, Any] | None = None) -> Path:
    """Write the flow's weights with its config (and training history) atomically to ``path``;
    :func:`load_flow` reads it back with ``weights_only=True``."""
    import json
    import os

    path = Path(path)
    payload = {"format": FLOW_FORMAT, "version": 1, "config": flow.config.to_dict(),
               "history": json.loads(json.dumps(history or [])), "extra": json.loads(json.dumps(extra or {})),
               "state_dict": flow.state_dict()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_flow(path: str | Path) -> tuple[DecoupledFlow, dict[str, Any]]:
    """A flow written by :func:`save_flow` (eval mode) and its record (config, history, extra).
    Never unpickles: ``torch.load(weights_only=True)``; anything else is refused with the reason."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no flow file at {path}; train one with `stratalab flow train ... -o {path.name}`.")
    from .pretrained import load_weights_only  # the one safe loader (refuses raw pickles unread, no torch warnings)

    payload = load_weights_only(path, "a readable flow file", "write it with `stratalab flow train`.")
    if not isinstance(payload, dict) or payload.get("format") != FLOW_FORMAT:
        raise ValueError(f"{path} is not a stratalab flow file (no {FLOW_FORMAT!r} marker); write it with "
                         "`stratalab flow train`.")
    if not isinstance(payload.get("config"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise ValueError(f"{path} is a damaged flow file (no config or weights); train it again with `stratalab flow train`.")
    flow = DecoupledFlow(FlowConfig.from_dict(payload["config"]))
    try:
        flow.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: the weights do not fit the recorded config ({str(e).splitlines()[0][:160]}).") from None
    flow.eval()
    record = {k: payload.get(k) for k in ("config", "history", "extra")}
    record["sha256"] = file_sha256(path)
    return flow, record


