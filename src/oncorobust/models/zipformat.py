"""File-format sniffing that needs no torch import (the command line uses it before loading torch):
TorchScript archives and ``torch.export`` programs (``.pt2``)."""

from __future__ import annotations

import zipfile
from pathlib import Path


def is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding ``constants.pkl`` or ``code/``),
    as opposed to a pickled state dict; False for anything unreadable.

    Args:
        path: the file.

    Returns:
        True for a TorchScript archive.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def is_exported_program(path: str | Path) -> bool:
    """Whether ``path`` is a ``torch.export`` program saved with ``torch.export.save`` (a ``.pt2``
    zip holding ``archive_format`` and ``models/*.json``); False for anything unreadable.

    Args:
        path: the file.

    Returns:
        True for a ``torch.export`` program.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/archive_format") for n in names) and any("/models/" in n and n.endswith(".json")
                                                                     for n in names)
