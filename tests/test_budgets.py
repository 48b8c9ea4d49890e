"""The audit's budgets and its time estimate (no workflow run): known answers."""

from __future__ import annotations

import argparse

import pytest
import torch

from oncorobust import cli
from oncorobust.pipeline import budgets
from oncorobust.pipeline.passes import attack_passes, health_passes, sensitivity_passes

CONFIG = {"attacks": {}, "datasets": {"a": {"attack": {"methods": ["fgsm", "pgd", "worst"], "eps": [0.001, 0.002]},
                                            "model": {"arch": "torchscript:x.ts"}}}}


def test_budget_presets_and_their_passes():
    quick = budgets.apply_budget(CONFIG, "quick", "a")
    assert quick["attacks"]["worst"]["members"] == ["apgd_margin"] and quick["attacks"]["budget"] == "quick"
    assert CONFIG["attacks"] == {}, "the input config is not changed"
    thorough = budgets.apply_budget(CONFIG, "thorough", "a")
    assert thorough["attacks"]["apgd_ce"]["restarts"] == 3 and thorough["datasets"]["a"]["sensitivity"]["restarts"] == 3
    p = {b: budgets.planned_passes(budgets.apply_budget(CONFIG, b, "a"), "a", n_test=10, n_val=5)
         for b in budgets.BUDGETS}
    assert p["quick"]["attack"] < p["standard"]["attack"] < p["thorough"]["attack"]
    assert p["quick"]["sensitivity"] < p["standard"]["sensitivity"] < p["thorough"]["sensitivity"]
    # known answer: quick's worst = APGD-margin 25 steps (3·25·2 + 2) + 2; fgsm 4; pgd 3·10 + 2; +3 each
    per_eps = (4 + 3) + (32 + 3) + (3 * 25 * 2 + 2 + 2 + 3)
    assert p["quick"]["attack"] == 10 * 2 * per_eps
    assert p["quick"]["health"] == 10 * health_passes({"steps": 10, "restarts": 1}, 0)
    assert p["standard"]["import"] == 15 and "train" not in p["standard"]
    assert attack_passes("worst", {"members": ["fab"]}, {"fab": {"steps": 10}}) == 3 * 10 * 2 + 2 + 2
    # jobs: 8 besides the attacks; one attack job per method (default), or per method and ε
    assert p["quick"]["jobs"] == 8 + 3
    per_eps = {**CONFIG, "attacks": {"jobs": "per_eps"}}
    assert budgets.planned_passes(per_eps, "a", n_test=10, n_val=5)["jobs"] == 8 + 3 * 2
    with pytest.raises(ValueError, match="unknown budget"):
        budgets.apply_budget(CONFIG, "fast", "a")


def test_estimate_follows_the_dag():
    passes = {"import": 100, "attack": 1000, "sensitivity": 300, "health": 50, "jobs": 10}
    # one core: everything in a row; two: attacks beside the search
    whole = {}  # the whole plan (the upper bound)
    assert budgets.estimate_seconds(passes, 0.01, cores=1, early_exit=whole) == pytest.approx(1 + 13 + 0.5 + 30)
    assert budgets.estimate_seconds(passes, 0.01, cores=2, early_exit=whole) == pytest.approx(1 + 6.5 + 0.5 + 15)
    assert budgets.estimate_seconds({**passes, "attack": 0}, 0.01, cores=4, early_exit=whole) == pytest.approx(1 + 3 + 0.5 + 15)
    # by default the search is expected to use a fifth of its plan (measured, benchmarks/audit_budgets.py)
    assert budgets.estimate_seconds(passes, 0.01, cores=2) == pytest.approx(1 + (10 + 0.6) / 2 + 0.5 + 15)
    assert sensitivity_passes(budgets.DEFAULT_SENSITIVITY) > sensitivity_passes(budgets.PRESETS["quick"]["sensitivity"]
                                                                               | {"eps_max": 0.02, "tol": 1e-5})


def _args(tmp_path, **kw):
    parser = cli.build_parser()
    base = ["audit", "--model", kw.pop("model"), "--data", str(tmp_path)]
    for k, v in kw.items():
        base += [f"--{k.replace('_', '-')}", *([str(x) for x in v] if isinstance(v, list) else [str(v)])]
    return parser.parse_args(base)


def test_audit_config_model_forms_and_images(tmp_path):
    for cls in ("benign", "malignant", "__MACOSX", ".hidden"):
        (tmp_path / cls).mkdir()
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1)).eval()
    torch.export.save(torch.export.export(net, (torch.rand(1, 1, 8, 8),)), tmp_path / "m.pt2")
    cfg = cli.audit_config(_args(tmp_path, model=str(tmp_path / "m.pt2"), output="logit", positive_class=0,
                                 color="rgb", budget="quick"))
    entry = cfg["datasets"]["audit"]
    assert entry["model"]["arch"] == f"export:{tmp_path / 'm.pt2'}"
    assert entry["model"]["output"] == "logit" and entry["model"]["positive_class"] == 0
    assert entry["source"]["classes"] == ["benign", "malignant"]  # __MACOSX and hidden folders ignored
    assert entry["preprocess"]["color"] == "rgb" and entry["preprocess"]["intensity"] == {"mode": "bitdepth"}
    assert entry["sensitivity"]["method"] == "apgd_margin" and cfg["attacks"]["budget"] == "quick"
    window = cli.audit_config(_args(tmp_path, model=str(tmp_path / "m.pt2"), intensity="window", window=[0, 4095]))
    assert window["datasets"]["audit"]["preprocess"]["intensity"] == {"mode": "window", "window": [0.0, 4095.0]}
    (tmp_path / "weights.pt").write_bytes(b"x")
    with pytest.raises(cli.OncorobustError, match="neither a TorchScript model nor a torch.export program"):
        cli.audit_config(_args(tmp_path, model=str(tmp_path / "weights.pt")))
    with pytest.raises(cli.OncorobustError, match="describe a given model"):
        cli.audit_config(_args(tmp_path, model="torchvision:resnet18", output="logit"))


def test_time_one_pass_measures_the_model(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    net(torch.rand(1, 1, 16, 16))
    torch.jit.script(net.eval()).save(str(tmp_path / "m.ts"))
    cfg = cli.audit_config(_args(tmp_path, model=str(tmp_path / "m.ts"), size=16))
    t = cli.time_one_pass(cfg, "audit", batch=4)
    assert 0 < t < 0.5
    cfg["datasets"]["audit"]["preprocess"]["size"] = 20  # the Linear layer fits 16 px only
    with pytest.raises(cli.OncorobustError, match="timing the model on 4x1x20x20 random images failed"):
        cli.time_one_pass(cfg, "audit", batch=4)
