"""Live LSL data stream -> ring buffer, with clock correction, dejitter, gaps and health.

:class:`StreamSource` resolves one regular-rate numeric LSL stream, and one worker thread pulls
its chunks straight into a preallocated numpy array, corrects them to the local clock, dejitters
the timestamps (:mod:`acquisition.dejitter`), flags samples holding NaN/Inf as invalid, detects
gaps, and appends everything to a :class:`~acquisition.ringbuffer.RingBuffer`. Readers use
:attr:`StreamSource.buffer` (``read_since`` / ``read_latest``) and :meth:`StreamSource.health`.
"""

from __future__ import annotations

import collections
import logging
import math
import numbers
import threading
from dataclasses import dataclass

import numpy as np
import pylsl

from acquisition._inlet_worker import InletWorker
from acquisition._lsl import NUMPY_DTYPES, StreamNotFoundError, describe, format_name, pull_into
from acquisition.channels import ChannelSpec, channels_from_info
from acquisition.dejitter import Dejitter, Gap, RateMonitor
from acquisition.ringbuffer import RingBuffer

__all__ = ["Gap", "StreamHealth", "StreamNotFoundError", "StreamSource"]

logger = logging.getLogger(__name__)

_N_RECENT_GAPS = 100
_N_LATENCIES = 8192
_RATE_WINDOW_S = 2.0
#: Held rows (see Dejitter.process) are written anyway after this long without new data.
_HOLD_S = 0.5
#: Gap warnings logged one by one per ``_GAP_LOG_PERIOD_S``; the rest are summed up in one line
#: (a stream that breaks every chunk must not bury the log: health() counts every gap).
_GAP_LOG_BURST = 5
_GAP_LOG_PERIOD_S = 10.0


@dataclass(frozen=True)
class StreamHealth:
    """Snapshot of a stream source's health.

    Attributes
    ----------
    connected : bool
        Inlet open and data flowing.
    state : str
        ``"connected"``, ``"stalled"`` (no data for a second), ``"lost"`` (outlet gone, waiting
        for it to return) or ``"disconnected"``.
    sfreq : float
        Nominal sampling rate (Hz).
    effective_rate : float
        Samples per second of the stream's own timestamps over the last couple of seconds (NaN
        before that).
    n_samples : int
        Samples received since connect().
    dropped_samples : int
        Samples missing according to the gaps.
    n_gaps : int
        Gaps since connect(); the most recent are in ``gaps``.
    gaps : tuple of Gap
        The most recent gaps, oldest first.
    lag_s : float
        Local clock now minus the timestamp of the newest sample (NaN before any).
    n_invalid_samples : int
        Samples that held NaN or Inf (kept, flagged invalid in the buffer).
    reconnections : int
        Times the stream came back after being lost.
    last_error : str | None
        The most recent error, if any.
    rate_mismatch : str | None
        ``"effective rate X Hz, nominal Y Hz"`` while the stream has been sending at another
        rate than it declares for several seconds (:class:`~acquisition.dejitter.RateMonitor`),
        else None. Data at a wrong rate is not decodable as it is: consumers act on this.
    rate_known : bool
        Whether enough of the stream was measured since it (re)connected for ``rate_mismatch``
        to be meaningful.
    """

    connected: bool
    state: str
    sfreq: float
    effective_rate: float
    n_samples: int
    dropped_samples: int
    n_gaps: int
    gaps: tuple[Gap, ...]
    lag_s: float
    n_invalid_samples: int
    reconnections: int
    last_error: str | None
    rate_mismatch: str | None = None
    rate_known: bool = False


