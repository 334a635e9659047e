"""The window decodes a simulated listening session with the shipped speech bundle, end to end."""

from __future__ import annotations

import html
import json

import pylsl
import pytest
import pyxdf
from PyQt6.QtCore import Qt

from acquisition.recording import parse_marker
from bci_app.decoders.bundle import load_bundle
from bci_app.decoders.events import EventQueue, TextEvent
from bci_app.decoders.manifest import thaw
from bci_app.decoders.shipped import SPEECH_BUNDLE, TYPING_BUNDLE
from bci_app.live.builtin import simulator_params
from bci_app.live.factory import check_bundle_task
from bci_app.live.speech import SpeechStrategy
from gui.app import build_parser
from gui.decoding import SIMULATORS, bundle_for
from gui.listening import HEARD, IN_TOP_K, MISSED
from gui.main_window import MainWindow
from gui.panels import CandidatesPanel, TextPanel
from gui.session import StreamChoice
from gui.tasks import wait_for_all


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


def _shown_markers(window: MainWindow) -> list[str]:
    """Values of the markers the scope draws now."""
    lines = window.scope.markers.lines
    return [line.marker.value for line in lines if line.marker is not None and line.isVisible()]


def _word_onsets(window: MainWindow, after: float) -> list[str]:
    """Word markers the scope holds that are newer than ``after`` (LSL clock)."""
    lines = window.scope.markers.lines
    markers = [line.marker for line in lines if line.marker is not None]
    return [m.value for m in markers if m.timestamp > after and parse_marker(m.value)[0] == "word"]


@pytest.mark.slow
def test_listening_simulator_is_decoded_live_into_words_and_recorded(qtbot, window, screenshot):
    window.bar.select_data("sim:meg-listening")
    assert window.bar.data_choice().label == "Built-in simulator (MEG, listening)"
    assert window.bundle_path == ""  # nothing chosen: the shipped speech bundle decodes it
    qtbot.keyClick(window, Qt.Key.Key_F5)
    qtbot.waitUntil(lambda: window.session.state == "running", timeout=30_000)
    assert window.errors == []
    engine = window.session.decoding
    assert engine is not None
    assert engine.bundle.name == load_bundle(SPEECH_BUNDLE).name
    assert isinstance(engine.strategy, SpeechStrategy)
    assert isinstance(window.feed.events, EventQueue) and window.feed.events is engine.events
    assert window.bar.provider_label.text() == f"Provider: {engine.provider}"
    assert window.session.source.channels.n_channels == 306

    # Windows locked to the simulator's word onsets: best word in the text, top-k beside it.
    panel = window.text_panel
    qtbot.waitUntil(lambda: panel.words.n_heard >= 2, timeout=60_000)
    assert panel.listening and window.candidates.relative
    assert len(window.candidates.candidates) == 10
    assert window.candidates.candidates[0][0] == panel.hypothesis_text
    shown = panel.committed.toPlainText().split()
    assert panel.hypothesis_text in " ".join(shown)
    assert "CER" not in panel.stats.text() and "Target" not in panel.live.text()
    assert f"in the top 10 {panel.words.n_top_k}/{panel.words.n_heard}" in panel.stats.text()
    n_vocabulary = engine.decoder.n_candidates
    assert f"({n_vocabulary} candidate words)" in panel.stats.text()
    assert "Heard" in panel.live.text() and html.escape(panel.target_text) in panel.live.text()
    qtbot.waitUntil(
        lambda: any(parse_marker(v)[0] == "word" for v in _shown_markers(window)), timeout=10_000
    )

    qtbot.keyClick(window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.bar.record_button.text() == "■ Stop recording", timeout=10_000)
    path, started = window.session.recording_path, pylsl.local_clock()
    # Record until a word onset and its decoded window came after the recording started.
    qtbot.waitUntil(lambda: bool(_word_onsets(window, after=started + 0.5)), timeout=30_000)
    n_before = panel.words.n_heard
    qtbot.waitUntil(lambda: panel.words.n_heard >= n_before + 2, timeout=30_000)
    qtbot.waitUntil(lambda: window.latency.table.rowCount() >= 3, timeout=5000)
    window.resize(1600, 1000)
    qtbot.wait(300)
    screenshot(window, "main_window_listening")
    qtbot.keyClick(window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.bar.record_button.text() == "● Record", timeout=5000)
    assert wait_for_all(timeout=20)

    streams, _header = pyxdf.load_xdf(str(path))
    by_name = {s["info"]["name"][0]: s for s in streams}
    data = by_name["bci-app-sim-meg-listening"]
    assert data["time_series"].shape[1] == 306 and data["time_series"].shape[0] > 1000
    markers = [m[0] for m in by_name["bci-app-sim-meg-listening-markers"]["time_series"]]
    assert any(parse_marker(m)[0] == "word" for m in markers)
    events = [json.loads(row[0]) for row in by_name["bci-app-text"]["time_series"]]
    assert events and all(e["kind"] in ("candidates", "gap") for e in events)
    decoded = [e for e in events if e["kind"] == "candidates"]
    assert decoded and all(len(e["candidates"]) == 10 for e in decoded)
    assert all(e["hypothesis"] == e["candidates"][0][0] for e in decoded)

    qtbot.keyClick(window, Qt.Key.Key_F5)
    qtbot.waitUntil(lambda: window.session.state == "idle", timeout=20_000)
    assert window.bar.provider_label.text() == "Provider: — (no decoder running)"
    assert engine.strategy.n_words > 0
    assert window.errors == []


