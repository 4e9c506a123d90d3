"""Bad input at the door: one clear line, exit code 2, no traceback, and no training before the
error (every option and output path is checked before any work)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stratalab.cli.main import app

runner = CliRunner()
DIGITS = ["--dataset", "u-digits", "--epochs", "1"]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "predictions.csv"


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if any model is trained (the error must come before the work)."""
    import stratalab.train.loop as loop

    def refuse(*a, **k):
        raise AssertionError("training started before the bad option was refused")

    monkeypatch.setattr(loop, "make_optimizer", refuse)  # every training run (fit) starts here


def _bad_cases(tmp):
    feats_bad = tmp / "feats.npz"
    np.savez(feats_bad, train=np.zeros((3, 2)), val=np.zeros((3, 2)))
    garbage = tmp / "garbage.npz"
    garbage.write_bytes(b"not a zip" * 20)
    a_file = tmp / "a_file"
    a_file.write_text("x")
    missing = tmp / "no" / "such" / "folder"
    return [
        (["train", *DIGITS, "--output", str(missing / "r.json")], "does not exist"),
        (["train", *DIGITS, "--output", str(tmp / "run.csv")], "use .json"),
        (["train", *DIGITS, "--output", str(tmp)], "is a directory"),
        (["train", *DIGITS, "--checkpoint-dir", str(a_file)], "is a file"),
        (["train", *DIGITS, "--width", "0"], "width must be a finite number > 0"),
        (["train", *DIGITS, "--width", "-3"], "width must be a finite number > 0"),
        (["train", *DIGITS, "--lr", "inf"], "lr must be a finite number"),
        (["train", *DIGITS, "--lr", "nan"], "lr must be a finite number"),
        (["train", *DIGITS, "--epochs", "0"], "epochs must be >= 1"),
        (["train", *DIGITS, "--seed", "99999999999999999999"], "seed must be"),
        (["train", *DIGITS, "--method", "bogus"], "unknown method 'bogus'"),
        (["train", *DIGITS, "--model", "bogus"], "unknown model 'bogus'"),
        (["train", *DIGITS, "--method", "mixture"], "needs mixture_ratio"),
        (["train", *DIGITS, "--select", "val_worst_estimated"], "run george"),
        (["train", *DIGITS, "--select", "bogus"], "select must be one of"),
        (["train", "--dataset", str(tmp / "x.npz")], "does not exist"),
        (["train", "--dataset", str(tmp)], "is a directory"),
        (["train", "--dataset", str(garbage)], "not a readable .npz"),
        (["train", "--epochs", "1"], "give --dataset"),
        (["train", *DIGITS, "--config", str(tmp / "none.yaml")], "does not exist"),
        (["train", *DIGITS, "--option", "=3"], "key=value"),
        (["run", "george", *DIGITS, "--reducer", "bogus"], "reducer must be one of"),
        (["run", "george", *DIGITS, "--seeds", "abc"], "--seeds takes comma-separated"),
        (["run", "george", *DIGITS, "--seeds", "1,1"], "twice"),
        (["run", "george", *DIGITS, "--features", str(feats_bad)], "lacks array 'test'"),
        (["run", "george", *DIGITS, "--features", str(garbage)], "not a readable .npz"),
        (["run", "george", *DIGITS, "--plot", str(missing / "f.png")], "does not exist"),
        (["run", "george", *DIGITS, "--plot", str(tmp / "f.txt")], "unknown format"),
        (["run", "d3m", *DIGITS, "--removed", str(tmp / "x.txt")], "unknown format"),
        (["run", "d3m", *DIGITS, "--figure", str(missing / "f.png")], "does not exist"),
        (["run", "d3m", *DIGITS, "--auto", "--figure", str(tmp / "f.png")], "needs the d3m row"),
        (["run", "d3m", *DIGITS, "--methods", "erm,jtt", "--removed", str(tmp / "r.csv")], "include d3m"),
        (["run", "d3m", *DIGITS, "--scores", str(tmp / "tau.txt")], "use .npy"),
        (["run", "d3m", *DIGITS, "--methods", "erm,bogus"], "unknown method 'bogus'"),
        (["run", "d3m", *DIGITS, "--trak-models", "2", "--trak-alpha", "0"], "alpha must be in (0, 1]"),
        (["run", "d3m", *DIGITS, "--methods", "erm,jtt,erm"], "methods lists 'erm' twice"),
        # refused before any work (these trained first, or ended in MemoryError / ran until killed)
        (["run", "d3m", *DIGITS, "--beta", "nan"], "beta (the soft maximum's temperature, eq. 3) must be a finite number > 0"),
        (["run", "d3m", *DIGITS, "--fraction", "1.0"], "fraction (AUTO-D3M's share"),
        (["run", "d3m", *DIGITS, "--proj-dim", "1000000000000"], "needs about"),
        (["run", "d3m", *DIGITS, "--work-dir", "/proc/wd"], "cannot hold results"),
        (["train", *DIGITS, "--width", "1e12"], "needs about"),
        (["train", "--dataset", "u-digits", "--epochs", "99999999999999999999999"], "epochs must be at most 100,000"),
        (["run", "scaling", "--finetune", "half"], "finetune must be one of full, last_layer"),
        (["run", "scaling", "--dataset", "u-digits", "--pretrain-dataset", "digits", "--model", "mlp", "--widths", "1e9"],
         "needs about"),
        (["audit", str(EXAMPLE), "--y", "label", "--pred", "prediction", "--group", "digit", "--bootstrap", "10000000000000"],
         "needs about"),
        # options that have no effect in the chosen setting are refused, naming the reason
        (["train", *DIGITS, "--gdro-eta", "0.1"], "--gdro-eta has no effect with --method erm (it is read by gdro)"),
        (["train", *DIGITS, "--method", "gdro", "--jtt-epochs", "2"], "--jtt-epochs has no effect with --method gdro"),
        (["train", *DIGITS, "--mixture-ratio", "2"], "--mixture-ratio has no effect with --method erm"),
        (["run", "d3m", *DIGITS, "--trak-alpha", "0.3"], "--trak-alpha has no effect with one TRAK model"),
        (["run", "d3m", *DIGITS, "--search-points", "3"], "--search-points has no effect with --removal negative"),
        (["run", "scaling", "--pretrain-epochs", "0", "--pretrain-option", "n_train=100"], "--pretrain-option has no effect"),
        (["run", "scaling", "--methods", "erm", "--mixture-ratio", "3"], "--mixture-ratio has no effect without mixture"),
        (["spectral", "--features", str(a_file), "--epochs", "3", "--split", "val"], "--epochs has no effect with --features"),
        (["run", "scaling", "--methods", "erm,erm"], "methods lists 'erm' twice"),
        (["run", "scaling", "--widths", "1,2,1"], "widths lists 1.0 twice"),
        (["run", "cifar-b", "--severities", "1,1"], "severities lists 1 twice"),
        (["run", "cifar-b", "--corruptions", "fog,fog"], "corruptions lists 'fog' twice"),
        (["run", "cifar-b", "--flowaug-sigma", "0.5"], "--flowaug-sigma has no effect without flowaug in --augment"),
        (["run", "cifar-b", "--augment", "flowaug", "--flowaug-objective", "mix+std", "--flowaug-sigma", "0.5"],
         "--flowaug-sigma has no effect without Algorithm 1 (gauss)"),
        (["run", "cifar-b", "--augment", "flowaug", "--flowaug-pairs", "same_class"],
         "--flowaug-pairs has no effect without Algorithm 2 (mix)"),
        (["run", "d3m", *DIGITS, "--weighting", "bogus"], "weighting must be one of"),
        (["audit", str(tmp), "--y", "a", "--pred", "b", "--group", "c"], "is a directory"),
        (["audit", str(a_file), "--y", "a", "--pred", "b", "--group", "c"], "unknown format"),
        (["rerun", str(tmp / "none.json")], "does not exist"),
    ]


