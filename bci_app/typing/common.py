"""Parts shared by the typing decoders: bundle checks, keystroke classes, sentence state.

:class:`SentenceDecoderBase` holds what :class:`~bci_app.typing.keystroke.KeystrokeDecoder` (v1)
and :class:`~bci_app.typing.ctc.CTCDecoder` (v2) share: the bundle and its checks, the graphs
(with their input/output names checked), the LM, the open sentence, the committed text and the
:class:`~bci_app.decoders.events.TextEvent` they emit. Event semantics: ``keystroke`` events carry
the live hypothesis of the open sentence with per-character confidence; a ``sentence_end`` event
carries the committed text including the finished sentence, an empty hypothesis and, with an LM,
the best beam texts as candidates; ``gap`` events mark missing data and leave decoding state as
is.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pylsl

from acquisition.recording import parse_marker
from bci_app.decoders.bundle import Bundle, load_bundle
from bci_app.decoders.events import TextEvent
from bci_app.decoders.manifest import Decoding, Window
from bci_app.decoders.runtime import OnnxRuntime
from bci_app.lm.model import CharNgramLM
from bci_app.processing.preprocessing import PreprocessConfig
from bci_app.processing.windowing import EventWindower
from bci_app.typing.alphabet import DISPLAY_CHARS, text_to_classes

#: Typing architectures and the graph role each runs first.
ARCHS = {"brain2qwerty_v1": "keystroke", "brain2qwerty_v2": "ctc"}
CLASS_OF = {c: i for i, c in enumerate(DISPLAY_CHARS)}
_GRAPH_IO = {
    "keystroke": ({"x", "subject"}, {"embedding", "conv_logits"}),
    "sentence": ({"embeddings", "key_mask"}, {"logits"}),
    "ctc": ({"x", "subject"}, {"log_probs"}),
}


@functools.lru_cache(maxsize=4096)
def key_class(marker_value: str) -> int | None:
    """Return the class of a ``key:<c>`` marker, or None (not a key, or a key with no class).

    Keys the alphabet ignores (backspace, shift, other control keys) have no class: their windows
    are skipped by the decoders and their characters left out of the reference text. Cached: a
    session has a few dozen distinct key markers, and mapping one through the alphabet's numpy
    path took ~3 % of a max-speed replay's decoding thread (py-spy).
    """
    kind, char = parse_marker(marker_value)
    if kind != "key" or len(char) != 1:
        return None
    classes = text_to_classes(char)
    return int(classes[0]) if classes.size else None


def check_typing_bundle(bundle: Bundle) -> str:
    """Return the bundle's architecture, or raise ValueError if it is not a typing decoder."""
    if bundle.task != "typing":
        raise ValueError(
            f"Invalid bundle: '{bundle.name}' is a {bundle.task!r} decoder, but typing decoding "
            f"needs a bundle with task 'typing'. Give a bundle written by 'bci-app train typing'."
        )
    arch = bundle.manifest.arch
    if arch not in ARCHS:
        raise ValueError(
            f"Invalid bundle: '{bundle.name}' has architecture {arch!r}; the typing decoders "
            f"run {sorted(ARCHS)}. Re-export it with this bci-app."
        )
    return arch


def preprocess_config(bundle: Bundle) -> PreprocessConfig:
    """Return the bundle's preprocessing (filters, rate, fitted scaler statistics)."""
    return bundle.require("preprocessing", "typing decoding")


def bundle_window(bundle: Bundle) -> Window:
    """Return the bundle's keystroke window, or raise ValueError if the manifest has none."""
    return bundle.require("window", "typing decoding")


def make_windower(bundle: Bundle, **kwargs) -> EventWindower:
    """Return a keystroke windower with the bundle's window (span, rate, baseline, clamp)."""
    w = bundle_window(bundle)
    return EventWindower(
        w.tmin,
        w.tmax,
        w.sfreq,
        baseline=w.baseline,
        clamp=w.clamp,
        marker_filter="key",
        **kwargs,
    )


