"""Issue #11: bad input never gives a silent wrong answer.

Each test feeds one kind of bad (or minimal) input and asserts either the correct result or an
OncorobustError subclass whose message names the file or config key. Tiny data only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from oncorobust.evaluation import deferral
from oncorobust.reporting import figures
from oncorobust.reporting import tables
from oncorobust.config import check_config, validate_config
from oncorobust.data.dicom import read_dicom, write_dicom
from oncorobust.errors import ConfigError, DataError, DicomError, ModelError, OncorobustError
from oncorobust.data.ingest import assign_splits, run_ingest
from oncorobust.logs import step_logging
from oncorobust.models.checkpoints import CheckpointError, read_state_dict, state_digest
from oncorobust.models.loading import load_model
from oncorobust.data.preprocess import run_preprocess, select_frame
from oncorobust.data.sources import manifest
from oncorobust.data.sources.common import IngestResult
from oncorobust.evaluation.results import summarize
from oncorobust.training.train import run_training

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
MR = dict(modality="MR", patient_id="p", study_uid="1.2", series_uid="1.2.3")


# ------------------------------------------------------------- 1. figures/tables, any subset


def _per_image(rng, n=30, acc=0.6):
    label = rng.integers(0, 2, n)
    return pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "label": label, "clean_pred": label,
                         "adv_pred": np.where(rng.random(n) < acc, label, 1 - label)})


def _minimal(rng, methods=("pgd",), regimes=("clean",)):
    """One dataset, no control, one ε; white-box results of ``regimes`` × ``methods``."""
    per_image = {("ct", r, m, 0.01): _per_image(rng) for r in regimes for m in methods}
    summary = pd.DataFrame([summarize(df, *key) for key, df in per_image.items()])
    return per_image, summary


def _texts(fig):
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_fig3_without_adversarial_regime_is_a_placeholder(tmp_path, rng):
    _, summary = _minimal(rng)
    fig = figures.fig3_adv_training(summary, set(), stem=tmp_path / "fig3")
    assert "No adversarially trained regime configured" in _texts(fig)
    assert (tmp_path / "fig3.png").stat().st_size > 0 and (tmp_path / "fig3.pdf").stat().st_size > 0


def test_fig3_draws_only_the_methods_that_exist(tmp_path, rng):
    _, summary = _minimal(rng, methods=("bim",), regimes=("clean", "adv_pgd"))
    fig = figures.fig3_adv_training(summary, set(), stem=tmp_path / "fig3")  # default methods fgsm, pgd
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"clean · BIM", "adv_pgd · BIM"}


def test_fig2_and_tables_with_one_dataset_one_eps_only_pgd(tmp_path, rng):
    per_image, summary = _minimal(rng)
    fig = figures.fig2_accuracy_vs_eps(summary, set(), tables.paper_values(), {"ct": None},
                                       stem=tmp_path / "fig2")
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["ct"]
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"PGD"}
    t1 = tables.table1(summary, {"ct": None}, "predicted")
    assert list(t1.method) == ["baseline", "pgd"]
    assert t1.accuracy.iloc[1] == pytest.approx(summary.accuracy.iloc[0])
    md = tables.table1_markdown(t1)
    assert "| PGD | 0.01 |" in md and "ct n=30" in md
    s5 = tables.table_s5(per_image, {"ct": 0.01}, {"ct": None})
    assert s5.empty and "adv_trained" in s5.columns  # no adversarial regime: no row, same columns
    assert tables.dataframe_markdown(s5).count("\n") == 2
    warnings = tables.sanity_warnings(summary, set())
    assert list(warnings.columns) == ["dataset", "regime", "method", "eps", "warning"]
    # a control with the only method: the "attack too weak" check still runs
    weak = tables.sanity_warnings(summary.assign(accuracy=50.0), {"ct"})
    assert list(weak.method) == ["pgd"] and "too weak" in weak.warning.iloc[0]


def _sensitivity(n_val=6, n_test=6):
    n = n_val + n_test
    return pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "split": ["val"] * n_val + ["test"] * n_test,
                         "label": [0, 1] * (n // 2), "clean_pred": [0, 1] * (n // 2),
                         "correct": [True, False] * (n // 2), "min_flip_eps": np.linspace(0.001, 0.012, n),
                         "confidence": np.linspace(0.5, 1.0, n)})


def test_deferral_and_fig4_minimal_inputs(tmp_path):
    sens = _sensitivity()
    rows = deferral.table2_rows(sens, "ct", "clean", 0.2)
    assert [r["n_test"] for r in rows] == [6, 6] and rows[0]["acc_before"] == pytest.approx(50.0)
    curves = deferral.deferral_curves(sens[sens.split == "test"], fractions=[0.0])
    auc = deferral.curve_auc(curves).set_index("policy").auc
    assert auc.to_dict() == {"sensitivity": 50.0, "confidence": 50.0, "random": 50.0}  # one fraction
    c = deferral.deferral_curves(sens[sens.split == "test"]).assign(dataset="ct", regime="clean")
    fig = figures.fig4_deferral(c, stem=tmp_path / "fig4")
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["ct"]
    fig = figures.fig4_deferral(c, regime="adv_pgd", stem=tmp_path / "fig4_adv")  # no such regime
    assert "No deferral curve" in _texts(fig) and (tmp_path / "fig4_adv.png").exists()


def test_deferral_empty_split_is_a_data_error():
    sens = _sensitivity(n_val=0)
    with pytest.raises(DataError, match=r"ct/clean validation split has no rows"):
        deferral.table2_rows(sens, "ct", "clean", 0.2)


def test_fig1_one_dataset(tmp_path):
    ex = {"dataset": "ct", "eps": 0.01, "clean": np.zeros((1, 8, 8)), "adv": np.full((1, 8, 8), 0.01),
          "classes": ["benign", "malignant"], "clean_prob": [0.7, 0.3], "adv_prob": [0.4, 0.6]}
    fig = figures.fig1_examples([ex], stem=tmp_path / "fig1")
    assert len(fig.axes) == 3 and (tmp_path / "fig1.png").exists()


# ------------------------------------------------------------- 2. manifest: frames, mask size


def _multiframe(path: Path, n_frames=5, shape=(12, 10)) -> np.ndarray:
    frames = np.stack([np.full(shape, 100 * (i + 1), np.uint16) for i in range(n_frames)])
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames = shape[0], shape[1], n_frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = frames.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return frames


def _manifest(tmp_path, rows, header="patient_id,sample_id,path,label,roi_row,roi_col,roi_slice"):
    (tmp_path / "m.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return {"manifest": str(tmp_path / "m.csv")}


def test_manifest_roi_slice_is_the_frame_of_a_multiframe_file(tmp_path):
    frames = _multiframe(tmp_path / "mf.dcm")
    res = IngestResult()
    manifest.ingest(_manifest(tmp_path, ["p1,s1,mf.dcm,benign,5,5,3"]), res)
    assert res.records[0]["frame"] == 3
    image = select_frame(read_dicom(tmp_path / "mf.dcm"), res.records[0]["frame"], "s1")
    np.testing.assert_array_equal(image, frames[3])  # frame 3, not frame 0
    with pytest.raises(DataError, match="holds 5 frames and the manifest gives no frame index"):
        select_frame(read_dicom(tmp_path / "mf.dcm"), -1, "s1")


def test_preprocess_crops_the_manifest_frame(tmp_path):
    frames = _multiframe(tmp_path / "mf.dcm", n_frames=6)
    rows = [f"p{i},s{i},mf.dcm,{i % 2},5,5,{i},{split}"
            for i, split in enumerate(["train", "train", "val", "val", "test", "test"])]
    src = _manifest(tmp_path, rows, header="patient_id,sample_id,path,label,roi_row,roi_col,roi_slice,split")
    res = IngestResult()
    manifest.ingest(src, res)
    records = pd.DataFrame(res.records)
    prep = {"size": 4, "crop": {"fixed_px": 4}, "intensity": {"mode": "window", "window": [0, 1000]},
            "balance": "none"}
    tensors, _, skipped = run_preprocess(records, {**src, "format": "manifest"}, prep, 0)
    assert skipped.empty
    for split, t in tensors.items():
        for sid, x in zip(t["ids"], t["x"]):
            k = int(sid[1:])
            assert torch.allclose(x, torch.full_like(x, frames[k, 0, 0] / 1000)), (split, sid)


def test_manifest_roi_slice_outside_the_frames_is_refused(tmp_path):
    _multiframe(tmp_path / "mf.dcm")
    with pytest.raises(DataError, match=r"m\.csv:2: roi_slice 7 outside the 5 frames of .*mf\.dcm"):
        manifest.ingest(_manifest(tmp_path, ["p1,s1,mf.dcm,benign,5,5,7"]), IngestResult())
    write_dicom(tmp_path / "one.dcm", np.zeros((8, 8), np.uint16), **MR)
    with pytest.raises(DataError, match=r"m\.csv:2: roi_slice 2 given, but .*one\.dcm holds a single image"):
        manifest.ingest(_manifest(tmp_path, ["p1,s1,one.dcm,benign,5,5,2"]), IngestResult())


def test_manifest_mask_of_another_size_is_skipped_with_the_reason(tmp_path):
    write_dicom(tmp_path / "img.dcm", np.zeros((96, 96), np.uint16), **MR)
    mask = np.zeros((48, 48), np.uint16)
    mask[10:20, 30:40] = 1
    write_dicom(tmp_path / "mask.dcm", mask, **MR)
    good = np.zeros((96, 96), np.uint16)
    good[10:20, 30:40] = 1
    write_dicom(tmp_path / "good.dcm", good, **MR)
    res = IngestResult()
    manifest.ingest(_manifest(tmp_path, ["p1,s1,img.dcm,benign,,,mask.dcm", "p2,s2,img.dcm,malignant,,,good.dcm"],
                              header="patient_id,sample_id,path,label,roi_row,roi_col,mask_path"), res)
    assert [r["sample_id"] for r in res.records] == ["s2"]
    assert res.records[0]["roi_row"] == pytest.approx(14.5)
    (skip,) = res.skipped
    assert skip["sample_id"] == "s1" and skip["file"].endswith("mask.dcm")
    assert "48x48" in skip["reason"] and "96x96" in skip["reason"]


# ------------------------------------------------------------- 7. manifest CSV reading


@pytest.mark.parametrize("content, expect", [
    (b"", r"m\.csv: the manifest is empty \(0 bytes\)"),
    ("patient_id,sample_id,path,label,roi_row,roi_col\np1,Léa-1,a.dcm,benign,5,5\n".encode("latin-1"),
     r"m\.csv: not UTF-8 \(byte 0xe9 on line 2.*iconv"),
    # (semicolons, as a spreadsheet writes them, are read: tests/test_sweep3_data.py)
    (b"patient_id\tsample_id\tpath\tlabel\troi_row\troi_col\np1\ts1\ta.dcm\tbenign\t5\t5\n",
     r"m\.csv: the columns are separated by tabs"),
])
def test_unreadable_manifest_csv_names_the_file(tmp_path, content, expect):
    (tmp_path / "m.csv").write_bytes(content)
    with pytest.raises(DataError, match=expect):
        manifest.ingest({"manifest": str(tmp_path / "m.csv")}, IngestResult())


def test_utf8_manifest_with_bom_and_accents_is_read(tmp_path):
    write_dicom(tmp_path / "a.dcm", np.zeros((8, 8), np.uint16), **MR)
    (tmp_path / "m.csv").write_text("\ufeffpatient_id,sample_id,path,label,roi_row,roi_col\np1,Léa-1,a.dcm,benign,5,5\n",
                                    encoding="utf-8")
    res = IngestResult()
    manifest.ingest({"manifest": str(tmp_path / "m.csv")}, res)
    assert res.records[0]["sample_id"] == "Léa-1"


# ------------------------------------------------------------- 4 + 6. checkpoints


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A model file written by run_training (tiny data, one epoch)."""
    tmp = tmp_path_factory.mktemp("ck")
    gen = torch.Generator().manual_seed(0)
    paths = {}
    for split in ("train", "val"):
        y = torch.arange(16) % 2
        paths[split] = tmp / f"{split}.pt"
        torch.save({"x": torch.rand(16, 1, 8, 8, generator=gen), "y": y}, paths[split])
    stats = {"size": 8, "channels": 1, "classes": ["benign", "malignant"], "mean": [0.5], "std": [0.3]}
    out = tmp / "clean.pt"
    run_training(paths, stats, regime="clean", model_cfg={"arch": "vgg_small", "width": 4},
                 train_cfg={"batch_size": 8, "epochs": 1, "lr": 0.01, "augment": {}}, adv_cfg=None,
                 seed=0, device="cpu", out_model=out, progress=False)
    return out


