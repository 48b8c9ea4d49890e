"""Old import path of the public per-image sensitivity search (the module lives in
:mod:`oncorobust.evaluation.sensitivity`)::

    from oncorobust.sensitivity import flip_eps_bracket, min_flip_eps
"""

from oncorobust.evaluation.sensitivity import flip_eps_bracket, min_flip_eps

__all__ = ["flip_eps_bracket", "min_flip_eps"]
