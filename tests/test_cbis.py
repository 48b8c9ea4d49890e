"""CBIS-DDSM options: which abnormalities (mass / calc / both) and the official train/test split."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from oncorobust.errors import DataError
from oncorobust.data.ingest import run_ingest
from oncorobust.data.sources import IngestResult, cbis_ddsm


def _table(root):
    return pd.concat([cbis_ddsm.read_case_csv(p) for p in sorted(root.glob("*case_description*.csv"))],
                     ignore_index=True)


def _sample_ids(df):
    return {f"{p.split('/')[0]}_{a}" for p, a in zip(df.image_file_path, df.abnormality_id)}


@pytest.mark.parametrize("kind", ["mass", "calc", "both"])
def test_abnormality_selects_the_csvs_rows(demo_root, kind):
    root = demo_root / "cbis"
    table = _table(root)
    res = IngestResult()
    cbis_ddsm.ingest({"root": str(root), "abnormality": kind}, res)
    want = table if kind == "both" else table[table.csv.str.startswith(kind)]
    assert 0 < len(want) and (kind == "both" or len(want) < len(table))
    assert {r["sample_id"] for r in res.records} == _sample_ids(want)
    if kind != "both":  # the case folders say Mass-... / Calc-...
        assert all(r["sample_id"].lower().startswith(kind) for r in res.records)
    assert {r["split"] for r in res.records} == {""}  # no official split unless asked


def test_default_is_both(demo_root):
    a, b = IngestResult(), IngestResult()
    cbis_ddsm.ingest({"root": str(demo_root / "cbis")}, a)
    cbis_ddsm.ingest({"root": str(demo_root / "cbis"), "abnormality": "both"}, b)
    assert a.records == b.records


def test_unknown_abnormality_and_missing_kind_are_errors(demo_root, tmp_path):
    with pytest.raises(DataError, match="source.abnormality = 'masses'"):
        cbis_ddsm.ingest({"root": str(demo_root / "cbis"), "abnormality": "masses"}, IngestResult())
    root = tmp_path / "cbis"
    shutil.copytree(demo_root / "cbis", root)
    for p in root.glob("calc_case_description_*.csv"):
        p.unlink()
    with pytest.raises(DataError, match="no calc_case_description_"):
        cbis_ddsm.ingest({"root": str(root), "abnormality": "calc"}, IngestResult())


def test_official_split_keeps_the_test_csvs_as_test_set(demo_root):
    root = demo_root / "cbis"
    table = _table(root)
    src = {"format": "cbis_ddsm", "root": str(root), "official_split": True}
    manifest, skipped = run_ingest(src, {"test_fraction": 0.5, "val_fraction": 0.2}, seed=0)
    assert skipped.empty
    test_ids = _sample_ids(table[table.csv.str.endswith("_test_set.csv")])
    assert set(manifest.sample_id[manifest.split == "test"]) == test_ids  # test_fraction is ignored
    train_rows = manifest[manifest.split != "test"]
    assert set(train_rows.sample_id) == _sample_ids(table[table.csv.str.endswith("_train_set.csv")])
    assert set(train_rows.split) == {"train", "val"}  # the training CSVs split by patient
    assert manifest.groupby("patient_id").split.nunique().max() == 1
    # without the option, the test split is drawn by patient from all rows
    manifest2, _ = run_ingest({**src, "official_split": False}, {"test_fraction": 0.5, "val_fraction": 0.2}, seed=0)
    assert set(manifest2.sample_id[manifest2.split == "test"]) != test_ids


def test_official_split_drops_training_rows_of_test_patients(demo_root, tmp_path):
    root = tmp_path / "cbis"
    shutil.copytree(demo_root / "cbis", root)
    train = root / "mass_case_description_train_set.csv"
    test = root / "calc_case_description_test_set.csv"
    train_rows = cbis_ddsm.read_case_csv(train)
    patient = cbis_ddsm.read_case_csv(test).patient_id.iloc[0]
    # give one training row of the mass CSV to a patient of the calc test CSV
    text = train.read_bytes()
    victim = train_rows.iloc[0]
    assert f"\r\n{victim.patient_id},".encode() in text
    train.write_bytes(text.replace(f"\r\n{victim.patient_id},".encode(), f"\r\n{patient},".encode(), 1))
    res = IngestResult()
    cbis_ddsm.ingest({"root": str(root), "official_split": True}, res)
    (skip,) = res.skipped
    assert skip["file"] == train.name and f"patient {patient} also has rows in the official test set" in skip["reason"]
    assert skip["sample_id"] == f"{victim.image_file_path.split('/')[0]}_{victim.abnormality_id}"
    assert skip["sample_id"] not in {r["sample_id"] for r in res.records}
    assert {r["split"] for r in res.records if r["patient_id"] == patient} == {"test"}
