"""The stable Python API (``oncorobust.api``): every exported name resolves and is documented,
and the notebook examples of the README's API section run as written.

Imports only through ``oncorobust.api`` (plus torch, numpy, pandas, pytest and the standard
library): a test here that needs an internal module means the API lacks something.
"""

import inspect
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from oncorobust import api

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Python API (notebooks)"


def _section() -> str:
    """The README's API section (its examples are run as written)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION in text, f"no README section {SECTION!r}"
    body = text[text.index(SECTION):]
    nxt = re.search(r"^## ", body[len(SECTION):], flags=re.M)
    return body[:len(SECTION) + nxt.start()] if nxt else body


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


# ---------------------------------------------------------------------------------- the names


def test_every_exported_name_resolves():
    """A moved or renamed internal module fails here, naming the export it broke."""
    assert len(api.__all__) == len(set(api.__all__))
    broken = []
    for name in api.__all__:
        try:
            getattr(api, name)
        except (AttributeError, ImportError) as exc:
            broken.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not broken, "oncorobust.api names that no longer resolve:\n" + "\n".join(broken)
    with pytest.raises(AttributeError, match="no_such_name"):
        api.no_such_name  # noqa: B018
    assert set(api.__all__) <= set(dir(api))


def test_star_import_gives_every_name():
    namespace: dict = {}
    exec("from oncorobust.api import *", namespace)  # noqa: S102
    assert set(api.__all__) <= set(namespace)


def test_every_exported_name_is_documented():
    """Callables carry their own docstring (a class's own, not an inherited one); constants are
    described in the module docstring; every name is in the docs' table."""
    table = _section()
    undocumented, not_in_docs = [], []
    for name in api.__all__:
        obj = getattr(api, name)
        if inspect.isclass(obj):
            doc = obj.__dict__.get("__doc__")
        elif callable(obj):
            doc = inspect.getdoc(obj)
        else:
            doc = f"{name}" if f"``{name}``" in (api.__doc__ or "") else None
        if not doc or not doc.strip():
            undocumented.append(name)
        if f"`{name}`" not in table:
            not_in_docs.append(name)
    assert not undocumented, f"exported without a docstring: {undocumented}"
    assert not not_in_docs, f"exported but not listed in the API docs: {not_in_docs}"


def test_the_wrappers_document_args_returns_raises():
    for fn in (api.load_given_model, api.health_checks):
        doc = inspect.getdoc(fn)
        assert all(s in doc for s in ("Args:", "Returns:", "Raises:")), fn.__name__
        missing = [p for p in inspect.signature(fn).parameters if f"{p}:" not in doc]
        assert not missing, f"{fn.__name__}: parameters without a line in Args: {missing}"


def test_import_is_light():
    """``import oncorobust.api`` imports no internal module until one of its names is used."""
    code = ("import sys, oncorobust.api as a; heavy = [m for m in ('oncorobust.models.loading',"
            " 'oncorobust.data.preprocess', 'oncorobust.evaluation.evaluate') if m in sys.modules]; print(heavy);"
            " a.METHODS; print('oncorobust.spec' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "True"], out.stdout + out.stderr


# ------------------------------------------------------------------------- the notebook examples


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The namespace after running the docs' python blocks in order, in a fresh folder."""
    blocks = _python_blocks(_section())
    assert len(blocks) >= 2, "the API docs lost their examples"
    folder = tmp_path_factory.mktemp("notebook")
    namespace: dict = {"__name__": "__notebook__"}
    cwd = Path.cwd()
    try:
        os.chdir(folder)
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    finally:
        os.chdir(cwd)
    namespace["folder"] = folder
    return namespace


def test_the_example_attacks_and_scores(example):
    frame, x, y = example["frame"], example["x"], example["y"]
    # the fixed columns, then the model's logits (clean, as attacked, attacked away from the true label)
    assert list(frame.columns[:len(api.ATTACK_COLUMNS)]) == list(api.ATTACK_COLUMNS)
    assert [c for c in frame.columns if "_logit_" in c][0] == "clean_logit_0"
    assert list(frame.sample_id) == example["ids"] and (frame.label.to_numpy() == y.numpy()).all()
    assert (frame.linf <= 0.15 + 1e-6).all()
    clean = (frame.clean_pred == frame.label).mean()
    adv = (frame.adv_pred == frame.label).mean()
    assert adv <= clean
    # the frame's clean predictions are the model's own
    pred, prob = api.predict(example["model"], x)
    assert (frame.clean_pred.to_numpy() == pred.numpy()).all()
    assert np.allclose(frame.clean_prob.to_numpy(), prob.numpy(), atol=1e-6)


def test_the_example_brackets_each_flip(example):
    b = example["bracket"]
    assert set(b) == {"eps_lower", "eps_upper", "first_order"} and all(len(v) == 4 for v in b.values())
    assert (b["eps_lower"] <= b["eps_upper"]).all()
    finite = torch.isfinite(b["eps_upper"])
    assert finite.any(), "the stand-in model should flip within eps_max"
    assert (b["eps_upper"][finite] <= 0.25).all()
    assert ((b["eps_upper"] - b["eps_lower"])[finite] <= 0.01 + 1e-6).all()
    # a confirmed flip: the attack at the upper end flips the image
    model, x = example["model"], example["x"][:4][finite]
    pred = api.predict(model, x)[0]
    adv = api.attack(model, x, pred, "apgd_margin", b["eps_upper"][finite] * 1.01, steps=50)
    assert (api.predict(model, adv)[0] != pred).float().mean() >= 0.5


def test_the_example_runs_the_health_checks(example):
    health = example["health"]
    assert list(health.columns) == ["check", "passed", "value", "threshold", "detail"]
    assert {"gradients", "deterministic", "unbounded_attack", "pgd_convergence", "loss_converged"} <= set(health.check)
    passed = dict(zip(health.check, health.passed))
    assert passed["gradients"] and passed["deterministic"] and passed["unbounded_attack"]


def test_the_example_reads_a_data_source(example):
    tensors, stats, manifest = example["tensors"], example["stats"], example["manifest"]
    assert set(tensors) == {"train", "val", "test"} and set(manifest.split) == {"train", "val", "test"}
    x = example["test"]["x"]
    assert x.dtype == torch.float32 and x.shape[1:] == (1, 16, 16) and 0 <= x.min() and x.max() <= 1
    assert stats["size"] == 16 and stats["channels"] == 1 and len(stats["classes"]) == 10
    assert len(example["test"]["ids"]) == len(x) == len(example["test"]["y"])


def test_a_model_file_round_trips(example, tmp_path):
    """``save_to`` keeps the model file; :func:`api.load_model` gives the same model back."""
    x = example["x"]
    again = api.load_given_model(example["folder"] / "model.pt2", classes=["benign", "malignant"], size=32,
                                 save_to=tmp_path / "clean.pt")
    loaded = api.load_model(tmp_path / "clean.pt")
    with torch.no_grad():
        assert torch.equal(loaded(x), again(x)) and torch.equal(loaded(x), example["model"](x))


# ------------------------------------------------------------------------ a state dict, a card


class _Net(torch.nn.Sequential):
    def __init__(self, num_classes: int = 2, in_channels: int = 1):
        super().__init__(torch.nn.Conv2d(in_channels, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                         torch.nn.Flatten(), torch.nn.Linear(16, num_classes))


FACTORY = """import torch


def build(num_classes, in_channels):
    return torch.nn.Sequential(torch.nn.Conv2d(in_channels, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16, num_classes))
"""


def test_a_state_dict_with_a_python_factory(tmp_path):
    """A state dict (in a training checkpoint, with DataParallel's prefix) of a ``python:`` arch,
    normalised with a given mean/std; a checkpoint that does not fit is a CheckpointError."""
    torch.manual_seed(1)
    (tmp_path / "tiny_nets.py").write_text(FACTORY)
    net = _Net().eval()
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}, tmp_path / "ck.pt")
    arch = f"python:{tmp_path / 'tiny_nets.py'}:build"
    model = api.load_given_model(arch, tmp_path / "ck.pt", classes=2, size=16, normalize=([0.5], [0.25]))
    x = torch.rand(6, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x), net((x - 0.5) / 0.25), atol=1e-5)
    frame = api.evaluate_attack(model, x, torch.tensor([0, 1] * 3), [str(i) for i in range(6)], "fgsm", 0.05,
                                labels="true")
    assert (frame.adv_pred == frame.label).mean() <= (frame.clean_pred == frame.label).mean()
    with pytest.raises(api.CheckpointError, match="does not fit"):
        api.load_given_model(arch, tmp_path / "ck.pt", classes=3, size=16)
    with pytest.raises(api.ModelError, match="give the checkpoint"):
        api.load_given_model(arch, classes=2, size=16)
    with pytest.raises(api.ModelError, match="neither a TorchScript model nor a torch.export program"):
        api.load_given_model(tmp_path / "ck.pt", classes=2, size=16)  # a state dict without its arch
    with pytest.raises(api.ModelError, match="normalize=.mean, std."):
        api.load_given_model(arch, tmp_path / "ck.pt", classes=2, size=16, normalize="dataset")