class StreamSource(InletWorker):
    """Acquire a regular-rate numeric LSL stream into a ring buffer, with health monitoring.

    Parameters
    ----------
    name, stype, source_id : str | None
        Stream query; every given property must match. A unique ``source_id`` is the safest.
    bufsize : float
        Seconds of data the ring buffer keeps.
    expected_channels : int | None
        If set, connecting to a stream with another channel count raises ValueError.
    expected_sfreq : float | None
        If set, connecting to a stream with another nominal rate raises ValueError.
    resolve_timeout : float
        Seconds to wait for the stream in :meth:`connect`.
    dejitter : bool
        Write dejittered timestamps (True) or clock-corrected raw ones (False) to the buffer.
        Gaps are detected either way.

    Examples
    --------
    >>> with StreamSource(source_id="amp-1234", expected_channels=64) as src:  # doctest: +SKIP
    ...     new = src.buffer.read_since(0)  # new.data, new.timestamps, new.next_counter, ...
    ...     print(src.health())
    """

    _what = "stream"

    def __init__(
        self,
        name: str | None = None,
        stype: str | None = None,
        source_id: str | None = None,
        *,
        bufsize: float = 30.0,
        expected_channels: int | None = None,
        expected_sfreq: float | None = None,
        resolve_timeout: float = 5.0,
        dejitter: bool = True,
    ) -> None:
        if not (isinstance(bufsize, numbers.Real) and bufsize > 0):
            raise ValueError(
                f"Invalid value for 'bufsize': {bufsize!r}; give the seconds of data to keep "
                "(> 0), e.g. 30.0."
            )
        if expected_channels is not None and (
            int(expected_channels) != expected_channels or expected_channels < 1
        ):
            raise ValueError(
                f"Invalid value for 'expected_channels': {expected_channels!r}; it must be a "
                "positive integer or None."
            )
        if expected_sfreq is not None and not expected_sfreq > 0:
            raise ValueError(
                f"Invalid value for 'expected_sfreq': {expected_sfreq!r}; it must be > 0 Hz or "
                "None."
            )
        super().__init__(
            name,
            stype,
            source_id,
            resolve_timeout=resolve_timeout,
            max_buflen=max(10, math.ceil(bufsize)),
        )
        self._bufsize = float(bufsize)
        self._expected_channels = expected_channels
        self._expected_sfreq = expected_sfreq
        self._use_dejitter = bool(dejitter)
        self._buffer: RingBuffer | None = None
        self._channels: ChannelSpec | None = None
        self._stats_lock = threading.Lock()

    # ----------------------------------------------------------------- public
    @property
    def buffer(self) -> RingBuffer:
        """The ring buffer the worker writes to (kept across losses and reconnections)."""
        if self._buffer is None:
            raise RuntimeError("connect() the stream before reading its buffer.")
        return self._buffer

    @property
    def channels(self) -> ChannelSpec:
        """Channel names, types, units and positions from the stream's metadata."""
        if self._channels is None:
            raise RuntimeError("connect() the stream before reading its channels.")
        return self._channels

    @property
    def sfreq(self) -> float:
        """Nominal sampling rate of the stream (Hz)."""
        return self.info.nominal_srate()

    @property
    def rate_check_s(self) -> float:
        """Seconds of stream time it takes to tell whether the stream keeps its declared rate."""
        monitor = getattr(self, "_rate_monitor", None) or RateMonitor(1.0)
        return monitor.window_s * monitor.confirm

    def health(self) -> StreamHealth:
        """Return a snapshot of the stream's health; re-raises a stored worker error."""
        self._raise_pending()
        if self._buffer is None:
            raise RuntimeError("connect() the stream before asking for its health.")
        with self._stats_lock:
            monitor = self._rate_monitor
            rate = monitor.rate if monitor.n_windows else self._rate
            if math.isnan(rate) and self._win_n and self._last_fit > self._win_start:
                rate = self._win_n / (self._last_fit - self._win_start)
            return StreamHealth(
                connected=self.connected,
                state=self._state,
                sfreq=self._sfreq,
                effective_rate=float(rate),
                n_samples=self._n_samples,
                dropped_samples=self._dropped,
                n_gaps=self._n_gaps,
                gaps=tuple(self._gaps),
                lag_s=pylsl.local_clock() - self._last_ts if self._n_samples else math.nan,
                n_invalid_samples=self._n_invalid,
                reconnections=self._reconnections,
                last_error=self._last_error,
                rate_mismatch=monitor.mismatch,
                rate_known=monitor.known,
            )

    def chunk_latencies(self, since: int = 0) -> tuple[np.ndarray, int]:
        """Seconds from each chunk's newest sample time to the chunk's arrival in the buffer.

        Both ends are on the local LSL clock (the sample time is clock-corrected, not
        dejittered). The log keeps the most recent 8192 chunks.

        Parameters
        ----------
        since : int
            Number of the first chunk wanted (the count returned by the previous call).

        Returns
        -------
        latencies : array, shape (n,)
            Latencies of chunks ``since`` onwards still in the log, oldest first.
        n_chunks : int
            Chunks received so far; pass it as ``since`` next time.
        """
        with self._stats_lock:
            total = self._n_chunks
            first = max(int(since), total - _N_LATENCIES, 0)
            idx = np.arange(first, total) % _N_LATENCIES
            return self._latencies[idx].copy(), total

    def __repr__(self) -> str:
        if self._info is None:
            return f"<StreamSource query={self._query} (never connected)>"
        return f"<StreamSource {describe(self._info)} state={self._state}>"

    # ----------------------------------------------------------------- worker hooks
    def _prefer(self, info: pylsl.StreamInfo) -> bool:
        return info.channel_format() != pylsl.cf_string and info.nominal_srate() > 0

    def _check_info(self, info: pylsl.StreamInfo) -> None:
        if info.channel_format() not in NUMPY_DTYPES:
            raise ValueError(
                f"Invalid stream for StreamSource: {describe(info)} carries "
                f"{format_name(info.channel_format())} samples, but numeric data is expected. "
                "Use MarkerSource for marker or text streams, or query the numeric data stream "
                "(e.g. by its type as well as its source_id)."
            )
        sfreq = info.nominal_srate()
        if sfreq <= 0:
            raise ValueError(
                f"Invalid stream for StreamSource: {describe(info)} has an irregular rate "
                "(nominal_srate 0), but StreamSource needs a regular-rate data stream. Use "
                "MarkerSource for irregular streams."
            )
        n_ch = info.channel_count()
        if self._expected_channels is not None and n_ch != self._expected_channels:
            raise ValueError(
                f"Invalid value for 'expected_channels': the stream {info.name()!r} has {n_ch} "
                f"channels but {self._expected_channels} were expected. Connect to the right "
                f"stream, or pass expected_channels={n_ch} if that montage is intended."
            )
        exp = self._expected_sfreq
        if exp is not None and abs(sfreq - exp) > 1e-6 * exp:
            raise ValueError(
                f"Invalid value for 'expected_sfreq': the stream {info.name()!r} runs at "
                f"{sfreq:g} Hz but {exp:g} Hz was expected. Resample the stream at its source, "
                f"or pass expected_sfreq={sfreq:g} (and use decoders trained at that rate)."
            )

    def _prepare(self, info: pylsl.StreamInfo) -> None:
        # The ring buffer maps all its memory when made (see RingBuffer): done here, before the
        # inlet opens, so that it neither delays nor slows the data (the player of a replay only
        # starts pushing once the inlet opens). A live outlet's samples from before the inlet
        # opens are not received, as with any later connection.
        sfreq, n_ch = info.nominal_srate(), info.channel_count()
        capacity = max(1, math.ceil(self._bufsize * sfreq))
        buf = self._buffer
        if buf is None or buf.n_channels != n_ch or buf.capacity != capacity:
            self._buffer = RingBuffer(n_ch, capacity, dtype=np.float32)
            self._reset_stats(sfreq)

    def _on_open(self, info: pylsl.StreamInfo, first: bool) -> None:
        sfreq, n_ch = info.nominal_srate(), info.channel_count()
        if first:
            self._channels = channels_from_info(info)
            self._dejitter = Dejitter(sfreq)
            self._held: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
            self._held_at = 0.0
        else:
            self._dejitter.reset()
            channels = channels_from_info(info)
            if channels.names != self._channels.names:
                self._last_error = (
                    f"The stream {info.name()!r} came back with other channel names "
                    f"({channels.names[:3]}... instead of {self._channels.names[:3]}...); the "
                    "buffer keeps its columns, check the montage."
                )
                logger.warning(self._last_error)
                self._channels = channels
        self._dest = np.empty(
            (max(64, math.ceil(0.25 * sfreq)), n_ch), dtype=NUMPY_DTYPES[info.channel_format()]
        )
        self._restart_rate_window()

    def _on_lost(self) -> None:
        self._flush_held()
        with self._stats_lock:
            self._outage_from = self._last_raw if self._n_samples else None

    def _on_close(self) -> None:
        self._flush_held()

    def _pull(self, inlet: pylsl.StreamInlet, timeout: float) -> int:
        raw = pull_into(inlet, self._dest, timeout)
        n = raw.shape[0]
        if n == 0:
            if self._held is not None and pylsl.local_clock() - self._held_at > _HOLD_S:
                self._flush_held()
            return 0
        raw += self._tc
        self._watch_rate(n, float(raw[-1]))
        data = self._dest[:n]
        valid = np.isfinite(data).all(axis=1)
        n_invalid = n - int(np.count_nonzero(valid))
        fitted, gaps = self._dejitter.process(raw)
        if self._outage_from is not None:
            gaps.insert(0, self._outage_gap(raw[0]))
        if self._held is None and fitted.shape[0] == n:
            self._write(data, raw, valid, fitted=fitted)
        else:
            self._write(*self._with_held(data, raw, valid, fitted.shape[0]), fitted=fitted)
        self._record(n, n_invalid, gaps, fitted)
        return n

    def _with_held(
        self, data: np.ndarray, raw: np.ndarray, valid: np.ndarray, n_out: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prepend held rows, keep back all but the first ``n_out`` (the dejitter holds them)."""
        if self._held is not None:
            data, raw, valid = (
                np.concatenate(pair) for pair in zip(self._held, (data, raw, valid))
            )
        self._held = None
        if n_out < data.shape[0]:
            self._held = (data[n_out:].copy(), raw[n_out:].copy(), valid[n_out:].copy())
            self._held_at = pylsl.local_clock()
        return data[:n_out], raw[:n_out], valid[:n_out]

    def _flush_held(self) -> None:
        """Write held rows now (the stream stopped, was lost, or is being disconnected)."""
        if self._held is None:
            return
        fitted, gaps = self._dejitter.flush()
        (data, raw, valid), self._held = self._held, None
        self._write(data, raw, valid, fitted=fitted)
        self._record(0, 0, gaps, fitted)

    # ----------------------------------------------------------------- statistics
    def _reset_stats(self, sfreq: float) -> None:
        with self._stats_lock:
            self._sfreq = sfreq
            self._n_samples = self._n_invalid = self._dropped = self._n_gaps = 0
            self._gaps: collections.deque[Gap] = collections.deque(maxlen=_N_RECENT_GAPS)
            self._latencies = np.zeros(_N_LATENCIES)
            self._n_chunks = 0
            self._last_ts = self._last_raw = self._last_fit = math.nan
            self._outage_from: float | None = None
            self._rate = math.nan
            self._win_start, self._win_n = math.nan, 0
            self._rate_monitor = RateMonitor(sfreq)
            self._gap_log_at, self._gap_log_n, self._gap_log_skipped = -math.inf, 0, 0

    def _restart_rate_window(self) -> None:
        with self._stats_lock:
            self._win_start, self._win_n = math.nan, 0
            self._rate_monitor.reset()

    def _watch_rate(self, n: int, last_raw: float) -> None:
        """Feed the rate monitor; say it once when the stream is found off its rate, or back."""
        with self._stats_lock:
            change = self._rate_monitor.update(n, last_raw)
            words = self._rate_monitor.mismatch
        if change == "mismatch":
            self._last_error = (
                f"The stream {self._info.name()!r} does not send at its declared rate: {words}. "
                "Its data cannot be decoded as it is; set the device (or its LSL driver) to the "
                "rate it declares."
            )
            logger.warning(self._last_error)
        elif change == "cleared":
            logger.warning(
                "Stream %r: effective rate back to its nominal %g Hz.",
                self._info.name(),
                self._sfreq,
            )

    def _outage_gap(self, first_raw: float) -> Gap:
        """Gap between the last sample before a loss and the first one after reconnecting."""
        last, self._outage_from = self._outage_from, None
        duration = first_raw - last - 1.0 / self._sfreq
        n_missing = max(0, round(duration * self._sfreq))
        return Gap(float(last + 1.0 / self._sfreq), float(duration), n_missing, "outage")

    def _check_rate(self, last: float, n: int, had_gap: bool) -> Gap | None:
        """Compare samples written with the nominal rate over the last couple of seconds.

        The span is measured on the fitted line, so single late stamps do not count; samples
        lost a few at a time (too few to show as a jump) tilt the line and show here.
        """
        if had_gap or math.isnan(self._win_start):
            self._win_start, self._win_n = last, 0
            return None
        self._win_n += n
        span = last - self._win_start
        if span < _RATE_WINDOW_S:
            return None
        expected = span * self._sfreq
        deficit = expected - self._win_n
        tolerance = 2.0 + 0.002 * expected + 2.0 * self._dejitter.tolerance * self._sfreq
        self._rate = self._win_n / span
        start = self._win_start
        self._win_start, self._win_n = last, 0
        if deficit > tolerance:
            return Gap(float(start), float(deficit / self._sfreq), round(deficit), "rate")
        return None

    def _write(
        self, data: np.ndarray, raw: np.ndarray, valid: np.ndarray, *, fitted: np.ndarray
    ) -> None:
        """Append rows to the buffer with dejittered (or raw) times; log their latency."""
        if data.shape[0] == 0:
            return
        ts = fitted if self._use_dejitter else raw
        self._buffer.write(data, ts, valid)
        arrived = pylsl.local_clock()
        with self._stats_lock:
            self._last_ts, self._last_raw = float(ts[-1]), float(raw[-1])
            self._last_fit = float(fitted[-1])
            self._latencies[self._n_chunks % _N_LATENCIES] = arrived - raw[-1]
            self._n_chunks += 1

    def _record(self, n: int, n_invalid: int, gaps: list[Gap], fitted: np.ndarray) -> None:
        """Update counters after ``n`` samples were pulled and ``fitted`` written (worker)."""
        with self._stats_lock:
            if fitted.size:
                rate_gap = self._check_rate(float(fitted[-1]), fitted.size, bool(gaps))
                if rate_gap is not None:
                    gaps.append(rate_gap)
            first_invalid = n_invalid and not self._n_invalid
            self._n_samples += n
            self._n_invalid += n_invalid
            for gap in gaps:
                self._gaps.append(gap)
                self._n_gaps += 1
                self._dropped += gap.n_missing
        self._log_gaps(gaps)
        if first_invalid:
            logger.warning(
                "Stream %r: samples with NaN/Inf values arrived; they are flagged invalid in the "
                "buffer and counted in health().n_invalid_samples.",
                self._info.name(),
            )

    def _log_gaps(self, gaps: list[Gap]) -> None:
        """Log gaps one by one, at most ``_GAP_LOG_BURST`` per period; sum up the rest."""
        now = pylsl.local_clock()
        if now - self._gap_log_at > _GAP_LOG_PERIOD_S:
            if self._gap_log_skipped:
                logger.warning(
                    "Stream %r: %d more gaps in the last %.0f s (not logged one by one; "
                    "health() counts every gap).",
                    self._info.name(),
                    self._gap_log_skipped,
                    now - self._gap_log_at,
                )
            self._gap_log_at, self._gap_log_n, self._gap_log_skipped = now, 0, 0
        for gap in gaps:
            if self._gap_log_n >= _GAP_LOG_BURST:
                self._gap_log_skipped += 1
                continue
            self._gap_log_n += 1
            logger.warning(
                "Stream %r: %s gap at t=%.3f s, %.4f s, %d samples missing.",
                self._info.name(),
                gap.kind,
                gap.start,
                gap.duration,
                gap.n_missing,
            )
