"""Streaming polyphase resampler: resample_poly or the causal minimum phase, exact times."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import freqz, resample_poly, upfirdn

from bci_app.processing.resampling import StreamingResampler, rational_ratio

RATIOS = [(1000.0, 50.0), (1017.25, 50.0), (512.0, 50.0), (500.0, 120.0), (250.0, 1000.0)]


def feed_in_chunks(stage, data, timestamps, valid, rng):
    """Push ``data`` through ``stage`` in random chunks (sizes 0, 1 and larger); concatenate."""
    outputs, i = [stage.process(data[:0], timestamps[:0], valid[:0])], 0
    sizes = [0, 1, 1, 0, 2, 3]
    while i < data.shape[0]:
        n = sizes.pop(0) if sizes else int(rng.integers(0, 400))
        outputs.append(stage.process(data[i : i + n], timestamps[i : i + n], valid[i : i + n]))
        i += n
    return [np.concatenate(parts) for parts in zip(*outputs)]


@pytest.mark.parametrize(("sfreq_in", "sfreq_out"), RATIOS)
def test_matches_resample_poly_and_is_chunk_invariant(sfreq_in, sfreq_out):
    rng = np.random.default_rng(0)
    n = 4000
    data = rng.standard_normal((n, 3)).cumsum(axis=0)
    timestamps = 100.0 + np.arange(n) / sfreq_in
    valid = np.ones(n, dtype=bool)
    resampler = StreamingResampler(sfreq_in, sfreq_out)
    one_shot = resampler.process(data, timestamps, valid)
    resampler.reset()
    chunked = feed_in_chunks(resampler, data, timestamps, valid, rng)

    n_out = one_shot.data.shape[0]
    scale = np.abs(one_shot.data).max()
    assert chunked[0].shape == one_shot.data.shape
    assert np.abs(chunked[0] - one_shot.data).max() <= 1e-6 * scale
    np.testing.assert_array_equal(chunked[1], one_shot.timestamps)
    # Same filter and alignment as scipy (edge padding at the start); the streaming version only
    # lacks the last outputs, whose filter support reaches past the end of the data.
    reference = resample_poly(data, resampler.up, resampler.down, axis=0, padtype="edge")
    expected_missing = int(np.ceil(resampler.delay_s * sfreq_out)) + 1
    assert reference.shape[0] - expected_missing <= n_out <= reference.shape[0]
    assert np.abs(one_shot.data - reference[:n_out]).max() <= 1e-9 * scale
    expected_t = 100.0 + np.arange(n_out) * resampler.down / resampler.up / sfreq_in
    np.testing.assert_allclose(one_shot.timestamps, expected_t, rtol=0, atol=1e-9)


def test_non_integer_ratio_and_limits():
    assert rational_ratio(1017.25, 50.0) == (200, 4069)
    assert rational_ratio(1000.0, 50.0) == (1, 20)
    assert rational_ratio(250.0, 1000.0) == (4, 1)
    with pytest.raises(ValueError, match="Round 'sfreq_in'"):
        rational_ratio(1000.123457, 50.0)
    with pytest.raises(ValueError, match="'sfreq_out'.*positive"):
        rational_ratio(1000.0, -5.0)
    with pytest.raises(ValueError, match="'zeros'"):
        StreamingResampler(1000.0, 50.0, zeros=0)


def test_delay_is_compensated_in_timestamps():
    """An in-band sine comes out as the same sine evaluated at the output timestamps."""
    sfreq_in, freq = 1017.25, 3.0
    timestamps = 7.0 + np.arange(int(20 * sfreq_in)) / sfreq_in
    data = np.sin(2 * np.pi * freq * timestamps)[:, None]
    resampler = StreamingResampler(sfreq_in, 50.0)
    out = resampler.process(data, timestamps)
    assert resampler.delay_s == pytest.approx(10 / 50.0)
    expected = np.sin(2 * np.pi * freq * out.timestamps)
    settled = out.timestamps > timestamps[0] + 2 * resampler.delay_s
    assert np.abs(out.data[settled, 0] - expected[settled]).max() < 2e-3
    # A sample is only emitted once its whole filter support has arrived (causal).
    assert out.timestamps[-1] <= timestamps[-1] - resampler.delay_s + 1e-9


def test_jittered_timestamps_are_interpolated():
    rng = np.random.default_rng(1)
    sfreq_in = 600.0
    timestamps = np.arange(3000) / sfreq_in + rng.uniform(0, 0.2 / sfreq_in, 3000)
    timestamps.sort()
    resampler = StreamingResampler(sfreq_in, 50.0)
    out = resampler.process(np.zeros((3000, 1)), timestamps)
    centres = np.arange(out.timestamps.size) * 12  # 600 -> 50 Hz: every 12th input sample
    np.testing.assert_allclose(out.timestamps, timestamps[centres], rtol=0, atol=1e-12)


@pytest.mark.parametrize(("sfreq_in", "sfreq_out"), [(1000.0, 50.0), (1017.25, 50.0)])
def test_invalid_input_spoils_exactly_the_outputs_it_touches(sfreq_in, sfreq_out):
    n, bad = 3000, 1500
    valid = np.ones(n, dtype=bool)
    valid[bad] = False
    resampler = StreamingResampler(sfreq_in, sfreq_out)
    out = resampler.process(np.ones((n, 2)), np.arange(n) / sfreq_in, valid)
    k = np.arange(out.valid.size)
    # Output k weighs input j with tap k * down + half - j * up; non-zero inside the filter.
    tap = k * resampler.down + (resampler.n_taps - 1) // 2 - bad * resampler.up
    touched = (tap >= 0) & (tap < resampler.n_taps)
    np.testing.assert_array_equal(out.valid, ~touched)
    assert 15 <= touched.sum() <= 25  # about 2 * zeros output samples


def test_small_chunks_may_produce_nothing():
    resampler = StreamingResampler(1000.0, 50.0)
    out = resampler.process(np.ones((5, 4)), np.arange(5) / 1000.0)
    assert out.data.shape == (0, 4) and out.timestamps.shape == (0,) and out.valid.shape == (0,)


@pytest.mark.parametrize(("sfreq_in", "sfreq_out"), RATIOS)
def test_minphase_is_the_causal_filter_and_chunk_invariant(sfreq_in, sfreq_out):
    """Output k is sum_n h[k * down + lead - n * up] x[n] with h minimum-phase, lead = up - 1."""
    rng = np.random.default_rng(2)
    n = 4000
    data = rng.standard_normal((n, 3)).cumsum(axis=0)
    timestamps = 100.0 + np.arange(n) / sfreq_in
    valid = np.ones(n, dtype=bool)
    resampler = StreamingResampler(sfreq_in, sfreq_out, anti_alias="minphase")
    one_shot = resampler.process(data, timestamps, valid)
    resampler.reset()
    chunked = feed_in_chunks(resampler, data, timestamps, valid, rng)

    up, down, lead = resampler.up, resampler.down, resampler.up - 1
    scale = np.abs(one_shot.data).max()
    assert chunked[0].shape == one_shot.data.shape
    assert np.abs(chunked[0] - one_shot.data).max() <= 1e-6 * scale
    np.testing.assert_array_equal(chunked[1], one_shot.timestamps)
    # Reference: the whole filter at the upsampled rate (scipy's upfirdn), edge-padded start.
    pad = resampler.n_taps // up + 1
    padded = np.concatenate([np.repeat(data[:1], pad, axis=0), data])
    full = upfirdn(resampler.taps, padded, up, 1, axis=0)
    k = np.arange(one_shot.data.shape[0])
    reference = full[pad * up + k * down + lead]
    assert np.abs(one_shot.data - reference).max() <= 1e-9 * scale
    # Every output whose newest input has arrived is emitted: nothing waits for the future.
    assert resampler.delay_s == pytest.approx(lead / up / sfreq_in)
    assert k.size == (n * up - 1 - lead) // down + 1
    expected_t = 100.0 + k * down / up / sfreq_in
    np.testing.assert_allclose(one_shot.timestamps, expected_t, rtol=0, atol=1e-9)


def test_minphase_keeps_the_magnitude_and_reports_its_group_delay():
    """Same magnitude response as the linear-phase sinc; an in-band sine lags by group_delay_s."""
    linear = StreamingResampler(1000.0, 50.0, zeros=5)
    minphase = StreamingResampler(1000.0, 50.0, zeros=5, anti_alias="minphase")
    freqs = np.array([1.0, 10.0, 20.0, 25.0, 30.0, 35.0, 50.0])
    _, h_lin = freqz(linear.taps, worN=freqs, fs=1000.0)
    _, h_min = freqz(minphase.taps, worN=freqs, fs=1000.0)
    np.testing.assert_allclose(np.abs(h_min), np.abs(h_lin), rtol=0, atol=2e-3)
    assert minphase.delay_s == 0.0 and linear.delay_s == pytest.approx(0.1)
    np.testing.assert_allclose(linear.group_delay_s(freqs[:3]), 0.0, atol=1e-9)
    delays = minphase.group_delay_s(freqs[:3])
    assert np.all((delays > 0.01) & (delays < linear.delay_s))

    freq = 3.0
    timestamps = 5.0 + np.arange(20_000) / 1000.0
    out = minphase.process(np.sin(2 * np.pi * freq * timestamps)[:, None], timestamps)
    lag = minphase.group_delay_s(freq)[0]
    settled = out.timestamps > timestamps[0] + 2.0
    expected = np.sin(2 * np.pi * freq * (out.timestamps - lag))
    assert np.abs(out.data[settled, 0] - expected[settled]).max() < 1e-2
    # Causal: changing the input after the last output's timestamp changes none of the outputs.
    changed = np.sin(2 * np.pi * freq * timestamps)[:, None]
    changed[timestamps > out.timestamps[-1]] += 100.0
    minphase.reset()
    again = minphase.process(changed, timestamps)
    np.testing.assert_array_equal(again.data, out.data)


def test_anti_alias_is_checked():
    with pytest.raises(ValueError, match="'anti_alias'.*'linear', 'minphase'"):
        StreamingResampler(1000.0, 50.0, anti_alias="iir")
