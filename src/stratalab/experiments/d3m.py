"""D3M and AUTO-D3M end to end, with the baselines of D3M Table 1 and the sweep of its Fig. 2
(Jain, Hamidieh, Georgiev et al. 2024, "Data Debiasing with Datamodels", Sec. 4-5).

Per seed: ERM -> TRAK matrix of val against train (one model, or an ensemble of M models each
trained on a random alpha-subset) -> group alignment -> remove examples -> retrain from scratch;
beside it JTT, DFR, RWG, SUBG and Group DRO through the one training loop; and the curve of val
worst-group accuracy against the number of examples removed (D3M order, random order, balancing of
the majority group).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..attribution import ensemble_scores, random_subsets
from ..data.core import Dataset
from ..debias import alignment_by_cell, auto_d3m_groups, d3m_keep, group_alignment
from ..debias.d3m import THRESHOLDS, WEIGHTINGS
from ..metrics import GroupReport, group_report
from ..models import build_model, embed
from ..train import TrainConfig, fit, predict, run
from ..train.registry import METHODS
from ..train.sampling import examples_left_out
from .._config import config_from_dict, config_to_dict

# Table 1 rows in the paper's order. The baselines' names and group-label columns come from the
# method registry (ERM selected on val average accuracy, the baselines on val worst-group accuracy);
# D3M and AUTO-D3M are this pipeline's own rows.
BASELINES = ("jtt", "dfr", "rwg", "subg", "gdro")
_ORDER = ("erm", "auto-d3m", "jtt", "dfr", "d3m", "rwg", "subg", "gdro")
_OWN_ROWS = {"erm": ("ERM", METHODS["erm"].group_labels("val_avg")), "auto-d3m": ("AUTO-D3M", "no / no"),
             "d3m": ("D3M", "no / yes")}
TABLE_METHODS: dict[str, tuple[str, str]] = {
    m: _OWN_ROWS[m] if m in _OWN_ROWS else (METHODS[m].title, METHODS[m].group_labels("val_wga")) for m in _ORDER
}
TABLE_METHODS["dfr"] = ("DFR*", TABLE_METHODS["dfr"][1])  # the paper's star: DFR fits on the val groups
REMOVALS = ("negative", "search")
SWEEP_CURVES = ("d3m", "random", "balance")


@dataclass
class D3MConfig:
    """The D3M side of a run (the training side is a :class:`~stratalab.train.TrainConfig`).

    ``n_models``: TRAK ensemble size M; 1 uses the ERM base model itself, M > 1 trains M models,
    each on a random ``alpha`` subset of train (the paper: M = 100, alpha = 0.5). ``removal``:
    "negative" drops every example with A_i < 0 (the paper's default), "search" picks k on val
    worst-group accuracy (D3M) or on the worst pseudo-group (AUTO-D3M, which uses no group label)
    over ``search_points`` values of k from 0 to twice the heuristic's (or the sweep's range), plus
    the heuristic's. ``sweep_points`` > 0 draws Fig. 2 with that many values of k per curve.
    """

    methods: tuple[str, ...] = tuple(TABLE_METHODS)
    proj_dim: int = 512
    trak_params: str | None = None
    n_models: int = 1
    alpha: float = 0.5
    beta: float = 1.0
    weighting: str = "softmax"
    removal: str = "negative"
    fraction: float = 0.35
    threshold: str = "fraction"
    normalize: bool = True
    sweep_points: int = 0
    search_points: int = 5

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        unknown = [m for m in self.methods if m not in TABLE_METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown method {unknown[0] if unknown else ''!r}; choose from {', '.join(TABLE_METHODS)}.")
        if self.proj_dim < 1 or self.n_models < 1:
            raise ValueError("proj_dim and n_models must be >= 1.")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}.")
        if self.trak_params not in (None, "head"):
            raise ValueError(f"trak_params must be None (all parameters) or 'head', got {self.trak_params!r}.")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}; got {self.weighting!r}.")
        if self.threshold not in THRESHOLDS:
            raise ValueError(f"threshold must be one of {', '.join(THRESHOLDS)}; got {self.threshold!r}.")
        if self.removal not in REMOVALS:
            raise ValueError(f"removal must be one of {', '.join(REMOVALS)}; got {self.removal!r}.")
        if self.sweep_points < 0 or self.search_points < 2:
            raise ValueError("sweep_points must be >= 0 and search_points >= 2 (values of k tried by removal='search').")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "D3MConfig":
        return config_from_dict(cls, d, "D3M config")


@dataclass
class D3MResult:
    """One D3M or AUTO-D3M run: the alignment score of every train example and what was removed."""

    mode: str
    alignment: np.ndarray
    order: np.ndarray  # train indices by alignment, most harmful first (the removal order)
    n_removed: int  # the first n_removed of ``order`` were removed
    heuristic_k: int  # examples with A_i < 0
    val_groups: np.ndarray  # the val groups the alignment used (true, or pseudo-groups)
    search: list[dict[str, float]] = field(default_factory=list)  # (k, val metric) when removal="search"

    @property
    def removed(self) -> np.ndarray:
        """Indices (into train) of the removed examples, most harmful first."""
        return self.order[:self.n_removed]

    def removed_table(self, ds: Dataset) -> Any:
        """The removed training examples, most harmful first: index, alignment, class, group."""
        import pandas as pd

        idx = self.removed
        return pd.DataFrame({"train_index": idx, "alignment": self.alignment[idx], "class": ds.train.y[idx],
                             "group": ds.train.g[idx] if ds.train.g is not None else -1})

    def cells(self, ds: Dataset) -> Any:
        """D3M Fig. 4: train (class, group) cells by mean alignment, most negative first (None without train groups)."""
        if ds.train.g is None:
            return None
        return alignment_by_cell(self.alignment, ds.train.y, ds.train.g, class_names=ds.class_names,
                                 attribute_names=ds.group_names)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "n_removed": self.n_removed, "heuristic_k": self.heuristic_k, "search": self.search}


@dataclass
class SeedResult:
    """Everything one seed produced."""

    seed: int
    reports: dict[str, dict[str, GroupReport]]  # method -> split -> report
    n_removed: dict[str, int]  # train examples the method leaves out (D3M: k; SUBG: its subsampling)
    d3m: dict[str, D3MResult]
    sweep: list[dict[str, Any]]
    seconds: dict[str, float]

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for m, reps in self.reports.items():
            name, info = TABLE_METHODS[m]
            out.append({"seed": self.seed, "method": m, "name": name, "group_info": info,
                        "test_wga": reps["test"].worst_group_accuracy, "test_balanced": reps["test"].balanced_accuracy,
                        "test_average": reps["test"].average_accuracy, "val_wga": reps["val"].worst_group_accuracy,
                        "n_removed": self.n_removed[m]})
        return out


@dataclass
class D3MTable:
    """D3M Table 1 over seeds (mean and std), the Fig. 2 sweep, and the per-seed results."""

    dataset: str
    config: TrainConfig
    d3m_config: D3MConfig
    seeds: list[SeedResult]

    def rows(self) -> Any:
        import pandas as pd

        return pd.DataFrame([r for s in self.seeds for r in s.rows()])

    def summary(self) -> Any:
        """One row per method in Table 1's order: mean and std over seeds of test worst-group and
        balanced accuracy (fractions), the group information each used, and examples removed."""
        df = self.rows()
        order = [m for m in TABLE_METHODS if m in set(df["method"])]
        g = df.groupby("method")
        out = g.agg(name=("name", "first"), group_info=("group_info", "first"), seeds=("seed", "size"),
                    wga_mean=("test_wga", "mean"), wga_std=("test_wga", lambda v: float(np.std(v))),
                    balanced_mean=("test_balanced", "mean"), balanced_std=("test_balanced", lambda v: float(np.std(v))),
                    removed_mean=("n_removed", "mean"))
        return out.loc[order].reset_index()

    def sweep(self) -> Any:
        """Every retrain of the Fig. 2 sweep: one row per (seed, curve, k). Each seed has its own
        values of k (its heuristic k and its group sizes differ), so average with :meth:`sweep_mean`."""
        import pandas as pd

        return pd.DataFrame([r for s in self.seeds for r in s.sweep])

    def sweep_mean(self) -> Any:
        """Fig. 2 averaged over seeds on a common grid of k.

        Seeds remove different numbers of examples, so a plain group-by on k would give one row per
        seed. Here every (seed, curve) series is linearly interpolated (``numpy.interp``) on one grid
        of ``P`` evenly spaced values of k from 0 to the largest k that every seed of the curve
        reached (``P`` = the most points any series has); the mean and std (ddof 0) over seeds are
        taken at each grid point. Columns: curve, k, val_wga_mean, val_wga_std, seeds.
        """
        import pandas as pd

        df = self.sweep()
        cols = ["curve", "k", "val_wga_mean", "val_wga_std", "seeds"]
        if df.empty:
            return pd.DataFrame(columns=cols)
        series = {key: sub.sort_values("k") for key, sub in df.groupby(["curve", "seed"])}
        points = max(len(s) for s in series.values())
        out = []
        for curve in [c for c in SWEEP_CURVES if c in set(df["curve"])]:
            mine = {seed: s for (c, seed), s in series.items() if c == curve}
            top = min(int(s["k"].max()) for s in mine.values())
            grid = np.unique(np.round(np.linspace(0, top, points)).astype(np.int64))
            vals = np.stack([np.interp(grid, s["k"].to_numpy(float), s["val_wga"].to_numpy(float)) for s in mine.values()])
            for j, k in enumerate(grid):
                out.append({"curve": curve, "k": int(k), "val_wga_mean": float(vals[:, j].mean()),
                            "val_wga_std": float(vals[:, j].std()), "seeds": len(mine)})
        return pd.DataFrame(out, columns=cols)

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "config": self.config.to_dict(), "d3m_config": self.d3m_config.to_dict(),
                "table": self.summary().to_dict(orient="records"), "rows": self.rows().to_dict(orient="records"),
                "sweep": self.sweep().to_dict(orient="records"),
                "sweep_mean": self.sweep_mean().to_dict(orient="records"),
                "seeds": [{"seed": s.seed, "seconds": s.seconds, "d3m": {k: v.to_dict() for k, v in s.d3m.items()},
                           "metrics": {m: {sp: r.to_dict() for sp, r in reps.items()} for m, reps in s.reports.items()}}
                          for s in self.seeds]}


def balancing_order(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Removal order of "balancing the majority group" (D3M Fig. 2, orange): each step removes a
    random example of the currently largest group (ties: lowest id), until every group present has
    the size of the smallest. Returns the train indices in removal order."""
    g = np.asarray(groups, dtype=np.int64)
    present = np.unique(g)
    pools = {int(k): list(rng.permutation(np.flatnonzero(g == k))) for k in present}
    counts = {k: len(v) for k, v in pools.items()}
    target = min(counts.values())
    order = []
    while True:
        k = max(counts, key=lambda c: (counts[c], -c))
        if counts[k] <= target:
            break
        order.append(pools[k].pop())
        counts[k] -= 1
    return np.asarray(order, dtype=np.int64)


