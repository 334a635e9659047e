"""Training acceleration on the CPU: precision choices, bf16 autocast, the throughput script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.training.settings import Acceleration, autocast_factory

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "bench_training.py"


def test_precision_choices():
    cpu = torch.device("cpu")
    factory, dtype = autocast_factory(cpu)
    assert dtype is None  # auto: no autocast on the CPU (as before)
    factory, dtype = autocast_factory(cpu, "bf16")
    with factory():
        out = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert dtype == torch.bfloat16 and out.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="'fp16' autocast needs a CUDA device"):
        autocast_factory(cpu, "fp16")
    with pytest.raises(ValueError, match="Invalid value for 'precision'"):
        Acceleration(precision="int8")


@pytest.mark.slow
def test_bench_training_runs_the_trainer_in_bf16_on_cpu():
    args = ["--configs", "small", "--device", "cpu", "--precision", "bf16", "--steps", "1"]
    args += ["--batch-size", "2", "--keys", "4", "--json"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads(done.stdout)["results"]
    assert result["autocast"] == "torch.bfloat16" and result["device"] == "cpu"
    assert result["keystrokes_per_s"] > 0 and result["world_size"] == 1
