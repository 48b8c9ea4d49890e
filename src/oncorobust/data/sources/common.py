"""What every source adapter returns, and helpers they share.

An adapter turns a dataset's native layout into *lesion records*: one dict per lesion/image with
the manifest columns below. Pixels are not read here (except where a mask gives the ROI); the
preprocess step reads ``source`` (a path relative to the source root, or ``<set>:<part>:<index>``
for array datasets) and crops around ``(roi_row, roi_col)``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from oncorobust.data.dicom import read_header
from oncorobust.errors import DataError, DicomError

log = logging.getLogger("oncorobust.data.sources")

#: Columns of ``results/{ds}/manifest.csv`` (``split`` is added by the splitter).
MANIFEST_COLUMNS = ["sample_id", "patient_id", "label", "label_name", "split", "source", "frame",
                    "roi_row", "roi_col", "roi_size_px"]


@dataclass
class IngestResult:
    """Lesion records plus the inputs that were skipped, each with the file and the reason.

    Attributes:
        records: one dict per lesion/image (:func:`record`, the :data:`MANIFEST_COLUMNS`).
        skipped: ``{"file", "sample_id", "reason"}`` per input that could not be used (a bad
            file: with ``on_bad_file: error`` ingest stops on the first).
        ignored: ``{"file", "sample_id", "reason"}`` per file under a data folder that is not
            data and so is not read: hidden/system files (``.DS_Store``, ``Thumbs.db``), hidden
            and ``__MACOSX`` folders, files that are not images (notes, spreadsheets). They are
            listed in skipped.csv too (so that every file is accounted for) but never stop ingest.
    """

    records: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    ignored: list[dict] = field(default_factory=list)

    def ignore(self, file: str | os.PathLike, reason: str) -> None:
        """Record (and log at info level) a file that is not data and is not read; once per file.

        Args:
            file: the file or folder.
            reason: why it is not read (e.g. "hidden/system file (.DS_Store), not an image").
        """
        entry = {"file": str(file), "sample_id": "", "reason": reason}
        if entry in self.ignored:
            return
        log.info("not read: %s: %s", file, reason)
        self.ignored.append(entry)

    def skip(self, file: str | os.PathLike, reason: str, sample_id: str = "") -> None:
        """Record (and log as a warning) an input that could not be used.

        Args:
            file: the input file.
            reason: why it was skipped.
            sample_id: its sample, if known.
        """
        log.warning("skipped %s%s: %s", file, f" ({sample_id})" if sample_id else "", reason)
        self.skipped.append({"file": str(file), "sample_id": sample_id, "reason": reason})


def record(sample_id: str, patient_id: str, label: int, label_name: str, source: str,
           roi_row: float = np.nan, roi_col: float = np.nan, roi_size_px: float = np.nan,
           frame: int = -1, split: str = "") -> dict:
    """One lesion record with the :data:`MANIFEST_COLUMNS`.

    Args:
        sample_id: the sample's ID (unique in the dataset).
        patient_id: the patient's ID (the unit of the split).
        label: the class index.
        label_name: the class name.
        source: the file relative to the source root, or ``<set>:<part>:<index>`` for arrays.
        roi_row: row of the ROI centre in pixels (NaN: the whole image).
        roi_col: column of the ROI centre in pixels (NaN: the whole image).
        roi_size_px: the lesion's extent in pixels (NaN: unknown).
        frame: the frame / slice in the file (-1: a single image).
        split: ``train``, ``val``, ``test`` or '' (assigned later).

    Returns:
        The record dict.
    """
    return {"sample_id": sample_id, "patient_id": patient_id, "label": int(label),
            "label_name": label_name, "split": split, "source": source, "frame": int(frame),
            "roi_row": float(roi_row), "roi_col": float(roi_col), "roi_size_px": float(roi_size_px)}


def require_dir(path: str | os.PathLike | None, key: str) -> Path:
    """The folder a config key names; a DataError naming the key when it is absent.

    Args:
        path: the configured folder (None or '' when not set).
        key: the config key, named in the message (e.g. ``source.root``).

    Returns:
        The folder as a Path.

    Raises:
        DataError: ``path`` is empty or not an existing folder.
    """
    if not path:
        raise DataError(f"config key {key} is empty: set it to the folder that holds the data")
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{key} = {p}: no such folder. Point {key} at the folder that holds the data"
                        " (paths are relative to the directory you run snakemake from)")
    return p


def iter_files(root: Path, suffixes: Iterable[str] | None = None) -> Iterable[Path]:
    """Files under ``root`` in a stable order; ``suffixes`` lower-case, e.g. {'.xml'} ('' = none).

    Args:
        root: the folder walked recursively (hidden files are left out).
        suffixes: the file suffixes to keep, lower-case; None keeps every file.

    Yields:
        The file paths, folders and names sorted.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if suffixes is None or Path(name).suffix.lower() in suffixes:
                yield Path(dirpath) / name


