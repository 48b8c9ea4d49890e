"""Paper tables from the per-image attack CSVs: Table 1, Table S5 and the sanity warnings.

All accuracies are percentages with Wilson 95% CIs and n; the paper's value (from
``data/paper_values.csv``, never hard-coded here) stands beside ours where one exists.
"""

from __future__ import annotations

import json
import math
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from oncorobust.errors import DataError
from oncorobust.evaluation.stats import paired_difference, wilson
from oncorobust.io import ATTACK_KEY_COLUMNS

METHOD_ORDER = ["fgsm", "pgd", "bim"]  # the paper's Table 1 order


def paper_values() -> pd.DataFrame:
    with resources.files("oncorobust").joinpath("data/paper_values.csv").open() as fh:
        return pd.read_csv(fh)


def summarize(df: pd.DataFrame, dataset: str, regime: str, method: str, eps: float) -> dict:
    """Accuracy (%), Wilson CI (%), flip rate (%) of one per-image attack result, and the clean
    accuracy of the same images with its CI (the ε = 0 baseline of tables and figures)."""
    n = len(df)
    k = int((df.adv_pred == df.label).sum())
    k0 = int((df.clean_pred == df.label).sum())
    lo, hi = wilson(k, n)
    lo0, hi0 = wilson(k0, n)
    return {"dataset": dataset, "regime": regime, "method": method, "eps": float(eps), "n": n,
            "accuracy": 100 * k / n if n else np.nan, "ci_low": 100 * lo, "ci_high": 100 * hi,
            "flip_rate": 100 * float((df.adv_pred != df.clean_pred).mean()) if n else np.nan,
            "clean_accuracy": 100 * k0 / n if n else np.nan,
            "clean_ci_low": 100 * lo0, "clean_ci_high": 100 * hi0}


def read_per_image(path: str | Path, ids: list[str] | None = None) -> pd.DataFrame:
    """A per-image result CSV (attack or sensitivity), checked against the test images it scores.

    Args:
        path: the CSV.
        ids: the sample IDs of the test split (``tensors/test.pt``), or None to skip the check.
            A sensitivity CSV's ``split == "test"`` rows are compared.

    Returns:
        The frame (``sample_id`` as text).

    Raises:
        DataError: the file is unreadable, or its rows are not exactly one per test image (a
            truncated or foreign file): naming the file, the counts and what to do.
    """
    try:
        df = pd.read_csv(path, dtype={"sample_id": str, "regime": str, "method": str})
    except Exception as exc:  # noqa: BLE001 (pandas raises many kinds on a damaged file)
        raise DataError(f"{path}: unreadable ({type(exc).__name__}: {exc}); delete it and rerun the workflow"
                        " (it is rebuilt from the model and the test images)") from None
    if ids is None:
        return df
    rows = df[df.split == "test"] if "split" in df.columns else df
    got, want = list(rows.sample_id), [str(i) for i in ids]
    if len(got) != len(want) or set(got) != set(want):
        missing, extra = len(set(want) - set(got)), len(set(got) - set(want))
        raise DataError(f"{path}: {len(got)} test rows for {len(want)} test images ({missing} test images"
                        f" missing, {extra} rows of other images{', duplicated IDs' if len(set(got)) != len(got) else ''}):"
                        " the file was truncated or changed outside the workflow. Delete it and rerun"
                        " the workflow, which rebuilds it")
    return df


class InputKeyError(DataError):
    """A per-image result file is not the one its entry of the rule's ``params.index`` describes
    (the input list and the params are out of step, or the file was moved). Names the file."""


class AttackKeyError(InputKeyError):
    """A per-image attack CSV does not hold what the workflow wired to it: its own ``regime``,
    ``method`` or ``eps`` column disagrees with the job's params or its path (a mis-wired input),
    or the columns are missing (a file written before they existed). The message names the file."""


def pair_inputs(index: list[dict], paths: list[str], what: str) -> list[tuple[dict, str]]:
    """The entries of a rule's ``params.index`` with its input files, one to one.

    Args:
        index: the params entries (``dataset``, ``regime``...), in the input list's order.
        paths: the input files.
        what: what the files are, for the message (e.g. ``"attack CSVs"``).

    Returns:
        ``list(zip(index, paths))``.

    Raises:
        InputKeyError: the two lists differ in length (``zip`` would silently drop the tail).
    """
    index, paths = list(index), [str(p) for p in paths]
    if len(index) != len(paths):
        raise InputKeyError(f"{len(paths)} {what} but {len(index)} entries in the rule's params.index; the two"
                            " lists must match one to one: fix the wiring (workflow/rules)")
    return list(zip(index, paths))


