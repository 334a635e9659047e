"""ONNX export with the dynamo exporter, verified in onnxruntime against torch eager.

:func:`export_onnx` writes one graph and checks it on fresh random inputs whose dynamic axes have
other sizes than the example (so a graph that silently specialised on the example's batch size or
length fails here, not live). Models list their graphs as :class:`ExportGraph` (``export_graphs()``
on each registered model) and :func:`export_model` writes them all.

Weights are embedded in the ``.onnx`` file (one self-contained file) unless they exceed
:data:`EXTERNAL_DATA_BYTES`; then they go to ``<file>.data`` next to it (ONNX protobuf files are
limited to 2 GB). Every model of this project, ``paper`` sizes included, stays embedded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

#: Default bound on ``max |onnxruntime - torch|`` for float32 graphs. Float32 reorderings of a
#: few thousand multiply-adds differ by ~1e-6 relative; 1e-4 absolute leaves room for deep graphs
#: while catching any real mismatch (a wrong op or mask gives errors of order 1e-2 and up).
DEFAULT_ATOL = 1e-4
#: Weights above this size are written as external data next to the ``.onnx`` file.
EXTERNAL_DATA_BYTES = 1 << 30


class ExportMismatchError(RuntimeError):
    """The exported graph's outputs differ from torch's by more than the allowed bound."""


@dataclass
class ExportGraph:
    """One graph a model exports: the module, example inputs, names and dynamic axes.

    ``dynamic_axes`` maps an input name to ``{axis: dim name or torch.export.Dim}``; axes with the
    same name share one symbolic size.
    """

    module: nn.Module
    example_inputs: tuple[Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: Mapping[str, Mapping[int, Any]] = field(default_factory=dict)


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporter's INFO chatter (graph passes) and its torchvision notice."""
    names = ("onnxscript", "onnx_ir", "torch.onnx._internal.exporter._registration")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _dynamic_shapes(
    input_names: Sequence[str], dynamic_axes: Mapping[str, Mapping[int, Any]]
) -> tuple[dict[int, Any] | None, ...]:
    """Turn ``{input: {axis: name | Dim}}`` into torch.export's per-input tuple of dicts."""
    unknown = sorted(set(dynamic_axes) - set(input_names))
    if unknown:
        raise ValueError(
            f"Invalid value for 'dynamic_axes': inputs {unknown} are not in "
            f"input_names={list(input_names)}."
        )
    dims: dict[str, Any] = {}
    shapes = []
    for name in input_names:
        axes = dynamic_axes.get(name)
        if not axes:
            shapes.append(None)
            continue
        spec = {}
        for axis, dim in axes.items():
            if isinstance(dim, str):
                dim = dims.setdefault(dim, torch.export.Dim(dim, min=1))
            spec[int(axis)] = dim
        shapes.append(spec)
    return tuple(shapes)


def fresh_inputs(
    example_inputs: Sequence[Tensor],
    input_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, Any]],
    grow: int = 3,
    seed: int = 0,
) -> tuple[Tensor, ...]:
    """Random inputs like the example, with every dynamic axis ``grow`` longer.

    Float inputs are standard normal; integer and bool inputs are drawn from the values the
    example holds (so subject indices stay valid and masks keep both states).
    """
    generator = torch.Generator().manual_seed(seed)
    out = []
    for name, example in zip(input_names, example_inputs, strict=True):
        shape = list(example.shape)
        for axis in dynamic_axes.get(name, {}):
            shape[int(axis)] += grow
        if example.is_floating_point():
            value = torch.randn(shape, generator=generator, dtype=example.dtype)
        else:
            pool = example.reshape(-1).cpu()
            index = torch.randint(len(pool), shape, generator=generator)
            value = pool[index]
        out.append(value.to(example.device))
    return tuple(out)


def _to_numpy(outputs: Any) -> list[np.ndarray]:
    """Flatten a tensor or tuple of tensors into numpy arrays."""
    if isinstance(outputs, Tensor):
        outputs = (outputs,)
    return [o.detach().cpu().numpy() for o in outputs]


