"""Source adapters: one module per on-disk format, each turning it into lesion records."""

from __future__ import annotations

from pathlib import Path

from oncorobust.data.sources import arrays, cbis_ddsm, folder, lidc, manifest
from oncorobust.data.sources.common import MANIFEST_COLUMNS, IngestResult

ADAPTERS = {
    "lidc": lidc.ingest,
    "cbis_ddsm": cbis_ddsm.ingest,
    "manifest": manifest.ingest,
    "folder": folder.ingest,
    "mnist": arrays.ingest,
    "cifar10": arrays.ingest,
    "digits": arrays.ingest,
}
ARRAY_FORMATS = {"mnist", "cifar10", "digits"}


def source_root(cfg: dict) -> Path:
    """The folder that manifest ``source`` paths of a file-based source are relative to.

    Args:
        cfg: the dataset's source config (``format``; ``root``; ``manifest`` for the manifest format).

    Returns:
        ``root``; for the manifest format ``root`` if given, else the manifest file's folder.
    """
    if cfg["format"] == "manifest":
        return Path(cfg.get("root") or Path(cfg["manifest"]).parent)
    return Path(cfg["root"])


__all__ = ["ADAPTERS", "ARRAY_FORMATS", "IngestResult", "MANIFEST_COLUMNS", "source_root"]
