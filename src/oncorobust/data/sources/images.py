"""Image files other than DICOM: PNG, JPEG, TIFF, BMP (Pillow) and NIfTI (nibabel, optional).

:func:`read_image` is the one reader preprocess uses for every file-based source: it dispatches
on the file name and returns what :func:`~oncorobust.data.dicom.read_dicom` returns, float32 (H, W)
or (F, H, W) for a file holding several images (multi-page TIFF, a NIfTI volume's slices).

- Pillow images: greyscale modes (``L``, ``I;16``, ``I``, ``F``) keep their stored values (e.g.
  16-bit PNG); colour images (``RGB``, palette, ...) are converted to luminance (``L``, 0–255)
  with ``color="luminance"`` (the default), or kept as three channels (R, G, B; 0–255; alpha
  dropped) with ``color="rgb"``, which returns (H, W, 3) / (F, H, W, 3) for every file: a grey
  image (PNG, DICOM, NIfTI) is repeated to three equal channels. :func:`decode_image` also says
  the stored bit depth (8 for 8-bit images, 16/32 for 16/32-bit integer images, None for float
  data, DICOM after its rescale and NIfTI) so that preprocess can scale integers by it.
- NIfTI (``.nii``, ``.nii.gz``): the data with the header's scaling applied (``get_fdata``);
  slice ``k`` of a volume is ``data[:, :, k].T`` (rows = the second voxel axis, columns = the
  first), so a manifest's ``roi_row``/``roi_col`` are row/column of that picture and ``roi_slice``
  is ``k``. A 4-D file with more than one volume is refused.

Unreadable files raise :class:`ImageError`, a :class:`~oncorobust.errors.DicomError`, so the
``on_bad_file`` handling (skip and list in skipped.csv, or stop) is the same as for DICOM.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oncorobust.data.dicom import read_dicom, read_header
from oncorobust.errors import DicomError

PILLOW_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: suffixes of image files the folder format picks up (DICOM: .dcm/.dicom)
IMAGE_SUFFIXES = PILLOW_SUFFIXES | {".nii", ".gz", ".dcm", ".dicom"}


class ImageError(DicomError):
    """A PNG/JPEG/TIFF/NIfTI file cannot be read (same handling as an undecodable DICOM)."""


def image_kind(path: str | os.PathLike) -> str:
    """``pillow``, ``nifti`` or ``dicom`` (anything else, e.g. ``.dcm`` or no suffix).

    Args:
        path: the image file (only its name is read).

    Returns:
        The reader that decodes it.
    """
    name = Path(path).name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if Path(name).suffix in PILLOW_SUFFIXES:
        return "pillow"
    return "dicom"


def _nibabel():
    try:
        import nibabel
    except ImportError:
        raise ImageError("reading NIfTI files needs nibabel, an optional extra: pip install"
                         " 'oncorobust[nifti]' (or pip install nibabel)") from None
    return nibabel


def _read_nifti(path: Path) -> np.ndarray:
    nib = _nibabel()
    try:
        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:  # noqa: BLE001 (nibabel raises many kinds on a damaged file)
        raise ImageError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        return np.ascontiguousarray(data.T)
    if data.ndim == 3:
        return np.ascontiguousarray(np.transpose(data, (2, 1, 0)))  # (slices, rows, cols)
    raise ImageError(f"{path}: a NIfTI file of shape {data.shape}; give one 2-D image or one 3-D volume")


#: Pillow's greyscale modes whose values are kept as stored, and their bit depth (None: float)
GREY_MODES = {"L": 8, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": None}
#: ``preprocess.color`` values: one luminance channel, or three colour channels
COLORS = ("luminance", "rgb")
#: smallest side (pixels) of an image preprocess accepts
MIN_SIDE = 8


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image file.

    Attributes:
        pixels: float32 (H, W) or (F, H, W) for ``color="luminance"``; (H, W, 3) or
            (F, H, W, 3) for ``color="rgb"``. Values as stored (grey levels; 0–255 for 8-bit
            colour), after the modality LUT for DICOM and the header scaling for NIfTI.
        bits: bit depth of integer Pillow images (8: 8-bit grey, colour, palette, bilevel;
            16: 16-bit grey PNG/TIFF; 32: 32-bit integer TIFF); None for float TIFFs, DICOM
            (rescaled values) and NIfTI.
        colour: the file holds colour (three channels, or a palette) rather than grey.
    """

    pixels: np.ndarray
    bits: int | None
    colour: bool


def _read_pillow(path: Path, color: str = "luminance") -> tuple[np.ndarray, int | None, bool]:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    bits: set = set()
    colour = False
    try:
        with Image.open(path) as img:
            frames = []
            for frame in ImageSequence.Iterator(img):
                if frame.mode not in GREY_MODES:
                    grey = frame.mode in ("1", "LA", "La")
                    colour = colour or not grey
                    frame = frame.convert("RGB" if color == "rgb" and not grey else "L")
                bits.add(GREY_MODES.get(frame.mode, 8))
                frames.append(np.asarray(frame, dtype=np.float32))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    if not frames:
        raise ImageError(f"{path}: the image file holds no picture")
    if color == "rgb":
        frames = [f if f.ndim == 3 else np.repeat(f[..., None], 3, axis=-1) for f in frames]
    depth = None if None in bits else max(bits)
    if len(frames) == 1:
        return frames[0], depth, colour
    if len({f.shape for f in frames}) > 1:
        raise ImageError(f"{path}: a multi-page image whose pages differ in size")
    return np.stack(frames), depth, colour


