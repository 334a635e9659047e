"""Latency statistics per pipeline stage: p50/p95/p99/max over a bounded history."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class LatencyStats:
    """Collect latencies (seconds) per named stage and report percentiles in milliseconds.

    Keeps the last ``maxlen`` values of each stage (memory stays bounded over long sessions) and
    exact counts and maxima over the whole session.
    """

    def __init__(self, maxlen: int = 100_000) -> None:
        self._values: dict[str, deque[float]] = {}
        self._count: dict[str, int] = {}
        self._max: dict[str, float] = {}
        self._maxlen = int(maxlen)
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        """Record one latency of ``stage``."""
        with self._lock:
            if stage not in self._values:
                self._values[stage] = deque(maxlen=self._maxlen)
                self._count[stage] = 0
                self._max[stage] = float("-inf")
            self._values[stage].append(seconds)
            self._count[stage] += 1
            self._max[stage] = max(self._max[stage], seconds)

    def summary(self) -> dict[str, dict[str, float]]:
        """Return ``{stage: {n, p50_ms, p95_ms, p99_ms, max_ms}}``."""
        with self._lock:
            snap = {k: np.fromiter(v, float) for k, v in self._values.items()}
            counts, maxima = dict(self._count), dict(self._max)
        out = {}
        for stage, values in snap.items():
            if values.size == 0:
                continue
            p50, p95, p99 = np.percentile(values, [50, 95, 99]) * 1e3
            out[stage] = {
                "n": counts[stage],
                "p50_ms": float(p50),
                "p95_ms": float(p95),
                "p99_ms": float(p99),
                "max_ms": float(maxima[stage] * 1e3),
            }
        return out

    def format(self) -> str:
        """One line per stage, for people."""
        lines = []
        for stage, s in self.summary().items():
            lines.append(
                f"{stage:<28} n={s['n']:<7d} p50 {s['p50_ms']:8.2f} ms  p95 {s['p95_ms']:8.2f} ms"
                f"  p99 {s['p99_ms']:8.2f} ms  max {s['max_ms']:8.2f} ms"
            )
        return "\n".join(lines)
