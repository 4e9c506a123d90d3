"""Minutes-long runs (``pytest -m slow``; CI runs them after the fast suite, `make test-slow`):
the acceptance claims of the GEORGE and D3M issues over several seeds and on real MNIST, and
determinism of a real-size training run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stratalab.data import load
from stratalab.discover import cluster_quality
from stratalab.experiments import D3MConfig, GeorgeConfig, run_d3m_seed, run_george, summarise
from stratalab.train import TrainConfig, run
from tests.conftest import SHARED_DATA, shared_file

pytestmark = pytest.mark.slow


def test_george_finds_the_eights_on_most_seeds_and_beats_erm():
    """u-digits, seeds 0-4 (about 2.5 min): the rare 8s have their own cluster (precision and
    recall >= 0.5 on train) on at least 4 of 5 seeds, and GEORGE's mean robust test accuracy is
    above ERM's. Measured when the recipe was chosen: 5 of 5; robust ERM 57.7, GEORGE 77.2."""
    cfg = GeorgeConfig.for_dataset("u-digits", oracle=False)
    runs, found = [], 0
    for seed in range(5):
        ds = load("u-digits", seed=seed)
        res = run_george(ds, cfg, seed)
        runs.append(res)
        eight = cluster_quality(res.clusters["train"], ds.train.g)[0].set_index("subclass").loc[8]
        found += bool(eight["precision"] >= 0.5 and eight["recall"] >= 0.5)
    table = summarise(runs).set_index("method")
    assert found >= 4
    assert table.loc["GEORGE", "robust_mean"] > table.loc["ERM", "robust_mean"] + 0.05


def test_d3m_and_auto_d3m_beat_erm_on_spurious_mnist():
    """Real MNIST (spurious-mnist), one seed, 5 epochs, TRAK on all parameters with k = 256 (a few minutes): D3M
    and AUTO-D3M raise test worst-group accuracy over ERM. BENCHMARKS.md has the 3-seed run
    (ERM 75.8, D3M 93.3, AUTO-D3M 93.3 at 10 epochs)."""
    shared_file("mnist.npz")
    ds = load("spurious-mnist", data_dir=SHARED_DATA, seed=0)
    cfg = TrainConfig(model="lenet5", epochs=5, lr=1e-3, batch_size=128, seed=0)
    res = run_d3m_seed(ds, cfg, D3MConfig(methods=("erm", "auto-d3m", "d3m"), proj_dim=256))
    wga = {m: r["test"].worst_group_accuracy for m, r in res.reports.items()}
    assert wga["d3m"] > wga["erm"] + 0.05, wga
    assert wga["auto-d3m"] > wga["erm"] + 0.05, wga


def test_lenet_on_u_mnist_is_deterministic():
    """Same seed, same numbers on one machine: two 1-epoch LeNet-5 runs on U-MNIST (43.5k images)
    give identical histories and test reports; another seed differs."""
    shared_file("mnist.npz")
    ds = load("u-mnist", data_dir=SHARED_DATA, seed=0)
    cfg = TrainConfig(model="lenet5", epochs=1, method="gdro", select="val_wga", seed=0)
    a, b = run(ds, cfg), run(ds, cfg)
    assert a.history == b.history
    assert a.reports["test"].to_dict() == b.reports["test"].to_dict()
    c = run(ds, dataclasses.replace(cfg, seed=1))
    assert not np.isclose(c.history[0]["train_loss"], a.history[0]["train_loss"], rtol=0, atol=1e-9)
