"""Live speech decoding: stream -> preprocessing -> 3 s windows -> top-k candidates -> events.

:class:`SpeechSession` is the speech counterpart of :class:`~bci_app.live.session.LiveSession` and
reuses all of its wiring (the :class:`~bci_app.live.pipeline.LivePipeline` worker, the bounded
:class:`~bci_app.live.session.EventQueue` for the GUI, the LSL text outlet, the JSONL log writer,
gap marking, latency stats); only the decoder and the windows differ. Windows come from
:class:`SpeechWindower`: locked to ``word:`` onset markers (-0.5..+2.5 s, exactly the windows
of offline evaluation) once the marker stream has shown one, sliding 3 s windows every
``hop_s`` (default 0.25 s) before that or when there is no marker stream. Each window becomes
one ``candidates`` :class:`~bci_app.decoders.events.TextEvent` (top-k texts with probabilities, the
best
one as the hypothesis). Optional drift re-centering (:mod:`bci_app.processing.recentering`) swaps
the fixed
robust scaler for running statistics; off by default.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
import traceback
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from acquisition.markers import MarkerSource
from acquisition.recording import Marker, parse_marker
from acquisition.stream import StreamSource
from bci_app.decoders.bundle import Bundle, load_bundle
from bci_app.live.pipeline import WindowEvent
from bci_app.live.session import LiveSession
from bci_app.processing.recentering import RecenterConfig, RecenteringScaler, enable_recentering
from bci_app.processing.windowing import Window
from bci_app.speech.decoder import DEFAULT_HOP_S, SpeechDecoder, make_windower

logger = logging.getLogger(__name__)

#: Window modes of :class:`SpeechWindower`.
MODES = ("auto", "words", "sliding")


class SpeechWindower:
    """Word-onset-locked windows when ``word:`` markers come, else sliding ones.

    Parameters
    ----------
    bundle : Bundle
        Speech bundle (window, baseline, clamp).
    mode : "auto" | "words" | "sliding"
        ``auto``: sliding windows until the first ``word:`` marker arrives, word-locked windows
        from then on; ``words`` / ``sliding``: only that kind.
    hop_s : float
        Hop of the sliding windows (s).
    """

    def __init__(self, bundle: Bundle, mode: str = "auto", hop_s: float = DEFAULT_HOP_S) -> None:
        if mode not in MODES:
            raise ValueError(f"Invalid value for 'mode': {mode!r}; use one of {MODES}.")
        if not hop_s > 0:
            raise ValueError(f"Invalid value for 'hop_s': {hop_s!r}; it must be > 0 seconds.")
        self.mode = mode
        self.words = make_windower(bundle) if mode != "sliding" else None
        self.sliding = make_windower(bundle, sliding=True, hop_s=hop_s) if mode != "words" else None
        self.saw_word = False

    @property
    def word_locked(self) -> bool:
        """True once windows are locked to word onsets."""
        return self.mode == "words" or (self.mode == "auto" and self.saw_word)

    def push_markers(self, markers: Sequence[Marker]) -> list[Window]:
        """Add markers; return the word windows already complete."""
        if self.words is None:
            return []
        if not self.saw_word:
            self.saw_word = any(parse_marker(m.value)[0] == "word" for m in markers)
        return self.words.push_markers(markers)

    def push_data(self, data, timestamps, valid=None) -> list[Window]:
        """Add preprocessed samples; return the windows they complete."""
        windows = [] if self.words is None else self.words.push_data(data, timestamps, valid)
        if self.sliding is not None:
            sliding = self.sliding.push_data(data, timestamps, valid)
            if not self.word_locked:
                windows += sliding
        return windows

    def finish(self) -> int:
        """Declare the stream ended; return the word markers left without a window."""
        return 0 if self.words is None else self.words.finish()

    def reset(self) -> None:
        """Forget samples and pending markers."""
        for windower in (self.words, self.sliding):
            if windower is not None:
                windower.reset()


class SpeechSession(LiveSession):
    """Decode a live listening stream with a speech bundle (module docstring).

    Parameters
    ----------
    bundle : Bundle | path
        Speech decoder bundle (checked against the stream before anything starts).
    source : StreamSource
        Connected data stream.
    markers : MarkerSource | None
        Connected marker stream with ``word:`` onsets (None: sliding windows only).
    mode : "auto" | "words" | "sliding"
        Window mode (:class:`SpeechWindower`).
    hop_s : float
        Hop of sliding windows (s).
    top_k : int
        Candidates per event.
    recenter : RecenterConfig | bool | None
        Drift re-centering of the scaler statistics (True: default settings; None/False: off,
        the bundle's fixed statistics as in training).
    provider, log_path, text_outlet, text_source_id, queue_size
        As for :class:`~bci_app.live.session.LiveSession`.
    decoder : SpeechDecoder | None
        A decoder of ``bundle`` opened beforehand (default: opened here).
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        source: StreamSource,
        markers: MarkerSource | None = None,
        *,
        mode: str = "auto",
        hop_s: float = DEFAULT_HOP_S,
        top_k: int = 10,
        recenter: RecenterConfig | bool | None = None,
        provider: str = "auto",
        log_path: str | Path | None = None,
        text_outlet: bool = True,
        text_source_id: str | None = None,
        queue_size: int = 1000,
        decoder: SpeechDecoder | None = None,
    ) -> None:
        if markers is None and mode == "words":
            raise ValueError(
                "Invalid value for 'mode': 'words' needs the marker stream with word onsets; "
                "give 'markers', or use mode='sliding'."
            )
        self._mode, self._hop_s, self._top_k = mode, hop_s, top_k
        self.n_words = 0
        super().__init__(
            bundle if isinstance(bundle, Bundle) else load_bundle(bundle),
            source,
            markers,
            provider=provider,
            log_path=log_path,
            text_outlet=text_outlet,
            text_source_id=text_source_id,
            queue_size=queue_size,
            decoder=decoder,
        )
        self.recentering: RecenteringScaler | None = None
        if recenter:
            config = recenter if isinstance(recenter, RecenterConfig) else RecenterConfig()
            self.recentering = enable_recentering(self.pipeline.preprocessor, config)

    def _open_decoder(self, provider: str) -> SpeechDecoder:
        return SpeechDecoder(self.bundle, provider=provider, top_k=self._top_k)

    def _make_windower(self) -> SpeechWindower:
        mode = "sliding" if self.markers is None else self._mode
        return SpeechWindower(self.bundle, mode, self._hop_s)

    def _flush(self) -> None:
        """Nothing is held back: every window was decoded when it completed."""

    @property
    def word_locked(self) -> bool:
        """True once windows are locked to word onsets."""
        return self.pipeline.windower.word_locked

    def summary(self) -> dict:
        """Counts and latency percentiles of the session so far."""
        summary = super().summary()
        summary.pop("sentences")
        summary["words"] = self.n_words
        summary["word_locked"] = self.word_locked
        summary["recentering_updates"] = (
            0 if self.recentering is None else self.recentering.n_updates
        )
        return summary

    # ------------------------------------------------------------------ worker callbacks
    def _on_markers(self, markers: list[Marker]) -> None:
        """Word markers go to the windower; nothing else needs them."""

    def _on_window(self, event: WindowEvent) -> None:
        window = event.window
        stages = {
            "pulled": event.t_pulled,
            "preprocessed": event.t_preprocessed,
            "windowed": event.t_windowed,
        }
        with self._lock:
            self._check_gaps()
            try:
                text_event = self.decoder.add_window(window, stages)
            except Exception:  # an inference error never ends the session
                self._log_inference_error(window)
                return
            if text_event is None:
                return
            if window.marker is not None:
                self.n_words += 1
                heard = parse_marker(window.marker.value)[1]
                text_event = dataclasses.replace(text_event, target=heard or None)
            self._emit(text_event, event)

    def _on_step(self, newest: float) -> None:
        with self._lock:
            self._check_gaps()

    def _log_inference_error(self, window: Window) -> None:
        self.n_inference_errors += 1
        logger.error(
            "inference failed on the window of %s:\n%s",
            window.marker.value if window.marker else "a sliding window",
            traceback.format_exc(),
        )


