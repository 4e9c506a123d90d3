"""The one reader of result files: kinds, the tidy records, group tables, labels, and clear refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from stratalab.cli.main import app
from stratalab.experiments import KINDS, load_result, result_from_dict
from stratalab.report.results import METRIC_ALIASES, RECORD_COLUMNS, summarise

from . import _dicts


def _value(rec: pd.DataFrame, **where: object) -> float:
    sub = rec
    for k, v in where.items():
        sub = sub[sub[k] == v]
    assert len(sub) == 1, (where, sub)
    return float(sub["value"].iloc[0])


def test_every_kind_is_recognised_with_its_dataset_and_seeds(tmp_path):
    files = {"audit.json": (_dicts.audit("my preds.csv"), "audit", "my preds.csv", []),
             "train.json": (_dicts.train(seed=3), "train", "u-digits", [3]),
             "george.json": (_dicts.george(), "run george", "u-digits", [0, 1]),
             "d3m.json": (_dicts.d3m("waterbirds"), "run d3m", "waterbirds", [0, 1]),
             "scaling.json": (_dicts.scaling("spurious-mnist"), "run scaling", "spurious-mnist", [0, 1]),
             "cifar.json": (_dicts.cifar_b("cifar100-b"), "run cifar-b", "cifar100-b", [0, 1]),
             "spectral.json": (_dicts.spectral(), "spectral", "u-digits test features of erm (mlp x1, 3 epochs, seed 4)", [4])}
    for name, (d, kind, dataset, seeds) in files.items():
        res = load_result(_dicts.write(tmp_path, name, d))
        assert (res.kind, res.dataset, res.seeds(), res.source) == (kind, dataset, seeds, name)
        rec = res.records()
        assert list(rec.columns) == RECORD_COLUMNS
        assert (rec["source"] == name).all() and (rec["kind"] == kind).all() and (rec["dataset"] == dataset).all()
        assert rec["value"].dtype == np.float64 and rec["seed"].dtype == np.int64
        assert res.raw == d and res.invocation == d.get("invocation", {})
    assert set(KINDS) == {k for _, k, _, _ in files.values()}


def test_audit_records_use_the_report_names_and_its_bootstrap_intervals(tmp_path):
    d = _dicts.audit()
    res = load_result(_dicts.write(tmp_path, "a.json", d))
    rec = res.records()
    assert rec["metric"].tolist() == ["wga", "average", "balanced", "wca", "weighted_std", "macro_std"]
    assert (rec["method"] == "predictions").all() and (rec["seed"] == -1).all() and (rec["setting"] == "").all()
    row = rec.set_index("metric").loc["wga"]
    assert row["value"] == d["worst_group_accuracy"]
    assert [row["ci_low"], row["ci_high"]] == d["intervals"]["worst_group_accuracy"]
    assert _value(rec, metric="average") == d["average_accuracy"]
    # the group table: every group, the worst cell of the file marked, its CI columns named
    (gt,) = res.group_tables()
    title, table, worst, ci = gt  # a GroupTable unpacks like a 4-tuple
    assert gt.formats == {"class": "text", "group": "text", "n": "int", "accuracy": "pct", "accuracy_low": "pct",
                          "accuracy_high": "pct"}
    assert len(table) == len(d["groups"]) and ci == ("accuracy_low", "accuracy_high")
    assert table["accuracy"].tolist() == [g["accuracy"] for g in d["groups"]]
    wg = d["worst_group"]
    expected = next(i for i, g in enumerate(d["groups"]) if (g["class"], g["group"]) == (wg["class"], wg["group"]))
    assert worst == expected and table["accuracy"].iloc[worst] == d["worst_group_accuracy"]
    assert table["group"].iloc[worst] == d["groups"][expected]["group_name"] and "95%" in title
    assert res.labels_used() == {"predictions": "unknown"}


def test_train_records_every_split_and_the_labels_the_run_says(tmp_path):
    d = _dicts.train("gdro", seed=3)
    res = load_result(_dicts.write(tmp_path, "t.json", d))
    rec = res.records()
    assert set(rec["method"]) == {"gdro"} and set(rec["seed"]) == {3}
    assert _value(rec, metric="test_wga") == d["metrics"]["test"]["worst_group_accuracy"]
    assert _value(rec, metric="val_average") == d["metrics"]["val"]["average_accuracy"]
    assert _value(rec, metric="test_macro_std") == d["metrics"]["test"]["macro_std"]
    assert rec["ci_low"].isna().all()
    tables = res.group_tables()
    assert [t.title.split(": ")[1] for t in tables] == ["test accuracy per group", "val accuracy per group"]
    for t, split in zip(tables, ("test", "val")):
        assert t.table["accuracy"].iloc[t.worst] == d["metrics"][split]["worst_group_accuracy"]
    assert res.labels_used() == {"gdro": "train groups: true train groups; val groups: no; selection: val_wca"}
    assert res.method_names() == {"gdro": "GroupDRO"}


def test_george_rows_are_test_wga_and_test_average_per_seed(tmp_path):
    d = _dicts.george()
    res = load_result(_dicts.write(tmp_path, "g.json", d))
    rec = res.records()
    assert list(dict.fromkeys(rec["method"])) == ["erm", "george", "gdro"]
    for seed, rows in _dicts.GEORGE_ROWS.items():
        for name, key in (("ERM", "erm"), ("GEORGE", "george"), ("GDRO (true subclasses)", "gdro")):
            assert _value(rec, method=key, seed=seed, metric="test_wga") == rows[name][0]  # robust accuracy
            assert _value(rec, method=key, seed=seed, metric="test_average") == rows[name][1]  # overall accuracy
        assert _value(rec, method="george", seed=seed, metric="cluster_ari") == 0.9 + seed / 100
    # mean over seeds is the file's own Table 1
    summ = res.summary().set_index(["method", "metric"])
    for row in d["table"]:
        key = {"ERM": "erm", "GEORGE": "george", "GDRO (true subclasses)": "gdro"}[row["method"]]
        assert summ.loc[(key, "test_wga"), "mean"] == pytest.approx(row["robust_mean"], abs=1e-15)
        assert summ.loc[(key, "test_wga"), "std"] == pytest.approx(row["robust_std"], abs=1e-15)
        assert summ.loc[(key, "test_average"), "mean"] == pytest.approx(row["overall_mean"], abs=1e-15)
    (gt,) = res.group_tables()
    assert gt.table["subclass"].iloc[gt.worst] == "eight" and gt.table["recall"].iloc[gt.worst] == 0.6
    labels = res.labels_used()
    assert labels["george"] == d["labels_used"]["GEORGE"] and labels["gdro"] == d["labels_used"]["GDRO (true subclasses)"]
    assert labels["erm"].startswith("class labels only")
    assert res.method_names() == {"erm": "ERM", "george": "GEORGE", "gdro": "GDRO (true subclasses)"}


def test_d3m_records_average_to_the_files_table(tmp_path):
    d = _dicts.d3m()
    res = load_result(_dicts.write(tmp_path, "d.json", d))
    rec = res.records()
    for row in d["table"]:
        mine = rec[(rec["method"] == row["method"])]
        assert mine[mine["metric"] == "test_wga"]["value"].mean() == pytest.approx(row["wga_mean"], abs=1e-15)
        assert mine[mine["metric"] == "test_balanced"]["value"].mean() == pytest.approx(row["balanced_mean"], abs=1e-15)
        assert mine[mine["metric"] == "n_removed"]["value"].mean() == row["removed_mean"]
    for r in d["rows"]:  # every row of the file, exactly
        for key in ("test_wga", "test_balanced", "test_average", "val_wga", "n_removed"):
            assert _value(rec, method=r["method"], seed=r["seed"], metric=key) == r[key]
    tables = res.group_tables()  # the first seed, one table per method, worst cell of each
    assert [t.title for t in tables] == [f"{n}, seed 0: test accuracy per group" for n, _ in _dicts.D3M_METHODS.values()]
    for t, m in zip(tables, _dicts.D3M_METHODS):
        rep = d["seeds"][0]["metrics"][m]["test"]
        assert t.table["accuracy"].tolist() == [g["accuracy"] for g in rep["groups"]]
        assert t.table["accuracy"].iloc[t.worst] == rep["worst_group_accuracy"]
    assert res.labels_used() == {m: f"group labels train / val: {info}" for m, (_, info) in _dicts.D3M_METHODS.items()}
    assert res.method_names()["dfr"] == "DFR*"


def test_d3m_without_per_seed_metrics_reads_its_rows(tmp_path):
    d = _dicts.d3m()
    d["seeds"] = [{"seed": s["seed"], "d3m": {}} for s in d["seeds"]]
    res = load_result(_dicts.write(tmp_path, "d.json", d))
    rec = res.records()
    assert sorted(set(rec["metric"])) == ["n_removed", "test_average", "test_balanced", "test_wga", "val_wga"]
    assert len(rec) == 5 * len(d["rows"]) and res.group_tables() == []


def test_scaling_records_carry_the_width_and_match_the_table(tmp_path):
    d = _dicts.scaling()
    res = load_result(_dicts.write(tmp_path, "s.json", d))
    rec = res.records()
    assert set(rec["setting"]) == {"width=0.5", "width=1"}
    assert set(rec["metric"]) == {"test_wga", "test_average", "test_wga_last", "test_average_last"}
    summ = res.summary().set_index(["method", "setting", "metric"])
    for row in d["table"]:
        key = (row["method"], f"width={row['width']:g}")
        assert summ.loc[key + ("test_wga",), "mean"] == pytest.approx(row["wga_mean"], abs=1e-15)
        assert summ.loc[key + ("test_wga",), "std"] == pytest.approx(row["wga_std"], abs=1e-15)
        assert summ.loc[key + ("test_average",), "mean"] == pytest.approx(row["avg_mean"], abs=1e-15)
        assert summ.loc[key + ("test_wga_last",), "mean"] == pytest.approx(row["wga_last_mean"], abs=1e-15)
        assert summ.loc[key + ("test_wga",), "seeds"] == 2
    assert res.group_tables() == []
    assert res.labels_used()["subsetting"] == "group labels train / val: no / yes (selected by val_wga)"
    assert res.method_names()["erm"] == "none (ERM)"


def test_spectral_records_rho_and_gap_per_class(tmp_path):
    res = load_result(_dicts.write(tmp_path, "sp.json", _dicts.spectral()))
    rec = res.records()
    assert rec[["method", "seed"]].drop_duplicates().values.tolist() == [["erm", 4]]
    assert _value(rec, metric="rho:>= 5") == 1.5 and _value(rec, metric="accuracy_gap:< 5") == 0.1
    (gt,) = res.group_tables()
    assert gt.worst is None and gt.table["rho"].tolist() == [0.5, 1.5]


def test_one_vocabulary_across_kinds():
    """What means the same is named the same: every kind's worst-group accuracy on test is test_wga."""
    assert METRIC_ALIASES["robust_accuracy"] == "test_wga" and METRIC_ALIASES["overall_accuracy"] == "test_average"
    assert METRIC_ALIASES["test_avg"] == "test_average"
    names = {}
    for kind, d in (("train", _dicts.train()), ("run george", _dicts.george()), ("run d3m", _dicts.d3m()),
                    ("run scaling", _dicts.scaling())):
        names[kind] = set(result_from_dict(d, f"{kind}.json").records()["metric"])
    assert all({"test_wga", "test_average"} <= v for v in names.values())
    methods = pd.concat([result_from_dict(d).records() for d in (_dicts.george(), _dicts.d3m(), _dicts.train("erm"))])
    assert {"erm"} == set(methods[methods["kind"] == "run george"]["method"]) & set(
        methods[methods["kind"] == "run d3m"]["method"]) & set(methods[methods["kind"] == "train"]["method"])


