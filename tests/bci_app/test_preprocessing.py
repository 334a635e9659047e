"""Preprocessor and its stages: chunked == one-shot, filters, NaN containment, bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import mne
import numpy as np
import pytest
from scipy.signal import butter, sosfilt, sosfilt_zi

from acquisition.channels import ChannelSpec
from acquisition.recording import Recording
from bci_app.processing.preprocessing import (
    PreprocessConfig,
    Preprocessor,
    fit_scaler,
    preprocess_recording,
)
from bci_app.processing.resampling import StreamingResampler
from bci_app.processing.stages import (
    ChannelPicker,
    Clamp,
    IIRFilter,
    RobustScaler,
    SampleGuard,
    sos_memory,
)

NAMES = tuple(f"MEG{i:03d}" for i in range(8))


def feed_in_chunks(stage, data, timestamps, valid, rng):
    """Push ``data`` through ``stage`` in random chunks (sizes 0, 1 and larger); concatenate."""
    outputs, i = [stage.process(data[:0], timestamps[:0], valid[:0])], 0
    sizes = [0, 1, 1, 0, 2, 3]
    while i < data.shape[0]:
        n = sizes.pop(0) if sizes else int(rng.integers(0, 300))
        outputs.append(stage.process(data[i : i + n], timestamps[i : i + n], valid[i : i + n]))
        i += n
    return [np.concatenate(parts) for parts in zip(*outputs)]


def signal(n, n_channels, sfreq, seed=0, offset=1e-11):
    """Brown noise with a DC offset and 50 Hz line noise, in MEG-like units (tesla)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sfreq
    data = rng.standard_normal((n, n_channels)).cumsum(axis=0) * 1e-13
    data += offset + 2e-13 * np.sin(2 * np.pi * 50 * t)[:, None]
    return data, 1000.0 + t


def assert_same(chunked, one_shot):
    """Chunked output equals one-shot output: data to 1e-6 of its scale, the rest exactly."""
    scale = max(np.nanmax(np.abs(one_shot[0])), np.finfo(float).tiny)
    assert chunked[0].shape == one_shot[0].shape
    np.testing.assert_allclose(chunked[0], one_shot[0], rtol=0, atol=1e-6 * scale)
    np.testing.assert_array_equal(chunked[1], one_shot[1])
    np.testing.assert_array_equal(chunked[2], one_shot[2])


def b2q_config(sfreq_in, **changes):
    config = PreprocessConfig.brain2qwerty(sfreq_in, NAMES)
    return dataclasses.replace(config, notch_freqs=(50.0,), **changes)


STAGES = {
    "picker": lambda fs: ChannelPicker(NAMES, ("MEG005", "MEG002", "MEG007")),
    "guard": lambda fs: SampleGuard(max_gap_s=5 / fs),
    "iir": lambda fs: IIRFilter(butter(4, [0.1, 20], "bandpass", fs=fs, output="sos"), 300),
    "resampler": lambda fs: StreamingResampler(fs, 50.0),
    "scaler": lambda fs: RobustScaler(np.full(8, 1e-11), np.full(8, 3e-13)),
    "clamp": lambda fs: Clamp(5e-12),
}


@pytest.mark.parametrize("name", list(STAGES))
def test_every_stage_chunked_equals_one_shot(name):
    sfreq = 1017.25
    data, timestamps = signal(6000, len(NAMES), sfreq)
    valid = np.ones(len(data), dtype=bool)
    valid[2000:2100] = False
    data[3000:3010, 2] = np.nan
    if name not in ("guard", "picker"):  # downstream stages only ever see guarded data
        data[3000:3010, 2] = 0.0
    stage = STAGES[name](sfreq)
    one_shot = stage.process(data, timestamps, valid)
    stage.reset()
    chunked = feed_in_chunks(stage, data, timestamps, valid, np.random.default_rng(1))
    assert_same(chunked, one_shot)


