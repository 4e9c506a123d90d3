"""Multi-stage methods on top of the one loop: JTT (Liu et al. 2021) and DFR (Kirichenko et al.
2023), and :func:`run`, which trains any method on a :class:`~stratalab.data.Dataset`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
from torch import nn

from .._indices import balance_groups
from ..data.core import Dataset
from ..metrics import GroupReport, group_report
from ..models import build_model, embed, load_pretrained
from ..models.hf import loads_weights, tokenized
from .loop import TrainConfig, fit, predict, split_report
from .registry import METHODS


def jtt_repeats(errors: np.ndarray, upsample: int) -> np.ndarray:
    """JTT's upsampled data set (Liu et al. 2021, Alg. 1): every example of the error set appears
    ``upsample`` (lambda_up) times, every other example once. An error's total weight is lambda_up."""
    return np.where(np.asarray(errors, dtype=bool), int(upsample), 1).astype(np.int64)


@dataclass
class DFRHead:
    """Deep Feature Reweighting's last layer: standardisation + averaged L1 logistic regression.

    ``predict_proba(features)`` applies the scaler, then the averaged ``coef`` / ``intercept``.
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (C or 1, d)
    intercept: np.ndarray
    C: float
    tuning: dict[float, float] = field(default_factory=dict)

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return z @ self.coef.T + self.intercept

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        s = self.decision_function(features)
        if s.shape[1] == 1:
            p1 = 1.0 / (1.0 + np.exp(-s[:, 0]))
            return np.stack([1 - p1, p1], axis=1)
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.predict_proba(features).argmax(1)


def _sklearn_at_least(major: int, minor: int) -> bool:
    import sklearn

    parts = sklearn.__version__.split(".")
    return (int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)) >= (major, minor)


def fit_dfr(
    features: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    cs: tuple[float, ...] = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01),
    n_retrains: int = 20,
    random_state: int = 0,
) -> DFRHead:
    """DFR on held-out features (Kirichenko et al. 2023, the ``dfr_evaluate_spurious`` procedure).

    1. Standardise the features (mean and scale of the held-out set).
    2. Split the held-out set in two halves (seeded). For each C: fit an L1 logistic regression on
       half A subsampled to its smallest group; score worst-group accuracy on half B. C is never
       chosen on the data it was fitted on.
    3. With the best C, fit ``n_retrains`` models, each on a fresh group-balanced subsample of the
       whole held-out set, and average their coefficients and intercepts.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    g = np.asarray(groups, dtype=np.int64)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or g.shape != y.shape:
        raise ValueError(f"DFR needs features (n, d) with n labels and n groups; got {x.shape}, {y.shape}, {g.shape}.")
    if np.unique(y).size < 2:
        raise ValueError("DFR needs at least two classes in the held-out split.")
    rng = np.random.default_rng(random_state)
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    perm = rng.permutation(y.size)
    half_a, half_b = perm[: y.size // 2], perm[y.size // 2:]
    for name, half in (("first", half_a), ("second", half_b)):
        if np.unique(y[half]).size < 2:
            raise ValueError(f"the {name} half of the held-out split has one class only; DFR needs a larger held-out split.")

    n_classes = int(np.unique(y).size)
    new_api = _sklearn_at_least(1, 8)

    def lr(c: float, seed: int) -> Any:
        # liblinear for two classes (the reference); saga (multinomial) for more, which liblinear
        # cannot do. scikit-learn >= 1.8 spells the L1 penalty l1_ratio=1; older releases penalty="l1".
        penalty = {"l1_ratio": 1.0} if new_api else {"penalty": "l1"}
        if n_classes > 2:
            return LogisticRegression(C=c, solver="saga", max_iter=5000, random_state=seed, **penalty)
        return LogisticRegression(C=c, solver="liblinear", random_state=seed, **penalty)

    tuning: dict[float, float] = {}
    for c in cs:
        idx = half_a[balance_groups(g[half_a], rng)]
        model = lr(c, int(rng.integers(2**31))).fit(z[idx], y[idx])
        tuning[c] = group_report(y[half_b], model.predict(z[half_b]), g[half_b]).worst_group_accuracy
    best_c = max(cs, key=lambda c: (tuning[c], -cs.index(c)))
    coefs, intercepts = [], []
    for _ in range(n_retrains):
        idx = balance_groups(g, rng)
        model = lr(best_c, int(rng.integers(2**31))).fit(z[idx], y[idx])
        coefs.append(model.coef_)
        intercepts.append(model.intercept_)
    return DFRHead(mean=mean, scale=scale, coef=np.mean(coefs, 0), intercept=np.mean(intercepts, 0), C=best_c, tuning=tuning)


@dataclass
class RunResult:
    """A finished run: config, history, selected epoch, group reports, and which labels were used."""

    config: TrainConfig
    dataset: dict[str, Any]
    history: list[dict[str, Any]]
    selected_epoch: int
    labels_used: dict[str, str]
    reports: dict[str, GroupReport]
    model: nn.Module | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "dataset": self.dataset,
            "selected_epoch": self.selected_epoch,
            "labels_used": self.labels_used,
            "metrics": {k: r.to_dict() for k, r in self.reports.items()},
            "history": self.history,
            **self.extra,
        }


