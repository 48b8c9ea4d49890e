"""Natural corruptions beside the adversarial attacks: the corruption table, ε in noise units, the
"corruption beat the attack" health check and the one-axis figure.

Inputs are the workflow's per-image CSVs: the corruption CSVs
(``results/{ds}/attacks/{regime}/corrupt_{name}/severity={s}.csv``, the attack CSVs' columns with
``adv_pred`` on the corrupted image and ``linf`` its measured ‖δ‖∞ in [0,1] units), the attack
CSVs of the strongest method, the sensitivity CSVs (per image ``eps_lower`` / ``eps_upper``, the
bracket on its flipping ε) and ``tensors/noise.csv`` (per image σ in stored units, measured at
the stored resolution before scaling and resizing, and its span of stored units per [0,1]).

Every function copes with one dataset, no adversarial regime, one corruption or severity, and
datasets without a σ (controls: σ NaN, so every σ column is NaN and the markdown says so).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from oncorobust.data.noise import SIGMA_FLOOR, sigma_multiple
from oncorobust.evaluation.results import rows_of_test_split
from oncorobust.evaluation.stats import wilson
from oncorobust.spec import CORRUPT_PREFIX, METHODS, REGIME_NAMES

#: columns of ``results/tables/corruptions.csv`` (accuracies in %, Wilson 95% CI)
TABLE_COLUMNS = ["dataset", "regime", "corruption", "severity", "unit", "n", "accuracy", "ci_low", "ci_high",
                 "clean_accuracy", "relative_accuracy", "flip_rate", "median_linf", "median_linf_stored",
                 "stored_unit"]
#: columns of the mean-corruption-accuracy summary (in ``corruptions.md``)
MEAN_COLUMNS = ["dataset", "regime", "clean_accuracy", "mean_corruption_accuracy", "mean_relative_accuracy",
                "n_conditions"]
#: columns of ``results/tables/noise_units.csv``
NOISE_UNITS_COLUMNS = ["dataset", "regime", "n_images", "n_with_sigma", "median_sigma", "unit", "eps50",
                       "eps50_sigma", "ci_low", "ci_high"]
#: the health check's name (a row of ``corruption_health.csv``, columns as the evaluation health table)
HEALTH_CHECK = "corruption_within_attack_ball"
HEALTH_COLUMNS = ["dataset", "regime", "check", "passed", "value", "threshold", "detail"]


def _stored(units: dict | None) -> tuple[float, str]:
    """(stored units per [0,1], unit name): (NaN, '[0,1]') when the dataset's units are unknown."""
    if units and units.get("per_eps"):
        return float(units["per_eps"]), str(units.get("unit", "stored value"))
    return math.nan, "[0,1]"


def corruption_table(per_image: dict[tuple, pd.DataFrame], units: dict[str, dict | None] | None = None) -> pd.DataFrame:
    """One row per (dataset, regime, corruption, severity).

    Args:
        per_image: {(dataset, regime, corruption, severity): corruption CSV frame}; ``corruption``
            without the ``corrupt_`` prefix.
        units: per dataset its ``stats.json`` ``eps_units`` (``per_eps``: stored units per [0,1]).

    Returns:
        :data:`TABLE_COLUMNS`: accuracy on the corrupted images in % with its Wilson 95% CI, the
        clean accuracy of the same images, ``relative_accuracy`` = accuracy / clean accuracy,
        ``flip_rate`` (% of images whose prediction changed), the median measured ‖δ‖∞ in [0,1]
        units and in stored units (× ``per_eps``; NaN when unknown), sorted by dataset order of
        ``per_image``, regime, corruption, severity.
    """
    units = units or {}
    rows = []
    for (ds, regime, name, sev), df in per_image.items():
        n = len(df)
        k = int((df.adv_pred == df.label).sum())
        k0 = int((df.clean_pred == df.label).sum())
        lo, hi = wilson(k, n)
        per, unit = _stored(units.get(ds))
        med = float(df.linf.median()) if n else math.nan
        acc, clean = (100 * k / n, 100 * k0 / n) if n else (math.nan, math.nan)
        rows.append({"dataset": ds, "regime": regime, "corruption": name, "severity": float(sev),
                     "unit": str(df["unit"].iloc[0]) if n and "unit" in df else "", "n": n,
                     "accuracy": acc, "ci_low": 100 * lo, "ci_high": 100 * hi, "clean_accuracy": clean,
                     "relative_accuracy": acc / clean if clean and not math.isnan(clean) else math.nan,
                     "flip_rate": 100 * float((df.adv_pred != df.clean_pred).mean()) if n else math.nan,
                     "median_linf": med, "median_linf_stored": med * per, "stored_unit": unit})
    out = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    order = {"dataset": {ds: i for i, ds in enumerate(dict.fromkeys(k[0] for k in per_image))},
             "regime": {r: i for i, r in enumerate(REGIME_NAMES)}}
    if len(out):
        out = out.sort_values(["dataset", "regime", "corruption", "severity"], kind="stable",
                              key=lambda c: c.map(lambda v: order[c.name].get(v, len(order[c.name])))
                              if c.name in order else c)
    return out.reset_index(drop=True)


