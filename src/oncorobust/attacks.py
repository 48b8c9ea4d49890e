"""L∞ attacks through torchattacks, with the paper's parameters made explicit and every result
sanity-checked.

Everything works in float32 in [0,1] pixel space (ε = 0.002 means 0.002 of the full intensity
range, about half a grey level of 8-bit data) with the model in eval mode; the model's mode is
restored afterwards. Inputs and outputs are N×C×H×W.

Parameters follow the paper's Table S1: FGSM; BIM with 10 steps of α = ε/10; PGD with 10 steps of
α = ε/4. torchattacks' own BIM default (``steps=0`` → ``int(min(255ε + 4, 1.25·255ε))``) would give
*zero* steps for ε < 0.004, the paper's range, so steps and α are always passed explicitly.
"""

from __future__ import annotations

import torch
import torchattacks
from torch import nn

from .errors import OncorobustError

METHODS = ("fgsm", "bim", "pgd")
#: Table S1 defaults: steps and α as a fraction of ε.
DEFAULTS = {"bim": {"steps": 10, "alpha_ratio": 0.1}, "pgd": {"steps": 10, "alpha_ratio": 0.25}}


class AttackSanityError(OncorobustError):
    """An attack produced an image outside the ε-ball or outside [0,1]: a bug, never ignored."""


def build(model: nn.Module, method: str, eps: float, *, steps: int | None = None,
          alpha: float | None = None, random_start: bool | None = None) -> torchattacks.Attack:
    """The torchattacks object for ``method`` with every parameter explicit."""
    if method == "fgsm":
        return torchattacks.FGSM(model, eps=eps)
    if method in ("bim", "pgd"):
        d = DEFAULTS[method]
        steps = d["steps"] if steps is None else int(steps)
        if steps < 1:
            raise ValueError(f"{method}: steps must be >= 1, got {steps}")
        alpha = eps * d["alpha_ratio"] if alpha is None else float(alpha)
        if method == "bim":
            return torchattacks.BIM(model, eps=eps, alpha=alpha, steps=steps)
        return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps,
                                random_start=True if random_start is None else bool(random_start))
    raise ValueError(f"unknown attack method {method!r}; choose from {METHODS}")


def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str, eps: float, *,
           steps: int | None = None, alpha: float | None = None, random_start: bool | None = None,
           restarts: int = 1, seed: int = 0) -> torch.Tensor:
    """Adversarial images for ``x`` (N×C×H×W, float32 in [0,1]) pushed away from labels ``y`` (N).

    ``eps`` is the L∞ budget in [0,1] pixel units. With ``restarts`` > 1 (PGD with random start),
    each image keeps the first restart that changes its prediction away from ``y``, or else the
    restart with the highest loss (the worst case). Randomness comes from ``seed`` only (the global
    RNG state is left untouched). The result is checked: ‖x_adv − x‖∞ ≤ ε and x_adv in [0,1].
    """
    if x.dtype != torch.float32:
        raise TypeError(f"attacks run in float32, got {x.dtype} (ε = 0.001 is below 1/255)")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError("images must lie in [0,1]; normalisation belongs inside the model")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    was_training = model.training
    model.eval()
    try:
        atk = build(model, method, eps, steps=steps, alpha=alpha, random_start=random_start)
        best, best_loss = None, None
        devices = [x.device] if x.device.type == "cuda" else []
        for r in range(max(1, int(restarts))):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed * 1000 + r)
                adv = atk(x, y)
            if restarts <= 1:
                best = adv
                break
            with torch.no_grad():
                logits = model(adv)
                loss = nn.functional.cross_entropy(logits, y.to(logits.device), reduction="none")
                fooled = logits.argmax(1) != y.to(logits.device)
                loss = torch.where(fooled, torch.full_like(loss, float("inf")), loss)
            if best is None:
                best, best_loss = adv, loss
            else:
                better = loss > best_loss
                best = torch.where(better[:, None, None, None], adv, best)
                best_loss = torch.maximum(loss, best_loss)
            if torch.isinf(best_loss).all():
                break
    finally:
        model.train(was_training)
    check_adversarial(x, best, eps)
    return best


def check_adversarial(x: torch.Tensor, x_adv: torch.Tensor, eps: float, atol: float = 1e-6) -> None:
    """Raise AttackSanityError unless ‖x_adv − x‖∞ ≤ ε + atol and x_adv lies in [0,1]."""
    if x_adv.shape != x.shape or x_adv.dtype != torch.float32:
        raise AttackSanityError(f"adversarial batch has shape {tuple(x_adv.shape)} / {x_adv.dtype},"
                                f" expected {tuple(x.shape)} / float32")
    if not x.numel():
        return
    linf = (x_adv - x.to(x_adv.device)).abs().amax().item()
    if linf > eps + atol:
        raise AttackSanityError(f"‖x_adv − x‖∞ = {linf:.3g} exceeds ε = {eps:.3g}")
    if x_adv.min().item() < 0 or x_adv.max().item() > 1:
        raise AttackSanityError("adversarial images leave [0,1]")
