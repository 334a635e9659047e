"""The base class of LSL producers: a data outlet and its marker outlet, fed by one worker thread.

:class:`OutletWorker` is the one place that owns an outlet pair's life: the stream descriptions,
opening and closing the outlets, the worker thread, its state and the handling of its errors.
:class:`~acquisition.player.Player` and :class:`~acquisition.simulator.SimulatorStream` only say
where the samples come from and when each chunk is due (:meth:`OutletWorker._work`), and hand
every chunk to :meth:`OutletWorker._push`.

Markers go out on ``<name>-markers`` (source_id ``<source_id>-markers``), each stamped with the
timestamp of the data sample it belongs to, just before that sample's chunk, so that a consumer
holds a marker no later than its sample and both share one clock.
"""

from __future__ import annotations

import logging
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TypeVar

import numpy as np
import pylsl

from acquisition._env import raise_stream_errors
from acquisition.channels import ChannelSpec, make_stream_info
from acquisition.outlets import DataOutlet, MarkerOutlet

logger = logging.getLogger(__name__)

_Worker = TypeVar("_Worker", bound="OutletWorker")


class OutletWorker(ABC):
    """Base class of LSL producers: outlets opened on :meth:`start`, one worker thread.

    Lifecycle: :meth:`start` opens the outlets and starts the worker; :meth:`stop` ends it and
    closes the outlets (safe to call twice, or before :meth:`start`); :meth:`join` waits for the
    end; a ``with`` block does start and stop. A worker runs once: :attr:`state` goes from
    ``"new"`` to ``"running"`` and ends ``"finished"`` (the source ran out), ``"stopped"`` or
    ``"failed"``.

    Error rule: an exception in the worker is logged with its traceback, kept in :attr:`error`
    and ends the worker (state ``"failed"``). When
    :func:`~acquisition._env.raise_stream_errors` is true (tests) the next :meth:`join` or
    :meth:`stop` re-raises it, once.

    Parameters
    ----------
    name, stype, source_id : str
        LSL name, type and source_id of the data stream; the marker stream is
        ``<name>-markers`` / ``<source_id>-markers`` of type ``Markers``.
    channels : ChannelSpec
        Channel metadata of the data stream.
    sfreq : float
        Nominal sampling rate of the data stream (Hz).
    chunk_size : int
        Samples per pushed chunk.
    max_buffered : float
        Seconds of data the outlets buffer per consumer (LSL's ``max_buffered``).
    """

    #: What the producer is called in messages.
    _what = "OutletWorker"

    def __init__(
        self,
        *,
        name: str,
        stype: str,
        channels: ChannelSpec,
        sfreq: float,
        source_id: str,
        chunk_size: int,
        max_buffered: float,
    ) -> None:
        self._data_args = (name, stype, channels, sfreq, source_id)
        self._chunk_size = int(chunk_size)
        self._max_buffered = max_buffered
        self._info = make_stream_info(*self._data_args)
        self._marker_info = pylsl.StreamInfo(
            f"{name}-markers",
            "Markers",
            1,
            pylsl.IRREGULAR_RATE,
            pylsl.cf_string,
            f"{source_id}-markers",
        )
        self._outlet: DataOutlet | None = None
        self._marker_outlet: MarkerOutlet | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested = threading.Event()
        self._done = threading.Event()
        self._state = "new"
        self._error: BaseException | None = None
        self._pending_error: BaseException | None = None
        self._n_samples_sent = 0
        self._start_timestamp: float | None = None

    # ------------------------------------------------------------------ description
    @property
    def info(self) -> pylsl.StreamInfo:
        """LSL description of the data stream (name, type, source_id, channel metadata)."""
        return self._info

    @property
    def marker_info(self) -> pylsl.StreamInfo:
        """LSL name, type and source_id of the marker stream."""
        return self._marker_info

    @property
    def name(self) -> str:
        """LSL name of the data stream (the marker stream is ``<name>-markers``)."""
        return self._info.name()

    @property
    def source_id(self) -> str:
        """LSL source_id of the data stream (the marker stream's is ``<source_id>-markers``)."""
        return self._info.source_id()

    @property
    def stype(self) -> str:
        """LSL type of the data stream (``"EEG"``, ``"MEG"``, ``"iEEG"``, ...)."""
        return self._info.type()

    @property
    def chunk_size(self) -> int:
        """Samples per pushed chunk."""
        return self._chunk_size

    # ------------------------------------------------------------------ progress and state
    @property
    def n_samples_sent(self) -> int:
        """Samples pushed so far."""
        return self._n_samples_sent

    @property
    def start_timestamp(self) -> float | None:
        """LSL timestamp of the first sample (None until streaming starts)."""
        return self._start_timestamp

    @property
    def state(self) -> str:
        """``"new"``, ``"running"``, ``"finished"``, ``"stopped"`` or ``"failed"``."""
        return self._state

    @property
    def running(self) -> bool:
        """Whether the worker is streaming."""
        return self._state == "running"

    @property
    def done(self) -> threading.Event:
        """Set once the worker has ended: source exhausted, :meth:`stop` called, or error."""
        return self._done

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the worker, if any (it is also logged)."""
        return self._error

    # ------------------------------------------------------------------ lifecycle
    def start(self: _Worker) -> _Worker:
        """Open the outlets and start streaming from the worker thread; returns ``self``.

        A second call while running only warns; a worker that has ended cannot start again.
        """
        if self._state == "running":
            warnings.warn(
                f"The {self._what} {self.source_id!r} is already running; start() did nothing.",
                RuntimeWarning,
                stacklevel=2,
            )
            return self
        if self._state != "new":
            raise RuntimeError(
                f"This {self._what} has {self._state}; a {self._what} runs once. Create a new "
                f"{self._what} to stream again."
            )
        self._marker_outlet = MarkerOutlet(
            self._marker_info.name(), self._marker_info.source_id(), self._marker_info.type()
        )
        self._outlet = DataOutlet(
            *self._data_args, chunk_size=self._chunk_size, max_buffered=self._max_buffered
        )
        self._on_start()
        self._state = "running"
        self._thread = threading.Thread(
            target=self._run, name=f"{self._what}-{self.source_id}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop streaming and close the outlets; safe to call twice or before :meth:`start`.

        Re-raises the worker's error once when :func:`~acquisition._env.raise_stream_errors`.
        """
        self._stop_requested.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        for outlet in (self._outlet, self._marker_outlet):
            if outlet is not None:
                outlet.close()
        self._outlet = self._marker_outlet = None
        if self._state in ("new", "running"):
            self._state = "stopped"
        self._done.set()
        self._raise_pending()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the worker ends; return whether it did within ``timeout`` seconds.

        Re-raises the worker's error once when :func:`~acquisition._env.raise_stream_errors`.
        """
        finished = self._done.wait(timeout)
        self._raise_pending()
        return finished

    def __enter__(self: _Worker) -> _Worker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ for subclasses
    def _on_start(self) -> None:
        """Called by :meth:`start` once the outlets are open, before the worker starts."""

    @abstractmethod
    def _work(self) -> None:
        """Stream until the source ends or :meth:`stop` is called (runs in the worker thread)."""

    def _push(self, data: np.ndarray, stamps: np.ndarray, markers: Iterable[tuple[int, str]]):
        """Push ``markers`` (``(row of data, value)``), then the chunk ``data`` at ``stamps``."""
        for row, value in markers:
            self._marker_outlet.push(value, float(stamps[row]))
        self._outlet.push_chunk(data, stamps)
        self._n_samples_sent += data.shape[0]

    def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` (or less if :meth:`stop` is called); return False if stopped."""
        if seconds > 0:
            return not self._stop_requested.wait(seconds)
        return not self._stop_requested.is_set()

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
        try:
            self._work()
        except Exception as err:
            self._error = err
            self._state = "failed"
            logger.exception("%s %r failed", self._what, self.source_id)
            if raise_stream_errors():
                self._pending_error = err
        else:
            self._state = "stopped" if self._stop_requested.is_set() else "finished"
        finally:
            self._done.set()

    def _raise_pending(self) -> None:
        """Re-raise a worker error once, from the caller's thread."""
        err, self._pending_error = self._pending_error, None
        if err is not None:
            raise err
