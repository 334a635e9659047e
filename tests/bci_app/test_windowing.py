"""Event-locked and sliding windows: alignment, emission time, online == offline, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from acquisition.channels import ChannelSpec
from acquisition.recording import Marker, Recording, key_marker
from bci_app.processing.preprocessing import PreprocessConfig, Preprocessor, fit_scaler
from bci_app.processing.windowing import (
    EventWindower,
    SlidingWindower,
    epochs_from_recording,
    stack_windows,
)

SFREQ = 50.0


def index_stream(n, t0=100.0, n_channels=3):
    """Processed-like stream whose every channel holds the sample index."""
    data = np.repeat(np.arange(n, dtype=np.float32)[:, None], n_channels, axis=1)
    return data, t0 + np.arange(n) / SFREQ


def test_event_window_alignment_and_content():
    data, ts = index_stream(400)
    windower = EventWindower(-0.2, 0.3, SFREQ, baseline=None, clamp=None)
    markers = [
        Marker(ts[100] + 0.004, "key:a"),  # nearest sample 100
        Marker(ts[200] + 0.011, "key:b"),  # nearest sample 201
        Marker(ts[150] + 0.009, "key:c"),  # nearest sample 150
    ]
    windows = windower.push_markers(markers) + windower.push_data(data, ts)
    assert [w.marker.value for w in windows] == ["key:a", "key:c", "key:b"]  # time order
    for window, anchor in zip(windows, [100, 150, 201]):
        assert window.data.shape == (3, 25) and window.data.dtype == np.float32
        np.testing.assert_array_equal(window.data[0], np.arange(anchor - 10, anchor + 15))
        np.testing.assert_array_equal(window.timestamps, ts[anchor - 10 : anchor + 15])
        assert window.valid and window.t_complete == ts[anchor + 14]


def test_ties_go_to_the_earlier_sample():
    ts = np.arange(40) * 0.25  # exact binary fractions: a real tie
    data = np.repeat(np.arange(40.0)[:, None], 2, axis=1)
    windower = EventWindower(-0.5, 0.75, 4.0, baseline=None, clamp=None)
    windows = windower.push_markers([Marker(5.125, "key:a")]) + windower.push_data(data, ts)
    np.testing.assert_array_equal(windows[0].data[0], [18, 19, 20, 21, 22])  # anchor 20 (5.0 s)


@pytest.mark.parametrize("t0", [0.0, 12345.678901, 98765.4321])
def test_ties_survive_a_clock_offset(t0):
    """A replay stamps the same samples with an offset: rounding must not flip any tie."""
    n = 2000
    data = np.repeat(np.arange(n, dtype=np.float32)[:, None], 2, axis=1)
    ts = t0 + np.arange(n) / SFREQ
    # markers exactly half-way between samples (the 1 kHz -> 50 Hz case: key at input 10 mod 20)
    markers = [Marker(t0 + (k + 0.5) / SFREQ, "key:a") for k in range(20, n - 20, 37)]
    windower = EventWindower(-0.2, 0.3, SFREQ, baseline=None, clamp=None)
    windows = windower.push_markers(markers) + windower.push_data(data, ts)
    starts = [int(w.data[0, 0]) for w in windows]
    assert starts == [k - 10 for k in range(20, n - 20, 37)]


def test_window_is_emitted_as_soon_as_complete_never_before():
    data, ts = index_stream(100)
    windower = EventWindower(-0.2, 0.3, SFREQ)
    assert windower.next_due is None
    assert windower.push_markers([Marker(ts[40] + 0.004, key_marker("x"))]) == []
    assert windower.next_due == pytest.approx(ts[54] + 0.004)  # from the marker's time
    assert windower.push_data(data[:54], ts[:54]) == []  # last sample needed: 40 + 14 = 54
    assert windower.n_pending == 1
    assert windower.next_due == pytest.approx(ts[54])  # on the sample grid once anchored
    windows = windower.push_data(data[54:55], ts[54:55])
    assert len(windows) == 1 and windows[0].t_complete == ts[54]
    assert windower.n_pending == 0 and windower.push_data(data[55:], ts[55:]) == []
    assert windower.next_due is None


def test_late_marker_is_emitted_on_arrival():
    data, ts = index_stream(300)
    windower = EventWindower(-0.2, 0.3, SFREQ, baseline=None, clamp=None)
    assert windower.push_data(data, ts) == []
    windows = windower.push_markers([Marker(ts[100], "key:a")])
    assert len(windows) == 1 and windows[0].data[0, 0] == 90


def test_baseline_is_the_first_200_ms_and_clamp_follows():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((300, 4)).astype(np.float32) * 3 + 7
    ts = np.arange(300) / SFREQ
    plain = EventWindower(-0.2, 0.3, SFREQ, baseline=None, clamp=None)
    windower = EventWindower(-0.2, 0.3, SFREQ)  # defaults: (None, 0), clamp 5
    marker = [Marker(ts[150], "key:a")]
    raw = (plain.push_markers(marker) + plain.push_data(data, ts))[0].data.astype(np.float64)
    window = (windower.push_markers(marker) + windower.push_data(data, ts))[0]
    expected = np.clip(raw - raw[:, :10].mean(axis=1, keepdims=True), -5, 5)
    np.testing.assert_allclose(window.data, expected, atol=1e-5)
    assert np.abs(window.data).max() == pytest.approx(5.0)
    same = EventWindower(-0.2, 0.3, SFREQ, baseline=(-0.2, -0.0))
    np.testing.assert_array_equal(
        (same.push_markers(marker) + same.push_data(data, ts))[0].data, window.data
    )


def test_dropped_markers_are_counted_with_reasons():
    data, ts = index_stream(600)
    windower = EventWindower(-0.2, 0.3, SFREQ, history_s=2.0)
    windower.push_markers([Marker(ts[3], "key:a")])  # window would start at sample -7
    windower.push_data(data, ts)
    assert windower.push_markers([Marker(ts[100], "key:b")]) == []  # long overwritten
    windower.push_markers([Marker(ts[-1] + 5.0, "key:c")])  # data never comes
    assert windower.n_pending == 1 and windower.finish() == 1
    reasons = [reason for _, reason in windower.dropped]
    assert windower.n_dropped == 3
    assert "before the first sample" in reasons[0]
    assert "before the retained history (raise history_s)" in reasons[1]
    assert "data ended" in reasons[2]


def test_invalid_samples_and_gaps_make_windows_invalid():
    data, ts = index_stream(400)
    valid = np.ones(400, dtype=bool)
    valid[105] = False
    ts[300:] += 1.0  # a one-second gap
    windower = EventWindower(-0.2, 0.3, SFREQ)
    markers = [Marker(ts[i], "key:a") for i in (100, 200, 295)]
    markers.append(Marker(ts[299] + 0.5, "key:b"))  # inside the gap: no sample near it
    windows = windower.push_markers(markers) + windower.push_data(data, ts, valid)
    assert [w.valid for w in windows] == [False, True, False, False]
    assert windower.n_invalid == 3 and windower.n_emitted == 4


def test_marker_filter():
    data, ts = index_stream(300)
    markers = [
        Marker(ts[50], "key:a"),
        Marker(ts[60], "sentence_start:hello"),
        Marker(ts[70], "word:hello"),
    ]
    keys = EventWindower(-0.2, 0.3, SFREQ)
    assert [w.marker.value for w in keys.push_markers(markers) + keys.push_data(data, ts)] == [
        "key:a"
    ]
    words = EventWindower(-0.5, 2.5, SFREQ, marker_filter="word", clamp=20.0)
    found = words.push_markers(markers) + words.push_data(data, ts)
    assert [w.marker.value for w in found] == ["word:hello"] and found[0].data.shape == (3, 150)
    everything = EventWindower(-0.2, 0.3, SFREQ, marker_filter=None)
    assert len(everything.push_markers(markers) + everything.push_data(data, ts)) == 3


def test_sliding_windows_chunk_invariant_and_on_time():
    data, ts = index_stream(1000)
    one_shot = SlidingWindower(1.0, 0.2, SFREQ).push_data(data, ts)
    assert [w.data[0, 0] for w in one_shot[:3]] == [0, 10, 20]
    assert len(one_shot) == (1000 - 50) // 10 + 1
    assert all(w.marker is None and w.valid for w in one_shot)
    windower = SlidingWindower(1.0, 0.2, SFREQ)
    rng = np.random.default_rng(2)
    chunked, i = [], 0
    while i < 1000:
        n = int(rng.integers(0, 40))
        new = windower.push_data(data[i : i + n], ts[i : i + n])
        # Each window comes out with the chunk holding its last sample: not before, not later.
        assert all(ts[i] <= w.t_complete <= ts[min(i + n, 1000) - 1] for w in new)
        chunked += new
        i += n
    assert len(chunked) == len(one_shot)
    for a, b in zip(chunked, one_shot):
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
    based = SlidingWindower(1.0, 0.2, SFREQ, baseline=(0.0, 0.2)).push_data(data, ts)[0]
    np.testing.assert_allclose(based.data[0, :10].mean(), 0.0, atol=1e-6)


def test_bad_arguments_and_chunks():
    with pytest.raises(ValueError, match="Invalid window: tmin=0.3, tmax=-0.2"):
        EventWindower(0.3, -0.2, SFREQ)
    with pytest.raises(ValueError, match=r"'baseline'.*selects no samples .*\[-0.2, 0.3\)"):
        EventWindower(-0.2, 0.3, SFREQ, baseline=(0.5, 0.6))
    with pytest.raises(ValueError, match="'hop_s'|hop"):
        SlidingWindower(1.0, 0.001, SFREQ)
    data, ts = index_stream(100)
    windower = EventWindower(-0.2, 0.3, SFREQ)
    windower.push_data(data[:50], ts[:50])
    with pytest.raises(ValueError, match="holds 3 channels but got 2"):
        windower.push_data(data[50:, :2], ts[50:])
    with pytest.raises(ValueError, match="go backwards"):
        windower.push_data(data[50:], ts[50:] - 10)
    with pytest.raises(ValueError, match="not finite"):
        windower.push_markers([Marker(float("nan"), "key:a")])
    with pytest.raises(ValueError, match="empty list of windows"):
        stack_windows([])


def make_session(seconds=40.0, sfreq=1000.0, n_channels=6, seed=3):
    """Random-walk 'MEG' with key markers every ~250 ms and a NaN stretch."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    data = rng.standard_normal((n, n_channels)).cumsum(axis=0) * 1e-13
    data[int(20 * sfreq) : int(20.3 * sfreq), 2] = np.nan
    ts = 500.0 + np.arange(n) / sfreq
    times = 500.5 + np.cumsum(rng.uniform(0.15, 0.35, int(seconds * 4)))
    markers = [Marker(float(t), key_marker("abc "[i % 4])) for i, t in enumerate(times)]
    names = tuple(f"MEG{i}" for i in range(n_channels))
    spec = ChannelSpec(names, ("mag",) * n_channels, ("T",) * n_channels)
    return Recording(data, ts, sfreq, spec, markers=markers)


