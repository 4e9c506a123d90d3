"""The grid backend: results in order, stored atomically and reused (resume), weights read back
with weights_only, bad settings refused; the same results in this process and on Ray."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stratalab.experiments import backend as bk
from stratalab.experiments.backend import Backend, ResultStore, task_key

CALLS: list[int] = []


def square(x: int) -> dict:
    CALLS.append(x)
    return {"x": x, "y": x * x}


def fails_on(x: int, bad: str) -> dict:
    if Path(bad).exists() and x == 3:
        raise RuntimeError("task 3 crashed")
    CALLS.append(x)
    return {"y": x * x}


def with_weights(seed: int) -> dict:
    torch.manual_seed(seed)
    return {"weights": {"w": torch.randn(3, 2), "b": torch.zeros(2)}, "seed": seed}


def test_results_come_back_in_order_and_one_key_runs_once():
    CALLS.clear()
    tasks = [(task_key("sq", x=x), (x,)) for x in (3, 1, 2, 1)]
    out = Backend().map(square, tasks)
    assert [r["y"] for r in out] == [9, 1, 4, 1]
    assert CALLS == [3, 1, 2]  # the repeated key ran once


def test_task_key_is_stable_and_sees_every_part():
    a = task_key("t", cfg={"lr": 0.1, "epochs": 2}, seed=0, removed=np.array([1, 2]))
    assert a == task_key("t", seed=0, cfg={"epochs": 2, "lr": 0.1}, removed=np.array([1, 2]))  # order-free
    assert a != task_key("t", cfg={"lr": 0.1, "epochs": 2}, seed=1, removed=np.array([1, 2]))
    assert a != task_key("t", cfg={"lr": 0.1, "epochs": 2}, seed=0, removed=np.array([1, 3]))
    assert a != task_key("t", cfg={"lr": 0.1, "epochs": 2}, seed=0, removed=np.array([1, 2], dtype=np.int32))
    assert a.startswith("t-") and "/" not in a


def test_work_dir_resumes_a_half_done_grid(tmp_path):
    bad = tmp_path / "make-task-3-fail"
    bad.touch()
    wd = tmp_path / "work"
    tasks = [(task_key("f", x=x), (x, str(bad))) for x in range(6)]
    CALLS.clear()
    with pytest.raises(RuntimeError, match="task 3 crashed"):
        Backend(work_dir=wd).map(fails_on, tasks)
    assert CALLS == [0, 1, 2]
    assert len(list(wd.glob("*.json"))) == 3  # finished results are on disk, nothing of task 3
    bad.unlink()
    CALLS.clear()
    b = Backend(work_dir=wd)
    out = b.map(fails_on, tasks)
    assert CALLS == [3, 4, 5]  # only the unfinished tasks ran
    assert b.stats == {"run": 3, "reused": 3}
    assert [r["y"] for r in out] == [x * x for x in range(6)]
    CALLS.clear()
    assert Backend(work_dir=wd).map(fails_on, tasks) == out and CALLS == []


def test_a_damaged_result_is_run_again_not_trusted(tmp_path):
    CALLS.clear()
    key = task_key("sq", x=4)
    Backend(work_dir=tmp_path).map(square, [(key, (4,))])
    path = tmp_path / f"{key}.json"
    path.write_text(path.read_text()[:10])  # truncated
    assert Backend(work_dir=tmp_path).map(square, [(key, (4,))])[0]["y"] == 16
    other = task_key("sq", x=5)
    (tmp_path / f"{other}.json").write_text(path.read_text().replace(key, "someone-else"))
    assert ResultStore(tmp_path).get(other) is None  # a file must name its own key
    assert CALLS == [4, 4]


def test_weights_are_stored_beside_the_json_and_read_weights_only(tmp_path, monkeypatch):
    key = task_key("w", seed=1)
    first = Backend(work_dir=tmp_path).map(with_weights, [(key, (1,))])[0]
    body = json.loads((tmp_path / f"{key}.json").read_text())
    assert "weights" not in body and body["_weights"] is True
    seen = {}
    real_load = torch.load

    def spy(*a, **k):
        seen.update(k)
        return real_load(*a, **k)

    monkeypatch.setattr(torch, "load", spy)
    again = Backend(work_dir=tmp_path).map(with_weights, [(key, (1,))])[0]
    assert seen.get("weights_only") is True
    assert torch.equal(again["weights"]["w"], first["weights"]["w"]) and again["seed"] == 1
    (tmp_path / f"{key}.pt").write_bytes(b"not a torch file")
    assert ResultStore(tmp_path).get(key) is None  # unreadable weights: the task runs again


@pytest.mark.parametrize("kw, message", [
    (dict(kind="dask"), "backend must be one of local, ray"),
    (dict(address="auto"), "needs --backend ray"),
    (dict(retries=-1), "retries must be an integer >= 0"),
    (dict(num_cpus=0), "num_cpus must be an integer >= 1"),
    (dict(cpus_per_task=0), "cpus_per_task must be > 0"),
])
def test_bad_settings_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        Backend(**kw)


def test_work_dir_must_be_a_folder_in_an_existing_place(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        Backend(work_dir=f)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Backend(work_dir=tmp_path / "no" / "such")


def test_ray_missing_is_one_clear_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ValueError, match=r"pip install 'stratalab\[ray\]'"):
        Backend("ray")


def test_local_tasks_run_with_the_thread_count_asked_and_it_is_restored():
    before = torch.get_num_threads()

    def threads(_):
        return {"threads": torch.get_num_threads()}

    assert Backend(threads=1).map(threads, [("a", (0,))])[0]["threads"] == 1
    assert torch.get_num_threads() == before
    assert Backend().map(threads, [("b", (0,))])[0]["threads"] == before
    assert Backend(threads=1).to_dict()["threads"] == 1 and Backend().task_threads() is None
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        Backend(threads=0)


def test_progress_inside_a_task_reaches_the_local_caller():
    seen: list[str] = []

    def talk(x):
        bk.say(f"working on {x}")
        return {"x": x}

    Backend().map(talk, [("a", (1,)), ("b", (2,))], progress=seen.append)
    assert seen == ["working on 1", "working on 2"]
    bk.say("nobody listens")  # outside a map: dropped, no error


@pytest.mark.parametrize("extra, message", [
    (["--backend", "dask"], "backend must be one of local, ray"),
    (["--address", "auto"], "needs --backend ray"),
    (["--backend", "ray", "--address", "127.0.0.1:1"], "no Ray cluster answers at 127.0.0.1:1"),  # hung for 9.5 min
    (["--work-dir", "{file}"], "is a file"),
])
@pytest.mark.parametrize("command", [["run", "george", "--dataset", "u-digits"], ["run", "d3m", "--dataset", "u-digits"],
                                     ["run", "scaling", "--dataset", "u-digits", "--pretrain-dataset", "digits", "--model", "mlp"]])
def test_cli_refuses_a_bad_backend_before_any_training(tmp_path, monkeypatch, command, extra, message):
    from typer.testing import CliRunner

    import stratalab.train.methods as methods
    from stratalab.cli.main import app

    def no_training(*a, **k):
        raise AssertionError("training started before the options were checked")

    monkeypatch.setattr(methods, "run", no_training)
    monkeypatch.setattr("stratalab.experiments.george.run", no_training)
    monkeypatch.setattr("stratalab.experiments.d3m.run", no_training)
    monkeypatch.setattr("stratalab.experiments.scaling.run", no_training)
    f = tmp_path / "file"
    f.write_text("x")
    r = CliRunner().invoke(app, command + [x.format(file=f) for x in extra])
    assert r.exit_code == 2, r.output
    assert message in r.output


def test_rerun_of_a_grid_uses_the_thread_count_it_recorded(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from stratalab.cli.main import app

    runner = CliRunner()
    out = tmp_path / "d3m.json"
    r = runner.invoke(app, ["run", "d3m", "--dataset", "u-digits", "--methods", "erm,jtt", "--epochs", "1",
                            "--sweep-points", "0", "--threads", "1", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["invocation"]["backend"]["threads"] == 1
    seen = []
    real = bk._execute

    def spy(fn, args, key, work_dir, threads=None):
        seen.append(threads)
        return real(fn, args, key, work_dir, threads)

    monkeypatch.setattr(bk, "_execute", spy)
    again = runner.invoke(app, ["rerun", str(out), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["reproduced"]
    assert seen and set(seen) == {1}


def test_data_keys_fill_in_the_data_sets_defaults():
    """A registered data set's key holds every option with its default, so an explicit default and
    an omitted one share results, and a changed default gives a new key (u-mnist's resize)."""
    from stratalab.experiments.backend import DataSpec

    plain = DataSpec("u-mnist", 0, "/d", {})
    assert plain.key()["options"]["resize"] is True
    assert plain.key() == DataSpec("u-mnist", 0, "/d", {"resize": True}).key()
    assert plain.key() != DataSpec("u-mnist", 0, "/d", {"resize": False}).key()
    assert DataSpec("my.npz", 0, None, {}).key()["options"] == {}  # a user file: its options as given


def test_a_stored_result_edited_by_hand_or_holding_nan_is_run_again(tmp_path):
    """The issue-23 case: a task file edited by hand, or holding NaN, was reported as a result."""
    CALLS.clear()
    key = task_key("sq", x=6)
    Backend(work_dir=tmp_path).map(square, [(key, (6,))])
    path = tmp_path / f"{key}.json"
    original = path.read_text()
    assert Backend(work_dir=tmp_path).map(square, [(key, (6,))])[0]["y"] == 36 and CALLS == [6]  # reused as written
    for edited in (original.replace('"y": 36', '"y": 35'), original.replace('"y": 36', '"y": NaN')):
        assert edited != original
        path.write_text(edited)
        assert ResultStore(tmp_path).get(key) is None
        assert Backend(work_dir=tmp_path).map(square, [(key, (6,))])[0]["y"] == 36
    assert CALLS == [6, 6, 6]


def test_task_keys_change_with_the_code(monkeypatch):
    from stratalab.experiments import backend

    a = task_key("t", seed=0)
    monkeypatch.setattr(backend, "code_version", lambda: "other code")
    assert task_key("t", seed=0) != a


def test_the_code_hash_sees_library_edits_not_cli_edits(tmp_path):
    """A work dir keeps its finished tasks across an edit of the command line (which only maps
    flags), never across an edit of the code a task runs."""
    import shutil

    from stratalab.experiments.backend import code_version, source_hash

    root = tmp_path / "stratalab"
    shutil.copytree(Path(bk.__file__).resolve().parents[1], root,
                    ignore=shutil.ignore_patterns("__pycache__"))
    before = source_hash(root)
    assert before == code_version()  # the copy hashes as the installed package
    (root / "cli" / "main.py").write_text((root / "cli" / "main.py").read_text() + "\n# a help text edit\n")
    assert source_hash(root) == before
    (root / "metrics" / "groups.py").write_text((root / "metrics" / "groups.py").read_text() + "\n# an edit\n")
    assert source_hash(root) != before


def test_a_user_file_is_keyed_by_what_it_holds(tmp_path):
    """Edit the labels of mydata.npz and the same path gets a new key (a work dir used to hand back
    the table of the old labels); a CSV's key also sees its images."""
    from stratalab.experiments.backend import DataSpec

    path = tmp_path / "mydata.npz"
    x = np.zeros((4, 2), np.float32)
    np.savez(path, x_train=x, y_train=np.array([0, 1, 0, 1]), x_val=x, y_val=np.array([0, 1, 0, 1]), x_test=x,
             y_test=np.array([0, 1, 0, 1]))
    before = DataSpec(str(path), 0, None, {}).key()
    assert before == DataSpec(str(path), 0, None, {}).key()
    np.savez(path, x_train=x, y_train=np.array([1, 0, 0, 1]), x_val=x, y_val=np.array([0, 1, 0, 1]), x_test=x,
             y_test=np.array([0, 1, 0, 1]))
    assert DataSpec(str(path), 0, None, {}).key() != before
    csv = tmp_path / "d.csv"
    csv.write_text("id,filename,split,y,a\n0,a.png,train,0,0\n")
    (tmp_path / "a.png").write_bytes(b"one")
    k1 = DataSpec(str(csv), 0, None, {}).key()
    (tmp_path / "a.png").write_bytes(b"other image")
    assert DataSpec(str(csv), 0, None, {}).key() != k1


def test_a_ray_address_nothing_answers_on_is_refused_quickly():
    """--backend ray --address 127.0.0.1:1 waited forever (still at 9.5 min); now one line within seconds."""
    import socket
    import time

    from stratalab.experiments.backend import check_reachable

    with socket.socket() as s:  # a port nothing listens on: bind, take its number, close
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.perf_counter()
    with pytest.raises(ValueError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        check_reachable(f"127.0.0.1:{port}", timeout=2)
    assert time.perf_counter() - t < 10
    with pytest.raises(ValueError, match="HOST:PORT"):
        check_reachable("localhost")
    with socket.socket() as server:  # something listening: accepted
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}", timeout=2)



def test_a_result_made_with_another_thread_count_is_run_again(tmp_path):
    """Numbers depend on the torch thread count (convolutions sum in a thread-dependent order), but
    task keys did not: a work dir shared by a run with --threads 1 and one without handed each the
    other's results. The count is stored with the result and checked on reuse."""
    CALLS.clear()
    key = task_key("sq", x=7)
    Backend(work_dir=tmp_path, threads=1).map(square, [(key, (7,))])
    assert json.loads((tmp_path / f"{key}.json").read_text())["_threads"] == 1
    Backend(work_dir=tmp_path, threads=1).map(square, [(key, (7,))])
    assert CALLS == [7]  # same count: reused
    Backend(work_dir=tmp_path, threads=2).map(square, [(key, (7,))])
    assert CALLS == [7, 7]  # another count: run again
    assert ResultStore(tmp_path).get(key, threads=2) is not None and ResultStore(tmp_path).get(key, threads=1) is None
