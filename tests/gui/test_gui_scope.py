"""Live scope on a real simulated LSL stream: pages of channels grouped by type.

Butterfly view, bad channels toggled by a click on their name, markers, controls, a frozen stream.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PyQt6.QtCore import QPoint, QPointF, Qt
from PyQt6.QtGui import QWheelEvent
from PyQt6.QtWidgets import QApplication

from acquisition.recording import Marker
from acquisition.simulator import Simulator, SimulatorStream
from acquisition.stream import StreamSource
from gui import style
from gui.scope import ScopeWidget
from gui.scope_rows import DEFAULT_ROWS, ChannelRows, color_table
from gui.trace_raster import argb_table, label_pixels


def _scope(qtbot, source) -> ScopeWidget:
    widget = ScopeWidget()
    qtbot.addWidget(widget)
    widget.resize(1100, 700)
    widget.show()
    widget.set_source(source)
    widget.start()
    qtbot.waitUntil(lambda: widget._decimator is not None and widget._decimator.n_total > 100)
    return widget


@pytest.fixture
def scope(qtbot, connected):
    widget = _scope(qtbot, connected[0])
    yield widget
    widget.stop()


@pytest.fixture
def meg_scope(qtbot, source_id):
    """A scope on a live simulated 306-channel Neuromag stream (mag and grad interleaved)."""
    sim = Simulator("meg", "typing", snr=2.0, seed=5, sfreq=250.0)
    with SimulatorStream(sim, name=f"gui-meg-{source_id}", source_id=source_id):
        source = StreamSource(source_id=source_id).connect()
        # a second of data first, so the scope's scale fits the traces into their rows (this
        # host's stream flows the moment it connects)
        qtbot.waitUntil(lambda: source.buffer.n_written >= 250, timeout=10_000)
        widget = _scope(qtbot, source)
        yield widget
        widget.stop()
        source.disconnect()


def _band_coverage(scope: ScopeWidget) -> np.ndarray:
    """Fraction of drawn columns where each row has a pixel within half a row of its line."""
    image = scope.image
    n_rows = scope.channels.shown.n_rows
    row = image.shape[0] / n_rows
    drawn = image.any(axis=0)
    coverage = []
    for k in range(n_rows):
        band = image[int((k + 0.5) * row - row / 2) : int((k + 0.5) * row + row / 2) + 1]
        coverage.append(band[:, drawn].any(axis=0).mean())
    return np.array(coverage)


def _tick_labels(scope: ScopeWidget) -> list[str]:
    return [label for _pos, label in scope._left_axis._tickLevels[0]]


def _wheel(scope: ScopeWidget, notches: int) -> None:
    viewport = scope.plot.viewport()
    at = QPointF(viewport.width() / 2, viewport.height() / 2)
    event = QWheelEvent(
        at,
        QPointF(viewport.mapToGlobal(at.toPoint())),
        QPoint(0, 0),
        QPoint(0, 120 * notches),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(viewport, event)


def _click_name(qtbot, scope: ScopeWidget, row: int) -> None:
    """Left click on the channel name of ``row`` in the scope's left axis."""
    scene = scope.plot.getViewBox().mapViewToScene(QPointF(0.0, row + 0.5))
    axis_x = scope._left_axis.sceneBoundingRect().center().x()
    at = scope.plot.mapFromScene(QPointF(axis_x, scene.y()))
    qtbot.mouseClick(scope.plot.viewport(), Qt.MouseButton.LeftButton, pos=at)


def _row_labels(scope: ScopeWidget, row: int) -> set[int]:
    """Colour labels drawn in the middle half of ``row`` of the image."""
    height = scope.image.shape[0] / scope.channels.shown.n_rows
    band = scope.image[int((row + 0.25) * height) : int((row + 0.75) * height)]
    return set(np.unique(band).tolist()) - {0}


def test_scope_draws_a_page_of_channels_from_the_stream(scope, connected, qtbot, screenshot):
    source, markers = connected
    qtbot.wait(800)
    names = source.channels.names
    assert len(scope.picks) == 64 and scope.rows_per_page == DEFAULT_ROWS == 25
    assert scope.channels.shown.labels == names[:25] and _tick_labels(scope) == list(names[:25])
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
    assert scope.controls.page_label.text() == "1–25 of 64"
    screenshot(scope, "scope_eeg_64ch_page")


