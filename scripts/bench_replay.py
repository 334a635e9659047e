"""Benchmark: fast replay of a long 306-channel recording through LSL, preprocessing and windows.

A simulated MEG typing session (306 channels, 1 kHz, default 10 minutes) is written to FIF, then
replayed by ``bci-app replay --speed max`` (or N) in another process; a StreamSource and a
MarkerSource read it back and the LivePipeline runs the Brain2Qwerty preprocessing and keystroke
windowing on it, exactly as a live session does. Prints throughput as a multiple of real time,
samples lost, windows emitted vs keystrokes, and per-stage latency percentiles.

    python scripts/bench_replay.py [--minutes 10] [--speed max] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="recording length")
    parser.add_argument("--speed", default="max", help="player speed: max or a number")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import pylsl

    from acquisition.io import write_recording
    from acquisition.markers import MarkerSource
    from acquisition.simulator import Simulator
    from acquisition.stream import StreamSource
    from bci_app.live.pipeline import LivePipeline
    from bci_app.processing.preprocessing import PreprocessConfig, Preprocessor, fit_scaler
    from bci_app.processing.windowing import EventWindower

    speed = args.speed if args.speed == "max" else float(args.speed)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rec = Simulator("meg", "typing", snr=2.0, seed=7).generate(args.minutes * 60.0)
        path = Path(tmp) / "session_raw.fif"
        write_recording(rec, path)
        n_keys = len(rec.markers_of("key"))
        duration = rec.duration
        config = fit_scaler(
            rec.__class__(
                rec.data[: int(30 * rec.sfreq)],
                rec.timestamps[: int(30 * rec.sfreq)],
                rec.sfreq,
                rec.channels,
            ),
            PreprocessConfig.brain2qwerty(rec.sfreq, rec.channels.names),
        )
        del rec
        prep_s = time.perf_counter() - t0

        source_id = f"bench-replay-{uuid.uuid4().hex[:8]}"
        windows = []
        # the player runs in its own process, as an amplifier would
        player = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bci_app.cli.main",
                "replay",
                str(path),
                "--speed",
                str(speed),
                "--source-id",
                source_id,
                "--linger",
                "600",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        n_times = round(duration * 1000.0)
        try:
            with (
                MarkerSource(source_id=f"{source_id}-markers", resolve_timeout=30) as markers,
                StreamSource(source_id=source_id, bufsize=duration + 30.0) as source,
            ):
                pre = Preprocessor(config, stream_channels=source.channels.names)
                windower = EventWindower(-0.2, 0.3, pre.sfreq_out, clamp=5.0, history_s=60.0)
                pipeline = LivePipeline(source, pre, windower, windows.append, markers=markers)
                with pipeline:
                    while pipeline.n_processed < n_times:
                        time.sleep(0.005)
                    # the buffer holds the whole replay: its first stamp is the first push
                    t_start = float(source.buffer.read_since(0).timestamps[0])
                    wall = pylsl.local_clock() - t_start
                    time.sleep(1.0)
                health = source.health()
        finally:
            player.terminate()
            player.communicate(timeout=20)
    result = {
        "recording_s": duration,
        "channels": 306,
        "sfreq": 1000.0,
        "speed": args.speed,
        "wall_s": round(wall, 2),
        "x_real_time": round(duration / wall, 1),
        "samples_received": health.n_samples,
        "samples_expected": round(duration * 1000.0),
        "samples_lost_in_pipeline": pipeline.n_lost_samples,
        "dropped_samples": health.dropped_samples,
        "keystrokes": n_keys,
        "windows": len(windows),
        "invalid_windows": int(sum(not w.window.valid for w in windows)),
        "latency_ms": pipeline.latency.summary(),
        "setup_s": round(prep_s, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"Replayed {duration / 60:.1f} min of 306 ch x 1 kHz at speed {args.speed} in "
            f"{wall:.1f} s: {result['x_real_time']}x real time"
        )
        print(
            f"samples {health.n_samples}/{result['samples_expected']} received, "
            f"{pipeline.n_lost_samples} lost in the pipeline, {health.dropped_samples} dropped; "
            f"windows {len(windows)} for {n_keys} keystrokes ({result['invalid_windows']} invalid)"
        )
        print(
            "Per-chunk stage times are not meaningful here: timestamps run ahead of the clock "
            "at max speed (see scripts/bench_preprocessing.py for per-chunk cost)."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
