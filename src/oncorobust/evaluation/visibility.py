"""How visible an adversarial change is, per image and per attack (Curl et al. 2026, "Beyond attack
success rate": a success rate alone misleads; report the perturbation's size and perceptual quality).

Per attacked image: ‖δ‖₂ in [0,1] pixel units (δ = x_adv − x over all C×H×W values), the PSNR in dB
and the SSIM of the adversarial image against the clean one, both with scikit-image
(:func:`skimage.metrics.peak_signal_noise_ratio`, :func:`skimage.metrics.structural_similarity`)
on the model's [0,1] input with data range 1. The [0,1] input is the stored-unit crop mapped
linearly (window or percentile range), so PSNR and SSIM are those of the stored-unit crop whose data
range is that span. ‖δ‖∞ in stored units is ``linf`` times the dataset's stored units per [0,1]
(``tensors/stats.json`` ``eps_units.per_eps``). An image the attack left unchanged has PSNR ``inf``
and SSIM 1 (whatever its size). The tables' summary of these columns is
:mod:`oncorobust.reporting.visibility` (kept apart: a table edit reruns no attack).

SSIM uses scikit-image's default 7×7 uniform window, or the largest odd window the image allows
(at least 3 pixels a side; smaller images get NaN); several channels are averaged.
"""

from __future__ import annotations

import math

import numpy as np

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
