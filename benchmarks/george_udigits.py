"""GEORGE on u-digits (the embedded default) over seeds, with the recorded u-digits recipe
(`stratalab.experiments.george.RECIPES["u-digits"]`: 256-unit MLP, 10 epochs, Adam lr 1e-3, UMAP +
k-means per class, overclustering floors of 10). For each seed: precision and recall of the best
cluster for the rare digit 8 on train, val and test, and robust / overall test accuracy of ERM,
GEORGE and Group DRO on the true digits. Writes benchmarks/results/george_udigits.{json,md}.

With one torch thread (``--threads``, the default) the numbers are the same on every run on this
machine; the slow test ``tests/benchmarks/test_regenerate.py`` reruns it and compares them with the
recorded file number for number.

Run: python benchmarks/george_udigits.py [--seeds 0,1,2,3,4] [--threads 1] [--name george_udigits]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write  # noqa: E402

from stratalab.data import load  # noqa: E402
from stratalab.discover import cluster_quality  # noqa: E402
from stratalab.experiments import GeorgeConfig, run_george, summarise  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (results depend on it)")
    ap.add_argument("--name", default="george_udigits")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    cfg = GeorgeConfig.for_dataset("u-digits")
    runs, rows = [], []
    t0 = time.perf_counter()
    for seed in seeds:
        ds = load("u-digits", seed=seed)
        res = run_george(ds, cfg, seed)
        runs.append(res)
        row = {"seed": seed, "seconds": round(res.seconds["total"], 1)}
        for split in ("train", "val", "test"):
            r = cluster_quality(res.clusters[split], ds.splits[split].g)[0].set_index("subclass").loc[8]
            row[split] = (round(float(r["precision"]), 2), round(float(r["recall"]), 2))
        rows.append(row)
        print(row, {k: round(v["robust_accuracy"], 3) for k, v in res.rows.items()}, flush=True)
    ok = {s: sum(r[s][0] >= 0.5 and r[s][1] >= 0.5 for r in rows) for s in ("train", "val", "test")}
    lines = ["| seed | 8s train (precision / recall) | val | test | seconds |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['seed']} | " + " | ".join(f"{r[s][0]:.2f} / {r[s][1]:.2f}" for s in ("train", "val", "test"))
                     + f" | {r['seconds']} |")
    table = summarise(runs)
    lines += ["", "| method | robust test accuracy (%) | overall (%) |", "|---|---|---|"]
    for _, t in table.iterrows():
        lines.append(f"| {t['method']} | {100 * t['robust_mean']:.1f} ± {100 * t['robust_std']:.1f} | "
                     f"{100 * t['overall_mean']:.1f} ± {100 * t['overall_std']:.1f} |")
    md = "\n".join(lines) + (f"\n\nSeeds where the 8s have their own cluster (precision and recall >= 0.5): train "
                            f"{ok['train']}/{len(rows)}, val {ok['val']}/{len(rows)}, test {ok['test']}/{len(rows)}. "
                            f"Total {time.perf_counter() - t0:.0f} s (the first seed includes UMAP's compilation).")
    print(md)
    write(args.name, {"args": vars(args), "config": cfg.to_dict(), "rows": rows, "table": table.to_dict(orient="records")}, md)


if __name__ == "__main__":
    main()
