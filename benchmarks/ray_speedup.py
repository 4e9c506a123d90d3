"""Speed-up of a 12-task grid on `--backend ray` (a local Ray instance with 2 workers) against the
default local backend (the same tasks one after another in this process, torch on every core).

The grid: LaBonte et al.'s finetuning study without pretraining (`run_scaling`), LeNet-5 at widths
0.5 and 1 x {ERM, subsetting, upweighting} x seeds {0, 1} on spurious-mnist (n_train=6000,
class_imbalance=5) from ../shared/data: 12 independent training tasks. Both runs must give the same
numbers (checked). The Ray time includes starting the local Ray instance (reported apart too).

Run: python benchmarks/ray_speedup.py [--epochs 3] [--write]   (needs Ray: pip install 'stratalab[ray]')
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
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="write benchmarks/results/ray_speedup.{json,md}")
    args = ap.parse_args()
    cfg = ScalingConfig(dataset="spurious-mnist", dataset_options={"n_train": 6000, "class_imbalance": 5},
                        model="lenet5", widths=(0.5, 1.0), methods=("erm", "subsetting", "upweighting"),
                        seeds=(0, 1), epochs=args.epochs, pretrain_epochs=0)
    ddir = data_dir()
    run_scaling(ScalingConfig(**{**cfg.to_dict(), "widths": (0.5,), "methods": ("erm",), "seeds": (0,), "epochs": 1}),
                data_dir=ddir)  # warm-up: imports, data files in the page cache
    t = time.perf_counter()
    local = run_scaling(cfg, data_dir=ddir)
    t_local = time.perf_counter() - t

    import ray

    t = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    t_start = time.perf_counter() - t
    t = time.perf_counter()
    on_ray = run_scaling(cfg, data_dir=ddir, backend=Backend("ray"))
    t_ray = time.perf_counter() - t
    ray.shutdown()

    def rows(res):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in res.runs]

    same = rows(local) == rows(on_ray)
    task_secs = [r["seconds"] for r in local.runs]
    ratio = t_local / (t_ray + t_start)
    lines = [
        "| backend | wall time (s) | speed-up vs local |",
        "|---|---|---|",
        f"| local (in-process, sequential, torch {__import__('torch').get_num_threads()} threads) | {t_local:.1f} | 1.00x |",
        f"| ray, {args.workers} workers (1 CPU each), incl. Ray start ({t_start:.1f} s) | {t_ray + t_start:.1f} | {ratio:.2f}x |",
        f"| ray, {args.workers} workers, Ray already running | {t_ray:.1f} | {t_local / t_ray:.2f}x |",
        "",
        f"12 tasks ({len(local.runs)} runs), {args.epochs} epochs each; local task times {min(task_secs):.1f}-{max(task_secs):.1f} s; "
        f"identical results on both backends: {same}.",
    ]
    text = "\n".join(lines)
    print(text)
    if not same:
        raise SystemExit("the two backends gave different numbers")
    if args.write:
        write("ray_speedup", {"config": cfg.to_dict(), "workers": args.workers, "local_seconds": t_local,
                              "ray_seconds": t_ray, "ray_start_seconds": t_start, "speedup": ratio,
                              "speedup_ray_running": t_local / t_ray, "identical": same}, text)


if __name__ == "__main__":
    main()
