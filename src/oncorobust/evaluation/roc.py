"""AUROC with DeLong confidence intervals, paired AUROC comparisons and operating points.

What is computed, for labels ``y`` (1 = positive, e.g. malignant) and scores (higher = more
positive) on the same N cases:

- :func:`delong`: the AUROCs of k score vectors and their k×k covariance by DeLong's method
  (DeLong, DeLong & Clarke-Pearson 1988, *Biometrics* 44:837), computed with the fast midrank
  algorithm of Sun & Xu 2014 (*IEEE Signal Processing Letters* 21:1389), O(k·N log N) instead of
  the O(k·n_pos·n_neg) of the definition. Ties count 1/2.
- :func:`auroc_ci`: one AUROC with its DeLong standard error and normal interval clipped to
  [0, 1], as pROC's default ``ci.auc(method = "delong")``.
- :func:`auroc_difference`: the paired DeLong test of two correlated AUROCs on the same cases
  (pROC's ``roc.test(method = "delong", paired = TRUE)``).
- :func:`operating_point`: a decision threshold chosen on a validation split (Youden's J, or
  the largest threshold reaching a fixed sensitivity); :func:`sens_spec`: sensitivity and
  specificity at a threshold on another split, with Wilson intervals.
- :func:`one_vs_rest`: per-class one-vs-rest AUROCs with DeLong intervals and their macro mean.

Hand-written because no well-kept Python library implements DeLong's variance: scikit-learn
gives the AUROC point estimate (``sklearn.metrics.roc_auc_score``), which this module uses for
every reported AUROC and which the tests cross-check against the midrank AUROCs of
:func:`delong`; the variance is checked against the O(n_pos·n_neg) definition, and the intervals'
coverage by simulation (``tests/test_roc.py``).

Only ranks matter: scores may be logit margins or probabilities. Logit margins (for two classes
z₁ − z₀; for class c of many, z_c − logsumexp of the other logits, which ranks as the softmax
probability of c) avoid the ties that saturated float32 probabilities (exactly 0 or 1) create.

Torch-free (numpy, scipy, pandas, scikit-learn).
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score, roc_curve

from oncorobust.errors import OncorobustError
from oncorobust.evaluation.stats import Z95, wilson

#: the columns of :func:`one_vs_rest`'s frame
OVR_COLUMNS = ("class", "auroc", "ci_low", "ci_high", "n_pos", "n_neg")

#: the operating-point rule names :func:`operating_point` accepts besides a sensitivity in (0, 1]
RULES = ("youden",)


class RocError(OncorobustError, ValueError):
    """An AUROC, operating point or sensitivity was asked of unusable inputs (the message names
    the argument, the counts and what to do)."""


# --------------------------------------------------------------------------- input checks

def _labels(y, where: str) -> np.ndarray:
    """``y`` as a 1-D bool array (True = positive); raises unless every value is 0 or 1."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise RocError(f"{where}: the labels must be a 1-D array of N values in {{0, 1}}, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.number):
        raise RocError(f"{where}: the labels must be 0/1 or bool, got dtype {arr.dtype}")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        shown = sorted({str(v) for v in arr[bad][:5].tolist()})
        raise RocError(f"{where}: the labels must be 0 (negative) or 1 (positive); {int(bad.sum())} of {arr.size}"
                       f" are not (e.g. {', '.join(shown)}); binarise them first (e.g. y == positive_class)")
    return arr == 1


