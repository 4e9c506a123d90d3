"""The ``stratalab`` command."""

from __future__ import annotations

import ast
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console

app = typer.Typer(
    help=(
        "stratalab finds and fixes hidden stratification: models with good average accuracy that fail "
        "on subgroups.\n\n"
        "Start with `stratalab demo` (train a small model on the embedded u-digits data set and audit it), "
        "`stratalab datasets` (what data sets exist and their subgroup counts) or "
        "`stratalab audit PREDICTIONS.csv --y label --pred prediction --group group` (audit your own model)."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)
datasets_app = typer.Typer(help="List data sets, or show one's counts per split x class x group.",
                           invoke_without_command=True, add_completion=False)
app.add_typer(datasets_app, name="datasets")
run_app = typer.Typer(help="End-to-end pipelines (e.g. `stratalab run george --dataset u-digits`).", no_args_is_help=True,
                      add_completion=False)
app.add_typer(run_app, name="run")

console = Console()
err = Console(stderr=True)


def _clean_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user-facing errors into one clear line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError, FileNotFoundError, KeyError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            err.print(f"[bold red]error:[/bold red] {msg}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper


def _parse_seeds(seeds: str) -> list[int]:
    """``--seeds 0,1,2`` -> [0, 1, 2], with a clear error when none is given."""
    out = [int(v) for v in seeds.split(",") if v.strip()]
    if not out:
        raise ValueError("--seeds must list at least one integer seed, e.g. 0,1,2.")
    return out


def _parse_options(options: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in options or []:
        if "=" not in item:
            raise ValueError(f"option {item!r} must look like key=value, e.g. --option rare_keep=0.5.")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k.strip()] = v
    return out


@datasets_app.callback()
def datasets_list(ctx: typer.Context, json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the data sets `stratalab.data.load` knows."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from ..data import available

    items = available()
    if json_out:
        print(json.dumps([{"name": i.name, "summary": i.summary, "needs_files": i.needs_files or None,
                           "options": i.options()} for i in items], indent=2, default=str))
        return
    t = Table(title="Data sets (stratalab datasets show NAME for counts)", title_justify="left")
    t.add_column("name", style="bold")
    t.add_column("what")
    t.add_column("needs files in --data-dir")
    for i in items:
        t.add_row(i.name, i.summary, i.needs_files or "none (works anywhere)")
    console.print(t)
    console.print("A user's own .npz (x_/y_/g_{train,val,test}) or .csv (id,filename,split,y,a) loads by its path.")


@datasets_app.command("show")
@_clean_errors
def datasets_show(
    name: str = typer.Argument(..., help="Data set name, or path of your own .npz/.csv."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", "-d", help="Folder with the data set's files (default $STRATALAB_DATA_DIR)."),
    seed: int = typer.Option(0, help="Seed of the data set's construction."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="Data-set option key=value (repeatable)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print the counts per split x class x group of one data set."""
    from ..data import load
    from ..report import counts_table

    ds = load(name, data_dir=data_dir, seed=seed, **_parse_options(option))
    if json_out:
        print(json.dumps(ds.summary(), indent=2, default=str))
        return
    console.print(f"[bold]{ds.name}[/bold]: {ds.description}")
    console.print(counts_table(ds.counts(), "Examples per split x class x group"))


def _read_predictions(path: Path) -> Any:
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; give a .csv or .parquet file of predictions.")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise ValueError(f"{path}: unknown format {suffix!r}; use .csv or .parquet.")


def _column(df: Any, col: str, path: Path, what: str, *, integer: bool = True) -> Any:
    import numpy as np

    if col not in df.columns:
        raise ValueError(f"{path} has no column {col!r} (for {what}); columns are: {', '.join(map(str, df.columns))}.")
    s = df[col]
    if s.isna().any():
        raise ValueError(f"column {col!r} of {path} has {int(s.isna().sum())} missing value(s) (first at row {int(np.flatnonzero(s.isna().to_numpy())[0])}); drop or fill them.")
    if not integer:
        return s.to_numpy(dtype=float)
    v = s.to_numpy()
    if v.dtype.kind == "f" and not (v == np.round(v)).all():
        i = int(np.flatnonzero(v != np.round(v))[0])
        raise ValueError(f"column {col!r} of {path} must hold integer labels, row {i} is {v[i]!r}.")
    if v.dtype.kind not in "iufb":
        i = 0
        raise ValueError(f"column {col!r} of {path} must hold integer labels, row {i} is {v[i]!r}; encode labels as 0..K-1.")
    return v.astype(np.int64)


@app.command()
@_clean_errors
def audit(
    predictions: Path = typer.Argument(..., help="CSV or Parquet file with one row per example."),
    y: str = typer.Option(..., "--y", help="Column of true class labels (integers)."),
    pred: str = typer.Option(..., "--pred", help="Column of predicted labels (integers)."),
    group: str = typer.Option(..., "--group", help="Column of subgroup ids (integers)."),
    class_col: Optional[str] = typer.Option(None, "--class", help="Column of the class used for per-class summaries (default: --y)."),
    score: Optional[str] = typer.Option(None, "--score", help="Column with the probability of class 1 (binary tasks): adds per-group loss and AUROC."),
    bootstrap: int = typer.Option(0, "--bootstrap", help="Bootstrap resamples for confidence intervals (e.g. 1000); 0 = none."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout instead of tables."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the report: .json (full report) or .csv/.parquet (group table)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the figure of class accuracy beside worst-subgroup accuracy (PNG)."),
) -> None:
    """Audit predictions per subgroup: group table, average / balanced / worst-group / worst-class
    accuracy, WeightedStd and MacroStd.

    Example: `stratalab audit preds.csv --y label --pred prediction --group group --plot fig.png`
    """
    from ..metrics import group_report

    df = _read_predictions(predictions)
    if len(df) == 0:
        raise ValueError(f"{predictions} has no rows.")
    yv = _column(df, y, predictions, "--y")
    pv = _column(df, pred, predictions, "--pred")
    gv = _column(df, group, predictions, "--group")
    cv = _column(df, class_col, predictions, "--class") if class_col else None
    sv = _column(df, score, predictions, "--score", integer=False) if score else None
    report = group_report(yv, pv, gv, classes=cv, y_score=sv, n_bootstrap=bootstrap, random_state=seed)
    _emit_report(report, json_out=json_out, output=output, plot=plot, source=str(predictions))


def _write_payload(payload: dict[str, Any], output: Optional[Path], json_out: bool) -> bool:
    """Write ``payload`` as JSON to ``output`` (atomically) when given; with ``--json`` also print it
    on stdout and return True, so the caller skips its tables."""
    from ..report import write_json_atomic

    if output is not None:
        write_json_atomic(output, payload)
    if json_out:
        print(json.dumps(payload, indent=2, allow_nan=False, default=str))
    return json_out


def _emit_report(report: Any, *, json_out: bool, output: Optional[Path], plot: Optional[Path], source: str,
                 extra: dict[str, Any] | None = None) -> None:
    from ..report import group_table, plot_class_vs_worst_group, summary_table, write_table_atomic

    payload = {"source": source, **(extra or {}), **report.to_dict()}
    if output is not None and output.suffix.lower() != ".json":
        write_table_atomic(output, report.table)
    if plot is not None:
        plot_class_vs_worst_group(report, plot)
    json_output = output if output is not None and output.suffix.lower() == ".json" else None
    if _write_payload(payload, json_output, json_out):
        return
    console.print(group_table(report))
    console.print(summary_table(report))
    for what, p in (("report", output), ("figure", plot)):
        if p is not None:
            console.print(f"wrote {what}: {p}")


@app.command()
@_clean_errors
def demo(
    epochs: int = typer.Option(40, help="ERM epochs (u-digits: about 0.05 s each on 2 CPU cores)."),
    seed: int = typer.Option(0, help="Seed of the data split, the initialisation and the data order."),
    json_out: bool = typer.Option(False, "--json", help="Print the test report as JSON."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the class vs worst-subgroup figure (PNG)."),
    audit_only: bool = typer.Option(False, "--audit-only", help="Stop after the audit (skip GEORGE)."),
) -> None:
    """The main job on the embedded data set: train ERM on u-digits (superclass digit >= 5, digit 8
    rare in train), predict the test set and audit it per digit (hidden stratification: high average
    accuracy, much lower on the rare 8s); then GEORGE finds the 8s as a cluster without any digit
    label and Group DRO over its clusters (the same as `stratalab run george --dataset u-digits`)."""
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..data import load
    from ..metrics import group_report
    from ..models import MLP
    from ..train import TrainConfig, fit, predict

    t0 = time.perf_counter()
    ds = load("u-digits", seed=seed)
    torch.manual_seed(seed)
    model = MLP(in_features=64, n_classes=2, hidden=(64,))
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=1e-3, seed=seed)
    with Progress(TextColumn("ERM on u-digits"), BarColumn(), TextColumn("{task.completed}/{task.total} epochs"),
                  TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(),
                  console=err, transient=True, disable=json_out or not sys.stderr.isatty()) as bar:
        task = bar.add_task("train", total=epochs, loss=float("nan"))
        fit(model, ds.train, cfg, progress=lambda e, row: bar.update(task, completed=e, loss=row["train_loss"]))
    proba = predict(model, ds.test)
    train_counts = ds.counts().query("split == 'train'").set_index("group")["n"].to_dict()
    report = group_report(ds.test.y, proba.argmax(1), ds.test.g, y_score=proba, class_names=ds.class_names,
                          group_names=ds.group_names, train_group_counts=train_counts)
    if not json_out:
        console.print(f"[bold]ERM on u-digits[/bold] ({ds.description}); {len(ds.train)} train images, "
                      f"{epochs} epochs, seed {seed}, {time.perf_counter() - t0:.1f} s. Test set, groups = digits:")
    george = None
    if not audit_only:
        from ..experiments import GeorgeConfig, run_george

        gcfg = GeorgeConfig.for_dataset("u-digits")
        george = run_george(ds, gcfg, seed, progress=None if json_out else (lambda m: err.print(f"[dim]GEORGE {m}[/dim]")))
    extra = {"config": cfg.to_dict(), "dataset": ds.options}
    if george is not None:
        extra["george"] = {"config": gcfg.to_dict(), **george.to_dict()}
    _emit_report(report, json_out=json_out, output=None, plot=plot, source="u-digits test", extra=extra)
    if json_out:
        return
    wc, wg = report.worst_group
    console.print(f"Hidden stratification: average {100 * report.average_accuracy:.1f}%, but digit "
                  f"{ds.group_names[wg]} only {100 * report.worst_group_accuracy:.1f}%.")
    if george is None:
        return
    from rich.table import Table

    from ..discover import cluster_quality

    geo = george.george
    c8 = cluster_quality(george.clusters["test"], ds.test.g)[0].set_index("subclass").loc[8]
    console.print("\n[bold]GEORGE[/bold] (no digit label used): clusters per class "
                  + ", ".join(f"{ds.class_names[c]}: {n}" for c, n in geo.n_clusters_per_class_.items())
                  + f"; the best cluster for the test 8s holds {100 * c8['recall']:.0f}% of them at "
                  f"{100 * c8['precision']:.0f}% precision.")
    t = Table(title="GEORGE on u-digits, test accuracy (%) (robust = worst digit)", title_justify="left")
    for col in ("method", "robust", "overall"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for name, row in george.rows.items():
        t.add_row(name, f"{100 * row['robust_accuracy']:.1f}", f"{100 * row['overall_accuracy']:.1f}")
    console.print(t)
    console.print(f"GEORGE: ERM (MLP x{gcfg.width:g}, {gcfg.epochs} epochs) -> UMAP + {gcfg.cluster_method} per class -> "
                  f"Group DRO over the clusters; {george.seconds['total']:.0f} s. The last row uses the true digits (oracle).")


@app.command()
@_clean_errors
def train(
    dataset: str = typer.Option(..., "--dataset", help="Data set name (see `stratalab datasets`) or path of your .npz/.csv."),
    method: str = typer.Option("erm", "--method", help="erm | gdro | subsetting | upsampling | upweighting | mixture | subg | rwg | jtt | dfr"),
    model: str = typer.Option("mlp", "--model", help="mlp | lenet5 | resnet | linear (a linear head on feature inputs)."),
    width: float = typer.Option(1.0, help="Width multiplier of the model (scaling studies)."),
    epochs: int = typer.Option(20, help="Training epochs."),
    batch_size: int = typer.Option(128, help="Mini-batch size."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    weight_decay: float = typer.Option(0.0, help="Weight decay."),
    optimizer: str = typer.Option("adam", help="adam | adamw | sgd."),
    schedule: str = typer.Option("constant", help="constant | multistep (x0.1 at 50% and 75%) | cosine | linear (to zero)."),
    seed: int = typer.Option(0, help="Seed of data construction, initialisation and data order."),
    select: str = typer.Option("val_wca", "--select", help="Checkpoint criterion: val_wga (needs val groups) | val_wca | val_avg."),
    mixture_ratio: Optional[float] = typer.Option(None, help="r of mixture balancing: cap each class at r x the smallest class."),
    gdro_eta: float = typer.Option(0.01, help="Group DRO step size of the group weights."),
    gdro_adjustment: float = typer.Option(0.0, help="Group DRO generalisation adjustment C."),
    jtt_epochs: int = typer.Option(1, help="JTT: epochs T of the error-finding ERM model."),
    jtt_upsample: int = typer.Option(20, help="JTT: lambda_up, times each error appears per epoch."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", "-d", help="Folder with the data set's files."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="Data-set option key=value (repeatable)."),
    checkpoint_dir: Optional[Path] = typer.Option(None, help="Save the last epoch here and resume from it."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write the run (config, history, selected epoch, metrics) as JSON."),
    json_out: bool = typer.Option(False, "--json", help="Print the run as JSON instead of tables."),
) -> None:
    """Train a model with ERM or a group-robust method and print val/test subgroup tables.

    Example: `stratalab train --dataset u-digits --method gdro --epochs 30 --select val_wga`
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..data import load
    from ..report import group_table, summary_table
    from ..train import TrainConfig, run

    cfg = TrainConfig(method=method, model=model, width=width, epochs=epochs, batch_size=batch_size, lr=lr,
                      weight_decay=weight_decay, optimizer=optimizer, schedule=schedule, seed=seed, select=select,
                      mixture_ratio=mixture_ratio, gdro_eta=gdro_eta, gdro_adjustment=gdro_adjustment,
                      jtt_epochs=jtt_epochs, jtt_upsample=jtt_upsample)
    ds = load(dataset, data_dir=data_dir, seed=seed, **_parse_options(option))
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} epochs"),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err, transient=True,
                  disable=json_out or not sys.stderr.isatty()) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, epoch: int, total: int, row: dict[str, Any]) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, info="")
            sel = row.get("selection", {}).get(cfg.select)
            info = f"loss {row['train_loss']:.3f}" + (f", val {cfg.select} {100 * sel:.1f}%" if sel is not None else "")
            bar.update(tasks[stage], completed=epoch, info=info)

        result = run(ds, cfg, checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None, progress=progress)
    if _write_payload(result.to_dict(), output, json_out):
        return
    console.print(f"[bold]{method}[/bold] on {ds.name}: model {model}, {epochs} epochs, seed {seed}; "
                  f"selected epoch {result.selected_epoch} by {select}; labels used: "
                  + ", ".join(f"{k}: {v}" for k, v in result.labels_used.items()))
    for split in ("val", "test"):
        rep = result.reports[split]
        console.print(group_table(rep, title=f"{split}: accuracy per subgroup (%)"))
        console.print(summary_table(rep, title=f"{split}: summary"))
    if output is not None:
        console.print(f"wrote run: {output}")


@run_app.command("george")
@_clean_errors
def run_george_cmd(
    dataset: str = typer.Option(..., "--dataset", help="Data set name or path of your .npz/.csv (needs train/val/test)."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds, e.g. 0,1,2."),
    model: Optional[str] = typer.Option(None, help="ERM/GDRO model (default: the data set's recipe, else lenet5 for 32x32 images, else mlp)."),
    width: Optional[float] = typer.Option(None, help="Width multiplier of the model (u-digits recipe: 4)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs of each training step (ERM, GDRO, oracle GDRO); u-mnist recipe 20, u-digits 10."),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate (GEORGE's U-MNIST recipe: 2e-3, x0.1 at 50% and 75%)."),
    batch_size: Optional[int] = typer.Option(None, help="Mini-batch size (128)."),
    reducer: Optional[str] = typer.Option(None, help="umap (default) | pca | hardness | none."),
    cluster_method: Optional[str] = typer.Option(None, help="gmm | kmeans (u-digits recipe: kmeans; else gmm)."),
    k_max: Optional[int] = typer.Option(None, help="Largest number of clusters tried per class (10)."),
    no_overcluster: bool = typer.Option(False, "--no-overcluster", help="Skip GEORGE's overclustering step."),
    min_cluster_size: Optional[int] = typer.Option(None, help="Overclustering: least train and val points of a kept sub-cluster (the paper: 25; u-digits recipe: 10)."),
    features: Optional[Path] = typer.Option(None, "--features", help="Your own embeddings: .npz with train, val, test arrays (skips step 1's features)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", "-d", help="Folder with the data set's files."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="Data-set option key=value (repeatable)."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write the results (config, per-seed rows, cluster recovery) as JSON."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the Fig. 5 style figure of the first seed (PNG)."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON instead of tables."),
) -> None:
    """GEORGE (Sohoni et al. 2020): ERM -> cluster its features per class -> Group DRO on the clusters,
    beside ERM and Group DRO on the true subclasses. No true subclass label is used by GEORGE itself.
    """
    import numpy as np
    from rich.table import Table

    from ..data import load
    from ..experiments import GeorgeConfig, plot_clusters, run_george, summarise
    from ..experiments.george import RECIPES

    seed_list = _parse_seeds(seeds)
    opts = _parse_options(option)
    user_feats = None
    if features is not None:
        if not features.is_file():
            raise FileNotFoundError(f"{features} does not exist; give an .npz with arrays train, val, test.")
        with np.load(features) as f:
            user_feats = {k: f[k] for k in f.files}
    results = []
    for seed in seed_list:
        ds = load(dataset, data_dir=data_dir, seed=seed, **opts)
        shape = tuple(np.asarray(ds.train.load_x(np.arange(1))).shape[1:])
        if model is None and dataset not in RECIPES:
            model = "lenet5" if len(shape) == 3 and shape[-2:] == (32, 32) else "mlp"
        cfg = GeorgeConfig.for_dataset(dataset, model=model, width=width, epochs=epochs, lr=lr, batch_size=batch_size,
                                       reducer=reducer, cluster_method=cluster_method, k_max=k_max,
                                       overcluster=False if no_overcluster else None,
                                       min_cluster_size=min_cluster_size, min_val_size=min_cluster_size)
        res = run_george(ds, cfg, seed, features=user_feats,
                         progress=None if json_out else (lambda m, s=seed: err.print(f"[dim]seed {s}: {m}[/dim]")))
        results.append(res)
        if plot is not None and seed == seed_list[0]:
            plot_clusters(ds, res, str(plot))
    table = summarise(results)
    payload = {"dataset": dataset, "config": cfg.to_dict(), "seeds": seed_list,
               "table": table.to_dict(orient="records"), "runs": [r.to_dict() for r in results],
               "labels_used": {"GEORGE": "class labels only (clusters replace subclasses)",
                               "GDRO (true subclasses)": "true train and val subclass labels"}}
    if _write_payload(payload, output, json_out):
        return
    t = Table(title=f"GEORGE on {dataset}: test accuracy (%), mean ± std over seeds {seeds}", title_justify="left")
    for col in ("method", "robust accuracy (min over true subclasses)", "overall accuracy"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for r in table.itertuples(index=False):
        t.add_row(r.method, f"{100 * r.robust_mean:.1f} ± {100 * r.robust_std:.1f}", f"{100 * r.overall_mean:.1f} ± {100 * r.overall_std:.1f}")
    console.print(t)
    first = results[0]
    if len(first.recovery):
        rt = Table(title=f"Cluster recovery on train (seed {first.seed}): ARI {first.recovery_overall['ari']:.3f}, "
                         f"NMI {first.recovery_overall['nmi']:.3f}", title_justify="left")
        for col in ("subclass", "n", "best cluster", "precision (%)", "recall (%)"):
            rt.add_column(col, justify="right")
        for r in first.recovery.itertuples(index=False):
            rt.add_row(str(r.subclass_name), str(r.n), str(r.best_cluster), f"{100 * r.precision:.1f}", f"{100 * r.recall:.1f}")
        console.print(rt)
    console.print("clusters per class: " + ", ".join(f"{k}: {v}" for k, v in first.george.n_clusters_per_class_.items()))
    for what, p in (("results", output), ("figure", plot)):
        if p is not None:
            console.print(f"wrote {what}: {p}")


@run_app.command("d3m")
@_clean_errors
def run_d3m_cmd(
    dataset: str = typer.Option(..., "--dataset", help="Data set name or path of your .npz/.csv."),
    auto: bool = typer.Option(False, "--auto", help="Only the rows that use no group label: ERM and AUTO-D3M (pseudo-groups from the TRAK matrix)."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated rows of Table 1: erm, auto-d3m, jtt, dfr, d3m, rwg, subg, gdro (default: all)."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds, e.g. 0,1,2: mean and std over them."),
    model: str = typer.Option("mlp", "--model", help="mlp | lenet5 | resnet | linear."),
    epochs: int = typer.Option(20, help="Epochs of every trained model (ERM, retrained, baselines)."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    batch_size: int = typer.Option(128, help="Mini-batch size."),
    weight_decay: float = typer.Option(0.0, help="Weight decay."),
    proj_dim: int = typer.Option(512, help="TRAK projection dimension k."),
    trak_params: Optional[str] = typer.Option(None, help="'head' to attribute through the last layer only (faster)."),
    trak_models: int = typer.Option(1, help="TRAK ensemble size M: 1 = the ERM model; M > 1 trains M models on random alpha-subsets (the paper: 100)."),
    trak_alpha: float = typer.Option(0.5, help="Fraction of train each ensemble model sees."),
    beta: float = typer.Option(1.0, help="Temperature of the soft maximum over group losses (eq. 3)."),
    weighting: str = typer.Option("softmax", help="softmax (eq. 3 of the paper) | loss (the public code: mean of loss_G * tau(G))."),
    removal: str = typer.Option("negative", help="negative: drop A_i < 0 (the paper's default) | search: choose k on val worst-group accuracy."),
    fraction: float = typer.Option(0.35, help="AUTO-D3M: share of each class in the lower-performing pseudo-group."),
    threshold: str = typer.Option("fraction", help="AUTO-D3M split: fraction (the paper) | zero (the public code: sign of the projection)."),
    sweep_points: int = typer.Option(5, help="Values of k per curve for Fig. 2 (val WGA vs examples removed); 0 skips it."),
    search_points: int = typer.Option(5, help="With --removal search: values of k tried (plus the A < 0 count)."),
    figure: Optional[Path] = typer.Option(None, "--figure", help="Write Fig. 2 (PNG/PDF/SVG)."),
    scores: Optional[Path] = typer.Option(None, "--scores", help="Keep the TRAK matrix (n_train x n_val) memory-mapped in this .npy (one file per seed)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", "-d", help="Folder with the data set's files."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="Data-set option key=value (repeatable)."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write the result as JSON (configs, table, every seed's metrics, sweep)."),
    removed: Optional[Path] = typer.Option(None, "--removed", help="Write the removed train examples with their alignment scores (.csv or .parquet; all seeds)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON instead of tables."),
) -> None:
    """D3M Table 1 (Jain et al. 2024): ERM, AUTO-D3M, JTT, DFR, D3M, RWG, SUBG and Group DRO, each
    with the group labels it needs, worst-group and balanced test accuracy over seeds; D3M finds the
    training examples that hurt the worst groups with TRAK and retrains without them; AUTO-D3M needs
    no group label anywhere. Also Fig. 2 (--sweep-points, --figure) and Fig. 4 (the cells of train
    data with the most negative alignment)."""
    import pandas as pd
    from rich.table import Table

    from ..data import load
    from ..experiments import D3MConfig, plot_sweep, run_d3m_table
    from ..train import TrainConfig

    seed_list = _parse_seeds(seeds)
    if auto and methods:
        raise ValueError("give either --auto or --methods, not both.")
    chosen = ("erm", "auto-d3m") if auto else tuple(m.strip() for m in methods.split(",") if m.strip()) if methods else None
    opts = _parse_options(option)
    dcfg = D3MConfig(**({"methods": chosen} if chosen else {}), proj_dim=proj_dim, trak_params=trak_params,
                     n_models=trak_models, alpha=trak_alpha, beta=beta, weighting=weighting, removal=removal,
                     fraction=fraction, threshold=threshold, search_points=search_points,
                     sweep_points=0 if "d3m" not in (chosen or ("d3m",)) else sweep_points)
    cfg = TrainConfig(model=model, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=seed_list[0])
    loaded: dict[int, Any] = {}  # each seed's data, loaded once for the run, --removed and the Fig. 4 table

    def data(s: int) -> Any:
        if s not in loaded:
            loaded[s] = load(dataset, data_dir=data_dir, seed=s, **opts)
        return loaded[s]

    table = run_d3m_table(data, cfg, dcfg, seeds=seed_list,
                          name=dataset, scores_out=scores,
                          progress=None if json_out else (lambda m: err.print(f"[dim]{m}[/dim]")))
    written = []
    if figure is not None and not table.sweep().empty:
        written.append(("figure", plot_sweep(table, figure)))
    if removed is not None:
        from ..report import write_table_atomic

        parts = []
        for s in table.seeds:
            for mode, res in s.d3m.items():
                parts.append(res.removed_table(data(s.seed)).assign(seed=s.seed, mode=mode))
        if parts:
            written.append(("removed examples", write_table_atomic(removed, pd.concat(parts, ignore_index=True))))
    if _write_payload(table.to_dict(), output, json_out):
        return
    summ = table.summary()
    t = Table(title=f"D3M Table 1 on {dataset}: test accuracy (%), mean ± std over seeds {seeds}", title_justify="left")
    for col in ("method", "group labels train / val", "worst-group", "balanced", "train examples removed"):
        t.add_column(col, justify="left" if col in ("method", "group labels train / val") else "right")
    for _, r in summ.iterrows():
        t.add_row(r["name"], r["group_info"], f"{100 * r['wga_mean']:.1f} ± {100 * r['wga_std']:.1f}",
                  f"{100 * r['balanced_mean']:.1f} ± {100 * r['balanced_std']:.1f}", f"{r['removed_mean']:.0f}")
    console.print(t)
    first = table.seeds[0]
    if "d3m" in first.d3m:
        cells = first.d3m["d3m"].cells(data(first.seed))
        if cells is not None:
            ct = Table(title=f"Train cells by mean D3M alignment, most negative first (seed {first.seed}; D3M Fig. 4)",
                       title_justify="left")
            for col in ("class", "group", "n", "mean alignment", "removed"):
                ct.add_column(col, justify="left" if col in ("class", "group") else "right")
            for _, r in cells.head(8).iterrows():
                ct.add_row(str(r["class"]), str(r["attribute"]), str(r["n"]), f"{r['mean_alignment']:.3g}",
                           f"{r['removed']} ({100 * r['removed_share']:.0f}%)")
            console.print(ct)
    sw = table.sweep()
    if not sw.empty:
        piv = sw.groupby(["curve", "k"])["val_wga"].mean().unstack("curve")
        st = Table(title="Val worst-group accuracy (%) by examples removed (D3M Fig. 2; mean over seeds)", title_justify="left")
        st.add_column("removed", justify="right")
        for c in piv.columns:
            st.add_column(c, justify="right")
        for k, r in piv.iterrows():
            st.add_row(str(k), *[("" if pd.isna(v) else f"{100 * v:.1f}") for v in r])
        console.print(st)
    for what, pth in written:
        console.print(f"wrote {what}: {pth}")


if __name__ == "__main__":  # pragma: no cover
    app()
