"""Dejitter: jitter removed, clock drift tracked, jumps and backwards steps reported."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.dejitter import Dejitter


def _push_stamped(true_t: np.ndarray, sfreq: float, chunk: int, rng) -> np.ndarray:
    """Stamp like liblsl: each chunk's last sample at (late) push time, the others back from it."""
    ts = np.empty_like(true_t)
    for start in range(0, true_t.size, chunk):
        stop = min(start + chunk, true_t.size)
        last = true_t[stop - 1] + abs(rng.normal(0.0, 0.002))
        ts[start:stop] = last - np.arange(stop - start - 1, -1, -1) / sfreq
    return ts


def _run(dj: Dejitter, ts: np.ndarray, chunk: int):
    """Feed ``ts`` in chunks, flush at the end; every sample comes out exactly once."""
    outs, gaps = [], []
    for start in range(0, ts.size, chunk):
        out, found = dj.process(ts[start : start + chunk])
        outs.append(out)
        gaps += found
    out, found = dj.flush()
    outs.append(out)
    gaps += found
    out = np.concatenate(outs)
    assert out.shape == ts.shape
    return out, gaps


def test_jitter_removed_and_drift_tracked():
    rng = np.random.default_rng(1)
    sfreq, true_rate = 1000.0, 1000.3  # the sender's clock runs 300 ppm fast
    true_t = 500.0 + np.arange(40_000) / true_rate
    raw = _push_stamped(true_t, sfreq, 20, rng)
    dj = Dejitter(sfreq)
    out, gaps = _run(dj, raw, 20)
    assert gaps == []
    tail = slice(-10_000, None)
    raw_err = raw[tail] - true_t[tail]
    err = out[tail] - true_t[tail]
    # the residual is the mean push latency (a constant) plus much less jitter than before
    assert np.std(err) < np.std(raw_err) / 10
    assert dj.slope == pytest.approx(1.0 / true_rate, rel=2e-5)
    assert np.all(np.diff(out) > 0)


def test_forward_jump_and_backwards_step_are_reported_and_fitted_apart():
    sfreq = 500.0
    t = 100.0 + np.arange(3000) / sfreq
    t[1000:] += 0.3  # 150 samples missing
    t[2100:] -= 2.0  # the sender's clock stepped back
    out, gaps = _run(Dejitter(sfreq), t, 33)
    assert [g.kind for g in gaps] == ["jump", "backwards"]
    assert gaps[0].n_missing == 150
    assert gaps[0].duration == pytest.approx(0.3)
    assert gaps[0].start == pytest.approx(100.0 + 1000 / sfreq)
    assert gaps[1].n_missing == 0 and gaps[1].duration == pytest.approx(-2.0)
    np.testing.assert_allclose(out, t, atol=1e-9)  # exact stamps stay exact on each segment


def test_a_chunk_stamped_late_is_held_then_put_back_on_the_line():
    """The sender was descheduled once: one chunk is stamped 12 ms late, nothing is missing."""
    sfreq = 2000.0
    true_t = 50.0 + np.arange(4000) / sfreq
    raw = true_t.copy()
    raw[2000:2010] += 0.012  # one 10-sample chunk stamped late
    dj = Dejitter(sfreq)
    _, gaps = _run(dj, raw[:2000], 10)
    assert gaps == []
    first, found = dj.process(raw[2000:2010])
    assert first.size == 0 and found == [] and dj.n_held == 10  # undecided: held back
    second, found = dj.process(raw[2010:2020])
    assert found == [] and second.size == 20 and dj.n_held == 0
    np.testing.assert_allclose(second, true_t[2000:2020], atol=1e-6)  # on the line, not late


def test_a_run_of_late_chunks_while_the_sender_catches_up_is_not_a_gap():
    sfreq = 2000.0
    true_t = 50.0 + np.arange(6000) / sfreq
    raw = true_t.copy()
    # descheduled, then catching up, with equal lateness on consecutive chunks
    for k, late in enumerate([0.045, 0.045, 0.030, 0.030, 0.030, 0.012, 0.004]):
        raw[4000 + 10 * k : 4010 + 10 * k] += late
    out, gaps = _run(Dejitter(sfreq), raw, 10)
    assert gaps == []
    np.testing.assert_allclose(out, true_t, atol=1e-6)


