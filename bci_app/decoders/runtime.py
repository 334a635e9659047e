"""onnxruntime wrapper for live inference: provider choice that is checked, warm-up, IO binding.

onnxruntime silently falls back to the CPU when a requested GPU provider cannot load (missing CUDA
libraries, wrong driver). :class:`OnnxRuntime` asks the session which providers it really got and
either says so (``provider="auto"``) or refuses (``provider="cuda"``/``"tensorrt"``), so a GPU
claim is never made on a CPU session.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from bci_app._optional import import_optional

logger = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(float16)": np.float16,
}
_GPU_HINT = (
    "Install the GPU build instead of the CPU one (they share a module name): "
    "pip uninstall -y onnxruntime && pip install 'bci-app[gpu]'; then check "
    "'python -c \"import onnxruntime as o; print(o.get_available_providers())\"'."
)


def default_threads() -> int:
    """Intra-op threads for a live session: up to 4, always leaving one core for acquisition.

    On a 2-core machine that is 1 thread: measured on the default bundle, 2 intra-op threads
    competing with the acquisition worker raised the per-keystroke p99 from ~2-6 ms to 12-21 ms.
    """
    cores = os.cpu_count() or 1
    return max(1, min(4, cores - 1))


class OnnxRuntime:
    """Run one ONNX graph with a verified provider.

    Parameters
    ----------
    path : path-like
        The ``.onnx`` file.
    provider : "auto" | "cpu" | "cuda" | "tensorrt"
        ``auto`` takes the best provider this onnxruntime build offers and reports it.
    threads : int | None
        Intra-op threads (default :func:`default_threads`).
    warmup : int
        Runs on zero inputs at load, so the first live window does not pay for allocation.
    warmup_shapes : mapping | None
        Input name -> shape for the warm-up, required when an input has dynamic dimensions other
        than the batch (which is taken as 1).
    """

    def __init__(
        self,
        path: str | Path,
        provider: str = "auto",
        *,
        threads: int | None = None,
        warmup: int = 3,
        warmup_shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> None:
        ort = import_optional("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX graph not found: {path}")
        available = ort.get_available_providers()
        wanted = self._wanted(provider, available)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or default_threads())
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=wanted)
        except Exception as err:  # onnxruntime raises its own exception types
            raise ValueError(f"Cannot load the ONNX graph {path}: {err}") from err
        self.path = path
        self.requested = provider
        self.active_providers = tuple(self.session.get_providers())
        self.provider = self.active_providers[0]
        if wanted[0] != "CPUExecutionProvider" and self.provider != wanted[0]:
            if provider != "auto":
                raise RuntimeError(
                    f"onnxruntime fell back from {wanted[0]} to {self.provider} for {path.name} "
                    f"(the GPU libraries did not load). {_GPU_HINT}"
                )
            logger.warning("onnxruntime fell back to %s for %s", self.provider, path.name)
        self.device = "cuda" if self.provider != "CPUExecutionProvider" else "cpu"
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self._binding = self.session.io_binding()
        for _ in range(int(warmup)):
            self.run(self._zeros(warmup_shapes or {}))
        logger.info("loaded %s on %s", path.name, self.provider)

    @staticmethod
    def _wanted(provider: str, available: list[str]) -> list[str]:
        if provider == "auto":
            for key in ("tensorrt", "cuda"):
                if PROVIDERS[key][0] in available:
                    return PROVIDERS[key]
            return PROVIDERS["cpu"]
        if provider not in PROVIDERS:
            raise ValueError(
                f"Invalid value for 'provider': {provider!r}; use 'auto', 'cpu', 'cuda' or "
                "'tensorrt'."
            )
        if PROVIDERS[provider][0] not in available:
            raise RuntimeError(
                f"The '{provider}' provider was requested but this onnxruntime offers only "
                f"{available}. {_GPU_HINT}"
            )
        return PROVIDERS[provider]

    def _zeros(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        feeds = {}
        for name, meta in self.inputs.items():
            shape = shapes.get(name)
            if shape is None:
                shape = tuple(d if isinstance(d, int) else 1 for d in meta.shape)
            feeds[name] = np.zeros(shape, dtype=_NUMPY_TYPES.get(meta.type, np.float32))
        return feeds

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph; return outputs by name as numpy arrays.

        Inputs are bound in place (IO binding), so no copy is made on the CPU; on CUDA they are
        copied to the device once per call and outputs are allocated there by onnxruntime.
        """
        missing = set(self.inputs) - set(feeds)
        if missing:
            raise ValueError(
                f"Missing input(s) {sorted(missing)} for {self.path.name}; it takes "
                f"{sorted(self.inputs)}."
            )
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        for name, meta in self.inputs.items():
            array = np.ascontiguousarray(feeds[name], dtype=_NUMPY_TYPES.get(meta.type))
            binding.bind_cpu_input(name, array)
        for name in self.outputs:
            binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding)
        return dict(zip(self.outputs, binding.copy_outputs_to_cpu()))

    def benchmark(self, feeds: Mapping[str, np.ndarray], n: int = 200) -> np.ndarray:
        """Return ``n`` per-call times in seconds (after the load-time warm-up)."""
        times = np.empty(n)
        for i in range(n):
            t0 = time.perf_counter()
            self.run(feeds)
            times[i] = time.perf_counter() - t0
        return times

    def __repr__(self) -> str:
        return f"<OnnxRuntime {self.path.name} on {self.provider} (requested {self.requested})>"
