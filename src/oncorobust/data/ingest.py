"""Ingest: run a source adapter, check the records, split by patient, optionally pseudonymise.

Output contract (``results/{ds}/manifest.csv``): one row per lesion/image with
``sample_id, patient_id, label, label_name, split, source, frame, roi_row, roi_col, roi_size_px``;
no patient appears in two splits; every split holds every class.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from oncorobust.checks import ON_BAD_FILE, check_choice, check_fraction
from oncorobust.errors import DataError, OncorobustError
from oncorobust.data.privacy import Pseudonymizer, Scrubber, enabled, load_salt, protect_ingest
from oncorobust.data.sources import ADAPTERS, ARRAY_FORMATS, MANIFEST_COLUMNS, IngestResult, source_root

log = logging.getLogger("oncorobust.data.ingest")
SPLITS = ("train", "val", "test")


def run_ingest(source: dict, split: dict, seed: int, privacy: dict | None = None,
               on_bad_file: str = "skip", *, scrubber: Scrubber | None = None,
               pseudonymizer: Pseudonymizer | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the source named by ``source["format"]``; return (manifest, skipped) data frames.

    Args:
        source: the dataset's source config.
        split: the dataset's ``split`` config (``test_fraction``, ``val_fraction``).
        seed: seed of the split.
        privacy: the ``privacy`` config: with ``pseudonymize_ids`` the returned frames carry
            pseudonyms only (key from ``privacy.load_salt``; the workflow instead passes no
            ``privacy`` and calls ``privacy.protect_ingest`` itself, to keep the private mapping).
        on_bad_file: ``skip`` (list unusable inputs in the skipped frame) or ``error``.
        scrubber, pseudonymizer: when given, the scrubber learns the pseudonyms of every record
            and skipped input as soon as the adapter has read them (so that log records and
            errors can be scrubbed).

    Returns:
        (manifest, skipped).

    Raises:
        ConfigError: an unknown ``on_bad_file`` or a split fraction outside (0, 1).
        DataError: an unknown format, no usable samples, leakage, a split without a class, or
            (``on_bad_file: error``) any skipped input. An error raised while the adapter reads
            the source carries the inputs listed so far as ``exc.skipped`` (the skipped.csv
            frame), so that the caller can write skipped.csv before stopping.
    """
    check_choice(on_bad_file, ON_BAD_FILE, "on_bad_file")
    test_fraction = check_fraction(split.get("test_fraction", 1 / 3), "split.test_fraction")
    val_fraction = check_fraction(split.get("val_fraction", 0.15), "split.val_fraction")
    fmt = source.get("format")
    if fmt not in ADAPTERS:
        raise DataError(f"source.format {fmt!r} is unknown; choose one of {sorted(ADAPTERS)}")
    result = IngestResult()
    try:
        ADAPTERS[fmt](source, result)
    except OncorobustError as exc:
        # the adapter stopped (e.g. a class folder whose every file was skipped): the inputs it had
        # listed go with the error, for the caller to write to skipped.csv
        exc.skipped = skipped_frame(result)
        raise
    finally:
        if scrubber is not None and pseudonymizer is not None:
            root = None if fmt in ARRAY_FORMATS else source_root(source)
            scrubber.learn_records(pseudonymizer, result.records, result.skipped + result.ignored, root)
    bad = pd.DataFrame(result.skipped, columns=["file", "sample_id", "reason"])
    if on_bad_file == "error" and len(bad):
        first = bad.iloc[0]
        raise DataError(f"{len(bad)} input(s) could not be used; first: {first.file}: {first.reason}."
                        " Fix or remove them, or set on_bad_file: skip to list them in skipped.csv")
    skipped = skipped_frame(result)
    df = pd.DataFrame(result.records, columns=MANIFEST_COLUMNS)
    check_records(df, fmt)
    df = assign_splits(df, test_fraction, val_fraction, seed)
    check_splits(df)
    if enabled(privacy):
        root = None if fmt in ARRAY_FORMATS else source_root(source)
        df, skipped, _, _ = protect_ingest(df, skipped, Pseudonymizer(load_salt(privacy)), root, scrubber)
    log.info("ingest: %d samples, %d patients; per split and class:\n%s", len(df),
             df.patient_id.nunique(), pd.crosstab(df.split, df.label_name).to_string())
    if len(result.skipped):
        log.warning("ingest: %d input(s) skipped (see skipped.csv)", len(result.skipped))
    if len(result.ignored):
        log.info("ingest: %d file(s)/folder(s) that are not data (hidden/system files, not images) not"
                 " read; listed in skipped.csv", len(result.ignored))
    return df, skipped


def skipped_frame(result: IngestResult) -> pd.DataFrame:
    """ingest's skipped.csv frame: the skipped inputs, then the files that are not data.

    Args:
        result: the adapter's result (``skipped`` and ``ignored``).

    Returns:
        Columns ``stage`` (``ingest``), ``file``, ``sample_id``, ``reason``: one row per skipped
        input (a bad file) and per ignored one (hidden/system file, not an image...).
    """
    skipped = pd.DataFrame(result.skipped + result.ignored, columns=["file", "sample_id", "reason"])
    skipped.insert(0, "stage", "ingest")
    return skipped


