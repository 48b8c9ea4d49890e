"""The attack kernels: seeds and noise, losses, projection, the signed-gradient iteration and APGD.

Conventions for every function here:

- images are float32 N×C×H×W tensors in [0,1]; labels ``y`` are N int64 class indices;
- ε (``e``) and step sizes (``alpha``) are N×1×1×1 tensors in [0,1] pixel units (ε = 0.002 is
  0.002 of the full intensity range), one value per image;
- the model takes N×C×H×W images and returns N×classes logits, and is already in eval mode
  (:func:`oncorobust.device.eval_mode`; no image then influences another, so an image's result
  does not depend on its batch);
- randomness comes only from per-image seeds (:func:`image_seeds`) through :func:`uniform` /
  :func:`signed_noise`, never from the global RNG.

:func:`sign_iterate` follows torchattacks' PGD/BIM step for step and :func:`apgd` follows
torchattacks' (= AutoAttack's) APGD line for line, including its step-size schedule;
``tests/test_trust.py`` checks both against torchattacks on the same random start.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oncorobust.attacks.checks import check_labels
from oncorobust.errors import AttackError

__all__ = ["Outcome", "apgd", "apgd_start", "check_oscillation", "image_seeds", "loss_grad", "margin",
           "per_image_loss", "pgd_start", "project", "sign_iterate", "sign_iterate_images", "signed_noise",
           "uniform"]


class Outcome(NamedTuple):
    """What an attack kernel returns.

    Attributes:
        images: N×C×H×W float32 adversarial images, each within its ε of the clean image and in
            [0,1].
        flipped: N bools on the images' device: the image's prediction is no longer its label.
    """

    images: torch.Tensor
    flipped: torch.Tensor


def image_seeds(ids: Sequence[str] | None, n: int, seed: int) -> list[int]:
    """One 63-bit seed per image from the run's ``seed`` and the image's ID, so an image's random
    start does not depend on its batch.

    Args:
        ids: the images' sample IDs, or None (the images' indices 0 … n − 1 stand for them).
        n: the number of images.
        seed: the run's seed.

    Returns:
        ``n`` non-negative ints (< 2⁶³).

    Raises:
        AttackError: ``ids`` does not hold ``n`` IDs.
    """
    keys = [str(i) for i in ids] if ids is not None else [f"#{i}" for i in range(n)]
    if len(keys) != n:
        raise AttackError(f"{len(keys)} image IDs for {n} images")
    return [int.from_bytes(hashlib.blake2b(f"{seed}:{k}".encode(), digest_size=8).digest(), "big") >> 1
            for k in keys]


def uniform(shape: torch.Size, seeds: Sequence[int], restart: int, like: torch.Tensor) -> torch.Tensor:
    """U[0,1) noise, image i drawn on the CPU from its own generator seeded by (seed i, restart).

    Args:
        shape: N×… (N×C×H×W for a random start).
        seeds: N per-image seeds (:func:`image_seeds`).
        restart: the draw's index: different indices give independent noise for the same image
            (callers key it by restart, member and bisection round).
        like: the result gets its dtype and device.

    Returns:
        A tensor of ``shape`` in [0,1).
    """
    gen = torch.Generator()
    out = torch.empty(shape)
    for i, s in enumerate(seeds):
        gen.manual_seed((int(s) + 1_000_003 * restart) % (2 ** 63))
        out[i] = torch.rand(shape[1:], generator=gen)
    return out.to(like)


def signed_noise(shape: torch.Size, seeds: Sequence[int], restart: int, like: torch.Tensor) -> torch.Tensor:
    """U[−1,1) noise keyed per image like :func:`uniform`: the random starts.

    Args:
        shape, seeds, restart, like: as :func:`uniform`.

    Returns:
        A tensor of ``shape`` in [−1,1).
    """
    return 2 * uniform(shape, seeds, restart, like) - 1


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The logit margin z_y − max_{j≠y} z_j per image.

    Args:
        logits: N×classes.
        y: N int64 labels.

    Returns:
        N values: negative when the prediction is not ``y``.
    """
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return z_y - other


def per_image_loss(name: str, logits: torch.Tensor, y: torch.Tensor,
                   target: torch.Tensor | None = None) -> torch.Tensor:
    """The per-image loss an attack maximises.

    Args:
        name: ``ce`` (cross-entropy) or ``margin`` (the negative logit margin, −:func:`margin`).
        logits: N×classes.
        y: N int64 labels to push away from.
        target: N target classes, or None. With targets the loss is z_target − z_y (the targeted
            margin of APGD-T; with 2 classes the same as the negative margin) whatever ``name``.

    Returns:
        N loss values.
    """
    if target is not None:
        return (logits.gather(1, target[:, None]) - logits.gather(1, y[:, None])).squeeze(1)
    if name == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    return -margin(logits, y)


