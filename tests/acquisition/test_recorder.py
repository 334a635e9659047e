"""The session recorder against real LSL outlets in other processes: data, markers, text.

A SIGKILL, a write error, an unwritable path and a stream that vanishes and returns.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pylsl
import pytest
import pyxdf

from acquisition.recorder import Recorder
from acquisition.xdf import read_xdf

#: An outlet process: channel 0 is the sample index (from ``start``), paced at ``rate``; it
#: waits for the recorder to connect, pushes ``n_total`` samples (None: forever), says "done".
INDEX_OUTLET = """
import time
import numpy as np, pylsl
from acquisition.channels import ChannelSpec, make_stream_info
source_id, rate, n_total, start, n_ch = {source_id!r}, {rate}, {n_total}, {start}, {n_ch}
info = make_stream_info({name!r}, "EEG", ChannelSpec.generic(n_ch, "eeg", "V"), rate, source_id)
outlet = pylsl.StreamOutlet(info)
print("ready", flush=True)
if not outlet.wait_for_consumers(60):
    raise SystemExit("no consumer")
sent, t0 = 0, time.perf_counter()
while n_total is None or sent < n_total:
    due = int((time.perf_counter() - t0) * rate) + 1
    due = due if n_total is None else min(due, n_total)
    if due > sent:
        chunk = np.zeros((due - sent, n_ch), np.float32)
        chunk[:, 0] = np.arange(start + sent, start + due)
        outlet.push_chunk(chunk)
        sent = due
    time.sleep(0.005)