def test_files_without_invocation_are_recognised_by_their_keys():
    for d, kind in ((_dicts.d3m(), "run d3m"), (_dicts.george(), "run george"), (_dicts.scaling(), "run scaling"),
                    (_dicts.train(), "train")):
        d.pop("invocation")
        res = result_from_dict(d, "old.json")
        assert res.kind == kind and res.invocation == {}


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "does not exist"),
    (lambda p: (p.mkdir(), p)[1], "is a directory"),
    (lambda p: (p.write_text('{"source": "x", "worst_group_accuracy": '), p)[1], "not valid JSON"),
    (lambda p: (p.write_bytes(b"\xff\xfe\x00garbage"), p)[1], "not text"),
    (lambda p: (p.write_text(json.dumps(_dicts.audit()).replace('"n": 160', '"n": 160, "x": NaN')), p)[1], "NaN"),
    (lambda p: (p.write_text("[1, 2]"), p)[1], "not a stratalab result"),
    (lambda p: (p.write_text('{"hello": 1}'), p)[1], "not a stratalab result file"),
    (lambda p: (p.write_text('{"invocation": {"command": "pretrain"}}'), p)[1], "does not read"),
    (lambda p: (p.write_text('{"invocation": 3}'), p)[1], "'invocation' must be an object"),
    (lambda p: (p.write_text(json.dumps({**_dicts.d3m(), "rows": None})), p)[1], "incomplete or edited"),
    (lambda p: (p.write_text(json.dumps({k: v for k, v in _dicts.train().items() if k != "metrics"})), p)[1],
     "missing key 'metrics'"),
    (lambda p: (p.write_text(json.dumps({**_dicts.audit(), "worst_group_accuracy": "0.5"})), p)[1],
     "worst_group_accuracy must be a number, got '0.5'"),
    (lambda p: (p.write_text(json.dumps({**_dicts.george(), "runs": [{"seed": "zero", "rows": {}}]})), p)[1],
     "seed must be an integer"),
])
def test_bad_files_are_refused_with_the_file_named(tmp_path, make, message):
    path = make(tmp_path / "bad.json")
    with pytest.raises(ValueError, match=message) as e:
        load_result(path)
    assert "bad.json" in str(e.value)


