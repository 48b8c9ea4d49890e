"""Deferring the most sensitive images to a human: Table 2 and deferral curves.

Table 2 of the paper drops the 20% of test images whose smallest flipping ε is lowest and reports
accuracy on the rest — with the threshold chosen **on the test set itself**. Here the threshold is
the ``exclude_fraction`` quantile of min-flip ε on the **validation** split, applied to the test
split (test labels never choose it); the paper's variant is kept as a clearly labelled row so the
selection effect is visible.

Deferral curves: accuracy on the retained test images as the deferred fraction grows, for three
policies — adversarial sensitivity (smallest min-flip ε first; ties, e.g. unflippable images at
``inf``, broken by lower confidence first), model confidence (lowest max-softmax first) and random
(its expected accuracy, which equals the overall accuracy at every fraction).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from .errors import DataError
from .sensitivity import min_flip_eps
from .stats import wilson

SENSITIVITY_COLUMNS = ["sample_id", "split", "label", "clean_pred", "correct", "min_flip_eps", "confidence"]


def sensitivity_frame(model: nn.Module, splits: dict[str, dict], *, device="cpu", **search) -> pd.DataFrame:
    """One row per image of each split: prediction, confidence and min-flip ε (``search`` kwargs
    go to :func:`~oncorobust.sensitivity.min_flip_eps`)."""
    model = model.to(device).eval()
    rows = []
    for split, t in splits.items():
        x = t["x"].to(device)
        with torch.no_grad():
            prob = torch.softmax(model(x), 1)
        conf, pred = prob.max(1)
        eps = min_flip_eps(model, x, **search)
        rows.append(pd.DataFrame({
            "sample_id": t["ids"], "split": split, "label": t["y"].numpy(), "clean_pred": pred.cpu().numpy(),
            "correct": (pred.cpu() == t["y"]).numpy(), "min_flip_eps": eps.numpy(),
            "confidence": conf.cpu().numpy()}))
    return pd.concat(rows, ignore_index=True)[SENSITIVITY_COLUMNS]


def _acc_row(correct: np.ndarray) -> dict:
    n, k = len(correct), int(np.sum(correct))
    lo, hi = wilson(k, n)
    return {"n": n, "accuracy": 100 * k / n if n else np.nan, "ci_low": 100 * lo, "ci_high": 100 * hi}


def table2_rows(sens: pd.DataFrame, dataset: str, regime: str, exclude_fraction: float,
                paper_before: float = np.nan, paper_after: float = np.nan) -> list[dict]:
    """Two rows: threshold from validation (ours) and from the test split (as in the paper)."""
    val, test = sens[sens.split == "val"], sens[sens.split == "test"]
    _require_rows(val, f"{dataset}/{regime} validation")
    _require_rows(test, f"{dataset}/{regime} test")
    rows = []
    for how, ref in (("validation quantile (ours)", val), ("test quantile (as in the paper)", test)):
        thr = float(np.quantile(ref.min_flip_eps.to_numpy(), exclude_fraction, method="lower"))
        keep = test.min_flip_eps.to_numpy() > thr  # strictly more robust than the threshold
        before, after = _acc_row(test.correct.to_numpy()), _acc_row(test.correct.to_numpy()[keep])
        rows.append({"dataset": dataset, "regime": regime, "threshold_from": how, "threshold_eps": thr,
                     "target_fraction": exclude_fraction, "excluded_fraction": 1 - keep.mean(),
                     "n_test": before["n"], "acc_before": before["accuracy"],
                     "acc_before_ci_low": before["ci_low"], "acc_before_ci_high": before["ci_high"],
                     "n_retained": after["n"], "acc_after": after["accuracy"],
                     "acc_after_ci_low": after["ci_low"], "acc_after_ci_high": after["ci_high"],
                     "paper_before": paper_before, "paper_after": paper_after})
    return rows


def deferral_curves(test: pd.DataFrame, fractions=None) -> pd.DataFrame:
    """Accuracy (%) on retained test images vs deferred fraction for each policy."""
    fractions = np.round(np.arange(0, 0.51, 0.02), 2) if fractions is None else np.asarray(fractions)
    _require_rows(test, "test")
    n = len(test)
    correct = test.correct.to_numpy().astype(float)
    orders = {
        "sensitivity": np.lexsort((test.confidence.to_numpy(), test.min_flip_eps.to_numpy())),
        "confidence": np.argsort(test.confidence.to_numpy(), kind="stable"),
    }
    rows = []
    for f in fractions:
        k = int(round(f * n))
        for policy, order in orders.items():
            kept = correct[order[k:]]
            rows.append({"policy": policy, "deferred_fraction": f, "n_retained": len(kept),
                         "accuracy": 100 * kept.mean() if len(kept) else np.nan})
        rows.append({"policy": "random", "deferred_fraction": f, "n_retained": n - k,
                     "accuracy": 100 * correct.mean()})
    return pd.DataFrame(rows)


def curve_auc(curves: pd.DataFrame) -> pd.DataFrame:
    """Area under each accuracy-vs-deferred-fraction curve, divided by the fraction range
    (= mean accuracy over the range, in %)."""
    out = []
    for policy, c in curves.groupby("policy", sort=False):
        c = c.sort_values("deferred_fraction")
        f, a = c.deferred_fraction.to_numpy(), c.accuracy.to_numpy()
        auc = float(np.trapezoid(a, f) / (f[-1] - f[0])) if f[-1] > f[0] else float(np.mean(a))
        out.append({"policy": policy, "auc": auc})  # one fraction only: its accuracy
    return pd.DataFrame(out)


def _require_rows(part: pd.DataFrame, what: str) -> None:
    """A DataError instead of a quantile/mean of nothing when a split has no sensitivity rows."""
    if part.empty:
        raise DataError(f"the {what} split has no rows in the sensitivity results: rerun the"
                        " sensitivity step (it scores the val and test splits)")