def test_a_typing_bundle_on_the_listening_simulator_is_a_readable_error(qtbot, window):
    window.bar.bundle_edit.setText(str(TYPING_BUNDLE))
    window.bar.select_data("sim:meg-listening")
    window.toggle_session()
    qtbot.waitUntil(lambda: bool(window.errors), timeout=30_000)
    message = window.errors[-1]
    assert message.startswith("Decoding is off: Invalid decoder for this stream")
    assert "'typing-meg-small' is a typing decoder" in message
    assert "Choose a speech bundle" in message and "Traceback" not in message
    assert window.banner.isVisible()
    assert window.session.state == "running" and window.session.decoding is None
    assert window.bar.provider_label.text() == "Provider: — (decoder off)"
    window.toggle_session()
    qtbot.waitUntil(lambda: window.session.state == "idle", timeout=20_000)


def test_bundle_and_simulator_tasks_must_match():
    """The window's simulators and bundles obey open_session's task rule."""
    typing, speech = load_bundle(TYPING_BUNDLE), load_bundle(SPEECH_BUNDLE)

    def check(bundle, key):
        check_bundle_task(bundle, SIMULATORS[key].task, SIMULATORS[key].modality)

    with pytest.raises(ValueError, match=r"'typing-meg-small' is a typing decoder.*listening"):
        check(typing, "meg-listening")
    with pytest.raises(
        ValueError, match="with none given, the shipped 'speech-meg-small' decodes it"
    ):
        check(typing, "meg-listening")
    with pytest.raises(ValueError, match=r"speech decoder.*plays a typing session.*typing bundle"):
        check(speech, "meg")
    with pytest.raises(ValueError, match=r"\(EEG, typing\).*or a listening simulator"):
        check(speech, "eeg")
    check(speech, "meg-listening")
    check(typing, "meg")


def test_listening_choices_keys_bundles_and_simulator_settings():
    assert StreamChoice.builtin("meg").key == "sim:meg"  # saved settings keep working
    choice = StreamChoice.builtin("meg-listening")
    assert (choice.simulator, choice.task, choice.key) == ("meg", "listening", "sim:meg-listening")
    assert StreamChoice.builtin("ieeg-listening").simulator == "ieeg"
    with pytest.raises(ValueError, match="'key': 'meg-speech'.*meg-listening"):
        StreamChoice.builtin("meg-speech")
    assert bundle_for("", "meg-listening") == SPEECH_BUNDLE
    assert bundle_for("", "meg") == TYPING_BUNDLE and bundle_for("", "eeg-listening") is None
    # The speech bundle's simulator: its subject, SNR and the sentences its candidates come from.
    speech = load_bundle(SPEECH_BUNDLE)
    demo = thaw(speech.manifest.demo.simulator)
    params = simulator_params(speech, "meg", "listening")
    assert params["sentences"] == demo["sentences"] and params["snr"] == demo["snr"]
    assert "task" not in params and "modality" not in params
    assert simulator_params(speech, "meg", "typing") == {"snr": 2.0, "subject": 0}
    assert simulator_params(speech, "eeg", "listening") == {"snr": 2.0, "subject": 0}


