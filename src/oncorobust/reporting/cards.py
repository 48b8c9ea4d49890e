"""Robustness cards: one page per (dataset, regime) that says how fragile a model is, in words.

A card (``results/cards/{ds}_{regime}.md`` and ``.html``) gathers, from the workflow's own
outputs and never recomputed differently, the numbers a reader needs to judge one model:

- clean accuracy with its Wilson 95% CI (``tables/attack_summary.csv``, the values of Table 1);
- accuracy under the strongest attack at each ε, in [0,1] pixel units and in the stored data's
  units (HU, grey levels: ``tensors/stats.json``'s ``eps_units``, see
  :func:`oncorobust.reporting.tables.clinical_eps`);
- ε₅₀ and ε₁₀ with their bootstrap CIs (``tables/robustness_summary.csv``);
- the evaluation-health verdict in words (``{ds}/health/{regime}.csv``): which checks failed and
  what each failure means for the reader;
- the deferral gain (``tables/table2.csv``, ``tables/deferral_auc.csv``);
- what was run (attacks and their budgets, gradient evaluations, runtime, package version, the
  model's SHA-256) and a one-sentence plain-language verdict.

Cards show aggregate numbers only: no image, patient or sample identifier. The HTML is
self-contained (inline CSS and an inline SVG curve; no external link, script or image file).

The functions here are pure (file paths and config slices in, a dict or text out); the workflow's
``scripts/cards.py`` adapter calls them, and ``oncorobust audit`` prints :func:`verdict_line` of
each card at the end of a run.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from oncorobust.epsilon import eps_text
from oncorobust.spec import EARLY_EXIT_OPTION, STRENGTH_ORDER, TRANSFER_PREFIX, base_method
from oncorobust.errors import CardError
from oncorobust.evaluation.judges import JUDGES_TEXT, judges, judges_paper_attacks_only
from oncorobust.evaluation.results import rows_of_test_split
from oncorobust.evaluation.stats import wilson
from oncorobust.reporting.tables import clinical_eps


#: What a failed evaluation-health check means for the reader, one plain sentence per check.
HEALTH_MEANING = {
    "gradients": "Some images have a zero or non-finite input gradient, so gradient-based attacks"
                 " cannot move them and their apparent robustness may be an artefact (gradient masking).",
    "deterministic": "The model gives different outputs for the same image, so attack results are not"
                     " reproducible and may understate how fragile it is.",
    "unbounded_attack": "Even an unlimited perturbation (ε = 1) did not flip nearly every image, which points"
                        " to a broken attack or masked gradients rather than true robustness.",
    "iterative_vs_fgsm": "A multi-step attack was weaker than the one-step FGSM, a sign that the iterative"
                         " attacks are not working (masked gradients or badly chosen steps).",
    "monotone_in_eps": "Results improved as the perturbation grew, which a working attack cannot produce:"
                       " the attacks are not finding the worst case.",
    "pgd_convergence": "Doubling PGD's steps and restarts flipped more images, so the paper's PGD had not"
                       " converged and its accuracies under attack (Table 1's PGD rows) are optimistic.",
    "loss_converged": "PGD's loss was still rising at its last steps for many images, so a longer PGD"
                      " would probably flip more of them (Table 1's PGD rows are optimistic).",
    "square_vs_whitebox": "A gradient-free attack flipped more images than the gradient-based ones, the"
                          " classic sign of gradient masking: the model is likely more fragile than shown.",
    "transfer_vs_whitebox": "Images crafted on another model fooled this model more than attacks on itself,"
                            " a sign of gradient masking in this model.",
    "worst_vs_bracket": "The per-image search found flips at or below ε that the worst-case attack missed,"
                        " so the worst-case accuracies understate the fragility.",
    "worst_convergence": "Doubling the worst-case attack's budgets flipped more images, so the worst case had"
                         " not converged: its accuracies under attack (and the verdict) are optimistic.",
}
GENERIC_MEANING = ("This check of the attacks' strength failed, so the accuracies under attack may overstate"
                   " the model's robustness; see its detail.")

#: Tie-break when no ``worst`` is configured: the more thorough attack first.
STRENGTH = STRENGTH_ORDER

VERDICT_PREFIX = "**Verdict:** "


# ---------------------------------------------------------------------------------- formatting


def _f3(v) -> str:
    """3 significant digits as in ``robustness_summary.md``; inf as "> eps_max"."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return "> eps_max" if v == math.inf else f"{v:.3g}"


def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def _acc_ci(acc, lo, hi) -> str:
    """Accuracy [CI] in % as in Table 1 (one decimal)."""
    return "–" if acc is None or math.isnan(acc) else f"{acc:.1f}% [{lo:.1f}, {hi:.1f}]"


def _duration(seconds) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m} min" if h else (f"{m} min {s} s" if m else f"{s} s")


def _params_text(params: dict | None) -> str:
    if not params:
        return "package defaults"
    return ", ".join(f"{k} {v}" for k, v in sorted(params.items()))


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------------------------- workflow inputs


# ---------------------------------------------------------------------------------- readers


def _read_csv(path, what: str, required: tuple[str, ...]) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise CardError(f"{path}: no such file ({what}); run the workflow step that writes it first")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CardError(f"{path}: unreadable {what} ({exc}); delete it and rerun the workflow") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise CardError(f"{path}: the {what} lacks column(s) {', '.join(missing)}; it was written by another"
                        " version of oncorobust: delete it and rerun the workflow")
    return df


def read_benchmarks(paths: dict[str, list[str]]) -> dict[str, dict]:
    """Wall-clock seconds of the jobs behind a card, from Snakemake's benchmark files.

    Args:
        paths: stage name (e.g. ``train``, ``attacks``) → benchmark ``.tsv`` paths of its jobs;
            files that do not exist (a given model has no training job) are skipped.
    Returns:
        Stage → ``{"seconds", "jobs"}`` (seconds summed over jobs, each the mean over its
        repeats), for the stages with at least one file; empty when none exists.
    Raises:
        CardError: a benchmark file exists but has no ``s`` column.
    """
    out = {}
    for stage, files in paths.items():
        total, jobs = 0.0, 0
        for p in files:
            p = Path(p)
            if not p.is_file():
                continue
            try:
                b = pd.read_csv(p, sep="\t")
            except (pd.errors.ParserError, pd.errors.EmptyDataError):
                raise CardError(f"{p}: unreadable Snakemake benchmark file; delete it and rerun its job") from None
            if "s" not in b.columns:
                raise CardError(f"{p}: not a Snakemake benchmark file (no 's' column); delete it and rerun its job")
            total += float(pd.to_numeric(b["s"], errors="coerce").mean())
            jobs += 1
        if jobs:
            out[stage] = {"seconds": total, "jobs": jobs}
    return out


_GRAD_RE = re.compile(r"(\d+) gradient evaluations \((\d+(?:\.\d+)?) per image\)")


