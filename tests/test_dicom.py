import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless,
                         generate_uid)

from oncorobust.data.dicom import read_dicom, write_dicom
from oncorobust.errors import DicomError, OncorobustError

COMMON = dict(modality="CT", patient_id="P1", study_uid="1.2.3", series_uid="1.2.3.4")


@pytest.fixture
def pixels(rng):
    return rng.integers(0, 4096, (40, 48)).astype(np.uint16)


@pytest.mark.parametrize("ts", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_syntaxes_decode_to_identical_arrays(tmp_path, pixels, ts):
    raw = read_dicom(write_dicom(tmp_path / "raw.dcm", pixels, **COMMON))
    packed_path = write_dicom(tmp_path / "packed.dcm", pixels, transfer_syntax=ts, **COMMON)
    assert pydicom.dcmread(packed_path).file_meta.TransferSyntaxUID == ts
    packed = read_dicom(packed_path)
    assert packed.dtype == np.float32 and packed.shape == (40, 48)
    np.testing.assert_array_equal(raw, packed)
    np.testing.assert_array_equal(raw, pixels.astype(np.float32))


def test_modality_lut_gives_hounsfield_units(tmp_path, pixels):
    hu = read_dicom(write_dicom(tmp_path / "ct.dcm", pixels, slope=2.0, intercept=-1024, **COMMON))
    np.testing.assert_allclose(hu, pixels * 2.0 - 1024)


def test_monochrome1_is_inverted_so_brighter_is_larger(tmp_path, pixels):
    m2 = read_dicom(write_dicom(tmp_path / "m2.dcm", pixels, **COMMON))
    m1 = read_dicom(write_dicom(tmp_path / "m1.dcm", (65535 - pixels).astype(np.uint16),
                                photometric="MONOCHROME1", **COMMON))
    np.testing.assert_array_equal(m1, m2)  # same displayed image, same array


def test_signed_pixels_with_intercept(tmp_path, rng):
    stored = rng.integers(-2000, 2000, (8, 8)).astype(np.int16)
    out = read_dicom(write_dicom(tmp_path / "s.dcm", stored, intercept=10, **COMMON))
    np.testing.assert_array_equal(out, stored.astype(np.float32) + 10)


def test_multiframe_returns_frames_first(tmp_path, rng):
    frames = rng.integers(0, 1000, (3, 6, 5)).astype(np.uint16)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames = 6, 5, 3
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = frames.tobytes()
    ds.save_as(tmp_path / "mf.dcm", enforce_file_format=True)
    out = read_dicom(tmp_path / "mf.dcm")
    assert out.shape == (3, 6, 5)
    np.testing.assert_array_equal(out, frames)


def test_not_dicom(tmp_path):
    (tmp_path / "x.dcm").write_text("hello")
    with pytest.raises(DicomError, match=r"x\.dcm: not a DICOM file"):
        read_dicom(tmp_path / "x.dcm")


def test_truncated_pixel_data(tmp_path, pixels):
    path = write_dicom(tmp_path / "t.dcm", pixels, **COMMON)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(DicomError, match=r"t\.dcm: .*(truncated|corrupt)"):
        read_dicom(path)


def test_header_only_truncation(tmp_path, pixels):
    path = write_dicom(tmp_path / "h.dcm", pixels, **COMMON)
    path.write_bytes(path.read_bytes()[:150])
    with pytest.raises(OncorobustError, match=r"h\.dcm"):
        read_dicom(path)


def test_no_pixel_data(tmp_path, pixels):
    path = write_dicom(tmp_path / "n.dcm", pixels, **COMMON)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(DicomError, match="has no PixelData"):
        read_dicom(path)


def test_transfer_syntax_without_decoder(tmp_path, pixels):
    path = write_dicom(tmp_path / "mpeg.dcm", pixels, **COMMON)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: pydicom has no decoder
    ds.PixelData = pydicom.encaps.encapsulate([pixels.tobytes()])
    ds.save_as(path)
    with pytest.raises(DicomError, match=r"mpeg\.dcm: transfer syntax 1\.2\.840\.10008\.1\.2\.4\.100"):
        read_dicom(path)


def test_missing_plugin_names_the_package(tmp_path, pixels, monkeypatch):
    path = write_dicom(tmp_path / "j2k.dcm", pixels, transfer_syntax=JPEG2000Lossless, **COMMON)

    class Unavailable:
        is_available = False

    monkeypatch.setattr("oncorobust.data.dicom.get_decoder", lambda ts: Unavailable())
    with pytest.raises(DicomError, match="pip install pylibjpeg-openjpeg"):
        read_dicom(path)


def test_missing_file(tmp_path):
    with pytest.raises(DicomError, match="no such file"):
        read_dicom(tmp_path / "absent.dcm")