def _trak_matrix(ds: Dataset, cfg: TrainConfig, dcfg: D3MConfig, base_model: Any, scores_out: str | Path | None,
                 say: Callable[[str], None]) -> np.ndarray:
    if dcfg.n_models == 1:
        models = [base_model]
    else:
        models = []
        masks = random_subsets(len(ds.train), dcfg.n_models, dcfg.alpha, seed=cfg.seed)
        input_shape = tuple(np.asarray(ds.train.load_x(np.arange(1))).shape[1:])
        for m, mask in enumerate(masks):
            say(f"TRAK ensemble: model {m + 1}/{dcfg.n_models} on {int(mask.sum())} examples (alpha = {dcfg.alpha:g})")
            sub_cfg = replace(cfg, method="erm", seed=cfg.seed * 1000 + m + 1)
            model = build_model(cfg.model, input_shape, ds.n_classes, width=cfg.width, seed=sub_cfg.seed)
            models.append(fit(model, ds.train.subset(np.flatnonzero(mask)), sub_cfg).model)
    say(f"TRAK: featurize {len(ds.train)} train, score {len(ds.val)} val ({len(models)} model(s), k = {dcfg.proj_dim})")
    params = (lambda n: n.startswith("head")) if dcfg.trak_params == "head" else None
    return ensemble_scores(models, (ds.train.x, ds.train.y, ds.train.loader), (ds.val.x, ds.val.y, ds.val.loader),
                           proj_dim=dcfg.proj_dim, params=params, seed=cfg.seed, out=scores_out)


