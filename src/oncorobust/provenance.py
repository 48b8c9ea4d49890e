"""Which model and which images made a per-image result, and whether its rows are as written.

Every per-image CSV (attacks, natural corruptions, the sensitivity search) carries three columns,
appended after its own:

- ``model_fp``: the first 16 hex digits of the model's weight digest (``meta["sha256"]`` of the
  model file, :func:`oncorobust.models.checkpoints.state_digest`);
- ``data_fp``: the first 16 hex digits of the SHA-256 of the tensor file its row's image came from
  (``tensors/test.pt``, or ``val.pt`` for the sensitivity search's validation rows);
- ``row_fp``: a digest of the row's other fields *as written* (their text in the file) together with
  the two fingerprints, so that a value edited by hand, or a row pasted from another model's file,
  no longer matches.

The readers (:func:`oncorobust.evaluation.results.read_per_image`) check all three: rows as written,
``data_fp`` against the test tensors they score, ``model_fp`` against the model file the result
belongs to (``{results}/{ds}/models/{regime}.pt`` beside the CSV). A mismatch is a
:class:`ProvenanceError` naming the file. This is a guard against stale and edited results, not a
signature: anyone can recompute a digest. Torch is imported only to read a model file's digest.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path

import pandas as pd

from oncorobust.errors import DataError

#: The provenance columns, appended in this order after a per-image result's own columns.
PROVENANCE_COLUMNS = ("model_fp", "data_fp", "row_fp")

#: Hex digits kept of each digest (64 bits: no accidental collision among a study's files).
FP_LENGTH = 16


class ProvenanceError(DataError):
    """A per-image result was not made by the model or images it is reported for, was edited
    after it was written, or predates the provenance columns. The message names the file."""


_FILE_CACHE: dict[tuple[str, int, int], str] = {}


def _cache_key(path: str | os.PathLike) -> tuple[str, int, int]:
    st = os.stat(path)
    return (os.path.abspath(path), st.st_mtime_ns, st.st_size)


def file_fingerprint(path: str | os.PathLike) -> str:
    """The first :data:`FP_LENGTH` hex digits of a file's SHA-256 (cached per path, mtime and size).

    Args:
        path: the file (e.g. ``tensors/test.pt``).

    Returns:
        16 lowercase hex digits.

    Raises:
        OSError: the file cannot be read.
    """
    key = _cache_key(path)
    if key not in _FILE_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _FILE_CACHE[key] = h.hexdigest()[:FP_LENGTH]
    return _FILE_CACHE[key]


_MODEL_CACHE: dict[tuple[str, int, int], str] = {}


def model_fingerprint(path: str | os.PathLike) -> str:
    """The model file's weight digest (``meta["sha256"]``, first 16 hex digits), read without
    loading the weights into memory (memory-mapped, ``weights_only=True``); the file's own digest
    when its meta has none. Cached per path, mtime and size.

    Args:
        path: a model file written by the train or import step (``models/{regime}.pt``).

    Returns:
        16 lowercase hex digits.

    Raises:
        ProvenanceError: the file is not a readable model file.
    """
    key = _cache_key(path)
    if key not in _MODEL_CACHE:
        import torch

        try:
            ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # noqa: BLE001 (torch raises many kinds on a damaged file)
            raise ProvenanceError(f"{path}: not a readable model file ({type(exc).__name__}); rerun the"
                                  " workflow step that writes it") from None
        meta = ck.get("meta") if isinstance(ck, dict) else None
        digest = str((meta or {}).get("sha256") or "")
        _MODEL_CACHE[key] = digest[:FP_LENGTH] if digest else file_fingerprint(path)
    return _MODEL_CACHE[key]


def _row_digest(fields: list[str], model_fp: str, data_fp: str) -> str:
    text = "\x1f".join([model_fp, data_fp, *fields])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:FP_LENGTH]


def stamp(df: pd.DataFrame, model_fp: str, data_fp: str | list[str] | pd.Series) -> pd.DataFrame:
    """``df`` with the :data:`PROVENANCE_COLUMNS` appended, ready for ``to_csv(index=False)``.

    The row digest is taken over each field's text exactly as pandas writes it, so it does not
    depend on how a reader parses numbers.

    Args:
        df: the per-image result (its columns are kept, in order, unchanged).
        model_fp: the model's fingerprint (:func:`model_fingerprint`).
        data_fp: the tensor file's fingerprint (:func:`file_fingerprint`), one for all rows or one
            per row (e.g. by split).

    Returns:
        A copy of ``df`` with ``model_fp``, ``data_fp`` and ``row_fp``.

    Raises:
        ValueError: ``df`` already has a provenance column.
    """
    clash = [c for c in PROVENANCE_COLUMNS if c in df.columns]
    if clash:
        raise ValueError(f"the result already has column(s) {clash}: they are its provenance")
    data = [str(d) for d in data_fp] if not isinstance(data_fp, str) else [data_fp] * len(df)
    if len(data) != len(df):
        raise ValueError(f"{len(data)} data fingerprints for {len(df)} rows")
    rows = list(csv.reader(io.StringIO(df.to_csv(index=False))))[1:]
    digests = [_row_digest(fields, model_fp, d) for fields, d in zip(rows, data)]
    return df.assign(model_fp=model_fp, data_fp=data, row_fp=digests)


def verify(path: str | os.PathLike, *, model_fp: str | None = None, data_fp: str | None = None,
           data_rows: pd.Series | None = None) -> None:
    """Check a per-image CSV's provenance columns.

    Args:
        path: the CSV as written by the workflow.
        model_fp: the fingerprint of the model the result is reported for, or None (not compared).
        data_fp: the fingerprint of the tensor file the result scores, or None (not compared).
        data_rows: a boolean mask over the file's rows to which ``data_fp`` applies (e.g. the
            sensitivity CSV's test rows); default every row.

    Raises:
        ProvenanceError: the columns are missing (written by an older oncorobust), a row's digest
            does not match its fields (edited after it was written), or a fingerprint differs from
            the model's or the images' (a result left from another model or another preprocessing).
            The message names the file, the first row that differs and what to do.
    """
    path = Path(path)
    redo = ("delete it and rerun the workflow (Snakemake then rebuilds it from the model and the test"
            " images; `--forcerun` the step if its inputs look unchanged)")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, body = (rows[0], rows[1:]) if rows else ([], [])
    missing = [c for c in PROVENANCE_COLUMNS if c not in header]
    if missing:
        raise ProvenanceError(f"{path}: no {'/'.join(missing)} column: the file does not record which model and"
                              f" images made it (written by an older oncorobust, or not by the workflow); {redo}")
    pos = {c: header.index(c) for c in PROVENANCE_COLUMNS}
    keep = [i for i in range(len(header)) if i not in pos.values()]
    mask = list(data_rows) if data_rows is not None else [True] * len(body)
    for n, fields in enumerate(body, start=2):
        if len(fields) != len(header):
            raise ProvenanceError(f"{path}, line {n}: {len(fields)} fields for {len(header)} columns; {redo}")
        m_fp, d_fp, r_fp = (fields[pos[c]] for c in PROVENANCE_COLUMNS)
        if _row_digest([fields[i] for i in keep], m_fp, d_fp) != r_fp:
            raise ProvenanceError(f"{path}, line {n}: the row was changed after the workflow wrote it (its row_fp"
                                  " no longer matches its values): results edited by hand are not used; " + redo)
        if model_fp is not None and m_fp != model_fp:
            raise ProvenanceError(f"{path}, line {n}: made by the model with fingerprint {m_fp}, but the model it is"
                                  f" reported for has {model_fp} (a result left from an earlier or another model);"
                                  f" {redo}")
        if data_fp is not None and mask[n - 2] and d_fp != data_fp:
            raise ProvenanceError(f"{path}, line {n}: made on test tensors with fingerprint {d_fp}, but the tensors it"
                                  f" is reported for have {data_fp} (a result left from other images or another"
                                  f" preprocessing); {redo}")


def model_file_for(path: str | os.PathLike) -> Path | None:
    """The model file a per-image CSV belongs to, from the workflow's layout:
    ``{results}/{ds}/attacks/{regime}/{method}/{name}.csv`` and ``{results}/{ds}/sensitivity/{regime}.csv``
    → ``{results}/{ds}/models/{regime}.pt``; None for any other layout or when that file is absent.

    Args:
        path: the per-image CSV.

    Returns:
        The model file, or None.
    """
    path = Path(path)
    parts = path.parts
    model = None
    if len(parts) >= 5 and parts[-4] == "attacks":
        model = path.parents[3] / "models" / f"{parts[-3]}.pt"
    elif len(parts) >= 3 and parts[-2] == "sensitivity":
        model = path.parents[1] / "models" / f"{path.stem}.pt"
    return model if model is not None and model.is_file() else None
