"""``model.arch`` → a network: the paper's networks and the model sources beyond them.

:func:`build_model` builds every buildable arch (see :func:`oncorobust.spec.parse_arch`):

- ``vgg16`` and ``vgg_small``: the paper's networks (:mod:`oncorobust.models.networks`);
- ``torchvision:<builder>``: a torchvision classification builder (``resnet18``, ``densenet121``,
  ...), always ``weights=None``, built with ``num_classes`` = the dataset's classes and its first
  convolution rebuilt for the input channels (:func:`adapt_first_conv`);
- ``monai:<Network>``: a network of ``monai.networks.nets`` (``DenseNet121``, ...) with
  ``spatial_dims=2``, ``in_channels`` and ``out_channels`` (MONAI is the optional extra ``monai``);
- ``python:<module or file.py>:<callable>``: the user's own factory, called under
  :data:`FACTORY_CONTRACT`.

The bare networks of the last three come from :func:`build_net`. Serialized models are loaded,
never built (:func:`load_serialized`):

- ``torchscript:<path>``: a scripted or traced model, used as-is (never trained; its TorchScript
  code runs on every forward: trusted files only, see :func:`load_torchscript`);
- ``export:<path.pt2>``: a ``torch.export`` program (``torch.export.save``), used as-is; a program
  exported with a fixed batch size is run in chunks of that size (:class:`ExportedNet`). The
  archive is checked before ``torch.export.load`` reads it: a file whose loading would run code
  (pickled Python objects, code in its sizes or guards) is refused (:func:`load_export`).

:func:`fit_problems` says whether a wrapped network runs on the dataset's images and returns one
output per class.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import os
import sys
from pathlib import Path

import torch
from torch import nn

from oncorobust.device import eval_mode
from oncorobust.errors import ModelError
from oncorobust.models.checkpoints import CheckpointError, load_weights, read_state_dict
from oncorobust.models.heads import main_output
from oncorobust.models.networks import (Normalize, Wrapped, find_vgg16_weights, first_conv, vgg16_classifier,
                                        vgg_small_classifier)
from oncorobust.models.zipformat import REEXPORT_HINT, export_archive_problems
from oncorobust.spec import BUILT_SOURCES, SERIALIZED_SOURCES, parse_arch

#: The ``python:`` factory contract, stated once (README, schema and errors point here).
FACTORY_CONTRACT = ("the factory is called with the keyword arguments it declares among num_classes"
                    " (int: the number of classes), classes (int: the same number), class_names (list"
                    " of str: the class names in label order), in_channels (int) and size (int, input"
                    " side in pixels), and returns a torch.nn.Module mapping N×in_channels×size×size"
                    " images to N×num_classes logits")


def _reason(exc: BaseException) -> str:
    """The telling line of an exception (TorchScript puts the real error on its last line)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if len(lines) > 1 else lines[0]
    return line[:300]


def build_model(arch: str, *, classes: int, in_channels: int, size: int, mean: list[float],
                std: list[float], pretrained: str = "none", weights: str | None = None,
                width: int = 32, input_channels: int | None = None) -> nn.Module:
    """Build ``arch`` for inputs C×size×size in [0,1] and ``classes`` logits.

    ``vgg16``/``vgg_small`` return a :class:`~oncorobust.models.networks.Classifier`; the sources
    ``torchvision:``, ``monai:`` and ``python:`` a :class:`~oncorobust.models.networks.Wrapped`
    network whose first layer takes ``input_channels`` (default ``in_channels``; a one-channel
    image is repeated to it), with ``weights`` (a state-dict file, read by
    :func:`~oncorobust.models.checkpoints.read_state_dict`) as its initial weights when given.
    ``torchscript:``/``export:`` models are not built here (see :func:`load_serialized`).

    Args:
        arch: ``model.arch``.
        classes: the number of logits.
        in_channels: the images' channels (C).
        size: the images' side in pixels.
        mean: the input normalisation's means (one value, or one per channel), [0,1] units.
        std: its standard deviations.
        pretrained: ``model.pretrained``: ``none``, or ``imagenet`` (``vgg16`` only).
        weights: ``model.weights``: vgg16's ImageNet file (default: torch's hub cache), or the
            initial state dict of a ``torchvision:``/``monai:``/``python:`` network.
        width: ``vgg_small``'s first block's channels.
        input_channels: the wrapped network's input channels (``model.input.channels``).

    Returns:
        The model (random or given initial weights, train mode), mapping N×C×size×size images in
        [0,1] to N×classes logits.

    Raises:
        ModelError: an unknown or serialized arch, ``pretrained`` not available for it, an input
            size the network cannot take, missing ImageNet weights, or a network that does not fit
            the inputs and classes.
        CheckpointError: ``weights`` unreadable or not fitting the network.
    """
    kind, target = parse_arch(arch)
    if kind in BUILT_SOURCES:
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
        problems = fit_problems(model, [str(i) for i in range(classes)], in_channels, size)
        if problems:
            raise ModelError(f"model.arch {arch} does not fit {in_channels}x{size}x{size} inputs and"
                             f" {classes} classes: {'; '.join(problems)}")
        return model
    if kind in SERIALIZED_SOURCES:
        raise ModelError(f"{arch}: a serialized model ({kind}) is used as-is, never built or trained"
                         " here; give it as the dataset's model (no train block)")
    if arch == "vgg16":
        state = read_state_dict(find_vgg16_weights(weights)) if pretrained == "imagenet" else None
        return vgg16_classifier(classes=classes, size=size, mean=mean, std=std, imagenet_state=state)
    if arch == "vgg_small":
        if pretrained != "none":
            raise ModelError("vgg_small is trained from scratch: set model.pretrained: none")
        return vgg_small_classifier(classes=classes, in_channels=in_channels, size=size, mean=mean, std=std,
                                    width=width)
    raise ModelError(f"unknown model.arch {arch!r}; choose vgg16 or vgg_small")