def check_sensitivity_path(path: str | Path, expect: dict) -> None:
    """Check that a sensitivity CSV's path ``…/{dataset}/sensitivity/{regime}.csv`` names the
    ``dataset`` and ``regime`` of ``expect`` (its entry of the rule's params; the file itself
    has no such columns). A path of another layout is not checked.

    Raises:
        InputKeyError: the path names another dataset or regime, naming the file and both.
    """
    path = Path(path)
    if path.suffix != ".csv" or path.parent.name != "sensitivity" or len(path.parts) < 3:
        return
    got = {"dataset": path.parent.parent.name, "regime": path.stem}
    bad = [k for k in got if k in expect and str(expect[k]) != got[k]]
    if bad:
        raise InputKeyError(f"{path} is the sensitivity CSV of dataset={got['dataset']!r}, regime={got['regime']!r},"
                            f" but was given as {', '.join(f'{k}={expect[k]!r}' for k in bad)}: the rule's input"
                            " list and its params are not in the same order; fix the wiring (workflow/rules)")


#: ``…/{regime}/{method}/eps={eps}.csv``, the attack CSVs' path layout (``workflow/rules/common.smk``).
_ATTACK_PATH = re.compile(r"eps=(?P<eps>[^/\\]+)\.csv$")


def attack_key_from_path(path: str | Path) -> tuple[str, str, float] | None:
    """(regime, method, eps) from an attack CSV's path ``…/{regime}/{method}/eps={eps}.csv``, or
    None when the path does not follow that layout."""
    path = Path(path)
    m = _ATTACK_PATH.fullmatch(path.name)
    if not m or len(path.parts) < 3:
        return None
    try:
        eps = float(m["eps"])
    except ValueError:
        return None
    return path.parent.parent.name, path.parent.name, eps


def _agrees(column: str, got, want) -> bool:
    if column == "eps":
        return math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=1e-15)
    return str(got) == str(want)


def _fmt_key(key: tuple) -> str:
    return f"regime={key[0]!r}, method={key[1]!r}, eps={float(key[2])!r}"


def read_attack_csv(path: str | Path, ids: list[str] | None = None, *,
                    expect: dict | None = None) -> tuple[tuple[str, str, float], pd.DataFrame]:
    """A per-image attack CSV and the (regime, method, eps) it says it holds, checked.

    The key is read from the file's own columns (:data:`oncorobust.io.ATTACK_KEY_COLUMNS`, one
    value each) and compared with ``expect`` (what the workflow wired to this input, e.g. an entry
    of the rule's ``params.index``) and with the path when it follows the layout
    ``…/{regime}/{method}/eps={eps}.csv``. ε agrees within a relative 1e-9.

    Args:
        path: the CSV (``results/{ds}/attacks/{regime}/{method}/eps={eps}.csv``).
        ids: the sample IDs of the test split, or None to skip that check (see :func:`read_per_image`).
        expect: the expected ``regime``, ``method`` and ``eps`` (other keys, e.g. ``dataset``, are
            ignored; a key left out is not compared).

    Returns:
        ((regime, method, eps), the frame with every column, the key columns included). A file with
        no rows (no test image) takes its key from ``expect``, else its path.

    Raises:
        DataError: see :func:`read_per_image`.
        AttackKeyError: the key columns are missing (written by an older oncorobust: rerun the
            attack jobs), hold several values, or disagree with ``expect`` or the path; naming
            the file and both keys.
    """
    df = read_per_image(path, ids)
    missing = [c for c in ATTACK_KEY_COLUMNS if c not in df.columns]
    if missing:
        raise AttackKeyError(f"{path}: no {'/'.join(missing)} column: the file was written by an older oncorobust,"
                             " whose attack CSVs did not say what they hold. Rerun the attack jobs (Snakemake"
                             " reruns them by itself since their code changed; otherwise delete the results'"
                             " attacks/ folders or run with `--forcerun attack`)")
    path_key = attack_key_from_path(path)
    if len(df) == 0:
        given = expect or {}
        if all(k in given for k in ATTACK_KEY_COLUMNS):
            return (str(given["regime"]), str(given["method"]), float(given["eps"])), df
        if path_key is None:
            raise AttackKeyError(f"{path}: no rows, so no regime/method/eps to read, and neither the params nor"
                                 " the path give them")
        return path_key, df
    several = [c for c in ATTACK_KEY_COLUMNS if df[c].nunique(dropna=False) != 1]
    if several:
        raise AttackKeyError(f"{path}: column(s) {'/'.join(several)} hold several values (one attack result per"
                             " file: several files pasted together?); delete it and rerun the workflow")
    try:
        key = (str(df.regime.iloc[0]), str(df.method.iloc[0]), float(df.eps.iloc[0]))
    except (TypeError, ValueError):
        key = None
    if key is None or not math.isfinite(key[2]):
        raise AttackKeyError(f"{path}: eps column is not a number ({df.eps.iloc[0]!r}); delete it and rerun the"
                             " workflow")
    if expect is not None:
        given = {c: expect[c] for c in ATTACK_KEY_COLUMNS if expect.get(c) is not None}
        bad = [c for c, v in zip(ATTACK_KEY_COLUMNS, key) if c in given and not _agrees(c, v, given[c])]
        if bad:
            raise AttackKeyError(f"{path} holds {_fmt_key(key)} but was given as"
                                 f" {', '.join(f'{c}={w!r}' for c, w in given.items())} (disagreeing:"
                                 f" {'/'.join(bad)}): the rule's input list and its params.index are not in the"
                                 " same order, or the file was moved; fix the wiring (workflow/rules) or delete"
                                 " the file and rerun")
    if path_key is not None and not all(_agrees(c, a, b) for c, a, b in zip(ATTACK_KEY_COLUMNS, key, path_key)):
        raise AttackKeyError(f"{path} holds {_fmt_key(key)}, but its path says {_fmt_key(path_key)}: the file was"
                             " copied or moved by hand; delete it and rerun the workflow")
    return key, df


