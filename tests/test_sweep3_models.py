"""Issue 29, third sweep, given models: crafted files that would run code on load (torch.export
``.pt2``, pickled state dicts, TorchScript), float64/float16 weights, label outputs, state dicts
with ``_metadata``, and the forward-failure message. Tiny models, CPU."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import warnings
import zipfile
from collections import OrderedDict

import pytest
import torch
from torch import nn

from oncorobust.attacks.methods import attack
from oncorobust.errors import ModelError, OncorobustError
from oncorobust.io import save_torch
from oncorobust.models import architectures, checkpoints, loading
from oncorobust.models.checkpoints import CheckpointError
from oncorobust.models.zipformat import export_archive_problems

SIZE = 8
STATS = {"size": SIZE, "channels": 1, "classes": ["benign", "malignant"], "mean": [0.0], "std": [1.0]}
NONE = {"normalize": "none"}


class _Evil:
    """Unpickling it creates the file ``marker`` (what a crafted pickle could do, harmlessly)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def _images(n=6, seed=1):
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _rewrite(src, dst, replace=None, add=()):
    """Copy the zip ``src`` to ``dst`` with members replaced ({name: bytes}) and added [(name, bytes)]."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a duplicate name, on purpose
        for name in zin.namelist():
            zout.writestr(name, replace.get(name, zin.read(name)))
        for name, data in add:
            zout.writestr(name, data)
    return dst


def _export(path, dynamic=True):
    shapes = {"x": {0: torch.export.Dim("batch")}} if dynamic else None
    torch.export.save(torch.export.export(Small().eval(), (torch.rand(2, 1, SIZE, SIZE),), dynamic_shapes=shapes), path)
    with zipfile.ZipFile(path) as zf:
        root = zf.namelist()[0].split("/")[0]
        return root, {n: zf.read(n) for n in zf.namelist()}


# ----------------------------------------------------------------------------- crafted .pt2


def _crafted(route, tmp_path, marker):
    """A ``.pt2`` whose loading with plain ``torch.export.load`` would create ``marker``."""
    good = tmp_path / "good.pt2"
    root, members = _export(good)
    evil = tmp_path / f"evil_{route}.pt2"
    if route == "sample_inputs":  # the unrestricted fallback of pytorch/pytorch#153410
        return _rewrite(good, evil, {f"{root}/data/sample_inputs/model.pt": _torch_bytes((_Evil(marker),))}), "sample_inputs"
    if route == "pickled_weight":
        config = json.loads(members[f"{root}/data/weights/model_weights_config.json"])
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        return _rewrite(good, evil, {f"{root}/data/weights/model_weights_config.json": json.dumps(config).encode(),
                                     f"{root}/data/weights/{first['path_name']}": _torch_bytes(_Evil(marker))}), "weights"
    if route == "opaque_constant":  # read with pickle.loads
        config = {"config": {"c": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                   "tensor_meta": None}}}
        return _rewrite(good, evil, {f"{root}/data/constants/model_constants_config.json": json.dumps(config).encode()},
                        [(f"{root}/data/constants/opaque_obj_0", pickle.dumps(_Evil(marker)))]), "opaque_obj_0"
    program = members[f"{root}/models/model.json"].decode()
    if route == "symbolic_size":  # evaluated by sympy.sympify
        first = re.search(r'"expr_str": "([^"]+)"', program).group(1)
        program = program.replace(first, f"{first} if open({str(marker)!r}, 'w') else 0", 1)
        return _rewrite(good, evil, {f"{root}/models/model.json": program.encode()}), "symbolic size"
    if route == "guard":  # compiled with exec by program.module()
        data = json.loads(program)
        data["guards_code"] = [f"open({str(marker)!r}, 'w') is not None"]
        return _rewrite(good, evil, {f"{root}/models/model.json": json.dumps(data).encode()}), "shape guard"
    if route == "input_name":  # input names become code in the guards torch compiles
        inputs = ((), {f"x'] or open({str(marker)!r}, 'w') or L['x": torch.rand(2, 1, SIZE, SIZE)})
        return _rewrite(good, evil, {f"{root}/data/sample_inputs/model.pt": _torch_bytes(inputs)}), "no Python identifier"
    if route == "string_input":  # a constant input is pasted into the guard code: L['mode'] == '<value>'
        class Moded(nn.Module):
            def forward(self, x, mode: str):
                return x.mean((2, 3)).expand(-1, 2) * (2.0 if mode == "a" else 1.0)

        torch.export.save(torch.export.export(Moded(), (torch.rand(2, 1, SIZE, SIZE), "a")), good)
        root = zipfile.ZipFile(good).namelist()[0].split("/")[0]
        data = json.loads(zipfile.ZipFile(good).read(f"{root}/models/model.json"))
        data["graph_module"]["graph"]["inputs"][1]["as_string"] = f"a' or open({str(marker)!r}, 'w') or '"
        return _rewrite(good, evil, {f"{root}/models/model.json": json.dumps(data).encode()}), "holds quotes"
    if route == "duplicate_member":
        return _rewrite(good, evil, add=[(f"{root}/data/sample_inputs/model.pt", _torch_bytes((_Evil(marker),)))]), "two members"
    if route == "aotinductor":
        return _rewrite(good, evil, add=[(f"{root}/data/aotinductor/model/model.so", b"\x7fELF")]), "AOTInductor"
    raise ValueError(route)


@pytest.mark.parametrize("route", ["sample_inputs", "pickled_weight", "opaque_constant", "symbolic_size", "guard",
                                   "input_name", "string_input", "duplicate_member", "aotinductor"])
def test_crafted_pt2_is_refused_before_it_runs_anything(tmp_path, route):
    marker = tmp_path / "ran"
    path, where = _crafted(route, tmp_path, marker)
    assert export_archive_problems(path) and not marker.exists()
    with pytest.raises(CheckpointError, match=r"refused, loading it with torch.export.load could run code") as exc:
        loading.import_checkpoint({"arch": f"export:{path}", "input": NONE}, STATS, _images())
    text = str(exc.value)
    assert str(path) in text and where in text and "re-export it with plain tensor example inputs" in text
    with pytest.raises(CheckpointError, match="the embedded torch.export program: refused"):
        architectures.load_serialized("export", path.read_bytes())  # the bytes in a model file
    assert not marker.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_pickle_routes_are_named_with_their_member(tmp_path):
    marker = tmp_path / "ran"
    path, _ = _crafted("sample_inputs", tmp_path, marker)
    (problem,) = export_archive_problems(path)
    assert problem.endswith("data/sample_inputs/model.pt: it holds the Python object io.open, which"
                            " torch.export.load would unpickle without restriction: it would run code on load")
    assert not marker.exists()


@pytest.mark.parametrize("dynamic", [False, True])
def test_plain_exported_programs_still_load(tmp_path, dynamic):
    _export(tmp_path / "m.pt2", dynamic=dynamic)
    assert export_archive_problems(tmp_path / "m.pt2") == []
    payload = loading.import_checkpoint({"arch": f"export:{tmp_path / 'm.pt2'}", "input": NONE}, STATS, _images())
    save_torch(payload, tmp_path / "clean.pt")
    model = loading.load_model(tmp_path / "clean.pt")
    x = _images(3)
    with torch.no_grad():
        assert torch.allclose(model(x), Small().eval()(x), atol=1e-6)


def test_real_shape_guards_and_sizes_pass_the_check(tmp_path):
    class Halves(nn.Module):
        def forward(self, x):
            return x[:, :, : x.shape[2] // 2].mean((1, 2, 3)).unsqueeze(1).expand(-1, 2) * torch.tensor([1.0, -1.0])

    auto = torch.export.Dim.AUTO
    program = torch.export.export(Halves(), (torch.rand(2, 1, 16, 16),), dynamic_shapes={"x": {0: auto, 2: auto, 3: auto}})
    torch.export.save(program, tmp_path / "h.pt2")
    assert export_archive_problems(tmp_path / "h.pt2") == []
    net = architectures.load_export(tmp_path / "h.pt2")
    assert net(torch.rand(3, 1, 12, 12)).shape == (3, 2)


# ----------------------------------------------------------------------------- other crafted files


def test_crafted_state_dict_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"conv.weight": torch.zeros(4, 1, 3, 3), "evil": _Evil(marker)}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"w.pt: it holds Python objects other than tensors \(io.open\)"):
        checkpoints.read_state_dict(tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="which are never loaded"):
        loading.import_checkpoint({"arch": "torchvision:resnet18", "checkpoint": str(tmp_path / "w.pt")}, STATS)
    assert not marker.exists()


@pytest.mark.parametrize("member", ["data.pkl", "constants.pkl"])
@pytest.mark.parametrize("protocol", [0, 2])
def test_crafted_torchscript_runs_nothing(tmp_path, member, protocol):
    marker = tmp_path / "ran"
    torch.jit.script(Small().eval()).save(str(tmp_path / "m.ts"))
    root = zipfile.ZipFile(tmp_path / "m.ts").namelist()[0].split("/")[0]
    evil = _rewrite(tmp_path / "m.ts", tmp_path / "evil.ts",
                    {f"{root}/{member}": pickle.dumps(_Evil(marker), protocol=protocol)})
    with pytest.raises(CheckpointError, match=r"evil.ts: not a loadable TorchScript model \(RuntimeError"):
        loading.import_checkpoint({"arch": f"torchscript:{evil}", "input": NONE}, STATS, _images())
    assert not marker.exists()


def test_torchscript_loader_says_its_code_runs():
    doc = architectures.load_torchscript.__doc__
    assert "runs the model's own code" in doc and "trust" in doc


# ----------------------------------------------------------------------------- dtypes


def _check_float32_gradient(model):
    x = _images(4).requires_grad_(True)
    out = model(x)
    assert out.dtype == torch.float32 and out.shape == (4, 2)
    (grad,) = torch.autograd.grad(out[:, 1].sum(), x)
    assert grad.dtype == torch.float32 and float(grad.abs().sum()) > 0
    y = out.argmax(1).detach()
    adv = attack(model, x.detach(), y, "pgd", 0.05, steps=2)
    assert adv.dtype == torch.float32 and float((adv - x.detach()).abs().max()) > 0


def test_float64_torchscript_model_gives_float32_logits_and_gradients(tmp_path):
    net = Small().double().eval()
    torch.jit.script(net).save(str(tmp_path / "d.ts"))
    payload = loading.import_checkpoint({"arch": f"torchscript:{tmp_path / 'd.ts'}", "input": NONE}, STATS, _images())
    assert payload["meta"]["output"] == "logits"
    save_torch(payload, tmp_path / "clean.pt")
    model = loading.load_model(tmp_path / "clean.pt")
    _check_float32_gradient(model)
    x = _images(3)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x.double()).float(), atol=1e-6)


def test_float64_python_factory_trains_and_attacks_in_float32(tmp_path):
    (tmp_path / "dnet.py").write_text(
        "import torch\nfrom torch import nn\n\n\ndef build(num_classes, in_channels):\n"
        "    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),"
        " nn.Flatten(), nn.Linear(4, num_classes)).double()\n")
    model = architectures.build_model(f"python:{tmp_path / 'dnet.py'}:build", classes=2, in_channels=1, size=SIZE,
                                      mean=[0.0], std=[1.0])
    model.eval()
    _check_float32_gradient(model)


def test_float16_model_is_one_clear_error_not_a_size_hint(tmp_path):
    torch.jit.script(Small().half().eval()).save(str(tmp_path / "h.ts"))
    with pytest.raises(CheckpointError, match=r"dtype: the model fails on float32 images \(.*\): the model's weights"
                                              r" are float16; save it in float32 \(model.float\(\)\)") as exc:
        loading.import_checkpoint({"arch": f"torchscript:{tmp_path / 'h.ts'}", "input": NONE}, STATS, _images())
    assert "preprocess.size" not in str(exc.value) and "h.ts" in str(exc.value)
    (tmp_path / "hnet.py").write_text("from torch import nn\n\n\ndef build(num_classes):\n"
                                      "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes)).half()\n")
    with pytest.raises(ModelError, match=r"dtype: .*weights are float16; save it in float32"):
        architectures.build_model(f"python:{tmp_path / 'hnet.py'}:build", classes=2, in_channels=1, size=SIZE,
                                  mean=[0.0], std=[1.0])


class ChannelsLast(nn.Module):
    """Takes N×H×W×C images (a Keras habit): fails on N×C×H×W ones."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x.permute(0, 3, 1, 2))).mean((2, 3)))