def test_a_dict_with_nan_is_refused():
    d = _dicts.george()
    d["runs"][0]["rows"]["ERM"]["robust_accuracy"] = float("nan")
    with pytest.raises(ValueError, match=r"runs\[0\]\.rows\.ERM\.robust_accuracy is nan"):
        result_from_dict(d, "g.json")


def test_summarise_over_many_files_keeps_each_file_apart():
    a, b = result_from_dict(_dicts.george(), "a.json"), result_from_dict(_dicts.george(), "b.json")
    s = summarise(pd.concat([a.records(), b.records()]))
    assert len(s) == 2 * len(a.summary()) and list(s["source"].unique()) == ["a.json", "b.json"]
    assert summarise(a.records().iloc[:0]).empty


# ---------------------------------------------------------------------- real runs through the CLI
runner = CliRunner()


def test_a_real_d3m_run_reads_back_to_its_own_table(tmp_path):
    out = tmp_path / "d3m.json"
    res = runner.invoke(app, ["run", "d3m", "--dataset", "synthetic-gmm", "--model", "linear", "--epochs", "8", "--lr", "0.05",
                              "--proj-dim", "6", "--sweep-points", "3", "--seeds", "0,1", "--methods", "erm,d3m,gdro",
                              "-o", str(out)])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    r = load_result(out)
    assert (r.kind, r.dataset, r.seeds()) == ("run d3m", "synthetic-gmm", [0, 1])
    summ = r.summary().set_index(["method", "metric"])
    for row in d["table"]:
        assert summ.loc[(row["method"], "test_wga"), "mean"] == pytest.approx(row["wga_mean"], rel=1e-12)
        assert summ.loc[(row["method"], "test_wga"), "std"] == pytest.approx(row["wga_std"], rel=1e-12, abs=1e-15)
        assert summ.loc[(row["method"], "test_balanced"), "mean"] == pytest.approx(row["balanced_mean"], rel=1e-12)
        assert summ.loc[(row["method"], "n_removed"), "mean"] == row["removed_mean"]
    rec = r.records()
    for row in d["rows"]:
        assert _value(rec, method=row["method"], seed=row["seed"], metric="test_wga") == row["test_wga"]
        assert _value(rec, method=row["method"], seed=row["seed"], metric="val_wga") == row["val_wga"]
    assert r.labels_used() == {"erm": "group labels train / val: no / no", "d3m": "group labels train / val: no / yes",
                               "gdro": "group labels train / val: yes / yes"}
    assert len(r.group_tables()) == 3


