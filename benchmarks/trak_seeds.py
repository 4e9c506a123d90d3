"""TRAK quality at speed, decided over projection seeds (issue 22, item 1): stratalab's TRAK modes
against traker (MadryLab/trak) on the same checkpoints, over several projection seeds, for the
ensemble sizes M = 2 and M = 10, with the LDS taken against many retrained models.

Setting (that of ``benchmarks/trak_vs_traker.py``): LeNet-5 on a seeded subset of U-MNIST train
(--n-train), targets from its val split (--n-targets); --max-models checkpoints, each trained on a
random 50% subset (M = m uses the first m); the LDS against --lds-models models retrained on other
random 50% subsets (seeds 200, 201, ...). Checkpoints and margins are trained once and shared by
every tool and seed, so the only thing that changes between the runs of one tool is its projection
seed, and the runs of two tools with the same seed index are paired (same checkpoints, same LDS
subsets and margins).

A tool is a name with options, ``name[:key=value...]``:
  traker                       traker's TRAKer (BasicProjector on the CPU), fp32; ``lambda_reg=``
  dense                        stratalab TRAK, dense Gaussian projection (``projector="gaussian"``)
  kron                         stratalab TRAK, per-layer Kronecker projection (``projector="kronecker"``)
  ``dense`` / ``kron`` take any ``stratalab.attribution.TRAK`` keyword: ``lam=1e-06`` (the TRAK
  paper's unregularised scores; the default is stratalab's lam = 0.5), ``proj_dim=1024`` ...
Every run is its own subprocess (traker in its own environment, ``--traker-python``); the time is
featurize + score end to end, model loading excluded; memory is the subprocess's peak RSS.

Per tool and M: mean ± std over seeds of LDS, seconds and peak RSS; against traker (the reference),
the paired LDS difference per seed (mean ± std, and how many seeds the tool is ahead) and the ratio
of mean times.

Run: python benchmarks/trak_seeds.py [--tools traker,dense,kron] [--seeds 0,1,2,3,4] [--m-values 2,10]
     [--lds-models 50] [--work DIR] [--threads 1] [--name trak_seeds]
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
from _common import write  # noqa: E402
from trak_vs_traker import BATCH, _load_ckpts, _model, _rss_mb, prepare, traker_scores  # noqa: E402

BASES = ("traker", "dense", "kron")


def parse_tool(spec: str) -> tuple[str, dict]:
    """``"kron:lam=0.01:proj_dim=1024"`` -> ("kron", {"lam": 0.01, "proj_dim": 1024})."""
    base, *rest = spec.split(":")
    if base not in BASES:
        raise SystemExit(f"unknown tool {base!r} in {spec!r}; tools are {', '.join(BASES)} with :key=value options.")
    opts: dict = {}
    fixed = {"seed", "projector_seed", "proj_dim"} if base == "traker" else {"seed", "batch_size", "projector"}
    for kv in rest:
        key, sep, val = kv.partition("=")
        if not sep:
            raise SystemExit(f"option {kv!r} of {spec!r} is not key=value.")
        if key in fixed:
            raise SystemExit(f"option {key!r} of {spec!r} is set by the benchmark ({', '.join(sorted(fixed))}: use --seeds, "
                             f"--proj-dim or the tool name).")
        try:
            opts[key] = json.loads(val)
        except json.JSONDecodeError:
            opts[key] = val
    return base, opts


def worker(spec: str, work: Path, m: int, seed: int, proj_dim: int, out: Path) -> None:
    """Runs in its own process: featurize + score with one tool, seed and M; writes scores and timings."""
    import torch

    torch.set_num_threads(int(os.environ.get("TRAK_BENCH_THREADS", "1")))
    base, opts = parse_tool(spec)
    x, y = np.load(work / "x_train.npy"), np.load(work / "y_train.npy")
    xt, yt = np.load(work / "x_target.npy"), np.load(work / "y_target.npy")
    ckpts = _load_ckpts(work, m)
    if base == "traker":
        import shutil

        import trak  # noqa: F401  (imported before the clock starts, as stratalab's TRAK below)

        save = Path(tempfile.mkdtemp(prefix="traker-", dir=work))
        shutil.rmtree(save, ignore_errors=True)  # traker would reuse what a save_dir holds
    else:
        from stratalab.attribution import ensemble_scores
    base_mb = _rss_mb()
    t0 = time.perf_counter()
    if base == "traker":
        scores = traker_scores(ckpts, x, y, xt, yt, save_dir=save, proj_dim=proj_dim, projector_seed=seed, **opts)
    else:
        models = []
        for c in ckpts:
            model = _model()
            model.load_state_dict(c)
            models.append(model)
        kw = {"proj_dim": proj_dim, **opts, "projector": "kronecker" if base == "kron" else "gaussian"}
        scores = np.asarray(ensemble_scores(models, (x, y), (xt, yt), batch_size=BATCH, seed=seed, **kw))
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if base == "traker":
        shutil.rmtree(save, ignore_errors=True)  # its stores (~100 MB at M = 10) are not needed after scoring
    np.save(out.with_suffix(".npy"), scores)
    out.write_text(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "added_mb": peak_mb - base_mb}))


def summarise(runs: list[dict], tools: list[str], m_values: list[int], seeds: list[int], ref: str) -> tuple[list[dict], str]:
    rows = []
    lines = ["| M | tool | LDS (mean ± std) | seconds (mean ± std) | peak RSS (MB) | LDS - traker, paired (mean ± std) | "
             "seeds ahead of traker | speed-up vs traker |", "|---|---|---|---|---|---|---|---|"]
    for m in m_values:
        by = {t: {r["seed"]: r for r in runs if r["tool"] == t and r["m"] == m} for t in tools}
        ref_runs = by.get(ref, {})
        for t in tools:
            rs = [by[t][s] for s in seeds if s in by[t]]
            if not rs:
                continue
            lds = np.array([r["lds"] for r in rs])
            secs = np.array([r["seconds"] for r in rs])
            rss = np.array([r["peak_rss_mb"] for r in rs])
            paired = np.array([by[t][s]["lds"] - ref_runs[s]["lds"] for s in seeds if s in by[t] and s in ref_runs])
            ref_secs = np.mean([r["seconds"] for r in ref_runs.values()]) if ref_runs else float("nan")
            row = {"m": m, "tool": t, "n_seeds": len(rs), "lds_mean": float(lds.mean()), "lds_std": float(lds.std(ddof=1)) if len(rs) > 1 else 0.0,
                   "seconds_mean": float(secs.mean()), "seconds_std": float(secs.std(ddof=1)) if len(rs) > 1 else 0.0,
                   "peak_rss_mb_mean": float(rss.mean()), "paired_diff_mean": float(paired.mean()) if paired.size else None,
                   "paired_diff_std": float(paired.std(ddof=1)) if paired.size > 1 else None,
                   "seeds_ahead": int((paired > 0).sum()) if paired.size else None, "speedup": float(ref_secs / secs.mean())}
            rows.append(row)
            diff = "-" if t == ref or not paired.size else f"{row['paired_diff_mean']:+.4f} ± {row['paired_diff_std'] or 0:.4f}"
            ahead = "-" if t == ref or not paired.size else f"{row['seeds_ahead']} of {paired.size}"
            lines.append(f"| {m} | {t} | {row['lds_mean']:.4f} ± {row['lds_std']:.4f} | {row['seconds_mean']:.1f} ± {row['seconds_std']:.1f} | "
                         f"{row['peak_rss_mb_mean']:.0f} | {diff} | {ahead} | {row['speedup']:.1f}x |")
    return rows, "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tools", default="traker,dense,kron", help="comma-separated tool specs (name[:key=value...])")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="projection seeds")
    ap.add_argument("--m-values", default="2,10")
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-targets", type=int, default=500)
    ap.add_argument("--proj-dim", type=int, default=512)
    ap.add_argument("--max-models", type=int, default=10, help="checkpoints trained (M = m uses the first m)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lds-models", type=int, default=50)
    ap.add_argument("--traker-python", default=".venv-traker/bin/python")
    ap.add_argument("--work", type=Path, default=None, help="keep checkpoints, margins and per-run scores; reuse them")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="trak_seeds")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--m", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.work, args.m, args.seed, args.proj_dim, args.out)
        return
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in tools:
        parse_tool(t)  # every spec is checked before any training
    seeds = [int(s) for s in args.seeds.split(",")]
    m_values = [int(m) for m in args.m_values.split(",")]
    if max(m_values) > args.max_models:
        sys.exit(f"--m-values up to {max(m_values)} need --max-models >= {max(m_values)}.")
    if any(t.startswith("traker") for t in tools) and not Path(args.traker_python).exists():
        sys.exit(f"traker needs its own environment at {args.traker_python}; run `make bench-trak` (it builds .venv-traker).")
    import torch

    from stratalab.attribution import linear_datamodeling_score

    os.environ["TRAK_BENCH_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        setting = {k: getattr(args, k) for k in ("n_train", "n_targets", "max_models", "epochs", "lds_models")}
        meta = work / "setting.json"
        if not (meta.exists() and json.loads(meta.read_text()) == setting):
            import shutil

            shutil.rmtree(work / "runs", ignore_errors=True)  # scores of other checkpoints are not reused
        masks, margins = prepare(work, setting, args.max_models)
        n_t = args.n_targets
        runs = []
        for m in m_values:
            for seed in seeds:
                for t in tools:
                    out = work / "runs" / f"{t.replace(':', '_').replace('=', '-')}_m{m}_s{seed}_k{args.proj_dim}.json"
                    out.parent.mkdir(exist_ok=True)
                    if not out.exists():
                        py = args.traker_python if t.startswith("traker") else sys.executable
                        subprocess.run([py, __file__, "--worker", t, "--work", str(work), "--m", str(m), "--seed", str(seed),
                                        "--proj-dim", str(args.proj_dim), "--out", str(out)], check=True)
                    rec = json.loads(out.read_text())
                    scores = np.load(out.with_suffix(".npy"))
                    assert scores.shape == (args.n_train, n_t), scores.shape
                    rec.update(tool=t, m=m, seed=seed, lds=linear_datamodeling_score(scores, masks, margins)[0])
                    runs.append(rec)
                    print(f"[{time.perf_counter() - t0:.0f} s] M={m} seed={seed} {t}: LDS {rec['lds']:.4f}, "
                          f"{rec['seconds']:.1f} s, {rec['peak_rss_mb']:.0f} MB", flush=True)
    ref = next((t for t in tools if t.startswith("traker")), tools[0])
    rows, table = summarise(runs, tools, m_values, seeds, ref)
    md = table + (
        f"\n\nLeNet-5, {args.n_train} U-MNIST train examples, {args.n_targets} val targets, k = {args.proj_dim}, checkpoints "
        f"trained {args.epochs} epochs on 50% subsets, projection seeds {args.seeds}, LDS over {args.lds_models} models retrained "
        f"on 50% subsets, fp32, batch {BATCH}, {args.threads} torch thread(s), each run in its own process. "
        f"Reference for the paired columns: {ref}. Total {time.perf_counter() - t0:.0f} s.")
    print(md)
    write(args.name, {"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs, "summary": rows}, md)


if __name__ == "__main__":
    main()
