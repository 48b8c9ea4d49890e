"""Reading DICOM pixels correctly: modality LUT, MONOCHROME1, compressed transfer syntaxes.

Decoding goes through pydicom's pixel handlers (pydicom >= 3 with the pylibjpeg plugins); this
module adds only what pydicom leaves to the caller: one float32 convention for every file and one
clear :class:`~oncorobust.errors.DicomError` for every way a real export can be broken.

- Size guard: before any pixel data is decoded, the header's Rows × Columns (and × NumberOfFrames
  × SamplesPerPixel) is checked against :data:`MAX_PIXELS` per image and :data:`MAX_VALUES` per
  file (:func:`size_problem`): a 6 MB RLE file can decode to gigabytes, so an oversized file is
  refused with its size instead of exhausting the memory.
- Enhanced multi-frame images (Enhanced CT/MR/...): their RescaleSlope/RescaleIntercept live in the
  Pixel Value Transformation Sequence of the Per-frame (one per frame) or Shared Functional Groups
  Sequence, which pydicom's ``apply_modality_lut`` (3.0) does not read; :func:`frame_rescale`
  reads them, so CT comes out in HU as for single-frame files.
- Colour (RGB, YBR_FULL, YBR_FULL_422 converted to RGB by pydicom; PALETTE COLOR through its
  lookup table) is decoded by :func:`decode_dicom` when the caller asks for colour
  (``preprocess.color: rgb``) and refused with a clear error otherwise.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, get_decoder

from oncorobust.errors import DicomError

log = logging.getLogger("oncorobust.data.dicom")


class DicomPlausibilityWarning(UserWarning):
    """A DICOM file decodes, but its stored values are implausible for its header (e.g. signed
    data written with PixelRepresentation 0). The image is still returned; the message names the
    file and what is probably wrong."""

# Which pip package adds a decoder for which family of transfer syntaxes (pydicom's plugin names).
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg",   # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",   # JPEG Extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",   # JPEG Lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",   # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg",   # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg",   # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",           # RLE Lossless
}


#: Largest image (Rows × Columns, or width × height of any image file) read: 2^28 = 268,435,456
#: pixels (16384 × 16384; 1 GiB as float32). Larger images are refused before decoding (a
#: listed skip, or an error with ``on_bad_file: error``): crop or downsample them first.
MAX_PIXELS = 2 ** 28
#: Largest number of values (frames × rows × columns × samples) one file may decode to: 2^29
#: (2 GiB as float32; e.g. 2048 slices of 512 × 512). A multi-frame file above it is refused.
MAX_VALUES = 2 ** 29


def size_problem(rows: int, cols: int, frames: int = 1, samples: int = 1, bits: int | None = None) -> str:
    """Why an image of this size is not decoded ('' when it may be), from its header alone.

    Args:
        rows: image height in pixels.
        cols: image width in pixels.
        frames: frames / pages / slices in the file.
        samples: values per pixel (3 for colour).
        bits: bits allocated per stored value (DICOM), named in the message when given.

    Returns:
        '' or a reason starting with "image too large (W×H px, ...)", naming the limit.
    """
    rows, cols, frames, samples = int(rows), int(cols), max(1, int(frames)), max(1, int(samples))
    pixels, values = rows * cols, rows * cols * frames * samples
    what = f"{cols}×{rows} px"
    if frames > 1:
        what += f" × {frames} frames"
    if samples > 1:
        what += f" × {samples} samples"
    stored = f", {values * bits / 8 / 2 ** 30:.1f} GiB decoded" if bits else ""
    advice = ("; crop or downsample it before use (the limit keeps one file from exhausting the"
              " memory while decoding)")
    if pixels > MAX_PIXELS:
        return (f"image too large ({what}: {pixels:,} pixels per image{stored}; limit {MAX_PIXELS:,}"
                f" = 2^28 pixels){advice}")
    if values > MAX_VALUES:
        return (f"image too large ({what}: {values:,} values in the file{stored}; limit {MAX_VALUES:,}"
                f" = 2^29 values per file){advice}")
    return ""


def read_header(path: str | os.PathLike) -> pydicom.Dataset:
    """Read a DICOM file's header only (no pixel data). Raises DicomError when unreadable.

    Args:
        path: the DICOM file.

    Returns:
        The pydicom dataset, without its pixel data.

    Raises:
        DicomError: a folder, a missing or empty file, not a DICOM file, or a truncated or
            corrupt header.
    """
    return _dcmread(path, stop_before_pixels=True)


def _dcmread(path: str | os.PathLike, stop_before_pixels: bool = False) -> pydicom.Dataset:
    path = Path(path)
    if path.is_dir():
        raise DicomError(f"{path}: is a folder, not a DICOM file; give one file of it (a series folder"
                         " is read by the source adapters, not here)")
    if not path.is_file():
        raise DicomError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DicomError(f"{path}: not a DICOM file (empty file, 0 bytes); copy it again from the source")
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise DicomError(f"{path}: not a DICOM file ({_reason(exc)})") from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DicomError(f"{path}: truncated or corrupt DICOM header ({type(exc).__name__}:"
                         f" {_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    """pydicom's message without its advice to use ``force=True`` (which would read garbage)."""
    text = re.sub(r"\s*Use force=True to force reading\.?", "", str(exc))
    return text.strip() or type(exc).__name__