def test_pages_group_channels_by_type_and_scroll(meg_scope, qtbot, screenshot):
    scope = meg_scope
    names, types = scope.source.channels.names, scope.source.channels.types
    picks = scope.picks
    # Neuromag interleaves grad, grad, mag: the scope shows the 102 mags, then the 204 grads.
    assert [types[i] for i in picks] == ["mag"] * 102 + ["grad"] * 204
    assert sorted(picks) == list(range(306))
    assert picks[:3] == [2, 5, 8] and picks[102:104] == [0, 1]  # stream order within a type
    assert scope.channels.shown.labels == tuple(names[i] for i in picks[:25])
    assert scope.scrollbar.isVisible() and scope.scrollbar.maximum() == 306 - 25
    assert scope.scrollbar.pageStep() == 25

    qtbot.keyClick(scope.plot, Qt.Key.Key_PageDown)  # the key reaches the scope over the plot
    assert scope.channels.first == 25 and scope.scrollbar.value() == 25
    assert _tick_labels(scope) == [names[i] for i in picks[25:50]]
    _wheel(scope, -1)  # one notch down: the system's lines per notch
    step = QApplication.wheelScrollLines()
    assert scope.channels.first == 25 + step
    _wheel(scope, 1)
    qtbot.keyClick(scope, Qt.Key.Key_PageUp)
    assert scope.channels.first == 0
    scope.scrollbar.setValue(95)  # the page straddles mags and grads
    assert scope.channels.shown.labels == tuple(names[i] for i in picks[95:120])
    qtbot.keyClick(scope, Qt.Key.Key_End)
    assert scope.channels.first == 306 - 25  # the last page is full
    assert scope.channels.shown.n_rows == 25
    scope.scrollbar.setValue(95)
    scope.refresh()
    assert (_band_coverage(scope) > 0.8).all()
    mag, grad = (style.TYPE_ORDER.index(t) + 2 for t in ("mag", "grad"))
    assert _row_labels(scope, 0) == {mag} and _row_labels(scope, 24) == {grad}
    screenshot(scope, "scope_meg_306ch_page_mag_grad")

    scope.set_rows_per_page(10)
    assert scope.channels.shown.n_rows == 10 and scope.channels.first == 95
    scope.set_picks("grad")
    assert scope.channels.first == 0
    assert scope.picks == [i for i in range(306) if types[i] == "grad"]
    with pytest.raises(ValueError, match="Invalid value for 'rows': 0"):
        scope.set_rows_per_page(0)


