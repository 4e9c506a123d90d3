"""Chiu, Chen and Ma's FlowAug rows beside Standard, from result files of ``cifar_b_study.py`` (issue 21,
item 3): one file per FlowAug setting (objective, lambda, sigma, partners), each checked to share every
other setting with the Standard file (whose other rows join the table), with the paired difference to
Standard on the seeds both have, and the flow's closure and bits/dim (``flow_closure.py``) beside.
Older rows made under other settings can be shown below, marked with the settings that differ; they
are not compared.

Run: python benchmarks/cifar_b_flowaug_table.py --standard S.json --flowaug A.json,B.json
     [--closure benchmarks/results/flow_closure_colour.json] [--older old.json] [--name N] [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, RESULTS, sha256, write  # noqa: E402
from cifar_b_study import PAPER, PAPER_FLOWAUG  # noqa: E402

from stratalab.experiments.cifar_b import CifarBConfig, CifarBResult  # noqa: E402

COLUMNS = [("accuracy", "accuracy (%)"), ("weighted_std", "WeightedStd"), ("macro_std", "MacroStd"),
           ("corrupted_accuracy", "corrupted acc. (%)"), ("corrupted_macro_std", "corrupted MacroStd")]
OBJECTIVE_NAMES = {"gauss": "eq. (2), Alg. 1", "mix": "eq. (2), Alg. 2", "gauss+std": "eq. (3), Alg. 1",
                   "mix+std": "eq. (3), Alg. 2", "gauss+mix": "eq. (4) without Std", "gauss+mix+std": "eq. (4)"}


FLOW_FIELDS = ("flow", "flowaug_objective", "flowaug_std_weight", "flowaug_mix_weight")


def local_flow(path: str, recorded: str, shas: set[str]) -> str:
    """The flow a result names, where it is now: the recorded path, or else the file of that name in
    ``benchmarks/results`` (where the project keeps its flows; results made in another checkout record
    that checkout's absolute path), accepted only if its SHA-256 is the one every FlowAug run recorded."""
    if Path(recorded).is_file():
        return recorded
    here = RESULTS / Path(recorded).name
    if len(shas) != 1 or not here.is_file() or sha256(here) not in shas:
        raise SystemExit(f"{path}: its flow {recorded} is not there, and {here} "
                         f"{'is not the flow its runs recorded (sha256 ' + ', '.join(sorted(shas)) + ')' if here.is_file() else 'is missing'}; "
                         "put that flow back at one of the two paths.")
    return str(here)


def load(path: str) -> CifarBResult:
    try:
        d = json.loads(Path(path).read_text())
        conf = dict(d["config"])
        if conf.get("flow"):
            conf["flow"] = local_flow(path, conf["flow"], {r["flow_sha256"] for r in d["runs"] if r.get("flow_sha256")})
        cfg = CifarBConfig.from_dict(conf)
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"{path}: not a readable cifar_b_study result ({e}).") from None
    return CifarBResult(config=cfg, runs=d["runs"], class_names=d["class_names"], group_names=d["group_names"],
                        seconds=float(d.get("seconds", 0.0)))


def settings(cfg: CifarBConfig) -> dict[str, Any]:
    """What every row of one table must share: the config without the rows, seeds and FlowAug's own
    settings (top level and in ``train``), flattened to ``train.<field>`` keys."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in ("augmentations", "seeds", "train", *FLOW_FIELDS)}
    d.update({f"train.{k}": v for k, v in cfg.train.to_dict().items()
              if k not in ("augment", "seed", "flow") and not k.startswith("flowaug_")})
    return d


def differences(a: CifarBConfig, b: CifarBConfig) -> list[str]:
    sa, sb = settings(a), settings(b)
    return [f"{k}={sb.get(k)} (not {sa.get(k)})" for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]


def per_seed(res: CifarBResult, augment: str) -> dict[int, dict[str, float]]:
    """Each seed's clean and corrupted metrics of one row, in % points."""
    df = res.rows()
    df = df[df["augment"] == augment]
    return {int(r["seed"]): {c: 100 * float(r[c]) for c, _ in COLUMNS if c in r and r[c] == r[c]} for _, r in df.iterrows()}


