"""LaBonte et al. (2024) "The Group Robustness is in the Details", at CPU scale on spurious-mnist.

1. Scaling x class balancing: LeNet-5 at widths 0.25-2 (3.3k-203k parameters, 60x), each pretrained
   on 10-way MNIST digits (mnist-digits, 20k images, 2 epochs), finetuned on class-imbalanced
   spurious-mnist (class 0 : class 1 = 5 : 1, 6k train, val/test 2k group-balanced) with no
   balancing, subsetting, upsampling, upweighting and mixture (r = 2), 3 seeds, 8 epochs; test WGA
   at the epoch chosen on val WGA and at the last epoch; WGA over epochs (collapse).
2. Spectral imbalance of the finetuned features (width 2, each balancing method, seed 0): rho(y) on
   the train split as the reference code takes it, beside the test split used before.
3. Mixture ablation: class-imbalance ratio sweep (1, 3, 10) at width 1 for subsetting, upsampling
   and mixture (mixture without its subsetting step is upsampling).
4. Collapse: WGA over 30 finetuning epochs at width 1 for every balancing method, 3 seeds (does
   upsampling / upweighting collapse with long finetuning?).

Writes benchmarks/results/labonte_{scaling,spectral,ablation,collapse}.{json,md} and the figures.
Run: python benchmarks/labonte_study.py [--part all|scaling|spectral|ablation|collapse] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from _common import RESULTS, data_dir, write  # noqa: E402

from stratalab.analysis import cell_counts, plot_group_spectra, spectral_imbalance  # noqa: E402
from stratalab.data import load  # noqa: E402
from stratalab.experiments import ScalingConfig, plot_collapse, plot_scaling, run_scaling  # noqa: E402
from stratalab.models import embed, save_pretrained  # noqa: E402
from stratalab.train import run  # noqa: E402

TARGET = {"class_imbalance": 5, "n_train": 6000, "n_eval": 2000}
SOURCE = {"n_train": 20000}


def study(seeds: tuple[int, ...]) -> ScalingConfig:
    return ScalingConfig.of(dataset="spurious-mnist", dataset_options=TARGET, pretrain_dataset="mnist-digits",
                         pretrain_options=SOURCE, model="lenet5", widths=(0.25, 0.5, 1.0, 1.5, 2.0), seeds=seeds,
                         epochs=8, pretrain_epochs=2, mixture_ratio=2.0, select="val_wga")


def pct(v: float, s: float | None = None) -> str:
    return f"{100 * v:.1f}" + ("" if s is None else f" ± {100 * s:.1f}")


def part_scaling(seeds: tuple[int, ...], weights: Path) -> None:
    cfg = study(seeds)
    res = run_scaling(cfg, data_dir=data_dir(), weights_dir=weights, progress=lambda m: print(m, flush=True))
    tab = res.table()
    lines = ["| balancing | width | params | test WGA (val-selected) | test WGA (last epoch) | average |", "|---|---|---|---|---|---|"]
    for r in tab.itertuples(index=False):
        lines.append(f"| {'none' if r.method == 'erm' else r.method} | {r.width:g} | {r.params:,} | {pct(r.wga_mean, r.wga_std)} | "
                     f"{pct(r.wga_last_mean, r.wga_last_std)} | {pct(r.avg_mean, r.avg_std)} |")
    cur = res.curves()
    lines += ["", f"WGA over epochs at width {max(cfg.widths):g} (mean over seeds, %):", "",
              "| balancing | " + " | ".join(f"ep {e}" for e in range(1, cfg.train.epochs + 1)) + " |",
              "|---|" + "---|" * cfg.train.epochs]
    for m in cfg.methods:
        sub = cur[cur["method"] == m].sort_values("epoch")
        lines.append(f"| {'none' if m == 'erm' else m} | " + " | ".join(f"{100 * v:.1f}" for v in sub["wga_mean"]) + " |")
    lines.append(f"\n{len(res.runs)} finetunes + {sum(not p.get('reused') for p in res.pretraining)} pretrainings in "
                 f"{res.seconds / 60:.1f} min.")
    md = "\n".join(lines)
    print(md)
    plot_scaling(res, RESULTS / "labonte_scaling.png")
    plot_collapse(res, RESULTS / "labonte_collapse.png")
    write("labonte_scaling", res.to_dict(), md)


def part_spectral(weights: Path) -> None:
    """rho(y) as the reference code takes it (tmlabonte/revisiting-finetuning, exps/postprocess.py):
    the train split without augmentation, the unpooled last hidden state (LeNet-5's is 120 x 1 x 1,
    so it equals the penultimate features), minority and majority within each class by its train
    counts. Beside it, the test-split features this study used before (issue 21)."""
    cfg = study((0,))
    ds = load("spurious-mnist", data_dir=data_dir(), seed=0, **TARGET)
    counts = cell_counts(ds.train.y, ds.train.g)
    w = max(cfg.widths)
    init = weights / f"lenet5-w{w:g}.pt"
    if not init.is_file():  # pretrained as part 1 does (and reused by it), so the part runs alone too
        src = load("mnist-digits", data_dir=data_dir(), seed=0, **SOURCE)
        pcfg = cfg.pretrain_config(w)
        init.parent.mkdir(parents=True, exist_ok=True)
        save_pretrained(run(src, pcfg).model, init, model_name="lenet5", width=w, input_shape=tuple(src.train.input_shape),
                        n_classes=src.n_classes, source="mnist-digits",
                        config={"train": pcfg.to_dict(), "source_options": dict(SOURCE)})
    head = ["| balancing | class | minority / majority group (train n) | lambda_1 minority | lambda_1 majority | rho | accuracy gap (points) |",
            "|---|---|---|---|---|---|---|"]
    tables: dict[str, list[str]] = {"train": list(head), "test": list(head)}
    out: dict[str, dict] = {"train": {}, "test": {}}
    t0 = time.perf_counter()
    for m in cfg.methods:
        r = run(ds, cfg.train_config(m, 0, w, str(init)))
        for split in ("train", "test"):
            sp = ds.splits[split]
            e = embed(r.model, sp, unpooled=True)  # eval mode: no augmentation
            rep = spectral_imbalance(e.features, sp.y, sp.g, pred=e.pred, group_counts=counts,
                                     class_names=ds.class_names, group_names=ds.group_names)
            out[split][m] = rep.to_dict()
            if m == "mixture" and split == "train":
                plot_group_spectra(rep, RESULTS / "labonte_spectra.png",
                                   title="spurious-mnist train features (the reference's), LeNet-5 x2, mixture")
            for q in rep.ratios.itertuples(index=False):
                tables[split].append(
                    f"| {'none' if m == 'erm' else m} | {q.class_name} | {ds.group_names[q.minority_group]} "
                    f"({counts[(q[0], q.minority_group)]}) / {ds.group_names[q.majority_group]} "
                    f"({counts[(q[0], q.majority_group)]}) | {q.lambda1_minority:.3g} | {q.lambda1_majority:.3g} | "
                    f"{q.rho:.2f} | {100 * q.accuracy_gap:.1f} |")

    def tally(split: str) -> str:
        rhos = [q["rho"] for v in out[split].values() for q in v["ratios"]]
        return f"rho >= 1 in {sum(r >= 1 for r in rhos)} of {len(rhos)} (method, class) pairs (median {np.median(rhos):.2f})"

    md = ("rho(y) as the reference computes it: train split, no augmentation, unpooled features, minority within "
          "each class by its train counts\n\n" + "\n".join(tables["train"]) + f"\n\n{tally('train')}.\n\n"
          "The same models on the group-balanced test split (this study's choice before issue 21; same train counts)\n\n"
          + "\n".join(tables["test"]) + f"\n\n{tally('test')}; {time.perf_counter() - t0:.0f} s.")
    print(md)
    write("labonte_spectral", {"config": cfg.to_dict(), "group_counts_train": {f"{c},{g}": n for (c, g), n in counts.items()},
                               "reports": out["train"], "reports_test_split": out["test"]}, md)


def part_ablation(seeds: tuple[int, ...], weights: Path) -> None:
    rows = []
    t0 = time.perf_counter()
    for ratio in (1, 3, 10):
        cfg = ScalingConfig.of(dataset="spurious-mnist", dataset_options={**TARGET, "class_imbalance": ratio},
                            pretrain_dataset="mnist-digits", pretrain_options=SOURCE, model="lenet5", widths=(1.0,),
                            methods=("subsetting", "upsampling", "mixture"), seeds=seeds, epochs=8, pretrain_epochs=2,
                            mixture_ratio=2.0)
        res = run_scaling(cfg, data_dir=data_dir(), weights_dir=weights, progress=lambda m: print(m, flush=True))
        for r in res.table().itertuples(index=False):
            rows.append({"class_imbalance": ratio, "method": r.method, "wga_mean": r.wga_mean, "wga_std": r.wga_std,
                         "wga_last_mean": r.wga_last_mean, "avg_mean": r.avg_mean})
    lines = ["| class imbalance | subsetting | upsampling (= mixture without subsetting) | mixture (r = 2) |", "|---|---|---|---|"]
    for ratio in (1, 3, 10):
        by = {r["method"]: r for r in rows if r["class_imbalance"] == ratio}
        lines.append(f"| {ratio}:1 | " + " | ".join(pct(by[m]["wga_mean"], by[m]["wga_std"]) for m in ("subsetting", "upsampling", "mixture")) + " |")
    md = ("Test WGA (%, val-selected, mean ± std over seeds), LeNet-5 x1 pretrained on mnist-digits:\n\n" + "\n".join(lines)
          + f"\n\n{time.perf_counter() - t0:.0f} s.")
    print(md)
    write("labonte_ablation", {"rows": rows}, md)


def part_collapse(seeds: tuple[int, ...], weights: Path, epochs: int = 30) -> None:
    cfg = ScalingConfig.of(dataset="spurious-mnist", dataset_options=TARGET, pretrain_dataset="mnist-digits",
                        pretrain_options=SOURCE, model="lenet5", widths=(1.0,), seeds=seeds, epochs=epochs,
                        pretrain_epochs=2, mixture_ratio=2.0)
    res = run_scaling(cfg, data_dir=data_dir(), weights_dir=weights, progress=lambda m: print(m, flush=True))
    cur = res.curves(1.0)
    shown = [e for e in (1, 2, 4, 6, 8, 10, 15, 20, 25, 30) if e <= epochs]
    lines = [f"Test WGA (%) over {epochs} finetuning epochs, LeNet-5 x1, mean ± std over seeds {list(seeds)}:", "",
             "| balancing | " + " | ".join(f"ep {e}" for e in shown) + " | best epoch (val-selected WGA) |",
             "|---|" + "---|" * (len(shown) + 1)]
    tab = res.table().set_index("method")
    for m in cfg.methods:
        sub = cur[cur["method"] == m].set_index("epoch")
        lines.append(f"| {'none' if m == 'erm' else m} | " + " | ".join(pct(sub.loc[e, 'wga_mean'], sub.loc[e, 'wga_std']) for e in shown)
                     + f" | {pct(tab.loc[m, 'wga_mean'], tab.loc[m, 'wga_std'])} |")
    md = "\n".join(lines) + f"\n\n{len(res.runs)} finetunes in {res.seconds / 60:.1f} min."
    print(md)
    plot_collapse(res, RESULTS / "labonte_collapse_long.png", width=1.0)
    write("labonte_collapse", res.to_dict(), md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="all", choices=["all", "scaling", "spectral", "ablation", "collapse"])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--weights", default=str(RESULTS / ".." / ".labonte_weights"), help="pretrained weights cache")
    args = ap.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    weights = Path(args.weights).resolve()
    t0 = time.perf_counter()
    if args.part in ("all", "scaling"):
        part_scaling(seeds, weights)
    if args.part in ("all", "spectral"):
        part_spectral(weights)
    if args.part in ("all", "ablation"):
        part_ablation(seeds, weights)
    if args.part in ("all", "collapse"):
        part_collapse(seeds, weights)
    print(f"total {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
