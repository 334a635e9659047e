"""Decoder bundle: manifest round trip, checksums, stream checks."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from acquisition.channels import ChannelSpec
from bci_app.decoders.bundle import load_bundle, save_bundle


def _identity_graph(path):
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    onnx.save(helper.make_model(graph), path)
    return path


@pytest.fixture
def bundle(tmp_path):
    chans = ChannelSpec(["MEG0113", "MEG0112", "EEG001"], ["mag", "grad", "eeg"], ["T", "T/m", "V"])
    manifest = {
        "name": "toy",
        "task": "typing",
        "stream": {"sfreq": 1000.0, "channels": chans.to_dict()},
    }
    return save_bundle(tmp_path / "b", manifest, {"encoder": _identity_graph(tmp_path / "g.onnx")})


def test_round_trip_and_picks(bundle):
    loaded = load_bundle(bundle.path)
    assert loaded.name == "toy" and loaded.sfreq == 1000.0
    assert loaded.graph_path("encoder").is_file()
    stream = ChannelSpec(
        ["EEG001", "X", "MEG0112", "MEG0113"], ["eeg", "misc", "grad", "mag"], ["V"] * 4
    )
    assert loaded.check_stream(stream, 1000.0) == [3, 2, 0]


def test_stream_mismatch_messages(bundle):
    stream = ChannelSpec(["MEG0113", "MEG0112", "EEG001"], ["mag", "grad", "eeg"], ["T"] * 3)
    with pytest.raises(ValueError, match=r"runs at 512 Hz but the decoder 'toy' expects 1000 Hz"):
        bundle.check_stream(stream, 512.0)
    short = ChannelSpec(["MEG0113", "EEG001"], ["mag", "eeg"], ["T", "V"])
    with pytest.raises(ValueError, match=r"1 of them are not in the stream .*MEG0112"):
        bundle.check_stream(short, 1000.0)
    typed = ChannelSpec(["MEG0113", "MEG0112", "EEG001"], ["mag", "mag", "eeg"], ["T"] * 3)
    with pytest.raises(ValueError, match=r"MEG0112 \(mag vs grad\)"):
        bundle.check_stream(typed, 1000.0)


def test_corrupt_and_foreign_bundles(bundle, tmp_path):
    graph = bundle.graph_path("encoder")
    graph.write_bytes(graph.read_bytes()[:-4])
    with pytest.raises(ValueError, match="does not match its checksum"):
        load_bundle(bundle.path)
    (bundle.path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_bundle(bundle.path)
    (bundle.path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a bci-app decoder bundle"):
        load_bundle(bundle.path)
    with pytest.raises(FileNotFoundError, match="has no manifest.json"):
        load_bundle(tmp_path / "nowhere")


def test_positions_survive_json(tmp_path):
    pos = np.array([[0.01, 0.02, 0.03], [np.nan, np.nan, np.nan]])
    chans = ChannelSpec(["a", "b"], ["eeg", "eeg"], ["V", "V"], pos)
    manifest = {"name": "p", "task": "typing", "stream": {"sfreq": 50, "channels": chans.to_dict()}}
    b = save_bundle(tmp_path / "p", manifest, {})
    back = load_bundle(b.path).channels
    np.testing.assert_array_equal(back.positions, pos)


def test_copy_and_update_keep_the_bundle_and_only_the_bundle(bundle, tmp_path):
    from bci_app.decoders.bundle import copy_bundle, update_manifest
    from bci_app.decoders.shipped import SPEECH_BUNDLE

    (bundle.path / "checkpoint.pt").write_bytes(b"training output")  # beside a trained bundle
    copied = copy_bundle(bundle.path, tmp_path / "shipped")
    assert sorted(p.name for p in copied.path.iterdir()) == ["encoder.onnx", "manifest.json"]
    updated = update_manifest(copied.path, {"metrics": {"held_out": {"cer": 0.1}}})
    assert load_bundle(updated.path).manifest["metrics"] == {"held_out": {"cer": 0.1}}
    assert updated.manifest["graphs"] == copied.manifest["graphs"]  # same files, same checksums
    speech = copy_bundle(SPEECH_BUNDLE, tmp_path / "speech")  # the candidate set comes along
    assert {"candidates.npz", "candidates.json"} <= {p.name for p in speech.path.iterdir()}
    with pytest.raises(ValueError, match="is the bundle itself"):
        copy_bundle(copied, copied.path)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds files and is not a bundle"):
        copy_bundle(copied, tmp_path / "notes")
    assert (tmp_path / "notes" / "a.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match=r"\['graphs'\] are written by save_bundle"):
        update_manifest(copied.path, {"graphs": {}})
