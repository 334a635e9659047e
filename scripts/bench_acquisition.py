"""Benchmark live acquisition: a 306-channel x 2 kHz float32 LSL outlet in another process.

The outlet process pushes the samples that are due every few milliseconds (stamped by liblsl at
push time, as an amplifier driver would), channel 0 holding the sample index. A StreamSource in
this process acquires them while a reader thread drains the ring buffer and checks that the
indices follow each other. Printed: the worker thread's CPU share (% of one core, from its
own CPU time), the latency from each chunk's newest sample time to its arrival in the buffer
(p50/p99, ms, both on the LSL local clock), dropped samples, gaps and the reader's view.

``--peers`` runs, against the same outlet process, three readers one after the other for
``--duration`` seconds each: a bare pylsl inlet pulling numpy chunks in a thread (the floor),
mne-lsl's ``StreamLSL`` (the peer; the ``dev`` extra) and our ``StreamSource``. For each it prints
the latency from a chunk's newest sample time to the moment a reader can see it (p50/p99, ms),
the samples received against those the outlet pushed meanwhile, and this process's CPU share (%
of one core, the readers' threads and liblsl's together; the outlet runs in its own process).

Usage: ``python scripts/bench_acquisition.py [--duration 300] [--peers] [--json]``.
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


def _pylsl_reader(source_id: str, duration: float) -> dict:
    """A bare pylsl inlet: numpy chunks into one preallocated array, newest-sample latency."""
    import pylsl

    info = pylsl.resolve_byprop("source_id", source_id, timeout=60.0)[0]
    inlet = pylsl.StreamInlet(info, max_buflen=30)
    inlet.open_stream(timeout=10.0)
    dest = np.empty((4096, N_CHANNELS), dtype=np.float32)
    latencies, n_samples, stop = [], [0], threading.Event()

    def pull() -> None:
        while not stop.is_set():
            _, ts = inlet.pull_chunk(
                timeout=0.05, max_samples=dest.shape[0], dest_obj=dest, min_samples=1
            )
            if len(ts):
                latencies.append(pylsl.local_clock() - ts[-1])
                n_samples[0] += len(ts)

    thread = threading.Thread(target=pull, daemon=True)
    thread.start()
    try:
        return _phase(duration, latencies, lambda: n_samples[0])
    finally:
        stop.set()
        thread.join()
        inlet.close_stream()


def _mne_lsl_reader(source_id: str, duration: float) -> dict:
    """mne-lsl's StreamLSL with its defaults (1 ms acquisition delay), 5 s buffer."""
    import pylsl
    from mne_lsl.stream import StreamLSL

    latencies = []

    class TimedStreamLSL(StreamLSL):
        # StreamLSL offers no hook after its buffer update (add_callback runs before it), so the
        # acquisition step is wrapped: the latency is taken once the new samples are readable.
        def _acquire(self) -> None:
            before = self._n_new_samples
            super()._acquire()
            if self._n_new_samples is not None and self._n_new_samples > before:
                latencies.append(pylsl.local_clock() - float(self._timestamps[-1]))

    stream = TimedStreamLSL(bufsize=5.0, source_id=source_id).connect(timeout=60.0)
    counted = [0]

    def n_received() -> int:  # drain as a consumer would, counting the samples
        counted[0] += stream.n_new_samples
        if stream.n_new_samples:
            stream.get_data(winsize=stream.n_new_samples / SFREQ)
        return counted[0]

    try:
        return _phase(duration, latencies, n_received)
    finally:
        stream.disconnect()


def _stream_source_reader(source_id: str, duration: float) -> dict:
    """Our StreamSource: newest-sample latency as it writes each chunk into its ring buffer."""
    from acquisition.stream import StreamSource

    src = StreamSource(source_id=source_id, bufsize=30.0, resolve_timeout=60.0).connect()
    since = [src.chunk_latencies()[1]]
    latencies = []

    def n_received() -> int:
        lat, since[0] = src.chunk_latencies(since[0])
        latencies.extend(lat.tolist())
        return src.health().n_samples

    try:
        return _phase(duration, latencies, n_received)
    finally:
        src.disconnect()


def _phase(duration: float, latencies: list, n_received) -> dict:
    """Measure one reader: 1 s of warm-up, then ``duration`` seconds."""
    time.sleep(1.0)
    n_received()
    del latencies[:]
    proc = psutil.Process()
    n0, cpu0, t0 = n_received(), proc.cpu_times(), time.monotonic()
    while time.monotonic() - t0 < duration:
        time.sleep(min(0.5, max(0.0, duration - (time.monotonic() - t0))))
        n_received()  # drains what a consumer would
    wall, cpu1, n1 = time.monotonic() - t0, proc.cpu_times(), n_received()
    lat_ms = np.asarray(latencies, dtype=float) * 1e3
    if lat_ms.size == 0:
        lat_ms = np.array([np.nan])
    return {
        "latency_ms_p50": round(float(np.percentile(lat_ms, 50)), 3),
        "latency_ms_p99": round(float(np.percentile(lat_ms, 99)), 3),
        "chunks": len(latencies),
        "samples": int(n1 - n0),
        "samples_expected": round(wall * SFREQ),
        "cpu_percent_of_one_core": round(
            100.0 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / wall, 1
        ),
        "duration_s": round(wall, 2),
    }


PEERS = {
    "pylsl inlet (floor)": _pylsl_reader,
    "mne-lsl StreamLSL": _mne_lsl_reader,
    "StreamSource": _stream_source_reader,
}


def run_peers(duration: float, push_interval: float) -> dict:
    """Run the three readers one after the other against one outlet process."""
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    source_id = f"bci-bench-{uuid.uuid4().hex[:8]}"
    proc = ctx.Process(target=_outlet_process, args=(source_id, push_interval, stop))
    proc.start()
    results = {
        "cpus": psutil.cpu_count(),
        "n_channels": N_CHANNELS,
        "sfreq": SFREQ,
        "push_interval_ms": push_interval * 1e3,
    }
    try:
        for name, reader in PEERS.items():
            results[name] = reader(source_id, duration)
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    results["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    return results


def _print_peers(results: dict) -> None:
    print(
        f"{results['n_channels']} ch x {results['sfreq']:g} Hz float32 from another process, "
        f"pushed every {results['push_interval_ms']:g} ms; {results['cpus']} CPUs, load "
        f"{results['load_avg_1min_at_end']} (1 min) at the end"
    )
    for name in PEERS:
        r = results[name]
        share = 100.0 * r["samples"] / max(r["samples_expected"], 1)
        print(
            f"{name:<20}  sample -> visible p50 {r['latency_ms_p50']:.2f} ms, "
            f"p99 {r['latency_ms_p99']:.2f} ms; samples {r['samples']}/{r['samples_expected']} "
            f"({share:.1f} %); CPU {r['cpu_percent_of_one_core']:.1f} % of a core"
        )


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
    parser.add_argument(
        "--peers",
        action="store_true",
        help="compare a bare pylsl inlet, mne-lsl's StreamLSL and StreamSource (--duration each)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error(f"--duration must be > 0 s, got {args.duration}")
    if args.peers:
        results = run_peers(args.duration, args.push_interval_ms / 1000.0)
        if args.json:
            print(json.dumps(results, indent=2))
        else:
            _print_peers(results)
        return
    results = run(args.duration, args.push_interval_ms / 1000.0)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
