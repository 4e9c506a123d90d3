"""File helpers shared by the on-disk loaders: CSV checks, split columns, image reading."""

from __future__ import annotations

import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._io import file_sha256

SPLIT_CODES = {"0": "train", "1": "val", "2": "test", "train": "train", "val": "val", "valid": "val",
               "validation": "val", "test": "test"}


def read_csv_checked(path: Path, columns: Sequence[str], **kwargs) -> pd.DataFrame:
    """Read a CSV and check it has ``columns``; errors name the file and the missing column."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        df = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise ValueError(f"{path} could not be read as CSV: {e}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path} has no column {missing[0]!r}; expected columns {', '.join(columns)}, found {', '.join(map(str, df.columns))}."
        )
    return df


CHECKSUM_FILE = "SHA256SUMS"
_VERIFIED: dict[tuple[str, int, int], str] = {}


def verify_checksum(path: Path) -> bool:
    """Check ``path`` against a ``SHA256SUMS`` file in the same folder (``sha256sum`` format), when
    that file lists it. Returns True if verified, False if no checksum is known; raises ValueError
    naming the file on a mismatch (a truncated download, a bit flip, a different release). A file
    is hashed once per process (keyed by path, size and modification time)."""
    sums = path.parent / CHECKSUM_FILE
    if not sums.is_file():
        return False
    expected = None
    try:
        for line in sums.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("*") == path.name:
                expected = parts[0].lower()
    except (OSError, UnicodeDecodeError):
        return False
    if expected is None:
        return False
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    got = _VERIFIED.get(key) or file_sha256(path)
    if got != expected:
        raise ValueError(f"{path} does not match its checksum in {sums} (sha256 {got[:12]}..., expected "
                         f"{expected[:12]}...): the file is corrupt or truncated; copy it again.")
    _VERIFIED[key] = got
    return True


def read_npz(path: Path, keys: Sequence[str] | None = None, *, what: str = "") -> dict[str, np.ndarray]:
    """Read arrays from an ``.npz`` safely: never unpickles (``allow_pickle=False``), reads every
    array eagerly so a truncated or corrupt file fails here, and turns numpy's and zipfile's
    errors into one ValueError that names the file. ``keys``: the arrays that must be present (all
    arrays are returned)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} {'is a directory' if path.is_dir() else 'does not exist'}; give an .npz file{what}.")
    kind = _file_kind(path)
    if kind not in ("zip", "npy", "pickle"):  # numpy reads anything else as "pickled data"
        raise ValueError(f"{path} is not a readable .npz file ({kind}, not a zip archive of .npy arrays); write it "
                         f"with numpy.savez{what}.")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not hasattr(loaded, "files"):  # a single .npy array saved under an .npz name
            raise ValueError("it holds a single .npy array, not an .npz archive of named arrays")
        with loaded as f:
            names = list(f.files)
            missing = [k for k in (keys or []) if k not in names]
            if missing:
                raise KeyError(missing[0])
            return {k: f[k] for k in names}
    except KeyError as e:
        raise ValueError(f"{path} lacks array {e.args[0]!r}{what}; it has: {', '.join(names) or 'no arrays'}.") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "pickle" in reason.lower():
            reason = "it holds Python objects (pickled), which stratalab never loads"
        raise ValueError(f"{path} is not a readable .npz file ({reason[:160]}); it may be truncated or corrupt{what}.") from None


def _file_kind(path: Path) -> str:
    """What a file's first bytes say it is: zip (an .npz), npy, pickle, empty, text or binary."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return "unreadable"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[:1] == b"\x80":
        return "pickle"
    if not head:
        return "an empty file"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "binary data of an unknown format"


def normalise_split_column(col: pd.Series, path: Path) -> np.ndarray:
    """Map split codes (0/1/2 or train/val/test) to 'train'/'val'/'test'."""
    s = col.astype(str).str.strip().str.lower()
    s = s.str.replace(r"\.0$", "", regex=True)
    bad = ~s.isin(list(SPLIT_CODES))
    if bad.any():
        v = col[bad].iloc[0]
        raise ValueError(f"{path}: split value {v!r} is not one of train/val/test or 0/1/2.")
    return s.map(SPLIT_CODES).to_numpy()


def check_files_exist(files: np.ndarray, listed_in: Path) -> None:
    """Fail with the first missing file (and how many are missing) before any training starts."""
    import os

    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(files)} image files listed in {listed_in} are missing, e.g. {missing[0]}; "
            "check the image root folder (root=... / --data-dir)."
        )


class ImageLoader:
    """Reads image files into float32 ``(n, 3, S, S)`` in [0, 1] (RGB).

    ``size``: the side of the output (None keeps the files' size). ``crop`` < 1 resizes to
    ``size / crop`` and cuts the central ``size x size`` (Sagawa et al.'s Waterbirds evaluation
    transform: 256, then the central 224, ``crop = 0.875``); ``crop = 1`` resizes to ``size``.
    ``cache_mb``: decoded images (uint8, after resizing) are kept, least recently used first out,
    up to this many MiB per process, so later epochs skip the JPEG decoding; 0 keeps none.
    """

    def __init__(self, size: int | None = 64, crop: float = 1.0, cache_mb: float = 0.0) -> None:
        if not 0 < float(crop) <= 1:
            raise ValueError(f"crop must be in (0, 1] (the central fraction kept, e.g. 0.875 = 224 of 256), got {crop!r}.")
        if not float(cache_mb) >= 0:
            raise ValueError(f"cache_mb must be >= 0 MiB, got {cache_mb!r}.")
        self.size, self.crop, self.cache_mb = size, float(crop), float(cache_mb)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cached_bytes = 0

    def _read(self, f: str) -> np.ndarray:
        from PIL import Image

        with Image.open(f) as opened:
            im = opened.convert("RGB")
            if self.size is not None:
                side = int(round(self.size / self.crop))
                im = im.resize((side, side), Image.Resampling.BILINEAR)
                if side != self.size:
                    off = (side - self.size) // 2
                    im = im.crop((off, off, off + self.size, off + self.size))
            return np.asarray(im, dtype=np.uint8)

    def _get(self, f: str) -> np.ndarray:
        hit = self._cache.get(f)
        if hit is not None:
            self._cache.move_to_end(f)
            return hit
        arr = self._read(f)
        budget = self.cache_mb * 2**20
        if arr.nbytes <= budget:
            self._cache[f] = arr
            self._cached_bytes += arr.nbytes
            while self._cached_bytes > budget:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= old.nbytes
        return arr

    def __call__(self, files: Sequence[str]) -> np.ndarray:
        out = [self._get(str(f)) for f in files]
        if not out:
            return np.zeros((0, 3, self.size or 0, self.size or 0), dtype=np.float32)
        shapes = {a.shape for a in out}
        if len(shapes) > 1:
            raise ValueError(f"images have different sizes {sorted(shapes)[:3]}; pass image_size to resize them.")
        arr = np.stack(out).transpose(0, 3, 1, 2).astype(np.float32)
        arr /= np.float32(255.0)  # in place: one float copy of the batch, not two
        return arr

    def __getstate__(self) -> dict[str, Any]:  # a worker process starts with an empty cache of its own
        return {"size": self.size, "crop": self.crop, "cache_mb": self.cache_mb}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"ImageLoader(size={self.size}, crop={self.crop:g}, cache_mb={self.cache_mb:g})"
