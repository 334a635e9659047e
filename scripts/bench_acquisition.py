"""Benchmark live acquisition: a 306-channel x 2 kHz float32 LSL outlet in another process.

The outlet process pushes the samples that are due every few milliseconds (stamped by liblsl at
push time, as an amplifier driver would), channel 0 holding the sample index. A StreamSource in
this process acquires them while a reader thread drains the ring buffer and checks that the
indices follow each other. Printed: the worker thread's CPU share (% of one core, from its
own CPU time), the latency from each chunk's newest sample time to its arrival in the buffer
(p50/p99, ms, both on the LSL local clock), dropped samples, gaps and the reader's view.

Usage: ``python scripts/bench_acquisition.py [--duration 300] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import threading
import time
import uuid

import numpy as np
import psutil

N_CHANNELS = 306
SFREQ = 2000.0


def _outlet_process(source_id: str, push_interval: float, stop) -> None:
    """Push due samples every ``push_interval`` seconds until ``stop`` is set."""
    import pylsl

    from acquisition.channels import ChannelSpec
    from acquisition.outlets import DataOutlet

    spec = ChannelSpec.generic(N_CHANNELS, "mag", "T")
    outlet = DataOutlet("bci-bench-meg", "MEG", spec, SFREQ, source_id)
    noise = np.random.default_rng(0).standard_normal((int(SFREQ), N_CHANNELS)).astype(np.float32)
    outlet.wait_for_consumers(60.0)
    t0, i = pylsl.local_clock(), 0
    while not stop.is_set():
        n = int((pylsl.local_clock() - t0) * SFREQ) - i
        if n > 0:
            rows = np.arange(i, i + n)
            chunk = noise[rows % noise.shape[0]]
            chunk[:, 0] = rows
            outlet.push_chunk(chunk)
            i += n
        time.sleep(push_interval)


class _Reader(threading.Thread):
    """Drain the ring buffer like a consumer and check that channel 0 counts up by one."""

    def __init__(self, buffer) -> None:
        super().__init__(daemon=True)
        self.buffer = buffer
        self.stop = threading.Event()
        self.n_read = self.n_lost = self.discontinuities = 0
        self._next = None

    def run(self) -> None:
        counter = 0
        while not self.stop.wait(0.02):
            new = self.buffer.read_since(counter)
            data, counter = new.data, new.next_counter
            self.n_lost += new.n_lost
            if data.shape[0] == 0:
                continue
            idx = data[:, 0].astype(np.int64)
            if self._next is not None and idx[0] != self._next:
                self.discontinuities += 1
            self.discontinuities += int(np.count_nonzero(np.diff(idx) != 1))
            self._next = int(idx[-1]) + 1
            self.n_read += data.shape[0]


def _thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) used so far by one thread of this process."""
    for t in psutil.Process().threads():
        if t.id == native_id:
            return t.user_time + t.system_time
    raise RuntimeError(f"thread {native_id} not found")


def run(duration: float, push_interval: float) -> dict:
    """Run the benchmark for ``duration`` seconds and return its measurements."""
    from acquisition.stream import StreamSource

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    source_id = f"bci-bench-{uuid.uuid4().hex[:8]}"
    proc = ctx.Process(target=_outlet_process, args=(source_id, push_interval, stop))
    proc.start()
    src = StreamSource(
        source_id=source_id,
        bufsize=30.0,
        expected_channels=N_CHANNELS,
        expected_sfreq=SFREQ,
        resolve_timeout=60.0,
    )
    try:
        src.connect()
        reader = _Reader(src.buffer)
        reader.start()
        time.sleep(2.0)  # warm-up: first clock offset, first chunks
        tid = src.worker_thread.native_id
        _, since = src.chunk_latencies()
        n0, cpu0, proc0 = src.health().n_samples, _thread_cpu(tid), psutil.Process().cpu_times()
        t0 = time.monotonic()
        latencies = []
        while time.monotonic() - t0 < duration:
            time.sleep(max(0.0, min(1.0, duration - (time.monotonic() - t0))))
            lat, since = src.chunk_latencies(since)
            latencies.append(lat)
        wall = time.monotonic() - t0
        cpu1, proc1, health = _thread_cpu(tid), psutil.Process().cpu_times(), src.health()
        reader.stop.set()
        reader.join()
    finally:
        if src.worker_thread is not None:
            src.disconnect()
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    lat_ms = np.concatenate(latencies) * 1e3
    n_samples = health.n_samples - n0
    return {
        "cpus": psutil.cpu_count(),
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
        "n_channels": N_CHANNELS,
        "sfreq": SFREQ,
        "duration_s": round(wall, 2),
        "samples": int(n_samples),
        "samples_per_s": round(n_samples / wall, 1),
        "effective_rate_hz": round(health.effective_rate, 3),
        "chunks": int(lat_ms.size),
        "samples_per_chunk": round(n_samples / max(lat_ms.size, 1), 1),
        "worker_cpu_percent_of_one_core": round(100.0 * (cpu1 - cpu0) / wall, 2),
        "process_cpu_percent_of_one_core": round(
            100.0 * ((proc1.user + proc1.system) - (proc0.user + proc0.system)) / wall, 2
        ),
        "latency_ms_p50": round(float(np.percentile(lat_ms, 50)), 3),
        "latency_ms_p99": round(float(np.percentile(lat_ms, 99)), 3),
        "latency_ms_max": round(float(lat_ms.max()), 3),
        "dropped_samples": health.dropped_samples,
        "n_gaps": health.n_gaps,
        "gap_kinds": sorted({g.kind for g in health.gaps}),
        "n_invalid_samples": health.n_invalid_samples,
        "reconnections": health.reconnections,
        "reader_samples_incl_warmup": reader.n_read,
        "reader_index_discontinuities": reader.discontinuities,
        "reader_lost_samples": reader.n_lost,
        "lag_s_at_end": round(health.lag_s, 4),
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument(
        "--push-interval-ms", type=float, default=5.0, help="outlet push period (default 5 ms)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error(f"--duration must be > 0 s, got {args.duration}")
    results = run(args.duration, args.push_interval_ms / 1000.0)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