def test_butterfly_overlays_each_type_in_one_row(meg_scope, qtbot, screenshot):
    scope = meg_scope
    qtbot.keyClick(scope.plot, Qt.Key.Key_B)
    assert scope.view == "butterfly" and scope.controls.butterfly_button.isChecked()
    assert scope.channels.shown.labels == ("mag (102)", "grad (204)")
    assert _tick_labels(scope) == ["mag (102)", "grad (204)"]
    assert sorted(scope.channels.shown.channels.tolist()) == list(range(306))
    assert not scope.scrollbar.isVisible()
    scope.refresh()
    mag, grad = (style.TYPE_ORDER.index(t) + 2 for t in ("mag", "grad"))
    assert _row_labels(scope, 0) == {mag} and _row_labels(scope, 1) == {grad}
    # The 102 overlaid mags make a band in their row, not a solid block.
    drawn = scope.image.any(axis=0)
    lit = (scope.image[: scope.image.shape[0] // 2, drawn] == mag).mean(axis=0)
    assert 0.05 < np.median(lit) < 0.8
    screenshot(scope, "scope_meg_306ch_butterfly")
    scope.controls.butterfly_button.click()
    assert scope.view == "channels" and scope.channels.shown.n_rows == 25


def test_clicking_a_channel_name_toggles_it_bad(meg_scope, qtbot, screenshot):
    scope = meg_scope
    scope.scroll_to(100)
    names, picks = scope.source.channels.names, scope.picks
    emitted = []
    scope.bads_changed.connect(emitted.append)
    _click_name(qtbot, scope, 3)
    bad = names[picks[103]]
    assert emitted == [[bad]] and scope.bads == [bad]
    scope.refresh()
    assert _row_labels(scope, 3) == {1}  # the bad channel's trace is grey
    assert scope.controls.page_label.text().strip().endswith("1 bad")
    # Its name is drawn in red in the axis.
    image = scope.plot.grab().toImage()
    scene_y = scope.plot.getViewBox().mapViewToScene(QPointF(0.0, 3.5)).y()
    y = scope.plot.mapFromScene(QPointF(0.0, scene_y)).y()
    axis = scope._left_axis.sceneBoundingRect()
    colours = {image.pixelColor(x, y).name() for x in range(int(axis.left()), int(axis.right()))}
    assert style.BAD[0] in colours
    screenshot(scope, "scope_meg_bad_channel")
    _click_name(qtbot, scope, 3)
    assert emitted[-1] == [] and scope.bads == []
    scope.set_bads(["not-a-channel", names[0]])
    assert scope.bads == [names[0]] and emitted[-1] == [names[0]]
    scope.set_view("butterfly")
    _click_name(qtbot, scope, 0)  # a butterfly row is a type, not a channel: nothing happens
    assert scope.bads == [names[0]]


def _paint_new_frames(scope: ScopeWidget, qtbot, n: int) -> None:
    """Let the timer draw ``n`` frames with new columns, painting each (offscreen: by hand)."""
    for _ in range(n):
        drawn = scope._decimator.n_total
        qtbot.waitUntil(lambda drawn=drawn: scope._decimator.n_total > drawn)
        scope.plot.grab()


def test_painted_pixels_are_the_image_coloured_only_where_it_changed(meg_scope, qtbot):
    scope = meg_scope
    device = scope._image_item._device
    table = argb_table(color_table())
    _paint_new_frames(scope, qtbot, 1)
    n_full = device.n_full
    _paint_new_frames(scope, qtbot, 8)
    assert device.n_full == n_full  # the image scrolled: only its new columns were coloured
    height, width = device.pixels.shape
    assert width > scope.image.shape[1]  # some columns are repeated at the device width
    np.testing.assert_array_equal(device.pixels, label_pixels(scope.image, table, width, height))
    old = scope._decimator
    scope.resize(900, 560)  # new columns at the new width: coloured whole again
    qtbot.waitUntil(lambda: scope._decimator is not old)
    _paint_new_frames(scope, qtbot, 4)
    assert device.n_full > n_full and device.pixels.shape != (height, width)
    height, width = device.pixels.shape
    np.testing.assert_array_equal(device.pixels, label_pixels(scope.image, table, width, height))


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


def test_marker_lines_moved_cheaply_look_as_pyqtgraph_lines_moved_by_set_pos(scope, qtbot):
    import pyqtgraph as pg

    from gui.scope_markers import _style

    _mins, _maxs, times = scope._decimator.columns()
    marker = Marker(float(times[-1]) - 1.0, "key:a")
    scope.add_markers([marker])
    scope.refresh()
    scope.stop()  # nothing else moves from now on
    (ours,) = [line for line in scope.markers.lines if line.isVisible()]
    # The line as the scope made it with pyqtgraph alone, moved by setPos.
    stock = pg.InfiniteLine(angle=90, movable=False, label="", labelOpts={"position": 0.03})
    stock.setZValue(10)
    stock.label.fill = pg.mkBrush(255, 255, 255, 240)
    stock.label.setFont(ours.label.textItem.font())
    scope.plot.getPlotItem().addItem(stock)
    _style(stock, marker)
    for x in (-1.0, -1.37, -2.5, -6.21, -9.9, -0.3):
        ours.move_to(x)
        stock.blockSignals(True)
        stock.setPos(x)
        stock.blockSignals(False)
        ours.hide()
        stock.show()
        expected = scope.plot.grab().toImage()
        stock.hide()
        ours.show()
        assert scope.plot.grab().toImage() == expected, x
        assert ours.boundingRect() == ours._computeBoundingRect()  # the kept bounds are right
    scope.set_rows_per_page(10)  # the view's scale changes: bounds and label follow
    scope.refresh()
    ours.move_to(-3.3)
    stock.setPos(-3.3)
    ours.hide()
    stock.show()
    expected = scope.plot.grab().toImage()
    stock.hide()
    ours.show()
    assert scope.plot.grab().toImage() == expected


def test_a_marker_keeps_its_line_while_shown_and_the_label_follows(scope, qtbot):
    _mins, _maxs, times = scope._decimator.columns()
    first = Marker(float(times[-1]) - 1.0, "key:a")
    scope.add_markers([first])
    scope.refresh()
    (line,) = [line for line in scope.markers.lines if line.isVisible()]
    x_before = line.value()
    qtbot.wait(300)  # the page scrolls: the marker moves left
    scope.add_markers([Marker(float(times[-1]) - 0.2, "key:b")])
    scope.refresh()
    by_value = {ln.marker.value: ln for ln in scope.markers.lines if ln.isVisible()}
    assert by_value["key:a"] is line and line.marker is first  # not handed another marker
    assert line.value() < x_before and line.label.toPlainText() == "a"
    assert by_value["key:b"].label.toPlainText() == "b"


def test_a_reused_line_shows_its_new_marker_label(scope, qtbot):
    _mins, _maxs, times = scope._decimator.columns()
    scope.add_markers([Marker(float(times[-1]) - 1.0, "key:a")])
    scope.refresh()
    scope.markers.clear()
    scope.refresh()  # the line is hidden and back in the pool
    assert not any(line.isVisible() for line in scope.markers.lines)
    scope.add_markers([Marker(float(times[-1]) - 0.5, "sentence_start:hello")])
    scope.refresh()
    (line,) = [line for line in scope.markers.lines if line.isVisible()]
    assert line.label.toPlainText() == "▶ hello"


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
    assert scope.controls.gain_label.text() == "×4"
    scope.set_picks([0, 5, 10])
    scope.set_gain(1.0)
    scope.refresh()
    assert scope.picks == [0, 5, 10] and not scope.scrollbar.isVisible()
    assert _tick_labels(scope) == [names[0], names[5], names[10]]
    assert (_band_coverage(scope) > 0.8).all()
    with pytest.raises(ValueError, match="Invalid value for 'picks': 'mag'.*eeg"):
        scope.set_picks("mag")
    with pytest.raises(ValueError, match="Invalid value for 'span'"):
        scope.set_span(0)
    with pytest.raises(ValueError, match="Invalid value for 'view'"):
        scope.set_view("topomap")


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


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bad_channels_reach_the_decoder_the_recording_and_the_settings(
    qtbot, settings, tmp_path, screenshot
):
    from acquisition.xdf import read_xdf
    from bci_app.live.session import read_bads
    from gui.main_window import MainWindow
    from gui.tasks import wait_for_all

    window = MainWindow(settings, discover=False)
    qtbot.addWidget(window)
    window.show()
    window.bar.select_data("sim:meg")  # decoded by the shipped MEG typing bundle
    window.toggle_session()
    qtbot.waitUntil(lambda: window.session.state == "running", timeout=60_000)
    scope, decoding = window.scope, window.session.decoding
    assert decoding is not None
    qtbot.waitUntil(lambda: scope.image.any(), timeout=10_000)
    _click_name(qtbot, scope, 2)
    bad = scope.source.channels.names[scope.picks[2]]
    assert scope.bads == [bad]
    assert decoding.pipeline.preprocessor.bad_channels == (bad,)  # its data go in as zeros
    assert json.loads(settings.value("scope/bads/sim:meg", "[]", str)) == [bad]

    window.bar.record_dir = tmp_path
    window.toggle_recording()
    qtbot.waitUntil(lambda: window.bar.record_button.text() == "■ Stop recording", timeout=20_000)
    path = window.session.recording_path
    qtbot.wait(1000)
    screenshot(window, "main_window_meg_bad_channel")
    window.toggle_recording()
    qtbot.waitUntil(lambda: window.bar.record_button.text() == "● Record", timeout=10_000)
    assert wait_for_all(timeout=30)
    recording = read_xdf(path)
    assert read_bads(recording.markers) == (bad,)
    window.close()

    # The next session on that stream starts with the same bad channel, excluded from decoding.
    again = MainWindow(settings, discover=False)
    qtbot.addWidget(again)
    again.show()
    again.bar.select_data("sim:meg")
    again.toggle_session()
    qtbot.waitUntil(lambda: again.session.state == "running", timeout=60_000)
    assert again.scope.bads == [bad]
    assert again.session.decoding.pipeline.preprocessor.bad_channels == (bad,)
    again.close()
    assert again.errors == [] and window.errors == []


def test_channel_rows_group_page_and_mark_bads_without_a_stream():
    names = ["EOG1", "X1", "E1", "M1", "E2", "M2", "X2"]
    types = ["eog", "custom", "eeg", "mag", "eeg", "mag", "custom"]
    rows = ChannelRows(names, types, rows_per_page=3)
    # Known types in the scope's order (mag, ..., eeg, ..., eog), then the others as they come.
    assert rows.order.tolist() == [3, 5, 2, 4, 0, 1, 6]
    assert rows.shown.labels == ("M1", "M2", "E1") and rows.channel_at(2) == 2
    assert rows.scroll_to(10) and rows.first == 4  # clamped: the last page is full
    assert rows.shown.labels == ("EOG1", "X1", "X2") and rows.page_text() == "5–7 of 7"
    assert not rows.scroll_to(4)
    rows.set_view("butterfly")
    assert rows.shown.labels == ("mag (2)", "eeg (2)", "eog (1)", "custom (2)")
    assert rows.shown.rows.tolist() == [0, 0, 1, 1, 2, 3, 3] and rows.channel_at(0) is None
    rows.toggle_bad(2)
    rows.set_bads(rows.bads | {"nope"})
    assert rows.bad_names == ["E1"] and rows.color_labels[2] == 1
    assert rows.good_chosen() == [3, 5, 4, 0, 1, 6]
    rows.choose([4, 2])
    assert rows.order.tolist() == [2, 4] and rows.first == 0
    with pytest.raises(ValueError, match="Invalid value for 'picks': \\[9\\]"):
        rows.choose([9])


def test_the_window_keeps_the_scope_view_and_rows_per_page(qtbot, settings):
    from gui.main_window import MainWindow

    first = MainWindow(settings, discover=False)
    qtbot.addWidget(first)
    first.scope.set_view("butterfly")
    first.scope.set_rows_per_page(50)
    first.close()
    second = MainWindow(settings, discover=False)
    qtbot.addWidget(second)
    assert second.scope.view == "butterfly" and second.scope.rows_per_page == 50
    assert second.scope.controls.butterfly_button.isChecked()
    assert second.scope.controls.rows_combo.currentText() == "50"
    second.scope.set_rows_per_page(None)
    second.close()
    third = MainWindow(settings, discover=False)
    qtbot.addWidget(third)
    assert (
        third.scope.rows_per_page is None and third.scope.controls.rows_combo.currentText() == "all"
    )
    third.close()


def test_sample_to_painted_is_measured_once_per_new_frame_and_shown(scope, qtbot, screenshot):
    from gui.health import PAINTED_STAGE, LatencyPanel

    panel = LatencyPanel()
    qtbot.addWidget(panel)
    scope.painted.connect(panel.add_painted)
    before = len(scope.paint_latencies)  # frames the window painted by itself
    for _ in range(4):
        drawn = scope._decimator.n_total
        qtbot.waitUntil(lambda drawn=drawn: scope._decimator.n_total > drawn)
        scope.plot.grab()  # paints (the offscreen platform does not paint on its own)
    latencies = list(scope.paint_latencies)
    assert len(latencies) >= before + 4
    assert all(0.0 < value < 60.0 for value in latencies)  # painted after the sample was taken
    scope.stop()  # no new samples: painting again measures nothing more
    scope.plot.grab()
    scope.plot.grab()
    assert len(scope.paint_latencies) == len(latencies)
    panel.refresh()
    rows = {panel.table.item(r, 0).text(): r for r in range(panel.table.rowCount())}
    assert panel.table.item(rows[PAINTED_STAGE], 1).text() == str(len(latencies) - before)
    assert "sample to screen" in scope.fps_label.text()
    screenshot(panel, "latency_panel_sample_to_painted")
