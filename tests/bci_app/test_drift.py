"""Drift re-centering: running robust statistics that follow the signal, off by default."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bci_app.processing.preprocessing import PreprocessConfig, Preprocessor
from bci_app.processing.recentering import RecenterConfig, RecenteringScaler
from bci_app.processing.stages import RobustScaler

SFREQ = 120.0


def _signal(seconds: float, n_channels: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(int(seconds * SFREQ), n_channels))


def _push(stage, data: np.ndarray, chunk: int) -> np.ndarray:
    times = np.arange(len(data)) / SFREQ
    parts = [
        stage.process(data[i : i + chunk], times[i : i + chunk]).data
        for i in range(0, len(data), chunk)
    ]
    return np.concatenate(parts)


def test_statistics_follow_an_injected_gain_and_offset_change():
    config = RecenterConfig(window_s=30.0, update_s=2.0, min_history_s=10.0, history_hz=30.0)
    data = _signal(120.0)
    fitted = RobustScaler().fit(data[: int(30 * SFREQ)])
    gain, offset = np.array([3.0, 0.5, 1.0, 2.0]), np.array([5.0, -2.0, 0.0, 1.0])
    half = len(data) // 2
    drifted = data.copy()
    drifted[half:] = drifted[half:] * gain + offset  # a new "day" from 60 s on
    scaler = RecenteringScaler(fitted.center, fitted.scale, SFREQ, config)
    out = _push(scaler, drifted, 37)
    assert scaler.n_updates == len(range(10, 121, 2))  # every 2 s once 10 s are held
    # the last 30 s of history are all after the change: the statistics have followed it
    np.testing.assert_allclose(scaler.center, offset, atol=0.5)
    normal_iqr = 1.349  # IQR of a unit normal
    np.testing.assert_allclose(scaler.scale, gain * normal_iqr, rtol=0.15)
    tail = out[-int(20 * SFREQ) :]
    iqr = np.subtract(*np.percentile(tail, [75, 25], axis=0))
    np.testing.assert_allclose(iqr, 1.0, rtol=0.2)
    fixed_tail = (drifted[-int(20 * SFREQ) :] - fitted.center) / fitted.scale
    fixed_iqr = np.subtract(*np.percentile(fixed_tail, [75, 25], axis=0))
    np.testing.assert_allclose(fixed_iqr, gain, rtol=0.2)  # fixed statistics stay wrong


def test_output_does_not_depend_on_chunking_and_reset_starts_over():
    config = RecenterConfig(window_s=20.0, update_s=1.0, min_history_s=5.0, history_hz=30.0)
    data = _signal(40.0, seed=1) * np.linspace(1, 3, int(40 * SFREQ))[:, None]
    scaler = RecenteringScaler(np.zeros(4), np.ones(4), SFREQ, config)
    one_shot = _push(scaler, data, len(data))
    scaler.reset()
    np.testing.assert_array_equal(_push(scaler, data, 1), one_shot)
    scaler.reset()
    np.testing.assert_array_equal(_push(scaler, data, 233), one_shot)
    assert scaler.n_updates == len(range(5, 41))  # every second once 5 s are held


def test_default_off_and_unchanged_until_the_first_update():
    names = [f"ch{i}" for i in range(4)]
    base = PreprocessConfig.speech(SFREQ, names).with_scaler([0.1] * 4, [2.0] * 4)
    data = _signal(20.0, seed=2)
    times = np.arange(len(data)) / SFREQ
    fixed = Preprocessor(base)
    assert base.recenter is None and fixed.recentering is None  # default: fixed statistics
    assert any(type(stage) is RobustScaler for stage in fixed.stages)
    expected = fixed.process(data, times).data
    recenter = RecenterConfig(window_s=60.0, min_history_s=30.0)
    config = base.with_recentering(recenter)
    assert config.recenter == recenter and base.recenter is None  # a copy: the config that runs
    adaptive = Preprocessor(config)
    stage = adaptive.recentering
    assert stage in adaptive.stages and not any(type(s) is RobustScaler for s in adaptive.stages)
    assert stage.config == recenter and stage.decimate == round(SFREQ / recenter.history_hz)
    np.testing.assert_array_equal(adaptive.process(data, times).data, expected)
    assert stage.n_updates == 0  # 20 s < min_history_s: still the fitted statistics
    assert base.with_recentering().recenter == RecenterConfig()  # default settings


def test_recentering_is_part_of_the_stored_config():
    names = [f"ch{i}" for i in range(4)]
    recenter = RecenterConfig(window_s=40.0, update_s=2.0, min_history_s=10.0)
    config = PreprocessConfig(SFREQ, tuple(names)).with_scaler([0.0] * 4, [1.0] * 4)
    config = config.with_recentering(recenter)  # no filter: the scaler is all that runs
    text = json.dumps(config.to_dict())
    again = PreprocessConfig.from_dict(json.loads(text))
    assert again == config and again.recenter == recenter
    assert PreprocessConfig.from_dict({**config.to_dict(), "recenter": None}).recenter is None
    with pytest.raises(ValueError, match=r"re-centering config: unknown keys \['window'\]"):
        PreprocessConfig.from_dict({**config.to_dict(), "recenter": {"window": 3.0}})
    data = _signal(50.0, seed=3)
    times = np.arange(len(data)) / SFREQ
    direct = RecenteringScaler(np.zeros(4), np.ones(4), SFREQ, recenter)
    out = Preprocessor(again).process(data, times).data
    np.testing.assert_allclose(out, direct.process(data, times).data.astype(np.float32), atol=0)
    assert direct.n_updates > 0


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="'update_s': 0.*positive number of seconds"):
        RecenterConfig(update_s=0)
    with pytest.raises(ValueError, match="'min_history_s': 200.0 s is longer than 'window_s'"):
        RecenterConfig(window_s=100.0, min_history_s=200.0)
    unscaled = PreprocessConfig.speech(SFREQ, ["a", "b"])
    with pytest.raises(ValueError, match="'recenter'.*no fitted robust scaler to re-centre"):
        unscaled.with_recentering()
    scaler = RecenteringScaler(np.zeros(2), np.ones(2), SFREQ, RecenterConfig())
    with pytest.raises(ValueError, match="fitted on 2 channels but got 3"):
        scaler.process(np.zeros((5, 3)), np.arange(5.0))
