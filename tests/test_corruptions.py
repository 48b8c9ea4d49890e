"""Natural corruptions (oncorobust.evaluation.corruptions): units, determinism, contract, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from oncorobust.errors import OncorobustError
from oncorobust.config import corruption_plan
from oncorobust.evaluation.corruptions import (CORRUPTIONS, FWHM_PER_SIGMA, N_GHOSTS, CorruptionError,
                                               check_severity, corrupt, kspace_ghosts, kspace_motion, linf)
from oncorobust.spec import MODALITIES

MRI_ONLY = {"rician_noise", "bias_field", "gibbs_ringing", "kspace_spike", "motion", "ghosting"}
SEEDS6 = [11, 22, 33, 44, 55, 66]


def _textured(n: int = 6, c: int = 1, size: int = 48, seed: int = 0) -> torch.Tensor:
    """Smooth random fields in [0.15, 0.85] with a little fine texture: N×C×size×size float32."""
    rng = np.random.default_rng(seed)
    f = gaussian_filter(rng.normal(size=(n, c, size, size)), (0, 0, 2.5, 2.5))
    f = (f - f.min(axis=(2, 3), keepdims=True)) / np.ptp(f, axis=(2, 3), keepdims=True)
    f = 0.15 + 0.7 * f + rng.normal(0, 0.01, f.shape)
    return torch.from_numpy(np.clip(f, 0, 1)).float()


def _middle(name: str) -> float:
    return CORRUPTIONS[name].severities[2]


def _upp(name: str) -> float:
    return 1500.0 if CORRUPTIONS[name].stored_units else 1.0


# ---------------------------------------------------------------------------------------------
# registry


def test_registry_is_complete_and_consistent():
    expected = {"gaussian_noise", "rician_noise", "gaussian_blur", "contrast", "window_shift", "bias_field",
                "gibbs_ringing", "kspace_spike", "motion", "ghosting", "downsample", "jpeg", "jpeg2000"}
    assert set(CORRUPTIONS) == expected
    for name, c in CORRUPTIONS.items():
        assert c.name == name
        assert len(c.severities) == 5
        assert set(c.modalities) <= set(MODALITIES) and c.modalities
        assert c.unit and c.library and len(c.description) > 40
        for s in c.severities:
            assert check_severity(name, s) == s
        if c.identity is not None:
            check_severity(name, c.identity)
        if c.stored_units:
            assert c.fractions is not None and len(c.fractions) == 5


def test_corruptions_per_modality():
    ct, mammo, mri, control = ({n for n, c in CORRUPTIONS.items() if m in c.modalities} for m in MODALITIES)
    assert not (ct | mammo) & MRI_ONLY  # no bias field, Rician, Gibbs, spikes, motion, ghosting on CT / mammo
    assert {"gaussian_noise", "gaussian_blur", "window_shift", "jpeg2000"} <= ct
    assert control == {"gaussian_noise", "gaussian_blur", "contrast", "downsample", "jpeg"}
    assert MRI_ONLY <= mri and "gaussian_noise" not in mri and "window_shift" not in mri


def test_default_severities_in_stored_units():
    """The config's plan (mildest, middle, strongest of the five defaults): HU on CT, elsewhere
    the corruption's fractions of the stored units per [0,1] (a window's width), 3 significant digits."""
    def plan(modality, names, window):
        return corruption_plan("d", {"preprocess": {"intensity": {"mode": "window", "window": window}},
                                     "corruptions": {"modality": modality, "names": names}})

    assert plan("ct", ["gaussian_noise"], [-1350, 150]) == {"gaussian_noise": [5.0, 20.0, 80.0]}  # HU
    assert plan("mammo", ["gaussian_noise"], [0, 4095]) == {"gaussian_noise": [41.0, 164.0, 655.0]}
    assert plan("mammo", ["window_shift"], [0, 255]) == {"window_shift": [2.55, 12.8, 51.0]}
    assert plan("control", ["jpeg"], [0, 255]) == {"jpeg": [CORRUPTIONS["jpeg"].severities[k] for k in (0, 2, 4)]}


# ---------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("name, severity, shown", [
    ("gaussian_noise", -1.0, "[0, inf)"),
    ("gibbs_ringing", 1.5, "[0, 1]"),
    ("ghosting", -0.1, "[0, 1]"),
    ("jpeg", 50.5, "whole numbers"),
    ("jpeg", 0, "[1, 100]"),
    ("jpeg2000", 0.0, "(0, 100]"),
    ("downsample", 0.5, "[1, inf)"),
    ("contrast", float("nan"), "[0, inf)"),
    ("gaussian_blur", math.inf, "FWHM"),
    ("motion", True, "px"),
    ("window_shift", "10", "stored units"),
])
def test_bad_severity_names_corruption_and_range(name, severity, shown):
    x = _textured(2)
    with pytest.raises(CorruptionError) as e:
        corrupt(x, name, severity, seeds=[1, 2])
    assert isinstance(e.value, OncorobustError)
    msg = str(e.value)
    assert repr(name) in msg and shown in msg


def test_unknown_name_lists_known_ones():
    with pytest.raises(CorruptionError, match="unknown corruption 'fog'.*gaussian_noise"):
        corrupt(_textured(1), "fog", 1.0, seeds=[0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(x=torch.rand(1, 8, 8)), "N×C×H×W"),
    (dict(x=torch.rand(1, 1, 8, 8) + 1.0), r"\[0,1\]"),
    (dict(x=torch.zeros(1, 1, 8, 8, dtype=torch.int64)), "float"),
    (dict(seeds=[1]), "2 seeds for 1 images|1 seeds for 2 images"),
    (dict(seeds=[1, -2]), "non-negative"),
    (dict(seeds=[1, 2.5]), "non-negative"),
    (dict(units_per_pixel=0.0), "units_per_pixel"),
    (dict(spacing_mm=-1.0), "spacing_mm"),
])
def test_bad_inputs_raise(kwargs, match):
    args = dict(x=torch.rand(2, 1, 16, 16), seeds=[1, 2])
    args.update(kwargs)
    x = args.pop("x")
    with pytest.raises(CorruptionError, match=match):
        corrupt(x, "gaussian_noise", 10.0, **args)


# ---------------------------------------------------------------------------------------------
# contract: shape, dtype, range, identity, determinism


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
@pytest.mark.parametrize("channels", [1, 3])
def test_output_contract(name, channels):
    x = _textured(3, channels, 32)
    y = corrupt(x, name, _middle(name), seeds=[1, 2, 3], units_per_pixel=_upp(name))
    assert y.dtype == torch.float32 and y.shape == x.shape and y.device == x.device
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.isfinite(y).all()
    assert float(linf(x, y).min()) > 0.0  # every image changed
    assert torch.equal(x, _textured(3, channels, 32))  # input untouched


@pytest.mark.parametrize("name", sorted(n for n, c in CORRUPTIONS.items() if c.identity is not None))
def test_identity_severity_returns_input(name):
    x = _textured(3)
    y = corrupt(x.double(), name, CORRUPTIONS[name].identity, seeds=[1, 2, 3])
    assert y.dtype == torch.float32 and torch.equal(y, x)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_identical_across_batch_sizes_and_orders(name):
    x = _textured(6)
    s, upp = _middle(name), _upp(name)
    whole = corrupt(x, name, s, seeds=SEEDS6, units_per_pixel=upp)
    one_by_one = torch.cat([corrupt(x[i:i + 1], name, s, seeds=[SEEDS6[i]], units_per_pixel=upp) for i in range(6)])
    perm = [4, 1, 5, 0, 3, 2]
    split = torch.cat([corrupt(x[perm[:2]], name, s, seeds=[SEEDS6[i] for i in perm[:2]], units_per_pixel=upp),
                       corrupt(x[perm[2:]], name, s, seeds=[SEEDS6[i] for i in perm[2:]], units_per_pixel=upp)])
    assert torch.equal(whole, one_by_one)
    assert torch.equal(whole[perm], split)


@pytest.mark.parametrize("name", sorted(n for n, c in CORRUPTIONS.items() if c.seeded))
def test_seed_changes_the_draw(name):
    x = _textured(1).repeat(4, 1, 1, 1)
    y = corrupt(x, name, _middle(name), seeds=[5, 6, 7, 8], units_per_pixel=_upp(name))
    assert not all(torch.equal(y[0], y[i]) for i in (1, 2, 3))  # (ghosting draws only an axis)
    assert torch.equal(y[0], corrupt(x[:1], name, _middle(name), seeds=[5], units_per_pixel=_upp(name))[0])


def test_linf():
    x = torch.zeros(3, 2, 4, 4)
    xc = x.clone()
    xc[0, 1, 2, 3] = 0.25
    xc[2, 0, 0, 0] = -0.5
    d = linf(x, xc)
    assert d.shape == (3,) and d.dtype == torch.float32
    assert d.tolist() == [0.25, 0.0, 0.5]
    with pytest.raises(CorruptionError, match="shape"):
        linf(x, xc[:2])


# ---------------------------------------------------------------------------------------------
# each severity reproduces its stated unit


@pytest.mark.parametrize("sigma_hu", [5.0, 20.0, 80.0])
def test_gaussian_noise_sigma_in_stored_units(sigma_hu):
    upp = 1500.0  # a 1500 HU window
    x = torch.full((2, 1, 128, 128), 0.5)
    y = corrupt(x, "gaussian_noise", sigma_hu, seeds=[1, 2], units_per_pixel=upp)
    measured = float((y - x).std()) * upp
    assert measured == pytest.approx(sigma_hu, rel=0.03)
    assert abs(float((y - x).mean())) * upp < 0.03 * sigma_hu


def test_rician_noise_sigma_and_rayleigh_background():
    upp, sigma = 1000.0, 15.0
    bright = torch.full((1, 1, 128, 128), 0.6)
    y = corrupt(bright, "rician_noise", sigma, seeds=[3], units_per_pixel=upp)
    assert float((y - bright).std()) * upp == pytest.approx(sigma, rel=0.04)  # high SNR: ≈ Gaussian σ
    dark = torch.zeros(1, 1, 128, 128)
    y0 = corrupt(dark, "rician_noise", sigma, seeds=[3], units_per_pixel=upp)
    assert float(y0.mean()) * upp == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.03)  # Rayleigh mean


def _second_moment_fwhm(profile: np.ndarray) -> float:
    i = np.arange(len(profile))
    m = (profile * i).sum() / profile.sum()
    return FWHM_PER_SIGMA * math.sqrt((profile * (i - m) ** 2).sum() / profile.sum())


@pytest.mark.parametrize("fwhm", [1.0, 2.0, 4.0, 6.0])
def test_gaussian_blur_fwhm_of_a_point(fwhm):
    x = torch.zeros(1, 1, 65, 65)
    x[0, 0, 32, 32] = 1.0
    y = corrupt(x, "gaussian_blur", fwhm, seeds=[0])[0, 0].double().numpy()
    assert y.sum() == pytest.approx(1.0, rel=1e-4)  # the PSF keeps the signal
    assert _second_moment_fwhm(y.sum(axis=0)) == pytest.approx(fwhm, rel=0.02)
    assert _second_moment_fwhm(y.sum(axis=1)) == pytest.approx(fwhm, rel=0.02)


def test_gaussian_blur_half_maximum_of_a_line_and_mm():
    x = torch.zeros(1, 1, 64, 129)
    x[0, 0, :, 64] = 1.0
    prof = corrupt(x, "gaussian_blur", 6.0, seeds=[0])[0, 0, 32].double().numpy()
    half = prof.max() / 2
    above = np.nonzero(prof >= half)[0]
    lo, hi = above[0], above[-1]  # interpolate the two half-maximum crossings
    left = lo - (prof[lo] - half) / (prof[lo] - prof[lo - 1])
    right = hi + (prof[hi] - half) / (prof[hi] - prof[hi + 1])
    assert right - left == pytest.approx(6.0, rel=0.05)
    in_mm = corrupt(x, "gaussian_blur", 3.0, seeds=[0], spacing_mm=0.5)  # 3 mm at 0.5 mm/px = 6 px
    assert torch.equal(in_mm[0, 0, 32], torch.from_numpy(prof).float())


def test_blur_keeps_flat_borders():
    x = torch.full((1, 1, 32, 32), 0.7)
    assert torch.allclose(corrupt(x, "gaussian_blur", 4.0, seeds=[0]), x, atol=1e-6)  # no zero padding


@pytest.mark.parametrize("c", [0.5, 1.4])
def test_contrast_is_multiplicative_around_the_mean(c):
    x = 0.4 + 0.2 * torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    y = corrupt(x, "contrast", c, seeds=[0, 0])
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(y - m, c * (x - m), atol=1e-5)
    x3 = 0.4 + 0.2 * torch.rand(1, 3, 16, 16)  # RGB: around the mean luminance (torchvision)
    m3 = (0.2989 * x3[:, 0] + 0.587 * x3[:, 1] + 0.114 * x3[:, 2]).mean()
    assert torch.allclose(corrupt(x3, "contrast", c, seeds=[0]) - m3, c * (x3 - m3), atol=1e-4)


@pytest.mark.parametrize("shift_hu", [100.0, -50.0])
def test_window_shift_in_stored_units(shift_hu):
    upp = 1500.0
    x = 0.3 + 0.4 * torch.rand(2, 1, 16, 16)
    y = corrupt(x, "window_shift", shift_hu, seeds=[0, 0], units_per_pixel=upp)
    assert torch.allclose((y - x) * upp, torch.full_like(x, shift_hu), atol=1e-3)


@pytest.mark.parametrize("peak", [0.1, 0.3])
def test_bias_field_peak_log_gain(peak):
    x = torch.full((2, 1, 64, 64), 0.5)
    y = corrupt(x, "bias_field", peak, seeds=[1, 2])
    log_gain = torch.log(y.double() / 0.5)
    for i in range(2):
        assert float(log_gain[i].abs().max()) == pytest.approx(peak, rel=1e-3)
        assert float(log_gain[i].std()) > 0.1 * peak  # a field, not a constant gain
        # smooth: neighbouring pixels differ by far less than the field's range
        assert float(log_gain[i].diff(dim=-1).abs().max()) < 0.2 * peak
    assert not torch.allclose(log_gain[0], log_gain[1])  # the seed draws the field


def test_gibbs_truncates_kspace_to_the_stated_radius():
    n, alpha = 64, 0.5
    x = torch.full((1, 1, n, n), 0.4)
    x[..., 20:44, 24:40] = 0.6  # a low-contrast square: ringing stays inside [0,1]
    y = corrupt(x, "gibbs_ringing", alpha, seeds=[0])[0, 0].double().numpy()
    k = np.abs(np.fft.fftshift(np.fft.fft2(y)))
    r = (1 - alpha) * n * math.sqrt(2) / 2
    yy, xx = np.mgrid[0:n, 0:n]
    # MONAI centres its disc at (n−1)/2 and keeps the real part, which mirrors the spectrum
    # about the DC at n/2, i.e. the disc onto centre (n+1)/2: nothing survives outside both
    outside = np.minimum(np.hypot(yy - (n - 1) / 2, xx - (n - 1) / 2),
                         np.hypot(yy - (n + 1) / 2, xx - (n + 1) / 2)) > r
    assert outside.sum() > 1000
    assert k[outside].max() < 1e-4 * k.max()
    inside = np.hypot(yy - n / 2, xx - n / 2) < r - 1
    x_k = np.abs(np.fft.fftshift(np.fft.fft2(x[0, 0].double().numpy())))
    np.testing.assert_allclose(k[inside], x_k[inside], rtol=1e-3, atol=1e-3 * k.max())
    errs = [float((corrupt(x, "gibbs_ringing", a, seeds=[0]) - x).abs().mean()) for a in (0.3, 0.5, 0.7, 0.9)]
    assert errs == sorted(errs) and errs[0] < errs[-1]


@pytest.mark.parametrize("amp", [0.05, 0.2])
def test_kspace_spike_stripe_amplitude(amp):
    x = torch.full((3, 1, 64, 64), 0.5)
    y = corrupt(x, "kspace_spike", amp, seeds=[1, 2, 3])
    for i in range(3):
        d = (y[i] - x[i]).double()
        assert float(d.std()) * math.sqrt(2) == pytest.approx(amp, rel=0.03)  # a cosine of amplitude s
        assert abs(float(d.mean())) < 0.01 * amp
    assert not torch.equal(y[0], y[1])  # the seed places the spike


def test_kspace_motion_is_a_translation_when_all_lines_move():
    img = _textured(1, 2, 32)[0].double().numpy()
    moved = kspace_motion(img, (3.0, -2.0), t=0.0, axis=0)
    np.testing.assert_allclose(moved, np.roll(img, (3, -2), axis=(1, 2)), atol=1e-9)
    np.testing.assert_allclose(kspace_motion(img, (3.0, -2.0), t=1.01, axis=1), img, atol=1e-9)
    half = kspace_motion(img, (3.0, -2.0), t=0.5, axis=1)
    assert np.abs(half - img).max() > 0.05 and np.abs(half - moved).max() > 0.05


def test_motion_error_grows_with_displacement():
    x = _textured(4)
    errs = [float((corrupt(x, "motion", d, seeds=[1, 2, 3, 4]) - x).abs().mean()) for d in (0.5, 1.0, 2.0, 4.0)]
    assert errs == sorted(errs)


def test_ghosting_ghost_amplitude():
    a = 0.8
    x = np.zeros((1, 64, 64))
    x[0, 4:12, 4:12] = 1.0
    g = kspace_ghosts(x, a, N_GHOSTS, axis=0)
    np.testing.assert_allclose(g[0, 4:12, 4:12], 1 - a / N_GHOSTS, atol=1e-9)  # the image loses a/n
    for j in range(1, N_GHOSTS):  # n − 1 ghosts of amplitude a/n, N/n pixels apart
        off = j * 64 // N_GHOSTS
        np.testing.assert_allclose(g[0, 4 + off:12 + off, 4:12], a / N_GHOSTS, atol=1e-9)
    assert g[0, :, 12:].max() < 1e-9 and g[0, 12:16].max() < 1e-9  # nothing else
    # through corrupt(): the phase-encode axis is drawn from the seed, the amplitude is the same
    xt = torch.from_numpy(x).float()[None]
    y = corrupt(xt, "ghosting", a, seeds=[9])
    outside = y[0, 0][xt[0, 0] == 0]
    assert float(outside.max()) == pytest.approx(a / N_GHOSTS, abs=1e-5)


def test_downsample_removes_fine_detail():
    x = torch.zeros(1, 1, 32, 32)
    x[..., ::2, :] = 1.0  # a line pattern at the Nyquist frequency
    x = 0.25 + 0.5 * x
    y = corrupt(x, "downsample", 2.0, seeds=[0])
    assert float(y.std()) < 0.1 * float(x.std())
    xt = _textured(3)
    errs = [float((corrupt(xt, "downsample", f, seeds=[0, 0, 0]) - xt).abs().mean()) for f in (1.5, 2, 3, 4, 6)]
    assert errs == sorted(errs)


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_lower_quality_larger_error(channels):
    x = _textured(3, channels, 48)
    errs = [float((corrupt(x, "jpeg", q, seeds=[0, 0, 0]) - x).pow(2).mean()) for q in (95, 75, 50, 30, 10, 3)]
    assert all(a < b for a, b in zip(errs, errs[1:])), errs


def test_jpeg2000_psnr_target():
    x = _textured(2, 1, 64)
    x8 = torch.round(x * 255) / 255  # the 8-bit image that is encoded
    psnrs = []
    for db in (45.0, 35.0, 25.0):
        y = corrupt(x, "jpeg2000", db, seeds=[0, 0])
        for i in range(2):
            mse = float((y[i].double() - x8[i].double()).pow(2).mean())
            psnrs.append(10 * math.log10(1 / mse))
            assert db - 2.5 < psnrs[-1] < db + 1.0  # OpenJPEG lands at or up to ~2 dB below the target
    assert psnrs[0] > psnrs[2] > psnrs[4]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_gpu_input_gives_the_cpu_result_on_the_gpu():
    x = _textured(2)
    for name in ("gaussian_noise", "gaussian_blur", "jpeg"):
        cpu = corrupt(x, name, _middle(name), seeds=[1, 2], units_per_pixel=_upp(name))
        gpu = corrupt(x.cuda(), name, _middle(name), seeds=[1, 2], units_per_pixel=_upp(name))
        assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)


def test_missing_monai_is_a_readable_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_monai(name, *args, **kwargs):
        if name.startswith("monai"):
            raise ImportError("no monai")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_monai)
    with pytest.raises(CorruptionError, match="MONAI"):
        corrupt(_textured(1), "gibbs_ringing", 0.5, seeds=[0])
    y = corrupt(_textured(1), "jpeg", 50, seeds=[0])  # the others need no MONAI
    assert y.shape == (1, 1, 48, 48)
