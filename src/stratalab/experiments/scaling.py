"""LaBonte et al. (2024), "The Group Robustness is in the Details": model scaling x class balancing
when finetuning pretrained models, and worst-group accuracy over finetuning epochs.

One study: for every width of a model family, pretrain once on a source task (``pretrain_dataset``,
e.g. 10-way MNIST digits), then finetune on the target task (e.g. class-imbalanced spurious-mnist)
with every class-balancing method (none = ERM, subsetting, upsampling, upweighting, mixture) and
every seed. Each finetune records test worst-group and average accuracy at the epoch selected on val
(``select``) and at the last epoch, the parameter count, and its whole history (test WGA per epoch,
for the collapse figure). Everything goes through the one training loop and the method registry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from .._config import config_to_dict, split_flat
from .._validation import check_unique
from ..models import build_model, n_params, save_pretrained
from ..models.build import check_model_fits
from ..models.pretrained import FINETUNE_MODES
from ..report.plots import BALANCING_COLOURS as _COLOURS
from ..report.plots import BALANCING_LABELS as LABELS
from ..report.results import METRIC_ALIASES, Row, field_of, num, seed_of
from ..train import TrainConfig, run
from .registry import Invocation, Outcome, StudyExperiment, register

if TYPE_CHECKING:
    from .backend import Backend, DataSpec

BALANCING = tuple(LABELS)  # erm (= no class balancing), subsetting, upsampling, upweighting, mixture


def _study_training() -> TrainConfig:
    """The training of the study's runs: LeNet-5, 10 epochs, Adam 1e-3, batches of 128, selected
    on val worst-group accuracy."""
    return TrainConfig(model="lenet5", epochs=10, lr=1e-3, batch_size=128, select="val_wga")


@dataclass
class ScalingConfig:
    """The study's settings; round-trips through :meth:`to_dict` / :meth:`from_dict`. ``train`` is
    the training of every run (model family, finetuning epochs, optimiser, selection criterion);
    each run sets its method, width, seed and initialisation, and the pretraining its epochs
    (``pretrain_epochs``). :meth:`of` builds a config from flat settings."""

    dataset: str = "spurious-mnist"
    dataset_options: dict[str, Any] | None = None
    pretrain_dataset: str = "mnist-digits"
    pretrain_options: dict[str, Any] | None = None
    train: TrainConfig = field(default_factory=_study_training)
    widths: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    methods: tuple[str, ...] = BALANCING
    seeds: tuple[int, ...] = (0, 1, 2)
    pretrain_epochs: int = 3
    finetune: str = "full"
    mixture_ratio: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig.from_dict({**_study_training().to_dict(), **self.train})
        self.widths = tuple(float(w) for w in self.widths)
        self.methods = tuple(self.methods)
        self.seeds = tuple(int(s) for s in self.seeds)
        self.dataset_options = dict(self.dataset_options or {})
        self.pretrain_options = dict(self.pretrain_options or {})
        bad = [m for m in self.methods if m not in BALANCING]
        if bad or not self.methods:
            raise ValueError(f"unknown balancing method {bad[0] if bad else ''!r}; choose from {', '.join(BALANCING)} "
                             "(erm = no class balancing).")
        if not self.widths or not self.seeds:
            raise ValueError("give at least one width and one seed.")
        for name in ("widths", "methods", "seeds"):
            check_unique(getattr(self, name), name)
        if int(self.pretrain_epochs) != self.pretrain_epochs or self.pretrain_epochs < 0:
            raise ValueError(f"pretrain_epochs must be an integer >= 0 (0 = train from scratch), got {self.pretrain_epochs}.")
        if self.finetune not in FINETUNE_MODES:  # checked here, not when the first finetune starts after pretraining
            raise ValueError(f"finetune must be one of {', '.join(FINETUNE_MODES)}; got {self.finetune!r}.")
        if self.finetune == "last_layer" and self.pretrain_epochs == 0:
            raise ValueError("finetune='last_layer' needs pretrained weights (pretrain_epochs >= 1).")
        for w in self.widths:  # every run's settings are checked before the first one starts
            self.train_config("mixture", 0, w)

    def train_config(self, method: str, seed: int, width: float, init: str | None = None) -> TrainConfig:
        """One finetuning run (from ``init``, else from scratch)."""
        return replace(self.train, method=method, width=width, seed=seed,
                       mixture_ratio=self.mixture_ratio if method == "mixture" else None,
                       init=init, finetune=self.finetune if init is not None else "full")

    def pretrain_config(self, width: float) -> TrainConfig:
        """The pretraining of one width on the source task: ERM, ``pretrain_epochs``, seed 0, val average."""
        return replace(self.train, method="erm", width=width, epochs=self.pretrain_epochs, seed=0, select="val_avg",
                       mixture_ratio=None, init=None, finetune="full", eval_train=False)

    def to_dict(self) -> dict[str, Any]:
        d = config_to_dict(self)
        d["train"] = self.train.to_dict()
        return d

    @classmethod
    def of(cls, **settings: Any) -> "ScalingConfig":
        """A config from flat settings: :class:`TrainConfig` fields (``model``, ``epochs``, ``lr``,
        ``batch_size``, ``select``, ...) go to ``train``, the others are the study's own."""
        train, own = split_flat(settings, _TRAIN_FIELDS, _OWN_FIELDS, "scaling config")
        return cls(train=TrainConfig.from_dict({**_study_training().to_dict(), **train}), **own)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ScalingConfig":
        """The inverse of :meth:`to_dict`; flat configs of earlier files read the same."""
        if not isinstance(d, dict):
            raise ValueError(f"scaling config must be a mapping of settings, got {type(d).__name__}.")
        return cls.of(**d)


_TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
_OWN_FIELDS = {f.name for f in fields(ScalingConfig)} - {"train"}


@dataclass
class ScalingResult:
    config: ScalingConfig
    runs: list[dict[str, Any]]  # one per (width, method, seed)
    pretraining: list[dict[str, Any]]  # one per width
    seconds: float

    def rows(self) -> pd.DataFrame:
        return pd.DataFrame([{k: v for k, v in r.items() if k not in _CURVES} for r in self.runs])

    def table(self) -> pd.DataFrame:
        """Mean and std (ddof 0) over seeds per (method, width): test WGA and average accuracy at the
        selected epoch and at the last epoch."""
        df = self.rows()
        g = df.groupby(["method", "width"], sort=False)
        out = g.agg(params=("params", "first"), seeds=("seed", "size"),
                    wga_mean=("test_wga", "mean"), wga_std=("test_wga", lambda v: float(np.std(v))),
                    avg_mean=("test_avg", "mean"), avg_std=("test_avg", lambda v: float(np.std(v))),
                    wga_last_mean=("test_wga_last", "mean"), wga_last_std=("test_wga_last", lambda v: float(np.std(v))))
        return out.reset_index()

    def curves(self, width: float | None = None) -> pd.DataFrame:
        """Test WGA per epoch, mean and std over seeds, per method (at ``width``, default the largest);
        with ``eval_train``, also the train WGA and average accuracy (``train_wga_mean``,
        ``train_avg_mean``)."""
        w = max(self.config.widths) if width is None else float(width)
        rows = []
        for r in self.runs:
            if r["width"] != w:
                continue
            epochs = r.get("curve_epochs") or range(1, len(r["curve"]) + 1)  # files before it: every epoch evaluated
            for e, (epoch, v) in enumerate(zip(epochs, r["curve"])):
                row = {"method": r["method"], "seed": r["seed"], "epoch": int(epoch), "test_wga": v}
                if "train_wga_curve" in r:
                    row.update(train_wga=r["train_wga_curve"][e], train_avg=r["train_avg_curve"][e])
                rows.append(row)
        df = pd.DataFrame(rows)
        if df.empty:
            return df
        out = df.groupby(["method", "epoch"], sort=False)["test_wga"].agg(["mean", lambda v: float(np.std(v))])
        out.columns = ["wga_mean", "wga_std"]
        for col in ("train_wga", "train_avg"):
            if col in df:
                out[f"{col}_mean"] = df.groupby(["method", "epoch"], sort=False)[col].mean()
        return out.reset_index()

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "seconds": self.seconds, "pretraining": self.pretraining,
                "table": self.table().to_dict(orient="records"), "runs": self.runs}


