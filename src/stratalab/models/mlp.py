"""Multi-layer perceptron with a separate ``features`` body and linear ``head``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """``in_features -> hidden... -> n_classes`` with ReLU; inputs of any shape are flattened.

    ``features(x)`` returns the penultimate activations (what clustering and attribution read),
    ``forward(x)`` the logits. ``hidden=(w,)`` at several ``w`` is a width family for scaling studies.
    """

    def __init__(self, in_features: int, n_classes: int, hidden: Sequence[int] = (64,), dropout: float = 0.0) -> None:
        super().__init__()
        if in_features < 1 or n_classes < 2:
            raise ValueError(f"MLP needs in_features >= 1 and n_classes >= 2, got {in_features}, {n_classes}.")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes)
        self.feature_dim = width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def previous_features(self, x: torch.Tensor) -> torch.Tensor:
        """The input of the last hidden layer: the flattened inputs for one hidden layer, else the
        activations of the hidden layer before it."""
        linears = [i for i, m in enumerate(self.body) if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("this MLP has no hidden layer, so no layer before its penultimate one; use the penultimate layer.")
        return self.body[:linears[-1]](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
