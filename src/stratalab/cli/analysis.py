"""``stratalab audit`` (a model's predictions per subgroup) and ``stratalab spectral`` (spectral
imbalance of group feature covariances)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ..experiments import Invocation, experiment
from .app import app, clean_errors, console
from .common import (
    FIGURE_SUFFIXES,
    TABLE_SUFFIXES,
    DataDirOption,
    DeviceOption,
    JsonOption,
    OptionOption,
    PrecisionOption,
    ThreadsOption,
    emit_report,
    explicit,
    hardware,
    make_backend,
    not_an_input,
    parse_options,
    refuse_unused,
    say_written,
    write_payload,
)


@app.command()
@clean_errors
def audit(
    predictions: Path = typer.Argument(..., help="CSV or Parquet file with one row per example."),
    y: str = typer.Option(..., "--y", help="Column of true class labels (integers)."),
    pred: str = typer.Option(..., "--pred", help="Column of predicted labels (integers)."),
    group: str = typer.Option(..., "--group", help="Column of subgroup ids (integers)."),
    class_col: Optional[str] = typer.Option(None, "--class", help="Column of the class used for per-class summaries (default: --y)."),
    score: Optional[str] = typer.Option(None, "--score", help="Column with the probability of class 1 (binary tasks only): adds per-group loss and AUROC."),
    bootstrap: int = typer.Option(0, "--bootstrap", help="Bootstrap resamples for confidence intervals (e.g. 1000); 0 = none."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    json_out: JsonOption = False,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the report: .json (full report) or .csv/.parquet (group table)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the figure of class accuracy beside worst-subgroup accuracy (.png/.pdf/.svg)."),
) -> None:
    """Audit predictions per subgroup: group table, average / balanced / worst-group / worst-class
    accuracy, WeightedStd and MacroStd.

    Example: `stratalab audit preds.csv --y label --pred prediction --group group --plot fig.png`
    """
    from ..report import check_output_path

    check_output_path(output, (".json",) + TABLE_SUFFIXES, "--output")
    check_output_path(plot, FIGURE_SUFFIXES, "--plot")
    not_an_input(output, "--output", predictions)
    not_an_input(plot, "--plot", predictions)
    if bootstrap < 0:
        raise ValueError(f"--bootstrap must be >= 0 (0 = no intervals), got {bootstrap}.")
    inv = Invocation("audit", seeds=[seed], inputs={"predictions": str(predictions)},
                     configs={"config": {"y": y, "pred": pred, "group": group, "classes": class_col, "score": score,
                                         "bootstrap": bootstrap}})
    out = experiment("audit").run(inv)
    emit_report(out.result, json_out=json_out, output=output, plot=plot, payload=out.payload)


@app.command()
@clean_errors
def spectral(
    ctx: typer.Context,
    features: Optional[Path] = typer.Option(None, "--features", help="An .npz with arrays features (n, d), y, g and optionally pred."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Or: a data set with groups; a model is trained and the features of its train split used (the reference code's choice)."),
    method: str = typer.Option("erm", "--method", help="With --dataset: the training method of the model (e.g. upsampling)."),
    model: str = typer.Option("mlp", "--model", help="With --dataset: mlp | lenet5 | resnet | cifarnet | linear."),
    layer: str = typer.Option("auto", "--layer", help="With --dataset: auto (the unpooled last hidden state where the model has "
                              "one, as the reference code: lenet5, resnet, cifarnet) | unpooled | pooled (the penultimate features)."),
    width: float = typer.Option(1.0, help="With --dataset: width multiplier."),
    epochs: int = typer.Option(10, help="With --dataset: training epochs."),
    split: str = typer.Option("train", help="The split whose features are analysed (train | val | test): with --dataset, or "
                              "with --features from `stratalab embed`. Train, as the reference code; minority and majority "
                              "groups are always decided within each class by its train counts."),
    init: Optional[Path] = typer.Option(None, "--init", help="With --dataset: finetune from these pretrained weights (`stratalab pretrain`)."),
    finetune: str = typer.Option("full", "--finetune", help="With --init: full | last_layer."),
    seed: int = typer.Option(0, help="With --dataset: seed of data and training."),
    top_k: int = typer.Option(10, "--top-k", help="Eigenvalues per group."),
    data_dir: DataDirOption = None,
    option: OptionOption = None,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the top-eigenvalue figure (.png/.pdf/.svg; LaBonte et al. Fig. 4)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write spectra and ratios as .json."),
    json_out: JsonOption = False,
    threads: ThreadsOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
) -> None:
    """Spectral imbalance (LaBonte et al. 2024): the top eigenvalues of every group's feature
    covariance and, per class, rho(y) = lambda_1(minority group) / lambda_1(majority group) beside
    the accuracy gap between those groups (the paper finds rho >= 1 for most classes).

    Example: `stratalab spectral --dataset spurious-mnist -d ../shared/data --model lenet5 --epochs 3 --plot spec.png`
    """
    from ..analysis import plot_group_spectra
    from ..report import check_output_path, spectral_table

    if (features is None) == (dataset is None):
        raise ValueError("give exactly one of --features FILE.npz or --dataset NAME.")
    if features is not None:
        refuse_unused(ctx, ["method", "model", "layer", "width", "epochs", "init", "finetune", "seed", "data_dir", "option",
                            "threads", "device", "precision"],
                      "with --features (they set up the model that --dataset trains)")
    check_output_path(output, (".json",), "--output")
    check_output_path(plot, FIGURE_SUFFIXES, "--plot")
    not_an_input(output, "--output", features)
    cfg: dict[str, Any] = {"top_k": top_k}
    if features is not None:  # a `stratalab embed` file: one of its splits (None: train, the default)
        cfg["split"] = split if explicit(ctx, "split") else None
    if dataset is not None:
        cfg.update(method=method, model=model, width=width, epochs=epochs, split=split, features=layer,
                   init=str(init.expanduser().resolve()) if init is not None else None, finetune=finetune,
                   **hardware(ctx, {}, device, precision))
    inv = Invocation("spectral", dataset=dataset, dataset_options=parse_options(option),
                     data_dir=None if data_dir is None else str(data_dir),
                     seeds=[seed], configs={"config": cfg}, inputs={"features": str(features) if features else None})
    out = experiment("spectral").run(inv, backend=make_backend("local", None, None, threads))
    rep, names = out.result, out.extra["names"]
    if plot is not None:
        plot_group_spectra(rep, plot)
    if write_payload(out.payload, output, json_out):
        return
    console.print(spectral_table(rep.ratios, f"Spectral imbalance of {out.payload['source']} (minority/majority by "
                                 f"{'train' if out.extra['by_train_counts'] else 'these'} counts)", names.get("group_names")))
    if len(rep.ratios):
        console.print(f"rho >= 1 in {int((rep.ratios['rho'] >= 1).sum())} of {len(rep.ratios)} classes.")
    else:  # an empty table and "0 of 0 classes" said nothing
        per_class = rep.spectra.groupby("class")["group"].nunique().to_dict() if len(rep.spectra) else {}
        console.print("rho(y) is undefined here: it compares a class's minority and majority group, and no class has "
                      "two groups with at least 2 examples each (groups per class: "
                      + (", ".join(f"{c}: {n}" for c, n in per_class.items()) or "none") + ").")
    say_written(("results", output), ("figure", plot))
