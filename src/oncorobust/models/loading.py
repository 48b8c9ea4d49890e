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
  the user's code);
- ``export:<path.pt2>``: a ``torch.export`` program (``torch.export.save``), used as-is; a program
  exported with a fixed batch size is run in chunks of that size.

Output heads (``model.output``, given models only; see :class:`OutputHead`): ``logits`` (N×classes),
``logit`` (N×1 on two classes, a sigmoid/BCE head: wrapped as the two logits ``[0, z]``) and
``probabilities`` (softmax rows, or a sigmoid probability N×1: wrapped as clamped
log-probabilities). Every later stage then sees N×classes logits, so attacks, margins, health
checks and ε keep their meaning.

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

from oncorobust.errors import ModelError, OncorobustError
from oncorobust.spec import OUTPUT_CHOICES, OUTPUT_HEADS, SERIALIZED_SOURCES, given_file, parse_arch
from oncorobust.models.zipformat import is_exported_program, is_torchscript

log = logging.getLogger("oncorobust.models.loading")

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's IMAGENET1K_V1 weights file name


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
    if kind in SERIALIZED_SOURCES:
        raise ModelError(f"{arch}: a serialized model ({kind}) is used as-is, never built or trained"
                         " here; give it as the dataset's model (no train block)")
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

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


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


#: What a given model's output means (``model.output``); ``auto`` detects it at import.
#: Floor of a probability before its log (float32: log(1e-12) = -27.6, far below any real logit gap).
PROB_FLOOR = 1e-12


class OutputHead(nn.Module):
    """Turns a network's output into N×classes logits, so every attack and margin keeps its meaning.

    - ``logits``: N×classes, unchanged.
    - ``logit``: N×1 (or N) on two classes, z > 0 meaning class ``positive`` (default 1): the
      logits ``[0, z]`` (``[z, 0]`` when ``positive`` is 0). Softmax of them is sigmoid(z), the
      margin is |z| and the flipping ε of a linear model is |z| / ‖w‖₁, as for the one logit.
    - ``probabilities``: softmax rows N×classes → log(max(p, PROB_FLOOR)); a sigmoid probability
      N×1 of class ``positive`` → the log-probabilities of both classes. Log-probabilities are
      valid logits (softmax returns p) and keep gradients where p saturates less than p itself.

    Args:
        kind: one of ``logits``, ``logit``, ``probabilities``.
        positive: for one-output heads, the class index (0 or 1) that a high output means.
    """

    def __init__(self, kind: str = "logits", positive: int = 1):
        super().__init__()
        if kind not in OUTPUT_HEADS:
            raise ModelError(f"model.output = {kind!r}: choose one of {list(OUTPUT_HEADS)}")
        if positive not in (0, 1):
            raise ModelError(f"model.positive_class = {positive!r}: give 0 or 1 (the class a high output means)")
        self.kind, self.positive = kind, int(positive)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, positive={self.positive}"

    def _two(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """Columns (class 0, class 1) from the scores of the negative and the positive class."""
        return torch.stack([low, high] if self.positive == 1 else [high, low], dim=1)

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        if self.kind == "logits":
            return out
        single = out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)
        if self.kind == "logit":
            if not single:
                raise ModelError(f"model.output = logit, but the model returns shape {tuple(out.shape)},"
                                 " not one value per image; set model.output: logits")
            z = out.reshape(-1)
            return self._two(torch.zeros_like(z), z)
        if single:
            p = out.reshape(-1)
            return self._two(torch.log(torch.clamp(1 - p, min=PROB_FLOOR)), torch.log(torch.clamp(p, min=PROB_FLOOR)))
        return torch.log(torch.clamp(out, min=PROB_FLOOR))


def main_output(out):
    """A network's main output: the first of a tuple (auxiliary heads), ``logits``/``out`` of a dict."""
    if isinstance(out, dict):
        return out.get("logits", out.get("out"))
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


class Wrapped(nn.Module):
    """normalize (``model.input``) → a user's network → :class:`OutputHead`: [0,1] images
    (N×C×H×W) in, N×classes logits out.

    A network returning a tuple (e.g. auxiliary heads) or a dict with ``logits``/``out`` is
    reduced to its main output before the head.
    """

    def __init__(self, normalize: Normalize, net: nn.Module, head: OutputHead | None = None):
        super().__init__()
        self.normalize, self.net = normalize, net
        self.head = head or OutputHead("logits")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(main_output(self.net(self.normalize(x))))


