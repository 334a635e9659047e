"""Benchmark preprocessing and windowing on one core: throughput as a multiple of real time.

1. Preprocessor throughput, 306 channels at 1 kHz: band-pass 0.1-20 Hz + notch 50 Hz + resample
   to 50 Hz + robust scaling + clamp, pushed in chunks of 20 ms and 100 ms, for both places of
   the IIR (``after_resample``, what ``auto`` picks here, and ``before_resample``). Reported:
   x real time from the process CPU time (what one core sustains; robust to other load on a
   shared machine) and from wall time, and the per-chunk call time p50/p99.
2. Replay: a 10-minute 306-channel 1 kHz recording (random data, key markers every ~250 ms)
   pushed through preprocessing and keystroke windowing in replay-sized chunks, markers
   delivered when the replay reaches their time. Reported: x real time and window counts.

BLAS and OpenMP are limited to one thread before numpy is imported.

Usage: ``python scripts/bench_preprocessing.py [--seconds 60] [--minutes 10] [--json]``.
"""

from __future__ import annotations

import os

for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from acquisition.recording import Marker, key_marker  # noqa: E402
from bci_app.processing.preprocessing import PreprocessConfig, Preprocessor  # noqa: E402
from bci_app.processing.windowing import EventWindower  # noqa: E402

try:  # optional: also caps thread pools that ignore the environment
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
except ImportError:
    pass


def make_config(n_channels: int, sfreq: float, iir_stage: str) -> PreprocessConfig:
    """Brain2Qwerty preprocessing plus a 50 Hz notch, unit scaler stats and a +-5 clamp."""
    names = tuple(f"MEG{i:04d}" for i in range(n_channels))
    config = PreprocessConfig.brain2qwerty(sfreq, names)
    return dataclasses.replace(
        config,
        notch_freqs=(50.0,),
        iir_stage=iir_stage,
        clamp=5.0,
        scaler_center=(0.0,) * n_channels,
        scaler_scale=(1e-12,) * n_channels,
    )


def noise_pool(n_channels: int, sfreq: float, seconds: float, seed: int = 0) -> np.ndarray:
    """Float32 random-walk 'MEG' (tesla-like scale) to draw chunks from."""
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal((int(seconds * sfreq), n_channels), dtype=np.float32)
    return np.cumsum(pool, axis=0, dtype=np.float32) * np.float32(1e-13)


def bench_throughput(args: argparse.Namespace, pool: np.ndarray) -> list[dict]:
    """Time the Preprocessor alone for every IIR placement and chunk size."""
    results = []
    n = pool.shape[0]
    timestamps = np.arange(n) / args.sfreq
    warm_up = Preprocessor(make_config(args.channels, args.sfreq, "before_resample"))
    warm_up.process(pool[: int(args.sfreq)], timestamps[: int(args.sfreq)])
    for iir_stage in ("after_resample", "before_resample"):
        config = make_config(args.channels, args.sfreq, iir_stage)
        for chunk_ms in args.chunk_ms:
            step = max(1, round(chunk_ms * args.sfreq / 1000))
            best = None
            for _ in range(args.repeats):
                pre = Preprocessor(config)
                calls = []
                cpu0, wall0 = time.process_time(), time.perf_counter()
                for i in range(0, n, step):
                    t = time.perf_counter()
                    pre.process(pool[i : i + step], timestamps[i : i + step])
                    calls.append(time.perf_counter() - t)
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                if best is None or cpu < best["cpu_s"]:
                    best = {"cpu_s": cpu, "wall_s": wall, "calls": np.array(calls)}
            seconds = n / args.sfreq
            results.append(
                {
                    "iir_stage": iir_stage,
                    "chunk_ms": chunk_ms,
                    "x_realtime_cpu": seconds / best["cpu_s"],
                    "x_realtime_wall": seconds / best["wall_s"],
                    "chunk_call_us_p50": float(np.percentile(best["calls"], 50) * 1e6),
                    "chunk_call_us_p99": float(np.percentile(best["calls"], 99) * 1e6),
                }
            )
    return results