@pytest.mark.parametrize("sfreq_in", [1000.0, 1017.25, 512.0, 600.0])
@pytest.mark.parametrize("iir_stage", ["before_resample", "after_resample"])
def test_pipeline_chunked_equals_one_shot(sfreq_in, iir_stage):
    data, timestamps = signal(int(12 * sfreq_in), len(NAMES), sfreq_in, seed=2)
    data[int(4 * sfreq_in) : int(4.3 * sfreq_in), 1] = np.nan
    data[int(7 * sfreq_in), 5] = np.inf
    config = b2q_config(
        sfreq_in,
        iir_stage=iir_stage,
        scaler_center=(1e-11,) * 8,
        scaler_scale=(2e-13,) * 8,
        clamp=5.0,
    )
    valid = np.ones(len(data), dtype=bool)
    pre = Preprocessor(config)
    one_shot = pre.process(data, timestamps)
    pre.reset()
    chunked = feed_in_chunks(pre, data, timestamps, valid, np.random.default_rng(3))
    assert one_shot.data.dtype == np.float32
    assert np.isfinite(one_shot.data).all()
    assert not one_shot.valid.all() and one_shot.valid.any()
    assert_same(chunked, one_shot)
    np.testing.assert_allclose(np.diff(one_shot.timestamps), 1 / 50.0, rtol=1e-9)


def test_iir_equals_scipy_sosfilt():
    sos = butter(4, [0.1, 20], "bandpass", fs=1000.0, output="sos")
    data, timestamps = signal(5000, 3, 1000.0)
    out = IIRFilter(sos, 10).process(data, timestamps).data
    reference, _ = sosfilt(sos, data, axis=0, zi=sosfilt_zi(sos)[:, :, None] * data[0])
    assert np.abs(out - reference).max() <= 1e-6 * np.abs(reference).max()


@pytest.mark.parametrize("iir_stage", ["before_resample", "after_resample"])
def test_band_pass_keeps_the_band_and_removes_the_rest(iir_stage):
    sfreq = 1000.0
    t = np.arange(int(30 * sfreq)) / sfreq
    in_band = np.sin(2 * np.pi * 6.0 * t)
    noise = 3 * np.sin(2 * np.pi * 50.0 * t) + 2 * np.sin(2 * np.pi * 0.01 * t) + 40.0
    data = np.stack([in_band + noise, noise], axis=1)
    config = PreprocessConfig(
        sfreq_in=sfreq,
        ch_names=("a", "b"),
        l_freq=0.1,
        h_freq=20.0,
        notch_freqs=(50.0,),
        sfreq_out=50.0,
        iir_stage=iir_stage,
    )
    out = Preprocessor(config).process(data, t)
    settled = out.timestamps > 15.0
    kept = out.data[settled, 0]
    assert 0.95 < np.sqrt(2) * kept.std() < 1.05  # 6 Hz passes at unit gain
    assert np.abs(out.data[settled, 1]).max() < 0.02  # 50 Hz, drift and DC are gone


def test_auto_plan_filters_after_resampling_only_where_equivalent():
    fast = Preprocessor(b2q_config(1000.0))
    assert fast.iir_after_resample and fast.notch_freqs == ()  # 50 Hz: killed by the FIR
    config = PreprocessConfig(1000.0, NAMES, l_freq=0.1, notch_freqs=(60.0,), sfreq_out=120.0)
    assert not Preprocessor(config).iir_after_resample  # 60 Hz sits at the output Nyquist
    with pytest.raises(ValueError, match="'iir_stage'.*'after_resample' needs"):
        Preprocessor(dataclasses.replace(config, iir_stage="after_resample"))
    # Brain2Qwerty: 5 zero crossings of a minimum-phase FIR, which waits for no future sample;
    # the linear-phase one waits 0.1 s at 50 Hz (10 zero crossings: 0.2 s).
    assert fast.latency_s == 0.0
    linear = dataclasses.replace(b2q_config(1000.0), anti_alias="linear")
    assert Preprocessor(linear).latency_s == pytest.approx(0.1)
    ten = Preprocessor(dataclasses.replace(linear, resample_zeros=10))
    assert ten.latency_s == pytest.approx(0.2) and ten.iir_after_resample


