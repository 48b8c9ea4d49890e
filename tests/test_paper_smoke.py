"""Paper-scale memory: every model call is batched (results independent of the batch), and the
paper-shape smoke run (`make smoke-paper`) stays within each job's declared mem_mb.

The smoke run trains and attacks VGG16 at 224/116/32 px on the CPU (about 15 minutes on 2 cores),
so it runs only with ONCOROBUST_PAPER_SMOKE=1.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from oncorobust.reporting import figures
from oncorobust.evaluation.health import model_checks
from oncorobust.training.train import evaluate, robust_accuracy
from oncorobust.evaluation.examples import example_for

ROOT = Path(__file__).resolve().parents[1]


def _cnn(seed: int = 9) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(6 * 4 * 4, 2)).eval()


class Counting(nn.Module):
    """Records the largest batch the wrapped model saw."""

    def __init__(self, model):
        super().__init__()
        self.model, self.largest = model, 0

    def forward(self, x):
        self.largest = max(self.largest, len(x))
        return self.model(x)


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(3)
    return 0.3 + 0.4 * torch.rand(23, 1, 8, 8, generator=g)


def test_health_checks_batched_give_the_same_rows(images):
    model = Counting(_cnn())
    y = model(images).argmax(1)
    ids = [str(i) for i in range(len(images))]
    kw = dict(ref_eps=0.1, pgd={"steps": 10, "alpha_ratio": 0.25, "restarts": 2}, square_queries=50)
    whole = model_checks(model, images, y, ids, **kw)  # no Square: it is seeded per batch
    model.largest = 0
    batched = model_checks(model, images, y, ids, batch_size=5, **kw)
    assert model.largest <= 5
    assert [r["check"] for r in whole] == [r["check"] for r in batched]
    for a, b in zip(whole, batched):
        assert a["passed"] == b["passed"] and a["value"] == pytest.approx(b["value"], abs=1e-5), (a, b)
    # with Square as well: every check is still there, and the model never saw more than a batch
    model.largest = 0
    rows = model_checks(model, images, y, ids, batch_size=5, whitebox_flipped=np.zeros(len(images), bool), **kw)
    assert "square_vs_whitebox" in {r["check"] for r in rows} and model.largest <= 5


def test_fig1_example_does_not_depend_on_the_batch(images):
    model = Counting(_cnn())
    with torch.no_grad():
        y = model(images).argmax(1)
    test = {"x": images, "y": y, "ids": [str(i) for i in range(len(images))]}
    whole = example_for(model, test, ["benign", "malignant"], 0.2, steps=5, restarts=2)
    model.largest = 0
    batched = example_for(model, test, ["benign", "malignant"], 0.2, batch_size=4, steps=5, restarts=2)
    assert model.largest <= 4
    assert whole is not None and batched["sample_id"] == whole["sample_id"]
    np.testing.assert_allclose(batched["adv"], whole["adv"], atol=1e-6)


def test_fig1_stops_at_the_first_batch_with_an_example(images):
    model = Counting(_cnn())
    calls = []
    orig = model.forward
    model.forward = lambda x: (calls.append(len(x)), orig(x))[1]
    with torch.no_grad():
        y = model(images).argmax(1)
    calls.clear()
    ex = example_for(model, {"x": images, "y": y, "ids": list(map(str, range(23)))}, ["a", "b"], 0.3,
                             batch_size=4, steps=3)
    assert ex is not None and int(ex["sample_id"]) < 4  # found in the first batch ...
    assert all(n <= 4 for n in calls) and sum(calls) < 23 * 3  # ... and the rest never attacked


def test_training_evaluation_is_batched_and_batch_independent(images):
    model = Counting(_cnn())
    y = torch.arange(len(images)) % 2
    a = robust_accuracy(model, images, y, torch.device("cpu"), eps=0.1, step=0.025, iters=3, seed=0)
    model.largest = 0
    b = robust_accuracy(model, images, y, torch.device("cpu"), eps=0.1, step=0.025, iters=3, seed=0, batch_size=4)
    assert model.largest <= 4 and a == b
    model.largest = 0
    assert evaluate(model, images, y, torch.device("cpu"), batch_size=6) == pytest.approx(
        evaluate(model, images, y, torch.device("cpu")))
    assert model.largest <= 23


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("ONCOROBUST_PAPER_SMOKE") != "1",
                    reason="VGG16 at 224 px on the CPU (about 15 min on 2 cores): set ONCOROBUST_PAPER_SMOKE=1")
def test_paper_shape_smoke_run_stays_within_declared_memory(tmp_path):
    run = tmp_path / "smoke"
    run.mkdir()
    smk = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
    subprocess.run([smk, "--cores", str(min(2, os.cpu_count() or 1)), "--directory", str(run),
                    "--configfile", str(ROOT / "config" / "paper_smoke.yaml"),
                    "-s", str(ROOT / "workflow" / "Snakefile")], check=True, cwd=ROOT)
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "paper_smoke_report.py"), str(run)],
                         capture_output=True, text=True)
    print(out.stdout, out.stderr)
    assert out.returncode == 0, out.stdout + out.stderr
    for rule in ("train_clean", "train_adversarial", "attack_", "health", "sensitivity", "fig1_examples"):
        assert rule in out.stdout