def test_channels_last_model_is_named_as_such(tmp_path):
    torch.jit.script(ChannelsLast().eval()).save(str(tmp_path / "nhwc.ts"))
    cfg = {"arch": f"torchscript:{tmp_path / 'nhwc.ts'}", "input": {"normalize": "none", "channels": 3}}
    with pytest.raises(CheckpointError, match=r"input layout: the model fails on N×C×H×W images \(.+\) but runs on"
                                              r" channels-last N×H×W×C ones") as exc:
        loading.import_checkpoint(cfg, STATS, _images())
    assert "preprocess.size" not in str(exc.value)


def test_size_mismatch_still_gets_the_size_hint_led_by_the_error(tmp_path):
    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16 * 16, 2)

        def forward(self, x):
            return self.fc(x.flatten(1))

    torch.jit.script(Fixed()).save(str(tmp_path / "f.ts"))
    with pytest.raises(CheckpointError, match=r"input size: the model fails on 1x8x8 images \(.*mat1 and mat2 shapes"
                                              r" cannot be multiplied.*\); set preprocess.size"):
        loading.import_checkpoint({"arch": f"torchscript:{tmp_path / 'f.ts'}", "input": NONE}, STATS, _images())


# ----------------------------------------------------------------------------- label outputs


class Labels(nn.Module):
    """A classifier that returns what it decided, not its scores."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.net = Small()

    def forward(self, x):
        scores = torch.softmax(self.net(x), 1)
        if self.kind == "argmax":
            return scores.argmax(1)
        if self.kind == "bool":
            return scores > 0.5
        if self.kind == "long":
            return (scores > 0.5).long()
        return (scores > 0.5).float()  # labels as floats: no gradient either


@pytest.mark.parametrize("kind, dtype", [("argmax", "int64"), ("bool", "bool"), ("long", "int64")])
def test_integer_or_boolean_outputs_are_refused_as_labels(tmp_path, kind, dtype):
    torch.jit.script(Labels(kind).eval()).save(str(tmp_path / "lab.ts"))
    for declared in ("probabilities", "auto"):
        cfg = {"arch": f"torchscript:{tmp_path / 'lab.ts'}", "input": NONE, "output": declared}
        with pytest.raises(ModelError, match=rf"lab.ts: the model returns {dtype} outputs \(class labels\?\), which carry"
                                             r" no gradient; attacks need the scores/logits: export the model before"
                                             r" its argmax/threshold"):
            loading.import_checkpoint(cfg, STATS, _images())


def test_float_labels_without_gradient_are_refused(tmp_path):
    torch.jit.script(Labels("float").eval()).save(str(tmp_path / "lab.ts"))
    cfg = {"arch": f"torchscript:{tmp_path / 'lab.ts'}", "input": NONE, "output": "probabilities"}
    with pytest.raises(ModelError, match=r"lab.ts: the model's outputs carry no gradient with respect to its input"):
        loading.import_checkpoint(cfg, STATS, _images())


def test_resolve_output_refuses_integer_outputs_itself():
    from oncorobust.models.heads import resolve_output

    with pytest.raises(ModelError, match="returns int64 outputs"):
        resolve_output("probabilities", torch.tensor([[0, 1], [1, 0]]), 2, "m.ts")


# ----------------------------------------------------------------------------- _metadata


def test_state_dict_with_metadata_is_accepted(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    state = net.state_dict()
    assert isinstance(state, OrderedDict) and hasattr(state, "_metadata")
    torch.save(state, tmp_path / "attr.pt")
    torch.save({**state, "_metadata": dict(state._metadata)}, tmp_path / "key.pt")
    torch.save({"state_dict": {**state, "_metadata": dict(state._metadata)}, "epoch": 3}, tmp_path / "nested.pt")
    for name in ("attr.pt", "key.pt", "nested.pt"):
        read = checkpoints.read_state_dict(tmp_path / name)
        assert set(read) == set(state) and all(isinstance(v, torch.Tensor) for v in read.values())


def test_imported_checkpoint_with_metadata_key(tmp_path):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=2)
    state = net.state_dict()
    torch.save({"model": {**state, "_metadata": dict(state._metadata)}}, tmp_path / "r18.pt")
    payload = loading.import_checkpoint({"arch": "torchvision:resnet18", "checkpoint": str(tmp_path / "r18.pt"),
                                         "input": {"channels": 3}}, {**STATS, "size": 32})
    assert payload["meta"]["output"] == "logits"


def test_errors_are_oncorobust_errors():
    assert issubclass(CheckpointError, OncorobustError)


class _MCDropout(torch.nn.Module):
    """A classifier that keeps its dropout active in eval mode (MC dropout)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16 * 16, 2)

    def forward(self, x):
        return self.fc(torch.nn.functional.dropout(x.flatten(1), 0.5, training=True))


def test_a_model_that_samples_in_eval_mode_is_refused_at_import_naming_randomness(tmp_path):
    from oncorobust.models.loading import import_checkpoint

    torch.manual_seed(0)
    path = tmp_path / "mc.ts"
    torch.jit.script(_MCDropout().eval()).save(str(path))
    stats = {"classes": ["benign", "malignant"], "size": 16, "channels": 1, "mean": [0.5], "std": [0.25]}
    with pytest.raises(ModelError, match=r"mc\.ts: two passes over the same images gave different outputs .*not"
                                         r" deterministic in eval mode. Dropout kept active \(MC dropout\)"):
        import_checkpoint({"arch": f"torchscript:{path}", "output": "logits"}, stats)
