"""Fault suite, files: killed recordings, bad files and bundles, outputs that already exist.

Runs the real ``bci-app`` command line in other processes (real LSL outlets, real files) and
prints one table per part (issue 13, "The suite", items 2, 5 and 6):

- ``killed``: ``bci-app record`` and ``bci-app run --no-decoder --record`` killed with SIGKILL at
  random moments, and stopped with SIGTERM and SIGINT (Ctrl-C). Every file must load in pyxdf and
  in ``bci-app replay``; the seconds lost are the time of the signal minus the last data timestamp
  in the file (both on the LSL clock of this machine). Goal: SIGKILL <= 1 s; a clean close keeps
  everything sent before the signal (<= 0.1 s: the time a chunk takes to arrive).
- ``bad``: empty, truncated, garbage and wrong-extension files for every command that reads
  files (``replay``, ``convert``, ``evaluate``, ``train``, ``candidates add``), and bundles with
  invalid JSON, missing or changed fields, a truncated or replaced graph, paths escaping the
  folder, a graph whose input shape disagrees with the manifest. Each must exit with status 2,
  print one line naming the file, no traceback, and write nothing.
- ``outputs``: ``train`` and ``export`` into an existing bundle, ``record``, ``simulate --out``
  and ``convert`` onto existing outputs: refused (exit 2, nothing changed) unless ``--overwrite``.

    python scripts/faults_files.py [--long] [--parts killed bad outputs] [--json]

The short version (default) runs in the test suite (``tests/test_faults_files.py``); ``--long``
kills 20 recordings per signal and command and tries every bad-input case.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUNDLES = ROOT / "bci_app" / "data" / "bundles"
TYPING_BUNDLE = BUNDLES / "typing-meg-small"
SPEECH_BUNDLE = BUNDLES / "speech-meg-small"
#: Seconds lost allowed: SIGKILL (the recorder flushes every 0.5 s), clean close (one chunk).
GOAL_KILL_S, GOAL_CLEAN_S = 1.0, 0.1


def bci(*args: str, cwd: Path | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run ``bci-app ARGS`` to its end and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "bci_app.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def bci_background(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    """Start ``bci-app ARGS`` in its own process group (so its children can be killed too)."""
    return subprocess.Popen(
        [sys.executable, "-m", "bci_app.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd or ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )


def wait_for_line(proc: subprocess.Popen, text: str, timeout: float) -> bool:
    """Read the process's stdout until a line containing ``text`` (False: timeout or exit)."""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                return False
            line = proc.stdout.readline()
            if not line:
                return False
            if text in line:
                return True
        return False
    finally:
        selector.close()


