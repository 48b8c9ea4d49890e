"""The one "attack only the images not yet flipped" loop, AutoAttack-style.

Three callers run several attacks in turn, each on the images that the runs before it left
unflipped, keeping each image's first success:

- restarts of one method (:func:`oncorobust.attacks.methods.attack` with ``restarts`` > 1):
  unflipped images keep the highest-loss restart;
- the per-image worst case over several methods (``worst``,
  :func:`oncorobust.attacks.methods.worst_case`): unflipped images keep the smallest margin;
- the sensitivity search's inner ensemble (:mod:`oncorobust.evaluation.sensitivity`): restarts ×
  members, unflipped images keep the clean image;

and the health checks through :func:`~oncorobust.attacks.methods.attack`. Each caller keeps its
own random draws: the loop hands every run its draw index (the ``restart`` argument of
:func:`~oncorobust.attacks.kernels.signed_noise`) computed by the caller's ``draw`` function of
(restart, member), so the per-image noise is exactly what the caller drew before this loop
existed.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch

__all__ = ["Ensemble", "Run", "Step", "until_flipped"]


class Step(NamedTuple):
    """One run of the loop.

    Attributes:
        restart: the restart (0 … restarts − 1).
        member: the member's index in ``members``.
        name: the member's name.
        draw: the noise draw index of this run (the caller's ``draw(restart, member)``).
    """

    restart: int
    member: int
    name: str
    draw: int


class Run(NamedTuple):
    """What one run returns for the images it attacked (M = the number of images in ``todo``).

    Attributes:
        images: M×C×H×W adversarial images.
        flipped: M bools: the image counts as flipped (it is not attacked again).
        score: M values, higher = better for the attacker (e.g. the loss, or minus the margin);
            None when the loop keeps the clean image for unflipped images.
    """

    images: torch.Tensor
    flipped: torch.Tensor
    score: torch.Tensor | None = None


class Ensemble(NamedTuple):
    """The loop's result.

    Attributes:
        images: N×C×H×W: each image's first successful run, else (with scores) its highest-score
            run, else the clean image.
        flipped: N bools: flipped by some run (or already ``done`` at the start).
        flipped_by: images newly flipped by each run, in schedule order (restart-major), 0 for runs
            skipped because every image had flipped.
    """

    images: torch.Tensor
    flipped: torch.Tensor
    flipped_by: list[int]


def until_flipped(x: torch.Tensor, members: Sequence[str], run: Callable[[Step, torch.Tensor], Run], *,
                  restarts: int = 1, draw: Callable[[int, int], int] = lambda restart, member: restart,
                  done: torch.Tensor | None = None, score: torch.Tensor | None = None) -> Ensemble:
    """Run ``members`` in turn, ``restarts`` times, each only on the images not yet flipped.

    For restart r = 0 … restarts − 1 and each member m in order: the images not yet flipped are
    ``todo``; if there are none the loop ends; otherwise ``run(Step(r, m, name, draw(r, m)),
    todo)`` attacks ``x[todo]``. A flipped image keeps the images of the run that first flipped
    it. With ``score`` (the initial per-image score), an unflipped image keeps the run with the
    highest score (strictly higher than the best so far); without, it keeps the clean image.

    Args:
        x: N×C×H×W clean images in [0,1].
        members: the member names, in order (one name for restarts of one method).
        run: attacks ``x[todo]`` (``todo``: M int64 indices into ``x``, on ``x``'s device) and
            returns a :class:`Run` for those M images. It draws its random starts with the
            step's ``draw`` index.
        restarts: how many times the members are run in turn (≥ 1).
        draw: the noise draw index of restart r's member m; the default is r.
        done: N bools, images not to attack at all (already flipped); None: none.
        score: N initial scores (e.g. −inf, or minus the clean margin), or None (see above).

    Returns:
        :class:`Ensemble`.
    """
    best = x.clone()
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device) if done is None else done.clone()
    best_score = None if score is None else score.clone()
    flipped_by: list[int] = []
    steps = [Step(r, m, name, draw(r, m)) for r in range(restarts) for m, name in enumerate(members)]
    for k, step in enumerate(steps):
        todo = (~done).nonzero().flatten()
        if not len(todo):
            flipped_by.extend([0] * (len(steps) - k))
            break
        out = run(step, todo)
        ok = out.flipped
        if best_score is None:
            best[todo[ok]] = out.images[ok]
        else:
            better = out.score > best_score[todo]
            best[todo[better]] = out.images[better]
            best_score[todo] = torch.maximum(best_score[todo], out.score)
        done[todo[ok]] = True
        flipped_by.append(int(ok.sum()))
    return Ensemble(best, done, flipped_by)
