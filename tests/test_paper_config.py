"""config/paper.yaml must carry exactly the paper's parameters (DESIGN.md's table, Tables S1–S4)."""

from pathlib import Path

import pytest
import yaml

CFG = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "paper.yaml").read_text())

# size, batch, max epochs, patience, lr, decay, momentum, adv eps, adv step, adv epochs
PAPER = {
    "ct": (224, 50, 200, 50, 2e-4, 1e-6, 0.9, 0.003, 0.00075, 200),
    "mammo": (116, 50, 100, 20, 2e-4, 1e-6, 0.9, 0.002, 0.0005, 100),
    "mri": (224, 50, 100, 5, 2e-4, 1e-6, 0.9, 0.004, 0.001, 200),
    "mnist": (32, 64, 20, 0, 0.01, 0, 0, 0.2, 0.05, 50),
    "cifar10": (32, 128, 60, 10, 1e-3, 1e-5, 0.9, 0.02, 0.005, 100),
}


@pytest.mark.parametrize("ds", PAPER)
def test_paper_parameters(ds):
    d = CFG["datasets"][ds]
    t, a = d["train"], d["adversarial_training"]
    got = (d["preprocess"]["size"], t["batch_size"], t["epochs"], t["patience"], t["lr"], t["decay"],
           t["momentum"], a["eps"], a["step"], a["epochs"])
    assert got == pytest.approx(PAPER[ds])
    assert d["model"] == {"arch": "vgg16", "pretrained": "imagenet"}
    assert a["iters"] == 7 and a["batch_size"] == 128 and a["clean_fraction"] == 0.5 and a["regimes"] == ["adv_pgd"]
    assert [0.001, 0.002, 0.004, 0.006] == [e for e in d["attack"]["eps"] if e <= 0.006]
    assert d["sensitivity"]["exclude_fraction"] == 0.2


def test_attack_parameters_table_s1():
    a = CFG["attacks"]
    assert a["bim"] == {"steps": 10, "alpha_ratio": 0.1}
    assert a["pgd"]["steps"] == 10 and a["pgd"]["alpha_ratio"] == 0.25 and a["pgd"]["restarts"] == 20
    assert a["labels"] == "predicted"


def test_augmentation_only_for_medical_sets():
    for ds in ("mnist", "cifar10"):
        assert CFG["datasets"][ds]["train"]["augment"] == {"hflip": False, "vflip": False, "rotate_deg": 0}
    for ds in ("ct", "mammo", "mri"):
        assert "augment" not in CFG["datasets"][ds]["train"]  # schema default: flips + ±20°
