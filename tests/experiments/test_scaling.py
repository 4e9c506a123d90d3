"""LaBonte et al. study on tiny settings: pretrain -> finetune (--init), the scaling grid, its
outputs' shapes, and the finetuning modes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stratalab.cli.main import app
from stratalab.data import load
from stratalab.experiments import ScalingConfig, plot_collapse, plot_scaling, run_scaling
from stratalab.models import build_model, load_pretrained, read_pretrained, save_pretrained
from stratalab.train import TrainConfig, run

runner = CliRunner()


def test_pretrain_then_finetune_loads_the_body_and_a_fresh_head(tmp_path):
    w = tmp_path / "w.pt"
    res = runner.invoke(app, ["pretrain", "--dataset", "digits", "--model", "mlp", "--width", "0.5", "--epochs", "10",
                              "-o", str(w), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["source"] == "digits" and info["source_test_accuracy"] > 0.6  # 10-way: chance is 0.1
    pre = read_pretrained(w)
    assert pre["n_classes"] == 10 and pre["model"] == "mlp"
    target = build_model("mlp", (1, 8, 8), 2, width=0.5, seed=3)
    fresh_head = target.head.weight.detach().clone()
    got = load_pretrained(target, w, model_name="mlp", width=0.5, input_shape=(1, 8, 8), finetune="last_layer")
    assert not got["head_reused"] and torch.equal(target.head.weight, fresh_head)  # 10 -> 2 classes: head kept fresh
    body = {k: v for k, v in pre["state"].items() if not k.startswith("head.")}
    assert all(torch.equal(target.state_dict()[k], v) for k, v in body.items())
    assert got["trainable_params"] == sum(p.numel() for p in target.head.parameters())
    with pytest.raises(ValueError, match="width 0.5"):
        load_pretrained(build_model("mlp", (1, 8, 8), 2, width=1.0), w, model_name="mlp", width=1.0, input_shape=(1, 8, 8))


def test_last_layer_finetuning_leaves_the_body_untouched(tmp_path):
    src = load("digits")
    r = run(src, TrainConfig(model="mlp", epochs=1, select="val_avg"))
    save_pretrained(r.model, tmp_path / "w.pt", model_name="mlp", width=1.0, input_shape=(1, 8, 8), n_classes=10,
                    source="digits", config={})
    ft = run(load("u-digits"), TrainConfig(model="mlp", epochs=2, init=str(tmp_path / "w.pt"), finetune="last_layer"))
    before = {k: v for k, v in r.model.state_dict().items() if not k.startswith("head.")}
    after = ft.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert ft.extra["pretrained"]["finetune"] == "last_layer"
    full = run(load("u-digits"), TrainConfig(model="mlp", epochs=2, init=str(tmp_path / "w.pt")))
    assert not all(torch.equal(full.model.state_dict()[k], v) for k, v in before.items())


def test_train_cli_refuses_bad_init_before_work(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    res = runner.invoke(app, ["train", "--dataset", "u-digits", "--epochs", "1", "--init", str(tmp_path / "bad.pt")])
    assert res.exit_code == 2 and "not readable pretrained weights" in res.output
    res = runner.invoke(app, ["train", "--dataset", "u-digits", "--epochs", "1", "--finetune", "last_layer"])
    assert res.exit_code == 2 and "give init" in res.output


def test_scaling_study_outputs_have_the_grid_shape(tmp_path):
    cfg = ScalingConfig.of(dataset="u-digits", pretrain_dataset="digits", model="mlp", widths=(0.25, 2.0), seeds=(0, 1),
                        epochs=2, pretrain_epochs=1, mixture_ratio=1.5)
    res = run_scaling(cfg, weights_dir=tmp_path / "w")
    assert len(res.runs) == 2 * 5 * 2
    tab = res.table()
    assert len(tab) == 2 * 5 and (tab["seeds"] == 2).all()
    assert tab.groupby("width")["params"].nunique().eq(1).all() and tab["params"].max() > 5 * tab["params"].min()
    assert all(len(r["curve"]) == 2 for r in res.runs)
    assert set(res.curves()["method"]) == set(cfg.methods) and res.curves()["epoch"].max() == 2
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["mlp-w0.25.pt", "mlp-w2.pt"]
    again = run_scaling(cfg, weights_dir=tmp_path / "w")  # weights reused, same numbers
    assert all(p["reused"] for p in again.pretraining)
    assert [r["test_wga"] for r in again.runs] == [r["test_wga"] for r in res.runs]
    for f in (plot_scaling(res, tmp_path / "s.png"), plot_collapse(res, tmp_path / "c.png")):
        assert f.read_bytes()[:4] == b"\x89PNG"
    json.dumps(res.to_dict())
    assert "train_wga_mean" not in res.curves()
    with pytest.raises(ValueError, match="unknown balancing"):
        ScalingConfig.of(methods=("erm", "gdro"))
    with pytest.raises(ValueError, match="width must be"):
        ScalingConfig.of(widths=(1.0, 0.0))


def test_scaling_study_with_eval_train_gives_train_curves(tmp_path):
    """Issue 21: each run's train worst-group and average accuracy per epoch, their means in
    ``curves``, and a second panel in the collapse figure. Pretraining never evaluates its train
    split, so its cached weights serve runs with and without ``eval_train``; with ``eval_every=2``
    the curves sit at the epochs evaluated."""
    from PIL import Image

    cfg = ScalingConfig.of(dataset="u-digits", pretrain_dataset="digits", model="mlp", widths=(1.0,), seeds=(0, 1),
                           methods=("erm", "upsampling"), epochs=3, pretrain_epochs=1, eval_train=True)
    res = run_scaling(cfg, weights_dir=tmp_path / "w")
    for r in res.runs:
        assert len(r["train_wga_curve"]) == len(r["train_avg_curve"]) == len(r["curve"]) == 3
        assert all(w <= a + 1e-12 for w, a in zip(r["train_wga_curve"], r["train_avg_curve"]))  # worst group <= average
    assert "train_wga_curve" not in res.rows() and "curve_epochs" not in res.rows()  # per-epoch lists stay out of the table
    cur = res.curves()
    up = cur[(cur["method"] == "upsampling") & (cur["epoch"] == 3)].iloc[0]
    runs = [r for r in res.runs if r["method"] == "upsampling"]
    assert up["train_wga_mean"] == pytest.approx(np.mean([r["train_wga_curve"][2] for r in runs]))
    wide = Image.open(plot_collapse(res, tmp_path / "c.png")).size[0]
    cfg_plain = ScalingConfig.from_dict({**cfg.to_dict(), "train": {**cfg.train.to_dict(), "eval_train": False}})
    plain = run_scaling(cfg_plain, weights_dir=tmp_path / "w")
    assert all(p["reused"] for p in plain.pretraining)
    assert [r["curve"] for r in plain.runs] == [r["curve"] for r in res.runs]  # evaluating train changes no number
    narrow = Image.open(plot_collapse(plain, tmp_path / "d.png")).size[0]
    assert wide > 1.5 * narrow  # the train panel beside the test panel
    sparse = ScalingConfig.from_dict({**cfg.to_dict(), "train": {**cfg.train.to_dict(), "eval_every": 2}, "seeds": (0,)})
    every2 = run_scaling(sparse, weights_dir=tmp_path / "w2")
    assert sorted(set(every2.curves()["epoch"])) == [2, 3] and all(r["curve_epochs"] == [2, 3] for r in every2.runs)


def test_review_fixes_weights_source_and_frozen_batchnorm(tmp_path):
    """Cached weights are reused only for the same source task; last-layer finetuning of a model
    with BatchNorm leaves every body tensor (running statistics included) unchanged."""
    cfg = ScalingConfig.of(dataset="u-digits", pretrain_dataset="digits", model="mlp", widths=(0.25,), methods=("erm",),
                        seeds=(0,), epochs=1, pretrain_epochs=1)
    run_scaling(cfg, weights_dir=tmp_path / "w")
    other = ScalingConfig.of(**{**cfg.to_dict(), "pretrain_dataset": "u-digits"})
    res = run_scaling(other, weights_dir=tmp_path / "w")
    assert res.pretraining[0]["reused"] is False and read_pretrained(tmp_path / "w" / "mlp-w0.25.pt")["source"] == "u-digits"

    rng = np.random.default_rng(0)
    from stratalab.data import Dataset, Split

    def split(n):
        return Split(x=rng.random((n, 3, 32, 32)).astype(np.float32), y=np.arange(n) % 2)

    ds = Dataset(name="toy", splits={"train": split(16), "val": split(8), "test": split(8)}, class_names=["a", "b"])
    src = build_model("resnet", (3, 32, 32), 2, width=0.25, seed=0)
    save_pretrained(src, tmp_path / "r.pt", model_name="resnet", width=0.25, input_shape=(3, 32, 32), n_classes=2,
                    source="toy", config={})
    ft = run(ds, TrainConfig(model="resnet", width=0.25, epochs=1, batch_size=8, init=str(tmp_path / "r.pt"),
                             finetune="last_layer"))
    before = {k: v for k, v in src.state_dict().items() if not k.startswith("head.")}
    assert all(torch.equal(ft.model.state_dict()[k], v) for k, v in before.items())


def test_options_that_may_be_none_or_free_form_pass_the_type_check():
    ds = load("synthetic-gmm", subclass_probs=(0.25, 0.25, 0.25, 0.25))
    assert ds.n_classes == 2
