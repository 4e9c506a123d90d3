"""stratalab.attribution.TRAK against the reference libraries `traker` (MadryLab/trak) and `dattri`
(TRAIS-Lab), on the CPU.

Tools: ``ours`` (dense Gaussian projection, the TRAK paper's; per-example gradients by hooks),
``ours-vmap`` (the same with ``vmap(grad)``), ``ours-kronecker`` (per-layer Kronecker-factored
projection, LoGra-style), ``traker`` and ``dattri`` (each in its own virtual environment:
``--traker-python`` / ``--dattri-python``).

Same model (LeNet-5), same data (a seeded subset of U-MNIST train, targets from its val split),
same projection dimension k, same M checkpoints (each trained on a random alpha = 50% subset of the
train subset), fp32 in both (traker: use_half_precision=False; on a CPU it uses its BasicProjector,
a Gaussian projection). Each tool runs in its own subprocess; we time featurize + score end to end
(model loading excluded) and read the subprocess's peak resident memory. Quality: the linear
datamodeling score (LDS) of each tool's matrix against the margins of `--lds-models` models retrained
on random 50% subsets (the same subsets and margins for both), and the Spearman correlation between
the two matrices.

traker and dattri are not dependencies of stratalab: they live only in their benchmark
environments (`make bench-trak` builds `.venv-traker` and `.venv-dattri`, then runs this script).

Run: python benchmarks/trak_vs_traker.py [--tools ours,ours-kronecker,traker,dattri] [--n-train 4000]
     [--n-targets 500] [--proj-dim 512] [--models 2] [--epochs 8] [--lds-models 20] [--work DIR]
     [--name trak_vs_traker]
--work keeps the trained checkpoints and LDS margins there and reuses them when the settings match.
"""

from __future__ import annotations

import argparse
import json
import os
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

    torch.set_num_threads(int(os.environ.get("TRAK_BENCH_THREADS", "2")))
    x, y = np.load(work / "x_train.npy"), np.load(work / "y_train.npy")
    xt, yt = np.load(work / "x_target.npy"), np.load(work / "y_target.npy")
    ckpts = _load_ckpts(work, n_models)
    if tool.startswith("ours"):
        from stratalab.attribution import ensemble_scores
    else:
        import trak  # noqa: F401  (imported before the clock starts)
    if tool == "traker":  # traker reloads what an earlier run left in its save_dir and skips that work
        import shutil

        shutil.rmtree(work / "traker", ignore_errors=True)
    base_mb = _rss_mb()  # after imports and data: what the tool itself adds is peak - base
    t0 = time.perf_counter()
    if tool.startswith("ours"):
        models = []
        for c in ckpts:
            m = _model()
            m.load_state_dict(c)
            models.append(m)
        # pinned to the settings of the recorded tables (the paper's unregularised TRAK), not the library's
        # defaults, which changed in issue 22 (lam 0.5, projector "auto"): benchmarks/trak_seeds.py measures those
        kw = {"ours": {"projector": "gaussian", "lam": 1e-6}, "ours-vmap": {"grads": "vmap", "projector": "gaussian", "lam": 1e-6},
              "ours-kronecker": {"projector": "kronecker", "lam": 1e-6}}[tool]
        scores = np.asarray(ensemble_scores(models, (x, y), (xt, yt), proj_dim=proj_dim, batch_size=BATCH, seed=0, **kw))
    else:
        scores = traker_scores(ckpts, x, y, xt, yt, save_dir=work / "traker", proj_dim=proj_dim, projector_seed=0)
    seconds = time.perf_counter() - t0
    np.save(work / f"scores_{tool}.npy", scores)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    (work / f"timing_{tool}.json").write_text(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb,
                                                          "added_mb": peak_mb - base_mb, "shape": list(scores.shape)}))


def traker_scores(ckpts: list, x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray, save_dir: Path,
                  **traker_kwargs) -> np.ndarray:
    """traker's TRAKer as its docs run it: featurize every checkpoint, finalize, score every
    checkpoint, finalize_scores; fp32 on the CPU, batches of BATCH. Returns (n_train, n_targets)."""
    import torch
    from trak import TRAKer

    traker = TRAKer(model=_model(), task="image_classification", train_set_size=len(y), save_dir=str(save_dir),
                    device="cpu", use_half_precision=False, **traker_kwargs)
    xs, ys, xts, yts = (torch.as_tensor(a) for a in (x, y, xt, yt))
    for mid, c in enumerate(ckpts):
        traker.load_checkpoint(c, model_id=mid)
        for s in range(0, len(y), BATCH):
            traker.featurize(batch=(xs[s:s + BATCH], ys[s:s + BATCH]), num_samples=len(ys[s:s + BATCH]))
    traker.finalize_features()
    for mid, c in enumerate(ckpts):
        traker.start_scoring_checkpoint(exp_name="bench", checkpoint=c, model_id=mid, num_targets=len(yt))
        for s in range(0, len(yt), BATCH):
            traker.score(batch=(xts[s:s + BATCH], yts[s:s + BATCH]), num_samples=len(yts[s:s + BATCH]))
    return np.asarray(traker.finalize_scores(exp_name="bench"), dtype=np.float32)


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


