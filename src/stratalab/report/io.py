"""Atomic writes: a result file is either complete or absent, never half-written."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import write_atomic


def check_output_path(path: str | os.PathLike[str] | None, suffixes: tuple[str, ...], what: str) -> Path | None:
    """Check, before any work, that a result can be written to ``path``: its suffix is one of
    ``suffixes``, its folder exists and is writable, and it is not itself a folder. Raises one
    ValueError / FileNotFoundError naming the option and the fix; returns the path (or None)."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{what} {p} is a directory; give a file name inside it, e.g. {p / ('result' + suffixes[0])}.")
    if suffixes and p.suffix.lower() not in suffixes:
        raise ValueError(f"{what} {p}: unknown format {p.suffix or '(no suffix)'!r}; use {' or '.join(suffixes)}.")
    parent = p.parent
    if not parent.exists():
        raise FileNotFoundError(f"{what} {p}: folder {parent} does not exist; create it first (mkdir -p {parent}).")
    if not parent.is_dir():
        raise ValueError(f"{what} {p}: {parent} is a file, not a folder.")
    try:  # the one reliable test of writability (ACLs, read-only mounts, root)
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{what} {p}: cannot write in {parent} ({e.strerror}); choose a writable folder.") from None
    if p.exists() and not os.access(p, os.W_OK):
        raise ValueError(f"{what} {p} exists and is not writable; choose another file name.")
    return p


def json_text(obj: Any, indent: int | None = None) -> str:
    """``obj`` as JSON the way result files are written: numpy numbers and arrays as plain ones,
    a numpy NaN as null, and any other NaN or infinity refused (ValueError)."""
    return json.dumps(obj, indent=indent, allow_nan=False, default=_default)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NaN written as null) to ``path`` atomically."""
    text = json_text(obj, indent=2)
    return write_atomic(path, lambda p: p.write_text(text + "\n"))


def _default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if np.isnan(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")


def write_table_atomic(path: str | os.PathLike[str], df: pd.DataFrame) -> Path:
    """Write a table as CSV or Parquet (by suffix) atomically."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return write_atomic(path, lambda p: df.to_csv(p, index=False))
    if suffix in (".parquet", ".pq"):
        return write_atomic(path, lambda p: df.to_parquet(p, index=False))
    raise ValueError(f"unknown table format {suffix!r} for {path}; use .csv or .parquet.")
