"""Live wiring: stream source -> preprocessor -> windower, on one worker thread.

The acquisition worker (inside :class:`acquisition.stream.StreamSource`) writes into its ring
buffer; this pipeline's worker polls what is new (one numpy block per poll, never per sample) and
steps it: the same :class:`~bci_app.processing.preprocessing.Preprocessor` used offline, then the
windower, and each preprocessed chunk (``on_chunk``) and completed window (``on_window``) is handed
on with its stage times. :meth:`LivePipeline.step` takes the raw samples and markers as arguments,
so tests drive the whole chain, decoding included, by feeding chunks of a recording: no thread,
no LSL.

Timestamps that go back (the sender's clock stepped back, or a device sending faster than it
declares, whose chunks then overlap in time) start a new timeline: the samples before and after
such a break cannot be filtered or windowed together, so the pipeline restarts its preprocessor
and windower there (:meth:`LivePipeline.step`), counts the restart, and goes on. The stream
source reports the break as a ``backwards`` gap, which the decoding session marks in the text.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pylsl

from acquisition._env import raise_stream_errors
from acquisition.markers import MarkerSource
from acquisition.recording import Marker
from acquisition.stream import StreamSource
from bci_app.live.metrics import LatencyStats
from bci_app.processing.preprocessing import Preprocessor
from bci_app.processing.stages import Chunk
from bci_app.processing.windowing import EventWindower, SlidingWindower, Window

logger = logging.getLogger(__name__)

#: Seconds between two warnings about timeline restarts (a stream breaking every chunk would
#: otherwise write a line every few milliseconds; ``n_restarts`` counts them all).
_RESTART_LOG_PERIOD_S = 10.0


@dataclass(frozen=True)
class WindowEvent:
    """A completed window and when each stage finished with it (LSL local clock, seconds).

    ``n_following`` counts the windows completed in the same step after this one: more than 0
    only when several windows complete at once, as when a backlog is stepped (max-speed replay,
    a decoder catching up). A decoder may then do per-batch work once for all of them.
    """

    window: Window
    t_pulled: float
    t_preprocessed: float
    t_windowed: float
    n_following: int = 0
    #: ``time.thread_time()`` of the thread that pulled the samples, when it pulled them: the
    #: session's "pulled->emitted (cpu)" is the CPU time that thread spent from there on.
    cpu_pulled: float = math.nan


@dataclass(frozen=True)
class ChunkEvent:
    """A preprocessed chunk and when it was pulled and preprocessed (LSL local clock, seconds)."""

    chunk: Chunk
    t_pulled: float
    t_preprocessed: float
    cpu_pulled: float = math.nan  # as WindowEvent.cpu_pulled


class LivePipeline:
    """Run preprocessing and windowing on a live stream in a worker thread.

    Parameters
    ----------
    source : StreamSource | None
        A connected data stream, polled by the worker (None: :meth:`step` is fed by hand).
    preprocessor : Preprocessor
        Its ``config.sfreq_in`` must equal the stream's rate.
    windower : EventWindower | SlidingWindower | None
        Fed with the preprocessor's output and, for event windows, with the markers (None: no
        windows; ``on_chunk`` reads the continuous data).
    on_window : callable
        Called on the worker thread with each :class:`WindowEvent`; keep it short (hand work
        to a queue).
    markers : MarkerSource | None
        Marker stream polled with the data, for event windows.
    on_markers : callable | None
        Called on the worker thread with every batch of markers pulled (before the windows they
        complete), e.g. for sentence boundaries.
    on_chunk : callable | None
        Called on the worker thread with each non-empty :class:`ChunkEvent`, for decoders of
        continuous data (Brain2Qwerty v2) rather than windows.
    on_step : callable | None
        Called on the worker thread after each processed chunk with the timestamp of the newest
        preprocessed sample, e.g. to close a sentence once its last window is complete.
    on_idle : callable | None
        Called on the worker thread after a poll that found nothing new, before it waits for
        the stream: idle-time work (the live session keeps the decoder's graphs warm for a
        window about to complete). It returns the longest wait it wants before it is called
        again (seconds; None: ``poll_s``).
    poll_s : float
        Longest wait between polls when no new data has arrived; new samples in the source's
        buffer end the wait at once.
    max_markers_per_s : float
        Markers accepted per second of marker time; more are dropped and counted
        (``n_markers_dropped``). Nobody types or hears 50 events a second: a flood is a broken
        sender, and decoding a window per flooded marker would leave the data behind.
    """

    def __init__(
        self,
        source: StreamSource | None,
        preprocessor: Preprocessor,
        windower: EventWindower | SlidingWindower | None,
        on_window: Callable[[WindowEvent], None],
        *,
        markers: MarkerSource | None = None,
        on_markers: Callable[[list[Marker]], None] | None = None,
        on_chunk: Callable[[ChunkEvent], None] | None = None,
        on_step: Callable[[float], None] | None = None,
        on_idle: Callable[[], float | None] | None = None,
        poll_s: float = 0.005,
        max_markers_per_s: float = 50.0,
    ) -> None:
        if source is not None and (
            abs(preprocessor.config.sfreq_in - source.sfreq) > 1e-6 * source.sfreq
        ):
            raise ValueError(
                f"Invalid value for 'sfreq': the stream runs at {source.sfreq:g} Hz but the "
                f"preprocessor expects {preprocessor.config.sfreq_in:g} Hz. Build the "
                "preprocessor for the stream's rate."
            )
        self.source, self.preprocessor, self.windower = source, preprocessor, windower
        self.markers, self.on_window, self.poll_s = markers, on_window, float(poll_s)
        self.on_markers, self.on_chunk, self.on_step = on_markers, on_chunk, on_step
        self.on_idle = on_idle
        self.latency = LatencyStats()
        self.n_windows = 0
        self.n_invalid_windows = 0
        self.n_lost_samples = 0
        self.n_restarts = 0
        self.n_markers_dropped = 0
        self.max_markers_per_s = float(max_markers_per_s)
        self._recent_markers: collections.deque[float] = collections.deque()
        self._flood_logged_at = -math.inf
        self.error: BaseException | None = None
        self._last_t = math.nan
        self._restart_logged_at = -math.inf
        self._restarts_unlogged = 0
        # Start from the oldest sample the buffer still holds, so data that arrived while the
        # decoder was loading is processed too (and markers already queued find their data).
        self._counter = 0
        self._max_read = max(1000, round(source.sfreq)) if source is not None else None
        if source is not None:
            self._counter = max(0, source.buffer.n_written - source.buffer.capacity)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def n_processed(self) -> int:
        """Samples of the source's buffer this pipeline has read so far (a buffer counter)."""
        return self._counter

    def start(self) -> LivePipeline:
        """Start the worker thread (RuntimeError if already running)."""
        if self._thread is not None:
            raise RuntimeError("The pipeline is already running; stop() it first.")
        if self.source is None:
            raise RuntimeError(
                "The pipeline has no stream source to poll: give it a connected StreamSource, "
                "or feed it with step(data, timestamps, markers=...)."
            )
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bci-app-pipeline", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the worker (safe to call twice) and re-raise its error in tests."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.error is not None and raise_stream_errors():
            err, self.error = self.error, None
            raise err

    def __enter__(self) -> LivePipeline:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def poll(self) -> int:
        """Step whatever is new in the source's buffer and marker stream; return the windows.

        The new samples are stepped in pieces of at most ``max(1 s, 1000)`` samples (what
        :meth:`RingBuffer.read_since` says about large copies); the markers received so far are
        pulled before each piece, so they are known before any of the data that follows them,
        also when a backlog takes many pieces (at max-speed replay, markers taken once per poll
        arrived after their data had left the windower's history). Preprocessing and windows
        do not depend on how the samples are cut (chunked == one-shot).
        """
        buffer = self.source.buffer
        n_windows = 0
        while True:
            new_markers = self.markers.pull() if self.markers is not None else []
            new = buffer.read_since(self._counter, self._max_read)
            data, timestamps, valid, n_lost = new.data, new.timestamps, new.valid, new.n_lost
            self._counter = new.next_counter
            t_pulled, cpu_pulled = pylsl.local_clock(), time.thread_time()
            if n_lost:
                # The pipeline fell behind the ring buffer: the filters' history is broken, so
                # start them over rather than splice unrelated samples together.
                self.n_lost_samples += n_lost
                logger.warning("pipeline fell %d samples behind the buffer; filters reset", n_lost)
                self.preprocessor.reset()
            n_windows += self.step(
                data, timestamps, valid, new_markers, t_pulled=t_pulled, cpu_pulled=cpu_pulled
            )
            if len(timestamps) < self._max_read or self._stop.is_set():
                return n_windows

    def step(
        self,
        data: np.ndarray,
        timestamps: np.ndarray,
        valid: np.ndarray | None = None,
        markers: list[Marker] | tuple = (),
        *,
        t_pulled: float | None = None,
        cpu_pulled: float | None = None,
    ) -> int:
        """Preprocess, window and hand on raw samples and the markers that came with them.

        Parameters
        ----------
        data : array (n_times, n_channels)
            Raw samples of the stream (any number, 0 included).
        timestamps : array (n_times,)
            Their stream times (s).
        valid : array of bool | None
            Samples known to be bad (None: all valid).
        markers : list of Marker
            Markers received with these samples.
        t_pulled : float | None
            When the samples were pulled (LSL local clock; None: now).
        cpu_pulled : float | None
            ``time.thread_time()`` then, in the thread calling this (None: now).

        Returns
        -------
        int
            The number of windows completed and handed to ``on_window``.

        Notes
        -----
        Where a timestamp is earlier than the one before it (in this chunk or across chunks),
        the preprocessor and the windower restart (module docstring): samples are never filtered
        across the break, and markers still waiting for their data are dropped with the reason.
        """
        t_pulled = pylsl.local_clock() if t_pulled is None else t_pulled
        cpu_pulled = time.thread_time() if cpu_pulled is None else cpu_pulled
        pulled = (t_pulled, cpu_pulled)
        markers = self._throttle(list(markers))
        if markers and self.on_markers is not None:
            self.on_markers(markers)
        timestamps = np.asarray(timestamps, dtype=np.float64)
        previous = np.concatenate([[self._last_t], timestamps[:-1]])
        breaks = np.flatnonzero(timestamps < previous)  # NaN (no sample yet) compares False
        if len(timestamps):
            self._last_t = float(timestamps[-1])
        if breaks.size == 0:
            return self._step(data, timestamps, valid, markers, pulled)
        edges = [0, *breaks.tolist(), len(timestamps)]
        n_windows = 0
        for k, (a, b) in enumerate(itertools.pairwise(edges)):
            if k:
                self._restart(float(previous[a]), float(timestamps[a]))
            last = k == len(edges) - 2  # markers go with the newest data, after any restart
            part_valid = None if valid is None else valid[a:b]
            part_markers = markers if last else []
            n_windows += self._step(data[a:b], timestamps[a:b], part_valid, part_markers, pulled)
        return n_windows

    def _throttle(self, markers: list[Marker]) -> list[Marker]:
        """Keep at most ``max_markers_per_s`` markers in any second of marker time."""
        if not markers:
            return markers
        recent, kept = self._recent_markers, []
        for marker in markers:
            while recent and recent[0] <= marker.timestamp - 1.0:
                recent.popleft()
            if len(recent) < self.max_markers_per_s:
                recent.append(marker.timestamp)
                kept.append(marker)
        dropped = len(markers) - len(kept)
        if dropped:
            self.n_markers_dropped += dropped
            now = pylsl.local_clock()
            if now - self._flood_logged_at >= _RESTART_LOG_PERIOD_S:
                self._flood_logged_at = now
                logger.warning(
                    "Marker flood: more than %g markers a second; the extra ones are dropped "
                    "(%d so far). Check the marker sender.",
                    self.max_markers_per_s,
                    self.n_markers_dropped,
                )
        return kept

    def _restart(self, before: float, after: float) -> None:
        """Start a new timeline at a backwards step from ``before`` to ``after`` (seconds)."""
        self.n_restarts += 1
        self.preprocessor.reset()
        dropped = 0
        if self.windower is not None:
            dropped = self.windower.restart(
                "the stream's timestamps went back before its window was complete"
            )
        now = pylsl.local_clock()
        if now - self._restart_logged_at < _RESTART_LOG_PERIOD_S:
            self._restarts_unlogged += 1
            return
        more = self._restarts_unlogged
        self._restart_logged_at, self._restarts_unlogged = now, 0
        logger.warning(
            "Stream timestamps went back by %.3f s (from %.3f to %.3f s): preprocessing and "
            "windows restart there%s%s.",
            before - after,
            before,
            after,
            f", {dropped} marker(s) waiting for data dropped" if dropped else "",
            f"; {more} more such restart(s) since the last message" if more else "",
        )

    def _step(
        self,
        data: np.ndarray,
        timestamps: np.ndarray,
        valid: np.ndarray | None,
        markers: list[Marker],
        pulled: tuple[float, float],
    ) -> int:
        """Preprocess, window and hand on samples whose timestamps do not go back.

        ``pulled``: when they were pulled, LSL local clock and the thread's CPU time.
        """
        t_pulled, cpu_pulled = pulled
        windows: list[Window] = []
        if self.windower is not None:
            windows += self.windower.push_markers(markers)
        if len(timestamps) == 0 and not windows:
            return 0
        if len(timestamps):
            self.latency.add("sample->pulled", t_pulled - timestamps[-1])
        chunk = self.preprocessor.process(data, timestamps, valid)
        t_pre = pylsl.local_clock()
        if self.on_chunk is not None and len(chunk.timestamps):
            self.on_chunk(ChunkEvent(chunk, t_pulled, t_pre, cpu_pulled))
        if self.windower is not None:
            windows += self.windower.push_data(chunk.data, chunk.timestamps, chunk.valid)
        t_win = pylsl.local_clock()
        for k, window in enumerate(windows):
            self.n_windows += 1
            self.n_invalid_windows += not window.valid
            self.latency.add("window complete->windowed", t_win - window.t_complete)
            self.on_window(
                WindowEvent(window, t_pulled, t_pre, t_win, len(windows) - 1 - k, cpu_pulled)
            )
        if self.on_step is not None and len(chunk.timestamps):
            self.on_step(float(chunk.timestamps[-1]))
        return len(windows)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                before = self._counter
                self.poll()
                if self._counter == before:  # nothing new arrived (a step without a window
                    # does not count: at max speed that throttled replay to a poll per 5 ms);
                    # wake as soon as the stream writes, else after poll_s (markers, stop)
                    # or when the idle-time work asks to run again
                    wait = self.on_idle() if self.on_idle is not None else None
                    wait = self.poll_s if wait is None else min(wait, self.poll_s)
                    self.source.buffer.wait_for_new(self._counter, wait)
            except Exception as err:  # a failing worker never dies silently
                self.error = err
                logger.error("pipeline worker failed:\n%s", traceback.format_exc())
                if raise_stream_errors():
                    return
                self._stop.wait(0.1)


