"""Brain2Qwerty v2 (asynchronous, CTC) typing decoder over a bundle: continuous data in, text out.

Processed samples are appended with :meth:`CTCDecoder.add_data`. The Conformer attends over
the whole sentence, so every ``hop_s`` the ``ctc`` graph is re-run over the sentence so far and its
best path (greedy CTC) is the live hypothesis; :meth:`CTCDecoder.end_sentence` decodes the
whole sentence with the CTC prefix beam and the LM (up to ~1 ms per 40 ms frame in Python: too slow
to repeat every hop, fine once per sentence). As for v1, the committed text depends only on
the sentence's samples, so offline evaluation and live decoding agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pylsl

from bci_app.decoders.bundle import Bundle
from bci_app.decoders.events import TextEvent
from bci_app.lm.beam import CTCPrefixBeamDecoder, ctc_greedy_decode
from bci_app.typing.alphabet import N_CLASSES
from bci_app.typing.common import (
    SentenceDecoderBase,
    SentenceDecoding,
    beam_candidates,
    log_softmax,
    preprocess_config,
)


class CTCDecoder(SentenceDecoderBase):
    """Brain2Qwerty v2 decoder: continuous processed samples in, text events out.

    Parameters
    ----------
    bundle : Bundle | path
        A typing bundle of architecture ``brain2qwerty_v2``.
    provider : "auto" | "cpu" | "cuda" | "tensorrt"
        onnxruntime provider.
    threads : int | None
        onnxruntime intra-op threads (default :func:`~bci_app.decoders.runtime.default_threads`).
    use_lm : bool
        Decode the sentence with the CTC prefix beam and the LM (else best path).
    hop_s : float
        Seconds of new data between live re-decodings of the sentence so far.
    max_sentence_s : float
        A sentence longer than this is ended and committed automatically (bounded memory).
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        *,
        provider: str = "auto",
        threads: int | None = None,
        use_lm: bool = True,
        hop_s: float = 0.5,
        max_sentence_s: float = 120.0,
    ) -> None:
        super().__init__(bundle, provider, use_lm, threads)
        if self.arch != "brain2qwerty_v2":
            raise ValueError(
                f"Invalid bundle: '{self.bundle.name}' is a {self.arch} decoder; CTCDecoder "
                "runs continuous data (brain2qwerty_v2). Use KeystrokeDecoder or open_decoder()."
            )
        self.sfreq = float(preprocess_config(self.bundle).rate_after)
        if not hop_s > 0 or not max_sentence_s > hop_s:
            raise ValueError(
                f"Invalid values for 'hop_s'/'max_sentence_s': {hop_s!r}, {max_sentence_s!r}; "
                "use 0 < hop_s < max_sentence_s (seconds)."
            )
        self.hop = max(1, round(hop_s * self.sfreq))
        self.max_samples = round(max_sentence_s * self.sfreq)
        window = self.bundle.manifest.window
        self.clamp = None if window is None else window.clamp
        self._ctc = self._graph("ctc", {"x": (1, self.n_channels, 4 * self.hop), "subject": (1,)})
        self._runtimes = (self._ctc,)
        self._beam = None
        if self.lm is not None:
            decoding = self.decoding
            bonus = decoding.insertion_bonus
            self._beam = CTCPrefixBeamDecoder(
                self.lm,
                beam_width=30 if decoding.beam_width is None else decoding.beam_width,
                lm_weight=self.lm_weight,
                insertion_bonus=0.0 if bonus is None else float(bonus),
                top_k=8 if decoding.ctc_top_k is None else decoding.ctc_top_k,
            )
        self._data = np.zeros((self.n_channels, self.max_samples), np.float32)
        self.reset()

    def _clear(self) -> None:
        self._n = self._n_decoded = 0
        self._first_time = self._last_time = math.nan
        self._log_probs = np.zeros((0, N_CLASSES + 1))
        self._hypothesis, self._confidence = "", ()

    def _n_items(self) -> int:
        return self._n

    def add_data(
        self,
        data: np.ndarray,
        timestamps: np.ndarray,
        stages: Mapping[str, float] | None = None,
    ) -> TextEvent | None:
        """Append processed samples ``(n_times, n_channels)``; return an event when re-decoded.

        The ``ctc`` graph re-runs over the sentence so far once ``hop_s`` of new data have
        arrived (``keystroke`` event with the best-path hypothesis); a sentence reaching
        ``max_sentence_s`` is ended (``sentence_end`` event) and the samples start the next one.
        """
        data = np.asarray(data, dtype=np.float32)
        timestamps = np.asarray(timestamps, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != self.n_channels or len(timestamps) != len(data):
            raise ValueError(
                f"Invalid value for 'data': expected processed samples (n_times, "
                f"{self.n_channels}) with one timestamp each, got {data.shape} and "
                f"{timestamps.shape}. Push the bundle's Preprocessor output."
            )
        if len(data) > self.max_samples:
            raise ValueError(
                f"Invalid value for 'data': {len(data)} samples in one chunk, more than a whole "
                f"sentence may hold ({self.max_samples}, max_sentence_s). Push smaller chunks."
            )
        if not self._open:
            self.start_sentence()
        if self._n + len(data) > self.max_samples:
            event = self.end_sentence(timestamps[0], stages)
            self.start_sentence()
            self._push(data, timestamps)
            return event
        self._push(data, timestamps)
        if self._n - self._n_decoded < self.hop:
            return None
        self._run_graph()
        stages = dict(stages or {})
        stages["inferred"] = pylsl.local_clock()
        self._hypothesis = ctc_greedy_decode(self._log_probs)
        self._confidence = self._greedy_confidence()
        return self._event(
            "keystroke", self._hypothesis, self._confidence, (), timestamps[-1], stages
        )

    def _push(self, data: np.ndarray, timestamps: np.ndarray) -> None:
        if len(data) == 0:
            return
        if self.clamp is not None:
            data = np.clip(data, -self.clamp, self.clamp)
        self._data[:, self._n : self._n + len(data)] = data.T
        if self._n == 0:
            self._first_time = float(timestamps[0])
        self._last_time = float(timestamps[-1])
        self._n += len(data)

    def _run_graph(self) -> None:
        feeds = {"x": self._data[None, :, : self._n], "subject": self.subject}
        self._log_probs = log_softmax(self._ctc.run(feeds)["log_probs"][0])
        self._n_decoded = self._n

    def _greedy_confidence(self) -> tuple[float, ...]:
        """Probability of each emitted character at the frame that emitted it (best path)."""
        best = self._log_probs.argmax(axis=1)
        blank = N_CLASSES
        emitted = np.flatnonzero((best != blank) & np.concatenate(([True], best[1:] != best[:-1])))
        return tuple(np.exp(self._log_probs[emitted, best[emitted]]).tolist())

    def end_sentence(
        self, timestamp: float = math.nan, stages: Mapping[str, float] | None = None
    ) -> TextEvent:
        """Decode the whole sentence (CTC beam + LM) and commit it; return ``sentence_end``."""
        self._end_checks()
        text, candidates, greedy = "", (), ""
        if self._n:
            if self._n_decoded != self._n:
                self._run_graph()
            greedy = ctc_greedy_decode(self._log_probs)
            text = greedy
            if self._beam is not None:
                text = self._beam.decode(self._log_probs)
                candidates = beam_candidates(self._beam, self.top_k)
        decoding = SentenceDecoding(
            self._target,
            text,
            {"greedy": greedy, "lm": text},
            self._log_probs.copy(),
            timestamps=np.array([self._first_time, self._last_time]),
            gaps=tuple(self._gaps),
        )
        return self._finish(decoding, candidates, timestamp, stages)
