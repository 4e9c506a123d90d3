"""The subgroup study of Chiu, Chen and Ma, "Better May Not Be Fairer" (CIFAR-10-B / CIFAR-100-B).

Train a CIFAR model with each data augmentation (Standard = flip + crop, Mixup, Cutout, CutMix,
AutoAugment) and seed; audit it on the colour subgroups of the test set: average accuracy,
WeightedStd (eq. 5), MacroStd (eq. 6) and the worst (class, colour) subgroup (Tables 1-2); the same
on corrupted copies of the test set (CIFAR-10-C families x severities, Fig. 7); per class, class
accuracy beside its worst colour subgroup (Fig. 1 / 5); and the correlation of accuracy with
MacroStd over all runs. Every (augmentation, seed) is one grid task (local or Ray).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from .._config import config_to_dict, split_flat
from .._validation import check_unique
from ..data.core import Split
from ..metrics import group_report
from ..report.results import BadResult, GroupTable, Row, field_of, num, seed_of
from ..train import TrainConfig, predict, run
from .registry import Invocation, Outcome, StudyExperiment, register

if TYPE_CHECKING:
    from .backend import Backend, DataSpec

# the paper's rows: each on top of the standard flip + crop
ROWS = {"flip_crop": "Standard", "mixup": "Mixup", "cutout": "Cutout", "cutmix": "CutMix", "autoaugment": "AutoAug",
        "flowaug": "FlowAug"}
# FlowAug rows by objective, in the paper's Tables 1-2 wording
FLOWAUG_ROWS = {"gauss": "FlowAug (Trunc Gaussian on z)", "mix": "FlowAug (Mix z)",
                "gauss+std": "FlowAug (Trunc Gaussian on z + Std)", "mix+std": "FlowAug (Mix z + Std)",
                "gauss+mix": "FlowAug (Trunc Gaussian + Mix z)", "gauss+mix+std": "FlowAug (Trunc Gaussian + Std + Mix z)"}
METRICS = ("accuracy", "weighted_std", "macro_std", "worst_group_accuracy")


def _cpu_recipe() -> TrainConfig:
    """This project's CPU recipe for ``cifarnet`` (BENCHMARKS.md): 20 epochs of SGD 0.05 with
    momentum 0.9, weight decay 5e-4, cosine schedule, batches of 256, selected on val average; in
    bf16 where the hardware computes it natively (measured on this CPU: 1.6x faster per run at the
    same accuracy, BENCHMARKS.md), else fp32."""
    return TrainConfig(model="cifarnet", epochs=20, batch_size=256, optimizer="sgd", lr=0.05, momentum=0.9,
                       weight_decay=5e-4, schedule="cosine", select="val_avg", precision="auto")


@dataclass
class CifarBConfig:
    """Settings of the study; round-trips through :meth:`to_dict` / :meth:`from_dict`.

    The training recipe defaults are this project's CPU recipe for ``cifarnet`` (BENCHMARKS.md);
    the paper trains ResNet-18 for 250 epochs with SGD 0.1, weight decay 5e-4. ``corruptions``:
    names of :data:`stratalab.augment.corruptions.CORRUPTIONS` (empty: clean test set only),
    each at ``severities``, on ``n_corrupt`` test images drawn at random (seed 0; None: all).
    The ``flowaug`` row trains with FlowAug on the flow at ``flow`` (``stratalab flow train``) with
    ``flowaug_objective`` (eqs. 2-4), ``flowaug_std_weight`` (lambda / lambda2) and
    ``flowaug_mix_weight`` (lambda1).
    """

    dataset: str = "cifar10-b"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    augmentations: tuple[str, ...] = tuple(ROWS)
    seeds: tuple[int, ...] = (0,)
    train: TrainConfig = field(default_factory=_cpu_recipe)
    corruptions: tuple[str, ...] = ()
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    n_corrupt: int | None = None
    flow: str | None = None
    flowaug_objective: str = "gauss+std"
    flowaug_std_weight: float = 0.1
    flowaug_mix_weight: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig.from_dict({**_cpu_recipe().to_dict(), **self.train})
        self.augmentations = tuple(self.augmentations)
        self.seeds = tuple(int(s) for s in self.seeds)
        self.corruptions = tuple(self.corruptions)
        self.severities = tuple(int(s) for s in self.severities)
        self.dataset_options = dict(self.dataset_options or {})
        bad = [a for a in self.augmentations if a not in ROWS]
        if bad or not self.augmentations:
            raise ValueError(f"unknown augmentation {bad[0] if bad else ''!r}; choose from {', '.join(ROWS)} "
                             "(flip_crop = the paper's Standard).")
        if not self.seeds:
            raise ValueError("give at least one seed.")
        for name in ("augmentations", "seeds", "corruptions", "severities"):
            check_unique(getattr(self, name), name)
        from ..augment.corruptions import CORRUPTIONS

        unknown = [c for c in self.corruptions if c not in CORRUPTIONS]
        if unknown:
            raise ValueError(f"unknown corruption {unknown[0]!r}; choose from {', '.join(CORRUPTIONS)}.")
        if any(s not in range(1, 6) for s in self.severities) or not self.severities:
            raise ValueError(f"severities must be in 1..5, got {self.severities}.")
        if self.n_corrupt is not None and (int(self.n_corrupt) != self.n_corrupt or self.n_corrupt < 1):
            raise ValueError(f"n_corrupt must be an integer >= 1 (or None: the whole test set), got {self.n_corrupt!r}.")
        if "flowaug" in self.augmentations:
            if not self.flow:
                raise ValueError("the flowaug row needs flow=PATH (--flow), a flow written by `stratalab flow train`.")
            if not Path(self.flow).is_file():
                raise FileNotFoundError(f"no flow file at {self.flow}; train one with `stratalab flow train -o {Path(self.flow).name}`.")
            self.flow = str(Path(self.flow).resolve())
        elif self.flow:
            raise ValueError(f"a flow ({self.flow}) is used only by the flowaug row; add flowaug to the augmentations "
                             "or leave the flow out.")
        for a in self.augmentations:  # every run's settings are checked before the first one starts
            self.train_config(a, self.seeds[0])

    def row_name(self, augment: str) -> str:
        return FLOWAUG_ROWS[self.flowaug_objective] if augment == "flowaug" else ROWS[augment]

    def train_config(self, augment: str, seed: int) -> TrainConfig:
        """One row's run: ``train`` with the row's augmentation and the seed (and FlowAug's flow and
        objective for the flowaug row)."""
        flowaug = ({"flow": self.flow, "flowaug_objective": self.flowaug_objective,
                    "flowaug_std_weight": self.flowaug_std_weight, "flowaug_mix_weight": self.flowaug_mix_weight}
                   if augment == "flowaug" else {"flow": None})
        return replace(self.train, method="erm", augment=augment, seed=seed, **flowaug)

    def run_key(self, augment: str) -> dict[str, Any]:
        """What one (augmentation, seed) run depends on: the settings without the other rows and
        seeds (so a grid can grow and keep its finished runs), the flow's bytes for FlowAug."""
        d = {k: v for k, v in self.to_dict().items() if k not in ("augmentations", "seeds")}
        flow_keys = ("flow", "flowaug_objective", "flowaug_std_weight", "flowaug_mix_weight")
        d = {k: v for k, v in d.items() if k not in flow_keys}
        if augment == "flowaug":
            from .._io import file_sha256

            d.update({k: getattr(self, k) for k in flow_keys[1:]})
            d["flow_sha256"] = file_sha256(str(self.flow))
        return d

    def to_dict(self) -> dict[str, Any]:
        d = config_to_dict(self)
        d["train"] = self.train.to_dict()
        return d

    @classmethod
    def of(cls, **settings: Any) -> "CifarBConfig":
        """A config from flat settings: :class:`TrainConfig` fields (``model``, ``epochs``, ``lr``,
        ``weight_decay``, ...) go to ``train`` (over the CPU recipe), the others are the study's own
        (FlowAug's settings among them: they apply to the flowaug row only)."""
        train, own = split_flat(settings, _TRAIN_FIELDS, _OWN_FIELDS, "cifar-b config")
        return cls(train=TrainConfig.from_dict({**_cpu_recipe().to_dict(), **train}), **own)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CifarBConfig":
        """The inverse of :meth:`to_dict`; flat configs of earlier files read the same."""
        if not isinstance(d, dict):
            raise ValueError(f"cifar-b config must be a mapping of settings, got {type(d).__name__}.")
        train = d.get("train")
        if "precision" not in d and not (isinstance(train, dict) and "precision" in train):
            d = {**d, "precision": "fp32"}  # files from before the bf16 default ran in fp32
        return cls.of(**d)


_TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
_OWN_FIELDS = {f.name for f in fields(CifarBConfig)} - {"train"}


def _summary(rep: Any) -> dict[str, Any]:
    wc, wg = rep.worst_group
    return {"accuracy": rep.average_accuracy, "weighted_std": rep.weighted_std, "macro_std": rep.macro_std,
            "worst_group_accuracy": rep.worst_group_accuracy, "worst_group": [int(wc), int(wg)]}


_CORRUPTED: "OrderedDict[tuple[Any, ...], np.ndarray]" = OrderedDict()
_CORRUPTED_BYTES = 512 * 2**20  # the corrupted copies one process keeps (1,000 images x 45 copies: 138 MB)


def corrupted_images(images: np.ndarray, name: str, severity: int, key: tuple[Any, ...]) -> np.ndarray:
    """``images`` (uint8, (n, 3, H, W)) under corruption ``name`` at ``severity``, as uint8 (n, 3, H,
    W). A process keeps the copies it made, oldest dropped first beyond 512 MB, so the runs of a
    grid in one process (every augmentation and seed) meet the same copies, made once."""
    from ..augment.corruptions import corrupt

    k = key + (name, severity)
    if k in _CORRUPTED:
        _CORRUPTED.move_to_end(k)
        return _CORRUPTED[k]
    out = corrupt(np.ascontiguousarray(images.transpose(0, 2, 3, 1)), name, severity, seed=severity).transpose(0, 3, 1, 2)
    _CORRUPTED[k] = out
    while len(_CORRUPTED) > 1 and sum(a.nbytes for a in _CORRUPTED.values()) > _CORRUPTED_BYTES:
        _CORRUPTED.popitem(last=False)
    return out


