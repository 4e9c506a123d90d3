"""TRAK's ridge, swept (issue 22, item 1): the LDS of stratalab's TRAK for each value of ``lam`` (the
ridge added to ``G^T G``, relative to its mean diagonal), over projection seeds, on the checkpoints
and LDS margins of ``benchmarks/trak_seeds.py`` (run that first with the same ``--work``).

Each model's train and target features are computed once per seed; every ``lam`` then reuses them,
with the kernel ``G (G^T G + lam * mean(diag) I)^{-1}`` in fp64, summed over the M models and scaled
by the mean ``1 - p_i`` as :func:`stratalab.attribution.ensemble_scores` does. This sweep chose
TRAK's default ``lam = 0.5`` on projection seeds 0-4; ``trak_seeds.py`` then compared the modes on
seeds 5-9.

Run: python benchmarks/trak_ridge.py --work DIR [--projector kronecker] [--proj-dim 512] [--m 2]
     [--seeds 0,1,2,3,4] [--lams 1e-6,0.01,0.1,0.3,0.5,1,3,10,100] [--name trak_ridge_kronecker_k512_m2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from _common import write  # noqa: E402
from trak_vs_traker import BATCH, _load_ckpts, _model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="the --work folder of trak_seeds.py (checkpoints, margins)")
    ap.add_argument("--projector", default="kronecker", choices=("kronecker", "gaussian"))
    ap.add_argument("--proj-dim", type=int, default=512)
    ap.add_argument("--m", type=int, default=2, help="ensemble size M (the first M checkpoints)")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--lams", default="1e-6,0.01,0.1,0.3,0.5,1,3,10,100")
    ap.add_argument("--lds-models", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    import torch

    from stratalab.attribution import TRAK, linear_datamodeling_score, random_subsets

    torch.set_num_threads(args.threads)
    lams = [float(v) for v in args.lams.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    w = args.work
    if not (w / "lds_margins.npy").exists():
        sys.exit(f"{w} has no LDS margins; run benchmarks/trak_seeds.py --work {w} first.")
    x, y = np.load(w / "x_train.npy"), np.load(w / "y_train.npy")
    xt, yt = np.load(w / "x_target.npy"), np.load(w / "y_target.npy")
    margins = np.load(w / "lds_margins.npy")
    if margins.shape[0] != args.lds_models:
        sys.exit(f"{w} holds margins of {margins.shape[0]} LDS models, not --lds-models {args.lds_models}.")
    masks = random_subsets(len(y), args.lds_models, 0.5, seed=200)  # the subsets of trak_seeds.py
    ckpts = _load_ckpts(w, args.m)
    t0 = time.perf_counter()
    lds: dict[float, list[float]] = {lam: [] for lam in lams}
    for seed in seeds:
        total = {lam: np.zeros((len(y), len(yt))) for lam in lams}
        q = np.zeros(len(y))
        for i, c in enumerate(ckpts):
            model = _model()
            model.load_state_dict(c)
            trak = TRAK(model, proj_dim=args.proj_dim, seed=seed + i, projector=args.projector, batch_size=BATCH).featurize(x, y)
            g = torch.as_tensor(trak._features, dtype=torch.float64)
            gt = torch.as_tensor(trak.featurize_targets(xt, yt), dtype=torch.float64)
            xtx = g.T @ g
            eye = torch.eye(xtx.shape[0], dtype=torch.float64)
            for lam in lams:
                total[lam] += (g @ torch.linalg.solve(xtx + lam * torch.diagonal(xtx).mean() * eye, gt.T)).numpy()
            q += trak.q
        for lam in lams:
            lds[lam].append(linear_datamodeling_score(total[lam] * (q / args.m ** 2)[:, None], masks, margins)[0])
        print(f"[{time.perf_counter() - t0:.0f} s] seed {seed}: " + ", ".join(f"{lam:g} {lds[lam][-1]:.4f}" for lam in lams), flush=True)
    lines = ["| lam | LDS (mean ± std over seeds) |", "|---|---|"]
    best = max(lams, key=lambda lam: float(np.mean(lds[lam])))
    for lam in lams:
        v = np.array(lds[lam])
        mark = " (best)" if lam == best else ""
        lines.append(f"| {lam:g}{mark} | {v.mean():.4f} ± {v.std(ddof=1) if v.size > 1 else 0:.4f} |")
    md = "\n".join(lines) + (f"\n\nTRAK {args.projector}, k = {args.proj_dim}, M = {args.m}, projection seeds {args.seeds}, LDS over "
                            f"{args.lds_models} retrained models (the trak_seeds.py setting). {time.perf_counter() - t0:.0f} s.")
    print(md)
    name = args.name or f"trak_ridge_{args.projector}_k{args.proj_dim}_m{args.m}"
    write(name, {"args": {k: str(v) for k, v in vars(args).items()}, "lds": {str(k): v for k, v in lds.items()}}, md)


if __name__ == "__main__":
    main()
