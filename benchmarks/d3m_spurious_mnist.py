"""D3M Table 1 and Fig. 2 on spurious-mnist (Jain et al. 2024): ERM, AUTO-D3M, JTT, DFR, D3M, RWG,
SUBG and Group DRO, each with the group labels it needs; test worst-group and balanced accuracy,
mean and std over seeds; and, on the first seed, val worst-group accuracy against the number of
training examples removed (D3M order, random order, balancing of the majority group).

spurious-mnist (corner patch agreeing with the class in 95% of train, class imbalance 5:1), LeNet-5,
Adam lr 1e-3, batch 128, --epochs for every trained model, model selection as in the paper's
appendix (ERM: val average accuracy; AUTO-D3M: worst pseudo-group; the rest: val worst-group
accuracy). TRAK through all parameters with a k-dimensional Gaussian projection of one model (the
ERM model; the paper uses M = 100 models on 50% subsets, --trak-models sets M).
Writes benchmarks/results/d3m_spurious_mnist.{json,md} and d3m_spurious_mnist_fig2.png.

Run: python benchmarks/d3m_spurious_mnist.py [--epochs 10] [--seeds 0,1,2] [--sweep-points 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, data_dir, write  # noqa: E402

from stratalab.data import load  # noqa: E402
from stratalab.experiments import D3MConfig, D3MTable, plot_sweep, run_d3m_seed  # noqa: E402
from stratalab.train import TrainConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--proj-dim", type=int, default=512)
    ap.add_argument("--trak-models", type=int, default=1)
    ap.add_argument("--imbalance", type=float, default=5.0)
    ap.add_argument("--sweep-points", type=int, default=5, help="Fig. 2 points per curve, first seed only (0: none)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    cfg = TrainConfig(model="lenet5", epochs=args.epochs, batch_size=128, lr=1e-3)
    results = []
    t0 = time.perf_counter()
    for i, seed in enumerate(seeds):
        ds = load("spurious-mnist", data_dir=data_dir(), seed=seed, class_imbalance=args.imbalance)
        n_train = len(ds.train)
        dcfg = D3MConfig(proj_dim=args.proj_dim, n_models=args.trak_models, sweep_points=args.sweep_points if i == 0 else 0)
        res = run_d3m_seed(ds, dataclasses.replace(cfg, seed=seed), dcfg,
                           progress=lambda m, s=seed: print(f"[{time.perf_counter() - t0:.0f} s] seed {s}: {m}", flush=True))
        results.append(res)
        print({r["method"]: round(100 * r["test_wga"], 1) for r in res.rows()}, res.seconds, flush=True)
    table = D3MTable(dataset="spurious-mnist", config=cfg, d3m_config=D3MConfig(proj_dim=args.proj_dim, n_models=args.trak_models,
                                                                               sweep_points=args.sweep_points),
                     seeds=results)
    summ = table.summary()
    lines = ["| method | group labels train / val | test worst-group (%) | test balanced (%) | train examples removed |",
             "|---|---|---|---|---|"]
    for _, r in summ.iterrows():
        lines.append(f"| {r['name']} | {r['group_info']} | {100 * r['wga_mean']:.1f} ± {100 * r['wga_std']:.1f} | "
                     f"{100 * r['balanced_mean']:.1f} ± {100 * r['balanced_std']:.1f} | {r['removed_mean']:.0f} |")
    sweep = table.sweep()
    if not sweep.empty:
        plot_sweep(table, RESULTS / "d3m_spurious_mnist_fig2.png")
        piv = sweep.pivot_table(index="k", columns="curve", values="val_wga")
        lines += ["", f"Fig. 2 (seed {seeds[0]}): val worst-group accuracy (%) by examples removed", "",
                  "| removed | " + " | ".join(piv.columns) + " |", "|---" * (len(piv.columns) + 1) + "|"]
        for k, row in piv.iterrows():
            lines.append(f"| {k} | " + " | ".join("" if v != v else f"{100 * v:.1f}" for v in row) + " |")
    md = "\n".join(lines) + (f"\n\nspurious-mnist (patch, 95%, imbalance {args.imbalance:g}:1, {n_train} train in the last seed), LeNet-5, "
                            f"{args.epochs} epochs, TRAK k={args.proj_dim}, M={args.trak_models}, seeds {args.seeds}; "
                            f"total {time.perf_counter() - t0:.0f} s.")
    print(md)
    write("d3m_spurious_mnist", {"args": vars(args), **table.to_dict()}, md)


if __name__ == "__main__":
    main()