print("done", flush=True)
time.sleep({linger})
"""


def _index_outlet(
    spawn_python,
    source_id,
    *,
    rate=200.0,
    n_total=None,
    start=0,
    n_ch=4,
    linger=600,
    name="rec-index",
):
    proc = spawn_python(
        INDEX_OUTLET.format(
            source_id=source_id,
            rate=rate,
            n_total=n_total,
            start=start,
            n_ch=n_ch,
            linger=linger,
            name=name,
        )
    )
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def _wait_for_samples(recorder: Recorder, name: str, count: int, timeout: float = 30.0) -> None:
    """Poll the recorder until ``count`` samples of ``name`` are on disk (or give up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if recorder.stats().get(name, {}).get("sample_count", 0) >= count:
            return
        time.sleep(0.05)


SESSION_OUTLETS = """
import time
import numpy as np, pylsl
from acquisition.channels import ChannelSpec, make_stream_info
sid = {source_id!r}
data = pylsl.StreamOutlet(
    make_stream_info("amp", "EEG", ChannelSpec.generic(3, "eeg", "V"), 200.0, sid + "-data")
)
keys = pylsl.StreamOutlet(pylsl.StreamInfo("keys", "Markers", 1, 0, "string", sid + "-keys"))
text = pylsl.StreamOutlet(pylsl.StreamInfo("decoded", "Text", 1, 0, "string", sid + "-text"))
print("ready", flush=True)
for outlet in (data, keys, text):
    outlet.wait_for_consumers(60)
for k in range(8):  # 8 x 50 samples, a key after each chunk, decoded text twice
    chunk = np.zeros((50, 3), np.float32)
    chunk[:, 0] = np.arange(50 * k, 50 * k + 50)
    data.push_chunk(chunk)
    keys.push_sample(["key:" + "hello wo"[k]])
    if k in (4, 7):
        text.push_sample(["text:" + "hello wo"[: k + 1]])
    time.sleep(0.25)
print("done", flush=True)
time.sleep(600)
"""


def test_records_data_markers_and_text(tmp_path, spawn_python, source_id):
    proc = spawn_python(SESSION_OUTLETS.format(source_id=source_id))
    assert proc.stdout.readline().strip() == "ready"
    path = tmp_path / "session.xdf"
    (text_info,) = pylsl.resolve_byprop("source_id", f"{source_id}-text", 1, 10.0)
    streams = [f"{source_id}-data", f"{source_id}-keys", text_info]  # ids or resolved infos
    with Recorder(path, streams, flush_interval=0.2) as recorder:
        assert recorder.stream_names == ["amp", "keys", "decoded"]
        assert proc.stdout.readline().strip() == "done"
        _wait_for_samples(recorder, "amp", 400)
        _wait_for_samples(recorder, "decoded", 2)
    recorder.stop()  # a second stop is harmless
    with pytest.raises(RuntimeError, match="records once"):
        recorder.start()

    rec = read_xdf(path)
    np.testing.assert_array_equal(rec.data[:, 0], np.arange(400))
    keys = [m.value for m in rec.markers_of("key")]
    assert keys == [f"key:{c}" for c in "hello wo"]
    assert [m.value for m in rec.markers_of("text")] == ["text:hello", "text:hello wo"]
    # each key came right after its 50-sample chunk: it sits near sample 50k + 49
    key_samples = np.searchsorted(rec.timestamps, [m.timestamp for m in rec.markers_of("key")])
    np.testing.assert_allclose(key_samples, np.arange(8) * 50 + 49, atol=10)
    streams = {s["info"]["name"][0]: s for s in pyxdf.load_xdf(path)[0]}
    for stream in streams.values():
        assert stream["clock_times"], "each stream gets ClockOffset chunks"
        footer = stream["footer"]["info"]
        assert int(footer["sample_count"][0]) == len(stream["time_stamps"])
    assert streams["amp"]["info"]["source_id"] == [f"{source_id}-data"]


@pytest.mark.slow
def test_sigkill_loses_at_most_the_last_second(tmp_path, spawn_python, source_id):
    outlet = _index_outlet(spawn_python, source_id, rate=500.0, n_ch=8)
    path = tmp_path / "killed.xdf"
    recorder = spawn_python(
        f"""
        import time
        from acquisition.recorder import Recorder
        Recorder({str(path)!r}, [{source_id!r}], flush_interval=0.5).start()
        print("recording", flush=True)
        time.sleep(600)
        """
    )
    assert recorder.stdout.readline().strip() == "recording", recorder.stderr.read()
    time.sleep(3.0)
    kill_time = pylsl.local_clock()
    os.kill(recorder.pid, signal.SIGKILL)
    recorder.wait(timeout=10)
    outlet.kill()
    assert recorder.returncode == -signal.SIGKILL

    streams, _ = pyxdf.load_xdf(path)  # pyxdf itself loads the file as the kill left it
    index = streams[0]["time_series"][:, 0]
    np.testing.assert_array_equal(index, np.arange(index.size))  # every sample from 0, no gap
    lost = kill_time - streams[0]["time_stamps"][-1]
    print(f"recorded {index.size} samples; the last one {lost:.3f} s before the kill")
    assert lost < 1.0
    np.testing.assert_array_equal(read_xdf(path).data[:, 0], index)


@pytest.mark.slow
def test_write_error_mid_session_keeps_what_was_recorded(tmp_path, spawn_python, source_id):
    """A file-size limit stands in for a full disk: it hits while recording."""
    _index_outlet(spawn_python, source_id, rate=500.0, n_ch=8)
    path, limit = tmp_path / "full.xdf", 40_000
    recorder = spawn_python(
        f"""
        import resource, time
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
        from acquisition.recorder import Recorder
        rec = Recorder({str(path)!r}, [{source_id!r}], flush_interval=0.2).start()
        deadline = time.monotonic() + 60
        while rec.error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        print("running after the error:", rec.running, flush=True)
        try:
            rec.stop()
        except OSError as err:
            print("STOPPED:", err, flush=True)
        """
    )
    out, err = recorder.communicate(timeout=90)
    assert recorder.returncode == 0, err
    assert "running after the error: False" in out
    assert "STOPPED: [Errno 27] Recording stopped early: Writing the XDF file" in out
    assert "File too large" in out and "cut back to its last complete chunk" in out
    assert f"Recording to '{path}' stopped" in err  # logged when it happened
    assert path.stat().st_size <= limit
    rec = read_xdf(path)
    assert "truncated" not in rec.meta
    np.testing.assert_array_equal(rec.data[:, 0], np.arange(rec.n_times))
    assert rec.n_times > 500


def test_unwritable_path_fails_before_recording(tmp_path, source_id):
    with pytest.raises(ValueError, match=r"'path': the folder '.*missing' does not exist"):
        Recorder(tmp_path / "missing" / "rec.xdf", [source_id])
    with pytest.raises(ValueError, match=r"'path': '.*rec\.fif' must end in \.xdf"):
        Recorder(tmp_path / "rec.fif", [source_id])
    (tmp_path / "taken.xdf").write_bytes(b"")
    with pytest.raises(
        FileExistsError, match=r"taken\.xdf': the file already exists.*overwrite=True"
    ):
        Recorder(tmp_path / "taken.xdf", [source_id])
    (tmp_path / "folder.xdf").mkdir()
    # the file cannot be created: the error comes before any stream is looked up
    recorder = Recorder(tmp_path / "folder.xdf", [source_id], overwrite=True, resolve_timeout=30)
    with pytest.raises(OSError, match=r"Cannot create the XDF file '.*folder\.xdf': Is a dir"):
        recorder.start()
    (tmp_path / "full.xdf").symlink_to("/dev/full")  # a full disk
    recorder = Recorder(tmp_path / "full.xdf", [source_id], overwrite=True, resolve_timeout=30)
    with pytest.raises(OSError, match=r"Writing the XDF file '.*full\.xdf' failed \(No space"):
        recorder.start()


def test_bad_arguments(tmp_path, source_id):
    path = tmp_path / "rec.xdf"
    with pytest.raises(ValueError, match=r"'flush_interval': 2.0; it must be in \(0, 1\]"):
        Recorder(path, [source_id], flush_interval=2.0)
    with pytest.raises(ValueError, match=r"'streams': \[\]; give a non-empty list"):
        Recorder(path, [])
    with pytest.raises(ValueError, match=r"'streams': 'amp'"):
        Recorder(path, "amp")
    with pytest.raises(ValueError, match=r"in 'streams': 3\.5"):
        Recorder(path, [3.5])


def test_unknown_stream_is_a_clear_error_and_leaves_no_file(tmp_path, source_id):
    path = tmp_path / "rec.xdf"
    recorder = Recorder(path, [source_id], resolve_timeout=0.5)
    with pytest.raises(ValueError, match=rf"no LSL stream with source_id or name '{source_id}'"):
        recorder.start()
    assert not path.exists()
    recorder.stop()  # never started: harmless


def test_same_stream_twice_is_an_error(tmp_path, spawn_python, source_id):
    proc = _index_outlet(spawn_python, source_id, n_total=10, linger=30)
    with pytest.raises(ValueError, match=r"listed more than once"):
        Recorder(tmp_path / "twice.xdf", [source_id, source_id]).start()
    proc.kill()


@pytest.mark.slow
def test_stream_that_vanishes_is_recorded_again_when_it_returns(tmp_path, spawn_python, source_id):
    first = _index_outlet(spawn_python, source_id, n_total=300, linger=0.5)
    with Recorder(tmp_path / "gap.xdf", [source_id], flush_interval=0.2) as recorder:
        assert first.stdout.readline().strip() == "done"
        first.wait(timeout=30)  # the outlet is gone
        _wait_for_samples(recorder, "rec-index", 300)
        second = _index_outlet(spawn_python, source_id, n_total=300, start=300, linger=30)
        assert second.stdout.readline().strip() == "done"  # it saw the recorder reconnect
        _wait_for_samples(recorder, "rec-index", 600)
    rec = read_xdf(recorder.path, dejitter=False)
    np.testing.assert_array_equal(rec.data[:, 0], np.arange(600))
    gap = rec.timestamps[300] - rec.timestamps[299]
    assert gap > 0.5  # the pause between the two outlets is in the timestamps, and marked
    (marker,) = rec.markers_of("gap")
    assert marker.value == f"gap:{gap - 1 / 200:.3f}"
    assert marker.timestamp == pytest.approx(rec.timestamps[299] + 1 / 200)


#: An outlet process whose samples carry timestamps of its own (1000 s + i / rate, far from
#: any local clock), without a source_id unless given; it pushes ``n_total`` samples once
#: consumed, says "done", then lingers.
STAMPED_OUTLET = """
import time
import numpy as np, pylsl
from acquisition.channels import ChannelSpec, make_stream_info
name, source_id, rate, n_total, start = {name!r}, {source_id!r}, 100.0, {n_total}, {start}
info = make_stream_info(name, "EEG", ChannelSpec.generic(2, "eeg", "V"), rate, source_id)
outlet = pylsl.StreamOutlet(info)
print("ready", flush=True)
if not outlet.wait_for_consumers(60):
    raise SystemExit("no consumer")
for first in range(start, start + n_total, 20):
    chunk = np.zeros((20, 2), np.float32)
    chunk[:, 0] = np.arange(first, first + 20)
    outlet.push_chunk(chunk, list(1000.0 + np.arange(first, first + 20) / rate))
    time.sleep(0.02)
print("done", flush=True)
time.sleep({linger})
"""


def _stamped_outlet(spawn_python, name, *, source_id="", n_total=200, start=0, linger=600.0):
    code = STAMPED_OUTLET.format(
        name=name, source_id=source_id, n_total=n_total, start=start, linger=linger
    )
    proc = spawn_python(code)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def test_timestamps_are_recorded_as_lsl_delivers_them(tmp_path, spawn_python, source_id):
    """No clock correction and no dejitter: the file holds the sender's own timestamps.

    And the clock offsets beside them for readers to apply.
    """
    proc = _stamped_outlet(spawn_python, "rec-stamped", source_id=source_id)
    with Recorder(tmp_path / "raw.xdf", [source_id], flush_interval=0.2) as recorder:
        assert proc.stdout.readline().strip() == "done"
        _wait_for_samples(recorder, "rec-stamped", 200)
    (stream,) = pyxdf.load_xdf(
        tmp_path / "raw.xdf", synchronize_clocks=False, dejitter_timestamps=False
    )[0]
    np.testing.assert_array_equal(stream["time_series"][:, 0], np.arange(200))
    np.testing.assert_array_equal(stream["time_stamps"], 1000.0 + np.arange(200) / 100.0)
    assert stream["clock_times"] and abs(stream["clock_values"][0]) < 0.1  # one host


@pytest.mark.slow
def test_stream_without_source_id_is_recorded_again_when_it_returns(
    tmp_path, spawn_python, source_id
):
    """The stream is found again by its name and type, as InletWorker reconnects every stream."""
    name = f"rec-{source_id}"
    first = _stamped_outlet(spawn_python, name, linger=0.5)
    with Recorder(tmp_path / "back.xdf", [name], flush_interval=0.2) as recorder:
        assert first.stdout.readline().strip() == "done"
        first.wait(timeout=30)  # the outlet is gone
        _wait_for_samples(recorder, name, 200)
        second = _stamped_outlet(spawn_python, name, start=200)
        assert second.stdout.readline().strip() == "done"  # it saw the recorder reconnect
        _wait_for_samples(recorder, name, 400)
    rec = read_xdf(recorder.path, dejitter=False)
    np.testing.assert_array_equal(rec.data[:, 0], np.arange(400))


def test_stream_lost_while_connecting_is_waited_for_and_the_others_recorded(
    tmp_path, spawn_python, source_id
):
    healthy = _index_outlet(spawn_python, source_id + "-a", name="rec-a")
    lost = _index_outlet(spawn_python, source_id + "-b", name="rec-b")
    infos = [pylsl.resolve_byprop("source_id", source_id + s, 1, 10)[0] for s in ("-a", "-b")]
    lost.kill()
    lost.wait(timeout=10)  # found, then gone before the recorder connects
    with pytest.raises(RuntimeError, match=r"Found name='rec-b'.*could not open it"):
        Recorder(tmp_path / "strict.xdf", infos).start()
    assert not (tmp_path / "strict.xdf").exists()
    with Recorder(tmp_path / "kept.xdf", infos, missing_ok=True, flush_interval=0.2) as recorder:
        assert recorder.waiting_for == ["rec-b"]
        _wait_for_samples(recorder, "rec-a", 200)
        back = _index_outlet(spawn_python, source_id + "-b", name="rec-b", n_total=100, linger=30)
        assert back.stdout.readline().strip() == "done"  # the recorder picked it up
        _wait_for_samples(recorder, "rec-b", 100)
        assert recorder.waiting_for == []
    healthy.kill()
    streams, _ = pyxdf.load_xdf(str(recorder.path), dejitter_timestamps=False)
    by_name = {s["info"]["name"][0]: s for s in streams}
    assert by_name["rec-a"]["time_series"].shape[0] >= 200
    np.testing.assert_array_equal(by_name["rec-b"]["time_series"][:, 0], np.arange(100))
