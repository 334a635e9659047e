"""The window decodes live: built-in simulator + shipped bundle, mismatched bundles, bci-app gui."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import pyxdf
from PyQt6.QtCore import Qt

from bci_app.decoders.bundle import load_bundle
from bci_app.decoders.events import EventQueue
from bci_app.decoders.shipped import TYPING_BUNDLE
from bci_app.live.builtin import simulator_params
from gui.decoding import bundle_for
from gui.main_window import MainWindow
from gui.tasks import wait_for_all


@pytest.fixture
def window(qtbot, settings, tmp_path):
    win = MainWindow(settings, discover=False)
    qtbot.addWidget(win)
    win.bar.record_dir = tmp_path
    win.resize(1600, 1000)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.close()


@pytest.mark.slow
def test_builtin_simulator_is_decoded_live_and_recorded_with_its_text(qtbot, window, screenshot):
    window.bar.select_data("sim:meg")
    assert window.bundle_path == ""  # nothing chosen: the shipped bundle decodes the simulator
    qtbot.keyClick(window, Qt.Key.Key_F5)
    qtbot.waitUntil(lambda: window.session.state == "running", timeout=30_000)
    assert window.errors == []
    decoding = window.session.decoding
    assert decoding is not None and decoding.bundle.name == load_bundle(TYPING_BUNDLE).name
    assert isinstance(window.feed.events, EventQueue) and window.feed.events is decoding.events
    assert window.bar.provider_label.text() == f"Provider: {decoding.provider}"
    assert "CPUExecutionProvider" in window.bar.provider_label.text()

    # Keystrokes of the simulated participant, decoded by the real ONNX graphs.
    qtbot.waitUntil(lambda: window.text_panel.hypothesis_text != "", timeout=40_000)
    assert window.feed.n_events > 0
    assert window.candidates.candidates and window.text_panel.confidence
    qtbot.keyClick(window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.session.recording_path is not None, timeout=10_000)
    path = window.session.recording_path
    # The next sentence starts with its sentence marker: the target and a live CER show.
    qtbot.waitUntil(
        lambda: window.text_panel.target_text is not None and len(window.text_panel.confidence) > 8,
        timeout=60_000,
    )
    assert window.text_panel.cer_so_far is not None
    qtbot.waitUntil(lambda: window.latency.table.rowCount() >= 3, timeout=5000)
    window.resize(1600, 1000)
    qtbot.wait(300)
    screenshot(window, "main_window_decoding")
    qtbot.keyClick(window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.bar.record_button.text() == "● Record", timeout=5000)
    assert wait_for_all(timeout=20)

    streams, _header = pyxdf.load_xdf(str(path))
    text = [s for s in streams if s["info"]["name"][0] == "bci-app-text"]
    assert len(text) == 1 and len(text[0]["time_series"]) > 0
    event = json.loads(text[0]["time_series"][0][0])
    assert event["kind"] in ("keystroke", "sentence_end", "gap")

    qtbot.keyClick(window, Qt.Key.Key_F5)
    qtbot.waitUntil(lambda: window.session.state == "idle", timeout=20_000)
    assert window.bar.provider_label.text() == "Provider: — (no decoder running)"
    assert decoding.pipeline.n_windows > 0
    assert window.errors == []


@pytest.mark.slow
def test_a_bundle_that_does_not_fit_the_stream_is_a_readable_error(qtbot, window):
    window.bar.bundle_edit.setText(str(TYPING_BUNDLE))  # MEG decoder on the EEG simulator
    window.bar.select_data("sim:eeg")
    window.toggle_session()
    qtbot.waitUntil(lambda: bool(window.errors), timeout=30_000)
    message = window.errors[-1]
    assert message.startswith("Decoding is off: Invalid value for 'sfreq'")
    assert "typing-meg-small' expects 1000 Hz" in message
    assert "Traceback" not in message
    assert window.banner.isVisible()
    # The stream itself is fine: the scope keeps running without a decoder.
    assert window.session.state == "running" and window.session.decoding is None
    assert window.bar.provider_label.text() == "Provider: — (decoder off)"
    qtbot.waitUntil(lambda: window.scope.image.any(), timeout=10_000)
    window.toggle_session()
    qtbot.waitUntil(lambda: window.session.state == "idle", timeout=20_000)


def test_a_missing_bundle_is_named_in_the_error(qtbot, window, tmp_path):
    window.bar.bundle_edit.setText(str(tmp_path / "no-such-bundle"))
    window.bar.select_data("sim:eeg")
    window.toggle_session()
    qtbot.waitUntil(lambda: bool(window.errors), timeout=30_000)
    assert window.errors[-1].startswith("Decoding is off: Not a decoder bundle")
    assert "no-such-bundle" in window.errors[-1]
    assert window.session.state == "running"
    window.toggle_session()
    qtbot.waitUntil(lambda: window.session.state == "idle", timeout=20_000)


def test_bundle_choice_and_the_simulator_it_was_trained_on(tmp_path):
    assert bundle_for("", "meg") == TYPING_BUNDLE
    assert bundle_for("", "eeg") is None and bundle_for("", None) is None
    assert bundle_for(" /x/bundle ", "meg").as_posix() == "/x/bundle"
    copy = tmp_path / "bundle"
    shutil.copytree(TYPING_BUNDLE, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    # the bundle's demo.simulator says what the built-in stream plays for it
    manifest["demo"]["simulator"].update(subject=3, snr=1.5)
    manifest["provenance"]["recordings"][0]["simulator"].update(subject=4, snr=1.0)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    bundle = load_bundle(copy)
    assert simulator_params(bundle, "meg") == {"snr": 1.5, "subject": 3, "sentence_split": "test"}
    assert simulator_params(bundle, "eeg") == {"snr": 2.0, "subject": 0}  # not its modality
    assert simulator_params(None, "meg") == {"snr": 2.0, "subject": 0}
    # without a demo, the subject and SNR of its first training recording
    del manifest["demo"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert simulator_params(load_bundle(copy), "meg") == {"snr": 1.0, "subject": 4}


def test_bci_app_gui_help_lists_the_window_options():
    out = subprocess.run(
        [sys.executable, "-m", "bci_app.cli.main", "gui", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: bci-app gui")
    assert "--simulate" in out.stdout and "--screenshot" in out.stdout


@pytest.mark.slow
def test_a_speech_bundle_decodes_a_listening_stream_into_candidates(source_id, qtbot):
    """A speech bundle gets the speech strategy (as the window opens it).

    Candidates reach the panels.
    """
    import time

    from acquisition.simulator import Simulator, SimulatorStream
    from bci_app.decoders.shipped import SPEECH_BUNDLE
    from bci_app.live.factory import open_session
    from bci_app.live.speech import SpeechStrategy
    from gui.panels import CandidatesPanel, TextPanel

    bundle = load_bundle(SPEECH_BUNDLE)
    sim = Simulator("meg", "listening", snr=3.0, subject=0, seed=4243)
    with SimulatorStream(sim, source_id=source_id):
        opened = open_session(
            bundle, source_id, f"{source_id}-markers", timeout=10, start=True, text_outlet=False
        )
        with opened:
            assert isinstance(opened.session.strategy, SpeechStrategy)
            deadline, events = time.monotonic() + 60, []
            while not any(e.kind == "candidates" for e in events):
                assert time.monotonic() < deadline, "no candidates within 60 s"
                events += opened.session.events.drain()
                time.sleep(0.2)
    event = next(e for e in events if e.kind == "candidates")
    assert event.hypothesis == event.candidates[0][0] and len(event.candidates) >= 5
    text, candidates = TextPanel(), CandidatesPanel()
    qtbot.addWidget(text)
    qtbot.addWidget(candidates)
    text.add_event(event)
    text.render()
    candidates.show_candidates(event.candidates)
    assert event.hypothesis in text.hypothesis_text
