"""Models and training: known shapes, learning, resumability, adversarial training, errors."""

import math

import pytest
import torch

from oncorobust.errors import DataError
from oncorobust.errors import ModelError
from oncorobust.models.architectures import build_model
from oncorobust.models.loading import load_model
from oncorobust.models.networks import Normalize, find_vgg16_weights
from oncorobust.training.train import (TrainingError, augment, check_training_data, evaluate, fit,
                              robust_accuracy, run_training)

CPU = torch.device("cpu")
TRAIN = {"batch_size": 32, "epochs": 6, "patience": 6, "lr": 0.05, "decay": 0, "momentum": 0.9, "augment": {}}
ADV = {"eps": 0.08, "step": 0.02, "iters": 5, "epochs": 6, "batch_size": 32, "clean_fraction": 0.0}


def toy(n, seed):
    """8x8 images: a weak (±0.02) but perfectly predictive offset everywhere, plus a strong but
    noisy offset of the left half. Clean training leans on the weak feature, which an ε = 0.08
    attack erases; adversarial training must learn the robust one."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    s = (2 * y - 1).float().view(-1, 1, 1, 1)
    x = 0.5 + 0.02 * s * torch.ones(n, 1, 8, 8)
    x[:, :, :, :4] += 0.15 * s * (1 + 0.5 * torch.randn(n, 1, 1, 1, generator=g))
    x += 0.05 * torch.randn(x.shape, generator=g)
    return {"x": x.clamp(0, 1), "y": y}


@pytest.fixture(scope="module")
def data():
    return {"train": toy(384, 0), "val": toy(128, 1), "test": toy(256, 2)}


def small(seed=0):
    torch.manual_seed(seed)
    return build_model("vgg_small", classes=2, in_channels=1, size=8, width=4, mean=[0.5], std=[0.1])


def test_vgg16_matches_table_s2_parameter_count():
    m = build_model("vgg16", classes=2, in_channels=1, size=224, mean=[0.5], std=[0.2])
    assert sum(p.numel() for p in m.parameters()) == 121_676_610
    assert m(torch.rand(1, 1, 224, 224)).shape == (1, 2)
    # 116 px (mammogram) and 32 px (controls) work with the Keras-style head
    assert build_model("vgg16", classes=10, in_channels=3, size=32, mean=[0.5] * 3,
                       std=[0.2] * 3)(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    m116 = build_model("vgg16", classes=2, in_channels=1, size=116, mean=[0.5], std=[0.2])
    assert m116.head[2].in_features == 512 * 3 * 3


def test_missing_imagenet_weights_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ModelError, match=r"checkpoints/vgg16-397923af\.pth.*nothing is downloaded"):
        find_vgg16_weights(None)
    with pytest.raises(ModelError, match="model.weights = .*nope.pth: no such file"):
        build_model("vgg16", classes=2, in_channels=1, size=32, mean=[0.5], std=[0.2],
                    pretrained="imagenet", weights=str(tmp_path / "nope.pth"))


def test_imagenet_weights_load_from_local_file(tmp_path):
    from torchvision.models import vgg16

    ref = vgg16(weights=None)
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    m = build_model("vgg16", classes=2, in_channels=1, size=32, mean=[0.5], std=[0.2],
                    pretrained="imagenet", weights=str(tmp_path / "w.pth"))
    assert torch.equal(m.features[0].weight, ref.features[0].weight)


def test_normalize_inside_the_model_and_gray_to_rgb():
    norm = Normalize([0.5], [0.25], out_channels=3)
    out = norm(torch.full((2, 1, 4, 4), 0.75))
    assert out.shape == (2, 3, 4, 4) and torch.allclose(out, torch.ones_like(out))


def test_augment_is_seeded_and_keeps_shape_and_range():
    x = torch.rand(16, 1, 12, 12)
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(2)))
    flips_only = augment(x, torch.Generator().manual_seed(3), rotate_deg=0)
    for i in range(16):  # each image is itself, or a flip of itself
        cands = [x[i], x[i].flip(-1), x[i].flip(-2), x[i].flip(-1).flip(-2)]
        assert any(torch.equal(flips_only[i], c) for c in cands)


def test_small_model_learns_toy_task(data):
    model, hist = fit(small(), data, train=TRAIN, progress=False)
    assert evaluate(model, data["test"]["x"], data["test"]["y"], CPU)[1] > 0.9
    assert [r["epoch"] for r in hist] == list(range(1, len(hist) + 1))


def test_keras_decay_and_early_stopping(data):
    cfg = dict(TRAIN, lr=0.05, decay=0.01, epochs=40, patience=2)
    _, hist = fit(small(), data, train=cfg, progress=False)
    steps_per_epoch = math.ceil(384 / 32)
    assert hist[0]["lr"] == pytest.approx(0.05 / (1 + 0.01 * steps_per_epoch))
    assert len(hist) < 40  # stopped early
    best = min(range(len(hist)), key=lambda i: hist[i]["val_loss"])
    assert len(hist) - 1 - best == 2  # exactly `patience` epochs without improvement


def test_kill_and_resume_equals_uninterrupted(data, tmp_path):
    cfg = dict(TRAIN, epochs=5, augment={"hflip": True, "vflip": True, "rotate_deg": 20})
    full, hist_full = fit(small(), data, train=cfg, progress=False, seed=4)
    ckpt = tmp_path / "m.ckpt.pt"
    fit(small(), data, train=cfg, progress=False, seed=4, ckpt_path=ckpt, hash_="h", stop_after_epochs=2)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    resumed, hist_res = fit(small(seed=99), data, train=cfg, progress=False, seed=4, ckpt_path=ckpt, hash_="h")
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert [r["val_loss"] for r in hist_full] == [r["val_loss"] for r in hist_res]
    with pytest.raises(TrainingError, match="written by another configuration"):
        fit(small(), data, train=cfg, progress=False, ckpt_path=ckpt, hash_="other")


def test_adversarial_training_raises_pgd_accuracy(data):
    kw = dict(eps=0.08, step=0.02, iters=10, seed=0)
    data = dict(data, train=toy(512, 0))
    clean, _ = fit(small(), data, train=dict(TRAIN, epochs=8), progress=False)
    adv, hist = fit(small(), data, regime="adv_pgd", train=TRAIN, adv=dict(ADV, epochs=8), progress=False)
    r_clean = robust_accuracy(clean, data["test"]["x"], data["test"]["y"], CPU, **kw)
    r_adv = robust_accuracy(adv, data["test"]["x"], data["test"]["y"], CPU, **kw)
    assert r_adv > r_clean + 0.15, (r_clean, r_adv)
    assert all(0 <= r["val_robust_acc"] <= 1 for r in hist)


@pytest.mark.parametrize("regime", ["adv_fast", "adv_free"])
def test_fast_and_free_regimes_run_and_select_on_validation(data, regime):
    model, hist = fit(small(), data, regime=regime, train=TRAIN, adv=dict(ADV, free_replays=2), progress=False)
    assert hist and all(not math.isnan(r["val_robust_acc"]) for r in hist)
    if regime == "adv_free":
        assert len(hist) <= math.ceil(ADV["epochs"] / 2)
    best = max(hist, key=lambda r: r["val_robust_acc"])
    r = robust_accuracy(model, data["val"]["x"], data["val"]["y"], CPU, eps=ADV["eps"], step=ADV["step"],
                        iters=ADV["iters"], seed=0)
    assert r == pytest.approx(best["val_robust_acc"])  # the kept weights are the selected epoch's


def test_nan_loss_names_epoch_and_lr(data):
    with pytest.raises(TrainingError, match=r"epoch 1 \(learning rate 1e\+06\)"):
        fit(small(), data, train=dict(TRAIN, lr=1e6, momentum=0), progress=False)


def test_bad_tensors_are_refused(data):
    with pytest.raises(DataError, match=r"shape \(1, 8, 8\), the model expects \(1, 16, 16\)"):
        check_training_data(data, 16, 1, 2)
    one_class = {"train": {"x": data["train"]["x"][:4], "y": torch.zeros(4, dtype=torch.int64)}}
    with pytest.raises(DataError, match=r"class\(es\) \[1\] missing from the training split"):
        check_training_data(one_class, 8, 1, 2)


def test_run_training_writes_weights_only_checkpoint(data, tmp_path):
    paths = {}
    for split in ("train", "val"):
        paths[split] = tmp_path / f"{split}.pt"
        torch.save(data[split], paths[split])
    stats = {"size": 8, "channels": 1, "classes": ["benign", "malignant"], "mean": [0.5], "std": [0.1]}
    out = tmp_path / "models" / "clean.pt"
    hist = run_training(paths, stats, regime="clean", model_cfg={"arch": "vgg_small", "width": 4},
                        train_cfg=TRAIN, adv_cfg=None, seed=0, device="cpu", out_model=out, progress=False)
    ck = torch.load(out, weights_only=True)
    assert ck["meta"]["arch"] == "vgg_small" and ck["meta"]["classes"] == ["benign", "malignant"]
    assert ck["meta"]["epoch"] == min(hist, key=lambda r: r["val_loss"])["epoch"]
    assert not (tmp_path / "models" / "clean.pt.ckpt.pt").exists()
    model = load_model(out)
    assert not model.training
    assert evaluate(model, data["test"]["x"], data["test"]["y"], CPU)[1] > 0.9
