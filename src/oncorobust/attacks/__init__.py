"""Attacks stage: white-box and black-box evasion attacks in [0,1] pixel space.

The public entry point keeps its old import path::

    from oncorobust.attacks import attack   # attack(model, x, y, method, eps, ...) -> x_adv

Modules: :mod:`~oncorobust.attacks.methods` (``attack``, the method dispatch and parameters, the
``worst`` ensemble), :mod:`~oncorobust.attacks.kernels` (typed kernels: noise, losses, projection,
signed-gradient steps, APGD), :mod:`~oncorobust.attacks.ensemble` (the one "attack only the images
not yet flipped" loop), :mod:`~oncorobust.attacks.adapters` (torchattacks' FAB and Square) and
:mod:`~oncorobust.attacks.checks` (input and result checks).
"""

from oncorobust.attacks.methods import attack

__all__ = ["attack"]
