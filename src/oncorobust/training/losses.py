"""TRADES and MART training losses, with the inner maximisation of the authors' published code.

- ``adv_trades`` — Zhang et al. 2019, "Theoretically principled trade-off between robustness and
  accuracy" (ICML); code: github.com/yaodongyu/TRADES, ``trades.py``, ``trades_loss`` (l_inf).
  Inner: from ``x + 0.001·randn``, ``iters`` sign steps of size ``step`` that maximise
  KL(softmax(f(x)) ‖ softmax(f(x_adv))) (summed), each followed by projection onto the ε-ball
  around x and onto [0,1]. Outer: CE(f(x), y) + β · KL(softmax(f(x)) ‖ softmax(f(x_adv))) / N.
- ``adv_mart`` — Wang et al. 2020, "Improving adversarial robustness requires revisiting
  misclassified examples" (ICLR); code: github.com/YisenWang/MART, ``mart.py``, ``mart_loss``.
  Inner: the same loop on CE(f(x_adv), y). Outer: the boosted CE on the adversarial logits,
  −log p_y(x_adv) − log(1.0001 − max_{k≠y} p_k(x_adv) + 1e-12), plus β · mean over images of
  KL(p(x) ‖ p(x_adv)) · (1.0000001 − p_y(x)).

Both craft ``x_adv`` with the model in **eval** mode (``model.eval()`` in the authors' code; here
the mode the caller had is restored afterwards, the authors call ``model.train()``), and
compute the outer loss in the caller's mode (train mode inside the training loop). The inner
loop takes gradients with respect to the input only (``torch.autograd.grad``), so no parameter
gradient accumulates; the caller zeroes gradients and calls ``backward`` on the returned loss, as
the authors' training scripts do around ``trades_loss``/``mart_loss``.

Numerical constants (0.001, 1.0001, 1e-12, 1.0000001) are the authors'. Two deliberate
differences, neither of which changes the loss value or its gradient:

- TRADES' inner loop evaluates ``model(x_natural)`` (eval mode) again in every iteration; it is
  deterministic in eval mode and the gradient with respect to ``x_adv`` does not flow through it,
  so it is computed once here (``iters`` fewer forward passes).
- TRADES' outer loss runs the clean batch through the model twice in train mode (once for the
  CE term, once as the KL target); here the first forward is reused. Loss and gradients are the
  same; BatchNorm running statistics receive one update from the clean batch instead of two
  (dropout would draw one mask instead of two). MART's outer loss already uses one clean forward.

Randomness: the initial ``0.001·randn`` noise comes from an explicit ``torch.Generator`` (or a
seed, or is passed in as ``noise``), never the global RNG, so a step is reproducible and a test
can feed the authors' code the same tensor.

Shapes: x is N×C×H×W float in [0,1]; y is N (int64 class indices); ε and step are in [0,1]
pixel units (the l_inf radius and the sign-step size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from oncorobust.device import eval_mode
from oncorobust.errors import OncorobustError

NOISE_SCALE = 0.001  # the authors' initial perturbation: 0.001 · N(0, 1) per pixel
_TOL = 1e-6  # float32 slack for the ‖x_adv − x‖∞ ≤ ε check


class LossError(OncorobustError, ValueError):
    """A TRADES/MART loss was called with unusable arguments (the message names which), or the
    crafted images left the ε-ball or [0,1]."""


def initial_noise(x: torch.Tensor, *, generator: torch.Generator | None = None,
                  seed: int | None = None) -> torch.Tensor:
    """The authors' starting perturbation ``0.001 · randn(x.shape)``, drawn from ``generator``.

    Args:
        x: the clean batch, N×C×H×W (only its shape, dtype and device are used).
        generator: the source of randomness (its device decides where the draw happens; a CPU
            generator gives the same numbers on every device).
        seed: instead of ``generator``: a fresh CPU generator seeded with it.
    Returns:
        Tensor like ``x``: 0.001 × standard normal draws (pixel units).
    Raises:
        LossError: neither or both of ``generator`` and ``seed`` were given.
    """
    if (generator is None) == (seed is None):
        raise LossError("give exactly one of generator= and seed= for the initial noise")
    if generator is None:
        generator = torch.Generator().manual_seed(int(seed))
    z = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return NOISE_SCALE * z.to(x.device)


def _check(x: torch.Tensor, y: torch.Tensor | None, eps: float, step: float, iters: int,
           beta: float | None = None) -> None:
    if x.dim() != 4 or not x.is_floating_point():
        raise LossError(f"x must be a float N×C×H×W batch, got {tuple(x.shape)} {x.dtype}")
    if y is not None and (y.dim() != 1 or len(y) != len(x)):
        raise LossError(f"y must hold one label per image ({len(x)}), got shape {tuple(y.shape)}")
    if not 0 <= eps <= 1:
        raise LossError(f"eps = {eps}: the l_inf radius must be in [0, 1] pixel units")
    if not step > 0:
        raise LossError(f"step = {step}: the sign-step size must be > 0 (pixel units)")
    if int(iters) != iters or iters < 0:
        raise LossError(f"iters = {iters}: the number of inner steps must be an integer ≥ 0")
    if beta is not None and not beta >= 0:
        raise LossError(f"beta = {beta}: the robustness weight must be ≥ 0")


def _start(x: torch.Tensor, generator, seed, noise) -> torch.Tensor:
    if noise is None:
        noise = initial_noise(x, generator=generator, seed=seed)
    elif generator is not None or seed is not None:
        raise LossError("give noise= or generator=/seed=, not both")
    elif noise.shape != x.shape:
        raise LossError(f"noise has shape {tuple(noise.shape)}, x has {tuple(x.shape)}")
    return x.detach() + noise.to(x).detach()


def _sanity(x_adv: torch.Tensor, x: torch.Tensor, eps: float, iters: int, name: str) -> None:
    if not torch.isfinite(x_adv).all():
        raise LossError(f"{name}: the model returned non-finite gradients or logits while crafting")
    if iters > 0 and (x_adv - x).abs().max().item() > eps + _TOL:
        raise LossError(f"{name}: crafted images left the ε-ball (ε = {eps})")
    if x_adv.min().item() < 0 or x_adv.max().item() > 1:
        raise LossError(f"{name}: crafted images left [0, 1]")


def _sign_ascent(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, objective: Callable,
                 *, eps: float, step: float, iters: int) -> torch.Tensor:
    """The authors' l_inf loop: ``iters`` sign steps on ``objective(logits)``, each projected
    onto the ε-ball around ``x`` and onto [0,1]; then the final [0,1] clamp of their code."""
    for _ in range(int(iters)):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss = objective(model(x_adv))
        grad = torch.autograd.grad(loss, [x_adv])[0]
        x_adv = x_adv.detach() + step * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    return torch.clamp(x_adv, 0.0, 1.0).detach()


def trades_adversarial(model: nn.Module, x: torch.Tensor, *, eps: float, step: float, iters: int,
                       generator: torch.Generator | None = None, seed: int | None = None,
                       noise: torch.Tensor | None = None) -> torch.Tensor:
    """TRADES' inner maximisation: images in the ε-ball that maximise the KL divergence from the
    model's clean prediction (no labels needed). Runs in eval mode; the model's mode is restored.

    Args:
        model: logits = model(images); images N×C×H×W in [0,1].
        x: clean batch, N×C×H×W float in [0,1].
        eps: l_inf radius (pixel units, [0,1]).
        step: size of each sign step (pixel units).
        iters: number of sign steps (the authors' ``perturb_steps``).
        generator, seed, noise: exactly one: the source of the starting noise
            (:func:`initial_noise`), or the N×C×H×W noise itself (added to ``x`` as is).
    Returns:
        x_adv, N×C×H×W, detached, ‖x_adv − x‖∞ ≤ ε (when iters ≥ 1) and in [0,1].
    Raises:
        LossError: bad arguments, or the crafted images fail the ε-ball/[0,1]/finite check.
    """
    _check(x, None, eps, step, iters)
    x = x.detach()
    x_adv = _start(x, generator, seed, noise)
    with eval_mode(model):
        with torch.no_grad():
            target = F.softmax(model(x), dim=1)  # eval mode: identical in every iteration

        def kl_sum(logits):  # nn.KLDivLoss(size_average=False), as the authors
            return F.kl_div(F.log_softmax(logits, dim=1), target, reduction="sum")

        x_adv = _sign_ascent(model, x, x_adv, kl_sum, eps=eps, step=step, iters=iters)
    _sanity(x_adv, x, eps, iters, "TRADES")
    return x_adv


def mart_adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step: float,
                     iters: int, generator: torch.Generator | None = None, seed: int | None = None,
                     noise: torch.Tensor | None = None) -> torch.Tensor:
    """MART's inner maximisation: PGD on the cross-entropy from ``x + noise`` (eval mode; the
    model's mode is restored).

    Args:
        model: logits = model(images); images N×C×H×W in [0,1].
        x: clean batch, N×C×H×W float in [0,1].
        y: true labels, N (int64).
        eps, step, iters, generator, seed, noise: as :func:`trades_adversarial`.
    Returns:
        x_adv, N×C×H×W, detached, ‖x_adv − x‖∞ ≤ ε (when iters ≥ 1) and in [0,1].
    Raises:
        LossError: bad arguments, or the crafted images fail the ε-ball/[0,1]/finite check.
    """
    _check(x, y, eps, step, iters)
    x = x.detach()
    x_adv = _start(x, generator, seed, noise)
    with eval_mode(model):
        x_adv = _sign_ascent(model, x, x_adv, lambda logits: F.cross_entropy(logits, y),
                             eps=eps, step=step, iters=iters)
    _sanity(x_adv, x, eps, iters, "MART")
    return x_adv


def trades_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step: float,
                iters: int = 10, beta: float = 6.0, generator: torch.Generator | None = None,
                seed: int | None = None, noise: torch.Tensor | None = None,
                return_adv: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The TRADES loss of one training batch (Zhang et al. 2019), to back-propagate.

    ``CE(f(x), y) + beta · KL(softmax(f(x)) ‖ softmax(f(x_adv)))`` with the KL summed over
    classes and averaged over the N images (``batchmean``), x_adv from
    :func:`trades_adversarial`. The outer forward passes run in the caller's mode (call it with
    the model in train mode inside the training loop); the gradient flows through both terms,
    the clean prediction used as the KL target included, as in the authors' code.

    Args:
        model: logits = model(images).
        x: clean batch, N×C×H×W float in [0,1].
        y: labels, N (int64).
        eps: l_inf radius (pixel units, [0,1]).
        step: inner sign-step size (pixel units); the authors use 0.007 for ε = 0.031 (CIFAR-10).
        iters: inner steps (authors: 10 on CIFAR-10).
        beta: weight of the robustness term (1/λ); 6 in the paper's CIFAR-10 setting.
        generator, seed, noise: exactly one: the source of the 0.001·randn starting noise, or
            that noise (N×C×H×W) itself.
        return_adv: also return the crafted images.
    Returns:
        The scalar loss (with grad), or (loss, x_adv) when ``return_adv``.
    Raises:
        LossError: bad arguments, or the crafted images fail the ε-ball/[0,1]/finite check.
    """
    _check(x, y, eps, step, iters, beta)
    x_adv = trades_adversarial(model, x, eps=eps, step=step, iters=iters, generator=generator,
                               seed=seed, noise=noise)
    logits = model(x)
    logits_adv = model(x_adv)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / len(x)) * F.kl_div(F.log_softmax(logits_adv, dim=1),
                                            F.softmax(logits, dim=1), reduction="sum")
    loss = loss_natural + beta * loss_robust
    return (loss, x_adv) if return_adv else loss


