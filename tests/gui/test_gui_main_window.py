"""Main window end to end: built-in simulator, shortcuts, recording, decoder feed, settings."""

from __future__ import annotations

import queue
import uuid
from pathlib import Path

import pytest
from PyQt6.QtCore import Qt, QTimer

from acquisition.io import read_recording
from bci_app.decoders.events import TextEvent
from bci_app.live.metrics import LatencyStats
from gui.app import main
from gui.health import PAINTED_STAGE
from gui.main_window import MainWindow
from gui.session import StreamChoice
from gui.tasks import wait_for_all

REAL_DIR = Path(__file__).parents[1] / "data" / "real"


@pytest.fixture
def window(qtbot, settings, tmp_path):
    win = MainWindow(settings, discover=False)
    qtbot.addWidget(win)
    win.bar.record_dir = tmp_path
    win.resize(1600, 1000)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    yield win
    win.close()


def _press(qtbot, win: MainWindow, key, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    qtbot.keyClick(win, key, modifier)


@pytest.mark.slow
def test_simulator_session_with_shortcuts_recording_and_decoded_text(
    qtbot, window, typing_truth, make_text_events, screenshot
):
    window.bar.select_data("sim:eeg")
    _press(qtbot, window, Qt.Key.Key_F5)
    qtbot.waitUntil(lambda: window.session.state == "running", timeout=20_000)
    assert window.bar.start_button.text() == "■ Stop"
    qtbot.waitUntil(lambda: window.health.state == "connected", timeout=5000)
    qtbot.waitUntil(lambda: window.scope.image.any(), timeout=5000)
    assert len(window.scope.picks) == 64

    # The engine's queue and latency stats (here fed with test input built from ground truth).
    events: queue.Queue[TextEvent] = queue.Queue()
    stats = LatencyStats()
    stats.add("window complete -> decoded", 0.003)
    window.attach_decoder(events, stats, provider="CPUExecutionProvider")
    batch = make_text_events(typing_truth, seed=2)[:60]
    for event in batch:
        events.put(event)
    qtbot.waitUntil(lambda: window.feed.n_events == len(batch), timeout=5000)
    assert window.text_panel.hypothesis_text == batch[-1].hypothesis
    assert window.bar.provider_label.text() == "Provider: CPUExecutionProvider"

    _press(qtbot, window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.bar.record_button.text() == "■ Stop recording", timeout=10_000)
    path = window.session.recording_path
    qtbot.wait(1500)
    qtbot.waitUntil(lambda: window.latency.table.rowCount() >= 3, timeout=5000)
    window.scope.plot.grab()  # one more painted frame, whatever the platform paints by itself
    window.latency.refresh()
    table = window.latency.table
    assert PAINTED_STAGE in {table.item(r, 0).text() for r in range(table.rowCount())}
    screenshot(window, "main_window_live")
    _press(qtbot, window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.bar.record_button.text() == "● Record", timeout=5000)
    assert wait_for_all(timeout=20)
    recording = read_recording(path)
    assert recording.channels.n_channels == 64
    assert recording.n_times > 250

    # Calibration on the session's stream, in its dock.
    calibration = window.calibration
    calibration.output_dir = path.parent
    calibration.fixation_s = 0.05
    calibration.word_s.setValue(0.4)
    calibration.n_sentences.setValue(1)
    window.docks["calibration"].raise_()
    calibration.start_button.click()
    qtbot.waitUntil(lambda: calibration.state == "showing", timeout=10_000)
    qtbot.wait(100)
    screenshot(window, "main_window_calibration")
    calibration.stop_session()
    qtbot.waitUntil(lambda: calibration.state == "done", timeout=10_000)

    # The amplifier (here the simulator) vanishes: the health panel turns red, the window lives.
    window.session._opened.streams.simulator.stop()
    qtbot.waitUntil(lambda: window.health.state == "lost", timeout=5000)
    qtbot.wait(300)
    screenshot(window, "main_window_stream_lost")

    _press(qtbot, window, Qt.Key.Key_F5)
    qtbot.waitUntil(lambda: window.session.state == "idle", timeout=20_000)
    assert window.health.badge.text() == "NOT CONNECTED"
    assert window.errors == []


def test_settings_persist_streams_bundle_scope_and_layout(qtbot, settings):
    first = MainWindow(settings, discover=False)
    qtbot.addWidget(first)
    first.bar.bundle_edit.setText("/data/bundles/typing-meg")
    first.bar.select_data("sim:eeg")
    first.scope.set_span(5.0)
    first.docks["candidates"].hide()
    first.close()

    second = MainWindow(settings, discover=False)
    qtbot.addWidget(second)
    assert second.bundle_path == "/data/bundles/typing-meg"
    assert second.bar.data_key() == "sim:eeg"
    assert second.scope.span == 5.0
    assert second.docks["candidates"].isHidden()
    assert not second.docks["text"].isHidden()


def test_a_stream_that_is_not_there_gives_a_readable_error(qtbot, window):
    ghost = StreamChoice("ghost stream", source_id=f"ghost-{uuid.uuid4().hex}")
    window.bar.set_streams([ghost], [], keep=ghost.key)
    window.session.resolve_timeout = 0.5
    window.toggle_session()
    qtbot.waitUntil(lambda: bool(window.errors), timeout=10_000)
    message = window.errors[-1]
    assert message.startswith("Could not start the session:")
    assert ghost.source_id in message
    assert "Traceback" not in message
    assert window.banner.isVisible() and window.banner.text.toolTip() == message
    assert window.session.state == "idle"
    assert window.bar.start_button.isEnabled() and window.bar.start_button.text() == "▶ Start"
    # Recording without a session is refused in words too.
    window.toggle_recording()
    assert window.errors[-1] == "Start a session (F5) before recording it."


def test_discovery_lists_a_live_stream_and_its_markers(qtbot, window, eeg_stream):
    window.refresh_streams()

    def listed() -> bool:
        return any(
            (window.bar.data_combo.itemData(i) or StreamChoice("")).source_id
            == eeg_stream.source_id
            for i in range(window.bar.data_combo.count())
        )

    qtbot.waitUntil(listed, timeout=10_000)
    assert window.bar.select_data(f"lsl:{eeg_stream.source_id}|{eeg_stream.name}")
    assert window.bar.marker_choice().source_id == f"{eeg_stream.source_id}-markers"


@pytest.mark.slow
def test_replay_of_a_real_recording_drives_the_window(qtbot, window, screenshot):
    with qtbot.waitSignal(window.replay.opened, timeout=20_000):
        window.replay.open(REAL_DIR / "test.vhdr")
    window.replay.loop_box.setChecked(True)
    window.replay.play()
    qtbot.waitUntil(lambda: window.session.state == "running", timeout=20_000)
    qtbot.waitUntil(lambda: window.scope.image.any(), timeout=10_000)
    assert len(window.scope.picks) == 32
    assert window.session.data_choice.label == "Replay of test.vhdr"
    qtbot.wait(2500)
    screenshot(window, "main_window_replay")
    window.replay.stop()
    qtbot.waitUntil(lambda: window.session.state == "idle", timeout=20_000)


@pytest.mark.slow
def test_app_main_runs_the_window_on_the_simulator(qtbot, tmp_path, screenshot):
    png = screenshot.folder / "app_main_meg_306ch.png"
    code = main(
        [
            "--simulate",
            "meg",
            "--settings",
            str(tmp_path / "app.ini"),
            "--exit-after",
            "5",
            "--screenshot",
            str(png),
        ]
    )
    assert code == 0
    assert png.stat().st_size > 10_000
    screenshot.keep(png)
    # Closing the window left the host application able to run timers (no quit posted).
    ticks = []
    timer = QTimer(interval=10)
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start()
    qtbot.waitUntil(lambda: len(ticks) > 3, timeout=2000)


def test_app_main_rejects_a_bad_duration(capsys):
    assert main(["--exit-after", "0"]) == 2
    assert "Invalid value for '--exit-after'" in capsys.readouterr().out


def test_train_request_from_calibration_trains_in_a_process(qtbot, window, tmp_path):
    """The window runs 'bci-app train typing' off the GUI thread; its failure reads clearly."""
    path = str(tmp_path / "calibration.xdf")  # never recorded: training must say so
    window.calibration.train_requested.emit(path)
    qtbot.waitUntil(lambda: any("Training failed" in e for e in window.errors), timeout=90_000)
    assert "calibration.xdf" in window.errors[-1]
    # an application embedding the window may take the request over instead
    with qtbot.waitSignal(window.train_requested) as signal:
        window.calibration.train_requested.emit(path)
    assert signal.args == [path]


def test_a_stream_typed_by_name_is_found_by_its_name(qtbot, window, eeg_stream):
    window.session.resolve_timeout = 1.5
    window.start_session(StreamChoice.from_text(eeg_stream.name))
    qtbot.waitUntil(lambda: window.session.state == "running", timeout=15_000)
    assert window.session.source.info.source_id() == eeg_stream.source_id
    assert window.calibration.data_stream == eeg_stream.source_id
    window.toggle_session()
    qtbot.waitUntil(lambda: window.session.state == "idle", timeout=15_000)
