"""The ``bci-app`` command line: streams, simulate, record, replay, convert, run, lm."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bci_app._argparse import ArgumentParser, RawDescriptionDefaultsHelpFormatter
from bci_app.cli._checks import positive_int, positive_seconds, speed
from bci_app.cli._signals import (
    EXIT_STATUS,
    interrupt_error,
    interrupt_on_sigterm,
    interruption,
)
from bci_app.cli.evaluate import add_evaluate_command
from bci_app.cli.report import add_report_command
from bci_app.cli.speech import add_candidates_command
from bci_app.cli.train import add_train_export_commands

logger = logging.getLogger("bci_app")

#: How a trained language model reaches the decoder (``bci-app lm train --help``, README).
LM_USE = """\
using the model: a typing bundle decodes with the LM its manifest.json names ("lm"). Put yours
into a copy of a bundle, then decode or score with that bundle:
  cp -r BUNDLE my-bundle && cp LM.npz my-bundle/lm.npz
  in my-bundle/manifest.json: "lm": {"file": "lm.npz", "order": N, "weight": 0.5}
  bci-app run --bundle my-bundle        (or: bci-app gui --bundle my-bundle)
  bci-app evaluate my-bundle REC.xdf    (its "+ LM" row uses it; --no-lm leaves it out)
