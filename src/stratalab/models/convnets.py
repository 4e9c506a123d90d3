"""Convolutional models for CPU-scale experiments.

Every model has ``features(x)`` (penultimate activations), a linear ``head`` and ``feature_dim``,
so one feature-extraction path (:func:`stratalab.models.embed`) serves all of them. The trained
convnets also have ``feature_map(x)``, the unpooled last hidden state (as the Hugging Face
backbones; LaBonte et al.'s spectral features), and ``previous_features(x)``: the activations one
block before the penultimate layer, where a classifier trained on coarse classes has not yet merged
the subclasses within a class (GEORGE's ``feature_layer="previous"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LeNet5(nn.Module):
    """The LeNet-5 body GEORGE uses for U-MNIST (Sohoni et al. 2020): conv 1->6 5x5, max-pool,
    conv 6->16 5x5, max-pool, conv 16->120 5x5, ReLU, then a linear head. Input 32x32.
    ``width`` scales the channel counts (6, 16, 120) for scaling studies.
    """

    def __init__(self, n_classes: int = 2, in_channels: int = 1, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3 = (max(1, int(round(c * width))) for c in (6, 16, 120))
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 5), nn.ReLU(), nn.Flatten(),
        )
        self.head = nn.Linear(c3, n_classes)
        self.feature_dim = c3

    @staticmethod
    def _check(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (32, 32):
            raise ValueError(f"LeNet5 expects 32x32 inputs, got {tuple(x.shape[-2:])}; resize or pad the images (u-mnist resizes).")
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self._check(x))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The unpooled last hidden state (LaBonte et al.'s spectral features): the last
        convolution's output, (n, 120, 1, 1) at width 1; flattened, it equals :meth:`features`."""
        return self.body[:-1](self._check(x))

    def previous_features(self, x: torch.Tensor) -> torch.Tensor:
        """The input of the last convolution (after the second max-pool), flattened: 16 x 5 x 5 =
        400 values at width 1."""
        return self.body[:6](self._check(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.short(x))


class CifarResNet(nn.Module):
    """A small pre-activation-free ResNet for 32x32 inputs (He et al. 2016, CIFAR variant).

    Stages of ``blocks[i]`` basic blocks with ``width * 2**i`` channels (a 3x3 stem, stride 1),
    global average pooling, linear head. ``width=16, blocks=(3, 3, 3)`` is ResNet-20; the default
    ``width=16, blocks=(1, 1, 1)`` (ResNet-8) trains on a CPU; ``width=64, blocks=(2, 2, 2, 2)`` is
    the CIFAR ResNet-18 of Chiu et al.'s experiments (11.2M parameters).
    """

    def __init__(self, n_classes: int = 10, in_channels: int = 3, width: int = 16, blocks: Sequence[int] = (1, 1, 1)) -> None:
        super().__init__()
        if width < 1 or not 1 <= len(blocks) <= 5:
            raise ValueError("CifarResNet needs width >= 1 and one to five stage depths.")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        cin = width
        for i, nb in enumerate(blocks):
            cout = width * 2**i
            for j in range(nb):
                layers.append(_BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin, n_classes)
        self.feature_dim = cin
        self._last_stage = len(layers) - 2 - blocks[-1]  # index of the last stage's first block

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The unpooled last hidden state: the last stage's output before global average pooling."""
        return self.body[:-2](x)

    def previous_features(self, x: torch.Tensor) -> torch.Tensor:
        """The input of the last stage, globally average-pooled (as the model pools its last one)."""
        return self.body[:self._last_stage](x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class CifarNet(nn.Module):
    """A fast CIFAR network in the style of Keller Jordan's airbench (2024): a 2x2 stem convolution,
    then three blocks of [conv 3x3, max-pool 2, BatchNorm, GELU, conv 3x3, BatchNorm, GELU], global
    max-pooling and a linear head. ``width`` scales the block widths (32, 64, 128) (airbench94 uses
    64, 256, 256). Inputs in [0, 1] are normalised by the CIFAR-10 channel statistics, and the
    convolutions run in channels-last memory order, 1.4x faster on this CPU than the default
    (measured: 184 vs 264 ms per 256-image training step at width 1). Our own implementation of
    the architecture only; the recipe around it (optimiser, schedule) is our training loop's.
    """

    MEAN = (0.4914, 0.4822, 0.4465)
    STD = (0.2470, 0.2435, 0.2616)
    mean: torch.Tensor  # buffers registered in __init__
    std: torch.Tensor

    def __init__(self, n_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        w = [max(1, int(round(c * width))) for c in (32, 64, 128)]
        stem = max(1, int(round(24 * min(width, 1.0))))

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(cout),
                                 nn.GELU(), nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU())

        mean = self.MEAN if in_channels == 3 else (0.5,) * in_channels
        std = self.STD if in_channels == 3 else (0.25,) * in_channels
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, stem, 2, bias=False), nn.BatchNorm2d(stem), nn.GELU(),
            block(stem, w[0]), block(w[0], w[1]), block(w[1], w[2]),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(w[2], n_classes)
        self.feature_dim = w[2]
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to accepts memory_format; torch's overloads omit it

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return self.body(x)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The unpooled last hidden state: the last block's output before global max-pooling."""
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return self.body[:-2](x)

    def previous_features(self, x: torch.Tensor) -> torch.Tensor:
        """The output of the second block (the last block's input), globally max-pooled as the
        model pools its last one."""
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return self.body[:5](x).amax(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def whiten_(self, images: torch.Tensor, eps: float = 5e-4) -> "CifarNet":
        """Whitening initialisation of the 2x2 stem (Jordan's airbench, after tysam's hlb-CIFAR10):
        the eigenvectors of the covariance of the 2x2 patches of ``images`` (N, C, H, W in [0, 1],
        normalised as :meth:`features` does), each scaled by ``1 / sqrt(eigenvalue + eps)`` and used
        with both signs, largest eigenvalues first, as many as the stem has channels. The stem then
        starts as a whitening of its input patches, which airbench found worth about 40% of the
        epochs to 94%."""
        stem = self.body[0]
        assert isinstance(stem, nn.Conv2d)
        x = (images.float() - self.mean.cpu()) / self.std.cpu()
        c, k = x.shape[1], stem.kernel_size[0]
        patches = x.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k).double()
        patches = patches - patches.mean(0)
        cov = patches.T @ patches / len(patches)
        vals, vecs = torch.linalg.eigh(cov)
        vals, vecs = vals.flip(0), vecs.flip(1)  # largest first
        filters = (vecs / torch.sqrt(vals + eps)).T.reshape(-1, c, k, k)
        both = torch.stack([filters, -filters], dim=1).reshape(-1, c, k, k)  # +v1, -v1, +v2, -v2, ...
        n = stem.out_channels
        w = both[:n] if n <= len(both) else torch.cat([both, stem.weight.detach().double().cpu()[len(both):]])
        stem.weight.copy_(w.to(stem.weight.dtype).contiguous(memory_format=torch.channels_last))
        return self


class LinearHead(nn.Module):
    """A linear classifier on frozen features (inputs are feature vectors): ``features`` is the identity."""

    def __init__(self, in_features: int, n_classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(in_features, n_classes)
        self.feature_dim = in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