#: The SOP class of a DICOMDIR (a file-set directory, not an image).
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


def non_image_reason(hdr: pydicom.Dataset) -> str:
    """Why a header (:func:`read_header`) is not an image slice; '' when it is, or may be, one.

    A DICOMDIR, a structured report, a presentation state, a key-object selection, an RT
    structure set... carries a SOP class that is not an image one and no Rows/Columns: such a
    file in a series folder must not count as a slice. A header that says nothing (no SOP class,
    no Rows/Columns) is treated as a possible image, so that a broken slice is reported when its
    pixels are read instead of being dropped silently.

    Args:
        hdr: the file's header (:func:`read_header`).

    Returns:
        A short reason (e.g. "a DICOMDIR (file-set directory), not an image"), or ''.
    """
    if _image_class(hdr):
        return ""
    sop = hdr.get("SOPClassUID") or getattr(getattr(hdr, "file_meta", None), "MediaStorageSOPClassUID", None)
    if not sop:
        return ""
    sop = str(sop).strip()
    if sop == DICOMDIR_SOP_CLASS:
        return "a DICOMDIR (file-set directory), not an image"
    name = pydicom.uid.UID(sop).name
    return f"SOP class {name if name and name != sop else sop} holds no image"


# ----------------------------------------------------------------------------- slice geometry


def _has_values(value) -> bool:
    """False for an element present but empty ('' or an empty multi-value): treated as absent."""
    try:
        return len(value) > 0
    except TypeError:
        return True


def _numbers(hdr: pydicom.Dataset, keyword: str, count: int, what: str, where) -> np.ndarray | None:
    """A multi-valued geometry attribute as ``count`` finite float64 values; None when absent.

    Raises:
        DicomError: present but not ``count`` finite numbers (``what`` says what they should be).
    """
    raw = hdr.get(keyword)
    if raw is None or not _has_values(raw):
        return None
    try:
        values = np.array([float(v) for v in raw], dtype=float)
    except (TypeError, ValueError):
        values = np.array([])
    if values.shape != (count,) or not np.all(np.isfinite(values)):
        raise DicomError(f"{where}: {keyword} {raw!r} is not {what}; the header is broken, so the"
                         " slice cannot be placed in the series")
    return values


