"""What a session report shows: a :class:`SessionRecord`, and the digest of the text events.

A record is gathered from a live :class:`~bci_app.live.session.DecodingSession`
(:mod:`bci_app.report.collect`) or from the session's XDF recording
(:mod:`bci_app.report.xdf`). Both feed the text events, live or as recorded JSON, through one
:class:`EventDigest`, so the sentences, words and latencies of a report are the same whichever way
it was made; only the stream-health timeline differs (live: the stream source's own health every
second; from a file: what the recorded samples show).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from bci_app.decoders.events import TextEvent
from bci_app.live.session import STAGES
from bci_app.speech.scoring import heard_rank
from bci_app.typing.alphabet import cer

#: Latency of the whole path: the newest sample an event needed -> the event emitted.
TOTAL_STAGE = "sample → emitted"


class ReportError(ValueError):
    """A report cannot be made from this file or written there; the message names the fix."""


@dataclass(frozen=True)
class SentenceRow:
    """One committed sentence of a typing session.

    Attributes
    ----------
    target : str | None
        The sentence typed, when known.
    decoded : str
        The decoded text.
    time_s : float
        When it was committed, seconds from the start of the session (NaN: at stop).
    cut_short : bool
        The session stopped before the sentence ended (left out of the mean CER).
    """

    target: str | None
    decoded: str
    time_s: float
    cut_short: bool = False

    @property
    def cer(self) -> float | None:
        """Character error rate against the target (None: no target, or cut short)."""
        if self.cut_short or not self.target:
            return None
        try:
            return cer(self.decoded, self.target)
        except ValueError:  # a target with no character of the alphabet
            return None


@dataclass(frozen=True)
class WordRow:
    """One word-locked window of a listening session: the word heard and the ranking.

    Attributes
    ----------
    heard : str
        The word heard.
    decoded : str
        The best candidate (top-1).
    rank : int
        1-based rank of the heard word among the candidates; 0 when not among them.
    k : int
        Candidates kept per window.
    time_s : float
        Word onset, seconds from the start of the session.
    """

    heard: str
    decoded: str
    rank: int
    k: int
    time_s: float


@dataclass(frozen=True)
class HealthTimeline:
    """Stream health over the session, on seconds from its start.

    Attributes
    ----------
    origin : str
        ``"live"`` (the stream source's health, polled) or ``"recording"`` (the recorded samples).
    nominal_hz : float
        The stream's nominal rate.
    t_s, rate_hz : ndarray
        Sample rate over time: live, samples received per second between two polls; from a
        recording, samples per second of stream time.
    count_t_s, dropped, invalid : ndarray
        Cumulative samples missing (gaps) and holding NaN/Inf, at the times ``count_t_s``
        (live: the polls; from a recording: the end of each second).
    lag_t_s, lag_ms : ndarray
        Lag over time; what it measures is ``lag_label``.
    lag_label : str
        Live: local clock minus the newest sample's time; recording: at each decoded event, the
        time it was pulled minus its newest sample's time.
    gaps : tuple of (float, float)
        (start s, duration s) of each gap.
    outages : tuple of (float, float, str)
        (start s, end s, state) while the stream was not ``connected`` (live only).
    reconnections : tuple of float | None
        Times the stream came back after a loss (None: not known from a recording).
    """

    origin: str
    nominal_hz: float
    t_s: np.ndarray
    rate_hz: np.ndarray
    count_t_s: np.ndarray
    dropped: np.ndarray
    invalid: np.ndarray
    lag_t_s: np.ndarray
    lag_ms: np.ndarray
    lag_label: str
    gaps: tuple[tuple[float, float], ...] = ()
    outages: tuple[tuple[float, float, str], ...] = ()
    reconnections: tuple[float, ...] | None = None


@dataclass(frozen=True)
class SessionRecord:
    """Everything a session report shows (module docstring).

    Attributes
    ----------
    origin : str
        Where it comes from: ``"live session"`` or the recording's path.
    task : str
        ``"typing"`` or ``"listening"``.
    bundle, provider : str | None
        The decoder bundle and the onnxruntime provider (None: not in the recording).
    stream : str
        The data stream: name, channels and rate.
    started : str | None
        Wall-clock start, when known.
    duration_s : float
        Seconds of data.
    sentences : tuple of SentenceRow
        Typing: the committed sentences.
    words : tuple of WordRow
        Listening: the word-locked windows.
    n_candidates : int | None
        Listening: candidates the decoder ranks (the chance level), when known.
    latencies_ms : dict of str to ndarray
        Per stage (``"pulled → preprocessed"``, ..., :data:`TOTAL_STAGE`), milliseconds.
    health : HealthTimeline
        The stream-health timeline.
    totals : dict
        Session counts (samples, gaps, dropped and invalid samples, reconnections, windows, ...).
    notes : tuple of str
        What the report could not know, in words.
    """

    origin: str
    task: str
    bundle: str | None
    provider: str | None
    stream: str
    started: str | None
    duration_s: float
    sentences: tuple[SentenceRow, ...]
    words: tuple[WordRow, ...]
    n_candidates: int | None
    latencies_ms: dict[str, np.ndarray]
    health: HealthTimeline
    totals: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def scored_sentences(self) -> list[SentenceRow]:
        """Sentences with a CER (a target, not cut short)."""
        return [s for s in self.sentences if s.cer is not None]

    @property
    def mean_cer(self) -> float | None:
        """Mean of the per-sentence CER (None: no scored sentence)."""
        scores = [s.cer for s in self.scored_sentences]
        return float(np.mean(scores)) if scores else None

    def top_k_accuracy(self, k: int) -> float | None:
        """Share of word windows whose heard word ranks within the top ``k`` (None: none)."""
        if not self.words:
            return None
        return float(np.mean([0 < w.rank <= k for w in self.words]))


def _stage_pairs(stages: Mapping[str, float]) -> list[tuple[str, float]]:
    """(label, seconds) of each stage of an event: between its consecutive stamps, and the total."""
    present = [(name, float(stages[name])) for name in STAGES if name in stages]
    present = [(name, t) for name, t in present if math.isfinite(t)]
    pairs = [(f"{a} → {b}", tb - ta) for (a, ta), (b, tb) in itertools.pairwise(present)]
    if len(present) > 1 and present[0][0] == "sample" and present[-1][0] == "emitted":
        pairs.append((TOTAL_STAGE, present[-1][1] - present[0][1]))
    return pairs


class EventDigest:
    """Accumulate what a report needs from text events, without keeping the events.

    Feed it :class:`~bci_app.decoders.events.TextEvent` objects (:meth:`add_event`, a session
    listener) or their JSON form (:meth:`add_json`, a recording or a log). Times are kept on the
    LSL clock; :meth:`sentences` and :meth:`words` turn them into seconds from ``t0``.
    """

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = {}
        self.lags: list[tuple[float, float]] = []  # (emitted, pulled - sample) in seconds
        self.gaps: list[float] = []
        self.n_events = 0
        #: Stream times of the earliest and latest samples events were decoded from.
        self.first_sample, self.last_sample = math.inf, -math.inf
        self.kinds: dict[str, int] = {}
        self._sentences: list[tuple[float, str, str | None]] = []
        self._words: list[tuple[float, str, str, int, int]] = []
        self._committed = ""

    def add_event(self, event: TextEvent) -> None:
        """Account one text event (a session listener)."""
        self.add(
            event.kind,
            event.timestamp,
            event.stages,
            event.target,
            event.committed,
            event.candidates,
        )

    def add_json(self, row: Mapping) -> None:
        """Account one text event in its JSON form (``TextEvent.to_json``)."""
        self.add(
            str(row.get("kind", "")),
            float("nan") if row.get("timestamp") is None else float(row["timestamp"]),
            row.get("stages") or {},
            row.get("target"),
            str(row.get("committed") or ""),
            [(str(c[0]), float(c[1])) for c in row.get("candidates") or ()],
        )

    def add(
        self,
        kind: str,
        timestamp: float,
        stages: Mapping[str, float],
        target: str | None,
        committed: str,
        candidates: Sequence[tuple[str, float]],
    ) -> None:
        """Account one event given by its fields (those of a ``TextEvent``)."""
        self.n_events += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        for label, seconds in _stage_pairs(stages):
            self.latencies.setdefault(label, []).append(seconds)
        if "sample" in stages:
            self.first_sample = min(self.first_sample, float(stages["sample"]))
            self.last_sample = max(self.last_sample, float(stages["sample"]))
        if "sample" in stages and "pulled" in stages and "emitted" in stages:
            self.lags.append((float(stages["emitted"]), stages["pulled"] - stages["sample"]))
        if kind == "gap":
            self.gaps.append(float(timestamp))
        elif kind == "sentence_end":
            previous, self._committed = self._committed, committed
            text = committed[len(previous) :] if committed.startswith(previous) else committed
            self._sentences.append((float(timestamp), text.strip(), target))
        elif kind == "candidates" and target:
            rank = heard_rank(candidates, target) or 0
            best = candidates[0][0] if candidates else ""
            self._words.append((float(timestamp), target, best, rank, len(candidates)))

    def sentences(self, t0: float) -> tuple[SentenceRow, ...]:
        """The committed sentences; one committed at stop (no timestamp) is cut short."""
        return tuple(
            SentenceRow(target, text, when - t0, cut_short=not math.isfinite(when))
            for when, text, target in self._sentences
        )

    def words(self, t0: float) -> tuple[WordRow, ...]:
        """The word-locked windows, scored against the heard word."""
        return tuple(
            WordRow(heard, best, rank, k, when - t0) for when, heard, best, rank, k in self._words
        )

    def latencies_ms(self) -> dict[str, np.ndarray]:
        """Milliseconds per stage, in pipeline order, the total last."""
        order = {name: i for i, name in enumerate(STAGES)}

        def key(label: str) -> tuple[int, int]:
            if label == TOTAL_STAGE:
                return (len(STAGES), 0)
            first, second = label.split(" → ")
            return (order[second], order[first])

        return {
            label: np.asarray(self.latencies[label]) * 1e3
            for label in sorted(self.latencies, key=key)
        }

    @property
    def task(self) -> str:
        """``listening`` when the events rank candidates, else ``typing``."""
        return "listening" if self.kinds.get("candidates") else "typing"