The shipped bundles are in bci_app/data/bundles/; 'weight' is the LM weight of the beam search."""


class CLIError(Exception):
    """A user error: printed as one message, exit status 2, no traceback."""


#: Errors that mean bad input (a file, a bundle, an option value): one line, exit status 2.
USER_ERRORS = (CLIError, ValueError, FileNotFoundError, FileExistsError, IsADirectoryError)
#: What to do after Ctrl-C, per command (printed with the "interrupted" line).
INTERRUPT_HINTS = {
    "train": "run the same command with --resume {out} to continue from its last epoch checkpoint",
    "simulate": "nothing was written; run it again (a shorter --duration is quicker)",
    "record": "it was still looking for streams: nothing was recorded",
}


class _StopEvent(threading.Event):
    """Set by Ctrl-C / SIGTERM; ``interrupt()`` is the exception that names which came."""

    signum = signal.SIGINT

    def interrupt(self) -> KeyboardInterrupt:
        return interrupt_error(self.signum)


def _stop_event() -> _StopEvent:
    """Return an event set by Ctrl-C / SIGTERM, so long commands shut down cleanly."""
    stop = _StopEvent()

    def handler(signum, frame):
        stop.signum = signum
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _resolve_streams(timeout: float, stop: _StopEvent) -> list:
    """Return the LSL streams that answer within ``timeout`` s; Ctrl-C ends the search.

    ``pylsl.resolve_streams`` waits inside liblsl, where Python cannot act on Ctrl-C until the
    whole wait is over, so a ContinuousResolver is polled here instead.
    """
    import pylsl

    resolver = pylsl.ContinuousResolver(forget_after=max(5.0, timeout + 1.0))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stop.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
            raise stop.interrupt()
    return resolver.results()


def _wait(stop: threading.Event, duration: float | None, done: Callable[[], bool] | None = None):
    """Block until Ctrl-C, ``duration`` seconds, or ``done()`` is true."""
    deadline = None if duration is None else time.monotonic() + duration
    while not stop.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            return
        if done is not None and done():
            return
        stop.wait(0.1)


# ---------------------------------------------------------------------------------------------
# commands


def cmd_streams(args: argparse.Namespace) -> int:
    """List the LSL streams visible on the network."""
    infos = _resolve_streams(args.timeout, _stop_event())
    rows = [
        {
            "name": i.name(),
            "type": i.type(),
            "channels": i.channel_count(),
            "sfreq": i.nominal_srate(),
            "format": i.channel_format(),
            "source_id": i.source_id(),
            "hostname": i.hostname(),
        }
        for i in infos
    ]
    rows.sort(key=lambda r: (r["name"], r["source_id"]))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"No LSL stream found within {args.timeout:g} s.")
        return 0
    fmt = "{:<28} {:<10} {:>8} {:>10}  {}"
    print(fmt.format("name", "type", "channels", "sfreq", "source_id"))
    for r in rows:
        print(fmt.format(r["name"], r["type"], r["channels"], f"{r['sfreq']:g}", r["source_id"]))
    return 0


def _generate(sim, duration: float):
    """Return ``sim.generate(duration)``, simulated in a worker thread so Ctrl-C acts at once.

    Python handles a signal between bytecodes of the main thread only, so while the main thread
    runs the simulator one long numpy step delays Ctrl-C (over 60 s was seen for ``--duration
    3000`` on a loaded machine). Here the main thread only waits: the signal is handled within
    0.1 s and the worker, which has written nothing, is left to end with the process (a daemon
    thread). Writing the file happens after, in the main thread, with Ctrl-C as usual.
    """
    stop = _stop_event()
    result: dict = {}

    def work() -> None:
        try:
            result["recording"] = sim.generate(duration, progress=True)
        except BaseException as err:  # re-raised in the main thread
            result["error"] = err

    worker = threading.Thread(target=work, name="bci-app-simulate", daemon=True)
    worker.start()
    while worker.is_alive():
        if stop.wait(0.1):
            raise stop.interrupt()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the write: Ctrl-C as usual
    interrupt_on_sigterm()
    if "error" in result:
        raise result["error"]
    return result["recording"]


def cmd_simulate(args: argparse.Namespace) -> int:
    """Stream a simulated session live, or write it to a recording."""
    from acquisition.simulator import Simulator, SimulatorStream

    params = _difficulty_params(args, _listening_params(args))
    sim = Simulator(args.modality, args.task, seed=args.seed, **params)
    if args.out:
        from acquisition.io import write_recording

        if args.duration is None:
            raise CLIError("--out needs --duration: say how many seconds to simulate.")
        out = Path(args.out)
        if not out.parent.is_dir():
            raise CLIError(f"Cannot write {out}: the folder {out.parent} does not exist.")
        if out.exists() and not args.overwrite:  # before simulating
            from acquisition.recording import exists_error

            raise exists_error(out)
        rec = _generate(sim, args.duration)
        try:
            write_recording(rec, out, overwrite=args.overwrite)
        except FileExistsError:
            raise  # someone else's file: left alone
        except BaseException:  # Ctrl-C or a full disk mid-write: no half-written file is left
            out.unlink(missing_ok=True)
            raise
        n_keys = len(rec.markers_of("key"))
        n_words = len(rec.markers_of("word"))
        print(
            f"Wrote {rec.duration:.1f} s of {args.modality} {args.task} "
            f"({rec.channels.n_channels} ch, {rec.sfreq:g} Hz, {n_keys} keystrokes, "
            f"{n_words} words) to {out}"
        )
        if args.task == "listening":
            from acquisition.simulator.listening import write_stimulus_audio

            stim_dir = out.with_name(out.name.split(".")[0] + "_stimuli")
            files = write_stimulus_audio(rec.meta["ground_truth"], stim_dir)
            print(f"Wrote the heard audio ({len(files)} files) to {stim_dir}")
        return 0
    stop = _stop_event()
    name = args.name or f"bci-app-sim-{args.modality}"
    with SimulatorStream(sim, name=name, source_id=args.source_id or name):
        print(
            f"Streaming '{name}' ({args.modality}, {args.task}) and '{name}-markers' to LSL; "
            "Ctrl-C to stop.",
            flush=True,
        )
        _wait(stop, args.duration)
    return 0


def _listening_params(args: argparse.Namespace) -> dict:
    """Simulator settings: the snr, and a listening session's sentences (``--vocabulary``)."""
    if args.task != "listening":
        if args.vocabulary is not None:
            raise CLIError("--vocabulary is for --task listening (the heard sentences).")
        return {"snr": 1.0 if args.snr is None else args.snr}
    from bci_app.speech.vocabulary import listening_vocabulary

    vocabulary = listening_vocabulary(args.vocabulary)
    params = {**vocabulary.settings, "sentences": vocabulary.sentences}
    params["snr"] = params.get("snr", 1.0) if args.snr is None else args.snr
    print(f"Listening to {vocabulary.label} (snr {params['snr']:g})", flush=True)
    return params


