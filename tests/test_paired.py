"""Paired comparisons: McNemar vs scipy, the Newcombe paired interval vs a transcription of the
published R formula, the paired ε₅₀ bootstrap and the two-level (seeds × images) bootstrap by
simulation with known truths."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from oncorobust.errors import OncorobustError
from oncorobust.evaluation.paired import (PairedError, eps50, mcnemar_exact, median_difference,
                                          mean_difference, newcombe_paired, paired_accuracy_difference,
                                          paired_eps50_difference, two_level_bootstrap)


# --------------------------------------------------------------------------- McNemar

@pytest.mark.parametrize("b,c", [(0, 0), (0, 1), (0, 5), (3, 7), (7, 3), (10, 10), (12, 3), (1, 30),
                                 (50, 70), (200, 230), (9, 0), (400, 470)])
def test_mcnemar_equals_scipy_binomtest(b, c):
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_mcnemar_rejects_bad_counts():
    for b, c in ((-1, 2), (1.5, 2), (True, 3)):
        with pytest.raises(PairedError):
            mcnemar_exact(b, c)
    assert issubclass(PairedError, OncorobustError)


# --------------------------------------------------------------------------- accuracy

def newcombe_r(r, s, t, u, z=1.959963984540054):
    """Transcription of biostatUZH::confIntPairedProportion / contingencytables'
    Newcombe_square_and_add_CI_paired_2x2 (Newcombe 1998, method 10): table [[r, s], [t, u]],
    difference p1 − p2 with p1 = (r + s)/n, p2 = (r + t)/n."""
    def wilson(x, n):
        p = x / n
        centre = (2 * n * p + z ** 2) / (2 * (n + z ** 2))
        half = z * math.sqrt(z ** 2 + 4 * n * p * (1 - p)) / (2 * (n + z ** 2))
        return centre - half, centre + half

    n = r + s + t + u
    p1, p2 = (r + s) / n, (r + t) / n
    d = p1 - p2
    l1, u1 = wilson(r + s, n)
    l2, u2 = wilson(r + t, n)
    if min(r + s, t + u, r + t, s + u) == 0:
        phi = 0.0
    else:
        a = (r + s) * (t + u) * (r + t) * (s + u)
        b = r * u - s * t
        phi = (b - n / 2) / math.sqrt(a) if b > n / 2 else (b / math.sqrt(a) if b < 0 else 0.0)
    low = d - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    high = d + math.sqrt((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2)
    return d, low, high


def outcomes(both, only_a, only_b, neither, seed=0):
    a = np.array([1] * both + [1] * only_a + [0] * only_b + [0] * neither, bool)
    b = np.array([1] * both + [0] * only_a + [1] * only_b + [0] * neither, bool)
    perm = np.random.default_rng(seed).permutation(len(a))
    return a[perm], b[perm]


@pytest.mark.parametrize("table", [(1, 1, 7, 12), (59, 6, 16, 80), (40, 3, 12, 45), (30, 10, 2, 8),
                                   (80, 0, 0, 20), (5, 20, 22, 3)])
def test_paired_accuracy_difference(table):
    both, only_a, only_b, neither = table
    a, b = outcomes(*table)
    out = paired_accuracy_difference(a, b)
    n = sum(table)
    assert (out["n"], out["both"], out["only_a"], out["only_b"], out["neither"]) == (n, *table)
    assert out["difference"] == pytest.approx((only_b - only_a) / n)
    assert out["acc_b"] - out["acc_a"] == pytest.approx(out["difference"])
    # B is "condition 1" of the R code: r = both, s = B only, t = A only, u = neither
    d, lo, hi = newcombe_r(both, only_b, only_a, neither)
    assert (out["difference"], out["ci_low"], out["ci_high"]) == pytest.approx((d, lo, hi), abs=1e-12)
    assert out["ci_low"] <= out["difference"] <= out["ci_high"]
    expected_p = 1.0 if only_a + only_b == 0 else binomtest(only_a, only_a + only_b).pvalue
    assert out["mcnemar_p"] == pytest.approx(expected_p, rel=1e-9)
    assert newcombe_paired(*table)[1:] == pytest.approx((lo, hi), abs=1e-12)


def test_wald_method_is_the_projects_paired_difference():
    try:
        from oncorobust.evaluation.stats import paired_difference
    except ImportError:  # older layout
        from oncorobust.stats import paired_difference
    a, b = outcomes(40, 3, 12, 45)
    out = paired_accuracy_difference(a, b, method="wald")
    assert (out["difference"], out["ci_low"], out["ci_high"]) == paired_difference(12, 3, 100)


def test_paired_accuracy_bad_inputs():
    with pytest.raises(PairedError, match="same test images"):
        paired_accuracy_difference(np.ones(5, bool), np.ones(6, bool))
    with pytest.raises(PairedError, match="booleans"):
        paired_accuracy_difference(np.array([0.2, 1.0]), np.array([1, 0]))
    with pytest.raises(PairedError, match="method"):
        paired_accuracy_difference(np.ones(3, bool), np.ones(3, bool), method="tango")


# --------------------------------------------------------------------------- ε50

def test_eps50_is_the_robustness_summarys_quantile():
    e = np.array([0.3, np.inf, 0.1, 0.2, 0.05, np.inf])
    assert eps50(e) == 0.2  # lower median: 3rd of 6 sorted
    try:
        from oncorobust.evaluation.robustness import quantile
    except ImportError:
        try:
            from oncorobust.robustness import quantile
        except ImportError:
            pytest.skip("robustness module is being moved")
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 50):
        x = np.where(rng.random(n) < 0.3, np.inf, rng.random(n))
        assert eps50(x) == quantile(x, 0.5)


def test_paired_eps50_interval_covers_true_difference():
    """Per image, ε_A ~ 0.05·Exp(1) and ε_B = 1.5·ε_A·LogNormal(0, 0.3) (correlated, as two
    models on the same images); images beyond ε_max = 0.3 never flip (inf). True medians:
    0.05·ln 2 and 0.075·ln 2 (the lognormal factor has median 1 and is independent of ε_A)."""
    true = 0.025 * math.log(2)
    rng = np.random.default_rng(11)
    hits, draws = 0, 60
    for r in range(draws):
        ea = 0.05 * rng.exponential(size=300)
        eb = 1.5 * ea * rng.lognormal(0, 0.3, size=300)
        ea[ea > 0.3], eb[eb > 0.3] = np.inf, np.inf
        out = paired_eps50_difference(ea, eb, n_boot=300, seed=r)
        assert out["difference"] == eps50(eb) - eps50(ea)
        assert out["ci_low"] <= out["difference"] <= out["ci_high"]
        hits += out["ci_low"] <= true <= out["ci_high"]
    assert hits / draws >= 0.85, hits / draws


def test_paired_eps50_pairing_narrows_the_interval():
    rng = np.random.default_rng(3)
    ea = rng.exponential(0.05, size=400)
    paired = paired_eps50_difference(ea, ea * 1.2, n_boot=400, seed=0)
    unpaired = paired_eps50_difference(ea, rng.permutation(ea * 1.2), n_boot=400, seed=0)
    assert paired["ci_high"] - paired["ci_low"] < 0.5 * (unpaired["ci_high"] - unpaired["ci_low"])


def test_paired_eps50_infinite_and_bad_inputs():
    out = paired_eps50_difference(np.full(10, np.inf), np.full(10, np.inf), n_boot=50, seed=0)
    assert math.isnan(out["difference"]) and out["n_undefined"] == 50 and math.isnan(out["ci_low"])
    out = paired_eps50_difference(np.full(10, 0.1), np.full(10, np.inf), n_boot=50, seed=0)
    assert out["difference"] == math.inf and out["ci_low"] == math.inf
    with pytest.raises(PairedError, match="same test images"):
        paired_eps50_difference(np.ones(3), np.ones(4), n_boot=10, seed=0)
    with pytest.raises(PairedError, match="NaN"):
        paired_eps50_difference(np.array([0.1, np.nan]), np.ones(2), n_boot=10, seed=0)
    with pytest.raises(PairedError, match="n_boot"):
        paired_eps50_difference(np.ones(3), np.ones(3), n_boot=0, seed=0)


# --------------------------------------------------------------------------- seeds × images

def simulate(rng, *, k, n, sd_seed, sd_image, sd_noise, shared=True, mu=0.0):
    """value[k][i] = μ + seed effect s_k + image effect a_i (shared across seeds unless
    ``shared`` is False) + seed×image noise; the target is μ."""
    s = rng.normal(0, sd_seed, k)
    a = rng.normal(0, sd_image, n)
    return [mu + s[j] + (a if shared else rng.normal(0, sd_image, n)) + rng.normal(0, sd_noise, n)
            for j in range(k)]


def coverage(*, draws, mu=0.0, **kw):
    rng = np.random.default_rng(2024)
    hit = {"ci": 0, "sa_ci": 0, "images_ci": 0}
    for r in range(draws):
        out = two_level_bootstrap(simulate(rng, mu=mu, **kw), np.mean, n_boot=300, seed=r,
                                  shared_images=kw.get("shared", True))
        for key in hit:
            hit[key] += out[f"{key}_low"] <= mu <= out[f"{key}_high"]
    return {key: v / draws for key, v in hit.items()}


def test_two_level_interval_covers_known_mean():
    """K = 3 seeds on the same 100 images; seed SD comparable to the image standard error."""
    cov = coverage(draws=200, mu=0.7, k=3, n=100, sd_seed=0.15, sd_image=1.0, sd_noise=0.5)
    assert cov["ci"] >= 0.90, cov
    assert cov["sa_ci"] >= 0.90, cov
    assert cov["images_ci"] < cov["ci"], cov  # the seed adds width that images alone miss


def test_two_level_independent_images_covers_known_mean():
    cov = coverage(draws=100, k=3, n=100, sd_seed=0.15, sd_image=1.0, sd_noise=0.5, shared=False)
    assert cov["ci"] >= 0.90 and cov["sa_ci"] >= 0.90, cov


def test_seed_dominated_needs_the_t_interval():
    """Seed SD ≈ 10× the image SE with K = 3: a bootstrap over three seeds cannot reach past
    their range, so only the square-and-add t interval keeps its coverage."""
    cov = coverage(draws=200, k=3, n=100, sd_seed=1.0, sd_image=1.0, sd_noise=0.5)
    assert cov["sa_ci"] >= 0.90, cov
    assert cov["ci"] < 0.85, cov  # documented limitation of the percentile bootstrap at K = 3


def test_two_level_summary_and_paired_use():
    rng = np.random.default_rng(5)
    ea = [rng.exponential(0.05, 200) for _ in range(3)]
    pairs = [np.column_stack([e, 1.3 * e]) for e in ea]
    out = two_level_bootstrap(pairs, median_difference, n_boot=200, seed=0)
    per = [eps50(1.3 * e) - eps50(e) for e in ea]
    assert out["k"] == 3 and out["n"] == [200] * 3
    assert out["per_seed"] == pytest.approx(per)
    assert out["mean"] == pytest.approx(np.mean(per))
    assert (out["seed_min"], out["seed_max"]) == pytest.approx((min(per), max(per)))
    assert out["seed_sd"] == pytest.approx(np.std(per, ddof=1))
    assert out["ci_low"] <= out["mean"] <= out["ci_high"]
    assert out["sa_ci_low"] <= out["mean"] <= out["sa_ci_high"]
    ca = [rng.random(50) < 0.6 for _ in range(2)]
    cb = [rng.random(50) < 0.8 for _ in range(2)]
    acc = two_level_bootstrap([np.column_stack([a, b]) for a, b in zip(ca, cb)], mean_difference,
                              n_boot=200, seed=1)
    assert acc["mean"] == pytest.approx(np.mean([b.mean() - a.mean() for a, b in zip(ca, cb)]))
    again = two_level_bootstrap([np.column_stack([a, b]) for a, b in zip(ca, cb)], mean_difference,
                                n_boot=200, seed=1)
    rep_a, rep_b = again.pop("replicates"), acc.pop("replicates")
    assert again == acc and np.array_equal(rep_a, rep_b)  # seeded: reproducible
    assert len(rep_a) == 200 and np.percentile(rep_a, 2.5) <= acc["mean"] <= np.percentile(rep_a, 97.5)
    one = two_level_bootstrap([ca[0].astype(float)], n_boot=100, seed=0)
    assert one["k"] == 1 and math.isnan(one["seed_sd"]) and math.isnan(one["sa_ci_low"])
    assert (one["ci_low"], one["ci_high"]) == (one["images_ci_low"], one["images_ci_high"])


def test_two_level_small_k_interval_clipped_to_bounds():
    # 3 seeds of a near-perfect accuracy far apart: Student t over 3 seeds overshoots 100 %
    oks = [np.r_[np.ones(99), np.zeros(1)], np.r_[np.ones(80), np.zeros(20)], np.ones(100)]
    free = two_level_bootstrap(oks, np.mean, n_boot=200, seed=0)
    assert free["sa_ci_high"] > 1.0  # the unclipped interval leaves [0, 1]
    clipped = two_level_bootstrap(oks, np.mean, n_boot=200, seed=0, bounds=(0.0, 1.0))
    assert clipped["sa_ci_high"] == 1.0 and clipped["sa_ci_low"] == pytest.approx(free["sa_ci_low"])
    assert clipped["ci_low"] == free["ci_low"] and clipped["mean"] == free["mean"]  # only the t⊕img interval


def test_two_level_bad_inputs():
    with pytest.raises(PairedError, match="one array per seed"):
        two_level_bootstrap([], n_boot=10, seed=0)
    with pytest.raises(PairedError, match="same test images"):
        two_level_bootstrap([np.ones(3), np.ones(4)], n_boot=10, seed=0)
    out = two_level_bootstrap([np.ones(3), np.ones(4)], n_boot=10, seed=0, shared_images=False)
    assert out["mean"] == 1.0