def _reports(model_or_proba: Any, ds: Dataset, splits: tuple[str, ...] = ("val", "test"),
             precision: str = "fp32", workers: int = 0, tta: str = "none") -> dict[str, GroupReport]:
    """Group reports of a model (or of given probabilities per split) on val and test."""
    out = {}
    for s in splits:
        sp = ds.splits[s]
        proba = model_or_proba[s] if isinstance(model_or_proba, dict) else predict(model_or_proba, sp, precision=precision, workers=workers, tta=tta)
        out[s] = split_report(sp, proba, ds.class_names, ds.group_names)
    return out


def initial_model(ds: Dataset, cfg: TrainConfig) -> tuple[nn.Module, dict[str, Any] | None]:
    """The model a run starts from (``ds`` already tokenised): ``cfg.model`` initialised from
    ``cfg.seed``, with a Hugging Face backbone's ``pretrained`` weights or a ``stratalab pretrain``
    file's (``init``); ``finetune="last_layer"`` freezes all but the head. Returns the model and,
    for ``init``, what was loaded."""
    input_shape = ds.train.input_shape
    if cfg.tta != "none" and len(input_shape) != 3:
        raise ValueError(f"tta={cfg.tta!r} mirrors images; {ds.name} has inputs of shape {input_shape}. Use tta='none'.")
    model = build_model(cfg.model, input_shape, ds.n_classes, width=cfg.width, seed=cfg.seed, pretrained=cfg.pretrained)
    if loads_weights(cfg.model, cfg.pretrained) and cfg.finetune == "last_layer":  # a frozen backbone: only the head trains
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("head."))
    if cfg.whiten:  # airbench's whitening init of the stem, from up to 5,000 train images drawn from the seed
        import torch

        pick = np.sort(np.random.default_rng(cfg.seed).permutation(len(ds.train))[:5000])
        model.whiten_(torch.as_tensor(np.asarray(ds.train.load_x(pick)), dtype=torch.float32))  # type: ignore[operator]
    loaded = None
    if cfg.init is not None:  # finetune: the body from the pretrained file, the head fresh unless it fits
        loaded = load_pretrained(model, cfg.init, model_name=cfg.model, width=cfg.width, input_shape=input_shape,
                                 finetune=cfg.finetune)
    return model, loaded


