"""The bad-invocation battery of issue 23: every case the issue lists, run as a user would (a fresh
`stratalab` process each, with a time limit), and classified by what happened:

- ``refused``: exit code 2, one "error:" line as the whole output (no traceback, no training or
  step lines before it), within the time limit: the expected answer to bad input. Cases in
  ``EXPECT`` must also say a given thing (``answered`` where the answer is not an error);
- ``refused after work``: exit code 2, but after other output (training ran first);
- ``unclear``: refused, but without what the case's message must say;
- ``internal error``: exit code 1 with "internal error";
- ``accepted``: exit code 0 (the bad input ran, or was silently ignored);
- ``still running``: killed at the time limit (a hang, or work done before any check).

Run it against any checkout (``PYTHONPATH=<checkout>/src``) to compare code before and after:
``python benchmarks/bad_inputs_battery.py --label after [--timeout 30]``; writes
``results/bad_inputs_battery_<label>.{json,md}``. Needs ../shared/data for the CIFAR cases.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_dir, write  # noqa: E402

D = ["--dataset", "u-digits", "--epochs", "1"]


def fixtures(tmp: Path) -> dict[str, str]:
    """Files the cases read: a user .npz with labels {1, 2}, features with one group, a text file
    named .npz, a raw-pickle .pt, a deeply nested config, a result file with NaN metrics."""
    rng = np.random.default_rng(0)
    arrays = {}
    for s, n in (("train", 40), ("val", 20), ("test", 20)):
        arrays[f"x_{s}"] = rng.standard_normal((n, 4)).astype(np.float32)
        arrays[f"y_{s}"] = 1 + np.arange(n) % 2
    np.savez(tmp / "labels12.npz", **arrays)
    np.savez(tmp / "onegroup.npz", features=rng.standard_normal((40, 3)), y=np.repeat([0, 1], 20), g=np.repeat([0, 1], 20))
    (tmp / "text.npz").write_text("a,b\n1,2\n")
    (tmp / "raw.pt").write_bytes(pickle.dumps({"a": 1}))
    from stratalab.models.flow import DecoupledFlow, FlowConfig, save_flow

    save_flow(DecoupledFlow(FlowConfig(image_shape=(3, 32, 32), levels=1, steps=1, hidden=8, z_dim=4)), tmp / "flow.pt")
    (tmp / "deep.json").write_text('{"dataset": "u-digits", "config": {"epochs": ' + "[" * 5000 + "]" * 5000 + "}}")
    return {k: str(tmp / k) for k in ("labels12.npz", "onegroup.npz", "text.npz", "raw.pt", "deep.json", "flow.pt")}


def cases(f: dict[str, str], tmp: Path, data: str) -> list[tuple[str, str, list[str]]]:
    """(class of the issue, case, arguments)."""
    cifar = ["--data-dir", data]
    return [
        ("silently wrong", "labels {1, 2} in a user .npz", ["train", "--dataset", f["labels12.npz"], "--epochs", "1"]),
        ("silently wrong", "run scaling --methods erm,erm", ["run", "scaling", "--methods", "erm,erm", "-d", data]),
        ("silently wrong", "run cifar-b --severities 1,1", ["run", "cifar-b", "--severities", "1,1", *cifar]),
        ("silently wrong", "spectral --features with one group per class", ["spectral", "--features", f["onegroup.npz"]]),
        ("ignored option", "train --gdro-eta with --method erm", ["train", *D, "--gdro-eta", "0.5"]),
        ("ignored option", "train --mixture-ratio with --method erm", ["train", *D, "--mixture-ratio", "2"]),
        ("ignored option", "train --jtt-epochs with --method erm", ["train", *D, "--jtt-epochs", "2"]),
        ("ignored option", "run d3m --trak-alpha with one TRAK model", ["run", "d3m", *D, "--trak-alpha", "0.3"]),
        ("ignored option", "run d3m --search-points without --removal search", ["run", "d3m", *D, "--search-points", "3"]),
        ("ignored option", "run scaling --pretrain-option with --pretrain-epochs 0",
         ["run", "scaling", "--pretrain-epochs", "0", "--pretrain-option", "n_train=100", "-d", data]),
        ("ignored option", "spectral --epochs/--split with --features", ["spectral", "--features", f["onegroup.npz"], "--epochs", "3"]),
        ("hang or internal error", "--backend ray --address 127.0.0.1:1",
         ["run", "george", *D, "--backend", "ray", "--address", "127.0.0.1:1"]),
        ("hang or internal error", "spectral --top-k 1000000000", ["spectral", "--features", f["onegroup.npz"], "--top-k", "1000000000"]),
        ("hang or internal error", "flow samples --n 100000000", ["flow", "samples", f["flow.pt"], *cifar, "-o", str(tmp / "s.png"), "--n", "100000000"]),
        ("hang or internal error", "train --epochs 99999999999999999999999", ["train", "--dataset", "u-digits", "--epochs", "99999999999999999999999"]),
        ("hang or internal error", "audit --bootstrap 10000000000",
         ["audit", str(Path(__file__).resolve().parents[1] / "examples" / "predictions.csv"), "--y", "label", "--pred", "prediction",
          "--group", "digit", "--bootstrap", "10000000000"]),
        ("hang or internal error", "train --width 1e12", ["train", *D, "--width", "1e12"]),
        ("hang or internal error", "run scaling --widths 1e9",
         ["run", "scaling", "--dataset", "u-digits", "--pretrain-dataset", "digits", "--model", "mlp", "--widths", "1e9"]),
        ("hang or internal error", "run d3m --proj-dim 1e12", ["run", "d3m", *D, "--proj-dim", "1000000000000"]),
        ("hang or internal error", "a --config nested 5,000 deep", ["train", "--config", f["deep.json"]]),
        ("work before the error", "run d3m --beta nan", ["run", "d3m", *D, "--beta", "nan"]),
        ("work before the error", "run d3m --fraction 1.0", ["run", "d3m", *D, "--fraction", "1.0"]),
        ("work before the error", "run d3m --work-dir /proc/wd", ["run", "d3m", *D, "--work-dir", "/proc/wd"]),
        ("work before the error", "run scaling --finetune half", ["run", "scaling", "--finetune", "half", "-d", data]),
        ("work before the error", "run cifar-b --dataset u-digits", ["run", "cifar-b", "--dataset", "u-digits", "--epochs", "1"]),
        ("work before the error", "flow train --steps 0", ["flow", "train", *cifar, "--steps", "0", "-o", str(tmp / "f.pt")]),
        ("work before the error", "flow train --free-bits nan", ["flow", "train", *cifar, "--free-bits", "nan", "-o", str(tmp / "f.pt")]),
        ("work before the error", "run cifar-b with a raw-pickle --flow",
         ["run", "cifar-b", *cifar, "--augment", "flip_crop,flowaug", "--flow", f["raw.pt"]]),
        ("unclear message", "a text file named .npz", ["train", "--dataset", f["text.npz"]]),
        ("unclear message", "run cifar-b --option max_train=0", ["run", "cifar-b", *cifar, "--option", "max_train=0"]),
        ("unclear message", "train --init raw-pickle.pt", ["train", *D, "--init", f["raw.pt"]]),
    ]


# case -> (exit code, what the output must say): a reason where the input is not an error; for the
# "unclear message" cases, the words a clear message needs
EXPECT = {"spectral --features with one group per class": (0, "undefined"),
          "spectral --top-k 1000000000": (0, "rho"),  # as many eigenvalues as there are, at once
          "a text file named .npz": (2, "a text file"),
          "run cifar-b --option max_train=0": (2, "max_train"),
          "train --init raw-pickle.pt": (2, "raw pickle")}


# output lines that show work was done before the error (training, steps, tables)
WORK_MARKS = ("epoch", "step ", "training", "pretrain", "finetune", "TRAK", "ERM", "Group DRO", "┃", "│", "wrote")


def classify(name: str, args: list[str], exe: str, timeout: float, cwd: Path) -> dict:
    t = time.perf_counter()
    try:
        r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                           env={**os.environ, "COLUMNS": "200"})
        code, out = r.returncode, (r.stderr + r.stdout)
    except subprocess.TimeoutExpired as e:
        code, out = None, ((e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or ""))
    secs = time.perf_counter() - t
    lines = [x for x in out.strip().splitlines() if x.strip()]
    first_error = next((x for x in lines if x.startswith(("error:", "internal error:"))), lines[-1] if lines else "")
    if code is None:
        outcome = "still running"
    elif name in EXPECT and EXPECT[name][0] == 0:
        outcome = "answered" if code == 0 and EXPECT[name][1] in out else "accepted" if code == 0 else f"exit {code}"
    elif code == 2 and "Traceback" not in out and any(x.startswith("error:") for x in lines):
        worked = any(m in x for x in lines if not x.startswith(("error:", "warning:")) for m in WORK_MARKS)
        outcome = ("refused after work" if worked else
                   "unclear" if name in EXPECT and EXPECT[name][1] not in out else "refused")
    elif code == 1 and "internal error" in out:
        outcome = "internal error"
    elif code == 0:
        outcome = "accepted"
    else:
        outcome = f"exit {code}"
    return {"outcome": outcome, "exit_code": code, "seconds": round(secs, 1), "message": first_error[:300],
            "traceback": "Traceback" in out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", required=True, help="name of this run, e.g. before / after")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds each invocation may run")
    ap.add_argument("--skip", action="append", default=[], help="leave out the cases whose name contains this "
                    "(repeatable), e.g. 'ray' against code that hangs joining a cluster")
    args = ap.parse_args()
    exe = str(Path(sys.executable).parent / "stratalab")
    import stratalab

    rows = []
    with tempfile.TemporaryDirectory(prefix="stratalab-battery-") as tmp:
        tmp_path = Path(tmp)
        f = fixtures(tmp_path)
        for cls, name, argv in cases(f, tmp_path, str(data_dir())):
            if any(s in name for s in args.skip):
                continue
            row = {"class": cls, "case": name, **classify(name, argv, exe, args.timeout, tmp_path)}
            rows.append(row)
            print(f"{row['outcome']:15s} {row['seconds']:6.1f} s  {name}: {row['message'][:120]}", flush=True)
    good = {"refused", "answered"}
    kinds = ["accepted", "refused after work", "unclear", "internal error", "still running"]
    lines = ["| class | cases | refused at the door or answered | " + " | ".join(kinds) + " | other |",
             "|---|---|---|" + "---|" * (len(kinds) + 1)]
    for cls in dict.fromkeys(r["class"] for r in rows):
        sub = [r for r in rows if r["class"] == cls]
        counts = [sum(r["outcome"] == k for r in sub) for k in kinds]
        other = len(sub) - sum(counts) - sum(r["outcome"] in good for r in sub)
        lines.append(f"| {cls} | {len(sub)} | {sum(r['outcome'] in good for r in sub)} | "
                     + " | ".join(map(str, counts)) + f" | {other} |")
    md = "\n".join(lines) + (f"\n\nCode: {stratalab.__file__}; limit {args.timeout:g} s per invocation; "
                            f"{sum(r['outcome'] in good for r in rows)} of {len(rows)} cases refused or answered.")
    print(md)
    write(f"bad_inputs_battery_{args.label}", {"args": vars(args), "rows": rows}, md)


if __name__ == "__main__":
    main()
