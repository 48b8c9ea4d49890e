"""Institutional data (e.g. the paper's brain-MRI registry): a manifest CSV the user writes.

Columns (see config/README.md):

- ``patient_id``, ``sample_id``, ``label`` — required; ``label`` is a class name from
  ``source.classes`` (case-insensitive) or its 0-based index;
- ``path`` — a DICOM file, or a series folder (slices ordered by their position along the slice
  normal, ``n · ImagePositionPatient`` with ``n`` = row × column of ImageOrientationPatient: z for
  an axial series, x for a sagittal one, y for a coronal one), or a PNG/JPEG/TIFF/NIfTI file
  (read by :mod:`.images`; a NIfTI volume's slice is ``roi_slice``), relative to ``source.root``
  (default: the manifest's folder) or absolute;
- the ROI, either ``roi_row`` + ``roi_col`` (pixels, origin top-left) with, for a series,
  ``roi_slice`` (0-based index in that order) or ``roi_z_mm`` (that position in mm); or
  ``mask_path``, a mask DICOM of the image's size (value > 0 inside; for a series, its position
  along the normal picks the slice;
  a mask of another size is skipped, listed in skipped.csv). A z (``roi_z_mm`` or the mask's)
  picks the slice within half the series' median slice spacing; a z farther from every slice is
  skipped with the reason, never snapped to the nearest slice;
- a series folder holds one series: a folder mixing SeriesInstanceUIDs, or two slices at the same
  z, is skipped with the reason; files that are not images (DICOMDIR, reports, presentation
  states) are ignored and do not count as slices;
- a multi-frame DICOM file as ``path`` needs ``roi_slice``: the 0-based frame index (stored as
  the record's ``frame``);
- or the ROI as a contoured structure (:mod:`.rois`): ``rtstruct_path`` + ``roi_name`` (an
  RTSTRUCT and the structure's ROIName) or ``seg_path`` + ``segment`` (a DICOM-SEG and the
  segment's number or label), matched to the series by Frame of Reference and SOP Instance UIDs;
  the slice is the structure's largest cross-section (or ``roi_slice``) and the centre/size its
  bounding box there, as for ``mask_path``; a file that does not match the series is skipped
  with the reason;
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
import re
from pathlib import Path

import numpy as np
import pandas as pd

from oncorobust.data.dicom import non_image_reason, read_header, slice_normal, slice_position
from oncorobust.errors import DataError, DicomError
from oncorobust.data.sources.common import IngestResult, bbox_centre, dicom_name, record, walk_all
from oncorobust.data.sources.images import classify_file, image_kind, image_shape, is_dicom_file, read_image
from oncorobust.data.sources.rois import RTSTRUCT_COLUMNS, SEG_COLUMNS, structure_roi

log = logging.getLogger("oncorobust.data.sources.manifest")

REQUIRED = ["patient_id", "sample_id", "label", "path"]


def _series_slices(folder: Path, result: IngestResult | None = None,
                   sample_id: str = "") -> tuple[list[tuple[float, Path]], bool]:
    """The image slices of a series folder as (position, file), ordered by position then file
    name, and whether every slice has an ImagePositionPatient (so ``roi_z_mm`` can be matched).

    The position is the slice's coordinate in mm along the series' slice normal
    ``n = row × column`` of ImageOrientationPatient, ``n · ImagePositionPatient``
    (:func:`~oncorobust.data.dicom.slice_position`; ``n`` turned so that its largest component is
    positive): the patient z for an axial series, x for a sagittal one, y for a coronal one, the
    coordinate along the normal for an oblique one. So ``roi_slice`` (the index in this order) and
    ``roi_z_mm`` (this position) mean the same for every orientation. Without
    ImageOrientationPatient the z of ImagePositionPatient is used (an axial series); without
    ImagePositionPatient, InstanceNumber, else the file's place in the folder.

    A file is DICOM by its content (the 'DICM' marker at byte 128), whatever its name (PACS
    exports write ``IM0001`` or ``1.2.840....320``). Files that are not images (a DICOMDIR, a
    structured report, a presentation state...), not DICOM, or hidden/system files are not
    slices: counting them would shift every ``roi_slice``; they are listed in ``result.ignored``
    (skipped.csv) with the reason. Two files with the same
    SOPInstanceUID at the same position are one slice copied twice: the first (by file name) is
    kept, and the other is logged and listed in ``result`` (skipped.csv) as a duplicate.

    Args:
        folder: the series folder.
        result: where duplicated instance files and files that are not slices are listed (None:
            only logged).
        sample_id: the manifest row's sample, named in the log.

    Returns:
        ``([(position_mm, file), ...], positioned)``.

    Raises:
        DicomError: naming the folder when it holds no image, more than one series
            (SeriesInstanceUID), slices of different orientations, two files with one
            SOPInstanceUID at different positions, or two slices at the same position (two
            series or several echoes/phases mixed: ``roi_slice`` would pick from an interleaved
            stack).
    """
    headers, ignored, uids = [], [], {}
    listing = result if result is not None else IngestResult()
    for f in walk_all(folder, listing):
        if not is_dicom_file(f):
            kind, why = classify_file(f)
            if not (kind == "dicom" or (kind == "unknown" and dicom_name(f))):
                # not a slice: listed (skipped.csv) once, never counted (roi_slice would shift)
                listing.ignore(f, why if kind in ("system", "other") else
                               f"not a DICOM file (no 'DICM' marker at byte 128) in the series folder {folder};"
                               " not a slice")
                continue
        hdr = read_header(f)
        why = non_image_reason(hdr)
        if why:
            ignored.append(f"{f.name} ({why})")
            listing.ignore(f, f"{why}; not a slice of the series")
            continue
        headers.append((f, hdr))
        uid = str(hdr.get("SeriesInstanceUID", "")).strip()
        if uid:
            uids.setdefault(uid, f.name)
    if ignored:
        log.info("%s: %d file(s) that are not image slices ignored: %s", folder, len(ignored),
                 "; ".join(ignored[:5]) + (" ..." if len(ignored) > 5 else ""))
    if not headers:
        raise DicomError(f"{folder}: series folder holds no DICOM image"
                         + (f" (only {'; '.join(ignored[:3])})" if ignored else ""))
    if len(uids) > 1:
        found = ", ".join(f"{u} (e.g. {name})" for u, name in list(uids.items())[:4])
        raise DicomError(f"{folder}: the folder mixes {len(uids)} series (SeriesInstanceUID {found});"
                         " a series folder must hold one series, or roi_slice would pick a slice of"
                         " another one. Put each series in its own folder and point path at it")
    normal, normal_file = None, None
    for f, hdr in headers:
        n = slice_normal(hdr, f)
        if n is None:
            continue
        if normal is None:
            normal, normal_file = n, f
        elif float(np.dot(n, normal)) < 1 - 1e-4:  # more than ~0.8 degrees apart
            raise DicomError(f"{folder}: {normal_file.name} and {f.name} have different orientations"
                             " (ImageOrientationPatient): the folder mixes series (e.g. a localizer or"
                             " another plane), so roi_slice would be ambiguous. Put each series in its"
                             " own folder and point path at it")
    slices, positioned, by_sop = [], True, {}
    for f, hdr in headers:
        pos = slice_position(hdr, normal, f)
        positioned = positioned and pos is not None
        if pos is None:
            pos = float(hdr.get("InstanceNumber", len(slices)))
        sop = str(hdr.get("SOPInstanceUID", "")).strip()
        if sop and sop in by_sop:
            first, first_pos = by_sop[sop]
            if first_pos != pos:
                raise DicomError(f"{folder}: {first.name} and {f.name} have the same SOPInstanceUID"
                                 f" {sop} but lie at different positions ({first_pos:g} and {pos:g} mm):"
                                 " the export is corrupt; export the series again")
            reason = (f"duplicate of {first.name} (same SOPInstanceUID {sop}, same position): the"
                      " slice is kept once")
            log.warning("%s%s: %s", f, f" ({sample_id})" if sample_id else "", reason)
            if result is not None and not any(x["file"] == str(f) and x["reason"] == reason
                                              for x in result.skipped):
                result.skip(f, reason)
            continue
        if sop:
            by_sop[sop] = (f, pos)
        slices.append((pos, f))
    slices.sort(key=lambda t: (t[0], str(t[1])))
    for (z0, f0), (z1, f1) in zip(slices, slices[1:]):
        if z0 == z1:
            raise DicomError(f"{folder}: {f0.name} and {f1.name} lie at the same z ({z0:g}: the position"
                             " along the slice normal from ImageOrientationPatient and"
                             " ImagePositionPatient, else InstanceNumber): the folder mixes two series,"
                             " echoes or phases, so roi_slice would be ambiguous. Put each in its own folder")
    return slices, positioned


def _slice_at(slices: list[tuple[float, Path]], z_mm: float) -> tuple[Path | None, str]:
    """The slice whose position lies within half the slice spacing of ``z_mm``.

    Args:
        slices: ``(position_mm, file)`` from :func:`_series_slices`, in order; the position is
            the coordinate along the slice normal (axial: z; sagittal: x; coronal: y).
        z_mm: the wanted position in mm (``roi_z_mm``, or a mask's position along the normal).

    Returns:
        ``(file, '')``, or ``(None, why)`` when no slice lies within half the series' median
        slice spacing (1 mm for a single slice) of ``z_mm``: never snapped to the nearest slice.
    """
    zs = np.array([z for z, _ in slices], dtype=float)
    spacing = float(np.median(np.diff(zs))) if len(zs) > 1 else 1.0
    i = int(np.argmin(np.abs(zs - z_mm)))
    if abs(zs[i] - z_mm) <= spacing / 2 + 1e-6:
        return slices[i][1], ""
    return None, (f"z = {z_mm:g} mm is not within half a slice spacing ({spacing / 2:g} mm) of any slice"
                  f" of the series (z {zs.min():g} to {zs.max():g} mm along the slice normal,"
                  f" {len(zs)} slice(s); nearest {zs[i]:g} mm)")


def _path_hint(rel: str) -> str:
    """Why a manifest path may name no file: '' or a hint starting with '; '.

    A path written on Windows (``dicom\\p1\\T1``, ``C:\\data\\...``) names no file here, where the
    separator is ``/`` (a backslash is an ordinary character of a file name).
    """
    rel = str(rel).strip()
    if len(rel) > 2 and rel[1] == ":" and rel[0].isalpha() and rel[2] in "\\/":
        return (f"; {rel!r} is a Windows drive path: give the path on this machine, relative to"
                " source.root (or absolute), with forward slashes (/)")
    if "\\" in rel:
        return (f"; the path uses backslashes (\\): write forward slashes (/), e.g."
                f" {rel.replace(chr(92), '/')!r}")
    return ""


_NO_POSITIONS = ("the series' slices have no ImagePositionPatient, so a z in mm cannot be"
                 " matched to a slice")


_DELIMITERS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}
#: cell values (lower-case) that spreadsheets and pandas write for a missing value: never an ID
MISSING_MARKERS = {"nan", "none", "null", "na", "n/a", "#n/a", "<na>", "nat", "missing",
                   "#value!", "#ref!", "#name?", "#div/0!", "#null!", "#num!"}
#: the numeric ROI columns, parsed by :func:`_number`
NUMERIC_COLUMNS = ("roi_row", "roi_col", "roi_size_px", "roi_z_mm", "roi_slice")


def read_manifest_csv(manifest: Path) -> pd.DataFrame:
    """The manifest CSV as strings (column names stripped and lower-cased).

    A Latin-1 (or any non-UTF-8) file is refused rather than guessed: a wrongly decoded ``path``
    would point at no file, and IDs would silently change. What a spreadsheet writes is read: a
    UTF-8 byte-order mark, semicolons as separators (Excel's CSV in locales with a decimal comma;
    the header decides, and the log says so), columns without a name and without any value
    (trailing separators) and rows without any value (dropped).

    Args:
        manifest: the CSV file.

    Returns:
        One row per lesion, every cell a string ('' when empty); the index is the row's line in the
        file (the header is line 1).

    Raises:
        DataError: naming the file when it is empty, not UTF-8, separated by tabs or vertical
            bars, not parseable as CSV, or has two columns whose names differ only in case or
            spaces (e.g. ``label`` and ``Label``: two readers' columns, one would be silently
            dropped), or a column without a name that holds values.
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
    header = text.lstrip("\r\n").splitlines()[0]
    need = len(REQUIRED) - 1
    sep = ","
    if header.count(",") < need:
        found = max(_DELIMITERS, key=header.count)
        if found == ";" and header.count(";") >= need:
            sep = ";"
            log.info("%s: the columns are separated by semicolons (a spreadsheet's CSV): read so", manifest)
        elif header.count(found) >= need:
            raise DataError(f"{manifest}: the columns are separated by {_DELIMITERS[found]} ({found!r}),"
                            " not commas; save it as comma-separated CSV (e.g. in a spreadsheet:"
                            " 'CSV, comma delimited')")
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, header=None, sep=sep)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{manifest}: not a valid CSV ({str(exc).strip()}); fix the file") from None
    names = [str(c) for c in table.iloc[0]]
    df = table.iloc[1:].copy()
    df.index = range(2, len(df) + 2)  # lines of the file (pandas drops blank lines: approximate then)
    keys = [n.strip().lower() for n in names]
    unnamed = [k for k, key in enumerate(keys) if not key]
    for k in unnamed:
        filled = df[k].astype(str).str.strip() != ""
        if filled.any():
            line = int(df.index[filled.to_numpy()][0])
            raise DataError(f"{manifest}: column {k + 1} has no name in the header but holds values (e.g."
                            f" line {line}: {df[k][line]!r}); name it, or remove the column")
    seen: dict[str, str] = {}
    for name, key in zip(names, keys):
        if not key:
            continue
        if key in seen:
            raise DataError(f"{manifest}: the columns {seen[key]!r} and {name!r} are the same column once"
                            " case and spaces are ignored (two readers' columns?); one would be silently"
                            " dropped. Keep one, or rename the other (e.g. label_reader2)")
        seen[key] = name
    df = df.drop(columns=unnamed)
    df.columns = [key for key in keys if key]
    blank = (df.apply(lambda col: col.astype(str).str.strip()) == "").all(axis=1)
    if blank.any():
        log.info("%s: %d row(s) without any value ignored (lines %s)", manifest, int(blank.sum()),
                 ", ".join(str(i) for i in df.index[blank.to_numpy()][:5]))
        df = df[~blank]
    return df