def detect_output(out: torch.Tensor, classes: int) -> str | None:
    """What a given model's raw output (N×K on real or random images) looks like.

    Args:
        out: the network's main output for a batch (N×K, or N).
        classes: the dataset's class count.

    Returns:
        ``logits``, ``logit`` (N×1 with values outside [0,1] on two classes), ``probabilities``
        (N×classes rows in [0,1] summing to 1), or None when ambiguous (N×1 with every value in
        [0,1]: a one-logit head or a sigmoid probability) or unusable (another shape).
    """
    if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
        if classes != 2:
            return None
        inside = bool(((out >= 0) & (out <= 1)).all())
        return None if inside else "logit"
    if out.ndim != 2 or out.shape[1] != classes:
        return None
    rows_sum_to_one = bool(((out >= 0) & (out <= 1)).all()) and bool(
        torch.allclose(out.sum(1), torch.ones(len(out), dtype=out.dtype), atol=1e-3))
    return "probabilities" if rows_sum_to_one else "logits"


def resolve_output(declared: str, out: torch.Tensor, classes: int, where: str) -> str:
    """The output head of a given model: ``model.output`` checked against what the model returns.

    Args:
        declared: ``model.output`` (``auto``, ``logits``, ``logit`` or ``probabilities``).
        out: the network's main output on a batch of images (N×K, N ≥ 2).
        classes: the dataset's class count.
        where: the model file or arch, named in errors.

    Returns:
        The head kind to wrap the network with.

    Raises:
        ModelError: non-finite outputs; a shape that fits no head; probabilities not declared as
            such (attacks on probabilities saturate); an ambiguous one-output head under ``auto``.
    """
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"{where}: the model returns {type(out).__name__}, not a tensor of logits")
    bad = ~torch.isfinite(out.reshape(len(out), -1)).all(1) if out.ndim else torch.tensor([True])
    if bad.any():
        raise ModelError(f"{where}: the model returns NaN or infinite outputs on {int(bad.sum())} of"
                         f" {len(out)} images; no attack result on it would mean anything. Check the"
                         " weights (a diverged training run?) and the input normalisation (model.input)")
    seen = detect_output(out, classes)
    single = out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)
    shape = tuple(out.shape)
    if single and classes != 2:
        raise ModelError(f"{where}: the model returns one value per image (shape {shape}) but the data"
                         f" have {classes} classes; a one-output head fits two classes only")
    if declared == "auto":
        if seen is None and single:
            raise ModelError(f"{where}: the model returns one value per image, every one in [0, 1]:"
                             " a one-logit head or a sigmoid probability? Say which: model.output:"
                             " logit or probabilities (oncorobust audit --output logit|probabilities)")
        if seen == "probabilities":
            raise ModelError(f"{where}: the model's outputs look like probabilities (each row in [0,1]"
                             " summing to 1). Attacks on probabilities saturate; declare model.output:"
                             " probabilities (--output probabilities) and they run on log-probabilities,"
                             " or give the model without its final softmax (model.output: logits)")
        if seen is None:
            raise ModelError(f"{where}: expected logits of shape (batch, {classes}), got {shape}")
        return seen
    if declared == "logits":
        if single or out.ndim != 2 or out.shape[1] != classes:
            hint = " (a one-logit head: set model.output: logit)" if single else ""
            raise ModelError(f"{where}: model.output = logits, but the model returns shape {shape};"
                             f" expected (batch, {classes}){hint}")
        if seen == "probabilities":
            raise ModelError(f"{where}: model.output = logits, but every output row lies in [0,1] and"
                             " sums to 1: these are probabilities. Set model.output: probabilities")
        return "logits"
    if declared == "logit":
        if not single:
            raise ModelError(f"{where}: model.output = logit, but the model returns shape {shape}, not"
                             " one value per image; set model.output: logits")
        return "logit"
    if declared == "probabilities":
        if not bool(((out >= 0) & (out <= 1)).all()):
            raise ModelError(f"{where}: model.output = probabilities, but the outputs leave [0, 1]"
                             f" ({out.min().item():.3g} … {out.max().item():.3g}); set model.output:"
                             f" {'logit' if single else 'logits'}")
        if not single and seen != "probabilities":
            raise ModelError(f"{where}: model.output = probabilities, but the output rows do not sum to 1;"
                             " set model.output: logits (or add the softmax)")
        return "probabilities"
    raise ModelError(f"model.output = {declared!r}: choose one of {list(OUTPUT_CHOICES)}")


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


