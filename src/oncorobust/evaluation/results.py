"""Per-image results of the workflow's jobs: reading and checking them, one verdict per image, counts.

The readers behind every table, the health checks and the regime comparison: a per-image attack or
sensitivity CSV checked against the test images it scores (:func:`read_per_image`), an attack CSV's
key (regime, method, ε) read from its own columns and checked against its path and the job's
params (:func:`read_attack_csv`), the ``worst`` verdict merged with the sensitivity search's
confirmed flips (:func:`merge_bracket`) and one (dataset, regime, method, ε)'s accuracy with its
Wilson CI (:func:`summarize`). Torch-free except :func:`test_ids` (imports torch when called).

They live in ``evaluation`` (not ``reporting``) so that the health jobs, which use them, do not
depend on the table and figure code: editing a table replans the tables, not the health checks.
``oncorobust.reporting.tables`` re-exports them under their old import path.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from oncorobust.epsilon import same_eps
from oncorobust.errors import DataError
from oncorobust.evaluation.stats import wilson
from oncorobust.io import ATTACK_KEY_COLUMNS
from oncorobust.provenance import PROVENANCE_COLUMNS, file_fingerprint, model_file_for, model_fingerprint, verify


def summarize(df: pd.DataFrame, dataset: str, regime: str, method: str, eps: float) -> dict:
    """Accuracy (%), Wilson CI (%), flip rate (%) of one per-image attack result, and the clean
    accuracy of the same images with its CI (the ε = 0 baseline of tables and figures).

    Args:
        df: the per-image attack frame (one row per test image; ``label``, ``clean_pred``, ``adv_pred``).
        dataset: the dataset, copied into the row.
        regime: the regime (model name in the paths), copied into the row.
        method: the attack method, copied into the row.
        eps: the attack's ε in [0,1] pixel units, copied into the row.
    Returns:
        One summary row: ``dataset``, ``regime``, ``method``, ``eps``, ``n`` (images), ``accuracy``,
        ``ci_low``, ``ci_high`` (Wilson 95%), ``flip_rate`` (adversarial prediction ≠ clean prediction),
        ``clean_accuracy``, ``clean_ci_low``, ``clean_ci_high``; rates in %, NaN when ``df`` is empty.
    """
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


def read_per_image(path: str | Path, ids: list[str] | None = None, *, provenance: bool = True) -> pd.DataFrame:
    """A per-image result CSV (attack or sensitivity), checked against the test images it scores.

    Args:
        path: the CSV.
        ids: the sample IDs of the test split (``tensors/test.pt``), or None to skip the check.
            A sensitivity CSV's ``split == "test"`` rows are compared.
        provenance: check the provenance columns (:func:`check_provenance`) after the rows.

    Returns:
        The frame (``sample_id`` as text).

    Raises:
        DataError: the file is unreadable, or its rows are not exactly one per test image (a
            truncated or foreign file): naming the file, the counts and what to do.
        ProvenanceError: (a DataError) the file was edited, predates the provenance columns, or was
            made by another model or on other test tensors.
    """
    try:
        df = pd.read_csv(path, dtype={"sample_id": str, "regime": str, "method": str, **dict.fromkeys(PROVENANCE_COLUMNS, str)})
    except Exception as exc:  # noqa: BLE001 (pandas raises many kinds on a damaged file)
        raise DataError(f"{path}: unreadable ({type(exc).__name__}: {exc}); delete it and rerun the workflow"
                        " (it is rebuilt from the model and the test images)") from None
    if ids is None:
        if provenance:
            check_provenance(path, df, ids)
        return df
    rows = rows_of_test_split(df)
    got, want = list(rows.sample_id), [str(i) for i in ids]
    if len(got) != len(want) or set(got) != set(want):
        missing, extra = len(set(want) - set(got)), len(set(got) - set(want))
        raise DataError(f"{path}: {len(got)} test rows for {len(want)} test images ({missing} test images"
                        f" missing, {extra} rows of other images{', duplicated IDs' if len(set(got)) != len(got) else ''}):"
                        " the file was truncated or changed outside the workflow. Delete it and rerun"
                        " the workflow, which rebuilds it")
    if provenance:
        check_provenance(path, df, ids)
    return df


def check_provenance(path: str | Path, df: pd.DataFrame, ids: list[str] | None = None) -> None:
    """Check a per-image CSV's provenance columns (:func:`oncorobust.provenance.verify`): every row
    as written, ``data_fp`` against ``ids.fingerprint`` (when ``ids`` comes from :func:`test_ids`;
    a sensitivity CSV's test rows), ``model_fp`` against the model file beside it in the
    workflow's layout (:func:`oncorobust.provenance.model_file_for`).

    Args:
        path: the CSV.
        df: the frame read from it (for the ``split`` column).
        ids: the test split's sample IDs, or None.

    Raises:
        ProvenanceError: the file was edited, predates the provenance columns, or was made by another
            model or on other test tensors; naming the file and the line.
        DataError: the file is not UTF-8 text.
    """
    model = model_file_for(path)
    data_rows = (df.split == "test") if "split" in df.columns else None
    try:
        verify(path, model_fp=model_fingerprint(model) if model is not None else None,
               data_fp=getattr(ids, "fingerprint", None), data_rows=data_rows)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: unreadable ({exc}); delete it and rerun the workflow") from None


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

    Args:
        path: the sensitivity CSV's path.
        expect: the expected ``dataset`` and/or ``regime`` (a key left out is not compared; others are ignored).
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
    None when the path does not follow that layout.

    Args:
        path: the attack CSV's path.
    Returns:
        (regime, method, ε in [0,1] pixel units), or None when the name is not ``eps=<number>.csv``
        or the path has fewer than three parts.
    """
    path = Path(path)
    m = _ATTACK_PATH.fullmatch(path.name)
    if not m or len(path.parts) < 3:
        return None
    try:
        eps = float(m["eps"])
    except ValueError:
        return None
    return path.parent.parent.name, path.parent.name, eps


def _dataset_of(path: str | Path) -> str:
    """The dataset of ``…/{ds}/attacks/{regime}/{method}/eps={eps}.csv`` (its attack rule is
    ``attack_<ds>``), or ``<dataset>`` when the path is shorter."""
    parents = Path(path).parents
    return parents[3].name if len(parents) > 4 else "<dataset>"


def _agrees(column: str, got, want) -> bool:
    if column == "eps":
        return same_eps(got, want)
    return str(got) == str(want)


def _fmt_key(key: tuple) -> str:
    return f"regime={key[0]!r}, method={key[1]!r}, eps={float(key[2])!r}"


def read_attack_csv(path: str | Path, ids: list[str] | None = None, *,
                    expect: dict | None = None, provenance: bool = True) -> tuple[tuple[str, str, float], pd.DataFrame]:
    """A per-image attack CSV and the (regime, method, eps) it says it holds, checked.

    The key is read from the file's own columns (:data:`oncorobust.io.ATTACK_KEY_COLUMNS`, one
    value each) and compared with ``expect`` (what the workflow wired to this input, e.g. an entry
    of the rule's ``params.index``) and with the path when it follows the layout
    ``…/{regime}/{method}/eps={eps}.csv``. ε agrees as :func:`oncorobust.epsilon.same_eps` says.

    Args:
        path: the CSV (``results/{ds}/attacks/{regime}/{method}/eps={eps}.csv``).
        ids: the sample IDs of the test split, or None to skip that check (see :func:`read_per_image`).
        expect: the expected ``regime``, ``method`` and ``eps`` (other keys, e.g. ``dataset``, are
            ignored; a key left out is not compared).
        provenance: check the provenance columns after the key (:func:`check_provenance`).

    Returns:
        ((regime, method, eps), the frame with every column, the key columns included). A file with
        no rows (no test image) takes its key from ``expect``, else its path.

    Raises:
        DataError: see :func:`read_per_image`; ProvenanceError, see :func:`check_provenance`.
        AttackKeyError: the key columns are missing (written by an older oncorobust: rerun the
            attack jobs), hold several values, or disagree with ``expect`` or the path; naming
            the file and both keys.
    """
    df = read_per_image(path, ids, provenance=False)
    missing = [c for c in ATTACK_KEY_COLUMNS if c not in df.columns]
    if missing:
        raise AttackKeyError(f"{path}: no {'/'.join(missing)} column: the file was written by an older oncorobust,"
                             " whose attack CSVs did not say what they hold. Rerun the attack jobs (Snakemake"
                             " reruns them by itself since their code changed; otherwise delete the results'"
                             f" attacks/ folders or run with `--forcerun attack_{_dataset_of(path)}`)")
    path_key = attack_key_from_path(path)
    if len(df) == 0:
        given = expect or {}
        if all(k in given for k in ATTACK_KEY_COLUMNS):
            if provenance:
                check_provenance(path, df, ids)
            return (str(given["regime"]), str(given["method"]), float(given["eps"])), df
        if path_key is None:
            raise AttackKeyError(f"{path}: no rows, so no regime/method/eps to read, and neither the params nor"
                                 " the path give them")
        if provenance:
            check_provenance(path, df, ids)
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
    if provenance:
        check_provenance(path, df, ids)
    return key, df


class SampleIds(list):
    """A split's sample IDs (text, in the tensor file's order) with the tensor file's fingerprint
    (:func:`oncorobust.provenance.file_fingerprint`), which :func:`read_per_image` compares with
    each result's ``data_fp``."""

    fingerprint: str | None = None


def sample_ids(ids, path: str | Path | None) -> SampleIds:
    """``ids`` as text with the fingerprint of the tensor file they come from.

    Args:
        ids: the split's sample IDs (any values; made text).
        path: the split's tensor file (``tensors/test.pt``), or None (no fingerprint: not compared).

    Returns:
        A :class:`SampleIds`.
    """
    out = SampleIds(str(i) for i in ids)
    out.fingerprint = file_fingerprint(path) if path is not None else None
    return out


def rows_of_test_split(frame: pd.DataFrame) -> pd.DataFrame:
    """The test rows of a per-image frame: a sensitivity CSV's ``split == "test"`` rows; an attack or
    corruption CSV (no ``split`` column, test images only) as it is.

    Args:
        frame: a per-image frame, with or without a ``split`` column.
    Returns:
        ``frame`` restricted to its test rows (the frame itself when it has no ``split``).
    """
    return frame[frame.split == "test"] if "split" in frame.columns else frame


def test_ids(path: str | Path) -> SampleIds:
    """The sample IDs of a split's tensor file (``tensors/test.pt``), in order, with the file's
    fingerprint (results made on other tensors are refused by :func:`read_per_image`).

    Args:
        path: the split's tensor file (a dict with ``ids``, loaded with ``weights_only=True``).
    Returns:
        Its ``ids`` as text, in the file's order (a list).
    """
    import torch

    return sample_ids(torch.load(path, map_location="cpu", weights_only=True)["ids"], path)


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
    test = rows_of_test_split(sens)
    upper = out.sample_id.map(test.set_index("sample_id").eps_upper).astype(float)
    unflipped = out.adv_pred == out.clean_pred
    if labels == "true":
        unflipped &= out.clean_pred == out.label
    extra = unflipped & (upper <= float(eps) * (1 + 1e-9))
    other = (1 - out.clean_pred) if n_classes == 2 else -1
    out["adv_pred"] = np.where(extra, other, out.adv_pred)
    out["from_bracket"] = extra.to_numpy()
    return out
