"""Outlets over real loopback LSL: metadata, exact samples and timestamps, clear errors."""

from __future__ import annotations

import numpy as np
import pylsl
import pytest

from acquisition.channels import ChannelSpec, channels_from_info
from acquisition.outlets import DataOutlet, MarkerOutlet, TextOutlet


def _inlet(source_id: str) -> tuple[pylsl.StreamInlet, pylsl.StreamInfo]:
    found = pylsl.resolve_byprop("source_id", source_id, 1, 10.0)
    assert found, f"outlet {source_id} not visible"
    inlet = pylsl.StreamInlet(found[0], recover=False)
    info = inlet.info(timeout=5.0)
    inlet.open_stream(timeout=5.0)
    return inlet, info


def _pull_all(inlet: pylsl.StreamInlet, n: int, n_channels: int):
    data, stamps = [], []
    while len(stamps) < n:
        chunk, ts = inlet.pull_chunk(timeout=5.0, max_samples=n)
        assert ts, "no data within 5 s"
        data += chunk
        stamps += ts
    return np.asarray(data).reshape(-1, n_channels), np.asarray(stamps)


@pytest.fixture
def spec() -> ChannelSpec:
    pos = np.array([[0.01, 0.02, 0.03], [np.nan] * 3, [-0.04, 0.05, 0.06]])
    return ChannelSpec(["Fz", "Cz", "MEG 0111"], ["eeg", "eeg", "mag"], ["V", "V", "T"], pos)


def test_data_outlet_carries_metadata_and_exact_timestamps(source_id, spec):
    outlet = DataOutlet("bci-test-data", "EEG", spec, 250.0, source_id)
    inlet, info = _inlet(source_id)
    assert (info.name(), info.type(), info.nominal_srate()) == ("bci-test-data", "EEG", 250.0)
    got = channels_from_info(info)
    assert got == spec
    np.testing.assert_allclose(got.positions, spec.positions, atol=1e-9)
    assert outlet.wait_for_consumers(10.0)

    data = np.arange(30, dtype=np.float32).reshape(10, 3)
    stamps = 1000.0 + np.cumsum(np.r_[0.0, np.full(8, 0.004), 0.5])  # irregular last step
    outlet.push_chunk(data, stamps)
    outlet.push_chunk(data[:4] + 100, 2000.0)  # one float: time of the last sample
    received, ts = _pull_all(inlet, 14, 3)
    np.testing.assert_array_equal(received[:10], data)
    np.testing.assert_array_equal(ts[:10], stamps)
    np.testing.assert_array_equal(received[10:], data[:4] + 100)
    np.testing.assert_allclose(ts[10:], 2000.0 - np.arange(3, -1, -1) / 250.0, atol=1e-9)

    now = pylsl.local_clock()
    outlet.push_chunk(np.ones((2, 3)))  # None: the last sample is stamped now
    _, ts = _pull_all(inlet, 2, 3)
    assert ts[-1] >= now
    outlet.close()
    with pytest.raises(RuntimeError, match="closed"):
        outlet.push_chunk(data)


def test_data_outlet_rejects_bad_input(source_id, spec):
    with pytest.raises(TypeError, match="'channels'.*ChannelSpec"):
        DataOutlet("x", "EEG", ["Fz"], 100.0, source_id)
    with pytest.raises(ValueError, match="'sfreq'.*positive"):
        DataOutlet("x", "EEG", spec, 0.0, source_id)
    with pytest.raises(ValueError, match="'channel_format'.*string"):
        DataOutlet("x", "EEG", spec, 100.0, source_id, channel_format=pylsl.cf_string)
    outlet = DataOutlet("bci-test-bad", "EEG", spec, 100.0, source_id)
    with pytest.raises(ValueError, match=r"'data'.*\(n_samples, 3\).*\(4, 2\)"):
        outlet.push_chunk(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="'timestamps'.*4 finite times"):
        outlet.push_chunk(np.zeros((4, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="'timestamps'"):
        outlet.push_chunk(np.zeros((2, 3)), np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="'timestamp'.*positive"):
        outlet.push_chunk(np.zeros((2, 3)), -1.0)
    outlet.close()


def test_marker_and_text_outlets(source_id):
    markers = MarkerOutlet("bci-test-marker-outlet", source_id)
    inlet, info = _inlet(source_id)
    assert info.channel_format() == pylsl.cf_string
    assert info.nominal_srate() == pylsl.IRREGULAR_RATE and info.type() == "Markers"
    assert markers.wait_for_consumers(10.0)
    markers.push("key:a", 123.25)
    markers.push("sentence_end:hi there")
    first = inlet.pull_sample(timeout=5.0)
    second = inlet.pull_sample(timeout=5.0)
    assert first == (["key:a"], 123.25)
    assert second[0] == ["sentence_end:hi there"] and second[1] > 123.25
    with pytest.raises(TypeError, match="'value'.*str"):
        markers.push(3)

    text = TextOutlet(source_id=source_id + "-text")
    text_inlet, text_info = _inlet(source_id + "-text")
    assert (text_info.name(), text_info.type()) == ("bci-app-text", "Text")
    assert text.wait_for_consumers(10.0)
    text.push("the quick brown fox", 50.0)
    assert text_inlet.pull_sample(timeout=5.0) == (["the quick brown fox"], 50.0)
    with pytest.raises(ValueError, match="'name'.*empty"):
        MarkerOutlet("", source_id)
    markers.close()
    text.close()
