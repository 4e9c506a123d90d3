"""The one place that names a device and a precision (stratalab._device), and the door every
training command checks them at (issue 20)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stratalab._device import (
    autocast,
    available_devices,
    check_device_spec,
    check_precision,
    cpu_has_bf16,
    grad_scaler,
    model_device,
    resolve_device,
    to_device,
)
from stratalab.cli.main import app
from stratalab.data import load
from stratalab.train import TrainConfig, fit

NO_CUDA = not torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(NO_CUDA, reason="no CUDA GPU on this machine (torch.cuda.is_available() is False)")


def test_auto_and_cpu_resolve_to_a_present_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(" CPU ") == "cpu"
    assert resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else available_devices()[-1])
    assert available_devices()[0] == "cpu"


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu", "", "cuda:-1"])
def test_a_misspelt_device_names_the_choices(spec):
    with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:<index> or mps"):
        check_device_spec(spec)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA GPU, so cuda is present")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_an_absent_cuda_is_refused_with_the_fix(spec):
    with pytest.raises(ValueError, match="not present on this machine.*use --device cpu or auto"):
        resolve_device(spec)


def test_precision_is_checked_against_the_device():
    assert check_precision("BF16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="fp16' needs a GPU"):
        check_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="one of fp32, bf16, fp16"):
        check_precision("fp8", "cpu")


def test_to_device_moves_nested_batches_and_leaves_the_rest():
    batch = (torch.zeros(2), [torch.ones(1), None], {"a": torch.arange(3)}, "label")
    out = to_device(batch, "cpu")
    assert isinstance(out, tuple) and out[1][1] is None and out[3] == "label"
    assert torch.equal(out[2]["a"], torch.arange(3))


def test_autocast_fp32_is_a_no_op_and_bf16_computes_in_bfloat16():
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)
    with autocast("cpu", "fp32"):
        assert lin(x).dtype == torch.float32
    with autocast("cpu", "bf16"):
        assert lin(x).dtype == torch.bfloat16
    assert not grad_scaler("cpu", "bf16").is_enabled()  # bf16 needs no loss scaling


def test_model_device_reads_parameters_then_buffers():
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")


def test_config_resolves_auto_so_results_record_the_device_that_ran():
    cfg = TrainConfig()
    assert cfg.device == resolve_device("auto") and cfg.precision == "fp32"
    assert TrainConfig(device="cuda").device == "cuda:0"  # the kind is checked here, its presence when a run starts
    assert TrainConfig.from_dict({"model": "mlp"}).device == resolve_device("auto")  # files from before issue 20
    with pytest.raises(ValueError, match="device must be"):
        TrainConfig(device="gpu")


@pytest.mark.parametrize("device", available_devices())
def test_training_runs_on_every_present_device_with_the_same_batches(device):
    """The same seed draws the same batches on every device (sampling and augmentation stay on the
    CPU), so the accuracy agrees with the CPU's up to float rounding."""
    ds = load("u-digits")
    res = {}
    for dev in dict.fromkeys(["cpu", device]):
        from stratalab.models import build_model

        model = build_model("mlp", ds.train.input_shape, ds.n_classes, seed=0)
        cfg = TrainConfig(epochs=2, device=dev, augment="none", select="val_avg")
        out = fit(model, ds.train, cfg, val=ds.val)
        assert model_device(out.model).type == torch.device(dev).type
        res[dev] = out.history[-1]["val"]["average_accuracy"]
    assert abs(res["cpu"] - res[device]) < 0.02


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bfloat16 (AVX-512 BF16 / AMX)")
def test_bf16_training_on_the_cpu_learns_like_fp32():
    ds = load("u-digits")
    from stratalab.models import build_model

    acc, loss = {}, {}
    for prec in ("fp32", "bf16"):
        model = build_model("mlp", ds.train.input_shape, ds.n_classes, seed=0)
        out = fit(model, ds.train, TrainConfig(epochs=8, precision=prec, device="cpu", select="val_avg"), val=ds.val)
        acc[prec], loss[prec] = out.history[-1]["val"]["average_accuracy"], out.history[-1]["train_loss"]
    assert loss["fp32"] != loss["bf16"]  # bf16 did run: its rounding moves the loss
    assert abs(loss["fp32"] - loss["bf16"]) < 0.01 and acc["fp32"] > 0.8 and abs(acc["fp32"] - acc["bf16"]) < 0.05, (acc, loss)