def _difficulty_params(args: argparse.Namespace, params: dict) -> dict:
    """Add ``--difficulty`` and the sentence part (``--sentences``) to the simulator settings.

    Typing sessions draw from the calibration part of the sentence bank when written to a file
    (calibration recordings) and from the test part when streamed live (decoding them), unless
    ``--sentences`` says otherwise; listening keeps its vocabulary's sentences.
    """
    params = dict(params)
    if args.difficulty is not None:
        if args.snr is not None:
            raise CLIError("--snr and --difficulty both set the SNR; give one of them.")
        params.pop("snr", None)
        params["difficulty"] = args.difficulty
    if args.sentences is not None:
        params["sentence_split"] = args.sentences
    elif args.task == "typing":
        params["sentence_split"] = "calibration" if args.out else "test"
    if args.task == "typing":
        print(
            f"Typing sentences of the {params['sentence_split']} part of the bank"
            + (f", difficulty {args.difficulty}" if args.difficulty else ""),
            flush=True,
        )
    return params


def cmd_record(args: argparse.Namespace) -> int:
    """Record LSL streams to XDF."""
    # Ctrl-C sets the event from here on: one pressed during the imports below would raise
    # inside a library's import (a fresh-clone run once saw record outlive Ctrl-C by 30 s)
    stop = _stop_event()
    from acquisition.recorder import Recorder
    from acquisition.recording import exists_error

    if Path(args.out).exists() and not args.overwrite:  # before waiting for streams
        raise exists_error(args.out)
    infos = _resolve_streams(args.timeout, stop)
    if args.stream:
        wanted = set(args.stream)
        picked = [i for i in infos if {i.name(), i.source_id(), i.type()} & wanted]
        missing = wanted - {v for i in picked for v in (i.name(), i.source_id(), i.type())}
        if missing:
            seen = ", ".join(sorted(i.name() for i in infos)) or "none"
            raise CLIError(
                f"Stream(s) {sorted(missing)} not found (visible: {seen}). "
                "Start them or check the names with 'bci-app streams'."
            )
    else:
        picked = infos
    if not picked:
        raise CLIError("No LSL stream to record. Start one (e.g. 'bci-app simulate') first.")
    # a stream that vanishes while the others connect is waited for, not fatal: keep what is there
    with Recorder(args.out, picked, overwrite=args.overwrite, missing_ok=True) as rec:
        waiting = rec.waiting_for
        print(
            f"Recording {len(picked) - len(waiting)} stream(s) to {args.out}: "
            + ", ".join(n for n in rec.stream_names if n not in waiting)
            + (
                f"; lost while connecting, recorded when it returns: {', '.join(waiting)}"
                if waiting
                else ""
            )
            + "; Ctrl-C to stop.",
            flush=True,
        )
        _wait(stop, args.duration)
    counts = ", ".join(f"{name} {s['sample_count']} samples" for name, s in rec.stats().items())
    print(f"Saved {args.out} ({counts})")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Stream a recording to LSL as if live."""
    from acquisition.player import Player

    path = Path(args.file)
    if not path.exists() and "://" not in args.file:
        raise CLIError(f"File not found: {args.file}. Check the path of the recording to replay.")
    stop = _stop_event()
    with Player(
        args.file,
        speed=args.speed,
        loop=args.loop,
        name=args.name,
        source_id=args.source_id,
        wait_for_consumer=not args.no_wait,
    ) as player:
        print(
            f"Replaying {args.file} at speed {args.speed} as '{player.name}' "
            f"(+ '{player.name}-markers'); Ctrl-C to stop.",
            flush=True,
        )
        waiting = not args.no_wait or args.speed == "max"
        if waiting:
            print(
                f"Waiting for a reader of '{player.name}' before playing: start "
                f"`bci-app run --stream {player.name}` (or any LSL consumer), or pass --no-wait.",
                flush=True,
            )

        def finished() -> bool:
            nonlocal waiting
            if waiting and player.n_samples_sent > 0:
                waiting = False
                print("A reader connected: playing.", flush=True)
            return player.done.is_set()

        _wait(stop, args.duration, done=finished)
        if player.done.is_set() and args.linger > 0:
            # LSL delivers what is queued only while the outlet lives: give consumers the tail
            print(f"End of recording; outlets stay open {args.linger:g} s.", flush=True)
            _wait(stop, args.linger)
    print(f"Sent {player.n_samples_sent} samples.")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a recording to FIF or BIDS."""
    from acquisition.io import convert
    from acquisition.xdf import truncation

    result = convert(
        args.input, args.output, subject=args.subject, task=args.task, overwrite=args.overwrite
    )
    cut = truncation(args.input)
    if cut is not None:
        print(
            f"Wrote {result} from the complete part of '{args.input}', which is truncated "
            f"({cut}): what was recorded after the cut is missing."
        )
        return 0
    print(f"Wrote {result}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Live processing of a stream (built-in default: a simulated MEG typing stream)."""
    from bci_app.cli.run import run_live

    stop = _stop_event()
    return run_live(args, stop)


def cmd_gui(args: argparse.Namespace) -> int:
    """Open the window (PyQt6); its own options follow ``gui``."""
    from gui.app import WindowUnavailable
    from gui.app import main as gui_main

    try:
        return gui_main(args.gui_args)
    except WindowUnavailable as err:  # no Qt abort: say why, then the same session in the terminal
        print(f"bci-app gui: {err}", file=sys.stderr, flush=True)
        with err.terminal_session() as run_args:
            return main(run_args) if run_args is not None else 1


def cmd_bench(args: argparse.Namespace) -> int:
    """Latency certification of the live path."""
    from bci_app.cli.bench import format_bench, run_bench
    from bci_app.decoders.bundle import load_bundle
    from bci_app.decoders.shipped import TYPING_BUNDLE

    bundle = load_bundle(args.bundle or TYPING_BUNDLE)
    result = run_bench(
        bundle,
        seconds=args.seconds,
        realtime_s=args.realtime_seconds,
        provider=args.provider,
        n=args.repeats,
        max_seconds=args.max_seconds,
        max_runs=args.max_runs,
        configs=args.config,
        compile_mode=None if args.no_compile else args.compile_mode,
    )
    print(json.dumps(result, indent=2, allow_nan=False) if args.json else format_bench(result))
    return 0


def cmd_lm_train(args: argparse.Namespace) -> int:
    """Train a character n-gram language model."""
    from bci_app.lm.model import train_lm_cli

    stats = train_lm_cli(args.corpus, args.order, args.out, overwrite=args.overwrite)
    print(
        json.dumps(stats, indent=2)
        if args.json
        else "\n".join(f"{k}: {v}" for k, v in stats.items())
    )
    return 0


# ---------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``bci-app``."""
    parser = ArgumentParser(
        prog="bci-app",
        description="Real-time BCI: MEG/EEG/iEEG from LSL to decoded text.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="more log messages (debug, the XDF reader's)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("streams", help="list LSL streams")
    p.add_argument("--timeout", type=positive_seconds, default=2.0, help="seconds to look")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_streams)

    p = sub.add_parser("simulate", help="stream a simulated session, or write it to a file")
    p.add_argument(
        "--modality", choices=["eeg", "meg", "ieeg"], default="meg", help="simulated sensors"
    )
    p.add_argument(
        "--task",
        choices=["typing", "listening"],
        default="typing",
        help="what the simulated participant does",
    )
    p.add_argument(
        "--snr",
        type=float,
        default=None,
        help="evoked/background RMS ratio (default: 1.0), for --task listening the "
        "--vocabulary bundle's",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the simulated session")
    p.add_argument(
        "--difficulty",
        metavar="PRESET",
        help="a named SNR preset per modality instead of --snr; paper: the small decoder's "
        "conv-only CER after 20 min of calibration lands near Brain2Qwerty's "
        "(MEG 50 %%, EEG 76 %%)",
    )
    p.add_argument(
        "--sentences",
        metavar="{calibration,test,all}",
        help="part of the sentence bank to type (fixed split by sentence hash; default for "
        "typing: calibration with --out, test when streaming live; never evaluate on "
        "calibration sentences)",
    )
    p.add_argument(
        "--vocabulary",
        metavar="BUNDLE|FILE|bank",
        help="listening: the heard sentences: a speech bundle's (its snr and subject too), a "
        "text file's (one per line), or the whole sentence bank (default: the shipped "
        "speech-meg-small's)",
    )
    p.add_argument(
        "--duration", type=positive_seconds, default=None, help="seconds (default: until Ctrl-C)"
    )
    p.add_argument("--out", help="write a recording (.xdf or .fif) instead of streaming")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--name", help="LSL stream name (default: bci-app-sim-MODALITY)")
    p.add_argument("--source-id", help="LSL source_id (default: the name)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("record", help="record LSL streams to XDF")
    p.add_argument("out", help="output .xdf file")
    p.add_argument(
        "--stream",
        action="append",
        help="name, type or source_id (repeatable; default: every visible stream)",
    )
    p.add_argument(
        "--duration", type=positive_seconds, default=None, help="seconds (default: until Ctrl-C)"
    )
    p.add_argument(
        "--timeout", type=positive_seconds, default=2.0, help="seconds to look for streams"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT file")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("replay", help="stream a recording (XDF, FIF, EDF, BDF, ...) to LSL")
    p.add_argument("file", help="recording (XDF, FIF, EDF, BDF, BrainVision, BIDS, ...)")
    p.add_argument("--speed", type=speed, default=1.0, help="1 (real time), N, or max")
    p.add_argument("--name", help="LSL stream name (default: from the file)")
    p.add_argument("--source-id", help="LSL source_id (default: derived from the name)")
    p.add_argument("--loop", action="store_true", help="start over at the end")
    p.add_argument(
        "--duration",
        type=positive_seconds,
        default=None,
        help="stop after S seconds (default: at the end of the recording)",
    )
    p.add_argument(
        "--linger", type=float, default=5.0, help="seconds the outlets stay open after the end"
    )
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="start at once instead of holding the first sample until a reader (e.g. 'bci-app "
        "run --stream NAME') connects; --speed max always waits",
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("convert", help="convert a recording (XDF) to FIF or BIDS")
    p.add_argument("input", help="XDF recording")
    p.add_argument("output", help="OUT.fif, or a directory for BIDS")
    p.add_argument("--subject", default="01", help="BIDS subject label")
    p.add_argument("--task", default="typing", help="BIDS task label")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing OUT.fif or BIDS recording"
    )
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("run", help="decode live (default: simulated MEG typing + shipped decoder)")
    p.add_argument(
        "--task",
        choices=["typing", "listening"],
        default=None,
        help="what the session plays (default: the bundle's task, else typing); default bundle "
        "and simulator: typing-meg-small, or speech-meg-small (listening)",
    )
    p.add_argument("--bundle", help="decoder bundle (default: the shipped one of --task)")
    p.add_argument(
        "--recenter",
        action="store_true",
        help="scaler statistics follow the last 2 min of signal (drift re-centering)",
    )
    p.add_argument("--stream", help="data stream name or source_id (default: start a simulator)")
    p.add_argument("--markers", help="keystroke/sentence marker stream name or source_id")
    p.add_argument(
        "--duration", type=positive_seconds, default=None, help="seconds (default: until Ctrl-C)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per event")
    p.add_argument(
        "--provider",
        default="auto",
        choices=["auto", "cpu", "cuda", "tensorrt"],
        help="onnxruntime provider (auto: CUDA where there is a GPU)",
    )
    p.add_argument("--record", metavar="OUT.xdf", help="record data, markers and text to XDF")
    p.add_argument("--log", metavar="LOG.jsonl", help="append every text event to a JSONL log")
    p.add_argument(
        "--report",
        metavar="REPORT.html",
        help="session report to write at the end (default: beside --record, else --log)",
    )
    p.add_argument("--seed", type=int, default=1000, help="seed of the built-in simulator")
    p.add_argument(
        "--no-decoder", action="store_true", help="only preprocess and window (no bundle)"
    )
    p.add_argument(
        "--calibration", type=float, default=5.0, help="--no-decoder: seconds to fit the scaler"
    )
    p.set_defaults(func=cmd_run)

    # every word after `gui` (its --help too) goes to the window's own parser: "+" is a prefix
    # no option uses, so argparse leaves "--simulate meg" to the remainder
    p = sub.add_parser(
        "gui",
        help="open the window: scope, decoded text, health, calibration, replay (gui --help)",
        add_help=False,
        prefix_chars="+",
    )
    p.add_argument("gui_args", nargs=argparse.REMAINDER, help="the window's options (gui --help)")
    p.set_defaults(func=cmd_gui)

    p = sub.add_parser("bench", help="latency certification on a simulated 306-ch MEG session")
    p.add_argument("--bundle", help="typing bundle (default: the shipped typing-meg-small)")
    p.add_argument("--seconds", type=float, default=120.0, help="simulated session length")
    p.add_argument(
        "--realtime-seconds", type=float, default=60.0, help="part replayed at 1x (0: skip)"
    )
    p.add_argument(
        "--provider",
        default="auto",
        choices=["auto", "cpu", "cuda", "tensorrt"],
        help="onnxruntime provider (auto: CUDA where there is a GPU)",
    )
    p.add_argument(
        "--max-seconds", type=float, default=300.0, help="part replayed at max speed (<= 360)"
    )
    p.add_argument(
        "--max-runs",
        type=positive_int,
        default=3,
        help="max-speed replays; the median is reported",
    )
    p.add_argument("--repeats", type=int, default=300, help="inference timing repeats")
    p.add_argument(
        "--config",
        nargs="+",
        default=["small"],
        choices=["small", "paper"],
        help="model sizes whose graphs are timed (paper: also a paper-size live replay)",
    )
    p.add_argument(
        "--compile-mode",
        default="default",
        choices=["default", "reduce-overhead", "max-autotune"],
        help="torch.compile mode of the torch comparison",
    )
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile timing")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_bench)

    add_train_export_commands(sub)
    add_evaluate_command(sub)
    add_candidates_command(sub)
    add_report_command(sub)

    lm = sub.add_parser("lm", help="character language model")
    lm_sub = lm.add_subparsers(dest="lm_command", metavar="LM_COMMAND")
    p = lm_sub.add_parser(
        "train",
        help="train a character n-gram LM from a text corpus",
        description="Train a character n-gram language model (modified Kneser-Ney) on a text "
        "file and save it (.npz).",
        epilog=LM_USE,
        formatter_class=RawDescriptionDefaultsHelpFormatter,
    )
    p.add_argument("corpus", help="UTF-8 text file, one sentence per line")
    p.add_argument("--order", type=int, default=6, help="n-gram order (characters)")
    p.add_argument("--out", required=True, help="output LM file (.npz)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.set_defaults(func=cmd_lm_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bci-app`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # pyxdf logs every file it opens at INFO: only with -v
    logging.getLogger("pyxdf").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    if args.command != "gui":  # the window ends on SIGTERM as Qt does
        interrupt_on_sigterm()  # SIGTERM takes the Ctrl-C path below (hint, clean-up), no kill
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as err:
        what = interruption(err)
        hint = INTERRUPT_HINTS.get(args.command, "").format(out=getattr(args, "out", "OUT"))
        print(
            f"bci-app {args.command}: interrupted ({what})" + (f"; {hint}." if hint else "."),
            file=sys.stderr,
        )
        return EXIT_STATUS[what]
    except USER_ERRORS as err:
        logger.debug("command failed", exc_info=True)
        print(f"bci-app {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, ImportError, OSError) as err:
        logger.debug("command failed", exc_info=True)
        print(f"bci-app {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
