"""Issue 21, second sweep: DICOM geometry and values, LIDC ratings, strict YAML and ε, disk faults,
Windows paths in a manifest."""

from __future__ import annotations

import errno
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oncorobust.data.dicom import DicomPlausibilityWarning, read_dicom, read_header, slice_position, write_dicom
from oncorobust.errors import ConfigError, DicomError, OncorobustError
from oncorobust.data.preprocess import crop_square
from oncorobust.data.sources import IngestResult, manifest

MR = dict(modality="MR", patient_id="p", study_uid="1.2")
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
SAGITTAL = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]   # columns step along +y, rows down along -z
CORONAL = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]    # columns step along +x, rows down along -z


def _manifest(tmp_path, rows, header="patient_id,sample_id,path,label,roi_row,roi_col,roi_slice,roi_z_mm"):
    (tmp_path / "m.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return {"manifest": str(tmp_path / "m.csv")}


# ------------------------------------------------------------------------------------ geometry

Z, Y, X = 14, 22, 26          # volume shape (voxels of 1 mm)
ZC, YC, XC = 5, 12, 17        # sphere centre (voxel indices)


def _volume() -> np.ndarray:
    z, y, x = np.mgrid[:Z, :Y, :X]
    ball = (z - ZC) ** 2 + (y - YC) ** 2 + (x - XC) ** 2 <= 16
    return (100 + 900 * ball).astype(np.uint16)


def _write_series(folder: Path, images, iop, ipps, uid: str, rng) -> None:
    """One file per slice, named in a shuffled order (the file names say nothing of the order)."""
    names = rng.permutation(len(images))
    for k, (img, ipp) in enumerate(zip(images, ipps)):
        write_dicom(folder / f"IM{names[k]:04d}.dcm", np.ascontiguousarray(img), **MR, series_uid=uid,
                    instance_number=int(names[k]) + 1,
                    extra={"ImageOrientationPatient": iop, "ImagePositionPatient": [float(v) for v in ipp]})


@pytest.fixture
def three_planes(tmp_path, rng):
    """The same volume as an axial, a sagittal and a coronal series folder."""
    vol = _volume()
    _write_series(tmp_path / "ax", [vol[k] for k in range(Z)], AXIAL, [(0, 0, k) for k in range(Z)], "1.2.1", rng)
    _write_series(tmp_path / "sag", [vol[::-1, :, i] for i in range(X)], SAGITTAL,
                  [(i, 0, Z - 1) for i in range(X)], "1.2.2", rng)
    _write_series(tmp_path / "cor", [vol[::-1, j, :] for j in range(Y)], CORONAL,
                  [(0, j, Z - 1) for j in range(Y)], "1.2.3", rng)
    return tmp_path


def _crops(root: Path, res: IngestResult, side: int = 12) -> dict[str, np.ndarray]:
    return {r["sample_id"]: crop_square(read_dicom(root / r["source"]), (r["roi_row"], r["roi_col"]), side)
            for r in res.records}


def test_sagittal_and_coronal_series_give_the_axial_crop(three_planes):
    rows = [f"p1,ax,ax,benign,{YC},{XC},{ZC},",            # axial: slice ZC, row y, column x
            f"p1,ax_z,ax,benign,{YC},{XC},,{ZC}",
            f"p2,sag,sag,benign,{Z - 1 - ZC},{YC},{XC},",   # sagittal: slice x, row (top z - z), column y
            f"p2,sag_z,sag,benign,{Z - 1 - ZC},{YC},,{XC}",  # roi_z_mm: the position along the normal (x)
            f"p3,cor,cor,benign,{Z - 1 - ZC},{XC},{YC},",   # coronal: slice y, row (top z - z), column x
            f"p3,cor_z,cor,benign,{Z - 1 - ZC},{XC},,{YC}"]
    res = IngestResult()
    manifest.ingest(_manifest(three_planes, rows), res)
    assert res.skipped == []  # before: "lie at the same z: the folder mixes two series"
    crops = _crops(three_planes, res)
    assert set(crops) == {"ax", "ax_z", "sag", "sag_z", "cor", "cor_z"}
    assert crops["ax"].max() == 1000 and (crops["ax"] == 1000).sum() == 49  # the ball's central disc
    for name, crop in crops.items():
        np.testing.assert_array_equal(crop, crops["ax"], err_msg=name)
    # a neighbouring slice gives a smaller disc: the test would see a wrong order
    off = IngestResult()
    manifest.ingest(_manifest(three_planes, [f"p2,sag1,sag,benign,{Z - 1 - ZC},{YC},{XC + 1},"]), off)
    assert (_crops(three_planes, off)["sag1"] == 1000).sum() < 49


def test_sagittal_mask_dicom_picks_the_slice_by_its_position_along_the_normal(three_planes):
    mask = np.zeros((Z, Y), np.uint16)
    mask[Z - 1 - ZC - 3: Z - 1 - ZC + 4, YC - 3: YC + 4] = 1
    write_dicom(three_planes / "mask.dcm", mask, **MR, series_uid="1.2.9",
                extra={"ImageOrientationPatient": SAGITTAL, "ImagePositionPatient": [float(XC), 0.0, Z - 1.0]})
    res = IngestResult()
    manifest.ingest(_manifest(three_planes, ["p1,m,sag,benign,,,,mask.dcm", f"p1,ax,ax,benign,{YC},{XC},{ZC},"],
                              header="patient_id,sample_id,path,label,roi_row,roi_col,roi_slice,mask_path"), res)
    assert res.skipped == []
    crops = _crops(three_planes, res)
    np.testing.assert_array_equal(crops["m"], crops["ax"])


def test_slice_position_is_z_for_axial_x_for_sagittal_y_for_coronal(three_planes):
    ax = read_header(next((three_planes / "ax").iterdir()))
    assert slice_position(ax) == float(ax.ImagePositionPatient[2])
    flipped = read_header(next((three_planes / "ax").iterdir()))
    flipped.ImageOrientationPatient = [-1, 0, 0, 0, -1, 0]  # rotated 180° in plane: n still +z
    assert slice_position(flipped) == float(ax.ImagePositionPatient[2])
    sag = read_header(next((three_planes / "sag").iterdir()))
    assert slice_position(sag) == float(sag.ImagePositionPatient[0])
    cor = read_header(next((three_planes / "cor").iterdir()))
    assert slice_position(cor) == float(cor.ImagePositionPatient[1])


def test_oblique_series_is_ordered_along_its_normal(tmp_path, rng):
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    row, col = np.array([1.0, 0, 0]), np.array([0, c, -s])  # tilted 30° about x
    n = np.cross(row, col)
    ipps = [np.array([-5.0, 60.0, 40.0]) + 2.5 * k * n + (k % 3) * row for k in range(6)]  # in-plane jitter
    _write_series(tmp_path / "obl", [np.full((8, 8), k, np.uint16) for k in range(6)],
                  [*row, *col], ipps, "1.2.7", rng)
    assert np.allclose(n, [0, s, c])  # largest component positive: positions grow with k
    target = float(np.dot(n, ipps[4]))  # roi_z_mm: the position along the normal, not IPP z
    assert abs(target - ipps[4][2]) > 5
    res = IngestResult()
    manifest.ingest(_manifest(tmp_path, ["p1,k2,obl,benign,4,4,2,", f"p1,z4,obl,benign,4,4,,{target + 0.9}",
                                         f"p1,zz,obl,benign,4,4,,{ipps[4][2]}"]), res)
    values = {r["sample_id"]: read_dicom(tmp_path / r["source"])[0, 0] for r in res.records}
    assert values == {"k2": 2, "z4": 4}
    assert [s["sample_id"] for s in res.skipped] == ["zz"] and "along the slice normal" in res.skipped[0]["reason"]


def test_two_orientations_in_one_folder_are_skipped_with_the_reason(tmp_path, rng):
    vol = _volume()
    _write_series(tmp_path / "mix", [vol[k] for k in range(4)], AXIAL, [(0, 0, k) for k in range(4)], "1.2.1", rng)
    write_dicom(tmp_path / "mix" / "loc.dcm", vol[:, :, 0].copy(), **MR, series_uid="1.2.1",
                extra={"ImageOrientationPatient": SAGITTAL, "ImagePositionPatient": [0.0, 0.0, 13.0]})
    res = IngestResult()
    manifest.ingest(_manifest(tmp_path, [f"p1,s1,mix,benign,{YC},{XC},1,"]), res)
    assert res.records == [] and "different orientations" in res.skipped[0]["reason"]


def test_duplicated_instance_file_is_kept_once_and_listed(three_planes, caplog):
    sag = three_planes / "sag"
    files = sorted(sag.iterdir())
    shutil.copy(files[3], sag / "ZZ_copy.dcm")  # same SOPInstanceUID, same position
    res = IngestResult()
    with caplog.at_level("WARNING"):
        manifest.ingest(_manifest(three_planes, [f"p2,sag,sag,benign,{Z - 1 - ZC},{YC},{XC},",
                                                 f"p2,sag2,sag,benign,{Z - 1 - ZC},{YC},{XC},"]), res)
    assert [r["sample_id"] for r in res.records] == ["sag", "sag2"]
    assert len(res.skipped) == 1  # listed once, not once per row
    dup = res.skipped[0]
    assert dup["file"].endswith("ZZ_copy.dcm") and f"duplicate of {files[3].name}" in dup["reason"]
    assert "SOPInstanceUID" in dup["reason"] and "ZZ_copy.dcm" in caplog.text
    assert (_crops(three_planes, res)["sag"] == 1000).sum() == 49  # the order did not shift


def test_same_sop_uid_at_two_positions_is_skipped(tmp_path, rng):
    vol = _volume()
    _write_series(tmp_path / "s", [vol[k] for k in range(4)], AXIAL, [(0, 0, k) for k in range(4)], "1.2.1", rng)
    first = sorted((tmp_path / "s").iterdir())[0]
    ds = read_header(first)
    import pydicom
    full = pydicom.dcmread(first)
    full.ImagePositionPatient = [0.0, 0.0, 99.0]
    full.save_as(tmp_path / "s" / "ZZ.dcm")
    res = IngestResult()
    manifest.ingest(_manifest(tmp_path, [f"p1,s1,s,benign,{YC},{XC},1,"]), res)
    assert res.records == [] and ds.SOPInstanceUID in res.skipped[0]["reason"]
    assert "different positions" in res.skipped[0]["reason"]


# ----------------------------------------------------------------------------- DICOM values

CT = dict(modality="CT", patient_id="P1", study_uid="1.2.3", series_uid="1.2.3.4")


def test_rescale_slope_zero_is_a_dicom_error_not_a_constant_image(tmp_path):
    path = write_dicom(tmp_path / "s0.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8), slope=0.0,
                       intercept=-1024.0, **CT)
    with pytest.raises(DicomError, match=r"s0\.dcm: RescaleSlope is 0.*constant image"):
        read_dicom(path)


def test_rescale_slope_zero_in_a_manifest_is_a_listed_skip_at_preprocess(tmp_path):
    from oncorobust.data.preprocess import run_preprocess

    rows = []
    for i in range(12):
        write_dicom(tmp_path / f"i{i}.dcm", np.full((16, 16), 100 + i, np.uint16), slope=0.0 if i == 0 else 1.0,
                    **{**CT, "patient_id": f"p{i}"})
        rows.append({"sample_id": f"s{i}", "patient_id": f"p{i}", "label": i % 2,
                     "label_name": ["benign", "malignant"][i % 2], "split": ["train", "val", "test"][(i // 2) % 3],
                     "source": f"i{i}.dcm", "frame": -1, "roi_row": 8.0, "roi_col": 8.0, "roi_size_px": float("nan")})
    rows[0]["split"] = "train"
    _, _, skipped = run_preprocess(pd.DataFrame(rows), {"format": "manifest", "manifest": str(tmp_path / "m.csv"),
                                                        "root": str(tmp_path)},
                                   {"size": 8, "balance": "none"}, 0)
    assert list(skipped.sample_id) == ["s0"] and "RescaleSlope is 0" in skipped.reason[0]


def test_implausible_stored_values_are_listed_at_preprocess(tmp_path):
    from oncorobust.data.preprocess import run_preprocess

    rows = []
    hu = np.linspace(-1024, 1000, 256).reshape(16, 16).astype(np.int16)
    for i in range(12):
        pixels = hu.view(np.uint16) if i == 3 else np.full((16, 16), 100 + i, np.uint16)
        write_dicom(tmp_path / f"i{i}.dcm", pixels, **{**CT, "patient_id": f"p{i}"})
        rows.append({"sample_id": f"s{i}", "patient_id": f"p{i}", "label": i % 2,
                     "label_name": ["benign", "malignant"][i % 2], "split": ["train", "val", "test"][(i // 2) % 3],
                     "source": f"i{i}.dcm", "frame": -1, "roi_row": 8.0, "roi_col": 8.0, "roi_size_px": float("nan")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DicomPlausibilityWarning)
        tensors, _, listed = run_preprocess(pd.DataFrame(rows), {"format": "manifest", "manifest": str(tmp_path / "m.csv"),
                                                                  "root": str(tmp_path)}, {"size": 8, "balance": "none"}, 0)
    assert list(listed.stage) == ["plausibility"] and list(listed.sample_id) == ["s3"]
    assert "look like signed" in listed.reason[0]
    assert sum(len(t["ids"]) for t in tensors.values()) == 12  # kept as stored


def test_signed_data_stored_as_unsigned_is_flagged(tmp_path, caplog):
    hu = np.linspace(-1024, 1000, 256).reshape(16, 16).astype(np.int16)
    path = write_dicom(tmp_path / "wrap.dcm", hu.view(np.uint16), **CT)  # PixelRepresentation 0
    with caplog.at_level("WARNING"), pytest.warns(DicomPlausibilityWarning, match=r"wrap\.dcm: .*look like signed"):
        out = read_dicom(path)
    assert out.max() >= 64512  # kept as stored (the file says unsigned), but flagged
    assert "PixelRepresentation is probably wrong" in caplog.text
    fine = write_dicom(tmp_path / "fine.dcm", hu, **CT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_dicom(fine), hu.astype(np.float32))


def test_values_beyond_bits_stored_are_flagged(tmp_path):
    stored = np.arange(256, dtype=np.uint16).reshape(16, 16) * 20  # up to 5100 > 4095
    path = write_dicom(tmp_path / "b12.dcm", stored, **CT, extra={"BitsStored": 12, "HighBit": 11})
    with pytest.warns(DicomPlausibilityWarning, match=r"b12\.dcm: \d+ pixel\(s\) hold raw values outside the"
                                                      r" range 0\.\.4095 of BitsStored 12"):
        read_dicom(path)
    ok = write_dicom(tmp_path / "ok12.dcm", stored // 2, **CT, extra={"BitsStored": 12, "HighBit": 11})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_dicom(ok)


def test_binary_mask_0_65535_is_not_flagged(tmp_path):
    mask = np.zeros((8, 8), np.uint16)
    mask[2:5, 2:5] = 65535
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_dicom(write_dicom(tmp_path / "m.dcm", mask, **CT))


# ----------------------------------------------------------------------------- manifest paths


def test_windows_backslash_path_gets_a_hint(tmp_path):
    write_dicom(tmp_path / "dicom" / "a.dcm", np.ones((8, 8), np.uint16), **MR, series_uid="1.2.3")
    res = IngestResult()
    manifest.ingest(_manifest(tmp_path, [r"p1,s1,dicom\a.dcm,benign,4,4,,", r"p2,s2,C:\data\a.dcm,benign,4,4,,",
                                         "p3,s3,dicom/a.dcm,benign,4,4,,"]), res)
    assert [r["sample_id"] for r in res.records] == ["s3"]
    back, drive = res.skipped
    assert "the path uses backslashes" in back["reason"] and "'dicom/a.dcm'" in back["reason"]
    assert "Windows drive path" in drive["reason"]


def test_windows_backslash_mask_path_gets_a_hint(tmp_path):
    write_dicom(tmp_path / "dicom" / "a.dcm", np.ones((8, 8), np.uint16), **MR, series_uid="1.2.3")
    res = IngestResult()
    manifest.ingest(_manifest(tmp_path, [r"p1,s1,dicom/a.dcm,benign,,,masks\m.dcm"],
                              header="patient_id,sample_id,path,label,roi_row,roi_col,mask_path"), res)
    assert res.records == [] and "mask_path: no such file; the path uses backslashes" in res.skipped[0]["reason"]


# ------------------------------------------------------------------------------ LIDC ratings

def _lidc_series(folder: Path, n=6, iop=None):
    zs = [-50.0 + 2.5 * k for k in range(n)]
    sops = []
    for k, z in enumerate(zs):
        sop = f"1.2.826.0.1.3680043.8.498.5.{k + 1}"
        extra = {"ImageOrientationPatient": iop, "ImagePositionPatient": [0.0, 0.0, z]} if iop else None
        write_dicom(folder / f"{k:04d}.dcm", np.zeros((64, 64), np.uint16), modality="CT", patient_id="LIDC-IDRI-0099",
                    study_uid="1.2.3.1", series_uid="1.2.3.1.9", sop_uid=sop, z_mm=z, pixel_spacing=(0.7, 0.7),
                    slice_thickness=2.5, extra=extra)
        sops.append(sop)
    return zs, sops


def _lidc_xml(path: Path, sessions) -> None:
    """Each mark: (malignancy text or None, other characteristics' value, sop, z)."""
    from xml.etree import ElementTree as ET

    root = ET.Element("LidcReadMessage", {"xmlns": "http://www.nih.gov"})
    ET.SubElement(ET.SubElement(root, "ResponseHeader"), "SeriesInstanceUid").text = "1.2.3.1.9"
    for r, marks in enumerate(sessions):
        sess = ET.SubElement(root, "readingSession")
        ET.SubElement(sess, "servicingRadiologistID").text = f"reader{r}"
        for n, (mal, other, sop, z) in enumerate(marks):
            nod = ET.SubElement(sess, "unblindedReadNodule")
            ET.SubElement(nod, "noduleID").text = f"Nodule {r}{n}"
            if mal is not None:
                ch = ET.SubElement(nod, "characteristics")
                for name in ("subtlety", "internalStructure", "calcification", "sphericity"):
                    ET.SubElement(ch, name).text = str(other)
                ET.SubElement(ch, "malignancy").text = str(mal)
            roi = ET.SubElement(nod, "roi")
            ET.SubElement(roi, "imageZposition").text = repr(z)
            ET.SubElement(roi, "imageSOP_UID").text = sop
            for x, y in ((28, 30), (32, 30), (32, 34), (28, 34)):
                em = ET.SubElement(roi, "edgeMap")
                ET.SubElement(em, "xCoord").text = str(x)
                ET.SubElement(em, "yCoord").text = str(y)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def test_lidc_malignancy_outside_1_to_5_is_a_listed_skip_not_benign(tmp_path):
    from oncorobust.data.sources import lidc

    folder = tmp_path / "ct" / "LIDC-IDRI-0099" / "s"
    zs, sops = _lidc_series(folder)
    # before: the ratings -1, -2, 4 had the median-high -1 -> "benign"
    _lidc_xml(folder / "099.xml", [[("-1", 3, sops[2], zs[2])], [("-2", 3, sops[2], zs[2])],
                                   [("4", 3, sops[2], zs[2]), ("6", 3, sops[4], zs[4])],
                                   [("0", 3, sops[2], zs[2]), ("0", 0, sops[1], zs[1])]])
    res = IngestResult()
    lidc.ingest({"root": str(tmp_path / "ct")}, res)
    assert [(r["label"], Path(r["source"]).name) for r in res.records] == [(1, "0002.dcm")]
    reasons = [s["reason"] for s in res.skipped]
    assert len(reasons) == 4, reasons  # -1, -2, 6, and 0 beside rated characteristics; not the < 3 mm one
    text = (folder / "099.xml").read_text().splitlines()
    for reason, value in zip(reasons, ["-1", "-2", "6", "0"]):
        assert f"is '{value}', outside the ratings 1-5" in reason and "mark skipped" in reason
        line = int(reason.split("malignancy at line ", 1)[1].split(" ", 1)[0])
        assert text[line - 1].strip() == f"<malignancy>{value}</malignancy>"


def test_lidc_duplicated_slice_file_is_used_once_and_listed(tmp_path):
    from oncorobust.data.sources import lidc

    folder = tmp_path / "ct" / "LIDC-IDRI-0099" / "s"
    zs, sops = _lidc_series(folder)
    shutil.copy(folder / "0001.dcm", folder / "0001_copy.dcm")
    _lidc_xml(folder / "099.xml", [[("5", 3, sops[3], zs[3])]])
    res = IngestResult()
    lidc.ingest({"root": str(tmp_path / "ct")}, res)
    assert [(r["label"], Path(r["source"]).name) for r in res.records] == [(1, "0003.dcm")]
    (dup,) = res.skipped
    assert dup["file"].endswith("0001_copy.dcm") and "duplicate of 0001.dcm" in dup["reason"]


def test_lidc_non_axial_series_is_listed_not_matched_by_z(tmp_path):
    from oncorobust.data.sources import lidc

    folder = tmp_path / "ct" / "LIDC-IDRI-0099" / "s"
    zs, sops = _lidc_series(folder, iop=SAGITTAL)
    _lidc_xml(folder / "099.xml", [[("5", 3, sops[3], zs[3])]])
    res = IngestResult()
    lidc.ingest({"root": str(tmp_path / "ct")}, res)
    assert res.records == [] and "is not axial" in res.skipped[0]["reason"]


# ------------------------------------------------------------------------------ disk faults

def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_enospc_in_write_csv_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    from oncorobust.io import WriteError, write_csv

    monkeypatch.setattr(pd.DataFrame, "to_csv", _enospc)
    with pytest.raises(WriteError, match=r"^no space left on device while writing .*out[/\\]t\.csv"):
        write_csv(pd.DataFrame({"a": [1]}), tmp_path / "out" / "t.csv")
    assert list((tmp_path / "out").iterdir()) == []
    assert issubclass(WriteError, OncorobustError)


def test_enospc_in_write_json_and_atomic_blocks(tmp_path, monkeypatch):
    from oncorobust.io import WriteError, atomic_path, write_json

    monkeypatch.setattr(Path, "write_text", _enospc)
    with pytest.raises(WriteError, match=r"no space left on device while writing .*stats\.json"):
        write_json({"a": 1}, tmp_path / "stats.json")
    with pytest.raises(WriteError, match=r"no space left on device while writing .*table\.md"):
        with atomic_path(tmp_path / "table.md") as tmp:
            tmp.write_text("x")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError):  # a read failing in the block is not called a write failure
        with atomic_path(tmp_path / "y.md"):
            (tmp_path / "missing.txt").read_bytes()


def test_torch_short_write_is_no_space_left(tmp_path, monkeypatch):
    import torch

    from oncorobust.io import WriteError, save_torch

    def short_write(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half")  # save_torch hands torch.save an open file
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing"
                           " file data/0: file write failed; unexpected pos 64 vs 128")

    monkeypatch.setattr(torch, "save", short_write)
    with pytest.raises(WriteError, match=r"^no space left on device while writing .*train\.pt \(torch\.save:"):
        save_torch({"x": 1}, tmp_path / "train.pt")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(torch, "save", _enospc)
    with pytest.raises(WriteError, match="no space left on device while writing"):
        save_torch({"x": 1}, tmp_path / "train.pt")


def test_other_write_errors_name_the_file_and_the_reason(tmp_path, monkeypatch):
    from oncorobust.io import WriteError, write_csv

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(pd.DataFrame, "to_csv", denied)
    with pytest.raises(WriteError, match=r"cannot write .*t\.csv: Permission denied \(EACCES\)"):
        write_csv(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")

    def rofs(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(pd.DataFrame, "to_csv", rofs)
    with pytest.raises(WriteError, match=r"read-only file system while writing .*t\.csv"):
        write_csv(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")


# ------------------------------------------------------------------------------ config YAML and ε

def _cfg_with_eps(eps, reference=None):
    return {"datasets": {"ct": {"source": {"format": "digits"}, "train": {},
                                "attack": {"eps": eps, "reference_eps": eps[0] if reference is None else reference}}}}


@pytest.mark.parametrize("eps, message", [
    # equal within oncorobust.epsilon.same_eps (relative 1e-9): one budget written twice
    ([0.01, 0.010000000001], r"datasets\.ct\.attack\.eps: 0\.01 \(item 0\) and 0\.010000000001 \(item 1\) are"
                             r" the same budget"),
    ([float("nan")], r"datasets\.ct\.attack\.eps\[0\] = nan: an ε must be a finite number in \(0, 1\]"),
    ([0.002, float("inf")], r"datasets\.ct\.attack\.eps\[1\] = inf"),
    ([0.0], r"datasets\.ct\.attack\.eps\[0\] = 0\.0"),
    ([1.5], r"datasets\.ct\.attack\.eps\[0\] = 1\.5"),
    ([0.002, "1e-3"], r"datasets\.ct\.attack\.eps\[1\] = '1e-3' is a string.*write 1\.0e-3"),
])
def test_bad_eps_is_a_config_error_naming_the_key(eps, message):
    from oncorobust.config import check_config

    with pytest.raises(ConfigError, match=message):
        check_config(_cfg_with_eps(eps))


def test_bad_reference_eps_is_named():
    from oncorobust.config import check_config

    with pytest.raises(ConfigError, match=r"datasets\.ct\.attack\.reference_eps = nan"):
        check_config(_cfg_with_eps([0.002], reference=float("nan")))


def test_schema_error_on_a_numeric_string_gets_the_hint(tmp_path):
    import yaml

    from oncorobust.config import validate_config

    schema = Path(__file__).parents[1] / "workflow" / "schemas" / "config.schema.yaml"
    cfg = yaml.safe_load("datasets:\n  ct:\n    source: {format: digits}\n    preprocess: {size: 8}\n"
                         "    attack: {eps: [1e-3, 2e-3], reference_eps: 1e-3}\n")
    assert cfg["datasets"]["ct"]["attack"]["eps"] == ["1e-3", "2e-3"]  # PyYAML: strings
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, schema)
    text = str(info.value)
    assert "datasets.ct.attack.eps.0 = '1e-3'" in text and "write 1.0e-3" in text
    assert "write 2.0e-3" in text and "reference_eps = '1e-3'" in text


DUP = """\
seed: 0
datasets:
  ct:
    attack: {eps: [0.002]}
    preprocess: {size: 32}
    attack:
      eps: [0.004]
  mri:
    attack: {eps: [0.002]}
"""


def test_duplicate_yaml_key_names_the_key_and_both_lines(tmp_path):
    from oncorobust.config import check_yaml_files, load_yaml

    path = tmp_path / "c.yaml"
    path.write_text(DUP)
    with pytest.raises(ConfigError, match=r"c\.yaml: key 'attack' inside datasets\.ct is given twice, on lines 4"
                                          r" and 6"):
        check_yaml_files([path])
    with pytest.raises(ConfigError, match="on lines 4 and 6"):
        load_yaml(path)
    path.write_text(DUP.replace("    attack:\n      eps: [0.004]\n", "").replace("seed: 0\n", "seed: 0\nseed: 1\n"))
    with pytest.raises(ConfigError, match=r"key 'seed' is given twice, on lines 1 and 2"):
        check_yaml_files([path])
    path.write_text(DUP.replace("    attack:\n      eps: [0.004]\n", ""))
    check_yaml_files([path, tmp_path / "absent.yaml"])  # distinct keys in sibling mappings are fine
    assert load_yaml(path)["datasets"]["mri"]["attack"]["eps"] == [0.002]


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    from oncorobust.config import check_yaml_files

    path = tmp_path / "m.yaml"
    path.write_text("base: &b {eps: [0.002], methods: [pgd]}\nattack:\n  <<: *b\n  eps: [0.004]\n")
    check_yaml_files([path])


def test_workflow_checks_its_config_files_for_duplicate_keys():
    common = (Path(__file__).parents[1] / "workflow" / "rules" / "common.smk").read_text()
    assert "check_yaml_files(workflow.configfiles)" in common
