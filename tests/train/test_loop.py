import json

import numpy as np
import pytest
import torch

from stratalab.data import Split, load
from stratalab.models import build_model, embed
from stratalab.train import (
    GroupDRO,
    TrainConfig,
    best_epoch,
    class_weights,
    first_per_label,
    fit,
    fit_dfr,
    jtt_repeats,
    make_plan,
    predict,
    run,
)
from stratalab.train.loop import lr_factor


@pytest.fixture(scope="module")
def digits():
    return load("u-digits", seed=0)


def _fit_digits(ds, seed, epochs=3, ckpt=None, progress=None):
    model = build_model("mlp", (1, 8, 8), 2, seed=seed)
    cfg = TrainConfig(epochs=epochs, batch_size=64, seed=seed, select="val_wga")
    res = fit(model, ds.train, cfg, val=ds.val, test=ds.test, checkpoint_dir=ckpt, progress=progress)
    return res, predict(res.model, ds.test)


def test_same_seed_same_numbers(digits):
    (a, pa), (b, pb) = _fit_digits(digits, 0), _fit_digits(digits, 0)
    np.testing.assert_array_equal(pa, pb)
    assert a.history == b.history
    _, pc = _fit_digits(digits, 1)
    assert not np.array_equal(pa, pc)


def test_history_has_val_and_test_reports_and_selection(digits):
    res, proba = _fit_digits(digits, 0, epochs=4)
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    for h in res.history:
        assert set(h["val"]) >= {"worst_group_accuracy", "average_accuracy"} and "test" in h
        assert set(h["selection"]) == {"val_wga", "val_wca", "val_avg"}
    assert res.selected_epoch == best_epoch(res.history, "val_wga")
    assert res.labels_used["val_groups"] == "yes" and res.labels_used["train_groups"] == "no"
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    json.dumps(res.to_dict())


def test_resume_after_interruption_gives_the_same_run(digits, tmp_path):
    full, p_full = _fit_digits(digits, 0, epochs=4)

    class Stop(Exception):
        pass

    def interrupt(epoch, row):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        _fit_digits(digits, 0, epochs=4, ckpt=tmp_path, progress=interrupt)
    assert (tmp_path / "last.pt").is_file()
    resumed, p_res = _fit_digits(digits, 0, epochs=4, ckpt=tmp_path)
    assert resumed.history == full.history
    np.testing.assert_allclose(p_res, p_full, rtol=0, atol=1e-6)


def test_config_roundtrip_and_validation():
    cfg = TrainConfig(method="mixture", mixture_ratio=2.0, epochs=5, lr=0.01, optimizer="sgd", schedule="multistep")
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert TrainConfig.from_yaml(cfg.to_yaml()) == cfg
    with pytest.raises(ValueError, match="mixture_ratio"):
        TrainConfig(method="mixture")
    with pytest.raises(ValueError, match="unknown method"):
        TrainConfig(method="magic")
    with pytest.raises(ValueError, match="unknown TrainConfig"):
        TrainConfig.from_dict({"epochs": 1, "bogus": 2})
    with pytest.raises(ValueError, match="integer jtt_upsample"):
        TrainConfig(method="jtt", jtt_upsample=2.5)
    # numbers as YAML 1.1 gives them ("1e-3" is a string there) are read as floats, not kept as strings
    yaml_cfg = TrainConfig(lr="1e-3", weight_decay="5e-4", milestones=("0.5", 0.75), dfr_cs=("1", 0.1))
    assert (yaml_cfg.lr, yaml_cfg.weight_decay, yaml_cfg.milestones, yaml_cfg.dfr_cs) == (1e-3, 5e-4, (0.5, 0.75), (1.0, 0.1))
    assert type(yaml_cfg.lr) is float
    with pytest.raises(ValueError, match="lr must be a number"):
        TrainConfig(lr="fast")


def test_lr_schedules():
    cfg = TrainConfig(epochs=8, schedule="multistep", milestones=(0.5, 0.75), gamma=0.1)
    assert [lr_factor(cfg, e) for e in range(8)] == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    lin = TrainConfig(epochs=4, schedule="linear")
    assert [lr_factor(lin, e) for e in range(4)] == pytest.approx([1, 0.75, 0.5, 0.25])
    cos = TrainConfig(epochs=2, schedule="cosine")
    assert [lr_factor(cos, e) for e in range(2)] == pytest.approx([1, 0.5])


