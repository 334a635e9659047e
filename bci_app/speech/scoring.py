"""Scoring a speech window against the word heard: where it ranks among the candidates."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def heard_rank(candidates: Iterable[tuple[str, float]], heard: str | None) -> int | None:
    """1-based rank of ``heard`` among ``(word, probability)`` candidates, case aside.

    Returns 0 when it is not among them, None when nothing was heard (a sliding window).
    """
    if not heard:
        return None
    texts = [str(text).lower() for text, _ in candidates]
    return texts.index(heard.lower()) + 1 if heard.lower() in texts else 0


#: Candidate sets at least this large are scored on the GPU when one is asked for (``auto``):
#: below it, one small matrix product on the CPU costs less than the copies to and from it.
DEVICE_MIN_CANDIDATES = 20_000


def similarity_graph(top_k: int, logit_scale: float) -> bytes:
    """ONNX graph: unit queries ``(n, d)`` x candidates ``(m, d)`` -> top-k indices, probabilities.

    Outputs ``indices`` (n, k) int64 (best first), ``probs`` (n, k) (softmax of
    ``logit_scale * cosine`` over all m candidates) and ``scores`` (n, k) cosine similarities.
    Written out with onnx.helper because it is the whole computation (a matrix product, a
    softmax's normaliser and TopK), so that it runs on the GPU through the same runtime as the
    decoders, without torch.
    """
    from onnx import TensorProto, helper

    k = helper.make_tensor("k", TensorProto.INT64, [1], [int(top_k)])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [float(logit_scale)])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Gemm", ["query", "candidates"], ["all_scores"], transB=1),
        helper.make_node("TopK", ["all_scores", "k"], ["scores", "indices"], axis=1),
        helper.make_node("Mul", ["all_scores", "scale"], ["logits"]),
        helper.make_node("ReduceMax", ["logits", "axes"], ["peak"], keepdims=1),
        helper.make_node("Sub", ["logits", "peak"], ["shifted"]),
        helper.make_node("Exp", ["shifted"], ["weights"]),
        helper.make_node("ReduceSum", ["weights", "axes"], ["total"], keepdims=1),
        helper.make_node("Mul", ["scores", "scale"], ["top_logits"]),
        helper.make_node("Sub", ["top_logits", "peak"], ["top_shifted"]),
        helper.make_node("Exp", ["top_shifted"], ["top_weights"]),
        helper.make_node("Div", ["top_weights", "total"], ["probs"]),
    ]
    graph = helper.make_graph(
        nodes,
        "candidate_similarity",
        [
            helper.make_tensor_value_info("query", TensorProto.FLOAT, ["n", "d"]),
            helper.make_tensor_value_info("candidates", TensorProto.FLOAT, ["m", "d"]),
        ],
        [
            helper.make_tensor_value_info("indices", TensorProto.INT64, ["n", "k"]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", "k"]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", "k"]),
        ],
        initializer=[k, scale, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return model.SerializeToString()


class CandidateScorer:
    """Rank a candidate set by cosine similarity: numpy on the CPU, or on the GPU for large sets.

    Parameters
    ----------
    embeddings : array, shape (m, d)
        Unit candidate embeddings.
    top_k : int
        Candidates returned per query.
    logit_scale : float
        Softmax temperature of the probabilities (the bundle's CLIP ``logit_scale``).
    device : "cpu" | "cuda" | "auto"
        ``cpu``: numpy (the default). ``cuda``: the candidates are copied to the GPU once and
        every query is scored there (onnxruntime's CUDA provider; an error without one).
        ``auto``: the GPU when onnxruntime offers CUDA and the set holds at least
        :data:`DEVICE_MIN_CANDIDATES` candidates, else numpy.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        *,
        top_k: int = 10,
        logit_scale: float = 10.0,
        device: str = "cpu",
    ) -> None:
        if device not in ("cpu", "cuda", "auto"):
            raise ValueError(
                f"Invalid value for 'device': {device!r}; use 'cpu', 'cuda' or 'auto'."
            )
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.top_k = min(int(top_k), len(self.embeddings))
        self.logit_scale = float(logit_scale)
        self._runtime = None
        auto = device == "auto"
        if auto:
            device = "cpu"
            if len(self.embeddings) >= DEVICE_MIN_CANDIDATES:
                from bci_app.decoders.runtime import gpu_available

                device = "cuda" if gpu_available() else "cpu"
        if device == "cuda":
            self._runtime = self._device_runtime("cuda", fallback=auto)
            device = "cpu" if self._runtime is None else device
        self.device = device

    def _device_runtime(self, provider: str, fallback: bool) -> Any:
        """The similarity graph with the candidates on the device (None: fell back to numpy)."""
        from bci_app.decoders.runtime import OnnxRuntime

        try:
            return OnnxRuntime(
                similarity_graph(self.top_k, self.logit_scale),
                provider,
                threads=1,
                constants={"candidates": self.embeddings},
                warmup_shapes={"query": (1, self.embeddings.shape[1])},
            )
        except RuntimeError as err:  # the CUDA libraries did not load
            if not fallback:
                raise
            logger.warning("candidate scoring stays on the CPU: %s", err)
            return None

    def top(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k of unit ``queries`` (n, d): indices (best first), probabilities and cosines."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self._runtime is not None:
            out = self._runtime.run({"query": queries})
            return out["indices"], out["probs"], out["scores"]
        scores = queries @ self.embeddings.T
        logits = self.logit_scale * scores
        peak = logits.max(axis=1, keepdims=True)
        total = np.exp(logits - peak).sum(axis=1, keepdims=True)
        # argpartition picks the k best in O(m); only those k are sorted (stable: ties in order)
        k = self.top_k
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else None
        if part is None:
            part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
        part = np.sort(part, axis=1)
        picked = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-picked, axis=1, kind="stable")
        indices = np.take_along_axis(part, order, axis=1)
        top_scores = np.take_along_axis(scores, indices, axis=1)
        probs = np.exp(self.logit_scale * top_scores - peak) / total
        return indices, probs, top_scores
