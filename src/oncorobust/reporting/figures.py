"""Publication figures (seaborn, colour-blind palette, readable at single-column width).

- ``fig1_examples``: per dataset a test image, its PGD adversarial version and the perturbation
  amplified for visibility, each titled with the model's class probabilities (the paper's Fig. 1).
- ``fig2_accuracy_vs_eps``: accuracy vs ε for every white-box method (FGSM, BIM, PGD, the
  stronger attacks and the per-image worst case), one panel per dataset, Wilson 95% CI bands;
  one shared log-ε axis when the grids span more than a factor 10, else medical sets on a
  ×10⁻³ axis with a second axis in the stored data's units (HU, grey levels); the paper's Table 1
  values as markers where they exist (the paper's Fig. 2).
- ``fig5_robustness_curves``: the share of images whose prediction survives every perturbation of
  size ε, and accuracy, from the per-image flipping ε, every dataset on one log-ε axis.
- ``fig3_adv_training``: accuracy vs ε of the clean and each adversarially trained model (the
  paper's Fig. 3), white-box, CI bands.
- ``fig4_deferral``: accuracy on the retained test images as the deferred fraction grows, per
  deferral policy (adversarial sensitivity, confidence, random).
- ``fig6_clinical``: AUROC, sensitivity and specificity at the operating point, and the
  missed-finding and false-alarm rates against ε (log axis), per dataset and regime, CI bands.

Every function returns the matplotlib Figure and writes PNG + PDF when given a path stem. This
module only draws: the attack behind Fig. 1's example runs in
:func:`oncorobust.evaluation.examples.example_for`.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from oncorobust.epsilon import eps_text
from oncorobust.io import atomic_path  # noqa: E402
from oncorobust.spec import METHODS, PAPER_METHODS, STRENGTH_ORDER, TRANSFER_PREFIX, split_replicate_name  # noqa: E402

PALETTE = sns.color_palette("colorblind")
METHOD_COLORS = {name: m.color for name, m in METHODS.items()}
POLICY_COLORS = {"sensitivity": PALETTE[3], "first_order": PALETTE[2], "confidence": PALETTE[0],
                 "random": PALETTE[7]}
METHOD_LABELS = {name: m.label for name, m in METHODS.items()}


def style() -> None:
    """The figures' seaborn theme (paper context, white grid, the colourblind palette, small fonts);
    every figure function calls it first."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.0,
                  rc={"axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
                      "xtick.labelsize": 7, "ytick.labelsize": 7, "figure.dpi": 150})


def save(fig: plt.Figure, stem: str | Path) -> None:
    """Write ``stem``.png (200 dpi) and ``stem``.pdf atomically, then close ``fig``.

    Args:
        fig: the figure to write.
        stem: the path without suffix (a suffix it has is replaced by ``.png`` / ``.pdf``).
    Raises:
        WriteError: a file cannot be written (:func:`oncorobust.io.atomic_path`).
    """
    stem = Path(stem)
    for ext in ("png", "pdf"):
        with atomic_path(stem.with_suffix(f".{ext}")) as tmp:
            # no creation date in the PDF: the same figure gives the same bytes
            meta = {"CreationDate": None} if ext == "pdf" else {}
            fig.savefig(tmp, format=ext, dpi=200, bbox_inches="tight", metadata=meta)
    plt.close(fig)


