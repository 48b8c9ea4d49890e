"""Institutional data (e.g. the paper's brain-MRI registry): a manifest CSV the user writes.

Columns (see config/README.md):

- ``patient_id``, ``sample_id``, ``label`` — required; ``label`` is a class name from
  ``source.classes`` (case-insensitive) or its 0-based index;
- ``path`` — a DICOM file, or a series folder (slices ordered by ImagePositionPatient z, then
  InstanceNumber), relative to ``source.root`` (default: the manifest's folder) or absolute;
- the ROI, either ``roi_row`` + ``roi_col`` (pixels, origin top-left) with, for a series,
  ``roi_slice`` (0-based index in that order) or ``roi_z_mm``; or ``mask_path``, a mask DICOM of
  the image's size (value > 0 inside; for a series, its ImagePositionPatient z picks the slice);
- ``roi_size_px`` — optional lesion extent in pixels (sets the crop size with ``crop_margin``);
- ``split`` — optional: train/val/test given by the user are kept (and checked for leakage).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..dicom import read_dicom, read_header
from ..errors import DataError, DicomError
from .common import IngestResult, bbox_centre, iter_files, record

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


def ingest(cfg: dict, result: IngestResult) -> None:
    """Append one record per manifest row to ``result``."""
    manifest = Path(cfg.get("manifest") or "")
    if not manifest.is_file():
        raise DataError(f"source.manifest = {manifest}: no such file; write the manifest CSV"
                        " described in config/README.md and point source.manifest at it")
    root = Path(cfg.get("root") or manifest.parent)
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    df.columns = [c.strip().lower() for c in df.columns]
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{manifest}: missing column(s) {missing}; required: {REQUIRED}")
    has_centre = {"roi_row", "roi_col"} <= set(df.columns)
    if not has_centre and "mask_path" not in df.columns:
        raise DataError(f"{manifest}: give each lesion's ROI as roi_row + roi_col or as mask_path")
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
        try:
            if path.is_dir():
                slices = _series_slices(path)
            elif path.is_file():
                slices = [(math.nan, path)]
            else:
                result.skip(path, "no such DICOM file or series folder", sid)
                continue
            rr, cc, size = _num(row.get("roi_row")), _num(row.get("roi_col")), _num(row.get("roi_size_px"))
            z_mm, k = _num(row.get("roi_z_mm")), _num(row.get("roi_slice"))
            mask_rel = str(row.get("mask_path", "")).strip()
            if mask_rel and (math.isnan(rr) or math.isnan(cc)):
                mask_file = root / mask_rel
                rr, cc, size = bbox_centre(read_dicom(mask_file))
                ipp = read_header(mask_file).get("ImagePositionPatient")
                if ipp is not None and math.isnan(k):
                    z_mm = float(ipp[2])
            if math.isnan(rr) or math.isnan(cc):
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
        except DicomError as exc:
            result.skip(path, str(exc), sid)
            continue
        except ValueError:
            result.skip(row.get("mask_path", ""), "ROI mask is empty", sid)
            continue
        source = chosen.relative_to(root) if chosen.is_relative_to(root) else chosen
        result.records.append(record(
            sample_id=sid, patient_id=pid, label=label, label_name=classes[label], source=str(source),
            roi_row=rr, roi_col=cc, roi_size_px=size, split=str(row.get("split", "")).strip().lower()))