def slice_normal(hdr: pydicom.Dataset, where: str | os.PathLike = "") -> np.ndarray | None:
    """The unit normal of a slice's image plane, from ImageOrientationPatient.

    ``n = row direction × column direction`` (the first and the last three values of
    ImageOrientationPatient, in patient coordinates), turned so that its largest component is
    positive. The position of a slice along ``n`` (:func:`slice_position`) is then the patient
    coordinate its stack steps along: z (mm) for an axial series, x for a sagittal one, y for a
    coronal one, and for an oblique plane the coordinate along its own normal (closest to the
    axis it is nearest to). An axial series' positions are exactly its ImagePositionPatient z
    values.

    Args:
        hdr: the slice's header (:func:`read_header`).
        where: the file, named in the error.

    Returns:
        ``n`` as a float64 array of 3, or None when the header has no ImageOrientationPatient.

    Raises:
        DicomError: ImageOrientationPatient is not six finite numbers, or its row and column
            directions are zero or parallel (no plane).
    """
    values = _numbers(hdr, "ImageOrientationPatient", 6, "six numbers (row and column direction cosines)", where)
    if values is None:
        return None
    n = np.cross(values[:3], values[3:])
    norm = float(np.linalg.norm(n))
    if norm < 1e-6:
        raise DicomError(f"{where}: ImageOrientationPatient {values.tolist()} has parallel or zero row"
                         " and column directions (no image plane); the header is broken")
    n = n / norm
    if n[int(np.argmax(np.abs(n)))] < 0:
        n = -n
    return n


def slice_position(hdr: pydicom.Dataset, normal: np.ndarray | None = None,
                   where: str | os.PathLike = "") -> float | None:
    """A slice's position (mm) along its series' slice normal: ``n · ImagePositionPatient``.

    Args:
        hdr: the slice's header.
        normal: the series' normal (:func:`slice_normal` of one of its slices); default this
            slice's own. Without any ImageOrientationPatient the slice is taken as axial, so its
            position is ImagePositionPatient's z.
        where: the file, named in the error.

    Returns:
        The position in mm, or None when the header has no ImagePositionPatient.

    Raises:
        DicomError: ImagePositionPatient is not three finite numbers, or
            ImageOrientationPatient is broken (see :func:`slice_normal`).
    """
    p = _numbers(hdr, "ImagePositionPatient", 3, "three numbers (x, y, z in mm)", where)
    if p is None:
        return None
    n = normal if normal is not None else slice_normal(hdr, where)
    if n is None:
        return float(p[2])
    return float(np.dot(n, p))


def read_dicom(path: str | os.PathLike) -> np.ndarray:
    """Decode one grayscale DICOM file to float32 in the modality's units.

    - applies the Modality LUT (RescaleSlope/RescaleIntercept, or a Modality LUT Sequence), so CT
      comes out in Hounsfield units; for an enhanced multi-frame file (Enhanced CT/MR...) the
      rescale is read per frame from its functional groups (:func:`frame_rescale`);
    - inverts MONOCHROME1 images so that brighter is always larger: each value v becomes
      ``lo + hi - v`` where [lo, hi] is the range the stored bits can hold after the modality LUT
      (an image-independent mapping, so a window chosen on MONOCHROME2 data still applies);
    - decodes compressed transfer syntaxes (RLE, JPEG lossless, JPEG-LS, JPEG 2000) through
      pydicom's pixel handlers;
    - refuses, before decoding, an image larger than :data:`MAX_PIXELS` pixels or a file of more
      than :data:`MAX_VALUES` values (:func:`size_problem`).

    Returns an (H, W) array for a single-frame file and (frames, H, W) for a multi-frame file.
    Colour images (RGB, YBR, PALETTE COLOR) are refused here: :func:`decode_dicom` with
    ``colour=True`` reads them (``preprocess.color: rgb``).
    Every failure is a :class:`DicomError` naming the file and the reason.

    Stored values that are implausible for the header (outside the range BitsStored and
    PixelRepresentation allow, or signed data written with PixelRepresentation 0, which reads
    e.g. -1024..-25 as 64512..65511) are kept as stored but flagged: a warning is logged and a
    :class:`DicomPlausibilityWarning` is issued (``warnings``), both naming the file.

    Args:
        path: the DICOM file.

    Returns:
        float32 (H, W), or (frames, H, W) for a multi-frame file, in the modality's units (HU for CT).

    Raises:
        DicomError: the file is unreadable, undecodable, too large or in colour, its RescaleSlope
            is 0 (every pixel would become RescaleIntercept: a constant image), or its values are
            not finite after the modality LUT.
    """
    return decode_dicom(path)[0]


