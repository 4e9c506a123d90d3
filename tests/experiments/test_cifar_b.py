"""Chiu et al.'s CIFAR-B study at toy scale: every (augmentation, seed) trains and is audited on the
test colour groups, clean and corrupted; the table, severity curves, correlation and CLI agree with
the runs; settings are checked before any training."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from stratalab.cli.main import app
from stratalab.experiments.cifar_b import CifarBConfig, plot_class_vs_worst, run_cifar_b
from stratalab.metrics import group_report

runner = CliRunner()


@pytest.fixture
def tiny_cifar(tmp_path):
    """A user .npz shaped like CIFAR-10-B: uint8 RGB 3x32x32, 3 classes told apart by their
    dominant colour channel, 4 "background" groups (a border shade)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 150), ("val", 60), ("test", 96)):
        y = np.arange(n) % 3
        g = (np.arange(n) // 3) % 4
        x = rng.integers(0, 60, (n, 3, 32, 32)).astype(np.uint8)
        x[np.arange(n), y, 8:24, 8:24] += 150  # the class: a bright square in channel y
        x[:, :, :4, :] = (40 * g)[:, None, None, None].astype(np.uint8)  # the group: a top border shade
        arrays[f"x_{split}"], arrays[f"y_{split}"], arrays[f"g_{split}"] = x, y, g
    path = tmp_path / "tiny_cifar.npz"
    np.savez(path, **arrays)
    return path


def config(path, **kw):
    return CifarBConfig.of(**{"dataset": str(path), "augmentations": ("flip_crop", "cutmix"), "seeds": (0, 1), "epochs": 2,
                           "batch_size": 32, "width": 0.25, **kw})


def test_study_rows_are_the_group_reports_of_each_run(tiny_cifar):
    cfg = config(tiny_cifar, corruptions=("gaussian_noise", "contrast"), severities=(1, 5), n_corrupt=48)
    res = run_cifar_b(cfg)
    assert [(r["augment"], r["seed"]) for r in res.runs] == [("flip_crop", 0), ("flip_crop", 1), ("cutmix", 0), ("cutmix", 1)]
    table = res.table().set_index("augment")
    rows = res.rows()
    for aug in ("flip_crop", "cutmix"):
        acc = rows.loc[rows["augment"] == aug, "accuracy"].to_numpy()
        assert table.loc[aug, "accuracy_mean"] == pytest.approx(acc.mean())
        assert table.loc[aug, "accuracy_std"] == pytest.approx(acc.std())
        assert table.loc[aug, "seeds"] == 2
    run0 = res.runs[0]
    assert len(run0["corrupted"]) == 4  # 2 corruptions x 2 severities
    assert {(c["corruption"], c["severity"]) for c in run0["corrupted"]} == {
        ("gaussian_noise", 1), ("gaussian_noise", 5), ("contrast", 1), ("contrast", 5)}
    corr_mean = np.mean([c["macro_std"] for c in run0["corrupted"]])
    assert rows.loc[0, "corrupted_macro_std"] == pytest.approx(corr_mean)
    curves = res.severity_curves()
    assert set(curves["severity"]) == {1, 5} and set(curves["augment"]) == {"flip_crop", "cutmix"}
    corr = res.correlation()
    assert corr["runs"] == 4 and (np.isnan(corr["pearson"]) or -1 <= corr["pearson"] <= 1)


def test_clean_metrics_match_an_audit_of_the_same_predictions(tiny_cifar, monkeypatch):
    """The clean row is exactly group_report on the test colour groups (one source of truth)."""
    import stratalab.experiments.cifar_b as study

    seen = {}
    real = study.run

    def spy(ds, cfg, **kw):
        r = real(ds, cfg, **kw)
        seen["ds"], seen["model"] = ds, r.model
        return r

    monkeypatch.setattr(study, "run", spy)
    res = run_cifar_b(config(tiny_cifar, augmentations=("flip_crop",), seeds=(0,)))
    from stratalab.train import predict

    ds = seen["ds"]
    rep = group_report(ds.test.y, predict(seen["model"], ds.test).argmax(1), ds.test.g)
    clean = res.runs[0]["clean"]
    assert clean["macro_std"] == rep.macro_std and clean["weighted_std"] == rep.weighted_std
    assert clean["accuracy"] == rep.average_accuracy and clean["worst_group"] == list(map(int, rep.worst_group))


@pytest.mark.parametrize("kw, message", [
    (dict(augmentations=("augmix",)), "unknown augmentation 'augmix'"),
    (dict(augmentations=("flowaug",)), "the flowaug row needs flow=PATH"),
    (dict(augmentations=("flowaug",), flow="no-such-flow.pt"), "no flow file at no-such-flow.pt"),
    (dict(flow=__file__), "used only by the flowaug row"),
    (dict(augmentations=("flowaug",), flow=__file__, flowaug_objective="gauss+cutmix"), "flowaug_objective must be one of"),
    (dict(corruptions=("rain",)), "unknown corruption 'rain'"),
    (dict(severities=(0,)), "severities must be in 1..5"),
    (dict(seeds=(1, 1)), "seeds lists 1 twice"),
    (dict(n_corrupt=0), "n_corrupt must be an integer >= 1"),
    (dict(mix_alpha=-1), "mix_alpha"),
])
def test_bad_settings_are_refused_before_training(tiny_cifar, kw, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        config(tiny_cifar, **kw)


def test_cli_writes_the_table_figure_and_json(tiny_cifar, tmp_path):
    out, fig = tmp_path / "study.json", tmp_path / "fig.png"
    r = runner.invoke(app, ["run", "cifar-b", "--dataset", str(tiny_cifar), "--augment", "flip_crop,mixup", "--seeds", "0",
                            "--epochs", "1", "--batch-size", "32", "--width", "0.25", "--corruptions", "fog",
                            "--severities", "3", "--n-corrupt", "24", "-o", str(out), "--figure", str(fig)])
    assert r.exit_code == 0, r.output
    assert "MacroStd" in r.output and fig.stat().st_size > 1000
    d = json.loads(out.read_text())
    assert d["invocation"]["command"] == "run cifar-b" and [row["augment"] for row in d["table"]] == ["flip_crop", "mixup"]
    assert d["runs"][0]["corrupted"][0]["corruption"] == "fog"
    # the result file reads into the report and bench (the rows of the table, by seed)
    from stratalab.experiments import load_result

    res = load_result(out)
    rec = res.records()
    got = rec[(rec["method"] == "mixup") & (rec["metric"] == "test_macro_std")]["value"].tolist()
    assert got == [d["runs"][1]["clean"]["macro_std"]]
    assert res.group_tables()[0].worst is not None and res.labels_used()["mixup"].startswith("class labels only")
    page = runner.invoke(app, ["report", str(out), "-o", str(tmp_path / "r.html")])
    assert page.exit_code == 0, page.output
    assert "MacroStd" in (tmp_path / "r.html").read_text()
    bad = runner.invoke(app, ["run", "cifar-b", "--dataset", str(tiny_cifar), "--augment", "flip_crop", "--severities", "x"])
    assert bad.exit_code == 2 and "--severities takes" in bad.output


def test_class_vs_worst_figure(tiny_cifar, tmp_path):
    res = run_cifar_b(config(tiny_cifar, augmentations=("flip_crop",), seeds=(0,), epochs=1))
    assert plot_class_vs_worst(res, tmp_path / "f.svg").stat().st_size > 1000


def test_corrupted_subset_is_drawn_across_a_class_sorted_test_set():
    from stratalab.experiments.cifar_b import corrupt_subset

    y = np.repeat(np.arange(10), 1000)  # sorted by class, like the CIFAR-10 JPEG copy
    idx = corrupt_subset(y.size, 500)
    assert idx.size == 500 and np.unique(idx).size == 500 and (np.diff(idx) > 0).all()
    assert np.bincount(y[idx], minlength=10).min() >= 30  # every class, not 500 airplanes
    assert np.array_equal(idx, corrupt_subset(y.size, 500))  # the same images for every run
    assert np.array_equal(corrupt_subset(40, 100), np.arange(40))


def test_runs_in_one_process_share_each_corrupted_copy(tiny_cifar, monkeypatch):
    import stratalab.augment.corruptions as corruptions
    import stratalab.experiments.cifar_b as study

    monkeypatch.setattr(study, "_CORRUPTED", type(study._CORRUPTED)())
    calls = []
    real = corruptions.corrupt

    def spy(images, name, severity, seed=0):
        calls.append((name, severity))
        return real(images, name, severity, seed)

    monkeypatch.setattr(corruptions, "corrupt", spy)
    res = run_cifar_b(config(tiny_cifar, corruptions=("fog", "contrast"), severities=(2, 4), n_corrupt=30, epochs=1))
    # made once per seed's data (a seed may change the test split), shared by both augmentations
    assert len(res.runs) == 4 and sorted(calls) == sorted([("contrast", 2), ("contrast", 4), ("fog", 2), ("fog", 4)] * 2)


def test_flowaug_row_end_to_end_from_the_cli(tiny_cifar, tmp_path):
    """flow train -> flow samples -> run cifar-b with a FlowAug row; the row is named by its
    objective, a second flow file is a different run (its bytes are in the task key), and a flow
    of the wrong image size is refused before any training."""
    flow = tmp_path / "flow.pt"
    r = runner.invoke(app, ["flow", "train", "--dataset", str(tiny_cifar), "--epochs", "1", "--steps", "1", "--hidden", "8",
                            "--z-dim", "4", "--batch-size", "50", "--n-eval", "20", "--threads", "1", "-o", str(flow), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["n_train"] == 150 and 0 < info["test_bpd"] < 16 and len(info["history"]) == 1
    assert info["threads"] == 1  # the torch threads it trained with, recorded as every training command does
    # the record says how the flow was made: its settings, not the calling program's argv
    assert info["command"] == (f"stratalab flow train --output {flow} --dataset {tiny_cifar} --epochs 1 --steps 1 "
                               "--hidden 8 --z-dim 4 --batch-size 50 --n-eval 20 --json --threads 1")
    fig = tmp_path / "samples.png"
    s = runner.invoke(app, ["flow", "samples", str(flow), "--dataset", str(tiny_cifar), "--n", "4", "-o", str(fig), "--json"])
    assert s.exit_code == 0, s.output
    change = json.loads(s.output)["mean_abs_pixel_change"]
    assert set(change) == {"original", "reconstruction", "alg1 sigma=0.1", "alg1 sigma=0.5", "alg2 mix z", "z swapped"}
    assert change["original"] == 0 and change["reconstruction"] < 0.01 and fig.stat().st_size > 1000
    out = tmp_path / "study.json"
    work = tmp_path / "work"
    args = ["run", "cifar-b", "--dataset", str(tiny_cifar), "--augment", "flip_crop,flowaug", "--flow", str(flow), "--seeds", "0",
            "--epochs", "1", "--batch-size", "32", "--width", "0.25", "--work-dir", str(work), "-o", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    assert [row["name"] for row in d["table"]] == ["Standard", "FlowAug (Trunc Gaussian on z + Std)"]
    assert d["config"]["flow"] == str(flow.resolve())
    from stratalab.experiments import load_result

    assert load_result(out).labels_used().keys() == {"flip_crop", "flowaug"}
    n_files = len(list(work.glob("*.json")))
    # growing the grid keeps finished runs; another flow file is another FlowAug run
    other = tmp_path / "flow2.pt"
    runner.invoke(app, ["flow", "train", "--dataset", str(tiny_cifar), "--epochs", "1", "--steps", "1", "--hidden", "8",
                        "--z-dim", "4", "--seed", "1", "--n-eval", "0", "-o", str(other)])
    r2 = runner.invoke(app, args[:5] + ["flip_crop,mixup,flowaug", "--flow", str(other)] + args[8:])
    assert r2.exit_code == 0, r2.output
    assert len(list(work.glob("*.json"))) == n_files + 2  # mixup and the new flow's FlowAug; Standard reused
    big = tmp_path / "big.pt"
    from stratalab.models.flow import DecoupledFlow, FlowConfig, save_flow

    save_flow(DecoupledFlow(FlowConfig(image_shape=(3, 16, 16), steps=1, hidden=8, z_dim=4)), big)
    bad = runner.invoke(app, args[:7] + [str(big)] + args[8:])
    assert bad.exit_code != 0 and "models images of shape (3, 16, 16)" in bad.output
    missing = runner.invoke(app, args[:5] + ["flowaug"])
    assert missing.exit_code != 0 and "needs flow=PATH" in missing.output
    # Algorithm 1's sigma and Algorithm 2's partners reach the FlowAug run and its record
    mix = tmp_path / "mix.json"
    r3 = runner.invoke(app, args[:5] + ["flowaug"] + args[6:-1] + [str(mix), "--flowaug-objective", "gauss+mix",
                                                                  "--flowaug-sigma", "0.5", "--flowaug-pairs", "same_class"])
    assert r3.exit_code == 0, r3.output
    train = json.loads(mix.read_text())["config"]["train"]
    assert (train["flowaug_sigma"], train["flowaug_pairs"]) == (0.5, "same_class")
    assert len(list(work.glob("*.json"))) == n_files + 3  # another objective, sigma and partner rule: another run
    pairs = runner.invoke(app, args + ["--flowaug-objective", "gauss+mix", "--flowaug-pairs", "class"])
    assert pairs.exit_code != 0 and "flowaug_pairs must be 'same_class' or 'any'" in pairs.output


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test when a whole split is decoded or any model trains (the error must come first)."""
    import stratalab.train.loop as loop
    from stratalab.data.core import Split

    load_x = Split.load_x

    def one_at_a_time(self, index=None):
        if index is None or np.size(index) > 1:
            raise AssertionError("the data were decoded before the bad option was refused")
        return load_x(self, index)

    def refuse(*a, **k):
        raise AssertionError("training started before the bad option was refused")

    monkeypatch.setattr(Split, "load_x", one_at_a_time)
    monkeypatch.setattr(loop, "make_optimizer", refuse)


@pytest.mark.parametrize("args, message", [
    (["--levels", "9"], "divisible by 2**levels"),
    (["--steps", "0"], "steps must be an integer >= 1"),
    (["--free-bits", "nan"], "free_bits must be a finite number"),
    (["--z-dim", "0"], "z_dim must be an integer >= 1"),
    (["--lr", "-1"], "lr must be a finite number > 0"),
])
def test_flow_train_checks_every_setting_before_decoding(tmp_path, tiny_cifar, no_decoding, args, message):
    res = runner.invoke(app, ["flow", "train", "--dataset", str(tiny_cifar), "-o", str(tmp_path / "f.pt"), *args])
    assert res.exit_code == 2 and message in res.output, res.output


def test_cifar_b_refuses_non_images_and_a_bad_flow_before_decoding(tmp_path, tiny_cifar, no_decoding):
    res = runner.invoke(app, ["run", "cifar-b", "--dataset", "u-digits", "--augment", "flip_crop"])  # 1x8x8 digits
    assert res.exit_code == 2 and "cifarnet needs image inputs" in res.output and "training" not in res.output, res.output
    feats = tmp_path / "feats.npz"  # feature vectors, not images
    np.savez(feats, **{f"{k}_{s}": (np.zeros((6, 5), np.float32) if k == "x" else np.arange(6) % 2)
                       for s in ("train", "val", "test") for k in ("x", "y", "g")})
    res = runner.invoke(app, ["run", "cifar-b", "--dataset", str(feats), "--augment", "flip_crop"])
    assert res.exit_code == 2 and "needs image data (C, H, W)" in res.output, res.output
    bad = tmp_path / "flow.pt"
    bad.write_bytes(b"not a torch file")
    res = runner.invoke(app, ["run", "cifar-b", "--dataset", str(tiny_cifar), "--augment", "flip_crop,flowaug",
                              "--flow", str(bad)])
    assert res.exit_code == 2 and "Traceback" not in res.output and "flow" in res.output, res.output


def test_flow_samples_bounds_the_number_of_columns(tmp_path):
    res = runner.invoke(app, ["flow", "samples", str(tmp_path / "none.pt"), "-o", str(tmp_path / "s.png"), "--n", "100000000"])
    assert res.exit_code == 2 and "--n must be in 2..64" in res.output, res.output


def test_flow_train_refuses_bad_settings_before_loading_the_data(tmp_path, monkeypatch):
    """Settings that do not depend on the image size are checked before the data set is even
    loaded (cifar10-b decodes 50,000 JPEGs when it loads)."""
    import stratalab.data as data_mod

    def no_load(*a, **k):
        raise AssertionError("the data set was loaded before the bad setting was refused")

    monkeypatch.setattr(data_mod, "load", no_load)
    for args, message in ((["--steps", "0"], "steps must be an integer >= 1"), (["--lr", "nan"], "lr must be a finite"),
                          (["--threads", "0"], "--threads must be an integer >= 1")):
        res = runner.invoke(app, ["flow", "train", "-o", str(tmp_path / "f.pt"), *args])
        assert res.exit_code == 2 and message in res.output, res.output


def test_the_cifar_recipe_runs_in_bf16_where_the_hardware_has_it_and_old_files_read_fp32():
    from stratalab._device import native_bf16
    from stratalab.experiments.cifar_b import CifarBConfig

    new = CifarBConfig.of(epochs=1, device="cpu", augmentations=("flip_crop",))
    assert new.train.precision == ("bf16" if native_bf16("cpu") else "fp32")
    old = CifarBConfig.from_dict({"epochs": 1, "model": "cifarnet", "augmentations": ["flip_crop"]})  # written before issue 20
    assert old.train.precision == "fp32"
    assert CifarBConfig.from_dict(new.to_dict()).train.precision == new.train.precision  # round trip
