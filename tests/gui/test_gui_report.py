"""The window's Stop writes the session report beside the session's recording."""

from __future__ import annotations

import pytest
from helpers import report as html_report
from PyQt6.QtCore import Qt

from bci_app.decoders.shipped import TYPING_BUNDLE
from bci_app.report import read_session_xdf
from gui.main_window import MainWindow
from gui.tasks import wait_for_all

pytestmark = pytest.mark.skipif(not TYPING_BUNDLE.is_dir(), reason="default bundle missing")


@pytest.fixture
def window(qtbot, settings, tmp_path):
    win = MainWindow(settings, discover=False)
    qtbot.addWidget(win)
    win.bar.record_dir = tmp_path
    win.resize(1400, 900)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.close()


@pytest.mark.slow
def test_stop_while_recording_writes_the_report_beside_the_recording(qtbot, window, tmp_path):
    window.bar.select_data("sim:meg")
    qtbot.keyClick(window, Qt.Key.Key_F5)
    qtbot.waitUntil(lambda: window.session.state == "running", timeout=30_000)
    qtbot.keyClick(window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.session.recording_path is not None, timeout=10_000)
    path = window.session.recording_path
    qtbot.waitUntil(lambda: window.bar.record_button.text() != "● Record", timeout=10_000)
    qtbot.waitUntil(lambda: window.feed.n_events >= 5, timeout=60_000)  # keystrokes decoded

    with qtbot.waitSignal(window.session.report_written, timeout=60_000) as written:
        qtbot.keyClick(window, Qt.Key.Key_F5)  # Stop, still recording
    report = path.with_suffix(".html")
    assert written.args == [str(report)]
    qtbot.waitUntil(lambda: window.session.state == "idle", timeout=20_000)
    assert wait_for_all(timeout=20)
    assert window.statusBar().currentMessage() == f"Session report written to {report}"
    document = report.read_text(encoding="utf-8")
    for anchor in ("text", "cer", "latency", "health"):
        assert f"<h2 id='{anchor}'>" in document
    assert "typing-meg-small" in document and "latency sample → emitted" in html_report.images(
        document
    )
    # decoding stopped before the recorder: the file ends with the session summary
    rebuilt = read_session_xdf(path)
    assert rebuilt.bundle == "typing-meg-small" and rebuilt.provider == "CPUExecutionProvider"
    assert window.errors == []
