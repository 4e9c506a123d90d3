"""Build a model by name for a data set, and one feature-extraction path (:func:`embed`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._device import autocast, model_device, to_device
from .._validation import check_fits_in_memory
from ..data.core import Split
from .convnets import CifarNet, CifarResNet, LeNet5, LinearHead
from .mlp import MLP

MODELS = ("mlp", "lenet5", "resnet", "cifarnet", "linear")
FEATURE_LAYERS = ("penultimate", "previous")  # what embed reads: model.features or model.previous_features
UNPOOLED_MODELS = ("lenet5", "resnet", "cifarnet")  # built-in models with an unpooled last hidden state (feature_map)


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
def iter_features(model: nn.Module, split: Split, batch_size: int = 512, precision: str = "fp32", *, workers: int = 0,
                  unpooled: bool = False, layer: str = "penultimate") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(features, logits)`` of each batch of ``split`` in order, float32 on the CPU: eval mode, no
    augmentation, on the model's device, autocast to ``precision``, inputs decoded by ``workers``
    loader processes (:func:`stratalab.data.stream.iter_batches`). ``unpooled``: the unpooled last
    hidden state (``model.feature_map``: a CNN's map, a transformer's tokens) instead of the pooled
    features. ``layer="previous"``: the activations one block before the penultimate layer
    (``model.previous_features``, see :func:`check_feature_layer`); the logits are the model's
    own either way. The one feature-extraction path: :func:`embed` and :func:`write_features` read it."""
    from ..data.stream import eval_batch_size, iter_batches

    check_feature_layer(model, layer)
    if unpooled and layer != "penultimate":
        raise ValueError("unpooled features are the last hidden state's; they cannot be combined with layer='previous'.")
    if not hasattr(model, "features") or not hasattr(model, "head"):
        raise TypeError("embed needs a model with .features(x) and .head (every stratalab model has them).")
    if unpooled and not hasattr(model, "feature_map"):
        raise ValueError(f"{type(model).__name__} has no unpooled feature map; unpooled features come from the convnets "
                         f"({', '.join(UNPOOLED_MODELS)}) and the Hugging Face backbones (stratalab.models.hf).")
    was_training = model.training
    model.eval()
    device = model_device(model)
    batch_size = eval_batch_size(split, batch_size)
    batches = [np.arange(s, min(s + batch_size, len(split))) for s in range(0, len(split), batch_size)]
    try:
        for xb in iter_batches(split, batches, workers=workers, pin_memory=device.type == "cuda"):
            xb = to_device(xb, device)
            with autocast(device, precision):
                f = model.features(xb)  # type: ignore[operator]  # nn.Module.__getattr__ is typed Tensor | Module
                logits = model.head(f)  # type: ignore[operator]
                if unpooled:
                    f = model.feature_map(xb)  # type: ignore[operator]
                elif layer == "previous":
                    f = model.previous_features(xb)  # type: ignore[operator]
            yield f.float().cpu(), logits.float().cpu()
    finally:
        model.train(was_training)


def check_feature_layer(model: nn.Module, layer: str) -> None:
    """Refuse a feature ``layer`` (one of :data:`FEATURE_LAYERS`) the model does not have, before any
    work: ``"previous"`` needs ``model.previous_features`` (LeNet-5, the MLP, the CIFAR ResNet and
    CifarNet have it; a linear head and the Hugging Face backbones do not)."""
    if layer not in FEATURE_LAYERS:
        raise ValueError(f"feature layer must be one of {', '.join(FEATURE_LAYERS)}; got {layer!r}.")
    if layer == "previous" and not hasattr(model, "previous_features"):
        raise ValueError(f"{type(model).__name__} has no layer before its penultimate one to read; use the "
                         "'penultimate' feature layer.")


def embed(model: nn.Module, split: Split, batch_size: int = 512, precision: str = "fp32", *, workers: int = 0,
          layer: str = "penultimate", unpooled: bool = False) -> Embedding:
    """Penultimate activations (``model.features``; ``layer="previous"``: one block earlier;
    ``unpooled``: the last hidden state before pooling, flattened per example, see
    :func:`iter_features`), probabilities, cross-entropy loss and prediction for every example of
    ``split``: batched, eval mode, no augmentation, on the model's device (autocast to
    ``precision``; features come back as float32). This is the one feature-extraction path used by
    clustering (GEORGE), DFR, spectral analysis and TRAK (:func:`iter_features`).
    """
    feats, probs = [], []
    for f, logits in iter_features(model, split, batch_size, precision, workers=workers, layer=layer, unpooled=unpooled):
        feats.append(f.flatten(1).numpy())
        probs.append(torch.softmax(logits, dim=1).numpy())
    proba = np.concatenate(probs).astype(np.float64)
    p_true = proba[np.arange(len(split)), split.y]
    return Embedding(
        features=np.concatenate(feats).astype(np.float32),
        proba=proba,
        loss=-np.log(np.clip(p_true, 1e-12, 1.0)),
        pred=proba.argmax(1),
    )


def write_features(model: nn.Module, splits: dict[str, Split], path: str | os.PathLike[str], *, batch_size: int = 256,
                   precision: str = "fp32", workers: int = 0, unpooled: bool = False,
                   progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Write every split's features to the ``.npz`` at ``path`` once (``<split>`` arrays of shape
    (n, ...), float32, with ``y_<split>`` and, where known, ``g_<split>``), streamed batch by batch
    into the archive, so memory holds one batch, whatever the data set's size. The file is written
    atomically; ``np.load(path)`` reads it, and GEORGE (``run george --features``), spectral
    analysis (``spectral --features F --split S``) and DFR (:func:`stratalab.train.fit_dfr`) reuse it. ``progress(split, done, total)`` after each batch.
    """
    import zipfile

    from .._io import write_atomic

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, split in splits.items():
                feats = iter_features(model, split, batch_size, precision, workers=workers, unpooled=unpooled)
                _stream_array(zf, name, len(split), feats, progress)
                for key, arr in (("y", split.y), ("g", split.g)):
                    if arr is not None:
                        with zf.open(f"{key}_{name}.npy", "w", force_zip64=True) as f:
                            np.lib.format.write_array(f, np.asarray(arr, dtype=np.int64), allow_pickle=False)

    return write_atomic(path, write)


def _stream_array(zf: Any, name: str, n: int, batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
                  progress: Callable[[str, int, int], None] | None) -> None:
    """One ``<name>.npy`` member of ``n`` rows written batch by batch: the header (from the first
    batch's shape), then each batch's bytes."""
    done = 0
    with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
        for feats, _ in batches:
            arr = np.ascontiguousarray(feats.numpy(), dtype=np.float32)
            if done == 0:
                np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(arr.dtype),
                                                         "fortran_order": False, "shape": (n, *arr.shape[1:])})
            f.write(arr.tobytes())
            done += len(arr)
            if progress is not None:
                progress(name, done, n)
    if done != n:  # a short write would leave a header that promises more rows than the file holds
        raise RuntimeError(f"wrote {done} of the {n} rows of {name}; the features file is incomplete.")
