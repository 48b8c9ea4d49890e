"""Natural corruptions as a method family beside the adversarial attacks.

Every corruption maps a batch of images (N×C×H×W float32 in [0,1], the model's input) to a
corrupted batch of the same shape, clamped to [0,1]. Its severity is a number in a physical or
stored unit (HU σ, FWHM in pixels, JPEG quality, ...) written in :data:`CORRUPTIONS`, so a
corruption sits on the same axis as the adversarial ε: :func:`linf` gives the measured ‖δ‖∞ of
each corrupted image.

Determinism: image i is corrupted on its own, and every random draw it needs comes from
``seeds[i]`` (and the corruption's name) alone, so an image's corrupted version is identical
whatever the batch size, order or device. The same image at two severities sees the same random
pattern (common random numbers), which keeps accuracy-against-severity curves smooth. Per-image
seeds come from ``oncorobust`` attacks' ``image_seeds(ids, n, seed)``.

Units: ``units_per_pixel`` is the number of stored units (HU for CT, grey levels otherwise) per
unit of [0,1] intensity, i.e. the ``per_eps`` of the data set's ε units (a CT window of 1500 HU
→ 1500). Stored-unit severities (noise σ, window shift) are divided by it.

Where each transform comes from:

=============== ===============================================================================
gaussian_noise  MONAI ``RandGaussianNoise`` (fixed σ, ``sample_std=False``)
rician_noise    MONAI ``RandRicianNoise`` (fixed σ, absolute)
gaussian_blur   MONAI ``gaussian_1d`` (discrete "scalespace" kernel) + ``separable_filtering``
                with reflect padding (``GaussianSmooth`` pads with zeros, darkening borders)
contrast        torchvision ``adjust_contrast`` (1 or 3 channels; the same formula otherwise)
window_shift    here (one addition)
bias_field      MONAI ``RandBiasField`` (field shape), rescaled to the stated peak gain
gibbs_ringing   MONAI ``GibbsNoise``
kspace_spike    MONAI ``KSpaceSpikeNoise`` (location drawn here from the seed)
motion          here: k-space (MONAI has no motion transform; TorchIO's is not installed)
ghosting        here: k-space (MONAI has no ghosting transform; TorchIO's is not installed)
downsample      torchvision ``resize`` (bilinear, antialiased down, bilinear up)
jpeg            Pillow JPEG (libjpeg), 8-bit
jpeg2000        Pillow JPEG 2000 (OpenJPEG), 8-bit, 9/7 irreversible wavelet
=============== ===============================================================================
"""

from __future__ import annotations

import io
import math
import re
import numbers
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from oncorobust.errors import OncorobustError
from oncorobust.spec import CORRUPTION_KINDS, MODALITIES, corruption_method

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.3548


class CorruptionError(OncorobustError, ValueError):
    """A corruption was asked for by an unknown name, at an impossible severity, or on unusable
    images or seeds. The message names the corruption and the valid range."""


@dataclass(frozen=True)
class _Ctx:
    """What one image's corruption needs besides the image and the severity."""

    seed: int
    name: str
    units_per_pixel: float
    spacing_mm: float | None

    def seed_sequence(self) -> np.random.SeedSequence:
        return np.random.SeedSequence([self.seed, zlib.crc32(self.name.encode())])

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed_sequence())

    def random_state(self) -> np.random.RandomState:
        """A legacy RandomState (what MONAI's Rand* transforms draw from), seeded per image."""
        return np.random.RandomState(np.random.MT19937(self.seed_sequence()))


@dataclass(frozen=True)
class Corruption:
    """One natural corruption and the meaning of its severity.

    Attributes:
        name: registry key (also the ``corrupt_{name}`` method name in result paths).
        unit: the severity's unit, e.g. "σ, stored units (HU on CT)".
        modalities: where it applies, from ("ct", "mammo", "mri", "control");
            the config's corruption plan (:func:`oncorobust.config.corruption_plan`) checks by this.
        library: where the transform comes from.
        severities: five default severities, mildest first (ImageNet-C / MedMNIST-C style); for
            stored-unit corruptions these are the CT defaults in HU.
        description: what a severity means physically.
        low, high: the valid severity range; ``low_open``/``high_open`` exclude an end.
        identity: the severity that leaves the image unchanged (None: no such severity).
        integer: severities must be whole numbers.
        stored_units: the severity is in stored units (divided by ``units_per_pixel``).
        fractions: for stored-unit corruptions off CT, default severities are these fractions of
            ``units_per_pixel`` (i.e. of the [0,1] range).
        seeded: whether the corruption draws random numbers (from the image's seed).
    """

    name: str
    unit: str
    modalities: tuple[str, ...]
    library: str
    severities: tuple[float, ...]
    description: str
    low: float
    high: float
    apply: Callable[[torch.Tensor, float, _Ctx], torch.Tensor] = field(repr=False, compare=False)
    low_open: bool = False
    high_open: bool = False
    identity: float | None = None
    integer: bool = False
    stored_units: bool = False
    fractions: tuple[float, ...] | None = None
    seeded: bool = True

    def valid_range(self) -> str:
        """The valid severity range as text, e.g. "[0, inf) σ, stored units (HU on CT)"."""
        lo = f"{'(' if self.low_open else '['}{self.low:g}"
        hi = f"{self.high:g}{')' if self.high_open or math.isinf(self.high) else ']'}"
        return f"{lo}, {hi}{' (whole numbers)' if self.integer else ''} {self.unit}"


