"""L∞ attacks with every parameter explicit, randomness seeded per image, and every result checked.

Everything works in float32 in [0,1] pixel space (ε = 0.002 means 0.002 of the full intensity
range, about half a grey level of 8-bit data) with the model in eval mode; the model's mode is
restored afterwards. Inputs and outputs are N×C×H×W; ``eps`` is a float or a per-image tensor (N).

Methods (``METHODS``):

- ``fgsm`` — one signed-gradient step of ε (Goodfellow et al.), computed by the same code as BIM
  with one step of α = ε; equal to torchattacks' FGSM (tested).
- ``bim``, ``pgd`` — the paper's Table S1 attacks: BIM with 10 steps of α = ε/10 from the clean
  image; PGD with 10 steps of α = ε/4 from a uniform random start, cross-entropy loss, the final
  iterate kept (the paper's protocol). torchattacks' BIM defaults to 10 steps but α = 2/255 — far
  larger than the paper's ε, so every step would jump to the corner of the ball: α is always
  passed explicitly.
- ``apgd_ce``, ``apgd_margin`` — APGD (Croce & Hein 2020, the first attack of AutoAttack) on the
  cross-entropy and on the logit margin z_y − max_{j≠y} z_j. AutoAttack's second loss, DLR,
  divides by z_π1 − z_π3 and so needs ≥ 3 classes (every task here has 2: torchattacks' APGD
  ``loss='dlr'`` and APGD-T index a third logit that does not exist, fra31/auto-attack#70,
  torchattacks#152). The margin loss is DLR's numerator; unlike the cross-entropy it does not
  saturate on very confident logits, so it still has a gradient where CE's underflows.
- ``fab`` — torchattacks' FAB (L∞), a minimum-norm attack, kept when its perturbation fits in ε,
  targeted at each image's runner-up class (FAB-T with one target: one gradient per step instead
  of one per class; with 2 classes the runner-up is the only other class, so this *is* untargeted
  FAB, and AutoAttack's 9-target FAB-T has nothing more to try).
- ``square`` — torchattacks' Square (L∞, margin loss, 5000 queries by default): gradient-free, so
  it is not fooled by masked gradients; it stops querying an image once it flips.
- ``worst`` — the per-image worst case over ``members`` (default APGD-CE, APGD-margin, FAB,
  Square), run AutoAttack-style: each member attacks only the images still unflipped and the
  first success is kept. Never weaker than any member.

Why PGD, BIM and APGD are written here rather than called from torchattacks: every library takes
one scalar ε per call and draws random starts for the whole batch from the global RNG, so results
change with the batch size and a per-image bisection over ε is impossible; and none stops
attacking an image once it has flipped (early exit). :func:`_sign_iterate` follows torchattacks'
PGD/BIM step for step and :func:`_apgd` follows torchattacks' (= AutoAttack's) APGD line for line,
including its step-size schedule; ``tests/test_attacks.py`` checks both against torchattacks on
the same random start.

Precision: on a GPU, PyTorch runs float32 convolutions in TF32 by default (a 10-bit mantissa; how
far that moves attack outcomes is not measured yet). Every attack, the sensitivity search and
the health checks therefore run inside :func:`strict_fp32` (IEEE float32 convolutions and matrix
products; the previous setting is restored). Training keeps the default.

Early exit (``early_exit=True``, always on for APGD and ``worst``, an option for BIM/PGD): an
image that has flipped is no longer attacked and keeps its first successful iterate. Other
images' trajectories are unchanged (eval mode: no image influences another), so accuracy under
attack can only go down and compute drops.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oncorobust.errors import AttackError, OncorobustError
from oncorobust.progress import monitored

from oncorobust.spec import METHOD_NAMES as METHODS, PAPER_METHODS  # noqa: E402  (the registry)
#: Default parameters per method (Table S1 for the paper's; AutoAttack's standard otherwise).
DEFAULTS: dict[str, dict] = {
    "fgsm": {},
    "bim": {"steps": 10, "alpha_ratio": 0.1},
    "pgd": {"steps": 10, "alpha_ratio": 0.25, "random_start": True, "restarts": 1},
    "apgd_ce": {"steps": 100, "restarts": 1, "rho": 0.75},
    "apgd_margin": {"steps": 100, "restarts": 1, "rho": 0.75},
    "fab": {"steps": 100, "restarts": 1, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9},
    "square": {"queries": 5000, "restarts": 1, "p_init": 0.8},
    "worst": {"members": ["apgd_ce", "apgd_margin", "fab", "square"]},
}


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Float32 convolutions and matrix products in IEEE precision (no TF32) inside the block, the
    previous setting restored after it; also usable as a decorator. Without CUDA it changes
    nothing that the CPU uses. torch ≥ 2.9 has per-backend ``fp32_precision`` flags, older
    releases ``allow_tf32`` (mixing the two APIs is an error in torch ≥ 2.9, so only one is set)."""
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


