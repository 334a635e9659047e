"""Fixtures of the model tests: seeded torch, sensor positions, simulated sessions, short runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import typing_data as td

from acquisition.simulator import Simulator

#: Options of the short typing runs: a few epochs on the tiny session, CPU, nothing exported.
QUICK = {"epochs": 3, "batch_size": 2, "export": False, "progress": False, "device": "cpu"}


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)


@pytest.fixture
def positions(request) -> np.ndarray:
    """Uniform 2D positions of the test module's ``N_CHANS`` sensors (32 by default)."""
    n_chans = getattr(request.module, "N_CHANS", 32)
    return np.random.default_rng(0).uniform(size=(n_chans, 2)).astype(np.float32)


@pytest.fixture(scope="session")
def typing_session():
    """The tiny simulated EEG typing session of :mod:`helpers.typing_data` (do not edit it)."""
    return td.typing_session()


@pytest.fixture(scope="session")
def listening_session():
    """A 30 s simulated EEG listening session with its ground-truth audio."""
    return Simulator("eeg", "listening", snr=2.0, seed=3).generate(30.0)


@pytest.fixture(scope="session")
def quick_typing():
    """``train(recordings, out, **settings)``: :func:`train_typing` with :data:`QUICK` defaults."""
    from models.training import train_typing

    def train(recordings, out, **settings):
        return train_typing(recordings, out, **{**QUICK, **settings})

    return train


@pytest.fixture(scope="session")
def typing_run(typing_session, quick_typing, tmp_path_factory):
    """Three epochs on the tiny session, keeping the two newest per-epoch checkpoints."""
    out = tmp_path_factory.mktemp("train") / "full"
    return out, quick_typing([typing_session], out, epochs=3, keep_checkpoints=2)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def torchrun():
    """``run(*args) -> CompletedProcess``: two gloo processes of ``bci_app.cli.train`` on CPU."""

    def run(*args: str, timeout: float = 110) -> subprocess.CompletedProcess:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}",
            "-m",
            "bci_app.cli.train",
            *args,
            "--device",
            "cpu",
            "--no-progress",
            "--json",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )

    return run
