"""Speech decoder model and data: shapes, configs, 3D attention, CLIP loss, export, datasets."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from scipy.io import wavfile

from acquisition.simulator import Simulator
from acquisition.simulator.listening import write_stimulus_audio
from bci_app.speech.audio import read_wav
from models.export import DEFAULT_ATOL, export_model
from models.layers import SpatialAttention
from models.registry import MODELS, build_model
from models.speech.data import build_speech_dataset, window_spec
from models.speech.layers import SpatialAttention3D, positions_to_unit_cube
from models.speech.model import SpeechClip, SpeechClipConfig, clip_loss, with_spatial_dims

TINY = dict(
    SpeechClipConfig.presets["small"],
    spatial_channels=8,
    hidden=16,
    embed_dim=16,
    n_mels=8,
    audio_hidden=16,
    fourier_harmonics=4,
    fourier_harmonics_3d=3,
)


def test_registered_and_presets_round_trip():
    assert "speech_clip" in MODELS
    for name in ("small", "paper"):
        config = SpeechClipConfig.named(name)
        assert SpeechClipConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
        assert config.n_times == 360 and config.n_conv_layers == 10
    with pytest.raises(ValueError, match="spatial_dims"):
        SpeechClipConfig(spatial_dims=4)
    with pytest.raises(ValueError, match="Invalid keys"):
        SpeechClipConfig.from_dict({"d_model": 3})
    with pytest.raises(ValueError, match="'hidden': expected int, got 12.5"):
        SpeechClipConfig(hidden=12.5)
    assert SpeechClipConfig(sfreq=100).to_dict()["sfreq"] == 100.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        SpeechClipConfig().hidden = 3


@pytest.mark.parametrize("dims", [2, 3])
def test_shapes_2d_and_3d_positions(dims):
    config = dataclasses.replace(SpeechClipConfig.from_dict(TINY), spatial_dims=dims)
    positions = np.random.default_rng(0).normal(size=(6, 3))
    model = build_model("speech_clip", config, 6, positions, 2)
    n_glu = sum(type(m).__name__ == "GLUConv" for m in model.modules())
    assert n_glu == 5  # one after every second of the 10 dilated layers
    x, subject = torch.randn(3, 6, 360), torch.tensor([0, 1, 0])
    assert model(x, subject).shape == (3, 16)
    assert model.audio(torch.randn(3, 8, 360)).shape == (3, 16)
    kind = "SpatialAttention3D" if dims == 3 else "SpatialAttention"
    assert type(model.brain.spatial).__name__ == kind
    with pytest.raises(ValueError, match="n_times=300 different"):
        model(torch.randn(1, 6, 300), torch.tensor([0]))
    with pytest.raises(ValueError, match="subject"):
        model(x, torch.tensor([0, 5, 0]))


def test_3d_attention_is_a_spatial_attention_over_the_cube():
    cube = positions_to_unit_cube(np.random.default_rng(0).normal(size=(6, 3)), 6)
    attention = SpatialAttention3D(cube, 4, 2, 3, 0.4, 1)
    assert isinstance(attention, SpatialAttention)
    assert attention.sorted_features.shape == (6, 2 * 3**3)  # depth has its own harmonics
    assert [name for name, _ in attention.named_parameters()] == ["weight"]
    x, subject = torch.randn(3, 6, 5), torch.tensor([0, 1, 1])
    torch.testing.assert_close(attention.eval().frozen()(x, subject), attention(x, subject))
    torch.manual_seed(1)
    dropped = attention.dropout_mask(200)
    torch.manual_seed(1)
    centres = torch.rand(200, 1, 3)  # the mask's centres are drawn in the cube
    near = torch.linalg.vector_norm(cube[None] - centres, dim=-1) < 0.4
    assert torch.equal(dropped, near & ~near.all(dim=1, keepdim=True))
    with pytest.raises(ValueError, match=r"'positions_3d': expected \(n_chans, 3\)"):
        SpatialAttention3D(cube[:, :2], 4, 2, 3, 0.4, 1)


def test_intracranial_channels_get_3d_attention():
    config = SpeechClipConfig.named("small")
    assert with_spatial_dims(config, ["seeg"] * 4).spatial_dims == 3
    assert with_spatial_dims(config, ["eeg"] * 4).spatial_dims == 2


def test_clip_loss_decreases_when_training():
    config = SpeechClipConfig.from_dict(
        {**TINY, "conv_dropout": 0.0, "spatial_dropout_radius": 0.0}
    )
    model = SpeechClip(6, np.random.default_rng(1).uniform(size=(6, 2)), 1, config)
    x, mel = torch.randn(8, 6, 360), torch.randn(8, 8, 360)
    subject = torch.zeros(8, dtype=torch.long)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model.loss(x, subject, mel)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[0] == pytest.approx(np.log(8), abs=0.5)  # chance: log(batch)
    assert np.mean(losses[-5:]) < 0.5 * losses[0]
    perfect = torch.eye(4) * 10
    assert float(clip_loss(perfect, perfect, torch.tensor(np.log(10.0)))) < 0.01


@pytest.mark.slow
def test_export_brain_and_audio_graphs_match_torch(tmp_path):
    config = dataclasses.replace(SpeechClipConfig.from_dict(TINY), spatial_dims=3)
    model = SpeechClip(6, np.random.default_rng(0).normal(size=(6, 3)), 2, config).eval()
    reports = export_model(model, tmp_path)
    assert set(reports) == {"brain", "audio"}
    assert all(r["max_abs_diff"] <= DEFAULT_ATOL for r in reports.values())
    x = np.random.default_rng(2).normal(size=(1, 6, 360)).astype(np.float32)
    session = ort.InferenceSession(reports["brain"]["path"], providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x, "subject": np.array([1])})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x), torch.tensor([1])).numpy()
    np.testing.assert_allclose(got, want, atol=DEFAULT_ATOL)


def test_dataset_pairs_brain_windows_with_heard_audio(listening_session, tmp_path):
    config = SpeechClipConfig.named("small")
    data = build_speech_dataset([listening_session], config)
    onsets = (
        np.array([m.timestamp for m in listening_session.markers_of("word")])
        - listening_session.timestamps[0]
    )
    n_fit = int(((onsets - 0.35 >= 0) & (onsets + 2.65 < listening_session.duration - 0.3)).sum())
    assert data.brain.shape[1:] == (64, 360) and data.mel.shape[1:] == (40, 360)
    assert (data.kind == "word").sum() >= n_fit  # every word whose 3 s window fits
    assert np.abs(data.brain).max() <= 20.0
    # word windows: audio starts 0.5 s before the onset -> silence first, speech at 60 frames
    word = np.flatnonzero(data.kind == "word")
    loud = data.mel[word].max(axis=1)
    assert np.median(loud[:, 62:90]) > np.median(loud[:, :55]) + 1.0
    spec = window_spec(config)
    assert spec["tmin"] == pytest.approx(-0.35) and spec["baseline"][1] == pytest.approx(0.15)
    # the same audio from the stimulus folder a CLI user has
    write_stimulus_audio(listening_session.meta["ground_truth"], tmp_path / "stim")
    plain = dataclasses.replace(listening_session, meta={})
    from_files = build_speech_dataset([plain], config, audio_dirs=[tmp_path / "stim"])
    diff = np.abs(from_files.mel - data.mel)  # 16-bit WAV rounding shows only in quiet frames
    assert np.percentile(diff, 99) < 0.05 and from_files.mel.shape == data.mel.shape
    split = data.split()
    assert all(len(split[k]["word"]) for k in ("train", "val", "test"))


def test_bad_audio_input_errors(listening_session, tmp_path):
    config = SpeechClipConfig.named("small")
    plain = dataclasses.replace(listening_session, meta={})
    with pytest.raises(FileNotFoundError, match="No stimulus audio"):
        build_speech_dataset([plain], config)
    words = tmp_path / "words"
    words.mkdir()
    with pytest.raises(ValueError, match="Word marker with no audio: 'word:"):
        build_speech_dataset([plain], config, audio_dirs=[tmp_path])
    (tmp_path / "bad.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(ValueError, match="Unreadable audio file"):
        read_wav(tmp_path / "bad.wav")
    with pytest.raises(FileNotFoundError, match="Audio file not found"):
        read_wav(tmp_path / "missing.wav")
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(22050) / 22050) * 32767).astype(np.int16)
    wavfile.write(tmp_path / "tone.wav", 22050, tone)
    assert read_wav(tmp_path / "tone.wav").shape == (16000,)  # resampled to 16 kHz
    stim = tmp_path / "stim"
    write_stimulus_audio(listening_session.meta["ground_truth"], stim)
    listing = json.loads((stim / "stimuli.json").read_text())
    listing["sentences"] = listing["sentences"][:1]
    (stim / "stimuli.json").write_text(json.dumps(listing))
    with pytest.raises(ValueError, match="Word markers with no audio"):
        build_speech_dataset([plain], config, audio_dirs=[stim])
    typing = Simulator("eeg", "typing", seed=0).generate(5.0)
    with pytest.raises(ValueError, match="no word-onset markers"):
        build_speech_dataset([typing], config, audio_dirs=[stim])
