"""AUROC with DeLong intervals, paired AUROC tests and operating points (oncorobust.evaluation.roc):
the AUROCs against scikit-learn, the DeLong (co)variance against its O(n_pos·n_neg) definition,
known answers, the intervals' coverage on simulated binormal data, and the errors."""

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from oncorobust.errors import OncorobustError
from oncorobust.evaluation.roc import (OVR_COLUMNS, RocError, auroc_ci, auroc_difference, delong, one_vs_rest,
                                       operating_point, sens_spec)
from oncorobust.evaluation.stats import Z95, wilson


def _tied(seed: int, n: int = 80, k: int = 2):
    """Labels and k rows of integer-rounded scores (many ties), positives shifted up."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.round(rng.normal(size=(k, n)) * 1.5 + y * np.arange(1, k + 1)[:, None] * 0.7)
    return y, s


def _delong_by_definition(y, s):
    """DeLong 1988 from the definition: ψ over every (positive, negative) pair, O(k·m·n)."""
    y = np.asarray(y).astype(bool)
    s = np.atleast_2d(s)
    v10, v01 = [], []
    for row in s:
        x, z = row[y], row[~y]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        v10.append(psi.mean(axis=1))   # per positive i: mean over negatives j
        v01.append(psi.mean(axis=0))   # per negative j: mean over positives i
    v10, v01 = np.array(v10), np.array(v01)
    m, n = v10.shape[1], v01.shape[1]
    k = len(s)
    s10, s01 = np.empty((k, k)), np.empty((k, k))
    for a in range(k):
        for b in range(k):
            s10[a, b] = np.sum((v10[a] - v10[a].mean()) * (v10[b] - v10[b].mean())) / (m - 1)
            s01[a, b] = np.sum((v01[a] - v01[a].mean()) * (v01[b] - v01[b].mean())) / (n - 1)
    return v10.mean(axis=1), s10 / m + s01 / n


# --------------------------------------------------------------------------- AUROC and variance

@pytest.mark.parametrize("seed", range(5))
def test_aurocs_equal_sklearn_with_many_ties(seed):
    y, s = _tied(seed)
    assert len(np.unique(s[0])) < len(s[0]) / 4          # the data really are heavily tied
    aucs, cov = delong(y, s)
    assert aucs.shape == (2,) and cov.shape == (2, 2)
    for row, auc in zip(s, aucs):
        assert auc == pytest.approx(roc_auc_score(y, row), abs=1e-12)
    assert auroc_ci(y, s[1])["auroc"] == pytest.approx(roc_auc_score(y, s[1]), abs=1e-15)
    # one vector given as N (not 1×N) gives the same
    one, cov1 = delong(y.astype(bool), s[0])
    assert one.shape == (1,) and cov1.shape == (1, 1) and one[0] == pytest.approx(aucs[0], abs=1e-15)


@pytest.mark.parametrize("seed, n, k", [(0, 80, 2), (1, 37, 3), (2, 200, 1), (3, 15, 2)])
def test_covariance_equals_the_definition(seed, n, k):
    y, s = _tied(seed, n, k)
    if seed == 1:   # unbalanced classes and a tie-free row too
        y = (np.arange(n) % 5 == 0).astype(int)
        s[0] = np.random.default_rng(9).normal(size=n)
    aucs, cov = delong(y, s)
    ref_aucs, ref_cov = _delong_by_definition(y, s)
    np.testing.assert_allclose(aucs, ref_aucs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, rtol=0, atol=1e-12)
    assert auroc_ci(y, s[0])["se"] == pytest.approx(math.sqrt(ref_cov[0, 0]), abs=1e-12)


def test_known_answers():
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.8, 0.9])
    aucs, cov = delong(y, np.stack([s, -s, np.full(7, 0.3)]))
    np.testing.assert_array_equal(aucs, [1.0, 0.0, 0.5])
    np.testing.assert_array_equal(np.diag(cov), [0.0, 0.0, 0.0])
    r = auroc_ci(y, s)
    assert (r["auroc"], r["se"], r["ci_low"], r["ci_high"], r["n_pos"], r["n_neg"]) == (1.0, 0.0, 1.0, 1.0, 3, 4)


def test_interval_is_the_clipped_normal_interval():
    y, s = _tied(4, n=30)
    r = auroc_ci(y, s[1])
    assert r["ci_low"] == pytest.approx(max(0.0, r["auroc"] - Z95 * r["se"]), abs=1e-15)
    assert r["ci_high"] == pytest.approx(min(1.0, r["auroc"] + Z95 * r["se"]), abs=1e-15)
    r90 = auroc_ci(y, s[1], level=0.90)
    assert r90["ci_low"] == pytest.approx(r["auroc"] - norm.ppf(0.95) * r["se"], abs=1e-15)
    # AUROC 0.99 (one pair out of order) on 10 + 10 cases: auroc + 1.96·se > 1, clipped as pROC's ci.auc
    r = auroc_ci(np.repeat([0, 1], 10), np.r_[np.arange(10.0), 8.5, np.arange(10.0, 19)])
    assert r["auroc"] == pytest.approx(0.99) and r["auroc"] + Z95 * r["se"] > 1 and r["ci_high"] == 1.0


def test_one_class_gives_nan_with_the_counts_and_one_case_gives_no_interval():
    r = auroc_ci([1, 1, 1], [0.2, 0.5, 0.9])
    assert (r["n_pos"], r["n_neg"]) == (3, 0)
    assert all(math.isnan(r[k]) for k in ("auroc", "ci_low", "ci_high", "se"))
    d = auroc_difference([0, 0], [0.1, 0.2], [0.3, 0.4])
    assert all(math.isnan(v) for v in d.values())
    # a single positive: the AUROC exists, a sample variance over one positive does not
    r = auroc_ci([0, 0, 0, 1], [0.1, 0.4, 0.6, 0.5])
    assert r["auroc"] == pytest.approx(2 / 3) and math.isnan(r["se"]) and math.isnan(r["ci_low"])
    assert np.isnan(delong([0, 0, 0, 1], [0.1, 0.4, 0.6, 0.5])[1]).all()


def test_coverage_on_binormal_data():
    """60 + 60 cases, negatives N(0,1), positives N(1,1): true AUROC Φ(1/√2) ≈ 0.760; the 95%
    DeLong interval covers it in 93–98% of 4000 replicates (its coverage there is about 0.942),
    and an interval half as wide would not. 4000, not 400: with 400 the coverage's own SD (0.012)
    puts 0.93 one SD below it. The replicates share the labels, so delong() takes them as 4000
    score rows at once (its covariance's diagonal = each replicate's variance), in blocks of 400;
    auroc_ci gives the same interval on the first replicates."""
    rng = np.random.default_rng(2024)
    truth = norm.cdf(1 / math.sqrt(2))
    y = np.repeat([0, 1], 60)
    covered = covered_half = 0
    for block in range(10):
        scores = rng.normal(size=(400, 120)) + y
        aucs, cov = delong(y, scores)
        se = np.sqrt(np.diag(cov))
        low, high = np.maximum(0.0, aucs - Z95 * se), np.minimum(1.0, aucs + Z95 * se)
        covered += int(np.sum((low <= truth) & (truth <= high)))
        covered_half += int(np.sum(np.abs(aucs - truth) <= Z95 * se / 2))
        if block == 0:
            for i in range(20):
                r = auroc_ci(y, scores[i])
                assert (r["ci_low"], r["ci_high"]) == pytest.approx((low[i], high[i]), abs=1e-12)
    assert 0.93 <= covered / 4000 <= 0.98, covered / 4000
    assert covered_half / 4000 < 0.85, covered_half / 4000


# --------------------------------------------------------------------------- paired difference

def test_difference_of_identical_scores_is_zero_with_p_one():
    y, s = _tied(5)
    d = auroc_difference(y, s[0], s[0].copy())
    assert (d["diff"], d["se"], d["ci_low"], d["ci_high"], d["p_value"]) == (0.0, 0.0, 0.0, 0.0, 1.0)
    assert d["auroc_a"] == d["auroc_b"] == pytest.approx(roc_auc_score(y, s[0]))


def test_a_strongly_better_score_is_detected():
    rng = np.random.default_rng(7)
    y = np.repeat([0, 1], 100)
    weak = rng.normal(size=200) + 0.2 * y
    strong = rng.normal(size=200) + 2.0 * y
    d = auroc_difference(y, weak, strong)
    assert d["diff"] == pytest.approx(roc_auc_score(y, strong) - roc_auc_score(y, weak), abs=1e-15)
    assert d["diff"] > 0.2 and d["p_value"] < 0.01 and d["ci_low"] > 0
    # the same pair the other way round: the sign flips, the test does not change
    e = auroc_difference(y, strong, weak)
    assert e["diff"] == pytest.approx(-d["diff"]) and e["p_value"] == pytest.approx(d["p_value"]) and e["ci_high"] < 0


@pytest.mark.parametrize("seed", range(3))
def test_difference_variance_is_var_a_plus_var_b_minus_twice_the_covariance(seed):
    y, s = _tied(seed + 10, n=60)
    _, cov = delong(y, s)
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    d = auroc_difference(y, s[0], s[1])
    assert d["se"] ** 2 == pytest.approx(var, rel=1e-10, abs=1e-15)
    assert d["p_value"] == pytest.approx(2 * norm.sf(abs(d["diff"]) / math.sqrt(var)), rel=1e-9)
    assert d["ci_high"] - d["ci_low"] == pytest.approx(2 * Z95 * math.sqrt(var), rel=1e-9)


# --------------------------------------------------------------------------- operating point

def test_youden_known_best_threshold():
    # negatives 0..9, positives 8.5, 10..13: at t = 8.5 sensitivity 1, specificity 0.9 (J 0.9);
    # at t = 10 J = 0.8; every other threshold less
    y = np.r_[np.zeros(10), np.ones(5)].astype(int)
    s = np.r_[np.arange(10.0), 8.5, 10, 11, 12, 13]
    assert operating_point(y, s) == 8.5
    assert operating_point(y, s, "YOUDEN") == 8.5
    # a tie between t = 3 (sens 0.5, spec 1) and t = 1 (sens 1, spec 0.5): the larger threshold
    assert operating_point([0, 1, 0, 1], [0.0, 1.0, 2.0, 3.0]) == 3.0


def test_fixed_sensitivity_is_the_largest_threshold_that_reaches_it():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + 1.2 * y, 1)

    def sens(t):
        return np.mean(s[y == 1] >= t)

    t = operating_point(y, s, 0.9)
    assert math.isfinite(t) and t in s
    assert sens(t) >= 0.9
    larger = np.unique(s)[np.unique(s) > t]
    assert sens(larger.min()) < 0.9
    assert operating_point(y, s, 1.0) == s[y == 1].min()
    # an exact ratio counts: 9 of 10 positives is 0.9
    y10 = np.r_[np.ones(10), np.zeros(3)].astype(int)
    assert operating_point(y10, np.r_[np.arange(1.0, 11), 0, 0, 0], 0.9) == 2.0


def test_operating_point_is_never_inf():
    # a reversed score: J ≤ 0 everywhere but at the (excluded) +inf and at the smallest score
    y = np.array([1, 1, 0, 0])
    s = np.array([0.1, 0.2, 0.8, 0.9])
    assert operating_point(y, s) == 0.1
    assert all(math.isfinite(operating_point(y, s, r)) for r in (0.01, 0.5, 1.0))


@pytest.mark.parametrize("y, rule, message", [
    ([1, 1, 1], "youden", r"the validation labels have 3 positive\(s\) and 0 negative\(s\)"),
    ([0, 0, 0], 0.9, r"have 0 positive\(s\) and 3 negative\(s\).*stratified"),
    ([0, 1, 1], 1.5, r"rule = 1\.5 is not usable.*'youden' or a target sensitivity in \(0, 1\]"),
    ([0, 1, 1], 0, r"rule = 0 is not usable"),
    ([0, 1, 1], True, r"rule = True is not usable"),
    ([0, 1, 1], "foo", r"rule = 'foo' is unknown"),
])
def test_operating_point_errors(y, rule, message):
    with pytest.raises(RocError, match=message) as err:
        operating_point(y, [0.1, 0.5, 0.9], rule)
    assert isinstance(err.value, OncorobustError) and isinstance(err.value, ValueError)


# --------------------------------------------------------------------------- sensitivity, specificity

def test_sens_spec_counts_and_wilson_intervals():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.5])   # 0.5 = the threshold: called positive
    r = sens_spec(y, s, 0.5)
    assert (r["tp"], r["tn"], r["n_pos"], r["n_neg"]) == (2, 2, 3, 4)
    assert r["sensitivity"] == pytest.approx(2 / 3) and r["specificity"] == 0.5
    assert (r["sens_ci_low"], r["sens_ci_high"]) == wilson(2, 3)
    assert (r["spec_ci_low"], r["spec_ci_high"]) == wilson(2, 4)
    r = sens_spec([1, 1], [0.2, 0.8], 0.5)
    assert (r["tp"], r["n_neg"], r["sensitivity"]) == (1, 0, 0.5)
    assert math.isnan(r["specificity"]) and math.isnan(r["spec_ci_low"]) and math.isnan(r["spec_ci_high"])


# --------------------------------------------------------------------------- one vs rest

def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_one_vs_rest_equals_sklearn():
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 3, 150)
    logits = rng.normal(size=(150, 3)) + 1.0 * np.eye(3)[labels]
    p = _softmax(logits)
    df = one_vs_rest(labels, p, classes=["benign", "malignant", "normal"])
    assert tuple(df.columns) == OVR_COLUMNS and list(df["class"]) == ["benign", "malignant", "normal", "macro"]
    for c in range(3):
        row = df.iloc[c]
        assert row["auroc"] == pytest.approx(roc_auc_score(labels == c, p[:, c]), abs=1e-15)
        assert (row["n_pos"], row["n_neg"]) == ((labels == c).sum(), (labels != c).sum())
        assert row["ci_low"] < row["auroc"] < row["ci_high"]
    macro = df.iloc[3]
    assert macro["auroc"] == pytest.approx(roc_auc_score(labels, p, multi_class="ovr", average="macro"), abs=1e-15)
    assert math.isnan(macro["ci_low"]) and math.isnan(macro["ci_high"])
    # logit margins rank as the probabilities: the same AUROCs
    margin = np.stack([logits[:, c] - np.log(np.exp(np.delete(logits, c, axis=1)).sum(axis=1)) for c in range(3)], 1)
    np.testing.assert_allclose(one_vs_rest(labels, margin)["auroc"], df["auroc"], atol=1e-12)


def test_one_vs_rest_macro_skips_a_class_without_cases():
    rng = np.random.default_rng(12)
    labels = rng.integers(0, 2, 40)            # class 2 never occurs
    p = _softmax(rng.normal(size=(40, 3)) + np.eye(3)[labels])
    df = one_vs_rest(labels, p)
    assert math.isnan(df.iloc[2]["auroc"]) and df.iloc[2]["n_pos"] == 0
    assert df.iloc[3]["auroc"] == pytest.approx(df.iloc[:2]["auroc"].mean())


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("call, message", [
    (lambda: delong([0, 0, 0], [1, 2, 3]), r"0 positive\(s\) and 3 negative\(s\)"),
    (lambda: delong([1, 1], [1, 2]), r"2 positive\(s\) and 0 negative\(s\)"),
    (lambda: delong([0, 1, 1], [1, 2]), r"shape \(N,\) or \(k, N\) with N = 3"),
    (lambda: delong([0, 1, 1], np.ones((2, 2, 3))), r"N = 3"),
    (lambda: delong([0, 1, 1, 0], [1, np.nan, np.inf, 0]), r"2 non-finite value\(s\)"),
    (lambda: delong([0, 1, 2], [1, 2, 3]), r"labels must be 0 \(negative\) or 1 \(positive\); 1 of 3"),
    (lambda: auroc_ci([0, 1], [0.1, 0.2], level=1.5), r"level must be a number in \(0, 1\)"),
    (lambda: auroc_ci([0, 1], [[0.1, 0.2], [0.3, 0.4]]), r"use delong\(\) for several"),
    (lambda: auroc_difference([0, 1], [0.1, 0.2], [0.1]), r"score_b must have shape"),
    (lambda: sens_spec([0, 1], [0.1, np.nan], 0.5), r"1 non-finite"),
    (lambda: sens_spec([0, 1], [0.1, 0.2], float("nan")), r"threshold must be a number"),
    (lambda: one_vs_rest([0, 1, 3], np.ones((3, 3))), r"labels must be integers in 0\.\.2"),
    (lambda: one_vs_rest([0, 1, 2], np.ones((3, 1))), r"C ≥ 2"),
    (lambda: one_vs_rest([0, 1, 1], np.ones((3, 2)), classes=["a"]), r"classes has 1 name"),
])
def test_errors_name_the_problem(call, message):
    with pytest.raises(RocError, match=message) as err:
        call()
    assert isinstance(err.value, OncorobustError)


def test_module_is_torch_free():
    code = "import sys, oncorobust.evaluation.roc; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
