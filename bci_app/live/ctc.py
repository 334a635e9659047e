"""Live asynchronous typing (Brain2Qwerty v2, CTC): a strategy of the decoding session.

No keystroke timing is needed: the preprocessed stream goes to
:class:`~bci_app.typing.ctc.CTCDecoder` chunk by chunk; it re-decodes the sentence so far every
``hop_s`` (streaming CTC, a ``keystroke`` event with the best-path hypothesis) and commits it with
the CTC prefix beam and the LM at the sentence end. Sentence boundaries come from
``sentence_start:``/``sentence_end:`` markers, cut at their exact sample; between sentences (after
an end, before the next start) data are not decoded. Without sentence markers the stream is
decoded continuously and sentences are cut at ``max_sentence_s``.
:class:`~bci_app.live.session.DecodingSession` runs it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from acquisition.recording import Marker
from bci_app.decoders.bundle import Bundle, load_bundle
from bci_app.live.keystroke import SentenceBoundaries
from bci_app.live.pipeline import ChunkEvent, WindowEvent
from bci_app.live.session import Emit
from bci_app.processing.preprocessing import PreprocessConfig
from bci_app.processing.stages import Chunk
from bci_app.typing.common import SentenceDecoding, check_typing_bundle, preprocess_config
from bci_app.typing.ctc import CTCDecoder


class CTCStrategy:
    """Decode the continuous stream with a Brain2Qwerty v2 bundle (module docstring).

    Parameters
    ----------
    bundle : Bundle | path
        Typing bundle of architecture ``brain2qwerty_v2``.
    provider : str
        onnxruntime provider (``auto``, ``cpu``, ``cuda``, ``tensorrt``).
    decoder : CTCDecoder | None
        A decoder of ``bundle`` opened beforehand (graph loaded and warmed up).
    """

    reads_chunks = True
    #: The decoder reads the continuous stream: no windows.
    windower = None

    def __init__(
        self,
        bundle: Bundle | str | Path,
        *,
        provider: str = "auto",
        decoder: CTCDecoder | None = None,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        arch = check_typing_bundle(self.bundle)
        if arch != "brain2qwerty_v2":
            raise ValueError(
                f"Invalid bundle: '{self.bundle.name}' is a {arch} decoder; the CTC strategy "
                "runs brain2qwerty_v2 bundles. Use KeystrokeStrategy, or open_session(), which "
                "picks the strategy of the bundle."
            )
        self.decoder = decoder or CTCDecoder(self.bundle, provider=provider)
        self.boundaries = SentenceBoundaries(self.decoder)

    @property
    def sentences(self) -> list[SentenceDecoding]:
        """Each committed sentence, in order."""
        return self.boundaries.sentences

    def preprocess_config(self) -> PreprocessConfig:
        """The bundle's preprocessing."""
        return preprocess_config(self.bundle)

    def check_markers(self, has_markers: bool) -> None:
        """Any stream will do: without sentence markers, sentences are cut by length."""

    def on_markers(self, markers: list[Marker]) -> None:
        """Keep the sentence boundaries."""
        self.boundaries.add(markers)

    def on_window(self, event: WindowEvent, emit: Emit) -> None:
        """Not called: there is no windower."""

    def on_chunk(self, event: ChunkEvent, emit: Emit) -> None:
        """Feed the chunk to the decoder, ending and starting sentences at their marker sample."""
        chunk = event.chunk
        # samples whose data were NaN/Inf (replaced upstream) carry no signal: zero, not decoded
        data = np.where(chunk.valid[:, None], chunk.data, 0.0).astype(np.float32)
        start = 0
        while True:
            boundary = self.boundaries.next_time
            cut = int(np.searchsorted(chunk.timestamps, boundary))
            piece = Chunk(data[start:cut], chunk.timestamps[start:cut], chunk.valid[start:cut])
            self._feed(dataclasses.replace(event, chunk=piece), emit)
            if cut >= len(chunk.timestamps):
                return
            self.boundaries.apply(boundary + 1e-9, emit)  # ends/starts the sentence here
            start = cut

    def _feed(self, event: ChunkEvent, emit: Emit) -> None:
        piece = event.chunk
        if not len(piece.timestamps):
            return
        if self.boundaries.seen and not self.decoder.in_sentence:
            return  # between sentences
        stages = {"pulled": event.t_pulled, "preprocessed": event.t_preprocessed}
        text_event = self.decoder.add_data(piece.data, piece.timestamps, stages)
        if text_event is not None:
            self.boundaries.commit(text_event, emit, event)

    def on_step(self, newest: float, emit: Emit) -> None:
        """Nothing waits for later data: boundaries are cut at their sample in :meth:`on_chunk`."""

    def flush(self, emit: Emit) -> None:
        """Commit the open sentence."""
        if self.decoder.in_sentence:
            self.boundaries.commit(self.decoder.end_sentence(), emit)

    def summary(self) -> dict:
        """Sentences committed."""
        return {"sentences": len(self.sentences)}