def check_records(df: pd.DataFrame, fmt: str) -> None:
    """Refuse an unusable set of adapter records.

    Args:
        df: the records (:data:`MANIFEST_COLUMNS`).
        fmt: the source format (named in the message).

    Raises:
        DataError: no records, a duplicate ``sample_id``, or fewer than two labels.
    """
    if df.empty:
        raise DataError(f"the {fmt} source yielded no labelled samples: check source.root and the"
                        " label rule, and read skipped.csv for files that could not be used")
    dup = df.sample_id[df.sample_id.duplicated()].unique()
    if len(dup):
        raise DataError(f"duplicate sample_id(s) {list(dup[:5])}: every sample needs its own ID")
    if df.label.nunique() < 2:
        raise DataError(f"all {len(df)} samples have the label {df.label_name.iloc[0]!r}:"
                        " a classifier needs at least two classes")


def _fold_split(idx: np.ndarray, y: np.ndarray, groups: np.ndarray, fraction: float,
                seed: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (rest, held-out ≈ fraction) by group, stratified by ``y``; ``key`` is
    the config key of ``fraction`` (named in the message)."""
    n_splits = max(2, int(round(1 / fraction)))
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise DataError(f"only {n_groups} patients: too few for {key} = {fraction:.2f} (it needs at"
                        f" least {n_splits}); add data or raise {key}")
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    rest, held = next(sgkf.split(idx, y, groups))
    return idx[rest], idx[held]


def assign_splits(df: pd.DataFrame, test_fraction: float, val_fraction: float, seed: int) -> pd.DataFrame:
    """Patient-level stratified train/val/test split.

    Rows whose ``split`` is already set (official test parts, or a user's manifest) keep it; if
    no row has ``test``, ``test_fraction`` of the patients become test; ``val_fraction`` of the
    remaining training patients become validation. Uses scikit-learn's StratifiedGroupKFold.

    Args:
        df: the records (``patient_id``, ``label``, ``split``: empty, ``train``, ``val`` or ``test``).
        test_fraction: fraction of the patients held out for testing, in (0, 1).
        val_fraction: fraction of the remaining patients for validation, in (0, 1).
        seed: seed of the test split (``seed + 1`` for validation).

    Returns:
        A copy of ``df`` with ``split`` set on every row.

    Raises:
        ConfigError: a fraction outside (0, 1) (``split.test_fraction`` / ``split.val_fraction``).
        DataError: unknown split values, a partial user split, or too few patients.
    """
    test_fraction = check_fraction(test_fraction, "split.test_fraction")
    val_fraction = check_fraction(val_fraction, "split.val_fraction")
    df = df.copy()
    given = df.split.fillna("").astype(str).str.strip().str.lower()
    bad = sorted(set(given) - {"", *SPLITS})
    if bad:
        raise DataError(f"unknown split value(s) {bad}: use train, val or test")
    df["split"] = given
    if (given == "").all() or ((given == "test").any() and not (given.isin(["train", "val"])).any()):
        idx = np.flatnonzero(given == "")
        if not (given == "test").any():
            idx, test = _fold_split(idx, df.label.values[idx], df.patient_id.values[idx], test_fraction, seed,
                                    "split.test_fraction")
            df.loc[df.index[test], "split"] = "test"
        train, val = _fold_split(idx, df.label.values[idx], df.patient_id.values[idx], val_fraction, seed + 1,
                                 "split.val_fraction")
        df.loc[df.index[train], "split"] = "train"
        df.loc[df.index[val], "split"] = "val"
    elif (given == "").any():
        raise DataError(f"{int((given == '').sum())} row(s) have no split while others do:"
                        " give every row a split, or none")
    return df


def check_splits(df: pd.DataFrame) -> None:
    """No patient in two splits; every split present and holding every class.

    Args:
        df: the split manifest (``patient_id``, ``split``, ``label_name``).

    Raises:
        DataError: a patient in two splits, an empty split, or a split missing a class.
    """
    per_patient = df.groupby("patient_id").split.nunique()
    leaked = per_patient[per_patient > 1].index.tolist()
    if leaked:
        raise DataError(f"patient(s) {leaked[:5]} appear in more than one split: a patient's samples"
                        " must all be in train, val or test")
    classes = set(df.label_name)
    for split in SPLITS:
        part = df[df.split == split]
        if part.empty:
            raise DataError(f"the {split} split is empty: more patients are needed, or change"
                            " split.test_fraction / split.val_fraction")
        missing = classes - set(part.label_name)
        if missing:
            raise DataError(f"the {split} split has no sample of class(es) {sorted(missing)}"
                            f" ({len(part)} samples): a single-class split cannot be evaluated;"
                            " add data or change split.* or seed")