def test_a_real_audit_reads_back(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    g = 2 * y + rng.integers(0, 2, 300)
    p = np.where((g == 3) & (rng.random(300) < 0.6), 1 - y, y)
    pd.DataFrame({"label": y, "pred": p, "group": g}).to_csv(tmp_path / "preds.csv", index=False)
    res = runner.invoke(app, ["audit", str(tmp_path / "preds.csv"), "--y", "label", "--pred", "pred", "--group", "group",
                              "--bootstrap", "100", "-o", str(tmp_path / "audit.json")])
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "audit.json").read_text())
    r = load_result(tmp_path / "audit.json")
    assert r.kind == "audit" and r.dataset == str(tmp_path / "preds.csv")
    rec = r.records().set_index("metric")
    assert rec.loc["wga", "value"] == d["worst_group_accuracy"]
    assert [rec.loc["wga", "ci_low"], rec.loc["wga", "ci_high"]] == d["intervals"]["worst_group_accuracy"]
    (gt,) = r.group_tables()
    assert gt.table["group"].iloc[gt.worst] == "3"


def test_cifar_b_records_are_the_clean_metrics_and_the_mean_over_corruptions(tmp_path):
    d = _dicts.cifar_b()
    res = load_result(_dicts.write(tmp_path, "c.json", d))
    rec = res.records()
    for (aug, seed), macro in _dicts.CIFAR_B_MACRO.items():
        assert _value(rec, method=aug, seed=seed, metric="test_macro_std") == macro
        assert _value(rec, method=aug, seed=seed, metric="test_wga") == pytest.approx(0.6 + macro)
        assert _value(rec, method=aug, seed=seed, metric="corrupted_test_macro_std") == pytest.approx(2 * macro + 0.003)
    tables = res.group_tables()
    assert len(tables) == 2 and tables[0].worst == 2  # cat: the lowest worst-subgroup accuracy
    assert res.method_names() == {"flip_crop": "Standard (flip + crop)", "cutmix": "CutMix"}
