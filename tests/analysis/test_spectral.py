import numpy as np
import pytest

from stratalab.analysis import group_spectra, plot_group_spectra, spectral_imbalance


def _gaussians(rng, spec):
    """spec: list of (class, group, n, diagonal variances)."""
    zs, ys, gs = [], [], []
    for c, g, n, var in spec:
        zs.append(rng.standard_normal((n, len(var))) * np.sqrt(var))
        ys += [c] * n
        gs += [g] * n
    return np.concatenate(zs), np.array(ys), np.array(gs)


def test_known_covariances_give_their_eigenvalues_and_rho():
    """Gaussians with chosen diagonal covariances: the estimated top eigenvalues match the chosen
    variances (within sampling error at n = 20,000) and rho = 9 / 2 and 1 / 4 by construction."""
    rng = np.random.default_rng(0)
    z, y, g = _gaussians(rng, [(0, 0, 20000, [2.0, 1.0, 0.5]), (0, 1, 2000, [9.0, 1.0, 0.1]),
                               (1, 2, 20000, [4.0, 3.0, 1.0]), (1, 3, 3000, [1.0, 0.5, 0.2])])
    spectra = group_spectra(z, y, g, top_k=3)
    for (c, grp), want in {(0, 0): [2.0, 1.0, 0.5], (0, 1): [9.0, 1.0, 0.1], (1, 2): [4.0, 3.0, 1.0],
                           (1, 3): [1.0, 0.5, 0.2]}.items():
        assert np.allclose(spectra[(c, grp)], want, rtol=0.08), (c, grp, spectra[(c, grp)])
    rep = spectral_imbalance(z, y, g, top_k=3)
    r = rep.ratios.set_index("class")
    assert (r.loc[0, "minority_group"], r.loc[0, "majority_group"]) == (1, 0)
    assert r.loc[0, "rho"] == pytest.approx(9.0 / 2.0, rel=0.1)
    assert r.loc[1, "rho"] == pytest.approx(1.0 / 4.0, rel=0.1)


def test_exact_small_case_divides_by_n_and_uses_the_gram_trick():
    """Two points per group in 5 dimensions (n < d): covariance (1/n) sum (z - mu)(z - mu)^T has one
    non-zero eigenvalue ||z1 - z2||^2 / 4."""
    z = np.array([[1.0, 0, 0, 0, 0], [-1.0, 0, 0, 0, 0], [0, 3.0, 0, 0, 4.0], [0, -3.0, 0, 0, -4.0]])
    spectra = group_spectra(z, [0, 0, 0, 0], [0, 0, 1, 1], top_k=2)
    assert np.allclose(spectra[(0, 0)], [1.0, 0.0]) and np.allclose(spectra[(0, 1)], [25.0, 0.0])


def test_accuracy_gap_counts_and_bad_input(tmp_path):
    rng = np.random.default_rng(1)
    z, y, g = _gaussians(rng, [(0, 0, 50, [1, 1]), (0, 1, 10, [4, 4])])
    pred = np.where(g == 1, 1, 0)  # the minority group is all wrong
    rep = spectral_imbalance(z, y, g, pred=pred)
    row = rep.ratios.iloc[0]
    assert row["accuracy_gap"] == 1.0 and row["accuracy_minority"] == 0.0
    # group_counts decide minority and majority (e.g. train counts), not the counts here
    flipped = spectral_imbalance(z, y, g, group_counts={0: 5, 1: 500}).ratios.iloc[0]
    assert (flipped["minority_group"], flipped["majority_group"]) == (0, 1)
    assert plot_group_spectra(rep, tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="NaN"):
        spectral_imbalance(np.full((3, 2), np.nan), [0, 0, 0], [0, 0, 0])
    with pytest.raises(ValueError, match="groups has 2 entries"):
        spectral_imbalance(np.zeros((3, 2)), [0, 0, 0], [0, 0])


def test_spectral_cli_on_features_and_on_a_data_set(tmp_path):
    import json

    from typer.testing import CliRunner

    from stratalab.cli.main import app

    rng = np.random.default_rng(2)
    z, y, g = _gaussians(rng, [(0, 0, 400, [1, 1, 1]), (0, 1, 60, [5, 1, 1]), (1, 2, 400, [2, 1, 1]), (1, 3, 60, [1, 1, 1])])
    np.savez(tmp_path / "f.npz", features=z, y=y, g=g)
    res = CliRunner().invoke(app, ["spectral", "--features", str(tmp_path / "f.npz"), "--json", "--top-k", "3"])
    assert res.exit_code == 0, res.output
    ratios = {r["class"]: r["rho"] for r in json.loads(res.stdout)["ratios"]}
    assert ratios[0] > 3 and ratios[1] < 0.8
    res = CliRunner().invoke(app, ["spectral", "--dataset", "u-digits", "--epochs", "2", "--plot", str(tmp_path / "s.png")])
    assert res.exit_code == 0, res.output
    assert "rho >= 1 in" in res.output and (tmp_path / "s.png").exists()
    bad = CliRunner().invoke(app, ["spectral", "--dataset", "u-digits", "--features", str(tmp_path / "f.npz")])
    assert bad.exit_code == 2 and "exactly one" in bad.output


