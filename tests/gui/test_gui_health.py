"""Health panel on a real simulated stream: connected, lost (red), and back after a restart."""

from __future__ import annotations

import pytest

from acquisition.simulator import Simulator, SimulatorStream
from gui.health import HealthPanel


@pytest.mark.slow
def test_health_panel_shows_a_lost_stream_and_its_recovery(
    qtbot, eeg_stream, connected, screenshot
):
    source, markers = connected
    panel = HealthPanel(interval_ms=100)
    qtbot.addWidget(panel)
    panel.resize(460, 380)
    panel.show()
    panel.set_source(source, markers)
    qtbot.waitUntil(lambda: panel.values["Rate"].text().startswith("5"), timeout=5000)
    assert panel.state == "connected"
    assert panel.badge.text() == "CONNECTED"
    assert "nominal 500 Hz" in panel.values["Rate"].text()
    assert "connected" in panel.values["Markers"].text()
    screenshot(panel, "health_connected")

    eeg_stream.stop()  # the amplifier's outlet goes away
    qtbot.waitUntil(lambda: panel.state == "lost", timeout=5000)
    assert panel.badge.text() == "LOST"
    assert panel.message.isVisible()
    assert "Stream lost" in panel.message.text() and "source_id" in panel.message.text()
    assert "#c62828" in panel.styleSheet()  # the whole panel turns red
    qtbot.wait(300)
    screenshot(panel, "health_lost")

    # The outlet comes back with the same source_id: the source reconnects by itself.
    sim = Simulator("eeg", "typing", snr=2.0, seed=4)
    with SimulatorStream(sim, name=eeg_stream.name, source_id=eeg_stream.source_id):
        qtbot.waitUntil(lambda: panel.state == "connected", timeout=20000)
        assert panel.values["Reconnections"].text() == "1"
        assert "#c62828" not in panel.styleSheet()
        assert not panel.message.isVisible()
        qtbot.waitUntil(lambda: int(panel.values["Gaps"].text()) >= 1, timeout=5000)
        screenshot(panel, "health_recovered")


def test_health_panel_without_source(qtbot):
    panel = HealthPanel()
    qtbot.addWidget(panel)
    assert panel.badge.text() == "NOT CONNECTED"
    assert panel.values["Rate"].text() == "—"
