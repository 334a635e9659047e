"""The base class of LSL consumers: inlet, worker thread, clock offset, loss and reconnection.

:class:`InletWorker` is the one place that owns an inlet's life: resolving the stream, opening
the inlet, measuring its clock offset, the worker thread, loss detection and reconnection, and the
handling of worker errors. :class:`~acquisition.stream.StreamSource`,
:class:`~acquisition.markers.MarkerSource` and the recorder's streams only say how to validate a
stream and what to do with each pulled chunk. Timestamps reach them as LSL delivers them; each
decides what to do with the measured clock offset (the sources add it, the recorder writes it to
the file beside the raw timestamps).

Inlets are opened with ``recover=False``. liblsl's own recovery (``recover=True``) reconnects
silently, without any signal to the application, and to any stream that answers the query, so a
consumer could neither report the loss within a second, nor reset its dejitter and measure the
outage, nor refuse a stream that came back with another channel count or rate. Here a lost
connection raises ``LostError`` at once (the outlet's TCP connection closes when its process
dies); the worker then marks the stream lost, keeps its buffer, and asks the network every
0.2 s for a compatible stream with the same ``source_id``, name and type, and reopens it. A
fresh query each time, not a ``ContinuousResolver``: that one re-queries on its own schedule
and found a restarted outlet ~1.1 s after it was up, a one-shot query answers within
milliseconds. Data flows as soon as the inlet is open: the new clock offset is measured in the
background (liblsl needs ~0.6 s for it) and used from then on.

The first connection waits for the clock offset (~0.6 s) before it hands out any sample, as the
offset is what puts the stream's timestamps on this machine's clock; the samples wait meanwhile in
liblsl's inlet buffer, so none is lost. The exception is an outlet on this host (its
``hostname`` is this machine's): LSL's clock is the operating system's monotonic clock, which all
processes of one host share, so the offset is 0 by construction. Such a stream flows at once with
offset 0 and the measurement runs in the background as after a reconnection; when it arrives it
is used, and a measured offset further than :data:`SAME_HOST_TOLERANCE_S` from 0 (two machines
with one name) is reported. That takes the 0.6 s off the start of every session whose amplifier
or player runs on the decoding machine, the usual lab set-up. The recorder, which never applies
the offset but writes each measurement beside the raw timestamps, still waits for the first one
(``_same_host_clock``), so every file holds one.
"""

from __future__ import annotations

import logging
import socket
import threading
import warnings
from abc import ABC, abstractmethod

import pylsl
from pylsl.util import LostError
from pylsl.util import TimeoutError as LSLTimeoutError

from acquisition._env import raise_stream_errors
from acquisition._lsl import (
    HAS_MIN_SAMPLES,
    StreamNotFoundError,
    describe,
    query_predicate,
    resolve_stream,
)

logger = logging.getLogger(__name__)

#: A stream from this host whose measured clock offset is further from 0 than this (seconds) is
#: reported: its outlet's machine has this machine's name but not its clock.
SAME_HOST_TOLERANCE_S = 0.005

#: Seconds between two asks for a clock offset still being measured. Each ask that finds none
#: raises in pylsl; asked on every pull, that took 0.27 s of the inlet worker in a 300 s max-speed
#: replay (py-spy).
_PENDING_POLL_S = 0.02


def on_this_host(info: pylsl.StreamInfo) -> bool:
    """Whether the outlet of ``info`` runs on this machine (its clock is then ours)."""
    return bool(info.hostname()) and info.hostname() == socket.gethostname()


