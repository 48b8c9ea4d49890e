"""Evaluation health: automatic checks that the attacks behind a verdict actually worked.

An evaluation is only as good as its strongest attack. A model can look robust because its
gradients are masked (a rounding or thresholding layer, saturated logits), because the attack
took too few steps, or because of a bug. Each check below returns pass/fail with the measured
number; a failure is a visible warning in the table, the report and the log, never silent.

Checks per (dataset, regime), at the dataset's reference ε unless said otherwise:

- ``gradients``: the input gradient of the attack loss is finite and non-zero (value: % of
  images whose gradient is zero or not finite; pass ≤ 1%).
- ``deterministic``: two forward passes in eval mode give the same logits (value: max |Δ|).
- ``unbounded_attack``: APGD-margin at ε = 1 (any image reachable) flips ≥ 99% of images.
- ``iterative_vs_fgsm``: every iterative attack at least as strong as FGSM at every ε (value:
  the largest accuracy excess in points; fails only beyond the two Wilson CIs).
- ``monotone_in_eps``: accuracy (``labels: true``; with predicted labels: % of predictions kept)
  non-increasing in ε for every method (fails only beyond the CIs).
- ``pgd_convergence``: doubling PGD's steps and restarts changes robust accuracy by < 1 point.
- ``square_vs_whitebox``: the gradient-free Square attack does not flip more images than the
  white-box attacks (per image, any white-box method at that ε) beyond the paired 95% CI —
  otherwise gradients are masked.
- ``transfer_vs_whitebox`` (adversarially trained regimes): images crafted on the clean model
  do not fool the model more than white-box ones beyond the paired CI (else: masking).
- ``loss_converged``: PGD's loss still rising over the last 10% of its steps (by more than 2% of
  its whole trajectory's gain) for < 5% of the images it did not flip (otherwise: too few steps).
- ``worst_convergence``: the worst case (``worst``, the attack a card's verdict rests on) run again
  at the reference ε with every member's budget doubled (steps, Square's queries) on the first
  :data:`WORST_CHECK_IMAGES` test images flips at most max(1, 1%) of them that the configured
  budgets left unflipped (from the ``worst`` CSV at that ε; not applicable without one).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from oncorobust.epsilon import same_eps
from oncorobust.attacks.kernels import image_seeds
from oncorobust.attacks.methods import attack
from oncorobust.device import eval_mode, strict_fp32
from oncorobust.progress import meter, monitored
from oncorobust.pipeline.passes import health_passes
from oncorobust.spec import GRADIENT_FREE_METHODS, ITERATIVE_METHODS, TRANSFER_PREFIX, base_method, is_transfer
from oncorobust.evaluation.results import merge_bracket
from oncorobust.evaluation.judges import JUDGES_TEXT, judges
from oncorobust.evaluation.stats import paired_difference, wilson

COLUMNS = ["dataset", "regime", "check", "passed", "value", "threshold", "detail"]
ITERATIVE = ITERATIVE_METHODS
#: images of the worst case's convergence check (the first ones of the test split): a doubled
#: ``worst`` costs about twice the attack job's passes per image
WORST_CHECK_IMAGES = 64
#: the budget parameters doubled by the worst case's convergence check (each run's own budget: steps,
#: Square's queries; not the restarts, which would double the cost again)
BUDGET_KEYS = ("steps", "queries")



def _row(check: str, passed, value: float, threshold: str, detail: str) -> dict:
    return {"check": check, "passed": None if passed is None else bool(passed), "value": float(value),
            "threshold": threshold, "detail": detail}


def _flipped(model, adv, target) -> np.ndarray:
    with torch.no_grad():
        return (model(adv).argmax(1) != target).cpu().numpy()


def _slices(n: int, batch_size: int | None) -> list[slice]:
    """Consecutive slices of at most ``batch_size`` images (None: one slice of all ``n``)."""
    b = max(1, int(batch_size)) if batch_size else max(1, n)
    return [slice(i, min(i + b, n)) for i in range(0, n, b)]


def _attack_flipped(model, x, target, seeds, parts, method, eps, trace=None, **params) -> np.ndarray:
    """``attack`` batch by batch (``parts``: slices; per-image ``seeds``); N bools, image flipped.
    With ``trace`` (a dict), ``trace["loss"]`` receives the per-image losses of all batches."""
    dev = next((p.device for p in model.parameters()), x.device)
    flipped, losses = [], []
    for s in parts:
        xb, tb = x[s].to(dev), target[s].to(dev)
        tr = {} if trace is not None else None
        adv = attack(model, xb, tb, method, eps, seeds=seeds[s], trace=tr, **params)
        flipped.append(_flipped(model, adv, tb))
        if tr is not None:
            losses.append(tr["loss"].cpu())
    if trace is not None:
        trace["loss"] = torch.cat(losses, 1)
    return np.concatenate(flipped) if flipped else np.zeros(0, dtype=bool)


@strict_fp32()
def model_checks(model: nn.Module, x: torch.Tensor, target: torch.Tensor, ids: list[str], *, ref_eps: float,
                 pgd: dict, seed: int = 0, square_queries: int = 1000,
                 whitebox_flipped: np.ndarray | None = None, batch_size: int | None = None) -> list[dict]:
    """The checks that run the model: gradients, determinism, ε = 1, PGD convergence and steps,
    Square against the white-box attacks.

    Args:
        model: the classifier (run in eval mode; every submodule's own mode restored afterwards).
        x: N×C×H×W float32 test images in [0,1]; ``ids``: their sample IDs (per-image seeds).
            Each batch is moved to the model's device here, so ``x`` may stay on the CPU.
        target: N labels the attacks push away from (predicted or true, as configured).
        ref_eps: the reference ε (pixel units).
        pgd: the PGD parameters used for Table 1 (steps, alpha_ratio, random_start, restarts).
        seed: the run's seed.
        square_queries: queries of the Square run.
        whitebox_flipped: N bools, image flipped by any white-box attack at ``ref_eps`` (from the
            attack CSVs); None skips the Square comparison.
        batch_size: images per model call and per attack call (the workflow passes
            ``attacks.batch_size``); None: all N at once. Per-image seeds keep every check's
            result independent of it, except Square's (seeded per batch, as in the attack jobs).
    Returns:
        A list of row dicts (check, passed, value, threshold, detail).
    Raises:
        AttackError: bad images or labels, or NaN/inf logits during a check.
        AttackSanityError: an attack result outside its ε-ball or [0,1].
    """
    plan = len(x) * health_passes(pgd, square_queries if whitebox_flipped is not None else 0)
    with meter("health checks", plan, images=len(x)), eval_mode(model):
        return _model_checks(monitored(model, "the health checks"), x, target, ids, ref_eps=ref_eps,
                             pgd=pgd, seed=seed, square_queries=square_queries,
                             whitebox_flipped=whitebox_flipped, batch_size=batch_size)


def _model_checks(model, x, target, ids, *, ref_eps, pgd, seed, square_queries, whitebox_flipped,
                  batch_size) -> list[dict]:
    """The body of :func:`model_checks` (``model`` monitored, in eval mode)."""
    n = len(x)
    seeds = image_seeds(ids, n, seed)
    parts = _slices(n, batch_size)
    dev = next((p.device for p in model.parameters()), x.device)
    rows = []
    bad = []
    for s in parts:
        xr = x[s].to(dev).detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(xr), target[s].to(dev), reduction="sum")
            (g,) = torch.autograd.grad(loss, xr)
        gflat = g.flatten(1)
        bad.append(((~torch.isfinite(gflat).all(1)) | (gflat.abs().amax(1) == 0)).cpu())
    bad = torch.cat(bad) if bad else torch.zeros(0, dtype=torch.bool)
    pct = 100 * bad.float().mean().item()
    rows.append(_row("gradients", pct <= 1.0, pct, "≤ 1% of images",
                     f"{int(bad.sum())}/{n} images have a zero or non-finite input gradient"))
    diff, amax = 0.0, 0.0
    with torch.no_grad():
        for s in parts:
            xb = x[s].to(dev)
            a, b = model(xb), model(xb)
            diff, amax = max(diff, (a - b).abs().max().item()), max(amax, a.abs().max().item())
    rows.append(_row("deterministic", diff <= 1e-6 * max(1.0, amax), diff, "max |Δlogit| = 0",
                     "two forward passes in eval mode"))
    pct = 100 * _attack_flipped(model, x, target, seeds, parts, "apgd_margin", 1.0, steps=20).mean()
    rows.append(_row("unbounded_attack", pct >= 99.0, pct, "≥ 99% flipped",
                     "APGD-margin (20 steps) at ε = 1: every image can be replaced, so nearly all must flip"))
    base = {k: v for k, v in pgd.items() if k in ("steps", "alpha_ratio", "random_start", "restarts")}
    trace: dict = {}
    # the loss trace is of one restart (a restart's own trajectory); with more restarts the
    # configured attack is run in full for the convergence check (its first restart repeats)
    f_traced = _attack_flipped(model, x, target, seeds, parts, "pgd", ref_eps, trace=trace, **{**base, "restarts": 1})
    f1 = f_traced
    if int(base.get("restarts", 1)) > 1:
        f1 = _attack_flipped(model, x, target, seeds, parts, "pgd", ref_eps, **base)
    steps, restarts = int(base.get("steps", 10)), int(base.get("restarts", 1))
    f2 = _attack_flipped(model, x, target, seeds, parts, "pgd", ref_eps,
                         **{**base, "steps": 2 * steps, "restarts": 2 * restarts})
    delta = 100 * abs(f2.mean() - f1.mean())
    rows.append(_row("pgd_convergence", delta < 1.0, delta, "< 1 point",
                     f"PGD {steps} steps × {restarts} restarts flips {100 * f1.mean():.1f}%,"
                     f" {2 * steps} × {2 * restarts} flips {100 * f2.mean():.1f}% at ε = {ref_eps:g}"))
    losses = trace["loss"].numpy()  # (steps + 1) × N, iterate 0 (start) … final
    last = max(1, math.ceil(0.1 * steps))
    earlier, tail = losses[:-last].max(0), losses[-last:].max(0)
    gain = np.maximum(losses.max(0) - losses[0], 1e-6)  # the whole trajectory's improvement
    rising = ((tail - earlier) > 0.02 * gain) & ~f_traced  # unflipped by the traced restart
    pct = 100 * rising.sum() / max(1, (~f_traced).sum())
    rows.append(_row("loss_converged", pct < 5.0, pct, "< 5% of unflipped images",
                     f"PGD's loss still rising over its last {last} of {steps} steps"))
    if whitebox_flipped is not None:
        sq = _attack_flipped(model, x, target, seeds, parts, "square", ref_eps, queries=square_queries)
        wb = np.asarray(whitebox_flipped, dtype=bool)
        only_sq, only_wb = int((sq & ~wb).sum()), int((wb & ~sq).sum())
        d, lo, hi = paired_difference(only_sq, only_wb, n)
        rows.append(_row("square_vs_whitebox", not lo > 0, 100 * d, "not above 0 beyond the paired 95% CI",
                         f"Square ({square_queries} queries) flips {100 * sq.mean():.1f}%, white-box"
                         f" {100 * wb.mean():.1f}% ({only_sq} images only Square flips; CI of the difference"
                         f" [{100 * lo:.1f}, {100 * hi:.1f}] points)"))
    return rows


def doubled_budgets(members: list[str], member_params: dict[str, dict] | None) -> dict[str, dict]:
    """Every member's parameters (its defaults updated by the config's) with each budget doubled.

    Args:
        members: ``worst``'s members.
        member_params: the config's parameters per member (``attacks.<member>``), or None.
    Returns:
        member → its full parameters, :data:`BUDGET_KEYS` (``steps``, ``queries``) doubled where it has them.
    """
    from oncorobust.attacks.methods import method_params

    out = {}
    for m in members:
        p = method_params(m, (member_params or {}).get(m))
        out[m] = {k: (2 * v if k in BUDGET_KEYS and isinstance(v, int) and not isinstance(v, bool) else v)
                  for k, v in p.items()}
    return out


@strict_fp32()
def worst_convergence(model: nn.Module, x: torch.Tensor, target: torch.Tensor, ids: list[str],
                      flipped: np.ndarray, *, eps: float, members: list[str], member_params: dict | None,
                      seed: int = 0, batch_size: int | None = None) -> dict:
    """Does the worst case flip more images with every member's budget doubled?

    Args:
        model: the classifier (run in eval mode; its own modes restored afterwards).
        x: N×C×H×W float32 images in [0,1] (the first test images; N ≤ :data:`WORST_CHECK_IMAGES`
            is the caller's choice); ``ids``: their sample IDs (per-image seeds, as in the attack job).
        target: N labels pushed away from (predicted or true, as the attack job's).
        flipped: N bools, the image flipped by ``worst`` at the configured budgets (its CSV at ``eps``).
        eps: the reference ε (pixel units).
        members, member_params: ``worst``'s members and the config's parameters per member.
        seed: the run's seed.
        batch_size: images per attack call (None: all at once).
    Returns:
        One row (check ``worst_convergence``): passed when the doubled run flips at most
        max(1, 1% of N) images the configured run left unflipped; value: those images in % of N.
    Raises:
        AttackError, AttackSanityError: as :func:`oncorobust.attacks.methods.attack`.
    """
    n = len(x)
    doubled = doubled_budgets(members, member_params)
    with eval_mode(model):
        f2 = _attack_flipped(monitored(model, "the worst case's convergence check"), x, target,
                             image_seeds(ids, n, seed), _slices(n, batch_size), "worst", eps,
                             members=list(members), member_params=doubled)
    f1 = np.asarray(flipped, dtype=bool)
    only = int((f2 & ~f1).sum())
    allowed = max(1, math.floor(0.01 * n))
    budgets = ", ".join(f"{m} " + "/".join(f"{k} {doubled[m][k]}" for k in BUDGET_KEYS if k in doubled[m])
                        for m in members if any(k in doubled[m] for k in BUDGET_KEYS)) or "none has steps or queries"
    return _row("worst_convergence", only <= allowed, 100 * only / max(1, n), f"≤ {allowed} of {n} images",
                f"worst flips {100 * f1.mean():.1f}% of the first {n} test images at ε = {eps:g}, with doubled"
                f" budgets ({budgets}) {100 * (f1 | f2).mean():.1f}%; {only} images only the doubled budgets flip")


def whitebox_flipped(per_image: dict[tuple[str, float], pd.DataFrame], eps: float, labels: str,
                     ids: list[str]) -> np.ndarray | None:
    """Per image of ``ids``: flipped by any white-box gradient attack at ``eps`` (Square and
    transfer attacks excluded), from the attack CSVs; None when there is none at that ε.

    Flipped means: the prediction left the clean prediction (``labels: predicted``) or the
    true label (``labels: true``).

    Args:
        per_image: (method, eps) → per-image attack CSV (``sample_id``, ``adv_pred``, ``clean_pred``, ``label``).
        eps: the ε to compare at ([0,1] pixel units; matched with :func:`oncorobust.epsilon.same_eps`).
        labels: ``predicted`` (compare with ``clean_pred``); anything else compares with ``label``.
        ids: the sample IDs, in the order of the result.
    Returns:
        N bools, one per ``ids`` (an ID missing from every CSV counts as not flipped), or None.
    """
    cols = []
    for (method, e), df in per_image.items():
        if not same_eps(e, eps) or is_transfer(method) or method in GRADIENT_FREE_METHODS:
            continue
        d = df.set_index("sample_id")
        cols.append(d.adv_pred != (d.clean_pred if labels == "predicted" else d.label))
    if not cols:
        return None
    return pd.concat(cols, axis=1).any(axis=1).reindex(ids).fillna(False).to_numpy(dtype=bool)


def worst_vs_bracket(per_image: dict[tuple[str, float], pd.DataFrame], sens: pd.DataFrame | None, labels: str) -> dict | None:
    """Check ``worst_vs_bracket``: images the sensitivity search flips at a confirmed ε ≤ an ε of
    the ``worst`` attack, which ``worst`` left unflipped there (Table 1 counts them as flipped,
    :func:`oncorobust.evaluation.results.merge_bracket`). Passes when they are ≤ 1% of the images at every ε.

    Args:
        per_image: (method, eps) → per-image attack CSV of one (dataset, regime).
        sens: its sensitivity CSV (None: not available).
        labels: ``predicted`` or ``true``.

    Returns:
        A row dict, or None without a ``worst`` result or a sensitivity CSV.
    """
    if sens is None:
        return None
    worst = {e: df for (m, e), df in per_image.items() if m == "worst"}
    if not worst:
        return None
    most, where, n = 0, "", 0
    for e in sorted(worst):
        df = worst[e]
        missed = int(merge_bracket(df, sens, e, labels, 2).from_bracket.sum())
        n = len(df)
        if missed > most or not where:
            most, where = max(most, missed), f"ε = {e:g}"
    share = 100 * most / n if n else 0.0
    return _row("worst_vs_bracket", share <= 1.0, share, f"≤ 1% of images ({n // 100} of {n})",
                f"worst missed {most}/{n} images ({share:.2f}%) at {where} that the sensitivity search flips at"
                " or below that ε (Table 1 counts them as flipped)" if most else
                "the sensitivity search flips no image at or below an ε at which worst did not")


def table_checks(summary: pd.DataFrame, per_image: dict[tuple[str, float], pd.DataFrame], labels: str) -> list[dict]:
    """The checks computed from the attack results of one (dataset, regime).

    Args:
        summary: its rows of ``attack_summary.csv`` (method, eps, n, accuracy, ci_low, ci_high,
            flip_rate), white-box and transfer.
        per_image: (method, eps) → per-image attack CSV (for the paired transfer comparison).
        labels: ``predicted`` or ``true``.
    Returns:
        A list of row dicts.
    """
    rows = []
    wb = summary[~summary.method.str.startswith(TRANSFER_PREFIX)]
    fgsm = wb[wb.method == "fgsm"].set_index("eps")
    worst, where = -math.inf, ""
    for r in wb[wb.method.isin(ITERATIVE)].itertuples():
        if r.eps in fgsm.index:
            excess = r.accuracy - fgsm.loc[r.eps, "accuracy"]
            beyond = r.ci_low > fgsm.loc[r.eps, "ci_high"]
            if beyond or excess > worst:
                worst, where = excess, f"{r.method} at ε = {r.eps:g}"
            if beyond:
                rows.append(_row("iterative_vs_fgsm", False, excess, "not above FGSM beyond the CIs",
                                 f"{r.method} {r.accuracy:.1f}% vs FGSM {fgsm.loc[r.eps, 'accuracy']:.1f}% at ε = {r.eps:g}"))
    if not any(r["check"] == "iterative_vs_fgsm" for r in rows):
        rows.append(_row("iterative_vs_fgsm", True if len(fgsm) and math.isfinite(worst) else None,
                         worst if math.isfinite(worst) else math.nan, "not above FGSM beyond the CIs",
                         f"largest excess over FGSM: {where}" if where else "no FGSM / iterative pair to compare"))
    rise, detail, failed = -math.inf, "one ε only", False
    what = "accuracy" if labels == "true" else "predictions kept"
    for method, m in wb.groupby("method"):
        m = m.sort_values("eps")
        if labels == "true":
            val, lo, hi = m.accuracy.to_numpy(), m.ci_low.to_numpy(), m.ci_high.to_numpy()
        else:
            kept = np.rint((100 - m.flip_rate.to_numpy()) * m.n.to_numpy() / 100).astype(int)
            ci = np.array([wilson(k, n) for k, n in zip(kept, m.n.to_numpy())]) * 100
            val, lo, hi = 100 * kept / m.n.to_numpy(), ci[:, 0], ci[:, 1]
        for j in range(1, len(m)):
            if val[j] - val[j - 1] > rise:
                rise, detail = val[j] - val[j - 1], f"{method}: {what} {val[j - 1]:.1f}% → {val[j]:.1f}% from ε = {m.eps.iloc[j - 1]:g} to {m.eps.iloc[j]:g}"
            failed |= bool(lo[j] > hi[j - 1])
    rows.append(_row("monotone_in_eps", None if not math.isfinite(rise) else not failed,
                     rise if math.isfinite(rise) else math.nan, f"{what} not rising with ε beyond the CIs",
                     (f"largest rise: {detail}" if rise > 0 else f"never rises; smallest fall: {detail}")
                     if math.isfinite(rise) else detail))
    tr = summary[summary.method.str.startswith(TRANSFER_PREFIX)]
    if len(tr):
        gap, detail, failed = -math.inf, "", False
        for r in tr.itertuples():
            base = base_method(r.method)
            a, b = per_image.get((r.method, r.eps)), per_image.get((base, r.eps))
            if a is None or b is None:
                continue
            m = a.merge(b, on="sample_id", suffixes=("_t", "_w"))
            right_t, right_w = m.adv_pred_t == m.label_t, m.adv_pred_w == m.label_w
            d, lo, hi = paired_difference(int((right_w & ~right_t).sum()), int((right_t & ~right_w).sum()), len(m))
            if 100 * d > gap:
                gap, detail = 100 * d, f"{base} at ε = {r.eps:g}: white-box {100 * right_w.mean():.1f}%, transfer {100 * right_t.mean():.1f}%"
            failed |= bool(lo > 0)
        if math.isfinite(gap):
            rows.append(_row("transfer_vs_whitebox", not failed, gap,
                             "white-box accuracy not above transfer beyond the paired CI",
                             f"largest gap: {detail}"))
    return rows


def markdown(health: pd.DataFrame) -> str:
    """The health table as markdown: one row per check, ✓ / ✗ / – per (dataset, regime).

    Args:
        health: rows with :data:`COLUMNS` (dataset, regime, check, passed (bool or None), value, threshold, detail).
    Returns:
        A markdown table followed by a line counting passed and failed checks.
    """
    lines = ["| dataset | regime | check | judges | result | value | threshold | detail |",
             "|---|---|---|---|---|---|---|---|"]
    for r in health.itertuples():
        mark = "–" if r.passed is None or (isinstance(r.passed, float) and math.isnan(r.passed)) else ("✓ pass" if r.passed else "✗ **FAIL**")
        value = "–" if not isinstance(r.value, (int, float)) or math.isnan(r.value) else f"{r.value:.3g}"
        lines.append(f"| {r.dataset} | {r.regime} | {r.check} | {JUDGES_TEXT[judges(r.check)]} | {mark} | {value}"
                     f" | {r.threshold} | {r.detail} |")
    fails = health[health.passed == True].shape[0], health[health.passed == False].shape[0]  # noqa: E712
    return ("\n".join(lines) + f"\n\n{fails[0]} checks passed, {fails[1]} failed. A failed check means the"
            " attack results it judges (the judges column) may overstate that model's robustness; see the detail"
            " column. A check that judges only Table 1's BIM/PGD rows says nothing against the worst case or the"
            " per-image search, whose attacks have their own budgets.\n")
