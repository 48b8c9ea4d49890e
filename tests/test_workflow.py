"""The Snakemake DAG: dry runs, config validation, and one tiny real run of ingest + preprocess."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile")]

TINY = {
    "seed": 3,
    "datasets": {
        "ct": {"source": {"format": "lidc", "synthetic": {"n_patients": 24}},
               "preprocess": {"size": 16, "intensity": {"mode": "window"}}},
        "mri": {"source": {"format": "manifest", "synthetic": {"n_patients": 20}},
                "preprocess": {"size": 16}},
        "digits": {"source": {"format": "digits"},
                   "preprocess": {"size": 16, "intensity": {"mode": "none"}, "balance": "none"}},
    },
}


def smk(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    out = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(cfg),
                          "--cores", "2", *args], capture_output=True, text=True)
    out.text = out.stdout + out.stderr  # snakemake prints errors on either stream
    return out


def test_demo_config_dry_run():
    out = subprocess.run([*SNAKEMAKE, "-n", "--cores", "2", "--directory", str(REPO),
                          "--configfile", str(REPO / "config" / "config.yaml"), "--forceall"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for rule in ("demo_data", "ingest", "preprocess"):
        assert rule in out.stdout


def test_unknown_config_key_is_named(tmp_path):
    bad = yaml.safe_load(yaml.safe_dump(TINY))
    bad["datasets"]["ct"]["preprocess"]["sise"] = 32
    out = smk(tmp_path, bad, "-n")
    assert out.returncode != 0
    assert "Additional properties are not allowed ('sise' was unexpected)" in out.text


def test_wrong_type_is_named(tmp_path):
    bad = yaml.safe_load(yaml.safe_dump(TINY))
    bad["datasets"]["ct"]["preprocess"]["size"] = "big"
    out = smk(tmp_path, bad, "-n")
    assert out.returncode != 0 and "'big' is not of type 'integer'" in out.text


def test_real_source_without_root_is_a_config_error(tmp_path):
    bad = {"datasets": {"ct": {"source": {"format": "lidc"}, "preprocess": {"size": 16}}}}
    out = smk(tmp_path, bad, "-n")
    assert out.returncode != 0
    assert "ConfigError" in out.text and "datasets.ct.source.root is required" in out.text


def test_missing_data_folder_fails_with_one_clear_line(tmp_path):
    cfg = {"datasets": {"ct": {"source": {"format": "lidc", "root": str(tmp_path / "LIDC")},
                               "preprocess": {"size": 16}}}}
    out = smk(tmp_path, cfg)
    assert out.returncode != 0
    log = (tmp_path / "results" / "logs" / "ingest" / "ct.log").read_text()
    assert "DataError: source.root = " in log and "no such folder" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_tiny_end_to_end_then_nothing_to_do(tmp_path):
    out = smk(tmp_path, TINY)
    assert out.returncode == 0, out.text[-3000:]
    res = tmp_path / "results"
    for ds in TINY["datasets"]:
        manifest = pd.read_csv(res / ds / "manifest.csv")
        assert manifest.groupby("patient_id").split.nunique().max() == 1
        for split in ("train", "val", "test"):
            t = torch.load(res / ds / "tensors" / f"{split}.pt", weights_only=True)
            assert t["x"].shape[1:] == (1, 16, 16) and len(t["ids"]) == len(t["y"])
            assert set(t["ids"]) <= set(manifest[manifest.split == split].sample_id.astype(str))
    assert (res / "benchmarks" / "preprocess" / "ct.tsv").exists()
    again = smk(tmp_path, TINY, "-n")
    assert "Nothing to be done" in again.text
    # changing one dataset's preprocessing replans only that dataset
    changed = yaml.safe_load(yaml.safe_dump(TINY))
    changed["datasets"]["mri"]["preprocess"]["size"] = 20
    plan = smk(tmp_path, changed, "-n")
    assert planned_datasets(plan.text) == {"mri"}


def planned_datasets(dry_run_output: str) -> set[str]:
    """The {ds} wildcard values of the jobs a dry run plans."""
    return set(re.findall(r"wildcards: ds=(\w+)", dry_run_output))
