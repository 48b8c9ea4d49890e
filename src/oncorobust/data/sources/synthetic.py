"""Deterministic synthetic demo data written in the real datasets' *native* on-disk formats.

The demo must exercise the same adapters as real data, so this module writes:

- ``lidc``: LIDC-IDRI-like CT series (patient/study/series/*.dcm, both the current TCIA folder
  naming and the "classic" UID naming, some series RLE-compressed) with one LIDC reader XML per
  series (``LidcReadMessage``: up to four reading sessions, malignancy ratings, edge maps);
- ``cbis_ddsm``: CBIS-DDSM-like full mammograms, cropped images and ROI masks in the download-tree
  layout that does *not* match the CSV paths, plus the four case-description CSVs (CRLF line
  ends, stray newlines inside quoted path cells, the calc CSV's ``breast density`` header);
- ``manifest``: brain-MRI-like series folders plus a manifest CSV in the documented columns.

Lesion classes differ through a latent "aggressiveness" score drawn from two overlapping normal
distributions, which sets boundary irregularity, size and texture. The overlap keeps a small CNN
well below 100% accuracy (roughly 75-95%), so the demo can show the paper's phenomenon.
Everything is seeded; the same seed writes byte-identical pixel data.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
from pydicom.uid import generate_uid

from oncorobust.data.dicom import write_dicom

RLE = "1.2.840.10008.1.2.5"
_UID_ROOT = "1.2.826.0.1.3680043.10.1234."  # fixed root so generate_uid(entropy) is reproducible


def _uid(*parts: object) -> str:
    return generate_uid(prefix=_UID_ROOT, entropy_srcs=[str(p) for p in parts])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: random values on a coarse grid, bilinearly upsampled."""
    gh, gw = shape[0] // scale + 2, shape[1] // scale + 2
    grid = rng.standard_normal((gh, gw))
    ys = np.linspace(0, gh - 1.001, shape[0])
    xs = np.linspace(0, gw - 1.001, shape[1])
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    g = grid
    return ((1 - fy) * (1 - fx) * g[y0][:, x0] + (1 - fy) * fx * g[y0][:, x0 + 1]
            + fy * (1 - fx) * g[y0 + 1][:, x0] + fy * fx * g[y0 + 1][:, x0 + 1])


