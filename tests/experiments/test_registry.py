"""The experiment registry (issue 19): every kind reruns, every run command takes --config, old
result files still read, and a new kind registered in one place is read by rerun and report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from stratalab.cli.main import app
from stratalab.experiments import EXPERIMENTS, Experiment, Invocation, Outcome, experiment, load_result
from stratalab.experiments.registry import register
from stratalab.report.results import Row

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "recorded"
_spec = importlib.util.spec_from_file_location("record", FIXTURES / "record.py")
record = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(record)  # type: ignore[union-attr]
runner = CliRunner()


def inputs(tmp_path: Path) -> dict[str, Path]:
    return {"images": record.tiny_images(tmp_path / "i.npz"), "features": record.tiny_features(tmp_path / "f.npz")}


def fixture_copy(name: str, tmp_path: Path) -> Path:
    """A recorded fixture whose input paths point at freshly made inputs in ``tmp_path``."""
    made = inputs(tmp_path)
    text = record.fixture(name).read_text()
    d = json.loads(text)

    def fix(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: fix(v) for k, v in o.items()}
        if isinstance(o, list):
            return [fix(v) for v in o]
        if isinstance(o, str) and o.endswith("tiny_images.npz"):
            return str(made["images"])
        if isinstance(o, str) and o.endswith("tiny_features.npz"):
            return str(made["features"])
        return o

    out = tmp_path / f"{name}.json"
    out.write_text(json.dumps(fix(d)))
    return out


def run_command(name: str, tmp_path: Path, *extra: str) -> Path:
    made = inputs(tmp_path)
    args = [a.format(**made) for a in record.COMMANDS[name]]
    out = tmp_path / f"{name}-new.json"
    res = runner.invoke(app, [*args, *extra, "--json", "-o", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_every_kind_is_registered_once_with_what_rerun_and_report_need():
    assert set(EXPERIMENTS) == {"train", "run george", "run d3m", "run scaling", "run cifar-b", "spectral", "audit"}
    assert {c.replace("run ", "run_").replace("-", "_") for c in EXPERIMENTS} == set(record.COMMANDS)
    for command, exp in EXPERIMENTS.items():
        assert exp.command == command and exp.result_keys and exp.recognise
    with pytest.raises(ValueError, match="already registered"):
        register(EXPERIMENTS["train"])
    with pytest.raises(ValueError, match="not an experiment kind; the kinds are: audit, run cifar-b, run d3m"):
        experiment("run nothing")


@pytest.mark.parametrize("name", sorted(record.COMMANDS))
def test_rerun_reproduces_a_result_of_every_kind_and_catches_a_changed_number(name, tmp_path):
    out = run_command(name, tmp_path)
    res = runner.invoke(app, ["rerun", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["reproduced"] and summary["numbers_compared"] > 10 and summary["command"] == json.loads(
        out.read_text())["invocation"]["command"]
    # one recorded result number changed by hand: the rerun says so
    d = json.loads(out.read_text())
    key = EXPERIMENTS[d["invocation"]["command"]].result_keys[0]
    d[key] = _bump_first_number(d[key])
    out.write_text(json.dumps(d))
    res = runner.invoke(app, ["rerun", str(out), "--json"])
    assert res.exit_code == 1 and json.loads(res.output)["differing"] == 1, res.output


def _bump_first_number(o: Any) -> Any:
    done = [False]

    def walk(v: Any) -> Any:
        if done[0]:
            return v
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            done[0] = True
            return v + 0.125
        return v

    return walk(o)


@pytest.mark.parametrize("name", ["train", "run_george", "run_d3m", "run_scaling", "run_cifar_b"])
def test_rerun_reads_results_recorded_before_the_registry(name, tmp_path):
    """Files written before the one invocation shape (scaling and cifar-b kept the data set and
    seeds in their config, train its seed) rerun to the same numbers."""
    res = runner.invoke(app, ["rerun", str(fixture_copy(name, tmp_path)), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["reproduced"]


@pytest.mark.parametrize("name, shape", [("run_george", "old"), ("run_d3m", "old"), ("run_scaling", "old"),
                                         ("run_cifar_b", "old"), ("run_george", "new"), ("run_scaling", "new"),
                                         ("run_cifar_b", "new")])
def test_config_works_for_every_run_command(name, shape, tmp_path):
    """`run X --config RESULT.json` runs what the result records: a file recorded before the
    registry and composed configs (old), or one written by today's code (new)."""
    src = fixture_copy(name, tmp_path) if shape == "old" else run_command(name, tmp_path)
    command = json.loads(src.read_text())["invocation"]["command"].split()
    out = tmp_path / "again.json"
    res = runner.invoke(app, [*command, "--config", str(src), "--json", "-o", str(out)])
    assert res.exit_code == 0, res.output
    old, new = json.loads(src.read_text()), json.loads(out.read_text())
    for key in EXPERIMENTS[" ".join(command)].result_keys:
        assert _strip_seconds(old[key]) == _as_recorded(_strip_seconds(old[key]), _strip_seconds(new[key])), key


