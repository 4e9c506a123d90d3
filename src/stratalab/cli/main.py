"""The ``stratalab`` command."""

from __future__ import annotations

import ast
import contextlib
import functools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console

from .._validation import check_unique, parse_structured

app = typer.Typer(
    help=(
        "stratalab finds and fixes hidden stratification: models with good average accuracy that fail "
        "on subgroups.\n\n"
        "Start with `stratalab demo` (train a small model on the embedded u-digits data set and audit it), "
        "`stratalab datasets` (what data sets exist and their subgroup counts) or "
        "`stratalab audit PREDICTIONS.csv --y label --pred prediction --group group` (audit your own model)."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)
datasets_app = typer.Typer(help="List data sets, or show one's counts per split x class x group.",
                           invoke_without_command=True, add_completion=False)
app.add_typer(datasets_app, name="datasets")
run_app = typer.Typer(help="End-to-end pipelines (e.g. `stratalab run george --dataset u-digits`).", no_args_is_help=True,
                      add_completion=False)
app.add_typer(run_app, name="run")

# Piped output (no terminal, no $COLUMNS) is not cut to rich's default 80 columns: tables keep their
# natural width ("lambd...", "minor..." in a log file helped nobody). A terminal keeps its own width.
_PIPED_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 4096
console = Console(width=_PIPED_WIDTH)
err = Console(stderr=True, width=None if sys.stderr.isatty() or os.environ.get("COLUMNS") else 4096)


def _methods_help() -> str:
    from ..train.registry import methods_help

    return methods_help()


def _pass_through() -> tuple[type[BaseException], ...]:
    """typer's own exits and usage errors (typer >= 0.2x vendors click; older typers use click)."""
    out: list[type[BaseException]] = [typer.Exit, typer.Abort]
    try:
        from typer._click.exceptions import ClickException  # type: ignore[import-not-found]
        out.append(ClickException)
    except ImportError:
        pass
    try:
        import click

        out += [click.exceptions.Exit, click.exceptions.Abort, click.ClickException]
    except ImportError:
        pass
    return tuple(out)


_PASS_THROUGH = _pass_through()
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, KeyError, OSError, EOFError, OverflowError)
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def _os_message(e: OSError) -> str:
    if isinstance(e, FileNotFoundError) and not e.filename:
        return str(e)
    where = f": {e.filename}" if e.filename else ""
    return f"{e.strerror or e}{where}" if e.strerror else str(e)


@contextlib.contextmanager
def _plain_warnings() -> Any:
    """Warnings from the library as one plain line each on stderr ("warning: ..."), each message
    once: Python's default shows the file and source line of the warn() call, and a message raised
    from two places printed twice."""
    import warnings

    seen: set[str] = set()

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        text = str(message)
        if text not in seen:
            seen.add(text)
            err.print(f"[yellow]warning:[/yellow] {text}", highlight=False, soft_wrap=True, markup=True)

    with warnings.catch_warnings():
        warnings.showwarning = show  # restored by catch_warnings on exit
        yield


def _clean_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user-facing errors into one clear line on stderr and exit code 2 (no traceback). Any
    other exception is a bug: one line saying so, exit code 1 (``STRATALAB_DEBUG=1`` shows the
    traceback)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _plain_warnings():
                return fn(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except USER_ERRORS as e:
            if isinstance(e, KeyError):
                msg = e.args[0] if e.args else "missing key"
            elif isinstance(e, OSError) and not isinstance(e, FileNotFoundError) or (
                    isinstance(e, FileNotFoundError) and e.strerror):
                msg = _os_message(e)
            elif isinstance(e, EOFError):
                msg = f"a file ended too early ({e}); it may be truncated."
            else:
                msg = str(e)
            err.print(f"[bold red]error:[/bold red] {msg}", highlight=False, soft_wrap=True, markup=True)
            raise typer.Exit(code=2) from None
        except Exception as e:  # noqa: BLE001 - never a traceback for the user
            if os.environ.get("STRATALAB_DEBUG"):
                raise
            err.print(f"[bold red]internal error:[/bold red] {type(e).__name__}: {e}. This is a bug in stratalab; "
                      "rerun with STRATALAB_DEBUG=1 for the traceback and report it.", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper


def _parse_seeds(seeds: str) -> list[int]:
    """``--seeds 0,1,2`` -> [0, 1, 2], with a clear error for anything else."""
    out = []
    for v in seeds.split(","):
        v = v.strip()
        if not v:
            continue
        try:
            s = int(v)
        except ValueError:
            raise ValueError(f"--seeds takes comma-separated non-negative integers, e.g. 0,1,2; got {v!r}.") from None
        if s < 0:
            raise ValueError(f"--seeds must be non-negative integers, got {s}.")
        out.append(s)
    if not out:
        raise ValueError("--seeds must list at least one integer seed, e.g. 0,1,2.")
    if len(set(out)) != len(out):
        raise ValueError(f"--seeds lists a seed twice ({seeds}); give each seed once.")
    return out


def _parse_options(options: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in options or []:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ValueError(f"option {item!r} must look like key=value, e.g. --option rare_keep=0.5.")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k.strip()] = v
    return out


def _check_input_file(path: Path, what: str, suffixes: tuple[str, ...] = ()) -> Path:
    p = path.expanduser()
    if p.is_dir():
        raise ValueError(f"{what} {p} is a directory; give a file.")
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} does not exist.")
    if suffixes and p.suffix.lower() not in suffixes:
        raise ValueError(f"{what} {p}: unknown format {p.suffix or '(no suffix)'!r}; use {' or '.join(suffixes)}.")
    return p


def _abs(path: Optional[Path]) -> Optional[str]:
    """A path as recorded in a result file: absolute, so a rerun works from any folder."""
    return str(Path(path).expanduser().resolve()) if path is not None else None


def _not_an_input(output: Optional[Path], what: str, *inputs: Any) -> None:
    """Refuse an output path that is one of the command's input files (it would be overwritten)."""
    if output is None:
        return
    out = output.expanduser().resolve()
    for inp in inputs:
        if inp is None:
            continue
        p = Path(str(inp)).expanduser()
        if p.exists() and p.resolve() == out:
            raise ValueError(f"{what} {output} is an input of this command; it would be overwritten. Choose another file.")


def _read_config_file(path: Path, command: str) -> dict[str, Any]:
    """A ``--config`` file: YAML or JSON with ``dataset``, ``dataset_options``, ``data_dir``,
    ``seeds`` (run commands), ``config`` (and ``d3m_config`` for run d3m), as every result file's
    ``invocation`` records them; a result file itself is accepted (its ``invocation`` is used)."""
    import yaml

    p = _check_input_file(path, "--config", (".yaml", ".yml", ".json"))
    try:
        d = parse_structured(p.read_text(), f"--config {p}", yaml=True)  # JSON is YAML; safe_load builds no Python objects
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"--config {p} is not valid YAML/JSON: {str(e).splitlines()[0]}") from None
    if isinstance(d, dict) and isinstance(d.get("invocation"), dict):
        d = d["invocation"]
    if not isinstance(d, dict):
        raise ValueError(f"--config {p} must hold a mapping (dataset: ..., config: {{...}}), got {type(d).__name__}.")
    if d.get("command", command) != command:
        raise ValueError(f"--config {p} was written for `stratalab {d['command']}`, not `stratalab {command}`.")
    known = {"command", "dataset", "dataset_options", "data_dir", "seeds", "config", "d3m_config", "features", "select_proxy"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"--config {p}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}.")
    _check_invocation_fields(d, f"--config {p}")
    for k in ("data_dir", "features"):  # relative paths in a config file are relative to the file
        if isinstance(d.get(k), str) and not Path(d[k]).expanduser().is_absolute():
            d[k] = str((p.parent / d[k]).resolve())
    if isinstance(d.get("dataset"), str) and Path(d["dataset"]).suffix.lower() in (".npz", ".csv") \
            and not Path(d["dataset"]).expanduser().is_absolute():
        d["dataset"] = str((p.parent / d["dataset"]).resolve())
    return d


# The fields of a recorded invocation (a result file's "invocation", or a --config file), with the
# kinds of value each may hold: one check for --config and rerun, so a missing or mistyped field is
# named in one line (it used to surface as "error: config" or "'int' object is not iterable").
_INVOCATION_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "command": ((str,), "a command name, e.g. run george"),
    "dataset": ((str,), "a data set name or the path of your .npz/.csv"),
    "data_dir": ((str, type(None)), "a folder path"),
    "dataset_options": ((dict, type(None)), "a mapping of data-set options"),
    "seeds": ((list,), "a list of integer seeds, e.g. [0, 1, 2]"),
    "config": ((dict,), "a mapping of settings"),
    "d3m_config": ((dict,), "a mapping of D3M settings"),
    "features": ((str, type(None)), "the path of an .npz of features"),
    "select_proxy": ((dict, type(None)), "a mapping"),
    "backend": ((dict, type(None)), "a mapping"),
}


def _check_invocation_fields(d: dict[str, Any], where: str, required: tuple[str, ...] = ()) -> None:
    """Every present field of the kind it must be, every ``required`` one present."""
    for k in required:
        if k not in d:
            raise ValueError(f"{where} has no {k!r} field ({_INVOCATION_FIELDS[k][1]}); it is not a complete "
                             "stratalab record: regenerate it with the command that wrote it.")
    for k, (kinds, what) in _INVOCATION_FIELDS.items():
        if k in d and not isinstance(d[k], kinds):
            raise ValueError(f"{where}: {k!r} must be {what}, got {type(d[k]).__name__} {d[k]!r:.60}.")
    if isinstance(d.get("seeds"), list):
        bad = [s for s in d["seeds"] if isinstance(s, bool) or not isinstance(s, int) or s < 0]
        if bad or not d["seeds"]:
            raise ValueError(f"{where}: 'seeds' must be a non-empty list of integers >= 0, got {d['seeds']!r:.60}.")


BACKEND_HELP = ("Where the grid's tasks run: local (this process, one after another) | ray (a Ray cluster: "
                "pip install 'stratalab[ray]'; a local one with every CPU unless --address).")
ADDRESS_HELP = "With --backend ray: the cluster to join (auto, HOST:PORT or ray://HOST:10001); default: start a local one."
WORK_DIR_HELP = ("Keep every finished task's result in this folder and reuse it when the command runs again "
                 "(resume a half-done grid); on a multi-machine cluster it must be storage every node sees.")


