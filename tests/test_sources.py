"""Each source adapter on small fixtures in the real on-disk formats."""

import shutil
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oncorobust.data.dicom import read_dicom, write_dicom
from oncorobust.errors import DataError
from oncorobust.data.sources import IngestResult, cbis_ddsm, lidc, manifest
from oncorobust.data.sources.arrays import ingest as ingest_arrays
from oncorobust.data.sources.arrays import load_arrays
from oncorobust.data.sources.synthetic import _lidc_xml

# ----------------------------------------------------------------------------- LIDC


def _lidc_series(root, pid="LIDC-IDRI-0001", n=6, thickness=2.5):
    study, series = f"1.2.3.{pid[-1]}", f"1.2.3.{pid[-1]}.7.12345"
    folder = root / pid / study / series  # "classic" UID layout
    sops, zs = [], []
    for k in range(n):
        sop = f"{series}.{k + 1}"
        z = -50.0 + k * thickness
        write_dicom(folder / f"{k:06d}.dcm", np.full((64, 64), 24, np.uint16), modality="CT",
                    patient_id=pid, study_uid=study, series_uid=series, sop_uid=sop, z_mm=z,
                    intercept=-1024, pixel_spacing=(0.7, 0.7), slice_thickness=thickness)
        sops.append(sop)
        zs.append(z)
    return folder, study, series, sops, zs


def _square(cx, cy, r):
    return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]


def _mark(rating, cx, cy, r, slices, sops, zs):
    return {"malignancy": rating,
            "rois": [{"z": zs[k], "sop": sops[k], "points": _square(cx, cy, r)} for k in slices]}


def test_lidc_groups_readers_and_labels_by_median(tmp_path):
    folder, study, series, sops, zs = _lidc_series(tmp_path / "data")
    # nodule A near (20, 30) on slices 1-2: ratings 4,5,3,4 -> median_high 4 -> malignant
    # nodule B near (50, 45) on slice 4: ratings 3,3,2 -> median_high 3 -> excluded
    # nodule C near (50, 10) on slice 3: ratings 1,2 -> benign;  reader 0 also marks a < 3 mm nodule
    a = [4, 5, 3, 4]
    readers = []
    for r, rating in enumerate(a):
        marks = [_mark(rating, 20 + r * 0.5, 30, 4, [1, 2], sops, zs)]
        if r < 3:
            marks.append(_mark([3, 3, 2][r], 50, 45, 3, [4], sops, zs))
        if r < 2:
            marks.append(_mark([1, 2][r], 50, 10, 2, [3], sops, zs))
        if r == 0:
            marks.append({"malignancy": None, "rois": [{"z": zs[0], "sop": sops[0], "points": [(5, 5)]}]})
        readers.append(marks)
    (folder / "069.xml").write_bytes(_lidc_xml(series, study, readers))
    # a chest X-ray annotation in the same tree must be ignored
    (tmp_path / "data" / "cxr.xml").write_text('<IdriReadMessage xmlns="http://www.nih.gov/idri"/>')
    res = IngestResult()
    lidc.ingest({"root": str(tmp_path / "data")}, res)
    recs = sorted(res.records, key=lambda r: r["roi_col"])
    assert [r["label"] for r in recs] == [1, 0]
    assert all(r["patient_id"] == "LIDC-IDRI-0001" for r in recs)
    malignant = recs[0]
    assert malignant["roi_col"] == pytest.approx(np.mean([20 + r * 0.5 for r in range(4)]))
    assert malignant["roi_row"] == pytest.approx(30)
    assert malignant["roi_size_px"] == pytest.approx(10.5)  # 8 px square + 1.5 px shift + 1
    # the slice chosen lies at the mean z of the marks (between slices 1 and 2 -> nearest is 1)
    assert Path(malignant["source"]).name == "000001.dcm"
    benign = recs[1]
    assert (benign["roi_row"], benign["roi_col"]) == (10, 50)
    assert Path(benign["source"]).name == "000003.dcm"
    assert res.skipped == []


def test_lidc_mean_rule_and_thresholds_are_configurable(tmp_path):
    folder, study, series, sops, zs = _lidc_series(tmp_path)
    readers = [[_mark(r, 20, 30, 3, [2], sops, zs)] for r in (2, 3, 3, 3)]  # mean 2.75, median_high 3
    (folder / "1.xml").write_bytes(_lidc_xml(series, study, readers))
    res = IngestResult()
    lidc.ingest({"root": str(tmp_path)}, res)
    assert res.records == []  # indeterminate under the default rule
    res = IngestResult()
    lidc.ingest({"root": str(tmp_path), "label": {"aggregate": "mean"}}, res)
    assert [r["label"] for r in res.records] == [0]
    assert statistics.fmean([2, 3, 3, 3]) < 3


