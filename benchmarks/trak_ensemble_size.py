"""LDS of TRAK against the ensemble size M (issue #9 item 4: "the effect of M on LDS"), for the dense
Gaussian and the Kronecker projection, on the setting of `trak_vs_traker.py` (LeNet-5, 4,000
U-MNIST train examples, 500 val targets, k = 512): M models each trained 8 epochs on a random 50%
subset (the paper's alpha), LDS over the same 20 models retrained on 50% subsets. Reuses the LDS
margins and the first checkpoints of a `trak_vs_traker.py --work DIR` folder when given, so both
benchmarks measure the same thing.

Run: python benchmarks/trak_ensemble_size.py [--sizes 1,2,5,10] [--work DIR] [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from _common import write  # noqa: E402
from trak_vs_traker import _train, bench_data, lds_margins  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,2,5,10")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-targets", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lds-models", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    import torch

    from stratalab.attribution import ensemble_scores, linear_datamodeling_score, random_subsets
    from stratalab.models import build_model

    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    sub, x, y, xt, yt = bench_data(args.n_train, args.n_targets)  # the same subset and targets as trak_vs_traker.py
    masks = random_subsets(len(y), args.lds_models, 0.5, seed=200)
    t0 = time.perf_counter()
    work = args.work
    setting = {"n_train": args.n_train, "n_targets": args.n_targets, "epochs": args.epochs, "lds_models": args.lds_models}
    saved = json.loads((work / "setting.json").read_text()) if work is not None and (work / "setting.json").exists() else {}
    same = bool(saved) and {k: v for k, v in saved.items() if k != "models"} == setting
    if same:
        margins = np.load(work / "lds_margins.npy")
    else:
        margins = lds_margins(sub, masks, xt, yt, args.epochs)
    models = []
    for m, mask in enumerate(random_subsets(len(y), max(sizes), 0.5, seed=100)):
        ck = work / f"ckpt{m}.pt" if work is not None else None
        model = build_model("lenet5", (1, 32, 32), 2, seed=0)
        if same and ck is not None and ck.exists() and m < saved.get("models", 0):
            model.load_state_dict(torch.load(ck, weights_only=True))
        else:
            model = _train(sub, np.flatnonzero(mask), args.epochs, seed=100 + m)
        models.append(model.eval())
    print(f"{len(models)} checkpoints and {len(margins)} LDS margins ready ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = []
    for projector in ("gaussian", "kronecker"):
        for m in sizes:
            t = time.perf_counter()
            s = ensemble_scores(models[:m], (x, y), (xt, yt), proj_dim=512, batch_size=64, seed=0, projector=projector,
                               lam=1e-6)  # the recorded table's unregularised TRAK (the default became 0.5 in issue 22)
            secs = time.perf_counter() - t
            rows.append({"projector": projector, "M": m, "lds": float(linear_datamodeling_score(s, masks, margins)[0]),
                         "seconds": secs})
            print(rows[-1], flush=True)
    lines = ["| M | LDS, dense Gaussian | LDS, Kronecker | seconds, dense | seconds, Kronecker |", "|---|---|---|---|---|"]
    for m in sizes:
        g = next(r for r in rows if r["projector"] == "gaussian" and r["M"] == m)
        k = next(r for r in rows if r["projector"] == "kronecker" and r["M"] == m)
        lines.append(f"| {m} | {g['lds']:.3f} | {k['lds']:.3f} | {g['seconds']:.1f} | {k['seconds']:.1f} |")
    md = "\n".join(lines) + (f"\n\nLeNet-5, {args.n_train} U-MNIST train examples, {args.n_targets} val targets, k = 512, "
                             f"checkpoints trained {args.epochs} epochs on random 50% subsets, LDS over {args.lds_models} "
                             f"models retrained on 50% subsets, {args.threads} thread(s). Total {time.perf_counter() - t0:.0f} s.")
    print(md)
    if args.write:
        write("trak_ensemble_size", {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, md)


if __name__ == "__main__":
    main()
