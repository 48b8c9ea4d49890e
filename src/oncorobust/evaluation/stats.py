"""Accuracy with confidence intervals.

Hand-written because the formulas are three lines each and scipy/statsmodels would add a
dependency (statsmodels) for them; each is tested against published values.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (Wilson 1927; Newcombe 1998, method 3).

    Args:
        k: number of successes, 0 <= k <= n.
        n: number of trials.
        z: normal quantile of the interval; default 1.96 (95%).
    Returns:
        (low, high) as proportions clipped to [0, 1]; (NaN, NaN) when n == 0.
    """
    if n == 0:
        return math.nan, math.nan
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(b: int, c: int, n: int, z: float = Z95) -> tuple[float, float, float]:
    """Difference of two paired proportions, p2 − p1 = (b − c)/n, with a Wald 95% CI.

    ``b``: pairs right under condition 2 only; ``c``: right under condition 1 only (discordant
    pairs of the same test images). Returns (difference, low, high).

    Args:
        b: number of pairs right under condition 2 only.
        c: number of pairs right under condition 1 only.
        n: number of pairs (test images).
        z: normal quantile of the interval; default 1.96 (95%).
    Returns:
        (difference, low, high) as proportions, the bounds clipped to [-1, 1]; all NaN when n == 0.
    """
    if n == 0:
        return math.nan, math.nan, math.nan
    d = (b - c) / n
    se = math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    return d, max(-1.0, d - z * se), min(1.0, d + z * se)
