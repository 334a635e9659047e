"""Interoperability with mne-lsl over real loopback LSL, both ways.

mne-lsl's ``StreamLSL`` reads what our :class:`Player` streams, and our :class:`StreamSource`
reads what mne-lsl's ``PlayerLSL`` streams: samples, channel names and types, and timestamps.
"""

from __future__ import annotations

import time

import numpy as np
from mne_lsl.stream import StreamLSL

from acquisition.channels import ChannelSpec
from acquisition.player import Player
from acquisition.recording import Recording
from acquisition.stream import StreamSource

SFREQ = 200.0
N_TIMES = 600


def _index_recording() -> Recording:
    """Channel 0 is the sample index, so what arrives is checked exactly."""
    data = np.zeros((N_TIMES, 3))
    data[:, 0] = np.arange(N_TIMES)
    data[:, 1] = np.sin(np.arange(N_TIMES) / 10) * 1e-5
    data[:, 2] = np.cos(np.arange(N_TIMES) / 10) * 1e-5
    channels = ChannelSpec(("index", "Cz", "Pz"), ("misc", "eeg", "eeg"), ("n/a", "V", "V"))
    return Recording(data, np.arange(N_TIMES) / SFREQ, SFREQ, channels, name="interop")


def test_mne_lsl_stream_reads_our_player(source_id):
    rec = _index_recording()
    with Player(rec, speed=1.0, source_id=source_id, wait_for_consumer=True) as player:
        stream = StreamLSL(bufsize=2 * N_TIMES / SFREQ, source_id=source_id)
        stream.connect(timeout=10)
        try:
            assert stream.ch_names == list(rec.channels.names)
            assert stream.get_channel_types() == list(rec.channels.types)
            assert stream.info["sfreq"] == SFREQ
            assert player.join(30.0)
            deadline = time.monotonic() + 10.0  # guards against a hang only
            while stream.n_new_samples < N_TIMES and time.monotonic() < deadline:
                time.sleep(0.05)
            data, stamps = stream.get_data(winsize=N_TIMES / SFREQ)
        finally:
            stream.disconnect()
    np.testing.assert_array_equal(data[0], np.arange(N_TIMES))
    np.testing.assert_allclose(data[1:].T, rec.data[:, 1:], rtol=1e-6)  # float32 on the wire
    expected = player.start_timestamp + np.arange(N_TIMES) / SFREQ
    np.testing.assert_allclose(stamps, expected, atol=1e-3)  # one host: clock offset ~ 0


# Plays a FIF whose misc channel 0 is the sample index through mne-lsl's PlayerLSL, looping.
_MNE_LSL_PLAYER = """
import time
import numpy as np
import mne
from mne_lsl.player import PlayerLSL

mne.set_log_level("ERROR")
n = {n_times}
data = np.vstack([np.arange(n), np.sin(np.arange(n) / 10) * 1e-5])
raw = mne.io.RawArray(data, mne.create_info(["index", "C3"], {sfreq}, ["misc", "eeg"]))
raw.save({fname!r}, overwrite=True)
player = PlayerLSL({fname!r}, chunk_size=10, name="mne-lsl-player", source_id={sid!r})
player.start()
print("playing", flush=True)
time.sleep(600)
"""


def test_our_stream_source_reads_mne_lsl_player(spawn_python, source_id, tmp_path):
    code = _MNE_LSL_PLAYER.format(
        n_times=N_TIMES, sfreq=SFREQ, fname=str(tmp_path / "index_raw.fif"), sid=source_id
    )
    proc = spawn_python(code)
    assert proc.stdout.readline().strip() == "playing", proc.stderr.read()
    with StreamSource(source_id=source_id, resolve_timeout=30.0) as source:
        assert source.channels.names == ("index", "C3")
        assert source.channels.types == ("misc", "eeg")
        assert source.sfreq == SFREQ
        deadline = time.monotonic() + 30.0  # guards against a hang only
        while source.buffer.n_written < 1.5 * N_TIMES and time.monotonic() < deadline:
            time.sleep(0.05)
        new = source.buffer.read_since(0)
    index = new.data[:, 0].astype(np.int64)
    assert index.size >= 1.5 * N_TIMES and new.n_lost == 0
    # consecutive samples of the file, which the player loops: N_TIMES - 1 is followed by 0
    np.testing.assert_array_equal(np.diff(index) % N_TIMES, 1)
    within_pass = np.diff(index) == 1  # mne-lsl restarts its timestamps on each loop
    np.testing.assert_allclose(np.diff(new.timestamps)[within_pass], 1 / SFREQ, atol=1e-4)
