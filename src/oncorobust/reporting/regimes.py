"""The regime-comparison table (``results/tables/regimes.{csv,md}``): is adversarial training better?

Per dataset and training regime (``clean``, ``adv_pgd``, ``adv_trades``...), from the per-image
outputs of the workflow and never from its aggregate tables:

- clean accuracy (%), and worst-case accuracy (%) at the dataset's ``attack.reference_eps``:
  the per-image attack CSV of ``worst`` when that method ran, else of the strongest method run
  (:data:`oncorobust.spec.STRENGTH_ORDER`). For ``worst`` the sensitivity search's confirmed flips
  at or below ε count as flipped (:func:`oncorobust.evaluation.results.merge_bracket`), as in
  Table 1 and Table S5, so the accuracies equal theirs;
- ε₅₀: the lower median of the test images' flipping ε (``eps_upper`` of the sensitivity CSV,
  inf = never flips), the robustness summary's definition (:func:`oncorobust.evaluation.robustness.quantile`);
- for every regime other than ``clean``, paired differences against ``clean`` on the same test
  images: Δ worst-case accuracy (percentage points; Newcombe's paired score CI, exact McNemar p)
  and Δ ε₅₀ (paired percentile bootstrap) — :mod:`oncorobust.evaluation.paired`.

Seed replicates (``replicates: K`` per dataset): replicate 1 of regime R keeps the name R, replicate
k = 2..K is named ``R-r{k}`` (:func:`split_replicate`, :func:`replicate_name`). With K = 1 every
interval is over the test images (Wilson for accuracies, the percentile bootstrap of the
robustness summary for ε₅₀ — same seed, same interval). With K > 1 each value is the mean over the
K seeds, ``*_ci_*`` is the two-level bootstrap (seeds, then images), ``*_sa_ci_*`` the small-K
interval (Student t over the seeds ⊕ images; prefer it for K ≤ 5), ``*_images_ci_*`` the interval
from the images alone (what the seeds add is the difference), and ``*_seed_min/max/sd`` the
per-seed spread (:func:`oncorobust.evaluation.paired.two_level_bootstrap`). Paired differences
pair replicate k of the regime with replicate k of ``clean``.

The functions are pure (paths and config slices in, frames and text out); the workflow's
``scripts/regimes_table.py`` adapter calls them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from oncorobust.epsilon import eps_text
from oncorobust.evaluation import robustness
from oncorobust.evaluation.paired import (eps50, mean_difference, median_difference,
                                          paired_accuracy_difference, paired_eps50_difference,
                                          two_level_bootstrap)
from oncorobust.evaluation.stats import wilson
from oncorobust.io import ATTACK_KEY_COLUMNS
from oncorobust.pipeline.passes import train_grad_evals
from oncorobust.evaluation.results import (check_provenance, merge_bracket, read_attack_csv, read_per_image,
                                           rows_of_test_split)
from oncorobust.spec import REGIMES, split_replicate_name
from oncorobust.pipeline.plan import RegimeTableError, replicate_name


class ReplicateMissingError(RegimeTableError):
    """A seed replicate's per-image file (attack or sensitivity CSV) is missing, or a replicate
    is absent from the index; the message names the file or the replicate."""


#: the metrics of each regime: column stem → what it is
METRICS = {"clean_accuracy": "clean accuracy (%)", "worst_accuracy": "worst-case accuracy (%)",
           "eps50": "ε₅₀ (pixel units)"}
_SUFFIXES = ("", "_ci_low", "_ci_high", "_sa_ci_low", "_sa_ci_high", "_images_ci_low", "_images_ci_high",
             "_seed_min", "_seed_max", "_seed_sd")
#: the CSV's columns, in order (the paired differences against clean: ``d_accuracy``, Δ worst-case
#: accuracy vs clean in percentage points; ``d_eps50``, Δ ε₅₀ vs clean in pixel units)
COLUMNS = (["dataset", "regime", "label", "replicates", "n", "method", "eps", "interval", "n_boot"]
           + [m + s for m in METRICS for s in _SUFFIXES]
           + [d + s for d in ("d_accuracy",) for s in _SUFFIXES]
           + ["mcnemar_p", "mcnemar_p_per_seed", "only_clean", "only_regime"]
           + [d + s for d in ("d_eps50",) for s in _SUFFIXES] + ["d_eps50_n_undefined", "train_seconds",
                                                                  "train_grad_evals"])

# ---------------------------------------------------------------------------------- loading

@dataclass
class Run:
    """One trained model's per-image results on the test images.

    Attributes:
        dataset, base, replicate, regime: which model (``regime`` = its name in the paths).
        method, eps: the attack giving the worst case at the reference ε.
        frame: indexed by ``sample_id``; bool ``clean_ok`` (clean prediction right), bool
            ``adv_ok`` (right under the attack), float ``eps_upper`` (flipping ε, inf = never).
    """

    dataset: str
    base: str
    replicate: int
    regime: str
    method: str
    eps: float
    frame: pd.DataFrame


def _check_key(path, df: pd.DataFrame, entry: dict) -> None:
    """When the attack CSV says what it holds (its key columns), it must be what was wired."""
    if all(c in df.columns for c in ATTACK_KEY_COLUMNS):
        read_attack_csv(path, None, expect={c: entry[c] for c in ATTACK_KEY_COLUMNS}, provenance=False)


def load_run(entry: dict, attack_path, sensitivity_path, *, ids: Sequence[str] | None = None,
             n_classes: int | None = None, labels: str = "predicted") -> Run:
    """One model's per-image results (see :class:`Run`).

    Args:
        entry: an entry of :func:`run_index`.
        attack_path: its attack CSV at the reference ε (``attacks/{regime}/{method}/eps={eps}.csv``).
        sensitivity_path: its sensitivity CSV (the test rows are used).
        ids: the test images' sample IDs (``tensors/test.pt``), or None to skip that check.
        n_classes: the model's classes (``stats.json``), for the bracket merge of ``worst``; None
            reads it off the labels and predictions.
        labels: ``attacks.labels`` (``predicted`` or ``true``), for the bracket merge.
    Returns:
        The :class:`Run`, its frame in the attack CSV's row order.
    Raises:
        ReplicateMissingError: a file is missing (naming it and the replicate).
        DataError: a file is unreadable or does not score the test images.
        AttackKeyError: the attack CSV's own regime/method/eps columns disagree with ``entry`` or its path.
        RegimeTableError: the two files score different images.
    """
    what = (f"{entry['dataset']} regime {entry['base']} replicate {entry['replicate']}"
            f" ({entry['regime']})")
    for kind, p in (("attack", attack_path), ("sensitivity", sensitivity_path)):
        if not Path(p).is_file():
            raise ReplicateMissingError(f"{p}: the {kind} CSV of {what} is missing; run the workflow for this"
                                        " replicate (its training, attack and sensitivity jobs) first")
    att = read_per_image(attack_path, ids, provenance=False)
    _check_key(attack_path, att, entry)
    check_provenance(attack_path, att, ids)
    sens = read_per_image(sensitivity_path, ids)
    test = rows_of_test_split(sens)
    if set(att.sample_id) != set(test.sample_id) or len(att) != len(test):
        raise RegimeTableError(f"{attack_path} and {sensitivity_path} ({what}) score different test images"
                               f" ({len(att)} vs {len(test)} rows); delete both and rerun the workflow")
    if entry["method"] == "worst":
        if n_classes is None:
            n_classes = int(max(att.label.max(), att.clean_pred.max(), att.adv_pred.max())) + 1
        att = merge_bracket(att, test, float(entry["eps"]), labels, int(n_classes))
    upper = test.set_index("sample_id").eps_upper.astype(float)
    frame = pd.DataFrame({"clean_ok": (att.clean_pred == att.label).to_numpy(bool),
                          "adv_ok": (att.adv_pred == att.label).to_numpy(bool)},
                         index=pd.Index(att.sample_id.astype(str), name="sample_id"))
    frame["eps_upper"] = upper.reindex(frame.index).to_numpy(float)
    return Run(str(entry["dataset"]), str(entry["base"]), int(entry["replicate"]), str(entry["regime"]),
               str(entry["method"]), float(entry["eps"]), frame)


def load_runs(index: Sequence[dict], attack_paths: Sequence, sensitivity_paths: Sequence, *,
              ids: dict[str, Sequence[str]] | None = None, n_classes: dict[str, int] | None = None,
              labels: str = "predicted") -> list[Run]:
    """:func:`load_run` of every entry; ``ids`` and ``n_classes`` per dataset (optional).

    Args:
        index: the entries of :func:`run_index` (all datasets).
        attack_paths: each entry's attack CSV, in the same order.
        sensitivity_paths: each entry's sensitivity CSV, in the same order.
        ids: dataset → its test images' sample IDs; a dataset left out is not checked.
        n_classes: dataset → its class count; a dataset left out has it read off the predictions.
        labels: ``attacks.labels`` (``predicted`` or ``true``).
    Returns:
        One :class:`Run` per entry, in order.
    Raises:
        RegimeTableError: the three lists differ in length; see :func:`load_run`.
    """
    if not len(index) == len(attack_paths) == len(sensitivity_paths):
        raise RegimeTableError(f"{len(index)} index entries, {len(attack_paths)} attack CSVs and"
                               f" {len(sensitivity_paths)} sensitivity CSVs: the lists must match one to one"
                               " (workflow/rules/regimes.smk)")
    return [load_run(e, a, s, ids=(ids or {}).get(e["dataset"]), n_classes=(n_classes or {}).get(e["dataset"]),
                     labels=labels)
            for e, a, s in zip(index, attack_paths, sensitivity_paths)]


def read_train_seconds(path) -> float:
    """Wall-clock seconds of a training job from its Snakemake benchmark file (mean over its
    repeats); NaN when the file does not exist or has no ``s`` column.

    Args:
        path: the benchmark file (tab-separated, a column ``s``).
    Returns:
        The mean of ``s`` in seconds; NaN when the file is missing, unparsable, empty or has no ``s``.
    """
    p = Path(path)
    if not p.is_file():
        return math.nan
    try:
        b = pd.read_csv(p, sep="\t")
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        return math.nan
    if "s" not in b.columns or not len(b):
        return math.nan
    return float(pd.to_numeric(b["s"], errors="coerce").mean())


def read_train_grad_evals(history_path, stats_path, regime: str, adversarial: dict | None) -> float:
    """Gradient evaluations (image forward+backward passes) of one training job: the epochs it ran
    (rows of its ``models/{regime}.history.csv``) × :func:`oncorobust.pipeline.passes.train_grad_evals`
    of its regime on its training and validation images (``stats.json``'s ``counts``).

    Args:
        history_path: the model's history CSV (one row per epoch run; early stopping included).
        stats_path: the dataset's ``tensors/stats.json``.
        regime: the model's name in the paths (a replicate ``R-r{k}`` is costed as R).
        adversarial: the dataset's ``adversarial_training`` block (None: defaults).
    Returns:
        The count; NaN when the history or the counts are missing or unreadable.
    Raises:
        ValueError: the base regime is unknown (:func:`oncorobust.pipeline.passes.train_grad_evals`).
    """
    try:
        epochs = len(pd.read_csv(history_path))
        counts = json.loads(Path(stats_path).read_text())["counts"]
        n = {split: sum(counts[split]["used"].values()) for split in ("train", "val")}
    except (OSError, ValueError, KeyError, TypeError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return math.nan
    base = split_replicate_name(regime)[0]
    cost = train_grad_evals(base, adversarial if base != "clean" else None, n["train"], n["val"])
    return float(epochs * (cost["train"] + cost["validation"]))


# ---------------------------------------------------------------------------------- statistics

def _empty(stem: str) -> dict:
    return {stem + s: math.nan for s in _SUFFIXES}


def _from_two_level(stem: str, res: dict, scale: float = 1.0) -> dict:
    out = {stem: res["mean"], stem + "_ci_low": res["ci_low"], stem + "_ci_high": res["ci_high"],
           stem + "_sa_ci_low": res["sa_ci_low"], stem + "_sa_ci_high": res["sa_ci_high"],
           stem + "_images_ci_low": res["images_ci_low"], stem + "_images_ci_high": res["images_ci_high"],
           stem + "_seed_min": res["seed_min"], stem + "_seed_max": res["seed_max"], stem + "_seed_sd": res["seed_sd"]}
    with np.errstate(invalid="ignore"):
        return {k: float(v) * scale for k, v in out.items()}


def _single(stem: str, value: float, lo: float, hi: float) -> dict:
    """K = 1: the interval over images is the only one; the seed range collapses to the value."""
    out = _empty(stem)
    out.update({stem: value, stem + "_ci_low": lo, stem + "_ci_high": hi, stem + "_images_ci_low": lo,
                stem + "_images_ci_high": hi, stem + "_seed_min": value, stem + "_seed_max": value})
    return out


def _accuracy(stem: str, oks: list[np.ndarray], n_boot: int, seed: int) -> dict:
    if len(oks) == 1:
        ok = oks[0]
        lo, hi = wilson(int(ok.sum()), len(ok))
        return _single(stem, 100 * float(ok.mean()), 100 * lo, 100 * hi)
    return _from_two_level(stem, two_level_bootstrap([o.astype(float) for o in oks], np.mean, n_boot=n_boot,
                                                     seed=seed, bounds=(0.0, 1.0)), 100.0)


def _eps50(stem: str, eps: list[np.ndarray], n_boot: int, seed: int) -> dict:
    if len(eps) == 1:
        e = eps[0]
        lo, hi = robustness.ci(robustness.bootstrap(e, 0.5, n_boot=n_boot, seed=seed))
        return _single(stem, robustness.quantile(e, 0.5), lo, hi)
    return _from_two_level(stem, two_level_bootstrap(eps, eps50, n_boot=n_boot, seed=seed, bounds=(0.0, math.inf)))


def _paired(clean: list[pd.DataFrame], other: list[pd.DataFrame], n_boot: int, seed: int) -> dict:
    """Paired differences (regime − clean), replicate k against replicate k."""
    out: dict = {}
    tests = [paired_accuracy_difference(c.adv_ok.to_numpy(), o.adv_ok.to_numpy()) for c, o in zip(clean, other)]
    ps = [t["mcnemar_p"] for t in tests]
    out["only_clean"] = int(sum(t["only_a"] for t in tests))
    out["only_regime"] = int(sum(t["only_b"] for t in tests))
    out["mcnemar_p"] = float(max(ps))
    out["mcnemar_p_per_seed"] = ";".join(f"{p:.4g}" for p in ps)
    if len(clean) == 1:
        t = tests[0]
        out.update(_single("d_accuracy", 100 * t["difference"], 100 * t["ci_low"], 100 * t["ci_high"]))
        e = paired_eps50_difference(clean[0].eps_upper.to_numpy(), other[0].eps_upper.to_numpy(),
                                    n_boot=n_boot, seed=seed)
        out.update(_single("d_eps50", e["difference"], e["ci_low"], e["ci_high"]))
        out["d_eps50_n_undefined"] = e["n_undefined"]
        return out
    acc = [np.column_stack([c.adv_ok.to_numpy(float), o.adv_ok.to_numpy(float)]) for c, o in zip(clean, other)]
    out.update(_from_two_level("d_accuracy", two_level_bootstrap(acc, mean_difference, n_boot=n_boot, seed=seed,
                                                                   bounds=(-1.0, 1.0)),
                               100.0))
    eps = [np.column_stack([c.eps_upper.to_numpy(float), o.eps_upper.to_numpy(float)]) for c, o in zip(clean, other)]
    res = two_level_bootstrap(eps, median_difference, n_boot=n_boot, seed=seed)
    out.update(_from_two_level("d_eps50", res))
    out["d_eps50_n_undefined"] = res["n_undefined"]
    return out


def _group(runs: Sequence[Run]) -> dict[str, dict[str, list[Run]]]:
    """dataset → base regime → its replicates 1..K, checked complete and on the same images."""
    out: dict[str, dict[str, dict[int, Run]]] = {}
    for r in runs:
        reps = out.setdefault(r.dataset, {}).setdefault(r.base, {})
        if r.replicate in reps:
            raise RegimeTableError(f"{r.dataset} regime {r.base}: replicate {r.replicate} ({r.regime}) given twice")
        reps[r.replicate] = r
    grouped: dict[str, dict[str, list[Run]]] = {}
    for ds, bases in out.items():
        k_max = max(max(reps) for reps in bases.values())
        grouped[ds] = {}
        for base, reps in bases.items():
            missing = [k for k in range(1, k_max + 1) if k not in reps]
            if missing:
                names = ", ".join(replicate_name(base, k) for k in missing)
                raise ReplicateMissingError(f"{ds} regime {base}: replicate(s) {missing} ({names}) missing while"
                                            f" the dataset has {k_max} replicates; every regime needs all K")
            grouped[ds][base] = [reps[k] for k in range(1, k_max + 1)]
        ref = next(iter(grouped[ds].values()))[0]
        order = ref.frame.index
        for base, reps in grouped[ds].items():
            for r in reps:
                if len(r.frame.index) != len(order) or set(r.frame.index) != set(order):
                    raise RegimeTableError(f"{ds}: {r.regime} and {ref.regime} were scored on different test images"
                                           f" ({len(r.frame)} vs {len(order)}); rerun their attack jobs")
            # one image order for every model, so that the pairs line up
            grouped[ds][base] = [replace(r, frame=r.frame.loc[order]) for r in reps]
        methods = {(r.method, r.eps) for reps in grouped[ds].values() for r in reps}
        if len(methods) > 1:
            raise RegimeTableError(f"{ds}: the worst case is taken from different attacks/ε {sorted(methods)}")
    return grouped


def regime_table(runs: Sequence[Run], *, n_boot: int = 2000, seed: int = 0,
                 train_seconds: dict[tuple[str, str], float] | None = None,
                 train_grad_evals: dict[tuple[str, str], float] | None = None) -> pd.DataFrame:
    """One row per (dataset, base regime): the metrics and the paired differences against clean.

    Args:
        runs: every model's :class:`Run` (:func:`load_runs`), all K replicates of each regime.
        n_boot: bootstrap replicates of every bootstrap interval.
        seed: their ``numpy.random.default_rng`` seed (the config's ``seed``; with K = 1 the ε₅₀
            interval then equals the robustness summary's).
        train_seconds: (dataset, replicate's regime name) → wall-clock seconds of its training job
            (:func:`read_train_seconds`); ``train_seconds`` is their mean over the replicates.
        train_grad_evals: (dataset, replicate's regime name) → gradient evaluations of its training
            (:func:`read_train_grad_evals`); ``train_grad_evals`` is their mean over the replicates.
    Returns:
        The columns of :data:`COLUMNS`: accuracies and their differences in % / percentage points,
        ε in [0,1] pixel units; ``interval`` is ``images`` (K = 1) or ``seeds+images`` (K > 1);
        the paired columns are NaN (``mcnemar_p_per_seed`` empty) on ``clean`` rows and where a
        dataset has no ``clean`` regime. ``mcnemar_p`` is the exact McNemar p-value (K > 1: the
        largest of the per-seed p-values, so every seed is at least that significant);
        ``only_clean`` / ``only_regime`` count the discordant images (summed over seeds).
    Raises:
        ReplicateMissingError: a regime lacks one of the dataset's replicates.
        RegimeTableError: models of a dataset scored different images or attacks, or a replicate is
            given twice.
        PairedError: ``n_boot`` is not a positive integer (raised where a paired or K > 1 interval is computed).
    """
    rows = []
    for ds, bases in _group(runs).items():
        clean = bases.get("clean")
        for base, reps in bases.items():
            frames = [r.frame for r in reps]
            row = {"dataset": ds, "regime": base, "label": REGIMES[base].label if base in REGIMES else base,
                   "replicates": len(reps), "n": len(frames[0]), "method": reps[0].method, "eps": reps[0].eps,
                   "interval": "images" if len(reps) == 1 else "seeds+images", "n_boot": int(n_boot)}
            row.update(_accuracy("clean_accuracy", [f.clean_ok.to_numpy() for f in frames], n_boot, seed))
            row.update(_accuracy("worst_accuracy", [f.adv_ok.to_numpy() for f in frames], n_boot, seed))
            row.update(_eps50("eps50", [f.eps_upper.to_numpy(float) for f in frames], n_boot, seed))
            if base != "clean" and clean is not None:
                row.update(_paired([c.frame for c in clean], frames, n_boot, seed))
            for col, given in (("train_seconds", train_seconds), ("train_grad_evals", train_grad_evals)):
                vals = [(given or {}).get((ds, r.regime), math.nan) for r in reps]
                vals = [v for v in vals if v is not None and not math.isnan(v)]
                row[col] = float(np.mean(vals)) if vals else math.nan
            rows.append(row)
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["mcnemar_p_per_seed"] = [v if isinstance(v, str) else "" for v in out["mcnemar_p_per_seed"]]
    for c in ("only_clean", "only_regime", "d_eps50_n_undefined"):  # counts: empty on clean rows
        out[c] = out[c].astype("Int64")
    return out


# ---------------------------------------------------------------------------------- markdown

def _num(v, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if v == math.inf:
        return "> eps_max"
    if v == -math.inf:
        return "−inf"
    return format(v, fmt)


def _cell(r: dict, stem: str, fmt: str, signed: bool = False) -> str:
    f = ("+" + fmt) if signed else fmt
    v = r[stem]
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    text = f"{_num(v, f)} [{_num(r[stem + '_ci_low'], fmt)}, {_num(r[stem + '_ci_high'], fmt)}]"
    if r["replicates"] > 1:
        text += (f"; t⊕img [{_num(r[stem + '_sa_ci_low'], fmt)}, {_num(r[stem + '_sa_ci_high'], fmt)}]"
                 f"; seeds {_num(r[stem + '_seed_min'], fmt)} to {_num(r[stem + '_seed_max'], fmt)}")
    return text


def _cost(r: dict, clean: float) -> str:
    """Training cost cell: gradient evaluations (× clean's) and wall-clock seconds, mean over seeds."""
    g, sec = r.get("train_grad_evals", math.nan), r.get("train_seconds", math.nan)
    parts = []
    if not (g is None or math.isnan(g)):
        rel = f" ({g / clean:.1f}× clean)" if clean and not math.isnan(clean) and r["regime"] != "clean" else ""
        parts.append((f"{g / 1e6:.3g} M" if g >= 1e6 else f"{g / 1e3:.3g} k") + f" grad. evals{rel}")
    if not (sec is None or math.isnan(sec)):
        parts.append(f"{sec:.0f} s")
    return "; ".join(parts) or "–"


#: the columns :func:`add_auroc` appends (AUROC under attack against clean, from ``tables/clinical.csv``)
AUROC_COLUMNS = ["auroc_method", "d_auroc", "d_auroc_ci_low", "d_auroc_ci_high", "d_auroc_p"]


def add_auroc(table: pd.DataFrame, clinical: pd.DataFrame) -> pd.DataFrame:
    """Each regime's change in AUROC under attack against the clean model, from ``tables/clinical.csv``.

    The attack is the clinical table's ``any attack`` (each image's most harmful score among the
    attacks run; the attack itself where only one ran) at the row's ε. One seed: the paired
    DeLong difference and its 95% CI and p-value (``d_auroc_regime`` of the clinical table: regime
    − clean on the same test images). Several seeds: the mean of the per-seed differences
    (replicate k against replicate k of clean), without an interval.

    Args:
        table: a frame of :func:`regime_table`.
        clinical: ``tables/clinical.csv`` (:func:`oncorobust.evaluation.clinical_metrics.clinical_table`).
    Returns:
        ``table`` with :data:`AUROC_COLUMNS` appended (NaN where the clinical table has no row,
        e.g. a multi-class dataset's one-vs-rest rows, or the clean regime itself).
    """
    from oncorobust.epsilon import same_eps
    from oncorobust.evaluation.clinical_metrics import ANY_ATTACK, positive_class_rows

    c = clinical[positive_class_rows(clinical)]
    if "direction" in c.columns:
        c = c[c.direction.astype(str) == "any"]
    out = []
    for r in table.to_dict("records"):
        add = dict.fromkeys(AUROC_COLUMNS, math.nan) | {"auroc_method": ""}
        mine = c[(c.dataset.astype(str) == str(r["dataset"])) & c.eps.map(lambda e: same_eps(e, r["eps"]))
                 & (c.regime.astype(str).map(lambda g: split_replicate_name(g)[0]) == str(r["regime"]))]
        if len(mine):
            method = ANY_ATTACK if (mine.method == ANY_ATTACK).any() else str(mine.method.iloc[0])
            rows = mine[(mine.method == method) & mine.d_auroc_regime.notna()]
            if len(rows) == 1:
                x = rows.iloc[0]
                add = {"auroc_method": method, "d_auroc": x.d_auroc_regime, "d_auroc_ci_low": x.d_auroc_regime_ci_low,
                       "d_auroc_ci_high": x.d_auroc_regime_ci_high, "d_auroc_p": x.d_auroc_regime_p}
            elif len(rows) > 1:
                add |= {"auroc_method": method, "d_auroc": float(rows.d_auroc_regime.mean())}
        out.append(r | add)
    return pd.DataFrame(out, columns=list(table.columns) + [c for c in AUROC_COLUMNS if c not in table.columns])


def _d_auroc(r: dict) -> str:
    v = r.get("d_auroc", math.nan)
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "–"
    lo, hi = r.get("d_auroc_ci_low", math.nan), r.get("d_auroc_ci_high", math.nan)
    ci = f" [{lo:+.3f}, {hi:+.3f}] (p = {r['d_auroc_p']:.3g})" if math.isfinite(lo) else " (mean over seeds)"
    return f"{v:+.3f}{ci}"


def markdown(table: pd.DataFrame) -> str:
    """The regime table as markdown, with a note saying which interval is which.

    Args:
        table: a frame of :func:`regime_table`.
    Returns:
        The markdown table (one row per dataset and regime; "–" where a value is missing) and the note.
    """
    auroc = "d_auroc" in table.columns and table.d_auroc.notna().any()
    lines = ["| dataset | regime | seeds | n | clean accuracy % | worst-case accuracy % (attack, ε) | ε₅₀ |"
             " Δ worst-case accuracy vs clean, pp (McNemar p) | Δ ε₅₀ vs clean |"
             + (" Δ AUROC under attack vs clean |" if auroc else "") + " training cost |",
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if auroc else "") + "---|"]
    clean_cost = {r["dataset"]: r.get("train_grad_evals", math.nan) for r in table.to_dict("records")
                  if r["regime"] == "clean"}
    for r in table.to_dict("records"):
        if isinstance(r["d_accuracy"], float) and math.isnan(r["d_accuracy"]):
            d_acc = d_eps = "–"
        else:
            p = r["mcnemar_p"]
            p_text = f"p = {p:.3g}" if r["replicates"] == 1 else f"largest per-seed p = {p:.3g}"
            d_acc = f"{_cell(r, 'd_accuracy', '.1f', True)} ({p_text})"
            d_eps = _cell(r, "d_eps50", ".3g", True)
        lines.append(f"| {r['dataset']} | {r['label']} | {r['replicates']} | {r['n']} | {_cell(r, 'clean_accuracy', '.1f')}"
                     f" | {_cell(r, 'worst_accuracy', '.1f')} ({r['method']}, ε = {eps_text(r['eps'])}) | {_cell(r, 'eps50', '.3g')}"
                     f" | {d_acc} | {d_eps} |" + (f" {_d_auroc(r)} |" if auroc else "")
                     + f" {_cost(r, clean_cost.get(r['dataset'], math.nan))} |")
    seeds = sorted(set(int(k) for k in table.replicates)) if len(table) else []
    n_boot = int(table.n_boot.iloc[0]) if len(table) else 0
    note = [
        "",
        f"Seeds per regime: {', '.join(map(str, seeds)) or '–'}. Accuracy in %, differences in percentage points"
        " (regime − clean, on the same test images); ε in [0,1] pixel units (L∞); ε₅₀ is the median per-image"
        " flipping ε of the sensitivity search (\"> eps_max\": fewer than half the images flipped). The worst case"
        " is the named attack at the dataset's reference ε (`worst`: its per-image verdict with the search's"
        " flips at or below ε, as in Table 1). Training cost: gradient evaluations (image forward+backward passes,"
        " each inner attack step one; the epochs each model ran × the regime's passes per image, and the"
        " validation attack that selects its epoch) and the training job's wall-clock seconds, means over seeds."
        + (" Δ AUROC under attack: the regime's AUROC minus the clean model's under the same attack at the same ε"
           " (tables/clinical.md's *any attack*: each image's most harmful score among the attacks run), paired"
           " DeLong 95% CI and p on one seed, the mean of the per-seed differences on several." if auroc else ""),
        "",
        "Intervals (95%). **One seed**: over the test images only — Wilson for accuracies, percentile bootstrap"
        f" ({n_boot} resamples) for ε₅₀, Newcombe's paired score interval for Δ accuracy with the exact McNemar"
        " p-value, paired percentile bootstrap for Δ ε₅₀. **Several seeds**: the value is the mean over the seeds;"
        " the first interval is a two-level bootstrap (seeds, then images), \"t⊕img\" the small-K interval"
        " (Student t over the per-seed values combined with the images' interval; prefer it for 5 seeds or"
        " fewer), \"seeds\" the range of the per-seed values; the McNemar p is the largest per-seed p-value"
        " (each seed is at least that significant). Replicate k of a regime is paired with replicate k of clean."
        " The CSV has every interval, and the images-only one (`*_images_ci_*`: what the interval would be"
        " without the seed-to-seed variation).",
    ]
    return "\n".join(lines) + "\n" + "\n".join(note) + "\n"
