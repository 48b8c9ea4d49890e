"""The stable Python API: what a notebook needs, under one import path.

::

    from oncorobust import api

    model = api.load_given_model("export:model.pt2", classes=["benign", "malignant"], size=32)
    frame = api.evaluate_attack(model, x, y, ids, "pgd", 0.004, labels="true")

**Stability promise.** Every name in ``__all__`` keeps this import path
(``oncorobust.api.<name>``) across releases. The modules these names come from
(``oncorobust.models.loading``, ``oncorobust.evaluation.*``, ``oncorobust.data.*``, ...) are
internal: they may move or be renamed in any release. ``tests/test_api.py`` resolves every name,
so a moved module cannot silently break this one, and runs the examples of the README's "Python API (notebooks)" section.

Every image is N×C×H×W float32 in [0,1] and every model maps such images to N×classes logits;
ε is an L∞ budget in these [0,1] pixel units.

Models
    - :func:`load_model`: a model file written by the workflow (``results/{ds}/models/{regime}.pt``).
    - :func:`load_given_model`: your own model (a state dict of a ``torchvision:``/``monai:``/
      ``python:`` arch, a TorchScript file, a ``torch.export`` program), checked and wrapped as
      ``oncorobust audit`` does.
    - :func:`import_checkpoint`: the workflow's import step itself (a ``model`` config block and
      a ``stats.json`` dict → the model file's contents).

Attacks
    - :func:`evaluate_attack`: attack a batch and score it, one row per image (:data:`ATTACK_COLUMNS`).
    - :func:`attack`: the adversarial images themselves.
    - :func:`predict`: predicted class and its probability.
    - :func:`method_params`: a method's full parameters (its defaults updated).
    - ``METHODS``: the attack method names (``fgsm``, ``bim``, ``pgd``, ``apgd_ce``,
      ``apgd_margin``, ``fab``, ``square``, ``worst``).
    - ``ATTACK_COLUMNS``: the columns of :func:`evaluate_attack`'s frame.
    - :func:`visibility`: per image ‖δ‖₂, PSNR and SSIM of adversarial against clean images (the
      frame's ``l2``, ``psnr``, ``ssim``): how visible the change is.

Clinical metrics
    - :func:`clinical_table`: AUROC with its DeLong 95% CI, sensitivity and specificity at a
      validation-chosen operating point, clean and under each attack (frames of
      :func:`evaluate_attack`, whose ``clean_logit_<k>``/``true_adv_logit_<k>`` columns it ranks).
    - :func:`auroc_ci`, :func:`auroc_difference`: an AUROC with its DeLong CI; two paired AUROCs' difference.

Per-image sensitivity
    - :func:`flip_eps_bracket`: per image, a bracket on the smallest flipping ε.
    - :func:`min_flip_eps`: its upper end alone.
    - :func:`sensitivity_frame`: one row per image of several splits (:data:`SENSITIVITY_COLUMNS`).
    - ``SENSITIVITY_COLUMNS``: the columns of :func:`sensitivity_frame`'s frame.

Evaluation health
    - :func:`health_checks`: did the attacks work on this model (gradients, determinism, ε = 1,
      PGD convergence, loss convergence, Square against white-box)?

Data
    - :func:`read_dicom`: one DICOM file's pixels in the modality's units (HU for CT).
    - :func:`run_ingest`: a source (folder, manifest, LIDC, CBIS-DDSM, ...) → the split manifest.
    - :func:`run_preprocess`: the manifest → per-split tensors in [0,1] and their statistics.

Robustness cards
    - :func:`gather_card`, :func:`render_card_markdown`, :func:`render_card_html`: one page per
      model from the workflow's tables.

Errors
    - :class:`OncorobustError` (the base of every error meant for a user), :class:`ConfigError`,
      :class:`DataError`, :class:`DicomError`, :class:`ModelError`, :class:`CheckpointError`,
      :class:`AttackError`, :class:`AttackSanityError`, :class:`CardError`.

The re-exported names are imported on first use (``import oncorobust.api`` itself imports
nothing heavy); each is the very object of its internal module, with its own docstring.
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover (for type checkers and editors only)
    import numpy as np
    import pandas as pd
    import torch
    from torch import nn

#: name → ``module:attribute`` of every re-exported object (resolved on first use).
_EXPORTS: dict[str, str] = {
    # models
    "load_model": "oncorobust.models.loading:load_model",
    "import_checkpoint": "oncorobust.models.loading:import_checkpoint",
    # attacks
    "evaluate_attack": "oncorobust.evaluation.evaluate:evaluate_attack",
    "attack": "oncorobust.attacks.methods:attack",
    "predict": "oncorobust.evaluation.evaluate:predict",
    "method_params": "oncorobust.attacks.methods:method_params",
    "METHODS": "oncorobust.spec:METHOD_NAMES",
    "ATTACK_COLUMNS": "oncorobust.evaluation.evaluate:COLUMNS",
    "visibility": "oncorobust.evaluation.visibility:visibility",
    # clinical metrics
    "clinical_table": "oncorobust.evaluation.clinical_metrics:clinical_table",
    "auroc_ci": "oncorobust.evaluation.roc:auroc_ci",
    "auroc_difference": "oncorobust.evaluation.roc:auroc_difference",
    # per-image sensitivity
    "flip_eps_bracket": "oncorobust.evaluation.sensitivity:flip_eps_bracket",
    "min_flip_eps": "oncorobust.evaluation.sensitivity:min_flip_eps",
    "sensitivity_frame": "oncorobust.evaluation.sensitivity:sensitivity_frame",
    "SENSITIVITY_COLUMNS": "oncorobust.evaluation.sensitivity:SENSITIVITY_COLUMNS",
    # data
    "read_dicom": "oncorobust.data.dicom:read_dicom",
    "run_ingest": "oncorobust.data.ingest:run_ingest",
    "run_preprocess": "oncorobust.data.preprocess:run_preprocess",
    # robustness cards
    "gather_card": "oncorobust.reporting.cards:gather",
    "render_card_markdown": "oncorobust.reporting.cards:render_markdown",
    "render_card_html": "oncorobust.reporting.cards:render_html",
    # errors
    "OncorobustError": "oncorobust.errors:OncorobustError",
    "ConfigError": "oncorobust.errors:ConfigError",
    "DataError": "oncorobust.errors:DataError",
    "DicomError": "oncorobust.errors:DicomError",
    "ModelError": "oncorobust.errors:ModelError",
    "CheckpointError": "oncorobust.models.checkpoints:CheckpointError",
    "AttackError": "oncorobust.errors:AttackError",
    "AttackSanityError": "oncorobust.attacks.checks:AttackSanityError",
    "CardError": "oncorobust.errors:CardError",
}

#: the exported names, grouped as in the module docstring: the :data:`_EXPORTS` and the two
#: wrappers defined here (:func:`load_given_model`, :func:`health_checks`: signatures simplified
#: for notebooks, no logic of their own)
__all__ = [
    "load_model", "load_given_model", "import_checkpoint",
    "evaluate_attack", "attack", "predict", "method_params", "METHODS", "ATTACK_COLUMNS", "visibility",
    "clinical_table", "auroc_ci", "auroc_difference",
    "flip_eps_bracket", "min_flip_eps", "sensitivity_frame", "SENSITIVITY_COLUMNS",
    "health_checks",
    "read_dicom", "run_ingest", "run_preprocess",
    "gather_card", "render_card_markdown", "render_card_html",
    "OncorobustError", "ConfigError", "DataError", "DicomError", "ModelError", "CheckpointError",
    "AttackError", "AttackSanityError", "CardError",
]

#: the columns of :func:`health_checks`' frame
_HEALTH_COLUMNS = ["check", "passed", "value", "threshold", "detail"]


def __getattr__(name: str) -> Any:
    """A re-exported name, imported from its internal module on first use (PEP 562)."""
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    """The module's names, the not yet imported re-exports included (for tab completion)."""
    return sorted(set(globals()) | set(__all__))


