"""The grids on a local Ray cluster (2 CPUs): a worker killed mid-task is retried and the grid
completes with results identical to the local backend; a finished grid is reused from its work dir;
the CLI's --backend ray gives the same result file as the default. Skipped where Ray is absent
(it is in the test extra, so CI runs it)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'stratalab[ray]')")

from stratalab.cli.main import app  # noqa: E402
from stratalab.experiments import Backend, ScalingConfig, run_scaling  # noqa: E402
from stratalab.experiments.backend import FAULT_ENV  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray instance with 2 CPUs; every task attempt appends its worker's pid to
    <faults>/<task key>.attempts (the workers inherit the environment)."""
    faults = tmp_path_factory.mktemp("faults")
    old = os.environ.get(FAULT_ENV)
    os.environ[FAULT_ENV] = str(faults)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield faults
    ray.shutdown()
    if old is None:
        os.environ.pop(FAULT_ENV, None)
    else:
        os.environ[FAULT_ENV] = old


def _killer(faults: Path, done: threading.Event, killed: dict) -> None:
    """SIGKILL the worker of the first task attempt that appears, once."""
    while not done.is_set():
        for f in sorted(faults.glob("*.attempts")):
            pids = f.read_text().split()
            if pids:
                os.kill(int(pids[0]), signal.SIGKILL)
                killed.update(key=f.name[: -len(".attempts")], pid=int(pids[0]))
                return
        time.sleep(0.002)


def _rows(res):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in res.runs]


def test_a_killed_worker_is_retried_and_the_grid_matches_the_local_backend(cluster, tmp_path):
    # 2 pretraining tasks + 12 finetunes (2 widths x 3 balancing methods x 2 seeds), seconds each
    cfg = ScalingConfig.of(dataset="u-digits", pretrain_dataset="digits", model="mlp", widths=(0.5, 1.0),
                        methods=("erm", "subsetting", "upweighting"), seeds=(0, 1), epochs=3, pretrain_epochs=1)
    local = run_scaling(cfg, weights_dir=tmp_path / "local-weights", backend=Backend("local", threads=1))
    for f in cluster.glob("*.attempts"):
        f.unlink()
    done, killed = threading.Event(), {}
    watcher = threading.Thread(target=_killer, args=(cluster, done, killed), daemon=True)
    watcher.start()
    on_ray = Backend("ray", work_dir=tmp_path / "work")
    try:
        res = run_scaling(cfg, weights_dir=tmp_path / "ray-weights", backend=on_ray)
    finally:
        done.set()
        watcher.join(5)
    assert killed, "no task attempt was seen, so no worker was killed"
    attempts = (cluster / f"{killed['key']}.attempts").read_text().split()
    assert len(attempts) == 2 and attempts[0] == str(killed["pid"]) and attempts[1] != attempts[0]  # retried elsewhere
    assert _rows(res) == _rows(local)  # every number of the grid, killed task included
    assert [r["source_test_accuracy"] for r in res.pretraining] == [r["source_test_accuracy"] for r in local.pretraining]
    assert on_ray.stats["run"] == 14
    # the finished grid is reused from the work dir: nothing runs again
    again = Backend("ray", work_dir=tmp_path / "work")
    assert _rows(run_scaling(cfg, weights_dir=tmp_path / "ray-weights", backend=again)) == _rows(local)
    assert again.stats == {"run": 0, "reused": 12}  # the 2 pretrained files are reused as files


def test_cli_d3m_on_ray_writes_the_same_result_as_local(cluster, tmp_path):
    args = ["run", "d3m", "--dataset", "u-digits", "--seeds", "0,1", "--methods", "erm,d3m,auto-d3m,jtt",
            "--epochs", "1", "--sweep-points", "2", "--trak-models", "2", "--proj-dim", "32"]
    r1 = runner.invoke(app, args + ["-o", str(tmp_path / "local.json"), "--threads", "1"])  # as each Ray task
    assert r1.exit_code == 0, r1.output
    r2 = runner.invoke(app, args + ["-o", str(tmp_path / "ray.json"), "--backend", "ray", "--work-dir", str(tmp_path / "wd")])
    assert r2.exit_code == 0, r2.output
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("local.json", "ray.json"))
    assert a["invocation"].pop("backend") == {"kind": "local", "address": None, "work_dir": None, "threads": 1}
    assert b["invocation"].pop("backend")["kind"] == "ray"
    for x in (a, b):
        for s in x["seeds"]:
            s.pop("seconds")
    assert a == b
    assert len(list((tmp_path / "wd").glob("*.json"))) > 10


def test_each_ray_task_runs_with_its_thread_count(cluster):
    from stratalab.experiments.backend import call

    def threads():
        return {"threads": torch.get_num_threads()}

    import torch

    assert Backend("ray").map(call, [("t1", (threads, ()))])[0]["threads"] == 1
    assert Backend("ray", threads=2).map(call, [("t2", (threads, ()))])[0]["threads"] == 2


def test_an_error_inside_a_ray_task_stops_the_grid_with_its_message(cluster):
    from stratalab.experiments.backend import call

    def boom(x):
        raise ValueError(f"bad value {x}")

    with pytest.raises(ValueError, match="bad value 7"):
        Backend("ray").map(call, [("boom", (boom, (7,)))])
