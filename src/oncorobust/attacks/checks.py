"""The checks before and after every attack: inputs, labels, ε and the adversarial result.

Units: images are float32 N×C×H×W in [0,1]; ε is in [0,1] pixel units (ε = 0.002 is 0.002 of
the full intensity range).
"""

from __future__ import annotations

import torch

from oncorobust.errors import AttackError, OncorobustError

__all__ = ["AttackSanityError", "as_eps", "check_adversarial", "check_inputs", "check_labels"]


class AttackSanityError(OncorobustError):
    """An attack produced an image outside the ε-ball or outside [0,1]: a bug, never ignored."""


def as_eps(eps, n: int, like: torch.Tensor) -> torch.Tensor:
    """One ε per image, as an N×1×1×1 float32 tensor on ``like``'s device.

    Args:
        eps: a number, or a tensor or sequence of N numbers (pixel units, [0,1]).
        n: the number of images N.
        like: a tensor on the device the result goes to.

    Returns:
        N×1×1×1 float32 ε.

    Raises:
        AttackError: not one value per image, or a value that is negative or not finite.
    """
    e = torch.as_tensor(eps, dtype=torch.float32).to(like.device)
    e = e.expand(n) if e.ndim == 0 else e
    if e.shape != (n,):
        raise AttackError(f"eps must be a number or one value per image ({n}), got shape {tuple(e.shape)}")
    if not torch.isfinite(e).all() or (e < 0).any():
        raise AttackError(f"eps must be finite and >= 0 (ε in [0,1] pixel units), got {eps}")
    return e.view(-1, 1, 1, 1)


def check_inputs(x: torch.Tensor, y: torch.Tensor) -> None:
    """Check an attack's inputs.

    Args:
        x: the images: must be a float32 N×C×H×W tensor in [0,1] without NaN or inf.
        y: the labels: must be N int64 class indices ≥ 0.

    Raises:
        AttackError: naming what is wrong (dtype, shape, range, non-finite pixels, label count).
    """
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        raise AttackError(f"attacks run in float32, got {getattr(x, 'dtype', type(x))} (convert with"
                          " x.float(); ε = 0.001 is below 1/255)")
    if x.ndim != 4:
        raise AttackError(f"images must be N×C×H×W, got shape {tuple(x.shape)}")
    if x.numel() and not torch.isfinite(x).all():
        raise AttackError("images contain NaN or inf pixels")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise AttackError(f"images must lie in [0,1] (got {x.min().item():g}..{x.max().item():g}); scale"
                          " 0–255 data by 1/255 — normalisation belongs inside the model")
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or len(y) != len(x):
        raise AttackError(f"need one label per image: {len(x)} images, labels of shape {tuple(getattr(y, 'shape', ()))}")
    if y.dtype != torch.int64:
        raise AttackError(f"labels must be class indices (int64), got {y.dtype}")
    if len(y) and y.min() < 0:
        raise AttackError(f"labels must be class indices >= 0, got {int(y.min())}")


def check_labels(logits: torch.Tensor, y: torch.Tensor) -> None:
    """Check that every label is one of the model's classes.

    Args:
        logits: N×classes model outputs.
        y: N int64 labels.

    Raises:
        AttackError: a label ≥ the number of classes.
    """
    if len(y) and int(y.max()) >= logits.shape[1]:
        raise AttackError(f"label {int(y.max())} is not a class of this model ({logits.shape[1]} logits):"
                          " labels must be 0 … classes − 1")


def check_adversarial(x: torch.Tensor, x_adv: torch.Tensor, eps, atol: float = 1e-6) -> None:
    """Check an attack's result: inside the ε-ball around ``x`` and inside [0,1].

    Args:
        x: N×C×H×W clean images.
        x_adv: N×C×H×W adversarial images (float32, finite).
        eps: ε in [0,1] pixel units: a number, or one per image (any shape with N elements).
        atol: tolerance on ‖x_adv − x‖∞ − ε (pixel units).

    Raises:
        AttackSanityError: wrong shape or dtype, NaN/inf, ‖x_adv − x‖∞ > ε + ``atol`` for some
            image (named), or values outside [0,1].
    """
    if x_adv.shape != x.shape or x_adv.dtype != torch.float32:
        raise AttackSanityError(f"adversarial batch has shape {tuple(x_adv.shape)} / {x_adv.dtype},"
                                f" expected {tuple(x.shape)} / float32")
    if not x.numel():
        return
    if not torch.isfinite(x_adv).all():
        raise AttackSanityError("adversarial images contain NaN or inf")
    linf = (x_adv - x.to(x_adv.device)).flatten(1).abs().amax(1)
    e = torch.as_tensor(eps, dtype=torch.float32, device=linf.device).flatten()
    over = linf > e + atol
    if over.any():
        j = int(over.nonzero()[0])
        raise AttackSanityError(f"‖x_adv − x‖∞ = {linf[j].item():.3g} exceeds ε = "
                                f"{e[j if len(e) > 1 else 0].item():.3g} (image {j})")
    if x_adv.min().item() < 0 or x_adv.max().item() > 1:
        raise AttackSanityError("adversarial images leave [0,1]")