def test_online_with_late_markers_equals_offline():
    recording = make_session()
    config = fit_scaler(recording, PreprocessConfig.brain2qwerty(recording.sfreq))
    offline_windower = EventWindower(-0.2, 0.3, SFREQ)
    offline = epochs_from_recording(recording, config, offline_windower)
    assert len(offline) > 100 and offline_windower.n_invalid > 0
    assert any(w.valid for w in offline)

    # Live: random chunks; every marker arrives 0-1.5 s after its time.
    rng = np.random.default_rng(4)
    pre = Preprocessor(config, recording.channels.names)
    windower = EventWindower(-0.2, 0.3, SFREQ)
    arrival = np.array([m.timestamp for m in recording.markers]) + rng.uniform(0, 1.5, 160)
    online, i, sent = [], 0, np.zeros(len(arrival), dtype=bool)
    while i < recording.n_times:
        n = int(rng.integers(0, 120))
        chunk = pre.process(recording.data[i : i + n], recording.timestamps[i : i + n])
        i += n
        now = recording.timestamps[min(i, recording.n_times) - 1]
        due = ~sent & (arrival <= now)
        if rng.random() < 0.5:  # markers before or after the data of the same moment
            online += windower.push_markers([recording.markers[j] for j in np.flatnonzero(due)])
            online += windower.push_data(*chunk)
        else:
            online += windower.push_data(*chunk)
            online += windower.push_markers([recording.markers[j] for j in np.flatnonzero(due)])
        sent |= due
    online += windower.push_markers([recording.markers[j] for j in np.flatnonzero(~sent)])
    windower.finish()

    by_marker = sorted(online, key=lambda w: w.marker.timestamp)
    assert len(by_marker) == len(offline)
    assert windower.n_dropped == offline_windower.n_dropped
    for a, b in zip(by_marker, offline):
        assert a.marker == b.marker and a.valid == b.valid and a.t_complete == b.t_complete
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        np.testing.assert_allclose(a.data, b.data, rtol=0, atol=1e-5)
    data, valid = stack_windows(offline)
    assert data.shape == (len(offline), 6, 25) and valid.sum() == len(offline) - sum(~valid)


