"""Classifiers that take images in [0,1] (N×C×H×W) and return logits (N×classes).

Normalisation lives inside the model (its first layer, train-set mean/std from ``stats.json``), so
attacks clip to [0,1] and ε means the same for every dataset. Grayscale inputs are repeated to
three channels where the network expects RGB (ImageNet weights).

- ``vgg16``: torchvision's VGG16 convolutional base (optionally ImageNet weights from a local file)
  with the paper's head (Table S2): dropout → flatten → fc 4096 → dropout → fc 1024 → fc classes.
  As in Keras' ``VGG16(include_top=False)``, the head reads the base's output directly (no adaptive
  pooling), so its size depends on the input size (224 → 7×7×512, 116 → 3×3×512, 32 → 1×1×512).
- ``vgg_small``: a compact VGG-style network (3 blocks of two 3×3 convs + max-pool, with batch
  norm) and the same head shape, scaled down, for CPU demos at 16–64 px, trained from scratch.

Any other model (``model.arch`` with a source prefix; see :func:`parse_arch`):

- ``torchvision:<builder>``: a torchvision classification builder (``resnet18``, ``densenet121``,
  ...), always ``weights=None``, built with ``num_classes`` = the dataset's classes and its first
  convolution rebuilt for the input channels;
- ``monai:<Network>``: a network of ``monai.networks.nets`` (``DenseNet121``, ...) with
  ``spatial_dims=2``, ``in_channels`` and ``out_channels`` (MONAI is the optional extra ``monai``);
- ``python:<module or file.py>:<callable>``: the user's own factory, called with the keyword
  arguments it declares among ``classes``, ``in_channels`` and ``size``;
- ``torchscript:<path>``: a scripted or traced model, used as-is (never trained; loading it runs
  the user's code).

These are wrapped in :class:`Wrapped` (``model.input``'s normalisation → the network), so every
model still takes [0,1] images and ε keeps its meaning. A given model (``model.checkpoint``, or a
TorchScript file) is turned into this project's checkpoint format by :func:`import_checkpoint`;
:func:`load_model` stays the single entry every stage uses.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import io
import logging
import os
import pickle
import sys
from pathlib import Path

import torch
from torch import nn

from .errors import OncorobustError
from .zipformat import is_torchscript

log = logging.getLogger("oncorobust.models")

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's IMAGENET1K_V1 weights file name


class ModelError(OncorobustError):
    """A model cannot be built: missing weights, unsupported input size or architecture."""


class CheckpointError(ModelError):
    """A model file is not a checkpoint this project wrote, is damaged, or does not fit its model."""


class Normalize(nn.Module):
    """(x − mean) / std per channel; optionally repeats one channel to ``out_channels``."""

    def __init__(self, mean: list[float], std: list[float], out_channels: int | None = None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.out_channels and x.shape[1] == 1 and self.out_channels != 1:
            x = x.expand(-1, self.out_channels, -1, -1)
        return x


def paper_head(in_features: int, classes: int, hidden=(4096, 1024), dropout: float = 0.5) -> nn.Sequential:
    """Table S2: dropout → flatten → fc hidden[0] (ReLU) → dropout → fc hidden[1] (ReLU) → fc classes."""
    return nn.Sequential(
        nn.Dropout(dropout), nn.Flatten(),
        nn.Linear(in_features, hidden[0]), nn.ReLU(inplace=True), nn.Dropout(dropout),
        nn.Linear(hidden[0], hidden[1]), nn.ReLU(inplace=True),
        nn.Linear(hidden[1], classes),
    )


class Classifier(nn.Module):
    """normalize → features → head."""

    def __init__(self, normalize: Normalize, features: nn.Module, head: nn.Module):
        super().__init__()
        self.normalize, self.features, self.head = normalize, features, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))


def _vgg_small_features(in_channels: int, widths=(32, 64, 128)) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = in_channels
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                   nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
        c = w
    return nn.Sequential(*layers)


def find_vgg16_weights(weights: str | None) -> Path:
    """The ImageNet VGG16 file: the configured path, else torch's hub cache. Never downloads."""
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise ModelError(f"model.weights = {path}: no such file. Put torchvision's VGG16 ImageNet"
                             f" weights ({VGG16_FILE}) there, or set model.pretrained: none")
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
    if not path.is_file():
        raise ModelError(f"ImageNet VGG16 weights not found: expected {path} (torch hub cache) or a"
                         f" path in model.weights. Copy {VGG16_FILE} (torchvision's"
                         " VGG16_Weights.IMAGENET1K_V1) there; nothing is downloaded at run time.")
    return path