def corrupt_subset(n_test: int, n: int) -> np.ndarray:
    """The test images audited under corruption: all of them, or ``n`` drawn without replacement by
    a fixed seed (0) and sorted, the same for every run. Not the first ``n``: test sets are often
    sorted by class (the CIFAR-10 JPEG copy is), and the first 500 images would all be airplanes."""
    if n >= n_test:
        return np.arange(n_test)
    return np.sort(np.random.default_rng(0).choice(n_test, n, replace=False))


def cifar_b_task(data: "DataSpec", cfg: dict[str, Any], augment: str, seed: int,
                 flow_sha256: str | None = None) -> dict[str, Any]:
    """One (augmentation, seed) run of the study (a grid task): train, audit on the clean and the
    corrupted test sets. Returns JSON-ready rows. A FlowAug run checks that the flow file still has
    the bytes (``flow_sha256``) its task key was made from."""
    from . import backend

    c = CifarBConfig.from_dict(cfg)
    if augment == "flowaug" and flow_sha256 is not None:
        from .._io import file_sha256

        if file_sha256(str(c.flow)) != flow_sha256:
            raise ValueError(f"the flow file {c.flow} changed after the grid started; run the command again.")
    ds = data.load()
    t = time.perf_counter()
    backend.say(f"{c.row_name(augment)} (seed {seed}): training {c.train.model} x{c.train.width:g} for {c.train.epochs} epochs")
    t_epoch = [time.perf_counter()]

    def epoch_done(stage: str, epoch: int, total: int, row: dict[str, Any]) -> None:
        now = time.perf_counter()
        val = row.get("val", {}).get("average_accuracy")
        backend.say(f"{c.row_name(augment)} (seed {seed}): epoch {epoch}/{total}, train loss {row['train_loss']:.3f}"
                    + (f", val accuracy {100 * val:.1f}%" if val is not None else "") + f" ({now - t_epoch[0]:.0f} s)")
        t_epoch[0] = now

    r = run(ds, c.train_config(augment, seed), progress=epoch_done)
    out: dict[str, Any] = {"augment": augment, "seed": seed, "selected_epoch": r.selected_epoch,
                           **({"flow_sha256": flow_sha256, "flowaug_failed": r.history[-1].get("flowaug_failed"),
                               "flowaug_decoded": r.history[-1].get("flowaug_decoded")} if augment == "flowaug" else {}),
                           "train_seconds": time.perf_counter() - t, "clean": _summary(r.reports["test"]),
                           "classes": r.reports["test"].class_table[["class_name", "accuracy", "worst_group",
                                                                      "worst_group_accuracy"]].to_dict(orient="records"),
                           "corrupted": []}
    test = ds.test
    if c.corruptions:
        n = len(test) if c.n_corrupt is None else min(c.n_corrupt, len(test))
        idx = corrupt_subset(len(test), n)
        sub = test.subset(idx)
        raw = np.asarray(test.x[idx])
        if raw.dtype != np.uint8 or raw.ndim != 4 or raw.shape[1] != 3:
            raise ValueError(f"corruptions need uint8 RGB test images (n, 3, H, W); {ds.name!r} has {raw.dtype} {raw.shape}.")
        t = time.perf_counter()
        for name in c.corruptions:
            for sev in c.severities:
                backend.say(f"{c.row_name(augment)} (seed {seed}): {name} severity {sev} on {n} test images")
                xc = corrupted_images(raw, name, sev, (repr(data.key()), n))
                proba = predict(r.model, Split(x=xc, y=sub.y, g=sub.g, loader=sub.loader), precision=r.config.precision,
                                tta=r.config.tta)
                rep = group_report(sub.y, proba.argmax(1), sub.g)
                out["corrupted"].append({"corruption": name, "severity": sev, **_summary(rep)})
        out["corrupt_seconds"] = time.perf_counter() - t
    return out


