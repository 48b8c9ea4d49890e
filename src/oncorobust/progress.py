"""Progress of the long model-running jobs (attacks, health checks, sensitivity), and a guard that
no model output is NaN or infinite while they run.

A job opens a :func:`meter` with its planned work in *passes* (the unit of
:mod:`oncorobust.pipeline.resources`: one image forward = 1, forward + backward = 3) and wraps its model in
:class:`Monitored`. Every forward of the wrapped model counts its images (× 3 with an input
gradient), and at most every ``every`` seconds (30 by default) the meter logs, to the job's log and
the console (logger ``oncorobust.progress``)::

    attack worst ε=0.004: 41% of the planned passes, 27/80 images finished, 312 passes/s,
    elapsed 1 min 10 s, at most 1 min 41 s left

The plan is an upper bound (early exit skips images that flipped), so "at most". Without an open
meter, :class:`Monitored` only guards the outputs.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from typing import Iterator

import torch
from torch import nn

from oncorobust.errors import AttackError
from oncorobust.logs import fmt_seconds

log = logging.getLogger("oncorobust.progress")
#: Seconds between two progress lines (at most; a line is written on the first pass after it).
EVERY_S = 30.0


class NonFiniteOutputError(AttackError):
    """The model returned NaN or infinite logits during an attack or a check."""


class Meter:
    """Counts passes against a plan and logs the rate and the time left.

    Args:
        label: what runs (``attack pgd ε=0.004``), at the start of each line.
        total: planned passes (forward = 1, forward + backward = 3, summed over images).
        images: images the job handles (for "k/N images finished"), 0 if not meaningful.
        every: seconds between two lines.
    """

    def __init__(self, label: str, total: float, images: int = 0, every: float = EVERY_S):
        self.label, self.total, self.images, self.every = label, max(float(total), 1.0), int(images), float(every)
        self.done = 0.0
        self.images_done = 0
        self.start = self.last = time.monotonic()
        self.lines = 0

    def tick(self, passes: float) -> None:
        """Count ``passes`` and log a line when ``every`` seconds have passed since the last one.

        Args:
            passes: passes just done (forward = 1 per image, forward + backward = 3 per image).
        """
        self.done += passes
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.report(now)

    def finished(self, images: int) -> None:
        """``images`` more images have their final result.

        Args:
            images: how many images just finished.
        """
        self.images_done += int(images)

    def report(self, now: float | None = None, final: bool = False) -> str:
        """Log (and return) one progress line.

        Args:
            now: the ``time.monotonic()`` time of the line (now if None).
            final: write the closing line (passes used, time taken) instead of the progress and time left.

        Returns:
            The line logged.
        """
        now = time.monotonic() if now is None else now
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.label}:"]
        if final:
            parts.append(f"done, {self.done:.0f} passes ({100 * self.done / self.total:.0f}% of the plan)"
                         f" in {fmt_seconds(elapsed)}, {rate:.1f} passes/s")
        else:
            parts.append(f"{min(100.0, 100 * self.done / self.total):.0f}% of the planned passes,")
            if self.images:
                parts.append(f"{self.images_done}/{self.images} images finished,")
            left = max(0.0, self.total - self.done) / rate if rate > 0 else float("inf")
            parts.append(f"{rate:.1f} passes/s, elapsed {fmt_seconds(elapsed)}, at most {fmt_seconds(left)} left")
        line = " ".join(parts)
        log.info(line)
        self.lines += 1
        return line


_METER: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("oncorobust_meter", default=None)


@contextlib.contextmanager
def meter(label: str, total: float, images: int = 0, every: float = EVERY_S) -> Iterator[Meter]:
    """Open a :class:`Meter` for the block (nested meters replace the outer one inside it); a
    final line with the passes used and the time taken is logged when the block ends normally.

    Args:
        label: what runs (``attack pgd ε=0.004``), at the start of each line.
        total: planned passes (forward = 1, forward + backward = 3, summed over images).
        images: images the job handles (for "k/N images finished"), 0 if not meaningful.
        every: seconds between two lines.

    Yields:
        The open :class:`Meter`.
    """
    m = Meter(label, total, images, every)
    token = _METER.set(m)
    try:
        yield m
        m.report(final=True)
    finally:
        _METER.reset(token)


def current() -> Meter | None:
    """The open meter, if any.

    Returns:
        The innermost open :class:`Meter` of this context, or None.
    """
    return _METER.get()


class Monitored(nn.Module):
    """A model wrapper that counts passes for the open :func:`meter` and refuses non-finite outputs.

    Args:
        model: the classifier (N×C×H×W in [0,1] → N×classes logits); its mode is shared
            (``train()``/``eval()`` on the wrapper switch the model).
        what: the step named in the error (``pgd ε=0.004``).

    Raises (on forward):
        NonFiniteOutputError: NaN or ±inf in the logits of any image, naming how many.
    """

    def __init__(self, model: nn.Module, what: str = "the attack"):
        super().__init__()
        self.model, self.what = model, what
        self.training = model.training  # not train(): that resets every submodule's own mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits (N×classes); raises NonFiniteOutputError on NaN or ±inf.

        Args:
            x: N×C×H×W float32 images in [0,1].
        """
        out = self.model(x)
        if isinstance(out, torch.Tensor) and out.numel():
            finite = torch.isfinite(out.reshape(len(out), -1)).all(1)
            if not bool(finite.all()):
                raise NonFiniteOutputError(
                    f"the model returned NaN or infinite logits on {int((~finite).sum())} of {len(out)}"
                    f" images during {self.what}: no result of it would mean anything. Check the"
                    " weights and the input normalisation (model.input); the images are finite in [0,1]")
        m = _METER.get()
        if m is not None:
            m.tick(len(x) * (3 if torch.is_grad_enabled() and x.requires_grad else 1))
        return out


def monitored(model: nn.Module, what: str) -> nn.Module:
    """``model`` wrapped in :class:`Monitored` unless it already is.

    Args:
        model: the classifier (N×C×H×W in [0,1] → N×classes logits), or an already wrapped one.
        what: the step named in the error (``pgd ε=0.004``); unused when ``model`` is already wrapped.

    Returns:
        The :class:`Monitored` model.
    """
    return model if isinstance(model, Monitored) else Monitored(model, what)
