"""Distributed training: two processes on CPU (gloo) launched by torchrun, rank 0 writes."""

from __future__ import annotations

import json

import pytest

from acquisition.io import write_recording
from acquisition.simulator.listening import write_stimulus_audio
from bci_app.decoders.bundle import load_bundle
from models.checkpoint import load_checkpoint


def _metrics(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{") :])  # rank 0 alone prints


@pytest.mark.slow
def test_torchrun_two_gloo_processes_train_and_rank0_writes_the_bundle(
    tmp_path, typing_session, torchrun
):
    path = write_recording(typing_session, tmp_path / "calibration.xdf")
    out = tmp_path / "ddp"
    done = torchrun("typing", str(path), "--out", str(out), "--epochs", "2", "--batch-size", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = _metrics(done.stdout)
    assert metrics["world_size"] == 2 and metrics["device"] == "cpu"
    history = load_checkpoint(out / "checkpoint.pt")["history"]
    n_train = metrics["n_sentences"]["train"]
    for per_rank in history["sentences_per_rank"]:
        # both ranks trained, each on its half of the (padded) training sentences
        assert per_rank == [(n_train + 1) // 2] * 2
    bundle = load_bundle(out)
    assert bundle.manifest.provenance.world_size == 2
    assert set(bundle.manifest.graphs) == {"keystroke", "sentence"}
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_torchrun_two_gloo_processes_train_the_speech_decoder(
    tmp_path, listening_session, torchrun
):
    path = write_recording(listening_session, tmp_path / "listening.xdf")
    write_stimulus_audio(listening_session.meta["ground_truth"], tmp_path / "listening_stimuli")
    out = tmp_path / "ddp-speech"
    done = torchrun("speech", str(path), "--out", str(out), "--epochs", "2", "--batch-size", "8")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = _metrics(done.stdout)
    assert metrics["world_size"] == 2 and metrics["epochs_run"] == 2
    bundle = load_bundle(out)
    assert bundle.task == "speech" and "brain" in bundle.manifest.graphs
    assert bundle.manifest.provenance.world_size == 2