def flowaug_label(cfg: CifarBConfig) -> str:
    """The row's objective and weights as the paper names them."""
    obj = cfg.flowaug_objective
    parts = [OBJECTIVE_NAMES.get(obj, obj)]
    if "std" in obj:
        parts.append(f"lambda{'2' if 'gauss+mix' in obj else ''} {cfg.flowaug_std_weight:g}")
    if "gauss+mix" in obj:
        parts.append(f"lambda1 {cfg.flowaug_mix_weight:g}")
    if "gauss" in obj:
        parts.append(f"sigma {cfg.train.flowaug_sigma:g}")
    if "mix" in obj:
        parts.append(f"{cfg.train.flowaug_pairs} pairs")
    return "FlowAug " + ", ".join(parts)


def cell(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def paired_diffs(row: dict[int, dict[str, float]], base: dict[int, dict[str, float]], col: str) -> list[float]:
    """(row - base) on the seeds both have, in seed order."""
    return [row[s][col] - base[s][col] for s in sorted(set(row) & set(base)) if col in row[s] and col in base[s]]


def paired_p(diffs: list[float]) -> float | None:
    """The two-sided p of a paired t-test on the differences, from 3 of them (None below, or with no spread)."""
    from scipy import stats

    return float(stats.ttest_1samp(diffs, 0.0).pvalue) if len(diffs) > 2 and np.std(diffs) > 0 else None


def p_text(pv: float) -> str:
    return f"p={pv:.2f}" if pv >= 0.01 else "p<0.01"


def paired(row: dict[int, dict[str, float]], base: dict[int, dict[str, float]], col: str) -> str:
    """Mean over shared seeds of (row - base), with the std (ddof 1) of the differences, the seeds and,
    from 3 seeds, the two-sided p of a paired t-test."""
    diffs = paired_diffs(row, base, col)
    if not diffs:
        return "-"
    sd = f" ± {np.std(diffs, ddof=1):.2f}" if len(diffs) > 1 else ""
    pv = paired_p(diffs)
    return f"{np.mean(diffs):+.2f}{sd} (n={len(diffs)}{'' if pv is None else ', ' + p_text(pv)})"


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (Holm 1979), in the input order: the i-th
    smallest is multiplied by (m - i + 1), made non-decreasing along that order, capped at 1."""
    order = np.argsort(ps, kind="stable")
    m, out, running = len(ps), np.empty(len(ps)), 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * ps[j]))
        out[j] = running
    return out.tolist()


def holm_line(named: list[tuple[str, dict[int, dict[str, float]]]], base: dict[int, dict[str, float]]) -> tuple[str, dict[str, Any]]:
    """The FlowAug rows' paired p against Standard, Holm-adjusted over the rows that have one (clean and
    corrupted MacroStd each its own family): with several settings tried, one small p is expected by chance."""
    info: dict[str, Any] = {}
    parts = []
    for col, what in (("macro_std", "clean"), ("corrupted_macro_std", "corrupted")):
        ps = {n: paired_p(paired_diffs(row, base, col)) for n, row in named}
        ps = {n: p for n, p in ps.items() if p is not None}
        if len(ps) < 2:
            continue
        adj = dict(zip(ps, holm(list(ps.values()))))
        info[col] = {n: {"p": ps[n], "p_holm": adj[n]} for n in ps}
        parts.append(f"{what} MacroStd: " + "; ".join(f"{n}: {p_text(ps[n])} -> {adj[n]:.2f}" for n in ps))
    if not parts:
        return "", info
    return ("Paired t-test p of each FlowAug row against Standard, then Holm-adjusted over the FlowAug rows "
            f"with 3 or more shared seeds ({len(next(iter(info.values())))} rows per family): " + " | ".join(parts) + "."), info


def table_row(name: str, row: dict[int, dict[str, float]], base: dict[int, dict[str, float]] | None, paper: Any) -> str:
    cells = [cell([row[s][c] for s in sorted(row)]) if all(c in row[s] for s in row) else "-" for c, _ in COLUMNS]
    diff = [paired(row, base, c) for c in ("macro_std", "corrupted_macro_std")] if base is not None else ["-", "-"]
    p = f"{paper[0]} / {paper[2]} / {paper[1]}" if paper else "-"
    return f"| {name} | {','.join(map(str, sorted(row)))} | " + " | ".join(cells + diff) + f" | {p} |"


def closure_line(path: str, flow_shas: set[str]) -> tuple[str, dict[str, Any]]:
    """The flow's closure and bits/dim from a ``flow_closure.py`` result, refused for another flow (by
    the SHA-256 the result recorded; for results before that, the file's bytes now, said so)."""
    d = json.loads(Path(path).read_text())
    sha, note = d.get("flow_sha256"), ""
    if sha is None:
        flow = Path(d["flow"]) if Path(d["flow"]).is_absolute() else REPO / d["flow"]
        if not flow.is_file():
            raise SystemExit(f"{path} records no flow hash and its flow {d['flow']} is not at {flow}.")
        sha, note = sha256(flow), "; its flow's hash is the file's now, the result predates recorded hashes"
    if flow_shas != {sha}:
        raise SystemExit(f"{path} measured {d['flow']} (sha256 {sha[:12]}), but the FlowAug runs used "
                         f"{', '.join(s[:12] for s in sorted(flow_shas))}; give the closure result of their flow.")
    info = {"flow": d["flow"], "flow_sha256": sha, "closure_mean": d["closure_mean"], "closure_median": d["closure_median"],
            "test_bpd": d["test_bpd"], "pairs": d["pairs"]}
    return (f"The flow of every FlowAug row: `{d['flow']}`, closure {d['closure_mean']:.3f} (median "
            f"{d['closure_median']:.3f}, {d['pairs']} pairs) at test bits/dim {d['test_bpd']:.3f} (`{path}`{note})."), info


