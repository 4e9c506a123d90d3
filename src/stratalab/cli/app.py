"""The ``stratalab`` Typer application: the command groups, the two consoles and the one error
policy of every command (:func:`clean_errors`). Commands live in the sibling modules."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from typing import Any, Callable

import typer
from rich.console import Console

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
flow_app = typer.Typer(help="FlowAug's generative flow (Chiu et al. 2023; Ma et al. 2021): train it, draw its augmentations.",
                       no_args_is_help=True)
app.add_typer(flow_app, name="flow")

# Piped output (no terminal, no $COLUMNS) is not cut to rich's default 80 columns: tables keep their
# natural width ("lambd...", "minor..." in a log file helped nobody). A terminal keeps its own width.
_PIPED_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 4096
console = Console(width=_PIPED_WIDTH)
err = Console(stderr=True, width=None if sys.stderr.isatty() or os.environ.get("COLUMNS") else 4096)


def _pass_through() -> tuple[type[BaseException], ...]:
    """typer's own exits and usage errors (typer >= 0.2x vendors click; older typers use click)."""
    out: list[type[BaseException]] = [typer.Exit, typer.Abort]
    try:
        from typer._click.exceptions import ClickException
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


def _os_message(e: OSError) -> str:
    if isinstance(e, FileNotFoundError) and not e.filename:
        return str(e)
    where = f": {e.filename}" if e.filename else ""
    return f"{e.strerror or e}{where}" if e.strerror else str(e)


@contextlib.contextmanager
def plain_warnings() -> Any:
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


def clean_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user-facing errors into one clear line on stderr and exit code 2 (no traceback). Any
    other exception is a bug: one line saying so, exit code 1 (``STRATALAB_DEBUG=1`` shows the
    traceback)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with plain_warnings():
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
