"""Bad channels: zeros in the preprocessed data, so garbage on them never reaches the decoder.

And the ``bads:`` marker that records them with a session.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import typing_bundles as tb
from helpers.live import feed

from acquisition.recording import Marker, Recording
from acquisition.simulator import Simulator
from bci_app.live.keystroke import KeystrokeStrategy
from bci_app.live.session import DecodingSession, bads_marker, read_bads
from bci_app.processing.preprocessing import PreprocessConfig, Preprocessor, fit_scaler


@pytest.fixture(scope="module")
def eeg():
    """10 s of simulated 64-channel EEG at 100 Hz."""
    return Simulator("eeg", "typing", snr=2.0, seed=2, sfreq=100.0).generate(10.0)


def _with_garbage(recording: Recording, channel: int, seed: int = 0) -> Recording:
    """A copy whose ``channel`` holds huge noise and a NaN: a loose electrode."""
    data = recording.data.copy()
    data[:, channel] = 1e3 * np.random.default_rng(seed).normal(size=recording.n_times)
    data[len(data) // 2, channel] = np.nan
    return Recording(
        data, recording.timestamps, recording.sfreq, recording.channels, recording.markers
    )


def _chunked(pre: Preprocessor, recording: Recording, size: int = 37):
    chunks = [
        pre.process(recording.data[i : i + size], recording.timestamps[i : i + size])
        for i in range(0, recording.n_times, size)
    ]
    return np.concatenate([c.data for c in chunks]), np.concatenate([c.valid for c in chunks])


def test_preprocessed_bad_channel_is_zero_and_the_others_are_untouched(eeg):
    config = fit_scaler(eeg, PreprocessConfig.brain2qwerty(eeg.sfreq))
    names = eeg.channels.names
    clean, clean_valid = _chunked(Preprocessor(config, names), eeg)
    pre = Preprocessor(config, names)
    assert pre.set_bad_channels([names[7], "not-a-channel"]) == (names[7],)
    data, valid = _chunked(pre, _with_garbage(eeg, 7))
    assert data.shape == clean.shape  # the decoder keeps its channel count
    assert (data[:, 7] == 0).all()
    others = np.arange(len(names)) != 7
    np.testing.assert_array_equal(data[:, others], clean[:, others])
    np.testing.assert_array_equal(valid, clean_valid)  # its NaN invalidates nothing
    assert pre.set_bad_channels([]) == () and pre.bad_channels == ()


def _decode(bundle, recording: Recording, bads=(), windows=None):
    strategy = KeystrokeStrategy(bundle, provider="cpu")
    session = DecodingSession(
        strategy, channels=recording.channels, sfreq=recording.sfreq, text_outlet=False
    )
    session.set_bad_channels(bads)
    if windows is not None:  # what the decoder is given
        on_window = session.pipeline.on_window
        session.pipeline.on_window = lambda event: (windows.append(event.window), on_window(event))
    events, _summary = feed(session, recording, 0.1)
    return [(e.kind, e.hypothesis, e.confidence) for e in events]


def test_decoding_is_unchanged_by_garbage_on_a_bad_channel(tmp_path):
    recording = tb.keystroke_recording(["hello world", "ok"], n_channels=4, noise=0.2, seed=3)
    bundle = tb.template_bundle(
        tmp_path / "b", recording.channels, tb.identity_preprocessing(recording.channels)
    )
    bad = recording.channels.names[1]
    garbage = _with_garbage(recording, 1)
    windows: list = []
    marked = _decode(bundle, garbage, [bad], windows)
    assert windows and all(w.valid and (w.data[1] == 0).all() for w in windows)
    assert all(np.abs(w.data[0]).max() > 0 for w in windows)
    assert marked == _decode(bundle, recording, [bad])  # as if the channel were quiet
    assert _decode(bundle, garbage) != marked  # unmarked, the garbage changes the text


def test_bads_marker_round_trip():
    markers = [
        Marker(1.0, bads_marker(["MEG 0113"])),
        Marker(2.0, "key:a"),
        Marker(3.0, bads_marker(["MEG 0113", "EEG,001"])),
    ]
    assert markers[0].value == 'bads:["MEG 0113"]'
    assert read_bads(markers) == ("MEG 0113", "EEG,001")  # the last one holds
    assert read_bads(markers[:2]) == ("MEG 0113",)
    assert read_bads([Marker(1.0, "key:b")]) == ()
    assert read_bads([Marker(1.0, bads_marker([]))]) == ()
