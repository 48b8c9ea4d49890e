"""Image files: DICOM, any image Pillow opens (PNG, JPEG, TIFF, BMP, WebP, GIF...) and NIfTI.

:func:`read_image` is the one reader preprocess uses for every file-based source: it dispatches
on the file (:func:`image_kind`) and returns what :func:`~oncorobust.data.dicom.read_dicom` returns,
float32 (H, W) or (F, H, W) for a file holding several images (multi-page TIFF, a NIfTI volume's
slices).

- Which reader: a file with the DICOM marker ('DICM' at byte 128) is DICOM whatever its name
  (PACS exports write ``IM0001`` or ``1.2.840....`` names); ``.nii``/``.nii.gz`` is NIfTI; a name
  ending in a suffix Pillow opens (``.png``, ``.jpg``, ``.webp``, ``.gif``, ...) is read by Pillow;
  another name is recognised by its content (:func:`classify_file` for the folder walkers, which
  also says why a file is not read: a hidden/system file, not an image, an unknown format).
- Pillow images: greyscale modes (``L``, ``I;16``, ``I``, ``F``) keep their stored values (e.g.
  16-bit PNG); colour images (``RGB``, palette, ...) are converted to luminance (``L``, 0–255)
  with ``color="luminance"`` (the default), or kept as three channels (R, G, B; 0–255; alpha
  dropped) with ``color="rgb"``, which returns (H, W, 3) / (F, H, W, 3) for every file: a grey
  image (PNG, DICOM, NIfTI) is repeated to three equal channels; a colour DICOM (RGB, YBR,
  PALETTE COLOR) is read in colour (with ``luminance`` it is refused, naming the setting).
  :func:`decode_image` also says the stored bit depth (8 for 8-bit images, 16/32 for 16/32-bit
  integer images, None for float data, DICOM after its rescale and NIfTI) so that preprocess can
  scale integers by it.
- NIfTI (``.nii``, ``.nii.gz``): the data with the header's scaling applied (``get_fdata``);
  slice ``k`` of a volume is ``data[:, :, k].T`` (rows = the second voxel axis, columns = the
  first), so a manifest's ``roi_row``/``roi_col`` are row/column of that picture and ``roi_slice``
  is ``k``. A 4-D file with more than one volume is refused.
- Size guard: an image over :data:`~oncorobust.data.dicom.MAX_PIXELS` (2^28) pixels, or a file
  over :data:`~oncorobust.data.dicom.MAX_VALUES` (2^29) values, is refused from its header before
  its pixels are decoded ("image too large (W×H px, ...)"); Pillow's own decompression-bomb check,
  which would stop with no file named, is replaced by it.

Unreadable files raise :class:`ImageError`, a :class:`~oncorobust.errors.DicomError`, so the
``on_bad_file`` handling (skip and list in skipped.csv, or stop) is the same as for DICOM.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oncorobust.data.dicom import decode_dicom, read_header, size_problem
from oncorobust.errors import DicomError

PILLOW_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif"}
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = {".dcm", ".dicom"}
#: names (lower-case) of files that operating systems and tools leave in folders; with every
#: name starting with '.' (``.DS_Store``, ``._name`` AppleDouble files) they are never read
SYSTEM_FILES = {"thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r", "$recycle.bin"}
#: suffixes of files that are certainly not images: listed as "not an image", never read
NON_IMAGE_SUFFIXES = {
    ".txt", ".csv", ".tsv", ".json", ".xml", ".yaml", ".yml", ".md", ".rst", ".html", ".htm", ".pdf",
    ".doc", ".docx", ".xls", ".xlsx", ".ods", ".odt", ".rtf", ".zip", ".tar", ".tgz", ".7z", ".rar",
    ".py", ".ipynb", ".log", ".ini", ".cfg", ".sh", ".bat", ".lnk", ".url", ".db", ".sqlite", ".pkl",
    ".npy", ".npz", ".pt", ".h5", ".hdf5", ".mat", ".mp4", ".avi", ".mov", ".mp3", ".wav",
}
#: Pillow formats recognised by their content in a file whose name has no image suffix (formats
#: with a reliable signature only: Pillow's TGA reader, e.g., would take almost any bytes)
SNIFF_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF", "JPEG2000", "PPM")


class ImageError(DicomError):
    """A PNG/JPEG/TIFF/NIfTI file cannot be read (same handling as an undecodable DICOM)."""


@functools.cache
def pillow_suffixes() -> frozenset[str]:
    """Lower-case suffixes of the image formats the installed Pillow opens (``.webp``, ...).

    Returns:
        Every suffix Pillow registers for a format it can open (not the save-only ones).
    """
    from PIL import Image

    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether a file is DICOM by its content: the 'DICM' marker after the 128-byte preamble.

    This is what ``pydicom.misc.is_dicom`` checks and what ``pydicom.dcmread`` needs (without
    ``force``); the file's name does not matter.

    Args:
        path: the file.

    Returns:
        True when bytes 128–131 are ``DICM``; False otherwise, or when the file cannot be read.
    """
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