#: The ``python:`` factory contract, stated once (README, schema and errors point here).
FACTORY_CONTRACT = ("the factory is called with the keyword arguments it declares among num_classes"
                    " (int: the number of classes), classes (int: the same number), class_names (list"
                    " of str: the class names in label order), in_channels (int) and size (int, input"
                    " side in pixels), and returns a torch.nn.Module mapping N×in_channels×size×size"
                    " images to N×num_classes logits")


def _python_net(target: str, classes: int | list[str], in_channels: int, size: int) -> nn.Module:
    """Call the user's factory under :data:`FACTORY_CONTRACT`; ``classes``: a count or the names."""
    factory = import_factory(target)
    names = [str(c) for c in classes] if isinstance(classes, (list, tuple)) else [str(i) for i in range(int(classes))]
    offered = {"num_classes": len(names), "classes": len(names), "class_names": names,
               "in_channels": in_channels, "size": size}
    try:
        params = inspect.signature(factory).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs = offered if takes_all else {k: v for k, v in offered.items() if k in params}
    except (TypeError, ValueError):  # no signature (a builtin): offer everything
        kwargs = offered
    try:
        net = factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 (the user's code may raise anything)
        raise ModelError(f"model.arch python:{target}: the factory failed when called with"
                         f" {', '.join(f'{k}={v!r}' for k, v in kwargs.items())}: {type(exc).__name__}:"
                         f" {_reason(exc)}. Contract: {FACTORY_CONTRACT}") from None
    if not isinstance(net, nn.Module):
        raise ModelError(f"model.arch python:{target} returned {type(net).__name__}, not a torch.nn.Module")
    return net


def build_net(arch: str, *, classes: int | list[str], in_channels: int, size: int) -> nn.Module:
    """The bare network of a ``torchvision:``/``monai:``/``python:`` arch (no normalisation).

    Args:
        arch: the ``model.arch`` string.
        classes: the class count, or the class names in label order (a ``python:`` factory may
            ask for either, see :data:`FACTORY_CONTRACT`).
        in_channels: input channels of the network's first layer.
        size: input side in pixels.

    Returns:
        The network (random weights), mapping N×in_channels×size×size to N×classes logits.

    Raises:
        ModelError: the arch cannot be built (unknown builder, failing factory, ...).
    """
    kind, target = parse_arch(arch)
    count = len(classes) if isinstance(classes, (list, tuple)) else int(classes)
    if kind == "torchvision":
        return _torchvision_net(target, count, in_channels, size)
    if kind == "monai":
        return _monai_net(target, count, in_channels, size)
    if kind == "python":
        return _python_net(target, classes, in_channels, size)
    raise ModelError(f"build_net: {arch!r} is not a torchvision:, monai: or python: arch")


#: Keys under which training frameworks store the weights, in order of preference:
#: Lightning/timm/generic (``state_dict``), the common tutorial form (``model_state_dict``),
#: torchvision's reference scripts (``model``), then exponential-moving-average copies.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "ema", "model_ema",
                "state_dict_ema", "ema_state_dict")
#: Key prefixes that wrappers add to every parameter name (DataParallel/DDP ``module.``, a
#: Lightning module's ``model.``/``net.`` attribute, ``torch.compile``'s ``_orig_mod.``).
WRAPPER_PREFIXES = ("module.", "model.", "net.", "_orig_mod.")
#: Non-weight entries of EMA wrappers (torch.optim.swa_utils.AveragedModel keeps a counter).
EMA_COUNTERS = ("n_averaged",)


