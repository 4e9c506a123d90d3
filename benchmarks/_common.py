"""Helpers shared by benchmark scripts: data directory, machine description, result writing and the
provenance every result file records (commit, dirty tree, command, and a hash of each file of code
that ran), which ``benchmarks/staleness.py`` reads to list the results whose code has changed."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# STRATALAB_RESULTS_DIR: where results go instead (the slow test that regenerates a recorded result)
RESULTS = Path(os.environ.get("STRATALAB_RESULTS_DIR", BENCH / "results"))
DEFAULT_DATA = BENCH.parents[1] / "shared" / "data"
CODE_ROOTS = ("src/stratalab", "benchmarks")  # code whose hash a result records, relative to the repo


def data_dir() -> Path:
    return Path(os.environ.get("STRATALAB_DATA_DIR", DEFAULT_DATA))


def machine() -> str:
    import numpy as np
    import torch

    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}, numpy {np.__version__}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_files() -> list[str]:
    """The repository's code files this process ran: every loaded module's file under
    ``src/stratalab`` or ``benchmarks/`` (the script itself, as ``__main__``, and lazy imports,
    loaded by the time a result is written), as paths relative to the repository, sorted."""
    out = set()
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", None)
        if not f:
            continue
        try:
            rel = Path(f).resolve().relative_to(REPO).as_posix()
        except ValueError:
            continue
        if rel.endswith(".py") and any(rel.startswith(root + "/") for root in CODE_ROOTS):
            out.add(rel)
    return sorted(out)


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def provenance() -> dict:
    """The commit the code was at, whether its code (``src/``, ``benchmarks/`` except results) had
    uncommitted changes, the command, and ``code``: the sha256 of each code file that ran."""
    status = _git("status", "--porcelain", "--", "src", "benchmarks", ":(exclude)benchmarks/results")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": None if status is None else bool(status),
        "command": " ".join(["python", *[a for a in sys.argv]]),
        "code": {rel: sha256(REPO / rel) for rel in code_files()},
    }


def write(name: str, payload: dict, markdown: str) -> None:
    """Write ``RESULTS/<name>.json`` (with date, machine and :func:`provenance`) and ``<name>.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"date": str(date.today()), "machine": machine(), **payload, "provenance": provenance()}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    prov = payload["provenance"]
    at = f"commit {str(prov['commit'])[:7]}{' + uncommitted changes' if prov['dirty'] else ''}"
    (RESULTS / f"{name}.md").write_text(markdown + f"\n\n{payload['machine']}, {payload['date']}, {at}\n")