def test_checkpoint_stores_the_digest_of_its_tensors(checkpoint):
    ck = torch.load(checkpoint, weights_only=True)
    assert ck["meta"]["sha256"] == state_digest(ck["state_dict"])
    assert not load_model(checkpoint).training


def _flip_tensor_bytes(src: Path, dst: Path) -> None:
    """Flip 8 bytes inside the largest tensor's storage of a torch zip file."""
    import struct
    import zipfile

    data = bytearray(src.read_bytes())
    info = max((i for i in zipfile.ZipFile(src).infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    for j in range(start, start + 8):
        data[j] ^= 0xFF
    dst.write_bytes(bytes(data))


def test_damaged_weights_are_refused(checkpoint, tmp_path):
    bad = tmp_path / "damaged.pt"
    _flip_tensor_bytes(checkpoint, bad)
    torch.load(bad, weights_only=True)  # torch itself does not notice
    with pytest.raises(CheckpointError, match=r"damaged\.pt: the weights do not match the SHA-256"):
        load_model(bad)


def test_checkpoint_without_digest_loads_with_a_warning(checkpoint, tmp_path, caplog):
    ck = torch.load(checkpoint, weights_only=True)
    del ck["meta"]["sha256"]
    torch.save(ck, tmp_path / "old.pt")
    with caplog.at_level(logging.WARNING, logger="oncorobust.models"):
        load_model(tmp_path / "old.pt")
    assert "old.pt has no tensor digest" in caplog.text


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("kind, reason", [
    ("empty", "the file is empty"),
    ("truncated", "truncated, or not a torch file"),
    ("text", "truncated, or not a torch file"),
    ("pickle", "Python objects other than tensors"),
    ("foreign", "expected a dict with 'state_dict' and 'meta'"),
])
def test_unreadable_checkpoint_is_one_clear_error(checkpoint, tmp_path, kind, reason):
    path = tmp_path / f"{kind}.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(checkpoint.read_bytes()[:5000])
    elif kind == "text":
        path.write_text("hello, I am not a model")
    elif kind == "pickle":
        torch.save({"state_dict": {}, "meta": _Evil()}, path)
    else:
        torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    msg = str(info.value)
    assert msg.startswith(f"{path} is not a checkpoint this project wrote") and reason in msg
    assert "retrain" in msg and "weights_only" not in msg
    assert isinstance(info.value, ModelError) and isinstance(info.value, OncorobustError)


def test_state_dict_that_does_not_fit_lists_the_keys(checkpoint, tmp_path):
    ck = torch.load(checkpoint, weights_only=True)
    sd = ck["state_dict"]
    del sd["head.7.bias"]
    sd["extra.weight"] = torch.zeros(1)
    sd["head.2.weight"] = torch.zeros(3, 3)
    ck["meta"]["sha256"] = state_digest(sd)
    torch.save(ck, tmp_path / "misfit.pt")
    with pytest.raises(CheckpointError, match=r"misfit\.pt: the stored weights do not fit") as info:
        load_model(tmp_path / "misfit.pt")
    msg = str(info.value)
    assert "missing keys: head.7.bias" in msg and "unexpected keys: extra.weight" in msg
    assert "head.2.weight (3, 3) !=" in msg


def test_checkpoint_error_is_one_line_in_the_step_log(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"")
    log = tmp_path / "step.log"
    with pytest.raises(SystemExit) as info:
        with step_logging(str(log), "attack"):
            load_model(tmp_path / "bad.pt")
    assert info.value.code == 1
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and "CheckpointError: " in lines[0] and "bad.pt" in lines[0]
    for handler in logging.getLogger().handlers[:]:  # step_logging configured the root logger
        handler.close()
        logging.getLogger().removeHandler(handler)


# ------------------------------------------------------------- 5 + 9. check_config


def _config(**dataset) -> dict:
    entry = {"source": {"format": "digits"}, "preprocess": {"size": 16, "intensity": {"mode": "none"}},
             "model": {"arch": "vgg_small"}, "train": {"batch_size": 8, "epochs": 1, "lr": 0.01}}
    for path, value in dataset.items():
        node = entry
        *parents, leaf = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return {"results": "results", "seed": 0, "datasets": {"ct": entry}}


def test_absolute_results_outside_the_working_directory_is_refused(tmp_path):
    work, elsewhere = tmp_path / "work", tmp_path / "shared" / "results"
    work.mkdir()
    cfg = _config()
    cfg["results"] = str(elsewhere)
    with pytest.raises(ConfigError, match=r"results = .*shared/results lies outside the working directory") as info:
        check_config(cfg, workdir=work)
    assert "--directory" in str(info.value) and "relative" in str(info.value)
    cfg["results"] = str(work / "results")  # absolute but inside: covered by the lock
    check_config(cfg, workdir=work)
    cfg["results"] = "results"
    check_config(cfg, workdir=work)


@pytest.mark.parametrize("key, value, expect", [
    ("sensitivity__tol", 0.02, r"datasets\.ct\.sensitivity\.tol = 0\.02 is not smaller than sensitivity\.eps_max"),
    ("split__test_fraction", 0, r"datasets\.ct\.split\.test_fraction = 0 must lie strictly between 0 and 1"),
    ("split__val_fraction", 1.5, r"datasets\.ct\.split\.val_fraction = 1\.5 must lie"),
    ("preprocess__intensity__window", [150, -1350], r"datasets\.ct\.preprocess\.intensity\.window = \[150, -1350\]"),
    ("preprocess__intensity__percentiles", [99, 1], r"datasets\.ct\.preprocess\.intensity\.percentiles"),
    ("model__arch", "vgg16", r"datasets\.ct\.preprocess\.size = 16: model\.arch vgg16 needs at least 32 px"),
    ("model__pretrained", "imagenet", r"datasets\.ct\.model\.pretrained = 'imagenet': vgg_small has no"),
    ("attack__methods", [], r"datasets\.ct\.attack\.methods is empty"),
    ("source__classes", ["benign", "Benign"], r"datasets\.ct\.source\.classes .*\['benign'\] listed twice"),
    ("source__label", {"malignant_above": 3, "benign_below": 4},
     r"datasets\.ct\.source\.label\.benign_below = 4 is above label\.malignant_above = 3"),
])
def test_cross_key_constraints_name_the_key(key, value, expect):
    cfg = _config(**{key: value})
    with pytest.raises(ConfigError, match=expect):
        check_config(cfg, workdir=".")


def test_negative_seed_is_refused():
    cfg = _config()
    cfg["seed"] = -1
    with pytest.raises(ConfigError, match=r"seed = -1: give a non-negative integer"):
        check_config(cfg)
    check_config(_config(sensitivity={"tol": 1e-5, "eps_max": 0.02}))  # a sane config passes


def test_demo_and_paper_configs_pass_every_check():
    import yaml

    for name in ("config.yaml", "paper.yaml"):
        cfg = yaml.safe_load((REPO / "config" / name).read_text())
        validate_config(cfg, SCHEMA)
        check_config(cfg, workdir=REPO)


# ------------------------------------------------------------- 10. public functions validate


def _lesions(n_patients=12):
    return pd.DataFrame({"sample_id": [f"s{i}" for i in range(n_patients)],
                         "patient_id": [f"p{i}" for i in range(n_patients)],
                         "label": [i % 2 for i in range(n_patients)],
                         "label_name": [["benign", "malignant"][i % 2] for i in range(n_patients)],
                         "split": ""})


def test_run_ingest_and_preprocess_validate_their_arguments():
    src = {"format": "digits"}
    with pytest.raises(ConfigError, match=r"on_bad_file = 'bogus' is not valid: choose one of \['skip', 'error'\]"):
        run_ingest(src, {}, 0, on_bad_file="bogus")
    with pytest.raises(ConfigError, match=r"split\.test_fraction = 0 must lie strictly between 0 and 1"):
        run_ingest(src, {"test_fraction": 0}, 0)
    with pytest.raises(ConfigError, match=r"split\.test_fraction = 0"):
        assign_splits(_lesions(), 0, 0.15, 0)
    prep = {"size": 8}
    with pytest.raises(ConfigError, match=r"on_bad_file = 'bogus'"):
        run_preprocess(_lesions(), src, prep, 0, on_bad_file="bogus")
    with pytest.raises(ConfigError, match=r"preprocess\.balance = 'oversample'"):
        run_preprocess(_lesions(), src, {**prep, "balance": "oversample"}, 0)
    with pytest.raises(ConfigError, match=r"preprocess\.intensity\.mode = 'minmax'"):
        run_preprocess(_lesions(), src, {**prep, "intensity": {"mode": "minmax"}}, 0)


# ------------------------------------------------------------- 11. weak messages


def test_config_typo_is_one_line_with_the_closest_key():
    cfg = _config()
    cfg["on_bad_files"] = "skip"
    cfg["datasets"]["ct"]["preprocess"]["sise"] = 32
    del cfg["datasets"]["ct"]["train"]["lr"]
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, SCHEMA)
    lines = str(info.value).splitlines()
    assert len(lines) == 4, lines  # a heading and one line per violation, no schema dump
    assert "(top level): Additional properties are not allowed ('on_bad_files' was unexpected);" \
           " 'on_bad_files': did you mean 'on_bad_file'?" in lines[1]
    assert "datasets.ct.preprocess:" in lines[2] and "did you mean 'size'?" in lines[2]
    assert "datasets.ct.train: 'lr' is a required property" in lines[3]


def test_config_wrong_type_names_the_key():
    cfg = _config()
    cfg["datasets"]["ct"]["attack"] = {"eps": "0.1"}
    with pytest.raises(ConfigError, match=r"datasets\.ct\.attack\.eps = '0\.1': '0\.1' is not of type 'array'"):
        validate_config(cfg, SCHEMA)


def test_truncated_dicom_says_truncated(tmp_path):
    path = write_dicom(tmp_path / "t.dcm", np.zeros((96, 96), np.uint16), **MR)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DicomError, match=r"t\.dcm: has no PixelData although its header says it is an"
                                         r" image \(MR Image Storage\): the file is truncated \(200 bytes\)"):
        read_dicom(path)