def _torch_load_weights(path: Path):
    """``torch.load(weights_only=True)``, also allowing ``argparse.Namespace`` (torchvision's
    reference scripts store their ``args`` beside the weights); anything else foreign refused."""
    import argparse

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _foreign_objects(exc):
            raise
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)


def _unwrap(obj, path: Path, key: str | None = None) -> tuple[dict, str]:
    """The state dict inside a training checkpoint, and where it was found (``""``: top level)."""
    if not isinstance(obj, dict):
        return obj, ""
    if key:
        if not isinstance(obj.get(key), dict):
            raise CheckpointError(f"{path}: model.checkpoint_key = {key!r}, but the file has no mapping"
                                  f" under that key (its keys: {_few(sorted(map(str, obj)))})")
        return obj[key], key
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, ""
    for name in WRAPPER_KEYS:
        if isinstance(obj.get(name), dict) and obj[name]:
            return obj[name], name
    return obj, ""


def read_state_dict(path: str | os.PathLike, key: str | None = None) -> dict[str, torch.Tensor]:
    """A state-dict file, or the weights inside a training checkpoint, read with ``weights_only=True``.

    Accepted: a plain mapping of names to tensors (``torch.save(model.state_dict(), f)``), or one
    under one of :data:`WRAPPER_KEYS` (``{"model": ..., "optimizer": ..., "epoch": ...}`` from
    torchvision's reference scripts, Lightning's and timm's ``state_dict``, ``model_state_dict``,
    EMA copies), or under ``key``; the key used is logged. A ``module.`` prefix on every key
    (``DataParallel``) is removed; other wrapper prefixes are matched against the network in
    :func:`import_checkpoint`.

    Args:
        path: the file.
        key: the checkpoint key holding the weights (``model.checkpoint_key``); default: found.

    Returns:
        parameter/buffer name → tensor.

    Raises:
        CheckpointError: missing, empty, unreadable, a TorchScript/export file, or holding
            anything but tensors where the weights should be.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file (model.checkpoint / model.weights)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the checkpoint file is empty")
    if is_torchscript(path):
        raise CheckpointError(f"{path} is a TorchScript model, not a state dict: use model.arch"
                              f" torchscript:{path} (and no model.checkpoint)")
    if is_exported_program(path):
        raise CheckpointError(f"{path} is a torch.export program, not a state dict: use model.arch"
                              f" export:{path} (and no model.checkpoint)")
    if _is_lfs_pointer(path):
        raise CheckpointError(f"{path}: {LFS_REASON}")
    try:
        obj = _torch_load_weights(path)
    except pickle.UnpicklingError as exc:
        if not _foreign_objects(exc):
            raise CheckpointError(f"{path}: unreadable (truncated, or not a torch file):"
                                  f" {_first_line(exc)}") from None
        found = _unsupported_global(exc)
        raise CheckpointError(f"{path} holds Python objects other than tensors{found} (a pickled model"
                              " or a training checkpoint with custom objects), which are never loaded:"
                              " in a trusted session run torch.load(f, weights_only=False) and save"
                              " only the weights with torch.save(model.state_dict(), 'weights.pt'), or"
                              " export the model (torch.export.save → export:<file.pt2>)") from None
    except Exception as exc:  # noqa: BLE001 (a text/CSV file raises IndexError, others many more)
        raise CheckpointError(f"{path}: unreadable (truncated, or not a torch file):"
                              f" {_first_line(exc)}") from None
    top = sorted(map(str, obj)) if isinstance(obj, dict) else []
    obj, where = _unwrap(obj, path, key)
    if where:
        others = [k for k in WRAPPER_KEYS if k != where and k in top]
        log.info("%s: a training checkpoint (keys %s); the weights are taken from its key %r%s", path,
                 _few(top), where, f" (it also holds {', '.join(others)}: set model.checkpoint_key to"
                                   " audit that one instead)" if others else "")
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if str(k) not in EMA_COUNTERS}
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        found = type(obj).__name__ if not isinstance(obj, dict) else f"a dict with keys {_few(sorted(map(str, obj)))}"
        raise CheckpointError(f"{path}: expected a state dict (parameter name -> tensor), or a training"
                              f" checkpoint holding one under {', '.join(WRAPPER_KEYS[:4])}, ...; found"
                              f" {found}. Name the key holding the weights with model.checkpoint_key")
    if all(str(k).startswith("module.") for k in obj):
        obj = {str(k)[len("module."):]: v for k, v in obj.items()}
    return obj


def _unsupported_global(exc: BaseException) -> str:
    """`` (x.y.Z)``: the class torch's weights-only unpickler refused, when its message names one."""
    import re

    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return f" ({m.group(1)})" if m else ""


