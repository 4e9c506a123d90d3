"""Tests that pin the training methods to their definitions, each written so that a named, plausible
wrong implementation fails it (the mutation a test kills is named in its docstring).

The sampling tests use a model whose forward records which training examples it sees: the first
input column of every example is its own index, and with ``batch_size`` larger than an epoch each
training-mode forward is exactly one epoch.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from stratalab.data import Dataset, Split
from stratalab.models import MLP
from stratalab.train import GroupDRO, TrainConfig, class_weights, fit, jtt_repeats, run

BIG_BATCH = 100_000  # larger than any epoch here: one forward = one epoch


# ---------------------------------------------------------------------------------------------- helpers
class IndexRecorder(nn.Module):
    """A linear classifier that records the example indices (input column 0) of every training batch."""

    def __init__(self, d: int, n_classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(d, n_classes)
        self.seen: list[np.ndarray] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append(x[:, 0].detach().round().long().numpy().copy())
        return self.head(x)


def _indexed_split(y: np.ndarray, g: np.ndarray | None = None, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    n = y.shape[0]
    x = np.column_stack([np.arange(n), rng.standard_normal(n)]).astype(np.float32)
    return Split(x=x, y=y, g=g)


def _imbalanced():
    """40 examples, classes 30 / 10 (interleaved); groups 24 / 6 inside class 0 and 5 / 5 inside class 1."""
    y = np.zeros(40, dtype=np.int64)
    y[::4] = 1  # 10 of class 1
    g = np.empty(40, dtype=np.int64)
    c0, c1 = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    g[c0[:24]], g[c0[24:]] = 0, 1
    g[c1[:5]], g[c1[5:]] = 2, 3
    return y, g


def _epochs_seen(method: str, epochs: int, **cfg_kw) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    y, g = _imbalanced()
    model = IndexRecorder(2, 2)
    cfg = TrainConfig(method=method, epochs=epochs, batch_size=BIG_BATCH, lr=1e-6, seed=0, **cfg_kw)
    fit(model, _indexed_split(y, g), cfg)
    assert len(model.seen) == epochs  # one training forward per epoch
    return model.seen, y, g


# ---------------------------------------------------------------------------------------------- 1. Group DRO
def test_group_dro_weights_remember_past_batches():
    """Kills: GroupDRO.loss computing q from the current batch alone (log q reset each batch,
    objectives.py ``self.log_q = log_softmax(self.eta * (means + adjust))``).

    Closed form (C = 0): after batches b = 1..t, log q = eta * sum_b l_g(b) + const, where a group
    absent from a batch contributes l_g = 0. Group 1 has a high loss in batch 1 and is absent from
    batch 2, so after batch 2 it must still carry its batch-1 weight."""
    eta = 0.5
    dro = GroupDRO(np.array([10, 10, 10]), eta=eta)
    np.testing.assert_allclose(dro.q.numpy(), [1 / 3] * 3, atol=1e-7)

    # batch 1: group 0 losses 1, 3 (mean 2); group 1 losses 4, 6 (mean 5); group 2 loss 1
    l1 = torch.tensor([1.0, 3.0, 4.0, 6.0, 1.0])
    g1 = torch.tensor([0, 0, 1, 1, 2])
    out1 = dro.loss(l1, g1)
    s1 = eta * np.array([2.0, 5.0, 1.0])
    q1 = np.exp(s1) / np.exp(s1).sum()
    np.testing.assert_allclose(dro.q.numpy(), q1, rtol=1e-6)
    assert float(out1) == pytest.approx(float(q1 @ [2.0, 5.0, 1.0]), rel=1e-6)

    # batch 2: group 1 absent; group 0 mean 1, group 2 mean 3
    l2 = torch.tensor([1.0, 2.0, 4.0])
    g2 = torch.tensor([0, 2, 2])
    out2 = dro.loss(l2, g2)
    s2 = eta * (np.array([2.0, 5.0, 1.0]) + np.array([1.0, 0.0, 3.0]))  # = eta * [3, 5, 4]
    q2 = np.exp(s2) / np.exp(s2).sum()
    np.testing.assert_allclose(dro.q.numpy(), q2, rtol=1e-6,
                               err_msg="q after batch 2 must still reflect group 1's batch-1 loss")
    assert int(dro.q.argmax()) == 1  # group 1 (absent now) keeps the largest weight
    assert float(out2) == pytest.approx(float(q2 @ [1.0, 0.0, 3.0]), rel=1e-6)


class FixedLogits(nn.Module):
    """Logits read from a fixed table by example index (input column 0); the head's contribution is
    multiplied by 0, so per-example losses never change while training."""

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("table", torch.as_tensor(table, dtype=torch.float32))
        self.head = nn.Linear(2, table.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0].round().long()] + 0.0 * self.head(x)


def test_fit_gdro_accumulates_group_weights_over_epochs():
    """Kills: the same reset mutation as above (q from the current batch only), seen through ``fit``:
    with constant per-example losses and one batch per epoch, q after epoch e is
    softmax(eta * e * mean loss per group); with the reset it would be the same every epoch."""
    y = np.array([0, 0, 0, 1, 1, 1], dtype=np.int64)
    g = np.array([0, 0, 1, 2, 2, 3], dtype=np.int64)
    table = np.array([[2.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 3.0], [0.0, 0.5], [0.0, 0.0]])
    ce = -np.log(np.exp(table[np.arange(6), y]) / np.exp(table).sum(1))
    means = np.array([ce[g == k].mean() for k in range(4)])
    eta = 0.3
    cfg = TrainConfig(method="gdro", epochs=4, batch_size=BIG_BATCH, lr=1e-3, gdro_eta=eta, seed=0)
    res = fit(FixedLogits(table), _indexed_split(y, g), cfg)
    for e, row in enumerate(res.history, start=1):
        s = eta * e * means
        expected = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        np.testing.assert_allclose(row["gdro_q"], expected, atol=2e-6, err_msg=f"epoch {e}")


# ---------------------------------------------------------------------------------------------- 2. sampling plans
def test_subsetting_trains_on_the_same_class_balanced_subset_every_epoch():
    """Kills: make_plan ignoring the method (every method a plain shuffle of all examples,
    sampling.py ``make_plan`` returning ``SamplingPlan(everything)``). Each epoch must hold exactly
    m = 10 examples of each class (m = smallest class), no repeats, the same subset every epoch."""
    seen, y, _ = _epochs_seen("subsetting", 5)
    first = np.sort(seen[0])
    for ep in seen:
        assert ep.size == 20, f"subsetting epoch has {ep.size} examples, expected 2 * 10"
        assert np.unique(ep).size == ep.size
        np.testing.assert_array_equal(np.bincount(y[ep], minlength=2), [10, 10])
        np.testing.assert_array_equal(np.sort(ep), first)


def test_upsampling_draws_classes_equally_with_replacement():
    """Kills: make_plan ignoring the method (plain shuffle). Upsampling draws N = 40 examples per
    epoch with probability proportional to 1 / n_y, so each class is half of the draws in
    expectation (plain shuffling gives exactly 30 / 10 every epoch)."""
    seen, y, _ = _epochs_seen("upsampling", 300)
    assert all(ep.size == 40 for ep in seen), "an upsampling epoch must have N = 40 draws"
    assert any(np.unique(ep).size < ep.size for ep in seen), "upsampling must draw with replacement"
    frac1 = np.concatenate([y[ep] for ep in seen]).mean()
    assert frac1 == pytest.approx(0.5, abs=0.03), f"class-1 share of upsampled draws is {frac1:.3f}, expected 0.5"


def test_mixture_caps_each_class_then_upsamples_inside_the_subset():
    """Kills: make_plan ignoring the method (plain shuffle). Mixture with r = 2: class 0 is capped
    at floor(2 * 10) = 20 examples (class 1 keeps its 10), 30 draws per epoch with probability
    1 / n'_y, so both classes get half of the draws and only 20 distinct class-0 examples appear."""
    seen, y, _ = _epochs_seen("mixture", 300, mixture_ratio=2.0)
    assert all(ep.size == 30 for ep in seen), "mixture epoch size must be the subset size 20 + 10"
    allseen = np.concatenate(seen)
    assert np.unique(allseen[y[allseen] == 0]).size == 20
    assert np.unique(allseen[y[allseen] == 1]).size == 10
    assert y[allseen].mean() == pytest.approx(0.5, abs=0.03)


