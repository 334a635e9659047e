"""The GPU path on a real GPU: onnxruntime CUDA/TensorRT, CUDA graphs, device scoring, training.

Every test here is marked ``gpu`` and skips, saying why, where the machine has no CUDA (this
project's CPU machines): ``pytest -m gpu`` on a GPU machine runs them (scripts/gpu_check.sh).
Nothing is faked: each one runs on the device or does not run.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from acquisition.simulator import Simulator
from bci_app.decoders.bundle import load_bundle
from bci_app.decoders.runtime import OnnxRuntime
from bci_app.decoders.shipped import TYPING_BUNDLE
from bci_app.typing.evaluate import evaluate_bundle

ORT_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
ORT_TRT = "TensorrtExecutionProvider" in ort.get_available_providers()


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


TORCH_CUDA = _torch_cuda()
NO_ORT_CUDA = (
    f"onnxruntime {ort.__version__} offers no CUDAExecutionProvider here "
    f"({ort.get_available_providers()}): install onnxruntime-gpu on a machine with a GPU"
)
NO_TORCH_CUDA = "torch sees no CUDA device (CPU build of torch, or no GPU)"


def _keystroke_feed(n: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((n, 306, 25)).astype(np.float32)
    return {"x": x, "subject": np.zeros(n, np.int64)}


@pytest.mark.gpu
@pytest.mark.skipif(not ORT_CUDA, reason=NO_ORT_CUDA)
def test_cuda_provider_is_active_and_matches_the_cpu():
    path = load_bundle(TYPING_BUNDLE).graph_path("keystroke")
    cuda, cpu = OnnxRuntime(path, "cuda"), OnnxRuntime(path, "cpu")
    assert cuda.provider == "CUDAExecutionProvider" and cuda.device == "cuda"
    assert cuda.session.get_providers()[0] == "CUDAExecutionProvider"
    for seed in range(3):
        feed = _keystroke_feed(seed=seed)
        got, want = cuda.run(feed), cpu.run(feed)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=1e-4)
    (shapes,) = cuda.bound_shapes  # one set of device buffers served every call
    assert shapes == ((1, 306, 25), (1,))


@pytest.mark.gpu
@pytest.mark.skipif(not ORT_CUDA, reason=NO_ORT_CUDA)
def test_cuda_graph_replays_with_new_inputs():
    path = load_bundle(TYPING_BUNDLE).graph_path("keystroke")
    graph = OnnxRuntime(path, "cuda", cuda_graph=True, warmup_shapes={"x": (1, 306, 25)})
    cpu = OnnxRuntime(path, "cpu")
    assert graph.cuda_graph
    for seed in range(5):  # captured once, replayed on each new window
        feed = _keystroke_feed(seed=seed)
        np.testing.assert_allclose(
            graph.run(feed)["conv_logits"], cpu.run(feed)["conv_logits"], atol=1e-4
        )


@pytest.mark.gpu
@pytest.mark.skipif(not ORT_TRT, reason="onnxruntime offers no TensorrtExecutionProvider")
def test_tensorrt_builds_its_engine_at_load_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BCI_APP_CACHE", str(tmp_path))
    path = load_bundle(TYPING_BUNDLE).graph_path("keystroke")
    ranges = {"x": ((1, 306, 25),) * 3, "subject": ((1,),) * 3}
    try:
        rt = OnnxRuntime(path, "tensorrt", shape_ranges=ranges)
    except RuntimeError as err:  # the provider is listed but libnvinfer did not load
        pytest.skip(f"TensorRT did not load: {err}")
    assert rt.provider == "TensorrtExecutionProvider"
    engines = list(rt.engine_cache.iterdir())
    assert engines, "no engine was cached at load"
    np.testing.assert_allclose(
        rt.run(_keystroke_feed())["conv_logits"],
        OnnxRuntime(path, "cpu").run(_keystroke_feed())["conv_logits"],
        atol=1e-3,
    )
    OnnxRuntime(path, "tensorrt", shape_ranges=ranges)  # a second load reuses the engine
    assert sorted(rt.engine_cache.iterdir()) == sorted(engines)


@pytest.mark.gpu
@pytest.mark.skipif(not ORT_CUDA, reason=NO_ORT_CUDA)
def test_decoded_text_on_cuda_equals_the_cpu_small_and_paper(tmp_path):
    from bci_app.cli.bench_graphs import paper_bundle

    recording = Simulator("meg", "typing", snr=1.0, subject=0, seed=555).generate(40.0)
    paper = paper_bundle(load_bundle(TYPING_BUNDLE), tmp_path / "paper")
    for bundle in (load_bundle(TYPING_BUNDLE), paper):
        reports = [evaluate_bundle(bundle, [recording], provider=p) for p in ("cuda", "cpu")]
        assert reports[0]["provider"] == "CUDAExecutionProvider"
        texts = [[s["texts"] for s in r["recordings"][0]["sentences"]] for r in reports]
        assert texts[0] == texts[1], bundle.name


@pytest.mark.gpu
@pytest.mark.skipif(not ORT_CUDA, reason=NO_ORT_CUDA)
def test_candidate_scoring_on_the_gpu_equals_numpy_for_100k_candidates():
    from bci_app.speech.decoder import normalize
    from bci_app.speech.scoring import CandidateScorer

    rng = np.random.default_rng(0)
    candidates = normalize(rng.standard_normal((100_000, 256)).astype(np.float32))
    queries = normalize(rng.standard_normal((4, 256)).astype(np.float32))
    gpu = CandidateScorer(candidates, top_k=10, device="auto")
    cpu = CandidateScorer(candidates, top_k=10, device="cpu")
    assert gpu.device == "cuda"
    got, want = gpu.top(queries), cpu.top(queries)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-3, atol=1e-7)


@pytest.mark.gpu
@pytest.mark.skipif(not TORCH_CUDA, reason=NO_TORCH_CUDA)
def test_training_step_on_cuda_with_bf16_and_pinned_memory():
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve().parents[1] / "scripts" / "bench_training.py"),
            "--configs",
            "small",
            "--device",
            "cuda",
            "--precision",
            "bf16",
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)["results"][0]
    assert result["device"].startswith("cuda") and result["autocast"] == "torch.bfloat16"
    assert result["keystrokes_per_s"] > 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.gpu
@pytest.mark.skipif(not TORCH_CUDA, reason=NO_TORCH_CUDA)
def test_ddp_over_nccl_with_torchrun():
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip(
            f"NCCL DDP needs one GPU per process and this machine has "
            f"{torch.cuda.device_count()}; the gloo test covers the DDP code on CPU"
        )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}",
            str(Path(__file__).resolve().parents[1] / "scripts" / "bench_training.py"),
            "--configs",
            "small",
            "--device",
            "cuda",
            "--steps",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout[done.stdout.index("{") :])["results"][0]
    assert result["world_size"] == 2 and result["backend"] == "nccl"


def test_gpu_check_script_parses_and_refuses_an_unknown_mode():
    """Not marked gpu: the script that runs these checks on the device is valid bash here."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    done = subprocess.run(["bash", str(script), "--bogus"], capture_output=True, text=True)
    assert done.returncode == 2 and "usage: bash scripts/gpu_check.sh" in done.stderr