class AttackSanityError(OncorobustError):
    """An attack produced an image outside the ε-ball or outside [0,1]: a bug, never ignored."""


def image_seeds(ids: Sequence[str] | None, n: int, seed: int) -> list[int]:
    """One 63-bit seed per image from the run's ``seed`` and the image's ID (or its index when
    ``ids`` is None), so an image's random start does not depend on its batch.

    Args:
        ids: the images' sample IDs, or None.
        n: the number of images.
        seed: the run's seed.
    Returns:
        ``n`` non-negative ints.
    """
    keys = [str(i) for i in ids] if ids is not None else [f"#{i}" for i in range(n)]
    if len(keys) != n:
        raise AttackError(f"{len(keys)} image IDs for {n} images")
    return [int.from_bytes(hashlib.blake2b(f"{seed}:{k}".encode(), digest_size=8).digest(), "big") >> 1
            for k in keys]


def _uniform(shape: torch.Size, seeds: Sequence[int], restart: int, like: torch.Tensor) -> torch.Tensor:
    """U[0,1) noise of ``shape`` (N×…), image i drawn from its own generator (seed i, restart)."""
    gen = torch.Generator()
    out = torch.empty(shape)
    for i, s in enumerate(seeds):
        gen.manual_seed((int(s) + 1_000_003 * restart) % (2 ** 63))
        out[i] = torch.rand(shape[1:], generator=gen)
    return out.to(like)


def signed_noise(shape: torch.Size, seeds: Sequence[int], restart: int, like: torch.Tensor) -> torch.Tensor:
    """U[−1,1) noise of ``shape`` (N×…), keyed per image like :func:`_uniform`: the random starts."""
    return 2 * _uniform(shape, seeds, restart, like) - 1


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y − max_{j≠y} z_j per image (N): negative when the prediction is not ``y``."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return z_y - other