def stop_process(proc: subprocess.Popen) -> None:
    """End a process this script started, and its process group, and close its pipes."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children left behind (e.g. a simulator process)
    except (ProcessLookupError, PermissionError):
        pass
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


# ---------------------------------------------------------------------------------------------
# part 2: killed recordings


def _last_data_timestamp(path: Path, data_name: str) -> tuple[bool, float | None, str]:
    """Load ``path`` with pyxdf as it is: (loads, last timestamp of ``data_name``, error)."""
    import pyxdf

    try:
        streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    except Exception as err:  # the measure: does it load at all
        return False, None, f"{type(err).__name__}: {err}"
    for stream in streams:
        if stream["info"]["name"][0] == data_name and len(stream["time_stamps"]):
            return True, float(stream["time_stamps"][-1]), ""
    return True, None, f"no samples of {data_name!r}"


def killed_recording(
    command: str, sig: signal.Signals, folder: Path, stream: str, rng: random.Random
) -> dict:
    """Record, stop with ``sig`` after a random 1.5-4 s, check the file; return the row."""
    import pylsl

    path = folder / f"{command}-{sig.name}-{uuid.uuid4().hex[:6]}.xdf"
    if command == "record":
        args = ["record", str(path), "--stream", stream, "--stream", f"{stream}-markers"]
        args += ["--timeout", "1"]
        ready = "Recording"
    else:
        args = ["run", "--no-decoder", "--stream", stream, "--markers", f"{stream}-markers"]
        args += ["--calibration", "1", "--record", str(path)]
        ready = "Recording to"
    proc = bci_background(*args, cwd=folder)
    row = {"command": command, "signal": sig.name, "file": path.name}
    try:
        if not wait_for_line(proc, ready, timeout=60):
            row.update(ok=False, error="never started: " + _stderr_tail(proc))
            return row
        time.sleep(rng.uniform(1.5, 4.0))
        sent_at = pylsl.local_clock()
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        row.update(ok=False, error=f"did not exit within 30 s of {sig.name}")
        return row
    finally:
        stop_process(proc)
    loads, last, error = _last_data_timestamp(path, stream)
    replay = bci("replay", str(path), "--no-wait", "--duration", "0.5", "--linger", "0")
    lost = None if last is None else max(0.0, sent_at - last)
    goal = GOAL_KILL_S if sig == signal.SIGKILL else GOAL_CLEAN_S
    row.update(
        exit=proc.returncode,
        pyxdf=loads,
        replay=replay.returncode == 0,
        lost_s=lost,
        ok=loads and replay.returncode == 0 and lost is not None and lost <= goal,
        error=error or (replay.stderr.strip().splitlines() or [""])[-1] * (replay.returncode != 0),
    )
    return row


def _stderr_tail(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        return "still running"
    return (proc.stderr.read().strip().splitlines() or ["(no output)"])[-1]


def killed_recordings(folder: Path, n_kill: int, n_clean: int, seed: int = 0) -> list[dict]:
    """Kill ``record`` and ``run --record``: ``n_kill`` SIGKILLs, ``n_clean`` SIGTERM/SIGINT."""
    rng = random.Random(seed)
    stream = f"faults-files-{uuid.uuid4().hex[:8]}"
    outlet = bci_background(
        "simulate", "--modality", "eeg", "--name", stream, "--source-id", stream, cwd=folder
    )
    rows = []
    try:
        if not wait_for_line(outlet, "Streaming", timeout=60):
            raise RuntimeError("the simulated outlet did not start: " + _stderr_tail(outlet))
        plan = [signal.SIGKILL] * n_kill + [signal.SIGTERM, signal.SIGINT] * n_clean
        for command in ("record", "run --record"):
            for sig in plan:
                name = "record" if command == "record" else "run"
                rows.append(killed_recording(name, sig, folder, stream, rng))
    finally:
        stop_process(outlet)
    return rows


def summarize_killed(rows: list[dict]) -> list[dict]:
    """One line per (command, signal): files that load, seconds lost (median, max), goal."""
    out = []
    for command in dict.fromkeys(r["command"] for r in rows):
        for sig in dict.fromkeys(r["signal"] for r in rows if r["command"] == command):
            group = [r for r in rows if r["command"] == command and r["signal"] == sig]
            lost = sorted(r["lost_s"] for r in group if r.get("lost_s") is not None)
            goal = GOAL_KILL_S if sig == "SIGKILL" else GOAL_CLEAN_S
            out.append(
                {
                    "command": command,
                    "signal": sig,
                    "n": len(group),
                    "load_pyxdf": sum(bool(r.get("pyxdf")) for r in group),
                    "load_replay": sum(bool(r.get("replay")) for r in group),
                    "lost_median_s": lost[len(lost) // 2] if lost else None,
                    "lost_max_s": lost[-1] if lost else None,
                    "goal_s": goal,
                    "ok": all(r["ok"] for r in group),
                }
            )
    return out


# ---------------------------------------------------------------------------------------------
# part 5: bad files and bundles


def _write_inputs(folder: Path) -> dict[str, Path]:
    """The bad (and one good) input files, in ``folder``."""
    import numpy as np

    from acquisition.simulator import Simulator
    from acquisition.xdf import XdfWriter, write_xdf

    folder.mkdir(parents=True, exist_ok=True)
    good = write_xdf(Simulator("eeg", "typing", seed=3).generate(12.0), folder / "good.xdf")
    raw = good.read_bytes()
    rng = np.random.default_rng(0)
    files = {"good": good}
    for name, content in {
        "empty.xdf": b"",
        "garbage.xdf": rng.bytes(4096),
        "truncated.xdf": raw[:60],  # cut inside the first stream header
        "text.fif": b"not a FIF file\n" * 20,
        "empty.wav": b"",
        "garbage.wav": rng.bytes(4096),
    }.items():
        (folder / name).write_bytes(content)
        files[name] = folder / name
    (folder / "good.txt").write_bytes(raw)  # wrong extension
    files["good.txt"] = folder / "good.txt"
    with XdfWriter(folder / "zero-channels.xdf") as writer:
        writer.add_stream(1, name="amp", stype="EEG", channel_count=0, nominal_srate=100.0)
        writer.write_samples(1, np.zeros((100, 0), np.float32), np.arange(100) / 100.0)
    files["zero-channels.xdf"] = folder / "zero-channels.xdf"
    files["missing.xdf"] = folder / "missing.xdf"
    return files


def _mutate(folder: Path, source: Path, how: str) -> Path:
    """A copy of the bundle ``source`` broken in one way (``how``)."""
    bundle = folder / f"bundle-{how}"
    shutil.copytree(source, bundle)
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    graphs = manifest["graphs"]
    first = next(iter(graphs))
    graph_path = bundle / graphs[first]["file"]
    if how == "invalid-json":
        manifest_path.write_text(manifest_path.read_text()[:-40])
        return bundle
    if how == "no-manifest":
        manifest_path.unlink()
        return bundle
    if how == "missing-graphs":
        del manifest["graphs"]
    elif how == "graphs-as-string":
        manifest["graphs"] = "keystroke.onnx"
    elif how == "missing-sha256":
        del graphs[first]["sha256"]
    elif how == "truncated-graph":
        graph_path.write_bytes(graph_path.read_bytes()[: graph_path.stat().st_size // 2])
    elif how == "replaced-graph":
        other = [g for g in graphs if g != first]
        graph_path.write_bytes((bundle / graphs[other[0]]["file"]).read_bytes())
    elif how == "path-escape":
        outside = folder / f"outside-{how}.onnx"
        shutil.copy(graph_path, outside)
        graphs[first]["file"] = f"../{outside.name}"
    elif how == "absolute-path":
        graphs[first]["file"] = "/etc/passwd"
    elif how == "shape-mismatch":  # 64 channels in the manifest, 306 in the graph
        channels = manifest["stream"]["channels"]
        for key, value in channels.items():
            if isinstance(value, list):
                channels[key] = value[:64]
        n_channels = len(manifest["preprocessing"]["ch_names"])
        for key, value in manifest["preprocessing"].items():  # names, scaler statistics
            if isinstance(value, list) and len(value) == n_channels:
                manifest["preprocessing"][key] = value[:64]
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return bundle


BUNDLE_CASES = (
    "invalid-json",
    "no-manifest",
    "missing-graphs",
    "graphs-as-string",
    "missing-sha256",
    "truncated-graph",
    "replaced-graph",
    "path-escape",
    "absolute-path",
    "shape-mismatch",
)
FILE_CASES = ("empty.xdf", "garbage.xdf", "truncated.xdf", "text.fif", "good.txt", "missing.xdf")
FILE_CASES += ("zero-channels.xdf",)
SHORT_FILE_CASES = ("empty.xdf", "garbage.xdf", "truncated.xdf", "zero-channels.xdf")
SHORT_BUNDLE_CASES = ("invalid-json", "graphs-as-string", "path-escape", "shape-mismatch")


def bad_input_cases(folder: Path, long: bool) -> list[tuple[str, list[str], Path]]:
    """Every (case name, bci-app arguments, the file the message must name)."""
    files = _write_inputs(folder / "inputs")
    good = str(files["good"])
    cases = []
    for name in FILE_CASES if long else SHORT_FILE_CASES:
        path = str(files[name])
        cases.append((f"replay {name}", ["replay", path, "--no-wait", "--duration", "1"], path))
        cases.append((f"convert {name}", ["convert", path, "OUT.fif"], path))
        if long or name == "garbage.xdf":
            cases.append((f"evaluate {name}", ["evaluate", str(TYPING_BUNDLE), path], path))
            train = ["train", "typing", path, "--out", "OUT", "--epochs", "1", "--device", "cpu"]
            cases.append((f"train {name}", train, path))
    speech = folder / "inputs" / "speech-copy"  # inside inputs: checked for changes too
    shutil.copytree(SPEECH_BUNDLE, speech)
    for name in ("empty.wav", "garbage.wav") if long else ("garbage.wav",):
        add = ["candidates", "add", str(speech), str(files[name])]
        cases.append((f"candidates add {name}", add, files[name]))
    for how in BUNDLE_CASES if long else SHORT_BUNDLE_CASES:
        bundle = str(_mutate(folder, TYPING_BUNDLE, how))
        cases.append((f"evaluate bundle {how}", ["evaluate", bundle, good], bundle))
        if long:
            run = ["run", "--bundle", bundle, "--duration", "1"]
            cases.append((f"run bundle {how}", run, bundle))
    return cases


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its content hash (to see what a command wrote)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def bad_input(name: str, args: list[str], named: Path, folder: Path) -> dict:
    """Run one bad-input case in its folder: exit 2, one line naming the file, nothing written."""
    case_dir = folder / "cases" / name.replace(" ", "_")
    case_dir.mkdir(parents=True)
    before = _tree(folder / "inputs"), _tree(case_dir)
    done = bci(*args, cwd=case_dir, timeout=300)
    after = _tree(folder / "inputs"), _tree(case_dir)
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    first = errors[0] if errors else (lines[0] if lines else "")
    names_file = Path(named).name in first or str(named) in first
    row = {
        "case": name,
        "exit": done.returncode,
        "stderr": first,
        "one_line": len(errors) == 1 and "Traceback" not in done.stderr,
        "names_file": names_file,
        "nothing_written": before == after,
    }
    row["ok"] = row["exit"] == 2 and row["one_line"] and names_file and row["nothing_written"]
    return row


def bad_inputs(folder: Path, long: bool, workers: int = 2) -> list[dict]:
    """Run every bad-input case (a few at a time); return their rows in order."""
    cases = bad_input_cases(folder, long)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda case: bad_input(*case, folder), cases))


# ---------------------------------------------------------------------------------------------
# part 6: outputs that already exist


def outputs(folder: Path) -> list[dict]:
    """``train``, ``export``, ``record``, ``simulate``, ``convert``, ``lm train`` onto outputs."""
    folder.mkdir(parents=True, exist_ok=True)
    files = _write_inputs(folder / "inputs")
    bundle = folder / "old-bundle"
    shutil.copytree(TYPING_BUNDLE, bundle)
    existing = folder / "existing.xdf"
    existing.write_bytes(files["good"].read_bytes())
    fif = folder / "existing.fif"
    first = bci("convert", str(files["good"]), str(fif))
    if first.returncode != 0:
        raise RuntimeError(f"cannot make the FIF to overwrite: {first.stderr.strip()}")
    bids = folder / "bids"
    first = bci("convert", str(files["good"]), str(bids) + "/")
    if first.returncode != 0:
        raise RuntimeError(f"cannot make the BIDS folder to overwrite: {first.stderr.strip()}")
    good = str(files["good"])
    checkpoint = folder / "run" / "checkpoint.pt"  # refused before it is read: any bytes do
    checkpoint.parent.mkdir(exist_ok=True)
    checkpoint.write_bytes(b"a training run's checkpoint")
    corpus, lm = folder / "corpus.txt", folder / "lm.npz"  # refused before either is read
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n", encoding="utf-8")
    lm.write_bytes(b"a language model trained for days")
    cases = [
        ("train into a bundle", ["train", "typing", good, "--out", str(bundle)]),
        ("export onto a bundle", ["export", str(checkpoint), "--out", str(bundle)]),
        ("record onto a file", ["record", str(existing), "--timeout", "0.5"]),
        (
            "run --record onto a file",
            ["run", "--no-decoder", "--record", str(existing), "--duration", "1"],
        ),
        (
            "simulate --out a file",
            ["simulate", "--duration", "1", "--out", str(existing)],
        ),
        ("convert onto a FIF", ["convert", good, str(fif)]),
        ("convert onto a BIDS folder", ["convert", good, str(bids) + "/"]),
        ("lm train onto a file", ["lm", "train", str(corpus), "--out", str(lm)]),
    ]
    rows = []
    for name, args in cases:
        before = _tree(folder)
        done = bci(*args, cwd=folder)
        lines = [line for line in done.stderr.strip().splitlines() if ": error: " in line]
        rows.append(
            {
                "case": name,
                "exit": done.returncode,
                "stderr": lines[0] if lines else done.stderr.strip()[-200:],
                "unchanged": _tree(folder) == before,
                "ok": done.returncode == 2 and len(lines) == 1 and _tree(folder) == before,
            }
        )
    for name, args, check in (
        ("convert --overwrite a FIF", ["convert", good, str(fif), "--overwrite"], fif),
        (
            "simulate --overwrite",
            [
                "simulate",
                "--modality",
                "eeg",
                "--duration",
                "2",
                "--out",
                str(existing),
                "--overwrite",
            ],
            existing,
        ),
    ):
        old = hashlib.sha256(check.read_bytes()).hexdigest()
        done = bci(*args, cwd=folder)
        replaced = check.is_file() and hashlib.sha256(check.read_bytes()).hexdigest() != old
        rows.append(
            {
                "case": name,
                "exit": done.returncode,
                "stderr": (done.stderr.strip().splitlines() or [""])[-1],
                "unchanged": not replaced,
                "ok": done.returncode == 0 and (replaced or name.startswith("convert")),
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# tables


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)


def format_table(title: str, rows: list[dict], columns: list[str]) -> str:
    """A plain-text table with a PASS/FAIL column (temporary folders shown as ``TMP``)."""
    tmp = tempfile.gettempdir()
    cells = [
        [re.sub(rf"{re.escape(tmp)}/bci-faults-files-\w+", "TMP", _fmt(r.get(c))) for c in columns]
        + ["PASS" if r["ok"] else "FAIL"]
        for r in rows
    ]
    header = [*columns, "result"]
    widths = [
        max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)
    ]
    widths[-2] = min(widths[-2], 200) if columns[-1] == "stderr" else widths[-2]
    line = lambda row: "  ".join(str(v)[:w].ljust(w) for v, w in zip(row, widths))  # noqa: E731
    n_pass = sum(r["ok"] for r in rows)
    return "\n".join([f"== {title}: {n_pass}/{len(rows)} PASS", line(header), *map(line, cells)])


def main(argv: list[str] | None = None) -> int:
    """Run the parts asked for, print their tables; exit 1 if any case failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="20 kills per signal, every case")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["killed", "bad", "outputs"],
        default=["killed", "bad", "outputs"],
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument(
        "--kills", type=int, help="SIGKILLs per command (default: 3; 20 with --long)"
    )
    parser.add_argument(
        "--clean", type=int, help="SIGTERMs and SIGINTs per command (default: 1; 20 with --long)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    args = parser.parse_args(argv)
    results: dict[str, list[dict]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bci-faults-files-") as tmp:
        tmp = Path(tmp)
        if "killed" in args.parts:
            n_kill = args.kills if args.kills is not None else (20 if args.long else 3)
            n_clean = args.clean if args.clean is not None else (20 if args.long else 1)
            (tmp / "killed").mkdir()
            rows = killed_recordings(tmp / "killed", n_kill, n_clean, args.seed)
            results["killed"] = rows
            results["killed_summary"] = summarize_killed(rows)
        if "bad" in args.parts:
            results["bad"] = bad_inputs(tmp / "bad", args.long)
        if "outputs" in args.parts:
            results["outputs"] = outputs(tmp / "outputs")
    failed = sum(
        not r["ok"] for key, rows in results.items() if key != "killed_summary" for r in rows
    )
    if args.json:
        print(json.dumps({**results, "failed": failed, "seconds": time.monotonic() - started}))
        return int(failed > 0)
    if "killed_summary" in results:
        print(
            format_table(
                "2. killed recordings (goal: every file loads; lost <= goal_s)",
                results["killed_summary"],
                [
                    "command",
                    "signal",
                    "n",
                    "load_pyxdf",
                    "load_replay",
                    "lost_median_s",
                    "lost_max_s",
                    "goal_s",
                ],
            )
        )
        for row in results["killed"]:
            if not row["ok"]:
                print(f"   FAIL {row['command']} {row['signal']} {row['file']}: {row.get('error')}")
    if "bad" in results:
        print(
            format_table(
                "5. bad files, bundles (goal: exit 2, one line naming the file, nothing written)",
                results["bad"],
                ["case", "exit", "one_line", "names_file", "nothing_written", "stderr"],
            )
        )
    if "outputs" in results:
        print(
            format_table(
                "6. outputs that exist (goal: refused with exit 2 unless --overwrite)",
                results["outputs"],
                ["case", "exit", "unchanged", "stderr"],
            )
        )
    print(f"{failed} failure(s) in {time.monotonic() - started:.0f} s")
    return int(failed > 0)


if __name__ == "__main__":
    sys.exit(main())
