"""Text events: what a decoder emits, for the GUI, the LSL text outlet and the session log."""

from __future__ import annotations

import json
import math
import queue
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

#: Kinds of text event.
KINDS = ("keystroke", "sentence_end", "gap", "candidates")


@dataclass(frozen=True)
class TextEvent:
    """One update of the decoded text.

    Attributes
    ----------
    kind : str
        ``"keystroke"`` (a typed character was decoded), ``"sentence_end"`` (the sentence was
        committed), ``"gap"`` (data were missing; marked in the text), ``"candidates"`` (speech
        retrieval result).
    committed : str
        Text of finished sentences of this session.
    hypothesis : str
        Best decoding of the current sentence so far (may change with later keystrokes).
    confidence : tuple of float
        Per-character confidence (0..1) of ``hypothesis``.
    candidates : tuple of (str, float)
        Top-k alternatives of the latest step (characters for typing, segments for speech) with
        probabilities, best first.
    target : str | None
        The sentence being typed or heard, when known (calibration, replay, simulator).
    timestamp : float
        Stream time (s) of the data that produced the event.
    stages : dict
        Stage name -> LSL local-clock time when the stage finished, for latency accounting.
    """

    kind: str
    committed: str = ""
    hypothesis: str = ""
    confidence: tuple[float, ...] = ()
    candidates: tuple[tuple[str, float], ...] = ()
    target: str | None = None
    timestamp: float = float("nan")
    stages: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Invalid value for 'kind': {self.kind!r}; use one of {KINDS}.")

    @property
    def text(self) -> str:
        """Committed text followed by the live hypothesis."""
        if not self.committed:
            return self.hypothesis
        return f"{self.committed} {self.hypothesis}" if self.hypothesis else self.committed

    def to_json(self) -> str:
        """One JSON line (for the session log and ``--json`` output)."""
        return strict_json({**asdict(self), "text": self.text})


def strict_json(value: Any) -> str:
    """Return ``value`` as one line of strict JSON: NaN and infinities become null.

    ``json.dumps`` writes NaN as the bare word ``NaN``, which strict parsers (``jq``, browsers,
    ``json.loads(parse_constant=...)`` in other languages) reject; session logs and ``--json``
    output must stay readable by them.
    """

    def clean(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: clean(v) for key, v in item.items()}
        if isinstance(item, list | tuple):
            return [clean(v) for v in item]
        return item

    return json.dumps(clean(value), allow_nan=False)


class EventQueue:
    """Bounded queue of text events that never blocks its producer: when full the oldest goes.

    Drops are counted, so a slow consumer (a busy GUI, a stalled log disk) costs events, never
    memory or decoder latency.
    """

    def __init__(self, maxsize: int = 1000) -> None:
        self._items: deque[TextEvent] = deque(maxlen=maxsize)
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self.n_dropped = 0

    def put(self, event: TextEvent) -> None:
        """Add ``event``; drop (and count) the oldest one when the queue is full."""
        with self._lock:
            if len(self._items) == self._items.maxlen:
                self.n_dropped += 1
            self._items.append(event)
            self._ready.notify()

    def get(self, timeout: float | None = None) -> TextEvent:
        """Return the oldest event; raise queue.Empty after ``timeout`` seconds."""
        with self._ready:
            if not self._items and not self._ready.wait_for(lambda: self._items, timeout):
                raise queue.Empty
            return self._items.popleft()

    def drain(self) -> list[TextEvent]:
        """Return every queued event, oldest first, and empty the queue."""
        with self._lock:
            items, self._items = list(self._items), deque(maxlen=self._items.maxlen)
            return items

    def __len__(self) -> int:
        return len(self._items)
