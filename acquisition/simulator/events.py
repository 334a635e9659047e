"""Timed additive events (evoked responses, blinks) and trials, rendered block by block.

An :class:`Event` is a waveform that starts at an absolute sample index and is added to the
sensor data, either directly (``pattern is None``: the waveform is already in sensor space) or
through a spatial pattern (``waveform @ pattern``). :class:`EventQueue` adds the overlapping part
of every event to each block it touches, so the output does not depend on how the timeline is cut
into blocks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Event:
    """A waveform added to the data from sample ``start`` on.

    Parameters
    ----------
    start : int
        Absolute sample index of the waveform's first sample.
    waveform : array, shape (n_samples, n_components)
        Time courses (sensor space when ``pattern`` is None).
    pattern : array, shape (n_components, n_channels) | None
        Sensor pattern of each component.
    """

    start: int
    waveform: np.ndarray
    pattern: np.ndarray | None = None

    @property
    def stop(self) -> int:
        """Sample index just after the waveform's last sample."""
        return self.start + self.waveform.shape[0]


@dataclass
class Trial:
    """One sentence of a task: its samples, markers, additive events and ground truth.

    ``markers`` are ``(sample, value)`` pairs; every event starts at or after ``start`` and
    ``stop`` is where the next trial may begin. ``truth`` is the trial's ground truth (times in
    seconds from the first sample); ``spans`` are the ``(start, stop)`` sample ranges over which
    the evoked RMS of the SNR is measured.
    """

    start: int
    stop: int
    markers: list[tuple[int, str]]
    events: list[Event]
    truth: dict = field(default_factory=dict)
    spans: list[tuple[int, int]] = field(default_factory=list)


class EventQueue:
    """Events waiting to be rendered, in order of their start sample."""

    def __init__(self) -> None:
        self._pending: deque[Event] = deque()
        self._active: list[Event] = []

    def extend(self, events: Iterable[Event]) -> None:
        """Queue events; each must start no earlier than the previously queued ones."""
        for event in sorted(events, key=lambda e: e.start):
            if self._pending and event.start < self._pending[-1].start:
                raise RuntimeError("Events must be queued in order of their start sample.")
            self._pending.append(event)

    def render(self, out: np.ndarray, block_start: int, scale: float = 1.0) -> None:
        """Add ``scale`` times every event overlapping ``out``'s samples to ``out`` in place."""
        block_stop = block_start + out.shape[0]
        while self._pending and self._pending[0].start < block_stop:
            self._active.append(self._pending.popleft())
        for event in self._active:
            first = max(event.start, block_start)
            last = min(event.stop, block_stop)
            if last <= first:
                continue
            segment = event.waveform[first - event.start : last - event.start]
            if event.pattern is not None:
                # einsum, not BLAS: multithreaded BLAS stalls on small products when cores are busy
                segment = np.einsum("tk,kc->tc", segment, event.pattern)
            out[first - block_start : last - block_start] += scale * segment
        self._active = [event for event in self._active if event.stop > block_stop]

    def discard_until(self, sample: int) -> None:
        """Forget every event that ends at or before ``sample`` without rendering it."""
        while self._pending and self._pending[0].start < sample:
            self._active.append(self._pending.popleft())
        self._active = [event for event in self._active if event.stop > sample]
