"""Calibration task: key presses become LSL markers with LSL-clock stamps, recorded to XDF."""

from __future__ import annotations

import numpy as np
import pylsl
import pytest
from PyQt6.QtCore import Qt

from acquisition.io import read_recording
from acquisition.markers import MarkerSource
from acquisition.recording import parse_marker
from gui.calibration import CalibrationTask

SENTENCES = ["Hi there.", "ok"]


@pytest.fixture
def task(qtbot, tmp_path, source_id):
    widget = CalibrationTask(
        sentences=SENTENCES,
        word_s=0.15,
        fixation_s=0.05,
        blank_s=0.05,
        rest_s=0.05,
        tail_s=0.5,
        marker_source_id=f"{source_id}-calibration",
    )
    widget.output_dir = tmp_path
    widget.n_sentences.setValue(len(SENTENCES))
    qtbot.addWidget(widget)
    widget.resize(900, 420)
    widget.show()
    yield widget
    widget.stop_session()


def test_sessions_draw_from_the_calibration_part_of_the_bank(qtbot):
    from acquisition.simulator import load_sentences

    widget = CalibrationTask()
    qtbot.addWidget(widget)
    drawn = widget.draw_sentences(30)
    assert len(drawn) == len(set(drawn)) == 30
    assert set(drawn) <= set(load_sentences(split="calibration"))
    assert not set(drawn) & set(load_sentences(split="test"))
    assert CalibrationTask(sentences=SENTENCES).draw_sentences(3) == [*SENTENCES, SENTENCES[0]]


def _type(qtbot, task: CalibrationTask, text: str, shot=None) -> tuple[float, float]:
    qtbot.waitUntil(lambda: task.state == "typing", timeout=10_000)
    before = pylsl.local_clock()
    qtbot.keyClicks(task.stage, text)
    after = pylsl.local_clock()
    # No feedback: what is typed never appears on screen.
    assert task.stage.text() == "Type the sentence from memory, then press Enter."
    if shot is not None:
        shot()
    qtbot.keyClick(task.stage, Qt.Key.Key_Return)
    return before, after


def test_key_presses_become_stamped_markers_and_are_recorded(qtbot, task, eeg_stream, screenshot):
    task.set_data_stream(eeg_stream.source_id)
    task.start_session()
    qtbot.waitUntil(lambda: task.state == "showing", timeout=10_000)
    assert task.stage.text() in SENTENCES[0].split()  # one word at a time
    screenshot(task, "calibration_word")
    inlet = MarkerSource(source_id=f"{eeg_stream.source_id}-calibration").connect()
    try:
        first = _type(qtbot, task, "Hi thera", lambda: screenshot(task, "calibration_typing"))
        second = _type(qtbot, task, "ok")
        qtbot.waitUntil(lambda: task.train_button.isVisible(), timeout=15_000)
        received = inlet.pull()
    finally:
        inlet.disconnect()
    screenshot(task, "calibration_done")

    keys_1 = [f"key:{c}" for c in ["H", "i", "space", "t", "h", "e", "r", "a"]]
    expected = [*keys_1, "sentence_end:Hi there.", "sentence_start:ok", "key:o", "key:k"]
    expected.append("sentence_end:ok")
    values = [m.value for m in received]
    assert values == expected
    stamps = np.array([m.timestamp for m in received])
    assert (np.diff(stamps) > 0).all()
    # Each key is stamped on the LSL clock at its key event.
    key_stamps = stamps[: len(keys_1)]
    assert (key_stamps >= first[0]).all() and (key_stamps <= first[1]).all()
    assert second[0] <= stamps[values.index("key:o")] <= second[1]
    # What the outlet sent is what the task reports.
    assert [m.value for m in task.markers][-len(values) :] == values

    recording = read_recording(task.recording_path)
    assert recording.channels.n_channels == 64
    recorded = [m.value for m in recording.markers if parse_marker(m.value)[0] != "gap"]
    assert recorded == ["sentence_start:Hi there.", *expected]
    key_times = [m.timestamp for m in recording.markers if m.value.startswith("key:")]
    # The data cover every key press and the tail after the last one.
    assert recording.timestamps[0] < min(key_times)
    assert max(key_times) + 0.3 < recording.timestamps[-1]

    with qtbot.waitSignal(task.train_requested, timeout=2000) as signal:
        task.train_button.click()
    assert signal.args == [str(task.recording_path)]


def test_start_without_a_data_stream_is_refused_with_a_reason(task, qtbot):
    with qtbot.waitSignal(task.failed) as signal, pytest.raises(RuntimeError, match="Connect a"):
        task.start_session()
    assert "data stream" in signal.args[0]
    assert task.state == "idle"


def test_keys_outside_the_typing_phase_make_no_marker(task, qtbot):
    qtbot.keyClicks(task.stage, "abc")
    assert task.markers == []