def read_grad_evals(log_path) -> dict | None:
    """Gradient evaluations of the sensitivity search, from the last line of its log that states them.

    Args:
        log_path: the sensitivity job's log (``results/logs/sensitivity/{ds}/{regime}.log``).
    Returns:
        ``{"total", "per_image"}``, or None when the log is absent or says nothing about them.
    """
    if not log_path or not Path(log_path).is_file():
        return None
    hits = _GRAD_RE.findall(Path(log_path).read_text(errors="replace"))
    if not hits:
        return None
    total, per = hits[-1]
    return {"total": int(total), "per_image": float(per)}


def model_identity(model_path) -> dict:
    """Architecture and digests of a model file written by the workflow.

    Args:
        model_path: ``results/{ds}/models/{regime}.pt``.
    Returns:
        ``{"arch", "sha256", "checkpoint_sha256", "source", "output"}``: ``sha256`` is the digest
        of the model's tensors stored in (and verified against) its meta; ``checkpoint_sha256`` the
        SHA-256 of the user's file for a given (imported) model, else ""; ``output`` the model's
        output head (logits, logit or probabilities; models trained here return logits).
    Raises:
        oncorobust.models.checkpoints.CheckpointError: the file is missing, unreadable or damaged.
    """
    from oncorobust.models.checkpoints import load_checkpoint  # torch: only where a model is read

    meta = load_checkpoint(model_path)["meta"]
    return {"arch": str(meta.get("arch", "")), "sha256": str(meta.get("sha256") or ""),
            "checkpoint_sha256": str(meta.get("checkpoint_sha256") or ""),
            "source": str(meta.get("source") or ("given" if meta.get("checkpoint_sha256") else "trained here")),
            "output": str(meta.get("output") or "logits")}


# ---------------------------------------------------------------------------------- gather


def _strongest(rows: pd.DataFrame) -> pd.DataFrame:
    """Per ε the attack that changed most predictions (then: lowest accuracy, more thorough)."""
    rank = {m: i for i, m in enumerate(STRENGTH)}
    r = rows.assign(_rank=rows.method.map(lambda m: rank.get(m, len(rank))))
    r = r.sort_values(["eps", "flip_rate", "accuracy", "_rank"], ascending=[True, False, True, True])
    return r.drop_duplicates("eps", keep="first").drop(columns="_rank")


def _health(path) -> dict | None:
    if path is None or not Path(path).is_file():
        return None
    h = _read_csv(path, "evaluation-health table", ("check", "passed", "value", "threshold", "detail"))
    passed = h.passed.map({True: True, False: False, "True": True, "False": False})
    rows = []
    for r, p in zip(h.itertuples(), passed):
        p = None if p is None or (isinstance(p, float) and math.isnan(p)) else bool(p)
        rows.append({"check": str(r.check), "passed": p, "value": _float(r.value),
                     "threshold": "" if pd.isna(r.threshold) else str(r.threshold),
                     "detail": "" if pd.isna(r.detail) else str(r.detail),
                     "meaning": HEALTH_MEANING.get(str(r.check), GENERIC_MEANING),
                     "judges": JUDGES_TEXT[judges(r.check)], "paper_only": judges_paper_attacks_only(r.check)})
    n_pass = sum(r["passed"] is True for r in rows)
    n_fail = sum(r["passed"] is False for r in rows)
    return {"rows": rows, "passed": n_pass, "failed": n_fail, "applicable": n_pass + n_fail,
            "not_applicable": [r["check"] for r in rows if r["passed"] is None]}


#: One class predicted for at least this share of the test images counts as "constant predictions".
CONSTANT_SHARE = 0.95
#: Clean accuracy within this many points of chance (or of the majority class's share) is "at chance".
NEAR_CHANCE_POINTS = 5.0


def plausibility(per_image: pd.DataFrame | None, classes: list[str], eps_max: float | None = None) -> dict:
    """Whether the model's clean behaviour makes its fragility numbers meaningful: warnings for a
    clean accuracy near or below chance (reversed class order, a model that rescales its input
    itself, a wrong output head), constant predictions, and no image flipped within the search.

    Args:
        per_image: the model's sensitivity CSV (test rows: ``label``, ``clean_pred``, ``eps_upper``),
            or None (not checked).
        classes: the class names in label order (``stats.json``).
        eps_max: the sensitivity search's largest ε (pixel units), for the "nothing flipped" note.

    Returns:
        ``{"checked": bool, "warnings": [sentences], "n": test images, "chance": % for k classes}``.
    """
    k = max(len(classes), 2)
    if per_image is None:
        return {"checked": False, "warnings": [], "n": 0, "chance": 100 / k}
    test = rows_of_test_split(per_image)
    n = len(test)
    warnings = []
    if n == 0:
        return {"checked": True, "warnings": ["No test image was scored."], "n": 0, "chance": 100 / k}
    correct = int((test.clean_pred == test.label).sum())
    lo, hi = wilson(correct, n)
    acc, chance = 100 * correct / n, 100 / k
    majority = 100 * float(test.label.value_counts().iloc[0]) / n  # always answering the largest class
    if 100 * hi < chance:
        warnings.append(f"Clean accuracy {acc:.1f}% is below chance ({chance:.0f}% for {k} classes, 95% CI"
                        f" {100 * lo:.1f}–{100 * hi:.1f}%): the class order (--classes, source.classes) may be"
                        " reversed, or the labels do not match the model.")
    elif acc <= max(chance, majority) + NEAR_CHANCE_POINTS:
        warnings.append(f"Clean accuracy {acc:.1f}% is at chance level (within {NEAR_CHANCE_POINTS:g} points of"
                        f" {max(chance, majority):.0f}%, what {'always answering the largest class' if majority > chance else f'guessing among {k} classes'}"
                        " scores): check the input scaling (--normalize, a model that divides by 255 itself), the"
                        " channels and the output head before reading fragility from it.")
    counts = test.clean_pred.value_counts()
    top, share = counts.index[0], float(counts.iloc[0]) / n
    if share >= CONSTANT_SHARE:
        name = classes[int(top)] if 0 <= int(top) < len(classes) else str(top)
        warnings.append(f"The model predicts {name!r} for {100 * share:.0f}% of the test images: its"
                        " fragility describes a (nearly) constant classifier.")
    if "eps_upper" in test.columns and not np.isfinite(test.eps_upper.astype(float)).any():
        upto = f" up to ε = {eps_max:g}" if eps_max is not None and math.isfinite(eps_max) else ""
        warnings.append(f"No test image changed its prediction{upto}: either the model is robust in the"
                        " searched range or its gradients are masked (see the health checks); raise"
                        " sensitivity.eps_max to find its flips.")
    return {"checked": True, "warnings": warnings, "n": n, "chance": chance}


