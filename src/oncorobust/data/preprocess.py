"""Preprocess: lesion-centred crop → intensity scaling to [0,1] → resize → balanced tensors.

Per split, ``results/{ds}/tensors/{split}.pt`` holds ``{"x": float32 N×C×H×W in [0,1],
"y": int64 N, "ids": list[str]}``; ``stats.json`` the train-set channel mean/std (the model's
own Normalize layer uses them), class counts and what was skipped.

Checks on the decoded pixels of file-based sources (every bad case names the file):

- ``preprocess.color: rgb`` keeps colour images as three channels (C = 3; grey files repeated);
  ``luminance`` (default) converts colour to one grey channel, as before.
- an image smaller than 8 pixels on a side is refused (an :class:`ImageError`, so ``on_bad_file``
  lists it in ``tensors/skipped.csv`` or stops the run), and so is an image larger than the size
  guard (2^28 pixels, or 2^29 values in a multi-frame file: "image too large (W×H px, ...)"),
  checked from the file's header before its pixels are decoded;
- a split left without any image of a class once unreadable files are skipped is an
  :class:`UnusableSplitError` naming the class, its folder and the first reasons; it, like every
  error raised here, carries the skipped frame as ``exc.skipped`` (for ``tensors/skipped.csv``);
- the same pixel content (SHA-256 of the decoded array) under two patients is a
  :class:`DataError` naming both rows: a split by patient ID would leak it;
- ``intensity.mode: bitdepth`` scales integer images by their bit depth (8-bit: [0, 255];
  16/32-bit: [0, 2^k − 1], k ≥ 8 the fewest bits that hold the dataset's largest value);
- a fixed window (``mode: window``; ``mode: none`` is the window [0, 1]) that clips more than 1%
  of an image's pixels is logged and listed in ``tensors/skipped.csv`` with stage ``clipped``
  (the image is kept); more than ``intensity.max_clipped`` (default 50%) is an
  :class:`IntensityError`; ``mode: none`` on integer images is refused.

Per-image noise (:func:`preprocess_with_noise`, written to ``tensors/noise.csv`` beside the
tensors, which it leaves unchanged): for file sources, each crop's noise standard deviation σ in
**stored units** (HU for CT, grey levels otherwise), estimated with
:func:`oncorobust.data.noise.estimate_noise_sigma` on the crop **as stored: before intensity
scaling and before resizing** (resizing averages noise away; at the model's input size σ would be
smaller), and the image's ``span``: the stored units mapped onto [0,1] (the window width, the
crop's percentile range, the bit-depth window). ``sigma_px = sigma / span`` is σ in [0,1]
model-input units (for an image resized by a factor, this is the stored-resolution σ, not the
resized image's), so an image's flipping ε is ``eps / sigma_px`` of its own noise
(:func:`oncorobust.data.noise.sigma_multiple`: NaN below one stored step). Array sources
(digits, MNIST, CIFAR-10) record their levels as the span and σ = NaN: rendered digits and
photographs have no scanner noise to compare with.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from oncorobust.checks import ON_BAD_FILE, check_choice
from oncorobust.data.dicom import DicomPlausibilityWarning
from oncorobust.data.noise import NoiseEstimateError, estimate_noise_sigma
from oncorobust.errors import DataError, DicomError, OncorobustError
from oncorobust.data.sources import ARRAY_FORMATS, source_root
from oncorobust.data.sources.arrays import load_arrays
from oncorobust.data.sources.images import COLORS, DecodedImage, decode_image, require_min_side, whole_image
from oncorobust.spec import ARRAY_LEVELS

log = logging.getLogger("oncorobust.data.preprocess")

LUNG_WINDOW = (-1350.0, 150.0)  # HU: level -600, width 1500
INTENSITY_MODES = ("window", "percentile", "bitdepth", "none")
#: share of an image's pixels a fixed window may clip before the image is noted (logged and listed)
CLIP_NOTE = 0.01
#: default of ``intensity.max_clipped``: above it a fixed window stops preprocess
CLIP_ERROR = 0.5


#: columns of the skipped frame (``tensors/skipped.csv``)
SKIPPED_COLUMNS = ["stage", "file", "sample_id", "reason"]


class UnusableSplitError(DataError):
    """A split is left without any image of a class (or without any image) once unreadable files
    were skipped. ``skipped`` is the skipped frame so far (:data:`SKIPPED_COLUMNS`), for the caller
    to write ``tensors/skipped.csv`` before stopping (every error of :func:`preprocess_with_noise`
    carries it as ``exc.skipped``)."""

    def __init__(self, message: str, skipped: pd.DataFrame) -> None:
        super().__init__(message)
        self.skipped = skipped


class IntensityError(DataError):
    """The intensity scaling does not fit an image: a window that clips most of it, ``mode: none``
    on integer grey levels, ``mode: bitdepth`` on data without a bit depth."""


def crop_square(image: np.ndarray, centre: tuple[float, float], side: int, sample: str = "") -> np.ndarray:
    """A side×side crop of the (H, W) or (H, W, C) ``image`` centred on (row, col) in pixels;
    pads with the image minimum where the window leaves the image. A centre outside the image is
    a DataError.

    Args:
        image: (H, W) or (H, W, C) raw pixels (stored units).
        centre: (row, col) of the crop's centre in pixels.
        side: the crop's side in pixels.
        sample: the sample named in the message.

    Returns:
        The side×side (×C) crop, in the image's dtype and units.

    Raises:
        DataError: ``centre`` lies outside the image.
    """
    h, w = image.shape[:2]
    r, c = centre
    if not (0 <= r < h and 0 <= c < w):
        raise DataError(f"{sample}: ROI centre (row {r:.1f}, col {c:.1f}) lies outside the"
                        f" {h}x{w} image; check the annotation / manifest row")
    top, left = int(round(r - side / 2)), int(round(c - side / 2))
    pad = max(0, -top, -left, top + side - h, left + side - w)
    if pad:
        widths = ((pad, pad), (pad, pad)) + ((0, 0),) * (image.ndim - 2)
        image = np.pad(image, widths, mode="constant", constant_values=float(image.min()))
        top, left = top + pad, left + pad
    return image[top: top + side, left: left + side]


def intensity_range(crop: np.ndarray, cfg: dict) -> tuple[float, float] | None:
    """The raw values mapped to 0 and 1 by :func:`scale_intensity` (None for ``mode: none``).

    Args:
        crop: the raw pixels (stored units, e.g. HU for CT).
        cfg: the intensity scaling (``mode``; ``window`` [lo, hi], default the lung window
            [-1350, 150] HU; ``percentiles``, default [1, 99]); any other mode reads as percentile.

    Returns:
        (lo, hi) in stored units, or None for ``mode: none``.
    """
    mode = cfg.get("mode", "percentile")
    if mode == "none":
        return None
    if mode == "window":
        lo, hi = cfg.get("window", LUNG_WINDOW)
    else:
        lo, hi = np.percentile(crop, cfg.get("percentiles", [1.0, 99.0]))
    return float(lo), float(hi)


def scale_intensity(crop: np.ndarray, cfg: dict) -> np.ndarray:
    """Map raw values to [0,1]: a fixed window (``mode: window``, e.g. HU), per-image robust
    percentiles (``mode: percentile``) or nothing (``mode: none``, data already in [0,1]).

    Args:
        crop: the raw pixels (stored units, e.g. HU for CT).
        cfg: the intensity scaling (see :func:`intensity_range`).

    Returns:
        The values scaled and clipped to [0,1], same shape; all zeros when hi <= lo.
    """
    rng = intensity_range(crop, cfg)
    if rng is None:
        return np.clip(crop, 0, 1)
    lo, hi = rng
    if hi <= lo:
        return np.zeros_like(crop)
    return np.clip((crop - lo) / (hi - lo), 0, 1)


#: Grey levels per [0,1] of the bundled/array sources (ε × levels = grey levels of the stored
#: data): :data:`oncorobust.spec.ARRAY_LEVELS`, imported above (the registry owns the list).

#: Columns of ``tensors/noise.csv``: one row per image in a tensors split; ``sigma`` the crop's
#: noise σ in ``unit`` (stored units, at the stored resolution, before scaling and resizing;
#: NaN for array sources or crops under 8 px), ``span`` the stored units mapped onto [0,1].
NOISE_COLUMNS = ["sample_id", "split", "sigma", "span", "unit"]


def crop_sigma(crop: np.ndarray) -> float:
    """Noise σ of one crop in its stored units: :func:`~oncorobust.data.noise.estimate_noise_sigma`
    of a (H, W) crop, the mean over channels of an (H, W, C) one; NaN when the crop cannot be
    used (smaller than 8 px on a side, not finite).

    Args:
        crop: the crop as stored (before intensity scaling and resizing), (H, W) or (H, W, C).

    Returns:
        σ in stored units (HU for CT, grey levels otherwise), or NaN.
    """
    a = np.asarray(crop)
    try:
        if a.ndim == 3:
            return float(np.mean([estimate_noise_sigma(a[..., k]) for k in range(a.shape[-1])]))
        return estimate_noise_sigma(a)
    except NoiseEstimateError:
        return float("nan")


def eps_units(source_format: str, intensity: dict, spans: list[float],
              levels: float | None = None) -> dict:
    """What ε = 1 means in the stored data, for tables and figure axes.

    Args:
        source_format: the dataset's ``source.format``.
        intensity: its ``preprocess.intensity`` block.
        spans: per image, the raw-value span (hi − lo) mapped onto [0,1] (percentile mode).
        levels: ``mode: bitdepth``: the grey levels mapped onto [0,1] (2^k − 1), None when the
            images have different bit depths.
    Returns:
        ``{"unit", "per_eps", "how", "step"}``: ε × ``per_eps`` is the perturbation in ``unit``;
        ``step`` is one stored-value step in that unit (an ε below ``step / per_eps`` cannot be
        written back into the stored image). ``per_eps`` is None when unknown.
    """
    mode = intensity.get("mode", "percentile")
    if mode == "window":
        lo, hi = intensity.get("window", LUNG_WINDOW)
        unit = "HU" if source_format == "lidc" else "stored value"
        return {"unit": unit, "per_eps": float(hi - lo), "how": f"window width {hi - lo:g} {unit}", "step": 1.0}
    if mode == "percentile":
        med = float(np.median(spans)) if len(spans) else None
        return {"unit": "grey level", "per_eps": med, "step": 1.0,
                "how": "median over images of the percentile span p_hi − p_lo in stored grey levels"}
    if mode == "bitdepth":
        return {"unit": "grey level", "per_eps": levels, "step": 1.0,
                "how": f"[0, {levels:g}]: the images' bit depth" if levels
                else "unknown: the images have different bit depths (mode bitdepth)"}
    levels = ARRAY_LEVELS.get(source_format)
    return {"unit": "grey level", "per_eps": levels, "step": 1.0,
            "how": f"{levels:g} grey levels of the source data" if levels else "unknown (intensity mode none)"}


def resize(image: np.ndarray, size: int, clamp: bool = True) -> torch.Tensor:
    """(H, W) or (H, W, C) array → C×size×size float32 tensor (bilinear, antialiased), clamped to
    [0,1] unless ``clamp`` is False (raw values, scaled later).

    Args:
        image: (H, W) or (H, W, C) pixels, in [0,1] (or raw values with ``clamp=False``).
        size: the output side in pixels.
        clamp: clamp the result to [0,1].

    Returns:
        A C×size×size float32 tensor (C = 1 for an (H, W) image).
    """
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    t = t.permute(2, 0, 1) if t.ndim == 3 else t[None]
    if t.shape[-2:] != (size, size):
        t = TF.resize(t, [size, size], antialias=True)
    return t.clamp_(0, 1) if clamp else t


def bitdepth_window(largest: float) -> float:
    """2^k − 1 for the fewest bits k ≥ 8 that hold ``largest`` (grey levels).

    Args:
        largest: the largest stored value of the images (≥ 0).

    Returns:
        The grey level mapped to 1 by ``intensity.mode: bitdepth``: 255 up to 255, 4095 for
        12-bit values (256 … 4095), 65535 for full 16-bit values.
    """
    return float(2 ** max(8, int(math.ceil(largest)).bit_length()) - 1)


def image_intensity(intensity: dict, decoded: DecodedImage, path: Path) -> dict:
    """The intensity scaling of one decoded image (the ``preprocess.intensity`` block, resolved).

    Args:
        intensity: the dataset's ``preprocess.intensity`` block.
        decoded: the image file, with its bit depth.
        path: its file, named in messages.

    Returns:
        ``intensity`` itself for ``window`` and ``percentile`` (and ``none`` on float data);
        for ``bitdepth``: ``{"mode": "window", "window": [0, 255]}`` for an 8-bit image, or
        ``{"mode": "defer"}`` for a 16/32-bit one (scaled once the dataset's largest value is
        known, see :func:`bitdepth_window`).

    Raises:
        IntensityError: ``mode: none`` on an integer image (grey levels, not [0,1]);
            ``mode: bitdepth`` on data without a bit depth (DICOM after its rescale, NIfTI,
            float TIFF) or with negative values.
    """
    mode = intensity.get("mode", "percentile")
    if mode == "none" and decoded.bits is not None:
        raise IntensityError(
            f"{path}: preprocess.intensity.mode none expects values already in [0,1], but this is a"
            f" {decoded.bits}-bit image (grey levels 0-{2 ** decoded.bits - 1}): set"
            " preprocess.intensity.mode: bitdepth (or window with the grey levels' range, e.g."
            " window: [0, 255] for 8-bit images)")
    if mode != "bitdepth":
        return intensity
    if decoded.bits is None:
        raise IntensityError(
            f"{path}: preprocess.intensity.mode bitdepth is for integer PNG/JPEG/TIFF/BMP images;"
            " this file holds rescaled or float values (DICOM after its rescale, NIfTI or a float"
            " TIFF): set preprocess.intensity.mode: window (e.g. a CT window in HU) or percentile")
    if float(decoded.pixels.min()) < 0:
        raise IntensityError(
            f"{path}: preprocess.intensity.mode bitdepth: the image holds negative values (signed"
            f" integers, down to {float(decoded.pixels.min()):g}): set preprocess.intensity.mode:"
            " window with the data's range, or percentile")
    if decoded.bits <= 8:
        return {"mode": "window", "window": [0.0, 255.0]}
    return {"mode": "defer"}


def clipped_note(region: np.ndarray, scaling: dict, path: Path, max_clipped: float = CLIP_ERROR) -> str | None:
    """Check how much of an image a fixed window clips (``mode: none`` is the window [0, 1]).

    Args:
        region: the pixels the model will see (the crop, or the whole image), (H, W) or (H, W, C).
        scaling: the image's intensity scaling (``mode`` ``window`` or ``none``).
        path: the image file, named in messages.
        max_clipped: the largest share (0–1) of the pixels that may lie outside the window.

    Returns:
        None when at most 1% of the pixels lie outside the window; else a note for
        ``tensors/skipped.csv`` (stage ``clipped``; the image is kept), also logged as a warning.

    Raises:
        IntensityError: more than ``max_clipped`` of the pixels lie outside the window.
    """
    if scaling.get("mode") == "none":
        lo, hi, key = 0.0, 1.0, "mode none (values already in [0,1])"
    else:
        lo, hi = (float(v) for v in scaling.get("window", LUNG_WINDOW))
        key = f"window [{lo:g}, {hi:g}]"
    below, above = float(np.mean(region < lo)), float(np.mean(region > hi))
    share = below + above
    if share <= CLIP_NOTE:
        return None
    what = (f"{share:.1%} of its pixels lie outside preprocess.intensity.{key} ({below:.1%} below,"
            f" {above:.1%} above; its values span {float(region.min()):g} to {float(region.max()):g})")
    if share > max_clipped:
        raise IntensityError(
            f"{path}: {what} and would become flat 0 or 1: set the window to the data's range (e.g."
            " window: [0, 4095] for 12-bit values), or use preprocess.intensity.mode bitdepth"
            " (integer images) or percentile; if the saturation is intended, raise"
            f" preprocess.intensity.max_clipped (now {max_clipped:g}; 1 turns this check off)")
    log.warning("%s: %s; clipped to the window (kept, listed in tensors/skipped.csv)", path, what)
    return f"kept, clipped: {what}"


class ContentIndex:
    """Which patients each decoded pixel content (SHA-256 of the array) was seen under.

    The content is the image a sample uses: the decoded file, or its frame / slice for a
    multi-frame file. An identical image under two patient IDs (a file copied or listed twice)
    would land in two splits although every split is by patient: :meth:`check` refuses it.
    """

    def __init__(self) -> None:
        self._digest: dict[tuple[str, int], str] = {}  # (file, frame) -> digest
        self._owners: dict[str, dict[str, tuple[str, str]]] = {}  # digest -> patient -> (sample, file)

    def add(self, pixels: np.ndarray, patient: str, sample: str, path: Path, frame: int = -1) -> None:
        """Record that ``sample`` of ``patient`` uses the decoded image ``pixels`` ((H, W) or
        (H, W, C)) of ``path`` (its ``frame``, -1 for a single image).

        Args:
            pixels: the decoded image; hashed once per (``path``, ``frame``).
            patient: the patient ID.
            sample: the sample ID.
            path: the image file.
            frame: the frame / slice index in the file, -1 for a single image.
        """
        key = (str(path), int(frame))
        digest = self._digest.get(key)
        if digest is None:
            arr = np.ascontiguousarray(pixels)
            h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.tobytes())
            digest = self._digest[key] = h.hexdigest()
        where = key[0] + (f" frame {frame}" if frame >= 0 else "")
        self._owners.setdefault(digest, {}).setdefault(patient, (sample, where))

    def check(self) -> None:
        """Refuse pixel content seen under two or more patients.

        Raises:
            DataError: an image content appears under two or more patients; the message names
                the rows (patient, sample, file) of up to five such images.
        """
        clashes = [owners for owners in self._owners.values() if len(owners) > 1]
        if not clashes:
            return
        lines = []
        for owners in clashes[:5]:
            rows = list(owners.items())[:3]
            lines.append(" and ".join(f"patient {p!r} (sample {s!r}, {f})" for p, (s, f) in rows))
        raise DataError(
            f"{len(clashes)} image(s) with identical pixel content appear under two or more patients:"
            f" {'; '.join(lines)}{' ...' if len(clashes) > 5 else ''}. The split by patient would put"
            " the same image in two splits (leakage): remove the duplicate file or row, or give both"
            " rows the same patient_id (folder format: a source.patient_pattern that groups them)")


def balance(idx: np.ndarray, y: np.ndarray, method: str, seed: int) -> np.ndarray:
    """Indices of a class-balanced subset: seeded undersampling of the larger classes.

    Args:
        idx: the candidate row indices.
        y: the labels of all rows (indexed by ``idx``).
        method: ``none`` (keep all) or ``undersample`` (any other value undersamples too).
        seed: seed of the undersampling.

    Returns:
        ``idx`` itself for ``none`` (or when empty); else the sorted kept indices, every class with
        as many rows as the smallest.
    """
    if method == "none" or len(idx) == 0:
        return idx
    rng = np.random.default_rng(seed)
    n = min(np.bincount(y[idx])[np.unique(y[idx])])
    keep = [rng.choice(idx[y[idx] == c], n, replace=False) for c in np.unique(y[idx])]
    return np.sort(np.concatenate(keep))


def run_preprocess(manifest: pd.DataFrame, source: dict, prep: dict, seed: int,
                   on_bad_file: str = "skip") -> tuple[dict[str, dict], dict, pd.DataFrame]:
    """Return ({split: tensors}, stats, skipped) for one dataset's manifest: the first three
    results of :func:`preprocess_with_noise` (see there).

    Args:
        manifest: ``results/{ds}/manifest.csv`` (ingest's output).
        source: the dataset's source config.
        prep: the dataset's ``preprocess`` config.
        seed: seed of the training-set balancing.
        on_bad_file: ``skip`` (list undecodable files in the skipped frame) or ``error``.

    Returns:
        ({split: {"x": float32 N×C×size×size in [0,1], "y": int64 N, "ids"}}, stats, skipped).

    Raises:
        ConfigError, DataError, IntensityError, DicomError: as :func:`preprocess_with_noise`.
    """
    return preprocess_with_noise(manifest, source, prep, seed, on_bad_file)[:3]


def preprocess_with_noise(manifest: pd.DataFrame, source: dict, prep: dict, seed: int, on_bad_file: str = "skip"
                          ) -> tuple[dict[str, dict], dict, pd.DataFrame, pd.DataFrame]:
    """Return ({split: tensors}, stats, skipped, noise) for one dataset's manifest.

    Args:
        manifest: ``results/{ds}/manifest.csv`` (ingest's output).
        source: the dataset's source config.
        prep: the dataset's ``preprocess`` config.
        seed: seed of the training-set balancing.
        on_bad_file: ``skip`` (list undecodable files in the skipped frame) or ``error``.

    Returns:
        ({split: {"x": float32 N×C×size×size in [0,1], "y", "ids"}}, stats, skipped). C is 1, or
        3 with ``preprocess.color: rgb`` (file sources; array sources keep their channels).
        ``skipped`` (columns stage, file, sample_id, reason) lists the files skipped (stage
        ``preprocess``: undecodable, or smaller than 8 pixels on a side) and, with stage
        ``clipped``, the images kept although the intensity window clipped more than 1% of
        their pixels; ``stats["n_skipped"]`` counts only the former. ``noise``
        (:data:`NOISE_COLUMNS`) has one row per image of the tensors (split order, then tensor
        order): its noise σ in stored units measured on the crop before intensity scaling and
        resizing (file sources; NaN for array sources), and its span of stored units per [0,1].
        The tensors and stats are the same as without it.

    Raises:
        ConfigError: an unknown ``on_bad_file``, ``preprocess.balance``,
            ``preprocess.intensity.mode`` or ``preprocess.color``.
        DataError: a ROI outside its image, a frame index that does not fit its file, a split
            that misses a class after skipping (:class:`UnusableSplitError`, naming the class,
            its folder and why its files were skipped), or one pixel content under two patients.
            Every error raised here carries the skipped frame so far as ``exc.skipped``, so that
            the caller can write ``tensors/skipped.csv`` before stopping.
        IntensityError: (a DataError) the window clips more than ``intensity.max_clipped`` of an
            image, ``mode: none`` on integer images, ``mode: bitdepth`` on float/DICOM data.
        DicomError: an undecodable or too small file with ``on_bad_file: error``.
    """
    skipped: list[dict] = []
    notes: list[dict] = []
    try:
        return _preprocess_with_noise(manifest, source, prep, seed, on_bad_file, skipped, notes)
    except OncorobustError as exc:
        if getattr(exc, "skipped", None) is None:
            exc.skipped = pd.DataFrame(skipped + notes, columns=SKIPPED_COLUMNS)
        raise


def _preprocess_with_noise(manifest: pd.DataFrame, source: dict, prep: dict, seed: int, on_bad_file: str,
                           skipped: list[dict], notes: list[dict]
                           ) -> tuple[dict[str, dict], dict, pd.DataFrame, pd.DataFrame]:
    """:func:`preprocess_with_noise`, appending to ``skipped`` and ``notes`` as it goes (so that
    they can go with an error)."""
    check_choice(on_bad_file, ON_BAD_FILE, "on_bad_file")
    check_choice(prep.get("balance", "undersample"), ("undersample", "none"), "preprocess.balance")
    intensity = prep.get("intensity", {})
    mode = intensity.get("mode", "percentile")
    check_choice(mode, INTENSITY_MODES, "preprocess.intensity.mode")
    color = prep.get("color", "luminance")
    check_choice(color, COLORS, "preprocess.color")
    max_clipped = float(intensity.get("max_clipped", CLIP_ERROR))
    size = int(prep["size"])
    images: list[torch.Tensor | None] = []
    spans: list[float] = []
    levels: set[float] = set()
    sigma: list[float] = []  # per entry of images: the crop's noise σ in stored units
    span: list[float] = []  # per entry of images: stored units per [0,1] (NaN: unknown)
    if source["format"] in ARRAY_FORMATS:
        arrays = load_arrays(source)
        for src in manifest.source:
            _, part, i = src.split(":")
            images.append(resize(arrays[part][0][int(i)], size))
            sigma.append(float("nan"))
            span.append(ARRAY_LEVELS.get(source["format"], float("nan")))
    else:
        root = source_root(source)
        read = functools.lru_cache(maxsize=4)(functools.partial(decode_image, color=color))
        crop_cfg = prep.get("crop", {})
        rgb = color == "rgb"
        content = ContentIndex()
        deep: list[tuple[int, float]] = []  # (index, largest value) of >8-bit images under bitdepth
        n_grey_repeated = 0
        for row in tqdm(manifest.itertuples(index=False), total=len(manifest), desc="crop",
                        mininterval=5, disable=None):
            path = root / row.source
            sample = f"{row.sample_id} ({path})"
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", DicomPlausibilityWarning)
                    decoded = read(path)
                notes += [{"stage": "plausibility", "file": str(path), "sample_id": row.sample_id,
                           "reason": str(w.message).split(": ", 1)[-1]}
                          for w in caught if issubclass(w.category, DicomPlausibilityWarning)]
                pixels = select_frame(decoded.pixels, int(row.frame), sample, rgb=rgb)
                require_min_side(pixels, path, rgb=rgb)
            except DicomError as exc:
                if on_bad_file == "error":
                    raise
                skipped.append({"stage": "preprocess", "file": str(path), "sample_id": row.sample_id,
                                "reason": str(exc).split(": ", 1)[-1]})
                images.append(None)
                sigma.append(float("nan"))
                span.append(float("nan"))
                continue
            content.add(pixels, str(row.patient_id), str(row.sample_id), path, int(row.frame))
            n_grey_repeated += rgb and not decoded.colour
            whole = math.isnan(row.roi_row) and math.isnan(row.roi_col)
            if whole:  # already a lesion crop: used whole
                crop = whole_image(pixels)
            else:
                side = crop_side(row.roi_size_px, crop_cfg)
                crop = crop_square(pixels, (row.roi_row, row.roi_col), side, sample)
            scaling = image_intensity(intensity, decoded, path)
            sigma.append(crop_sigma(crop))  # stored units, stored resolution: before scaling and resizing
            if scaling.get("mode") == "defer":
                deep.append((len(images), float(decoded.pixels.max())))
                levels.add(-1.0)
                images.append(resize(crop, size, clamp=False))
                span.append(float("nan"))  # the bit-depth window, known once every image is read
                continue
            if mode == "bitdepth":
                levels.add(float(scaling["window"][1]))
            if scaling.get("mode", "percentile") in ("window", "none"):
                note = clipped_note(pixels if whole else crop, scaling, path, max_clipped)
                if note:
                    notes.append({"stage": "clipped", "file": str(path), "sample_id": row.sample_id,
                                  "reason": note})
            rng = intensity_range(crop, scaling)
            if rng is not None:
                spans.append(rng[1] - rng[0])
            span.append(rng[1] - rng[0] if rng is not None and rng[1] > rng[0] else
                        1.0 if rng is None else float("nan"))  # mode none: stored values are [0,1]
            images.append(resize(scale_intensity(crop, scaling), size))
        content.check()
        if deep:
            hi = bitdepth_window(max(m for _, m in deep))
            for i, _ in deep:
                images[i] = (images[i] / hi).clamp_(0, 1)
                span[i] = hi
            levels.discard(-1.0)
            levels.add(hi)
            log.info("intensity bitdepth: %d image(s) of more than 8 bits, largest value %g: scaled by"
                     " [0, %g] (%d bits)", len(deep), max(m for _, m in deep), hi, round(math.log2(hi + 1)))
        if n_grey_repeated:
            log.info("preprocess.color rgb: %d grey image(s) repeated to three equal channels", n_grey_repeated)
    if skipped:
        log.warning("preprocess: %d image(s) could not be decoded and were skipped", len(skipped))
    clipped = sum(n["stage"] == "clipped" for n in notes)
    if clipped:
        log.warning("preprocess: %d image(s) had more than %g%% of their pixels clipped by the intensity"
                    " window (kept; listed in tensors/skipped.csv with stage 'clipped')", clipped,
                    100 * CLIP_NOTE)
    if len(notes) > clipped:
        log.warning("preprocess: %d DICOM file(s) hold implausible stored values (kept as stored; listed in"
                    " tensors/skipped.csv with stage 'plausibility')", len(notes) - clipped)
    ok = np.array([im is not None for im in images])
    y = manifest.label.to_numpy(dtype=np.int64)
    splits = manifest.split.to_numpy()
    tensors, counts = {}, {}
    noise_rows: list[pd.DataFrame] = []
    for split in ("train", "val", "test"):
        idx = np.flatnonzero((splits == split) & ok)
        counts[split] = {"before_balancing": _counts(manifest, idx)}
        missing = sorted(set(y.tolist()) - set(y[idx].tolist()))
        if missing:
            raise UnusableSplitError(_missing_class_message(manifest, split, missing, ok, skipped, source),
                                     pd.DataFrame(skipped + notes, columns=SKIPPED_COLUMNS))
        if split == "train":
            idx = balance(idx, y, prep.get("balance", "undersample"), seed)
        counts[split]["used"] = _counts(manifest, idx)
        tensors[split] = {"x": torch.stack([images[i] for i in idx]).contiguous(),
                          "y": torch.from_numpy(y[idx]),
                          "ids": [str(s) for s in manifest.sample_id.to_numpy()[idx]]}
        noise_rows.append(pd.DataFrame({"sample_id": tensors[split]["ids"], "split": split,
                                        "sigma": np.asarray(sigma, dtype=np.float64)[idx],
                                        "span": np.asarray(span, dtype=np.float64)[idx]}))
    x = tensors["train"]["x"]
    names = manifest.drop_duplicates("label").set_index("label").label_name.sort_index()
    stats = {
        "mean": x.mean(dim=(0, 2, 3)).tolist(),
        "std": x.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist(),
        "size": size, "channels": int(x.shape[1]),
        "classes": [str(names.get(k, k)) for k in range(int(names.index.max()) + 1)],
        "counts": counts, "n_skipped": len(skipped),
        "eps_units": eps_units(source["format"], intensity, spans,
                               next(iter(levels)) if len(levels) == 1 else None),
    }
    noise = pd.concat(noise_rows, ignore_index=True).assign(unit=stats["eps_units"]["unit"])[NOISE_COLUMNS]
    return tensors, stats, pd.DataFrame(skipped + notes, columns=SKIPPED_COLUMNS), noise


def _missing_class_message(manifest: pd.DataFrame, split: str, missing: list[int], ok: np.ndarray,
                           skipped: list[dict], source: dict) -> str:
    """Why ``split`` has no image of the ``missing`` labels: per class, its rows in the split,
    where its files are, and why they were skipped (the first reasons)."""
    parts = []
    reasons = {s["sample_id"]: s["reason"] for s in skipped}
    for label in missing:
        rows = manifest[(manifest.label.to_numpy() == label) & (manifest.split.to_numpy() == split)]
        names = manifest.label_name[manifest.label == label]
        name = str(names.iloc[0]) if len(names) else str(label)
        if rows.empty:
            parts.append(f"class '{name}': no row in the manifest's {split} split (rerun ingest)")
            continue
        file_rows = manifest[manifest.label.to_numpy() == label]
        n_bad = int((~ok[(manifest.label.to_numpy() == label)]).sum())
        where = ""
        if source.get("format") not in ARRAY_FORMATS:
            root = source_root(source)
            folders = sorted({str((root / str(src)).parent) for src in file_rows.source})
            where = (f" (folder {folders[0]})" if len(folders) == 1 else
                     f" (files in {len(folders)} folders, e.g. {folders[0]})")
        examples = "; ".join([f"{Path(str(r.source)).name}: {reasons[r.sample_id]}"
                              for r in rows.itertuples() if r.sample_id in reasons][:2])
        parts.append(f"class '{name}'{where}: all {len(rows)} image(s) of the {split} split could not be"
                     f" read ({n_bad} of the class's {len(file_rows)} in all were skipped"
                     f"{', e.g. ' + examples if examples else ''})")
    return (f"after skipping unreadable files the {split} split has no image of "
            + "; ".join(parts) + ". Every skipped file and its reason is listed in tensors/skipped.csv"
            " (stage preprocess): fix or replace them, or remove the class")


def select_frame(pixels: np.ndarray, frame: int, sample: str = "", rgb: bool = False) -> np.ndarray:
    """The (H, W) image of a decoded file: ``frame`` of a multi-frame (F, H, W) array.

    Args:
        pixels: (H, W) or (F, H, W) from :func:`~oncorobust.data.dicom.read_dicom`; with ``rgb``
            (H, W, 3) or (F, H, W, 3).
        frame: the manifest's ``frame`` (-1: the file is a single image).
        sample: named in the message.
        rgb: the arrays carry a trailing channel axis.

    Returns:
        The (H, W) image ((H, W, 3) with ``rgb``).

    Raises:
        DataError: a multi-frame file without a frame index, or an index outside its frames
            (never silently frame 0).
    """
    if pixels.ndim == 2 + rgb:
        if frame > 0:
            raise DataError(f"{sample}: frame {frame} asked of a single-frame image; rerun ingest")
        return pixels
    if frame < 0:
        if pixels.shape[0] == 1:
            return pixels[0]
        raise DataError(f"{sample}: the file holds {pixels.shape[0]} frames and the manifest gives no"
                        " frame index; give roi_slice (the frame) in the manifest and rerun ingest")
    if frame >= pixels.shape[0]:
        raise DataError(f"{sample}: frame {frame} outside the file's {pixels.shape[0]} frames; rerun ingest")
    return pixels[frame]


def crop_side(roi_size_px: float, cfg: dict) -> int:
    """Crop side in pixels: ``fixed_px``, else ``margin`` × lesion extent, at least ``min_px``.

    Args:
        roi_size_px: the lesion's extent in pixels (None or NaN: unknown, ``min_px`` is used).
        cfg: the ``preprocess.crop`` block (``fixed_px``; ``margin``, default 2; ``min_px``, default 32).

    Returns:
        The crop side in pixels.
    """
    if cfg.get("fixed_px"):
        return int(cfg["fixed_px"])
    side = int(cfg.get("min_px", 32))
    if roi_size_px is not None and not math.isnan(roi_size_px):
        side = max(side, int(math.ceil(roi_size_px * float(cfg.get("margin", 2.0)))))
    return side


def _counts(manifest: pd.DataFrame, idx: np.ndarray) -> dict[str, int]:
    return {str(k): int(v) for k, v in manifest.label_name.iloc[idx].value_counts().sort_index().items()}


def save_tensors(tensors: dict[str, dict], out_dir: str | Path) -> None:
    """Save each split's tensors to ``{out_dir}/{split}.pt``, atomically.

    Args:
        tensors: {split: {"x": float32 N×C×H×W in [0,1], "y": int64 N, "ids": list[str]}}.
        out_dir: the tensors folder (``results/{ds}/tensors``).

    Raises:
        WriteError: naming the file, when the disk is full or the write fails otherwise.
    """
    from oncorobust.io import save_torch

    for split, payload in tensors.items():
        save_torch(payload, Path(out_dir) / f"{split}.pt")