def test_subg_subsamples_every_group_to_the_smallest():
    """Kills: make_plan ignoring the method (plain shuffle). SUBG: every group subsampled to the
    smallest group (5), so each epoch is 5 + 5 + 5 + 5 distinct examples, the same every epoch."""
    seen, _, g = _epochs_seen("subg", 5)
    for ep in seen:
        assert ep.size == 20 and np.unique(ep).size == 20
        np.testing.assert_array_equal(np.bincount(g[ep], minlength=4), [5, 5, 5, 5])
        np.testing.assert_array_equal(np.sort(ep), np.sort(seen[0]))


def test_rwg_draws_groups_equally():
    """Kills: make_plan ignoring the method (plain shuffle). RWG: N = 40 draws per epoch with
    probability 1 / n_g, so each of the 4 groups (sizes 24, 6, 5, 5) is a quarter of the draws."""
    seen, _, g = _epochs_seen("rwg", 300)
    assert all(ep.size == 40 for ep in seen), "an RWG epoch must have N = 40 draws"
    share = np.bincount(np.concatenate([g[ep] for ep in seen]), minlength=4) / (300 * 40)
    np.testing.assert_allclose(share, [0.25] * 4, atol=0.03, err_msg="RWG group shares")


# ---------------------------------------------------------------------------------------------- 2. upweighting
class Linear(nn.Module):
    def __init__(self, d: int, c: int) -> None:
        super().__init__()
        self.head = nn.Linear(d, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def test_upweighting_takes_the_class_weighted_gradient_step():
    """Kills: the loop dropping the class weight from the loss (loop.py upweighting branch,
    ``w = weight[yb]`` -> ``w = torch.ones_like(losses)``, i.e. a plain mean).

    Classes 6 / 3 / 1 (N = 10, C = 3): weights w_c = N / (C n_c) = 10/18, 10/9, 10/3. One full-batch
    SGD step (lr 0.5, no momentum) must move W by -lr * sum_i w_{y_i} (p_i - e_{y_i}) x_i^T / sum_i w_{y_i}."""
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2], dtype=np.int64)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((10, 2)).astype(np.float32)
    w = np.array([10 / 18, 10 / 9, 10 / 3])
    np.testing.assert_allclose(class_weights(y, 3).numpy(), w, rtol=1e-6)

    torch.manual_seed(0)
    model = Linear(2, 3)
    W0 = model.head.weight.detach().double().numpy().copy()
    b0 = model.head.bias.detach().double().numpy().copy()
    lr = 0.5
    cfg = TrainConfig(method="upweighting", epochs=1, batch_size=BIG_BATCH, optimizer="sgd", momentum=0.0, lr=lr, seed=0)
    fit(model, Split(x=x, y=y), cfg)

    xd = x.astype(np.float64)
    logits = xd @ W0.T + b0
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    resid = p - np.eye(3)[y]  # d CE / d logits
    c = w[y] / w[y].sum()
    gW, gb = (c[:, None] * resid).T @ xd, (c[:, None] * resid).sum(0)
    gW_plain = resid.T @ xd / 10
    assert np.abs(gW - gW_plain).max() > 0.05  # the weighting matters here: the test can fail
    np.testing.assert_allclose(model.head.weight.detach().numpy(), W0 - lr * gW, atol=1e-5,
                               err_msg="weight step is not the class-weighted gradient step")
    np.testing.assert_allclose(model.head.bias.detach().numpy(), b0 - lr * gb, atol=1e-5)