def mart_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step: float,
              iters: int = 10, beta: float = 5.0, generator: torch.Generator | None = None,
              seed: int | None = None, noise: torch.Tensor | None = None,
              return_adv: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The MART loss of one training batch (Wang et al. 2020), to back-propagate.

    With p = softmax(f(x)), q = softmax(f(x_adv)) (x_adv from :func:`mart_adversarial`) and
    k* the most likely wrong class under q (the authors' ``argsort`` rule):
    ``mean_i[−log q_y − log(1.0001 − q_k* + 1e-12)]
    + beta · mean_i[Σ_k p_k (log(p_k + 1e-12) − log(q_k + 1e-12)) · (1.0000001 − p_y)]``,
    the outer passes in the caller's mode; gradients flow through every term, (1 − p_y)
    included, as in the authors' code.

    Args:
        model, x, y, eps, step, iters, generator, seed, noise, return_adv: as :func:`trades_loss`.
        beta: weight of the misclassification-aware KL term; 5 in the paper's CIFAR-10 setting
            (the authors' ``train_wideresnet.py`` defaults to 6).
    Returns:
        The scalar loss (with grad), or (loss, x_adv) when ``return_adv``.
    Raises:
        LossError: bad arguments, or the crafted images fail the ε-ball/[0,1]/finite check.
    """
    _check(x, y, eps, step, iters, beta)
    x_adv = mart_adversarial(model, x, y, eps=eps, step=step, iters=iters, generator=generator,
                             seed=seed, noise=noise)
    logits = model(x)
    logits_adv = model(x_adv)
    adv_probs = F.softmax(logits_adv, dim=1)
    top2 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
    nat_probs = F.softmax(logits, dim=1)
    true_probs = torch.gather(nat_probs, 1, y.unsqueeze(1).long()).squeeze(1)
    kl = F.kl_div(torch.log(adv_probs + 1e-12), nat_probs, reduction="none").sum(dim=1)
    loss_robust = (1.0 / len(x)) * torch.sum(kl * (1.0000001 - true_probs))
    loss = loss_adv + float(beta) * loss_robust
    return (loss, x_adv) if return_adv else loss


@dataclass(frozen=True)
class RegimeLoss:
    """A training regime defined by a loss (registry entry).

    ``image_passes(iters)``: forward+backward passes per training image (the outer step
    back-propagates through both the clean and the adversarial copy of each image), not counting
    the one forward-only clean pass that gives TRADES its KL target.
    """

    name: str
    loss: Callable[..., torch.Tensor]
    adversarial: Callable[..., torch.Tensor]
    defaults: Mapping[str, float] = field(default_factory=dict)
    paper: str = ""
    code: str = ""

    def image_passes(self, iters: int) -> int:
        """Forward+backward passes per training image (the TRADES KL target's forward-only pass not counted).

        Args:
            iters: inner sign steps.
        Returns:
            ``iters`` + 2 (the inner steps, then the clean and the adversarial copy in the outer step).
        """
        return int(iters) + 2


REGIME_LOSSES: dict[str, RegimeLoss] = {
    "adv_trades": RegimeLoss(
        "adv_trades", trades_loss, trades_adversarial, {"beta": 6.0},
        paper="Zhang et al. 2019, ICML (TRADES); beta = 1/lambda = 6 in the CIFAR-10 setting",
        code="https://github.com/yaodongyu/TRADES/blob/master/trades.py"),
    "adv_mart": RegimeLoss(
        "adv_mart", mart_loss, mart_adversarial, {"beta": 5.0},
        paper="Wang et al. 2020, ICLR (MART); lambda = 5 in the CIFAR-10 setting",
        code="https://github.com/YisenWang/MART/blob/master/mart.py"),
}
