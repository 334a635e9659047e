"""Live keystroke-locked typing (Brain2Qwerty v1): a strategy of the decoding session.

Each ``key:`` marker's window goes to :class:`~bci_app.typing.keystroke.KeystrokeDecoder`, which
updates the live hypothesis of the open sentence. Sentence boundaries come from
``sentence_start:``/``sentence_end:`` markers (:class:`SentenceBoundaries`, shared with the CTC
strategy). A boundary is acted on once the data have reached ``marker time + window tmax``: by
then every keystroke before it has its window, so the sentence closes with all of its keys, in
the same order as offline evaluation. Without sentence markers, a pause of ``pause_s`` without
keystrokes closes the sentence. :class:`~bci_app.live.session.DecodingSession` runs it.
"""

from __future__ import annotations

from pathlib import Path

from acquisition.recording import Marker, parse_marker
from bci_app.decoders.bundle import Bundle, load_bundle
from bci_app.decoders.events import TextEvent
from bci_app.live.pipeline import ChunkEvent, WindowEvent
from bci_app.live.session import Emit
from bci_app.processing.preprocessing import PreprocessConfig
from bci_app.typing.common import SentenceDecoding, check_typing_bundle
from bci_app.typing.keystroke import KeystrokeDecoder, make_windower, preprocess_config


class SentenceBoundaries:
    """Sentence markers of a typing session, and the sentences committed at them.

    Parameters
    ----------
    decoder : KeystrokeDecoder | CTCDecoder
        The typing decoder whose sentences the markers open and close.
    """

    def __init__(self, decoder) -> None:
        self.decoder = decoder
        #: SentenceDecoding of each committed sentence, in order.
        self.sentences: list[SentenceDecoding] = []
        #: Whether the stream has shown a sentence marker (then pauses end no sentence).
        self.seen = False
        self._pending: list[Marker] = []

    def add(self, markers: list[Marker]) -> None:
        """Keep the sentence markers of a batch, in time order."""
        for marker in markers:
            if parse_marker(marker.value)[0] in ("sentence_start", "sentence_end"):
                self.seen = True
                self._pending.append(marker)
        self._pending.sort(key=lambda m: m.timestamp)

    @property
    def next_time(self) -> float:
        """Stream time of the next boundary not yet acted on (inf: none)."""
        return self._pending[0].timestamp if self._pending else float("inf")

    def apply(self, before: float, emit: Emit) -> None:
        """Act on the boundaries earlier than ``before`` (stream time): end and start sentences."""
        while self._pending and self._pending[0].timestamp < before:
            marker = self._pending.pop(0)
            kind, text = parse_marker(marker.value)
            if self.decoder.in_sentence:
                self.commit(self.decoder.end_sentence(marker.timestamp), emit)
            if kind == "sentence_start":
                self.decoder.start_sentence(text)

    def commit(
        self, event: TextEvent, emit: Emit, origin: WindowEvent | ChunkEvent | None = None
    ) -> None:
        """Keep the sentence a ``sentence_end`` event closes, then emit the event."""
        if event.kind == "sentence_end":
            self.sentences.append(self.decoder.last_sentence)
        emit(event, origin)