# ---------------------------------------------------------------------------------------------- 3. JTT
def test_jtt_second_stage_repeats_the_error_set():
    """Kills: fit ignoring JTT's repeats (loop.py: ``method = "erm" if cfg.method in ("jtt", "dfr")``
    without ``and repeats is None``, so stage 2 trains on each example once). Each error must
    appear lambda_up = 3 times per epoch, every other example once."""
    y, _ = _imbalanced()
    errors = np.zeros(40, dtype=bool)
    errors[[1, 4, 7, 20, 33]] = True
    reps = jtt_repeats(errors, 3)
    np.testing.assert_array_equal(reps, np.where(errors, 3, 1))
    model = IndexRecorder(2, 2)
    cfg = TrainConfig(method="jtt", epochs=3, batch_size=BIG_BATCH, lr=1e-6, jtt_upsample=3, seed=0)
    fit(model, _indexed_split(y), cfg, repeats=reps)
    assert len(model.seen) == 3
    for ep in model.seen:
        np.testing.assert_array_equal(np.bincount(ep, minlength=40), reps,
                                      err_msg="per-epoch appearances of each example != JTT repeats")


def _jtt_dataset(n: int = 60) -> Dataset:
    rng = np.random.default_rng(1)

    def split(m: int, offset: int) -> Split:
        y = rng.integers(0, 2, m)
        # column 0: the example index (train) or -1 (val/test); then 3 informative but noisy features
        x = np.column_stack([np.arange(m) if offset == 0 else -np.ones(m),
                             (2 * y[:, None] - 1) * 0.5 + rng.standard_normal((m, 3))]).astype(np.float32)
        return Split(x=x, y=y)

    return Dataset("jtt-toy", {"train": split(n, 0), "val": split(20, 1), "test": split(20, 1)}, ["a", "b"])