def _loss(name: str, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image loss to maximise: cross-entropy (``ce``), negative margin (``margin``), or with a
    ``target`` class per image, z_target − z_y (the targeted margin of APGD-T; with 2 classes the
    same as the negative margin)."""
    if target is not None:
        return (logits.gather(1, target[:, None]) - logits.gather(1, y[:, None])).squeeze(1)
    if name == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    return -margin(logits, y)


def _loss_grad(model, x, y, loss, target=None):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        check_labels(logits, y)
        value = _loss(loss, logits, y, target)
        (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad.detach(), logits.detach()


def _project(adv, x, e):
    return torch.min(torch.max(adv, x - e), x + e).clamp(0, 1)


def _sign_iterate(model, x, y, e, *, steps, alpha, start, early_exit, flags=True, trace=None):
    """Sign-gradient ascent on the cross-entropy (BIM / PGD as torchattacks does them).

    ``e``, ``alpha``: N×1×1×1; ``start``: N×C×H×W initial images or None (clean). One forward
    and backward pass per step; with ``early_exit`` an image whose current iterate already flips
    is left alone (it keeps that first successful iterate), otherwise the final iterate is kept
    (the paper's protocol). Returns (images, flipped mask, or None when ``flags`` is False and
    no early exit asked for the extra forward pass that scores the final iterate)."""
    adv = x.clone() if start is None else start.clone()
    n = len(x)
    flipped = torch.zeros(n, dtype=torch.bool, device=x.device)
    hist = []
    for _ in range(steps):
        active = (~flipped).nonzero().flatten() if early_exit else torch.arange(n, device=x.device)
        if not len(active):
            break
        loss, grad, logits = _loss_grad(model, adv[active], y[active], "ce")
        if trace is not None:
            full = torch.full((n,), float("nan"))
            full[active.cpu()] = loss.cpu()
            hist.append(full)
        if early_exit:
            now = logits.argmax(1) != y[active]
            flipped[active[now]] = True
            active, grad = active[~now], grad[~now]
        step = adv[active] + alpha[active] * grad.sign()
        adv[active] = _project(step, x[active], e[active])
    if flags or early_exit or trace is not None:
        with torch.no_grad():
            logits = model(adv)
        flipped |= logits.argmax(1) != y
        if trace is not None:
            hist.append(_loss("ce", logits, y).cpu())
            trace["loss"] = torch.stack(hist)
        return adv, flipped
    return adv, None


def _check_oscillation(losses: np.ndarray, j: int, k: int, k3: float) -> np.ndarray:
    """AutoAttack's test: fewer than k·k3 of the last k steps increased the loss (per image).
    Like the original, index j − counter − 1 = −1 wraps to the last row (zeros until then)."""
    t = np.zeros(losses.shape[1])
    for c in range(k):
        t += losses[j - c] > losses[j - c - 1]
    return t <= k * k3


def pgd_start(x: torch.Tensor, e: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """PGD's random start x + ε·t (``t``: N×C×H×W noise in [−1,1], ``e``: N×1×1×1), clipped to [0,1]."""
    return (x + t * e).clamp(0, 1)


def apgd_start(x: torch.Tensor, e: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """APGD's random start x + ε·t/‖t‖∞ (``t``: N×C×H×W noise in [−1,1]), clipped to [0,1]."""
    return (x + e * t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)).clamp(0, 1)


def _apgd(model, x, y, e, *, steps, rho, loss, start, early_exit=True, trace=None, target=None):
    """APGD, L∞ (Croce & Hein 2020, Alg. 1), as torchattacks.APGD.attack_single_run, per-image ε.

    ``start``: N×C×H×W first iterate (:func:`apgd_start`, or a warm start inside the ball).
    Returns (images, flipped): a flipped image's first (``early_exit``) or last successful
    iterate, otherwise the highest-loss iterate."""
    n = len(x)
    steps_2, steps_min, size_decr = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    x_adv = start.clone()
    loss_indiv, grad, logits = _loss_grad(model, x_adv, y, loss, target)
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
            z = _project(xa + step_size[act] * torch.sign(grad[act]), xx, ea)
            x_adv[act] = _project(xa + (z - xa) * a + grad2 * (1 - a), xx, ea)
        li, g, lg = _loss_grad(model, x_adv[act], y[act], loss, None if target is None else target[act])
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
            osc = _check_oscillation(loss_steps, i, k, rho)
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
    return torch.where(flipped.view(-1, 1, 1, 1), x_best_adv, x_best), flipped


def _as_eps(eps, n: int, like: torch.Tensor) -> torch.Tensor:
    e = torch.as_tensor(eps, dtype=torch.float32).to(like.device)
    e = e.expand(n) if e.ndim == 0 else e
    if e.shape != (n,):
        raise AttackError(f"eps must be a number or one value per image ({n}), got shape {tuple(e.shape)}")
    if not torch.isfinite(e).all() or (e < 0).any():
        raise AttackError(f"eps must be finite and >= 0 (ε in [0,1] pixel units), got {eps}")
    return e.view(-1, 1, 1, 1)


def check_inputs(x: torch.Tensor, y: torch.Tensor) -> None:
    """Raise AttackError unless ``x`` is a float32 N×C×H×W batch in [0,1] without NaN and ``y``
    holds one label per image."""
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
    """Raise AttackError when a label is not one of the model's classes (logits: N×classes)."""
    if len(y) and int(y.max()) >= logits.shape[1]:
        raise AttackError(f"label {int(y.max())} is not a class of this model ({logits.shape[1]} logits):"
                          " labels must be 0 … classes − 1")


def method_params(method: str, params: dict | None = None) -> dict:
    """The method's DEFAULTS updated by ``params``; unknown keys are an AttackError."""
    if method not in DEFAULTS:
        raise AttackError(f"unknown attack method {method!r}; choose from {list(METHODS)}")
    params = {k: v for k, v in (params or {}).items() if v is not None}
    unknown = set(params) - set(DEFAULTS[method]) - ({"alpha"} if method in ("bim", "pgd") else set())
    if unknown:
        raise AttackError(f"{method}: unknown parameter(s) {sorted(unknown)}; known: {sorted(DEFAULTS[method])}")
    out = {**DEFAULTS[method], **params}
    for key in ("steps", "restarts", "queries"):
        if key in out and int(out[key]) < 1:
            raise AttackError(f"{method}: {key} must be >= 1, got {out[key]}")
    return out


@strict_fp32()
def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str, eps, *,
           seed: int = 0, seeds: Sequence[int] | None = None, early_exit: bool | None = None,
           member_params: dict[str, dict] | None = None, trace: dict | None = None,
           **params) -> torch.Tensor:
    """Adversarial images for ``x`` pushed away from labels ``y``.

    Args:
        model: a classifier taking N×C×H×W images in [0,1]; put in eval mode, mode restored.
        x: N×C×H×W float32 images in [0,1].
        y: N labels (int64) to push away from (true or predicted labels).
        method: one of ``METHODS``.
        eps: L∞ budget in [0,1] pixel units: a float, or a tensor with one ε per image.
        seed: the run's seed; per-image seeds are derived from it and the image index unless
            ``seeds`` (one int per image, e.g. :func:`image_seeds` of the sample IDs) is given.
        early_exit: stop attacking an image once it flips (BIM/PGD: default False, the paper's
            final iterate; always True for APGD and ``worst``).
        member_params: for ``worst``, parameters of each member method.
        trace: if a dict, receives ``loss`` (steps+1 × N per-image losses) for PGD/BIM/APGD.
        **params: the method's parameters (see ``DEFAULTS``); ``alpha`` (absolute step) is
            accepted for BIM/PGD instead of ``alpha_ratio``.
    Returns:
        N×C×H×W float32 adversarial images with ‖x_adv − x‖∞ ≤ ε and values in [0,1]. With
        ``restarts`` > 1 an image keeps the first restart that flips it, else the highest-loss one.
    Raises:
        AttackError: bad arguments (dtype, range, NaN, label count, ε, method, parameters), or
            the model returned NaN/inf logits during the attack
            (:class:`~oncorobust.progress.NonFiniteOutputError`).
        AttackSanityError: the result left the ε-ball or [0,1].
    """
    check_inputs(x, y)
    p = method_params(method, params)
    n = len(x)
    e = _as_eps(eps, n, x)
    y = y.to(x.device)
    seeds = list(seeds) if seeds is not None else image_seeds(None, n, seed)
    if len(seeds) != n:
        raise AttackError(f"{len(seeds)} seeds for {n} images")
    was_training = model.training
    model.eval()
    guarded = monitored(model, method)  # NaN/inf logits are an AttackError; passes counted for progress
    try:
        if n == 0:
            out = x.clone()
        elif method == "worst":
            out = worst_case(guarded, x, y, e, p["members"], seeds, member_params or {})
        else:
            out = _run(guarded, x, y, method, e, p, seeds, early_exit, trace)
    finally:
        model.train(was_training)
    check_adversarial(x, out, e)
    return out


