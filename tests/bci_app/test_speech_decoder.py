"""Speech decoder run time: log-mel features, candidates, bundle checks, live API, evaluation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from acquisition.simulator import Simulator
from bci_app.cli.evaluate import add_evaluate_command
from bci_app.cli.speech import add_candidates_command
from bci_app.cli.train import add_train_export_commands
from bci_app.decoders.bundle import load_bundle, save_bundle
from bci_app.processing.windowing import epochs_from_recording
from bci_app.speech.audio import MelConfig, log_mel, mel_filterbank
from bci_app.speech.decoder import (
    SpeechDecoder,
    check_candidates,
    load_candidates,
    make_windower,
    preprocess_config,
    retrieval_ranks,
)
from bci_app.speech.evaluate import evaluate_speech_bundle
from bci_app.typing.keystroke import open_decoder

TYPING_BUNDLE = Path(__file__).parents[2] / "bci_app" / "data" / "bundles" / "typing-meg-small"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bci-app")
    sub = parser.add_subparsers(dest="command")
    add_train_export_commands(sub)
    add_evaluate_command(sub)
    add_candidates_command(sub)
    return parser


def test_log_mel_frames_are_centred_at_the_frame_rate():
    config = MelConfig(n_mels=20)
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    mel = log_mel(tone, config)
    assert mel.shape == (20, 120)
    centres = mel_filterbank(config).argmax(axis=1)
    peak_band = int(np.argmax(mel[:, 60]))
    freqs = np.fft.rfftfreq(config.n_fft, 1 / 16000)
    assert abs(freqs[centres[peak_band]] - 1000) < 200
    click = np.zeros(16000, np.float32)
    click[8000] = 1.0  # at 0.5 s: frame 60 of a segment starting at 0, 120 of one at -0.5 s
    assert int(np.argmax(log_mel(click, config).max(axis=0))) == 60
    assert int(np.argmax(log_mel(click, config, 240, start_s=-0.5).max(axis=0))) == 120
    with pytest.raises(ValueError, match="mono"):
        log_mel(np.zeros((10, 2)), config)


def test_retrieval_ranks_and_candidate_checks():
    embeddings = np.eye(4, dtype=np.float32)
    assert retrieval_ranks(embeddings, embeddings).tolist() == [0, 0, 0, 0]
    assert retrieval_ranks(embeddings, embeddings[[1, 0, 2, 3]]).tolist() == [1, 1, 0, 0]
    with pytest.raises(ValueError, match="duplicate candidates \\['go'\\]"):
        check_candidates(["go", "stop", "go"], np.ones((3, 2)))
    with pytest.raises(ValueError, match="2 texts but embeddings"):
        check_candidates(["go", "stop"], np.ones((3, 2)))


def test_typing_bundle_where_speech_is_needed_and_reverse(tmp_path):
    with pytest.raises(ValueError, match="is a 'typing' decoder.*task 'speech'"):
        SpeechDecoder(TYPING_BUNDLE)
    with pytest.raises(ValueError, match="is a 'typing' decoder.*task 'speech'"):
        evaluate_speech_bundle(TYPING_BUNDLE, ["unused.xdf"])
    manifest = {"name": "speech-x", "task": "speech", "stream": {"sfreq": 1000.0, "channels": {}}}
    speech = save_bundle(tmp_path / "speech", manifest, {})
    with pytest.raises(ValueError, match="is a 'speech' decoder.*task 'typing'"):
        open_decoder(speech)


def test_cli_parses_train_speech_and_candidates():
    args = _parser().parse_args(["train", "speech", "a.xdf", "--audio", "stim", "--out", "b"])
    assert args.func.__name__ == "run_speech_train" and args.audio == ["stim"]
    args = _parser().parse_args(["candidates", "add", "bundle", "hello", "x.wav"])
    assert args.items == ["hello", "x.wav"]
    args = _parser().parse_args(["evaluate", "bundle", "rec.xdf", "--audio", "stim"])
    assert args.audio == ["stim"]


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory):
    """A small speech decoder trained on 80 s of simulated MEG listening (magnetometers)."""
    from models.training import train_speech

    out = tmp_path_factory.mktemp("speech") / "bundle"
    recording = Simulator("meg", "listening", snr=3.0, seed=11).generate(80.0)
    metrics = train_speech(
        [recording], out, epochs=10, batch_size=16, picks=["mag"], progress=False
    )
    return load_bundle(out), metrics


@pytest.mark.slow
def test_trained_decoder_retrieves_heard_segments_above_chance(trained_bundle):
    bundle, metrics = trained_bundle
    assert bundle.task == "speech" and set(bundle.manifest.graphs) == {"brain", "audio"}
    assert (Path(metrics["paths"]["report"]).parent / "rank_histogram.png").is_file()
    # held-out sentences of the session (split by sentence): their own audio segment ranks in
    # the top 10 among all held-out segments far more often than chance
    assert metrics["test_n_candidates"] >= 10
    assert metrics["test_top10"] > 1.5 * metrics["test_chance_top10"]
    assert max(metrics["export_max_abs_diff"].values()) <= 1e-4  # ORT graphs == torch model
    held_out = Simulator("meg", "listening", snr=3.0, seed=12).generate(30.0)
    report = evaluate_speech_bundle(bundle, [held_out])
    segments = report["recordings"][0]["segments"]
    assert segments["n_candidates"] == segments["n_windows"] >= 10
    assert segments["chance_top10"] == pytest.approx(10 / segments["n_candidates"])
    assert 0 <= report["recordings"][0]["candidates"]["coverage"] <= 1
    # the live API on the same windows: one candidates event per word window
    decoder = SpeechDecoder(bundle, top_k=5)
    windows = epochs_from_recording(held_out, preprocess_config(bundle), make_windower(bundle))
    event = decoder.add_window(windows[0])
    assert event.kind == "candidates" and len(event.candidates) == 5
    assert event.hypothesis == event.candidates[0][0]
    assert sum(p for _, p in event.candidates) <= 1.0 + 1e-6


@pytest.mark.slow
def test_candidates_add_synthesizes_words_and_refuses_duplicates(trained_bundle, tmp_path):
    import shutil

    bundle, _ = trained_bundle
    copy = tmp_path / "bundle"
    shutil.copytree(bundle.path, copy)
    texts, _ = load_candidates(load_bundle(copy))
    args = _parser().parse_args(["candidates", "add", str(copy), "zygote", "quixotic"])
    assert args.func(args) == 0
    after, embeddings = load_candidates(load_bundle(copy))
    assert after == [*texts, "zygote", "quixotic"]
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    args = _parser().parse_args(["candidates", "add", str(copy), "zygote"])
    with pytest.raises(ValueError, match="already in the bundle"):
        args.func(args)
    assert json.loads((copy / "candidates.json").read_text())["texts"] == after


def test_candidates_add_names_a_missing_or_unreadable_wav(tmp_path):
    import shutil

    from bci_app.decoders.shipped import SPEECH_BUNDLE

    copy = tmp_path / "bundle"
    shutil.copytree(SPEECH_BUNDLE, copy)
    before = (copy / "candidates.npz").read_bytes()
    args = _parser().parse_args(["candidates", "add", str(copy), str(tmp_path / "gone.wav")])
    with pytest.raises(FileNotFoundError, match="Candidate audio file not found: .*gone.wav"):
        args.func(args)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"\x00\x01not a wav file" * 50)
    args = _parser().parse_args(["candidates", "add", str(copy), str(junk)])
    with pytest.raises(ValueError, match=r"Unreadable audio file .*junk.wav.*supported\. Give"):
        args.func(args)
    assert (copy / "candidates.npz").read_bytes() == before  # nothing written
