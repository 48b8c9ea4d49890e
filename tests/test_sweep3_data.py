"""Issue 29, data inputs: every file under a data folder is read or listed in skipped.csv with its
reason; huge images are refused from their header; a class whose every image is unreadable is a
clear error; enhanced multi-frame CT is rescaled from its functional groups; RGB DICOM is read
with ``preprocess.color: rgb``; manifest column clashes, missing-value IDs, decimal commas and
Excel CSVs. Written from the user's side: a folder / manifest / DICOM in tmp_path, then the
functions the workflow's ingest and preprocess scripts call."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image, features
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from oncorobust.data.dicom import MAX_PIXELS, decode_dicom, read_dicom, write_dicom
from oncorobust.data.ingest import run_ingest
from oncorobust.data.preprocess import UnusableSplitError, run_preprocess
from oncorobust.data.sources import folder as folder_src
from oncorobust.data.sources import manifest as manifest_src
from oncorobust.data.sources.common import IngestResult, scan_headers
from oncorobust.data.sources.images import ImageError, classify_file, decode_image, image_kind
from oncorobust.errors import DataError, DicomError, OncorobustError

SPLIT = {"test_fraction": 0.5, "val_fraction": 0.5}
MR = dict(modality="MR", patient_id="P1", study_uid="1.2.3", series_uid="1.2.3.4")


def _png(path: Path, seed: int, size=(16, 16), mode="L") -> Path:
    """A small PNG with its own content (identical pixels under two patients are refused)."""
    rng = np.random.default_rng(seed)
    shape = size + ((3,) if mode == "RGB" else ())
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(path, format="PNG")
    return path


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header says width × height (8-bit grey) with two rows of data: Pillow opens it
    (and, before issue 29, stopped with DecompressionBombError, no file named)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1) * 2)) + chunk(b"IEND", b""))
    return path


def _truncated_png(path: Path, seed: int) -> Path:
    """A PNG whose header is fine (ingest accepts it) but whose pixel data is cut off."""
    _png(path, seed, size=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def _mr(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    return write_dicom(path, rng.integers(0, 1000, (16, 16)).astype(np.uint16), **MR)


def _frame(rows: list[dict]) -> pd.DataFrame:
    base = {"frame": -1, "roi_row": np.nan, "roi_col": np.nan, "roi_size_px": np.nan}
    return pd.DataFrame([{**base, **r} for r in rows])


# ------------------------------------------------- 1. every file read or listed in skipped.csv


def _mixed_folder(root: Path) -> None:
    for k, cls in enumerate(("benign", "malignant")):
        for i in range(4):
            _png(root / cls / f"case{i}.png", 10 * k + i)
    # read: WebP, and DICOM files named as PACS exports write them (no .dcm)
    Image.fromarray(np.full((16, 16, 3), (200, 30, 60), np.uint8)).save(root / "benign" / "w1.webp", lossless=True)
    _mr(root / "malignant" / "IM0001", 100)
    _mr(root / "malignant" / "series" / "1.2.840.113619.2.55.3.320", 101)
    _mr(root / "malignant" / "series" / "1.2.840.113619.2.55.3.321", 102)
    # listed, not read
    (root / "benign" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    (root / "benign" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(100))
    (root / "malignant" / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (root / "malignant" / "notes.txt").write_text("case 3 is a re-scan\n")
    (root / "README").write_text("data export of 2024\n")
    (root / "malignant" / "scan.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))


def test_folder_reads_webp_and_pacs_dicom_and_lists_every_other_file(tmp_path):
    assert features.check("webp")
    root = tmp_path / "data"
    _mixed_folder(root)
    manifest, skipped = run_ingest({"format": "folder", "root": str(root)}, SPLIT, seed=0)
    ids = set(manifest.sample_id)
    assert {"benign/w1", "malignant/IM0001", "malignant/series/1.2.840.113619.2.55.3.320",
            "malignant/series/1.2.840.113619.2.55.3.321"} <= ids  # PACS names kept whole: no clash
    assert len(manifest) == 12
    reasons = {Path(f).name: r for f, r in zip(skipped.file, skipped.reason)}
    assert "hidden/system file (.DS_Store)" in reasons[".DS_Store"]
    assert "hidden/system file (Thumbs.db)" in reasons["Thumbs.db"]
    assert "hidden/system file (desktop.ini)" in reasons["desktop.ini"]
    assert "not an image (a .txt file)" in reasons["notes.txt"]
    assert "outside the class folders" in reasons["README"] and "not an image" in reasons["README"]
    assert "unknown format" in reasons["scan.heic"]
    # nothing under the folder is left out: read, or listed
    every = {p for p in root.rglob("*") if p.is_file()}
    read = {root / s for s in manifest.source}
    assert every == read | {Path(f) for f in skipped.file}


def test_hidden_files_do_not_stop_on_bad_file_error_but_an_unknown_format_does(tmp_path):
    root = tmp_path / "data"
    _mixed_folder(root)
    (root / "malignant" / "scan.heic").unlink()
    manifest, skipped = run_ingest({"format": "folder", "root": str(root)}, SPLIT, seed=0, on_bad_file="error")
    assert len(manifest) == 12 and len(skipped) == 5  # listed in skipped.csv, never a reason to stop
    (root / "malignant" / "IM0002").write_bytes(bytes(128) + b"NOPE" + bytes(64))  # a broken PACS file
    with pytest.raises(DataError, match=r"IM0002: unknown format: neither DICOM \(no 'DICM' marker at byte 128\)"):
        run_ingest({"format": "folder", "root": str(root)}, SPLIT, seed=0, on_bad_file="error")


def test_content_decides_the_reader_not_the_name(tmp_path):
    dcm = _mr(tmp_path / "1.3.6.1.4.1.9328.50.1.12", 1)
    png = _png(tmp_path / "picture", 2)  # a PNG without a suffix
    assert image_kind(dcm) == "dicom" and image_kind(png) == "pillow"
    assert classify_file(dcm) == ("dicom", "") and classify_file(png) == ("pillow", "")
    assert decode_image(png).pixels.shape == (16, 16)
    (tmp_path / "blob.bin").write_bytes(b"\x89\xff\x00\x10" * 50)
    kind, reason = classify_file(tmp_path / "blob.bin")
    assert kind == "unknown" and reason.startswith("unknown format: neither DICOM (no 'DICM' marker at byte 128)")
    with pytest.raises(ImageError, match=r"blob\.bin: unknown format"):
        decode_image(tmp_path / "blob.bin")


def test_series_folder_with_pacs_names_counts_every_slice(tmp_path):
    series = tmp_path / "p1" / "T1"
    for k, name in enumerate(["IM0001", "IM0002", "1.2.840.99.7"]):
        write_dicom(series / name, np.full((16, 16), 10 * (k + 1), np.uint16), z_mm=float(k), instance_number=k + 1,
                    **MR)
    (series / ".DS_Store").write_bytes(bytes(16))
    (series / "info.txt").write_text("exported by PACS\n")
    (tmp_path / "m.csv").write_text("patient_id,sample_id,path,label,roi_row,roi_col,roi_slice\n"
                                    "p1,s1,p1/T1,benign,8,8,2\n")
    res = IngestResult()
    manifest_src.ingest({"manifest": str(tmp_path / "m.csv")}, res)
    # before: '1.2.840.99.7' (suffix '.7') was not a slice, so roi_slice 2 was outside the series
    assert res.records[0]["source"] == "p1/T1/1.2.840.99.7" and res.skipped == []
    listed = {Path(s["file"]).name: s["reason"] for s in res.ignored}
    assert set(listed) == {".DS_Store", "info.txt"} and "hidden/system file" in listed[".DS_Store"]


def test_dicom_walkers_read_pacs_names_and_list_the_rest(tmp_path):
    for k, name in enumerate(["IM0001", "1.2.840.5.10", "a.dcm"]):
        _mr(tmp_path / "s" / name, k)
    (tmp_path / "s" / "069.xml").write_text("<LidcReadMessage/>")  # the adapter's own annotations
    (tmp_path / "LICENSE").write_text("CC BY 3.0\n")
    (tmp_path / "s" / ".DS_Store").write_bytes(bytes(8))
    (tmp_path / "s" / "IM0002").write_bytes(bytes(200))  # no DICM marker
    res = IngestResult()
    found = scan_headers(tmp_path, res, {".xml"}, "DICOM CT series")
    assert sorted(p.name for p, _ in found) == ["1.2.840.5.10", "IM0001", "a.dcm"]
    assert [Path(s["file"]).name for s in res.skipped] == ["IM0002"]
    assert sorted(Path(s["file"]).name for s in res.ignored) == [".DS_Store", "LICENSE"]


# ------------------------------------------------------------------------- 2. huge images


def test_huge_png_is_a_listed_skip_with_its_size_not_a_decompression_bomb(tmp_path):
    root = tmp_path / "data"
    for k, cls in enumerate(("benign", "malignant")):
        for i in range(4):
            _png(root / cls / f"c{i}.png", 10 * k + i)
    big = _png_header(root / "malignant" / "huge.png", 20000, 20000)
    manifest, skipped = run_ingest({"format": "folder", "root": str(root)}, SPLIT, seed=0)
    assert "malignant/huge" not in set(manifest.sample_id)
    (reason,) = skipped.reason[skipped.file == str(big)]
    assert reason.startswith("image too large (20000×20000 px") and f"limit {MAX_PIXELS:,}" in reason
    with pytest.raises(DataError, match=r"huge\.png: image too large \(20000×20000 px"):
        run_ingest({"format": "folder", "root": str(root)}, SPLIT, seed=0, on_bad_file="error")
    # the reader preprocess uses refuses it too, naming the file, before decoding
    with pytest.raises(ImageError, match=r"huge\.png: image too large \(20000×20000 px"):
        decode_image(big)
    rows = [{"sample_id": f"s{i}", "patient_id": f"p{i}", "label": i % 2, "label_name": ("benign", "malignant")[i % 2],
             "split": ("train", "train", "val", "val", "test", "test")[i],
             "source": f"{('benign', 'malignant')[i % 2]}/c{i // 2}.png"} for i in range(6)]
    rows.append({"sample_id": "big", "patient_id": "pb", "label": 1, "label_name": "malignant", "split": "train",
                 "source": "malignant/huge.png"})
    prep = {"size": 8, "balance": "none", "intensity": {"mode": "window", "window": [0, 255]}}
    _, _, pskipped = run_preprocess(_frame(rows), {"format": "folder", "root": str(root)}, prep, 0)
    assert list(pskipped.sample_id) == ["big"] and "image too large (20000×20000 px" in pskipped.reason[0]


def test_huge_rle_dicom_is_refused_from_its_header_before_decoding(tmp_path):
    from pydicom.encaps import encapsulate

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.Modality, ds.PatientID = "CT", "P1"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 4096, 4096, 400
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = encapsulate([bytes(64)] * 400)
    ds["PixelData"].VR = "OB"
    path = tmp_path / "IM0001"
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 200_000  # decodes to 12.5 GiB
    with pytest.raises(DicomError, match=r"IM0001: image too large \(4096×4096 px × 400 frames: 6,710,886,400"
                                         r" values in the file, 12\.5 GiB decoded; limit 536,870,912"):
        read_dicom(path)


# -------------------------------------------- 3. a class whose every image is unreadable


def test_class_with_every_image_unreadable_is_a_clear_error_with_the_skip_list(tmp_path):
    root = tmp_path / "data"
    for i in range(4):
        _png(root / "benign" / f"b{i}.png", i)
        _truncated_png(root / "malignant" / f"m{i}.png", 50 + i)
    manifest, _ = run_ingest({"format": "folder", "root": str(root)}, SPLIT, seed=0)  # headers are fine
    prep = {"size": 8, "intensity": {"mode": "window", "window": [0, 255]}}  # default balancing
    with pytest.raises(UnusableSplitError) as info:
        run_preprocess(manifest, {"format": "folder", "root": str(root)}, prep, 0)
    msg = str(info.value)
    assert "split has no image of class 'malignant'" in msg and f"(folder {root / 'malignant'})" in msg
    assert "tensors/skipped.csv" in msg and "truncated" in msg and "min()" not in msg
    skipped = info.value.skipped  # the workflow can write tensors/skipped.csv before stopping
    assert len(skipped) == 4 and set(skipped.stage) == {"preprocess"}
    assert all(Path(f).parent.name == "malignant" for f in skipped.file)


def test_every_image_unreadable_is_not_min_of_an_empty_sequence(tmp_path):
    rows = []
    for i in range(6):
        _truncated_png(tmp_path / f"x{i}.png", i)
        rows.append({"sample_id": f"s{i}", "patient_id": f"p{i}", "label": i % 2, "label_name": "ab"[i % 2],
                     "split": ("train", "train", "val", "val", "test", "test")[i], "source": f"x{i}.png"})
    with pytest.raises(UnusableSplitError, match=r"train split has no image of class 'a' \(folder .*\): all 1"
                                                 r" image\(s\).*; class 'b'") as info:
        run_preprocess(_frame(rows), {"format": "manifest", "root": str(tmp_path)}, {"size": 8}, 0)
    assert len(info.value.skipped) == 6


def test_empty_class_folder_at_ingest_names_why_its_files_were_not_used(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        _png(root / "benign" / f"b{i}.png", i)
    (root / "malignant").mkdir()
    (root / "malignant" / "a.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    (root / "malignant" / ".DS_Store").write_bytes(bytes(8))
    with pytest.raises(DataError, match=r"data/malignant: the folder of class 'malignant' holds no usable image.*"
                                        r"the 2 file\(s\) below it were not used, e.g\. a\.heic: unknown format") as info:
        run_ingest({"format": "folder", "root": str(root)}, SPLIT, seed=0)
    assert sorted(Path(f).name for f in info.value.skipped.file) == [".DS_Store", "a.heic"]


# ----------------------------------------------------------- 4. enhanced multi-frame CT


def _enhanced_ct(path: Path, stored: np.ndarray, rescale: list[tuple[float, float]], shared: bool) -> Path:
    """An Enhanced CT Image Storage file: the rescale only in the functional groups."""
    def groups(slope, intercept):
        item, pvt = Dataset(), Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = slope, intercept, "HU"
        item.PixelValueTransformationSequence = Sequence([pvt])
        return item

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.Modality, ds.PatientID = "CT", "P1"
    ds.NumberOfFrames, ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if shared:
        ds.SharedFunctionalGroupsSequence = Sequence([groups(*rescale[0])])
        ds.PerFrameFunctionalGroupsSequence = Sequence([Dataset() for _ in range(len(stored))])
    else:
        ds.SharedFunctionalGroupsSequence = Sequence([Dataset()])
        ds.PerFrameFunctionalGroupsSequence = Sequence([groups(s, b) for s, b in rescale])
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_enhanced_ct_rescale_from_the_shared_functional_groups_gives_hu(tmp_path):
    stored = np.stack([np.full((10, 12), v, np.uint16) for v in (0, 1024, 1064)])  # air, water, +40 HU
    path = _enhanced_ct(tmp_path / "ect.dcm", stored, [(1.0, -1024.0)], shared=True)
    assert "RescaleIntercept" not in pydicom.dcmread(path)  # only in the functional groups
    hu = read_dicom(path)
    assert hu.shape == (3, 10, 12) and hu[:, 0, 0].tolist() == [-1024.0, 0.0, 40.0]


def test_enhanced_ct_rescale_per_frame_through_the_manifest(tmp_path):
    stored = np.stack([np.full((16, 16), 1024, np.uint16), np.full((16, 16), 600, np.uint16)])
    _enhanced_ct(tmp_path / "ect.dcm", stored, [(1.0, -1024.0), (2.0, -1000.0)], shared=False)
    assert read_dicom(tmp_path / "ect.dcm")[:, 0, 0].tolist() == [0.0, 200.0]
    import highdicom  # a core dependency: its frame transform reads the functional groups too

    hd_image = highdicom.Image.from_dataset(pydicom.dcmread(tmp_path / "ect.dcm"))
    assert [float(hd_image.get_frame(k, apply_voi_transform=False)[0, 0]) for k in (1, 2)] == [0.0, 200.0]
    (tmp_path / "m.csv").write_text("patient_id,sample_id,path,label,roi_row,roi_col,roi_slice\n"
                                    "p1,s1,ect.dcm,benign,8,8,1\n")
    res = IngestResult()
    manifest_src.ingest({"manifest": str(tmp_path / "m.csv")}, res)
    assert res.records[0]["frame"] == 1
    from oncorobust.data.preprocess import select_frame

    assert select_frame(decode_image(tmp_path / "ect.dcm").pixels, 1)[0, 0] == 200.0  # HU, not 600


def test_enhanced_ct_with_a_zero_slope_in_a_frame_is_refused(tmp_path):
    stored = np.zeros((2, 8, 8), np.uint16)
    path = _enhanced_ct(tmp_path / "z.dcm", stored, [(1.0, -1024.0), (0.0, -1024.0)], shared=False)
    with pytest.raises(DicomError, match=r"z\.dcm: frame 1: RescaleSlope is 0"):
        read_dicom(path)


# -------------------------------------------------------------------------- 5. RGB DICOM


def _rgb_dicom(path: Path, colour: tuple[int, int, int], photometric: str = "RGB") -> Path:
    from pydicom.pixels import convert_color_space

    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[...] = colour
    rgb[4:8, 4:8] = (255 - colour[0], 0, 0)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.4"  # VL Photographic Image Storage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.Modality, ds.PatientID = "XC", "P1"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PlanarConfiguration = 16, 16, 3, 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    data = rgb if photometric == "RGB" else convert_color_space(rgb, "RGB", photometric)
    ds.PixelData = np.ascontiguousarray(data).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_rgb_dicom_is_read_in_colour_with_color_rgb(tmp_path, photometric):
    rows = []
    for i in range(6):
        _rgb_dicom(tmp_path / f"IM{i:04d}", (40 * i, 100, 200), photometric)
        rows.append({"sample_id": f"s{i}", "patient_id": f"p{i}", "label": i % 2, "label_name": "ab"[i % 2],
                     "split": ("train", "train", "val", "val", "test", "test")[i], "source": f"IM{i:04d}"})
    src = {"format": "manifest", "root": str(tmp_path)}
    prep = {"size": 16, "balance": "none", "color": "rgb", "intensity": {"mode": "bitdepth"}}
    tensors, stats, skipped = run_preprocess(_frame(rows), src, prep, 0)
    assert skipped.empty and stats["channels"] == 3
    x = dict(zip(tensors["test"]["ids"], tensors["test"]["x"]))["s5"]
    tol = 0 if photometric == "RGB" else 2 / 255  # YBR -> RGB rounds
    assert np.allclose(x[:, 0, 0].numpy(), [200 / 255, 100 / 255, 200 / 255], atol=tol + 1e-6)
    # without color: rgb, a clear error naming the setting (on_bad_file: error; else a listed skip)
    with pytest.raises(DicomError, match=r"IM0000: a colour DICOM \(3 sample\(s\) per pixel, PhotometricInterpretation"
                                         rf" {photometric}\); set preprocess.color: rgb"):
        run_preprocess(_frame(rows), src, {**prep, "color": "luminance", "intensity": {"mode": "percentile"}}, 0,
                       on_bad_file="error")
    pixels, bits, colour = decode_dicom(tmp_path / "IM0000", colour=True)
    assert pixels.shape == (16, 16, 3) and bits == 8 and colour


def test_rgb_dicom_with_luminance_is_a_listed_skip(tmp_path):
    _rgb_dicom(tmp_path / "c.dcm", (10, 20, 30))
    for i in range(6):
        _mr(tmp_path / f"g{i}.dcm", i)
    rows = [{"sample_id": f"s{i}", "patient_id": f"p{i}", "label": i % 2, "label_name": "ab"[i % 2],
             "split": ("train", "train", "val", "val", "test", "test")[i], "source": f"g{i}.dcm"} for i in range(6)]
    rows.append({"sample_id": "c", "patient_id": "pc", "label": 0, "label_name": "a", "split": "train",
                 "source": "c.dcm"})
    _, _, skipped = run_preprocess(_frame(rows), {"format": "manifest", "root": str(tmp_path)},
                                   {"size": 8, "balance": "none"}, 0)
    assert list(skipped.sample_id) == ["c"] and "set preprocess.color: rgb" in skipped.reason[0]


# ------------------------------------------------------------------------- 6. manifest CSVs


def _write(tmp_path: Path, text: str, encoding: str = "utf-8") -> dict:
    (tmp_path / "m.csv").write_text(text, encoding=encoding)
    return {"manifest": str(tmp_path / "m.csv")}


def test_label_and_Label_columns_are_refused_naming_both(tmp_path):
    _mr(tmp_path / "a.dcm", 0)
    src = _write(tmp_path, "patient_id,sample_id,path,label,Label,roi_row,roi_col\np1,s1,a.dcm,benign,malignant,5,5\n")
    with pytest.raises(DataError, match=r"m\.csv: the columns 'label' and 'Label' are the same column once case and"
                                        r" spaces are ignored"):
        manifest_src.ingest(src, IngestResult())
    src = _write(tmp_path, "patient_id,sample_id,path,label,label ,roi_row,roi_col\np1,s1,a.dcm,benign,benign,5,5\n")
    with pytest.raises(DataError, match=r"'label' and 'label '"):
        manifest_src.ingest(src, IngestResult())


@pytest.mark.parametrize("pid", ["NaN", "None", "nan", "#N/A", "null"])
def test_missing_value_patient_ids_are_refused(tmp_path, pid):
    _mr(tmp_path / "a.dcm", 0)
    src = _write(tmp_path, f"patient_id,sample_id,path,label,roi_row,roi_col\np1,s1,a.dcm,benign,5,5\n"
                           f"{pid},s2,a.dcm,benign,5,5\n")
    with pytest.raises(DataError, match=rf"m\.csv:3: patient_id '{pid}' is a missing-value marker, not an ID"):
        manifest_src.ingest(src, IngestResult())


def test_case_differing_patient_ids_stay_two_patients_and_empty_ids_are_refused(tmp_path):
    _mr(tmp_path / "a.dcm", 0)
    _mr(tmp_path / "b.dcm", 1)
    res = IngestResult()
    manifest_src.ingest(_write(tmp_path, "patient_id,sample_id,path,label,roi_row,roi_col\n"
                                         "P000,s1,a.dcm,benign,5,5\np000,s2,b.dcm,benign,5,5\n"), res)
    assert [r["patient_id"] for r in res.records] == ["P000", "p000"]
    with pytest.raises(DataError, match=r"m\.csv:2: empty sample_id or patient_id \(patient_id\)"):
        manifest_src.ingest(_write(tmp_path, "patient_id,sample_id,path,label,roi_row,roi_col\n"
                                             " ,s1,a.dcm,benign,5,5\n"), IngestResult())


@pytest.mark.parametrize("column, value", [("roi_row", "12,5"), ("roi_size_px", "7,25"), ("roi_col", ",5")])
def test_decimal_comma_in_roi_numbers_is_named(tmp_path, column, value):
    _mr(tmp_path / "a.dcm", 0)
    cells = {"roi_row": "5", "roi_col": "5", "roi_size_px": "4"}
    cells[column] = f'"{value}"'
    src = _write(tmp_path, "patient_id,sample_id,path,label,roi_row,roi_col,roi_size_px\n"
                           f"p1,s1,a.dcm,benign,{cells['roi_row']},{cells['roi_col']},{cells['roi_size_px']}\n")
    with pytest.raises(DataError, match=rf"m\.csv:2: {column} '{value}' has a decimal comma; write a decimal point"
                                        rf" \({value.replace(',', '.')}\)"):
        manifest_src.ingest(src, IngestResult())


def test_thousands_separator_is_not_taken_for_a_decimal_comma(tmp_path):
    _mr(tmp_path / "a.dcm", 0)
    src = _write(tmp_path, 'patient_id,sample_id,path,label,roi_row,roi_col\np1,s1,a.dcm,benign,"1,234",5\n')
    with pytest.raises(DataError, match=r"roi_row '1,234' has a comma: a thousands separator \(write 1234\) or a"
                                        r" decimal comma \(write 1\.234\)\?"):
        manifest_src.ingest(src, IngestResult())


def test_roi_word_is_not_read_as_an_empty_roi(tmp_path):
    _mr(tmp_path / "a.dcm", 0)
    src = _write(tmp_path, "patient_id,sample_id,path,label,roi_row,roi_col\np1,s1,a.dcm,benign,centre,5\n")
    with pytest.raises(DataError, match=r"m\.csv:2: roi_row 'centre' is not a number"):
        manifest_src.ingest(src, IngestResult())


def test_excel_manifest_bom_semicolons_trailing_columns_and_blank_rows(tmp_path):
    _mr(tmp_path / "a.dcm", 0)
    _mr(tmp_path / "b.dcm", 1)
    text = ("\ufeffPatient_ID;Sample_ID;Path;Label;ROI_Row;ROI_Col;;\r\n"
            "p1;s1;a.dcm;benign;5;6;;\r\n"
            ";;;;;;;\r\n"
            "p2;s2;b.dcm;Malignant;7;8;;\r\n"
            ";;;;;;;\r\n")
    res = IngestResult()
    manifest_src.ingest(_write(tmp_path, text), res)
    got = [(r["patient_id"], r["sample_id"], r["source"], r["label"], r["roi_row"], r["roi_col"]) for r in res.records]
    assert got == [("p1", "s1", "a.dcm", 0, 5.0, 6.0), ("p2", "s2", "b.dcm", 1, 7.0, 8.0)]
    assert res.skipped == []
    # a trailing column that holds values but has no name is refused, not dropped
    bad = "patient_id,sample_id,path,label,roi_row,roi_col,\np1,s1,a.dcm,benign,5,6,oops\n"
    with pytest.raises(DataError, match=r"m\.csv: column 7 has no name in the header but holds values"):
        manifest_src.ingest(_write(tmp_path, bad), IngestResult())


def test_errors_are_oncorobust_errors():
    assert issubclass(UnusableSplitError, OncorobustError) and issubclass(ImageError, OncorobustError)