# ---------------------------------------------------------------------------------------------
# the transforms: each maps one C×H×W float32 CPU image to a C×H×W float tensor (not yet clamped)


def _monai(module: str, *names: str):
    """Import ``names`` from MONAI (an optional dependency: ``pip install 'oncorobust[monai]'``)."""
    try:
        mod = __import__(module, fromlist=list(names))
    except ImportError:
        raise CorruptionError("this corruption uses MONAI, which is not installed: "
                              "pip install 'oncorobust[monai]' (or monai>=1.3)") from None
    got = tuple(getattr(mod, n) for n in names)
    return got if len(got) > 1 else got[0]


def _gaussian_noise(img: torch.Tensor, s: float, ctx: _Ctx) -> torch.Tensor:
    RandGaussianNoise = _monai("monai.transforms", "RandGaussianNoise")

    t = RandGaussianNoise(prob=1.0, mean=0.0, std=s / ctx.units_per_pixel, sample_std=False)
    t.set_random_state(state=ctx.random_state())
    return torch.as_tensor(t(img)).float()


def _rician_noise(img: torch.Tensor, s: float, ctx: _Ctx) -> torch.Tensor:
    RandRicianNoise = _monai("monai.transforms", "RandRicianNoise")

    t = RandRicianNoise(prob=1.0, mean=0.0, std=s / ctx.units_per_pixel, channel_wise=False,
                        relative=False, sample_std=False)
    t.set_random_state(state=ctx.random_state())
    return torch.as_tensor(t(img.clone())).float()


def _blur_sigma_px(s: float, ctx: _Ctx) -> float:
    fwhm_px = s / ctx.spacing_mm if ctx.spacing_mm else s
    return fwhm_px / FWHM_PER_SIGMA


def _gaussian_blur(img: torch.Tensor, s: float, ctx: _Ctx) -> torch.Tensor:
    gaussian_1d, separable_filtering = _monai("monai.networks.layers", "gaussian_1d", "separable_filtering")

    sigma = _blur_sigma_px(s, ctx)
    k = gaussian_1d(torch.tensor(sigma), truncated=4.0, approx="scalespace", normalize=True)
    pad = (k.numel() - 1) // 2
    mode = "reflect" if pad < min(img.shape[-2:]) else "replicate"
    return separable_filtering(img[None].float(), [k, k], mode=mode)[0]


def _contrast(img: torch.Tensor, s: float, ctx: _Ctx) -> torch.Tensor:
    if img.shape[0] in (1, 3):
        import torchvision.transforms.functional as TF

        return TF.adjust_contrast(img, s)
    m = img.mean()
    return m + s * (img - m)


def _window_shift(img: torch.Tensor, s: float, ctx: _Ctx) -> torch.Tensor:
    return img + s / ctx.units_per_pixel


def _bias_field(img: torch.Tensor, s: float, ctx: _Ctx) -> torch.Tensor:
    RandBiasField = _monai("monai.transforms", "RandBiasField")

    t = RandBiasField(degree=3, coeff_range=(-1.0, 1.0), prob=1.0, dtype=np.float64)
    t.set_random_state(state=ctx.random_state())
    ones = torch.ones((1, *img.shape[-2:]), dtype=torch.float64)
    log_gain = torch.log(torch.as_tensor(t(ones), dtype=torch.float64)[0])
    peak = float(log_gain.abs().max())
    if peak == 0.0:  # a degenerate all-zero draw: no field
        return img
    gain = torch.exp(log_gain * (s / peak))
    return (img.double() * gain).float()


def _gibbs(img: torch.Tensor, s: float, ctx: _Ctx) -> torch.Tensor:
    GibbsNoise = _monai("monai.transforms", "GibbsNoise")

    return torch.as_tensor(GibbsNoise(alpha=s)(img)).float()


