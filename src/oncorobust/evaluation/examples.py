"""The example image of Fig. 1: a correctly classified test image that PGD flips.

The attack runs here, in the evaluation stage; :func:`oncorobust.reporting.figures.fig1_examples`
only draws the dict this returns.
"""

from __future__ import annotations

import torch
from torch import nn

from oncorobust.attacks.kernels import image_seeds
from oncorobust.attacks.methods import attack
from oncorobust.device import eval_mode
from oncorobust.evaluation.visibility import visibility

__all__ = ["example_for"]


def example_for(model: nn.Module, test: dict, classes: list[str], eps: float, *, seed: int = 0,
                batch_size: int | None = None, **pgd) -> dict | None:
    """The first test image that the model classifies correctly and PGD at ``eps`` flips (pushed
    away from its prediction).

    The split is attacked ``batch_size`` images at a time (None: all at once), stopping at the
    first batch that yields an example; each image's random start is keyed by ``seed`` and its
    index in the split, so the example does not depend on ``batch_size``.

    Args:
        model: the classifier (run in eval mode, every submodule's own mode restored afterwards).
        test: the split: ``{"x": N×C×H×W float32 images in [0,1], "y": N int64 labels, "ids": N
            sample IDs}``.
        classes: the class names (passed through to the figure).
        eps: PGD's ε in [0,1] pixel units.
        seed: the run's seed.
        batch_size: images attacked at once (None: all).
        **pgd: PGD's parameters (``steps``, ``random_start``, ``restarts``, ...).

    Returns:
        The dict :func:`~oncorobust.reporting.figures.fig1_examples` takes (``clean``, ``adv``:
        C×H×W arrays; ``eps``; ``classes``; ``clean_prob``, ``adv_prob``: class probabilities;
        ``sample_id``; ``ssim``, ``psnr``: how visible the change is, as in the attack CSVs,
        :func:`oncorobust.evaluation.visibility.visibility`), or None when no image qualifies.

    Raises:
        AttackError: bad images, labels or PGD parameters.
    """
    x, y = test["x"], test["y"]
    n = len(x)
    dev = next((p.device for p in model.parameters()), x.device)
    seeds = image_seeds(None, n, seed)
    step = max(1, int(batch_size)) if batch_size else max(1, n)
    with eval_mode(model):
        for start in range(0, n, step):
            xb, yb = x[start:start + step].to(dev), y[start:start + step].to(dev)
            with torch.no_grad():
                prob = torch.softmax(model(xb), 1)
            pred = prob.argmax(1)
            adv = attack(model, xb, pred, "pgd", eps, seeds=seeds[start:start + step], **pgd)
            with torch.no_grad():
                aprob = torch.softmax(model(adv), 1)
            ok = ((pred == yb) & (aprob.argmax(1) != pred)).nonzero().flatten()
            if len(ok):
                i = int(ok[0])
                clean, changed = xb[i].cpu().numpy(), adv[i].cpu().numpy()
                seen = visibility(clean[None], changed[None])
                return {"clean": clean, "adv": changed, "eps": eps, "classes": classes,
                        "clean_prob": prob[i].cpu().numpy(), "adv_prob": aprob[i].cpu().numpy(),
                        "sample_id": test["ids"][start + i], "ssim": float(seen["ssim"][0]),
                        "psnr": float(seen["psnr"][0])}
    return None