def test_lidc_erratum_file_wins_and_orphan_xml_is_reported(tmp_path):
    folder, study, series, sops, zs = _lidc_series(tmp_path / "ct")
    xml = tmp_path / "xml" / "161"
    xml.mkdir(parents=True)
    (xml / "161.xml").write_bytes(_lidc_xml(series, study, [[_mark(1, 20, 20, 3, [2], sops, zs)]]))
    (xml / "161-resubmitted-correction-3-9-12.xml").write_bytes(
        _lidc_xml(series, study, [[_mark(5, 20, 20, 3, [2], sops, zs)]]))
    (xml / "999.xml").write_bytes(_lidc_xml("9.9.9", "9.9", [[_mark(5, 20, 20, 3, [2], sops, zs)]]))
    res = IngestResult()
    lidc.ingest({"root": str(tmp_path / "ct"), "xml_root": str(xml)}, res)
    assert [r["label"] for r in res.records] == [1]
    reasons = " ".join(s["reason"] for s in res.skipped)
    assert "second annotation file" in reasons and "no DICOM series with SeriesInstanceUID 9.9.9" in reasons


def test_lidc_on_generated_tree_reads_all_layouts(demo_root):
    res = IngestResult()
    lidc.ingest({"root": str(demo_root / "lidc")}, res)
    df = pd.DataFrame(res.records)
    assert len(df) > 20 and set(df.label) == {0, 1}
    assert df.patient_id.nunique() > 15
    # both folder layouts (current TCIA and classic UID) and RLE-compressed series were read
    tops = {Path(s).parts[2][:2] for s in df.source}
    assert "01" in tops and "1." in tops
    for row in df.head(5).itertuples():
        img = read_dicom(demo_root / "lidc" / row.source)
        assert 0 <= row.roi_row < img.shape[0] and 0 <= row.roi_col < img.shape[1]


def test_lidc_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="source.root = .*nowhere: no such folder"):
        lidc.ingest({"root": str(tmp_path / "nowhere")}, IngestResult())


# ----------------------------------------------------------------------------- CBIS-DDSM


def test_cbis_matches_by_uid_and_finds_mask_by_content(demo_root):
    root = demo_root / "cbis"
    res = IngestResult()
    cbis_ddsm.ingest({"root": str(root)}, res)
    table = pd.concat([cbis_ddsm.read_case_csv(p) for p in sorted(root.glob("*case_description*.csv"))])
    assert len(res.records) == len(table) and res.skipped == []
    # stray "\n" in path cells was stripped, and labels follow the pathology column
    assert not table.roi_mask_file_path.str.contains("\n").any()
    expected = {f"{p.split('/')[0]}_{a}": int(v == "MALIGNANT")
                for p, a, v in zip(table.image_file_path, table.abnormality_id, table.pathology)}
    assert {r["sample_id"]: r["label"] for r in res.records} == expected
    # the centre lies on the lesion mask
    rec = res.records[0]
    img = read_dicom(root / rec["source"])
    assert img.shape[0] > rec["roi_row"] > 0 and img.shape[1] > rec["roi_col"] > 0


def test_cbis_reports_unmatched_rows_and_bad_masks(demo_root, tmp_path):
    root = tmp_path / "cbis"
    shutil.copytree(demo_root / "cbis", root)
    table = cbis_ddsm.read_case_csv(root / "mass_case_description_train_set.csv")
    first, second = table.iloc[0], table.iloc[1]
    # remove one full mammogram, and make another row's mask the wrong size
    shutil.rmtree(root / "CBIS-DDSM" / first.image_file_path.split("/")[0])
    roi_case = second.roi_mask_file_path.split("/")[0]
    for f in (root / "CBIS-DDSM" / roi_case).rglob("*.dcm"):
        if read_dicom(f).shape[0] > 100:
            write_dicom(f, np.zeros((50, 40), np.uint16), modality="MG", patient_id="x",
                        study_uid="1.1", series_uid=second.roi_mask_file_path.split("/")[2])
    res = IngestResult()
    cbis_ddsm.ingest({"root": str(root)}, res)
    reasons = {s["sample_id"]: s["reason"] for s in res.skipped}
    assert "full mammogram not found" in reasons[f"{first.image_file_path.split('/')[0]}_{first.abnormality_id}"]
    assert "no ROI mask of the mammogram's size" in reasons[f"{roi_case.rsplit('_', 1)[0]}_{second.abnormality_id}"]


