"""``bci-app run``: live processing of an LSL stream, by default of a built-in simulated session.

With no ``--stream``, a simulated 306-channel MEG typing session is started in this process
(its own LSL outlets, a unique source_id) and processed like any amplifier stream: the stream
source, the Brain2Qwerty preprocessing (0.1-20 Hz, 50 Hz, robust scaling fitted on the first
seconds), keystroke-locked windows, and a health line every second.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import threading
import time
import uuid
from contextlib import ExitStack

import numpy as np

from acquisition.markers import MarkerSource
from acquisition.recording import Recording
from acquisition.stream import StreamSource
from bci_app.pipeline import LivePipeline, WindowEvent, window_summary
from bci_app.preprocessing import PreprocessConfig, Preprocessor, fit_scaler
from bci_app.windowing import EventWindower

logger = logging.getLogger(__name__)

MEG_TYPES = ("mag", "grad")


def _start_simulator(stack: ExitStack, seed: int) -> tuple[str, str]:
    from acquisition.simulator import Simulator, SimulatorStream

    sim = Simulator("meg", "typing", snr=2.0, seed=seed)
    source_id = f"bci-app-sim-{uuid.uuid4().hex[:8]}"
    stream = stack.enter_context(SimulatorStream(sim, name="bci-app-sim-meg", source_id=source_id))
    return stream.source_id, f"{stream.source_id}-markers"


def _connect(stack: ExitStack, query: str, **kwargs):
    """Connect to a stream given by source_id or name (source_id tried first)."""
    cls = kwargs.pop("cls")
    try:
        src = cls(source_id=query, resolve_timeout=kwargs.get("resolve_timeout", 2.0))
        return stack.enter_context(src)
    except RuntimeError:
        return stack.enter_context(cls(name=query, resolve_timeout=5.0))


def calibrate(source: StreamSource, seconds: float, stop: threading.Event) -> PreprocessConfig:
    """Wait for ``seconds`` of data and fit the Brain2Qwerty preprocessing on them."""
    picks = [n for n, t in zip(source.channels.names, source.channels.types) if t in MEG_TYPES]
    if not picks:
        picks = [
            n
            for n, t in zip(source.channels.names, source.channels.types)
            if t in ("eeg", "seeg", "ecog")
        ]
    config = PreprocessConfig.brain2qwerty(source.sfreq, picks or None)
    need = int(seconds * source.sfreq)
    while source.buffer.n_available < need and not stop.is_set():
        stop.wait(0.1)
    data, timestamps, _valid = source.buffer.read_latest(need)
    rec = Recording(data, timestamps, source.sfreq, source.channels, name="calibration")
    return fit_scaler(rec, config)


def run_live(args: argparse.Namespace, stop: threading.Event) -> int:
    """Run the live pipeline until ``stop`` is set or ``args.duration`` has passed."""
    events: queue.Queue[WindowEvent] = queue.Queue(maxsize=10_000)
    n_dropped_events = 0

    def on_window(event: WindowEvent) -> None:
        nonlocal n_dropped_events
        try:
            events.put_nowait(event)
        except queue.Full:  # a slow printer never blocks the pipeline
            n_dropped_events += 1

    with ExitStack() as stack:
        if args.stream is None:
            data_id, marker_id = _start_simulator(stack, args.seed)
            print(f"Started the built-in simulated MEG typing stream (source_id {data_id}).")
        else:
            data_id, marker_id = args.stream, args.markers
        source = _connect(stack, data_id, cls=StreamSource)
        markers = None if marker_id is None else _connect(stack, marker_id, cls=MarkerSource)
        print(f"Connected: {source!r}" + (f" + {markers!r}" if markers else ""), flush=True)
        config = calibrate(source, getattr(args, "calibration", 5.0), stop)
        preprocessor = Preprocessor(config, stream_channels=source.channels.names)
        windower = EventWindower(-0.2, 0.3, preprocessor.sfreq_out, clamp=5.0)
        if markers is not None:
            markers.pull()  # keystrokes typed during calibration have no data window any more
        pipeline = stack.enter_context(
            LivePipeline(source, preprocessor, windower, on_window, markers=markers)
        )
        print(
            f"Preprocessing {len(config.ch_names)} channels: 0.1-20 Hz, "
            f"{source.sfreq:g} -> {preprocessor.sfreq_out:g} Hz, robust scaling fitted on "
            f"{getattr(args, 'calibration', 5.0):g} s; keystroke windows -0.2..+0.3 s.",
            flush=True,
        )
        _report_loop(args, stop, source, pipeline, events)
        print("Latency per stage:\n" + pipeline.latency.format())
        if n_dropped_events:
            print(f"{n_dropped_events} window events were not printed (output too slow).")
    return 0


def _report_loop(args, stop, source, pipeline, events) -> None:
    start = time.monotonic()
    next_health = start + 1.0
    while not stop.is_set():
        now = time.monotonic()
        if args.duration is not None and now - start >= args.duration:
            break
        try:
            event = events.get(timeout=0.1)
        except queue.Empty:
            event = None
        if event is not None:
            info = window_summary(event.window)
            if args.json:
                print(json.dumps({"event": "window", **info}), flush=True)
            else:
                flag = "" if info["valid"] else "  INVALID"
                print(f"  window {info['marker']!s:<12} rms {info['rms']:.2f}{flag}", flush=True)
        if now >= next_health:
            next_health += 1.0
            _print_health(args, source, pipeline, now - start)


def _print_health(args, source, pipeline, elapsed: float) -> None:
    h = source.health()
    row = {
        "event": "health",
        "t": round(elapsed, 1),
        "state": h.state,
        "rate_hz": None if np.isnan(h.effective_rate) else round(h.effective_rate, 1),
        "lag_ms": None if np.isnan(h.lag_s) else round(h.lag_s * 1e3, 1),
        "gaps": h.n_gaps,
        "dropped": h.dropped_samples,
        "invalid_samples": h.n_invalid_samples,
        "windows": pipeline.n_windows,
        "invalid_windows": pipeline.n_invalid_windows,
    }
    if args.json:
        print(json.dumps(row), flush=True)
    else:
        print(
            f"[{row['t']:6.1f} s] {row['state']:<9} rate {row['rate_hz']} Hz  lag "
            f"{row['lag_ms']} ms  gaps {row['gaps']}  dropped {row['dropped']}  windows "
            f"{row['windows']} ({row['invalid_windows']} invalid)",
            flush=True,
        )
