"""Where a model runs and in what precision: the one place that names a device, moves a batch to
it and opens mixed precision.

Everything that trains or featurises (the training loop, :func:`stratalab.models.embed`, TRAK, the
flow) reads its device from the model (:func:`model_device`) and moves each batch with
:func:`to_device`; sampling, augmentation and their seeded generators stay on the CPU, so a seed
draws the same batches and the same augmented images on every device.

``precision``: ``fp32`` (no autocast: exactly the numbers of a run without this module), ``bf16``
(:func:`torch.autocast` to bfloat16: no loss scaling needed) or ``fp16`` (autocast to float16 with a
:class:`torch.amp.GradScaler`, as in PyTorch's AMP recipe).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICE_HELP = ("auto (a CUDA GPU when present, else Apple's mps, else the CPU), cpu, cuda, cuda:i or mps; "
               "a device that is not present is refused before any work")
PRECISION_HELP = ("fp32 (default: exact), bf16 (autocast to bfloat16; fast on GPUs and on CPUs with AVX-512 BF16 / AMX) "
                  "or fp16 (autocast to float16 with loss scaling; GPUs)")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def check_device_spec(spec: str) -> str:
    """``spec`` lower-cased and stripped if it names a device kind (auto, cpu, cuda, cuda:i, mps),
    else one ValueError naming the choices. Presence is not checked (see :func:`resolve_device`)."""
    s = str(spec).strip().lower()
    if not _DEVICE_RE.match(s):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:<index> or mps; got {spec!r}.")
    return s


def resolve_device(spec: str = "auto") -> str:
    """The concrete device ``spec`` names on this machine, as a string (``"cpu"``, ``"cuda:0"``,
    ``"mps"``), or one ValueError that says what is missing and what to use instead.

    ``auto`` takes the first CUDA GPU, else mps, else the CPU. ``cuda`` means ``cuda:0``.
    """
    s = check_device_spec(spec)
    if s == "auto":
        return "cuda:0" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if s == "cpu":
        return "cpu"
    if s == "mps":
        if not _mps_available():
            raise ValueError("device 'mps' is not present on this machine (torch.backends.mps.is_available() is "
                             "False); use --device cpu or auto.")
        return "mps"
    index = int(s.split(":")[1]) if ":" in s else 0
    if not torch.cuda.is_available():
        raise ValueError(f"device {s!r} is not present on this machine (no CUDA GPU: torch.cuda.is_available() is "
                         f"False, torch {torch.__version__}); use --device cpu or auto.")
    n = torch.cuda.device_count()
    if index >= n:
        raise ValueError(f"device {s!r} is not present: this machine has {n} CUDA device(s), cuda:0..cuda:{n - 1}.")
    return f"cuda:{index}"


def available_devices() -> list[str]:
    """The devices present here (``cpu`` first), e.g. to parametrise tests."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        out.append("mps")
    return out


def check_precision(precision: str, device: str = "cpu") -> str:
    """``precision`` if it is one of :data:`PRECISIONS` and the device can run it, else one ValueError."""
    p = str(precision).strip().lower()
    if p not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
    kind = torch.device(device).type
    if p == "fp16" and kind == "cpu":
        raise ValueError("precision 'fp16' needs a GPU (CPUs have no fast float16 and autocast to it is slower than "
                         "fp32); use --precision bf16 on a CPU with AVX-512 BF16, or fp32.")
    if p == "bf16" and kind == "cuda" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{device} does not support bfloat16 (compute capability < 8.0); use --precision fp16 or fp32.")
    return p


def native_bf16(device: str) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CPU with AVX-512 BF16 or AMX, a CUDA GPU of
    compute capability 8.0 or newer."""
    kind = torch.device(device).type
    if kind == "cpu":
        return cpu_has_bf16()
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return False


def resolve_precision(precision: str, device: str) -> str:
    """``precision`` checked for ``device`` (:func:`check_precision`); ``auto`` becomes bf16 where
    the device computes it natively (:func:`native_bf16`), else fp32, so a result records which ran."""
    if str(precision).strip().lower() == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return check_precision(precision, device)


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), read from /proc/cpuinfo
    (Linux). Elsewhere False: bf16 autocast then runs, but emulated and slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (the CPU for a model with neither)."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def to_device(batch: Any, device: torch.device | str) -> Any:
    """``batch`` (a tensor, or a tuple / list / dict of them) on ``device``; the only place a batch
    moves. Pinned host memory is copied without blocking."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=batch.is_pinned())
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: str = "fp32") -> Iterator[None]:
    """Mixed precision for the forward pass (and the loss): nothing for ``fp32``, else
    :func:`torch.autocast` to bf16 / fp16 on ``device``'s kind."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[precision]):
        yield


def grad_scaler(device: torch.device | str, precision: str) -> torch.amp.GradScaler:
    """PyTorch's loss scaler: enabled for fp16 only (bf16 has fp32's exponent range and needs none);
    disabled it passes ``backward`` and ``step`` through unchanged."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")