def bench_data(n_train: int, n_targets: int):
    """The benchmark's data: a seeded subset of U-MNIST train and val targets, as (sub, x, y, xt, yt)."""
    from stratalab.data import load

    ds = load("u-mnist", data_dir=data_dir(), seed=0, resize=False)  # zero-padded, as in the recorded runs
    rng = np.random.default_rng(0)
    train_idx = np.sort(rng.choice(len(ds.train), n_train, replace=False))
    target_idx = np.sort(rng.choice(len(ds.val), n_targets, replace=False))
    sub = ds.with_train(train_idx)
    return (sub, sub.train.load_x().astype(np.float32), sub.train.y,
            ds.val.load_x(target_idx).astype(np.float32), ds.val.y[target_idx])


def lds_margins(sub, masks: np.ndarray, xt: np.ndarray, yt: np.ndarray, epochs: int) -> np.ndarray:
    """Target margins of one model retrained on each subset of ``masks`` (seeds 200, 201, ...)."""
    import torch

    from stratalab.attribution import margin

    out = []
    for j, mask in enumerate(masks):
        model = _train(sub, np.flatnonzero(mask), epochs, seed=200 + j).eval()
        with torch.no_grad():
            out.append(margin(model(torch.as_tensor(xt)), torch.as_tensor(yt)).numpy())
    return np.array(out)


