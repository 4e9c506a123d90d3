"""The low-level file helpers every layer uses: atomic writes (a file is complete or absent, never
half-written), the sha256 of a file, and the check of an input file before any work."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["write_atomic", "write_bytes_atomic", "save_figure_atomic", "file_sha256", "check_input_file"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file in the target's folder, then rename it onto ``path``:
    the result is complete or absent. The file gets the usual permissions (0666 minus the umask),
    not mkstemp's 0600."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"cannot write {target}: it is a directory; give a file name.")
    if target.parent and not target.parent.exists():
        raise FileNotFoundError(f"cannot write {target}: folder {target.parent} does not exist.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=target.parent or ".")
    except OSError as e:
        raise ValueError(f"cannot write {target} ({e.strerror}); choose a writable folder.") from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """``data`` written to ``path`` atomically (:func:`write_atomic`)."""
    return write_atomic(path, lambda p: p.write_bytes(data))


def save_figure_atomic(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Save a matplotlib figure (format from the suffix, png by default) atomically. Figures here are
    built as ``matplotlib.figure.Figure`` objects, not through pyplot, so no backend is chosen or
    changed (the user's own ``matplotlib.use`` is left alone) and nothing needs closing; a pyplot
    figure is closed after saving."""
    try:
        return write_atomic(path, lambda p: fig.savefig(p, format=Path(path).suffix.lstrip(".") or "png"))
    finally:
        import sys

        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close(fig)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (the identity of a user's file or a flow in
    task keys and checkpoints)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_input_file(path: str | os.PathLike[str], what: str, suffixes: tuple[str, ...] = ()) -> Path:
    """``path`` as an existing file with one of ``suffixes``, or one error naming ``what`` and the fix."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{what} {p} is a directory; give a file.")
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} does not exist.")
    if suffixes and p.suffix.lower() not in suffixes:
        raise ValueError(f"{what} {p}: unknown format {p.suffix or '(no suffix)'!r}; use {' or '.join(suffixes)}.")
    return p