def match_prefixes(state: dict[str, torch.Tensor], own: set[str]) -> tuple[dict[str, torch.Tensor], str]:
    """Strip wrapper prefixes (:data:`WRAPPER_PREFIXES`, e.g. Lightning's ``model.``) shared by
    every key of ``state`` while that makes more keys match the network's ``own`` keys.

    Args:
        state: the checkpoint's weights.
        own: the network's state-dict keys.

    Returns:
        (the weights with the prefixes removed, the removed prefix text, ``""`` if none).
    """
    removed = ""

    def hits(d):
        return len(set(d) & own)

    while True:
        for prefix in WRAPPER_PREFIXES:
            if state and all(str(k).startswith(prefix) for k in state):
                stripped = {str(k)[len(prefix):]: v for k, v in state.items()}
                if hits(stripped) > hits(state):
                    state, removed = stripped, removed + prefix
                    break
        else:
            return state, removed


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


class ExportedNet(nn.Module):
    """A ``torch.export`` program as a module: [N×C×H×W] → its output, batch by batch.

    The program's graph module is held outside the module tree: it has no train/eval switch (it
    runs as it was exported: export in eval mode), and this wrapper's ``train()``/``eval()`` only
    set its own flag. A program exported with a fixed batch size B is run in chunks of B, the last
    one padded with detached copies (their outputs are dropped and no gradient reaches them).

    Args:
        program: the ``torch.export.ExportedProgram``.
        device: where its graph module runs.
    """

    def __init__(self, program, device: str | torch.device = "cpu"):
        super().__init__()
        gm = program.module()
        try:
            gm = gm.to(device)
        except Exception:  # noqa: BLE001 (moving a graph module can fail on exotic programs)
            pass
        object.__setattr__(self, "_gm", gm)
        self.batch = _static_batch(program)

    def train(self, mode: bool = True):
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.batch
        if b is None or len(x) == b:
            return self._gm(x)
        outs = []
        for i in range(0, len(x), b):
            chunk = x[i:i + b]
            k = len(chunk)
            if k < b:
                chunk = torch.cat([chunk, chunk[-1:].detach().expand(b - k, *chunk.shape[1:])])
            outs.append(main_output(self._gm(chunk))[:k])
        return torch.cat(outs)


def _static_batch(program) -> int | None:
    """The program's fixed batch size (its first user input's first dimension), None if dynamic."""
    try:
        name = program.graph_signature.user_inputs[0]
        node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name)
        first = node.meta["val"].shape[0]
    except Exception:  # noqa: BLE001 (no example value: treat as dynamic)
        return None
    return int(first) if isinstance(first, int) else None


