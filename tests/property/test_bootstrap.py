"""Properties of group_report's bootstrap intervals: deterministic given random_state, independent
of the chunk size the resamples are drawn in, equal to percentiles of a loop reference over the
full resample matrix, containing the point estimate for the accuracies, and bounded in memory."""

from __future__ import annotations

import math
import tracemalloc
from contextlib import contextmanager

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stratalab.metrics import group_report
from stratalab.metrics import groups as groups_module
from tests.property._support import examples, labelled_sample, no_numeric_warnings, ref_macro_std, ref_weighted_std, tick

ACCURACIES = ("average_accuracy", "balanced_accuracy", "worst_group_accuracy", "worst_class_accuracy", "train_weighted_accuracy")


@contextmanager
def chunk_bytes(n: int):
    """Draw the bootstrap in chunks of about ``n`` bytes (at least one resample per chunk)."""
    old = groups_module._BOOTSTRAP_CHUNK_BYTES
    groups_module._BOOTSTRAP_CHUNK_BYTES = n
    try:
        yield
    finally:
        groups_module._BOOTSTRAP_CHUNK_BYTES = old


@st.composite
def boot_case(draw: st.DrawFn, min_b: int = 1) -> dict:
    s = draw(labelled_sample(max_n=60))
    kw = {"n_bootstrap": draw(st.integers(min_b, 300)), "random_state": draw(st.integers(0, 2**63)),
          "confidence": draw(st.floats(0.5, 0.99))}
    if s["layout"] == "nested" and draw(st.booleans()):
        kw["train_group_counts"] = {k: float(draw(st.integers(1, 30))) for k in set(s["g"])}
    return {"args": (s["y"], s["p"], s["g"]), "kw": kw}


def _same(a, b) -> bool:
    return a.intervals == b.intervals and a.table.equals(b.table)


@settings(max_examples=examples(0.6))
@given(boot_case(), st.integers(1, 4096))
def test_bootstrap_is_deterministic_and_chunk_size_free(case, small_chunk):
    tick("bootstrap determinism/chunks")
    with no_numeric_warnings():
        a = group_report(*case["args"], **case["kw"])
        b = group_report(*case["args"], **case["kw"])
        c = group_report(*case["args"], **{**case["kw"], "random_state": np.random.default_rng(case["kw"]["random_state"])})
        with chunk_bytes(small_chunk):  # down to one resample per chunk
            d = group_report(*case["args"], **case["kw"])
    assert _same(a, b) and _same(a, c) and _same(a, d)
    assert a.n_bootstrap == case["kw"]["n_bootstrap"] and a.confidence == case["kw"]["confidence"]
    for key, (lo, hi) in a.intervals.items():
        assert lo <= hi, key
        if key in ACCURACIES:
            assert 0.0 <= lo and hi <= 1.0, key
        else:
            assert lo >= 0.0, key
    t = a.table
    assert (0 <= t["accuracy_low"]).all() and (t["accuracy_low"] <= t["accuracy_high"]).all() and (t["accuracy_high"] <= 1).all()


@settings(max_examples=examples(0.6))
@given(boot_case(min_b=100).filter(lambda c: c["kw"]["confidence"] >= 0.8))
def test_accuracy_intervals_contain_the_point_estimate(case):
    """Average, balanced, train-weighted and per-cell accuracy are unbiased under the stratified
    resampling, so their percentile intervals contain the estimate (with 100+ resamples and a
    level of 80%+, missing it needs 90% of the resamples on one side of the mean: ~1e-17).
    Worst-group / worst-class accuracy and the stds are biased and need not (see the docstring
    and test_biased_statistics_may_exclude_the_estimate)."""
    tick("bootstrap contains estimate")
    r = group_report(*case["args"], **case["kw"])
    for key in ("average_accuracy", "balanced_accuracy", "train_weighted_accuracy"):
        if key in r.intervals:
            lo, hi = r.intervals[key]
            assert lo <= getattr(r, key) <= hi, (key, lo, getattr(r, key), hi)
    t = r.table
    assert ((t["accuracy_low"] <= t["accuracy"]) & (t["accuracy"] <= t["accuracy_high"])).all()


