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
    # differences -0.5, -0.25, -0.75: mean -0.5, sample std 0.25, t = -0.5 / (0.25 / sqrt 3) = -3.46 on 2 df
    three = {0: {"macro_std": 4.5}, 1: {"macro_std": 5.75}, 2: {"macro_std": 4.75}}
    assert t.paired(three, base, "macro_std") == "-0.50 ± 0.25 (n=3, p=0.07)"
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


def _result(path, runs, **settings):
    cfg = CifarBConfig.of(dataset="cifar10-b", **settings)
    path.write_text(json.dumps({"config": cfg.to_dict(), "runs": runs, "class_names": ["a"], "group_names": ["g"]}))
    return str(path)


def _run(augment, seed, macro, corrupted=(), flow_sha="f" * 64):
    clean = {"accuracy": 0.8, "weighted_std": 0.1, "macro_std": macro, "worst_group_accuracy": 0.5}
    return {"augment": augment, "seed": seed, "clean": clean, "corrupted": [dict(clean, macro_std=c) for c in corrupted],
            **({"flow_sha256": flow_sha} if augment == "flowaug" else {})}


def test_table_joins_flowaug_settings_and_refuses_other_settings(tmp_path, monkeypatch, capsys):
    t = bench_module("cifar_b_flowaug_table")
    common = bench_module("_common")
    monkeypatch.setattr(t, "RESULTS", tmp_path / "out")
    monkeypatch.setattr(common, "RESULTS", tmp_path / "out")
    flow = tmp_path / "f.pt"
    flow.write_bytes(b"weights")
    f = dict(flow=str(flow), corruptions=(), n_corrupt=None)
    # a Standard file that has its own FlowAug row (lambda 0.1), and no corruptions
    std = _result(tmp_path / "std.json", [_run("flip_crop", 0, 0.05), _run("flip_crop", 1, 0.06), _run("flowaug", 0, 0.045)],
                  augmentations=("flip_crop", "flowaug"), **f)
    # other lambda, sigma and partners: FlowAug's own settings, so the files compare
    other = _result(tmp_path / "l001.json", [_run("flowaug", 0, 0.04), _run("flowaug", 1, 0.06)], augmentations=("flowaug",),
                    flowaug_std_weight=0.01, flowaug_sigma=0.5, flowaug_pairs="same_class", **f)
    monkeypatch.setattr("sys.argv", ["t", "--standard", std, "--flowaug", other, "--name", "tab", "--write"])
    t.main()
    out = capsys.readouterr().out
    assert "| FlowAug eq. (3), Alg. 1, lambda 0.1, sigma 0.1 | 0 | 80.00 | 10.00 | 4.50 | - | - | -0.50 (n=1) | - |" in out
    # differences 4 - 5 and 6 - 6 points: mean -0.5, sample std 0.71
    assert "| FlowAug eq. (3), Alg. 1, lambda 0.01, sigma 0.5 | 0,1 | 80.00 ± 0.00 | 10.00 ± 0.00 | 5.00 ± 1.00 | - | - | -0.50 ± 0.71 (n=2) |" in out
    assert (tmp_path / "out" / "tab.png").stat().st_size > 1000 and (tmp_path / "out" / "tab.json").is_file()
    # another epoch count is another experiment: refused, naming the setting
    epochs = _result(tmp_path / "e.json", [_run("flowaug", 0, 0.04)], augmentations=("flowaug",), epochs=9, **f)
    monkeypatch.setattr("sys.argv", ["t", "--standard", std, "--flowaug", epochs])
    with pytest.raises(SystemExit, match=r"other settings .*train.epochs=9"):
        t.main()
