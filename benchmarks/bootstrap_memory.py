"""Peak extra memory and time of group_report's bootstrap (1M predictions, 1,000 cells).

Run: python benchmarks/bootstrap_memory.py [--rows 1000000] [--resamples 10000]
(with PYTHONPATH pointing at another checkout's src/ it measures that code instead).
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import stratalab  # noqa: E402
from stratalab.metrics import group_report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--resamples", type=int, default=10_000)
    ap.add_argument("--write", action="store_true", help="write benchmarks/results/bootstrap_memory.{json,md}")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, args.rows)
    g = rng.integers(0, 100, args.rows)
    pred = np.where(rng.random(args.rows) < 0.9, y, (y + 1) % 10)
    group_report(y[:1000], pred[:1000], g[:1000], n_bootstrap=10)  # imports and warm-up outside the measurement
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    rep = group_report(y, pred, g, n_bootstrap=args.resamples, random_state=0)
    secs = time.perf_counter() - t0
    peak = (tracemalloc.get_traced_memory()[1] - base) / 2**20
    tracemalloc.stop()
    line = (f"{stratalab.__file__}: {args.rows:,} rows, {len(rep.table)} cells, {args.resamples:,} resamples: "
            f"peak extra {peak:.0f} MiB, {secs:.2f} s; WGA interval {rep.intervals['worst_group_accuracy']}")
    print(line)
    if args.write:
        from _common import write

        write("bootstrap_memory", {"rows": args.rows, "resamples": args.resamples, "peak_mib": peak, "seconds": secs},
              line)


if __name__ == "__main__":
    main()
