"""Model sources (torchvision:, monai:, python:, torchscript:), given checkpoints and their
errors, the image readers (PNG/JPEG/TIFF/NIfTI) and the folder format: unit level, CPU, tiny."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from oncorobust.models import architectures, checkpoints, loading, networks
from oncorobust import spec
from oncorobust.config import check_config
from oncorobust.errors import ConfigError, DataError, DicomError, ModelError
from oncorobust.io import save_torch
from oncorobust.data.preprocess import run_preprocess
from oncorobust.data.sources import ADAPTERS, IngestResult
from oncorobust.data.sources import folder as folder_src
from oncorobust.data.sources import manifest as manifest_src
from oncorobust.data.sources.images import ImageError, image_shape, read_image

STATS = {"size": 32, "channels": 1, "classes": ["benign", "malignant"], "mean": [0.4], "std": [0.2]}


def _resnet18_state(path, classes=2, in_channels=3):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=classes)
    if in_channels != 3:
        architectures.adapt_first_conv(net, in_channels)
    torch.save(net.state_dict(), path)
    return net


class _Fixed(nn.Module):
    """Flatten + linear: only runs on 3×16×16 inputs."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 16 * 16, 2)

    def forward(self, x):
        return self.fc(x.flatten(1))


# ----------------------------------------------------------------------------- arch strings


@pytest.mark.parametrize("arch, parsed", [
    ("vgg16", ("vgg16", "")), ("torchvision:resnet18", ("torchvision", "resnet18")),
    ("monai:DenseNet121", ("monai", "DenseNet121")), ("torchscript:/a/b.ts", ("torchscript", "/a/b.ts")),
    ("python:my.mod:build", ("python", "my.mod:build")), ("python:net.py:make", ("python", "net.py:make")),
])
def test_parse_arch(arch, parsed):
    assert spec.parse_arch(arch) == parsed


@pytest.mark.parametrize("arch", ["resnet18", "keras:resnet", "torchvision:", "python:only_module"])
def test_parse_arch_refuses_unknown(arch):
    with pytest.raises(ModelError, match="model.arch"):
        spec.parse_arch(arch)


# ----------------------------------------------------------------------------- building


@pytest.mark.parametrize("builder", ["resnet18", "squeezenet1_1", "mnasnet0_5", "googlenet"])
def test_torchvision_builders_adapt_classes_and_channels(builder):
    model = architectures.build_model(f"torchvision:{builder}", classes=3, in_channels=1, size=32, mean=[0.5], std=[0.25])
    assert isinstance(model, networks.Wrapped)
    assert networks.first_conv(model.net)[2].in_channels == 1
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3)


def test_torchvision_builder_too_small_for_the_input_size():
    with pytest.raises(ModelError, match=r"torchvision:squeezenet1_1 does not fit 1x16x16 inputs.*input size"):
        architectures.build_model("torchvision:squeezenet1_1", classes=2, in_channels=1, size=16, mean=[0.5], std=[0.2])


def test_torchvision_unknown_builder_suggests():
    with pytest.raises(ModelError, match="did you mean resnet18"):
        architectures.build_model("torchvision:resnet19", classes=2, in_channels=1, size=32, mean=[0.5], std=[0.2])


def test_new_sources_refuse_pretrained():
    with pytest.raises(ModelError, match="pretrained"):
        architectures.build_model("torchvision:resnet18", classes=2, in_channels=1, size=32, mean=[0.5], std=[0.2],
                      pretrained="imagenet")


def test_torchvision_initial_weights_from_model_weights(tmp_path):
    net = _resnet18_state(tmp_path / "w.pt", in_channels=1)
    model = architectures.build_model("torchvision:resnet18", classes=2, in_channels=1, size=32, mean=[0.5], std=[0.2],
                          weights=str(tmp_path / "w.pt"))
    assert torch.equal(model.net.fc.weight, net.fc.weight)