def test_jtt_run_retrains_from_the_initial_weights_on_the_upsampled_errors():
    """Kills: (a) ``run`` not reloading the initial state before JTT's second stage (methods.py:
    ``model.load_state_dict(init_state)`` removed), and (b) repeats ignored (the loop mutation of
    the test above). A global forward hook records, for the MLP that ``run`` builds, its parameters
    at every forward, its inputs and outputs: the first training forward after stage 1's predict
    on train must see exactly the initial parameters, and every stage-2 epoch must show each error
    of that predict lambda_up = 4 times and the others once."""
    from torch.nn.modules.module import register_module_forward_hook

    ds = _jtt_dataset()
    events = []

    def hook(module, inputs, output):
        if isinstance(module, MLP):
            events.append((module.training, inputs[0][:, 0].detach().round().long().numpy().copy(),
                           output.detach().clone(), copy.deepcopy(module.state_dict())))

    handle = register_module_forward_hook(hook)
    try:
        cfg = TrainConfig(method="jtt", epochs=2, batch_size=BIG_BATCH, lr=0.05, jtt_epochs=3, jtt_upsample=4,
                          select="val_avg", seed=0)
        res = run(ds, cfg)
    finally:
        handle.remove()

    train_flags = [e[0] for e in events]
    first_eval = train_flags.index(False)  # stage 1's predict on the train split
    assert first_eval == 3 and all(train_flags[:3])  # stage 1: jtt_epochs = 3 one-batch epochs
    init = events[0][3]
    after_stage1 = events[first_eval][3]
    assert any(not torch.equal(init[k], after_stage1[k]) for k in init), "stage 1 did not move the weights"
    errors = events[first_eval][2].argmax(1).numpy() != ds.train.y
    assert 0 < errors.sum() < len(errors) and res.extra["jtt"]["n_errors"] == int(errors.sum())

    stage2 = [e for e in events[first_eval + 1:] if e[0]]
    assert len(stage2) == 2  # cfg.epochs one-batch epochs
    for k, v in init.items():
        assert torch.equal(stage2[0][3][k], v), f"stage 2 does not start from the initial {k}"
    expected = np.where(errors, 4, 1)
    for _, idx, _, _ in stage2:
        np.testing.assert_array_equal(np.bincount(idx, minlength=len(errors)), expected,
                                      err_msg="stage-2 epoch does not repeat the error set lambda_up times")