def _param_bytes(module: nn.Module) -> int:
    """Bytes of parameters and buffers."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def export_onnx(
    module: nn.Module,
    example_inputs: Sequence[Tensor],
    path: str | os.PathLike,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, Any]] | None = None,
    check_inputs: Sequence[Sequence[Tensor]] | None = None,
    atol: float = DEFAULT_ATOL,
    external_data: bool | None = None,
) -> dict[str, Any]:
    """Export ``module`` to ONNX (dynamo exporter), then verify it in onnxruntime against torch.

    Parameters
    ----------
    module : nn.Module
        Exported in eval mode (the training flags of it and its submodules are restored).
    example_inputs : sequence of Tensor
        Inputs used to trace the graph.
    path : path-like
        Destination ``.onnx`` file (parent folders are created).
    input_names, output_names : sequence of str
        Names of the graph's inputs and outputs, in order.
    dynamic_axes : dict, optional
        ``{input_name: {axis: dim_name or torch.export.Dim}}``; equal names share one size.
    check_inputs : sequence of input tuples, optional
        Inputs to compare torch and onnxruntime on. Default: the example inputs and
        :func:`fresh_inputs` (every dynamic axis 3 longer).
    atol : float
        Largest allowed ``max |onnxruntime - torch|`` over all outputs and checks.
    external_data : bool, optional
        Write weights to a side file. Default: only above :data:`EXTERNAL_DATA_BYTES`.

    Returns
    -------
    report : dict
        ``path``, ``max_abs_diff`` (over all checks and outputs), ``max_abs_diff_per_output``,
        ``check_shapes`` (input shapes of each check), ``atol``, ``external_data``, ``file_bytes``.

    Raises
    ------
    ExportMismatchError
        If onnxruntime and torch differ by more than ``atol`` (or in output shapes).
    """
    import onnxruntime as ort

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes = dict(dynamic_axes or {})
    inputs = tuple(example_inputs)
    if len(input_names) != len(inputs):
        raise ValueError(
            f"Invalid value for 'input_names': {len(input_names)} names for {len(inputs)} inputs."
        )
    if external_data is None:
        external_data = _param_bytes(module) > EXTERNAL_DATA_BYTES
    modes = {sub: sub.training for sub in module.modules()}
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The exporter warns about its own internals (e.g. deprecated torch APIs it calls);
            # pytest turns warnings into errors, and they say nothing about this model.
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                inputs,
                dynamo=True,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_shapes=_dynamic_shapes(input_names, dynamic_axes),
                optimize=True,
                verbose=False,
            )
            program.save(str(path), external_data=external_data)
        if check_inputs is None:
            check_inputs = [inputs, fresh_inputs(inputs, input_names, dynamic_axes)]
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        per_output = np.zeros(len(output_names))
        for check in check_inputs:
            with torch.no_grad():
                expected = _to_numpy(module(*check))
            feed = {n: t.detach().cpu().numpy() for n, t in zip(input_names, check, strict=True)}
            got = session.run(list(output_names), feed)
            for i, (want, have) in enumerate(zip(expected, got, strict=True)):
                if want.shape != have.shape:
                    raise ExportMismatchError(
                        f"Output '{output_names[i]}' of {path.name} has shape {have.shape} in "
                        f"onnxruntime but {want.shape} in torch for inputs of shapes "
                        f"{[tuple(t.shape) for t in check]}: a dynamic axis was specialised."
                    )
                per_output[i] = max(per_output[i], float(np.max(np.abs(want - have), initial=0.0)))
    finally:
        for sub, mode in modes.items():
            sub.training = mode
    max_abs_diff = float(per_output.max(initial=0.0))
    if not max_abs_diff <= atol:
        raise ExportMismatchError(
            f"Exported graph {path} differs from torch: max |onnxruntime - torch| = "
            f"{max_abs_diff:.3g} > atol={atol:g} (per output: "
            f"{dict(zip(output_names, per_output.tolist()))}). The graph does not compute what "
            "the model computes; do not ship it."
        )
    return {
        "path": str(path),
        "max_abs_diff": max_abs_diff,
        "max_abs_diff_per_output": dict(zip(output_names, per_output.tolist())),
        "check_shapes": [[tuple(t.shape) for t in check] for check in check_inputs],
        "atol": atol,
        "external_data": bool(external_data),
        "file_bytes": path.stat().st_size,
    }


def export_model(
    model: nn.Module, out_dir: str | os.PathLike, atol: float = DEFAULT_ATOL
) -> dict[str, dict[str, Any]]:
    """Export every graph of ``model.export_graphs()`` to ``out_dir/<graph>.onnx``, verified.

    Returns ``{graph name: export_onnx report}``.
    """
    if not hasattr(model, "export_graphs"):
        raise ValueError(
            f"Invalid value for 'model': {type(model).__name__} has no export_graphs() method, so "
            "its ONNX graphs are unknown. Register models that list their graphs."
        )
    modes = {sub: sub.training for sub in model.modules()}
    model.eval()
    try:
        graphs = model.export_graphs()
    finally:
        for sub, mode in modes.items():
            sub.training = mode
    reports = {}
    for name, graph in graphs.items():
        reports[name] = export_onnx(
            graph.module,
            graph.example_inputs,
            Path(out_dir) / f"{name}.onnx",
            input_names=graph.input_names,
            output_names=graph.output_names,
            dynamic_axes=graph.dynamic_axes,
            atol=atol,
        )
    return reports


def trained_sections(meta: dict, reports: dict) -> dict:
    """Manifest sections every exported decoder has: subjects, provenance, metrics, ONNX check.

    ``meta`` is a training checkpoint's metadata, ``reports`` the per-graph ONNX-vs-torch checks.
    """
    return {
        "subject": {
            "n_subjects": meta["n_subjects"],
            "default": 0,
            "labels": meta["subject_labels"],
        },
        "provenance": meta["provenance"],
        "metrics": meta["metrics"],
        "export": {
            role: {
                "max_abs_diff": r["max_abs_diff"],
                "atol": r["atol"],
                "precision": r.get("precision", "fp32"),
            }
            for role, r in reports.items()
        },
    }


#: Bound on ``max |fp16 graph - fp32 graph|`` relative to the largest fp32 output (at least 1):
#: float16 keeps 11 significant bits (relative rounding 4.9e-4 per op); over a few dozen layers
#: errors of a few 1e-4 of the output's scale are expected, and 1e-2 still catches an op that
#: overflowed or lost its range (errors of order 1 and up).
FP16_RTOL = 1e-2
#: Precisions a graph can be exported in (``export.<role>.precision`` in the manifest).
PRECISIONS = ("fp32", "fp16")
_CHECK_SIZES = (1, 5)  # sizes given to every dynamic axis of the fp16 check inputs


def _graph_feeds(session: Any, size: int, seed: int) -> dict[str, np.ndarray]:
    """Random inputs for every input of ``session``; dynamic axes get ``size``."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for meta in session.get_inputs():
        shape = [d if isinstance(d, int) else size for d in meta.shape]
        if meta.type == "tensor(float)":
            feeds[meta.name] = rng.standard_normal(shape).astype(np.float32)
        elif meta.type == "tensor(bool)":
            feeds[meta.name] = np.ones(shape, dtype=bool)
        else:  # indices (the subject): 0 is always valid
            feeds[meta.name] = np.zeros(shape, dtype=np.int64)
    return feeds


