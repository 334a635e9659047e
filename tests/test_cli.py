"""The ``bci-app`` command line, run as a user runs it: a real process, real LSL, real files."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pylsl
import pytest

from acquisition.io import read_recording
from acquisition.simulator import load_sentences
from acquisition.xdf import read_xdf

COMMANDS = ["streams", "simulate", "record", "replay", "convert", "run", "lm"]


def bci(*args: str, timeout: float = 90.0) -> subprocess.CompletedProcess:
    """Run ``bci-app ARGS`` in a subprocess and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "bci_app.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def bci_background(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bci_app.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    proc = bci(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: bci-app " + command in proc.stdout


@pytest.fixture(scope="module")
def simulated_xdf(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "session.xdf"
    proc = bci(
        "simulate", "--modality", "eeg", "--duration", "12", "--seed", "3", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert "keystrokes" in proc.stdout
    return out


def test_simulate_writes_a_recording_with_keystrokes(simulated_xdf):
    rec = read_recording(simulated_xdf)
    assert rec.channels.n_channels == 64 and rec.sfreq == 500.0
    assert abs(rec.duration - 12.0) < 1e-6
    keys = rec.markers_of("key")
    assert len(keys) > 10
    shown = [m.value.split(":", 1)[1] for m in rec.markers_of("sentence_start")]
    assert shown and set(shown) <= set(load_sentences(split="calibration"))  # the default


def test_replay_then_streams_lists_it_and_data_arrives(simulated_xdf, source_id):
    player = bci_background(
        "replay",
        str(simulated_xdf),
        "--speed",
        "4",
        "--source-id",
        source_id,
        "--name",
        "cli-replay",
    )
    try:
        found = pylsl.resolve_byprop("source_id", source_id, timeout=20)
        assert found, player.stderr.read() if player.poll() is not None else "no stream"
        inlet = pylsl.StreamInlet(found[0])
        inlet.open_stream(timeout=10)
        listing = bci("streams", "--json", "--timeout", "1.5")
        rows = json.loads(listing.stdout)
        mine = [r for r in rows if r["source_id"] == source_id]
        assert mine and mine[0]["channels"] == 64 and mine[0]["sfreq"] == 500.0
        assert mine[0]["name"] == "cli-replay"
        got = 0
        deadline = time.monotonic() + 20
        while got < 500 and time.monotonic() < deadline:
            chunk, _ = inlet.pull_chunk(timeout=0.5)
            got += len(chunk)
        assert got >= 500
        # it said it waits for a reader (and how to start one), then that one came
        said = [player.stdout.readline() for _ in range(3)]
        assert said[1].startswith(
            "Waiting for a reader of 'cli-replay' before playing: start "
            "`bci-app run --stream cli-replay` (or any LSL consumer), or pass --no-wait."
        ), said
        assert said[2] == "A reader connected: playing.\n", said
    finally:
        player.terminate()
        player.wait(timeout=20)
        player.stdout.close()
        player.stderr.close()


@pytest.mark.slow
def test_record_a_simulated_stream_to_xdf(tmp_path, source_id):
    sim = bci_background(
        "simulate", "--modality", "eeg", "--source-id", source_id, "--duration", "40"
    )
    try:
        assert pylsl.resolve_byprop("source_id", source_id, timeout=30)
        out = tmp_path / "rec.xdf"
        proc = bci(
            "record",
            str(out),
            "--stream",
            source_id,
            "--stream",
            f"{source_id}-markers",
            "--duration",
            "4",
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
    finally:
        sim.terminate()
        sim.wait(timeout=20)
        sim.stdout.close()
        sim.stderr.close()
    rec = read_xdf(out)
    assert rec.channels.n_channels == 64
    assert rec.duration > 2.5
    assert np.isfinite(rec.data).all()
    assert len(rec.markers_of("key")) >= 1


def test_convert_xdf_to_fif_and_bids(simulated_xdf, tmp_path):
    fif = tmp_path / "session_raw.fif"
    proc = bci("convert", str(simulated_xdf), str(fif))
    assert proc.returncode == 0, proc.stderr
    back = read_recording(fif)
    orig = read_recording(simulated_xdf)
    assert back.channels.names == orig.channels.names
    np.testing.assert_allclose(back.data, orig.data, rtol=1e-6, atol=1e-12)
    assert [m.value for m in back.markers_of("key")] == [m.value for m in orig.markers_of("key")]
    bids_root = tmp_path / "bids"
    proc = bci("convert", str(simulated_xdf), str(bids_root) + "/", "--subject", "07")
    assert proc.returncode == 0, proc.stderr
    assert (bids_root / "dataset_description.json").is_file()
    assert list(bids_root.glob("sub-07/**/*_events.tsv"))


def test_run_no_decoder_preprocesses_and_windows_the_simulated_stream(tmp_path):
    record, log = tmp_path / "monitor.xdf", tmp_path / "monitor.jsonl"
    proc = bci(
        "run",
        "--no-decoder",
        "--duration",
        "9",
        "--calibration",
        "3",
        "--json",
        "--record",
        str(record),
        "--log",
        str(log),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    # --record and --log are written without a decoder too
    recorded = read_xdf(record)
    assert recorded.channels.n_channels == 306 and recorded.duration > 5
    assert any(m.value.startswith("key:") for m in recorded.markers)
    logged = [json.loads(line, parse_constant=_no_nan) for line in log.read_text().splitlines()]
    assert {row["event"] for row in logged} == {"health", "window"}
    # --json: stdout is strict JSON lines only (no NaN), messages go to stderr
    events = [json.loads(line, parse_constant=_no_nan) for line in proc.stdout.splitlines()]
    health = [e for e in events if e["event"] == "health"]
    windows = [e for e in events if e["event"] == "window"]
    assert health and health[-1]["state"] == "connected"
    assert health[-1]["dropped"] == 0
    assert windows and all(w["marker"].startswith("key:") for w in windows)
    assert all(w["shape"] == [306, 25] for w in windows)
    assert "window complete->windowed" in proc.stderr


def _no_nan(word: str):
    raise ValueError(f"not strict JSON: {word}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("replay", "/no/such/file.xdf"), "File not found: /no/such/file.xdf"),
        (("replay", "x.xdf", "--speed", "fast"), "invalid speed 'fast'"),
        (("simulate", "--out", "x.xdf"), "--out needs --duration"),
        (("simulate", "--difficulty", "paper", "--snr", "2"), "--snr and --difficulty both set"),
        (("simulate", "--difficulty", "hard", "--duration", "1"), "'difficulty': 'hard'"),
        (("simulate", "--sentences", "train", "--duration", "1"), "'sentence_split': 'train'"),
        (("record", "o.xdf", "--stream", "no-such-stream-xyz", "--timeout", "0.6"), "not found"),
        (("convert", "/no/such.xdf", "out.fif"), "no/such.xdf"),
        (("streams", "--timeout", "-1"), "--timeout"),  # once a wait without end
        (("record", "o.xdf", "--timeout", "nan"), "--timeout"),
    ],
)
def test_bad_input_gives_one_clear_line(args, message, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bci_app.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2  # bad input, not a failure of the app
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_run_default_decodes_the_simulated_stream_with_the_shipped_bundle(tmp_path):
    log = tmp_path / "session.jsonl"
    proc = bci("run", "--duration", "35", "--json", "--log", str(log), timeout=150)
    assert proc.returncode == 0, proc.stderr
    # --json: every stdout line is strict JSON (no NaN timestamps), and so is the log
    lines = [json.loads(line, parse_constant=_no_nan) for line in proc.stdout.splitlines()]
    keystrokes = [e for e in lines if e.get("kind") == "keystroke"]
    assert len(keystrokes) > 20
    assert all(0.0 <= c <= 1.0 for e in keystrokes for c in e["confidence"])
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["provider"] == "CPUExecutionProvider"
    assert summary["sentences"] >= 1 and summary["inference_errors"] == 0
    assert "pulled->emitted" in summary["latency_ms"]
    logged = [json.loads(line, parse_constant=_no_nan) for line in log.read_text().splitlines()]
    assert logged[-1]["event"] == "summary"
    assert len(logged) - 1 == len([e for e in lines if "kind" in e])


@pytest.mark.slow
def test_bench_reports_latency_throughput_the_floor_and_the_ort_torch_ratio():
    proc = bci(
        "bench",
        "--seconds",
        "20",
        "--realtime-seconds",
        "8",
        "--repeats",
        "20",
        "--max-runs",
        "2",
        "--json",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["max_speed"]["x_real_time"] > 1 and result["max_speed"]["windows"] > 0
    assert result["max_speed"]["runs"] == len(result["max_speed"]["x_real_time_runs"]) == 2
    assert result["max_speed"]["cpu_s"]["decoding_process"] > 0
    stages = result["realtime"]["latency_ms"]
    assert {"sample->emitted", "pulled->emitted", "windowed->inferred"} <= set(stages)
    assert result["realtime"]["dropped_samples"] == 0
    # the floor decodes the same 1x part without the stream: the same keystrokes, both ways
    for way in ("paced", "back_to_back"):
        floor = result["floor"][way]
        assert floor["windows"] == result["realtime"]["windows"] > 0
        assert floor["latency_ms"]["pulled->emitted"]["n"] == floor["windows"]
    same = result["inference"]["same_model"]
    assert same["ratio_eager_over_ort_p50"] > 0
    assert result["inference"]["ort_bundle"]["provider"] == "CPUExecutionProvider"
