"""How visible an attack's change is: ‖δ‖₂, PSNR and SSIM per image against independent computations,
the summary's selection of changed images, and the columns in a real attack's frame."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from oncorobust.evaluation.evaluate import COLUMNS, evaluate_attack
from oncorobust.evaluation.visibility import VISIBILITY_COLUMNS, visibility
from oncorobust.reporting.visibility import visibility_markdown, visibility_summary


def _pair(n=4, c=1, h=16, w=16, eps=0.03, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.2, 0.8, (n, c, h, w)).astype(np.float32)
    x_adv = np.clip(x + eps * rng.choice([-1.0, 1.0], x.shape), 0, 1).astype(np.float32)
    return x, x_adv


def test_known_answers():
    """A uniform shift by ε: ‖δ‖₂ = ε·√(C·H·W), PSNR = −20·log10 ε; an unchanged image: 0, inf, 1."""
    x = np.full((2, 1, 8, 8), 0.5, np.float32)
    x_adv = x.copy()
    x_adv[0] += 0.1
    v = visibility(x, x_adv)
    assert v["l2"][0] == pytest.approx(0.1 * 8, rel=1e-6) and v["psnr"][0] == pytest.approx(20.0, rel=1e-5)
    assert (v["l2"][1], v["psnr"][1], v["ssim"][1]) == (0.0, math.inf, 1.0)


@pytest.mark.parametrize("c, h", [(1, 16), (3, 32), (1, 5)])
def test_psnr_and_ssim_equal_scikit_image_and_l2_numpy(c, h):
    x, x_adv = _pair(c=c, h=h, w=h)
    v = visibility(x, x_adv)
    for i in range(len(x)):
        a, b = x[i].astype(np.float64), x_adv[i].astype(np.float64)
        assert v["l2"][i] == pytest.approx(np.linalg.norm((b - a).ravel()))
        assert v["psnr"][i] == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0))
        win = 7 if h >= 7 else 5
        want = (structural_similarity(a[0], b[0], data_range=1.0, win_size=win) if c == 1 else
                structural_similarity(a, b, data_range=1.0, win_size=win, channel_axis=0))
        assert v["ssim"][i] == pytest.approx(want)
    # a larger change is more visible: lower PSNR and SSIM, larger ‖δ‖₂
    _, louder = _pair(c=c, h=h, w=h, eps=0.1)
    w = visibility(x, louder)
    assert (w["psnr"] < v["psnr"]).all() and (w["ssim"] < v["ssim"]).all() and (w["l2"] > v["l2"]).all()


def test_tiny_images_get_no_ssim_and_shapes_are_checked():
    x, x_adv = _pair(h=2, w=2)
    assert np.isnan(visibility(x, x_adv)["ssim"]).all()
    with pytest.raises(ValueError, match="N×C×H×W"):
        visibility(x[0], x_adv[0])


def test_summary_counts_only_changed_predictions_and_converts_linf_to_stored_units():
    rows = pd.DataFrame({"dataset": "ct", "regime": "clean", "method": "pgd", "eps": 0.01,
                         "clean_pred": [0, 0, 1, 1], "adv_pred": [1, 0, 0, 1],
                         "linf": [0.01, 0.01, 0.008, 0.0], "l2": [0.2, 0.1, 0.4, 0.0],
                         "psnr": [40.0, 45.0, 38.0, math.inf], "ssim": [0.99, 0.995, 0.97, 1.0]})
    s = visibility_summary(rows, {"ct": 1500.0}).iloc[0]
    assert (s.n, s.n_changed) == (4, 2)
    assert (s.ssim_median, s.ssim_min, s.ssim_max) == pytest.approx((0.98, 0.97, 0.99))
    assert (s.linf_stored_min, s.linf_stored_max) == pytest.approx((12.0, 15.0))
    assert math.isnan(visibility_summary(rows, {}).iloc[0].linf_stored_median)


def test_attack_frame_carries_the_visibility_of_its_own_images():
    """evaluate_attack's l2 agrees with its linf (‖δ‖₂ ≥ ‖δ‖∞, ≤ √d·‖δ‖∞), PSNR with l2 (MSE = l2²/d)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2)).eval()
    x = torch.rand(12, 1, 8, 8)
    df = evaluate_attack(model, x, torch.zeros(12, dtype=torch.long), [f"s{i}" for i in range(12)], "pgd", 0.05)
    assert list(df.columns[:len(COLUMNS)]) == COLUMNS and set(VISIBILITY_COLUMNS) <= set(df.columns)
    d = 64
    assert (df.l2 >= df.linf - 1e-7).all() and (df.l2 <= math.sqrt(d) * df.linf + 1e-6).all()
    moved = df.l2 > 0
    mse = df.l2[moved] ** 2 / d
    assert np.allclose(df.psnr[moved], -10 * np.log10(mse), rtol=1e-4)
    assert ((df.ssim > 0) & (df.ssim <= 1)).all()


def test_summary_ties_the_change_to_each_images_own_noise():
    """below_noise_pct: of the changed images with a measurable σ, the share whose ‖δ‖∞ is below
    their own σ / span; images of another dataset or without σ do not count."""
    rows = pd.DataFrame({"dataset": "ct", "regime": "clean", "method": "pgd", "eps": 0.01,
                         "sample_id": ["a", "b", "c", "d", "e"], "clean_pred": [0, 0, 1, 1, 0],
                         "adv_pred": [1, 1, 0, 1, 1], "linf": [0.01, 0.01, 0.01, 0.01, 0.01],
                         "l2": 0.2, "psnr": 40.0, "ssim": 0.99})
    noise = {"ct": pd.DataFrame({"sample_id": ["a", "b", "c", "d", "e"], "split": "test",
                                 "sigma": [30.0, 10.0, 16.0, 1.0, float("nan")], "span": 1500.0, "unit": "HU"}),
             "mri": pd.DataFrame({"sample_id": ["a"], "split": "test", "sigma": [0.0], "span": [1.0], "unit": "g"})}
    s = visibility_summary(rows, {"ct": 1500.0}, noise).iloc[0]
    # changed: a (σ 0.02 > 0.01: below), b (σ 0.0067: not), c (σ 0.0107: below), e (no σ); d unchanged
    assert (s.n_changed, s.n_noise) == (4, 3) and s.below_noise_pct == pytest.approx(200 / 3)
    assert "67% of 3" in visibility_markdown(visibility_summary(rows, {"ct": 1500.0}, noise), {"ct": {"unit": "HU"}})
    assert math.isnan(visibility_summary(rows, {"ct": 1500.0}).iloc[0].below_noise_pct)


def test_figure1_perturbation_title_gives_the_visibility_numbers():
    from oncorobust.reporting.figures import _perturbation_title

    from oncorobust.evaluation.visibility import visibility

    clean = np.random.default_rng(0).random((1, 16, 16))
    adv = clean + 0.01
    seen = visibility(clean[None], adv[None])
    ex = {"units": {"per_eps": 1500.0, "unit": "HU"}, "ssim": float(seen["ssim"][0]), "psnr": float(seen["psnr"][0])}
    title = _perturbation_title(ex, adv - clean)
    assert "max |δ| = 0.01 (15 HU)" in title and "PSNR 40.0 dB" in title and f"SSIM {seen['ssim'][0]:.3f}" in title
    assert "SSIM" not in _perturbation_title({}, adv - clean)  # an example made before the numbers
