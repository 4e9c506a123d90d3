"""``stratalab train`` (one model, ERM or a group-robust method) and ``stratalab pretrain``
(weights on a source task, to finetune with ``train --init``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from ..experiments import Invocation, experiment
from ..report import check_output_path
from .app import app, clean_errors, console, err
from .common import (
    ConfigOption,
    DataDirOption,
    DatasetOption,
    DeviceOption,
    JsonOption,
    OptionOption,
    PrecisionOption,
    ThreadsOption,
    WorkersOption,
    check_threads,
    dataset_args,
    explicit,
    hardware,
    make_backend,
    merge,
    not_an_input,
    parse_options,
    read_config_file,
    refuse_unused,
    write_payload,
)


def _methods_help() -> str:
    from ..train.registry import methods_help

    return methods_help()


@app.command()
@clean_errors
def train(
    ctx: typer.Context,
    dataset: DatasetOption = None,
    method: str = typer.Option("erm", "--method", help="The training method (registry `stratalab.train.METHODS`): " + _methods_help()),
    model: str = typer.Option("mlp", "--model", help="mlp | lenet5 | resnet | cifarnet | linear (a linear head on feature inputs); or a "
                              "paper backbone through Hugging Face transformers (pip install 'stratalab[hf]'): resnet18 | resnet50 | "
                              "convnext_tiny | swin_t | vit_b_16 | bert-base-uncased | distilbert-base-uncased | a local model folder."),
    width: float = typer.Option(1.0, help="Width multiplier of the model (> 0; scaling studies)."),
    epochs: int = typer.Option(20, help="Training epochs."),
    batch_size: int = typer.Option(128, help="Mini-batch size."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    weight_decay: float = typer.Option(0.0, help="Weight decay."),
    optimizer: str = typer.Option("adam", help="adam | adamw | sgd."),
    schedule: str = typer.Option("constant", help="constant | multistep (x0.1 at 50% and 75%) | cosine | linear (to zero)."),
    seed: int = typer.Option(0, help="Seed of data construction, initialisation and data order."),
    select: str = typer.Option("val_wca", "--select", help="Checkpoint criterion: val_wga (needs val groups) | val_wca | val_avg | "
                               "bias_unsupervised (no group label: first trains an ERM bias proxy, Tsirigotis et al. 2023)."),
    mixture_ratio: Optional[float] = typer.Option(None, help="r of mixture balancing: cap each class at r x the smallest class."),
    gdro_eta: float = typer.Option(0.01, help="Group DRO step size of the group weights."),
    gdro_adjustment: float = typer.Option(0.0, help="Group DRO generalisation adjustment C."),
    gdro_balanced_sampler: bool = typer.Option(False, "--gdro-balanced-sampler", help="Group DRO with group-balanced batches."),
    jtt_epochs: int = typer.Option(1, help="JTT: epochs T of the error-finding ERM model."),
    jtt_upsample: int = typer.Option(20, help="JTT: lambda_up, times each error appears per epoch."),
    augment: str = typer.Option("none", "--augment", help="Training augmentation: none | flip_crop (CIFAR: pad 4, crop, flip) | resized_crop "
                                "(Waterbirds/CelebA backbones: random resized crop 0.7-1 and flip) | autoaugment | cutout | mixup | cutmix."),
    init: Optional[Path] = typer.Option(None, "--init", help="Finetune from weights written by `stratalab pretrain` (same --model and --width)."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="A backbone's weights: a local Hugging Face folder (config.json + "
                                             "model.safetensors, and the tokenizer for text) or a Hub id in the local cache; nothing is downloaded."),
    finetune: str = typer.Option("full", "--finetune", help="With --init or --pretrained: full (every layer) | last_layer (only the head is trained)."),
    max_length: int = typer.Option(256, "--max-length", help="Text encoders: tokens per text (truncated / padded); tokenised once, cached beside the data."),
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    option: OptionOption = None,
    checkpoint_dir: Optional[Path] = typer.Option(None, help="Save the last epoch here and resume from it."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the run (config, history, selected epoch, metrics) as .json."),
    json_out: JsonOption = False,
    threads: ThreadsOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    workers: WorkersOption = 0,
) -> None:
    """Train a model with ERM or a group-robust method and print val/test subgroup tables.

    Example: `stratalab train --dataset u-digits --method gdro --epochs 30 --select val_wga`
    """
    file_cfg = read_config_file(config, "train") if config is not None else {}
    not_an_input(output, "--output", config)
    cli = dict(method=method, model=_local_or_id(model), width=width, epochs=epochs, batch_size=batch_size, lr=lr,
               weight_decay=weight_decay, optimizer=optimizer, schedule=schedule, select=select,
               mixture_ratio=mixture_ratio, gdro_eta=gdro_eta, gdro_adjustment=gdro_adjustment,
               gdro_balanced_sampler=gdro_balanced_sampler, jtt_epochs=jtt_epochs, jtt_upsample=jtt_upsample,
               init=str(init.expanduser().resolve()) if init is not None else None, finetune=finetune,
               pretrained=_local_or_id(pretrained), max_length=max_length, workers=workers, augment=augment)
    name, ddir, opts = dataset_args(ctx, file_cfg, dataset, data_dir, option)
    merged = merge(ctx, file_cfg.get("config", {}), cli)
    merged.update(hardware(ctx, file_cfg.get("config", {}), device, precision))
    file_seed = file_cfg.get("seeds", [merged.get("seed", 0)])
    seeds = [seed] if explicit(ctx, "seed") or not file_cfg else [int(s) for s in file_seed]
    if len(seeds) != 1:
        raise ValueError(f"`stratalab train` takes one seed, but --config {config} lists {seeds}; give --seed N, "
                         "or run it once per seed (`stratalab run ...` commands take several).")
    merged["seed"] = seeds[0]
    refuse_method_options(ctx, str(merged.get("method", method)))
    check_output_path(output, (".json",), "--output")
    not_an_input(output, "--output", name, merged.get("init"))
    if checkpoint_dir is not None and checkpoint_dir.exists() and not checkpoint_dir.is_dir():
        raise ValueError(f"--checkpoint-dir {checkpoint_dir} is a file; give a folder (created if missing).")
    inv = Invocation("train", dataset=name, dataset_options=opts, data_dir=None if ddir is None else str(ddir), seeds=seeds,
                     configs={"config": merged})
    run_train(inv, checkpoint_dir=checkpoint_dir, output=output, json_out=json_out,
              backend=make_backend("local", None, None, threads))


def _local_or_id(pretrained: Optional[str]) -> Optional[str]:
    """An existing folder as an absolute path (a result file stays valid from any folder); else the
    Hub id as given."""
    if pretrained is None:
        return None
    p = Path(pretrained).expanduser()
    return str(p.resolve()) if p.is_dir() and (p / "config.json").is_file() else pretrained


def refuse_method_options(ctx: typer.Context, method: str) -> None:
    """A method-specific option (``MethodSpec.options``) given with a method that does not read it."""
    from ..train.registry import METHODS

    readers: dict[str, list[str]] = {}
    for spec in METHODS.values():
        for opt in spec.options:
            readers.setdefault(opt, []).append(spec.name)
    unused = [o for o, names in readers.items() if method not in names]
    for o in unused:
        refuse_unused(ctx, [o], f"with --method {method} (it is read by {', '.join(readers[o])})")


def run_train(inv: Invocation, *, checkpoint_dir: Optional[Path] = None, output: Optional[Path] = None,
              json_out: bool = False, backend: Any = None) -> dict[str, Any]:
    """Train with a progress bar per stage on stderr, then print (or write) the result."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..report import group_table, summary_table

    select = inv.config.get("select", "val_wca")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} epochs"),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err, transient=True,
                  disable=json_out or not sys.stderr.isatty()) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, epoch: int, total: int, row: dict[str, Any]) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, info="")
            sel = row.get("selection", {}).get(select)
            info = (f"loss {row['train_loss']:.3f}" if "train_loss" in row else "") + (
                f", val {select} {100 * sel:.1f}%" if sel is not None else "")
            bar.update(tasks[stage], completed=epoch, info=info)

        out = experiment("train").run(inv, backend=backend, progress=progress,
                                      outputs={"checkpoint_dir": checkpoint_dir} if checkpoint_dir is not None else None)
    payload, result, cfg, ds = out.payload, out.result, out.extra["config"], out.extra["data"]
    if write_payload(payload, output, json_out):
        return payload
    console.print(f"[bold]{cfg.method}[/bold] on {ds.name}: model {cfg.model}, {cfg.epochs} epochs, seed {cfg.seed}; "
                  f"selected epoch {result.selected_epoch} by {cfg.select}; labels used: "
                  + ", ".join(f"{k}: {v}" for k, v in payload["labels_used"].items()))
    for split in ("val", "test"):
        rep = result.reports[split]
        console.print(group_table(rep, title=f"{split}: accuracy per subgroup (%)"))
        console.print(summary_table(rep, title=f"{split}: summary"))
    if output is not None:
        console.print(f"wrote run: {output}")
    return payload