def build_model(arch: str, *, classes: int, in_channels: int, size: int, mean: list[float],
                std: list[float], pretrained: str = "none", weights: str | None = None,
                width: int = 32, input_channels: int | None = None) -> nn.Module:
    """Build ``arch`` for inputs C×size×size in [0,1] and ``classes`` logits.

    ``vgg16``/``vgg_small`` return a :class:`Classifier`; the sources ``torchvision:``,
    ``monai:`` and ``python:`` a :class:`Wrapped` network whose first layer takes
    ``input_channels`` (default ``in_channels``; a one-channel image is repeated to it), with
    ``weights`` (a state-dict file, loaded with ``weights_only=True``) as its initial weights when
    given. ``torchscript:`` models are not built here (see :func:`load_torchscript`).
    """
    kind, target = parse_arch(arch)
    if kind in ("torchvision", "monai", "python"):
        if pretrained != "none":
            raise ModelError(f"model.pretrained = {pretrained!r}: {arch} is built with random weights"
                             " (nothing is downloaded); give a state dict in model.weights (initial"
                             " weights) or model.checkpoint (a trained model), and pretrained: none")
        channels = int(input_channels or in_channels)
        net = build_net(arch, classes=classes, in_channels=channels, size=size)
        if weights:
            state = read_state_dict(weights)
            load_weights(net, state, weights)
        model = Wrapped(Normalize(mean, std, out_channels=channels), net)
        problems = _fit_problems(model, [str(i) for i in range(classes)], in_channels, size)
        if problems:
            raise ModelError(f"model.arch {arch} does not fit {in_channels}x{size}x{size} inputs and"
                             f" {classes} classes: {'; '.join(problems)}")
        return model
    if kind == "torchscript":
        raise ModelError(f"{arch}: a TorchScript model is used as-is, never built or trained here;"
                         " give it as the dataset's model (no train block)")
    if arch == "vgg16":
        from torchvision.models import vgg16

        if size < 32:
            raise ModelError(f"vgg16 needs inputs of at least 32 px (five 2× poolings), got {size}")
        base = vgg16(weights=None)
        if pretrained == "imagenet":
            weights_file = find_vgg16_weights(weights)
            state = torch.load(weights_file, map_location="cpu", weights_only=True)
            base.load_state_dict(state)
        side = size // 32
        return Classifier(Normalize(mean, std, out_channels=3), base.features,
                          paper_head(512 * side * side, classes))
    if arch == "vgg_small":
        if pretrained != "none":
            raise ModelError("vgg_small is trained from scratch: set model.pretrained: none")
        if size < 8:
            raise ModelError(f"vgg_small needs inputs of at least 8 px, got {size}")
        widths = (width, 2 * width, 4 * width)
        side = size // 8
        return Classifier(Normalize(mean, std), _vgg_small_features(in_channels, widths),
                          paper_head(widths[-1] * side * side, classes, hidden=(256, 64)))
    raise ModelError(f"unknown model.arch {arch!r}; choose vgg16 or vgg_small")


# --------------------------------------------------------------------------------------------
# Model sources beyond the paper's networks
# --------------------------------------------------------------------------------------------

