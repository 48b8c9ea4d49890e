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

Walking the tree: hidden entries (``.name``) and ``__MACOSX`` folders (left by unzipping an archive
made on a Mac) are ignored, at the top and inside class folders. Symbolic links to folders and
files are followed; a link that leads back into a folder already being walked (a loop), or to a
folder or file already read through another path, is not read again and is listed in
``skipped.csv`` with the reason, and so is a dangling link. A class folder without any usable
image stops ingest naming it (it would otherwise vanish from the labels).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Iterator

from oncorobust.errors import DataError
from oncorobust.data.sources.common import IngestResult, record, require_dir
from oncorobust.data.sources.images import IMAGE_SUFFIXES, ImageError, image_kind, image_shape

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
        if _ignored(entry.name):
            continue
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
            subdirs.append(path)
        elif is_file:
            files.append((path, (fst.st_dev, fst.st_ino), entry.is_symlink()))
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
    misses = []
    seen_dirs: dict = {}
    seen_files: dict = {}
    per_class: dict[str, int] = {}
    for folder in folders:
        label = classes.index(folder.name.lower())
        n_before, skipped_before = len(result.records), len(result.skipped)
        for path in _walk(folder, result, seen_dirs, seen_files):
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
        per_class[folder.name] = len(result.records) - n_before
        if per_class[folder.name] == 0 and not misses:
            n_skip = len(result.skipped) - skipped_before
            raise DataError(f"{folder}: the folder of class '{folder.name}' holds no usable image"
                            f" (PNG, JPEG, TIFF, BMP, DICOM .dcm or single-slice NIfTI"
                            f"{f'; {n_skip} input(s) below it were skipped, see the log' if n_skip else ''});"
                            " put the class's images there, or remove the class from source.classes"
                            " and its folder")
    if misses:
        raise DataError(f"source.patient_pattern = {raw!r} does not match {len(misses)} file(s), e.g."
                        f" {misses[:3]}; fix the pattern (its group 'patient', or first group, is the"
                        " patient ID, searched in the path below the class folder)")
    if pattern is not None:
        n = len({r["patient_id"] for r in result.records})
        log.info("folder %s: %d images of %d patients (source.patient_pattern %r)", root,
                 len(result.records), n, raw)