def test_nan_and_inf_are_marked_contained_and_never_output():
    sfreq = 1000.0
    data, timestamps = signal(int(20 * sfreq), len(NAMES), sfreq, seed=4)
    clean = Preprocessor(b2q_config(sfreq)).process(data, timestamps)
    dirty = data.copy()
    dirty[8000:8500, 3] = np.nan  # 8.0-8.5 s
    dirty[12000, 0] = -np.inf  # 12.0 s
    pre = Preprocessor(b2q_config(sfreq))
    out = pre.process(dirty, timestamps)
    assert np.isfinite(out.data).all()
    t = out.timestamps - timestamps[0]
    fir_s = pre.resampler.n_taps / pre.resampler.up / sfreq  # the anti-alias FIR's extent
    memory_s = pre.iir.memory / pre.sfreq_out + fir_s + 0.02
    assert not out.valid[(t >= 8.0) & (t <= 8.5)].any()
    assert not out.valid[(t > 8.5) & (t < 8.5 + pre.iir.memory / pre.sfreq_out)].any()
    assert not out.valid[np.abs(t - 12.0) < 0.01].any()
    assert out.valid[t < 8.0 - pre.latency_s - 0.02].all()
    assert out.valid[(t > 8.5 + memory_s) & (t < 12.0 - pre.latency_s - 0.02)].all()
    assert out.valid[t > 12.0 + memory_s].all()
    # Once the filters have forgotten the bad stretch, the output is the clean output again.
    after = t > 14.0
    scale = np.abs(clean.data[after]).max()
    assert np.abs(out.data[after] - clean.data[after]).max() < 0.02 * scale


def test_stream_that_starts_with_nan_is_contained():
    sfreq = 1000.0
    data, timestamps = signal(int(5 * sfreq), len(NAMES), sfreq)
    data[:300] = np.nan
    pre = Preprocessor(b2q_config(sfreq))
    first = pre.process(data[:300], timestamps[:300])
    rest = pre.process(data[300:], timestamps[300:])
    assert np.isfinite(rest.data).all() and np.isfinite(first.data).all()
    assert not first.valid.any() and not rest.valid[:10].any()


def test_sos_memory_is_the_impulse_response_extent():
    sos = butter(4, [0.1, 20], "bandpass", fs=50.0, output="sos")
    memory = sos_memory(sos, 50.0)
    assert 0.5 * 50 < memory < 3 * 50  # about 1.2 s for 0.1-20 Hz
    assert sos_memory(butter(2, 10.0, fs=50.0, output="sos"), 50.0) < 10


def test_channels_are_picked_and_reordered_by_name():
    stream = ("x", "MEG001", "y", "MEG000")
    data = np.tile(np.arange(4.0), (20, 1))  # channel i holds the value i
    config = PreprocessConfig(sfreq_in=100.0, ch_names=("MEG000", "MEG001"))
    pre = Preprocessor(config, stream)
    assert pre.ch_names == ("MEG000", "MEG001")
    np.testing.assert_array_equal(pre.process(data, np.arange(20) / 100).data[0], [3.0, 1.0])
    with pytest.raises(
        ValueError, match=r"Missing channels.*\[MEG000\] \(1 of 2\).*has 2: \[x, MEG001\]"
    ):
        Preprocessor(config, ("x", "MEG001"))
    with pytest.raises(ValueError, match="expected 4 channels .* but got 3"):
        pre.process(np.zeros((5, 3)), np.arange(5) / 100)
    with pytest.raises(ValueError, match="'stream_channels'"):
        Preprocessor(PreprocessConfig(sfreq_in=100.0))


def test_timestamps_going_backwards_raise_and_keep_the_state():
    data, timestamps = signal(3000, len(NAMES), 1000.0)
    pre = Preprocessor(b2q_config(1000.0))
    reference = pre.process(data, timestamps)
    pre.reset()
    first = pre.process(data[:1000], timestamps[:1000])
    swapped = timestamps[1000:2000].copy()
    swapped[[10, 11]] = swapped[[11, 10]]
    with pytest.raises(ValueError, match="sample 11 of this chunk .* earlier"):
        pre.process(data[1000:2000], swapped)
    with pytest.raises(ValueError, match="sample 0 of this chunk .* earlier"):
        pre.process(data[1000:2000], timestamps[1000:2000] - 1.0)
    with pytest.raises(ValueError, match="must be finite"):
        pre.process(data[1000:1002], [np.nan, 2.0])
    rest = pre.process(data[1000:], timestamps[1000:])
    joined = np.concatenate([first.data, rest.data])
    np.testing.assert_allclose(joined, reference.data, rtol=0, atol=1e-6 * np.abs(joined).max())


