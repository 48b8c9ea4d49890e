"""Deferring the most sensitive images to a human: Table 2 and deferral curves.

Table 2 of the paper drops the 20% of test images whose smallest flipping ε is lowest and reports
accuracy on the rest — with the threshold chosen **on the test set itself**. Here the threshold is
the ``exclude_fraction`` quantile of min-flip ε on the **validation** split, applied to the test
split (test labels never choose it); the paper's variant is kept as a clearly labelled row so the
selection effect is visible.

Deferral curves: accuracy on the retained test images as the deferred fraction grows, for three
policies — adversarial sensitivity (smallest confirmed flipping ε, ``eps_upper``, first; ties, e.g.
unflippable images at ``inf``, broken by lower confidence first), the one-gradient first-order
estimate of that ε (``first_order``), model confidence (lowest max-softmax first) and random (its
expected accuracy, which equals the overall accuracy at every fraction).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from oncorobust.errors import DataError
from oncorobust.evaluation.stats import wilson

def _acc_row(correct: np.ndarray) -> dict:
    n, k = len(correct), int(np.sum(correct))
    lo, hi = wilson(k, n)
    return {"n": n, "accuracy": 100 * k / n if n else np.nan, "ci_low": 100 * lo, "ci_high": 100 * hi}


def table2_rows(sens: pd.DataFrame, dataset: str, regime: str, exclude_fraction: float,
                paper_before: float = np.nan, paper_after: float = np.nan) -> list[dict]:
    """Two rows: threshold from validation (ours) and from the test split (as in the paper).

    Args:
        sens: per-image sensitivity results, one row per image; columns ``split`` ("val"/"test"),
            ``min_flip_eps`` (smallest flipping ε in [0,1] pixel units, ``inf`` if never flipped),
            bool ``correct`` and optionally ``sample_id`` (named in the error).
        dataset: the dataset name, copied into the rows and messages.
        regime: the training regime name, copied into the rows and messages.
        exclude_fraction: the fraction in [0,1] of images to defer (the quantile of ``min_flip_eps``,
            ``method="lower"``, taken as the threshold; test images with ε > threshold are kept).
        paper_before: the paper's accuracy (%) before exclusion, copied into both rows (NaN if none).
        paper_after: the paper's accuracy (%) after exclusion, copied into both rows (NaN if none).
    Returns:
        Two dicts (validation-quantile row, then test-quantile row) with ``threshold_eps``,
        ``excluded_fraction``, ``n_test``/``n_retained`` and accuracies in % with Wilson 95% CIs
        (``acc_before[_ci_low|_ci_high]``, ``acc_after[...]``), plus the inputs above.
    Raises:
        DataError: the val or test split has no rows, or an image's ``min_flip_eps`` is NaN
            (``inf``, never flipped, is valid).
    """
    val, test = sens[sens.split == "val"], sens[sens.split == "test"]
    _require_rows(val, f"{dataset}/{regime} validation")
    _require_rows(test, f"{dataset}/{regime} test")
    for part, name in ((val, "validation"), (test, "test")):
        eps = pd.to_numeric(part.min_flip_eps, errors="coerce").to_numpy(dtype=float)
        if np.isnan(eps).any():
            bad = part.sample_id[np.isnan(eps)].astype(str).tolist() if "sample_id" in part else []
            raise DataError(f"{dataset}/{regime} {name} split: {int(np.isnan(eps).sum())} image(s) have no"
                            f" flipping ε (min_flip_eps NaN{', e.g. ' + ', '.join(bad[:3]) if bad else ''}):"
                            " a threshold on them would be NaN and exclude every image. Rerun the"
                            " sensitivity step (an image never flipped has ε = inf, not NaN)")
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
    """Accuracy (%) on retained test images vs deferred fraction for each policy.

    Args:
        test: the test split's per-image rows; columns bool ``correct``, ``confidence`` (max softmax),
            ``min_flip_eps`` (ε in [0,1] pixel units, ``inf`` if never flipped) and optionally
            ``first_order_eps`` (adds the ``first_order`` policy).
        fractions: deferred fractions in [0,1]; default 0, 0.02, ..., 0.50.
    Returns:
        Long frame, one row per (fraction, policy): ``policy`` ("sensitivity", "confidence",
        ["first_order",] "random"), ``deferred_fraction``, ``n_retained``, ``accuracy`` (%, NaN if none kept).
    Raises:
        DataError: ``test`` has no rows.
    """
    fractions = np.round(np.arange(0, 0.51, 0.02), 2) if fractions is None else np.asarray(fractions)
    _require_rows(test, "test")
    n = len(test)
    correct = test.correct.to_numpy().astype(float)
    orders = {
        "sensitivity": np.lexsort((test.confidence.to_numpy(), test.min_flip_eps.to_numpy())),
        "confidence": np.argsort(test.confidence.to_numpy(), kind="stable"),
    }
    if "first_order_eps" in test:  # the one-gradient estimate: is the search worth more?
        orders["first_order"] = np.lexsort((test.confidence.to_numpy(), test.first_order_eps.to_numpy()))
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
    (= mean accuracy over the range, in %).

    Args:
        curves: the frame of :func:`deferral_curves` (``policy``, ``deferred_fraction``, ``accuracy``).
    Returns:
        One row per policy, in order of first appearance: ``policy``, ``auc`` (% ; with a single
        fraction, its accuracy).
    """
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
