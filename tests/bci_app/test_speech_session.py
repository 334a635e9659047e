"""Live speech decoding, fed chunk by chunk (no thread, no LSL) and on real LSL streams.

Candidates per word, online == offline, sliding windows.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from helpers.live import feed

from acquisition.io import write_recording
from acquisition.markers import MarkerSource
from acquisition.player import Player
from acquisition.recording import parse_marker
from acquisition.simulator import Simulator, SimulatorStream
from acquisition.stream import StreamSource
from acquisition.xdf import read_xdf
from bci_app.decoders.bundle import load_bundle
from bci_app.decoders.manifest import thaw
from bci_app.decoders.shipped import SPEECH_BUNDLE, TYPING_BUNDLE
from bci_app.live.session import DecodingSession
from bci_app.live.speech import SpeechStrategy, SpeechWindower
from bci_app.processing.preprocessing import preprocess_recording
from bci_app.processing.recentering import RecenterConfig
from bci_app.speech.decoder import SpeechDecoder, make_windower, preprocess_config
from bci_app.speech.evaluate import word_windows

pytestmark = pytest.mark.skipif(not SPEECH_BUNDLE.is_dir(), reason="speech bundle missing")


def _demo_params() -> dict:
    demo = thaw(load_bundle(SPEECH_BUNDLE).manifest.demo.simulator)
    return {k: v for k, v in demo.items() if k not in ("modality", "task")}


@pytest.fixture(scope="module")
def listening_session(tmp_path_factory):
    """A simulated MEG listening session of the bundle's subject it never saw (seed 4242)."""
    rec = Simulator("meg", "listening", seed=4242, **_demo_params()).generate(30.0)
    path = tmp_path_factory.mktemp("listening") / "held_out.xdf"
    write_recording(rec, path)
    return path


def _decode_live(path, source_id, *, markers: bool = True, strategy=None, **session_kwargs):
    """Replay ``path`` at max speed through LSL and decode it live; return (events, summary)."""
    player = Player(path, speed="max", source_id=source_id, wait_for_consumer=True)
    player.start()
    # the marker inlet connects first: the player starts when the data inlet does
    marker_source = MarkerSource(source_id=f"{source_id}-markers").connect() if markers else None
    try:
        with StreamSource(source_id=source_id, bufsize=120.0) as source:
            try:
                strategy = strategy or SpeechStrategy(SPEECH_BUNDLE, provider="cpu")
                session = DecodingSession(
                    strategy, source, marker_source, text_outlet=False, **session_kwargs
                )
                with session:
                    player.join(timeout=90)
                    deadline = time.monotonic() + 20
                    while source.health().n_samples < player.n_samples_sent:
                        assert time.monotonic() < deadline, "samples did not all arrive"
                        time.sleep(0.1)
                    time.sleep(1.0)  # the last windows complete 2.5 s + the resampler delay later
                summary = session.stop()
                return session.events.drain(), summary
            finally:
                if marker_source is not None:
                    marker_source.disconnect()
    finally:
        player.stop()


@pytest.mark.slow
def test_replayed_listening_session_gives_candidates_equal_to_offline(
    listening_session, source_id, tmp_path
):
    log = tmp_path / "session.jsonl"
    events, summary = _decode_live(listening_session, source_id, log_path=log)
    assert summary["inference_errors"] == 0 and summary["dropped_samples"] == 0
    words = [e for e in events if e.target is not None]
    assert summary["word_locked"] and summary["words"] == len(words) >= 10
    for event in words:
        assert event.kind == "candidates" and len(event.candidates) == 10
        assert event.hypothesis == event.candidates[0][0]
        assert {"pulled", "preprocessed", "windowed", "inferred", "emitted"} <= set(event.stages)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[-1]["event"] == "summary" and lines[-1]["words"] == len(words)
    assert sum(line.get("kind") == "candidates" for line in lines) == len(events)
    # offline: the windows and decoder of 'bci-app evaluate' on the same file
    bundle = load_bundle(SPEECH_BUNDLE)
    recording = read_xdf(listening_session)
    windows, _ = word_windows(bundle, recording, "held-out")
    decoder = SpeechDecoder(bundle, provider="cpu")
    offline = [decoder.add_window(w) for w in windows]
    assert [parse_marker(w.marker.value)[1] for w in windows] == [e.target for e in words]
    assert [e.hypothesis for e in words] == [e.hypothesis for e in offline]
    online_p = np.array([[p for _, p in e.candidates] for e in words])
    offline_p = np.array([[p for _, p in e.candidates] for e in offline])
    np.testing.assert_allclose(online_p, offline_p, atol=1e-4)


