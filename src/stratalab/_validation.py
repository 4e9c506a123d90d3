"""Input checks shared by every public function.

Each check raises ``ValueError`` (or ``TypeError``) with one sentence that names the argument,
what is wrong with it, and how to fix it, so that users never see a traceback from deep inside numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_UINT_LABEL = 2**63 - 1  # an unsigned label above this would wrap around in int64
MAX_FLOAT_LABEL = 2**53  # a float above this is not an exact whole number


def as_label_array(values: Any, name: str, *, n: int | None = None, n_name: str = "y_true") -> np.ndarray:
    """Return ``values`` as a 1-D int64 array of non-negative integer labels.

    Accepts integer arrays, and float arrays whose values are all whole numbers (as pandas gives
    for integer columns read from CSV). Rejects NaN, infinities, non-integers, negatives, floats
    beyond 2**53 and unsigned values beyond int64 (they would wrap around), and wrong lengths
    (``n``, the length of ``n_name``).
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        if arr.ndim == 2 and 1 in arr.shape:
            arr = arr.reshape(-1)
        else:
            raise ValueError(f"{name} must be a 1-D array of integer labels, got shape {arr.shape}.")
    if n is not None and arr.shape[0] != n:
        raise ValueError(
            f"{name} has {arr.shape[0]} entries but {n_name} has {n}; pass one label per example."
        )
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if arr.dtype.kind in "iu":
        if arr.size and arr.dtype.kind == "u" and arr.max() > MAX_UINT_LABEL:
            i = int(np.argmax(arr))
            raise ValueError(f"{name} holds label {arr[i]} at position {i}, beyond int64; use labels 0..K-1.")
        out = arr.astype(np.int64, copy=False)
    elif arr.dtype.kind == "f":
        if np.isnan(arr).any():
            i = int(np.flatnonzero(np.isnan(arr))[0])
            raise ValueError(
                f"{name} contains NaN (first at position {i}); drop or fill those rows before computing metrics."
            )
        if not np.isfinite(arr).all() or (arr.size and np.abs(arr).max() > MAX_FLOAT_LABEL):
            i = int(np.flatnonzero(~np.isfinite(arr) | (np.abs(np.where(np.isfinite(arr), arr, 0)) > MAX_FLOAT_LABEL))[0])
            raise ValueError(f"{name} holds {float(arr[i])!r} at position {i}, not a label; use integer labels 0..K-1.")
        if not np.all(np.mod(arr, 1) == 0):
            i = int(np.flatnonzero(np.mod(arr, 1) != 0)[0])
            raise ValueError(
                f"{name} must hold integer labels, but position {i} is {arr[i]!r}; "
                "map labels to integers 0..K-1 first."
            )
        out = arr.astype(np.int64)
    else:
        raise TypeError(
            f"{name} must hold integer labels, got dtype {arr.dtype}; "
            "encode string labels as integers 0..K-1 first (e.g. with pandas.factorize)."
        )
    if out.size and out.min() < 0:
        i = int(np.flatnonzero(out < 0)[0])
        raise ValueError(f"{name} must be non-negative, but position {i} is {out[i]}; use labels 0..K-1.")
    return out


def check_probabilities(scores: Any, n: int, name: str = "y_score") -> np.ndarray:
    """Return scores as float64, shape (n,) for binary or (n, C); reject non-numbers, NaN and values
    outside [0, 1]."""
    raw = np.asarray(scores)
    if raw.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers (probabilities), got dtype {raw.dtype}.")
    arr = raw.astype(np.float64)
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise ValueError(f"{name} has no columns; pass the positive-class probability (n,) or class probabilities (n, C).")
    if arr.ndim not in (1, 2) or arr.shape[0] != n:
        raise ValueError(
            f"{name} must have shape (n,) with the positive-class probability or (n, C) with class "
            f"probabilities, n = {n}; got shape {arr.shape}."
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values; pass probabilities in [0, 1].")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(
            f"{name} must hold probabilities in [0, 1] (got range [{arr.min():.3g}, {arr.max():.3g}]); "
            "apply a softmax or sigmoid to logits first."
        )
    return arr