def _spike_location(shape: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
    """A k-space location (fftshifted indices) 10–40 % of the matrix away from the centre."""
    h, w = shape
    c = (h // 2, w // 2)
    for _ in range(100):
        theta = rng.uniform(0.0, 2.0 * math.pi)
        r = rng.uniform(0.10, 0.40) * min(h, w)
        loc = (c[0] + int(round(r * math.sin(theta))), c[1] + int(round(r * math.cos(theta))))
        if loc != c and 0 <= loc[0] < h and 0 <= loc[1] < w:
            return loc
    return (c[0], (c[1] + 1) % w)


def _kspace_spike(img: torch.Tensor, s: float, ctx: _Ctx) -> torch.Tensor:
    KSpaceSpikeNoise = _monai("monai.transforms", "KSpaceSpikeNoise")

    h, w = img.shape[-2:]
    loc = _spike_location((h, w), ctx.rng())
    # |spike| = s·H·W puts a stripe pattern of amplitude s (in [0,1] units) into the image
    t = KSpaceSpikeNoise(loc=loc, k_intensity=math.log(s * h * w))
    return torch.as_tensor(t(img.double())).float()


def kspace_motion(img: np.ndarray, shift_px: tuple[float, float], t: float, axis: int) -> np.ndarray:
    """Rigid in-plane translation during a linear Cartesian acquisition, simulated in k-space.

    The phase-encode lines along ``axis`` are acquired in order of frequency (−N/2 … N/2−1); the
    lines acquired at or after fraction ``t`` of the acquisition come from the image translated by
    ``shift_px`` (a linear phase ramp), the others from the image at rest. The magnitude of the
    inverse FFT is returned (a magnitude MR image). MONAI has no motion transform and TorchIO
    (``RandomMotion``, which also rotates) is not installed, hence this small function.

    Args:
        img: C×H×W real array.
        shift_px: (dy, dx) translation in pixels (fractions allowed, periodic boundary).
        t: fraction of the acquisition in [0, 1] when the patient moves (0: every line moved, i.e.
            a pure translation; 1: no line moved).
        axis: 0 (lines along H) or 1 (along W): the phase-encode direction.

    Returns:
        C×H×W float64 array ≥ 0.
    """
    k = np.fft.fft2(np.asarray(img, dtype=np.float64), axes=(-2, -1))
    ky = np.fft.fftfreq(k.shape[-2])[:, None]
    kx = np.fft.fftfreq(k.shape[-1])[None, :]
    moved = k * np.exp(-2j * math.pi * (ky * shift_px[0] + kx * shift_px[1]))
    f = np.fft.fftfreq(k.shape[-2 + axis])
    when = np.argsort(np.argsort(f, kind="stable"), kind="stable") / len(f)  # acquisition time
    late = when >= t
    late = late[:, None] if axis == 0 else late[None, :]
    return np.abs(np.fft.ifft2(np.where(late, moved, k), axes=(-2, -1)))


def kspace_ghosts(img: np.ndarray, intensity: float, n_ghosts: int, axis: int) -> np.ndarray:
    """Ghosting: every ``n_ghosts``-th phase-encode line of k-space attenuated by 1 − intensity.

    With k-space lines k ≡ 0 (mod n) scaled by (1 − a), the image becomes
    x − (a/n)·Σ_j x shifted by j·N/n, so n − 1 ghosts of amplitude a/n appear N/n pixels apart
    along ``axis`` (and the image itself loses a/n). This is TorchIO's ``RandomGhosting`` model
    (without its restoration of the k-space centre); TorchIO is not installed and MONAI has no
    ghosting transform, hence this small function. The magnitude image is returned.

    Args:
        img: C×H×W real array.
        intensity: a in [0, 1].
        n_ghosts: n ≥ 2, the line period.
        axis: 0 (ghosts along H) or 1 (along W).

    Returns:
        C×H×W float64 array ≥ 0.
    """
    k = np.fft.fft2(np.asarray(img, dtype=np.float64), axes=(-2, -1))
    idx: list = [slice(None)] * k.ndim
    idx[k.ndim - 2 + axis] = slice(0, None, n_ghosts)
    k[tuple(idx)] *= 1.0 - intensity
    return np.abs(np.fft.ifft2(k, axes=(-2, -1)))


#: Line period of :func:`kspace_ghosts` used by the ``ghosting`` corruption.
N_GHOSTS = 4


def _motion(img: torch.Tensor, s: float, ctx: _Ctx) -> torch.Tensor:
    rng = ctx.rng()
    theta = rng.uniform(0.0, 2.0 * math.pi)
    t = rng.uniform(0.35, 0.65)
    axis = int(rng.integers(0, 2))
    out = kspace_motion(img.double().numpy(), (s * math.sin(theta), s * math.cos(theta)), t, axis)
    return torch.from_numpy(out).float()


def _ghosting(img: torch.Tensor, s: float, ctx: _Ctx) -> torch.Tensor:
    axis = int(ctx.rng().integers(0, 2))
    return torch.from_numpy(kspace_ghosts(img.double().numpy(), s, N_GHOSTS, axis)).float()


def _downsample(img: torch.Tensor, s: float, ctx: _Ctx) -> torch.Tensor:
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    h, w = img.shape[-2:]
    small = [max(1, int(round(h / s))), max(1, int(round(w / s)))]
    down = TF.resize(img, small, interpolation=InterpolationMode.BILINEAR, antialias=True)
    return TF.resize(down, [h, w], interpolation=InterpolationMode.BILINEAR, antialias=False)


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    return np.round(img.clamp(0, 1).double().numpy() * 255.0).astype(np.uint8)


def _pillow_roundtrip(img: torch.Tensor, fmt: str, **kw) -> torch.Tensor:
    """Encode and decode with Pillow, 8 bits per sample: RGB for 3 channels, else per channel."""
    from PIL import Image

    a = _to_uint8(img)

    def trip(arr: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, fmt, **kw)
        with Image.open(io.BytesIO(buf.getvalue())) as im:
            return np.asarray(im.convert("RGB" if arr.ndim == 3 else "L"))

    if a.shape[0] == 3:
        out = trip(np.ascontiguousarray(a.transpose(1, 2, 0))).transpose(2, 0, 1)
    else:
        out = np.stack([trip(np.ascontiguousarray(ch)) for ch in a])
    return torch.from_numpy(out.astype(np.float32) / 255.0)


def _jpeg(img: torch.Tensor, s: float, ctx: _Ctx) -> torch.Tensor:
    return _pillow_roundtrip(img, "JPEG", quality=int(s))


def _jpeg2000(img: torch.Tensor, s: float, ctx: _Ctx) -> torch.Tensor:
    return _pillow_roundtrip(img, "JPEG2000", quality_mode="dB", quality_layers=[float(s)],
                             irreversible=True)


# ---------------------------------------------------------------------------------------------
# the registry

_NOISE_FRACTIONS = (0.01, 0.02, 0.04, 0.08, 0.16)

CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in [
    Corruption(
        "gaussian_noise", "σ, stored units (HU on CT)", ("ct", "mammo", "control"),
        "MONAI RandGaussianNoise", (5.0, 10.0, 20.0, 40.0, 80.0),
        "Additive white Gaussian noise of standard deviation σ in stored units (a lower dose: CT "
        "noise is ≈ 10–20 HU at a standard dose and grows as 1/√dose); σ / units_per_pixel in [0,1] "
        "units. Defaults: 5–80 HU on CT, 1–16 % of the [0,1] range elsewhere.",
        0.0, math.inf, _gaussian_noise, identity=0.0, stored_units=True, fractions=_NOISE_FRACTIONS),
    Corruption(
        "rician_noise", "σ, stored units", ("mri",), "MONAI RandRicianNoise",
        (5.0, 10.0, 20.0, 40.0, 80.0),
        "Rician noise of a magnitude MR image: |x + n₁ + i·n₂| with n₁, n₂ Gaussian of standard "
        "deviation σ (stored units) in the real and imaginary channels; the background becomes "
        "Rayleigh (mean σ·√(π/2)), bright tissue sees ≈ Gaussian σ. Defaults: 1–16 % of the range.",
        0.0, math.inf, _rician_noise, identity=0.0, stored_units=True, fractions=_NOISE_FRACTIONS),
    Corruption(
        "gaussian_blur", "FWHM px (mm when spacing_mm is given)", MODALITIES,
        "MONAI gaussian_1d + separable_filtering", (1.0, 1.5, 2.0, 3.0, 4.0),
        "Gaussian point-spread function of the given full width at half maximum (a softer "
        "reconstruction kernel, defocus, a larger focal spot); σ = FWHM / 2.3548. The discrete "
        "('scalespace') kernel has variance exactly σ², so a blurred point's measured "
        "second-moment FWHM equals the severity. With spacing_mm (the model input's pixel size) "
        "the severity is in mm.",
        0.0, math.inf, _gaussian_blur, identity=0.0, seeded=False),
    Corruption(
        "contrast", "× (contrast factor)", MODALITIES, "torchvision adjust_contrast",
        (0.8, 0.6, 0.4, 0.3, 0.2),
        "Intensities scaled by the factor around the image's mean (a wider display window, "
        "a lower tube voltage's flatter contrast): x' = m + c·(x − m); c = 1 is the identity, "
        "c < 1 lowers contrast, c > 1 raises it.",
        0.0, math.inf, _contrast, identity=1.0, seeded=False),
    Corruption(
        "window_shift", "stored units (HU on CT)", ("ct", "mammo"), "oncorobust (one addition)",
        (10.0, 25.0, 50.0, 100.0, 200.0),
        "Every stored value shifted by the given amount (a calibration offset, or the window "
        "level moved by minus that amount): x' = x + shift / units_per_pixel. Defaults: 10–200 HU "
        "on CT, 1–20 % of the range on mammography.",
        -math.inf, math.inf, _window_shift, low_open=True, identity=0.0, stored_units=True,
        fractions=(0.01, 0.025, 0.05, 0.1, 0.2), seeded=False),
    Corruption(
        "bias_field", "peak |ln gain|", ("mri",), "MONAI RandBiasField (rescaled)",
        (0.05, 0.1, 0.2, 0.3, 0.5),
        "Smooth multiplicative MR intensity non-uniformity: a random 3rd-degree Legendre "
        "polynomial log-field (MONAI RandBiasField's shape, drawn from the image's seed) scaled so "
        "that its largest |ln gain| equals the severity: 0.2 → gains within [0.82, 1.22].",
        0.0, math.inf, _bias_field, identity=0.0),
    Corruption(
        "gibbs_ringing", "α (k-space truncation)", ("mri",), "MONAI GibbsNoise",
        (0.4, 0.5, 0.6, 0.7, 0.8),
        "Truncation of k-space to a disc (MONAI GibbsNoise): frequencies farther than "
        "(1 − α)·√2 of the Nyquist frequency from the centre are zeroed, giving ringing at edges "
        "(α = 0 keeps everything; α = 0.5 keeps radius 0.71 Nyquist; α = 0.8 keeps 0.28). "
        "MONAI centres the disc half a pixel off the DC and keeps the real part of the result, "
        "so the kept region is the disc and its mirror image about the DC.",
        0.0, 1.0, _gibbs, identity=0.0, seeded=False),
    Corruption(
        "kspace_spike", "stripe amplitude, fraction of [0,1]", ("mri",), "MONAI KSpaceSpikeNoise",
        (0.01, 0.02, 0.05, 0.1, 0.2),
        "One k-space spike (a herringbone artefact) at a location drawn from the image's seed, "
        "10–40 % of the matrix from the centre, with magnitude s·H·W: a stripe pattern of "
        "amplitude s (× units_per_pixel stored units) over the image.",
        0.0, math.inf, _kspace_spike, identity=0.0),
    Corruption(
        "motion", "px displacement", ("mri",), "oncorobust k-space (no MONAI / TorchIO here)",
        (0.5, 1.0, 2.0, 4.0, 8.0),
        "A rigid in-plane translation of the given number of pixels (direction drawn from the "
        "seed) when 35–65 % of a linear Cartesian acquisition is done (time and phase-encode axis "
        "drawn from the seed): the later k-space lines see the moved patient.",
        0.0, math.inf, _motion, identity=0.0),
    Corruption(
        "ghosting", "ghost intensity a", ("mri",), "oncorobust k-space (no MONAI / TorchIO here)",
        (0.2, 0.4, 0.6, 0.8, 1.0),
        f"Every {N_GHOSTS}th phase-encode line attenuated by 1 − a (periodic motion, e.g. "
        f"breathing): {N_GHOSTS - 1} ghosts of amplitude a/{N_GHOSTS} appear N/{N_GHOSTS} pixels "
        "apart along the phase-encode axis (drawn from the seed).",
        0.0, 1.0, _ghosting, identity=0.0),
    Corruption(
        "downsample", "× (pixel-size factor)", MODALITIES, "torchvision resize",
        (1.5, 2.0, 3.0, 4.0, 6.0),
        "Acquisition at a coarser matrix: resized to 1/f of the size (bilinear, antialiased) and "
        "back (bilinear); f = 1 is the identity.",
        1.0, math.inf, _downsample, identity=1.0, seeded=False),
    Corruption(
        "jpeg", "JPEG quality", MODALITIES, "Pillow (libjpeg)", (75.0, 50.0, 30.0, 15.0, 7.0),
        "Lossy JPEG (baseline DCT) at the given quality (1–100, lower is worse), 8 bits per "
        "sample: the image is also rounded to 256 levels (≤ 0.5/255 of the range, i.e. "
        "0.5·units_per_pixel/255 stored units, even at quality 100).",
        1.0, 100.0, _jpeg, integer=True, seeded=False),
    Corruption(
        "jpeg2000", "PSNR dB target", ("ct", "mammo", "mri"), "Pillow (OpenJPEG)",
        (45.0, 40.0, 35.0, 30.0, 25.0),
        "Lossy JPEG 2000 (9/7 wavelet) with one quality layer at the given PSNR target in dB "
        "(OpenJPEG's distortion mode: the RMS error is ≈ 10^(−dB/20) of the [0,1] range; "
        "40 dB ≈ 1 %), 8 bits per sample; OpenJPEG stops at a coding pass, so the achieved PSNR "
        "lies at or up to ≈ 2 dB below the target. A PSNR target is used rather than a compression "
        "ratio: on small crops OpenJPEG's ~250-byte header makes ratios above ≈ H·W/260 "
        "unreachable, while a PSNR target means the same at every size.",
        0.0, 100.0, _jpeg2000, low_open=True, seeded=False),
]}


def _agrees_with_spec() -> None:
    """The registry must agree with the torch-free :data:`oncorobust.spec.CORRUPTION_KINDS` (what the
    config checks and the workflow's job list read): names, modalities, defaults and ranges."""
    if list(CORRUPTIONS) != list(CORRUPTION_KINDS):
        raise ImportError(f"corruptions.CORRUPTIONS {list(CORRUPTIONS)} and spec.CORRUPTION_KINDS "
                          f"{list(CORRUPTION_KINDS)} list different corruptions")
    for n, c in CORRUPTIONS.items():
        k = CORRUPTION_KINDS[n]
        for f in ("modalities", "severities", "low", "high", "stored_units", "fractions", "low_open",
                  "high_open", "integer"):
            if getattr(c, f) != getattr(k, f):
                raise ImportError(f"corruption {n!r}: {f} is {getattr(c, f)!r} here but "
                                  f"{getattr(k, f)!r} in oncorobust.spec.CORRUPTION_KINDS")


_agrees_with_spec()


def corruption(name: str) -> Corruption:
    """The registry entry of one corruption.

    Args:
        name: a key of :data:`CORRUPTIONS`.

    Returns:
        Its :class:`Corruption`.

    Raises:
        CorruptionError: unknown name (the message lists the known ones).
    """
    try:
        return CORRUPTIONS[name]
    except (KeyError, TypeError):
        raise CorruptionError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}") from None


