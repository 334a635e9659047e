"""Live scope on a real simulated LSL stream: traces, markers, controls, a frozen stream."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.recording import Marker
from gui.scope import ScopeWidget


@pytest.fixture
def scope(qtbot, connected):
    source, _markers = connected
    widget = ScopeWidget()
    qtbot.addWidget(widget)
    widget.resize(1100, 700)
    widget.show()
    widget.set_source(source)
    widget.start()
    qtbot.waitUntil(lambda: widget._decimator is not None and widget._decimator.n_total > 100)
    yield widget
    widget.stop()


def _band_coverage(scope: ScopeWidget) -> np.ndarray:
    """Fraction of drawn columns where each channel has a pixel within half a row of its line."""
    image = scope.image
    n_picks = len(scope.picks)
    row = image.shape[0] / n_picks
    drawn = image.any(axis=0)
    coverage = []
    for k in range(n_picks):
        band = image[int((k + 0.5) * row - row / 2) : int((k + 0.5) * row + row / 2) + 1]
        coverage.append(band[:, drawn].any(axis=0).mean())
    return np.array(coverage)


def test_scope_draws_every_channel_from_the_stream(scope, connected, qtbot, screenshot):
    source, markers = connected
    qtbot.wait(800)
    assert len(scope.picks) == 64
    assert (_band_coverage(scope) > 0.8).all()
    # The columns on screen are the exact min/max of the stream's samples.
    mins, maxs, times = scope._decimator.columns()
    data, stamps, _valid = source.buffer.read_latest(source.buffer.n_available)
    per_column = scope._decimator.samples_per_column
    for k in range(-5, -1):
        first = int(np.flatnonzero(stamps == times[k])[0])
        block = data[first : first + per_column]
        np.testing.assert_array_equal(mins[k], block.min(axis=0))
        np.testing.assert_array_equal(maxs[k], block.max(axis=0))
    scope.add_markers(markers.pull())
    scope.refresh()
    screenshot(scope, "scope_eeg_64ch")


def test_markers_are_lines_at_their_time(scope, qtbot):
    _mins, _maxs, times = scope._decimator.columns()
    column_s = scope._decimator.samples_per_column / scope.source.sfreq
    scope.add_markers([Marker(float(times[-1]) - 1.0, "key:a")])
    scope.refresh()
    lines = [line for line in scope.markers.lines if line.isVisible()]
    assert [line.marker.value for line in lines] == ["key:a"]
    # Drawn where the data of that moment are, within a couple of columns of later data.
    x = lines[0].value()
    assert -1.0 - column_s - 3 * column_s < x < -1.0 - column_s + 3 * column_s
    assert lines[0].label.toPlainText() == "a"


def test_span_gain_and_channel_controls(scope, qtbot):
    names = scope.source.channels.names
    scope.set_span(2.0)
    qtbot.wait(300)
    assert scope.plot.getViewBox().viewRange()[0] == pytest.approx([-2.0, 0.0])
    dec = scope._decimator
    assert dec.n_columns * dec.samples_per_column == pytest.approx(2.0 * 500, abs=dec.n_columns)
    lit_before = np.count_nonzero(scope.image)
    scope.set_gain(4.0)
    scope.refresh()
    assert np.count_nonzero(scope.image) > 1.5 * lit_before
    assert scope.gain_label.text() == "×4"
    scope.set_picks([0, 5, 10])
    scope.set_gain(1.0)
    scope.refresh()
    assert scope.picks == [0, 5, 10]
    ticks = scope._left_axis._tickLevels[0]
    assert [label for _pos, label in ticks] == [names[0], names[5], names[10]]
    assert (_band_coverage(scope) > 0.8).all()
    with pytest.raises(ValueError, match="Invalid value for 'picks': 'mag'.*eeg"):
        scope.set_picks("mag")
    with pytest.raises(ValueError, match="Invalid value for 'span'"):
        scope.set_span(0)


def test_frozen_stream_raises_a_banner_and_the_scope_keeps_running(scope, eeg_stream, qtbot):
    frames = len(scope.frame_times)
    eeg_stream.stop()  # the outlet vanishes: the source is lost, no data arrive
    qtbot.waitUntil(lambda: scope.no_data.isVisible(), timeout=5000)
    assert scope.no_data.text().startswith("No new data for")
    qtbot.wait(300)
    assert len(scope.frame_times) > frames  # the timer keeps drawing; nothing blocked


def test_marker_labels_stay_short_for_words_and_sentences():
    from acquisition.recording import parse_marker
    from gui.scope_markers import marker_text

    def label(value: str) -> str:
        return marker_text(*parse_marker(value), value)

    assert label("word:Meridian") == "Meridian"  # listening: the word alone, words come fast
    assert label("word:internationalisation") == "international…"
    assert label("key: ") == "␣" and label("sentence_end:") == "■ end"
    assert label("sentence_start:The city is old.") == "▶ The city is old."