def test_every_bad_option_is_refused_at_the_door(tmp_path, no_training):
    for args, message in _bad_cases(tmp_path):
        res = runner.invoke(app, args)
        out = res.output
        assert res.exit_code == 2, (args, out)
        assert isinstance(res.exception, SystemExit), (args, repr(res.exception))
        assert "Traceback" not in out and message in out, (args, out)
        assert out.strip().startswith("error:") and len(out.strip().splitlines()) <= 3, (args, out)
    assert not (tmp_path / "run.csv").exists()  # nothing half-written where JSON was refused


def test_audit_score_refuses_multiclass_labels(tmp_path):
    import pandas as pd

    pd.DataFrame({"y": [0, 1, 2, 2], "p": [0, 1, 2, 1], "g": [0, 0, 1, 1], "s": [0.1, 0.9, 0.5, 0.5]}).to_csv(
        tmp_path / "p.csv", index=False)
    res = runner.invoke(app, ["audit", str(tmp_path / "p.csv"), "--y", "y", "--pred", "p", "--group", "g", "--score", "s"])
    assert res.exit_code == 2 and "binary task" in res.output and "3 labels" in res.output


class _Payload:
    """A pickle that would create a file when unpickled (a crafted checkpoint)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_or_truncated_checkpoint_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    ck = tmp_path / "ck"
    ck.mkdir()
    torch.save({"config": _Payload(str(marker))}, ck / "last.pt")
    res = runner.invoke(app, ["train", *DIGITS, "--checkpoint-dir", str(ck)])
    assert res.exit_code == 2 and "not a readable stratalab checkpoint" in res.output, res.output
    assert not marker.exists()
    (ck / "last.pt").write_bytes(b"PK\x03\x04truncated")
    res = runner.invoke(app, ["train", *DIGITS, "--checkpoint-dir", str(ck)])
    assert res.exit_code == 2 and "not a readable stratalab checkpoint" in res.output, res.output
    torch.save({"some": torch.zeros(2)}, ck / "last.pt")  # loadable, but not ours
    res = runner.invoke(app, ["train", *DIGITS, "--checkpoint-dir", str(ck)])
    assert res.exit_code == 2 and "not a stratalab checkpoint" in res.output, res.output


def test_own_checkpoint_resumes_with_weights_only(tmp_path):
    ck = tmp_path / "ck"
    first = runner.invoke(app, ["train", "--dataset", "u-digits", "--epochs", "2", "--checkpoint-dir", str(ck), "--json"])
    assert first.exit_code == 0, first.output
    from stratalab.train.loop import load_checkpoint

    state = load_checkpoint(ck / "last.pt")
    assert state["epoch"] == 2
    again = runner.invoke(app, ["train", "--dataset", "u-digits", "--epochs", "2", "--checkpoint-dir", str(ck), "--json"])
    assert again.exit_code == 0
    assert json.loads(again.stdout)["metrics"] == json.loads(first.stdout)["metrics"]


def test_result_files_have_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        res = runner.invoke(app, ["train", "--dataset", "u-digits", "--epochs", "1", "-o", str(tmp_path / "r.json")])
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644


def test_rerun_reproduces_a_train_result_and_config_file_round_trips(tmp_path):
    out = tmp_path / "run.json"
    res = runner.invoke(app, ["train", "--dataset", "u-digits", "--epochs", "2", "--method", "upweighting", "--seed", "3",
                              "--option", "rare_keep=0.5", "-o", str(out)])
    assert res.exit_code == 0, res.output
    rec = json.loads(out.read_text())
    assert rec["invocation"]["config"]["method"] == "upweighting" and rec["invocation"]["dataset_options"] == {"rare_keep": 0.5}
    again = runner.invoke(app, ["rerun", str(out), "--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["reproduced"] and summary["numbers_compared"] > 20 and summary["max_abs_difference"] == 0.0
    # a tampered number is caught
    rec["metrics"]["test"]["average_accuracy"] += 0.01
    out.write_text(json.dumps(rec))
    bad = runner.invoke(app, ["rerun", str(out), "--json"])
    assert bad.exit_code == 1 and json.loads(bad.stdout)["differing"] == 1
    # a result whose every metric is NaN is not "reproduced" (abs(nan - x) > tol is False)
    out.write_text(json.dumps({**rec, "metrics": json.loads(json.dumps(rec["metrics"]), parse_float=lambda _: float("nan"))}))
    nan = runner.invoke(app, ["rerun", str(out), "--json"])
    assert nan.exit_code == 1, nan.output
    nan_summary = json.loads(nan.stdout, parse_constant=lambda c: pytest.fail(f"--json printed {c}, not strict JSON"))
    assert not nan_summary["reproduced"] and nan_summary["differing"] >= 20
    assert nan_summary["max_abs_difference"] is None and nan_summary["differences"][0]["recorded"] is None
    # --config: a YAML file, overridden by an explicit option
    (tmp_path / "c.yaml").write_text("dataset: u-digits\ndataset_options: {rare_keep: 0.5}\n"
                                     "config: {method: upweighting, epochs: 2, seed: 3}\n")
    via_yaml = runner.invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--json"])
    assert via_yaml.exit_code == 0, via_yaml.output
    assert json.loads(via_yaml.stdout)["metrics"]["test"]["average_accuracy"] == pytest.approx(
        rec["metrics"]["test"]["average_accuracy"] - 0.01)
    over = runner.invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--epochs", "1", "--json"])
    assert json.loads(over.stdout)["config"]["epochs"] == 1 and json.loads(over.stdout)["config"]["method"] == "upweighting"
    wrong = runner.invoke(app, ["run", "george", "--config", str(out)])
    assert wrong.exit_code == 2 and "written for `stratalab train`" in wrong.output


def test_bias_unsupervised_selection_from_the_cli(tmp_path):
    res = runner.invoke(app, ["train", "--dataset", "u-digits", "--epochs", "2", "--select", "bias_unsupervised", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert "bias proxy" in d["labels_used"]["selection"]
    assert all("bias_unsupervised" in h["selection"] for h in d["history"])


def test_outputs_never_overwrite_inputs_and_options_are_typed(tmp_path, no_training):
    import pandas as pd

    pd.DataFrame({"y": [0, 1], "p": [0, 1], "g": [0, 1]}).to_csv(tmp_path / "p.csv", index=False)
    before = (tmp_path / "p.csv").read_bytes()
    cases = [
        (["audit", str(tmp_path / "p.csv"), "--y", "y", "--pred", "p", "--group", "g", "-o", str(tmp_path / "p.csv")],
         "would be overwritten"),
        (["datasets", "show", "u-digits", "--option", "rare_keep=abc"], "must be a number"),
        (["datasets", "show", "u-digits", "--seed", "-1"], "seed must be"),
        (["run", "d3m", *DIGITS, "--methods", ","], "lists no method"),
    ]
    for args, message in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and message in res.output, (args, res.output)
    assert (tmp_path / "p.csv").read_bytes() == before


def test_damaged_own_checkpoint_is_refused(tmp_path):
    ck = tmp_path / "ck"
    assert runner.invoke(app, ["train", "--dataset", "u-digits", "--epochs", "2", "--checkpoint-dir", str(ck)]).exit_code == 0
    state = torch.load(ck / "last.pt", weights_only=True)
    state["epoch"] = 999
    torch.save(state, ck / "last.pt")
    res = runner.invoke(app, ["train", "--dataset", "u-digits", "--epochs", "2", "--checkpoint-dir", str(ck)])
    assert res.exit_code == 2 and "damaged" in res.output, res.output
    state["epoch"] = 2
    state["model"] = {k: v[:1] for k, v in state["model"].items()}
    torch.save(state, ck / "last.pt")
    res = runner.invoke(app, ["train", "--dataset", "u-digits", "--epochs", "2", "--checkpoint-dir", str(ck)])
    assert res.exit_code == 2 and "does not fit this model" in res.output, res.output
    (ck / "last.pt").unlink()
    (ck / "last.pt").mkdir()
    res = runner.invoke(app, ["train", "--dataset", "u-digits", "--epochs", "2", "--checkpoint-dir", str(ck)])
    assert res.exit_code == 2 and "is not a file" in res.output, res.output


def test_review_fixes_rerun_from_elsewhere_and_config_protection(tmp_path, monkeypatch):
    """A relative --data-dir is recorded absolute (rerun works from another folder); --config and
    a rerun's record are inputs that -o must not overwrite; an infinite integer setting is named."""
    import shutil

    from tests.conftest import shared_file

    mnist = shared_file("mnist.npz")
    work = tmp_path / "a"
    (work / "data").mkdir(parents=True)
    shutil.copy(mnist, work / "data" / "mnist.npz")
    monkeypatch.chdir(work)
    res = runner.invoke(app, ["train", "--dataset", "spurious-mnist", "-d", "data", "--option", "n_train=300",
                              "--option", "n_eval=40", "--epochs", "1", "-o", str(tmp_path / "sm.json")])
    assert res.exit_code == 0, res.output
    monkeypatch.chdir(tmp_path)  # another folder: the recorded data dir is absolute
    rr = runner.invoke(app, ["rerun", str(tmp_path / "sm.json"), "--json"])
    assert rr.exit_code == 0 and json.loads(rr.stdout)["reproduced"], rr.output
    (tmp_path / "inf.yaml").write_text("dataset: u-digits\nconfig: {epochs: .inf}\n")
    bad = runner.invoke(app, ["train", "--config", str(tmp_path / "inf.yaml")])
    assert bad.exit_code == 2 and "epochs must be an integer" in bad.output, bad.output
    (tmp_path / "c.yaml").write_text("dataset: u-digits\nconfig: {epochs: 1}\n")
    clash = runner.invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "c.yaml")])
    assert clash.exit_code == 2 and "would be overwritten" in clash.output
    ok = runner.invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "r.json")])
    assert ok.exit_code == 0, ok.output
    again = runner.invoke(app, ["rerun", str(tmp_path / "r.json"), "-o", str(tmp_path / "r.json")])
    assert again.exit_code == 2 and "would be overwritten" in again.output
    wid = runner.invoke(app, ["train", "--dataset", "u-digits", "--config", str(tmp_path / "c.yaml"), "--width", "nan"])
    assert wid.exit_code == 2 and "width" in wid.output


