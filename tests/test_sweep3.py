"""Third sweep (issue 29), from the user's side: the README's commands run on the configuration they
name, results are bound to the model and images that made them, and the audit's folder is locked."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import load_test_config
from oncorobust.cli import lock_out_folder, main
from oncorobust.errors import OncorobustError
from oncorobust.evaluation.evaluate import COLUMNS
from oncorobust.evaluation.results import read_attack_csv, read_per_image
from oncorobust.evaluation.results import test_ids as split_ids
from oncorobust.io import write_attack_csv, write_result_csv
from oncorobust.models.architectures import build_model
from oncorobust.models.checkpoints import state_digest
from oncorobust.provenance import ProvenanceError, file_fingerprint, model_fingerprint

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _checkout_copy(tmp_path: Path) -> Path:
    """The checkout's workflow/ and config/ (tracked files), copied: a dry run "from the checkout"
    that writes nothing into the real one."""
    dst = tmp_path / "checkout"
    files = subprocess.run(["git", "ls-files", "workflow", "config", "profiles"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dst / f)
    return dst


def _plan(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([*SNAKEMAKE, "-n", "--cores", "2", *args], cwd=cwd, capture_output=True, text=True)
    out.text = out.stdout + out.stderr
    return out


def _jobs(text: str) -> dict[str, int]:
    """The dry run's job-count table."""
    counts, on = {}, False
    for line in text.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            on = True
        elif on and len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
        elif on and counts and not parts:
            break
    return counts


# --------------------------------------------------------------- 1. one configuration, stated


@pytest.mark.slow
def test_readme_paper_command_from_the_checkout_plans_the_real_data(tmp_path):
    """`snakemake --cores 8 --configfile config/paper.yaml` from the checkout (README): the demo's
    config/config.yaml is not merged under it, so nothing synthetic is generated or read."""
    checkout = _checkout_copy(tmp_path)
    out = _plan(checkout, "--configfile", "config/paper.yaml")
    assert out.returncode == 0, out.text[-3000:]
    jobs = _jobs(out.stdout)
    assert "demo_data" not in jobs and "digits" not in out.text.split("oncorobust: configuration")[1].split("\n")[0]
    assert jobs["ingest"] == 5 and jobs["preprocess"] == 5  # ct, mammo, mri, mnist, cifar10
    assert "demo_data" not in out.stdout and "synthetic" not in out.stderr
    start = [ln for ln in out.stderr.splitlines() if ln.startswith("oncorobust: configuration")]
    assert start == [f"oncorobust: configuration {checkout / 'config' / 'paper.yaml'}; datasets: ct lidc"
                     " data/LIDC-IDRI; mammo cbis_ddsm data/CBIS-DDSM; mri manifest data/brain-mri/manifest.csv;"
                     " mnist mnist data/torchvision; cifar10 cifar10 data/torchvision; results in"
                     f" {checkout / 'results'} (the full config: results/config.used.yaml)"]


@pytest.mark.slow
def test_a_folder_holding_config_yaml_does_not_leak_into_the_users_config(tmp_path):
    """A user's folder with its own config/config.yaml (here the demo's) and their one-dataset
    config: only the user's dataset is planned."""
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    shutil.copy(REPO / "config" / "config.yaml", work / "config" / "config.yaml")
    user = work / "mine.yaml"
    user.write_text(yaml.safe_dump(load_test_config("config_one_dataset.yaml")))
    out = _plan(work, "-s", str(REPO / "workflow" / "Snakefile"), "--configfile", str(user))
    assert out.returncode == 0, out.text[-3000:]
    jobs = _jobs(out.stdout)
    assert jobs["ingest"] == 1 and "demo_data" not in jobs
    assert "ds=ct" not in out.stdout and "ds=digits" in out.stdout
    # without --configfile: the checkout's demo config (not the folder's), said so at start
    out = _plan(work, "-s", str(REPO / "workflow" / "Snakefile"), "--config", "seed=4")
    assert out.returncode == 0, out.text[-3000:]
    assert (f"oncorobust: configuration {REPO / 'config' / 'config.yaml'} with --config overrides"
            f" ({work / 'config' / 'config.yaml'} is not read: name it with --configfile); datasets: ct"
            " synthetic demo data") in out.stderr


