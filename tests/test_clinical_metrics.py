"""AUROC, sensitivity and specificity under attack (oncorobust.evaluation.clinical_metrics) and the
scores behind them (oncorobust.evaluation.scores): the logits the attack CSVs record, the true-label
adversary, AUROCs against scikit-learn, the per-image worst over attacks, the operating point,
one-vs-rest on three classes, the card's section and the figure."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import logit, softmax
from sklearn.metrics import roc_auc_score

from oncorobust.errors import DataError
from oncorobust.evaluation.clinical_metrics import (ANY_ATTACK, CLINICAL_COLUMNS, check_scores, choose_threshold,
                                                    clinical_markdown, clinical_table)
from oncorobust.evaluation.evaluate import evaluate_attack
from oncorobust.evaluation.roc import operating_point, sens_spec
from oncorobust.evaluation.scores import class_scores, score_column_names


class Tilted(torch.nn.Module):
    """A 2-class linear model on the first half of the pixels, with an offset so that some images are
    misclassified; deterministic."""

    def __init__(self, d=16, k=2):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.lin = torch.nn.Linear(d, k)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(k, d, generator=g))
            self.lin.bias.zero_()

    def forward(self, x):
        return self.lin(x.flatten(1))


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(120, 1, 4, 4, generator=g)
    model = Tilted().eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[torch.rand(120, generator=g) < 0.2] ^= 1  # a fifth of the labels disagree with the model
    return model, x, y, [f"s{i:03d}" for i in range(120)]


@pytest.fixture(scope="module")
def attacks(data):
    model, x, y, ids = data
    return {(m, e): evaluate_attack(model, x, y, ids, m, e) for m in ("fgsm", "pgd") for e in (0.02, 0.08)}


def _log_odds(df, prefix, k=1):
    return (df[f"{prefix}_logit_{k}"] - df[f"{prefix}_logit_{1 - k}"]).to_numpy()


def test_attack_csv_records_the_logits_and_the_true_label_adversary(data, attacks):
    model, x, y, ids = data
    df = attacks[("pgd", 0.08)]
    with torch.no_grad():
        z = model(x).numpy()
    assert score_column_names(df, "clean") == ["clean_logit_0", "clean_logit_1"]
    assert np.allclose(df[["clean_logit_0", "clean_logit_1"]].to_numpy(), z, atol=1e-6)
    # the attack as run: adv_pred is the argmax of its logits, its probability their softmax
    adv = df[["adv_logit_0", "adv_logit_1"]].to_numpy()
    assert (adv.argmax(1) == df.adv_pred).all() and np.allclose(softmax(adv, 1).max(1), df.adv_prob, atol=1e-6)
    right = (df.clean_pred == df.label).to_numpy()
    assert 5 < (~right).sum() < 60
    # predicted labels: where the model is right the two adversaries are one attack ...
    assert np.array_equal(df.loc[right, "adv_logit_1"], df.loc[right, "true_adv_logit_1"])
    # ... where it is wrong, the true-label attack pushes away from the label, the predicted one toward it
    true_margin = np.where(df.label == 1, 1, -1) * _log_odds(df, "true_adv")
    clean_margin = np.where(df.label == 1, 1, -1) * _log_odds(df, "clean")
    adv_margin = np.where(df.label == 1, 1, -1) * _log_odds(df, "adv")
    assert (true_margin <= clean_margin + 1e-5).all()
    assert (true_margin[~right] < adv_margin[~right]).all()
    # with labels="true" there is one adversary
    t = evaluate_attack(model, x, y, ids, "pgd", 0.08, labels="true")
    assert np.array_equal(t.adv_logit_0, t.true_adv_logit_0) and np.allclose(t.true_adv_logit_1, df.true_adv_logit_1)


def test_class_scores_log_odds_margin_and_probability():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 3)) * 5
    frame = pd.DataFrame({f"adv_logit_{k}": z[:, k] for k in range(3)})
    s = class_scores(frame, "adv", 2)
    p = softmax(z, 1)[:, 2]
    assert np.allclose(s.prob, p) and np.allclose(s.log_odds, logit(p))
    assert np.allclose(s.margin, z[:, 2] - z[:, :2].max(1)) and ((s.margin > 0) == (z.argmax(1) == 2)).all()
    two = class_scores(frame[["adv_logit_0", "adv_logit_1"]], "adv", 1)
    assert np.allclose(two.log_odds, two.margin)
    # saturated probabilities (float32 softmax = 1) keep their order in log-odds
    big = pd.DataFrame({"clean_logit_0": [0.0, 0.0], "clean_logit_1": [40.0, 60.0]})
    assert class_scores(big, "clean", 1).log_odds.is_monotonic_increasing
    with pytest.raises(KeyError, match="rerun its job"):
        class_scores(frame, "clean", 0)


def test_auroc_rows_equal_scikit_learn_and_any_attack_is_never_weaker(data, attacks):
    t = clinical_table("toy", "clean", attacks, None, ["benign", "malignant"], 1)
    assert list(t.columns) == CLINICAL_COLUMNS and set(t.positive_class) == {"malignant"}
    first = attacks[("fgsm", 0.02)]
    clean = t[t.method == "clean"].iloc[0]
    assert clean.auroc == pytest.approx(roc_auc_score(first.label, _log_odds(first, "clean")))
    assert clean.eps == 0 and clean.d_auroc == 0
    for (m, e), df in attacks.items():
        r = t[(t.method == m) & (t.eps == e)].iloc[0]
        assert r.auroc == pytest.approx(roc_auc_score(df.label, _log_odds(df, "true_adv")))
        assert r.d_auroc == pytest.approx(r.auroc - clean.auroc)
        assert r.auroc_ci_low <= r.auroc <= r.auroc_ci_high
    for e in (0.02, 0.08):
        at = t[t.eps == e]
        worst = at[at.method == ANY_ATTACK].iloc[0]
        assert worst.auroc <= at[at.method != ANY_ATTACK].auroc.min() + 1e-12
    # a larger ε hurts at least as much (PGD from the same start, larger ball): AUROC falls under attack
    assert t[(t.method == ANY_ATTACK) & (t.eps == 0.08)].auroc.iloc[0] < clean.auroc
    # without validation scores the operating point is the model's own decision
    assert clean.threshold == 0 and clean.operating_rule.startswith("probability ≥ ½")
    right = first[first.label == 1]
    assert clean.sensitivity == pytest.approx(100 * (right.clean_pred == 1).mean())


def test_operating_point_comes_from_the_validation_rows(data, attacks):
    model, x, y, ids = data
    base = attacks[("fgsm", 0.02)]
    rng = np.random.default_rng(3)
    val = pd.DataFrame({"sample_id": [f"v{i}" for i in range(80)], "split": "val", "label": rng.integers(0, 2, 80)})
    val["clean_logit_0"] = 0.0
    val["clean_logit_1"] = val.label * 1.5 + rng.normal(size=80)
    sens = pd.concat([val, base.assign(split="test")[val.columns]], ignore_index=True)
    thr, how = choose_threshold(sens, 1, "youden")
    assert thr == operating_point(val.label == 1, val.clean_logit_1, "youden") and "Youden on 80 validation" in how
    thr90, how90 = choose_threshold(sens, 1, 0.9)
    assert thr90 <= thr and "sensitivity ≥ 0.9" in how90
    t = clinical_table("toy", "clean", attacks, sens, ["benign", "malignant"], 1, rule=0.9)
    r = t[(t.method == "pgd") & (t.eps == 0.08)].iloc[0]
    ref = sens_spec(attacks[("pgd", 0.08)].label == 1, _log_odds(attacks[("pgd", 0.08)], "true_adv"), thr90)
    assert r.threshold == thr90 and r.sensitivity == pytest.approx(100 * ref["sensitivity"])
    assert r.specificity == pytest.approx(100 * ref["specificity"])
    # validation rows of one class only: the model's decision, and the table says so
    one = sens[(sens.split != "val") | (sens.label == 1)]
    assert choose_threshold(one, 1) == (0.0, "probability ≥ ½ (no validation split with both classes)")


def test_regime_difference_is_paired_on_the_same_images(data, attacks):
    model, x, y, ids = data
    other = Tilted().eval()
    with torch.no_grad():
        other.lin.weight.mul_(0.5)
    theirs = {k: evaluate_attack(other, x, y, ids, *k) for k in attacks}
    # the reference's rows in another order: pairing is by sample ID, not by position
    shuffled = {k: f.sample(frac=1, random_state=3).reset_index(drop=True) for k, f in attacks.items()}
    t = clinical_table("toy", "adv_pgd", theirs, None, ["benign", "malignant"], 1, reference=shuffled,
                       reference_clean=shuffled[("fgsm", 0.02)])
    ref = clinical_table("toy", "clean", attacks, None, ["benign", "malignant"], 1)
    for method in ("pgd", ANY_ATTACK):
        mine = t[(t.method == method) & (t.eps == 0.08)].iloc[0]
        base = ref[(ref.method == method) & (ref.eps == 0.08)].iloc[0]
        assert mine.d_auroc_regime == pytest.approx(mine.auroc - base.auroc)
        assert mine.d_auroc_regime_ci_low <= mine.d_auroc_regime <= mine.d_auroc_regime_ci_high
    assert ref.d_auroc_regime.isna().all()


def test_three_classes_get_one_vs_rest_and_the_macro_mean():
    rng = np.random.default_rng(5)
    n = 90
    label = np.arange(n) % 3
    z_clean = rng.normal(size=(n, 3)) + 2 * np.eye(3)[label]
    z_adv = z_clean - 1.5 * np.eye(3)[label] + rng.normal(size=(n, 3)) * 0.3
    frame = pd.DataFrame({"sample_id": [f"i{i}" for i in range(n)], "label": label,
                          **{f"clean_logit_{k}": z_clean[:, k] for k in range(3)},
                          **{f"true_adv_logit_{k}": z_adv[:, k] for k in range(3)}})
    t = clinical_table("three", "clean", {("pgd", 0.1): frame}, None, ["a", "b", "c"], None)
    for k, name in enumerate("abc"):
        r = t[(t.positive_class == name) & (t.method == "pgd")].iloc[0]
        assert r.auroc == pytest.approx(roc_auc_score(label == k, softmax(z_adv, 1)[:, k]))
    macro = t[(t.positive_class == "macro") & (t.method == "clean")].iloc[0]
    assert macro.auroc == pytest.approx(roc_auc_score(label, softmax(z_clean, 1), multi_class="ovr", average="macro"))
    assert math.isnan(macro.auroc_ci_low) and math.isnan(macro.sensitivity)
    md = clinical_markdown(t)
    assert "mean of the one-vs-rest AUROCs" in md and "sensitivity" not in md.split("## three")[1]
    # a named positive class on three classes: that class against the rest, with an operating point
    named = clinical_table("three", "clean", {("pgd", 0.1): frame}, None, ["a", "b", "c"], 2)
    assert set(named.positive_class) == {"c"} and named.sensitivity.notna().all()


def test_old_csvs_without_scores_are_refused_by_name(attacks, tmp_path):
    old = attacks[("pgd", 0.02)].drop(columns=[c for c in attacks[("pgd", 0.02)].columns if "_logit_" in c])
    with pytest.raises(DataError, match=r"old\.csv: no clean_logit_\*/true_adv_logit_\* columns.*older oncorobust"):
        check_scores(old, tmp_path / "old.csv", ["clean", "true_adv"])
    check_scores(attacks[("pgd", 0.02)], tmp_path / "new.csv", ["clean", "true_adv"])


def test_markdown_figure_and_card_section(attacks, tmp_path):
    from oncorobust.reporting import cards, figures

    t = clinical_table("ct", "clean", attacks, None, ["benign", "malignant"], 1)
    md = clinical_markdown(t, methods=["pgd"])
    assert "## ct — clean" in md and "| any attack | 0.08 |" in md and "| fgsm |" not in md
    assert "Positive class: **malignant**" in md
    path = tmp_path / "clinical.csv"
    t.to_csv(path, index=False)
    section = cards._clinical("ct", "clean", path)
    assert [r["method"] for r in section["rows"]] == ["clean", ANY_ATTACK, ANY_ATTACK]
    assert cards._clinical("ct", "adv_pgd", path) is None and cards._clinical("ct", "clean", None) is None
    # a panel without data (no per-direction rates of the drawn attack) gets no log axis, and no crash
    dirs = pd.DataFrame({"dataset": ["ct"], "regime": ["clean"], "method": ["fgsm"], "eps": [0.02],
                         "missed_rate": [10.0], "missed_ci_low": [5.0], "missed_ci_high": [20.0],
                         "false_alarm_rate": [np.nan], "false_alarm_ci_low": [np.nan], "false_alarm_ci_high": [np.nan]})
    figures.fig6_clinical(t, dirs.assign(dataset="mri"), stem=tmp_path / "fig6b")
    assert (tmp_path / "fig6b.png").stat().st_size > 5_000
    fig = figures.fig6_clinical(t, None, stem=tmp_path / "fig6")
    assert (tmp_path / "fig6.png").stat().st_size > 5_000 and len(fig.axes) >= 2
    empty = figures.fig6_clinical(t.assign(positive_class="macro", threshold=np.nan), None, stem=tmp_path / "none")
    assert "No dataset with a positive class" in empty.axes[0].texts[0].get_text()


def test_targeted_threat_models_push_toward_one_error_only(data, attacks):
    """missed_finding attacks only positives (specificity stays clean), false_alarm only negatives
    (sensitivity stays clean); each is between clean and the untargeted adversary; on two classes the
    rows equal a run that attacks only those images."""
    model, x, y, ids = data
    t = clinical_table("toy", "clean", attacks, None, ["benign", "malignant"], 1)
    clean = t[t.method == "clean"].iloc[0]
    assert set(t.direction) == {"any", "missed_finding", "false_alarm"} and clean.direction == "any"
    for m in ("pgd", ANY_ATTACK):
        g = t[(t.method == m) & (t.eps == 0.08)].set_index("direction")
        assert g.loc["missed_finding", "specificity"] == pytest.approx(clean.specificity)
        assert g.loc["false_alarm", "sensitivity"] == pytest.approx(clean.sensitivity)
        assert g.loc["missed_finding", "sensitivity"] == pytest.approx(g.loc["any", "sensitivity"])
        assert g.loc["false_alarm", "specificity"] == pytest.approx(g.loc["any", "specificity"])
        for d in ("missed_finding", "false_alarm"):
            assert g.loc["any", "auroc"] - 1e-12 <= g.loc[d, "auroc"] <= clean.auroc + 1e-12
    # the same as attacking only the positive images: their true_adv scores, the negatives' clean ones
    df = attacks[("pgd", 0.08)]
    pos = (df.label == 1).to_numpy()
    only = np.where(pos, _log_odds(df, "true_adv"), _log_odds(df, "clean"))
    row = t[(t.method == "pgd") & (t.eps == 0.08) & (t.direction == "missed_finding")].iloc[0]
    assert row.auroc == pytest.approx(roc_auc_score(pos, only))
    md = clinical_markdown(t)
    assert "| any attack: only toward missed findings | 0.08 |" in md and "| pgd: only toward" not in md
