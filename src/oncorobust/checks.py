"""Argument checks with the config's wording, shared by the config checks and the library's public
functions (``on_bad_file``, ``split.test_fraction``, ``preprocess.color`` …).

Apart from :mod:`oncorobust.config` (which re-exports them) so that the data stage, which uses
them, does not import the config checks and through them the registry: an edit of
:mod:`oncorobust.spec` then reruns no ingest (:mod:`oncorobust.pipeline.codehash`). No torch import.
"""

from __future__ import annotations

import math

from oncorobust.errors import ConfigError

ON_BAD_FILE = ("skip", "error")


def check_choice(value: object, allowed: tuple[str, ...] | list[str], key: str) -> None:
    """Raise ConfigError unless ``value`` is one of ``allowed``.

    Args:
        value: the configured value.
        allowed: the valid values.
        key: the config key path named in the message (e.g. ``on_bad_file``).

    Raises:
        ConfigError: naming ``key``, the bad value and the valid ones.
    """
    if value not in allowed:
        raise ConfigError(f"{key} = {value!r} is not valid: choose one of {list(allowed)}")


def check_fraction(value: object, key: str) -> float:
    """``value`` as a float strictly between 0 and 1, else a ConfigError naming ``key``.

    Args:
        value: the configured fraction.
        key: the config key path named in the message (e.g. ``datasets.ct.split.test_fraction``).

    Returns:
        The fraction as a float.

    Raises:
        ConfigError: when ``value`` is not a number in (0, 1).
    """
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{key} = {value!r} is not a number: give a fraction between 0 and 1") from None
    if not (0 < f < 1) or math.isnan(f):
        raise ConfigError(f"{key} = {value!r} must lie strictly between 0 and 1 (a fraction of the"
                          " patients); e.g. 0.33")
    return f