def mean_corruption_accuracy(table: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, regime): the mean over corruptions and severities of the accuracy and of
    accuracy / clean accuracy (MedMNIST-C / ImageNet-C style, relative to the clean model's own
    accuracy on the same images).

    Args:
        table: the frame of :func:`corruption_table`.
    Returns:
        :data:`MEAN_COLUMNS` (accuracies in %).
    """
    rows = []
    for (ds, regime), g in table.groupby(["dataset", "regime"], sort=False):
        rows.append({"dataset": ds, "regime": regime, "clean_accuracy": float(g.clean_accuracy.mean()),
                     "mean_corruption_accuracy": float(g.accuracy.mean()),
                     "mean_relative_accuracy": float(g.relative_accuracy.mean()), "n_conditions": len(g)})
    return pd.DataFrame(rows, columns=MEAN_COLUMNS)


def _cell(v, fmt: str = ".1f") -> str:
    """A markdown table cell: numbers formatted (NaN as –, inf as ∞), '|' escaped."""
    if isinstance(v, (float, np.floating)):
        return "–" if np.isnan(v) else "∞" if np.isinf(v) else format(float(v), fmt)
    return str(v).replace("|", "\\|")


def _ci(v, lo, hi, fmt: str) -> str:
    return "–" if np.isnan(v) else f"{_cell(v, fmt)} ({_cell(lo, fmt)}–{_cell(hi, fmt)})"


def corruption_markdown(table: pd.DataFrame, means: pd.DataFrame, controls=()) -> str:
    """``corruptions.md``: per dataset the accuracy per corruption and severity, then the means.

    Args:
        table: the frame of :func:`corruption_table`.
        means: the frame of :func:`mean_corruption_accuracy`.
        controls: dataset names marked "(control)" in their headings.
    Returns:
        The markdown text (a note instead of the tables when ``table`` is empty).
    """
    lines = ["# Natural corruptions", "",
             "Accuracy (%) on the test images corrupted at each severity (in the corruption's unit), Wilson 95% CI;"
             " flip = % of images whose prediction changed; ‖δ‖∞ = the median measured L∞ size of the corruption,"
             " in [0,1] units and in the stored data's units (HU, grey levels).", ""]
    if table.empty:
        return "\n".join(lines + ["No corruption results (every dataset has `corruptions.names: []`).", ""])
    for ds, g in table.groupby("dataset", sort=False):
        lines += [f"## {ds}{' (control)' if ds in set(controls) else ''}", "",
                  "| regime | corruption | severity | unit | accuracy (95% CI) | clean | flip % | ‖δ‖∞ [0,1] | ‖δ‖∞ stored |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in g.itertuples(index=False):
            lines.append(f"| {r.regime} | {r.corruption} | {r.severity:g} | {_cell(r.unit)} | "
                         f"{_ci(r.accuracy, r.ci_low, r.ci_high, '.1f')} | {_cell(r.clean_accuracy)} | {_cell(r.flip_rate)} | "
                         f"{_cell(r.median_linf, '.4f')} | {_cell(r.median_linf_stored, '.3g')} {r.stored_unit if np.isfinite(r.median_linf_stored) else ''} |")
        lines.append("")
    lines += ["## Mean corruption accuracy", "",
              "Mean over corruptions and severities of the accuracy, and of accuracy / clean accuracy (MedMNIST-C,"
              " ImageNet-C style; 1 = no loss).", "",
              "| dataset | regime | clean % | mean corrupted % | mean relative | conditions |", "|---|---|---|---|---|---|"]
    for r in means.itertuples(index=False):
        lines.append(f"| {r.dataset} | {r.regime} | {_cell(r.clean_accuracy)} | {_cell(r.mean_corruption_accuracy)} | "
                     f"{_cell(r.mean_relative_accuracy, '.3f')} | {r.n_conditions} |")
    return "\n".join(lines) + "\n"


def sigma_multiples(sens: pd.DataFrame, noise: pd.DataFrame | None, floor: float = SIGMA_FLOOR) -> pd.DataFrame:
    """Per test image its flipping ε as a multiple of its own noise σ.

    Args:
        sens: a sensitivity CSV (``eps_upper``: the smallest confirmed flipping ε in [0,1] units,
            inf = never flips up to ``eps_max``).
        noise: ``tensors/noise.csv`` (σ in stored units, span = stored units per [0,1]), or None.
        floor: σ below this (stored units) counts as unmeasurable.

    Returns:
        The test rows with ``sigma``, ``span``, ``sigma_px`` = σ / span and ``eps_sigma`` =
        eps_upper / sigma_px (inf where the image never flips; NaN where σ is NaN or below the floor).
    """
    t = rows_of_test_split(sens)[["sample_id", "eps_upper", "eps_lower"]].copy()
    t["sample_id"] = t.sample_id.astype(str)
    if noise is not None and len(noise):
        nz = noise.assign(sample_id=noise.sample_id.astype(str)).drop_duplicates("sample_id").set_index("sample_id")
        t["sigma"] = t.sample_id.map(nz.sigma).astype(float)
        t["span"] = t.sample_id.map(nz.span).astype(float)
    else:
        t["sigma"], t["span"] = math.nan, math.nan
    eps = t.eps_upper.to_numpy(dtype=np.float64)
    sigma, span = t.sigma.to_numpy(dtype=np.float64), t.span.to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t["sigma_px"] = sigma / span
    ok = np.isfinite(sigma) & (sigma >= floor) & (sigma > 0) & np.isfinite(span) & (span > 0)
    mult = np.asarray(sigma_multiple(np.where(np.isfinite(eps), eps, 0.0) * span, sigma, floor), dtype=np.float64)
    t["eps_sigma"] = np.where(ok & np.isposinf(eps), np.inf, np.where(ok & np.isfinite(eps), mult, np.nan))
    return t


def _median_ci(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Median and percentile-bootstrap 95% CI (inf allowed: quantiles without interpolation)."""
    v = values[~np.isnan(values)]
    if not len(v):
        return math.nan, math.nan, math.nan
    med = float(np.quantile(v, 0.5, method="inverted_cdf"))
    rng = np.random.default_rng(seed)
    boots = np.quantile(v[rng.integers(0, len(v), size=(n_boot, len(v)))], 0.5, axis=1, method="inverted_cdf")
    lo, hi = np.quantile(boots, [0.025, 0.975], method="inverted_cdf")
    return med, float(lo), float(hi)


