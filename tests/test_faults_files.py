"""The short version of the file fault suite (``scripts/faults_files.py``), and the CLI fixes.

Killed recordings, bad files and bundles, and outputs that already exist, each through the real
``bci-app`` in other processes; plus Ctrl-C while ``streams``/``record`` look for streams and
while ``simulate --out`` works, and ``train`` into an existing bundle.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "faults_files.py"
TYPING_BUNDLE = ROOT / "bci_app" / "data" / "bundles" / "typing-meg-small"


def _suite(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.stdout, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_bad_files_and_bundles_get_one_line_naming_the_file_and_exit_2():
    rows = _suite("--parts", "bad")["bad"]
    cases = {row["case"] for row in rows}
    for command in ("replay", "convert", "evaluate", "train", "candidates add"):
        assert any(case.startswith(command + " ") for case in cases), command
    assert {"evaluate bundle path-escape", "evaluate bundle shape-mismatch"} <= cases
    for row in rows:
        assert row["exit"] == 2, row
        assert row["one_line"] and row["names_file"], row
        assert row["nothing_written"], row


@pytest.mark.slow
def test_existing_outputs_are_refused_unless_overwrite():
    rows = {row["case"]: row for row in _suite("--parts", "outputs")["outputs"]}
    for case in (
        "train into a bundle",
        "export onto a bundle",
        "record onto a file",
        "convert onto a BIDS folder",
        "lm train onto a file",
    ):
        assert rows[case]["exit"] == 2 and rows[case]["unchanged"], rows[case]
        assert "--overwrite" in rows[case]["stderr"], rows[case]
    assert rows["simulate --overwrite"]["exit"] == 0
    assert not rows["simulate --overwrite"]["unchanged"]  # replaced, as asked
    assert all(row["ok"] for row in rows.values()), rows


@pytest.mark.slow
def test_killed_recordings_load_and_lose_at_most_the_last_flush():
    result = _suite("--parts", "killed", "--kills", "1", "--clean", "1")
    rows = result["killed"]
    assert {(r["command"], r["signal"]) for r in rows} == {
        (command, sig) for command in ("record", "run") for sig in ("SIGKILL", "SIGTERM", "SIGINT")
    }
    for row in rows:
        assert row["pyxdf"] and row["replay"], row  # every file loads
        assert row["lost_s"] is not None, row
        assert row["lost_s"] <= (1.0 if row["signal"] == "SIGKILL" else 0.1), row


def _bci(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bci_app.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=kwargs.get("cwd", ROOT),
    )


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has its own SIGTERM handler (bci-app installs it before it resolves)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:"))[7:], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("command", [("streams",), ("record", "OUT.xdf")])
def test_ctrl_c_while_looking_for_streams_ends_the_command(command, tmp_path):
    proc = _bci(*command, "--timeout", "300", cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not _catches_sigterm(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)  # not the 300 s it was told to look
    assert proc.returncode == 130, err
    assert "interrupted (Ctrl-C)" in err and "Traceback" not in err
    assert not (tmp_path / "OUT.xdf").exists()


@pytest.mark.parametrize(("sig", "name"), [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_ctrl_c_in_simulate_out_says_what_happened_and_writes_nothing(sig, name, tmp_path):
    proc = _bci("simulate", "--duration", "3000", "--out", "long.xdf", cwd=tmp_path)
    seen = ""
    while "simulating" not in seen and proc.poll() is None:  # its progress bar: at work
        seen += proc.stderr.read(1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)  # a hang guard: the main thread only waits now
    err = seen + err
    assert proc.returncode == 128 + sig
    assert f"bci-app simulate: interrupted ({name}); nothing was written" in err
    assert "Traceback" not in err and not (tmp_path / "long.xdf").exists()


@pytest.mark.slow
def test_sigterm_in_train_keeps_the_checkpoint_and_says_resume(tmp_path):
    from helpers import typing_data

    from acquisition.io import write_recording

    rec = write_recording(typing_data.typing_session(), tmp_path / "calibration.xdf")
    out = tmp_path / "run"
    proc = _bci(
        "train", "typing", str(rec), "--out", str(out), "--epochs", "500", "--batch-size", "2",
        "--device", "cpu", "--no-progress", "--no-export",
    )  # fmt: skip
    while not list((out / "checkpoints").glob("epoch_*.pt")) and proc.poll() is None:
        time.sleep(0.2)  # an epoch is done: there is something to resume
    proc.send_signal(signal.SIGTERM)  # `kill PID`, a job scheduler, torchrun stopping workers
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "bci-app train: interrupted (SIGTERM); run the same command with --resume" in err
    assert f"--resume {out} to continue" in err and "Traceback" not in err
    kept = sorted((out / "checkpoints").glob("epoch_*.pt"))
    assert kept and all(path.stat().st_size > 0 for path in kept)  # what --resume reads


def test_train_refuses_an_existing_bundle_and_overwrite_leaves_nothing_stale(tmp_path):
    from bci_app.cli.train import check_output_folder

    bundle = tmp_path / "bundle"
    shutil.copytree(TYPING_BUNDLE, bundle)
    (bundle / "checkpoints").mkdir()
    (bundle / "checkpoints" / "epoch_0007.pt").write_bytes(b"old")
    before = sorted(p.name for p in bundle.rglob("*"))
    with pytest.raises(ValueError, match=r"holds an earlier run .*--resume .*--overwrite"):
        check_output_folder(str(bundle), overwrite=False)
    assert sorted(p.name for p in bundle.rglob("*")) == before
    check_output_folder(str(bundle), overwrite=False, resume=str(bundle))  # resuming it: fine
    check_output_folder(str(bundle), overwrite=False, resume=str(bundle / "checkpoints"))
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="holds other files"):
        check_output_folder(str(other), overwrite=True)
    assert (other / "mine.txt").read_text() == "keep"
    (bundle / "my-notes.txt").write_text("keep")  # a run's folder with a file of the user's
    with pytest.raises(ValueError, match=r"also holds \['my-notes.txt'\]"):
        check_output_folder(str(bundle), overwrite=True)
    (bundle / "my-notes.txt").unlink()
    check_output_folder(str(bundle), overwrite=True)
    assert not bundle.exists()  # no README, graph or epoch checkpoint of the old run is left


def test_convert_of_a_file_cut_in_half_keeps_its_markers_and_says_it_was_cut(tmp_path):
    from acquisition.io import read_recording
    from acquisition.simulator import Simulator
    from acquisition.xdf import write_xdf

    raw = write_xdf(Simulator("eeg", "typing", seed=2).generate(20.0), tmp_path / "full.xdf")
    half = tmp_path / "half.xdf"
    half.write_bytes(raw.read_bytes()[: raw.stat().st_size // 2])
    done = subprocess.run(
        [sys.executable, "-m", "bci_app.cli.main", "convert", str(half), str(tmp_path / "h.fif")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "which is truncated" in done.stdout and "after the cut is missing" in done.stdout
    converted = read_recording(tmp_path / "h.fif")
    assert 5 < converted.duration < 15
    assert len([m for m in converted.markers if m.value.startswith("key:")]) > 5
