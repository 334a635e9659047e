"""Short runs of ``faults_streams.py``: outages, bad streams and a soak, as users run them.

Each is the script's real command line in a subprocess (its outlets are further processes, its
``outages`` drives the real ``bci-app run``); the long versions are for people (``--long``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "faults_streams.py"


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _row(out: str, name: str) -> list[str]:
    """The cells of the table row that starts with ``name`` (goal, measured)."""
    line = next(x for x in out.splitlines() if x.startswith(name))
    return line[len(name) :].split()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_outages_under_bci_app_run_all_recover():
    proc = _script("outages", "--n", "2", timeout=200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _row(proc.stdout, "recovered") == ["2/2", "2/2"]
    assert _row(proc.stdout, "reconnections (app summary)") == ["2", "2"]
    assert _row(proc.stdout, "app alive until stopped, exit code")[-2:] == ["yes,", "0"]
    threads = _row(proc.stdout, "threads before -> after")
    assert threads[1] == threads[3]  # ['equal', '14', '->', '14']


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bad_streams_each_get_a_defined_outcome():
    cases = "nan-bursts,clock-backwards,stall-then-burst,rate-2x,markers-flood"
    proc = _script("bad", "--cases", cases, "--seconds", "10", timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    matrix = proc.stdout.split("what happened", 1)[1].strip().splitlines()
    assert [line.split()[0] for line in matrix] == cases.split(",")
    assert all(" defined " in line for line in matrix)
    assert "refused: effective rate" in proc.stdout and "nominal 1000 Hz; " in proc.stdout
    assert "dropped as a flood" in proc.stdout
    rows = dict(line.split(None, 1) for line in matrix)
    assert "NaN/Inf samples counted" in rows["nan-bursts"]
    assert (
        "timeline restarts" in rows["clock-backwards"]
        and "gaps: none" not in rows["clock-backwards"]
    )
    assert "gaps: none; 0 timeline restarts" in rows["stall-then-burst"]  # nothing was lost
    assert all("decoder inputs finite" in rows[c] for c in ("nan-bursts", "clock-backwards"))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_soak_with_the_window_offscreen_prints_its_figures_every_period():
    proc = _script(
        "soak", "--gui", "--soak-minutes", "0.2", "--report-every", "6", "--warmup-s", "2",
        timeout=150,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr  # 1: a goal missed, which the table shows
    table = proc.stdout.split("t (min)", 1)[1].split("\n\n", 1)[0].strip().splitlines()[1:]
    assert len(table) == 2 and all(len(row.split()) == 9 for row in table)
    assert _row(proc.stdout, "inference errors") == ["0", "0"]
    for figure in ("dropped samples", "RSS growth", "lag slope (ms/min)", "fds first -> last"):
        assert figure in proc.stdout
    assert float(_row(proc.stdout, "scope frames drawn per second")[0]) > 0  # the window drew
