"""Chiu, Chen and Ma's Tables 1-2 layout at CPU scale: cifarnet on CIFAR-10 (the JPEG copy in
../shared/data) with each augmentation, audited on the CIFAR-10-B colour subgroups of test, clean
and under the CIFAR-10-C corruptions (on the first --n-corrupt test images).

Run: python benchmarks/cifar_b_study.py [--augment flip_crop,mixup,cutout,cutmix,autoaugment,flowaug]
     [--flow flow.pt] [--seeds 0] [--epochs 8] [--n-corrupt 1000] [--severities 1,3,5]
     [--merge earlier.json,...] [--name cifar_b_study] [--write]

--merge adds the runs of earlier results of this script (their other rows or seeds) to the table,
after checking that every setting a run depends on is the same (a run already done here wins).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, data_dir, write  # noqa: E402

from stratalab.augment.corruptions import CORRUPTIONS  # noqa: E402
from stratalab.experiments.cifar_b import CifarBConfig, CifarBResult, plot_class_vs_worst, run_cifar_b  # noqa: E402

# ResNet-18, 250 epochs, on CIFAR-10(-B): the paper's Table 2 (best-epoch test accuracy, %) and Table 1
# (MacroStd, WeightedStd, % points)
PAPER = {"flip_crop": (95.16, 2.24, 3.45), "mixup": (95.96, 2.17, 3.02), "cutout": (95.94, 1.91, 2.94),
         "cutmix": (96.17, 1.91, 3.34), "autoaugment": (95.82, 2.11, 3.54)}
# FlowAug rows of the same tables, by objective
PAPER_FLOWAUG = {"gauss": (96.23, 1.91, 2.82), "mix": (95.98, 1.99, 2.92), "gauss+std": (96.22, 1.65, 3.08),
                 "mix+std": (96.15, 1.81, 2.76), "gauss+mix": (96.49, 1.89, 3.09), "gauss+mix+std": (96.53, 1.66, 2.71)}


def merge_runs(cfg: CifarBConfig, path: Path) -> tuple[CifarBConfig, list[dict], float]:
    """The runs of an earlier result, refused unless every setting they depend on equals ``cfg``'s."""
    d = json.loads(path.read_text())
    old = CifarBConfig.from_dict(d["config"])
    mine = {k: v for k, v in cfg.to_dict().items() if k not in ("augmentations", "seeds", "flow", "flowaug_objective",
                                                                "flowaug_std_weight", "flowaug_mix_weight")}
    theirs = {k: v for k, v in old.to_dict().items() if k in mine}
    diff = sorted(k for k in mine if mine[k] != theirs.get(k))
    if diff:
        raise SystemExit(f"{path}: its runs used other settings ({', '.join(diff)}); they cannot join this table.")
    if "flowaug" in old.augmentations and "flowaug" in cfg.augmentations and old.run_key("flowaug") != cfg.run_key("flowaug"):
        raise SystemExit(f"{path}: its FlowAug runs used another flow or objective.")
    return old, d["runs"], float(d.get("seconds", 0.0))