_CURVES = ("curve", "curve_epochs", "train_wga_curve", "train_avg_curve")  # per-epoch lists, not table columns


def _test_wga_curve(history: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Test WGA at each evaluated epoch, and those epochs (``eval_every`` may skip some)."""
    rows = [h for h in history if "test" in h]
    return {"curve": [float(h["test"]["worst_group_accuracy"]) for h in rows], "curve_epochs": [int(h["epoch"]) for h in rows]}


def _train_curves(history: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Train worst-group and average accuracy per evaluated epoch, where the run had ``eval_train``."""
    rows = [h["train"] for h in history if "train" in h]
    if not rows:
        return {}
    return {"train_wga_curve": [float(t["worst_group_accuracy"]) for t in rows],
            "train_avg_curve": [float(t["average_accuracy"]) for t in rows]}


def _pretrain_task(src: "DataSpec", pcfg: dict[str, Any], path: str, model: str, width: float,
                   input_shape: list[int], source: str, record: dict[str, Any]) -> dict[str, Any]:
    """Pretrain one width on the source task and save its weights to ``path`` (a grid task)."""
    from . import backend

    t = time.perf_counter()
    backend.say(f"pretrain {model} x{width:g} on {source} ({pcfg['epochs']} epochs)")
    ds = src.load()
    r = run(ds, TrainConfig.from_dict(pcfg))
    save_pretrained(r.model, path, model_name=model, width=width, input_shape=tuple(input_shape),
                    n_classes=ds.n_classes, source=source, config=record)
    return {"width": width, "source_test_accuracy": r.reports["test"].average_accuracy,
            "seconds": time.perf_counter() - t, "reused": False}


def _finetune_task(data: "DataSpec", cfg: dict[str, Any], params: int, label: str) -> dict[str, Any]:
    """One finetuning run of the study (a grid task): its row, with the test WGA curve."""
    from . import backend

    c = TrainConfig.from_dict(cfg)
    backend.say(f"finetune x{c.width:g} ({params} params) with {label} balancing, seed {c.seed}")
    t = time.perf_counter()
    r = run(data.load(), c)
    last = r.history[-1]["test"]
    return {"selected_epoch": r.selected_epoch, "test_wga": r.reports["test"].worst_group_accuracy,
            "test_avg": r.reports["test"].average_accuracy, "test_wga_last": float(last["worst_group_accuracy"]),
            "test_avg_last": float(last["average_accuracy"]), "seconds": time.perf_counter() - t,
            **_test_wga_curve(r.history), **_train_curves(r.history)}


def run_scaling(cfg: ScalingConfig, *, data_dir: str | Path | None = None, weights_dir: str | Path | None = None,
                progress: Callable[[str], None] | None = None, backend: "Backend | None" = None) -> ScalingResult:
    """Run the whole study: every width's pretraining, then every (width, method, seed) finetune,
    as independent tasks on ``backend`` (default: one after another in this process).
    ``weights_dir`` keeps each width's pretrained weights (``<model>-w<width>.pt``) and reuses them
    when present with the same pretraining config; without it they go to the backend's work dir
    (``pretrained/``), else to a temporary folder."""
    from .backend import DataSpec, call, local, task_key

    backend = backend or local()
    say = progress or (lambda m: None)
    t0 = time.perf_counter()
    ddir = str(Path(data_dir).resolve()) if data_dir is not None else None
    assert cfg.pretrain_options is not None and cfg.dataset_options is not None  # __post_init__ makes them dicts
    src = DataSpec(cfg.pretrain_dataset, 0, ddir, dict(cfg.pretrain_options)) if cfg.pretrain_epochs else None
    specs = {s: DataSpec(cfg.dataset, s, ddir, dict(cfg.dataset_options)) for s in cfg.seeds}
    first = specs[cfg.seeds[0]].load()
    for s in cfg.seeds[1:]:  # every seed's data loads before any training (a missing file fails now)
        specs[s].load()
    input_shape = first.train.input_shape
    for w in cfg.widths:  # a width too large for memory is refused before any pretraining
        check_model_fits(cfg.train.model, input_shape, first.n_classes, w)
    if src is not None:
        src_shape = src.load().train.input_shape
        if src_shape != input_shape:
            raise ValueError(f"the pretraining data {cfg.pretrain_dataset!r} has inputs {src_shape}, the target "
                             f"{cfg.dataset!r} {input_shape}; pretrain on data of the same shape.")
    wdir = Path(weights_dir) if weights_dir is not None else (
        Path(backend.work_dir) / "pretrained" if backend.work_dir is not None else None)
    if wdir is not None:
        wdir.mkdir(parents=True, exist_ok=True)
    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="stratalab-scaling-")
    runs, pre = [], []
    try:
        inits: dict[float, str | None] = {w: None for w in cfg.widths}
        records: dict[float, Any] = {w: None for w in cfg.widths}
        todo = []
        for w in cfg.widths:
            if src is None:
                continue
            path = (wdir or Path(tmp.name)) / f"{cfg.train.model}-w{w:g}.pt"
            pcfg = cfg.pretrain_config(w)
            record = {"train": pcfg.to_dict(), "source_options": dict(cfg.pretrain_options)}
            inits[w], records[w] = str(path), record
            if path.is_file():  # reused only when source, its options and training all match
                from ..models import read_pretrained

                old = read_pretrained(path)
                if old.get("config") == record and old.get("source") == cfg.pretrain_dataset:
                    pre.append({"width": w, "reused": True})
                    continue
            todo.append((task_key(f"pretrain-w{w:g}", data=src.key(), record=record, path=str(path)),
                         (_pretrain_task, (src, pcfg.to_dict(), str(path), cfg.train.model, w, list(input_shape),
                                           cfg.pretrain_dataset, record))))
        if todo:
            for r in backend.map(call, todo, say, what="pretraining"):
                init = inits[r["width"]]
                assert init is not None  # set above for every width that is pretrained
                if not Path(init).is_file():  # e.g. a stored result whose weights file was deleted
                    raise RuntimeError(f"pretrained weights of width {r['width']:g} are missing after pretraining.")
                pre.append(r)
        pre.sort(key=lambda r: cfg.widths.index(r["width"]))
        tasks, rows = [], []
        for w in cfg.widths:
            params = n_params(build_model(cfg.train.model, input_shape, first.n_classes, width=w))
            for method in cfg.methods:
                for s in cfg.seeds:
                    tc = cfg.train_config(method, s, w, inits[w]).to_dict()
                    tasks.append((task_key(f"finetune-w{w:g}-{method}-seed{s}", data=specs[s].key(), cfg=tc,
                                           pretrained=records[w]),
                                  (_finetune_task, (specs[s], tc, params, LABELS[method]))))
                    rows.append({"width": w, "params": params, "method": method, "seed": s})
        for row, r in zip(rows, backend.map(call, tasks, say, what="finetuning runs")):
            runs.append({**row, **r})
    finally:
        tmp.cleanup()
    return ScalingResult(config=cfg, runs=runs, pretraining=pre, seconds=time.perf_counter() - t0)


