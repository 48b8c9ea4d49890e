"""Splits, structural errors, pseudonymisation, cropping/scaling and the tensor contract."""

import numpy as np
import pandas as pd
import pytest
import torch

from oncorobust.errors import DataError
from oncorobust.data.ingest import assign_splits, check_records, check_splits, run_ingest
from oncorobust.data.privacy import Pseudonymizer
from oncorobust.data.preprocess import balance, crop_side, crop_square, run_preprocess, scale_intensity
from oncorobust.data.sources.common import MANIFEST_COLUMNS, record


def _frame(n_patients=60, per_patient=3, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for k in range(int(rng.integers(1, per_patient + 1))):
            y = int(rng.random() < 0.4)
            rows.append(record(f"p{p}-{k}", f"p{p}", y, ["benign", "malignant"][y], "x.dcm"))
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_is_patient_level_and_stratified(seed):
    df = assign_splits(_frame(seed=seed), 0.33, 0.15, seed)
    check_splits(df)  # no leakage, all classes everywhere
    assert df.groupby("patient_id").split.nunique().max() == 1
    frac = df.split.value_counts(normalize=True)
    assert 0.25 < frac["test"] < 0.42 and 0.06 < frac["val"] < 0.2
    rates = df.groupby("split").label.mean()
    assert rates.max() - rates.min() < 0.2  # stratified: similar class balance in each split


def test_split_is_deterministic_and_seeded():
    a = assign_splits(_frame(), 0.33, 0.15, 0)
    b = assign_splits(_frame(), 0.33, 0.15, 0)
    c = assign_splits(_frame(), 0.33, 0.15, 5)
    assert a.split.tolist() == b.split.tolist() and a.split.tolist() != c.split.tolist()


def test_user_split_with_leak_is_refused():
    rows = [record(f"s{i}", f"p{i // 2}", i % 2, ["benign", "malignant"][i % 2], "x.dcm",
                   split=["train", "val", "test"][(i // 2) % 3]) for i in range(24)]
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    check_splits(assign_splits(df, 0.33, 0.15, 0))  # the user's split is kept and valid
    df.loc[df.sample_id == "s1", "split"] = "test"  # p0 now in train and test
    with pytest.raises(DataError, match=r"patient\(s\) \['p0'\] appear in more than one split"):
        check_splits(assign_splits(df, 0.33, 0.15, 0))


def test_single_class_split_is_refused():
    df = assign_splits(_frame(), 0.33, 0.15, 0)
    df.loc[df.split == "val", ["label", "label_name"]] = [0, "benign"]
    with pytest.raises(DataError, match="val split has no sample of class.*malignant"):
        check_splits(df)


def test_duplicate_ids_and_single_class_are_refused():
    df = _frame()
    with pytest.raises(DataError, match="duplicate sample_id"):
        check_records(pd.concat([df, df.iloc[:1]]), "lidc")
    with pytest.raises(DataError, match="a classifier needs at least two classes"):
        check_records(df.assign(label=0, label_name="benign"), "lidc")
    with pytest.raises(DataError, match="no labelled samples"):
        check_records(df.iloc[:0], "lidc")


def test_pseudonymisation_hides_ids_but_keeps_grouping():
    df = _frame()

    def pseudonymized(salt):
        pz = Pseudonymizer(salt)
        return df.assign(patient_id=[pz.patient(v) for v in df.patient_id],
                         sample_id=[pz.sample(v) for v in df.sample_id])

    out = pseudonymized("secret")
    assert not set(out.patient_id) & set(df.patient_id)
    assert out.patient_id.str.startswith("P-").all() and out.sample_id.str.startswith("S-").all()
    assert (out.groupby("patient_id").size().sort_values().values
            == df.groupby("patient_id").size().sort_values().values).all()
    assert pseudonymized("other").patient_id.iloc[0] != out.patient_id.iloc[0]


def test_crop_pads_at_border_and_refuses_outside_roi():
    img = np.arange(100, dtype=np.float32).reshape(10, 10)
    c = crop_square(img, (5, 5), 4)
    np.testing.assert_array_equal(c, img[3:7, 3:7])
    edge = crop_square(img, (0, 0), 4)
    assert edge.shape == (4, 4) and edge[0, 0] == img.min() and edge[2, 2] == img[0, 0]
    with pytest.raises(DataError, match=r"s1: ROI centre \(row 12.0, col 3.0\) lies outside the 10x10"):
        crop_square(img, (12, 3), 4, "s1")


def test_crop_side_rules():
    assert crop_side(10.0, {"margin": 2.0, "min_px": 16}) == 20
    assert crop_side(4.0, {"margin": 2.0, "min_px": 16}) == 16
    assert crop_side(float("nan"), {"min_px": 24}) == 24
    assert crop_side(100.0, {"fixed_px": 48}) == 48


def test_intensity_scaling_known_values():
    hu = np.array([[-2000, -1350, -600], [150, 500, -1350 + 750]], np.float32)
    out = scale_intensity(hu, {"mode": "window", "window": [-1350, 150]})
    np.testing.assert_allclose(out, [[0, 0, 0.5], [1, 1, 0.5]])
    ramp = np.linspace(0, 99, 100).reshape(10, 10)
    p = scale_intensity(ramp, {"mode": "percentile", "percentiles": [10, 90]})
    assert p.min() == 0 and p.max() == 1 and np.isclose(p[5, 0], (50 - 9.9) / (89.1 - 9.9))


def test_balance_undersamples_to_smallest_class():
    y = np.array([0] * 30 + [1] * 10)
    idx = balance(np.arange(40), y, "undersample", 0)
    assert np.bincount(y[idx]).tolist() == [10, 10]
    assert (balance(np.arange(40), y, "undersample", 0) == idx).all()
    assert len(balance(np.arange(40), y, "none", 0)) == 40


def test_end_to_end_tensors_contract(demo_root, tmp_path):
    src = {"format": "lidc", "root": str(demo_root / "lidc")}
    manifest, skipped = run_ingest(src, {}, seed=0)
    tensors, stats, _ = run_preprocess(manifest, src, {"size": 24, "intensity": {"mode": "window"}}, 0)
    ids = {split: set(t["ids"]) for split, t in tensors.items()}
    assert not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    for split, t in tensors.items():
        path = tmp_path / f"{split}.pt"
        torch.save(t, path)
        loaded = torch.load(path, weights_only=True)
        x = loaded["x"]
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 24, 24) and len(loaded["ids"]) == len(x)
        assert 0 <= x.min() and x.max() <= 1 and loaded["y"].dtype == torch.int64
    assert torch.bincount(tensors["train"]["y"]).tolist()[0] == torch.bincount(tensors["train"]["y"]).tolist()[1]
    assert stats["classes"] == ["benign", "malignant"]
    assert stats["mean"][0] == pytest.approx(float(tensors["train"]["x"].mean()), rel=1e-5)


def test_corrupt_image_is_skipped_or_an_error(demo_root, tmp_path):
    import shutil

    root = tmp_path / "mri"
    shutil.copytree(demo_root / "mri", root)
    src = {"format": "manifest", "manifest": str(root / "manifest.csv")}
    manifest, _ = run_ingest(src, {}, seed=0)
    victim = root / manifest.source.iloc[0]
    victim.write_bytes(victim.read_bytes()[:-500])
    _, stats, skipped = run_preprocess(manifest, src, {"size": 16}, 0)
    assert stats["n_skipped"] == len(skipped) >= 1
    assert str(victim) in set(skipped.file) and skipped.reason.str.contains("truncated|corrupt").all()
    with pytest.raises(Exception, match=victim.name):
        run_preprocess(manifest, src, {"size": 16}, 0, on_bad_file="error")
