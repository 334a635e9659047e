"""Live v2 (CTC) typing: a real exported model decodes a replayed stream chunk by chunk."""

from __future__ import annotations

import time

import pytest
from helpers import typing_bundles as tb

from acquisition.markers import MarkerSource
from acquisition.player import Player
from acquisition.simulator import Simulator
from acquisition.stream import StreamSource
from bci_app.live.ctc import CTCLiveSession
from bci_app.live.session import LiveSession

pytest.importorskip("torch")


@pytest.mark.slow
def test_v2_bundle_decodes_a_replayed_stream_by_sentence(tmp_path, source_id):
    rec = Simulator("eeg", "typing", snr=2.0, seed=3, sfreq=100.0).generate(40.0)
    bundle, _ = tb.torch_bundle(tmp_path, "brain2qwerty_v2", rec)
    n_sentence_ends = len(rec.markers_of("sentence_end"))
    player = Player(rec, speed="max", source_id=source_id, wait_for_consumer=True).start()
    try:
        with (
            MarkerSource(source_id=f"{source_id}-markers") as markers,
            StreamSource(source_id=source_id, bufsize=60.0) as source,
        ):
            with pytest.raises(ValueError, match="brain2qwerty_v2 decoder; live decoding runs"):
                LiveSession(bundle, source, markers, text_outlet=False)
            session = CTCLiveSession(bundle, source, markers, text_outlet=False)
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
    assert len([s for s in session.sentences if s.target]) >= n_sentence_ends
    assert summary["latency_ms"]["pulled->emitted"]["n"] > 0
