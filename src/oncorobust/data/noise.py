"""Per-image noise standard deviation in stored units (HU for CT, grey levels otherwise).

Each preprocessed crop records σ, the standard deviation of the noise the scanner already put in
it, so that a flipping ε (stored units) can also be read as a multiple of the image's own noise:
"half the CT nodules flip at 0.4 σ". The estimator is Donoho and Johnstone's wavelet MAD
(scikit-image's :func:`skimage.restoration.estimate_sigma`):

    σ̂ = median(|HH|) / Φ⁻¹(0.75),   HH = the finest diagonal detail band of a one-level 2-D
                                     Daubechies-2 (db2) wavelet transform.

Why this estimator:
    * Robust to image structure. db2 has two vanishing moments, so constant and linear intensity
      (flat tissue, ramps, slow shading) give HH = 0 exactly; edges and texture only touch a
      minority of HH coefficients, which the median ignores. The estimate stays within a few % of
      the true σ on smooth and textured backgrounds (tests/test_noise.py).
    * No training, no tuning parameter, one pass (milliseconds for a crop).
    * Well kept: scikit-image is already a dependency, and the estimator is its documented,
      tested routine (Donoho & Johnstone 1994, Biometrika 81:425, section 4.2).
    * It estimates additive white Gaussian noise. CT noise is spatially correlated by the
      reconstruction kernel; the finest band then sees part of it, so σ̂ is a lower bound of the
      pixel standard deviation for smooth kernels. Quantum noise in mammography is signal
      dependent; σ̂ is then a typical (median) value over the crop.

Smooth, noiseless images: HH is zero (or float round-off) almost everywhere, so σ̂ is 0 or a tiny
number. :func:`estimate_noise_sigma` still returns that value (the record stays truthful: "this
crop shows no measurable noise"), but a σ-multiple would then be meaningless or infinite.
:func:`sigma_multiple` therefore returns NaN wherever σ̂ < :data:`SIGMA_FLOOR` (default one
stored-value step: rounding to integer stored values alone adds 1/√12 ≈ 0.29 step of "noise", and
a noiseless smooth image rounded to integers measures ≈ 0.25–0.35 step, so σ̂ below one step is
quantisation or smoothing, not scanner noise), and tables must treat NaN as "not defined".

scikit-image computes the transform with PyWavelets, an optional dependency of scikit-image. When
PyWavelets is missing, the same db2 'symmetric'-mode transform is computed here with numpy
(identical coefficients, tested against PyWavelets where it is installed).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from oncorobust.errors import OncorobustError

#: Smallest σ̂ (stored units) against which ε is expressed as a σ-multiple: one stored-value step
#: (1 HU, 1 grey level). Rounding alone gives σ̂ ≈ 1/√12 ≈ 0.29 step, so below one step σ̂ measures
#: quantisation, not scanner noise.
SIGMA_FLOOR = 1.0

#: Smallest crop side the estimator accepts (the db2 detail band of an 8×8 crop has 5×5 values).
MIN_SIDE = 8

# Daubechies-2 decomposition high-pass filter (PyWavelets' ``Wavelet('db2').dec_hi``).
_DB2_DEC_HI = np.array([-0.48296291314453416, 0.8365163037378079,
                        -0.2241438680420134, -0.12940952255126037])
_PHI_INV_075 = 0.6744897501960817  # scipy.stats.norm.ppf(0.75)
_ROUNDOFF = 1e-9  # σ̂ below this × the crop's largest |value| is float round-off, reported as 0


class NoiseEstimateError(OncorobustError, ValueError):
    """A crop cannot be used to estimate noise (wrong shape, too small, not finite)."""


def _check_crop(crop: np.ndarray) -> np.ndarray:
    a = np.asarray(crop)
    if a.ndim != 2:
        raise NoiseEstimateError(f"noise σ: a crop must be a 2-D array (H×W), got shape {a.shape}")
    if min(a.shape) < MIN_SIDE:
        raise NoiseEstimateError(f"noise σ: crop {a.shape} is smaller than {MIN_SIDE}×{MIN_SIDE} pixels")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise NoiseEstimateError(f"noise σ: crop must hold real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        raise NoiseEstimateError("noise σ: crop holds NaN or infinite values")
    return a


def _db2_hh(a: np.ndarray) -> np.ndarray:
    """The 'dd' band of a one-level db2 ``pywt.dwtn(a, 'db2')`` (mode 'symmetric'), in numpy."""
    f = len(_DB2_DEC_HI)

    def along(x: np.ndarray, axis: int) -> np.ndarray:
        x = np.moveaxis(x, axis, -1)
        n = x.shape[-1]
        ext = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(f - 1, f - 1)], mode="symmetric")
        # 'valid' correlation with the reversed filter = convolution with the filter
        win = np.lib.stride_tricks.sliding_window_view(ext, f, axis=-1)
        full = win @ _DB2_DEC_HI[::-1]
        return np.moveaxis(full[..., 1::2][..., : (n + f - 1) // 2], -1, axis)

    return along(along(a, 0), 1)


def _have_pywt() -> bool:
    try:
        import pywt  # noqa: F401
    except ImportError:
        return False
    return True


def estimate_noise_sigma(crop: np.ndarray) -> float:
    """Standard deviation of the noise in one crop, in the crop's stored units.

    Args:
        crop: H×W array in stored units (HU for CT, grey levels otherwise), H, W ≥ 8; raw values
            before any intensity windowing or resizing (resizing averages noise away).

    Returns:
        σ̂ ≥ 0 (float, same unit as ``crop``): the wavelet-MAD estimate of additive Gaussian
        noise. 0.0 when the crop's finest diagonal wavelet band is zero up to float round-off
        (below 1e-9 × the crop's largest |value|: a constant or linear image); a small value
        (≪ one stored step) on other noiseless smooth images. Use
        :func:`sigma_multiple` to divide by it safely.

    Raises:
        NoiseEstimateError: the crop is not 2-D, smaller than 8×8, not real or not finite.
    """
    a = _check_crop(crop)
    if _have_pywt():
        from skimage.restoration import estimate_sigma

        with warnings.catch_warnings():
            # skimage warns about "a colour image?" when the last axis is ≤ 4 long (not here: ≥ 8)
            # and numpy warns on the median of an empty selection (all-zero band, handled below)
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)
            sigma = float(estimate_sigma(a, channel_axis=None))
    else:
        hh = _db2_hh(a)
        nz = np.abs(hh[hh != 0])
        sigma = float(np.median(nz)) / _PHI_INV_075 if nz.size else float("nan")
    # every detail coefficient exactly 0, or only float round-off of the crop's values: no noise
    if not math.isfinite(sigma) or sigma <= _ROUNDOFF * max(float(np.abs(a).max()), 1.0):
        return 0.0
    return sigma


def sigma_multiple(eps_stored, sigma, floor: float = SIGMA_FLOOR):
    """ε expressed as a multiple of the image's own noise σ, NaN where σ is not measurable.

    Args:
        eps_stored: perturbation size(s) in stored units (e.g. a flipping ε × units per [0,1]).
        sigma: the image's σ̂ in the same stored units (scalar or array broadcastable with
            ``eps_stored``).
        floor: σ̂ below this (stored units) counts as "no measurable noise"; default
            :data:`SIGMA_FLOOR` = one stored-value step.

    Returns:
        ``eps_stored / sigma`` (float, or float64 array of the broadcast shape); NaN where
        σ̂ < ``floor``, σ̂ or ε is NaN/infinite, so tables never show an infinite multiple.

    Raises:
        NoiseEstimateError: ``floor`` is negative or not finite.
    """
    if not (math.isfinite(floor) and floor >= 0):
        raise NoiseEstimateError(f"sigma_multiple: floor must be a finite number ≥ 0, got {floor}")
    e = np.asarray(eps_stored, dtype=np.float64)
    s = np.asarray(sigma, dtype=np.float64)
    ok = np.isfinite(s) & (s >= floor) & (s > 0) & np.isfinite(e)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ok, e / np.where(ok, s, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out
