"""`oncorobust audit` and given models end to end: a torchvision resnet18 state dict (random init)
and a TorchScript model on a small PNG folder and on the demo's MRI manifest, through the whole
workflow (tiny: 16–32 px, a few dozen images, fgsm + pgd at one or two ε)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
import yaml
from PIL import Image
from torch import nn

from oncorobust import cli
from oncorobust.data.sources.synthetic import generate

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile")]
pytestmark = pytest.mark.slow

# short attacks, a small health check and a short minimal-eps search: the extra config of the
# audits (`oncorobust audit --config .test/audit_small.yaml`), its parts for the hand-written configs
AUDIT_SMALL = REPO / ".test" / "audit_small.yaml"
SMALL = {"attacks": yaml.safe_load(AUDIT_SMALL.read_text())["attacks"]}
SENS = yaml.safe_load(AUDIT_SMALL.read_text())["dataset"]["sensitivity"]


def _png_folder(root: Path, n: int = 24) -> Path:
    """Two classes of 40×36 8-bit PNGs (a bright disc, larger when malignant); two images per patient."""
    rng = np.random.default_rng(0)
    for c, cls in enumerate(["benign", "malignant"]):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            yy, xx = np.mgrid[:40, :36]
            r = 6 + 6 * c + rng.normal(0, 1)
            img = 60 + 120 * (((yy - 20) ** 2 + (xx - 18) ** 2) < r * r) + rng.normal(0, 15, (40, 36))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / cls / f"p{i // 2:02d}_{i}.png")
    return root


def _resnet18(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    torch.save(torchvision.models.resnet18(weights=None, num_classes=2).state_dict(), path)
    return path


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def _torchscript(path: Path) -> Path:
    torch.manual_seed(0)
    torch.jit.trace(_Tiny().eval(), torch.rand(1, 1, 16, 16)).save(str(path))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit_inputs")
    generate("manifest", root / "mri", n_patients=20, seed=1, size=48)  # the demo's MRI manifest format
    return {"png": _png_folder(root / "png"), "mri": root / "mri" / "manifest.csv",
            "resnet18": _resnet18(root / "resnet18.pt"), "ts": _torchscript(root / "tiny.ts"), "root": root}


def _dry(workdir: Path, *extra: str) -> str:
    out = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
                          "-n", "--cores", "2", *extra], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def _jobs(text: str) -> dict[str, int]:
    block = text.split("Job stats:", 1)[1] if "Job stats:" in text else ""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M) if m.group(1) != "total"}


@pytest.mark.full  # about 10 min on 2 cores beside the rest of the suite: .ci/run runs it
def test_audit_resnet18_state_dict_on_png_folder(inputs, tmp_path):
    """The one command: config written and validated, workflow run, tables/figures/report left;
    replacing the checkpoint reruns exactly the jobs that depend on it."""
    extra = AUDIT_SMALL
    out = tmp_path / "audit"
    t0 = time.time()
    rc = cli.main(["audit", "--model", "torchvision:resnet18", "--weights", str(inputs["resnet18"]),
                   "--data", str(inputs["png"]), "--normalize", "imagenet", "--channels", "3", "--size", "32",
                   "--eps", "0.01", "0.02", "--methods", "fgsm", "pgd", "--patient-pattern", r"^p(?P<patient>\d+)_",
                   "--config", str(extra), "--out", str(out), "--cores", "2", "--device", "cpu"])
    assert rc == 0
    print(f"audit wall time {time.time() - t0:.1f} s")
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    model = cfg["datasets"]["audit"]["model"]
    assert model["checkpoint"] == str(inputs["resnet18"]) and "train" not in cfg["datasets"]["audit"]
    res = out / "results"
    health = (res / "tables" / "evaluation_health.md").read_text()
    assert "| audit | clean | gradients | every attack | ✓ pass" in health
    for f in ("table1.md", "table_s5.md", "table2.md", "deferral_auc.csv", "evaluation_health.csv"):
        assert (res / "tables" / f).is_file(), f
    for fig in ("fig1_examples", "fig2_accuracy_vs_eps", "fig4_deferral"):
        assert (res / "figures" / f"{fig}.png").is_file()
    assert (out / "report.html").stat().st_size > 10_000
    log = (res / "logs" / "import_model" / "audit.log").read_text()
    assert "network input 3 channel(s)" in log and "0.485" in log
    assert "12 patients" in (res / "logs" / "ingest" / "audit.log").read_text()
    stats = yaml.safe_load((res / "audit" / "tensors" / "stats.json").read_text())
    assert stats["classes"] == ["benign", "malignant"] and stats["size"] == 32
    # nothing to do again; a replaced checkpoint reruns its import and everything downstream only
    assert "Nothing to be done" in _dry(out, "--rerun-triggers", "mtime")
    _resnet18(inputs["resnet18"], seed=1)
    later = time.time() + 5
    os.utime(inputs["resnet18"], (later, later))
    jobs = _jobs(_dry(out, "--rerun-triggers", "mtime"))
    assert jobs.get("import_model") == 1 and jobs.get("attack_audit") == 2 and jobs.get("health") == 1
    assert "ingest" not in jobs and "preprocess" not in jobs and "train_clean" not in jobs
    _resnet18(inputs["resnet18"], seed=0)  # restore for the other tests


@pytest.mark.full
def test_given_models_on_mri_manifest_and_png_folder(inputs, tmp_path):
    """resnet18 and TorchScript on the MRI manifest, TorchScript on the PNG folder, in one run."""
    def entry(source, model, size):
        return {"source": source, "preprocess": {"size": size, "intensity": {"mode": "percentile"}},
                "model": model, "attack": {"methods": ["fgsm", "pgd"], "eps": [0.02], "reference_eps": 0.02},
                "sensitivity": SENS}

    mri = {"format": "manifest", "manifest": str(inputs["mri"])}
    png = {"format": "folder", "root": str(inputs["png"]), "patient_pattern": r"^p(\d+)_"}
    config = {"seed": 1, "device": "cpu", **SMALL, "datasets": {
        "mri_r18": entry(mri, {"arch": "torchvision:resnet18", "checkpoint": str(inputs["resnet18"]),
                               "input": {"normalize": "imagenet", "channels": 3}}, 32),
        "mri_ts": entry(mri, {"arch": f"torchscript:{inputs['ts']}", "input": {"normalize": "none"}}, 16),
        "png_ts": entry(png, {"arch": f"torchscript:{inputs['ts']}"}, 16),
    }}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "--configfile", str(tmp_path / "config.yaml"),
                          "--cores", "2"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "train_clean" not in out.stdout + out.stderr
    health = pd.read_csv(tmp_path / "results" / "tables" / "evaluation_health.csv")
    assert set(health.dataset) == {"mri_r18", "mri_ts", "png_ts"}
    for ds in ("mri_r18", "mri_ts", "png_ts"):
        att = pd.read_csv(tmp_path / "results" / ds / "attacks" / "clean" / "pgd" / "eps=0.02.csv")
        assert len(att) > 0
        assert (tmp_path / "results" / ds / "sensitivity" / "clean.csv").is_file()
    assert "mri_ts" in (tmp_path / "results" / "tables" / "table1.md").read_text()


def test_workflow_refuses_a_checkpoint_of_the_wrong_class_count(inputs, tmp_path):
    bad = tmp_path / "r18_3cls.pt"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=3).state_dict(), bad)
    extra = AUDIT_SMALL
    out = subprocess.run([sys.executable, "-m", "oncorobust.cli", "audit", "--model", "torchvision:resnet18",
                          "--weights", str(bad), "--data", str(inputs["png"]), "--channels", "3", "--size", "16",
                          "--eps", "0.02", "--methods", "fgsm", "--config", str(extra), "--out", str(tmp_path / "a"),
                          "--cores", "1", "--device", "cpu", "--no-report"], capture_output=True, text=True)
    assert out.returncode != 0
    log = (tmp_path / "a" / "results" / "logs" / "import_model" / "audit.log").read_text()
    assert "class count: the checkpoint's output layer fc.weight has 3 outputs, the data have 2 classes" in log


def test_audit_config_errors_are_named(inputs, tmp_path, capsys):
    rc = cli.main(["audit", "--model", "resnet18", "--data", str(inputs["png"]), "--out", str(tmp_path / "a")])
    assert rc == 1 and "not an architecture" in capsys.readouterr().err
    rc = cli.main(["audit", "--model", str(inputs["resnet18"]), "--data", str(inputs["png"]), "--out", str(tmp_path / "a")])
    assert rc == 1 and "--model torchvision:resnet18 --weights" in capsys.readouterr().err
    rc = cli.main(["audit", "--model", "torchvision:resnet18", "--weights", str(tmp_path / "absent.pt"),
                   "--data", str(inputs["png"]), "--out", str(tmp_path / "a")])
    assert rc == 1 and "no such file" in capsys.readouterr().err
    cfg = {"device": "cpu", "datasets": {"x": {
        "source": {"format": "folder", "root": str(inputs["png"])}, "preprocess": {"size": 16},
        "model": {"arch": "torchvision:resnet18", "checkpoint": str(inputs["resnet18"])},
        "train": {"batch_size": 8, "epochs": 1, "lr": 0.1}}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "--configfile", str(tmp_path / "config.yaml"),
                          "-n", "--cores", "1"], capture_output=True, text=True)
    assert out.returncode != 0 and "remove the train block" in out.stdout + out.stderr


def test_console_script_help_lists_audit():
    exe = Path(sys.executable).with_name("oncorobust")
    if not exe.is_file():
        pytest.skip("the console script is not installed in this environment")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "audit" in out.stdout
    out = subprocess.run([str(exe), "audit", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--weights" in out.stdout and "--data" in out.stdout


def test_trainable_user_arch_plans_training_not_import(inputs, tmp_path):
    """A torchvision arch without a checkpoint is trained by the existing regimes (clean and
    adversarial); its initial weights (model.weights) are an input of training."""
    weights = tmp_path / "init.pt"
    net = torchvision.models.resnet18(weights=None, num_classes=2)
    from oncorobust.models.architectures import adapt_first_conv

    adapt_first_conv(net, 1)
    torch.save(net.state_dict(), weights)
    cfg = {"device": "cpu", "datasets": {"tv": {
        "source": {"format": "folder", "root": str(inputs["png"])}, "preprocess": {"size": 16},
        "model": {"arch": "torchvision:resnet18", "weights": str(weights)},
        "train": {"batch_size": 8, "epochs": 1, "lr": 0.1},
        "adversarial_training": {"regimes": ["adv_pgd"], "eps": 0.02, "step": 0.01, "iters": 1, "epochs": 1},
        "attack": {"methods": ["fgsm"], "eps": [0.02], "reference_eps": 0.02}}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    text = _dry(tmp_path, "--forceall")
    jobs = _jobs(text)
    assert jobs.get("train_clean") == 1 and jobs.get("train_adversarial") == 1 and "import_model" not in jobs
    assert str(weights) in text  # an input of the training jobs


class _OneLogitCNN(nn.Module):
    """A sigmoid/BCE-style head: one logit per image."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8, 1)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x - 0.5)).mean((2, 3))) * 20