def _number(row: dict, column: str, where: str) -> float:
    """A numeric ROI cell: NaN when empty (or a missing-value marker such as ``NaN``).

    Raises:
        DataError: naming the row and column, when the cell is not a number: a decimal comma
            (``12,5``) is named as such, and ``roi_slice`` must be a whole number.
    """
    raw = str(row.get(column, "") or "").strip()
    if not raw or raw.lower() in MISSING_MARKERS:
        return math.nan
    try:
        value = float(raw)
    except ValueError:
        if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+", raw):
            raise DataError(f"{where}: {column} {raw!r} has a comma: a thousands separator (write"
                            f" {raw.replace(',', '')}) or a decimal comma (write {raw.replace(',', '.')})?"
                            " Write plain numbers with a decimal point (a spreadsheet's number format /"
                            " locale setting)") from None
        if re.fullmatch(r"[+-]?\d*,\d+", raw):
            raise DataError(f"{where}: {column} {raw!r} has a decimal comma; write a decimal point"
                            f" ({raw.replace(',', '.')}): save the manifest with '.' as the decimal"
                            " separator (a spreadsheet's locale setting)") from None
        raise DataError(f"{where}: {column} {raw!r} is not a number; give it in pixels (or mm for"
                        " roi_z_mm), or leave it empty") from None
    if not math.isfinite(value):
        return math.nan
    if column == "roi_slice" and not value.is_integer():
        raise DataError(f"{where}: roi_slice {raw!r} is not a whole number; give the 0-based slice/frame index")
    return value