def _grid(k_max: int, points: int, extra: list[int]) -> list[int]:
    ks = {int(round(v)) for v in np.linspace(0, k_max, points)} if points > 1 else {0}
    return sorted(ks | {int(k) for k in extra if 0 <= k <= k_max})


def run_d3m_seed(ds: Dataset, cfg: TrainConfig, dcfg: D3MConfig | None = None, *,
                 scores_out: str | Path | None = None, progress: Callable[[str], None] | None = None) -> SeedResult:
    """One seed of D3M Table 1 (the methods in ``dcfg.methods``) and, with ``dcfg.sweep_points``, of
    Fig. 2. ``cfg`` sets model and optimisation for every method (its ``seed`` is the seed)."""
    dcfg = dcfg or D3MConfig()
    say = progress or (lambda m: None)
    methods = dcfg.methods
    needs_val_groups = [m for m in methods if m == "d3m" or m in BASELINES]
    if needs_val_groups and ds.val.g is None:
        raise ValueError(f"{TABLE_METHODS[needs_val_groups[0]][0]} needs val group labels and {ds.name!r} has none; "
                         "run only ERM and AUTO-D3M (methods erm, auto-d3m / --auto).")
    needs_train_groups = [m for m in methods if m in BASELINES and METHODS[m].train_groups]
    if needs_train_groups and ds.train.g is None:
        raise ValueError(f"{TABLE_METHODS[needs_train_groups[0]][0]} needs train group labels and {ds.name!r} has none; "
                         "leave rwg, subg and gdro out of the methods.")
    erm_cfg = replace(cfg, method="erm", select="val_avg")
    secs: dict[str, float] = {}
    reports: dict[str, dict[str, GroupReport]] = {}
    n_removed: dict[str, int] = {}

    t = time.perf_counter()
    say("ERM")
    base = run(ds, erm_cfg)
    secs["erm"] = time.perf_counter() - t
    if "erm" in methods:
        reports["erm"], n_removed["erm"] = base.reports, 0

    cache: dict[tuple[str, int], tuple[GroupReport, GroupReport, float]] = {}

    def retrain(name: str, order: np.ndarray, k: int, select: str, est: np.ndarray | None = None):
        """Retrain from scratch without the first ``k`` examples of ``order``; cached per (name, k)."""
        key = (name if k > 0 else "none", k, select)
        if key not in cache:
            keep = np.ones(len(ds.train), dtype=bool)
            keep[order[:k]] = False
            say(f"retrain without {k} examples ({name} order)")
            r = run(ds.with_train(keep), replace(cfg, method="erm", select=select),
                    val_estimated_groups=est)
            if est is not None:  # AUTO-D3M: the worst pseudo-group, no group label
                val_metric = group_report(ds.val.y, predict(r.model, ds.val).argmax(1), est).worst_group_accuracy
            else:
                val_metric = r.reports["val"].worst_group_accuracy
            cache[key] = (r.reports["val"], r.reports["test"], val_metric)
        return cache[key]

    d3m: dict[str, D3MResult] = {}
    modes = [m for m in ("d3m", "auto-d3m") if m in methods]
    if modes or dcfg.sweep_points:
        t = time.perf_counter()
        tau = _trak_matrix(ds, cfg, dcfg, base.model, scores_out, say)
        secs["trak"] = time.perf_counter() - t
        ev = embed(base.model, ds.val)
        for mode in modes + (["d3m"] if dcfg.sweep_points and "d3m" not in modes and ds.val.g is not None else []):
            auto = mode == "auto-d3m"
            groups = (auto_d3m_groups(tau, ds.val.y, ev.pred == ds.val.y, fraction=dcfg.fraction,
                                      threshold=dcfg.threshold, normalize=dcfg.normalize) if auto else ds.val.g)
            align = group_alignment(tau, groups, ev.loss, beta=dcfg.beta, weighting=dcfg.weighting)
            heuristic = int((align < 0).sum())
            d3m[mode] = D3MResult(mode=mode, alignment=align, order=np.argsort(align, kind="stable"),
                                  n_removed=heuristic, heuristic_k=heuristic, val_groups=groups)
    # Fig. 2: val worst-group accuracy against the number removed (needs val groups; balancing needs train groups)
    sweep: list[dict[str, Any]] = []
    if dcfg.sweep_points and "d3m" in d3m:
        t = time.perf_counter()
        rng = np.random.default_rng(cfg.seed)
        orders = {"d3m": d3m["d3m"].order, "random": rng.permutation(len(ds.train))}
        if ds.train.g is not None:
            orders["balance"] = balancing_order(ds.train.g, rng)
        k_max = len(orders["balance"]) if "balance" in orders else len(ds.train) // 2
        k_max = max(k_max, d3m["d3m"].heuristic_k)
        for curve, order in orders.items():
            lim = min(k_max, len(order), len(ds.train) - 1)
            for k in _grid(lim, dcfg.sweep_points, [d3m["d3m"].heuristic_k] if curve == "d3m" else []):
                rv, rt, _ = retrain(curve, order, k, "val_wga")
                sweep.append({"seed": cfg.seed, "curve": curve, "k": k, "val_wga": rv.worst_group_accuracy,
                              "test_wga": rt.worst_group_accuracy, "heuristic": curve == "d3m" and k == d3m["d3m"].heuristic_k})
        secs["sweep"] = time.perf_counter() - t
    for mode in modes:
        t = time.perf_counter()
        res = d3m[mode]
        auto = mode == "auto-d3m"
        select, est = ("val_worst_estimated", res.val_groups) if auto else ("val_wga", None)
        order = res.order
        k = res.heuristic_k
        if dcfg.removal == "negative":
            d3m_keep(res.alignment)  # a clear error if every score is negative
        else:
            top = max(r["k"] for r in sweep) if sweep else 2 * max(k, 1)
            ks = _grid(min(top, len(ds.train) - 1), dcfg.search_points, [min(k, len(ds.train) - 1)])
            for kk in ks:
                res.search.append({"k": kk, "val_metric": retrain(mode, order, kk, select, est)[2]})
            k = res.n_removed = max(res.search, key=lambda r: (r["val_metric"], -r["k"]))["k"]
        rv, rt, _ = retrain(mode, order, k, select, est)
        reports[mode], n_removed[mode] = {"val": rv, "test": rt}, k
        secs[mode] = time.perf_counter() - t
    for m in BASELINES:
        if m in methods:
            t = time.perf_counter()
            say(TABLE_METHODS[m][0])
            mcfg = replace(cfg, method=m, select="val_wga")
            r = run(ds, mcfg)
            reports[m] = r.reports
            # the examples a method never trains on (SUBG's subsampling), from its sampling rule
            n_removed[m] = examples_left_out(m, ds.train.y, ds.train.g, mixture_ratio=mcfg.mixture_ratio)
            secs[m] = time.perf_counter() - t
    ordered = {m: reports[m] for m in TABLE_METHODS if m in reports}
    return SeedResult(seed=cfg.seed, reports=ordered, n_removed=n_removed, d3m={m: d3m[m] for m in modes},
                      sweep=sweep, seconds=secs)


