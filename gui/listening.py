"""What the text panel shows of a listening session: decoded words scored against words heard.

A speech decoder sends one ``candidates`` :class:`~bci_app.decoders.events.TextEvent` per window:
the best
word as its hypothesis, the top-k words with probabilities, and (when the window is locked to a
word onset) the word heard as its target. :class:`WordScores` keeps the running line of best
words and counts how often the heard word is the best one (top-1) or among the candidates
(top-k; the rank is :func:`bci_app.speech.scoring.heard_rank`), the listening counterpart of the
typing CER; it renders them as Qt rich text (HTML).
"""

from __future__ import annotations

import html
from collections import deque
from dataclasses import dataclass

from bci_app.decoders.events import TextEvent
from bci_app.speech.scoring import heard_rank

HEARD = "#2e7d32"  # a decoded word that is the word heard
IN_TOP_K = "#ef6c00"  # the heard word is among the window's candidates, not the best
MISSED = "#c62828"  # the heard word is not among the candidates
_MUTED = "#607d8b"
_MAX_WORDS_SHOWN = 300

#: Legend under the running line of words.
LEGEND = (
    f'Best word of each window: <span style="color:{HEARD}">green</span> = the word heard, '
    f'<span style="color:{IN_TOP_K}">orange</span> = heard word among the candidates, '
    f'<span style="color:{MISSED}">red</span> = not among them (heard word after /); '
    "black: sliding window, no word onset to score against."
)


@dataclass(frozen=True)
class DecodedWord:
    """The best word of one speech window, and where the heard word ranked (when known).

    ``rank`` is 1 when the best word is the heard one, k when the heard word is the k-th
    candidate, 0 when it is not among them, None for a sliding window (nothing heard to score
    against). ``text`` None marks a data gap.
    """

    text: str | None
    heard: str | None = None
    rank: int | None = None
    probability: float = float("nan")

    @classmethod
    def from_event(cls, event: TextEvent) -> DecodedWord:
        """Score a ``candidates`` event (best word first) against its ``target``, if any."""
        if event.kind == "gap":
            return cls(None)
        heard = event.target or None
        rank = heard_rank(event.candidates, heard)
        best = event.candidates[0][1] if event.candidates else float("nan")
        return cls(event.hypothesis, heard, rank, best)

    def html(self, with_heard: bool = True) -> str:
        """The word coloured by ``rank`` (and, ``with_heard``, the heard word when it differs)."""
        if self.text is None:
            return f'<span style="color:{MISSED}">[gap]</span>'
        word = html.escape(self.text)
        if self.rank is None:
            return word
        color = HEARD if self.rank == 1 else IN_TOP_K if self.rank else MISSED
        shown = f'<span style="color:{color}">{word}</span>'
        if with_heard and self.rank != 1:
            # U+2060 (word joiner): the heard word stays on the decoded word's line
            shown += f'<span style="color:#78909c">/\u2060{html.escape(self.heard or "")}</span>'
        return shown


class WordScores:
    """Running line of decoded words and top-1/top-k accuracy against the words heard."""

    def __init__(self) -> None:
        self.words: deque[DecodedWord] = deque(maxlen=_MAX_WORDS_SHOWN)
        self.n_candidates: int | None = None
        self.clear()

    def clear(self) -> None:
        """Forget the session's words and counts (the candidate-set size too)."""
        self.words.clear()
        self.n_words = self.n_heard = self.n_top1 = self.n_top_k = self.top_k = 0
        self.n_candidates = None

    def add(self, event: TextEvent) -> DecodedWord:
        """Take a ``candidates`` or ``gap`` event; return the word it adds to the line."""
        word = DecodedWord.from_event(event)
        self.words.append(word)
        if word.text is not None:
            self.n_words += 1
            self.top_k = max(self.top_k, len(event.candidates))
        if word.rank is not None:
            self.n_heard += 1
            self.n_top1 += word.rank == 1
            self.n_top_k += word.rank > 0
        return word

    def line_html(self) -> str:
        """The decoded words, oldest first (the last few hundred)."""
        return " ".join(word.html() for word in self.words)

    def latest_html(self) -> str:
        """The latest window: the word heard (if any) and the best candidate."""
        word = next((w for w in reversed(self.words) if w.text is not None), None)
        if word is None:
            return f'<span style="color:{_MUTED}">No window decoded yet.</span>'
        label = f'<span style="color:{_MUTED}">{{}}</span>'
        heard = html.escape(word.heard) if word.heard else "— (sliding window, no word onset)"
        verdict = ""
        if word.rank == 0:
            verdict = f"heard word not in the top {self.top_k}"
        elif word.rank is not None:
            verdict = "the heard word" if word.rank == 1 else f"heard word ranked {word.rank}"
        known = word.probability == word.probability
        note = " · ".join(x for x in (f"{100 * word.probability:.1f} %" * known, verdict) if x)
        return (
            '<div style="line-height:140%">'
            + label.format("Heard&nbsp;&nbsp;&nbsp;")
            + heard
            + "<br>"
            + label.format("Decoded&nbsp;")
            + word.html(with_heard=False)
            + (f'<br><span style="color:{_MUTED}">{note}</span>' if note else "")
            + "</div>"
        )

    def stats_text(self) -> str:
        """Windows decoded, top-1 and top-k accuracy against the heard words, and chance."""
        parts = [f"{self.n_words} window{'s' if self.n_words != 1 else ''} decoded"]
        if self.n_heard:
            parts.append(
                f"heard word best {self.n_top1}/{self.n_heard} "
                f"({100 * self.n_top1 / self.n_heard:.0f} %), in the top {self.top_k} "
                f"{self.n_top_k}/{self.n_heard} ({100 * self.n_top_k / self.n_heard:.0f} %)"
            )
        else:
            parts.append("no word onset yet (sliding windows): nothing heard to score against")
        if self.n_candidates:
            chance_k = min(1.0, self.top_k / self.n_candidates)
            parts.append(
                f"chance: best {100 / self.n_candidates:.1f} %, top {self.top_k} "
                f"{100 * chance_k:.1f} % ({self.n_candidates} candidate words)"
            )
        return " · ".join(parts)