def test_pushing_more_than_the_history_at_once_loses_nothing():
    data, ts = index_stream(3000)
    markers = [Marker(ts[i], "key:a") for i in range(20, 2980, 13)]
    small = EventWindower(-0.2, 0.3, SFREQ, history_s=1.0, baseline=None, clamp=None)
    whole = small.push_markers(markers) + small.push_data(data, ts)
    assert len(whole) == len(markers) and small.n_dropped == 0
    assert [w.data[0, 10] for w in whole] == list(range(20, 2980, 13))


def test_epochs_from_recording_checks_the_rate():
    recording = make_session(seconds=4.0)
    config = PreprocessConfig.brain2qwerty(recording.sfreq)
    with pytest.raises(ValueError, match="cuts windows at 100.0 Hz .* outputs 50.0 Hz"):
        epochs_from_recording(recording, config, EventWindower(-0.2, 0.3, 100.0))
    sliding = epochs_from_recording(recording, config, SlidingWindower(1.0, 0.5, SFREQ))
    assert len(sliding) == 7  # 4 s of output: the minimum-phase anti-alias holds nothing back
    linear = dataclasses.replace(config, anti_alias="linear")  # holds back its 0.1 s delay
    assert len(epochs_from_recording(recording, linear, SlidingWindower(1.0, 0.5, SFREQ))) == 6
