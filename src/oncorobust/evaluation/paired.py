"""Paired comparisons of two models on the same test images, and intervals across seeds.

Two models (e.g. a regime and ``clean``) evaluated on the same N test images give paired
per-image outcomes; comparing them pairwise removes the image-to-image variation both share.

- :func:`mcnemar_exact`: the exact (binomial) McNemar test on the discordant pairs.
- :func:`paired_accuracy_difference`: accuracy of B minus accuracy of A with a 95% CI
  (Newcombe's square-and-add score interval for paired proportions, Newcombe 1998 method 10, by
  default; the project's Wald interval on request) and the McNemar p-value.
- :func:`paired_eps50_difference`: ε₅₀ of B minus ε₅₀ of A (ε₅₀ = the lower empirical median
  of the per-image flipping ε, inf = never flips, as :mod:`oncorobust` robustness summaries), with
  a paired percentile-bootstrap CI (images resampled jointly).
- :func:`two_level_bootstrap`: K training seeds × images: the across-seed mean of a statistic
  with an interval that covers both seed and image variation (resample seeds, then images),
  beside the per-seed range and the interval from images alone. Paired differences fit the same
  call: give each seed's per-image pairs as an N×2 array and a paired statistic such as
  :func:`median_difference`.

Percentile intervals use the lower/higher order statistics (inf-aware), as the robustness
summary does; all resampling uses ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from oncorobust.errors import OncorobustError
from oncorobust.evaluation.stats import paired_difference

Z95 = 1.959963984540054


class PairedError(OncorobustError, ValueError):
    """A paired comparison was given unusable inputs (the message names the argument)."""


# --------------------------------------------------------------------------- small helpers

def _count(v, name: str) -> int:
    if isinstance(v, (bool, np.bool_)) or int(v) != v or v < 0:
        raise PairedError(f"{name} = {v!r}: a count must be a non-negative integer")
    return int(v)


def _bools(v, name: str) -> np.ndarray:
    a = np.asarray(v)
    if a.ndim != 1:
        raise PairedError(f"{name} must be one value per image (1-D), got shape {a.shape}")
    if a.dtype != bool:
        if not np.isin(a, (0, 1)).all():
            raise PairedError(f"{name} must be booleans (or 0/1) per image")
        a = a.astype(bool)
    return a


def _eps(v, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    if a.ndim != 1 or not len(a):
        raise PairedError(f"{name} must be a non-empty 1-D array of per-image ε, got shape {a.shape}")
    if np.isnan(a).any() or (a < 0).any():
        raise PairedError(f"{name}: per-image ε must be ≥ 0 or inf (never flips), not NaN/negative")
    return a


def _check_boot(n_boot: int, level: float) -> None:
    if int(n_boot) != n_boot or n_boot < 1:
        raise PairedError(f"n_boot = {n_boot}: must be a positive integer")
    if not 0 < level < 1:
        raise PairedError(f"level = {level}: must be in (0, 1)")


def percentile_ci(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates: the lower order statistic at (1−level)/2 and
    the higher at (1+level)/2 (inf-aware; NaN replicates are dropped; (nan, nan) if none left).

    Args:
        replicates: the bootstrap replicates (1-D; NaN = undefined, left out; ±inf allowed).
        level: interval level in (0, 1) (0.95); not checked here.
    Returns:
        (low, high).
    """
    r = np.asarray(replicates, dtype=float)
    r = r[~np.isnan(r)]
    if not len(r):
        return math.nan, math.nan
    a = (1 - level) / 2
    return float(np.quantile(r, a, method="lower")), float(np.quantile(r, 1 - a, method="higher"))


def eps50(eps_upper: np.ndarray) -> float:
    """ε₅₀: the ε by which half of the images have flipped — the lower empirical median of the
    per-image flipping ε (pixel units; inf when fewer than half ever flip). Same definition as
    the robustness summary's quantile at q = 0.5.

    Args:
        eps_upper: per image (N), the flipping ε in [0,1] pixel units (inf = never flips).
    Returns:
        ε₅₀ (the ⌈N/2⌉-th smallest value); NaN when N = 0.
    """
    e = np.sort(np.asarray(eps_upper, dtype=float))
    if not len(e):
        return math.nan
    return float(e[max(int(math.ceil(0.5 * len(e))) - 1, 0)])


