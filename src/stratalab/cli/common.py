"""What every command shares: the options declared once, the parsing of comma lists and
``--option key=value``, ``--config`` files, the checks before any work, and the one output path
(:func:`write_payload`). Policy (defaults by data set, what a setting means) lives in the library;
here flags become an :class:`~stratalab.experiments.Invocation` and results become files and tables."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from .._io import check_input_file
from .._validation import check_unique, parse_structured
from .app import console, err

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")

BACKEND_HELP = ("Where the grid's tasks run: local (this process, one after another) | ray (a Ray cluster: "
                "pip install 'stratalab[ray]'; a local one with every CPU unless --address).")
ADDRESS_HELP = "With --backend ray: the cluster to join (auto, HOST:PORT or ray://HOST:10001); default: start a local one."
WORK_DIR_HELP = ("Keep every finished task's result in this folder and reuse it when the command runs again "
                 "(resume a half-done grid); on a multi-machine cluster it must be storage every node sees.")
THREADS_HELP = ("Torch threads of each task (default: every core locally, 1 per task on Ray). Results are "
                "bit-identical across backends at equal thread counts; otherwise equal to float rounding.")

# options shared by many commands, declared once
DatasetOption = Annotated[Optional[str], typer.Option(
    "--dataset", help="Data set name (see `stratalab datasets`) or path of your .npz/.csv.")]
DataDirOption = Annotated[Optional[Path], typer.Option(
    "--data-dir", "-d", help="Folder with the data set's files (default: $STRATALAB_DATA_DIR).")]
OptionOption = Annotated[Optional[list[str]], typer.Option("--option", help="Data-set option key=value (repeatable).")]
SeedsOption = Annotated[str, typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2: mean and std over them.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of tables.")]
ConfigOption = Annotated[Optional[Path], typer.Option(
    "--config", help="YAML/JSON with the invocation's fields (dataset, dataset_options, data_dir, seeds, config: {...}), "
                     "or a result file; options given here override it.")]
AddressOption = Annotated[Optional[str], typer.Option("--address", help=ADDRESS_HELP)]
WorkDirOption = Annotated[Optional[Path], typer.Option("--work-dir", help=WORK_DIR_HELP)]
ThreadsOption = Annotated[Optional[int], typer.Option("--threads", help=THREADS_HELP)]
WorkersOption = Annotated[int, typer.Option(
    "--workers", help="Processes that decode file-backed inputs (image folders) ahead of each step; 0 decodes in this "
                      "process. The numbers do not depend on it.")]
DeviceOption = Annotated[str, typer.Option(
    "--device", help="auto (a CUDA GPU when present, else Apple's mps, else the CPU) | cpu | cuda | cuda:i | mps. The "
                     "device that ran is recorded; one that is not present is refused before any work.")]
PrecisionOption = Annotated[str, typer.Option(
    "--precision", help="fp32 (exact; default) | bf16 (autocast to bfloat16: GPUs, and CPUs with AVX-512 BF16 or AMX) | "
                        "fp16 (autocast with loss scaling; GPUs). Recorded in the result.")]


def parse_seeds(seeds: str) -> list[int]:
    """``--seeds 0,1,2`` -> [0, 1, 2], with a clear error for anything else."""
    out = []
    for v in seeds.split(","):
        v = v.strip()
        if not v:
            continue
        try:
            s = int(v)
        except ValueError:
            raise ValueError(f"--seeds takes comma-separated non-negative integers, e.g. 0,1,2; got {v!r}.") from None
        if s < 0:
            raise ValueError(f"--seeds must be non-negative integers, got {s}.")
        out.append(s)
    if not out:
        raise ValueError("--seeds must list at least one integer seed, e.g. 0,1,2.")
    if len(set(out)) != len(out):
        raise ValueError(f"--seeds lists a seed twice ({seeds}); give each seed once.")
    return out


def parse_options(options: list[str] | None) -> dict[str, Any]:
    """``--option key=value`` (repeatable) -> {key: value}, values read as Python literals where they are."""
    out: dict[str, Any] = {}
    for item in options or []:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ValueError(f"option {item!r} must look like key=value, e.g. --option rare_keep=0.5.")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k.strip()] = v
    return out


def parse_floats(text: str, option: str, *, positive: bool = True) -> list[float]:
    """``0.5,1,2`` -> [0.5, 1.0, 2.0]: finite, each once (and > 0 with ``positive``)."""
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{option} takes comma-separated numbers, e.g. 0.5,1,2; got {text!r}.") from None
    if not vals or any(not math.isfinite(v) or (positive and v <= 0) for v in vals):
        raise ValueError(f"{option} takes finite numbers{' > 0' if positive else ''}, got {text!r}.")
    check_unique(vals, option)
    return vals


def parse_names(text: str) -> tuple[str, ...]:
    """``a, b,c`` -> ("a", "b", "c")."""
    return tuple(v.strip() for v in text.split(",") if v.strip())


def explicit(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given on the command line (not a default)."""
    src = ctx.get_parameter_source(name)
    return src is not None and src.name not in ("DEFAULT", "DEFAULT_MAP")


