"""stratalab.attribution.TRAK against the reference library `traker` (MadryLab/trak), on the CPU.

Same model (LeNet-5), same data (a seeded subset of U-MNIST train, targets from its val split),
same projection dimension k, same M checkpoints (each trained on a random alpha = 50% subset of the
train subset), fp32 in both (traker: use_half_precision=False; on a CPU it uses its BasicProjector,
a Gaussian projection). Each tool runs in its own subprocess; we time featurize + score end to end
(model loading excluded) and read the subprocess's peak resident memory. Quality: the linear
datamodeling score (LDS) of each tool's matrix against the margins of `--lds-models` models retrained
on random 50% subsets (the same subsets and margins for both), and the Spearman correlation between
the two matrices.

traker is not a dependency of stratalab: it lives only in this benchmark's environment
(`make bench-traker` builds `.venv-traker` with stratalab and traker, then runs this script).

Run: .venv-traker/bin/python benchmarks/trak_vs_traker.py [--n-train 4000] [--n-targets 500]
     [--proj-dim 512] [--models 2] [--epochs 8] [--lds-models 20]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from _common import data_dir, write  # noqa: E402

BATCH = 64


def _model():
    from stratalab.models import build_model

    return build_model("lenet5", (1, 32, 32), 2, seed=0)


def _load_ckpts(work: Path, n: int):
    import torch

    return [torch.load(work / f"ckpt{m}.pt", weights_only=True) for m in range(n)]


def worker(tool: str, work: Path, n_models: int, proj_dim: int) -> None:
    """Runs in its own process: featurize + score with one tool, write scores and timings."""
    import torch

    torch.set_num_threads(2)
    x, y = np.load(work / "x_train.npy"), np.load(work / "y_train.npy")
    xt, yt = np.load(work / "x_target.npy"), np.load(work / "y_target.npy")
    ckpts = _load_ckpts(work, n_models)
    if tool == "ours":
        from stratalab.attribution import ensemble_scores
    else:
        from trak import TRAKer
    base_mb = _rss_mb()  # after imports and data: what the tool itself adds is peak - base
    t0 = time.perf_counter()
    if tool == "ours":
        models = []
        for c in ckpts:
            m = _model()
            m.load_state_dict(c)
            models.append(m)
        scores = np.asarray(ensemble_scores(models, (x, y), (xt, yt), proj_dim=proj_dim, batch_size=BATCH, seed=0))
    else:
        traker = TRAKer(model=_model(), task="image_classification", train_set_size=len(y),
                        save_dir=str(work / "traker"), device="cpu", proj_dim=proj_dim, use_half_precision=False,
                        projector_seed=0)
        xs, ys = torch.as_tensor(x), torch.as_tensor(y)
        xts, yts = torch.as_tensor(xt), torch.as_tensor(yt)
        for mid, c in enumerate(ckpts):
            traker.load_checkpoint(c, model_id=mid)
            for s in range(0, len(y), BATCH):
                traker.featurize(batch=(xs[s:s + BATCH], ys[s:s + BATCH]), num_samples=len(ys[s:s + BATCH]))
        traker.finalize_features()
        for mid, c in enumerate(ckpts):
            traker.start_scoring_checkpoint(exp_name="bench", checkpoint=c, model_id=mid, num_targets=len(yt))
            for s in range(0, len(yt), BATCH):
                traker.score(batch=(xts[s:s + BATCH], yts[s:s + BATCH]), num_samples=len(yts[s:s + BATCH]))
        scores = np.asarray(traker.finalize_scores(exp_name="bench"), dtype=np.float32)
    seconds = time.perf_counter() - t0
    np.save(work / f"scores_{tool}.npy", scores)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    (work / f"timing_{tool}.json").write_text(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb,
                                                          "added_mb": peak_mb - base_mb, "shape": list(scores.shape)}))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _train(ds, idx: np.ndarray, epochs: int, seed: int):
    from stratalab.models import build_model
    from stratalab.train import TrainConfig, fit

    cfg = TrainConfig(model="lenet5", epochs=epochs, lr=2e-3, batch_size=128, seed=seed)
    return fit(build_model("lenet5", (1, 32, 32), 2, seed=seed), ds.train.subset(idx), cfg).model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-targets", type=int, default=500)
    ap.add_argument("--proj-dim", type=int, default=512)
    ap.add_argument("--models", type=int, default=2, help="M checkpoints, each trained on an alpha = 50%% subset")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lds-models", type=int, default=20)
    ap.add_argument("--worker", choices=["ours", "traker"], help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.work, args.models, args.proj_dim)
        return
    try:
        import trak  # noqa: F401
    except ImportError:
        sys.exit("traker is not installed in this environment; run `make bench-traker` (it builds .venv-traker).")
    import torch

    from stratalab.attribution import linear_datamodeling_score, margin, random_subsets
    from stratalab.data import load

    torch.set_num_threads(2)
    ds = load("u-mnist", data_dir=data_dir(), seed=0)
    rng = np.random.default_rng(0)
    train_idx = np.sort(rng.choice(len(ds.train), args.n_train, replace=False))
    target_idx = np.sort(rng.choice(len(ds.val), args.n_targets, replace=False))
    sub = ds.with_train(train_idx)
    x = sub.train.load_x().astype(np.float32)
    y = sub.train.y
    xt, yt = ds.val.load_x(target_idx).astype(np.float32), ds.val.y[target_idx]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, arr in (("x_train", x), ("y_train", y), ("x_target", xt), ("y_target", yt)):
            np.save(work / f"{name}.npy", arr)
        for m, mask in enumerate(random_subsets(len(y), args.models, 0.5, seed=100)):
            torch.save(_train(sub, np.flatnonzero(mask), args.epochs, seed=100 + m).state_dict(), work / f"ckpt{m}.pt")
        print(f"trained {args.models} checkpoints ({time.perf_counter() - t0:.0f} s)", flush=True)
        masks = random_subsets(len(y), args.lds_models, 0.5, seed=200)
        margins = []
        for j, mask in enumerate(masks):
            model = _train(sub, np.flatnonzero(mask), args.epochs, seed=200 + j).eval()
            with torch.no_grad():
                margins.append(margin(model(torch.as_tensor(xt)), torch.as_tensor(yt)).numpy())
        margins = np.array(margins)
        print(f"trained {args.lds_models} LDS models ({time.perf_counter() - t0:.0f} s)", flush=True)
        res = {}
        for tool in ("ours", "traker"):
            cmd = [sys.executable, __file__, "--worker", tool, "--work", str(work), "--models", str(args.models),
                   "--proj-dim", str(args.proj_dim)]
            subprocess.run(cmd, check=True)
            timing = json.loads((work / f"timing_{tool}.json").read_text())
            scores = np.load(work / f"scores_{tool}.npy")
            assert scores.shape == (len(y), len(yt)), scores.shape
            timing["lds"] = linear_datamodeling_score(scores, masks, margins)[0]
            res[tool] = (timing, scores)
            print(f"{tool}: {timing}", flush=True)
        from scipy.stats import spearmanr

        agree = float(np.mean([spearmanr(res["ours"][1][:, t], res["traker"][1][:, t]).statistic for t in range(len(yt))]))
    o, r = res["ours"][0], res["traker"][0]
    lines = ["| tool | featurize + score (s) | peak RSS (MB) | added by the tool (MB) | LDS |", "|---|---|---|---|---|",
             f"| stratalab TRAK | {o['seconds']:.1f} | {o['peak_rss_mb']:.0f} | {o['added_mb']:.0f} | {o['lds']:.3f} |",
             f"| traker {__import__('trak').__version__} (BasicProjector) | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
             f"{r['added_mb']:.0f} | {r['lds']:.3f} |"]
    md = "\n".join(lines) + (
        f"\n\nSpeed-up {r['seconds'] / o['seconds']:.1f}x; mean per-target Spearman between the two matrices {agree:.3f}. "
        f"LeNet-5, {args.n_train} U-MNIST train examples, {args.n_targets} val targets, k = {args.proj_dim}, "
        f"M = {args.models} checkpoints ({args.epochs} epochs on 50% subsets), fp32, batch {BATCH}, 2 threads; "
        f"LDS over {args.lds_models} models retrained on 50% subsets. Total {time.perf_counter() - t0:.0f} s.")
    print(md)
    write("trak_vs_traker", {"args": vars(args), "ours": o, "traker": r, "speedup": r["seconds"] / o["seconds"],
                             "spearman_between": agree}, md)


if __name__ == "__main__":
    main()
