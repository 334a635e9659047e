"""Graph latency for ``bci-app bench``: v1's two graphs per model size and provider, vs torch.

:func:`graph_latency` builds a Brain2Qwerty v1 of each preset on the bundle's channels, exports
and verifies it, and times its keystroke and sentence graphs at batch 1 on every onnxruntime
provider asked for (fp32; on a GPU fp16 too, CUDA graphs on CUDA, a built-once engine with
TensorRT), then the keystroke graph in torch on the same input (eager, bf16 autocast on CUDA,
``torch.compile``). :func:`paper_bundle` makes the untrained paper-size bundle the bench replays
live. torch is imported lazily: without it these parts say ``skipped``.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bci_app.decoders.bundle import Bundle
from bci_app.decoders.runtime import OnnxRuntime

TORCH_MISSING = "skipped: torch is not installed (pip install 'bci-app[train]')"
#: Keys of the sentence so far when the sentence graph's per-keystroke latency is measured.
SENTENCE_KEYS = 30


def available_providers(requested: Sequence[str]) -> list[str]:
    """The providers to time: ``auto`` is every one this onnxruntime offers (CPU first)."""
    import onnxruntime as ort

    offered = ort.get_available_providers()
    names = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
    names["tensorrt"] = "TensorrtExecutionProvider"
    if "auto" in requested:
        return [key for key in ("cpu", "cuda", "tensorrt") if names[key] in offered]
    return list(dict.fromkeys(requested))


def torch_times(module, inputs, n: int, autocast=None) -> np.ndarray:
    """Per-call seconds of a torch module (CUDA calls synchronised), after 10 warm-up calls."""
    import contextlib

    import torch

    cuda = inputs[0].is_cuda
    context = autocast or contextlib.nullcontext
    times = np.empty(n)
    with torch.inference_mode(), context():
        for _ in range(10):
            module(*inputs)
        for i in range(n):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            module(*inputs)
            if cuda:
                torch.cuda.synchronize()
            times[i] = time.perf_counter() - t0
    return times


def _ort_graph_latency(folder: Path, provider: str, feeds: dict, n: int, fp16: bool) -> dict:
    """Keystroke and sentence graphs of ``folder`` on ``provider`` (CUDA: with CUDA graphs too)."""
    out: dict = {}
    for role, feed in feeds.items():
        path = folder / f"{role}.onnx"
        if fp16:
            from models.export import convert_fp16

            path = Path(convert_fp16(path, folder / f"{role}_fp16.onnx")["path"])
        shapes = {name: value.shape for name, value in feed.items()}
        variants = {"": {}}
        if provider == "cuda":
            variants["cuda_graph"] = {"cuda_graph": True}
        if provider == "tensorrt":
            variants[""] = {"shape_ranges": _trt_ranges(shapes)}
        for label, options in variants.items():
            key = f"{role}_{label}" if label else role
            try:
                rt = OnnxRuntime(path, provider, threads=1, warmup_shapes=shapes, **options)
                out[key] = percentiles(rt.benchmark(feed, n=n)) | {"provider": rt.provider}
            except Exception as err:  # onnxruntime's own errors derive from Exception only
                out[key] = f"skipped: {type(err).__name__}: {err}"[:400]
    return out


def _trt_ranges(shapes: dict) -> dict:
    """TensorRT profile: the sentence graph from 1 to 128 keys, everything else as given."""
    ranges = {}
    for name, shape in shapes.items():
        if name in ("embeddings", "key_mask"):
            low, high = list(shape), list(shape)
            low[1], high[1] = 1, 128
            ranges[name] = (tuple(low), tuple(shape), tuple(high))
        else:
            ranges[name] = (tuple(shape),) * 3
    return ranges


def _torch_latency(model, x: np.ndarray, n: int, device: str, compile_mode: str | None) -> dict:
    """The keystroke graph in torch on ``device``: eager, bf16 autocast (CUDA), torch.compile."""
    import torch

    from models.typing.model import KeystrokeGraph

    graph = KeystrokeGraph(model).eval().to(device)
    inputs = (torch.from_numpy(x).to(device), torch.zeros(1, dtype=torch.int64, device=device))
    out: dict = {"device": device, "eager": percentiles(torch_times(graph, inputs, n))}
    if device == "cuda":
        bf16 = functools.partial(torch.autocast, "cuda", dtype=torch.bfloat16)
        out["eager_bf16"] = percentiles(torch_times(graph, inputs, n, autocast=bf16))
    if compile_mode is None:
        out["compile"] = "skipped: --no-compile"
        return out
    try:
        started = time.perf_counter()
        compiled = torch.compile(graph, mode=compile_mode)
        with torch.inference_mode():
            compiled(*inputs)
        seconds = time.perf_counter() - started
        out["compile"] = percentiles(torch_times(compiled, inputs, n)) | {
            "mode": compile_mode,
            "compile_s": round(seconds, 1),
        }
    except Exception as err:  # inductor raises many types (no compiler, unsupported op)
        out["compile"] = f"skipped: torch.compile failed ({type(err).__name__}: {err})"[:300]
    return out


def graph_latency(
    channels,
    configs: Sequence[str],
    providers: Sequence[str],
    n: int,
    *,
    compile_mode: str | None = "default",
) -> dict:
    """Per-keystroke latency of v1's two graphs for each size and provider, vs torch.

    A Brain2Qwerty v1 of each preset (``small``, ``paper``) is built on ``channels`` (untrained:
    latency does not depend on the weights), exported and verified against torch, then timed
    at batch 1: the keystroke graph on one window, the sentence graph on
    :data:`SENTENCE_KEYS` keys. Each onnxruntime provider runs fp32 and, on a GPU, fp16 graphs;
    torch runs the keystroke graph eagerly (CUDA: bf16 autocast too) and through
    ``torch.compile`` on the same input. CPU timings use one thread.
    """
    try:
        import torch

        from models.export import export_model, quiet_exporter
        from models.registry import build_model
    except ImportError:
        return {"skipped": TORCH_MISSING}
    torch.manual_seed(0)
    torch.set_num_threads(1)
    providers = available_providers(providers)
    result: dict = {"providers": providers, "sentence_keys": SENTENCE_KEYS}
    for config in configs:
        model = build_model("brain2qwerty_v1", config, channels.n_channels, channels.positions, 1)
        model = model.eval()
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, channels.n_channels, model.n_times)).astype(np.float32)
        feeds = {
            "keystroke": {"x": x, "subject": np.zeros(1, np.int64)},
            "sentence": {
                "embeddings": rng.standard_normal((1, SENTENCE_KEYS, model.embedding_dim)).astype(
                    np.float32
                ),
                "key_mask": np.ones((1, SENTENCE_KEYS), dtype=bool),
            },
        }
        entry: dict = {"parameters": int(sum(p.numel() for p in model.parameters()))}
        with tempfile.TemporaryDirectory() as tmp:
            with quiet_exporter():
                reports = export_model(model, tmp)
            entry["export_max_abs_diff"] = {k: r["max_abs_diff"] for k, r in reports.items()}
            for provider in providers:
                timed = {"fp32": _ort_graph_latency(Path(tmp), provider, feeds, n, False)}
                if provider != "cpu":
                    timed["fp16"] = _ort_graph_latency(Path(tmp), provider, feeds, n, True)
                entry[f"ort_{provider}"] = timed
        device = "cuda" if torch.cuda.is_available() else "cpu"
        entry["torch"] = _torch_latency(model, x, n, device, compile_mode)
        result[config] = entry
    return result


def percentiles(seconds: np.ndarray) -> dict:
    """p50 and p99 in milliseconds of per-call times in seconds, and their count."""
    p50, p99 = np.percentile(seconds * 1e3, [50, 99])
    return {"p50_ms": float(p50), "p99_ms": float(p99), "n": len(seconds)}


def paper_bundle(bundle: Bundle, out: Path) -> Bundle:
    """An untrained paper-size copy of a v1 typing bundle (same stream, window, LM): for timing.

    Its graphs are exported from a ``paper`` Brain2Qwerty v1 and verified against torch; the
    manifest says ``untrained`` in its name and keeps the bundle's preprocessing and LM.
    """
    import torch

    from bci_app.decoders.bundle import save_bundle
    from models.export import copy_bundle_without_graphs, export_model, quiet_exporter
    from models.registry import build_model, get_config

    torch.manual_seed(0)
    channels = bundle.channels
    model = build_model("brain2qwerty_v1", "paper", channels.n_channels, channels.positions, 1)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_exporter():
        reports = export_model(model, out / "graphs")
    body = copy_bundle_without_graphs(bundle, out)
    body["name"] = f"{bundle.name}-paper-untrained"
    body["model_config"] = get_config("brain2qwerty_v1", "paper").to_dict()
    body["subject"] = {"n_subjects": 1, "default": 0, "labels": ["0"]}
    body["export"] = {
        role: {"max_abs_diff": r["max_abs_diff"], "atol": r["atol"], "precision": "fp32"}
        for role, r in reports.items()
    }
    return save_bundle(out, body, {role: r["path"] for role, r in reports.items()})


def graph_lines(graphs: dict) -> list[str]:
    """Report lines of :func:`graph_latency`: one per size, provider, precision and graph."""
    if "skipped" in graphs:
        return [f"\ngraph latency: {graphs['skipped']}"]
    lines = []
    for config, entry in graphs.items():
        if not isinstance(entry, dict) or "parameters" not in entry:
            continue
        lines.append(
            f"\n{config} Brain2Qwerty v1 ({entry['parameters'] / 1e6:.1f} M parameters), batch 1, "
            f"sentence graph at {graphs['sentence_keys']} keys:"
        )
        for key, timed in entry.items():
            if key.startswith("ort_"):
                for precision, graphs_timed in timed.items():
                    for graph, t in graphs_timed.items():
                        label = f"  ORT {key[4:]} {precision} {graph}"
                        lines.append(_latency_line(label, t))
        for variant, t in entry["torch"].items():
            if variant != "device":
                lines.append(_latency_line(f"  torch {entry['torch']['device']} {variant}", t))
    return lines


def _latency_line(label: str, timed) -> str:
    if isinstance(timed, str):
        return f"{label:<40} {timed}"
    return f"{label:<40} p50 {timed['p50_ms']:8.3f} ms  p99 {timed['p99_ms']:8.3f} ms"
