"""A decoder far behind its stream (max-speed replay) emits the text of one fed chunk by chunk.

At max speed the pipeline finds seconds of samples in the ring buffer at each poll; it reads
them in bounded pieces (``RingBuffer.read_since(max_samples=...)``) and preprocesses float32
samples without a float64 copy. Here the whole session is in the buffer before the pipeline
starts (the worst backlog), over a real LSL outlet and inlet, and what it commits must equal what
the same recording fed in 0.1 s chunks with no LSL and no thread commits: every keystroke has
its event, every sentence the same text and posteriors. The keystroke events' live hypotheses
may differ: the windows that complete together in a backlog are decoded as one batch (one
sentence-graph run), so each sees the keystrokes after it.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers.live import feed

from acquisition.io import write_recording
from acquisition.markers import MarkerSource
from acquisition.player import Player
from acquisition.recording import Recording
from acquisition.simulator import Simulator
from acquisition.stream import StreamSource
from bci_app.decoders.shipped import TYPING_BUNDLE
from bci_app.live.keystroke import KeystrokeStrategy
from bci_app.live.session import DecodingSession


def _commits(events) -> list[tuple]:
    """Each event's kind, time and committed text: what is the same with or without batches.

    A keystroke has its event at its time, a sentence end commits its text (the live hypotheses
    aside).
    """
    return [(e.kind, e.timestamp, e.committed) for e in events if e.kind != "gap"]


def test_windows_that_complete_together_are_decoded_as_one_batch_per_sentence():
    """Windows completing in one step are decoded together, split at sentence boundaries.

    Fed in one chunk, every keystroke window completes in one step, on both sides of a sentence
    boundary: the batch ends at the boundary, and every key and sentence is committed as when
    fed in 0.1 s chunks (one window per step).
    """
    recording = Simulator("meg", "typing", snr=2.0, seed=4245, subject=0).generate(30.0)
    strategies, results = [], []
    for chunk_s in (0.1, 30.0):
        strategy = KeystrokeStrategy(TYPING_BUNDLE, provider="cpu")
        batches = []
        add_windows = strategy.decoder.add_windows

        def counted(windows, stages, add_windows=add_windows, batches=batches):
            batches.append(len(windows))
            return add_windows(windows, stages)

        strategy.decoder.add_windows = counted
        session = DecodingSession(
            strategy, channels=recording.channels, sfreq=recording.sfreq, text_outlet=False
        )
        events, _ = feed(session, recording, chunk_s)
        strategies.append(strategy)
        results.append((events, batches))
    (one_by_one, singles), (together, batches) = results
    assert set(singles) == {1} and len(batches) == len(strategies[1].sentences)
    assert len(strategies[1].sentences) >= 2
    assert _commits(together) == _commits(one_by_one)
    for a, b in zip(*(s.sentences for s in strategies)):
        assert a.variants == b.variants and a.target == b.target


@pytest.mark.slow
def test_a_whole_session_in_the_buffer_decodes_to_the_chunk_by_chunk_events(tmp_path, source_id):
    recording = Simulator("meg", "typing", snr=2.0, seed=4243, subject=0).generate(30.0)
    path = write_recording(recording, tmp_path / "session.xdf")
    with Player(path, speed="max", source_id=source_id, wait_for_consumer=True) as player:
        with (
            MarkerSource(source_id=f"{source_id}-markers") as markers,
            StreamSource(source_id=source_id, bufsize=60.0) as source,
        ):
            # The markers the live session pulls, kept to feed the same ones below: a second
            # inlet would see them shifted by its own clock-offset estimate (tens of us), enough
            # to move a keystroke window by a sample now and then.
            pulled, pull = [], markers.pull

            def pull_and_keep():
                batch = pull()
                pulled.extend(batch)
                return batch

            markers.pull = pull_and_keep
            deadline = time.monotonic() + 60
            while not player.done.is_set() or source.buffer.n_written < player.n_samples_sent:
                assert time.monotonic() < deadline, "the replay did not arrive"
                time.sleep(0.05)
            time.sleep(0.5)  # the last markers
            backlog = source.buffer.read_since(0)  # what the live session will find
            strategy = KeystrokeStrategy(TYPING_BUNDLE, provider="cpu")
            live = DecodingSession(strategy, source, markers, text_outlet=False)
            with live:  # its first poll finds the whole session waiting
                while live.pipeline.n_processed < source.buffer.n_written:
                    assert time.monotonic() < deadline + 60, "the backlog was not processed"
                    time.sleep(0.05)
                time.sleep(0.5)
            summary = live.stop()
    received = Recording(
        backlog.data, backlog.timestamps, source.sfreq, source.channels, pulled
    )  # fmt: skip
    fed_strategy = KeystrokeStrategy(TYPING_BUNDLE, provider="cpu")
    fed = DecodingSession(
        fed_strategy, channels=source.channels, sfreq=source.sfreq, text_outlet=False
    )
    expected, _ = feed(fed, received, 0.1)
    assert summary["inference_errors"] == 0 and summary["dropped_samples"] == 0
    assert len(strategy.sentences) >= 2 and len(expected) > 20
    events = live.events.drain()
    assert _commits(events) == _commits(expected)
    assert len(strategy.sentences) == len(fed_strategy.sentences)
    for live_sentence, fed_sentence in zip(strategy.sentences, fed_strategy.sentences):
        assert live_sentence.variants == fed_sentence.variants
        # equal to float32 rounding: the resampler's products group rows by chunk
        np.testing.assert_allclose(live_sentence.log_probs, fed_sentence.log_probs, rtol=1e-5)


def test_markers_that_arrive_while_a_backlog_is_stepped_still_get_their_windows(
    tmp_path, source_id
):
    """A backlog longer than the windower's history, with its markers arriving late.

    The data (40 s, more than the 30 s of history the windower keeps for late markers) are all
    in the buffer when the session starts; the marker inlet hands over nothing at the first
    pull and everything at the next (a marker stream that lags its data, as at max-speed
    replay). The pipeline pulls markers before each piece of the backlog, so every key gets
    its window; pulled once per poll, the keys of the first 10 s were dropped as too late.
    """
    recording = Simulator("meg", "typing", snr=2.0, seed=4244, subject=0).generate(40.0)
    n_keys = sum(m.value.startswith("key:") for m in recording.markers)
    path = write_recording(recording, tmp_path / "session.xdf")
    with Player(path, speed="max", source_id=source_id, wait_for_consumer=True) as player:
        with (
            MarkerSource(source_id=f"{source_id}-markers") as markers,
            StreamSource(source_id=source_id, bufsize=60.0) as source,
        ):
            deadline = time.monotonic() + 60
            while not player.done.is_set() or source.buffer.n_written < player.n_samples_sent:
                assert time.monotonic() < deadline, "the replay did not arrive"
                time.sleep(0.05)
            time.sleep(0.5)  # the last markers reach the marker inlet
            pull, calls = markers.pull, []

            def lagging_pull():  # stands in for a marker stream that lags its data
                calls.append(1)
                return [] if len(calls) == 1 else pull()

            markers.pull = lagging_pull
            strategy = KeystrokeStrategy(TYPING_BUNDLE, provider="cpu")
            live = DecodingSession(strategy, source, markers, text_outlet=False)
            with live:
                while live.pipeline.n_processed < source.buffer.n_written:
                    assert time.monotonic() < deadline + 60, "the backlog was not processed"
                    time.sleep(0.05)
                time.sleep(0.5)
            summary = live.stop()
    assert n_keys > 60 and summary["inference_errors"] == 0
    windower = live.pipeline.windower
    reasons = {reason for _, reason in windower.dropped}
    assert reasons <= {"the data ended before the window was complete"}  # none too late
    assert live.pipeline.n_windows + len(windower.dropped) + windower.n_pending == n_keys
    assert live.pipeline.n_windows >= n_keys - 1  # a last key may end past the data
    assert summary["windows_not_cut"] == len(windower.dropped)
