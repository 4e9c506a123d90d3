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


def test_holm_adjustment_by_hand():
    t = bench_module("cifar_b_flowaug_table")
    # sorted 0.01, 0.03, 0.04: x3 = 0.03, x2 = 0.06, x1 = 0.04 -> kept non-decreasing: 0.06
    assert t.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert t.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert t.holm([0.2]) == pytest.approx([0.2])
    base = {0: {"macro_std": 5.0}, 1: {"macro_std": 6.0}, 2: {"macro_std": 5.5}}
    a = {0: {"macro_std": 4.5}, 1: {"macro_std": 5.75}, 2: {"macro_std": 4.75}}  # p = 0.074 (the test above)
    b = {0: {"macro_std": 5.5}, 1: {"macro_std": 6.0}, 2: {"macro_std": 6.5}}  # differences 0.5, 0, 1: p = 0.23
    one = {0: {"macro_std": 1.0}}  # a single seed has no p and is not in the family
    line, info = t.holm_line([("A", a), ("B", b), ("C", one)], base)
    assert set(info["macro_std"]) == {"A", "B"} and "corrupted_macro_std" not in info
    assert info["macro_std"]["A"]["p_holm"] == pytest.approx(2 * info["macro_std"]["A"]["p"])
    assert info["macro_std"]["B"]["p_holm"] == pytest.approx(max(2 * info["macro_std"]["A"]["p"], info["macro_std"]["B"]["p"]))
    assert "A: p=0.07 -> 0.15" in line and "(2 rows per family)" in line
    assert t.holm_line([("A", a)], base) == ("", {})  # one row: no family to adjust


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


def test_flow_of_another_checkout_is_found_by_name_and_hash(tmp_path, monkeypatch):
    """A result made in another checkout records that checkout's absolute flow path; the table reads the
    file of that name in benchmarks/results, only if its hash is the one the runs recorded."""
    t = bench_module("cifar_b_flowaug_table")
    made = tmp_path / "elsewhere" / "flow.pt"
    made.parent.mkdir()
    made.write_bytes(b"weights")
    res = _result(tmp_path / "r.json", [_run("flowaug", 0, 0.05, flow_sha=t.sha256(made))], augmentations=("flowaug",),
                  flow=str(made))
    here = tmp_path / "results"
    here.mkdir()
    monkeypatch.setattr(t, "RESULTS", here)
    assert t.load(res).config.flow == str(made)  # still where it was made: used as recorded
    made.rename(here / "flow.pt")  # that checkout is gone; the project's copy has the same bytes
    assert t.load(res).config.flow == str(here / "flow.pt")
    (here / "flow.pt").write_bytes(b"other weights")  # same name, another flow: refused
    with pytest.raises(SystemExit, match="is not the flow its runs recorded"):
        t.load(res)
    (here / "flow.pt").unlink()
    with pytest.raises(SystemExit, match="is missing"):
        t.load(res)
