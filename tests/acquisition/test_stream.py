"""StreamSource over real loopback LSL, with the outlets in separate processes."""

from __future__ import annotations

import logging
import socket
import time

import numpy as np
import pylsl
import pytest

from acquisition import _inlet_worker as inlet_worker
from acquisition._inlet_worker import SAME_HOST_TOLERANCE_S
from acquisition.channels import ChannelSpec
from acquisition.outlets import DataOutlet, MarkerOutlet
from acquisition.stream import StreamNotFoundError, StreamSource

SFREQ = 500.0
N_CH = 6

# A live outlet paced in real time. Sample i is stamped T_REF + i / SFREQ exactly, so two
# processes started with the same T_REF continue one timeline. Channel 0 holds i, channel k
# holds i * k; with NAN_EVERY, channel 1 of every NAN_EVERY-th sample is NaN (Inf if odd i).
_LIVE = """
import time
import numpy as np
import pylsl
from acquisition.channels import ChannelSpec
from acquisition.outlets import DataOutlet

SID, T_REF, SFREQ, N_CH, NAN_EVERY = {sid!r}, {t_ref!r}, {sfreq!r}, {n_ch!r}, {nan_every!r}
names = [f"EEG {{k:03d}}" for k in range(N_CH)]
spec = ChannelSpec(names, ["eeg"] * N_CH, ["V"] * N_CH)
outlet = DataOutlet("bci-test-live", "EEG", spec, SFREQ, SID)
i = int((pylsl.local_clock() - T_REF) * SFREQ)
while True:
    n = int((pylsl.local_clock() - T_REF) * SFREQ) - i
    if n > 0:
        idx = np.arange(i, i + n)
        data = (idx[:, None] * np.arange(N_CH)[None, :]).astype(np.float32)
        data[:, 0] = idx
        if NAN_EVERY:
            bad = idx % NAN_EVERY == 0
            data[bad, 1] = np.where(idx[bad] % 2, np.inf, np.nan)
        outlet.push_chunk(data, T_REF + idx / SFREQ)
        i += n
    time.sleep(0.004)
"""

# Waits for a consumer, then pushes TIMES (a list of per-sample stamps) in chunks of 25,
# channel 0 = sample index, and idles.
_SCRIPTED = """
import time
import numpy as np
import pylsl
from acquisition.channels import ChannelSpec
from acquisition.outlets import DataOutlet

t0 = pylsl.local_clock()
times = t0 + np.asarray({offsets!r})
outlet = DataOutlet("bci-test-scripted", "EEG", ChannelSpec.generic(2), {sfreq!r}, {sid!r})
outlet.wait_for_consumers(60)
for start in range(0, times.size, 25):
    idx = np.arange(start, min(start + 25, times.size))
    outlet.push_chunk(np.stack([idx, -idx], axis=1).astype(np.float32), times[idx])
    time.sleep(0.01)
print("done", flush=True)
time.sleep(600)
"""


def _live(spawn_python, sid: str, t_ref: float, nan_every: int = 0):
    code = _LIVE.format(sid=sid, t_ref=t_ref, sfreq=SFREQ, n_ch=N_CH, nan_every=nan_every)
    return spawn_python(code)


