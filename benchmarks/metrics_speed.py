"""Speed of stratalab.metrics.group_report against fairlearn's MetricFrame.

1M predictions, 1,000 groups (100 per class x 10 classes), per-group accuracy plus the worst-group and
overall summaries. Both are timed on the same arrays, best of R repeats after one warm-up, and the
per-group accuracies are checked to agree. Writes benchmarks/results/metrics_speed.{json,md}.

Run: python benchmarks/metrics_speed.py [--n 1000000] [--groups 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write  # noqa: E402

from stratalab.metrics import group_report  # noqa: E402


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--groups", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    per_class = args.groups // args.classes
    y = rng.integers(0, args.classes, args.n)
    g = y * per_class + rng.integers(0, per_class, args.n)
    pred = np.where(rng.random(args.n) < 0.8, y, rng.integers(0, args.classes, args.n))

    ours = best_of(lambda: group_report(y, pred, g), args.repeats)
    rep = group_report(y, pred, g)

    row = {"n": args.n, "groups": args.groups, "repeats": args.repeats, "stratalab_s": ours}
    try:
        import fairlearn
        from fairlearn.metrics import MetricFrame
        from sklearn.metrics import accuracy_score

        def fl():
            mf = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=pred, sensitive_features=g)
            return mf.by_group.min(), mf.overall

        theirs = best_of(fl, args.repeats)
        mf = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=pred, sensitive_features=g)
        ours_acc = rep.table.set_index("group")["accuracy"].sort_index().to_numpy()
        np.testing.assert_allclose(ours_acc, mf.by_group.sort_index().to_numpy(), rtol=0, atol=1e-12)
        row.update(fairlearn_version=fairlearn.__version__, fairlearn_s=theirs, speedup=theirs / ours)
    except ImportError:
        row.update(fairlearn_s=None, speedup=None, note="fairlearn not installed: pip install fairlearn")

    fl_s = "-" if row["fairlearn_s"] is None else f"{row['fairlearn_s']:.3f}"
    ratio = "-" if row["speedup"] is None else f"{row['speedup']:.0f}x faster"
    lines = [
        "| n | groups | stratalab group_report (s) | fairlearn MetricFrame (s) | ratio |",
        "|---|---|---|---|---|",
        f"| {args.n:,} | {args.groups:,} | {ours:.4f} | {fl_s} | {ratio} |",
    ]
    write("metrics_speed", row, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