def test_ids(path: str | Path) -> list[str]:
    """The sample IDs of a split's tensor file (``tensors/test.pt``), in order."""
    import torch

    return [str(i) for i in torch.load(path, map_location="cpu", weights_only=True)["ids"]]


def merge_bracket(worst: pd.DataFrame, sens: pd.DataFrame, eps: float, labels: str, n_classes: int) -> pd.DataFrame:
    """One verdict per image: ``worst``'s result at ``eps`` with every image that the sensitivity
    search flipped at a confirmed ``eps_upper`` ≤ ``eps`` counted as flipped.

    The search's flips are confirmed images (re-scored one at a time) inside the same L∞ ball, so
    an image it flips at or below ε is one the worst case missed. Its adversarial class is the
    other class on two classes; on more it is unknown and recorded as −1 (wrong: the worst case).
    With ``labels: true`` only images the model classifies correctly change (the search pushes
    away from the prediction, which is then the label).

    Args:
        worst: the per-image CSV of ``worst`` at ``eps`` (sample_id, label, clean_pred, adv_pred, ...).
        sens: the sensitivity CSV of the same (dataset, regime) (sample_id, split, eps_upper).
        eps: the attack's ε (pixel units).
        labels: ``predicted`` or ``true``.
        n_classes: the model's class count.

    Returns:
        A copy of ``worst`` with ``adv_pred`` updated and a bool column ``from_bracket``.
    """
    out = worst.copy()
    test = sens[sens.split == "test"] if "split" in sens.columns else sens
    upper = out.sample_id.map(test.set_index("sample_id").eps_upper).astype(float)
    unflipped = out.adv_pred == out.clean_pred
    if labels == "true":
        unflipped &= out.clean_pred == out.label
    extra = unflipped & (upper <= float(eps) * (1 + 1e-9))
    other = (1 - out.clean_pred) if n_classes == 2 else -1
    out["adv_pred"] = np.where(extra, other, out.adv_pred)
    out["from_bracket"] = extra.to_numpy()
    return out


def paper_lookup(table: str, name: str | None, regime: str, method: str, eps: float) -> float:
    """The paper's published accuracy (%) for one cell, or NaN."""
    return _paper_lookup(paper_values(), table, name, regime, method, eps)


def _paper_lookup(paper: pd.DataFrame, table: str, name: str | None, regime: str, method: str, eps: float):
    if not name:
        return np.nan
    hit = paper[(paper.table == table) & (paper.dataset == name) & (paper.regime == regime)
                & (paper.method == method) & np.isclose(paper.eps, eps)]
    return float(hit.accuracy.iloc[0]) if len(hit) else np.nan


def read_eps_units(datasets: list[str], stats_paths: list[str]) -> dict[str, dict | None]:
    """Each dataset's ``eps_units`` from its ``tensors/stats.json`` (None where preprocessing
    recorded none), for :func:`clinical_eps` and the figures' stored-data axes."""
    return {ds: json.loads(Path(p).read_text()).get("eps_units") for ds, p in zip(datasets, stats_paths)}


def clinical_eps(eps: float, units: dict | None) -> tuple[float, str, bool]:
    """ε (pixel units) in the stored data's units: (value, text, below one stored-value step).

    ``units`` is ``stats.json``'s ``eps_units`` (see :func:`oncorobust.data.preprocess.eps_units`);
    the text is e.g. ``"24 HU"``; the flag is True when the perturbation is smaller than one
    stored value (it cannot be written back into the image the scanner produced)."""
    if not units or not units.get("per_eps"):
        return np.nan, "", False
    value = float(eps) * float(units["per_eps"])
    return value, f"{value:.3g} {units['unit']}", bool(0 < value < float(units.get("step", 1.0)))


