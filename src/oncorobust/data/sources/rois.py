"""Lesion ROIs from RT structure sets (RTSTRUCT) and DICOM segmentations (DICOM-SEG).

A manifest row may give its lesion as

- ``rtstruct_path`` + ``roi_name``: an RTSTRUCT file and the structure's ROIName (from its
  StructureSetROISequence), or
- ``seg_path`` + ``segment``: a DICOM-SEG file and the segment's number (SegmentNumber) or label
  (SegmentLabel),

instead of a point (``roi_row``/``roi_col``) or a mask image (``mask_path``). The ROI is then the
structure's cross-section on one slice of the image series (``path``, a series folder of
single-frame slices, or one such file): by default the slice where the cross-section is largest
(most pixels; on a tie the first slice in the series order), or the slice ``roi_slice`` names. Its
centre and size are those of the bounding box of the cross-section (:func:`.common.bbox_centre`),
exactly as for a ``mask_path`` mask, so an RTSTRUCT, a SEG and the equivalent mask give the same
record and hence the same crop.

Readers: DICOM-SEG files are read with highdicom (``highdicom.seg.segread``; the segment's frames
are found through their source-image references with
``Segmentation.get_pixels_by_source_instance``). RTSTRUCT files are read with pydicom (an RT
structure set holds no pixels, only contour points in patient coordinates); patient coordinates
(mm) are mapped to pixel indices with highdicom's ``ReferenceToPixelTransformer`` and closed
contours are filled with ``skimage.draw.polygon`` (a pixel is inside when its centre lies inside
or on the contour; several contours on one slice combine by exclusive or, so an inner contour is a
hole, the usual RT convention).

Matching to the series: the structure set's / segmentation's Frame of Reference UID must equal
the series' (when both carry one), and the SOP Instance UIDs the contours or segment frames
reference must be slices of the series. A contour without ContourImageSequence is placed by its
position along the slice normal (within half the slice spacing). Every mismatch is a
:class:`RoiReferenceError` (a :class:`~oncorobust.errors.DicomError`: the manifest lists the row in
``skipped.csv``, or stops with ``on_bad_file: error``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from oncorobust.data.dicom import read_header
from oncorobust.errors import DataError, DicomError
from oncorobust.data.sources.common import bbox_centre

log = logging.getLogger("oncorobust.data.sources.rois")

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: Manifest columns of the two structure ROI forms: (file column, name column).
RTSTRUCT_COLUMNS = ("rtstruct_path", "roi_name")
SEG_COLUMNS = ("seg_path", "segment")


class RoiReferenceError(DicomError):
    """An RTSTRUCT or DICOM-SEG cannot give the ROI on its image series: it is not such a file,
    refers to another series (Frame of Reference / SOP Instance UIDs), lacks the named structure
    or segment, or the structure lies on no slice of the series. The message names the file, what
    differs and what to do."""


@dataclass(frozen=True)
class StructureRoi:
    """A lesion ROI on one slice of a series.

    Attributes:
        index: 0-based index of the chosen slice in the order of the ``slices`` given.
        file: that slice's DICOM file.
        row, col: centre of the cross-section's bounding box, pixels (origin: centre of the
            top-left pixel; row down, column right).
        size_px: the bounding box's larger side, pixels.
        area_px: pixels inside the cross-section on the chosen slice.
    """

    index: int
    file: Path
    row: float
    col: float
    size_px: float
    area_px: int


@dataclass(frozen=True)
class _Slice:
    file: Path
    sop: str
    frame_of_reference: str
    shape: tuple[int, int]
    position: np.ndarray | None      # ImagePositionPatient (x, y, z), mm
    orientation: np.ndarray | None   # ImageOrientationPatient (row cosines, column cosines)
    spacing: tuple[float, float] | None  # PixelSpacing (between rows, between columns), mm
    thickness: float


def _series(slices: Sequence[Path]) -> list[_Slice]:
    """Headers of the series' slices (DicomError for an unreadable one; DataError for a
    multi-frame file, whose frames the SOP references cannot tell apart)."""
    out = []
    for f in slices:
        hdr = read_header(f)
        if int(hdr.get("NumberOfFrames", 1) or 1) > 1:
            raise DataError(f"{f}: a multi-frame file; an RTSTRUCT or SEG ROI needs path to be a series"
                            " folder of single-frame slices (or one single-frame file)")
        ipp, iop, ps = (hdr.get(k) for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"))
        out.append(_Slice(
            file=Path(f), sop=str(hdr.get("SOPInstanceUID", "")).strip(),
            frame_of_reference=str(hdr.get("FrameOfReferenceUID", "")).strip(),
            shape=(int(hdr.get("Rows", 0) or 0), int(hdr.get("Columns", 0) or 0)),
            position=np.asarray(ipp, float) if ipp is not None and len(ipp) == 3 else None,
            orientation=np.asarray(iop, float) if iop is not None and len(iop) == 6 else None,
            spacing=(float(ps[0]), float(ps[1])) if ps is not None and len(ps) == 2 else None,
            thickness=float(hdr.get("SliceThickness", 0) or 0)))
    return out


def _check_frame_of_reference(file: Path, kind: str, theirs: str, series: list[_Slice]) -> None:
    """RoiReferenceError when ``theirs`` and the series' Frame of Reference UID differ (a check
    made only when both are given)."""
    ours = {s.frame_of_reference for s in series if s.frame_of_reference}
    if theirs and ours and theirs not in ours:
        raise RoiReferenceError(
            f"{file}: the {kind} lies in another Frame of Reference than the image series"
            f" {series[0].file.parent} (their FrameOfReferenceUIDs differ): it was drawn on another scan"
            " (or a registered copy). Point path at the series it was drawn on")


def _choose(masks: dict[int, np.ndarray], series: list[_Slice], slice_index: int | None,
            file: Path, what: str) -> StructureRoi:
    """The ROI on the largest cross-section (or on ``slice_index``) of per-slice masks
    (slice index -> (rows, cols) bool array)."""
    areas = {i: int(m.sum()) for i, m in masks.items() if m.any()}
    if not areas:
        raise RoiReferenceError(f"{file}: {what} covers no pixel of the series' images (its contours"
                                " lie outside the image or are empty)")
    if slice_index is None:
        best = max(areas.values())
        index = min(i for i, a in areas.items() if a == best)
    else:
        index = int(slice_index)
        if index not in areas:
            raise RoiReferenceError(
                f"{file}: {what} is not on slice {index} (roi_slice) of the series; it is on slice(s)"
                f" {_ranges(sorted(areas))}. Give one of those, or leave roi_slice empty for the largest"
                " cross-section")
    row, col, size = bbox_centre(masks[index])
    return StructureRoi(index=index, file=series[index].file, row=float(row), col=float(col),
                        size_px=float(size), area_px=areas[index])


def _ranges(indices: list[int]) -> str:
    """'3-5, 9' for [3, 4, 5, 9]."""
    parts, start = [], None
    for a, b in zip(indices, indices[1:] + [None]):
        start = a if start is None else start
        if b != a + 1:
            parts.append(f"{start}" if start == a else f"{start}-{a}")
            start = None
    return ", ".join(parts)


# ----------------------------------------------------------------------------- RTSTRUCT


def rtstruct_roi(rtstruct: str | os.PathLike, roi_name: str, slices: Sequence[Path],
                 slice_index: int | None = None) -> StructureRoi:
    """The ROI of the structure ``roi_name`` of an RTSTRUCT on an image series.

    Args:
        rtstruct: the RT Structure Set file.
        roi_name: the structure's ROIName (StructureSetROISequence); matched exactly after
            stripping spaces, else case-insensitively when that is unique.
        slices: the series' single-frame slice files, in the series' order (the order
            ``roi_slice`` counts in).
        slice_index: 0-based index in ``slices`` of the slice to use; None: the slice with the
            largest cross-section.

    Returns:
        The chosen slice and the cross-section's bounding-box centre and larger side (pixels).

    Raises:
        RoiReferenceError: the file is not an RTSTRUCT, has no structure ``roi_name`` (the message
            lists the names it has) or no contour for it, refers to another Frame of Reference or
            to images that are not slices of the series, has a contour that lies on no slice (or
            off the slice it references), or the slices lack the geometry (ImagePositionPatient,
            ImageOrientationPatient, PixelSpacing) that maps mm to pixels.
        DicomError: an unreadable RTSTRUCT or slice.
        DataError: a multi-frame file among ``slices``.
    """
    from highdicom.spatial import ReferenceToPixelTransformer

    rtstruct = Path(rtstruct)
    ds = read_header(rtstruct)  # an RTSTRUCT holds no pixel data: this is the whole file
    sop_class = str(ds.get("SOPClassUID", "") or getattr(getattr(ds, "file_meta", None),
                                                          "MediaStorageSOPClassUID", "")).strip()
    if sop_class != RTSTRUCT_SOP_CLASS:
        raise RoiReferenceError(
            f"{rtstruct}: not an RT Structure Set (SOP class {_sop_name(sop_class)}, modality"
            f" {ds.get('Modality', '?')}); rtstruct_path must name the RTSTRUCT file (a DICOM-SEG goes in"
            " seg_path, a mask image in mask_path)")
    wanted = str(roi_name).strip()
    rois = [(int(it.ROINumber), str(it.get("ROIName", "")).strip(),
             str(it.get("ReferencedFrameOfReferenceUID", "")).strip())
            for it in ds.get("StructureSetROISequence", []) if "ROINumber" in it]
    hits = [r for r in rois if r[1] == wanted] or [r for r in rois if r[1].lower() == wanted.lower()]
    if len(hits) != 1:
        names = ", ".join(repr(n) for _, n, _ in rois) or "none"
        if not hits:
            raise RoiReferenceError(f"{rtstruct}: no structure named {wanted!r} (roi_name); its structures"
                                    f" are: {names}. Give one of these as roi_name")
        raise RoiReferenceError(f"{rtstruct}: {len(hits)} structures are named {wanted!r} (ROINumber"
                                f" {', '.join(str(h[0]) for h in hits)}); rename one so roi_name is unique")
    number, name, roi_for = hits[0]
    what = f"structure {name!r}"
    series = _series(slices)
    frames = {str(it.get("FrameOfReferenceUID", "")).strip()
              for it in ds.get("ReferencedFrameOfReferenceSequence", [])} - {""}
    _check_frame_of_reference(rtstruct, f"RTSTRUCT's {what}",
                              roi_for or (next(iter(frames)) if len(frames) == 1 else ""), series)
    contours = next((it.get("ContourSequence", []) for it in ds.get("ROIContourSequence", [])
                     if int(it.get("ReferencedROINumber", -1)) == number), None)
    if not contours:
        raise RoiReferenceError(f"{rtstruct}: {what} has no contour (empty or missing ContourSequence"
                                " in ROIContourSequence); contour it, or name another structure")
    missing = [s.file.name for s in series if s.position is None or s.orientation is None or s.spacing is None]
    if missing:
        raise RoiReferenceError(
            f"{series[0].file.parent}: slice(s) {', '.join(missing[:3])} lack ImagePositionPatient,"
            " ImageOrientationPatient or PixelSpacing, so the RTSTRUCT's contours (in mm) cannot be"
            " placed on the image; give the lesion as roi_row/roi_col + roi_slice instead")
    by_sop = {s.sop: i for i, s in enumerate(series) if s.sop}
    normal = np.cross(series[0].orientation[:3], series[0].orientation[3:])
    heights = np.array([float(s.position @ normal) for s in series])
    tol = _half_spacing(heights, series)
    transformers = [ReferenceToPixelTransformer(s.position.tolist(), s.orientation.tolist(), list(s.spacing), 1.0,
                                                round_output=False)
                    for s in series]
    masks: dict[int, np.ndarray] = {}
    foreign: list[str] = []
    for n, contour in enumerate(contours, start=1):
        points = np.asarray(contour.get("ContourData", []), float)
        if points.size < 3 or points.size % 3:
            raise RoiReferenceError(f"{rtstruct}: contour {n} of {what} has {points.size} ContourData values"
                                    " (x, y, z triplets expected); the file is corrupt")
        points = points.reshape(-1, 3)
        refs = [str(r.get("ReferencedSOPInstanceUID", "")).strip() for r in contour.get("ContourImageSequence", [])]
        refs = [r for r in refs if r]
        height = float(points.mean(axis=0) @ normal)
        if refs:
            inside = [by_sop[r] for r in refs if r in by_sop]
            if not inside:
                foreign.append(refs[0])
                continue
            index = inside[0]
            if abs(height - heights[index]) > tol:
                raise RoiReferenceError(
                    f"{rtstruct}: contour {n} of {what} lies {height - heights[index]:+.2f} mm off the slice it"
                    f" references ({series[index].file.name}; more than half the slice spacing, {tol:g} mm):"
                    " the image series or the structure set was modified after contouring")
        else:
            index = int(np.argmin(np.abs(heights - height)))
            if abs(heights[index] - height) > tol:
                raise RoiReferenceError(
                    f"{rtstruct}: contour {n} of {what} lies on no slice of the series"
                    f" ({series[0].file.parent}): {height:g} mm along the slice normal, nearest slice"
                    f" {heights[index]:g} mm, slices from {heights.min():g} to {heights.max():g} mm. Point"
                    " path at the series the structure was drawn on")
        # (column, row, offset along the normal in mm); rounded to 1e-4 pixel so that a vertex
        # meant to sit on a pixel centre does not fall just outside it through float error
        pix = np.round(transformers[index](points), 4)
        mask = masks.setdefault(index, np.zeros(series[index].shape, bool))
        mask ^= _rasterise(pix[:, 1], pix[:, 0], str(contour.get("ContourGeometricType", "CLOSED_PLANAR")),
                           series[index].shape)
    if foreign:
        kept = len(contours) - len(foreign)
        raise RoiReferenceError(
            f"{rtstruct}: {len(foreign)} of the {len(contours)} contours of {what} reference images that are"
            f" not slices of the series {series[0].file.parent} (their SOPInstanceUIDs are not in it):"
            + (" the structure set was drawn on another series. Point path at that series"
               if kept == 0 else " the series folder is incomplete; copy the missing slices"))
    return _choose(masks, series, slice_index, rtstruct, what)


def _half_spacing(heights: np.ndarray, series: list[_Slice]) -> float:
    """Half the median distance between neighbouring slices along the normal (mm); for a single
    slice half its SliceThickness (else 0.5 mm)."""
    if len(heights) > 1:
        gaps = np.diff(np.sort(heights))
        gaps = gaps[gaps > 1e-6]
        if gaps.size:
            return float(np.median(gaps)) / 2 + 1e-3
    return (series[0].thickness or 1.0) / 2 + 1e-3


def _rasterise(rows: np.ndarray, cols: np.ndarray, kind: str, shape: tuple[int, int]) -> np.ndarray:
    """Pixels of one contour given in (fractional) pixel indices: a filled polygon for
    CLOSED_PLANAR (pixel centres inside or on the contour), the traversed pixels for an open
    contour and the nearest pixel for a POINT; a contour too small to enclose a pixel centre
    still marks the pixels it passes through."""
    from skimage.draw import line, polygon

    mask = np.zeros(shape, bool)
    if kind.strip().upper() == "CLOSED_PLANAR" and len(rows) >= 3:
        rr, cc = polygon(rows, cols, shape)
        mask[rr, cc] = True
        if mask.any():
            return mask
    r = np.rint(rows).astype(int)
    c = np.rint(cols).astype(int)
    pairs = list(zip(r, c))
    segments = list(zip(pairs, pairs[1:])) or [(pairs[0], pairs[0])]
    for (r0, c0), (r1, c1) in segments:
        rr, cc = line(r0, c0, r1, c1)
        ok = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
        mask[rr[ok], cc[ok]] = True
    return mask


def _sop_name(uid: str) -> str:
    if not uid:
        return "none"
    name = pydicom.uid.UID(uid).name
    return name if name and name != uid else uid


# ----------------------------------------------------------------------------- DICOM-SEG


def seg_roi(seg_file: str | os.PathLike, segment: str | int, slices: Sequence[Path],
            slice_index: int | None = None) -> StructureRoi:
    """The ROI of one segment of a DICOM-SEG on an image series.

    Args:
        seg_file: the DICOM Segmentation file (binary, fractional or label-map).
        segment: the SegmentNumber (an integer, e.g. ``2`` or ``'2'``), or the SegmentLabel
            (exactly after stripping, else case-insensitively when unique).
        slices: the series' single-frame slice files, in the series' order.
        slice_index: 0-based index in ``slices`` of the slice to use; None: the slice with the
            largest cross-section.

    Returns:
        The chosen slice and the cross-section's bounding-box centre and larger side (pixels).
        A pixel is inside when its value is > 0 (binary, label map) or >= 0.5 (fractional).

    Raises:
        RoiReferenceError: the file is not a DICOM-SEG, has no such segment (the message lists
            number and label of each), refers to another Frame of Reference or to images that are
            not slices of the series, its frames are of another size than the slices, or the
            segment is empty on every slice of the series.
        DicomError: an unreadable file.
        DataError: a multi-frame file among ``slices``.
    """
    import highdicom as hd

    seg_file = Path(seg_file)
    hdr = read_header(seg_file)
    sop_class = str(hdr.get("SOPClassUID", "")).strip()
    if "Segmentation Storage" not in _sop_name(sop_class):
        raise RoiReferenceError(
            f"{seg_file}: not a DICOM Segmentation (SOP class {_sop_name(sop_class)}, modality"
            f" {hdr.get('Modality', '?')}); seg_path must name the DICOM-SEG file (an RTSTRUCT goes in"
            " rtstruct_path, a mask image in mask_path)")
    try:
        seg = hd.seg.segread(seg_file)
    except DicomError:
        raise
    except Exception as exc:  # highdicom raises ValueError/AttributeError/... on a malformed SEG
        raise RoiReferenceError(f"{seg_file}: highdicom cannot read this segmentation ({type(exc).__name__}:"
                                f" {exc}); export it again") from exc
    labels = {int(n): str(seg.get_segment_description(n).segment_label).strip() for n in seg.segment_numbers}
    wanted = str(segment).strip()
    listing = ", ".join(f"{n} ({lab!r})" for n, lab in labels.items()) or "none"
    if wanted.isdigit() and int(wanted) in labels:
        number = int(wanted)
    else:
        hits = [n for n, lab in labels.items() if lab == wanted] or \
               [n for n, lab in labels.items() if lab.lower() == wanted.lower()]
        if len(hits) != 1:
            raise RoiReferenceError(
                f"{seg_file}: {'no' if not hits else 'more than one'} segment {wanted!r} (segment: a"
                f" SegmentNumber or SegmentLabel); its segments are: {listing}. Give one number of these")
        number = hits[0]
    what = f"segment {number} ({labels[number]!r})"
    series = _series(slices)
    _check_frame_of_reference(seg_file, "segmentation", str(seg.get("FrameOfReferenceUID", "")).strip(), series)
    by_sop = {s.sop: i for i, s in enumerate(series) if s.sop}
    referenced = {str(sop) for _, _, sop in seg.get_source_image_uids()}
    frames = _frame_sources(seg, number)
    present = [i for i, s in enumerate(series) if s.sop in referenced]
    foreign = sorted({r for fr in frames for r in fr["sources"] if r not in by_sop})
    if not present:
        raise RoiReferenceError(
            f"{seg_file}: {what} is drawn on images that are not slices of the series"
            f" {series[0].file.parent}: none of the {len(referenced)} SOPInstanceUIDs the SEG references"
            " is a slice of it (another series). Point path at the series it was drawn on")
    if foreign:
        raise RoiReferenceError(
            f"{seg_file}: {len(foreign)} frame(s) of {what} are drawn on images missing from the series"
            f" folder {series[0].file.parent} (their SOPInstanceUIDs are not in it): the folder is"
            " incomplete; copy the missing slices")
    shape = (int(seg.Rows), int(seg.Columns))
    wrong = [s.file.name for s in series if s.shape != shape]
    if wrong:
        raise RoiReferenceError(f"{seg_file}: frames are {shape[0]}x{shape[1]} but slice {wrong[0]} of the"
                                f" series is {series[0].shape[0]}x{series[0].shape[1]}: the ROI would be in"
                                " the wrong place; export the SEG on the image's own grid")
    ignore_locations = _same_grid(seg_file, what, frames, series, by_sop)
    try:
        pixels = seg.get_pixels_by_source_instance(
            [series[i].sop for i in present], segment_numbers=[number],
            assert_missing_frames_are_empty=True, ignore_spatial_locations=ignore_locations)
    except Exception as exc:
        raise RoiReferenceError(f"{seg_file}: the frames of {what} cannot be matched to the series' slices"
                                f" ({type(exc).__name__}: {exc})") from exc
    fractional = str(seg.get("SegmentationType", "")).upper() == "FRACTIONAL"
    inside = pixels[..., 0] >= 0.5 if fractional else pixels[..., 0] > 0
    masks = {i: inside[j] for j, i in enumerate(present)}
    return _choose(masks, series, slice_index, seg_file, what)


def _frame_sources(seg, number: int) -> list[dict]:
    """Per frame of segment ``number`` (a label map's frames hold every segment): the SOP
    Instance UIDs it was derived from (``sources``), their SpatialLocationsPreserved values
    (``preserved``) and its ImagePositionPatient (``position``, mm; None when not given)."""
    shared = (seg.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    out = []
    for item in seg.get("PerFrameFunctionalGroupsSequence", []):
        ident = item.get("SegmentIdentificationSequence")
        if ident and int(ident[0].get("ReferencedSegmentNumber", number)) != number:
            continue
        sources = [src for der in item.get("DerivationImageSequence", [])
                   for src in der.get("SourceImageSequence", [])]
        plane = item.get("PlanePositionSequence") or shared.get("PlanePositionSequence")
        ipp = plane[0].get("ImagePositionPatient") if plane else None
        out.append({"sources": [str(src.get("ReferencedSOPInstanceUID", "")).strip() for src in sources
                                if str(src.get("ReferencedSOPInstanceUID", "")).strip()],
                    "preserved": [str(src.get("SpatialLocationsPreserved", "")).strip().upper() for src in sources],
                    "position": np.asarray(ipp, float) if ipp is not None and len(ipp) == 3 else None})
    return out


def _same_grid(seg_file: Path, what: str, frames: list[dict], series: list[_Slice],
               by_sop: dict[str, int]) -> bool:
    """Whether highdicom must be told to ignore a missing SpatialLocationsPreserved: False when
    every source reference says YES; True when it is absent but each frame's
    ImagePositionPatient equals its source slice's (within 0.01 mm), i.e. the SEG is on the
    slices' own pixel grid.

    Raises:
        RoiReferenceError: a reference says NO (the frames were resampled), or the flag is absent
            and the frame positions do not show the slices' grid.
    """
    flags = {p for fr in frames for p in fr["preserved"]}
    if flags <= {"YES"}:
        return False
    if "NO" in flags:
        raise RoiReferenceError(f"{seg_file}: the frames of {what} do not keep the source images' pixel"
                                " locations (SpatialLocationsPreserved NO: resampled); export the SEG on the"
                                " image's own grid")
    for fr in frames:
        for sop in fr["sources"]:
            s = series[by_sop[sop]]
            if fr["position"] is None or s.position is None or np.abs(fr["position"] - s.position).max() > 0.01:
                raise RoiReferenceError(
                    f"{seg_file}: the frames of {what} do not say that they keep the source images' pixel"
                    " grid (no SpatialLocationsPreserved) and their positions (ImagePositionPatient) do not"
                    f" match the slices' (e.g. {s.file.name}); export the SEG on the image's own grid")
    log.info("%s: no SpatialLocationsPreserved; its frames lie at their source slices' positions, so they"
             " are read on the slices' pixel grid", seg_file)
    return True


# ----------------------------------------------------------------------------- manifest rows


def structure_roi(where: str, root: Path, row: dict, slices: Sequence[Path],
                  roi_slice: float = math.nan) -> StructureRoi | None:
    """The ROI a manifest row gives with ``rtstruct_path`` + ``roi_name`` or ``seg_path`` +
    ``segment``; None when the row gives neither.

    Args:
        where: ``manifest.csv:line``, named in messages.
        root: the folder relative paths are resolved against (``source.root``).
        row: the manifest row (column -> string).
        slices: the image series' slice files in the series' order.
        roi_slice: the row's ``roi_slice`` (NaN: the largest cross-section).

    Returns:
        The :class:`StructureRoi` on the chosen slice, or None when the row gives neither form.

    Raises:
        DataError: the row gives both forms, or one of them together with a point, a mask or
            ``roi_z_mm``, or a file without its structure name / segment, or a ``roi_slice``
            outside the series.
        RoiReferenceError, DicomError: see :func:`rtstruct_roi` and :func:`seg_roi`.
    """
    given = {c: str(row.get(c, "") or "").strip() for c in (*RTSTRUCT_COLUMNS, *SEG_COLUMNS)}
    forms = [cols for cols in (RTSTRUCT_COLUMNS, SEG_COLUMNS) if given[cols[0]]]
    stray = [cols for cols in (RTSTRUCT_COLUMNS, SEG_COLUMNS) if given[cols[1]] and not given[cols[0]]]
    if stray:
        raise DataError(f"{where}: {stray[0][1]} is given without its file ({stray[0][0]}); give both or"
                        " neither")
    if not forms:
        return None
    if len(forms) > 1:
        raise DataError(f"{where}: both rtstruct_path and seg_path are given; give one ROI per row")
    others = [c for c in ("roi_row", "roi_col", "mask_path", "roi_z_mm") if str(row.get(c, "") or "").strip()]
    file_col, name_col = forms[0]
    if others:
        raise DataError(f"{where}: {file_col} and {', '.join(others)} are both given; give one ROI form per"
                        f" row ({file_col} finds the slice and centre itself; roi_slice may pick the slice)")
    if not given[name_col]:
        raise DataError(f"{where}: {file_col} is given but {name_col} is empty; name the "
                        + ("structure (its ROIName)" if name_col == "roi_name" else "segment (its number or label)"))
    files = list(slices)
    index = None
    if not math.isnan(roi_slice):
        if not 0 <= int(roi_slice) < len(files):
            raise DataError(f"{where}: roi_slice {int(roi_slice)} outside the series' {len(files)} slices")
        index = int(roi_slice)
    target = root / given[file_col]
    if not target.is_file():
        raise DicomError(f"{target}: no such {'RTSTRUCT' if name_col == 'roi_name' else 'DICOM-SEG'} file"
                         f" ({file_col}, relative to the source root {root})")
    if name_col == "roi_name":
        return rtstruct_roi(target, given[name_col], files, index)
    return seg_roi(target, given[name_col], files, index)
