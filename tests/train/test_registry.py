"""The method registry is the one source of a method's rules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stratalab.experiments.d3m import TABLE_METHODS
from stratalab.train import METHODS, MethodSpec, TrainConfig, examples_left_out, make_plan
from stratalab.train.registry import LOSSES, SAMPLINGS


def test_every_method_has_a_known_sampling_loss_and_stage():
    assert set(METHODS) == {"erm", "gdro", "subsetting", "upsampling", "upweighting", "mixture", "subg", "rwg", "jtt", "dfr"}
    for spec in METHODS.values():
        assert spec.sampling in SAMPLINGS and spec.loss in LOSSES
    with pytest.raises(ValueError, match="unknown sampling"):
        MethodSpec("x", "X", "", "", sampling="bogus")


def test_table1_label_columns_come_from_the_registry():
    for m in ("jtt", "rwg", "subg", "gdro"):
        train = "yes" if METHODS[m].train_groups else "no"
        assert TABLE_METHODS[m][1] == f"{train} / yes"
    assert TABLE_METHODS["dfr"][1].startswith("no / yes (fits the last layer")
    assert TABLE_METHODS["erm"][1] == "no / no"


def test_examples_left_out_by_sampling_rule():
    y = np.array([0] * 6 + [1] * 4)
    g = np.array([0] * 5 + [1] + [2] * 2 + [3] * 2)  # smallest group 1
    assert examples_left_out("subg", y, g) == 10 - 4 * 1
    assert examples_left_out("subsetting", y, g) == 10 - 2 * 4
    assert examples_left_out("mixture", y, g, mixture_ratio=1.25) == 10 - (5 + 4)
    for m in ("erm", "gdro", "rwg", "upsampling", "upweighting", "jtt", "dfr"):
        assert examples_left_out(m, y, g) == 0


def test_gdro_balanced_sampler_draws_group_balanced_epochs():
    y = np.zeros(1000, dtype=np.int64)
    g = np.array([0] * 900 + [1] * 100)
    plan = make_plan("gdro", y, g, np.random.default_rng(0), gdro_balanced_sampler=True)
    share = (g[plan.epoch(np.random.default_rng(1))] == 1).mean()
    assert 0.45 < share < 0.55
    assert make_plan("gdro", y, g, np.random.default_rng(0)).mode == "shuffle"


@pytest.mark.parametrize("field, value, message", [
    ("width", 0.0, "width must be a finite number > 0"), ("width", float("nan"), "width"),
    ("lr", float("inf"), "lr must be a finite number"), ("weight_decay", -1.0, "weight_decay"),
    ("momentum", 1.5, "momentum"), ("gdro_eta", 0.0, "gdro_eta"), ("milestones", (0.5, 2.0), "milestone"),
    ("epochs", 2.5, "epochs must be an integer"), ("seed", -1, "seed must be"), ("mixture_ratio", 0.5, "mixture_ratio"),
    ("jtt_upsample", 2.5, "jtt_upsample"), ("dfr_cs", (1.0, -0.1), "DFR C"), ("model", "vgg", "unknown model"),
])
def test_train_config_refuses_values_that_would_train_silently_wrong(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TrainConfig(), **{field: value})


def test_replace_keeps_and_validates():
    cfg = TrainConfig(method="jtt", jtt_upsample=5)
    new = dataclasses.replace(cfg, seed=7)
    assert new.seed == 7 and new.jtt_upsample == 5 and cfg.seed == 0
    assert TrainConfig.from_yaml(new.to_yaml()) == new