def load_given_model(arch: str | Path, checkpoint: str | Path | None = None, *, classes: int | Sequence[str],
                     size: int, channels: int = 1, normalize: str | tuple[Sequence[float], Sequence[float]] = "none",
                     input_channels: int | None = None, output: str = "auto", positive_class: int = 1,
                     checkpoint_key: str | None = None, images: torch.Tensor | None = None,
                     device: str | torch.device = "cpu", save_to: str | Path | None = None) -> nn.Module:
    """Your own model, checked and wrapped as ``oncorobust audit`` does, ready for every function here.

    The same route as the workflow's import step: :func:`import_checkpoint` on the ``model`` block
    that ``oncorobust audit --model/--weights/--normalize/--channels/--output`` would write, then
    the model file it returns rebuilt by :func:`load_model` (so the result is exactly what the
    workflow's attack, sensitivity and health jobs see).

    Args:
        arch: ``torchvision:<builder>``, ``monai:<Network>`` or ``python:<module or file.py>:<callable>``
            (with ``checkpoint``: its state dict or training checkpoint), ``torchscript:<file>``,
            ``export:<file.pt2>``, or the path of a TorchScript file or ``torch.export`` program
            (told apart by content, as ``--model`` does).
        checkpoint: the state dict (or training checkpoint) of a ``torchvision:``/``monai:``/
            ``python:`` arch; None for TorchScript and ``torch.export`` files.
        classes: the class names in label order, or their count (names ``"0"``, ``"1"``, ...).
        size: the images' side in pixels (the model gets size×size images).
        channels: the images' channels (1 grey, 3 colour).
        normalize: what the network expects of its input, made from [0,1] images by a wrapper
            layer: ``"none"`` ([0,1] pixels, the default), ``"imagenet"`` (ImageNet's mean/std),
            or a ``(mean, std)`` pair in [0,1] units (one value or one per channel), e.g. your
            training set's (``stats.json``'s ``mean``/``std`` for a model trained by the workflow).
        input_channels: channels of the network's first layer, if more than ``channels`` (grey
            images repeated); None: ``channels``.
        output: the network's output head: ``auto`` (detected on ``images``), ``logits``,
            ``logit`` (one sigmoid/BCE value on two classes) or ``probabilities``.
        positive_class: with a one-logit head, the class that z > 0 means.
        checkpoint_key: the key of the state dict inside a training checkpoint (default: the
            first of the usual ones).
        images: N×C×H×W float32 images in [0,1] the head is detected on and that must give finite
            outputs (default: 8 random images).
        device: where the returned model is placed.
        save_to: also keep the model file (``{"state_dict", "meta"}``, as the workflow's
            ``models/clean.pt``) there, for :func:`load_model` later; None: not kept.

    Returns:
        The classifier in eval mode: N×C×H×W images in [0,1] → N×classes logits.

    Raises:
        CheckpointError: the file is missing, unreadable or does not fit (one message listing
            every difference: keys, shapes, class count, input size).
        ModelError: an unknown or unbuildable arch, a bad ``normalize`` (``"dataset"``: give
            ``(mean, std)``), a file that is neither TorchScript nor ``torch.export`` given without
            an arch, a ``torchvision:``/``monai:``/``python:`` arch without ``checkpoint``, or a model whose outputs
            are labels, carry no input gradient, are not finite, are not deterministic in eval
            mode, or whose head is ambiguous (declare ``output``).
    """
    from oncorobust.errors import ModelError
    from oncorobust.io import save_torch
    from oncorobust.models.loading import import_checkpoint, load_model
    from oncorobust.models.zipformat import is_exported_program, is_torchscript
    from oncorobust.spec import BUILT_SOURCES, parse_arch

    arch = str(arch)
    path = Path(arch).expanduser()
    if ":" not in arch and path.is_file():  # a file given as --model: TorchScript or torch.export
        kind = "torchscript" if is_torchscript(path) else "export" if is_exported_program(path) else None
        if kind is None:
            raise ModelError(f"{arch}: a file that is neither a TorchScript model nor a torch.export program"
                             " (.pt2); for a state dict give the architecture and the file:"
                             " load_given_model('torchvision:resnet18', 'weights.pt', ...)")
        arch = f"{kind}:{path}"
    if parse_arch(arch)[0] in BUILT_SOURCES and checkpoint is None:
        raise ModelError(f"{arch}: give the checkpoint (its state dict or training checkpoint); a"
                         " TorchScript file or a torch.export program carries its weights")
    if normalize == "dataset":
        raise ModelError("normalize='dataset' needs the training set's statistics, which a notebook call does"
                         " not have: give them as normalize=(mean, std) (in [0,1] units)")
    if isinstance(normalize, str):
        spec: dict = {"normalize": normalize}
    else:
        mean, std = normalize
        spec = {"normalize": "custom", "mean": list(mean), "std": list(std)}
    if input_channels:
        spec["channels"] = int(input_channels)
    model_cfg: dict = {"arch": arch, "input": spec, "output": output, "positive_class": int(positive_class)}
    if checkpoint is not None:
        model_cfg["checkpoint"] = str(Path(checkpoint).expanduser())
    if checkpoint_key:
        model_cfg["checkpoint_key"] = checkpoint_key
    names = [str(c) for c in range(classes)] if isinstance(classes, int) else [str(c) for c in classes]
    stats = {"classes": names, "size": int(size), "channels": int(channels),
             "mean": [0.0] * int(channels), "std": [1.0] * int(channels)}
    payload = import_checkpoint(model_cfg, stats, images)
    if save_to is not None:
        save_torch(payload, save_to)
        return load_model(save_to, device)
    with tempfile.TemporaryDirectory(prefix="oncorobust_model_") as tmp:
        file = Path(tmp) / "model.pt"
        save_torch(payload, file)
        return load_model(file, device)