def test_a_real_gap_is_confirmed_on_the_shifted_line_and_flush_decides_alone():
    sfreq = 1000.0
    t = 10.0 + np.arange(400) / sfreq
    dj = Dejitter(sfreq)  # confirm_s=0.1: 100 samples on the shifted line confirm a gap
    dj.process(t[:50])
    out, gaps = dj.process(t[50:120] + 0.2)
    assert out.size == 0 and gaps == [] and dj.n_held == 70
    out, gaps = dj.process(t[120:200] + 0.2)  # still shifted: the line moved
    assert [(g.kind, g.n_missing) for g in gaps] == [("jump", 200)]
    np.testing.assert_allclose(out, t[50:200] + 0.2, atol=1e-9)
    dj.process(t[200:210] - 1.0)
    out, gaps = dj.flush()  # nothing came after: the step is taken as real
    assert [g.kind for g in gaps] == ["backwards"]
    np.testing.assert_allclose(out, t[200:210] - 1.0, atol=1e-9)


def test_single_sample_chunks_and_reset():
    dj = Dejitter(100.0)
    t = 10.0 + np.arange(50) / 100.0
    out, gaps = _run(dj, t, 1)
    assert gaps == []
    np.testing.assert_allclose(out, t, atol=1e-9)
    dj.reset()
    out, gaps = dj.process(np.array([99.0, 99.01]))
    assert gaps == [] and out[0] == pytest.approx(99.0)


def test_bad_rate_is_rejected():
    with pytest.raises(ValueError, match="'sfreq'.*Irregular streams"):
        Dejitter(0.0)


def test_rate_monitor_needs_a_sustained_difference_and_clears_it():
    from acquisition.dejitter import RateMonitor

    monitor = RateMonitor(500.0, window_s=1.0, confirm=3)
    changes, t = [], 0.0

    def feed(seconds: float, rate: float, jump: float = 0.0) -> None:
        nonlocal t
        t += jump
        for _ in range(round(seconds * 20)):  # chunks of 50 ms
            t += 0.05
            changes.append(monitor.update(round(rate * 0.05), t))

    feed(3.0, 500.0)
    feed(2.0, 500.0, jump=0.5)  # a clock step spoils one window, not the verdict
    feed(2.0, 500.0, jump=-3.0)
    assert monitor.known and monitor.mismatch is None and set(changes) == {None}
    feed(2.5, 480.0)  # two windows off (4 %): not yet
    assert monitor.mismatch is None
    feed(1.0, 480.0)
    assert monitor.mismatch == "effective rate 480.0 Hz, nominal 500 Hz"
    assert changes.count("mismatch") == 1
    feed(5.0, 500.0)
    assert monitor.mismatch is None and changes.count("cleared") == 1
    monitor.reset()
    assert not monitor.known and monitor.mismatch is None


def _stall_then_burst(sfreq: float, seconds: float, lost: int, rng):
    """Pushes of a sender that stalls 1 s every 3 s, then pushes its backlog in 20-sample chunks.

    Stamped as liblsl auto-stamps (``--stall-every 3 --stall-s 1 --stamps auto`` of
    scripts/faults_streams.py): the last sample of each chunk at its push time, the others dated
    back by ``1 / sfreq``. Between stalls a chunk is pushed every 10 ms. ``lost`` samples are
    lost in each stall (the device's buffer overflowed). Returns the samples' true times and
    the stamps of every push.
    """
    pushes, true_t, t, i, next_stall = [], [], 0.0, 0, 3.0

    def push(n: int, at: float) -> None:
        nonlocal i
        pushes.append(1000.0 + at - np.arange(n - 1, -1, -1) / sfreq)
        true_t.append(1000.0 + (i + np.arange(n)) / sfreq)
        i += n

    while t < seconds:
        if t >= next_stall:
            t += 1.0  # stalled
            next_stall = t + 3.0
            i += lost
            backlog = int(t * sfreq) - i
            for start in range(0, backlog, 20):  # the backlog at once, 20 us per push
                t += 20e-6
                push(min(20, backlog - start), t)
            continue
        n = int(t * sfreq) - i
        if n > 0:
            push(n, t)
        t += 0.01 + abs(rng.normal(0.0, 3e-4))  # scheduling jitter
    return np.concatenate(true_t), pushes


def _feed(dj: Dejitter, chunks: list[np.ndarray], flush: bool = True):
    outs, gaps = [], []
    for chunk in chunks:
        out, found = dj.process(chunk)
        outs.append(out)
        gaps += found
    if flush:
        out, found = dj.flush()
        outs.append(out)
        gaps += found
    return np.concatenate(outs), gaps


