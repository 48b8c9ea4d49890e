"""Per-image adversarial sensitivity: a bracket on the smallest ε at which the prediction changes.

The paper ran a full PGD (10 steps, 20 restarts) for each of 18–32 ε values per image. Here a
batched bisection gives every image its own ε (an N×1×1×1 tensor), so one attack call advances
every image's search at once: ⌈log2(eps_max / tol)⌉ + 1 attacks instead of one per grid value.

The inner attack decides the answer (AttackBench, AAAI 2025: a bisection over torchattacks' PGD
reaches 0.886 "optimality", over APGD 0.99). The default inner attack is therefore an ensemble
run AutoAttack-style (each member only on the images the ones before left unflipped, early exit;
:func:`oncorobust.attacks.ensemble.until_flipped`): APGD-T aimed at the class closest to first order (a new class each
restart), APGD on the logit margin, then PGD; the first run warm-started in each round from the
perturbation that flipped the image at its current upper end. With 2 classes the ensemble is
APGD-margin alone (:func:`two_class_members`: APGD-T and PGD follow the margin's own signed
gradient there). ``method="pgd"`` keeps the paper's PGD. The bisection
stops at an absolute ``tol`` and a relative ``rel_tol``; FAB's minimum-norm flip and a refinement
bisection with longer attacks follow (``benchmarks/sensitivity_optimality.py`` measures what each
part is worth). Each image gets a **bracket**:

- ``eps_upper``: an ε at which a flip was found **and confirmed** (the stored adversarial image is
  re-scored; ‖δ‖∞ ≤ ε checked); a minimum-norm cross-check (FAB, L∞) lowers it where FAB finds a
  smaller confirmed flip. ``inf`` when nothing flips the image at ``eps_max``.
- ``eps_lower``: the largest ε at which the strong attack failed (≤ ``eps_upper``). It is not a
  certificate — a stronger attack might flip the image below it — but the gap
  ``eps_upper − eps_lower`` says how precisely the search located the attack's own boundary.

Also recorded: the one-gradient first-order estimate |margin| / ‖∇ₓ margin‖₁
(:func:`~oncorobust.attacks.methods.first_order_eps`), so readers can see whether the search is worth
more than one gradient.
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
import torch
from torch import nn

from oncorobust.attacks.adapters import fab_min_norm
from oncorobust.attacks.checks import AttackSanityError, check_adversarial, check_inputs
from oncorobust.attacks.ensemble import Run, until_flipped
from oncorobust.attacks.kernels import (apgd, apgd_start, image_seeds, loss_grad, pgd_start, project, sign_iterate,
                                        signed_noise)
from oncorobust.attacks.methods import first_order_eps
from oncorobust.device import eval_mode, strict_fp32
from oncorobust.errors import AttackError
from oncorobust.evaluation.scores import logit_columns, logits_of, pred_and_prob, score_column_names
from oncorobust.pipeline.passes import sensitivity_passes
from oncorobust.progress import meter, monitored

INNER = ("apgd_t+apgd_margin+pgd", "apgd_margin+pgd", "apgd_margin", "pgd")
#: APGD-T's candidate target classes: the runner-ups by clean logit (AutoAttack's default 9)
N_TARGETS = 9


def two_class_members(method: str) -> str:
    """The inner attack ``method`` as run on a 2-class model: the default ensemble
    ``apgd_t+apgd_margin+pgd`` is APGD-margin alone; the other methods run as given.

    With two classes the targeted margin is the margin (APGD-T is APGD-margin), and the
    cross-entropy is softplus(−margin), so PGD's signed gradient steps are the margin's: PGD is a
    fixed-step APGD-margin without momentum. On the demo's CT and mammography models (60 test images
    each, 3 repetitions, ``benchmarks/sensitivity_optimality.py``) leaving both out kept the
    optimality (0.9888 / 0.9925 against 0.9888 / 0.9926) at 39–40% fewer gradient evaluations
    (1,024 / 1,054 per image against 1,686 / 1,762).

    Args:
        method: one of :data:`INNER`.
    Returns:
        ``apgd_margin`` for the default ensemble, else ``method``.
    """
    return "apgd_margin" if method == INNER[0] else method


class GradCounter(nn.Module):
    """Wraps a model and counts the images it passes: ``grad_images`` = images × backward passes
    through the model (gradient evaluations: a hook on the output fires once per backward pass,
    so an attack that back-propagates one forward pass several times, e.g. one gradient per class,
    counts each), ``forward_images`` = images × forward passes (with or without gradients)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.grad_images, self.forward_images = model, 0, 0
        self.training = model.training  # the model's mode, without resetting its submodules' own modes

    def _backward(self, n: int):
        def hook(grad):
            self.grad_images += n
        return hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped model's output for ``x``; counts ``x``'s N images as one forward pass and,
        if the output takes part in autograd, as one gradient evaluation per backward pass.

        Args:
            x: N×C×H×W float32 images in [0,1].
        Returns:
            The wrapped model's output (N×classes logits).
        """
        out = self.model(x)
        self.forward_images += len(x)
        if torch.is_grad_enabled() and out.requires_grad:
            out.register_hook(self._backward(len(x)))
        return out


def target_order(model: nn.Module, x: torch.Tensor, pred: torch.Tensor, k: int = N_TARGETS) -> torch.Tensor:
    """The classes other than ``pred`` (N) ordered by their first-order distance, closest first:
    N×min(k, classes − 1) class indices.

    Among the ``k`` runner-ups by clean logit, class t's distance is the linearised L∞ distance to
    its boundary with the predicted class, (z_pred − z_t) / ‖∇ₓ(z_pred − z_t)‖₁ (as FAB and
    DeepFool rank classes; one gradient per class). On a 10-class demo model the class of the
    smallest flip was often the third or fourth by logit but the first or second by this distance
    (``benchmarks/sensitivity_optimality.py``).

    Args:
        model: the classifier (eval mode).
        x: N×C×H×W float32 images in [0,1].
        pred: N int64 predicted classes.
        k: how many runner-ups by clean logit are ranked.
    Returns:
        N×min(k, classes − 1) int64 class indices, closest first.
    Raises:
        AttackError: a predicted class is not a class of the model.
    """
    with torch.no_grad():
        logits = model(x)
    cand = logits.scatter(1, pred[:, None], float("-inf")).argsort(1, descending=True)[:, :min(k, logits.shape[1] - 1)]
    dist = torch.empty(cand.shape, device=x.device)
    for j in range(cand.shape[1]):
        gap, grad, _ = loss_grad(model, x, pred, "margin", target=cand[:, j])  # z_t − z_pred and its gradient
        dist[:, j] = gap.abs() / grad.flatten(1).abs().sum(1).clamp_min(1e-12)
    return cand.gather(1, dist.argsort(1))


def _strong_attack(model, x, pred, eps, *, method, steps, restarts, alpha_ratio, random_start, seeds,
                   rnd, init=None, targets=None):
    """(flipped mask, images): ``restarts`` rounds of the inner attack at per-image ``eps`` (N).

    ``method`` names one attack or an ensemble ``a+b`` run AutoAttack-style
    (:func:`~oncorobust.attacks.ensemble.until_flipped`): in each restart every member in turn
    attacks only the images not yet flipped; unflipped images keep the clean image. The first
    member's first run starts from ``init`` (a perturbation, projected into the ball) when given,
    all others at random (noise keyed by image and by the draw index 1000 × ``rnd`` + 100 ×
    member + restart). ``apgd_t`` (APGD-T, targeted margin) aims restart r at column r
    (cyclically) of ``targets`` (N×K, :func:`target_order`)."""
    e = eps.view(-1, 1, 1, 1)

    def run(step, todo):
        xs, ps, es = x[todo], pred[todo], e[todo]
        noise = signed_noise(xs.shape, [seeds[i] for i in todo.tolist()], step.draw, xs)
        if init is not None and step.restart == 0 and step.member == 0:
            start = project(xs + init[todo], xs, es)
        elif step.name == "pgd":
            start = pgd_start(xs, es, noise) if random_start else None
        else:
            start = apgd_start(xs, es, noise)
        if step.name == "pgd":
            return Run(*sign_iterate(model, xs, ps, es, steps=steps, alpha=alpha_ratio * es, start=start,
                                     early_exit=True))
        aim = targets[todo, step.restart % targets.shape[1]] if step.name == "apgd_t" else None
        return Run(*apgd(model, xs, ps, es, steps=steps, rho=0.75, loss="margin", start=start, target=aim))

    result = until_flipped(x, method.split("+"), run, restarts=max(1, restarts),
                           draw=lambda restart, member: 1000 * rnd + 100 * member + restart)
    return result.flipped, result.images


#: (factor, absolute step in pixel units) of each push of a boundary flip along its perturbation
PUSH = ((1.001, 1e-7), (1.01, 1e-6), (1.05, 1e-5))
#: rel_tol never narrows the bracket below this (pixel units; 16-bit data step = 1.5e-5)
REL_FLOOR = 1e-6
#: the refinement bisection starts this fraction below the first one's lower end
REFINE_BELOW = 0.1


def _alone(model, x):
    """Predicted class of each image scored on its own (batch of one): a verdict that does not
    depend on which other images share the batch."""
    with torch.no_grad():
        return torch.cat([model(x[i:i + 1]).argmax(1) for i in range(len(x))]) if len(x) else \
            torch.zeros(0, dtype=torch.long, device=x.device)


def _confirm(model, x, pred, best, hi, found, eps_max):
    """Re-score every stored flip, each image on its own; (best, hi, found, number pushed).

    A flip found in a batch can sit within rounding of the decision boundary (early exit keeps the
    first iterate past it), and another batch composition can score it on the other side:
    floating-point sums depend on the batch's shape (cuDNN picks its algorithm by shape; seen on an
    H200 in strict float32). Each flip is therefore confirmed on its own (a batch of one), and one
    that does not reproduce is pushed further along its own perturbation, by the factors and steps
    ``PUSH`` in turn (its ε grows by at most 6% + 1.1e-5), until it does; one that would need more
    than ``eps_max`` counts as not flipped. One that still does not reproduce is a bug:
    AttackSanityError."""
    pushed = torch.zeros_like(found)
    todo = found.clone()
    for attempt in range(len(PUSH) + 1):
        idx = todo.nonzero().flatten()
        ok = _alone(model, best[idx]) != pred[idx]
        todo[idx[ok]] = False
        if not todo.any():
            return best, hi, found, int(pushed.sum())
        if attempt == len(PUSH):
            break
        factor, step = PUSH[attempt]
        delta = best - x
        trial = (x + factor * delta + step * delta.sign()).clamp(0, 1)
        norm = (trial - x).flatten(1).abs().amax(1)
        found = found & ~(todo & (norm > eps_max))  # no room left below eps_max: not flipped there
        todo &= norm <= eps_max
        best = torch.where(todo.view(-1, 1, 1, 1), trial, best)
        hi = torch.where(todo, torch.maximum(hi, norm), hi)
        pushed |= todo
    raise AttackSanityError(f"{int(todo.sum())} bisection answers did not reproduce their flip, even pushed"
                            f" {math.prod(f for f, _ in PUSH):.2f}x along their perturbation. The usual cause is a"
                            " model that is not deterministic in eval mode: dropout kept active (MC dropout), or"
                            " BatchNorm saved in training mode inside a TorchScript/torch.export file. Export the"
                            " model after model.eval(); the health check 'deterministic' measures it")


@strict_fp32()
def flip_eps_bracket(model: nn.Module, x: torch.Tensor, *, eps_max: float, tol: float,
                     method: str = "apgd_t+apgd_margin+pgd", steps: int = 10, restarts: int = 2,
                     alpha_ratio: float = 0.25, random_start: bool = True, seed: int = 0,
                     ids: Sequence[str] | None = None, batch_size: int = 256, warm_start: bool = True,
                     fab_check: bool = True, fab_steps: int = 100, rel_tol: float = 0.005,
                     refine_steps: int = 100,
                     stats: dict | None = None) -> dict[str, torch.Tensor]:
    """Per image, a bracket on the smallest ε (pixel units) at which the prediction changes.

    Bisection keeps, per image, ``lo`` (the inner attack failed there) and ``hi`` (a flip found;
    starts at ``eps_max``) and halves ``hi − lo`` with one batched attack per round until it is
    ≤ ``tol`` and ≤ ``rel_tol`` × ``hi``. Then FAB (minimum-norm) may lower ``hi``; then a second
    bisection with ``refine_steps``-step attacks searches from 10% below ``lo`` up to ``hi`` (a
    10-step attack near the boundary misses flips that a longer one finds: measured 2–3% on the
    demo's mammography model). ``lo`` is clipped to ``hi``.

    Args:
        model: classifier on N×C×H×W images in [0,1] (eval mode set and restored).
        x: N×C×H×W float32 images in [0,1].
        eps_max: the largest ε searched (pixel units).
        tol: the bracket width at which bisection stops (0 < tol < eps_max).
        rel_tol: ... and at most this fraction of ``hi`` (0: ``tol`` alone).
        method: inner attack: ``apgd_t+apgd_margin+pgd`` (default: in every restart APGD-T on
            the next-closest class of :func:`target_order`, then APGD on the margin, then PGD, each
            on the images still unflipped; with 2 classes APGD-margin alone, :func:`two_class_members`),
            ``apgd_margin+pgd``, ``apgd_margin`` or ``pgd`` (the paper's).
        steps, restarts: of the inner attack per round; ``alpha_ratio``/``random_start``: PGD only.
        seed, ids: per-image random starts are keyed by the seed and each image's ID (or index),
            so results do not depend on ``batch_size``.
        batch_size: images searched at once.
        warm_start: each round starts from the flip found at the image's current ``hi``.
        fab_check: run the FAB minimum-norm cross-check; ``fab_steps`` its iterations.
        refine_steps: steps of the refinement bisection's attacks (0: no refinement).
        stats: if given, ``grad_evals`` (images × backward passes, every one counted: attacks,
            target ranking, FAB, the first-order estimate), ``forward_evals`` (images × forward
            passes, the confirmations included), ``lowered_by_fab`` (images
            whose upper end FAB lowered) and ``pushed`` (flips on the boundary pushed past it, see
            :func:`_confirm`) are added to it, ``rounds`` (bisection rounds) maxed.
    Returns:
        ``{"eps_lower", "eps_upper", "first_order"}``: float32 tensors (N) on the CPU;
        ``eps_upper`` is ``inf`` (and ``eps_lower`` = ``eps_max``) where no flip was found.
    Raises:
        AttackError: bad arguments (method, tol/eps_max, images).
        AttackSanityError: a stored flip did not reproduce (a bug, never ignored).
    """
    if method not in INNER:
        raise AttackError(f"sensitivity method must be one of {INNER}, got {method!r}")
    if not (math.isfinite(tol) and math.isfinite(eps_max) and 0 < tol < eps_max <= 1):
        raise AttackError(f"need 0 < sensitivity.tol < sensitivity.eps_max <= 1, got tol={tol}, eps_max={eps_max}")
    check_inputs(x, torch.zeros(len(x), dtype=torch.int64))
    seeds = image_seeds(ids, len(x), seed)
    with eval_mode(model):
        counter = GradCounter(model)
        dev = next((p.device for p in model.parameters()), x.device)
        lower, upper, first = torch.empty(len(x)), torch.empty(len(x)), torch.empty(len(x))
        rounds, lowered, nudged = 0, 0, 0
        kw = dict(method=method, steps=steps, restarts=restarts, alpha_ratio=alpha_ratio, random_start=random_start)
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(dev)
            sb = seeds[i:i + batch_size]
            with torch.no_grad():
                logits = counter(xb)
            pred = logits.argmax(1)
            n = len(xb)
            lo = torch.zeros(n, device=dev)
            hi = torch.full((n,), float(eps_max), device=dev)
            kw["method"] = two_class_members(method) if logits.shape[1] == 2 else method
            targets = target_order(counter, xb, pred) if "apgd_t" in kw["method"] else None
            found, best = _strong_attack(counter, xb, pred, hi, seeds=sb, rnd=0, targets=targets, **kw)

            def bisect(lo, hi, best, r, kw):
                active = found.clone()
                while True:
                    width = torch.clamp(rel_tol * hi, min=REL_FLOOR, max=tol) if rel_tol > 0 else tol
                    active &= (hi - lo) > width
                    if not active.any():
                        return lo, hi, best, r
                    mid = (lo + hi) / 2
                    idx = active.nonzero().flatten()
                    warm = (best[idx] - xb[idx]) if warm_start else None
                    hit, adv = _strong_attack(counter, xb[idx], pred[idx], mid[idx], seeds=[sb[j] for j in idx.tolist()],
                                              rnd=r, init=warm, targets=None if targets is None else targets[idx], **kw)
                    r += 1
                    hi[idx[hit]] = mid[idx[hit]]
                    best[idx[hit]] = adv[hit]
                    lo[idx[~hit]] = mid[idx[~hit]]

            lo, hi, best, r = bisect(lo, hi, best, 1, kw)
            if fab_check and n:
                adv, ok = fab_min_norm(counter, xb, pred, eps_max, steps=fab_steps, seed=sb[0])
                norm = (adv - xb).flatten(1).abs().amax(1)
                better = ok & (norm < hi) & (norm > 0)
                hi[better] = norm[better]
                best[better] = adv[better]
                found |= better
                lowered += int(better.sum())
            if refine_steps and n:
                # a second bisection with a longer attack below the first one's bracket
                lo, hi, best, r = bisect(torch.minimum(lo, hi) * (1 - REFINE_BELOW), hi, best, r,
                                         {**kw, "steps": refine_steps})
            rounds = max(rounds, r)
            # the stored flip may lie inside its ball: its own norm is a (smaller) confirmed ε
            norm = (best - xb).flatten(1).abs().amax(1)
            hi = torch.where(found & (norm > 0), torch.minimum(hi, norm), hi)
            # confirm every finite answer on its stored adversarial image
            best, hi, found, pushed = _confirm(counter, xb, pred, best, hi, found, eps_max)
            nudged += pushed
            lo = torch.minimum(lo, hi)
            check_adversarial(xb[found], best[found], hi[found], atol=1e-6)
            upper[i:i + n] = torch.where(found, hi, torch.full_like(hi, math.inf)).cpu()
            lower[i:i + n] = torch.where(found, lo, torch.full_like(lo, float(eps_max))).cpu()
            first[i:i + n] = first_order_eps(counter, xb, pred)
    if stats is not None:
        for key, value in (("grad_evals", counter.grad_images), ("forward_evals", counter.forward_images),
                           ("lowered_by_fab", lowered), ("pushed", nudged)):
            stats[key] = stats.get(key, 0) + value  # accumulated over calls (e.g. val and test)
        stats["rounds"] = max(stats.get("rounds", 0), rounds)
    return {"eps_lower": lower, "eps_upper": upper, "first_order": first}


def min_flip_eps(model: nn.Module, x: torch.Tensor, *, eps_max: float, tol: float,
                 method: str = "apgd_t+apgd_margin+pgd",
                 steps: int = 10, restarts: int = 2, alpha_ratio: float = 0.25, random_start: bool = True,
                 seed: int = 0, batch_size: int = 256, warm_start: bool = True,
                 stats: dict | None = None) -> torch.Tensor:
    """For each image of x (N×C×H×W in [0,1]) a confirmed flipping ε (pixel units) within
    ``tol`` of an ε where the inner attack failed — the upper end of :func:`flip_eps_bracket`
    (without the FAB cross-check); ``inf`` if nothing flips the image at ``eps_max``.

    Attack success is not strictly monotone in ε, so this is an upper bound on the true minimum,
    not a guarantee of it. ``method``: ``apgd_t+apgd_margin+pgd`` (default), ``apgd_margin+pgd``,
    ``apgd_margin`` or ``pgd`` (the paper's); the relative tolerance and refinement of :func:`flip_eps_bracket` at their
    defaults. ``stats`` receives ``grad_evals`` and ``rounds``.

    Args:
        model: classifier on N×C×H×W images in [0,1] (eval mode set and restored).
        x: N×C×H×W float32 images in [0,1].
        eps_max: the largest ε searched ([0,1] pixel units, ≤ 1).
        tol: the bracket width at which bisection stops (pixel units, 0 < tol < eps_max).
        method: the inner attack, one of those above.
        steps: inner-attack steps per round.
        restarts: inner-attack restarts per round.
        alpha_ratio: PGD's step size as a fraction of ε (PGD only).
        random_start: PGD starts at a random point of the ball (PGD only).
        seed: seed of the per-image random starts (keyed by image index).
        batch_size: images searched at once.
        warm_start: each round starts from the flip found at the image's current upper end.
        stats: if a dict, ``grad_evals``, ``lowered_by_fab``, ``pushed`` are added to it and ``rounds`` maxed.
    Returns:
        Float32 tensor (N) on the CPU of flipping ε, ``inf`` where none was found.
    Raises:
        AttackError: bad arguments (method, tol/eps_max, images).
        AttackSanityError: a stored flip did not reproduce (a bug).
    """
    return flip_eps_bracket(model, x, eps_max=eps_max, tol=tol, method=method, steps=steps, restarts=restarts,
                            alpha_ratio=alpha_ratio, random_start=random_start, seed=seed,
                            batch_size=batch_size, warm_start=warm_start, fab_check=False,
                            stats=stats)["eps_upper"]


@strict_fp32()
def grid_flip_eps(model: nn.Module, x: torch.Tensor, grid: list[float], *, steps: int = 10,
                  restarts: int = 1, alpha_ratio: float = 0.25, seed: int = 0,
                  stats: dict | None = None) -> torch.Tensor:
    """The paper's scan: a full PGD (every restart on every image, final iterate) at every grid
    ε; the smallest flipping grid value per image. The benchmark's reference.

    Args:
        model: classifier on N×C×H×W images in [0,1] (run in eval mode, its modes restored).
        x: N×C×H×W float32 images in [0,1], pushed away from the model's predictions.
        grid: the ε values (pixel units).
        steps, restarts, alpha_ratio: PGD's (α = ``alpha_ratio`` × ε); random start always.
        seed: per-image random starts are keyed by it and the image's index.
        stats: if a dict, receives ``grad_evals`` (images × gradient passes).
    Returns:
        N float32 values on the CPU: the smallest grid ε that flipped the image, ``inf`` if none.
    """
    with eval_mode(model):
        counter = GradCounter(model)
        with torch.no_grad():
            pred = model(x).argmax(1)
        seeds = image_seeds(None, len(x), seed)
        out = torch.full((len(x),), math.inf)
        for k, eps in enumerate(sorted(grid, reverse=True)):
            e = torch.full((len(x), 1, 1, 1), float(eps), device=x.device)
            hit = torch.zeros(len(x), dtype=torch.bool)
            for r in range(restarts):
                start = pgd_start(x, e, signed_noise(x.shape, seeds, 1000 * k + r, x))
                _, ok = sign_iterate(counter, x, pred, e, steps=steps, alpha=alpha_ratio * e, start=start,
                                     early_exit=False)
                hit |= ok.cpu()
            out[hit] = eps
    if stats is not None:
        stats.update(grad_evals=counter.grad_images)
    return out


# ------------------------------------------------------------------ the per-image frame of a job

SENSITIVITY_COLUMNS = ["sample_id", "split", "label", "clean_pred", "correct", "min_flip_eps", "eps_lower",
                       "eps_upper", "first_order_eps", "confidence"]


@strict_fp32()
def sensitivity_frame(model: nn.Module, splits: dict[str, dict], *, device="cpu", batch_size: int = 256,
                      **search) -> pd.DataFrame:
    """One row per image of each split: prediction, confidence and the flipping-ε bracket.

    Args:
        model: the classifier (run in eval mode, every submodule's own mode restored afterwards;
            moved to ``device``).
        splits: split name → ``{"x": N×C×H×W in [0,1], "y": N labels, "ids": N sample IDs}``.
        device: where the model runs; ``batch_size``: images per model call.
        **search: keyword arguments of :func:`flip_eps_bracket`.
    Returns:
        A DataFrame with :data:`SENSITIVITY_COLUMNS`, then the clean logits ``clean_logit_<k>``
        (:func:`oncorobust.evaluation.scores.logit_columns`: the validation rows' scores choose the
        AUROC table's operating point); ``min_flip_eps`` = ``eps_upper`` (a confirmed flipping ε,
        ``inf`` where none), ``first_order_eps`` the one-gradient estimate.
    Raises:
        AttackError: bad arguments of the search or bad images.
        AttackSanityError: a stored flip did not reproduce (a bug).
    """
    n = sum(len(t["x"]) for t in splits.values())
    plan = sensitivity_passes(search)  # its own defaults stand for the keys search leaves out
    with eval_mode(model.to(device)):
        model = monitored(model, "the sensitivity search")
        with meter("sensitivity", n * (plan + 2), images=n) as progress_meter:
            rows = _frames(model, splits, device, batch_size, search, progress_meter)
    out = pd.concat(rows, ignore_index=True)
    return out[SENSITIVITY_COLUMNS + score_column_names(out, "clean")]


def _frames(model, splits, device, batch_size, search, progress_meter) -> list[pd.DataFrame]:
    """The per-split loop of :func:`sensitivity_frame` (a split's images count as finished when
    its search ends)."""
    rows = []
    for split, t in splits.items():
        x = t["x"]
        logits = torch.cat([logits_of(model, x[i:i + batch_size].to(device)).cpu()
                            for i in range(0, len(x), batch_size)]) if len(x) else torch.empty(0, 2)
        pred, conf = pred_and_prob(logits)
        br = flip_eps_bracket(model, x, ids=t["ids"], batch_size=batch_size, **search)
        progress_meter.finished(len(x))
        rows.append(pd.DataFrame({
            "sample_id": t["ids"], "split": split, "label": t["y"].numpy(), "clean_pred": pred.numpy(),
            "correct": (pred == t["y"]).numpy(), "min_flip_eps": br["eps_upper"].numpy(),
            "eps_lower": br["eps_lower"].numpy(), "eps_upper": br["eps_upper"].numpy(),
            "first_order_eps": br["first_order"].numpy(), "confidence": conf.numpy(),
            **logit_columns("clean", logits)}))
    return rows