def available_memory() -> int:
    """Bytes of memory this machine can still give (Linux ``MemAvailable``; elsewhere the physical
    memory), for refusing a setting before it allocates more than there is."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 2**62  # unknown: do not refuse


def check_fits_in_memory(nbytes: float, what: str, fix: str) -> None:
    """Refuse, before any allocation, a setting whose estimated memory ``nbytes`` exceeds what the
    machine has available (these used to end in "internal error: MemoryError" or a hang)."""
    have = available_memory()
    if nbytes > have:
        raise ValueError(f"{what} needs about {_size(nbytes)} of memory, more than the {_size(have)} available here; {fix}.")


def _size(nbytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{nbytes:,.0f} bytes"


MAX_NESTING = 64  # levels of lists / mappings a config or result file may nest


def parse_structured(text: str, what: str, *, yaml: bool = False, **json_kw: Any) -> Any:
    """Parse JSON (or YAML with ``yaml=True``, safe loader only) and refuse nesting deeper than
    :data:`MAX_NESTING` levels with one line: a crafted file nested thousands deep used to end in
    "internal error: RecursionError", in the parser or in the code that walks the result. Parse
    errors themselves are left to the caller (``json.JSONDecodeError`` / ``yaml.YAMLError``)."""
    import json

    try:
        if yaml:
            import yaml as _yaml

            obj = _yaml.safe_load(text)
        else:
            obj = json.loads(text, **json_kw)
    except RecursionError:
        raise ValueError(f"{what} nests lists or mappings too deeply to read (over {MAX_NESTING} levels); "
                         "a stratalab file nests a few levels.") from None
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > MAX_NESTING:
                raise ValueError(f"{what} nests lists or mappings {MAX_NESTING}+ levels deep; a stratalab file nests a few.")
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return obj


def as_feature_matrix(x: Any, name: str, *, dtype: Any = np.float64, flatten: bool = False,
                      n: int | None = None, n_name: str = "the split") -> np.ndarray:
    """``x`` as a finite numeric (n, d) array of ``dtype``, n >= 1 and d >= 1: the one check of
    every feature matrix (GEORGE's clustering, user embeddings, spectral analysis). ``flatten``
    takes (n, ...) arrays and flattens each row; ``n`` is the number of rows ``n_name`` has."""
    raw = np.asarray(x)
    if raw.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers (an (n, d) array of features), got dtype {raw.dtype}.")
    if flatten and raw.ndim >= 1:
        raw = raw.reshape(raw.shape[0], -1)
    if raw.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_examples, n_features), got shape {raw.shape}.")
    if raw.shape[0] == 0 or raw.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {raw.shape}); give at least one example with at least one feature.")
    arr = raw.astype(dtype)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values; check the model's activations or clean them first.")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows but {n_name} has {n}; give one row per example.")
    return arr


def check_int(value: Any, name: str, *, low: int | None = None, hint: str = "") -> int:
    """``value`` as an int: an integer, or a float that is a whole number (as YAML and JSON may
    give); a bool, NaN, infinity or fraction is refused, as is a value below ``low``."""
    import math

    whole = isinstance(value, (int, np.integer)) or (isinstance(value, (float, np.floating)) and math.isfinite(value)
                                                     and float(value).is_integer())
    if isinstance(value, (bool, np.bool_)) or not whole:
        raise ValueError(f"{name} must be an integer, got {value!r}.{(' ' + hint) if hint else ''}")
    if low is not None and int(value) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {int(value)}.{(' ' + hint) if hint else ''}")
    return int(value)


def check_finite(value: Any, name: str, *, low: float | None = None, low_open: bool = False,
                 high: float | None = None, hint: str = "") -> float:
    """``value`` as a float: anything ``float()`` reads (a numpy float, a YAML string such as
    ``"1e-6"``), finite and within [low, high] (``low_open``: > low); otherwise one clear sentence."""
    import math

    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}.{(' ' + hint) if hint else ''}") from None
    ok = math.isfinite(v) and (low is None or (v > low if low_open else v >= low)) and (high is None or v <= high)
    if not ok:
        rng = (f" > {low:g}" if low_open else f" >= {low:g}") if low is not None else ""
        rng += f" and <= {high:g}" if high is not None else ""
        raise ValueError(f"{name} must be a finite number{rng}, got {value!r}.{(' ' + hint) if hint else ''}")
    return v


def check_unique(values: Any, name: str) -> None:
    """Refuse a list setting that names one value twice (``methods=("erm", "erm")`` used to report
    two runs where one ran; ``severities=(1, 1)`` ran and averaged the same audit twice)."""
    seen: set[Any] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{name} lists {v!r} twice; give each value once.")
        seen.add(v)


def check_random_state(seed: int | np.random.Generator | None) -> np.random.Generator:
    """Turn a seed (or None, or a Generator) into a numpy Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)
