"""Output heads: what a given model's forward returns, turned into N×classes logits.

``model.output`` (given models only; the names are :data:`oncorobust.spec.OUTPUT_HEADS`):

- ``logits``: N×classes, used as they are;
- ``logit``: N×1 (or N) on two classes, a sigmoid/BCE head: wrapped as the two logits ``[0, z]``;
- ``probabilities``: softmax rows N×classes, or a sigmoid probability N×1: wrapped as clamped
  log-probabilities.

``auto`` is resolved at import (:func:`resolve_output`) from what the model returns on the
dataset's images (:func:`detect_output`). Every later stage then sees N×classes logits, so
attacks, margins, health checks and ε keep their meaning.
"""

from __future__ import annotations

import torch
from torch import nn

from oncorobust.errors import ModelError
from oncorobust.spec import OUTPUT_CHOICES, OUTPUT_HEADS

#: Floor of a probability before its log (float32: log(1e-12) = -27.6, far below any real logit gap).
PROB_FLOOR = 1e-12


def _one_per_image(out: torch.Tensor) -> bool:
    """Whether ``out`` holds one value per image (shape N or N×1)."""
    return out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)


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

    Raises:
        ModelError: an unknown ``kind``, or ``positive`` not 0 or 1.
    """

    def __init__(self, kind: str = "logits", positive: int = 1):
        super().__init__()
        if kind not in OUTPUT_HEADS:
            raise ModelError(f"model.output = {kind!r}: choose one of {list(OUTPUT_HEADS)}")
        if positive not in (0, 1):
            raise ModelError(f"model.positive_class = {positive!r}: give 0 or 1 (the class a high output means)")
        self.kind, self.positive = kind, int(positive)

    def extra_repr(self) -> str:
        """``kind=..., positive=...`` for the module's repr."""
        return f"kind={self.kind}, positive={self.positive}"

    def _two(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """Columns (class 0, class 1) from the scores of the negative and the positive class."""
        return torch.stack([low, high] if self.positive == 1 else [high, low], dim=1)

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        """The logits of a network's main output.

        Args:
            out: N×classes, or N×1 / N for the one-output heads.

        Returns:
            N×classes logits (float, as ``out``).

        Raises:
            ModelError: ``logit`` head on an output with more than one value per image.
        """
        if self.kind == "logits":
            return out
        single = _one_per_image(out)
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
    """A network's main output.

    Args:
        out: what a network's forward returned: a tensor, a tuple/list (auxiliary heads: the
            first is the main one) or a dict (``logits``, else ``out``).

    Returns:
        The main output (N×K tensor for a classifier); None for a dict with neither key; any
        other object unchanged.
    """
    if isinstance(out, dict):
        return out.get("logits", out.get("out"))
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


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
    if _one_per_image(out):
        if classes != 2:
            return None
        inside = bool(((out >= 0) & (out <= 1)).all())
        return None if inside else "logit"
    if out.ndim != 2 or out.shape[1] != classes:
        return None
    rows_sum_to_one = bool(((out >= 0) & (out <= 1)).all()) and bool(
        torch.allclose(out.sum(1), torch.ones(len(out), dtype=out.dtype), atol=1e-3))
    return "probabilities" if rows_sum_to_one else "logits"


def _labels_error(out: torch.Tensor, where: str) -> ModelError:
    """The error for a model whose outputs are integers or booleans (labels, thresholds)."""
    return ModelError(f"{where}: the model returns {str(out.dtype).replace('torch.', '')} outputs (class labels?),"
                      " which carry no gradient; attacks need the scores/logits: export the model before its"
                      " argmax/threshold")


def require_gradient(out, images: torch.Tensor, where: str) -> None:
    """Check that a model's output carries a gradient back to its input images (attacks need it).

    Args:
        out: the network's main output, computed with gradients on from ``images`` (anything
            but a tensor passes: :func:`resolve_output` names it).
        images: the input batch, with ``requires_grad`` set.
        where: the model file or arch, named in errors.

    Raises:
        ModelError: integer or boolean outputs (class labels, a threshold), or floating outputs
            that do not depend on the images through autograd (detached, computed under
            ``torch.no_grad``, or labels turned into floats).
    """
    if not isinstance(out, torch.Tensor):
        return
    if not out.is_floating_point():
        raise _labels_error(out, where)
    grad = None
    if out.requires_grad:
        (grad,) = torch.autograd.grad(out.float().sum(), images, allow_unused=True)
    if grad is None:
        raise ModelError(f"{where}: the model's outputs carry no gradient with respect to its input (detached,"
                         " computed under torch.no_grad(), or labels/thresholds turned into floats?); attacks"
                         " need the scores/logits: export the model before its argmax/threshold, without"
                         " .detach() or torch.no_grad()")


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
        ModelError: integer or boolean outputs (class labels: no gradient); non-finite outputs; a
            shape that fits no head; probabilities not declared as such (attacks on probabilities
            saturate); an ambiguous one-output head under ``auto``.
    """
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"{where}: the model returns {type(out).__name__}, not a tensor of logits")
    if not out.is_floating_point():
        raise _labels_error(out, where)
    bad = ~torch.isfinite(out.reshape(len(out), -1)).all(1) if out.ndim else torch.tensor([True])
    if bad.any():
        raise ModelError(f"{where}: the model returns NaN or infinite outputs on {int(bad.sum())} of"
                         f" {len(out)} images; no attack result on it would mean anything. Check the"
                         " weights (a diverged training run?) and the input normalisation (model.input)")
    seen = detect_output(out, classes)
    single = _one_per_image(out)
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