def test_cbis_without_csvs(tmp_path):
    with pytest.raises(DataError, match="case_description"):
        cbis_ddsm.ingest({"root": str(tmp_path)}, IngestResult())


# ----------------------------------------------------------------------------- manifest


def test_manifest_centre_mask_and_series(demo_root):
    root = demo_root / "mri"
    res = IngestResult()
    manifest.ingest({"manifest": str(root / "manifest.csv")}, res)
    df = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    assert len(res.records) == len(df) and res.skipped == []
    by_id = {r["sample_id"]: r for r in res.records}
    row = df[df.mask_path == ""].iloc[0]
    rec = by_id[row.sample_id]
    assert rec["roi_row"] == float(row.roi_row) and rec["label_name"] == row.label
    assert Path(rec["source"]).name == f"IM{int(row.roi_slice):04d}.dcm"
    masked = df[df.mask_path != ""].iloc[0]
    m = by_id[masked.sample_id]
    mask = read_dicom(root / masked.mask_path)
    ys, xs = np.nonzero(mask)
    assert m["roi_row"] == pytest.approx((ys.min() + ys.max()) / 2)
    assert np.isfinite(m["roi_size_px"])


def _write_manifest(tmp_path, rows, header="patient_id,sample_id,path,label,roi_row,roi_col"):
    img = write_dicom(tmp_path / "a.dcm", np.zeros((20, 20), np.uint16), modality="MR",
                      patient_id="p", study_uid="1.2", series_uid="1.2.3")
    (tmp_path / "m.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return img


def test_manifest_bad_label(tmp_path):
    _write_manifest(tmp_path, ["p1,s1,a.dcm,benign,5,5", "p2,s2,a.dcm,tumour,5,5"])
    with pytest.raises(DataError, match=r"m\.csv:3: label 'tumour' is not one of"):
        manifest.ingest({"manifest": str(tmp_path / "m.csv")}, IngestResult())


def test_manifest_missing_column(tmp_path):
    _write_manifest(tmp_path, ["p1,s1,a.dcm,5,5"], header="patient_id,sample_id,path,roi_row,roi_col")
    with pytest.raises(DataError, match=r"missing column\(s\) \['label'\]"):
        manifest.ingest({"manifest": str(tmp_path / "m.csv")}, IngestResult())


def test_manifest_corrupt_file_is_skipped_with_reason(tmp_path):
    _write_manifest(tmp_path, ["p1,s1,a.dcm,benign,5,5", "p2,s2,b.dcm,malignant,5,5", "p3,s3,c.dcm,1,5,5"])
    (tmp_path / "c.dcm").write_text("garbage")
    res = IngestResult()
    manifest.ingest({"manifest": str(tmp_path / "m.csv")}, res)
    assert [r["sample_id"] for r in res.records] == ["s1", "s3"]  # c.dcm is only read at preprocess
    assert res.skipped[0]["sample_id"] == "s2" and "no such DICOM file" in res.skipped[0]["reason"]


# ----------------------------------------------------------------------------- arrays


def _idx(path, arr):
    dims = arr.shape
    code = 0x08
    header = bytes([0, 0, code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def test_mnist_from_local_idx_files(tmp_path, rng):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    arrays = load_arrays({"format": "mnist", "root": str(tmp_path)})
    assert arrays["train"][0].shape == (12, 28, 28) and arrays["test"][1].tolist() == [0, 1, 2, 3, 4]
    assert 0 <= arrays["train"][0].min() and arrays["train"][0].max() <= 1
    res = IngestResult()
    ingest_arrays({"format": "mnist", "root": str(tmp_path)}, res)
    assert sum(r["split"] == "test" for r in res.records) == 5


@pytest.mark.parametrize("fmt,expect", [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py")])
def test_array_sets_absent_say_where_to_put_them(tmp_path, fmt, expect):
    with pytest.raises(DataError, match=expect):
        load_arrays({"format": fmt, "root": str(tmp_path)})
    with pytest.raises(DataError, match="nothing is downloaded"):
        load_arrays({"format": fmt, "root": str(tmp_path / "absent")})


def test_digits_is_offline_and_complete():
    (x, y), = load_arrays({"format": "digits"}).values()
    assert x.shape == (1797, 8, 8) and set(y.tolist()) == set(range(10)) and x.max() == 1.0
