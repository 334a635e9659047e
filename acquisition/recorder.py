"""Record every LSL stream of a session (signals, markers, decoded text) to XDF, as LabRecorder.

One pylsl inlet and one worker thread per stream pull chunks as numpy and write them as XDF
Samples chunks every ``flush_interval`` (at most a second), with ClockOffset chunks from
``inlet.time_correction()`` every few seconds, Boundary chunks every ten, and footers on
:meth:`Recorder.stop`. Each chunk goes to disk in one write, so a recorder killed with SIGKILL
loses at most the last ``flush_interval`` and the file still loads. Inlets recover lost streams
(``recover=True``): a stream that vanishes is recorded again when an outlet with the same
source_id returns. A write error (full disk) stops the recording, keeps what was written (the
file is cut back to its last complete chunk), logs the error and raises it from :meth:`stop`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pylsl
from pylsl.util import LostError
from pylsl.util import TimeoutError as LslTimeoutError

from acquisition.xdf_writer import XdfWriter

logger = logging.getLogger(__name__)

_PULL_TIMEOUT = 0.05  # s: how long one pull waits for data; sets the worker's cadence
_SILENCE_S = 2.0  # s without samples after which a regular stream is reported missing


class _StreamWorker(threading.Thread):
    """Pulls one stream into a preallocated buffer and writes it to the XDF file in chunks."""

    def __init__(self, recorder: Recorder, stream_id: int, info: pylsl.StreamInfo) -> None:
        super().__init__(name=f"recorder-{info.name()}", daemon=True)
        self.recorder, self.stream_id = recorder, stream_id
        timeout = recorder.resolve_timeout
        self.inlet = pylsl.StreamInlet(info, max_buflen=360, recover=True)
        try:
            full_info = self.inlet.info(timeout=timeout)
            self.inlet.open_stream(timeout=timeout)
        except LslTimeoutError:
            raise RuntimeError(
                f"The LSL stream {info.name()!r} (source_id {info.source_id()!r}) did not answer "
                f"within {timeout} s; check that its outlet is still running."
            ) from None
        self.header_xml = full_info.as_xml()
        self.stream_name, self.source_id = full_info.name(), full_info.source_id()
        fmt = {pylsl.cf_string: "string"}.get(full_info.channel_format())
        n_channels = full_info.channel_count()
        if fmt is None:
            dtype = self.inlet.np_dtype
            rate = full_info.nominal_srate() or 100.0
            capacity = max(64, int(4 * rate * recorder.flush_interval))
            self._data = np.empty((capacity, n_channels), dtype=dtype)
            self._times = np.empty(capacity, dtype=np.float64)
        else:
            self._data = None
            self._strings: list[np.ndarray] = []
            self._string_times: list[np.ndarray] = []
        self._count = 0
        self._regular = full_info.nominal_srate() > 0
        self._silent, self._last_data = False, time.monotonic()

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as err:  # any failure is reported, none is silent
            self.recorder._fail(self.stream_name, err)
        finally:
            try:
                self.inlet.close_stream()
            finally:
                self.recorder._worker_done()

    def _loop(self) -> None:
        rec = self.recorder
        next_flush, next_clock = time.monotonic(), 0.0
        while not rec._stop_event.is_set():
            now = time.monotonic()
            if now >= next_clock:  # the first estimate takes ~0.5 s; the inlet buffers meanwhile
                measured = self._write_clock_offset(timeout=2.0 if next_clock == 0 else 0.5)
                next_clock = now + (rec.clock_interval if measured else 1.0)
            try:
                self._note_activity(self._pull(min(_PULL_TIMEOUT, max(0.0, next_flush - now))))
            except LostError:
                logger.warning(
                    "Stream %r was lost and cannot be recovered (it has no source_id); its "
                    "recording ends here, the other streams go on.",
                    self.stream_name,
                )
                break
            if time.monotonic() >= next_flush or self._full():
                self._flush()
                next_flush = time.monotonic() + rec.flush_interval
            rec._maybe_write_boundary()
        self._drain()

    def _drain(self) -> None:
        """Write what arrived before stop()."""
        try:
            while True:
                if self._full():
                    self._flush()
                if not self._pull(0.0):
                    break
        except LostError:
            pass  # nothing more will come; what was pulled is written below
        self._flush()

    def _note_activity(self, n_pulled: int) -> None:
        """Log when a regular stream goes silent (it vanished) and when it comes back."""
        now = time.monotonic()
        if n_pulled:
            if self._silent:
                logger.info("Stream %r is back; recording it again.", self.stream_name)
            self._silent, self._last_data = False, now
        elif self._regular and not self._silent and now - self._last_data > _SILENCE_S:
            self._silent = True
            logger.warning(
                "No data from stream %r for %.0f s; still recording the others and waiting for "
                "it to return.",
                self.stream_name,
                _SILENCE_S,
            )

    def _full(self) -> bool:
        return self._data is not None and self._count == len(self._data)

    def _pull(self, timeout: float) -> int:
        """Pull what is available (waiting up to ``timeout``); return the number of samples."""
        if self._data is None:
            values, stamps = self.inlet.pull_chunk(timeout=timeout, max_samples=1024, as_numpy=True)
            if len(stamps):
                self._strings.append(values)
                self._string_times.append(stamps)
            return len(stamps)
        start = self._count
        if start == len(self._data):
            return 0
        _, stamps = self.inlet.pull_chunk(
            timeout=timeout,
            max_samples=len(self._data) - start,
            dest_obj=self._data[start:],
            as_numpy=True,
        )
        self._times[start : start + len(stamps)] = stamps
        self._count += len(stamps)
        return len(stamps)

    def _flush(self) -> None:
        writer = self.recorder._writer
        if self._data is not None:
            if self._count:
                writer.write_samples(
                    self.stream_id, self._data[: self._count], self._times[: self._count]
                )
            self._count = 0
        elif self._strings:
            values, stamps = np.concatenate(self._strings), np.concatenate(self._string_times)
            self._strings, self._string_times = [], []
            writer.write_samples(self.stream_id, values, stamps)

    def _write_clock_offset(self, timeout: float) -> bool:
        """Measure the stream's clock offset and write it; False if it could not be measured."""
        try:
            offset = self.inlet.time_correction(timeout=timeout)
        except (LslTimeoutError, LostError):
            logger.debug("No clock offset for stream %r this time.", self.stream_name)
            return False
        now = pylsl.local_clock()
        self.recorder._writer.write_clock_offset(self.stream_id, now - offset, offset)
        return True


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
    ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".xdf":
            raise ValueError(
                f"Invalid value for 'path': '{self.path}' must end in .xdf (the recorder "
                "writes XDF; convert afterwards with acquisition.convert)."
            )
        if not self.path.parent.is_dir():
            raise ValueError(
                f"Invalid value for 'path': the folder '{self.path.parent}' does not exist. "
                "Create it first or record elsewhere."
            )
        if self.path.exists() and not overwrite:
            raise FileExistsError(
                f"Invalid value for 'path': '{self.path}' already exists. Pass overwrite=True "
                "or choose another file name."
            )
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
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[_StreamWorker] = []
        self._writer: XdfWriter | None = None
        self._error: BaseException | None = None
        self._live = 0
        self._next_boundary = 0.0
        self._state = "new"

    @property
    def running(self) -> bool:
        """Whether the workers are recording."""
        return self._state == "running" and not self._stop_event.is_set()

    @property
    def error(self) -> BaseException | None:
        """The error that stopped the recording early, if any."""
        return self._error

    @property
    def stream_names(self) -> list[str]:
        """Names of the recorded streams, in stream-id order (1, 2, ...)."""
        return [w.stream_name for w in self._workers]

    def stats(self) -> dict[str, dict]:
        """Per stream name: first/last timestamp and sample count written so far."""
        if self._writer is None:
            return {}
        return {w.stream_name: self._writer.stream_stats(w.stream_id) for w in self._workers}

    def start(self) -> Recorder:
        """Create the file, connect to every stream, write the headers and start recording."""
        if self._state != "new":
            raise RuntimeError(
                f"This Recorder is {self._state}; a Recorder records once. Create a new one."
            )
        self._writer = XdfWriter(self.path, overwrite=self._overwrite)  # unwritable path: here
        try:
            for stream_id, item in enumerate(self._requested, start=1):
                info = item if isinstance(item, pylsl.StreamInfo) else self._resolve(item)
                self._workers.append(_StreamWorker(self, stream_id, info))
            _check_unique([w.source_id or w.stream_name for w in self._workers])
            for worker in self._workers:
                self._writer.add_stream(worker.stream_id, worker.header_xml)
        except BaseException:
            for worker in self._workers:
                worker.inlet.close_stream()
            self._writer.close()
            self.path.unlink(missing_ok=True)
            self._state = "failed"
            raise
        self._live = len(self._workers)
        self._next_boundary = time.monotonic() + self.boundary_interval
        self._state = "running"
        for worker in self._workers:
            worker.start()
        logger.info("Recording %s to '%s'.", self.stream_names, self.path)
        return self

    def stop(self) -> None:
        """Flush the last samples, write the footers and close the file (safe to call twice).

        Raises the error that stopped the recording early, if any (the file keeps what was
        recorded before it).
        """
        if self._state != "running":
            logger.warning("Recorder.stop(): the recorder is %s; nothing to stop.", self._state)
            return
        self._stop_event.set()
        for worker in self._workers:
            worker.join(timeout=30.0)
            if worker.is_alive():
                logger.error("The recorder worker of %r did not stop.", worker.stream_name)
        self._state = "stopped"
        err = self._error
        if isinstance(err, OSError):
            raise OSError(err.errno, f"Recording stopped early: {err.strerror or err}") from err
        if err is not None:
            raise RuntimeError(f"Recording to '{self.path}' stopped early: {err!r}") from err

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
            self._writer.write_boundary()

    def _fail(self, stream_name: str, err: BaseException) -> None:
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

    def _worker_done(self) -> None:
        with self._lock:
            self._live -= 1
            last = self._live == 0
        if last:  # the last worker out closes the file: footers, or just close after an error
            try:
                self._writer.close()
            except OSError as err:
                self._fail("footers", err)


def _check_unique(keys: list[str]) -> None:
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(
            f"Invalid value for 'streams': {duplicates} listed more than once; record each "
            "stream once."
        )