@pytest.mark.parametrize("where", ["config_yaml", "config_json", "rerun", "report"])
def test_deeply_nested_files_are_refused_in_one_line(tmp_path, where):
    """A --config / rerun / report file nested thousands deep ended in "internal error: RecursionError"."""
    deep = "[" * 5000 + "]" * 5000
    if where == "config_yaml":
        path = tmp_path / "c.yaml"
        path.write_text("dataset: u-digits\nconfig: {epochs: " + deep + "}\n")
        args = ["train", "--config", str(path)]
    elif where == "config_json":
        path = tmp_path / "c.json"
        path.write_text('{"dataset": "u-digits", "config": {"epochs": ' + deep + "}}")
        args = ["train", "--config", str(path)]
    else:
        path = tmp_path / "r.json"
        path.write_text('{"invocation": {"command": "train", "x": ' + "[" * 100 + "]" * 100 + "}}")
        args = ["rerun", str(path)] if where == "rerun" else ["report", str(path), "-o", str(tmp_path / "r.html")]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "too deeply" in res.output or "levels deep" in res.output, res.output
    assert "Traceback" not in res.output and "RecursionError" not in res.output


@pytest.mark.parametrize("change, message", [
    (lambda inv: inv.pop("config"), "has no 'config' field"),
    (lambda inv: inv.pop("dataset"), "has no 'dataset' field"),
    (lambda inv: inv.update(config=3), "'config' must be a mapping of settings, got int"),
    (lambda inv: inv.update(dataset=["a", "b"]), "'dataset' must be a data set name"),
    (lambda inv: inv.update(data_dir=5), "'data_dir' must be a folder path, got int"),
    (lambda inv: inv.update(dataset_options=[1]), "'dataset_options' must be a mapping"),
])
def test_rerun_and_config_name_a_missing_or_mistyped_field(tmp_path, change, message):
    """A result file whose invocation lacks a field or has one of the wrong type: one line naming
    it (was "error: config", "error: dataset", "expected str, bytes or os.PathLike object, not int",
    'unknown data set "[\'a\', \'b\']"')."""
    out = tmp_path / "run.json"
    assert runner.invoke(app, ["train", *DIGITS, "-o", str(out)]).exit_code == 0
    rec = json.loads(out.read_text())
    change(rec["invocation"])
    out.write_text(json.dumps(rec))
    # a --config file may leave fields out (the command line gives them), but not mistype one
    for args in [["rerun", str(out)]] + ([] if "has no" in message else [["train", "--config", str(out)]]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output and "Traceback" not in res.output, (args, res.output)


def test_rerun_names_bad_seeds(tmp_path):
    out = tmp_path / "g.json"
    assert runner.invoke(app, ["run", "george", *DIGITS, "-o", str(out)]).exit_code == 0
    rec = json.loads(out.read_text())
    for seeds in (3, ["a"], []):
        rec["invocation"]["seeds"] = seeds
        out.write_text(json.dumps(rec))
        res = runner.invoke(app, ["rerun", str(out)])
        assert res.exit_code == 2 and "'seeds' must be" in res.output, res.output


def test_a_raw_pickle_weights_file_gets_one_whole_sentence(tmp_path):
    """A raw-pickle .pt printed torch's two-line warning and a message cut mid-sentence."""
    import pickle

    marker = tmp_path / "pwned"
    path = tmp_path / "w.pt"
    path.write_bytes(pickle.dumps({"config": _Payload(str(marker))}))
    res = runner.invoke(app, ["train", *DIGITS, "--init", str(path)])
    assert res.exit_code == 2, res.output
    assert "a raw pickle, which stratalab never unpickles" in res.output and "UserWarning" not in res.output, res.output
    assert "In PyTorch 2.6" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not marker.exists()


@pytest.mark.parametrize("text, args, message", [
    ("dataset: u-digits\nseeds: [1, 2]\nconfig:\n  epochs: 1\n", ["train"], "`stratalab train` takes one seed"),
    ("dataset: u-digits\nconfig:\n  train: 5\n", ["run", "george"], "'train' must be a mapping of training settings"),
    ("dataset: u-digits\nconfig:\n  train: [1]\n", ["run", "scaling"], "'train' must be a mapping of training settings"),
])
def test_a_config_file_the_command_cannot_run_as_written_is_refused(text, args, message, tmp_path):
    """Found in review (issue 19): train ran one of two seeds and recorded both (rerun then refused
    the file); a non-mapping `train:` block was silently ignored."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    res = CliRunner().invoke(app, [*args, "--config", str(cfg), "-o", str(tmp_path / "out.json")])
    assert res.exit_code == 2 and message in res.output and not (tmp_path / "out.json").exists(), res.output


@pytest.mark.parametrize("args", [["demo", "--audit-only", "--epochs", "1"],
                                  ["pretrain", "--dataset", "digits", "--epochs", "1", "-o", "w.pt"]])
def test_threads_below_one_is_a_user_error_not_a_bug(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, [*args, "--threads", "0"])
    assert res.exit_code == 2 and "--threads must be an integer >= 1" in res.output, res.output