def embed_dataset(ds: Dataset, cfg: TrainConfig, path: str, *, train: bool = False, unpooled: bool = False,
                  batch_size: int = 256, progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Write the penultimate features of every split of ``ds`` to the ``.npz`` at ``path`` once
    (:func:`stratalab.models.build.write_features`), for GEORGE, spectral analysis and DFR to reuse:
    from the model as loaded (a pretrained backbone, as GEORGE's pretrained-feature variant) or,
    with ``train``, after training ``cfg`` on ``ds`` (ERM's features, the checkpoint ``cfg.select``
    picks). Returns what was written."""
    from ..models.build import MODELS, UNPOOLED_MODELS, write_features

    if unpooled and cfg.model in MODELS and cfg.model not in UNPOOLED_MODELS:  # refused before any training
        raise ValueError(f"unpooled features are the last hidden state of a convnet ({', '.join(UNPOOLED_MODELS)}) or a "
                         f"Hugging Face backbone; {cfg.model!r} has only its pooled features. Leave out --unpooled, or use one "
                         "of those models.")
    ds = tokenized(ds, cfg.model, cfg.pretrained, cfg.max_length)
    if train:
        res = run(ds, cfg)
        assert res.model is not None  # run() always returns its model
        model = res.model
    else:
        model, _ = initial_model(ds, cfg)
        from .._device import resolve_device

        model.to(resolve_device(cfg.device))
    write_features(model, ds.splits, path, batch_size=batch_size, precision=cfg.precision, workers=cfg.workers,
                   unpooled=unpooled, progress=progress)
    return {"output": str(path), "model": cfg.model, "trained": train, "unpooled": unpooled,
            "sizes": {s: len(sp) for s, sp in ds.splits.items()}}


def run(
    ds: Dataset,
    cfg: TrainConfig,
    *,
    train_groups: np.ndarray | None = None,
    val_bias_pred: np.ndarray | None = None,
    val_estimated_groups: np.ndarray | None = None,
    checkpoint_dir: str | None = None,
    progress: Callable[[str, int, int, dict[str, Any]], None] | None = None,
) -> RunResult:
    """Train ``cfg.method`` on ``ds`` and evaluate val and test at the selected epoch.

    ``progress(stage, epoch, epochs, row)`` is called after every epoch of every stage.
    """
    spec = METHODS[cfg.method]
    if spec.val_groups_fit and ds.val.g is None:
        raise ValueError(f"{spec.title} needs a held-out split with group labels (it fits on val groups); "
                         f"the val split of {ds.name!r} has none.")
    if spec.train_groups and train_groups is None and ds.train.g is None:
        raise ValueError(f"method {cfg.method!r} needs train group labels and {ds.name!r} has none in train; "
                         "pass estimated groups (e.g. GEORGE clusters).")
    ds = tokenized(ds, cfg.model, cfg.pretrained, cfg.max_length)  # text: token ids, once (cached beside the data)
    model, pretrained = initial_model(ds, cfg)
    init_state = copy.deepcopy(model.state_dict())

    def cb(stage: str, total: int):
        return None if progress is None else (lambda e, row: progress(stage, e, total, row))

    common: dict[str, Any] = dict(val=ds.val, test=ds.test, val_bias_pred=val_bias_pred, val_estimated_groups=val_estimated_groups)
    extra: dict[str, Any] = {}
    if spec.stages == ("identify_errors", "retrain_upsampled"):
        stage1_cfg = replace(cfg, method="erm", epochs=cfg.jtt_epochs, schedule="constant")
        fit(model, ds.train, stage1_cfg, progress=cb("jtt: identify errors (ERM)", cfg.jtt_epochs))
        errors = predict(model, ds.train, precision=cfg.precision, workers=cfg.workers).argmax(1) != ds.train.y
        extra["jtt"] = {"n_errors": int(errors.sum()), "upsample": cfg.jtt_upsample,
                        "error_weight": "each error appears lambda_up times (total weight lambda_up)"}
        model.load_state_dict(init_state)  # retrain from the same initialisation
        res = fit(model, ds.train, cfg, repeats=jtt_repeats(errors, cfg.jtt_upsample), checkpoint_dir=checkpoint_dir,
                  progress=cb("jtt: retrain", cfg.epochs), **common)
        reports = _reports(res.model, ds, precision=cfg.precision, workers=cfg.workers, tta=cfg.tta)
    elif spec.stages == ("train", "last_layer"):
        erm_cfg = replace(cfg, method="erm")
        res = fit(model, ds.train, erm_cfg, checkpoint_dir=checkpoint_dir, progress=cb("dfr: base ERM", cfg.epochs), **common)
        emb = {s: embed(res.model, ds.splits[s], precision=cfg.precision, workers=cfg.workers) for s in ("val", "test")}
        assert ds.val.g is not None  # DFR is val_groups_fit: refused above when val has no groups
        head = fit_dfr(emb["val"].features, ds.val.y, ds.val.g, cs=cfg.dfr_cs, n_retrains=cfg.dfr_retrains,
                       random_state=cfg.seed)
        reports = _reports({s: head.predict_proba(emb[s].features) for s in ("val", "test")}, ds)
        extra["dfr"] = {"C": head.C, "tuning_wga_by_C": {str(k): v for k, v in head.tuning.items()},
                        "note": "val metrics are in-sample for the DFR head (it is fitted on val)"}
        res.labels_used["val_groups"] = "yes (DFR fits the last layer on val groups)"
    else:
        res = fit(model, ds.train, cfg, train_groups=train_groups, checkpoint_dir=checkpoint_dir,
                  progress=cb(cfg.method, cfg.epochs), **common)
        reports = _reports(res.model, ds, precision=cfg.precision, workers=cfg.workers, tta=cfg.tta)
    if pretrained is not None:
        extra["pretrained"] = pretrained
    return RunResult(config=cfg, dataset={"name": ds.name, **ds.options}, history=res.history,
                     selected_epoch=int(res.selected_epoch or cfg.epochs), labels_used=res.labels_used,
                     reports=reports, model=res.model, extra=extra)


def bias_proxy_predictions(ds: Dataset, cfg: TrainConfig) -> np.ndarray:
    """Val predictions of a bias proxy for the ``bias_unsupervised`` selection criterion
    (Tsirigotis et al. 2023, as used by LaBonte et al. 2024): an ERM model with ``cfg``'s model and
    optimisation, selected on val average accuracy (no group label)."""
    proxy = run(ds, replace(cfg, method="erm", select="val_avg"))
    assert proxy.model is not None  # run() always returns its model
    return predict(proxy.model, ds.val).argmax(1)
