"""benchmarks/gpu_check.sh and the ResNet-50 finetune it times (issue 20, item 5): the script says
in one line why it stops on a machine without CUDA, and the finetune runs end to end on the CPU at a
toy size, so the first CUDA run does not meet a broken script."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: the script would run in full")
def test_gpu_check_stops_in_one_line_without_cuda():
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                       env={"PY": sys.executable, "PATH": "/usr/bin:/bin"}, timeout=120)
    assert r.returncode == 1 and "no CUDA GPU here" in r.stderr and "Traceback" not in r.stderr


def test_the_resnet50_finetune_runs_on_the_cpu_at_a_toy_size(tmp_path):
    pytest.importorskip("transformers", reason="the hf extra is not installed")
    spec = importlib.util.spec_from_file_location("gpu_finetune", ROOT / "benchmarks" / "gpu_finetune.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    out = mod.main(["--device", "cpu", "--precision", "bf16", "--images", "16", "--size", "32", "--batch-size", "8",
                    "--workers", "0", "--folder", str(tmp_path / "wb")])
    assert out["device"] == "cpu" and out["images"] == 16 and out["images_per_second"] > 0
    assert out["peak_gpu_memory_gib"] is None and 0 <= out["test_worst_group_accuracy"] <= 1
