"""Training: clean (Table S3) and adversarial (PGD / fast / free), resumable after a kill.

Clean training follows the paper's Keras setup: SGD with momentum and Nesterov, Keras-style decay
``lr_t = lr0 / (1 + decay · iteration)``, early stopping on validation loss with the configured
patience (Keras semantics: stop after ``patience`` epochs without improvement; the best epoch's
weights are restored), augmentation by horizontal/vertical flips and rotations within ±20°.

Adversarial regimes (``regime`` argument):

- ``adv_pgd`` (Madry et al.; the paper): each batch holds ``clean_fraction`` clean images and the
  rest PGD images (ε, step, ``iters`` iterations, one random start). The PGD images are crafted
  with the model in **eval** mode (BatchNorm running statistics, no dropout), as in the paper's ART
  trainer, then the update runs in train mode.
- ``adv_fast`` (Wong et al. 2020, "fast is better than free"): FGSM from a uniform random start
  with step 1.25ε, crafted in **train** mode as in the paper's code; guarded against catastrophic
  overfitting: when validation PGD accuracy collapses below half of its best, training stops and
  the best epoch is kept.
- ``adv_free`` (Shafahi et al. 2019): each minibatch is replayed ``free_replays`` (m) times; one
  backward pass gives both the weight gradient and the perturbation update (train mode); the
  epoch budget is divided by m so the cost matches clean training.

- ``adv_trades`` (Zhang et al. 2019) and ``adv_mart`` (Wang et al. 2020): the losses of
  :mod:`oncorobust.training.losses`, transcribed from the authors' code (inner maximisation with
  ``iters`` sign steps of ``step`` in the ``eps`` ball; ``beta`` weights the robustness term,
  default 6 and 5). Each step costs ``iters + 2`` forward+backward passes per image.

The checkpoint kept for an adversarial regime is the epoch with the best **validation** robust
accuracy (PGD at the training ε), never chosen on the test set.

Every epoch writes a resumable checkpoint (model, optimizer, scheduler, RNG states, history) with
a hash of the configuration; :func:`fit` resumes from it and refuses one whose hash differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from oncorobust.spec import REGIME_NAMES
from oncorobust.attacks.methods import attack
from oncorobust.attacks.kernels import image_seeds
from oncorobust.device import eval_mode, resolve_device
from oncorobust.errors import DataError, OncorobustError
from oncorobust.io import save_torch
from oncorobust.training.losses import REGIME_LOSSES

#: inner PGD steps per training batch when ``adv`` gives none: the schema's
#: ``adversarial_training.iters`` default (one value for every adversarial regime)
ADV_ITERS = 7

log = logging.getLogger("oncorobust.training.train")
REGIMES = REGIME_NAMES


class TrainingError(OncorobustError):
    """Training diverged, or a checkpoint belongs to another configuration."""


def config_hash(*parts: object) -> str:
    """A short hash of the training configuration, stored in (and checked against) the resume file.

    Args:
        *parts: JSON-serialisable parts (dict keys sorted; other objects as their ``str``).
    Returns:
        The first 16 hex digits of the SHA-256 of their JSON.
    """
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def augment(x: torch.Tensor, gen: torch.Generator, *, hflip: bool = True, vflip: bool = True,
            rotate_deg: float = 20.0) -> torch.Tensor:
    """Random h/v flips and a rotation in ±``rotate_deg`` degrees, drawn per image (N×C×H×W).

    Hand-written with ``affine_grid``/``grid_sample`` because torchvision's rotate draws one angle
    per call and fills corners with a constant; this draws one angle per image in one batched call
    and fills with the nearest border pixel, as Keras' ImageDataGenerator (fill_mode="nearest")
    did in the paper.

    Args:
        x: N×C×H×W float32 images in [0,1] (any device).
        gen: the CPU generator of the draws (three uniforms per image, drawn whatever the flags).
        hflip: flip left-right with probability ½.
        vflip: flip up-down with probability ½.
        rotate_deg: the largest rotation in degrees (uniform in ±``rotate_deg``; 0: none).
    Returns:
        The augmented images, N×C×H×W on ``x``'s device (bilinear resampling; values stay in [0,1]).
    """
    n = x.shape[0]
    r = torch.rand(n, 3, generator=gen)
    if hflip:
        x = torch.where((r[:, 0] < 0.5).view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    if vflip:
        x = torch.where((r[:, 1] < 0.5).view(-1, 1, 1, 1).to(x.device), x.flip(-2), x)
    if rotate_deg:
        theta = (r[:, 2] * 2 - 1) * math.radians(rotate_deg)
        cos, sin = torch.cos(theta), torch.sin(theta)
        mat = torch.stack([torch.stack([cos, -sin, torch.zeros(n)], 1),
                           torch.stack([sin, cos, torch.zeros(n)], 1)], 1).to(x)
        grid = F.affine_grid(mat, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return x


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
             batch_size: int = 256) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode on x (N×C×H×W in [0,1]), y (N).

    Args:
        model: the classifier (its modes are restored afterwards).
        x: N×C×H×W float32 images in [0,1].
        y: N int64 labels.
        device: where to run the batches.
        batch_size: images per forward pass.
    Returns:
        (mean cross-entropy per image, accuracy as a fraction in [0,1]); (0.0, 0.0) when N = 0.
    """
    loss, correct = 0.0, 0
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            logits = model(xb)
            loss += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(1) == yb).sum().item()
    return loss / max(len(x), 1), correct / max(len(x), 1)


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, *,
                    eps: float, step: float, iters: int, seed: int, batch_size: int = 256) -> float:
    """Accuracy under PGD (true labels, one random start) at ``eps`` in [0,1] pixel units,
    ``batch_size`` images per attack; each image's random start is keyed by ``seed`` and its
    index in ``x``, so the result does not depend on ``batch_size``.

    Args:
        model: the classifier (attacked and scored in eval mode).
        x: N×C×H×W float32 images in [0,1].
        y: N int64 true labels.
        device: where to run the batches.
        eps: L∞ budget in [0,1] pixel units.
        step: PGD step size (absolute, [0,1] pixel units).
        iters: PGD iterations.
        seed: the seed of the per-image random starts.
        batch_size: images per attack call.
    Returns:
        The accuracy under attack as a fraction in [0,1] (0.0 when N = 0).
    Raises:
        AttackError: unusable images, labels or PGD parameters, or NaN/inf logits during the attack.
        AttackSanityError: an adversarial image left the ε-ball or [0,1].
    """
    correct = 0
    seeds = image_seeds(None, len(x), seed)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        adv = attack(model, xb, yb, "pgd", eps, steps=iters, alpha=step, random_start=True, restarts=1,
                     seeds=seeds[i:i + batch_size])
        with torch.no_grad(), eval_mode(model):
            correct += (model(adv).argmax(1) == yb).sum().item()
    return correct / max(len(x), 1)


