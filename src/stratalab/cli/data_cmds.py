"""``stratalab datasets`` (what data sets exist, their counts) and ``stratalab demo`` (the main job
on the embedded data set)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from .app import app, clean_errors, console, datasets_app, err
from .common import FIGURE_SUFFIXES, DataDirOption, JsonOption, OptionOption, ThreadsOption, check_threads, emit_report, parse_options


@datasets_app.callback()
def datasets_list(ctx: typer.Context, json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the data sets `stratalab.data.load` knows."""
    if ctx.invoked_subcommand is not None:
        return
    from ..data import available
    from ..report import datasets_table

    items = available()
    if json_out:
        print(json.dumps([{"name": i.name, "summary": i.summary, "needs_files": i.needs_files or None,
                           "options": i.options()} for i in items], indent=2, default=str))
        return
    console.print(datasets_table(items))
    console.print("A user's own .npz (x_/y_/g_{train,val,test}) or .csv (id,filename,split,y,a) loads by its path.")


@datasets_app.command("show")
@clean_errors
def datasets_show(
    name: str = typer.Argument(..., help="Data set name, or path of your own .npz/.csv."),
    data_dir: DataDirOption = None,
    seed: int = typer.Option(0, help="Seed of the data set's construction."),
    option: OptionOption = None,
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print the counts per split x class x group of one data set."""
    from ..data import load
    from ..report import counts_table

    ds = load(name, data_dir=data_dir, seed=seed, **parse_options(option))
    if json_out:
        print(json.dumps(ds.summary(), indent=2, default=str))
        return
    console.print(f"[bold]{ds.name}[/bold]: {ds.description}")
    console.print(counts_table(ds.counts(), "Examples per split x class x group"))


@app.command()
@clean_errors
def demo(
    epochs: int = typer.Option(40, help="ERM epochs (u-digits: about 0.05 s each on 2 CPU cores)."),
    seed: int = typer.Option(0, help="Seed of the data split, the initialisation and the data order."),
    json_out: JsonOption = False,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the class vs worst-subgroup figure (.png/.pdf/.svg)."),
    audit_only: bool = typer.Option(False, "--audit-only", help="Stop after the audit (skip GEORGE)."),
    threads: ThreadsOption = None,
) -> None:
    """The main job on the embedded data set: train ERM on u-digits (superclass digit >= 5, digit 8
    rare in train), predict the test set and audit it per digit (hidden stratification: high average
    accuracy, much lower on the rare 8s); then GEORGE finds the 8s as a cluster without any digit
    label and Group DRO over its clusters (the same as `stratalab run george --dataset u-digits`)."""
    from ..experiments.backend import torch_threads

    with torch_threads(check_threads(threads)) as used:
        _demo(epochs, seed, json_out, plot, audit_only, used)


def _demo(epochs: int, seed: int, json_out: bool, plot: Optional[Path], audit_only: bool, threads_used: int) -> None:
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..data import load
    from ..metrics import group_report
    from ..models import MLP
    from ..report import check_output_path
    from ..train import TrainConfig, fit, predict

    check_output_path(plot, FIGURE_SUFFIXES, "--plot")
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=1e-3, seed=seed)
    t0 = time.perf_counter()
    ds = load("u-digits", seed=seed)
    torch.manual_seed(seed)
    model = MLP(in_features=64, n_classes=2, hidden=(64,))
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
    extra = {"config": cfg.to_dict(), "dataset": ds.options, "threads": threads_used}
    if george is not None:
        extra["george"] = {"config": gcfg.to_dict(), **george.to_dict()}
    emit_report(report, json_out=json_out, output=None, plot=plot, source="u-digits test", extra=extra)
    if json_out:
        return
    wc, wg = report.worst_group
    assert ds.group_names is not None  # u-digits names its groups (the digits)
    console.print(f"Hidden stratification: average {100 * report.average_accuracy:.1f}%, but digit "
                  f"{ds.group_names[wg]} only {100 * report.worst_group_accuracy:.1f}%.")
    if george is None:
        return
    from ..discover import cluster_quality
    from ..report import george_rows_table

    geo = george.george
    c8 = cluster_quality(george.clusters["test"], ds.test.g)[0].set_index("subclass").loc[8]
    console.print("\n[bold]GEORGE[/bold] (no digit label used): clusters per class "
                  + ", ".join(f"{ds.class_names[c]}: {n}" for c, n in geo.n_clusters_per_class_.items())
                  + f"; the best cluster for the test 8s holds {100 * c8['recall']:.0f}% of them at "
                  f"{100 * c8['precision']:.0f}% precision.")
    console.print(george_rows_table(george.rows, "GEORGE on u-digits, test accuracy (%) (robust = worst digit)"))
    console.print(f"GEORGE: ERM (MLP x{gcfg.train.width:g}, {gcfg.train.epochs} epochs) -> UMAP + {gcfg.cluster_method} per class -> "
                  f"Group DRO over the clusters; {george.seconds['total']:.0f} s. The last row uses the true digits (oracle).")
