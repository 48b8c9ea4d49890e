"""Missed findings vs false alarms (issue 31, item 2): the positive class, per-direction counts
and flipping ε, on constructed frames with known answers and on a real attack of a model that can
only be pushed one way."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from oncorobust.evaluation.clinical import (PositiveClassError, direction_counts, direction_eps,
                                            directions_markdown, positive_class)
from oncorobust.evaluation.robustness import quantile
from oncorobust.evaluation.stats import wilson
from oncorobust.errors import OncorobustError


@pytest.mark.parametrize("classes, configured, expected", [
    (["benign", "malignant"], None, 1),
    (["Malignant", "benign"], None, 0),          # named, whatever its position or case
    (["0", "1"], None, 1),                       # two unnamed classes: label 1
    (["normal", "abnormal", "other"], None, 1),
    (["benign", "malignant"], "BENIGN", 0),      # configured, case-insensitive
    (["a", "b", "c"], "c", 2),
])
def test_positive_class(classes, configured, expected):
    assert positive_class(classes, configured) == expected


@pytest.mark.parametrize("classes, configured, message", [
    (["benign", "malignant"], "cancer", r"datasets\.ct\.positive_class = 'cancer' is not a class of the data"),
    (["a", "b", "c"], None, r"datasets\.ct\.positive_class: none of the 3 classes"),
    (["only"], None, r"at least two"),
])
def test_positive_class_errors_name_the_key(classes, configured, message):
    with pytest.raises(PositiveClassError, match=message) as err:
        positive_class(classes, configured, key="datasets.ct.positive_class")
    assert isinstance(err.value, OncorobustError)


def _frame(rows):
    return pd.DataFrame(rows, columns=["label", "clean_pred", "adv_pred"])


def test_direction_counts_known_answer_and_they_add_up_to_the_flips():
    # positive = 1. detected: rows 0-3 (2 missed); cleared: rows 4-8 (1 false alarm);
    # misclassified rows 9-10 flip too but are neither
    df = _frame([(1, 1, 0), (1, 1, 0), (1, 1, 1), (1, 1, 1),
                 (0, 0, 1), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0),
                 (1, 0, 1), (0, 1, 0)])
    d = direction_counts(df, 1, "malignant")
    assert (d["n_detected"], d["missed"], d["n_cleared"], d["false_alarms"]) == (4, 2, 5, 1)
    assert d["missed_rate"] == 50.0 and d["false_alarm_rate"] == 20.0
    assert (d["missed_ci_low"], d["missed_ci_high"]) == pytest.approx(tuple(100 * v for v in wilson(2, 4)))
    correct = df.label == df.clean_pred
    assert d["missed"] + d["false_alarms"] == int((correct & (df.adv_pred != df.clean_pred)).sum())
    # the other positive class swaps the directions
    e = direction_counts(df, 0, "benign")
    assert (e["n_detected"], e["missed"], e["n_cleared"], e["false_alarms"]) == (5, 1, 4, 2)


def test_direction_counts_on_three_classes_and_empty_groups():
    # positive 2; a cleared image flipped 0 -> 1 is neither a miss nor a false alarm
    df = _frame([(2, 2, 0), (2, 2, -1), (0, 0, 1), (1, 1, 2)])
    d = direction_counts(df, 2)
    assert (d["n_detected"], d["missed"], d["n_cleared"], d["false_alarms"]) == (2, 2, 2, 1)
    none = direction_counts(_frame([(0, 0, 0)]), 1)
    assert none["n_detected"] == 0 and math.isnan(none["missed_rate"]) and math.isnan(none["missed_ci_low"])


def test_direction_eps_are_the_quantiles_of_each_group():
    rng = np.random.default_rng(0)
    n = 200
    label = rng.integers(0, 2, n)
    clean = np.where(rng.random(n) < 0.85, label, 1 - label)
    e = np.where(label == 1, rng.uniform(0.001, 0.01, n), rng.uniform(0.02, 0.05, n))
    e[:7] = np.inf
    sens = pd.DataFrame({"label": label, "clean_pred": clean, "eps_upper": e})
    out = direction_eps(sens, 1, 2, n_boot=300)
    det, clr = (label == 1) & (clean == 1), (label == 0) & (clean == 0)
    assert out["n_detected"] == det.sum() and out["n_cleared"] == clr.sum()
    assert out["eps50_missed"] == quantile(e[det], 0.5) and out["eps10_false_alarm"] == quantile(e[clr], 0.1)
    assert out["eps50_missed_ci_low"] <= out["eps50_missed"] <= out["eps50_missed_ci_high"]
    assert out["eps50_missed"] < out["eps50_false_alarm"]  # this constructed model is easier to miss with
    three = direction_eps(sens.assign(label=np.where(label == 0, 2, label)), 1, 3, n_boot=50)
    assert math.isnan(three["eps50_false_alarm"]) and math.isfinite(three["eps50_missed"])


class _OneWay(nn.Module):
    """Malignant (class 1) iff the image's mean exceeds 0.5. Malignant test images sit just above
    (0.52), benign ones far below (0.1): within ε = 0.05 only malignant → benign is possible."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(m), 40 * (m - 0.5)], dim=1)


def test_a_model_that_can_only_be_pushed_one_way_has_no_false_alarms():
    from oncorobust.evaluation.evaluate import evaluate_attack

    x = torch.cat([torch.full((6, 1, 8, 8), 0.52), torch.full((6, 1, 8, 8), 0.1)])
    y = torch.tensor([1] * 6 + [0] * 6)
    ids = [f"s{i}" for i in range(12)]
    df = evaluate_attack(_OneWay(), x, y, ids, "pgd", 0.05, params={"steps": 10}, labels="true")
    d = direction_counts(df, 1, "malignant")
    assert d["n_detected"] == 6 and d["missed"] == 6
    assert d["n_cleared"] == 6 and d["false_alarms"] == 0


def test_markdown_names_the_positive_class_and_skips_controls():
    summary = pd.DataFrame([{"dataset": "ct", "regime": "clean", "method": "pgd", "eps": 8 / 255,
                             **direction_counts(_frame([(1, 1, 0), (0, 0, 0)]), 1, "malignant")},
                            {"dataset": "digits", "regime": "clean", "method": "pgd", "eps": 0.1,
                             **direction_counts(_frame([(1, 1, 0)]), 1, "")}])
    eps_rows = pd.DataFrame([{"dataset": "ct", "regime": "clean", "positive_class": "malignant",
                              **direction_eps(pd.DataFrame({"label": [1, 0], "clean_pred": [1, 0],
                                                            "eps_upper": [0.01, np.inf]}), 1, 2, n_boot=20)}])
    md = directions_markdown(summary, eps_rows, eps_text=lambda e: "8/255" if abs(e - 8 / 255) < 1e-12 else f"{e:g}")
    assert "## ct (positive class: malignant)" in md and "digits" not in md
    assert "| clean | pgd | 8/255 | 1/1 (100.0%" in md and "> searched range" in md
