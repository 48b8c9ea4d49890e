"""Robustness curves and ε₅₀: known answers, bootstrap coverage, one line per dataset and regime."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from oncorobust.reporting import figures
from oncorobust.evaluation import robustness
from oncorobust.evaluation.sensitivity import flip_eps_bracket
from oncorobust.reporting.tables import paper_values


def test_curve_of_a_linear_model_follows_its_known_per_image_eps():
    """A 2-logit linear model: each image's smallest L∞ flip is |margin| / ‖w0 − w1‖₁, so the
    curve must drop at exactly those values (within the search tolerance)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 2)
    model = torch.nn.Sequential(torch.nn.Flatten(), lin).eval()
    x = 0.4 + 0.2 * torch.rand(40, 1, 4, 4)
    with torch.no_grad():
        z = model(x)
    w = lin.weight.detach()
    exact = ((z[:, 0] - z[:, 1]).abs() / (w[0] - w[1]).abs().sum()).numpy()
    keep = exact < 0.35
    found = flip_eps_bracket(model, x[keep], eps_max=0.4, tol=1e-4, fab_check=False)["eps_upper"].numpy()
    exact = exact[keep]
    assert (found >= exact - 1e-6).all() and (found <= exact + 1e-4 + 1e-6).all()
    correct = np.ones(keep.sum(), bool)
    n = keep.sum()
    grid = np.linspace(0, 0.4, 801)
    grid = grid[np.abs(grid[:, None] - exact[None, :]).min(1) > 2e-4]  # away from every image's ε
    c = robustness.curve(found, correct, grid)
    np.testing.assert_allclose(c.unchanged, 100 * (exact[None, :] > grid[:, None]).mean(1))
    assert (c.accuracy == c.unchanged).all() and c.unchanged.iloc[0] == 100 and c.unchanged.iloc[-1] == 0
    half = robustness.curve(found, np.arange(n) % 2 == 0, [0.0])
    assert half.accuracy.iloc[0] == pytest.approx(100 * math.ceil(n / 2) / n)


def test_quantile_and_bootstrap_ci_on_known_values():
    rng = np.random.default_rng(1)
    e = rng.exponential(0.01, size=400)  # median 0.01·ln 2
    true_median = 0.01 * math.log(2)
    assert robustness.quantile(e, 0.5) == pytest.approx(np.quantile(e, 0.5, method="lower"))
    lo, hi = robustness.ci(robustness.bootstrap(e, 0.5, seed=0))
    assert lo < true_median < hi and hi - lo < 0.004
    # coverage over repeated samples is near 95%
    hits = 0
    for s in range(60):
        d = np.random.default_rng(100 + s).exponential(0.01, size=200)
        lo, hi = robustness.ci(robustness.bootstrap(d, 0.5, n_boot=500, seed=s))
        hits += lo <= true_median <= hi
    assert hits >= 51  # ≥ 85% of 60 (binomial noise around 95%)
    # fewer than half flipped: the median is beyond eps_max
    assert robustness.quantile(np.r_[np.full(6, np.inf), [0.1, 0.2, 0.3]], 0.5) == math.inf


def _frames():
    rng = np.random.default_rng(2)
    f = lambda scale, n: pd.DataFrame({"eps_upper": rng.exponential(scale, n), "correct": rng.random(n) < 0.9})  # noqa: E731
    return {("ct", "clean"): f(0.01, 150), ("digits", "clean"): f(0.1, 300),
            ("ct", "adv_pgd"): f(0.02, 150), ("digits", "adv_pgd"): f(0.2, 300)}


def test_summary_ratio_to_control_and_units():
    frames = _frames()
    s = robustness.summary(frames, {"digits"}, n_boot=500, units={"ct": {"unit": "HU", "per_eps": 1500.0}})
    ct = s[(s.dataset == "ct") & (s.regime == "clean")].iloc[0]
    assert ct.control_dataset == "digits" and ct.ratio_to_control == pytest.approx(
        ct.eps50 / s[(s.dataset == "digits") & (s.regime == "clean")].eps50.iloc[0])
    assert ct.ratio_ci_low < ct.ratio_to_control < ct.ratio_ci_high < 1
    assert ct.eps50_stored == pytest.approx(1500 * ct.eps50) and ct.stored_unit == "HU"
    assert s[s.dataset == "digits"].ratio_to_control.isna().all()
    md = robustness.markdown(s)
    assert "vs digits" in md and "HU" in md


def test_paper_eps50_interpolates_the_papers_table1():
    paper = pd.DataFrame({"table": "table1", "dataset": "ct", "regime": "clean",
                          "method": ["baseline", "pgd", "pgd"], "eps": [0, 0.001, 0.002], "accuracy": [80.0, 60.0, 20.0]})
    assert robustness.paper_eps50(paper, "ct") == pytest.approx(0.001 + 20 / 40 * 0.001)
    assert robustness.paper_eps50(paper, None) != robustness.paper_eps50(paper, None)  # NaN
    real = robustness.paper_eps50(paper_values(), "ct")
    assert 0 < real < 0.01


def test_fig5_has_one_line_per_dataset_and_regime(tmp_path):
    frames = _frames()
    grid = np.geomspace(1e-4, 1, 50)
    curves = pd.concat([robustness.curve(f.eps_upper, f.correct, grid).assign(dataset=d, regime=r)
                        for (d, r), f in frames.items()])
    s = robustness.summary(frames, {"digits"}, n_boot=200)
    fig = figures.fig5_robustness_curves(curves, {"digits"}, summary=s, stem=tmp_path / "fig5")
    assert (tmp_path / "fig5.png").stat().st_size > 1000 and (tmp_path / "fig5.pdf").exists()
    top = [ax for ax in fig.axes if ax.get_ylabel().startswith("predictions")]
    assert len(top) == 2 and all(len(ax.get_lines()) == 2 for ax in top)  # 2 datasets × 2 regimes
    assert all(ax.get_xscale() == "log" for ax in top)
    # one legend for both panels: every entry names its regime
    labels = [line.get_label() for ax in top for line in ax.get_lines()]
    assert len(set(labels)) == 4 and all(lab.split(",")[0].endswith((" clean", " adv_pgd")) for lab in labels)
    one = figures.fig5_robustness_curves(curves[curves.dataset == "ct"].query("regime == 'clean'"), set())
    assert sum(len(ax.get_lines()) for ax in one.axes) == 2  # one dataset: one line per panel


