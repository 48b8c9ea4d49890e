"""Manifest ROIs from RTSTRUCT (pydicom, laid out as RT planning systems write it) and DICOM-SEG
(written by highdicom): the same crop as the equivalent point / mask ROI, and one clear reason for
every file that does not fit its image series."""

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from oncorobust.data.dicom import write_dicom
from oncorobust.errors import DataError, OncorobustError
from oncorobust.data.preprocess import crop_side, crop_square, resize, scale_intensity
from oncorobust.data.sources import IngestResult, manifest
from oncorobust.data.sources.images import read_image
from oncorobust.data.sources.rois import RoiReferenceError, rtstruct_roi, seg_roi

SHAPE = (48, 48)
SPACING = (0.8, 0.7)  # mm between rows, between columns
ORIGIN = (-20.0, -15.0)  # ImagePositionPatient x, y
THICKNESS = 2.5
RT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"

# The lesion (row slice, column slice) on each slice index; slice 3 is the largest cross-section.
LESION = {2: (slice(18, 22), slice(20, 26)), 3: (slice(15, 25), slice(18, 30)), 4: (slice(17, 21), slice(21, 24))}
BBOX_3 = (19.5, 23.5, 12.0)  # centre row, centre column, larger side (pixels) on slice 3


def _series(folder: Path, n=6, frame_of_reference=None, seed=0, study=None):
    """A CT series written by the project's own writer, with the patient/study attributes a
    DICOM-SEG writer copies from its source images. Returns (files, datasets)."""
    rng = np.random.default_rng(seed)
    study = study or generate_uid()
    series, forr = generate_uid(), frame_of_reference or generate_uid()
    files = []
    for k in range(n):
        pixels = rng.integers(900, 1100, SHAPE).astype(np.uint16)
        if k in LESION:
            pixels[LESION[k]] += 200
        files.append(write_dicom(
            folder / f"IM{k:04d}.dcm", pixels, modality="CT", patient_id="P1", study_uid=study,
            series_uid=series, z_mm=-10.0 + THICKNESS * k, intercept=-1024, pixel_spacing=SPACING,
            slice_thickness=THICKNESS, instance_number=k + 1,
            extra={"FrameOfReferenceUID": forr, "ImagePositionPatient": [ORIGIN[0], ORIGIN[1], -10.0 + THICKNESS * k],
                   "PatientName": "ANONYMOUS^", "PatientBirthDate": "", "PatientSex": "", "StudyDate": "20200101",
                   "StudyTime": "120000", "StudyID": "1", "AccessionNumber": "", "ReferringPhysicianName": "",
                   "SeriesNumber": 1}))
    return files, [pydicom.dcmread(f) for f in files]


def _lesion_volume(n=6) -> np.ndarray:
    mask = np.zeros((n, *SHAPE), bool)
    for k, box in LESION.items():
        mask[k][box] = True
    return mask


def _write_seg(path: Path, datasets, mask=None, labels=("GTV",)) -> Path:
    """A binary DICOM-SEG written by highdicom (segment 1 = the lesion; further labels: segments
    that are empty apart from one pixel on slice 0)."""
    vol = _lesion_volume(len(datasets)) if mask is None else mask
    arrays, descriptions = [vol], []
    for n, label in enumerate(labels, start=1):
        if n > 1:
            extra = np.zeros_like(vol)
            extra[0, 2, 2] = True
            arrays.append(extra)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=n, segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL))
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=np.stack(arrays, axis=-1).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=generate_uid(), series_number=2, sop_instance_uid=generate_uid(),
        instance_number=1, manufacturer="test", manufacturer_model_name="test", software_versions="0",
        device_serial_number="0")
    seg.save_as(path)
    return path


def _contour_mm(box, z):
    """A closed rectangle through the centres of the box's corner pixels, as patient x, y, z (mm)."""
    (r0, r1), (c0, c1) = (box[0].start, box[0].stop - 1), (box[1].start, box[1].stop - 1)
    pts = []
    for r, c in ((r0, c0), (r0, c1), (r1, c1), (r1, c0)):
        pts += [ORIGIN[0] + c * SPACING[1], ORIGIN[1] + r * SPACING[0], z]
    return pts


