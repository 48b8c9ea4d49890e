"""Image files other than DICOM: PNG, JPEG, TIFF, BMP (Pillow) and NIfTI (nibabel, optional).

:func:`read_image` is the one reader preprocess uses for every file-based source: it dispatches
on the file name and returns what :func:`~oncorobust.dicom.read_dicom` returns, float32 (H, W)
or (F, H, W) for a file holding several images (multi-page TIFF, a NIfTI volume's slices).

- Pillow images: greyscale modes (``L``, ``I;16``, ``I``, ``F``) keep their stored values (e.g.
  16-bit PNG); colour images (``RGB``, palette, ...) are converted to luminance (``L``, 0–255),
  because every dataset of this project is one-channel.
- NIfTI (``.nii``, ``.nii.gz``): the data with the header's scaling applied (``get_fdata``);
  slice ``k`` of a volume is ``data[:, :, k].T`` (rows = the second voxel axis, columns = the
  first), so a manifest's ``roi_row``/``roi_col`` are row/column of that picture and ``roi_slice``
  is ``k``. A 4-D file with more than one volume is refused.

Unreadable files raise :class:`ImageError`, a :class:`~oncorobust.errors.DicomError`, so the
``on_bad_file`` handling (skip and list in skipped.csv, or stop) is the same as for DICOM.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..dicom import read_dicom, read_header
from ..errors import DicomError

PILLOW_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: suffixes of image files the folder format picks up (DICOM: .dcm/.dicom)
IMAGE_SUFFIXES = PILLOW_SUFFIXES | {".nii", ".gz", ".dcm", ".dicom"}


class ImageError(DicomError):
    """A PNG/JPEG/TIFF/NIfTI file cannot be read (same handling as an undecodable DICOM)."""


def image_kind(path: str | os.PathLike) -> str:
    """``pillow``, ``nifti`` or ``dicom`` (anything else, e.g. ``.dcm`` or no suffix)."""
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


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            frames = []
            for frame in ImageSequence.Iterator(img):
                if frame.mode not in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
                    frame = frame.convert("L")
                frames.append(np.asarray(frame, dtype=np.float32))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    if not frames:
        raise ImageError(f"{path}: the image file holds no picture")
    if len(frames) == 1:
        return frames[0]
    if len({f.shape for f in frames}) > 1:
        raise ImageError(f"{path}: a multi-page image whose pages differ in size")
    return np.stack(frames)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Pixels of a DICOM, PNG/JPEG/TIFF/BMP or NIfTI file as float32 (H, W) or (F, H, W).

    Raises:
        DicomError: (``ImageError`` for non-DICOM files) the file is missing or cannot be decoded.
    """
    path = Path(path)
    kind = image_kind(path)
    if kind == "dicom":
        return read_dicom(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    return _read_nifti(path) if kind == "nifti" else _read_pillow(path)


def image_shape(path: str | os.PathLike) -> tuple[int, int, int]:
    """(frames, rows, columns) of an image file, from its header where the format allows."""
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
    """A (H, W) image padded to a square with its minimum (an image that is already the lesion's
    crop is used whole; the square keeps its aspect ratio through the resize)."""
    h, w = pixels.shape
    side = max(h, w)
    if h == w:
        return pixels
    top, left = (side - h) // 2, (side - w) // 2
    return np.pad(pixels, ((top, side - h - top), (left, side - w - left)), mode="constant",
                  constant_values=float(pixels.min()))
