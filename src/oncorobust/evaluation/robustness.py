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

import numpy as np
import pandas as pd

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
    inf when fewer than that fraction flipped at all."""
    e = np.sort(np.asarray(eps_upper, dtype=float))
    if not len(e):
        return math.nan
    k = max(int(math.ceil(q * len(e))) - 1, 0)
    return float(e[k])


def bootstrap(eps_upper: np.ndarray, q: float, *, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap replicates (resampling images) of :func:`quantile`."""
    e = np.asarray(eps_upper, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(e), size=(n_boot, len(e)))
    s = np.sort(e[idx], axis=1)
    k = max(int(math.ceil(q * len(e))) - 1, 0)
    return s[:, k]


def ci(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (inf-aware)."""
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
    linear interpolation between its grid values; inf when it never does, NaN without values."""
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
    """The summary table as markdown (ε in [0,1] pixel units, stored-data units beside)."""
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
