"""Benchmark the live scope: frame time at 64 and 306 channels while acquisition runs.

For each montage and view, a simulated typing stream (64-channel EEG or 306-channel MEG, both at
1 kHz) runs in another process, as an amplifier would. This process acquires it with a
StreamSource (and its markers with a MarkerSource) and draws it in a full-size ScopeWidget (Qt
offscreen) paced by the scope's own 30 fps timer. Views: ``channels`` (the default page of 25
channels grouped by type), ``butterfly`` (every channel of a type overlaid in one row per type)
and ``all`` (every channel on one page, the scope's only view before paging). One frame is what
the timer does (read what is new in the ring buffer, min/max decimation of every channel,
rasterisation of the new columns) plus painting the plot (``grab()``, since the offscreen
platform does not paint on its own); full redraws (first frame, auto scale, a drifting channel)
are counted. Printed per montage and view: frame time p50/p99 (ms), the frame rate that cost
allows, the frames drawn per second, ``sample -> painted`` p50/p99 (the newest sample's time to
the end of painting the frame that first shows it, as the window's latency panel shows it), and
acquisition with and without the scope running: chunk latency (sample -> ring buffer) p50/p99,
effective rate and dropped samples, and how late a thread sleeping 1 ms wakes (the time it
waits for the interpreter lock, as the inlet worker does). ``--decode`` runs the shipped typing
decoder (306-channel MEG) on the stream meanwhile, in this process, as the window does. The
interpreter's thread switch interval is the window's (:func:`gui.app.share_the_interpreter`)
unless ``--default-switch-interval``.

Usage: ``python scripts/bench_gui.py [--seconds 10] [--channels 64 306]
[--views channels butterfly all] [--decode] [--default-switch-interval] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np

MODALITY = {64: "eeg", 306: "meg"}
SFREQ = 1000.0
VIEWS = ("channels", "butterfly", "all")


def _start_outlet(modality: str, source_id: str) -> subprocess.Popen:
    code = f"""
        import sys
        from acquisition.simulator import Simulator, SimulatorStream
        sim = Simulator({modality!r}, "typing", snr=2.0, seed=0, sfreq={SFREQ})
        with SimulatorStream(sim, name="bci-gui-bench-{modality}", source_id={source_id!r}):
            print("ready", flush=True)
            sys.stdin.read()
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the {modality} outlet process did not start")
    return proc


def _acquisition(source, since: int, seconds_before) -> tuple[dict, int]:
    """Chunk latency percentiles since chunk ``since``, and health deltas."""
    latencies, n_chunks = source.chunk_latencies(since)
    health = source.health()
    return {
        "chunk_latency_p50_ms": float(np.percentile(latencies, 50) * 1e3),
        "chunk_latency_p99_ms": float(np.percentile(latencies, 99) * 1e3),
        "effective_rate_hz": health.effective_rate,
        "dropped_samples": health.dropped_samples - seconds_before.dropped_samples,
        "gaps": health.n_gaps - seconds_before.n_gaps,
    }, n_chunks


def _percentiles_ms(values) -> tuple[float, float]:
    """p50 and p99 of seconds, in ms (NaN when there are none)."""
    if len(values) == 0:
        return math.nan, math.nan
    p50, p99 = np.percentile(np.asarray(values) * 1e3, [50, 99])
    return float(p50), float(p99)


def _open(source_id: str, decode: bool):
    """Connect the stream and markers; with ``decode`` also the shipped typing decoder on them."""
    from acquisition.markers import MarkerSource
    from acquisition.stream import StreamSource

    if not decode:
        markers = MarkerSource(source_id=f"{source_id}-markers").connect()
        source = StreamSource(source_id=source_id).connect()
        return source, markers, lambda: (source.disconnect(), markers.disconnect())
    from bci_app.decoders.shipped import TYPING_BUNDLE
    from bci_app.live.factory import open_session

    opened = open_session(
        TYPING_BUNDLE, source_id, f"{source_id}-markers", text_outlet=False, start=True
    )
    try:
        markers = opened.connect_markers()  # the decoder drains its own marker source
    except BaseException:
        opened.close()
        raise
    return opened.source, markers, opened.close


class _LockProbe:
    """A thread that sleeps 1 ms in a loop and records how late it wakes (seconds).

    A thread waking from a sleep needs the interpreter lock: while the GUI thread holds it (Qt
    painting called from Python keeps it), the probe wakes late, as the inlet worker would.
    """

    def __init__(self) -> None:
        self.late: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            time.sleep(0.001)
            self.late.append(time.perf_counter() - t0 - 0.001)

    def stop(self) -> list[float]:
        """Stop the probe; return the lateness of every wake-up."""
        self._stop.set()
        self._thread.join()
        return self.late


