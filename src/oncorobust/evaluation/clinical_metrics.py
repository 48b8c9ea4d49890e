"""What a radiology paper reports, under attack: AUROC with its 95% CI, and sensitivity and
specificity at the operating point chosen on the validation split.

**Scores.** Every per-image CSV carries the model's logits (:mod:`oncorobust.evaluation.scores`).
A class's score is its log-odds, log(p / (1 − p)), computed from the logits (with two classes its
logit margin z_pos − z_neg): a strictly increasing function of its probability, so the same AUROC,
but without the ties that a float32 softmax saturated at 1 creates among confident images.

**The adversary.** Each positive image is pushed toward a lower positive-class score and each
negative toward a higher one: the attack away from the image's **true** label (the attack CSVs'
``true_adv_logit_<k>`` columns; under the paper's ``labels: predicted`` the attack job attacks the
images whose label the model misses a second time, with their label). Attacks that stop at an
image's first flip move a score only just across the decision boundary (APGD, ``worst``), and
``worst``, FAB and Square leave an image that is already misclassified, and its score, as it is;
the paper's BIM/PGD keep pushing for all their steps, so for an AUROC they can be the stronger
adversary even where they flip fewer images. ``any attack`` is, per image and ε, the most harmful
score among the attacks run at that ε (a positive's lowest, a negative's highest): an adversary may
choose its attack per image, so this is an achievable attack and never weaker than any one of them.

**Targeted threat models.** Beside the untargeted adversary (``direction`` ``any``), two that
push only toward one clinical error: ``missed_finding`` attacks only the positive images (the
negatives keep their clean scores), ``false_alarm`` only the negatives. With two classes, the
attack on a positive image away from its label *is* the attack toward a missed finding (there is
no other class to reach), so these rows are exact from the same per-image results and cost no
attack of their own; specificity under ``missed_finding`` and sensitivity under ``false_alarm``
stay at their clean values by construction. With more classes and a positive class, a negative's
attack away from its label may reach another negative class: the ``false_alarm`` rows then bound
the targeted harm from below.

**Operating point.** A threshold on the positive class's log-odds, chosen on the validation
split's clean scores (the sensitivity CSV's ``split == "val"`` rows): Youden's J by default, or the
largest threshold reaching a fixed validation sensitivity (``datasets.<ds>.operating_point``). Without
validation rows (or without both classes among them) the threshold is log-odds 0 (probability ½:
on two classes the model's own decision), and the table says so.

**Intervals.** AUROC: DeLong's variance (:mod:`oncorobust.evaluation.roc`). The change of AUROC
under attack is paired on the same images (DeLong's test of two correlated AUROCs), both against
the same model's clean AUROC (``d_auroc``) and, for an adversarially trained regime, against the
clean regime's model (the same seed replicate) under the same attack and ε (``d_auroc_regime``;
for ``any attack``, each model under the per-image worst of the attacks run on it: the transfer
attacks of an adversarially trained model have no counterpart on the clean model, whose white-box
attacks they are). Sensitivity and specificity:
Wilson 95% CIs.

**More than two classes.** Without a positive class (controls, a multi-class folder), one row per
class, one-vs-rest on the class's log-odds, and a ``macro`` row with the mean AUROC over the classes
(no interval, no operating point). With a positive class on more than two classes, that class
against the rest gets the full row.

Torch-free; the workflow's tables job and the cards call these functions.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from oncorobust.epsilon import same_eps
from oncorobust.errors import DataError
from oncorobust.evaluation.roc import auroc_ci, auroc_difference, operating_point, sens_spec
from oncorobust.evaluation.scores import class_scores, score_column_names

#: the per-image worst over the attacks run at an ε
ANY_ATTACK = "any attack"
#: the rows' method at ε = 0
CLEAN = "clean"
#: the threat models of the rows: every image attacked, or only toward one clinical error
ANY_DIRECTION = "any"
DIRECTIONS = (ANY_DIRECTION, "missed_finding", "false_alarm")

CLINICAL_COLUMNS = ["dataset", "regime", "method", "direction", "eps", "positive_class", "n_pos", "n_neg",
                    "auroc", "auroc_ci_low", "auroc_ci_high",
                    "d_auroc", "d_auroc_ci_low", "d_auroc_ci_high", "d_auroc_p",
                    "d_auroc_regime", "d_auroc_regime_ci_low", "d_auroc_regime_ci_high", "d_auroc_regime_p",
                    "operating_rule", "threshold", "sensitivity", "sens_ci_low", "sens_ci_high",
                    "specificity", "spec_ci_low", "spec_ci_high"]


def check_scores(frame: pd.DataFrame, path, prefixes: Sequence[str]) -> None:
    """Refuse a per-image CSV written before the scores were recorded, naming the file.

    Args:
        frame: the per-image frame read from ``path``.
        path: its file (named in the error).
        prefixes: the logit prefixes it must carry (``clean``, ``true_adv``...).
    Raises:
        DataError: a prefix has no ``<prefix>_logit_<k>`` columns.
    """
    missing = [p for p in prefixes if not score_column_names(frame, p)]
    if missing:
        raise DataError(f"{path}: no {'/'.join(f'{p}_logit_*' for p in missing)} columns: the file was written by"
                        " an older oncorobust, before it recorded the model's scores. Rerun its job (Snakemake"
                        " reruns it by itself since its code changed; otherwise delete the file)")


def positive_class_rows(table: pd.DataFrame) -> pd.Series:
    """Which rows of a clinical table are of a positive class against the rest (two classes, or a
    configured positive class), not the one-vs-rest rows of a multi-class dataset or their macro mean.

    Args:
        table: rows of :func:`clinical_table`.
    Returns:
        A boolean mask: the rows with an operating point (``threshold``).
    """
    return table.threshold.notna()


def _rule_text(rule) -> str:
    return "Youden" if rule == "youden" else f"sensitivity ≥ {float(rule):g}"


def choose_threshold(sens: pd.DataFrame | None, positive: int, rule="youden") -> tuple[float, str]:
    """The operating point on the positive class's log-odds, from the validation split.

    Args:
        sens: a sensitivity frame (its ``split == "val"`` rows' ``clean_logit_<k>`` and ``label``),
            or None.
        positive: the positive class's label.
        rule: ``"youden"`` or a validation sensitivity in (0, 1] (:func:`oncorobust.evaluation.roc.operating_point`).
    Returns:
        (threshold, how it was chosen): log-odds ≥ threshold is called positive. Without validation
        rows holding both classes, (0.0, "probability ≥ ½ (…)"): on two classes the model's own decision.
    """
    val = sens[sens.split == "val"] if sens is not None and "split" in sens.columns else None
    if val is None or not score_column_names(val, "clean"):
        return 0.0, "probability ≥ ½ (no validation scores)"
    y = (val.label.to_numpy() == positive)
    if y.all() or not y.any():
        return 0.0, "probability ≥ ½ (no validation split with both classes)"
    score = class_scores(val, "clean", positive).log_odds.to_numpy()
    return float(operating_point(y, score, rule)), f"{_rule_text(rule)} on {len(val)} validation images"


def _log_odds(frame: pd.DataFrame, prefix: str, target: int) -> pd.Series:
    return class_scores(frame, prefix, target).log_odds.set_axis(frame.sample_id.astype(str).to_numpy())


def _row_auc(y: np.ndarray, score: np.ndarray) -> dict:
    if len(y) == 0:
        return {"n_pos": 0, "n_neg": 0, "auroc": math.nan, "auroc_ci_low": math.nan, "auroc_ci_high": math.nan}
    a = auroc_ci(y, score)
    return {"n_pos": a["n_pos"], "n_neg": a["n_neg"], "auroc": a["auroc"], "auroc_ci_low": a["ci_low"],
            "auroc_ci_high": a["ci_high"]}


def _diff(y: np.ndarray, a: np.ndarray | None, b: np.ndarray, stem: str) -> dict:
    """The paired DeLong difference b − a as ``<stem>``, ``_ci_low``, ``_ci_high``, ``_p``; NaN without
    ``a`` or without both classes."""
    if a is None or y.all() or not y.any():
        return dict.fromkeys((stem, f"{stem}_ci_low", f"{stem}_ci_high", f"{stem}_p"), math.nan)
    d = auroc_difference(y, a, b)
    return {stem: d["diff"], f"{stem}_ci_low": d["ci_low"], f"{stem}_ci_high": d["ci_high"], f"{stem}_p": d["p_value"]}


def _op(y: np.ndarray, score: np.ndarray, threshold: float | None) -> dict:
    keys = ("sensitivity", "sens_ci_low", "sens_ci_high", "specificity", "spec_ci_low", "spec_ci_high")
    if threshold is None or len(y) == 0:
        return dict.fromkeys(keys, math.nan)
    s = sens_spec(y, score, threshold)
    return {k: 100 * s[k] for k in keys}


def _directed(attacked: pd.Series, clean: pd.Series, positive_rows: pd.Series, direction: str) -> pd.Series:
    """The scores under an adversary that pushes only toward one clinical error: the attacked score
    of the images it attacks (positives for missed findings, negatives for false alarms), the clean
    score of the others."""
    if direction == ANY_DIRECTION:
        return attacked
    attack_these = positive_rows if direction == "missed_finding" else ~positive_rows
    return attacked.where(attack_these, clean)


def _worst_score(scores: list[pd.Series], positive_rows: pd.Series) -> pd.Series:
    """Per image the most harmful log-odds: a positive's lowest, a negative's highest."""
    stacked = pd.concat(scores, axis=1)
    return stacked.min(axis=1).where(positive_rows, stacked.max(axis=1))


def clinical_table(dataset: str, regime: str, attacks: Mapping[tuple[str, float], pd.DataFrame],
                   sens: pd.DataFrame | None, classes: Sequence[str], positive: int | None, *,
                   rule="youden", reference: Mapping[tuple[str, float], pd.DataFrame] | None = None,
                   reference_clean: pd.DataFrame | None = None) -> pd.DataFrame:
    """AUROC, sensitivity and specificity of one (dataset, regime), clean and under each attack and ε.

    Args:
        dataset, regime: copied into the rows.
        attacks: (method, ε) → the per-image attack frame (test rows; ``label``, ``sample_id``,
            ``clean_logit_<k>``, ``true_adv_logit_<k>``; ε in [0,1] pixel units).
        sens: the regime's sensitivity frame (its validation rows choose the operating point), or None.
        classes: the class names in label order.
        positive: the positive class's label, or None: label 1 on two classes, else one-vs-rest per
            class and their macro mean.
        rule: the operating point's rule (:func:`choose_threshold`).
        reference: the clean regime's attack frames, for ``d_auroc_regime`` (None for the clean
            regime itself).
        reference_clean: one frame of the clean regime (its ``clean_logit_<k>``), for the clean row's
            ``d_auroc_regime``.
    Returns:
        :data:`CLINICAL_COLUMNS`: a ``clean`` row (ε = 0), one row per attack and ε and one
        ``any attack`` row per ε; AUROC as a fraction, its change in AUROC units, sensitivity and
        specificity in %. On more than two classes without a positive class, these rows per class
        (``positive_class`` = its name) and ``macro`` rows.
    Raises:
        DataError: the frames disagree on their images (not the same test split).
    """
    attacks = {k: f for k, f in attacks.items() if len(f)}
    if not attacks:
        return pd.DataFrame(columns=CLINICAL_COLUMNS)
    first = next(iter(attacks.values()))
    ids = first.sample_id.astype(str).to_numpy()
    label = pd.Series(first.label.to_numpy(), index=ids)
    for (method, eps), f in attacks.items():
        if set(f.sample_id.astype(str)) != set(ids):
            raise DataError(f"{dataset} {regime} {method} ε={eps!r}: not the same test images as the other attack"
                            " results of this model; rerun its attack job")
    if positive is None and len(classes) == 2:
        positive = 1
    binary = positive is not None
    targets = [positive] if binary else list(range(len(classes)))
    grid = sorted({e for _, e in attacks})
    rows = []
    for t in targets:
        y = (label == t)
        threshold, how = choose_threshold(sens, t, rule) if binary else (None, "")
        clean = _log_odds(first, "clean", t).reindex(ids)
        ref_clean = _log_odds(reference_clean, "clean", t).reindex(ids) if reference_clean is not None else None
        base = {"dataset": dataset, "regime": regime, "positive_class": str(classes[t]),
                "operating_rule": how, "threshold": threshold}

        def row(method, eps, score, ref, direction=ANY_DIRECTION):
            out = base | {"method": method, "direction": direction, "eps": eps} | _row_auc(y.to_numpy(), score.to_numpy())
            out |= _diff(y.to_numpy(), clean.to_numpy(), score.to_numpy(), "d_auroc")
            out |= _diff(y.to_numpy(), ref.to_numpy() if ref is not None else None, score.to_numpy(), "d_auroc_regime")
            return out | _op(y.to_numpy(), score.to_numpy(), threshold)

        rows.append(row(CLEAN, 0.0, clean, ref_clean))
        for eps in grid:
            at = {m: _log_odds(f, "true_adv", t).reindex(ids) for (m, e), f in attacks.items() if e == eps}
            refs = {m: _log_odds(f, "true_adv", t).reindex(ids) for (m, e), f in (reference or {}).items()
                    if same_eps(e, eps)}
            if len(at) > 1:
                at[ANY_ATTACK] = _worst_score(list(at.values()), y)
                if refs:  # the clean model under its own per-image worst of the attacks run on it
                    refs[ANY_ATTACK] = _worst_score(list(refs.values()), y)
            for method, score in at.items():
                ref = refs.get(method)
                for direction in (DIRECTIONS if binary else (ANY_DIRECTION,)):
                    rows.append(row(method, eps, _directed(score, clean, y, direction),
                                    _directed(ref, ref_clean, y, direction) if ref is not None else None, direction))
    out = pd.DataFrame(rows)
    if not binary:
        macro = (out.groupby(["method", "direction", "eps"], sort=False)
                 .agg(auroc=("auroc", "mean"), d_auroc=("d_auroc", "mean"), d_auroc_regime=("d_auroc_regime", "mean"))
                 .reset_index().assign(dataset=dataset, regime=regime, positive_class="macro",
                                       n_pos=math.nan, n_neg=math.nan, operating_rule="", threshold=math.nan))
        out = pd.concat([out, macro], ignore_index=True)
    return out.reindex(columns=CLINICAL_COLUMNS)


def _pct(v, lo, hi) -> str:
    return "–" if not np.isfinite(v) else f"{v:.1f} [{lo:.1f}, {hi:.1f}]"


def auroc_text(v: float, lo: float = math.nan, hi: float = math.nan) -> str:
    """An AUROC with its CI as the tables and cards write it: ``0.911 [0.847, 0.976]`` (three
    decimals; no bracket without a CI; "–" when the AUROC is not defined).

    Args:
        v, lo, hi: the AUROC and its CI bounds (fractions; NaN when undefined).
    Returns:
        The text.
    """
    if not np.isfinite(v):
        return "–"
    return f"{v:.3f}" if not np.isfinite(lo) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def _delta(v, lo, hi) -> str:
    if not np.isfinite(v):
        return "–"
    return f"{v:+.3f}" if not np.isfinite(lo) else f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]"


_DIRECTION_TEXT = {"missed_finding": "only toward missed findings", "false_alarm": "only toward false alarms"}


def clinical_markdown(table: pd.DataFrame, eps_text=lambda e: f"{e:g}", methods: Sequence[str] | None = None) -> str:
    """The clinical table as Markdown: per dataset and regime, AUROC [95% CI], its change under
    attack and the sensitivity and specificity at the operating point.

    Args:
        table: rows of :func:`clinical_table` (several datasets and regimes).
        eps_text: how an ε is written (e.g. :func:`oncorobust.epsilon.eps_text`).
        methods: the attack rows to show besides ``clean`` and ``any attack`` (all when None).
    Returns:
        Markdown; multi-class datasets without a positive class show their ``macro`` rows only.
    """
    if table.empty:
        return "No dataset has two classes or a positive class: no AUROC table.\n"
    parts = ["AUROC with DeLong 95% CI; the adversary pushes every positive image toward a lower"
             " positive-class score and every negative toward a higher one (attacks away from the true"
             " label); *any attack* is each image's most harmful score among the attacks run at that ε."
             " *only toward missed findings* attacks only the positive images (the others keep their clean"
             " scores), *only toward false alarms* only the negatives: the targeted threat models, exact from"
             " the same per-image results on two classes."
             " ΔAUROC is paired on the same images (DeLong). Sensitivity and specificity (%, Wilson 95% CI)"
             " at the operating point chosen on the validation split's clean scores.\n"]
    for (ds, regime), g in table.groupby(["dataset", "regime"], sort=False):
        shown = g[g.positive_class == "macro"] if (g.positive_class == "macro").any() else g
        # every attack against every image, and the per-image worst toward each clinical error alone
        targeted = ANY_ATTACK if (shown.method == ANY_ATTACK).any() else None
        if targeted is None and shown[shown.method != CLEAN].method.nunique() == 1:
            targeted = shown[shown.method != CLEAN].method.iloc[0]  # one attack: its own targeted rows
        shown = shown[(shown.direction == ANY_DIRECTION) | (shown.method == targeted)]
        if methods is not None:
            shown = shown[shown.method.isin([CLEAN, ANY_ATTACK, *methods])]
        first = shown.iloc[0]
        parts.append(f"## {ds} — {regime}\n")
        if first.positive_class == "macro":
            parts.append("More than two classes and no positive class: the mean of the one-vs-rest AUROCs"
                         " (per class in `clinical.csv`).\n")
        else:
            parts.append(f"Positive class: **{first.positive_class}** ({int(first.n_pos)} positive,"
                         f" {int(first.n_neg)} negative test images); operating point: {first.operating_rule}"
                         f" (log-odds ≥ {first.threshold:.3g}).\n")
        has_regime = shown.d_auroc_regime.notna().any()
        head = ["attack", "ε", "AUROC [95% CI]", "ΔAUROC vs clean images"]
        head += ["ΔAUROC vs clean model"] if has_regime else []
        head += ["sensitivity %", "specificity %"] if first.positive_class != "macro" else []
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in shown.itertuples():
            who = str(r.method) if r.direction == ANY_DIRECTION else f"{r.method}: {_DIRECTION_TEXT[r.direction]}"
            cells = [who, "0" if r.method == CLEAN else eps_text(r.eps),
                     auroc_text(r.auroc, r.auroc_ci_low, r.auroc_ci_high),
                     "" if r.method == CLEAN else _delta(r.d_auroc, r.d_auroc_ci_low, r.d_auroc_ci_high)]
            cells += [_delta(r.d_auroc_regime, r.d_auroc_regime_ci_low, r.d_auroc_regime_ci_high)] if has_regime else []
            if first.positive_class != "macro":
                cells += [_pct(r.sensitivity, r.sens_ci_low, r.sens_ci_high), _pct(r.specificity, r.spec_ci_low, r.spec_ci_high)]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)

