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

import numpy as np
import pylsl

from acquisition._outlet_worker import OutletWorker
from acquisition.simulator.simulator import Simulator

#: Default chunk length (seconds of data per push).
DEFAULT_CHUNK_S = 0.02


class SimulatorStream(OutletWorker):
    """Stream a simulator to LSL in real time from a worker thread.

    The lifecycle (:meth:`start`, :meth:`stop`, :meth:`join`, :attr:`state`, :attr:`running`,
    :attr:`error`) and the error rule are those of
    :class:`~acquisition._outlet_worker.OutletWorker`; a SimulatorStream streams once, until
    :meth:`stop`.

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
    max_buffered : float
        Seconds of data the outlets buffer per consumer (LSL's ``max_buffered``).
    """

    _what = "SimulatorStream"

    def __init__(
        self,
        simulator: Simulator,
        *,
        name: str | None = None,
        source_id: str | None = None,
        chunk_s: float = DEFAULT_CHUNK_S,
        stype: str | None = None,
        max_buffered: float = 60.0,
    ) -> None:
        if not isinstance(simulator, Simulator):
            raise TypeError(
                f"Invalid value for 'simulator': expected a Simulator, got "
                f"{type(simulator).__name__}. Create one with Simulator(modality, task)."
            )
        if not (np.isfinite(chunk_s) and chunk_s > 0):
            raise ValueError(f"Invalid value for 'chunk_s': {chunk_s!r}; it must be > 0 s.")
        self.simulator = simulator
        super().__init__(
            name=name or f"bci-sim-{simulator.modality}",
            stype=stype or simulator.stream_type,
            channels=simulator.channels,
            sfreq=simulator.sfreq,
            source_id=source_id
            or f"bci-sim-{simulator.modality}-{simulator.task}-{simulator.seed}",
            chunk_size=max(1, round(chunk_s * simulator.sfreq)),
            max_buffered=max_buffered,
        )
        self._first_sample = simulator.position

    @property
    def first_sample(self) -> int:
        """Session index of the first streamed sample."""
        return self._first_sample

    def __repr__(self) -> str:
        return (
            f"<SimulatorStream {self.name!r} source_id={self.source_id!r} "
            f"sent={self._n_samples_sent} state={self._state}>"
        )

    def _on_start(self) -> None:
        self._first_sample = self.simulator.position

    def _work(self) -> None:
        """Push chunks of the simulator's live session, each once the clock reaches it."""
        sfreq = self.simulator.sfreq
        t0 = pylsl.local_clock()
        self._start_timestamp = t0
        while not self._stop_requested.is_set():
            chunk = self.simulator.next_chunk(self._chunk_size)
            offset = chunk.first_sample - self._first_sample
            stamps = t0 + (offset + np.arange(chunk.data.shape[0])) / sfreq
            if not self._sleep(stamps[-1] - pylsl.local_clock()):
                return
            markers = [(sample - chunk.first_sample, value) for sample, value in chunk.markers]
            self._push(chunk.data, stamps, markers)