@contextlib.contextmanager
def _pillow_open(path: Path, formats=None):
    """Pillow's ``Image.open`` with its decompression-bomb check lifted (it stops without naming
    the file): :func:`_require_size` applies the size guard instead, with the file and size."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=formats) as img:
                yield img
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _pillow_sniffs(path: Path) -> bool:
    """The file is an image of one of the :data:`SNIFF_FORMATS` (by its content)."""
    from PIL import UnidentifiedImageError

    try:
        with _pillow_open(path, SNIFF_FORMATS):
            return True
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        return False


def image_kind(path: str | os.PathLike) -> str:
    """The reader of an image file: ``dicom``, ``nifti``, ``pillow`` or ``unknown``.

    The DICOM marker ('DICM' at byte 128) makes a file DICOM whatever its name; then
    ``.nii``/``.nii.gz`` is NIfTI, ``.dcm``/``.dicom`` DICOM, a suffix Pillow opens (``.png``,
    ``.webp``, ...) Pillow. Another name (``IM0001``, ``1.2.840....320``, ``scan.img``) is read by
    Pillow when its content is a PNG/JPEG/TIFF/BMP/WebP/GIF/JPEG 2000/PPM image; else it is taken
    as DICOM when it has no suffix or a numeric one (a PACS file name: the DICOM reader then says
    what is wrong), and ``unknown`` otherwise.

    Args:
        path: the image file (a missing file is judged by its name).

    Returns:
        The reader that decodes it.
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_file() and is_dicom_file(path):
        return "dicom"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    suffix = Path(name).suffix
    if suffix in DICOM_SUFFIXES:
        return "dicom"
    if suffix in PILLOW_SUFFIXES or suffix in pillow_suffixes():
        return "pillow"
    if path.is_file() and _pillow_sniffs(path):
        return "pillow"
    if not suffix or suffix[1:].isdigit():
        return "dicom"
    return "unknown"


def _unknown_format(path: Path) -> str:
    return (f"{path}: unknown format: neither DICOM (no 'DICM' marker at byte 128) nor an image"
            " Pillow reads (PNG, JPEG, TIFF, BMP, WebP, GIF, ...) nor NIfTI (.nii, .nii.gz); convert"
            " it to one of these, or remove it")


