"""Which recorded results are stale: made by code that has changed since.

A result written by ``_common.write`` records the sha256 of every code file that ran (each loaded
module under ``src/stratalab`` and ``benchmarks/``); it is **stale** when any of those files now
differs or is gone, and **current** otherwise. A result from before that record (no ``provenance``)
is judged by git: made at the last commit that wrote its JSON, it is **stale (no code record)**
when any file under ``src/stratalab`` or ``benchmarks/`` (results excepted) differs between that
commit and the working tree, and **current (no code record)** otherwise.

BENCHMARKS.md holds the verdicts between ``<!-- staleness:begin -->`` and ``<!-- staleness:end -->``;
``--write`` refreshes that block and ``--check`` exits 1 when it disagrees with the code now (a test
runs it), so a stale number cannot stand in BENCHMARKS unmarked: regenerate the result, or run
``--write`` so the block says it is stale.

Run: python benchmarks/staleness.py [--json] [--write | --check]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, REPO, _git, sha256  # noqa: E402

RESULTS = BENCH / "results"
DOC = REPO / "BENCHMARKS.md"
BEGIN, END = "<!-- staleness:begin -->", "<!-- staleness:end -->"


def verdict(path: Path) -> dict:
    """The staleness of one result JSON: name, commit it was made at, status, changed code files."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return {"result": path.name, "commit": None, "status": "unreadable", "changed": [], "why": str(e)}
    prov = rec.get("provenance") if isinstance(rec, dict) else None
    if isinstance(prov, dict) and isinstance(prov.get("code"), dict):
        changed = sorted(rel for rel, h in prov["code"].items()
                         if not (REPO / rel).is_file() or sha256(REPO / rel) != h)
        status = "stale" if changed else "current"
        if prov.get("dirty"):
            status += " (made with uncommitted changes)"
        return {"result": path.name, "commit": prov.get("commit"), "status": status, "changed": changed}
    rel = path.relative_to(REPO).as_posix()
    commit = _git("log", "-1", "--format=%H", "--", rel)
    if not commit:
        return {"result": path.name, "commit": None, "status": "unknown (no code record, not in git)", "changed": []}
    diff = _git("diff", "--name-only", commit, "--", "src/stratalab", "benchmarks", ":(exclude)benchmarks/results")
    changed = sorted(filter(None, (diff or "").splitlines()))
    return {"result": path.name, "commit": commit, "status": f"{'stale' if changed else 'current'} (no code record)",
            "changed": changed}


def verdicts() -> list[dict]:
    return [verdict(p) for p in sorted(RESULTS.glob("*.json"))]


def block(rows: list[dict]) -> str:
    """The BENCHMARKS.md block: one line per result (no file lists, so it changes only with a verdict)."""
    lines = [BEGIN, "| result | made at | status |", "|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['result']}` | {(r['commit'] or '?')[:7]} | {r['status']} |")
    return "\n".join(lines + [END])


def current_block(text: str) -> str | None:
    m = re.search(re.escape(BEGIN) + r".*?" + re.escape(END), text, flags=re.S)
    return m.group(0) if m else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="refresh the block in BENCHMARKS.md")
    mode.add_argument("--check", action="store_true", help="exit 1 when BENCHMARKS.md's block is not up to date")
    args = ap.parse_args()
    if _git("rev-parse", "HEAD") is None:
        print("staleness: not a git checkout (or no git); results without a code record cannot be judged", file=sys.stderr)
        return 2
    rows = verdicts()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            ch = r["changed"]
            more = f" ({len(ch)} code file(s) changed: {', '.join(ch[:4])}{' ...' if len(ch) > 4 else ''})" if ch else ""
            print(f"{r['result']:45s} {(r['commit'] or '?')[:7]}  {r['status']}{more}")
    text = DOC.read_text()
    new, old = block(rows), current_block(text)
    if args.write:
        if old is None:
            raise SystemExit(f"{DOC.name} has no {BEGIN} ... {END} block to refresh; add one where the list belongs.")
        DOC.write_text(text.replace(old, new))
        print(f"wrote the staleness block of {DOC}")
    elif args.check and old != new:
        old_lines, new_lines = set((old or "").splitlines()), set(new.splitlines())
        print(f"{DOC.name}'s staleness block is out of date; run `python benchmarks/staleness.py --write` "
              "(or regenerate the stale results). Lines it should have:", file=sys.stderr)
        for line in sorted(new_lines - old_lines):
            print(f"  + {line}", file=sys.stderr)
        for line in sorted(old_lines - new_lines):
            print(f"  - {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
