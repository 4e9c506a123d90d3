"""Shared pieces of the property suite: the case counter, example budgets, slow loop references
and strategies for label arrays.

Every property test calls :func:`tick` once per generated case; ``conftest.py`` prints the total
("hypothesis cases: N") at the end of the run.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import settings
from hypothesis import strategies as st

CASES: Counter[str] = Counter()


def tick(name: str) -> None:
    """Count one generated case of the property ``name``."""
    CASES[name] += 1


def examples(share: float) -> int:
    """Examples for one test: ``share`` of the profile's ``max_examples`` (at least 3). The profile
    (tests/property/conftest.py) sets the base from $STRATALAB_PROPERTY_EXAMPLES, so one variable
    scales the whole suite; slow properties (CLI, files, clustering) take a smaller share."""
    return max(3, round(settings.default.max_examples * share))


@contextmanager
def no_numeric_warnings() -> Iterator[None]:
    """Turn numpy's floating-point warnings (RuntimeWarning) and ComplexWarning into errors: a
    function under test must never emit one, whatever its input."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        yield


def raises_naming(fn: Callable[[], Any], *names: str, types: tuple[type[BaseException], ...] = (ValueError, TypeError),
                  strict_warnings: bool = True) -> BaseException:
    """Call ``fn``; it must raise one of ``types`` whose message names one of ``names``. Any
    other outcome (a result, another exception type, a numeric warning) fails the property.
    ``strict_warnings=False`` lets third-party warnings pass (pytest's filter still turns
    stratalab's own RuntimeWarnings into errors)."""
    try:
        with no_numeric_warnings() if strict_warnings else warnings.catch_warnings():
            out = fn()
    except types as e:
        msg = str(e)
        assert any(nm in msg for nm in names), f"{type(e).__name__} does not name {names}: {msg!r}"
        return e
    raise AssertionError(f"expected {' or '.join(t.__name__ for t in types)} naming {names}, got a result: {out!r}")


# ---------------------------------------------------------------- loop references (group metrics)

def ref_weighted_std(values: list[float], weights: list[float]) -> float:
    """Eq. (5) of Chiu et al., literally: frequency-weighted std with denominator sum(w) - 1; no
    spread (0) for at most one subgroup or a total weight of at most one."""
    total = math.fsum(weights)
    if len(values) <= 1 or total <= 1:
        return 0.0
    mean = math.fsum(w * s for s, w in zip(values, weights)) / total
    var = math.fsum(w * (s - mean) ** 2 for s, w in zip(values, weights)) / (total - 1)
    return math.sqrt(max(var, 0.0))


def ref_macro_std(values: list[float], weights: list[float], cell_class: list[int]) -> float:
    """Eq. (6): root mean square over classes of the per-class eq. (5)."""
    by_class: dict[int, tuple[list[float], list[float]]] = {}
    for s, w, c in zip(values, weights, cell_class):
        by_class.setdefault(c, ([], []))
        by_class[c][0].append(s)
        by_class[c][1].append(w)
    if not by_class:
        return 0.0
    return math.sqrt(math.fsum(ref_weighted_std(*v) ** 2 for v in by_class.values()) / len(by_class))