@pytest.mark.slow
def test_config_used_is_written_next_to_the_results(tmp_path):
    cfg = load_test_config("config_one_dataset.yaml")
    cfg["results"] = "res"
    user = tmp_path / "mine.yaml"
    user.write_text(yaml.safe_dump(cfg))
    run = subprocess.run([*SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "--cores", "1", "--configfile",
                          str(user), "--config", "seed=5", "--", "res/config.used.yaml"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    text = (tmp_path / "res" / "config.used.yaml").read_text()
    assert f"#   {user}\n" in text and "# with --config overrides: {seed: 5}" in text
    used = yaml.safe_load(text)
    assert used["seed"] == 5 and list(used["datasets"]) == ["digits"]
    # defaults filled in by the schema, e.g. the sensitivity search's method
    assert "method" in used["datasets"]["digits"]["sensitivity"]
    # the file is itself a complete config: planning with it plans the same datasets
    out = _plan(tmp_path, "-s", str(REPO / "workflow" / "Snakefile"), "--configfile", "res/config.used.yaml")
    assert out.returncode == 0, out.text[-3000:]


# --------------------------------------------------------------- 5. results bound to their model


@pytest.fixture
def results(tmp_path):
    """A results tree: a model file, test tensors and one attack CSV written as the attack job does."""
    root = tmp_path / "results" / "ds"
    torch.manual_seed(0)
    model = build_model("vgg_small", classes=2, in_channels=1, size=8, mean=[0.4], std=[0.3], width=4)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    (root / "models").mkdir(parents=True)
    torch.save({"state_dict": state, "meta": {"sha256": state_digest(state)}}, root / "models" / "clean.pt")
    ids = [f"s{i}" for i in range(10)]
    (root / "tensors").mkdir()
    torch.save({"ids": ids}, root / "tensors" / "test.pt")
    df = pd.DataFrame({"sample_id": ids, "label": [0, 1] * 5, "clean_pred": [0, 1] * 5, "adv_pred": [1, 1] * 5,
                       "clean_prob": 0.9, "adv_prob": 0.6, "linf": 0.01, "l2": 0.1, "psnr": 40.0,
                       "ssim": 0.99})[COLUMNS]
    csv = root / "attacks" / "clean" / "pgd" / "eps=0.01.csv"
    write_attack_csv(df, csv, regime="clean", method="pgd", eps=0.01,
                     model_fp=model_fingerprint(root / "models" / "clean.pt"),
                     data_fp=file_fingerprint(root / "tensors" / "test.pt"))
    return root, csv, df


def test_a_result_as_written_is_read(results):
    root, csv, _ = results
    key, df = read_attack_csv(csv, split_ids(root / "tensors" / "test.pt"))
    assert key == ("clean", "pgd", 0.01) and len(df) == 10
    assert model_fingerprint(root / "models" / "clean.pt") == torch.load(
        root / "models" / "clean.pt", weights_only=True)["meta"]["sha256"][:16]


def test_a_hand_edited_result_is_refused_naming_the_file_and_line(results):
    root, csv, _ = results
    lines = csv.read_text().splitlines()
    fields = lines[3].split(",")
    fields[3] = "0"  # adv_pred 1 -> 0: one image less flipped, as an edit would make Table 1 look better
    lines[3] = ",".join(fields)
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(ProvenanceError, match=r"eps=0\.01\.csv, line 4: the row was changed after the workflow"
                                              r" wrote it .*results edited by hand are not used"):
        read_attack_csv(csv, split_ids(root / "tensors" / "test.pt"))


def test_a_result_left_from_another_model_is_refused(results):
    root, csv, _ = results
    model = build_model("vgg_small", classes=2, in_channels=1, size=8, mean=[0.4], std=[0.3], width=4)
    state = {k: v.detach().clone() + 1 for k, v in model.state_dict().items()}  # retrained: other weights
    torch.save({"state_dict": state, "meta": {"sha256": state_digest(state)}}, root / "models" / "clean.pt")
    with pytest.raises(ProvenanceError, match=r"line 2: made by the model with fingerprint [0-9a-f]{16}, but the"
                                              r" model it is reported for has [0-9a-f]{16} \(a result left from"):
        read_per_image(csv, split_ids(root / "tensors" / "test.pt"))


def test_a_result_made_on_other_test_tensors_is_refused(results):
    root, csv, _ = results
    torch.save({"ids": [f"s{i}" for i in range(10)], "x": torch.zeros(1)}, root / "tensors" / "test.pt")
    with pytest.raises(ProvenanceError, match="made on test tensors with fingerprint"):
        read_per_image(csv, split_ids(root / "tensors" / "test.pt"))


def test_a_result_without_provenance_is_refused(results):
    root, csv, df = results
    df.assign(regime="clean", method="pgd", eps=0.01).to_csv(csv, index=False)  # as an older version wrote it
    with pytest.raises(ProvenanceError, match="no model_fp/data_fp/row_fp column: the file does not record"):
        read_attack_csv(csv, split_ids(root / "tensors" / "test.pt"))


def test_a_sensitivity_csv_checks_its_test_rows_against_test_pt(results):
    root, _, _ = results
    ids = [f"s{i}" for i in range(10)]
    frame = pd.DataFrame({"sample_id": ["v0"] + ids, "split": ["val"] + ["test"] * 10, "eps_upper": 0.01})
    path = root / "sensitivity" / "clean.csv"
    write_result_csv(frame, path, model_fp=model_fingerprint(root / "models" / "clean.pt"),
                     data_fp=["val-tensors"] + [file_fingerprint(root / "tensors" / "test.pt")] * 10)
    assert len(read_per_image(path, split_ids(root / "tensors" / "test.pt"))) == 11


# --------------------------------------------------------------- 5. audits into one --out


def test_a_second_audit_into_the_same_out_is_refused(tmp_path, capsys):
    held = lock_out_folder(tmp_path)
    try:
        with pytest.raises(OncorobustError, match=rf"--out {tmp_path}: another `oncorobust audit` is running into"
                                                  rf" this folder \(pid {os.getpid()}, started"):
            lock_out_folder(tmp_path)
        rc = main(["audit", "--model", "vgg_small", "--data", str(tmp_path), "--out", str(tmp_path), "--no-estimate"])
        assert rc == 1 and "another `oncorobust audit` is running" in capsys.readouterr().err
        assert not (tmp_path / "config.yaml").exists()  # the running audit's config is not overwritten
    finally:
        held.close()
    lock_out_folder(tmp_path).close()  # free again once the first ends


def test_cores_zero_is_refused_by_the_command_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["audit", "--model", "vgg_small", "--data", "x", "--cores", "0"])
    assert exc.value.code == 2 and "--cores: 0: give at least 1 core" in capsys.readouterr().err


def test_the_workflow_child_does_not_outlive_a_killed_audit(tmp_path):
    """run_child (the audit's Snakemake subprocess): SIGTERM or SIGKILL of the audit stops the child."""
    pid_file = tmp_path / "child.pid"
    child_code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    code = ("import os, sys; from oncorobust.cli import run_child;"
            f" sys.exit(run_child([sys.executable, '-c', {child_code!r}], dict(os.environ)))")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pid_file.unlink(missing_ok=True)
        parent = subprocess.Popen([sys.executable, "-c", code])
        for _ in range(200):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.05)
        child = int(pid_file.read_text())
        parent.send_signal(sig)
        parent.wait(timeout=30)
        for _ in range(200):
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            # reap if it became our zombie (it is the parent's child, re-parented to init otherwise)
            time.sleep(0.05)
        else:
            os.kill(child, signal.SIGKILL)
            pytest.fail(f"the child outlived the audit killed by {sig!r}")
        if sig == signal.SIGTERM:
            assert parent.returncode == 128 + signal.SIGTERM


