"""The ImageFolder layout: ``root/<class>/<image>`` (sub-folders of a class folder are searched).

Each image is one sample, used whole (the images are already lesion crops): any image Pillow
opens (PNG, JPEG, TIFF, BMP, WebP, GIF...), DICOM (recognised by its content, the 'DICM' marker
at byte 128, whatever the file's name: PACS exports write ``IM0001`` or ``1.2.840....`` names) or
single-slice NIfTI. Class folders must be the names in ``source.classes`` (compared
case-insensitively; label = the index there). The sample ID is the image's path below ``root``
without its image suffix (e.g. ``malignant/case12_a``; a name without an image suffix, such as
``1.2.840.1.5``, is kept whole).

Every file below ``root`` is either read or listed in ``skipped.csv`` with its reason
(:func:`~oncorobust.data.sources.images.classify_file`): hidden/system files (``.DS_Store``,
``._name``, ``Thumbs.db``, ``desktop.ini``), hidden and ``__MACOSX`` folders (left by unzipping
an archive made on a Mac; not searched), files that are not images (notes, spreadsheets) and files
at the top of ``root`` (outside any class folder) are listed as not read, and never stop ingest;
files in an unknown format, images that cannot be opened, multi-frame files (a NIfTI volume, a
multi-frame DICOM, a multi-page TIFF or animated GIF: give them in a manifest with ``roi_slice``),
DICOM files that hold no image, and images larger than the size guard
(:data:`~oncorobust.data.dicom.MAX_PIXELS` pixels; "image too large (W×H px, limit ...)") are
skipped, listed with the reason (``on_bad_file: error`` stops on them instead).

Patients: ``source.patient_pattern``, a regular expression searched in the image's path below its
class folder; its group ``patient`` (or its first group, or the whole match) is the patient ID,
so that all images of one patient land in one split. A file that does not match stops ingest
(a patient split could leak otherwise). Without a pattern every image is its own patient, and the
log says so.

Walking the tree: symbolic links to folders and files are followed; a link that leads back into
a folder already being walked (a loop), or to a folder or file already read through another path,
is not read again and is listed in ``skipped.csv`` with the reason, and so is a dangling link. A
class folder without any usable image stops ingest naming it and the reasons its files were
skipped (it would otherwise vanish from the labels).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Iterator

from oncorobust.data.dicom import non_image_reason, read_header, size_problem
from oncorobust.errors import DataError, DicomError
from oncorobust.data.sources.common import IngestResult, record, require_dir, system_folder_reason
from oncorobust.data.sources.images import DICOM_SUFFIXES, NIFTI_SUFFIXES, PILLOW_SUFFIXES, \
    classify_file, image_shape, pillow_suffixes

log = logging.getLogger("oncorobust.data.sources.folder")


#: folder names never read as classes or searched for images (besides hidden ``.names``)
IGNORED_FOLDERS = {"__macosx"}


def _ignored(name: str) -> bool:
    return name.startswith(".") or name.lower() in IGNORED_FOLDERS


def class_folders(root: str | os.PathLike) -> list[str]:
    """Names of the class sub-folders of an ImageFolder-layout ``root``, sorted.

    Sub-folders reached through a symbolic link count; hidden folders (``.name``) and
    ``__MACOSX`` (left by unzipping an archive made on a Mac) are ignored. This is the list the
    folder format compares with ``source.classes`` (and the CLI's default class list).

    Args:
        root: the data folder (``source.root``).

    Returns:
        The sub-folder names, sorted (Python's string order).

    Raises:
        DataError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; give the folder that holds one sub-folder per class")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not _ignored(p.name))


def sample_id(rel: str) -> str:
    """The sample ID of an image at ``rel`` (its path below the root): the path without its image
    suffix (``.png``, ``.dcm``, ``.nii.gz``...); a name without one (``IM0001``,
    ``1.2.840.1.5``) is kept whole, so that PACS names differing only after their last dot stay
    apart.

    Args:
        rel: the image's path below ``root``, with forward slashes.

    Returns:
        The sample ID.
    """
    low = rel.lower()
    for suffix in NIFTI_SUFFIXES[::-1]:  # .nii.gz before .nii
        if low.endswith(suffix):
            return rel[: -len(suffix)]
    suffix = Path(low).suffix
    if suffix and (suffix in PILLOW_SUFFIXES or suffix in DICOM_SUFFIXES or suffix in pillow_suffixes()):
        return rel[: -len(suffix)]
    return rel


def _walk(folder: Path, result: IngestResult, seen_dirs: dict, seen_files: dict) -> Iterator[Path]:
    """Files below ``folder`` (a stable order), following symbolic links once each.

    ``seen_dirs`` / ``seen_files`` map (device, inode) to the path first read, across all class
    folders: a folder or file reached a second time (a symlink loop, or two paths to the same
    data) is listed in ``result.skipped`` instead of being read again.
    """
    try:
        st = folder.stat()
    except OSError as exc:
        result.skip(folder, f"cannot be read ({exc.strerror or exc})")
        return
    key = (st.st_dev, st.st_ino)
    if key in seen_dirs:
        first = seen_dirs[key]
        why = ("a symbolic-link loop: it leads back to" if first in folder.parents or first == folder
               else "the same folder as")
        result.skip(folder, f"{why} {first}, already read; not read again")
        return
    seen_dirs[key] = folder
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        result.skip(folder, f"cannot be listed ({exc.strerror or exc})")
        return
    subdirs, files = [], []
    for entry in entries:
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()  # follows symbolic links
            is_file = not is_dir and entry.is_file()
            fst = path.stat() if is_file else None
        except OSError:
            is_dir = is_file = False
        if entry.is_symlink() and not (is_dir or is_file):
            result.skip(path, f"a symbolic link to {os.readlink(path)!s}, which does not exist"
                        " (a dangling link); fix or remove it")
            continue
        if is_dir:
            why = system_folder_reason(entry.name)
            if why:
                result.ignore(path, why)
            else:
                subdirs.append(path)
        elif is_file:
            files.append((path, (fst.st_dev, fst.st_ino), entry.is_symlink()))
        else:
            result.ignore(path, "not a regular file (a socket, device or pipe); not read")
    # two names of one file in this folder: the file itself is read, the link is not
    chosen: dict = {}
    for path, fkey, link in files:
        if fkey not in chosen or (chosen[fkey][1] and not link):
            chosen[fkey] = (path, link)
    for path, fkey, _ in files:
        first = seen_files.get(fkey, chosen[fkey][0])
        if first != path:
            result.skip(path, f"the same file as {first} (a link), already read; not read twice")
            continue
        seen_files[fkey] = path
        yield path
    for sub in subdirs:
        yield from _walk(sub, result, seen_dirs, seen_files)


def _patient(pattern: re.Pattern | None, rel: str, sample_id: str) -> str | None:
    if pattern is None:
        return sample_id
    m = pattern.search(rel)
    if m is None:
        return None
    if "patient" in pattern.groupindex:
        return m.group("patient")
    return m.group(1) if pattern.groups else m.group(0)


def _unusable(path: Path, kind: str) -> str:
    """Why an image file of the folder format cannot be one sample ('' when it can), from its
    header only: unreadable, not an image (a DICOMDIR, a report), larger than the size guard, or
    several frames (a folder image is used whole: one picture per file)."""
    try:
        if kind == "dicom":
            hdr = read_header(path)
            why = non_image_reason(hdr)
            if why:
                return f"{why}; the folder format needs one image per file"
            frames = int(hdr.get("NumberOfFrames", 1) or 1)
            rows, cols = int(hdr.get("Rows", 0) or 0), int(hdr.get("Columns", 0) or 0)
            too_large = size_problem(rows, cols, frames, int(hdr.get("SamplesPerPixel", 1) or 1),
                                     int(hdr.get("BitsAllocated", 16) or 16))
        else:
            frames, rows, cols = image_shape(path)
            too_large = size_problem(rows, cols, frames)
    except DicomError as exc:  # ImageError too
        return str(exc).split(": ", 1)[-1]
    except (TypeError, ValueError) as exc:
        return f"a broken header (Rows/Columns/NumberOfFrames: {exc})"
    if too_large:
        return too_large
    if frames > 1:
        what = {"nifti": f"a NIfTI volume of {frames} slices", "dicom": f"a multi-frame DICOM of {frames} frames"}
        return (f"{what.get(kind, f'a multi-page image of {frames} pages/frames')}; the folder format"
                " uses one picture per file: list it in a manifest with roi_slice to pick the slice")
    return ""


def ingest(cfg: dict, result: IngestResult) -> None:
    """Append one record per image under ``cfg["root"]``'s class folders to ``result``.

    Args:
        cfg: the source config (``root``, ``classes``, optional ``patient_pattern``).
        result: where records and skipped inputs are appended.

    Raises:
        DataError: the root is missing, a sub-folder is not one of the classes, a class has no
            folder or no usable image (the message names the folder and why its files were not
            used), the pattern is invalid or misses a file.
    """
    root = require_dir(cfg.get("root"), "source.root")
    classes = [str(c).lower() for c in cfg.get("classes", ["benign", "malignant"])]
    folders = [root / name for name in class_folders(root)]
    ignored = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.lower() in IGNORED_FOLDERS)
    if ignored:
        log.info("folder %s: ignored %s (not a class: left by unzipping an archive made on a Mac)", root, ignored)
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
    for path in sorted(p for p in root.iterdir() if p.is_dir() and system_folder_reason(p.name)):
        result.ignore(path, system_folder_reason(path.name))
    for path in sorted(p for p in root.iterdir() if not p.is_dir()):
        kind, why = classify_file(path) if path.is_file() else ("other", "not a regular file; not read")
        if kind in ("dicom", "pillow", "nifti"):
            result.skip(path, f"an image outside the class folders: the folder format reads {root}/<class>/...;"
                        " move it into its class's folder")
        elif kind == "system":
            result.ignore(path, why)
        else:
            result.ignore(path, f"outside the class folders, {why}")
    misses = []
    seen_dirs: dict = {}
    seen_files: dict = {}
    per_class: dict[str, int] = {}
    empty: list[str] = []
    for folder in folders:
        label = classes.index(folder.name.lower())
        n_before, skipped_before, ignored_before = len(result.records), len(result.skipped), len(result.ignored)
        for path in _walk(folder, result, seen_dirs, seen_files):
            kind, why = classify_file(path)
            if kind in ("system", "other"):
                result.ignore(path, why)
                continue
            rel = path.relative_to(root).as_posix()
            sid = sample_id(rel)
            if kind == "unknown":
                result.skip(path, why, sid)
                continue
            pid = _patient(pattern, path.relative_to(folder).as_posix(), sid)
            if pid is None:
                misses.append(rel)
                continue
            why = _unusable(path, kind)
            if why:
                result.skip(path, why, sid)
                continue
            result.records.append(record(sample_id=sid, patient_id=str(pid), label=label,
                                         label_name=classes[label], source=rel))
        per_class[folder.name] = len(result.records) - n_before
        if per_class[folder.name] == 0:
            below = result.skipped[skipped_before:] + result.ignored[ignored_before:]
            examples = "; ".join(f"{Path(s['file']).name}: {s['reason']}" for s in below[:3])
            detail = (f"; the {len(below)} file(s) below it were not used, e.g. {examples}"
                      f"{' ...' if len(below) > 3 else ''} (every one with its reason in the log and"
                      " skipped.csv)") if below else "; it holds no file"
            empty.append(f"{folder}: the folder of class '{folder.name}' holds no usable image (any"
                         f" image Pillow reads, e.g. PNG, JPEG, TIFF, BMP, WebP; DICOM; single-slice NIfTI){detail}")
    if empty and not misses:
        raise DataError("; ".join(empty) + ". Put the class's images there, or remove the class from"
                        " source.classes and its folder")
    if misses:
        raise DataError(f"source.patient_pattern = {raw!r} does not match {len(misses)} file(s), e.g."
                        f" {misses[:3]}; fix the pattern (its group 'patient', or first group, is the"
                        " patient ID, searched in the path below the class folder)")
    if pattern is not None:
        n = len({r["patient_id"] for r in result.records})
        log.info("folder %s: %d images of %d patients (source.patient_pattern %r)", root,
                 len(result.records), n, raw)