@dataclass(frozen=True)
class SentenceDecoding:
    """Everything decoded from one sentence, kept for evaluation and the session log.

    Attributes
    ----------
    target : str | None
        Sentence given to ``start_sentence``.
    text : str
        Final text (LM beam, or best path without LM).
    variants : dict of str to str
        Ablation texts: v1 ``conv`` (conv-only argmax), ``transformer`` (argmax) and ``lm``
        (beam); v2 ``greedy`` and ``lm``.
    log_probs : ndarray
        v1: transformer log-posteriors (n_keys, 29); v2: CTC log-probs (n_frames, 30).
    conv_log_probs : ndarray | None
        v1: conv-only log-posteriors (n_keys, 29).
    timestamps : ndarray
        v1: keystroke times; v2: the first and last sample time.
    n_skipped : int
        Windows not decoded because they were invalid (NaN stretches, gaps).
    n_ignored : int
        Windows of keys without a class (backspace, shift).
    gaps : tuple of float
        Times of the gaps marked during the sentence.
    """

    target: str | None
    text: str
    variants: dict[str, str]
    log_probs: np.ndarray
    conv_log_probs: np.ndarray | None = None
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_skipped: int = 0
    n_ignored: int = 0
    gaps: tuple[float, ...] = ()


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (logits or log-probabilities -> normalised log-probs)."""
    x = np.asarray(x, dtype=np.float64)
    top = x.max(axis=-1, keepdims=True)
    return x - top - np.log(np.exp(x - top).sum(axis=-1, keepdims=True))


def best_path(log_probs: np.ndarray) -> str:
    """Text of the most probable class of every row of ``(n_keys, 29)`` log-posteriors."""
    return "".join(DISPLAY_CHARS[c] for c in log_probs.argmax(axis=1).tolist())


class SentenceDecoderBase:
    """What both decoders share: bundle checks, graphs, LM, sentence state, committed text.

    Subclasses set ``_runtimes`` (their graphs) and define ``_clear()`` (empty the open
    sentence, setting ``_hypothesis`` and ``_confidence``) and ``_n_items()`` (what it holds).
    """

    def __init__(
        self, bundle: Bundle | str | Path, provider: str, use_lm: bool, threads: int | None
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.arch = check_typing_bundle(self.bundle)
        manifest = self.bundle.manifest
        self.channels = self.bundle.channels
        self.n_channels = self.channels.n_channels
        self.decoding = manifest.decoding or Decoding()
        self.top_k = 5 if self.decoding.top_k is None else int(self.decoding.top_k)
        default = 0 if manifest.subject is None else manifest.subject.default
        self.subject = np.array([int(default)], np.int64)
        self.lm, self.lm_weight = self._load_lm(use_lm)
        self.provider, self.threads = provider, threads
        self.committed = ""
        self.last_sentence: SentenceDecoding | None = None
        self._open = False
        self._target: str | None = None
        self._gaps: list[float] = []
        self.n_sentences = 0

    def _load_lm(self, use_lm: bool) -> tuple[CharNgramLM | None, float]:
        spec = self.bundle.manifest.lm
        if not use_lm or spec is None:
            return None, 0.0
        path = self.bundle.file_path(spec.file)
        if not path.is_file():
            raise FileNotFoundError(
                f"Corrupt decoder bundle '{self.bundle.path}': its language model {spec.file} "
                "is missing. Re-export the bundle, or decode without the LM (use_lm=False)."
            )
        return CharNgramLM.load(path), 0.5 if spec.weight is None else float(spec.weight)

    def _graph(self, role: str, warmup_shapes: Mapping[str, tuple] | None = None) -> OnnxRuntime:
        runtime = OnnxRuntime(
            self.bundle.graph_path(role),
            self.provider,
            threads=self.threads,
            warmup_shapes=warmup_shapes,
        )
        inputs, outputs = _GRAPH_IO[role]
        if set(runtime.inputs) != inputs or not outputs <= set(runtime.outputs):
            raise ValueError(
                f"Invalid bundle '{self.bundle.name}': its '{role}' graph takes "
                f"{sorted(runtime.inputs)} and gives {runtime.outputs}, but the decoder needs "
                f"inputs {sorted(inputs)} and outputs {sorted(outputs)}. Re-export the bundle."
            )
        return runtime

    @property
    def in_sentence(self) -> bool:
        """Whether a sentence is open (started and not ended)."""
        return self._open

    @property
    def device(self) -> str:
        """``"cuda"`` or ``"cpu"``: where the graphs really run."""
        return self._runtimes[0].device

    @property
    def active_provider(self) -> str:
        """The onnxruntime provider really running the graphs (e.g. ``CPUExecutionProvider``)."""
        return self._runtimes[0].provider

    def warm(self, idle_s: float = 0.0) -> bool:
        """Bring the graphs idle for ``idle_s`` seconds back into the caches (no state changes).

        See :meth:`~bci_app.decoders.runtime.OnnxRuntime.warm`; the live session calls it when
        a window is about to complete. Returns whether any graph ran.
        """
        return any([runtime.warm(idle_s) for runtime in self._runtimes])

    def start_sentence(self, target: str | None = None) -> None:
        """Open a new sentence (``target``: the text to be typed, when known)."""
        if self._open and self._n_items():
            raise RuntimeError(
                f"A sentence with {self._n_items()} keystroke(s)/sample(s) is still open: call "
                "end_sentence() before start_sentence()."
            )
        if self._open:
            warnings.warn("start_sentence() repeated on an empty sentence", stacklevel=2)
        self._clear()
        self._open, self._target, self._gaps = True, target, []

    def mark_gap(self, timestamp: float, stages: Mapping[str, float] | None = None) -> TextEvent:
        """Record missing data at ``timestamp``; return a ``gap`` event (decoding continues)."""
        self._gaps.append(float(timestamp))
        return self._event("gap", self._hypothesis, self._confidence, (), timestamp, stages)

    def reset(self) -> None:
        """Forget the committed text and any open sentence (a new session)."""
        self._clear()
        self._open, self._target, self._gaps = False, None, []
        self.committed, self.last_sentence, self.n_sentences = "", None, 0

    def _finish(self, decoding: SentenceDecoding, candidates, timestamp, stages) -> TextEvent:
        """Commit a decoded sentence and return its ``sentence_end`` event."""
        self.last_sentence = decoding
        if decoding.text:
            self.committed = f"{self.committed} {decoding.text}".strip()
        self._open = False
        self._hypothesis, self._confidence = "", ()
        self.n_sentences += 1
        return self._event("sentence_end", "", (), candidates, timestamp, stages)

    def _event(self, kind, hypothesis, confidence, candidates, timestamp, stages) -> TextEvent:
        stages = dict(stages or {})
        stages.setdefault("decoded", pylsl.local_clock())
        return TextEvent(
            kind=kind,
            committed=self.committed,
            hypothesis=hypothesis,
            confidence=tuple(float(c) for c in confidence),
            candidates=tuple(candidates),
            target=self._target,
            timestamp=float(timestamp),
            stages=stages,
        )

    def _end_checks(self) -> None:
        if not self._open:
            raise RuntimeError(
                "end_sentence() called with no sentence open: call start_sentence() (or add a "
                "keystroke, which opens one) first."
            )


def beam_candidates(beam, n: int) -> tuple[tuple[str, float], ...]:
    """Best final beam texts with their share of the beam's probability."""
    hyps = beam.hypotheses(final=True)
    scores = np.array([h.score for h in hyps])
    weights = np.exp(scores - scores.max())
    weights /= weights.sum()
    return tuple((h.text, float(w)) for h, w in zip(hyps[:n], weights[:n]))
