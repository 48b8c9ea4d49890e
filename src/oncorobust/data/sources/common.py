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
        skipped: ``{"file", "sample_id", "reason"}`` per input that could not be used.
    """

    records: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

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
    """Files under ``root`` in a stable order; ``suffixes`` lower-case, e.g. {'.dcm'} ('' = none).

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


def scan_headers(root: Path, result: IngestResult) -> list[tuple[Path, object]]:
    """Read the headers of every DICOM file below ``root`` (files named *.dcm or without suffix).

    Unreadable files are recorded as skipped; returns (path, header) pairs.

    Args:
        root: the folder walked recursively.
        result: receives the unreadable files as skipped inputs.

    Returns:
        (path, pydicom header without pixels) per readable file, in :func:`iter_files` order.
    """
    out = []
    for path in iter_files(root, {".dcm", ".dicom", ""}):
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