def _is_text(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 4  # a character cut at the end of the sample
    return True


def classify_file(path: str | os.PathLike) -> tuple[str, str]:
    """What a file found under a data folder is, and why it is not read when it is not.

    Args:
        path: the file.

    Returns:
        ``(kind, reason)``. ``kind`` is ``dicom``, ``nifti`` or ``pillow`` (read; reason ''),
        ``system`` (a hidden/system file: ``.DS_Store``, ``._name``, ``Thumbs.db``,
        ``desktop.ini``...), ``other`` (not an image: a text file, a document, an archive) or
        ``unknown`` (an unknown format, or an image file Pillow cannot open): the last three
        with the reason to list in skipped.csv.
    """
    path = Path(path)
    name = path.name
    low = name.lower()
    if name.startswith(".") or low in SYSTEM_FILES:
        return "system", f"hidden/system file ({name}), not an image; not read"
    if is_dicom_file(path):
        return "dicom", ""
    if low.endswith(NIFTI_SUFFIXES):
        return "nifti", ""
    suffix = Path(low).suffix
    if suffix in DICOM_SUFFIXES:
        return "dicom", ""  # without the marker: the DICOM reader says what is wrong
    if suffix in NON_IMAGE_SUFFIXES:
        return "other", f"not an image (a {suffix} file); not read"
    if suffix in PILLOW_SUFFIXES or suffix in pillow_suffixes() or _pillow_sniffs(path):
        return "pillow", ""
    if _is_text(path):
        return "other", "not an image (a text file); not read"
    if path.stat().st_size == 0:
        return "unknown", "unknown format: an empty file (0 bytes); copy it again from the source"
    return "unknown", _unknown_format(path).split(": ", 1)[1]


def _nibabel():
    try:
        import nibabel
    except ImportError:
        raise ImageError("reading NIfTI files needs nibabel, an optional extra: pip install"
                         " 'oncorobust[nifti]' (or pip install nibabel)") from None
    return nibabel


def _nifti_frames(shape: tuple, path: Path) -> tuple[int, int, int]:
    """(slices, rows, columns) of a NIfTI data shape (trailing axes of length 1 dropped)."""
    shape = tuple(int(v) for v in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 2:
        return 1, shape[1], shape[0]
    if len(shape) == 3:
        return shape[2], shape[1], shape[0]
    raise ImageError(f"{path}: a NIfTI file of shape {shape}; give one 2-D image or one 3-D volume")


def _read_nifti(path: Path) -> np.ndarray:
    nib = _nibabel()
    try:
        img = nib.load(str(path))
        shape = img.shape
    except Exception as exc:  # noqa: BLE001 (nibabel raises many kinds on a damaged file)
        raise ImageError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    _require_size(path, *_nifti_frames(shape, path))
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:  # noqa: BLE001
        raise ImageError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        return np.ascontiguousarray(data.T)
    if data.ndim == 3:
        return np.ascontiguousarray(np.transpose(data, (2, 1, 0)))  # (slices, rows, cols)
    raise ImageError(f"{path}: a NIfTI file of shape {data.shape}; give one 2-D image or one 3-D volume")


def _require_size(path: Path, frames: int, rows: int, cols: int, samples: int = 1) -> None:
    """The size guard (:func:`~oncorobust.data.dicom.size_problem`) as an :class:`ImageError`."""
    why = size_problem(rows, cols, frames, samples)
    if why:
        raise ImageError(f"{path}: {why}")


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
    from PIL import ImageSequence, UnidentifiedImageError

    bits: set = set()
    colour = False
    try:
        with _pillow_open(path) as img:
            _require_size(path, int(getattr(img, "n_frames", 1) or 1), img.height, img.width,
                          3 if color == "rgb" else 1)
            frames = []
            for frame in ImageSequence.Iterator(img):
                if frame.mode not in GREY_MODES:
                    grey = frame.mode in ("1", "LA", "La")
                    colour = colour or not grey
                    frame = frame.convert("RGB" if color == "rgb" and not grey else "L")
                bits.add(GREY_MODES.get(frame.mode, 8))
                frames.append(np.asarray(frame, dtype=np.float32))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
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
    """Decode a DICOM, Pillow (PNG/JPEG/TIFF/BMP/WebP/...) or NIfTI file, with its bit depth.

    The reader is chosen by :func:`image_kind` (DICOM by its content, whatever the file's name).

    Args:
        path: the image file.
        color: ``luminance`` (colour converted to one grey channel, the default; a colour DICOM
            is refused) or ``rgb`` (three channels; grey images repeated to three equal channels).

    Returns:
        A :class:`DecodedImage`: pixels float32 (H, W) / (F, H, W), or with ``rgb``
        (H, W, 3) / (F, H, W, 3); the stored bit depth (None for float data and grey DICOM).

    Raises:
        DicomError: (``ImageError`` for non-DICOM files) the file is missing, in an unknown
            format, larger than the size guard allows, or cannot be decoded; a colour DICOM with
            ``color="luminance"``.
        ValueError: an unknown ``color``.
    """
    if color not in COLORS:
        raise ValueError(f"color must be one of {COLORS}, not {color!r}")
    path = Path(path)
    kind = image_kind(path)
    if kind == "dicom":
        pixels, bits, colour = decode_dicom(path, colour=color == "rgb")
    elif not path.is_file():
        raise ImageError(f"{path}: no such file")
    elif kind == "unknown":
        raise ImageError(_unknown_format(path))
    elif kind == "nifti":
        pixels, bits, colour = _read_nifti(path), None, False
    else:
        pixels, bits, colour = _read_pillow(path, color)
    if color == "rgb" and kind != "pillow" and not colour:
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
        ImageError: a NIfTI or Pillow file cannot be read, nibabel is missing, a NIfTI file is not
            2-D or 3-D, or the file is in an unknown format.
    """
    path = Path(path)
    kind = image_kind(path)
    if kind == "dicom":
        hdr = read_header(path)
        return int(hdr.get("NumberOfFrames", 1) or 1), int(hdr.get("Rows", 0)), int(hdr.get("Columns", 0))
    if kind == "unknown":
        raise ImageError(_unknown_format(path) if path.is_file() else f"{path}: no such file")
    if kind == "nifti":
        nib = _nibabel()
        try:
            shape = nib.load(str(path)).shape
        except Exception as exc:  # noqa: BLE001
            raise ImageError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
        return _nifti_frames(shape, path)
    from PIL import UnidentifiedImageError

    try:
        with _pillow_open(path) as img:
            return int(getattr(img, "n_frames", 1) or 1), int(img.height), int(img.width)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
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