@settings(max_examples=examples(0.4))
@given(boot_case())
def test_intervals_equal_loop_reference_over_full_resample_matrix(case):
    """Rebuild the (n_bootstrap, cells) matrix the documented way (one Binomial(n_j, acc_j) row per
    resample from default_rng(random_state)), compute every summary of every row by loops, and
    take numpy percentiles: the chunked, histogram-based implementation must agree."""
    tick("bootstrap vs reference")
    kw = case["kw"]
    r = group_report(*case["args"], **kw)
    t = r.table
    n = t["n"].to_numpy()
    acc = t["accuracy"].to_numpy()
    B = kw["n_bootstrap"]
    counts = np.random.default_rng(kw["random_state"]).binomial(n, t["correct"].to_numpy() / n, size=(B, n.size))
    cls = t["class"].tolist()
    w = [float(v) for v in n]
    tw = None if "train_n" not in t else t["train_n"].tolist()
    rows: dict[str, list[float]] = {k: [] for k in r.intervals}
    for row in counts:
        a = [int(c) / int(m) for c, m in zip(row, n)]
        by_class: dict[int, list[int]] = {}
        for j, c in enumerate(cls):
            by_class.setdefault(c, []).append(j)
        rows["average_accuracy"].append(sum(int(c) for c in row) / int(n.sum()))
        rows["balanced_accuracy"].append(math.fsum(a) / len(a))
        rows["worst_group_accuracy"].append(min(a))
        rows["worst_class_accuracy"].append(min(sum(int(row[j]) for j in js) / sum(int(n[j]) for j in js) for js in by_class.values()))
        rows["weighted_std"].append(ref_weighted_std(a, w))
        rows["macro_std"].append(ref_macro_std(a, w, cls))
        if tw is not None:
            rows["train_weighted_accuracy"].append(math.fsum(x * v for x, v in zip(tw, a)) / math.fsum(tw))
    alpha = (1 - kw["confidence"]) / 2
    for key, values in rows.items():
        want = np.quantile(values, [alpha, 1 - alpha])
        assert np.allclose(r.intervals[key], want, rtol=0, atol=1e-9), (key, r.intervals[key], want)
    lo, hi = np.quantile(counts / n, [alpha, 1 - alpha], axis=0)
    np.testing.assert_allclose(t["accuracy_low"], lo, rtol=0, atol=1e-12)
    np.testing.assert_allclose(t["accuracy_high"], hi, rtol=0, atol=1e-12)
    assert np.isfinite(acc).all()


def test_bootstrap_memory_is_bounded_by_the_chunk_not_n_bootstrap():
    """200 cells x 20,000 resamples: the full matrix would be 32 MB per float64 copy (the old code
    held about four); with 2 MB chunks the extra peak is the chunk's few arrays, the 7 x 8 bytes
    per resample of the summaries and the per-cell histogram: less than half of one such copy."""
    rng = np.random.default_rng(0)
    n = 200_000
    y = rng.integers(0, 4, n)
    g = y * 50 + rng.integers(0, 50, n)
    p = np.where(rng.random(n) < 0.8, y, 0)
    B = 20_000
    full_matrix = B * 200 * 8
    with chunk_bytes(2 * 2**20):
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            r = group_report(y, p, g, n_bootstrap=B, random_state=0)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
    assert len(r.intervals) == 6
    # Measured: 8 MB (5 MB of it is the report without bootstrap); the unchunked code peaked at 133 MB.
    assert peak < full_matrix / 2, (peak, full_matrix)


def test_biased_statistics_may_exclude_the_estimate():
    """Documented: 40 cells of equal accuracy have WeightedStd 0 and a worst-group accuracy equal
    to every cell's; resampled, the spread is positive and the minimum lower, so those intervals
    (correctly, for a percentile bootstrap) lie beside the estimate, while the accuracies' contain it."""
    y = np.zeros(400, dtype=int)
    g = np.repeat(np.arange(40), 10)
    p = np.tile([0, 0, 0, 0, 0, 1, 1, 1, 1, 1], 40)  # 5 of 10 correct in every cell
    r = group_report(y, p, g, n_bootstrap=500, random_state=0)
    assert r.weighted_std == 0.0 and r.intervals["weighted_std"][0] > 0.0
    assert r.worst_group_accuracy == 0.5 and r.intervals["worst_group_accuracy"][1] < 0.5
    lo, hi = r.intervals["balanced_accuracy"]
    assert lo <= 0.5 <= hi
