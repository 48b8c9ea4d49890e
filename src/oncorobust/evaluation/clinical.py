"""Fragility in the clinic's terms: a flip is a *missed finding* or a *false alarm*.

A clinician weighs a missed cancer (a correctly detected malignant lesion pushed to benign) far
above a false alarm (a correctly cleared benign lesion pushed to malignant); accuracy and flip
rates mix the two. Given a dataset's positive class (:func:`positive_class`: the malignant /
abnormal class), per image of an attack result:

- *detected*: label = positive and clean prediction = positive; a **missed finding** when the
  adversarial prediction is not positive;
- *cleared*: label ≠ positive and clean prediction ≠ positive; a **false alarm** when the
  adversarial prediction is positive.

Misclassified images belong to neither (an attack on them cannot create a new clinical error of
that kind). Rates come with Wilson 95% CIs (:func:`oncorobust.evaluation.stats.wilson`). From the
sensitivity search's per-image flipping ε (``eps_upper``), the ε at which half (ε₅₀) and 10% (ε₁₀)
of the detected positives are missed, with percentile-bootstrap CIs
(:mod:`oncorobust.evaluation.robustness`); the same for false alarms on two classes (on more, a
cleared image's flip may land on another negative class, so its flipping ε is not a false alarm's).

Torch-free; the workflow's tables job and the cards call these functions.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from oncorobust.errors import ConfigError
from oncorobust.evaluation.robustness import QUANTILES, bootstrap, ci, quantile
from oncorobust.evaluation.stats import wilson

#: class names taken as the positive (harmful-to-miss) class, first match wins (case-insensitive)
POSITIVE_NAMES = ("malignant", "malignancy", "cancer", "abnormal", "positive", "tumor", "tumour",
                  "lesion", "disease", "pathological")

#: columns :func:`direction_counts` adds to each attack summary row
DIRECTION_COLUMNS = ("positive_class", "n_detected", "missed", "missed_rate", "missed_ci_low", "missed_ci_high",
                     "n_cleared", "false_alarms", "false_alarm_rate", "false_alarm_ci_low", "false_alarm_ci_high")


class PositiveClassError(ConfigError):
    """The positive class cannot be decided, or the configured one is not a class of the data."""


def positive_class(classes: Sequence[str], configured: str | None = None, *,
                   key: str = "positive_class") -> int:
    """The index of the positive (malignant / abnormal) class among ``classes``.

    Args:
        classes: the class names in label order (``stats.json``'s ``classes``).
        configured: the dataset's ``positive_class``, or None for the default: the first class
            named as in :data:`POSITIVE_NAMES`, else, on two classes, the second (label 1).
        key: the config key named in errors (e.g. ``datasets.ct.positive_class``).
    Returns:
        The label (0-based index) of the positive class.
    Raises:
        PositiveClassError: fewer than two classes, ``configured`` is not one of them (names are
            compared case-insensitively), or more than two classes and none is named positive.
    """
    names = [str(c) for c in classes]
    lower = [n.strip().lower() for n in names]
    if len(names) < 2:
        raise PositiveClassError(f"{key}: the data have {len(names)} class(es) {names}; missed findings and"
                                 " false alarms need at least two")
    if configured is not None and str(configured).strip():
        want = str(configured).strip().lower()
        if want not in lower:
            raise PositiveClassError(f"{key} = {configured!r} is not a class of the data {names}; give one of"
                                     " them (compared case-insensitively)")
        return lower.index(want)
    for word in POSITIVE_NAMES:
        if word in lower:
            return lower.index(word)
    if len(names) == 2:
        return 1
    raise PositiveClassError(f"{key}: none of the {len(names)} classes {names} is named as a positive finding"
                             f" ({', '.join(POSITIVE_NAMES)}); set {key} to the class whose miss is the harm")


def direction_counts(df: pd.DataFrame, positive: int, positive_name: str = "") -> dict:
    """Missed findings and false alarms of one per-image attack result.

    Args:
        df: the per-image frame (``label``, ``clean_pred``, ``adv_pred``; ``adv_pred`` = −1, an
            unknown wrong class from the bracket merge, counts as not positive).
        positive: the positive class's label.
        positive_name: its name, copied into the row.
    Returns:
        ``positive_class``, ``n_detected``, ``missed`` (count), ``missed_rate`` (% of detected) and
        its Wilson CI (``missed_ci_low``/``_high``, %), ``n_cleared``, ``false_alarms``,
        ``false_alarm_rate`` (% of cleared) and its CI; rates NaN when their group is empty.
    """
    label, clean, adv = (df[c].to_numpy() for c in ("label", "clean_pred", "adv_pred"))
    detected = (label == positive) & (clean == positive)
    cleared = (label != positive) & (clean != positive)
    out = {"positive_class": positive_name}
    # (group size column, count column, stem of the rate columns): the group, the images pushed across
    for (n_col, k_col, stem), group, crossed in ((("n_detected", "missed", "missed"), detected, adv != positive),
                                                 (("n_cleared", "false_alarms", "false_alarm"), cleared, adv == positive)):
        n, k = int(group.sum()), int((group & crossed).sum())
        lo, hi = wilson(k, n)
        out.update({n_col: n, k_col: k, f"{stem}_rate": 100 * k / n if n else math.nan,
                    f"{stem}_ci_low": 100 * lo if n else math.nan, f"{stem}_ci_high": 100 * hi if n else math.nan})
    return {c: out[c] for c in DIRECTION_COLUMNS}


def direction_eps(sens: pd.DataFrame, positive: int, n_classes: int, *, n_boot: int = 2000,
                  seed: int = 0) -> dict:
    """Per direction, the ε at which half (ε₅₀) and 10% (ε₁₀) of the images are pushed into that error.

    Args:
        sens: the test rows of a sensitivity CSV (``label``, ``clean_pred``, ``eps_upper`` in [0,1]
            pixel units, inf = not flipped up to ``eps_max``).
        positive: the positive class's label.
        n_classes: the model's class count (false alarms' ε only on two classes).
        n_boot, seed: bootstrap replicates and the seed of their generator.
    Returns:
        ``n_detected``, ``n_cleared`` and, for ``missed`` and ``false_alarm``, ``eps50_<d>``,
        ``eps10_<d>`` with ``_ci_low``/``_ci_high`` (pixel units; inf = beyond the searched range,
        NaN = no such image, or false alarms on more than two classes).
    """
    label, clean = sens.label.to_numpy(), sens.clean_pred.to_numpy()
    e = sens.eps_upper.to_numpy(dtype=float)
    groups = {"missed": (label == positive) & (clean == positive),
              "false_alarm": (label != positive) & (clean != positive)}
    out = {"n_detected": int(groups["missed"].sum()), "n_cleared": int(groups["false_alarm"].sum())}
    for d, mask in groups.items():
        usable = mask.any() and (d == "missed" or n_classes == 2)
        for name, q in QUANTILES.items():
            if usable:
                lo, hi = ci(bootstrap(e[mask], q, n_boot=n_boot, seed=seed))
                out.update({f"{name}_{d}": quantile(e[mask], q), f"{name}_{d}_ci_low": lo, f"{name}_{d}_ci_high": hi})
            else:
                out.update({f"{name}_{d}": math.nan, f"{name}_{d}_ci_low": math.nan, f"{name}_{d}_ci_high": math.nan})
    return out


def _rate(k, n, rate, lo, hi) -> str:
    if not n or not np.isfinite(rate):
        return "–"
    return f"{int(k)}/{int(n)} ({rate:.1f}% [{lo:.1f}, {hi:.1f}])"


def _eps(v, lo, hi) -> str:
    if not np.isfinite(v) and not v == math.inf:
        return "–"
    if v == math.inf:
        return "> searched range"
    return f"{v:.3g} [{lo:.3g}, {'∞' if hi == math.inf else f'{hi:.3g}'}]"


def directions_markdown(summary: pd.DataFrame, eps_rows: pd.DataFrame, eps_text=lambda e: f"{e:g}") -> str:
    """The missed-findings / false-alarms table in Markdown.

    Args:
        summary: attack summary rows with :data:`DIRECTION_COLUMNS` (``dataset``, ``regime``,
            ``method``, ``eps`` too); rows without a positive class are left out.
        eps_rows: :func:`direction_eps` rows with ``dataset``, ``regime``, ``positive_class``.
        eps_text: how an ε is written (e.g. :func:`oncorobust.epsilon.eps_text`).
    Returns:
        Markdown: per dataset the counts per regime, method and ε, then the per-direction ε₅₀/ε₁₀.
    """
    lines = []
    s = summary[summary.positive_class.astype(str).str.len() > 0] if len(summary) else summary
    for ds in dict.fromkeys(s.dataset.astype(str)) if len(s) else []:
        d = s[s.dataset.astype(str) == ds]
        pos = d.positive_class.iloc[0]
        lines += [f"## {ds} (positive class: {pos})", "",
                  f"A missed finding: a correctly detected *{pos}* case called otherwise under attack; a false"
                  f" alarm: a correctly cleared case called *{pos}*. Counts of the detected / cleared images, %"
                  " with Wilson 95% CI.", "",
                  "| regime | attack | ε | missed findings | false alarms |", "|---|---|---|---|---|"]
        for r in d.itertuples():
            lines.append(f"| {r.regime} | {r.method} | {eps_text(r.eps)} | "
                         f"{_rate(r.missed, r.n_detected, r.missed_rate, r.missed_ci_low, r.missed_ci_high)} | "
                         f"{_rate(r.false_alarms, r.n_cleared, r.false_alarm_rate, r.false_alarm_ci_low, r.false_alarm_ci_high)} |")
        e = eps_rows[eps_rows.dataset.astype(str) == ds] if len(eps_rows) else eps_rows
        if len(e):
            lines += ["", "Flipping ε per direction (sensitivity search, pixel units, bootstrap 95% CI):", "",
                      "| regime | ε₅₀ missed | ε₁₀ missed | ε₅₀ false alarm | ε₁₀ false alarm |",
                      "|---|---|---|---|---|"]
            for r in e.itertuples():
                lines.append(f"| {r.regime} | {_eps(r.eps50_missed, r.eps50_missed_ci_low, r.eps50_missed_ci_high)} | "
                             f"{_eps(r.eps10_missed, r.eps10_missed_ci_low, r.eps10_missed_ci_high)} | "
                             f"{_eps(r.eps50_false_alarm, r.eps50_false_alarm_ci_low, r.eps50_false_alarm_ci_high)} | "
                             f"{_eps(r.eps10_false_alarm, r.eps10_false_alarm_ci_low, r.eps10_false_alarm_ci_high)} |")
        lines.append("")
    if not lines:
        return "No dataset with a positive class (controls have none).\n"
    return "\n".join(lines)
