"""A live decoding session: stream -> preprocessing -> windows or chunks -> decoder -> text.

:class:`DecodingSession` owns what every task shares: the
:class:`~bci_app.live.pipeline.LivePipeline` worker, the bounded
:class:`~bci_app.decoders.events.EventQueue` the GUI reads, the LSL text outlet, the JSONL log
writer, gap marking, latency statistics and the summary. The task itself is a :class:`Strategy`
object handed in at construction: which windows it wants (or the continuous chunks), what it does
with markers, windows, chunks and steps, how it flushes at the end, and what it adds to the
summary. :class:`~bci_app.live.keystroke.KeystrokeStrategy` (Brain2Qwerty v1),
:class:`~bci_app.live.ctc.CTCStrategy` (v2) and :class:`~bci_app.live.speech.SpeechStrategy`
are the built-in ones; :func:`~bci_app.live.factory.open_session` picks the one of a bundle.

Threads: the stream source's acquisition worker fills its ring buffer; one pipeline worker
preprocesses, cuts windows and decodes them on the spot (a keystroke costs well under a
millisecond of inference, so a hand-off queue would only add latency); text events go out through
bounded queues to the GUI and the session log writer, and to the LSL text outlet (recorded with
the session when a recorder runs), and to the listeners added with
:meth:`DecodingSession.add_listener` (the session report's collector). At stop, the summary goes
out as a last JSON line ``{"event": "summary", ...}`` on the text outlet and in the log, so a
recording holds the bundle, the provider and the counts. While the source reports that the stream
does not send at its declared rate (``effective rate X Hz, nominal Y Hz``), nothing is decoded: it
is said once and the windows left undecoded are counted. Without a source, nothing runs on its
own: tests feed ``session.pipeline.step(data, timestamps, markers=...)`` and read
``session.events``.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import queue
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import pylsl

from acquisition.channels import ChannelSpec
from acquisition.markers import MarkerSource
from acquisition.outlets import TextOutlet
from acquisition.recording import Marker
from acquisition.stream import StreamSource
from bci_app.decoders.bundle import Bundle
from bci_app.decoders.events import EventQueue, TextEvent, strict_json
from bci_app.live.metrics import LatencyStats
from bci_app.live.pipeline import ChunkEvent, LivePipeline, WindowEvent
from bci_app.processing.preprocessing import PreprocessConfig, Preprocessor
from bci_app.processing.recentering import RecenterConfig

logger = logging.getLogger(__name__)

#: Stage stamps carried by every text event, in order. ``sample`` is the stream time (local
#: clock) of the newest sample the event was decoded from (absent for boundaries and flushes).
STAGES = ("sample", "pulled", "preprocessed", "windowed", "inferred", "decoded", "emitted")

#: Seconds the text outlet stays open after the last line when it has consumers (a recorder):
#: liblsl drops the samples it has not sent yet when an outlet closes.
TEXT_LINGER_S = 0.2

#: Seconds within which further data gaps are not marked again in the text (they are counted).
GAP_MARK_S = 1.0

#: A window due before the next chunk (expected as long as the last one, times 1.5, at most
#: WARM_LEAD_S of stream time) has the decoder's graphs warmed first (``decoder.warm``), if
#: they have been idle for ``WARM_IDLE_S`` seconds of wall time. Live at 1x a keystroke comes
#: every ~0.3 s and its graphs ran several times slower than back to back (see
#: OnnxRuntime.warm); warmed on the chunk before, the run that counts finds them in the
#: caches. A backlog decodes windows back to back, so nothing is warmed there.
WARM_LEAD_S = 0.2
WARM_IDLE_S = 0.05

#: Warmed on the chunk before, the graphs still ran ~2.4x slower than back to back when the
#: window came (keystroke graph 0.75 vs 0.31 ms, 1x replay, 2-core VM): a graph that idles
#: runs slower the longer it idles, whatever the thread does meanwhile (20 ms of sleep or of
#: busy-waiting: 0.74-0.81 ms; 2-3 ms: 0.45-0.48; 8 MB of other memory traffic without
#: waiting: 0.31), so it is the wait, not our own work, that cools them. So while that window
#: is pending the pipeline's idle time warms them again every WARM_AGAIN_S, from WARM_AGAIN_S
#: before the next chunk is expected (one chunk interval of wall time after the last), for at
#: most WARM_AGAIN_FOR_S past it (a stalled stream is not warmed for).
WARM_AGAIN_S = 0.0025
WARM_AGAIN_FOR_S = 0.05

#: While a session runs, the objects alive when it started (the imports, the decoder, its graphs)
#: are frozen out of the cyclic garbage collector (``gc.freeze``; ``stop`` unfreezes them, so a
#: stopped session's objects can be collected). Unfrozen, every full collection rescanned them:
#: in ``bci-app run`` one full pass of 22-33 ms came every ~20 s, in whichever thread tripped it;
#: in the decoding thread, or holding the interpreter while a keystroke was decoded, it was that
#: keystroke's pulled->emitted (24-42 ms against p50 1.6 ms; 2-core VM, gc.callbacks). Frozen,
#: no collection after set-up took over 2 ms in 4 runs of 20 s.
FREEZE_SETUP_FOR_GC = True


def freeze_for_gc(on: bool) -> None:
    """Freeze the objects alive now out of the cyclic collector (on), or unfreeze them all.

    What a session does at its start and stop (:data:`FREEZE_SETUP_FOR_GC`); the garbage of
    the moment is collected first, so it is not frozen with the rest.
    """
    if not FREEZE_SETUP_FOR_GC:
        return
    if on:
        gc.collect()
        gc.freeze()
    else:
        gc.unfreeze()


#: Kind of the marker that says which channels are bad from its time on: ``bads:["MEG 0113"]``.
BADS_MARKER = "bads"


def bads_marker(names: Sequence[str]) -> str:
    """The marker string that records the bad channels ``names`` (a JSON list)."""
    return f"{BADS_MARKER}:{json.dumps(list(names))}"


def read_bads(markers: Sequence[Marker]) -> tuple[str, ...]:
    """The bad channels of the last ``bads:`` marker among ``markers`` (none: empty)."""
    for marker in sorted(markers, key=lambda m: m.timestamp, reverse=True):
        kind, _, payload = marker.value.partition(":")
        if kind == BADS_MARKER:
            return tuple(str(name) for name in json.loads(payload or "[]"))
    return ()


#: How a strategy hands a text event to its session: ``emit(event, origin)``, where ``origin`` is
#: the window or chunk the event was decoded from (for latency), or None (a boundary, a flush).
Emit = Callable[[TextEvent, "WindowEvent | ChunkEvent | None"], None]


class Strategy(Protocol):
    """The task logic a :class:`DecodingSession` runs (keystroke, CTC or speech decoding).

    The session calls these methods on its pipeline worker, one at a time, after marking any new
    data gap; ``emit`` hands a text event to the GUI queue, the text outlet and the log.

    Attributes
    ----------
    bundle : Bundle
        The decoder bundle (checked against the stream by the session).
    decoder : object
        The opened decoder: ``active_provider`` and ``mark_gap(timestamp)`` are used, and
        ``warm(idle_s)`` where it has one (before a window is due, see ``WARM_LEAD_S``).
    windower : object | None
        The windows it wants, fed with the preprocessed data and the markers (None: none).
    reads_chunks : bool
        Whether it wants every preprocessed chunk (:meth:`on_chunk`).
    """

    bundle: Bundle
    decoder: Any
    windower: Any
    reads_chunks: bool

    def preprocess_config(self) -> PreprocessConfig:
        """The preprocessing to run (the bundle's, with re-centering when asked)."""

    def check_markers(self, has_markers: bool) -> None:
        """Raise ValueError when the task cannot run with (or without) a marker stream."""

    def on_markers(self, markers: list[Marker]) -> None:
        """Take a batch of markers, before the windows they complete."""

    def on_window(self, event: WindowEvent, emit: Emit) -> None:
        """Decode a completed window."""

    def on_chunk(self, event: ChunkEvent, emit: Emit) -> None:
        """Decode a preprocessed chunk (only when ``reads_chunks``)."""

    def on_step(self, newest: float, emit: Emit) -> None:
        """React to the stream time of the newest preprocessed sample (pauses, boundaries)."""

    def flush(self, emit: Emit) -> None:
        """At stop: emit what the decoder still holds."""

    def summary(self) -> dict:
        """Task counts added to the session summary."""


class DecodingSession:
    """Decode a live stream with a strategy (module docstring).

    Parameters
    ----------
    strategy : Strategy
        The task: :class:`~bci_app.live.keystroke.KeystrokeStrategy`,
        :class:`~bci_app.live.ctc.CTCStrategy` or :class:`~bci_app.live.speech.SpeechStrategy`.
    source : StreamSource | None
        Connected data stream, polled by the pipeline worker (None: feed
        ``pipeline.step()`` by hand; give ``channels`` and ``sfreq``).
    markers : MarkerSource | None
        Connected marker stream (keystrokes, sentence boundaries, word onsets).
    channels, sfreq : ChannelSpec, float
        The stream's channels and rate when there is no ``source``.
    recenter : RecenterConfig | bool | None
        Drift re-centering of the scaler statistics (:mod:`bci_app.processing.recentering`;
        True: default settings; None/False: off, the bundle's fixed statistics as in training).
    log_path : path | None
        JSONL session log (one text event per line, then a summary line).
    text_outlet : bool
        Publish each event as JSON on an LSL string stream ``bci-app-text``.
    text_source_id : str | None
        source_id of that outlet (default: derived from the data stream's).
    queue_size : int
        Text events kept for a slow GUI before the oldest are dropped (counted).
    """

    def __init__(
        self,
        strategy: Strategy,
        source: StreamSource | None = None,
        markers: MarkerSource | None = None,
        *,
        channels: ChannelSpec | None = None,
        sfreq: float | None = None,
        recenter: RecenterConfig | bool | None = None,
        log_path: str | Path | None = None,
        text_outlet: bool = True,
        text_source_id: str | None = None,
        queue_size: int = 1000,
    ) -> None:
        if source is None and (channels is None or sfreq is None):
            raise ValueError(
                "Invalid arguments: give the connected 'source', or the stream's 'channels' and "
                "'sfreq' to feed the session through session.pipeline.step()."
            )
        if source is not None:
            channels, sfreq = source.channels, source.sfreq
        where = "the stream" if source is None else f"the stream '{source.info.name()}'"
        strategy.bundle.check_stream(channels, sfreq, stream_name=where)
        if source is not None:
            strategy.check_markers(markers is not None)
        self.strategy = strategy
        self.source, self.markers = source, markers
        self.latency = LatencyStats()
        self.events = EventQueue(queue_size)  # for the GUI
        self._log_queue: queue.Queue = queue.Queue(maxsize=10_000)
        self.n_log_dropped = 0
        self.n_inference_errors = 0
        self._n_gaps_seen = 0
        self._last_gap_marked = -float("inf")
        self.n_refused = 0
        self.rate_mismatch: str | None = None
        self.n_warm_runs = 0
        self.n_rewarm_runs = 0
        self._warmed_for: float | None = None
        self._last_newest: float | None = None
        self._last_step_wall: float | None = None
        self._warm_again_at: float | None = None  # time.perf_counter() of the next re-warm
        self._warm_again_until = 0.0
        self._lock = threading.Lock()
        self._stopped = False
        config = strategy.preprocess_config()
        if recenter:
            config = config.with_recentering(None if recenter is True else recenter)
        preprocessor = Preprocessor(config, channels.names)
        self.pipeline = LivePipeline(
            source,
            preprocessor,
            strategy.windower,
            self._on_window,
            markers=markers,
            on_markers=self._on_markers,
            on_chunk=self._on_chunk if strategy.reads_chunks else None,
            on_step=self._on_step,
            on_idle=self._on_idle,
        )
        self._outlet = None
        if text_outlet:
            stream_id = uuid.uuid4().hex[:8] if source is None else source.info.source_id()
            self._outlet = TextOutlet(
                name="bci-app-text", source_id=text_source_id or f"bci-app-text-{stream_id}"
            )
        self._log_path = None if log_path is None else Path(log_path)
        self._log_thread: threading.Thread | None = None
        self._listeners: tuple[Callable[[TextEvent], None], ...] = ()

    @property
    def bundle(self) -> Bundle:
        """The decoder bundle."""
        return self.strategy.bundle

    @property
    def decoder(self):
        """The strategy's decoder."""
        return self.strategy.decoder

    @property
    def provider(self) -> str:
        """The onnxruntime provider really in use."""
        return self.strategy.decoder.active_provider

    def set_bad_channels(self, names: Sequence[str]) -> tuple[str, ...]:
        """Decode with these channels set to zero from now on; return those the decoder reads.

        The decoder keeps its channel count: a bad channel's preprocessed data are zeros
        (:meth:`~bci_app.processing.preprocessing.Preprocessor.set_bad_channels`).
        """
        applied = self.pipeline.preprocessor.set_bad_channels(names)
        logger.info("bad channels excluded from decoding: %s", list(applied) or "none")
        return applied

    @property
    def text_outlet_info(self) -> pylsl.StreamInfo | None:
        """StreamInfo of the text outlet (to record it with the session)."""
        return None if self._outlet is None else self._outlet.info

    def add_listener(self, listener: Callable[[TextEvent], None]) -> None:
        """Call ``listener(event)`` with every text event emitted from now on.

        It runs on the decoding thread, after the queue, the outlet and the log had the event:
        keep it short. An exception in it is logged and never stops decoding.
        """
        self._listeners = (*self._listeners, listener)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> DecodingSession:
        """Start decoding (and the log writer), the set-up frozen for the collector.

        See :data:`FREEZE_SETUP_FOR_GC`; :meth:`stop` unfreezes.
        """
        if self._stopped:
            raise RuntimeError("This session was stopped; open a new one to decode again.")
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self._log_path, "a", encoding="utf-8")
            self._log_thread = threading.Thread(target=self._write_log, daemon=True)
            self._log_thread.start()
        freeze_for_gc(True)
        self.pipeline.start()
        return self

    def stop(self) -> dict:
        """Stop decoding, flush what the strategy holds and the log; return the summary.

        Safe to call twice: the second call only returns the summary.
        """
        if self._stopped:
            return self.summary()
        self._stopped = True
        freeze_for_gc(False)
        try:
            self.pipeline.stop()
        finally:
            with self._lock:
                self.strategy.flush(self._emit)
            summary = self.summary()
            if self._log_thread is not None:
                self._log_queue.put({"event": "summary", **summary})
                self._log_queue.put(None)
                self._log_thread.join(timeout=10)
                self._log_file.close()
                self._log_thread = None
            if self._outlet is not None:
                self._outlet.push(strict_json({"event": "summary", **summary}))
                if self._outlet.have_consumers():  # liblsl drops what it has not sent at close
                    time.sleep(TEXT_LINGER_S)
                self._outlet.close()
        return summary

    def __enter__(self) -> DecodingSession:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def summary(self) -> dict:
        """Counts and latency percentiles of the session so far."""
        health = None if self.source is None else self.source.health()
        recentering = self.pipeline.preprocessor.recentering
        return {
            "bundle": self.bundle.name,
            "provider": self.provider,
            **self.strategy.summary(),
            "windows": self.pipeline.n_windows,
            "invalid_windows": self.pipeline.n_invalid_windows,
            "inference_errors": self.n_inference_errors,
            "refused": self.n_refused,
            "rate_mismatch": None if health is None else health.rate_mismatch,
            "timeline_restarts": self.pipeline.n_restarts,
            "markers_dropped": self.pipeline.n_markers_dropped,
            # markers whose window could not be cut (too late for the history, data ended)
            "windows_not_cut": len(getattr(self.pipeline.windower, "dropped", ())),
            "gaps": 0 if health is None else health.n_gaps,
            "dropped_samples": 0 if health is None else health.dropped_samples,
            "invalid_samples": 0 if health is None else health.n_invalid_samples,
            "reconnections": 0 if health is None else health.reconnections,
            "recentering_updates": 0 if recentering is None else recentering.n_updates,
            "events_dropped_gui": self.events.n_dropped,
            "events_dropped_log": self.n_log_dropped,
            "warm_runs": self.n_warm_runs,
            "rewarm_runs": self.n_rewarm_runs,
            "latency_ms": self.latency.summary(),
        }

    # ------------------------------------------------------------------ worker callbacks
    def _on_markers(self, markers: list[Marker]) -> None:
        with self._lock:
            self.strategy.on_markers(markers)

    def _on_window(self, event: WindowEvent) -> None:
        with self._lock:
            self._check_gaps()
            if self._refuse():
                return
            try:
                self.strategy.on_window(event, self._emit)
            except Exception:  # a decoding error never ends the session
                marker = event.window.marker
                what = "a sliding window" if marker is None else marker.value
                self._inference_failed(f"the window of {what} at {event.window.time:.3f} s")

    def _on_chunk(self, event: ChunkEvent) -> None:
        with self._lock:
            self._check_gaps()
            if self._refuse():
                return
            try:
                self.strategy.on_chunk(event, self._emit)
            except Exception:  # a decoding error never ends the session
                self._inference_failed(f"the chunk ending at {event.chunk.timestamps[-1]:.3f} s")

    def _on_step(self, newest: float) -> None:
        with self._lock:
            self._check_gaps()
            self.strategy.on_step(newest, self._emit)
            self._warm_before_window(newest)

    def _warm_before_window(self, newest: float) -> None:
        """Warm the decoder's graphs when the next window is due with the next chunk.

        Once when that window comes due (``WARM_IDLE_S``); then, while it is pending, the
        pipeline's idle time warms them again (:meth:`_on_idle`), from just before the next
        chunk is expected.
        """
        last, self._last_newest = self._last_newest, newest
        now = time.perf_counter()
        last_wall, self._last_step_wall = self._last_step_wall, now
        self._warm_again_at = None
        due = getattr(self.strategy.windower, "next_due", None)
        warm = getattr(self.decoder, "warm", None)
        if due is None or warm is None or last is None:
            return
        if self._warmed_for is None or abs(due - self._warmed_for) >= 1e-6:
            if due - newest > min(WARM_LEAD_S, 1.5 * (newest - last)):
                return
            self._warmed_for = due
            try:
                self.n_warm_runs += bool(warm(WARM_IDLE_S))
            except Exception:  # a decoding error never ends the session
                self._inference_failed(f"warming the graphs before the window due at {due:.3f} s")
                return
        interval = 0.0 if last_wall is None else min(now - last_wall, WARM_LEAD_S)
        self._warm_again_at = now + interval - WARM_AGAIN_S
        self._warm_again_until = now + interval + WARM_AGAIN_FOR_S

    def _on_idle(self) -> float | None:
        """The pipeline found no new data: warm the graphs again if a window is pending.

        Returns how long the pipeline may wait before calling again (None: nothing to do).
        """
        at = self._warm_again_at
        if at is None:
            return None
        now = time.perf_counter()
        if now > self._warm_again_until:
            self._warm_again_at = None
            return None
        if now < at:
            return at - now
        with self._lock:
            try:
                self.n_rewarm_runs += bool(self.decoder.warm(0.8 * WARM_AGAIN_S))
            except Exception:  # a decoding error never ends the session
                self._warm_again_at = None
                self._inference_failed("warming the graphs again while a window is pending")
                return None
        self._warm_again_at = time.perf_counter() + WARM_AGAIN_S
        return WARM_AGAIN_S

    def _inference_failed(self, what: str) -> None:
        self.n_inference_errors += 1
        logger.error("inference failed on %s:\n%s", what, traceback.format_exc())

    def _refuse(self) -> bool:
        """Whether to leave this window or chunk undecoded: the stream is off its rate.

        Data at another rate than the bundle was trained on is not decodable (the filters and
        the windows assume the declared rate), so nothing is decoded while the source reports
        a rate mismatch; it is said once (and once when it ends), and counted in the summary.
        """
        if self.source is None:
            return False
        mismatch = self.source.health().rate_mismatch
        if mismatch is not None and self.rate_mismatch is None:
            logger.error(
                "Not decoding the stream %r: %s. The decoder '%s' needs data at the declared "
                "rate; set the device (or its LSL driver) to it. Decoding resumes by itself once "
                "the rate is back.",
                self.source.info.name(),
                mismatch,
                self.bundle.name,
            )
        elif mismatch is None and self.rate_mismatch is not None:
            logger.warning(
                "Stream %r back at its declared rate: decoding again.", self.source.info.name()
            )
        if mismatch is not None:
            self.rate_mismatch = mismatch
            self.n_refused += 1
            return True
        self.rate_mismatch = None
        return False

    def _check_gaps(self) -> None:
        """Emit a ``gap`` event for the data gaps the source found since the last check.

        Gaps less than a second after the last one marked are counted by the source but not
        marked again: a stream that breaks every chunk must not flood the text with gap events.
        """
        if self.source is None:
            return
        health = self.source.health()
        for gap in health.gaps[len(health.gaps) - (health.n_gaps - self._n_gaps_seen) :]:
            if abs(gap.start - self._last_gap_marked) >= GAP_MARK_S:
                self._last_gap_marked = gap.start
                self._emit(self.strategy.decoder.mark_gap(gap.start), None)
        self._n_gaps_seen = health.n_gaps

    def _emit(self, text_event: TextEvent, origin: WindowEvent | ChunkEvent | None) -> None:
        """Stamp ``emitted``, record latencies, and hand the event to every consumer.

        "pulled->emitted (cpu)" is the CPU time the worker thread itself spent from the pull to
        here: set against the wall-clock "pulled->emitted" it tells the decoding work from the
        time the thread waited (the interpreter lock, or the core given to another process).
        """
        now = pylsl.local_clock()
        if origin is not None and math.isfinite(origin.cpu_pulled):
            self.latency.add("pulled->emitted (cpu)", time.thread_time() - origin.cpu_pulled)
        text_event.stages["emitted"] = now
        if isinstance(origin, WindowEvent):
            text_event.stages["sample"] = origin.window.t_complete
            st = text_event.stages
            self.latency.add("sample->emitted", now - origin.window.t_complete)
            self.latency.add("pulled->emitted", now - st["pulled"])
            self.latency.add("windowed->emitted", now - st["windowed"])
            if "inferred" in st:
                self.latency.add("windowed->inferred", st["inferred"] - st["windowed"])
        elif isinstance(origin, ChunkEvent):
            text_event.stages["sample"] = float(origin.chunk.timestamps[-1])
            self.latency.add("pulled->emitted", now - origin.t_pulled)
            self.latency.add("sample->emitted", now - float(origin.chunk.timestamps[-1]))
        self.events.put(text_event)
        if self._outlet is None and self._log_thread is None:
            line = ""  # nobody reads JSON: not encoded (a few % of a max-speed replay)
        else:
            line = text_event.to_json()
        if self._outlet is not None:
            self._outlet.push(line)
        if self._log_thread is not None:
            try:
                self._log_queue.put_nowait(line)
            except queue.Full:
                self.n_log_dropped += 1
        for listener in self._listeners:
            try:
                listener(text_event)
            except Exception:  # a report collector never ends the session
                logger.exception("a text event listener failed")

    def _write_log(self) -> None:
        while True:
            item = self._log_queue.get()
            if item is None:
                return
            self._log_file.write((item if isinstance(item, str) else strict_json(item)) + "\n")
            if self._log_queue.empty():
                self._log_file.flush()