@pytest.mark.slow
def test_readme_slurm_command_from_the_checkout_plans_the_real_data(tmp_path):
    """`snakemake --profile profiles/slurm --configfile config/paper.yaml` (README), dry run."""
    checkout = _checkout_copy(tmp_path)
    out = _plan(checkout, "--profile", "profiles/slurm", "--configfile", "config/paper.yaml")
    assert out.returncode == 0, out.text[-3000:]
    jobs = _jobs(out.stdout)
    assert "demo_data" not in jobs and jobs["ingest"] == 5
    assert f"oncorobust: configuration {checkout / 'config' / 'paper.yaml'}; datasets: ct lidc" in out.stderr


@pytest.mark.slow
def test_audit_into_a_folder_holding_config_yaml_runs_its_own_config(tmp_path, capfd):
    """An --out folder that holds a config/config.yaml (here the demo's): the audit plans only its
    own dataset, with the budget it prints."""
    from PIL import Image

    data = tmp_path / "imgs"
    for k, cls in enumerate(("benign", "malignant")):
        (data / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(((i * 7 + k * 50) % 255 * torch.ones(24, 24)).numpy().astype("uint8")).save(
                data / cls / f"p{i:02d}_{cls}.png")
    out = tmp_path / "out"
    (out / "config").mkdir(parents=True)
    shutil.copy(REPO / "config" / "config.yaml", out / "config" / "config.yaml")
    rc = main(["audit", "--model", "vgg_small", "--data", str(data), "--out", str(out), "--size", "16",
               "--budget", "quick", "--no-estimate", "--dry-run"])
    text = "".join(capfd.readouterr())
    assert rc == 0, text[-3000:]
    assert f"oncorobust: configuration {out / 'config.yaml'}; datasets: audit folder {data}" in text
    assert "ds=ct" not in text and "ds=digits" not in text and "ds=audit" in text
    assert yaml.safe_load((out / "config.yaml").read_text())["attacks"]["budget"] == "quick"


def test_an_audit_run_under_nohup_survives_the_hangup(tmp_path):
    """nohup (SIGHUP ignored): a hang-up of the audit neither stops it nor its workflow child."""
    pid_file = tmp_path / "child.pid"
    child_code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(3)"
    code = ("import os, sys; from oncorobust.cli import run_child;"
            f" sys.exit(run_child([sys.executable, '-c', {child_code!r}], dict(os.environ)))")
    parent = subprocess.Popen([sys.executable, "-c", code],
                              preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.05)
    parent.send_signal(signal.SIGHUP)
    assert parent.wait(timeout=60) == 0  # the child ran to its end and the audit returned its status
