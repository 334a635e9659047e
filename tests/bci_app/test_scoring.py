"""Candidate scoring: numpy on the CPU and the ONNX graph the GPU runs, on the same sets."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from bci_app.decoders.runtime import OnnxRuntime
from bci_app.speech.decoder import normalize
from bci_app.speech.scoring import CandidateScorer, similarity_graph


def _unit(rng, n, d=64):
    return normalize(rng.standard_normal((n, d)).astype(np.float32))


def _reference(queries, candidates, k, scale):
    """The speech decoder's own rule: full softmax and a stable argsort of every candidate."""
    scores = queries @ candidates.T
    logits = scale * scores
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(probs, order, axis=1)


@pytest.mark.parametrize("n_candidates", [7, 5000])
def test_numpy_top_k_equals_the_full_sort(n_candidates):
    rng = np.random.default_rng(n_candidates)
    candidates, queries = _unit(rng, n_candidates), _unit(rng, 3)
    scorer = CandidateScorer(candidates, top_k=10, logit_scale=20.0)
    indices, probs, scores = scorer.top(queries)
    want_idx, want_probs = _reference(queries, candidates, 10, 20.0)
    assert scorer.device == "cpu" and indices.shape == (3, min(10, n_candidates))
    np.testing.assert_array_equal(indices, want_idx)
    np.testing.assert_allclose(probs, want_probs, rtol=1e-5)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ candidates.T, indices, 1))


def test_the_device_graph_computes_what_numpy_does():
    """The graph CandidateScorer(device='cuda') runs, run here by onnxruntime's CPU provider.

    Candidates are bound once (``constants``); each call only copies the query in.
    """
    rng = np.random.default_rng(0)
    candidates, queries = _unit(rng, 20_000), _unit(rng, 2)
    graph = OnnxRuntime(
        similarity_graph(10, 20.0),
        "cpu",
        constants={"candidates": candidates},
        warmup_shapes={"query": (1, 64)},
    )
    assert set(graph.inputs) == {"query"}  # the candidate set is not fed per call
    out = graph.run({"query": queries})
    want_idx, want_probs = _reference(queries, candidates, 10, 20.0)
    np.testing.assert_array_equal(out["indices"], want_idx)
    np.testing.assert_allclose(out["probs"], want_probs, rtol=1e-4, atol=1e-9)
    # one query at a time (live) gives the same as the batch
    single = graph.run({"query": queries[1:]})
    np.testing.assert_array_equal(single["indices"][0], out["indices"][1])


def test_device_choice():
    rng = np.random.default_rng(1)
    small = _unit(rng, 50)
    assert CandidateScorer(small, device="auto").device == "cpu"  # too few to pay the copies
    with pytest.raises(ValueError, match="Invalid value for 'device'"):
        CandidateScorer(small, device="gpu")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(RuntimeError, match="'cuda' provider was requested"):
            CandidateScorer(small, device="cuda")
        assert CandidateScorer(_unit(rng, 20_000), device="auto").device == "cpu"
