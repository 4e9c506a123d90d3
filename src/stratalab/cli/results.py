"""``stratalab rerun`` (reproduce a result file), ``stratalab bench`` (one table over many result
files) and ``stratalab report`` (one HTML page): every kind of result through the experiment
registry (:data:`stratalab.experiments.EXPERIMENTS`)."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any, Optional

import typer

from .._io import check_input_file
from .._validation import parse_structured
from .app import app, clean_errors, console, err
from .common import TABLE_SUFFIXES, DataDirOption, JsonOption, make_backend, not_an_input, say_written, warn_emulated_bf16


def numbers(obj: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON tree, keyed by its path (for comparing a rerun with the original);
    timings (``seconds``, ``*_seconds``) are left out."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "seconds" or str(k).endswith("_seconds"):
                continue
            out.update(numbers(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(numbers(v, f"{prefix}[{i}]"))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = float(obj)
    return out


def added_fields(recorded: dict[str, float], rerun_only: list[str]) -> dict[str, str]:
    """Of the numbers only the rerun has, those in a field that its record lacked when the file
    was written: ``runs[0].curve_epochs[1]`` where the recorded ``runs[0]`` has numbers but no
    ``curve_epochs`` (a field added to the results since). Returned as key -> field path with list
    positions starred (``runs[*].curve_epochs``). A record the file lacks altogether (a sixth run
    where it has five) is not one: it stays a difference."""
    import re

    out = {}
    for key in rerun_only:
        for m in re.finditer(r"\.([A-Za-z_][A-Za-z0-9_]*)", key):
            parent, field = key[:m.start()], m.group(1)
            has_parent = any(k.startswith(parent + ".") for k in recorded)
            has_field = any(k.startswith(f"{parent}.{field}") and k[len(parent) + len(field) + 1:][:1] in ("", ".", "[")
                            for k in recorded)
            if has_parent and not has_field:
                out[key] = re.sub(r"\[\d+\]", "[*]", f"{parent}.{field}")
                break
    return out


def agree(recorded: float | None, rerun: float | None, tolerance: float) -> bool:
    """Whether a rerun reproduces a recorded number: both present, finite, within ``tolerance``.
    A NaN or infinity on either side is a difference (``abs(nan - x) > tol`` is False, so a
    result whose numbers were all NaN used to count as reproduced)."""
    if recorded is None or rerun is None:
        return False
    return math.isfinite(recorded) and math.isfinite(rerun) and abs(recorded - rerun) <= tolerance


def _plain(v: float | None) -> float | None:  # strict JSON: a NaN or infinity is written as null
    return v if v is None or math.isfinite(v) else None


def _recorded_invocation(p: Path, data_dir: Optional[Path]) -> tuple[dict[str, Any], Any]:
    from ..experiments import EXPERIMENTS, Invocation

    try:
        recorded = parse_structured(p.read_text(), f"result file {p}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p} is not valid JSON ({e}).") from None
    inv = recorded.get("invocation") if isinstance(recorded, dict) else None
    if not isinstance(inv, dict) or inv.get("command") not in EXPERIMENTS:
        raise ValueError(f"{p} records no invocation to rerun; rerun takes a result file written with --output by "
                         + ", ".join(f"`stratalab {k}`" for k in EXPERIMENTS) + ".")
    invocation = Invocation.from_dict(inv, f"the invocation in {p}")
    if data_dir is not None:
        invocation.data_dir = str(data_dir.expanduser().resolve())
    return recorded, invocation


def _rerun_device(inv: Any, device: Optional[str], path: Path) -> None:
    """The device of every training config in ``inv`` (flat, or composed under ``train``): the one
    recorded, checked here before any work, or ``device`` in its place."""
    from .._device import resolve_device

    cfgs = [c for c in inv.configs.values() if isinstance(c, dict)]
    cfgs += [c["train"] for c in cfgs if isinstance(c.get("train"), dict)]
    if device is not None:
        resolved = resolve_device(device)
        for c in cfgs:
            if "device" in c or "method" in c or "model" in c:
                c["device"] = resolved
        _warn_bf16(cfgs)
        return
    for c in cfgs:
        if "device" not in c and ("method" in c or "model" in c):
            c["device"] = "cpu"  # results from before devices were recorded all ran on the CPU
        if c.get("device") not in (None, "auto"):
            try:
                resolve_device(str(c["device"]))
            except ValueError as e:
                raise ValueError(f"{path} was made on {c['device']}: {e} To rerun it here, give --device cpu (or auto) "
                                 "and a --tolerance: other hardware agrees to float rounding, not bit for bit.") from None
    _warn_bf16(cfgs)


def _warn_bf16(cfgs: list[dict[str, Any]]) -> None:
    """The emulated-bf16 warning for a rerun whose recorded precision is bf16 on this CPU (once)."""
    if any(c.get("precision") == "bf16" and c.get("device") == "cpu" for c in cfgs):
        warn_emulated_bf16("cpu", "bf16")


@app.command()
@clean_errors
def rerun(
    result: Path = typer.Argument(..., help="A result file written with --output by train, run george|d3m|scaling|cifar-b, spectral or audit."),
    data_dir: DataDirOption = None,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the new result as .json."),
    tolerance: float = typer.Option(1e-9, help="Largest difference of a result number still counted as reproduced."),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    device: Optional[str] = typer.Option(None, "--device", help="Run on this device instead of the recorded one (e.g. a GPU "
                                         "result on a CPU: the numbers then agree to float rounding, so give a --tolerance)."),
) -> None:
    """Reproduce a result file: run the command it records (data set, options, seeds and configs)
    again and compare every number of its results with the recorded ones. Exit code 0 when all
    agree within --tolerance, 1 when some differ. It runs on the device the result records, or on
    --device.

    Example: `stratalab train --dataset u-digits --epochs 5 -o run.json && stratalab rerun run.json`
    """
    from ..experiments import experiment
    from ..report import check_output_path, write_json_atomic

    p = check_input_file(result, "result file", (".json",))
    not_an_input(output, "--output", p)
    check_output_path(output, (".json",), "--output")
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"--tolerance must be a finite number >= 0, got {tolerance}.")
    recorded, inv = _recorded_invocation(p, data_dir)
    _rerun_device(inv, device, p)
    exp = experiment(inv.command)
    # it runs here, with the torch threads (per task, for a grid) it recorded (Ray: 1)
    backend = make_backend("local", None, None, (inv.backend or {}).get("threads"))
    with contextlib.redirect_stdout(io.StringIO()):
        new = exp.run(inv, backend=backend).payload
    if output is not None:
        write_json_atomic(output, new)
    old_n = numbers({k: recorded.get(k) for k in exp.result_keys})
    new_n = numbers({k: new.get(k) for k in exp.result_keys})
    added = added_fields(old_n, sorted(set(new_n) - set(old_n)))  # fields the code records since the file was written
    keys = sorted((set(old_n) | set(new_n)) - set(added))
    diffs = [(k, old_n.get(k), new_n.get(k)) for k in keys if not agree(old_n.get(k), new_n.get(k), tolerance)]
    gaps = [abs(old_n[k] - new_n[k]) for k in keys if k in old_n and k in new_n]
    largest = float("nan") if any(math.isnan(g) for g in gaps) else max(gaps, default=0.0)
    summary = {"result": str(p), "command": inv.command, "numbers_compared": len(keys), "differing": len(diffs),
               "max_abs_difference": _plain(largest), "reproduced": not diffs,
               "differences": [{"key": k, "recorded": _plain(a), "rerun": _plain(b)} for k, a, b in diffs[:50]],
               "fields_added_since": sorted(set(added.values()))}
    if json_out:
        print(json.dumps(summary, indent=2, allow_nan=False))
    else:
        verdict = "[bold green]reproduced[/bold green]" if not diffs else "[bold red]not reproduced[/bold red]"
        source = inv.dataset or next((v for v in inv.inputs.values() if v), "its inputs")
        console.print(f"{verdict}: `stratalab {inv.command}` on {source}; {len(keys)} result numbers "
                      f"compared, {len(diffs)} differ (max |difference| {largest:.3g}, tolerance {tolerance:g}).")
        for k, a, b in diffs[:10]:
            console.print(f"  {k}: recorded {a}, rerun {b}")
        if added:
            console.print(f"not compared, fields the file predates: {', '.join(sorted(set(added.values())))}")
        if output is not None:
            console.print(f"wrote rerun: {output}")
    if diffs:
        raise typer.Exit(code=1)


def _result_files(paths: list[Path]) -> list[Path]:
    """The result files named: files as given, folders as their ``*.json`` files (sorted)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob("*.json"))
            if not found:
                raise ValueError(f"folder {p} holds no .json result file.")
            out.extend(found)
        else:
            out.append(p)
    return out


