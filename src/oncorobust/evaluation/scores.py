"""The model's scores in the per-image CSVs: one logit column per class.

Attack, corruption and sensitivity CSVs carry the model's logits, one column per class k, named
``<prefix>_logit_<k>`` with a prefix of :data:`SCORE_PREFIXES`: ``clean`` (the clean image),
``adv`` (the attacked or corrupted image, the attack as run) and, in attack CSVs, ``true_adv``
(the image attacked away from its **true** label: the adversary of the AUROC table). Logits rather
than probabilities because float32 softmax saturates at 1 for confident models, which ties the
scores an AUROC ranks; a class's probability is the softmax of the row's logits, its log-odds
its logit minus the log-sum-exp of the others, and its logit margin the difference to the largest
other logit (:func:`class_scores`).

Torch is imported only by the functions that take tensors, so the tables job reads the columns
without it.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

#: the per-class logit columns of a per-image CSV are ``<prefix>_logit_<k>``
SCORE_PREFIXES = ("clean", "adv", "true_adv")


def pred_and_prob(logits: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:  # noqa: F821
    """The predicted class and its softmax probability from N×K logits.

    Args:
        logits: N×K logits (a torch tensor).
    Returns:
        (N int64 predicted classes, N float32 probabilities of those classes).
    """
    import torch

    conf, pred = torch.softmax(logits, dim=1).max(dim=1)
    return pred, conf


def logits_of(model, x):
    """The model's N×K logits on N×C×H×W float32 images in [0,1], without gradients, in the
    model's current mode.

    Args:
        model: the classifier (a ``torch.nn.Module``).
        x: N×C×H×W images on the model's device.
    Returns:
        N×K logits.
    """
    import torch

    with torch.no_grad():
        return model(x)


def logit_columns(prefix: str, logits) -> dict[str, np.ndarray]:
    """One column per class of an N×K logit tensor, named ``<prefix>_logit_<k>``.

    Args:
        prefix: one of :data:`SCORE_PREFIXES`.
        logits: N×K logits (a torch tensor or an array).
    Returns:
        ``{f"{prefix}_logit_{k}": N float32 values}`` for k = 0…K−1, in class order.
    """
    if prefix not in SCORE_PREFIXES:
        raise ValueError(f"prefix must be one of {SCORE_PREFIXES}, got {prefix!r}")
    values = logits.detach().to("cpu").float().numpy() if hasattr(logits, "detach") else np.asarray(logits, np.float32)
    return {f"{prefix}_logit_{k}": values[:, k] for k in range(values.shape[1])}


def score_column_names(frame: pd.DataFrame, prefix: str) -> list[str]:
    """The ``<prefix>_logit_<k>`` columns of a per-image frame, in class order (k = 0, 1, …).

    Args:
        frame: a per-image attack, corruption or sensitivity frame.
        prefix: one of :data:`SCORE_PREFIXES`.
    Returns:
        The column names; empty when the frame has none (written before the scores were recorded).
    """
    pattern = re.compile(rf"{re.escape(prefix)}_logit_(\d+)$")
    found = sorted((int(m.group(1)), c) for c in frame.columns if (m := pattern.match(str(c))))
    return [c for _, c in found]


def class_scores(frame: pd.DataFrame, prefix: str, positive: int) -> pd.DataFrame:
    """One class's probability, log-odds and logit margin from a frame's ``<prefix>_logit_<k>`` columns.

    Args:
        frame: a per-image frame with the logit columns of ``prefix``.
        prefix: one of :data:`SCORE_PREFIXES`.
        positive: the class index (0-based).
    Returns:
        A frame indexed like ``frame`` with ``prob`` (the class's softmax probability), ``log_odds``
        (log(prob / (1 − prob)) = its logit minus the log-sum-exp of the others, computed without
        saturation: a strictly increasing function of ``prob`` for any number of classes) and
        ``margin`` (its logit minus the largest other logit: > 0 exactly where the class is
        predicted). With two classes ``log_odds`` equals ``margin``.
    Raises:
        KeyError: the frame has no logit columns of ``prefix`` (naming what to do), or fewer classes
            than ``positive`` + 1.
    """
    from scipy.special import logsumexp, softmax

    cols = score_column_names(frame, prefix)
    if len(cols) <= positive:
        raise KeyError(f"no {prefix}_logit_{positive} column (columns: {len(cols)} of {prefix}_logit_*): the"
                       " file was written before oncorobust recorded the model's scores; rerun its job")
    z = frame[cols].to_numpy(np.float64)
    others = np.delete(z, positive, axis=1)
    if not others.shape[1]:
        raise KeyError(f"{prefix}_logit_*: one class only; a class score needs at least two")
    return pd.DataFrame({"prob": softmax(z, axis=1)[:, positive],
                         "log_odds": z[:, positive] - logsumexp(others, axis=1),
                         "margin": z[:, positive] - others.max(axis=1)}, index=frame.index)