def test_python_factory_from_file_and_module(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        "from torch import nn\n"
        "def build(classes, in_channels):\n"
        "    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),"
        " nn.Linear(4, classes))\n"
        "def wrong():\n    return 3\n")
    model = architectures.build_model(f"python:{tmp_path / 'my_nets.py'}:build", classes=2, in_channels=1, size=16,
                          mean=[0.5], std=[0.2])
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 2)
    monkeypatch.chdir(tmp_path)
    model = architectures.build_model("python:my_nets:build", classes=3, in_channels=1, size=16, mean=[0.5], std=[0.2])
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 3)
    with pytest.raises(ModelError, match="not a torch.nn.Module"):
        architectures.build_model("python:my_nets:wrong", classes=3, in_channels=1, size=16, mean=[0.5], std=[0.2])
    with pytest.raises(ModelError, match="has no callable"):
        architectures.build_model("python:my_nets:absent", classes=3, in_channels=1, size=16, mean=[0.5], std=[0.2])


def test_monai_densenet121_builds_and_runs_one_attack():
    pytest.importorskip("monai", reason="MONAI is the optional extra 'monai' (pip install 'oncorobust[monai]')")
    from oncorobust.attacks.methods import attack

    model = architectures.build_model("monai:DenseNet121", classes=2, in_channels=1, size=32, mean=[0.5], std=[0.2])
    model.eval()
    x, y = torch.rand(2, 1, 32, 32), torch.tensor([0, 1])
    adv = attack(model, x, y, "fgsm", 0.03)
    assert adv.shape == x.shape and float((adv - x).abs().max()) <= 0.03 + 1e-6
    assert 0 <= float(adv.min()) and float(adv.max()) <= 1


def test_monai_unknown_network():
    pytest.importorskip("monai", reason="MONAI is the optional extra 'monai'")
    with pytest.raises(ModelError, match="no network"):
        architectures.build_model("monai:NoSuchNet", classes=2, in_channels=1, size=32, mean=[0.5], std=[0.2])


# ----------------------------------------------------------------------------- given checkpoints


def test_state_dict_import_roundtrip_imagenet_normalisation(tmp_path):
    net = _resnet18_state(tmp_path / "r18.pt")
    cfg = {"arch": "torchvision:resnet18", "checkpoint": str(tmp_path / "r18.pt"),
           "input": {"normalize": "imagenet", "channels": 3}}
    payload = loading.import_checkpoint(cfg, STATS)
    assert payload["meta"]["input_channels"] == 3 and payload["meta"]["mean"] == networks.IMAGENET_MEAN
    save_torch(payload, tmp_path / "clean.pt")
    model = loading.load_model(tmp_path / "clean.pt")
    x = torch.rand(2, 1, 32, 32)
    mean, std = torch.tensor(networks.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(networks.IMAGENET_STD).view(1, 3, 1, 1)
    net.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), net((x - mean) / std), atol=1e-5)


def test_torchscript_import_scripted_and_traced(tmp_path):
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 4, 3, padding=1)
            self.f = nn.Linear(4, 2)

        def forward(self, x):
            return self.f(torch.relu(self.c(x)).mean((2, 3)))

    net = Tiny().eval()
    torch.jit.script(net).save(str(tmp_path / "s.ts"))
    torch.jit.trace(net, torch.rand(1, 1, 32, 32)).save(str(tmp_path / "t.ts"))
    x = torch.rand(3, 1, 32, 32)
    for name in ("s.ts", "t.ts"):
        payload = loading.import_checkpoint({"arch": f"torchscript:{tmp_path / name}", "input": {"normalize": "none"}}, STATS)
        save_torch(payload, tmp_path / f"{name}.pt")
        model = loading.load_model(tmp_path / f"{name}.pt")
        with torch.no_grad():
            assert torch.allclose(model(x), net(x), atol=1e-6)
    # the embedded bytes are covered by the digest: a damaged model is refused
    payload["state_dict"]["torchscript"][100] ^= 1
    save_torch(payload, tmp_path / "bad.pt")
    with pytest.raises(checkpoints.CheckpointError, match="SHA-256"):
        loading.load_model(tmp_path / "bad.pt")


def test_checkpoint_missing_and_unexpected_keys(tmp_path):
    _resnet18_state(tmp_path / "r18.pt")
    with pytest.raises(checkpoints.CheckpointError, match="missing keys: layer1.2") as exc:
        loading.import_checkpoint({"arch": "torchvision:resnet34", "checkpoint": str(tmp_path / "r18.pt"),
                             "input": {"channels": 3}}, STATS)
    assert "does not fit model.arch torchvision:resnet34" in str(exc.value)
    state = torch.load(tmp_path / "r18.pt", weights_only=True)
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(checkpoints.CheckpointError, match="unexpected keys: extra.weight"):
        loading.import_checkpoint({"arch": "torchvision:resnet18", "checkpoint": str(tmp_path / "extra.pt"),
                             "input": {"channels": 3}}, STATS)


