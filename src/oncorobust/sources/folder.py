"""The ImageFolder layout: ``root/<class>/<image>`` (sub-folders of a class folder are searched).

Each image is one sample, used whole (the images are already lesion crops): PNG, JPEG, TIFF, BMP,
DICOM (``.dcm``) or single-slice NIfTI. Class folders must be the names in ``source.classes``
(compared case-insensitively; label = the index there). The sample ID is the image's path below
``root`` without its suffix (e.g. ``malignant/case12_a``).

Patients: ``source.patient_pattern``, a regular expression searched in the image's path below its
class folder; its group ``patient`` (or its first group, or the whole match) is the patient ID,
so that all images of one patient land in one split. A file that does not match stops ingest
(a patient split could leak otherwise). Without a pattern every image is its own patient, and the
log says so.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..errors import DataError
from .common import IngestResult, iter_files, record, require_dir
from .images import IMAGE_SUFFIXES, ImageError, image_kind, image_shape

log = logging.getLogger("oncorobust.sources.folder")


def _patient(pattern: re.Pattern | None, rel: str, sample_id: str) -> str | None:
    if pattern is None:
        return sample_id
    m = pattern.search(rel)
    if m is None:
        return None
    if "patient" in pattern.groupindex:
        return m.group("patient")
    return m.group(1) if pattern.groups else m.group(0)


def ingest(cfg: dict, result: IngestResult) -> None:
    """Append one record per image under ``cfg["root"]``'s class folders to ``result``.

    Args:
        cfg: the source config (``root``, ``classes``, optional ``patient_pattern``).
        result: where records and skipped inputs are appended.

    Raises:
        DataError: the root is missing, a sub-folder is not one of the classes, a class has no
            folder, the pattern is invalid or misses a file.
    """
    root = require_dir(cfg.get("root"), "source.root")
    classes = [str(c).lower() for c in cfg.get("classes", ["benign", "malignant"])]
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if p.name.lower() not in classes]
    if unknown:
        raise DataError(f"{root}: sub-folder(s) {unknown} are not among source.classes {classes}; the"
                        " folder format wants one sub-folder per class: set source.classes to the"
                        f" class names in label order (e.g. {sorted(p.name for p in folders)}) or move"
                        " the stray folders away")
    absent = [c for c in classes if c not in {p.name.lower() for p in folders}]
    if absent:
        raise DataError(f"{root}: no sub-folder for class(es) {absent} of source.classes {classes}")
    raw = cfg.get("patient_pattern")
    try:
        pattern = re.compile(raw) if raw else None
    except re.error as exc:
        raise DataError(f"source.patient_pattern = {raw!r} is not a valid regular expression: {exc}") from None
    if pattern is None:
        log.info("folder %s: no source.patient_pattern, so every image is its own patient (images of"
                 " one patient may land in different splits; give a pattern if a patient has several)", root)
    misses = []
    for folder in folders:
        label = classes.index(folder.name.lower())
        for path in iter_files(folder):
            name = path.name.lower()
            if not (Path(name).suffix in IMAGE_SUFFIXES or name.endswith(".nii.gz")):
                continue
            if name.endswith(".gz") and not name.endswith(".nii.gz"):
                continue
            rel = path.relative_to(root).as_posix()
            sid = rel[: -len(".nii.gz")] if name.endswith(".nii.gz") else rel.rsplit(".", 1)[0]
            pid = _patient(pattern, path.relative_to(folder).as_posix(), sid)
            if pid is None:
                misses.append(rel)
                continue
            if image_kind(path) == "nifti":
                try:
                    frames = image_shape(path)[0]
                except ImageError as exc:
                    result.skip(path, str(exc).split(": ", 1)[-1], sid)
                    continue
                if frames > 1:
                    result.skip(path, f"a NIfTI volume of {frames} slices; list it in a manifest with"
                                " roi_slice to pick the slice", sid)
                    continue
            result.records.append(record(sample_id=sid, patient_id=str(pid), label=label,
                                         label_name=classes[label], source=rel))
    if misses:
        raise DataError(f"source.patient_pattern = {raw!r} does not match {len(misses)} file(s), e.g."
                        f" {misses[:3]}; fix the pattern (its group 'patient', or first group, is the"
                        " patient ID, searched in the path below the class folder)")
    if pattern is not None:
        n = len({r["patient_id"] for r in result.records})
        log.info("folder %s: %d images of %d patients (source.patient_pattern %r)", root,
                 len(result.records), n, raw)
