"""Where and how the model runs: the device, strict float32 and eval mode.

Its own module so that the jobs which only need a device (attacks, health checks, sensitivity) do
not import the training loop: an edit of ``train.py`` then replans the training jobs and what
follows from their outputs, not every attack job's params (``oncorobust.pipeline.codehash``
hashes the modules a script imports).

- :func:`resolve_device`: the config key ``device`` as a ``torch.device``.
- :func:`strict_fp32`: IEEE float32 convolutions and matrix products (no TF32) inside a block;
  every attack, the sensitivity search and the health checks run inside it.
- :func:`eval_mode`: the model in eval mode inside a block, every submodule's own mode restored
  after it (the one place that switches a model's mode around an attack or a check).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from oncorobust.errors import OncorobustError

__all__ = ["eval_mode", "resolve_device", "strict_fp32"]


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


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Float32 convolutions and matrix products in IEEE precision (no TF32) inside the block.

    The previous setting is restored after the block, also when it raises; usable as a decorator
    (``@strict_fp32()``). Without CUDA it changes nothing that the CPU uses. torch ≥ 2.9 has
    per-backend ``fp32_precision`` flags, older releases ``allow_tf32`` (mixing the two APIs is an
    error in torch ≥ 2.9, so only one is set).

    Yields:
        None.
    """
    conv = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
    if conv is not None:
        flags = [(torch.backends.cudnn.conv, "fp32_precision"), (torch.backends.cuda.matmul, "fp32_precision")]
        value = "ieee"
    else:  # torch < 2.9
        flags = [(torch.backends.cudnn, "allow_tf32"), (torch.backends.cuda.matmul, "allow_tf32")]
        value = False
    old = [getattr(obj, name) for obj, name in flags]
    try:
        for obj, name in flags:
            setattr(obj, name, value)
        yield
    finally:
        for (obj, name), v in zip(flags, old):
            setattr(obj, name, v)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; on exit every submodule gets back its own mode.

    Restoring ``model.train(was)`` would set every submodule to the outer model's mode; this
    restores each module's own ``training`` flag, so e.g. a frozen BatchNorm kept in eval inside a
    model in train mode comes back in eval. The flags are restored also when the block raises.
    Modules added to the model inside the block are left as they are.

    Args:
        model: any ``nn.Module`` (a classifier, or a wrapper such as
            :class:`~oncorobust.progress.Monitored`).

    Yields:
        ``model`` itself, in eval mode.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
