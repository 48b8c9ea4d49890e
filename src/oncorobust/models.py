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
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from .errors import OncorobustError

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
                width: int = 32) -> Classifier:
    """Build ``arch`` for inputs C×size×size in [0,1] and ``classes`` logits."""
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
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:  # includes what weights_only refuses (foreign objects)
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            first = "it holds Python objects other than tensors and plain metadata, which are never loaded"
        raise _not_ours(path, first) from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError, AttributeError,
            KeyError, TypeError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise _not_ours(path, f"unreadable: truncated, or not a torch file; {type(exc).__name__}"
                        + (f": {msg}" if msg else "")) from None
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


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Classifier:
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
    model = build_model(meta["arch"], classes=len(meta["classes"]), in_channels=meta["channels"],
                        size=meta["size"], mean=meta["mean"], std=meta["std"], width=meta["width"])
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
