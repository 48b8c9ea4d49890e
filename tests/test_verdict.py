"""One verdict per image: Table 1's worst case counts the sensitivity search's confirmed flips,
the health check worst_vs_bracket says when the worst case missed them, and every aggregate
refuses a per-image CSV that does not hold one row per test image."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from oncorobust.errors import DataError
from oncorobust.evaluation.health import worst_vs_bracket
from conftest import write_result
from oncorobust.evaluation.results import merge_bracket, read_per_image, summarize

IDS = [f"s{i}" for i in range(10)]


def _worst(adv_flipped: list[int]) -> pd.DataFrame:
    label = np.array([0, 1] * 5)
    clean = label.copy()
    clean[0] = 1  # image s0 misclassified
    adv = clean.copy()
    adv[adv_flipped] = 1 - clean[adv_flipped]
    return pd.DataFrame({"sample_id": IDS, "label": label, "clean_pred": clean, "adv_pred": adv,
                         "clean_prob": 0.9, "adv_prob": 0.6, "linf": 0.01})


def _sens(upper: dict[str, float]) -> pd.DataFrame:
    rows = [{"sample_id": i, "split": "test", "eps_upper": upper.get(i, np.inf), "eps_lower": 0.0} for i in IDS]
    rows.append({"sample_id": "v0", "split": "val", "eps_upper": 0.001, "eps_lower": 0.0})
    return pd.DataFrame(rows)


def test_worst_counts_confirmed_bracket_flips_at_or_below_eps():
    worst = _worst([1, 2])  # the attack flipped s1, s2
    sens = _sens({"s1": 0.005, "s3": 0.008, "s4": 0.0100, "s5": 0.02, "s0": 0.001})
    merged = merge_bracket(worst, sens, 0.01, "predicted", 2)
    # s3 and s4 (ε_upper ≤ 0.01) are added; s5 (0.02) is not; s0 (misclassified) flips to correct
    assert sorted(merged.sample_id[merged.from_bracket]) == ["s0", "s3", "s4"]
    before, after = summarize(worst, "d", "clean", "worst", 0.01), summarize(merged, "d", "clean", "worst", 0.01)
    assert after["flip_rate"] == 50.0 and before["flip_rate"] == 20.0
    assert after["accuracy"] == 100 * (10 - 1 - 2 - 2 + 1) / 10  # s0 becomes right, s3/s4 wrong
    assert after["accuracy"] <= before["accuracy"] + 10  # only s0 can gain


def test_worst_with_true_labels_and_many_classes():
    worst = _worst([])
    sens = _sens({"s0": 0.001, "s3": 0.001})
    merged = merge_bracket(worst, sens, 0.01, "true", 10)
    # true labels: a misclassified image is already wrong and stays as it is; s3's new class unknown (−1)
    assert list(merged.sample_id[merged.from_bracket]) == ["s3"]
    assert int(merged.set_index("sample_id").adv_pred["s3"]) == -1


def test_health_worst_vs_bracket():
    per_image = {("worst", 0.01): _worst([1]), ("worst", 0.02): _worst([1, 3]), ("pgd", 0.01): _worst([])}
    row = worst_vs_bracket(per_image, _sens({"s3": 0.009}), "predicted")
    assert row["check"] == "worst_vs_bracket" and row["passed"] is False
    assert row["value"] == 10.0 and "1/10 images (10.00%) at ε = 0.01" in row["detail"]
    assert row["threshold"] == "≤ 1% of images (0 of 10)"
    ok = worst_vs_bracket(per_image, _sens({"s3": 0.015}), "predicted")
    assert ok["passed"] is True and ok["value"] == 0
    assert worst_vs_bracket({("pgd", 0.01): _worst([])}, _sens({}), "predicted") is None


def test_truncated_per_image_csv_is_refused_by_name(tmp_path):
    path = tmp_path / "eps=0.01.csv"
    write_result(_worst([1]).iloc[:6], path)
    with pytest.raises(DataError, match=r"eps=0.01.csv: 6 test rows for 10 test images \(4 test images missing"):
        read_per_image(path, IDS)
    write_result(_worst([1]), path)
    assert len(read_per_image(path, IDS)) == 10
    sens = tmp_path / "sens.csv"
    write_result(_sens({}), sens)
    assert len(read_per_image(sens, IDS)) == 11  # the val row is kept, the test rows checked
    path.write_text("sample_id,label\n\x00\x01garbage")
    with pytest.raises(DataError, match="eps=0.01.csv"):
        read_per_image(path, IDS)


def test_worst_convergence_doubles_every_budget_and_counts_new_flips():
    """The worst case's convergence check: doubled budgets of the full parameters; passes when the
    configured run's flips are the doubled run's, fails naming the images only the doubled run flips."""
    import torch

    from oncorobust.attacks.methods import method_params
    from oncorobust.evaluation.evaluate import evaluate_attack
    from oncorobust.evaluation.health import doubled_budgets, worst_convergence

    members = ["apgd_ce", "apgd_margin", "fab"]
    d = doubled_budgets(members, {"apgd_ce": {"steps": 25}})
    assert d["apgd_ce"]["steps"] == 50 and d["apgd_margin"]["steps"] == 2 * method_params("apgd_margin")["steps"]
    assert d["fab"]["steps"] == 2 * method_params("fab")["steps"]
    full = method_params("apgd_ce", {"steps": 25})
    assert {k: v for k, v in d["apgd_ce"].items() if k != "steps"} == {k: v for k, v in full.items() if k != "steps"}
    assert doubled_budgets(["square"], None)["square"]["queries"] == 2 * method_params("square")["queries"]

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # the layer's initial weights
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)).eval()
    x = torch.rand(30, 1, 4, 4, generator=g)
    ids = [f"w{i}" for i in range(30)]
    with torch.no_grad():
        target = model(x).argmax(1)
    params = {"apgd_ce": {"steps": 5}, "apgd_margin": {"steps": 5}, "fab": {"steps": 5}}
    csv = evaluate_attack(model, x, target, ids, "worst", 0.3, params={"members": members}, member_params=params)
    flipped = (csv.adv_pred != csv.clean_pred).to_numpy()
    assert 0 < flipped.sum() < 30
    ok = worst_convergence(model, x, target, ids, flipped, eps=0.3, members=members, member_params=params)
    assert ok["check"] == "worst_convergence" and ok["passed"] and "doubled budgets (apgd_ce steps 10, apgd_margin" in ok["detail"]
    # a configured run that (we pretend) flipped nothing: every flip of the doubled run is new
    bad = worst_convergence(model, x, target, ids, np.zeros(30, bool), eps=0.3, members=members, member_params=params)
    assert not bad["passed"] and bad["value"] == pytest.approx(100 * flipped.sum() / 30, abs=100 * 2 / 30)
