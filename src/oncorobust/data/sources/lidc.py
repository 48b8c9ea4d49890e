"""LIDC-IDRI: CT series as downloaded from TCIA plus the readers' XML annotations.

Series are found by their DICOM UIDs, never by folder names, so every layout seen in the wild
works (current TCIA naming, the older one, ``<StudyUID>/<SeriesUID>``). The XML is parsed with the
standard library matching *local* element names, because namespaces vary across files (pylidc
cannot read synthetic fixtures and breaks on current numpy, see FORMATS.md).

Each contour (``roi``) is placed on its slice by ``imageSOP_UID`` (matched against the slices'
SOPInstanceUID), else by ``imageZposition`` (the slice whose ImagePositionPatient z is within half
a slice spacing); a reader's mark with a contour that neither places, or with an unreadable value
(e.g. an ``edgeMap`` coordinate ``33,5``), is skipped and listed with the XML file and line.

Nodule grouping (``source.grouping``):

- ``pylidc`` (default) reproduces pylidc 0.2.3's ``Scan.cluster_annotations()``, the grouping most
  LIDC studies use: the distance between two marks is the smallest Euclidean distance between
  their contour points in *voxel indices* (row, column, slice index; exclusion contours included),
  marks closer than the tolerance (default the slice thickness in mm, used as a number of voxel
  indices exactly as pylidc does) are linked, nodules are the connected components, and while a
  nodule holds more than 4 marks the tolerance is multiplied by 0.9 (stopping below 0.1).
- ``mm`` (this package's former rule) measures the distance in millimetres (column and row times
  the pixel spacing, the slice's z; inclusion contours only), tolerance the slice thickness (at
  least 1 mm), shrunk by 0.8 until no nodule holds more than 4 marks or two marks of one reader.

The label is the aggregate (median-high by default) of the readers' malignancy ratings: above
``malignant_above`` is malignant (1), below ``benign_below`` benign (0), anything between is
excluded. A malignancy outside the ratings 1-5 (e.g. -1, -2, 6, or 0 beside other rated
characteristics) is not a rating: that reader's mark is skipped and listed with the XML line (a
zero malignancy with all other characteristics blank or zero is a nodule < 3 mm, as in the real
files). A slice file copied twice (same SOPInstanceUID and z) is used once and the copy listed; a
series that is not axial is listed and not used (the XMLs place contours by z).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from xml.etree import ElementTree as ET
from xml.parsers import expat

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist

from oncorobust.data.dicom import slice_normal
from oncorobust.errors import DataError, DicomError
from oncorobust.data.sources.common import IngestResult, iter_files, log, record, require_dir, scan_headers

#: Values of ``source.grouping``.
GROUPINGS = ("pylidc", "mm")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    for c in el:
        if _local(c.tag) == name:
            return c
    return None


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def _text(el: ET.Element | None, name: str, default: str = "") -> str:
    c = _child(el, name) if el is not None else None
    return (c.text or "").strip() if c is not None and c.text else default


def _parse_with_lines(path: Path) -> tuple[ET.Element, dict[ET.Element, int]]:
    """Parse ``path`` into an ElementTree, remembering each element's line number (1-based).

    Raises:
        ET.ParseError: the file is not well-formed XML.
    """
    builder = ET.TreeBuilder()
    lines: dict[ET.Element, int] = {}
    parser = expat.ParserCreate(namespace_separator="}")

    def start(tag, attrs):
        lines[builder.start(tag, attrs)] = parser.CurrentLineNumber

    parser.StartElementHandler = start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        with open(path, "rb") as fh:
            parser.ParseFile(fh)
        return builder.close(), lines
    except (expat.ExpatError, AssertionError) as exc:  # AssertionError: TreeBuilder on no root
        raise ET.ParseError(str(exc) or "no root element") from exc


class _BadValue(ValueError):
    """A value of a mark that cannot be read (the mark is then skipped)."""


def _number(text: str, what: str, line: int | str, blank_ok: bool = True) -> float:
    """``text`` as a finite number written with a dot; NaN when blank and ``blank_ok``.

    Raises:
        _BadValue: naming ``what`` and the line, when ``text`` is no such number.
    """
    try:
        if not text and blank_ok:
            return math.nan
        value = float(text)
        if math.isfinite(value):
            return value
    except ValueError:
        pass
    raise _BadValue(f"{what} at line {line} is {text!r}, not a number")


#: The malignancy ratings a reader can give (LIDC: 1 highly unlikely ... 5 highly suspicious).
MALIGNANCY_RATINGS = range(1, 6)


def _malignancy(nod: ET.Element, lines: dict[ET.Element, int]) -> int | None:
    """A mark's malignancy rating (1-5), or None for a nodule < 3 mm (no characteristics, or
    blank/zero ones: a zero malignancy whose other characteristics are all blank or zero too).

    Args:
        nod: the ``unblindedReadNodule`` element.
        lines: element → line number (:func:`_parse_with_lines`).

    Returns:
        The rating, or None when the mark carries none.

    Raises:
        _BadValue: naming the line, when the malignancy is not a whole number from 1 to 5
            (e.g. -1, -2, 6, 2.5, or 0 beside other ratings): such a reading is left out and
            listed, never read as a benign (low) rating.
    """
    ch = _child(nod, "characteristics")
    el = _child(ch, "malignancy") if ch is not None else None
    raw = (el.text or "").strip() if el is not None else ""
    line = lines.get(el, lines.get(nod, "?")) if el is not None else lines.get(nod, "?")
    if not raw:
        return None
    value = _number(raw, "malignancy", line)
    if value == 0 and all(_zero_or_blank(c.text) for c in ch if c is not el):
        return None  # blank/zero characteristics: a nodule < 3 mm, not rated
    if value != int(value) or int(value) not in MALIGNANCY_RATINGS:
        raise _BadValue(f"malignancy at line {line} is {raw!r}, outside the ratings 1-5"
                        f"{' (the other characteristics are rated)' if value == 0 else ''}; the reading"
                        " is left out, not counted as a rating (a value below 1 would read as benign)")
    return int(value)


def _zero_or_blank(text: str | None) -> bool:
    text = (text or "").strip()
    try:
        return not text or float(text) == 0
    except ValueError:
        return False


def parse_xml(path: Path, problems: list[dict] | None = None) -> tuple[str, list[list[dict]]] | None:
    """Parse one LIDC reader XML.

    Args:
        path: the XML file.
        problems: if given, one ``{"line", "reader", "reader_id", "nodule_id", "reason"}`` dict is appended for
            every mark left out because a value cannot be read (an ``edgeMap`` coordinate such as
            ``33,5``, a malignancy that is no number or not a rating 1-5, e.g. -1 or 6); without
            it such marks are left out silently.

    Returns:
        ``(SeriesInstanceUID, readers)``, or None for a file that is not a CT read (e.g. a chest
        X-ray ``IdriReadMessage``). ``readers`` holds one list per reading session; each mark is
        ``{"malignancy": int | None, "nodule_id": str, "reader_id": str, "line": int,
        "rois": [{"z": float, "z_text": str, "sop": str, "inclusion": bool, "line": int,
        "points": [(x, y), ...]}]}`` where x is the column and y the row (pixels, origin top-left),
        ``z`` the ``imageZposition`` in mm (NaN when absent), ``inclusion`` False for an exclusion
        contour. Marks without a malignancy rating (nodules < 3 mm) get ``malignancy`` None.

    Raises:
        ET.ParseError: the file is not well-formed XML.
    """
    root, lines = _parse_with_lines(Path(path))
    if _local(root.tag) != "LidcReadMessage":  # e.g. IdriReadMessage (chest X-ray)
        return None
    header = _child(root, "ResponseHeader")
    series = _text(header, "SeriesInstanceUid") or _text(header, "SeriesInstanceUID")
    readers = []
    for r, session in enumerate(_children(root, "readingSession")):
        reader_id = _text(session, "servicingRadiologistID")
        marks = []
        for nod in _children(session, "unblindedReadNodule"):
            nodule_id = _text(nod, "noduleID")
            try:
                malignancy = _malignancy(nod, lines)
                rois = []
                for roi in _children(nod, "roi"):
                    pts = [(_number(_text(e, "xCoord"), "edgeMap xCoord", lines.get(e, "?"), False),
                            _number(_text(e, "yCoord"), "edgeMap yCoord", lines.get(e, "?"), False))
                           for e in _children(roi, "edgeMap")]
                    z_text = _text(roi, "imageZposition")
                    try:
                        z = _number(z_text, "imageZposition", "")
                    except _BadValue:
                        z = math.nan  # unreadable: the slice is then found by imageSOP_UID alone
                    if pts:
                        rois.append({"z": z, "z_text": z_text, "sop": _text(roi, "imageSOP_UID"),
                                     "points": pts, "line": lines.get(roi, 0),
                                     "inclusion": _text(roi, "inclusion", "TRUE").upper() != "FALSE"})
            except _BadValue as exc:
                if problems is not None:
                    problems.append({"line": lines.get(nod, 0), "reader": r + 1, "reader_id": reader_id,
                                     "nodule_id": nodule_id, "reason": str(exc)})
                continue
            if rois:
                marks.append({"malignancy": malignancy, "nodule_id": nodule_id, "reader_id": reader_id,
                              "line": lines.get(nod, 0), "rois": rois})
        readers.append(marks)
    return series, readers


def _components(dist: np.ndarray, tol: float) -> list[list[int]]:
    n = len(dist)
    adj = (dist <= tol) & ~np.eye(n, dtype=bool)
    ncomp, labels = connected_components(csr_matrix(adj), directed=False)
    return [list(np.flatnonzero(labels == c)) for c in range(ncomp)]


def _min_distances(points: list[np.ndarray]) -> np.ndarray:
    n = len(points)
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            dist[i, j] = dist[j, i] = cdist(points[i], points[j]).min()
    return dist


def group_marks_pylidc(points: list[np.ndarray], tol: float, factor: float = 0.9,
                       min_tol: float = 0.1, max_group: int = 4) -> list[list[int]]:
    """Group marks into nodules as pylidc 0.2.3's ``Scan.cluster_annotations()`` does.

    Args:
        points: per mark, a K×3 array of its contour points as voxel indices (row, column, slice
            index), exclusion contours included, as pylidc's ``Annotation.contours_matrix``.
        tol: linkage tolerance compared with the voxel-index distances; pylidc's default is the
            scan's slice thickness in mm used as that number.
        factor: while a nodule holds more than ``max_group`` marks, ``tol`` is multiplied by this.
        min_tol: stop shrinking below this tolerance (pylidc then keeps the last grouping, which
            may hold nodules of more than ``max_group`` marks: marks that touch).
        max_group: the largest expected number of marks of one nodule (4 readers).

    Returns:
        Lists of mark indices, one per nodule, in order of their first mark.
    """
    n = len(points)
    if n == 0:
        return []
    dist = _min_distances(points)
    groups = _components(dist, tol)
    while any(len(g) > max_group for g in groups):
        tol *= factor
        if tol < min_tol:  # pylidc: "Failed to reduce all groups to <= 4 Annotations."
            break
        groups = _components(dist, tol)
    return groups


def group_marks(marks: list[dict], tol_mm: float, max_group: int = 4) -> list[list[int]]:
    """Group marks into nodules by millimetre distances (the ``mm`` grouping).

    Args:
        marks: each with ``reader`` (reading-session index) and ``xyz``, a K×3 array of contour
            points in mm (column × pixel spacing, row × pixel spacing, slice z).
        tol_mm: marks whose contours come within this distance (mm) are one nodule; shrunk by 0.8
            (at most 30 times) until no nodule holds more than ``max_group`` marks or two marks of
            one reader.
        max_group: the largest expected number of marks of one nodule.

    Returns:
        Lists of mark indices, one per nodule.
    """
    n = len(marks)
    if n == 0:
        return []
    dist = _min_distances([m["xyz"] for m in marks])
    tol = tol_mm
    for _ in range(30):
        groups = _components(dist, tol)
        if all(len(g) <= max_group and len({marks[i]["reader"] for i in g}) == len(g) for g in groups):
            break
        tol *= 0.8
    return groups


def ingest(cfg: dict, result: IngestResult) -> None:
    """Append one record per labelled nodule of every annotated CT series to ``result``.

    Args:
        cfg: the dataset's ``source`` config: ``root``, optional ``xml_root``, ``label``
            (``aggregate``, ``malignant_above``, ``benign_below``), ``grouping`` (``pylidc`` or
            ``mm``) and ``group_tolerance_mm`` (None: the slice thickness).
        result: receives the records and every skipped input with its reason (unreadable
            files, superseded or orphan XMLs, series without XML, marks that cannot be placed).

    Raises:
        DataError: a folder is missing or ``grouping`` is unknown.
    """
    root = require_dir(cfg.get("root"), "source.root")
    xml_root = require_dir(cfg.get("xml_root") or root, "source.xml_root")
    label_cfg = cfg.get("label") or {}
    aggregate = label_cfg.get("aggregate", "median_high")
    hi, lo = float(label_cfg.get("malignant_above", 3)), float(label_cfg.get("benign_below", 3))
    tol_cfg = cfg.get("group_tolerance_mm")
    grouping = cfg.get("grouping") or "pylidc"
    if grouping not in GROUPINGS:
        raise DataError(f"source.grouping = {grouping!r}: choose one of {list(GROUPINGS)}")

    # 1. index the CT slices by series
    series: dict[str, list[dict]] = defaultdict(list)
    seen: dict[tuple[str, str], dict] = {}
    for path, hdr in scan_headers(root, result, {".xml"}, "DICOM CT series"):
        uid = str(hdr.get("SeriesInstanceUID", ""))
        ipp = hdr.get("ImagePositionPatient")
        if not uid or ipp is None:
            result.skip(path, "no SeriesInstanceUID or ImagePositionPatient (not a CT slice?)")
            continue
        try:
            normal = slice_normal(hdr, path)
        except DicomError as exc:
            result.skip(path, str(exc).split(": ", 1)[-1])
            continue
        spacing = hdr.get("PixelSpacing", [1.0, 1.0])
        entry = {"path": path, "sop": str(hdr.get("SOPInstanceUID", "")),
                 "z": float(ipp[2]), "patient": str(hdr.get("PatientID", "")),
                 "spacing": (float(spacing[0]), float(spacing[1])),
                 "thickness": float(hdr.get("SliceThickness", 0) or 0),
                 "axial": normal is None or abs(float(normal[2])) >= 0.5}
        first = seen.get((uid, entry["sop"])) if entry["sop"] else None
        if first is not None and first["z"] == entry["z"]:
            reason = (f"duplicate of {first['path'].name} (same SOPInstanceUID {entry['sop']}, same z):"
                      " the slice is kept once")
            log.warning("%s: %s", path, reason)
            result.skip(path, reason)
            continue
        seen.setdefault((uid, entry["sop"]), entry)
        series[uid].append(entry)

    # 2. the reader XMLs, one per series (an erratum "resubmitted"/"correction" file wins)
    by_series: dict[str, list[Path]] = defaultdict(list)
    for path in iter_files(xml_root, {".xml"}):
        try:
            parsed = parse_xml(path)
        except ET.ParseError as exc:
            result.skip(path, f"malformed XML ({exc})")
            continue
        if parsed is None:
            log.info("ignoring %s: not a LidcReadMessage (chest X-ray annotation?)", path)
            continue
        by_series[parsed[0]].append(path)
    n_excluded = 0
    for uid in sorted(by_series):
        paths = sorted(by_series[uid], key=lambda p: ("resubmitted" not in p.name and "correction" not in p.name, str(p)))
        for extra in paths[1:]:
            result.skip(extra, f"second annotation file for series {uid}; using {paths[0].name}")
        slices = series.get(uid)
        if not slices:
            result.skip(paths[0], f"no DICOM series with SeriesInstanceUID {uid} under {root}")
            continue
        if not all(s["axial"] for s in slices):
            result.skip(slices[0]["path"].parent, f"series {uid} is not axial (its ImageOrientationPatient"
                        " normal is closer to x or y than to z): the reader XML places contours by"
                        " imageZposition, the patient z, so its slices cannot be matched; not used")
            continue
        slices.sort(key=lambda s: s["z"])
        zs = np.array([s["z"] for s in slices])
        by_sop = {s["sop"]: k for k, s in enumerate(slices) if s["sop"]}
        sy, sx = slices[0]["spacing"]
        dz = float(np.median(np.diff(zs))) if len(zs) > 1 else 0.0
        thickness = slices[0]["thickness"] or dz or 2.5
        z_match = 0.5 * (dz or thickness)  # a contour's z within this of a slice's z (mm) is on it
        problems: list[dict] = []
        _, readers = parse_xml(paths[0], problems)
        for p in problems:
            result.skip(paths[0], f"line {p['line']}: reader {p['reader']} ({p['reader_id'] or 'no ID'}),"
                        f" nodule {p['nodule_id'] or '?'}: {p['reason']}; mark skipped")
        marks = []
        for r, reader_marks in enumerate(readers):
            for m in reader_marks:
                if m["malignancy"] is None:
                    continue  # nodule < 3 mm or no rating: not a classification sample
                ks, unplaced = [], None
                for roi in m["rois"]:
                    k = by_sop.get(roi["sop"])
                    if k is None and math.isfinite(roi["z"]):
                        near = int(np.argmin(np.abs(zs - roi["z"])))
                        k = near if abs(zs[near] - roi["z"]) <= z_match else None
                    if k is None:
                        unplaced = roi
                        break
                    ks.append(k)
                if unplaced is not None:
                    result.skip(paths[0], f"line {unplaced['line']}: reader {r + 1} ({m['reader_id'] or 'no ID'}),"
                                f" nodule {m['nodule_id'] or '?'}: contour with imageSOP_UID"
                                f" {unplaced['sop'] or '(none)'!r} and imageZposition"
                                f" {unplaced['z_text'] or '(none)'!r} matches no slice of series"
                                f" {uid}; mark skipped")
                    continue
                inc = [(roi, k) for roi, k in zip(m["rois"], ks) if roi["inclusion"]] or list(zip(m["rois"], ks))
                marks.append({
                    "reader": r, "malignancy": m["malignancy"],
                    "vox": np.array([(y, x, k) for roi, k in zip(m["rois"], ks) for x, y in roi["points"]]),
                    "xyz": np.array([(x * sx, y * sy, zs[k]) for roi, k in inc for x, y in roi["points"]]),
                    "pix": [(x, y) for roi, _ in inc for x, y in roi["points"]],
                    "zs": [zs[k] for _, k in inc]})
        if grouping == "pylidc":
            groups = group_marks_pylidc([m["vox"] for m in marks], float(tol_cfg) if tol_cfg else thickness)
        else:
            groups = group_marks(marks, float(tol_cfg) if tol_cfg else max(thickness, 1.0))
        patient = slices[0]["patient"] or paths[0].parent.name
        crowded = [len(g) for g in groups if len(g) > 4]
        if crowded:
            log.warning("LIDC %s series %s: %s nodule(s) of %s marks: the marks touch and no tolerance"
                        " separates them (pylidc keeps them together too); each is one sample",
                        patient, uid, len(crowded), crowded)
        nodules = []
        for group in groups:
            ratings = [marks[i]["malignancy"] for i in group]
            score = statistics.median_high(ratings) if aggregate == "median_high" else (
                statistics.median(ratings) if aggregate == "median" else statistics.fmean(ratings))
            if score > hi:
                label = 1
            elif score < lo:
                label = 0
            else:
                n_excluded += 1
                continue
            pix = np.array([p for i in group for p in marks[i]["pix"]])
            z = float(np.mean([z for i in group for z in marks[i]["zs"]]))
            k = int(np.argmin(np.abs(zs - z)))
            extent = max(float(np.ptp(pix[:, 0])), float(np.ptp(pix[:, 1]))) + 1
            nodules.append((k, float(pix[:, 1].mean()), float(pix[:, 0].mean()), extent, label, score))
        for n, (k, row, col, extent, label, score) in enumerate(sorted(nodules)):
            result.records.append(record(
                sample_id=f"{patient}_{uid[-5:]}_n{n + 1:02d}", patient_id=patient, label=label,
                label_name="malignant" if label else "benign",
                source=str(slices[k]["path"].relative_to(root)), roi_row=row, roi_col=col,
                roi_size_px=extent))
    for uid in sorted(set(series) - set(by_series)):
        first = series[uid][0]
        result.skip(first["path"].parent, f"series {uid} ({len(series[uid])} slices, patient"
                    f" {first['patient'] or '?'}) has no reader XML under {xml_root}: not annotated, not used")
    log.info("LIDC: %d labelled nodules, %d excluded as indeterminate (rating between %s and %s);"
             " grouping %s", len(result.records), n_excluded, lo, hi, grouping)
