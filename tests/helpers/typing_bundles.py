"""Test helpers: typing decoder bundles built from real ONNX graphs, and synthetic recordings.

``template_bundle`` writes a Brain2Qwerty-v1-shaped bundle whose graphs are small hand-made ONNX
graphs (no torch): the keystroke graph is a bank of matched filters, one per class (a window that
holds class ``c``'s template gives the largest logit to ``c``), and the sentence graph adds the
mean embedding of the sentence's keystrokes to every keystroke, so, like the bidirectional
transformer, each new keystroke changes the posteriors of the earlier ones. ``keystroke_recording``
places those templates after each key press of a 50 Hz recording, so the decoding quality is
known by construction. ``torch_bundle`` exports a real ``small`` model (needs torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from acquisition.channels import ChannelSpec
from acquisition.recording import Marker, Recording, key_marker
from bci_app.decoders.bundle import Bundle, save_bundle
from bci_app.lm.model import default_lm
from bci_app.processing.preprocessing import PreprocessConfig
from bci_app.typing.alphabet import CLASSES, N_CLASSES, text_to_classes

WINDOW = {"tmin": -0.2, "tmax": 0.3, "sfreq": 50.0, "baseline": [None, 0.0], "clamp": 5.0}
N_TIMES = 25
N_BASELINE = 10
SFREQ = 50.0


def _save(nodes, name, inputs, outputs, initializers, path) -> Path:
    graph = helper.make_graph(
        nodes, name, inputs, outputs, [numpy_helper.from_array(a, n) for n, a in initializers]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return Path(path)


def keystroke_graph(path, weights: np.ndarray, subject_bias: np.ndarray, scale: float) -> Path:
    """Graph: x (B, C, T), subject (B,) -> embedding = flat(x) @ W + bias[subject], conv_logits."""
    n_channels, n_times, dim = weights.shape
    f32 = TensorProto.FLOAT
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["projected"]),
        helper.make_node("Gather", ["S", "subject"], ["bias"], axis=0),
        helper.make_node("Add", ["projected", "bias"], ["embedding"]),
        helper.make_node("Mul", ["embedding", "scale"], ["conv_logits"]),
    ]
    return _save(
        nodes,
        "keystroke",
        [
            helper.make_tensor_value_info("x", f32, ["batch", n_channels, n_times]),
            helper.make_tensor_value_info("subject", TensorProto.INT64, ["batch"]),
        ],
        [
            helper.make_tensor_value_info("embedding", f32, ["batch", dim]),
            helper.make_tensor_value_info("conv_logits", f32, ["batch", dim]),
        ],
        [
            ("W", weights.reshape(n_channels * n_times, dim).astype(np.float32)),
            ("S", subject_bias.astype(np.float32)),
            ("scale", np.float32(scale)),
        ],
        path,
    )


def sentence_graph(path, dim: int, context: float, scale: float) -> Path:
    """Sentence graph: (B, K, d) embeddings -> scale * (e + context * masked mean) logits."""
    f32 = TensorProto.FLOAT
    nodes = [
        helper.make_node("Cast", ["key_mask"], ["mask_f"], to=f32),
        helper.make_node("Unsqueeze", ["mask_f", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["embeddings", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["total"], keepdims=1),
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["safe_count"]),
        helper.make_node("Div", ["total", "safe_count"], ["mean"]),
        helper.make_node("Mul", ["mean", "context"], ["shift"]),
        helper.make_node("Add", ["embeddings", "shift"], ["mixed"]),
        helper.make_node("Mul", ["mixed", "scale"], ["logits"]),
    ]
    return _save(
        nodes,
        "sentence",
        [
            helper.make_tensor_value_info("embeddings", f32, ["batch", "n_keys", dim]),
            helper.make_tensor_value_info("key_mask", TensorProto.BOOL, ["batch", "n_keys"]),
        ],
        [helper.make_tensor_value_info("logits", f32, ["batch", "n_keys", dim])],
        [
            ("axis1", np.array([1], np.int64)),
            ("axis2", np.array([2], np.int64)),
            ("one", np.float32(1.0)),
            ("context", np.float32(context)),
            ("scale", np.float32(scale)),
        ],
        path,
    )


def ctc_graph(path, weights: np.ndarray, blank_bias: float) -> Path:
    """CTC graph: x (B, C, T), subject (B,) -> log_softmax(x^T @ W + bias[subject]), (B, T, 30)."""
    n_channels = weights.shape[0]
    f32 = TensorProto.FLOAT
    bias = np.zeros((2, N_CLASSES + 1), np.float32)
    bias[:, N_CLASSES] = blank_bias
    nodes = [
        helper.make_node("Transpose", ["x"], ["frames"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["frames", "W"], ["scores"]),
        helper.make_node("Gather", ["S", "subject"], ["bias"], axis=0),
        helper.make_node("Unsqueeze", ["bias", "axis1"], ["bias3"]),
        helper.make_node("Add", ["scores", "bias3"], ["logits"]),
        helper.make_node("LogSoftmax", ["logits"], ["log_probs"], axis=-1),
    ]
    return _save(
        nodes,
        "ctc",
        [
            helper.make_tensor_value_info("x", f32, ["batch", n_channels, "n_times"]),
            helper.make_tensor_value_info("subject", TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor_value_info("log_probs", f32, ["batch", "n_times", N_CLASSES + 1])],
        [
            ("W", weights.astype(np.float32)),
            ("S", bias),
            ("axis1", np.array([1], np.int64)),
        ],
        path,
    )


def ctc_bundle(
    path: Path, channels: ChannelSpec, preprocessing: PreprocessConfig, *, seed: int = 0
) -> Bundle:
    """Write a v2-shaped bundle whose ``ctc`` graph is a per-sample linear read-out."""
    path.mkdir(parents=True, exist_ok=True)
    n_channels = len(preprocessing.ch_names or channels.names)
    weights = np.random.default_rng(seed).normal(size=(n_channels, N_CLASSES + 1))
    graph = ctc_graph(path / "c.onnx", weights, blank_bias=3.0)
    default_lm(6).save(path / "lm.npz")
    man = manifest("ctc-test", "brain2qwerty_v2", channels, preprocessing.sfreq_in, preprocessing)
    bundle = save_bundle(path, man, {"ctc": graph})
    graph.unlink()
    return bundle


def templates(n_channels: int, seed: int = 0) -> np.ndarray:
    """One (n_channels, N_TIMES) pattern per class, zero over the baseline samples."""
    rng = np.random.default_rng(seed)
    out = np.zeros((N_CLASSES, n_channels, N_TIMES))
    out[:, :, N_BASELINE:] = rng.normal(size=(N_CLASSES, n_channels, N_TIMES - N_BASELINE))
    return out


def manifest(
    name: str,
    arch: str,
    channels: ChannelSpec,
    sfreq: float,
    preprocessing: PreprocessConfig,
    *,
    task: str = "typing",
    lm_weight: float = 0.5,
    window: dict | None = None,
    model_config: dict | None = None,
) -> dict:
    """A manifest with the keys 'bci-app train' writes."""
    return {
        "name": name,
        "task": task,
        "arch": arch,
        "model_config": model_config or {},
        "stream": {"sfreq": sfreq, "channels": channels.to_dict()},
        "preprocessing": preprocessing.to_dict(),
        "window": dict(WINDOW if window is None else window),
        "classes": list(CLASSES),
        "lm": {"file": "lm.npz", "order": 6, "weight": lm_weight},
        "decoding": {"top_k": 5, "beam_width": 30},
        "subject": {"n_subjects": 2, "default": 1},
        "provenance": {"source": "tests"},
        "metrics": {},
    }


def template_bundle(
    path: Path,
    channels: ChannelSpec,
    preprocessing: PreprocessConfig,
    *,
    sfreq: float | None = None,
    seed: int = 0,
    context: float = 0.3,
    scale: float = 4.0,
    task: str = "typing",
    random_weights: bool = False,
) -> Bundle:
    """Write a template (matched-filter) v1 bundle for ``channels``; see the module docstring."""
    path.mkdir(parents=True, exist_ok=True)
    n_channels = len(preprocessing.ch_names or channels.names)
    bank = templates(n_channels, seed)
    if random_weights:
        bank = np.random.default_rng(seed + 1).normal(size=bank.shape) * 0.05
        weights = bank.transpose(1, 2, 0)
    else:
        energy = (bank**2).sum(axis=(1, 2))
        weights = (bank / energy[:, None, None]).transpose(1, 2, 0)
    bias = np.zeros((2, N_CLASSES))
    graphs = {
        "keystroke": keystroke_graph(path / "k.onnx", weights, bias, scale),
        "sentence": sentence_graph(path / "s.onnx", N_CLASSES, context, scale),
    }
    default_lm(6).save(path / "lm.npz")
    man = manifest(
        "template-test",
        "brain2qwerty_v1",
        channels,
        sfreq or preprocessing.sfreq_in,
        preprocessing,
        task=task,
    )
    bundle = save_bundle(path, man, graphs)
    for graph in graphs.values():
        graph.unlink()
    return bundle


def keystroke_recording(
    sentences: Sequence[str],
    n_channels: int = 4,
    *,
    noise: float = 0.0,
    seed: int = 0,
    key_gap_s: float = 0.6,
    markers: bool = True,
) -> Recording:
    """A 50 Hz recording whose key presses each evoke their class template (plus noise)."""
    rng = np.random.default_rng(seed + 100)
    bank = templates(n_channels)
    step = round(key_gap_s * SFREQ)
    events, marks, position = [], [], step
    for text in sentences:
        marks.append(Marker(position / SFREQ, f"sentence_start:{text}"))
        position += step
        for char in text:
            events.append((position, char))
            marks.append(Marker(position / SFREQ, key_marker(char)))
            position += step
        marks.append(Marker(position / SFREQ, f"sentence_end:{text}"))
        position += 2 * step
    data = noise * rng.normal(size=(position + step, n_channels))
    for anchor, char in events:
        classes = text_to_classes(char)
        if classes.size:
            data[anchor - N_BASELINE : anchor - N_BASELINE + N_TIMES] += bank[classes[0]].T
    channels = ChannelSpec.generic(n_channels, "eeg", "V")
    return Recording(
        data=data.astype(np.float32),
        timestamps=np.arange(len(data)) / SFREQ,
        sfreq=SFREQ,
        channels=channels,
        markers=marks if markers else [],
        name="synthetic-typing",
    )


def identity_preprocessing(channels: ChannelSpec) -> PreprocessConfig:
    """No filter, no resampling, no scaling: windows are the recorded samples."""
    return PreprocessConfig(sfreq_in=SFREQ, ch_names=tuple(channels.names))


def torch_bundle(path: Path, arch: str, recording: Recording, config: dict | None = None):
    """Export a ``small`` model (random weights) for ``recording``'s channels (needs torch).

    Returns ``(bundle, model)``.
    """
    import torch

    from bci_app.processing.preprocessing import fit_scaler
    from models.export import export_model
    from models.registry import build_model

    torch.manual_seed(0)
    pre = fit_scaler(recording, PreprocessConfig.brain2qwerty(recording.sfreq))
    positions = np.random.default_rng(0).uniform(size=(recording.channels.n_channels, 2))
    model = build_model(arch, config or "small", recording.channels.n_channels, positions, 2)
    reports = export_model(model, path / "graphs")
    graphs = {role: report["path"] for role, report in reports.items()}
    (path / "bundle").mkdir(parents=True)
    default_lm(6).save(path / "bundle" / "lm.npz")
    man = manifest(
        f"torch-{arch}",
        arch,
        recording.channels,
        recording.sfreq,
        pre,
        model_config=model.config.to_dict(),
    )
    return save_bundle(path / "bundle", man, graphs), model
