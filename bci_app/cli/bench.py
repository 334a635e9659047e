"""``bci-app bench``: latency certification of the live path on a simulated 306-channel session.

Four measurements, each printed as percentiles or ratios measured in this one run:

1. Replay at 1x: a simulated MEG typing session is played to LSL in real time and decoded by a
   :class:`~bci_app.live.session.DecodingSession` with the bundle: per-stage latency p50/p95/p99/max
   (sample time -> pulled -> preprocessed -> windowed -> inferred -> decoded -> emitted), and
   whether the stream lag grows over the session (slope of lag against time).
2. Replay at ``max`` speed of the same session: throughput as a multiple of real time.
3. Inference per keystroke window of the bundle: onnxruntime vs torch eager on the same model and
   input (needs torch; a model of the bundle's size built and exported here).
4. Graph latency per model size (``--config small paper``) and provider (``--provider auto``:
   every one onnxruntime offers): Brain2Qwerty v1's keystroke and sentence graphs at batch 1, fp32
   and (GPU) fp16, with CUDA graphs on CUDA and an engine cache with TensorRT, against torch
   eager, bf16 autocast (CUDA) and ``torch.compile`` on the same input. With ``paper``, the live
   replay runs again with an untrained paper-size decoder (``paper_pipeline``).
5. The floor of the 1x figures: the same 1x part stepped through a decoding session in this one
   thread, with no stream, no inlet thread and no player process: paced (each chunk when the
   clock reaches its last sample, the session's idle-time work in the waits, as its worker
   does) and back to back. What the 1x replay adds to pulled->emitted beyond the paced floor is
   the stream and the threads; what the paced floor adds beyond back to back is the wait
   between chunks (the caches cool).

The JSON is strict (``NaN`` becomes ``null``); a part that cannot run says ``skipped: <why>``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pylsl

from acquisition.markers import MarkerSource
from acquisition.stream import StreamSource
from bci_app.cli.bench_graphs import (
    TORCH_MISSING,
    graph_latency,
    graph_lines,
    paper_bundle,
    percentiles,
    torch_times,
)
from bci_app.decoders.bundle import Bundle
from bci_app.decoders.manifest import thaw
from bci_app.decoders.runtime import OnnxRuntime
from bci_app.live.factory import make_strategy
from bci_app.live.session import DecodingSession, freeze_for_gc
from bci_app.typing.common import bundle_window


def _session_file(directory: Path, seconds: float, bundle: Bundle) -> Path:
    from acquisition.io import write_recording
    from acquisition.simulator import Simulator

    provenance = bundle.manifest.provenance
    sim = (provenance and provenance.first_simulator) or {}
    rec = Simulator(
        "meg", "typing", snr=sim.get("snr", 2.0), subject=sim.get("subject", 0), seed=555
    ).generate(seconds)
    path = directory / "bench_session_raw.fif"
    write_recording(rec, path)
    return path


def _replay(path: Path, n_times: int, bundle: Bundle, speed, provider: str) -> dict:
    """Decode a replay of ``path``; return wall time, session summary and lag samples.

    The player runs in its own process (``bci-app replay``), as an amplifier would, and the
    decoder is loaded before it starts: the wall time runs from the first sample pushed to the
    last one decoded.
    """
    source_id = f"bench-{uuid.uuid4().hex[:8]}"
    strategy = make_strategy(bundle, has_markers=True, provider=provider)
    cmd = [
        sys.executable,
        "-m",
        "bci_app.cli.main",
        "replay",
        str(path),
        "--speed",
        str(speed),
        "--linger",
        "600",
    ]
    player = subprocess.Popen(
        [*cmd, "--source-id", source_id], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    lags = []
    try:
        with (
            MarkerSource(source_id=f"{source_id}-markers", resolve_timeout=30) as markers,
            StreamSource(source_id=source_id, bufsize=max(120.0, n_times / 1e3)) as source,
        ):
            session = DecodingSession(strategy, source, markers, text_outlet=False)
            with session:
                ready = pylsl.local_clock()  # the decoder runs from here
                cpu_ready = (time.process_time(), _cpu_seconds(player.pid))
                t0 = None
                last_progress, seen = time.monotonic(), 0
                while session.pipeline.n_processed < n_times:
                    if player.poll() not in (None, 0):
                        raise RuntimeError(f"the replay process failed: {player.stderr.read()}")
                    if session.pipeline.n_processed != seen:
                        last_progress, seen = time.monotonic(), session.pipeline.n_processed
                    elif time.monotonic() - last_progress > 10:
                        raise RuntimeError(f"the replay stalled after {seen} of {n_times} samples")
                    h = source.health()
                    if t0 is None and h.n_samples:
                        # the player stamps sample 0 with the clock at its first push
                        t0 = float(source.buffer.read_since(0).timestamps[0])
                    if np.isfinite(h.lag_s) and t0 is not None:
                        lags.append((pylsl.local_clock() - t0, h.lag_s))
                    time.sleep(0.01 if speed == "max" else 0.25)
                end = pylsl.local_clock()
                cpu_end = (time.process_time(), _cpu_seconds(player.pid))
                wall = end - t0
                time.sleep(1.0)  # the last windows complete after the data ends
            summary = session.stop()
    finally:
        player.terminate()
        player.communicate(timeout=20)
    # The player starts pushing when the data inlet connects, before the session's set-up is
    # done (opening the data flow only after it would lose what a live outlet pushes meanwhile).
    # ``wall_s`` counts that set-up; ``decode_s`` (from the decoder's start) and ``setup_s`` say
    # how much of it there was.
    decoding = end - max(t0, ready)
    return {
        "wall_s": wall,
        "decode_s": decoding,
        "setup_s": max(0.0, ready - t0),
        # CPU seconds each process used from the decoder's start to the last sample processed:
        # whether the two cores were busy or waiting (None where /proc is missing)
        "cpu_s": {
            "decoding_process": cpu_end[0] - cpu_ready[0],
            "player": None if None in (cpu_end[1], cpu_ready[1]) else cpu_end[1] - cpu_ready[1],
        },
        "summary": summary,
        "lags": np.array(lags),
    }


def _floor(path: Path, n_times: int, bundle: Bundle, provider: str, paced: bool) -> dict:
    """Decode the first ``n_times`` samples of ``path`` with no stream; return the latencies.

    A :class:`DecodingSession` with no source is stepped chunk by chunk (the player's 20 ms
    chunks, with the markers stamped up to each chunk's last sample) in this thread. The
    recording's clock is moved onto the LSL clock, as the player stamps it. ``paced``: each
    chunk is stepped once the clock reaches its last sample, and the wait runs the session's
    idle-time work (re-warming the graphs) as its worker's wait does; else back to back.
    """
    from acquisition.io import read_recording
    from acquisition.player import DEFAULT_CHUNK_S
    from acquisition.recording import Marker

    rec = read_recording(path)
    n_times = min(n_times, rec.n_times)
    strategy = make_strategy(bundle, has_markers=True, provider=provider)
    session = DecodingSession(strategy, channels=rec.channels, sfreq=rec.sfreq, text_outlet=False)
    data = np.ascontiguousarray(rec.data[:n_times], dtype=np.float32)  # what the stream carries
    shift = pylsl.local_clock() + 0.2 - float(rec.timestamps[0])
    stamps = rec.timestamps[:n_times] + shift
    pending = sorted(
        (Marker(m.timestamp + shift, m.value) for m in rec.markers), key=lambda m: m.timestamp
    )
    step = max(1, round(DEFAULT_CHUNK_S * rec.sfreq))
    on_idle = session.pipeline.on_idle
    freeze_for_gc(True)  # as the session's start() does; its stop() unfreezes
    try:
        for start in range(0, n_times, step):
            stop = min(start + step, n_times)
            due = float(stamps[stop - 1])
            while paced and (now := pylsl.local_clock()) < due:
                wait = on_idle() if on_idle is not None else None
                time.sleep(due - now if wait is None else max(0.0, min(wait, due - now)))
            arrived = [m for m in pending if m.timestamp <= due]
            pending = pending[len(arrived) :]
            session.pipeline.step(data[start:stop], stamps[start:stop], markers=arrived)
    finally:
        summary = session.stop()
    return {
        "paced": paced,
        "windows": summary["windows"],
        "latency_ms": {
            k: v for k, v in summary["latency_ms"].items() if k.startswith("pulled->emitted")
        },
    }


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; else None)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _lag_slope(lags: np.ndarray) -> float:
    """Growth of the stream lag in ms per minute (least squares, after the first 5 s)."""
    lags = lags[lags[:, 0] > 5.0] if len(lags) else lags
    if len(lags) < 4:
        return float("nan")
    slope = np.polyfit(lags[:, 0], lags[:, 1], 1)[0]
    return float(slope * 1e3 * 60)


def _inference(bundle: Bundle, provider: str, n: int) -> dict:
    """Per-window inference: ORT (bundle graph) vs torch eager on a same-shaped model."""
    n_ch = bundle.channels.n_channels
    n_times = bundle_window(bundle).n_times
    x = np.random.default_rng(0).standard_normal((1, n_ch, n_times)).astype(np.float32)
    subject = np.zeros(1, dtype=np.int64)
    out: dict = {}
    rt = OnnxRuntime(bundle.graph_path("keystroke"), provider=provider, threads=1)
    times = rt.benchmark({"x": x, "subject": subject}, n=n)
    out["ort_bundle"] = percentiles(times) | {"provider": rt.provider}
    try:
        import torch

        from models.export import export_model, quiet_exporter
        from models.registry import build_model
        from models.typing.model import KeystrokeGraph
    except ImportError:
        out["torch"] = TORCH_MISSING
        return out
    torch.manual_seed(0)
    torch.set_num_threads(1)
    positions = bundle.channels.positions
    manifest = bundle.manifest
    n_subjects = 1 if manifest.subject is None else manifest.subject.n_subjects
    arch, config = manifest.arch, thaw(manifest.model_config)
    model = build_model(arch, config, n_ch, positions, n_subjects).eval()
    with tempfile.TemporaryDirectory() as tmp:
        with quiet_exporter():
            export_model(model, tmp)
        same = OnnxRuntime(Path(tmp) / "keystroke.onnx", provider="cpu", threads=1)
        ort_times = same.benchmark({"x": x, "subject": subject}, n=n)
    graph = KeystrokeGraph(model).eval()  # exactly what the keystroke ONNX graph computes
    eager = torch_times(graph, (torch.from_numpy(x), torch.from_numpy(subject)), n)
    out["same_model"] = {
        "ort_cpu": percentiles(ort_times),
        "torch_eager": percentiles(eager),
        "ratio_eager_over_ort_p50": float(np.median(eager) / np.median(ort_times)),
    }
    return out


def json_safe(value):
    """``value`` with every NaN/Inf float replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def run_bench(
    bundle: Bundle,
    *,
    seconds: float,
    realtime_s: float,
    provider: str,
    n: int,
    max_seconds: float | None = None,
    max_runs: int = 3,
    configs: Sequence[str] = ("small",),
    compile_mode: str | None = "default",
) -> dict:
    """Run the measurements; return a JSON-friendly dict (no NaN: missing values are None).

    ``max_seconds`` limits the part replayed at max speed (the LSL outlet buffers 360 s of data,
    so a longer max-speed replay to a slower consumer would lose samples by design); it is run
    ``max_runs`` times and the median run reported, timed from the player's first push to the
    last sample processed (set-up after that push included). ``configs``
    are the model sizes whose graphs are timed (:func:`graph_latency`, on every provider when
    ``provider`` is ``auto``); with ``paper`` among them, the live pipeline is also replayed with
    an untrained paper-size decoder of the bundle's shape (``paper_pipeline``): its text means
    nothing, its stage latencies are those of the paper-size graphs.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = _session_file(Path(tmp), seconds, bundle)
        result = {"bundle": bundle.name, "host_cpus": os.cpu_count()}
        result.update(
            _pipeline(bundle, path, Path(tmp), seconds, realtime_s, provider, max_seconds, max_runs)
        )
        result["inference"] = _inference(bundle, provider, n)
        result["graphs"] = graph_latency(
            bundle.channels, configs, [provider], n, compile_mode=compile_mode
        )
        if "paper" in configs and "skipped" not in result["graphs"]:
            folder = Path(tmp) / "paper"  # its own trimmed copies of the session
            paper = paper_bundle(bundle, folder / "bundle")
            result["paper_pipeline"] = _pipeline(
                paper, path, folder, seconds, realtime_s, provider, max_seconds, max_runs
            )
    result["clock"] = pylsl.local_clock()
    return json_safe(result)


def _pipeline(bundle, path, folder, seconds, realtime_s, provider, max_seconds, max_runs=3) -> dict:
    """Replay the session at max speed (throughput, ``max_runs`` times) and at 1x (latencies)."""
    duration = min(seconds, max_seconds or seconds)
    n_times = round(duration * bundle.sfreq)
    fast_path = path if duration >= seconds else _trim(path, folder, duration, "fast")
    # Several runs, the median reported: on 2 cores one run moves by +-15 % with what else the
    # machine does (the player, the inlet and the decoder share them).
    runs = [_replay(fast_path, n_times, bundle, "max", provider) for _ in range(max_runs)]
    walls = np.array([run["wall_s"] for run in runs])
    fast = runs[int(np.argsort(walls)[len(walls) // 2])]  # the median run (upper, if even)
    result = {
        "provider": fast["summary"]["provider"],
        "max_speed": {
            "recording_s": duration,
            "runs": len(runs),
            "wall_s": round(fast["wall_s"], 2),
            "decode_s": round(fast["decode_s"], 2),
            "setup_s": round(fast["setup_s"], 2),
            "x_real_time": round(duration / fast["wall_s"], 1),
            "x_real_time_runs": [round(duration / w, 1) for w in walls.tolist()],
            "cpu_s": {k: v if v is None else round(v, 2) for k, v in fast["cpu_s"].items()},
            "cores": os.cpu_count(),
            "windows": fast["summary"]["windows"],
            "latency_ms": fast["summary"]["latency_ms"],
        },
    }
    if realtime_s > 0:
        short = path if realtime_s >= seconds else _trim(path, folder, realtime_s, "1x")
        n_short = min(round(seconds * bundle.sfreq), round(realtime_s * bundle.sfreq))
        live = _replay(short, n_short, bundle, 1, provider)
        result["realtime"] = {
            "recording_s": min(realtime_s, seconds),
            "windows": live["summary"]["windows"],
            "sentences": live["summary"]["sentences"],
            "latency_ms": live["summary"]["latency_ms"],
            "lag_ms_p50": float(np.median(live["lags"][:, 1]) * 1e3) if len(live["lags"]) else None,
            "lag_growth_ms_per_min": _lag_slope(live["lags"]),
            "dropped_samples": live["summary"]["dropped_samples"],
        }
        result["floor"] = {
            "paced": _floor(short, n_short, bundle, provider, paced=True),
            "back_to_back": _floor(short, n_short, bundle, provider, paced=False),
        }
    return result


def _trim(path: Path, directory: Path, seconds: float, label: str) -> Path:
    from acquisition.io import read_recording, write_recording
    from acquisition.recording import Recording

    rec = read_recording(path)
    n = int(seconds * rec.sfreq)
    short = Recording(
        rec.data[:n],
        rec.timestamps[:n],
        rec.sfreq,
        rec.channels,
        [m for m in rec.markers if m.timestamp < rec.timestamps[n - 1]],
        name=rec.name,
        source_id=rec.source_id,
    )
    out = directory / f"bench_{label}_raw.fif"
    write_recording(short, out)
    return out


def format_bench(result: dict) -> str:
    """Human-readable report."""
    lines = [f"bci-app bench: bundle '{result['bundle']}', {result['host_cpus']} CPU(s)"]
    lines += _pipeline_lines(result)
    inf = result["inference"]
    b = inf["ort_bundle"]
    lines.append(
        f"\nkeystroke graph of the bundle on {b['provider']}: p50 {b['p50_ms']:.3f} ms, "
        f"p99 {b['p99_ms']:.3f} ms"
    )
    same = inf.get("same_model")
    if isinstance(same, dict):
        lines.append(
            f"same model, same input (1 thread): onnxruntime p50 {same['ort_cpu']['p50_ms']:.3f} "
            f"ms vs torch eager p50 {same['torch_eager']['p50_ms']:.3f} ms -> eager/ORT = "
            f"{same['ratio_eager_over_ort_p50']:.2f}x"
        )
    else:
        lines.append(str(inf.get("torch")))
    lines += graph_lines(result.get("graphs", {}))
    if "paper_pipeline" in result:
        lines.append("\npaper-size decoder (untrained) in the live pipeline:")
        lines += _pipeline_lines(result["paper_pipeline"])
    return "\n".join(lines)


def _pipeline_lines(result: dict) -> list[str]:
    fast = result["max_speed"]
    runs = ", ".join(f"{x}x" for x in fast.get("x_real_time_runs", [fast["x_real_time"]]))
    lines = [
        f"\nmax-speed replay on {result.get('provider')}: {fast['recording_s']:.0f} s of "
        f"306 ch x 1 kHz decoded in {fast['wall_s']:.2f} s from the player's first push = "
        f"{fast['x_real_time']}x real time ({fast['windows']} windows; median of "
        f"{fast.get('runs', 1)} runs: {runs}); {fast.get('setup_s', 0.0):.2f} s of it decoder "
        "set-up after the first push"
    ]
    cpu = fast.get("cpu_s")
    if cpu:
        player = "n/a" if cpu["player"] is None else f"{cpu['player']:.2f} s"
        lines.append(
            f"  CPU from the decoder's start to the last sample ({fast['decode_s']:.2f} s of wall "
            f"time on {fast.get('cores')} cores): decoding process "
            f"{cpu['decoding_process']:.2f} s, player process {player}"
        )
    if "realtime" in result:
        rt = result["realtime"]
        lines.append(
            f"\n1x replay ({rt['recording_s']:.0f} s, {rt['windows']} keystrokes, "
            f"{rt['sentences']} sentences, {rt['dropped_samples']} dropped samples):"
        )
        lines += [_stage_line(k, v) for k, v in rt["latency_ms"].items()]
        growth = rt["lag_growth_ms_per_min"]
        growth = "n/a" if growth is None else f"{growth:+.2f} ms/min"
        lag = "n/a" if rt["lag_ms_p50"] is None else f"{rt['lag_ms_p50']:.1f} ms"
        lines.append(f"  stream lag p50 {lag}, growth {growth}")
    if "floor" in result:
        lines.append(
            "the same 1x part in this one thread, no stream, no inlet thread, no player process:"
        )
        for key, label in (("paced", "paced at 1x"), ("back_to_back", "back to back")):
            part = result["floor"][key]
            lines.append(f"  {label} ({part['windows']} keystrokes):")
            lines += [_stage_line(k, v) for k, v in part["latency_ms"].items()]
    return lines


def _stage_line(stage: str, s: dict) -> str:
    return (
        f"  {stage:<22} p50 {s['p50_ms']:7.2f}  p95 {s['p95_ms']:7.2f}  p99 {s['p99_ms']:7.2f}  "
        f"max {s['max_ms']:7.2f} ms"
    )