def grid(n: int, ncols: int = 3, w: float = 2.3, h: float = 2.0):
    """A figure of ``n`` panels, ``ncols`` per row, the unused cells hidden.

    Args:
        n: number of panels (≥ 1).
        ncols: panels per row (at most ``n``).
        w, h: width and height of one panel (inches).
    Returns:
        (figure, list of the ``n`` axes, row by row).
    """
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def placeholder(text: str, stem: str | Path | None) -> plt.Figure:
    """A figure holding only ``text`` (when there is nothing to plot), written like any other.

    Args:
        text: what the figure says (e.g. why nothing is plotted).
        stem: the path without suffix to write it to (:func:`save`), or None to only return it.
    Returns:
        The figure (closed when it was written).
    Raises:
        WriteError: a file cannot be written.
    """
    fig, ax = plt.subplots(figsize=(6.4, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8)
    if stem:
        save(fig, stem)
    return fig


def legend_below(fig: plt.Figure, axes, ncol: int = 6, title: str | None = None) -> None:
    """One legend for all panels, under the figure (never over the data); none without handles.

    Args:
        fig: the figure.
        axes: its panels; their handles are merged by label, first one kept.
        ncol: legend columns (at most the number of labels).
        title: the legend's title, or None.
    """
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if not handles:
        fig.tight_layout()
        return
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(ncol, len(handles)),
               frameon=False, title=title, title_fontsize=7, bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.06 + 0.03 * ((len(handles) - 1) // ncol), 1, 1))


def _eps_axis(ax, datasets_medical: bool, eps_max: float) -> float:
    """Scale the ε axis: ×10⁻³ for the medical sets; returns the scale factor."""
    if datasets_medical:
        ax.set_xlabel("ε (×10⁻³, [0,1] pixel units)")
        ax.set_xlim(0, eps_max * 1e3 * 1.05)
        return 1e3
    ax.set_xlabel("ε ([0,1] pixel units)")
    return 1.0


def fig1_examples(examples: list[dict], stem: str | Path | None = None) -> plt.Figure:
    """``examples``: dicts with dataset, eps, clean (H×W or C×H×W in [0,1]), adv, classes,
    clean_prob and adv_prob (probability vectors). One row per dataset, three columns.

    Args:
        examples: one dict per dataset (:func:`oncorobust.evaluation.examples.example_for`): ``dataset``,
            ``eps`` ([0,1] pixel units), ``clean`` and ``adv`` (H×W, 1×H×W or 3×H×W arrays in [0,1]),
            ``classes`` (class names), ``clean_prob`` and ``adv_prob`` (one probability per class);
            optionally ``ssim`` and ``psnr`` (how visible the change is) and ``units`` (the dataset's
            ``eps_units``: ‖δ‖∞ also in stored units, e.g. HU), shown above the perturbation.
        stem: where to write PNG + PDF (no suffix); None: not written.
    Returns:
        The figure; a placeholder saying so when ``examples`` is empty.
    Raises:
        WriteError: the files cannot be written (:func:`save`).
    """
    style()
    if not examples:  # e.g. tiny models that no attack at the reference ε can flip
        return placeholder("No correctly classified test image is flipped by PGD at the reference ε:\n"
                           "nothing to show (see the attack tables).", stem)
    fig, axes = plt.subplots(len(examples), 3, figsize=(6.4, 2.1 * len(examples)), squeeze=False)
    for row, ex in zip(axes, examples):
        clean, adv = np.asarray(ex["clean"]), np.asarray(ex["adv"])
        delta = adv - clean
        amp = 0.5 + delta / (2 * max(ex["eps"], 1e-12))  # ±ε -> [0, 1], 0 -> mid grey
        for ax, img, title in (
            (row[0], clean, _prob_title("clean", ex["classes"], ex["clean_prob"])),
            (row[1], adv, _prob_title(f"PGD ε={eps_text(ex['eps'])}", ex["classes"], ex["adv_prob"])),
            (row[2], amp, _perturbation_title(ex, delta)),
        ):
            show = img.transpose(1, 2, 0) if img.ndim == 3 and img.shape[0] == 3 else img.squeeze()
            ax.imshow(show, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        row[0].set_ylabel(ex["dataset"], fontsize=9)
    fig.tight_layout()
    if stem:
        save(fig, stem)
    return fig


def _perturbation_title(ex: dict, delta: np.ndarray) -> str:
    """The perturbation panel's title: ‖δ‖∞ (in stored units when ``ex["units"]`` says them), SSIM and
    PSNR (``ex["ssim"]``, ``ex["psnr"]``, computed with the example), as in the visibility table."""
    d = float(np.abs(delta).max())
    units = ex.get("units")
    stored = f" ({d * float(units['per_eps']):.3g} {units['unit']})" if units and units.get("per_eps") else ""
    seen = [f"SSIM {ex['ssim']:.3f}" if np.isfinite(ex.get("ssim", np.nan)) else "",
            f"PSNR {ex['psnr']:.1f} dB" if np.isfinite(ex.get("psnr", np.nan)) else ""]
    seen = ", ".join(v for v in seen if v)
    return f"perturbation (±ε → black/white)\nmax |δ| = {d:.2g}{stored}" + (f"\n{seen}" if seen else "")


def _prob_title(prefix: str, classes: list[str], prob) -> str:
    k = int(np.argmax(prob))
    return f"{prefix}\n{classes[k]} {100 * float(prob[k]):.1f}%"


def _band(ax, d: pd.DataFrame, scale: float, color, label: str, ls: str = "-") -> None:
    d = d.sort_values("eps")
    x = d.eps.to_numpy() * scale
    ax.plot(x, d.accuracy, ls, marker="o", ms=3, color=color, label=label, lw=1.2)
    ax.fill_between(x, d.ci_low, d.ci_high, color=color, alpha=0.15, lw=0)


def _with_baseline(part: pd.DataFrame) -> pd.DataFrame:
    """Prepend ε = 0 (clean accuracy and its CI from ``summarize``) so every curve starts at the baseline."""
    first = part.iloc[0]
    zero = pd.DataFrame([{**first.to_dict(), "eps": 0.0, "accuracy": first.clean_accuracy,
                          "ci_low": first.clean_ci_low, "ci_high": first.clean_ci_high}])
    return pd.concat([zero, part], ignore_index=True)


def _stored_axis(ax, scale: float, units: dict | None) -> None:
    """A top ε axis in the stored data's units (HU, grey levels), when known."""
    if not units or not units.get("per_eps"):
        return
    k = float(units["per_eps"]) / scale
    top = ax.secondary_xaxis("top", functions=(lambda v: v * k, lambda v: v / k))
    top.set_xlabel(f"ε in {units['unit']}s of the stored data" if units["unit"] != "HU" else "ε in HU",
                   fontsize=6)
    top.tick_params(labelsize=6)


def fig2_accuracy_vs_eps(summary: pd.DataFrame, controls: set[str], paper: pd.DataFrame | None = None,
                         paper_names: dict[str, str | None] | None = None,
                         stem: str | Path | None = None, units: dict[str, dict] | None = None,
                         log_eps: bool | None = None) -> plt.Figure:
    """Accuracy under attack vs ε, one panel per dataset (clean models, white-box methods).

    Args:
        summary: attack_summary.csv rows.
        controls: the control datasets (titled as such).
        paper: the paper's Table 1 values (``data/paper_values.csv``; × markers), or None.
        paper_names: dataset → its name in the paper (None: no paper values).
        stem: write ``stem``.png/.pdf; None: not written.
        units: per dataset ``stats.json``'s ``eps_units``: a second ε axis (top) in the stored
            data's units.
        log_eps: one shared log-scaled ε axis for every panel (the clean baseline drawn as a
            dotted line); ``None`` (default) chooses it when the ε grids span more than a factor 10
            (typically medical sets and controls), else linear axes (×10⁻³ for medical sets).
    Returns:
        The figure; a placeholder when ``summary`` has no white-box row of a clean model.
    Raises:
        WriteError: the files cannot be written (:func:`save`).
    """
    style()
    data = summary[(summary.regime == "clean") & ~summary.method.str.startswith(TRANSFER_PREFIX)]
    datasets = list(dict.fromkeys(data.dataset))
    if not datasets:
        return placeholder("No white-box attack result of a clean model: nothing to show.", stem)
    positive = data.eps[data.eps > 0]
    if log_eps is None:
        log_eps = len(positive) > 0 and positive.max() / positive.min() > 10
    medical = [d for d in datasets if d not in controls]
    med_max = data[data.dataset.isin(medical)].eps.max() if medical else 0
    fig, axes = grid(len(datasets))
    for ax, ds in zip(axes, datasets):
        part = data[data.dataset == ds]
        if log_eps:
            scale = 1.0
            first = part.iloc[0]
            ax.axhline(first.clean_accuracy, color="grey", ls=":", lw=1, label="clean (ε = 0)")
            ax.axhspan(first.clean_ci_low, first.clean_ci_high, color="grey", alpha=0.1, lw=0)
        else:
            scale = _eps_axis(ax, ds not in controls, med_max)
        _stored_axis(ax, scale, (units or {}).get(ds))
        for method in METHOD_COLORS:
            m = part[part.method == method]
            if len(m):
                _band(ax, m if log_eps else _with_baseline(m), scale, METHOD_COLORS[method], METHOD_LABELS[method],
                      ":" if method == "worst" else "-")
        name = (paper_names or {}).get(ds)
        if paper is not None and name:
            pv = paper[(paper.table == "table1") & (paper.dataset == name)]
            for method in PAPER_METHODS:
                p = pv[pv.method.isin([method] if log_eps else [method, "baseline"])]
                if len(p):
                    ax.plot(p.eps * scale, p.accuracy, "x", color=METHOD_COLORS[method], ms=4, alpha=0.8,
                            label=f"paper {METHOD_LABELS[method]}")
        ax.set_title(ds + (" (control)" if ds in controls else ""))
        ax.set_ylim(0, 102)
        ax.set_ylabel("accuracy (%)")
        if log_eps:
            ax.set_xscale("log")
            ax.set_xlabel("ε ([0,1] pixel units, log scale)")
    if log_eps:
        xs = [ax.get_xlim() for ax in axes]
        lim = (min(x[0] for x in xs), max(x[1] for x in xs))
        for ax in axes:
            ax.set_xlim(*lim)
    fig.suptitle("Accuracy under attack (clean models; bands: 95% CI; ×: the paper's values)", fontsize=9)
    legend_below(fig, axes)
    if stem:
        save(fig, stem)
    return fig


def fold_seeds(frame: pd.DataFrame, keys: list[str], how: dict[str, str]) -> pd.DataFrame:
    """Fold seed replicates (``R-r{k}``, :func:`oncorobust.spec.split_replicate_name`) onto their
    regime R: one row per ``keys`` (which include ``regime``), each column of ``how`` aggregated
    over the seeds with its pandas function (``mean``, ``min``, ``max``), every other column taken
    from the first seed. Without replicates the rows are unchanged.

    Args:
        frame: rows with a ``regime`` column (model names as in the paths) and ``keys``.
        keys: the columns that identify a row once the seeds are folded.
        how: column → aggregation over the seeds; columns absent from ``frame`` are ignored.
    Returns:
        ``frame``'s columns with ``regime`` the base regime, plus ``seeds`` (K per row).
    """
    if not len(frame):
        return frame.assign(seeds=pd.Series(dtype=int))
    base = frame.regime.map(lambda r: split_replicate_name(r)[0])
    out = frame.assign(regime=base, seeds=1)
    if (base == frame.regime).all():
        return out
    agg = {c: how.get(c, "first") for c in out.columns if c not in keys}
    agg["seeds"] = "sum"
    return out.groupby(keys, sort=False, as_index=False).agg(agg)


def seed_means(summary: pd.DataFrame) -> pd.DataFrame:
    """Fold seed replicates of an attack summary onto their regime (:func:`fold_seeds`): per
    (dataset, R, method, ε) the mean accuracy over the K seeds and, as its band, the envelope of the
    per-seed 95% CIs (lowest low, highest high) — it covers the test-image noise of every seed and
    the seed-to-seed spread. Regimes with one seed are unchanged.

    Args:
        summary: rows of :func:`oncorobust.evaluation.results.summarize` (``dataset``, ``regime``,
            ``method``, ``eps``, ``accuracy``, ``ci_low``, ``ci_high``, ``clean_accuracy``,
            ``clean_ci_low``, ``clean_ci_high``, ...; accuracies in %).
    Returns:
        The same columns with ``regime`` the base regime, plus ``seeds`` (K per row).
    """
    return fold_seeds(summary, ["dataset", "regime", "method", "eps"],
                      {"accuracy": "mean", "clean_accuracy": "mean", "flip_rate": "mean", "ci_low": "min",
                       "clean_ci_low": "min", "ci_high": "max", "clean_ci_high": "max"})


def fig3_adv_training(summary: pd.DataFrame, controls: set[str], methods=("fgsm", "pgd"),
                      stem: str | Path | None = None, units: dict[str, dict] | None = None) -> plt.Figure:
    """Clean vs adversarially trained models, white-box, per dataset (datasets with adversarial
    regimes only); colour = regime, line style = method. With seed replicates each regime is drawn
    once: the mean over its seeds, the band the envelope of the per-seed 95% CIs (:func:`seed_means`).

    Args:
        summary: the attack summary (``tables/attack_summary.csv``; rows of
            :func:`oncorobust.evaluation.results.summarize`), transfer rows are left out.
        controls: the control datasets (their ε axis is not shared with the medical sets').
        methods: the white-box methods to draw; those absent from ``summary`` are left out and the
            strongest method that ran (:data:`oncorobust.spec.STRENGTH_ORDER`) is drawn instead (all
            white-box methods present are drawn when none of them ran).
        stem: where to write PNG + PDF (no suffix); None: not written.
        units: dataset → ``stats.json``'s ``eps_units`` (a top axis in the stored data's units).
    Returns:
        The figure; a placeholder saying so when no adversarially trained regime is configured.
    Raises:
        WriteError: the files cannot be written (:func:`save`).
    """
    style()
    wb = seed_means(summary[~summary.method.str.startswith(TRANSFER_PREFIX)])
    datasets = [d for d in dict.fromkeys(wb.dataset) if (wb[wb.dataset == d].regime != "clean").any()]
    if not datasets:
        return placeholder("No adversarially trained regime configured"
                           " (adversarial_training.regimes is empty): nothing to compare.", stem)
    chosen = [m for m in methods if (wb.method == m).any()]
    if chosen and len(chosen) < len(methods):  # a requested method did not run: the strongest that did
        chosen += [m for m in STRENGTH_ORDER if (wb.method == m).any() and m not in chosen][:1]
    methods = chosen or list(dict.fromkeys(wb.method))
    regimes = list(dict.fromkeys(r for r in wb.regime if r != "clean"))
    colors = {"clean": PALETTE[7], **{r: PALETTE[i] for i, r in enumerate(regimes)}}
    styles = {m: ["--", "-", ":", "-."][i % 4] for i, m in enumerate(methods)}
    medical = [d for d in datasets if d not in controls]
    med_max = wb[wb.dataset.isin(medical)].eps.max() if medical else 0
    seeds = int(wb.seeds.max()) if len(wb) else 1
    fig, axes = grid(max(1, len(datasets)))
    for ax, ds in zip(axes, datasets):
        scale = _eps_axis(ax, ds not in controls, med_max)
        _stored_axis(ax, scale, (units or {}).get(ds))
        for regime in ["clean", *regimes]:
            for method in methods:
                m = wb[(wb.dataset == ds) & (wb.regime == regime) & (wb.method == method)]
                if len(m):
                    k = int(m.seeds.iloc[0])
                    _band(ax, _with_baseline(m), scale, colors[regime],
                          f"{regime}{f' ({k} seeds)' if k > 1 else ''} · {METHOD_LABELS.get(method, method)}",
                          styles[method])
        ax.set_title(ds)
        ax.set_ylim(0, 102)
        ax.set_ylabel("accuracy (%)")
    bands = ("bands: 95% CI" if seeds == 1 else
             "lines: mean over seeds; bands: envelope of the per-seed 95% CIs")
    fig.suptitle(f"Adversarial training: accuracy under white-box attack ({bands})", fontsize=9)
    legend_below(fig, axes, ncol=4)
    if stem:
        save(fig, stem)
    return fig


def fig4_deferral(curves: pd.DataFrame, regime: str = "clean", stem: str | Path | None = None) -> plt.Figure:
    """``curves``: deferral.csv rows; one panel per dataset for ``regime``.

    Args:
        curves: deferral.csv rows (:func:`oncorobust.evaluation.deferral.deferral_curves` with ``dataset``
            and ``regime``): ``policy``, ``deferred_fraction`` (in [0,1], drawn in %), ``accuracy`` (%).
        regime: the models to draw (the other regimes' rows are left out).
        stem: where to write PNG + PDF (no suffix); None: not written.
    Returns:
        The figure; a placeholder when ``curves`` has no row of ``regime``.
    Raises:
        WriteError: the files cannot be written (:func:`save`).
    """
    style()
    data = curves[curves.regime == regime]
    datasets = list(dict.fromkeys(data.dataset))
    if not datasets:
        return placeholder(f"No deferral curve of {regime} models: nothing to show.", stem)
    fig, axes = grid(len(datasets))
    for ax, ds in zip(axes, datasets):
        part = data[data.dataset == ds]
        for policy, color in POLICY_COLORS.items():
            p = part[part.policy == policy].sort_values("deferred_fraction")
            if len(p):
                ax.plot(100 * p.deferred_fraction, p.accuracy, color=color, lw=1.4,
                        ls="--" if policy == "random" else ":" if policy == "first_order" else "-",
                        label="first-order ε estimate" if policy == "first_order" else policy)
        ax.set_title(ds)
        ax.set_xlabel("images deferred to a human (%)")
        ax.set_ylabel("accuracy on the rest (%)")
    fig.suptitle(f"Deferring the most sensitive images ({regime} models, test split)", fontsize=9)
    legend_below(fig, axes, title="defer first: the images with the smallest flipping ε (sensitivity), the smallest"
                 " one-gradient estimate of it, the lowest confidence, or random ones")
    if stem:
        save(fig, stem)
    return fig


def fig5_robustness_curves(curves: pd.DataFrame, controls: set[str], markers: pd.DataFrame | None = None,
                           summary: pd.DataFrame | None = None, stem: str | Path | None = None) -> plt.Figure:
    """Robustness curves: % of test images whose prediction survives every perturbation of size ε
    (top) and accuracy under attack (bottom), all datasets on one log-scaled ε axis, one column
    per regime (its seed replicates ``R-r{k}`` in the same column, one thin line per seed);
    controls dashed.

    Args:
        curves: rows of :func:`oncorobust.evaluation.robustness.curve` with ``dataset`` and ``regime``.
        controls: the control datasets.
        markers: optional attack-grid points (dataset, regime, eps, unchanged[, accuracy]) from
            Table 1's attacks, drawn as markers on the same axes to show the two agree.
        summary: optional :func:`oncorobust.evaluation.robustness.summary` rows: ε₅₀ (and its value in the
            stored data's units) in the legend.
        stem: where to write PNG + PDF (no suffix); None: not written.
    Returns:
        The figure (PNG + PDF written when ``stem`` is given); a placeholder when ``curves`` is empty.
    Raises:
        WriteError: the files cannot be written (:func:`save`).
    """
    style()
    regimes = list(dict.fromkeys(curves.regime)) if len(curves) else []
    if not regimes:
        return placeholder("No per-image flipping ε: nothing to show.", stem)
    groups: dict[str, list[str]] = {}  # one column per regime; its seed replicates R-r{k} in it
    for r in regimes:
        groups.setdefault(split_replicate_name(r)[0], []).append(r)
    panels = list(groups)
    datasets = list(dict.fromkeys(curves.dataset))
    colors = {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(datasets)}
    fig, axes = plt.subplots(2, len(panels), figsize=(3.2 * len(panels) + 0.4, 5.0), squeeze=False, sharex=True)
    for j, base in enumerate(panels):
        for ds in datasets:
            names = [r for r in groups[base] if ((curves.dataset == ds) & (curves.regime == r)).any()]
            seeds = len(names)
            # several seeds: one thin line per seed, one legend entry
            line_kw = {"lw": 1.3} if seeds == 1 else {"lw": 0.9, "alpha": 0.75}
            for i, regime in enumerate(names):
                c = curves[(curves.dataset == ds) & (curves.regime == regime)].sort_values("eps")
                label = ds + (" (control)" if ds in controls else "")
                if len(panels) > 1:  # one legend below all panels: name the panel's models
                    label += f" {base}"
                if seeds > 1:
                    label += f" ({seeds} seeds, one line each)"
                elif summary is not None:
                    s = summary[(summary.dataset == ds) & (summary.regime == regime)]
                    if len(s) and np.isfinite(s.eps50.iloc[0]):
                        label += f", ε₅₀ {s.eps50.iloc[0]:.2g}"
                        if np.isfinite(s.eps50_stored.iloc[0]):
                            label += f" ≈ {s.eps50_stored.iloc[0]:.2g} {s.stored_unit.iloc[0]}"
                ls = "--" if ds in controls else "-"
                for row, col in ((0, "unchanged"), (1, "accuracy")):
                    axes[row][j].plot(c.eps, c[col], ls, color=colors[ds], **line_kw,
                                      label=label if row == 0 and i == 0 else None)
                if markers is not None:
                    m = markers[(markers.dataset == ds) & (markers.regime == regime)]
                    for row, col in ((0, "unchanged"), (1, "accuracy")):
                        if col in m and m[col].notna().any():
                            axes[row][j].plot(m.eps, m[col], "o", mfc="none", color=colors[ds], ms=4)
        axes[0][j].set_title(f"{base} models")
        axes[0][j].set_ylabel("predictions unchanged (%)")
        axes[1][j].set_ylabel("accuracy under attack (%)")
        axes[1][j].set_xlabel("ε (L∞, [0,1] pixel units, log scale)")
        for row in (0, 1):
            axes[row][j].set_xscale("log")
            axes[row][j].set_ylim(0, 102)
    fig.suptitle("Robustness curves from the per-image flipping ε (○: attack-grid points of Table 1's"
                 " strongest attack)", fontsize=9)
    legend_below(fig, list(axes[0]), ncol=3)
    if stem:
        save(fig, stem)
    return fig


def _log_eps(ax) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("ε ([0,1] pixel units, log)")


def fig6_clinical(clinical: pd.DataFrame, directions: pd.DataFrame | None = None, method: str = "any attack",
                  direction_method: str = "worst", stem: str | Path | None = None) -> plt.Figure:
    """AUROC, sensitivity and specificity against ε, and both clinical errors' rates, per dataset.

    One row of panels per dataset with a positive class (not the one-vs-rest rows of a multi-class
    dataset without one): AUROC with its DeLong 95% CI band; sensitivity (solid) and
    specificity (dashed) at the operating point with Wilson bands; the missed-finding and
    false-alarm rates of ``direction_method`` (``directions.csv``). One colour per regime, ε on a log
    axis; the clean values (ε = 0, which a log axis cannot show) as dotted horizontal lines.

    Args:
        clinical: ``tables/clinical.csv`` (:func:`oncorobust.evaluation.clinical_metrics.clinical_table`).
        directions: ``tables/directions.csv``, or None (no third panel).
        method: the attack rows drawn (``any attack``: each image's most harmful attack; falls back
            to ``worst``, then to any one attack, where it is absent).
        direction_method: the attack whose missed findings and false alarms are drawn (where it
            did not run: the strongest one that did, by the registry's strength order).
        stem: where to write PNG + PDF (no suffix); None: not written.
    Returns:
        The figure; a placeholder when no dataset has a positive class.
    Raises:
        WriteError: the files cannot be written (:func:`save`).
    """
    style()
    from oncorobust.evaluation.clinical_metrics import positive_class_rows

    data = clinical[positive_class_rows(clinical)]
    if "direction" in data.columns:  # the untargeted adversary
        data = data[data.direction.astype(str) == "any"]
    datasets = list(dict.fromkeys(data.dataset))
    if not datasets:
        return placeholder("No dataset with a positive class: no AUROC under attack to show.", stem)
    ncols = 3 if directions is not None and len(directions) else 2
    fig, axes = plt.subplots(len(datasets), ncols, figsize=(2.6 * ncols, 2.1 * len(datasets)), squeeze=False)
    regimes = list(dict.fromkeys(data.regime))
    colors = {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(regimes)}
    for row, ds in zip(axes, datasets):
        part = data[data.dataset == ds]
        for regime in regimes:
            g = part[part.regime == regime]
            if g.empty:
                continue
            chosen = next((m for m in (method, "worst", *g.method) if m != "clean" and (g.method == m).any()), None)
            clean, att = g[g.method == "clean"], g[g.method == chosen].sort_values("eps")
            c = colors[regime]
            ax = row[0]
            ax.plot(att.eps, att.auroc, marker="o", ms=3, color=c, lw=1.2, label=regime)
            ax.fill_between(att.eps, att.auroc_ci_low, att.auroc_ci_high, color=c, alpha=0.15, lw=0)
            if len(clean):
                ax.axhline(clean.auroc.iloc[0], color=c, ls=":", lw=0.9)
            ax = row[1]
            for col, ls, lo, hi in (("sensitivity", "-", "sens_ci_low", "sens_ci_high"),
                                    ("specificity", "--", "spec_ci_low", "spec_ci_high")):
                ax.plot(att.eps, att[col], ls, marker="o", ms=2.5, color=c, lw=1.1)
                ax.fill_between(att.eps, att[lo], att[hi], color=c, alpha=0.1, lw=0)
                if len(clean):
                    ax.axhline(clean[col].iloc[0], color=c, ls=":", lw=0.8)
            if ncols == 3:
                d = directions[(directions.dataset == ds) & (directions.regime == regime)]
                # the named attack, else the strongest one run (lowest accuracy under attack is not
                # known here: the first of the registry's strength order present)
                shown = direction_method if (d.method == direction_method).any() else next(
                    (m for m in STRENGTH_ORDER if (d.method == m).any()), None)
                d = d[d.method == shown].sort_values("eps")
                ax = row[2]
                for col, ls, lo, hi in (("missed_rate", "-", "missed_ci_low", "missed_ci_high"),
                                        ("false_alarm_rate", "--", "false_alarm_ci_low", "false_alarm_ci_high")):
                    ax.plot(d.eps, d[col], ls, marker="o", ms=2.5, color=c, lw=1.1)
                    ax.fill_between(d.eps, d[lo], d[hi], color=c, alpha=0.1, lw=0)
        pos = str(part.positive_class.iloc[0])
        row[0].set_ylabel(f"{ds} (positive: {pos})\nAUROC", fontsize=8)
        row[0].set_ylim(-0.02, 1.02)
        row[1].set_ylabel("% at the operating point")
        row[1].set_ylim(-2, 102)
        if ncols == 3:
            row[2].set_ylabel("% of correct images")
            row[2].set_ylim(-2, 102)
        for ax in row:
            if np.isfinite(ax.dataLim.intervalx).all() and ax.dataLim.intervalx[0] > 0:
                _log_eps(ax)
            else:  # e.g. no worst case run, so no per-direction rates
                ax.text(0.5, 0.5, "no result", ha="center", va="center", transform=ax.transAxes, fontsize=7)
                ax.set_xlabel("ε ([0,1] pixel units)")
    axes[0][0].set_title(f"AUROC ({method})")
    axes[0][1].set_title("sensitivity —, specificity - -")
    if ncols == 3:
        axes[0][2].set_title("missed findings —, false alarms - -")
    fig.suptitle("Clinical metrics under attack (dotted: clean images; bands: 95% CIs)", fontsize=9)
    legend_below(fig, list(axes.flat), title="model (regime)")
    if stem:
        save(fig, stem)
    return fig