def invocation(ctx: typer.Context) -> str:
    """The command line that makes this call's settings, for a result's record: ``stratalab``, the
    subcommand, and every option whose value differs from its default (read from the parsed values,
    not ``sys.argv``, which is another program's when the CLI is called from Python)."""
    import shlex

    words = ["stratalab", *ctx.command_path.split()[1:]]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if value == param.default or value is None or not getattr(param, "opts", None):
            continue
        flag = max(param.opts, key=len)
        if isinstance(value, bool):
            words.append(flag if value else (getattr(param, "secondary_opts", None) or [f"--no-{flag.lstrip('-')}"])[0])
        else:
            for v in value if isinstance(value, (list, tuple)) else [value]:
                words += [flag, str(v)]
    return shlex.join(words)


def refuse_unused(ctx: typer.Context, names: "list[str] | tuple[str, ...]", why: str) -> None:
    """Refuse options given on the command line that have no effect in the chosen setting (they
    used to be accepted and ignored without a word): one line naming the flag and the reason."""
    given = [n for n in names if explicit(ctx, n)]
    if given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        raise ValueError(f"{flags} {'has' if len(given) == 1 else 'have'} no effect {why}; leave {'it' if len(given) == 1 else 'them'} out.")


def merge(ctx: typer.Context, file_cfg: dict[str, Any], cli: dict[str, Any], params: dict[str, str] | None = None) -> dict[str, Any]:
    """File settings, overridden by options given on the command line; CLI defaults fill the rest.
    ``params`` maps a setting to its option's parameter name where they differ."""
    out = dict(file_cfg)
    for k, v in cli.items():
        if k not in out or explicit(ctx, (params or {}).get(k, k)):
            out[k] = v
    return out


def not_an_input(output: Optional[Path], what: str, *inputs: Any) -> None:
    """Refuse an output path that is one of the command's input files (it would be overwritten)."""
    if output is None:
        return
    out = output.expanduser().resolve()
    for inp in inputs:
        if inp is None:
            continue
        p = Path(str(inp)).expanduser()
        if p.exists() and p.resolve() == out:
            raise ValueError(f"{what} {output} is an input of this command; it would be overwritten. Choose another file.")


def read_config_file(path: Path, command: str) -> dict[str, Any]:
    """A ``--config`` file: YAML or JSON with an invocation's fields (``dataset``,
    ``dataset_options``, ``data_dir``, ``seeds``, ``config`` and the kind's other configs), as every
    result file records them; a result file itself is accepted (its ``invocation`` is used)."""
    import yaml

    from ..experiments import experiment
    from ..experiments.registry import check_fields

    p = check_input_file(path, "--config", (".yaml", ".yml", ".json"))
    try:
        d = parse_structured(p.read_text(), f"--config {p}", yaml=True)  # JSON is YAML; safe_load builds no Python objects
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"--config {p} is not valid YAML/JSON: {str(e).splitlines()[0]}") from None
    if isinstance(d, dict) and isinstance(d.get("invocation"), dict):
        d = d["invocation"]
    if not isinstance(d, dict):
        raise ValueError(f"--config {p} must hold a mapping (dataset: ..., config: {{...}}), got {type(d).__name__}.")
    if d.get("command", command) != command:
        raise ValueError(f"--config {p} was written for `stratalab {d['command']}`, not `stratalab {command}`.")
    exp = experiment(command)
    known = {"command", "dataset", "dataset_options", "data_dir", "seeds", "backend", "select_proxy",
             *exp.config_keys, *exp.input_keys}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"--config {p}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}.")
    check_fields(d, f"--config {p}")
    if "dataset" not in d and isinstance(d.get("config"), dict) and "dataset" in d["config"]:
        d = exp.upgrade({**d, "command": command}).to_dict()  # an older study file: data set and seeds in its config
    for k in ("data_dir", *exp.input_keys):  # relative paths in a config file are relative to the file
        if isinstance(d.get(k), str) and not Path(d[k]).expanduser().is_absolute():
            d[k] = str((p.parent / d[k]).resolve())
    if isinstance(d.get("dataset"), str) and Path(d["dataset"]).suffix.lower() in (".npz", ".csv") \
            and not Path(d["dataset"]).expanduser().is_absolute():
        d["dataset"] = str((p.parent / d["dataset"]).resolve())
    return d


def flat_config(d: dict[str, Any] | None) -> dict[str, Any]:
    """A config file's settings with its nested training config (``train``) lifted to the top, so
    options given on the command line (flat, like ``--epochs``) override them key by key."""
    d = dict(d or {})
    train = d.pop("train", None)
    if train is not None and not isinstance(train, dict):
        raise ValueError(f"the config's 'train' must be a mapping of training settings (epochs: ..., lr: ...), got "
                         f"{type(train).__name__} {train!r:.40}.")
    return {**(train or {}), **d}