def _write_rtstruct(path: Path, datasets, structures=None, frame_of_reference=None, with_refs=True,
                    z_shift=0.0) -> Path:
    """An RT Structure Set laid out as planning systems export it: ReferencedFrameOfReferenceSequence
    > RTReferencedStudySequence > RTReferencedSeriesSequence > ContourImageSequence (every slice),
    StructureSetROISequence (ROINumber, ROIName, ReferencedFrameOfReferenceUID), ROIContourSequence
    with one CLOSED_PLANAR contour per slice (ContourImageSequence naming the slice's
    SOPInstanceUID, ContourData in patient mm), RTROIObservationsSequence."""
    ref = datasets[0]
    forr = frame_of_reference or ref.FrameOfReferenceUID
    structures = structures or {"GTV": LESION, "Brainstem": {0: (slice(5, 9), slice(5, 9))}}
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = RT_CLASS
    ds.SOPClassUID = RT_CLASS
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "RTSTRUCT"
    for key in ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID"):
        setattr(ds, key, ref.get(key))
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 3
    ds.StructureSetLabel = "RT"
    ds.StructureSetDate, ds.StructureSetTime = "20200101", "120000"

    def image_ref(d):
        it = Dataset()
        it.ReferencedSOPClassUID = d.SOPClassUID
        it.ReferencedSOPInstanceUID = d.SOPInstanceUID
        return it

    series_ref = Dataset()
    series_ref.SeriesInstanceUID = ref.SeriesInstanceUID
    series_ref.ContourImageSequence = Sequence([image_ref(d) for d in datasets])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_ref.ReferencedSOPInstanceUID = ref.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = Sequence([series_ref])
    for_ref = Dataset()
    for_ref.FrameOfReferenceUID = forr
    for_ref.RTReferencedStudySequence = Sequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = Sequence([for_ref])
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = [], [], []
    for number, (name, boxes) in enumerate(structures.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = number, forr, name
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        contours = []
        for k, box in boxes.items():
            c = Dataset()
            if with_refs:
                c.ContourImageSequence = Sequence([image_ref(datasets[k])])
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = 4
            c.ContourData = _contour_mm(box, float(datasets[k].ImagePositionPatient[2]) + z_shift)
            contours.append(c)
        rc = Dataset()
        rc.ReferencedROINumber, rc.ROIDisplayColor = number, [255, 0, 0]
        rc.ContourSequence = Sequence(contours)
        ds.ROIContourSequence.append(rc)
        obs = Dataset()
        obs.ObservationNumber, obs.ReferencedROINumber, obs.RTROIInterpretedType = number, number, "GTV"
        obs.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(obs)
    ds.save_as(path, enforce_file_format=True)
    return path


def _manifest(tmp_path, header, rows):
    (tmp_path / "m.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    res = IngestResult()
    manifest.ingest({"manifest": str(tmp_path / "m.csv")}, res)
    return res


def _tensor(root: Path, rec: dict) -> torch.Tensor:
    """The preprocessed tensor of a record (preprocess's crop, window and resize)."""
    pixels = read_image(root / rec["source"])
    side = crop_side(rec["roi_size_px"], {"margin": 2.0, "min_px": 16})
    crop = crop_square(pixels, (rec["roi_row"], rec["roi_col"]), side)
    return resize(scale_intensity(crop, {"mode": "window", "window": [-200, 400]}), 32)


@pytest.fixture
def case(tmp_path):
    files, dss = _series(tmp_path / "ct")
    _write_rtstruct(tmp_path / "rs.dcm", dss)
    _write_seg(tmp_path / "seg.dcm", dss, labels=("GTV", "Oedema"))
    mask = np.zeros(SHAPE, np.uint16)
    mask[LESION[3]] = 1
    write_dicom(tmp_path / "mask.dcm", mask, modality="CT", patient_id="P1", study_uid="1.2", series_uid="1.2.9",
                z_mm=float(dss[3].ImagePositionPatient[2]), pixel_spacing=SPACING)
    return tmp_path, files, dss


def test_rtstruct_and_seg_give_the_crop_of_the_point_and_mask_roi(case):
    root, files, _ = case
    res = _manifest(root, "patient_id,sample_id,path,label,roi_row,roi_col,roi_slice,roi_size_px,mask_path,"
                          "rtstruct_path,roi_name,seg_path,segment",
                    [f"p1,point,ct,benign,{BBOX_3[0]},{BBOX_3[1]},3,{BBOX_3[2]},,,,,",
                     "p1,mask,ct,benign,,,,,mask.dcm,,,,",
                     "p1,rt,ct,benign,,,,,,rs.dcm,GTV,,",
                     "p1,rt_lower,ct,benign,,,,,,rs.dcm,gtv,,",  # case-insensitive when unique
                     "p1,seg_number,ct,benign,,,,,,,,seg.dcm,1",
                     "p1,seg_label,ct,benign,,,,,,,,seg.dcm,GTV"])
    assert res.skipped == []
    recs = {r["sample_id"]: r for r in res.records}
    keys = ("source", "frame", "roi_row", "roi_col", "roi_size_px")
    point = {k: recs["point"][k] for k in keys}
    assert Path(point["source"]) == Path("ct/IM0003.dcm")
    want = _tensor(root, recs["point"])
    for sid in ("mask", "rt", "rt_lower", "seg_number", "seg_label"):
        assert {k: recs[sid][k] for k in keys} == point, sid
        assert torch.equal(_tensor(root, recs[sid]), want), sid


def test_largest_cross_section_and_roi_slice(case):
    root, files, _ = case
    roi = rtstruct_roi(root / "rs.dcm", "GTV", files)
    assert (roi.index, roi.file, roi.area_px) == (3, files[3], 10 * 12)
    on2 = rtstruct_roi(root / "rs.dcm", "GTV", files, slice_index=2)
    assert (on2.index, on2.row, on2.col, on2.size_px) == (2, 19.5, 22.5, 6.0)
    seg2 = seg_roi(root / "seg.dcm", "GTV", files, slice_index=2)
    assert (seg2.row, seg2.col, seg2.size_px) == (on2.row, on2.col, on2.size_px)
    with pytest.raises(RoiReferenceError, match=r"not on slice 5 \(roi_slice\).*slice\(s\) 2-4"):
        rtstruct_roi(root / "rs.dcm", "GTV", files, slice_index=5)
    res = _manifest(root, "patient_id,sample_id,path,label,roi_slice,seg_path,segment",
                    ["p1,s1,ct,benign,4,seg.dcm,1"])
    assert Path(res.records[0]["source"]).name == "IM0004.dcm" and res.records[0]["roi_size_px"] == 4.0


def test_rtstruct_without_image_references_is_placed_by_position(case):
    root, files, dss = case
    _write_rtstruct(root / "norefs.dcm", dss, with_refs=False, z_shift=0.4)  # within half a slice
    a, b = rtstruct_roi(root / "rs.dcm", "GTV", files), rtstruct_roi(root / "norefs.dcm", "GTV", files)
    assert (a.index, a.row, a.col, a.size_px) == (b.index, b.row, b.col, b.size_px)


def test_unknown_structure_or_segment_lists_the_names(case):
    root, files, _ = case
    with pytest.raises(RoiReferenceError, match=r"no structure named 'PTV'.*'GTV', 'Brainstem'"):
        rtstruct_roi(root / "rs.dcm", "PTV", files)
    with pytest.raises(RoiReferenceError, match=r"no segment '7'.*1 \('GTV'\), 2 \('Oedema'\)"):
        seg_roi(root / "seg.dcm", "7", files)
    with pytest.raises(RoiReferenceError, match=r"no segment 'tumour'.*1 \('GTV'\)"):
        seg_roi(root / "seg.dcm", "tumour", files)
    res = _manifest(root, "patient_id,sample_id,path,label,rtstruct_path,roi_name",
                    ["p1,s1,ct,benign,rs.dcm,GTV", "p1,s2,ct,benign,rs.dcm,PTV"])
    assert [r["sample_id"] for r in res.records] == ["s1"]
    assert res.skipped[0]["sample_id"] == "s2" and "'GTV', 'Brainstem'" in res.skipped[0]["reason"]


def test_other_frame_of_reference_is_refused(case, tmp_path_factory):
    root, files, dss = case
    _write_rtstruct(root / "other_for.dcm", dss, frame_of_reference=generate_uid())
    with pytest.raises(RoiReferenceError, match=r"other_for\.dcm: the RTSTRUCT's structure 'GTV' lies in"
                                                r" another Frame of Reference"):
        rtstruct_roi(root / "other_for.dcm", "GTV", files)
    other = tmp_path_factory.mktemp("other")
    _, other_dss = _series(other / "ct", seed=1)  # another scan: its own Frame of Reference
    _write_seg(root / "other_seg.dcm", other_dss)
    with pytest.raises(RoiReferenceError, match=r"other_seg\.dcm: the segmentation lies in another Frame"):
        seg_roi(root / "other_seg.dcm", 1, files)
    res = _manifest(root, "patient_id,sample_id,path,label,seg_path,segment", ["p1,s1,ct,benign,other_seg.dcm,1"])
    assert res.records == [] and "Frame of Reference" in res.skipped[0]["reason"]


def test_images_of_another_series_are_refused(case, tmp_path_factory):
    root, files, dss = case
    other = tmp_path_factory.mktemp("other")
    # a second series in the same Frame of Reference (say a contrast phase): same geometry, other SOPs
    _, other_dss = _series(other / "ct", frame_of_reference=dss[0].FrameOfReferenceUID, seed=1)
    _write_rtstruct(root / "rs_other.dcm", other_dss)
    with pytest.raises(RoiReferenceError, match=r"3 of the 3 contours of structure 'GTV' reference images"
                                                r" that are not slices of the series.*drawn on another series"):
        rtstruct_roi(root / "rs_other.dcm", "GTV", files)
    _write_seg(root / "seg_other.dcm", other_dss)
    with pytest.raises(RoiReferenceError, match=r"is drawn on images that are not slices of the series"):
        seg_roi(root / "seg_other.dcm", "GTV", files)
    # an incomplete folder: the structure's largest slice is missing
    with pytest.raises(RoiReferenceError, match=r"series folder is incomplete"):
        rtstruct_roi(root / "rs.dcm", "GTV", [f for k, f in enumerate(files) if k != 3])
    with pytest.raises(RoiReferenceError, match=r"1 frame\(s\) of segment 1 \('GTV'\) are drawn on images missing"):
        seg_roi(root / "seg.dcm", 1, [f for k, f in enumerate(files) if k != 3])


def test_contour_on_no_slice_is_refused(case):
    root, files, dss = case
    _write_rtstruct(root / "far.dcm", dss, with_refs=False, z_shift=100.0)
    with pytest.raises(RoiReferenceError, match=r"contour 1 of structure 'GTV' lies on no slice of the series"):
        rtstruct_roi(root / "far.dcm", "GTV", files)
    _write_rtstruct(root / "off.dcm", dss, z_shift=2.0)  # references slice k but lies 2 mm off it
    with pytest.raises(RoiReferenceError, match=r"lies \+2\.00 mm off the slice it references"):
        rtstruct_roi(root / "off.dcm", "GTV", files)


def test_wrong_file_kinds_and_rows(case):
    root, files, _ = case
    with pytest.raises(RoiReferenceError, match=r"not an RT Structure Set \(SOP class CT Image Storage"):
        rtstruct_roi(files[0], "GTV", files)
    with pytest.raises(RoiReferenceError, match=r"not a DICOM Segmentation \(SOP class RT Structure Set Storage"):
        seg_roi(root / "rs.dcm", 1, files)
    with pytest.raises(DataError, match=r"m\.csv:2: rtstruct_path and roi_row, roi_col are both given"):
        _manifest(root, "patient_id,sample_id,path,label,roi_row,roi_col,rtstruct_path,roi_name",
                  ["p1,s1,ct,benign,5,5,rs.dcm,GTV"])
    with pytest.raises(DataError, match=r"column rtstruct_path needs column roi_name"):
        _manifest(root, "patient_id,sample_id,path,label,rtstruct_path", ["p1,s1,ct,benign,rs.dcm"])
    with pytest.raises(DataError, match=r"m\.csv:2: seg_path is given but segment is empty"):
        _manifest(root, "patient_id,sample_id,path,label,seg_path,segment", ["p1,s1,ct,benign,seg.dcm,"])
    with pytest.raises(DataError, match=r"m\.csv:3: no ROI"):
        _manifest(root, "patient_id,sample_id,path,label,seg_path,segment",
                  ["p1,s1,ct,benign,seg.dcm,1", "p1,s2,ct,benign,,"])
    with pytest.raises(DataError, match=r"m\.csv:2: segment is given without its file \(seg_path\)"):
        _manifest(root, "patient_id,sample_id,path,label,rtstruct_path,roi_name,seg_path,segment",
                  ["p1,s1,ct,benign,rs.dcm,GTV,,2"])
    res = _manifest(root, "patient_id,sample_id,path,label,rtstruct_path,roi_name", ["p1,s1,ct,benign,gone.dcm,GTV"])
    assert res.records == [] and "gone.dcm: no such RTSTRUCT file" in res.skipped[0]["reason"]
    assert issubclass(RoiReferenceError, OncorobustError)


def test_sagittal_series_rtstruct_and_seg_agree(tmp_path):
    """Contours in patient mm on a sagittal series (rows run head to foot, columns anterior to
    posterior): the geometry, not the z, places them."""
    files, dss = [], []
    study, series, forr = generate_uid(), generate_uid(), generate_uid()
    y0, z0 = -30.0, 40.0
    for k in range(5):
        pixels = np.full(SHAPE, 1000, np.uint16)
        files.append(write_dicom(
            tmp_path / "sag" / f"IM{k:04d}.dcm", pixels, modality="MR", patient_id="P1", study_uid=study,
            series_uid=series, pixel_spacing=SPACING, slice_thickness=THICKNESS, instance_number=k + 1,
            extra={"FrameOfReferenceUID": forr, "ImagePositionPatient": [-5.0 + THICKNESS * k, y0, z0],
                   "ImageOrientationPatient": [0.0, 1.0, 0.0, 0.0, 0.0, -1.0],
                   "PatientName": "ANONYMOUS^", "PatientBirthDate": "", "PatientSex": "",
                   "StudyDate": "20200101", "StudyTime": "120000", "StudyID": "1", "AccessionNumber": "",
                   "ReferringPhysicianName": "", "SeriesNumber": 1}))
    dss = [pydicom.dcmread(f) for f in files]
    rs = _write_rtstruct(tmp_path / "rs.dcm", dss, structures={"GTV": {}})
    ds = pydicom.dcmread(rs)
    (r0, r1), (c0, c1) = (15, 24), (18, 29)  # LESION[3] on slice 3
    x = float(dss[3].ImagePositionPatient[0])
    pts = []
    for r, c in ((r0, c0), (r0, c1), (r1, c1), (r1, c0)):
        pts += [x, y0 + c * SPACING[1], z0 - r * SPACING[0]]
    contour = Dataset()
    contour.ContourGeometricType, contour.NumberOfContourPoints, contour.ContourData = "CLOSED_PLANAR", 4, pts
    ds.ROIContourSequence[0].ContourSequence = Sequence([contour])  # no image reference: by position
    ds.save_as(rs, enforce_file_format=True)
    mask = np.zeros((5, *SHAPE), bool)
    mask[3][LESION[3]] = True
    _write_seg(tmp_path / "seg.dcm", dss, mask=mask)
    a, b = rtstruct_roi(rs, "GTV", files), seg_roi(tmp_path / "seg.dcm", "GTV", files)
    assert (a.index, a.row, a.col, a.size_px, a.area_px) == (3, *BBOX_3, 120)
    assert (b.index, b.row, b.col, b.size_px, b.area_px) == (3, *BBOX_3, 120)
    res = _manifest(tmp_path, "patient_id,sample_id,path,label,rtstruct_path,roi_name,seg_path,segment",
                    ["p1,rt,sag,benign,rs.dcm,GTV,,", "p1,seg,sag,benign,,,seg.dcm,1"])
    assert res.skipped == [] and [(Path(r["source"]).name, r["roi_row"], r["roi_col"], r["roi_size_px"])
                                  for r in res.records] == [("IM0003.dcm", *BBOX_3)] * 2


def test_holes_points_and_open_contours(case):
    """An inner contour on the same slice is a hole (exclusive or); a POINT or a contour too thin
    to enclose a pixel centre still marks its pixels."""
    root, files, dss = case
    rs = _write_rtstruct(root / "hole.dcm", dss, structures={"GTV": {3: LESION[3]}, "Dot": {1: LESION[3]}})
    ds = pydicom.dcmread(rs)
    hole = Dataset()
    hole.ContourGeometricType, hole.NumberOfContourPoints = "CLOSED_PLANAR", 4
    hole.ContourData = _contour_mm((slice(18, 21), slice(22, 25)), float(dss[3].ImagePositionPatient[2]))
    ds.ROIContourSequence[0].ContourSequence.append(hole)
    dot = ds.ROIContourSequence[1].ContourSequence[0]
    dot.ContourGeometricType, dot.NumberOfContourPoints = "POINT", 1
    dot.ContourData = _contour_mm(LESION[3], float(dss[1].ImagePositionPatient[2]))[:3]  # row 15, column 18
    ds.save_as(rs, enforce_file_format=True)
    with_hole = rtstruct_roi(rs, "GTV", files)
    assert (with_hole.row, with_hole.col, with_hole.size_px, with_hole.area_px) == (*BBOX_3, 120 - 9)
    point = rtstruct_roi(rs, "Dot", files)
    assert (point.index, point.row, point.col, point.size_px, point.area_px) == (1, 15.0, 18.0, 1.0, 1)


def test_on_bad_file_error_stops_ingest_with_the_reason(case):
    from oncorobust.data.ingest import run_ingest

    root, files, dss = case
    _write_rtstruct(root / "other_for.dcm", dss, frame_of_reference=generate_uid())
    (root / "m.csv").write_text("patient_id,sample_id,path,label,rtstruct_path,roi_name\n"
                                "p1,s1,ct,benign,rs.dcm,GTV\np2,s2,ct,malignant,other_for.dcm,GTV\n")
    with pytest.raises(DataError, match=r"other_for\.dcm: the RTSTRUCT's structure 'GTV' lies in another"
                                        r" Frame of Reference.*on_bad_file: skip"):
        run_ingest({"format": "manifest", "manifest": str(root / "m.csv")}, {}, 0, on_bad_file="error")


def test_seg_without_spatial_locations_preserved_is_checked_by_position(case):
    """Exports that omit SpatialLocationsPreserved (highdicom then refuses to index by source
    image) are accepted when each frame's position is its source slice's; NO is refused."""
    root, files, _ = case

    def edited(name, value=None, shift=0.0):
        ds = pydicom.dcmread(root / "seg.dcm")
        for item in ds.PerFrameFunctionalGroupsSequence:
            src = item.DerivationImageSequence[0].SourceImageSequence[0]
            if value is None:
                del src.SpatialLocationsPreserved
            else:
                src.SpatialLocationsPreserved = value
            ipp = item.PlanePositionSequence[0].ImagePositionPatient
            item.PlanePositionSequence[0].ImagePositionPatient = [ipp[0] + shift, ipp[1], ipp[2]]
        ds.save_as(root / name)
        return root / name

    ok = seg_roi(edited("absent.dcm"), "GTV", files)
    assert (ok.index, ok.row, ok.col, ok.size_px) == (3, *BBOX_3)
    with pytest.raises(RoiReferenceError, match=r"positions \(ImagePositionPatient\) do not match"):
        seg_roi(edited("shifted.dcm", shift=1.5), "GTV", files)
    with pytest.raises(RoiReferenceError, match=r"SpatialLocationsPreserved NO"):
        seg_roi(edited("resampled.dcm", value="NO"), "GTV", files)


def test_fractional_seg_counts_pixels_from_one_half(case, tmp_path):
    root, files, dss = case
    vol = _lesion_volume().astype(np.float32) * 0.8
    vol[3, 5:45, 5:45] = np.maximum(vol[3, 5:45, 5:45], 0.3)  # a faint halo below 0.5
    seg = hd.seg.Segmentation(
        source_images=dss, pixel_array=vol, segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=[hd.seg.SegmentDescription(
            segment_number=1, segment_label="GTV",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name="test", version="0", family=codes.cid7162.ArtificialIntelligence))],
        series_instance_uid=generate_uid(), series_number=2, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer="test", manufacturer_model_name="test", software_versions="0", device_serial_number="0")
    seg.save_as(tmp_path / "frac.dcm")
    roi = seg_roi(tmp_path / "frac.dcm", 1, files)
    assert (roi.index, roi.row, roi.col, roi.size_px, roi.area_px) == (3, *BBOX_3, 120)