def _photometric(ds: pydicom.Dataset) -> str:
    return str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()


def decode_dicom(path: str | os.PathLike, colour: bool = False) -> tuple[np.ndarray, int | None, bool]:
    """Decode one DICOM file, grayscale (as :func:`read_dicom`) or, with ``colour``, colour too.

    Args:
        path: the DICOM file.
        colour: accept colour images (``preprocess.color: rgb``): RGB and YBR_FULL /
            YBR_FULL_422 (converted to RGB by pydicom), and PALETTE COLOR (through its lookup
            table). Without it a colour file is a :class:`DicomError` saying how to use it.

    Returns:
        ``(pixels, bits, is_colour)``: grayscale float32 (H, W) / (frames, H, W) in the modality's
        units with ``bits`` None; colour float32 (H, W, 3) / (frames, H, W, 3) with the stored
        values (0–255 for 8-bit) and ``bits`` their bit depth (BitsStored, or the palette's).

    Raises:
        DicomError: as :func:`read_dicom`; a colour file without ``colour``.
    """
    path = Path(path)
    ds = _dcmread(path)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        image_class = _image_class(ds)
        if image_class:
            raise DicomError(f"{path}: has no PixelData although its header says it is an image"
                             f" ({image_class}): the file is"
                             f" truncated ({path.stat().st_size} bytes) or was exported without its"
                             " pixels; copy it again from the source")
        raise DicomError(f"{path}: has no PixelData (not an image: a report, presentation state or"
                         " a header-only export?)")
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None:
        raise DicomError(f"{path}: no Transfer Syntax UID in the file meta information; the file is"
                         " truncated or was written without a DICOM preamble")
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise DicomError(f"{path}: transfer syntax {ts} ({ts.name}) has no pixel decoder in pydicom;"
                         " convert the file (e.g. `dcmdjpeg`/`gdcmconv --raw`) before use") from exc
    if not decoder.is_available:
        package = _DECODER_PACKAGES.get(str(ts), "a pydicom pixel-data plugin")
        raise DicomError(f"{path}: transfer syntax {ts} ({ts.name}) needs a decoder that is not"
                         f" installed; `pip install {package}` adds it")
    photometric = _photometric(ds)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    is_colour = samples != 1 or photometric == "PALETTE COLOR"
    if is_colour and not colour:
        raise DicomError(f"{path}: a colour DICOM ({samples} sample(s) per pixel, PhotometricInterpretation"
                         f" {photometric or '?'}); set preprocess.color: rgb to use colour images (three"
                         " channels), or convert the file to grayscale (MONOCHROME2)")
    if is_colour and samples not in (1, 3):
        raise DicomError(f"{path}: {samples} samples per pixel ({photometric}); only grayscale (1) and"
                         " colour (3) images are supported")
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        bits_alloc = int(ds.get("BitsAllocated", 16) or 16)
    except (TypeError, ValueError) as exc:
        raise DicomError(f"{path}: Rows/Columns/NumberOfFrames/BitsAllocated are not numbers ({exc});"
                         " the header is broken") from None
    too_large = size_problem(rows, cols, frames, samples, bits_alloc)
    if too_large:
        raise DicomError(f"{path}: {too_large}")
    try:
        stored = ds.pixel_array
    except Exception as exc:  # pydicom raises ValueError/RuntimeError/... from many decoders
        raise DicomError(f"{path}: pixel data cannot be decoded ({type(exc).__name__}: {exc});"
                         " the file is probably truncated or corrupt") from exc
    if is_colour:
        return _colour_pixels(path, ds, stored, photometric)
    rescale = frame_rescale(ds, path)
    if rescale is None:
        _check_rescale_slope(path, ds)
    problem = stored_value_problem(ds, stored)
    if problem:
        message = f"{path}: {problem}"
        log.warning("%s", message)
        warnings.warn(message, DicomPlausibilityWarning, stacklevel=2)
    try:
        if rescale is None:
            pixels = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
        else:
            slopes = np.array([s for s, _ in rescale], dtype=np.float64)
            intercepts = np.array([b for _, b in rescale], dtype=np.float64)
            if stored.ndim == 3:  # (frames, H, W): each frame its own rescale
                slopes, intercepts = slopes[:, None, None], intercepts[:, None, None]
            else:
                slopes, intercepts = slopes[0], intercepts[0]
            pixels = (stored.astype(np.float64) * slopes + intercepts).astype(np.float32)
    except DicomError:
        raise
    except Exception as exc:
        raise DicomError(f"{path}: invalid Modality LUT / rescale attributes ({exc})") from exc
    if not np.all(np.isfinite(pixels)):
        raise DicomError(f"{path}: pixel values are not finite after the modality LUT")
    if photometric == "MONOCHROME1":
        if rescale is None:
            lo, hi = _rescaled_range(ds)
            pixels = np.float32(lo + hi) - pixels
        else:
            ranges = [_rescaled_range(ds, s, b) for s, b in rescale]
            total = np.array([lo + hi for lo, hi in ranges], dtype=np.float32)
            pixels = (total.reshape(-1, 1, 1) if pixels.ndim == 3 else total[0]) - pixels
    return pixels, None, False