def test_tied_counts_never_pick_one_group_twice_and_json_has_no_nan():
    import json

    rng = np.random.default_rng(3)
    z, y, g = _gaussians(rng, [(0, 0, 50, [9, 1]), (0, 1, 50, [1, 1])])
    rep = spectral_imbalance(z, y, g, top_k=4)  # equal counts; top_k > d leaves NaN eigenvalues
    row = rep.ratios.iloc[0]
    assert row["minority_group"] != row["majority_group"]
    assert (row["minority_group"], row["majority_group"]) == (0, 1)  # a tie: the lower id is the minority
    assert row["rho"] == pytest.approx(9.0, rel=0.35)
    json.dumps(rep.to_dict(), allow_nan=False)


def test_top_k_beyond_the_dimension_is_clipped_and_one_group_says_why(tmp_path):
    """--top-k 1000000000 hung (a column per requested eigenvalue); a file with one group printed an
    empty table and "rho >= 1 in 0 of 0 classes" without a reason (issue 23)."""
    from typer.testing import CliRunner

    from stratalab.cli.main import app

    rng = np.random.default_rng(3)
    z = rng.standard_normal((40, 3))
    y, g = np.repeat([0, 1], 20), np.repeat([0, 1], 20)
    rep = spectral_imbalance(z, y, g, top_k=10**9)
    assert rep.top_k == 3 and [c for c in rep.spectra.columns if c.startswith("eig_")] == ["eig_1", "eig_2", "eig_3"]
    np.savez(tmp_path / "one.npz", features=z, y=y, g=g)  # one group per class: no minority/majority pair
    res = CliRunner().invoke(app, ["spectral", "--features", str(tmp_path / "one.npz"), "--top-k", "1000000000"])
    assert res.exit_code == 0, res.output
    assert "rho(y) is undefined here" in res.output and "groups per class: 0: 1, 1: 1" in res.output


