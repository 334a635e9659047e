"""Live wiring: stream source -> preprocessor -> windower, on one worker thread.

The acquisition worker (inside :class:`acquisition.stream.StreamSource`) writes into its ring
buffer; this pipeline's worker polls what is new (one numpy block per poll, never per sample) and
steps it: the same :class:`~bci_app.processing.preprocessing.Preprocessor` used offline, then the
windower, and each preprocessed chunk (``on_chunk``) and completed window (``on_window``) is handed
on with its stage times. :meth:`LivePipeline.step` takes the raw samples and markers as arguments,
so tests drive the whole chain, decoding included, by feeding chunks of a recording: no thread,
no LSL.
"""

from __future__ import annotations

import logging
import threading
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


@dataclass(frozen=True)
class WindowEvent:
    """A completed window and when each stage finished with it (LSL local clock, seconds)."""

    window: Window
    t_pulled: float
    t_preprocessed: float
    t_windowed: float


@dataclass(frozen=True)
class ChunkEvent:
    """A preprocessed chunk and when it was pulled and preprocessed (LSL local clock, seconds)."""

    chunk: Chunk
    t_pulled: float
    t_preprocessed: float


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
    poll_s : float
        Sleep between polls when no new data has arrived.
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
        poll_s: float = 0.005,
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
        self.latency = LatencyStats()
        self.n_windows = 0
        self.n_invalid_windows = 0
        self.n_lost_samples = 0
        self.error: BaseException | None = None
        # Start from the oldest sample the buffer still holds, so data that arrived while the
        # decoder was loading is processed too (and markers already queued find their data).
        self._counter = 0
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
        """Step whatever is new in the source's buffer and marker stream; return the windows."""
        new = self.source.buffer.read_since(self._counter)
        data, timestamps, valid, n_lost = new.data, new.timestamps, new.valid, new.n_lost
        self._counter = new.next_counter
        t_pulled = pylsl.local_clock()
        if n_lost:
            # The pipeline fell behind the ring buffer: the filters' history is broken, so start
            # them over rather than splice unrelated samples together.
            self.n_lost_samples += n_lost
            logger.warning("pipeline fell %d samples behind the buffer; filters reset", n_lost)
            self.preprocessor.reset()
        new_markers = self.markers.pull() if self.markers is not None else []
        return self.step(data, timestamps, valid, new_markers, t_pulled=t_pulled)

    def step(
        self,
        data: np.ndarray,
        timestamps: np.ndarray,
        valid: np.ndarray | None = None,
        markers: list[Marker] | tuple = (),
        *,
        t_pulled: float | None = None,
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

        Returns
        -------
        int
            The number of windows completed and handed to ``on_window``.
        """
        t_pulled = pylsl.local_clock() if t_pulled is None else t_pulled
        markers = list(markers)
        windows: list[Window] = []
        if markers and self.on_markers is not None:
            self.on_markers(markers)
        if self.windower is not None:
            windows += self.windower.push_markers(markers)
        if len(timestamps) == 0 and not windows:
            return 0
        if len(timestamps):
            self.latency.add("sample->pulled", t_pulled - timestamps[-1])
        chunk = self.preprocessor.process(data, timestamps, valid)
        t_pre = pylsl.local_clock()
        if self.on_chunk is not None and len(chunk.timestamps):
            self.on_chunk(ChunkEvent(chunk, t_pulled, t_pre))
        if self.windower is not None:
            windows += self.windower.push_data(chunk.data, chunk.timestamps, chunk.valid)
        t_win = pylsl.local_clock()
        for window in windows:
            self.n_windows += 1
            self.n_invalid_windows += not window.valid
            self.latency.add("window complete->windowed", t_win - window.t_complete)
            self.on_window(WindowEvent(window, t_pulled, t_pre, t_win))
        if self.on_step is not None and len(chunk.timestamps):
            self.on_step(float(chunk.timestamps[-1]))
        return len(windows)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.poll() == 0:
                    self._stop.wait(self.poll_s)
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
