"""``bci-app run``: live decoding of an LSL stream, by default of a built-in simulated session.

:func:`bci_app.live.factory.open_session` opens everything, with the rules the window uses too:
with no ``--stream``, the built-in simulator plays a session of the modality and subject the
bundle was trained on (the shipped ``typing-meg-small``, or ``speech-meg-small`` with ``--task
listening``), with a session seed it never saw, on its own LSL outlets, and it is decoded like
any amplifier stream. This module parses nothing but its arguments and prints what the session
emits. With ``--no-decoder`` the stream is only preprocessed and windowed (scaler fitted on the
first seconds), to check a new set-up before a decoder exists.

When the session ends, its report (:mod:`bci_app.report`) is written to ``--report``, else next to
the recording (``--record S.xdf``: ``S.html``), else next to the log; without any of them, none.
"""

from __future__ import annotations

import argparse
import logging
import queue
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from acquisition.recording import Recording
from acquisition.stream import StreamSource
from bci_app.decoders.bundle import load_bundle
from bci_app.decoders.events import strict_json
from bci_app.live.builtin import shipped_bundle
from bci_app.live.factory import OpenedSession, open_session
from bci_app.live.pipeline import LivePipeline, WindowEvent, wait_for_data, window_summary
from bci_app.live.session import DecodingSession
from bci_app.processing.preprocessing import PreprocessConfig, Preprocessor, fit_scaler
from bci_app.processing.windowing import EventWindower
from bci_app.report import SessionCollector, check_report_path, write_report
from bci_app.speech.decoder import DEFAULT_HOP_S
from bci_app.speech.scoring import heard_rank
from bci_app.typing.alphabet import cer

logger = logging.getLogger(__name__)


def run_live(args: argparse.Namespace, stop: threading.Event) -> int:
    """Entry point of ``bci-app run``."""
    if args.record and Path(args.record).exists():  # before any stream starts
        raise ValueError(
            f"Cannot record to '{args.record}': the file already exists. Choose another --record "
            "file (a session never replaces a recording)."
        )
    if getattr(args, "no_decoder", False):
        if getattr(args, "report", None):
            raise ValueError(
                "Invalid option '--report' with '--no-decoder': a session report shows decoded "
                "text. Drop one of the two."
            )
        return _run_monitor(args, stop)
    report_path = report_path_of(args)
    task = getattr(args, "task", None)
    bundle = load_bundle(args.bundle or shipped_bundle(task or "typing"))
    speech = bundle.task == "speech"
    with ExitStack() as stack:
        opened = stack.enter_context(
            open_session(
                bundle,
                args.stream,
                args.markers,
                task=task,
                seed=args.seed,
                provider=args.provider,
                recenter=getattr(args, "recenter", False),
                log_path=args.log,
            )
        )
        _print_builtin(args, opened)
        session = opened.session
        collector = SessionCollector(session)
        if args.record:
            from acquisition.recorder import Recorder

            stack.enter_context(Recorder(args.record, opened.record_ids()))
        _print_start(args, session)
        printed = {"sentences": 0}
        with collector, session:
            if speech:
                _print_candidates(args, stop, session)
            else:
                _print_events(args, stop, session, printed)
        summary = session.stop()
        record = collector.record()
    if not speech:  # events emitted while stopping (the open sentence is committed)
        _print_events(args, threading.Event(), session, printed, drain=True)
    _print_summary(args, summary, session)
    if report_path is not None:
        _say(args, f"Wrote the session report to {write_report(record, report_path)}")
    return 0


def report_path_of(args: argparse.Namespace) -> Path | None:
    """Where the session report goes: ``--report``, else beside ``--record``, else ``--log``."""
    chosen = getattr(args, "report", None) or args.record or args.log
    if chosen is None:
        return None
    path = Path(chosen) if getattr(args, "report", None) else Path(chosen).with_suffix(".html")
    return check_report_path(path)