def bench_replay(args: argparse.Namespace, pool: np.ndarray) -> dict:
    """Push a long recording through Preprocessor + EventWindower in replay-sized chunks."""
    rng = np.random.default_rng(1)
    n = int(args.minutes * 60 * args.sfreq)
    t0 = 1000.0
    key_times = t0 + 0.5 + np.cumsum(rng.uniform(0.15, 0.35, int(args.minutes * 60 * 4.5)))
    key_times = key_times[key_times < t0 + n / args.sfreq]
    markers = [
        Marker(float(t), key_marker("etaoin shrdlu"[i % 13])) for i, t in enumerate(key_times)
    ]
    pre = Preprocessor(make_config(args.channels, args.sfreq, "auto"))
    windower = EventWindower(-0.2, 0.3, pre.sfreq_out, baseline=(None, 0.0), clamp=5.0)
    step = max(1, round(args.replay_chunk_ms * args.sfreq / 1000))
    n_windows = n_valid = next_marker = 0
    cpu = wall = 0.0
    for i in range(0, n, step):
        rows = np.arange(i, min(i + step, n))
        chunk = pool[rows % pool.shape[0]]  # drawing the data is not timed
        timestamps = t0 + rows / args.sfreq
        due = int(np.searchsorted(key_times, timestamps[-1], side="right"))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        out = pre.process(chunk, timestamps)
        windows = windower.push_markers(markers[next_marker:due])
        windows += windower.push_data(*out)
        cpu += time.process_time() - cpu0
        wall += time.perf_counter() - wall0
        next_marker = due
        n_windows += len(windows)
        n_valid += sum(w.valid for w in windows)
    windower.finish()
    seconds = n / args.sfreq
    return {
        "minutes": args.minutes,
        "chunk_ms": args.replay_chunk_ms,
        "markers": len(markers),
        "windows": n_windows,
        "valid_windows": n_valid,
        "dropped": windower.n_dropped,
        "x_realtime_cpu": seconds / cpu,
        "x_realtime_wall": seconds / wall,
    }


def main() -> None:
    """Run both benchmarks and print (or dump as JSON) the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=306, help="number of channels")
    parser.add_argument("--sfreq", type=float, default=1000.0, help="input rate (Hz)")
    parser.add_argument("--seconds", type=float, default=60.0, help="data per throughput run")
    parser.add_argument("--chunk-ms", type=float, nargs="+", default=[20.0, 100.0])
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs; best is kept")
    parser.add_argument("--minutes", type=float, default=10.0, help="replay length")
    parser.add_argument("--replay-chunk-ms", type=float, default=50.0, help="replay chunk")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    for name in ("channels", "sfreq", "seconds", "repeats", "minutes", "replay_chunk_ms"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")

    pool = noise_pool(args.channels, args.sfreq, min(args.seconds, 60.0))
    if args.seconds > 60.0:
        pool = np.concatenate([pool] * int(np.ceil(args.seconds / 60.0)))[
            : int(args.seconds * args.sfreq)
        ]
    report = {
        "channels": args.channels,
        "sfreq": args.sfreq,
        "throughput": bench_throughput(args, pool),
        "replay": bench_replay(args, pool),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"Preprocessor, {args.channels} ch at {args.sfreq:g} Hz -> 50 Hz, one core:")
    for r in report["throughput"]:
        print(
            f"  IIR {r['iir_stage']:<16} chunk {r['chunk_ms']:5.0f} ms: "
            f"{r['x_realtime_cpu']:7.0f}x real time (CPU), {r['x_realtime_wall']:7.0f}x (wall); "
            f"call p50 {r['chunk_call_us_p50']:.0f} us, p99 {r['chunk_call_us_p99']:.0f} us"
        )
    r = report["replay"]
    print(
        f"Replay {r['minutes']:g} min in {r['chunk_ms']:g} ms chunks through preprocessing + "
        f"keystroke windows: {r['x_realtime_cpu']:.0f}x real time (CPU), "
        f"{r['x_realtime_wall']:.0f}x (wall); {r['windows']} windows ({r['valid_windows']} valid) "
        f"for {r['markers']} markers, {r['dropped']} dropped"
    )


if __name__ == "__main__":
    main()
