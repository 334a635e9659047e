"""``bci-app train typing|speech`` and ``export`` (typing and speech), and the torchrun entry."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from helpers import typing_data as td

from acquisition.io import write_recording
from acquisition.simulator import Simulator
from bci_app.cli.train import add_train_export_commands, build_parser
from bci_app.decoders.bundle import load_bundle
from bci_app.speech.decoder import load_candidates


def _cli(argv):
    parser = argparse.ArgumentParser(prog="bci-app")
    add_train_export_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_parsers_do_not_import_torch():
    code = (
        "import argparse, sys\n"
        "from bci_app.cli.train import add_train_export_commands, build_parser\n"
        "parser = argparse.ArgumentParser()\n"
        "add_train_export_commands(parser.add_subparsers())\n"
        "parser.parse_args(['train', 'typing', 'a.xdf', '--out', 'b'])\n"
        "parser.parse_args(['train', 'speech', 'a.xdf', '--out', 'b', '--audio-layers', '-1'])\n"
        "build_parser().parse_args(['speech', 'a.xdf', '--out', 'b'])\n"
        "print(sorted(m for m in ('torch', 'models') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_torchrun_parser_has_the_train_subcommands():
    parser = build_parser()
    typing = parser.parse_args(["typing", "a.xdf", "--out", "b", "--arch", "v2", "--crop", "0"])
    assert typing.func.__name__ == "run_train" and typing.arch == "v2" and typing.crop == 0.0
    assert typing.text_pretrain is None  # the training default (4000 steps) applies
    off = parser.parse_args(["typing", "a.xdf", "--out", "b", "--text-pretrain", "0"])
    assert off.text_pretrain == 0
    speech = parser.parse_args(["speech", "a.xdf", "--audio", "stim", "--out", "b"])
    assert speech.func.__name__ == "run_speech_train" and speech.audio == ["stim"]
    with pytest.raises(SystemExit):
        parser.parse_args(["typing", "a.xdf", "--out", "b", "--epochs", "0"])
    with pytest.raises(SystemExit):
        parser.parse_args(["speech", "a.xdf", "--out", "b", "--arch", "v2"])  # typing only


def test_module_entry_point_prints_one_error_line(tmp_path):
    missing, out = str(tmp_path / "missing.xdf"), str(tmp_path / "out")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bci_app.cli.train",
            "typing",
            missing,
            "--out",
            out,
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("python -m bci_app.cli.train typing: error: ")
    assert "missing.xdf" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_cli_trains_v2_and_reexports_the_checkpoint(tmp_path, capsys):
    path = write_recording(td.typing_session(), tmp_path / "calibration.xdf")
    out = tmp_path / "ctc"
    argv = ["train", "typing", str(path), "--out", str(out), "--arch", "v2", "--epochs", "2"]
    assert _cli([*argv, "--batch-size", "2", "--no-progress", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "test CER" in printed and f"Bundle: {out}" in printed and "ctc" in printed
    first = load_bundle(out)
    assert first.manifest.ctc.to_dict() == {"blank": 29, "frame_stride": 2, "frame_s": 0.04}
    assert first.manifest.provenance.recordings[0].file == "calibration.xdf"

    assert _cli(["export", str(out / "checkpoint.pt"), "--out", str(tmp_path / "again")]) == 0
    printed = capsys.readouterr().out
    assert "ctc: " in printed and "max |onnxruntime - torch| = " in printed
    again = load_bundle(tmp_path / "again")
    assert again.manifest.metrics == first.manifest.metrics
    assert again.manifest.stream.to_dict() == first.manifest.stream.to_dict()
    (log_probs,) = ort.InferenceSession(str(again.graph_path("ctc"))).run(
        None, {"x": np.zeros((1, 64, 40), np.float32), "subject": np.zeros(1, np.int64)}
    )
    assert log_probs.shape == (1, 20, 30)
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-4)
    with pytest.raises(SystemExit):
        _cli(["train", "typing", str(path), "--out", str(out), "--epochs", "0"])
    assert json.loads((out / "manifest.json").read_text())["task"] == "typing"

    # re-exported into its own training folder: the bundle there is refused, then replaced
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(ValueError, match=r"ctc': it holds a bundle \(.*\).*--overwrite"):
        _cli(["export", str(out / "checkpoint.pt"), "--out", str(out)])
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert _cli(["export", str(out / "checkpoint.pt"), "--out", str(out), "--overwrite"]) == 0
    assert (out / "checkpoint.pt").stat().st_mtime_ns == before["checkpoint.pt"]  # kept
    assert load_bundle(out).manifest.metrics == first.manifest.metrics


@pytest.mark.slow
def test_cli_exports_a_speech_checkpoint_as_a_speech_bundle(tmp_path, capsys):
    from models.bundles import export_checkpoint
    from models.checkpoint import load_checkpoint
    from models.training import train_speech
    from models.typing.bundle import export_typing_checkpoint

    recording = Simulator("eeg", "listening", snr=2.0, seed=3).generate(30.0)
    out = tmp_path / "speech"
    train_speech([recording], out, epochs=1, batch_size=8, export=False, progress=False)
    assert not (out / "manifest.json").exists()

    bundle_dir = tmp_path / "exported"
    argv = ["export", str(out / "checkpoint.pt"), "--out", str(bundle_dir), "--name", "heard"]
    assert _cli(argv) == 0
    printed = capsys.readouterr().out
    assert (
        "brain: " in printed and "audio: " in printed and "max |onnxruntime - torch| = " in printed
    )
    assert f"Bundle written to {bundle_dir}" in printed
    bundle = load_bundle(bundle_dir)
    assert bundle.task == "speech" and bundle.name == "heard"
    assert set(bundle.manifest.graphs) == {"brain", "audio"} and bundle.manifest.lm is None
    assert bundle.manifest.audio_features["kind"] == "log_mel"
    assert bundle.manifest.window.audio_n_times == 360  # 3 s of audio features at 120 Hz
    # the candidate set is the one training made
    saved = load_checkpoint(out / "checkpoint.pt")["candidates"]
    texts, embeddings = load_candidates(bundle)
    assert texts == saved["texts"] and len(texts) >= 3
    np.testing.assert_allclose(embeddings, saved["embeddings"].numpy(), rtol=1e-6)
    (embedding,) = ort.InferenceSession(str(bundle.graph_path("audio"))).run(
        None, {"mel": np.zeros((1, bundle.manifest.model_config["n_mels"], 360), np.float32)}
    )
    assert embedding.shape == (1, embeddings.shape[1])

    with pytest.raises(ValueError, match="not a typing decoder"):
        export_typing_checkpoint(out / "checkpoint.pt", tmp_path / "typing")
    epoch = out / "checkpoints" / "epoch_0001.pt"
    with pytest.raises(ValueError, match="per-epoch checkpoints have no candidates"):
        export_checkpoint(epoch, tmp_path / "epoch")