def merged(res: CifarBResult, earlier: list[tuple[CifarBConfig, list[dict], float]]) -> CifarBResult:
    """``res`` with the earlier runs it does not have, rows in the order first seen, seeds sorted."""
    runs = {(r["augment"], r["seed"]): r for r in res.runs}
    augs, seeds = list(res.config.augmentations), set(res.config.seeds)
    cfg_flow = {k: getattr(res.config, k) for k in ("flow", "flowaug_objective", "flowaug_std_weight")}
    for old, old_runs, _ in earlier:
        for r in old_runs:
            runs.setdefault((r["augment"], r["seed"]), r)
            if r["augment"] not in augs:
                augs.append(r["augment"])
            seeds.add(r["seed"])
        if "flowaug" in old.augmentations and cfg_flow["flow"] is None:
            cfg_flow = {k: getattr(old, k) for k in cfg_flow}
    order = {a: i for i, a in enumerate(["flip_crop", "mixup", "cutout", "cutmix", "autoaugment", "flowaug"])}
    augs.sort(key=lambda a: order.get(a, 99))
    all_runs = sorted(runs.values(), key=lambda r: (order.get(r["augment"], 99), r["seed"]))
    cfg = CifarBConfig.from_dict({**res.config.to_dict(), "augmentations": augs, "seeds": sorted(seeds), **cfg_flow})
    return CifarBResult(config=cfg, runs=all_runs, class_names=res.class_names, group_names=res.group_names,
                        seconds=res.seconds + sum(s for *_, s in earlier))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--augment", default="flip_crop,mixup,cutout,cutmix,autoaugment")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--n-corrupt", type=int, default=1000)
    ap.add_argument("--severities", default="1,3,5")
    ap.add_argument("--flow", default=None, help="the flowaug row's flow (stratalab flow train)")
    ap.add_argument("--flowaug-objective", default="gauss+std")
    ap.add_argument("--flowaug-lambda", type=float, default=0.1)
    ap.add_argument("--merge", default="", help="earlier result files (.json) whose runs join the table")
    ap.add_argument("--work-dir", default=None, help="keep each run's result here and reuse it when run again")
    ap.add_argument("--name", default="cifar_b_study")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    cfg = CifarBConfig.of(dataset="cifar10-b", augmentations=tuple(args.augment.split(",")),
                       seeds=tuple(int(s) for s in args.seeds.split(",")), epochs=args.epochs, lr=args.lr,
                       label_smoothing=args.label_smoothing, corruptions=tuple(CORRUPTIONS) if args.n_corrupt else (),
                       severities=tuple(int(s) for s in args.severities.split(",")), n_corrupt=args.n_corrupt or None,
                       flow=args.flow, flowaug_objective=args.flowaug_objective, flowaug_std_weight=args.flowaug_lambda)
    earlier = [merge_runs(cfg, Path(p)) for p in args.merge.split(",") if p.strip()]
    t = time.perf_counter()
    from stratalab.experiments.backend import Backend

    res = run_cifar_b(cfg, data_dir=data_dir(), backend=Backend("local", work_dir=args.work_dir), progress=lambda m: print(m, file=sys.stderr, flush=True))
    secs = time.perf_counter() - t
    if earlier:
        res = merged(res, earlier)
    tab = res.table()
    lines = ["| augmentation | seeds | accuracy (%) | WeightedStd | MacroStd | worst subgroup (%) | corrupted acc. (%) | "
             "corrupted MacroStd | paper acc. / WeightedStd / MacroStd (ResNet-18) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in tab.itertuples(index=False):
        def ms(c: str, r: Any = r) -> str:
            return f"{100 * getattr(r, c + '_mean'):.2f} ± {100 * getattr(r, c + '_std'):.2f}"
        cor = (ms("corrupted_accuracy"), ms("corrupted_macro_std")) if hasattr(r, "corrupted_accuracy_mean") else ("-", "-")
        p = PAPER_FLOWAUG.get(cfg.flowaug_objective) if r.augment == "flowaug" else PAPER.get(r.augment)
        lines.append(f"| {cfg.row_name(r.augment)} | {r.seeds} | {ms('accuracy')} | {ms('weighted_std')} | {ms('macro_std')} | "
                     f"{ms('worst_group_accuracy')} | {cor[0]} | {cor[1]} | {f'{p[0]} / {p[2]} / {p[1]}' if p else '-'} |")
    corr = res.correlation()
    train = [r["train_seconds"] for r in res.runs]
    lines += ["", f"{len(res.runs)} runs, {cfg.train.epochs} epochs each, {min(train):.0f}-{max(train):.0f} s of training a run; "
              f"{sum(train):.0f} s of training in all. Accuracy vs MacroStd over the runs: Pearson {corr['pearson']:.2f}, Spearman "
              f"{corr['spearman']:.2f} ({corr['runs']} runs)." if corr["runs"] >= 3 else
              f"{len(res.runs)} runs, {cfg.train.epochs} epochs each, {min(train):.0f}-{max(train):.0f} s of training a run; "
              f"{sum(train):.0f} s of training in all."]
    text = "\n".join(lines)
    print(text)
    if args.write:
        RESULTS.mkdir(exist_ok=True)
        plot_class_vs_worst(res, RESULTS / f"{args.name}_fig5.png")
        payload = res.to_dict()
        write(args.name, {"seconds": secs, **json.loads(json.dumps(payload, default=float))}, text)


if __name__ == "__main__":
    main()