def test_checkpoint_wrong_class_count(tmp_path):
    _resnet18_state(tmp_path / "r18.pt", classes=2)
    with pytest.raises(checkpoints.CheckpointError, match=r"class count: the checkpoint's output layer fc.weight has 2"
                                                r" outputs, the data have 3 classes"):
        loading.import_checkpoint({"arch": "torchvision:resnet18", "checkpoint": str(tmp_path / "r18.pt"),
                             "input": {"channels": 3}}, {**STATS, "classes": ["a", "b", "c"]})


def test_checkpoint_wrong_channels_says_what_to_set(tmp_path):
    _resnet18_state(tmp_path / "r18.pt")
    with pytest.raises(checkpoints.CheckpointError, match="set model.input.channels: 3"):
        loading.import_checkpoint({"arch": "torchvision:resnet18", "checkpoint": str(tmp_path / "r18.pt")}, STATS)


def test_torchscript_wrong_input_size_and_class_count(tmp_path):
    torch.jit.script(_Fixed()).save(str(tmp_path / "fixed.ts"))
    cfg = {"arch": f"torchscript:{tmp_path / 'fixed.ts'}", "input": {"normalize": "none", "channels": 3}}
    with pytest.raises(checkpoints.CheckpointError, match=r"input size: the model fails on 1x32x32 images .*set preprocess.size"):
        loading.import_checkpoint(cfg, STATS)
    assert loading.import_checkpoint(cfg, {**STATS, "size": 16})["meta"]["size"] == 16
    with pytest.raises(checkpoints.CheckpointError, match="class count: the model returns 2 logits, the data have 3"):
        loading.import_checkpoint(cfg, {**STATS, "size": 16, "classes": ["a", "b", "c"]})


def test_checkpoint_that_is_not_a_state_dict(tmp_path):
    torch.save(_Fixed(), tmp_path / "pickled.pt")  # a whole pickled module: never unpickled
    with pytest.raises(checkpoints.CheckpointError, match="Python objects other than tensors"):
        loading.import_checkpoint({"arch": "torchvision:resnet18", "checkpoint": str(tmp_path / "pickled.pt")}, STATS)
    torch.jit.script(_Fixed()).save(str(tmp_path / "fixed.ts"))
    with pytest.raises(checkpoints.CheckpointError, match="is a TorchScript model, not a state dict"):
        loading.import_checkpoint({"arch": "torchvision:resnet18", "checkpoint": str(tmp_path / "fixed.ts")}, STATS)
    raw = (tmp_path / "fixed.ts").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(checkpoints.CheckpointError, match="unreadable"):
        loading.import_checkpoint({"arch": "torchvision:resnet18", "checkpoint": str(tmp_path / "trunc.pt")}, STATS)
    (tmp_path / "trunc.ts").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(checkpoints.CheckpointError, match="not a loadable TorchScript model"):
        loading.import_checkpoint({"arch": f"torchscript:{tmp_path / 'trunc.ts'}"}, STATS)


def test_wrapped_state_dict_prefix_and_nesting(tmp_path):
    net = _resnet18_state(tmp_path / "r18.pt", in_channels=1)
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}},
               tmp_path / "nested.pt")
    assert set(checkpoints.read_state_dict(tmp_path / "nested.pt")) == set(net.state_dict())


# ----------------------------------------------------------------------------- config checks


def _cfg(tmp_path, **model):
    entry = {"source": {"format": "folder", "root": str(tmp_path)}, "preprocess": {"size": 32},
             "model": model}
    return {"datasets": {"x": entry}}


