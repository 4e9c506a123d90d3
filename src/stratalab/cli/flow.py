"""``stratalab flow``: train FlowAug's decoupled flow, draw its augmentations."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from .._io import check_input_file
from .app import clean_errors, console, err, flow_app
from .common import (
    FIGURE_SUFFIXES,
    DataDirOption,
    DeviceOption,
    JsonOption,
    OptionOption,
    PrecisionOption,
    ThreadsOption,
    check_threads,
    hardware,
    invocation,
    parse_floats,
    parse_options,
    say_written,
)

MAX_SAMPLE_COLUMNS = 64  # flow samples: images (columns) a figure shows


@flow_app.command("train")
@clean_errors
def flow_train(
    ctx: typer.Context,
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the flow (.pt; loads with weights_only=True)."),
    dataset: str = typer.Option("cifar10-b", "--dataset", help="Image data set whose train split the flow models (cifar10-b: CIFAR-10)."),
    data_dir: DataDirOption = None,
    option: OptionOption = None,
    epochs: int = typer.Option(4, help="Passes over the train split."),
    steps: int = typer.Option(4, help="Flow steps per squeeze level (ActNorm, 1x1 conv, coupling conditioned on z)."),
    levels: int = typer.Option(2, help="Squeeze levels (image sides must divide by 2**levels)."),
    hidden: int = typer.Option(64, help="Channels of each coupling network."),
    z_dim: int = typer.Option(64, "--z-dim", help="Size of the global latent z that FlowAug edits."),
    free_bits: float = typer.Option(0.1, "--free-bits", help="Nats per z dimension the KL is not pushed below (keeps z in use)."),
    z_affine: bool = typer.Option(False, "--z-affine", help="A per-channel affine map of the pixels given by z before the flow, "
                                  "so z carries the global colour and contrast (issue 21)."),
    kl_warmup: int = typer.Option(0, "--kl-warmup", help="Steps over which the KL term's weight rises from 0 to 1 (0: none)."),
    coupling_kernel: int = typer.Option(3, "--coupling-kernel", help="3: coupling networks see neighbours; 1: each squeezed "
                                        "block alone, so what spans blocks (the global look) must come from z."),
    colour_std: float = typer.Option(0.0, "--colour-std", help="With --z-affine: train z's per-channel shift to each image's "
                                     "mean colour, a Gaussian term of this std (e.g. 0.01; 0: off), so the colour is read "
                                     "from z. A training term only: bits/dim is the ELBO without it."),
    lr: float = typer.Option(1e-3, help="Adam learning rate (linear warm-up over 200 steps)."),
    batch_size: int = typer.Option(64, help="Mini-batch size."),
    n_eval: int = typer.Option(2000, "--n-eval", help="Test images on which bits/dim is reported (0: skip)."),
    seed: int = typer.Option(0, help="Seed of initialisation, batches, dequantisation and z samples."),
    json_out: JsonOption = False,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    threads: ThreadsOption = None,
) -> None:
    """Train the decoupled generative flow behind FlowAug (global z from an encoder, a Glow
    conditioned on z for the local part) on a data set's train split, and report its bits/dim.

    Example: `stratalab flow train -d ../shared/data --epochs 4 -o flow.pt`, then
    `stratalab flow samples flow.pt -d ../shared/data -o samples.png` and
    `stratalab run cifar-b -d ../shared/data --augment flip_crop,flowaug --flow flow.pt`.
    """
    import numpy as np
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..data import load
    from ..experiments.backend import torch_threads
    from ..models.flow import FlowConfig, bits_per_dim, save_flow, train_flow
    from ..report import check_output_path

    check_output_path(output, (".pt",), "--output")
    check_threads(threads)
    hw = hardware(ctx, {}, device, precision)
    if n_eval < 0:
        raise ValueError(f"--n-eval must be >= 0, got {n_eval}.")
    settings = dict(levels=levels, steps=steps, hidden=hidden, z_dim=z_dim, free_bits=free_bits, epochs=epochs,
                    batch_size=batch_size, lr=lr, seed=seed, z_affine=z_affine, kl_warmup=kl_warmup,
                    coupling_kernel=coupling_kernel, colour_std=colour_std)
    if isinstance(levels, int) and 1 <= levels <= 16:  # every setting but the image size, before any data is read
        FlowConfig(image_shape=(3, 2 ** levels, 2 ** levels), **settings)  # type: ignore[arg-type]
    ds = load(dataset, data_dir=data_dir, seed=seed, **parse_options(option))
    shape = ds.train.input_shape
    if len(shape) != 3:
        raise ValueError(f"{ds.name} has inputs of shape {shape}; the flow needs images (C, H, W).")
    cfg = FlowConfig(image_shape=shape, **settings)  # type: ignore[arg-type]
    x = np.asarray(ds.train.load_x(), dtype=np.float32)
    test_x = None
    if n_eval and ds.test is not None:
        pick = np.random.default_rng(0).permutation(len(ds.test))[:n_eval]
        test_x = np.asarray(ds.test.load_x(np.sort(pick)), dtype=np.float32)
    t0 = time.perf_counter()
    with torch_threads(threads) as used, Progress(
            TextColumn(f"flow on {ds.name}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=err, disable=json_out) as bar:
        task = bar.add_task("flow", total=None)

        def said(row: dict[str, Any]) -> None:
            if not json_out:
                err.print(f"epoch {row['epoch']}/{epochs}: train bits/dim {row['train_bpd']:.3f}, KL(z) "
                          f"{row['kl_nats']:.1f} nats, {row['seconds']:.0f} s")

        flow, history = train_flow(x, cfg, progress=said, on_step=lambda k, n: bar.update(task, completed=k, total=n),
                                   device=hw["device"], precision=hw["precision"])
        train_seconds = time.perf_counter() - t0
        test_bpd = bits_per_dim(flow, test_x, seed=seed) if test_x is not None else None
    record: dict[str, Any] = {"command": invocation(ctx), "dataset": ds.name, "n_train": int(len(x)),
                              "train_seconds": train_seconds, **hw, "threads": used, "test_bpd": test_bpd,
                              "n_eval": int(len(test_x)) if test_x is not None else 0}
    save_flow(flow, output, history=history, extra=record)
    info = {"output": str(output), "config": cfg.to_dict(), "history": history, **record}
    if json_out:
        print(json.dumps(info, indent=2))
        return
    bpd = f"test bits/dim {record['test_bpd']:.3f} on {record['n_eval']} images" if record["test_bpd"] is not None else "no test images"
    console.print(f"flow on {ds.name} ({len(x):,} images, {epochs} epochs, {train_seconds:.0f} s): {bpd}; "
                  f"KL(z) {history[-1]['kl_nats']:.1f} nats; wrote {output}")


@flow_app.command("samples")
@clean_errors
def flow_samples(
    flow_path: Path = typer.Argument(..., help="A flow written by `stratalab flow train`."),
    output: Path = typer.Option(..., "--output", "-o", help="The figure (.png, .pdf or .svg)."),
    dataset: str = typer.Option("cifar10-b", "--dataset", help="Data set whose test images are augmented."),
    data_dir: DataDirOption = None,
    option: OptionOption = None,
    n: int = typer.Option(8, "--n", help="Images (columns) to show, in same-class pairs (an odd number is rounded down)."),
    sigma: str = typer.Option("0.1,0.5", "--sigma", help="Algorithm 1's sigma per row (the paper: 0.1)."),
    seed: int = typer.Option(0, help="Seed of the images picked and of the noise."),
    json_out: JsonOption = False,
) -> None:
    """Draw FlowAug's augmentations of test images: the originals, the flow's reconstruction
    F_dec(F_enc(x)), Algorithm 1 (truncated Gaussian on z) at each --sigma, Algorithm 2 (z mixed
    with a same-class image's, m ~ Beta(1, 1) >= 0.5), and z swapped entirely (m = 0).
    """
    from ..augment.flowaug import flow_sample_rows, plot_flow_samples
    from ..data import load
    from ..models.flow import load_flow
    from ..report import check_output_path

    check_output_path(output, FIGURE_SUFFIXES, "--output")
    sigmas = parse_floats(sigma, "--sigma")
    if not 2 <= n <= MAX_SAMPLE_COLUMNS:  # --n 100000000 hung drawing a figure of that many columns
        raise ValueError(f"--n must be in 2..{MAX_SAMPLE_COLUMNS} (one column of the figure per image; Algorithm 2 "
                         f"needs a partner), got {n}.")
    flow, record = load_flow(check_input_file(flow_path, "flow", (".pt",)))
    ds = load(dataset, data_dir=data_dir, seed=seed, **parse_options(option))
    rows = flow_sample_rows(flow, ds.test, n=n - n % 2, sigmas=sigmas, seed=seed)
    plot_flow_samples(rows, output, title=f"FlowAug on {ds.name} (flow: {flow_path.name})")
    change = {name: float(v["change"]) for name, v in rows.items()}
    if json_out:
        print(json.dumps({"output": str(output), "mean_abs_pixel_change": change}, indent=2))
        return
    console.print("mean |pixel change| vs the original: " + ", ".join(f"{k} {v:.4f}" for k, v in change.items()))
    say_written(("figure", output))
