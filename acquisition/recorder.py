"""Record every LSL stream of a session (signals, markers, decoded text) to XDF, as LabRecorder.

Each stream is an :class:`~acquisition._inlet_worker.InletWorker` (one inlet, one worker thread)
that pulls chunks as numpy and writes them as XDF Samples chunks every ``flush_interval`` (at most
a second), a ClockOffset chunk for every clock offset it measures (every ``clock_interval``
seconds), Boundary chunks every ``boundary_interval``, and footers on :meth:`Recorder.stop`.
Timestamps are written as LSL delivers them, neither clock-corrected nor dejittered: XDF keeps the
raw timestamps with the offsets beside them, and readers (pyxdf) synchronise and dejitter. Each
chunk goes to disk in one write, so a recorder killed with SIGKILL loses at most the last
``flush_interval`` and the file still loads.

A stream that vanishes is recorded again when a compatible stream returns: InletWorker's rule,
inlets opened with ``recover=False`` and reopened by the worker. liblsl's ``recover=True`` is not
used here either: it reconnects without a word (the log could not say when a stream was lost and
when it came back), it cannot recover a stream without a source_id, and it would accept a stream
that returns with another channel count, rate or format, which the stream's XDF header, written
once, cannot describe. A write error (full disk) stops the recording, keeps what was written (the
file is cut back to its last complete chunk), logs the error and raises it from :meth:`stop`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pylsl
from pylsl.util import LostError

from acquisition._inlet_worker import InletWorker
from acquisition._lsl import HAS_MIN_SAMPLES, NUMPY_DTYPES, StreamNotFoundError, pull_into
from acquisition.recording import exists_error
from acquisition.xdf_writer import XdfWriter

logger = logging.getLogger(__name__)

_MAX_STRINGS = 1024  # marker samples pulled at most at once


class _RecordedStream(InletWorker):
    """One recorded stream: pulls into a preallocated buffer, writes it to the file in chunks."""

    _what = "recorded stream"
    _stall_s = 2.0
    # The file keeps the sender's own timestamps and every measured offset beside them; the
    # offset is never applied here, so connect() waits for the first measurement (the samples
    # wait in liblsl's buffer) and even a short recording holds one.
    _same_host_clock = False

    def __init__(self, recorder: Recorder, stream_id: int, info: pylsl.StreamInfo) -> None:
        super().__init__(
            info.name(),
            info.type(),
            info.source_id() or None,
            resolve_timeout=recorder.resolve_timeout,
            max_buflen=360,
        )
        self._recorder = recorder
        self._resolved = info
        self._clock_refresh_s = recorder.clock_interval
        self.stream_id = stream_id
        self.stream_name = info.name()
        self._data: np.ndarray | None = None  # numeric samples; None for a string stream
        self._times = np.empty(0)
        self._count = 0
        self._strings: list[list[str]] = []
        self._string_times: list[float] = []
        self._next_flush = 0.0

    def stop_soon(self) -> None:
        """Ask the worker to end at its next step; :meth:`disconnect` then joins it."""
        self._stop.set()

    def wait_for_return(self) -> None:
        """Start as a lost stream: write its header now, record it when it answers again.

        For a stream that was resolved but vanished before its inlet opened. The header is the
        resolved info's (no description); InletWorker's reconnection then opens it, as it would
        after a loss, if it returns with the same channel count, rate and format.
        """
        info = self._resolved
        self._info = info
        self._regular = info.nominal_srate() > 0
        self._on_open(info, first=True)
        self._mark_lost()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"bci-app-{self._what}-{info.name()}", daemon=True
        )
        self._thread.start()

    # ----------------------------------------------------------------- InletWorker hooks
    def _resolve(self) -> pylsl.StreamInfo:
        return self._resolved

    def _check_info(self, info: pylsl.StreamInfo) -> None:
        """Every stream can be recorded: numeric or string, regular or irregular."""

    def _on_open(self, info: pylsl.StreamInfo, first: bool) -> None:
        if not first:  # the same stream again (InletWorker checked its format): header kept
            return
        # on connect(), from Recorder.start(): a write error here fails start() itself
        self._recorder._writer.add_stream(self.stream_id, info.as_xml())
        if info.channel_format() != pylsl.cf_string:
            rate = info.nominal_srate() or 100.0
            capacity = max(64, int(4 * rate * self._recorder.flush_interval))
            dtype = NUMPY_DTYPES[info.channel_format()]
            self._data = np.empty((capacity, info.channel_count()), dtype=dtype)
            self._times = np.empty(capacity, dtype=np.float64)
        self._next_flush = time.monotonic() + self._recorder.flush_interval

    def _on_clock_offset(self, offset: float) -> None:
        collected_at = pylsl.local_clock() - offset  # on the stream's clock, as XDF wants it
        self._recorder._write(
            self.stream_name,
            self._recorder._writer.write_clock_offset,
            self.stream_id,
            collected_at,
            offset,
        )

    def _pull(self, inlet: pylsl.StreamInlet, timeout: float) -> int:
        n = self._pull_samples(inlet, timeout)
        if time.monotonic() >= self._next_flush or self._full():
            self._flush()
        self._recorder._maybe_write_boundary()
        return n

    def _on_lost(self) -> None:
        self._flush()

    def _on_close(self) -> None:
        """Write what arrived before stop(): drain the inlet, then flush."""
        inlet = self._inlet
        try:
            while inlet is not None:
                if self._full():
                    self._flush()
                if not self._pull_samples(inlet, 0.0):
                    break
        except LostError:
            pass  # nothing more will come; what was pulled is written below
        self._flush()

    # ----------------------------------------------------------------- buffer
    def _full(self) -> bool:
        return self._data is not None and self._count == len(self._data)

    def _pull_samples(self, inlet: pylsl.StreamInlet, timeout: float) -> int:
        """Pull what is available (waiting up to ``timeout``) into the buffer; return how many."""
        if self._data is None:
            kwargs = {"min_samples": 1} if timeout > 0 and HAS_MIN_SAMPLES else {}
            values, stamps = inlet.pull_chunk(timeout=timeout, max_samples=_MAX_STRINGS, **kwargs)
            self._strings += values
            self._string_times += list(stamps)
            return len(stamps)
        start = self._count
        if start == len(self._data):
            return 0
        stamps = pull_into(inlet, self._data[start:], timeout)
        self._times[start : start + stamps.shape[0]] = stamps
        self._count += stamps.shape[0]
        return stamps.shape[0]

    def _flush(self) -> None:
        """Write the buffered samples as one Samples chunk and empty the buffer."""
        self._next_flush = time.monotonic() + self._recorder.flush_interval
        if self._data is not None:
            values, stamps = self._data[: self._count], self._times[: self._count]
            self._count = 0
        else:
            values, stamps = self._strings, self._string_times
            self._strings, self._string_times = [], []
        if len(stamps):
            write = self._recorder._writer.write_samples
            self._recorder._write(self.stream_name, write, self.stream_id, values, stamps)


class Recorder:
    """Record LSL streams to an XDF file incrementally, until :meth:`stop`.

    Parameters
    ----------
    path : path-like
        The ``.xdf`` file to write; its folder must exist.
    streams : sequence of pylsl.StreamInfo | str
        Resolved stream infos, or source_ids / names to resolve (a source_id match wins; a name
        shared by several streams is an error).
    flush_interval : float
        Seconds between Samples chunks, in (0, 1]: at most this much is lost in a crash.
    clock_interval : float
        Seconds between ClockOffset chunks.
    boundary_interval : float
        Seconds between Boundary chunks (resynchronisation points for readers).
    resolve_timeout : float
        Seconds to wait for each stream when starting.
    overwrite : bool
        Replace an existing file.
    missing_ok : bool
        A resolved stream that vanishes before its inlet opens does not fail :meth:`start`
        (unless every stream does): its header is written, the others are recorded, and it is
        recorded from when it returns (:attr:`waiting_for`), as LabRecorder waits for missing
        streams.

    Examples
    --------
    >>> with Recorder("session.xdf", ["amp-1234", "keys-1234"]) as rec:  # doctest: +SKIP
    ...     time.sleep(60)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        streams: Sequence[pylsl.StreamInfo | str],
        *,
        flush_interval: float = 0.5,
        clock_interval: float = 5.0,
        boundary_interval: float = 10.0,
        resolve_timeout: float = 5.0,
        overwrite: bool = False,
        missing_ok: bool = False,
    ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".xdf":
            raise ValueError(
                f"Invalid value for 'path': '{self.path}' must end in .xdf (the recorder "
                "writes XDF; convert it afterwards with 'bci-app convert')."
            )
        if not self.path.parent.is_dir():
            raise ValueError(
                f"Invalid value for 'path': the folder '{self.path.parent}' does not exist. "
                "Create it first or record elsewhere."
            )
        if self.path.exists() and not overwrite:
            raise exists_error(self.path)
        if isinstance(streams, (str, pylsl.StreamInfo)) or not streams:
            raise ValueError(
                f"Invalid value for 'streams': {streams!r}; give a non-empty list of "
                "pylsl.StreamInfo or source_ids/names."
            )
        for item in streams:
            if not isinstance(item, (str, pylsl.StreamInfo)) or (
                isinstance(item, str) and "'" in item
            ):
                raise ValueError(
                    f"Invalid value in 'streams': {item!r}; each entry must be a pylsl.StreamInfo "
                    "or a source_id/name without quotes."
                )
        if not 0 < flush_interval <= 1.0:
            raise ValueError(
                f"Invalid value for 'flush_interval': {flush_interval}; it must be in (0, 1] s "
                "so that a crash loses at most one second."
            )
        self.flush_interval, self.clock_interval = float(flush_interval), float(clock_interval)
        self.boundary_interval, self.resolve_timeout = float(boundary_interval), resolve_timeout
        self._requested, self._overwrite = list(streams), overwrite
        self._missing_ok = bool(missing_ok)
        self._vanished: list[str] = []
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._streams: list[_RecordedStream] = []
        self._writer: XdfWriter | None = None
        self._error: OSError | None = None
        self._next_boundary = 0.0
        self._state = "new"

    @property
    def running(self) -> bool:
        """Whether the workers are recording."""
        return self._state == "running" and not self._stop_event.is_set()

    @property
    def error(self) -> OSError | None:
        """The write error that stopped the recording early, if any."""
        return self._error

    @property
    def waiting_for(self) -> list[str]:
        """Names of the streams lost while connecting and not recorded so far (``missing_ok``)."""
        return [
            s.stream_name
            for s in self._streams
            if s.stream_name in self._vanished and s.state == "lost"
        ]

    @property
    def stream_names(self) -> list[str]:
        """Names of the recorded streams, in stream-id order (1, 2, ...)."""
        return [s.stream_name for s in self._streams]

    def stats(self) -> dict[str, dict]:
        """Per stream name: first/last timestamp and sample count written so far."""
        if self._writer is None:
            return {}
        return {s.stream_name: self._writer.stream_stats(s.stream_id) for s in self._streams}

    def start(self) -> Recorder:
        """Create the file, connect to every stream, write the headers and start recording."""
        if self._state != "new":
            raise RuntimeError(
                f"This Recorder is {self._state}; a Recorder records once. Create a new one."
            )
        self._writer = XdfWriter(self.path, overwrite=self._overwrite)  # unwritable path: here
        self._next_boundary = time.monotonic() + self.boundary_interval
        try:
            infos = [
                item if isinstance(item, pylsl.StreamInfo) else self._resolve(item)
                for item in self._requested
            ]
            _check_unique([info.source_id() or info.name() for info in infos])
            self._streams = [_RecordedStream(self, i, info) for i, info in enumerate(infos, 1)]
            for stream in self._streams:
                self._connect(stream)
            if self._vanished and len(self._vanished) == len(self._streams):
                raise StreamNotFoundError(
                    f"Every stream to record vanished while connecting ({self._vanished}). "
                    "Check that their outlets are running, then record again."
                )
        except BaseException:
            self._stop_event.set()
            for stream in self._streams:
                if stream.state != "disconnected":
                    stream.disconnect()
            self._writer.close()
            self.path.unlink(missing_ok=True)
            self._state = "failed"
            raise
        self._state = "running"
        logger.info("Recording %s to '%s'.", self.stream_names, self.path)
        return self

    def _connect(self, stream: _RecordedStream) -> None:
        """Connect one stream (header, worker); with ``missing_ok``, wait for one that vanished."""
        try:
            stream.connect()  # writes the stream's header, then starts its worker
        except StreamNotFoundError as err:
            if not self._missing_ok:
                raise
            logger.warning(
                "Stream %r vanished while connecting (its outlet stopped answering); recording "
                "the others, and this one when it returns.",
                stream.stream_name,
            )
            logger.debug("Connecting %r failed: %s", stream.stream_name, err)
            self._vanished.append(stream.stream_name)
            stream.wait_for_return()

    def stop(self) -> None:
        """Flush the last samples, write the footers and close the file (safe to call twice).

        Raises the write error that stopped the recording early, if any (the file keeps what was
        recorded before it), else a worker error kept for the caller
        (:func:`~acquisition._env.raise_stream_errors`).
        """
        if self._state != "running":
            logger.warning("Recorder.stop(): the recorder is %s; nothing to stop.", self._state)
            return
        self._stop_event.set()
        worker_errors = []
        for stream in self._streams:
            try:
                stream.disconnect()
            except Exception as err:
                worker_errors.append(err)
        if self._error is None:
            self._write("footers", self._writer.close)
        else:
            self._writer.close()  # after a failed write: no footers, the file is only closed
        self._state = "stopped"
        err = self._error
        if err is not None:
            raise OSError(err.errno, f"Recording stopped early: {err.strerror or err}") from err
        if worker_errors:
            raise worker_errors[0]

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _resolve(self, query: str) -> pylsl.StreamInfo:
        predicate = f"source_id='{query}' or name='{query}'"
        found = pylsl.resolve_bypred(predicate, minimum=1, timeout=self.resolve_timeout)
        exact = [info for info in found if info.source_id() == query]
        if exact:
            return exact[0]
        if not found:
            raise ValueError(
                f"Invalid value in 'streams': no LSL stream with source_id or name {query!r} "
                f"answered within {self.resolve_timeout} s. Start its outlet first "
                "(`bci-app streams` lists the streams on the network)."
            )
        found = pylsl.resolve_bypred(predicate, minimum=len(found) + 1, timeout=0.5) or found
        source_ids = sorted({info.source_id() for info in found})
        if len(source_ids) > 1:
            raise ValueError(
                f"Invalid value in 'streams': the name {query!r} matches {len(source_ids)} "
                f"streams (source_ids {source_ids}); pass the source_id of the one to record."
            )
        return found[0]

    def _maybe_write_boundary(self) -> None:
        with self._lock:
            due = time.monotonic() >= self._next_boundary
            if due:
                self._next_boundary = time.monotonic() + self.boundary_interval
        if due:
            self._write("boundary", self._writer.write_boundary)

    def _write(self, stream_name: str, write: Callable, *args) -> None:
        """Call a writer method; a write error stops the recording (nothing more is written)."""
        if self._error is not None:
            return
        try:
            write(*args)
        except OSError as err:
            self._fail(stream_name, err)

    def _fail(self, stream_name: str, err: OSError) -> None:
        """Keep the first write error, log it and stop every stream's worker."""
        with self._lock:
            first = self._error is None
            if first:
                self._error = err
        if first:
            logger.error(
                "Recording to '%s' stopped (stream %r): %s",
                self.path,
                stream_name,
                err,
                exc_info=err,
            )
        self._stop_event.set()
        for stream in self._streams:
            stream.stop_soon()


def _check_unique(keys: list[str]) -> None:
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(
            f"Invalid value for 'streams': {duplicates} listed more than once; record each "
            "stream once."
        )
