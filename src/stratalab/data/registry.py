"""Name -> loader registry behind :func:`stratalab.data.load`."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .core import Dataset

DATA_DIR_ENV = "STRATALAB_DATA_DIR"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    summary: str
    needs_files: str  # "" when the data set works anywhere
    fn: Callable[..., Dataset]

    def options(self) -> dict[str, Any]:
        """Keyword options with their defaults (excluding data_dir and seed)."""
        sig = inspect.signature(self.fn)
        return {
            k: p.default
            for k, p in sig.parameters.items()
            if k not in ("data_dir", "seed") and p.kind is inspect.Parameter.KEYWORD_ONLY
        }


_REGISTRY: dict[str, DatasetInfo] = {}


def register(name: str, summary: str, needs_files: str = "") -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    def deco(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        _REGISTRY[name] = DatasetInfo(name, summary, needs_files, fn)
        return fn

    return deco


def available() -> list[DatasetInfo]:
    """Every registered data set, in registration order."""
    return list(_REGISTRY.values())


def info(name: str) -> DatasetInfo:
    if name not in _REGISTRY:
        raise KeyError(name)
    return _REGISTRY[name]


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path | None:
    """``data_dir`` if given, else ``$STRATALAB_DATA_DIR`` if set, else None."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else None


def require_file(data_dir: Path | None, filename: str, dataset: str, *alternatives: str) -> Path:
    """Find ``filename`` in ``data_dir`` (or one of the alternative relative paths), or fail clearly."""
    if data_dir is None:
        raise FileNotFoundError(
            f"data set {dataset!r} reads {filename} from a data directory: pass data_dir=... "
            f"(CLI: --data-dir) or set ${DATA_DIR_ENV}."
        )
    if data_dir.exists() and not data_dir.is_dir():
        raise NotADirectoryError(f"data directory {data_dir} is a file; give the folder that holds {filename}.")
    candidates = [data_dir / filename] + [data_dir / a for a in alternatives]
    for c in candidates:
        if c.is_dir():
            raise ValueError(f"data set {dataset!r} reads the file {c}, but it is a directory; put the {filename} file there.")
        if c.is_file():
            from .files import verify_checksum

            verify_checksum(c)
            return c
    raise FileNotFoundError(
        f"data set {dataset!r} needs {filename}, not found in {data_dir} "
        f"(looked for: {', '.join(str(c) for c in candidates)}); put the file there or pass the right data_dir."
    )


def load(name: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None, seed: int = 0, **options: Any) -> Dataset:
    """Load a data set by name, or a user's own ``.npz`` / ``.csv`` file by path.

    Parameters
    ----------
    name : str or path
        A registered name (``stratalab datasets`` lists them), or the path of a user's ``.npz``
        (keys ``x_{split}``, ``y_{split}``, optional ``g_{split}``) or ``.csv`` (columns
        ``id,filename,split,y,a``; images under ``root``, default the CSV's folder).
    data_dir : path, optional
        Where the data set's files lie (default ``$STRATALAB_DATA_DIR``).
    seed : int
        Seed of every random choice the construction makes (splits, subsampling, noise).
    **options
        Data-set specific options; ``stratalab datasets show NAME`` lists them.
    """
    sname = str(name)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}.")
    if sname not in _REGISTRY:
        p = Path(sname).expanduser()
        if p.is_dir():
            raise ValueError(f"{p} is a directory; give a data set name (stratalab datasets lists them) or the path of "
                             "your .npz or .csv file. A data set's own folder goes in --data-dir.")
        if p.suffix.lower() in (".npz", ".csv"):
            from .user import load_user

            return load_user(p, seed=seed, **options)
        raise ValueError(
            f"unknown data set {sname!r}; known: {', '.join(_REGISTRY)}; or give the path of an .npz or .csv file."
        )
    entry = _REGISTRY[sname]
    valid = entry.options()
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise TypeError(
            f"data set {sname!r} has no option {unknown[0]!r}; its options are: "
            + (", ".join(f"{k}={v!r}" for k, v in valid.items()) or "none")
        )
    for k, v in options.items():  # a value of the wrong kind fails here, not deep inside the loader
        default = valid[k]
        if v is None or default is None:  # None-able options and free-form ones are checked by the loader
            continue
        number = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        if isinstance(default, bool) and not isinstance(v, bool):
            raise TypeError(f"data set option {k} must be True or False, got {v!r}.")
        if isinstance(default, (int, float)) and not isinstance(default, bool) and not number:
            raise TypeError(f"data set option {k} must be a number (default {default!r}), got {v!r}.")
        if isinstance(default, str) and not isinstance(v, str):
            raise TypeError(f"data set option {k} must be a string (default {default!r}), got {v!r}.")
    kwargs: dict[str, Any] = dict(options)
    params = inspect.signature(entry.fn).parameters
    if "data_dir" in params:
        kwargs["data_dir"] = resolve_data_dir(data_dir)
    if "seed" in params:
        kwargs["seed"] = seed
    ds = entry.fn(**kwargs)
    ds.options = {"seed": seed, **{k: options.get(k, v) for k, v in valid.items()}}
    return ds
