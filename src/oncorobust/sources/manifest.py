"""Institutional data (e.g. the paper's brain-MRI registry): a manifest CSV the user writes.

Columns (see config/README.md):

- ``patient_id``, ``sample_id``, ``label`` — required; ``label`` is a class name from
  ``source.classes`` (case-insensitive) or its 0-based index;
- ``path`` — a DICOM file, or a series folder (slices ordered by ImagePositionPatient z, then
  InstanceNumber), or a PNG/JPEG/TIFF/NIfTI file (read by :mod:`.images`; a NIfTI volume's slice
  is ``roi_slice``), relative to ``source.root`` (default: the manifest's folder) or absolute;
- the ROI, either ``roi_row`` + ``roi_col`` (pixels, origin top-left) with, for a series,
  ``roi_slice`` (0-based index in that order) or ``roi_z_mm``; or ``mask_path``, a mask DICOM of
  the image's size (value > 0 inside; for a series, its ImagePositionPatient z picks the slice;
  a mask of another size is skipped, listed in skipped.csv);
- a multi-frame DICOM file as ``path`` needs ``roi_slice``: the 0-based frame index (stored as
  the record's ``frame``);
- ``roi_size_px`` — optional lesion extent in pixels (sets the crop size with ``crop_margin``);
- ``split`` — optional: train/val/test given by the user are kept (and checked for leakage).

A manifest without any ROI column (no ``roi_row``/``roi_col``, no ``mask_path``) lists images that
are already lesion crops: each is used whole (``roi_row``/``roi_col`` stay empty; preprocess pads
it to a square).
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import pandas as pd

from ..dicom import read_header
from ..errors import DataError, DicomError
from .common import IngestResult, bbox_centre, iter_files, record
from .images import image_kind, image_shape, read_image

log = logging.getLogger("oncorobust.sources.manifest")

REQUIRED = ["patient_id", "sample_id", "label", "path"]


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _series_slices(folder: Path) -> list[tuple[float, Path]]:
    slices = []
    for f in iter_files(folder, {".dcm", ".dicom", ""}):
        hdr = read_header(f)
        ipp = hdr.get("ImagePositionPatient")
        z = float(ipp[2]) if ipp is not None else float(hdr.get("InstanceNumber", len(slices)))
        slices.append((z, f))
    if not slices:
        raise DicomError(f"{folder}: series folder holds no DICOM files")
    return sorted(slices, key=lambda t: (t[0], str(t[1])))


_DELIMITERS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


def read_manifest_csv(manifest: Path) -> pd.DataFrame:
    """The manifest CSV as strings (column names stripped and lower-cased).

    A Latin-1 (or any non-UTF-8) file is refused rather than guessed: a wrongly decoded ``path``
    would point at no file, and IDs would silently change.

    Args:
        manifest: the CSV file.

    Returns:
        One row per lesion, every cell a string ('' when empty).

    Raises:
        DataError: naming the file when it is empty, not UTF-8, separated by something other than
            commas, or not parseable as CSV.
    """
    raw = manifest.read_bytes()
    if not raw.strip():
        raise DataError(f"{manifest}: the manifest is empty ({len(raw)} bytes); write a header line"
                        f" ({','.join(REQUIRED)}, ROI columns) and one row per lesion (config/README.md)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{manifest}: not UTF-8 (byte 0x{raw[exc.start]:02x} on line {line}; a Latin-1 /"
                        " Windows-1252 export?). Re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8"
                        " old.csv > new.csv`; the encoding is not guessed because paths and IDs would"
                        " silently change") from None
    header = text.splitlines()[0]
    need = len(REQUIRED) - 1
    if header.count(",") < need:
        found = max(_DELIMITERS, key=header.count)
        if header.count(found) >= need:
            raise DataError(f"{manifest}: the columns are separated by {_DELIMITERS[found]} ({found!r}),"
                            " not commas; save it as comma-separated CSV (e.g. in a spreadsheet:"
                            " 'CSV, comma delimited')")
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{manifest}: not a valid CSV ({str(exc).strip()}); fix the file") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    return df


def _frame_index(where: str, image: Path, k: float) -> int:
    """The frame of a single DICOM file that ``roi_slice`` selects (-1: the file is one image).

    Without ``roi_slice`` the file is not opened here (pixels are read at preprocess, which
    refuses a multi-frame file without a frame index). With it, the header must agree: a
    multi-frame file needs the index inside its frames; a single-frame image accepts only 0.
    """
    if math.isnan(k):
        return -1
    n_frames = image_shape(image)[0]  # DICOM: NumberOfFrames; NIfTI: slices; TIFF: pages
    if n_frames > 1:
        if not 0 <= int(k) < n_frames:
            raise DataError(f"{where}: roi_slice {int(k)} outside the {n_frames} frames of {image}")
        return int(k)
    if not math.isnan(k) and int(k) != 0:
        raise DataError(f"{where}: roi_slice {int(k)} given, but {image} holds a single image; leave"
                        " roi_slice empty, or point path at the series folder / multi-frame file")
    return -1


def ingest(cfg: dict, result: IngestResult) -> None:
    """Append one record per manifest row to ``result``.

    Args:
        cfg: the source config (``manifest``, optional ``root`` and ``classes``).
        result: where records and skipped inputs (file + reason) are appended.

    Raises:
        DataError: the manifest is missing, unreadable (see :func:`read_manifest_csv`) or lacks
            columns, or a row has no IDs, an unknown label, no ROI, or a slice/frame index
            outside its image. Unreadable DICOM files, and masks that are empty or whose size
            differs from their image, are skipped with the reason instead.
    """
    manifest = Path(cfg.get("manifest") or "")
    if not manifest.is_file():
        raise DataError(f"source.manifest = {manifest}: no such file; write the manifest CSV"
                        " described in config/README.md and point source.manifest at it")
    root = Path(cfg.get("root") or manifest.parent)
    df = read_manifest_csv(manifest)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{manifest}: missing column(s) {missing}; required: {REQUIRED}")
    has_centre = {"roi_row", "roi_col"} <= set(df.columns)
    whole = not has_centre and "mask_path" not in df.columns and not ({"roi_row", "roi_col"} & set(df.columns))
    if not has_centre and "mask_path" not in df.columns and not whole:
        raise DataError(f"{manifest}: give each lesion's ROI as roi_row + roi_col or as mask_path")
    if whole:
        log.info("%s has no ROI columns (roi_row/roi_col, mask_path): every image is used whole, as"
                 " an image that is already the lesion's crop", manifest)
    classes = [str(c).lower() for c in cfg.get("classes", ["benign", "malignant"])]
    for i, row in enumerate(df.to_dict("records"), start=2):  # line 1 is the header
        where = f"{manifest}:{i}"
        sid, pid = row["sample_id"].strip(), row["patient_id"].strip()
        label_raw = row["label"].strip().lower()
        if not sid or not pid:
            raise DataError(f"{where}: empty sample_id or patient_id")
        if label_raw in classes:
            label = classes.index(label_raw)
        elif label_raw.isdigit() and int(label_raw) < len(classes):
            label = int(label_raw)
        else:
            raise DataError(f"{where}: label {row['label']!r} is not one of source.classes {classes}"
                            " (or its index); fix the row or the classes key")
        path = root / row["path"].strip()
        frame = -1
        try:
            if path.is_dir():
                slices = _series_slices(path)
            elif path.is_file():
                slices = [(math.nan, path)]
            else:
                result.skip(path, "no such DICOM file, series folder or image file", sid)
                continue
            rr, cc, size = _num(row.get("roi_row")), _num(row.get("roi_col")), _num(row.get("roi_size_px"))
            z_mm, k = _num(row.get("roi_z_mm")), _num(row.get("roi_slice"))
            mask_rel = str(row.get("mask_path", "")).strip()
            mask_file, mask_shape = None, None
            if mask_rel and (math.isnan(rr) or math.isnan(cc)):
                mask_file = root / mask_rel
                mask = read_image(mask_file)
                if mask.ndim == 3 and image_kind(mask_file) != "dicom" and not math.isnan(k) \
                        and 0 <= int(k) < mask.shape[0]:
                    mask = mask[int(k)]  # a NIfTI / multi-page mask volume: the lesion's slice
                if mask.ndim == 3:
                    if mask.shape[0] != 1:
                        result.skip(mask_file, f"ROI mask has {mask.shape[0]} frames; give a single-frame"
                                    " mask of the lesion's slice", sid)
                        continue
                    mask = mask[0]
                if not (mask > 0).any():
                    result.skip(mask_file, "ROI mask is empty (no value > 0)", sid)
                    continue
                mask_shape = mask.shape
                rr, cc, size = bbox_centre(mask)
                ipp = read_header(mask_file).get("ImagePositionPatient") if image_kind(mask_file) == "dicom" else None
                if ipp is not None and math.isnan(k):
                    z_mm = float(ipp[2])
            if (math.isnan(rr) or math.isnan(cc)) and not whole:
                raise DataError(f"{where}: no ROI (roi_row/roi_col empty and no mask_path)")
            if len(slices) > 1:
                if not math.isnan(k):
                    if not 0 <= int(k) < len(slices):
                        raise DataError(f"{where}: roi_slice {int(k)} outside the series' {len(slices)} slices")
                    chosen = slices[int(k)][1]
                elif not math.isnan(z_mm):
                    chosen = min(slices, key=lambda t: abs(t[0] - z_mm))[1]
                else:
                    raise DataError(f"{where}: {path} is a series; give roi_slice or roi_z_mm (or a mask_path)")
            else:
                chosen = slices[0][1]
                frame = _frame_index(where, chosen, k)
            if mask_shape is not None:
                shape = image_shape(chosen)[1:]
                if tuple(mask_shape) != shape:
                    result.skip(mask_file, f"ROI mask is {mask_shape[0]}x{mask_shape[1]} but its image"
                                f" {chosen} is {shape[0]}x{shape[1]}: the ROI would be in the wrong place;"
                                " give a mask of the image's size", sid)
                    continue
        except DicomError as exc:
            result.skip(path, str(exc), sid)
            continue
        source = chosen.relative_to(root) if chosen.is_relative_to(root) else chosen
        result.records.append(record(
            sample_id=sid, patient_id=pid, label=label, label_name=classes[label], source=str(source),
            roi_row=rr, roi_col=cc, roi_size_px=size, frame=frame,
            split=str(row.get("split", "")).strip().lower()))
