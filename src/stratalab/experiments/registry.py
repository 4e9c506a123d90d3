"""The experiment registry: one :class:`Invocation` shape and one :class:`Experiment` object per
kind of experiment (``train``, ``run george``, ``run d3m``, ``run scaling``, ``run cifar-b``,
``spectral``, ``audit``).

Everything that handles experiments by kind is derived from :data:`EXPERIMENTS`: the command line
(``--config`` files), ``stratalab rerun`` (which result numbers it compares), ``stratalab report``
and ``stratalab bench`` (tidy records, group tables, method names, labels used). Adding a pipeline
is one module that defines and :func:`register` s its :class:`Experiment`, and its tests.

An invocation records what a result was made from: the command, the data set (name or absolute
path), its options and folder, the seeds, the kind's configs (``config`` and, for ``run d3m``,
``d3m_config``), its input files (``features``, ``predictions``) and the grid backend. Every result
file holds it under ``"invocation"``; :meth:`Invocation.from_dict` also reads the shapes written by
earlier versions (``run scaling`` / ``run cifar-b`` kept the data set and seeds inside ``config``;
``train`` kept its seed there).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from ..report.results import GroupTable, ResultReader, Row, RunResult
from ..report.results import load_result as _load_result
from ..report.results import result_from_dict as _result_from_dict

__all__ = ["Invocation", "Experiment", "StudyExperiment", "Outcome", "EXPERIMENTS", "register", "experiment", "load_result",
           "result_from_dict", "resolved_dataset"]

# a kind's progress callback: the studies pass one line of text, ``train`` passes (stage, epoch, total, row)
Progress = Callable[..., None]

# The fields of an invocation, with the kinds of value each may hold: one check for --config files
# and for rerun, so a missing or mistyped field is named in one line.
FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "command": ((str,), "a command name, e.g. run george"),
    "dataset": ((str, type(None)), "a data set name or the path of your .npz/.csv"),
    "data_dir": ((str, type(None)), "a folder path"),
    "dataset_options": ((dict, type(None)), "a mapping of data-set options"),
    "seeds": ((list,), "a list of integer seeds, e.g. [0, 1, 2]"),
    "config": ((dict,), "a mapping of settings"),
    "d3m_config": ((dict,), "a mapping of D3M settings"),
    "features": ((str, type(None)), "the path of an .npz of features"),
    "predictions": ((str, type(None)), "the path of a predictions .csv/.parquet"),
    "select_proxy": ((dict, type(None)), "a mapping"),
    "backend": ((dict, type(None)), "a mapping"),
}


def check_fields(d: dict[str, Any], where: str, required: tuple[str, ...] = ()) -> None:
    """Every present invocation field of the kind it must be; every ``required`` one present."""
    for k in required:
        if k not in d:
            raise ValueError(f"{where} has no {k!r} field ({FIELDS[k][1]}); it is not a complete stratalab "
                             "record: regenerate it with the command that wrote it.")
    for k, (kinds, what) in FIELDS.items():
        if k in d and not isinstance(d[k], kinds):
            raise ValueError(f"{where}: {k!r} must be {what}, got {type(d[k]).__name__} {d[k]!r:.60}.")
    if isinstance(d.get("seeds"), list):
        bad = [s for s in d["seeds"] if isinstance(s, bool) or not isinstance(s, int) or s < 0]
        if bad or not d["seeds"]:
            raise ValueError(f"{where}: 'seeds' must be a non-empty list of integers >= 0, got {d['seeds']!r:.60}.")


def resolved_dataset(name: str) -> str:
    """A data set given as a file path, made absolute (so a rerun finds it from any folder); names unchanged."""
    p = Path(name).expanduser()
    return str(p.resolve()) if p.suffix.lower() in (".npz", ".csv") and p.exists() else name


def _absolute(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


@dataclass
class Invocation:
    """What a result is made from (see the module docstring). ``configs`` maps each of the kind's
    config keys (``config``, ``d3m_config``) to its settings dict; ``inputs`` maps each input file
    key (``features``, ``predictions``) to its absolute path or None."""

    command: str
    dataset: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs: dict[str, str | None] = field(default_factory=dict)
    backend: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.dataset is not None:
            self.dataset = resolved_dataset(str(self.dataset))
        self.data_dir = _absolute(self.data_dir)
        self.inputs = {k: _absolute(v) for k, v in self.inputs.items()}
        self.dataset_options = dict(self.dataset_options or {})
        self.seeds = [int(s) for s in self.seeds]

    @property
    def config(self) -> dict[str, Any]:
        """The kind's main settings (``configs["config"]``)."""
        return self.configs.get("config", {})

    def to_dict(self) -> dict[str, Any]:
        """The recorded form: one flat mapping (the configs and inputs under their own keys)."""
        d: dict[str, Any] = {"command": self.command, "dataset": self.dataset, "dataset_options": self.dataset_options,
                             "data_dir": self.data_dir, "seeds": list(self.seeds), **self.configs, **self.inputs}
        if self.backend is not None:
            d["backend"] = self.backend
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "the invocation") -> "Invocation":
        """An invocation from its recorded form (any version's); refuses unknown or mistyped fields."""
        if not isinstance(d, dict):
            raise ValueError(f"{where} must be a mapping (command, dataset, config, ...), got {type(d).__name__}.")
        command = d.get("command")
        exp = experiment(command if isinstance(command, str) else "", where)
        known = {"command", "dataset", "dataset_options", "data_dir", "seeds", "backend", "select_proxy",
                 *exp.config_keys, *exp.input_keys}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r} for `stratalab {command}`; known keys: "
                             f"{', '.join(sorted(known))}.")
        check_fields(d, where, exp.config_keys)
        inv = exp.upgrade(d)
        check_fields(inv.to_dict(), where, exp.required)
        if "dataset" in exp.required and not inv.dataset:
            raise ValueError(f"{where} has no 'dataset' field ({FIELDS['dataset'][1]}); it is not a complete stratalab "
                             "record: regenerate it with the command that wrote it.")
        return inv