def convert_fp16(
    src: str | os.PathLike, dst: str | os.PathLike, *, rtol: float = FP16_RTOL
) -> dict[str, Any]:
    """Write a float16 copy of a verified float32 graph, checked against it in onnxruntime.

    Weights and arithmetic become float16; inputs and outputs stay float32 (the runtime and the
    decoders read the same tensors either way). The conversion is onnxruntime's own
    (``onnxruntime.transformers.float16``, the onnxconverter-common converter).

    Returns
    -------
    report : dict
        ``path``, ``precision`` ("fp16"), ``max_abs_diff`` (fp16 vs fp32 graph over all outputs
        and checks), ``atol`` (the bound it met: ``rtol * max(1, max |fp32 output|)``),
        ``check_sizes`` and ``file_bytes``.

    Raises
    ------
    ExportMismatchError
        If the fp16 graph differs from the fp32 one by more than the bound.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src, dst = Path(src), Path(dst)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter warns for each value it clamps
        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    providers = ["CPUExecutionProvider"]
    reference = ort.InferenceSession(str(src), providers=providers)
    try:
        half = ort.InferenceSession(str(dst), providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types
        raise ExportMismatchError(
            f"The fp16 copy of {src.name} does not load in onnxruntime ({err}). Ship the fp32 "
            "graph."
        ) from err
    diff, scale = 0.0, 1.0
    for seed, size in enumerate(_CHECK_SIZES):
        feeds = _graph_feeds(reference, size, seed)
        for want, have in zip(reference.run(None, feeds), half.run(None, feeds), strict=True):
            want, have = np.asarray(want, np.float64), np.asarray(have, np.float64)
            scale = max(scale, float(np.max(np.abs(want), initial=0.0)))
            diff = max(diff, float(np.max(np.abs(want - have), initial=0.0)))
    atol = rtol * scale
    if not diff <= atol:  # also refuses NaN
        raise ExportMismatchError(
            f"The fp16 copy of {src.name} differs from the fp32 graph: max |fp16 - fp32| = "
            f"{diff:.3g} > {atol:.3g} ({rtol:g} of the output scale {scale:.3g}). A value "
            "leaves float16's range in this model; ship the fp32 graph."
        )
    return {
        "path": str(dst),
        "precision": "fp16",
        "max_abs_diff": diff,
        "atol": atol,
        "check_sizes": list(_CHECK_SIZES),
        "file_bytes": dst.stat().st_size,
    }


def fp16_bundle(
    src: str | os.PathLike, out_dir: str | os.PathLike, *, rtol: float = FP16_RTOL
) -> Any:
    """Copy a decoder bundle with every graph in float16 (checked); return the new Bundle.

    The manifest keeps everything but the graphs' checksums and says ``precision: "fp16"`` in
    each ``export.<role>`` entry, with the fp16-vs-fp32 check (``max_abs_diff``, ``atol``).
    Files besides the graphs (LM, candidates) are copied as they are.
    """
    from bci_app.decoders.bundle import load_bundle, save_bundle

    bundle = load_bundle(src)
    out = Path(out_dir)
    if out.resolve() == bundle.path.resolve():
        raise ValueError(
            f"Invalid value for 'out_dir': it is the source bundle {bundle.path}; give a new "
            "folder."
        )
    body = copy_bundle_without_graphs(bundle, out)
    checks = dict(body.get("export") or {})
    graphs = {}
    for role in bundle.manifest.graphs:
        report = convert_fp16(bundle.graph_path(role), out / f"{role}.onnx", rtol=rtol)
        checks[role] = {
            **checks.get(role, {}),
            "precision": "fp16",
            "max_abs_diff": report["max_abs_diff"],
            "atol": report["atol"],
        }
        graphs[role] = out / f"{role}.onnx"
    body["export"] = checks
    return save_bundle(out, body, graphs)


def copy_bundle_without_graphs(bundle, out: Path) -> dict:
    """Copy a bundle's files except its graphs and manifest into ``out``.

    Returns the manifest as a dict without its ``graphs`` section, for the caller to fill with
    the graphs it writes.
    """
    import shutil

    from bci_app.decoders.bundle import MANIFEST

    out.mkdir(parents=True, exist_ok=True)
    graph_files = {entry.file for entry in bundle.manifest.graphs.values()}
    for item in bundle.path.iterdir():
        if item.is_file() and item.name not in graph_files and item.name != MANIFEST:
            shutil.copy2(item, out / item.name)
    body = bundle.manifest.to_dict()
    body.pop("graphs")
    return body
