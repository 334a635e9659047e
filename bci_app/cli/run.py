"""``bci-app run``: live decoding of an LSL stream, by default of a built-in simulated session.

With no ``--stream``, a simulated 306-channel MEG typing session is started in this process (its
own LSL outlets, a unique source_id) for the subject the shipped ``typing-meg-small`` bundle was
trained on, with a session seed it never saw, and decoded like any amplifier stream. With
``--no-decoder`` the stream is only preprocessed and windowed (scaler fitted on the first
seconds), to check a new set-up before a decoder exists.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import sys
import threading
import time
import uuid
from contextlib import ExitStack

import numpy as np

from acquisition.recording import Recording
from acquisition.stream import StreamSource
from bci_app.decoders.bundle import Bundle, load_bundle
from bci_app.decoders.shipped import SPEECH_BUNDLE, TYPING_BUNDLE
from bci_app.live.pipeline import LivePipeline, WindowEvent, window_summary
from bci_app.live.session import LiveSession, connect_streams
from bci_app.processing.preprocessing import PreprocessConfig, Preprocessor, fit_scaler
from bci_app.processing.windowing import EventWindower
from bci_app.typing.alphabet import cer

logger = logging.getLogger(__name__)

MEG_TYPES = ("mag", "grad")


def simulator_params(bundle: Bundle | None, modality: str, task: str = "typing") -> dict:
    """Simulator settings of the session a bundle was made for (when of ``modality``, ``task``).

    The built-in simulator then plays a new session of the subject the decoder knows, as
    ``bci-app run`` does: the bundle's ``demo.simulator`` settings when it has them (a speech
    bundle: the closed set of sentences its candidates come from), else the subject and SNR of
    its first training recording. Other bundles leave the simulator's defaults.
    """
    params = {"snr": 2.0, "subject": 0}
    if bundle is None:
        return params
    demo = bundle.manifest.get("demo", {}).get("simulator")
    if _plays(demo, modality, task):
        return {k: v for k, v in demo.items() if k not in ("modality", "task")}
    recordings = bundle.manifest.get("provenance", {}).get("recordings", [])
    sim = recordings[0].get("simulator") if recordings else None
    if _plays(sim, modality, task):
        params = {"snr": sim.get("snr", 2.0), "subject": sim.get("subject", 0)}
    return params


def _plays(settings: object, modality: str, task: str) -> bool:
    """Whether simulator ``settings`` from a manifest are of ``modality`` and ``task``."""
    return (
        isinstance(settings, dict)
        and settings.get("modality") == modality
        and settings.get("task", "typing") == task
    )


def simulator_modality(bundle: Bundle | None) -> str:
    """Modality of the simulated session a bundle was made for (else of its sensors; MEG)."""
    if bundle is None:
        return "meg"
    demo = bundle.manifest.get("demo", {}).get("simulator")
    recordings = bundle.manifest.get("provenance", {}).get("recordings", [])
    for settings in (demo, recordings[0].get("simulator") if recordings else None):
        if isinstance(settings, dict) and settings.get("modality") in ("meg", "eeg", "ieeg"):
            return settings["modality"]
    types = set(bundle.channels.types)  # trained from files: the sensors say
    if types and types <= {"seeg", "ecog", "dbs"}:
        return "ieeg"
    return "eeg" if types == {"eeg"} else "meg"


def _start_simulator(
    stack: ExitStack, seed: int, bundle=None, task: str = "typing"
) -> tuple[str, str]:
    """Start the built-in simulated stream: the modality and subject ``bundle`` was trained on."""
    from acquisition.simulator import Simulator, SimulatorStream

    modality = simulator_modality(bundle)
    params = simulator_params(bundle, modality, task)
    sim = Simulator(modality, task, seed=seed, **params)
    source_id = f"bci-app-sim-{uuid.uuid4().hex[:8]}"
    name = f"bci-app-sim-{modality}"
    stream = stack.enter_context(SimulatorStream(sim, name=name, source_id=source_id))
    print(
        f"Started the built-in simulated {modality.upper()} {task} stream (source_id "
        f"{source_id}, seed {seed}, subject {params.get('subject', 0)})."
    )
    return stream.source_id, f"{stream.source_id}-markers"


def run_live(args: argparse.Namespace, stop: threading.Event) -> int:
    """Entry point of ``bci-app run``."""
    if getattr(args, "no_decoder", False):
        return _run_monitor(args, stop)
    listening = getattr(args, "task", "typing") == "listening"
    bundle = load_bundle(args.bundle or (SPEECH_BUNDLE if listening else TYPING_BUNDLE))
    if listening or bundle.task == "speech":
        from bci_app.live.speech import run_speech_live

        return run_speech_live(args, stop, bundle, _start_simulator)
    with ExitStack() as stack:
        if args.stream is None:
            data_id, marker_id = _start_simulator(stack, args.seed, bundle)
        else:
            data_id, marker_id = args.stream, args.markers
        if marker_id is None:
            raise ValueError(
                "Live typing decoding needs the keystroke marker stream: give --markers NAME "
                "(see 'bci-app streams')."
            )
        source, markers = connect_streams(data_id, marker_id)
        stack.callback(source.disconnect)
        stack.callback(markers.disconnect)
        session_class = LiveSession
        if bundle.manifest.get("arch") == "brain2qwerty_v2":
            from bci_app.live.ctc import CTCLiveSession as session_class
        session = session_class(bundle, source, markers, provider=args.provider, log_path=args.log)
        if args.record:
            from acquisition.recorder import Recorder

            # by source_id: a StreamInfo taken from an outlet of this process cannot open an inlet
            infos = [source.info, markers.info, session.text_outlet_info]
            ids = [i.source_id() for i in infos if i is not None]
            stack.enter_context(Recorder(args.record, ids))
        print(
            f"Decoding '{source.info.name()}' with '{bundle.name}' on {session.provider}"
            + (f"; recording to {args.record}" if args.record else "")
            + (f"; log {args.log}" if args.log else ""),
            flush=True,
        )
        printed = {"sentences": 0}
        with session:
            _print_events(args, stop, session, printed)
        summary = session.stop()
    # events emitted while stopping (the open sentence is committed)
    _print_events(args, threading.Event(), session, printed, drain=True)
    _print_summary(args, summary, session)
    return 0


def _print_events(
    args, stop: threading.Event, session: LiveSession, printed: dict, *, drain: bool = False
) -> None:
    """Print text events until ``stop``/``--duration``, or (``drain``) those still queued."""
    start = time.monotonic()
    interactive = sys.stdout.isatty()  # redraw the live hypothesis only on a terminal
    while not stop.is_set():
        if args.duration is not None and time.monotonic() - start >= args.duration and not drain:
            return
        try:
            event = session.events.get(timeout=0.0 if drain else 0.1)
        except queue.Empty:
            if drain:
                return
            continue
        if args.json:
            print(event.to_json(), flush=True)
        elif event.kind == "keystroke" and interactive:
            print(f"\r  typing:  {event.hypothesis:<70}", end="", flush=True)
        elif event.kind == "gap":
            print(f"\n  [data gap at {event.timestamp:.2f} s: the text around it may be wrong]")
        elif event.kind == "sentence_end":
            decoded = session.sentences[printed["sentences"]]
            printed["sentences"] += 1
            line = ("\r" if interactive else "") + f"  decoded: {decoded.text:<70}"
            if drain:
                line += "  [cut short: the session stopped mid-sentence]"
            elif decoded.target:
                score = cer(decoded.text, decoded.target)
                line += f"\n  target:  {decoded.target}   (CER {score:.2f})"
            print(line, flush=True)


def _print_summary(args, summary: dict, session: LiveSession) -> None:
    if args.json:
        print(json.dumps({"event": "summary", **summary}), flush=True)
        return
    print(
        f"\n{summary['sentences']} sentence(s), {summary['windows']} keystroke windows "
        f"({summary['invalid_windows']} invalid), {summary['gaps']} gap(s), "
        f"{summary['inference_errors']} inference error(s); provider {summary['provider']}."
    )
    print("Latency per stage:\n" + session.latency.format())


# ---------------------------------------------------------------------------------------------
# --no-decoder: preprocessing and windows only


def calibrate(source: StreamSource, seconds: float, stop: threading.Event) -> PreprocessConfig:
    """Wait for ``seconds`` of data and fit the Brain2Qwerty preprocessing on them."""
    types = source.channels.types
    picks = [n for n, t in zip(source.channels.names, types) if t in MEG_TYPES] or [
        n for n, t in zip(source.channels.names, types) if t in ("eeg", "seeg", "ecog")
    ]
    config = PreprocessConfig.brain2qwerty(source.sfreq, picks or None)
    need = int(seconds * source.sfreq)
    while source.buffer.n_available < need and not stop.is_set():
        stop.wait(0.1)
    data, timestamps, _valid = source.buffer.read_latest(need)
    rec = Recording(data, timestamps, source.sfreq, source.channels, name="calibration")
    return fit_scaler(rec, config)


def _run_monitor(args: argparse.Namespace, stop: threading.Event) -> int:
    events: queue.Queue[WindowEvent] = queue.Queue(maxsize=10_000)

    def on_window(event: WindowEvent) -> None:
        try:
            events.put_nowait(event)
        except queue.Full:  # a slow printer never blocks the pipeline
            pass

    with ExitStack() as stack:
        if args.stream is None:
            data_id, marker_id = _start_simulator(stack, args.seed)
        else:
            data_id, marker_id = args.stream, args.markers
        source, markers = connect_streams(data_id, marker_id)
        stack.callback(source.disconnect)
        if markers is not None:
            stack.callback(markers.disconnect)
        config = calibrate(source, args.calibration, stop)
        preprocessor = Preprocessor(config, stream_channels=source.channels.names)
        windower = EventWindower(-0.2, 0.3, preprocessor.sfreq_out, clamp=5.0)
        if markers is not None:
            markers.pull()  # keystrokes typed during calibration have no data window any more
        pipeline = stack.enter_context(
            LivePipeline(source, preprocessor, windower, on_window, markers=markers)
        )
        print(
            f"Preprocessing {len(config.ch_names)} channels: 0.1-20 Hz, {source.sfreq:g} -> "
            f"{preprocessor.sfreq_out:g} Hz, robust scaling fitted on {args.calibration:g} s; "
            "keystroke windows -0.2..+0.3 s.",
            flush=True,
        )
        _monitor_loop(args, stop, source, pipeline, events)
        print("Latency per stage:\n" + pipeline.latency.format())
    return 0


def _monitor_loop(args, stop, source, pipeline, events) -> None:
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
