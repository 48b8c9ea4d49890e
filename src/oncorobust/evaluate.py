"""Attack evaluation: one row per test image for one (model, method, ε).

Columns of ``results/{ds}/attacks/{regime}/{method}/eps={eps}.csv``:
``sample_id, label, clean_pred, adv_pred, clean_prob, adv_prob, linf`` where ``clean_prob`` /
``adv_prob`` are the model's softmax probability of its own predicted class on the clean /
adversarial image and ``linf`` = ‖x_adv − x‖∞ in [0,1] pixel units.

``labels="predicted"`` pushes each image away from the model's own clean prediction (what the
paper's code did: ART called without labels); ``labels="true"`` away from the true label (the
usual robust accuracy). ``transfer_{method}``: the images are crafted on ``source_model`` (the
clean model) and scored on ``model`` (the paper's code scored its adversarially trained models
this way).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from .attacks import AttackSanityError, attack

log = logging.getLogger("oncorobust.evaluate")
COLUMNS = ["sample_id", "label", "clean_pred", "adv_pred", "clean_prob", "adv_prob", "linf"]


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    prob = torch.softmax(model(x), dim=1)
    conf, pred = prob.max(dim=1)
    return pred, conf


def evaluate_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ids: list[str], method: str,
                    eps: float, *, params: dict | None = None, labels: str = "predicted", seed: int = 0,
                    batch_size: int = 128, device: torch.device | str = "cpu",
                    source_model: nn.Module | None = None, progress: bool = False) -> pd.DataFrame:
    """Attack ``x`` (N×C×H×W in [0,1]) with ``method`` at ``eps`` and score ``model``.

    ``method`` is fgsm, bim or pgd, or ``transfer_<method>`` with ``source_model`` given.
    ``params``: steps, alpha_ratio, random_start, restarts for the iterative methods.
    Every batch also re-runs the attack at ε = 0 on its first images and requires unchanged
    predictions; every result is checked for ‖δ‖∞ ≤ ε and range by :func:`attack`.
    """
    if labels not in ("predicted", "true"):
        raise ValueError(f"labels must be 'predicted' or 'true', got {labels!r}")
    base = method.removeprefix("transfer_")
    craft = model
    if method.startswith("transfer_"):
        if source_model is None:
            raise ValueError(f"{method} needs the source (clean) model")
        craft = source_model.to(device).eval()
    model = model.to(device).eval()
    params = params or {}
    kw = {}
    if base in ("bim", "pgd"):
        kw = {"steps": params.get("steps"), "random_start": params.get("random_start"),
              "restarts": int(params.get("restarts", 1))}
        if params.get("alpha_ratio") is not None:
            kw["alpha"] = eps * float(params["alpha_ratio"])
        if base == "bim":
            kw.pop("random_start")
    rows = []
    starts = range(0, len(x), batch_size)
    for b, i in enumerate(tqdm(starts, desc=f"{method} ε={eps:g}", disable=not progress or None)):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        clean_pred, clean_prob = _predict(model, xb)
        target = yb if labels == "true" else _predict(craft, xb)[0]
        if b == 0:  # ε = 0 must reproduce the clean predictions
            zero = attack(craft, xb[:8], target[:8], base, 0.0, seed=seed, **{k: v for k, v in kw.items() if k != "alpha"})
            if not torch.equal(_predict(model, zero)[0], clean_pred[:8]):
                raise AttackSanityError(f"{method} at ε = 0 changed predictions: the model is not"
                                        " deterministic in eval mode, or the attack is broken")
        x_adv = attack(craft, xb, target, base, eps, seed=seed + b, **kw)
        adv_pred, adv_prob = _predict(model, x_adv)
        linf = (x_adv - xb).flatten(1).abs().amax(dim=1)
        rows.append(pd.DataFrame({
            "sample_id": ids[i:i + batch_size], "label": yb.cpu().numpy(),
            "clean_pred": clean_pred.cpu().numpy(), "adv_pred": adv_pred.cpu().numpy(),
            "clean_prob": clean_prob.cpu().numpy(), "adv_prob": adv_prob.cpu().numpy(),
            "linf": linf.cpu().numpy()}))
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=COLUMNS)
    log.info("%s ε=%g (%s labels): accuracy %.4f → %.4f, flip rate %.4f, n=%d", method, eps, labels,
             np.mean(out.clean_pred == out.label), np.mean(out.adv_pred == out.label),
             np.mean(out.adv_pred != out.clean_pred), len(out))
    return out[COLUMNS]
