"""Model files: this project's checkpoints and the state dicts of given models.

- :func:`read_torch_file`: the one ``torch.load`` of a model file (``weights_only=True``: plain
  tensors and metadata only) and its one error handling (empty file, Git LFS pointer, truncated
  or not a torch file, foreign Python objects).
- This project's model files (``results/{ds}/models/{regime}.pt``): ``{"state_dict", "meta"}``,
  the metadata from :func:`model_meta` and the tensors' digest from :func:`state_digest`, read and
  verified by :func:`load_checkpoint`.
- A given model's weights (``model.checkpoint``, ``model.weights``): :func:`read_state_dict`
  unwraps training checkpoints (:data:`WRAPPER_KEYS`), :func:`match_prefixes` strips wrapper key
  prefixes (:data:`WRAPPER_PREFIXES`).
- Whether weights fit a network: :func:`weight_mismatches` (the key/shape diff),
  :func:`load_weights` (strict) and :func:`state_problems` (a given checkpoint, with hints on
  the class count and the input channels).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from oncorobust.errors import ModelError
from oncorobust.models.networks import first_conv
from oncorobust.models.zipformat import is_exported_program, is_torchscript

log = logging.getLogger(__name__)

#: The first line of a Git LFS pointer file (what a clone without ``git lfs pull`` holds).
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"
LFS_REASON = ("a Git LFS pointer, not the weights: run `git lfs pull` (with Git LFS installed) in its"
              " repository to fetch the file")
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
#: BatchNorm's step counter: no inference uses it, so a given checkpoint may lack it.
BN_COUNTER = "num_batches_tracked"
#: The module-version table that ``nn.Module.state_dict`` attaches to its ``OrderedDict``, which
#: some training frameworks store as a key of the state dict; not a weight, dropped when read.
STATE_METADATA = "_metadata"


class CheckpointError(ModelError):
    """A model file is not a checkpoint this project wrote, is damaged, or does not fit its model."""


class UnreadableFile(CheckpointError):
    """:func:`read_torch_file` could not read a file as plain tensors and metadata.

    Attributes:
        path: the file.
        reason: why, as a phrase (``the file is empty``, a Git LFS pointer, ``unreadable: …``,
            ``it holds Python objects other than tensors …``).
        foreign: the file is a pickle holding Python objects other than tensors (a pickled model
            or custom objects), refused by ``weights_only``.
    """

    def __init__(self, path: Path, reason: str, foreign: bool = False):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.foreign = path, reason, foreign

    def __reduce__(self):
        return type(self), (self.path, self.reason, self.foreign)


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


def _unsupported_global(exc: BaseException) -> str:
    """`` (x.y.Z)``: the class torch's weights-only unpickler refused, when its message names one."""
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return f" ({m.group(1)})" if m else ""


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def read_torch_file(path: Path, device: str | torch.device = "cpu", *, allowed_globals: tuple = ()) -> object:
    """``torch.load(path, weights_only=True)``: tensors and plain metadata, never foreign objects.

    Args:
        path: an existing file.
        device: where the tensors are loaded (``map_location``).
        allowed_globals: classes also allowed where the file holds them (a second attempt under
            ``torch.serialization.safe_globals``), e.g. ``argparse.Namespace``.

    Returns:
        What the file holds (for a model file: a dict of tensors, or of tensors and metadata).

    Raises:
        UnreadableFile: the file is empty, a Git LFS pointer, truncated or not a torch file, or
            holds other Python objects (``foreign`` set; the refused class is named when torch
            names it).
    """
    if path.stat().st_size == 0:
        raise UnreadableFile(path, "the file is empty")
    if _is_lfs_pointer(path):
        raise UnreadableFile(path, LFS_REASON)
    try:
        try:
            return torch.load(path, map_location=device, weights_only=True)
        except pickle.UnpicklingError as exc:
            if not allowed_globals or not _foreign_objects(exc):
                raise
            with torch.serialization.safe_globals(list(allowed_globals)):
                return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:  # includes what weights_only refuses (foreign objects)
        if _foreign_objects(exc):
            raise UnreadableFile(path, f"it holds Python objects other than tensors{_unsupported_global(exc)},"
                                 " which are never loaded", foreign=True) from None
        raise UnreadableFile(path, f"unreadable: truncated, or not a torch file; {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 (a text/CSV file raises IndexError, others many more)
        raise UnreadableFile(path, f"unreadable: truncated, or not a torch file; {_first_line(exc)}") from None


# ----------------------------------------------------------------------------------------------
# This project's model files
# ----------------------------------------------------------------------------------------------


def model_meta(arch: str, stats: dict, model_cfg: dict, **extra) -> dict:
    """Plain metadata stored beside a state dict (loadable with ``weights_only=True``).

    Args:
        arch: ``model.arch``.
        stats: the dataset's ``tensors/stats.json`` (size in px, channels, classes, mean, std).
        model_cfg: the dataset's ``model`` block (``width``, ``pretrained``).
        **extra: further entries (``regime``, ``sha256``, ``output``, ...).

    Returns:
        The ``meta`` dict of a model file.
    """
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


def not_ours(path: Path, reason: str) -> CheckpointError:
    """The error for a file that is not a model file this project wrote.

    Args:
        path: the file.
        reason: why (a phrase).

    Returns:
        The error (to raise), with the remedy: retrain or fix the path.
    """
    return CheckpointError(f"{path} is not a checkpoint this project wrote ({reason}); retrain"
                           " (delete the file and rerun the workflow) or point at the right file")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """Read and verify a model file written by the train or import step (``{"state_dict", "meta"}``).

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
    try:
        ck = read_torch_file(path, device)
    except UnreadableFile as exc:
        raise not_ours(path, exc.reason) from None
    if not isinstance(ck, dict) or not isinstance(ck.get("state_dict"), dict) or not isinstance(ck.get("meta"), dict):
        keys = sorted(map(str, ck)) if isinstance(ck, dict) else type(ck).__name__
        raise not_ours(path, f"expected a dict with 'state_dict' and 'meta', found {keys}")
    stored = ck["meta"].get("sha256")
    if stored is None:
        log.warning("%s has no tensor digest (written before digests were stored): its integrity"
                    " cannot be verified; retrain to add one", path)
    elif state_digest(ck["state_dict"]) != stored:
        raise CheckpointError(f"{path}: the weights do not match the SHA-256 stored when they were"
                              " saved (the file is damaged); retrain (delete the file and rerun) or"
                              " restore it from a backup")
    return ck


# ----------------------------------------------------------------------------------------------
# Given models' state dicts
# ----------------------------------------------------------------------------------------------


def _without_metadata(obj):
    """``obj`` without a non-tensor :data:`STATE_METADATA` entry (anything else unchanged)."""
    if isinstance(obj, dict) and STATE_METADATA in obj and not isinstance(obj[STATE_METADATA], torch.Tensor):
        return {k: v for k, v in obj.items() if k != STATE_METADATA}
    return obj


def _unwrap(obj, path: Path, key: str | None = None) -> tuple[dict, str]:
    """The state dict inside a training checkpoint, and where it was found (``""``: top level)."""
    obj = _without_metadata(obj)
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
    EMA copies), or under ``key``; the key used is logged. ``argparse.Namespace`` entries
    (torchvision's reference scripts store their ``args``) are allowed; other Python objects are
    refused. A ``_metadata`` entry (the module versions ``state_dict()`` attaches, stored as a key
    by some frameworks) is dropped. A ``module.`` prefix on every key (``DataParallel``) is
    removed; other wrapper prefixes are matched against the network by :func:`match_prefixes`.

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
    if is_torchscript(path):
        raise CheckpointError(f"{path} is a TorchScript model, not a state dict: use model.arch"
                              f" torchscript:{path} (and no model.checkpoint)")
    if is_exported_program(path):
        raise CheckpointError(f"{path} is a torch.export program, not a state dict: use model.arch"
                              f" export:{path} (and no model.checkpoint)")
    try:
        obj = read_torch_file(path, allowed_globals=(argparse.Namespace,))
    except UnreadableFile as exc:
        if not exc.foreign:
            raise
        raise CheckpointError(f"{exc}. A pickled model or a training checkpoint with custom objects?"
                              " In a trusted session run torch.load(f, weights_only=False) and save"
                              " only the weights with torch.save(model.state_dict(), 'weights.pt'), or"
                              " export the model (torch.export.save → export:<file.pt2>)") from None
    top = sorted(map(str, obj)) if isinstance(obj, dict) else []
    obj, where = _unwrap(obj, path, key)
    if where:
        others = [k for k in WRAPPER_KEYS if k != where and k in top]
        log.info("%s: a training checkpoint (keys %s); the weights are taken from its key %r%s", path,
                 _few(top), where, f" (it also holds {', '.join(others)}: set model.checkpoint_key to"
                                   " audit that one instead)" if others else "")
    if isinstance(obj, dict):
        obj = {k: v for k, v in _without_metadata(obj).items() if str(k) not in EMA_COUNTERS}
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        found = type(obj).__name__ if not isinstance(obj, dict) else f"a dict with keys {_few(sorted(map(str, obj)))}"
        raise CheckpointError(f"{path}: expected a state dict (parameter name -> tensor), or a training"
                              f" checkpoint holding one under {', '.join(WRAPPER_KEYS[:4])}, ...; found"
                              f" {found}. Name the key holding the weights with model.checkpoint_key")
    if all(str(k).startswith("module.") for k in obj):
        obj = {str(k)[len("module."):]: v for k, v in obj.items()}
    return obj


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


# ----------------------------------------------------------------------------------------------
# Whether weights fit a network
# ----------------------------------------------------------------------------------------------


def weight_mismatches(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], *,
                      bn_counters_optional: bool = False) -> tuple[list[str], list[str]]:
    """How stored weights differ from a network's own state dict.

    Args:
        own: the network's state dict.
        state: the stored weights.
        bn_counters_optional: BatchNorm counters (``num_batches_tracked``) missing from ``state``
            are not a difference.

    Returns:
        (problems, mis-shaped keys): one line each for the missing keys, unexpected keys and shape
        mismatches (``key (stored shape) != (own shape)``), the first five of each named; empty
        when the weights fit.
    """
    missing = sorted(k for k in set(own) - set(state) if not (bn_counters_optional and k.endswith(BN_COUNTER)))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    shown = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in shapes]
    problems = [f"{name}: {_few(items)}" for name, items in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shown)) if items]
    return problems, shapes


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(state_dict)`` with a readable error when they do not fit.

    Args:
        model: the freshly built model.
        state_dict: the stored weights.
        path: the file they came from (named in the message).

    Raises:
        CheckpointError: listing missing keys, unexpected keys and shape mismatches.
    """
    problems, _ = weight_mismatches(model.state_dict(), state_dict)
    if problems:
        raise CheckpointError(f"{path}: the stored weights do not fit the model its metadata describes"
                              f" ({'; '.join(problems)}); retrain or point at the right file")
    model.load_state_dict(state_dict)


def _output_layer(own: dict[str, torch.Tensor]) -> list[str]:
    """The key of the network's output-layer weight (its last of rank ≥ 2), as a list of 0 or 1."""
    return [k for k, v in own.items() if v.ndim >= 2][-1:]


def state_problems(net: nn.Module, state: dict[str, torch.Tensor], classes: list[str]) -> list[str]:
    """Why a given checkpoint's weights do not fit the network built for this dataset.

    BatchNorm counters may be missing (see :func:`fill_bn_counters`). Beyond the key/shape
    differences (:func:`weight_mismatches`), a mis-shaped output layer is named as a class-count
    problem and a mis-shaped first convolution as an input-channel one.

    Args:
        net: the network (random weights).
        state: the checkpoint's weights, wrapper prefixes already matched.
        classes: the dataset's class names.

    Returns:
        One line per problem; empty when the weights fit.
    """
    own = net.state_dict()
    problems, shapes = weight_mismatches(own, state, bn_counters_optional=True)
    if shapes:
        last = _output_layer(own)
        if last and last[0] in shapes and state[last[0]].shape[0] != own[last[0]].shape[0]:
            problems.append(f"class count: the checkpoint's output layer {last[0]} has"
                            f" {state[last[0]].shape[0]} outputs, the data have {len(classes)} classes {classes}")
        first = first_conv(net)
        if first is not None:
            key = next((k for k, v in net.named_parameters() if v is first[2].weight), None)
            if key in shapes and state[key].ndim == 4 and state[key].shape[1] != own[key].shape[1]:
                problems.append(f"input channels: {key} takes {state[key].shape[1]} channel(s), built for"
                                f" {own[key].shape[1]}; set model.input.channels: {state[key].shape[1]}")
    return problems


def has_one_output(net: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state``'s output layer (the network's last weight of rank ≥ 2) has one output
    where ``net``'s has more: a one-logit checkpoint of a network built for two classes.

    Args:
        net: the network built for the dataset's classes.
        state: the checkpoint's weights.

    Returns:
        True for a one-output checkpoint of a multi-output network.
    """
    own = net.state_dict()
    last = _output_layer(own)
    return bool(last) and last[0] in state and state[last[0]].ndim >= 2 and state[last[0]].shape[0] == 1 \
        and own[last[0]].shape[0] > 1


def fill_bn_counters(net: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add BatchNorm's ``num_batches_tracked`` where a checkpoint lacks it (as PyTorch's own
    ``load_state_dict`` does for old checkpoints): it counts training steps, no inference uses it.

    Args:
        net: the network the weights are for.
        state: the checkpoint's weights.

    Returns:
        ``state`` with zero counters added (``state`` itself when none was missing).
    """
    own = net.state_dict()
    missing = {k: torch.zeros_like(own[k]) for k in own if k.endswith(BN_COUNTER) and k not in state}
    return {**state, **missing} if missing else state