THREADS_HELP = ("Torch threads of each task (default: every core locally, 1 per task on Ray). Results are "
                "bit-identical across backends at equal thread counts; otherwise equal to float rounding.")


# the options every grid command shares (each declares its own --backend help: what its tasks are)
AddressOption = Annotated[Optional[str], typer.Option("--address", help=ADDRESS_HELP)]
WorkDirOption = Annotated[Optional[Path], typer.Option("--work-dir", help=WORK_DIR_HELP)]
ThreadsOption = Annotated[Optional[int], typer.Option("--threads", help=THREADS_HELP)]


def _backend(kind: str, address: Optional[str], work_dir: Optional[Path], threads: Optional[int] = None) -> Any:
    """The grid backend, checked at the door (an unknown kind, Ray not installed, a bad --work-dir)."""
    from ..experiments.backend import Backend

    return Backend(kind, address=address, work_dir=work_dir, threads=threads)


def _explicit(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given on the command line (not a default)."""
    src = ctx.get_parameter_source(name)
    return src is not None and src.name not in ("DEFAULT", "DEFAULT_MAP")


def _refuse_unused(ctx: typer.Context, names: "list[str] | tuple[str, ...]", why: str) -> None:
    """Refuse options given on the command line that have no effect in the chosen setting (they
    used to be accepted and ignored without a word): one line naming the flag and the reason."""
    given = [n for n in names if _explicit(ctx, n)]
    if given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        raise ValueError(f"{flags} {'has' if len(given) == 1 else 'have'} no effect {why}; leave {'it' if len(given) == 1 else 'them'} out.")


def _merge(ctx: typer.Context, file_cfg: dict[str, Any], cli: dict[str, Any]) -> dict[str, Any]:
    """File settings, overridden by options given on the command line; CLI defaults fill the rest."""
    out = dict(file_cfg)
    for k, v in cli.items():
        if k not in out or _explicit(ctx, k):
            out[k] = v
    return out


@datasets_app.callback()
def datasets_list(ctx: typer.Context, json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the data sets `stratalab.data.load` knows."""
    if ctx.invoked_subcommand is not None:
        return
    from ..data import available
    from ..report import datasets_table

    items = available()
    if json_out:
        print(json.dumps([{"name": i.name, "summary": i.summary, "needs_files": i.needs_files or None,
                           "options": i.options()} for i in items], indent=2, default=str))
        return
    console.print(datasets_table(items))
    console.print("A user's own .npz (x_/y_/g_{train,val,test}) or .csv (id,filename,split,y,a) loads by its path.")


@datasets_app.command("show")
@_clean_errors
def datasets_show(
    name: str = typer.Argument(..., help="Data set name, or path of your own .npz/.csv."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", "-d", help="Folder with the data set's files (default $STRATALAB_DATA_DIR)."),
    seed: int = typer.Option(0, help="Seed of the data set's construction."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Data-set option key=value (repeatable)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print the counts per split x class x group of one data set."""
    from ..data import load
    from ..report import counts_table

    ds = load(name, data_dir=data_dir, seed=seed, **_parse_options(option))
    if json_out:
        print(json.dumps(ds.summary(), indent=2, default=str))
        return
    console.print(f"[bold]{ds.name}[/bold]: {ds.description}")
    console.print(counts_table(ds.counts(), "Examples per split x class x group"))


def _read_predictions(path: Path) -> Any:
    import pandas as pd

    p = _check_input_file(path, "predictions file", (".csv", ".parquet", ".pq"))
    try:
        if p.suffix.lower() == ".csv":
            return pd.read_csv(p)
        return pd.read_parquet(p)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{p} is empty; write a header line and one row per example.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"{p} could not be read as CSV: {str(e).splitlines()[0]}") from None
    except Exception as e:  # noqa: BLE001 - pyarrow raises its own types for a bad Parquet file
        raise ValueError(f"{p} could not be read as Parquet ({type(e).__name__}: {str(e).splitlines()[0][:160]}).") from None


def _column(df: Any, col: str, path: Path, what: str, *, integer: bool = True) -> Any:
    import numpy as np
    import pandas as pd

    if col not in df.columns:
        raise ValueError(f"{path} has no column {col!r} (for {what}); columns are: {', '.join(map(str, df.columns))}.")
    s = df[col]
    if s.isna().any():
        raise ValueError(f"column {col!r} of {path} has {int(s.isna().sum())} missing value(s) (first at row {int(np.flatnonzero(s.isna().to_numpy())[0])}); drop or fill them.")
    v = s.to_numpy()
    if v.dtype.kind not in "iufb":
        bad = int(np.flatnonzero(pd.to_numeric(s, errors="coerce").isna().to_numpy())[0]) if len(v) else 0
        raise ValueError(f"column {col!r} of {path} must hold "
                         + (f"integer labels, row {bad} is {v[bad]!r}; encode labels as 0..K-1 (e.g. pandas.factorize)."
                            if integer else f"numbers, row {bad} is {v[bad]!r}."))
    if not integer:
        v = v.astype(float)
        if not np.isfinite(v).all():
            i = int(np.flatnonzero(~np.isfinite(v))[0])
            raise ValueError(f"column {col!r} of {path} has an infinite value at row {i}.")
        return v
    from .._validation import as_label_array

    return as_label_array(v, f"column {col!r} of {path}")  # whole numbers 0..2**31-1, no NaN/inf


@app.command()
@_clean_errors
def audit(
    predictions: Path = typer.Argument(..., help="CSV or Parquet file with one row per example."),
    y: str = typer.Option(..., "--y", help="Column of true class labels (integers)."),
    pred: str = typer.Option(..., "--pred", help="Column of predicted labels (integers)."),
    group: str = typer.Option(..., "--group", help="Column of subgroup ids (integers)."),
    class_col: Optional[str] = typer.Option(None, "--class", help="Column of the class used for per-class summaries (default: --y)."),
    score: Optional[str] = typer.Option(None, "--score", help="Column with the probability of class 1 (binary tasks only): adds per-group loss and AUROC."),
    bootstrap: int = typer.Option(0, "--bootstrap", help="Bootstrap resamples for confidence intervals (e.g. 1000); 0 = none."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout instead of tables."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the report: .json (full report) or .csv/.parquet (group table)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the figure of class accuracy beside worst-subgroup accuracy (.png/.pdf/.svg)."),
) -> None:
    """Audit predictions per subgroup: group table, average / balanced / worst-group / worst-class
    accuracy, WeightedStd and MacroStd.

    Example: `stratalab audit preds.csv --y label --pred prediction --group group --plot fig.png`
    """
    import numpy as np

    from ..metrics import group_report
    from ..report import check_output_path

    check_output_path(output, (".json",) + TABLE_SUFFIXES, "--output")
    check_output_path(plot, FIGURE_SUFFIXES, "--plot")
    _not_an_input(output, "--output", predictions)
    _not_an_input(plot, "--plot", predictions)
    if bootstrap < 0:
        raise ValueError(f"--bootstrap must be >= 0 (0 = no intervals), got {bootstrap}.")
    df = _read_predictions(predictions)
    if len(df) == 0:
        raise ValueError(f"{predictions} has no rows.")
    yv = _column(df, y, predictions, "--y")
    pv = _column(df, pred, predictions, "--pred")
    gv = _column(df, group, predictions, "--group")
    cv = _column(df, class_col, predictions, "--class") if class_col else None
    sv = _column(df, score, predictions, "--score", integer=False) if score else None
    if sv is not None:
        labels = np.unique(np.concatenate([yv, pv]))
        if labels.size > 2 or labels.max() > 1:
            raise ValueError(f"--score takes the probability of class 1 of a binary task, but --y/--pred hold "
                             f"{labels.size} labels ({', '.join(map(str, labels[:5]))}{', ...' if labels.size > 5 else ''}); "
                             "drop --score for multi-class predictions.")
    report = group_report(yv, pv, gv, classes=cv, y_score=sv, n_bootstrap=bootstrap, random_state=seed)
    _emit_report(report, json_out=json_out, output=output, plot=plot, source=str(predictions))


def _say_written(*pairs: tuple[str, Any]) -> None:
    """One "wrote WHAT: PATH" line per output actually written (None paths skipped)."""
    for what, path in pairs:
        if path is not None:
            console.print(f"wrote {what}: {path}")


def _write_payload(payload: dict[str, Any], output: Optional[Path], json_out: bool) -> bool:
    """Write ``payload`` as JSON to ``output`` (atomically) when given; with ``--json`` also print it
    on stdout and return True, so the caller skips its tables."""
    from ..report import write_json_atomic

    if output is not None:
        write_json_atomic(output, payload)
    if json_out:
        print(json.dumps(payload, indent=2, allow_nan=False, default=str))
        if output is not None:  # stdout stays pure JSON; where the file went is said on stderr
            err.print(f"wrote {output}", highlight=False, soft_wrap=True)
    return json_out


def _emit_report(report: Any, *, json_out: bool, output: Optional[Path], plot: Optional[Path], source: str,
                 extra: dict[str, Any] | None = None) -> None:
    from ..report import group_table, plot_class_vs_worst_group, summary_table, write_table_atomic

    payload = {"source": source, **(extra or {}), **report.to_dict()}
    if output is not None and output.suffix.lower() != ".json":
        write_table_atomic(output, report.table)
    if plot is not None:
        plot_class_vs_worst_group(report, plot)
    json_output = output if output is not None and output.suffix.lower() == ".json" else None
    if _write_payload(payload, json_output, json_out):
        return
    console.print(group_table(report))
    console.print(summary_table(report))
    _say_written(("report", output), ("figure", plot))


@app.command()
@_clean_errors
def demo(
    epochs: int = typer.Option(40, help="ERM epochs (u-digits: about 0.05 s each on 2 CPU cores)."),
    seed: int = typer.Option(0, help="Seed of the data split, the initialisation and the data order."),
    json_out: bool = typer.Option(False, "--json", help="Print the test report as JSON."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the class vs worst-subgroup figure (.png/.pdf/.svg)."),
    audit_only: bool = typer.Option(False, "--audit-only", help="Stop after the audit (skip GEORGE)."),
) -> None:
    """The main job on the embedded data set: train ERM on u-digits (superclass digit >= 5, digit 8
    rare in train), predict the test set and audit it per digit (hidden stratification: high average
    accuracy, much lower on the rare 8s); then GEORGE finds the 8s as a cluster without any digit
    label and Group DRO over its clusters (the same as `stratalab run george --dataset u-digits`)."""
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..data import load
    from ..metrics import group_report
    from ..models import MLP
    from ..report import check_output_path
    from ..train import TrainConfig, fit, predict

    check_output_path(plot, FIGURE_SUFFIXES, "--plot")
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=1e-3, seed=seed)
    t0 = time.perf_counter()
    ds = load("u-digits", seed=seed)
    torch.manual_seed(seed)
    model = MLP(in_features=64, n_classes=2, hidden=(64,))
    with Progress(TextColumn("ERM on u-digits"), BarColumn(), TextColumn("{task.completed}/{task.total} epochs"),
                  TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(),
                  console=err, transient=True, disable=json_out or not sys.stderr.isatty()) as bar:
        task = bar.add_task("train", total=epochs, loss=float("nan"))
        fit(model, ds.train, cfg, progress=lambda e, row: bar.update(task, completed=e, loss=row["train_loss"]))
    proba = predict(model, ds.test)
    train_counts = ds.counts().query("split == 'train'").set_index("group")["n"].to_dict()
    report = group_report(ds.test.y, proba.argmax(1), ds.test.g, y_score=proba, class_names=ds.class_names,
                          group_names=ds.group_names, train_group_counts=train_counts)
    if not json_out:
        console.print(f"[bold]ERM on u-digits[/bold] ({ds.description}); {len(ds.train)} train images, "
                      f"{epochs} epochs, seed {seed}, {time.perf_counter() - t0:.1f} s. Test set, groups = digits:")
    george = None
    if not audit_only:
        from ..experiments import GeorgeConfig, run_george

        gcfg = GeorgeConfig.for_dataset("u-digits")
        george = run_george(ds, gcfg, seed, progress=None if json_out else (lambda m: err.print(f"[dim]GEORGE {m}[/dim]")))
    extra = {"config": cfg.to_dict(), "dataset": ds.options}
    if george is not None:
        extra["george"] = {"config": gcfg.to_dict(), **george.to_dict()}
    _emit_report(report, json_out=json_out, output=None, plot=plot, source="u-digits test", extra=extra)
    if json_out:
        return
    wc, wg = report.worst_group
    console.print(f"Hidden stratification: average {100 * report.average_accuracy:.1f}%, but digit "
                  f"{ds.group_names[wg]} only {100 * report.worst_group_accuracy:.1f}%.")
    if george is None:
        return
    from ..discover import cluster_quality
    from ..report import george_rows_table

    geo = george.george
    c8 = cluster_quality(george.clusters["test"], ds.test.g)[0].set_index("subclass").loc[8]
    console.print("\n[bold]GEORGE[/bold] (no digit label used): clusters per class "
                  + ", ".join(f"{ds.class_names[c]}: {n}" for c, n in geo.n_clusters_per_class_.items())
                  + f"; the best cluster for the test 8s holds {100 * c8['recall']:.0f}% of them at "
                  f"{100 * c8['precision']:.0f}% precision.")
    console.print(george_rows_table(george.rows, "GEORGE on u-digits, test accuracy (%) (robust = worst digit)"))
    console.print(f"GEORGE: ERM (MLP x{gcfg.width:g}, {gcfg.epochs} epochs) -> UMAP + {gcfg.cluster_method} per class -> "
                  f"Group DRO over the clusters; {george.seconds['total']:.0f} s. The last row uses the true digits (oracle).")


def _dataset_args(ctx: typer.Context, file_cfg: dict[str, Any], dataset: Optional[str], data_dir: Optional[Path],
                  option: Optional[list[str]]) -> tuple[str, Optional[Path], dict[str, Any]]:
    """Data set name, data folder and options: from the command line, else from --config."""
    name = dataset if dataset is not None else file_cfg.get("dataset")
    if not name:
        raise ValueError("give --dataset NAME (see `stratalab datasets`) or a --config file that names one.")
    ddir = data_dir if data_dir is not None else (Path(file_cfg["data_dir"]) if file_cfg.get("data_dir") else None)
    same = dataset is None or _resolved_name(dataset) == file_cfg.get("dataset") or dataset == file_cfg.get("dataset")
    opts = {**(file_cfg.get("dataset_options") or {} if same else {}), **_parse_options(option)}
    return str(name), ddir, opts


def _resolved_name(name: str) -> str:
    """A data set path as an absolute path (so a rerun finds it from any folder); names unchanged."""
    p = Path(name).expanduser()
    return str(p.resolve()) if p.suffix.lower() in (".npz", ".csv") and p.exists() else name


def _seeds_arg(ctx: typer.Context, file_cfg: dict[str, Any], seeds: str) -> list[int]:
    if "seeds" in file_cfg and not _explicit(ctx, "seeds"):
        return _parse_seeds(",".join(str(s) for s in file_cfg["seeds"]))
    return _parse_seeds(seeds)


@app.command()
@_clean_errors
def train(
    ctx: typer.Context,
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Data set name (see `stratalab datasets`) or path of your .npz/.csv."),
    method: str = typer.Option("erm", "--method", help="The training method (registry `stratalab.train.METHODS`): " + _methods_help()),
    model: str = typer.Option("mlp", "--model", help="mlp | lenet5 | resnet | linear (a linear head on feature inputs)."),
    width: float = typer.Option(1.0, help="Width multiplier of the model (> 0; scaling studies)."),
    epochs: int = typer.Option(20, help="Training epochs."),
    batch_size: int = typer.Option(128, help="Mini-batch size."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    weight_decay: float = typer.Option(0.0, help="Weight decay."),
    optimizer: str = typer.Option("adam", help="adam | adamw | sgd."),
    schedule: str = typer.Option("constant", help="constant | multistep (x0.1 at 50% and 75%) | cosine | linear (to zero)."),
    seed: int = typer.Option(0, help="Seed of data construction, initialisation and data order."),
    select: str = typer.Option("val_wca", "--select", help="Checkpoint criterion: val_wga (needs val groups) | val_wca | val_avg | "
                               "bias_unsupervised (no group label: first trains an ERM bias proxy, Tsirigotis et al. 2023)."),
    mixture_ratio: Optional[float] = typer.Option(None, help="r of mixture balancing: cap each class at r x the smallest class."),
    gdro_eta: float = typer.Option(0.01, help="Group DRO step size of the group weights."),
    gdro_adjustment: float = typer.Option(0.0, help="Group DRO generalisation adjustment C."),
    gdro_balanced_sampler: bool = typer.Option(False, "--gdro-balanced-sampler", help="Group DRO with group-balanced batches."),
    jtt_epochs: int = typer.Option(1, help="JTT: epochs T of the error-finding ERM model."),
    jtt_upsample: int = typer.Option(20, help="JTT: lambda_up, times each error appears per epoch."),
    init: Optional[Path] = typer.Option(None, "--init", help="Finetune from weights written by `stratalab pretrain` (same --model and --width)."),
    finetune: str = typer.Option("full", "--finetune", help="With --init: full (every layer) | last_layer (only the head is trained)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON with dataset, dataset_options and config: {TrainConfig fields}, "
                                          "or a result file; options given here override it."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", "-d", help="Folder with the data set's files."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Data-set option key=value (repeatable)."),
    checkpoint_dir: Optional[Path] = typer.Option(None, help="Save the last epoch here and resume from it."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the run (config, history, selected epoch, metrics) as .json."),
    json_out: bool = typer.Option(False, "--json", help="Print the run as JSON instead of tables."),
) -> None:
    """Train a model with ERM or a group-robust method and print val/test subgroup tables.

    Example: `stratalab train --dataset u-digits --method gdro --epochs 30 --select val_wga`
    """
    file_cfg = _read_config_file(config, "train") if config is not None else {}
    _not_an_input(output, "--output", config)
    cli = dict(method=method, model=model, width=width, epochs=epochs, batch_size=batch_size, lr=lr,
               weight_decay=weight_decay, optimizer=optimizer, schedule=schedule, seed=seed, select=select,
               mixture_ratio=mixture_ratio, gdro_eta=gdro_eta, gdro_adjustment=gdro_adjustment,
               gdro_balanced_sampler=gdro_balanced_sampler, jtt_epochs=jtt_epochs, jtt_upsample=jtt_upsample,
               init=str(init.expanduser().resolve()) if init is not None else None, finetune=finetune)
    name, ddir, opts = _dataset_args(ctx, file_cfg, dataset, data_dir, option)
    merged = _merge(ctx, file_cfg.get("config", {}), cli)
    _refuse_method_options(ctx, str(merged.get("method", method)))
    _train(name, ddir, opts, merged, checkpoint_dir=checkpoint_dir, output=output, json_out=json_out)


def _refuse_method_options(ctx: typer.Context, method: str) -> None:
    """A method-specific option (``MethodSpec.options``) given with a method that does not read it."""
    from ..train.registry import METHODS

    readers: dict[str, list[str]] = {}
    for spec in METHODS.values():
        for opt in spec.options:
            readers.setdefault(opt, []).append(spec.name)
    unused = [o for o, names in readers.items() if method not in names]
    for o in unused:
        _refuse_unused(ctx, [o], f"with --method {method} (it is read by {', '.join(readers[o])})")


def _train(dataset: str, data_dir: Optional[Path], opts: dict[str, Any], cfg_dict: dict[str, Any], *,
           checkpoint_dir: Optional[Path] = None, output: Optional[Path] = None, json_out: bool = False) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..data import load
    from ..report import check_output_path, group_table, summary_table
    from ..train import TrainConfig, bias_proxy_predictions, run

    cfg = TrainConfig.from_dict(cfg_dict)
    check_output_path(output, (".json",), "--output")
    _not_an_input(output, "--output", dataset, cfg.init)
    if checkpoint_dir is not None and checkpoint_dir.exists() and not checkpoint_dir.is_dir():
        raise ValueError(f"--checkpoint-dir {checkpoint_dir} is a file; give a folder (created if missing).")
    if cfg.init is not None:
        from ..models import read_pretrained

        read_pretrained(cfg.init)  # a missing or foreign weights file fails before any work
    if cfg.select == "val_worst_estimated":
        raise ValueError("--select val_worst_estimated needs estimated val groups, which `stratalab train` cannot make; "
                         "`stratalab run george` selects on its clusters, or call stratalab.train.run(..., "
                         "val_estimated_groups=...) from Python.")
    ds = load(dataset, data_dir=data_dir, seed=cfg.seed, **opts)
    if cfg.select == "val_wga" and ds.val.g is None:
        raise ValueError(f"--select val_wga needs val group labels and {ds.name!r} has none; use val_wca, val_avg or "
                         "bias_unsupervised.")
    if checkpoint_dir is not None and (checkpoint_dir / "last.pt").is_file():
        from ..train.loop import load_checkpoint

        load_checkpoint(checkpoint_dir / "last.pt")  # refuse a bad checkpoint before any training
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} epochs"),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err, transient=True,
                  disable=json_out or not sys.stderr.isatty()) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, epoch: int, total: int, row: dict[str, Any]) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, info="")
            sel = row.get("selection", {}).get(cfg.select)
            info = f"loss {row['train_loss']:.3f}" + (f", val {cfg.select} {100 * sel:.1f}%" if sel is not None else "")
            bar.update(tasks[stage], completed=epoch, info=info)

        bias = None
        if cfg.select == "bias_unsupervised":
            tasks["bias proxy"] = bar.add_task("bias proxy (ERM)", total=cfg.epochs, info="")
            bias = bias_proxy_predictions(ds, cfg)
        result = run(ds, cfg, val_bias_pred=bias, checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None,
                     progress=progress)
    invocation = {"command": "train", "dataset": _resolved_name(dataset), "dataset_options": opts,
                  "data_dir": _abs(data_dir), "config": cfg.to_dict()}
    payload = {"invocation": invocation, **result.to_dict()}
    if bias is not None:
        payload["labels_used"]["selection"] = "bias_unsupervised (an ERM bias proxy's val predictions; no group label)"
    if _write_payload(payload, output, json_out):
        return payload
    console.print(f"[bold]{cfg.method}[/bold] on {ds.name}: model {cfg.model}, {cfg.epochs} epochs, seed {cfg.seed}; "
                  f"selected epoch {result.selected_epoch} by {cfg.select}; labels used: "
                  + ", ".join(f"{k}: {v}" for k, v in payload["labels_used"].items()))
    for split in ("val", "test"):
        rep = result.reports[split]
        console.print(group_table(rep, title=f"{split}: accuracy per subgroup (%)"))
        console.print(summary_table(rep, title=f"{split}: summary"))
    if output is not None:
        console.print(f"wrote run: {output}")
    return payload


@run_app.command("george")
@_clean_errors
def run_george_cmd(
    ctx: typer.Context,
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Data set name or path of your .npz/.csv (needs train/val/test)."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds, e.g. 0,1,2."),
    model: Optional[str] = typer.Option(None, help="ERM/GDRO model (default: the data set's recipe, else lenet5 for 32x32 images, else mlp)."),
    width: Optional[float] = typer.Option(None, help="Width multiplier of the model (u-digits recipe: 4)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs of each training step (ERM, GDRO, oracle GDRO); u-mnist recipe 20, u-digits 10."),
    erm_epochs: Optional[int] = typer.Option(None, "--erm-epochs", help="Epochs of step 1's ERM only, whose features are clustered (default: --epochs)."),
    augment: Optional[str] = typer.Option(None, "--augment", help="Training augmentation of every step: none | flip_crop (pad 4, random crop, flip; the reference code's U-MNIST training)."),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate (GEORGE's U-MNIST recipe: 2e-3, x0.1 at 50% and 75%)."),
    batch_size: Optional[int] = typer.Option(None, help="Mini-batch size (128)."),
    reducer: Optional[str] = typer.Option(None, help="umap (default) | pca | hardness | none."),
    cluster_method: Optional[str] = typer.Option(None, help="gmm | kmeans (u-digits recipe: kmeans; else gmm)."),
    k_max: Optional[int] = typer.Option(None, help="Largest number of clusters tried per class (10)."),
    no_overcluster: bool = typer.Option(False, "--no-overcluster", help="Skip GEORGE's overclustering step."),
    min_cluster_size: Optional[int] = typer.Option(None, help="Overclustering: least train and val points of a kept sub-cluster (the paper: 25; u-digits recipe: 10)."),
    features: Optional[Path] = typer.Option(None, "--features", help="Your own embeddings: .npz with train, val, test arrays (skips step 1's features)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON with dataset, seeds and config: {GeorgeConfig fields}, or a result file; options given here override it."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", "-d", help="Folder with the data set's files."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Data-set option key=value (repeatable)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the results (config, per-seed rows, cluster recovery) as .json."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the Fig. 5 style figure of the first seed (.png/.pdf/.svg)."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON instead of tables."),
    backend: str = typer.Option("local", "--backend", help=BACKEND_HELP),
    address: AddressOption = None,
    work_dir: WorkDirOption = None,
    threads: ThreadsOption = None,
) -> None:
    """GEORGE (Sohoni et al. 2020): ERM -> cluster its features per class -> Group DRO on the clusters,
    beside ERM and Group DRO on the true subclasses. No true subclass label is used by GEORGE itself.
    """
    file_cfg = _read_config_file(config, "run george") if config is not None else {}
    _not_an_input(output, "--output", config)
    name, ddir, opts = _dataset_args(ctx, file_cfg, dataset, data_dir, option)
    seed_list = _seeds_arg(ctx, file_cfg, seeds)
    overrides = dict(model=model, width=width, epochs=epochs, erm_epochs=erm_epochs, augment=augment, lr=lr,
                     batch_size=batch_size, reducer=reducer,
                     cluster_method=cluster_method, k_max=k_max, overcluster=False if no_overcluster else None,
                     min_cluster_size=min_cluster_size, min_val_size=min_cluster_size)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    feats = features if features is not None else (Path(file_cfg["features"]) if file_cfg.get("features") else None)
    _run_george(name, ddir, opts, seed_list, file_cfg.get("config"), overrides, features=feats, output=output,
                plot=plot, json_out=json_out, backend=_backend(backend, address, work_dir, threads))


def _run_george(dataset: str, data_dir: Optional[Path], opts: dict[str, Any], seed_list: list[int],
                base: Optional[dict[str, Any]], overrides: dict[str, Any], *, features: Optional[Path] = None,
                output: Optional[Path] = None, plot: Optional[Path] = None, json_out: bool = False,
                backend: Any = None) -> dict[str, Any]:
    import base64

    import pandas as pd

    from ..data.files import read_npz
    from ..experiments import GeorgeConfig, check_features, run_george_grid, summarise
    from ..experiments.backend import DataSpec
    from ..experiments.george import RECIPES, check_augment
    from ..report import check_output_path, george_table, recovery_table

    # every setting and path is checked before the first training step
    cfg = GeorgeConfig.from_dict({**base, **overrides}) if base is not None else GeorgeConfig.for_dataset(dataset, **overrides)
    check_output_path(output, (".json",), "--output")
    check_output_path(plot, FIGURE_SUFFIXES, "--plot")
    _not_an_input(output, "--output", dataset, features)
    user_feats = None
    if features is not None:
        user_feats = check_features(read_npz(_check_input_file(features, "--features", (".npz",)), ("train", "val", "test"),
                                             what=" (--features: arrays train, val, test)"))
    datasets, specs = {}, {}
    for seed in seed_list:  # every seed's data loads here (a missing or corrupt file fails before any training)
        specs[seed] = DataSpec(dataset, seed, str(data_dir.resolve()) if data_dir is not None else None, dict(opts))
        datasets[seed] = specs[seed].load()
    if base is None and dataset not in RECIPES:  # a user's data: defaults by its size (george.size_rule)
        cfg = GeorgeConfig.for_data(datasets[seed_list[0]], **overrides)
    check_augment(datasets[seed_list[0]], cfg)
    if user_feats is not None:
        for ds in datasets.values():
            check_features(user_feats, {s: len(ds.splits[s]) for s in ("train", "val", "test")})
    results = run_george_grid(specs.__getitem__, cfg, seed_list, backend=backend, features=user_feats,
                              figure_suffix=plot.suffix.lower() if plot is not None else None,
                              progress=None if json_out else (lambda m: err.print(f"[dim]{m}[/dim]")))
    if plot is not None:
        from ..report.io import _atomic

        picture = base64.b64decode(results[0].pop("figure"))
        _atomic(plot, lambda p: p.write_bytes(picture))
    table = summarise(results)
    invocation = {"command": "run george", "dataset": _resolved_name(dataset), "dataset_options": opts,
                  "data_dir": _abs(data_dir), "seeds": seed_list, "config": cfg.to_dict(),
                  "features": str(features.resolve()) if features is not None else None}
    if backend is not None and backend.recorded() is not None:
        invocation["backend"] = backend.recorded()
    payload = {"invocation": invocation, "dataset": dataset, "config": cfg.to_dict(), "seeds": seed_list,
               "table": table.to_dict(orient="records"), "runs": results,
               "labels_used": {"GEORGE": "class labels only (clusters replace subclasses)",
                               "GDRO (true subclasses)": "true train and val subclass labels"}}
    if _write_payload(payload, output, json_out):
        return payload
    console.print(george_table(table, dataset, ",".join(map(str, seed_list))))
    first = results[0]
    if first["recovery"]:
        console.print(recovery_table(pd.DataFrame(first["recovery"]), first["recovery_overall"], first["seed"]))
    console.print("clusters per class: " + ", ".join(f"{k}: {v}" for k, v in first["clusters_per_class"].items()))
    if "GDRO (true subclasses)" not in first["rows"]:
        console.print(f"{dataset} has no true subclass labels in train and val, so there is no oracle row and the "
                      "robust accuracy uses the test groups (or the classes) it has.")
    _say_written(("results", output), ("figure", plot))
    return payload


@run_app.command("d3m")
@_clean_errors
def run_d3m_cmd(
    ctx: typer.Context,
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Data set name or path of your .npz/.csv."),
    auto: bool = typer.Option(False, "--auto", help="Only the rows that use no group label: ERM and AUTO-D3M (pseudo-groups from the TRAK matrix)."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated rows of Table 1: erm, auto-d3m, jtt, dfr, d3m, rwg, subg, gdro (default: all)."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds, e.g. 0,1,2: mean and std over them."),
    model: str = typer.Option("mlp", "--model", help="mlp | lenet5 | resnet | linear."),
    width: float = typer.Option(1.0, help="Width multiplier of the model (> 0)."),
    epochs: int = typer.Option(20, help="Epochs of every trained model (ERM, retrained, baselines)."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    batch_size: int = typer.Option(128, help="Mini-batch size."),
    weight_decay: float = typer.Option(0.0, help="Weight decay."),
    proj_dim: int = typer.Option(512, help="TRAK projection dimension k."),
    trak_params: Optional[str] = typer.Option(None, help="'head' to attribute through the last layer only (faster)."),
    tune_baselines: bool = typer.Option(False, "--tune-baselines",
                                        help="Tune JTT (T, lambda_up) and Group DRO (C, weight decay, balanced sampling) on val worst-group accuracy, as their papers do."),
    trak_projector: str = typer.Option("gaussian", "--trak-projector",
                                       help="gaussian (TRAK's dense projection) | kronecker (per-layer Kronecker-factored: several times faster, no p x k matrix)."),
    trak_models: int = typer.Option(1, help="TRAK ensemble size M: 1 = the ERM model; M > 1 trains M models on random alpha-subsets (the paper: 100)."),
    trak_alpha: float = typer.Option(0.5, help="Fraction of train each ensemble model sees."),
    beta: float = typer.Option(1.0, help="Temperature of the soft maximum over group losses (eq. 3)."),
    weighting: str = typer.Option("softmax", help="softmax (eq. 3 of the paper) | loss (the public code: mean of loss_G * tau(G))."),
    removal: str = typer.Option("negative", help="negative: drop A_i < 0 (the paper's default) | search: choose k on val worst-group accuracy."),
    fraction: float = typer.Option(0.35, help="AUTO-D3M: share of each class in the lower-performing pseudo-group."),
    threshold: str = typer.Option("fraction", help="AUTO-D3M split: fraction (the paper) | zero (the public code: sign of the projection)."),
    sweep_points: int = typer.Option(5, help="Values of k per curve for Fig. 2 (val WGA vs examples removed); 0 skips it."),
    search_points: int = typer.Option(5, help="With --removal search: values of k tried (plus the A < 0 count)."),
    figure: Optional[Path] = typer.Option(None, "--figure", help="Write Fig. 2 (.png/.pdf/.svg)."),
    scores: Optional[Path] = typer.Option(None, "--scores", help="Keep the TRAK matrix (n_train x n_val) memory-mapped in this .npy (one file per seed)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON with dataset, seeds, config: {TrainConfig} and d3m_config: {D3MConfig}, or a result file; options given here override it."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", "-d", help="Folder with the data set's files."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Data-set option key=value (repeatable)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the result as .json (configs, table, every seed's metrics, sweep)."),
    removed: Optional[Path] = typer.Option(None, "--removed", help="Write the removed train examples with their alignment scores (.csv or .parquet; all seeds)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON instead of tables."),
    backend: str = typer.Option("local", "--backend", help=BACKEND_HELP + " Tasks: each seed's ERM, baselines, TRAK ensemble members and retrains."),
    address: AddressOption = None,
    work_dir: WorkDirOption = None,
    threads: ThreadsOption = None,
) -> None:
    """D3M Table 1 (Jain et al. 2024): ERM, AUTO-D3M, JTT, DFR, D3M, RWG, SUBG and Group DRO, each
    with the group labels it needs, worst-group and balanced test accuracy over seeds; D3M finds the
    training examples that hurt the worst groups with TRAK and retrains without them; AUTO-D3M needs
    no group label anywhere. Also Fig. 2 (--sweep-points, --figure) and Fig. 4 (the cells of train
    data with the most negative alignment)."""
    file_cfg = _read_config_file(config, "run d3m") if config is not None else {}
    _not_an_input(output, "--output", config)
    name, ddir, opts = _dataset_args(ctx, file_cfg, dataset, data_dir, option)
    seed_list = _seeds_arg(ctx, file_cfg, seeds)
    if auto and methods:
        raise ValueError("give either --auto or --methods, not both.")
    d3m_cli: dict[str, Any] = dict(proj_dim=proj_dim, trak_params=trak_params, trak_projector=trak_projector,
                                   tune_baselines=tune_baselines,
                                   n_models=trak_models, alpha=trak_alpha,
                                   beta=beta, weighting=weighting, removal=removal, fraction=fraction, threshold=threshold,
                                   search_points=search_points, sweep_points=sweep_points)
    keymap = {"n_models": "trak_models", "alpha": "trak_alpha"}
    d3m_cfg = dict(file_cfg.get("d3m_config", {}))
    for k, v in d3m_cli.items():
        if k not in d3m_cfg or _explicit(ctx, keymap.get(k, k)):
            d3m_cfg[k] = v
    if auto:
        d3m_cfg["methods"] = ("erm", "auto-d3m")
    elif methods is not None:
        d3m_cfg["methods"] = tuple(m.strip() for m in methods.split(",") if m.strip())
        if not d3m_cfg["methods"]:
            raise ValueError("--methods lists no method; give e.g. erm,d3m (or leave it out for all rows).")
    if int(d3m_cfg.get("n_models", 1)) == 1:
        _refuse_unused(ctx, ["trak_alpha"], "with one TRAK model (--trak-models 1 attributes through the ERM model, "
                       "trained on all of train)")
    if d3m_cfg.get("removal") != "search":
        _refuse_unused(ctx, ["search_points"], f"with --removal {d3m_cfg.get('removal')} (it is read by --removal search)")
    train_cli = dict(model=model, width=width, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay)
    train_cfg = _merge(ctx, file_cfg.get("config", {}), train_cli)
    _run_d3m(name, ddir, opts, seed_list, train_cfg, d3m_cfg, figure=figure, scores=scores, output=output,
             removed=removed, json_out=json_out, backend=_backend(backend, address, work_dir, threads))


def _run_d3m(dataset: str, data_dir: Optional[Path], opts: dict[str, Any], seed_list: list[int],
             train_cfg: dict[str, Any], d3m_cfg: dict[str, Any], *, figure: Optional[Path] = None,
             scores: Optional[Path] = None, output: Optional[Path] = None, removed: Optional[Path] = None,
             json_out: bool = False, backend: Any = None) -> dict[str, Any]:
    import pandas as pd

    from ..experiments import D3MConfig, plot_sweep, run_d3m_table
    from ..experiments.backend import DataSpec
    from ..report import cells_table, check_output_path, d3m_table, sweep_table, write_table_atomic
    from ..train import TrainConfig

    # every setting and path is checked before the first training step
    dcfg = D3MConfig.from_dict(d3m_cfg)
    modes = [m for m in ("d3m", "auto-d3m") if m in dcfg.methods]
    if "d3m" not in dcfg.methods:
        dcfg.sweep_points = 0  # Fig. 2 is D3M's curve
    cfg = TrainConfig.from_dict({**train_cfg, "seed": seed_list[0]})
    check_output_path(output, (".json",), "--output")
    check_output_path(figure, FIGURE_SUFFIXES, "--figure")
    check_output_path(removed, TABLE_SUFFIXES, "--removed")
    for what, out in (("--output", output), ("--removed", removed)):
        _not_an_input(out, what, dataset)
    if scores is not None:
        check_output_path(scores, (".npy",), "--scores")
    if figure is not None and not dcfg.sweep_points:
        raise ValueError("--figure draws Fig. 2, which needs the d3m row and --sweep-points > 0.")
    if removed is not None and not modes:
        raise ValueError("--removed lists what D3M / AUTO-D3M removed; include d3m or auto-d3m in --methods.")
    specs = {s: DataSpec(dataset, s, str(data_dir.resolve()) if data_dir is not None else None, dict(opts))
             for s in seed_list}  # each seed's data is loaded once per process (the run, --removed, Fig. 4)

    def data(s: int) -> Any:
        return specs[s].load()

    for s in seed_list:  # a missing or corrupt data set fails here, before any training
        data(s)
    table = run_d3m_table(specs.__getitem__, cfg, dcfg, seeds=seed_list, name=dataset, scores_out=scores,
                          progress=None if json_out else (lambda m: err.print(f"[dim]{m}[/dim]")), backend=backend)
    written = []
    if figure is not None and not table.sweep().empty:
        written.append(("figure", plot_sweep(table, figure)))
    if removed is not None:
        parts = []
        for s in table.seeds:
            for mode, res in s.d3m.items():
                parts.append(res.removed_table(data(s.seed)).assign(seed=s.seed, mode=mode))
        if parts:
            written.append(("removed examples", write_table_atomic(removed, pd.concat(parts, ignore_index=True))))
    invocation = {"command": "run d3m", "dataset": _resolved_name(dataset), "dataset_options": opts,
                  "data_dir": _abs(data_dir), "seeds": seed_list,
                  "config": cfg.to_dict(), "d3m_config": dcfg.to_dict()}
    if backend is not None and backend.recorded() is not None:
        invocation["backend"] = backend.recorded()
    payload = {"invocation": invocation, **table.to_dict()}
    if _write_payload(payload, output, json_out):
        return payload
    console.print(d3m_table(table.summary(), dataset, ",".join(map(str, seed_list))))
    first = table.seeds[0]
    if "d3m" in first.d3m:
        cells = first.d3m["d3m"].cells(data(first.seed))
        if cells is not None:
            console.print(cells_table(cells, first.seed))
    sw = table.sweep_mean()
    if not sw.empty:
        console.print(sweep_table(sw))
    _say_written(*written)
    return payload


def _numbers(obj: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON tree, keyed by its path (for comparing a rerun with the original);
    timings (``seconds``) are left out."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "seconds":
                continue
            out.update(_numbers(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(_numbers(v, f"{prefix}[{i}]"))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = float(obj)
    return out


def _agree(recorded: float | None, rerun: float | None, tolerance: float) -> bool:
    """Whether a rerun reproduces a recorded number: both present, finite, within ``tolerance``.
    A NaN or infinity on either side is a difference (``abs(nan - x) > tol`` is False, so a
    result whose numbers were all NaN used to count as reproduced)."""
    if recorded is None or rerun is None:
        return False
    return math.isfinite(recorded) and math.isfinite(rerun) and abs(recorded - rerun) <= tolerance


RESULT_KEYS = {"train": ("metrics", "selected_epoch", "history"), "run george": ("table", "runs"), "run d3m": ("table", "rows", "sweep")}


@app.command()
@_clean_errors
def rerun(
    result: Path = typer.Argument(..., help="A result file written by train, run george or run d3m (--output)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", "-d", help="Folder with the data set's files (default: the recorded one, then $STRATALAB_DATA_DIR)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the new result as .json."),
    tolerance: float = typer.Option(1e-9, help="Largest difference of a result number still counted as reproduced."),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """Reproduce a result file: run the command it records (data set, options, seeds and config)
    again and compare every number of its results (metrics / table) with the recorded ones. Exit
    code 0 when all agree within --tolerance, 1 when some differ.

    Example: `stratalab train --dataset u-digits --epochs 5 -o run.json && stratalab rerun run.json`
    """

    p = _check_input_file(result, "result file", (".json",))
    _not_an_input(output, "--output", p)
    try:
        recorded = parse_structured(p.read_text(), f"result file {p}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p} is not valid JSON ({e}).") from None
    inv = recorded.get("invocation") if isinstance(recorded, dict) else None
    if not isinstance(inv, dict) or inv.get("command") not in RESULT_KEYS:
        raise ValueError(f"{p} records no invocation to rerun; rerun takes a result file written by "
                         "`stratalab train`, `run george` or `run d3m` with --output.")
    _check_invocation_fields(inv, f"the invocation in {p}", ("dataset", "config") + (
        ("seeds",) if inv["command"] != "train" else ()) + (("d3m_config",) if inv["command"] == "run d3m" else ()))
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"--tolerance must be a finite number >= 0, got {tolerance}.")
    command = inv["command"]
    ddir = data_dir if data_dir is not None else (Path(inv["data_dir"]) if inv.get("data_dir") else None)
    opts = inv.get("dataset_options") or {}
    quiet: dict[str, Any] = dict(output=output, json_out=True)
    recorded_backend = inv.get("backend") if isinstance(inv.get("backend"), dict) else {}
    if command != "train":  # the grid runs here, with the torch threads per task it recorded (Ray: 1)
        quiet["backend"] = _backend("local", None, None, recorded_backend.get("threads"))
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        if command == "train":
            new = _train(inv["dataset"], ddir, opts, inv["config"], **quiet)
        elif command == "run george":
            new = _run_george(inv["dataset"], ddir, opts, [int(s) for s in inv["seeds"]], inv["config"], {},
                              features=Path(inv["features"]) if inv.get("features") else None, **quiet)
        else:
            new = _run_d3m(inv["dataset"], ddir, opts, [int(s) for s in inv["seeds"]], inv["config"], inv["d3m_config"], **quiet)
    old_n = _numbers({k: recorded.get(k) for k in RESULT_KEYS[command]})
    new_n = _numbers({k: new.get(k) for k in RESULT_KEYS[command]})
    keys = sorted(set(old_n) | set(new_n))
    diffs = [(k, old_n.get(k), new_n.get(k)) for k in keys if not _agree(old_n.get(k), new_n.get(k), tolerance)]
    gaps = [abs(old_n[k] - new_n[k]) for k in keys if k in old_n and k in new_n]
    largest = float("nan") if any(math.isnan(g) for g in gaps) else max(gaps, default=0.0)
    def plain(v: float | None) -> float | None:  # strict JSON: a NaN or infinity is written as null
        return v if v is None or math.isfinite(v) else None

    summary = {"result": str(p), "command": command, "numbers_compared": len(keys), "differing": len(diffs),
               "max_abs_difference": plain(largest), "reproduced": not diffs,
               "differences": [{"key": k, "recorded": plain(a), "rerun": plain(b)} for k, a, b in diffs[:50]]}
    if json_out:
        print(json.dumps(summary, indent=2, allow_nan=False))
    else:
        verdict = "[bold green]reproduced[/bold green]" if not diffs else "[bold red]not reproduced[/bold red]"
        console.print(f"{verdict}: `stratalab {command}` on {inv['dataset']}; {len(keys)} result numbers compared, "
                      f"{len(diffs)} differ (max |difference| {largest:.3g}, tolerance {tolerance:g}).")
        for k, a, b in diffs[:10]:
            console.print(f"  {k}: recorded {a}, rerun {b}")
        if output is not None:
            console.print(f"wrote rerun: {output}")
    if diffs:
        raise typer.Exit(code=1)


@app.command()
@_clean_errors
def spectral(
    ctx: typer.Context,
    features: Optional[Path] = typer.Option(None, "--features", help="An .npz with arrays features (n, d), y, g and optionally pred."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Or: a data set with groups; an ERM model is trained and its penultimate test features used."),
    method: str = typer.Option("erm", "--method", help="With --dataset: the training method of the model (e.g. upsampling)."),
    model: str = typer.Option("mlp", "--model", help="With --dataset: mlp | lenet5 | resnet | linear."),
    width: float = typer.Option(1.0, help="With --dataset: width multiplier."),
    epochs: int = typer.Option(10, help="With --dataset: training epochs."),
    split: str = typer.Option("test", help="With --dataset: the split whose features are analysed (train | val | test)."),
    init: Optional[Path] = typer.Option(None, "--init", help="With --dataset: finetune from these pretrained weights (`stratalab pretrain`)."),
    finetune: str = typer.Option("full", "--finetune", help="With --init: full | last_layer."),
    seed: int = typer.Option(0, help="With --dataset: seed of data and training."),
    top_k: int = typer.Option(10, "--top-k", help="Eigenvalues per group."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", "-d", help="Folder with the data set's files."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Data-set option key=value (repeatable)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the top-eigenvalue figure (.png/.pdf/.svg; LaBonte et al. Fig. 4)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write spectra and ratios as .json."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Spectral imbalance (LaBonte et al. 2024): the top eigenvalues of every group's feature
    covariance and, per class, rho(y) = lambda_1(minority group) / lambda_1(majority group) beside
    the accuracy gap between those groups (the paper finds rho >= 1 for most classes).

    Example: `stratalab spectral --dataset spurious-mnist -d ../shared/data --model lenet5 --epochs 3 --plot spec.png`
    """
    import numpy as np

    from ..analysis import plot_group_spectra, spectral_imbalance
    from ..report import check_output_path, spectral_table

    if (features is None) == (dataset is None):
        raise ValueError("give exactly one of --features FILE.npz or --dataset NAME.")
    if features is not None:
        _refuse_unused(ctx, ["method", "model", "width", "epochs", "split", "init", "finetune", "seed", "data_dir", "option"],
                       "with --features (they set up the model that --dataset trains)")
    if split not in ("train", "val", "test"):
        raise ValueError(f"--split must be train, val or test, got {split!r}.")
    if int(top_k) < 1:
        raise ValueError(f"--top-k must be >= 1, got {top_k}.")
    check_output_path(output, (".json",), "--output")
    check_output_path(plot, FIGURE_SUFFIXES, "--plot")
    names: dict[str, Any] = {}
    counts = None
    if features is not None:
        from ..data.files import read_npz

        arr = read_npz(_check_input_file(features, "--features", (".npz",)), ("features", "y", "g"),
                       what=" (--features: arrays features, y, g and optionally pred)")
        z, yv, gv, pv = arr["features"], arr["y"], arr["g"], arr.get("pred")
        source = str(features)
    else:
        from ..data import load
        from ..models import embed
        from ..train import TrainConfig, run

        cfg = TrainConfig(method=method, model=model, width=width, epochs=epochs, seed=seed,
                          init=str(init.expanduser().resolve()) if init is not None else None, finetune=finetune)
        if cfg.init is not None:
            from ..models import read_pretrained

            read_pretrained(cfg.init)
        ds = load(dataset, data_dir=data_dir, seed=seed, **_parse_options(option))
        sp = ds.splits[split]
        if sp.g is None:
            raise ValueError(f"the {split} split of {ds.name!r} has no group labels; choose a split that has them.")
        res = run(ds, cfg, progress=None)
        emb = embed(res.model, sp)
        z, yv, gv, pv = emb.features, sp.y, sp.g, emb.pred
        if ds.train.g is not None:
            counts = {int(k): int(v) for k, v in zip(*np.unique(ds.train.g, return_counts=True))}
        names = {"class_names": ds.class_names, "group_names": ds.group_names}
        source = (f"{ds.name} {split} features of {method} ({model} x{width:g}, {epochs} epochs, seed {seed}"
                  + (f", finetuned from {init.name}" if init is not None else "") + ")")
    rep = spectral_imbalance(z, yv, gv, top_k=top_k, pred=pv, group_counts=counts, **names)
    if plot is not None:
        plot_group_spectra(rep, plot)
    payload = {"source": source, **rep.to_dict()}
    if _write_payload(payload, output, json_out):
        return
    console.print(spectral_table(rep.ratios, f"Spectral imbalance of {source} (minority/majority by "
                                 f"{'train' if counts else 'these'} counts)", names.get("group_names")))
    if len(rep.ratios):
        console.print(f"rho >= 1 in {int((rep.ratios['rho'] >= 1).sum())} of {len(rep.ratios)} classes.")
    else:  # an empty table and "0 of 0 classes" said nothing
        per_class = rep.spectra.groupby("class")["group"].nunique().to_dict() if len(rep.spectra) else {}
        console.print("rho(y) is undefined here: it compares a class's minority and majority group, and no class has "
                      "two groups with at least 2 examples each (groups per class: "
                      + (", ".join(f"{c}: {n}" for c, n in per_class.items()) or "none") + ").")
    _say_written(("results", output), ("figure", plot))


@app.command()
@_clean_errors
def pretrain(
    dataset: str = typer.Option(..., "--dataset", help="Source task, e.g. mnist-digits (10-way MNIST) or digits (embedded, 8x8)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the weights (.pt; loads with weights_only=True)."),
    model: str = typer.Option("lenet5", "--model", help="mlp | lenet5 | resnet | linear: the family finetuned later with --init."),
    width: float = typer.Option(1.0, help="Width multiplier (> 0); finetune with the same --width."),
    epochs: int = typer.Option(3, help="Pretraining epochs."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    batch_size: int = typer.Option(128, help="Mini-batch size."),
    seed: int = typer.Option(0, help="Seed of data and initialisation."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", "-d", help="Folder with the data set's files."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Data-set option key=value (repeatable), e.g. n_train=20000."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Pretrain a model on a source task and save its weights, to finetune with `stratalab train
    --init` (LaBonte et al. 2024 finetune pretrained models; nothing can be downloaded here, so the
    pretraining is ours).

    Example: `stratalab pretrain --dataset mnist-digits -d ../shared/data --width 2 -o lenet-w2.pt`
    """
    from ..data import load
    from ..models import n_params, save_pretrained
    from ..report import check_output_path
    from ..train import TrainConfig, run

    cfg = TrainConfig(model=model, width=width, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, select="val_avg")
    check_output_path(output, (".pt",), "--output")
    ds = load(dataset, data_dir=data_dir, seed=seed, **_parse_options(option))
    t0 = time.perf_counter()
    res = run(ds, cfg)
    shape = ds.train.input_shape
    save_pretrained(res.model, output, model_name=model, width=width, input_shape=shape, n_classes=ds.n_classes,
                    source=ds.name, config=cfg.to_dict())
    info = {"output": str(output), "source": ds.name, "model": model, "width": width, "params": n_params(res.model),
            "source_test_accuracy": res.reports["test"].average_accuracy, "seconds": time.perf_counter() - t0}
    if json_out:
        print(json.dumps(info, indent=2))
        return
    console.print(f"pretrained {model} x{width:g} ({info['params']:,} parameters) on {ds.name}: test accuracy "
                  f"{100 * info['source_test_accuracy']:.1f}%, {info['seconds']:.0f} s; wrote {output}")


@run_app.command("scaling")
@_clean_errors
def run_scaling_cmd(
    ctx: typer.Context,
    dataset: str = typer.Option("spurious-mnist", "--dataset", help="Target task (finetuned)."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Target data-set option key=value, e.g. class_imbalance=5 n_train=6000."),
    pretrain_dataset: str = typer.Option("mnist-digits", help="Source task of the pretraining."),
    pretrain_option: Optional[list[str]] = typer.Option(None, "--pretrain-option", help="Source data-set option key=value."),
    model: str = typer.Option("lenet5", "--model", help="The model family."),
    widths: str = typer.Option("0.25,0.5,1,2,4", help="Comma-separated width multipliers (the family's sizes)."),
    methods: str = typer.Option("erm,subsetting,upsampling,upweighting,mixture", help="Class-balancing methods (erm = none)."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated seeds."),
    epochs: int = typer.Option(10, help="Finetuning epochs."),
    pretrain_epochs: int = typer.Option(3, help="Pretraining epochs per width (0 = no pretraining: train from scratch)."),
    finetune: str = typer.Option("full", help="full | last_layer."),
    lr: float = typer.Option(1e-3, help="Adam learning rate (pretraining and finetuning)."),
    mixture_ratio: float = typer.Option(2.0, help="Mixture balancing: cap each class at r x the smallest class."),
    select: str = typer.Option("val_wga", help="Epoch selection for the table: val_wga | val_wca | val_avg; the last epoch is reported too."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Keep (and reuse) each width's pretrained weights here."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", "-d", help="Folder with the data sets' files."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the study (config, table, every run with its WGA curve) as .json."),
    figure: Optional[Path] = typer.Option(None, "--figure", help="The scaling figure: WGA vs parameters per method (.png/.pdf/.svg)."),
    collapse_figure: Optional[Path] = typer.Option(None, "--collapse-figure", help="WGA over finetuning epochs per method at the largest width."),
    json_out: bool = typer.Option(False, "--json", help="Print the study as JSON."),
    backend: str = typer.Option("local", "--backend", help=BACKEND_HELP + " Tasks: each width's pretraining, each (width, method, seed) finetune."),
    address: AddressOption = None,
    work_dir: WorkDirOption = None,
    threads: ThreadsOption = None,
) -> None:
    """LaBonte et al. (2024) model scaling x class balancing: for each width, pretrain on the source
    task, finetune on the target with each class-balancing method and seed; test worst-group and
    average accuracy against parameter count, and WGA over finetuning epochs (collapse).

    Example: `stratalab run scaling -d ../shared/data --option class_imbalance=5 --option n_train=6000 --figure scaling.png`
    """
    from ..experiments import ScalingConfig, plot_collapse, plot_scaling, run_scaling
    from ..report import check_output_path, scaling_table

    def floats(text: str, what: str) -> tuple[float, ...]:
        try:
            return tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"{what} takes comma-separated numbers, e.g. 0.5,1,2; got {text!r}.") from None

    cfg = ScalingConfig(dataset=dataset, dataset_options=_parse_options(option), pretrain_dataset=pretrain_dataset,
                        pretrain_options=_parse_options(pretrain_option), model=model, widths=floats(widths, "--widths"),
                        methods=tuple(m.strip() for m in methods.split(",") if m.strip()), seeds=tuple(_parse_seeds(seeds)),
                        epochs=epochs, pretrain_epochs=pretrain_epochs, finetune=finetune, lr=lr,
                        mixture_ratio=mixture_ratio, select=select)
    if cfg.pretrain_epochs == 0:
        _refuse_unused(ctx, ["pretrain_dataset", "pretrain_option", "weights_dir"],
                       "with --pretrain-epochs 0 (no pretraining: every width trains from scratch)")
    if "mixture" not in cfg.methods:
        _refuse_unused(ctx, ["mixture_ratio"], "without mixture in --methods")
    check_output_path(output, (".json",), "--output")
    check_output_path(figure, FIGURE_SUFFIXES, "--figure")
    check_output_path(collapse_figure, FIGURE_SUFFIXES, "--collapse-figure")
    if weights_dir is not None and weights_dir.exists() and not weights_dir.is_dir():
        raise ValueError(f"--weights-dir {weights_dir} is a file; give a folder.")
    grid = _backend(backend, address, work_dir, threads)
    res = run_scaling(cfg, data_dir=data_dir, weights_dir=weights_dir, backend=grid,
                      progress=None if json_out else (lambda m: err.print(f"[dim]{m}[/dim]")))
    written = []
    if figure is not None:
        written.append(("scaling figure", plot_scaling(res, figure)))
    if collapse_figure is not None:
        written.append(("collapse figure", plot_collapse(res, collapse_figure)))
    payload = {"invocation": {"command": "run scaling", "config": cfg.to_dict(),
                              "data_dir": _abs(data_dir)}, **res.to_dict()}
    if grid.recorded() is not None:
        payload["invocation"]["backend"] = grid.recorded()
    if _write_payload(payload, output, json_out):
        return
    console.print(scaling_table(res.table(), cfg.dataset, cfg.select))
    console.print(f"{len(res.runs)} finetuning runs in {res.seconds:.0f} s.")
    _say_written(*written)


@run_app.command("cifar-b")
@_clean_errors
def run_cifar_b_cmd(
    dataset: str = typer.Option("cifar10-b", "--dataset", help="cifar10-b | cifar100-b (or any data set with test subgroups)."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Data-set option key=value, e.g. max_train=5000."),
    augment: str = typer.Option("flip_crop,mixup,cutout,cutmix,autoaugment", "--augment",
                                help="Rows, comma-separated: flip_crop (the paper's Standard) | mixup | cutout | cutmix | autoaugment | flowaug (needs --flow)."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds: mean ± std over them."),
    flow: Optional[Path] = typer.Option(None, "--flow", help="The flowaug row's flow, from `stratalab flow train`."),
    flowaug_objective: str = typer.Option("gauss+std", "--flowaug-objective",
                                          help="FlowAug's views: gauss | mix (eq. 2), gauss+std | mix+std (eq. 3), gauss+mix | gauss+mix+std (eq. 4)."),
    flowaug_lambda: float = typer.Option(0.1, "--flowaug-lambda", help="Weight of the standard loss: lambda of eq. (3), lambda2 of eq. (4) (paper: 0.01-0.1)."),
    flowaug_mix_weight: float = typer.Option(1.0, "--flowaug-mix-weight", help="lambda1 of eq. (4), the Mix-z view's weight (paper: 1)."),
    model: str = typer.Option("cifarnet", "--model", help="cifarnet (airbench-style, the CPU recipe) | resnet | lenet5 | mlp."),
    width: float = typer.Option(1.0, help="Width multiplier of the model."),
    epochs: int = typer.Option(20, help="Training epochs."),
    lr: float = typer.Option(0.05, help="SGD learning rate (cosine schedule)."),
    batch_size: int = typer.Option(256, help="Mini-batch size."),
    weight_decay: float = typer.Option(5e-4, help="Weight decay (the paper: 5e-4)."),
    label_smoothing: float = typer.Option(0.0, help="Label smoothing of the targets."),
    corruptions: str = typer.Option("", "--corruptions", help="CIFAR-10-C families to audit under, comma-separated, or 'all' (default: none)."),
    severities: str = typer.Option("1,2,3,4,5", "--severities", help="Corruption severities (1..5)."),
    n_corrupt: Optional[int] = typer.Option(None, "--n-corrupt", help="Audit corruptions on N test images drawn at random, the same for every run (default: all)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", "-d", help="Folder with the data set's files."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the study (config, table, every run) as .json."),
    figure: Optional[Path] = typer.Option(None, "--figure", help="Fig. 1/5: class accuracy beside its worst colour subgroup, per augmentation."),
    json_out: bool = typer.Option(False, "--json", help="Print the study as JSON."),
    backend: str = typer.Option("local", "--backend", help=BACKEND_HELP + " Tasks: each (augmentation, seed)."),
    address: AddressOption = None,
    work_dir: WorkDirOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Chiu, Chen and Ma's subgroup study on CIFAR-10-B / CIFAR-100-B: train with each data
    augmentation and seed, then audit on the colour subgroups of the test set: average accuracy,
    WeightedStd (eq. 5), MacroStd (eq. 6), worst subgroup; the same under CIFAR-10-C corruptions
    (--corruptions), and the correlation of accuracy with MacroStd.

    Example: `stratalab run cifar-b -d ../shared/data --augment flip_crop,cutmix --epochs 10 --corruptions gaussian_noise,fog --n-corrupt 2000`;
    with FlowAug: `stratalab flow train -d ../shared/data -o flow.pt`, then `--augment flip_crop,flowaug --flow flow.pt`.
    """
    from ..augment.corruptions import CORRUPTIONS
    from ..experiments.cifar_b import CifarBConfig, plot_class_vs_worst, run_cifar_b
    from ..report import check_output_path
    from ..report.tables import cifar_b_table

    names = tuple(CORRUPTIONS) if corruptions.strip() == "all" else tuple(c.strip() for c in corruptions.split(",") if c.strip())
    try:
        sev = tuple(int(v) for v in severities.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--severities takes comma-separated integers 1..5, got {severities!r}.") from None
    cfg = CifarBConfig(dataset=dataset, dataset_options=_parse_options(option),
                       augmentations=tuple(a.strip() for a in augment.split(",") if a.strip()),
                       seeds=tuple(_parse_seeds(seeds)), model=model, width=width, epochs=epochs, lr=lr,
                       batch_size=batch_size, weight_decay=weight_decay, label_smoothing=label_smoothing,
                       corruptions=names, severities=sev, n_corrupt=n_corrupt,
                       flow=str(_check_input_file(flow, "flow", (".pt",))) if flow is not None else None,
                       flowaug_objective=flowaug_objective, flowaug_std_weight=flowaug_lambda,
                       flowaug_mix_weight=flowaug_mix_weight)
    check_output_path(output, (".json",), "--output")
    check_output_path(figure, FIGURE_SUFFIXES, "--figure")
    grid = _backend(backend, address, work_dir, threads)
    res = run_cifar_b(cfg, data_dir=data_dir, backend=grid,
                      progress=None if json_out else (lambda m: err.print(f"[dim]{m}[/dim]")))
    written = []
    if figure is not None:
        written.append(("figure", plot_class_vs_worst(res, figure)))
    payload = {"invocation": {"command": "run cifar-b", "config": cfg.to_dict(), "data_dir": _abs(data_dir)}, **res.to_dict()}
    if grid.recorded() is not None:
        payload["invocation"]["backend"] = grid.recorded()
    if _write_payload(payload, output, json_out):
        return
    console.print(cifar_b_table(res.table(), cfg.dataset, bool(cfg.corruptions)))
    corr = res.correlation()
    if corr["runs"] >= 3:
        console.print(f"accuracy vs MacroStd over {corr['runs']} runs: Pearson {corr['pearson']:.2f}, Spearman {corr['spearman']:.2f}.")
    console.print(f"{len(res.runs)} runs in {res.seconds:.0f} s.")
    _say_written(*written)


flow_app = typer.Typer(help="FlowAug's generative flow (Chiu et al. 2023; Ma et al. 2021): train it, draw its augmentations.",
                       no_args_is_help=True)
app.add_typer(flow_app, name="flow")


@flow_app.command("train")
@_clean_errors
def flow_train(
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the flow (.pt; loads with weights_only=True)."),
    dataset: str = typer.Option("cifar10-b", "--dataset", help="Image data set whose train split the flow models (cifar10-b: CIFAR-10)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", "-d", help="Folder with the data set's files."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Data-set option key=value, e.g. max_train=5000."),
    epochs: int = typer.Option(4, help="Passes over the train split."),
    steps: int = typer.Option(4, help="Flow steps per squeeze level (ActNorm, 1x1 conv, coupling conditioned on z)."),
    levels: int = typer.Option(2, help="Squeeze levels (image sides must divide by 2**levels)."),
    hidden: int = typer.Option(64, help="Channels of each coupling network."),
    z_dim: int = typer.Option(64, "--z-dim", help="Size of the global latent z that FlowAug edits."),
    free_bits: float = typer.Option(0.1, "--free-bits", help="Nats per z dimension the KL is not pushed below (keeps z in use)."),
    lr: float = typer.Option(1e-3, help="Adam learning rate (linear warm-up over 200 steps)."),
    batch_size: int = typer.Option(64, help="Mini-batch size."),
    n_eval: int = typer.Option(2000, "--n-eval", help="Test images on which bits/dim is reported (0: skip)."),
    seed: int = typer.Option(0, help="Seed of initialisation, batches, dequantisation and z samples."),
    json_out: bool = typer.Option(False, "--json", help="Print the record (config, history, bits/dim) as JSON."),
) -> None:
    """Train the decoupled generative flow behind FlowAug (global z from an encoder, a Glow
    conditioned on z for the local part) on a data set's train split, and report its bits/dim.

    Example: `stratalab flow train -d ../shared/data --epochs 4 -o flow.pt`, then
    `stratalab flow samples flow.pt -d ../shared/data -o samples.png` and
    `stratalab run cifar-b -d ../shared/data --augment flip_crop,flowaug --flow flow.pt`.
    """
    import numpy as np
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..data import load
    from ..models.flow import FlowConfig, bits_per_dim, save_flow, train_flow
    from ..report import check_output_path

    check_output_path(output, (".pt",), "--output")
    if n_eval < 0:
        raise ValueError(f"--n-eval must be >= 0, got {n_eval}.")
    settings = dict(levels=levels, steps=steps, hidden=hidden, z_dim=z_dim, free_bits=free_bits, epochs=epochs,
                    batch_size=batch_size, lr=lr, seed=seed)
    if isinstance(levels, int) and 1 <= levels <= 16:  # every setting but the image size, before any data is read
        FlowConfig(image_shape=(3, 2 ** levels, 2 ** levels), **settings)  # type: ignore[arg-type]
    ds = load(dataset, data_dir=data_dir, seed=seed, **_parse_options(option))
    shape = ds.train.input_shape
    if len(shape) != 3:
        raise ValueError(f"{ds.name} has inputs of shape {shape}; the flow needs images (C, H, W).")
    cfg = FlowConfig(image_shape=shape, **settings)  # type: ignore[arg-type]
    x = np.asarray(ds.train.load_x(), dtype=np.float32)
    test_x = None
    if n_eval and ds.test is not None:
        pick = np.random.default_rng(0).permutation(len(ds.test))[:n_eval]
        test_x = np.asarray(ds.test.load_x(np.sort(pick)), dtype=np.float32)
    t0 = time.perf_counter()
    with Progress(TextColumn(f"flow on {ds.name}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err, disable=json_out) as bar:
        task = bar.add_task("flow", total=None)

        def said(row: dict[str, Any]) -> None:
            if not json_out:
                err.print(f"epoch {row['epoch']}/{epochs}: train bits/dim {row['train_bpd']:.3f}, KL(z) "
                          f"{row['kl_nats']:.1f} nats, {row['seconds']:.0f} s")

        flow, history = train_flow(x, cfg, progress=said, on_step=lambda k, n: bar.update(task, completed=k, total=n))
    train_seconds = time.perf_counter() - t0
    record: dict[str, Any] = {"dataset": ds.name, "n_train": int(len(x)), "train_seconds": train_seconds,
                              "test_bpd": bits_per_dim(flow, test_x, seed=seed) if test_x is not None else None,
                              "n_eval": int(len(test_x)) if test_x is not None else 0}
    save_flow(flow, output, history=history, extra=record)
    info = {"output": str(output), "config": cfg.to_dict(), "history": history, **record}
    if json_out:
        print(json.dumps(info, indent=2))
        return
    bpd = f"test bits/dim {record['test_bpd']:.3f} on {record['n_eval']} images" if record["test_bpd"] is not None else "no test images"
    console.print(f"flow on {ds.name} ({len(x):,} images, {epochs} epochs, {train_seconds:.0f} s): {bpd}; "
                  f"KL(z) {history[-1]['kl_nats']:.1f} nats; wrote {output}")


@flow_app.command("samples")
@_clean_errors
def flow_samples(
    flow_path: Path = typer.Argument(..., help="A flow written by `stratalab flow train`."),
    output: Path = typer.Option(..., "--output", "-o", help="The figure (.png, .pdf or .svg)."),
    dataset: str = typer.Option("cifar10-b", "--dataset", help="Data set whose test images are augmented."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", "-d", help="Folder with the data set's files."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Data-set option key=value."),
    n: int = typer.Option(8, "--n", help="Images (columns) to show, in same-class pairs (an odd number is rounded down)."),
    sigma: str = typer.Option("0.1,0.5", "--sigma", help="Algorithm 1's sigma per row (the paper: 0.1)."),
    seed: int = typer.Option(0, help="Seed of the images picked and of the noise."),
    json_out: bool = typer.Option(False, "--json", help="Print the mean absolute pixel change of each row as JSON."),
) -> None:
    """Draw FlowAug's augmentations of test images: the originals, the flow's reconstruction
    F_dec(F_enc(x)), Algorithm 1 (truncated Gaussian on z) at each --sigma, Algorithm 2 (z mixed
    with a same-class image's, m ~ Beta(1, 1) >= 0.5), and z swapped entirely (m = 0).
    """
    from ..augment.flowaug import flow_sample_rows, plot_flow_samples
    from ..data import load
    from ..models.flow import load_flow
    from ..report import check_output_path

    check_output_path(output, FIGURE_SUFFIXES, "--output")
    sigmas = _parse_floats(sigma, "--sigma")
    if not 2 <= n <= MAX_SAMPLE_COLUMNS:  # --n 100000000 hung drawing a figure of that many columns
        raise ValueError(f"--n must be in 2..{MAX_SAMPLE_COLUMNS} (one column of the figure per image; Algorithm 2 "
                         f"needs a partner), got {n}.")
    flow, record = load_flow(_check_input_file(flow_path, "flow", (".pt",)))
    ds = load(dataset, data_dir=data_dir, seed=seed, **_parse_options(option))
    rows = flow_sample_rows(flow, ds.test, n=n - n % 2, sigmas=sigmas, seed=seed)
    plot_flow_samples(rows, output, title=f"FlowAug on {ds.name} (flow: {flow_path.name})")
    change = {name: float(v["change"]) for name, v in rows.items()}
    if json_out:
        print(json.dumps({"output": str(output), "mean_abs_pixel_change": change}, indent=2))
        return
    console.print("mean |pixel change| vs the original: " + ", ".join(f"{k} {v:.4f}" for k, v in change.items()))
    _say_written(("figure", output))


MAX_SAMPLE_COLUMNS = 64  # flow samples: images (columns) a figure shows


def _parse_floats(text: str, option: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{option} takes comma-separated numbers, got {text!r}.") from None
    if not vals or any(not math.isfinite(v) or v <= 0 for v in vals):
        raise ValueError(f"{option} takes finite numbers > 0, got {text!r}.")
    check_unique(vals, option)
    return vals


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
    from ..report.results import load_result

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
@_clean_errors
def bench(
    results: list[Path] = typer.Argument(..., help="Result files (.json written with -o) or folders of them."),
    metric: Optional[list[str]] = typer.Option(None, "--metric", help="Keep only this metric (repeatable), e.g. test_wga, test_average, val_wga."),
    confidence: float = typer.Option(0.95, help="Level of the intervals (Student-t over seeds; the file's bootstrap interval for a single audit)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the table: .csv, .parquet or .json."),
    json_out: bool = typer.Option(False, "--json", help="Print the table as JSON instead of a table."),
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
    _not_an_input(output, "--output", *_result_files(results))
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
    _say_written(("table", output))


@app.command()
@_clean_errors
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
    _not_an_input(output, "--output", *_result_files(results))
    loaded, skipped = _load_results(results, skip_others=True)
    for line in skipped:
        err.print(f"[yellow]skipped[/yellow] {line}")
    _say_written(("report", write_html(output, loaded, title)))


if __name__ == "__main__":  # pragma: no cover
    app()
