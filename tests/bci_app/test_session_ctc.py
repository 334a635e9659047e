"""Live v2 (CTC) typing: the strategy fed chunk by chunk (no thread, no LSL).

And a real exported model decoding a replayed stream.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers import typing_bundles as tb
from helpers.live import feed
from helpers.typing_data import without_markers

from acquisition.markers import MarkerSource
from acquisition.player import Player
from acquisition.recording import parse_marker
from acquisition.simulator import Simulator
from acquisition.stream import StreamSource
from bci_app.live.ctc import CTCStrategy
from bci_app.live.keystroke import KeystrokeStrategy
from bci_app.live.session import DecodingSession
from bci_app.typing.ctc import CTCDecoder


def _reference(bundle, recording, spans):
    """Texts of the decoder given each span's samples at once: ``[(target, text)]``."""
    decoder = CTCDecoder(bundle, provider="cpu")
    out = []
    for target, start, end in spans:
        inside = (recording.timestamps >= start) & (recording.timestamps < end)
        decoder.start_sentence(target)
        decoder.add_data(recording.data[inside], recording.timestamps[inside])
        decoder.end_sentence()
        out.append((target, decoder.last_sentence.text))
    return out


def test_ctc_strategy_fed_chunk_by_chunk_cuts_sentences_at_their_marker_sample(tmp_path):
    recording = tb.keystroke_recording(["the cat", "sat down"], noise=1.0)
    pre = tb.identity_preprocessing(recording.channels)
    bundle = tb.ctc_bundle(tmp_path / "ctc", recording.channels, pre)
    starts = [m for m in recording.markers if parse_marker(m.value)[0] == "sentence_start"]
    ends = recording.markers_of("sentence_end")
    spans = [(parse_marker(s.value)[1], s.timestamp, e.timestamp) for s, e in zip(starts, ends)]
    expected = _reference(bundle, recording, spans)
    assert len(expected) == 2 and all(text for _, text in expected)
    strategy = CTCStrategy(bundle, provider="cpu")
    assert strategy.windower is None and strategy.reads_chunks
    session = DecodingSession(
        strategy, channels=recording.channels, sfreq=recording.sfreq, text_outlet=False
    )
    events, summary = feed(session, recording, 0.13)
    # before the first sentence marker the stream is decoded as a sentence with no target
    before = _reference(bundle, recording, [(None, -np.inf, spans[0][1])])
    assert [(s.target, s.text) for s in strategy.sentences] == before + expected
    assert [e.target for e in events if e.kind == "sentence_end"] == [None, "the cat", "sat down"]
    streamed = [e for e in events if e.kind == "keystroke"]
    # inside a sentence the graph re-runs every hop (25 samples); between sentences, never
    for _, start, end in spans:
        inside = [e for e in streamed if start <= e.timestamp < end]
        n_samples = ((recording.timestamps >= start) & (recording.timestamps < end)).sum()
        assert n_samples // 25 - 1 <= len(inside) <= n_samples // 25
    decoded = [(-np.inf, spans[0][1])] + [(start, end) for _, start, end in spans]
    assert all(any(a <= e.timestamp < b for a, b in decoded) for e in streamed)
    assert all(set(e.stages) >= {"pulled", "preprocessed", "inferred", "emitted"} for e in streamed)
    assert summary["sentences"] == 3 and summary["windows"] == 0
    assert summary["inference_errors"] == 0 and summary["latency_ms"]["pulled->emitted"]["n"] > 0
    # without sentence markers the stream is one sentence, committed at stop
    unmarked = without_markers(recording, "sentence_start", "sentence_end")
    strategy = CTCStrategy(bundle, provider="cpu")
    session = DecodingSession(
        strategy, channels=recording.channels, sfreq=recording.sfreq, text_outlet=False
    )
    feed(session, unmarked, 0.13)
    whole = _reference(bundle, recording, [(None, -np.inf, np.inf)])
    assert [(s.target, s.text) for s in strategy.sentences] == whole


@pytest.mark.slow
def test_v2_bundle_decodes_a_replayed_stream_by_sentence(tmp_path, source_id):
    pytest.importorskip("torch")
    rec = Simulator("eeg", "typing", snr=2.0, seed=3, sfreq=100.0).generate(40.0)
    bundle, _ = tb.torch_bundle(tmp_path, "brain2qwerty_v2", rec)
    n_sentence_ends = len(rec.markers_of("sentence_end"))
    player = Player(rec, speed="max", source_id=source_id, wait_for_consumer=True).start()
    try:
        with (
            MarkerSource(source_id=f"{source_id}-markers") as markers,
            StreamSource(source_id=source_id, bufsize=60.0) as source,
        ):
            with pytest.raises(ValueError, match="brain2qwerty_v2 decoder; the keystroke strategy"):
                KeystrokeStrategy(bundle, provider="cpu")
            strategy = CTCStrategy(bundle, provider="cpu")
            session = DecodingSession(strategy, source, markers, text_outlet=False)
            with session:
                deadline = time.monotonic() + 60
                while session.pipeline.n_processed < rec.n_times:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
                time.sleep(0.5)
                events = session.events.drain()
            summary = session.stop()
    finally:
        player.stop()
    kinds = [e.kind for e in events]
    assert "keystroke" in kinds  # streaming re-decodes every hop
    assert summary["inference_errors"] == 0
    # every sentence the recording closed was committed at its marker, with its target
    assert len([s for s in strategy.sentences if s.target]) >= n_sentence_ends
    assert summary["latency_ms"]["pulled->emitted"]["n"] > 0