def loss_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str,
              target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward and backward pass: the per-image loss, its input gradient and the logits.

    Args:
        model: the classifier (eval mode).
        x: N×C×H×W images (detached here).
        y: N int64 labels.
        loss: ``ce`` or ``margin`` (:func:`per_image_loss`).
        target: N target classes for the targeted margin, or None.

    Returns:
        (loss N, gradient N×C×H×W of the summed loss w.r.t. ``x``, logits N×classes), detached.

    Raises:
        AttackError: a label is not a class of the model.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        check_labels(logits, y)
        value = per_image_loss(loss, logits, y, target)
        (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad.detach(), logits.detach()


def project(adv: torch.Tensor, x: torch.Tensor, e: torch.Tensor | float) -> torch.Tensor:
    """Clip ``adv`` into the L∞ ball of radius ``e`` around ``x``, then into [0,1].

    Args:
        adv: N×C×H×W images.
        x: N×C×H×W centres.
        e: ε in pixel units: N×1×1×1, or a number / 0-d tensor for all images.

    Returns:
        N×C×H×W images.
    """
    return torch.min(torch.max(adv, x - e), x + e).clamp(0, 1)


def _sign_steps(model, x, y, e, steps, alpha, start, early_exit, hist):
    """The step loop of :func:`sign_iterate` and :func:`sign_iterate_images`: (images, mask of
    the images seen flipped during the loop)."""
    adv = x.clone() if start is None else start.clone()
    n = len(x)
    flipped = torch.zeros(n, dtype=torch.bool, device=x.device)
    for _ in range(steps):
        active = (~flipped).nonzero().flatten() if early_exit else torch.arange(n, device=x.device)
        if not len(active):
            break
        loss, grad, logits = loss_grad(model, adv[active], y[active], "ce")
        if hist is not None:
            full = torch.full((n,), float("nan"))
            full[active.cpu()] = loss.cpu()
            hist.append(full)
        if early_exit:
            now = logits.argmax(1) != y[active]
            flipped[active[now]] = True
            active, grad = active[~now], grad[~now]
        step = adv[active] + alpha[active] * grad.sign()
        adv[active] = project(step, x[active], e[active])
    return adv, flipped


def sign_iterate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, e: torch.Tensor, *, steps: int,
                 alpha: torch.Tensor, start: torch.Tensor | None = None, early_exit: bool = False,
                 trace: dict | None = None) -> Outcome:
    """Signed-gradient ascent on the cross-entropy (BIM / PGD as torchattacks does them), scored.

    One forward and backward pass per step; each step moves by ``alpha`` along the gradient's
    sign and projects into the ε-ball and [0,1]. With ``early_exit`` an image whose current
    iterate already flips is left alone (it keeps that first successful iterate), otherwise the
    final iterate is kept (the paper's protocol). A last forward pass scores the final images.

    Args:
        model: the classifier (eval mode).
        x: N×C×H×W clean images in [0,1].
        y: N int64 labels to push away from.
        e: N×1×1×1 ε (pixel units).
        steps: number of steps (≥ 0).
        alpha: N×1×1×1 step sizes (pixel units).
        start: N×C×H×W first iterate (:func:`pgd_start`), or None for the clean images (BIM).
        early_exit: stop attacking an image once it flips.
        trace: if a dict, receives ``loss``: (steps_run + 1)×N per-image cross-entropies (NaN
            where an image was no longer attacked; the last row scores the final images).

    Returns:
        :class:`Outcome`: the images and which of them flipped.
    """
    hist = [] if trace is not None else None
    adv, flipped = _sign_steps(model, x, y, e, steps, alpha, start, early_exit, hist)
    with torch.no_grad():
        logits = model(adv)
    flipped |= logits.argmax(1) != y
    if trace is not None:
        hist.append(per_image_loss("ce", logits, y).cpu())
        trace["loss"] = torch.stack(hist)
    return Outcome(adv, flipped)


