"""How visible the attacks' changes are, summarised for the tables and cards: median and range of the
per-image columns :mod:`oncorobust.evaluation.visibility` writes into every attack CSV (``linf``,
``l2``, ``psnr``, ``ssim``), over the images whose prediction the attack changed
(``results/tables/visibility.{csv,md}``; the medians also in ``attack_summary.csv``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from oncorobust.data.noise import sigma_multiple
from oncorobust.epsilon import eps_text
from oncorobust.evaluation.visibility import VISIBILITY_COLUMNS


def _noise(noise: dict[str, pd.DataFrame | None] | None) -> pd.DataFrame:
    """The datasets' ``tensors/noise.csv`` rows stacked: ``dataset``, ``sample_id`` (text), ``sigma``
    (stored units), ``span`` (stored units per [0,1])."""
    parts = [pd.DataFrame({"dataset": ds, "sample_id": f.sample_id.astype(str), "sigma": f.sigma.astype(float),
                           "span": f.span.astype(float)})
             for ds, f in (noise or {}).items() if f is not None and len(f)]
    return (pd.concat(parts, ignore_index=True).drop_duplicates(["dataset", "sample_id"]) if parts
            else pd.DataFrame(columns=["dataset", "sample_id", "sigma", "span"]))


def visibility_summary(frames: pd.DataFrame, per_eps: dict[str, float] | None = None,
                       noise: dict[str, pd.DataFrame | None] | None = None) -> pd.DataFrame:
    """Median and range of each visibility measure per dataset, regime, method and ε.

    Only images whose prediction the attack itself changed count (the changes a reader would have
    to spot); ``n_changed`` says how many. For ``worst`` these are the attack's own flips: Table 1
    also counts images that only the sensitivity search flips at or below ε, which have no
    adversarial image here.

    Args:
        frames: attack rows with ``dataset, regime, method, eps, clean_pred, adv_pred, linf`` and
            :data:`VISIBILITY_COLUMNS` (test rows only).
        per_eps: dataset → stored units per [0,1] (``eps_units.per_eps``), for ‖δ‖∞ in stored
            units; a dataset without one gets NaN there.
        noise: dataset → its ``tensors/noise.csv`` frame (``sample_id``, ``sigma`` in stored units,
            ``span`` = stored units per [0,1]), or None. ‖δ‖∞ is compared with σ as the noise-unit
            table compares ε (:func:`oncorobust.data.noise.sigma_multiple`: σ below one stored step
            is not measurable).
    Returns:
        One row per (dataset, regime, method, eps): ``n_changed`` and, for ``linf`` (pixel
        units), ``linf_stored``, ``l2``, ``psnr``, ``ssim``: ``<name>_median``, ``<name>_min``,
        ``<name>_max`` (NaN where no prediction changed); ``n_noise`` (changed images with a
        measurable noise σ) and ``below_noise_pct`` (% of them whose ‖δ‖∞ is below their own σ:
        an L∞ change smaller than the pixel noise already in the image; NaN without σ).
    Raises:
        KeyError: a needed column is missing.
    """
    keys = ["dataset", "regime", "method", "eps"]
    df = frames.assign(linf_stored=frames.linf * frames.dataset.map(per_eps or {}).astype(float))
    if noise and "sample_id" in df.columns:
        df = df.assign(sample_id=df.sample_id.astype(str)).merge(_noise(noise), on=["dataset", "sample_id"],
                                                                 how="left", validate="m:1")
        # ‖δ‖∞ in units of the image's own σ (NaN where σ is not measurable or the span unknown)
        df["linf_sigma"] = np.where(df.span > 0, sigma_multiple(df.linf * df.span, df.sigma), np.nan)
    else:
        df = df.assign(linf_sigma=math.nan)
    measures = ["linf", "linf_stored", *VISIBILITY_COLUMNS]
    rows = []
    for key, g in df.groupby(keys, sort=True):
        changed = g[g.adv_pred != g.clean_pred]
        row = dict(zip(keys, key), n=len(g), n_changed=len(changed))
        for m in measures:
            v = changed[m].to_numpy(dtype=np.float64)
            row[f"{m}_median"] = float(np.median(v)) if len(v) else math.nan
            row[f"{m}_min"] = float(v.min()) if len(v) else math.nan
            row[f"{m}_max"] = float(v.max()) if len(v) else math.nan
        known = changed[changed.linf_sigma.notna()]
        row["n_noise"] = len(known)
        row["below_noise_pct"] = 100 * float((known.linf_sigma < 1).mean()) if len(known) else math.nan
        rows.append(row)
    cols = (keys + ["n", "n_changed"] + [f"{m}_{s}" for m in measures for s in ("median", "min", "max")]
            + ["n_noise", "below_noise_pct"])
    return pd.DataFrame(rows, columns=cols)


def _range(row, name: str, fmt: str) -> str:
    med, lo, hi = row[f"{name}_median"], row[f"{name}_min"], row[f"{name}_max"]
    if math.isnan(med):
        return "–"
    return f"{med:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def _below(row) -> str:
    pct = row.get("below_noise_pct", math.nan)
    if pct is None or not np.isfinite(pct):
        return "–"
    return f"{pct:.0f}% of {int(row['n_noise'])}"


def visibility_markdown(summary: pd.DataFrame, units: dict[str, dict | None] | None = None) -> str:
    """:func:`visibility_summary` as a markdown table, one row per dataset, regime, attack and ε.

    Args:
        summary: the frame :func:`visibility_summary` returns.
        units: dataset → its ``eps_units`` (for the stored unit's name, e.g. HU), or None.
    Returns:
        The table (median [min, max] over the images whose prediction changed) and a note on how
        each measure is computed.
    """
    lines = ["| dataset | regime | attack | ε | changed / images | ‖δ‖∞ in stored units | ‖δ‖₂ | PSNR (dB) | SSIM"
             " | ‖δ‖∞ below the image's noise σ |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        unit = ((units or {}).get(r.dataset) or {}).get("unit", "")
        stored = _range(r, "linf_stored", ".3g")
        lines.append(f"| {r.dataset} | {r.regime} | {r.method} | {eps_text(float(r.eps))} | {int(r.n_changed)} / {int(r.n)}"
                     f" | {stored + (' ' + unit if unit and stored != '–' else '')} | {_range(r, 'l2', '.3g')}"
                     f" | {_range(r, 'psnr', '.1f')} | {_range(r, 'ssim', '.4f')} | {_below(r)} |")
    return ("\n".join(lines) + "\n\nMedian [min, max] over the test images whose prediction the attack itself"
            " changed (for worst, Table 1 also counts the images only the sensitivity search flips at or below ε)."
            " ‖δ‖₂ over all pixels in [0,1] units; PSNR and SSIM (scikit-image, data range 1, a 7×7 window or the"
            " largest odd one a smaller image allows) of the adversarial image against the clean one on the"
            " model's [0,1] input, the stored-unit crop mapped linearly. SSIM near 1 and a high PSNR: a change a"
            " reader would hardly see. Below the noise: the share of those images whose ‖δ‖∞ is smaller than"
            " their own noise σ (tensors/noise.csv: measured on the stored crop, in [0,1] units; – where σ is not"
            " measurable, e.g. digit arrays).\n")
