"""Decoded text, candidates and latency panels fed with TextEvents through the decoder queue.

The TextEvents are test input built from a simulated typing session's ground truth (see the
``make_text_events`` fixture), not the output of a decoder.
"""

from __future__ import annotations

import queue

import numpy as np
import pytest
from PyQt6.QtGui import QFontMetrics, QImage, QTextDocument
from PyQt6.QtWidgets import QSplitter

from bci_app.decoders.events import TextEvent
from bci_app.live.metrics import LatencyStats
from bci_app.stats import mean_interval
from bci_app.typing.alphabet import cer, normalize_text
from gui.health import SHOWN_STAGE, TOTAL_STAGE, LatencyPanel
from gui.panels import CandidatesPanel, DecoderFeed, TextPanel, confidence_color


@pytest.fixture
def panels(qtbot):
    text, candidates, latency = TextPanel(), CandidatesPanel(), LatencyPanel()
    splitter = QSplitter()
    for widget in (text, candidates, latency):
        splitter.addWidget(widget)
    qtbot.addWidget(splitter)
    splitter.resize(1500, 420)
    splitter.setSizes([620, 380, 500])
    splitter.show()
    return text, candidates, latency, splitter


def _table(latency: LatencyPanel) -> dict[str, list[str]]:
    table = latency.table
    return {
        table.item(r, 0).text(): [table.item(r, c).text() for c in range(1, 5)]
        for r in range(table.rowCount())
    }


def test_feed_shows_text_cer_candidates_and_latency(
    panels, qtbot, typing_truth, make_text_events, screenshot
):
    text, candidates, latency, splitter = panels
    events = make_text_events(typing_truth, seed=1)
    first_end = next(i for i, e in enumerate(events) if e.kind == "sentence_end")
    stop = first_end + 1 + 25  # one finished sentence, the next one half typed
    engine_stats = LatencyStats()
    for _ in range(50):
        engine_stats.add("window complete -> inferred", 0.004)
    events_queue: queue.Queue[TextEvent] = queue.Queue()
    feed = DecoderFeed(text, candidates, latency)
    feed.attach(events_queue, engine_stats)
    for event in events[:stop]:
        events_queue.put(event)
    qtbot.waitUntil(lambda: feed.n_events == stop, timeout=3000)
    current = events[stop - 1]

    # Committed text, live hypothesis and target as sent.
    assert text.committed.toPlainText() == current.committed
    assert text.hypothesis_text == current.hypothesis
    html = text.live.text()
    assert "Target" in html and "Decoded" in html
    target = normalize_text(current.target)
    first_line = target[:12].replace(" ", "&nbsp;")
    assert f"Target&nbsp;&nbsp;</span>{first_line}" in html
    # The CER so far compares the hypothesis with as much of the target as was typed.
    typed = len(current.hypothesis)
    assert text.cer_so_far == pytest.approx(cer(current.hypothesis, target[:typed]))
    assert f"CER so far {text.cer_so_far:.2f}" in text.stats.text()
    # The finished sentence's CER is that of its final hypothesis against its target.
    finished = events[first_end - 1]
    assert text.sentence_cers == [pytest.approx(cer(finished.hypothesis, finished.target))]
    assert "session CER" in text.stats.text() and "over 1 sentence" in text.stats.text()
    # Low-confidence characters are shaded differently from confident ones.
    low = min(range(typed), key=lambda i: current.confidence[i])
    assert confidence_color(current.confidence[low]) in html
    assert confidence_color(1.0) == "#ffffff"

    assert candidates.candidates == current.candidates
    latency.refresh()
    rows = _table(latency)
    assert "window complete -> inferred" in rows
    assert rows["window complete -> inferred"][0] == "50"
    assert rows[SHOWN_STAGE][0] == str(stop) and rows[TOTAL_STAGE][0] == str(stop)
    assert latency.stage_combo.currentText() == TOTAL_STAGE
    screenshot(splitter, "decoded_text_candidates_latency")
    feed.detach()


def test_text_panel_without_target_says_so(panels):
    text = panels[0]
    text.add_event(TextEvent("keystroke", hypothesis="hello", confidence=(0.9,) * 5))
    text.render()
    assert text.cer_so_far is None
    assert "no target known" in text.stats.text()
    text.clear()
    assert text.hypothesis_text == "" and text.sentence_cers == []


def test_candidates_panel_keeps_the_order_and_draws(panels, screenshot):
    candidates = panels[1]
    candidates.show_candidates([("e", 0.61), (" ", 0.2), ("a", 0.1)])
    assert candidates.candidates == (("e", 0.61), (" ", 0.2), ("a", 0.1))
    image = candidates.grab().toImage()
    # The best candidate's bar is drawn in the strong colour.
    row_y = 6 + 21 // 2
    colours = {image.pixelColor(x, row_y).name() for x in range(image.width())}
    assert "#1e88e5" in colours


