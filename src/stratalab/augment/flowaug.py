"""FlowAug: semantic augmentation by editing the global latent of a decoupled flow.

Chiu, Chen & Ma, "Better May Not Be Fairer: A Study on Subgroup Discrepancy in Image
Classification" (ICCV 2023), Sec. 3.3, on the flow of :mod:`stratalab.models.flow`
(``z, nu = F_enc(x)``, ``x' = F_dec(z, nu)``; eq. 1):

* **Algorithm 1** (T1, :func:`gaussian_z`): ``x' = F_dec(z + eps, nu)`` with
  ``eps ~ N_trunc(mu, sigma^2; b)``; the paper's ``mu = 0``, ``sigma = 0.1`` and ``b = 4``, where
  ``b`` bounds ``eps`` in ``z``'s own units (the paper: "z has an average maximum value around 4"),
  so at ``sigma = 0.1`` the truncation (40 sigma) never binds and T1 is Gaussian noise in effect;
  a bound in units of sigma would be ``bound = 4 * sigma``.
* **Algorithm 2** (T2, :func:`mix_z`): ``m ~ Beta(alpha, alpha)``, ``m <- 1 - m`` when
  ``m < tr`` (so the image keeps most of its own style), ``x' = F_dec(m z_i + (1 - m) z_j, nu_i)``;
  ``alpha = 1``, ``tr = 0.5``. The partner ``j`` is drawn from the whole training set: another
  image (``pairs="any"``, the default: Algorithm 2 as printed, "x1, x2 ~ X") or another image of
  the same class (``pairs="same_class"``, this project's default before issue 21, as issue #12 asked). The label stays
  ``y_i``: ``nu_i``, the content, is kept.
* **Objectives** (:data:`OBJECTIVES`): which views of a batch the classifier is trained on, and
  their weights, eq. (2) ``L(f(t(x)), y)``; eq. (3) ``L(f(t(x)), y) + lambda L(f(x), y)``;
  eq. (4) ``L(f(t1(x)), y) + lambda1 L(f(t2(x)), y) + lambda2 L(f(x), y)``. The paper's
  defaults: ``lambda in {0.01, 0.05, 0.1}``, ``lambda1 = 1``, ``lambda2 in {0.01, 0.05, 0.1}``;
  its best CIFAR-10 MacroStd (1.65) is eq. (3) with T1 ("Trunc Gaussian on z + Std").

:class:`FlowAugmenter` applies one objective online inside the training loop. ``F_enc`` is
deterministic (``z`` is the posterior mean), so the training set is encoded once, in fixed chunks
(the same encodings whatever the batch order, so a resumed run continues exactly), and every batch
then only decodes, with fresh noise and partners. The inverse of an affine-coupling flow can blow
up for an edited ``z`` (a division by a small scale, amplified over the steps: 3 of 5,000 CIFAR-10
images with sigma = 0.1 on this project's flow); such a view (non-finite, or leaving [-0.5, 1.5]
before the clamp) is replaced by its clean image, and ``failed`` / ``decoded`` count them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from .mixing import sample_beta

__all__ = ["OBJECTIVES", "truncated_normal", "gaussian_z", "mix_z", "mix_partners", "draw_partners", "FlowAugmenter"]

# objective name -> the views a batch is trained on, in order: "gauss" (T1), "mix" (T2), "std" (x itself)
OBJECTIVES: dict[str, tuple[str, ...]] = {
    "gauss": ("gauss",),                      # eq. (2) with T1: "Ours (Trunc Gaussian on z)"
    "mix": ("mix",),                          # eq. (2) with T2: "Ours (Mix z)"
    "gauss+std": ("gauss", "std"),            # eq. (3) with T1: "+ Std"
    "mix+std": ("mix", "std"),                # eq. (3) with T2
    "gauss+mix": ("gauss", "mix"),            # eq. (4) without the standard term: "+ Mix z"
    "gauss+mix+std": ("gauss", "mix", "std"),  # eq. (4): "+ Std + Mix z"
}


def truncated_normal(shape: tuple[int, ...], generator: torch.Generator, *, mu: float = 0.0, sigma: float = 0.1,
                     bound: float = 4.0, dtype: torch.dtype = torch.float32) -> Tensor:
    """Draws of ``N(mu, sigma^2)`` truncated to ``[mu - bound, mu + bound]`` (Algorithm 1's
    ``N_trunc(mu, sigma^2; b)``), by the inverse CDF of a uniform on ``[Phi(-b/sigma), Phi(b/sigma)]``;
    every draw comes from ``generator``."""
    if not (math.isfinite(mu) and math.isfinite(sigma) and math.isfinite(bound)) or sigma <= 0 or bound <= 0:
        raise ValueError(f"truncated_normal needs finite mu, sigma > 0 and bound > 0; got mu={mu}, sigma={sigma}, "
                         f"bound={bound}.")
    a = 0.5 * math.erfc(bound / sigma / math.sqrt(2.0))  # Phi(-b / sigma)
    u = a + (1.0 - 2.0 * a) * torch.rand(shape, generator=generator, dtype=torch.float64)
    eps = torch.special.ndtri(u).clamp(-bound / sigma, bound / sigma)
    return (mu + sigma * eps).to(dtype)


def gaussian_z(z: Tensor, generator: torch.Generator, *, mu: float = 0.0, sigma: float = 0.1,
               bound: float = 4.0) -> Tensor:
    """Algorithm 1 on the global latents ``z`` (N, d): ``z + eps``, ``eps ~ N_trunc(mu, sigma^2; b)``."""
    return z + truncated_normal(tuple(z.shape), generator, mu=mu, sigma=sigma, bound=bound, dtype=z.dtype)


def mix_partners(y: Tensor, generator: torch.Generator, *, same_class: bool) -> Tensor:
    """For each example ``i`` a partner ``j != i`` drawn uniformly (from ``generator``): among the
    batch's examples of the same class when ``same_class`` (an example alone in its class is its own
    partner, so it is left as it is), else among all others."""
    n = len(y)
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    keys = torch.rand(n, n, generator=generator)
    allowed = (y[:, None] == y[None, :]) if same_class else torch.ones(n, n, dtype=torch.bool)
    allowed = allowed & ~torch.eye(n, dtype=torch.bool)
    keys = torch.where(allowed, keys, torch.full_like(keys, -1.0))
    best = keys.argmax(dim=1)
    return torch.where(allowed.any(dim=1), best, torch.arange(n))


def draw_partners(idx: Tensor, train_y: Tensor, generator: torch.Generator, *, same_class: bool) -> Tensor:
    """For training examples ``idx``, a partner ``j != i`` drawn uniformly from the whole training
    set (labels ``train_y``): among the other examples of ``i``'s class when ``same_class`` (an
    example alone in its class is its own partner), else among all others. One uniform per example."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    u = torch.rand(len(idx), generator=generator, dtype=torch.float64)
    n = len(train_y)
    if not same_class:
        r = torch.clamp((u * (n - 1)).long(), max=max(n - 2, 0))
        return torch.where(torch.tensor(n > 1), r + (r >= idx).long(), idx)
    order = torch.argsort(train_y, stable=True)
    counts = torch.bincount(train_y)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.empty_like(order)
    pos[order] = torch.arange(n)
    c = train_y[idx]
    cnt, start = counts[c], starts[c]
    r = torch.minimum((u * (cnt - 1)).long(), torch.clamp(cnt - 2, min=0))
    r = r + (r >= pos[idx] - start).long()
    j = order[torch.clamp(start + r, max=n - 1)]
    return torch.where(cnt > 1, j, idx)