def test_too_few_patients_names_the_split_key():
    with pytest.raises(DataError, match=r"only 2 patients: too few for split\.test_fraction = 0\.20"):
        assign_splits(_lesions(2), 0.2, 0.15, 0)


def test_read_dicom_of_a_folder_says_folder(tmp_path):
    (tmp_path / "series").mkdir()
    with pytest.raises(DicomError, match=r"series: is a folder, not a DICOM file"):
        read_dicom(tmp_path / "series")


def test_every_new_error_is_an_oncorobust_error():
    for cls in (ConfigError, DataError, DicomError, ModelError, CheckpointError):
        assert issubclass(cls, OncorobustError)


# ------------------------------------------------------------- sweep 2: series folders, z, checkpoints


def _series(folder: Path, zs, series_uid="1.2.3", prefix="IM", patient="p") -> None:
    for i, z in enumerate(zs):
        write_dicom(folder / f"{prefix}{i}.dcm", np.full((8, 8), i, np.uint16), modality="MR",
                    patient_id=patient, study_uid="1.2", series_uid=series_uid, z_mm=z, instance_number=i + 1)


def test_series_folder_mixing_two_series_or_equal_z_is_skipped(tmp_path):
    _series(tmp_path / "mixed", [0, 5, 10], series_uid="1.2.3.1", prefix="A")
    _series(tmp_path / "mixed", [2, 7, 12], series_uid="1.2.3.2", prefix="B")  # interleaves by z
    _series(tmp_path / "twice", [0, 5, 0, 5])  # one UID, two echoes at the same positions
    res = IngestResult()
    manifest.ingest(_manifest(tmp_path, ["p1,s1,mixed,benign,4,4,3", "p2,s2,twice,benign,4,4,1"]), res)
    assert res.records == []
    mixed, twice = res.skipped
    assert mixed["file"].endswith("mixed") and "mixes 2 series" in mixed["reason"]
    assert "1.2.3.1" in mixed["reason"] and "1.2.3.2" in mixed["reason"]
    assert twice["file"].endswith("twice") and "at the same z" in twice["reason"]