def window_summary(window: Window) -> dict:
    """JSON-friendly description of a window (for logs and the CLI)."""
    return {
        "marker": None if window.marker is None else window.marker.value,
        "t_marker": None if window.marker is None else window.marker.timestamp,
        "t_complete": window.t_complete,
        "valid": window.valid,
        "shape": list(window.data.shape),
        "rms": float(np.sqrt(np.mean(np.square(window.data, dtype=np.float64)))),
    }


def wait_for_data(
    source: StreamSource,
    seconds: float,
    stop: threading.Event,
    timeout: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wait for the newest ``seconds`` of a stream on one timeline at its declared rate.

    For fitting on live data (``bci-app run --no-decoder`` fits its scaler so): the samples
    returned never span a backwards timestamp step, and the stream's rate was measured first
    (:attr:`~acquisition.stream.StreamHealth.rate_known`), so data at the wrong rate is refused
    with the reason instead of being fitted.

    Parameters
    ----------
    source : StreamSource
        The connected stream.
    seconds : float
        Seconds of data wanted.
    stop : threading.Event
        Set to give up (Ctrl-C): raises KeyboardInterrupt.
    timeout : float | None
        Seconds to wait beyond the time the data itself takes (None: until ``stop``), so a
        stream that died never makes the wait endless.

    Returns
    -------
    data, timestamps, valid : arrays
        As :meth:`~acquisition.ringbuffer.RingBuffer.read_latest` returns them.

    Raises
    ------
    ValueError
        The stream does not send at its declared rate (the message names both rates).
    RuntimeError
        The data did not arrive within ``timeout`` (the message names the stream's state).
    KeyboardInterrupt
        ``stop`` was set.
    """
    need = max(1, int(seconds * source.sfreq))
    name = source.info.name()
    start = time.monotonic()
    takes = max(seconds, source.rate_check_s)  # the rate verdict needs a few seconds too
    deadline = math.inf if timeout is None else start + takes + timeout
    while True:
        health = source.health()
        if health.rate_mismatch is not None:
            raise ValueError(
                f"Cannot calibrate on the stream {name!r}: {health.rate_mismatch}. Its samples "
                "do not come at the rate it declares, so no filter or decoder can use them; set "
                "the device (or its LSL driver) to the rate it declares, then run again."
            )
        if source.buffer.n_available >= need and health.rate_known:
            data, timestamps, valid = source.buffer.read_latest(need)
            if (np.diff(timestamps) >= 0).all():
                return data, timestamps, valid
        if stop.is_set():
            raise KeyboardInterrupt
        if time.monotonic() >= deadline:
            have = min(source.buffer.n_available, need) / source.sfreq
            raise RuntimeError(
                f"The stream {name!r} did not bring {seconds:g} s of data on one timeline "
                f"within {time.monotonic() - start:.0f} s (it is {health.state}; "
                f"{have:.1f} s arrived, {health.n_gaps} gap(s)). Check its outlet, or run "
                "again with a longer --duration."
            )
        stop.wait(0.1)
