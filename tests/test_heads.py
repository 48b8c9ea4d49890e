"""A real user's model: output heads (logits, one logit, probabilities), NaN outputs, training
checkpoints, torch.export programs and the python: factory contract. Known answers on tiny
models, CPU."""

from __future__ import annotations

import argparse
import logging

import pytest
import torch
from torch import nn

from oncorobust.models import architectures, checkpoints, loading
from oncorobust.attacks.methods import attack, first_order_eps
from oncorobust.attacks.kernels import margin
from oncorobust.errors import AttackError, ModelError
from oncorobust.evaluation.evaluate import evaluate_attack
from oncorobust.io import save_torch
from oncorobust.progress import Meter, NonFiniteOutputError, meter, monitored
from oncorobust.evaluation.sensitivity import flip_eps_bracket

SIZE = 8
STATS = {"size": SIZE, "channels": 1, "classes": ["benign", "malignant"], "mean": [0.0], "std": [1.0]}
NONE = {"normalize": "none"}


class OneLogit(nn.Module):
    """z = w·x + b: one logit per image (a BCE head), z > 0 meaning 'malignant'."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(SIZE * SIZE, 1)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(1, SIZE * SIZE, generator=g))
            self.fc.bias.fill_(-float(self.fc.weight.sum()) * 0.5)  # z = w·(x − 0.5): both signs

    def forward(self, x):
        return self.fc(x.flatten(1))


class Softmaxed(nn.Module):
    def __init__(self, sigmoid: bool = False):
        super().__init__()
        self.sigmoid = sigmoid
        self.net = OneLogit() if sigmoid else nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 2))

    def forward(self, x):
        out = self.net(x)
        return torch.sigmoid(out) if self.sigmoid else torch.softmax(out, 1)


def _images(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (0.3 + 0.4 * torch.rand(n, 1, SIZE, SIZE, generator=g)).float()  # away from the box


def _script(net, path):
    torch.jit.script(net.eval()).save(str(path))
    return {"arch": f"torchscript:{path}", "input": NONE}


def _imported(cfg, tmp_path, images=None, name="clean.pt"):
    payload = loading.import_checkpoint(cfg, STATS, _images() if images is None else images)
    save_torch(payload, tmp_path / name)
    return payload, loading.load_model(tmp_path / name)


# ----------------------------------------------------------------------------- one logit


def test_one_logit_head_detected_wrapped_and_flipping_eps_is_analytic(tmp_path, caplog):
    net = OneLogit()
    with caplog.at_level(logging.INFO, logger="oncorobust.models"):
        payload, model = _imported(_script(net, tmp_path / "one.ts"), tmp_path)
    assert payload["meta"]["output"] == "logit"
    assert "output head detected on 24 images: logit" in caplog.text
    x = _images(16, seed=2)
    with torch.no_grad():
        z = net(x).squeeze(1)
        logits = model(x)
    assert logits.shape == (16, 2)
    assert torch.equal(logits.argmax(1), (z > 0).long())  # z > 0 means class 1
    pred = logits.argmax(1)
    assert torch.allclose(margin(logits, pred), z.abs(), atol=1e-5)
    exact = z.abs() / net.fc.weight.abs().sum()  # L∞ flipping ε of a linear one-logit model
    assert torch.allclose(first_order_eps(model, x, pred), exact, rtol=1e-4)
    br = flip_eps_bracket(model, x, eps_max=0.5, tol=1e-4, rel_tol=0.001, steps=10, restarts=1,
                          fab_check=False, refine_steps=0, ids=[str(i) for i in range(16)])
    assert (br["eps_upper"] >= exact * (1 - 1e-4)).all(), "a flip below the analytic minimum"
    assert (br["eps_upper"] <= exact * 1.01 + 1e-4).all()


def test_one_logit_positive_class_zero(tmp_path):
    net = OneLogit()
    cfg = {**_script(net, tmp_path / "one.ts"), "output": "logit", "positive_class": 0}
    payload, model = _imported(cfg, tmp_path)
    x = _images(8, seed=3)
    with torch.no_grad():
        assert torch.equal(model(x).argmax(1), (net(x).squeeze(1) <= 0).long())


def test_one_output_in_unit_interval_is_ambiguous_under_auto(tmp_path):
    cfg = _script(Softmaxed(sigmoid=True), tmp_path / "sig.ts")
    with pytest.raises(ModelError, match="a one-logit head or a sigmoid probability"):
        loading.import_checkpoint(cfg, STATS, _images())


# ----------------------------------------------------------------------------- probabilities


def test_probabilities_refused_unless_declared_then_attacked_as_log_probabilities(tmp_path):
    net = Softmaxed()
    cfg = _script(net, tmp_path / "p.ts")
    with pytest.raises(ModelError, match=r"look like probabilities.*model.output: probabilities"):
        loading.import_checkpoint(cfg, STATS, _images())
    with pytest.raises(ModelError, match="model.output = logits, but every output row"):
        loading.import_checkpoint({**cfg, "output": "logits"}, STATS, _images())
    payload, model = _imported({**cfg, "output": "probabilities"}, tmp_path)
    assert payload["meta"]["output"] == "probabilities"
    x = _images(8, seed=4)
    with torch.no_grad():
        p = net(x)
        assert torch.allclose(torch.softmax(model(x), 1), p, atol=1e-6)  # log p are logits of p
    adv = attack(model, x, p.argmax(1), "apgd_margin", 0.05, steps=10)
    assert float((adv - x).abs().max()) <= 0.05 + 1e-6


def test_sigmoid_probability_declared(tmp_path):
    net = Softmaxed(sigmoid=True)
    payload, model = _imported({**_script(net, tmp_path / "s.ts"), "output": "probabilities"}, tmp_path)
    x = _images(8, seed=5)
    with torch.no_grad():
        q = net(x).squeeze(1)
        assert torch.allclose(torch.softmax(model(x), 1)[:, 1], q, atol=1e-5)


def test_declared_head_that_does_not_fit_is_refused(tmp_path):
    with pytest.raises(ModelError, match="model.output = logit, but the model returns shape"):
        loading.import_checkpoint({**_script(Softmaxed(), tmp_path / "p.ts"), "output": "logit"}, STATS, _images())
    with pytest.raises(ModelError, match="outputs leave"):
        loading.import_checkpoint({**_script(OneLogit(), tmp_path / "o.ts"), "output": "probabilities"}, STATS, _images())


# ----------------------------------------------------------------------------- non-finite outputs


class NaNAbove(nn.Module):
    """Logits NaN on images brighter than 0.5 on average, finite otherwise."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(SIZE * SIZE, 2)

    def forward(self, x):
        out = self.fc(x.flatten(1))
        bright = x.flatten(1).mean(1, keepdim=True) > 0.5
        return torch.where(bright, torch.full_like(out, float("nan")), out)