def _as_recorded(old: Any, new: Any) -> Any:
    """``new`` without the fields its records gained after ``old`` was written (e.g. a scaling run's
    ``curve_epochs``): every field the file has must come back the same, new fields are not
    compared (as `stratalab rerun` does)."""
    if isinstance(old, dict) and isinstance(new, dict) and old:
        return {k: _as_recorded(old.get(k), v) for k, v in new.items() if k in old}
    if isinstance(old, list) and isinstance(new, list):
        return [_as_recorded(a, b) for a, b in zip(old, new)] + new[len(old):]
    return new


def _strip_seconds(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _strip_seconds(v) for k, v in o.items() if k != "seconds" and not k.endswith("_seconds")}
    if isinstance(o, list):
        return [_strip_seconds(v) for v in o]
    return o


def test_an_option_given_beside_config_overrides_it(tmp_path):
    src = fixture_copy("run_scaling", tmp_path)
    out = tmp_path / "one.json"
    res = runner.invoke(app, ["run", "scaling", "--config", str(src), "--epochs", "1", "--widths", "1", "--json",
                              "-o", str(out)])
    assert res.exit_code == 0, res.output
    inv = json.loads(out.read_text())["invocation"]
    assert inv["config"]["train"]["epochs"] == 1 and inv["config"]["widths"] == [1.0]
    assert inv["config"]["methods"] == ["erm", "upsampling"] and inv["dataset"] == "u-digits" and inv["seeds"] == [0]


def test_an_invocation_round_trips_and_refuses_unknown_fields():
    inv = Invocation("run d3m", dataset="u-digits", seeds=[0, 2], configs={"config": {"epochs": 2}, "d3m_config": {}})
    assert Invocation.from_dict(inv.to_dict()) == inv
    with pytest.raises(ValueError, match="unknown key 'features' for `stratalab run d3m`"):
        Invocation.from_dict({**inv.to_dict(), "features": None})
    with pytest.raises(ValueError, match="'seeds' must be a non-empty list"):
        Invocation.from_dict({**inv.to_dict(), "seeds": []})
    with pytest.raises(ValueError, match="has no 'd3m_config' field"):
        Invocation.from_dict({k: v for k, v in inv.to_dict().items() if k != "d3m_config"})


def test_old_invocation_shapes_are_read_as_they_were_meant():
    """Before the one shape: a study kept its data set, options and seeds in its config; train its seed."""
    old = {"command": "run scaling", "config": {"dataset": "u-digits", "dataset_options": {"rare_keep": 0.5},
                                                "seeds": [3, 4], "epochs": 2}, "data_dir": None}
    inv = Invocation.from_dict(old)
    assert (inv.dataset, inv.dataset_options, inv.seeds) == ("u-digits", {"rare_keep": 0.5}, [3, 4])
    train = Invocation.from_dict({"command": "train", "dataset": "u-digits", "config": {"seed": 7, "epochs": 1}})
    assert train.seeds == [7]
    with pytest.raises(ValueError, match="takes one seed"):
        Invocation.from_dict({"command": "train", "dataset": "u-digits", "seeds": [1, 2], "config": {}})


