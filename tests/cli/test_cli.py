import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from stratalab.cli.main import app
from tests.conftest import write_npz_without_groups

runner = CliRunner()


@pytest.fixture
def preds(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    g = 2 * y + rng.integers(0, 2, n)
    p = np.where((g == 1) & (rng.random(n) < 0.5), 1 - y, y)  # group 1 is half wrong
    df = pd.DataFrame({"label": y, "prediction": p, "grp": g, "score": np.where(p == 1, 0.8, 0.2)})
    path = tmp_path / "preds.csv"
    df.to_csv(path, index=False)
    return path, df


def test_audit_json_has_required_keys_and_values(preds, tmp_path):
    path, df = preds
    out = tmp_path / "report.json"
    res = runner.invoke(app, ["audit", str(path), "--y", "label", "--pred", "prediction", "--group", "grp",
                              "--json", "--output", str(out), "--plot", str(tmp_path / "fig.png")])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    for k in ("average_accuracy", "balanced_accuracy", "worst_group_accuracy", "worst_class_accuracy",
              "weighted_std", "macro_std", "groups"):
        assert k in d
    assert d["average_accuracy"] == pytest.approx((df.label == df.prediction).mean())
    worst = min(d["groups"], key=lambda r: r["accuracy"])
    assert worst["group"] == 1 and set(worst) >= {"class", "group", "n", "accuracy"}
    assert json.loads(out.read_text())["worst_group_accuracy"] == d["worst_group_accuracy"]
    png = (tmp_path / "fig.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_audit_tables_parquet_and_bootstrap(preds, tmp_path):
    path, df = preds
    pq = tmp_path / "preds.parquet"
    df.to_parquet(pq)
    res = runner.invoke(app, ["audit", str(pq), "--y", "label", "--pred", "prediction", "--group", "grp",
                              "--score", "score", "--bootstrap", "200", "-o", str(tmp_path / "t.csv")])
    assert res.exit_code == 0, res.output
    assert "worst-group accuracy" in res.output and "95% CI" in res.output and "auroc" in res.output
    t = pd.read_csv(tmp_path / "t.csv")
    assert {"accuracy_low", "accuracy_high", "loss", "auroc"} <= set(t.columns)


@pytest.mark.parametrize(
    "mutate, args, message",
    [
        (None, ["--group", "nope"], "no column 'nope'"),
        (lambda d: d.assign(label=d.label.astype(float).where(d.index != 3)), [], "missing value"),
        (lambda d: d.assign(label=d.label + 0.5), [], "integer labels"),
        (lambda d: d.assign(label=["x"] * len(d)), [], "integer labels"),
    ],
)
def test_audit_bad_input_exits_with_one_clear_line(preds, tmp_path, mutate, args, message):
    path, df = preds
    if mutate is not None:
        path = tmp_path / "bad.csv"
        mutate(df).to_csv(path, index=False)
    base = ["audit", str(path), "--y", "label", "--pred", "prediction", "--group", "grp"]
    if args:
        base = base[:-2] + args
    res = runner.invoke(app, base)
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output
    assert len([ln for ln in res.output.splitlines() if ln.strip()]) <= 3


def test_audit_missing_file(tmp_path):
    res = runner.invoke(app, ["audit", str(tmp_path / "none.csv"), "--y", "a", "--pred", "b", "--group", "c"])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_datasets_list_and_show():
    res = runner.invoke(app, ["datasets", "--json"])
    assert res.exit_code == 0
    assert "u-digits" in [d["name"] for d in json.loads(res.stdout)]
    res = runner.invoke(app, ["datasets", "show", "u-digits", "--json"])
    assert res.exit_code == 0
    d = json.loads(res.stdout)
    assert d["sizes"] == {"train": 1001, "val": 359, "test": 359}
    res = runner.invoke(app, ["datasets", "show", "u-digits", "--option", "rare_keep=0.5"])
    assert res.exit_code == 0 and "total" in res.output
    res = runner.invoke(app, ["datasets", "show", "u-mnist", "--data-dir", "/nonexistent"])
    assert res.exit_code == 2 and "mnist.npz" in res.output


def test_demo_shows_rare_digit_as_worst_group():
    res = runner.invoke(app, ["demo", "--json", "--epochs", "40"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["worst_group"]["group"] == 8
    assert d["average_accuracy"] > 0.9 and d["worst_group_accuracy"] < d["average_accuracy"] - 0.1
    assert d["config"]["epochs"] == 40


def test_help_teaches():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "demo" in res.output and "audit" in res.output


def test_train_command_writes_run_json(tmp_path):
    out = tmp_path / "run.json"
    res = runner.invoke(app, ["train", "--dataset", "u-digits", "--method", "gdro", "--epochs", "2", "--select", "val_wga",
                              "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert "selected epoch" in res.output and "test: summary" in res.output
    d = json.loads(out.read_text())
    assert d["config"]["method"] == "gdro" and d["config"]["seed"] == 0
    assert len(d["history"]) == 2 and d["selected_epoch"] in (1, 2)
    assert d["labels_used"]["train_groups"] == "true train groups"
    assert {"val", "test"} == set(d["metrics"]) and "worst_group_accuracy" in d["metrics"]["test"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "mixture"], "needs mixture_ratio"),
        (["--method", "magic"], "unknown method"),
        (["--select", "val_magic"], "select must be one of"),
    ],
)
def test_train_refuses_bad_options(args, message):
    res = runner.invoke(app, ["train", "--dataset", "u-digits", "--epochs", "1", *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_train_refuses_group_methods_without_groups(tmp_path):
    write_npz_without_groups(tmp_path / "nogroups.npz", n_features=4)
    for method, message in (("gdro", "needs train group labels"), ("dfr", "DFR needs a held-out split with group labels")):
        res = runner.invoke(app, ["train", "--dataset", str(tmp_path / "nogroups.npz"), "--method", method, "--epochs", "1"])
        assert res.exit_code == 2 and message in res.output, res.output
    res = runner.invoke(app, ["train", "--dataset", str(tmp_path / "nogroups.npz"), "--model", "linear", "--epochs", "2",
                              "--json"])
    assert res.exit_code == 0, res.output


def test_piped_output_is_not_cut_to_80_columns():
    """Without a terminal (a pipe, a log file, this test) tables keep their natural width: rich's
    default of 80 columns cut headers to "lambd..." and "minor..." (issue 23)."""
    from rich.table import Table

    from stratalab.cli import main

    table = Table(*[f"a long column header number {i}" for i in range(6)])
    table.add_row(*["x" * 20 for _ in range(6)])
    with main.console.capture() as cap:
        main.console.print(table)
    text = cap.get()
    assert "…" not in text and "a long column header number 5" in text
    assert max(len(line) for line in text.splitlines()) > 80


def test_the_example_predictions_file_audits_and_shows_the_rare_eights():
    """examples/predictions.csv (README's first try of `stratalab audit`) loads, and its worst
    subgroup is the rare digit 8, as the README says."""
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from stratalab.cli.main import app

    path = Path(__file__).resolve().parents[2] / "examples" / "predictions.csv"
    res = CliRunner().invoke(app, ["audit", str(path), "--y", "label", "--pred", "prediction", "--group", "digit",
                                   "--score", "p1", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    worst = min(rep["groups"], key=lambda r: r["accuracy"])
    assert worst["group"] == 8 and rep["n"] == 359
    assert rep["worst_group_accuracy"] < rep["average_accuracy"] - 0.3


def test_a_library_warning_is_one_plain_line_printed_once(tmp_path):
    """A group absent from test was reported as a raw Python UserWarning (file and source line),
    printed twice; now one "warning: ..." line."""
    import numpy as np
    from typer.testing import CliRunner

    from stratalab.cli.main import app

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 80), ("val", 40), ("test", 40)):
        y = np.arange(n) % 2
        g = y * 2 + (np.arange(n) // 2) % 2
        if split == "test":
            g = np.where(g == 3, 2, g)  # group 3 exists in train and val, not in test
        arrays.update({f"x_{split}": rng.standard_normal((n, 4)).astype(np.float32), f"y_{split}": y, f"g_{split}": g})
    np.savez(tmp_path / "d.npz", **arrays)
    res = CliRunner().invoke(app, ["train", "--dataset", str(tmp_path / "d.npz"), "--epochs", "2"])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if "have no evaluated example" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: "), res.output
    assert "UserWarning" not in res.output and "warnings.warn" not in res.output


def test_json_output_says_where_it_wrote_on_stderr(tmp_path):
    """With --json and -o, stdout is the JSON alone and stderr says where the file went (some
    commands said nothing)."""
    import json

    from typer.testing import CliRunner

    from stratalab.cli.main import app

    out = tmp_path / "run.json"
    res = CliRunner().invoke(app, ["train", "--dataset", "u-digits", "--epochs", "1", "--json", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["invocation"]["command"] == "train"
    assert f"wrote {out}" in res.stderr and out.is_file()
