"""Training typing decoders: loss, checkpoints and resume, the bundle it writes, the CLI."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers import typing_data as td

from acquisition.xdf import write_recording
from bci_app.cli.train import add_train_export_commands
from bci_app.decoders.bundle import load_bundle
from bci_app.lm.model import CharNgramLM
from bci_app.processing.preprocessing import PreprocessConfig
from models.bundle_export import export_checkpoint, model_from_checkpoint
from models.checkpoint import (
    discard_epochs_after,
    epoch_path,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
)
from models.data import build_typing_dataset
from models.train import train_typing


@pytest.fixture(scope="module")
def session():
    return td.typing_session()


def _train(recordings, out, **kwargs):
    settings = {"epochs": 3, "batch_size": 2, "export": False, "progress": False, "device": "cpu"}
    return train_typing(recordings, out, **{**settings, **kwargs})


def _history(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoint.pt")["history"]


@pytest.fixture(scope="module")
def full_run(session, tmp_path_factory):
    """Three epochs on the tiny session, keeping the two newest per-epoch checkpoints."""
    out = tmp_path_factory.mktemp("train") / "full"
    return out, _train([session], out, epochs=3, keep_checkpoints=2)


def test_training_reduces_the_loss_and_writes_checkpoints_and_report(full_run, session):
    out, metrics = full_run
    history = _history(out)
    assert history["train_loss"][-1] < 0.8 * history["train_loss"][0]
    assert metrics["epochs_run"] == len(history["val_cer"]) == 3
    assert 1 <= metrics["best_epoch"] <= 3 and 0.0 <= metrics["test_cer"]
    assert metrics["n_windows"] == sum(len(t[1]) for t in td.ground_truth_keys(session))
    assert metrics["n_dropped_invalid"] == 0 and "test_cer_conv" in metrics
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "epoch_0002.pt",
        "epoch_0003.pt",
    ]
    report = Path(metrics["paths"]["report"])
    assert {p.name for p in report.parent.iterdir()} == {
        "report.html",
        "learning_curves.png",
        "confusion.png",
        "sentence_cer.png",
    }
    page = report.read_text()
    assert page.count("data:image/png;base64,") == 3 and "Test sentences" in page
    assert not (out / "manifest.json").exists()  # export=False


def test_resume_continues_from_the_saved_epoch(tmp_path, full_run, session, caplog):
    full, _ = full_run
    with caplog.at_level(logging.INFO, logger="models.train"):
        resume = full / "checkpoints" / "epoch_0002.pt"
        _train([session], tmp_path / "resumed", resume=resume, epochs=None)
    assert "Resuming after epoch 2 of 3" in caplog.text
    kept = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    assert kept == ["epoch_0003.pt"]
    before, after = _history(full), _history(tmp_path / "resumed")
    for key in ("train_loss", "val_loss", "val_cer", "lr"):
        np.testing.assert_allclose(after[key], before[key], rtol=1e-5, err_msg=key)
    # a folder resumes from its newest checkpoint
    assert (
        resolve_resume(full)
        == resolve_resume(full / "checkpoints")
        == resume.with_name("epoch_0003.pt")
    )


def test_resume_refuses_other_settings_or_other_data(tmp_path, full_run, session):
    checkpoint = full_run[0] / "checkpoint.pt"
    with pytest.raises(ValueError, match=r"epochs=5 \(checkpoint: 3\) differ from the checkpoint"):
        _train([session], tmp_path / "x", resume=checkpoint, epochs=5)
    with pytest.raises(ValueError, match=r"trained on other data \(\d+ sentences"):
        _train([td.typing_session(seed=2)], tmp_path / "x", resume=checkpoint, epochs=None)


def test_corrupt_or_foreign_checkpoints_are_refused(tmp_path, full_run, session):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(ValueError, match=r"Corrupt or foreign checkpoint .*garbage\.pt"):
        load_checkpoint(garbage)
    whole = (full_run[0] / "checkpoint.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"Corrupt or foreign checkpoint .*cut\.pt"):
        load_checkpoint(cut)
    pickled = tmp_path / "pickled.pt"
    torch.save(argparse.Namespace(payload=1), pickled)
    with pytest.raises(ValueError, match=r"weights_only=True.*arbitrary unpickling are refused"):
        load_checkpoint(pickled)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(ValueError, match=r"Foreign checkpoint .*not a bci-app training"):
        export_checkpoint(foreign, tmp_path / "bundle")
    with pytest.raises(ValueError, match=r"Foreign checkpoint"):
        _train([session], tmp_path / "run", resume=foreign)
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        _train([session], tmp_path / "run", resume=tmp_path / "missing.pt")


def test_invalid_settings_are_named(tmp_path, session):
    with pytest.raises(ValueError, match=r"Invalid value for 'arch': 'v3'"):
        _train([session], tmp_path / "x", arch="v3")
    with pytest.raises(ValueError, match=r"Invalid value for 'epochs': 0"):
        _train([session], tmp_path / "x", epochs=0)
    with pytest.raises(ValueError, match=r"Invalid value for 'lr': 2"):
        _train([session], tmp_path / "x", lr=2)
    with pytest.raises(ValueError, match=r"unknown preset 'huge'"):
        _train([session], tmp_path / "x", config="huge")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is missing")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, session):
    with pytest.raises(ValueError, match=r"'cuda' but torch sees no CUDA device.*--device cpu"):
        train_typing([session], tmp_path / "x", device="cuda")


def test_v2_trains_with_ctc_on_continuous_sentences(tmp_path, session):
    metrics = _train([session], tmp_path / "v2", arch="v2", epochs=2)
    history = _history(tmp_path / "v2")
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert metrics["cer_kind"] == "greedy CTC" and "test_cer_conv" not in metrics
    meta = load_checkpoint(tmp_path / "v2" / "checkpoint.pt")["meta"]
    assert meta["arch"] == "brain2qwerty_v2" and meta["preprocessing"]["clamp"] == 5.0


@pytest.mark.slow
def test_bundle_loads_and_its_graphs_match_the_trained_model(tmp_path, session):
    out = tmp_path / "bundle"
    metrics = _train([session], out, epochs=2, export=True, name="tiny-eeg")
    bundle = load_bundle(out)
    manifest = bundle.manifest
    assert set(manifest["graphs"]) == {"keystroke", "sentence"} and bundle.task == "typing"
    assert manifest["name"] == "tiny-eeg" and manifest["arch"] == "brain2qwerty_v1"
    assert manifest["window"] == {
        "tmin": -0.2,
        "tmax": 0.3,
        "sfreq": 50.0,
        "baseline": [None, 0.0],
        "clamp": 5.0,
    }
    assert len(manifest["classes"]) == 29 and manifest["decoding"] == {"top_k": 5, "beam_width": 30}
    assert manifest["subject"] == {"n_subjects": 1, "default": 0, "labels": ["0"]}
    assert manifest["metrics"]["test_cer"] == metrics["test_cer"]
    assert manifest["provenance"]["recordings"][0]["simulator"]["seed"] == 1
    assert bundle.check_stream(session.channels, session.sfreq) == list(range(64))
    assert CharNgramLM.load(bundle.file_path(manifest["lm"]["file"])).order == 6
    preprocessing = PreprocessConfig.from_dict(manifest["preprocessing"])
    dataset = build_typing_dataset([session])
    assert preprocessing.scaler_center == dataset.preprocessing.scaler_center

    model = model_from_checkpoint(load_checkpoint(out / "checkpoint.pt"))
    windows = dataset.sentences[0].windows
    subject = np.zeros(len(windows), dtype=np.int64)
    keystroke = ort.InferenceSession(str(bundle.graph_path("keystroke")))
    embedding, conv_logits = keystroke.run(None, {"x": windows, "subject": subject})
    with torch.no_grad():
        expected = model.classify_keystrokes(torch.from_numpy(windows), torch.from_numpy(subject))
        sentence_logits = model(
            torch.from_numpy(windows)[None],
            torch.zeros(1, dtype=torch.long),
            torch.ones(1, len(windows), dtype=torch.bool),
        )
    np.testing.assert_allclose(conv_logits, expected.numpy(), atol=1e-4)
    sentence = ort.InferenceSession(str(bundle.graph_path("sentence")))
    (logits,) = sentence.run(
        None, {"embeddings": embedding[None], "key_mask": np.ones((1, len(windows)), bool)}
    )
    np.testing.assert_allclose(logits, sentence_logits.numpy(), atol=1e-4)


def _cli(argv):
    parser = argparse.ArgumentParser(prog="bci-app")
    add_train_export_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.slow
def test_cli_trains_v2_and_reexports_the_checkpoint(tmp_path, session, capsys):
    path = write_recording(session, tmp_path / "calibration.xdf")
    out = tmp_path / "ctc"
    argv = ["train", "typing", str(path), "--out", str(out), "--arch", "v2", "--epochs", "2"]
    assert _cli([*argv, "--batch-size", "2", "--no-progress", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "test CER" in printed and f"Bundle: {out}" in printed and "ctc" in printed
    first = load_bundle(out)
    assert first.manifest["ctc"] == {"blank": 29, "frame_stride": 2, "frame_s": 0.04}
    assert first.manifest["provenance"]["recordings"][0]["file"] == "calibration.xdf"

    assert _cli(["export", str(out / "checkpoint.pt"), "--out", str(tmp_path / "again")]) == 0
    printed = capsys.readouterr().out
    assert "ctc: " in printed and "max |onnxruntime - torch| = " in printed
    again = load_bundle(tmp_path / "again")
    assert again.manifest["metrics"] == first.manifest["metrics"]
    assert again.manifest["stream"] == first.manifest["stream"]
    (log_probs,) = ort.InferenceSession(str(again.graph_path("ctc"))).run(
        None, {"x": np.zeros((1, 64, 40), np.float32), "subject": np.zeros(1, np.int64)}
    )
    assert log_probs.shape == (1, 20, 30)
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-4)
    with pytest.raises(SystemExit):
        _cli(["train", "typing", str(path), "--out", str(out), "--epochs", "0"])
    assert json.loads((out / "manifest.json").read_text())["task"] == "typing"


@pytest.mark.slow
@pytest.mark.timeout(300)  # ~40 s on 2 idle cores; minutes when the cores are shared
def test_small_decodes_simulated_meg_well_below_chance(tmp_path):
    recording = td.typing_session("meg", seed=3, duration=150.0, snr=3.0)
    metrics = _train([recording], tmp_path / "meg", epochs=20, batch_size=2, picks=["mag"])
    print(
        f"\nsmall on 150 s of simulated MEG (102 magnetometers, snr 3): test CER "
        f"{metrics['test_cer']:.3f} "
        f"(conv only {metrics['test_cer_conv']:.3f}), chance {metrics['test_cer_chance']:.3f}, "
        f"{metrics['n_sentences']} sentences, {metrics['epochs_run']} epochs in "
        f"{metrics['train_seconds']:.0f} s"
    )
    assert metrics["test_cer_conv"] < 0.6 * metrics["test_cer_chance"]
    assert metrics["test_cer"] < 0.6 * metrics["test_cer_chance"]


def test_cli_parser_does_not_import_torch():
    code = (
        "import argparse, sys\n"
        "from bci_app.cli.train import add_train_export_commands\n"
        "parser = argparse.ArgumentParser()\n"
        "add_train_export_commands(parser.add_subparsers())\n"
        "parser.parse_args(['train', 'typing', 'a.xdf', '--out', 'b'])\n"
        "print(sorted(m for m in ('torch', 'models') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_new_run_discards_checkpoints_of_an_earlier_one(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for epoch in range(1, 6):
        save_checkpoint(epoch_path(tmp_path, epoch), {"epoch": epoch}, {"run": "old"})
    assert discard_epochs_after(tmp_path, 2) == 3
    assert sorted(p.name for p in folder.iterdir()) == ["epoch_0001.pt", "epoch_0002.pt"]
    assert resolve_resume(tmp_path).name == "epoch_0002.pt"
    assert load_checkpoint(resolve_resume(tmp_path))["meta"] == {"run": "old"}