@app.command()
@clean_errors
def pretrain(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", help="Source task, e.g. mnist-digits (10-way MNIST) or digits (embedded, 8x8)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the weights (.pt; loads with weights_only=True)."),
    model: str = typer.Option("lenet5", "--model", help="mlp | lenet5 | resnet | linear: the family finetuned later with --init."),
    width: float = typer.Option(1.0, help="Width multiplier (> 0); finetune with the same --width."),
    epochs: int = typer.Option(3, help="Pretraining epochs."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    batch_size: int = typer.Option(128, help="Mini-batch size."),
    seed: int = typer.Option(0, help="Seed of data and initialisation."),
    data_dir: DataDirOption = None,
    option: OptionOption = None,
    json_out: JsonOption = False,
    threads: ThreadsOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
) -> None:
    """Pretrain a model on a source task and save its weights, to finetune with `stratalab train
    --init` (LaBonte et al. 2024 finetune pretrained models; nothing can be downloaded here, so the
    pretraining is ours).

    Example: `stratalab pretrain --dataset mnist-digits -d ../shared/data --width 2 -o lenet-w2.pt`
    """
    from ..data import load
    from ..experiments.backend import torch_threads
    from ..models import n_params, save_pretrained
    from ..train import TrainConfig, run

    cfg = TrainConfig(model=model, width=width, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, select="val_avg",
                      **hardware(ctx, {}, device, precision))
    check_output_path(output, (".pt",), "--output")
    check_threads(threads)
    ds = load(dataset, data_dir=data_dir, seed=seed, **parse_options(option))
    t0 = time.perf_counter()
    with torch_threads(threads) as used:
        res = run(ds, cfg)
    shape = ds.train.input_shape
    save_pretrained(res.model, output, model_name=model, width=width, input_shape=shape, n_classes=ds.n_classes,
                    source=ds.name, config={**cfg.to_dict(), "threads": used})
    info = {"output": str(output), "source": ds.name, "model": model, "width": width, "params": n_params(res.model),
            "source_test_accuracy": res.reports["test"].average_accuracy, "seconds": time.perf_counter() - t0,
            "threads": used}
    if json_out:
        print(json.dumps(info, indent=2))
        return
    console.print(f"pretrained {model} x{width:g} ({info['params']:,} parameters) on {ds.name}: test accuracy "
                  f"{100 * info['source_test_accuracy']:.1f}%, {info['seconds']:.0f} s; wrote {output}")


@app.command()
@clean_errors
def embed(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", help="Data set name (see `stratalab datasets`) or path of your .npz/.csv."),
    output: Path = typer.Option(..., "--output", "-o", help="The .npz to write: arrays train, val, test (features) and y_*, g_*."),
    model: str = typer.Option(..., "--model", help="A backbone (resnet50, convnext_tiny, swin_t, vit_b_16, bert-base-uncased, ...), a "
                              "local Hugging Face folder, or a stratalab model (mlp, lenet5, resnet, cifarnet) with --init."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="The backbone's weights: a local Hugging Face folder or a Hub id in the local cache."),
    init: Optional[Path] = typer.Option(None, "--init", help="Or: weights written by `stratalab pretrain` (same --model)."),
    epochs: int = typer.Option(0, help="0: the features of the model as loaded (pretrained features); N: train ERM for N epochs first "
                               "(selected on val worst-class accuracy) and write its features."),
    lr: float = typer.Option(1e-3, help="With --epochs: Adam learning rate."),
    batch_size: int = typer.Option(128, help="Mini-batch size (training and feature extraction)."),
    unpooled: bool = typer.Option(False, "--unpooled", help="The unpooled last hidden state (a CNN's feature map, every token) "
                                  "instead of the pooled features (lenet5, resnet, cifarnet and the Hugging Face backbones)."),
    max_length: int = typer.Option(256, "--max-length", help="Text encoders: tokens per text."),
    seed: int = typer.Option(0, help="Seed of data, head initialisation and training."),
    data_dir: DataDirOption = None,
    option: OptionOption = None,
    json_out: JsonOption = False,
    threads: ThreadsOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    workers: WorkersOption = 0,
) -> None:
    """Write a model's penultimate features of every split once (.npz, streamed batch by batch), for
    `run george --features` and `spectral --features F --split S` to read (and, in Python, DFR's
    `fit_dfr`: arrays train, val, test, y_*, g_*).

    Example: `stratalab embed --dataset waterbirds -d DATA --model resnet50 --pretrained ./resnet-50 --workers 2 -o wb.npz`,
    then `stratalab run george --dataset waterbirds -d DATA --features wb.npz`.
    """
    from ..data import load
    from ..experiments.backend import torch_threads
    from ..train import TrainConfig, embed_dataset

    check_output_path(output, (".npz",), "--output")
    check_threads(threads)
    if epochs < 0:
        raise ValueError(f"--epochs must be >= 0 (0: no training), got {epochs}.")
    if epochs == 0:
        refuse_unused(ctx, ["lr"], "with --epochs 0 (nothing is trained)")
    cfg = TrainConfig(model=str(_local_or_id(model)), epochs=max(epochs, 1), lr=lr, batch_size=batch_size, seed=seed,
                      pretrained=_local_or_id(pretrained), init=str(init.expanduser().resolve()) if init else None,
                      max_length=max_length, workers=workers, **hardware(ctx, {}, device, precision))
    not_an_input(output, "--output", dataset, cfg.init, cfg.pretrained)
    ds = load(dataset, data_dir=data_dir, seed=seed, **parse_options(option))
    t0 = time.perf_counter()
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with torch_threads(threads) as used, Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                                  TimeElapsedColumn(), console=err, transient=True,
                                                  disable=json_out or not sys.stderr.isatty()) as bar:
        tasks: dict[str, Any] = {}

        def progress(split: str, done: int, total: int) -> None:
            if split not in tasks:
                tasks[split] = bar.add_task(f"features of {split}", total=total)
            bar.update(tasks[split], completed=done)

        info = embed_dataset(ds, cfg, str(output), train=epochs > 0, unpooled=unpooled, batch_size=batch_size, progress=progress)
    info.update(dataset=ds.name, seconds=time.perf_counter() - t0, threads=used, config=cfg.to_dict())
    if json_out:
        print(json.dumps(info, indent=2, default=str))
        return
    console.print(f"features of {model} ({'trained ' + str(epochs) + ' epochs' if epochs else 'as loaded'}) on {ds.name}: "
                  + ", ".join(f"{k} {v:,}" for k, v in info["sizes"].items()) + f" examples, {info['seconds']:.0f} s; wrote {output}")