class _Toy(Experiment):
    """A new kind, added in one place: it doubles a number."""

    command = "toy"
    result_keys = ("value",)
    recognise = frozenset({"value", "toy"})

    def run(self, inv: Invocation, **_: Any) -> Outcome:
        return Outcome({"invocation": inv.to_dict(), "toy": True, "value": 2 * inv.config["x"]})

    def records(self, raw: dict[str, Any]) -> list[Row]:
        return [("toy", "", -1, "value", float(raw["value"]), None)]

    def method_names(self, raw: dict[str, Any]) -> dict[str, str]:
        return {"toy": "the toy"}


def test_a_kind_registered_in_one_place_is_read_by_rerun_and_report(tmp_path):
    register(_Toy())
    try:
        out = _Toy().run(Invocation("toy", dataset="none", configs={"config": {"x": 3}})).payload
        path = tmp_path / "toy.json"
        path.write_text(json.dumps(out))
        assert load_result(path).records()["value"].tolist() == [6.0]
        res = runner.invoke(app, ["rerun", str(path), "--json"])
        assert res.exit_code == 0 and json.loads(res.output)["reproduced"], res.output
        page = runner.invoke(app, ["report", str(path), "-o", str(tmp_path / "toy.html")])
        assert page.exit_code == 0 and "the toy" in (tmp_path / "toy.html").read_text(), page.output
    finally:
        EXPERIMENTS.pop("toy")


@pytest.mark.parametrize("args", [
    ["train", "--dataset", "u-digits", "--epochs", "1"],
    ["spectral", "--dataset", "u-digits", "--epochs", "1", "--top-k", "2"],
])
def test_every_command_that_trains_sets_and_records_its_threads(args, tmp_path):
    """`--threads` on train and spectral (as on the grids): the run uses that many torch threads,
    the result records the count, the process keeps its own, and rerun uses the recorded count."""
    import torch

    before = torch.get_num_threads()
    seen: list[int] = []
    from stratalab.train import loop

    real = loop._train_epoch

    def spy(run, epoch):
        seen.append(torch.get_num_threads())
        return real(run, epoch)

    loop._train_epoch = spy
    try:
        out = tmp_path / "r.json"
        res = runner.invoke(app, [*args, "--threads", "1", "--json", "-o", str(out)])
        assert res.exit_code == 0, res.output
        assert json.loads(out.read_text())["invocation"]["backend"]["threads"] == 1
        assert seen and set(seen) == {1} and torch.get_num_threads() == before
        seen.clear()
        torch.set_num_threads(2)
        again = runner.invoke(app, ["rerun", str(out), "--json"])
        assert again.exit_code == 0 and json.loads(again.output)["reproduced"], again.output
        assert set(seen) == {1}
    finally:
        loop._train_epoch = real
        torch.set_num_threads(before)


def test_pretrain_records_its_threads(tmp_path):
    res = runner.invoke(app, ["pretrain", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--threads", "1",
                              "-o", str(tmp_path / "w.pt"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["threads"] == 1


def test_rerun_skips_only_fields_added_since_the_file_was_written():
    """`stratalab rerun` compares every number a file records; a field its records gained later
    (a scaling run's ``curve_epochs``) is not a difference, but a record the file lacks (one more
    run) or one more entry in a recorded list still is."""
    from stratalab.cli.results import added_fields

    recorded = {"runs[0].curve[0]": 0.5, "runs[0].test_wga": 0.4, "runs[1].curve[0]": 0.6, "table[0].wga_mean": 0.4}
    rerun_only = ["runs[0].curve_epochs[0]", "runs[1].curve_epochs[0]", "runs[2].curve[0]", "runs[0].curve[1]", "extra",
                  "table[0].wga_last_mean"]
    assert added_fields(recorded, rerun_only) == {"runs[0].curve_epochs[0]": "runs[*].curve_epochs",
                                                  "runs[1].curve_epochs[0]": "runs[*].curve_epochs",
                                                  "table[0].wga_last_mean": "table[*].wga_last_mean"}
    assert added_fields({}, ["runs[0].x"]) == {}  # nothing recorded: nothing is "added"