def _check_units(units_per_pixel) -> float:
    if isinstance(units_per_pixel, bool) or not isinstance(units_per_pixel, numbers.Real) \
            or not math.isfinite(units_per_pixel) or units_per_pixel <= 0:
        raise CorruptionError(f"units_per_pixel must be a finite number > 0 (stored units per unit of "
                              f"[0,1] intensity), got {units_per_pixel!r}")
    return float(units_per_pixel)


def check_severity(name: str, severity) -> float:
    """Validate a severity for a corruption.

    Args:
        name: a key of :data:`CORRUPTIONS`.
        severity: a real number in the corruption's unit.

    Returns:
        The severity as a float.

    Raises:
        CorruptionError: unknown name, or a severity that is not a finite real number inside the
            corruption's range (the message names the corruption and the valid range).
    """
    c = corruption(name)
    ok = (not isinstance(severity, bool) and isinstance(severity, numbers.Real)
          and math.isfinite(float(severity)))
    if ok:
        s = float(severity)
        ok = ((s > c.low if c.low_open else s >= c.low) and (s < c.high if c.high_open else s <= c.high)
              and (not c.integer or s == int(s)))
    if not ok:
        raise CorruptionError(f"corruption {name!r}: severity {severity!r} is outside its valid range "
                              f"{c.valid_range()}")
    return float(severity)