def test_simulate_offers_every_builtin_simulator(qtbot, window):
    parser = build_parser()
    assert parser.parse_args(["--simulate", "meg-listening"]).simulate == "meg-listening"
    help_lines = [" ".join(line.split()) for line in parser.format_help().splitlines()]
    shipped = "meg-listening MEG, listening (decoded by the shipped speech-meg-small)"
    assert shipped in help_lines
    with pytest.raises(SystemExit):
        parser.parse_args(["--simulate", "listening"])
    choices = next(a.choices for a in parser._actions if a.dest == "simulate")
    assert tuple(choices) == tuple(SIMULATORS)
    for key in choices:  # what `bci-app gui --simulate KEY` selects before starting
        assert window.bar.select_data(f"sim:{key}"), key
        assert window.bar.data_choice().simulator_key == key


def _window_event(best: list[str], heard: str | None) -> TextEvent:
    """TEST INPUT: a speech window's top-5 words (best first) and the word heard, if any."""
    probs = (0.04, 0.03, 0.02, 0.015, 0.01)
    return TextEvent("candidates", "", best[0], (0.04,), tuple(zip(best, probs)), heard)


def test_text_and_candidates_panels_score_words_against_the_heard_word(qtbot, screenshot):
    text, candidates = TextPanel(), CandidatesPanel()
    for widget in (text, candidates):
        qtbot.addWidget(widget)
    text.resize(560, 400)
    candidates.resize(560, 160)
    words = ["city", "town", "park", "home", "the"]
    batch = [
        _window_event(words, None),  # sliding window: nothing heard
        _window_event(words, "City"),  # best word heard (case is not a difference)
        _window_event(words, "park"),  # heard word third
        _window_event(words, "river"),  # heard word not among the candidates
        TextEvent("gap", timestamp=1.0),
    ]
    for event in batch:
        text.add_event(event)
    text.set_candidate_count(173)
    assert text.listening and text.words.n_words == 4
    assert text.words.n_heard == 3 and text.words.n_top1 == 1 and text.words.n_top_k == 2
    stats = text.stats.text()
    assert "4 windows decoded" in stats and "best 1/3 (33 %), in the top 5 2/3 (67 %)" in stats
    assert "chance: best 0.6 %, top 5 2.9 % (173 candidate words)" in stats
    assert "CER" not in stats
    line = text.committed.toHtml()
    for color in (HEARD, IN_TOP_K, MISSED):
        assert color in line
    assert text.committed.toPlainText() == "city city city/\u2060park city/\u2060river [gap]"
    assert "Heard&nbsp;&nbsp;&nbsp;</span>river" in text.live.text()
    assert "heard word not in the top 5" in text.live.text()
    assert text.legend.text().startswith("Best word of each window")

    candidates.show_candidates(batch[2].candidates, batch[2].target, relative=True)
    assert candidates.heard_rank == 3
    candidates.show()
    image = candidates.grab().toImage()
    row_y = 6 + 2 * 21 + 10  # the third row: the heard word, on a green background
    assert image.pixelColor(4, row_y).name() == "#e8f5e9"
    assert image.pixelColor(4, 6 + 10).name() == "#ffffff"
    candidates.show_candidates(batch[3].candidates, "river", relative=True)
    assert candidates.heard_rank == 0
    text.clear()
    assert not text.listening and text.committed_title.text() == "Committed"


@pytest.mark.slow
def test_bci_app_gui_decodes_with_the_bundle_given_on_the_command_line(qtbot, tmp_path):
    from PyQt6.QtCore import QSettings, QTimer
    from PyQt6.QtWidgets import QApplication

    from gui.app import main

    seen = {}

    def look() -> None:
        window = next(w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow))
        decoding = window.session.decoding
        seen["bundle"] = None if decoding is None else decoding.bundle.path
        seen["candidates"] = len(window.candidates.candidates)
        seen["errors"] = list(window.errors)

    QTimer.singleShot(9000, look)
    ini = tmp_path / "app.ini"
    code = main(
        [
            "--simulate",
            "meg-listening",
            "--bundle",
            str(SPEECH_BUNDLE),
            "--settings",
            str(ini),
            "--exit-after",
            "10",
        ]
    )
    assert code == 0 and seen["errors"] == []
    assert seen["bundle"] == SPEECH_BUNDLE.resolve() and seen["candidates"] > 0
    assert QSettings(str(ini), QSettings.Format.IniFormat).value("session/bundle") == str(
        SPEECH_BUNDLE.resolve()
    )


def test_bci_app_gui_refuses_a_bundle_that_is_not_one(tmp_path, capsys):
    from gui.app import main

    assert main(["--bundle", str(tmp_path), "--exit-after", "1"]) == 2
    assert "Invalid value for '--bundle'" in capsys.readouterr().out