def adapt_first_conv(net: nn.Module, in_channels: int) -> None:
    """Rebuild ``net``'s first ``Conv2d`` (in module order) for ``in_channels`` input channels.

    The new convolution keeps every other setting and gets fresh random weights; nothing changes
    when it already takes ``in_channels`` or ``net`` has no ``Conv2d``.

    Args:
        net: the network, changed in place.
        in_channels: the input channels its first convolution must take.

    Raises:
        ModelError: the first convolution is grouped.
    """
    found = first_conv(net)
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
    """The callable of ``python:<module or file.py>:<callable>`` (the working directory is on the path).

    Args:
        target: ``<module or file.py>:<callable>`` (``model.arch`` without ``python:``).

    Returns:
        The callable.

    Raises:
        ModelError: no such file, the module fails to import, or it has no such callable.
    """
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


def load_torchscript(source: str | os.PathLike | bytes, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """``torch.jit.load`` of a TorchScript file or its bytes. This runs the model's own code.

    ``torch.jit.load`` reads the archive's pickles with TorchScript's own unpickler, which builds
    tensors and TorchScript types only (a Python global such as ``os.system`` in a crafted
    archive is refused, no Python object is created), so loading itself runs no Python code of
    the file. The model's TorchScript code does run, on every forward, with every operator it
    was saved with (file reads and writes included): use TorchScript files only from a source
    you trust, or prefer a state dict or a ``torch.export`` program (checked before loading, see
    :func:`load_export`).

    Args:
        source: the file, or its bytes (as embedded in this project's model file).
        device: where the model is loaded.

    Returns:
        The scripted/traced module.

    Raises:
        CheckpointError: not a loadable TorchScript model.
    """
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
        """Set this wrapper's own flag only (the program runs as exported); returns self.

        Args:
            mode: True for training mode, False for eval.
        """
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The program's output for ``x``, in chunks of its fixed batch size (main output per chunk).

        Args:
            x: N×C×H×W float32 inputs (as the program expects them).
        """
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


@contextlib.contextmanager
def _weights_only_loads():
    """Every ``torch.load`` inside runs with ``weights_only=True`` (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``),
    a second guard behind :func:`~oncorobust.models.zipformat.export_archive_problems`."""
    saved = {k: os.environ.get(k) for k in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_export(source: str | os.PathLike | bytes, device: str | torch.device = "cpu") -> ExportedNet:
    """``torch.export.load`` of a ``.pt2`` file or its bytes, as an :class:`ExportedNet`.

    Args:
        source: the file, or its bytes (as embedded in this project's checkpoint).
        device: where the program runs.

    Returns:
        The program as a module taking N×C×H×W batches of any N.

    Raises:
        CheckpointError: the file is not a loadable ``torch.export`` program, or loading it could
            run code (:func:`~oncorobust.models.zipformat.export_archive_problems`: pickled
            Python objects where torch expects tensors, code in its symbolic sizes or guards,
            AOTInductor code); the file is refused before ``torch.export.load`` sees it.
    """
    where = "the embedded torch.export program" if isinstance(source, bytes) else str(source)
    problems = export_archive_problems(source)
    if problems:
        raise CheckpointError(f"{where}: refused, loading it with torch.export.load could run code from"
                              " the file:\n  - " + "\n  - ".join(problems[:8])
                              + ("\n  - ..." if len(problems) > 8 else "") + f"\nThe file is not loaded; {REEXPORT_HINT}")
    try:
        with _weights_only_loads():
            program = torch.export.load(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    except Exception as exc:  # noqa: BLE001 (torch.export raises many kinds)
        raise CheckpointError(f"{where}: not a loadable torch.export program ({type(exc).__name__}:"
                              f" {_reason(exc)}); save it with torch.export.save(torch.export.export("
                              "model.eval(), (x,)), 'model.pt2')") from None
    return ExportedNet(program, device)


def load_serialized(kind: str, source: str | os.PathLike | bytes, device: str | torch.device = "cpu") -> nn.Module:
    """A serialized network from its file or bytes.

    Args:
        kind: ``torchscript`` or ``export`` (:data:`oncorobust.spec.SERIALIZED_SOURCES`).
        source: the file, or its bytes (as embedded in this project's model file).
        device: where it runs.

    Returns:
        The network as the user saved it (no normalisation, no output head).

    Raises:
        CheckpointError: not a loadable model of that kind.
    """
    return load_torchscript(source, device) if kind == "torchscript" else load_export(source, device)


#: Words of a forward error about tensor shapes (a wrong input size or channel count).
_SHAPE_WORDS = ("shape", "size", "channel", "dimension", "mat1", "mat2", "expected input", "guard", "must match",
                "out of range", "cannot be multiplied", "view", "reshape")
#: Words of a forward error about dtypes (weights saved in float16/float64).
_DTYPE_WORDS = ("dtype", "scalar type", "half", "double", "bfloat16", "float16", "float64", "should be the same")


def _runs_channels_last(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether a wrapped model's network runs on ``x`` made channels-last (N×H×W×C)."""
    net, normalize = getattr(model, "net", None), getattr(model, "normalize", None)
    if net is None or normalize is None:
        return False
    try:
        with torch.no_grad(), eval_mode(model):
            z = normalize(x)
            if z.shape[1] == z.shape[2]:
                return False  # channels-last looks the same: nothing to learn
            out = main_output(net(z.permute(0, 2, 3, 1)))
    except Exception:  # noqa: BLE001 (the user's code may raise anything)
        return False
    return isinstance(out, torch.Tensor) and out.ndim >= 1 and out.shape[0] == len(x)


def _forward_problem(model: nn.Module, exc: BaseException, x: torch.Tensor) -> str:
    """Why a wrapped model fails on ``x`` (N×C×S×S, float32), led by the error itself, with the
    hint that fits it: the weights' dtype, a channels-last network, or the input size/channels."""
    from oncorobust.models.networks import weights_dtype

    reason = _reason(exc)
    low = reason.lower()
    channels, size = x.shape[1], x.shape[2]
    dtype = weights_dtype(getattr(model, "net", model))
    if dtype is not None and dtype not in (torch.float32, torch.float64):
        return (f"dtype: the model fails on float32 images ({reason}): the model's weights are"
                f" {str(dtype).replace('torch.', '')}; save it in float32 (model.float()), which attacks"
                " need for their small steps")
    if any(w in low for w in _DTYPE_WORDS):
        return (f"dtype: the model fails on float32 images ({reason}); save it in float32 (model.float())"
                " so that it takes float32 images")
    if _runs_channels_last(model, x):
        return (f"input layout: the model fails on N×C×H×W images ({reason}) but runs on channels-last"
                " N×H×W×C ones: it seems to expect channels-last input; save it wrapped so that it takes"
                " N×C×H×W images, as PyTorch models do (forward(x) = model(x.permute(0, 2, 3, 1)))")
    if any(w in low for w in _SHAPE_WORDS):
        return (f"input size: the model fails on {channels}x{size}x{size} images ({reason}); set"
                " preprocess.size to the size it was trained on, or model.input.channels to the channels"
                " its first layer takes")
    return f"forward: the model fails on {channels}x{size}x{size} images ({type(exc).__name__}: {reason})"


def fit_problems(model: nn.Module, classes: list[str], channels: int, size: int) -> list[str]:
    """What goes wrong when ``model`` (wrapped) runs on 2×channels×size×size [0,1] inputs.

    The model runs in eval mode without gradients on two seeded random images; every
    submodule's own mode is restored afterwards (:func:`oncorobust.device.eval_mode`). One output
    per image (N or N×1) fits two classes (a one-output head).

    Args:
        model: the wrapped model (:class:`~oncorobust.models.networks.Wrapped`).
        classes: the dataset's class names.
        channels: the images' channels.
        size: the images' side in pixels.

    Returns:
        One line per problem (a failing forward, led by its error: the weights' dtype, a
        channels-last network, the input size or channels; output shape; class count); empty
        when it fits.
    """
    x = torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad(), eval_mode(model):
            out = model(x)
    except Exception as exc:  # noqa: BLE001 (a shape error can be anything the user's code raises)
        return [_forward_problem(model, exc, x)]
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
