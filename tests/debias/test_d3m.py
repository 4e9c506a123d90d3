import numpy as np
import pytest

from stratalab.debias import alignment_by_cell, auto_d3m_groups, d3m_keep, group_alignment


def test_group_alignment_by_hand():
    T = np.array([[1.0, -1.0, 0.0], [3.0, 1.0, 0.0], [0.0, 2.0, -2.0]]).T  # (n_train, n_val)
    g = np.array([0, 0, 1])
    loss = np.array([0.5, 1.5, 3.0])  # group losses: 1.0 and 3.0
    tau = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, -2.0]])
    w = np.exp([1.0, 3.0]) / np.exp([1.0, 3.0]).sum()
    np.testing.assert_allclose(group_alignment(T, g, loss), w @ tau)
    # beta -> 0: the balanced average of the group vectors
    np.testing.assert_allclose(group_alignment(T, g, loss, beta=0.0), tau.mean(0))
    # large beta: the worst group only
    np.testing.assert_allclose(group_alignment(T, g, loss, beta=50.0), tau[1], atol=1e-12)
    # the public code's weighting: mean over groups of loss_G * tau(G)
    np.testing.assert_allclose(group_alignment(T, g, loss, weighting="loss"), (1.0 * tau[0] + 3.0 * tau[1]) / 2)
    with pytest.raises(ValueError, match="weighting"):
        group_alignment(T, g, loss, weighting="max")


def test_d3m_keep_rules():
    a = np.array([0.3, -0.1, 0.0, -2.0, 1.0])
    assert d3m_keep(a).tolist() == [True, False, True, False, True]
    assert d3m_keep(a, n_remove=1).tolist() == [True, True, True, False, True]
    with pytest.raises(ValueError, match="remove every"):
        d3m_keep(np.array([-1.0, -2.0]))
    with pytest.raises(ValueError, match="shape"):
        group_alignment(np.zeros((3, 2)), [0, 1, 1], [1, 1, 1])


def test_auto_d3m_finds_the_data_isolated_lower_performing_side():
    rng = np.random.default_rng(0)
    n_val, n_train = 200, 50
    y = np.repeat([0, 1], 100)
    hidden = (rng.random(n_val) < 0.3).astype(int)  # an unlabelled subgroup relying on other train data
    T = rng.normal(0, 0.1, (n_val, n_train))
    T[hidden == 1, :10] += 2.0
    T = T.T  # (n_train, n_val)
    correct = np.where(hidden == 1, rng.random(n_val) < 0.4, rng.random(n_val) < 0.95)
    g = auto_d3m_groups(T, y, correct, fraction=0.3)
    pseudo = g % 2
    assert np.array_equal(g // 2, y)
    assert ((pseudo == 1) == (hidden == 1)).mean() > 0.9
    assert abs((pseudo[y == 0] == 1).mean() - 0.3) < 0.01
    # normalisation: majority vectors that differ only in scale (over 100x) are one direction; without
    # it, the top component follows the scale and misses the isolated subgroup
    base, other = rng.standard_normal(n_train), rng.standard_normal(n_train)
    scale = np.exp(rng.uniform(-4.5, 4.5, n_val))
    vecs = np.where(hidden[:, None] == 1, other[None, :] + 0.05 * rng.standard_normal((n_val, n_train)),
                    scale[:, None] * base[None, :]).T
    share = {norm: ((auto_d3m_groups(vecs, y, correct, fraction=0.3, normalize=norm) % 2) == hidden).mean()
             for norm in (True, False)}
    assert share[True] > 0.95 and share[False] < 0.8
    # the public code's rule (positive uncentred projection on the top component) finds the same
    # split, up to the arbitrary sign of the component
    z = auto_d3m_groups(vecs, y, correct, threshold="zero") % 2
    for c in (0, 1):
        agree = (z[y == c] == hidden[y == c]).mean()
        assert max(agree, 1 - agree) > 0.95
    with pytest.raises(ValueError, match="threshold"):
        auto_d3m_groups(T, y, correct, threshold="median")


def test_alignment_by_cell_ranks_the_cells_that_hurt():
    a = np.array([-1.0, -3.0, 2.0, 0.5, -0.5, 1.0])
    y = np.array([0, 0, 0, 1, 1, 1])
    attr = np.array([0, 0, 1, 0, 1, 1])
    t = alignment_by_cell(a, y, attr, class_names=["no", "yes"], attribute_names=["land", "water"])
    assert t[["class", "attribute"]].values.tolist()[0] == ["no", "land"]
    assert t["mean_alignment"].tolist() == [-2.0, 0.25, 0.5, 2.0]
    assert t["n"].tolist() == [2, 2, 1, 1] and t["removed"].tolist() == [2, 1, 0, 0]
    assert t["removed_share"].tolist() == [1.0, 0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="one entry per train example"):
        alignment_by_cell(a, y[:3], attr)


def test_d3m_and_auto_d3m_fix_the_fig2_hidden_stratification():
    """End to end on GEORGE's Fig. 2 mixture: ERM -> TRAK -> alignment -> remove -> retrain."""
    from stratalab.attribution import TRAK
    from stratalab.data import load
    from stratalab.metrics import group_report
    from stratalab.models import build_model, embed
    from stratalab.train import TrainConfig, fit, predict, run

    ds = load("synthetic-gmm", seed=0)
    cfg = TrainConfig(model="linear", epochs=30, lr=0.05, weight_decay=1e-3, select="val_avg")
    base = run(ds, cfg)
    erm_wga = base.reports["test"].worst_group_accuracy
    T = TRAK(base.model, proj_dim=6).featurize(ds.train.x, ds.train.y).finalize().score(ds.val.x, ds.val.y)
    ev = embed(base.model, ds.val)
    wga = {}
    for name, groups in (("d3m", ds.val.g), ("auto", auto_d3m_groups(T, ds.val.y, ev.pred == ds.val.y))):
        keep = d3m_keep(group_alignment(T, groups, ev.loss))
        # what is removed comes from the common subclasses (Z=01, Z=10) that tilt the boundary
        removed = np.bincount(ds.train.g[~keep], minlength=4)
        assert removed[1] + removed[2] > 0.9 * removed.sum()
        res = fit(build_model("linear", (2,), 2, seed=0), ds.train.subset(np.flatnonzero(keep)), cfg, val=ds.val)
        wga[name] = group_report(ds.test.y, predict(res.model, ds.test).argmax(1), ds.test.g).worst_group_accuracy
    assert erm_wga < 0.6
    assert wga["d3m"] > erm_wga + 0.25
    assert wga["auto"] > erm_wga + 0.25  # no group label used at all