def _deferral(dataset: str, regime: str, table2_csv, auc_csv, units: dict | None) -> dict | None:
    out = {}
    if table2_csv is not None and Path(table2_csv).is_file():
        t2 = _read_csv(table2_csv, "Table 2", ("dataset", "regime", "threshold_from", "threshold_eps",
                                               "excluded_fraction", "n_test", "acc_before", "n_retained",
                                               "acc_after", "acc_after_ci_low", "acc_after_ci_high"))
        t2 = t2[(t2.dataset.astype(str) == dataset) & (t2.regime.astype(str) == regime)]
        ours = t2[t2.threshold_from.astype(str).str.startswith("validation")]
        if len(ours):
            r = ours.iloc[0]
            out["table2"] = {k: (_float(r[k]) if k not in ("threshold_from",) else str(r[k]))
                             for k in ("threshold_from", "threshold_eps", "excluded_fraction", "n_test",
                                       "acc_before", "acc_before_ci_low", "acc_before_ci_high", "n_retained",
                                       "acc_after", "acc_after_ci_low", "acc_after_ci_high",
                                       "target_fraction") if k in r.index}
            stored = r.get("threshold_stored")  # the table's own text (e.g. "24 HU") where it has one
            out["table2"]["threshold_stored"] = (str(stored) if isinstance(stored, str) and stored
                                                 else clinical_eps(r["threshold_eps"], units)[1])
    if auc_csv is not None and Path(auc_csv).is_file():
        auc = _read_csv(auc_csv, "deferral AUC table", ("dataset", "regime"))
        auc = auc[(auc.dataset.astype(str) == dataset) & (auc.regime.astype(str) == regime)]
        if len(auc):
            r = auc.iloc[0]
            out["auc"] = {c: _float(r[c]) for c in auc.columns if c not in ("dataset", "regime")}
    return out or None


def gather(*, dataset: str, regime: str, summary_csv, robustness_csv, stats_json, health_csv=None,
           table2_csv=None, auc_csv=None, attack_cfg: dict | None = None, attacks_cfg: dict | None = None,
           sensitivity_cfg: dict | None = None, adversarial_cfg: dict | None = None, control: bool = False,
           model: dict | None = None, runtime: dict | None = None, grad_evals: dict | None = None,
           version: str = "", per_image: pd.DataFrame | None = None, directions_csv=None,
           clinical_csv=None) -> dict:
    """Collect one card's numbers from the workflow's outputs (never recomputed differently).

    Args:
        dataset, regime: the card's model (``{ds}``, ``{regime}``).
        summary_csv: ``tables/attack_summary.csv`` (Table 1's numbers, for every regime).
        robustness_csv: ``tables/robustness_summary.csv`` (ε₅₀, ε₁₀ and CIs).
        stats_json: the dataset's ``tensors/stats.json`` (``eps_units``).
        health_csv: ``{ds}/health/{regime}.csv``; None or absent: no health verdict.
        table2_csv, auc_csv: ``tables/table2.csv`` and ``tables/deferral_auc.csv``; None or no row
            for this model: the card says deferral was not computed.
        attack_cfg: the dataset's ``attack`` block (methods, eps, reference_eps).
        attacks_cfg: the shared ``attacks`` block, at least the blocks of the methods used, ``labels``
            and ``health``.
        sensitivity_cfg: the dataset's ``sensitivity`` block (eps_max, method, restarts...).
        adversarial_cfg: the adversarial-training block (regimes other than clean), or None.
        control: whether the dataset is a control (MNIST/CIFAR-10 or a stand-in).
        model: :func:`model_identity` of the model file, or None.
        runtime: :func:`read_benchmarks` of its jobs, or None.
        grad_evals: :func:`read_grad_evals` of its sensitivity job, or None.
        version: the oncorobust version that wrote the card.
        per_image: the model's sensitivity CSV as read (:func:`plausibility`), or None.
        directions_csv: ``tables/directions_eps.csv`` (flipping ε per clinical direction), or None;
            the summary's direction columns give the counts (:mod:`oncorobust.evaluation.clinical`).
        clinical_csv: ``tables/clinical.csv`` (AUROC, sensitivity and specificity under attack,
            :mod:`oncorobust.evaluation.clinical_metrics`), or None.
    Returns:
        A dict with keys dataset, regime, control, n, clean, attacks, worst_note, units, eps50,
        eps10, eps_max, health, deferral, run and verdict (the one-sentence verdict).
    Raises:
        CardError: an input table is missing or malformed, or has no row for this model.
    """
    attack_cfg, attacks_cfg = dict(attack_cfg or {}), dict(attacks_cfg or {})
    stats_path = Path(stats_json)
    if not stats_path.is_file():
        raise CardError(f"{stats_path}: no such file (the dataset's preprocessing statistics); run preprocess first")
    try:
        stats = json.loads(stats_path.read_text())
        units = stats.get("eps_units")
    except json.JSONDecodeError as exc:
        raise CardError(f"{stats_path}: not valid JSON ({exc}); delete it and rerun preprocess") from None

    summ = _read_csv(summary_csv, "attack summary", ("dataset", "regime", "method", "eps", "n", "accuracy",
                                                     "ci_low", "ci_high", "flip_rate", "clean_accuracy",
                                                     "clean_ci_low", "clean_ci_high"))
    mine = summ[(summ.dataset.astype(str) == dataset) & (summ.regime.astype(str) == regime)]
    white = mine[~mine.method.astype(str).str.startswith(TRANSFER_PREFIX)]
    if white.empty:
        raise CardError(f"{summary_csv}: no white-box attack result for {dataset}/{regime}; rerun the tables"
                        " step (rule tables) with this dataset and regime in the config")
    first = white.iloc[0]  # Table 1's baseline row reads the first one too
    clean = {"accuracy": float(first.clean_accuracy), "ci_low": float(first.clean_ci_low),
             "ci_high": float(first.clean_ci_high), "n": int(first.n)}

    methods_present = list(dict.fromkeys(white.method.astype(str)))
    if "worst" in methods_present:
        chosen, note = white[white.method == "worst"].sort_values("eps"), ""
    else:
        chosen = _strongest(white)
        note = ("No per-image worst case (`worst`) was configured for this dataset: each ε shows the strongest"
                f" attack that was run ({', '.join(methods_present)}), so fragility may be understated.")
    rows = []
    for r in chosen.itertuples():
        value, text, below = clinical_eps(r.eps, units)
        rows.append({"eps": float(r.eps), "method": str(r.method), "accuracy": float(r.accuracy),
                     "ci_low": float(r.ci_low), "ci_high": float(r.ci_high), "flip_rate": float(r.flip_rate),
                     "n": int(r.n), "eps_stored": value, "eps_stored_text": text, "below_one_step": below,
                     # how visible the changes are (tables/visibility.csv; absent in older summaries)
                     "ssim_median": float(getattr(r, "ssim_median", math.nan)),
                     "psnr_median": float(getattr(r, "psnr_median", math.nan)),
                     "below_noise_pct": float(getattr(r, "below_noise_pct", math.nan))})

    rob = _read_csv(robustness_csv, "robustness summary", ("dataset", "regime", "n", "eps50", "eps50_ci_low",
                                                          "eps50_ci_high", "eps10", "eps10_ci_low", "eps10_ci_high"))
    rob = rob[(rob.dataset.astype(str) == dataset) & (rob.regime.astype(str) == regime)]
    eps = {}
    for name in ("eps50", "eps10"):
        if rob.empty:
            eps[name] = None
            continue
        r = rob.iloc[0]
        v = float(r[name])
        stored = (f"{float(r['eps50_stored']):.3g} {r['stored_unit']}"
                  if name == "eps50" and "eps50_stored" in r.index and math.isfinite(_float(r["eps50_stored"]))
                  else (clinical_eps(v, units)[1] if math.isfinite(v) else ""))
        eps[name] = {"value": v, "ci_low": float(r[f"{name}_ci_low"]), "ci_high": float(r[f"{name}_ci_high"]),
                     "stored_text": stored, "n": int(r["n"]),
                     "flipped_pct": _float(r["eps_max_flipped"]) if "eps_max_flipped" in r.index else math.nan}

    sens = dict(sensitivity_cfg or {})
    card = {
        "dataset": dataset, "regime": regime, "control": bool(control), "n": clean["n"], "clean": clean,
        "attacks": rows, "worst_note": note, "units": units, "eps50": eps["eps50"], "eps10": eps["eps10"],
        "eps_max": _float(sens.get("eps_max")),
        "health": _health(health_csv),
        "plausibility": plausibility(per_image, list(stats.get("classes") or []), _float(sens.get("eps_max"))),
        "deferral": _deferral(dataset, regime, table2_csv, auc_csv, units),
        "transfer": [{"method": str(r.method), "eps": float(r.eps), "accuracy": float(r.accuracy),
                      "ci_low": float(r.ci_low), "ci_high": float(r.ci_high)}
                     for r in mine[mine.method.astype(str).str.startswith(TRANSFER_PREFIX)].sort_values(["eps", "method"]).itertuples()],
        "run": _run(attack_cfg, attacks_cfg, sens, adversarial_cfg, methods_present, model, runtime, grad_evals, version),
    }
    card["directions"] = _directions(dataset, regime, chosen, list(stats.get("classes") or []), directions_csv, units)
    card["clinical"] = _clinical(dataset, regime, clinical_csv)
    card["verdict"] = verdict_sentence(card)
    return card


