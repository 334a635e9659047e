"""onnxruntime wrapper: real graphs, verified providers, clear errors."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bci_app.decoders.runtime import OnnxRuntime


@pytest.fixture
def linear_graph(tmp_path):
    """A graph y = relu(x @ W), x: (batch, 4) float32; a real graph saved to disk."""
    weight = np.arange(12, dtype=np.float32).reshape(4, 3) / 10 - 0.5
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    path = tmp_path / "linear.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path, weight


def test_runs_and_matches_numpy(linear_graph):
    path, weight = linear_graph
    rt = OnnxRuntime(path, provider="cpu")
    assert rt.provider == "CPUExecutionProvider" and rt.device == "cpu"
    for batch in (1, 5):
        x = np.random.default_rng(batch).normal(size=(batch, 4)).astype(np.float32)
        out = rt.run({"x": x})["y"]
        np.testing.assert_allclose(out, np.maximum(x @ weight, 0), rtol=1e-6, atol=1e-6)
    assert len(rt.benchmark({"x": x}, n=5)) == 5


def test_auto_reports_the_provider_really_active(linear_graph):
    rt = OnnxRuntime(linear_graph[0], provider="auto")
    assert rt.provider == rt.session.get_providers()[0]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert rt.device == "cpu"


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="machine has CUDA"
)
def test_cuda_requested_without_gpu_build_is_a_clear_error(linear_graph):
    with pytest.raises(RuntimeError, match=r"'cuda' provider was requested .*bci-app\[gpu\]"):
        OnnxRuntime(linear_graph[0], provider="cuda")


def test_bad_inputs(linear_graph, tmp_path):
    with pytest.raises(ValueError, match="Invalid value for 'provider'"):
        OnnxRuntime(linear_graph[0], provider="gpu0")
    with pytest.raises(FileNotFoundError, match="ONNX graph not found"):
        OnnxRuntime(tmp_path / "none.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(linear_graph[0].read_bytes()[:40])
    with pytest.raises(ValueError, match="Cannot load the ONNX graph"):
        OnnxRuntime(corrupt)
    rt = OnnxRuntime(linear_graph[0], provider="cpu")
    with pytest.raises(ValueError, match=r"Missing input\(s\) \['x'\]"):
        rt.run({"z": np.zeros((1, 4), np.float32)})
