"""Small statistics of an eval run: quantiles of latencies and confidence intervals of pass rates."""

from __future__ import annotations

import math
from collections.abc import Sequence

Z_95 = 1.959963984540054  # the two-sided 95% normal quantile


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile of non-empty ``values``, interpolated linearly between ranks."""
    ranked = sorted(values)
    pos = (len(ranked) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ranked) - 1)
    return ranked[lo] + (ranked[hi] - ranked[lo]) * (pos - lo)


def wilson_interval(rate: float, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson's score interval for a proportion ``rate`` observed over ``n`` independent units (None if n is 0).

    Used for pass^k with n = the number of scenarios: pass^k averages one estimate per scenario, so the
    scenarios, not the trials, are the independent units (a conservative width when k trials share one).
    """
    if n <= 0:
        return None
    p = min(1.0, max(0.0, rate))
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def ci_text(ci: Sequence[float] | None) -> str:
    """``lo–hi%`` of an interval of rates, for the report tables ("–" when there is none)."""
    return "–" if not ci else f"{100 * ci[0]:.0f}–{100 * ci[1]:.0f}%"