def _scores(scores, n: int, where: str, name: str = "scores") -> np.ndarray:
    """``scores`` as a float64 k×N array; raises on a shape that is not N or k×N, or non-finite values."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != n:
        raise RocError(f"{where}: {name} must have shape (N,) or (k, N) with N = {n} (the number of labels),"
                       f" got {np.shape(scores)}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise RocError(f"{where}: {name} contain {int(bad.sum())} non-finite value(s) (NaN or ±inf) out of"
                       f" {arr.size}; drop those cases or fix the model outputs")
    return arr


def _z(level: float, where: str) -> float:
    """The two-sided normal quantile of a ``level`` interval (:data:`Z95` at 0.95)."""
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise RocError(f"{where}: level must be a number in (0, 1), e.g. 0.95; got {level!r}")
    return Z95 if level == 0.95 else float(norm.ppf(0.5 + level / 2))


def _need_both(pos: np.ndarray, where: str, what: str = "the labels") -> None:
    m, n = int(pos.sum()), int((~pos).sum())
    if m == 0 or n == 0:
        raise RocError(f"{where}: {what} have {m} positive(s) and {n} negative(s); an AUROC or threshold needs"
                       " at least one of each (use a split that holds both classes, e.g. a stratified one)")


# --------------------------------------------------------------------------- DeLong

def _components(pos: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Midrank AUROCs (k,) and DeLong's structural components V10 (k×m, per positive) and V01
    (k×n, per negative) by Sun & Xu's algorithm; ``pos`` has both classes."""
    x, yneg = s[:, pos], s[:, ~pos]
    m, n = x.shape[1], yneg.shape[1]
    tz = rankdata(np.concatenate([x, yneg], axis=1), axis=1)   # midranks among all cases
    tx = rankdata(x, axis=1)                                    # among the positives
    ty = rankdata(yneg, axis=1)                                 # among the negatives
    v10 = (tz[:, :m] - tx) / n            # per positive: share of negatives below it, ties 1/2
    v01 = 1.0 - (tz[:, m:] - ty) / m      # per negative: share of positives above it, ties 1/2
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    return aucs, v10, v01


def _sample_cov(v: np.ndarray) -> np.ndarray:
    """k×k sample covariance (denominator count − 1) of the rows of ``v``; NaN with one column."""
    k, count = v.shape
    if count < 2:
        return np.full((k, k), math.nan)
    c = v - v.mean(axis=1, keepdims=True)
    return c @ c.T / (count - 1)


