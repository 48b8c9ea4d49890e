"""ε, exact end to end: one parser (numbers and ``k/255`` fractions), one key for file names that
round-trips to the same float, one comparison and one way to show it. Torch-free.

The field writes L∞ budgets as ``k/255`` (one 8-bit grey level is 1/255). A config may give ε so,
as a YAML string (``eps: ["1/255", "8/255"]``); :func:`normalize_config_eps` turns every such string
into its float before validation. File names carry :func:`eps_key` (Python's shortest repr, so
``float(eps_key(e)) == e`` exactly: the attack runs at the config's value, never at a rounded text),
readers compare with :func:`same_eps`, and tables, figures and cards show :func:`eps_text`
(``8/255`` where ε is a multiple of 1/255 that no short decimal writes exactly, else the decimal).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

#: Relative tolerance of :func:`same_eps`: far above float round-off (1e-16), far below any ε grid
#: step anyone uses (the config's values must differ by more, see ``config._check_eps``).
REL_TOL = 1e-9

_FRACTION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*$")


def parse_fraction(value: object) -> float | None:
    """A string ``"a/b"`` (``"8/255"``, ``"1.5/255"``) as its float; None for anything else.

    Args:
        value: a config value.

    Returns:
        ``a / b`` as a float, or None when ``value`` is not such a string (or ``b`` is 0).
    """
    if not isinstance(value, str):
        return None
    m = _FRACTION.match(value)
    if not m or float(m[2]) == 0:
        return None
    return float(Fraction(m[1]) / Fraction(m[2]))


def eps_key(eps: float) -> str:
    """The text of ε in result file names (``eps={key}.csv``): the shortest decimal that reads back
    as exactly the same float (``0.002`` → ``'0.002'``; 8/255 → ``'0.03137254901960784'``).

    Args:
        eps: ε in [0,1] pixel units.

    Returns:
        ``repr(float(eps))``; ``float(eps_key(e)) == e`` for every finite ``e``.
    """
    return repr(float(eps))


def same_eps(a: float, b: float) -> bool:
    """Whether two ε are the same budget (relative tolerance :data:`REL_TOL`): the one comparison
    of ε between a result, its path, the config and the params.

    Args:
        a, b: ε in [0,1] pixel units.

    Returns:
        True when they agree within a relative 1e-9 (or both are 0).
    """
    return math.isclose(float(a), float(b), rel_tol=REL_TOL, abs_tol=1e-15)


def eps_text(eps: float, denominator: int = 255) -> str:
    """ε as a person reads it: the decimal when six significant digits write it exactly
    (``0.002``, ``0.05``), else ``k/255`` when it is a whole number of grey levels (``8/255``),
    else four significant digits.

    Args:
        eps: ε in [0,1] pixel units.
        denominator: the fraction's denominator looked for (255: 8-bit grey levels).

    Returns:
        The text.
    """
    eps = float(eps)
    if not math.isfinite(eps):
        return f"{eps}"
    short = f"{eps:g}"
    if float(short) == eps:
        return short
    k = round(eps * denominator)
    if k > 0 and same_eps(k / denominator, eps):
        return f"{k}/{denominator}"
    return f"{eps:.4g}"


#: Config keys (per dataset) that hold an ε or a step in pixel units and may be written as fractions.
_EPS_KEYS = {"attack": ("eps", "reference_eps"), "adversarial_training": ("eps", "step"),
             "sensitivity": ("eps_max", "tol")}


def normalize_config_eps(config: dict) -> dict:
    """Turn every ``"a/b"`` string among the config's ε values into its float, in place (before
    schema validation, which wants numbers): ``datasets.<ds>.attack.eps`` / ``reference_eps``,
    ``adversarial_training.eps`` / ``step``, ``sensitivity.eps_max`` / ``tol``. Other strings are
    left for the validation to refuse by name.

    Args:
        config: the workflow config as loaded.

    Returns:
        The same dict.
    """
    for entry in (config.get("datasets") or {}).values():
        if not isinstance(entry, dict):
            continue
        for block, keys in _EPS_KEYS.items():
            sub = entry.get(block)
            if not isinstance(sub, dict):
                continue
            for k in keys:
                v = sub.get(k)
                if isinstance(v, list):
                    sub[k] = [parse_fraction(x) if parse_fraction(x) is not None else x for x in v]
                elif parse_fraction(v) is not None:
                    sub[k] = parse_fraction(v)
    return config


def snap_reference_eps(config: dict) -> dict:
    """Make each dataset's ``attack.reference_eps`` the very ``attack.eps`` entry it equals (within
    :func:`same_eps`), in place, so that every table reads the one result file of that budget
    (``reference_eps: 0.0313725490196078`` with ``eps: ["8/255"]`` reads ``eps=0.03137254901960784.csv``).

    Args:
        config: the validated workflow config.

    Returns:
        The same dict.
    """
    for entry in (config.get("datasets") or {}).values():
        att = entry.get("attack") if isinstance(entry, dict) else None
        if not isinstance(att, dict) or "reference_eps" not in att:
            continue
        match = [e for e in att.get("eps") or [] if same_eps(e, att["reference_eps"])]
        if match:
            att["reference_eps"] = match[0]
    return config