@dataclass
class CifarBResult:
    config: CifarBConfig
    runs: list[dict[str, Any]]
    class_names: list[str]
    group_names: list[str]
    seconds: float

    def rows(self) -> pd.DataFrame:
        """One row per run: clean metrics, and the mean over every (corruption, severity)."""
        out = []
        for r in self.runs:
            row = {"augment": r["augment"], "seed": r["seed"], **{m: r["clean"][m] for m in METRICS}}
            if r["corrupted"]:
                cor = pd.DataFrame(r["corrupted"])
                row.update({f"corrupted_{m}": float(cor[m].mean()) for m in METRICS})
            out.append(row)
        return pd.DataFrame(out)

    def table(self) -> pd.DataFrame:
        """The paper's Tables 1-2 layout: per augmentation, mean and std (ddof 0) over seeds of
        accuracy, WeightedStd and MacroStd (and the worst subgroup), clean and corrupted."""
        df = self.rows()
        cols = [c for c in df.columns if c not in ("augment", "seed")]
        g = df.groupby("augment", sort=False)
        out = g[cols].agg(["mean", lambda v: float(np.std(v))])
        out.columns = [f"{c}_{'mean' if s == 'mean' else 'std'}" for c, s in out.columns]
        out.insert(0, "seeds", g.size())
        out.insert(0, "name", [self.config.row_name(a) for a in out.index])
        return out.reset_index()

    def severity_curves(self) -> pd.DataFrame:
        """Fig. 7: per augmentation and severity, accuracy and MacroStd averaged over corruptions and seeds."""
        rows = [{"augment": r["augment"], "seed": r["seed"], **c} for r in self.runs for c in r["corrupted"]]
        if not rows:
            return pd.DataFrame(columns=["augment", "severity", "accuracy", "macro_std"])
        df = pd.DataFrame(rows)
        return df.groupby(["augment", "severity"], sort=False)[["accuracy", "macro_std", "weighted_std"]].mean().reset_index()

    def correlation(self) -> dict[str, float]:
        """Pearson and Spearman correlation of test accuracy with MacroStd over every run (the
        paper: better models are not fairer, i.e. no strong negative correlation)."""
        from scipy import stats

        df = self.rows()
        if len(df) < 3 or df["accuracy"].nunique() < 2 or df["macro_std"].nunique() < 2:
            return {"pearson": float("nan"), "spearman": float("nan"), "runs": len(df)}
        return {"pearson": float(stats.pearsonr(df["accuracy"], df["macro_std"])[0]),
                "spearman": float(stats.spearmanr(df["accuracy"], df["macro_std"])[0]), "runs": len(df)}

    def to_dict(self) -> dict[str, Any]:
        corr = self.correlation()
        return {"config": self.config.to_dict(), "seconds": self.seconds, "class_names": self.class_names,
                "group_names": self.group_names, "table": self.table().to_dict(orient="records"),
                "severity_curves": self.severity_curves().to_dict(orient="records"),
                "correlation": {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in corr.items()},
                "runs": self.runs}