@pytest.mark.slow
def test_without_markers_sliding_windows_every_hop_and_recentering_runs(
    listening_session, source_id
):
    recenter = RecenterConfig(window_s=20.0, update_s=2.0, min_history_s=5.0)
    strategy = SpeechStrategy(SPEECH_BUNDLE, mode="sliding", hop_s=0.5, top_k=3, provider="cpu")
    events, summary = _decode_live(
        listening_session, source_id, markers=False, strategy=strategy, recenter=recenter
    )
    assert summary["inference_errors"] == 0 and not summary["word_locked"]
    assert summary["words"] == 0 and summary["recentering_updates"] >= 5
    assert len(events) >= 40  # (30 s - 3 s) / 0.5 s + 1 = 55 windows
    assert all(e.kind == "candidates" and e.target is None for e in events)
    assert all(len(e.candidates) == 3 for e in events)
    np.testing.assert_allclose(np.diff([e.timestamp for e in events]), 0.5, atol=1e-3)


def _offline(bundle, windows):
    decoder = SpeechDecoder(bundle, provider="cpu")
    return [decoder.add_window(w) for w in windows]


def test_session_fed_chunk_by_chunk_gives_the_offline_candidates(listening_session):
    bundle = load_bundle(SPEECH_BUNDLE)
    recording = read_xdf(listening_session)
    strategy = SpeechStrategy(bundle, provider="cpu")
    session = DecodingSession(
        strategy, channels=recording.channels, sfreq=recording.sfreq, text_outlet=False
    )
    events, summary = feed(session, recording, 0.1)
    windows, _ = word_windows(bundle, recording, "held-out")
    offline = _offline(bundle, windows)
    words = [e for e in events if e.target is not None]
    assert [parse_marker(w.marker.value)[1] for w in windows] == [e.target for e in words]
    assert [e.hypothesis for e in words] == [e.hypothesis for e in offline] and len(words) >= 10
    online_p = np.array([[p for _, p in e.candidates] for e in words])
    offline_p = np.array([[p for _, p in e.candidates] for e in offline])
    np.testing.assert_allclose(online_p, offline_p, atol=1e-4)
    # auto mode: sliding windows until the first word marker, then word-locked ones only
    first_word = recording.markers_of("word")[0].timestamp
    assert all(e.target is None and e.timestamp < first_word + 3.0 for e in events[: -len(words)])
    assert summary["word_locked"] and summary["words"] == len(words)
    assert summary["inference_errors"] == 0 and summary["recentering_updates"] == 0


def test_sliding_windows_fed_chunk_by_chunk_match_offline_and_recentre(listening_session):
    bundle = load_bundle(SPEECH_BUNDLE)
    recording = read_xdf(listening_session)
    strategy = SpeechStrategy(bundle, mode="sliding", hop_s=0.5, top_k=3, provider="cpu")
    recenter = RecenterConfig(window_s=20.0, update_s=2.0, min_history_s=5.0)
    session = DecodingSession(
        strategy,
        channels=recording.channels,
        sfreq=recording.sfreq,
        recenter=recenter,
        text_outlet=False,
    )
    config = preprocess_config(bundle).with_recentering(recenter)
    assert session.pipeline.preprocessor.config == config  # the config that runs, readable
    events, summary = feed(session, recording, 0.1)
    windower = make_windower(bundle, sliding=True, hop_s=0.5)
    offline = _offline(bundle, windower.push_data(*preprocess_recording(recording, config)))
    assert len(events) == len(offline) >= 40 and not summary["word_locked"]
    assert [e.hypothesis for e in events] == [e.hypothesis for e in offline]
    assert all(len(e.candidates) == 3 and e.target is None for e in events)
    np.testing.assert_allclose(np.diff([e.timestamp for e in events]), 0.5, atol=1e-3)
    assert summary["recentering_updates"] >= 5 and summary["words"] == 0


