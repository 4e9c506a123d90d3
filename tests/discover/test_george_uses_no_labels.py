"""GEORGE is unsupervised with respect to subclasses: its clusters (and everything chosen with them)
must not change when the true subclass labels of the data set are shuffled."""

from __future__ import annotations

import numpy as np

from stratalab.data import Dataset, load
from stratalab.experiments import GeorgeConfig, run_george


def _permute_groups(ds: Dataset, seed: int) -> Dataset:
    """The same data set with every split's true subclass labels randomly permuted."""
    rng = np.random.default_rng(seed)
    splits = {}
    for name, sp in ds.splits.items():
        new = sp.subset(np.arange(len(sp)))  # a copy
        new.g = sp.g[rng.permutation(len(sp))]
        splits[name] = new
    return Dataset(ds.name, splits, ds.class_names, ds.group_names, ds.description, dict(ds.options))


def test_george_pipeline_gives_the_same_clusters_when_true_subclasses_are_shuffled():
    """Kills: the pipeline leaking the true subclasses into GEORGE, e.g. experiments/george.py
    appending ``split.g`` as a feature column before clustering (``feats[s] = column_stack([feats[s],
    ds.splits[s].g])``), or seeding the clustering from ``ds.train.g``. ERM, clustering and Group DRO
    on clusters (selected by worst estimated-group val accuracy) read no subclass label, so clusters
    on train/val/test, cluster counts and the ERM/GEORGE selected epochs must be identical."""
    ds = load("synthetic-gmm", seed=0, n_train=600, n_val=200, n_test=200, dim=6)
    shuffled = _permute_groups(ds, seed=1)
    assert (shuffled.train.g != ds.train.g).mean() > 0.3  # the labels really moved
    np.testing.assert_array_equal(shuffled.train.x, ds.train.x)
    np.testing.assert_array_equal(shuffled.train.y, ds.train.y)

    cfg = GeorgeConfig.of(model="mlp", epochs=3, batch_size=64, lr=2e-3, weight_decay=0.0, schedule="constant",
                       reducer="pca", cluster_method="kmeans", k_max=4, min_cluster_size=10, min_val_size=5,
                       oracle=False)
    a = run_george(ds, cfg, seed=0)
    b = run_george(shuffled, cfg, seed=0)

    assert a.george.n_clusters_ >= 3  # more than one cluster per class somewhere: a non-trivial clustering
    assert a.george.n_clusters_per_class_ == b.george.n_clusters_per_class_
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(b.clusters[s], a.clusters[s],
                                      err_msg=f"{s} clusters changed when the true subclass labels were shuffled")
    assert a.selected_epochs == b.selected_epochs
    # the recovery table is the one place that reads the true labels: it must see the shuffle
    assert a.recovery_overall != b.recovery_overall