def flowaug_rows(res: CifarBResult) -> tuple[str, dict[int, dict[str, float]], set[str], Any]:
    """A result's FlowAug row: label, metrics per seed, the flows' hashes, the paper's numbers."""
    shas = {r["flow_sha256"] for r in res.runs if r["augment"] == "flowaug"}
    return (flowaug_label(res.config), per_seed(res, "flowaug"), shas, PAPER_FLOWAUG.get(res.config.flowaug_objective))


def older_rows(path: str, std_cfg: CifarBConfig) -> list[str]:
    """The rows of an older result, marked with the settings in which it differs from Standard's."""
    res = load(path)
    diff = differences(std_cfg, res.config)
    mark = f" (older: {', '.join(diff)})" if diff else " (older file)"
    out = []
    for a in res.config.augmentations:
        if a == "flowaug":
            label, row, shas, paper = flowaug_rows(res)
            out.append(table_row(f"{label}, flow sha256 {', '.join(s[:12] for s in sorted(shas))}{mark}", row, None, paper))
        else:
            out.append(table_row(res.config.row_name(a) + mark, per_seed(res, a), None, PAPER.get(a)))
    return out


def plot_macro_std(named: list[tuple[str, dict[int, dict[str, float]]]], path: Path, corrupted: str) -> None:
    """Each row's MacroStd per seed (dots) and mean (bar), clean and corrupted, Standard's mean dashed."""
    from matplotlib.figure import Figure

    from stratalab._io import save_figure_atomic

    cols = [("macro_std", "clean")] + ([("corrupted_macro_std", corrupted)] if all(
        "corrupted_macro_std" in r for _, row in named for r in row.values()) else [])
    fig = Figure(figsize=(3 + 4 * len(cols), 0.42 * len(named) + 1.4), dpi=110)
    axes = fig.subplots(1, len(cols), sharey=True, squeeze=False)[0]
    y = np.arange(len(named))[::-1]
    for ax, (col, title) in zip(axes, cols):
        for yi, (_, row) in zip(y, named):
            vals = [row[s][col] for s in sorted(row)]
            ax.barh(yi, np.mean(vals), color="tab:gray", alpha=0.35)
            ax.plot(vals, [yi] * len(vals), "o", color="tab:red", ms=4)
        ax.axvline(np.mean([r[col] for r in named[0][1].values()]), color="k", ls="--", lw=0.8)
        ax.set_xlim(0, None)
        ax.set_xlabel(f"MacroStd, {title} (% points)", fontsize=8)
        ax.set_title("dots: seeds; dashed: Standard's mean", fontsize=7)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([n for n, _ in named], fontsize=7)
    fig.tight_layout()
    save_figure_atomic(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--standard", required=True, help="a cifar_b_study result with the flip_crop (Standard) row "
                    "(its other rows are shown too, each compared with Standard)")
    ap.add_argument("--flowaug", default="", help="cifar_b_study results with a flowaug row, comma-separated")
    ap.add_argument("--closure", default=None, help="flow_closure.py's result for the FlowAug runs' flow")
    ap.add_argument("--older", default="", help="older cifar_b_study results whose rows are shown, not compared")
    ap.add_argument("--name", default="cifar_b_flowaug")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    std = load(args.standard)
    if "flip_crop" not in std.config.augmentations:
        raise SystemExit(f"{args.standard} has no Standard (flip_crop) row.")
    base = per_seed(std, "flip_crop")
    baselines = {std.config.row_name(a): (per_seed(std, a), PAPER.get(a)) for a in std.config.augmentations
                 if a not in ("flip_crop", "flowaug")}
    flows: list[tuple[str, str, dict[int, dict[str, float]], set[str], Any]] = []
    if "flowaug" in std.config.augmentations:
        flows.append((args.standard, *flowaug_rows(std)))
    for path in (p for p in args.flowaug.split(",") if p.strip()):
        res = load(path)
        if "flowaug" not in res.config.augmentations:
            raise SystemExit(f"{path} has no flowaug row.")
        diff = differences(std.config, res.config)
        if diff:
            raise SystemExit(f"{path}: its runs used other settings than {args.standard}'s ({', '.join(diff)}); "
                             "they cannot be compared in one table.")
        flows.append((path, *flowaug_rows(res)))
    shas = set().union(*(f[3] for f in flows)) if flows else set()
    labels = [f[1] + (f", flow sha256 {', '.join(s[:12] for s in sorted(f[3]))}" if len(shas) > 1 else "") for f in flows]
    named = [("Standard", base), *((n, row) for n, (row, _) in baselines.items()), *((lab, f[2]) for lab, f in zip(labels, flows))]
    lines = ["| row | seeds | " + " | ".join(h for _, h in COLUMNS) + " | MacroStd - Standard | corrupted MacroStd - Standard "
             "| paper acc. / WeightedStd / MacroStd (ResNet-18) |", "|" + "---|" * (len(COLUMNS) + 5),
             table_row("Standard (crop + flip)", base, None, PAPER["flip_crop"])]
    lines += [table_row(n, row, base, paper) for n, (row, paper) in baselines.items()]
    lines += [table_row(lab, f[2], base, f[4]) for lab, f in zip(labels, flows)]
    for path in (p for p in args.older.split(",") if p.strip()):
        lines += older_rows(path, std.config)
    text = "\n".join(lines)
    multi, holm_info = holm_line([(lab, f[2]) for lab, f in zip(labels, flows)], base)
    if multi:
        text += "\n\n" + multi
    info: dict[str, Any] = {}
    if args.closure:
        line, info = closure_line(args.closure, shas)
        text += "\n\n" + line
    print(text)
    if args.write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        n_cor = len(std.config.corruptions) * len(std.config.severities)
        plot_macro_std(named, RESULTS / f"{args.name}.png", f"CIFAR-10-C (mean of {n_cor})")
        write(args.name, {"standard": {"file": args.standard, "seeds": base,
                                       "baselines": {n: row for n, (row, _) in baselines.items()}},
                          "flowaug": [{"file": f[0], "label": lab, "seeds": f[2], "flow_sha256": sorted(f[3])}
                                      for lab, f in zip(labels, flows)],
                          "flow": info, "holm": holm_info, "older": [p for p in args.older.split(",") if p.strip()]}, text)


if __name__ == "__main__":
    main()
