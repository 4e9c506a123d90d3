"""The papers' backbones through Hugging Face ``transformers`` (the optional ``hf`` extra): ImageNet
vision models (ResNet-18/50, ConvNeXt-T, Swin-T, ViT-B/16) and text encoders (BERT, DistilBERT, any
local encoder folder).

Every backbone is wrapped as a stratalab model (:class:`HFClassifier`): ``features(x)`` (the pooled
penultimate features :func:`stratalab.models.embed` reads), ``feature_map(x)`` (the unpooled last
hidden state: the CNN's feature map, every token of a transformer, as LaBonte et al.'s reference
code takes for spectral analysis), a linear ``head`` and ``forward(x) = head(features(x))``.

Weights are never downloaded here: a model is built from its configuration with random weights,
or from ``pretrained``, a local folder in Hugging Face's layout (``config.json`` and
``model.safetensors`` or ``pytorch_model.bin``; the Hub's files for the model, as
``huggingface-cli download`` or ``save_pretrained`` write them) or a Hub id found in the local
Hugging Face cache. Weights load from safetensors or with ``torch.load(weights_only=True)``; nothing
is unpickled. Vision inputs are float images in [0, 1] (the loaders' format); the model applies
the backbone's normalisation itself. Text inputs are token ids and attention masks stacked as an
integer array ``(n, 2, L)`` (:func:`tokenize_texts`); the training loop hands every input over as
float32, which holds ids below 2**24 exactly, and the model reads them back as integers.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Backbone:
    """A named backbone: its ``transformers`` model type, the configuration overrides that give
    the named layout, the Hub id of the paper's weights, and whether it reads text."""

    model_type: str
    overrides: tuple[tuple[str, Any], ...]
    hub_id: str
    text: bool = False


BACKBONES: dict[str, Backbone] = {
    "resnet18": Backbone("resnet", (("depths", [2, 2, 2, 2]), ("layer_type", "basic"),
                                    ("hidden_sizes", [64, 128, 256, 512]), ("embedding_size", 64)), "microsoft/resnet-18"),
    "resnet50": Backbone("resnet", (), "microsoft/resnet-50"),
    "convnext_tiny": Backbone("convnext", (), "facebook/convnext-tiny-224"),
    "swin_t": Backbone("swin", (), "microsoft/swin-tiny-patch4-window7-224"),
    "vit_b_16": Backbone("vit", (), "google/vit-base-patch16-224"),
    "bert-base-uncased": Backbone("bert", (), "bert-base-uncased", text=True),
    "distilbert-base-uncased": Backbone("distilbert", (), "distilbert-base-uncased", text=True),
}
TEXT_TYPES = ("bert", "distilbert", "roberta", "deberta", "deberta-v2", "electra", "albert")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INSTALL = "pip install 'stratalab[hf]' (Hugging Face transformers and safetensors)"


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ValueError(f"the Hugging Face backbones need the optional extra: {INSTALL}.") from None
    return transformers


def is_hf_model(name: str) -> bool:
    """Whether ``name`` is a named backbone or a local Hugging Face model folder (with config.json)."""
    return name in BACKBONES or (Path(name).expanduser() / "config.json").is_file()


def _folder(pretrained: str, name: str) -> Path:
    """The local folder of ``pretrained``: a folder path, or a Hub id in the local Hugging Face
    cache; else one ValueError saying which folder to place where."""
    p = Path(pretrained).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ValueError(f"--pretrained {p} has no config.json; it must be a Hugging Face model folder "
                             "(config.json + model.safetensors), as `huggingface-cli download <id> --local-dir` writes.")
        return p
    hub_id = BACKBONES[name].hub_id if pretrained in ("hub", "cache") and name in BACKBONES else pretrained
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id, local_files_only=True))
    except Exception:  # noqa: BLE001  # any miss in the offline cache reads the same to the user
        raise ValueError(f"no weights for {hub_id!r} on this machine (nothing is downloaded at run time): place the "
                         f"Hugging Face folder of {hub_id} (config.json + model.safetensors) at a path and give it as "
                         f"--pretrained PATH, or put it in the Hugging Face cache ($HF_HOME/hub).") from None


