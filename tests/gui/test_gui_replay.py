"""Replay panel: a real BrainVision file and a simulated XDF session through real LSL streams."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from acquisition.io import open_recording, write_recording
from acquisition.markers import MarkerSource
from acquisition.simulator import Simulator
from acquisition.stream import StreamSource
from gui.replay import ReplayPanel

REAL_DIR = Path(__file__).parents[1] / "data" / "real"


@pytest.fixture
def panel(qtbot):
    widget = ReplayPanel()
    qtbot.addWidget(widget)
    widget.resize(900, 220)
    widget.show()
    yield widget
    widget.close_now()


def _open(qtbot, panel: ReplayPanel, path) -> None:
    with qtbot.waitSignal(panel.opened, timeout=20_000):
        panel.open(path)


def _play(qtbot, panel: ReplayPanel) -> tuple[str, str]:
    with qtbot.waitSignal(panel.playing, timeout=20_000) as signal:
        panel.play_button.click()
    return tuple(signal.args)


def _row_index(data: np.ndarray, row: np.ndarray) -> int:
    matches = np.flatnonzero((data == row).all(axis=1))
    assert matches.size, "row not received"
    return int(matches[-1])


def test_speed_pause_resume_and_seek_on_a_real_recording(qtbot, panel, screenshot):
    path = REAL_DIR / "test.vhdr"
    reader = open_recording(path)
    _open(qtbot, panel, path)
    assert panel.seek_kind.text() == "Seek to marker"  # no sentences in this file
    assert len(panel.seek_points) == len(reader.markers)
    assert "BrainVision, 32 channels, 1000 Hz" in panel.file_label.text()
    panel.speed_combo.setCurrentIndex(panel.speed_combo.findData(2.0))
    data_id, _marker_id = _play(qtbot, panel)
    assert panel.player.speed == 2.0
    file_data = reader.read(0, reader.n_times)[0].astype(np.float32)
    # Raw (clock-corrected) timestamps: the dejitter model assumes the nominal rate.
    with StreamSource(source_id=data_id, dejitter=False) as source:
        qtbot.waitUntil(lambda: source.buffer.n_written >= 600, timeout=10_000)
        new = source.buffer.read_since(0)
        data, stamps, counter = new.data, new.timestamps, new.next_counter
        np.testing.assert_array_equal(data, file_data[: data.shape[0]])
        # Twice real time: the stream's samples are 0.5 ms apart on the LSL clock.
        np.testing.assert_allclose(np.diff(stamps), 1 / 1000, rtol=1e-6)  # recording time base

        first_marker = min(s for _label, s in panel.seek_points)
        qtbot.waitUntil(lambda: panel.player.n_samples_sent > first_marker + 400, timeout=10_000)
        panel.toggle_pause()
        assert panel.player.paused and panel.pause_button.text() == "Resume"
        qtbot.wait(150)
        held = panel.player.n_samples_sent
        qtbot.wait(400)
        assert panel.player.n_samples_sent == held
        screenshot(panel, "replay_paused")
        panel.toggle_pause()
        assert not panel.player.paused
        qtbot.waitUntil(lambda: panel.player.n_samples_sent > held + 200, timeout=5000)

        # Back in time to a marker already played, so the jump in the data is unambiguous.
        index = max(i for i, (_label, s) in enumerate(panel.seek_points) if s < held - 300)
        target = panel.seek_points[index][1]
        panel.seek_to_point(index)
        qtbot.waitUntil(lambda: panel.player.position > target + 300, timeout=5000)
        qtbot.wait(300)
        data = source.buffer.read_since(counter).data
        at = _row_index(data, file_data[target])
        np.testing.assert_array_equal(data[at : at + 300], file_data[target : target + 300])
        assert panel.slider.value() > target
    with qtbot.waitSignal(panel.stopped, timeout=10_000):
        panel.stop()
    assert panel.play_button.isEnabled()


def test_seek_to_a_sentence_of_a_simulated_session(qtbot, panel, tmp_path, screenshot):
    recording = Simulator("eeg", "typing", seed=5).generate(22.0)
    path = write_recording(recording, tmp_path / "typing.xdf")
    sentences = [
        (m.value.split(":", 1)[1], m.timestamp)
        for m in recording.markers
        if m.value.startswith("sentence_start:")
    ]
    assert len(sentences) >= 2
    _open(qtbot, panel, path)
    assert panel.seek_kind.text() == "Seek to sentence"
    assert [label for label, _sample in panel.seek_points] == [s for s, _t in sentences]
    panel.seek_to_point(1)
    start = panel.seek_points[1][1]
    assert panel.slider.value() == start
    assert abs(start / recording.sfreq - sentences[1][1]) < 2 / recording.sfreq
    panel.speed_combo.setCurrentIndex(panel.speed_combo.findData(5.0))
    screenshot(panel, "replay_sentences")
    data_id, marker_id = _play(qtbot, panel)
    with MarkerSource(source_id=marker_id) as markers, StreamSource(source_id=data_id) as source:
        qtbot.waitUntil(lambda: source.buffer.n_written >= 100, timeout=10_000)
        received = []
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            received += markers.pull()
            qtbot.wait(50)
        data = source.buffer.read_since(0).data
    assert received[0].value == f"sentence_start:{sentences[1][0]}"
    np.testing.assert_array_equal(data[0], recording.data[start].astype(np.float32))


def test_opening_a_missing_file_reports_it(qtbot, panel, tmp_path):
    with qtbot.waitSignal(panel.failed, timeout=5000) as signal:
        panel.open(tmp_path / "nope.vhdr")
    assert "Could not open the recording" in signal.args[0]
    assert "does not exist" in signal.args[0]
    assert not panel.play_button.isEnabled()