def _say(args, text: str) -> None:
    """Print a message for the person: to stdout, or to stderr with ``--json`` (pure JSON lines)."""
    print(text, file=sys.stderr if args.json else sys.stdout, flush=True)


def _print_builtin(args, opened: OpenedSession) -> None:
    """Say which built-in simulated session plays, if one does."""
    plan = opened.builtin
    if plan is not None:
        _say(
            args,
            f"Started the built-in simulated {plan.modality.upper()} {plan.task} stream "
            f"(source_id {plan.source_id}, seed {plan.seed}, subject "
            f"{plan.params.get('subject', 0)}).",
        )


def _print_start(args, session: DecodingSession) -> None:
    """Say what decodes what, where."""
    what = f"'{session.source.info.name()}' with '{session.bundle.name}'"
    if session.bundle.task == "speech":
        windows = "word-onset" if session.markers is not None else "sliding"
        if session.markers is None:
            windows += f" ({DEFAULT_HOP_S:g} s hop)"
        what += f" ({session.decoder.n_candidates} candidates, {windows} windows)"
    _say(
        args,
        f"Decoding {what} on {session.provider}"
        + (f"; recording to {args.record}" if args.record else "")
        + (f"; log {args.log}" if args.log else ""),
    )


def _print_events(
    args, stop: threading.Event, session: DecodingSession, printed: dict, *, drain: bool = False
) -> None:
    """Print typing events until ``stop``/``--duration``, or (``drain``) those still queued."""
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
            decoded = session.strategy.sentences[printed["sentences"]]
            printed["sentences"] += 1
            line = ("\r" if interactive else "") + f"  decoded: {decoded.text:<70}"
            if drain:
                line += "  [cut short: the session stopped mid-sentence]"
            elif decoded.target:
                score = cer(decoded.text, decoded.target)
                line += f"\n  target:  {decoded.target}   (CER {score:.2f})"
            print(line, flush=True)


def format_summary(summary: dict, task: str) -> str:
    """Return the plain-text line of a session summary (what ``--json`` prints as one object).

    Parameters
    ----------
    summary : dict
        :meth:`DecodingSession.summary` (``DecodingSession.stop()``'s result).
    task : str
        The bundle's task: ``"speech"`` counts words, anything else sentences.

    Returns
    -------
    line : str
        Counts, invalid and refused windows, gaps, inference errors and the provider; when
        the stream is off its declared rate at the end, what its rate is.
    """
    if task == "speech":
        counts = f"{summary['words']} word window(s), {summary['windows']} windows"
    else:
        counts = f"{summary['sentences']} sentence(s), {summary['windows']} keystroke windows"
    line = (
        f"{counts} ({summary['invalid_windows']} invalid, {summary['refused']} refused as the "
        f"stream was off its declared rate), {summary['gaps']} gap(s), "
        f"{summary['inference_errors']} inference error(s); provider {summary['provider']}."
    )
    if summary.get("rate_mismatch"):
        line += f" Not decoding at the end: {summary['rate_mismatch']}."
    return line


def _print_summary(args, summary: dict, session: DecodingSession) -> None:
    if args.json:
        print(strict_json({"event": "summary", **summary}), flush=True)
        return
    print("\n" + format_summary(summary, session.bundle.task))
    print("Latency per stage:\n" + session.latency.format())


def _print_candidates(args, stop: threading.Event, session: DecodingSession) -> None:
    """Print each window's top candidates (and the heard word's rank) until stop/--duration."""
    start = time.monotonic()
    n_hits = n_heard = 0
    while not stop.is_set():
        if args.duration is not None and time.monotonic() - start >= args.duration:
            return
        try:
            event = session.events.get(timeout=0.1)
        except queue.Empty:
            continue
        if args.json:
            print(event.to_json(), flush=True)
            continue
        if event.kind == "gap":
            print(f"  [data gap at {event.timestamp:.2f} s]", flush=True)
            continue
        top = "  ".join(f"{text} {p:.2f}" for text, p in event.candidates[:5])
        line = f"  {event.timestamp:9.2f} s  top: {top}"
        rank = heard_rank(event.candidates, event.target)
        if rank is not None:
            n_heard += 1
            n_hits += rank > 0
            k = len(event.candidates)
            where = f"rank {rank}" if rank else f"not in top {k}"
            line = f"  heard {event.target!r:<16} ({where}; top-{k} {n_hits}/{n_heard})"
            line += f"\n      top: {top}"
        print(line, flush=True)