def test_nan_model_refused_at_import_naming_how_many_images(tmp_path):
    x = torch.cat([torch.full((3, 1, SIZE, SIZE), 0.9), torch.full((5, 1, SIZE, SIZE), 0.1)])
    with pytest.raises(ModelError, match="NaN or infinite outputs on 3 of 8 images"):
        loading.import_checkpoint(_script(NaNAbove(), tmp_path / "nan.ts"), STATS, x)


class NaNOffGrey(nn.Module):
    """Finite on images of 0.45 grey, NaN on any image that moves more than 0.02 from it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(SIZE * SIZE, 2)

    def forward(self, x):
        out = self.fc(x.flatten(1))
        moved = (x - 0.45).flatten(1).abs().amax(1, keepdim=True) > 0.02
        return torch.where(moved, out * float("nan"), out)


def test_nan_logits_during_an_attack_are_an_attack_error():
    torch.manual_seed(0)
    model = NaNOffGrey().eval()
    x = torch.full((4, 1, SIZE, SIZE), 0.45)  # finite at first; PGD's random start moves them
    y = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(AttackError, match=r"NaN or infinite logits on \d+ of 4 images during pgd"):
        attack(model, x, y, "pgd", 0.1, steps=5)
    with pytest.raises(NonFiniteOutputError):
        evaluate_attack(model, torch.full((4, 1, SIZE, SIZE), 0.9), y, list("abcd"), "fgsm", 0.01)


# ----------------------------------------------------------------------------- checkpoints


class SmallBN(nn.Module):
    def __init__(self, num_classes=2, in_channels=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def _factory_cfg(tmp_path, ck):
    (tmp_path / "user_net.py").write_text(
        "from test_heads import SmallBN\n\ndef build(num_classes, in_channels):\n"
        "    return SmallBN(num_classes, in_channels)\n")
    return {"arch": f"python:{tmp_path / 'user_net.py'}:build", "checkpoint": str(ck), "input": NONE}


@pytest.mark.parametrize("form", ["torchvision_reference", "lightning", "ema_key", "no_bn_counter", "compiled"])
def test_training_checkpoint_forms(tmp_path, form, caplog):
    torch.manual_seed(0)
    net = SmallBN()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.1, 0.1)
    state = net.state_dict()
    key = None
    if form == "torchvision_reference":  # torchvision's references/classification/train.py
        obj = {"model": state, "optimizer": torch.optim.SGD(net.parameters(), lr=0.1).state_dict(),
               "lr_scheduler": {"last_epoch": 3}, "epoch": 3, "args": argparse.Namespace(lr=0.1, model="x")}
    elif form == "lightning":
        obj = {"epoch": 2, "global_step": 10, "state_dict": {f"model.{k}": v for k, v in state.items()},
               "pytorch-lightning_version": "2.4.0"}
    elif form == "ema_key":
        ema = {f"module.{k}": v for k, v in state.items()} | {"n_averaged": torch.tensor(7)}
        obj = {"model": {k: torch.zeros_like(v) for k, v in state.items()}, "model_ema": ema}
        key = "model_ema"
    elif form == "compiled":
        obj = {f"_orig_mod.{k}": v for k, v in state.items()}
    else:
        obj = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(obj, tmp_path / "ck.pt")
    cfg = _factory_cfg(tmp_path, tmp_path / "ck.pt")
    if key:
        cfg["checkpoint_key"] = key
    with caplog.at_level(logging.INFO, logger="oncorobust.models"):
        _, model = _imported(cfg, tmp_path)
    x = _images(6)
    with torch.no_grad():
        assert torch.allclose(model(x), net.eval()(x), atol=1e-6)
    if form == "torchvision_reference":
        assert "weights are taken from its key 'model'" in caplog.text
    if form == "lightning":
        assert "removed the key prefix 'model.'" in caplog.text


def test_checkpoint_with_foreign_objects_names_the_class(tmp_path):
    torch.save({"model": SmallBN().state_dict(), "loss": nn.CrossEntropyLoss()}, tmp_path / "ck.pt")
    with pytest.raises(checkpoints.CheckpointError, match=r"other than tensors \(torch.nn.modules.loss.CrossEntropyLoss\)"):
        checkpoints.read_state_dict(tmp_path / "ck.pt")


def test_unknown_checkpoint_key_lists_the_keys(tmp_path):
    torch.save({"model": SmallBN().state_dict(), "epoch": 1}, tmp_path / "ck.pt")
    with pytest.raises(checkpoints.CheckpointError, match=r"checkpoint_key = 'ema'.*its keys: epoch, model"):
        checkpoints.read_state_dict(tmp_path / "ck.pt", "ema")


# ----------------------------------------------------------------------------- python: factory contract


@pytest.mark.parametrize("signature, body", [
    ("num_classes, in_channels", "nn.Linear(in_channels * 64, num_classes)"),
    ("classes", "nn.Linear(64, classes)"),  # a count
    ("class_names", "nn.Linear(64, len(class_names))"),  # the names
])
def test_python_factory_gets_counts_or_names(tmp_path, monkeypatch, signature, body):
    (tmp_path / "fac.py").write_text("from torch import nn\n\n\nclass F(nn.Module):\n"
                                     f"    def __init__(self, {signature}):\n        super().__init__()\n"
                                     f"        self.fc = {body}\n\n    def forward(self, x):\n"
                                     "        return self.fc(x.flatten(1))\n\n\n"
                                     f"def build({signature}):\n    return F({signature})\n")
    net = architectures.build_net(f"python:{tmp_path / 'fac.py'}:build", classes=["benign", "malignant"], in_channels=1, size=8)
    assert net(torch.rand(3, 1, 8, 8)).shape == (3, 2)


def test_python_factory_that_misreads_the_contract_is_one_clear_error(tmp_path):
    (tmp_path / "bad.py").write_text("from torch import nn\n\ndef build(classes):\n"
                                     "    return nn.Linear(64, len(classes))  # names expected\n")
    with pytest.raises(ModelError, match=r"the factory failed when called with classes=2: TypeError.*class_names"):
        architectures.build_net(f"python:{tmp_path / 'bad.py'}:build", classes=2, in_channels=1, size=8)


# ----------------------------------------------------------------------------- torch.export


@pytest.mark.parametrize("dynamic", [False, True])
def test_export_program_imported_and_attacked(tmp_path, dynamic):
    torch.manual_seed(0)
    net = SmallBN().eval()
    example = torch.rand(2 if dynamic else 1, 1, SIZE, SIZE)
    shapes = {"x": {0: torch.export.Dim("batch")}} if dynamic else None
    torch.export.save(torch.export.export(net, (example,), dynamic_shapes=shapes), tmp_path / "m.pt2")
    payload, model = _imported({"arch": f"export:{tmp_path / 'm.pt2'}", "input": NONE}, tmp_path)
    assert payload["meta"]["source"] == "export" and payload["meta"]["output"] == "logits"
    x = _images(5)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-6)
    y = model(x).argmax(1)
    adv = attack(model, x, y, "pgd", 0.05, steps=3)  # gradients flow through the program
    assert float((adv - x).abs().max()) > 0
    with pytest.raises(checkpoints.CheckpointError, match="is a torch.export program, not a state dict"):
        checkpoints.read_state_dict(tmp_path / "m.pt2")


# ----------------------------------------------------------------------------- progress


def test_progress_meter_logs_rate_and_time_left(caplog):
    model = monitored(OneLogit().eval(), "test")
    with caplog.at_level(logging.INFO, logger="oncorobust.progress"):
        with meter("attack pgd ε=0.01", total=300, images=10, every=0.0) as m:
            x = _images(10).requires_grad_(True)
            model(x)  # forward with an input gradient: 3 passes per image
            m.finished(10)
    assert m.done == 30
    lines = [r.getMessage() for r in caplog.records if r.name == "oncorobust.progress"]
    assert any("10% of the planned passes, 0/10 images finished" in ln and "left" in ln for ln in lines)
    assert lines[-1].startswith("attack pgd ε=0.01: done, 30 passes (10% of the plan)")
    assert isinstance(m, Meter)


def test_one_logit_torchvision_checkpoint_is_built_with_one_output(tmp_path, caplog):
    """torchvision's resnet18 trained with num_classes=1 (BCE), saved by its reference scripts."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=1)
    net.eval()
    torch.save({"model": net.state_dict(), "epoch": 1, "args": argparse.Namespace(lr=0.1)}, tmp_path / "r18.pth")
    cfg = {"arch": "torchvision:resnet18", "checkpoint": str(tmp_path / "r18.pth"),
           "input": {"normalize": "none", "channels": 3}, "output": "logit"}
    stats = {**STATS, "size": 32}
    payload = loading.import_checkpoint(cfg, stats, torch.rand(6, 1, 32, 32))
    save_torch(payload, tmp_path / "clean.pt")
    model = loading.load_model(tmp_path / "clean.pt")
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        z = net(x.expand(-1, 3, -1, -1)).squeeze(1)
        assert torch.allclose(model(x)[:, 1] - model(x)[:, 0], z, atol=1e-5)