def decode_image(path: str | os.PathLike, color: str = "luminance") -> DecodedImage:
    """Decode a DICOM, PNG/JPEG/TIFF/BMP or NIfTI file, with its bit depth.

    Args:
        path: the image file.
        color: ``luminance`` (colour converted to one grey channel, the default) or ``rgb``
            (three channels; grey images repeated to three equal channels).

    Returns:
        A :class:`DecodedImage`: pixels float32 (H, W) / (F, H, W), or with ``rgb``
        (H, W, 3) / (F, H, W, 3); the stored bit depth (None for float data).

    Raises:
        DicomError: (``ImageError`` for non-DICOM files) the file is missing or cannot be decoded.
        ValueError: an unknown ``color``.
    """
    if color not in COLORS:
        raise ValueError(f"color must be one of {COLORS}, not {color!r}")
    path = Path(path)
    kind = image_kind(path)
    if kind == "dicom":
        pixels, bits, colour = read_dicom(path), None, False
    elif not path.is_file():
        raise ImageError(f"{path}: no such file")
    elif kind == "nifti":
        pixels, bits, colour = _read_nifti(path), None, False
    else:
        pixels, bits, colour = _read_pillow(path, color)
    if color == "rgb" and kind != "pillow":
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    return DecodedImage(pixels, bits, colour)


def read_image(path: str | os.PathLike, color: str = "luminance") -> np.ndarray:
    """Pixels of a DICOM, PNG/JPEG/TIFF/BMP or NIfTI file as float32 (H, W) or (F, H, W).

    Args:
        path: the image file.
        color: ``luminance`` (default) or ``rgb``: then (H, W, 3) or (F, H, W, 3), grey repeated.

    Returns:
        The stored values (grey levels; DICOM after the modality LUT; NIfTI after its scaling).

    Raises:
        DicomError: (``ImageError`` for non-DICOM files) the file is missing or cannot be decoded.
    """
    return decode_image(path, color).pixels


def require_min_side(pixels: np.ndarray, path: str | os.PathLike, rgb: bool = False) -> None:
    """Refuse an image smaller than :data:`MIN_SIDE` pixels on either side.

    Such an image (e.g. 1×1 or 3×3) would be upscaled to the model's input size into a smooth
    blur that says nothing about the lesion.

    Args:
        pixels: one image, (H, W), or (H, W, C) when ``rgb``.
        path: its file, named in the message.
        rgb: ``pixels`` has a trailing channel axis.

    Raises:
        ImageError: a side shorter than :data:`MIN_SIDE` pixels (handled by ``on_bad_file``:
            listed in skipped.csv, or the run stops).
    """
    h, w = pixels.shape[:2] if rgb else pixels.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{path}: a {h}x{w} image (rows x columns) is smaller than {MIN_SIDE} pixels"
                         " on a side; it would be upscaled silently into a blur: remove it, or give"
                         " the larger image it was cut from with a ROI in a manifest")


def image_shape(path: str | os.PathLike) -> tuple[int, int, int]:
    """(frames, rows, columns) of an image file, from its header where the format allows.

    Args:
        path: a DICOM, NIfTI or Pillow image file.

    Returns:
        (frames, rows, columns); frames is 1 for a single image (DICOM: 0 rows/columns when the
        header has none).

    Raises:
        DicomError: the DICOM header cannot be read.
        ImageError: a NIfTI or Pillow file cannot be read, nibabel is missing, or a NIfTI file is not
            2-D or 3-D.
    """
    path = Path(path)
    kind = image_kind(path)
    if kind == "dicom":
        hdr = read_header(path)
        return int(hdr.get("NumberOfFrames", 1) or 1), int(hdr.get("Rows", 0)), int(hdr.get("Columns", 0))
    if kind == "nifti":
        nib = _nibabel()
        try:
            shape = tuple(int(v) for v in nib.load(str(path)).shape)
        except Exception as exc:  # noqa: BLE001
            raise ImageError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
        while len(shape) > 3 and shape[-1] == 1:
            shape = shape[:-1]
        if len(shape) == 2:
            return 1, shape[1], shape[0]
        if len(shape) == 3:
            return shape[2], shape[1], shape[0]
        raise ImageError(f"{path}: a NIfTI file of shape {shape}; give one 2-D image or one 3-D volume")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return int(getattr(img, "n_frames", 1)), int(img.height), int(img.width)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None


def whole_image(pixels: np.ndarray) -> np.ndarray:
    """An image padded to a square with its minimum (an image that is already the lesion's crop
    is used whole; the square keeps its aspect ratio through the resize).

    Args:
        pixels: (H, W), or (H, W, C) for colour (padded with the minimum over all channels).

    Returns:
        (S, S) or (S, S, C) with S = max(H, W), the image centred.
    """
    h, w = pixels.shape[:2]
    side = max(h, w)
    if h == w:
        return pixels
    top, left = (side - h) // 2, (side - w) // 2
    pad = ((top, side - h - top), (left, side - w - left)) + ((0, 0),) * (pixels.ndim - 2)
    return np.pad(pixels, pad, mode="constant", constant_values=float(pixels.min()))