def test_config_given_model_rules(tmp_path):
    ck = tmp_path / "r18.pt"
    _resnet18_state(ck)
    check_config(_cfg(tmp_path, arch="torchvision:resnet18", checkpoint=str(ck)))
    cfg = _cfg(tmp_path, arch="torchvision:resnet18", checkpoint=str(ck))
    cfg["datasets"]["x"]["train"] = {"batch_size": 8, "epochs": 1, "lr": 0.1}
    with pytest.raises(ConfigError, match="remove the train block"):
        check_config(cfg)
    cfg = _cfg(tmp_path, arch="torchvision:resnet18", checkpoint=str(ck))
    cfg["datasets"]["x"]["adversarial_training"] = {"regimes": ["adv_pgd"], "eps": 0.1, "step": 0.1, "epochs": 1}
    with pytest.raises(ConfigError, match="adversarial_training.regimes"):
        check_config(cfg)
    with pytest.raises(ConfigError, match="no such file"):
        check_config(_cfg(tmp_path, arch="torchvision:resnet18", checkpoint=str(tmp_path / "absent.pt")))
    with pytest.raises(ConfigError, match="train is required"):
        check_config(_cfg(tmp_path, arch="torchvision:resnet18"))
    with pytest.raises(ConfigError, match="cannot take one"):
        check_config(_cfg(tmp_path, arch="vgg_small", checkpoint=str(ck)))
    cfg = _cfg(tmp_path, arch="torchvision:resnet18", input={"normalize": "imagenet"})
    cfg["datasets"]["x"]["train"] = {"batch_size": 8, "epochs": 1, "lr": 0.1}
    with pytest.raises(ConfigError, match="remove model.input"):
        check_config(cfg)
    with pytest.raises(ConfigError, match="custom needs"):
        check_config(_cfg(tmp_path, arch="torchvision:resnet18", checkpoint=str(ck), input={"normalize": "custom"}))


# ----------------------------------------------------------------------------- image files


def test_read_png_jpeg_tiff(tmp_path):
    arr = (np.arange(20 * 30).reshape(20, 30) % 251).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), arr.astype(np.float32))
    Image.fromarray((arr.astype(np.uint16) * 200)).save(tmp_path / "b16.png")
    assert read_image(tmp_path / "b16.png").max() > 255  # 16-bit values kept
    Image.fromarray(np.stack([arr] * 3, -1)).save(tmp_path / "c.jpg")
    assert read_image(tmp_path / "c.jpg").shape == (20, 30)  # colour -> luminance
    pages = [Image.fromarray(arr), Image.fromarray(255 - arr)]
    pages[0].save(tmp_path / "d.tif", save_all=True, append_images=pages[1:])
    assert read_image(tmp_path / "d.tif").shape == (2, 20, 30) and image_shape(tmp_path / "d.tif") == (2, 20, 30)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ImageError, match="bad.png: not a readable image"):
        read_image(tmp_path / "bad.png")
    assert issubclass(ImageError, DicomError)  # on_bad_file handles it like an undecodable DICOM


def test_read_nifti_slices(tmp_path):
    nib = pytest.importorskip("nibabel", reason="NIfTI needs the optional extra 'nifti' (nibabel)")
    vol = np.random.default_rng(0).random((30, 20, 5)).astype(np.float32)  # (i, j, k)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "v.nii.gz"))
    pixels = read_image(tmp_path / "v.nii.gz")
    assert pixels.shape == (5, 20, 30) and image_shape(tmp_path / "v.nii.gz") == (5, 20, 30)
    assert np.allclose(pixels[3], vol[:, :, 3].T)


def _png_folder(root, n=6, classes=("benign", "malignant")):
    rng = np.random.default_rng(0)
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 120 + 100 * c, (24, 20)).astype(np.uint8)
            Image.fromarray(img).save(root / cls / f"pt{i // 2}_{cls}_{i}.png")


def test_folder_format_patients_and_errors(tmp_path, caplog):
    _png_folder(tmp_path / "imgs")
    assert "folder" in ADAPTERS
    res = IngestResult()
    with caplog.at_level(logging.INFO, logger="oncorobust.data.sources.folder"):
        folder_src.ingest({"root": str(tmp_path / "imgs"), "classes": ["benign", "malignant"]}, res)
    assert len(res.records) == 12 and len({r["patient_id"] for r in res.records}) == 12
    assert "every image is its own patient" in caplog.text
    assert res.records[0]["sample_id"] == "benign/pt0_benign_0" and np.isnan(res.records[0]["roi_row"])
    res = IngestResult()
    folder_src.ingest({"root": str(tmp_path / "imgs"), "classes": ["benign", "malignant"],
                       "patient_pattern": r"^pt(?P<patient>\d+)_"}, res)
    assert sorted({r["patient_id"] for r in res.records}) == ["0", "1", "2"]
    with pytest.raises(DataError, match="does not match 12 file"):
        folder_src.ingest({"root": str(tmp_path / "imgs"), "patient_pattern": r"^case(\d+)"}, IngestResult())
    with pytest.raises(DataError, match=r"sub-folder\(s\) \['malignant'\] are not among source.classes"):
        folder_src.ingest({"root": str(tmp_path / "imgs"), "classes": ["benign", "tumour"]}, IngestResult())


