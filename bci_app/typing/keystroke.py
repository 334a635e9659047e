"""Brain2Qwerty v1 typing decoder over a bundle: keystroke windows in, text events out.

Live decoding and offline evaluation use one code path. Per keystroke, :class:`KeystrokeDecoder`
runs the ``keystroke`` graph once on the new window (embedding + conv-only logits), then the
``sentence`` graph over the embeddings of the sentence so far. The sentence transformer is
bidirectional, so every new keystroke changes the posteriors of the earlier ones. Two ways to
keep the live hypothesis (``live_beam``), with the same committed text:

- ``"incremental"`` (default): the LM beam advances one keystroke at a time with the newest
  keystroke's posteriors (bounded cost per keystroke, ~60 us for the beam step);
- ``"full"``: the beam is re-run over all keystrokes of the sentence with the latest posteriors
  (~55 us per keystroke of the sentence: under 5 ms for 85 characters), so the live hypothesis
  already uses every revision.

At :meth:`KeystrokeDecoder.end_sentence` the beam is (re-)run over the final posteriors of the
whole sentence and closed with the LM's end-of-sentence score, so the committed text depends on
the sentence's windows alone, not on the mode or on when hypotheses were asked for. Offline
evaluation (:mod:`bci_app.typing.evaluate`) calls the same methods, so online == offline holds by
construction.

Per-character confidence is the posterior probability (after the transformer) of the decoded
character at its keystroke; candidates are the ``top_k`` classes of the newest keystroke with
their posteriors. The v2 (CTC) decoder is :class:`~bci_app.typing.ctc.CTCDecoder`, and
:func:`open_decoder` picks the right one for a bundle. Only numpy and onnxruntime are needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pylsl

from bci_app.decoders.bundle import Bundle, load_bundle
from bci_app.decoders.events import TextEvent
from bci_app.lm.beam import KeystrokeBeamDecoder
from bci_app.processing.windowing import Window
from bci_app.typing.alphabet import DISPLAY_CHARS, N_CLASSES
from bci_app.typing.common import (
    CLASS_OF,
    SentenceDecoderBase,
    SentenceDecoding,
    beam_candidates,
    best_path,
    bundle_window,
    check_typing_bundle,
    key_class,
    log_softmax,
    make_windower,
    preprocess_config,
)
from bci_app.typing.ctc import CTCDecoder

LIVE_BEAMS = ("incremental", "full")

#: Keystrokes the sentence graph sees at most: the newest ones of the open sentence. Older
#: keystrokes keep the posteriors of their last revision. A typed sentence is 5-10 words (under
#: 100 keystrokes), so this never cuts one; it bounds a sentence that never ends (a marker
#: stream without ``sentence_end``), whose graph would otherwise re-run over a growing input
#: with onnxruntime keeping buffers for every new length (native memory growing without bound)
#: and a cost per keystroke growing with the sentence.
MAX_SENTENCE_KEYS = 256
#: Keystrokes the sentence graph sees on a keystroke with ``live_beam="incremental"``: the new
#: ones and the ``LIVE_CONTEXT_KEYS - 1`` before them. The incremental beam reads only the new
#: keystrokes' rows, and the graph's cost grows with its input (shipped bundle, 2-core VM: 0.5 ms
#: at 1-8 keys, 0.8 ms at 24, 1.4-1.9 ms at 50-60), so rereading a whole long sentence on every
#: keystroke was the tail of the live latency. Over 448 keystrokes of the shipped bundle, the
#: newest row with 24 keys of context had the full context's argmax every time (largest
#: probability difference: p50 0.0008, p99 0.015). :meth:`KeystrokeDecoder.end_sentence` re-runs
#: the graph over the whole sentence, so the committed text is the same as with the full context.
LIVE_CONTEXT_KEYS = 24

__all__ = [
    "CTCDecoder",
    "KeystrokeDecoder",
    "SentenceDecoding",
    "check_typing_bundle",
    "key_class",
    "make_windower",
    "open_decoder",
    "preprocess_config",
]


class KeystrokeDecoder(SentenceDecoderBase):
    """Brain2Qwerty v1 decoder: keystroke windows in, text events out (see module docstring).

    Parameters
    ----------
    bundle : Bundle | path
        A typing bundle of architecture ``brain2qwerty_v1``.
    provider : "auto" | "cpu" | "cuda" | "tensorrt"
        onnxruntime provider (checked; see :class:`~bci_app.decoders.runtime.OnnxRuntime`).
    threads : int | None
        onnxruntime intra-op threads (default :func:`~bci_app.decoders.runtime.default_threads`).
    use_lm : bool
        Fuse the bundle's character LM by beam search; without, the text is the transformer's
        best path.
    live_beam : "incremental" | "full"
        How the live hypothesis follows the revised posteriors (module docstring); the
        committed text is the same either way.
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        *,
        provider: str = "auto",
        threads: int | None = None,
        use_lm: bool = True,
        live_beam: str = "incremental",
    ) -> None:
        if live_beam not in LIVE_BEAMS:
            raise ValueError(
                f"Invalid value for 'live_beam': {live_beam!r}; use one of {LIVE_BEAMS}."
            )
        self.live_beam = live_beam
        super().__init__(bundle, provider, use_lm, threads)
        if self.arch != "brain2qwerty_v1":
            raise ValueError(
                f"Invalid bundle: '{self.bundle.name}' is a {self.arch} decoder; KeystrokeDecoder "
                "runs keystroke windows (brain2qwerty_v1). Use CTCDecoder or open_decoder()."
            )
        self.n_times = bundle_window(self.bundle).n_times
        self._keystroke = self._graph("keystroke")
        self.embedding_dim = int(self._keystroke.run(self._zero_window())["embedding"].shape[-1])
        self._sentence = self._graph(
            "sentence", {"embeddings": (1, 8, self.embedding_dim), "key_mask": (1, 8)}
        )
        self._runtimes = (self._keystroke, self._sentence)
        self._beam = None
        if self.lm is not None:
            self._beam = KeystrokeBeamDecoder(
                self.lm,
                top_k=self.top_k,
                beam_width=30 if self.decoding.beam_width is None else self.decoding.beam_width,
                lm_weight=self.lm_weight,
            )
        self._embeddings = np.zeros((64, self.embedding_dim), np.float32)
        self._conv = np.zeros((64, N_CLASSES))
        self._times = np.zeros(64)
        self.reset()

    def _zero_window(self) -> dict[str, np.ndarray]:
        window = np.zeros((1, self.n_channels, self.n_times), np.float32)
        return {"x": window, "subject": self.subject}

    def _clear(self) -> None:
        self._n = 0
        self._n_skipped = self._n_ignored = 0
        self._log_probs = np.zeros((0, N_CLASSES))
        self._hypothesis, self._confidence = "", ()
        if self._beam is not None:
            self._beam.reset()

    def _n_items(self) -> int:
        return self._n

    @property
    def n_keystrokes(self) -> int:
        """Keystrokes decoded in the open sentence."""
        return self._n

    @property
    def log_probs(self) -> np.ndarray:
        """Latest transformer log-posteriors of the open sentence's keystrokes, (n_keys, 29).

        Each row is from the last sentence-graph run that read its keystroke (live, the newest
        ``LIVE_CONTEXT_KEYS``); :meth:`end_sentence` revises them all.
        """
        return self._log_probs.copy()

    def add_window(self, window: Window, stages: Mapping[str, float] | None = None):
        """Decode a keystroke :class:`~bci_app.processing.windowing.Window`, or skip and count it.

        Invalid windows (NaN stretches, gaps) and windows of keys without a class (see
        :func:`key_class`) are skipped and counted in the sentence's ``n_skipped`` /
        ``n_ignored``; the call then returns None. Live and offline decoding both use this.
        """
        return self.add_windows([window], [stages])[0]

    def add_windows(
        self,
        windows: Sequence[Window],
        stages: Sequence[Mapping[str, float] | None] | None = None,
    ) -> list[TextEvent | None]:
        """Decode several keystroke windows of the open sentence at once; one event (or None) each.

        As :meth:`add_window` on each in turn, except that the sentence graph runs once, after
        the last window, instead of once per window: every keystroke's event then comes from
        that one revision (its live hypothesis sees the keystrokes after it). The committed
        text is the same either way (:meth:`end_sentence` decodes the final revision). The live
        session passes the windows that complete together while it steps a backlog, where the
        per-keystroke sentence graph was a third of the decoding time.
        """
        stages = [None] * len(windows) if stages is None else list(stages)
        if len(stages) != len(windows):
            raise ValueError(
                f"Invalid value for 'stages': {len(stages)} for {len(windows)} windows; give "
                "one (or None) per window."
            )
        if not self._open:
            self.start_sentence()
        kept = []
        for k, window in enumerate(windows):
            if window.marker is not None and key_class(window.marker.value) is None:
                self._n_ignored += 1
            elif not window.valid:
                self._n_skipped += 1
            else:
                kept.append(k)
        events: list[TextEvent | None] = [None] * len(windows)
        if kept:
            made = self.add_keystrokes(
                [windows[k].data for k in kept],
                [windows[k].time for k in kept],
                [stages[k] for k in kept],
            )
            for k, event in zip(kept, made):
                events[k] = event
        return events

    def add_keystroke(
        self, window_data: np.ndarray, timestamp: float, stages: Mapping[str, float] | None = None
    ) -> TextEvent:
        """Decode one keystroke window ``(n_channels, n_times)``; return a ``keystroke`` event.

        Opens a sentence if none is open. ``stages`` (stage -> LSL clock time) is copied into the
        event, with ``inferred`` (graphs done) and ``decoded`` (beam done) added.
        """
        return self.add_keystrokes([window_data], [timestamp], [stages])[0]

    def add_keystrokes(
        self,
        windows_data: Sequence[np.ndarray],
        timestamps: Sequence[float],
        stages: Sequence[Mapping[str, float] | None],
    ) -> list[TextEvent]:
        """Decode keystroke windows, running the sentence graph once after the last of them.

        See :meth:`add_windows`; one ``keystroke`` event per window, in order.
        """
        datas = [self._check_window(w) for w in windows_data]
        if not self._open:
            self.start_sentence()
        for data, timestamp in zip(datas, timestamps):
            out = self._keystroke.run({"x": data[None], "subject": self.subject})
            self._append(out["embedding"][0], log_softmax(out["conv_logits"][0]), timestamp)
        self._revise(self._first_seen(self._n, len(datas)))
        inferred = pylsl.local_clock()
        events = []
        for key, (timestamp, key_stages) in enumerate(
            zip(timestamps, stages), start=self._n - len(datas)
        ):
            key_stages = dict(key_stages or {})
            key_stages["inferred"] = inferred
            self._hypothesis = self._decode_text(final=False, upto=key + 1)
            self._confidence = self._text_confidence(self._hypothesis)
            row = self._log_probs[key]
            top = np.argsort(-row, kind="stable")[: self.top_k]
            candidates = [(DISPLAY_CHARS[i], float(np.exp(row[i]))) for i in top.tolist()]
            events.append(
                self._event(
                    "keystroke",
                    self._hypothesis,
                    self._confidence,
                    candidates,
                    timestamp,
                    key_stages,
                )
            )
        return events

    def warm(self, idle_s: float = 0.0) -> bool:
        """Warm what the next keystroke runs, if the graphs have been idle for ``idle_s`` s.

        The keystroke graph re-runs its last input, the sentence graph runs on the open
        sentence plus one spare row (binding the buffers of the length the next keystroke
        brings; the output is dropped) and the beam looks up the LM rows of its next step;
        nothing of the sentence changes. Measured on the shipped bundle with a keystroke every
        0.3 s (2-core VM): add_keystroke took 5.0 ms cold, 2.5 ms warmed 20 ms before, 1.1 ms
        back to back. Returns whether it ran.
        """
        if not self._keystroke.warm(idle_s):
            return False
        n_next = self._n + 1
        if n_next <= len(self._embeddings):
            self._sentence.run(self._sentence_feeds(self._first_seen(n_next, 1), n_next))
        if self._beam is not None:
            self._beam.warm()
        return True

    def _first_seen(self, n: int, n_new: int) -> int:
        """First keystroke the sentence graph reads when the sentence has ``n``, ``n_new`` new."""
        first = n - MAX_SENTENCE_KEYS
        if self.live_beam == "incremental":
            first = max(first, n - n_new - LIVE_CONTEXT_KEYS + 1)
        return max(0, first)

    def _revise(self, first: int) -> None:
        """Run the sentence graph on keystrokes ``first`` to the newest; update their rows.

        Older keystrokes keep the posteriors of their last revision.
        """
        logits = self._sentence.run(self._sentence_feeds(first, self._n))["logits"][0]
        revised = log_softmax(logits)
        self._log_probs = np.concatenate([self._log_probs[:first], revised]) if first else revised

    def _sentence_feeds(self, first: int, stop: int) -> dict[str, np.ndarray]:
        """The sentence graph's inputs for keystrokes ``first`` to ``stop`` of the sentence."""
        return {
            "embeddings": self._embeddings[None, first:stop],
            "key_mask": np.ones((1, stop - first), dtype=bool),
        }

    def _check_window(self, window_data: np.ndarray) -> np.ndarray:
        data = np.asarray(window_data)
        if data.shape != (self.n_channels, self.n_times):
            raise ValueError(
                f"Invalid value for 'window_data': the decoder '{self.bundle.name}' takes windows "
                f"of shape (n_channels, n_times) = ({self.n_channels}, {self.n_times}), got "
                f"{data.shape}. Cut windows with make_windower(bundle) from the bundle's "
                "preprocessing."
            )
        data = np.ascontiguousarray(data, dtype=np.float32)
        if not np.isfinite(data).all():
            raise ValueError(
                "Invalid value for 'window_data': it holds NaN or Inf. Skip invalid windows "
                "(add_window() does, and counts them)."
            )
        return data

    def _append(self, embedding: np.ndarray, conv: np.ndarray, timestamp: float) -> None:
        if self._n == len(self._embeddings):
            grow = len(self._embeddings)
            self._embeddings = np.concatenate([self._embeddings, np.zeros_like(self._embeddings)])
            self._conv = np.concatenate([self._conv, np.zeros((grow, N_CLASSES))])
            self._times = np.concatenate([self._times, np.zeros(grow)])
        self._embeddings[self._n], self._conv[self._n] = embedding, conv
        self._times[self._n] = timestamp
        self._n += 1

    def _decode_text(self, final: bool, upto: int | None = None) -> str:
        """Best text of the open sentence: live (per ``live_beam``) or final (whole sentence).

        ``upto``: the live text after that many keystrokes (default: all of them).
        """
        rows = self._log_probs[:upto]  # the open sentence has a row per keystroke
        if self._beam is None:
            return best_path(rows)
        if final or self.live_beam == "full":
            if final and self.live_beam == "full" and self._beam.n_keystrokes == self._n:
                return self._beam.finalize()  # the last keystroke already re-ran it
            self._beam.reset()
            for row in rows:
                self._beam.step(row)
            return self._beam.finalize() if final else self._beam.hypotheses(1)[0].text
        self._beam.step(rows[-1])
        return self._beam.hypotheses(1)[0].text

    def _text_confidence(self, text: str) -> tuple[float, ...]:
        classes = [CLASS_OF[c] for c in text]
        return tuple(np.exp(self._log_probs[np.arange(len(classes)), classes]).tolist())

    def end_sentence(
        self, timestamp: float = math.nan, stages: Mapping[str, float] | None = None
    ) -> TextEvent:
        """Commit the open sentence; return its ``sentence_end`` event (final text, candidates).

        The details (ablation texts, posteriors) are in :attr:`last_sentence`.
        """
        self._end_checks()
        n = self._n
        text, candidates = "", ()
        if n:
            whole = max(0, n - MAX_SENTENCE_KEYS)
            if self._first_seen(n, 1) > whole:  # the last run read only the newest keystrokes
                self._revise(whole)
            text = self._decode_text(final=True)
            if self._beam is not None:
                candidates = beam_candidates(self._beam, self.top_k)
        conv = self._conv[:n].copy()
        variants = {"conv": best_path(conv), "transformer": best_path(self._log_probs)}
        variants["lm"] = text
        decoding = SentenceDecoding(
            self._target,
            text,
            variants,
            self._log_probs.copy(),
            conv,
            self._times[:n].copy(),
            self._n_skipped,
            self._n_ignored,
            tuple(self._gaps),
        )
        return self._finish(decoding, candidates, timestamp, stages)


def open_decoder(
    bundle: Bundle | str | Path, *, provider: str = "auto", use_lm: bool = True
) -> KeystrokeDecoder | CTCDecoder:
    """Load a typing bundle and return the decoder of its architecture."""
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    cls = KeystrokeDecoder if check_typing_bundle(bundle) == "brain2qwerty_v1" else CTCDecoder
    return cls(bundle, provider=provider, use_lm=use_lm)
