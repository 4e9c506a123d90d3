"""Properties of ``stratalab.metrics.group_report`` (and ``weighted_std`` / ``macro_std``): on valid
input every number equals a slow loop reference; on invalid input a ValueError or TypeError whose
message names the argument, and nothing else (no IndexError, ZeroDivisionError, numpy warning)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from stratalab.metrics import group_report, macro_std, weighted_std
from tests.property._support import (
    as_container,
    close,
    examples,
    labelled_sample,
    no_numeric_warnings,
    raises_naming,
    ref_macro_std,
    ref_report,
    ref_weighted_std,
    tick,
)

probability = st.floats(0.0, 1.0, allow_nan=False, allow_subnormal=True)


@st.composite
def report_case(draw: st.DrawFn) -> dict:
    """A valid call of group_report with optional classes, y_score (1-D or 2-D, or instead of
    y_pred), train_group_counts (dict, array or Series) and group_names."""
    s = draw(labelled_sample())
    y, p, g = s["y"], s["p"], s["g"]
    n = len(y)
    kw: dict = {}
    case = {"y": y, "p": p, "g": g, "c": None, "score": None, "train": None, "names": None}
    if draw(st.booleans(), label="classes override"):
        c = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
        case["c"] = c
        kw["classes"] = as_container(draw, c, "classes")
    score_kind = draw(st.sampled_from(["none", "none", "binary", "matrix", "matrix_no_pred"]))
    if score_kind == "binary" and max(y) <= 1:
        sc = draw(st.lists(probability, min_size=n, max_size=n))
        case["score"] = sc
        kw["y_score"] = np.asarray(sc)
    elif score_kind.startswith("matrix"):
        n_cols = draw(st.integers(max(y) + 1, max(y) + 2))
        sc = np.asarray(draw(st.lists(st.lists(probability, min_size=n_cols, max_size=n_cols), min_size=n, max_size=n)))
        case["score"] = sc
        kw["y_score"] = sc
        if score_kind == "matrix_no_pred":
            case["p"] = p = [int(i) for i in sc.argmax(axis=1)]
            case["no_pred"] = True
    cells = {(ci, gi) for ci, gi in zip(case["c"] or y, g)}
    shared = len({gi for _, gi in cells}) < len(cells)
    if draw(st.booleans(), label="train counts") and s["layout"] != "sparse":
        extra = draw(st.integers(0, 2))
        # Counts for every group id up to max + extra (absent ones with a positive count make
        # train_weighted_accuracy NaN and are reported missing); fractional counts allowed.
        counts = {k: float(draw(st.integers(0, 50))) + draw(st.sampled_from([0.0, 0.5])) for k in range(max(g) + 1 + extra)}
        form = draw(st.sampled_from(["dict", "array", "series"]))
        case["train"] = counts
        case["train_shared"] = shared
        kw["train_group_counts"] = (counts if form == "dict" else np.array([counts[k] for k in range(len(counts))])
                                    if form == "array" else pd.Series(counts).sort_values())
    if draw(st.booleans(), label="group names") and s["layout"] != "sparse":
        k = max(g) + 1 + draw(st.integers(0, 2))
        case["names"] = k
        kw["group_names"] = [f"grp{i}" for i in range(k)]
    case["kw"] = kw
    case["args"] = (as_container(draw, y, "y_true"), None if case.get("no_pred") else as_container(draw, p, "y_pred"),
                    as_container(draw, g, "groups"))
    return case


@settings(max_examples=examples(1.5))
@given(report_case())
def test_group_report_equals_loop_reference(case):
    tick("group_report valid")
    kw = case["kw"]
    for k in ("classes", "y_score", "train_group_counts", "group_names"):
        event(f"{k}: {'given' if k in kw else 'absent'}")
    if case["train"] is not None and case["train_shared"]:
        # A group id shared by several classes makes per-group train counts ambiguous.
        raises_naming(lambda: group_report(*case["args"], **kw), "train_group_counts")
        return
    if case["train"] is not None and sum(case["train"][k] for k in set(case["g"])) == 0 and not any(
            v > 0 and k not in set(case["g"]) for k, v in case["train"].items()):
        raises_naming(lambda: group_report(*case["args"], **kw), "train_group_counts")
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = group_report(*case["args"], **kw)
    ref = ref_report(case["y"], case["p"], case["g"], case["c"], score=case["score"], train_counts=case["train"],
                     n_group_names=case["names"])
    kinds = {type(w.message) for w in caught}
    assert not kinds - {UserWarning}, [str(w.message) for w in caught]
    assert (UserWarning in kinds) == bool(ref["missing_groups"])
    assert r.missing_groups == ref["missing_groups"]

    # The cell table: one row per (class, group) present, in (class, group) order.
    t = r.table
    assert list(zip(t["class"], t["group"])) == [(row["class"], row["group"]) for row in ref["rows"]]
    for col in ("n", "correct"):
        assert t[col].tolist() == [row[col] for row in ref["rows"]]
    for col in ("accuracy", "loss", "auroc", "train_n"):
        want = [row[col] for row in ref["rows"] if col in row]
        if not want:
            assert col not in t or (col == "auroc" and "auroc" not in ref["rows"][0]), col
            continue
        assert all(close(a, b) for a, b in zip(t[col].tolist(), want)), (col, t[col].tolist(), want)
    if case["names"] is not None:
        assert t["group_name"].tolist() == [f"grp{row['group']}" for row in ref["rows"]]

    ct = r.class_table
    for col in ("class", "n", "n_groups", "worst_group"):
        assert ct[col].tolist() == [row[col] for row in ref["classes"]], col
    for col in ("accuracy", "worst_group_accuracy", "weighted_std"):
        assert all(close(a, row[col]) for a, row in zip(ct[col].tolist(), ref["classes"])), col

    for key in ("average_accuracy", "balanced_accuracy", "worst_group_accuracy", "worst_class_accuracy",
                "weighted_std", "macro_std", "train_weighted_accuracy"):
        assert close(getattr(r, key), ref[key]), (key, getattr(r, key), ref[key])
    assert r.worst_group == ref["worst_group"]
    assert r.n == len(case["y"])

    # No NaN where the inputs were valid, except the documented ones: AUROC with a single class in
    # y_true, train_weighted_accuracy when a train group has no evaluated example.
    for key in ("average_accuracy", "balanced_accuracy", "worst_group_accuracy", "worst_class_accuracy",
                "weighted_std", "macro_std"):
        assert math.isfinite(getattr(r, key))
    numeric = t.drop(columns=[c for c in ("auroc",) if c in t]).select_dtypes("number")
    assert np.isfinite(numeric.to_numpy(dtype=float)).all()
    if "auroc" in t:
        assert t["auroc"].isna().all() == (len(set(case["y"])) == 1)
    # The JSON form is strict JSON (no NaN tokens) and round-trips.
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["n"] == len(case["y"]) and len(d["groups"]) == len(ref["rows"])


# ---------------------------------------------------------------- invalid labels

LABEL_ARGS = ("y_true", "y_pred", "groups", "classes")


@st.composite
def corrupted_labels(draw: st.DrawFn) -> tuple[str, dict, str]:
    """A valid call with one label argument broken in one way: (argument, kwargs, corruption)."""
    s = draw(labelled_sample(max_n=20))
    n = len(s["y"])
    kw = {"y_true": np.asarray(s["y"]), "y_pred": np.asarray(s["p"]), "groups": np.asarray(s["g"])}
    arg = draw(st.sampled_from(LABEL_ARGS))
    base = np.asarray(s["y"] if arg == "classes" else kw[arg])
    how = draw(st.sampled_from(["nan", "fraction", "negative", "longer", "shorter", "matrix", "cube",
                                "strings", "none", "complex", "empty", "scalar", "datetime"]))
    i = draw(st.integers(0, n - 1))
    if how == "nan":
        bad = base.astype(float)
        bad[i] = np.nan
    elif how == "fraction":
        bad = base.astype(float)
        bad[i] += draw(st.sampled_from([0.5, 0.999] + ([1e-9] if bad[i] < 1e6 else [])))  # stays a non-integer float
    elif how == "negative":
        bad = base.copy()
        bad[i] = -draw(st.integers(1, 10**6))
    elif how == "longer":
        bad = np.concatenate([base, base[: draw(st.integers(1, 5))]])
    elif how == "shorter":
        assume(n > 1)
        bad = base[: draw(st.integers(1, n - 1))]
    elif how == "matrix":
        rows = draw(st.integers(2, 4))
        bad = np.tile(base, (rows, 1)) if n > 1 else np.zeros((rows, 2), dtype=int)
    elif how == "cube":
        bad = base.reshape(1, 1, -1)
    elif how == "strings":
        bad = np.asarray([str(v) for v in base]) if draw(st.booleans()) else [str(v) for v in base]
    elif how == "none":
        bad = [None if j == i else int(v) for j, v in enumerate(base)]
    elif how == "complex":
        bad = base.astype(complex) + 1j
    elif how == "empty":
        bad = np.asarray([], dtype=draw(st.sampled_from(["int64", "float64"])))
    elif how == "scalar":
        bad = int(base[0])
    else:
        bad = np.asarray(base, dtype="datetime64[D]")
    kw[arg] = bad
    return arg, kw, how


@settings(max_examples=examples(2.0))
@given(corrupted_labels())
def test_bad_labels_raise_naming_the_argument(bad):
    tick("group_report bad labels")
    arg, kw, how = bad
    # A length mismatch is reported against y_true, which fixes n.
    names = (arg, "y_true") if how in ("longer", "shorter", "empty", "cube", "matrix") else (arg,)
    raises_naming(lambda: group_report(**kw), *names)


# ---------------------------------------------------------------- invalid scores and options

@st.composite
def corrupted_scores(draw: st.DrawFn) -> tuple[dict, str]:
    s = draw(labelled_sample(max_n=20))
    y = np.asarray(s["y"])
    n = y.size
    binary = bool(y.max() <= 1) and draw(st.booleans())
    good = (np.asarray(draw(st.lists(probability, min_size=n, max_size=n))) if binary
            else np.full((n, int(y.max()) + 1), 0.5))
    how = draw(st.sampled_from(["nan", "inf", "above", "below", "longer", "shorter", "cube", "few_columns", "binary_multiclass"]))
    bad = good.astype(float).copy()
    i = draw(st.integers(0, n - 1))
    if how in ("nan", "inf", "above", "below"):
        v = {"nan": np.nan, "inf": draw(st.sampled_from([np.inf, -np.inf])),
             "above": draw(st.floats(1.0, 1e300, exclude_min=True)), "below": -draw(st.floats(0.0, 1e300, exclude_min=True))}[how]
        bad[i] = v
    elif how == "longer":
        bad = np.concatenate([bad, bad[:1]])
    elif how == "shorter":
        assume(n > 1)
        bad = bad[:-1]
    elif how == "cube":
        bad = bad.reshape(n, 1, -1)
    elif how == "few_columns":
        assume(y.max() >= 1)
        bad = np.full((n, int(y.max())), 0.5)  # one column short of the labels
    else:
        assume(y.max() >= 2)
        bad = np.full(n, 0.5)  # (n,) is binary-only, but y_true has 3+ classes
    return {"y_true": y, "y_pred": np.asarray(s["p"]), "groups": np.asarray(s["g"]), "y_score": bad}, how


@settings(max_examples=examples(1.0))
@given(corrupted_scores())
def test_bad_scores_raise_naming_y_score(bad):
    tick("group_report bad y_score")
    kw, _ = bad
    raises_naming(lambda: group_report(**kw), "y_score")


BAD_OPTIONS = [
    ("n_bootstrap", -1), ("n_bootstrap", 2.5), ("n_bootstrap", "100"), ("n_bootstrap", None), ("n_bootstrap", True),
    ("confidence", 0.0), ("confidence", 1.0), ("confidence", 1.5), ("confidence", -0.2), ("confidence", float("nan")),
    ("confidence", "0.95"), ("confidence", None), ("confidence", float("inf")),
    ("random_state", -1), ("random_state", "seed"), ("random_state", 1.5),
    ("train_group_counts", {0: -1.0}), ("train_group_counts", {0: float("nan")}), ("train_group_counts", {0: float("inf")}),
    ("train_group_counts", {"a": 1.0}), ("train_group_counts", {0.5: 1.0}), ("train_group_counts", {0: "many"}),
    ("train_group_counts", ["a", "b"]), ("train_group_counts", [[1.0, 2.0]]), ("train_group_counts", []),
    ("group_names", []), ("group_names", "ab"), ("class_names", []), ("class_names", "ab"),
]


@settings(max_examples=examples(1.0))
@given(labelled_sample(max_n=20), st.sampled_from(BAD_OPTIONS))
def test_bad_options_raise_naming_the_option(sample, option):
    tick("group_report bad options")
    name, value = option
    kw = {name: value}
    if name == "random_state":
        kw["n_bootstrap"] = 5  # the seed is only used (and checked) when bootstrapping
    if name == "train_group_counts" and isinstance(value, dict) and 0 in value:
        kw[name] = {**{g: 1.0 for g in sample["g"]}, **value}  # every evaluated group counted; group 0's count broken
    raises_naming(lambda: group_report(sample["y"], sample["p"], sample["g"], **kw), name)


# ---------------------------------------------------------------- weighted_std / macro_std



@settings(max_examples=examples(1.0))
@given(st.lists(st.tuples(st.floats(0, 1), st.one_of(st.integers(0, 1000).map(float), st.floats(0, 1000)), st.integers(0, 3)),
                max_size=30))
def test_weighted_and_macro_std_equal_loop_reference(cells):
    tick("weighted_std/macro_std")
    s = [c[0] for c in cells]
    w = [c[1] for c in cells]
    k = [c[2] for c in cells]
    with no_numeric_warnings():
        got_w = weighted_std(s, w)
        got_m = macro_std(s, w, k)
    assert close(got_w, ref_weighted_std(s, w), 1e-7)
    assert close(got_m, ref_macro_std(s, w, k), 1e-7)
    assert got_w >= 0 and got_m >= 0


@settings(max_examples=examples(0.5))
@given(st.sampled_from([
    ([0.5, np.nan], [1, 1]), ([0.5, np.inf], [1, 1]), ([0.5, 0.2], [1, -1]), ([0.5, 0.2], [1, np.nan]),
    ([0.5, 0.2], [1]), ([[0.5, 0.2]], [[1, 2]]), (0.5, 1), (["a"], [1]), ([0.5], ["b"]),
]), st.booleans())
def test_weighted_and_macro_std_reject_bad_input(bad, macro):
    tick("weighted_std/macro_std bad")
    s, w = bad
    if macro:
        raises_naming(lambda: macro_std(s, w, [0] * (len(s) if isinstance(s, list) else 1)), "values", "weights", "cell_class")
    else:
        raises_naming(lambda: weighted_std(s, w), "values", "weights")


# ---------------------------------------------------------------- regressions: bugs this suite found outside metrics (fixed)

@pytest.mark.parametrize("arg", ["y_true", "groups"])
@pytest.mark.parametrize("value", [np.inf, 1e20, "uint64"])
def test_regression_label_overflow(arg, value):
    kw = {"y_true": np.array([0, 1, 1]), "y_pred": np.array([0, 1, 0]), "groups": np.array([0, 0, 1])}
    if arg == "classes":
        kw["classes"] = np.array([0, 1, 1])
    if isinstance(value, str):
        bad = np.array([0, 1, 2**63 + 5], dtype=np.uint64)
    else:
        bad = kw[arg].astype(float)
        bad[2] = value
    kw[arg] = bad
    e = raises_naming(lambda: group_report(**kw), arg)
    assert "-9223372036854775" not in str(e), str(e)  # the value the user wrote, not an int64 overflow


@pytest.mark.parametrize("how", ["strings", "zero_columns", "complex"])
def test_regression_y_score_messages(how):
    y = [0, 1, 1]
    bad = {"strings": ["a", "b", "c"], "zero_columns": np.zeros((3, 0)), "complex": np.array([0.5, 0.5, 0.5]) + 0.5j}[how]
    raises_naming(lambda: group_report(y, y, [0, 0, 0], y_score=bad), "y_score")


def test_per_class_summaries_do_not_allocate_cells_by_classes():
    """Per-class sums run over class-sorted cells (np.add.reduceat), not through a dense
    (cells x classes) one-hot matrix: 50,000 cells in 500 classes would make that 200 MB."""
    import tracemalloc

    rng = np.random.default_rng(0)
    n = 50_000
    y = rng.integers(0, 500, n)
    g = np.arange(n)  # every example its own group: 50,000 cells
    p = np.where(rng.random(n) < 0.7, y, 0)
    tracemalloc.start()
    try:
        r = group_report(y, p, g)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(r.table) == n and len(r.class_table) == 500
    assert peak < 50 * 2**20, peak  # measured about 15 MB; the one-hot alone was 200 MB
    ct = r.class_table
    assert close(r.macro_std, math.sqrt(float((ct["weighted_std"] ** 2).mean())))
