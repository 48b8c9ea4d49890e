"""The workflow's two ways to a model: import a given one, load one for every later stage.

- :func:`import_checkpoint` (the ``import_model`` step): a given model (``model.checkpoint``, a
  ``torchscript:`` file or an ``export:`` program) checked against the dataset and turned into this
  project's model file (``{"state_dict", "meta"}``), its output head resolved.
- :func:`load_model` (attacks, sensitivity, health checks, figures): a model file written by the
  train or import step, verified and rebuilt in eval mode.

Every model then takes images in [0,1] (float32, N×C×H×W) and returns N×classes logits, so ε
means the same for every dataset. Training builds its model with
:func:`oncorobust.models.architectures.build_model` and saves it with
:func:`oncorobust.models.checkpoints.model_meta` and
:func:`~oncorobust.models.checkpoints.state_digest`.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from torch import nn

from oncorobust.device import eval_mode
from oncorobust.errors import ModelError
from oncorobust.models.architectures import build_model, build_net, fit_problems, load_serialized
from oncorobust.models.checkpoints import (CheckpointError, fill_bn_counters, has_one_output, load_checkpoint,
                                           load_weights, match_prefixes, model_meta, not_ours, read_state_dict,
                                           state_digest, state_problems)
from oncorobust.models.heads import OutputHead, require_gradient, resolve_output
from oncorobust.models.networks import Normalize, Wrapped, input_normalization
from oncorobust.spec import BUILT_SOURCES, SERIALIZED_SOURCES, given_file, parse_arch

log = logging.getLogger(__name__)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a classifier saved by the train or import step (``{"state_dict", "meta"}``), in eval mode.

    Args:
        path: the model file (``results/{ds}/models/{regime}.pt``).
        device: where the model is placed.

    Returns:
        The classifier in eval mode: N×C×H×W images in [0,1] → N×classes logits.

    Raises:
        CheckpointError: see :func:`~oncorobust.models.checkpoints.load_checkpoint`; also when the
            metadata is incomplete or the weights do not fit the architecture (the missing,
            unexpected and mis-shaped keys are listed).
    """
    path = Path(path)
    ck = load_checkpoint(path, device)
    meta = ck["meta"]
    missing = [k for k in ("arch", "classes", "channels", "size", "mean", "std", "width") if k not in meta]
    if missing:
        raise not_ours(path, f"its meta lacks {missing}")
    try:
        kind = parse_arch(meta["arch"])[0]
    except ModelError as exc:
        raise not_ours(path, str(exc)) from None
    head = OutputHead(meta.get("output", "logits"), int(meta.get("positive_class", 1)))
    if kind in SERIALIZED_SOURCES:
        state = ck["state_dict"]
        if kind not in state:
            raise not_ours(path, f"a {kind} model without its embedded bytes")
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


