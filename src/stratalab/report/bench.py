"""``stratalab bench``: many result files -> one table, mean ± std and a confidence interval per
(data set, configuration, method, setting, metric) over every seed of every file.

Each file's :meth:`~stratalab.report.results.RunResult.records` are stacked. Files are pooled only
when they ran the same configuration: the ``config`` column is a short hash of the file's
``invocation`` without its seeds, data folder and backend (so ``run d3m --seeds 0,1`` and
``--seeds 2`` on a cluster pool into 3 seeds, while another learning rate is its own row). The
same seed of the same configuration in two files (a rerun) counts once: the first file read wins
and the count of dropped duplicates is returned.

Intervals: with n >= 2 seeds, the two-sided Student-t interval of the mean,
``mean ± t_{(1+c)/2, n-1} * s / sqrt(n)`` with ``s`` the sample std (ddof 1); with one row that
carries the file's own bootstrap interval (``stratalab audit --bootstrap``), that interval; else
none. Intervals of fractions (accuracies, WeightedStd, MacroStd) are clipped to [0, 1]. The
``std`` column is the spread over seeds with ddof 0, as in every per-run table.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .results import RunResult, metric_range

BENCH_COLUMNS = ["kind", "dataset", "config", "method", "setting", "metric", "n", "mean", "std", "ci_low", "ci_high",
                 "interval", "seeds", "sources"]
_NOT_CONFIG = {"seeds", "data_dir", "backend", "output"}


def config_id(result: RunResult) -> str:
    """8 hex digits naming what a file ran, without seeds, data folder and backend (results of
    the same command and settings pool; any other setting keeps them apart). Files without an
    invocation (audits) are their own configuration."""
    inv = {k: v for k, v in result.invocation.items() if k not in _NOT_CONFIG}
    text = json.dumps(inv, sort_keys=True, default=str) if inv else f"file:{result.path.resolve()}"
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def bench_table(results: Sequence[RunResult], *, confidence: float = 0.95,
                metrics: Sequence[str] | None = None) -> tuple[pd.DataFrame, int]:
    """The bench table of ``results`` (columns :data:`BENCH_COLUMNS`, rows in order of first
    appearance) and the number of duplicate (configuration, seed) records dropped. ``metrics``
    keeps only those metric names (the vocabulary of :mod:`stratalab.report.results`)."""
    from scipy import stats

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence}.")
    if not results:
        raise ValueError("give at least one result file.")
    parts = []
    for r in results:
        rec = r.records()
        if not rec.empty:
            parts.append(rec.assign(config=config_id(r)))
    if not parts:
        return pd.DataFrame(columns=BENCH_COLUMNS), 0
    df = pd.concat(parts, ignore_index=True)
    if metrics is not None:
        known = set(df["metric"])
        unknown = [m for m in metrics if m not in known]
        if unknown:
            raise ValueError(f"no file has metric {unknown[0]!r}; the files have: {', '.join(sorted(known))}.")
        df = df[df["metric"].isin(list(metrics))]
    ident = ["kind", "dataset", "config", "method", "setting", "metric", "seed"]
    with_seed = df["seed"] >= 0
    dup = with_seed & df.duplicated(ident, keep="first")
    dropped = int(dup.sum())
    df = df[~dup]
    keys = ["kind", "dataset", "config", "method", "setting", "metric"]
    rows: list[dict[str, Any]] = []
    for key, sub in df.groupby(keys, sort=False):
        v = sub["value"].to_numpy(dtype=np.float64)
        n = v.size
        mean = float(v.mean())
        lo = hi = float("nan")
        interval = ""
        if n >= 2:
            half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * float(v.std(ddof=1)) / math.sqrt(n)
            lo, hi, interval = mean - half, mean + half, f"t, {n - 1} df"
            bounds = metric_range(key[-1])  # accuracies and spreads live in [0, 1], ARI in [-1, 1]
            if bounds is not None:
                lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
        elif np.isfinite(sub["ci_low"].iloc[0]):
            lo, hi, interval = float(sub["ci_low"].iloc[0]), float(sub["ci_high"].iloc[0]), "bootstrap (file)"
        seeds = sorted(int(s) for s in sub["seed"] if s >= 0)
        std = float(v.std(ddof=0)) if n >= 2 else float("nan")  # one seed has no spread to report (not 0)
        rows.append({**dict(zip(keys, key)), "n": n, "mean": mean, "std": std, "ci_low": lo,
                     "ci_high": hi, "interval": interval, "seeds": ",".join(map(str, seeds)),
                     "sources": ",".join(dict.fromkeys(sub["source"]))})
    return pd.DataFrame(rows, columns=BENCH_COLUMNS), dropped
