"""Time of one Group DRO epoch divided by one ERM epoch, same model, data and batch size.

LeNet-5 on U-MNIST (43,554 images, batch 128) when ../shared/data/mnist.npz exists, else an MLP on
u-digits. Training only (no evaluation); median of --repeats epochs each after one warm-up epoch.
Goal: ratio <= 1.15. Writes benchmarks/results/gdro_overhead.{json,md}.

Run: python benchmarks/gdro_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _common import data_dir, write  # noqa: E402

from stratalab.data import load  # noqa: E402
from stratalab.models import build_model  # noqa: E402
from stratalab.train import TrainConfig, fit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if (data_dir() / "mnist.npz").is_file():
        ds, model_name, shape = load("u-mnist", data_dir=data_dir(), resize=False), "lenet5", (1, 32, 32)
    else:
        ds, model_name, shape = load("u-digits"), "mlp", (1, 8, 8)
    times: dict[str, list[float]] = {"erm": [], "gdro": []}
    for rep in range(args.repeats + 1):
        for method in ("erm", "gdro"):  # interleaved so drift affects both alike
            model = build_model(model_name, shape, 2, seed=0)
            cfg = TrainConfig(method=method, epochs=1, batch_size=128, lr=2e-3, seed=rep)
            t = time.perf_counter()
            fit(model, ds.train, cfg)
            if rep > 0:
                times[method].append(time.perf_counter() - t)
    erm, gdro = statistics.median(times["erm"]), statistics.median(times["gdro"])
    ratio = gdro / erm
    md = "\n".join([
        "| data | model | train size | ERM epoch (s) | Group DRO epoch (s) | ratio (goal <= 1.15) |",
        "|---|---|---|---|---|---|",
        f"| {ds.name} | {model_name} | {len(ds.train):,} | {erm:.2f} | {gdro:.2f} | {ratio:.3f} |",
    ])
    print(md)
    write("gdro_overhead", {"dataset": ds.name, "model": model_name, "erm_s": times["erm"], "gdro_s": times["gdro"],
                            "median_erm_s": erm, "median_gdro_s": gdro, "ratio": ratio}, md)


if __name__ == "__main__":
    main()
