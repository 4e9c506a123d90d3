"""fp32 against bf16 autocast on this CPU (issue 20, item 2): seconds per CIFAR-10 training epoch
(50,000 images at 32x32, extrapolated from timed steps after warm-up) for cifarnet (airbench-style,
width 1) and a CIFAR ResNet-18, each in channels-last and default memory order.

The step is the training loop's own (forward under ``stratalab._device.autocast``, cross-entropy in
fp32, backward, SGD step). Run: ``python benchmarks/bf16_cpu.py --threads 2``; writes
``benchmarks/results/bf16_cpu.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _common import write  # noqa: E402

from stratalab._device import autocast, cpu_has_bf16  # noqa: E402
from stratalab.models.convnets import CifarNet, CifarResNet  # noqa: E402


def models(names: list[str]) -> dict[str, torch.nn.Module]:
    make = {"cifarnet": lambda: CifarNet(10, 3, width=1.0),
            "resnet18": lambda: CifarResNet(10, 3, width=64, blocks=(2, 2, 2, 2))}  # the CIFAR ResNet-18, 11.2M parameters
    return {("resnet18 (CIFAR)" if n == "resnet18" else n): make[n]() for n in names}


def time_steps(model: torch.nn.Module, precision: str, channels_last: bool, batch: int, steps: int, warmup: int) -> float:
    """Seconds per training step (median of ``steps`` after ``warmup``)."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()  # type: ignore[call-overload]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        with autocast("cpu", precision):
            out = model(x)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--models", default="cifarnet,resnet18")
    ap.add_argument("--name", default="bf16_cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, model in models(args.models.split(",")).items():
        for cl in (True, False):
            for prec in ("fp32", "bf16"):
                s = time_steps(model, prec, cl, args.batch, args.steps, args.warmup)
                epoch = s * 50_000 / args.batch
                rows.append({"model": name, "channels_last": cl, "precision": prec, "seconds_per_step": s,
                             "epoch_seconds": epoch})
                print(f"{name:18s} channels_last={cl!s:5s} {prec}: {s * 1000:7.1f} ms/step, {epoch:7.1f} s/epoch", flush=True)
    for r in rows:
        base = next(b for b in rows if b["model"] == r["model"] and b["channels_last"] == r["channels_last"]
                    and b["precision"] == "fp32")
        r["speedup_vs_fp32"] = base["seconds_per_step"] / r["seconds_per_step"]
    md = ["| model | memory order | precision | ms / step | s / epoch | speed-up vs fp32 |", "|---|---|---|---|---|---|"]
    md += [f"| {r['model']} | {'channels-last' if r['channels_last'] else 'default'} | {r['precision']} | "
           f"{1000 * r['seconds_per_step']:.0f} | {r['epoch_seconds']:.0f} | {r['speedup_vs_fp32']:.2f}x |" for r in rows]
    write(args.name, {"rows": rows, "cpu_has_bf16": cpu_has_bf16(), "threads": args.threads, "batch": args.batch,
                       "steps": args.steps, "warmup": args.warmup}, "\n".join(md))


if __name__ == "__main__":
    main()
