"""Robustness curves and one-number summaries from the per-image flipping ε.

Each test image has a confirmed flipping ε (``eps_upper`` of the sensitivity CSV; ``inf`` when
nothing flipped it up to ``eps_max``). The fraction of images whose prediction survives every
perturbation of size ε is then a continuous curve, 1 − ECDF(eps_upper)(ε) — what ART and secml
call a security evaluation curve — and accuracy under attack (true labels) is the fraction of
correctly classified images that survive. Its quantiles summarise a model in one number:

- ε₅₀: the ε at which half of the test images have flipped (the median of ``eps_upper``);
- ε₁₀: the ε at which 10% have flipped (the 10th percentile).

Both come with percentile-bootstrap 95% CIs over images (seeded); the ratio of a medical set's
ε₅₀ to the control's has a CI from the two independent bootstraps. A quantile that lies beyond
``eps_max`` (too few images flipped) is reported as ``inf`` ("> eps_max"). Because ``eps_upper``
is an upper bound on each image's true flipping ε, so are the curves' fractions and ε₅₀.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd

from oncorobust.evaluation.paired import two_level_bootstrap
from oncorobust.spec import split_replicate_name

QUANTILES = {"eps50": 0.5, "eps10": 0.1}


def curve(eps_upper: np.ndarray, correct: np.ndarray, grid: np.ndarray) -> pd.DataFrame:
    """Fractions (%) of images unchanged and accurate under every perturbation of size ε.

    Args:
        eps_upper: per image, the confirmed flipping ε (pixel units; inf = never flipped).
        correct: per image, whether the clean prediction is right.
        grid: the ε values (pixel units) at which to evaluate.
    Returns:
        DataFrame with columns eps, unchanged (%), accuracy (%).
    """
    e = np.asarray(eps_upper, dtype=float)[None, :]
    g = np.asarray(grid, dtype=float)[:, None]
    survive = e > g
    return pd.DataFrame({"eps": grid, "unchanged": 100 * survive.mean(1),
                         "accuracy": 100 * (survive & np.asarray(correct, bool)[None, :]).mean(1)})


def quantile(eps_upper: np.ndarray, q: float) -> float:
    """The ε by which a fraction ``q`` of the images have flipped (lower empirical quantile);
    inf when fewer than that fraction flipped at all.

    Args:
        eps_upper: per image, the confirmed flipping ε ([0,1] pixel units; inf = never flipped).
        q: the fraction of images, in [0,1] (0.5 for ε₅₀, 0.1 for ε₁₀).
    Returns:
        The ε (pixel units), inf if it lies beyond the flipped images, NaN when there are no images.
    """
    e = np.sort(np.asarray(eps_upper, dtype=float))
    if not len(e):
        return math.nan
    k = max(int(math.ceil(q * len(e))) - 1, 0)
    return float(e[k])


def bootstrap(eps_upper: np.ndarray, q: float, *, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap replicates (resampling images) of :func:`quantile`.

    Args:
        eps_upper: per image, the confirmed flipping ε ([0,1] pixel units; inf = never flipped); non-empty.
        q: the fraction of images, in [0,1].
        n_boot: number of bootstrap resamples.
        seed: seed of the numpy generator that draws the resamples.
    Returns:
        Float array of shape (n_boot,): the quantile of each resample (may contain inf).
    """
    e = np.asarray(eps_upper, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(e), size=(n_boot, len(e)))
    s = np.sort(e[idx], axis=1)
    k = max(int(math.ceil(q * len(e))) - 1, 0)
    return s[:, k]