def _run(model, x, y, method, e, p, seeds, early_exit, trace):
    """One method on one batch (restarts included)."""
    if method == "fgsm":  # one step of ε from the clean image: torchattacks' FGSM, tested equal
        return _sign_iterate(model, x, y, e, steps=1, alpha=e, start=None, early_exit=False, flags=False)[0]
    if method in ("fab", "square"):
        return _torchattacks_box(model, x, y, method, e, p, seeds)
    restarts = int(p.get("restarts", 1))
    n = len(x)
    best = x.clone()
    best_loss = torch.full((n,), float("-inf"), device=x.device)
    hit = torch.zeros(n, dtype=torch.bool, device=x.device)
    for r in range(restarts):
        todo = (~hit).nonzero().flatten()
        if not len(todo):
            break
        xs, ys, es, ss = x[todo], y[todo], e[todo], [seeds[i] for i in todo.tolist()]
        tr = trace if (trace is not None and r == 0) else None
        if method in ("bim", "pgd"):
            alpha = p.get("alpha")
            alpha = es * p["alpha_ratio"] if alpha is None else torch.full_like(es, float(alpha))
            start = None
            if method == "pgd" and p.get("random_start", True):
                start = pgd_start(xs, es, signed_noise(xs.shape, ss, r, xs))
            adv, ok = _sign_iterate(model, xs, ys, es, steps=int(p["steps"]), alpha=alpha, start=start,
                                    early_exit=bool(early_exit), flags=restarts > 1, trace=tr)
        else:
            start = apgd_start(xs, es, signed_noise(xs.shape, ss, r, xs))
            adv, ok = _apgd(model, xs, ys, es, steps=int(p["steps"]), rho=float(p["rho"]),
                            loss="ce" if method == "apgd_ce" else "margin", start=start, trace=tr)
        if restarts == 1:
            return adv
        with torch.no_grad():
            loss = F.cross_entropy(model(adv), ys, reduction="none")
        loss = torch.where(ok, torch.full_like(loss, float("inf")), loss)
        better = loss > best_loss[todo]
        best[todo[better]] = adv[better]
        best_loss[todo] = torch.maximum(best_loss[todo], loss)
        hit[todo[ok]] = True
    return best


