"""The cost model in gradient passes: forward-pass equivalents per image of each attack, of the
health checks and of the sensitivity search, and the gradient evaluations of a training epoch.

The attack, health and sensitivity code read these for their progress lines ("572 passes (91%
of the plan)"), and :mod:`oncorobust.pipeline.resources` turns them into run times. They live
apart from the memory and run-time constants so that an edit of a resource formula changes no
job's code hash (:mod:`oncorobust.pipeline.codehash`): resources never enter a rerun key. No torch
or Snakemake import.
"""

from __future__ import annotations

import math

from oncorobust.spec import METHODS, base_method


def sensitivity_passes(c: dict) -> float:
    """Forward-pass equivalents per image of one sensitivity search (``flip_eps_bracket``) with
    the ``sensitivity`` config ``c``: every bisection round a full attack of every member and
    restart (the worst case: an image that flips exits early), the refinement's rounds, FAB.

    Args:
        c: the ``sensitivity`` block; ``eps_max`` and ``tol`` required (pixel units), ``rel_tol``, ``method``,
            ``steps``, ``restarts``, ``refine_steps``, ``fab_check``, ``fab_steps`` optional.
    Returns:
        Forward-pass equivalents per image.
    """
    rounds = 1 + max(0, math.ceil(math.log2(float(c["eps_max"]) / float(c["tol"]))))
    rel = float(c.get("rel_tol", 0))
    if rel > 0:  # finer than tol for small ε: down to rel_tol of 1/100 of eps_max
        rounds = max(rounds, 1 + math.ceil(math.log2(100 / rel)))
    per_step = 3 * float(c.get("restarts", 1)) * len(str(c.get("method", "apgd_t+apgd_margin+pgd")).split("+"))
    refine = float(c.get("refine_steps", 0))
    refine_rounds = 1 + math.ceil(math.log2(0.1 / rel)) if refine and rel > 0 else rounds
    fab = 6 * float(c.get("fab_steps", 100)) if c.get("fab_check", True) else 0
    return per_step * (float(c.get("steps", 10)) * rounds + refine * refine_rounds) + fab + 5


def health_passes(pgd: dict, square_queries: float) -> float:
    """Forward-pass equivalents per image of the model-running health checks
    (:func:`oncorobust.evaluation.health.model_checks`): PGD × 1, × restarts and × 2 steps × 2 restarts,
    APGD at ε = 1, Square, gradients and determinism.

    Args:
        pgd: the ``attacks.pgd`` parameters (``steps``, ``restarts``; defaults 10 and 1).
        square_queries: queries of the health check's Square run (0: none).
    Returns:
        Forward-pass equivalents per image.
    """
    steps, restarts = float(pgd.get("steps", 10)), float(pgd.get("restarts", 1))
    return 3 * (20 + steps * (1 + restarts + 4 * restarts)) + float(square_queries) + 6


def train_grad_evals(regime: str, adv: dict | None, n_train: int, n_val: int) -> dict[str, float]:
    """Gradient evaluations of one training epoch (:func:`oncorobust.training.train.fit`): image
    forward+backward passes through the model, each inner attack step counted as one.

    Per training image: ``clean`` 1; ``adv_pgd`` 1 + iters × (1 − clean_fraction) (the attacked
    share of each batch); ``adv_fast`` 2 (one FGSM step, one update); ``adv_free`` free_replays
    (each replay of a minibatch is one pass; the epochs are divided by the replays, so the total
    matches clean training); ``adv_trades`` / ``adv_mart`` iters + 2 (the inner steps, then the
    clean and the adversarial copy in the outer loss: ``RegimeLoss.image_passes``; the TRADES KL
    target's forward-only pass not counted). Adversarial regimes select the epoch by PGD accuracy
    on up to ``robust_val_max`` validation images: ``iters`` more per such image.

    Args:
        regime: the base regime (``clean``, ``adv_pgd``, ``adv_fast``, ``adv_free``, ``adv_trades``,
            ``adv_mart``).
        adv: the dataset's ``adversarial_training`` block (``iters``, ``clean_fraction``,
            ``free_replays``, ``robust_val_max``); None or ignored for ``clean``.
        n_train: training images.
        n_val: validation images.
    Returns:
        ``{"train": …, "validation": …, "per_image": …}``: gradient evaluations per epoch of the
        update loop and of the validation attack, and per training image per epoch.
    Raises:
        ValueError: an unknown regime.
    """
    adv = adv or {}
    iters = float(adv.get("iters", 7))
    per_image = {"clean": 1.0, "adv_pgd": 1 + iters * (1 - float(adv.get("clean_fraction", 0.5))),
                 "adv_fast": 2.0, "adv_free": float(adv.get("free_replays", 4)),
                 "adv_trades": iters + 2, "adv_mart": iters + 2}
    if regime not in per_image:
        raise ValueError(f"unknown regime {regime!r}; choose from {', '.join(per_image)}")
    val = 0.0 if regime == "clean" else min(int(n_val), int(adv.get("robust_val_max", 512))) * iters
    return {"train": per_image[regime] * int(n_train), "validation": val, "per_image": per_image[regime]}


def attack_passes(method: str, params: dict, member_params: dict | None = None) -> float:
    """Forward-pass equivalents per image of one attack (all restarts counted; an upper bound:
    early exit stops on flipped images). ``worst``: the sum of its members' (``params["members"]``,
    each with its ``member_params`` entry; without them the defaults' Square-dominated figure).

    Args:
        method: a result name (a method of :data:`~oncorobust.spec.METHODS`, or ``transfer_`` + one).
        params: its parameters (``attacks.<method>``; missing keys take the formula's defaults).
        member_params: member name → its parameters, for ``worst``.
    Returns:
        Forward-pass equivalents per image.
    Raises:
        KeyError: ``method`` (or a member) is not a known method.
    """
    base = base_method(method)
    if METHODS[base].family == "ensemble" and member_params is not None and params.get("members"):
        return sum(attack_passes(m, member_params.get(m) or {}) for m in params["members"]) + 2
    return METHODS[base].passes(params)