def test_manifest_of_pngs_without_roi_is_used_whole(tmp_path):
    _png_folder(tmp_path)
    rows = [{"patient_id": f"p{i}", "sample_id": f"s{c}{i}", "path": f"{cls}/pt{i // 2}_{cls}_{i}.png", "label": cls}
            for c, cls in enumerate(["benign", "malignant"]) for i in range(6)]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    res = IngestResult()
    manifest_src.ingest({"manifest": str(tmp_path / "m.csv")}, res)
    df = pd.DataFrame(res.records)
    assert len(df) == 12 and df.roi_row.isna().all()
    df["split"] = ["train", "train", "val", "test", "test", "train"] * 2
    tensors, stats, skipped = run_preprocess(df, {"format": "manifest", "manifest": str(tmp_path / "m.csv")},
                                             {"size": 16, "intensity": {"mode": "window", "window": [0, 255]}}, 0)
    assert tensors["train"]["x"].shape[1:] == (1, 16, 16) and skipped.empty
    # the whole 24x20 image, padded to 24x24: the mean keeps the image's values
    assert 0 < float(tensors["test"]["x"].mean()) < 1


def test_manifest_nifti_slice(tmp_path):
    nib = pytest.importorskip("nibabel", reason="NIfTI needs the optional extra 'nifti' (nibabel)")
    rng = np.random.default_rng(1)
    rows = []
    for i in range(8):
        vol = rng.random((24, 24, 4)).astype(np.float32)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / f"v{i}.nii"))
        rows.append({"patient_id": f"p{i}", "sample_id": f"s{i}", "path": f"v{i}.nii",
                     "label": i % 2, "roi_row": 12, "roi_col": 12, "roi_slice": 2})
    rows.append({**rows[0], "sample_id": "s_bad", "roi_slice": 9})
    pd.DataFrame(rows[:8]).to_csv(tmp_path / "m.csv", index=False)
    res = IngestResult()
    manifest_src.ingest({"manifest": str(tmp_path / "m.csv")}, res)
    assert [r["frame"] for r in res.records] == [2] * 8
    pd.DataFrame(rows).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="roi_slice 9 outside the 4 frames"):
        manifest_src.ingest({"manifest": str(tmp_path / "bad.csv")}, IngestResult())


def test_trainable_sources_train_with_the_existing_regimes(tmp_path):
    """torchvision:/python: archs go through train.run_training (clean and adv_pgd) and reload."""
    from oncorobust.training.train import run_training

    (tmp_path / "nets.py").write_text(
        "from torch import nn\n"
        "def build(classes, in_channels, size):\n"
        "    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),"
        " nn.Linear(4 * size * size, classes))\n")
    g = torch.Generator().manual_seed(0)
    paths = {}
    for split, n in (("train", 16), ("val", 8)):
        paths[split] = str(tmp_path / f"{split}.pt")
        torch.save({"x": torch.rand(n, 1, 16, 16, generator=g), "y": torch.arange(n) % 2,
                    "ids": [f"{split}{i}" for i in range(n)]}, paths[split])
    stats = {**STATS, "size": 16}
    train = {"batch_size": 8, "epochs": 1, "lr": 0.01, "patience": 1}
    adv = {"eps": 0.02, "step": 0.01, "iters": 1, "epochs": 1, "batch_size": 8}
    for arch, regime in ((f"python:{tmp_path / 'nets.py'}:build", "clean"),
                         ("torchvision:resnet18", "adv_pgd")):
        out = tmp_path / f"{regime}.pt"
        run_training(paths, stats, regime=regime, model_cfg={"arch": arch}, train_cfg=train,
                     adv_cfg=adv if regime != "clean" else None, seed=0, device="cpu", out_model=out,
                     progress=False)
        model = loading.load_model(out)
        assert isinstance(model, networks.Wrapped) and model(torch.rand(2, 1, 16, 16)).shape == (2, 2)