def bench(n_channels: int, seconds: float, app, view: str = "channels", decode: bool = False):
    """Run one montage in one view (``decode``: while decoding); return the measurements."""
    from gui.scope import ScopeWidget

    source_id = f"bci-gui-bench-{uuid.uuid4().hex[:8]}"
    proc = _start_outlet(MODALITY[n_channels], source_id)
    try:
        source, markers, close = _open(source_id, decode)
        try:
            time.sleep(1.0)
            _, since = source.chunk_latencies()
            start, probe = source.health(), _LockProbe()
            time.sleep(seconds)
            probe_alone = probe.stop()
            alone, since = _acquisition(source, since, start)

            scope = ScopeWidget()
            scope.resize(1600, 900)
            scope.show()
            scope.set_source(source)
            if view == "all":
                scope.set_rows_per_page(None)
            else:
                scope.set_view(view)
            painted = []
            scope.painted.connect(painted.append)
            frame_s, paced_until = [], time.perf_counter()
            start, first, probe = source.health(), time.perf_counter(), _LockProbe()
            while time.perf_counter() - first < seconds:
                app.processEvents()
                paced_until += scope._timer.interval() / 1000.0
                t0 = time.perf_counter()
                scope.add_markers(markers.pull())
                scope.refresh()
                scope.plot.grab()
                frame_s.append(time.perf_counter() - t0)
                time.sleep(max(0.0, paced_until - time.perf_counter()))
            elapsed = time.perf_counter() - first
            probe_with_scope = probe.stop()
            with_scope, _ = _acquisition(source, since, start)
            full_redraws, rebaselines = scope._trace.n_full_redraws, scope._trace.n_rebaselines
            scope.close()
        finally:
            close()
    finally:
        proc.stdin.close()
        proc.wait(timeout=20)
    p50, p99 = _percentiles_ms(frame_s[5:])
    painted_p50, painted_p99 = _percentiles_ms(painted[5:])
    return {
        "channels": n_channels,
        "view": view,
        "decoding": decode,
        "sfreq_hz": SFREQ,
        "switch_interval_ms": sys.getswitchinterval() * 1e3,
        "frame_p50_ms": p50,
        "frame_p99_ms": p99,
        "max_fps_at_p50": float(1e3 / p50),
        "drawn_fps": float(len(frame_s) / elapsed),
        "sample_to_painted_p50_ms": painted_p50,
        "sample_to_painted_p99_ms": painted_p99,
        "probe_late_alone_ms": _percentiles_ms(probe_alone),
        "probe_late_with_scope_ms": _percentiles_ms(probe_with_scope),
        "full_redraws": full_redraws,
        "rebaselines": rebaselines,
        "acquisition_alone": alone,
        "acquisition_with_scope": with_scope,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--channels", type=int, nargs="+", default=[64, 306], choices=[64, 306])
    parser.add_argument(
        "--views", nargs="+", default=["channels", "butterfly"], choices=VIEWS, help="scope views"
    )
    parser.add_argument(
        "--decode",
        action="store_true",
        help="decode the stream with the shipped typing bundle meanwhile (as the window does)",
    )
    parser.add_argument(
        "--default-switch-interval",
        action="store_true",
        help="keep Python's 5 ms thread switch interval instead of the window's (gui.app)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per run")
    args = parser.parse_args(argv)
    from PyQt6.QtWidgets import QApplication

    from gui.app import share_the_interpreter

    if not args.default_switch_interval:
        share_the_interpreter()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    for n_channels, view in [(n, v) for n in args.channels for v in args.views]:
        # the shipped typing decoder reads the 306-channel MEG montage only
        result = bench(n_channels, args.seconds, app, view, args.decode and n_channels == 306)
        if args.json:
            print(json.dumps(result), flush=True)
            continue
        a, b = result["acquisition_alone"], result["acquisition_with_scope"]
        print(
            f"{n_channels:3d} channels @ {SFREQ:g} Hz, {view} view"
            f"{', while decoding' if result['decoding'] else ''}, thread switch interval "
            f"{result['switch_interval_ms']:g} ms: "
            f"frame p50 {result['frame_p50_ms']:.1f} ms, "
            f"p99 {result['frame_p99_ms']:.1f} ms (p50 allows {result['max_fps_at_p50']:.0f} "
            f"fps; drew {result['drawn_fps']:.1f} fps at the 30 fps timer; "
            f"{result['full_redraws']} full redraws, {result['rebaselines']} re-baselinings "
            f"redrawn over several frames, the rest column by column)\n"
            f"    sample -> painted:      p50 {result['sample_to_painted_p50_ms']:.1f} ms, "
            f"p99 {result['sample_to_painted_p99_ms']:.1f} ms\n"
            f"    1 ms sleeper thread woke late by p50/p99 "
            f"{'{:.2f}/{:.2f}'.format(*result['probe_late_alone_ms'])} ms alone, "
            f"{'{:.2f}/{:.2f}'.format(*result['probe_late_with_scope_ms'])} ms with the scope\n"
            f"    acquisition alone:      chunk latency p50 {a['chunk_latency_p50_ms']:.2f} ms, "
            f"p99 {a['chunk_latency_p99_ms']:.2f} ms, rate {a['effective_rate_hz']:.1f} Hz, "
            f"dropped {a['dropped_samples']}, gaps {a['gaps']}\n"
            f"    acquisition with scope: chunk latency p50 {b['chunk_latency_p50_ms']:.2f} ms, "
            f"p99 {b['chunk_latency_p99_ms']:.2f} ms, rate {b['effective_rate_hz']:.1f} Hz, "
            f"dropped {b['dropped_samples']}, gaps {b['gaps']}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