def run_cifar_b(cfg: CifarBConfig, *, data_dir: str | Path | None = None, backend: "Backend | None" = None,
                progress: Callable[[str], None] | None = None) -> CifarBResult:
    """Every (augmentation, seed) of ``cfg`` as a grid task on ``backend`` (default: this process)."""
    from .backend import DataSpec, local, task_key

    backend = backend or local()
    t0 = time.perf_counter()
    ddir = str(Path(data_dir).resolve()) if data_dir is not None else None
    specs = {s: DataSpec(cfg.dataset, s, ddir, dict(cfg.dataset_options)) for s in cfg.seeds}
    if "flowaug" in cfg.augmentations:  # a damaged or pickled flow file fails before the data are decoded
        from ..models.flow import load_flow

        load_flow(str(cfg.flow))
    first = specs[cfg.seeds[0]].load()  # a missing file fails here, before any training
    if first.test.g is None:
        raise ValueError(f"{cfg.dataset!r} has no test subgroups; the study needs cifar10-b, cifar100-b or a data set "
                         "with test groups.")
    shape = first.train.input_shape
    if len(shape) != 3:  # the augmentations and corruptions act on pixels (it failed once training had started)
        raise ValueError(f"run cifar-b needs image data (C, H, W): its augmentations and corruptions act on pixels, "
                         f"and {first.name}'s inputs have shape {shape}; use cifar10-b, cifar100-b or an image data set.")
    from ..models.build import check_model_fits

    check_model_fits(cfg.train.model, shape, first.n_classes, cfg.train.width)  # a model that cannot take these images fails now
    if "flowaug" in cfg.augmentations:  # a wrong or foreign flow file fails here, not after the other rows trained
        from ..augment.pipeline import load_flow_for

        load_flow_for(str(cfg.flow), first.train)
    tasks = []
    for a in cfg.augmentations:
        for s in cfg.seeds:
            run_key = cfg.run_key(a)
            key = task_key(f"cifar-b-{a}-seed{s}", data=specs[s].key(), config=run_key, augment=a, seed=s)
            tasks.append((key, (specs[s], cfg.to_dict(), a, s, run_key.get("flow_sha256"))))
    runs = backend.map(cifar_b_task, tasks, progress, what="CIFAR-B runs")
    return CifarBResult(config=cfg, runs=runs, class_names=list(first.class_names),
                        group_names=list(first.group_names or []), seconds=time.perf_counter() - t0)


def plot_class_vs_worst(result: CifarBResult, path: str | Path) -> Path:
    """Fig. 1 / 5 of the paper: per class, test accuracy beside the accuracy of its worst colour
    subgroup, for each augmentation (mean over seeds)."""
    from matplotlib.figure import Figure

    from .._io import save_figure_atomic

    rows = [{"augment": r["augment"], "class": c["class_name"], "accuracy": c["accuracy"],
             "worst": c["worst_group_accuracy"]} for r in result.runs for c in r["classes"]]
    df = pd.DataFrame(rows).groupby(["augment", "class"], sort=False)[["accuracy", "worst"]].mean().reset_index()
    augs = list(dict.fromkeys(df["augment"]))
    classes = list(dict.fromkeys(df["class"]))
    fig = Figure(figsize=(max(6.0, 0.55 * len(classes) + 2), 2.6 * len(augs)), dpi=110)
    axes = fig.subplots(len(augs), 1, squeeze=False)
    x = np.arange(len(classes))
    for ax, a in zip(axes[:, 0], augs):
        sub = df[df["augment"] == a].set_index("class").loc[classes]
        ax.bar(x - 0.2, 100 * sub["accuracy"], 0.4, label="class accuracy", color="tab:gray")
        ax.bar(x + 0.2, 100 * sub["worst"], 0.4, label="worst colour subgroup", color="tab:red")
        ax.set_xticks(x)
        ax.set_xticklabels(classes, rotation=45 if len(classes) > 10 else 0, ha="right" if len(classes) > 10 else "center",
                           fontsize=7)
        ax.set_ylim(0, 105)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{result.config.row_name(a)}: class vs worst colour subgroup ({result.config.dataset})", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return save_figure_atomic(fig, path)


