"""Decoded text and candidates panels, and the feed that drains the decoder's TextEvent queue.

The decoding session hands the GUI its :class:`~bci_app.decoders.events.EventQueue` (or any
``queue.Queue[TextEvent]``) and a :class:`~bci_app.live.metrics.LatencyStats`; :class:`DecoderFeed`
reads that queue from a QTimer (never blocking) and updates :class:`TextPanel`,
:class:`CandidatesPanel` and the latency panel. Typing decoders send ``keystroke`` events (the
text panel shows the sentence with a CER against its target); speech decoders send one
``candidates`` event per window (the text panel shows the running line of best words, each
scored against the word heard when the window is locked to a word onset).
"""

from __future__ import annotations

import difflib
import html
import queue
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pylsl
from PyQt6.QtCore import QObject, QRectF, Qt, QTimer
from PyQt6.QtGui import QColor, QFontMetrics, QPainter, QTextCursor
from PyQt6.QtWidgets import QLabel, QSizePolicy, QTextBrowser, QVBoxLayout, QWidget

from bci_app.decoders.events import EventQueue, TextEvent
from bci_app.live.metrics import LatencyStats
from bci_app.speech.scoring import heard_rank
from bci_app.stats import mean_interval
from bci_app.typing.alphabet import cer, normalize_text
from gui import style
from gui.listening import HEARD, LEGEND, WordScores

if TYPE_CHECKING:
    from gui.health import LatencyPanel

_LOW_CONFIDENCE = QColor("#ff9800")  # background of a character decoded with confidence 0
_MISMATCH = "#c62828"
_MAX_EVENTS_PER_POLL = 1000
#: A target row and its decoded row, set apart from the next pair.
_ROW_PAIR = '<p style="margin-top:0; margin-bottom:8px; line-height:125%">{}</p>'


def confidence_color(confidence: float) -> str:
    """Background of a decoded character: white at confidence 1, orange at 0."""
    if confidence != confidence:  # NaN: unknown
        return "#ffffff"
    weight = 1.0 - min(max(float(confidence), 0.0), 1.0)
    white = QColor("#ffffff")
    mixed = [
        round(a + (b - a) * weight)
        for a, b in zip(
            (white.red(), white.green(), white.blue()),
            (_LOW_CONFIDENCE.red(), _LOW_CONFIDENCE.green(), _LOW_CONFIDENCE.blue()),
        )
    ]
    return QColor(*mixed).name()