def load_export(source: str | os.PathLike | bytes, device: str | torch.device = "cpu") -> ExportedNet:
    """``torch.export.load`` of a ``.pt2`` file or its bytes, as an :class:`ExportedNet`.

    Args:
        source: the file, or its bytes (as embedded in this project's checkpoint).
        device: where the program runs.

    Returns:
        The program as a module taking N×C×H×W batches of any N.

    Raises:
        CheckpointError: the file is not a loadable ``torch.export`` program.
    """
    try:
        program = torch.export.load(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    except Exception as exc:  # noqa: BLE001 (torch.export raises many kinds)
        where = "the embedded torch.export program" if isinstance(source, bytes) else str(source)
        raise CheckpointError(f"{where}: not a loadable torch.export program ({type(exc).__name__}:"
                              f" {_reason(exc)}); save it with torch.export.save(torch.export.export("
                              "model.eval(), (x,)), 'model.pt2')") from None
    return ExportedNet(program, device)


def load_serialized(kind: str, source: str | os.PathLike | bytes, device: str | torch.device = "cpu") -> nn.Module:
    """A serialized network (``torchscript`` or ``export``) from its file or bytes."""
    return load_torchscript(source, device) if kind == "torchscript" else load_export(source, device)


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
    out = main_output(out)
    if isinstance(out, torch.Tensor) and out.ndim == 1 and len(out) == 2 and len(classes) == 2:
        return []  # one value per image (model.output: logit or probabilities)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return [f"output: expected logits of shape (batch, {len(classes)}), got {shape}"]
    if out.shape[1] == 1 and len(classes) == 2:
        return []
    if out.shape[1] != len(classes):
        return [f"class count: the model returns {out.shape[1]} logits, the data have {len(classes)}"
                f" classes {classes}" + ("; a one-output head fits two classes only" if out.shape[1] == 1 else "")]
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
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
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


def _one_output(net: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state``'s output layer (the network's last weight of rank ≥ 2) has one output
    where ``net``'s has more: a one-logit checkpoint of a network built for two classes."""
    own = net.state_dict()
    last = [k for k, v in own.items() if v.ndim >= 2][-1:]
    return bool(last) and last[0] in state and state[last[0]].ndim >= 2 and state[last[0]].shape[0] == 1 \
        and own[last[0]].shape[0] > 1


def _fill_bn_counters(net: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add BatchNorm's ``num_batches_tracked`` where a checkpoint lacks it (as PyTorch's own
    ``load_state_dict`` does for old checkpoints): it counts training steps, no inference uses it."""
    own = net.state_dict()
    missing = {k: torch.zeros_like(own[k]) for k in own if k.endswith("num_batches_tracked") and k not in state}
    return {**state, **missing} if missing else state


@torch.no_grad()
def _raw_outputs(model: Wrapped, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The wrapped network's main output (before the head) on ``images``, in eval mode, batched."""
    outs = []
    was = model.training
    model.eval()
    try:
        for i in range(0, len(images), batch_size):
            out = main_output(model.net(model.normalize(images[i:i + batch_size])))
            if not isinstance(out, torch.Tensor):
                return out
            outs.append(out.float())
    finally:
        model.train(was)
    return torch.cat(outs)


def import_checkpoint(model_cfg: dict, stats: dict, images: torch.Tensor | None = None) -> dict:
    """A given model (``model.checkpoint``, ``torchscript:<file>`` or ``export:<file.pt2>``) in
    this project's format.

    State dicts (torchvision/monai/python archs) are read with ``weights_only=True`` (training
    checkpoints unwrapped, see :func:`read_state_dict`; wrapper prefixes matched, see
    :func:`match_prefixes`; BatchNorm counters may be missing) and must fit the network built for
    this dataset (classes, input channels, size); TorchScript files and ``torch.export`` programs
    are loaded (TorchScript runs the user's code) and embedded as bytes. The model is wrapped with
    ``model.input``'s normalisation and ``model.output``'s head (:class:`OutputHead`; ``auto`` is
    resolved on ``images`` and logged) and must map a batch of the dataset's images to finite
    outputs.

    Args:
        model_cfg: the dataset's ``model`` block.
        stats: the dataset's ``tensors/stats.json`` (size, channels, classes, mean, std).
        images: N×C×H×W float32 images in [0,1] of the dataset (e.g. the test and validation
            splits): the output head is detected on them and every one must give finite outputs.
            Default: 8 random images.

    Returns:
        ``{"state_dict", "meta"}`` for :func:`load_model` (``meta["sha256"]`` and
        ``meta["output"]`` set).

    Raises:
        CheckpointError: the file is unreadable or does not fit: one message listing every
            difference (missing/unexpected keys, shape mismatches, class count, input size).
        ModelError: the architecture cannot be built; the outputs are NaN/inf on some images; the
            output head is ambiguous or not what ``model.output`` declares.
    """
    arch = model_cfg.get("arch", "vgg_small")
    kind, target = parse_arch(arch)
    path = Path(given_file(model_cfg) or "")
    classes, size = list(stats["classes"]), int(stats["size"])
    mean, std, channels = input_normalization(model_cfg, stats)
    file_sha = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    extra = {"source": kind, "checkpoint": str(path), "checkpoint_sha256": file_sha,
             "input_channels": channels, "input": dict(model_cfg.get("input") or {})}
    normalize = Normalize(mean, std, out_channels=channels)
    if kind in SERIALIZED_SOURCES:
        if not path.is_file():
            raise CheckpointError(f"{path}: no such {'TorchScript' if kind == 'torchscript' else 'torch.export'}"
                                  f" file (model.arch {arch})")
        net = load_serialized(kind, path)
        model = Wrapped(normalize, net)
        problems = _fit_problems(model, classes, int(stats["channels"]), size)
        state = {kind if kind == "torchscript" else "export":
                 torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8).clone()}
    else:
        if kind not in ("torchvision", "monai", "python"):
            raise ModelError(f"model.checkpoint is given for model.arch {arch!r}; give one of"
                             " torchvision:<builder>, monai:<Network>, python:<module>:<callable>"
                             " (a state dict for that network), torchscript:<file> or export:<file.pt2>")
        loaded = read_state_dict(path, model_cfg.get("checkpoint_key"))
        net = build_net(arch, classes=classes, in_channels=channels, size=size)
        loaded, prefix = match_prefixes(loaded, set(net.state_dict()))
        if prefix:
            log.info("%s: removed the key prefix %r (a training wrapper's) to match %s", path, prefix, arch)
        problems = _key_problems(net, loaded, classes)
        if problems and len(classes) == 2 and _one_output(net, loaded):
            # a one-output head (sigmoid/BCE) on two classes: build the arch with one output; the
            # head (model.output logit or probabilities) makes the two logits
            net = build_net(arch, classes=1, in_channels=channels, size=size)
            problems = _key_problems(net, loaded, classes)
            extra["net_outputs"] = 1
            log.info("%s: the checkpoint's output layer has one output on two classes: %s built with"
                     " one output (model.output: logit or probabilities)", path, arch)
        if not problems:
            net.load_state_dict(_fill_bn_counters(net, loaded))
            model = Wrapped(normalize, net)
            problems = _fit_problems(model, classes, int(stats["channels"]), size)
            state = {}
    if problems:
        raise CheckpointError(f"{path} does not fit model.arch {arch} on this dataset ({len(classes)}"
                              f" classes, {stats['channels']}x{size}x{size} images"
                              f"{'' if channels == int(stats['channels']) else f', network input {channels} channels'}):\n  - "
                              + "\n  - ".join(problems))
    if images is None:
        images = torch.rand(8, int(stats["channels"]), size, size, generator=torch.Generator().manual_seed(0))
    declared = str(model_cfg.get("output") or "auto")
    output = resolve_output(declared, _raw_outputs(model, images), len(classes), str(path))
    positive = int(model_cfg.get("positive_class", 1))
    model.head = OutputHead(output, positive)
    if declared == "auto":
        log.info("%s: output head detected on %d images: %s%s", path, len(images), output,
                 f" (z > 0 means class {classes[positive]!r})" if output == "logit" else "")
    else:
        log.info("%s: output head as declared (model.output): %s", path, output)
    if not state:
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    else:
        state.update({"normalize.mean": model.normalize.mean.clone(), "normalize.std": model.normalize.std.clone()})
    extra.update(output=output, positive_class=positive)
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
    (:func:`~oncorobust.training.train.run_training`) and verified by :func:`load_checkpoint`.

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
    head = OutputHead(meta.get("output", "logits"), int(meta.get("positive_class", 1)))
    if kind in SERIALIZED_SOURCES:
        state = ck["state_dict"]
        if kind not in state:
            raise _not_ours(path, f"a {kind} model without its embedded bytes")
        net = load_serialized(kind, state[kind].cpu().numpy().tobytes(), device)
        channels = int(meta.get("input_channels") or meta["channels"])
        model = Wrapped(Normalize(meta["mean"], meta["std"], out_channels=channels), net, head)
        return model.to(device).eval()
    model = build_model(meta["arch"], classes=int(meta.get("net_outputs") or len(meta["classes"])), in_channels=meta["channels"],
                        size=meta["size"], mean=meta["mean"], std=meta["std"], width=meta["width"],
                        input_channels=meta.get("input_channels"))
    if isinstance(model, Wrapped):
        model.head = head
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
