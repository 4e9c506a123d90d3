"""GEORGE defaults that generalise (issue 9, item 3): the settings a data set without a recipe gets
(``GeorgeConfig.for_data``, the rule ``stratalab.experiments.george.size_rule``: overclustering
floors scaled to the smallest class, k-means and a short, wide feature training on small data) beside
the paper's class defaults (floors of 25, GMM, 20 epochs at lr 2e-3), on u-digits (the rare 8s, the
data the small-data settings were measured on), u-digits with a rare 3 (not used to choose the rule),
and spurious-mnist (large: the rule gives the paper's defaults). Robust accuracy = worst test
subgroup, for ERM, GEORGE and Group DRO on the true subgroups (the oracle), mean ± std over seeds.
No per-data-set recipe is used anywhere. U-MNIST's row, where the rule also gives the paper's
defaults, is read from benchmarks/results/george_umnist.json after checking its settings match.

Run: python benchmarks/george_defaults.py [--seeds 0,1,2] [--work-dir DIR] [--threads 1]
Writes benchmarks/results/george_defaults.{json,md}.
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

from stratalab.experiments import GeorgeConfig, run_george_grid, summarise  # noqa: E402
from stratalab.experiments.backend import Backend, DataSpec  # noqa: E402

CASES = [  # (label, data set, options, uses the shared data folder)
    ("u-digits (rare 8)", "u-digits", {}, False),
    ("u-digits (rare 3, held out)", "u-digits", {"rare_digit": 3}, False),
    ("spurious-mnist", "spurious-mnist", {}, True),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--cases", default="", help="comma-separated case numbers (0-based) to run; default all")
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    backend = Backend(work_dir=args.work_dir, threads=args.threads)
    chosen = [CASES[int(i)] for i in args.cases.split(",")] if args.cases else CASES
    t0 = time.perf_counter()
    rows, configs = [], {}
    for label, name, opts, shared in chosen:
        def spec(s: int, name: str = name, opts: dict = opts, shared: bool = shared) -> DataSpec:
            return DataSpec(name, s, str(data_dir()) if shared else None, opts)

        rule = GeorgeConfig.for_data(spec(seeds[0]).load())
        variants = {"size rule": rule}
        paper = GeorgeConfig.of(model=rule.model)  # the class defaults: the paper's U-MNIST settings
        if paper != rule:
            variants["paper defaults"] = paper
        for vname, cfg in variants.items():
            print(f"[{time.perf_counter() - t0:.0f} s] {label}, {vname}: {cfg.to_dict()}", flush=True)
            runs = run_george_grid(spec, cfg, seeds, backend=backend,
                                   progress=lambda m: print(f"[{time.perf_counter() - t0:.0f} s] {m}", flush=True))
            configs[f"{label} / {vname}"] = cfg.to_dict()
            rows.append((label, vname, summarise(runs), runs))
    umnist = RESULTS / "george_umnist.json"
    if umnist.exists():
        d = json.loads(umnist.read_text())
        args_ = d.get("args", {})
        padded = args_.get("pad", not args_.get("resize", False))  # files before 2026-11-30 were padded
        same = GeorgeConfig.from_dict(d["config"]) == GeorgeConfig.of(model="lenet5") and padded
        if same:
            rows.append(("u-mnist, zero-padded (george_umnist.json, " + d["date"] + ")", "size rule", summarise(d["runs"]),
                         d["runs"]))
        else:
            print("george_umnist.json was made with other settings; its row is left out", flush=True)
    lines = ["| data set | settings | ERM | GEORGE | oracle (GDRO, true groups) | gap closed | seeds |",
             "|---|---|---|---|---|---|---|"]
    for label, vname, table, _ in rows:
        t = table.set_index("method")

        def cell(m: str, t: Any = t) -> str:
            return f"{100 * t.loc[m, 'robust_mean']:.1f} ± {100 * t.loc[m, 'robust_std']:.1f}"

        erm, geo, orc = (t.loc[m, "robust_mean"] for m in ("ERM", "GEORGE", "GDRO (true subclasses)"))
        gap = f"{100 * (geo - erm) / (orc - erm):.0f}%" if orc - erm > 1e-9 else "n/a"
        lines.append(f"| {label} | {vname} | {cell('ERM')} | {cell('GEORGE')} | {cell('GDRO (true subclasses)')} | {gap} | "
                     f"{int(t.loc['GEORGE', 'seeds'])} |")
    md = "\n".join(lines) + (f"\n\nRobust accuracy = worst test subgroup (%), mean ± std over seeds {args.seeds}; gap closed = "
                            f"(GEORGE - ERM) / (oracle - ERM). Total {time.perf_counter() - t0:.0f} s "
                            f"({args.threads or 'all'} torch thread(s)).")
    print(md)
    write("george_defaults", {"args": vars(args), "configs": configs,
                              "rows": [{"data": a, "settings": b, "table": t.to_dict(orient="records"), "runs": r}
                                       for a, b, t, r in rows]}, md)


if __name__ == "__main__":
    main()
