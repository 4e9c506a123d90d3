"""`stratalab bench`: results of many files pooled per configuration over seeds, mean ± std and a
Student-t interval computed by hand here, duplicates counted once, audits keep their interval."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from stratalab.cli.main import app
from stratalab.experiments import load_result
from stratalab.report.bench import bench_table

from ._dicts import audit

runner = CliRunner()


def george_file(tmp_path, name, seeds_values, lr=1e-3):
    """A GEORGE result file: ``seeds_values`` = {seed: (robust, overall) of the GEORGE row}."""
    runs = [{"seed": s, "rows": {"ERM": {"robust_accuracy": 0.5, "overall_accuracy": 0.9},
                                 "GEORGE": {"robust_accuracy": r, "overall_accuracy": o}},
             "k_per_class": {}, "clusters_per_class": {}, "recovery": [], "recovery_overall": {}, "seconds": {}}
            for s, (r, o) in seeds_values.items()]
    d = {"invocation": {"command": "run george", "dataset": "u-digits", "dataset_options": {}, "data_dir": f"/data/{name}",
                        "seeds": list(seeds_values), "config": {"model": "mlp", "lr": lr}, "features": None},
         "dataset": "u-digits", "config": {"model": "mlp", "lr": lr}, "seeds": list(seeds_values), "table": [], "runs": runs,
         "labels_used": {}}
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return p


def row(table, method, metric, config=None):
    sub = table[(table["method"] == method) & (table["metric"] == metric)]
    if config is not None:
        sub = sub[sub["config"] == config]
    assert len(sub) == 1, sub
    return sub.iloc[0]


def test_files_of_one_configuration_pool_their_seeds(tmp_path):
    a = george_file(tmp_path, "a.json", {0: (0.70, 0.95), 1: (0.80, 0.96)})
    b = george_file(tmp_path, "b.json", {2: (0.75, 0.97)})  # same settings, another data folder: pooled
    table, dropped = bench_table([load_result(a), load_result(b)])
    r = row(table, "george", "test_wga")
    v = np.array([0.70, 0.80, 0.75])
    half = stats.t.ppf(0.975, 2) * v.std(ddof=1) / math.sqrt(3)
    assert (r["n"], r["seeds"], r["sources"]) == (3, "0,1,2", "a.json,b.json")
    assert r["mean"] == pytest.approx(0.75) and r["std"] == pytest.approx(v.std())
    assert r["ci_low"] == pytest.approx(0.75 - half) and r["ci_high"] == pytest.approx(0.75 + half)
    assert r["interval"] == "t, 2 df" and dropped == 0
    assert row(table, "george", "test_average")["mean"] == pytest.approx(0.96)


def test_another_setting_is_another_row_and_a_repeated_seed_counts_once(tmp_path):
    a = george_file(tmp_path, "a.json", {0: (0.70, 0.95), 1: (0.80, 0.96)})
    again = george_file(tmp_path, "again.json", {1: (0.10, 0.10)})  # seed 1 rerun: the first file read wins
    other = george_file(tmp_path, "other.json", {0: (0.20, 0.50)}, lr=1e-2)
    table, dropped = bench_table([load_result(p) for p in (a, again, other)])
    rows = table[(table["method"] == "george") & (table["metric"] == "test_wga")]
    assert len(rows) == 2
    assert dropped == 4  # seed 1 of again.json: ERM and GEORGE x 2 metrics
    first = rows.iloc[0]
    assert first["n"] == 2 and first["mean"] == pytest.approx(0.75)
    lone = rows.iloc[1]
    assert lone["n"] == 1 and lone["interval"] == "" and math.isnan(lone["ci_low"])


def test_interval_of_an_accuracy_is_clipped_to_0_1(tmp_path):
    a = george_file(tmp_path, "a.json", {0: (0.98, 0.99), 1: (1.0, 1.0)})
    r = row(bench_table([load_result(a)])[0], "george", "test_wga")
    assert r["ci_high"] == 1.0 and r["ci_low"] < 0.99


def test_a_single_audit_keeps_its_bootstrap_interval(tmp_path):
    p = tmp_path / "audit.json"
    d = audit()
    p.write_text(json.dumps(d))
    table, _ = bench_table([load_result(p)], metrics=["wga"])
    r = table.iloc[0]
    assert r["n"] == 1 and r["interval"] == "bootstrap (file)"
    assert (r["ci_low"], r["ci_high"]) == tuple(d["intervals"]["worst_group_accuracy"])
    assert r["mean"] == d["worst_group_accuracy"]


def test_bad_requests_are_named(tmp_path):
    a = load_result(george_file(tmp_path, "a.json", {0: (0.7, 0.9)}))
    with pytest.raises(ValueError, match="no file has metric 'test_wgaa'"):
        bench_table([a], metrics=["test_wgaa"])
    with pytest.raises(ValueError, match="confidence must be in"):
        bench_table([a], confidence=95)
    with pytest.raises(ValueError, match="at least one"):
        bench_table([])


def test_cli_reads_a_folder_skips_other_json_and_writes_csv_and_json(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    george_file(folder, "a.json", {0: (0.70, 0.95), 1: (0.80, 0.96)})
    george_file(folder, "b.json", {2: (0.75, 0.97)})
    (folder / "notes.json").write_text('{"hello": 1}')
    out = tmp_path / "bench.csv"
    r = runner.invoke(app, ["bench", str(folder), "--metric", "test_wga", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "notes.json" in r.output  # named as skipped
    df = pd.read_csv(out)
    assert df.loc[df["method"] == "george", "mean"].item() == pytest.approx(0.75)
    r = runner.invoke(app, ["bench", str(folder), "--metric", "test_wga", "--json"])
    payload = json.loads(r.stdout)
    assert payload["table"][0]["n"] == 3 and len(payload["files"]) == 2 and len(payload["skipped"]) == 1


@pytest.mark.parametrize("args, message", [
    (["bench", "missing.json"], "does not exist"),
    (["bench", "{a}", "--metric", "nope"], "no file has metric 'nope'"),
    (["bench", "{a}", "-o", "{a}"], "input of this command"),
    (["bench", "{a}", "-o", "table.xlsx"], "unknown format"),
    (["bench", "{a}", "--confidence", "1.5"], "confidence must be in"),
])
def test_cli_bad_input_is_one_clear_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    a = george_file(tmp_path, "a.json", {0: (0.7, 0.9)})
    r = runner.invoke(app, [x.format(a=a) for x in args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_one_seed_has_no_std_and_an_ari_interval_stays_in_its_range(tmp_path):
    """One seed was shown as "mean ± 0.0" (undefined, not 0); an ARI interval reached 1.07."""
    from stratalab.report.tables import bench_rich_table

    lone = george_file(tmp_path, "lone.json", {0: (0.70, 0.95)})
    table, _ = bench_table([load_result(lone)])
    r = row(table, "george", "test_wga")
    assert r["n"] == 1 and math.isnan(r["std"])
    from rich.console import Console

    console = Console(width=300)
    with console.capture() as cap:
        console.print(bench_rich_table(table, 0.95, 1))
    assert "70.0 (1 seed)" in cap.get() and "± 0.0" not in cap.get()
    p = george_file(tmp_path, "ari.json", {0: (0.7, 0.9), 1: (0.7, 0.9)})
    d = json.loads(p.read_text())
    for run, ari in zip(d["runs"], (0.95, 1.0)):
        run["recovery_overall"] = {"ari": ari, "nmi": ari}
    p.write_text(json.dumps(d))
    table, _ = bench_table([load_result(p)])
    aris = table[table["metric"].str.endswith("cluster_ari")]
    assert len(aris) >= 1 and (aris["ci_high"] <= 1.0).all() and (aris["ci_low"] < 0.95).all()
