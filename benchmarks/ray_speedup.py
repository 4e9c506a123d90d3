"""Speed-up of a 12-task grid on `--backend ray` (a local Ray instance with 2 workers) against the
default local backend (the same tasks one after another in this process, torch on every core).

The grid: LaBonte et al.'s finetuning study without pretraining (`run_scaling`), LeNet-5 at widths
0.5 and 1 x {ERM, subsetting, upweighting} x seeds {0, 1} on spurious-mnist (n_train=6000,
class_imbalance=5) from ../shared/data: 12 independent training tasks. Both runs must give the same
numbers (checked). The Ray time includes starting the local Ray instance (reported apart too).

Run: python benchmarks/ray_speedup.py [--epochs 8] [--write]   (needs Ray: pip install 'stratalab[ray]')
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import data_dir, write  # noqa: E402

from stratalab.experiments import Backend, ScalingConfig, run_scaling  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="write benchmarks/results/ray_speedup.{json,md}")
    args = ap.parse_args()
    import torch

    cfg = ScalingConfig.of(dataset="spurious-mnist", dataset_options={"n_train": 6000, "class_imbalance": 5},
                        model="lenet5", widths=(0.5, 1.0), methods=("erm", "subsetting", "upweighting"),
                        seeds=(0, 1), epochs=args.epochs, pretrain_epochs=0)
    ddir = data_dir()
    run_scaling(ScalingConfig.of(**{**cfg.to_dict(), "widths": (0.5,), "methods": ("erm",), "seeds": (0,), "epochs": 1}),
                data_dir=ddir)  # warm-up: imports, data files in the page cache
    timings, results = {}, {}
    for name, backend in (("local", Backend()), ("local, 1 thread", Backend(threads=1))):
        t = time.perf_counter()
        results[name] = run_scaling(cfg, data_dir=ddir, backend=backend)
        timings[name] = time.perf_counter() - t

    import ray

    t = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    t_start = time.perf_counter() - t
    t = time.perf_counter()
    results["ray"] = run_scaling(cfg, data_dir=ddir, backend=Backend("ray"))
    timings["ray"] = time.perf_counter() - t
    ray.shutdown()

    def rows(res):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in res.runs]

    same = rows(results["ray"]) == rows(results["local, 1 thread"])
    diff = max(abs(a[m] - b[m]) for a, b in zip(results["ray"].runs, results["local"].runs)
               for m in ("test_wga", "test_avg", "test_wga_last", "test_avg_last"))
    base = timings["local"]
    ray_total = timings["ray"] + t_start
    task_secs = [r["seconds"] for r in results["local"].runs]
    lines = [
        "| backend | wall time (s) | speed-up vs local |",
        "|---|---|---|",
        f"| local: in-process, one task after another, torch {torch.get_num_threads()} threads | {base:.1f} | 1.00x |",
        f"| local, `--threads 1` | {timings['local, 1 thread']:.1f} | {base / timings['local, 1 thread']:.2f}x |",
        f"| ray, {args.workers} workers x 1 thread, incl. starting Ray ({t_start:.1f} s) | {ray_total:.1f} | {base / ray_total:.2f}x |",
        f"| ray, {args.workers} workers x 1 thread, Ray already running | {timings['ray']:.1f} | {base / timings['ray']:.2f}x |",
        "",
        f"12 tasks (LeNet-5 finetunes without pretraining, {args.epochs} epochs each, local task times "
        f"{min(task_secs):.1f}-{max(task_secs):.1f} s). Ray vs local `--threads 1`: bit-identical: {same}. "
        f"Ray vs local on {torch.get_num_threads()} threads: largest difference of a test accuracy {diff:.4f} "
        "(convolutions sum in a thread-dependent order).",
    ]
    text = "\n".join(lines)
    print(text)
    if not same:
        raise SystemExit("Ray and the local backend at 1 thread gave different numbers")
    if args.write:
        write("ray_speedup", {"config": cfg.to_dict(), "workers": args.workers, "seconds": timings,
                              "ray_start_seconds": t_start, "speedup": base / ray_total,
                              "speedup_ray_running": base / timings["ray"], "identical_at_1_thread": same,
                              "max_accuracy_difference_vs_local_default_threads": diff}, text)


if __name__ == "__main__":
    main()
