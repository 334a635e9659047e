"""``bci-app convert X.xdf ROOT/`` writes BIDS that the official BIDS validator accepts.

The validator is the ``bids-validator`` npm package (Node.js), which ``scripts/setup.sh`` installs
into ``.tools/`` when npm is there; without Node.js or the validator these tests are skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from acquisition.io import write_recording
from acquisition.simulator import Simulator
from bci_app.cli.main import main as bci_app

ROOT = Path(__file__).parents[2]

pytestmark = pytest.mark.slow
MODALITY_NAMES = {"eeg": "EEG", "meg": "MEG", "ieeg": "iEEG"}  # in the validator's summary


def _validator() -> list[str]:
    """The command of the BIDS validator, or skip the test saying what is missing."""
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: the BIDS validator (npm) cannot run")
    local = ROOT / ".tools" / "node_modules" / ".bin" / "bids-validator"
    found = str(local) if local.is_file() else shutil.which("bids-validator")
    if found is None:
        pytest.skip(
            "the BIDS validator is not installed: scripts/setup.sh puts it into .tools/ "
            "(npm install --prefix .tools bids-validator@1.15.0)"
        )
    return [found]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("modality", "task"), [("eeg", "typing"), ("meg", "typing"), ("ieeg", "listening")]
)
def test_converted_bids_passes_the_bids_validator(modality, task, tmp_path, capsys):
    validator = _validator()
    xdf = tmp_path / f"{modality}.xdf"
    write_recording(Simulator(modality, task, seed=3).generate(4.0), xdf)
    bids_root = tmp_path / "bids"
    assert bci_app(["convert", str(xdf), f"{bids_root}/", "--task", task]) == 0
    assert "Wrote" in capsys.readouterr().out

    done = subprocess.run(
        [*validator, str(bids_root), "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    report = json.loads(done.stdout)
    issues = {
        level: [
            f"{issue['key']}: {issue['reason']} "
            f"{[f['file']['relativePath'] for f in issue['files'] if f.get('file')][:3]}"
            for issue in report["issues"][level]
        ]
        for level in ("errors", "warnings")
    }
    assert issues == {"errors": [], "warnings": []}
    assert report["summary"]["modalities"] == [
        {"eeg": "EEG", "meg": "MEG", "ieeg": "iEEG"}[modality]
    ]
    assert report["summary"]["tasks"] == [task]