def ref_report(y: list[int], p: list[int], g: list[int], c: list[int] | None = None,
               score: Any = None, train_counts: dict[int, float] | None = None,
               n_group_names: int | None = None) -> dict[str, Any]:
    """group_report by loops over examples, cells and classes (no numpy)."""
    c = list(y) if c is None else list(c)
    n = len(y)
    cells: dict[tuple[int, int], list[int]] = defaultdict(list)  # (class, group) -> example indices
    for i in range(n):
        cells[(c[i], g[i])].append(i)
    keys = sorted(cells)
    ok = [int(y[i] == p[i]) for i in range(n)]
    rows = []
    for k in keys:
        idx = cells[k]
        corr = sum(ok[i] for i in idx)
        rows.append({"class": k[0], "group": k[1], "n": len(idx), "correct": corr, "accuracy": corr / len(idx)})
    acc = [r["accuracy"] for r in rows]
    w = [float(r["n"]) for r in rows]
    cc = [r["class"] for r in rows]
    classes = sorted(set(cc))
    class_rows = []
    for k in classes:
        mine = [r for r in rows if r["class"] == k]
        cn = sum(r["n"] for r in mine)
        worst = min(mine, key=lambda r: (r["accuracy"], r["group"]))
        class_rows.append({"class": k, "n": cn, "accuracy": sum(r["correct"] for r in mine) / cn,
                           "n_groups": len(mine), "worst_group": worst["group"],
                           "worst_group_accuracy": worst["accuracy"],
                           "weighted_std": ref_weighted_std([r["accuracy"] for r in mine], [float(r["n"]) for r in mine])})
    worst_cell = min(range(len(rows)), key=lambda j: (acc[j], j))
    out = {
        "rows": rows,
        "classes": class_rows,
        "average_accuracy": sum(ok) / n,
        "balanced_accuracy": math.fsum(acc) / len(acc),
        "worst_group_accuracy": min(acc),
        "worst_group": (rows[worst_cell]["class"], rows[worst_cell]["group"]),
        "worst_class_accuracy": min(r["accuracy"] for r in class_rows),
        "weighted_std": ref_weighted_std(acc, w),
        "macro_std": ref_macro_std(acc, w, cc),
        "train_weighted_accuracy": None,
        "missing_groups": [],
    }
    if score is not None:
        s = np.asarray(score, dtype=float)
        for r in rows:
            idx = cells[(r["class"], r["group"])]
            losses = []
            for i in idx:
                pt = (s[i] if y[i] == 1 else 1 - s[i]) if s.ndim == 1 else s[i][y[i]]
                losses.append(-math.log(min(max(pt, 1e-12), 1.0)))
            r["loss"] = math.fsum(losses) / len(losses)
            if (s.ndim == 1 or s.shape[1] == 2) and set(y) <= {0, 1}:
                pos = s if s.ndim == 1 else s[:, 1]
                vals = []
                for i in idx:
                    others = [j for j in range(n) if y[j] != y[i]]
                    if not others:
                        continue
                    if y[i] == 1:  # P(score of this positive > a negative's), ties 1/2
                        vals.append(sum(1.0 if pos[i] > pos[j] else 0.5 if pos[i] == pos[j] else 0.0 for j in others) / len(others))
                    else:
                        vals.append(sum(1.0 if pos[j] > pos[i] else 0.5 if pos[j] == pos[i] else 0.0 for j in others) / len(others))
                r["auroc"] = math.fsum(vals) / len(vals) if vals else float("nan")
    missing: list[Any] = []
    seen_groups = {r["group"] for r in rows}
    if n_group_names is not None:
        missing += [k for k in range(n_group_names) if k not in seen_groups]
    if train_counts is not None:
        for r in rows:
            r["train_n"] = float(train_counts[r["group"]])
        absent = [k for k, v in train_counts.items() if v > 0 and k not in seen_groups]
        missing += [a for a in absent if a not in missing]
        if absent:
            out["train_weighted_accuracy"] = float("nan")
        else:
            tot = math.fsum(r["train_n"] for r in rows)
            out["train_weighted_accuracy"] = math.fsum(r["train_n"] * r["accuracy"] for r in rows) / tot
    out["missing_groups"] = missing
    return out


def close(a: float | None, b: float | None, tol: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


# ---------------------------------------------------------------- strategies

@st.composite
def labelled_sample(draw: st.DrawFn, max_n: int = 40) -> dict[str, Any]:
    """A valid (y_true, y_pred, groups) triple with varied structure: groups nested in classes
    (``g = y * A + a``, the Waterbirds convention), shared by classes (CIFAR-10-B colours), or
    sparse ids (hashed ids, which take the sort path); a single class or a single group now and then."""
    n = draw(st.integers(1, max_n))
    n_classes = draw(st.integers(1, 4))
    n_attr = draw(st.integers(1, 4))
    y = draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n))
    a = draw(st.lists(st.integers(0, n_attr - 1), min_size=n, max_size=n))
    layout = draw(st.sampled_from(["nested", "shared", "sparse"]))
    if layout == "nested":
        g = [yi * n_attr + ai for yi, ai in zip(y, a)]
    elif layout == "shared":
        g = a
    else:
        g = [10**12 + 7919 * ai for ai in a]
    accuracy = draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))
    flips = draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
    wrong = draw(st.lists(st.integers(0, n_classes), min_size=n, max_size=n))  # may be a class absent from y
    p = [yi if f < accuracy else wi for yi, f, wi in zip(y, flips, wrong)]
    return {"y": y, "p": p, "g": g, "n_classes": n_classes, "layout": layout, "n_attr": n_attr}


def as_container(draw: st.DrawFn, values: list[int], name: str) -> Any:
    """The labels in one of the containers users pass: list, numpy array of any fitting integer
    dtype, whole-number floats (pandas' dtype for integer columns with NaN dropped), bool, pandas
    Series (also nullable Int64), a column or row vector."""
    hi = max(values)
    kinds = ["list", "int64", "uint64", "float64", "series", "Int64", "column", "row"]
    if hi < 2**31:
        kinds += ["int32", "uint32"]
    if hi < 2**7:
        kinds += ["int8", "uint8", "float32"]
    if hi < 2**15:
        kinds += ["int16", "uint16"]
    if hi <= 1:
        kinds += ["bool"]
    kind = draw(st.sampled_from(kinds), label=f"{name} container")
    if kind == "list":
        return list(values)
    if kind == "series":
        return pd.Series(values)
    if kind == "Int64":
        return pd.Series(values, dtype="Int64")
    if kind == "column":
        return np.asarray(values).reshape(-1, 1)
    if kind == "row":
        return np.asarray(values).reshape(1, -1)
    return np.asarray(values).astype(kind)
