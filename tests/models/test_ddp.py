"""Distributed training: two processes on CPU (gloo) launched by torchrun, rank 0 writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from helpers import typing_data as td

from acquisition.xdf import write_recording
from bci_app.decoders.bundle import load_bundle
from models.checkpoint import load_checkpoint


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_gloo_processes_train_and_rank0_writes_the_bundle(tmp_path):
    path = write_recording(td.typing_session(), tmp_path / "calibration.xdf")
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "models.train",
        str(path),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        "--json",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=110, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout[done.stdout.index("{") :])  # rank 0 alone prints
    assert metrics["world_size"] == 2 and metrics["device"] == "cpu"
    history = load_checkpoint(out / "checkpoint.pt")["history"]
    n_train = metrics["n_sentences"]["train"]
    for per_rank in history["sentences_per_rank"]:
        # both ranks trained, each on its half of the (padded) training sentences
        assert per_rank == [(n_train + 1) // 2] * 2
    bundle = load_bundle(out)
    assert bundle.manifest["provenance"]["world_size"] == 2
    assert set(bundle.manifest["graphs"]) == {"keystroke", "sentence"}
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_torchrun_two_gloo_processes_train_the_speech_decoder(tmp_path):
    from acquisition.simulator import Simulator

    rec = Simulator("eeg", "listening", snr=2.0, seed=3).generate(30.0)
    path = write_recording(rec, tmp_path / "listening.xdf")
    from acquisition.simulator.listening import write_stimulus_audio

    write_stimulus_audio(rec.meta["ground_truth"], tmp_path / "listening_stimuli")
    out = tmp_path / "ddp-speech"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "models.speech_train",
        str(path),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--no-progress",
        "--json",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=110, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout[done.stdout.index("{") :])  # rank 0 alone prints
    assert metrics["world_size"] == 2 and metrics["epochs_run"] == 2
    bundle = load_bundle(out)
    assert bundle.task == "speech" and "brain" in bundle.manifest["graphs"]
