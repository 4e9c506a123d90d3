"""benchmarks/cifar_b_flowaug_table.py (issue 21, item 3): paired differences to Standard by hand, the
paper's names for each FlowAug setting, and a closure result of another flow refused."""

from __future__ import annotations

import json

import pytest

from stratalab.experiments.cifar_b import CifarBConfig
from tests.benchmarks._bench import bench_module


def test_paired_difference_by_hand():
    t = bench_module("cifar_b_flowaug_table")
    base = {0: {"macro_std": 5.0}, 1: {"macro_std": 6.0}, 2: {"macro_std": 5.5}}
    row = {0: {"macro_std": 4.0}, 2: {"macro_std": 5.0}, 7: {"macro_std": 1.0}}  # seed 7 has no partner
    # differences -1.0 and -0.5 on seeds 0 and 2: mean -0.75, sample std 0.354
    assert t.paired(row, base, "macro_std") == "-0.75 ± 0.35 (n=2)"
    assert t.paired({0: {"macro_std": 5.25}}, base, "macro_std") == "+0.25 (n=1)"
    assert t.paired({5: {"macro_std": 5.25}}, base, "macro_std") == "-"
    assert t.cell([1.0, 2.0, 3.0]) == "2.00 ± 0.82"  # std with ddof 0, as the study's table


def test_labels_name_the_paper_objective_and_weights(tmp_path):
    t = bench_module("cifar_b_flowaug_table")
    (tmp_path / "f.pt").write_bytes(b"weights")
    cfg = CifarBConfig.of(dataset="cifar10-b", augmentations=("flowaug",), flow=str(tmp_path / "f.pt"), flowaug_objective="gauss+mix+std",
                          flowaug_std_weight=0.05)
    assert t.flowaug_label(cfg) == "FlowAug eq. (4), lambda2 0.05, lambda1 1, sigma 0.1, any pairs"
    cfg = CifarBConfig.of(dataset="cifar10-b", augmentations=("flowaug",), flow=str(tmp_path / "f.pt"), flowaug_objective="mix+std",
                          flowaug_std_weight=0.01)
    assert t.flowaug_label(cfg) == "FlowAug eq. (3), Alg. 2, lambda 0.01, any pairs"


def test_closure_of_another_flow_is_refused(tmp_path):
    t = bench_module("cifar_b_flowaug_table")
    flow = tmp_path / "flow.pt"
    flow.write_bytes(b"weights")
    res = tmp_path / "closure.json"
    res.write_text(json.dumps({"flow": str(flow), "closure_mean": 0.9, "closure_median": 0.91, "test_bpd": 3.5,
                               "pairs": 10}))
    sha = t.sha256(flow)
    line, info = t.closure_line(str(res), {sha})
    assert "closure 0.900" in line and info["test_bpd"] == 3.5
    with pytest.raises(SystemExit, match="give the closure result of their flow"):
        t.closure_line(str(res), {"0" * 64})
