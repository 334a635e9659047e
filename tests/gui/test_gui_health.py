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


@pytest.mark.slow
def test_health_panel_says_when_a_stream_is_off_its_declared_rate(qtbot, source_id):
    """A real outlet process sending at half its declared rate (its own timestamps)."""
    import subprocess
    import sys
    from pathlib import Path

    from acquisition.stream import StreamSource

    script = Path(__file__).resolve().parents[2] / "scripts" / "faults_streams.py"
    outlet = subprocess.Popen(
        [sys.executable, str(script), "outlet", "--sid", source_id, "--rate-factor", "0.5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert outlet.stdout.readline().startswith("ready")
        with StreamSource(source_id=source_id, resolve_timeout=30) as source:
            panel = HealthPanel(interval_ms=100)
            qtbot.addWidget(panel)
            panel.show()
            panel.set_source(source)
            qtbot.waitUntil(lambda: panel.message.isVisible(), timeout=20000)
            assert "effective rate 250.0 Hz, nominal 500 Hz" in panel.message.text()
            assert "not decoded" in panel.message.text()
            assert "#f9a825" in panel.styleSheet() and panel.state == "connected"
    finally:
        outlet.kill()
        outlet.wait(timeout=10)
        outlet.stdout.close()
