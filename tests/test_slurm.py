"""The workflow on a real one-node SLURM cluster (slurmctld + slurmd + munge from apt) through
profiles/slurm, compared with a local run of the same configuration.

It changes the machine, so it runs only when asked: ``ONCOROBUST_SLURM_TEST=1`` (``.ci/run`` sets
it), as root with apt; skipped otherwise. It installs slurm-wlm and munge when missing and leaves
them installed (printing so); every file it writes under /etc/slurm, /etc/munge, /var/spool,
/var/log, /var/lib/munge and /run is put back as it was (snapshot before, restore after), and the
daemons it started are stopped.
"""

import os
import shutil
import subprocess
import sys
import tarfile
import time
import warnings
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


OPT_IN = "ONCOROBUST_SLURM_TEST"
#: Everything start_cluster.sh and the daemons write outside the test's temporary folders.
TOUCHED = ["/etc/slurm", "/etc/munge", "/var/spool/slurmctld", "/var/spool/slurmd", "/var/log/slurm",
           "/var/log/munge", "/var/lib/munge", "/run/munge", "/run/slurmctld.pid", "/run/slurmd.pid"]


class Snapshot:
    """Files and folders as they are now (contents, owners, modes), to be put back later.

    Paths that do not exist are removed on restore; existing ones are replaced by their saved copy
    (a tar archive; sockets, which tar skips, only exist under /run and are left alone there).
    """

    def __init__(self, paths: list[str], archive: Path):
        self.paths, self.archive = paths, archive
        self.existed = [p for p in paths if os.path.lexists(p)]
        with tarfile.open(archive, "w") as tar:
            for p in self.existed:
                tar.add(p, arcname=p.lstrip("/"))

    def restore(self) -> None:
        for p in self.paths:
            if p in self.existed and p.startswith("/run/"):
                continue  # a daemon that was running before owns it
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            elif os.path.lexists(p):
                os.unlink(p)
        with tarfile.open(self.archive) as tar:
            members = [m for m in tar.getmembers() if not ("/" + m.name).startswith("/run/")]
            # owners, modes and links exactly as saved (Python < 3.11.4 has no filter argument)
            extra = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
            tar.extractall("/", members=members, numeric_owner=True, **extra)


def test_snapshot_puts_back_changed_files_and_removes_new_ones(tmp_path):
    conf = tmp_path / "etc" / "slurm"
    conf.mkdir(parents=True)
    (conf / "slurm.conf").write_text("ClusterName=real\n")
    (conf / "slurm.conf").chmod(0o640)
    (conf / "keep.link").symlink_to("slurm.conf")
    spool = tmp_path / "spool" / "slurmctld"  # does not exist yet
    snap = Snapshot([str(conf), str(spool), str(tmp_path / "pid")], tmp_path / "before.tar")
    (conf / "slurm.conf").write_text("ClusterName=oncorobust-test\n")
    (conf / "slurm.conf.oncorobust-test").write_text("x")
    spool.mkdir(parents=True)
    (spool / "node_state").write_text("state")
    (tmp_path / "pid").write_text("123")
    snap.restore()
    assert sorted(p.name for p in conf.iterdir()) == ["keep.link", "slurm.conf"]
    assert (conf / "slurm.conf").read_text() == "ClusterName=real\n"
    assert (conf / "slurm.conf").stat().st_mode & 0o777 == 0o640 and (conf / "keep.link").is_symlink()
    assert not spool.exists() and not (tmp_path / "pid").exists()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.environ.get(OPT_IN) != "1":
        pytest.skip(f"real-SLURM test: set {OPT_IN}=1 to run it (as root; it installs slurm-wlm and munge)")
    install = subprocess.run(["bash", str(SLURM / "install_slurm.sh")], capture_output=True, text=True)
    if install.returncode == 77:
        pytest.skip(install.stdout.strip())
    assert install.returncode == 0, install.stdout + install.stderr
    if install.stdout.strip().endswith("installed"):
        warnings.warn("test_slurm: slurm-wlm and munge were installed from apt by this run and are left"
                      " installed (apt-get purge slurm-wlm munge removes them)", stacklevel=1)
    work = tmp_path_factory.mktemp("slurm")
    pidfile = work / "pids"
    snapshot = Snapshot(TOUCHED, work / "before.tar")  # after the install: the packages' own files stay
    try:
        start = subprocess.run(["bash", str(SLURM / "start_cluster.sh"), str(pidfile)], capture_output=True,
                               text=True)
        if start.returncode == 77:
            pytest.skip(start.stdout.strip())
        assert start.returncode == 0, start.stdout + start.stderr
        print(start.stdout)
        yield start.stdout.strip()
    finally:
        subprocess.run(["bash", str(SLURM / "stop_cluster.sh"), str(pidfile)])
        snapshot.restore()


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


def _group_resources(threads: int, cores: int, n: int = 25) -> dict:
    """Snakemake's own sizing of one sbatch for ``n`` grouped attack jobs (1 GPU, 1400 MB each)."""
    from snakemake.resources import GroupResources, Resources

    class Job:
        pipe_group = None

        def __init__(self):
            self.resources = {"_cores": threads, "mem_mb": 1400, "gpu": 1, "runtime": 10}

    return GroupResources.basic_layered([[Job() for _ in range(n)]], Resources.from_mapping({"_cores": cores, "_nodes": 1}),
                                        run_local=False)


def test_grouped_jobs_never_ask_for_more_than_one_gpu():
    """Snakemake sums mem_mb and gpu over a group's jobs that fit side by side within `cores`: 25
    one-thread attack jobs under cores 8 asked for 8 GPUs. The profile may group a rule only if
    set-threads makes its jobs run one after another."""
    assert _group_resources(threads=1, cores=8)["gpu"] == 8  # the hazard (Snakemake's behaviour)
    serial = _group_resources(threads=8, cores=8)  # one job per layer: max, not sum
    assert (serial["gpu"], serial["mem_mb"]) == (1, 1400)
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    groups = dict(item.split("=") for item in profile.get("group-components", []))
    # the group "attacks" holds the rules attack_<dataset> and corrupt_<dataset>: the fewest threads decide
    prefixes = {"attacks": ("attack_", "corrupt_")}
    for group, n in groups.items():
        threads = min((t for rule, t in profile.get("set-threads", {}).items() if rule.startswith(prefixes[group])),
                      default=1)
        res = _group_resources(int(threads), int(profile["cores"]), int(n))
        assert res["gpu"] <= 1 and res["mem_mb"] <= 1400, (group, res)