def mix_z(z: Tensor, z_other: Tensor, generator: torch.Generator, *, alpha: float = 1.0,
          threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """Algorithm 2 on the global latents: ``m ~ Beta(alpha, alpha)`` per example, ``m <- 1 - m``
    when ``m < threshold``, ``z_new = m z + (1 - m) z_other`` (``z_other``: each partner's ``z``).
    Returns ``(z_new, m)``."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold (tr) must be in [0, 1], got {threshold}.")
    if z_other.shape != z.shape:
        raise ValueError(f"z_other must have z's shape {tuple(z.shape)}, got {tuple(z_other.shape)}.")
    m = sample_beta(alpha, alpha, len(z), generator).to(z.dtype)
    m = torch.where(m < threshold, 1.0 - m, m)
    return m[:, None] * z + (1.0 - m[:, None]) * z_other, m


@dataclass
class FlowAugmenter:
    """Online FlowAug for the training loop: ``views(x, y, idx, generator)`` returns the batch's
    views and their loss weights for ``objective`` (:data:`OBJECTIVES`). ``std_weight`` is eq. (3)'s
    ``lambda`` and eq. (4)'s ``lambda2``; ``mix_weight`` is eq. (4)'s ``lambda1``.

    With ``train_x`` (``train_x(indices) -> images``) and ``train_y``, the whole training set is
    encoded once, in chunks of ``chunk`` in index order, at the first batch; ``idx`` (the batch's
    positions in the training set) then picks the cached ``(z, nu)``, and Algorithm 2's partners
    come from the whole training set (:func:`draw_partners`). Without them, each batch is encoded
    and partners come from the batch (:func:`mix_partners`)."""

    flow: torch.nn.Module
    objective: str = "gauss+std"
    std_weight: float = 0.1
    mix_weight: float = 1.0
    sigma: float = 0.1
    bound: float = 4.0
    alpha: float = 1.0
    threshold: float = 0.5
    pairs: str = "any"
    train_x: "Callable[[Any], Tensor] | None" = None
    train_y: Tensor | None = None
    chunk: int = 500

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"FlowAug objective must be one of {', '.join(OBJECTIVES)}; got {self.objective!r}.")
        if self.pairs not in ("same_class", "any"):
            raise ValueError(f"pairs must be 'same_class' or 'any', got {self.pairs!r}.")
        for name, low_open in (("std_weight", False), ("mix_weight", False), ("sigma", True), ("bound", True), ("alpha", True)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (low_open and v == 0):
                raise ValueError(f"{name} must be a finite number {'> 0' if low_open else '>= 0'}, got {v!r}.")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold (tr) must be in [0, 1], got {self.threshold}.")
        if (self.train_x is None) != (self.train_y is None):
            raise ValueError("give train_x and train_y together (or neither).")
        self.flow.eval()
        for p in self.flow.parameters():
            p.requires_grad_(False)
        self._z: Tensor | None = None
        self._nu: Tensor | None = None
        self.decoded = 0
        self.failed = 0

    @torch.no_grad()
    def decode(self, z: Tensor, nu: Tensor, x: Tensor) -> Tensor:
        """``F_dec(z, nu)`` as images; an example whose inverse blew up gets its clean image ``x``."""
        raw = self.flow.flow_inverse(nu, z)  # type: ignore[operator]
        flat = raw.flatten(1)
        bad = ~torch.isfinite(flat).all(dim=1) | (torch.nan_to_num(flat, nan=0.0).amin(dim=1) < -0.5) | \
            (torch.nan_to_num(flat, nan=0.0).amax(dim=1) > 1.5)
        out = self.flow.to_image(raw)  # type: ignore[operator]
        if bad.any():
            out[bad] = x[bad]
        self.decoded += len(z)
        self.failed += int(bad.sum())
        return out

    @torch.no_grad()
    def _encode_all(self) -> None:
        assert self.train_y is not None and self.train_x is not None
        n = len(self.train_y)
        zs, nus = [], []
        for s in range(0, n, self.chunk):
            z, nu = self.flow.encode(torch.as_tensor(self.train_x(np.arange(s, min(s + self.chunk, n))), dtype=torch.float32))  # type: ignore[operator]
            zs.append(z)
            nus.append(nu)
        self._z, self._nu = torch.cat(zs), torch.cat(nus)

    @torch.no_grad()
    def encode(self, x: Tensor, idx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``F_enc(x)``: from the training-set cache when there is one and ``idx`` is given."""
        if idx is None or self.train_x is None:
            return self.flow.encode(x)  # type: ignore[operator]
        if self._z is None:
            self._encode_all()
        assert self._z is not None and self._nu is not None
        idx = torch.as_tensor(idx, dtype=torch.long)
        return self._z[idx], self._nu[idx]

    @torch.no_grad()
    def views(self, x: Tensor, y: Tensor, idx: Tensor | None, generator: torch.Generator) -> list[tuple[Tensor, float]]:
        """The objective's views of the clean batch ``x`` (N, C, H, W in [0, 1]) with their weights,
        in the order of :data:`OBJECTIVES`; every random draw comes from ``generator``."""
        names = OBJECTIVES[self.objective]
        z, nu = self.encode(x, idx)
        out: list[tuple[Tensor, float]] = []
        for name in names:
            if name == "gauss":
                out.append((self.decode(gaussian_z(z, generator, sigma=self.sigma, bound=self.bound), nu, x), 1.0))
            elif name == "mix":
                same = self.pairs == "same_class"
                if idx is not None and self._z is not None and self.train_y is not None:
                    z_other = self._z[draw_partners(idx, self.train_y, generator, same_class=same)]
                else:
                    z_other = z[mix_partners(y, generator, same_class=same)]
                z_new, _ = mix_z(z, z_other, generator, alpha=self.alpha, threshold=self.threshold)
                out.append((self.decode(z_new, nu, x), self.mix_weight if "gauss" in names else 1.0))
            else:
                out.append((x, self.std_weight))
        return out


@torch.no_grad()
def flow_sample_rows(flow: torch.nn.Module, split: "object", *, n: int = 8, sigmas: "list[float] | tuple[float, ...]" = (0.1, 0.5),
                     seed: int = 0) -> "dict[str, dict[str, Any]]":
    """FlowAug's views of ``n`` images of ``split`` (picked in same-class pairs, from ``seed``), row by
    row: ``original``, ``reconstruction`` (``F_dec(F_enc(x))``), ``alg1 sigma=s`` for each sigma,
    ``alg2 mix z`` (each image mixed with its pair's ``z``) and ``z swapped`` (its pair's ``z`` and
    its own ``nu``). Each row: ``images`` (n, C, H, W) and ``change``, the mean absolute pixel
    change from the original (a flow that ignores ``z`` gives ~0 on every edited row)."""
    import numpy as np

    y = np.asarray(split.y)  # type: ignore[attr-defined]
    rng = np.random.default_rng(seed)
    picks: list[int] = []
    partners: list[int] = []
    for i in rng.permutation(len(y)):
        if len(picks) + 2 > n:
            break
        same = np.flatnonzero((y == y[i]) & (np.arange(len(y)) != i))
        if len(same) == 0 or int(i) in picks:
            continue
        j = int(rng.choice(same))
        if j in picks:
            continue
        partners += [len(picks) + 1, len(picks)]
        picks += [int(i), j]
    if len(picks) < 2:
        raise ValueError("flow samples need at least two images of one class in the split.")
    x = torch.as_tensor(np.asarray(split.load_x(np.asarray(picks)), dtype=np.float32))  # type: ignore[attr-defined]
    g = torch.Generator().manual_seed(seed)
    flow.eval()
    z, nu = flow.encode(x)  # type: ignore[operator]
    part = torch.as_tensor(partners)
    rows: dict[str, Tensor] = {"original": x, "reconstruction": flow.decode(z, nu)}  # type: ignore[operator]
    for s in sigmas:
        rows[f"alg1 sigma={s:g}"] = flow.decode(gaussian_z(z, g, sigma=float(s)), nu)  # type: ignore[operator]
    rows["alg2 mix z"] = flow.decode(mix_z(z, z[part], g)[0], nu)  # type: ignore[operator]
    rows["z swapped"] = flow.decode(z[part], nu)  # type: ignore[operator]
    return {k: {"images": v, "change": float((v - x).abs().mean())} for k, v in rows.items()}


def plot_flow_samples(rows: "dict[str, dict[str, object]]", path: "str | object", *, title: str = "FlowAug") -> "object":
    """A grid figure of :func:`flow_sample_rows`: one row per view, labelled with its mean change."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    n = len(rows[names[0]]["images"])  # type: ignore[arg-type]
    fig, axes = plt.subplots(len(names), n, figsize=(1.2 * n + 1.6, 1.25 * len(names) + 0.5), squeeze=False)
    for r, name in enumerate(names):
        imgs = rows[name]["images"]
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(imgs[c].permute(1, 2, 0).clamp(0, 1).numpy())  # type: ignore[index]
            ax.set_xticks([])
            ax.set_yticks([])
        label = name if name == "original" else f"{name}\n|dx| {rows[name]['change']:.3f}"
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(str(path))
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    try:
        fig.savefig(tmp, dpi=110)
        tmp.replace(out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out
