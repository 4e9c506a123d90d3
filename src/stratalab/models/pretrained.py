"""Pretrained weights: save a model with what it was trained on, load it safely for finetuning.

A pretrained file is a ``torch.save`` of a plain dict (format, model name, width, input shape,
number of classes, source data set, training config, ``state``): tensors, numbers and strings only,
so it loads with ``torch.load(weights_only=True)`` and can never run code.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "stratalab-pretrained-v1"
FINETUNE_MODES = ("full", "last_layer")


def save_pretrained(model: nn.Module, path: str | os.PathLike[str], *, model_name: str, width: float,
                    input_shape: tuple[int, ...], n_classes: int, source: str, config: dict[str, Any]) -> Path:
    """Write ``model``'s weights and their provenance to ``path`` atomically."""
    from .._io import write_atomic

    payload = {"format": FORMAT, "model": model_name, "width": float(width), "input_shape": [int(v) for v in input_shape],
               "n_classes": int(n_classes), "source": source, "config": config,
               "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    return write_atomic(path, lambda p: torch.save(payload, p))


def load_weights_only(path: Path, what: str, fix: str) -> Any:
    """``torch.load(path, weights_only=True)``: tensors, numbers, strings, lists and dicts only, so
    nothing in the file can run code. Any failure (crafted, truncated, another tool's file) is one
    ValueError: "``path`` is not ``what`` (reason); ``fix``"."""
    import warnings

    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise ValueError(f"{path} is not {what} (it cannot be read: {e.strerror or e}); {fix}") from None
    if not head.startswith(b"PK"):  # torch.save writes a zip archive; anything else is refused unread
        kind = "a raw pickle, which stratalab never unpickles" if head[:1] == b"\x80" else "not a torch.save file"
        raise ValueError(f"{path} is not {what} ({kind}); {fix}")
    try:
        with warnings.catch_warnings():  # torch's own two-line warnings about the pickle protocol add nothing here
            warnings.simplefilter("ignore")
            return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        raise ValueError(f"{path} is not {what} (it holds Python objects other than tensors, numbers, strings, lists "
                         f"and dicts, which weights_only loading refuses); {fix}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, AttributeError,
            TypeError, KeyError, IndexError, UnicodeDecodeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = first.split(". ")[0].rstrip(".")  # one whole sentence, never cut mid-word
        raise ValueError(f"{path} is not {what} ({first}; it may be truncated or corrupt); {fix}") from None


def read_pretrained(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a pretrained file (``weights_only=True``); a file that is not one gives one ValueError."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"pretrained weights {p} is a directory; give the .pt file `stratalab pretrain` wrote.")
    if not p.is_file():
        raise FileNotFoundError(f"pretrained weights {p} does not exist; write it with `stratalab pretrain`.")
    d = load_weights_only(p, "readable pretrained weights", "write it with `stratalab pretrain`.")
    if not isinstance(d, dict) or d.get("format") != FORMAT or not isinstance(d.get("state"), dict):
        raise ValueError(f"{p} is not a stratalab pretrained file (format {FORMAT}); write it with `stratalab pretrain`.")
    return d


def load_pretrained(model: nn.Module, path: str | os.PathLike[str], *, model_name: str, width: float,
                    input_shape: tuple[int, ...], finetune: str = "full") -> dict[str, Any]:
    """Load pretrained weights into ``model`` for finetuning.

    The body must match (same model, width and input shape). The head is loaded when the number of
    classes matches and kept at its fresh (seeded) initialisation otherwise, as when finetuning an
    ImageNet model on a new task. ``finetune="last_layer"`` freezes everything but the head (its
    parameters get ``requires_grad=False``; the optimiser only sees the head). Returns what was
    loaded: source, head reused or not, trainable parameter count.
    """
    if finetune not in FINETUNE_MODES:
        raise ValueError(f"finetune must be one of {', '.join(FINETUNE_MODES)}, got {finetune!r}.")
    d = read_pretrained(path)
    want = (model_name, float(width), [int(v) for v in input_shape])
    got = (d.get("model"), float(d.get("width", -1)), list(d.get("input_shape", [])))
    if want != got:
        raise ValueError(f"{path} holds a {got[0]} of width {got[1]:g} for inputs {tuple(got[2])}, but this run builds a "
                         f"{want[0]} of width {want[1]:g} for inputs {tuple(want[2])}; pretrain the same model and width.")
    own = model.state_dict()
    state = d["state"]
    head_keys = [k for k in own if k.startswith("head.")]
    reuse_head = all(k in state and state[k].shape == own[k].shape for k in head_keys)
    body = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing = [k for k in own if not k.startswith("head.") and k not in body]
    bad = [k for k, v in body.items() if k not in own or own[k].shape != v.shape]
    if missing or bad:
        raise ValueError(f"{path} does not fit this model (first mismatch: {(missing or bad)[0]!r}).")
    merged = {**own, **body, **({k: state[k] for k in head_keys} if reuse_head else {})}
    model.load_state_dict(merged)
    if finetune == "last_layer":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("head."))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"source": d.get("source"), "head_reused": reuse_head, "finetune": finetune, "trainable_params": int(trainable)}


def n_params(model: nn.Module) -> int:
    """Number of parameters (the x axis of the scaling figure)."""
    return int(sum(p.numel() for p in model.parameters()))
