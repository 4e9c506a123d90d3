"""Behaviour fixtures (issue 19): each tiny result in tests/fixtures/recorded was written before the
experiment-registry refactor; the same command run with today's code must give every number back."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stratalab.cli.main import app

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "recorded"
_spec = importlib.util.spec_from_file_location("record", HERE / "record.py")
record = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(record)  # type: ignore[union-attr]


def numbers(obj, prefix=""):
    """Every number in a JSON tree by its path; timings, paths and the invocation left out."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            # settings are not results: a config's shape may change (configs were composed after
            # these were recorded); rerun and --config check that old configs still run the same
            if k in ("seconds", "invocation", "source", "_provenance", "config", "d3m_config") or k.endswith("_seconds"):
                continue
            out.update(numbers(v, f"{prefix}.{k}"))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(numbers(v, f"{prefix}[{i}]"))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = float(obj)
    return out


@pytest.mark.parametrize("name", sorted(record.COMMANDS))
def test_todays_code_gives_the_recorded_numbers(name, tmp_path):
    images, features = record.tiny_images(tmp_path / "i.npz"), record.tiny_features(tmp_path / "f.npz")
    args = [a.format(images=images, features=features) for a in record.COMMANDS[name]]
    out = tmp_path / "new.json"
    res = CliRunner().invoke(app, [*args, "--json", "-o", str(out)])
    assert res.exit_code == 0, res.output
    old = numbers(json.loads(record.fixture(name).read_text()))
    new = numbers(json.loads(out.read_text()))
    assert len(old) > 10
    missing = sorted(set(old) - set(new))
    assert not missing, f"{len(missing)} recorded numbers are gone, e.g. {missing[:5]}"
    differ = [(k, old[k], new[k]) for k in old if not (old[k] == new[k] or (math.isnan(old[k]) and math.isnan(new[k])))]
    assert not differ, f"{len(differ)} of {len(old)} numbers differ, e.g. {differ[:5]}"


TRAINING = sorted(n for n in record.COMMANDS if n not in ("audit", "spectral"))  # spectral here reads features


@pytest.mark.parametrize("name", TRAINING)
def test_device_cpu_fp32_gives_the_recorded_numbers(name, tmp_path):
    """Issue 20: `--device cpu --precision fp32` is exactly the code path the fixtures were recorded on,
    and the result records the device and precision that ran."""
    images, features = record.tiny_images(tmp_path / "i.npz"), record.tiny_features(tmp_path / "f.npz")
    args = [a.format(images=images, features=features) for a in record.COMMANDS[name]]
    out = tmp_path / "new.json"
    res = CliRunner().invoke(app, [*args, "--device", "cpu", "--precision", "fp32", "--json", "-o", str(out)])
    assert res.exit_code == 0, res.output
    old = numbers(json.loads(record.fixture(name).read_text()))
    got = json.loads(out.read_text())
    new = numbers(got)
    differ = [k for k in old if not (old[k] == new.get(k) or (math.isnan(old[k]) and math.isnan(new.get(k, 0.0))))]
    assert not differ, f"{len(differ)} of {len(old)} numbers differ, e.g. {differ[:5]}"
    cfg = got["invocation"]["config"]
    cfg = cfg.get("train", cfg)  # composed configs hold the training config inside
    assert (cfg["device"], cfg["precision"]) == ("cpu", "fp32")


def test_each_cpu_reads_its_own_recording(monkeypatch):
    """An AVX-512 CPU (where the files were recorded) reads the originals; another CPU reads the
    non-avx512 copy where one exists, which keeps the recorded invocation and config."""
    monkeypatch.setattr(record, "cpu_isa", lambda: "avx512")
    assert record.fixture("train") == HERE / "train.json"
    monkeypatch.setattr(record, "cpu_isa", lambda: "other")
    assert record.fixture("train") == HERE / "non-avx512" / "train.json"
    assert record.fixture("audit") == HERE / "audit.json"  # bit for bit on both: no copy
    original, copy = (json.loads(p.read_text()) for p in (HERE / "run_george.json", HERE / "non-avx512" / "run_george.json"))
    assert copy["invocation"] == original["invocation"] and copy["config"] == original["config"]
    assert copy["runs"][0]["rows"]["ERM"] == original["runs"][0]["rows"]["ERM"]  # training agrees; UMAP's clusters do not
    assert copy["runs"][0]["k_per_class"] != original["runs"][0]["k_per_class"]
    assert record.splice({"invocation": 1, "table": 2, "gone": 3}, {"invocation": 9, "table": 8}) == {"invocation": 1, "table": 8, "gone": 3}