def _pulled(pushes: list[np.ndarray], rng) -> list[np.ndarray]:
    """The inlet pulls whatever arrived: one to four pushes at a time."""
    pulls, k = [], 0
    while k < len(pushes):
        m = int(rng.integers(1, 5))
        pulls.append(np.concatenate(pushes[k : k + m]))
        k += m
    return pulls


@pytest.mark.parametrize("grouped", [False, True], ids=["push-by-push", "pulls"])
def test_a_backlog_pushed_in_a_burst_after_a_stall_is_put_back_on_the_line(grouped):
    """faults_streams.py's stall-then-burst: no gap, the backlog's times put back on the line.

    Every burst chunk is stamped at its push time, so the stamps of 1 s of backlog span 1 ms
    and step back chunk after chunk; then the stream is on its line again. Nothing is missing.
    """
    rng = np.random.default_rng(3)
    sfreq = 1000.0
    true_t, pushes = _stall_then_burst(sfreq, 10.0, 0, rng)
    raw = np.concatenate(pushes)
    assert np.sum(np.diff(raw) < -0.01) == 2 * 49  # 2 stalls, 50 chunks stepping back each
    dj = Dejitter(sfreq)
    out, gaps = _feed(dj, _pulled(pushes, rng) if grouped else pushes, flush=False)
    assert gaps == [] and dj.n_held == 0 and out.shape == raw.shape
    assert np.all(np.diff(out) > 0.5 / sfreq)
    # on the line: the true times plus the mean push latency (under 1 ms here)
    np.testing.assert_allclose(out - true_t, np.median(out - true_t), atol=1e-3)


def test_a_burst_after_a_stall_that_lost_samples_is_one_jump_not_a_run_of_steps_back():
    """A stall that lost 200 samples, then the rest in a burst: one jump, the burst dated back.

    The device's buffer overflowed in the stall; the burst is stamped at push time, and dated
    back from the line the stream goes on on.
    """
    rng = np.random.default_rng(4)
    sfreq = 1000.0
    true_t, pushes = _stall_then_burst(sfreq, 10.0, 200, rng)
    out, gaps = _feed(Dejitter(sfreq), pushes)
    assert [g.kind for g in gaps] == ["jump", "jump"]  # stalls at 3 s and 7 s
    assert all(abs(g.n_missing - 200) <= 1 for g in gaps)
    assert np.all(np.diff(out) > 0.5 / sfreq)
    np.testing.assert_allclose(out - true_t, np.median(out - true_t), atol=1e-3)


def test_a_burst_cut_short_is_flushed_as_one_gap_dated_back_from_its_last_chunk():
    rng = np.random.default_rng(6)
    _, pushes = _stall_then_burst(1000.0, 4.0, 0, rng)
    first_step_back = next(k for k in range(1, len(pushes)) if pushes[k][0] < pushes[k - 1][-1])
    cut = first_step_back + 30  # the sender died in the burst, 31 chunks into it
    dj = Dejitter(1000.0)
    out, gaps = _feed(dj, pushes[:cut])
    assert [g.kind for g in gaps] == ["jump"] and dj.n_held == 0
    assert out.shape == (sum(p.size for p in pushes[:cut]),)
    assert np.all(np.diff(out) > 0.5e-3)
    np.testing.assert_allclose(out[-20:], pushes[cut - 1], atol=1e-3)


def test_clock_steps_are_still_gaps_when_stamped_at_push_time():
    """faults_streams.py's clock-backwards and clock-jumps: still one gap each.

    Auto-stamped chunks from a clock that steps back 3 s, or forward 0.5 s, and stays there.
    """
    rng = np.random.default_rng(5)
    for step, kind in ((-3.0, "backwards"), (0.5, "jump")):
        _, pushes = _stall_then_burst(1000.0, 2.9, 0, rng)  # no stall before 3 s
        half = len(pushes) // 2
        out, gaps = _feed(Dejitter(1000.0), pushes[:half] + [p + step for p in pushes[half:]])
        assert [g.kind for g in gaps] == [kind]
        assert gaps[0].duration == pytest.approx(step, abs=2e-3)
        assert np.all(np.diff(out[: sum(p.size for p in pushes[:half])]) > 0)