def _diff(b: np.ndarray | float, a: np.ndarray | float):
    """b − a with inf − inf = NaN (undefined) and no warnings."""
    with np.errstate(invalid="ignore"):
        return np.subtract(b, a)


def mean_difference(pairs: np.ndarray) -> float:
    """Mean of column 1 minus mean of column 0 of an N×2 array (e.g. correct_b, correct_a).

    Args:
        pairs: N×2, one row per image: column 0 model A, column 1 model B (e.g. 0/1 correct).
    Returns:
        mean(B) − mean(A) (a fraction for 0/1 columns).
    """
    p = np.asarray(pairs, dtype=float)
    return float(p[:, 1].mean() - p[:, 0].mean())


def median_difference(pairs: np.ndarray) -> float:
    """ε₅₀ of column 1 minus ε₅₀ of column 0 of an N×2 array of per-image ε (NaN if both inf).

    Args:
        pairs: N×2, one row per image: column 0 model A's, column 1 model B's flipping ε (pixel units; inf = never).
    Returns:
        :func:`eps50` of B − :func:`eps50` of A (pixel units; ±inf if one is inf, NaN if both are).
    """
    p = np.asarray(pairs, dtype=float)
    return float(_diff(eps50(p[:, 1]), eps50(p[:, 0])))


# --------------------------------------------------------------------------- McNemar

