"""D3M Table 1 and Fig. 2 on spurious-mnist (Jain et al. 2024): ERM, AUTO-D3M, JTT, DFR, D3M, RWG,
SUBG and Group DRO, each with the group labels it needs; test worst-group and balanced accuracy,
mean and std over seeds; Fig. 2 (val worst-group accuracy against the number of training examples
removed: D3M order, random order, balancing of the majority group) averaged over seeds on a common
grid of k; and, with --m-values, D3M's and AUTO-D3M's test worst-group accuracy against the TRAK
ensemble size M.

spurious-mnist (corner patch agreeing with the class in 95% of train, class imbalance 5:1), LeNet-5,
Adam lr 1e-3, batch 128, --epochs for every trained model, model selection as in the paper's
appendix (ERM: val average accuracy; AUTO-D3M: worst pseudo-group; the rest: val worst-group
accuracy). --tune-baselines trains JTT and Group DRO over their papers' grids
(``stratalab.experiments.d3m.tuning_grid``) and keeps the run with the best val worst-group
accuracy. TRAK through all parameters, k-dimensional projection (--trak-projector), over M models
each trained on a random half of train (--trak-models; the paper uses M = 100; M = 1 uses the ERM
model). --work-dir keeps every finished training run, so a stopped run resumes and the M sweep
reuses the ERM model and the ensemble members.
Writes benchmarks/results/<--name>.{json,md} and <--name>_fig2.png.

Run: python benchmarks/d3m_spurious_mnist.py [--epochs 10] [--seeds 0,1,2] [--sweep-points 3]
     [--tune-baselines] [--trak-models 10] [--trak-projector kronecker] [--m-values 1,2,5]
     [--work-dir DIR] [--threads 1] [--backend ray --cpus 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, data_dir, write  # noqa: E402

from stratalab.experiments import D3MConfig, plot_sweep, run_d3m_table  # noqa: E402
from stratalab.experiments.backend import Backend, DataSpec  # noqa: E402
from stratalab.train import TrainConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--proj-dim", type=int, default=512)
    ap.add_argument("--trak-models", type=int, default=1)
    ap.add_argument("--trak-projector", default="gaussian", choices=("gaussian", "kronecker"))
    ap.add_argument("--tune-baselines", action="store_true")
    ap.add_argument("--imbalance", type=float, default=5.0)
    ap.add_argument("--sweep-points", type=int, default=5, help="Fig. 2 points per curve, every seed (0: none)")
    ap.add_argument("--m-values", default="", help="extra TRAK ensemble sizes for the WGA-vs-M table, e.g. 1,2,5")
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--backend", default="local", choices=("local", "ray"))
    ap.add_argument("--cpus", type=int, default=None, help="with --backend ray: CPUs of the local Ray cluster")
    ap.add_argument("--methods", default="", help="comma-separated Table 1 rows to run (e.g. jtt); default all")
    ap.add_argument("--name", default="d3m_spurious_mnist")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    m_values = sorted({int(m) for m in args.m_values.split(",") if m.strip()} - {args.trak_models})
    if m_values and args.methods and not {"d3m", "auto-d3m"} <= {m.strip() for m in args.methods.split(",")}:
        sys.exit("--m-values compares D3M and AUTO-D3M over M: keep d3m and auto-d3m in --methods.")
    cfg = TrainConfig(model="lenet5", epochs=args.epochs, batch_size=128, lr=1e-3)
    dcfg = D3MConfig(proj_dim=args.proj_dim, n_models=args.trak_models, trak_projector=args.trak_projector,
                     tune_baselines=args.tune_baselines, sweep_points=args.sweep_points,
                     **({"methods": tuple(m.strip() for m in args.methods.split(",") if m.strip())} if args.methods else {}))
    backend = Backend(args.backend, work_dir=args.work_dir, threads=args.threads, num_cpus=args.cpus)
    t0 = time.perf_counter()

    def spec(seed: int) -> DataSpec:
        return DataSpec(name="spurious-mnist", data_dir=str(data_dir()), seed=seed,
                        options={"class_imbalance": args.imbalance})

    def say(m: str) -> None:
        print(f"[{time.perf_counter() - t0:.0f} s] {m}", flush=True)

    table = run_d3m_table(spec, cfg, dcfg, seeds=seeds, backend=backend, progress=say)
    main_secs = time.perf_counter() - t0
    summ = table.summary()
    lines = ["| method | group labels train / val | test worst-group (%) | test balanced (%) | train examples removed |",
             "|---|---|---|---|---|"]
    for _, r in summ.iterrows():
        lines.append(f"| {r['name']} | {r['group_info']} | {100 * r['wga_mean']:.1f} ± {100 * r['wga_std']:.1f} | "
                     f"{100 * r['balanced_mean']:.1f} ± {100 * r['balanced_std']:.1f} | {r['removed_mean']:.0f} |")
    tuned = [(s.seed, m, t["chosen"]) for s in table.seeds for m, t in s.tuned.items()]
    if tuned:
        lines += ["", "Tuned baselines, the grid point chosen on val worst-group accuracy:", ""]
        lines += [f"- seed {seed}, {m}: {chosen}" for seed, m, chosen in tuned]
    sweep = table.sweep_mean()
    if not sweep.empty:
        plot_sweep(table, RESULTS / f"{args.name}_fig2.png")
        lines += ["", f"Fig. 2, mean ± std over seeds {args.seeds} on a common grid of k: val worst-group accuracy (%)", "",
                  "| curve | removed | val WGA (%) |", "|---|---|---|"]
        for _, r in sweep.iterrows():
            lines.append(f"| {r['curve']} | {r['k']} | {100 * r['val_wga_mean']:.1f} ± {100 * r['val_wga_std']:.1f} |")
    by_m: dict[int, object] = {}

    def finish() -> None:  # written after the main table and again after each ensemble size
        md = "\n".join(lines + m_lines()) + (
            f"\n\nspurious-mnist (patch, 95%, imbalance {args.imbalance:g}:1), LeNet-5, {args.epochs} epochs, "
            f"TRAK k={args.proj_dim} ({args.trak_projector}), M={args.trak_models}, "
            f"baselines {'tuned' if args.tune_baselines else 'untuned'}, seeds {args.seeds}, "
            f"{args.threads or 'all'} torch thread(s), {args.backend} backend; table {main_secs:.0f} s, "
            f"total {time.perf_counter() - t0:.0f} s ({backend.stats['run']} tasks run, "
            f"{backend.stats['reused']} reused from the work dir).")
        print(md, flush=True)
        write(args.name, {"args": vars(args), **table.to_dict(),
                          "by_m": {str(m): t.to_dict(orient="records") for m, t in by_m.items()}}, md)

    def m_lines() -> list[str]:
        if not by_m:
            return []
        rows = {**by_m, args.trak_models: summ}
        out = ["", "Test worst-group accuracy (%) against the TRAK ensemble size M (mean ± std over seeds):", "",
               "| M | D3M | AUTO-D3M |", "|---|---|---|"]
        for m in sorted(rows):
            t = rows[m].set_index("method")
            out.append(f"| {m} | " + " | ".join(f"{100 * t.loc[x, 'wga_mean']:.1f} ± {100 * t.loc[x, 'wga_std']:.1f}"
                                            for x in ("d3m", "auto-d3m")) + " |")
        return out

    finish()
    for m in m_values:
        mcfg = dataclasses.replace(dcfg, methods=("erm", "auto-d3m", "d3m"), n_models=m, sweep_points=0,
                                   tune_baselines=False)
        say(f"ensemble size M = {m}")
        by_m[m] = run_d3m_table(spec, cfg, mcfg, seeds=seeds, backend=backend, progress=say).summary()
        finish()


if __name__ == "__main__":
    main()