def _check_seeds(seeds, n: int) -> list[int]:
    try:
        seeds = list(seeds)
    except TypeError:
        raise CorruptionError(f"seeds must be a sequence of {n} non-negative ints, got {seeds!r}") from None
    if len(seeds) != n:
        raise CorruptionError(f"{len(seeds)} seeds for {n} images: give one seed per image")
    out = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or int(s) < 0:
            raise CorruptionError(f"seeds must be non-negative ints, got {s!r}")
        out.append(int(s))
    return out


def _check_images(x) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        desc = f"{type(x).__name__} of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise CorruptionError(f"images must be an N×C×H×W float tensor, got {desc}")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise CorruptionError("images hold NaN or infinite values")
    if x.numel() and (float(x.min()) < -1e-6 or float(x.max()) > 1 + 1e-6):
        raise CorruptionError(f"images must lie in [0,1], got [{float(x.min()):g}, {float(x.max()):g}]")


def corrupt(x: torch.Tensor, name: str, severity: float, *, seeds: Sequence[int],
            units_per_pixel: float = 1.0, spacing_mm: float | None = None) -> torch.Tensor:
    """Apply one natural corruption at one severity to a batch of images.

    Args:
        x: N×C×H×W float images in [0,1] (any device; computed on the CPU).
        name: a key of :data:`CORRUPTIONS`.
        severity: in the corruption's unit (``CORRUPTIONS[name].unit``), inside its valid range.
        seeds: N non-negative ints, one per image (e.g. ``image_seeds(ids, n, seed)``); image i
            uses seeds[i] alone, so its result does not depend on the batch.
        units_per_pixel: stored units (HU, grey levels) per unit of [0,1] intensity; divides
            stored-unit severities (gaussian_noise, rician_noise, window_shift).
        spacing_mm: pixel size of the model input in mm; when given, gaussian_blur's severity is a
            FWHM in mm rather than pixels.

    Returns:
        N×C×H×W float32 tensor in [0,1] on ``x``'s device. At the identity severity (if the
        corruption has one) the input itself, as float32.

    Raises:
        CorruptionError: unknown name, bad severity (the message gives the valid range), images
            not N×C×H×W in [0,1], seeds not one non-negative int per image, bad units_per_pixel
            or spacing_mm.
    """
    c = corruption(name)
    s = check_severity(name, severity)
    _check_images(x)
    seeds = _check_seeds(seeds, x.shape[0])
    upp = _check_units(units_per_pixel)
    if spacing_mm is not None and (isinstance(spacing_mm, bool) or not isinstance(spacing_mm, numbers.Real)
                                   or not math.isfinite(spacing_mm) or spacing_mm <= 0):
        raise CorruptionError(f"spacing_mm must be a finite number > 0 (mm per pixel) or None, got {spacing_mm!r}")
    xc = x.detach().to("cpu", torch.float32)
    if c.identity is not None and s == c.identity:
        return xc.clamp(0, 1).to(x.device)
    out = torch.empty_like(xc)
    for i in range(xc.shape[0]):
        ctx = _Ctx(seed=seeds[i], name=c.name, units_per_pixel=upp,
                   spacing_mm=float(spacing_mm) if spacing_mm is not None else None)
        y = c.apply(xc[i].clone(), s, ctx)
        out[i] = torch.as_tensor(y).reshape(xc[i].shape).to(torch.float32)
    return out.nan_to_num_(0.0).clamp_(0, 1).to(x.device)


