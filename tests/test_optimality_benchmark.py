"""benchmarks/sensitivity_optimality.py: its optimality figure and its per-image reference cache."""

import copy
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench():
    sys.path.insert(0, str(BENCH))  # it imports its sibling sensitivity_vs_grid
    try:
        spec = importlib.util.spec_from_file_location("sensitivity_optimality", BENCH / "sensitivity_optimality.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


def test_optimality_scores_misses_zero_and_ignores_images_nobody_flipped():
    b = _bench()
    best = np.array([0.1, 0.2, math.inf, 0.4])
    ours = np.array([0.1, 0.4, math.inf, math.inf])
    assert b.optimality(ours, best) == (1 + 0.5 + 0) / 3


def test_reference_computes_each_image_once_and_keys_on_weights_and_settings(tmp_path, monkeypatch):
    """A second run with more images computes only the new ones (with their index as ID, so their
    random starts are what a run of all of them would give), cached answers come back unchanged,
    and other settings or other weights compute afresh (a re-saved file with the same weights does not)."""
    b = _bench()
    calls = []

    def fake_bracket(model, x, *, ids, stats, **settings):
        calls.append(list(ids))
        stats["grad_evals"] = 7 * len(x)
        return {"eps_upper": torch.tensor([float(x[i].mean()) + settings["steps"] for i in range(len(x))])}

    monkeypatch.setattr(b, "flip_eps_bracket", fake_bracket)
    model = torch.nn.Linear(2, 2)
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    first = b.reference("d", model, x[:3], {"steps": 1}, tmp_path)
    assert calls == [["#0", "#1", "#2"]] and not first["cached"] and first["grad_evals"] == 21
    more = b.reference("d", model, x, {"steps": 1}, tmp_path)
    assert calls[-1] == ["#3", "#4"] and more["cached"]  # partly from the cache
    np.testing.assert_array_equal(more["eps"][:3], first["eps"])
    again = b.reference("d", model, x, {"steps": 1}, tmp_path)
    assert len(calls) == 2 and again["cached"]
    b.reference("d", model, x, {"steps": 2}, tmp_path)
    assert calls[-1] == ["#0", "#1", "#2", "#3", "#4"]
    b.reference("d", copy.deepcopy(model), x, {"steps": 2}, tmp_path)  # the same weights (a re-saved model): cached
    assert len(calls) == 3
    with torch.no_grad():
        model.weight.add_(1)  # other weights: computed afresh
    b.reference("d", model, x[:1], {"steps": 2}, tmp_path)
    assert calls[-1] == ["#0"]
