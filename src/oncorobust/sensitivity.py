"""Per-image adversarial sensitivity: the smallest ε at which an attack changes the prediction.

The paper ran a full PGD (10 steps, 20 restarts) for each of 18–32 ε values per image. Here a
batched bisection gives every image its own ε (an N×1×1×1 tensor), so one attack call advances
every image's search at once: ⌈log2(eps_max / tol)⌉ + 1 attacks instead of one per grid value.

The per-image-ε PGD is hand-written (15 lines) because torchattacks, like every attack library,
takes one scalar ε per call; it follows torchattacks' PGD step for step (uniform random start in
the ε-ball, α = ratio·ε, sign-gradient ascent on the cross-entropy, projection, clip to [0,1]).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attacks import check_adversarial


def pgd_per_sample(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, *,
                   steps: int = 10, alpha_ratio: float = 0.25, random_start: bool = True,
                   generator: torch.Generator | None = None, init: torch.Tensor | None = None) -> torch.Tensor:
    """L∞ PGD with a per-image budget ``eps`` (N,) in [0,1] pixel units; x is N×C×H×W in [0,1].

    ``init`` (optional, N×C×H×W): a perturbation to start from, projected into each ε-ball
    (instead of a random start)."""
    e = eps.to(x).view(-1, 1, 1, 1)
    adv = x.clone()
    if init is not None:
        adv = (x + init.clamp(-e, e)).clamp(0, 1)
    elif random_start:
        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x)
        adv = (x + (2 * noise - 1) * e).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + alpha_ratio * e * grad.sign()
        adv = (x + (adv - x).clamp(-e, e)).clamp(0, 1).detach()
    return adv


def _flipped(model, x, pred, eps, restarts, gen, skip_found=True, init=None, **kw) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(flipped mask, adversarial images, gradient evaluations): whether any of ``restarts`` PGD
    runs changes the prediction. ``skip_found``: later restarts attack only unflipped images
    (the paper's ART runs attacked every image with every restart: ``skip_found=False``).
    ``init``: the first run starts from this perturbation (warm start), the others at random."""
    hit = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    best = x.clone()
    evals = 0
    for r in range(max(1, restarts)):
        todo = ~hit if skip_found else torch.ones_like(hit)
        if not todo.any():
            break
        evals += int(todo.sum()) * kw.get("steps", 10)
        start = init[todo] if (init is not None and r == 0) else None
        adv = pgd_per_sample(model, x[todo], pred[todo], eps[todo], generator=gen, init=start, **kw)
        with torch.no_grad():
            ok = model(adv).argmax(1) != pred[todo]
        idx = todo.nonzero().flatten()[ok]
        new = ~hit[idx]
        hit[idx] = True
        best[idx[new]] = adv[ok][new]
    return hit, best, evals


def min_flip_eps(model: nn.Module, x: torch.Tensor, *, eps_max: float, tol: float, method: str = "pgd",
                 steps: int = 10, restarts: int = 1, alpha_ratio: float = 0.25, random_start: bool = True,
                 seed: int = 0, batch_size: int = 256, warm_start: bool = True,
                 stats: dict | None = None) -> torch.Tensor:
    """For each image of x (N×C×H×W in [0,1]) the smallest ε (±``tol``, pixel units) at which PGD
    changes the model's prediction away from its clean prediction; ``inf`` if not at ``eps_max``.

    Bisection keeps, per image, ``lo`` (no flip found) and ``hi`` (a flip found; starts at
    ``eps_max``), halving ``hi − lo`` with one batched attack per round until it is ≤ ``tol``.
    The returned value is ``hi``: an ε at which a flip **was** found. After the search the stored
    adversarial image of each returned ε is re-scored (its prediction differs, ‖δ‖∞ ≤ ε), so every
    finite answer is confirmed.

    PGD success is not strictly monotone in ε (a random start can miss at ε₂ > ε₁ where it
    succeeded at ε₁). Bisection assumes monotonicity; where it fails the answer is still a
    confirmed flipping ε, within ``tol`` of an ε where the attack did not succeed — an upper
    bound on the true minimum, not a guarantee of it. More ``restarts`` make misses rarer.

    ``warm_start``: each round's first PGD run starts from the perturbation that flipped the image
    at its current ``hi``, projected into the smaller ball (further restarts start at random).
    A flip found at a larger ε is the best available guess of the direction that flips at a
    smaller one; this makes the search agree with the paper's 20-restart grid far more often at no
    extra cost.

    ``stats``, if given, receives ``grad_evals`` (images × gradient steps summed) and ``rounds``.
    """
    if method != "pgd":
        raise ValueError("min_flip_eps supports method='pgd' (the paper's sensitivity measure)")
    if not (0 < tol < eps_max):
        raise ValueError(f"need 0 < tol < eps_max, got tol={tol}, eps_max={eps_max}")
    was = model.training
    model.eval()
    dev = x.device
    gen = torch.Generator().manual_seed(seed)
    kw = dict(steps=steps, alpha_ratio=alpha_ratio, random_start=random_start)
    out = torch.empty(len(x))
    grad_evals, rounds = 0, 0
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(dev)
            with torch.no_grad():
                pred = model(xb).argmax(1)
            n = len(xb)
            lo = torch.zeros(n, device=dev)
            hi = torch.full((n,), float(eps_max), device=dev)
            found, best, evals = _flipped(model, xb, pred, hi, restarts, gen, **kw)
            grad_evals += evals
            r = 1
            active = found.clone()
            while True:
                active &= (hi - lo) > tol
                if not active.any():
                    break
                mid = (lo + hi) / 2
                idx = active.nonzero().flatten()
                warm = (best[idx] - xb[idx]) if warm_start else None
                hit, adv, evals = _flipped(model, xb[idx], pred[idx], mid[idx], restarts, gen, init=warm, **kw)
                grad_evals += evals
                r += 1
                hi[idx[hit]] = mid[idx[hit]]
                best[idx[hit]] = adv[hit]
                lo[idx[~hit]] = mid[idx[~hit]]
            rounds = max(rounds, r)
            # confirm every finite answer on its stored adversarial image
            with torch.no_grad():
                confirmed = model(best).argmax(1) != pred
            if (found & ~confirmed).any():
                raise AssertionError("a bisection answer did not reproduce its flip")
            for j in found.nonzero().flatten():
                check_adversarial(xb[j:j + 1], best[j:j + 1], float(hi[j]))
            out[i:i + n] = torch.where(found, hi, torch.full_like(hi, math.inf)).cpu()
    finally:
        model.train(was)
    if stats is not None:
        stats.update(grad_evals=grad_evals, rounds=rounds)
    return out


def grid_flip_eps(model: nn.Module, x: torch.Tensor, grid: list[float], *, steps: int = 10,
                  restarts: int = 1, alpha_ratio: float = 0.25, seed: int = 0,
                  stats: dict | None = None) -> torch.Tensor:
    """The paper's scan: a full PGD at every grid ε for every image; the smallest flipping grid
    value per image (``inf`` if none). Used as the benchmark's reference."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        pred = model(x).argmax(1)
    out = torch.full((len(x),), math.inf)
    grad_evals = 0
    for eps in sorted(grid, reverse=True):
        hit, _, evals = _flipped(model, x, pred, torch.full((len(x),), float(eps)), restarts, gen,
                                 skip_found=False, steps=steps, alpha_ratio=alpha_ratio, random_start=True)
        grad_evals += evals
        out[hit.cpu()] = eps
    if stats is not None:
        stats.update(grad_evals=grad_evals)
    return out
