"""Player pause/resume/seek through real LSL outlets and inlets on loopback."""

from __future__ import annotations

import time

import numpy as np
import pylsl
import pytest

from acquisition.channels import ChannelSpec
from acquisition.player import Player
from acquisition.recording import Marker, Recording

SFREQ = 1000.0


def _index_recording(n_times: int = 20_000) -> Recording:
    """Channel 0 is the sample index, so every sample that arrives says where it came from."""
    data = np.zeros((n_times, 2), dtype=np.float32)
    data[:, 0] = np.arange(n_times)
    data[:, 1] = np.sin(np.arange(n_times) / 10.0)
    markers = [Marker(s / SFREQ, f"key:{c}") for s, c in ((100, "a"), (6000, "b"), (9000, "c"))]
    return Recording(
        data=data,
        timestamps=np.arange(n_times) / SFREQ,
        sfreq=SFREQ,
        channels=ChannelSpec(("index", "Cz"), ("misc", "eeg"), ("n/a", "V")),
        markers=markers,
        name="index",
    )


def _inlet(source_id: str) -> pylsl.StreamInlet:
    found = pylsl.resolve_byprop("source_id", source_id, 1, 10.0)
    if not found:
        raise RuntimeError(f"no LSL stream with source_id {source_id!r}")
    inlet = pylsl.StreamInlet(found[0], max_buflen=360, recover=False)
    inlet.open_stream(10.0)
    return inlet


class _Reader:
    """Accumulates what an inlet receives."""

    def __init__(self, inlet: pylsl.StreamInlet) -> None:
        self.inlet = inlet
        self.index = np.empty(0)
        self.stamps = np.empty(0)

    def pull_until(self, done, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not done(self) and time.monotonic() < deadline:
            data, ts = self.inlet.pull_chunk(timeout=0.05, max_samples=8192, as_numpy=True)
            if len(ts):
                self.index = np.r_[self.index, np.asarray(data)[:, 0]]
                self.stamps = np.r_[self.stamps, ts]
        assert done(self), f"condition not reached; received {self.index.size} samples"


def test_pause_holds_and_resume_continues_without_losing_samples(source_id):
    """Nothing goes out while paused; after resume every sample follows, after a time gap."""
    with Player(
        _index_recording(), speed=2.0, source_id=source_id, wait_for_consumer=True
    ) as player:
        reader = _Reader(_inlet(source_id))
        reader.pull_until(lambda r: r.index.size >= 300)
        player.pause()
        assert player.paused
        time.sleep(0.1)  # a chunk being pushed when pause() was called may still go out
        held = player.n_samples_sent
        reader.pull_until(lambda r: r.index.size >= held, timeout=5.0)
        time.sleep(0.4)
        assert player.n_samples_sent == held
        reader.inlet.pull_chunk(timeout=0.1)
        player.resume()
        assert not player.paused
        reader.pull_until(lambda r: r.index.size >= held + 300)
        reader.inlet.close_stream()

    np.testing.assert_array_equal(reader.index, np.arange(reader.index.size))
    steps = np.diff(reader.stamps)
    pause_step = steps[held - 1]
    # The pause is time without data for consumers; elsewhere the timeline is regular.
    assert pause_step > 0.2
    np.testing.assert_allclose(np.delete(steps, held - 1), 1 / SFREQ, rtol=1e-6)


def test_seek_while_playing_jumps_in_data_not_in_time(source_id):
    """After seek(s) the samples come from s on; timestamps run on at the same spacing."""
    with Player(
        _index_recording(), speed=4.0, source_id=source_id, wait_for_consumer=True
    ) as player:
        reader = _Reader(_inlet(source_id))
        reader.pull_until(lambda r: r.index.size >= 500)
        player.seek(12_000)
        reader.pull_until(lambda r: r.index.size and r.index[-1] >= 12_500)
        reader.inlet.close_stream()

    jump = int(np.flatnonzero(np.diff(reader.index) != 1)[0]) + 1
    np.testing.assert_array_equal(reader.index[:jump], np.arange(jump))
    after = reader.index[jump:]
    np.testing.assert_array_equal(after, 12_000 + np.arange(after.size))
    np.testing.assert_allclose(np.diff(reader.stamps), 1 / SFREQ, rtol=1e-6)
    assert player.position > 12_000


def test_seek_before_start_and_markers_from_the_new_position(source_id):
    """A paused player seeked before start() begins there; only later markers go out."""
    player = Player(_index_recording(), speed="max", source_id=source_id)
    player.pause()
    player.seek(5_000)
    assert player.position == 5_000
    with player:
        markers = _inlet(f"{source_id}-markers")
        reader = _Reader(_inlet(source_id))
        player.resume()
        reader.pull_until(lambda r: r.index.size >= 15_000)
        values, stamps = [], []
        deadline = time.monotonic() + 5.0
        while len(values) < 2 and time.monotonic() < deadline:
            got, ts = markers.pull_chunk(timeout=0.1)
            values += [g[0] for g in got]
            stamps += list(ts)
        reader.inlet.close_stream()
        markers.close_stream()
        assert player.join(10.0)

    np.testing.assert_array_equal(reader.index, 5_000 + np.arange(15_000))
    assert values == ["key:b", "key:c"]
    # Each marker is stamped with the timestamp of its own sample.
    for value, stamp in zip(values, stamps):
        sample = {"key:b": 6000, "key:c": 9000}[value]
        assert stamp == reader.stamps[sample - 5_000]


def test_seek_rejects_bad_samples_and_controls_reject_a_finished_player(source_id):
    player = Player(_index_recording(1000), speed="max", source_id=source_id)
    with pytest.raises(ValueError, match=r"Invalid value for 'sample': 1000; .* 0\.\.999"):
        player.seek(1000)
    with pytest.raises(ValueError, match="Invalid value for 'sample': -1"):
        player.seek(-1)
    with pytest.raises(TypeError, match="Invalid type for 'sample'.*round"):
        player.seek(1.5)
    with pytest.warns(RuntimeWarning, match="not paused"):
        player.resume()
    player.pause()
    with pytest.warns(RuntimeWarning, match="already paused"):
        player.pause()
    player.stop()
    for action in (player.pause, player.resume, lambda: player.seek(0)):
        with pytest.raises(RuntimeError, match="has finished.*Create a new Player"):
            action()


def test_stop_while_paused_returns(source_id):
    """A paused worker notices stop() (no hang) and the outlets close."""
    player = Player(_index_recording(), speed=1.0, source_id=source_id).start()
    player.pause()
    player.stop()
    assert player.done.is_set()
    assert player.error is None