def run_d3m_table(make_dataset: Callable[[int], Dataset], cfg: TrainConfig, dcfg: D3MConfig | None = None, *,
                  name: str = "", seeds: list[int] | tuple[int, ...] = (0,), scores_out: str | Path | None = None,
                  progress: Callable[[str], None] | None = None) -> D3MTable:
    """D3M Table 1 over ``seeds``: ``make_dataset(seed)`` gives each seed's data, ``cfg.seed`` is
    replaced by the seed. ``scores_out`` (a ``.npy`` path) keeps each seed's TRAK matrix on disk
    as ``<stem>-seed<s>.npy``."""
    dcfg = dcfg or D3MConfig()
    if not seeds:
        raise ValueError("give at least one seed.")
    out = []
    for s in seeds:
        say = (lambda m, s=s: progress(f"seed {s}: {m}")) if progress else None
        path = None if scores_out is None else Path(scores_out).with_name(f"{Path(scores_out).stem}-seed{s}.npy")
        ds = make_dataset(s)
        name = name or ds.name
        out.append(run_d3m_seed(ds, replace(cfg, seed=s), dcfg,
                                scores_out=path, progress=say))
    return D3MTable(dataset=name, config=cfg, d3m_config=dcfg, seeds=out)


def plot_sweep(table: D3MTable, path: str | Path) -> Path:
    """D3M Fig. 2: val worst-group accuracy against the number of training examples removed, for the
    D3M order, a random order and balancing of the majority group: mean over seeds on a common grid
    of k (each seed's curve linearly interpolated, :meth:`D3MTable.sweep_mean`) with a +-1 std band;
    the star marks the heuristic k (A_i < 0), mean over seeds of k and of its val WGA."""
    from matplotlib.figure import Figure

    from ..report import save_figure_atomic

    df = table.sweep()
    if df.empty:
        raise ValueError("this run has no sweep; set sweep_points (--sweep-points) to draw Fig. 2.")
    mean = table.sweep_mean()
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    styles = {"d3m": ("D3M", "tab:green"), "random": ("Random", "tab:blue"), "balance": ("Balancing (majority)", "tab:orange")}
    for curve, (label, colour) in styles.items():
        sub = mean[mean["curve"] == curve]
        if sub.empty:
            continue
        ax.plot(sub["k"], sub["val_wga_mean"], marker="o", color=colour, label=label)
        if sub["seeds"].max() > 1:
            ax.fill_between(sub["k"], sub["val_wga_mean"] - sub["val_wga_std"], sub["val_wga_mean"] + sub["val_wga_std"],
                            color=colour, alpha=0.15)
    star = df[df["heuristic"]]
    if not star.empty:
        ax.scatter(star["k"].mean(), star["val_wga"].mean(), marker="*", s=250, color="tab:green", zorder=5,
                   label="D3M heuristic (A < 0)")
    ax.set_xlabel("training examples removed")
    ax.set_ylabel("val worst-group accuracy")
    ax.set_title(f"{table.dataset}: removal order ({df['seed'].nunique()} seed(s))")
    ax.legend()
    fig.tight_layout()
    return save_figure_atomic(fig, path)
