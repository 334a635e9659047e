"""Offline evaluation: the ablation report, online == offline on a replay, bad input, CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import typing_bundles as tb

from acquisition.channels import ChannelSpec
from acquisition.recording import Marker, Recording, parse_marker
from acquisition.simulator import Simulator
from bci_app.cli.evaluate import add_evaluate_command
from bci_app.processing.preprocessing import PreprocessConfig, Preprocessor, fit_scaler
from bci_app.typing.evaluate import evaluate_bundle, format_report, sentence_spans
from bci_app.typing.keystroke import KeystrokeDecoder, make_windower, preprocess_config


@pytest.fixture(scope="module")
def simulated():
    """40 s of simulated 64-channel EEG typing (100 Hz to keep it quick)."""
    return Simulator("eeg", "typing", snr=2.0, seed=1, sfreq=100.0).generate(40.0)


@pytest.fixture(scope="module")
def sim_bundle(tmp_path_factory, simulated):
    """A v1-shaped bundle for the simulated montage, with the Brain2Qwerty preprocessing."""
    pre = fit_scaler(simulated, PreprocessConfig.brain2qwerty(simulated.sfreq))
    path = tmp_path_factory.mktemp("sim") / "bundle"
    return tb.template_bundle(path, simulated.channels, pre, random_weights=True)


def test_report_on_a_simulated_recording(sim_bundle, simulated):
    report = evaluate_bundle(sim_bundle, [simulated], provider="cpu")
    assert report["variants"] == ["conv", "transformer", "lm"] and report["use_lm"]
    assert report["provider"] == "CPUExecutionProvider"
    (recording,) = report["recordings"]
    sentences = recording["sentences"]
    truth = simulated.meta["ground_truth"]["sentences"]
    assert [s["target"] for s in sentences] == [t["text"] for t in truth]
    typed = [len(s["typed"]) for s in sentences]
    assert typed == [len(t["keys"]) for t in truth]
    for sentence in sentences:
        assert set(sentence["texts"]) == set(sentence["cer"]) == set(sentence["wer"])
        assert all(len(text) == sentence["n_decoded"] for text in sentence["texts"].values())
        assert all(0 <= v < math.inf for v in sentence["cer"].values())
    overall = report["overall"]
    assert overall["n_keys"] == sum(typed) == len(simulated.markers_of("key"))
    for variant in report["variants"]:
        mean = np.mean([s["cer"][variant] for s in sentences])
        assert overall["cer"][variant] == pytest.approx(mean)
    for model in ("conv", "transformer"):
        top = overall["topk"][model]
        assert 0 <= top["top1"] <= top["top5"] <= 1
    assert report["latency_ms"]["n"] == sum(s["n_decoded"] for s in sentences)
    table = format_report(report)
    for label in ("CER conv only", "CER + transformer", "CER + LM", "bci-sim-eeg", "overall"):
        assert label in table


def _live_replay(bundle, recording: Recording, chunk_s: float) -> KeystrokeDecoder:
    """Decode a recording as the live path does: chunks in time order, markers as they arrive.

    A sentence marker is acted on once every earlier key's window has been decoded (windows
    complete 0.3 s after their key, possibly after the ``sentence_end`` marker arrived).
    """
    decoder = KeystrokeDecoder(bundle, provider="cpu")
    config = preprocess_config(bundle)
    preprocessor = Preprocessor(config, recording.channels.names)
    windower = make_windower(bundle)
    markers, waiting, outstanding = list(recording.markers), [], {}
    step = round(chunk_s * recording.sfreq)
    for start in range(0, recording.n_times, step):
        stop = min(start + step, recording.n_times)
        t_end = recording.timestamps[stop - 1]
        arrived = [m for m in markers if m.timestamp <= t_end]
        markers = markers[len(arrived) :]
        outstanding.update({(m.timestamp, m.value): m for m in arrived if m.value[:4] == "key:"})
        waiting += [m for m in arrived if m.value[:4] != "key:"]
        chunk = preprocessor.process(recording.data[start:stop], recording.timestamps[start:stop])
        windows = windower.push_markers(arrived) + windower.push_data(*chunk)
        for marker, _ in windower.dropped:
            outstanding.pop((marker.timestamp, marker.value), None)
        for window in sorted(windows, key=lambda w: w.marker.timestamp):
            _sentence_markers(decoder, waiting, outstanding, window.marker.timestamp)
            outstanding.pop((window.marker.timestamp, window.marker.value))
            decoder.add_window(window)
        _sentence_markers(decoder, waiting, outstanding, math.inf)
    if decoder.in_sentence:
        decoder.end_sentence()
    return decoder


def _sentence_markers(decoder, waiting: list, outstanding: dict, before: float) -> None:
    oldest_key = min((t for t, _ in outstanding), default=math.inf)
    while waiting and waiting[0].timestamp < min(before, oldest_key):
        kind, text = parse_marker(waiting.pop(0).value)
        if kind == "sentence_start":
            if decoder.in_sentence:
                decoder.end_sentence()
            decoder.start_sentence(text)
        elif kind == "sentence_end" and decoder.in_sentence:
            decoder.end_sentence()


@pytest.mark.parametrize("chunk_s", [0.02, 0.37])
def test_live_replay_gives_the_offline_text(sim_bundle, simulated, chunk_s):
    report = evaluate_bundle(sim_bundle, [simulated], provider="cpu")
    offline = [s["texts"]["lm"] for s in report["recordings"][0]["sentences"]]
    live = _live_replay(sim_bundle, simulated, chunk_s)
    assert live.n_sentences == len(offline) == 2
    assert live.committed == " ".join(offline)


def test_nan_stretches_skip_windows_and_are_counted(sim_bundle, simulated):
    data = simulated.data.copy()
    keys = simulated.markers_of("key")
    for key in keys[5:8]:
        sample = round(key.timestamp * simulated.sfreq)
        data[sample - 5 : sample + 5] = np.nan
    broken = dataclasses.replace(simulated, data=data, name="broken")
    report = evaluate_bundle(sim_bundle, [broken], provider="cpu", use_lm=False)
    first = report["recordings"][0]["sentences"][0]
    assert first["n_skipped"] >= 3 and report["overall"]["n_skipped"] == first["n_skipped"]
    assert first["n_decoded"] == first["n_keys"] - first["n_skipped"] - first["n_dropped"]
    assert first["texts"]["lm"] == first["texts"]["transformer"] and not report["use_lm"]
    assert math.isfinite(first["cer"]["lm"])


def test_ctc_bundle_reports_greedy_and_lm(tmp_path):
    recording = tb.keystroke_recording(["the cat", "sat down"], noise=1.0)
    pre = tb.identity_preprocessing(recording.channels)
    bundle = tb.ctc_bundle(tmp_path / "ctc", recording.channels, pre)
    report = evaluate_bundle(bundle.path, [recording], provider="cpu")
    assert report["variants"] == ["greedy", "lm"] and report["overall"]["topk"] == {}
    sentences = report["recordings"][0]["sentences"]
    assert [s["typed"] for s in sentences] == ["the cat", "sat down"]
    assert all(set(s["cer"]) == {"greedy", "lm"} for s in sentences)
    assert "CER CTC greedy" in format_report(report)


def test_sentences_group_like_training():
    def m(t, v):
        return Marker(t, v)

    markers = [
        m(0.0, "key:a"),
        m(0.5, "key:b"),
        m(4.0, "key:c"),  # two runs split by a 3.5 s pause
        m(5.0, "sentence_start:hi there"),
        m(6.0, "key:h"),
        m(6.2, "key:i"),
        m(7.0, "sentence_end:hi there"),
        m(7.5, "key:x"),
        m(8.0, "sentence_start:no end"),
        m(9.0, "key:n"),
        m(10.0, "sentence_start:next"),
        m(11.0, "key:z"),
    ]
    spans = sentence_spans(markers[::-1])
    got = [(s.target, "".join(parse_marker(k.value)[1] for k in s.keys)) for s in spans]
    assert got == [
        (None, "ab"),
        (None, "c"),
        ("hi there", "hi"),
        (None, "x"),
        ("no end", "n"),
        ("next", "z"),
    ]


def test_bad_input(tmp_path, sim_bundle, simulated):
    channels = simulated.channels
    fewer = dataclasses.replace(
        simulated,
        data=simulated.data[:, 2:],
        channels=ChannelSpec(channels.names[2:], channels.types[2:], channels.units[2:]),
    )
    missing = rf"reads 64 channels but 2 of them are not in '{simulated.name}' \(62 channels\)"
    with pytest.raises(ValueError, match=rf"Channel mismatch: .* {missing}: Fp1, AF7"):
        evaluate_bundle(sim_bundle, [fewer], provider="cpu")
    resampled = dataclasses.replace(simulated, sfreq=200.0, timestamps=simulated.timestamps / 2)
    with pytest.raises(ValueError, match=r"'sfreq': 'bci-sim-eeg' runs at 200 Hz but .* 100 Hz"):
        evaluate_bundle(sim_bundle, [resampled], provider="cpu")
    silent = dataclasses.replace(simulated, markers=simulated.markers_of("sentence_start"))
    with pytest.raises(ValueError, match=r"no keystroke markers .* found: sentence_start \(2\)"):
        evaluate_bundle(sim_bundle, [silent], provider="cpu")
    bare = dataclasses.replace(simulated, markers=[], name="bare.xdf")
    with pytest.raises(ValueError, match=r"'bare.xdf': it has no keystroke .* none at all"):
        evaluate_bundle(sim_bundle, [bare], provider="cpu")
    with pytest.raises(ValueError, match="give at least one recording"):
        evaluate_bundle(sim_bundle, [], provider="cpu")
    other = tb.keystroke_recording(["abc"])
    pre = tb.identity_preprocessing(other.channels)
    speech = tb.template_bundle(tmp_path / "speech", other.channels, pre, task="speech")
    with pytest.raises(ValueError, match=r"is a 'speech' decoder, but typing decoding needs"):
        evaluate_bundle(speech, [other], provider="cpu")


def _cli(argv):
    parser = argparse.ArgumentParser(prog="bci-app")
    add_evaluate_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_prints_the_ablation_table_and_json(tmp_path, capsys):
    from acquisition.io import write_recording

    recording = tb.keystroke_recording(["one two", "three"], noise=2.0)
    path = write_recording(recording, tmp_path / "typing.xdf")
    bundle = tb.template_bundle(
        tmp_path / "bundle", recording.channels, tb.identity_preprocessing(recording.channels)
    )
    assert _cli(["evaluate", str(bundle.path), str(path), "--provider", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "CER conv only" in table and "CER + LM" in table and str(path) in table
    assert _cli(["evaluate", str(bundle.path), str(path), "--json", "--no-lm"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["overall"]["n_keys"] == len("one two") + len("three") and not report["use_lm"]
    lm = report["sessions"]["cer"]["lm"]  # one session: a mean, no interval (null in JSON)
    assert report["sessions"]["n"] == 1 and lm["values"] == [lm["mean"]] and lm["low"] is None
    with pytest.raises(SystemExit):
        _cli(["evaluate", str(bundle.path), str(path), "--provider", "gpu"])


@pytest.mark.slow
def test_shipped_default_bundle_decodes_a_held_out_simulated_session():
    bundle = Path(__file__).parents[2] / "bci_app" / "data" / "bundles" / "typing-meg-small"
    session = Simulator("meg", "typing", snr=2.0, seed=0).generate(25.0)
    report = evaluate_bundle(bundle, [session], provider="cpu")
    first = report["recordings"][0]["sentences"][0]
    assert first["n_keys"] >= 20 and first["cer"]["lm"] < 0.2
    assert report["overall"]["topk"]["transformer"]["top5"] > 0.8


def _with_training_sentences(bundle, sentences: list[str]):
    """The bundle, its manifest saying it was trained on ``sentences`` (as training writes)."""
    from acquisition.simulator import sentence_key
    from bci_app.decoders.bundle import load_bundle

    path = bundle.path / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.setdefault("provenance", {})["training_sentences"] = sorted(
        sentence_key(s) for s in sentences
    )
    path.write_text(json.dumps(manifest))
    return load_bundle(bundle.path)


def test_sessions_get_a_mean_with_its_interval_and_trained_sentences_are_flagged(tmp_path):
    recordings = [
        tb.keystroke_recording(["one two", "three"], noise=2.0, seed=0),
        tb.keystroke_recording(["four five", "six seven"], noise=2.0, seed=1),
        tb.keystroke_recording(["eight", "nine ten"], noise=2.0, seed=2),
    ]
    channels = recordings[0].channels
    bundle = tb.template_bundle(tmp_path / "b", channels, tb.identity_preprocessing(channels))
    report = evaluate_bundle(bundle, recordings, provider="cpu")
    sessions = report["sessions"]
    assert sessions["n"] == 3
    for variant in report["variants"]:
        entry = sessions["cer"][variant]
        per_session = [r["summary"]["cer"][variant] for r in report["recordings"]]
        assert entry["values"] == per_session
        assert entry["mean"] == pytest.approx(np.mean(per_session))
        assert entry["low"] <= entry["mean"] <= entry["high"]
    assert report["overlap"] == {"known": False, "n_sentences": 6, "n_seen": None, "seen": []}
    table = format_report(report)
    assert "CER mean over sessions [95 % t interval]: conv only " in table and "(n=3)" in table
    assert "whether these sentences were trained on is unchecked" in table

    trained = _with_training_sentences(bundle, ["One  two", "nine ten", "never typed"])
    report = evaluate_bundle(trained, recordings, provider="cpu")
    assert report["overlap"] == {
        "known": True,
        "n_sentences": 6,
        "n_seen": 2,
        "seen": ["nine ten", "one two"],
    }
    assert "WARNING: 2 of 6 evaluated sentences were in the bundle's training data" in (
        format_report(report)
    )
    clean = _with_training_sentences(bundle, ["zero"])
    report = evaluate_bundle(clean, recordings[:1], provider="cpu")
    assert report["overlap"]["n_seen"] == 0 and "WARNING" not in format_report(report)
    assert "(n=1, no interval)" in format_report(report)