# ---------------------------------------------------------------------- the `run cifar-b` experiment
_METRICS = {"accuracy": "test_average", "weighted_std": "test_weighted_std", "macro_std": "test_macro_std",
            "worst_group_accuracy": "test_wga"}
_NAMES = {"flip_crop": "Standard (flip + crop)", "mixup": "Mixup", "cutout": "Cutout", "cutmix": "CutMix",
          "autoaugment": "AutoAugment", "flowaug": "FlowAug"}


def _row_name(raw: dict[str, Any], augment: str) -> str:
    """The row's name; FlowAug's says which objective (eqs. 2-4) its config used."""
    if augment == "flowaug":
        cfg: dict[str, Any] = raw["config"] if isinstance(raw.get("config"), dict) else {}
        return FLOWAUG_ROWS.get(str(cfg.get("flowaug_objective", "gauss+std")), "FlowAug")
    return _NAMES.get(augment, augment)


class CifarBExperiment(StudyExperiment):
    """``stratalab run cifar-b``: Chiu, Chen and Ma's subgroup study. Invocation: ``config``
    (:class:`CifarBConfig` fields; its data set, options and seeds are the invocation's)."""

    command = "run cifar-b"
    result_keys = ("table", "runs", "severity_curves")
    recognise = frozenset({"table", "runs", "severity_curves"})
    uses_backend = True

    def run(self, inv: Invocation, *, backend: Any = None, progress: Callable[[str], None] | None = None,
            outputs: dict[str, Path] | None = None) -> Outcome:
        cfg = CifarBConfig.from_dict(self.study_config(inv))
        res = run_cifar_b(cfg, data_dir=inv.data_dir, backend=backend, progress=progress)
        recorded = replace(inv, configs={"config": cfg.to_dict()},
                           backend=backend.recorded() if backend is not None else inv.backend)
        return Outcome({"invocation": recorded.to_dict(), **res.to_dict()}, res)

    def records(self, raw: dict[str, Any]) -> list[Row]:
        """Per (augmentation, seed) the clean test metrics on the colour subgroups and, with
        corruptions, their mean over every (corruption, severity) as ``corrupted_*``."""
        out: list[Row] = []
        for r in field_of(raw, "runs", list):
            m, seed = str(r["augment"]), seed_of(r)
            clean = r.get("clean")
            if not isinstance(clean, dict):
                raise BadResult("runs[].clean must be a dict of metrics")
            for key, name in _METRICS.items():
                v = num(clean.get(key), f"runs[].clean.{key}")
                if v is not None:
                    out.append((m, "", seed, name, v, None))
            for key, name in _METRICS.items():
                vals = [num(c.get(key), f"runs[].corrupted[].{key}") for c in r.get("corrupted") or []]
                present = [v for v in vals if v is not None]
                if present:
                    out.append((m, "", seed, f"corrupted_{name}", float(sum(present) / len(present)), None))
        return out

    def group_tables(self, raw: dict[str, Any]) -> list[GroupTable]:
        """Per augmentation (first seed): each class's accuracy beside its worst colour subgroup;
        the worst row is the class whose worst subgroup is lowest."""
        out, seen = [], set()
        for r in field_of(raw, "runs", list):
            if r["augment"] in seen:
                continue
            seen.add(r["augment"])
            rows = [{"class": str(c["class_name"]), "accuracy": num(c["accuracy"], "classes[].accuracy"),
                     "worst subgroup": str(c.get("worst_group", "")),
                     "worst subgroup accuracy": num(c["worst_group_accuracy"], "classes[].worst_group_accuracy")}
                    for c in r.get("classes") or []]
            if not rows:
                continue
            df = pd.DataFrame(rows)
            worst = int(df["worst subgroup accuracy"].astype(float).idxmin())
            out.append(GroupTable(f"{_row_name(raw, str(r['augment']))}, seed {r['seed']}: class accuracy and "
                                  "its worst colour subgroup (Chiu et al. Fig. 1/5)", df, worst, None))
        return out

    def method_names(self, raw: dict[str, Any]) -> dict[str, str]:
        return {str(r["augment"]): _row_name(raw, str(r["augment"])) for r in field_of(raw, "runs", list)}

    def labels_used(self, raw: dict[str, Any]) -> dict[str, str]:
        return {m: "class labels only; colour groups used only to audit the test set" for m in self.method_names(raw)}


register(CifarBExperiment())
