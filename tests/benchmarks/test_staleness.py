"""The staleness check of recorded benchmark results (issue 24, item 2): a result records the hash
of every code file that ran, it is stale when one of them changes, and BENCHMARKS.md marks every
stale result (``benchmarks/staleness.py --check``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.benchmarks._bench import BENCH, bench_module

common = bench_module("_common")
staleness = bench_module("staleness")


def _git_checkout() -> bool:
    return shutil.which("git") is not None and common._git("rev-parse", "HEAD") is not None


def test_provenance_records_commit_and_the_hash_of_each_code_file_that_ran():
    import stratalab.metrics.groups  # noqa: F401 - loaded, so it is code that ran

    prov = common.provenance()
    assert set(prov) == {"commit", "dirty", "command", "code"}
    assert "src/stratalab/metrics/groups.py" in prov["code"]
    assert "benchmarks/_common.py" in prov["code"]
    assert all(not rel.startswith(("tests/", ".venv")) for rel in prov["code"])
    assert prov["code"]["benchmarks/_common.py"] == common.sha256(BENCH / "_common.py")
    if _git_checkout():
        assert len(prov["commit"]) == 40 and isinstance(prov["dirty"], bool)


def test_write_records_provenance_in_the_json_and_the_commit_in_the_markdown(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    common.write("r", {"x": 1}, "| a |")
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["x"] == 1 and rec["provenance"]["code"]
    assert (tmp_path / "r.md").read_text().splitlines()[-1].endswith(
        f"commit {str(rec['provenance']['commit'])[:7]}" + (" + uncommitted changes" if rec["provenance"]["dirty"] else ""))


def _result(tmp_path, code: dict) -> "object":
    p = tmp_path / "res.json"
    p.write_text(json.dumps({"provenance": {"commit": "a" * 40, "dirty": False, "command": "python x.py", "code": code}}))
    return p


def test_a_result_is_current_while_its_code_is_unchanged_and_stale_when_a_file_changes_or_goes(tmp_path):
    rel = "benchmarks/_common.py"
    good = {rel: common.sha256(BENCH / "_common.py")}
    assert staleness.verdict(_result(tmp_path, good))["status"] == "current"
    v = staleness.verdict(_result(tmp_path, {rel: "0" * 64}))
    assert v["status"] == "stale" and v["changed"] == [rel]
    v = staleness.verdict(_result(tmp_path, {**good, "src/stratalab/gone.py": "0" * 64}))
    assert v["status"] == "stale" and v["changed"] == ["src/stratalab/gone.py"]


def test_the_block_lists_each_verdict_and_is_found_again():
    rows = [{"result": "a.json", "commit": "b" * 40, "status": "stale", "changed": ["x"]},
            {"result": "c.json", "commit": None, "status": "current", "changed": []}]
    text = "intro\n" + staleness.block(rows) + "\nrest\n"
    assert staleness.current_block(text) == staleness.block(rows)
    assert "| `a.json` | bbbbbbb | stale |" in text and "| `c.json` | ? | current |" in text


@pytest.mark.skipif(not _git_checkout(), reason="the check judges results without a code record by git history; no git checkout here")
def test_benchmarks_md_marks_every_stale_result():
    """Fails when code that a recorded result ran has changed and BENCHMARKS.md does not say so:
    regenerate the result, or run `python benchmarks/staleness.py --write`."""
    r = subprocess.run([sys.executable, str(BENCH / "staleness.py"), "--check"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