SOURCES = ("torchvision", "monai", "python", "torchscript")
#: sources the workflow can train (torchscript models are used as-is)
TRAINABLE = ("vgg16", "vgg_small", "torchvision", "monai", "python")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def parse_arch(arch: str) -> tuple[str, str]:
    """``model.arch`` as (source, target): ``("vgg16", "")``, ``("torchvision", "resnet18")``,
    ``("python", "pkg.mod:factory")``, ``("torchscript", "model.ts")``.

    Raises:
        ModelError: an unknown source prefix or an empty target.
    """
    if arch in ("vgg16", "vgg_small"):
        return arch, ""
    kind, sep, target = str(arch).partition(":")
    if not sep or kind not in SOURCES or not target.strip():
        raise ModelError(f"unknown model.arch {arch!r}; choose vgg16, vgg_small, torchvision:<builder>"
                         " (e.g. torchvision:resnet18), monai:<Network> (e.g. monai:DenseNet121),"
                         " torchscript:<file> or python:<module>:<callable>")
    if kind == "python" and ":" not in target.rstrip(":"):
        raise ModelError(f"model.arch {arch!r}: write python:<module or file.py>:<callable>,"
                         " e.g. python:my_models:build")
    return kind, target


def is_given(model_cfg: dict) -> bool:
    """Whether a dataset's model is given (``model.checkpoint`` or a TorchScript file), not trained."""
    return bool(model_cfg.get("checkpoint")) or parse_arch(model_cfg.get("arch", "vgg_small"))[0] == "torchscript"


def given_file(model_cfg: dict) -> str | None:
    """The file of a given model: ``model.checkpoint``, else a ``torchscript:`` arch's path."""
    if model_cfg.get("checkpoint"):
        return str(model_cfg["checkpoint"])
    kind, target = parse_arch(model_cfg.get("arch", "vgg_small"))
    return target if kind == "torchscript" else None


def python_factory_file(arch: str) -> str | None:
    """The ``.py`` file of a ``python:<file.py>:<callable>`` arch (a DAG input), else None."""
    kind, target = parse_arch(arch)
    if kind == "python":
        module = target.rsplit(":", 1)[0]
        if module.endswith(".py"):
            return module
    return None


def input_normalization(model_cfg: dict, stats: dict) -> tuple[list[float], list[float], int]:
    """(mean, std, channels) the wrapped network's input gets, from ``model.input``.

    ``normalize``: ``dataset`` (default: the train-set mean/std of ``stats.json``), ``imagenet``,
    ``none`` (the network takes [0,1] pixels) or ``custom`` (``mean``/``std`` lists, one value or
    one per channel). ``channels``: what the network's first layer takes (default: the data's).
    """
    spec = model_cfg.get("input") or {}
    mode = spec.get("normalize", "dataset")
    channels = int(spec.get("channels") or stats["channels"])
    if mode == "dataset":
        mean, std = list(stats["mean"]), list(stats["std"])
    elif mode == "imagenet":
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    elif mode == "none":
        mean, std = [0.0], [1.0]
    elif mode == "custom":
        if not spec.get("mean") or not spec.get("std"):
            raise ModelError("model.input.normalize: custom needs model.input.mean and model.input.std")
        mean, std = [float(v) for v in spec["mean"]], [float(v) for v in spec["std"]]
    else:
        raise ModelError(f"model.input.normalize = {mode!r}: choose dataset, imagenet, none or custom")
    if len(mean) not in (1, channels) and len(mean) != int(stats["channels"]):
        raise ModelError(f"model.input: {len(mean)} mean/std values for a network taking {channels} channel(s)")
    if int(stats["channels"]) > channels:
        raise ModelError(f"model.input.channels = {channels}, but the data have {stats['channels']} channels;"
                         " the network must take at least as many channels as the images have")
    return [float(v) for v in mean], [float(v) for v in std], channels


