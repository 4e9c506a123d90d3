"""The one training loop: ERM, Group DRO, class and group balancing and JTT's second stage.

Written out like PyTorch's own examples. The method only changes two things: which examples an
epoch sees (:mod:`.sampling`) and how a batch's per-example losses become one loss
(:mod:`.objectives`). After every ``eval_every`` epochs, val and test are evaluated with
:func:`stratalab.metrics.group_report` and the whole history is kept; the checkpoint with the best
validation ``select`` criterion is kept in memory, and with ``checkpoint_dir`` the last epoch is
saved so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import copy
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._config import config_from_dict, config_to_dict
from .._device import autocast, check_device_spec, grad_scaler, model_device, resolve_device, resolve_precision, to_device
from .._io import write_atomic
from .._validation import check_finite, check_int, parse_structured
from ..data.core import Split
from ..data.stream import check_workers, eval_batch_size, iter_batches
from ..metrics import GroupReport, group_report
from ..models.build import MODELS
from ..models.hf import BACKBONES, is_hf_model, loads_weights
from ..models.pretrained import FINETUNE_MODES, load_weights_only
from .objectives import GroupDRO, class_weights, per_example_ce
from .registry import METHODS, get_method
from .sampling import make_plan
from .selection import CRITERIA, check_criterion, selection_scores

SCHEDULES = ("constant", "multistep", "cosine", "linear")
TTA = ("none", "flip", "flip_shift")
OPTIMIZERS = ("adam", "adamw", "sgd")


def _finite(name: str, value: float, *, low: float | None = None, low_open: bool = False,
            high: float | None = None, hint: str = "") -> float:
    """``value`` as a float (a YAML string such as "1e-3" included); non-numbers, NaN/inf and values
    outside [low, high] (``low_open``: > low) refused with one clear sentence
    (:func:`stratalab._validation.check_finite`)."""
    return check_finite(value, name, low=low, low_open=low_open, high=high, hint=hint)


@dataclass
class TrainConfig:
    """Everything that defines a run. Round-trips through :meth:`to_dict` / :meth:`from_dict`
    (and so JSON/YAML), and every result file records it.

    ``milestones`` are fractions of ``epochs`` (the multistep schedule multiplies the learning rate
    by ``gamma`` at each). ``eval_train`` also evaluates the train split as stored (no augmentation)
    at each evaluation, into the history's ``"train"`` entry, on the groups the run trained with
    (``train_groups`` if given, else the split's; its classes where it has none): where train
    accuracy saturates, i.e. the model has memorised its minority groups (LaBonte et al.'s collapse
    mechanism). It covers every train example, also those subsetting leaves out. Group DRO: ``gdro_eta`` (step size of the group weights), ``gdro_adjustment``
    (C), ``gdro_balanced_sampler``. Mixture balancing: ``mixture_ratio`` (r). JTT: ``jtt_epochs``
    (T) and ``jtt_upsample`` (lambda_up, an integer: each error appears lambda_up times per epoch, so
    its total weight is lambda_up, not 1 + lambda_up). DFR: ``dfr_cs`` and ``dfr_retrains``.
    Finetuning (LaBonte et al. 2024): ``init``, weights written by ``stratalab pretrain``, or
    ``pretrained``, a Hugging Face model folder (or Hub id in the local cache) for the backbones of
    :mod:`stratalab.models.hf` (``model="resnet50"``, ``"bert-base-uncased"``, a folder...), and
    ``finetune``: "full" (every layer) or "last_layer" (only the head is trained). Text inputs are
    tokenised once to ``max_length`` tokens by the pretrained folder's tokenizer.
    Augmentation (Chiu et al.'s baselines, :mod:`stratalab.augment`): ``augment`` is one of
    "none", "flip_crop" (pad 4, random crop, horizontal flip: the standard CIFAR recipe) and, each on
    top of flip_crop, "autoaugment", "cutout" (``cutout_size``), "mixup", "cutmix" (``mix_alpha``);
    ``label_smoothing`` mixes the targets with the uniform distribution. "flowaug" (Chiu et al.'s
    FlowAug, :mod:`stratalab.augment.flowaug`) trains on views decoded by the flow at ``flow`` (a
    file of ``stratalab flow train``), each then cropped and flipped: ``flowaug_objective`` names
    the views (eqs. 2-4), ``flowaug_std_weight`` is lambda (eq. 3) / lambda2 (eq. 4),
    ``flowaug_mix_weight`` lambda1 (eq. 4), ``flowaug_sigma`` Algorithm 1's sigma and
    ``flowaug_pairs`` Algorithm 2's partners: "any" (the paper's x1, x2 ~ X, the default) or "same_class".
    Hardware (:mod:`stratalab._device`): ``device`` ("auto" is resolved when the config is made, so a
    result records the device that ran it: "cpu", "cuda:0", "mps") and ``precision`` ("fp32", "bf16"
    or "fp16" autocast; fp32 on the CPU gives exactly the numbers of earlier versions; "auto" becomes
    bf16 where the device computes it natively, else fp32) and
    ``workers``, the processes that decode file-backed inputs (images in folders) ahead of the
    training step (:mod:`stratalab.data.stream`; the numbers do not depend on it).
    From airbench's CIFAR recipe: ``whiten`` initialises cifarnet's stem as a whitening of the
    training images' 2x2 patches, and ``tta`` evaluates (val selection, val and test reports) on
    the mean logits of each image and its mirror ("flip"), and of its one-pixel shifts too
    ("flip_shift", airbench's multi-crop evaluation).
    """

    method: str = "erm"
    model: str = "mlp"
    width: float = 1.0
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9
    schedule: str = "constant"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    seed: int = 0
    eval_every: int = 1
    eval_train: bool = False
    select: str = "val_wca"
    gdro_eta: float = 0.01
    gdro_adjustment: float = 0.0
    gdro_balanced_sampler: bool = False
    mixture_ratio: float | None = None
    jtt_epochs: int = 1
    jtt_upsample: int = 20
    dfr_cs: tuple[float, ...] = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
    dfr_retrains: int = 20
    init: str | None = None
    pretrained: str | None = None
    finetune: str = "full"
    augment: str = "none"
    mix_alpha: float = 1.0
    cutout_size: int = 16
    label_smoothing: float = 0.0
    flow: str | None = None
    flowaug_objective: str = "gauss+std"
    flowaug_std_weight: float = 0.1
    flowaug_mix_weight: float = 1.0
    flowaug_sigma: float = 0.1
    flowaug_pairs: str = "any"
    device: str = "auto"
    precision: str = "fp32"
    max_length: int = 256
    workers: int = 0
    whiten: bool = False
    tta: str = "none"

    def __post_init__(self) -> None:
        """Check every field before any work starts (the method's needs come from its MethodSpec)."""
        for name in ("milestones", "dfr_cs"):
            try:
                setattr(self, name, tuple(float(m) for m in getattr(self, name)))
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a list of numbers, got {getattr(self, name)!r}.") from None
        spec = get_method(self.method)
        if self.model not in MODELS and not is_hf_model(self.model):
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}, a backbone "
                             f"({', '.join(BACKBONES)}) or a local Hugging Face model folder.")
        self._check_counts()
        self._check_optimisation()
        for name in spec.required:
            if getattr(self, name) is None:
                raise ValueError(f"method {self.method!r} needs {name} (--{name.replace('_', '-')}).")
        self._check_methods()
        self._check_augmentation(spec.loss)
        self._check_hardware()

    def _check_hardware(self) -> None:
        """The device kind (its presence is checked when a run starts) and the precision it can run."""
        self.workers = check_workers(self.workers)
        if self.tta not in TTA:
            raise ValueError(f"tta must be 'none', 'flip' (mean logits of an image and its mirror) or 'flip_shift' (and of "
                             f"the image shifted by one pixel), got {self.tta!r}.")
        if not isinstance(self.whiten, bool):
            raise ValueError(f"whiten must be true or false, got {self.whiten!r}.")
        if self.whiten and self.model != "cifarnet":
            raise ValueError(f"whiten initialises cifarnet's 2x2 stem; model {self.model!r} has none (use model='cifarnet').")
        if self.whiten and self.init is not None:
            raise ValueError("whiten initialises a fresh stem, and init (--init) would overwrite it; give one of them.")
        self.device = check_device_spec(self.device)
        if self.device == "auto":
            self.device = resolve_device("auto")
        elif self.device == "cuda":
            self.device = "cuda:0"
        self.precision = resolve_precision(self.precision, self.device)

    def _check_counts(self) -> None:
        """Epochs, batch size, evaluation period, JTT's T, DFR's retrains and the seed: integers in range."""
        for name in ("epochs", "batch_size", "eval_every", "jtt_epochs", "dfr_retrains", "seed", "max_length"):
            setattr(self, name, check_int(getattr(self, name), name))
        for name in ("epochs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if max(self.epochs, self.jtt_epochs) > MAX_EPOCHS:  # 1e22 epochs trained until killed
            raise ValueError(f"epochs must be at most {MAX_EPOCHS:,} (the papers train tens to hundreds), "
                             f"got {max(self.epochs, self.jtt_epochs):,}.")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {self.seed}.")
        if not isinstance(self.eval_train, bool):
            raise ValueError(f"eval_train must be true or false, got {self.eval_train!r}.")

    def _check_optimisation(self) -> None:
        """Model width, optimiser, schedule, selection criterion and finetuning."""
        self.width = _finite("width", self.width, low=0, low_open=True, hint="The width multiplier scales the model, e.g. 0.5, 1, 4.")
        self.lr = _finite("lr", self.lr, low=0, low_open=True, hint="Typical: 1e-3 for Adam, 0.1 for SGD.")
        self.weight_decay = _finite("weight_decay", self.weight_decay, low=0)
        self.momentum = _finite("momentum", self.momentum, low=0, high=1)
        self.gamma = _finite("gamma", self.gamma, low=0, low_open=True)
        self.milestones = type(self.milestones)(
            _finite("each milestone", m, low=0, high=1, hint="Milestones are fractions of the epochs, e.g. 0.5,0.75.")
            for m in self.milestones)
        self.gdro_eta = _finite("gdro_eta", self.gdro_eta, low=0, low_open=True)
        self.gdro_adjustment = _finite("gdro_adjustment", self.gdro_adjustment, low=0)
        if self.finetune not in FINETUNE_MODES:
            raise ValueError(f"finetune must be one of {', '.join(FINETUNE_MODES)}, got {self.finetune!r}.")
        if self.finetune == "last_layer" and self.init is None and not loads_weights(self.model, self.pretrained):
            raise ValueError("finetune='last_layer' trains only the head of a pretrained model; give init (--init PATH) "
                             "or, for a Hugging Face backbone, pretrained (--pretrained FOLDER).")
        if self.init is not None and self.pretrained is not None:
            raise ValueError("give init (stratalab pretrain weights) or pretrained (a Hugging Face folder), not both.")
        if self.init is not None:
            self.init = str(self.init)
        if self.pretrained is not None:
            self.pretrained = str(self.pretrained)
            if self.model in MODELS:
                raise ValueError(f"pretrained (--pretrained) loads Hugging Face backbones, not model {self.model!r}; "
                                 "finetune stratalab models from `stratalab pretrain` weights with init (--init).")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 tokens, got {self.max_length}.")
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("select", CRITERIA)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}.")

    def _check_methods(self) -> None:
        """The settings of mixture balancing, JTT and DFR."""
        if self.mixture_ratio is not None:
            self.mixture_ratio = _finite("mixture_ratio", self.mixture_ratio, low=1,
                    hint="Mixture caps each class at r times the smallest class, e.g. 2.")
        _finite("jtt_upsample", self.jtt_upsample, low=1)
        if int(self.jtt_upsample) != self.jtt_upsample or self.jtt_upsample < 1 or self.jtt_epochs < 1:
            raise ValueError("jtt needs jtt_epochs >= 1 and an integer jtt_upsample >= 1, "
                             f"got {self.jtt_epochs} and {self.jtt_upsample!r}.")
        self.jtt_upsample = int(self.jtt_upsample)
        if not self.dfr_cs or self.dfr_retrains < 1:
            raise ValueError("dfr needs at least one C in dfr_cs and dfr_retrains >= 1.")
        self.dfr_cs = type(self.dfr_cs)(_finite("each DFR C", c, low=0, low_open=True) for c in self.dfr_cs)

    def _check_augmentation(self, loss: str) -> None:
        """The augmentation, its parameters and FlowAug's (which needs a flow and no Group DRO)."""
        from ..augment.flowaug import OBJECTIVES
        from ..augment.pipeline import AUGMENTATIONS

        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}; got {self.augment!r}.")
        self.mix_alpha = _finite("mix_alpha", self.mix_alpha, low=0, low_open=True, hint="Beta(alpha, alpha) of Mixup / CutMix; 1 is usual.")
        if isinstance(self.cutout_size, bool) or int(self.cutout_size) != self.cutout_size or self.cutout_size < 1:
            raise ValueError(f"cutout_size must be an integer >= 1 (16 for CIFAR), got {self.cutout_size!r}.")
        self.cutout_size = int(self.cutout_size)
        self.label_smoothing = _finite("label_smoothing", self.label_smoothing, low=0, high=1)
        if self.label_smoothing >= 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}.")
        if self.flowaug_objective not in OBJECTIVES:
            raise ValueError(f"flowaug_objective must be one of {', '.join(OBJECTIVES)}; got {self.flowaug_objective!r}.")
        if self.flowaug_pairs not in ("same_class", "any"):
            raise ValueError(f"flowaug_pairs must be 'same_class' or 'any', got {self.flowaug_pairs!r}.")
        self.flowaug_std_weight = _finite("flowaug_std_weight", self.flowaug_std_weight, low=0, hint="eq. (3)'s lambda; the paper tries 0.01-0.1.")
        self.flowaug_mix_weight = _finite("flowaug_mix_weight", self.flowaug_mix_weight, low=0, hint="eq. (4)'s lambda1; the paper uses 1.")
        self.flowaug_sigma = _finite("flowaug_sigma", self.flowaug_sigma, low=0, low_open=True, hint="Algorithm 1's sigma; the paper uses 0.1.")
        if self.augment == "flowaug":
            if not self.flow:
                raise ValueError("augment='flowaug' needs flow=PATH, a flow written by `stratalab flow train` "
                                 "(--flow on the command line).")
            if loss == "group_dro":
                raise ValueError(f"FlowAug trains on several views of each batch; method {self.method!r} (Group DRO) is "
                                 "not supported with it. Use erm or a class-balancing method.")
        elif self.flow:
            raise ValueError(f"flow={self.flow!r} is only used with augment='flowaug' (got augment={self.augment!r}).")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        return config_from_dict(cls, d, "TrainConfig")

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "TrainConfig":
        return cls.from_dict(parse_structured(text, "the TrainConfig YAML", yaml=True) or {})