# ---------------------------------------------------------------------------------------------
# --no-decoder: preprocessing and windows only


def calibrate(
    source: StreamSource, seconds: float, stop: threading.Event, timeout: float | None = None
) -> PreprocessConfig:
    """Wait for ``seconds`` of data and fit the Brain2Qwerty preprocessing on them.

    ``timeout``: seconds to wait beyond what the data takes (``--duration``; see
    :func:`~bci_app.live.pipeline.wait_for_data`, which also refuses a stream off its rate).
    """
    picks = list(source.channels.modality_channels())
    config = PreprocessConfig.brain2qwerty(source.sfreq, picks or None)
    data, timestamps, _valid = wait_for_data(source, seconds, stop, timeout)
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
        log = None
        if args.log:  # opened first: a log that cannot be written fails before the stream starts
            log = stack.enter_context(open(args.log, "a", encoding="utf-8"))
        opened = stack.enter_context(open_session(None, args.stream, args.markers, seed=args.seed))
        _print_builtin(args, opened)
        source, markers = opened.source, opened.markers
        if args.record:
            from acquisition.recorder import Recorder

            stack.enter_context(Recorder(args.record, opened.record_ids()))
            _say(args, f"Recording to {args.record}")
        config = calibrate(source, args.calibration, stop, args.duration)
        preprocessor = Preprocessor(config, stream_channels=source.channels.names)
        windower = EventWindower(-0.2, 0.3, preprocessor.sfreq_out, clamp=5.0)
        if markers is not None:
            markers.pull()  # keystrokes typed during calibration have no data window any more
        pipeline = stack.enter_context(
            LivePipeline(source, preprocessor, windower, on_window, markers=markers)
        )
        _say(
            args,
            f"Preprocessing {len(config.ch_names)} channels: 0.1-20 Hz, {source.sfreq:g} -> "
            f"{preprocessor.sfreq_out:g} Hz, robust scaling fitted on {args.calibration:g} s; "
            "keystroke windows -0.2..+0.3 s.",
        )
        _monitor_loop(args, stop, source, pipeline, events, log)
        _say(args, "Latency per stage:\n" + pipeline.latency.format())
    return 0


def _monitor_loop(args, stop, source, pipeline, events, log) -> None:
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
            _emit(args, log, {"event": "window", **info})
            if not args.json:
                flag = "" if info["valid"] else "  INVALID"
                print(f"  window {info['marker']!s:<12} rms {info['rms']:.2f}{flag}", flush=True)
        if now >= next_health:
            next_health += 1.0
            _print_health(args, source, pipeline, now - start, log)


def _emit(args, log, row: dict) -> None:
    """Write one row as a strict JSON line to the ``--log`` file, and to stdout with ``--json``."""
    line = strict_json(row)
    if log is not None:
        log.write(line + "\n")
        log.flush()
    if args.json:
        print(line, flush=True)


def _print_health(args, source, pipeline, elapsed: float, log=None) -> None:
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
    _emit(args, log, row)
    if not args.json:
        print(
            f"[{row['t']:6.1f} s] {row['state']:<9} rate {row['rate_hz']} Hz  lag "
            f"{row['lag_ms']} ms  gaps {row['gaps']}  dropped {row['dropped']}  windows "
            f"{row['windows']} ({row['invalid_windows']} invalid)",
            flush=True,
        )