class Wrapped(nn.Module):
    """normalize (``model.input``) → a user's network: [0,1] images in, logits out.

    A network returning a tuple (e.g. auxiliary heads) or a dict with ``logits``/``out`` is
    reduced to its main logits.
    """

    def __init__(self, normalize: Normalize, net: nn.Module):
        super().__init__()
        self.normalize, self.net = normalize, net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(self.normalize(x))
        if isinstance(out, dict):
            out = out.get("logits", out.get("out"))
        elif isinstance(out, (tuple, list)):
            out = out[0]
        return out


def _first_conv(net: nn.Module) -> tuple[nn.Module, str, nn.Conv2d] | None:
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_name, _, child = name.rpartition(".")
            return net.get_submodule(parent_name) if parent_name else net, child, module
    return None


def adapt_first_conv(net: nn.Module, in_channels: int) -> None:
    """Rebuild ``net``'s first ``Conv2d`` (in module order) for ``in_channels`` input channels."""
    found = _first_conv(net)
    if found is None or found[2].in_channels == in_channels:
        return
    parent, child, conv = found
    if conv.groups != 1:
        raise ModelError(f"the first convolution of the network is grouped ({conv.groups} groups):"
                         f" cannot adapt it to {in_channels} channel(s); set model.input.channels"
                         f" to {conv.in_channels}")
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                    padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
                    padding_mode=conv.padding_mode)
    setattr(parent, child, new)


def _torchvision_net(name: str, classes: int, in_channels: int, size: int) -> nn.Module:
    import torchvision.models as tvm

    available = tvm.list_models(module=tvm)
    if name not in available:
        import difflib

        close = difflib.get_close_matches(name, available, n=3)
        raise ModelError(f"model.arch torchvision:{name}: not a torchvision classification builder"
                         + (f"; did you mean {', '.join(close)}?" if close else
                            f"; choose one of {', '.join(available)}"))
    kwargs: dict = {"weights": None, "num_classes": classes}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=True)  # one output; no init-order warning
    if name.startswith("vit_"):
        kwargs["image_size"] = size
    try:
        net = tvm.get_model(name, **kwargs)
    except (ValueError, TypeError, AssertionError, RuntimeError) as exc:
        raise ModelError(f"torchvision:{name} cannot be built for {classes} classes at {size} px: {exc}") from None
    adapt_first_conv(net, in_channels)
    return net


def _monai_net(name: str, classes: int, in_channels: int, size: int) -> nn.Module:
    try:
        import monai.networks.nets as nets
    except ImportError:
        raise ModelError(f"model.arch monai:{name} needs MONAI, an optional extra: pip install"
                         " 'oncorobust[monai]' (or pip install monai)") from None
    cls = getattr(nets, name, None)
    if cls is None or not callable(cls):
        raise ModelError(f"model.arch monai:{name}: monai.networks.nets has no network {name!r}"
                         " (e.g. DenseNet121, resnet18, SEResNet50)")
    params = inspect.signature(cls).parameters
    kwargs: dict = {}
    for key, value in (("spatial_dims", 2), ("in_channels", in_channels), ("n_input_channels", in_channels),
                       ("img_size", (size, size))):
        if key in params:
            kwargs[key] = value
    if "out_channels" in params:
        kwargs["out_channels"] = classes
    elif "num_classes" in params:
        kwargs["num_classes"] = classes
    try:
        return cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 (MONAI raises many kinds for missing arguments)
        raise ModelError(f"monai:{name} cannot be built as a 2-D classifier with {kwargs}: {exc}") from None