class InletWorker(ABC):
    """Base class of LSL consumers: one inlet, one worker thread, loss detection, reconnection.

    Subclasses implement :meth:`_check_info`, :meth:`_on_open` and :meth:`_pull`, and may override
    :meth:`_resolve`, :meth:`_prefer`, :meth:`_prepare`, :meth:`_on_clock_offset`, :meth:`_on_lost`,
    :meth:`_on_close` and the class attributes below.

    Error rule: an exception in the worker is logged with its traceback and marks the stream
    lost. When :func:`~acquisition._env.raise_stream_errors` is true (tests) the worker then ends
    and the error is re-raised from the next public call; otherwise the worker recovers by
    reconnecting.
    """

    #: What the consumer is called in messages.
    _what = "stream"
    #: Seconds between two refreshes of the clock offset.
    _clock_refresh_s = 5.0
    #: Seconds without data after which a regular stream is reported stalled.
    _stall_s = 1.0
    #: Whether a stream of this host flows at once on the assumed clock offset 0 (module
    #: docstring). A consumer that only records the measured offsets sets it False.
    _same_host_clock = True

    def __init__(
        self,
        name: str | None,
        stype: str | None,
        source_id: str | None,
        *,
        resolve_timeout: float,
        max_buflen: int,
        background: bool = True,
    ) -> None:
        self._query = (name, stype, source_id)
        query_predicate(name, stype, source_id)  # validate now, not at connect()
        if not resolve_timeout > 0:
            raise ValueError(
                f"Invalid value for 'resolve_timeout': {resolve_timeout!r}; it must be > 0 s."
            )
        self._resolve_timeout = float(resolve_timeout)
        self._max_buflen = int(max_buflen)
        self._background = bool(background)
        self._inlet: pylsl.StreamInlet | None = None
        self._info: pylsl.StreamInfo | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._state = "disconnected"
        self._reconnections = 0
        self._last_error: str | None = None
        self._pending_error: BaseException | None = None
        self._lost_pred: str | None = None
        self._rejected: set[str] = set()
        self._tc = 0.0
        self._tc_at = -float("inf")
        self._tc_pending = False
        self._tc_provisional = False  # offset 0 assumed for a stream of this host, not measured
        self._tc_asked_at = -float("inf")
        self._last_data_at = 0.0
        self._regular = False

    # ----------------------------------------------------------------- public lifecycle
    @property
    def info(self) -> pylsl.StreamInfo:
        """Full ``StreamInfo`` (with its description) of the connected stream."""
        if self._info is None:
            raise RuntimeError(f"connect() the {self._what} before reading its info.")
        return self._info

    @property
    def worker_thread(self) -> threading.Thread | None:
        """The worker thread while connected (for monitoring, e.g. its CPU time)."""
        return self._thread

    @property
    def state(self) -> str:
        """``"disconnected"``, ``"connected"``, ``"stalled"`` (no data lately) or ``"lost"``."""
        return self._state

    @property
    def clock_offset(self) -> float:
        """Seconds added to the stream's timestamps to put them on this machine's clock."""
        return self._tc

    @property
    def clock_offset_measured(self) -> bool:
        """False while a stream of this host runs on the assumed offset 0 (module docstring)."""
        return not self._tc_provisional

    @property
    def connected(self) -> bool:
        """Whether the inlet is open and data is flowing (False while lost or stalled)."""
        return self._state == "connected"

    def connect(self) -> InletWorker:
        """Resolve the stream, open the inlet and start the worker; returns ``self``."""
        self._raise_pending()
        if self._state != "disconnected":
            warnings.warn(
                f"The {self._what} is already connected; connect() did nothing.",
                RuntimeWarning,
                stacklevel=2,
            )
            return self
        info = self._resolve()
        self._check_info(info)
        self._prepare(info)
        try:
            inlet, full = self._open_inlet(info)
        except (LostError, LSLTimeoutError) as exc:
            raise StreamNotFoundError(
                f"Found {describe(info)} but could not open it ({exc}). Check that its outlet "
                "is still running, then connect() again."
            ) from exc
        self._info = full
        self._regular = full.nominal_srate() > 0
        self._on_open(full, first=True)
        if self._same_host_clock and on_this_host(full):  # offset 0 now, measured meanwhile
            self._tc, self._tc_provisional = 0.0, True
            self._measure_first_clock_offset(inlet, wait=False)
        else:
            self._measure_first_clock_offset(inlet)
        self._inlet = inlet
        self._stop.clear()
        self._set_state("connected")
        self._last_data_at = pylsl.local_clock()
        if self._background:
            self._thread = threading.Thread(
                target=self._run, name=f"bci-app-{self._what}-{full.name()}", daemon=True
            )
            self._thread.start()
        logger.info("Connected %s: %s", self._what, describe(full))
        return self

    def disconnect(self) -> None:
        """Stop the worker and close the inlet; the buffered data stays readable."""
        if self._state == "disconnected":
            warnings.warn(
                f"The {self._what} is not connected; disconnect() did nothing.",
                RuntimeWarning,
                stacklevel=2,
            )
            self._raise_pending()
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
        self._on_close()
        if self._inlet is not None:
            self._inlet.close_stream()
        self._inlet = None
        self._lost_pred = None
        self._set_state("disconnected")
        self._raise_pending()

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc) -> None:
        if self._state != "disconnected":
            self.disconnect()

    # ----------------------------------------------------------------- subclass hooks
    def _resolve(self) -> pylsl.StreamInfo:
        """Find the stream to open on connect() (by default: resolve the query)."""
        return resolve_stream(*self._query, self._resolve_timeout, self._prefer)

    def _prefer(self, info: pylsl.StreamInfo) -> bool:
        """Whether ``info`` is the preferred kind of stream when several match."""
        return True

    @abstractmethod
    def _check_info(self, info: pylsl.StreamInfo) -> None:
        """Raise ValueError if the stream cannot be consumed."""

    def _prepare(self, info: pylsl.StreamInfo) -> None:
        """Get ready for ``info``'s data on connect(), before the inlet opens and data flows."""

    @abstractmethod
    def _on_open(self, info: pylsl.StreamInfo, first: bool) -> None:
        """Prepare for data from a newly opened inlet (``first`` on connect())."""

    @abstractmethod
    def _pull(self, inlet: pylsl.StreamInlet, timeout: float) -> int:
        """Pull and handle what is available; return the number of samples received."""

    def _on_clock_offset(self, offset: float) -> None:
        """Called with each clock offset measured (``local_clock() - remote clock``, seconds)."""

    def _on_lost(self) -> None:
        """Called when the connection is lost (from the worker)."""

    def _on_close(self) -> None:
        """Called by disconnect() once the worker has stopped."""

    # ----------------------------------------------------------------- worker
    def _set_state(self, state: str) -> None:
        self._state = state

    def _raise_pending(self) -> None:
        err, self._pending_error = self._pending_error, None
        if err is not None:
            raise err

    def _open_inlet(self, info: pylsl.StreamInfo) -> tuple[pylsl.StreamInlet, pylsl.StreamInfo]:
        """Open an inlet on ``info`` (see the module docstring for ``recover=False``)."""
        inlet = pylsl.StreamInlet(info, max_buflen=self._max_buflen, recover=False)
        full = inlet.info(timeout=2.0)
        inlet.open_stream(timeout=2.0)
        return inlet, full

    def _measure_first_clock_offset(self, inlet: pylsl.StreamInlet, *, wait: bool = True) -> None:
        """Measure the clock offset of a newly opened inlet (liblsl needs about 0.5 s for it).

        ``wait=False`` (a reconnection, or a stream of this host): keep the offset known so far
        and let the worker pick up the new one as soon as liblsl has it, so data flows at once.
        """
        self._tc_at = pylsl.local_clock()
        self._tc_pending = not wait
        if not wait:
            return
        try:
            self._tc = inlet.time_correction(timeout=2.0)
        except (LSLTimeoutError, LostError):
            logger.warning(
                "No clock offset for %s yet; keeping %.6f s for now.",
                describe(self._info),
                self._tc,
            )
            return
        self._on_clock_offset(self._tc)

    def _run(self) -> None:
        timeout = 0.05 if HAS_MIN_SAMPLES else 0.0
        while not self._stop.is_set():
            try:
                self._step(timeout)
            except Exception as exc:
                self._fail(exc)
                if self._pending_error is not None:
                    return
                self._stop.wait(0.5)

    def _step(self, timeout: float) -> int:
        """Do one unit of work: pull from the inlet, or look for the lost stream."""
        inlet = self._inlet
        if inlet is None:
            self._try_reconnect()
            return 0
        try:
            self._refresh_clock(inlet)
            n = self._pull(inlet, timeout)
        except LostError:
            self._mark_lost()
            return 0
        self._watch_stall(n)
        if n == 0 and not HAS_MIN_SAMPLES and self._background:
            self._stop.wait(0.002)
        return n

    def _refresh_clock(self, inlet: pylsl.StreamInlet) -> None:
        """Update the clock offset every few seconds (instant once liblsl has an estimate)."""
        now = pylsl.local_clock()
        if self._tc_pending:  # after a reconnection: ask without waiting until liblsl has it
            if now - self._tc_asked_at < _PENDING_POLL_S:
                return
            self._tc_asked_at = now
            try:
                self._tc = inlet.time_correction(timeout=0.0)
            except LSLTimeoutError:
                return
            self._tc_pending, self._tc_at = False, now
            self._check_provisional()
            self._on_clock_offset(self._tc)
            return
        if now - self._tc_at <= self._clock_refresh_s:
            return
        self._tc_at = now
        try:
            self._tc = inlet.time_correction(timeout=0.2)
        except LSLTimeoutError:
            logger.debug("No new clock offset for %r; keeping %.6f s.", self._info.name(), self._tc)
            return
        self._on_clock_offset(self._tc)

    def _check_provisional(self) -> None:
        """Report a stream of this host whose measured offset is not the assumed 0."""
        if not self._tc_provisional:
            return
        self._tc_provisional = False
        if abs(self._tc) > SAME_HOST_TOLERANCE_S:
            logger.warning(
                "%s %r says it runs on this host (%s) but its clock is %.6f s off ours: its "
                "first samples were stamped with offset 0, the measured offset is used from now "
                "on. Give the two machines different host names.",
                self._what,
                self._info.name(),
                self._info.hostname(),
                self._tc,
            )

    def _watch_stall(self, n: int) -> None:
        now = pylsl.local_clock()
        if n:
            self._last_data_at = now
            if self._state == "stalled":
                logger.warning("%s %r: data flows again.", self._what, self._info.name())
                self._set_state("connected")
        elif (
            self._state == "connected"
            and self._regular
            and now - self._last_data_at > self._stall_s
        ):
            logger.warning(
                "%s %r: no data for %.1f s (outlet stalled or unreachable).",
                self._what,
                self._info.name(),
                now - self._last_data_at,
            )
            self._set_state("stalled")

    def _mark_lost(self) -> None:
        info = self._info
        self._inlet = None
        pred = query_predicate(info.name(), info.type(), info.source_id() or None)
        # say it before anything slow (the resolver below takes a while to start)
        logger.warning(
            "%s lost: %s. The buffer is kept; waiting for a stream matching %s to reconnect.",
            self._what.capitalize(),
            describe(info),
            pred,
        )
        self._set_state("lost")
        self._on_lost()
        self._lost_pred = pred
        self._rejected.clear()

    def _compatible(self, candidate: pylsl.StreamInfo) -> str | None:
        """Return why ``candidate`` cannot replace the lost stream, or None if it can."""
        old = self._info
        for what, a, b in (
            ("channel count", old.channel_count(), candidate.channel_count()),
            ("sampling rate", old.nominal_srate(), candidate.nominal_srate()),
            ("channel format", old.channel_format(), candidate.channel_format()),
        ):
            if a != b:
                return f"its {what} is {b} instead of {a}"
        return None

    def _candidates(self) -> list[pylsl.StreamInfo]:
        """Streams that may replace the lost one: the first to answer, else all that do."""
        found = pylsl.resolve_bypred(self._lost_pred, 1, 0.2)
        if found and all(self._compatible(info) is not None for info in found):
            found = pylsl.resolve_bypred(self._lost_pred, 0, 0.3)  # another may be there too
        return found

    def _try_reconnect(self) -> None:
        if self._lost_pred is None:
            self._stop.wait(0.05)
            return
        for candidate in self._candidates():
            reason = self._compatible(candidate)
            if reason is not None:
                if candidate.uid() not in self._rejected:
                    self._rejected.add(candidate.uid())
                    self._last_error = f"Not reconnecting to {describe(candidate)}: {reason}."
                    logger.warning(self._last_error)
                continue
            try:
                inlet, full = self._open_inlet(candidate)
            except (LostError, LSLTimeoutError):
                continue  # it went away again before we could open it
            if self._stop.is_set():
                inlet.close_stream()
                return  # disconnect() was called meanwhile
            self._on_open(full, first=False)
            self._info = full
            self._measure_first_clock_offset(inlet, wait=False)
            self._inlet = inlet
            self._lost_pred = None
            self._reconnections += 1
            self._last_data_at = pylsl.local_clock()
            self._set_state("connected")
            logger.warning("%s reconnected: %s", self._what.capitalize(), describe(full))
            return
        if self._background:
            self._stop.wait(0.05)

    def _fail(self, exc: BaseException) -> None:
        """Log a worker error, mark the stream lost, and store the error or start recovering."""
        logger.exception("%s worker failed: %r", self._what.capitalize(), exc)
        self._last_error = f"{type(exc).__name__}: {exc}"
        if raise_stream_errors():
            self._inlet = None
            self._set_state("lost")
            self._pending_error = exc
        else:
            self._mark_lost()
