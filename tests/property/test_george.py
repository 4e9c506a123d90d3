"""Properties of ``stratalab.discover.George.fit`` on small random feature matrices (reducer "none"
or "pca", k-means, so each case takes milliseconds): a ValueError naming the problem, or every
example gets one cluster id, ids are nested in classes (a cluster belongs to exactly one class and
every id is used), and a refit with the same random_state gives the same clustering."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import stratalab
from stratalab.discover import George
from tests.property._support import examples, raises_naming, tick

# k-means on duplicated points warns that it found fewer distinct clusters, and PCA of a class whose
# features are constant divides 0 by 0 in explained_variance_ratio_: sklearn's warnings, not ours.
pytestmark = [pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
              pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning:sklearn")]


@st.composite
def george_case(draw: st.DrawFn) -> dict:
    n_classes = draw(st.integers(1, 3))
    class_ids = sorted(draw(st.sets(st.integers(0, 6), min_size=n_classes, max_size=n_classes)))
    d = draw(st.integers(1, 4))
    sizes = [draw(st.integers(1, 24), label=f"n of class {c}") for c in class_ids]
    kind = draw(st.sampled_from(["blobs", "uniform", "few_values"]))
    xs, ys = [], []
    for c, n in zip(class_ids, sizes):
        if kind == "blobs":  # a few well-separated subclasses per class
            k = draw(st.integers(1, 3))
            centres = np.asarray(draw(hnp.arrays(np.float64, (k, d), elements=st.floats(-50, 50))))
            which = np.asarray(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
            noise = np.asarray(draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-1, 1))))
            xs.append(centres[which] + noise)
        elif kind == "uniform":
            xs.append(draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-1e3, 1e3))))
        else:  # duplicated points: fewer distinct points than clusters asked for
            xs.append(draw(hnp.arrays(np.float64, (n, d), elements=st.sampled_from([0.0, 1.0, 5.0]))))
        ys.append(np.full(n, c))
    x, y = np.concatenate(xs), np.concatenate(ys)
    perm = np.asarray(draw(st.permutations(range(len(y)))))
    x, y = x[perm], y[perm]
    k_min = draw(st.integers(1, 2))
    params = dict(
        reducer=draw(st.sampled_from(["none", "pca"])), cluster_method="kmeans",
        k_min=k_min, k_max=draw(st.integers(k_min, 4)),
        overcluster=draw(st.booleans()), overcluster_factor=draw(st.integers(2, 3)),
        min_cluster_frac=0.0, min_cluster_size=draw(st.integers(1, 4)), min_val_size=draw(st.integers(0, 3)),
        n_components=draw(st.integers(1, 3)), silhouette_sample_size=draw(st.sampled_from([None, 5000, 12])),
        random_state=draw(st.integers(0, 2**31)),
    )
    fit_kw: dict = {}
    if draw(st.booleans(), label="losses"):
        fit_kw["losses"] = np.asarray(draw(hnp.arrays(np.float64, len(y), elements=st.floats(0, 10))))
    if draw(st.booleans(), label="val"):
        m = draw(st.integers(1, 10))
        fit_kw["val_features"] = np.asarray(draw(hnp.arrays(np.float64, (m, d), elements=st.floats(-50, 50))))
        fit_kw["val_y"] = np.asarray(draw(st.lists(st.sampled_from(class_ids), min_size=m, max_size=m)))
    return {"x": x, "y": y, "params": params, "fit_kw": fit_kw}


_PACKAGE_DIR = Path(stratalab.__file__).resolve().parent


def _is_ours(filename: str) -> bool:
    """Whether a warning was raised in stratalab's own source (not merely under a folder named
    ``stratalab``: a plain ``git clone`` puts ``.venv/.../sklearn`` under one)."""
    return Path(filename).resolve().is_relative_to(_PACKAGE_DIR)


def _fit(case: dict) -> George:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        geo = George(**case["params"]).fit(case["x"], case["y"], **case["fit_kw"])
    ours = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning) and _is_ours(w.filename)]
    assert not ours, ours  # sklearn's ConvergenceWarning on duplicate points is fine; a numeric warning of ours is not
    return geo


@settings(max_examples=examples(0.3))
@given(george_case())
def test_george_fit_nests_clusters_in_classes_and_is_deterministic(case):
    tick("George.fit")
    x, y, p = case["x"], case["y"], case["params"]
    classes, counts = np.unique(y, return_counts=True)
    small = [int(c) for c, k in zip(classes, counts) if k < 2 * p["k_min"]]
    if small:
        # (sklearn may warn while fitting the classes before the small one: PCA of constant features.)
        raises_naming(lambda: George(**p).fit(x, y, **case["fit_kw"]), f"class {small[0]}", strict_warnings=False)
        return
    geo = _fit(case)
    labels = geo.predict(x, y)
    assert labels.shape == y.shape and labels.dtype == np.int64
    assert ((0 <= labels) & (labels < geo.n_clusters_)).all()
    # Every id is used by the training data, and each cluster belongs to exactly one class.
    assert set(labels.tolist()) == set(range(geo.n_clusters_))
    assert len(geo.cluster_class_) == geo.n_clusters_ == sum(geo.n_clusters_per_class_.values())
    assert np.array_equal(geo.cluster_class_[labels], y)
    for c in classes.tolist():
        lo = geo.offsets_[c]
        mine = labels[y == c]
        assert ((lo <= mine) & (mine < lo + geo.n_clusters_per_class_[c])).all()
        assert p["k_min"] <= geo.k_per_class_[c] <= p["k_max"]
    # Deterministic given random_state: a second fit (through fit_predict) clusters identically.
    again = George(**p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.array_equal(again.fit_predict(x, y, **case["fit_kw"]), labels)
    assert again.k_per_class_ == geo.k_per_class_ and again.n_clusters_per_class_ == geo.n_clusters_per_class_
    assert again.silhouette_scores_ == geo.silhouette_scores_
    if "val_features" in case["fit_kw"]:
        vx, vy = case["fit_kw"]["val_features"], case["fit_kw"]["val_y"]
        vl = geo.predict(vx, vy)
        assert np.array_equal(geo.cluster_class_[vl], vy)


BAD_FITS = [
    ("features", "nan"), ("features", "inf"), ("features", "one_dim"), ("features", "three_dim"),
    ("y", "shorter"), ("y", "nan"), ("y", "negative"), ("y", "fraction"),
    ("losses", "shorter"), ("val_features", "one_dim"), ("val_features", "nan"), ("val_y", "shorter"),
    ("reducer", "tsne"), ("cluster_method", "dbscan"), ("k_min", "above_k_max"), ("k_min", "zero"),
    ("head_weights", "missing"),
]


@settings(max_examples=examples(0.3))
@given(st.sampled_from(BAD_FITS), st.integers(0, 2**31), st.integers(8, 20), st.integers(1, 3))
def test_george_bad_input_raises_naming_the_problem(bad, seed, n, d):
    tick("George.fit bad input")
    rng = np.random.default_rng(seed)
    arg, how = bad
    x = rng.standard_normal((n, d))
    y = np.arange(n) % 2
    params = dict(reducer="none", cluster_method="kmeans", k_max=3, overcluster=False, random_state=0)
    fit_kw: dict = {}
    names: tuple[str, ...] = (arg,)
    if arg == "features":
        x = {"nan": np.where((rng.random(x.shape) < 0.2) | (np.arange(x.size).reshape(x.shape) == seed % x.size), np.nan, x),
             "inf": np.full_like(x, np.inf),
             "one_dim": x[:, 0], "three_dim": x[:, :, None]}[how]
    elif arg == "y":
        y = {"shorter": y[:-1], "nan": np.where(np.arange(n) == 0, np.nan, y), "negative": y - 1,
             "fraction": y + 0.5}[how]
    elif arg == "losses":
        fit_kw["losses"] = np.ones(n - 1)
    elif arg == "val_features":
        fit_kw["val_features"] = np.ones(4) if how == "one_dim" else np.full((4, d), np.nan)
        fit_kw["val_y"] = np.array([0, 1, 0, 1])
    elif arg == "val_y":
        fit_kw["val_features"] = np.ones((4, d))
        fit_kw["val_y"] = np.array([0, 1, 0])
    elif arg in ("reducer", "cluster_method"):
        params[arg] = how
    elif arg == "k_min":
        params.update(k_min=4, k_max=3) if how == "above_k_max" else params.update(k_min=0)
        names = ("k_min",)
    else:
        params["reducer"] = "hardness"
    raises_naming(lambda: George(**params).fit(x, y, **fit_kw), *names)


# ---------------------------------------------------------------- regressions: bugs this suite found in stratalab/discover (fixed)

def _xy():
    rng = np.random.default_rng(0)
    return rng.standard_normal((20, 3)), np.repeat([0, 1], 10)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_regression_george_nonfinite_losses(value):
    x, y = _xy()
    losses = np.ones(20)
    losses[3] = value
    raises_naming(lambda: George(reducer="none", cluster_method="kmeans", k_max=3).fit(x, y, losses), "losses")


@pytest.mark.parametrize("param, value", [("random_state", -1), ("silhouette_sample_size", 2), ("k_max", 2.5),
                                          ("empty", None), ("features", "strings")])
def test_regression_george_parameters(param, value):
    x, y = _xy()
    kw = dict(reducer="none", cluster_method="kmeans", k_max=3)
    if param == "empty":
        x, y = x[:0], y[:0]
        names = ("empty", "no example", "features")
    elif param == "features":
        x = x.astype(str).astype(object) + "a"  # numpy's "could not convert string to float" names no argument
        names = ("features",)
    else:
        kw[param] = value
        names = (param,)
    raises_naming(lambda: George(**kw).fit(x, y), *names)
