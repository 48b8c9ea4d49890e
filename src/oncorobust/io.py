"""Atomic writes: a result is either complete or absent, never half written.

A write that fails for lack of space (``ENOSPC``, a quota), on a read-only or failing file system,
or for any other ``OSError`` is reported as a :class:`WriteError` naming the result file, e.g.
"no space left on device while writing results/ct/tensors/train.pt", and leaves no file behind
(neither the result nor its temporary file).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from oncorobust.errors import OncorobustError


class WriteError(OncorobustError):
    """A result file could not be written (disk full, quota, read-only file system...). The
    message names the file and what to do; nothing is left half written."""


#: errno values that only a write can raise: mapped to WriteError wherever they come from in the
#: block of :func:`atomic_path` (any OSError of the write helpers below is mapped too).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}

#: What torch.save's C++ writer says when the disk fills (it does not raise OSError).
_TORCH_SHORT_WRITE = ("unexpected pos", "inline_container.cc", "PytorchStreamWriter failed writing")


def write_failure(exc: BaseException, path: str | os.PathLike) -> WriteError:
    """The :class:`WriteError` to raise for ``exc``, a failure while writing ``path``.

    Args:
        exc: the OSError (or torch's RuntimeError) the write raised.
        path: the result file being written (not its temporary file).

    Returns:
        A WriteError whose message starts with what happened: "no space left on device while
        writing <path>" for ENOSPC and torch's short write, "disk quota exceeded ...",
        "read-only file system ...", else the system's reason, and says what to do.
    """
    path = Path(path)
    where = path.parent if str(path.parent) else Path(".")
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC or (isinstance(exc, RuntimeError) and not isinstance(exc, OSError)):
        detail = "" if isinstance(exc, OSError) else f" (torch.save: {str(exc).strip().splitlines()[0]})"
        return WriteError(f"no space left on device while writing {path}{detail}; free space on the"
                          f" disk that holds {where} (`df -h {where}`) or point `results` at a larger"
                          " one, then rerun: nothing was left half written")
    if code == errno.EDQUOT:
        return WriteError(f"disk quota exceeded while writing {path}; free space in your quota"
                          f" (`quota -s`) or point `results` at another disk, then rerun")
    if code == errno.EROFS:
        return WriteError(f"read-only file system while writing {path}; point `results` at a"
                          " writable folder, then rerun")
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    name = errno.errorcode.get(code, "") if code is not None else ""
    return WriteError(f"cannot write {path}: {reason}{f' ({name})' if name else ''}; check the"
                      f" folder {where} (space, permissions, the disk itself), then rerun")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    Args:
        path: the result file.

    Yields:
        The temporary file to write (removed when the block fails).

    Raises:
        WriteError: the folder, the temporary file or the rename cannot be written, or the block
            raised an OSError that only a write raises (no space, quota, read-only, I/O error).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise write_failure(exc, path) from exc
    tmp = Path(tmp)
    try:
        try:
            yield tmp
        except OSError as exc:
            if exc.errno in _WRITE_ERRNOS:
                raise write_failure(exc, path) from exc
            raise
        try:
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are meant to be shared
            os.replace(tmp, path)
        except OSError as exc:
            raise write_failure(exc, path) from exc
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                tmp.unlink()


@contextlib.contextmanager
def _writing(path: str | os.PathLike) -> Iterator[Path]:
    """atomic_path for a block that only writes: every OSError is a WriteError naming ``path``."""
    try:
        with atomic_path(path) as tmp:
            yield tmp
    except OSError as exc:
        raise write_failure(exc, path) from exc


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` (no index) to ``path`` atomically.

    Args:
        df: the table to write.
        path: the CSV file (its folder is created if missing).

    Raises:
        WriteError: naming ``path``, when the disk is full or the write fails otherwise.
    """
    with _writing(path) as tmp:
        df.to_csv(tmp, index=False)


#: What a per-image attack CSV says it holds, appended after the scores (oncorobust.evaluation.evaluate's
#: COLUMNS) so those keep their order: the regime of the attacked model, the method as the result
#: is named (``pgd``, ``transfer_pgd``, ``worst``) and ε in [0,1] pixel units. Aggregates check them
#: against the job's params (``oncorobust.evaluation.results.read_attack_csv``).
ATTACK_KEY_COLUMNS = ("regime", "method", "eps")


def write_result_csv(df: pd.DataFrame, path: str | os.PathLike, *, model_fp: str,
                     data_fp: str | list[str] | pd.Series) -> None:
    """Write one per-image result (attack, corruption, sensitivity search) with the provenance
    columns appended (:func:`oncorobust.provenance.stamp`: the model's and the images'
    fingerprints and a digest of each row as written), atomically.

    Args:
        df: the per-image result (its columns are written first, unchanged).
        path: the CSV.
        model_fp: the fingerprint of the model that made it (:func:`oncorobust.provenance.model_fingerprint`).
        data_fp: the fingerprint of the tensor file its images came from, one for all rows or one per
            row (:func:`oncorobust.provenance.file_fingerprint`).

    Raises:
        ValueError: ``df`` already has a provenance column.
        WriteError: naming ``path``, when the disk is full or the write fails otherwise.
    """
    from oncorobust.provenance import stamp

    write_csv(stamp(df, model_fp, data_fp), path)


def write_attack_csv(df: pd.DataFrame, path: str | os.PathLike, *, regime: str, method: str,
                     eps: float, model_fp: str, data_fp: str) -> None:
    """Write one per-image attack result with its :data:`ATTACK_KEY_COLUMNS` and the provenance
    columns (:func:`write_result_csv`) appended, atomically.

    Args:
        df: the per-image result (one row per test image; its columns are written first, unchanged).
        path: the CSV (``results/{ds}/attacks/{regime}/{method}/eps={eps}.csv``).
        regime: the attacked model's regime (``clean``, ``adv_pgd``...).
        method: the result's name, with its ``transfer_`` prefix where it has one.
        eps: the L∞ budget in [0,1] pixel units (written as a float).
        model_fp: the attacked model's fingerprint.
        data_fp: the test tensors' fingerprint.

    Raises:
        ValueError: ``df`` already has one of the key or provenance columns (it would be overwritten).
        WriteError: naming ``path``, when the disk is full or the write fails otherwise.
    """
    clash = [c for c in ATTACK_KEY_COLUMNS if c in df.columns]
    if clash:
        raise ValueError(f"{path}: the result already has column(s) {clash}; they are the file's key")
    write_result_csv(df.assign(regime=str(regime), method=str(method), eps=float(eps)), path,
                     model_fp=model_fp, data_fp=data_fp)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON (sorted keys) to ``path`` atomically.

    Args:
        obj: a JSON-serialisable object.
        path: the JSON file (its folder is created if missing).

    Raises:
        WriteError: naming ``path``, when the disk is full or the write fails otherwise.
    """
    with _writing(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically.

    Args:
        obj: what to save (tensors, a state dict, a dict of them...).
        path: the ``.pt`` file (its folder is created if missing).

    Raises:
        WriteError: naming ``path``, when the disk is full (torch's C++ writer then raises a
            RuntimeError "... inline_container.cc ... unexpected pos", reported as "no space left
            on device while writing <path>") or the write fails otherwise.
    """
    import torch  # here, so that the torch-free readers (reporting.tables) can import this module

    with _writing(path) as tmp:
        try:
            with open(tmp, "wb") as fh:  # a file object: the archive's records are named archive/…,
                torch.save(obj, fh)  # not after the random temporary name, so equal objects give equal bytes
        except RuntimeError as exc:
            if any(s in str(exc) for s in _TORCH_SHORT_WRITE):
                raise write_failure(exc, path) from exc
            raise
