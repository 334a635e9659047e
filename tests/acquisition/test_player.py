"""Replay through real LSL outlets to real inlets on loopback: every vendor file, loop, pacing."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pylsl
import pytest

from acquisition.channels import ChannelSpec, channels_from_info
from acquisition.io import read_recording, write_recording
from acquisition.player import Player
from acquisition.recording import Marker, Recording

REAL_DIR = Path(__file__).parents[1] / "data" / "real"
REAL_FILES = [
    "test.sqd",
    "test_ctf_comp_raw.fif",
    "exported4D_linux_raw.fif",
    "test.vhdr",
    "test.bdf",
    "test.edf",
]


def _inlet(source_id: str, timeout: float = 10.0) -> pylsl.StreamInlet:
    """Resolve a stream by its unique source_id and connect an inlet to it now."""
    found = pylsl.resolve_byprop("source_id", source_id, 1, timeout)
    if not found:
        raise RuntimeError(f"no LSL stream with source_id {source_id!r} within {timeout} s")
    inlet = pylsl.StreamInlet(found[0], max_buflen=360, recover=False)
    inlet.open_stream(timeout)
    return inlet


def _close(*inlets: pylsl.StreamInlet) -> None:
    """Disconnect inlets before their outlets go, so liblsl does not log a broken stream."""
    for inlet in inlets:
        inlet.close_stream()


def _pull_data(inlet: pylsl.StreamInlet, n_samples: int, timeout: float = 20.0):
    """Pull numeric samples until ``n_samples`` arrived (or fail after ``timeout``)."""
    chunks, stamps, count = [], [], 0
    deadline = time.monotonic() + timeout
    while count < n_samples and time.monotonic() < deadline:
        data, ts = inlet.pull_chunk(timeout=0.2, max_samples=4096, as_numpy=True)
        if len(ts):
            chunks.append(np.array(data))
            stamps.append(np.array(ts))
            count += len(ts)
    assert count >= n_samples, f"only {count} of {n_samples} samples arrived"
    return np.concatenate(chunks), np.concatenate(stamps)


def _pull_markers(inlet: pylsl.StreamInlet, n_markers: int, timeout: float = 5.0):
    values, stamps = [], []
    deadline = time.monotonic() + timeout
    while len(values) < n_markers and time.monotonic() < deadline:
        samples, ts = inlet.pull_chunk(timeout=0.1)
        values += [s[0] for s in samples]
        stamps += list(ts)
    # Nothing more than expected arrives either.
    samples, ts = inlet.pull_chunk(timeout=0.2)
    values += [s[0] for s in samples]
    stamps += list(ts)
    return values, np.array(stamps)


def _nearest_samples(rec: Recording) -> tuple[list[str], np.ndarray]:
    """Marker values in play order and the index of the sample each belongs to."""
    index = [int(np.abs(rec.timestamps - m.timestamp).argmin()) for m in rec.markers]
    order = np.argsort(index, kind="stable")
    return [rec.markers[i].value for i in order], np.array(index, dtype=int)[order]


def _index_recording(n_times: int = 50, sfreq: float = 100.0) -> Recording:
    """Channel 0 is the sample index, so what arrives can be checked exactly."""
    data = np.zeros((n_times, 2))
    data[:, 0] = np.arange(n_times)
    data[:, 1] = np.sin(np.arange(n_times))
    return Recording(
        data=data,
        timestamps=np.arange(n_times) / sfreq,
        sfreq=sfreq,
        channels=ChannelSpec(("index", "Cz"), ("misc", "eeg"), ("n/a", "V")),
        markers=[Marker(0.0, "sentence_start:hi"), Marker(0.1, "key:h"), Marker(0.25, "key:i")],
        name="index",
    )


@pytest.mark.parametrize("fname", REAL_FILES)
def test_replay_every_real_file_arrives_intact(fname, source_id):
    """Names, rate, every sample and every marker (at its sample's timestamp) arrive."""
    rec = read_recording(REAL_DIR / fname)
    values, samples = _nearest_samples(rec)
    with Player(REAL_DIR / fname, speed="max", source_id=source_id) as player:
        marker_inlet = _inlet(f"{source_id}-markers")
        inlet = _inlet(source_id)
        info = inlet.info(5.0)
        data, stamps = _pull_data(inlet, rec.n_times)
        got_values, got_stamps = _pull_markers(marker_inlet, len(values))
        _close(inlet, marker_inlet)
        assert player.join(10.0)
        assert player.n_samples_sent == rec.n_times
        assert player.error is None

    channels = channels_from_info(info)
    assert channels.names == rec.channels.names
    assert channels.types == rec.channels.types
    assert channels.units == rec.channels.units
    assert info.nominal_srate() == rec.sfreq
    assert info.channel_count() == rec.channels.n_channels
    assert data.shape == rec.data.shape
    np.testing.assert_array_equal(data, rec.data.astype(np.float32))
    np.testing.assert_allclose(np.diff(stamps), 1.0 / rec.sfreq, rtol=1e-6)
    assert got_values == values
    np.testing.assert_array_equal(got_stamps, stamps[samples])


def test_replay_carries_sensor_positions(source_id):
    """MEG sensor positions travel in the stream header (mm in LSL, metres here)."""
    rec = read_recording(REAL_DIR / "test.sqd")
    with Player(rec, speed="max", source_id=source_id):
        inlet = _inlet(source_id)
        channels = channels_from_info(inlet.info(5.0))
        _close(inlet)
    mags = [i for i, t in enumerate(rec.channels.types) if t == "mag"]
    np.testing.assert_allclose(channels.positions[mags], rec.channels.positions[mags], atol=1e-6)
    assert not np.isfinite(channels.positions[rec.channels.types.index("stim")]).any()


def test_loop_continues_timestamps(source_id):
    """Looping restarts the data, keeps the timestamps running and repeats the markers."""
    rec = _index_recording()
    speed = 20.0
    with Player(
        rec, speed=speed, loop=True, source_id=source_id, chunk_size=7, wait_for_consumer=True
    ) as player:
        marker_inlet = _inlet(f"{source_id}-markers")
        inlet = _inlet(source_id)
        data, stamps = _pull_data(inlet, 3 * rec.n_times)
        values, marker_stamps = _pull_markers(marker_inlet, 9, timeout=5.0)
        _close(inlet, marker_inlet)
    assert player.done.is_set()
    data, stamps = data[: 3 * rec.n_times], stamps[: 3 * rec.n_times]
    np.testing.assert_array_equal(data[:, 0], np.tile(np.arange(rec.n_times), 3))
    np.testing.assert_allclose(np.diff(stamps), 1.0 / rec.sfreq, rtol=1e-6)
    assert values[:9] == ["sentence_start:hi", "key:h", "key:i"] * 3
    expected = stamps[[k * rec.n_times + s for k in range(3) for s in (0, 10, 25)]]
    np.testing.assert_array_equal(marker_stamps[:9], expected)


def test_real_time_pacing_follows_the_clock(source_id):
    """At 1x, samples never go out before their timestamp and keep up with the clock."""
    rec = _index_recording(n_times=2500, sfreq=250.0)
    with Player(rec, speed=1.0, source_id=source_id, wait_for_consumer=True) as player:
        inlet = _inlet(source_id)
        received, last_stamp, pulls = 0, None, 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            data, ts = inlet.pull_chunk(timeout=0.05, max_samples=4096, as_numpy=True)
            now = pylsl.local_clock()
            if len(ts):
                # Causality: a sample is pushed only once the clock reached its timestamp.
                assert ts[-1] <= now
                np.testing.assert_array_equal(data[:, 0], np.arange(received, received + len(ts)))
                received += len(ts)
                last_stamp = ts[-1]
                pulls += 1
        elapsed = pylsl.local_clock() - player.start_timestamp
        _close(inlet)
    expected = elapsed * rec.sfreq
    assert received <= expected + 1  # never ahead of real time
    assert received >= 0.25 * expected  # generous: the machine is shared
    assert last_stamp == pytest.approx(player.start_timestamp + (received - 1) / rec.sfreq)
    assert pulls > 5  # delivered in a stream of chunks, not all at once
    assert received < rec.n_times


def test_speed_n_keeps_the_recording_timeline_and_paces_faster(source_id):
    """At 4x the samples keep the recording's spacing (same windows as 1x), sent 4x faster."""
    rec = _index_recording(n_times=400)
    with Player(rec, speed=4, source_id=source_id, chunk_size=5, wait_for_consumer=True) as player:
        inlet = _inlet(source_id)
        data, stamps = _pull_data(inlet, rec.n_times)
        _close(inlet)
        assert player.join(10.0)
        wall = pylsl.local_clock() - player.start_timestamp
    np.testing.assert_array_equal(data[:, 0], np.arange(rec.n_times))
    np.testing.assert_allclose(np.diff(stamps), 1.0 / rec.sfreq, rtol=1e-6)
    # paced, not dumped: the 4x replay took at least a quarter of the recording's duration
    assert wall >= 0.9 * (rec.n_times - 1) / (rec.sfreq * 4)


def test_metadata_defaults_and_names(source_id):
    player = Player(REAL_DIR / "test.vhdr", name="bv-replay", source_id=source_id)
    assert player.info.name() == "bv-replay"
    assert player.info.type() == "EEG"
    assert player.marker_info.name() == "bv-replay-markers"
    assert player.marker_info.source_id() == f"{source_id}-markers"
    assert player.chunk_size == 20  # 20 ms at 1 kHz
    # at max speed nothing is paced: 100 ms chunks, fewer pushes for the same data
    assert Player(REAL_DIR / "test.vhdr", speed="max", source_id=source_id).chunk_size == 100
    assert Player(REAL_DIR / "test.sqd").info.type() == "MEG"
    assert not player.done.is_set()
    player.stop()  # before start: harmless
    assert player.done.is_set()


def test_start_stop_twice(source_id):
    player = Player(_index_recording(), speed=1.0, loop=True, source_id=source_id)
    assert player.state == "new"
    player.start()
    assert player.state == "running" and player.running
    with pytest.warns(RuntimeWarning, match="already running; start\\(\\) did nothing"):
        player.start()
    player.stop()
    player.stop()
    assert player.done.is_set() and player.state == "stopped"
    assert player.error is None
    with pytest.raises(RuntimeError, match="has stopped; a Player runs once. Create a new Player"):
        player.start()


@pytest.mark.parametrize("speed", [0, -1.0, float("nan"), float("inf"), "fast", True, None])
def test_bad_speed_is_rejected(speed):
    with pytest.raises(ValueError, match=r"Invalid value for 'speed'.*'max'"):
        Player(_index_recording(), speed=speed)


def test_speed_accepts_numeric_strings_and_max():
    assert Player(_index_recording(), speed="2.5").speed == 2.5
    assert Player(_index_recording(), speed=" MAX ").speed == "max"


def test_bad_chunk_size_is_rejected():
    with pytest.raises(ValueError, match="'chunk_size': 0"):
        Player(_index_recording(), chunk_size=0)


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.fif"
    with pytest.raises(FileNotFoundError, match="nowhere.fif' does not exist"):
        Player(missing)


@pytest.mark.parametrize("raise_errors", ["1", "0"])
def test_file_cut_while_playing_ends_with_error_naming_it(
    tmp_path, source_id, monkeypatch, raise_errors
):
    """A failing worker keeps the error (file named, what went wrong) and ends the replay.

    With BCI_APP_RAISE_STREAM_ERRORS=1 (tests) the next join()/stop() re-raises it, once.
    """
    monkeypatch.setenv("BCI_APP_RAISE_STREAM_ERRORS", raise_errors)
    copy = tmp_path / "cut.bdf"
    shutil.copy(REAL_DIR / "test.bdf", copy)
    player = Player(copy, speed=50.0, source_id=source_id)
    os.truncate(copy, copy.stat().st_size // 2)
    player.start()
    if raise_errors == "1":
        with pytest.raises(ValueError, match="cut.bdf.*corrupt, truncated"):
            player.join(20.0)
    else:
        assert player.join(20.0)
    player.stop()
    assert isinstance(player.error, ValueError)
    assert "cut.bdf" in str(player.error)
    assert player.n_samples_sent < player.reader.n_times


def test_replay_xdf_recording(tmp_path, source_id):
    """An XDF session (the recorder's format) replays with its markers on their samples."""
    rec = _index_recording(n_times=400)
    rec.timestamps = rec.timestamps + 1234.5  # an LSL clock, as recorded
    rec.markers = [Marker(m.timestamp + 1234.5, m.value) for m in rec.markers]
    path = write_recording(rec, tmp_path / "session.xdf")
    with Player(path, speed="max", source_id=source_id, chunk_size=32) as player:
        marker_inlet = _inlet(f"{source_id}-markers")
        inlet = _inlet(source_id)
        data, stamps = _pull_data(inlet, rec.n_times)
        values, marker_stamps = _pull_markers(marker_inlet, 3)
        _close(inlet, marker_inlet)
        assert player.join(10.0)
    np.testing.assert_array_equal(data, rec.data.astype(np.float32))
    assert values == ["sentence_start:hi", "key:h", "key:i"]
    np.testing.assert_array_equal(marker_stamps, stamps[[0, 10, 25]])
