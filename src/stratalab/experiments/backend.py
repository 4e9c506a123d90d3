"""Run the tasks of a grid (seeds x methods x widths, TRAK ensemble members, retrains) one after
another in this process, or spread over a Ray cluster, with finished results kept on disk.

A *task* is a module-level function called with plain arguments (configs as dicts, a seed, a
:class:`DataSpec`): a pure function of them, so running it twice gives the same result, and Ray can
run it on any worker. :meth:`Backend.map` runs a list of tasks and returns their results in order.

With ``work_dir``, every finished task's result is written there atomically, named by a hash of
everything that determines it (:func:`task_key`): ``<name>-<hash>.json``, plus ``.pt`` for model
weights (written first, read back with ``torch.load(weights_only=True)``; the JSON, written last,
marks the result complete). A grid that stops half-way (a crash, Ctrl-C, a lost node) reuses every
finished result when it is run again with the same ``work_dir``; a result whose JSON is absent is
simply run again. On Ray, a task whose worker process dies is retried (``retries`` times) on another
worker; an exception raised by the task itself is a real error and stops the grid at once.

Ray is an optional extra (``pip install 'stratalab[ray]'``). ``Backend("ray")`` starts a local Ray
instance with ``num_cpus`` CPUs, or joins the cluster at ``address`` (``"auto"``, ``"HOST:PORT"``
or ``"ray://HOST:10001"``). On a cluster of several machines, ``work_dir`` and the data directory
must be on storage every node sees (the same path everywhere).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .._io import file_sha256

BACKENDS = ("local", "ray")
WEIGHTS_KEY = "weights"  # a task result's model state dict (tensors) is stored beside its JSON
FAULT_ENV = "STRATALAB_FAULT_DIR"  # tests: each attempt of a task appends its pid to <dir>/<key>.attempts
_SAY: list[Callable[[str], None]] = []  # the progress callback of the local map running now


def say(message: str) -> None:
    """Progress from inside a task: shown when the task runs in this process (local backend),
    dropped on a Ray worker (the driver reports each finished task instead)."""
    if _SAY:
        _SAY[-1](message)


def task_key(name: str, **parts: Any) -> str:
    """A stable file-name-safe id of a task: ``name`` and a hash of ``parts`` (JSON, sorted keys),
    which must hold everything the result depends on (configs, seed, data identity, ...), and of
    :func:`code_version`, so a work dir never hands back a result that other code made."""
    text = json.dumps({"parts": parts, "code": code_version()}, sort_keys=True, default=_plain)
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """:func:`source_hash` of the installed stratalab package, read once per process."""
    return source_hash(Path(__file__).resolve().parents[1])


def source_hash(root: Path) -> str:
    """sha256 of the stratalab source a task runs (every ``.py`` file of the package but the
    command line's, ``cli/``, which only maps flags to the library calls a task records), by
    relative path and contents: any change to that code gives new task keys; an edit to the CLI
    keeps a work dir's finished tasks. :func:`code_version` reads the installed package once per
    process (a few ms)."""
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).as_posix()
        if rel.startswith("cli/"):
            continue
        h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()




def _plain(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(o).tobytes() + str((o.dtype, o.shape)).encode()).hexdigest()
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"task_key cannot hash a {type(o).__name__}")


# ------------------------------------------------------------------------------------------ data
_DATA_CACHE: "OrderedDict[str, Any]" = OrderedDict()
_DATA_CACHE_SIZE = 8


@dataclass(frozen=True)
class DataSpec:
    """How a task gets its data set: a registered name or file (``name``, ``data_dir``,
    ``options``) loaded with ``seed``, or any ``make(seed)`` callable (the Python API; Ray ships it
    to the workers with cloudpickle). Each process loads a spec once and keeps it (8 at most)."""

    name: str
    seed: int
    data_dir: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    make: Callable[[int], Any] | None = None
    identity: str | None = None  # with ``make``: what distinguishes this data in task keys

    @classmethod
    def of(cls, ds: Any, seed: int) -> "DataSpec":
        """A spec for an in-memory data set (the Python API): ``make`` returns ``ds``; the
        identity in task keys is :func:`fingerprint` of it, so two data sets never share results."""
        return cls(ds.name, seed, make=_Fixed(ds), identity=fingerprint(ds))

    def key(self) -> dict[str, Any]:
        """What identifies the data in task keys. A registered data set's options are keyed with
        its defaults filled in, so changing a default (u-mnist's ``resize``, 2026-11-30) never lets
        a work dir hand back results made from the old data."""
        if self.make is not None:
            return {"make": self.identity or self.name, "seed": self.seed}
        from ..data.registry import info

        try:
            options = {**info(self.name).options(), **self.options}
        except KeyError:  # a user's file: its options as given, and what its files hold
            return {"dataset": self.name, "data_dir": self.data_dir, "options": self.options, "seed": self.seed,
                    "contents": user_file_identity(self.name, self.options)}
        return {"dataset": self.name, "data_dir": self.data_dir, "options": options, "seed": self.seed}

    def load(self) -> Any:
        k = json.dumps(self.key(), sort_keys=True, default=str)
        if k in _DATA_CACHE:
            _DATA_CACHE.move_to_end(k)
            return _DATA_CACHE[k]
        if self.make is not None:
            ds = self.make(self.seed)
        else:
            from ..data import load

            ds = load(self.name, data_dir=self.data_dir, seed=self.seed, **self.options)
        _DATA_CACHE[k] = ds
        while len(_DATA_CACHE) > _DATA_CACHE_SIZE:
            _DATA_CACHE.popitem(last=False)
        return ds


def user_file_identity(path: str | os.PathLike[str], options: dict[str, Any]) -> dict[str, Any]:
    """What a user's data file holds, for task keys: the sha256 of the ``.npz`` or ``.csv``, and for
    a CSV the size and modification time of each image it names (under ``options["root"]``,
    default the CSV's folder), so editing the labels or replacing an image gives new keys. A file
    that cannot be read is keyed by its path only (loading it then fails with the loader's message)."""
    p = Path(path).expanduser()
    try:
        out: dict[str, Any] = {"sha256": file_sha256(p)}
    except OSError:
        return {"unreadable": str(p)}
    if p.suffix.lower() == ".csv":
        import pandas as pd

        root = Path(options.get("root") or p.parent).expanduser()
        try:
            names = pd.read_csv(p, usecols=["filename"])["filename"].astype(str).tolist()
        except (ValueError, OSError, pd.errors.ParserError):
            return out
        stamps = []
        for name in names:
            try:
                st = (root / name).stat()
                stamps.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                stamps.append(f"{name}:absent")
        out["images"] = hashlib.sha256("\n".join(stamps).encode()).hexdigest()
    return out


class _Fixed:
    """``make(seed)`` that returns one given data set."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds

    def __call__(self, seed: int) -> Any:
        return self.ds


def fingerprint(ds: Any) -> str:
    """What identifies an in-memory data set in task keys: its name, labels and groups of every
    split, and the bytes of its first 64 inputs of each split."""
    import numpy as np

    h = hashlib.sha256(ds.name.encode())
    for split in ("train", "val", "test"):
        sp = ds.splits[split]
        for arr in (sp.y, sp.g):
            h.update(b"none" if arr is None else np.ascontiguousarray(arr, dtype=np.int64).tobytes() + b"|")
        h.update(np.ascontiguousarray(np.asarray(sp.load_x(np.arange(min(len(sp), 64))), dtype=np.float32)).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------- store
class ResultStore:
    """Finished task results in a folder: ``<key>.json`` (+ ``<key>.pt`` for weights)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def get(self, key: str, threads: int | None = None) -> dict[str, Any] | None:
        """The stored result of ``key``, or None when it is absent, incomplete, or not exactly what
        the task wrote: the file must name its own key, hold no NaN or infinity (a task result is
        written without them) and match the digest written with it, so a file edited by hand is
        run again, never reported as a result. With ``threads``, a result made with another number
        of torch threads is run again too (convolutions sum in a thread-dependent order, so the
        numbers depend on it; a work dir shared by runs with and without --threads mixed them)."""
        path = self.folder / f"{key}.json"
        if not path.is_file():
            return None
        try:
            out = json.loads(path.read_text(), parse_constant=_refuse_constant)
        except (OSError, ValueError):
            return None  # unreadable: run the task again (the new result replaces it atomically)
        if not isinstance(out, dict) or out.get("_key") != key:
            return None
        out.pop("_key")
        if out.pop("_digest", None) != _digest(out):
            return None
        made_with = out.pop("_threads", None)
        if threads is not None and made_with != threads:
            return None
        if out.pop("_weights", False):
            from ..models.pretrained import load_weights_only

            try:
                out[WEIGHTS_KEY] = load_weights_only(self.folder / f"{key}.pt", "a stored task result", "it is run again")
            except (OSError, ValueError):
                return None
        return out

    def put(self, key: str, result: dict[str, Any], threads: int | None = None) -> None:
        """Write ``result`` atomically: weights first, then the JSON that marks it complete (with
        the torch ``threads`` it was made with)."""
        import torch

        from .._io import write_atomic
        from ..report.io import json_text, write_json_atomic

        self.folder.mkdir(parents=True, exist_ok=True)
        body = {k: v for k, v in result.items() if k != WEIGHTS_KEY}
        if WEIGHTS_KEY in result:
            weights = result[WEIGHTS_KEY]
            write_atomic(self.folder / f"{key}.pt", lambda p: torch.save(weights, p))
            body["_weights"] = True
        body = json.loads(json_text(body))  # as it will be read back (numpy numbers as plain ones)
        if threads is not None:
            body["_threads"] = int(threads)
        write_json_atomic(self.folder / f"{key}.json", {**body, "_digest": _digest(body), "_key": key})


def _digest(body: dict[str, Any]) -> str:
    """sha256 of a stored result's body (sorted keys), written beside it and checked on reading."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"a stored result holds {name}")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``threads`` torch threads (None: as they are) and yield the count used;
    the count before is restored after. Results depend on it (convolutions and reductions sum in
    a thread-dependent order), so every command that trains records it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads if threads is not None else before)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def local_record(threads: int) -> dict[str, Any]:
    """The backend record of a command that trains in this process with ``threads`` torch threads."""
    return {"kind": "local", "address": None, "work_dir": None, "threads": int(threads)}


def _execute(fn: Callable[..., dict[str, Any]], args: tuple[Any, ...], key: str, work_dir: str | None,
             threads: int | None = None) -> dict[str, Any]:
    """One attempt of one task (in this process or on a Ray worker): run it with ``threads`` torch
    threads (None: as they are), store the result."""
    fault = os.environ.get(FAULT_ENV)
    if fault:  # fault injection for tests: record the attempt (pid) before the work starts
        with open(Path(fault) / f"{key}.attempts", "a") as f:
            f.write(f"{os.getpid()}\n")
    with torch_threads(threads) as used:
        result = fn(*args)
    if not isinstance(result, dict):
        raise TypeError(f"task {key} returned {type(result).__name__}, not a dict")
    if work_dir is not None:
        ResultStore(work_dir).put(key, result, threads=used)
    return result


def _check_writable_folder(wd: Path) -> None:
    """Create the work dir and write a probe file there now: a folder that cannot hold results
    (``/proc/wd``, a read-only mount) is refused before any task runs, not after the first one."""
    import tempfile

    try:
        wd.mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=wd, prefix=".stratalab-probe-"):
            pass
    except OSError as e:
        raise ValueError(f"work_dir {wd} (--work-dir) cannot hold results ({e.strerror or e}); give a writable folder.") from None


def call(fn: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> dict[str, Any]:
    """``fn(*args)``: lets one :meth:`Backend.map` run tasks of several functions (``args`` of each
    task = ``(fn, fn_args)``)."""
    return fn(*args)


# --------------------------------------------------------------------------------------- backend
@dataclass
class Backend:
    """Where the tasks of a grid run.

    ``kind``: ``"local"`` (in this process, one after another; the default) or ``"ray"``.
    ``address``: a Ray cluster to join (None starts a local one with ``num_cpus`` CPUs, default
    all). ``work_dir``: keep every finished result there and reuse it (resume). ``retries``: how
    many times Ray re-runs a task whose worker died. ``cpus_per_task``: Ray CPUs each task holds.
    ``threads``: torch threads of each task; default: torch's own (every core) locally, and
    ``cpus_per_task`` (rounded down, at least 1) on Ray.

    Same seed, same numbers: a task gives bit-identical results wherever it runs *with the same
    number of torch threads*. Convolutions sum in a thread-dependent order, so a grid run locally on
    2 threads and on Ray with 1 thread per task agree only to float rounding (measured in
    BENCHMARKS.md); give both the same ``threads`` to compare them bit for bit.
    """

    kind: str = "local"
    address: str | None = None
    work_dir: str | os.PathLike[str] | None = None
    num_cpus: int | None = None
    retries: int = 3
    cpus_per_task: float = 1.0
    threads: int | None = None
    stats: dict[str, int] = field(default_factory=lambda: {"run": 0, "reused": 0})

    def __post_init__(self) -> None:
        if self.kind not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {self.kind!r}.")
        if self.kind == "local" and self.address is not None:
            raise ValueError("address (--address) is the Ray cluster to join; it needs --backend ray (kind='ray').")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {self.retries!r}.")
        if self.num_cpus is not None and (isinstance(self.num_cpus, bool) or not isinstance(self.num_cpus, int)
                                          or self.num_cpus < 1):
            raise ValueError(f"num_cpus must be an integer >= 1, got {self.num_cpus!r}.")
        if not (isinstance(self.cpus_per_task, (int, float)) and 0 < self.cpus_per_task < float("inf")):
            raise ValueError(f"cpus_per_task must be > 0, got {self.cpus_per_task!r}.")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ValueError(f"threads must be an integer >= 1 (torch threads per task), got {self.threads!r}.")
        if self.work_dir is not None:
            wd = Path(self.work_dir).expanduser()
            if wd.exists() and not wd.is_dir():
                raise ValueError(f"work_dir {wd} (--work-dir) is a file; give a folder (it is created if missing).")
            if not wd.exists() and not wd.parent.is_dir():
                raise FileNotFoundError(f"work_dir {wd} (--work-dir): folder {wd.parent} does not exist; create it first.")
            _check_writable_folder(wd)
            self.work_dir = wd.resolve()
        if self.kind == "ray":
            try:
                import ray  # noqa: F401
            except ImportError:
                raise ValueError("kind='ray' (--backend ray) needs Ray, an optional extra: pip install 'stratalab[ray]' "
                                 "(or pip install ray).") from None
            if self.address is not None:  # at the door: an address nothing answers on would hang ray.init
                check_reachable(self.address)
        self._store = ResultStore(self.work_dir) if self.work_dir is not None else None

    def to_dict(self) -> dict[str, Any]:
        """What a result file records of the backend (results do not depend on it)."""
        return {"kind": self.kind, "address": self.address, "work_dir": str(self.work_dir) if self.work_dir else None,
                "threads": self.task_threads()}

    def recorded(self) -> dict[str, Any] | None:
        """What a result file records of the backend: :meth:`to_dict` when it can change the numbers
        or says where they came from (Ray, or a set thread count), else None (the default)."""
        return self.to_dict() if self.kind != "local" or self.threads is not None else None

    def _threads_here(self) -> int:
        """The torch threads a task of this backend runs with (its setting, else this process's)."""
        if self.task_threads() is not None:
            return int(self.task_threads())  # type: ignore[arg-type]
        import torch

        return torch.get_num_threads()

    def task_threads(self) -> int | None:
        """The torch threads each task runs with (None: torch's default, every core)."""
        if self.threads is not None:
            return self.threads
        return max(1, int(self.cpus_per_task)) if self.kind == "ray" else None

    def map(self, fn: Callable[..., dict[str, Any]], tasks: Sequence[tuple[str, tuple[Any, ...]]],
            progress: Callable[[str], None] | None = None, what: str = "tasks") -> list[dict[str, Any]]:
        """Run ``fn(*args)`` for every ``(key, args)`` of ``tasks`` and return the results in the
        same order. Results already in ``work_dir`` are reused; the same key twice runs once."""
        say = progress or (lambda m: None)
        results: dict[str, dict[str, Any]] = {}
        todo: "OrderedDict[str, tuple[Any, ...]]" = OrderedDict()
        for key, args in tasks:
            if key in results or key in todo:
                continue
            stored = self._store.get(key, threads=self._threads_here()) if self._store is not None else None
            if stored is not None:
                results[key] = stored
            else:
                todo[key] = args
        reused = len(results)
        self.stats["reused"] += reused
        if reused:
            say(f"{what}: {reused} finished result(s) reused from {self.work_dir}")
        if todo:
            wd = str(self.work_dir) if self.work_dir is not None else None
            if self.kind == "local":
                _SAY.append(say)
                try:
                    for key, args in todo.items():
                        results[key] = _execute(fn, args, key, wd, self.task_threads())
                        self.stats["run"] += 1
                finally:
                    _SAY.pop()
            else:
                results.update(self._ray_map(fn, todo, wd, say, what))
        return [results[key] for key, _ in tasks]

    # -- Ray
    def _ray(self) -> Any:
        import ray

        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
            if self.address is not None:
                kw["address"] = self.address
            else:
                kw["num_cpus"] = self.num_cpus or os.cpu_count() or 1
            try:
                ray.init(**kw)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = self.address or "a local Ray instance"
                raise ValueError(f"could not start or join Ray at {where}: {e}") from None
        return ray

    def _ray_map(self, fn: Callable[..., dict[str, Any]], todo: "OrderedDict[str, tuple[Any, ...]]", wd: str | None,
                 say: Callable[[str], None], what: str) -> dict[str, dict[str, Any]]:
        ray = self._ray()
        remote = ray.remote(max_retries=self.retries, retry_exceptions=False, num_cpus=self.cpus_per_task)(_execute)
        fn_ref = ray.put(fn)
        threads = self.task_threads()
        refs = {remote.remote(fn_ref, args, key, wd, threads): key for key, args in todo.items()}
        out: dict[str, dict[str, Any]] = {}
        pending = list(refs)
        t0 = time.perf_counter()
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        out[refs[ref]] = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:  # the task itself raised: a real error
                        cause = getattr(e, "cause", None)
                        if isinstance(cause, Exception):
                            raise cause from None
                        raise
                    except ray.exceptions.WorkerCrashedError:
                        raise RuntimeError(f"task {refs[ref]} lost its worker on each of its {self.retries + 1} attempt(s); "
                                           "see the Ray logs (e.g. out of memory).") from None
                    self.stats["run"] += 1
                    say(f"{what}: {len(out)}/{len(refs)} done on Ray ({time.perf_counter() - t0:.0f} s)")
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return out


CONNECT_TIMEOUT_S = 10.0  # how long joining a Ray cluster may take to answer at all


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse, in one line and within ``timeout`` seconds, a Ray address that nothing answers on
    (``ray.init(address="127.0.0.1:1")`` waits forever). ``auto`` is left to Ray, which fails at
    once when no local cluster runs; ``ray://HOST:PORT`` also needs Ray Client (``ray[client]``)."""
    import socket

    if address == "auto":
        return
    hostport = address
    if address.startswith("ray://"):
        try:
            # grpc ships no types and types-grpcio is not part of the install
            import grpc  # noqa: F401
            import ray.util.client  # noqa: F401
        except ImportError:
            raise ValueError(f"address {address} (--address) uses Ray Client, which needs pip install 'stratalab[ray]' "
                             "(ray[client])") from None
        hostport = address[len("ray://"):]
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address (--address) must be auto, HOST:PORT or ray://HOST:PORT, got {address!r}.")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ValueError(f"no Ray cluster answers at {address} (within {timeout:g} s: {e.strerror or e}); start one "
                         "with `ray start --head` there, or leave out --address for a local one.") from None


def local() -> Backend:
    """The default backend: every task in this process, nothing kept on disk."""
    return Backend("local")
