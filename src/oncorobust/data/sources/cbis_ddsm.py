"""CBIS-DDSM: the case-description CSVs plus the DICOM download tree.

The tree as downloaded does not match the CSV paths (see FORMATS.md), so files are matched by
the case folder name (first component of each CSV path, e.g. ``Mass-Training_P_00001_LEFT_CC``)
and the Series Instance UID read from the DICOM headers — never by literal path. Which of the
abnormality's files is the ROI mask is decided by content, not by its name (mass and calc CSVs
disagree): the mask has the full mammogram's shape. The lesion centre is the centre of the
mask's bounding box (mask value > 0 is inside).

Labels: ``MALIGNANT`` → 1; ``BENIGN`` and ``BENIGN_WITHOUT_CALLBACK`` → 0.

``source.abnormality`` keeps the rows of the ``mass_*`` CSVs, the ``calc_*`` CSVs or both (the
paper used the 1,696 mass lesions). With ``source.official_split`` the rows of the
``*_test_set.csv`` files form the test split (``split`` = ``test`` in the manifest) and the
training rows are left for ingest to split into train and validation by patient; training rows of
a patient who also has test rows (possible with ``abnormality: both``) are skipped and listed, so
that no patient sits on both sides.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path, PurePosixPath

import pandas as pd

from oncorobust.data.dicom import read_dicom
from oncorobust.errors import DataError, DicomError
from oncorobust.data.sources.common import IngestResult, bbox_centre, iter_files, log, record, require_dir, scan_headers

LABELS = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}
#: Values of ``source.abnormality``.
ABNORMALITIES = ("mass", "calc", "both")
_REQUIRED = ["patient_id", "abnormality_id", "pathology", "image_file_path", "roi_mask_file_path",
             "cropped_image_file_path"]


def _norm_column(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")


def read_case_csv(path: Path) -> pd.DataFrame:
    """Read one case-description CSV: normalised column names, every cell stripped.

    Args:
        path: a ``{mass,calc}_case_description_{train,test}_set.csv`` file.

    Returns:
        One row per abnormality, plus ``csv`` (the file name), ``kind`` (``mass`` or ``calc``,
        from the file name, else the ``abnormality_type`` column) and ``part`` (``train``,
        ``test`` or ``""`` when the file name says neither).

    Raises:
        DataError: a required column is missing.
    """
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.columns = [_norm_column(c) for c in df.columns]  # 'breast density' == 'breast_density'
    df = df.apply(lambda col: col.str.strip())
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; is this a CBIS-DDSM case-description CSV?")
    df["csv"] = path.name
    name = path.name.lower()
    if name.startswith("mass") or name.startswith("calc"):
        df["kind"] = name[:4]
    else:
        kind = df.get("abnormality_type", pd.Series("", index=df.index)).str.lower().str[:4]
        df["kind"] = kind.where(kind.isin(["mass", "calc"]), "")
    df["part"] = "test" if "test" in name else ("train" if "train" in name else "")
    return df


def _case_and_series(csv_path: str) -> tuple[str, str]:
    parts = PurePosixPath(csv_path.replace("\\", "/")).parts
    return (parts[0] if parts else ""), (parts[2] if len(parts) > 2 else "")


def ingest(cfg: dict, result: IngestResult) -> None:
    """Append one record per abnormality row of the case-description CSVs to ``result``.

    Args:
        cfg: the dataset's ``source`` config: ``root``, optional ``csv_root``, ``abnormality``
            (``mass``, ``calc`` or ``both``, default both) and ``official_split`` (default
            False: ingest splits every row by patient).
        result: receives the records (``split`` = ``test`` for official test rows) and every
            skipped row with its reason.

    Raises:
        DataError: no case-description CSV, an unknown ``abnormality``, no row of the chosen
            kind, or (with ``official_split``) a CSV whose name says neither train nor test.
    """
    root = require_dir(cfg.get("root"), "source.root")
    csv_root = require_dir(cfg.get("csv_root") or root, "source.csv_root")
    abnormality = cfg.get("abnormality") or "both"
    if abnormality not in ABNORMALITIES:
        raise DataError(f"source.abnormality = {abnormality!r}: choose one of {list(ABNORMALITIES)}")
    official = bool(cfg.get("official_split", False))
    csvs = sorted(p for p in iter_files(csv_root, {".csv"}) if "case_description" in p.name)
    if not csvs:
        raise DataError(f"no *case_description*.csv under {csv_root}: set source.csv_root to the folder"
                        " holding mass/calc_case_description_{train,test}_set.csv")
    table = pd.concat([read_case_csv(p) for p in csvs], ignore_index=True)
    if abnormality != "both":
        table = table[table.kind == abnormality].reset_index(drop=True)
        if table.empty:
            raise DataError(f"source.abnormality = {abnormality}: no {abnormality}_case_description_*.csv"
                            f" rows under {csv_root} ({', '.join(p.name for p in csvs)})")
    if official:
        unnamed = sorted(set(table.csv[table.part == ""]))
        if unnamed:
            raise DataError(f"source.official_split: {unnamed} under {csv_root} are neither *train* nor"
                            " *test* CSVs; rename them as TCIA does (..._train_set.csv, ..._test_set.csv)"
                            " or set official_split: false")
        test_patients = set(table.patient_id[table.part == "test"])
        leak = (table.part == "train") & table.patient_id.isin(test_patients)
        for row in table[leak].itertuples(index=False):
            result.skip(row.csv, f"patient {row.patient_id} also has rows in the official test set;"
                        " training row dropped so that no patient is in two splits",
                        f"{_case_and_series(row.image_file_path)[0]}_{row.abnormality_id}")
        table = table[~leak].reset_index(drop=True)

    # index the download tree: case folder name -> series UID -> [(path, rows, cols)]
    index: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    cases = {_case_and_series(v)[0] for col in ("image_file_path", "roi_mask_file_path",
                                                  "cropped_image_file_path") for v in table[col]}
    for path, hdr in scan_headers(root, result, {".csv"}, "DICOM mammograms"):
        case = next((part for part in path.relative_to(root).parts if part in cases), None)
        if case is None:
            continue
        index[case][str(hdr.get("SeriesInstanceUID", ""))].append(
            (path, int(hdr.get("Rows", 0)), int(hdr.get("Columns", 0))))

    shapes: dict[Path, tuple[int, int]] = {}
    for row in table.itertuples(index=False):
        sample_id = f"{_case_and_series(row.image_file_path)[0]}_{row.abnormality_id}"
        label = LABELS.get(row.pathology.upper())
        if label is None:
            result.skip(row.csv, f"pathology {row.pathology!r} is none of {sorted(LABELS)}", sample_id)
            continue
        case, series = _case_and_series(row.image_file_path)
        full = _find(index, case, series)
        if full is None:
            result.skip(row.image_file_path, f"full mammogram not found under {root} (case folder"
                        f" {case!r}, series UID ...{series[-8:]})", sample_id)
            continue
        full_path, h, w = full
        # the mask: any file of the abnormality's folder (mask or crop series) with the full shape
        roi_case = _case_and_series(row.roi_mask_file_path)[0]
        candidates = [c for s in (_case_and_series(row.roi_mask_file_path)[1],
                                  _case_and_series(row.cropped_image_file_path)[1])
                      for c in index.get(roi_case, {}).get(s, [])]
        if not candidates:
            candidates = [c for files in index.get(roi_case, {}).values() for c in files]
        masks = [c for c in candidates if (c[1], c[2]) == (h, w)]
        if not masks:
            reason = ("ROI mask not found" if not candidates else
                      f"no ROI mask of the mammogram's size {h}x{w} (found"
                      f" {sorted({(c[1], c[2]) for c in candidates})})")
            result.skip(row.roi_mask_file_path, reason, sample_id)
            continue
        try:
            centre_row, centre_col, extent = bbox_centre(read_dicom(masks[0][0]))
        except DicomError as exc:
            result.skip(masks[0][0], str(exc).split(": ", 1)[-1], sample_id)
            continue
        except ValueError:
            result.skip(masks[0][0], "ROI mask is empty", sample_id)
            continue
        shapes[full_path] = (h, w)
        result.records.append(record(
            sample_id=sample_id, patient_id=row.patient_id, label=label,
            label_name="malignant" if label else "benign", source=str(full_path.relative_to(root)),
            roi_row=centre_row, roi_col=centre_col, roi_size_px=extent,
            split="test" if official and row.part == "test" else ""))
    log.info("CBIS-DDSM: %d abnormalities from %d CSV rows (%s%s)", len(result.records), len(table),
             abnormality, ", official test split" if official else "")


def _find(index, case: str, series: str):
    """The full mammogram: by case folder and series UID, else the case folder's only image."""
    files = index.get(case, {})
    if series in files and len(files[series]) == 1:
        return files[series][0]
    flat = [f for fs in files.values() for f in fs]
    return flat[0] if len(flat) == 1 else None
