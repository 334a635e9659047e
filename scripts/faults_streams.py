"""Stream faults, measured: outages, a soak, and bad streams, against the real app.

Every case runs real processes: the LSL outlets are separate Python processes (this script's
``outlet`` and ``markers`` sub-commands, sending a stream shaped like the shipped typing
bundle's: 306 MEG channels at 1 kHz, and keystrokes typed in sentences), and the decoder is the
shipped bundle in onnxruntime.

Sub-commands (each prints a table; ``--long`` runs the full-size version):

- ``outages``: during ``bci-app run --json`` (the real CLI, another process, decoding), the data
  outlet is killed at random moments and restarted on the same timeline ``--n`` times (100 with
  ``--long``). Counted: recoveries, time to recover (outlet up again -> the app's "Stream
  reconnected" log line, p50/p99), reconnections and outage gaps in the app's summary, gap
  events in its text, the app alive until stopped and its exit code, and its threads and open
  fds before/after (psutil).
- ``soak``: the session ``bci-app run`` opens (:func:`~bci_app.live.factory.open_session`, run
  in this process so its health is read directly) decoding a 306-channel x 2 kHz stream for
  ``--soak-minutes`` (``--gui``: with the window's scope and health panel drawn offscreen at 30
  fps), printing every ``--report-every`` seconds: dropped samples, lag (chunk arrival p50 and
  max), RSS, CPU, fds, threads; at the end RSS growth (%) and the lag slope (ms/min). The 2 kHz
  decoder is the shipped typing bundle re-declared at 2 kHz (same graphs; 2000 -> 50 Hz).
- ``bad``: one session per bad stream (NaN/Inf bursts, timestamps backwards or jumping, a
  backlog burst after a stall, rates 2x / 0.5x / 0.95x the nominal one, a channel count that
  changes when the stream returns, marker streams with 10 kB strings, empty strings, unknown
  keys, floods), opened as ``bci-app run`` opens it but in this process, so that every window
  reaching the decoder is checked (finite, within the clamp). Printed: a matrix case ->
  outcome, the warnings logged, and whether the outcome is the defined one.

Usage::

    python scripts/faults_streams.py outages [--n 8] [--long] [--seed 0]
    python scripts/faults_streams.py soak [--soak-minutes 2] [--gui]
    python scripts/faults_streams.py bad [--cases nan,backwards,...] [--long]
    python scripts/faults_streams.py outlet --sid ID [--rate-factor 2] [--stamps auto] ...
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = "typing-meg-small"


# --------------------------------------------------------------------------------- outlets
def _bundle_spec(name: str):
    """Channels and rate of a shipped bundle (so the stream is decodable by it)."""
    from bci_app.decoders.bundle import load_bundle
    from bci_app.live.builtin import shipped_bundle

    bundle = load_bundle(shipped_bundle("typing") if name == BUNDLE else name)
    return bundle.channels, bundle.sfreq


def run_outlet(args: argparse.Namespace) -> None:
    """A data outlet with faults, paced in real time until killed (the ``outlet`` command).

    Sample ``i`` is due at ``t_ref + i / (rate_factor * sfreq)``; with ``--stamps explicit`` it
    carries that time (a device stamping its own samples), with ``auto`` liblsl stamps the chunk
    at push time and dates the earlier samples back at the nominal rate (most drivers).
    """
    import pylsl

    from acquisition.channels import ChannelSpec
    from acquisition.outlets import DataOutlet

    if args.like_bundle:
        spec, sfreq = _bundle_spec(args.like_bundle)
    else:
        spec, sfreq = ChannelSpec.generic(args.channels, "eeg", "V"), args.sfreq
    if spec.n_channels != args.channels and not args.like_bundle:
        spec = ChannelSpec.generic(args.channels, "eeg", "V")
    true_rate = sfreq * args.rate_factor
    stype = args.type or ("MEG" if args.like_bundle else "EEG")
    outlet = DataOutlet("bci-faults", stype, spec, sfreq, args.sid)
    up = time.time()  # wall clock, as the app's log lines: the outlet is visible from now
    rng = np.random.default_rng(args.seed)
    scale = 1e-12 if args.like_bundle else 1e-5
    noise = (rng.standard_normal((4096, spec.n_channels)) * scale).astype(np.float32)
    t_ref = args.t_ref if args.t_ref is not None else pylsl.local_clock()
    i = max(0, int((pylsl.local_clock() - t_ref) * true_rate))
    shift = 0.0  # the sender's clock steps (--backwards-every / --jump-every)
    next_step = pylsl.local_clock() + (args.backwards_every or args.jump_every or 1e9)
    next_stall = pylsl.local_clock() + (args.stall_every or 1e9)
    next_nan = pylsl.local_clock() + (args.nan_every or 1e9)
    nan_until = -1.0
    print(f"ready {up:.6f}", flush=True)
    while True:
        now = pylsl.local_clock()
        if now >= next_stall:  # stop pushing, then push the backlog in small chunks at once
            time.sleep(args.stall_s)
            next_stall = pylsl.local_clock() + args.stall_every
            burst = int((pylsl.local_clock() - t_ref) * true_rate) - i
            for start in range(0, burst, max(1, int(0.02 * true_rate))):
                n = min(burst - start, max(1, int(0.02 * true_rate)))
                outlet.push_chunk(noise[(i + np.arange(n)) % noise.shape[0]])  # auto-stamped
                i += n
            continue
        if now >= next_step:
            shift += -args.backwards_s if args.backwards_every else args.jump_s
            next_step = now + (args.backwards_every or args.jump_every)
        if now >= next_nan:
            nan_until, next_nan = now + args.nan_s, now + args.nan_every
        n = int((now - t_ref) * true_rate) - i
        if n > 0:
            idx = np.arange(i, i + n)
            chunk = noise[idx % noise.shape[0]].copy()
            if now < nan_until:
                chunk[::2, :] = np.nan
                chunk[1::2, 1] = np.inf
            if args.stamps == "explicit":
                outlet.push_chunk(chunk, t_ref + idx / true_rate + shift)
            else:
                outlet.push_chunk(chunk, None if shift == 0.0 else now + shift)
            i += n
        time.sleep(args.push_s)


def run_marker_outlet(args: argparse.Namespace) -> None:
    """A marker outlet sending keystrokes, or one kind of bad marker (the ``markers`` command)."""
    from acquisition.outlets import MarkerOutlet

    outlet = MarkerOutlet("bci-faults-markers", args.sid)
    rng = np.random.default_rng(args.seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    print("ready", flush=True)
    n = 0
    while True:
        if args.kind == "keys":  # sentences of 20 keys, with their boundaries, as typed
            text = "".join(letters[k] for k in rng.integers(26, size=20))
            outlet.push(f"sentence_start:{text}")
            for char in text:
                time.sleep(0.25)
                outlet.push(f"key:{char}")
            time.sleep(0.3)
            outlet.push(f"sentence_end:{text}")
            time.sleep(0.5)
            continue
        if args.kind == "flood":
            for _ in range(500):  # 500 markers every 50 ms: 10 000 markers/s
                outlet.push(f"key:{letters[n % 26]}")
                n += 1
            time.sleep(0.05)
            continue
        value = {
            "big": "key:" + "x" * 10_000,
            "empty": "",
            "unknown": f"zorglub:{n}",
        }[args.kind]
        outlet.push(value)
        n += 1
        time.sleep(0.25)


def _outlet_parser(sub) -> None:
    p = sub.add_parser("outlet", help="a faulty data outlet (for the other commands)")
    p.add_argument("--sid", required=True, help="source_id")
    p.add_argument("--sfreq", type=float, default=500.0, help="nominal rate (Hz)")
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--like-bundle", default=None, help="channels and rate of this bundle")
    p.add_argument(
        "--type", default=None, help="stream type (default: MEG like a bundle, else EEG)"
    )
    p.add_argument("--rate-factor", type=float, default=1.0, help="true rate / nominal rate")
    p.add_argument("--stamps", choices=("explicit", "auto"), default="explicit")
    p.add_argument("--t-ref", type=float, default=None, help="LSL time of sample 0")
    p.add_argument("--push-s", type=float, default=0.01, help="seconds between pushes")
    p.add_argument("--backwards-every", type=float, default=0.0)
    p.add_argument("--backwards-s", type=float, default=3.0)
    p.add_argument("--jump-every", type=float, default=0.0)
    p.add_argument("--jump-s", type=float, default=0.5)
    p.add_argument("--stall-every", type=float, default=0.0)
    p.add_argument("--stall-s", type=float, default=1.0)
    p.add_argument("--nan-every", type=float, default=0.0)
    p.add_argument("--nan-s", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_outlet)
    m = sub.add_parser("markers", help="a marker outlet (keystrokes or bad markers)")
    m.add_argument("--sid", required=True)
    m.add_argument("--kind", choices=("keys", "big", "empty", "unknown", "flood"), default="keys")
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=run_marker_outlet)


# --------------------------------------------------------------------------------- helpers
def _spawn(*args: str) -> subprocess.Popen:
    """Start this script's ``outlet`` or ``markers`` command in a new process; wait for it."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    line = proc.stdout.readline().split()
    if not line or line[0] != "ready":
        raise RuntimeError(f"the outlet process {args} did not start")
    proc.ready_at = float(line[1]) if len(line) > 1 else time.time()
    return proc


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
    if proc is not None:
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _pct(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


class _LogTally(logging.Handler):
    """Count the warnings and errors logged (and those with a traceback) during a case."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.tracebacks = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.tracebacks += record.exc_info is not None


# --------------------------------------------------------------------------------- outages
def _log_time(line: str) -> float | None:
    """The wall-clock time of a log line of the app (``2026-12-05 05:05:45,709 ...``)."""
    try:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


def run_outages(args: argparse.Namespace) -> int:
    """Kill and restart the data outlet under ``bci-app run``; print recoveries and figures."""
    import psutil
    import pylsl

    n = 100 if args.long else args.n
    rng = random.Random(args.seed)
    sid = f"faults-outage-{uuid.uuid4().hex[:8]}"
    t_ref = pylsl.local_clock()
    outlet_args = ["outlet", "--sid", sid, "--like-bundle", BUNDLE, "--t-ref", repr(t_ref)]
    markers = _spawn("markers", "--sid", f"{sid}-m")
    outlet = _spawn(*outlet_args)
    app = subprocess.Popen(
        [sys.executable, "-m", "bci_app.cli.main", "run", "--stream", sid, "--markers",
         f"{sid}-m", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    lines: queue.Queue = queue.Queue()
    out_lines: list[str] = []

    def pump(stream, sink) -> None:
        for line in stream:
            sink.put((time.time(), line)) if sink is lines else out_lines.append(line)

    threads = [
        threading.Thread(target=pump, args=(app.stderr, lines), daemon=True),
        threading.Thread(target=pump, args=(app.stdout, None), daemon=True),
    ]
    for thread in threads:
        thread.start()

    def wait_for(text: str, timeout: float) -> float | None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                _, line = lines.get(timeout=0.1)
            except queue.Empty:
                if app.poll() is not None:
                    return None
                continue
            if text in line:
                return _log_time(line) or time.time()
        return None

    proc = psutil.Process(app.pid)
    recover_s: list[float] = []
    failed = 0
    try:
        if wait_for("Decoding 'bci-faults'", 120) is None:
            raise RuntimeError("bci-app run did not start decoding")
        time.sleep(2.0)
        before = (proc.num_threads(), proc.num_fds())
        print(f"{'outage':>6} {'down s':>7} {'recover ms':>11}  (outlet killed -> restarted; "
              "restarted -> app's 'Stream reconnected' log line)")  # fmt: skip
        for k in range(n):
            time.sleep(rng.uniform(0.5, 2.5))  # anywhere: mid-keystroke, mid-window
            _stop(outlet)
            killed_at = time.time()
            if wait_for("Stream lost", 10) is None:
                failed += 1
            time.sleep(rng.uniform(0.1, 1.0))
            outlet = _spawn(*outlet_args)
            back_at = outlet.ready_at
            reconnected = wait_for("Stream reconnected", 10)
            if reconnected is None:
                failed += 1
                print(f"{k + 1:>6} {'-':>7} {'NOT RECOVERED':>11}", flush=True)
                continue
            recover_s.append(reconnected - back_at)
            down = back_at - killed_at
            print(f"{k + 1:>6} {down:>7.2f} {recover_s[-1] * 1e3:>11.0f}", flush=True)
        time.sleep(2.0)
        after = (proc.num_threads(), proc.num_fds())
        alive = app.poll() is None
        app.send_signal(signal.SIGINT)
        rc = app.wait(timeout=60)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
        _stop(outlet)
        _stop(markers)
    for thread in threads:
        thread.join(timeout=5)
    events = [json.loads(x) for x in out_lines if x.startswith("{")]
    summary = next((e for e in events if e.get("event") == "summary"), {})
    gap_events = sum(1 for e in events if e.get("kind") == "gap")
    rows = [
        ("outages", "", n),
        ("recovered", f"{n}/{n}", f"{len(recover_s)}/{n}"),
        ("time to recover p50 (ms)", "", f"{_pct(recover_s, 50) * 1e3:.0f}"),
        ("time to recover p99 (ms)", "<= 1000", f"{_pct(recover_s, 99) * 1e3:.0f}"),
        ("reconnections (app summary)", n, summary.get("reconnections")),
        ("outage gaps (app summary)", n, summary.get("gaps")),
        ("gap events in the text", n, gap_events),
        ("app alive until stopped, exit code", "yes, 0", f"{'yes' if alive else 'NO'}, {rc}"),
        ("threads before -> after", "equal", f"{before[0]} -> {after[0]}"),
        ("open fds before -> after", "equal", f"{before[1]} -> {after[1]}"),
    ]
    _table("Stream outages under bci-app run (306 ch x 1 kHz, decoding)", rows)
    ok = alive and rc == 0 and len(recover_s) == n and not failed
    return 0 if ok else 1


def _table(title: str, rows) -> None:
    print(f"\n{title}")
    print(f"{'figure':<38} {'goal':>10} {'measured':>16}")
    for name, goal, value in rows:
        print(f"{name:<38} {goal!s:>10} {value!s:>16}")


# --------------------------------------------------------------------------------- bad streams
#: case -> (data outlet arguments, marker outlet kind). Data outlets look like the shipped
#: bundle's stream (306 MEG channels at 1 kHz), so the real decoder runs on them.
BAD_CASES = {
    "nan-bursts": (["--nan-every", "2", "--nan-s", "0.3"], "keys"),
    "clock-backwards": (["--backwards-every", "3", "--backwards-s", "3"], "keys"),
    "clock-jumps": (["--jump-every", "3", "--jump-s", "0.5"], "keys"),
    "stall-then-burst": (["--stall-every", "3", "--stall-s", "1", "--stamps", "auto"], "keys"),
    "rate-2x": (["--rate-factor", "2", "--stamps", "auto"], "keys"),
    "rate-0.5x": (["--rate-factor", "0.5"], "keys"),
    "rate-0.95x": (["--rate-factor", "0.95"], "keys"),
    "channels-change": ([], "keys"),
    "markers-10kB": ([], "big"),
    "markers-empty": ([], "empty"),
    "markers-unknown": ([], "unknown"),
    "markers-flood": ([], "flood"),
}
SHORT_CASES = ("nan-bursts", "clock-backwards", "rate-0.95x", "markers-10kB")


def _probe(decoder, clamp: float) -> dict:
    """Watch what reaches the decoder's graph (every keystroke window it is given)."""
    seen = {"windows": 0, "bad": 0, "max_abs": 0.0}
    # every keystroke window goes through add_keystrokes (one at a time or a backlog's batch)
    add_keystrokes = decoder.add_keystrokes

    def checked(windows_data, *args, **kwargs):
        for window_data in windows_data:
            seen["windows"] += 1
            finite = bool(np.isfinite(window_data).all())
            peak = float(np.abs(window_data).max()) if finite else math.inf
            seen["max_abs"] = max(seen["max_abs"], peak)
            seen["bad"] += (not finite) or peak > clamp + 1e-6
        return add_keystrokes(windows_data, *args, **kwargs)

    decoder.add_keystrokes = checked
    return seen


def run_bad_case(case: str, seconds: float) -> dict:
    """Decode one bad stream with the shipped bundle, in this process; return what happened.

    The outlets are other processes and the session is the one ``bci-app run`` opens
    (:func:`~bci_app.live.factory.open_session`); it runs here so that what reaches the decoder
    can be checked (:func:`_probe`).
    """
    from bci_app.live.factory import StreamQuery, open_session

    outlet_args, marker_kind = BAD_CASES[case]
    sid = f"faults-{case}-{uuid.uuid4().hex[:6]}"
    tally = _LogTally()
    logging.getLogger().addHandler(tally)
    procs = [_spawn("markers", "--sid", f"{sid}-m", "--kind", marker_kind)]
    procs.append(_spawn("outlet", "--sid", sid, "--like-bundle", BUNDLE, *outlet_args))
    opened = None
    try:
        opened = open_session(
            _bundle_path(),
            StreamQuery(source_id=sid),
            StreamQuery(source_id=f"{sid}-m"),
            timeout=20.0,
            text_outlet=False,
        )
        session = opened.session
        clamp = session.strategy.windower.clamp or math.inf
        seen = _probe(session.decoder, clamp)
        session.start()
        if case == "channels-change":
            time.sleep(seconds / 3)
            _stop(procs.pop())
            procs.append(
                _spawn(
                    "outlet", "--sid", sid, "--channels", "64", "--sfreq", "1000", "--type", "MEG"
                )
            )
            time.sleep(2 * seconds / 3)
        else:
            time.sleep(seconds)
        health = opened.source.health()
        markers = opened.markers.health()
        pipeline = session.pipeline
        error = pipeline.error
        summary = session.stop()
    finally:
        if opened is not None:
            opened.close()
        for proc in procs:
            _stop(proc)
        logging.getLogger().removeHandler(tally)
    windower = session.strategy.windower
    return {
        "case": case,
        "health": health,
        "markers": markers,
        "summary": summary,
        "seen": seen,
        "error": error,
        "log_lines": len(tally.lines),
        "tracebacks": tally.tracebacks,
        "log": tally.lines,
        "dropped_markers": windower.n_dropped,
        "skipped": session.decoder.n_skipped_total
        if hasattr(session.decoder, "n_skipped_total")
        else None,
    }


def _outcome(r: dict) -> tuple[str, bool]:
    """Words for what happened in a bad-stream case, and whether it is the defined outcome."""
    h, s, seen = r["health"], r["summary"], r["seen"]
    kinds: dict[str, int] = {}
    for gap in h.gaps:
        kinds[gap.kind] = kinds.get(gap.kind, 0) + 1
    gaps = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"
    clean = r["error"] is None and r["tracebacks"] == 0 and s["inference_errors"] == 0
    clean = clean and seen["bad"] == 0
    case = r["case"]
    if case == "nan-bursts":
        words = (
            f"{h.n_invalid_samples} NaN/Inf samples counted, {s['invalid_windows']} of "
            f"{s['windows']} windows invalid (not decoded)"
        )
        ok = h.n_invalid_samples > 0 and s["invalid_windows"] > 0
    elif case in ("clock-backwards", "clock-jumps"):
        words = f"gaps: {gaps}; {s['timeline_restarts']} timeline restarts"
        ok = h.n_gaps > 0
    elif case == "stall-then-burst":  # nothing lost: the backlog's late stamps are put back
        words = (
            f"gaps: {gaps}; {s['timeline_restarts']} timeline restarts; "
            f"{h.n_samples} samples, {h.dropped_samples} dropped"
        )
        ok = h.n_gaps == 0 and s["timeline_restarts"] == 0 and h.n_samples > 0
    elif case.startswith("rate-"):
        words = f"refused: {h.rate_mismatch}; {s['refused']} windows not decoded"
        ok = h.rate_mismatch is not None and s["refused"] > 0
        said = sum("does not send at its declared rate" in line for line in r["log"])
        words += f"; said {said}x"
        ok = ok and said == 1
    elif case == "channels-change":
        words = f"{h.state}; {h.last_error}"
        ok = h.state == "lost" and "channel count is 64 instead of 306" in (h.last_error or "")
    else:
        m = r["markers"]
        words = (
            f"{m.n_markers} markers received, {m.n_overflow} overflowed; "
            f"{s['windows']} windows, {seen['windows']} decoded"
        )
        ok = m.n_markers > 0
        if case == "markers-flood":
            words += f", {s['markers_dropped']} dropped as a flood"
            ok = ok and s["markers_dropped"] > 0
    words += f"; decoder inputs finite, |x| <= {seen['max_abs']:.2f}" if seen["windows"] else ""
    return words, bool(ok and clean)


def _bundle_path() -> Path:
    from bci_app.live.builtin import shipped_bundle

    return Path(shipped_bundle("typing"))


def run_bad(args: argparse.Namespace) -> int:
    """Run the bad-stream cases; print the matrix case -> outcome."""
    cases = args.cases.split(",") if args.cases else list(BAD_CASES if args.long else SHORT_CASES)
    unknown = [c for c in cases if c not in BAD_CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; choose from {', '.join(BAD_CASES)}")
    seconds = args.seconds or (20.0 if args.long else 9.0)
    rows, all_ok = [], True
    for case in cases:
        result = run_bad_case(case, seconds)
        words, ok = _outcome(result)
        all_ok &= ok
        rows.append((case, words, result["log_lines"], ok))
        print(f"{case:<17} {'defined' if ok else 'NOT DEFINED':<11} {words}", flush=True)
    print(f"\nBad streams ({seconds:g} s each, decoded with '{BUNDLE}')")
    print(f"{'case':<17} {'log lines':>9}  {'outcome':<11} what happened")
    for case, words, n_log, ok in rows:
        print(f"{case:<17} {n_log:>9}  {'defined' if ok else 'NOT DEFINED':<11} {words}")
    return 0 if all_ok else 1


# --------------------------------------------------------------------------------- soak
def _bundle_at(sfreq: float, folder: Path) -> Path:
    """A copy of the shipped typing bundle that declares ``sfreq`` for its stream.

    Same graphs and statistics; only the rate the preprocessing resamples from changes (2 kHz
    -> 50 Hz instead of 1 kHz -> 50 Hz), so a 2 kHz stream is decoded as a lab's would be.
    """
    copy = folder / f"{BUNDLE}-{sfreq:g}hz"
    shutil.copytree(_bundle_path(), copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["stream"]["sfreq"] = sfreq
    manifest["preprocessing"]["sfreq_in"] = sfreq
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


class _Window:
    """The window's live parts, offscreen: the scope (paged traces) and the health panel.

    Qt's offscreen platform paints nothing by itself, so every frame is drawn with ``grab()``
    at the scope's own 30 fps pace, on this (the GUI) thread, while decoding runs on its own.
    """

    def __init__(self, source) -> None:
        import os

        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from PyQt6.QtWidgets import QApplication

        from gui.app import share_the_interpreter
        from gui.health import HealthPanel
        from gui.scope import ScopeWidget

        share_the_interpreter()
        self.app = QApplication.instance() or QApplication(sys.argv[:1])
        self.scope = ScopeWidget()
        self.scope.resize(1600, 900)
        self.scope.show()
        self.scope.set_source(source)
        self.health = HealthPanel()
        self.health.show()
        self.health.set_source(source)
        self.frames = 0

    def run_for(self, seconds: float) -> None:
        """Process events and draw frames for ``seconds``."""
        end, pace = time.monotonic() + seconds, self.scope._timer.interval() / 1000.0
        while time.monotonic() < end:
            t0 = time.monotonic()
            self.app.processEvents()
            self.scope.refresh()
            self.scope.plot.grab()
            self.frames += 1
            time.sleep(max(0.0, min(pace - (time.monotonic() - t0), end - time.monotonic())))

    def close(self) -> None:
        """Close the widgets."""
        self.scope.close()
        self.health.close()


def run_soak(args: argparse.Namespace) -> int:
    """Decode a 306-channel x 2 kHz stream for ``--soak-minutes``; print figures every period."""
    import psutil

    from bci_app.live.factory import StreamQuery, open_session

    me = psutil.Process()
    sid = f"faults-soak-{uuid.uuid4().hex[:8]}"
    period = args.report_every
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = _bundle_at(args.sfreq, Path(tmp))
        procs = [_spawn("markers", "--sid", f"{sid}-m")]
        procs.append(_spawn("outlet", "--sid", sid, "--like-bundle", str(bundle), "--push-s",
                            "0.005"))  # fmt: skip
        opened = None
        try:
            opened = open_session(
                bundle, StreamQuery(source_id=sid), StreamQuery(source_id=f"{sid}-m"),
                timeout=20.0, text_outlet=False, start=True,
            )  # fmt: skip
            source, session = opened.source, opened.session
            window = _Window(source) if args.gui else None
            wait = time.sleep if window is None else window.run_for
            print(
                f"Soak: {source.info.channel_count()} ch x {source.sfreq:g} Hz decoded with "
                f"'{session.bundle.name}' for {args.soak_minutes:g} min (a row every {period:g} s, "
                f"after {args.warmup_s:g} s of warm-up)"
            )
            print(
                f"{'t (min)':>7} {'dropped':>8} {'lag p50 ms':>10} {'lag max ms':>10} "
                f"{'RSS MB':>8} {'CPU %':>6} {'fds':>5} {'threads':>7} {'windows':>8}"
            )
            wait(args.warmup_s)  # the ring buffer's pages are touched as it fills
            n_chunks = source.chunk_latencies(0)[1]
            cpu0, t0 = sum(me.cpu_times()[:2]), time.monotonic()
            end = t0 + args.soak_minutes * 60.0
            while time.monotonic() < end - 1e-3:
                wait(min(period, max(0.0, end - time.monotonic())))
                lat, n_chunks = source.chunk_latencies(n_chunks)
                cpu1, t1 = sum(me.cpu_times()[:2]), time.monotonic()
                health = source.health()
                row = {
                    "t_min": (t1 - t0) / 60.0,
                    "dropped": health.dropped_samples,
                    "lag_ms": _pct(lat, 50) * 1e3,
                    "lag_max_ms": float(lat.max()) * 1e3 if lat.size else math.nan,
                    "rss_mb": me.memory_info().rss / 2**20,
                    "cpu": 100.0 * (cpu1 - cpu0) / (t1 - t0 - rows[-1]["t_min"] * 60.0)
                    if rows
                    else 100.0 * (cpu1 - cpu0) / (t1 - t0),
                    "fds": me.num_fds(),
                    "threads": me.num_threads(),
                    "windows": session.pipeline.n_windows,
                }
                cpu0 = cpu1
                rows.append(row)
                print(
                    f"{row['t_min']:>7.2f} {row['dropped']:>8} {row['lag_ms']:>10.1f} "
                    f"{row['lag_max_ms']:>10.1f} {row['rss_mb']:>8.1f} {row['cpu']:>6.0f} "
                    f"{row['fds']:>5} {row['threads']:>7} {row['windows']:>8}",
                    flush=True,
                )
            summary = session.stop()
            frames = 0 if window is None else window.frames
            if window is not None:
                window.close()
        finally:
            if opened is not None:
                opened.close()
            for proc in procs:
                _stop(proc)
    first, last = rows[0], rows[-1]
    elapsed = last["t_min"] * 60.0
    minutes = np.array([r["t_min"] for r in rows])
    lags = np.array([r["lag_ms"] for r in rows])
    slope = float(np.polyfit(minutes, lags, 1)[0]) if len(rows) >= 2 else math.nan
    growth = 100.0 * (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"]
    _table(
        f"Soak: {args.soak_minutes:g} min at 306 ch x {args.sfreq:g} Hz, decoding (the session "
        "bci-app run opens, in this process; "
        + ("the scope and health panel offscreen)" if args.gui else "no window)"),
        [
            ("dropped samples", 0, last["dropped"]),
            ("RSS growth first -> last row (%)", "< 5", f"{growth:.2f}"),
            ("lag slope (ms/min)", "+-0.1", f"{slope:.3f}"),
            ("lag p50 first -> last (ms)", "", f"{first['lag_ms']:.1f} -> {last['lag_ms']:.1f}"),
            ("fds first -> last", "equal", f"{first['fds']} -> {last['fds']}"),
            ("threads first -> last", "equal", f"{first['threads']} -> {last['threads']}"),
            ("windows decoded", "", summary["windows"]),
            ("inference errors", 0, summary["inference_errors"]),
            *(
                [("scope frames drawn per second", "", f"{frames / elapsed:.1f}")]
                if args.gui
                else []
            ),
        ],
    )
    return 0 if last["dropped"] == 0 and summary["inference_errors"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one sub-command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _outlet_parser(sub)
    o = sub.add_parser("outages", help="kill and restart the data outlet under bci-app run")
    o.add_argument("--n", type=int, default=6, help="outages (100 with --long)")
    o.add_argument("--long", action="store_true")
    o.add_argument("--seed", type=int, default=0)
    o.set_defaults(func=run_outages)
    b = sub.add_parser("bad", help="bad streams: a matrix case -> outcome")
    b.add_argument("--cases", default=None, help=f"comma-separated, of: {', '.join(BAD_CASES)}")
    b.add_argument("--seconds", type=float, default=None, help="seconds per case")
    b.add_argument("--long", action="store_true", help="every case, 20 s each")
    b.set_defaults(func=run_bad)
    k = sub.add_parser("soak", help="decode 306 ch x 2 kHz for a while; figures every minute")
    k.add_argument("--soak-minutes", type=float, default=2.0)
    k.add_argument("--report-every", type=float, default=60.0, help="seconds between rows")
    k.add_argument("--sfreq", type=float, default=2000.0)
    k.add_argument("--gui", action="store_true", help="draw the scope and health panel offscreen")
    k.add_argument(
        "--warmup-s", type=float, default=40.0, help="seconds before the first row (buffer fill)"
    )
    k.set_defaults(func=run_soak)
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