LAYOUT_KEYS = ("model_type", "depths", "hidden_sizes", "layer_type", "num_hidden_layers", "hidden_size", "embed_dim",
               "patch_size", "n_layers", "dim")


def loads_weights(model: str, pretrained: str | None) -> bool:
    """Whether a run of ``model`` starts from trained weights: ``pretrained`` given, or ``model``
    itself a local Hugging Face folder."""
    return pretrained is not None or (model not in BACKBONES and is_hf_model(model))


def _config(name: str, folder: Path | None, image_size: int | None) -> Any:
    tr = _transformers()
    named: Any = None
    if name in BACKBONES:
        spec = BACKBONES[name]
        named = tr.AutoConfig.for_model(spec.model_type, **dict(spec.overrides))
    cfg: Any = tr.AutoConfig.from_pretrained(str(folder), local_files_only=True) if folder is not None else named
    if named is not None and cfg is not named:  # --model resnet50 --pretrained FOLDER: the folder must hold a ResNet-50
        def norm(v: Any) -> Any:  # lists and tuples of the same values are the same layout
            return list(v) if isinstance(v, (list, tuple)) else v

        differ = [k for k in LAYOUT_KEYS if hasattr(named, k) and norm(getattr(cfg, k, None)) != norm(getattr(named, k))]
        if differ:
            k = differ[0]
            raise ValueError(f"{folder} holds another layout than {name} ({k} {getattr(cfg, k, None)!r}, not "
                             f"{getattr(named, k)!r}); give the folder itself as --model to use its own layout.")
    if folder is None and image_size is not None and hasattr(cfg, "image_size") and cfg.model_type in ("vit", "swin"):
        cfg.image_size = int(image_size)  # a fresh patch transformer is built for the input size; a loaded one interpolates
    return cfg


def _load_body(folder: Path, cfg: Any) -> nn.Module:
    """The backbone of a Hugging Face folder with its weights, by ``transformers``' own loader (which
    maps older checkpoints' names and drops a task model's head): safetensors as they are; a
    ``pytorch_model*.bin`` is first read here with ``torch.load(weights_only=True)``, so a file that
    holds anything but tensors is refused before transformers sees it. Every body weight must be in
    the file (transformers alone would initialise missing ones at random and only warn)."""
    from .pretrained import load_weights_only

    tr = _transformers()
    has_st = any(folder.glob("*.safetensors"))
    bins = sorted(folder.glob("pytorch_model*.bin"))
    if not has_st and not bins:
        raise ValueError(f"{folder} has a config.json but no weights (model.safetensors or pytorch_model.bin); "
                         "place the weight file beside it.")
    if not has_st:
        for f in bins:
            load_weights_only(f, "a readable weights file", "save it again with save_pretrained(safe_serialization=True).")
    import logging

    level, bars = tr.logging.get_verbosity(), tr.utils.logging.is_progress_bar_enabled()
    tr.logging.set_verbosity(logging.ERROR)  # the missing keys are reported below, as one error
    tr.utils.logging.disable_progress_bar()  # stratalab's own progress shows; a bar per load is noise
    try:
        body, info = tr.AutoModel.from_pretrained(str(folder), config=cfg, local_files_only=True, use_safetensors=has_st,
                                                  output_loading_info=True, **_body_kwargs(cfg))
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"the weights in {folder} cannot be loaded ({first[:200]}).") from None
    finally:
        tr.logging.set_verbosity(level)
        if bars:
            tr.utils.logging.enable_progress_bar()
    missing = [k for k in info.get("missing_keys", []) if not k.endswith(("position_ids", "num_batches_tracked"))]
    bad = list(info.get("mismatched_keys", []))
    if missing or bad:
        what = f"missing {missing[0]!r}" if missing else f"shape of {bad[0]!r}"
        raise ValueError(f"the weights in {folder} do not fit its config.json ({what}; {len(missing)} missing, "
                         f"{len(bad)} of another shape).")
    return body


def _body_kwargs(cfg: Any) -> dict[str, Any]:
    """ViT without its tanh pooler: the image-classification checkpoints (google/vit-base-patch16-224)
    have none, and the reference features are the [CLS] token of the last hidden state."""
    return {"add_pooling_layer": False} if cfg.model_type == "vit" else {}