def _colour_pixels(path: Path, ds: pydicom.Dataset, stored: np.ndarray,
                   photometric: str) -> tuple[np.ndarray, int | None, bool]:
    """(pixels, bits, True) of a decoded colour DICOM: RGB as stored (pydicom already converted
    YBR_FULL / YBR_FULL_422 to RGB), PALETTE COLOR through its lookup table."""
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            rgb = apply_color_lut(stored, ds)
            bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        except Exception as exc:  # noqa: BLE001 (a missing or broken palette raises many kinds)
            raise DicomError(f"{path}: PALETTE COLOR image whose palette cannot be applied ({exc});"
                             " the header is broken") from None
        return np.asarray(rgb, dtype=np.float32), bits, True
    if stored.shape[-1] != 3:
        raise DicomError(f"{path}: a colour image ({photometric}) decoded to shape {stored.shape},"
                         " not three samples per pixel; the file is broken")
    if photometric not in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"):
        raise DicomError(f"{path}: PhotometricInterpretation {photometric} is not supported (RGB, YBR_FULL,"
                         " YBR_FULL_422, YBR_ICT, YBR_RCT and PALETTE COLOR are); convert the file to RGB")
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
    return np.asarray(stored, dtype=np.float32), bits, True


def frame_rescale(ds: pydicom.Dataset, where: str | os.PathLike = "") -> list[tuple[float, float]] | None:
    """(RescaleSlope, RescaleIntercept) per frame from an enhanced image's functional groups.

    Enhanced multi-frame images (e.g. Enhanced CT Image Storage, 1.2.840.10008.5.1.4.1.1.2.1)
    keep the rescale in the Pixel Value Transformation Sequence of each item of the
    Per-frame Functional Groups Sequence, or once in the Shared Functional Groups Sequence, not at
    the top level of the dataset, where pydicom's ``apply_modality_lut`` looks (pydicom 3.0). A
    frame's own (per-frame) values win over the shared ones, which win over the top level. A
    top-level Modality LUT Sequence is left to ``apply_modality_lut`` (None is returned).

    Args:
        ds: the dataset (header is enough).
        where: the file, named in the error.

    Returns:
        One (slope, intercept) per frame (NumberOfFrames of them), or None when the functional
        groups hold no rescale (the top-level attributes, if any, apply). An empty slope reads 1
        and an empty intercept 0.

    Raises:
        DicomError: a slope or intercept that is not a number, a slope of 0, or a Per-frame
            Functional Groups Sequence whose length is not NumberOfFrames.
    """
    if "ModalityLUTSequence" in ds:
        return None

    def transform(item):
        seq = item.get("PixelValueTransformationSequence") if item is not None else None
        return seq[0] if seq else None

    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = transform(shared_seq[0]) if shared_seq else None
    per_seq = ds.get("PerFrameFunctionalGroupsSequence") or []
    per = [transform(item) for item in per_seq]
    if shared is None and not any(t is not None for t in per):
        return None
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if per and len(per) != n_frames:
        raise DicomError(f"{where}: the Per-frame Functional Groups Sequence has {len(per)} item(s) but"
                         f" NumberOfFrames is {n_frames}: the header is broken; export the image again")
    top = ds if "RescaleSlope" in ds or "RescaleIntercept" in ds else None
    out = []
    for i in range(n_frames):
        item = per[i] if per and per[i] is not None else shared if shared is not None else top
        slope_raw = item.get("RescaleSlope") if item is not None else None
        intercept_raw = item.get("RescaleIntercept") if item is not None else None
        try:
            slope = float(slope_raw) if slope_raw not in (None, "") else 1.0
            intercept = float(intercept_raw) if intercept_raw not in (None, "") else 0.0
        except (TypeError, ValueError):
            raise DicomError(f"{where}: frame {i}: RescaleSlope {slope_raw!r} / RescaleIntercept"
                             f" {intercept_raw!r} (Pixel Value Transformation Sequence) are not numbers;"
                             " fix the header") from None
        if slope == 0:
            raise DicomError(f"{where}: frame {i}: RescaleSlope is 0 in the Pixel Value Transformation"
                             f" Sequence, so every pixel would become RescaleIntercept ({intercept:g}): a"
                             " constant image. The header is broken; export the image again")
        out.append((slope, intercept))
    return out


