"""``stratalab run ...``: the grid pipelines (GEORGE, D3M Table 1, LaBonte et al.'s scaling study,
Chiu et al.'s CIFAR-B study). Each command turns its flags (and a ``--config`` file) into an
:class:`~stratalab.experiments.Invocation`, checks its output paths, runs the registered
experiment and prints or writes the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pandas as pd
import typer

from .._io import check_input_file
from ..experiments import Invocation, experiment, plot_collapse, plot_scaling, plot_sweep
from ..experiments.cifar_b import plot_class_vs_worst
from ..report import cells_table, check_output_path, d3m_table, george_table, recovery_table, scaling_table, sweep_table, write_table_atomic
from ..report.tables import cifar_b_table
from .app import clean_errors, console, run_app
from .common import (
    BACKEND_HELP,
    FIGURE_SUFFIXES,
    TABLE_SUFFIXES,
    AddressOption,
    ConfigOption,
    DataDirOption,
    DeviceOption,
    JsonOption,
    OptionOption,
    PrecisionOption,
    ThreadsOption,
    WorkDirOption,
    dataset_args,
    flat_config,
    hardware,
    make_backend,
    merge,
    not_an_input,
    parse_floats,
    parse_names,
    parse_options,
    read_config_file,
    refuse_unused,
    say_written,
    seeds_arg,
    step_printer,
    write_payload,
)


@run_app.command("george")
@clean_errors
def run_george_cmd(
    ctx: typer.Context,
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Data set name or path of your .npz/.csv (needs train/val/test)."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds, e.g. 0,1,2."),
    model: Optional[str] = typer.Option(None, help="ERM/GDRO model (default: the data set's recipe, else lenet5 for grey 32x32 images, cifarnet for RGB 32x32, else mlp)."),
    width: Optional[float] = typer.Option(None, help="Width multiplier of the model (u-digits recipe: 4)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs of each training step (ERM, GDRO, oracle GDRO); u-mnist recipe 20, u-digits 10."),
    erm_epochs: Optional[int] = typer.Option(None, "--erm-epochs", help="Epochs of step 1's ERM only, whose features are clustered (default: --epochs)."),
    augment: Optional[str] = typer.Option(None, "--augment", help="Training augmentation of every step: none | flip_crop (pad 4, random crop, flip; the reference code's U-MNIST training)."),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate (GEORGE's U-MNIST recipe: 2e-3, x0.1 at 50% and 75%)."),
    batch_size: Optional[int] = typer.Option(None, help="Mini-batch size (128)."),
    reducer: Optional[str] = typer.Option(None, help="umap (default) | pca | hardness | none."),
    cluster_method: Optional[str] = typer.Option(None, help="gmm | kmeans (u-digits recipe: kmeans; else gmm)."),
    k_max: Optional[int] = typer.Option(None, help="Largest number of clusters tried per class (10)."),
    no_overcluster: bool = typer.Option(False, "--no-overcluster", help="Skip GEORGE's overclustering step."),
    min_cluster_size: Optional[int] = typer.Option(None, help="Overclustering: least train and val points of a kept sub-cluster (the paper: 25; u-digits recipe: 10)."),
    feature_layer: Optional[str] = typer.Option(None, "--feature-layer", help="Which ERM layer is clustered: penultimate (the paper, the default) | previous (one block earlier, where coarse-class training has not merged a class's subclasses: better clusters on U-MNIST, not better robust accuracy)."),
    features: Optional[Path] = typer.Option(None, "--features", help="Your own embeddings: .npz with train, val, test arrays (skips step 1's features)."),
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    option: OptionOption = None,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the results (config, per-seed rows, cluster recovery) as .json."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the Fig. 5 style figure of the first seed (.png/.pdf/.svg)."),
    json_out: JsonOption = False,
    backend: str = typer.Option("local", "--backend", help=BACKEND_HELP),
    address: AddressOption = None,
    work_dir: WorkDirOption = None,
    threads: ThreadsOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
) -> None:
    """GEORGE (Sohoni et al. 2020): ERM -> cluster its features per class -> Group DRO on the clusters,
    beside ERM and Group DRO on the true subclasses. No true subclass label is used by GEORGE itself.
    """
    file_cfg = read_config_file(config, "run george") if config is not None else {}
    not_an_input(output, "--output", config)
    name, ddir, opts = dataset_args(ctx, file_cfg, dataset, data_dir, option)
    overrides = dict(model=model, width=width, epochs=epochs, erm_epochs=erm_epochs, augment=augment, lr=lr,
                     batch_size=batch_size, reducer=reducer, cluster_method=cluster_method, k_max=k_max,
                     overcluster=False if no_overcluster else None, min_cluster_size=min_cluster_size,
                     min_val_size=min_cluster_size, feature_layer=feature_layer)
    settings = {**flat_config(file_cfg.get("config")), **{k: v for k, v in overrides.items() if v is not None}}
    settings.update(hardware(ctx, settings, device, precision))
    feats = features if features is not None else (Path(file_cfg["features"]) if file_cfg.get("features") else None)
    check_output_path(output, (".json",), "--output")
    check_output_path(plot, FIGURE_SUFFIXES, "--plot")
    not_an_input(output, "--output", name, feats)
    if feats is not None:
        check_input_file(feats, "--features", (".npz",))
    inv = Invocation("run george", dataset=name, dataset_options=opts, data_dir=None if ddir is None else str(ddir),
                     seeds=seeds_arg(ctx, file_cfg, seeds), configs={"config": settings},
                     inputs={"features": str(feats) if feats is not None else None})
    grid = make_backend(backend, address, work_dir, threads)
    out = experiment("run george").run(inv, backend=grid, progress=step_printer(json_out),
                                       outputs={"plot": plot} if plot is not None else None)
    if write_payload(out.payload, output, json_out):
        return
    table, runs = out.result, out.extra["runs"]
    console.print(george_table(table, name, ",".join(map(str, inv.seeds))))
    first = runs[0]
    if first["recovery"]:
        console.print(recovery_table(pd.DataFrame(first["recovery"]), first["recovery_overall"], first["seed"]))
    console.print("clusters per class: " + ", ".join(f"{k}: {v}" for k, v in first["clusters_per_class"].items()))
    if "GDRO (true subclasses)" not in first["rows"]:
        console.print(f"{name} has no true subclass labels in train and val, so there is no oracle row and the "
                      "robust accuracy uses the test groups (or the classes) it has.")
    say_written(("results", output), ("figure", plot))


@run_app.command("d3m")
@clean_errors
def run_d3m_cmd(
    ctx: typer.Context,
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Data set name or path of your .npz/.csv."),
    auto: bool = typer.Option(False, "--auto", help="Only the rows that use no group label: ERM and AUTO-D3M (pseudo-groups from the TRAK matrix)."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated rows of Table 1: erm, auto-d3m, jtt, dfr, d3m, rwg, subg, gdro (default: all)."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds, e.g. 0,1,2: mean and std over them."),
    model: str = typer.Option("mlp", "--model", help="mlp | lenet5 | resnet | linear."),
    width: float = typer.Option(1.0, help="Width multiplier of the model (> 0)."),
    epochs: int = typer.Option(20, help="Epochs of every trained model (ERM, retrained, baselines)."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    batch_size: int = typer.Option(128, help="Mini-batch size."),
    weight_decay: float = typer.Option(0.0, help="Weight decay."),
    proj_dim: int = typer.Option(512, help="TRAK projection dimension k."),
    trak_params: Optional[str] = typer.Option(None, help="'head' to attribute through the last layer only (faster), or comma-separated "
                                              "parameter-name prefixes (a backbone's last stage and head: head,body.encoder.stages.3)."),
    tune_baselines: bool = typer.Option(False, "--tune-baselines",
                                        help="Tune JTT (T, lambda_up) and Group DRO (C, weight decay, balanced sampling) on val worst-group accuracy, as their papers do."),
    trak_projector: str = typer.Option("gaussian", "--trak-projector",
                                       help="gaussian (TRAK's dense projection) | kronecker (per-layer Kronecker-factored: several times faster, no p x k matrix)."),
    trak_lam: float = typer.Option(1e-6, "--trak-lam", help="TRAK's ridge on G^T G, relative to its mean diagonal: 1e-6 = the paper's "
                                   "unregularised TRAK (D3M's default); 0.5 raised the LDS by a third on the TRAK benchmark."),
    trak_models: int = typer.Option(1, help="TRAK ensemble size M: 1 = the ERM model; M > 1 trains M models on random alpha-subsets (the paper: 100)."),
    trak_alpha: float = typer.Option(0.5, help="Fraction of train each ensemble model sees."),
    beta: float = typer.Option(1.0, help="Temperature of the soft maximum over group losses (eq. 3)."),
    weighting: str = typer.Option("softmax", help="softmax (eq. 3 of the paper) | loss (the public code: mean of loss_G * tau(G))."),
    removal: str = typer.Option("negative", help="negative: drop A_i < 0 (the paper's default) | search: choose k on val worst-group accuracy."),
    fraction: float = typer.Option(0.35, help="AUTO-D3M: share of each class in the lower-performing pseudo-group."),
    threshold: str = typer.Option("fraction", help="AUTO-D3M split: fraction (the paper) | zero (the public code: sign of the projection)."),
    sweep_points: int = typer.Option(5, help="Values of k per curve for Fig. 2 (val WGA vs examples removed); 0 skips it."),
    search_points: int = typer.Option(5, help="With --removal search: values of k tried (plus the A < 0 count)."),
    figure: Optional[Path] = typer.Option(None, "--figure", help="Write Fig. 2 (.png/.pdf/.svg)."),
    scores: Optional[Path] = typer.Option(None, "--scores", help="Keep the TRAK matrix (n_train x n_val) memory-mapped in this .npy (one file per seed)."),
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    option: OptionOption = None,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the result as .json (configs, table, every seed's metrics, sweep)."),
    removed: Optional[Path] = typer.Option(None, "--removed", help="Write the removed train examples with their alignment scores (.csv or .parquet; all seeds)."),
    json_out: JsonOption = False,
    backend: str = typer.Option("local", "--backend", help=BACKEND_HELP + " Tasks: each seed's ERM, baselines, TRAK ensemble members and retrains."),
    address: AddressOption = None,
    work_dir: WorkDirOption = None,
    threads: ThreadsOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
) -> None:
    """D3M Table 1 (Jain et al. 2024): ERM, AUTO-D3M, JTT, DFR, D3M, RWG, SUBG and Group DRO, each
    with the group labels it needs, worst-group and balanced test accuracy over seeds; D3M finds the
    training examples that hurt the worst groups with TRAK and retrains without them; AUTO-D3M needs
    no group label anywhere. Also Fig. 2 (--sweep-points, --figure) and Fig. 4 (the cells of train
    data with the most negative alignment)."""
    file_cfg = read_config_file(config, "run d3m") if config is not None else {}
    not_an_input(output, "--output", config)
    name, ddir, opts = dataset_args(ctx, file_cfg, dataset, data_dir, option)
    if auto and methods:
        raise ValueError("give either --auto or --methods, not both.")
    d3m_cli: dict[str, Any] = dict(proj_dim=proj_dim, trak_params=trak_params, trak_projector=trak_projector,
                                   trak_lam=trak_lam, tune_baselines=tune_baselines, n_models=trak_models, alpha=trak_alpha, beta=beta,
                                   weighting=weighting, removal=removal, fraction=fraction, threshold=threshold,
                                   search_points=search_points, sweep_points=sweep_points)
    d3m_cfg = merge(ctx, file_cfg.get("d3m_config", {}), d3m_cli, {"n_models": "trak_models", "alpha": "trak_alpha"})
    if auto:
        d3m_cfg["methods"] = ("erm", "auto-d3m")
    elif methods is not None:
        d3m_cfg["methods"] = parse_names(methods)
        if not d3m_cfg["methods"]:
            raise ValueError("--methods lists no method; give e.g. erm,d3m (or leave it out for all rows).")
    if int(d3m_cfg.get("n_models", 1)) == 1:
        refuse_unused(ctx, ["trak_alpha"], "with one TRAK model (--trak-models 1 attributes through the ERM model, "
                      "trained on all of train)")
    if d3m_cfg.get("removal") != "search":
        refuse_unused(ctx, ["search_points"], f"with --removal {d3m_cfg.get('removal')} (it is read by --removal search)")
    train_cli = dict(model=model, width=width, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay)
    inv = Invocation("run d3m", dataset=name, dataset_options=opts, data_dir=None if ddir is None else str(ddir),
                     seeds=seeds_arg(ctx, file_cfg, seeds), configs={"config": {**merge(ctx, file_cfg.get("config", {}), train_cli),
                                                                               **hardware(ctx, file_cfg.get("config", {}), device, precision)},
                                                                    "d3m_config": d3m_cfg})
    _check_d3m_outputs(inv, output=output, figure=figure, scores=scores, removed=removed)
    grid = make_backend(backend, address, work_dir, threads)
    out = experiment("run d3m").run(inv, backend=grid, progress=step_printer(json_out),
                                    outputs={"scores": scores} if scores is not None else None)
    table, data = out.result, out.extra["data"]
    written = []
    if figure is not None and not table.sweep().empty:
        written.append(("figure", plot_sweep(table, figure)))
    if removed is not None:
        parts = [res.removed_table(data(s.seed)).assign(seed=s.seed, mode=mode) for s in table.seeds for mode, res in s.d3m.items()]
        if parts:
            written.append(("removed examples", write_table_atomic(removed, pd.concat(parts, ignore_index=True))))
    if write_payload(out.payload, output, json_out):
        return
    console.print(d3m_table(table.summary(), name, ",".join(map(str, inv.seeds))))
    first = table.seeds[0]
    if "d3m" in first.d3m:
        cells = first.d3m["d3m"].cells(data(first.seed))
        if cells is not None:
            console.print(cells_table(cells, first.seed))
    sw = table.sweep_mean()
    if not sw.empty:
        console.print(sweep_table(sw))
    say_written(*written)


def _check_d3m_outputs(inv: Invocation, *, output: Optional[Path], figure: Optional[Path], scores: Optional[Path],
                       removed: Optional[Path]) -> None:
    """Every output path and the settings they need, before the first training step."""
    from ..experiments import D3MConfig

    dcfg = D3MConfig.from_dict(inv.configs["d3m_config"])
    modes = [m for m in ("d3m", "auto-d3m") if m in dcfg.methods]
    check_output_path(output, (".json",), "--output")
    check_output_path(figure, FIGURE_SUFFIXES, "--figure")
    check_output_path(removed, TABLE_SUFFIXES, "--removed")
    for what, out in (("--output", output), ("--removed", removed)):
        not_an_input(out, what, inv.dataset)
    if scores is not None:
        check_output_path(scores, (".npy",), "--scores")
    if figure is not None and ("d3m" not in dcfg.methods or not dcfg.sweep_points):
        raise ValueError("--figure draws Fig. 2, which needs the d3m row and --sweep-points > 0.")
    if removed is not None and not modes:
        raise ValueError("--removed lists what D3M / AUTO-D3M removed; include d3m or auto-d3m in --methods.")


@run_app.command("scaling")
@clean_errors
def run_scaling_cmd(
    ctx: typer.Context,
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Target task (finetuned; default: spurious-mnist)."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Target data-set option key=value, e.g. class_imbalance=5 n_train=6000."),
    pretrain_dataset: str = typer.Option("mnist-digits", help="Source task of the pretraining."),
    pretrain_option: Optional[list[str]] = typer.Option(None, "--pretrain-option", help="Source data-set option key=value."),
    model: str = typer.Option("lenet5", "--model", help="The model family."),
    widths: str = typer.Option("0.25,0.5,1,2,4", help="Comma-separated width multipliers (the family's sizes)."),
    methods: str = typer.Option("erm,subsetting,upsampling,upweighting,mixture", help="Class-balancing methods (erm = none)."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated seeds."),
    epochs: int = typer.Option(10, help="Finetuning epochs."),
    pretrain_epochs: int = typer.Option(3, help="Pretraining epochs per width (0 = no pretraining: train from scratch)."),
    finetune: str = typer.Option("full", help="full | last_layer."),
    lr: float = typer.Option(1e-3, help="Adam learning rate (pretraining and finetuning)."),
    mixture_ratio: float = typer.Option(2.0, help="Mixture balancing: cap each class at r x the smallest class."),
    select: str = typer.Option("val_wga", help="Epoch selection for the table: val_wga | val_wca | val_avg; the last epoch is reported too."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Keep (and reuse) each width's pretrained weights here."),
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the study (config, table, every run with its WGA curve) as .json."),
    figure: Optional[Path] = typer.Option(None, "--figure", help="The scaling figure: WGA vs parameters per method (.png/.pdf/.svg)."),
    collapse_figure: Optional[Path] = typer.Option(None, "--collapse-figure", help="WGA over finetuning epochs per method at the largest width."),
    json_out: JsonOption = False,
    backend: str = typer.Option("local", "--backend", help=BACKEND_HELP + " Tasks: each width's pretraining, each (width, method, seed) finetune."),
    address: AddressOption = None,
    work_dir: WorkDirOption = None,
    threads: ThreadsOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
) -> None:
    """LaBonte et al. (2024) model scaling x class balancing: for each width, pretrain on the source
    task, finetune on the target with each class-balancing method and seed; test worst-group and
    average accuracy against parameter count, and WGA over finetuning epochs (collapse).

    Example: `stratalab run scaling -d ../shared/data --option class_imbalance=5 --option n_train=6000 --figure scaling.png`
    """
    file_cfg = read_config_file(config, "run scaling") if config is not None else {}
    not_an_input(output, "--output", config)
    name, ddir, opts = dataset_args(ctx, file_cfg, dataset, data_dir, option, default="spurious-mnist")
    cli: dict[str, Any] = dict(pretrain_dataset=pretrain_dataset, pretrain_options=parse_options(pretrain_option), model=model,
                               widths=tuple(parse_floats(widths, "--widths")), methods=parse_names(methods),
                               epochs=epochs, pretrain_epochs=pretrain_epochs, finetune=finetune, lr=lr,
                               mixture_ratio=mixture_ratio, select=select)
    settings = merge(ctx, flat_config(file_cfg.get("config")), cli, {"pretrain_options": "pretrain_option"})
    settings.update(hardware(ctx, settings, device, precision))
    if int(settings.get("pretrain_epochs", 1)) == 0:
        refuse_unused(ctx, ["pretrain_dataset", "pretrain_option", "weights_dir"],
                      "with --pretrain-epochs 0 (no pretraining: every width trains from scratch)")
    if "mixture" not in settings.get("methods", ()):
        refuse_unused(ctx, ["mixture_ratio"], "without mixture in --methods")
    check_output_path(output, (".json",), "--output")
    check_output_path(figure, FIGURE_SUFFIXES, "--figure")
    check_output_path(collapse_figure, FIGURE_SUFFIXES, "--collapse-figure")
    if weights_dir is not None and weights_dir.exists() and not weights_dir.is_dir():
        raise ValueError(f"--weights-dir {weights_dir} is a file; give a folder.")
    inv = Invocation("run scaling", dataset=name, dataset_options=opts, data_dir=None if ddir is None else str(ddir),
                     seeds=seeds_arg(ctx, file_cfg, seeds), configs={"config": settings})
    grid = make_backend(backend, address, work_dir, threads)
    out = experiment("run scaling").run(inv, backend=grid, progress=step_printer(json_out),
                                        outputs={"weights_dir": weights_dir} if weights_dir is not None else None)
    res = out.result
    written = []
    if figure is not None:
        written.append(("scaling figure", plot_scaling(res, figure)))
    if collapse_figure is not None:
        written.append(("collapse figure", plot_collapse(res, collapse_figure)))
    if write_payload(out.payload, output, json_out):
        return
    console.print(scaling_table(res.table(), res.config.dataset, res.config.train.select))
    console.print(f"{len(res.runs)} finetuning runs in {res.seconds:.0f} s.")
    say_written(*written)


@run_app.command("cifar-b")
@clean_errors
def run_cifar_b_cmd(
    ctx: typer.Context,
    dataset: Optional[str] = typer.Option(None, "--dataset", help="cifar10-b (default) | cifar100-b (or any data set with test subgroups)."),
    option: OptionOption = None,
    augment: str = typer.Option("flip_crop,mixup,cutout,cutmix,autoaugment", "--augment",
                                help="Rows, comma-separated: flip_crop (the paper's Standard) | mixup | cutout | cutmix | autoaugment | flowaug (needs --flow)."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds: mean ± std over them."),
    flow: Optional[Path] = typer.Option(None, "--flow", help="The flowaug row's flow, from `stratalab flow train`."),
    flowaug_objective: str = typer.Option("gauss+std", "--flowaug-objective",
                                          help="FlowAug's views: gauss | mix (eq. 2), gauss+std | mix+std (eq. 3), gauss+mix | gauss+mix+std (eq. 4)."),
    flowaug_lambda: float = typer.Option(0.1, "--flowaug-lambda", help="Weight of the standard loss: lambda of eq. (3), lambda2 of eq. (4) (paper: 0.01-0.1)."),
    flowaug_mix_weight: float = typer.Option(1.0, "--flowaug-mix-weight", help="lambda1 of eq. (4), the Mix-z view's weight (paper: 1)."),
    flowaug_sigma: float = typer.Option(0.1, "--flowaug-sigma", help="Algorithm 1's sigma, the std of the truncated Gaussian step on z (paper: 0.1)."),
    flowaug_pairs: str = typer.Option("any", "--flowaug-pairs", help="Algorithm 2's partners: any (the paper's x1, x2 ~ X) | same_class."),
    model: str = typer.Option("cifarnet", "--model", help="cifarnet (airbench-style, the CPU recipe) | resnet | lenet5 | mlp."),
    width: float = typer.Option(1.0, help="Width multiplier of the model."),
    epochs: int = typer.Option(20, help="Training epochs."),
    lr: float = typer.Option(0.05, help="SGD learning rate (cosine schedule)."),
    batch_size: int = typer.Option(256, help="Mini-batch size."),
    weight_decay: float = typer.Option(5e-4, help="Weight decay (the paper: 5e-4)."),
    label_smoothing: float = typer.Option(0.0, help="Label smoothing of the targets."),
    corruptions: str = typer.Option("", "--corruptions", help="CIFAR-10-C families to audit under, comma-separated, or 'all' (default: none)."),
    severities: str = typer.Option("1,2,3,4,5", "--severities", help="Corruption severities (1..5)."),
    n_corrupt: Optional[int] = typer.Option(None, "--n-corrupt", help="Audit corruptions on N test images drawn at random, the same for every run (default: all)."),
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the study (config, table, every run) as .json."),
    figure: Optional[Path] = typer.Option(None, "--figure", help="Fig. 1/5: class accuracy beside its worst colour subgroup, per augmentation."),
    json_out: JsonOption = False,
    backend: str = typer.Option("local", "--backend", help=BACKEND_HELP + " Tasks: each (augmentation, seed)."),
    address: AddressOption = None,
    work_dir: WorkDirOption = None,
    threads: ThreadsOption = None,
    device: DeviceOption = "auto",
    precision: str = typer.Option("auto", "--precision", help="auto (default: bf16 where the device computes it natively, as this "
                                  "machine's AVX-512 BF16 CPU does: 1.6x faster at equal accuracy; else fp32) | fp32 | bf16 | fp16."),
) -> None:
    """Chiu, Chen and Ma's subgroup study on CIFAR-10-B / CIFAR-100-B: train with each data
    augmentation and seed, then audit on the colour subgroups of the test set: average accuracy,
    WeightedStd (eq. 5), MacroStd (eq. 6), worst subgroup; the same under CIFAR-10-C corruptions
    (--corruptions), and the correlation of accuracy with MacroStd.

    Example: `stratalab run cifar-b -d ../shared/data --augment flip_crop,cutmix --epochs 10 --corruptions gaussian_noise,fog --n-corrupt 2000`;
    with FlowAug: `stratalab flow train -d ../shared/data -o flow.pt`, then `--augment flip_crop,flowaug --flow flow.pt`.
    """
    from ..augment.corruptions import CORRUPTIONS

    file_cfg = read_config_file(config, "run cifar-b") if config is not None else {}
    not_an_input(output, "--output", config)
    name, ddir, opts = dataset_args(ctx, file_cfg, dataset, data_dir, option, default="cifar10-b")
    try:
        sev = tuple(int(v) for v in severities.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--severities takes comma-separated integers 1..5, got {severities!r}.") from None
    cli: dict[str, Any] = dict(
        augmentations=parse_names(augment), model=model, width=width, epochs=epochs, lr=lr, batch_size=batch_size,
        weight_decay=weight_decay, label_smoothing=label_smoothing,
        corruptions=tuple(CORRUPTIONS) if corruptions.strip() == "all" else parse_names(corruptions), severities=sev,
        n_corrupt=n_corrupt, flow=str(check_input_file(flow, "flow", (".pt",)).resolve()) if flow is not None else None,
        flowaug_objective=flowaug_objective, flowaug_std_weight=flowaug_lambda, flowaug_mix_weight=flowaug_mix_weight,
        flowaug_sigma=flowaug_sigma, flowaug_pairs=flowaug_pairs)
    settings = merge(ctx, flat_config(file_cfg.get("config")), cli, {"augmentations": "augment", "flowaug_std_weight": "flowaug_lambda"})
    if "flowaug" not in settings["augmentations"]:
        refuse_unused(ctx, ["flowaug_sigma", "flowaug_pairs"], "without flowaug in --augment")
    if "gauss" not in str(settings["flowaug_objective"]):
        refuse_unused(ctx, ["flowaug_sigma"], "without Algorithm 1 (gauss) in --flowaug-objective")
    if "mix" not in str(settings["flowaug_objective"]):
        refuse_unused(ctx, ["flowaug_pairs"], "without Algorithm 2 (mix) in --flowaug-objective")
    settings.update(hardware(ctx, settings, device, precision))
    check_output_path(output, (".json",), "--output")
    check_output_path(figure, FIGURE_SUFFIXES, "--figure")
    inv = Invocation("run cifar-b", dataset=name, dataset_options=opts, data_dir=None if ddir is None else str(ddir),
                     seeds=seeds_arg(ctx, file_cfg, seeds), configs={"config": settings})
    grid = make_backend(backend, address, work_dir, threads)
    out = experiment("run cifar-b").run(inv, backend=grid, progress=step_printer(json_out))
    res = out.result
    written = []
    if figure is not None:
        written.append(("figure", plot_class_vs_worst(res, figure)))
    if write_payload(out.payload, output, json_out):
        return
    console.print(cifar_b_table(res.table(), res.config.dataset, bool(res.config.corruptions)))
    corr = res.correlation()
    if corr["runs"] >= 3:
        console.print(f"accuracy vs MacroStd over {corr['runs']} runs: Pearson {corr['pearson']:.2f}, Spearman {corr['spearman']:.2f}.")
    console.print(f"{len(res.runs)} runs in {res.seconds:.0f} s.")
    say_written(*written)
