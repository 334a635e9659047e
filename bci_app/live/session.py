"""Live decoding session: stream -> preprocessing -> windows -> decoder -> text events.

Threads: the stream source's acquisition worker fills its ring buffer; one pipeline worker
(:class:`~bci_app.live.pipeline.LivePipeline`) preprocesses, cuts windows and decodes them on the
spot (a keystroke costs well under a millisecond of inference, so a hand-off queue would only add
latency); text events go out through bounded queues to the GUI and the session log writer, and to
the LSL text outlet (recorded with the session when a recorder runs).

Sentence boundaries come from ``sentence_start:``/``sentence_end:`` markers. A boundary is acted
on once the data have reached ``marker time + window tmax``: by then every keystroke before it has
its window, so the sentence closes with all of its keys, in the same order as offline evaluation.
Without sentence markers, a pause of ``pause_s`` without keystrokes closes the sentence.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import traceback
from collections import deque
from pathlib import Path

import pylsl

from acquisition.markers import MarkerSource
from acquisition.outlets import TextOutlet
from acquisition.recording import Marker, parse_marker
from acquisition.stream import StreamSource
from bci_app.decoders.bundle import Bundle, load_bundle
from bci_app.decoders.events import TextEvent
from bci_app.live.metrics import LatencyStats
from bci_app.live.pipeline import LivePipeline, WindowEvent
from bci_app.processing.preprocessing import Preprocessor
from bci_app.typing.keystroke import make_windower, open_decoder, preprocess_config

logger = logging.getLogger(__name__)

#: Stage stamps carried by every text event, in order.
STAGES = ("pulled", "preprocessed", "windowed", "inferred", "decoded", "emitted")


class EventQueue:
    """Bounded queue that never blocks its producer: when full the oldest event is dropped.

    Drops are counted, so a slow consumer (a busy GUI, a stalled log disk) costs events, never
    memory or decoder latency.
    """

    def __init__(self, maxsize: int = 1000) -> None:
        self._items: deque[TextEvent] = deque(maxlen=maxsize)
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self.n_dropped = 0

    def put(self, event: TextEvent) -> None:
        with self._lock:
            if len(self._items) == self._items.maxlen:
                self.n_dropped += 1
            self._items.append(event)
            self._ready.notify()

    def get(self, timeout: float | None = None) -> TextEvent:
        """Return the oldest event; raise queue.Empty after ``timeout`` seconds."""
        with self._ready:
            if not self._items and not self._ready.wait_for(lambda: self._items, timeout):
                raise queue.Empty
            return self._items.popleft()

    def drain(self) -> list[TextEvent]:
        with self._lock:
            items, self._items = list(self._items), deque(maxlen=self._items.maxlen)
            return items

    def __len__(self) -> int:
        return len(self._items)


class LiveSession:
    """Decode a live typing stream with a decoder bundle.

    Parameters
    ----------
    bundle : Bundle | path
        Typing decoder bundle (checked against the stream before anything starts).
    source : StreamSource
        Connected data stream.
    markers : MarkerSource
        Connected keystroke/sentence marker stream.
    provider : str
        onnxruntime provider (``auto``, ``cpu``, ``cuda``, ``tensorrt``).
    log_path : path | None
        JSONL session log (one text event per line, then a summary line).
    text_outlet : bool
        Publish each event as JSON on an LSL string stream ``bci-app-text``.
    pause_s : float
        Without sentence markers, keystroke pause that ends a sentence.
    queue_size : int
        Text events kept for a slow GUI before the oldest are dropped (counted).
    decoder : TypingDecoder | None
        A decoder of ``bundle`` opened beforehand (default: opened here).
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        source: StreamSource,
        markers: MarkerSource,
        *,
        provider: str = "auto",
        log_path: str | Path | None = None,
        text_outlet: bool = True,
        text_source_id: str | None = None,
        pause_s: float = 2.0,
        queue_size: int = 1000,
        decoder=None,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.bundle.check_stream(
            source.channels, source.sfreq, stream_name=f"the stream '{source.info.name()}'"
        )
        # a decoder opened beforehand (graphs loaded and warmed up) may be handed in
        self.decoder = decoder or self._open_decoder(provider)
        self.source, self.markers = source, markers
        self.tmax = float((self.bundle.manifest.get("window") or {}).get("tmax", 0.0))
        self.pause_s = float(pause_s)
        self.latency = LatencyStats()
        self.events = EventQueue(queue_size)  # for the GUI
        self._log_queue: queue.Queue = queue.Queue(maxsize=10_000)
        self.n_log_dropped = 0
        self.n_inference_errors = 0
        self.sentences: list = []  # SentenceDecoding of each committed sentence, in order
        self._boundaries: list[Marker] = []
        self._saw_sentence_markers = False
        self._last_key_time: float | None = None
        self._n_gaps_seen = 0
        self._lock = threading.Lock()
        preprocessor = Preprocessor(preprocess_config(self.bundle), source.channels.names)
        self.pipeline = LivePipeline(
            source,
            preprocessor,
            self._make_windower(),
            self._on_window,
            markers=markers,
            on_markers=self._on_markers,
            on_step=self._on_step,
        )
        self._outlet = None
        if text_outlet:
            sid = text_source_id or f"bci-app-text-{source.info.source_id()}"
            self._outlet = TextOutlet(name="bci-app-text", source_id=sid)
        self._log_path = None if log_path is None else Path(log_path)
        self._log_thread: threading.Thread | None = None

    def _open_decoder(self, provider: str):
        """Open the bundle's decoder (subclasses decode other tasks)."""
        decoder = open_decoder(self.bundle, provider=provider)
        if not hasattr(decoder, "add_window"):
            raise ValueError(
                f"The bundle '{self.bundle.name}' is a {self.bundle.manifest.get('arch')} "
                "decoder; live decoding runs keystroke-locked (brain2qwerty_v1) bundles."
            )
        return decoder

    def _make_windower(self):
        """The windower fed by the pipeline (keystroke-locked for typing)."""
        return make_windower(self.bundle)

    def _flush(self) -> None:
        """At stop: commit what the decoder still holds (an open sentence)."""
        if self.decoder.in_sentence:
            self._emit(self.decoder.end_sentence(), None)

    @property
    def provider(self) -> str:
        """onnxruntime provider really in use."""
        return self.decoder.active_provider

    @property
    def text_outlet_info(self) -> pylsl.StreamInfo | None:
        """StreamInfo of the text outlet (to record it with the session)."""
        return None if self._outlet is None else self._outlet.info

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LiveSession:
        """Start decoding (and the log writer)."""
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self._log_path, "a", encoding="utf-8")
            self._log_thread = threading.Thread(target=self._write_log, daemon=True)
            self._log_thread.start()
        self.pipeline.start()
        return self

    def stop(self) -> dict:
        """Stop decoding, commit an open sentence, flush the log; return the summary."""
        try:
            self.pipeline.stop()
        finally:
            with self._lock:
                self._flush()
            summary = self.summary()
            if self._log_thread is not None:
                self._log_queue.put({"event": "summary", **summary})
                self._log_queue.put(None)
                self._log_thread.join(timeout=10)
                self._log_file.close()
                self._log_thread = None
            if self._outlet is not None:
                self._outlet.close()
        return summary

    def __enter__(self) -> LiveSession:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def summary(self) -> dict:
        """Counts and latency percentiles of the session so far."""
        health = self.source.health()
        return {
            "bundle": self.bundle.name,
            "provider": self.provider,
            "sentences": len(self.sentences),
            "windows": self.pipeline.n_windows,
            "invalid_windows": self.pipeline.n_invalid_windows,
            "inference_errors": self.n_inference_errors,
            "gaps": health.n_gaps,
            "dropped_samples": health.dropped_samples,
            "events_dropped_gui": self.events.n_dropped,
            "events_dropped_log": self.n_log_dropped,
            "latency_ms": self.latency.summary(),
        }

    # ------------------------------------------------------------------ worker callbacks
    def _on_markers(self, markers: list[Marker]) -> None:
        for marker in markers:
            kind = parse_marker(marker.value)[0]
            if kind in ("sentence_start", "sentence_end"):
                self._saw_sentence_markers = True
                self._boundaries.append(marker)
        self._boundaries.sort(key=lambda m: m.timestamp)

    def _apply_boundaries(self, before: float) -> None:
        """Act on sentence markers earlier than ``before`` (stream time)."""
        while self._boundaries and self._boundaries[0].timestamp < before:
            marker = self._boundaries.pop(0)
            kind, text = parse_marker(marker.value)
            if self.decoder.in_sentence:
                self._emit(self.decoder.end_sentence(marker.timestamp), None)
            if kind == "sentence_start":
                self.decoder.start_sentence(text)

    def _on_window(self, event: WindowEvent) -> None:
        window = event.window
        key_time = window.marker.timestamp if window.marker is not None else window.t_complete
        with self._lock:
            self._check_gaps()
            self._apply_boundaries(key_time)
            stages = {
                "pulled": event.t_pulled,
                "preprocessed": event.t_preprocessed,
                "windowed": event.t_windowed,
            }
            try:
                text_event = self.decoder.add_window(window, stages)
            except Exception:  # an inference error never ends the session
                self.n_inference_errors += 1
                logger.error(
                    "inference failed on the window of %s at %.3f s:\n%s",
                    window.marker.value if window.marker else "a sliding window",
                    key_time,
                    traceback.format_exc(),
                )
                return
            self._last_key_time = key_time
            if text_event is not None:
                self._emit(text_event, event)

    def _on_step(self, newest: float) -> None:
        with self._lock:
            self._check_gaps()
            self._apply_boundaries(newest - self.tmax)
            idle = self._last_key_time is not None and newest - self._last_key_time > self.pause_s
            if not self._saw_sentence_markers and idle and self.decoder.in_sentence:
                self._emit(self.decoder.end_sentence(newest), None)
                self._last_key_time = None

    def _check_gaps(self) -> None:
        health = self.source.health()
        for gap in health.gaps[len(health.gaps) - (health.n_gaps - self._n_gaps_seen) :]:
            self._emit(self.decoder.mark_gap(gap.start), None)
        self._n_gaps_seen = health.n_gaps

    def _emit(self, text_event: TextEvent, window_event: WindowEvent | None) -> None:
        """Stamp ``emitted``, record latencies, and hand the event to every consumer."""
        now = pylsl.local_clock()
        text_event.stages["emitted"] = now
        if window_event is not None:
            st = text_event.stages
            self.latency.add("sample->emitted", now - window_event.window.t_complete)
            self.latency.add("pulled->emitted", now - st["pulled"])
            self.latency.add("windowed->emitted", now - st["windowed"])
            if "inferred" in st:
                self.latency.add("windowed->inferred", st["inferred"] - st["windowed"])
        if text_event.kind == "sentence_end":
            self.sentences.append(self.decoder.last_sentence)
        self.events.put(text_event)
        line = text_event.to_json()
        if self._outlet is not None:
            self._outlet.push(line)
        if self._log_thread is not None:
            try:
                self._log_queue.put_nowait(line)
            except queue.Full:
                self.n_log_dropped += 1

    def _write_log(self) -> None:
        while True:
            item = self._log_queue.get()
            if item is None:
                return
            self._log_file.write((item if isinstance(item, str) else json.dumps(item)) + "\n")
            if self._log_queue.empty():
                self._log_file.flush()


def connect_streams(
    stream: str, markers: str | None, *, timeout: float = 5.0
) -> tuple[StreamSource, MarkerSource | None]:
    """Connect to a data stream and a marker stream given by source_id or name."""
    return _connect(StreamSource, stream, timeout), (
        None if markers is None else _connect(MarkerSource, markers, timeout)
    )


def _connect(cls, query: str, timeout: float):
    try:
        return cls(source_id=query, resolve_timeout=min(timeout, 2.0)).connect()
    except RuntimeError:
        return cls(name=query, resolve_timeout=timeout).connect()