def dataset_args(ctx: typer.Context, file_cfg: dict[str, Any], dataset: Optional[str], data_dir: Optional[Path],
                 option: Optional[list[str]], default: str | None = None) -> tuple[str, Optional[Path], dict[str, Any]]:
    """Data set name, data folder and options: from the command line, else from --config, else ``default``."""
    from ..experiments.registry import resolved_dataset

    name = dataset if dataset is not None else file_cfg.get("dataset") or default
    if not name:
        raise ValueError("give --dataset NAME (see `stratalab datasets`) or a --config file that names one.")
    ddir = data_dir if data_dir is not None else (Path(file_cfg["data_dir"]) if file_cfg.get("data_dir") else None)
    same = dataset is None or dataset == file_cfg.get("dataset") or resolved_dataset(dataset) == file_cfg.get("dataset")
    opts = {**((file_cfg.get("dataset_options") or {}) if same else {}), **parse_options(option)}
    return str(name), ddir, opts


def seeds_arg(ctx: typer.Context, file_cfg: dict[str, Any], seeds: str) -> list[int]:
    """``--seeds`` as given, else the --config file's seeds, else the option's default."""
    if "seeds" in file_cfg and not explicit(ctx, "seeds"):
        return parse_seeds(",".join(str(s) for s in file_cfg["seeds"]))
    return parse_seeds(seeds)


def check_threads(threads: Optional[int]) -> Optional[int]:
    """``--threads``: an integer >= 1 (or None: torch's default), checked before any work."""
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be an integer >= 1 (torch threads), got {threads}.")
    return threads


def hardware(ctx: typer.Context, file_cfg: dict[str, Any], device: str, precision: str) -> dict[str, str]:
    """``--device`` and ``--precision`` (else the --config file's, else the defaults), checked at the
    door: the device resolved to the one that will run ("auto" -> "cuda:0" / "mps" / "cpu"), one that
    is not present refused in one line before any data is read."""
    from .._device import resolve_device, resolve_precision

    dev = device if explicit(ctx, "device") or "device" not in file_cfg else str(file_cfg["device"])
    prec = precision if explicit(ctx, "precision") or "precision" not in file_cfg else str(file_cfg["precision"])
    resolved = resolve_device(dev)
    out = {"device": resolved, "precision": resolve_precision(prec, resolved)}
    warn_emulated_bf16(out["device"], out["precision"])
    return out


def warn_emulated_bf16(device: str, precision: str) -> None:
    """One warning line on stderr when bf16 will run on a CPU where no native bfloat16 was detected
    (AVX-512 BF16 or AMX): autocast then emulates it, far slower than fp32."""
    from .._device import native_bf16

    if precision == "bf16" and device == "cpu" and not native_bf16(device):
        err.print("[yellow]warning:[/yellow] no native bfloat16 was detected on this CPU (AVX-512 BF16 or AMX), so bf16 "
                  "runs emulated, far slower than fp32 (a cifarnet training step: 12x on an AVX2 CPU). --precision "
                  "auto picks bf16 only where it is native.", highlight=False, soft_wrap=True)


def make_backend(kind: str, address: Optional[str], work_dir: Optional[Path], threads: Optional[int] = None) -> Any:
    """The grid backend, checked at the door (an unknown kind, Ray not installed, a bad --work-dir)."""
    from ..experiments.backend import Backend

    return Backend(kind, address=address, work_dir=work_dir, threads=check_threads(threads))


def step_printer(json_out: bool) -> Callable[[str], None] | None:
    """The progress lines of a grid on stderr (none with --json)."""
    return None if json_out else (lambda m: err.print(f"[dim]{m}[/dim]"))


def say_written(*pairs: tuple[str, Any]) -> None:
    """One "wrote WHAT: PATH" line per output actually written (None paths skipped)."""
    for what, path in pairs:
        if path is not None:
            console.print(f"wrote {what}: {path}")


def write_payload(payload: dict[str, Any], output: Optional[Path], json_out: bool) -> bool:
    """Write ``payload`` as JSON to ``output`` (atomically) when given; with ``--json`` also print it
    on stdout and return True, so the caller skips its tables."""
    from ..report import write_json_atomic

    if output is not None:
        write_json_atomic(output, payload)
    if json_out:
        print(json.dumps(payload, indent=2, allow_nan=False, default=str))
        if output is not None:  # stdout stays pure JSON; where the file went is said on stderr
            err.print(f"wrote {output}", highlight=False, soft_wrap=True)
    return json_out


def emit_report(report: Any, *, json_out: bool, output: Optional[Path], plot: Optional[Path], source: str = "",
                extra: dict[str, Any] | None = None, payload: dict[str, Any] | None = None) -> None:
    """A group report as tables (or JSON: ``payload``, else its source, ``extra`` and the report),
    with its group table (.csv/.parquet) or JSON file and figure."""
    from ..report import group_table, plot_class_vs_worst_group, summary_table, write_table_atomic

    if payload is None:
        payload = {"source": source, **(extra or {}), **report.to_dict()}
    if output is not None and output.suffix.lower() != ".json":
        write_table_atomic(output, report.table)
    if plot is not None:
        plot_class_vs_worst_group(report, plot)
    json_output = output if output is not None and output.suffix.lower() == ".json" else None
    if write_payload(payload, json_output, json_out):
        return
    console.print(group_table(report))
    console.print(summary_table(report))
    say_written(("report", output), ("figure", plot))
