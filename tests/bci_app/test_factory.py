"""open_session: one set of rules for `bci-app run` and the window (simulator, streams, decoder)."""

from __future__ import annotations

import pytest
from helpers import typing_bundles as tb

from acquisition.simulator import Simulator, SimulatorStream, load_sentences
from acquisition.stream import StreamNotFoundError
from bci_app.decoders.bundle import load_bundle
from bci_app.decoders.shipped import SPEECH_BUNDLE, TYPING_BUNDLE
from bci_app.live.builtin import plan_builtin, shipped_bundle, start_builtin
from bci_app.live.ctc import CTCStrategy
from bci_app.live.factory import (
    StreamQuery,
    check_bundle_task,
    make_strategy,
    open_session,
)
from bci_app.live.keystroke import KeystrokeStrategy
from bci_app.live.speech import SpeechStrategy

pytestmark = pytest.mark.skipif(
    not (TYPING_BUNDLE.is_dir() and SPEECH_BUNDLE.is_dir()), reason="shipped bundles missing"
)


def test_bundle_and_session_tasks_must_match():
    typing, speech = load_bundle(TYPING_BUNDLE), load_bundle(SPEECH_BUNDLE)
    with pytest.raises(ValueError, match=r"'typing-meg-small' is a typing decoder.*listening"):
        check_bundle_task(typing, "listening", "meg")
    with pytest.raises(ValueError, match=r"Choose a speech bundle \(with none given, the shipped "):
        check_bundle_task(typing, "listening", "meg")
    with pytest.raises(ValueError, match=r"speech decoder.*plays a typing session.*typing bundle"):
        check_bundle_task(speech, "typing", "meg")
    with pytest.raises(
        ValueError, match=r"\(EEG, typing\).*typing bundle, or a listening simulator"
    ):
        check_bundle_task(speech, "typing", "eeg")  # no shipped EEG bundle to offer
    with pytest.raises(
        ValueError, match=r"a listening session needs a speech decoder.*typing task"
    ):
        check_bundle_task(typing, "listening")
    with pytest.raises(ValueError, match=r"'task': 'speech'; use one of \('typing', 'listening'\)"):
        check_bundle_task(speech, "speech")
    check_bundle_task(speech, "listening", "meg")
    check_bundle_task(typing, "typing")


def test_shipped_bundles_decode_the_built_in_meg_sessions():
    assert shipped_bundle("typing") == TYPING_BUNDLE == shipped_bundle("typing", "meg")
    assert shipped_bundle("listening", "meg") == SPEECH_BUNDLE
    assert shipped_bundle("typing", "eeg") is None and shipped_bundle("listening", "ieeg") is None
    plan = plan_builtin(load_bundle(SPEECH_BUNDLE), "listening", seed=7)
    assert (plan.modality, plan.task, plan.seed) == ("meg", "listening", 7)
    assert plan.name == "bci-app-sim-meg-listening" and plan.source_id.startswith(plan.name)
    assert plan.marker_source_id == f"{plan.source_id}-markers" and "sentences" in plan.params
    assert plan_builtin(None, "typing").name == "bci-app-sim-meg"
    assert plan_builtin(None, "typing").source_id != plan_builtin(None, "typing").source_id
    stream = start_builtin(plan_builtin(load_bundle(TYPING_BUNDLE), "typing", seed=3))
    try:  # the built-in typing session types held-out sentences only
        assert stream.simulator.sentence_split == "test"
        assert set(stream.simulator.sentences) == set(load_sentences(split="test"))
    finally:
        stream.stop()


def test_the_strategy_follows_the_bundle(tmp_path):
    typing = make_strategy(load_bundle(TYPING_BUNDLE), has_markers=True, provider="cpu")
    assert isinstance(typing, KeystrokeStrategy)
    speech = make_strategy(load_bundle(SPEECH_BUNDLE), has_markers=False, provider="cpu")
    assert isinstance(speech, SpeechStrategy) and speech.windower.mode == "sliding"
    with_markers = make_strategy(load_bundle(SPEECH_BUNDLE), has_markers=True, provider="cpu")
    assert with_markers.windower.mode == "auto"
    recording = tb.keystroke_recording(["ab"])
    pre = tb.identity_preprocessing(recording.channels)
    ctc = tb.ctc_bundle(tmp_path / "ctc", recording.channels, pre)
    assert isinstance(make_strategy(ctc, has_markers=False, provider="cpu"), CTCStrategy)


def test_no_stream_starts_the_simulator_the_bundle_was_made_for():
    with open_session(TYPING_BUNDLE, provider="cpu", seed=3, text_outlet=False) as opened:
        plan = opened.builtin
        assert (plan.modality, plan.task, plan.seed) == ("meg", "typing", 3)
        assert opened.source.info.source_id() == plan.source_id
        assert opened.markers.info.source_id() == plan.marker_source_id
        assert opened.source.channels.n_channels == 306 and opened.decoder_error is None
        session = opened.session
        assert isinstance(session.strategy, KeystrokeStrategy) and session.markers is opened.markers
        assert opened.record_ids() == [plan.source_id, plan.marker_source_id]
        reader = opened.connect_markers()  # a second reader of the same marker stream
        assert reader is not opened.markers and reader.info.source_id() == plan.marker_source_id
    assert not opened.source.connected and not opened.simulator.running
    opened.close()  # a second close does nothing


def test_a_bundle_of_another_task_is_refused_or_reported():
    with pytest.raises(ValueError, match="Invalid decoder for this stream"):
        open_session(TYPING_BUNDLE, task="listening")  # before any stream opens
    with open_session(
        TYPING_BUNDLE, task="listening", modality="eeg", report_decoder_errors=True
    ) as opened:
        assert opened.session is None and opened.builtin.name == "bci-app-sim-eeg-listening"
        assert "'typing-meg-small' is a typing decoder" in str(opened.decoder_error)
        assert opened.source.channels.n_channels == 64  # the scope still has its stream
    with open_session(
        TYPING_BUNDLE, modality="eeg", report_decoder_errors=True, text_outlet=False
    ) as opened:  # the right task on the wrong sensors
        assert opened.session is None and "expects 1000 Hz" in str(opened.decoder_error)
    missing = "/no/such/bundle"
    with open_session(missing, modality="eeg", report_decoder_errors=True) as opened:
        assert opened.session is None and "no/such/bundle" in str(opened.decoder_error)


def test_a_stream_given_by_name_and_no_bundle(source_id):
    sim = Simulator("eeg", "typing", seed=2)
    with SimulatorStream(sim, name=f"{source_id}-name", source_id=source_id):
        with open_session(None, f"{source_id}-name", timeout=3.0) as opened:
            assert opened.source.info.source_id() == source_id  # found by its name
            assert opened.session is None and opened.markers is None and opened.builtin is None
            assert opened.record_ids() == [source_id]
        query = StreamQuery(source_id=f"{source_id}-name")  # a source_id only: no name fallback
        with pytest.raises(StreamNotFoundError):
            open_session(None, query, timeout=0.5)