@dataclass
class Outcome:
    """What :meth:`Experiment.run` returns: ``payload`` (the result file's content, invocation
    first) and ``result`` (the live result object the command prints and draws from)."""

    payload: dict[str, Any]
    result: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class Experiment:
    """One kind of experiment. A subclass sets :attr:`command`, :attr:`result_keys` (the payload
    keys whose numbers ``rerun`` compares), :attr:`config_keys`, :attr:`input_keys` and
    :attr:`recognise` (keys that identify a file of this kind written without an invocation), and
    implements :meth:`run` and the result views (:meth:`records` and the rest, over a result dict)."""

    command: ClassVar[str] = ""
    result_keys: ClassVar[tuple[str, ...]] = ()
    config_keys: ClassVar[tuple[str, ...]] = ("config",)
    input_keys: ClassVar[tuple[str, ...]] = ()
    recognise: ClassVar[frozenset[str]] = frozenset()
    required: ClassVar[tuple[str, ...]] = ("dataset",)  # invocation fields a recorded one must have
    uses_backend: ClassVar[bool] = False

    # ------------------------------------------------------------------ running
    def run(self, inv: Invocation, *, backend: Any = None, progress: Progress | None = None,
            outputs: dict[str, Path] | None = None) -> Outcome:
        raise NotImplementedError

    @staticmethod
    def threads_of(inv: Invocation, backend: Any) -> int | None:
        """The torch threads a run in this process uses: the backend's setting, else the recorded one."""
        if backend is not None and backend.task_threads() is not None:
            return int(backend.task_threads())
        recorded = (inv.backend or {}).get("threads")
        return int(recorded) if recorded is not None else None

    def upgrade(self, d: dict[str, Any]) -> Invocation:
        """The :class:`Invocation` of a recorded (checked) mapping; kinds whose older files kept
        other shapes override this."""
        return Invocation(command=self.command, dataset=d.get("dataset"), dataset_options=d.get("dataset_options") or {},
                          data_dir=d.get("data_dir"), seeds=d.get("seeds") or [0],
                          configs={k: dict(d[k]) for k in self.config_keys if k in d},
                          inputs={k: d.get(k) for k in self.input_keys},
                          backend=d.get("backend") if isinstance(d.get("backend"), dict) else None)

    # ------------------------------------------------------------------ reading results
    def records(self, raw: dict[str, Any]) -> list[Row]:
        raise NotImplementedError

    def group_tables(self, raw: dict[str, Any]) -> list[GroupTable]:
        return []

    def method_names(self, raw: dict[str, Any]) -> dict[str, str]:
        raise NotImplementedError

    def labels_used(self, raw: dict[str, Any]) -> dict[str, str]:
        return {m: "unknown" for m in self.method_names(raw)}

    def dataset_name(self, raw: dict[str, Any], inv: dict[str, Any]) -> str:
        d = raw.get("dataset")
        if isinstance(d, dict):  # train: the data set's options, with its name
            d = d.get("name")
        return str(d if d is not None else inv.get("dataset", "unknown"))


class StudyExperiment(Experiment):
    """Shared by the study kinds whose config holds the whole study (:class:`ScalingConfig`,
    ``CifarBConfig``): the invocation's data set, options and seeds are the config's."""

    def upgrade(self, d: dict[str, Any]) -> Invocation:
        cfg = dict(d["config"])
        d = {**d, "dataset": d.get("dataset", cfg.get("dataset")),
             "dataset_options": d.get("dataset_options", cfg.get("dataset_options")),
             "seeds": d.get("seeds", cfg.get("seeds"))}  # files before the one invocation shape
        return super().upgrade({k: v for k, v in d.items() if v is not None})

    @staticmethod
    def study_config(inv: Invocation) -> dict[str, Any]:
        """The config's fields with the invocation's data set, options and seeds."""
        out = dict(inv.config)
        if inv.dataset is not None:
            out["dataset"] = inv.dataset
        return {**out, "dataset_options": dict(inv.dataset_options), "seeds": list(inv.seeds)}

    def dataset_name(self, raw: dict[str, Any], inv: dict[str, Any]) -> str:
        return str((raw.get("config") or inv.get("config") or {}).get("dataset", "unknown"))


EXPERIMENTS: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    """Add ``exp`` to :data:`EXPERIMENTS` under its command (once)."""
    if not exp.command or exp.command in EXPERIMENTS:
        raise ValueError(f"experiment command {exp.command!r} is empty or already registered.")
    EXPERIMENTS[exp.command] = exp
    return exp


def experiment(command: str, where: str = "") -> Experiment:
    """The registered experiment of ``command`` (e.g. ``"run george"``), or one line naming the kinds."""
    if command not in EXPERIMENTS:
        raise ValueError(f"{where + ': ' if where else ''}`stratalab {command}` is not an experiment kind; the kinds "
                         f"are: {', '.join(sorted(EXPERIMENTS))}.")
    return EXPERIMENTS[command]


def _readers() -> list[ResultReader]:
    return list(EXPERIMENTS.values())


def load_result(path: str | os.PathLike[str]) -> RunResult:
    """Read a result file of any registered kind (:func:`stratalab.report.results.load_result`)."""
    return _load_result(path, _readers())


def result_from_dict(raw: Any, path: str | os.PathLike[str] = "<dict>") -> RunResult:
    """A :class:`~stratalab.report.results.RunResult` from a parsed result dict of any registered kind."""
    return _result_from_dict(raw, path, _readers())
