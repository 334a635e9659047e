"""onnxruntime wrapper: real graphs, verified providers, clear errors."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bci_app.decoders.runtime import OnnxRuntime, engine_cache_dir


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


def test_io_buffers_are_bound_once_per_shape_and_outputs_are_copies(linear_graph):
    path, weight = linear_graph
    rt = OnnxRuntime(path, provider="cpu", warmup=0)
    rng = np.random.default_rng(0)
    first = rng.normal(size=(2, 4)).astype(np.float32)
    out_first = rt.run({"x": first})["y"]
    second = rng.normal(size=(2, 4)).astype(np.float32)
    out_second = rt.run({"x": second})["y"]
    assert rt.bound_shapes == [((2, 4),)]  # the same buffers served both calls
    # the first result is the caller's: the second call did not overwrite it
    np.testing.assert_allclose(out_first, np.maximum(first @ weight, 0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out_second, np.maximum(second @ weight, 0), rtol=1e-6, atol=1e-6)
    rt.run({"x": first[:1]})
    assert rt.bound_shapes == [((2, 4),), ((1, 4),)]
    # float64 input is converted to the graph's float32
    np.testing.assert_allclose(rt.run({"x": first.astype(np.float64)})["y"], out_first, atol=1e-6)


def test_output_shape_not_named_after_an_input_is_found_by_one_run(tmp_path):
    """Concat doubles the batch: the output's dim is not an input's, so a probe run sizes it."""
    graph = helper.make_graph(
        [helper.make_node("Concat", ["x", "x"], ["y"], axis=0)],
        "twice",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["doubled", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rt = OnnxRuntime(model.SerializeToString(), provider="cpu")  # a graph built in memory
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(rt.run({"x": x})["y"], np.concatenate([x, x]))
    np.testing.assert_array_equal(rt.run({"x": x[:1]})["y"], np.concatenate([x[:1], x[:1]]))
    assert "in-memory" in repr(rt)


def test_cuda_graph_is_ignored_on_a_cpu_session(linear_graph):
    rt = OnnxRuntime(linear_graph[0], provider="cpu", cuda_graph=True)
    assert rt.cuda_graph is False and rt.engine_cache is None


def test_tensorrt_engine_cache_is_per_graph_in_the_user_cache(linear_graph, tmp_path, monkeypatch):
    """TensorRT's options as onnxruntime would get them (no GPU here: the options are checked)."""
    monkeypatch.setenv("BCI_APP_CACHE", str(tmp_path / "cache"))
    path = linear_graph[0]
    folder = engine_cache_dir(path)
    assert folder.parent == tmp_path / "cache" / "tensorrt"
    other = tmp_path / "other.onnx"
    other.write_bytes(path.read_bytes() + b" ")
    assert engine_cache_dir(other) != folder  # a changed graph never reuses an engine
    rt = OnnxRuntime(path, provider="cpu")
    ranges = {"x": ((1, 4), (1, 4), (8, 4))}
    options = rt._options("TensorrtExecutionProvider", path, {}, ranges, True)
    assert options["trt_engine_cache_enable"] == "True"
    assert options["trt_engine_cache_path"] == str(folder) and folder.is_dir()
    assert options["trt_fp16_enable"] == "True"
    assert options["trt_profile_min_shapes"] == "x:1x4"
    assert options["trt_profile_max_shapes"] == "x:8x4"
    assert rt._options("CUDAExecutionProvider", path, {}, None, False)["enable_cuda_graph"] == "0"