def _wait(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail (not a timing assert: a deadlock guard) otherwise."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)


def _check_ramp(data: np.ndarray, ts: np.ndarray, t_ref: float) -> None:
    """Channel 0 counts up by one, channel k is k times it, stamps are t_ref + i / SFREQ."""
    idx = data[:, 0].astype(np.int64)
    np.testing.assert_array_equal(np.diff(idx), 1)
    np.testing.assert_array_equal(data[:, 2:], idx[:, None] * np.arange(2, N_CH)[None, :])
    np.testing.assert_allclose(ts, t_ref + idx / SFREQ, atol=1e-3)  # clock offset ~ microseconds


def test_live_stream_lands_exactly_in_the_buffer(spawn_python, source_id):
    t_ref = pylsl.local_clock()
    _live(spawn_python, source_id, t_ref)
    with StreamSource(source_id=source_id, bufsize=20.0, resolve_timeout=30.0) as src:
        assert src.sfreq == SFREQ
        assert src.channels.names == tuple(f"EEG {k:03d}" for k in range(N_CH))
        assert src.channels.types == ("eeg",) * N_CH
        assert src.buffer.capacity == 20 * SFREQ
        counter, parts, stamps = 0, [], []
        while sum(p.shape[0] for p in parts) < SFREQ:  # read incrementally while it streams
            new = src.buffer.read_since(counter)
            assert new.n_lost == 0 and new.valid.all()
            parts.append(new.data)
            stamps.append(new.timestamps)
            counter = new.next_counter
            time.sleep(0.05)
        data, ts = np.concatenate(parts), np.concatenate(stamps)
        _check_ramp(data, ts, t_ref)
        health = src.health()
    assert health.connected and health.state == "connected"
    assert (health.n_gaps, health.dropped_samples, health.n_invalid_samples) == (0, 0, 0)
    assert health.last_error is None and health.reconnections == 0
    # after disconnect() the buffer is still there, holding what was read and what came after
    assert src.health().state == "disconnected"
    everything, _, _ = src.buffer.read_latest(src.buffer.n_written)
    np.testing.assert_array_equal(everything[: data.shape[0]], data)
    assert src.health().n_samples == src.buffer.n_written


def test_outlet_killed_and_restarted_reconnects_and_reports_the_gap(
    spawn_python, source_id, caplog
):
    t_ref = pylsl.local_clock()
    first = _live(spawn_python, source_id, t_ref)
    with StreamSource(source_id=source_id, resolve_timeout=30.0) as src:
        _wait(lambda: src.health().n_samples > SFREQ / 2, what="first data")
        with caplog.at_level(logging.WARNING, logger="acquisition._inlet_worker"):
            first.kill()
            first.wait()
            _wait(lambda: not src.health().connected, what="loss detection")
        lost = src.health()
        assert lost.state == "lost" and lost.n_samples > 0
        assert any("Stream lost" in r.getMessage() for r in caplog.records)
        n_before = src.buffer.n_written
        _live(spawn_python, source_id, t_ref)  # same source_id, same timeline
        _wait(lambda: src.health().reconnections == 1, what="reconnection")
        _wait(lambda: src.buffer.n_written > n_before + SFREQ / 2, what="data after reconnection")
        health = src.health()
        new = src.buffer.read_since(0)
    data, ts = new.data, new.timestamps
    assert health.connected and new.valid.all() and new.n_lost == 0
    outages = [g for g in health.gaps if g.kind == "outage"]
    assert len(outages) == 1 and health.n_gaps == 1
    # the buffer kept the samples from before the loss, and the gap matches the missing indices
    idx = data[:, 0].astype(np.int64)
    steps = np.flatnonzero(np.diff(idx) != 1)
    assert steps.size == 1
    before, after = data[: steps[0] + 1], data[steps[0] + 1 :]
    _check_ramp(before, ts[: steps[0] + 1], t_ref)
    _check_ramp(after, ts[steps[0] + 1 :], t_ref)
    assert outages[0].n_missing == idx[steps[0] + 1] - idx[steps[0]] - 1
    assert outages[0].start == pytest.approx(t_ref + (idx[steps[0]] + 1) / SFREQ, abs=1e-3)
    assert health.dropped_samples == outages[0].n_missing


def test_nan_and_inf_samples_are_flagged_counted_and_kept(spawn_python, source_id):
    t_ref = pylsl.local_clock()
    _live(spawn_python, source_id, t_ref, nan_every=50)
    with StreamSource(source_id=source_id, resolve_timeout=30.0) as src:
        _wait(lambda: src.health().n_samples > 1.2 * SFREQ, what="data")
        new = src.buffer.read_since(0)
        data, valid = new.data, new.valid
        health = src.health()
    idx = data[:, 0].astype(np.int64)
    expected_bad = idx % 50 == 0
    assert expected_bad.sum() >= 2
    np.testing.assert_array_equal(valid, ~expected_bad)
    assert health.n_invalid_samples == (~valid).sum()
    assert np.isnan(data[expected_bad & (idx % 2 == 0), 1]).all()  # raw values untouched
    assert np.isinf(data[expected_bad & (idx % 2 == 1), 1]).all()
    assert health.connected and health.n_gaps == 0


def test_timestamps_that_jump_or_go_backwards_are_reported(spawn_python, source_id):
    sfreq = 200.0
    offsets = np.arange(600) / sfreq
    offsets[200:] += 0.5  # 100 samples missing
    offsets[400:] -= 3.0  # the sender's clock steps back
    code = _SCRIPTED.format(offsets=offsets.tolist(), sfreq=sfreq, sid=source_id)
    proc = spawn_python(code)
    with StreamSource(source_id=source_id, resolve_timeout=30.0) as src:
        _wait(lambda: src.health().n_samples == 600, what="all samples")
        health = src.health()
        new = src.buffer.read_since(0)
    data, ts, valid = new.data, new.timestamps, new.valid
    assert proc.stdout.readline().strip() == "done"
    np.testing.assert_array_equal(data[:, 0], np.arange(600))
    assert [g.kind for g in health.gaps] == ["jump", "backwards"]
    assert health.gaps[0].n_missing == 100 and health.dropped_samples == 100
    assert health.gaps[1].duration == pytest.approx(-3.0, abs=1e-3)
    np.testing.assert_allclose(
        np.diff(ts)[[199, 399]], [0.5 + 1 / sfreq, -3.0 + 1 / sfreq], atol=1e-3
    )
    assert valid.all() and health.last_error is None


def test_fewer_samples_than_the_nominal_rate_is_reported(spawn_python, source_id):
    """The sender claims 500 Hz but its stamps say 490 Hz: 2 % of the samples never come."""
    offsets = np.arange(3000) / 490.0
    proc = spawn_python(_SCRIPTED.format(offsets=offsets.tolist(), sfreq=500.0, sid=source_id))
    with StreamSource(source_id=source_id, resolve_timeout=30.0) as src:
        _wait(lambda: src.health().n_samples == 3000, what="all samples")
        health = src.health()
        data = src.buffer.read_since(0).data
    assert proc.stdout.readline().strip() == "done"
    np.testing.assert_array_equal(data[:, 0], np.arange(3000))
    assert health.n_gaps >= 2 and {g.kind for g in health.gaps} == {"rate"}
    assert health.effective_rate == pytest.approx(490.0, rel=0.005)
    assert health.dropped_samples == pytest.approx(0.02 * 3000, rel=0.5)


def test_wrong_channel_count_or_rate_is_a_clear_error(source_id):
    outlet = DataOutlet("bci-test-shape", "EEG", ChannelSpec.generic(4), 250.0, source_id)
    with pytest.raises(ValueError, match=r"'expected_channels'.*has 4 channels but 8 were"):
        StreamSource(source_id=source_id, expected_channels=8, resolve_timeout=10).connect()
    with pytest.raises(ValueError, match=r"'expected_sfreq'.*runs at 250 Hz but 1000 Hz"):
        StreamSource(source_id=source_id, expected_sfreq=1000.0, resolve_timeout=10).connect()
    src = StreamSource(source_id=source_id, expected_channels=4, expected_sfreq=250.0)
    with src:
        assert src.channels.n_channels == 4
    outlet.close()


def test_string_stream_where_numeric_data_is_expected(source_id):
    outlet = MarkerOutlet("bci-test-strings", source_id)
    with pytest.raises(ValueError, match="carries string samples, but numeric data is expected"):
        StreamSource(source_id=source_id, resolve_timeout=10).connect()
    outlet.close()


def test_stream_not_found_lists_visible_streams(source_id):
    name = f"bci-test-visible-{source_id}"
    outlet = MarkerOutlet(name, source_id)
    src = StreamSource(name=name, source_id=source_id + "-absent", resolve_timeout=1.0)
    with pytest.raises(StreamNotFoundError, match=rf"(?s)No LSL stream matched.*{name}"):
        src.connect()
    outlet.close()


def test_lifecycle_errors_and_harmless_repeats(source_id):
    with pytest.raises(ValueError, match="'bufsize'"):
        StreamSource(source_id=source_id, bufsize=0)
    with pytest.raises(ValueError, match="at least one"):
        StreamSource()
    src = StreamSource(source_id=source_id)
    with pytest.raises(RuntimeError, match=r"connect\(\) the stream"):
        _ = src.buffer
    with pytest.raises(RuntimeError, match=r"connect\(\) the stream"):
        src.health()
    outlet = DataOutlet("bci-test-life", "EEG", ChannelSpec.generic(2), 100.0, source_id)
    src.connect()
    with pytest.warns(RuntimeWarning, match="already connected"):
        src.connect()
    src.disconnect()
    with pytest.warns(RuntimeWarning, match="not connected"):
        src.disconnect()
    outlet.close()


class _FailingSource(StreamSource):
    """A source whose chunk handling fails once after the first chunks (fault injection)."""

    failures = 0

    def _pull(self, inlet, timeout):
        n = super()._pull(inlet, timeout)
        if n and self.failures == 0 and self.buffer.n_written > 50:
            self.failures += 1
            raise OSError("injected failure")
        return n


def test_worker_error_is_logged_and_reraised_in_tests(spawn_python, source_id, caplog):
    _live(spawn_python, source_id, pylsl.local_clock())
    src = _FailingSource(source_id=source_id, resolve_timeout=30.0)
    src.connect()
    with caplog.at_level(logging.ERROR, logger="acquisition._inlet_worker"):
        _wait(lambda: src.buffer.n_written > 50, what="first data")
        with pytest.raises(OSError, match="injected failure"):
            # health() re-raises the worker's error as soon as it happened
            _wait(lambda: src.health().n_samples < 0, what="worker failure")
    health = src.health()
    assert not health.connected and "injected failure" in health.last_error
    assert any(r.exc_info and "injected failure" in str(r.exc_info[1]) for r in caplog.records)
    src.disconnect()


def test_worker_error_without_raise_mode_recovers(spawn_python, source_id, monkeypatch):
    monkeypatch.setenv("BCI_APP_RAISE_STREAM_ERRORS", "0")
    _live(spawn_python, source_id, pylsl.local_clock())
    with _FailingSource(source_id=source_id, resolve_timeout=30.0) as src:
        _wait(lambda: src.health().reconnections == 1, what="recovery")
        n = src.health().n_samples
        _wait(lambda: src.health().n_samples > n + 50, what="data after recovery")
        health = src.health()
    assert health.connected and "injected failure" in health.last_error


def _auto_stamped(n_chunks: int, chunk: int, sfreq: float, true_rate: float) -> np.ndarray:
    """Stamp chunks as liblsl does when they are pushed without times, at ``true_rate``.

    The last sample of a chunk is 'now', the others go back at the nominal rate, so chunks
    pushed faster than the nominal rate overlap in time.
    """
    last = (np.arange(n_chunks) + 1) * chunk / true_rate
    return (last[:, None] - np.arange(chunk - 1, -1, -1)[None, :] / sfreq).ravel()


@pytest.mark.parametrize(
    ("offsets", "words"),
    [
        (np.arange(4000) / 475.0, "effective rate 475.0 Hz, nominal 500 Hz"),  # 5 % slow
        (_auto_stamped(320, 25, 500.0, 1000.0), "effective rate 1000.0 Hz, nominal 500 Hz"),
    ],
    ids=["5-percent-slow", "twice-the-rate"],
)
def test_a_stream_off_its_declared_rate_is_diagnosed_once(
    spawn_python, source_id, caplog, offsets, words
):
    code = _SCRIPTED.format(offsets=offsets.tolist(), sfreq=500.0, sid=source_id)
    proc = spawn_python(code)
    with (
        caplog.at_level(logging.WARNING, logger="acquisition.stream"),
        StreamSource(source_id=source_id, resolve_timeout=30.0) as src,
    ):
        _wait(lambda: src.health().n_samples == offsets.size, what="all samples")
        health = src.health()
    assert proc.stdout.readline().strip() == "done"
    # A window's edges fall where the pulls end; with chunks stamped over each other (pushed
    # faster than declared) a pull that ends inside a chunk moves the estimate by up to a
    # chunk per 2 s window (25 of 2000 samples), so the rate is checked to 2 %.
    expected = float(words.split()[2])
    assert health.rate_known and health.effective_rate == pytest.approx(expected, rel=0.02)
    assert health.rate_mismatch == f"effective rate {health.effective_rate:.1f} Hz, nominal 500 Hz"
    said = [r for r in caplog.records if "does not send at its declared rate" in r.getMessage()]
    assert len(said) == 1 and "Hz, nominal 500 Hz" in said[0].getMessage()
    gap_lines = [r for r in caplog.records if "gap at t=" in r.getMessage()]
    assert len(gap_lines) <= 5 < health.n_gaps or health.n_gaps <= 5  # counted, not all logged


def test_a_stream_at_its_declared_rate_has_no_rate_mismatch(spawn_python, source_id):
    offsets = _auto_stamped(160, 25, 500.0, 500.0)
    proc = spawn_python(_SCRIPTED.format(offsets=offsets.tolist(), sfreq=500.0, sid=source_id))
    with StreamSource(source_id=source_id, resolve_timeout=30.0) as src:
        _wait(lambda: src.health().n_samples == offsets.size, what="all samples")
        health = src.health()
    assert proc.stdout.readline().strip() == "done"
    assert health.rate_known and health.rate_mismatch is None and health.n_gaps == 0
    assert health.effective_rate == pytest.approx(500.0, rel=1e-3)


class _OpenOrderSource(StreamSource):
    """Notes which ring buffer exists when the inlet opens (the data starts flowing then)."""

    buffer_at_open = None

    def _open_inlet(self, info):
        self.buffer_at_open = self._buffer
        return super()._open_inlet(info)


def test_the_buffer_is_made_before_the_data_flows(source_id):
    # The ring buffer maps all its memory when made; a replay's player starts pushing as soon as
    # the inlet opens, so the buffer must exist by then, not be made while the data arrives.
    outlet = DataOutlet("bci-test-order", "EEG", ChannelSpec.generic(2), 100.0, source_id)
    with _OpenOrderSource(source_id=source_id, bufsize=3.0) as src:
        assert src.buffer_at_open is not None and src.buffer_at_open is src.buffer
        assert (src.buffer.capacity, src.buffer.n_channels) == (300, 2)
        outlet.push_chunk(
            np.ones((5, 2), np.float32), pylsl.local_clock() - np.arange(5)[::-1] / 100
        )
        _wait(lambda: src.buffer.n_written == 5, what="the 5 samples")
    outlet.close()


def test_a_stream_of_this_host_flows_before_its_clock_offset_is_measured(source_id):
    # LSL's clock is the host's monotonic clock: a stream of this host needs no offset, so its
    # samples flow at once with offset 0 while liblsl measures the real one (~0.6 s) behind them.
    outlet = DataOutlet("bci-test-samehost", "EEG", ChannelSpec.generic(2), 100.0, source_id)
    with StreamSource(source_id=source_id, resolve_timeout=10) as src:
        assert src.info.hostname() == socket.gethostname()
        stamps = pylsl.local_clock() - np.arange(50)[::-1] / 100.0
        outlet.push_chunk(np.stack([np.arange(50), -np.arange(50)], 1).astype(np.float32), stamps)
        _wait(lambda: src.buffer.n_written == 50, what="the 50 samples")
        _wait(lambda: src.clock_offset_measured, what="the clock offset measurement")
        assert abs(src.clock_offset) < SAME_HOST_TOLERANCE_S
        _, ts, _ = src.buffer.read_latest(50)
        np.testing.assert_allclose(ts, stamps, atol=SAME_HOST_TOLERANCE_S)
    outlet.close()


def test_a_stream_of_another_host_waits_for_its_clock_offset(source_id, monkeypatch):
    # Seen from a machine with another name, the outlet is remote: connect() measures the clock
    # offset before any sample is handed out (they wait in liblsl's buffer meanwhile).
    monkeypatch.setattr(inlet_worker.socket, "gethostname", lambda: "another-host")
    outlet = DataOutlet("bci-test-remote", "EEG", ChannelSpec.generic(2), 100.0, source_id)
    with StreamSource(source_id=source_id, resolve_timeout=10) as src:
        assert src.clock_offset_measured
        assert abs(src.clock_offset) < SAME_HOST_TOLERANCE_S  # the same clock, measured
    outlet.close()


def test_a_same_named_host_with_another_clock_is_reported(source_id, monkeypatch, caplog):
    # Two machines with one name: the assumed offset 0 is wrong until measured. The real offset
    # here is ~0, so a tolerance below 0 stands in for a clock that differs.
    monkeypatch.setattr(inlet_worker, "SAME_HOST_TOLERANCE_S", -1.0)
    outlet = DataOutlet("bci-test-twin", "EEG", ChannelSpec.generic(2), 100.0, source_id)
    with caplog.at_level(logging.WARNING, logger="acquisition._inlet_worker"):
        with StreamSource(source_id=source_id, resolve_timeout=10) as src:
            _wait(lambda: src.clock_offset_measured, what="the clock offset measurement")
    assert "Give the two machines different host names" in caplog.text
    outlet.close()
