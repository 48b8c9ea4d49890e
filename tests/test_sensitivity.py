"""Min-flip ε by batched bisection, Table 2 thresholds and deferral curves."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from oncorobust.evaluation.deferral import curve_auc, deferral_curves, table2_rows
from oncorobust.evaluation.sensitivity import sensitivity_frame
from oncorobust.evaluation.sensitivity import flip_eps_bracket, grid_flip_eps, min_flip_eps


class Linear2(nn.Module):
    """Binary linear classifier on flattened images: the exact smallest L∞ flip is
    |w·x + b| / ‖w‖₁ (when the box [0,1] does not bind), for logits (0, w·x + b)."""

    def __init__(self, d=16, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(d, generator=g))
        self.b = nn.Parameter(torch.zeros(()))

    def score(self, x):
        return x.flatten(1) @ self.w + self.b

    def forward(self, x):
        s = self.score(x)
        return torch.stack([torch.zeros_like(s), s], 1)


PLAIN = dict(method="apgd_margin", rel_tol=0, refine_steps=0, fab_check=False)


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(4)
    return 0.4 + 0.2 * torch.rand(40, 1, 4, 4, generator=g)


def exact(model, x):
    with torch.no_grad():
        return (model.score(x).abs() / model.w.abs().sum()).numpy()


@pytest.mark.parametrize("tol", [1e-3, 1e-4])
def test_known_answer_within_tolerance(images, tol):
    model = Linear2()
    with torch.no_grad():
        model.b.fill_(-float(model.score(images).median()))  # half the images on each side
    truth = exact(model, images)
    eps = min_flip_eps(model, images, eps_max=0.1, tol=tol, steps=10).numpy()
    assert np.all(np.isfinite(eps))
    assert np.all(eps >= truth - 1e-6)          # never below the true minimum
    assert np.all(eps <= truth + tol + 1e-6)    # within the tolerance above it


def test_unflippable_images_are_inf_and_budget_counted(images):
    model = Linear2()
    with torch.no_grad():
        model.b.fill_(-float(model.score(images).median()))
    truth = exact(model, images)
    eps_max = float(np.median(truth))
    stats = {}
    # the plain bisection (one attack, tol only, no refinement): its budget is the claim here
    eps = flip_eps_bracket(model, images, eps_max=eps_max, tol=1e-4, stats=stats, **PLAIN)["eps_upper"].numpy()
    assert np.all(np.isinf(eps[truth > eps_max * 1.01]))
    assert np.all(np.isfinite(eps[truth < eps_max * 0.99]))
    rounds = math.ceil(math.log2(eps_max / 1e-4)) + 1
    assert stats["rounds"] <= rounds and stats["grad_evals"] <= len(images) * 10 * rounds


def test_agrees_with_grid_scan_within_one_step(images):
    model = Linear2(seed=2)
    with torch.no_grad():
        model.b.fill_(-float(model.score(images).median()))
    step = 0.002
    grid = [step * k for k in range(1, 31)]
    g_stats, b_stats = {}, {}
    g = grid_flip_eps(model, images, grid, stats=g_stats).numpy()
    b = flip_eps_bracket(model, images, eps_max=grid[-1], tol=step, stats=b_stats, **PLAIN)["eps_upper"].numpy()
    both = np.isfinite(g) & np.isfinite(b)
    assert np.array_equal(np.isfinite(g), np.isfinite(b))
    assert np.all(np.abs(g[both] - b[both]) <= step + 1e-9)
    assert g_stats["grad_evals"] > 3 * b_stats["grad_evals"]


def test_invalid_arguments(images):
    with pytest.raises(ValueError, match="tol"):
        min_flip_eps(Linear2(), images, eps_max=0.01, tol=0.1)
    with pytest.raises(ValueError, match="pgd"):
        min_flip_eps(Linear2(), images, eps_max=0.1, tol=0.01, method="fgsm")


def _sens(n, seed, split):
    rng = np.random.default_rng(seed)
    eps = rng.exponential(0.01, n)
    correct = rng.random(n) < np.clip(0.5 + 30 * eps, 0, 0.98)  # robust images are more often right
    return pd.DataFrame({"sample_id": [f"{split}{i}" for i in range(n)], "split": split, "label": 1,
                         "clean_pred": correct.astype(int), "correct": correct, "min_flip_eps": eps,
                         "confidence": 0.5 + 0.5 * rng.random(n)})


def test_table2_threshold_comes_from_validation_only():
    val, test = _sens(300, 0, "val"), _sens(400, 1, "test")
    sens = pd.concat([val, test])
    rows = table2_rows(sens, "ct", "clean", 0.2)
    ours, paper = rows
    assert ours["threshold_eps"] == pytest.approx(np.quantile(val.min_flip_eps, 0.2, method="lower"))
    assert paper["threshold_eps"] == pytest.approx(np.quantile(test.min_flip_eps, 0.2, method="lower"))
    # test labels never move our threshold
    flipped = sens.copy()
    flipped.loc[flipped.split == "test", "correct"] = ~flipped.loc[flipped.split == "test", "correct"]
    assert table2_rows(flipped, "ct", "clean", 0.2)[0]["threshold_eps"] == ours["threshold_eps"]
    assert ours["acc_before"] == pytest.approx(100 * test.correct.mean())
    kept = test[test.min_flip_eps > ours["threshold_eps"]]
    assert ours["acc_after"] == pytest.approx(100 * kept.correct.mean()) and ours["n_retained"] == len(kept)
    assert 0.1 < ours["excluded_fraction"] < 0.3 and paper["excluded_fraction"] == pytest.approx(0.2, abs=0.01)


def test_deferral_curve_endpoints_and_policies():
    test = _sens(200, 2, "test")
    curves = deferral_curves(test, fractions=[0, 0.1, 0.5])
    start = curves[curves.deferred_fraction == 0]
    assert np.allclose(start.accuracy, 100 * test.correct.mean())  # 0% deferred = test accuracy
    half = curves[(curves.deferred_fraction == 0.5) & (curves.policy == "sensitivity")].iloc[0]
    order = test.sort_values(["min_flip_eps", "confidence"])
    assert half.accuracy == pytest.approx(100 * order.correct.iloc[100:].mean()) and half.n_retained == 100
    rand = curves[curves.policy == "random"]
    assert np.allclose(rand.accuracy, 100 * test.correct.mean())
    auc = curve_auc(curves).set_index("policy").auc
    assert auc["sensitivity"] > auc["random"]


def test_sensitivity_frame_contract(images):
    model = Linear2()
    y = torch.randint(0, 2, (len(images),))
    frame = sensitivity_frame(model, {"val": {"x": images[:10], "y": y[:10], "ids": list("abcdefghij")},
                                      "test": {"x": images[10:], "y": y[10:], "ids": [str(i) for i in range(30)]}},
                              eps_max=0.2, tol=1e-3)
    assert list(frame.columns) == ["sample_id", "split", "label", "clean_pred", "correct", "min_flip_eps", "eps_lower",
                                   "eps_upper", "first_order_eps", "confidence", "clean_logit_0", "clean_logit_1"]
    # the logits are the model's on each image (softmax of them: the confidence)
    with torch.no_grad():
        z = model(torch.cat([images[:10], images[10:]]))
    assert np.allclose(frame[["clean_logit_0", "clean_logit_1"]].to_numpy(), z.numpy(), atol=1e-6)
    assert np.allclose(torch.softmax(z, 1).max(1).values.numpy(), frame.confidence, atol=1e-6)
    assert (frame.min_flip_eps == frame.eps_upper).all() and (frame.eps_lower <= frame.eps_upper).all()
    assert frame.split.tolist() == ["val"] * 10 + ["test"] * 30
    assert (frame.correct == (frame.clean_pred == frame.label)).all() and frame.confidence.between(0.5, 1).all()
