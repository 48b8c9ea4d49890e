"""TRADES and MART losses against direct transcriptions of the authors' code on a fixed batch.

The references below transcribe ``trades_loss`` (github.com/yaodongyu/TRADES, trades.py, l_inf
branch) and ``mart_loss`` (github.com/YisenWang/MART, mart.py, l_inf branch) line by line, with
two mechanical changes: ``.cuda()`` is dropped and ``0.001 * torch.randn(...)`` is replaced by
the same ``noise`` tensor handed to oncorobust's loss (so the comparison is exact);
``optimizer.zero_grad()`` is left to the caller; ``Variable(...)`` is ``.detach()``;
``nn.KLDivLoss(size_average=False)`` is its modern spelling ``reduction='sum'``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from oncorobust.errors import OncorobustError
from oncorobust.training.losses import (REGIME_LOSSES, LossError, initial_noise, mart_adversarial,
                                        mart_loss, trades_adversarial, trades_loss)

EPS, STEP, ITERS = 0.03, 0.007, 5


# --------------------------------------------------------------------------- the authors' code

def ref_trades_loss(model, x_natural, y, noise, step_size=0.003, epsilon=0.031, perturb_steps=10,
                    beta=1.0):
    criterion_kl = nn.KLDivLoss(reduction="sum")  # size_average=False
    model.eval()
    batch_size = len(x_natural)
    x_adv = x_natural.detach() + noise.detach()  # 0.001 * torch.randn(x_natural.shape)
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1),
                                   F.softmax(model(x_natural), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
    logits = model(x_natural)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / batch_size) * criterion_kl(F.log_softmax(model(x_adv), dim=1),
                                                    F.softmax(model(x_natural), dim=1))
    loss = loss_natural + beta * loss_robust
    return loss, x_adv


def ref_mart_loss(model, x_natural, y, noise, step_size=0.007, epsilon=0.031, perturb_steps=10,
                  beta=6.0):
    kl = nn.KLDivLoss(reduction="none")
    model.eval()
    batch_size = len(x_natural)
    x_adv = x_natural.detach() + noise.detach()  # 0.001 * torch.randn(x_natural.shape)
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_ce = F.cross_entropy(model(x_adv), y)
        grad = torch.autograd.grad(loss_ce, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
    logits = model(x_natural)
    logits_adv = model(x_adv)
    adv_probs = F.softmax(logits_adv, dim=1)
    tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
    loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
    nat_probs = F.softmax(logits, dim=1)
    true_probs = torch.gather(nat_probs, 1, (y.unsqueeze(1)).long()).squeeze()
    loss_robust = (1.0 / batch_size) * torch.sum(
        torch.sum(kl(torch.log(adv_probs + 1e-12), nat_probs), dim=1) * (1.0000001 - true_probs))
    loss = loss_adv + float(beta) * loss_robust
    return loss, x_adv


# --------------------------------------------------------------------------- fixtures

def small_cnn(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, classes))


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(123)
    x = torch.rand(10, 1, 12, 12, generator=g)
    x[0] = 0.0  # images touching both ends of [0,1] exercise the clamps
    x[1] = 1.0
    y = torch.randint(0, 4, (10,), generator=g)
    return x, y


def warmed_model():
    """A model whose BatchNorm running statistics differ from the batch statistics, so that
    running the attack in train instead of eval mode would change the result."""
    model = small_cnn()
    with torch.no_grad():
        model.train()
        model(torch.rand(32, 1, 12, 12, generator=torch.Generator().manual_seed(9)) * 0.5)
    return model


def grads(model):
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("beta", [1.0, 6.0])
def test_trades_equals_authors_code(batch, beta):
    x, y = batch
    noise = initial_noise(x, seed=5)
    ours_m, ref_m = warmed_model(), warmed_model()
    ours_m.train(), ref_m.train()
    loss, x_adv = trades_loss(ours_m, x, y, eps=EPS, step=STEP, iters=ITERS, beta=beta, noise=noise,
                              return_adv=True)
    ref, ref_adv = ref_trades_loss(ref_m, x, y, noise, step_size=STEP, epsilon=EPS,
                                   perturb_steps=ITERS, beta=beta)
    assert torch.equal(x_adv, ref_adv)
    assert torch.allclose(loss, ref, rtol=1e-6, atol=0), (loss.item(), ref.item())
    loss.backward(), ref.backward()
    scale = max(g.abs().max().item() for g in grads(ref_m))
    for a, b in zip(grads(ours_m), grads(ref_m)):  # same maths, one clean forward instead of two
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * scale)
    assert ours_m.training
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x.clamp(0, 1))


@pytest.mark.parametrize("beta", [5.0, 6.0])
def test_mart_equals_authors_code(batch, beta):
    x, y = batch
    noise = initial_noise(x, seed=6)
    ours_m, ref_m = warmed_model(), warmed_model()
    ours_m.train(), ref_m.train()
    loss, x_adv = mart_loss(ours_m, x, y, eps=EPS, step=STEP, iters=ITERS, beta=beta, noise=noise,
                            return_adv=True)
    ref, ref_adv = ref_mart_loss(ref_m, x, y, noise, step_size=STEP, epsilon=EPS,
                                 perturb_steps=ITERS, beta=beta)
    assert torch.equal(x_adv, ref_adv)
    assert torch.equal(loss, ref), (loss.item(), ref.item())
    loss.backward(), ref.backward()
    for a, b in zip(grads(ours_m), grads(ref_m)):
        assert torch.equal(a, b)
    for a, b in zip(ours_m.buffers(), ref_m.buffers()):  # same forwards, same BN updates
        assert torch.equal(a, b)
    assert ours_m.training


def test_attack_runs_in_eval_mode(batch):
    """Crafting in train mode (BatchNorm batch statistics) gives other images; ours match eval."""
    x, y = batch
    noise = initial_noise(x, seed=1)
    m = warmed_model().train()
    ours = mart_adversarial(m, x, y, eps=EPS, step=STEP, iters=ITERS, noise=noise)
    assert m.training
    m_eval = warmed_model().eval()
    assert torch.equal(ours, mart_adversarial(m_eval, x, y, eps=EPS, step=STEP, iters=ITERS, noise=noise))
    assert not m_eval.training  # the caller's mode is restored, whichever it was


def test_generator_seed_and_noise_agree(batch):
    x, y = batch
    def m():  # fresh each call: a train-mode call updates the BatchNorm running statistics
        return warmed_model().train()

    a = trades_loss(m(), x, y, eps=EPS, step=STEP, iters=2, generator=torch.Generator().manual_seed(4))
    b = trades_loss(m(), x, y, eps=EPS, step=STEP, iters=2, seed=4)
    c = trades_loss(m(), x, y, eps=EPS, step=STEP, iters=2, noise=initial_noise(x, seed=4))
    assert torch.equal(a, b) and torch.equal(b, c)
    d = trades_loss(m(), x, y, eps=EPS, step=STEP, iters=2, seed=5)
    assert not torch.equal(a, d)
    before = torch.get_rng_state()
    mart_loss(m(), x, y, eps=EPS, step=STEP, iters=2, seed=4)
    assert torch.equal(before, torch.get_rng_state())  # the global RNG is untouched
    noise = initial_noise(x, seed=4)
    assert noise.shape == x.shape and 0.0005 < noise.std().item() < 0.0015


def test_eps_zero_is_clean(batch):
    x, y = batch
    m = warmed_model()
    for adv in (trades_adversarial(m, x, eps=0.0, step=STEP, iters=3, seed=0),
                mart_adversarial(m, x, y, eps=0.0, step=STEP, iters=3, seed=0)):
        assert torch.equal(adv, x)


def test_inner_maximisation_increases_its_objective(batch):
    x, y = batch
    m = warmed_model().eval()
    noise = initial_noise(x, seed=2)
    with torch.no_grad():
        p = F.softmax(m(x), 1)
        kl = lambda z: F.kl_div(F.log_softmax(m(z), 1), p, reduction="sum").item()  # noqa: E731
        x0 = (x + noise).clamp(0, 1)
        assert kl(trades_adversarial(m, x, eps=EPS, step=STEP, iters=ITERS, noise=noise)) > kl(x0)
        ce = lambda z: F.cross_entropy(m(z), y).item()  # noqa: E731
        assert ce(mart_adversarial(m, x, y, eps=EPS, step=STEP, iters=ITERS, noise=noise)) > ce(x0)


def test_bad_arguments(batch):
    x, y = batch
    m = warmed_model()
    with pytest.raises(LossError, match="exactly one"):
        trades_loss(m, x, y, eps=EPS, step=STEP, iters=1)
    with pytest.raises(LossError, match="not both"):
        trades_loss(m, x, y, eps=EPS, step=STEP, iters=1, seed=0, noise=initial_noise(x, seed=0))
    with pytest.raises(LossError, match="eps"):
        mart_loss(m, x, y, eps=2.0, step=STEP, iters=1, seed=0)
    with pytest.raises(LossError, match="N×C×H×W"):
        mart_loss(m, x[0], y, eps=EPS, step=STEP, iters=1, seed=0)
    with pytest.raises(LossError, match="one label per image"):
        mart_loss(m, x, y[:3], eps=EPS, step=STEP, iters=1, seed=0)
    with pytest.raises(OncorobustError):
        trades_loss(m, x, y, eps=EPS, step=STEP, iters=1, beta=-1, seed=0)


def test_registry():
    assert set(REGIME_LOSSES) == {"adv_trades", "adv_mart"}
    assert REGIME_LOSSES["adv_trades"].defaults["beta"] == 6.0
    assert REGIME_LOSSES["adv_mart"].defaults["beta"] == 5.0
    assert REGIME_LOSSES["adv_trades"].loss is trades_loss
    assert REGIME_LOSSES["adv_mart"].loss is mart_loss
    for entry in REGIME_LOSSES.values():
        assert entry.image_passes(10) == 12
