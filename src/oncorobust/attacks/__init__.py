"""Attacks stage: white-box and black-box evasion attacks in [0,1] pixel space.

The public entry point keeps its old import path::

    from oncorobust.attacks import attack   # attack(model, x, y, method, eps, ...) -> x_adv
"""

from oncorobust.attacks.methods import attack

__all__ = ["attack"]