def sign_iterate_images(model: nn.Module, x: torch.Tensor, y: torch.Tensor, e: torch.Tensor, *, steps: int,
                        alpha: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
    """The final iterate of :func:`sign_iterate` without early exit, not scored (no last forward
    pass): FGSM (one step of α = ε from the clean image) and single-run BIM / PGD.

    Args:
        model, x, y, e, steps, alpha, start: as :func:`sign_iterate`.

    Returns:
        N×C×H×W float32 adversarial images.
    """
    return _sign_steps(model, x, y, e, steps, alpha, start, False, None)[0]


def check_oscillation(losses: np.ndarray, j: int, k: int, k3: float) -> np.ndarray:
    """AutoAttack's step-size test: fewer than k·k3 of the last k steps increased the loss.

    Like the original, index j − counter − 1 = −1 wraps to the last row (zeros until then).

    Args:
        losses: steps×N per-image losses.
        j: the current step.
        k: the checkpoint interval (steps).
        k3: the fraction ρ.

    Returns:
        N bools: halve this image's step size.
    """
    t = np.zeros(losses.shape[1])
    for c in range(k):
        t += losses[j - c] > losses[j - c - 1]
    return t <= k * k3


def pgd_start(x: torch.Tensor, e: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """PGD's random start x + ε·t, clipped to [0,1].

    Args:
        x: N×C×H×W images in [0,1].
        e: N×1×1×1 ε (pixel units).
        t: N×C×H×W noise in [−1,1] (:func:`signed_noise`).

    Returns:
        N×C×H×W images within ε of ``x``.
    """
    return (x + t * e).clamp(0, 1)


def apgd_start(x: torch.Tensor, e: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """APGD's random start x + ε·t/‖t‖∞, clipped to [0,1].

    Args:
        x: N×C×H×W images in [0,1].
        e: N×1×1×1 ε (pixel units).
        t: N×C×H×W noise in [−1,1] (:func:`signed_noise`).

    Returns:
        N×C×H×W images within ε of ``x``.
    """
    return (x + e * t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)).clamp(0, 1)


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, e: torch.Tensor, *, steps: int, rho: float,
         loss: str, start: torch.Tensor, early_exit: bool = True, trace: dict | None = None,
         target: torch.Tensor | None = None) -> Outcome:
    """APGD, L∞ (Croce & Hein 2020, Alg. 1), as torchattacks.APGD.attack_single_run, per-image ε.

    Args:
        model: the classifier (eval mode).
        x: N×C×H×W clean images in [0,1].
        y: N int64 labels to push away from.
        e: N×1×1×1 ε (pixel units).
        steps: iterations (one forward and backward pass each, plus one for the start).
        rho: the oscillation threshold ρ of the step-size schedule (AutoAttack: 0.75).
        loss: ``ce`` or ``margin`` (:func:`per_image_loss`).
        start: N×C×H×W first iterate (:func:`apgd_start`, or a warm start inside the ball).
        early_exit: stop attacking an image once it flips (it keeps its first successful iterate).
        trace: if a dict, receives ``loss``: (steps_run + 1)×N per-image losses.
        target: N target classes (APGD-T's targeted margin), or None.

    Returns:
        :class:`Outcome`: a flipped image's first (``early_exit``) or last successful iterate,
        otherwise its highest-loss iterate.

    Raises:
        AttackError: a label is not a class of the model.
    """
    n = len(x)
    steps_2, steps_min, size_decr = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    x_adv = start.clone()
    loss_indiv, grad, logits = loss_grad(model, x_adv, y, loss, target)
    flipped = logits.argmax(1) != y
    x_best_adv = x_adv.clone()
    x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), loss_indiv.clone()
    loss_steps = np.zeros((steps, n))
    step_size = 2 * e.expand(n, 1, 1, 1).clone()
    x_adv_old = x_adv.clone()
    k, counter3 = steps_2, 0
    loss_best_last_check = loss_best.clone()
    reduced_last_check = np.ones(n, dtype=bool)
    hist = [loss_indiv.cpu()]
    for i in range(steps):
        act = (~flipped).nonzero().flatten() if early_exit else torch.arange(n, device=x.device)
        if not len(act):
            break
        with torch.no_grad():
            xa, xo, xx, ea = x_adv[act], x_adv_old[act], x[act], e[act]
            grad2 = xa - xo
            x_adv_old[act] = xa
            a = 0.75 if i > 0 else 1.0
            z = project(xa + step_size[act] * torch.sign(grad[act]), xx, ea)
            x_adv[act] = project(xa + (z - xa) * a + grad2 * (1 - a), xx, ea)
        li, g, lg = loss_grad(model, x_adv[act], y[act], loss, None if target is None else target[act])
        grad[act] = g
        now = lg.argmax(1) != y[act]
        first = now & ~flipped[act] if early_exit else now
        x_best_adv[act[first]] = x_adv[act[first]]
        flipped[act] |= now
        li_full = loss_steps[i - 1].copy() if i else loss_best.cpu().numpy().copy()
        li_full[act.cpu().numpy()] = li.cpu().numpy()
        loss_steps[i] = li_full
        hist.append(torch.as_tensor(li_full, dtype=torch.float32))
        better = act[li > loss_best[act]]
        x_best[better], grad_best[better] = x_adv[better], grad[better]
        loss_best[act] = torch.maximum(loss_best[act], li)
        counter3 += 1
        if counter3 == k:
            osc = check_oscillation(loss_steps, i, k, rho)
            no_impr = ~reduced_last_check & (loss_best_last_check.cpu().numpy() >= loss_best.cpu().numpy())
            osc = osc | no_impr
            reduced_last_check = osc.copy()
            loss_best_last_check = loss_best.clone()
            idx = torch.as_tensor(np.where(osc)[0], device=x.device, dtype=torch.long)
            if len(idx):
                step_size[idx] /= 2.0
                x_adv[idx], grad[idx] = x_best[idx], grad_best[idx]
            counter3 = 0
            k = max(k - size_decr, steps_min)
    if trace is not None:
        trace["loss"] = torch.stack(hist)
    return Outcome(torch.where(flipped.view(-1, 1, 1, 1), x_best_adv, x_best), flipped)