def _directions(dataset: str, regime: str, chosen: pd.DataFrame, classes: list[str], directions_csv,
                units: dict | None) -> dict | None:
    """Missed findings and false alarms of the card's attack rows, and the flipping ε per direction;
    None for a dataset without a positive class (controls) or tables written before them."""
    if "positive_class" not in chosen.columns or chosen.empty:
        return None
    pos = str(chosen.positive_class.iloc[0]) if pd.notna(chosen.positive_class.iloc[0]) else ""
    if not pos:
        return None
    others = [c for c in classes if str(c).lower() != pos.lower()]
    out = {"positive": pos, "negative": others[0] if len(others) == 1 else f"not {pos}", "rows": [], "eps": None}
    for r in chosen.itertuples():
        out["rows"].append({"eps": float(r.eps), "method": str(r.method), "n_detected": int(r.n_detected),
                            "missed": int(r.missed), "missed_rate": float(r.missed_rate),
                            "missed_ci": (float(r.missed_ci_low), float(r.missed_ci_high)),
                            "n_cleared": int(r.n_cleared), "false_alarms": int(r.false_alarms),
                            "false_alarm_rate": float(r.false_alarm_rate),
                            "false_alarm_ci": (float(r.false_alarm_ci_low), float(r.false_alarm_ci_high))})
    if directions_csv is not None and Path(directions_csv).is_file():
        d = _read_csv(directions_csv, "per-direction flipping ε", ("dataset", "regime", "eps50_missed"))
        d = d[(d.dataset.astype(str) == dataset) & (d.regime.astype(str) == regime)]
        if len(d):
            r = d.iloc[0]
            out["eps"] = {k: float(r[k]) for k in r.index if str(k).startswith(("eps50_", "eps10_"))}
            for k in ("eps50_missed", "eps50_false_alarm"):
                v = out["eps"].get(k, math.nan)
                out["eps"][f"{k}_stored"] = clinical_eps(v, units)[1] if math.isfinite(v) else ""
    return out


def _clinical(dataset: str, regime: str, clinical_csv) -> dict | None:
    """The model's AUROC and operating-point rows, clean and under the per-image worst of the attacks
    (``any attack``; the one attack run where only one was), or None without the table or a row."""
    if clinical_csv is None or not Path(clinical_csv).is_file():
        return None
    from oncorobust.evaluation.clinical_metrics import ANY_ATTACK, CLEAN

    t = _read_csv(clinical_csv, "clinical table", ("dataset", "regime", "method", "eps", "positive_class", "auroc"))
    t = t[(t.dataset.astype(str) == dataset) & (t.regime.astype(str) == regime)]
    if "direction" in t.columns:  # the untargeted adversary (the targeted rows: tables/clinical.md)
        t = t[t.direction.astype(str) == "any"]
    if (t.positive_class.astype(str) == "macro").any():
        t = t[t.positive_class.astype(str) == "macro"]
    attacks = t[t.method != CLEAN]
    if (attacks.method == ANY_ATTACK).any():
        attacks = attacks[attacks.method == ANY_ATTACK]
    rows = pd.concat([t[t.method == CLEAN], attacks]).sort_values("eps")
    if rows.empty:
        return None
    return {"positive": str(rows.positive_class.iloc[0]), "rule": str(rows.operating_rule.iloc[0] or ""),
            "rows": [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for _, r in rows.iterrows()]}


def _run(attack_cfg, attacks_cfg, sens, adversarial_cfg, methods_present, model, runtime, grad_evals, version) -> dict:
    methods = list(attack_cfg.get("methods") or methods_present)
    budgets = {m: dict(attacks_cfg.get(m) or {}) for m in methods if m != "worst"}
    members = list((attacks_cfg.get("worst") or {}).get("members") or []) if "worst" in methods else []
    for m in members:
        budgets.setdefault(m, dict(attacks_cfg.get(m) or {}))
    return {"methods": methods, "eps": [float(e) for e in attack_cfg.get("eps", [])],
            "reference_eps": _float(attack_cfg.get("reference_eps")), "labels": attacks_cfg.get("labels", ""),
            "budgets": budgets, "worst_members": members, "early_exit": attacks_cfg.get("early_exit"),
            "budget": attacks_cfg.get("budget", "custom"),
            "health": dict(attacks_cfg.get("health") or {}), "sensitivity": sens,
            "adversarial": dict(adversarial_cfg) if adversarial_cfg else None,
            "model": dict(model or {}), "runtime": dict(runtime or {}), "grad_evals": grad_evals,
            "version": version}


