"""Device handling (oncorobust.device): eval_mode restores every submodule's own mode; strict_fp32."""

import pytest
import torch
from torch import nn

from oncorobust.attacks import attack
from oncorobust.device import eval_mode, resolve_device, strict_fp32


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                         nn.Flatten(), nn.Linear(4 * 8 * 8, 2))


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_eval_inside_and_nested_modes_restored():
    model = _net().train()
    model[1].eval()  # a frozen BatchNorm kept in eval inside a model in train mode
    before = _modes(model)
    assert before[0] and not before[2]  # mixed modes
    with eval_mode(model) as m:
        assert m is model
        assert not any(_modes(model))
        with eval_mode(model):  # nested: the inner block restores eval, the outer the mixed modes
            assert not any(_modes(model))
        assert not any(_modes(model))
    assert _modes(model) == before  # model.train(was) would have put the BatchNorm back in train mode


def test_mode_restored_when_the_block_raises():
    model = _net().train()
    model[3].eval()
    before = _modes(model)
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(model):
            assert not model.training
            raise RuntimeError("boom")
    assert _modes(model) == before


def test_eval_model_stays_in_eval():
    model = _net().eval()
    with eval_mode(model):
        pass
    assert not any(_modes(model))


def test_attack_restores_mixed_modes():
    model = _net().train()
    model[1].eval()
    before = _modes(model)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    attack(model, x, torch.zeros(3, dtype=torch.long), "pgd", 0.01)
    assert _modes(model) == before


def test_strict_fp32_restores_the_setting():
    conv = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
    obj, name = ((torch.backends.cudnn.conv, "fp32_precision") if conv is not None
                 else (torch.backends.cudnn, "allow_tf32"))
    old = getattr(obj, name)
    with strict_fp32():
        assert getattr(obj, name) in ("ieee", False)
    assert getattr(obj, name) == old


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