def _torchattacks_box(model, x, y, method, e, p, seeds):
    """FAB / Square from torchattacks, one call per distinct ε, seeded from the batch's first
    image seed with the global RNG state restored afterwards (both draw from the global RNG for
    the whole batch, so unlike the other methods their result can depend on the batch)."""
    import torchattacks  # imported here: it pulls in scipy (≈ 1 s), and only FAB and Square need it

    with torch.no_grad():
        check_labels(model(x[:1]), y)
    out = x.clone()
    devices = [x.device] if x.device.type == "cuda" else []
    for value in torch.unique(e.flatten()):
        idx = (e.flatten() == value).nonzero().flatten()
        s = int(seeds[int(idx[0])]) % (2 ** 31)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(s)
            if method == "fab":
                # n_classes=2 + multi_targeted: torchattacks then targets only the runner-up class
                atk = torchattacks.FAB(model, norm="Linf", eps=float(value), steps=int(p["steps"]),
                                       n_restarts=int(p["restarts"]), alpha_max=float(p["alpha_max"]),
                                       eta=float(p["eta"]), beta=float(p["beta"]), seed=s,
                                       multi_targeted=True, n_classes=2)
            else:
                atk = torchattacks.Square(model, norm="Linf", eps=float(value), n_queries=int(p["queries"]),
                                          n_restarts=int(p["restarts"]), p_init=float(p["p_init"]),
                                          loss="margin", seed=s)
            adv = atk.forward(x[idx], y[idx])
        # both return the clean image where they fail; keep only successes inside the ball
        out[idx] = _project(adv.to(x), x[idx], value)
    return out


def worst_case(model: nn.Module, x: torch.Tensor, y: torch.Tensor, e: torch.Tensor, members: Sequence[str],
               seeds: Sequence[int], member_params: dict[str, dict] | None = None,
               stats: dict | None = None) -> torch.Tensor:
    """AutoAttack-style worst case: each of ``members`` in order attacks only the images that no
    earlier member flipped; the first success per image is kept. Unflipped images keep the
    result with the smallest margin. ``e``: N×1×1×1 ε. ``stats`` (optional) receives the number
    of images each member flipped (``flipped_by``)."""
    member_params = member_params or {}
    bad = [m for m in members if m in ("worst",) or m not in METHODS]
    if bad or not members:
        raise AttackError(f"worst.members must list attacks from {list(METHODS[:-1])}, got {list(members)}")
    out = x.clone()
    with torch.no_grad():
        logits = model(x)
    check_labels(logits, y)
    best_margin = margin(logits, y)
    done = best_margin < 0  # already not y: nothing to attack
    counts = {}
    for m in members:
        todo = (~done).nonzero().flatten()
        counts[m] = 0
        if not len(todo):
            continue
        p = method_params(m, member_params.get(m))
        adv = _run(model, x[todo], y[todo], m, e[todo], p, [seeds[i] for i in todo.tolist()], True, None)
        with torch.no_grad():
            mg = margin(model(adv), y[todo])
        improve = mg < best_margin[todo]
        out[todo[improve]] = adv[improve]
        best_margin[todo[improve]] = mg[improve]
        ok = mg < 0
        done[todo[ok]] = True
        counts[m] = int(ok.sum())
    if stats is not None:
        stats["flipped_by"] = counts
    return out


def check_adversarial(x: torch.Tensor, x_adv: torch.Tensor, eps, atol: float = 1e-6) -> None:
    """Raise AttackSanityError unless ‖x_adv − x‖∞ ≤ ε + atol (per image when ``eps`` is a
    tensor) and x_adv lies in [0,1]."""
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


@strict_fp32()
def first_order_eps(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One-gradient estimate of the smallest flipping L∞ ε: |margin| / ‖∇ₓ margin‖₁ per image.

    Exact for a linear model (and ignoring the [0,1] box), a first-order guess otherwise.

    Args:
        model: the classifier (eval mode is set and restored).
        x: N×C×H×W float32 images in [0,1].
        y: N labels (usually the predictions) whose margin is measured.
    Returns:
        N float32 values in [0,1] pixel units; ``inf`` where the gradient is zero.
    """
    check_inputs(x, y)
    was = model.training
    model.eval()
    try:
        xr = x.detach().requires_grad_(True)
        with torch.enable_grad():
            m = margin(model(xr), y.to(x.device))
            (g,) = torch.autograd.grad(m.sum(), xr)
    finally:
        model.train(was)
    norm = g.flatten(1).abs().sum(1)
    est = m.detach().abs() / norm
    return torch.where(norm > 0, est, torch.full_like(est, math.inf)).cpu()