# ---------------------------------------------------------------------------------- verdict


def verdict_sentence(card: dict) -> str:
    """The card's one-sentence plain-language verdict.

    Args:
        card: a dict from :func:`gather` (its ``verdict`` key is not read).
    Returns:
        E.g. "Half of the test images change their prediction at ε = 0.0293 (43.9 HU); the attacks
        passed 7 of 8 health checks, so the true fragility may be greater."
    """
    whose = "of this control dataset " if card.get("control") else ""
    e50 = card.get("eps50")
    if e50 and math.isfinite(e50["value"]):
        stored = f" ({e50['stored_text']})" if e50.get("stored_text") else ""
        first = f"Half of the test images {whose}change their prediction at ε = {_f3(e50['value'])}{stored}"
    elif e50 and e50["value"] == math.inf:
        cap = card.get("eps_max")
        upto = f"up to ε = {cap:g}, the largest searched" if cap is not None and math.isfinite(cap) else "within the searched range"
        first = f"Fewer than half of the test images {whose}change their prediction {upto}"
    elif card.get("attacks"):
        last = card["attacks"][-1]
        stored = f" ({last['eps_stored_text']})" if last.get("eps_stored_text") else ""
        first = (f"Under the strongest attack at ε = {eps_text(last['eps'])}{stored} the accuracy {whose}falls from"
                 f" {_pct(card['clean']['accuracy'])}% to {_pct(last['accuracy'])}%")
    else:
        first = f"No attack result {whose}is available"
    second = _health_clause(card)
    warnings = (card.get("plausibility") or {}).get("warnings") or []
    caution = f" Caution: {warnings[0]}" if warnings else ""
    harm = _harm_clause(card.get("directions"))
    if harm:  # the harmful direction first, then all images
        first = f"{harm}; {first[0].lower()}{first[1:]}"
    return f"{first}; {second}{caution}"


def _health_clause(card: dict) -> str:
    """The verdict's caveat, from the health checks that judge the verdict's own evidence: the worst
    case and the per-image search, so not the checks of the paper's BIM/PGD alone (those make
    Table 1's BIM/PGD rows optimistic, which the clause then says), unless the verdict rests on
    the paper's attacks (no search result and no worst case)."""
    h = card.get("health")
    if not h or not h["applicable"]:
        return "no evaluation-health check was recorded, so how strong the attacks were is unknown."
    paper_evidence = not card.get("eps50") and not any(r["method"] == "worst" for r in card.get("attacks") or [])
    judged = [r for r in h["rows"] if r["passed"] is not None and (paper_evidence or not r.get("paper_only"))]
    failed = [r["check"] for r in judged if r["passed"] is False]
    others = [r["check"] for r in h["rows"] if r["passed"] is False and r["check"] not in failed]
    if not judged:
        text = "no evaluation-health check judges the attacks behind it, so how strong they were is unknown."
    elif failed:
        text = (f"{len(failed)} of the {len(judged)} health checks that judge its attacks failed ({', '.join(failed)}),"
                " so the true fragility may be greater.")
    else:
        text = (f"all {len(judged)} health checks that judge its attacks passed, so nothing suggests they"
                " understate the fragility.")
    if others:
        text += (f" ({', '.join(others)} failed, which judge{'s' if len(others) == 1 else ''} only the paper's"
                 " BIM/PGD: Table 1's rows of those attacks may be optimistic.)")
    return text


def _harm_clause(d: dict | None) -> str:
    """"Half of the correctly detected malignant cases are called benign at ε = … (… HU)", or ""."""
    e = (d or {}).get("eps") or {}
    v = e.get("eps50_missed", math.nan)
    if not d or not math.isfinite(v):
        return ""
    stored = f" ({e['eps50_missed_stored']})" if e.get("eps50_missed_stored") else ""
    text = f"Half of the correctly detected {d['positive']} cases are called {d['negative']} at ε = {_f3(v)}{stored}"
    fa = e.get("eps50_false_alarm", math.nan)
    if math.isfinite(fa):
        fa_stored = f" ({e['eps50_false_alarm_stored']})" if e.get("eps50_false_alarm_stored") else ""
        text += f", half of the correctly cleared ones are called {d['positive']} at ε = {_f3(fa)}{fa_stored}"
    elif fa == math.inf:
        text += f", while fewer than half of the correctly cleared ones are called {d['positive']} within the searched ε"
    return text


# ---------------------------------------------------------------------------------- markdown


def _count_ci(k: int, n: int, rate: float, ci: tuple[float, float]) -> str:
    if not n:
        return "– (none)"
    return f"{k}/{n} ({_pct(rate)}% [{_pct(ci[0])}, {_pct(ci[1])}])"


def _eps_cell(e: dict) -> str:
    return f"{_f3(e['value'])} [{_f3(e['ci_low'])}, {_f3(e['ci_high'])}]"