class KeystrokeStrategy:
    """Decode keystroke windows of a Brain2Qwerty v1 bundle (module docstring).

    Parameters
    ----------
    bundle : Bundle | path
        Typing bundle of architecture ``brain2qwerty_v1``.
    provider : str
        onnxruntime provider (``auto``, ``cpu``, ``cuda``, ``tensorrt``).
    pause_s : float
        Without sentence markers, keystroke pause that ends a sentence.
    decoder : KeystrokeDecoder | None
        A decoder of ``bundle`` opened beforehand (graphs loaded and warmed up).
    """

    reads_chunks = False

    def __init__(
        self,
        bundle: Bundle | str | Path,
        *,
        provider: str = "auto",
        pause_s: float = 2.0,
        decoder: KeystrokeDecoder | None = None,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        arch = check_typing_bundle(self.bundle)
        if arch != "brain2qwerty_v1":
            raise ValueError(
                f"Invalid bundle: '{self.bundle.name}' is a {arch} decoder; the keystroke "
                "strategy runs keystroke-locked (brain2qwerty_v1) bundles. Use CTCStrategy, or "
                "open_session(), which picks the strategy of the bundle."
            )
        self.decoder = decoder or KeystrokeDecoder(self.bundle, provider=provider)
        self.windower = make_windower(self.bundle)
        window = self.bundle.manifest.window
        self.tmax = 0.0 if window is None else float(window.tmax)
        self.pause_s = float(pause_s)
        self.boundaries = SentenceBoundaries(self.decoder)
        self._last_key_time: float | None = None
        self._held: list[WindowEvent] = []  # windows of one step, decoded with the last one

    @property
    def sentences(self) -> list[SentenceDecoding]:
        """Each committed sentence, in order."""
        return self.boundaries.sentences

    def preprocess_config(self) -> PreprocessConfig:
        """The bundle's preprocessing."""
        return preprocess_config(self.bundle)

    def check_markers(self, has_markers: bool) -> None:
        """Raise ValueError without a marker stream: windows are locked to keystrokes."""
        if not has_markers:
            raise ValueError(
                f"Invalid value for 'markers': the decoder '{self.bundle.name}' is "
                "keystroke-locked and needs the keystroke marker stream. Give it ('bci-app run "
                "--markers NAME', or 'Markers' in the window; 'bci-app streams' lists them)."
            )

    def on_markers(self, markers: list[Marker]) -> None:
        """Keep the sentence boundaries (key markers go to the windower)."""
        self.boundaries.add(markers)

    def on_window(self, event: WindowEvent, emit: Emit) -> None:
        """Close the sentences that end before this keystroke, then decode its window.

        Windows that complete together (``event.n_following`` > 0: a backlog being stepped) are
        held and decoded as one batch with the last of them
        (:meth:`~bci_app.typing.keystroke.KeystrokeDecoder.add_windows`: one sentence-graph run
        for all), split wherever a sentence boundary lies between two of them. Live at 1x,
        keystrokes come one per step and are decoded at once.
        """
        key_time = event.window.time
        if self._held and self.boundaries.next_time < key_time:
            self._decode_held(emit)
        self.boundaries.apply(key_time, emit)
        self._held.append(event)
        self._last_key_time = key_time
        if event.n_following == 0:
            self._decode_held(emit)

    def _decode_held(self, emit: Emit) -> None:
        """Decode the held windows as one batch and emit their events in order."""
        held, self._held = self._held, []
        stages = [
            {"pulled": e.t_pulled, "preprocessed": e.t_preprocessed, "windowed": e.t_windowed}
            for e in held
        ]
        text_events = self.decoder.add_windows([e.window for e in held], stages)
        for origin, text_event in zip(held, text_events):
            if text_event is not None:
                emit(text_event, origin)

    def on_chunk(self, event: ChunkEvent, emit: Emit) -> None:
        """Not called: keystroke decoding reads windows (``reads_chunks`` is False)."""

    def on_step(self, newest: float, emit: Emit) -> None:
        """Act on boundaries whose keys all have their window; end a sentence after a pause."""
        if self._held:  # not after a whole step, but a strategy driven by hand may leave some
            self._decode_held(emit)
        self.boundaries.apply(newest - self.tmax, emit)
        idle = self._last_key_time is not None and newest - self._last_key_time > self.pause_s
        if not self.boundaries.seen and idle and self.decoder.in_sentence:
            self.boundaries.commit(self.decoder.end_sentence(newest), emit)
            self._last_key_time = None

    def flush(self, emit: Emit) -> None:
        """Decode any held window, then commit the open sentence."""
        if self._held:
            self._decode_held(emit)
        if self.decoder.in_sentence:
            self.boundaries.commit(self.decoder.end_sentence(), emit)

    def summary(self) -> dict:
        """Sentences committed."""
        return {"sentences": len(self.sentences)}
