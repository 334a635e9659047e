"""A local pretrained speech model as the speech decoder's audio features.

The hub cannot be reached here, so the checkpoint is a real ``transformers`` wav2vec2 model of
tiny size with random weights, saved to disk with ``save_pretrained`` exactly as a lab keeps a
downloaded wav2vec2: it stands in for the pretrained weights, not for the code path (config,
weights and preprocessor files are read by ``transformers`` from the folder, offline).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor
from transformers import Wav2Vec2Model as HFWav2Vec2

from acquisition.simulator import Simulator
from bci_app.cli.main import build_parser
from bci_app.decoders.bundle import load_bundle
from bci_app.decoders.manifest import thaw
from bci_app.speech.audio import AUDIO_RATE, MelConfig, log_mel
from bci_app.speech.decoder import load_candidates
from bci_app.speech.evaluate import evaluate_speech_bundle
from bci_app.speech.extractors import (
    LogMelFeatures,
    audio_features_spec,
    features_from_spec,
    make_features,
)
from bci_app.speech.pretrained import PretrainedAudioFeatures


def save_tiny_wav2vec2(folder, seed: int = 0):
    """A 2-layer wav2vec2 (hidden 32) with its feature extractor config, saved to ``folder``."""
    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        vocab_size=8,
    )
    HFWav2Vec2(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=AUDIO_RATE, do_normalize=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("models") / "wav2vec2-tiny")


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (envelope * (np.sin(2 * np.pi * 220 * t) + 0.3 * rng.normal(size=t.size))).astype(
        np.float32
    )


def test_frames_are_the_models_hidden_states_centred_on_the_frame_times(model_dir):
    features = PretrainedAudioFeatures(model_dir, layers=[1, 2], frame_rate=120.0)
    assert (features.hop, features.field, features.n_features) == (320, 400, 32)
    assert features.layers == [1, 2] and features.sampling_rate == AUDIO_RATE
    audio = _speechlike(5.0)
    start, n = 1.0, 360
    out = features.segments(audio, np.array([start, start + 0.1]), n)
    assert out.shape == (2, 32, n) and out.dtype == np.float32 and np.isfinite(out).all()
    # the model run by hand on the clip that starts half a receptive field before `start`
    first = round(start * AUDIO_RATE) - 200
    n_model = int(np.ceil((n - 1) / 120 * AUDIO_RATE / 320)) + 1
    clip = torch.from_numpy(audio[first : first + (n_model - 1) * 320 + 400])[None]
    clip = (clip - clip.mean()) / torch.sqrt(clip.var() + 1e-7)
    with torch.no_grad():
        states = features.model(clip, output_hidden_states=True).hidden_states
    direct = ((states[1] + states[2]) / 2)[0].numpy()  # (n_model, 32) at 50 Hz
    # 120 Hz frame k lies on model frame 5k/12: every 12th frame is a model frame exactly
    k = np.arange(0, n, 12)
    np.testing.assert_allclose(out[0][:, k], direct[5 * k // 12].T, atol=1e-4)
    # in between: linear interpolation of the neighbouring model frames
    np.testing.assert_allclose(out[0][:, 6], (direct[2] + direct[3]).T / 2, atol=1e-4)
    # default layers: the last 4 transformer layers, here both
    assert PretrainedAudioFeatures(model_dir).layers == [1, 2]


def test_log_mel_extractor_is_the_log_mel_of_before():
    config = MelConfig(n_mels=20)
    audio = _speechlike(4.0)
    out = LogMelFeatures(config).segments(audio, np.array([-0.5, 1.0]), 240)
    full = log_mel(audio, config)
    np.testing.assert_array_equal(out[1], full[:, 120:360])
    assert (out[0][:, :60] == np.float32(-10.0)).all()  # before the audio: silence
    np.testing.assert_array_equal(out[0][:, 60:], full[:, :180])
    spec = audio_features_spec(None, config.to_dict())  # bundles made before audio_features
    assert features_from_spec(spec).config == config


def test_the_extractors_load_torch_only_for_a_pretrained_model(model_dir):
    code = (
        "import sys\n"
        "from bci_app.speech.extractors import make_features\n"
        "before = 'torch' in sys.modules\n"
        f"features = make_features(120.0, 40, {str(model_dir)!r})\n"
        "print(before, 'torch' in sys.modules, type(features).__name__, features.n_features)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "PretrainedAudioFeatures", "32"]


def test_bad_models_and_layers_are_clear_errors(model_dir, tmp_path):
    with pytest.raises(ValueError, match="not a model folder with a config.json"):
        PretrainedAudioFeatures(tmp_path)
    bert = tmp_path / "bert"
    BertModel(
        BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    ).save_pretrained(bert)
    with pytest.raises(ValueError, match="no wav2vec2-style convolutional front end"):
        PretrainedAudioFeatures(bert)
    broken = shutil.copytree(model_dir, tmp_path / "broken")
    with open(broken / "model.safetensors", "r+b") as handle:  # a copy cut short
        handle.truncate(5000)
    with pytest.raises(ValueError, match="cannot be loaded.*incomplete or corrupt"):
        PretrainedAudioFeatures(broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="Invalid value for 'audio_model'.*not a valid JSON"):
        PretrainedAudioFeatures(broken)
    with pytest.raises(ValueError, match=r"'audio_layers': \[5\] out of range.*0\.\.2"):
        PretrainedAudioFeatures(model_dir, layers=[5])
    with pytest.raises(ValueError, match="give the model with --audio-model"):
        make_features(120.0, 40, None, layers=[1])
    spec = PretrainedAudioFeatures(model_dir).to_dict()
    with pytest.raises(ValueError, match="which is not there.*--audio-model DIR"):
        features_from_spec({**spec, "path": str(tmp_path / "gone")})
    other = save_tiny_wav2vec2(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match="not the one this bundle was trained with"):
        features_from_spec(spec, audio_model=other)
    with pytest.raises(ValueError, match="log-mel spectrograms, not a pretrained model"):
        features_from_spec(audio_features_spec(None, MelConfig().to_dict()), model_dir)
    with pytest.raises(ValueError, match="unknown audio feature kind 'whisper'"):
        features_from_spec({"kind": "whisper"})
    with pytest.raises(ValueError, match="records no audio features"):
        audio_features_spec(None, None)


@pytest.mark.slow
def test_train_evaluate_extend_and_decode_with_a_local_wav2vec2(model_dir, tmp_path):
    from models.training import train_speech

    out = tmp_path / "bundle"
    recording = Simulator("eeg", "listening", snr=3.0, seed=21).generate(45.0)
    metrics = train_speech(
        [recording],
        out,
        epochs=2,
        batch_size=16,
        progress=False,
        audio_model=model_dir,
        audio_layers=[-1],
    )
    bundle = load_bundle(out)
    spec = thaw(bundle.manifest.audio_features)
    assert spec["kind"] == "pretrained" and spec["path"] == str(model_dir.resolve())
    assert spec["layers"] == [2] and spec["n_features"] == 32 and len(spec["fingerprint"]) == 64
    assert bundle.manifest.model_config["n_mels"] == 32  # the audio graph reads 32 features
    assert metrics["test_n_candidates"] >= 3

    # the model moved: evaluate and extend the bundle from its new place
    moved = shutil.move(str(model_dir), str(tmp_path / "moved"))
    try:
        held_out = Simulator("eeg", "listening", snr=3.0, seed=22).generate(20.0)
        with pytest.raises(ValueError, match="which is not there"):
            evaluate_speech_bundle(bundle, [held_out])
        report = evaluate_speech_bundle(bundle, [held_out], audio_model=moved)
        segments = report["recordings"][0]["segments"]
        assert segments["n_candidates"] == segments["n_windows"] >= 3
        texts, _ = load_candidates(bundle)
        args = build_parser().parse_args(
            ["candidates", "add", str(out), "zygote", "--audio-model", moved]
        )
        assert args.func(args) == 0
        after, embeddings = load_candidates(load_bundle(out))
        assert after == [*texts, "zygote"] and np.isfinite(embeddings).all()
    finally:
        shutil.move(moved, str(model_dir))

    # live decoding reads the bundle's candidate embeddings: no torch, no transformers
    code = (
        "import sys, numpy as np\n"
        "from bci_app.decoders.bundle import load_bundle\n"
        "from bci_app.speech.decoder import SpeechDecoder\n"
        f"d = SpeechDecoder(load_bundle({str(out)!r}), provider='cpu')\n"
        "w = d.embed(np.zeros((1, d.n_channels, d.n_times), np.float32))\n"
        "print(w.shape, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["False", "False"]


def test_cli_takes_the_audio_model_options(model_dir):
    args = build_parser().parse_args(
        [
            "train",
            "speech",
            "rec.xdf",
            "--out",
            "b",
            "--audio-model",
            str(model_dir),
            "--audio-layers",
            "-2",
            "-1",
        ]
    )
    assert args.audio_model == str(model_dir) and args.audio_layers == [-2, -1]
    args = build_parser().parse_args(["evaluate", "b", "rec.xdf", "--audio-model", "m"])
    assert args.audio_model == "m"
    assert json.loads(json.dumps(PretrainedAudioFeatures(model_dir).to_dict()))["hop"] == 320
