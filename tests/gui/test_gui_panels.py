"""Decoded text, candidates and latency panels fed with TextEvents through the decoder queue.

The TextEvents are test input built from a simulated typing session's ground truth (see the
``make_text_events`` fixture), not the output of a decoder.
"""

from __future__ import annotations

import queue

import pytest
from PyQt6.QtWidgets import QSplitter

from bci_app.decoders.events import TextEvent
from bci_app.live.metrics import LatencyStats
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
    assert "session CER" in text.stats.text()
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
