"""One epoch of ResNet-50 finetuning on a synthetic Waterbirds-format folder (issue 20, item 5):
the path a GPU user's first Waterbirds run takes (JPEGs decoded by loader workers, resize 256 /
centre 224, a ResNet-50 from a local Hugging Face folder, SGD as the papers finetune, autocast),
timed end to end, with images per second and the peak GPU memory.

The ResNet-50 folder holds random weights (nothing is downloaded); the throughput does not depend
on them. ``benchmarks/gpu_check.sh`` runs this on a CUDA machine; on a CPU it runs too (small
``--images`` and ``--size``), which is how the test suite keeps it working.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--images", type=int, default=2048, help="JPEGs in the folder (train half, val and test a quarter each)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--folder", default=None, help="where the JPEGs go (default: a temporary folder)")
    ap.add_argument("--write", action="store_true", help="write benchmarks/results/gpu_finetune.json")
    args = ap.parse_args(argv)

    import torch
    import transformers

    from stratalab._device import resolve_device
    from stratalab.data import load
    from stratalab.data.folders import write_waterbirds_folder
    from stratalab.train import TrainConfig, run

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder or Path(tmp) / "wb")
        if not (folder / "metadata.csv").is_file():
            write_waterbirds_folder(folder, n=args.images, size=args.size)
        torch.manual_seed(0)
        transformers.ResNetModel(transformers.ResNetConfig()).save_pretrained(Path(tmp) / "resnet-50")
        ds = load("waterbirds", data_dir=folder, image_size=args.size)
        cfg = TrainConfig(model="resnet50", pretrained=str(Path(tmp) / "resnet-50"), epochs=1, batch_size=args.batch_size,
                          optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=1e-4, select="val_wga",
                          device=device, precision=args.precision, workers=args.workers)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        res = run(ds, cfg)
        seconds = time.perf_counter() - t
    n = sum(len(s) for s in ds.splits.values())
    out = {"device": device, "gpu": torch.cuda.get_device_name(device) if device.startswith("cuda") else None,
           "precision": args.precision, "images": n, "size": args.size, "batch_size": args.batch_size, "workers": args.workers,
           "seconds": seconds, "images_per_second": n / seconds,
           "peak_gpu_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.startswith("cuda") else None,
           "test_worst_group_accuracy": res.reports["test"].worst_group_accuracy}
    print(json.dumps(out, indent=2))
    if args.write:
        from _common import write

        write("gpu_finetune", out, f"ResNet-50, 1 epoch + val/test on {n} JPEGs at {args.size}: "
                                   f"{out['images_per_second']:.0f} images/s on {out['gpu'] or device} ({args.precision}), "
                                   f"peak GPU memory {out['peak_gpu_memory_gib'] or 0:.1f} GiB")
    return out


if __name__ == "__main__":
    main()
