"""Attack evaluation: one row per test image for one (model, method, ε).

Columns of ``results/{ds}/attacks/{regime}/{method}/eps={eps}.csv``:
``sample_id, label, clean_pred, adv_pred, clean_prob, adv_prob, linf, l2, psnr, ssim`` where
``clean_prob`` / ``adv_prob`` are the model's softmax probability of its own predicted class on the
clean / adversarial image, ``linf`` = ‖x_adv − x‖∞ and ``l2`` = ‖x_adv − x‖₂ in [0,1] pixel units,
and ``psnr`` (dB) / ``ssim`` how visible the change is (:mod:`oncorobust.evaluation.visibility`);
then the model's logits, one column per class k (:data:`SCORE_PREFIXES`): ``clean_logit_<k>`` on the
clean image, ``adv_logit_<k>`` on the attacked image (the attack as run: ``adv_pred`` is their
argmax) and ``true_adv_logit_<k>`` on the image attacked away from the **true** label, the adversary
of the AUROC table (:mod:`oncorobust.evaluation.clinical_metrics`; an attack that stops at the
first flip — ``worst``, FAB, Square — leaves an already misclassified image, and its score, as it
is). With ``labels="true"``, and for every image whose label the crafting model predicts, the two
attacks are the same and so are their columns; under ``labels="predicted"`` the other images are
attacked a second time, with their true label. Why logits: :mod:`oncorobust.evaluation.scores`.

Methods: see :mod:`oncorobust.attacks.methods` (the paper's fgsm/bim/pgd, apgd_ce, apgd_margin, fab, square
and ``worst``, the per-image worst case over several). ``labels="predicted"`` pushes each image away from the model's own clean prediction (what the
paper's code did: ART called without labels); ``labels="true"`` away from the true label (the
usual robust accuracy). ``transfer_{method}``: the images are crafted on ``source_model`` (the
clean model) and scored on ``model`` (the paper's code scored its adversarially trained models
this way).
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from oncorobust.attacks.checks import AttackSanityError
from oncorobust.attacks.kernels import image_seeds
from oncorobust.attacks.methods import attack, method_params
from oncorobust.device import eval_mode, strict_fp32
from oncorobust.errors import AttackError
from oncorobust.progress import meter, monitored
from oncorobust.pipeline.passes import attack_passes
from oncorobust.spec import EXACT_AT_ZERO_METHODS, METHODS, ZERO_CHECK_METHOD, base_method, is_transfer
from oncorobust.evaluation.scores import SCORE_PREFIXES, logit_columns, logits_of, pred_and_prob, score_column_names
from oncorobust.evaluation.visibility import VISIBILITY_COLUMNS, visibility

log = logging.getLogger("oncorobust.evaluation.evaluate")
COLUMNS = ["sample_id", "label", "clean_pred", "adv_pred", "clean_prob", "adv_prob", "linf", *VISIBILITY_COLUMNS]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's predicted class and its softmax probability, in the model's current mode.

    Args:
        model: the classifier (N×C×H×W images in [0,1] → N×classes logits).
        x: N×C×H×W float32 images in [0,1].

    Returns:
        (N int64 predicted classes, N float32 probabilities of those classes).
    """
    return pred_and_prob(model(x))


@strict_fp32()
def evaluate_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ids: list[str], method: str,
                    eps: float, *, params: dict | None = None, labels: str = "predicted", seed: int = 0,
                    batch_size: int = 128, device: torch.device | str = "cpu",
                    source_model: nn.Module | None = None, early_exit: bool = False,
                    member_params: dict[str, dict] | None = None, progress: bool = False) -> pd.DataFrame:
    """Attack ``x`` with ``method`` at ``eps`` and score ``model``, one row per image.

    Args:
        model: the classifier scored (run in eval mode, every submodule's own mode restored
            afterwards; moved to ``device``).
        x: N×C×H×W float32 test images in [0,1]; ``y``: N true labels; ``ids``: N sample IDs.
        method: one of :data:`~oncorobust.spec.METHODS`, or ``transfer_<method>`` with
            ``source_model`` (the images are crafted on it and scored on ``model``).
        eps: L∞ budget in [0,1] pixel units.
        params: the method's parameters (config ``attacks.<method>``; its registry defaults, :func:`~oncorobust.attacks.methods.method_params`).
        labels: ``predicted`` (push away from the crafting model's prediction) or ``true``.
        seed: the run's seed; each image's random start is seeded from it and its sample ID, so
            results do not depend on ``batch_size``.
        batch_size: images attacked at once.
        early_exit: BIM/PGD stop at an image's first successful iterate (``attacks.early_exit``).
        member_params: parameters of ``worst``'s members.
        source_model: for ``transfer_<method>``, the model the images are crafted on (eval mode
            as ``model``).
        device: where the models run.
        progress: show a progress bar over the batches.
    Returns:
        A DataFrame with :data:`COLUMNS`, then the logit columns of :data:`SCORE_PREFIXES`.
    Raises:
        AttackError: bad arguments; AttackSanityError: a result outside the ε-ball or [0,1], or
        predictions changed by the attack at ε = 0 (a non-deterministic model or a broken attack).
    """
    if labels not in ("predicted", "true"):
        raise AttackError(f"labels must be 'predicted' or 'true', got {labels!r}")
    base = base_method(method)
    p = method_params(base, params)  # unknown methods and parameters fail before any work
    if len(ids) != len(x) or len(y) != len(x):
        raise AttackError(f"{len(x)} images, {len(y)} labels and {len(ids)} IDs: need one each per image")
    what = f"{method} ε={eps:g}"
    if is_transfer(method) and source_model is None:
        raise AttackError(f"{method} needs the source (clean) model")
    seeds = image_seeds(ids, len(x), seed)
    planned = len(x) * (attack_passes(base, p, {m: method_params(m, (member_params or {}).get(m))
                                                for m in p.get("members", [])}) + 3)
    with contextlib.ExitStack() as modes:
        model = monitored(modes.enter_context(eval_mode(model.to(device))), what)
        craft = model
        if is_transfer(method):
            craft = monitored(modes.enter_context(eval_mode(source_model.to(device))), what)
        with meter(f"attack {what}", planned, images=len(x)) as progress_meter:
            out = _evaluate(model, craft, x, y, ids, seeds, method, base, eps, params, labels, batch_size, device,
                            early_exit, member_params, progress, progress_meter)
    log.info("%s ε=%g (%s labels): accuracy %.4f → %.4f, flip rate %.4f, n=%d", method, eps, labels,
             np.mean(out.clean_pred == out.label), np.mean(out.adv_pred == out.label),
             np.mean(out.adv_pred != out.clean_pred), len(out))
    return out[COLUMNS + [c for p in SCORE_PREFIXES for c in score_column_names(out, p)]]


