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