def prepare(work: Path, setting: dict, n_ckpts: int) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark's data, ``n_ckpts`` checkpoints (each on a random 50% subset, seeds 100, 101, ...)
    and the LDS margins of ``setting["lds_models"]`` retrained models, in ``work``: trained once and
    reused while ``setting`` (n_train, n_targets, epochs, lds_models and the checkpoint count) is the
    same. Returns the LDS subset masks and margins."""
    import torch

    from stratalab.attribution import random_subsets

    meta = work / "setting.json"
    sub, x, y, xt, yt = bench_data(setting["n_train"], setting["n_targets"])
    masks = random_subsets(len(y), setting["lds_models"], 0.5, seed=200)
    if meta.exists() and json.loads(meta.read_text()) == setting:
        print(f"reusing the checkpoints and LDS margins in {work}", flush=True)
        return masks, np.load(work / "lds_margins.npy")
    meta.unlink(missing_ok=True)
    t0 = time.perf_counter()
    for name, arr in (("x_train", x), ("y_train", y), ("x_target", xt), ("y_target", yt)):
        np.save(work / f"{name}.npy", arr)
    for m, mask in enumerate(random_subsets(len(y), n_ckpts, 0.5, seed=100)):
        torch.save(_train(sub, np.flatnonzero(mask), setting["epochs"], seed=100 + m).state_dict(), work / f"ckpt{m}.pt")
    print(f"trained {n_ckpts} checkpoints ({time.perf_counter() - t0:.0f} s)", flush=True)
    margins = lds_margins(sub, masks, xt, yt, setting["epochs"])
    np.save(work / "lds_margins.npy", margins)
    meta.write_text(json.dumps(setting))
    print(f"trained {setting['lds_models']} LDS models ({time.perf_counter() - t0:.0f} s)", flush=True)
    return masks, margins


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-targets", type=int, default=500)
    ap.add_argument("--proj-dim", type=int, default=512)
    ap.add_argument("--models", type=int, default=2, help="M checkpoints, each trained on an alpha = 50%% subset")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lds-models", type=int, default=20)
    ap.add_argument("--tools", default="ours,ours-kronecker,traker,dattri")
    ap.add_argument("--traker-python", default=".venv-traker/bin/python")
    ap.add_argument("--dattri-python", default=".venv-dattri/bin/python")
    ap.add_argument("--work", type=Path, default=None, help="keep checkpoints and LDS margins here; reuse when settings match")
    ap.add_argument("--name", default="trak_vs_traker")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of every tool")
    ap.add_argument("--worker", choices=["ours", "ours-vmap", "ours-kronecker", "traker"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.work, args.models, args.proj_dim)
        return
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    pythons = {"traker": args.traker_python, "dattri": args.dattri_python}
    for t in tools:
        if t not in ("ours", "ours-vmap", "ours-kronecker", "traker", "dattri"):
            sys.exit(f"unknown tool {t!r}")
        if t in pythons and not Path(pythons[t]).exists():
            sys.exit(f"{t} needs its own environment at {pythons[t]}; run `make bench-trak` (it builds .venv-{t}).")
    import torch

    from stratalab.attribution import linear_datamodeling_score

    os.environ["TRAK_BENCH_THREADS"] = str(args.threads)  # every worker runs with this many torch threads
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        setting = {k: getattr(args, k) for k in ("n_train", "n_targets", "models", "epochs", "lds_models")}
        masks, margins = prepare(work, setting, args.models)
        res = {}
        versions = {}
        for tool in tools:
            if tool == "dattri":
                cmd = [pythons["dattri"], str(Path(__file__).with_name("trak_dattri_worker.py")), "--work", str(work),
                       "--models", str(args.models), "--proj-dim", str(args.proj_dim)]
            else:
                cmd = [pythons.get(tool, sys.executable), __file__, "--worker", tool, "--work", str(work),
                       "--models", str(args.models), "--proj-dim", str(args.proj_dim)]
            subprocess.run(cmd, check=True)
            if tool in pythons:
                mod = {"traker": "trak", "dattri": "dattri"}[tool]
                dist = "traker" if tool == "traker" else "dattri"
                versions[tool] = subprocess.run([pythons[tool], "-c", f"import importlib.metadata as m; print(m.version('{dist}'))"],
                                                capture_output=True, text=True).stdout.strip() or mod
            timing = json.loads((work / f"timing_{tool}.json").read_text())
            scores = np.load(work / f"scores_{tool}.npy")
            assert scores.shape == (args.n_train, args.n_targets), scores.shape
            lds = linear_datamodeling_score(scores, masks, margins)[0]
            timing["lds"] = float(lds)
            res[tool] = (timing, scores)
            print(f"{tool}: {timing}", flush=True)
        from scipy.stats import spearmanr

        def agree(a: str, b: str) -> float:
            return float(np.mean([spearmanr(res[a][1][:, t], res[b][1][:, t]).statistic for t in range(args.n_targets)]))

        agreement = {f"{a} vs {b}": agree(a, b) for i, a in enumerate(tools) for b in tools[i + 1:]}
    names = {"ours": "stratalab TRAK (dense Gaussian, hooks)", "ours-vmap": "stratalab TRAK (dense Gaussian, vmap)",
             "ours-kronecker": "stratalab TRAK (Kronecker projection)",
             "traker": f"traker {versions.get('traker', '')} (BasicProjector)", "dattri": f"dattri {versions.get('dattri', '')} (TRAKAttributor)"}
    refs = [t for t in ("traker", "dattri") if t in res]
    fastest_ref = min(refs, key=lambda t: res[t][0]["seconds"]) if refs else None
    lines = ["| tool | featurize + score (s) | peak RSS (MB) | added by the tool (MB) | LDS | speed-up vs the faster reference |",
             "|---|---|---|---|---|---|"]
    for t in tools:
        o = res[t][0]
        up = f"{res[fastest_ref][0]['seconds'] / o['seconds']:.1f}x" if fastest_ref else "-"
        lines.append(f"| {names[t]} | {o['seconds']:.1f} | {o['peak_rss_mb']:.0f} | {o['added_mb']:.0f} | {o['lds']:.3f} | {up} |")
    md = "\n".join(lines) + (
        "\n\nMean per-target Spearman between matrices: " + ", ".join(f"{k} {v:.3f}" for k, v in agreement.items()) + ". "
        f"LeNet-5, {args.n_train} U-MNIST train examples, {args.n_targets} val targets, k = {args.proj_dim}, "
        f"M = {args.models} checkpoints ({args.epochs} epochs on 50% subsets), fp32, batch {BATCH}, {args.threads} thread(s), each tool in "
        f"its own process; LDS over {args.lds_models} models retrained on 50% subsets. Total {time.perf_counter() - t0:.0f} s.")
    print(md)
    write(args.name, {"args": {k: str(v) for k, v in vars(args).items()}, "tools": {t: res[t][0] for t in tools},
                      "versions": versions, "fastest_reference": fastest_ref, "spearman_between": agreement}, md)


if __name__ == "__main__":
    main()