def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: under H0 the b + c discordant pairs split Binomial(b + c, ½).

    p = min(1, 2 · P(X ≤ min(b, c))), X ~ Bin(b + c, ½) — equal to
    ``scipy.stats.binomtest(b, b + c, 0.5).pvalue`` (symmetric null); computed in exact integer
    arithmetic, one rounding at the end.

    Args:
        b: pairs right under model A only (or any one discordant cell).
        c: pairs right under model B only (the other discordant cell).
    Returns:
        The p-value in (0, 1]; 1.0 when there are no discordant pairs.
    Raises:
        PairedError: a count is negative or not an integer.
    """
    b, c = _count(b, "b"), _count(c, "c")
    n, k = b + c, min(b, c)
    if n == 0 or b == c:
        return 1.0
    term, tail = 1, 1  # C(n, 0)
    for i in range(1, k + 1):
        term = term * (n - i + 1) // i
        tail += term
    return min(1.0, (2 * tail) / (1 << n))


# --------------------------------------------------------------------------- accuracy

def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_paired(both: int, only_a: int, only_b: int, neither: int,
                    z: float = Z95) -> tuple[float, float, float]:
    """Newcombe's (1998, method 10) square-and-add score interval for p_B − p_A on paired data.

    Wilson intervals for each marginal accuracy combined with the estimated correlation φ of the
    two, φ's numerator continuity-adjusted (AD − BC − N/2 when AD − BC > N/2, 0 when 0 ≤ AD − BC
    ≤ N/2), as in Fagerland, Lydersen & Laake's ``Newcombe_square_and_add_CI_paired_2x2``.

    Args:
        both, only_a, only_b, neither: the paired 2×2 table (right under both / A only / B only /
            neither).
        z: the normal quantile (1.96 for 95%).
    Returns:
        (difference, low, high), difference = (only_b − only_a)/N; NaN triple when N = 0.
    """
    n = both + only_a + only_b + neither
    if n == 0:
        return math.nan, math.nan, math.nan
    pa, pb = (both + only_a) / n, (both + only_b) / n
    la, ua = _wilson(both + only_a, n, z)
    lb, ub = _wilson(both + only_b, n, z)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = 0.0
    if margins > 0:
        ad_bc = both * neither - only_a * only_b
        if ad_bc > n / 2:
            phi = (ad_bc - n / 2) / math.sqrt(margins)
        elif ad_bc < 0:
            phi = ad_bc / math.sqrt(margins)
    d = pb - pa
    low = d - math.sqrt(max((pb - lb) ** 2 + (ua - pa) ** 2 - 2 * phi * (pb - lb) * (ua - pa), 0.0))
    high = d + math.sqrt(max((ub - pb) ** 2 + (pa - la) ** 2 - 2 * phi * (ub - pb) * (pa - la), 0.0))
    return d, max(-1.0, low), min(1.0, high)


def _wald(only_b: int, only_a: int, n: int) -> tuple[float, float, float]:
    return paired_difference(only_b, only_a, n)


def paired_accuracy_difference(correct_a: np.ndarray, correct_b: np.ndarray, *,
                               method: str = "newcombe") -> dict:
    """Accuracy of model B minus accuracy of model A on the same test images.

    Args:
        correct_a: per image (N), whether model A is right (bool or 0/1), e.g. ``clean``
            under the worst-case attack at some ε.
        correct_b: the same N images, same order, for model B (e.g. ``adv_trades``).
        method: ``"newcombe"`` (score interval, :func:`newcombe_paired`; sensible with few
            discordant pairs) or ``"wald"`` (``stats.paired_difference``, the project's Wald
            interval).
    Returns:
        dict with ``n``, ``acc_a``, ``acc_b``, ``both``, ``only_a`` (A right, B wrong),
        ``only_b``, ``neither``, ``difference`` (acc_b − acc_a, a fraction), ``ci_low``,
        ``ci_high`` (95%), ``method``, ``mcnemar_p`` (exact, :func:`mcnemar_exact`).
    Raises:
        PairedError: the arrays are not 1-D booleans of the same length, or ``method`` is unknown.
    """
    a, b = _bools(correct_a, "correct_a"), _bools(correct_b, "correct_b")
    if len(a) != len(b):
        raise PairedError(f"correct_a has {len(a)} images, correct_b {len(b)}: pair the same test images")
    n = len(a)
    both, only_a = int((a & b).sum()), int((a & ~b).sum())
    only_b, neither = int((~a & b).sum()), int((~a & ~b).sum())
    if method == "newcombe":
        d, lo, hi = newcombe_paired(both, only_a, only_b, neither)
    elif method == "wald":
        d, lo, hi = _wald(only_b, only_a, n)
    else:
        raise PairedError(f"method = {method!r}: choose 'newcombe' or 'wald'")
    return {"n": n, "acc_a": a.mean() if n else math.nan, "acc_b": b.mean() if n else math.nan,
            "both": both, "only_a": only_a, "only_b": only_b, "neither": neither,
            "difference": d, "ci_low": lo, "ci_high": hi, "method": method,
            "mcnemar_p": mcnemar_exact(only_a, only_b)}


# --------------------------------------------------------------------------- ε50

def paired_eps50_difference(eps_a: np.ndarray, eps_b: np.ndarray, *, n_boot: int = 2000,
                            seed: int = 0, level: float = 0.95) -> dict:
    """ε₅₀ of model B minus ε₅₀ of model A on the same images, with a paired bootstrap CI.

    Each replicate resamples the N images with replacement (the same indices for both models)
    and recomputes both ε₅₀ (:func:`eps50`); the interval is the percentile interval of the
    replicate differences. A replicate in which both ε₅₀ are inf has no defined difference and
    is left out (counted in ``n_undefined``); inf − finite = inf counts as a replicate.

    Args:
        eps_a: per image (N), model A's flipping ε (pixel units; inf = never flips).
        eps_b: the same N images, same order, for model B.
        n_boot: bootstrap replicates.
        seed: seed of ``numpy.random.default_rng``.
        level: interval level (0.95).
    Returns:
        dict with ``n``, ``eps50_a``, ``eps50_b``, ``difference`` (eps50_b − eps50_a, pixel
        units; NaN if both inf), ``ci_low``, ``ci_high``, ``n_boot``, ``n_undefined``.
    Raises:
        PairedError: the arrays differ in length, are empty, hold NaN or negative ε, or n_boot/level
            are unusable.
    """
    ea, eb = _eps(eps_a, "eps_a"), _eps(eps_b, "eps_b")
    if len(ea) != len(eb):
        raise PairedError(f"eps_a has {len(ea)} images, eps_b {len(eb)}: pair the same test images")
    _check_boot(n_boot, level)
    n = len(ea)
    k = max(int(math.ceil(0.5 * n)) - 1, 0)
    rng = np.random.default_rng(seed)
    reps = np.empty(int(n_boot))
    chunk = max(1, 2_000_000 // n)  # bound memory: chunk × n indices at a time
    for s in range(0, int(n_boot), chunk):
        idx = rng.integers(0, n, size=(min(chunk, int(n_boot) - s), n))
        ma = np.partition(ea[idx], k, axis=1)[:, k]
        mb = np.partition(eb[idx], k, axis=1)[:, k]
        reps[s:s + len(idx)] = _diff(mb, ma)
    lo, hi = percentile_ci(reps, level)
    a50, b50 = eps50(ea), eps50(eb)
    return {"n": n, "eps50_a": a50, "eps50_b": b50, "difference": float(_diff(b50, a50)),
            "ci_low": lo, "ci_high": hi, "n_boot": int(n_boot),
            "n_undefined": int(np.isnan(reps).sum())}


# --------------------------------------------------------------------------- seeds × images

def _t_quantile(q: float, df: int) -> float:
    from scipy.stats import t  # scipy is a dependency; imported here to keep the module light

    return float(t.ppf(q, df))


def two_level_bootstrap(values: Sequence[np.ndarray], stat: Callable[[np.ndarray], float] = np.mean,
                        *, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                        shared_images: bool = True, bounds: tuple[float, float] | None = None) -> dict:
    """Across-seed mean of a per-image statistic, with an interval over seeds and images.

    Each of the K replicate trainings (seeds) gives per-image values on the test set; the
    estimate is the mean over seeds of ``stat`` of each seed's values. Each bootstrap replicate
    draws K seeds with replacement, then resamples images within each drawn seed, computes
    ``stat`` per drawn seed and averages — so the interval covers both the training-seed and the
    test-image variation. ``shared_images=True`` (the usual case: every seed evaluated on the same
    test images) draws one set of image indices per replicate and applies it to every drawn seed,
    keeping the image effects they share; ``False`` draws images independently per seed (seeds
    evaluated on different images). Both levels being resampled makes the interval slightly
    conservative (image noise also sits in the between-seed spread).

    With few seeds the seed level is the weak point: a bootstrap over K = 3 seeds cannot reach
    beyond the range of the three per-seed estimates, so when the seed-to-seed spread dominates
    the image noise the percentile interval undercovers (≈ 73% in a simulation where seed SD
    ≈ 10× the image SE; ≥ 90% while they are comparable — see tests/test_paired.py). The
    ``sa_ci_*`` interval is therefore returned too: the Student-t half-width over the K
    per-seed estimates (t_{K−1} · sd/√K) combined, square-and-add, with each side of the
    images-only bootstrap interval; it held ≥ 95% coverage in every simulated mix. Prefer it
    for K ≤ 5.

    Paired comparisons: give per seed an N×2 array (column 0 = model A, column 1 = model B;
    rows are images, resampled together) and a paired ``stat`` such as :func:`mean_difference`
    (accuracy: 0/1 columns) or :func:`median_difference` (ε₅₀: per-image ε columns); or give
    per-image differences (N) with ``np.mean``.

    Args:
        values: K arrays, one per seed, each N_k (or N_k×m, rows = images). With
            ``shared_images`` all N_k must be equal (same images, same order).
        stat: array (N_k or N_k×m) → float. Default ``np.mean`` (e.g. accuracy from 0/1).
        n_boot: bootstrap replicates.
        seed: seed of ``numpy.random.default_rng``.
        level: interval level (0.95).
        shared_images: whether all seeds were evaluated on the same images (see above).
        bounds: (low, high) the statistic cannot leave (e.g. (0, 1) for an accuracy, (−1, 1) for a
            difference of accuracies, (0, inf) for an ε): the square-and-add interval, which is not
            a resampling interval and can overshoot with few seeds, is clipped to it. None: no clip.
    Returns:
        dict with ``k`` (seeds), ``n`` (images per seed, list), ``mean`` (across seeds),
        ``ci_low``, ``ci_high`` (two-level bootstrap: seeds and images), ``sa_ci_low``,
        ``sa_ci_high`` (seed t-interval ⊕ images bootstrap; NaN for K = 1),
        ``images_ci_low``, ``images_ci_high``
        (images only, seeds held fixed: what the interval would be without the seed
        variation), ``per_seed`` (list), ``seed_min``, ``seed_max``, ``seed_sd`` (ddof 1; NaN
        for K = 1), ``n_boot``, ``n_undefined`` (replicates where ``stat`` gave NaN, left out),
        ``replicates`` (the n_boot two-level bootstrap values, NaN kept: for a ratio of two
        independent estimates).
    Raises:
        PairedError: no seeds, an empty seed, unequal image counts with ``shared_images``, or
            unusable n_boot/level.
    """
    arrays = [np.asarray(v) for v in values]
    if not arrays:
        raise PairedError("values: give one array per seed (K ≥ 1)")
    if any(a.ndim not in (1, 2) or not len(a) for a in arrays):
        raise PairedError("values: each seed's array must be non-empty, N or N×m (rows = images)")
    ns = [len(a) for a in arrays]
    if shared_images and len(set(ns)) > 1:
        raise PairedError(f"values have {ns} images per seed; shared_images=True needs the same"
                          " test images for every seed (or pass shared_images=False)")
    _check_boot(n_boot, level)
    k = len(arrays)
    per_seed = np.array([float(stat(a)) for a in arrays])
    rng = np.random.default_rng(seed)
    both, images_only = np.empty(int(n_boot)), np.empty(int(n_boot))
    for r in range(int(n_boot)):
        seeds = rng.integers(0, k, size=k)
        if shared_images:
            idx = rng.integers(0, ns[0], size=ns[0])
            boot = [float(stat(a[idx])) for a in arrays]  # every seed on this image sample
            both[r] = np.mean([boot[s] for s in seeds])
            images_only[r] = np.mean(boot)
        else:
            boot = [float(stat(a[rng.integers(0, len(a), size=len(a))])) for a in arrays]
            seeds_boot = [float(stat(arrays[s][rng.integers(0, ns[s], size=ns[s])])) for s in seeds]
            both[r] = np.mean(seeds_boot)
            images_only[r] = np.mean(boot)
    lo, hi = percentile_ci(both, level)
    ilo, ihi = percentile_ci(images_only, level)
    with np.errstate(invalid="ignore"):
        mean = float(per_seed.mean())
        sd = float(per_seed.std(ddof=1)) if k > 1 else math.nan
    # square-and-add: Student-t over the K per-seed estimates ⊕ the images-only percentile
    # half-widths (each side separately); valid coverage even for K = 2 or 3
    t_half = _t_quantile(1 - (1 - level) / 2, k - 1) * sd / math.sqrt(k) if k > 1 else math.nan
    sa_lo = mean - math.hypot(t_half, mean - ilo) if k > 1 else math.nan
    sa_hi = mean + math.hypot(t_half, ihi - mean) if k > 1 else math.nan
    if bounds is not None and k > 1:
        sa_lo, sa_hi = min(max(sa_lo, bounds[0]), bounds[1]), max(min(sa_hi, bounds[1]), bounds[0])
    return {"k": k, "n": ns, "mean": mean, "ci_low": lo, "ci_high": hi,
            "sa_ci_low": sa_lo, "sa_ci_high": sa_hi,
            "images_ci_low": ilo, "images_ci_high": ihi, "per_seed": per_seed.tolist(),
            "seed_min": float(per_seed.min()), "seed_max": float(per_seed.max()), "seed_sd": sd,
            "n_boot": int(n_boot), "n_undefined": int(np.isnan(both).sum()), "replicates": both}
