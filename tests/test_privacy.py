"""privacy.pseudonymize_ids (issue #12 item 6): no real patient or sample ID, nor a real folder
name, anywhere under results/ (outputs, tensors, logs); the key only from $ONCOROBUST_SALT or
privacy.salt_file, never empty, never a config key."""

import csv
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from oncorobust.errors import ConfigError
from oncorobust.data.ingest import run_ingest
from oncorobust.data.privacy import (SALT_ENV, Pseudonymizer, Scrubber, check_privacy, load_salt, protect_ingest,
                                real_manifest)
from oncorobust.data.sources.synthetic import generate

REPO = Path(__file__).resolve().parents[1]


def _freeze(dest: Path) -> tuple[list[str], dict]:
    """A frozen copy of workflow/ and the package (imported through PYTHONPATH, ahead of the
    editable install): edits in the checkout while the test runs change no `code` param.
    Returns (snakemake command, environment)."""
    shutil.copytree(REPO / "workflow", dest / "workflow")
    shutil.copytree(REPO / "src" / "oncorobust", dest / "src" / "oncorobust",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": f"{dest / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return [sys.executable, "-m", "snakemake", "-s", str(dest / "workflow" / "Snakefile")], env


# ------------------------------------------------------------------------------ the key
def test_salt_from_environment_or_file_never_empty(tmp_path, monkeypatch):
    monkeypatch.delenv(SALT_ENV, raising=False)
    on = {"pseudonymize_ids": True}
    with pytest.raises(ConfigError, match=f"set the environment variable {SALT_ENV} or privacy.salt_file"):
        load_salt(on)
    key = tmp_path / "key"
    key.write_text("  s3cret\n")
    assert load_salt({**on, "salt_file": str(key)}) == "s3cret"
    key.write_text(" \n")
    with pytest.raises(ConfigError, match=r"privacy.salt_file = .*key\) is empty"):
        load_salt({**on, "salt_file": str(key)})
    with pytest.raises(ConfigError, match=r"privacy.salt_file = .*nope: cannot be read"):
        load_salt({**on, "salt_file": str(tmp_path / "nope")})
    monkeypatch.setenv(SALT_ENV, "from-env")
    assert load_salt({**on, "salt_file": str(tmp_path / "nope")}) == "from-env"  # the variable wins
    monkeypatch.setenv(SALT_ENV, "")
    with pytest.raises(ConfigError, match=f"environment variable {SALT_ENV}\\) is empty"):
        load_salt(on)


def test_config_salt_key_and_mapping_inside_results_are_refused(monkeypatch):
    monkeypatch.setenv(SALT_ENV, "k")
    with pytest.raises(ConfigError, match="privacy.salt is no longer read.*ONCOROBUST_SALT or privacy.salt_file"):
        check_privacy({"pseudonymize_ids": False, "salt": "abc"})
    with pytest.raises(ConfigError, match="privacy.mapping_dir = results/private lies inside results"):
        check_privacy({"pseudonymize_ids": True, "mapping_dir": "results/private"}, "results")
    check_privacy({"pseudonymize_ids": True}, "results")
    monkeypatch.delenv(SALT_ENV)
    check_privacy({"pseudonymize_ids": False})  # no key needed when off
    with pytest.raises(ConfigError, match="no key"):
        check_privacy({"pseudonymize_ids": True})
    with pytest.raises(ConfigError, match="empty"):
        Pseudonymizer("")


# ------------------------------------------------------------------------------ scrubbing
def test_scrubber_replaces_whole_ids_only_longest_first():
    pz = Pseudonymizer("k")
    s = Scrubber()
    # a root without digits: a whole-token ID such as "12" is (rightly) scrubbed inside any path,
    # and pytest's own tmp_path (".../pytest-12/...") contains such tokens by chance
    root = "/srv/archive"
    s.learn_records(pz, [{"sample_id": "BM0001-L1", "patient_id": "BM0001", "source": "dicom/BM0001/T1post/IM0003.dcm"},
                         {"sample_id": "12", "patient_id": "P7", "source": "x.dcm"}], root=f"{root}/data")
    text = (f"BM0001-L1 of BM0001 at {root}/data/dicom/BM0001/T1post/IM0003.dcm; 2012 has 12 in it;"
            f" {root}/data/dicom/BM0001/other folder")
    out = s.scrub(text)
    assert "BM0001" not in out and "IM0003" not in out
    assert pz.sample("BM0001-L1") in out and pz.patient("BM0001") in out and pz.file("dicom/BM0001/T1post/IM0003.dcm") in out
    assert "2012 has " + pz.sample("12") + " in it" in out
    assert f"{root}/data/<hidden> folder" in out
    many = Scrubber()  # thousands of IDs stay fast (a trie, not a flat alternation)
    many.learn_records(pz, [{"sample_id": f"S{i:05d}", "patient_id": f"P{i // 3:05d}", "source": f"d/{i}.dcm"}
                            for i in range(5000)])
    assert many.scrub("S04999 / P01666") == f"{pz.sample('S04999')} / {pz.patient('P01666')}"


def test_buffered_log_records_are_scrubbed(tmp_path):
    log_file = tmp_path / "x.log"
    handler = logging.FileHandler(log_file)
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    try:
        s = Scrubber()
        with s.buffered():
            logging.getLogger("oncorobust.t").warning("skipped %s", "BM0042-L1")  # logged before it is known
            s.add("BM0042-L1", "S-aaaa")
        logging.getLogger("oncorobust.t").error("after: %s", "BM0042-L1")  # e.g. step_logging's error line
    finally:
        root.handlers = saved
        handler.close()
    text = log_file.read_text()
    assert "BM0042" not in text and text.count("S-aaaa") == 2


def test_run_ingest_with_privacy_hides_ids_and_paths(tmp_path, monkeypatch):
    monkeypatch.setenv(SALT_ENV, "k")
    data = tmp_path / "mri"
    generate("manifest", data, n_patients=20, seed=3)
    src = {"format": "manifest", "manifest": str(data / "manifest.csv")}
    real, skipped = run_ingest(src, {}, 3)
    public, pub_skipped = run_ingest(src, {}, 3, {"pseudonymize_ids": True})
    assert not set(public.sample_id) & set(real.sample_id) and not set(public.patient_id) & set(real.patient_id)
    assert public.source.str.startswith("F-").all()
    assert (public.split.values == real.split.values).all()
    pz = Pseudonymizer("k")
    pub2, _, mapping, _ = protect_ingest(real, skipped, pz)
    assert (real_manifest(pub2, mapping, "m.csv").source.values == real.source.values).all()


# ------------------------------------------------------------------------------ the workflow
def _ids(data: Path) -> tuple[set[str], set[str], set[str]]:
    rows = list(csv.DictReader(open(data / "manifest.csv")))
    return ({r["patient_id"] for r in rows}, {r["sample_id"] for r in rows},
            {p.name for p in (data / "dicom").iterdir()} | {p.name for p in (data / "masks").iterdir()})


@pytest.mark.slow
def test_pseudonymised_run_leaves_no_real_id_under_results(tmp_path):
    """A manifest dataset outside results/ (real data are never under results/), with a row whose
    series is missing (ingest skips it) and a truncated image (preprocess skips it), run to the
    end with pseudonymize_ids; then every byte of every file under results/ is searched."""
    data = tmp_path / "data" / "mri"
    generate("manifest", data, n_patients=24, seed=1)
    with open(data / "manifest.csv", "a", newline="") as fh:
        fh.write("BM0999,BM0999-L1,dicom/BM0999/T1post,malignant,40,40,5,20,\n")
    rows = list(csv.DictReader(open(data / "manifest.csv")))
    victim = next(r for r in rows if r["mask_path"] == "" and r["patient_id"] != "BM0999")
    image = data / victim["path"] / f"IM{int(victim['roi_slice']):04d}.dcm"
    blob = image.read_bytes()
    image.write_bytes(blob[: len(blob) - 4000])  # header intact (ingest reads it), pixels cut short
    patients, samples, folders = _ids(data)
    patients.add("BM0999")
    samples.add("BM0999-L1")
    config = {
        "seed": 3, "device": "cpu",
        "privacy": {"pseudonymize_ids": True},
        # short budgets: what is checked is where IDs go, not how strong the attacks are
        "attacks": {"pgd": {"steps": 2}, "health": {"square_queries": 50, "max_images": 16}},
        "datasets": {"mri": {
            "source": {"format": "manifest", "manifest": "data/mri/manifest.csv"},
            "preprocess": {"size": 16}, "model": {"arch": "vgg_small", "width": 4},
            "train": {"batch_size": 32, "epochs": 1, "patience": 1, "lr": 0.01},
            "attack": {"methods": ["fgsm"], "eps": [0.05], "reference_eps": 0.05},
            "sensitivity": {"steps": 2, "fab_check": False},
            "corruptions": {"names": ["rician_noise"], "severities": {"rician_noise": [10]}}}},
    }
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    snakemake, env = _freeze(tmp_path / "code")
    env[SALT_ENV] = "a secret key"
    cmd = [*snakemake, "--directory", str(tmp_path), "--configfile", str(cfg), "--cores", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    res = tmp_path / "results"
    # the skips happened and are listed, with pseudonyms only
    ingest_skipped = pd.read_csv(res / "mri" / "skipped.csv", dtype=str)
    assert len(ingest_skipped) == 1 and ingest_skipped.sample_id[0].startswith("S-")
    assert ingest_skipped.file[0].startswith("F-")
    prep_skipped = pd.read_csv(res / "mri" / "tensors" / "skipped.csv", dtype=str)
    assert len(prep_skipped) == 1 and prep_skipped.sample_id[0].startswith("S-")
    manifest = pd.read_csv(res / "mri" / "manifest.csv", dtype=str)
    assert manifest.patient_id.str.startswith("P-").all() and manifest.source.str.startswith("F-").all()
    ids = [i for s in ("train", "val", "test")
           for i in torch.load(res / "mri" / "tensors" / f"{s}.pt", weights_only=True)["ids"]]
    assert ids and all(i.startswith("S-") for i in ids)
    # nothing real anywhere under results/ (csv, json, md, logs, tensors, models, figures, ...)
    needles = sorted(patients | samples | folders | {"T1post"})
    hits = []
    for f in res.rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            hits += [(str(f.relative_to(res)), n) for n in needles if n.encode() in blob]
    assert not hits, hits[:20]
    # the real names are kept privately, outside results/, for preprocess and the user
    private = tmp_path / ".oncorobust_private" / "mri"
    mapping = pd.read_csv(private / "mapping.csv", dtype=str)
    assert set(mapping.real_sample_id) <= samples and set(mapping.sample_id) == set(manifest.sample_id)
    assert "BM0999" in (private / "skipped.csv").read_text()
    assert (private / "mapping.csv").stat().st_mode & 0o777 == 0o600 and private.stat().st_mode & 0o777 == 0o700
    assert victim["patient_id"] in (private / "preprocess_skipped.csv").read_text()
    # the key is in no param Snakemake records, and the same key plans nothing again
    meta = "".join(p.read_text(errors="ignore") for p in (tmp_path / ".snakemake" / "metadata").rglob("*") if p.is_file())
    assert "a secret key" not in meta
    again = subprocess.run([*cmd, "-n"], capture_output=True, text=True, env=env)
    assert "Nothing to be done" in again.stdout + again.stderr
    # another key reruns ingest (its fingerprint is a param); no key at all is a clear error
    other = subprocess.run([*cmd, "-n"], capture_output=True, text=True, env={**env, SALT_ENV: "another key"})
    assert "rule ingest" in other.stdout
    missing = subprocess.run([*cmd, "-n"], capture_output=True, text=True,
                             env={k: v for k, v in env.items() if k != SALT_ENV})
    assert missing.returncode != 0 and "ONCOROBUST_SALT" in missing.stdout + missing.stderr