def test_dicomdir_and_report_in_a_series_folder_are_not_slices(tmp_path):
    _series(tmp_path / "s", [0, 5, 10, 15])
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.FileSetID = "X"
    ds.save_as(tmp_path / "s" / "DICOMDIR", enforce_file_format=True)
    sr = pydicom.Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sr.SeriesInstanceUID = "9.9.9"  # a report's own series: no slice, so no mixed series either
    sr.save_as(tmp_path / "s" / "A_report.dcm", enforce_file_format=True)  # sorts first by name
    res = IngestResult()
    manifest.ingest(_manifest(tmp_path, [f"p{k},s{k},s,benign,4,4,{k}" for k in range(4)]), res)
    assert [r["source"] for r in res.records] == [f"s/IM{k}.dcm" for k in range(4)] and res.skipped == []


def test_roi_z_far_outside_the_series_is_skipped_not_snapped(tmp_path):
    _series(tmp_path / "s", [0, 15, 30, 45])
    mask = np.zeros((8, 8), np.uint16)
    mask[2:4, 2:4] = 1
    write_dicom(tmp_path / "far.dcm", mask, **{**MR, "z_mm": 777.0})
    write_dicom(tmp_path / "near.dcm", mask, **{**MR, "z_mm": 29.0})
    _series(tmp_path / "noz", [None, None, None])  # no ImagePositionPatient: only InstanceNumber 1-3
    res = IngestResult()
    manifest.ingest(_manifest(tmp_path, ["p1,s1,s,benign,4,4,9999,", "p2,s2,s,benign,4,4,37,",
                                         "p3,s3,s,benign,,,,far.dcm", "p4,s4,s,benign,,,,near.dcm",
                                         "p5,s5,noz,benign,4,4,2,"],
                              header="patient_id,sample_id,path,label,roi_row,roi_col,roi_z_mm,mask_path"), res)
    assert [(r["sample_id"], r["source"]) for r in res.records] == [("s2", "s/IM2.dcm"), ("s4", "s/IM2.dcm")]
    (z, m, noz) = res.skipped
    assert z["sample_id"] == "s1" and "roi_z_mm 9999" in z["reason"] and "z 0 to 45 mm" in z["reason"]
    assert m["sample_id"] == "s3" and "far.dcm" in m["reason"] and "z = 777 mm" in m["reason"]
    assert noz["sample_id"] == "s5" and "no ImagePositionPatient" in noz["reason"]