def import_factory(target: str):
    """The callable of ``python:<module or file.py>:<callable>`` (the working directory is on the path)."""
    module_name, _, attr = target.rpartition(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ModelError(f"model.arch python:{target}: no such file {path}")
            spec = importlib.util.spec_from_file_location(f"oncorobust_user_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            cwd = os.getcwd()
            if cwd not in sys.path:
                sys.path.insert(0, cwd)
            module = importlib.import_module(module_name)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 (the user's module may raise anything on import)
        raise ModelError(f"model.arch python:{target}: importing {module_name} failed:"
                         f" {type(exc).__name__}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"model.arch python:{target}: {module_name} has no callable {attr!r}")
    return factory


def _python_net(target: str, classes: int, in_channels: int, size: int) -> nn.Module:
    factory = import_factory(target)
    offered = {"classes": classes, "in_channels": in_channels, "size": size}
    try:
        params = inspect.signature(factory).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs = offered if takes_all else {k: v for k, v in offered.items() if k in params}
    except (TypeError, ValueError):  # no signature (a builtin): offer everything
        kwargs = offered
    net = factory(**kwargs)
    if not isinstance(net, nn.Module):
        raise ModelError(f"model.arch python:{target} returned {type(net).__name__}, not a torch.nn.Module")
    return net


def build_net(arch: str, *, classes: int, in_channels: int, size: int) -> nn.Module:
    """The bare network of a ``torchvision:``/``monai:``/``python:`` arch (no normalisation):
    input ``in_channels``×size×size, ``classes`` logits, random weights."""
    kind, target = parse_arch(arch)
    if kind == "torchvision":
        return _torchvision_net(target, classes, in_channels, size)
    if kind == "monai":
        return _monai_net(target, classes, in_channels, size)
    if kind == "python":
        return _python_net(target, classes, in_channels, size)
    raise ModelError(f"build_net: {arch!r} is not a torchvision:, monai: or python: arch")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state-dict file (``torch.save(model.state_dict(), f)``) read with ``weights_only=True``.

    Accepted: a plain mapping of names to tensors, or one under ``state_dict`` /
    ``model_state_dict`` (training-framework checkpoints); a ``module.`` prefix on every key
    (``DataParallel``) is removed.

    Raises:
        CheckpointError: missing, empty, unreadable, a TorchScript file, or holding anything but
            tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file (model.checkpoint / model.weights)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the checkpoint file is empty")
    if is_torchscript(path):
        raise CheckpointError(f"{path} is a TorchScript model, not a state dict: use model.arch"
                              f" torchscript:{path} (and no model.checkpoint)")
    if _is_lfs_pointer(path):
        raise CheckpointError(f"{path}: {LFS_REASON}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _foreign_objects(exc):
            raise CheckpointError(f"{path}: unreadable (truncated, or not a torch file):"
                                  f" {_first_line(exc)}") from None
        raise CheckpointError(f"{path} holds Python objects other than tensors (a pickled model?),"
                              " which are never loaded: save model.state_dict() with torch.save, or"
                              " export TorchScript (torch.jit.script/trace) and use torchscript:<file>") from None
    except Exception as exc:  # noqa: BLE001 (a text/CSV file raises IndexError, others many more)
        raise CheckpointError(f"{path}: unreadable (truncated, or not a torch file):"
                              f" {_first_line(exc)}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        found = type(obj).__name__ if not isinstance(obj, dict) else f"a dict with keys {_few(sorted(map(str, obj)))}"
        raise CheckpointError(f"{path}: expected a state dict (parameter name -> tensor), found {found}")
    if all(str(k).startswith("module.") for k in obj):
        obj = {str(k)[len("module."):]: v for k, v in obj.items()}
    return obj


def load_torchscript(source: str | os.PathLike | bytes, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """``torch.jit.load`` of a TorchScript file or its bytes. This runs the model's own code."""
    import warnings

    try:
        with warnings.catch_warnings():  # torch 2.14 marks TorchScript deprecated; it still loads
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(io.BytesIO(source) if isinstance(source, bytes) else str(source),
                                  map_location=device)
    except Exception as exc:  # noqa: BLE001 (TorchScript raises RuntimeError and more)
        where = "the embedded TorchScript model" if isinstance(source, bytes) else str(source)
        raise CheckpointError(f"{where}: not a loadable TorchScript model ({type(exc).__name__}:"
                              f" {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''});"
                              " export it with torch.jit.script(model).save(f) or torch.jit.trace") from None


def _fit_problems(model: nn.Module, classes: list[str], channels: int, size: int) -> list[str]:
    """What goes wrong when ``model`` (wrapped) runs on 2×channels×size×size [0,1] inputs."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(0)))
    except Exception as exc:  # noqa: BLE001 (a shape error can be anything the user's code raises)
        return [f"input size: the model fails on {channels}x{size}x{size} images ({_reason(exc)}); set"
                " preprocess.size to the size it was trained on, or model.input.channels"]
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return [f"output: expected logits of shape (batch, {len(classes)}), got {shape}"]
    if out.shape[1] != len(classes):
        return [f"class count: the model returns {out.shape[1]} logits, the data have {len(classes)}"
                f" classes {classes}"]
    return []


def _reason(exc: BaseException) -> str:
    """The telling line of an exception (TorchScript puts the real error on its last line)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if len(lines) > 1 else lines[0]
    return line[:300]


def _key_problems(net: nn.Module, state: dict[str, torch.Tensor], classes: list[str]) -> list[str]:
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_few(unexpected)}")
    if shapes:
        problems.append("shape mismatches: " + _few([f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
                                                     for k in shapes]))
        last = [k for k, v in own.items() if v.ndim >= 2][-1:]  # the output layer's weight
        if last and last[0] in shapes and state[last[0]].shape[0] != own[last[0]].shape[0]:
            problems.append(f"class count: the checkpoint's output layer {last[0]} has"
                            f" {state[last[0]].shape[0]} outputs, the data have {len(classes)} classes {classes}")
        first = _first_conv(net)
        if first is not None:
            key = next((k for k, v in net.named_parameters() if v is first[2].weight), None)
            if key in shapes and state[key].ndim == 4 and state[key].shape[1] != own[key].shape[1]:
                problems.append(f"input channels: {key} takes {state[key].shape[1]} channel(s), built for"
                                f" {own[key].shape[1]}; set model.input.channels: {state[key].shape[1]}")
    return problems


def import_checkpoint(model_cfg: dict, stats: dict) -> dict:
    """A given model (``model.checkpoint`` or ``torchscript:<file>``) in this project's format.

    State dicts (torchvision/monai/python archs) are read with ``weights_only=True`` and must fit
    the network built for this dataset (classes, input channels, size); TorchScript files are
    loaded with ``torch.jit.load`` (running the user's code) and embedded as bytes. Either way the
    model is wrapped with ``model.input``'s normalisation and must map a batch of the dataset's
    images to one logit per class.

    Args:
        model_cfg: the dataset's ``model`` block.
        stats: the dataset's ``tensors/stats.json`` (size, channels, classes, mean, std).

    Returns:
        ``{"state_dict", "meta"}`` for :func:`load_model` (``meta["sha256"]`` set).

    Raises:
        CheckpointError: the file is unreadable or does not fit: one message listing every
            difference (missing/unexpected keys, shape mismatches, class count, input size).
        ModelError: the architecture cannot be built.
    """
    arch = model_cfg.get("arch", "vgg_small")
    kind, target = parse_arch(arch)
    path = Path(given_file(model_cfg) or "")
    classes, size = list(stats["classes"]), int(stats["size"])
    mean, std, channels = input_normalization(model_cfg, stats)
    file_sha = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    extra = {"source": kind, "checkpoint": str(path), "checkpoint_sha256": file_sha,
             "input_channels": channels, "input": dict(model_cfg.get("input") or {})}
    if kind == "torchscript":
        if not path.is_file():
            raise CheckpointError(f"{path}: no such TorchScript file (model.arch {arch})")
        net = load_torchscript(path)
        model = Wrapped(Normalize(mean, std, out_channels=channels), net)
        problems = _fit_problems(model, classes, int(stats["channels"]), size)
        state = {"torchscript": torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8).clone(),
                 "normalize.mean": model.normalize.mean.clone(), "normalize.std": model.normalize.std.clone()}
    else:
        if kind not in ("torchvision", "monai", "python"):
            raise ModelError(f"model.checkpoint is given for model.arch {arch!r}; give one of"
                             " torchvision:<builder>, monai:<Network>, python:<module>:<callable>"
                             " (a state dict for that network) or torchscript:<file>")
        loaded = read_state_dict(path)
        net = build_net(arch, classes=len(classes), in_channels=channels, size=size)
        problems = _key_problems(net, loaded, classes)
        if not problems:
            net.load_state_dict(loaded)
            model = Wrapped(Normalize(mean, std, out_channels=channels), net)
            problems = _fit_problems(model, classes, int(stats["channels"]), size)
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if problems:
        raise CheckpointError(f"{path} does not fit model.arch {arch} on this dataset ({len(classes)}"
                              f" classes, {stats['channels']}x{size}x{size} images"
                              f"{'' if channels == int(stats['channels']) else f', network input {channels} channels'}):\n  - "
                              + "\n  - ".join(problems))
    meta = model_meta(arch, {**stats, "mean": mean, "std": std}, model_cfg, regime="clean",
                      sha256=state_digest(state), **extra)
    return {"state_dict": state, "meta": meta}


def model_meta(arch: str, stats: dict, model_cfg: dict, **extra) -> dict:
    """Plain metadata stored beside a state dict (loadable with ``weights_only=True``)."""
    return {"arch": arch, "size": int(stats["size"]), "channels": int(stats["channels"]),
            "classes": list(stats["classes"]), "mean": list(stats["mean"]), "std": list(stats["std"]),
            "width": int(model_cfg.get("width", 32)), "pretrained": model_cfg.get("pretrained", "none"),
            **extra}


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a state dict's tensors, independent of the file format that stores them.

    Canonical order: keys sorted; for each, the key, the tensor's dtype, its shape and its
    contiguous bytes on the CPU. Written into a checkpoint's ``meta["sha256"]`` at save time
    (:func:`~oncorobust.train.run_training`) and verified by :func:`load_checkpoint`.

    Args:
        state_dict: parameter/buffer name -> tensor.

    Returns:
        The 64-character hex digest.
    """
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


#: The first line of a Git LFS pointer file (what a clone without ``git lfs pull`` holds).
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"
LFS_REASON = ("a Git LFS pointer, not the weights: run `git lfs pull` (with Git LFS installed) in its"
              " repository to fetch the file")


def _is_lfs_pointer(path: Path) -> bool:
    """Whether ``path`` is a Git LFS pointer (a small text file standing in for the real one)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(LFS_POINTER)) == LFS_POINTER
    except OSError:
        return False


def _foreign_objects(exc: BaseException) -> bool:
    """Whether torch's weights_only unpickler refused foreign Python objects (a pickled model),
    rather than bytes that are no pickle at all (a text file: 'Unsupported operand')."""
    text = str(exc)
    return ("weights_only" in text or "Unsupported global" in text) and "Unsupported operand" not in text


def _first_line(exc: BaseException) -> str:
    """``Type: the gist of the message`` (torch's messages run to many lines of advice; its
    unpickler's own complaint follows 'WeightsUnpickler error:')."""
    text = str(exc).strip()
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    msg = text.splitlines()[0][:200] if text else ""
    return type(exc).__name__ + (f": {msg}" if msg else "")


def _not_ours(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a checkpoint this project wrote ({reason}); retrain"
                           " (delete the file and rerun the workflow) or point at the right file")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """Read and verify a model file written by the train step (``{"state_dict", "meta"}``).

    The tensors' SHA-256 (:func:`state_digest`) must equal ``meta["sha256"]``. A checkpoint
    written before digests were stored (no ``sha256`` in its meta) is accepted with a logged
    warning, because nothing can be verified for it; retraining adds the digest.

    Args:
        path: the ``.pt`` file.
        device: where the tensors are loaded.

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: the file is missing, empty, truncated, not a torch file, holds anything
            but plain tensors and metadata (``weights_only`` refuses it), lacks ``state_dict`` or
            ``meta``, or its tensors do not match their stored digest (damaged).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file; run the train step first (or fix the path)")
    if path.stat().st_size == 0:
        raise _not_ours(path, "the file is empty")
    if _is_lfs_pointer(path):
        raise _not_ours(path, LFS_REASON)
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:  # includes what weights_only refuses (foreign objects)
        if _foreign_objects(exc):
            raise _not_ours(path, "it holds Python objects other than tensors and plain metadata, which"
                            " are never loaded") from None
        raise _not_ours(path, f"unreadable: truncated, or not a torch file; {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 (a text/CSV file raises IndexError, others many more)
        raise _not_ours(path, f"unreadable: truncated, or not a torch file; {_first_line(exc)}") from None
    if not isinstance(ck, dict) or not isinstance(ck.get("state_dict"), dict) or not isinstance(ck.get("meta"), dict):
        keys = sorted(map(str, ck)) if isinstance(ck, dict) else type(ck).__name__
        raise _not_ours(path, f"expected a dict with 'state_dict' and 'meta', found {keys}")
    stored = ck["meta"].get("sha256")
    if stored is None:
        log.warning("%s has no tensor digest (written before digests were stored): its integrity"
                    " cannot be verified; retrain to add one", path)
    elif state_digest(ck["state_dict"]) != stored:
        raise CheckpointError(f"{path}: the weights do not match the SHA-256 stored when they were"
                              " saved (the file is damaged); retrain (delete the file and rerun) or"
                              " restore it from a backup")
    return ck


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a classifier saved by the train step (``{"state_dict", "meta"}``), in eval mode.

    Args:
        path: the model file (``results/{ds}/models/{regime}.pt``).
        device: where the model is placed.

    Returns:
        The classifier in eval mode.

    Raises:
        CheckpointError: see :func:`load_checkpoint`; also when the metadata is incomplete or the
            weights do not fit the architecture (the missing, unexpected and mis-shaped keys are
            listed).
    """
    path = Path(path)
    ck = load_checkpoint(path, device)
    meta = ck["meta"]
    missing = [k for k in ("arch", "classes", "channels", "size", "mean", "std", "width") if k not in meta]
    if missing:
        raise _not_ours(path, f"its meta lacks {missing}")
    try:
        kind = parse_arch(meta["arch"])[0]
    except ModelError as exc:
        raise _not_ours(path, str(exc)) from None
    if kind == "torchscript":
        state = ck["state_dict"]
        if "torchscript" not in state:
            raise _not_ours(path, "a torchscript model without its embedded TorchScript bytes")
        net = load_torchscript(state["torchscript"].cpu().numpy().tobytes(), device)
        channels = int(meta.get("input_channels") or meta["channels"])
        model = Wrapped(Normalize(meta["mean"], meta["std"], out_channels=channels), net)
        return model.to(device).eval()
    model = build_model(meta["arch"], classes=len(meta["classes"]), in_channels=meta["channels"],
                        size=meta["size"], mean=meta["mean"], std=meta["std"], width=meta["width"],
                        input_channels=meta.get("input_channels"))
    load_weights(model, ck["state_dict"], path)
    return model.to(device).eval()


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(state_dict)`` with a readable error when they do not fit.

    Args:
        model: the freshly built model.
        state_dict: the stored weights.
        path: the file they came from (named in the message).

    Raises:
        CheckpointError: listing missing keys, unexpected keys and shape mismatches.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [f"{k} {tuple(state_dict[k].shape)} != {tuple(own[k].shape)}" for k in sorted(set(own) & set(state_dict))
              if tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{name}: {_few(items)}" for name, items in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if items]
        raise CheckpointError(f"{path}: the stored weights do not fit the model its metadata describes"
                              f" ({'; '.join(parts)}); retrain or point at the right file")
    model.load_state_dict(state_dict)


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")