def _load_results(paths: list[Path], skip_others: bool) -> tuple[list[Any], list[str]]:
    """Read every result file before any work; with ``skip_others``, files of a folder that are
    not stratalab results are skipped (and named) instead of refused."""
    from ..experiments import load_result

    results, skipped = [], []
    for p in _result_files(paths):
        try:
            results.append(load_result(p))
        except ValueError as e:
            if skip_others and p.parent in {q for q in paths if q.is_dir()}:
                skipped.append(f"{p.name}: {e}")
            else:
                raise
    if not results:
        raise ValueError("none of the files is a stratalab result; write one with e.g. "
                         "`stratalab run george --dataset u-digits -o george.json`.")
    return results, skipped


@app.command()
@clean_errors
def bench(
    results: list[Path] = typer.Argument(..., help="Result files (.json written with -o) or folders of them."),
    metric: Optional[list[str]] = typer.Option(None, "--metric", help="Keep only this metric (repeatable), e.g. test_wga, test_average, val_wga."),
    confidence: float = typer.Option(0.95, help="Level of the intervals (Student-t over seeds; the file's bootstrap interval for a single audit)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the table: .csv, .parquet or .json."),
    json_out: JsonOption = False,
) -> None:
    """Collect results from many runs into one table: per data set, configuration, method, setting
    and metric, the mean ± std over every seed of every file, with a confidence interval. Files that
    ran the same command and settings pool their seeds (a seed in two files counts once).

    Example: `stratalab run d3m --seeds 0,1 -o a.json; stratalab run d3m --seeds 2 -o b.json; stratalab bench a.json b.json --metric test_wga`
    """
    from ..report import check_output_path, write_table_atomic
    from ..report.bench import bench_table
    from ..report.tables import bench_rich_table

    check_output_path(output, (".json",) + TABLE_SUFFIXES, "--output")
    not_an_input(output, "--output", *_result_files(results))
    loaded, skipped = _load_results(results, skip_others=True)
    table, dropped = bench_table(loaded, confidence=confidence, metrics=metric)
    plain = table.astype(object).where(table.notna(), None)
    payload = {"files": [str(r.path) for r in loaded], "skipped": skipped, "duplicates_dropped": dropped,
               "confidence": confidence, "table": plain.to_dict(orient="records")}
    if output is not None:
        if output.suffix.lower() == ".json":
            from ..report import write_json_atomic

            write_json_atomic(output, payload)
        else:
            write_table_atomic(output, table)
    if json_out:
        print(json.dumps(payload, indent=2, allow_nan=False, default=str))
        return
    console.print(bench_rich_table(table, confidence, len(loaded)))
    for line in skipped:
        err.print(f"[yellow]skipped[/yellow] {line}")
    if dropped:
        console.print(f"{dropped} record(s) of a seed already read from another file with the same configuration were counted once.")
    say_written(("table", output))


@app.command()
@clean_errors
def report(
    results: list[Path] = typer.Argument(..., help="Result files (.json written with -o) or folders of them."),
    output: Path = typer.Option(..., "--output", "-o", help="The page to write (.html): one self-contained file, no network assets."),
    title: Optional[str] = typer.Option(None, "--title", help="Title of the page (default: from the files)."),
) -> None:
    """Write one HTML page a person can read in a browser: per result file its config and seeds,
    which labels each row used, the rows with mean ± std or intervals, sortable per-group tables
    with the worst group marked, and the paper-style figures inline.

    Example: `stratalab run george --dataset u-digits --seeds 0,1 -o george.json && stratalab report george.json -o report.html`
    """
    from ..report import check_output_path
    from ..report.html import write_html

    check_output_path(output, (".html", ".htm"), "--output")
    not_an_input(output, "--output", *_result_files(results))
    loaded, skipped = _load_results(results, skip_others=True)
    for line in skipped:
        err.print(f"[yellow]skipped[/yellow] {line}")
    say_written(("report", write_html(output, loaded, title)))


