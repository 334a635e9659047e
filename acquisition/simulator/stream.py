"""Push a :class:`~acquisition.simulator.Simulator` live to LSL: a data and a marker stream.

Timeline: the sample with session index ``first_sample + i`` carries the LSL timestamp
``t0 + i / sfreq``, where ``t0`` is the ``local_clock()`` when streaming starts. A chunk goes out
once the clock reaches its last sample's timestamp; due times come from ``t0`` and the number of
samples sent, never from summed sleeps, so pacing does not drift. Markers go out on
``<name>-markers`` (source_id ``<source_id>-markers``) just before the chunk holding their sample,
stamped with that sample's timestamp, so markers and data share one clock. Connect marker inlets
before data arrive: LSL keeps no history for late consumers.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings

import numpy as np
import pylsl

from acquisition.outlets import DataOutlet, MarkerOutlet
from acquisition.simulator.simulator import Simulator

logger = logging.getLogger(__name__)

#: Default chunk length (seconds of data per push).
DEFAULT_CHUNK_S = 0.02


class SimulatorStream:
    """Stream a simulator to LSL in real time from a worker thread.

    Parameters
    ----------
    simulator : Simulator
        The source; streaming continues its live session (:meth:`Simulator.next_chunk`).
    name : str | None
        LSL stream name (default ``bci-sim-<modality>``); markers on ``<name>-markers``.
    source_id : str | None
        LSL source_id (default ``bci-sim-<modality>-<task>-<seed>``); markers on
        ``<source_id>-markers``.
    chunk_s : float
        Seconds of data per pushed chunk.
    stype : str | None
        LSL stream type (default ``EEG``, ``MEG`` or ``iEEG``).
    """

    def __init__(
        self,
        simulator: Simulator,
        *,
        name: str | None = None,
        source_id: str | None = None,
        chunk_s: float = DEFAULT_CHUNK_S,
        stype: str | None = None,
    ) -> None:
        if not isinstance(simulator, Simulator):
            raise TypeError(
                f"Invalid value for 'simulator': expected a Simulator, got "
                f"{type(simulator).__name__}. Create one with Simulator(modality, task)."
            )
        if not (np.isfinite(chunk_s) and chunk_s > 0):
            raise ValueError(f"Invalid value for 'chunk_s': {chunk_s!r}; it must be > 0 s.")
        self.simulator = simulator
        self.name = name or f"bci-sim-{simulator.modality}"
        self.source_id = source_id or (
            f"bci-sim-{simulator.modality}-{simulator.task}-{simulator.seed}"
        )
        self.stype = stype or simulator.stream_type
        self.chunk_size = max(1, round(chunk_s * simulator.sfreq))
        self._outlet: DataOutlet | None = None
        self._marker_outlet: MarkerOutlet | None = None
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._start_timestamp: float | None = None
        self._first_sample = simulator.position
        self._n_samples_sent = 0
        self._error: BaseException | None = None

    @property
    def start_timestamp(self) -> float | None:
        """LSL timestamp of the first streamed sample (None before :meth:`start`)."""
        return self._start_timestamp

    @property
    def first_sample(self) -> int:
        """Session index of the first streamed sample."""
        return self._first_sample

    @property
    def n_samples_sent(self) -> int:
        """Samples pushed so far."""
        return self._n_samples_sent

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the worker, if any."""
        return self._error

    @property
    def running(self) -> bool:
        """Whether the worker thread is streaming."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> SimulatorStream:
        """Open the outlets and start streaming; a second call while running only warns."""
        if self.running:
            warnings.warn(
                f"SimulatorStream {self.source_id!r} is already streaming; start() ignored.",
                RuntimeWarning,
                stacklevel=2,
            )
            return self
        if self._thread is not None or self._stop_event.is_set():
            raise RuntimeError(
                "This SimulatorStream was stopped; create a new SimulatorStream to stream again."
            )
        sim = self.simulator
        self._marker_outlet = MarkerOutlet(f"{self.name}-markers", f"{self.source_id}-markers")
        self._outlet = DataOutlet(
            self.name, self.stype, sim.channels, sim.sfreq, self.source_id, self.chunk_size
        )
        self._first_sample = sim.position
        self._thread = threading.Thread(
            target=self._run, name=f"SimulatorStream-{self.source_id}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop streaming and close the outlets; safe to call twice or before :meth:`start`."""
        self._stop_event.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        for outlet in (self._outlet, self._marker_outlet):
            if outlet is not None:
                outlet.close()
        self._outlet = self._marker_outlet = None

    def __enter__(self) -> SimulatorStream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"<SimulatorStream {self.name!r} source_id={self.source_id!r} "
            f"sent={self._n_samples_sent} running={self.running}>"
        )

    def _run(self) -> None:
        try:
            self._stream()
        except Exception as err:
            self._error = err
            logger.exception("SimulatorStream %r failed", self.source_id)
            if os.environ.get("BCI_APP_RAISE_STREAM_ERRORS", "") not in ("", "0"):
                raise

    def _stream(self) -> None:
        sfreq = self.simulator.sfreq
        t0 = pylsl.local_clock()
        self._start_timestamp = t0
        while not self._stop_event.is_set():
            chunk = self.simulator.next_chunk(self.chunk_size)
            offset = chunk.first_sample - self._first_sample
            stamps = t0 + (offset + np.arange(chunk.data.shape[0])) / sfreq
            delay = stamps[-1] - pylsl.local_clock()
            if delay > 0 and self._stop_event.wait(delay):
                return
            for sample, value in chunk.markers:
                self._marker_outlet.push(value, float(stamps[sample - chunk.first_sample]))
            self._outlet.push_chunk(chunk.data, stamps)
            self._n_samples_sent += chunk.data.shape[0]