def health_checks(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, ref_eps: float,
                  ids: Sequence[str] | None = None, pgd: dict | None = None, seed: int = 0,
                  square_queries: int = 1000, whitebox_flipped: np.ndarray | None = None,
                  batch_size: int | None = None) -> pd.DataFrame:
    """The evaluation-health checks that run the model, as a frame: did the attacks work on it?

    :func:`oncorobust.evaluation.health.model_checks` (what the workflow's health job runs) with
    notebook defaults: ``pgd`` defaults to PGD's own parameters and ``ids`` to the image indices.
    Checks: ``gradients`` (non-zero, finite input gradients), ``deterministic`` (two eval-mode
    passes agree), ``unbounded_attack`` (APGD-margin at ε = 1 flips ≥ 99%), ``pgd_convergence``
    (doubling PGD's steps and restarts changes < 1 point), ``loss_converged`` (PGD's loss no longer
    rising), and with ``whitebox_flipped`` ``square_vs_whitebox`` (gradient masking).

    Args:
        model: the classifier (run in eval mode; every submodule's own mode restored afterwards).
        x: N×C×H×W float32 images in [0,1] (batches are moved to the model's device).
        target: N labels (int64) the attacks push away from (true or predicted labels).
        ref_eps: the reference ε in [0,1] pixel units.
        ids: the images' sample IDs (per-image random starts are keyed by them); None: the indices.
        pgd: PGD's parameters to override (``steps``, ``alpha_ratio``, ``random_start``,
            ``restarts``); None: its defaults (10 steps of ε/4, random start, 1 restart).
        seed: the run's seed.
        square_queries: queries of the Square run (only with ``whitebox_flipped``).
        whitebox_flipped: N bools, image flipped by any white-box attack at ``ref_eps`` (e.g.
            ``frame.adv_pred != frame.clean_pred`` of :func:`evaluate_attack`); None skips the
            Square comparison.
        batch_size: images per model and attack call; None: all at once.

    Returns:
        One row per check: ``check``, ``passed`` (bool), ``value``, ``threshold``, ``detail``.

    Raises:
        AttackError: bad images, labels or PGD parameters, or NaN/inf logits during a check.
        AttackSanityError: an attack result outside its ε-ball or [0,1].
    """
    import pandas as pd

    from oncorobust.attacks.methods import method_params
    from oncorobust.evaluation.health import model_checks

    rows = model_checks(model, x, target, None if ids is None else list(ids), ref_eps=ref_eps,
                        pgd=method_params("pgd", pgd), seed=seed, square_queries=square_queries,
                        whitebox_flipped=whitebox_flipped, batch_size=batch_size)
    return pd.DataFrame(rows, columns=_HEALTH_COLUMNS)