def test_auto_windows_slide_until_the_first_word_marker(listening_session):
    bundle = load_bundle(SPEECH_BUNDLE)
    recording = read_xdf(listening_session)
    processed = preprocess_recording(recording, preprocess_config(bundle))
    windower = SpeechWindower(bundle, "auto", hop_s=0.25)
    cut = int(np.searchsorted(processed.timestamps, processed.timestamps[0] + 10.0))
    early = windower.push_data(*(part[:cut] for part in processed))  # no marker seen yet
    assert len(early) == 29 and not windower.word_locked  # (10 s - 3 s) / 0.25 s + 1
    assert all(w.marker is None for w in early)
    later = windower.push_markers(recording.markers)  # also the words of the first 10 s
    later += windower.push_data(*(part[cut:] for part in processed))
    assert windower.word_locked and later
    assert all(w.marker is not None for w in later)
    heard = [m.value for m in recording.markers_of("word")]
    # every word whose -0.5..+2.5 s window fits in the recording, in order
    assert [w.marker.value for w in later] == heard[: len(later)]
    assert len(later) >= len(heard) - 10


def test_typing_bundle_and_words_mode_without_markers_are_clear_errors(source_id):
    sim = Simulator("meg", "listening", seed=5)
    with SimulatorStream(sim, source_id=source_id), StreamSource(source_id=source_id) as source:
        with pytest.raises(ValueError, match="is a 'typing' decoder.*task 'speech'"):
            SpeechStrategy(TYPING_BUNDLE, provider="cpu")
        words = SpeechStrategy(SPEECH_BUNDLE, mode="words", provider="cpu")
        with pytest.raises(ValueError, match="'mode': 'words' needs the marker stream"):
            DecodingSession(words, source, None, text_outlet=False)
    with pytest.raises(ValueError, match="'mode': 'both'; use one of"):
        SpeechWindower(load_bundle(SPEECH_BUNDLE), "both")


@pytest.mark.slow
def test_bci_app_run_task_listening_decodes_the_built_in_stream(capsys):
    import threading

    from bci_app.cli.main import build_parser
    from bci_app.cli.run import run_live

    args = build_parser().parse_args(["run", "--task", "listening", "--duration", "9", "--json"])
    assert run_live(args, threading.Event()) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line[:1] == "{"]
    words = [line for line in lines if line.get("kind") == "candidates" and line["target"]]
    assert words and all(len(line["candidates"]) == 10 for line in words)
    assert lines[-1]["event"] == "summary" and lines[-1]["bundle"] == "speech-meg-small"
    assert lines[-1]["words"] >= len(words)


def test_the_built_in_stream_follows_the_modality_the_bundle_was_trained_on():
    from bci_app.decoders.bundle import Bundle
    from bci_app.live.builtin import simulator_modality, simulator_params

    speech = load_bundle(SPEECH_BUNDLE)
    assert simulator_modality(speech) == "meg" and simulator_modality(None) == "meg"
    for modality in ("eeg", "ieeg"):
        # a bundle trained from recorded files: no simulator settings, only its sensors
        channels = Simulator(modality, "listening", seed=1).generate(1.0).channels
        manifest = {
            **speech.manifest.to_dict(),
            "demo": {},
            "provenance": {"recordings": [{"file": "s.xdf"}]},
            "stream": {"sfreq": 500.0, "channels": channels.to_dict()},
        }
        bundle = Bundle(speech.path, manifest)
        assert simulator_modality(bundle) == modality
        assert simulator_params(bundle, modality, "listening") == {"snr": 2.0, "subject": 0}