def plot_scaling(result: ScalingResult, path: str | Path, *, last_epoch: bool = False) -> Path:
    """LaBonte et al.'s scaling figure: test worst-group accuracy against parameter count (log
    scale), one line per class-balancing method, mean over seeds with a +-1 std band."""
    from .._io import save_figure_atomic
    from ..report.plots import scaling_figure

    c = result.config
    title = (f"{c.train.model} finetuned on {c.dataset} ({len(c.seeds)} seeds, "
             f"{'last epoch' if last_epoch else 'selected by ' + c.train.select})")
    return save_figure_atomic(scaling_figure(result.table(), list(c.methods), title, last_epoch=last_epoch), path)


def plot_collapse(result: ScalingResult, path: str | Path, width: float | None = None) -> Path:
    """Test worst-group accuracy over finetuning epochs per class-balancing method (mean +- std over
    seeds), the figure where LaBonte et al. see upsampling and upweighting collapse. Runs with
    ``eval_train`` add a second panel: train worst-group accuracy, which reaches 100% when the
    repeated minority examples are memorised (the paper's mechanism)."""
    from matplotlib.figure import Figure

    from .._io import save_figure_atomic

    cur = result.curves(width)
    with_train = "train_wga_mean" in cur
    fig = Figure(figsize=(11 if with_train else 6, 4))
    axes = fig.subplots(1, 2 if with_train else 1, squeeze=False)[0]
    for method in result.config.methods:
        sub = cur[cur["method"] == method]
        axes[0].plot(sub["epoch"], 100 * sub["wga_mean"], color=_COLOURS[method], label=LABELS[method])
        axes[0].fill_between(sub["epoch"], 100 * (sub["wga_mean"] - sub["wga_std"]),
                             100 * (sub["wga_mean"] + sub["wga_std"]), color=_COLOURS[method], alpha=0.15)
        if with_train:
            axes[1].plot(sub["epoch"], 100 * sub["train_wga_mean"], color=_COLOURS[method], label=LABELS[method])
    w = max(result.config.widths) if width is None else width
    for ax, what in zip(axes, ("test", "train")):
        ax.set_xlabel("finetuning epoch")
        ax.set_ylabel(f"{what} worst-group accuracy (%)")
    axes[0].set_title(f"WGA over epochs, {result.config.train.model} x{w:g} on {result.config.dataset}", fontsize=9)
    if with_train:
        axes[1].set_title("train WGA (no augmentation): memorised at 100%", fontsize=9)
    axes[0].legend(title="class balancing", fontsize=8)
    fig.tight_layout()
    return save_figure_atomic(fig, path)