def _adv_batch(model, xb, yb, regime, adv, state, seed) -> tuple[torch.Tensor, torch.Tensor]:
    """The (inputs, labels) one training step sees under ``regime``."""
    eps, step, iters = adv["eps"], adv["step"], adv.get("iters", ADV_ITERS)
    if regime == "adv_pgd":
        n_adv = int(round(len(xb) * (1 - adv.get("clean_fraction", 0.5))))
        if n_adv:
            x_adv = attack(model, xb[:n_adv], yb[:n_adv], "pgd", eps, steps=iters, alpha=step,
                           random_start=True, restarts=1, seed=seed)  # eval mode, mode restored; every
            # PGD parameter explicit: the job's rerun key holds PGD's entry without its defaults
            xb = torch.cat([x_adv, xb[n_adv:]])
        return xb, yb
    if regime == "adv_fast":
        delta = (torch.rand(xb.shape, generator=state["gen"]).to(xb) * 2 - 1) * eps
        delta.requires_grad_(True)
        loss = F.cross_entropy(model((xb + delta).clamp(0, 1)), yb)  # train mode, as Wong et al.
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + 1.25 * eps * grad.sign()).clamp(-eps, eps)
        return (xb + delta).clamp(0, 1), yb
    raise ValueError(regime)


def fit(model: nn.Module, data: dict[str, dict], *, regime: str = "clean", train: dict,
        adv: dict | None = None, seed: int = 0, device: str = "auto", ckpt_path: str | Path | None = None,
        hash_: str = "", stop_after_epochs: int | None = None, progress: bool = True) -> tuple[nn.Module, list[dict]]:
    """Train ``model`` in place on ``data`` (``{"train": {"x", "y"}, "val": {...}}``).

    History rows: epoch, loss, acc, val_loss, val_acc, val_robust_acc (NaN for clean), lr,
    train_seconds (the update loop), seconds (the whole epoch, validation included).

    ``train``: batch_size, epochs, patience, lr, decay, momentum, nesterov, augment (dict).
    ``adv`` (adversarial regimes): eps, step (pixel units), iters, clean_fraction, epochs,
    batch_size, free_replays, robust_val_max. Returns (model with the selected epoch's weights,
    history rows). ``stop_after_epochs`` ends the call early (simulates a kill, for tests).

    Args:
        model: the classifier (N×C×H×W in [0,1] → logits); moved to the device and trained in place.
        data: ``{"train": {"x", "y"}, "val": {"x", "y"}}``: x N×C×H×W float32 in [0,1], y N int64 labels.
        regime: one of :data:`REGIMES` (``clean``, ``adv_pgd``, ``adv_fast``, ``adv_free``, ...).
        train: the ``train`` block (keys above).
        adv: the ``adversarial_training`` block (keys above; ε and step in [0,1] pixel units); None: {}.
        seed: seeds torch, the shuffling/augmentation generator and the attacks.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        ckpt_path: the per-epoch resume file, resumed from when it exists; None: no checkpoint.
        hash_: the configuration hash (:func:`config_hash`) stored in the resume file and checked on resume.
        stop_after_epochs: return after this many epochs of this call; None: no limit.
        progress: show a per-epoch progress bar.
    Returns:
        (model, history): the model with the selected epoch's weights (lowest validation loss for
        ``clean``, highest validation robust accuracy otherwise; the last epoch's weights when
        ``stop_after_epochs`` ended the call) and one history row per epoch run, resumed epochs
        included (accuracies as fractions in [0,1], seconds wall-clock).
    Raises:
        ValueError: an unknown ``regime``.
        TrainingError: the loss became NaN/inf, or the resume file belongs to another configuration
            (hash) or is truncated/corrupt.
        OncorobustError: ``device`` asks for CUDA where none is available.
        AttackError: an attack of adversarial training or validation failed (see :func:`robust_accuracy`).
    """
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; choose from {REGIMES}")
    dev = resolve_device(device)
    model.to(dev)
    xtr, ytr = data["train"]["x"], data["train"]["y"]
    xva, yva = data["val"]["x"], data["val"]["y"]
    adversarial = regime != "clean"
    adv = adv or {}
    epochs = int(adv.get("epochs", train["epochs"]) if adversarial else train["epochs"])
    batch_size = int(adv.get("batch_size", train["batch_size"]) if adversarial else train["batch_size"])
    replays = int(adv.get("free_replays", 4)) if regime == "adv_free" else 1
    if regime == "adv_free":
        epochs = max(1, math.ceil(epochs / replays))
    patience = int(train.get("patience", 0))
    aug = train.get("augment", {"hflip": True, "vflip": True, "rotate_deg": 20})
    opt = torch.optim.SGD(model.parameters(), lr=float(train["lr"]), momentum=float(train.get("momentum", 0)),
                          nesterov=bool(train.get("nesterov", True)) and float(train.get("momentum", 0)) > 0)
    decay = float(train.get("decay", 0))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0 / (1.0 + decay * it))
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    state = {"gen": gen, "epoch": 0, "history": [], "best": None, "best_score": -math.inf, "wait": 0,
             "best_robust": -math.inf, "delta": None, "stopped": False}
    ckpt_path = Path(ckpt_path) if ckpt_path else None
    if ckpt_path and ckpt_path.exists():
        _resume(ckpt_path, model, opt, sched, state, hash_)
        log.info("resumed %s from epoch %d", ckpt_path, state["epoch"])
    robust_n = int(adv.get("robust_val_max", 512))
    calls = 0
    while state["epoch"] < epochs and not state["stopped"]:
        epoch = state["epoch"]
        t0 = time.time()
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        tot_loss, tot_correct, seen = 0.0, 0, 0
        bar = tqdm(range(0, len(perm), batch_size), desc=f"{regime} epoch {epoch + 1}/{epochs}",
                   disable=not progress or None, leave=False, mininterval=2)
        for b, i in enumerate(bar):
            idx = perm[i:i + batch_size]
            xb = augment(xtr[idx], gen, **aug).to(dev) if aug else xtr[idx].to(dev)
            yb = ytr[idx].to(dev)
            for _ in range(replays):
                if regime == "adv_free":
                    if state["delta"] is None or state["delta"].shape != xb.shape:
                        state["delta"] = torch.zeros_like(xb)
                    delta = state["delta"].requires_grad_(True)
                    logits = model((xb + delta).clamp(0, 1))
                    loss = F.cross_entropy(logits, yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    state["delta"] = (delta.detach() + adv["eps"] * delta.grad.sign()).clamp(-adv["eps"], adv["eps"])
                elif regime in REGIME_LOSSES:  # TRADES / MART: the loss crafts its own images
                    rl = REGIME_LOSSES[regime]
                    loss, x_adv = rl.loss(model, xb, yb, eps=adv["eps"], step=adv["step"],
                                          iters=adv.get("iters", ADV_ITERS), beta=adv.get("beta", rl.defaults["beta"]),
                                          seed=seed + 7919 * epoch + b, return_adv=True)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    with torch.no_grad(), eval_mode(model):  # training accuracy on the crafted images
                        logits = model(x_adv)
                else:
                    xin, yin = (_adv_batch(model, xb, yb, regime, adv, state, seed + 7919 * epoch + b)
                                if adversarial else (xb, yb))
                    logits = model(xin)
                    loss = F.cross_entropy(logits, yin)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                if not torch.isfinite(loss):
                    raise TrainingError(f"{regime}: loss became {loss.item()} in epoch {epoch + 1}"
                                        f" (learning rate {sched.get_last_lr()[0]:.3g}); lower train.lr")
                opt.step()
                sched.step()
            tot_loss += loss.item() * len(yb)
            tot_correct += (logits.argmax(1) == yb).sum().item()
            seen += len(yb)
        train_seconds = time.time() - t0
        val_loss, val_acc = evaluate(model, xva, yva, dev, batch_size=batch_size)  # the training batch
        row = {"epoch": epoch + 1, "loss": tot_loss / seen, "acc": tot_correct / seen,
               "val_loss": val_loss, "val_acc": val_acc, "val_robust_acc": math.nan,
               "lr": sched.get_last_lr()[0]}
        if adversarial:
            row["val_robust_acc"] = robust_accuracy(model, xva[:robust_n], yva[:robust_n], dev,
                                                    eps=adv["eps"], step=adv["step"],
                                                    iters=adv.get("iters", ADV_ITERS), seed=seed,
                                                    batch_size=batch_size)
            score = row["val_robust_acc"]
        else:
            score = -val_loss
        row["train_seconds"] = train_seconds  # the update loop only (no validation attacks)
        row["seconds"] = time.time() - t0
        state["history"].append(row)
        if score > state["best_score"]:
            state["best_score"], state["wait"] = score, 0
            state["best"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            state["best_epoch"] = epoch + 1
        else:
            state["wait"] += 1
            if state["wait"] >= patience:  # Keras EarlyStopping: patience epochs without improvement
                state["stopped"] = True
        if regime == "adv_fast" and state["best_score"] > 0.1 and score < 0.5 * state["best_score"]:
            log.warning("adv_fast: validation PGD accuracy fell from %.3f to %.3f in epoch %d"
                        " (catastrophic overfitting); keeping epoch %d", state["best_score"], score,
                        epoch + 1, state["best_epoch"])
            state["stopped"] = True
        log.info("%s epoch %d: %s", regime, epoch + 1,
                 ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
        state["epoch"] = epoch + 1
        if ckpt_path:
            _checkpoint(ckpt_path, model, opt, sched, state, hash_)
        calls += 1
        if stop_after_epochs is not None and calls >= stop_after_epochs:
            return model, state["history"]
    model.load_state_dict(state["best"])
    return model, state["history"]


def _checkpoint(path: Path, model, opt, sched, state, hash_: str) -> None:
    save_torch({
        "config_hash": hash_, "model": model.state_dict(), "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "gen": state["gen"].get_state(), "epoch": state["epoch"], "history": state["history"],
        "best": state["best"], "best_score": state["best_score"], "best_epoch": state.get("best_epoch", 0),
        "wait": state["wait"], "stopped": state["stopped"], "delta": state["delta"],
    }, path)


def _resume(path: Path, model, opt, sched, state, hash_: str) -> None:
    """Restore ``fit``'s state from the per-epoch resume file ``path``.

    Raises:
        TrainingError: the file was written by another configuration, code or data (hash), or
            it is truncated/corrupt (e.g. a node died while copying it); both name the file and
            say to delete it.
    """
    def corrupt(exc: BaseException) -> TrainingError:
        return TrainingError(f"{path}: the training resume file is truncated or corrupt"
                             f" ({type(exc).__name__}: {str(exc)[:200]}); delete it to start training afresh")

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        old_hash = ck["config_hash"]
    except Exception as exc:  # noqa: BLE001 (torch raises many kinds on a damaged file)
        raise corrupt(exc) from None
    if old_hash != hash_:
        raise TrainingError(f"{path} was written by another configuration, code or data (hash {old_hash},"
                            f" now {hash_}); delete it to start training afresh")
    try:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["torch_rng"])
        if ck["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ck["cuda_rng"])
        state["gen"].set_state(ck["gen"])
        for key in ("epoch", "history", "best", "best_score", "best_epoch", "wait", "stopped", "delta"):
            state[key] = ck[key]
    except Exception as exc:  # noqa: BLE001
        raise corrupt(exc) from None
    if state["delta"] is not None:
        state["delta"] = state["delta"].to(next(model.parameters()).device)


def check_training_data(data: dict[str, dict], size: int, channels: int, classes: int) -> None:
    """Tensors must match the model's input and every class must be in the training split.

    Args:
        data: split → ``{"x": N×C×H×W images, "y": N labels}`` (``train`` required).
        size: the model's input size in pixels (H = W).
        channels: the model's input channels.
        classes: the number of classes (labels 0..classes−1).
    Raises:
        DataError: a split's images are not channels×size×size, or a class is absent from the training split.
    """
    for split, t in data.items():
        shape = tuple(t["x"].shape[1:])
        if shape != (channels, size, size):
            raise DataError(f"{split} tensors have images of shape {shape}, the model expects"
                            f" {(channels, size, size)}: rerun preprocess or fix preprocess.size")
    present = set(data["train"]["y"].tolist())
    missing = sorted(set(range(classes)) - present)
    if missing:
        raise DataError(f"class(es) {missing} missing from the training split")


def file_digest(paths: list[str | Path]) -> str:
    """SHA-256 (16 hex) of the bytes of ``paths``, in order (the training inputs).

    Args:
        paths: the files, hashed in this order (each followed by a NUL byte).
    Returns:
        The first 16 hex digits of the digest.
    Raises:
        OSError: a file cannot be read.
    """
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()[:16]


def run_training(tensor_paths: dict[str, str], stats: dict, *, regime: str, model_cfg: dict,
                 train_cfg: dict, adv_cfg: dict | None, seed: int, device: str, out_model: str | Path,
                 init_from: str | Path | None = None, progress: bool = True, code: str = "") -> list[dict]:
    """Train one regime of one dataset and write ``out_model`` ({"state_dict", "meta"}); ``meta``
    holds the SHA-256 of the weight tensors (``models.state_digest``), checked whenever the model is loaded.

    A resumable checkpoint ``<out_model>.ckpt.pt`` is written every epoch and removed when the
    model is complete; a rerun after a kill (or a SLURM requeue) continues from it. Its hash
    covers the configuration, ``code`` (the workflow's ``codehash.code_version`` of the train
    script) and a digest of the input files (tensors, and ``init_from``), so a resume file left by
    other code or other data is refused instead of silently continued.

    Args:
        tensor_paths: split → its tensor file (``tensors/{split}.pt``; at least ``train`` and ``val``).
        stats: the dataset's ``tensors/stats.json`` (``size`` in pixels, ``channels``, ``classes``, ``mean``, ``std``).
        regime: one of :data:`REGIMES`.
        model_cfg: the ``model`` block (``arch``, ``pretrained``, ``weights``, ``width``).
        train_cfg: the ``train`` block (see :func:`fit`).
        adv_cfg: the ``adversarial_training`` block (see :func:`fit`), or None.
        seed: the training seed (see :func:`fit`).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        out_model: the model file to write.
        init_from: a model file whose (verified) weights initialise the model, or None.
        progress: show a per-epoch progress bar.
        code: the train script's code version, part of the resume hash.
    Returns:
        :func:`fit`'s history rows; ``meta`` records the selected epoch and its metrics.
    Raises:
        DataError: the tensors do not fit the model, or a class is missing from the training split.
        ModelError: the model cannot be built (:func:`oncorobust.models.architectures.build_model`).
        CheckpointError: ``init_from`` is unreadable, damaged or does not fit the model.
        TrainingError: see :func:`fit`.
        ValueError: an unknown ``regime`` (:func:`fit`).
        WriteError: ``out_model`` cannot be written.
    """
    from oncorobust.models.architectures import build_model
    from oncorobust.models.checkpoints import load_checkpoint, load_weights, model_meta, state_digest

    data = {s: torch.load(p, map_location="cpu", weights_only=True) for s, p in tensor_paths.items()}
    arch = model_cfg.get("arch", "vgg_small")
    check_training_data(data, int(stats["size"]), int(stats["channels"]), len(stats["classes"]))
    torch.manual_seed(seed)
    model = build_model(arch, classes=len(stats["classes"]), in_channels=int(stats["channels"]),
                        size=int(stats["size"]), mean=stats["mean"], std=stats["std"],
                        pretrained=model_cfg.get("pretrained", "none"), weights=model_cfg.get("weights"),
                        width=int(model_cfg.get("width", 32)))
    if init_from:
        load_weights(model, load_checkpoint(init_from)["state_dict"], init_from)  # digest verified
    inputs = [tensor_paths[k] for k in sorted(tensor_paths)] + ([init_from] if init_from else [])
    hash_ = config_hash(regime, model_cfg, train_cfg, adv_cfg, seed, stats["size"], stats["mean"],
                        code, file_digest(inputs))
    out_model = Path(out_model)
    ckpt = out_model.with_name(out_model.name + ".ckpt.pt")
    model, history = fit(model, data, regime=regime, train=train_cfg, adv=adv_cfg, seed=seed,
                         device=device, ckpt_path=ckpt, hash_=hash_, progress=progress)
    key = "val_robust_acc" if regime != "clean" else "val_loss"
    best = (max if regime != "clean" else min)(history, key=lambda r: r[key])
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    meta = model_meta(arch, stats, model_cfg, regime=regime, config_hash=hash_,
                      epoch=int(best["epoch"]), metrics={k: float(v) for k, v in best.items()},
                      sha256=state_digest(state))  # verified by models.load_checkpoint
    save_torch({"state_dict": state, "meta": meta}, out_model)
    ckpt.unlink(missing_ok=True)
    return history
