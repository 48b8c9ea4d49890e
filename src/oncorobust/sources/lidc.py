"""LIDC-IDRI: CT series as downloaded from TCIA plus the readers' XML annotations.

Series are found by their DICOM UIDs, never by folder names, so every layout seen in the wild
works (current TCIA naming, the older one, ``<StudyUID>/<SeriesUID>``). The XML is parsed with the
standard library matching *local* element names, because namespaces vary across files (pylidc
cannot read synthetic fixtures and breaks on current numpy, see FORMATS.md).

Nodule grouping follows pylidc: the marks of different readers belong to the same nodule when
their contours come within ``group_tolerance_mm`` of each other (connected components); the
tolerance is shrunk until no group holds two marks of one reader. The label is the aggregate
(median-high by default) of the readers' malignancy ratings: above ``malignant_above`` is
malignant (1), below ``benign_below`` benign (0), anything between is excluded.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist

from .common import IngestResult, iter_files, log, record, require_dir, scan_headers

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


def parse_xml(path: Path) -> tuple[str, list[list[dict]]] | None:
    """Parse one LIDC reader XML. Returns (SeriesInstanceUID, readers) or None for non-CT XML.

    ``readers`` holds one list per reading session; each mark is
    ``{"malignancy": int | None, "rois": [{"z": float, "sop": str, "points": [(x, y), ...]}]}``
    where x is the column and y the row (pixels, origin top-left). Exclusion contours
    (``inclusion`` FALSE) are dropped. Marks without characteristics (nodules < 3 mm) get
    ``malignancy`` None.
    """
    root = ET.parse(path).getroot()
    if _local(root.tag) != "LidcReadMessage":  # e.g. IdriReadMessage (chest X-ray)
        return None
    header = _child(root, "ResponseHeader")
    series = _text(header, "SeriesInstanceUid") or _text(header, "SeriesInstanceUID")
    readers = []
    for session in _children(root, "readingSession"):
        marks = []
        for nod in _children(session, "unblindedReadNodule"):
            chars = _child(nod, "characteristics")
            raw = _text(chars, "malignancy")
            malignancy = int(float(raw)) if raw else None
            if malignancy == 0:
                malignancy = None
            rois = []
            for roi in _children(nod, "roi"):
                if _text(roi, "inclusion", "TRUE").upper() == "FALSE":
                    continue
                pts = [(float(_text(e, "xCoord")), float(_text(e, "yCoord")))
                       for e in _children(roi, "edgeMap")]
                if pts:
                    rois.append({"z": float(_text(roi, "imageZposition", "nan")),
                                 "sop": _text(roi, "imageSOP_UID"), "points": pts})
            if rois:
                marks.append({"malignancy": malignancy, "rois": rois})
        readers.append(marks)
    return series, readers


def group_marks(marks: list[dict], tol_mm: float, max_group: int = 4) -> list[list[int]]:
    """Group marks (each with ``reader`` and ``xyz`` = K×3 contour points in mm) into nodules."""
    n = len(marks)
    if n == 0:
        return []
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            dist[i, j] = dist[j, i] = cdist(marks[i]["xyz"], marks[j]["xyz"]).min()
    tol = tol_mm
    for _ in range(30):
        adj = (dist <= tol) & ~np.eye(n, dtype=bool)
        ncomp, labels = connected_components(csr_matrix(adj), directed=False)
        groups = [list(np.flatnonzero(labels == c)) for c in range(ncomp)]
        ok = all(len(g) <= max_group and len({marks[i]["reader"] for i in g}) == len(g) for g in groups)
        if ok:
            break
        tol *= 0.8
    return groups


def ingest(cfg: dict, result: IngestResult) -> None:
    """Append one record per labelled nodule of every annotated series to ``result``."""
    root = require_dir(cfg.get("root"), "source.root")
    xml_root = require_dir(cfg.get("xml_root") or root, "source.xml_root")
    label_cfg = cfg.get("label", {})
    aggregate = label_cfg.get("aggregate", "median_high")
    hi, lo = float(label_cfg.get("malignant_above", 3)), float(label_cfg.get("benign_below", 3))
    tol_cfg = cfg.get("group_tolerance_mm")

    # 1. index the CT slices by series
    series: dict[str, list[dict]] = defaultdict(list)
    for path, hdr in scan_headers(root, result):
        uid = str(hdr.get("SeriesInstanceUID", ""))
        ipp = hdr.get("ImagePositionPatient")
        if not uid or ipp is None:
            result.skip(path, "no SeriesInstanceUID or ImagePositionPatient (not a CT slice?)")
            continue
        spacing = hdr.get("PixelSpacing", [1.0, 1.0])
        series[uid].append({"path": path, "sop": str(hdr.get("SOPInstanceUID", "")),
                            "z": float(ipp[2]), "patient": str(hdr.get("PatientID", "")),
                            "spacing": (float(spacing[0]), float(spacing[1])),
                            "thickness": float(hdr.get("SliceThickness", 0) or 0)})

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
        slices.sort(key=lambda s: s["z"])
        zs = np.array([s["z"] for s in slices])
        sy, sx = slices[0]["spacing"]
        thickness = slices[0]["thickness"] or (float(np.median(np.diff(zs))) if len(zs) > 1 else 2.5)
        tol = float(tol_cfg) if tol_cfg else max(thickness, 1.0)
        _, readers = parse_xml(paths[0])
        marks = []
        for r, reader_marks in enumerate(readers):
            for m in reader_marks:
                if m["malignancy"] is None:
                    continue  # nodule < 3 mm or no rating: not a classification sample
                pts = np.array([(x * sx, y * sy, roi["z"]) for roi in m["rois"] for x, y in roi["points"]])
                marks.append({"reader": r, "xyz": pts, **m})
        patient = slices[0]["patient"] or paths[0].parent.name
        nodules = []
        for group in group_marks(marks, tol):
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
            pix = np.array([(x, y) for i in group for roi in marks[i]["rois"] for x, y in roi["points"]])
            z = float(np.mean([roi["z"] for i in group for roi in marks[i]["rois"]]))
            k = int(np.argmin(np.abs(zs - z)))
            extent = max(float(np.ptp(pix[:, 0])), float(np.ptp(pix[:, 1]))) + 1
            nodules.append((k, float(pix[:, 1].mean()), float(pix[:, 0].mean()), extent, label, score))
        for n, (k, row, col, extent, label, score) in enumerate(sorted(nodules)):
            result.records.append(record(
                sample_id=f"{patient}_{uid[-5:]}_n{n + 1:02d}", patient_id=patient, label=label,
                label_name="malignant" if label else "benign",
                source=str(slices[k]["path"].relative_to(root)), roi_row=row, roi_col=col,
                roi_size_px=extent))
    log.info("LIDC: %d labelled nodules, %d excluded as indeterminate (rating between %s and %s)",
             len(result.records), n_excluded, lo, hi)