@dataclass
class TrainResult:
    """The trained model (weights of the selected epoch), the whole history, and what was used."""

    model: nn.Module
    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    selected_epoch: int | None = None
    labels_used: dict[str, str] = field(default_factory=dict)
    last_state: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "selected_epoch": self.selected_epoch,
                "labels_used": self.labels_used, "history": self.history}


MAX_EPOCHS = 100_000  # a bound on epochs (and JTT's first-stage epochs): larger is a typo, not a run


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Learning-rate multiplier for (0-based) ``epoch``."""
    t = epoch / cfg.epochs
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(epoch >= int(round(m * cfg.epochs)) for m in cfg.milestones)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + np.cos(np.pi * t))
    if cfg.schedule == "linear":
        return 1.0 - t
    return 1.0


@torch.no_grad()
def predict(model: nn.Module, split: Split, batch_size: int = 512, precision: str = "fp32", *, workers: int = 0,
            tta: str = "none") -> np.ndarray:
    """Class probabilities ``(n, C)`` for every example of ``split`` (eval mode, batched, on the
    model's device, autocast to ``precision``, file inputs decoded by ``workers`` processes);
    ``tta``: "flip" or "flip_shift", airbench's test-time augmentation (:func:`_tta_logits`)."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    out = []
    batch_size = eval_batch_size(split, batch_size)
    batches = [np.arange(s, min(s + batch_size, len(split))) for s in range(0, len(split), batch_size)]
    for xb in iter_batches(split, batches, workers=workers, pin_memory=device.type == "cuda"):
        xb = to_device(xb, device)
        with autocast(device, precision):
            logits = model(xb).float() if tta == "none" else _tta_logits(model, xb, tta)
        out.append(torch.softmax(logits, dim=1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out).astype(np.float64)


def _tta_logits(model: nn.Module, x: torch.Tensor, tta: str) -> torch.Tensor:
    """Test-time augmentation as airbench evaluates: ``flip``, the mean logits of each image and its
    mirror; ``flip_shift``, that mean weighted 1/2 plus, weighted 1/4 each, the flip-averaged logits
    of the image shifted by one pixel up-left and down-right (reflection-padded)."""
    if x.ndim != 4:
        raise ValueError(f"tta={tta!r} mirrors images (N, C, H, W); these inputs have shape {tuple(x.shape)}.")

    def flip_mean(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model(v).float() + model(v.flip(-1)).float())

    logits = flip_mean(x)
    if tta == "flip_shift":
        h, w = x.shape[-2:]
        pad = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        logits = 0.5 * logits + 0.25 * flip_mean(pad[..., :h, :w]) + 0.25 * flip_mean(pad[..., 2:h + 2, 2:w + 2])
    return logits


def split_report(split: Split, proba: np.ndarray, class_names: list[str] | None = None,
                 group_names: list[str] | None = None) -> GroupReport:
    """Group report of class probabilities on a split: groups are the split's true groups, or its
    classes where groups are unknown."""
    if split.g is None:
        return group_report(split.y, proba.argmax(1), split.y, y_score=proba, class_names=class_names,
                            group_names=class_names)
    return group_report(split.y, proba.argmax(1), split.g, y_score=proba, class_names=class_names,
                        group_names=group_names)


def evaluate(model: nn.Module, split: Split, class_names: list[str] | None = None,
             group_names: list[str] | None = None, precision: str = "fp32") -> GroupReport:
    """Group report of ``model`` on a split (groups = the split's true groups, or its classes)."""
    return split_report(split, predict(model, split, precision=precision), class_names, group_names)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`fit` safely: ``torch.load(weights_only=True)`` (tensors,
    numbers, strings, lists and dicts only; nothing in the file can run code). A file that is not
    such a checkpoint (crafted, truncated, another tool's) gives one ValueError that says so."""
    p = Path(path)
    state = load_weights_only(p, "a readable stratalab checkpoint", "it may be truncated or written by another "
                                                                    "program. Delete it or use a fresh --checkpoint-dir.")
    keys = {"config", "data", "epoch", "model", "optimizer", "rng", "aug_gen", "torch_rng", "history",
            "best_score", "best_state", "best_epoch"}
    if not isinstance(state, dict) or not keys <= set(state):
        raise ValueError(f"{p} is not a stratalab checkpoint (missing keys); delete it or use a fresh checkpoint_dir (--checkpoint-dir).")
    return state


def _data_fingerprint(train: Split, groups: np.ndarray | None, repeats: np.ndarray | None,
                      val: Split | None, test: Split | None) -> str:
    """A hash of what a checkpoint must match besides the config: labels, groups, repeats, split sizes."""
    import hashlib

    h = hashlib.sha1()
    for arr in (train.y, groups, repeats, None if val is None else val.y, None if test is None else test.y):
        h.update(b"none" if arr is None else np.ascontiguousarray(arr, dtype=np.int64).tobytes() + b"|")
    if isinstance(train.x, np.ndarray) and train.x.dtype.kind in "fiub":
        h.update(np.ascontiguousarray(train.x[: min(len(train), 64)]).tobytes())
    return h.hexdigest()


@dataclass
class _Run:
    """The state of one training run that every step reads and the checkpoint holds."""

    cfg: TrainConfig
    model: nn.Module
    train: Split
    groups: np.ndarray | None
    opt: torch.optim.Optimizer
    rng: np.random.Generator
    aug_gen: torch.Generator
    plan: Any
    n_classes: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    scaler: Any = None
    dro: GroupDRO | None = None
    weight: torch.Tensor | None = None
    views: Any = None
    input_aug: Any = None
    batch_aug: Any = None
    x_all: torch.Tensor | None = None
    base_lrs: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float = -np.inf
    best_state: dict[str, Any] | None = None
    best_epoch: int | None = None
    start_epoch: int = 0

    def state(self, fingerprint: str, epoch: int) -> dict[str, Any]:
        """What ``last.pt`` holds after ``epoch`` epochs."""
        return {
            "config": self.cfg.to_dict(), "data": fingerprint, "epoch": epoch, "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(), "rng": self.rng.bit_generator.state, "aug_gen": self.aug_gen.get_state(),
            "torch_rng": torch.get_rng_state(), "dro": self.dro.state_dict() if self.dro is not None else None,
            "history": self.history, "best_score": float(self.best_score), "best_state": self.best_state,
            "best_epoch": self.best_epoch, "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
        }


def _train_groups(cfg: TrainConfig, train: Split, train_groups: np.ndarray | None) -> np.ndarray | None:
    """The group of each training example (given, else the split's), checked against the method."""
    groups = train_groups if train_groups is not None else train.g
    if groups is not None:
        groups = np.asarray(groups, dtype=np.int64)
        if groups.shape != train.y.shape:
            raise ValueError(f"train_groups has {groups.shape[0]} entries, the train split {len(train)}.")
    if METHODS[cfg.method].train_groups and groups is None:
        raise ValueError(f"method {cfg.method!r} needs train group labels: this split has none. Pass train_groups "
                         "(true groups or GEORGE clusters) or choose a method that needs no groups.")
    return groups


def _setup(model: nn.Module, train: Split, cfg: TrainConfig, groups: np.ndarray | None, repeats: np.ndarray | None,
           augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None) -> _Run:
    """Seeds, the epoch plan of the method, its loss, the augmentations and the optimiser (in
    this order: each draws from the seeded generators)."""
    from ..augment.pipeline import make_augmentation, make_views  # looked up per run: tests replace them

    spec = METHODS[cfg.method]
    device = torch.device(resolve_device(cfg.device))  # a device that is not here is refused before any work
    model.to(device)
    set_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    aug_gen = torch.Generator().manual_seed(cfg.seed)
    n_classes = int(getattr(getattr(model, "head", None), "out_features", int(train.y.max()) + 1))
    if repeats is not None and spec.sampling != "repeat":
        raise ValueError(f"repeats are for JTT's second stage (method 'jtt'), not {cfg.method!r}.")
    plan = make_plan(cfg.method, train.y, groups, rng, mixture_ratio=cfg.mixture_ratio,
                     gdro_balanced_sampler=cfg.gdro_balanced_sampler, repeats=repeats)
    weight = class_weights(train.y, n_classes).to(device) if spec.loss == "class_weighted" else None
    dro = (GroupDRO(np.bincount(groups, minlength=int(groups.max()) + 1), cfg.gdro_eta, cfg.gdro_adjustment)
           if spec.loss == "group_dro" and groups is not None else None)
    input_aug, batch_aug = make_augmentation(cfg)
    views = make_views(cfg, train)
    if augment is not None:  # an explicit hook runs first, then the config's augmentation
        input_aug = augment if input_aug is None else (lambda x, g, a=augment, b=input_aug: b(a(x, g), g))
    opt = make_optimizer(model, cfg)
    # inputs held in memory are one tensor; files, texts and memory-mapped arrays (token caches) are read per batch
    in_memory = isinstance(train.x, np.ndarray) and not isinstance(train.x, np.memmap) and train.x.dtype.kind in "fiub"
    return _Run(cfg=cfg, model=model, train=train, groups=groups, opt=opt, rng=rng, aug_gen=aug_gen, plan=plan,
                n_classes=n_classes, device=device, scaler=grad_scaler(device, cfg.precision), dro=dro, weight=weight,
                views=views, input_aug=input_aug, batch_aug=batch_aug,
                x_all=torch.as_tensor(train.load_x(), dtype=torch.float32) if in_memory else None,
                base_lrs=[pg["lr"] for pg in opt.param_groups])


def _resume(run: _Run, ckpt: Path, fingerprint: str) -> None:
    """Continue from ``ckpt`` when it exists: the same config and data, or one error saying why not."""
    if ckpt.parent.exists() and not ckpt.parent.is_dir():
        raise ValueError(f"checkpoint_dir {ckpt.parent} is a file; give a folder (it is created if missing).")
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    if ckpt.exists() and not ckpt.is_file():
        raise ValueError(f"{ckpt} is not a file; remove it or use a fresh checkpoint_dir.")
    if not ckpt.is_file():
        return
    cfg = run.cfg
    state = load_checkpoint(ckpt)
    runtime = ("workers",)  # settings that do not change the numbers: a resume may change them
    if {k: v for k, v in state["config"].items() if k not in runtime} != {k: v for k, v in cfg.to_dict().items() if k not in runtime}:
        raise ValueError(f"{ckpt} was written by a run with another config; use a fresh checkpoint_dir.")
    if state.get("data") != fingerprint:
        raise ValueError(f"{ckpt} was written by a run on other data (labels, groups or splits differ); "
                         "use a fresh checkpoint_dir.")
    if not isinstance(state["epoch"], int) or not 0 <= state["epoch"] <= cfg.epochs:
        raise ValueError(f"{ckpt} records epoch {state['epoch']!r} of a {cfg.epochs}-epoch run; it is damaged. "
                         "Delete it or use a fresh checkpoint_dir.")
    try:
        run.model.load_state_dict(state["model"])
        run.opt.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{ckpt} does not fit this model ({str(e).splitlines()[0][:160]}); delete it or use "
                         "a fresh checkpoint_dir.") from None
    run.rng.bit_generator.state = state["rng"]
    run.aug_gen.set_state(state["aug_gen"])
    torch.set_rng_state(state["torch_rng"])
    if run.dro is not None:
        run.dro.load_state_dict(state["dro"])
    if state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    if state.get("cuda_rng") is not None and run.device.type == "cuda":
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    run.history, run.best_score, run.best_state = state["history"], state["best_score"], state["best_state"]
    run.best_epoch, run.start_epoch = state["best_epoch"], state["epoch"]


def _batch_loss(run: _Run, idx: torch.Tensor, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One batch (``xb``: the inputs at ``idx``): its views (FlowAug), augmentations and targets,
    then the method's loss (eqs. of Group DRO, class weighting, FlowAug's (2)-(4)). Returns the
    loss, the per-example losses and whether the batch had FlowAug views."""
    from ..augment.mixing import soft_cross_entropy  # looked up per batch: tests replace it

    cfg, train = run.cfg, run.train
    yb = torch.as_tensor(train.y)[idx]
    view_w, idx_b = None, idx
    if run.views is not None:  # FlowAug: the objective's views of the clean batch, stacked, with their weights
        vs = run.views.views(xb, yb, idx, run.aug_gen)
        xb = torch.cat([v for v, _ in vs])
        view_w = torch.cat([torch.full((len(yb),), float(w)) for _, w in vs])
        yb, idx_b = yb.repeat(len(vs)), idx.repeat(len(vs))
    if run.input_aug is not None:
        xb = run.input_aug(xb, run.aug_gen)
    y_soft = None
    if run.batch_aug is not None or cfg.label_smoothing:
        # soft targets: Mixup / CutMix mix the labels, Cutout keeps them; smoothing mixes in the uniform
        if run.batch_aug is not None:
            xb, y_soft = run.batch_aug(xb, yb, run.n_classes, run.aug_gen)
        else:
            y_soft = torch.nn.functional.one_hot(yb, run.n_classes).to(torch.float32)
        if cfg.label_smoothing:
            y_soft = (1 - cfg.label_smoothing) * y_soft + cfg.label_smoothing / run.n_classes
    # everything above ran on the CPU with the seeded generators; the batch moves to the device here
    xb, yb, y_soft, view_w = to_device((xb, yb, y_soft, view_w), run.device)
    with autocast(run.device, cfg.precision):
        logits = run.model(xb)
    logits = logits.float()
    losses = per_example_ce(logits, yb) if y_soft is None else soft_cross_entropy(logits, y_soft, reduction="none")
    if run.dro is not None:  # a mixed example counts in the group of its first image
        loss = run.dro.loss(losses, to_device(torch.as_tensor(run.groups)[idx_b], run.device))
    elif run.weight is not None:
        # class-weighted mean, normalised by the batch's weights (torch's CrossEntropyLoss(weight=...));
        # a soft target weighs its classes by their shares
        w = run.weight[yb] if y_soft is None else y_soft @ run.weight
        if view_w is None:
            loss = (w * losses).sum() / w.sum()
        else:  # sum over views of weight x that view's class-weighted mean (each view has the batch's labels)
            loss = (view_w * w * losses).sum() / w[:idx.numel()].sum()
    elif view_w is not None:  # eqs. (2)-(4): sum over views of weight x that view's mean loss
        loss = (view_w * losses).sum() / idx.numel()
    else:
        loss = losses.mean()
    return loss, losses, view_w is not None


def _train_epoch(run: _Run, epoch: int) -> dict[str, Any]:
    """One pass over the epoch's plan; the history row (epoch, lr, mean train loss, Group DRO's q)."""
    cfg, model = run.cfg, run.model
    factor = lr_factor(cfg, epoch)
    for pg, lr0 in zip(run.opt.param_groups, run.base_lrs):
        pg["lr"] = lr0 * factor
    model.train()
    if cfg.finetune == "last_layer":  # a frozen body also keeps its BatchNorm statistics and has no dropout
        for name, module in model.named_modules():
            if name and not name.startswith("head"):
                module.eval()
    order = torch.as_tensor(run.plan.epoch(run.rng))
    total, seen = 0.0, 0
    batches = [order[s:s + cfg.batch_size] for s in range(0, order.numel(), cfg.batch_size)]
    if run.x_all is not None:
        inputs: Any = (run.x_all[idx] for idx in batches)
    else:  # files: decoded by cfg.workers processes, ahead of the step
        inputs = iter_batches(run.train, [idx.numpy() for idx in batches], workers=cfg.workers,
                              pin_memory=run.device.type == "cuda")
    for idx, xb in zip(batches, inputs):
        loss, losses, viewed = _batch_loss(run, idx, xb)
        run.opt.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()  # fp16: scaled; otherwise unchanged
        run.scaler.step(run.opt)
        run.scaler.update()
        # FlowAug's objective (eqs. 2-4) is a sum over views of weight x mean loss: its batch total is loss x n
        total += float(loss.detach()) * idx.numel() if viewed else float(losses.detach().sum())
        seen += idx.numel()
    row: dict[str, Any] = {"epoch": epoch + 1, "lr": run.base_lrs[0] * factor, "train_loss": total / max(seen, 1)}
    if run.dro is not None:
        row["gdro_q"] = [round(float(v), 6) for v in run.dro.q]
    if run.views is not None and hasattr(run.views, "failed"):  # FlowAug views replaced by their clean image, so far
        row["flowaug_failed"], row["flowaug_decoded"] = int(run.views.failed), int(run.views.decoded)
    return row


def _evaluate_epoch(run: _Run, row: dict[str, Any], val: Split | None, test: Split | None,
                    val_bias_pred: np.ndarray | None, val_estimated_groups: np.ndarray | None) -> None:
    """Val (and the selection criteria; the best epoch's weights kept) and test summaries into ``row``."""
    if val is not None:
        vp = predict(run.model, val, precision=run.cfg.precision, workers=run.cfg.workers, tta=run.cfg.tta)
        row["val"] = split_report(val, vp).summary()
        row["selection"] = selection_scores(val.y, vp.argmax(1), val.g, bias_pred=val_bias_pred,
                                            estimated_groups=val_estimated_groups)
        score = row["selection"][run.cfg.select]
        if score > run.best_score:
            run.best_score, run.best_epoch = score, row["epoch"]
            run.best_state = copy.deepcopy(run.model.state_dict())
    if test is not None:
        row["test"] = split_report(test, predict(run.model, test, precision=run.cfg.precision, workers=run.cfg.workers,
                                                 tta=run.cfg.tta)).summary()
    if run.cfg.eval_train:  # the train split as stored (no augmentation): when does the model memorise it?
        proba = predict(run.model, run.train, precision=run.cfg.precision, workers=run.cfg.workers)
        groups = run.groups if run.groups is not None else run.train.y  # the groups training used, else the classes
        row["train"] = group_report(run.train.y, proba.argmax(1), groups, y_score=proba).summary()


def fit(
    model: nn.Module,
    train: Split,
    config: TrainConfig | None = None,
    *,
    train_groups: np.ndarray | None = None,
    val: Split | None = None,
    test: Split | None = None,
    val_bias_pred: np.ndarray | None = None,
    val_estimated_groups: np.ndarray | None = None,
    repeats: np.ndarray | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train`` with ``config.method`` and return the selected checkpoint.

    Parameters
    ----------
    train_groups : array, optional
        Group of each training example for ``gdro``, ``subg``, ``rwg`` (default ``train.g``). Any
        integer assignment works, e.g. GEORGE clusters.
    val, test : Split, optional
        Evaluated every ``eval_every`` epochs (test is only recorded, never used for selection).
    val_bias_pred, val_estimated_groups : array, optional
        For the ``bias_unsupervised`` and ``val_worst_estimated`` criteria.
    repeats : array, optional
        Per-example repeat counts (JTT's second stage; ``method='jtt'``).
    augment : callable, optional
        ``augment(x_batch, generator) -> x_batch`` applied to training batches only.
    checkpoint_dir : path, optional
        Saves ``last.pt`` after every epoch and resumes from it if present with the same config.
    progress : callable, optional
        ``progress(epoch, history_row)`` after each epoch.
    """
    cfg = config or TrainConfig()
    groups = _train_groups(cfg, train, train_groups)
    if val is not None:
        check_criterion(cfg.select, has_val_groups=val.g is not None, has_bias=val_bias_pred is not None,
                        has_estimated=val_estimated_groups is not None)
    run = _setup(model, train, cfg, groups, repeats, augment)
    fingerprint = _data_fingerprint(train, groups, repeats, val, test)
    if run.views is not None:  # a checkpoint resumes only on the same flow file, not just the same path
        fingerprint += ":flow=" + str(getattr(run.views, "flow_sha256", ""))
    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None
    if ckpt is not None:
        _resume(run, ckpt, fingerprint)
    for epoch in range(run.start_epoch, cfg.epochs):
        row = _train_epoch(run, epoch)
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            _evaluate_epoch(run, row, val, test, val_bias_pred, val_estimated_groups)
        run.history.append(json.loads(json.dumps(row)))  # plain Python numbers: JSON and weights_only checkpoints
        if ckpt is not None:
            state = run.state(fingerprint, epoch + 1)
            write_atomic(ckpt, partial(torch.save, state))  # torch.save(state, tmp_path)
        if progress is not None:
            progress(epoch + 1, row)
    last_state = copy.deepcopy(model.state_dict())
    if run.best_state is not None:
        model.load_state_dict(run.best_state)
    labels = {
        "train_groups": ("no" if not METHODS[cfg.method].train_groups
                         else "true train groups" if train_groups is None else "given group assignment"),
        "val_groups": "yes" if (val is not None and cfg.select == "val_wga") else "no",
        "selection": cfg.select if val is not None else "last epoch (no val split)",
    }
    return TrainResult(model=model, config=cfg, history=run.history,
                       selected_epoch=run.best_epoch if run.best_state is not None else cfg.epochs,
                       labels_used=labels, last_state=last_state)