def _evaluate(model, craft, x, y, ids, seeds, method, base, eps, params, labels, batch_size, device,
              early_exit, member_params, progress, progress_meter) -> pd.DataFrame:
    """The batch loop of :func:`evaluate_attack` (models already on ``device``, in eval mode)."""
    kw = dict(params or {}, early_exit=early_exit, member_params=member_params)
    # ε = 0 must reproduce the clean predictions (Square/FAB/worst: checked with cheap PGD)
    zero_method = base if base in EXACT_AT_ZERO_METHODS else ZERO_CHECK_METHOD
    zero_kw = dict(kw) if zero_method == base else {}
    if "restarts" in METHODS[zero_method].defaults:
        zero_kw["restarts"] = 1  # at ε = 0 no restart can move an image: one run suffices
    rows = []
    per_image = progress_meter.total / max(len(x), 1)
    starts = range(0, len(x), batch_size)
    for b, i in enumerate(tqdm(starts, desc=f"{method} ε={eps:g}", disable=not progress or None)):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        sb = seeds[i:i + batch_size]
        clean_logits = logits_of(model, xb)
        clean_pred, clean_prob = pred_and_prob(clean_logits)
        target = yb if labels == "true" else (clean_pred if craft is model else predict(craft, xb)[0])
        if b == 0:
            zero = attack(craft, xb[:8], target[:8], zero_method, 0.0, seeds=sb[:8], **zero_kw)
            if not torch.equal(predict(model, zero)[0], clean_pred[:8]):
                raise AttackSanityError(f"{method} at ε = 0 changed predictions: the model is not"
                                        " deterministic in eval mode (dropout kept active, as in MC dropout, or"
                                        " BatchNorm saved in training mode inside a TorchScript/torch.export"
                                        " file: export it after model.eval()), or the attack is broken")
        x_adv = attack(craft, xb, target, base, eps, seeds=sb, **kw)
        adv_logits = logits_of(model, x_adv)
        adv_pred, adv_prob = pred_and_prob(adv_logits)
        true_adv_logits = adv_logits.clone()
        redo = (target != yb).nonzero().flatten()
        if len(redo):  # the AUROC's adversary pushes every image away from its true label
            progress_meter.total += len(redo) * per_image  # the plan grows by these images' second attack
            x_true = attack(craft, xb[redo], yb[redo], base, eps, seeds=[sb[j] for j in redo.tolist()], **kw)
            true_adv_logits[redo] = logits_of(model, x_true)
        linf = (x_adv - xb).flatten(1).abs().amax(dim=1)
        rows.append(pd.DataFrame({
            "sample_id": ids[i:i + batch_size], "label": yb.cpu().numpy(),
            "clean_pred": clean_pred.cpu().numpy(), "adv_pred": adv_pred.cpu().numpy(),
            "clean_prob": clean_prob.cpu().numpy(), "adv_prob": adv_prob.cpu().numpy(),
            "linf": linf.cpu().numpy(), **visibility(xb.cpu().numpy(), x_adv.cpu().numpy()),
            **logit_columns("clean", clean_logits), **logit_columns("adv", adv_logits),
            **logit_columns("true_adv", true_adv_logits)}))
        progress_meter.finished(len(xb))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=COLUMNS)