def test_minority_and_majority_are_decided_within_the_class():
    """Groups shared across classes (CIFAR-B's colours): in class 0, group 0 is rare (5 train
    examples against 50), though over both classes it is the common one (505 against 100). The
    reference (tmlabonte/revisiting-finetuning) decides within the class; so does (class, group)
    keying. Keyed by group id alone, the totals pick the wrong minority (issue 21)."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 0, 1, 1], 30)
    g = np.tile(np.repeat([0, 1], 30), 2)
    z = rng.normal(size=(120, 4)) * np.where(g == 0, 2.0, 1.0)[:, None]
    from stratalab.analysis import cell_counts

    train_y = np.repeat([0, 0, 1, 1], [5, 50, 500, 50])
    train_g = np.repeat([0, 1, 0, 1], [5, 50, 500, 50])
    within = cell_counts(train_y, train_g)
    assert within == {(0, 0): 5, (0, 1): 50, (1, 0): 500, (1, 1): 50}
    by_cell = spectral_imbalance(z, y, g, group_counts=within).ratios.set_index("class")
    assert by_cell.loc[0, "minority_group"] == 0 and by_cell.loc[0, "majority_group"] == 1
    assert by_cell.loc[1, "minority_group"] == 1 and by_cell.loc[1, "majority_group"] == 0
    assert by_cell.loc[0, "rho"] == pytest.approx(4.0, rel=0.5) and by_cell.loc[1, "rho"] == pytest.approx(0.25, rel=0.5)
    with pytest.raises(ValueError, match=r"group 0 occurs in several classes.*key them by \(class, group\)"):
        spectral_imbalance(z, y, g, group_counts={0: 505, 1: 100})  # totals over classes would pick group 1 in class 0



def test_spectral_reads_a_split_of_a_stratalab_embed_file_with_train_counts(tmp_path):
    import json

    from typer.testing import CliRunner

    from stratalab.cli.main import app

    r = CliRunner()
    feats = tmp_path / "f.npz"
    assert r.invoke(app, ["embed", "--dataset", "u-digits", "--model", "mlp", "--epochs", "1", "-o", str(feats)]).exit_code == 0
    res = r.invoke(app, ["spectral", "--features", str(feats), "--split", "train", "--top-k", "2", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["source"].endswith("(train)") and d["invocation"]["config"]["split"] == "train"
    n_train = int(np.load(feats)["train"].shape[0])
    assert sum(s["n"] for s in d["spectra"]) == n_train  # every train example in one (class, group) spectrum
    assert all(s["count"] == s["n"] for s in d["spectra"])  # minority/majority by the train counts themselves
    default = r.invoke(app, ["spectral", "--features", str(feats), "--top-k", "2", "--json"])  # train, and recorded as such
    assert default.exit_code == 0 and json.loads(default.output)["invocation"]["config"]["split"] == "train", default.output
    from stratalab.experiments.registry import Invocation, experiment

    before = Invocation("spectral", configs={"config": {"top_k": 2}}, inputs={"features": str(feats)})  # a file from before
    assert experiment("spectral").run(before).payload["source"].endswith("(test)")  # reruns with the test split it read
    old = tmp_path / "old.npz"
    np.savez(old, features=np.random.default_rng(0).random((20, 3)), y=np.arange(20) % 2, g=np.arange(20) % 4)
    res = r.invoke(app, ["spectral", "--features", str(old), "--split", "train"])
    assert res.exit_code == 2 and "files written by `stratalab embed`" in res.output


def test_spectral_on_a_data_set_follows_the_reference_train_split_unpooled_within_class(tmp_path):
    """`stratalab spectral --dataset` by default does what tmlabonte/revisiting-finetuning does: the
    train split without augmentation, the unpooled last hidden state flattened per example (CifarNet:
    128 x 3 x 3), minority and majority by each class's train counts. Checked against the same model
    trained here and its feature map computed by hand."""
    import json

    import torch
    from typer.testing import CliRunner

    from stratalab.analysis import cell_counts
    from stratalab.cli.main import app
    from stratalab.data import load
    from stratalab.train import TrainConfig, run

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 48), ("val", 16), ("test", 16)):
        y = np.arange(n) % 2
        g = np.where(np.arange(n) % 8 < 2, 1 - y, y) if split == "train" else (np.arange(n) // 2) % 2  # colour groups shared by both classes
        arrays.update({f"x_{split}": rng.random((n, 3, 32, 32)).astype(np.float32), f"y_{split}": y, f"g_{split}": g})
    path = tmp_path / "tiny.npz"
    np.savez(path, **arrays)
    res = CliRunner().invoke(app, ["spectral", "--dataset", str(path), "--model", "cifarnet", "--epochs", "1", "--top-k", "3",
                                   "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert " train unpooled features of erm" in d["source"]
    ds = load(str(path), seed=0)
    model = run(ds, TrainConfig(model="cifarnet", epochs=1, seed=0, device="cpu")).model.eval()
    with torch.no_grad():
        fmap = model.feature_map(torch.as_tensor(ds.train.load_x(np.arange(len(ds.train)))))
    assert fmap.shape == (48, 128, 3, 3)
    want = spectral_imbalance(fmap.flatten(1).numpy(), ds.train.y, ds.train.g, top_k=3,
                              group_counts=cell_counts(ds.train.y, ds.train.g)).ratios
    got = {r["class"]: r for r in d["ratios"]}
    for r in want.itertuples(index=False):
        assert got[r[0]]["minority_group"] == r.minority_group and got[r[0]]["rho"] == pytest.approx(r.rho, rel=1e-4)
    assert {(r["class"], r["minority_group"]) for r in d["ratios"]} == {(0, 1), (1, 0)}  # 6 of 24 per class: within-class
    pooled = CliRunner().invoke(app, ["spectral", "--dataset", str(path), "--model", "cifarnet", "--epochs", "1",
                                      "--layer", "pooled", "--json", "--device", "cpu"])
    assert pooled.exit_code == 0 and " train pooled features" in json.loads(pooled.stdout)["source"], pooled.output
    typo = CliRunner().invoke(app, ["spectral", "--dataset", "u-digits", "--layer", "deep"])
    assert typo.exit_code != 0 and "feature layer (--layer" in typo.output and "Epoch" not in typo.output, typo.output
    bad = CliRunner().invoke(app, ["spectral", "--dataset", "u-digits", "--layer", "unpooled"])
    assert bad.exit_code != 0 and "'mlp' has no unpooled last hidden state" in bad.output, bad.output
