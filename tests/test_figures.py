"""Each figure on a tiny synthetic results tree: non-empty PNG with the expected panels."""

import numpy as np
import pandas as pd
import pytest
import torch

from oncorobust.reporting import figures
from oncorobust.evaluation.deferral import deferral_curves
from oncorobust.reporting.tables import paper_values
from oncorobust.evaluation.results import summarize
from oncorobust.evaluation.examples import example_for


def _summary():
    rng = np.random.default_rng(0)
    rows = []
    for ds in ("ct", "mri", "digits"):
        grid = [0.05, 0.1] if ds == "digits" else [0.001, 0.002, 0.004]
        for regime in ("clean", "adv_pgd"):
            for method in ("fgsm", "bim", "pgd", "transfer_pgd"):
                if method.startswith("transfer") and regime == "clean":
                    continue
                for e in grid:
                    n = 100
                    label = rng.integers(0, 2, n)
                    df = pd.DataFrame({"label": label, "clean_pred": label,
                                       "adv_pred": np.where(rng.random(n) < 0.6, label, 1 - label)})
                    rows.append(summarize(df, ds, regime, method, e))
    return pd.DataFrame(rows)


def _png_ok(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert path.with_suffix(".pdf").stat().st_size > 1000


def _visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def test_fig2_panels_and_paper_markers(tmp_path):
    fig = figures.fig2_accuracy_vs_eps(_summary(), {"digits"}, paper_values(), {"ct": "ct", "mri": "mri"},
                                       stem=tmp_path / "fig2", log_eps=False)
    _png_ok(tmp_path / "fig2.png")
    axes = _visible_axes(fig)
    assert [ax.get_title() for ax in axes] == ["ct", "mri", "digits (control)"]
    assert "×10⁻³" in axes[0].get_xlabel() and "×10⁻³" not in axes[2].get_xlabel()
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {"FGSM", "BIM", "PGD", "paper PGD"} <= labels
    # curves start at ε = 0 with the clean accuracy (100% in this fixture)
    line = axes[0].get_lines()[0]
    assert line.get_xdata()[0] == 0 and line.get_ydata()[0] == pytest.approx(100)


def test_fig2_shares_one_log_axis_when_grids_span_more_than_10x(tmp_path):
    units = {"ct": {"unit": "HU", "per_eps": 1500.0}}
    fig = figures.fig2_accuracy_vs_eps(_summary(), {"digits"}, paper_values(), {"ct": "ct"}, units=units)
    axes = [ax for ax in _visible_axes(fig) if ax.get_title()]
    assert len(axes) == 3 and all(ax.get_xscale() == "log" for ax in axes)
    assert len({ax.get_xlim() for ax in axes}) == 1  # medical sets and the control on one axis
    assert "clean (ε = 0)" in {t.get_text() for t in fig.legends[0].get_texts()}
    assert any("HU" in ax.get_xlabel() for ax in axes[0].child_axes)  # the stored-data axis, log too
    # one dataset with one ε: linear axis, a second axis in HU
    one = _summary().query("dataset == 'ct' and eps == 0.002")
    fig = figures.fig2_accuracy_vs_eps(one, set(), units=units)
    assert fig.axes[0].get_xscale() == "linear"
    assert any("HU" in ax.get_xlabel() for ax in fig.axes[0].child_axes)


def test_fig3_one_panel_per_dataset_with_regimes(tmp_path):
    fig = figures.fig3_adv_training(_summary(), {"digits"}, stem=tmp_path / "fig3")
    _png_ok(tmp_path / "fig3.png")
    assert len(_visible_axes(fig)) == 3
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert labels == {"clean · FGSM", "clean · PGD", "adv_pgd · FGSM", "adv_pgd · PGD"}


def test_fig3_draws_the_strongest_attack_when_pgd_did_not_run():
    s = _summary()
    s = s[s.method != "pgd"].replace({"method": {"bim": "worst"}})  # FGSM and the worst case only
    fig = figures.fig3_adv_training(s, {"digits"})
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {lab.split(" · ")[1] for lab in labels} == {"FGSM", figures.METHOD_LABELS.get("worst", "worst")}


def test_fig3_folds_seed_replicates_onto_their_regime(tmp_path):
    one = _summary()
    second = one.assign(regime=one.regime + "-r2", accuracy=one.accuracy - 10, ci_low=one.ci_low - 20)
    fig = figures.fig3_adv_training(pd.concat([one, second]), {"digits"}, stem=tmp_path / "fig3")
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert labels == {"clean (2 seeds) · FGSM", "clean (2 seeds) · PGD", "adv_pgd (2 seeds) · FGSM",
                      "adv_pgd (2 seeds) · PGD"}
    assert "envelope of the per-seed 95% CIs" in fig._suptitle.get_text()
    folded = figures.seed_means(pd.concat([one, second]))
    key = ["dataset", "regime", "method", "eps"]
    m = folded.merge(one, on=key, suffixes=("", "_1"))
    assert len(folded) == len(one) and (folded.seeds == 2).all()
    assert np.allclose(m.accuracy, m.accuracy_1 - 5)  # mean of the two seeds
    assert np.allclose(m.ci_low, m.ci_low_1 - 20) and np.allclose(m.ci_high, m.ci_high_1)  # the envelope
    line = next(ln for ln in _visible_axes(fig)[0].get_lines() if ln.get_label() == "adv_pgd (2 seeds) · PGD")
    ct = m[(m.dataset == "ct") & (m.regime == "adv_pgd") & (m.method == "pgd")].sort_values("eps")
    assert np.allclose(line.get_ydata()[1:], ct.accuracy)  # after the ε = 0 baseline point
    assert figures.seed_means(one).equals(one.assign(seeds=1))  # one seed: unchanged


def test_fig4_policies(tmp_path):
    rng = np.random.default_rng(1)
    curves = []
    for ds in ("ct", "mammo"):
        test = pd.DataFrame({"correct": rng.random(80) < 0.8, "min_flip_eps": rng.random(80),
                             "confidence": rng.random(80)})
        curves.append(deferral_curves(test).assign(dataset=ds, regime="clean"))
    fig = figures.fig4_deferral(pd.concat(curves), stem=tmp_path / "fig4")
    _png_ok(tmp_path / "fig4.png")
    axes = _visible_axes(fig)
    assert len(axes) == 2 and all(len(ax.get_lines()) == 3 for ax in axes)


def test_fig1_examples_from_a_model(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2)).eval()
    x = torch.rand(20, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    ex = example_for(model, {"x": x, "y": y, "ids": [str(i) for i in range(20)]},
                             ["benign", "malignant"], 0.3)
    assert ex is not None and np.abs(ex["adv"] - ex["clean"]).max() <= 0.3 + 1e-6
    assert np.argmax(ex["adv_prob"]) != np.argmax(ex["clean_prob"])
    fig = figures.fig1_examples([{**ex, "dataset": "ct"}, {**ex, "dataset": "mri"}], stem=tmp_path / "fig1")
    _png_ok(tmp_path / "fig1.png")
    assert len(fig.axes) == 6 and "malignant" in fig.axes[0].get_title() + fig.axes[1].get_title()
    # the perturbation's panel: how visible it is, the numbers of the attack CSVs' columns
    from oncorobust.evaluation.visibility import visibility

    seen = visibility(ex["clean"][None], ex["adv"][None])
    assert ex["ssim"] == pytest.approx(seen["ssim"][0]) and ex["psnr"] == pytest.approx(seen["psnr"][0])
    assert f"SSIM {ex['ssim']:.3f}, PSNR {ex['psnr']:.1f} dB" in fig.axes[2].get_title()


def test_fig1_without_examples_still_writes_a_figure(tmp_path):
    fig = figures.fig1_examples([], stem=tmp_path / "fig1")
    assert (tmp_path / "fig1.png").stat().st_size > 1000
    assert "nothing to show" in fig.axes[0].texts[0].get_text()
