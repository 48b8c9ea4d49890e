"""Per-image noise σ (oncorobust.data.noise): accuracy on known noise, smooth images, σ-multiples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from oncorobust.data import noise
from oncorobust.data.noise import SIGMA_FLOOR, NoiseEstimateError, estimate_noise_sigma, sigma_multiple
from oncorobust.errors import OncorobustError

N = 128
_yy, _xx = np.mgrid[0:N, 0:N].astype(np.float64)


def _background(kind: str) -> np.ndarray:
    """Noiseless backgrounds at HU scale: smooth (ramp, blob) and textured (sinusoids, field)."""
    if kind == "ramp":
        return -800.0 + 8.0 * _xx + 3.0 * _yy
    if kind == "blob":  # a soft-tissue nodule in lung
        return -850.0 + 900.0 * np.exp(-((_xx - 60) ** 2 + (_yy - 70) ** 2) / (2 * 18.0 ** 2))
    if kind == "sinusoid":
        return 40.0 + 300.0 * np.sin(2 * np.pi * _xx / 24) * np.cos(2 * np.pi * _yy / 32)
    if kind == "field":  # smoothed random field, σ 150 HU
        f = gaussian_filter(np.random.default_rng(7).normal(size=(N, N)), 4.0)
        return 30.0 + 150.0 * f / f.std()
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["ramp", "blob", "sinusoid", "field"])
@pytest.mark.parametrize("sigma", [5.0, 20.0, 50.0])
def test_estimate_within_10_percent_of_known_sigma(kind, sigma):
    rng = np.random.default_rng(int(sigma) * 31 + len(kind))
    crop = _background(kind) + rng.normal(0.0, sigma, (N, N))
    est = estimate_noise_sigma(crop)
    assert isinstance(est, float)
    assert abs(est / sigma - 1.0) < 0.10, (kind, sigma, est)


def test_estimate_is_in_stored_units_and_scales_linearly():
    rng = np.random.default_rng(3)
    crop = _background("blob") + rng.normal(0.0, 12.0, (N, N))
    a = estimate_noise_sigma(crop)
    assert estimate_noise_sigma(4.0 * crop) == pytest.approx(4.0 * a, rel=1e-9)
    assert estimate_noise_sigma(crop + 1000.0) == pytest.approx(a, rel=1e-6)  # offsets do not matter


def test_integer_crops_are_accepted():
    rng = np.random.default_rng(4)
    crop = np.round(_background("ramp") + rng.normal(0.0, 20.0, (N, N))).astype(np.int16)
    assert abs(estimate_noise_sigma(crop) / 20.0 - 1.0) < 0.10


def test_noiseless_smooth_images_give_near_zero_and_nan_multiples():
    const = np.full((32, 32), -1000.0)
    assert estimate_noise_sigma(const) == 0.0  # every wavelet detail is exactly 0
    ramp = estimate_noise_sigma(_background("ramp"))
    assert ramp == 0.0  # db2 has two vanishing moments: a linear ramp has no detail
    blob = estimate_noise_sigma(_background("blob"))
    assert blob < 0.01  # smooth structure is almost invisible to the estimator
    # rounded to integer stored values: quantisation alone, below the floor of one stored step
    blob_int = estimate_noise_sigma(np.round(_background("blob")))
    assert blob_int < SIGMA_FLOOR
    for s in (0.0, ramp, blob, blob_int):
        assert math.isnan(sigma_multiple(10.0, s))
    assert not any(math.isnan(v) or math.isinf(v) for v in (0.0, ramp, blob, blob_int))


def test_sigma_multiple():
    assert sigma_multiple(10.0, 20.0) == pytest.approx(0.5)
    out = sigma_multiple(np.array([10.0, 10.0, 10.0, 10.0, np.nan]), np.array([20.0, 0.5, np.nan, 0.0, 5.0]))
    assert out.shape == (5,)
    assert out[0] == pytest.approx(0.5)
    assert np.isnan(out[1:]).all()
    assert sigma_multiple(1.0, 0.5, floor=0.1) == pytest.approx(2.0)
    np.testing.assert_allclose(sigma_multiple(np.array([2.0, 4.0]), 2.0), [1.0, 2.0])
    with pytest.raises(NoiseEstimateError):
        sigma_multiple(1.0, 1.0, floor=-1.0)


def test_noise_sigma_of_crops_of_any_size():
    rng = np.random.default_rng(5)
    crops = [_background("blob") + rng.normal(0.0, s, (N, N)) for s in (5.0, 20.0, 50.0)]
    crops.append(np.full((16, 24), 7.0))  # sizes may differ
    out = [estimate_noise_sigma(c) for c in crops]
    np.testing.assert_allclose(out[:3], [5.0, 20.0, 50.0], rtol=0.10)
    assert out[3] == 0.0


@pytest.mark.parametrize("bad, what", [
    (np.zeros((4, 4, 3)), "2-D"),
    (np.zeros(64), "2-D"),
    (np.zeros((4, 64)), "smaller"),
    (np.full((16, 16), np.nan), "NaN"),
    (np.zeros((16, 16), dtype=complex), "real"),
])
def test_bad_crops_raise(bad, what):
    with pytest.raises(NoiseEstimateError, match=what) as e:
        estimate_noise_sigma(bad)
    assert isinstance(e.value, OncorobustError)


def test_numpy_fallback_matches_scikit_image(monkeypatch):
    pytest.importorskip("pywt")
    rng = np.random.default_rng(6)
    for shape in [(N, N), (37, 50), (8, 9)]:
        crop = rng.normal(0.0, 10.0, shape) + 100.0 * rng.random()
        via_skimage = estimate_noise_sigma(crop)
        monkeypatch.setattr(noise, "_have_pywt", lambda: False)
        via_numpy = estimate_noise_sigma(crop)
        monkeypatch.undo()
        assert via_numpy == pytest.approx(via_skimage, rel=1e-9)
    monkeypatch.setattr(noise, "_have_pywt", lambda: False)
    assert estimate_noise_sigma(np.full((16, 16), 3.0)) == 0.0
