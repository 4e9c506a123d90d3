"""Build a model by name for a data set, and one feature-extraction path (:func:`embed`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .._validation import check_fits_in_memory
from ..data.core import Split
from .convnets import CifarNet, CifarResNet, LeNet5, LinearHead
from .mlp import MLP

MODELS = ("mlp", "lenet5", "resnet", "cifarnet", "linear")


TRAIN_BYTES_PER_PARAM = 16  # float32 weights, gradients and Adam's two moments


def build_model(name: str, input_shape: tuple[int, ...], n_classes: int, *, width: float = 1.0, seed: int = 0) -> nn.Module:
    """A fresh model, initialised from ``seed``. ``width`` scales the model (the width family):
    hidden units 64*width for ``mlp``, channels x width for ``lenet5``, base channels 16*width for
    ``resnet``, block widths (32, 64, 128)*width for ``cifarnet`` (airbench-style, the fast CIFAR
    model); ``linear`` is a linear head on flat inputs (frozen features). A model too large to
    train in this machine's memory is refused first (:func:`check_model_fits`), never allocated.
    """
    check_model_fits(name, input_shape, n_classes, width)
    torch.manual_seed(seed)
    return _build(name, input_shape, n_classes, width)


def count_params(name: str, input_shape: tuple[int, ...], n_classes: int, width: float = 1.0) -> int:
    """Parameters of the model :func:`build_model` would make, counted on torch's ``meta`` device
    (shapes only: nothing is allocated, so even ``width=1e12`` is counted in milliseconds)."""
    with torch.device("meta"):
        return int(sum(p.numel() for p in _build(name, input_shape, n_classes, width).parameters()))


def check_model_fits(name: str, input_shape: tuple[int, ...], n_classes: int, width: float = 1.0) -> None:
    """Refuse a model whose training state (weights, gradients, Adam moments) exceeds the memory
    available (``train --width 1e12`` ended in "internal error: MemoryError")."""
    n = count_params(name, input_shape, n_classes, width)
    check_fits_in_memory(TRAIN_BYTES_PER_PARAM * n, f"{name} at width {width:g} ({n:,} parameters)",
                         "choose a smaller --width")


def _build(name: str, input_shape: tuple[int, ...], n_classes: int, width: float) -> nn.Module:
    flat = int(np.prod(input_shape))
    if name == "mlp":
        return MLP(flat, n_classes, hidden=(max(1, int(round(64 * width))),))
    if name == "lenet5":
        if len(input_shape) != 3:
            raise ValueError(f"lenet5 needs image inputs (C, 32, 32), got shape {input_shape}; use model='mlp' or 'linear' (--model).")
        return LeNet5(n_classes, in_channels=input_shape[0], width=width)
    if name == "resnet":
        if len(input_shape) != 3:
            raise ValueError(f"resnet needs image inputs (C, H, W), got shape {input_shape}.")
        return CifarResNet(n_classes, in_channels=input_shape[0], width=max(1, int(round(16 * width))))
    if name == "cifarnet":
        if len(input_shape) != 3 or min(input_shape[1:]) < 16:
            raise ValueError(f"cifarnet needs image inputs (C, H, W) of at least 16x16 (CIFAR: 3x32x32), got shape {input_shape}.")
        return CifarNet(n_classes, in_channels=input_shape[0], width=width)
    if name == "linear":
        return LinearHead(flat, n_classes)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}.")


@dataclass
class Embedding:
    """Output of :func:`embed`: penultimate features, class probabilities, per-example loss and prediction."""

    features: np.ndarray
    proba: np.ndarray
    loss: np.ndarray
    pred: np.ndarray


@torch.no_grad()
def embed(model: nn.Module, split: Split, batch_size: int = 512) -> Embedding:
    """Penultimate activations (``model.features``), probabilities, cross-entropy loss and
    prediction for every example of ``split``: batched, eval mode, no augmentation. This is the one
    feature-extraction path used by clustering (GEORGE), DFR, spectral analysis and TRAK.
    """
    if not hasattr(model, "features") or not hasattr(model, "head"):
        raise TypeError("embed needs a model with .features(x) and .head (every stratalab model has them).")
    was_training = model.training
    model.eval()
    feats, probs = [], []
    for start in range(0, len(split), batch_size):
        idx = np.arange(start, min(start + batch_size, len(split)))
        xb = torch.as_tensor(split.load_x(idx), dtype=torch.float32)
        f = model.features(xb)  # type: ignore[operator]  # nn.Module.__getattr__ is typed Tensor | Module
        feats.append(f.numpy())
        probs.append(torch.softmax(model.head(f), dim=1).numpy())  # type: ignore[operator]
    model.train(was_training)
    proba = np.concatenate(probs).astype(np.float64)
    p_true = proba[np.arange(len(split)), split.y]
    return Embedding(
        features=np.concatenate(feats).astype(np.float32),
        proba=proba,
        loss=-np.log(np.clip(p_true, 1e-12, 1.0)),
        pred=proba.argmax(1),
    )