def delong(y, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs of k score vectors on the same cases and their DeLong covariance (fast algorithm).

    Sun & Xu 2014: with midranks (:func:`scipy.stats.rankdata`) of each score vector among all
    cases, among the positives and among the negatives, the structural components are
    V10_i = (rank_all − rank_pos)/n per positive and V01_j = 1 − (rank_all − rank_neg)/m per
    negative; AUROC = mean V10 and Cov = S10/m + S01/n, S10 and S01 the sample covariances
    (denominator m − 1, n − 1) of the components across positives and negatives.

    Args:
        y: N labels, bool or 0/1 (1 = positive).
        scores: N, or k×N, scores (higher = more positive; logit margins or probabilities: only
            their ranks are used).
    Returns:
        (aucs, cov): aucs of shape (k,) in [0, 1] (ties count 1/2; equal to
        ``sklearn.metrics.roc_auc_score`` up to rounding) and their covariance of shape (k, k)
        (AUROC² units; its diagonal is each AUROC's variance). The covariance is NaN when there
        is a single positive or a single negative (a sample covariance needs two).
    Raises:
        RocError: labels not 0/1 or not 1-D, ``scores`` not of shape N or k×N, NaN/inf scores (the
            message gives how many), or no positives or no negatives (it gives both counts).
    """
    pos = _labels(y, "delong")
    s = _scores(scores, pos.size, "delong")
    _need_both(pos, "delong")
    aucs, v10, v01 = _components(pos, s)
    cov = _sample_cov(v10) / v10.shape[1] + _sample_cov(v01) / v01.shape[1]
    return aucs, cov


# --------------------------------------------------------------------------- AUROC and its interval

def auroc_ci(y, score, level: float = 0.95) -> dict:
    """One AUROC with its DeLong standard error and normal confidence interval.

    Args:
        y: N labels, bool or 0/1 (1 = positive).
        score: N scores (higher = more positive).
        level: the interval's coverage, in (0, 1); default 0.95.
    Returns:
        ``auroc`` (``sklearn.metrics.roc_auc_score``), ``se`` (DeLong), ``ci_low``/``ci_high``
        (auroc ∓ z·se clipped to [0, 1], as pROC's ``ci.auc(method = "delong")``), ``n_pos``,
        ``n_neg``. All but the counts are NaN when a class is absent (a small split may lack
        one: not an error); se and the interval are NaN with a single positive or negative.
    Raises:
        RocError: labels not 0/1, ``score`` not of length N, NaN/inf scores, or ``level`` outside (0, 1).
    """
    pos = _labels(y, "auroc_ci")
    s = _scores(score, pos.size, "auroc_ci", "score")
    if s.shape[0] != 1:
        raise RocError(f"auroc_ci: score must be one vector of N = {pos.size} scores, got shape {np.shape(score)};"
                       " use delong() for several")
    z = _z(level, "auroc_ci")
    m, n = int(pos.sum()), int((~pos).sum())
    out = {"auroc": math.nan, "ci_low": math.nan, "ci_high": math.nan, "se": math.nan, "n_pos": m, "n_neg": n}
    if m == 0 or n == 0:
        return out
    _, cov = delong(pos, s)
    auc = float(roc_auc_score(pos, s[0]))
    se = math.sqrt(max(float(cov[0, 0]), 0.0)) if np.isfinite(cov[0, 0]) else math.nan
    out.update(auroc=auc, se=se, ci_low=max(0.0, auc - z * se), ci_high=min(1.0, auc + z * se))
    if math.isnan(se):
        out.update(ci_low=math.nan, ci_high=math.nan)
    return out


def auroc_difference(y, score_a, score_b, level: float = 0.95) -> dict:
    """Paired DeLong test of two correlated AUROCs on the same cases: AUROC(b) − AUROC(a).

    The variance of the difference is var_a + var_b − 2·cov_ab of :func:`delong`, computed as the
    sample variance of the per-case differences of the structural components (the same number,
    without the cancellation: identical scores give exactly 0).

    Args:
        y: N labels, bool or 0/1 (1 = positive).
        score_a: N scores of the reference (higher = more positive).
        score_b: N scores of the compared model, same cases in the same order.
        level: the interval's coverage, in (0, 1); default 0.95.
    Returns:
        ``auroc_a``, ``auroc_b`` (``sklearn.metrics.roc_auc_score``), ``diff`` (b − a), ``se`` (of
        diff), ``ci_low``/``ci_high`` (diff ∓ z·se clipped to [−1, 1]) and ``p_value`` (two-sided,
        normal). All NaN when a class is absent; se, interval and p NaN with a single positive or
        negative. When the variance of the difference is 0 (e.g. identical scores) the interval
        is [diff, diff] and p is 1 if diff is 0 (identical rankings), else 0.
    Raises:
        RocError: labels not 0/1, scores not of length N, NaN/inf scores, or ``level`` outside (0, 1).
    """
    where = "auroc_difference"
    pos = _labels(y, where)
    a = _scores(score_a, pos.size, where, "score_a")
    b = _scores(score_b, pos.size, where, "score_b")
    if a.shape[0] != 1 or b.shape[0] != 1:
        raise RocError(f"{where}: score_a and score_b must each be one vector of N = {pos.size} scores, got shapes"
                       f" {np.shape(score_a)} and {np.shape(score_b)}")
    z = _z(level, where)
    keys = ("auroc_a", "auroc_b", "diff", "se", "ci_low", "ci_high", "p_value")
    out = dict.fromkeys(keys, math.nan)
    if pos.all() or not pos.any():
        return out
    auc_a, auc_b = float(roc_auc_score(pos, a[0])), float(roc_auc_score(pos, b[0]))
    diff = auc_b - auc_a
    _, v10, v01 = _components(pos, np.concatenate([a, b]))
    # per-case contrasts b − a of the structural components: their variance is var_a + var_b − 2·cov_ab
    var = float(_sample_cov(v10[1:] - v10[:1])[0, 0] / v10.shape[1]
                + _sample_cov(v01[1:] - v01[:1])[0, 0] / v01.shape[1])
    out.update(auroc_a=auc_a, auroc_b=auc_b, diff=diff)
    if math.isnan(var):
        return out
    se = math.sqrt(max(var, 0.0))
    if se == 0.0:
        p = 1.0 if diff == 0 else 0.0
    else:
        p = float(2 * norm.sf(abs(diff) / se))
    out.update(se=se, ci_low=max(-1.0, diff - z * se), ci_high=min(1.0, diff + z * se), p_value=p)
    return out


# --------------------------------------------------------------------------- operating point

def operating_point(y_val, score_val, rule: str | float = "youden") -> float:
    """A decision threshold chosen on a validation split: a case is positive when score ≥ t.

    The candidates are the distinct validation scores (``sklearn.metrics.roc_curve`` with
    ``drop_intermediate=False``, less its leading +inf), so the threshold is always finite and
    one of the scores.

    Args:
        y_val: N validation labels, bool or 0/1 (1 = positive).
        score_val: N validation scores (higher = more positive), in the units the threshold
            will be applied in (logit margin or probability).
        rule: ``"youden"`` (the default): the candidate maximising Youden's J = sensitivity +
            specificity − 1; ties among maxima go to the **largest** such threshold (the most
            specific). A number s in (0, 1]: *fixed sensitivity*, the largest candidate whose
            validation sensitivity is ≥ s (up to 1e-12, so that e.g. 9/10 counts as 0.9), i.e.
            the most specific threshold meeting the sensitivity; one always exists (the smallest
            score has sensitivity 1).
    Returns:
        The threshold t, a finite float in the units of ``score_val``.
    Raises:
        RocError: no positives or no negatives in ``y_val`` (both counts named), labels not 0/1,
            NaN/inf or wrongly shaped scores, or a rule that is neither ``"youden"`` nor a
            number in (0, 1].
    """
    where = "operating_point"
    if isinstance(rule, str):
        if rule.strip().lower() not in RULES:
            raise RocError(f"{where}: rule = {rule!r} is unknown; give 'youden' or a target sensitivity in (0, 1],"
                           " e.g. 0.9")
    elif isinstance(rule, bool) or not isinstance(rule, numbers.Real) or not 0 < rule <= 1:
        raise RocError(f"{where}: rule = {rule!r} is not usable; give 'youden' or a target sensitivity in (0, 1],"
                       " e.g. 0.9")
    pos = _labels(y_val, where)
    s = _scores(score_val, pos.size, where, "score_val")
    if s.shape[0] != 1:
        raise RocError(f"{where}: score_val must be one vector of N = {pos.size} scores, got shape"
                       f" {np.shape(score_val)}")
    _need_both(pos, where, "the validation labels")
    fpr, tpr, thr = roc_curve(pos, s[0], drop_intermediate=False)
    keep = np.isfinite(thr)   # the leading +inf (no case positive) is never returned
    fpr, tpr, thr = fpr[keep], tpr[keep], thr[keep]   # thresholds decreasing
    if isinstance(rule, str):
        j = tpr - fpr
        i = int(np.flatnonzero(j == j.max())[0])   # first in decreasing order = the largest threshold
    else:
        i = int(np.flatnonzero(tpr >= float(rule) - 1e-12)[0])
    return float(thr[i])


def sens_spec(y, score, threshold: float) -> dict:
    """Sensitivity and specificity at a fixed threshold (positive when score ≥ threshold), with
    Wilson 95% intervals (:func:`oncorobust.evaluation.stats.wilson`).

    Args:
        y: N labels, bool or 0/1 (1 = positive).
        score: N scores (higher = more positive), in the threshold's units.
        threshold: the decision threshold (e.g. from :func:`operating_point` on validation data).
    Returns:
        ``sensitivity`` = tp/n_pos and ``specificity`` = tn/n_neg (proportions in [0, 1]) with
        ``sens_ci_low``/``sens_ci_high`` and ``spec_ci_low``/``spec_ci_high`` (Wilson 95%), and the
        counts ``n_pos``, ``n_neg``, ``tp``, ``tn``. A rate and its interval are NaN when its
        denominator is 0.
    Raises:
        RocError: labels not 0/1, ``score`` not of length N, NaN/inf scores, or a NaN threshold.
    """
    where = "sens_spec"
    pos = _labels(y, where)
    s = _scores(score, pos.size, where, "score")
    if s.shape[0] != 1:
        raise RocError(f"{where}: score must be one vector of N = {pos.size} scores, got shape {np.shape(score)}")
    if not isinstance(threshold, numbers.Real) or math.isnan(threshold):
        raise RocError(f"{where}: threshold must be a number, got {threshold!r}")
    pred = s[0] >= threshold
    m, n = int(pos.sum()), int((~pos).sum())
    tp, tn = int((pred & pos).sum()), int((~pred & ~pos).sum())
    sl, sh = wilson(tp, m)
    pl, ph = wilson(tn, n)
    return {"sensitivity": tp / m if m else math.nan, "sens_ci_low": sl, "sens_ci_high": sh,
            "specificity": tn / n if n else math.nan, "spec_ci_low": pl, "spec_ci_high": ph,
            "n_pos": m, "n_neg": n, "tp": tp, "tn": tn}


# --------------------------------------------------------------------------- several classes

def one_vs_rest(labels, scores_matrix, classes: Sequence | None = None) -> pd.DataFrame:
    """One-vs-rest AUROCs of a multi-class problem, with DeLong intervals, and their macro mean.

    Class c's AUROC takes c as positive and every other class as negative, ranked by column c.
    Give columns that rank like class c's probability: softmax probabilities, or the logit
    margins z_c − logsumexp(z_others) (raw logits z_c rank differently in general).

    Args:
        labels: N integer labels in 0..C−1.
        scores_matrix: N×C scores, column c for class c (e.g. softmax probabilities).
        classes: C names written in the ``class`` column; default the labels 0..C−1.
    Returns:
        A frame of :data:`OVR_COLUMNS` with one row per class (``auroc``, its DeLong 95% interval
        ``ci_low``/``ci_high``, ``n_pos``, ``n_neg``, as :func:`auroc_ci`; NaN AUROC for a class
        absent from ``labels``) and a last row ``class = "macro"``: the mean AUROC over the
        classes that have both positives and negatives (NaN if none), with NaN ``ci_low`` and
        ``ci_high`` (no interval is computed for the mean) and ``n_pos``/``n_neg`` missing
        (``<NA>``; the count columns are pandas ``Int64``).
    Raises:
        RocError: labels that are not integers in 0..C−1, ``scores_matrix`` not N×C with C ≥ 2,
            NaN/inf scores, or ``classes`` of a length other than C.
    """
    where = "one_vs_rest"
    lab = np.asarray(labels)
    mat = np.asarray(scores_matrix, dtype=np.float64)
    if lab.ndim != 1:
        raise RocError(f"{where}: labels must be a 1-D array of N class indices, got shape {lab.shape}")
    if mat.ndim != 2 or mat.shape[0] != lab.size or mat.shape[1] < 2:
        raise RocError(f"{where}: scores_matrix must have shape (N, C) with N = {lab.size} (the number of labels)"
                       f" and C ≥ 2 classes, got {mat.shape}")
    n_classes = mat.shape[1]
    if lab.size and (not np.issubdtype(lab.dtype, np.number) or np.any(lab != np.round(lab))
                     or lab.min() < 0 or lab.max() >= n_classes):
        raise RocError(f"{where}: labels must be integers in 0..{n_classes - 1} (one per column of scores_matrix);"
                       f" got values {sorted(set(np.unique(lab).tolist()))[:10]}")
    names = list(range(n_classes)) if classes is None else list(classes)
    if len(names) != n_classes:
        raise RocError(f"{where}: classes has {len(names)} name(s) but scores_matrix has {n_classes} columns")
    rows = []
    for c, name in enumerate(names):
        r = auroc_ci(lab == c, mat[:, c])
        rows.append({"class": name, **{k: r[k] for k in OVR_COLUMNS[1:]}})
    aucs = [r["auroc"] for r in rows if r["n_pos"] and r["n_neg"]]
    rows.append({"class": "macro", "auroc": float(np.mean(aucs)) if aucs else math.nan, "ci_low": math.nan,
                 "ci_high": math.nan, "n_pos": pd.NA, "n_neg": pd.NA})
    df = pd.DataFrame(rows, columns=list(OVR_COLUMNS))
    return df.astype({"n_pos": "Int64", "n_neg": "Int64"})
