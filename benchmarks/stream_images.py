"""Streaming a folder of JPEGs that is not held in memory (issue 20, item 4): one training epoch
(train, then val and test evaluated) of a small model on a synthetic Waterbirds-format folder of
20,000 JPEGs at 224x224, read as Waterbirds is (resize to 256, centre 224), with 0 and with 2
loader workers. Records seconds, images per second, the peak RSS of the training process and of
its largest worker, and whether the two runs gave the same numbers.

Run: ``python benchmarks/stream_images.py --threads 1`` (writes the folder once under ``--folder``,
default /tmp/stratalab-stream-20k); writes ``benchmarks/results/stream_images.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write  # noqa: E402


def child(folder: str, workers: int, threads: int, batch: int) -> None:
    """One run in a fresh process, so its peak RSS is its own."""
    import torch

    from stratalab.data import load
    from stratalab.train import TrainConfig, run

    torch.set_num_threads(threads)
    ds = load("waterbirds", data_dir=folder, image_size=224)
    t = time.perf_counter()
    res = run(ds, TrainConfig(model="mlp", epochs=1, batch_size=batch, workers=workers, select="val_avg", device="cpu"))
    seconds = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    n = sum(len(s) for s in ds.splits.values())
    print(json.dumps({"workers": workers, "seconds": seconds, "images": n, "images_per_second": n / seconds,
                      "peak_rss_mib": rss, "peak_worker_rss_mib": kids, "history": res.history,
                      "test": res.reports["test"].summary()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--folder", default="/tmp/stratalab-stream-20k")
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", default="0,2")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.folder, args.child, args.threads, args.batch)
        return
    folder = Path(args.folder)
    meta = folder / "metadata.csv"
    if not meta.is_file() or sum(1 for _ in meta.open()) != args.images + 1:
        from stratalab.data.folders import write_waterbirds_folder

        t = time.perf_counter()
        write_waterbirds_folder(folder, n=args.images, size=224, progress=lambda k, n: print(f"wrote {k}/{n}", flush=True)
                                if k % 5000 == 0 else None)
        print(f"folder written in {time.perf_counter() - t:.0f} s", flush=True)
    disk = sum(p.stat().st_size for p in folder.rglob("*.jpg"))
    rows = []
    for w in (int(v) for v in args.workers.split(",")):
        out = subprocess.run([sys.executable, __file__, "--child", str(w), "--folder", str(folder), "--threads",
                              str(args.threads), "--batch", str(args.batch)], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"workers={w}: {row['seconds']:.1f} s, {row['images_per_second']:.0f} images/s, peak RSS "
              f"{row['peak_rss_mib']:.0f} MiB (largest worker {row['peak_worker_rss_mib']:.0f} MiB)", flush=True)
    same = all(r["history"] == rows[0]["history"] and r["test"] == rows[0]["test"] for r in rows)
    base = rows[0]["seconds"]
    md = ["| loader workers | seconds (1 epoch + val/test) | images / s | speed-up | peak RSS, training process | largest worker |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r['workers']} | {r['seconds']:.1f} | {r['images_per_second']:.0f} | {base / r['seconds']:.2f}x | "
           f"{r['peak_rss_mib']:.0f} MiB | {r['peak_worker_rss_mib']:.0f} MiB |" for r in rows]
    md.append(f"\n{args.images:,} JPEGs at 224x224 ({disk / 2**20:.0f} MiB on disk); same numbers with every worker count: {same}.")
    for r in rows:
        r.pop("history")
    write("stream_images", {"rows": rows, "same_numbers": same, "images": args.images, "disk_mib": disk / 2**20,
                            "threads": args.threads, "batch": args.batch, "model": "mlp"}, "\n".join(md))
    print("same numbers:", same)


if __name__ == "__main__":
    main()
