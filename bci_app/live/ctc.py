"""Live decoding with an asynchronous Brain2Qwerty v2 (CTC) bundle: no keystroke timing needed.

The preprocessed stream goes to :class:`~bci_app.typing.ctc.CTCTypingDecoder` chunk by chunk;
it re-decodes the sentence so far every ``hop_s`` (streaming CTC, a ``keystroke`` event with the
best-path hypothesis) and commits it with the CTC prefix beam and the LM at the sentence end.
Sentence boundaries come from ``sentence_start:``/``sentence_end:`` markers, cut at their exact
sample; between sentences (after an end, before the next start) data are not decoded. Without
sentence markers the stream is decoded continuously and sentences are cut at ``max_sentence_s``.
"""

from __future__ import annotations

import numpy as np

from bci_app.live.session import LiveSession
from bci_app.processing.stages import Chunk
from bci_app.processing.windowing import SlidingWindower
from bci_app.typing.ctc import CTCTypingDecoder


class _NoWindows(SlidingWindower):
    """A windower that never emits (the v2 decoder reads the continuous stream)."""

    def __init__(self) -> None:
        pass

    def push_data(self, data, timestamps, valid=None):
        return []

    def push_markers(self, markers):
        return []


class CTCLiveSession(LiveSession):
    """:class:`~bci_app.live.session.LiveSession` for ``brain2qwerty_v2`` bundles (same outputs)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline.on_chunk = self._on_chunk

    def _open_decoder(self, provider: str) -> CTCTypingDecoder:
        if self.bundle.manifest.get("arch") != "brain2qwerty_v2":
            raise ValueError(
                f"The bundle '{self.bundle.name}' is a {self.bundle.manifest.get('arch')} "
                "decoder; CTCLiveSession runs brain2qwerty_v2 bundles (use LiveSession)."
            )
        return CTCTypingDecoder(self.bundle, provider=provider)

    def _make_windower(self):
        return _NoWindows()

    def _on_chunk(self, chunk: Chunk, t_pulled: float, t_preprocessed: float) -> None:
        stages = {"pulled": t_pulled, "preprocessed": t_preprocessed}
        # samples whose data were NaN/Inf (replaced upstream) carry no signal: zero, not decoded
        data = np.where(chunk.valid[:, None], chunk.data, 0.0).astype(np.float32)
        ts = chunk.timestamps
        with self._lock:
            self._check_gaps()
            start = 0
            while True:
                nxt = self._boundaries[0].timestamp if self._boundaries else np.inf
                cut = int(np.searchsorted(ts, nxt))
                self._feed(data[start:cut], ts[start:cut], stages)
                if cut >= len(ts):
                    return
                self._apply_boundaries(nxt + 1e-9)  # ends/starts the sentence at this sample
                start = cut

    def _feed(self, data: np.ndarray, ts: np.ndarray, stages: dict) -> None:
        if not len(ts) or (self._saw_sentence_markers and not self.decoder.in_sentence):
            return
        event = self.decoder.add_data(data, ts, dict(stages))
        if event is not None:
            self._emit(event, None)
            self.latency.add("pulled->emitted", event.stages["emitted"] - stages["pulled"])
            self.latency.add("sample->emitted", event.stages["emitted"] - float(ts[-1]))
