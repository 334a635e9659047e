"""Summary statistics of per-session scores: where every reported interval comes from.

A decoding figure (CER, top-k accuracy) is a mean over held-out sessions with a two-sided Student t
interval, so that a reader sees how many sessions it rests on and how much they disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of per-session values and its two-sided ``level`` t interval.

    Parameters
    ----------
    values : sequence of float
        One value per session (NaNs are not allowed).
    level : float
        Coverage of the interval, in (0, 1).

    Returns
    -------
    mean, low, high : float
        The mean and the interval's bounds; the bounds are NaN for fewer than 2 sessions.
    """
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            f"Invalid value for 'values': expected a non-empty 1D sequence, got {values.shape}."
        )
    if not np.all(np.isfinite(values)):
        raise ValueError("Invalid value for 'values': every per-session value must be finite.")
    if not 0 < level < 1:
        raise ValueError(f"Invalid value for 'level': expected a number in (0, 1), got {level}.")
    mean = float(values.mean())
    if values.size < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, values.size - 1) * stats.sem(values))
    return mean, mean - half, mean + half


def format_interval(values: Sequence[float], digits: int = 3) -> str:
    """``"0.123 [0.100, 0.146] (n=8)"``: the mean, its 95 % t interval and the session count."""
    mean, low, high = mean_interval(values)
    n = len(values)
    if n < 2:
        return f"{mean:.{digits}f} (n=1, no interval)"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}] (n={n})"