def noise_units_table(sens: dict[tuple[str, str], pd.DataFrame], noise: dict[str, pd.DataFrame | None], *,
                      n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """ε₅₀ in σ units per (dataset, regime): the median over test images of eps_upper / sigma_px.

    Args:
        sens: {(dataset, regime): sensitivity CSV frame}.
        noise: {dataset: ``tensors/noise.csv`` frame, or None}.
        n_boot: bootstrap resamples of the images.
        seed: bootstrap seed.

    Returns:
        :data:`NOISE_UNITS_COLUMNS`: ``eps50`` the median flipping ε in [0,1] units over every
        test image, ``eps50_sigma`` the median of the per-image σ multiples over the images whose
        σ is measurable (``n_with_sigma``; inf = more than half never flip), its bootstrap 95% CI,
        and the test images' median σ in stored units. σ columns are NaN without σ (controls).
    """
    rows = []
    for (ds, regime), s in sens.items():
        nz = noise.get(ds)
        m = sigma_multiples(s, nz)
        med, lo, hi = _median_ci(m.eps_sigma.to_numpy(dtype=np.float64), n_boot, seed)
        eps = m.eps_upper.to_numpy(dtype=np.float64)
        sig = m.sigma.to_numpy(dtype=np.float64)
        rows.append({"dataset": ds, "regime": regime, "n_images": len(m),
                     "n_with_sigma": int(m.eps_sigma.notna().sum()),
                     "median_sigma": float(np.nanmedian(sig)) if np.isfinite(sig).any() else math.nan,
                     "unit": str(nz.unit.iloc[0]) if nz is not None and len(nz) and "unit" in nz else "",
                     "eps50": float(np.quantile(eps[~np.isnan(eps)], 0.5, method="inverted_cdf"))
                     if (~np.isnan(eps)).any() else math.nan,
                     "eps50_sigma": med, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=NOISE_UNITS_COLUMNS)


def noise_units_markdown(table: pd.DataFrame) -> str:
    """``noise_units.md``: ε₅₀ in [0,1] units and in multiples of each image's own noise σ.

    Args:
        table: the frame of :func:`noise_units_table`.
    Returns:
        The markdown text: a note on the method, one table row per (dataset, regime), and a note
        naming the datasets without σ (if any).
    """
    lines = ["# ε₅₀ in units of each image's own noise", "",
             "Per test image: its flipping ε (sensitivity search, `eps_upper`; ∞ = no flip up to eps_max) divided by its"
             " noise σ in [0,1] units (σ in stored units measured on the crop at the stored resolution, before"
             " intensity scaling and resizing, ÷ the image's stored units per [0,1]). ε₅₀ = the median over test images,"
             " percentile-bootstrap 95% CI. σ below one stored step is not measurable (NaN, left out).", "",
             "| dataset | regime | images | with σ | median σ | ε₅₀ [0,1] | ε₅₀ / σ (95% CI) |", "|---|---|---|---|---|---|---|"]
    no_sigma = []
    for r in table.itertuples(index=False):
        if not r.n_with_sigma:
            no_sigma.append(r.dataset)
        lines.append(f"| {r.dataset} | {r.regime} | {r.n_images} | {r.n_with_sigma} | {_cell(r.median_sigma, '.3g')} {r.unit if np.isfinite(r.median_sigma) else ''} | "
                     f"{_cell(r.eps50, '.4g')} | {_ci(r.eps50_sigma, r.ci_low, r.ci_high, '.3g')} |")
    if no_sigma:
        lines += ["", f"No σ for {', '.join(sorted(set(no_sigma)))}: array sources (digits, MNIST, CIFAR-10) and crops"
                  " without measurable noise have σ = NaN, so their σ columns are NaN (–)."]
    return "\n".join(lines) + "\n"


def corruption_health(per_image: dict[tuple, pd.DataFrame], sens: dict[tuple[str, str], pd.DataFrame],
                      pairs=None) -> pd.DataFrame:
    """The health check "a corruption beat the attack", one row per (dataset, regime).

    An image that a corruption flips (adv_pred != clean_pred) with a measured ‖δ‖∞ below the
    sensitivity search's ``eps_lower`` for that image (where the strong attack found no flip)
    shows the attack missed a point of its own ε-ball: the corrupted image was one.

    Args:
        per_image: {(dataset, regime, corruption, severity): corruption CSV frame}.
        sens: {(dataset, regime): sensitivity CSV frame}.
        pairs: the (dataset, regime) to report (default: those of ``per_image`` with a
            sensitivity frame).

    Returns:
        :data:`HEALTH_COLUMNS` rows: ``value`` the number of such images (each counted once),
        ``passed`` when it is 0.
    """
    if pairs is None:
        pairs = list(dict.fromkeys(k[:2] for k in per_image))
    rows = []
    for ds, regime in pairs:
        s = sens.get((ds, regime))
        if s is None:
            continue
        lower = rows_of_test_split(s).assign(sample_id=lambda d: d.sample_id.astype(str)).set_index("sample_id").eps_lower
        hits, flips = [], 0
        for (d2, r2, name, sev), df in per_image.items():
            if (d2, r2) != (ds, regime) or not len(df):
                continue
            flipped = df[df.adv_pred != df.clean_pred]
            flips += len(flipped)
            lo = flipped.sample_id.astype(str).map(lower).astype(float)
            bad = flipped[(lo > flipped.linf).to_numpy()]
            hits += [(str(i), name, float(sev), float(d), float(lo.loc[j]))
                     for j, i, d in zip(bad.index, bad.sample_id, bad.linf)]
        images = sorted({h[0] for h in hits})
        if hits:
            ex = "; ".join(f"{i} by {CORRUPT_PREFIX}{n} severity {s:g}: ‖δ‖∞ {d:.4g} < eps_lower {lo:.4g}"
                           for i, n, s, d, lo in hits[:3])
            detail = (f"{len(images)} image(s) flipped by a corruption smaller in L∞ than the ε at which the sensitivity"
                      f" search's attack failed ({ex}{' ...' if len(hits) > 3 else ''}): the attack missed points of"
                      " its own ε-ball; strengthen it (restarts, steps, ensemble)")
        else:
            detail = f"no corruption flip ({flips} checked) lies below its image's eps_lower"
        rows.append({"dataset": ds, "regime": regime, "check": HEALTH_CHECK, "passed": not hits,
                     "value": float(len(images)), "threshold": "0 images", "detail": detail})
    return pd.DataFrame(rows, columns=HEALTH_COLUMNS)


def attack_curve(per_image: dict[tuple, pd.DataFrame]) -> pd.DataFrame:
    """Accuracy (%) with Wilson CI per (dataset, regime, method, eps) from attack CSV frames
    keyed (dataset, regime, method, eps); ε = 0 rows hold the clean accuracy.

    Args:
        per_image: {(dataset, regime, method, eps): attack CSV frame} (``label``, ``clean_pred``,
            ``adv_pred``; ε in [0,1] pixel units).
    Returns:
        Columns dataset, regime, method, eps, accuracy, ci_low, ci_high (%; NaN for no images); one row
        per key plus one ε = 0 row per (dataset, regime, method), sorted by dataset, regime, ε.
    """
    rows = []
    for (ds, regime, method, eps), df in per_image.items():
        n = len(df)
        for e, pred in ((0.0, df.clean_pred), (float(eps), df.adv_pred)):
            k = int((pred == df.label).sum())
            lo, hi = wilson(k, n)
            rows.append({"dataset": ds, "regime": regime, "method": method, "eps": e,
                         "accuracy": 100 * k / n if n else math.nan, "ci_low": 100 * lo, "ci_high": 100 * hi})
    out = pd.DataFrame(rows, columns=["dataset", "regime", "method", "eps", "accuracy", "ci_low", "ci_high"])
    return out.drop_duplicates(["dataset", "regime", "method", "eps"]).sort_values(["dataset", "regime", "eps"])


def _seeds_note(seeds: int) -> str:
    return f", mean of {seeds} seeds" if seeds > 1 else ""


def natural_vs_adversarial(table: pd.DataFrame, curves: pd.DataFrame, units: dict[str, dict | None],
                           sigma: dict[str, float], datasets: list[str], stem=None):
    """The one-axis figure: per dataset, accuracy against perturbation size in stored units (log x).

    Args:
        table: :func:`corruption_table`.
        curves: :func:`attack_curve` of the strongest attack.
        units: per dataset ``eps_units`` (``per_eps``; without it the axis is in [0,1] units).
        sigma: per dataset the test images' median σ in stored units (NaN: no σ axis).
        datasets: the panels, in order.
        stem: write ``stem``.png/.pdf when given.

    Returns:
        The matplotlib Figure: the attack's accuracy at each ε × per_eps (black, clean model
        solid, adversarially trained dashed) and each corruption's severities at their median
        measured ‖δ‖∞ (one colour per corruption, severities joined mildest to most severe); a
        top axis in multiples of the median σ where σ is known.
    """
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)

    from oncorobust.reporting import figures as F

    F.style()
    # seed replicates (R-r{k}): one line per regime, the mean over its seeds
    table = F.fold_seeds(table, ["dataset", "regime", "corruption", "severity"],
                         {c: "mean" for c in ("accuracy", "median_linf", "clean_accuracy")})
    curves = F.fold_seeds(curves, ["dataset", "regime", "method", "eps"], {"accuracy": "mean"})
    seeds = int(max([1, *table.seeds, *curves.seeds]))
    shown = [ds for ds in datasets if ds in set(table.dataset) | set(curves.dataset)]
    if not shown:
        return F.placeholder("No corruption or attack results to plot.", stem)
    fig, axes = F.grid(len(shown), ncols=min(3, len(shown)), w=2.8, h=2.4)
    names = list(dict.fromkeys(table.corruption))
    colors = {n: F.PALETTE[i % len(F.PALETTE)] for i, n in enumerate(names)}
    for ax, ds in zip(axes, shown):
        per, unit = _stored(units.get(ds))
        scale = per if np.isfinite(per) else 1.0
        cd = curves[curves.dataset == ds]
        order = sorted(set(cd.regime), key=lambda r: REGIME_NAMES.index(r) if r in REGIME_NAMES else 99)
        adversarial = [r for r in order if r != "clean"]
        for regime in order:
            c = cd[cd.regime == regime]
            c = c[c.eps > 0].sort_values("eps")
            ls = "-" if regime == "clean" else ["--", ":", "-.", (0, (5, 1, 1, 1))][adversarial.index(regime) % 4]
            marker = "o" if regime == "clean" else ["o", "^", "D", "v"][adversarial.index(regime) % 4]
            label = f"{METHODS[c.method.iloc[0]].label if len(c) and c.method.iloc[0] in METHODS else 'attack'}" \
                    f" ({regime}{_seeds_note(seeds)})" if len(c) else None
            ax.plot(c.eps * scale, c.accuracy, ls=ls, color="black", marker=marker, ms=2.5, lw=1.1, label=label)
        for (regime, name), g in table[table.dataset == ds].groupby(["regime", "corruption"], sort=False):  # table order
            g = g[g.median_linf > 0].sort_values("median_linf")
            ax.plot(g.median_linf * scale, g.accuracy, "-" if regime == "clean" else "--", marker="s", ms=3, lw=1,
                    color=colors[name], mfc=colors[name] if regime == "clean" else "white",
                    label=f"{name} ({regime}{_seeds_note(seeds)})")
        clean = table[(table.dataset == ds) & (table.regime == "clean")].clean_accuracy
        if len(clean):
            ax.axhline(float(clean.iloc[0]), color="grey", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylim(0, 102)
        ax.set_title(ds)
        ax.set_xlabel(f"perturbation ‖δ‖∞ ({unit if unit != '[0,1]' else '[0,1] units'})")
        ax.set_ylabel("accuracy (%)")
        s = sigma.get(ds, math.nan)
        if s is not None and np.isfinite(s) and s >= SIGMA_FLOOR:
            top = ax.secondary_xaxis("top", functions=(lambda v, s=s: v / s, lambda v, s=s: v * s))
            top.set_xlabel(f"× median σ ({s:.3g} {unit})", fontsize=6)
            top.tick_params(labelsize=6)
            top.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # less than a decade: no clutter
        else:
            ax.set_title(f"{ds} (no σ: control or unmeasured)")
    F.legend_below(fig, axes, ncol=3)
    if stem:
        F.save(fig, stem)
    return fig