@torch.no_grad()
def _raw_outputs(model: Wrapped, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The wrapped network's main output (before the head) on ``images``, in eval mode (every
    submodule's own mode restored after), batched; floating outputs as float32, others (labels)
    in their own dtype."""
    outs = []
    with eval_mode(model):
        for i in range(0, len(images), batch_size):
            out = model.raw(images[i:i + batch_size])
            if not isinstance(out, torch.Tensor):
                return out
            outs.append(out.float() if out.is_floating_point() else out)
    return torch.cat(outs)


def _check_gradient(model: Wrapped, images: torch.Tensor, where: str) -> None:
    """:func:`~oncorobust.models.heads.require_gradient` on two of ``images``, in eval mode."""
    x = images[:2].detach().clone().requires_grad_(True)
    with torch.enable_grad(), eval_mode(model):
        out = model.raw(x)
    require_gradient(out, x, where)


def _check_deterministic(model: Wrapped, images: torch.Tensor, first, where: str) -> None:
    """Two eval-mode passes over the same images must agree: a model that samples (dropout kept
    active, MC dropout; BatchNorm saved in training mode inside a TorchScript or torch.export file)
    gives each attack and each bisection step another model, and its flips do not reproduce."""
    if not isinstance(first, torch.Tensor) or not first.is_floating_point() or not torch.isfinite(first).all():
        return  # NaN/inf outputs: resolve_output names them
    second = _raw_outputs(model, images)
    diff = float((second - first).abs().max()) if first.numel() else 0.0
    scale = max(1.0, float(first.abs().max())) if first.numel() else 1.0
    if not diff <= 1e-5 * scale:
        raise ModelError(f"{where}: two passes over the same images gave different outputs (max |difference|"
                         f" {diff:.3g}): the model is not deterministic in eval mode. Dropout kept active (MC"
                         " dropout) or BatchNorm saved in training mode (a TorchScript/torch.export file exported"
                         " before model.eval()) makes every attack and every ε search step face another model;"
                         " export it after model.eval() (for MC dropout, audit the deterministic model)")


def import_checkpoint(model_cfg: dict, stats: dict, images: torch.Tensor | None = None) -> dict:
    """A given model (``model.checkpoint``, ``torchscript:<file>`` or ``export:<file.pt2>``) in
    this project's format.

    State dicts (torchvision/monai/python archs) are read with ``weights_only=True`` (training
    checkpoints unwrapped, see :func:`~oncorobust.models.checkpoints.read_state_dict`; wrapper
    prefixes matched, see :func:`~oncorobust.models.checkpoints.match_prefixes`; BatchNorm counters
    may be missing) and must fit the network built for this dataset (classes, input channels,
    size); TorchScript files and ``torch.export`` programs are loaded (TorchScript runs the user's
    code) and embedded as bytes. The model is wrapped with ``model.input``'s normalisation and
    ``model.output``'s head (:class:`~oncorobust.models.heads.OutputHead`; ``auto`` is resolved on
    ``images`` and logged) and must map a batch of the dataset's images to finite outputs.

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
        ModelError: the architecture cannot be built; the outputs are labels (integers or
            booleans) or carry no gradient to the input; the outputs are NaN/inf on some images;
            the output head is ambiguous or not what ``model.output`` declares.
    """
    arch = model_cfg.get("arch", "vgg_small")
    kind = parse_arch(arch)[0]
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
        problems = fit_problems(model, classes, int(stats["channels"]), size)
        state = {kind if kind == "torchscript" else "export":
                 torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8).clone()}
    else:
        if kind not in BUILT_SOURCES:
            raise ModelError(f"model.checkpoint is given for model.arch {arch!r}; give one of"
                             " torchvision:<builder>, monai:<Network>, python:<module>:<callable>"
                             " (a state dict for that network), torchscript:<file> or export:<file.pt2>")
        loaded = read_state_dict(path, model_cfg.get("checkpoint_key"))
        net = build_net(arch, classes=classes, in_channels=channels, size=size)
        loaded, prefix = match_prefixes(loaded, set(net.state_dict()))
        if prefix:
            log.info("%s: removed the key prefix %r (a training wrapper's) to match %s", path, prefix, arch)
        problems = state_problems(net, loaded, classes)
        if problems and len(classes) == 2 and has_one_output(net, loaded):
            # a one-output head (sigmoid/BCE) on two classes: build the arch with one output; the
            # head (model.output logit or probabilities) makes the two logits
            net = build_net(arch, classes=1, in_channels=channels, size=size)
            problems = state_problems(net, loaded, classes)
            extra["net_outputs"] = 1
            log.info("%s: the checkpoint's output layer has one output on two classes: %s built with"
                     " one output (model.output: logit or probabilities)", path, arch)
        if not problems:
            net.load_state_dict(fill_bn_counters(net, loaded))
            model = Wrapped(normalize, net)
            problems = fit_problems(model, classes, int(stats["channels"]), size)
            state = {}
    if problems:
        raise CheckpointError(f"{path} does not fit model.arch {arch} on this dataset ({len(classes)}"
                              f" classes, {stats['channels']}x{size}x{size} images"
                              f"{'' if channels == int(stats['channels']) else f', network input {channels} channels'}):\n  - "
                              + "\n  - ".join(problems))
    if images is None:
        images = torch.rand(8, int(stats["channels"]), size, size, generator=torch.Generator().manual_seed(0))
    declared = str(model_cfg.get("output") or "auto")
    _check_gradient(model, images, str(path))
    raw = _raw_outputs(model, images)
    _check_deterministic(model, images, raw, str(path))
    output = resolve_output(declared, raw, len(classes), str(path))
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