@needs_cuda
@pytest.mark.cuda
def test_fp16_on_cuda_trains_with_loss_scaling():
    ds = load("u-digits")
    from stratalab.models import build_model

    model = build_model("mlp", ds.train.input_shape, ds.n_classes, seed=0)
    out = fit(model, ds.train, TrainConfig(epochs=3, device="cuda", precision="fp16", select="val_avg"), val=ds.val)
    assert out.history[-1]["val"]["average_accuracy"] > 0.7


TRAINING_COMMANDS = [
    ["train", "--dataset", "u-mnist"],
    ["pretrain", "--dataset", "u-mnist", "-o", "{tmp}/w.pt"],
    ["run", "george", "--dataset", "u-mnist"],
    ["run", "d3m", "--dataset", "u-mnist"],
    ["run", "scaling", "--dataset", "u-mnist", "--pretrain-dataset", "u-mnist"],
    ["run", "cifar-b", "--dataset", "cifar10-b"],
    ["flow", "train", "--dataset", "cifar10-b", "-o", "{tmp}/f.pt"],
    ["spectral", "--dataset", "u-mnist"],
]


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA GPU, so --device cuda is accepted")
@pytest.mark.parametrize("args", TRAINING_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_training_command_refuses_an_absent_cuda_at_the_door(args, tmp_path):
    """Exit 2, one line, no traceback, before any work: the data folder does not even exist, so a
    command that read data first would name the data instead."""
    argv = [a.format(tmp=tmp_path) for a in args] + ["-d", str(tmp_path / "no-such-folder"), "--device", "cuda"]
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "device 'cuda' is not present" in lines[0] and "Traceback" not in res.output
    assert not list(tmp_path.iterdir())  # nothing written


def test_flow_training_records_its_device(tmp_path):
    from stratalab.models.flow import FlowConfig, train_flow

    x = np.random.default_rng(0).integers(0, 256, (8, 3, 8, 8)).astype(np.float32) / 255
    flow, hist = train_flow(x, FlowConfig(image_shape=(3, 8, 8), levels=1, steps=1, hidden=8, z_dim=4, epochs=1,
                                          batch_size=4), device="cpu")
    assert model_device(flow).type == "cpu" and len(hist) == 1
    with pytest.raises(ValueError, match="fp16' needs a GPU"):
        train_flow(x, FlowConfig(image_shape=(3, 8, 8), levels=1, steps=1, epochs=1, batch_size=4), precision="fp16")


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA GPU, so a cuda result reruns here as recorded")
def test_rerun_of_a_gpu_result_on_a_cpu_says_how_and_runs_with_device_cpu(tmp_path):
    import json

    run = tmp_path / "run.json"
    assert CliRunner().invoke(app, ["train", "--dataset", "u-digits", "--epochs", "1", "-o", str(run)]).exit_code == 0
    d = json.loads(run.read_text())
    d["invocation"]["config"]["device"] = "cuda:0"  # as a GPU machine records it
    run.write_text(json.dumps(d))
    res = CliRunner().invoke(app, ["rerun", str(run)])
    assert res.exit_code == 2 and "was made on cuda:0" in res.output and "--device cpu" in res.output, res.output
    res = CliRunner().invoke(app, ["rerun", str(run), "--device", "cpu", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["reproduced"], res.output


@pytest.mark.parametrize("native", [False, True])
def test_cli_warns_when_bf16_would_be_emulated_on_the_cpu(tmp_path, monkeypatch, native):
    """--precision bf16 on a CPU without AVX-512 BF16 / AMX runs emulated (a cifarnet step 12x slower
    than fp32 on an AVX2 CPU): the command says so on stderr before it trains, keeps stdout's JSON
    clean and still runs what was asked; a rerun of a bf16 result warns the same way."""
    import json

    from typer.testing import CliRunner

    from stratalab import _device
    from stratalab.cli import app

    monkeypatch.setattr(_device, "cpu_has_bf16", lambda: native)
    out = tmp_path / "run.json"
    res = CliRunner().invoke(app, ["train", "--dataset", "u-digits", "--epochs", "1", "--device", "cpu",
                                   "--precision", "bf16", "--json", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert ("no native bfloat16" in res.stderr) is not native
    assert "no native bfloat16" not in res.stdout and json.loads(res.stdout)["config"]["precision"] == "bf16"
    rerun = CliRunner().invoke(app, ["rerun", str(out), "--json"])
    assert rerun.exit_code == 0 and ("no native bfloat16" in rerun.stderr) is not native, rerun.output
    fp32 = CliRunner().invoke(app, ["train", "--dataset", "u-digits", "--epochs", "1", "--device", "cpu", "--precision", "fp32"])
    assert fp32.exit_code == 0 and "no native bfloat16" not in fp32.output
