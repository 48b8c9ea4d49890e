"""The workflow on a real one-node SLURM cluster (slurmctld + slurmd + munge from apt) through
profiles/slurm, compared with a local run of the same configuration.

Needs root and apt (it installs slurm-wlm and munge); skipped otherwise.
"""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "tests" / "slurm"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile")]

CONFIG = {
    "seed": 5,
    "device": "cpu",
    "datasets": {
        "ct": {"source": {"format": "lidc", "synthetic": {"n_patients": 24}},
               "preprocess": {"size": 16, "intensity": {"mode": "window"}},
               "model": {"arch": "vgg_small", "width": 4},
               "train": {"batch_size": 32, "epochs": 2, "patience": 2, "lr": 0.01},
               "adversarial_training": {"regimes": ["adv_pgd"], "eps": 0.05, "step": 0.0125, "iters": 2,
                                        "epochs": 1, "batch_size": 32},
               "attack": {"methods": ["fgsm", "pgd"], "eps": [0.05], "reference_eps": 0.05},
               "sensitivity": {"eps_max": 0.2, "tol": 0.01}},
    },
}


def run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
                           *args], capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pidfile = tmp_path_factory.mktemp("slurm") / "pids"
    start = subprocess.run(["bash", str(SLURM / "start_cluster.sh"), str(pidfile)], capture_output=True, text=True)
    if start.returncode == 77:
        pytest.skip(start.stdout.strip())
    assert start.returncode == 0, start.stdout + start.stderr
    print(start.stdout)
    yield start.stdout.strip()
    subprocess.run(["bash", str(SLURM / "stop_cluster.sh"), str(pidfile)])


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_profile_run_equals_local_run(cluster, tmp_path):
    local = run(tmp_path / "local", "--cores", "2")
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    t0 = time.time()
    remote = run(tmp_path / "slurm", "--profile", str(REPO / "profiles" / "slurm"),
                 "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
                 "--seconds-between-status-checks", "2", "--latency-wait", "5", "--jobs", "4", "--cores", "2",
                 "--slurm-logdir", str(tmp_path / "slurm_logs"), "--slurm-keep-successful-logs",
                 "--default-resources", "slurm_partition=debug", "runtime=10", "mem_mb=1000")
    elapsed = time.time() - t0
    out = remote.stdout + remote.stderr
    assert remote.returncode == 0, out[-5000:]
    print(f"SLURM run: {elapsed:.0f} s ({cluster})")
    a, b = tmp_path / "local" / "results", tmp_path / "slurm" / "results"
    for rel in ("ct/manifest.csv", "tables/table1.csv", "tables/table_s5.csv", "tables/table2.csv",
                "ct/attacks/adv_pgd/transfer_pgd/eps=0.05.csv", "ct/sensitivity/clean.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(a / rel), pd.read_csv(b / rel), obj=rel)
    for rel in ("ct/tensors/test.pt", "ct/models/clean.pt"):
        ta, tb = torch.load(a / rel, weights_only=True), torch.load(b / rel, weights_only=True)
        sa = ta.get("state_dict", ta)
        sb = tb.get("state_dict", tb)
        for k in sa:
            if isinstance(sa[k], torch.Tensor):
                assert torch.equal(sa[k], sb[k]), (rel, k)
    # the jobs really went through SLURM: the plugin keeps one log per SLURM job
    slurm_logs = list((tmp_path / "slurm_logs").rglob("*.log"))
    assert {p.parent.parent.name for p in slurm_logs} >= {"rule_ingest", "rule_train_clean"}, slurm_logs
    shutil.rmtree(tmp_path / "local" / "results" / "demo_data", ignore_errors=True)
