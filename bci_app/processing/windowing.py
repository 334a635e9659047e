"""Cut preprocessed streams into windows: locked to markers (keystrokes, words) or sliding.

Both windowers take processed chunks with :meth:`push_data` and markers with
:meth:`push_markers`, in any interleaving, and return every window the call completes. They keep a
ring-buffer history, so markers may arrive late (up to ``history_s``).

Alignment rule (event windows): the marker's *anchor* is the held sample whose timestamp is
nearest to the marker time (ties go to the earlier sample), as MNE turns events into sample
indices. The window is the ``n_times = round((tmax - tmin) * sfreq)`` consecutive samples that
start ``round(tmin * sfreq)`` samples from the anchor: the half-open span ``[tmin, tmax)``, e.g.
25 samples for -0.2..+0.3 s at 50 Hz. It is emitted as soon as its last sample has arrived (and a
sample at or after the marker time exists), never before. ``t_complete`` is the timestamp of that
last sample, the sample time at which the window became complete when the marker was on time.

Baseline: ``(a, b)`` in seconds relative to the anchor (window start for sliding windows), half-
open like the window, None meaning the window edge; the per-channel mean over it is subtracted,
then values are clipped to ``[-clamp, clamp]``. The default ``(None, 0.0)`` with ``tmin=-0.2`` is
the first 0.2 s of the window, the Brain2Qwerty baseline of DESIGN.md.

A window is ``valid`` when all its samples are valid, its timestamps are regular (every step
within half a period of ``1 / sfreq``) and, for event windows, the anchor lies within one period
of the marker. Markers whose window begins before the held history (or the first sample) are
dropped and counted.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from acquisition.recording import Marker, Recording, parse_marker
from bci_app.processing.preprocessing import PreprocessConfig, preprocess_recording
from bci_app.processing.sample_history import SampleHistory
from bci_app.processing.stages import check_chunk


@dataclass(frozen=True, eq=False)
class Window:
    """One window of preprocessed signal, ready for a decoder.

    Attributes
    ----------
    data : array, shape (n_channels, n_times), float32
        Baseline-corrected, clamped samples.
    timestamps : array, shape (n_times,)
        Time of each sample (stream clock).
    marker : Marker | None
        The marker it is locked to (None for sliding windows).
    valid : bool
        False when it overlaps invalid samples, a gap, or a marker far from any sample.
    t_complete : float
        Timestamp of its last sample.
    """

    data: np.ndarray
    timestamps: np.ndarray
    marker: Marker | None
    valid: bool
    t_complete: float

    @property
    def time(self) -> float:
        """The window's event time: its marker's, else when it completed (sliding windows)."""
        return self.t_complete if self.marker is None else self.marker.timestamp


class _Windower(ABC):
    """Shared part: history, chunk checks, baseline + clamp, building windows."""

    def __init__(
        self,
        sfreq: float,
        n_times: int,
        offset: int,
        baseline: tuple[float | None, float | None] | None,
        clamp: float | None,
        history_s: float,
    ) -> None:
        if not (np.isfinite(sfreq) and sfreq > 0):
            raise ValueError(f"Invalid value for 'sfreq': {sfreq!r}; it must be a positive rate.")
        if clamp is not None and not clamp > 0:
            raise ValueError(
                f"Invalid value for 'clamp': {clamp!r}; use a positive number or None."
            )
        if not history_s > 0:
            raise ValueError(f"Invalid value for 'history_s': {history_s!r}; it must be > 0.")
        self.sfreq, self.n_times, self.offset, self.clamp = float(sfreq), n_times, offset, clamp
        self.baseline = baseline
        self._baseline = self._baseline_slice(baseline)
        capacity = max(math.ceil(history_s * sfreq), 2 * (n_times + abs(offset)) + 2)
        self._history = SampleHistory(capacity)
        self._piece = capacity - n_times - abs(offset) - 1
        self.reset()

    def _baseline_slice(self, baseline: tuple | None) -> slice | None:
        if baseline is None:
            return None
        if len(baseline) != 2:
            raise ValueError(f"Invalid value for 'baseline': {baseline!r}; use (a, b) or None.")
        a, b = baseline
        lo = 0 if a is None else math.ceil(a * self.sfreq - self.offset - 1e-6)
        hi = self.n_times if b is None else math.ceil(b * self.sfreq - self.offset - 1e-6)
        if not 0 <= lo < hi <= self.n_times:
            span = (self.offset / self.sfreq, (self.offset + self.n_times) / self.sfreq)
            raise ValueError(
                f"Invalid value for 'baseline': {baseline!r} selects no samples of the window "
                f"[{span[0]:g}, {span[1]:g}) s. Give an interval (a, b), a < b, inside the window."
            )
        return slice(lo, hi)

    def reset(self) -> None:
        """Forget all samples and counters."""
        self._history.reset()
        self.n_emitted = 0
        self.n_invalid = 0

    def restart(self, reason: str) -> int:
        """Start a new timeline (the stream's clock went back): forget the held samples.

        Counters are kept; markers still waiting for data are dropped with ``reason`` (event
        windows). Returns how many were dropped.
        """
        dropped = self.finish(reason)
        self._history.reset()
        return dropped

    @abstractmethod
    def finish(self, reason: str = "the data ended before the window was complete") -> int:
        """Declare the stream ended; return the markers dropped."""

    @property
    def next_due(self) -> float | None:
        """Stream time at which the next window will be complete, when known (else None)."""
        return None

    def push_data(
        self, data: np.ndarray, timestamps: np.ndarray, valid: np.ndarray | None = None
    ) -> list[Window]:
        """Add processed samples ``(n_times, n_channels)``; return the windows they complete."""
        data, timestamps, valid = check_chunk(data, timestamps, valid, dtype=np.float32)
        expected = self._history.n_channels
        if expected is not None and data.shape[1] != expected:
            raise ValueError(
                f"Invalid chunk: the windower holds {expected} channels but got {data.shape[1]}. "
                f"Push chunks from one preprocessed stream only."
            )
        last = self._history.last_timestamp
        if data.shape[0] and (
            (last is not None and timestamps[0] < last)
            or not (timestamps[1:] >= timestamps[:-1]).all()
        ):
            raise ValueError(
                "Invalid timestamps: they go backwards in this chunk or across chunks. Push the "
                "Preprocessor's output in order (it rejects backward timestamps itself)."
            )
        windows: list[Window] = []
        for start in range(0, data.shape[0], self._piece):
            stop = start + self._piece
            self._history.push(data[start:stop], timestamps[start:stop], valid[start:stop])
            windows += self._collect()
        return windows

    @abstractmethod
    def _collect(self) -> list[Window]:
        """Implemented by subclasses."""

    def _build(
        self, starts: np.ndarray, markers: Sequence[Marker | None], near: np.ndarray
    ) -> list[Window]:
        """Cut, baseline-correct and clamp the windows starting at ``starts`` (absolute)."""
        if len(starts) == 0:
            return []
        data, ts, valid = self._history.gather(starts, self.n_times)
        data = data.astype(np.float64)
        if self._baseline is not None:
            data -= data[:, self._baseline].mean(axis=1, keepdims=True)
        if self.clamp is not None:
            np.clip(data, -self.clamp, self.clamp, out=data)
        data = np.ascontiguousarray(data.transpose(0, 2, 1), dtype=np.float32)
        steps = np.diff(ts, axis=1) * self.sfreq
        regular = ((steps > 0.5) & (steps < 1.5)).all(axis=1)
        ok = valid.all(axis=1) & regular & near
        windows = [
            Window(data[i], ts[i], markers[i], bool(ok[i]), float(ts[i, -1]))
            for i in range(len(starts))
        ]
        self.n_emitted += len(windows)
        self.n_invalid += int((~ok).sum())
        return windows


class EventWindower(_Windower):
    """Windows locked to markers (keystrokes by default), emitted as soon as complete.

    Parameters
    ----------
    tmin, tmax : float
        Window span relative to the marker, half-open ``[tmin, tmax)`` (seconds).
    sfreq : float
        Rate of the processed stream (``Preprocessor.sfreq_out``).
    baseline : tuple | None
        ``(a, b)`` seconds relative to the marker (None = window edge), or None for none.
    clamp : float | None
        Clip after baseline correction.
    marker_filter : str | sequence of str | None
        Marker kinds to lock to (``"key"`` for ``key:<c>``); None takes every marker.
    history_s : float
        Seconds of samples kept for late markers.
    """

    def __init__(
        self,
        tmin: float = -0.2,
        tmax: float = 0.3,
        sfreq: float = 50.0,
        *,
        baseline: tuple[float | None, float | None] | None = (None, 0.0),
        clamp: float | None = 5.0,
        marker_filter: str | Sequence[str] | None = "key",
        history_s: float = 30.0,
    ) -> None:
        n_times = round((tmax - tmin) * sfreq)
        if not n_times >= 1:
            raise ValueError(
                f"Invalid window: tmin={tmin!r}, tmax={tmax!r} s at {sfreq!r} Hz gives "
                f"{n_times} samples. Use tmax > tmin by at least one sample period."
            )
        self.tmin, self.tmax = float(tmin), float(tmax)
        if isinstance(marker_filter, str):
            marker_filter = (marker_filter,)
        self.marker_filter = None if marker_filter is None else tuple(marker_filter)
        super().__init__(sfreq, n_times, round(tmin * sfreq), baseline, clamp, history_s)

    def reset(self) -> None:
        """Forget samples, pending markers and counters."""
        super().reset()
        self._pending: list[Marker] = []  # no sample at or after their time yet; sorted
        self._waiting: list[tuple[Marker, int, bool]] = []  # (marker, start, near) to complete
        self.dropped: list[tuple[Marker, str]] = []

    @property
    def n_dropped(self) -> int:
        """Markers whose window could not be cut (see :attr:`dropped` for the reasons)."""
        return len(self.dropped)

    @property
    def n_pending(self) -> int:
        """Markers waiting for their data."""
        return len(self._pending) + len(self._waiting)

    @property
    def next_due(self) -> float | None:
        """Stream time of the last sample of the next window (None: no marker waits).

        Exact on the sample grid once the marker's window start is known; before, the
        marker's time plus ``tmax`` less one sample.
        """
        if self._waiting:
            start = self._waiting[0][1]
            missing = start + self.n_times - self._history.n_total
            return self._history.last_timestamp + missing / self.sfreq
        if self._pending:
            return self._pending[0].timestamp + self.tmax - 1.0 / self.sfreq
        return None

    def push_markers(self, markers: Sequence[Marker]) -> list[Window]:
        """Add markers (any order, possibly late); return the windows that are already complete."""
        wanted = []
        for marker in markers:
            if not np.isfinite(marker.timestamp):
                raise ValueError(
                    f"Invalid marker {marker.value!r}: timestamp {marker.timestamp!r} is not "
                    f"finite. Markers need stream-clock times."
                )
            if self.marker_filter is None or parse_marker(marker.value)[0] in self.marker_filter:
                wanted.append(marker)
        if not wanted:
            return []
        self._pending = sorted(self._pending + wanted, key=lambda m: m.timestamp)
        return self._collect()

    def finish(self, reason: str = "the data ended before the window was complete") -> int:
        """Declare the stream ended: pending markers become dropped; return how many."""
        left = [m for m, _, _ in self._waiting] + self._pending
        for marker in sorted(left, key=lambda m: m.timestamp):
            self.dropped.append((marker, reason))
        self._pending, self._waiting = [], []
        return len(left)

    def _collect(self) -> list[Window]:
        newest = self._history.last_timestamp
        if self._pending and newest is not None and self._pending[0].timestamp <= newest:
            self._anchor(newest)
        n_total = self._history.n_total
        if not self._waiting or self._waiting[0][1] + self.n_times > n_total:
            return []
        done = [w for w in self._waiting if w[1] + self.n_times <= n_total]
        self._waiting = [w for w in self._waiting if w[1] + self.n_times > n_total]
        markers, starts, near = zip(*done)
        return self._build(np.array(starts), markers, np.array(near))

    def _anchor(self, newest: float) -> None:
        """Find the anchor sample of every pending marker that has data at or after its time."""
        history = self._history
        n_ready = next(
            (i for i, m in enumerate(self._pending) if m.timestamp > newest), len(self._pending)
        )
        ready, self._pending = self._pending[:n_ready], self._pending[n_ready:]
        held = history.timestamps()
        t = np.array([m.timestamp for m in ready])
        right = np.searchsorted(held, t)
        left = np.maximum(right - 1, 0)
        # Ties go to the earlier sample, within a tolerance of 0.1 % of a period: a replayed or
        # dejittered stream carries the same times plus an offset, and rounding must not flip a tie.
        tie_tol = 1e-3 / self.sfreq
        nearest = np.where((right > 0) & (t - held[left] <= held[right] - t + tie_tol), left, right)
        starts = history.oldest + nearest + self.offset
        too_old = (starts < history.oldest) | (t < held[0] - 0.5 / self.sfreq)
        near = np.abs(held[nearest] - t) <= 1.0 / self.sfreq
        reason = (
            "its window starts before the first sample"
            if history.oldest == 0
            else "its window starts before the retained history (raise history_s)"
        )
        self.dropped += [(m, reason) for m, old in zip(ready, too_old) if old]
        anchored = [
            (m, int(s), bool(n)) for m, s, n, old in zip(ready, starts, near, too_old) if not old
        ]
        self._waiting = sorted(self._waiting + anchored, key=lambda w: w[0].timestamp)


class SlidingWindower(_Windower):
    """Windows of ``length_s`` every ``hop_s``, from the first sample on, emitted when complete.

    Parameters
    ----------
    length_s, hop_s : float
        Window length and hop (rounded to whole samples).
    sfreq : float
        Rate of the processed stream.
    baseline : tuple | None
        ``(a, b)`` seconds from the window start (None = window edge), or None for none.
    clamp : float | None
        Clip after baseline correction.
    history_s : float | None
        Seconds of samples kept (None: twice the window).
    """

    def __init__(
        self,
        length_s: float,
        hop_s: float,
        sfreq: float,
        *,
        baseline: tuple[float | None, float | None] | None = None,
        clamp: float | None = None,
        history_s: float | None = None,
    ) -> None:
        n_times, hop = round(length_s * sfreq), round(hop_s * sfreq)
        if not (n_times >= 1 and hop >= 1):
            raise ValueError(
                f"Invalid window: length_s={length_s!r}, hop_s={hop_s!r} s at {sfreq!r} Hz give "
                f"{n_times} and {hop} samples; both must be at least one sample period."
            )
        self.length_s, self.hop_s, self.hop = float(length_s), float(hop_s), hop
        history = 2 * length_s if history_s is None else history_s
        super().__init__(sfreq, n_times, 0, baseline, clamp, history)

    def reset(self) -> None:
        """Forget samples and counters; windows restart at the next sample."""
        super().reset()
        self._next_window = 0

    def push_markers(self, markers: Sequence[Marker]) -> list[Window]:
        """Sliding windows are not locked to markers: accept and ignore them."""
        return []

    def finish(self, reason: str = "") -> int:
        """Declare the stream ended (nothing is pending for sliding windows); return 0."""
        return 0

    def restart(self, reason: str) -> int:
        """Start a new timeline: forget the held samples; windows restart at the next sample."""
        super().restart(reason)
        self._next_window = 0
        return 0

    def _collect(self) -> list[Window]:
        n_total = self._history.n_total
        last = (n_total - self.n_times) // self.hop
        if last < self._next_window:
            return []
        starts = np.arange(self._next_window, last + 1) * self.hop
        self._next_window = last + 1
        return self._build(starts, [None] * len(starts), np.ones(len(starts), dtype=bool))


def epochs_from_recording(
    recording: Recording,
    config: PreprocessConfig,
    windower: EventWindower | SlidingWindower,
    chunk_size: int | None = None,
) -> list[Window]:
    """Preprocess a recording and cut it into windows through the live code path.

    The recording goes through :func:`~bci_app.processing.preprocessing.preprocess_recording`; its
    markers
    and then the processed samples are pushed into ``windower`` (a fresh one), which is finished
    at the end, so ``windower.dropped`` lists the markers without a window.
    """
    if not np.isclose(windower.sfreq, config.rate_after, rtol=1e-9, atol=0):
        raise ValueError(
            f"Invalid value for 'windower': it cuts windows at {windower.sfreq} Hz but the "
            f"preprocessing outputs {config.rate_after} Hz. Build the windower with "
            f"sfreq={config.rate_after}."
        )
    processed = preprocess_recording(recording, config, chunk_size)
    windows = windower.push_markers(recording.markers)
    windows += windower.push_data(*processed)
    windower.finish()
    return windows


def stack_windows(windows: Sequence[Window]) -> tuple[np.ndarray, np.ndarray]:
    """Stack windows into ``(n_windows, n_channels, n_times)`` float32 and a valid mask."""
    if not windows:
        raise ValueError("Cannot stack an empty list of windows; check the markers and data.")
    return np.stack([w.data for w in windows]), np.array([w.valid for w in windows])