# ------------------------------------------------------------------ Group DRO
def test_gdro_group_means_and_weight_update_by_hand():
    dro = GroupDRO(np.array([100, 25, 4]), eta=0.5, adjustment=1.0)
    losses = torch.tensor([1.0, 3.0, 2.0, 0.5])
    groups = torch.tensor([0, 0, 1, 1])
    means = dro.group_means(losses, groups)
    assert means.tolist() == pytest.approx([2.0, 1.25, 0.0])
    loss = dro.loss(losses, groups)
    # s_g = 0 + eta * (l_g + C / sqrt(n_g)); q = softmax(s)
    s = 0.5 * (np.array([2.0, 1.25, 0.0]) + 1.0 / np.sqrt([100, 25, 4]))
    q = np.exp(s) / np.exp(s).sum()
    assert dro.q.numpy() == pytest.approx(q, rel=1e-5)
    assert float(loss) == pytest.approx(float(q @ np.array([2.0, 1.25, 0.0])), rel=1e-5)


def test_gdro_beats_erm_on_synthetic_fig2():
    """GEORGE Fig. 2: the ERM boundary misclassifies the rare subclasses; Group DRO with true
    subclasses finds the robust boundary."""
    ds = load("synthetic-gmm", seed=0)
    wga = {}
    for method in ("erm", "gdro"):
        cfg = TrainConfig(method=method, model="linear", epochs=30, lr=0.05, weight_decay=1e-3, gdro_eta=0.1,
                          select="val_wga", seed=0)
        wga[method] = run(ds, cfg).reports["test"].worst_group_accuracy
    assert wga["erm"] < 0.6
    assert wga["gdro"] > 0.75
    assert wga["gdro"] - wga["erm"] > 0.25


def test_gdro_accepts_any_group_assignment(digits):
    clusters = (digits.train.g % 3).astype(np.int64)  # an arbitrary integer assignment
    cfg = TrainConfig(method="gdro", epochs=1, batch_size=64)
    res = fit(build_model("mlp", (1, 8, 8), 2), digits.train, cfg, train_groups=clusters)
    assert len(res.history[0]["gdro_q"]) == 3
    assert res.labels_used["train_groups"] == "given group assignment"


# ------------------------------------------------------------------ sampling
def test_subsetting_takes_first_m_of_each_class_in_seeded_order():
    y = np.array([0] * 10 + [1] * 3 + [2] * 5)
    sub = first_per_label(y, 3, np.random.default_rng(0))
    assert np.bincount(y[sub]).tolist() == [3, 3, 3]
    perm = np.random.default_rng(0).permutation(y.size)
    expected = np.sort(np.concatenate([perm[y[perm] == c][:3] for c in range(3)]))
    np.testing.assert_array_equal(sub, expected)
    plan = make_plan("subsetting", y, None, np.random.default_rng(0))
    np.testing.assert_array_equal(plan.subset, expected)


def test_upsampling_and_rwg_balance_in_expectation():
    y = np.array([0] * 900 + [1] * 100)
    plan = make_plan("upsampling", y, None, np.random.default_rng(0))
    draws = np.concatenate([plan.epoch(np.random.default_rng(s)) for s in range(20)])
    assert plan.epoch_size == 1000
    assert (y[draws] == 1).mean() == pytest.approx(0.5, abs=0.02)
    g = np.array([0] * 700 + [1] * 200 + [2] * 100)
    rwg = make_plan("rwg", y, g, np.random.default_rng(0))
    d = np.concatenate([rwg.epoch(np.random.default_rng(s)) for s in range(20)])
    assert np.bincount(g[d]) / d.size == pytest.approx([1 / 3] * 3, abs=0.02)
    subg = make_plan("subg", y, g, np.random.default_rng(0))
    assert np.bincount(g[subg.subset]).tolist() == [100, 100, 100]


def test_mixture_caps_classes_then_upsamples():
    y = np.array([0] * 1000 + [1] * 100)
    plan = make_plan("mixture", y, None, np.random.default_rng(0), mixture_ratio=3.0)
    assert np.bincount(y[plan.subset]).tolist() == [300, 100]
    assert plan.epoch_size == 400
    d = np.concatenate([plan.epoch(np.random.default_rng(s)) for s in range(20)])
    assert set(np.unique(d)) <= set(plan.subset)
    assert (y[d] == 1).mean() == pytest.approx(0.5, abs=0.03)
    # r = 1 is subsetting's subset (same seeded order)
    sub1 = make_plan("mixture", y, None, np.random.default_rng(0), mixture_ratio=1.0).subset
    np.testing.assert_array_equal(sub1, make_plan("subsetting", y, None, np.random.default_rng(0)).subset)


