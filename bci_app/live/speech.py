"""Live speech decoding: 3 s windows -> top-k candidates, a strategy of the decoding session.

:class:`SpeechStrategy` runs under :class:`~bci_app.live.session.DecodingSession`, which owns the
wiring every task shares (the pipeline worker, the bounded event queue for the GUI, the LSL text
outlet, the JSONL log writer, gap marking, latency stats). Windows come from
:class:`SpeechWindower`: locked to ``word:`` onset markers (-0.5..+2.5 s, exactly the windows of
offline evaluation) once the marker stream has shown one, sliding 3 s windows every ``hop_s``
(default 0.25 s) before that or when there is no marker stream. Each window becomes one
``candidates`` :class:`~bci_app.decoders.events.TextEvent` (top-k texts with probabilities, the
best one as the hypothesis, the heard word as the target of a word-locked window).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from acquisition.recording import Marker, parse_marker
from bci_app.decoders.bundle import Bundle, load_bundle
from bci_app.live.pipeline import ChunkEvent, WindowEvent
from bci_app.live.session import Emit
from bci_app.processing.preprocessing import PreprocessConfig
from bci_app.processing.windowing import Window
from bci_app.speech.decoder import DEFAULT_HOP_S, SpeechDecoder, make_windower, preprocess_config

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

    def restart(self, reason: str) -> int:
        """Start a new timeline (the clock went back); return the word markers dropped."""
        dropped = 0
        for windower in (self.words, self.sliding):
            if windower is not None:
                dropped += windower.restart(reason)
        return dropped

    def reset(self) -> None:
        """Forget samples and pending markers."""
        for windower in (self.words, self.sliding):
            if windower is not None:
                windower.reset()


class SpeechStrategy:
    """Decode speech windows of a speech bundle into top-k candidates (module docstring).

    Parameters
    ----------
    bundle : Bundle | path
        Speech decoder bundle.
    mode : "auto" | "words" | "sliding"
        Window mode (:class:`SpeechWindower`).
    hop_s : float
        Hop of sliding windows (s).
    top_k : int
        Candidates per event.
    provider : str
        onnxruntime provider (``auto``, ``cpu``, ``cuda``, ``tensorrt``).
    decoder : SpeechDecoder | None
        A decoder of ``bundle`` opened beforehand (default: opened here).
    """

    reads_chunks = False

    def __init__(
        self,
        bundle: Bundle | str | Path,
        *,
        mode: str = "auto",
        hop_s: float = DEFAULT_HOP_S,
        top_k: int = 10,
        provider: str = "auto",
        decoder: SpeechDecoder | None = None,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.decoder = decoder or SpeechDecoder(self.bundle, provider=provider, top_k=top_k)
        self.windower = SpeechWindower(self.bundle, mode, hop_s)
        self.n_words = 0

    @property
    def word_locked(self) -> bool:
        """True once windows are locked to word onsets."""
        return self.windower.word_locked

    def preprocess_config(self) -> PreprocessConfig:
        """The bundle's preprocessing."""
        return preprocess_config(self.bundle)

    def check_markers(self, has_markers: bool) -> None:
        """Raise ValueError for word-locked windows without a marker stream."""
        if not has_markers and self.windower.mode == "words":
            raise ValueError(
                "Invalid value for 'mode': 'words' needs the marker stream with word onsets; "
                "give 'markers', or use mode='sliding'."
            )

    def on_markers(self, markers: list[Marker]) -> None:
        """Word markers go to the windower; nothing else needs them."""

    def on_window(self, event: WindowEvent, emit: Emit) -> None:
        """Rank the candidates of a window; a word-locked one carries the heard word."""
        window = event.window
        stages = {
            "pulled": event.t_pulled,
            "preprocessed": event.t_preprocessed,
            "windowed": event.t_windowed,
        }
        text_event = self.decoder.add_window(window, stages)
        if text_event is None:
            return
        if window.marker is not None:
            self.n_words += 1
            heard = parse_marker(window.marker.value)[1]
            text_event = dataclasses.replace(text_event, target=heard or None)
        emit(text_event, event)

    def on_chunk(self, event: ChunkEvent, emit: Emit) -> None:
        """Not called: speech decoding reads windows (``reads_chunks`` is False)."""

    def on_step(self, newest: float, emit: Emit) -> None:
        """Nothing waits for later data: each window is decoded when it completes."""

    def flush(self, emit: Emit) -> None:
        """Nothing is held back: every window was decoded when it completed."""

    def summary(self) -> dict:
        """Word-locked windows decoded, whether windows are locked to word onsets, candidates."""
        return {
            "words": self.n_words,
            "word_locked": self.word_locked,
            "candidates": self.decoder.n_candidates,
        }