def test_relative_results_leading_out_of_the_working_directory_is_refused(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").mkdir()
    (work / "out").symlink_to("../shared")
    cfg = _config()
    for results in ("../shared_results", "out", "out/results"):
        cfg["results"] = results
        with pytest.raises(ConfigError, match=rf"results = {results} \(resolved: .*\) lies outside the working"):
            check_config(cfg, workdir=work)
    cfg["results"] = "sub/../results"
    check_config(cfg, workdir=work)


@pytest.mark.parametrize("content, reason", [
    ("a,b\n1,2\n", "unreadable: truncated, or not a torch file; IndexError"),
    ("model: vgg\nepochs: 3\n", "unreadable: truncated, or not a torch file"),
    ("version https://git-lfs.github.com/spec/v1\noid sha256:ab12\nsize 12345\n", "a Git LFS pointer"),
])
def test_text_or_lfs_pointer_as_checkpoint_is_one_clear_error(tmp_path, content, reason):
    path = tmp_path / "t.pt"
    path.write_text(content)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(info.value).startswith(f"{path} is not a checkpoint this project wrote ({reason}")
    with pytest.raises(CheckpointError, match="git lfs pull" if "LFS" in reason else "unreadable"):
        read_state_dict(path)


def test_unexpected_error_is_written_to_the_step_log_with_its_traceback(tmp_path):
    log = tmp_path / "step.log"
    with pytest.raises(IndexError, match="pop from empty list"):
        with step_logging(str(log), "import_model"):
            [].pop()
    text = log.read_text()
    assert "unexpected error" in text and "Traceback" in text and "IndexError: pop from empty list" in text
    for handler in logging.getLogger().handlers[:]:  # step_logging configured the root logger
        handler.close()
        logging.getLogger().removeHandler(handler)


def test_manifest_with_a_header_and_no_rows(tmp_path):
    with pytest.raises(DataError, match=r"m\.csv has a header but no rows"):
        manifest.ingest(_manifest(tmp_path, []), IngestResult())


def test_nan_flipping_eps_is_refused_inf_is_kept():
    sens = _sensitivity()
    sens.loc[7, "min_flip_eps"] = np.nan
    with pytest.raises(DataError, match=r"ct/clean test split: 1 image\(s\) have no flipping ε .*s7"):
        deferral.table2_rows(sens, "ct", "clean", 0.2)
    sens.loc[7, "min_flip_eps"] = np.inf  # never flipped: the most robust image, kept
    assert deferral.table2_rows(sens, "ct", "clean", 0.2)[0]["excluded_fraction"] < 1


def test_empty_attack_methods_lists_every_method():
    from oncorobust.spec import METHOD_NAMES as METHODS

    with pytest.raises(ConfigError) as info:
        check_config(_config(attack__methods=[]))
    assert f"list at least one of {', '.join(METHODS)}" in str(info.value) and "square" in str(info.value)


def test_empty_or_foreign_dcm_says_why_without_force_advice(tmp_path):
    (tmp_path / "e.dcm").write_bytes(b"")
    with pytest.raises(DicomError, match=r"e\.dcm: not a DICOM file \(empty file, 0 bytes\)"):
        read_dicom(tmp_path / "e.dcm")
    (tmp_path / "t.dcm").write_text("not dicom")
    with pytest.raises(DicomError) as info:
        read_dicom(tmp_path / "t.dcm")
    assert "not a DICOM file" in str(info.value) and "force" not in str(info.value)