def _check_rescale_slope(path: Path, ds: pydicom.Dataset) -> None:
    """Refuse RescaleSlope 0 (used when there is no Modality LUT Sequence): it maps every
    stored value to RescaleIntercept, a constant image that would train and attack as silently
    wrong data.

    Raises:
        DicomError: naming the file, when RescaleSlope is 0 (or not a number).
    """
    if "ModalityLUTSequence" in ds or "RescaleSlope" not in ds or "RescaleIntercept" not in ds:
        return
    raw = ds.RescaleSlope
    if raw is None or raw == "":
        return
    try:
        slope = float(raw)
    except (TypeError, ValueError):
        raise DicomError(f"{path}: RescaleSlope {raw!r} is not a number; fix the header") from None
    if slope == 0:
        raise DicomError(f"{path}: RescaleSlope is 0, so every pixel would become RescaleIntercept"
                         f" ({ds.RescaleIntercept}): a constant image. The header is broken; fix"
                         " RescaleSlope (usually 1) or export the image again")


def stored_value_problem(ds: pydicom.Dataset, stored: np.ndarray) -> str:
    """Why the decoded stored values are implausible for the header; '' when they look fine.

    Two checks, on the values before the modality LUT:

    - values outside the range BitsStored and PixelRepresentation allow (unsigned:
      0..2**BitsStored - 1; signed: -2**(BitsStored-1)..2**(BitsStored-1) - 1);
    - unsigned data (PixelRepresentation 0) that are signed data in disguise: the values span
      more than half the unsigned range, but read as two's-complement signed numbers of
      BitsStored bits they fit in a quarter of it (CT's -1024..-25 stored as 64512..65511 next
      to 0..1000). Binary images (two values, e.g. a 0/65535 mask) are not flagged.

    Args:
        ds: the header (BitsStored, BitsAllocated, PixelRepresentation).
        stored: the stored values (``ds.pixel_array``).

    Returns:
        A sentence naming the values and what is probably wrong, or ''.
    """
    if stored.size == 0 or not np.issubdtype(stored.dtype, np.integer):
        return ""
    unused = _unused_bits_problem(ds)
    if unused:
        return unused
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if not 1 <= bits <= 32:
        return ""
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    vmin, vmax = int(stored.min()), int(stored.max())
    if vmin < lo or vmax > hi:
        return (f"stored values {vmin}..{vmax} lie outside the range {lo}..{hi} that BitsStored {bits}"
                f" with PixelRepresentation {int(signed)} allows: the header's BitsStored or"
                " PixelRepresentation is wrong, so the modality LUT (and any HU window) is applied to"
                " wrong numbers; the image is used as stored, check it")
    if signed or bits < 8 or vmax - vmin <= 2 ** (bits - 1):
        return ""
    values = stored.astype(np.int64)
    as_signed = np.where(values >= 2 ** (bits - 1), values - 2 ** bits, values)
    smin, smax = int(as_signed.min()), int(as_signed.max())
    if smax - smin >= 2 ** (bits - 2) or len(np.unique(values[:: max(1, values.size // 65536)])) <= 2:
        return ""
    high = values[values >= 2 ** (bits - 1)]
    return (f"PixelRepresentation 0 (unsigned), but the stored values look like signed data: values"
            f" {int(high.min())}..{int(high.max())} next to {int(values[values < 2 ** (bits - 1)].min())}.."
            f"{int(values[values < 2 ** (bits - 1)].max())} would read {smin}..{smax} as signed"
            f" {bits}-bit numbers (e.g. CT air stored as 64512 instead of -1024). The header's"
            " PixelRepresentation is probably wrong (it should be 1); the image is used as stored, check it")


def _unused_bits_problem(ds: pydicom.Dataset) -> str:
    """For uncompressed pixel data with BitsStored < BitsAllocated: '' unless some raw values do
    not fit BitsStored (pydicom then drops the high bits, as the standard says, so the decoded
    values are the raw ones modulo 2**BitsStored)."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    alloc = int(ds.get("BitsAllocated", 16) or 16)
    bits = int(ds.get("BitsStored", alloc) or alloc)
    if ts is None or ts.is_encapsulated or "PixelData" not in ds or alloc not in (8, 16, 32) \
            or not 1 <= bits < alloc:
        return ""
    n = int(ds.get("Rows", 0)) * int(ds.get("Columns", 0)) * int(ds.get("NumberOfFrames", 1) or 1) \
        * int(ds.get("SamplesPerPixel", 1) or 1)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    order = ">" if str(ts) == "1.2.840.10008.1.2.2" else "<"
    dtype = np.dtype(f"{order}{'i' if signed else 'u'}{alloc // 8}")
    raw = np.frombuffer(ds.PixelData, dtype=dtype, count=min(n, len(ds.PixelData) // dtype.itemsize))
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    bad = (raw < lo) | (raw > hi)
    if not bad.any():
        return ""
    return (f"{int(bad.sum())} pixel(s) hold raw values outside the range {lo}..{hi} of BitsStored"
            f" {bits} (PixelRepresentation {int(signed)}; raw {int(raw.min())}..{int(raw.max())}):"
            " the bits above BitsStored are ignored, as the DICOM standard says (old files kept"
            " overlays there), so those pixels read modulo 2**BitsStored. If the image looks wrong,"
            " the header's BitsStored is wrong; the image is used as decoded, check it")


def _image_class(ds: pydicom.Dataset) -> str:
    """What says that ``ds`` should hold pixels ('MR Image Storage', '64x64 pixels'); '' for a
    file that is not an image (a report, a presentation state) or tells nothing."""
    sop = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    name = pydicom.uid.UID(str(sop)).name if sop else ""
    if "Image Storage" in name:
        return name
    if "Rows" in ds and "Columns" in ds:
        return f"{ds.Rows}x{ds.Columns} pixels"
    return ""


def _rescaled_range(ds: pydicom.Dataset, slope: float | None = None,
                    intercept: float | None = None) -> tuple[float, float]:
    """The lowest and highest value the stored bits can hold, after RescaleSlope/Intercept (the
    given ones, else the top-level attributes)."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    if slope is None:
        slope = float(ds.get("RescaleSlope", 1) or 1)
    if intercept is None:
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
    a, b = lo * slope + intercept, hi * slope + intercept
    return min(a, b), max(a, b)


def write_dicom(
    path: str | os.PathLike,
    stored: np.ndarray,
    *,
    modality: str,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
    photometric: str = "MONOCHROME2",
    pixel_spacing: tuple[float, float] = (1.0, 1.0),
    z_mm: float | None = None,
    instance_number: int = 1,
    slice_thickness: float | None = None,
    transfer_syntax: str = "1.2.840.10008.1.2.1",
    extra: dict | None = None,
) -> Path:
    """Write a minimal but valid single-frame grayscale DICOM file (used by the demo data and tests).

    ``stored`` is the (H, W) array of stored values (uint16 or int16); ``transfer_syntax`` may be a
    compressed one (RLE, JPEG-LS, JPEG 2000), encoded by pydicom's encoders.

    Args:
        path: the file to write (its folder is created).
        stored: (H, W) stored values, uint16 or int16 (PixelRepresentation follows the dtype; 16 bits).
        modality: ``CT``, ``MR``, ``MG`` (their image SOP classes) or another (Secondary Capture).
        patient_id: PatientID.
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID.
        sop_uid: SOPInstanceUID (a new random UID if None).
        slope: RescaleSlope (stored → modality units, e.g. HU).
        intercept: RescaleIntercept (modality units, e.g. HU).
        photometric: PhotometricInterpretation (``MONOCHROME2`` or ``MONOCHROME1``).
        pixel_spacing: PixelSpacing (row, column) in mm.
        z_mm: ImagePositionPatient z in mm (with an axial ImageOrientationPatient); None writes neither.
        instance_number: InstanceNumber.
        slice_thickness: SliceThickness in mm (not written if None).
        transfer_syntax: the transfer syntax UID (default Explicit VR Little Endian).
        extra: more attributes, keyword → value, set last.

    Returns:
        ``path`` as a Path.

    Raises:
        TypeError: ``stored`` is neither uint16 nor int16.
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, generate_uid

    stored = np.ascontiguousarray(stored)
    if stored.dtype not in (np.uint16, np.int16):
        raise TypeError("stored must be uint16 or int16")
    sop_uid = sop_uid or generate_uid()
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1")
    ds.SOPClassUID = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4",
                      "MG": "1.2.840.10008.5.1.4.1.1.1.2"}.get(modality, "1.2.840.10008.5.1.4.1.1.7")
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.PatientName = "ANONYMOUS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = instance_number
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelSpacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]
    if z_mm is not None:
        ds.ImagePositionPatient = [0.0, 0.0, float(z_mm)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    if slice_thickness is not None:
        ds.SliceThickness = slice_thickness
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    ds.PixelData = stored.tobytes()
    if str(transfer_syntax) != "1.2.840.10008.1.2.1":
        # keep the given SOP Instance UID (pydicom would draw a random one: demo data would differ per run)
        ds.compress(UID(transfer_syntax), stored, generate_instance_uid=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
