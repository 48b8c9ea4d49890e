"""The README's recipe for adding an attack, followed to the letter with a toy method.

The recipe is one module plus one registry entry (``oncorobust.spec``'s docstring, the README's
"Adding an attack"). Here both are written into a copy of the package (imported through
``PYTHONPATH``, which comes before the editable install), nothing else is edited, and the toy
method then runs alone, as a member of ``worst``, in the health checks, through the config checks
and (full run) the whole workflow: attack jobs, tables and a card.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import load_test_config

REPO = Path(__file__).resolve().parents[1]

#: step 1 of the recipe: the module (a margin-descent sign attack: ``steps`` steps of
#: ``step_ratio`` × ε on the logit margin, projected)
TOY_MODULE = '''\
"""A toy attack for the recipe test: signed steps down the logit margin."""
import torch

from oncorobust.attacks.kernels import margin, project


def run(model, x, y, e, p, seeds, **context):
    adv = x.clone()
    for _ in range(int(p["steps"])):
        adv.requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(margin(model(adv), y).sum(), adv)
        adv = project(adv.detach() - float(p["step_ratio"]) * e * g.sign(), x, e)
    return adv.detach()
'''

#: step 2: the registry entry (inserted before ``worst``, the ensemble, which stays last)
TOY_ENTRY = ('    Method("toy", "sign", "toy margin", "#777777", run="oncorobust.attacks.toy:run",\n'
             '           defaults={"steps": 3, "step_ratio": 0.5}, passes=_iterative_passes(1.0), strength=8),\n')
WORST_ENTRY = '    Method("worst", "ensemble"'


def recipe_copy(root: Path) -> Path:
    """A copy of the workflow and the package with the recipe's two additions; returns its root."""
    shutil.copytree(REPO / "workflow", root / "workflow")
    pkg = root / "src" / "oncorobust"
    shutil.copytree(REPO / "src" / "oncorobust", pkg, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (pkg / "attacks" / "toy.py").write_text(TOY_MODULE)
    spec = pkg / "spec.py"
    text = spec.read_text()
    assert text.count(WORST_ENTRY) == 1
    spec.write_text(text.replace(WORST_ENTRY, TOY_ENTRY + WORST_ENTRY))
    return root


def _env(code: Path) -> dict:
    return {**os.environ, "PYTHONPATH": f"{code / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


CHECK = textwrap.dedent('''
    import copy, sys, torch, yaml
    from torch import nn
    from oncorobust import api, spec
    from oncorobust.config import validate_config
    from oncorobust.pipeline.passes import attack_passes
    from oncorobust.pipeline.workflow_files import schema_file

    assert spec.METHOD_NAMES[-2:] == ("toy", "worst") and "toy" in spec.MEMBER_METHODS
    assert api.method_params("toy", {"steps": 5}) == {"steps": 5, "step_ratio": 0.5}
    # the config: the method and its parameters accepted with no schema edit, defaults filled
    cfg = yaml.safe_load(open(sys.argv[1]))
    cfg["attacks"]["toy"] = {"steps": 2}
    cfg["attacks"]["worst"] = {"members": ["toy", "fgsm"]}
    cfg["datasets"]["digits"]["attack"]["methods"] = ["toy", "worst"]
    validate_config(cfg, schema_file())
    assert cfg["attacks"]["toy"] == {"steps": 2, "step_ratio": 0.5}, cfg["attacks"]["toy"]
    bad = copy.deepcopy(cfg)
    bad["attacks"]["toy"]["stepz"] = 1
    try:
        validate_config(bad, schema_file())
        raise SystemExit("an unknown toy parameter was accepted")
    except api.ConfigError as exc:
        assert "attacks.toy" in str(exc) and "stepz" in str(exc), exc
    assert attack_passes("toy", {"steps": 2}) == 3 * 2 + 2
    # the attack alone and as a member of worst, on a small CNN
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 2)).eval()
    x = torch.rand(24, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    adv = api.attack(model, x, y, "toy", 0.05)
    assert (adv - x).abs().max() <= 0.05 + 1e-6
    with torch.no_grad():
        flipped = (model(adv).argmax(1) != y).sum().item()
    worst = api.attack(model, x, y, "worst", 0.05, members=["toy", "fgsm"], member_params={"toy": {"steps": 2}})
    with torch.no_grad():
        flipped_worst = (model(worst).argmax(1) != y).sum().item()
    assert flipped > 0 and flipped_worst >= flipped, (flipped, flipped_worst)
    frame = api.evaluate_attack(model, x, y, [f"s{i}" for i in range(24)], "toy", 0.05)
    assert (frame.adv_pred != frame.clean_pred).sum() == flipped
    checks = api.health_checks(model, x, y, ref_eps=0.05, pgd={"steps": 3}, square_queries=50)
    assert len(checks) and checks.passed.notna().all()
    print("recipe ok", flipped, flipped_worst)
''')


def test_a_method_added_by_the_recipe_runs_everywhere_without_another_edit(tmp_path):
    """The copy with the toy module and entry: the config accepts and fills it, ``attack`` runs it
    alone and as a ``worst`` member (never weaker than alone), evaluate_attack scores it, the cost
    model counts it, and a typo in its parameters is refused by name."""
    code = recipe_copy(tmp_path / "code")
    out = subprocess.run([sys.executable, "-c", CHECK, str(REPO / ".test" / "config_one_dataset.yaml")],
                         capture_output=True, text=True, env=_env(code), cwd=tmp_path)
    assert out.returncode == 0 and "recipe ok" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]


@pytest.mark.full
def test_the_recipe_method_runs_through_the_workflow(tmp_path):
    """The whole workflow on one dataset with the toy method alone and inside ``worst``: its attack
    job, the health checks (worst_convergence doubles its steps), the tables and the card."""
    code = recipe_copy(tmp_path / "code")
    work = tmp_path / "work"
    work.mkdir()
    cfg = load_test_config("config_one_dataset.yaml")
    cfg["attacks"].update({"toy": {"steps": 2}, "worst": {"members": ["toy", "fgsm"]}})
    cfg["datasets"]["digits"]["attack"]["methods"] = ["fgsm", "toy", "worst"]
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(code / "workflow" / "Snakefile"),
                          "--directory", str(work), "--configfile", str(work / "config.yaml"), "--cores", "2"],
                         capture_output=True, text=True, env=_env(code))
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    res = work / "results"
    assert (res / "digits" / "attacks" / "clean" / "toy" / "eps=0.1.csv").is_file()
    summary = pd.read_csv(res / "tables" / "attack_summary.csv")
    toy = summary[(summary.method == "toy") & (summary.regime == "clean")]
    worst = summary[(summary.method == "worst") & (summary.regime == "clean")]
    assert len(toy) == 1 and len(worst) == 1
    assert worst.accuracy.iloc[0] <= toy.accuracy.iloc[0]  # a member never beats its ensemble
    health = pd.read_csv(res / "tables" / "evaluation_health.csv")
    assert {"worst_convergence", "iterative_vs_fgsm"} <= set(health.check)
    card = (res / "cards" / "digits_clean.md").read_text()
    assert "Budget of toy: step_ratio 0.5, steps 2." in card and "strongest of toy, fgsm" in card
    assert "with doubled budgets (toy steps 4)" in card  # fgsm has no budget to double
