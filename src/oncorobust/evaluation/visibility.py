"""How visible an adversarial change is, per image and per attack (Curl et al. 2026, "Beyond attack
success rate": a success rate alone misleads; report the perturbation's size and perceptual quality).

Per attacked image: ‖δ‖₂ in [0,1] pixel units (δ = x_adv − x over all C×H×W values), the PSNR in dB
and the SSIM of the adversarial image against the clean one, both with scikit-image
(:func:`skimage.metrics.peak_signal_noise_ratio`, :func:`skimage.metrics.structural_similarity`)
on the model's [0,1] input with data range 1. The [0,1] input is the stored-unit crop mapped
linearly (window or percentile range), so PSNR and SSIM are those of the stored-unit crop whose data
range is that span. ‖δ‖∞ in stored units is ``linf`` times the dataset's stored units per [0,1]
(``tensors/stats.json`` ``eps_units.per_eps``). An image the attack left unchanged has PSNR ``inf``
and SSIM 1 (whatever its size).

SSIM uses scikit-image's default 7×7 uniform window, or the largest odd window the image allows
(at least 3 pixels a side; smaller images get NaN); several channels are averaged.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: per-image columns appended to the attack CSVs (see :mod:`oncorobust.evaluation.evaluate`)
VISIBILITY_COLUMNS = ["l2", "psnr", "ssim"]


def _window(h: int, w: int) -> int | None:
    side = min(7, h, w)
    side -= 1 - side % 2  # odd
    return side if side >= 3 else None


def visibility(x: np.ndarray, x_adv: np.ndarray) -> dict[str, np.ndarray]:
    """Per image ‖δ‖₂, PSNR and SSIM of ``x_adv`` against ``x``.

    Args:
        x: N×C×H×W clean images in [0,1] (float32 or float64; a torch tensor's ``.numpy()``).
        x_adv: the adversarial images, same shape.
    Returns:
        ``{"l2": N, "psnr": N (dB, inf where x_adv == x), "ssim": N (1 where x_adv == x, else NaN
        where the image is under 3 pixels a side)}`` as float64 arrays.
    Raises:
        ValueError: the shapes differ or are not N×C×H×W.
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    x, x_adv = np.asarray(x, dtype=np.float64), np.asarray(x_adv, dtype=np.float64)
    if x.shape != x_adv.shape or x.ndim != 4:
        raise ValueError(f"need two N×C×H×W arrays of one shape, got {x.shape} and {x_adv.shape}")
    n, c, h, w = x.shape
    l2 = np.sqrt(((x_adv - x) ** 2).reshape(n, -1).sum(axis=1))
    psnr, ssim = np.empty(n), np.full(n, math.nan)
    win = _window(h, w)
    for i in range(n):
        if not np.any(x_adv[i] != x[i]):
            psnr[i], ssim[i] = math.inf, 1.0
            continue
        psnr[i] = peak_signal_noise_ratio(x[i], x_adv[i], data_range=1.0)
        if win is not None:
            if c == 1:
                ssim[i] = structural_similarity(x[i, 0], x_adv[i, 0], data_range=1.0, win_size=win)
            else:
                ssim[i] = structural_similarity(x[i], x_adv[i], data_range=1.0, win_size=win, channel_axis=0)
    return {"l2": l2, "psnr": psnr, "ssim": ssim}


def visibility_summary(frames: pd.DataFrame, per_eps: dict[str, float] | None = None) -> pd.DataFrame:
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
    Returns:
        One row per (dataset, regime, method, eps): ``n_changed`` and, for ``linf`` (pixel
        units), ``linf_stored``, ``l2``, ``psnr``, ``ssim``: ``<name>_median``, ``<name>_min``,
        ``<name>_max`` (NaN where no prediction changed).
    Raises:
        KeyError: a needed column is missing.
    """
    keys = ["dataset", "regime", "method", "eps"]
    df = frames.assign(linf_stored=frames.linf * frames.dataset.map(per_eps or {}).astype(float))
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
        rows.append(row)
    cols = keys + ["n", "n_changed"] + [f"{m}_{s}" for m in measures for s in ("median", "min", "max")]
    return pd.DataFrame(rows, columns=cols)


def _range(row, name: str, fmt: str) -> str:
    med, lo, hi = row[f"{name}_median"], row[f"{name}_min"], row[f"{name}_max"]
    if math.isnan(med):
        return "–"
    return f"{med:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def visibility_markdown(summary: pd.DataFrame, units: dict[str, dict | None] | None = None) -> str:
    """:func:`visibility_summary` as a markdown table, one row per dataset, regime, attack and ε.

    Args:
        summary: the frame :func:`visibility_summary` returns.
        units: dataset → its ``eps_units`` (for the stored unit's name, e.g. HU), or None.
    Returns:
        The table (median [min, max] over the images whose prediction changed) and a note on how
        each measure is computed.
    """
    from oncorobust.epsilon import eps_text

    lines = ["| dataset | regime | attack | ε | changed / images | ‖δ‖∞ in stored units | ‖δ‖₂ | PSNR (dB) | SSIM |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        unit = ((units or {}).get(r.dataset) or {}).get("unit", "")
        stored = _range(r, "linf_stored", ".3g")
        lines.append(f"| {r.dataset} | {r.regime} | {r.method} | {eps_text(float(r.eps))} | {int(r.n_changed)} / {int(r.n)}"
                     f" | {stored + (' ' + unit if unit and stored != '–' else '')} | {_range(r, 'l2', '.3g')}"
                     f" | {_range(r, 'psnr', '.1f')} | {_range(r, 'ssim', '.4f')} |")
    return ("\n".join(lines) + "\n\nMedian [min, max] over the test images whose prediction the attack itself"
            " changed (for worst, Table 1 also counts the images only the sensitivity search flips at or below ε)."
            " ‖δ‖₂ over all pixels in [0,1] units; PSNR and SSIM (scikit-image, data range 1, a 7×7 window or the"
            " largest odd one a smaller image allows) of the adversarial image against the clean one on the"
            " model's [0,1] input, the stored-unit crop mapped linearly. SSIM near 1 and a high PSNR: a change a"
            " reader would hardly see.\n")