def _is_text(cfg: Any) -> bool:
    """A text encoder's config has a vocabulary and no image channels."""
    return cfg.model_type in TEXT_TYPES or (hasattr(cfg, "vocab_size") and not hasattr(cfg, "num_channels"))


class HFClassifier(nn.Module):
    """A Hugging Face backbone with a linear head: ``features`` (pooled), ``feature_map``
    (unpooled last hidden state), ``head`` and ``forward``."""

    def __init__(self, body: nn.Module, n_classes: int, *, text: bool, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.body = body
        self.text = text
        cfg: Any = body.config
        dim = getattr(cfg, "hidden_size", None) or getattr(cfg, "dim", None)
        if not text:
            sizes = getattr(cfg, "hidden_sizes", None)
            dim = sizes[-1] if sizes else getattr(body, "num_features", None) or dim
        if dim is None:
            raise ValueError(f"cannot tell the feature size of a {cfg.model_type} model (no hidden_sizes / hidden_size in "
                             "its config.json).")
        self.feature_dim = int(dim)
        self.head = nn.Linear(self.feature_dim, n_classes)
        if not text:
            # saved with the weights, so a model rebuilt elsewhere (TRAK's ensemble) normalises as it trained
            self.register_buffer("mean", torch.tensor(mean or IMAGENET_MEAN).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std or IMAGENET_STD).view(1, -1, 1, 1))

    def _outputs(self, x: torch.Tensor) -> Any:
        if self.text:
            if x.ndim != 3 or x.shape[1] != 2:
                raise ValueError(f"a text model takes token ids and attention masks stacked as (n, 2, L), got shape "
                                 f"{tuple(x.shape)}; tokenise the texts first (stratalab.models.hf.tokenize_texts).")
            x = x.long()
            return self.body(input_ids=x[:, 0], attention_mask=x[:, 1])
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        kw = {}
        cfg: Any = self.body.config
        if cfg.model_type == "vit" and x.shape[-1] != cfg.image_size:
            kw["interpolate_pos_encoding"] = True  # a ViT loaded for 224 reading other sizes (as timm does)
        return self.body(pixel_values=(x - mean) / std, **kw)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (n, d): the backbone's pooler output (global average pool of
        a CNN, the [CLS] pooler of BERT), else the first token of the last hidden state."""
        out = self._outputs(x)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            return out.last_hidden_state[:, 0]
        return pooled.flatten(1)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The unpooled last hidden state: (n, C, H, W) for CNNs, (n, T, d) for transformers."""
        return self._outputs(x).last_hidden_state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_hf(name: str, input_shape: tuple[int, ...], n_classes: int, *, pretrained: str | None = None,
             seed: int = 0) -> HFClassifier:
    """A named backbone (:data:`BACKBONES`) or a local Hugging Face folder (``name`` itself) with a
    fresh linear head (seeded). Without ``pretrained`` the backbone's weights are random (from its
    config); with it they are read from that folder / cache entry, never downloaded."""
    folder = None
    if name not in BACKBONES:
        folder = _folder(name, name)
    if pretrained is not None:
        folder = _folder(pretrained, name)
    text = BACKBONES[name].text if name in BACKBONES else False
    tr = _transformers()
    cfg = _config(name, folder, input_shape[-1] if len(input_shape) == 3 else None)
    text = text or _is_text(cfg)
    if not text and (len(input_shape) != 3 or input_shape[0] != 3):
        raise ValueError(f"{name} is an image backbone: it needs RGB images (3, H, W), got inputs of shape {input_shape}.")
    if text and (len(input_shape) != 2 or input_shape[0] != 2):
        raise ValueError(f"{name} is a text encoder: it needs token ids (2, L) from tokenize_texts, got inputs of shape "
                         f"{input_shape}.")
    torch.manual_seed(seed)
    mean = std = None
    if folder is not None:
        body = _load_body(folder, cfg)
        mean, std = _normalisation(folder)
    else:
        body = tr.AutoModel.from_config(cfg, **_body_kwargs(cfg))
    torch.manual_seed(seed)
    return HFClassifier(body, n_classes, text=text, mean=mean, std=std)


