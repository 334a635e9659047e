"""onnxruntime wrapper for live inference: provider choice that is checked, warm-up, IO binding.

onnxruntime silently falls back to the CPU when a requested GPU provider cannot load (missing CUDA
libraries, wrong driver). :class:`OnnxRuntime` asks the session which providers it really got and
either says so (``provider="auto"``) or refuses (``provider="cuda"``/``"tensorrt"``), so a GPU
claim is never made on a CPU session.

Inputs and outputs are bound once per set of input shapes (IO binding): their buffers are
allocated on the session's device at the first call with those shapes (at load for the warm-up
shapes) and reused, so a live call copies the window in and the outputs out, and allocates
nothing. On CUDA, ``cuda_graph=True`` captures the graph once per input shape and replays it
(onnxruntime's ``enable_cuda_graph``; it needs those fixed buffers). With TensorRT the engines
are built at load for the shape ranges given, cached per graph in the user's cache folder
(:func:`engine_cache_dir`) and never built at decode time.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
#: Input shape sets whose buffers are kept (the sentence graph grows by one key per call; the
#: keystroke graph uses one shape).
_MAX_BOUND_SHAPES = 64

ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def default_threads() -> int:
    """Intra-op threads for a live session: up to 4, always leaving one core for acquisition.

    On a 2-core machine that is 1 thread: measured on the default bundle, 2 intra-op threads
    competing with the acquisition worker raised the per-keystroke p99 from ~2-6 ms to 12-21 ms.
    """
    cores = os.cpu_count() or 1
    return max(1, min(4, cores - 1))


def gpu_available() -> bool:
    """Whether this onnxruntime build offers the CUDA provider (its libraries may still fail)."""
    ort = import_optional("onnxruntime")
    return "CUDAExecutionProvider" in ort.get_available_providers()


def cache_root() -> Path:
    """The user's cache folder of bci-app (``$BCI_APP_CACHE``, else the platform's)."""
    if os.environ.get("BCI_APP_CACHE"):
        return Path(os.environ["BCI_APP_CACHE"])
    try:
        import platformdirs
    except ImportError:
        return Path.home() / ".cache" / "bci-app"
    return Path(platformdirs.user_cache_dir("bci-app", appauthor=False))


def engine_cache_dir(graph: str | Path | bytes) -> Path:
    """Folder of the TensorRT engines of one graph: ``<cache>/tensorrt/<sha256 of the graph>``.

    Keyed by the graph's content, so each bundle's graphs (and a re-exported graph) get their own
    engines, and an engine is never used for another graph.
    """
    data = graph if isinstance(graph, bytes) else Path(graph).read_bytes()
    return cache_root() / "tensorrt" / hashlib.sha256(data).hexdigest()[:24]


def _shape_text(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """TensorRT profile syntax: ``x:1x306x25,subject:1``."""
    return ",".join(
        f"{name}:{'x'.join(str(int(d)) for d in shape)}" for name, shape in shapes.items()
    )


class _Bound:
    """The IO binding of one set of input shapes: input and output buffers on the device."""

    def __init__(
        self, binding: Any, inputs: dict[str, Any], outputs: dict[str, Any], graph_id: int
    ) -> None:
        self.binding, self.inputs, self.outputs = binding, inputs, outputs
        self.graph_id = graph_id  # the CUDA graph captured for these shapes (cuda_graph)
        self.run_options: Any = None


class OnnxRuntime:
    """Run one ONNX graph with a verified provider and preallocated inputs and outputs.

    Parameters
    ----------
    path : path-like | bytes
        The ``.onnx`` file, or a serialized graph (a graph built in memory).
    provider : "auto" | "cpu" | "cuda" | "tensorrt"
        ``auto`` takes the best provider this onnxruntime build offers and reports it.
    threads : int | None
        Intra-op threads (default :func:`default_threads`).
    warmup : int
        Runs on zero inputs at load, so the first live window does not pay for allocation.
    warmup_shapes : mapping | None
        Input name -> shape for the warm-up, required when an input has dynamic dimensions other
        than the batch (which is taken as 1).
    cuda_graph : bool
        CUDA only: capture the graph at its first call with each input shape and replay it
        (onnxruntime's ``enable_cuda_graph``). Every output's shape must follow from the inputs'
        (named dimensions shared with an input).
    shape_ranges : mapping | None
        TensorRT only: input name -> ``(min, opt, max)`` shapes the engine is built for (its
        optimisation profile). Default: the warm-up shapes. Engines are built at load and cached
        in :func:`engine_cache_dir`; a call outside the ranges would rebuild one, so give them.
    trt_fp16 : bool
        TensorRT only: let TensorRT pick fp16 kernels.
    constants : mapping | None
        Input name -> array placed on the session's device once, at load, and bound to every
        call (a candidate set scored on the GPU); :meth:`run` then takes the other inputs only.
    """

    def __init__(
        self,
        path: str | Path | bytes,
        provider: str = "auto",
        *,
        threads: int | None = None,
        warmup: int = 3,
        warmup_shapes: Mapping[str, tuple[int, ...]] | None = None,
        cuda_graph: bool = False,
        shape_ranges: Mapping[str, ShapeRange] | None = None,
        trt_fp16: bool = False,
        constants: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self._ort = ort = import_optional("onnxruntime")
        if isinstance(path, bytes):
            model, self.path = path, Path("<in-memory graph>")
        else:
            self.path = Path(path)
            if not self.path.is_file():
                raise FileNotFoundError(f"ONNX graph not found: {self.path}")
            model = str(self.path)
        wanted = self._wanted(provider, ort.get_available_providers())
        self.cuda_graph = bool(cuda_graph) and wanted[0] != "CPUExecutionProvider"
        self.engine_cache = None
        warmup_shapes = dict(warmup_shapes or {})
        provider_options = [
            self._options(name, path, warmup_shapes, shape_ranges, trt_fp16) for name in wanted
        ]
        self.session = self._session(model, threads, wanted, provider_options)
        self.requested = provider
        self.active_providers = tuple(self.session.get_providers())
        self.provider = self.active_providers[0]
        if wanted[0] != "CPUExecutionProvider" and self.provider != wanted[0]:
            if provider != "auto":
                raise RuntimeError(
                    f"onnxruntime fell back from {wanted[0]} to {self.provider} for "
                    f"{self.path.name} (the GPU libraries did not load). {_GPU_HINT}"
                )
            logger.warning("onnxruntime fell back to %s for %s", self.provider, self.path.name)
            self.cuda_graph = False
        self.device = "cuda" if self.provider != "CPUExecutionProvider" else "cpu"
        self._every_input = {i.name: i for i in self.session.get_inputs()}
        self._constants = self._place(constants or {})
        self.inputs = {k: v for k, v in self._every_input.items() if k not in self._constants}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self._output_meta = {o.name: o for o in self.session.get_outputs()}
        self._bound: OrderedDict[tuple, _Bound] = OrderedDict()
        self._n_bound = 0
        self.last_run = -math.inf  # time.perf_counter() at the end of the last run
        self._run_options = ort.RunOptions()
        # Say "no captured graph" explicitly (captured CUDA graphs get their own options per
        # shape, in run()): onnxruntime >= 1.2x looks this entry up on every run with options,
        # and an entry that is not set costs a C++ exception, ~30 us a run (py-spy: 2.6 % of a
        # max-speed replay's decoding thread).
        self._run_options.add_run_config_entry("gpu_graph_id", "-1")
        for _ in range(int(warmup)):
            self.run(self._zeros(warmup_shapes))
        if self.engine_cache and shape_ranges and warmup:
            for end in (0, 2):  # build (or load) the engine at both ends of the profile now
                self.run(self._zeros({k: v[end] for k, v in shape_ranges.items()}))
        logger.info("loaded %s on %s", self.path.name, self.provider)

    def _session(self, model, threads: int | None, wanted: list[str], provider_options) -> Any:
        """The onnxruntime session: sequential, fully optimised, quiet."""
        ort = self._ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or default_threads())
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(
                model, options, providers=wanted, provider_options=provider_options
            )
        except Exception as err:  # onnxruntime raises its own exception types
            raise ValueError(f"Cannot load the ONNX graph {self.path}: {err}") from err

    def _place(self, constants: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Copy the constant inputs to the session's device once."""
        unknown = sorted(set(constants) - set(self._every_input))
        if unknown:
            raise ValueError(
                f"Invalid value for 'constants': {unknown} are not inputs of {self.path.name}; "
                f"it takes {sorted(self._every_input)}."
            )
        placed = {}
        for name, array in constants.items():
            dtype = _NUMPY_TYPES.get(self._every_input[name].type)
            array = np.ascontiguousarray(array, dtype=dtype)
            placed[name] = self._ort.OrtValue.ortvalue_from_numpy(array, self.device, 0)
        return placed

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

    def _options(self, name, path, warmup_shapes, shape_ranges, trt_fp16) -> dict[str, str]:
        """The session options of provider ``name`` (CUDA graph, TensorRT cache and profile)."""
        if name == "CUDAExecutionProvider":
            return {
                "device_id": "0",
                "enable_cuda_graph": "1" if self.cuda_graph else "0",
                "cudnn_conv_algo_search": "EXHAUSTIVE",
                "do_copy_in_default_stream": "1",
            }
        if name != "TensorrtExecutionProvider":
            return {}
        self.engine_cache = engine_cache_dir(path)
        self.engine_cache.mkdir(parents=True, exist_ok=True)
        options = {
            "device_id": "0",
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(self.engine_cache),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(self.engine_cache),
            "trt_fp16_enable": "True" if trt_fp16 else "False",
            "trt_cuda_graph_enable": "True" if self.cuda_graph else "False",
        }
        if shape_ranges:
            for end, key in enumerate(("min", "opt", "max")):
                shapes = {n: r[end] for n, r in shape_ranges.items()}
                options[f"trt_profile_{key}_shapes"] = _shape_text(shapes)
        elif warmup_shapes:
            for key in ("min", "opt", "max"):
                options[f"trt_profile_{key}_shapes"] = _shape_text(warmup_shapes)
        return options

    def _zeros(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        feeds = {}
        for name, meta in self.inputs.items():
            shape = shapes.get(name)
            if shape is None:
                shape = tuple(d if isinstance(d, int) else 1 for d in meta.shape)
            feeds[name] = np.zeros(shape, dtype=_NUMPY_TYPES.get(meta.type, np.float32))
        return feeds

    def _output_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple] | None:
        """Output shapes from the inputs' (named dimensions), or None if one does not follow."""
        sizes = {}
        shapes = {**{k: tuple(v.shape()) for k, v in self._constants.items()}, **shapes}
        for name, meta in self._every_input.items():
            for dim, size in zip(meta.shape, shapes[name]):
                if isinstance(dim, str):
                    sizes[dim] = size
        out = {}
        for name, meta in self._output_meta.items():
            dims = [d if isinstance(d, int) else sizes.get(d) for d in meta.shape]
            if any(d is None for d in dims):
                return None
            out[name] = tuple(dims)
        return out

    def _bind(self, feeds: Mapping[str, np.ndarray]) -> _Bound:
        """The binding for these input shapes: allocated on the device at its first use."""
        ort, device = self._ort, self.device
        shapes = {name: tuple(np.shape(feeds[name])) for name in self.inputs}
        binding = self.session.io_binding()
        inputs = {}
        for name, meta in self.inputs.items():
            dtype = _NUMPY_TYPES.get(meta.type, np.float32)
            inputs[name] = ort.OrtValue.ortvalue_from_shape_and_type(shapes[name], dtype, device, 0)
            binding.bind_ortvalue_input(name, inputs[name])
        for name, value in self._constants.items():
            binding.bind_ortvalue_input(name, value)
        out_shapes = self._output_shapes(shapes)
        if out_shapes is None:
            if self.cuda_graph:
                raise ValueError(
                    f"cuda_graph needs output shapes that follow from the input shapes, but "
                    f"{self.path.name} has outputs {[m.shape for m in self._output_meta.values()]}."
                    " Load it without cuda_graph."
                )
            probe = self.session.io_binding()  # one run tells the output shapes
            for name, value in inputs.items():
                dtype = _NUMPY_TYPES.get(self.inputs[name].type, np.float32)
                value.update_inplace(np.ascontiguousarray(feeds[name], dtype))
                probe.bind_ortvalue_input(name, value)
            for name, value in self._constants.items():
                probe.bind_ortvalue_input(name, value)
            for name in self.outputs:
                probe.bind_output(name, device)
            self.session.run_with_iobinding(probe)
            out_shapes = {n: tuple(v.shape()) for n, v in zip(self.outputs, probe.get_outputs())}
        outputs = {}
        for name in self.outputs:
            dtype = _NUMPY_TYPES.get(self._output_meta[name].type, np.float32)
            outputs[name] = ort.OrtValue.ortvalue_from_shape_and_type(
                out_shapes[name], dtype, device, 0
            )
            binding.bind_ortvalue_output(name, outputs[name])
        self._n_bound += 1
        return _Bound(binding, inputs, outputs, self._n_bound - 1)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph; return outputs by name as numpy arrays (copies, owned by the caller).

        The inputs are copied into the buffers bound for their shapes (on the session's device),
        and the outputs out of theirs; nothing is allocated after the first call with a shape.
        """
        missing = set(self.inputs) - set(feeds)
        if missing:
            raise ValueError(
                f"Missing input(s) {sorted(missing)} for {self.path.name}; it takes "
                f"{sorted(self.inputs)}."
            )
        key = tuple(tuple(np.shape(feeds[name])) for name in self.inputs)
        bound = self._bound.get(key)
        if bound is None:
            bound = self._bound[key] = self._bind(feeds)
            if len(self._bound) > _MAX_BOUND_SHAPES and not self.cuda_graph:
                self._bound.popitem(last=False)
        else:
            self._bound.move_to_end(key)
        for name, value in bound.inputs.items():
            meta = self.inputs[name]
            array = np.ascontiguousarray(feeds[name], dtype=_NUMPY_TYPES.get(meta.type))
            value.update_inplace(array)
        options = bound.run_options or self._run_options
        if self.cuda_graph and bound.run_options is None:
            # one captured CUDA graph per input shape (onnxruntime's gpu_graph_id; -1 = none)
            options = bound.run_options = self._ort.RunOptions()
            options.add_run_config_entry("gpu_graph_id", str(bound.graph_id))
        self.session.run_with_iobinding(bound.binding, options)
        self.last_run = time.perf_counter()
        if self.device != "cpu":  # numpy() copied them from the device already
            return {name: value.numpy() for name, value in bound.outputs.items()}
        return {name: value.numpy().copy() for name, value in bound.outputs.items()}

    def warm(self, idle_s: float = 0.0) -> bool:
        """Re-run the last run's bound inputs (results discarded) if idle for ``idle_s`` seconds.

        A graph that has not run for a while runs several times slower: its weights and
        buffers have left the CPU caches (and on a virtual machine the memory behind them
        is slow to come back). Measured on the shipped keystroke graph, 2-core VM: 0.32 ms
        back to back, 1.6 ms after 0.1 s and 3.9 ms after 0.4 s of other work. The live
        session calls this just before a window is due (a keystroke every ~0.3 s at 1x), so
        the run that counts finds them warm. Returns whether it ran (not before a first run).
        """
        if not self._bound or time.perf_counter() - self.last_run < idle_s:
            return False
        bound = next(reversed(self._bound.values()))
        self.session.run_with_iobinding(bound.binding, bound.run_options or self._run_options)
        self.last_run = time.perf_counter()
        return True

    @property
    def bound_shapes(self) -> list[tuple[tuple[int, ...], ...]]:
        """Input shape sets that have buffers bound, oldest first."""
        return list(self._bound)

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
