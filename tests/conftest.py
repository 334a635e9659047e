"""Shared test fixtures: offscreen Qt, errors re-raised, unique LSL source ids, subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Workers re-raise their errors in tests instead of only logging them (mne-lsl's pattern).
os.environ["BCI_APP_RAISE_STREAM_ERRORS"] = "1"

DATA_DIR = Path(__file__).parent / "data"
REAL_DIR = DATA_DIR / "real"


@pytest.fixture
def source_id(request) -> str:
    """A source_id unique to this test, so parallel or leftover outlets never collide."""
    return f"test-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def spawn_python():
    """Start Python code in a subprocess (a real separate process, e.g. an LSL outlet).

    Returns a function ``spawn(code, **popen_kwargs) -> Popen``; every process still running at the
    end of the test is killed.
    """
    procs: list[subprocess.Popen] = []

    def spawn(code: str, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdout=kwargs.pop("stdout", subprocess.PIPE),
            stderr=kwargs.pop("stderr", subprocess.PIPE),
            text=True,
            **kwargs,
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr, proc.stdin):
            if stream is not None:
                stream.close()