def _identifier(row: dict, column: str, where: str) -> str:
    """A row's ``patient_id`` / ``sample_id``, stripped (case and leading zeros kept as written).

    Raises:
        DataError: naming the row, when the cell is empty or a missing-value marker (``NaN``,
            ``None``, ``#N/A``...): such a value is not a patient, and all of them would become one.
    """
    value = str(row.get(column, "") or "").strip()
    if not value:
        raise DataError(f"{where}: empty sample_id or patient_id ({column}); give every row its IDs, or"
                        " remove the row")
    if value.lower() in MISSING_MARKERS:
        raise DataError(f"{where}: {column} {value!r} is a missing-value marker, not an ID (every such row"
                        f" would become one {'patient' if column == 'patient_id' else 'sample'}); give the"
                        " row its real ID, or remove the row")
    return value


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
            outside its image. Unreadable DICOM files, series folders mixing series or slices at
            one z, a z that is at no slice of its series, and masks that are empty or whose size
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
    if df.empty:
        raise DataError(f"{manifest} has a header but no rows: add one row per lesion"
                        " (patient_id, sample_id, path, label and its ROI; see config/README.md)")
    has_centre = {"roi_row", "roi_col"} <= set(df.columns)
    # RTSTRUCT / DICOM-SEG ROIs (sources/rois.py): each file column needs its name column
    structures = [cols for cols in (RTSTRUCT_COLUMNS, SEG_COLUMNS) if set(cols) & set(df.columns)]
    for file_col, name_col in structures:
        if not {file_col, name_col} <= set(df.columns):
            raise DataError(f"{manifest}: column {file_col if file_col in df.columns else name_col} needs"
                            f" column {name_col if file_col in df.columns else file_col} too ({file_col}:"
                            f" the file, {name_col}: the " + ("structure's ROIName)" if name_col == "roi_name"
                                                               else "segment's number or label)"))
    whole = not has_centre and "mask_path" not in df.columns and not ({"roi_row", "roi_col"} & set(df.columns)) \
        and not structures
    if not has_centre and "mask_path" not in df.columns and not whole and not structures:
        raise DataError(f"{manifest}: give each lesion's ROI as roi_row + roi_col, mask_path,"
                        " rtstruct_path + roi_name or seg_path + segment")
    if whole:
        log.info("%s has no ROI columns (roi_row/roi_col, mask_path): every image is used whole, as"
                 " an image that is already the lesion's crop", manifest)
    classes = [str(c).lower() for c in cfg.get("classes", ["benign", "malignant"])]
    for i, row in zip(df.index, df.to_dict("records")):  # the index is the line (the header is line 1)
        where = f"{manifest}:{i}"
        sid, pid = _identifier(row, "sample_id", where), _identifier(row, "patient_id", where)
        label_raw = row["label"].strip().lower()
        for column in NUMERIC_COLUMNS:  # a decimal comma or a word: an error now, not an empty ROI
            _number(row, column, where)
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
            positioned = False
            if path.is_dir():
                slices, positioned = _series_slices(path, result, sid)
            elif path.is_file():
                slices = [(math.nan, path)]
            else:
                result.skip(path, "no such DICOM file, series folder or image file"
                            + _path_hint(row["path"]), sid)
                continue
            structure = structure_roi(where, root, row, [t[1] for t in slices], _number(row, "roi_slice", where))
            if structure is not None:  # rtstruct_path + roi_name, or seg_path + segment
                chosen = structure.file
                source = chosen.relative_to(root) if chosen.is_relative_to(root) else chosen
                result.records.append(record(
                    sample_id=sid, patient_id=pid, label=label, label_name=classes[label], source=str(source),
                    roi_row=structure.row, roi_col=structure.col, roi_size_px=structure.size_px,
                    split=str(row.get("split", "")).strip().lower()))
                continue
            rr, cc, size = (_number(row, c, where) for c in ("roi_row", "roi_col", "roi_size_px"))
            z_mm, k = _number(row, "roi_z_mm", where), _number(row, "roi_slice", where)
            z_from = f"roi_z_mm {row.get('roi_z_mm', '').strip()}"
            mask_rel = str(row.get("mask_path", "")).strip()
            mask_file, mask_shape = None, None
            if mask_rel and (math.isnan(rr) or math.isnan(cc)):
                mask_file = root / mask_rel
                if not mask_file.exists() and _path_hint(mask_rel):
                    result.skip(mask_file, f"mask_path: no such file{_path_hint(mask_rel)}", sid)
                    continue
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
                # the mask's position along its slice normal (axial: its z), as the series' slices
                ipp = slice_position(read_header(mask_file), where=mask_file) \
                    if image_kind(mask_file) == "dicom" else None
                if ipp is not None and math.isnan(k):
                    z_mm, z_from = ipp, f"the mask {mask_file}'s ImagePositionPatient"
            if (math.isnan(rr) or math.isnan(cc)) and not whole:
                raise DataError(f"{where}: no ROI (roi_row/roi_col empty and no mask_path, rtstruct_path or"
                                " seg_path)")
            if len(slices) > 1:
                if not math.isnan(k):
                    if not 0 <= int(k) < len(slices):
                        raise DataError(f"{where}: roi_slice {int(k)} outside the series' {len(slices)} slices")
                    chosen = slices[int(k)][1]
                elif not math.isnan(z_mm):
                    chosen, why = _slice_at(slices, z_mm) if positioned else (None, _NO_POSITIONS)
                    if chosen is None:
                        result.skip(path, f"{z_from}: {why}; give the lesion's z, or roi_slice", sid)
                        continue
                else:
                    raise DataError(f"{where}: {path} is a series; give roi_slice or roi_z_mm (or a mask_path)")
            else:
                chosen = slices[0][1]
                if path.is_dir() and not math.isnan(z_mm) and math.isnan(k):
                    why = _slice_at(slices, z_mm)[1] if positioned else _NO_POSITIONS
                    if why:
                        result.skip(path, f"{z_from}: {why}; give the lesion's z, or roi_slice", sid)
                        continue
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