#: folder names (lower-case) never searched for data, besides hidden ``.names``: left by
#: unzipping an archive made on a Mac, or by Windows
SYSTEM_FOLDERS = {"__macosx", "$recycle.bin", "system volume information"}


def system_folder_reason(name: str) -> str:
    """Why a folder is never searched for data ('' when it is searched).

    Args:
        name: the folder's name.

    Returns:
        '' or a reason for skipped.csv (a hidden folder, ``__MACOSX``...).
    """
    if name.lower() == "__macosx":
        return "a __MACOSX folder (left by unzipping an archive made on a Mac), not data; not searched"
    if name.startswith(".") or name.lower() in SYSTEM_FOLDERS:
        return f"hidden/system folder ({name}), not data; not searched"
    return ""


def walk_all(root: Path, result: IngestResult) -> Iterable[Path]:
    """Every file under ``root`` in a stable order; hidden/system folders are listed, not entered.

    Unlike :func:`iter_files`, hidden and system files are yielded too (the caller lists them,
    e.g. with :func:`~oncorobust.data.sources.images.classify_file`), so that no file is left
    out without a line in skipped.csv.

    Args:
        root: the folder walked recursively.
        result: receives each hidden/system folder (``.git``, ``__MACOSX``) as an ignored input.

    Yields:
        The file paths, folders and names sorted.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        keep = []
        for name in sorted(dirnames):
            why = system_folder_reason(name)
            if why:
                result.ignore(Path(dirpath) / name, why)
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            yield Path(dirpath) / name


def dicom_name(path: str | os.PathLike) -> bool:
    """Whether a file's name is one DICOM files carry: ``.dcm``/``.dicom``, no suffix (``IM0001``)
    or a numeric one (a UID such as ``1.2.840.113619.2.55.3.320``). Such a file that is not DICOM
    by its content is a broken DICOM file, reported by the DICOM reader (not silently passed over).

    Args:
        path: the file.

    Returns:
        True for a DICOM-like name (hidden files, ``.name``, never).
    """
    name = Path(path).name
    suffix = Path(name).suffix.lower()
    return not name.startswith(".") and (suffix in {".dcm", ".dicom", ""} or suffix[1:].isdigit())


def scan_headers(root: Path, result: IngestResult, companions: Iterable[str] = (),
                 what: str = "DICOM") -> list[tuple[Path, object]]:
    """Read the headers of every DICOM file below ``root``, whatever its name.

    A file is DICOM by its content (the 'DICM' marker at byte 128), so PACS exports named
    ``IM0001`` or ``1.2.840....320`` are read as well as ``*.dcm``. Every other file is listed:
    files with a DICOM-like name (:func:`dicom_name`) that cannot be read as skipped (bad files);
    hidden/system files, hidden folders and files that are not DICOM (text, images, ...) as
    ignored. Files whose suffix is in ``companions`` (the annotation
    files the adapter reads itself, e.g. ``.xml``) are passed over.

    Args:
        root: the folder walked recursively.
        result: receives the unreadable files as skipped inputs and the others as ignored ones.
        companions: lower-case suffixes of the files the adapter reads itself.
        what: the data the source reads, named in the reasons (e.g. "DICOM CT series").

    Returns:
        (path, pydicom header without pixels) per readable file, in a stable order.
    """
    from oncorobust.data.sources.images import classify_file, is_dicom_file

    companions = {c.lower() for c in companions}
    out = []
    for path in walk_all(root, result):
        if path.suffix.lower() in companions and not path.name.startswith("."):
            continue
        if not is_dicom_file(path):
            kind, why = classify_file(path)
            if kind == "dicom" or (kind == "unknown" and dicom_name(path)):
                pass  # a .dcm, or a PACS-like name, without the marker: the DICOM reader says why
            else:
                if kind in ("pillow", "nifti"):
                    why = f"an image file, not DICOM: the source reads {what} only; not read"
                elif kind == "unknown":
                    why = f"not a DICOM file (no 'DICM' marker at byte 128); the source reads {what}; not read"
                result.ignore(path, why)
                continue
        try:
            out.append((path, read_header(path)))
        except DicomError as exc:
            result.skip(path, str(exc).split(": ", 1)[-1])
    return out


def bbox_centre(mask: np.ndarray) -> tuple[float, float, float]:
    """Centre (row, col) and the larger side (pixels) of the bounding box of ``mask > 0``.

    Args:
        mask: a 2-D (H, W) mask.

    Returns:
        (row, col, side) in pixels.

    Raises:
        ValueError: the mask has no positive pixel.
    """
    ys, xs = np.nonzero(mask > 0)
    if ys.size == 0:
        raise ValueError("empty mask")
    return ((ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2,
            float(max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)))