def linf(x: torch.Tensor, x_c: torch.Tensor) -> torch.Tensor:
    """Measured ‖δ‖∞ of each corrupted image, in [0,1] units (× units_per_pixel for stored units).

    Args:
        x: N×C×H×W clean images.
        x_c: the corrupted images, same shape.

    Returns:
        float32 tensor of shape (N,) on ``x``'s device: max |x_c − x| per image.

    Raises:
        CorruptionError: the shapes differ or are not N×C×H×W.
    """
    if not (isinstance(x, torch.Tensor) and isinstance(x_c, torch.Tensor)) or x.ndim != 4 \
            or tuple(x.shape) != tuple(x_c.shape):
        sx = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        sc = tuple(x_c.shape) if isinstance(x_c, torch.Tensor) else type(x_c).__name__
        raise CorruptionError(f"linf: clean and corrupted images must both be N×C×H×W of one shape, "
                              f"got {sx} and {sc}")
    d = (x_c.to(x.device, torch.float32) - x.to(torch.float32)).abs()
    return d.flatten(1).amax(dim=1) if d.shape[0] and d[0].numel() else torch.zeros(d.shape[0], device=x.device)


# ---------------------------------------------------------------------------------------------
# scoring a model under one corruption (the per-image CSV of the workflow's corrupt jobs)

