"""A recorded benchmark result regenerates number for number from a clean run at this commit
(issue 24, item 4; ``pytest -m slow``, about 3 minutes): ``benchmarks/george_udigits.py`` is run
again with the seeds and torch threads its recorded file names, into a temporary folder, and every
number of the new JSON must equal the recorded one exactly; the record is the one made on this kind
of CPU (``RECORDS``). Times, date, machine and provenance
are not results and are left out."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.benchmarks._bench import BENCH
from tests.fixtures.recorded.record import cpu_isa

pytestmark = pytest.mark.slow

VOLATILE = {"date", "machine", "provenance", "seconds", "name"}


def _results(obj, path=""):
    """Every leaf of a result JSON by its path, without the volatile keys."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k not in VOLATILE:
                out.update(_results(v, f"{path}.{k}"))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(_results(v, f"{path}[{i}]"))
        return out
    return {path: obj}


def test_results_ignore_only_the_volatile_keys():
    rec = {"date": "d", "args": {"seeds": "0", "name": "x"}, "rows": [{"seed": 0, "seconds": 1.5, "test": [0.5, 0.25]}]}
    assert _results(rec) == {".args.seeds": "0", ".rows[0].seed": 0, ".rows[0].test[0]": 0.5, ".rows[0].test[1]": 0.25}


# The record of each kind of CPU: UMAP's float sums differ between a CPU with AVX-512 (where
# george_udigits.json was made) and one without (the AVX2 AMD EPYC of 2026-12-05), and so do the clusters.
RECORDS = {"avx512": "george_udigits.json", "other": "george_udigits_non_avx512.json"}


def test_george_udigits_regenerates_number_for_number(tmp_path):
    recorded = json.loads((BENCH / "results" / RECORDS[cpu_isa()]).read_text())
    args = recorded.get("args")
    assert args, "george_udigits.json predates --threads/--name; regenerate it with benchmarks/george_udigits.py"
    env = {**os.environ, "STRATALAB_RESULTS_DIR": str(tmp_path)}
    cmd = [sys.executable, str(BENCH / "george_udigits.py"), "--seeds", args["seeds"], "--threads", str(args["threads"]),
           "--name", "regenerated"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    new = json.loads((tmp_path / "regenerated.json").read_text())
    old_n, new_n = _results(recorded), _results(new)
    differ = {k: (old_n.get(k), new_n.get(k)) for k in set(old_n) | set(new_n) if old_n.get(k) != new_n.get(k)}
    assert not differ, f"{len(differ)} numbers differ from the record, e.g. {sorted(differ.items())[:5]}"
