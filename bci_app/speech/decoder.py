"""Speech decoder over a bundle: brain window -> embedding -> top-k candidates (numpy + ORT).

A speech bundle (``task: "speech"``, written by ``bci-app train speech``) holds two ONNX graphs,
``brain`` (window -> embedding) and ``audio`` (log-mel -> embedding), and its candidate set:
``candidates.npz`` (``embeddings``: unit vectors ``(n, d)``) and ``candidates.json`` (their
texts, in the same order). :class:`SpeechDecoder` embeds each 3 s window, scores every candidate
by cosine similarity and emits a ``candidates`` :class:`~bci_app.decoders.events.TextEvent`: the
top-k
texts with softmax probabilities (at the CLIP temperature learned in training), the best one as
the hypothesis. Windows come from :func:`make_windower`: locked to ``word:`` onset markers, or
sliding with a hop (default 0.25 s) when no onset markers exist. Offline evaluation
(:mod:`bci_app.speech.evaluate`) calls the same methods.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pylsl

from bci_app.decoders.bundle import CANDIDATE_FILES, Bundle, load_bundle, sha256_file
from bci_app.decoders.events import TextEvent
from bci_app.decoders.manifest import REEXPORT
from bci_app.decoders.manifest import Window as BundleWindow
from bci_app.decoders.runtime import OnnxRuntime
from bci_app.processing.preprocessing import PreprocessConfig
from bci_app.processing.windowing import EventWindower, SlidingWindower, Window
from bci_app.speech.scoring import CandidateScorer

CANDIDATES_NPZ, CANDIDATES_JSON = CANDIDATE_FILES
#: Default hop of sliding windows in live decoding (s).
DEFAULT_HOP_S = 0.25


def check_speech_bundle(bundle: Bundle) -> None:
    """Raise ValueError unless ``bundle`` is a speech decoder."""
    if bundle.task != "speech":
        raise ValueError(
            f"Invalid bundle: '{bundle.name}' is a {bundle.task!r} decoder, but speech decoding "
            "needs a bundle with task 'speech'. Give a bundle written by 'bci-app train speech'."
        )


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def retrieval_ranks(brain: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """Rank (0 = best) of segment ``i``'s audio among all segments for brain window ``i``."""
    scores = normalize(brain) @ normalize(audio).T
    own = np.diag(scores)[:, None]
    return (scores > own).sum(axis=1)


def check_candidates(texts: Sequence[str], embeddings: np.ndarray) -> None:
    """Raise ValueError for duplicate or empty texts, or a text/embedding count mismatch."""
    seen, dupes = set(), []
    for text in texts:
        if text in seen:
            dupes.append(text)
        seen.add(text)
    if dupes:
        raise ValueError(
            f"Invalid candidate set: duplicate candidates {sorted(set(dupes))[:8]}. Each "
            "candidate text must appear once; remove the duplicates."
        )
    if any(not t.strip() for t in texts):
        raise ValueError("Invalid candidate set: a candidate text is empty.")
    if embeddings.ndim != 2 or len(embeddings) != len(texts):
        raise ValueError(
            f"Invalid candidate set: {len(texts)} texts but embeddings of shape "
            f"{embeddings.shape}; give one embedding row per text."
        )


def load_candidates(bundle: Bundle) -> tuple[list[str], np.ndarray]:
    """The bundle's candidate texts and unit embeddings, checked."""
    npz, listing = bundle.file_path(CANDIDATES_NPZ), bundle.file_path(CANDIDATES_JSON)
    if not npz.is_file() or not listing.is_file():
        raise FileNotFoundError(
            f"Corrupt speech bundle '{bundle.path}': {CANDIDATES_NPZ} or {CANDIDATES_JSON} is "
            "missing. Re-export the bundle, or add candidates with 'bci-app candidates add'."
        )
    with np.load(npz, allow_pickle=False) as data:
        embeddings = normalize(data["embeddings"])
    texts = json.loads(listing.read_text())["texts"]
    check_candidates(texts, embeddings)
    return texts, embeddings


def save_candidates(path: str | Path, texts: Sequence[str], embeddings: np.ndarray) -> None:
    """Write ``candidates.npz`` and ``candidates.json`` into a bundle directory (checked)."""
    embeddings = normalize(embeddings)
    check_candidates(list(texts), embeddings)
    path = Path(path)
    np.savez(path / CANDIDATES_NPZ, embeddings=embeddings)
    digest = sha256_file(path / CANDIDATES_NPZ)
    (path / CANDIDATES_JSON).write_text(
        json.dumps({"texts": list(texts), "embeddings_sha256": digest}, indent=1)
    )


def preprocess_config(bundle: Bundle) -> PreprocessConfig:
    """The bundle's preprocessing (filters, 120 Hz, fitted scaler)."""
    return bundle.require("preprocessing", "speech decoding")


def bundle_window(bundle: Bundle) -> BundleWindow:
    """The bundle's brain window (span, rate, baseline, clamp; the heard audio span)."""
    return bundle.require("window", "speech decoding")


def make_windower(
    bundle: Bundle, *, sliding: bool = False, hop_s: float = DEFAULT_HOP_S
) -> EventWindower | SlidingWindower:
    """Windows of the bundle: locked to ``word:`` onsets, or sliding every ``hop_s`` seconds."""
    w = bundle_window(bundle)
    if w.baseline is None:
        raise ValueError(
            f"Invalid bundle: '{bundle.name}' ({bundle.path}) has no 'window.baseline' in its "
            f"manifest, which speech decoding needs. {REEXPORT}"
        )
    if sliding:
        length = w.tmax - w.tmin
        return SlidingWindower(
            length,
            hop_s,
            w.sfreq,
            baseline=(None, w.baseline[1] - w.tmin),
            clamp=w.clamp,
        )
    return EventWindower(
        w.tmin,
        w.tmax,
        w.sfreq,
        baseline=w.baseline,
        clamp=w.clamp,
        marker_filter="word",
        history_s=60.0,
    )


