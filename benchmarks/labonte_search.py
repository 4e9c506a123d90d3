"""Where do LaBonte et al.'s class-balancing collapse and "scaling helps only with the right class
balancing" appear? A search over the settings of the paper's mechanism (issue 21, item 4): minority
examples repeated many times by upsampling or upweighting until the model memorises them.

Two target tasks, each finetuned from a backbone pretrained on other classes:
- **spurious-mnist** (a 4x4 corner patch agrees with the class in 95% of train), LeNet-5
  pretrained on 10-way MNIST digits (20k images, 2 epochs), Adam 1e-3, batches of 128;
- **cifar10-b-spurious** (cat/dog vs deer/horse, the CIFAR-10-B green background agrees with the
  class in 90% of train), cifarnet pretrained on the four CIFAR-10 vehicles (18k images, 6 epochs),
  the same optimiser; no augmentation anywhere, so repeated examples are seen identically.

Parts (each writes benchmarks/results/labonte_search_<part>.{json,md} and its figures):
- ``mnist-ratio``: class-imbalance ratio 5 / 20 / 50 (6k train images), width 1, 30 epochs;
- ``mnist-size``: minority-class size at ratio 20: 2k and 12k train images (about 100 and 570 of
  class 1), width 1, 20 epochs;
- ``mnist-scaling``: widths 0.25 / 0.5 / 1 / 2 (60x parameters) at ratio 20, 20 epochs;
- ``cifar``: ratio 5 at width 0.5 for 30 epochs, then widths 0.125 / 0.25 / 0.5 / 1 (60x) at ratio
  20 for 20 epochs.
Epoch counts were set from a 3-epoch trial so that the whole search fits in about an hour on two
cores (one part per core); ``--epochs`` overrides them all.
Every run evaluates the train split each epoch (``eval_train``), so each curve shows where train
accuracy saturates. Five balancing methods (none, subsetting, upsampling, upweighting, mixture r=2),
seeds 0, 1, 2; test WGA at the val-selected epoch, at the last epoch and per epoch.

Run: python benchmarks/labonte_search.py --part mnist-ratio,mnist-size,mnist-scaling [--threads 1]
     python benchmarks/labonte_search.py --part cifar --threads 1        (the two side by side)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, data_dir, write  # noqa: E402

from stratalab.experiments import ScalingConfig, ScalingResult, plot_collapse, plot_scaling, run_scaling  # noqa: E402

EPOCHS = {"mnist-ratio": 30, "mnist-size": 20, "mnist-scaling": 20, "cifar": 30, "cifar-scaling": 20}
SEEDS = (0, 1, 2)
MNIST = {"dataset": "spurious-mnist", "pretrain_dataset": "mnist-digits", "pretrain_options": {"n_train": 20000},
         "model": "lenet5", "pretrain_epochs": 2}
CIFAR = {"dataset": "cifar10-b-spurious", "pretrain_dataset": "cifar10-b",
         "pretrain_options": {"classes": "airplane,automobile,ship,truck"}, "model": "cifarnet", "pretrain_epochs": 6}
COMMON = {"epochs": EPOCHS, "mixture_ratio": 2.0, "select": "val_wga", "eval_train": True, "lr": 1e-3, "batch_size": 128}


def pct(v: float) -> str:
    return f"{100 * v:.1f}"


def study(task: dict[str, Any], options: dict[str, Any], widths: tuple[float, ...], seeds: tuple[int, ...],
          epochs: int) -> ScalingConfig:
    return ScalingConfig.of(**task, **{**COMMON, "epochs": epochs}, dataset_options=options, widths=widths, seeds=seeds)


def saturation(res: ScalingResult, width: float) -> dict[str, int | None]:
    """Per method: the first epoch at which the mean train WGA reaches 99% (memorised), or None."""
    cur = res.curves(width)
    out: dict[str, int | None] = {}
    for m in res.config.methods:
        sub = cur[(cur["method"] == m) & (cur["train_wga_mean"] >= 0.99)]
        out[m] = int(sub["epoch"].min()) if len(sub) else None
    return out


def collapse_table(res: ScalingResult, width: float, label: str) -> list[str]:
    """One row per method: test WGA at chosen epochs, the peak, the last epoch, the val-selected
    epoch, and the epoch where train WGA reaches 99%."""
    cur = res.curves(width)
    n = int(cur["epoch"].max())
    shown = [e for e in (1, 2, 3, 5, 10, 15, 20, 25, 30) if e <= n]
    tab = res.table()
    tab = tab[tab["width"] == width].set_index("method")
    sat = saturation(res, width)
    lines = [f"{label}: test WGA (%) over epochs, mean over seeds {list(res.config.seeds)}", "",
             "| balancing | " + " | ".join(f"ep {e}" for e in shown) + " | peak (epoch) | last - peak | val-selected | train WGA >= 99% from |",
             "|---|" + "---|" * (len(shown) + 4)]
    for m in res.config.methods:
        sub = cur[cur["method"] == m].set_index("epoch")
        peak_e = int(sub["wga_mean"].idxmax())
        peak, last = float(sub["wga_mean"].max()), float(sub.loc[n, "wga_mean"])
        lines.append(f"| {'none' if m == 'erm' else m} | " + " | ".join(pct(sub.loc[e, 'wga_mean']) for e in shown)
                     + f" | {pct(peak)} ({peak_e}) | {100 * (last - peak):+.1f} | {pct(tab.loc[m, 'wga_mean'])} ± "
                       f"{pct(tab.loc[m, 'wga_std'])} | {sat[m] if sat[m] is not None else 'never'} |")
    return lines


def scaling_table(res: ScalingResult, label: str) -> list[str]:
    tab = res.table()
    widths = list(res.config.widths)
    lines = [f"{label}: test WGA (%), val-selected / last epoch, mean ± std over seeds", "",
             "| balancing | " + " | ".join(f"x{w:g} ({int(tab[tab['width'] == w]['params'].iloc[0]):,})" for w in widths) + " |",
             "|---|" + "---|" * len(widths)]
    for m in res.config.methods:
        cells = []
        for w in widths:
            r = tab[(tab["method"] == m) & (tab["width"] == w)].iloc[0]
            cells.append(f"{pct(r.wga_mean)} ± {pct(r.wga_std)} / {pct(r.wga_last_mean)}")
        lines.append(f"| {'none' if m == 'erm' else m} | " + " | ".join(cells) + " |")
    return lines


def run_one(name: str, cfg: ScalingConfig, weights: Path) -> ScalingResult:
    print(f"== {name}: {cfg.dataset} {cfg.dataset_options} widths {cfg.widths}", flush=True)
    return run_scaling(cfg, data_dir=data_dir(), weights_dir=weights, progress=lambda m: print(m, flush=True))


def part_mnist_ratio(seeds: tuple[int, ...], epochs: int | None, weights: Path) -> None:
    epochs = epochs or EPOCHS["mnist-ratio"]
    md, out = [], {}
    for r in (5, 20, 50):
        res = run_one(f"ratio {r}", study(MNIST, {"class_imbalance": r, "n_train": 6000, "n_eval": 2000}, (1.0,), seeds, epochs), weights)
        plot_collapse(res, RESULTS / f"labonte_search_mnist_ratio{r}.png", width=1.0)
        md += collapse_table(res, 1.0, f"spurious-mnist, class imbalance {r}:1, 6k train, LeNet-5 x1") + [""]
        out[str(r)] = res.to_dict()
    write("labonte_search_mnist_ratio", out, "\n".join(md))


def part_mnist_size(seeds: tuple[int, ...], epochs: int | None, weights: Path) -> None:
    epochs = epochs or EPOCHS["mnist-size"]
    md, out = [], {}
    for n in (2000, 12000):
        res = run_one(f"n_train {n}", study(MNIST, {"class_imbalance": 20, "n_train": n, "n_eval": 2000}, (1.0,), seeds, epochs), weights)
        plot_collapse(res, RESULTS / f"labonte_search_mnist_n{n}.png", width=1.0)
        md += collapse_table(res, 1.0, f"spurious-mnist, class imbalance 20:1, {n:,} train, LeNet-5 x1") + [""]
        out[str(n)] = res.to_dict()
    write("labonte_search_mnist_size", out, "\n".join(md))


def part_mnist_scaling(seeds: tuple[int, ...], epochs: int | None, weights: Path) -> None:
    epochs = epochs or EPOCHS["mnist-scaling"]
    res = run_one("scaling", study(MNIST, {"class_imbalance": 20, "n_train": 6000, "n_eval": 2000}, (0.25, 0.5, 1.0, 2.0), seeds, epochs),
                  weights)
    plot_scaling(res, RESULTS / "labonte_search_mnist_scaling.png")
    plot_scaling(res, RESULTS / "labonte_search_mnist_scaling_last.png", last_epoch=True)
    md = scaling_table(res, "spurious-mnist, class imbalance 20:1, 6k train, LeNet-5")
    for w in res.config.widths:
        md += [""] + collapse_table(res, w, f"width {w:g}")
    write("labonte_search_mnist_scaling", res.to_dict(), "\n".join(md))


def part_cifar(seeds: tuple[int, ...], epochs: int | None, weights: Path) -> None:
    md, out = [], {}
    res5 = run_one("cifar ratio 5", study(CIFAR, {"class_imbalance": 5}, (0.5,), seeds, epochs or EPOCHS["cifar"]), weights)
    plot_collapse(res5, RESULTS / "labonte_search_cifar_ratio5.png", width=0.5)
    md += collapse_table(res5, 0.5, "cifar10-b-spurious, class imbalance 5:1, cifarnet x0.5") + [""]
    out["ratio5"] = res5.to_dict()
    res = run_one("cifar scaling, ratio 20", study(CIFAR, {"class_imbalance": 20}, (0.125, 0.25, 0.5, 1.0), seeds,
                                                  epochs or EPOCHS["cifar-scaling"]), weights)
    plot_scaling(res, RESULTS / "labonte_search_cifar_scaling.png")
    plot_scaling(res, RESULTS / "labonte_search_cifar_scaling_last.png", last_epoch=True)
    md += scaling_table(res, "cifar10-b-spurious, class imbalance 20:1, cifarnet")
    for w in res.config.widths:
        plot_collapse(res, RESULTS / f"labonte_search_cifar_ratio20_w{w:g}.png", width=w)
        md += [""] + collapse_table(res, w, f"cifar10-b-spurious, class imbalance 20:1, width {w:g}")
    out["ratio20"] = res.to_dict()
    out["pretraining"] = res.pretraining + res5.pretraining
    write("labonte_search_cifar", out, "\n".join(md))


PARTS = {"mnist-ratio": part_mnist_ratio, "mnist-size": part_mnist_size, "mnist-scaling": part_mnist_scaling, "cifar": part_cifar}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--epochs", type=int, default=None, help="finetuning epochs of every part (default: each part's own)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 to run two parts side by side)")
    ap.add_argument("--weights", default=str(RESULTS / ".." / ".labonte_weights"), help="pretrained weights cache")
    args = ap.parse_args()
    parts = [p.strip() for p in args.part.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        ap.error(f"unknown part {bad[0]!r}; choose from {', '.join(PARTS)}")
    if args.threads is not None:
        if args.threads < 1:
            ap.error("--threads must be >= 1")
        import torch

        torch.set_num_threads(args.threads)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    weights = Path(args.weights).resolve()
    for p in parts:
        t0 = time.perf_counter()
        PARTS[p](seeds, args.epochs, weights)
        print(f"{p}: {(time.perf_counter() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