# ---------------------------------------------------------------------- the `run scaling` experiment
_BALANCING_NAMES = {"erm": "none (ERM)", "subsetting": "subsetting", "upsampling": "upsampling",
                    "upweighting": "upweighting", "mixture": "mixture"}


class ScalingExperiment(StudyExperiment):
    """``stratalab run scaling``: LaBonte et al.'s model scaling x class balancing. Invocation:
    ``config`` (:class:`ScalingConfig` fields; its target data set, options and seeds are the
    invocation's). Outputs it reads: ``weights_dir`` (keep and reuse each width's pretrained weights)."""

    command = "run scaling"
    result_keys = ("table", "runs", "pretraining")
    recognise = frozenset({"table", "runs", "pretraining"})
    uses_backend = True

    def run(self, inv: Invocation, *, backend: Any = None, progress: Callable[[str], None] | None = None,
            outputs: dict[str, Path] | None = None) -> Outcome:
        cfg = ScalingConfig.from_dict(self.study_config(inv))
        res = run_scaling(cfg, data_dir=inv.data_dir, weights_dir=(outputs or {}).get("weights_dir"), backend=backend,
                          progress=progress)
        recorded = replace(inv, configs={"config": cfg.to_dict()},
                           backend=backend.recorded() if backend is not None else inv.backend)
        return Outcome({"invocation": recorded.to_dict(), **res.to_dict()}, res)

    def records(self, raw: dict[str, Any]) -> list[Row]:
        out: list[Row] = []
        for r in field_of(raw, "runs", list):
            setting = f"width={num(r['width'], 'runs[].width'):g}"
            for key in ("test_wga", "test_avg", "test_wga_last", "test_avg_last"):
                v = num(r.get(key), f"runs[].{key}")
                if v is not None:
                    out.append((str(r["method"]), setting, seed_of(r), METRIC_ALIASES[key], v, None))
        return out

    def method_names(self, raw: dict[str, Any]) -> dict[str, str]:
        return {str(r["method"]): _BALANCING_NAMES.get(str(r["method"]), str(r["method"])) for r in field_of(raw, "runs", list)}

    def labels_used(self, raw: dict[str, Any]) -> dict[str, str]:
        from ..train.registry import METHODS

        cfg = raw.get("config") or {}
        select = str(cfg.get("select") or (cfg.get("train") or {}).get("select", "val_wga"))  # flat before composition
        return {m: (f"group labels train / val: {METHODS[m].group_labels(select)} (selected by {select})"
                    if m in METHODS else "unknown") for m in self.method_names(raw)}


register(ScalingExperiment())