def test_timestamp_jump_marks_the_following_samples_invalid():
    sfreq = 1000.0
    data, timestamps = signal(6000, len(NAMES), sfreq)
    timestamps[3000:] += 0.5  # half a second missing
    pre = Preprocessor(b2q_config(sfreq))
    out = pre.process(data, timestamps)
    before, after = timestamps[2999], timestamps[3000]
    around = (out.timestamps > before - pre.latency_s) & (out.timestamps < after + 0.5)
    assert around.sum() > 10 and not out.valid[around].any()
    assert out.valid[out.timestamps < before - pre.latency_s - 0.02].all()


def test_string_and_misshaped_data_are_rejected():
    pre = Preprocessor(b2q_config(1000.0))
    with pytest.raises(ValueError, match="numeric samples, got dtype <U.*marker"):
        pre.process(np.array([["key:a"] * 8]), [0.0])
    with pytest.raises(ValueError, match=r"expected shape \(n_times, n_channels\)"):
        pre.process(np.zeros(8), [0.0])
    with pytest.raises(ValueError, match="'timestamps'.*expected shape"):
        pre.process(np.zeros((3, 8)), [0.0, 1.0])


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"sfreq_in": 0.0}, "'sfreq_in'"),
        ({"h_freq": 600.0}, "'h_freq'.*Nyquist"),
        ({"l_freq": 30.0}, "'l_freq'.*below 'h_freq'"),
        ({"notch_freqs": (0.0,)}, "'notch_freqs'"),
        ({"filter_order": 2.5}, "'filter_order'"),
        ({"iir_stage": "sometimes"}, "'iir_stage'"),
        ({"clamp": -1.0}, "'clamp'"),
        ({"scaler_center": (0.0,) * 8}, "together"),
        ({"scaler_center": (0.0,) * 3, "scaler_scale": (1.0,) * 3}, "one value per channel"),
        ({"scaler_center": (0.0,) * 8, "scaler_scale": (0.0,) * 8}, "'scale' finite and > 0"),
        ({"sfreq_out": 50.0001234}, "Round 'sfreq_in'"),
        ({"ch_names": ("a", "a")}, "unique"),
        ({"max_gap_s": 0.0}, "'max_gap_s'"),
        ({"anti_alias": "iir"}, "'anti_alias'.*'linear', 'minphase'"),
    ],
)
def test_config_rejects_bad_values(changes, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(b2q_config(1000.0), **changes)


def test_config_round_trips_through_json():
    config = b2q_config(1017.25, clamp=5.0).with_scaler(np.arange(8) * 1e-12, np.full(8, 2e-13))
    text = json.dumps(config.to_dict())
    again = PreprocessConfig.from_dict(json.loads(text))
    assert again == config and isinstance(again.scaler_center, tuple)
    with pytest.raises(ValueError, match=r"unknown keys \['lowpass'\]"):
        PreprocessConfig.from_dict({**config.to_dict(), "lowpass": 3})


def test_config_without_anti_alias_keeps_the_linear_phase_filter():
    """Bundles written before the option (no key) decode exactly as before; new ones don't wait."""
    new = b2q_config(1000.0)
    assert new.anti_alias == "minphase"
    old_dict = new.to_dict()
    del old_dict["anti_alias"]
    old = PreprocessConfig.from_dict(old_dict)
    assert old.anti_alias == "linear"
    data, timestamps = signal(6000, len(NAMES), 1000.0)
    outputs = {}
    for label, config in (
        ("old", old),
        ("linear", dataclasses.replace(new, anti_alias="linear")),
        ("new", new),
    ):
        pre = Preprocessor(config)
        outputs[label] = pre.process(data, timestamps)
        assert pre.resampler.anti_alias == config.anti_alias
    assert Preprocessor(old).latency_s == pytest.approx(0.1)  # 5 zeros at 50 Hz
    assert Preprocessor(new).latency_s == 0.0
    np.testing.assert_array_equal(outputs["old"].data, outputs["linear"].data)
    np.testing.assert_array_equal(outputs["old"].timestamps, outputs["linear"].timestamps)
    # The causal filter emits the 0.1 s (5 output samples) the linear one still waits for.
    assert outputs["new"].data.shape[0] == outputs["old"].data.shape[0] + 5


def make_recording(sfreq, seconds, seed=5):
    data, timestamps = signal(int(seconds * sfreq), len(NAMES), sfreq, seed=seed)
    data[:, 2] *= 10  # channels with different scales
    spec = ChannelSpec(NAMES, ("mag",) * len(NAMES), ("T",) * len(NAMES))
    return Recording(data.astype(np.float32), timestamps, sfreq, spec)


def test_preprocess_recording_and_fit_scaler():
    recording = make_recording(1017.25, 20)
    config = fit_scaler(recording, PreprocessConfig.brain2qwerty(1017.25))
    assert config.ch_names == NAMES and len(config.scaler_scale) == len(NAMES)
    out = preprocess_recording(recording, config)
    chunked = preprocess_recording(recording, config, chunk_size=97)
    assert_same(chunked, out)
    q25, median, q75 = np.percentile(out.data[out.valid], [25, 50, 75], axis=0)
    np.testing.assert_allclose(median, 0, atol=1e-3)
    np.testing.assert_allclose(q75 - q25, 1, atol=1e-3)
    with pytest.raises(ValueError, match="recording runs at 1017.25 Hz .* expects 1000.0 Hz"):
        preprocess_recording(recording, b2q_config(1000.0))


def test_scaler_errors():
    with pytest.raises(RuntimeError, match=r"fit\(\) the RobustScaler"):
        RobustScaler().process(np.zeros((2, 2)), [0.0, 1.0])
    with pytest.raises(ValueError, match="1 valid samples"):
        RobustScaler().fit(np.zeros((3, 2)), [True, False, False])
    flat = RobustScaler().fit(np.ones((10, 2)))
    np.testing.assert_array_equal(flat.scale, [1.0, 1.0])
    assert RobustScaler.from_dict(json.loads(json.dumps(flat.to_dict()))).center.tolist() == [1, 1]


def test_real_4d_recording_at_1017_hz():
    """Real 4D/BTi MEG at 1017.25 Hz (non-integer ratio to 50 Hz), looped to 10 s."""
    path = Path(__file__).parents[1] / "data" / "real" / "exported4D_linux_raw.fif"
    raw = mne.io.read_raw_fif(path, preload=True, verbose=False)
    raw.pick("mag")
    one = raw.get_data().T
    data = np.concatenate([one] * int(np.ceil(10 * raw.info["sfreq"] / len(one))))
    sfreq = raw.info["sfreq"]
    spec = ChannelSpec(raw.ch_names, ("mag",) * len(raw.ch_names), ("T",) * len(raw.ch_names))
    recording = Recording(data, np.arange(len(data)) / sfreq, sfreq, spec)
    config = fit_scaler(recording, PreprocessConfig.brain2qwerty(sfreq))
    out = preprocess_recording(recording, config)
    chunked = preprocess_recording(recording, config, chunk_size=17)
    assert sfreq == 1017.25 and out.data.shape[1] == 248
    assert np.isfinite(out.data).all() and out.valid.all()
    assert_same(chunked, out)
    np.testing.assert_allclose(np.diff(out.timestamps), 0.02, rtol=1e-9)


@pytest.mark.parametrize("iir_stage", ["before_resample", "after_resample"])
def test_float32_input_gives_exactly_the_float64_input_result(iir_stage):
    """Streams carry float32; it reaches the resampler without a float64 copy, same output."""
    data, timestamps = signal(6000, len(NAMES), 1000.0, seed=4)
    data = data.astype(np.float32)
    data[2000:2010, 3] = np.nan
    config = b2q_config(
        1000.0, iir_stage=iir_stage, scaler_center=(1e-11,) * 8, scaler_scale=(2e-13,) * 8
    )
    results = []
    for dtype in (np.float32, np.float64):
        pre = Preprocessor(config)
        parts = [pre.process(data[i : i + 250].astype(dtype), timestamps[i : i + 250])
                 for i in range(0, len(data), 250)]  # fmt: skip
        results.append([np.concatenate(column) for column in zip(*parts)])
    for single, double in zip(*results):
        np.testing.assert_array_equal(single, double)
