"""Paper tables from the per-image attack CSVs: Table 1, Table S5 and the sanity warnings.

All accuracies are percentages with Wilson 95% CIs and n; the paper's value (from
``data/paper_values.csv``, never hard-coded here) stands beside ours where one exists.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from oncorobust.epsilon import eps_text, same_eps
from oncorobust.evaluation.paired import mean_difference, two_level_bootstrap
from oncorobust.evaluation.stats import paired_difference
from oncorobust.spec import TRANSFER_PREFIX, base_method, is_transfer, replicate_name, split_replicate_name

METHOD_ORDER = ["fgsm", "pgd", "bim"]  # the paper's Table 1 order


def paper_values() -> pd.DataFrame:
    """The paper's published values, packaged as ``oncorobust/data/paper_values.csv``.

    Returns:
        One row per published cell: ``table`` (``table1``, ``table2``, ``table_s5``), ``dataset`` (the
        paper's name), ``regime``, ``method``, ``eps`` ([0,1] pixel units), ``accuracy`` (%).
    """
    with resources.files("oncorobust").joinpath("data/paper_values.csv").open() as fh:
        return pd.read_csv(fh)


def paper_lookup(table: str, name: str | None, regime: str, method: str, eps: float) -> float:
    """The paper's published accuracy (%) for one cell, or NaN.

    Args:
        table: the paper's table (``table1``, ``table_s5``...).
        name: the dataset's name in the paper, or None (then NaN).
        regime: the training regime (``clean``, ``adv_pgd``...).
        method: the attack method (``baseline`` for the clean accuracy).
        eps: ε in [0,1] pixel units (matched with :func:`oncorobust.epsilon.same_eps`).
    Returns:
        The first matching accuracy (%), NaN when the paper has none.
    """
    return _paper_lookup(paper_values(), table, name, regime, method, eps)


def _paper_lookup(paper: pd.DataFrame, table: str, name: str | None, regime: str, method: str, eps: float):
    if not name:
        return np.nan
    hit = paper[(paper.table == table) & (paper.dataset == name) & (paper.regime == regime)
                & (paper.method == method) & paper.eps.map(lambda e: same_eps(e, eps))]
    return float(hit.accuracy.iloc[0]) if len(hit) else np.nan


def read_eps_units(datasets: list[str], stats_paths: list[str]) -> dict[str, dict | None]:
    """Each dataset's ``eps_units`` from its ``tensors/stats.json`` (None where preprocessing
    recorded none), for :func:`clinical_eps` and the figures' stored-data axes.

    Args:
        datasets: the datasets.
        stats_paths: each dataset's ``tensors/stats.json``, in the same order.
    Returns:
        dataset → its ``eps_units`` dict, or None.
    Raises:
        OSError: a stats file cannot be read.
        json.JSONDecodeError: a stats file is not JSON.
    """
    return {ds: json.loads(Path(p).read_text()).get("eps_units") for ds, p in zip(datasets, stats_paths)}


def clinical_eps(eps: float, units: dict | None) -> tuple[float, str, bool]:
    """ε (pixel units) in the stored data's units: (value, text, below one stored-value step).

    ``units`` is ``stats.json``'s ``eps_units`` (see :func:`oncorobust.data.preprocess.eps_units`);
    the text is e.g. ``"24 HU"``; the flag is True when the perturbation is smaller than one
    stored value (it cannot be written back into the image the scanner produced).

    Args:
        eps: ε in [0,1] pixel units.
        units: the dataset's ``eps_units`` (``per_eps``, ``unit``, optional ``step``, default 1), or None.
    Returns:
        (ε in the stored data's units, its text, below one step); (NaN, "", False) when ``units`` is
        None or has no ``per_eps``.
    """
    if not units or not units.get("per_eps"):
        return np.nan, "", False
    value = float(eps) * float(units["per_eps"])
    return value, f"{value:.3g} {units['unit']}", bool(0 < value < float(units.get("step", 1.0)))


def eps_units_markdown(eps_by_dataset: dict[str, list[float]], units: dict[str, dict]) -> str:
    """A small table: each dataset's ε grid in its stored data's units, flagged below one step.

    Args:
        eps_by_dataset: dataset → its ε grid ([0,1] pixel units).
        units: dataset → its ``eps_units`` (:func:`read_eps_units`; None or absent: "–").
    Returns:
        The markdown table, one row per (dataset, ε).
    """
    lines = ["| dataset | ε (pixel units) | in the stored data | how |", "|---|---|---|---|"]
    for ds, grid in eps_by_dataset.items():
        for e in grid:
            _, text, below = clinical_eps(e, units.get(ds))
            flag = " ⚠ below one stored-value step" if below else ""
            lines.append(f"| {ds} | {eps_text(e)} | {text or '–'}{flag} | {(units.get(ds) or {}).get('how', '–')} |")
    return "\n".join(lines) + "\n"


def table1(summary: pd.DataFrame, paper_names: dict[str, str | None], labels: str,
           units: dict[str, dict] | None = None) -> pd.DataFrame:
    """Clean regime: a baseline row per dataset, then each white-box method × ε.

    Args:
        summary: the attack summary (rows of :func:`oncorobust.evaluation.results.summarize`); only the
            ``clean`` regime's non-transfer rows are used.
        paper_names: dataset → its name in the paper (None or absent: no paper value).
        labels: ``attacks.labels`` (``predicted`` or ``true``), written into the ``labels`` column.
        units: dataset → ``stats.json``'s ``eps_units`` (ε in the stored data's units), optional.
    Returns:
        Columns ``labels``, ``dataset``, ``method``, ``eps`` ([0,1] pixel units), ``n``, ``accuracy``,
        ``ci_low``, ``ci_high`` (Wilson 95%), ``flip_rate``, ``paper`` (all in %; the baseline row is the
        clean accuracy, ε = 0, flip rate 0) and, when there are rows, ``eps_stored``, ``eps_stored_unit``,
        ``below_one_step`` (:func:`clinical_eps`). Per dataset the baseline, the methods of :data:`METHOD_ORDER`
        in that order, each by ε, then the other methods' rows by ε.
    """
    paper = paper_values()
    clean = summary[(summary.regime == "clean") & ~summary.method.str.startswith(TRANSFER_PREFIX)]
    rows = []
    for ds, part in clean.groupby("dataset", sort=False):
        first = part.iloc[0]
        rows.append({"dataset": ds, "method": "baseline", "eps": 0.0, "n": int(first.n),
                     "accuracy": first.clean_accuracy, "ci_low": first.clean_ci_low,
                     "ci_high": first.clean_ci_high,
                     "flip_rate": 0.0,
                     "paper": _paper_lookup(paper, "table1", paper_names.get(ds), "clean", "baseline", 0)})
        order = {m: i for i, m in enumerate(METHOD_ORDER)}
        for r in part.sort_values(["method", "eps"], key=lambda c: c.map(order) if c.name == "method" else c).itertuples():
            rows.append({"dataset": ds, "method": r.method, "eps": r.eps, "n": r.n, "accuracy": r.accuracy,
                         "ci_low": r.ci_low, "ci_high": r.ci_high, "flip_rate": r.flip_rate,
                         "paper": _paper_lookup(paper, "table1", paper_names.get(ds), "clean", r.method, r.eps)})
    out = pd.DataFrame(rows)
    out.insert(0, "labels", labels)
    if len(out):
        clin = [clinical_eps(e, (units or {}).get(d)) for d, e in zip(out.dataset, out.eps)]
        out["eps_stored"] = [c[0] for c in clin]
        out["eps_stored_unit"] = [((units or {}).get(d) or {}).get("unit", "") for d in out.dataset]
        out["below_one_step"] = [c[2] for c in clin]
    return out


#: Table S5's columns (one seed per regime)
S5_COLUMNS = ["dataset", "regime", "method", "evaluation", "eps", "eps_stored", "n", "original", "adv_trained",
              "difference", "diff_ci_low", "diff_ci_high", "paper_original", "paper_adv_trained"]
#: the columns added when a dataset has several seed replicates (``replicates: K``)
S5_SEED_COLUMNS = ["replicates", "interval", "diff_sa_ci_low", "diff_sa_ci_high", "diff_images_ci_low",
                   "diff_images_ci_high", "diff_seed_min", "diff_seed_max", "original_seed_min",
                   "original_seed_max", "adv_trained_seed_min", "adv_trained_seed_max"]


def table_s5(per_image: dict[tuple, pd.DataFrame], ref_eps: dict[str, float],
             paper_names: dict[str, str | None], units: dict[str, dict] | None = None, *,
             n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Clean vs adversarially trained accuracy at each dataset's reference ε, white-box and transfer.

    Replicate k of a regime (``R-r{k}``, :func:`oncorobust.spec.split_replicate_name`) is paired
    with replicate k of ``clean`` on the same test images. With one seed per regime the row is that
    pair: accuracies in %, the paired difference with a Wald 95% CI. With K seeds the row is the
    mean over the K pairs; ``diff_ci_*`` is the two-level bootstrap (seeds, then images),
    ``diff_sa_ci_*`` the small-K interval (Student t over seeds ⊕ images; prefer it for K ≤ 5),
    ``diff_images_ci_*`` the images-only interval and ``*_seed_min/max`` the per-seed range
    (:func:`oncorobust.evaluation.paired.two_level_bootstrap`); those columns
    (:data:`S5_SEED_COLUMNS`) are present only when some regime has K > 1.

    Args:
        per_image: (dataset, regime, method, ε) → the per-image attack frame (``sample_id``,
            ``label``, ``adv_pred``), regimes named as in the paths (replicates included).
        ref_eps: dataset → its ``attack.reference_eps`` ([0,1] pixel units); other ε are left out.
        paper_names: dataset → the paper's dataset name (for the paper's values), or None.
        units: dataset → ``stats.json``'s ``eps_units`` (ε in the stored data's units), optional.
        n_boot: bootstrap replicates of the K > 1 intervals.
        seed: their ``numpy.random.default_rng`` seed (the config's ``seed``).
    Returns:
        One row per (dataset, regime, method, evaluation) with the columns of
        :data:`S5_COLUMNS` (+ :data:`S5_SEED_COLUMNS` when K > 1), accuracies and differences in %.
    Raises:
        PairedError: ``n_boot`` is not a positive integer (checked only when some regime has K > 1).
    """
    paper = paper_values()
    pairs: dict[tuple, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    for (ds, regime, method, eps), adv_df in per_image.items():
        base_regime, k = split_replicate_name(regime)
        if base_regime == "clean" or ds not in ref_eps or not same_eps(eps, ref_eps[ds]):
            continue
        base = base_method(method)
        clean_df = per_image.get((ds, replicate_name("clean", k), base, eps))
        if clean_df is None:
            continue
        m = clean_df.merge(adv_df, on="sample_id", suffixes=("_c", "_a"))
        evaluation = "transfer" if is_transfer(method) else "white-box"
        pairs.setdefault((ds, base_regime, base, evaluation, eps), {})[k] = (
            (m.adv_pred_c == m.label_c).to_numpy(), (m.adv_pred_a == m.label_a).to_numpy())
    several = any(len(reps) > 1 or 1 not in reps for reps in pairs.values())
    rows = []
    for (ds, regime, base, evaluation, eps), reps in pairs.items():
        row = {"dataset": ds, "regime": regime, "method": base, "evaluation": evaluation, "eps": eps,
               "eps_stored": clinical_eps(eps, (units or {}).get(ds))[1],
               "paper_original": _paper_lookup(paper, "table1", paper_names.get(ds), "clean", base, eps),
               "paper_adv_trained": _paper_lookup(paper, "table_s5", paper_names.get(ds), regime, base, eps)}
        ks = sorted(reps)
        if ks == [1]:
            right_c, right_a = reps[1]
            n = len(right_c)
            d, lo, hi = paired_difference(int((right_a & ~right_c).sum()), int((right_c & ~right_a).sum()), n)
            row.update({"n": n, "original": 100 * right_c.mean(), "adv_trained": 100 * right_a.mean(),
                        "difference": 100 * d, "diff_ci_low": 100 * lo, "diff_ci_high": 100 * hi})
            if several:
                row.update({"replicates": 1, "interval": "images", "diff_images_ci_low": 100 * lo,
                            "diff_images_ci_high": 100 * hi, "diff_seed_min": 100 * d, "diff_seed_max": 100 * d})
        else:
            stacked = [np.column_stack([reps[k][0], reps[k][1]]).astype(float) for k in ks]
            res = two_level_bootstrap(stacked, mean_difference, n_boot=n_boot, seed=seed, bounds=(-1.0, 1.0))
            orig = [100 * float(reps[k][0].mean()) for k in ks]
            adv = [100 * float(reps[k][1].mean()) for k in ks]
            row.update({"n": len(stacked[0]), "original": float(np.mean(orig)), "adv_trained": float(np.mean(adv)),
                        "difference": 100 * res["mean"], "diff_ci_low": 100 * res["ci_low"],
                        "diff_ci_high": 100 * res["ci_high"], "replicates": len(ks), "interval": "seeds+images",
                        "diff_sa_ci_low": 100 * res["sa_ci_low"], "diff_sa_ci_high": 100 * res["sa_ci_high"],
                        "diff_images_ci_low": 100 * res["images_ci_low"],
                        "diff_images_ci_high": 100 * res["images_ci_high"],
                        "diff_seed_min": 100 * res["seed_min"], "diff_seed_max": 100 * res["seed_max"],
                        "original_seed_min": min(orig), "original_seed_max": max(orig),
                        "adv_trained_seed_min": min(adv), "adv_trained_seed_max": max(adv)})
        rows.append(row)
    cols = S5_COLUMNS + (S5_SEED_COLUMNS if several else [])
    return pd.DataFrame(rows, columns=cols).sort_values(["dataset", "regime", "method", "evaluation"])


def table_s5_markdown(s5: pd.DataFrame) -> str:
    """Table S5 as markdown: every column with one seed per regime; with K seeds (the columns of
    :data:`S5_SEED_COLUMNS` present) the across-seed means, the two intervals and the seed range.

    Args:
        s5: a frame of :func:`table_s5`.
    Returns:
        The markdown table and, with K seeds, a note saying which interval is which.
    """
    if "replicates" not in s5.columns:
        return dataframe_markdown(s5)

    def rng(lo, hi):
        return "–" if pd.isna(lo) else f"{lo:.1f} to {hi:.1f}"

    lines = ["| dataset | regime | method | evaluation | ε | ε stored | n | seeds | original % (seeds) |"
             " adv. trained % (seeds) | difference, pp [two-level CI]; t⊕img; seeds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in s5.itertuples():
        diff = f"{r.difference:+.1f} [{r.diff_ci_low:.1f}, {r.diff_ci_high:.1f}]"
        if r.replicates > 1:
            diff += (f"; t⊕img [{r.diff_sa_ci_low:.1f}, {r.diff_sa_ci_high:.1f}]"
                     f"; seeds {r.diff_seed_min:+.1f} to {r.diff_seed_max:+.1f}")
        lines.append(f"| {r.dataset} | {r.regime} | {r.method} | {r.evaluation} | {eps_text(r.eps)} | {r.eps_stored or '–'}"
                     f" | {r.n} | {r.replicates} | {r.original:.1f} ({rng(r.original_seed_min, r.original_seed_max)})"
                     f" | {r.adv_trained:.1f} ({rng(r.adv_trained_seed_min, r.adv_trained_seed_max)})"
                     f" | {diff} |")
    note = ("\nWith several seeds per regime, replicate k of a regime is compared with replicate k of clean on the"
            " same test images; the values are means over the seeds. Intervals (95%): a two-level bootstrap (seeds,"
            " then images), \"t⊕img\" the small-K interval (Student t over the per-seed differences combined with"
            " the images' interval; prefer it for 5 seeds or fewer), \"seeds\" the range of the per-seed values."
            " One seed: Wald paired interval over the images. The CSV has the images-only interval too.\n")
    return "\n".join(lines) + "\n" + note


def sanity_warnings(summary: pd.DataFrame, controls: set[str]) -> pd.DataFrame:
    """Warnings that point at a weak attack or a broken evaluation (not errors: small test sets).

    Args:
        summary: the attack summary (rows of :func:`oncorobust.evaluation.results.summarize`); transfer
            rows are left out.
        controls: the control datasets (undefended models expected to fall to PGD).
    Returns:
        Columns ``dataset``, ``regime``, ``method``, ``eps``, ``warning``, one row per finding: BIM/PGD
        above FGSM at the same ε beyond the CIs; accuracy rising with ε beyond the CIs; a control's
        clean model still above 10% under PGD at its largest ε. Empty when nothing is suspicious.
    """
    rows = []
    wb = summary[~summary.method.str.startswith(TRANSFER_PREFIX)]
    for (ds, regime), part in wb.groupby(["dataset", "regime"]):
        fgsm = part[part.method == "fgsm"].set_index("eps")
        for method in ("bim", "pgd"):
            for r in part[part.method == method].itertuples():
                if r.eps in fgsm.index and r.ci_low > fgsm.loc[r.eps, "ci_high"]:
                    rows.append({"dataset": ds, "regime": regime, "method": method, "eps": r.eps,
                                 "warning": f"{method} accuracy {r.accuracy:.1f}% above FGSM's"
                                            f" {fgsm.loc[r.eps, 'accuracy']:.1f}% beyond the CIs"})
        for method, m in part.groupby("method"):
            m = m.sort_values("eps")
            acc, lo, hi = m.accuracy.to_numpy(), m.ci_low.to_numpy(), m.ci_high.to_numpy()
            for j in range(1, len(m)):
                if lo[j] > hi[j - 1]:
                    rows.append({"dataset": ds, "regime": regime, "method": method, "eps": m.eps.iloc[j],
                                 "warning": f"accuracy rises with ε ({acc[j - 1]:.1f}% → {acc[j]:.1f}%)"})
        if ds in controls and regime == "clean":
            top = part[part.eps == part.eps.max()]
            for r in top[top.method == "pgd"].itertuples():
                if r.accuracy > 10:
                    rows.append({"dataset": ds, "regime": regime, "method": "pgd", "eps": r.eps,
                                 "warning": f"undefended control still {r.accuracy:.1f}% accurate at the"
                                            " largest ε: the attack may be too weak"})
    return pd.DataFrame(rows, columns=["dataset", "regime", "method", "eps", "warning"])


def _fmt_acc(acc: float, lo: float, hi: float) -> str:
    return "–" if np.isnan(acc) else f"{acc:.1f} [{lo:.1f}, {hi:.1f}]"


def _fmt(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.2f}"


def table1_markdown(t1: pd.DataFrame) -> str:
    """Rows: baseline, then method × ε; per dataset our accuracy [95% CI] and the paper's (n in the note).

    Args:
        t1: a frame of :func:`table1`.
    Returns:
        The markdown table and a note (the labels attacked, n per dataset, units).
    """
    labels = t1.labels.iloc[0] if len(t1) else "predicted"
    t = t1.assign(row=[("baseline", 0.0) if m == "baseline" else (m, e) for m, e in zip(t1.method, t1.eps)])
    datasets = list(dict.fromkeys(t.dataset))
    header = ["attack", "ε"]
    for ds in datasets:
        header += [f"{ds} acc % [95% CI]", f"{ds} paper"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    order = list(dict.fromkeys(t.row))
    for method, eps in order:
        cells = [method.upper() if method != "baseline" else "Baseline", "" if method == "baseline" else eps_text(eps)]
        for ds in datasets:
            hit = t[(t.dataset == ds) & (t.row == (method, eps))]
            if len(hit):
                r = hit.iloc[0]
                cells += [_fmt_acc(r.accuracy, r.ci_low, r.ci_high), _fmt(r.paper)]
            else:
                cells += ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    ns = ", ".join(f"{ds} n={int(t[t.dataset == ds].n.iloc[0])}" for ds in datasets)
    note = (f"\nAttacks pushed each image away from the model's **{labels}** label"
            + (" (as the paper's code did; misclassified images can be flipped to correct)" if labels == "predicted" else "")
            + f". Test images: {ns}. Accuracy in %, Wilson 95% CI; ε in [0,1] pixel units.\n")
    return "\n".join(lines) + "\n" + note


def dataframe_markdown(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """A plain markdown table of ``df`` (numbers formatted with ``floatfmt``).

    Args:
        df: the frame (its index is not written).
        floatfmt: format spec of float cells (``eps`` uses ``g``; NaN is written "–").
    Returns:
        The markdown table.
    """
    def cell(v, col):
        if isinstance(v, float):
            return "–" if np.isnan(v) else format(v, "g" if col == "eps" else floatfmt)
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v, c) for v, c in zip(row, df.columns)) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"
