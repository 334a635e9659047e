"""fp16 export: each graph in float16, checked against fp32, and the same decoded text."""

from __future__ import annotations

import json

import numpy as np
import pytest

from acquisition.simulator import Simulator
from bci_app.decoders.bundle import load_bundle
from bci_app.decoders.manifest import ManifestError
from bci_app.decoders.shipped import SPEECH_BUNDLE, TYPING_BUNDLE
from bci_app.speech.decoder import SpeechDecoder
from bci_app.typing.evaluate import evaluate_bundle
from models.export import FP16_RTOL, ExportMismatchError, convert_fp16, fp16_bundle


@pytest.fixture(scope="module")
def typing_fp16(tmp_path_factory):
    return fp16_bundle(TYPING_BUNDLE, tmp_path_factory.mktemp("fp16") / "typing")


def test_fp16_bundle_says_its_precision_and_check(typing_fp16):
    fp32 = load_bundle(TYPING_BUNDLE)
    assert (
        set(typing_fp16.manifest.graphs) == set(fp32.manifest.graphs) == {"keystroke", "sentence"}
    )
    for role, check in typing_fp16.manifest.export.items():
        assert check.precision == "fp16"
        assert check.max_abs_diff <= check.atol
        assert check.atol >= FP16_RTOL  # rtol times an output scale of at least 1
        # float16 weights: the graph is about half the size
        small = typing_fp16.graph_path(role).stat().st_size
        assert small < 0.6 * fp32.graph_path(role).stat().st_size
    again = load_bundle(typing_fp16.path)  # checksums and manifest valid on reload
    assert again.manifest.export["keystroke"].precision == "fp16"
    assert (typing_fp16.path / "lm.npz").is_file()


def test_fp16_decodes_the_same_text_on_a_fixed_simulated_session(typing_fp16):
    """A noisy session (CER 0.05-0.15 with the shipped bundle): fp16 makes the same text.

    The committed text (LM beam) and the conv-only text are identical; the LM-free transformer
    best path may flip a near-tie (measured: 1 character of 92 at snr 1), so it is held to the
    same CER within 0.02.
    """
    fp32 = load_bundle(TYPING_BUNDLE)
    recording = Simulator("meg", "typing", snr=1.0, subject=0, seed=555).generate(40.0)
    reports = [evaluate_bundle(b, [recording], provider="cpu") for b in (fp32, typing_fp16)]
    sentences = [r["recordings"][0]["sentences"] for r in reports]
    assert [s["texts"]["lm"] for s in sentences[0]] == [s["texts"]["lm"] for s in sentences[1]]
    assert [s["texts"]["conv"] for s in sentences[0]] == [s["texts"]["conv"] for s in sentences[1]]
    cer = [r["overall"]["cer"] for r in reports]
    assert cer[0]["lm"] < 0.5  # the decoder works on this session (and errs on some keys)
    for variant in ("conv", "transformer", "lm"):
        assert cer[1][variant] == pytest.approx(cer[0][variant], abs=0.02)


def test_fp16_speech_bundle_ranks_like_fp32(tmp_path):
    half = fp16_bundle(SPEECH_BUNDLE, tmp_path / "speech")
    decoders = [SpeechDecoder(b, provider="cpu") for b in (load_bundle(SPEECH_BUNDLE), half)]
    shape = (4, decoders[0].n_channels, decoders[0].n_times)
    windows = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ranks = [decoder.rank(windows)[:, :5] for decoder in decoders]
    np.testing.assert_array_equal(ranks[0], ranks[1])


def test_fp16_out_of_range_is_refused_and_bad_precision_too(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    big = np.full((2, 2), 1e6, dtype=np.float32)  # beyond float16's 65504
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(big, "W")],
    )
    src = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    with pytest.raises(ExportMismatchError, match="differs from the fp32 graph"):
        convert_fp16(src, tmp_path / "big16.onnx")

    bundle = fp16_bundle(TYPING_BUNDLE, tmp_path / "typing")
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    manifest["export"]["keystroke"]["precision"] = "fp8"
    (bundle.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=r"export.keystroke.precision.*'fp32' or 'fp16'"):
        load_bundle(bundle.path)