def ci(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (inf-aware).

    Args:
        replicates: 1-D array of bootstrap replicates (may contain inf).
        level: coverage of the interval, in (0, 1).
    Returns:
        (low, high): the lower (1 − level)/2 and upper 1 − (1 − level)/2 empirical quantiles.
    """
    a = (1 - level) / 2
    return float(np.quantile(replicates, a, method="lower")), float(np.quantile(replicates, 1 - a, method="higher"))


def summary(frames: dict[tuple[str, str], pd.DataFrame], controls: set[str], *, n_boot: int = 2000,
            seed: int = 0, paper_eps50: dict[str, float] | None = None,
            units: dict[str, dict] | None = None) -> pd.DataFrame:
    """ε₅₀ and ε₁₀ with bootstrap CIs per (dataset, regime), and each medical set's ε₅₀ over the
    control's (same regime; the first control when several).

    Args:
        frames: (dataset, regime) → the test rows of its sensitivity CSV (``eps_upper``).
        controls: the control datasets (MNIST/CIFAR-10 or their stand-ins).
        n_boot, seed: bootstrap replicates and seed.
        paper_eps50: dataset → the paper's ε at which accuracy halves (from its Table 1), if any.
        units: dataset → ``stats.json``'s ``eps_units`` (ε₅₀ in the stored data's units).
    Returns:
        One row per (dataset, regime).
    """
    rows, boots = [], {}
    for (ds, regime), f in frames.items():
        e = f.eps_upper.to_numpy(dtype=float)
        row = {"dataset": ds, "regime": regime, "control": ds in controls, "n": len(e),
               "eps_max_flipped": float(np.isfinite(e).mean() * 100)}
        for name, q in QUANTILES.items():
            b = bootstrap(e, q, n_boot=n_boot, seed=seed)
            boots[(ds, regime, name)] = b
            lo, hi = ci(b)
            row.update({name: quantile(e, q), f"{name}_ci_low": lo, f"{name}_ci_high": hi})
        per = ((units or {}).get(ds) or {}).get("per_eps")
        row["eps50_stored"] = row["eps50"] * per if per else math.nan
        row["stored_unit"] = ((units or {}).get(ds) or {}).get("unit", "")
        row["paper_eps50"] = (paper_eps50 or {}).get(ds, math.nan)
        rows.append(row)
    out = pd.DataFrame(rows)
    ratio, rlo, rhi, ref = [], [], [], []
    for r in out.itertuples():
        ctrl = next((c for (c, reg) in frames if c in controls and reg == r.regime), None)
        if ctrl is None or r.dataset in controls:
            ratio.append(math.nan), rlo.append(math.nan), rhi.append(math.nan), ref.append("")
            continue
        c = out[(out.dataset == ctrl) & (out.regime == r.regime)].iloc[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            rb = boots[(r.dataset, r.regime, "eps50")] / boots[(ctrl, r.regime, "eps50")]
            ratio.append(r.eps50 / c.eps50 if c.eps50 > 0 else math.nan)
        rb = rb[~np.isnan(rb)]
        lo, hi = ci(rb) if len(rb) else (math.nan, math.nan)
        rlo.append(lo), rhi.append(hi), ref.append(ctrl)
    return out.assign(ratio_to_control=ratio, ratio_ci_low=rlo, ratio_ci_high=rhi, control_dataset=ref)


def paper_eps50(paper: pd.DataFrame, name: str | None, method: str = "pgd") -> float:
    """The ε at which the paper's Table 1 accuracy (``method``) falls to half its baseline, by
    linear interpolation between its grid values; inf when it never does, NaN without values.

    Args:
        paper: the paper's numbers, columns ``table``, ``dataset``, ``regime``, ``method``, ``eps``, ``accuracy``.
        name: the dataset's name in the paper; None or empty gives NaN.
        method: the attack whose clean-regime Table 1 rows are interpolated (its ``method`` value).
    Returns:
        The ε (the paper's units), interpolated from (0, baseline) through the method's grid.
    """
    if not name:
        return math.nan
    t = paper[(paper.table == "table1") & (paper.dataset == name) & (paper.regime == "clean")]
    base = t[t.method == "baseline"].accuracy
    m = t[t.method == method].sort_values("eps")
    if not len(base) or not len(m):
        return math.nan
    half = float(base.iloc[0]) / 2
    eps, acc = np.r_[0.0, m.eps.to_numpy()], np.r_[float(base.iloc[0]), m.accuracy.to_numpy()]
    for j in range(1, len(eps)):
        if acc[j] <= half:
            return float(eps[j - 1] + (acc[j - 1] - half) / (acc[j - 1] - acc[j]) * (eps[j] - eps[j - 1]))
    return math.inf


def markdown(s: pd.DataFrame) -> str:
    """The summary table as markdown (ε in [0,1] pixel units, stored-data units beside).

    Args:
        s: the frame of :func:`summary`.
    Returns:
        A markdown table, one line per row of ``s``, followed by a paragraph explaining the columns.
    """
    def f(v):
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else ("> eps_max" if v == math.inf else f"{v:.3g}")

    lines = ["| dataset | regime | n | ε₅₀ [95% CI] | ε₅₀ in stored data | ε₁₀ [95% CI] | ε₅₀ / control's [95% CI] | paper's ε at half accuracy |",
             "|---|---|---|---|---|---|---|---|"]
    for r in s.itertuples():
        ctrl = " (control)" if r.control else ""
        ratio = "–" if not r.control_dataset else f"{f(r.ratio_to_control)} [{f(r.ratio_ci_low)}, {f(r.ratio_ci_high)}] vs {r.control_dataset}"
        stored = "–" if math.isnan(r.eps50_stored) else f"{r.eps50_stored:.3g} {r.stored_unit}"
        lines.append(f"| {r.dataset}{ctrl} | {r.regime} | {r.n} | {f(r.eps50)} [{f(r.eps50_ci_low)}, {f(r.eps50_ci_high)}]"
                     f" | {stored} | {f(r.eps10)} [{f(r.eps10_ci_low)}, {f(r.eps10_ci_high)}] | {ratio} |"
                     f" {'not reached in its grid' if r.paper_eps50 == math.inf else f(r.paper_eps50)} |")
    return ("\n".join(lines) + "\n\nε₅₀ / ε₁₀: the perturbation size (L∞, [0,1] pixel units) at which half / a tenth of the"
            " test images change their prediction, from the per-image flipping ε (an upper bound: a stronger attack can"
            " only lower them). CIs: percentile bootstrap over images (2000 resamples). The paper's value is the ε at"
            " which its Table 1 PGD accuracy falls to half the baseline (linear interpolation).\n")


# ------------------------------------------------------------------------------ seed replicates

#: the columns of :func:`seed_summary`, per quantile stem (eps50, eps10)
SEED_SUFFIXES = ("", "_ci_low", "_ci_high", "_sa_ci_low", "_sa_ci_high", "_images_ci_low", "_images_ci_high",
                 "_seed_min", "_seed_max")


def _seed_stream(seed: int, dataset: str) -> int:
    """A bootstrap seed of its own for ``dataset``'s replicates, so that the two datasets of a
    ratio are resampled independently (their seed draws would coincide under one seed)."""
    return int(seed) + zlib.crc32(dataset.encode()) % 100_000


def seed_summary(frames: dict[tuple[str, str], pd.DataFrame], controls: set[str], *, n_boot: int = 2000,
                 seed: int = 0) -> pd.DataFrame:
    """ε₅₀ and ε₁₀ per (dataset, regime) over its seed replicates, and each medical set's ε₅₀ over
    the control's, with intervals that cover the training seed as well as the test images.

    The models of one regime's K seeds are named ``R``, ``R-r2`` … ``R-rK``
    (:func:`oncorobust.spec.split_replicate_name`). With K = 1 a row repeats :func:`summary`'s
    numbers (bootstrap over images, same seed). With K > 1 the value is the mean over the seeds of
    each seed's quantile; ``*_ci_*`` is the two-level bootstrap (seeds, then images), ``*_sa_ci_*``
    the small-K interval (Student t over seeds ⊕ images; prefer it for K ≤ 5), ``*_images_ci_*``
    the images-only interval and ``*_seed_min/max`` the per-seed range
    (:func:`oncorobust.evaluation.paired.two_level_bootstrap`). The ratio to the control is the
    ratio of the two across-seed means, its interval the percentile interval of the ratio of the two
    datasets' independent two-level bootstrap replicates; ``ratio_seed_min/max`` range over the
    ratios of replicate k to the control's replicate k.

    Args:
        frames: (dataset, model name) → the test rows of its sensitivity CSV (``eps_upper``,
            [0,1] pixel units, inf = never flipped), every replicate of every regime.
        controls: the control datasets (MNIST/CIFAR-10 or their stand-ins).
        n_boot: bootstrap replicates.
        seed: the bootstrap seed (the config's ``seed``).
    Returns:
        One row per (dataset, base regime): ``dataset``, ``regime``, ``control``, ``replicates``,
        ``n``, ``interval`` (``images`` or ``seeds+images``), then for ``eps50`` and ``eps10`` the
        columns of :data:`SEED_SUFFIXES`, then ``ratio_to_control``, ``ratio_ci_low``,
        ``ratio_ci_high``, ``ratio_seed_min``, ``ratio_seed_max``, ``control_dataset``.
    """
    groups: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    for (ds, name), f in frames.items():
        base, k = split_replicate_name(name)
        groups.setdefault((ds, base), {})[k] = f.eps_upper.to_numpy(dtype=float)
    rows, boots, per_seed = [], {}, {}
    for (ds, base), reps in groups.items():
        eps = [reps[k] for k in sorted(reps)]
        row = {"dataset": ds, "regime": base, "control": ds in controls, "replicates": len(eps), "n": len(eps[0]),
               "interval": "images" if len(eps) == 1 else "seeds+images"}
        for name, q in QUANTILES.items():
            if len(eps) == 1:
                b = bootstrap(eps[0], q, n_boot=n_boot, seed=seed)
                lo, hi = ci(b)
                v = quantile(eps[0], q)
                row.update({name: v, f"{name}_ci_low": lo, f"{name}_ci_high": hi, f"{name}_sa_ci_low": math.nan,
                            f"{name}_sa_ci_high": math.nan, f"{name}_images_ci_low": lo,
                            f"{name}_images_ci_high": hi, f"{name}_seed_min": v, f"{name}_seed_max": v})
                boots[(ds, base, name)], per_seed[(ds, base, name)] = b, [v]
                continue
            # the same seed as the regime table (tables/regimes.csv): the same ε₅₀ intervals
            res = two_level_bootstrap(eps, lambda e, q=q: quantile(e, q), n_boot=n_boot, seed=seed,
                                      bounds=(0.0, math.inf))
            row.update({name: res["mean"], **{f"{name}{s}": res[s.lstrip("_")] for s in SEED_SUFFIXES if s}})
            boots[(ds, base, name)], per_seed[(ds, base, name)] = res["replicates"], res["per_seed"]
        rows.append(row)
    out = pd.DataFrame(rows)
    ratio_cols = {c: [] for c in ("ratio_to_control", "ratio_ci_low", "ratio_ci_high", "ratio_seed_min",
                                  "ratio_seed_max", "control_dataset")}
    for r in out.itertuples():
        ctrl = next((c for (c, b) in groups if c in controls and b == r.regime), None)
        if ctrl is None or r.dataset in controls:
            for c in ratio_cols:
                ratio_cols[c].append("" if c == "control_dataset" else math.nan)
            continue
        c_mean = float(out[(out.dataset == ctrl) & (out.regime == r.regime)].eps50.iloc[0])
        den = boots[(ctrl, r.regime, "eps50")]
        if r.replicates > 1 or len(groups[(ctrl, r.regime)]) > 1:
            # seeds: the control's replicates drawn independently of this dataset's (own stream)
            ctrl_eps = [groups[(ctrl, r.regime)][k] for k in sorted(groups[(ctrl, r.regime)])]
            den = two_level_bootstrap(ctrl_eps, lambda e: quantile(e, 0.5), n_boot=n_boot,
                                      seed=_seed_stream(seed, ctrl))["replicates"]
        with np.errstate(invalid="ignore", divide="ignore"):
            rb = boots[(r.dataset, r.regime, "eps50")] / den
            seeds = [a / b for a, b in zip(per_seed[(r.dataset, r.regime, "eps50")],
                                           per_seed[(ctrl, r.regime, "eps50")]) if b > 0]
        rb = rb[~np.isnan(rb)]
        lo, hi = ci(rb) if len(rb) else (math.nan, math.nan)
        for c, v in zip(ratio_cols, (r.eps50 / c_mean if c_mean > 0 else math.nan, lo, hi,
                                     min(seeds) if seeds else math.nan, max(seeds) if seeds else math.nan, ctrl)):
            ratio_cols[c].append(v)
    return out.assign(**ratio_cols)


def seed_markdown(s: pd.DataFrame) -> str:
    """:func:`seed_summary` as markdown, with a note saying which interval is which.

    Args:
        s: a frame of :func:`seed_summary`.
    Returns:
        The markdown table and its note.
    """
    def f(v):
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else ("> eps_max" if v == math.inf else f"{v:.3g}")

    def cell(r, stem):
        text = f"{f(getattr(r, stem))} [{f(getattr(r, stem + '_ci_low'))}, {f(getattr(r, stem + '_ci_high'))}]"
        if r.replicates > 1:
            text += (f"; t⊕img [{f(getattr(r, stem + '_sa_ci_low'))}, {f(getattr(r, stem + '_sa_ci_high'))}]"
                     f"; seeds {f(getattr(r, stem + '_seed_min'))} to {f(getattr(r, stem + '_seed_max'))}")
        return text

    lines = ["| dataset | regime | seeds | n | ε₅₀ | ε₁₀ | ε₅₀ / control's |", "|---|---|---|---|---|---|---|"]
    for r in s.itertuples():
        ratio = "–" if not r.control_dataset else (
            f"{f(r.ratio_to_control)} [{f(r.ratio_ci_low)}, {f(r.ratio_ci_high)}]"
            + (f"; seeds {f(r.ratio_seed_min)} to {f(r.ratio_seed_max)}" if r.replicates > 1 else "")
            + f" vs {r.control_dataset}")
        lines.append(f"| {r.dataset}{' (control)' if r.control else ''} | {r.regime} | {r.replicates} | {r.n}"
                     f" | {cell(r, 'eps50')} | {cell(r, 'eps10')} | {ratio} |")
    return ("\n".join(lines) + "\n\nAcross the training seeds of each regime: the mean over the seeds of each seed's"
            " ε₅₀ / ε₁₀ (L∞, [0,1] pixel units). Intervals (95%): a two-level bootstrap (seeds, then images),"
            " \"t⊕img\" the small-K interval (Student t over the per-seed values combined with the images'"
            " interval; prefer it for 5 seeds or fewer), \"seeds\" the range of the per-seed values. The ratio to"
            " the control is the ratio of the two means; its interval comes from the two datasets' independent"
            " bootstraps, its seed range from replicate k against the control's replicate k.\n")
