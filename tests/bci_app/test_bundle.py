"""Decoder bundle: typed manifest (validation, round trip), checksums, graph and stream checks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from acquisition.channels import ChannelSpec
from bci_app.decoders.bundle import (
    Bundle,
    load_bundle,
    save_bundle,
    sha256_file,
    update_manifest,
)
from bci_app.decoders.manifest import Manifest, ManifestError, Window, thaw
from bci_app.decoders.shipped import BUNDLES_DIR, SPEECH_BUNDLE, TYPING_BUNDLE

SHIPPED = sorted(p.parent for p in BUNDLES_DIR.glob("*/manifest.json"))


def _identity_graph(path, shape=("batch", 3)):
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
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
    with pytest.raises(ValueError, match="the 'encoder' graph encoder.onnx is not a readable ONNX"):
        load_bundle(bundle.path, verify=False)  # no checksum: the graph check still reads it
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
    from bci_app.decoders.bundle import copy_bundle

    (bundle.path / "checkpoint.pt").write_bytes(b"training output")  # beside a trained bundle
    copied = copy_bundle(bundle.path, tmp_path / "shipped")
    assert sorted(p.name for p in copied.path.iterdir()) == ["encoder.onnx", "manifest.json"]
    updated = update_manifest(copied.path, {"metrics": {"held_out": {"cer": 0.1}}})
    assert thaw(load_bundle(updated.path).manifest.metrics) == {"held_out": {"cer": 0.1}}
    assert updated.manifest.graphs == copied.manifest.graphs  # same files, same checksums
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
    with pytest.raises(ValueError, match=r"'window.tmax' must be a number, got 'late'"):
        update_manifest(copied.path, {"window": {"tmin": 0, "tmax": "late", "sfreq": 50}})
    assert load_bundle(copied.path).manifest.window is None  # the refused change left no trace


# ------------------------------------------------------------------------------ typed manifest
def _write(folder: Path, manifest: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder / "manifest.json"


def _raw(bundle) -> dict:
    return json.loads((bundle.path / "manifest.json").read_text())


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_manifests_are_typed_and_round_trip_exactly(path):
    raw = json.loads((path / "manifest.json").read_text())
    manifest = load_bundle(path).manifest
    assert manifest.to_dict() == raw
    assert json.dumps(manifest.to_dict(), sort_keys=True) == json.dumps(raw, sort_keys=True)
    assert Manifest.from_dict(manifest.to_dict(), path) == manifest
    assert manifest.n_channels == len(raw["stream"]["channels"]["names"])
    assert manifest.window.n_times == round(
        (raw["window"]["tmax"] - raw["window"]["tmin"]) * raw["window"]["sfreq"]
    )
    assert manifest.preprocessing.sfreq_in == raw["preprocessing"]["sfreq_in"]
    assert manifest.subject.default == raw["subject"]["default"]
    assert manifest.provenance.first_simulator["modality"] == "meg"
    assert all(len(entry.sha256) == 64 for entry in manifest.graphs.values())


def test_typed_fields_of_the_shipped_bundles():
    typing = load_bundle(TYPING_BUNDLE).manifest
    assert typing.task == "typing" and typing.arch == "brain2qwerty_v1"
    assert typing.lm.file == "lm.npz" and typing.lm.weight == 0.5 and typing.lm.order == 6
    assert typing.decoding.beam_width == 30 and typing.decoding.top_k == 5
    assert typing.window.baseline == (None, 0.0) and typing.window.clamp == 5.0
    assert typing.window.audio_n_times is None and typing.ctc is None
    assert len(typing.classes) == 29 and typing.export["keystroke"].atol > 0
    speech = load_bundle(SPEECH_BUNDLE).manifest
    assert speech.task == "speech" and speech.lm is None and speech.logit_scale > 1
    assert speech.window.audio_n_times == 360 and speech.window.brain_shift == 0.15
    assert speech.demo.simulator["task"] == "listening" and speech.audio_features["n_mels"] == 40
    assert speech.files() == ("audio.onnx", "brain.onnx")


def test_manifest_is_frozen_all_the_way_down():
    manifest = load_bundle(TYPING_BUNDLE).manifest
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.name = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.window.tmax = 1.0
    with pytest.raises(TypeError):
        manifest.graphs["extra"] = manifest.graphs["keystroke"]
    with pytest.raises(TypeError):
        manifest.model_config["d_model"] = 1
    with pytest.raises(ValueError, match="read-only"):
        manifest.stream.channels.positions[0, 0] = 1.0
    # a modified copy is validated like a read one and keeps the rest
    moved = dataclasses.replace(manifest, window=dataclasses.replace(manifest.window, clamp=3.0))
    assert Manifest.from_dict(moved.to_dict()).window.clamp == 3.0
    assert moved.to_dict()["graphs"] == manifest.to_dict()["graphs"]


BASE = {
    "format": "bci-app-bundle",
    "format_version": 1,
    "name": "toy",
    "task": "typing",
    "stream": {"sfreq": 1000.0, "channels": {"names": ["a"], "types": ["eeg"], "units": ["V"]}},
    "graphs": {"encoder": {"file": "encoder.onnx", "sha256": "0" * 64}},
}


def _with(key: str, value) -> dict:
    """BASE with ``key`` (dotted) set to ``value``, or removed when value is ``...``."""
    manifest = json.loads(json.dumps(BASE))
    *parents, last = key.split(".")
    node = manifest
    for part in parents:
        node = node.setdefault(part, {})
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return manifest


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (_with("graphs.encoder.sha256", ...), r"'graphs\.encoder\.sha256' is missing"),
        (_with("graphs.encoder.sha256", "abc"), r"'graphs\.encoder\.sha256' must be the file's"),
        (_with("graphs", "encoder.onnx"), r"'graphs' must be a JSON object mapping each graph"),
        (_with("graphs.encoder.file", 7), r"'graphs\.encoder\.file' must be a file name \(a"),
        (_with("name", ...), r"'name' is missing"),
        (_with("task", ""), r"'task' must be a non-empty string"),
        (_with("stream.sfreq", -5), r"'stream\.sfreq' must be > 0, got -5"),
        (_with("stream.sfreq", True), r"'stream\.sfreq' must be a number, got true"),
        (_with("stream.channels.types", ["eeg", "eeg"]), r"'stream\.channels\.types' has 2"),
        (_with("stream.channels.positions", [[0, 0]]), r"'stream\.channels\.positions\[0\]'"),
        (_with("window", {"tmin": 0, "tmax": "abc", "sfreq": 50}), r"'window\.tmax' must be a"),
        (_with("window", {"tmin": 0.5, "tmax": 0.1, "sfreq": 50}), r"'window\.tmax' must be gr"),
        (_with("lm", {"order": 6}), r"'lm\.file' is missing"),
        (_with("subject", {"n_subjects": 1, "default": 1}), r"'subject\.default' must be < n"),
        (_with("decoding", {"beam_width": 0}), r"'decoding\.beam_width' must be >= 1, got 0"),
        (_with("classes", ["a", 1]), r"'classes\[1\]' must be a string, got 1"),
        (_with("preprocessing", {"sfreq_in": 1000.0, "l_frq": 1}), r"'preprocessing' is not"),
        (_with("preprocessing", {"sfreq_in": "fast"}), r"'preprocessing.sfreq_in' must be a num"),
        (_with("provenance", {"recordings": {}}), r"'provenance\.recordings' must be a list"),
        (_with("format_version", "1"), r"'format_version' must be an integer >= 1, got '1'"),
        ([BASE], r"must be a JSON object, got a list of 1"),
    ],
)
def test_malformed_manifests_name_the_file_the_key_and_the_fix(tmp_path, manifest, message):
    path = _write(tmp_path / "b", manifest)
    with pytest.raises(ManifestError, match=message) as info:
        load_bundle(tmp_path / "b")
    text = str(info.value)
    assert text.startswith(f"Invalid bundle manifest {path}: ")
    assert "Re-export the bundle with 'bci-app export'" in text
    assert isinstance(info.value, ValueError) and "\n" not in text


def test_foreign_newer_and_unreadable_manifests(tmp_path):
    with pytest.raises(ValueError, match="is not a bci-app decoder bundle manifest .*'other'"):
        load_bundle(_write(tmp_path / "a", _with("format", "other")))
    with pytest.raises(ValueError, match="has format version 2; this bci-app reads up to 1. Up"):
        load_bundle(_write(tmp_path / "b", _with("format_version", 2)))
    (tmp_path / "b" / "manifest.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match=r"manifest.json: the file is not valid JSON \("):
        load_bundle(tmp_path / "b")


@pytest.mark.parametrize("name", ["../secret.onnx", "../../x.onnx", "/tmp/x.onnx", "a/../../x"])
def test_graph_files_outside_the_bundle_are_refused_before_any_file_is_opened(tmp_path, name):
    # the target exists with the wrong checksum: opening it would fail with another message
    (tmp_path / "secret.onnx").write_bytes(b"not the graph")
    path = _write(tmp_path / "b", _with("graphs.encoder.file", name))
    with pytest.raises(ManifestError, match="must name a file inside the bundle folder") as info:
        load_bundle(path.parent)
    assert f"got {name!r}" in str(info.value) and "without '..' or a leading '/'" in str(info.value)
    lm = _write(tmp_path / "c", {**_with("graphs", {}), "lm": {"file": "..\\lm.npz"}})
    with pytest.raises(ManifestError, match=r"'lm\.file' must name a file inside"):
        load_bundle(lm.parent)


def test_unknown_keys_survive_load_update_and_save(tmp_path):
    src = save_bundle(
        tmp_path / "b", _with("graphs", {}), {"encoder": _identity_graph(tmp_path / "g.onnx")}
    )
    raw = _raw(src)
    raw["future_section"] = {"anything": [1, {"deep": None}]}
    raw["window"] = {"tmin": 0, "tmax": 1, "sfreq": 50, "taper": "hann"}
    raw["stream"]["channels"]["coord_frame"] = "head"
    raw["stream"]["clock"] = "lsl"
    raw["graphs"]["encoder"]["opset"] = 17
    raw["provenance"] = {"recordings": [{"file": "a.xdf", "site": "x"}], "git_commit": None}
    (src.path / "manifest.json").write_text(json.dumps(raw))
    manifest = load_bundle(src.path).manifest
    assert manifest.to_dict() == raw
    assert manifest.extra["future_section"]["anything"][1]["deep"] is None
    assert manifest.window.extra["taper"] == "hann" and manifest.window.n_times == 50
    assert manifest.graphs["encoder"].extra["opset"] == 17
    update_manifest(src.path, {"metrics": {"cer": 0.5}})
    assert _raw(src) == {**raw, "metrics": {"cer": 0.5}}


def test_a_bundle_reads_all_the_manifest_variants_of_its_writers(tmp_path):
    # minimal (tests/bci_app/test_speech_decoder.py): no graph, a stream without channels
    bare = {"name": "speech-x", "task": "speech", "stream": {"sfreq": 1000.0, "channels": {}}}
    bundle = save_bundle(tmp_path / "bare", bare, {})
    assert bundle.channels.n_channels == 0 and bundle.manifest.graphs == {}
    assert load_bundle(bundle.path).manifest.to_dict() == _raw(bundle)
    # ints where floats are usual, null sections, a subject without labels: written back as read
    variant = {
        **_with("graphs", {}),
        "stream": {"sfreq": 50, "channels": ChannelSpec.generic(2).to_dict()},
        "window": {"tmin": -1, "tmax": 1, "sfreq": 50, "baseline": None, "clamp": None},
        "subject": {"n_subjects": 2, "default": 1},
        "lm": None,
        "provenance": {"source": "tests"},
        "model_config": {},
    }
    manifest = Manifest.from_dict(variant, "x.json")
    assert manifest.to_dict() == variant and manifest.lm is None
    assert manifest.window.baseline is None and manifest.subject.labels is None
    assert json.dumps(manifest.to_dict(), sort_keys=True) == json.dumps(variant, sort_keys=True)


def test_a_dict_given_to_bundle_is_validated_into_a_manifest():
    manifest = load_bundle(TYPING_BUNDLE).manifest
    bundle = Bundle(TYPING_BUNDLE, {**manifest.to_dict(), "name": "renamed"})
    assert isinstance(bundle.manifest, Manifest) and bundle.name == "renamed"
    with pytest.raises(ManifestError, match=r"typing-meg-small/manifest.json: 'name' must be"):
        Bundle(TYPING_BUNDLE, {**manifest.to_dict(), "name": None})


# ------------------------------------------------------------------- graphs against manifest
def _brain_bundle(folder, n_channels, shape, **extra):
    """A bundle folder whose 'encoder' graph takes ``x`` of ``shape`` (written by hand)."""
    folder.mkdir(parents=True)
    graph = _identity_graph(folder / "encoder.onnx", shape)
    channels = ChannelSpec.generic(n_channels, "eeg", "V").to_dict()
    entry = {"file": graph.name, "sha256": sha256_file(graph)}
    manifest = {**BASE, "stream": {"sfreq": 50.0, "channels": channels}, **extra}
    _write(folder, {**manifest, "graphs": {"encoder": entry}})
    return folder


def test_channel_count_that_disagrees_with_the_graph_is_refused_at_load(tmp_path):
    folder = _brain_bundle(tmp_path / "b", 3, ("batch", 4, 25))
    with pytest.raises(
        ValueError, match=r"lists 3 channels \(stream.channels\) but the 'encoder'"
    ) as info:
        load_bundle(folder)
    assert "reads 4 (input 'x' of shape (batch, 4, 25))" in str(info.value)
    assert str(folder) in str(info.value) and "Re-export the bundle" in str(info.value)
    # save_bundle refuses too, before it writes the manifest
    channels = ChannelSpec.generic(3, "eeg", "V").to_dict()
    manifest = {"name": "b", "task": "typing", "stream": {"sfreq": 50.0, "channels": channels}}
    with pytest.raises(ValueError, match="lists 3 channels"):
        save_bundle(tmp_path / "out", manifest, {"encoder": folder / "encoder.onnx"})
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_dynamic_dimensions_and_matching_windows_load(tmp_path):
    window = {"tmin": -0.2, "tmax": 0.3, "sfreq": 50.0}
    assert load_bundle(_brain_bundle(tmp_path / "a", 3, ("batch", 3, 25), window=window))
    assert load_bundle(_brain_bundle(tmp_path / "b", 3, ("batch", "n_channels", "n_times")))
    folder = _brain_bundle(tmp_path / "c", 3, ("batch", 3, 30), window=window)
    with pytest.raises(ValueError, match=r"window \(-0.2 to 0.3 s at 50 Hz\) has 25 samples but"):
        load_bundle(folder)


def test_declared_graph_tensors_are_checked(tmp_path):
    folder = _brain_bundle(tmp_path / "b", 3, ("batch", 3))
    raw = json.loads((folder / "manifest.json").read_text())
    raw["graphs"]["encoder"].update(inputs=["x"], outputs=["y"])
    (folder / "manifest.json").write_text(json.dumps(raw))
    assert load_bundle(folder).manifest.graphs["encoder"].inputs == ("x",)
    raw["graphs"]["encoder"]["inputs"] = ["x", "subject"]
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"has inputs \['subject', 'x'\] but it has \['x'\]"):
        load_bundle(folder)


def test_window_samples_and_audio_span():
    window = Window(tmin=-0.35, tmax=2.65, sfreq=120.0, audio_tmin=-0.5, audio_tmax=2.5)
    assert window.n_times == 360 and window.audio_n_times == 360
    assert Window(tmin=0, tmax=1, sfreq=50).to_dict() == {
        "tmin": 0,
        "tmax": 1,
        "sfreq": 50,
        "baseline": None,
        "clamp": None,
    }