class SpeechDecoder:
    """Rank a speech bundle's candidates for each brain window (module docstring).

    Parameters
    ----------
    bundle : Bundle | path
        A speech bundle.
    provider : "auto" | "cpu" | "cuda" | "tensorrt"
        onnxruntime provider.
    top_k : int
        Candidates per event.
    subject : int
        Subject head to use (default: the bundle's default).
    similarity : "cpu" | "cuda" | "auto"
        Where candidates are scored (:class:`~bci_app.speech.scoring.CandidateScorer`): numpy
        (default), the GPU, or the GPU for large candidate sets only.
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        *,
        provider: str = "auto",
        top_k: int = 10,
        subject: int | None = None,
        similarity: str = "cpu",
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        check_speech_bundle(self.bundle)
        manifest = self.bundle.manifest
        self.n_channels = self.bundle.channels.n_channels
        self.n_times = bundle_window(self.bundle).n_times
        if not (isinstance(top_k, int) and top_k >= 1):
            raise ValueError(f"Invalid value for 'top_k': {top_k!r}; use an integer >= 1.")
        self.top_k = top_k
        subjects = self.bundle.require("subject", "speech decoding")
        n_subjects = subjects.n_subjects
        subject = subjects.default if subject is None else int(subject)
        if not 0 <= subject < n_subjects:
            raise ValueError(
                f"Invalid value for 'subject': {subject}; the bundle has {n_subjects} subject(s)."
            )
        self.subject = np.array([subject], dtype=np.int64)
        self.logit_scale = 10.0 if manifest.logit_scale is None else float(manifest.logit_scale)
        self.texts, self.embeddings = load_candidates(self.bundle)
        self.scorer = CandidateScorer(
            self.embeddings, top_k=top_k, logit_scale=self.logit_scale, device=similarity
        )
        shapes = {"x": (1, self.n_channels, self.n_times), "subject": (1,)}
        self._brain = OnnxRuntime(self.bundle.graph_path("brain"), provider, warmup_shapes=shapes)
        self.committed: list[str] = []

    @property
    def active_provider(self) -> str:
        """The onnxruntime provider really running the brain graph."""
        return self._brain.provider

    @property
    def n_candidates(self) -> int:
        """Size of the candidate set."""
        return len(self.texts)

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """Unit brain embeddings ``(n, d)`` of windows ``(n, n_channels, n_times)``."""
        data = np.asarray(windows, dtype=np.float32)
        if data.ndim != 3 or data.shape[1:] != (self.n_channels, self.n_times):
            raise ValueError(
                f"Invalid value for 'windows': the decoder '{self.bundle.name}' takes windows of "
                f"shape (n, {self.n_channels}, {self.n_times}), got {data.shape}. Cut them with "
                "make_windower(bundle) from the bundle's preprocessing."
            )
        if not np.isfinite(data).all():
            raise ValueError(
                "Invalid value for 'windows': they hold NaN or Inf; skip invalid ones."
            )
        subject = np.repeat(self.subject, len(data))
        return normalize(self._brain.run({"x": data, "subject": subject})["embedding"])

    def scores(self, windows: np.ndarray) -> np.ndarray:
        """Cosine similarity ``(n, n_candidates)`` of each window with each candidate."""
        return self.embed(windows) @ self.embeddings.T

    def rank(self, windows: np.ndarray) -> np.ndarray:
        """Candidate indices ``(n, n_candidates)``, best first."""
        return np.argsort(-self.scores(windows), axis=1, kind="stable")

    def add_window(
        self, window: Window, stages: Mapping[str, float] | None = None
    ) -> TextEvent | None:
        """Decode one window into a ``candidates`` event; invalid windows give None."""
        if not window.valid:
            return None
        return self.decode(window.data, window.time, stages)

    def decode(
        self, window_data: np.ndarray, timestamp: float, stages: Mapping[str, float] | None = None
    ) -> TextEvent:
        """Top-k candidates of one window ``(n_channels, n_times)`` as a TextEvent."""
        indices, probs, _ = self.scorer.top(self.embed(np.asarray(window_data)[None]))
        stages = dict(stages or {})
        stages["inferred"] = pylsl.local_clock()
        candidates = tuple(
            (self.texts[i], float(p)) for i, p in zip(indices[0].tolist(), probs[0].tolist())
        )
        best = candidates[0][0]
        self.committed.append(best)
        return TextEvent(
            "candidates",
            committed=" ".join(self.committed[:-1]),
            hypothesis=best,
            confidence=(candidates[0][1],),
            candidates=candidates,
            timestamp=float(timestamp),
            stages=stages,
        )

    def mark_gap(self, timestamp: float, stages: Mapping[str, float] | None = None) -> TextEvent:
        """A ``gap`` event: data were missing at ``timestamp``; words around it may be wrong."""
        return TextEvent(
            "gap",
            committed=" ".join(self.committed),
            timestamp=float(timestamp),
            stages=dict(stages or {}),
        )

    def reset(self) -> None:
        """Forget the decoded words of the session."""
        self.committed = []