def test_upweighting_weights_and_jtt_repeats():
    w = class_weights(np.array([0, 0, 0, 1]), 2)
    assert w.tolist() == pytest.approx([4 / 6, 2.0])
    with pytest.raises(ValueError, match="class 2 has no training example"):
        class_weights(np.array([0, 1]), 3)
    r = jtt_repeats(np.array([True, False, True]), 5)
    assert r.tolist() == [5, 1, 5]
    plan = make_plan("jtt", np.zeros(3, int), None, np.random.default_rng(0), repeats=r)
    ep = plan.epoch(np.random.default_rng(0))
    assert np.bincount(ep).tolist() == [5, 1, 5]


@pytest.mark.parametrize("method", ["subsetting", "upsampling", "upweighting", "subg", "rwg"])
def test_every_balancing_method_trains(digits, method):
    cfg = TrainConfig(method=method, epochs=2, batch_size=64, select="val_wca")
    res = run(digits, cfg)
    assert res.reports["test"].average_accuracy > 0.6
    json.dumps(res.to_dict())


def test_jtt_end_to_end_records_error_set(digits):
    cfg = TrainConfig(method="jtt", epochs=2, jtt_epochs=1, jtt_upsample=4, batch_size=64, select="val_wga")
    res = run(digits, cfg)
    assert res.extra["jtt"]["n_errors"] > 0
    assert "lambda_up" in res.extra["jtt"]["error_weight"]


# ------------------------------------------------------------------ DFR
def test_dfr_removes_a_spurious_feature():
    """Features: a weak core feature and a strong spurious one that agrees with y in 95% of the
    held-out data. Reweighting on group-balanced data must put the weight on the core feature."""
    rng = np.random.default_rng(0)
    n = 4000
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < 0.95, y, 1 - y)
    x = np.stack([(2 * y - 1) * 1.0 + rng.standard_normal(n), (2 * a - 1) * 3.0 + 0.3 * rng.standard_normal(n)], 1)
    g = 2 * y + a
    head = fit_dfr(x, y, g, n_retrains=5, random_state=0)
    assert set(head.tuning) == {1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01}
    yt = rng.integers(0, 2, 2000)
    at = rng.integers(0, 2, 2000)
    xt = np.stack([(2 * yt - 1) + rng.standard_normal(2000), (2 * at - 1) * 3.0 + 0.3 * rng.standard_normal(2000)], 1)
    from stratalab.metrics import group_report

    wga = group_report(yt, head.predict(xt), 2 * yt + at).worst_group_accuracy
    assert wga > 0.7
    again = fit_dfr(x, y, g, n_retrains=5, random_state=0)
    np.testing.assert_array_equal(head.coef, again.coef)


def test_dfr_end_to_end_and_refusals(digits):
    res = run(digits, TrainConfig(method="dfr", epochs=2, batch_size=64, dfr_retrains=3, select="val_wga"))
    assert res.extra["dfr"]["C"] in TrainConfig().dfr_cs
    assert res.reports["test"].average_accuracy > 0.7
    no_groups = load("u-digits")
    no_groups.splits["val"] = Split(x=no_groups.val.x, y=no_groups.val.y, loader=no_groups.val.loader)
    with pytest.raises(ValueError, match="DFR needs a held-out split with group labels"):
        run(no_groups, TrainConfig(method="dfr", epochs=1))
    no_groups.splits["train"] = Split(x=no_groups.train.x, y=no_groups.train.y, loader=no_groups.train.loader)
    with pytest.raises(ValueError, match="needs train group labels"):
        run(no_groups, TrainConfig(method="gdro", epochs=1))
    with pytest.raises(ValueError, match="val_wga needs val group labels"):
        run(no_groups, TrainConfig(method="erm", epochs=1, select="val_wga"))


def test_embed_matches_model_outputs(digits):
    model = build_model("mlp", (1, 8, 8), 2, seed=0)
    e = embed(model, digits.test)
    assert e.features.shape == (len(digits.test), 64)
    np.testing.assert_allclose(e.proba, predict(model, digits.test), atol=1e-6)
    ce = torch.nn.functional.cross_entropy(model(torch.as_tensor(digits.test.load_x())), torch.as_tensor(digits.test.y),
                                           reduction="none").detach().numpy()
    np.testing.assert_allclose(e.loss, ce, rtol=1e-4, atol=1e-5)


