"""File-format sniffing that needs no torch import (the command line uses it before loading torch)."""

from __future__ import annotations

import zipfile
from pathlib import Path


def is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding ``constants.pkl`` or ``code/``),
    as opposed to a pickled state dict; False for anything unreadable."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