def _sections(card: dict) -> list[tuple[str, list[str], list[list[str]] | None, list[str]]]:
    """The card's sections as (title, paragraphs before, table rows (header first) or None,
    paragraphs after): the one content model both renderers share."""
    out = []
    c = card["clean"]
    out.append(("Clean accuracy",
                [f"{_acc_ci(c['accuracy'], c['ci_low'], c['ci_high'])} on {c['n']} test images (Wilson 95% CI)."],
                None, []))
    p = card.get("plausibility") or {}
    if p.get("checked"):
        out.append(("Is the model plausible?", p["warnings"] or [
            f"Yes as far as checked: clean accuracy above chance ({p['chance']:.0f}%), more than one class predicted"
            " and flips found within the searched ε."], None, []))
    labels = card["run"].get("labels")
    table = [["ε (pixel units)", "ε in stored data", "attack", "accuracy % [95% CI]", "predictions changed %",
              "changed images: median SSIM, PSNR"]]
    for r in card["attacks"]:
        stored = r["eps_stored_text"] or "–"
        if r["below_one_step"]:
            stored += " ⚠ below one stored-value step"
        ssim, psnr = r.get("ssim_median", math.nan), r.get("psnr_median", math.nan)
        seen = ", ".join(["–" if math.isnan(ssim) else f"{ssim:.4f}", "–" if math.isnan(psnr) else f"{psnr:.1f} dB"])
        seen = "–" if seen == "–, –" else seen
        below = r.get("below_noise_pct", math.nan)
        if seen != "–" and math.isfinite(below):
            seen += f"; {below:.0f}% below own noise σ"
        table.append([eps_text(r["eps"]), stored, r["method"].upper(), _acc_ci(r["accuracy"], r["ci_low"], r["ci_high"]).replace("%", ""),
                      _pct(r["flip_rate"]), seen])
    after = []
    if card["worst_note"]:
        after.append(card["worst_note"])
    if card.get("transfer"):
        best = {}
        for t in card["transfer"]:  # the strongest transfer attack (lowest accuracy) at each ε
            if t["eps"] not in best or t["accuracy"] < best[t["eps"]]["accuracy"]:
                best[t["eps"]] = t
        after.append("Strongest transfer attack (crafted on the clean model, the paper's protocol) at each ε: "
                     + "; ".join(f"ε = {eps_text(e)}: {base_method(t['method']).upper()}"
                                 f" {_acc_ci(t['accuracy'], t['ci_low'], t['ci_high'])}" for e, t in sorted(best.items())) + ".")
    if any(not math.isnan(r.get("psnr_median", math.nan)) for r in card["attacks"]):
        after.append("SSIM (1 = identical) and PSNR of the images the attack itself changed against their clean"
                     " versions, on the model's input (tables/visibility.md): how visible the change is"
                     + ("; \"below own noise σ\": the share of them whose ‖δ‖∞ is smaller than the noise σ measured"
                        " in the image itself." if any(math.isfinite(r.get("below_noise_pct", math.nan))
                                                      for r in card["attacks"]) else "."))
    if labels:
        after.append(f"Attacks pushed each image away from the model's {labels} label"
                     + (" (a misclassified image can be flipped to correct)" if labels == "predicted" else "") + ".")
    units = card.get("units") or {}
    if units.get("how"):
        after.append(f"Stored-data units: {units['how']}.")
    title = "Accuracy under the worst-case attack" if not card["worst_note"] else "Accuracy under the strongest attack run"
    out.append((title, [], table if len(table) > 1 else None, after or ["No attack result."]))

    d = card.get("directions")
    if d and d["rows"]:
        rows = [["ε (pixel units)", "attack", f"missed findings ({d['positive']} → {d['negative']})",
                 f"false alarms ({d['negative']} → {d['positive']})"]]
        for r in d["rows"]:
            rows.append([eps_text(r["eps"]), r["method"].upper(), _count_ci(r["missed"], r["n_detected"], r["missed_rate"], r["missed_ci"]),
                         _count_ci(r["false_alarms"], r["n_cleared"], r["false_alarm_rate"], r["false_alarm_ci"])])
        after = [f"Of the test images the model gets right: correctly detected {d['positive']} cases the attack turns"
                 f" {d['negative']} (a missed finding), and correctly cleared cases it turns {d['positive']} (a false"
                 " alarm); count / images, % with Wilson 95% CI."]
        e = d.get("eps")
        if e:
            def cell(k):
                v = e.get(k, math.nan)
                if v == math.inf:
                    return "beyond the searched ε"
                if not math.isfinite(v):
                    return "–"
                return f"{_f3(v)} [{_f3(e[k + '_ci_low'])}, {_f3(e[k + '_ci_high'])}]"
            after.append(f"ε at which half of the detected {d['positive']} cases are missed: {cell('eps50_missed')}"
                         + (f" ({e['eps50_missed_stored']})" if e.get("eps50_missed_stored") else "")
                         + f"; a tenth: {cell('eps10_missed')}. Half of the cleared cases become false alarms at"
                         f" {cell('eps50_false_alarm')}"
                         + (f" ({e['eps50_false_alarm_stored']})" if e.get("eps50_false_alarm_stored") else "")
                         + f"; a tenth at {cell('eps10_false_alarm')} (sensitivity search,"
                         " bootstrap 95% CIs).")
        out.append(("Missed findings and false alarms", [], rows, after))

    c = card.get("clinical")
    if c and c["rows"]:
        from oncorobust.evaluation.clinical_metrics import auroc_text

        macro = c["positive"] == "macro"
        head = ["ε (pixel units)", "attack", "AUROC [95% CI]", "ΔAUROC"]
        rows = [head + ([] if macro else ["sensitivity", "specificity"])]
        for r in c["rows"]:
            auc = auroc_text(r["auroc"], r.get("auroc_ci_low", math.nan), r.get("auroc_ci_high", math.nan))
            delta = "" if r["method"] == "clean" or not math.isfinite(r.get("d_auroc", math.nan)) else f"{r['d_auroc']:+.3f}"
            line = ["0" if r["method"] == "clean" else eps_text(r["eps"]), str(r["method"]), auc, delta]
            if not macro:
                line += [_acc_ci(r["sensitivity"], r["sens_ci_low"], r["sens_ci_high"]),
                         _acc_ci(r["specificity"], r["spec_ci_low"], r["spec_ci_high"])]
            rows.append(line)
        after = [("Mean one-vs-rest AUROC over the classes (tables/clinical.csv has each class)." if macro else
                  f"Positive class: {c['positive']}. The adversary pushes every {c['positive']} image toward a lower"
                  f" {c['positive']} score and every other image toward a higher one; \"any attack\" takes each image's"
                  " most harmful score among the attacks run (tables/clinical.md has each attack). AUROC with DeLong"
                  f" 95% CI; sensitivity and specificity (Wilson 95% CI) at the operating point: {c['rule']}.")]
        out.append(("AUROC and the operating point under attack", [], rows, after))

    e50, e10 = card.get("eps50"), card.get("eps10")
    if e50 is None:
        out.append(("How large a perturbation flips the predictions",
                    ["No per-image sensitivity result for this model (robustness summary has no row)."], None, []))
    else:
        rows = [["", "ε [95% CI] (pixel units)", "in stored data"],
                ["ε₅₀: half of the test images flipped", _eps_cell(e50), e50["stored_text"] or "–"],
                ["ε₁₀: a tenth flipped", _eps_cell(e10), e10["stored_text"] or "–"]]
        after = [f"From each of the {e50['n']} test images' confirmed flipping ε (an upper bound: a stronger attack"
                 " can only lower it); percentile-bootstrap 95% CIs."]
        if math.isfinite(e50.get("flipped_pct", math.nan)) and math.isfinite(card.get("eps_max", math.nan)):
            after.append(f"{_pct(e50['flipped_pct'])}% of the images flipped within the searched ε ≤ {card['eps_max']:g};"
                         " \"> eps_max\" means the quantile lies beyond it.")
        out.append(("How large a perturbation flips the predictions", [], rows, after))

    h = card.get("health")
    if not h:
        out.append(("Did the attacks work? (evaluation health)",
                    ["No evaluation-health result for this model: how strong the attacks were is unknown."], None, []))
    else:
        before = [f"{h['passed']} of {h['applicable']} checks passed"
                  + (f", {h['failed']} failed." if h["failed"] else ".")]
        rows = [["check", "judges", "result", "what a failure means", "measured"]]
        for r in h["rows"]:
            mark = "–" if r["passed"] is None else ("✓ pass" if r["passed"] else "✗ FAIL")
            rows.append([r["check"], r.get("judges", ""), mark, r["meaning"] if r["passed"] is False else "", r["detail"]])
        after = ["A failed check means the accuracies under attack of the attacks it judges may overstate this"
                 " model's robustness. A check of the paper's BIM/PGD alone says nothing against the worst case"
                 " or the per-image search, whose attacks have their own budgets."] if h["failed"] else []
        if h["not_applicable"]:
            after.append(f"Not applicable here: {', '.join(h['not_applicable'])}.")
        out.append(("Did the attacks work? (evaluation health)", before, rows, after))

    d = card.get("deferral")
    if not d:
        out.append(("Deferring the most sensitive images", ["Deferral was not computed for this model."], None, []))
    else:
        paras = []
        t = d.get("table2")
        if t:
            thr = f"ε ≤ {t['threshold_eps']:.4g}" + (f" ({t['threshold_stored']})" if t.get("threshold_stored") else "")
            if not math.isfinite(t.get("acc_after", math.nan)) or not t.get("n_retained"):
                paras.append(f"Deferring by sensitivity (threshold chosen on the validation split: {thr}) would defer"
                             f" every one of the {int(t['n_test'])} test images, leaving none to score (Table 2).")
            else:
                paras.append(f"Deferring the {100 * t['excluded_fraction']:.4g}% most sensitive test images (flipping {thr},"
                             f" threshold chosen on the validation split) changes accuracy from {t['acc_before']:.4g}% on all"
                             f" {int(t['n_test'])} to {t['acc_after']:.4g}% [{t['acc_after_ci_low']:.4g}, {t['acc_after_ci_high']:.4g}]"
                             f" on the {int(t['n_retained'])} retained (Table 2).")
        a = d.get("auc")
        rows = None
        if a:
            names = {"sensitivity": "most sensitive first", "first_order": "one-gradient estimate first",
                     "confidence": "least confident first", "random": "random (no selection)"}
            rows = [["what is deferred first", "mean accuracy % while deferring 0–50%"]]
            for k in ("sensitivity", "first_order", "confidence", "random"):
                if k in a:
                    rows.append([names[k], "–" if math.isnan(a[k]) else f"{a[k]:.2f}"])
            for k in a:
                if k not in names:
                    rows.append([k, "–" if math.isnan(a[k]) else f"{a[k]:.2f}"])
            if "sensitivity" in a and "random" in a and not (math.isnan(a["sensitivity"]) or math.isnan(a["random"])):
                paras.append(f"Deferring by sensitivity gains {a['sensitivity'] - a['random']:+.2f} points of mean accuracy"
                             " over deferring at random (deferral AUC).")
        out.append(("Deferring the most sensitive images", paras, rows, []))

    out.append(("What was run", _run_lines(card), None, []))
    return out