def eps_units_markdown(eps_by_dataset: dict[str, list[float]], units: dict[str, dict]) -> str:
    """A small table: each dataset's ε grid in its stored data's units, flagged below one step."""
    lines = ["| dataset | ε (pixel units) | in the stored data | how |", "|---|---|---|---|"]
    for ds, grid in eps_by_dataset.items():
        for e in grid:
            _, text, below = clinical_eps(e, units.get(ds))
            flag = " ⚠ below one stored-value step" if below else ""
            lines.append(f"| {ds} | {e:g} | {text or '–'}{flag} | {(units.get(ds) or {}).get('how', '–')} |")
    return "\n".join(lines) + "\n"


def table1(summary: pd.DataFrame, paper_names: dict[str, str | None], labels: str,
           units: dict[str, dict] | None = None) -> pd.DataFrame:
    """Clean regime: a baseline row per dataset, then each white-box method × ε."""
    paper = paper_values()
    clean = summary[(summary.regime == "clean") & ~summary.method.str.startswith("transfer_")]
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


def table_s5(per_image: dict[tuple, pd.DataFrame], ref_eps: dict[str, float],
             paper_names: dict[str, str | None], units: dict[str, dict] | None = None) -> pd.DataFrame:
    """Clean vs adversarially trained accuracy at each dataset's reference ε, white-box and transfer.

    ``per_image`` maps (dataset, regime, method, eps) to the per-image frame. The difference is
    paired (same test images) with a Wald 95% CI.
    """
    paper = paper_values()
    rows = []
    for (ds, regime, method, eps), adv_df in per_image.items():
        if regime == "clean" or not np.isclose(eps, ref_eps.get(ds, np.nan)):
            continue
        base = method.removeprefix("transfer_")
        clean_df = per_image.get((ds, "clean", base, eps))
        if clean_df is None:
            continue
        m = clean_df.merge(adv_df, on="sample_id", suffixes=("_c", "_a"))
        right_c = m.adv_pred_c == m.label_c
        right_a = m.adv_pred_a == m.label_a
        n = len(m)
        d, lo, hi = paired_difference(int((right_a & ~right_c).sum()), int((right_c & ~right_a).sum()), n)
        rows.append({"dataset": ds, "regime": regime, "method": base,
                     "evaluation": "transfer" if method.startswith("transfer_") else "white-box",
                     "eps": eps, "eps_stored": clinical_eps(eps, (units or {}).get(ds))[1],
                     "n": n, "original": 100 * right_c.mean(), "adv_trained": 100 * right_a.mean(),
                     "difference": 100 * d, "diff_ci_low": 100 * lo, "diff_ci_high": 100 * hi,
                     "paper_original": _paper_lookup(paper, "table1", paper_names.get(ds), "clean", base, eps),
                     "paper_adv_trained": _paper_lookup(paper, "table_s5", paper_names.get(ds), regime, base, eps)})
    cols = ["dataset", "regime", "method", "evaluation", "eps", "eps_stored", "n", "original", "adv_trained",
            "difference", "diff_ci_low", "diff_ci_high", "paper_original", "paper_adv_trained"]
    return pd.DataFrame(rows, columns=cols).sort_values(["dataset", "regime", "method", "evaluation"])


def sanity_warnings(summary: pd.DataFrame, controls: set[str]) -> pd.DataFrame:
    """Warnings that point at a weak attack or a broken evaluation (not errors: small test sets)."""
    rows = []
    wb = summary[~summary.method.str.startswith("transfer_")]
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
    """Rows: baseline, then method × ε; per dataset our accuracy [95% CI] (n) and the paper's."""
    labels = t1.labels.iloc[0] if len(t1) else "predicted"
    t = t1.assign(row=[("baseline", 0.0) if m == "baseline" else (m, e) for m, e in zip(t1.method, t1.eps)])
    datasets = list(dict.fromkeys(t.dataset))
    header = ["attack", "ε"]
    for ds in datasets:
        header += [f"{ds} acc % [95% CI]", f"{ds} paper"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    order = list(dict.fromkeys(t.row))
    for method, eps in order:
        cells = [method.upper() if method != "baseline" else "Baseline", "" if method == "baseline" else f"{eps:g}"]
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
    """A plain markdown table of ``df`` (numbers formatted with ``floatfmt``)."""
    def cell(v, col):
        if isinstance(v, float):
            return "–" if np.isnan(v) else format(v, "g" if col == "eps" else floatfmt)
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v, c) for v, c in zip(row, df.columns)) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"