def _normalisation(folder: Path) -> tuple[Any, Any]:
    """The image mean / std of the folder's ``preprocessor_config.json`` (ViT uses 0.5), else None."""
    f = folder / "preprocessor_config.json"
    if not f.is_file():
        return None, None
    d = json.loads(f.read_text())
    mean, std = d.get("image_mean"), d.get("image_std")
    return (tuple(mean), tuple(std)) if mean and std else (None, None)


def tokenize_texts(texts: Any, tokenizer: str, *, max_length: int = 256, cache_dir: str | Path | None = None) -> np.ndarray:
    """Token ids and attention masks of ``texts`` as an int32 array (n, 2, max_length), padded and
    truncated, with the tokenizer in the local folder ``tokenizer`` (a model folder holds one).

    With ``cache_dir`` the array is written once as ``tokens-<key>.npy`` there, keyed by the
    tokenizer's files, ``max_length`` and the texts, and memory-mapped on later calls.
    """
    folder = _folder(str(tokenizer), str(tokenizer))
    texts = [str(t) for t in np.asarray(texts, dtype=object)]
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}.")
    h = hashlib.sha256(f"{max_length}|{len(texts)}|".encode())
    for f in sorted(p for p in folder.iterdir() if p.suffix in (".json", ".txt", ".model") and p.is_file()):
        h.update(f.name.encode() + f.read_bytes())  # the tokenizer's files, its config and special tokens
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    path = Path(cache_dir) / f"tokens-{h.hexdigest()[:24]}.npy" if cache_dir is not None else None
    if path is not None and path.is_file():
        return np.load(path, mmap_mode="r", allow_pickle=False)
    tok = _transformers().AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    enc = tok(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
    arr = np.stack([enc["input_ids"], enc["attention_mask"]], axis=1).astype(np.int32)
    if path is not None:
        from .._io import write_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda p: np.save(p, arr, allow_pickle=False))
        return np.load(path, mmap_mode="r", allow_pickle=False)
    return arr


def _cache_dir(root: str | None) -> Path:
    """Where derived files go: ``<data folder>/.stratalab-cache`` when the data set's folder is
    writable, else ``$STRATALAB_CACHE`` or ``~/.cache/stratalab``."""
    if root is not None and os.access(root, os.W_OK):
        return Path(root) / ".stratalab-cache"
    return Path(os.environ.get("STRATALAB_CACHE") or Path.home() / ".cache" / "stratalab")


def is_text_split(split: Any) -> bool:
    """Whether a split's inputs are texts (strings), which a text encoder must tokenise first."""
    from ..data.core import read_texts

    return split.loader is read_texts


def tokenized(ds: Any, model: str, pretrained: str | None, max_length: int = 256) -> Any:
    """``ds`` with every text split replaced by its tokens (:func:`tokenize_texts`, cached beside
    the data, keyed by tokenizer); ``ds`` itself when it has no text. The tokenizer is the
    ``pretrained`` folder's (else a model folder's own); a non-text model on texts is refused."""
    from dataclasses import replace

    if not any(is_text_split(sp) for sp in ds.splits.values()):
        return ds
    text_model = (model in BACKBONES and BACKBONES[model].text) or (model not in BACKBONES and is_hf_model(model) and _is_text(
        _transformers().AutoConfig.from_pretrained(str(Path(model).expanduser()), local_files_only=True)))
    if not text_model:
        raise ValueError(f"{ds.name} has text inputs; train a text encoder on it (--model bert-base-uncased or "
                         "distilbert-base-uncased with --pretrained FOLDER, or a local model folder).")
    source = pretrained if pretrained is not None else (model if model not in BACKBONES else None)
    if source is None:
        raise ValueError(f"tokenising {ds.name} needs the tokenizer's files: give --pretrained FOLDER, a Hugging Face "
                         f"folder of {model} with its tokenizer (vocab.txt / tokenizer.json).")
    cache = _cache_dir(ds.root)
    splits = {name: replace(sp, x=tokenize_texts(sp.x, source, max_length=max_length, cache_dir=cache), loader=None)
              if is_text_split(sp) else sp for name, sp in ds.splits.items()}
    return replace(ds, splits=splits)
