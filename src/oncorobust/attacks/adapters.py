"""Adapters to torchattacks' FAB and Square: per-image ε and seeds on top of a global-RNG library.

torchattacks takes one scalar ε per call and draws from the global RNG for the whole batch. These
adapters call it once per distinct ε, seed it from an image seed and restore the global RNG state
afterwards, so nothing else in the process sees a different random stream. ``torchattacks`` is
imported inside the functions: it pulls in scipy (≈ 1 s), and only these two methods need it.

Images are float32 N×C×H×W in [0,1]; ε in [0,1] pixel units.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from oncorobust.attacks.checks import check_labels
from oncorobust.attacks.kernels import Outcome, project

__all__ = ["fab_min_norm", "run_fab", "run_square"]


def _per_eps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, e: torch.Tensor, seeds: Sequence[int],
             make: Callable[[float, int], object]) -> torch.Tensor:
    """A torchattacks attack kept inside each image's ε-ball: one call per distinct ε, seeded from
    the first seed of that ε's images with the global RNG state restored afterwards (torchattacks
    draws from the global RNG for the whole batch, so unlike the other methods the result can
    depend on the batch). ``make(eps, seed)`` builds the attack; where it fails it returns the
    clean image, and only successes inside the ball are kept."""
    with torch.no_grad():
        check_labels(model(x[:1]), y)
    out = x.clone()
    devices = [x.device] if x.device.type == "cuda" else []
    for value in torch.unique(e.flatten()):
        idx = (e.flatten() == value).nonzero().flatten()
        s = int(seeds[int(idx[0])]) % (2 ** 31)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(s)
            adv = make(float(value), s).forward(x[idx], y[idx])
        out[idx] = project(adv.to(x), x[idx], value)
    return out


def run_fab(model: nn.Module, x: torch.Tensor, y: torch.Tensor, e: torch.Tensor, p: dict,
            seeds: Sequence[int], **_) -> torch.Tensor:
    """torchattacks' FAB (L∞), kept where its perturbation fits in each image's ε.

    Called with ``n_classes=2`` and ``multi_targeted``: it then targets only each image's runner-up
    class (with 2 classes, untargeted FAB).

    Args:
        model: the classifier (eval mode).
        x: N×C×H×W clean images in [0,1].
        y: N int64 labels to push away from.
        e: N×1×1×1 ε (pixel units).
        p: ``steps, restarts, alpha_max, eta, beta`` (:func:`oncorobust.attacks.methods.method_params`).
        seeds: N per-image seeds.

    Returns:
        N×C×H×W float32 images within their ε of ``x`` and in [0,1].

    Raises:
        AttackError: a label is not a class of the model.
    """
    import torchattacks  # imported here: it pulls in scipy (≈ 1 s), and only FAB and Square need it

    return _per_eps(model, x, y, e, seeds, lambda eps, s: torchattacks.FAB(
        model, norm="Linf", eps=eps, steps=int(p["steps"]), n_restarts=int(p["restarts"]),
        alpha_max=float(p["alpha_max"]), eta=float(p["eta"]), beta=float(p["beta"]), seed=s,
        multi_targeted=True, n_classes=2))


def run_square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, e: torch.Tensor, p: dict,
               seeds: Sequence[int], **_) -> torch.Tensor:
    """torchattacks' Square (L∞, margin loss), gradient-free; it stops querying an image once it flips.

    Args:
        model: the classifier (eval mode).
        x: N×C×H×W clean images in [0,1].
        y: N int64 labels to push away from.
        e: N×1×1×1 ε (pixel units).
        p: ``queries, restarts, p_init`` (:func:`oncorobust.attacks.methods.method_params`).
        seeds: N per-image seeds.

    Returns:
        N×C×H×W float32 images within their ε of ``x`` and in [0,1].

    Raises:
        AttackError: a label is not a class of the model.
    """
    import torchattacks  # imported here: it pulls in scipy (≈ 1 s)

    return _per_eps(model, x, y, e, seeds, lambda eps, s: torchattacks.Square(
        model, norm="Linf", eps=eps, n_queries=int(p["queries"]), n_restarts=int(p["restarts"]),
        p_init=float(p["p_init"]), loss="margin", seed=s))


def fab_min_norm(model: nn.Module, x: torch.Tensor, pred: torch.Tensor, eps_max: float, *, steps: int,
                 seed: int) -> Outcome:
    """torchattacks' FAB (L∞) as a minimum-norm attack towards each image's runner-up class.

    Its smallest-norm flip per image, with no ε cap (``eps_max`` only scales its random restarts).
    Targeting the runner-up class (FAB-T with ``target_class=2``) needs one gradient per step
    instead of one per class; with 2 classes it is exactly untargeted FAB. Seeded from ``seed``
    with the global RNG state restored afterwards.

    Args:
        model: the classifier (eval mode).
        x: N×C×H×W clean images in [0,1].
        pred: N int64 labels to push away from (the predictions).
        eps_max: the search's largest ε (pixel units).
        steps: FAB's iterations.
        seed: the seed (reduced mod 2³¹).

    Returns:
        :class:`~oncorobust.attacks.kernels.Outcome`: the images (clipped to [0,1], not to a
        ball) and which of them flipped.
    """
    import torchattacks  # imported here: it pulls in scipy (≈ 1 s)

    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed % (2 ** 31))
        with torch.no_grad():
            classes = model(x[:1]).shape[1]
        fab = torchattacks.FAB(model, norm="Linf", eps=float(eps_max), steps=steps, n_restarts=1,
                               seed=seed % (2 ** 31), multi_targeted=True, n_classes=classes)
        fab.target_class = 2  # the runner-up class of each image
        adv = fab.attack_single_run_targeted(x, pred).to(x).clamp(0, 1)
    with torch.no_grad():
        ok = model(adv).argmax(1) != pred
    return Outcome(adv, ok)
