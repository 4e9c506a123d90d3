"""The ``stratalab`` command: the Typer application of :mod:`stratalab.cli.app` with every command
module registered on it (``stratalab = stratalab.cli.main:app``)."""

from __future__ import annotations

from . import analysis, data_cmds, flow, results, run, train  # noqa: F401  (each registers its commands)
from .app import app, console, err

__all__ = ["app", "console", "err"]

if __name__ == "__main__":  # pragma: no cover
    app()