def test_fig5_draws_seed_replicates_in_their_regimes_column(tmp_path):
    frames = _frames()
    frames.update({(d, f"{r}-r2"): f.assign(eps_upper=1.3 * f.eps_upper) for (d, r), f in _frames().items()})
    grid = np.geomspace(1e-4, 1, 50)
    curves = pd.concat([robustness.curve(f.eps_upper, f.correct, grid).assign(dataset=d, regime=r)
                        for (d, r), f in frames.items()])
    fig = figures.fig5_robustness_curves(curves, {"digits"}, stem=tmp_path / "fig5")
    top = [ax for ax in fig.axes if ax.get_ylabel().startswith("predictions")]
    assert [ax.get_title() for ax in top] == ["clean models", "adv_pgd models"]  # not one column per seed
    assert all(len(ax.get_lines()) == 4 for ax in top)  # 2 datasets × 2 seeds
    labels = [ln.get_label() for ax in top for ln in ax.get_lines() if not ln.get_label().startswith("_")]
    assert len(labels) == 4 and all("(2 seeds, one line each)" in lab for lab in labels)  # one entry per seed pair


def test_seed_summary_one_seed_repeats_the_summary_and_k_seeds_average():
    rng = np.random.default_rng(3)
    frames = {("ct", "clean"): pd.DataFrame({"eps_upper": rng.exponential(0.01, 120)}),
              ("digits", "clean"): pd.DataFrame({"eps_upper": rng.exponential(0.05, 150)})}
    one = robustness.seed_summary(frames, {"digits"}, n_boot=300, seed=1)
    ref = robustness.summary(frames, {"digits"}, n_boot=300, seed=1)
    cols = ["eps50", "eps50_ci_low", "eps50_ci_high", "eps10", "ratio_to_control", "ratio_ci_low", "ratio_ci_high"]
    assert (one.replicates == 1).all() and (one.interval == "images").all()
    pd.testing.assert_frame_equal(one[cols], ref[cols])  # K = 1: the summary's numbers, same seed
    # three seeds: replicate k of ct against replicate k of the control
    scale = {"ct": (0.010, 0.014, 0.008), "digits": (0.05, 0.06, 0.04)}
    frames = {(ds, "clean" if k == 0 else f"clean-r{k + 1}"): pd.DataFrame({"eps_upper": rng.exponential(s, 200)})
              for ds, ss in scale.items() for k, s in enumerate(ss)}
    frames[("ct", "adv_pgd")] = pd.DataFrame({"eps_upper": rng.exponential(0.02, 200)})  # one seed, no control
    k3 = robustness.seed_summary(frames, {"digits"}, n_boot=400, seed=1).set_index(["dataset", "regime"])
    ct = k3.loc[("ct", "clean")]
    per = [robustness.quantile(frames[("ct", n)].eps_upper.to_numpy(), 0.5) for n in ("clean", "clean-r2", "clean-r3")]
    ctrl = [robustness.quantile(frames[("digits", n)].eps_upper.to_numpy(), 0.5)
            for n in ("clean", "clean-r2", "clean-r3")]
    assert ct.replicates == 3 and ct.interval == "seeds+images"
    assert ct.eps50 == pytest.approx(np.mean(per))
    assert (ct.eps50_seed_min, ct.eps50_seed_max) == pytest.approx((min(per), max(per)))
    assert ct.eps50_sa_ci_low < ct.eps50 < ct.eps50_sa_ci_high and 0 <= ct.eps50_sa_ci_low
    assert ct.eps50_ci_low <= ct.eps50 <= ct.eps50_ci_high
    from oncorobust.evaluation.paired import eps50, two_level_bootstrap
    direct = two_level_bootstrap([frames[("ct", n)].eps_upper.to_numpy() for n in ("clean", "clean-r2", "clean-r3")],
                                 eps50, n_boot=400, seed=1, bounds=(0.0, math.inf))
    # the regime table's interval (same statistic, same seed): the two tables agree
    assert (ct.eps50_ci_low, ct.eps50_ci_high, ct.eps50_sa_ci_low) == pytest.approx(
        (direct["ci_low"], direct["ci_high"], direct["sa_ci_low"]))
    # the seed adds width: the two-level interval is wider than the images-only one
    assert ct.eps50_ci_high - ct.eps50_ci_low > ct.eps50_images_ci_high - ct.eps50_images_ci_low
    assert ct.ratio_to_control == pytest.approx(np.mean(per) / np.mean(ctrl))
    ratios = [a / b for a, b in zip(per, ctrl)]
    assert (ct.ratio_seed_min, ct.ratio_seed_max) == pytest.approx((min(ratios), max(ratios)))
    assert ct.ratio_ci_low < ct.ratio_to_control < ct.ratio_ci_high and ct.control_dataset == "digits"
    assert k3.loc[("ct", "adv_pgd")].replicates == 1 and k3.loc[("ct", "adv_pgd")].control_dataset == ""
    md = robustness.seed_markdown(k3.reset_index())
    assert "t⊕img" in md and "vs digits" in md and "| ct | clean | 3 | 200 |" in md