@pytest.mark.full  # about 2 min beside the rest of the suite: .ci/run runs it
def test_audit_one_logit_export_program_quick_budget(inputs, tmp_path, capfd):
    """A torch.export program with one output logit, audited with --budget quick into a folder
    whose name has a space: the head is detected and logged, the budget's settings are in the
    config, the estimate is printed before the run, every attack job logs its progress, the card
    is printed at the end, and the rerun command in the config works as written (shell-quoted)."""
    torch.manual_seed(0)
    program = tmp_path / "one logit.pt2"
    torch.export.save(torch.export.export(_OneLogitCNN().eval(), (torch.rand(1, 1, 16, 16),)), program)
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"dataset": {"sensitivity": SENS}}))
    out = tmp_path / "audit out"
    rc = cli.main(["audit", "--model", str(program), "--data", str(inputs["png"]), "--normalize", "none",
                   "--size", "16", "--eps", "0.02", "--methods", "fgsm", "worst", "--budget", "quick",
                   "--patient-pattern", r"^p(?P<patient>\d+)_", "--config", str(extra), "--out", str(out),
                   "--cores", "2", "--device", "cpu", "--no-report"])
    err = capfd.readouterr().err
    assert rc == 0, err[-3000:]
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    model = cfg["datasets"]["audit"]["model"]
    assert model["arch"] == f"export:{program}" and model["output"] == "auto"
    assert cfg["attacks"]["worst"]["members"] == ["apgd_margin"] and cfg["attacks"]["apgd_margin"]["steps"] == 25
    assert cfg["attacks"]["health"]["square_queries"] == 0 and cfg["attacks"]["budget"] == "quick + extra.yaml"
    assert cfg["datasets"]["audit"]["preprocess"]["intensity"] == {"mode": "bitdepth"}
    assert re.search(r"one forward \+ backward pass of \d+ images at 16 px takes .* estimated total", err)
    res = out / "results"
    assert "output head logit" in (res / "logs" / "import_model" / "audit.log").read_text()
    attack_log = (res / "logs" / "attack" / "audit" / "clean" / "worst.log").read_text()
    assert re.search(r"attack worst ε=0.02: done, \d+ passes", attack_log)
    assert "square_vs_whitebox" not in (res / "tables" / "evaluation_health.md").read_text()
    card = res / "cards" / "audit_clean.md"
    assert f"robustness card {card} (also .html): " in err
    rerun = (out / "config.yaml").read_text().splitlines()[1].removeprefix("# ")
    again = subprocess.run(rerun + " -n", shell=True, capture_output=True, text=True)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stderr[-2000:]