def run_speech_live(args, stop: threading.Event, bundle: Bundle, start_simulator) -> int:
    """``bci-app run`` with a speech bundle: decode and print the top candidates per window.

    ``start_simulator(stack, seed, bundle, task)`` starts the built-in stream when no
    ``--stream`` is given (:func:`bci_app.cli.run._start_simulator`).
    """
    from bci_app.live.session import connect_streams

    if bundle.task != "speech":
        raise ValueError(
            f"Invalid bundle: '{bundle.name}' is a {bundle.task!r} decoder, but '--task "
            "listening' needs a speech bundle. Give --bundle SPEECH_BUNDLE or --task typing."
        )
    with ExitStack() as stack:
        if args.stream is None:
            data_id, marker_id = start_simulator(stack, args.seed, bundle, "listening")
        else:
            data_id, marker_id = args.stream, args.markers
        source, markers = connect_streams(data_id, marker_id)
        stack.callback(source.disconnect)
        if markers is not None:
            stack.callback(markers.disconnect)
        session = SpeechSession(
            bundle,
            source,
            markers,
            provider=args.provider,
            log_path=args.log,
            recenter=getattr(args, "recenter", False),
        )
        if args.record:
            from acquisition.recorder import Recorder

            infos = [source.info, None if markers is None else markers.info]
            ids = [i.source_id() for i in [*infos, session.text_outlet_info] if i is not None]
            stack.enter_context(Recorder(args.record, ids))
        windows = "word-onset" if markers is not None else f"sliding ({DEFAULT_HOP_S:g} s hop)"
        print(
            f"Decoding '{source.info.name()}' with '{bundle.name}' ({session.decoder.n_candidates}"
            f" candidates, {windows} windows) on {session.provider}",
            flush=True,
        )
        with session:
            _print_candidates(args, stop, session)
        summary = session.stop()
    if args.json:
        print(json.dumps({"event": "summary", **summary}), flush=True)
    else:
        print(
            f"\n{summary['words']} word window(s), {summary['windows']} windows "
            f"({summary['invalid_windows']} invalid), {summary['gaps']} gap(s), "
            f"{summary['inference_errors']} inference error(s); provider {summary['provider']}."
        )
        print("Latency per stage:\n" + session.latency.format())
    return 0


def _print_candidates(args, stop: threading.Event, session: SpeechSession) -> None:
    start = time.monotonic()
    n_hits = n_heard = 0
    while not stop.is_set():
        if args.duration is not None and time.monotonic() - start >= args.duration:
            return
        try:
            event = session.events.get(timeout=0.1)
        except queue.Empty:
            continue
        if args.json:
            print(event.to_json(), flush=True)
            continue
        if event.kind == "gap":
            print(f"  [data gap at {event.timestamp:.2f} s]", flush=True)
            continue
        top = "  ".join(f"{text} {p:.2f}" for text, p in event.candidates[:5])
        line = f"  {event.timestamp:9.2f} s  top: {top}"
        if event.target is not None:
            texts = [text for text, _ in event.candidates]
            n_heard += 1
            n_hits += event.target.lower() in texts
            rank = texts.index(event.target.lower()) + 1 if event.target.lower() in texts else None
            where = f"rank {rank}" if rank else f"not in top {len(texts)}"
            line = f"  heard {event.target!r:<16} ({where}; top-{len(texts)} {n_hits}/{n_heard})"
            line += f"\n      top: {top}"
        print(line, flush=True)