def test_a_card_from_tables(tmp_path):
    pd.DataFrame([{"dataset": "demo", "regime": "clean", "method": "pgd", "eps": 0.03, "n": 16, "accuracy": 25.0,
                   "ci_low": 10.0, "ci_high": 50.0, "flip_rate": 50.0, "clean_accuracy": 50.0, "clean_ci_low": 30.0,
                   "clean_ci_high": 70.0}]).to_csv(tmp_path / "summary.csv", index=False)
    pd.DataFrame([{"dataset": "demo", "regime": "clean", "n": 16, "eps50": 0.1, "eps50_ci_low": 0.05,
                   "eps50_ci_high": 0.2, "eps10": 0.05, "eps10_ci_low": 0.01, "eps10_ci_high": 0.08}]
                 ).to_csv(tmp_path / "robustness.csv", index=False)
    (tmp_path / "stats.json").write_text(json.dumps({"classes": ["benign", "malignant"]}))
    card = api.gather_card(dataset="demo", regime="clean", summary_csv=tmp_path / "summary.csv",
                           robustness_csv=tmp_path / "robustness.csv", stats_json=tmp_path / "stats.json")
    md = api.render_card_markdown(card)
    assert md.startswith("# Robustness card: demo, clean model") and "**Verdict:**" in md
    assert "<!DOCTYPE html>" in api.render_card_html(card)
    assert math.isclose(card["clean"]["accuracy"], 50.0)
    with pytest.raises(api.CardError):
        api.gather_card(dataset="other", regime="clean", summary_csv=tmp_path / "summary.csv",
                        robustness_csv=tmp_path / "robustness.csv", stats_json=tmp_path / "stats.json")