def test_augmentation_hook_sees_training_batches_only(digits):
    calls = []

    def flip(x, gen):
        calls.append(x.shape[0])
        return torch.flip(x, dims=[-1])

    cfg = TrainConfig(epochs=1, batch_size=100, seed=0)
    fit(build_model("mlp", (1, 8, 8), 2), digits.train, cfg, val=digits.val, test=digits.test, augment=flip)
    assert sum(calls) == len(digits.train)


def test_val_worst_estimated_criterion(digits):
    est = digits.val.g % 2
    cfg = TrainConfig(epochs=2, batch_size=64, select="val_worst_estimated")
    res = fit(build_model("mlp", (1, 8, 8), 2), digits.train, cfg, val=digits.val, val_estimated_groups=est)
    assert all("val_worst_estimated" in h["selection"] for h in res.history)
    assert res.labels_used["val_groups"] == "no"


def test_resume_refuses_a_checkpoint_from_other_data(digits, tmp_path):
    _fit_digits(digits, 0, epochs=1, ckpt=tmp_path)
    other = load("u-digits", seed=1)
    model = build_model("mlp", (1, 8, 8), 2, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=64, seed=0, select="val_wga")
    with pytest.raises(ValueError, match="other data"):
        fit(model, other.train, cfg, val=other.val, test=other.test, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="eval_every"):
        TrainConfig(eval_every=0)


def test_dfr_handles_three_classes():
    rng = np.random.default_rng(0)
    n = 900
    y = np.repeat([0, 1, 2], n // 3)
    a = rng.integers(0, 2, n)
    x = np.stack([y + 0.3 * rng.standard_normal(n), a + 0.3 * rng.standard_normal(n), rng.standard_normal(n)], 1)
    head = fit_dfr(x, y, 2 * y + a, n_retrains=2, random_state=0)
    assert head.coef.shape == (3, 3)
    assert (head.predict(x) == y).mean() > 0.9


def test_subsetting_ignores_absent_class_ids():
    y = np.array([0, 0, 0, 2, 2])
    plan = make_plan("subsetting", y, None, np.random.default_rng(0))
    assert np.bincount(y[plan.subset]).tolist() == [2, 0, 2]


def test_eval_train_records_the_train_split_and_changes_nothing_else(digits):
    """``eval_train`` (issue 21: where train accuracy saturates) adds the train split's report at
    every evaluation, computed on the epoch's weights, and leaves the run itself untouched."""
    from stratalab.metrics import group_report

    cfg = TrainConfig(model="mlp", epochs=3, batch_size=64, seed=0, select="val_wga")
    plain = fit(build_model("mlp", (1, 8, 8), 2, seed=0), digits.train, cfg, val=digits.val, test=digits.test)
    model = build_model("mlp", (1, 8, 8), 2, seed=0)
    res = fit(model, digits.train, TrainConfig.from_dict({**cfg.to_dict(), "eval_train": True}), val=digits.val,
              test=digits.test)
    assert all("train" in h for h in res.history) and not any("train" in h for h in plain.history)
    assert [{k: v for k, v in h.items() if k != "train"} for h in res.history] == plain.history
    model.load_state_dict(res.last_state)  # the last epoch's weights, against its history row
    pred = predict(model, digits.train).argmax(1)
    want = group_report(digits.train.y, pred, digits.train.g)
    assert res.history[-1]["train"]["average_accuracy"] == pytest.approx(float(np.mean(pred == digits.train.y)))
    assert res.history[-1]["train"]["worst_group_accuracy"] == pytest.approx(want.worst_group_accuracy)
    # on the groups the run was given: with one group for every example, the cells are the classes
    m1 = build_model("mlp", (1, 8, 8), 2, seed=0)
    one = fit(m1, digits.train, TrainConfig.from_dict({**cfg.to_dict(), "eval_train": True}),
              train_groups=np.zeros(len(digits.train), dtype=np.int64), val=digits.val)
    m1.load_state_dict(one.last_state)
    p1 = predict(m1, digits.train).argmax(1)
    worst_class = min(float(np.mean(p1[digits.train.y == c] == c)) for c in (0, 1))
    assert one.history[-1]["train"]["worst_group_accuracy"] == pytest.approx(worst_class)
    assert res.history[-1]["train"]["worst_group_accuracy"] < worst_class  # the digit cells: a rarer, harder one
    with pytest.raises(ValueError, match="eval_train must be true or false"):
        TrainConfig(eval_train="yes")