class TextPanel(QWidget):
    """Decoded text: typing (sentence, confidence, target, CER) or listening (words, top-k hits).

    The first ``candidates`` event (a speech decoder) switches the panel to listening: a running
    line of the best word per window, the latest window with its heard word, and top-1/top-k
    accuracy against the words heard instead of a CER.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.committed_text = ""
        self.hypothesis_text = ""
        self.confidence: tuple[float, ...] = ()
        self.target_text: str | None = None
        self.cer_so_far: float | None = None
        self.sentence_cers: list[float] = []
        self.listening = False
        self.words = WordScores()
        self._font = style.mono_font(12)
        self.committed = QTextBrowser()
        self.committed.setFont(style.mono_font(11))
        self.committed.setMinimumHeight(60)
        self.live = QLabel(textFormat=Qt.TextFormat.RichText)
        self.live.setFont(self._font)
        self.live.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.live.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.live.setStyleSheet("background: #ffffff; border: 1px solid #cfd8dc; padding: 6px;")
        self.stats = QLabel(objectName="muted", wordWrap=True)
        self.legend = QLabel(objectName="muted", textFormat=Qt.TextFormat.RichText, wordWrap=True)
        self.committed_title = QLabel(objectName="panelTitle")
        self.live_title = QLabel(objectName="panelTitle")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.committed_title)
        layout.addWidget(self.committed, stretch=1)
        layout.addWidget(self.live_title)
        layout.addWidget(self.live)
        layout.addWidget(self.stats)
        layout.addWidget(self.legend)
        self._show_mode()
        self.render()

    def _show_mode(self) -> None:
        """Titles, placeholder and legend of the typing or the listening view."""
        self.live.setWordWrap(self.listening)  # typing wraps its aligned lines itself
        if self.listening:
            self.committed_title.setText("Decoded words")
            self.committed.setPlaceholderText("The best word of each window appears here.")
            self.live_title.setText("Latest window")
            self.legend.setText(LEGEND)
            return
        self.committed_title.setText("Committed")
        self.committed.setPlaceholderText("Finished sentences appear here.")
        self.live_title.setText("Current sentence")
        self.legend.setText(
            "Shading: confidence of each decoded character "
            + "".join(
                f'<span style="background:{confidence_color(c)}">&nbsp;{c:g}&nbsp;</span>'
                for c in (0.0, 0.25, 0.5, 0.75, 1.0)
            )
            + f' &nbsp; <span style="color:{_MISMATCH}">red</span>: differs from the target'
        )

    def set_candidate_count(self, n_candidates: int | None) -> None:
        """Size of the speech decoder's candidate set (for the chance level; None: unknown)."""
        self.words.n_candidates = n_candidates
        self.render()

    @property
    def session_cer(self) -> float | None:
        """Mean CER of the finished sentences whose target was known."""
        return sum(self.sentence_cers) / len(self.sentence_cers) if self.sentence_cers else None

    def clear(self) -> None:
        """Forget the session's text (and go back to the typing view)."""
        self.committed_text = self.hypothesis_text = ""
        self.confidence, self.target_text, self.cer_so_far = (), None, None
        self.sentence_cers.clear()
        self.words.clear()
        self.listening = False
        self.committed.clear()
        self._show_mode()
        self.render()

    def add_event(self, event: TextEvent) -> None:
        """Take the state of one TextEvent (call :meth:`render` after a batch)."""
        if event.kind == "candidates" or (self.listening and event.kind == "gap"):
            self._add_word(event)
            return
        finished = ""
        if event.kind == "sentence_end":
            finished = event.committed[len(self.committed_text) :].strip() or self.hypothesis_text
            target = event.target if event.target else self.target_text
            if target and normalize_text(target):
                self.sentence_cers.append(cer(finished, target))
        self.committed_text = event.committed
        self.hypothesis_text = event.hypothesis
        self.confidence = tuple(event.confidence)
        if event.target is not None or event.kind == "sentence_end":
            self.target_text = event.target
        self.cer_so_far = self._cer_so_far()
        if event.kind == "sentence_end":
            # The event's hypothesis is empty: until the next sentence's first keystroke, the box
            # shows the finished sentence under its target (an empty "Decoded" row looked like
            # nothing had been decoded).
            self.hypothesis_text, self.confidence = finished, ()

    def _add_word(self, event: TextEvent) -> None:
        """Take a speech event: one more decoded word (or a gap), scored when a word was heard."""
        if not self.listening:
            self.listening = True
            self._show_mode()
        word = self.words.add(event)
        if word.text is None:
            return
        self.committed_text, self.hypothesis_text = event.committed, event.hypothesis
        self.confidence, self.target_text = tuple(event.confidence), word.heard

    def _cer_so_far(self) -> float | None:
        """CER of the hypothesis against as much of the target as has been typed."""
        if not self.target_text or not self.hypothesis_text:
            return None
        target = normalize_text(self.target_text)
        typed = normalize_text(self.hypothesis_text)
        prefix = target[: max(1, len(typed))]
        return cer(typed, prefix, normalize=False) if prefix else None

    def render(self) -> None:
        """Redraw the text from the current state."""
        if self.listening:
            self._render_listening()
            return
        if self.committed.toPlainText() != self.committed_text:
            self.committed.setPlainText(self.committed_text)
            bar = self.committed.verticalScrollBar()
            bar.setValue(bar.maximum())
        self.live.setText(self._live_html())
        parts = []
        if self.cer_so_far is not None:
            parts.append(f"CER so far {self.cer_so_far:.2f}")
        if self.sentence_cers:
            parts.append(f"last sentence CER {self.sentence_cers[-1]:.2f}")
            parts.append(self._session_cer_text())
        if self.target_text is None:
            parts.append("no target known (CER needs the typed sentence)")
        self.stats.setText(" · ".join(parts))

    def _session_cer_text(self) -> str:
        """The session's mean CER with its 95 % t interval over its sentences and their count."""
        n = len(self.sentence_cers)
        mean, low, high = mean_interval(self.sentence_cers)
        if n < 2:
            return f"session CER {mean:.2f} over 1 sentence (no interval yet)"
        interval = f"[{low:.2f}, {high:.2f}]"
        return f"session CER {mean:.2f} {interval} over {n} sentences (95 % t interval)"

    def _render_listening(self) -> None:
        """The running line of words, the latest window, and top-1/top-k against heard words."""
        self.committed.setHtml(self.words.line_html())
        self.committed.moveCursor(QTextCursor.MoveOperation.End)  # lays out: the newest in view
        self.committed.ensureCursorVisible()
        self.live.setText(self.words.latest_html())
        self.stats.setText(self.words.stats_text())

    def _live_html(self) -> str:
        """Target and decoded text in pairs of rows that wrap together.

        Aligned character by character (monospace): each target row is followed by the
        decoded characters under it.
        """
        hypothesis = self.hypothesis_text
        target = normalize_text(self.target_text) if self.target_text else None
        matched = _matched_positions(hypothesis, target) if target is not None else None
        length = max(len(hypothesis), len(target or ""), 1)
        pairs = []
        for start, stop in _wrapped(target or hypothesis, length, self._chars_per_line()):
            rows = []
            if target is not None:
                chunk = html.escape(target[start:stop]).replace(" ", "&nbsp;")
                rows.append(f'<span style="color:#607d8b">Target&nbsp;&nbsp;</span>{chunk}')
            cells = []
            for i in range(start, min(stop, len(hypothesis))):
                conf = self.confidence[i] if i < len(self.confidence) else float("nan")
                color = _MISMATCH if matched is not None and i not in matched else "#000000"
                char = html.escape(hypothesis[i]).replace(" ", "&nbsp;")
                cells.append(
                    f'<span style="background:{confidence_color(conf)};color:{color}">{char}</span>'
                )
            rows.append('<span style="color:#607d8b">Decoded&nbsp;</span>' + "".join(cells))
            pairs.append("<br>".join(rows))
        return "".join(_ROW_PAIR.format(pair) for pair in pairs)

    def _chars_per_line(self) -> int:
        """Characters of text that fit on one row of the box, after the 8-character row name."""
        char_width = QFontMetrics(self._font).horizontalAdvance("M") or 8
        return max(12, self.live.contentsRect().width() // char_width - 9)

    def resizeEvent(self, event) -> None:
        """Re-wrap the sentence rows to the new width."""
        super().resizeEvent(event)
        if not self.listening:
            self.live.setText(self._live_html())


def _wrapped(text: str, length: int, per_line: int) -> list[tuple[int, int]]:
    """Split positions ``0..length`` into rows of at most ``per_line``: ``[(start, stop), ...]``.

    A row ends after the last space of ``text`` that fits (a word longer than a row is cut), so
    words stay whole; the target and the decoded text share these rows.
    """
    rows, start = [], 0
    while start < length:
        stop = min(start + per_line, length)
        if stop < length:
            space = text.rfind(" ", start, stop)
            if space > start:
                stop = space + 1
        rows.append((start, stop))
        start = stop
    return rows


def _matched_positions(hypothesis: str, target: str) -> set[int]:
    """Positions of hypothesis characters aligned to equal target characters."""
    matcher = difflib.SequenceMatcher(a=hypothesis, b=target, autojunk=False)
    return {
        i for block in matcher.get_matching_blocks() for i in range(block.a, block.a + block.size)
    }


class CandidatesPanel(QWidget):
    """Top-k alternatives of the latest decoding step, with their probabilities as bars.

    For a speech window (``heard`` given, or ``relative``) the bars are scaled to the best
    candidate (probabilities spread over a whole vocabulary are all small), the heard word's row
    is marked, and a last line says where the heard word ranked.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.candidates: tuple[tuple[str, float], ...] = ()
        self.heard: str | None = None
        self.relative = False
        self._row_h = 21
        self.setMinimumHeight(5 * self._row_h + 12)
        self._font = style.mono_font(11)

    def show_candidates(
        self,
        candidates: Sequence[tuple[str, float]],
        heard: str | None = None,
        *,
        relative: bool = False,
    ) -> None:
        """Show ``(label, probability)`` pairs, best first (``heard``: the word actually heard)."""
        self.candidates = tuple((str(label), float(p)) for label, p in candidates)
        self.heard, self.relative = heard or None, relative
        self.setToolTip(
            "Bars are relative to the best candidate; the numbers are probabilities."
            if relative
            else ""
        )
        rows = len(self.candidates) + (1 if relative else 0)
        self.setMinimumHeight(max(5, rows) * self._row_h + 12)
        self.update()

    @property
    def heard_rank(self) -> int | None:
        """1-based rank of the heard word among the candidates (0: not among them; None: none)."""
        return heard_rank(self.candidates, self.heard)

    def paintEvent(self, event) -> None:
        """Draw the widget."""
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#ffffff"))
        painter.setFont(self._font)
        metrics = painter.fontMetrics()
        if not self.candidates:
            painter.setFont(self.font())
            painter.setPen(QColor("#757575"))
            painter.drawText(
                self.rect().adjusted(8, 0, -8, 0),
                Qt.AlignmentFlag.AlignVCenter | Qt.TextFlag.TextWordWrap,
                "No candidates yet: the decoder's top-k alternatives (characters when typing, "
                "words when listening) appear here with the first decoded keystroke or window.",
            )
            return
        label_w = min(self.width() // 3, max(metrics.horizontalAdvance("M") * 3, 40))
        widest = max(metrics.horizontalAdvance(_shown(c)) for c, _ in self.candidates) + 6
        label_w = max(label_w, widest)  # + 6: elidedText needs a little more than the advance
        label_w = min(label_w, self.width() // 3)
        value_w = metrics.horizontalAdvance("100.0 %") + 8
        bar_w = max(10, self.width() - label_w - value_w - 32)
        scale = max(p for _, p in self.candidates) if self.relative else 1.0
        rank = self.heard_rank
        for row, (label, prob) in enumerate(self.candidates):
            top = 6 + row * self._row_h
            if rank == row + 1:
                painter.fillRect(
                    QRectF(2, top, self.width() - 4, self._row_h - 2), QColor("#e8f5e9")
                )
            text_rect = QRectF(8, top, label_w, self._row_h - 4)
            painter.setPen(QColor(HEARD if rank == row + 1 else "#263238"))
            elided = metrics.elidedText(_shown(label), Qt.TextElideMode.ElideRight, label_w)
            painter.drawText(text_rect, Qt.AlignmentFlag.AlignVCenter, elided)
            length = bar_w * min(max(prob / scale if scale > 0 else 0.0, 0.0), 1.0)
            bar = QRectF(label_w + 16, top + 3, length, self._row_h - 10)
            painter.fillRect(QRectF(label_w + 16, top + 3, bar_w, bar.height()), QColor("#eceff1"))
            painter.fillRect(bar, QColor("#1e88e5" if row == 0 else "#90caf9"))
            painter.setPen(QColor("#263238"))
            painter.drawText(
                QRectF(label_w + 20 + bar_w, top, value_w, self._row_h - 4),
                Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
                f"{100 * prob:.1f} %",
            )
        if self.relative:
            self._paint_heard_line(painter, 6 + len(self.candidates) * self._row_h, rank)

    def _paint_heard_line(self, painter: QPainter, top: float, rank: int | None) -> None:
        """The line under a speech window's candidates: where the heard word ranked."""
        if rank is None:
            text, color = "Sliding window: no word onset, nothing heard to compare.", "#607d8b"
        elif rank == 0:
            text = f"Heard '{self.heard}': not in the top {len(self.candidates)}."
            color = _MISMATCH
        else:
            text, color = f"Heard '{self.heard}': rank {rank} (green row).", HEARD
        painter.setPen(QColor(color))
        painter.drawText(
            QRectF(8, top, self.width() - 16, self._row_h - 4),
            Qt.AlignmentFlag.AlignVCenter,
            painter.fontMetrics().elidedText(text, Qt.TextElideMode.ElideRight, self.width() - 16),
        )


def _shown(label: str) -> str:
    return {" ": "␣ space"}.get(label, label)


class DecoderFeed(QObject):
    """Drain the decoder's event queue on a QTimer into the text, candidates, latency panels.

    Parameters
    ----------
    text, candidates : TextPanel, CandidatesPanel
        Panels to update.
    latency : LatencyPanel | None
        Receives each event with the time it was shown (``emitted -> shown`` latency).
    interval_ms : int
        Polling period.
    """

    def __init__(
        self,
        text: TextPanel,
        candidates: CandidatesPanel,
        latency: LatencyPanel | None = None,
        interval_ms: int = 20,
    ) -> None:
        super().__init__(text)
        self.text, self.candidates, self.latency = text, candidates, latency
        self.events: EventQueue | queue.Queue[TextEvent] | None = None
        self.n_events = 0
        self._timer = QTimer(self, interval=interval_ms)
        self._timer.timeout.connect(self.poll)

    def attach(
        self, events: EventQueue | queue.Queue[TextEvent], stats: LatencyStats | None = None
    ) -> None:
        """Show the events of ``events`` (and the stage latencies of ``stats``) from now on."""
        self.events = events
        if self.latency is not None:
            self.latency.set_stats(stats)
        self._timer.start()

    def detach(self) -> None:
        """Stop reading the queue (the text stays on screen)."""
        self._timer.stop()
        self.events = None

    def poll(self) -> int:
        """Handle every queued event without waiting; return how many there were."""
        if self.events is None:
            return 0
        batch = _take(self.events)
        if not batch:
            return 0
        for event in batch:
            self.text.add_event(event)
        self.text.render()
        self._show_candidates(batch)
        shown_at = pylsl.local_clock()
        if self.latency is not None:
            for event in batch:
                self.latency.add_event(event, shown_at)
        self.n_events += len(batch)
        return len(batch)

    def _show_candidates(self, batch: list[TextEvent]) -> None:
        """Candidates of the newest event that has a decoding step (a gap keeps the last ones)."""
        shown = next((e for e in reversed(batch) if e.kind != "gap"), None)
        if shown is None:
            return
        if shown.kind == "candidates":
            self.candidates.show_candidates(shown.candidates, shown.target, relative=True)
        else:
            self.candidates.show_candidates(shown.candidates)


def _take(events: EventQueue | queue.Queue[TextEvent]) -> list[TextEvent]:
    """Up to :data:`_MAX_EVENTS_PER_POLL` queued events, without waiting."""
    if isinstance(events, EventQueue):  # the engine's drop-oldest queue: all at once
        return events.drain()
    batch = []
    while len(batch) < _MAX_EVENTS_PER_POLL:
        try:
            batch.append(events.get_nowait())
        except queue.Empty:
            break
    return batch
