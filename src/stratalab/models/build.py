"""Build a model by name for a data set, and one feature-extraction path (:func:`embed`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .._device import autocast, model_device, to_device
from .._validation import check_fits_in_memory
from ..data.core import Split
from .convnets import CifarNet, CifarResNet, LeNet5, LinearHead
from .mlp import MLP

MODELS = ("mlp", "lenet5", "resnet", "cifarnet", "linear")


TRAIN_BYTES_PER_PARAM = 16  # float32 weights, gradients and Adam's two moments


def build_model(name: str, input_shape: tuple[int, ...], n_classes: int, *, width: float = 1.0, seed: int = 0,
                pretrained: str | None = None) -> nn.Module:
    """A fresh model, initialised from ``seed``. ``width`` scales the model (the width family):
    hidden units 64*width for ``mlp``, channels x width for ``lenet5``, base channels 16*width for
    ``resnet``, block widths (32, 64, 128)*width for ``cifarnet`` (airbench-style, the fast CIFAR
    model); ``linear`` is a linear head on flat inputs (frozen features). A model too large to
    train in this machine's memory is refused first (:func:`check_model_fits`), never allocated.

    The papers' backbones (:data:`stratalab.models.hf.BACKBONES`: ``resnet18``, ``resnet50``,
    ``convnext_tiny``, ``swin_t``, ``vit_b_16``, ``bert-base-uncased``, ``distilbert-base-uncased``,
    or any local Hugging Face model folder) come from ``transformers``, with random weights or the
    ``pretrained`` folder's (:func:`stratalab.models.hf.build_hf`); their width is fixed at 1.
    """
    if _is_hf(name):
        _check_hf_width(name, width)
        from .hf import build_hf

        return build_hf(name, tuple(input_shape), n_classes, pretrained=pretrained, seed=seed)
    if pretrained is not None:
        raise ValueError(f"pretrained={pretrained!r} (--pretrained) loads Hugging Face backbones; {name!r} is a stratalab "
                         "model: finetune it from `stratalab pretrain` weights with init (--init).")
    check_model_fits(name, input_shape, n_classes, width)
    torch.manual_seed(seed)
    return _build(name, input_shape, n_classes, width)


def _is_hf(name: str) -> bool:
    if name in MODELS:
        return False
    from .hf import is_hf_model

    return is_hf_model(name)


def _check_hf_width(name: str, width: float) -> None:
    if float(width) != 1.0:
        raise ValueError(f"{name} has the paper's fixed layout; width must be 1 (got {width:g}). Width families are "
                         f"{', '.join(MODELS[:4])}.")


def count_params(name: str, input_shape: tuple[int, ...], n_classes: int, width: float = 1.0) -> int:
    """Parameters of the model :func:`build_model` would make, counted on torch's ``meta`` device
    (shapes only: nothing is allocated, so even ``width=1e12`` is counted in milliseconds)."""
    with torch.device("meta"):
        if _is_hf(name):
            _check_hf_width(name, width)
            from .hf import build_hf

            return int(sum(p.numel() for p in build_hf(name, tuple(input_shape), n_classes).parameters()))
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
def embed(model: nn.Module, split: Split, batch_size: int = 512, precision: str = "fp32") -> Embedding:
    """Penultimate activations (``model.features``), probabilities, cross-entropy loss and
    prediction for every example of ``split``: batched, eval mode, no augmentation, on the model's
    device (autocast to ``precision``; features come back as float32). This is the one
    feature-extraction path used by clustering (GEORGE), DFR, spectral analysis and TRAK.
    """
    if not hasattr(model, "features") or not hasattr(model, "head"):
        raise TypeError("embed needs a model with .features(x) and .head (every stratalab model has them).")
    was_training = model.training
    model.eval()
    device = model_device(model)
    feats, probs = [], []
    for start in range(0, len(split), batch_size):
        idx = np.arange(start, min(start + batch_size, len(split)))
        xb = to_device(torch.as_tensor(split.load_x(idx), dtype=torch.float32), device)
        with autocast(device, precision):
            f = model.features(xb)  # type: ignore[operator]  # nn.Module.__getattr__ is typed Tensor | Module
            logits = model.head(f)  # type: ignore[operator]
        feats.append(f.float().cpu().numpy())
        probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    model.train(was_training)
    proba = np.concatenate(probs).astype(np.float64)
    p_true = proba[np.arange(len(split)), split.y]
    return Embedding(
        features=np.concatenate(feats).astype(np.float32),
        proba=proba,
        loss=-np.log(np.clip(p_true, 1e-12, 1.0)),
        pred=proba.argmax(1),
    )