def _run_lines(card: dict) -> list[str]:
    run = card["run"]
    lines = []
    m = run.get("model") or {}
    adv = run.get("adversarial")
    regime = card["regime"]
    training = ("trained on clean images" if regime == "clean" else
                f"adversarially trained ({regime}: {_params_text(adv)})" if adv else f"regime {regime}")
    if m.get("checkpoint_sha256"):
        training = f"given model ({m.get('source') or 'file'}), imported, not trained here"
    head = {"logit": "one logit per image, attacked as the two logits [0, z]",
            "probabilities": "probabilities, attacked through clamped log-probabilities"}.get(m.get("output", ""), "")
    lines.append(f"Model: {m.get('arch') or 'unknown architecture'}, {training}"
                 + (f"; output head: {head}" if head else "") + ".")
    if m.get("sha256"):
        lines.append(f"Model tensors SHA-256 (stored in and verified against the model file): `{m['sha256']}`.")
    if m.get("checkpoint_sha256"):
        lines.append(f"Given checkpoint file SHA-256: `{m['checkpoint_sha256']}`.")
    if run["methods"]:
        grid = ", ".join(eps_text(e) for e in run["eps"]) or "–"
        lines.append(f"Attacks: {', '.join(run['methods'])} at ε = {grid} (L∞, pixel units); reference ε for the"
                     f" health checks {_f3(run['reference_eps'])}.")
    if run.get("budget"):
        lines.append(f"Attack budget: {run['budget']}" + {"quick": " (a first look: APGD-margin 25 steps as the"
                     " worst case, no Square; the true fragility may be greater)", "thorough": " (AutoAttack's"
                     " budgets with 3 restarts)", "standard": " (the defaults)"}.get(str(run["budget"]).split(" ")[0], "")
                     + ".")
    for meth, params in run["budgets"].items():
        lines.append(f"Budget of {meth}: {_params_text(params)}"
                     + ("; early exit" if run.get("early_exit") and meth in EARLY_EXIT_OPTION else "") + ".")
    if run["worst_members"]:
        lines.append(f"worst: per image the strongest of {', '.join(run['worst_members'])} (each run on the images"
                     " the previous ones left unflipped).")
    if run["health"]:
        lines.append(f"Health checks: {_params_text(run['health'])}.")
    if run["sensitivity"]:
        lines.append(f"Per-image flipping-ε search: {_params_text(run['sensitivity'])}.")
    g = run.get("grad_evals")
    lines.append(f"Gradient evaluations of the flipping-ε search: {g['total']:,} ({g['per_image']:.0f} per image, val + test)."
                 if g else "Gradient evaluations: not recorded.")
    rt = run.get("runtime") or {}
    if rt:
        total = sum(v["seconds"] for v in rt.values())
        parts = ", ".join(f"{k} {_duration(v['seconds'])} ({v['jobs']} job{'s' if v['jobs'] != 1 else ''})"
                          for k, v in rt.items())
        lines.append(f"Runtime (wall clock of this model's jobs, from Snakemake's benchmarks): {_duration(total)}: {parts}.")
    else:
        lines.append("Runtime: no benchmark recorded.")
    lines.append(f"oncorobust {run.get('version') or 'version unknown'}.")
    return lines


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def render_markdown(card: dict) -> str:
    """The card as markdown.

    Args:
        card: a dict from :func:`gather`.
    Returns:
        The page's text; its verdict line starts with :data:`VERDICT_PREFIX`.
    """
    kind = " (control dataset)" if card["control"] else ""
    lines = [f"# Robustness card: {card['dataset']}{kind}, {card['regime']} model", "",
             VERDICT_PREFIX + card["verdict"], ""]
    for title, before, table, after in _sections(card):
        lines += [f"## {title}", ""]
        if title == "What was run":
            lines += [f"- {p}" for p in before] + [""]
            continue
        for p in before:
            lines += [p, ""]
        if table:
            lines.append("| " + " | ".join(_md_escape(c) for c in table[0]) + " |")
            lines.append("|" + "---|" * len(table[0]))
            lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in table[1:]]
            lines.append("")
        for p in after:
            lines += [p, ""]
    lines.append("Aggregate numbers only: no image, patient or sample identifier appears on this card.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:58em;margin:1.5em auto;
padding:0 1em;color:#1d1d1f;line-height:1.45;font-size:15px}
h1{font-size:1.5em;margin-bottom:.3em}h2{font-size:1.15em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
.verdict{background:#f3f6fb;border-left:5px solid #3465a4;padding:.7em 1em;font-size:1.05em}
.verdict.warn{background:#fdf6ec;border-left-color:#c17d11}
table{border-collapse:collapse;margin:.4em 0;font-size:.93em}th,td{border:1px solid #ccc;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.fail{color:#a40000;font-weight:bold}
td.pass{color:#2e7d32}code{font-size:.85em;word-break:break-all}.note{color:#555;font-size:.9em}
svg text{font-size:10px;fill:#333}
"""


def _inline(text: str) -> str:
    """Escape for HTML; `code` spans kept."""
    parts = str(text).split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def curve_svg(curve: pd.DataFrame | None, eps50: float | None = None, width: int = 420, height: int = 200) -> str:
    """An inline SVG of a robustness curve (% of predictions unchanged vs ε, log ε axis).

    Args:
        curve: rows of ``tables/robustness_curves.csv`` for one (dataset, regime): ``eps``,
            ``unchanged`` (%); None or empty: no figure ("").
        eps50: marks ε₅₀ with a dashed line when finite.
        width, height: the figure's size in px.
    Returns:
        ``<svg ...>`` text without external references (no namespace URL: inline SVG in HTML5).
    """
    if curve is None or curve.empty:
        return ""
    c = curve[(curve.eps > 0) & np.isfinite(curve.eps)].sort_values("eps")
    if len(c) < 2:
        return ""
    left, right, top, bottom = 40, 10, 10, 30
    lx = np.log10(c.eps.to_numpy(float))
    x0, x1 = lx.min(), lx.max()

    def px(e):
        return left + (math.log10(e) - x0) / (x1 - x0) * (width - left - right)

    def py(u):
        return top + (100 - u) / 100 * (height - top - bottom)

    pts = " ".join(f"{px(e):.1f},{py(u):.1f}" for e, u in zip(c.eps, c.unchanged))
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img"'
             ' aria-label="robustness curve">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}"'
             ' fill="none" stroke="#999"/>']
    for u in (0, 50, 100):
        parts.append(f'<text x="{left - 4}" y="{py(u) + 3:.1f}" text-anchor="end">{u}%</text>')
    labelled = (1, 2, 5) if x1 - x0 < 1.5 else (1,)  # labels 2 and 5 only where a decade is wide
    for k in range(int(math.floor(x0)), int(math.ceil(x1)) + 1):
        for mult in (1, 2, 5):
            e = mult * 10.0 ** k
            if x0 <= math.log10(e) <= x1:
                parts.append(f'<line x1="{px(e):.1f}" y1="{height - bottom}" x2="{px(e):.1f}" y2="{height - bottom + 4}" stroke="#999"/>')
                if mult in labelled:
                    parts.append(f'<text x="{px(e):.1f}" y="{height - bottom + 14}" text-anchor="middle">{e:g}</text>')
    parts.append(f'<polyline points="{pts}" fill="none" stroke="#3465a4" stroke-width="2"/>')
    if eps50 is not None and math.isfinite(eps50) and eps50 > 0 and x0 <= math.log10(eps50) <= x1:
        parts.append(f'<line x1="{px(eps50):.1f}" y1="{top}" x2="{px(eps50):.1f}" y2="{height - bottom}"'
                     ' stroke="#c17d11" stroke-dasharray="4 3"/>'
                     f'<text x="{px(eps50) + 3:.1f}" y="{top + 12}">ε₅₀</text>')
    parts.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 2}" text-anchor="middle">ε (pixel units, log scale)</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(card: dict, curve: pd.DataFrame | None = None) -> str:
    """The card as one self-contained HTML page (inline CSS and SVG; nothing fetched, no script).

    Args:
        card: a dict from :func:`gather`.
        curve: optional robustness-curve rows for :func:`curve_svg`.
    Returns:
        The HTML document.
    """
    kind = " (control dataset)" if card["control"] else ""
    title = f"Robustness card: {card['dataset']}{kind}, {card['regime']} model"
    h = card.get("health")
    warn = " warn" if (not h or h["failed"]) else ""
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<p class="verdict{warn}"><strong>Verdict:</strong> {html.escape(card["verdict"])}</p>']
    e50 = (card.get("eps50") or {}).get("value")
    svg = curve_svg(curve, e50)
    for sec_title, before, table, after in _sections(card):
        body.append(f"<h2>{html.escape(sec_title)}</h2>")
        if sec_title == "What was run":
            body.append("<ul>" + "".join(f"<li>{_inline(p)}</li>" for p in before) + "</ul>")
            continue
        body += [f"<p>{_inline(p)}</p>" for p in before]
        if table:
            rows = ["<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in table[0]) + "</tr>"]
            for row in table[1:]:
                cells = []
                for cell in row:
                    cls = ' class="fail"' if cell == "✗ FAIL" else (' class="pass"' if cell == "✓ pass" else "")
                    cells.append(f"<td{cls}>{html.escape(cell)}</td>")
                rows.append("<tr>" + "".join(cells) + "</tr>")
            body.append("<table>" + "".join(rows) + "</table>")
        body += [f'<p class="note">{_inline(p)}</p>' for p in after]
        if sec_title.startswith("How large") and svg:
            body.append(f"<figure>{svg}<figcaption class=\"note\">Test images whose prediction is unchanged by every"
                        " perturbation up to ε.</figcaption></figure>")
    body.append('<p class="note">Aggregate numbers only: no image, patient or sample identifier appears on this card.</p>')
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


# ---------------------------------------------------------------------------------- reading cards


def read_verdict(md_path) -> str:
    """The verdict sentence of a card written by :func:`render_markdown`.

    Args:
        md_path: ``results/cards/{ds}_{regime}.md``.
    Returns:
        The sentence.
    Raises:
        CardError: the file is missing or holds no verdict line.
    """
    path = Path(md_path)
    if not path.is_file():
        raise CardError(f"{path}: no such robustness card; run the workflow (rule card) to write it")
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(VERDICT_PREFIX):
            return line[len(VERDICT_PREFIX):].strip()
    raise CardError(f"{path}: no line starting with {VERDICT_PREFIX!r}; not a robustness card, or written by"
                    " another version: delete it and rerun the workflow")


def verdict_line(md_path) -> str:
    """One line for a terminal: the card's path and its verdict sentence.

    Args:
        md_path: ``results/cards/{ds}_{regime}.md``.
    Returns:
        ``"<md_path> (also .html): <verdict>"``.
    Raises:
        CardError: see :func:`read_verdict`.
    """
    return f"{md_path} (also .html): {read_verdict(md_path)}"


def find_cards(results_dir) -> list[Path]:
    """The markdown cards under ``results_dir/cards`` (sorted; empty when there is none).

    Args:
        results_dir: the workflow's results folder (config key ``results``).
    Returns:
        Paths of ``{ds}_{regime}.md`` files.
    """
    folder = Path(results_dir) / "cards"
    return sorted(folder.glob("*.md")) if folder.is_dir() else []