def _lesion_mask(shape, centre, radius, irregularity, lobes, phase) -> np.ndarray:
    """Soft mask (0..1) of a blob whose radius varies with angle: r(θ) = R(1 + a·sin(kθ + φ))."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    theta = np.arctan2(dy, dx)
    r = np.hypot(dy, dx)
    boundary = radius * (1 + irregularity * np.sin(lobes * theta + phase)
                         + 0.5 * irregularity * np.sin((2 * lobes + 1) * theta + 2 * phase))
    return np.clip(boundary - r + 0.5, 0, 1)


def _latent(rng: np.random.Generator, malignant: bool, separation: float) -> float:
    """Aggressiveness score: N(+sep, 1) for malignant, N(-sep, 1) for benign lesions."""
    return float(rng.normal(separation if malignant else -separation, 1.0))


def _appearance(score: float) -> dict:
    """Map the latent score to visible properties (all smooth in the score)."""
    s = 1 / (1 + math.exp(-score))  # 0..1
    return {"irregularity": 0.04 + 0.30 * s, "lobes": 5 + int(4 * s), "size": 0.85 + 0.35 * s,
            "texture": 0.1 + 0.5 * s}


# --------------------------------------------------------------------------------------- LIDC
def _lidc_xml(series_uid: str, study_uid: str, readers: list[list[dict]]) -> bytes:
    ns = "http://www.nih.gov"
    root = ET.Element("LidcReadMessage", {"xmlns": ns, "uid": _uid("msg", series_uid)})
    hdr = ET.SubElement(root, "ResponseHeader")
    ET.SubElement(hdr, "Version").text = "1.8.1"
    ET.SubElement(hdr, "StudyInstanceUID").text = study_uid
    ET.SubElement(hdr, "SeriesInstanceUid").text = series_uid
    for r, marks in enumerate(readers):
        sess = ET.SubElement(root, "readingSession")
        ET.SubElement(sess, "annotationVersion").text = "3.12"
        ET.SubElement(sess, "servicingRadiologistID").text = f"reader{r}"
        for k, mark in enumerate(marks):
            nod = ET.SubElement(sess, "unblindedReadNodule")
            ET.SubElement(nod, "noduleID").text = f"Nodule {k + 1:03d}"
            if mark.get("malignancy") is not None:
                ch = ET.SubElement(nod, "characteristics")
                for name, val in (("subtlety", 4), ("internalStructure", 1), ("calcification", 6),
                                  ("sphericity", 3), ("margin", 4), ("lobulation", 2),
                                  ("spiculation", 1), ("texture", 5),
                                  ("malignancy", mark["malignancy"])):
                    ET.SubElement(ch, name).text = str(val)
            for roi in mark["rois"]:
                el = ET.SubElement(nod, "roi")
                ET.SubElement(el, "imageZposition").text = f"{roi['z']:.3f}"
                ET.SubElement(el, "imageSOP_UID").text = roi["sop"]
                ET.SubElement(el, "inclusion").text = "TRUE"
                for x, y in roi["points"]:
                    em = ET.SubElement(el, "edgeMap")
                    ET.SubElement(em, "xCoord").text = str(x)
                    ET.SubElement(em, "yCoord").text = str(y)
        if r == 0:  # a non-nodule mark, as real sessions have
            nn = ET.SubElement(sess, "nonNodule")
            ET.SubElement(nn, "nonNoduleID").text = "Non-nodule 001"
            ET.SubElement(nn, "imageZposition").text = f"{readers[0][0]['rois'][0]['z']:.3f}" if marks else "0"
            ET.SubElement(nn, "imageSOP_UID").text = _uid("nn", series_uid)
            loc = ET.SubElement(nn, "locus")
            ET.SubElement(loc, "xCoord").text = "10"
            ET.SubElement(loc, "yCoord").text = "10"
    buf = io.BytesIO()
    ET.ElementTree(root).write(buf, encoding="utf-8", xml_declaration=True)
    return buf.getvalue()


def generate_lidc(out: Path, n_patients: int = 100, seed: int = 0, size: int = 96,
                  n_slices: int = 16, separation: float = 1.2) -> None:
    """Write an LIDC-IDRI-like tree under ``out`` (``LIDC-IDRI/LIDC-IDRI-NNNN/...``).

    Args:
        out: the folder to write into.
        n_patients: patients, one CT series of 1-3 nodules each.
        seed: seed of everything drawn.
        size: slice side in pixels (0.7 mm pixels; stored values are HU + 1024, clipped to 0..4095).
        n_slices: slices per series (2.5 mm apart; at least 9, nodule centres lie in [4, n_slices - 4)).
        separation: class separation: the latent score is N(±separation, 1) (malignant +, benign -).
    """
    rng = np.random.default_rng(seed)
    spacing, thickness = 0.7, 2.5
    top = Path(out) / "LIDC-IDRI"
    for p in range(1, n_patients + 1):
        pid = f"LIDC-IDRI-{p:04d}"
        study_uid, series_uid = _uid(pid, "study"), _uid(pid, "series")
        if p % 3 == 0:  # "classic" layout: folders named by UID
            series_dir = top / pid / study_uid / series_uid
        else:           # current TCIA layout: trailing 5 digits of the UIDs
            series_dir = (top / pid / f"01-01-2000-NA-NA-{study_uid[-5:]}"
                          / f"3000566.000000-NA-{series_uid[-5:]}")
        ts = RLE if p % 5 == 0 else "1.2.840.10008.1.2.1"
        # lung background in HU: parenchyma about -850 with vessels/texture
        vol = -850 + 60 * np.stack([_smooth_noise(rng, (size, size), 12) for _ in range(n_slices)])
        vol += rng.normal(0, 25, vol.shape)
        n_nod = int(rng.integers(1, 4))
        nodules = []
        for k in range(n_nod):
            malignant = bool(rng.random() < 0.5)
            look = _appearance(_latent(rng, malignant, separation))
            radius_px = (4.0 + 2.0 * rng.random()) * look["size"]
            cz = int(rng.integers(4, n_slices - 4))
            cy, cx = rng.uniform(18, size - 18, 2)
            half_z = max(1, int(round(radius_px * spacing / thickness)))
            phase = float(rng.uniform(0, 2 * np.pi))
            for z in range(cz - half_z, cz + half_z + 1):
                frac = 1 - ((z - cz) / (half_z + 1)) ** 2
                m = _lesion_mask((size, size), (cy, cx), radius_px * math.sqrt(frac),
                                 look["irregularity"], look["lobes"], phase)
                tex = look["texture"] * 120 * _smooth_noise(rng, (size, size), 3)
                vol[z] = vol[z] * (1 - m) + m * (30 + tex)
            nodules.append({"malignant": malignant, "c": (cz, cy, cx), "r": radius_px,
                            "half_z": half_z})
        sops = [_uid(pid, "sop", z) for z in range(n_slices)]
        zpos = [-100.0 + z * thickness for z in range(n_slices)]
        stored = np.clip(np.round(vol + 1024), 0, 4095).astype(np.uint16)
        for z in range(n_slices):
            write_dicom(series_dir / f"1-{z + 1:03d}.dcm", stored[z], modality="CT", patient_id=pid,
                        study_uid=study_uid, series_uid=series_uid, sop_uid=sops[z],
                        intercept=-1024.0, pixel_spacing=(spacing, spacing), z_mm=zpos[z],
                        instance_number=z + 1, slice_thickness=thickness, transfer_syntax=ts)
        # readers: 1-4 sessions; each marks every nodule with a noisy malignancy rating
        n_readers = int(rng.integers(1, 5))
        readers = []
        for r in range(n_readers):
            marks = []
            for nod in nodules:
                base = 4.1 if nod["malignant"] else 1.9
                rating = int(np.clip(round(base + rng.normal(0, 0.7)), 1, 5))
                cz, cy, cx = nod["c"]
                jy, jx = rng.normal(0, 0.7, 2)
                rois = []
                for z in range(cz - nod["half_z"], cz + nod["half_z"] + 1):
                    rr = nod["r"] * math.sqrt(max(0.2, 1 - ((z - cz) / (nod["half_z"] + 1)) ** 2))
                    pts = sorted({(int(round(cx + jx + rr * math.cos(t))),
                                   int(round(cy + jy + rr * math.sin(t))))
                                  for t in np.linspace(0, 2 * np.pi, 24, endpoint=False)})
                    rois.append({"z": zpos[z], "sop": sops[z], "points": pts})
                marks.append({"malignancy": rating, "rois": rois})
            if r == 0 and p % 4 == 0:  # a < 3 mm nodule: no characteristics, one point
                marks.append({"malignancy": None, "rois": [{"z": zpos[2], "sop": sops[2],
                                                            "points": [(20, 20)]}]})
            readers.append(marks)
        (series_dir / f"{p:03d}.xml").write_bytes(_lidc_xml(series_uid, study_uid, readers))


# --------------------------------------------------------------------------------------- CBIS
_CBIS_MASS_HEADER = ["patient_id", "breast_density", "left or right breast", "image view",
                     "abnormality id", "abnormality type", "mass shape", "mass margins",
                     "assessment", "pathology", "subtlety", "image file path",
                     "cropped image file path", "ROI mask file path"]
_CBIS_CALC_HEADER = ["patient_id", "breast density", "left or right breast", "image view",
                     "abnormality id", "abnormality type", "calc type", "calc distribution",
                     "assessment", "pathology", "subtlety", "image file path",
                     "cropped image file path", "ROI mask file path"]


def generate_cbis_ddsm(out: Path, n_patients: int = 150, seed: int = 0, shape=(192, 128),
                       separation: float = 1.1) -> None:
    """Write a CBIS-DDSM-like download tree under ``out/CBIS-DDSM`` and its case CSVs under ``out``.

    Args:
        out: the folder to write into.
        n_patients: patients, one mammogram (mass or calcification case) with 1-2 abnormalities each.
        seed: seed of everything drawn.
        shape: (rows, columns) of a full mammogram in pixels (0.1 mm pixels, uint16 grey levels).
        separation: class separation: the latent score is N(±separation, 1) (malignant +, benign -).
    """
    rng = np.random.default_rng(seed)
    out = Path(out)
    top = out / "CBIS-DDSM"
    rows = {(kind, part): [] for kind in ("mass", "calc") for part in ("train", "test")}
    h, w = shape
    for p in range(1, n_patients + 1):
        pid = f"P_{p:05d}"
        kind = "mass" if rng.random() < 0.55 else "calc"
        part = "train" if rng.random() < 0.75 else "test"
        side, view = ("LEFT", "RIGHT")[int(rng.integers(2))], ("CC", "MLO")[int(rng.integers(2))]
        prefix = f"{kind.capitalize()}-{'Training' if part == 'train' else 'Test'}"
        case = f"{prefix}_{pid}_{side}_{view}"
        # breast: a half ellipse on a dark background; dense tissue texture
        yy, xx = np.mgrid[:h, :w]
        breast = ((yy - h / 2) / (h * 0.48)) ** 2 + (xx / (w * 0.9)) ** 2 < 1
        img = 400 + breast * (1800 + 500 * _smooth_noise(rng, shape, 10)) + rng.normal(0, 40, shape)
        n_abn = 2 if rng.random() < 0.15 else 1
        lesions = []
        for a in range(1, n_abn + 1):
            malignant = bool(rng.random() < 0.5)
            look = _appearance(_latent(rng, malignant, separation))
            cy, cx = rng.uniform(0.3 * h, 0.7 * h), rng.uniform(0.15 * w, 0.5 * w)
            radius = (7 + 4 * rng.random()) * look["size"]
            if kind == "mass":
                m = _lesion_mask(shape, (cy, cx), radius, look["irregularity"], look["lobes"],
                                 float(rng.uniform(0, 6.3)))
                img = img * (1 - m) + m * (2900 + 400 * look["texture"] * _smooth_noise(rng, shape, 3))
            else:  # calcification cluster: bright specks, more and more scattered when malignant
                m = np.zeros(shape)
                for _ in range(int(4 + 10 * look["texture"])):
                    oy, ox = rng.normal(0, radius * (0.3 + look["irregularity"]), 2)
                    m += _lesion_mask(shape, (cy + oy, cx + ox), 1.0 + rng.random(), 0, 1, 0)
                m = np.clip(m, 0, 1)
                img = img * (1 - m) + m * 3600
            mask = (_lesion_mask(shape, (cy, cx), radius * 1.3, 0, 1, 0) > 0.5).astype(np.uint16) * 255
            lesions.append((a, malignant, mask))
        stored = np.clip(np.round(img), 0, 65535).astype(np.uint16)
        photometric = "MONOCHROME1" if p % 7 == 0 else "MONOCHROME2"
        if photometric == "MONOCHROME1":
            stored = (65535 - stored).astype(np.uint16)
        study, series = _uid(case, "st"), _uid(case, "se")
        full_rel_csv = f"{case}/{study}/{series}/000000.dcm"
        full_path = (top / case / f"08-29-2017-DDSM-NA-{study[-5:]}"
                     / f"1.000000-full mammogram images-{series[-5:]}" / "1-1.dcm")
        write_dicom(full_path, stored, modality="MG", patient_id=pid, study_uid=study,
                    series_uid=series, photometric=photometric, pixel_spacing=(0.1, 0.1))
        for a, malignant, mask in lesions:
            roi_case = f"{case}_{a}"
            rstudy, crop_series, mask_series = _uid(roi_case, "st"), _uid(roi_case, "c"), _uid(roi_case, "m")
            ys, xs = np.nonzero(mask)
            crop = stored[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
            base = top / roi_case / f"08-29-2017-DDSM-NA-{rstudy[-5:]}"
            # mass CSVs: crop = 000000.dcm, mask = 000001.dcm; calc CSVs: the reverse
            crop_name, mask_name = ("000000.dcm", "000001.dcm") if kind == "mass" else ("000001.dcm", "000000.dcm")
            write_dicom(base / f"1.000000-cropped images-{crop_series[-5:]}" / "1-1.dcm", crop,
                        modality="MG", patient_id=pid, study_uid=rstudy, series_uid=crop_series)
            write_dicom(base / f"1.000000-ROI mask images-{mask_series[-5:]}" / "1-1.dcm", mask,
                        modality="MG", patient_id=pid, study_uid=rstudy, series_uid=mask_series)
            pathology = "MALIGNANT" if malignant else ("BENIGN" if rng.random() < 0.6 else "BENIGN_WITHOUT_CALLBACK")
            rows[(kind, part)].append([
                pid, str(int(rng.integers(1, 5))), side, view, str(a), kind, "IRREGULAR" if kind == "mass" else "PLEOMORPHIC",
                "SPICULATED" if kind == "mass" else "CLUSTERED", str(int(rng.integers(2, 6))),
                pathology, str(int(rng.integers(1, 6))), full_rel_csv,
                f"{roi_case}/{rstudy}/{crop_series}/{crop_name}\n",
                f"{roi_case}/{rstudy}/{mask_series}/{mask_name}\n"])
    for (kind, part), body in rows.items():
        header = _CBIS_MASS_HEADER if kind == "mass" else _CBIS_CALC_HEADER
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows(body)
        (out / f"{kind}_case_description_{part}_set.csv").write_text(buf.getvalue(), newline="")


# --------------------------------------------------------------------------------------- MRI
def generate_mri_manifest(out: Path, n_patients: int = 80, seed: int = 0, size: int = 96,
                          n_slices: int = 10, separation: float = 1.6) -> None:
    """Write brain-MRI-like series (one folder per patient) and ``out/manifest.csv``.

    Args:
        out: the folder to write into.
        n_patients: patients, one T1post series of 1-4 lesions each.
        seed: seed of everything drawn.
        size: slice side in pixels (1 mm pixels, uint16 grey levels 0..4095).
        n_slices: slices per series (5 mm apart; at least 5, lesion centres lie in [2, n_slices - 2)).
        separation: class separation: the latent score is N(±separation, 1) (malignant +, benign -).
    """
    rng = np.random.default_rng(seed)
    out = Path(out)
    rows = []
    for p in range(1, n_patients + 1):
        pid = f"BM{p:04d}"
        study, series = _uid(pid, "st"), _uid(pid, "se")
        sdir = out / "dicom" / pid / "T1post"
        yy, xx = np.mgrid[:size, :size]
        brain = (((yy - size / 2) / (size * 0.42)) ** 2 + ((xx - size / 2) / (size * 0.36)) ** 2) < 1
        vol = np.stack([300 + brain * (500 + 80 * _smooth_noise(rng, (size, size), 8))
                        for _ in range(n_slices)]) + rng.normal(0, 20, (n_slices, size, size))
        lesions = []
        for k in range(int(rng.integers(1, 5))):
            malignant = bool(rng.random() < 0.5)
            look = _appearance(_latent(rng, malignant, separation))
            cz = int(rng.integers(2, n_slices - 2))
            ang, rad = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.22 * size)
            cy, cx = size / 2 + rad * math.sin(ang), size / 2 + rad * math.cos(ang)
            radius = (4 + 2 * rng.random()) * look["size"]
            for z in (cz - 1, cz, cz + 1):
                f = 1.0 if z == cz else 0.7
                outer = _lesion_mask((size, size), (cy, cx), radius * f, look["irregularity"], look["lobes"], 0.3 * k)
                inner = _lesion_mask((size, size), (cy, cx), radius * f * (0.75 - 0.4 * look["texture"]), 0, 1, 0)
                ring = np.clip(outer - inner * look["texture"] * 1.5, 0, 1)  # necrotic core when aggressive
                vol[z] = vol[z] * (1 - outer) + outer * 650 + ring * 350
            lesions.append((k + 1, malignant, cz, cy, cx, radius))
        stored = np.clip(np.round(vol), 0, 4095).astype(np.uint16)
        for z in range(n_slices):
            write_dicom(sdir / f"IM{z:04d}.dcm", stored[z], modality="MR", patient_id=pid,
                        study_uid=study, series_uid=series, z_mm=5.0 * z, instance_number=z + 1,
                        pixel_spacing=(1.0, 1.0), slice_thickness=5.0)
        for k, malignant, cz, cy, cx, radius in lesions:
            row = {"patient_id": pid, "sample_id": f"{pid}-L{k}",
                   "path": f"dicom/{pid}/T1post", "label": "malignant" if malignant else "benign",
                   "roi_row": round(cy, 1), "roi_col": round(cx, 1), "roi_slice": cz,
                   "roi_size_px": round(2.6 * radius, 1), "mask_path": ""}
            if k == 2:  # some lesions are given by a mask DICOM instead of a centre
                mask = (_lesion_mask((size, size), (cy, cx), radius * 1.2, 0, 1, 0) > 0.5).astype(np.uint16)
                mpath = out / "masks" / f"{pid}-L{k}.dcm"
                write_dicom(mpath, mask, modality="MR", patient_id=pid, study_uid=study,
                            series_uid=_uid(pid, "mask", k), z_mm=5.0 * cz)
                row.update(roi_row="", roi_col="", roi_size_px="", mask_path=f"masks/{pid}-L{k}.dcm")
            rows.append(row)
    with open(out / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


GENERATORS = {"lidc": generate_lidc, "cbis_ddsm": generate_cbis_ddsm, "manifest": generate_mri_manifest}


def generate(fmt: str, out: str | Path, **kwargs) -> None:
    """Write synthetic demo data in the native layout read by the ``fmt`` source adapter.

    Args:
        fmt: ``lidc``, ``cbis_ddsm`` or ``manifest`` (a key of :data:`GENERATORS`).
        out: the folder to write into (created if missing).
        **kwargs: passed to the generator (``n_patients``, ``seed``, ...).

    Raises:
        ValueError: no generator for ``fmt``.
    """
    if fmt not in GENERATORS:
        raise ValueError(f"no synthetic generator for format {fmt!r}; choose from {sorted(GENERATORS)}")
    Path(out).mkdir(parents=True, exist_ok=True)
    GENERATORS[fmt](Path(out), **kwargs)