# What a per-image corruption CSV holds: the attack CSVs' scores
# (:data:`oncorobust.evaluation.evaluate.COLUMNS`; ``adv_pred``/``adv_prob`` on the corrupted
# image, ``linf``/``l2`` its measured ‖δ‖∞/‖δ‖₂ in [0,1] units, PSNR and SSIM, the logits
# ``clean_logit_<k>``/``adv_logit_<k>``), then the key: the scored model's regime (``regime``), the
# method ``corrupt_<name>`` (``method``), the severity (``severity``) and its unit (``unit``).


class CorruptionSanityError(CorruptionError):
    """A corrupted batch or the model's outputs on it failed a check (not finite, outside [0,1])."""


def _units_per_image(units_per_pixel, n: int) -> np.ndarray:
    if isinstance(units_per_pixel, numbers.Real) and not isinstance(units_per_pixel, bool):
        return np.full(n, _check_units(units_per_pixel))
    try:
        upp = np.asarray(units_per_pixel, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise CorruptionError(f"units_per_pixel must be a number or one number per image, got "
                              f"{units_per_pixel!r}") from None
    if upp.shape != (n,):
        raise CorruptionError(f"{upp.size} units_per_pixel values for {n} images: give one per image or one for all")
    for v in upp:
        _check_units(float(v))
    return upp


def severity_unit(name: str, stored_unit: str | None = None, spacing_mm: float | None = None) -> str:
    """The unit of a corruption's severity as a result file states it.

    Args:
        name: a key of :data:`CORRUPTIONS`.
        stored_unit: the data's stored unit ("HU", "grey level"); replaces the generic "stored
            units" of noise σ and window shifts.
        spacing_mm: given: gaussian_blur's FWHM is in mm, else in pixels.

    Returns:
        e.g. "σ, HU", "σ, grey level", "FWHM px", "JPEG quality".
    """
    c = corruption(name)
    if name == "gaussian_blur":
        return "FWHM mm" if spacing_mm is not None else "FWHM px"
    if c.stored_units and stored_unit:
        return re.sub(r"stored units( \(HU on CT\))?", str(stored_unit), c.unit)
    return c.unit


def evaluate_corruption(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str],
                        name: str, severity: float, *, units_per_pixel=1.0, seed: int = 0,
                        batch_size: int = 128, device: torch.device | str = "cpu",
                        spacing_mm: float | None = None, regime: str | None = None,
                        stored_unit: str | None = None):
    """Score ``model`` on the test images corrupted by ``name`` at ``severity``, one row per image.

    Args:
        model: the classifier scored (put in eval mode here).
        x: N×C×H×W float32 test images in [0,1]; ``y``: N true labels; ``ids``: N sample IDs.
        name: a key of :data:`CORRUPTIONS`.
        severity: in the corruption's unit (``CORRUPTIONS[name].unit``).
        units_per_pixel: stored units (HU, grey levels) per unit of [0,1] intensity: one number,
            or one per image (each image's own span, ``tensors/noise.csv``), dividing stored-unit
            severities (gaussian_noise, rician_noise, window_shift).
        seed: the run's seed; image i's draws come from ``image_seeds(ids, N, seed)[i]`` alone, so
            the result does not depend on ``batch_size``.
        batch_size: images corrupted and scored at once.
        device: where the model runs (the corruption itself runs on the CPU).
        spacing_mm: the model input's pixel size in mm (gaussian_blur's FWHM is then in mm).
        regime: written in the ``regime`` column when given.
        stored_unit: the data's stored unit (``stats.json`` ``eps_units.unit``: "HU", "grey
            level"), named in the ``unit`` column of stored-unit corruptions.

    Returns:
        A DataFrame with the attack CSVs' columns (sample_id, label, clean_pred, adv_pred,
        clean_prob, adv_prob, linf, l2, psnr, ssim: ``adv_*`` on the corrupted image, ``linf`` and
        ``l2`` its measured ‖δ‖∞ and ‖δ‖₂ in [0,1] units, ``psnr``/``ssim`` how visible it is,
        :mod:`oncorobust.evaluation.visibility`), the logits ``clean_logit_<k>`` and ``adv_logit_<k>``
        (on the corrupted image; a corruption has no label to push away from, so there are no
        ``true_adv_logit_<k>``) and then ``regime`` (when given), ``method`` (``corrupt_<name>``),
        ``severity`` and ``unit`` (the severity's unit, :func:`severity_unit`).

    Raises:
        CorruptionError: unknown name, bad severity, images, ids or units.
        CorruptionSanityError: a corrupted image outside [0,1] or not finite, or non-finite model
            outputs.
    """
    from oncorobust.attacks.kernels import image_seeds
    from oncorobust.device import eval_mode, strict_fp32
    from oncorobust.evaluation.evaluate import COLUMNS
    from oncorobust.evaluation.scores import logit_columns, logits_of, pred_and_prob
    from oncorobust.evaluation.visibility import visibility
    import pandas as pd

    c = corruption(name)
    s = check_severity(name, severity)
    _check_images(x)
    if len(ids) != len(x) or len(y) != len(x):
        raise CorruptionError(f"{len(x)} images, {len(y)} labels and {len(ids)} IDs: need one each per image")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise CorruptionError(f"batch_size must be a positive int, got {batch_size!r}")
    upp = _units_per_image(units_per_pixel, len(x))
    seeds = image_seeds([str(i) for i in ids], len(x), seed)
    model = model.to(device)
    rows = []
    with strict_fp32(), eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(torch.float32)
            sb, ub = seeds[i:i + batch_size], upp[i:i + batch_size]
            xc = torch.empty_like(xb)
            for u in np.unique(ub):  # images sharing a span corrupted together (each from its own seed)
                sel = np.flatnonzero(ub == u)
                xc[sel] = corrupt(xb[sel], name, s, seeds=[sb[j] for j in sel], units_per_pixel=float(u),
                                  spacing_mm=spacing_mm).to("cpu")
            if not bool(torch.isfinite(xc).all()) or float(xc.min()) < 0 or float(xc.max()) > 1:
                raise CorruptionSanityError(f"{name} at severity {s:g}: corrupted images not finite or outside [0,1]")
            xd, xcd = xb.to(device), xc.to(device)
            clean_logits, adv_logits = logits_of(model, xd), logits_of(model, xcd)
            (clean_pred, clean_prob), (adv_pred, adv_prob) = pred_and_prob(clean_logits), pred_and_prob(adv_logits)
            if not (bool(torch.isfinite(clean_prob).all()) and bool(torch.isfinite(adv_prob).all())):
                raise CorruptionSanityError(f"{name} at severity {s:g}: the model's outputs are not finite")
            d = linf(xb, xc)
            if len(d) and float(d.max()) > 1 + 1e-6:
                raise CorruptionSanityError(f"{name} at severity {s:g}: ‖δ‖∞ above 1")
            rows.append(pd.DataFrame({
                "sample_id": [str(k) for k in ids[i:i + batch_size]], "label": y[i:i + batch_size].cpu().numpy(),
                "clean_pred": clean_pred.cpu().numpy(), "adv_pred": adv_pred.cpu().numpy(),
                "clean_prob": clean_prob.cpu().numpy(), "adv_prob": adv_prob.cpu().numpy(),
                "linf": d.cpu().numpy(), **visibility(xb.cpu().numpy(), xc.cpu().numpy()),
                **logit_columns("clean", clean_logits), **logit_columns("adv", adv_logits)}))
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=COLUMNS)
    if regime is not None:
        out["regime"] = str(regime)
    out["method"] = corruption_method(name)
    out["severity"] = s
    out["unit"] = severity_unit(name, stored_unit, spacing_mm)
    return out
