"""Where the model runs. Its own module so that the jobs which only need a device (attacks, health
checks, sensitivity) do not import the training loop: an edit of ``train.py`` then replans the
training jobs and what follows from their outputs, not every attack job's params
(``oncorobust.pipeline.codehash`` hashes the modules a script imports)."""

from __future__ import annotations

import torch

from oncorobust.errors import OncorobustError


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device of the config key ``device``.

    Args:
        device: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The ``torch.device``.

    Raises:
        OncorobustError: CUDA asked for but not available here.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise OncorobustError(f"device: {device} but CUDA is not available here; use auto or cpu")
    return torch.device(device)
