"""MarkerSource over real loopback LSL: string marker outlets and mne-lsl PlayerLSL annotations."""

from __future__ import annotations

import time

import numpy as np
import pytest

from acquisition.markers import MarkerSource
from acquisition.recording import Marker, parse_marker

MARKERS = ["sentence_start:hello world", "key:h", "key:é", "key:space", "sentence_end:hello world"]

# Waits for a consumer, prints its clock, then pushes MARKERS stamped t0 + 0.05 * i (repeated
# with a round number in front of each value when LOOP, so a restarted process continues).
_MARKER_OUTLET = """
import time
import pylsl
from acquisition.outlets import MarkerOutlet

outlet = MarkerOutlet("bci-test-markers", {sid!r})
outlet.wait_for_consumers(60)
t0 = pylsl.local_clock()
print(repr(t0), flush=True)
for i, value in enumerate({markers!r}):
    outlet.push(value, t0 + 0.05 * i)
k = 0
while {loop!r}:
    k += 1
    outlet.push(f"tick:{{k}}")
    time.sleep(0.05)
time.sleep(600)
"""

# Plays a 2 s FIF with three annotations through mne-lsl's PlayerLSL, looping.
_PLAYER = """
import time
import numpy as np
import mne
from mne_lsl.player import PlayerLSL

mne.set_log_level("ERROR")
sfreq = 100.0
data = np.vstack([np.arange(200) / 1e6, np.zeros(200)])
raw = mne.io.RawArray(data, mne.create_info(["C3", "C4"], sfreq, "eeg"))
raw.set_annotations(mne.Annotations([0.3, 0.8, 1.3], [0.0, 0.2, 0.0], {descriptions!r}))
fname = {fname!r}
raw.save(fname, overwrite=True)
player = PlayerLSL(fname, chunk_size=5, name="bci-test-player", source_id={sid!r},
                   annotations=True, annotations_encoding={encoding!r})
player.start()
print("playing", flush=True)
time.sleep(600)
"""


def _collect(src: MarkerSource, n: int, timeout: float = 30.0) -> list[Marker]:
    """Pull until ``n`` markers arrived (the deadline only guards against a hang)."""
    got: list[Marker] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(got)} of {n} markers arrived: {got}")
        got += src.pull()
        time.sleep(0.02)
    return got


@pytest.mark.parametrize("background", [True, False])
def test_string_markers_arrive_with_their_timestamps(spawn_python, source_id, background):
    proc = spawn_python(_MARKER_OUTLET.format(sid=source_id, markers=MARKERS, loop=False))
    with MarkerSource(source_id=source_id, resolve_timeout=30.0, background=background) as src:
        markers = _collect(src, len(MARKERS))
        health = src.health()
        assert src.encoding == "string"
    t0 = float(proc.stdout.readline())
    assert [m.value for m in markers] == MARKERS
    for i, marker in enumerate(markers):
        assert marker.timestamp == pytest.approx(t0 + 0.05 * i, abs=1e-3)  # clock offset ~ 0
    assert parse_marker(markers[2].value) == ("key", "é")
    assert health.connected and health.n_markers == len(MARKERS) and health.n_overflow == 0


def test_marker_stream_lost_and_back_reconnects(spawn_python, source_id):
    first = spawn_python(_MARKER_OUTLET.format(sid=source_id, markers=["a"], loop=True))
    with MarkerSource(source_id=source_id, resolve_timeout=30.0) as src:
        assert _collect(src, 3)[0].value == "a"
        first.kill()
        first.wait()
        deadline = time.monotonic() + 30
        while src.health().connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert src.health().state == "lost"
        src.pull()
        spawn_python(_MARKER_OUTLET.format(sid=source_id, markers=["b"], loop=True))
        after = _collect(src, 3)
        health = src.health()
    assert after[0].value == "b" and after[1].value == "tick:1"
    assert health.reconnections == 1 and health.connected


@pytest.mark.slow  # the player process imports MNE
@pytest.mark.parametrize("encoding", ["string", "one-hot"])
def test_player_lsl_annotations(spawn_python, source_id, tmp_path, encoding):
    descriptions = ["key:a", "sentence_start:hi there", "key:b"]
    code = _PLAYER.format(
        descriptions=descriptions,
        fname=str(tmp_path / "annotated_raw.fif"),
        sid=source_id,
        encoding=encoding,
    )
    proc = spawn_python(code)
    assert proc.stdout.readline().strip() == "playing", proc.stderr.read()
    # data and annotation streams share the source_id: the irregular one is chosen
    with MarkerSource(source_id=source_id, resolve_timeout=30.0) as src:
        assert src.info.type() == "annotations"
        assert src.encoding == encoding
        markers = _collect(src, 4)
    values = [m.value for m in markers]
    start = descriptions.index(values[0])
    assert values == [descriptions[(start + i) % 3] for i in range(len(values))]
    stamps = [m.timestamp for m in markers]
    assert all(np.diff(stamps) > 0)
    if encoding == "one-hot":
        wrong = MarkerSource(source_id=source_id, annotations_encoding="string")
        with pytest.raises(ValueError, match="'string' needs a string stream"):
            wrong.connect()


def test_bad_arguments_and_state(source_id):
    with pytest.raises(ValueError, match="'annotations_encoding'.*'one-hot'"):
        MarkerSource(source_id=source_id, annotations_encoding="onehot")
    with pytest.raises(RuntimeError, match=r"connect\(\) the marker source"):
        MarkerSource(source_id=source_id).pull()