LONG_TARGET = "the north koreans struck repeatedly at the defense line."


def _text_panel(qtbot, width: int, hypothesis: str, confidence: float) -> TextPanel:
    text = TextPanel()
    qtbot.addWidget(text)
    text.resize(width, 420)
    text.show()
    qtbot.waitExposed(text)
    confidences = (confidence,) * len(hypothesis)
    text.add_event(TextEvent("keystroke", "", hypothesis, confidences, (), LONG_TARGET))
    text.render()
    qtbot.waitUntil(lambda: text.live.height() >= text.live.sizeHint().height())  # laid out
    return text


def _shown_rows(text: TextPanel) -> list[str]:
    """The rows of the "Current sentence" box as plain text (no wrapping beyond them)."""
    document = QTextDocument()
    document.setHtml(text.live.text())
    return [row.rstrip() for row in document.toPlainText().splitlines() if row.strip()]


def test_a_long_target_wraps_with_its_decoded_row_under_each_target_row(qtbot, screenshot):
    text = _text_panel(qtbot, 330, "the no", 0.9)
    rows = _shown_rows(text)
    # Each target row is followed by its decoded row, even where nothing is decoded yet.
    assert [row.split()[0] for row in rows] == ["Target", "Decoded"] * (len(rows) // 2)
    assert len(rows) >= 6
    targets = [row[len("Target  ") :] for row in rows[::2]]
    assert " ".join(targets) == LONG_TARGET
    assert all(not t.startswith(" ") for t in targets)  # rows break between words
    assert rows[1] == "Decoded the no"
    # No row is wider than the box: the box never wraps a row by itself.
    metrics = QFontMetrics(text.live.font())
    assert max(metrics.horizontalAdvance(row) for row in rows) <= text.live.contentsRect().width()
    screenshot(text, "current_sentence_long_target_narrow")


def test_target_and_decoded_rows_align_character_by_character(qtbot, screenshot):
    text = _text_panel(qtbot, 330, LONG_TARGET, 1.0)  # typed without error, white background
    image = text.live.grab().toImage().convertToFormat(QImage.Format.Format_Grayscale8)
    stride = image.bytesPerLine()
    pixels = np.frombuffer(image.constBits().asstring(stride * image.height()), np.uint8)
    pixels = pixels.reshape(image.height(), stride)[:, : image.width()]
    start = text.live.contentsRect().left() + QFontMetrics(text.live.font()).horizontalAdvance(
        "Decoded "
    )
    ink = pixels[:, start:] < 110  # the black text after the grey row names
    lines, row = [], 0
    inked = ink.any(axis=1)
    while row < len(inked):  # bands of consecutive inked pixel rows: the text rows
        if inked[row]:
            end = row + np.argmin(inked[row:]) if not inked[row:].all() else len(inked)
            lines.append(ink[row:end].any(axis=0))
            row = end
        else:
            row += 1
    assert len(lines) == len(_shown_rows(text)) >= 6
    for target_row, decoded_row in zip(lines[::2], lines[1::2]):
        np.testing.assert_array_equal(target_row, decoded_row)  # the same glyphs, same columns
    screenshot(text, "current_sentence_aligned")


def test_session_cer_shows_its_interval_over_sentences(panels):
    text = panels[0]
    text.clear()
    committed = ""
    for decoded, target in [("the cat", "the cat"), ("a dgo", "a dog"), ("xyz", "sun")]:
        committed += decoded + " "
        text.add_event(TextEvent("sentence_end", committed=committed, target=target))
    text.render()
    assert text.sentence_cers == [cer("the cat", "the cat"), cer("a dgo", "a dog"), 1.0]
    mean, low, high = mean_interval(text.sentence_cers)
    assert text.session_cer == pytest.approx(mean)
    shown = f"session CER {mean:.2f} [{low:.2f}, {high:.2f}] over 3 sentences (95 % t interval)"
    assert shown in text.stats.text()
    text.clear()


def test_a_finished_sentence_stays_under_its_target_until_the_next_one(panels):
    text = panels[0]
    text.clear()
    text.add_event(TextEvent("keystroke", committed="", hypothesis="a do", target="a dog"))
    text.add_event(TextEvent("sentence_end", committed="a dgo", target="a dog"))
    text.render()
    html = text.live.text()
    assert "Target&nbsp;&nbsp;</span>a&nbsp;dog" in html
    decoded = html.split("Decoded&nbsp;</span>", 1)[1]
    assert ">a<" in decoded and ">g<" in decoded and ">o<" in decoded  # "a dgo", per character
    assert text.cer_so_far is None and text.sentence_cers == [cer("a dgo", "a dog")]
    text.add_event(TextEvent("keystroke", committed="a dgo", hypothesis="t", target="the end"))
    text.render()
    assert text.hypothesis_text == "t" and "the&nbsp;end" in text.live.text()
    text.clear()
