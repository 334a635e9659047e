"""The benchmark scripts run end to end on tiny sizes (their numbers are not checked here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard: a loaded 2-core machine trains slowly
        cwd=SCRIPTS.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_bench_speech_trains_scores_and_times_one_case():
    out = _run(
        "bench_speech.py",
        "--modalities",
        "eeg",
        "--snrs",
        "3",
        "--train-seconds",
        "45",
        "--test-seconds",
        "25",
        "--epochs",
        "1",
        "--device",
        "cpu",
    )
    header, row = out.strip().splitlines()[-2:]
    assert header.split()[:3] == ["mod", "snr", "N"]
    fields = row.split()
    assert fields[0] == "eeg" and float(fields[1]) == 3.0 and int(fields[2]) > 0
    top10, chance = float(fields[3]), float(fields[4])
    assert 0.0 <= top10 <= 1.0 and 0.0 < chance <= 1.0


def test_pretrain_sentence_prior_writes_a_prior_the_small_transformer_loads(tmp_path):
    prior = ["--out", str(tmp_path / "prior.npz"), "--eval-margins", "6", "--eval-sentences", "4"]
    out = _run("pretrain_sentence_prior.py", "--steps", "3", "--batch-size", "4", *prior)
    assert '"steps": 3' in out
    evaluation = json.loads(out[out.index("{") :])["evaluation"]
    assert [row["margin"] for row in evaluation] == [6.0]
    for name in ("conv", "transformer", "lm_conv", "lm_transformer"):
        low, high = evaluation[0][name]["ci95_sentences"]
        assert 0.0 <= evaluation[0][name]["mean"] <= 1.0
        assert low <= evaluation[0][name]["mean"] <= high
    rescored = _run("pretrain_sentence_prior.py", "--evaluate-only", *prior)
    assert json.loads(rescored[rescored.index("{") :])["evaluation"] == evaluation
    import torch

    from bci_app.typing.alphabet import N_CLASSES
    from models.typing.config import Brain2QwertyV1Config
    from models.typing.model import SentenceTransformer
    from models.typing.pretrain import load_prior

    config = Brain2QwertyV1Config.named("small")
    sentence = SentenceTransformer(config, conv_head=torch.nn.Linear(config.hidden, N_CLASSES))
    meta = load_prior(sentence, tmp_path / "prior.npz")
    assert meta["steps"] == 3 and meta["config"] == "small" and len(meta["corpus_sha256"]) == 64


@pytest.mark.slow
def test_bench_drift_compares_fixed_and_recentred_statistics():
    out = _run("bench_drift.py", "--seeds", "10", "--duration", "30", "--global-gain", "3")
    summary = [line for line in out.splitlines() if "statistics:" in line]
    assert len(summary) == 4
    assert {line.split(",")[0].strip() for line in summary} == {"same day", "drift day"}


TINY_TYPING = [
    "--durations",
    "60",
    "--snrs",
    "2",
    "--epochs",
    "1",
    "--test-duration",
    "30",
    "--seeds",
    "2000",
    "2001",
    "--repeats",
    "5",
    "--text-pretrain",
    "50",
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("bench_acquisition.py", ["--duration", "3"]),
        ("bench_preprocessing.py", ["--seconds", "2", "--repeats", "1", "--minutes", "0.2"]),
        ("bench_replay.py", ["--minutes", "0.1"]),
        ("bench_gui.py", ["--seconds", "2", "--channels", "64"]),
    ],
)
def test_other_benchmarks_run_on_tiny_sizes(script, args):
    out = _run(script, *args)
    assert out.strip(), f"{script} printed nothing"


@pytest.mark.slow
def test_bench_typing_gives_each_variant_and_the_paired_orderings_with_intervals():
    out = _run("bench_typing.py", *TINY_TYPING)
    row = next(line for line in out.splitlines() if line.startswith("meg "))
    assert row.count("(n=2)") == 3, out  # conv, + transformer, + LM over the 2 sessions
    paired = out.split("Paired over the same sessions", 1)[1].splitlines()
    assert "transformer - conv" in paired[1] and "LM - transformer" in paired[1], out
    cells = paired[2].split()
    assert cells[0] == "meg" and len([c for c in cells if c.startswith("[")]) == 2, out


@pytest.mark.slow
def test_bench_acquisition_compares_the_three_readers_on_one_outlet():
    out = _run("bench_acquisition.py", "--peers", "--duration", "1")
    lines = {line.split("  ")[0]: line for line in out.splitlines() if "sample -> visible" in line}
    assert set(lines) == {"pylsl inlet (floor)", "mne-lsl StreamLSL", "StreamSource"}, out
    for line in lines.values():
        assert "samples " in line and "% of a core" in line


@pytest.mark.slow
def test_bench_gui_measures_sample_to_painted_while_decoding():
    out = _run(
        "bench_gui.py", "--seconds", "1", "--channels", "306", "--views", "channels", "--decode"
    )
    assert "while decoding" in out and "sample -> painted:      p50" in out, out


def test_bench_all_refuses_an_unknown_argument():
    done = subprocess.run(
        ["bash", str(SCRIPTS / "bench_all.sh"), "--fast"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "Invalid argument '--fast'" in done.stderr


@pytest.mark.slow
def test_bench_speech_compare_gives_intervals_and_a_zero_paired_difference():
    """The shipped speech bundle against itself: every paired difference is exactly zero."""
    bundle = str(SCRIPTS.parent / "bci_app" / "data" / "bundles" / "speech-meg-small")
    out = _run(
        "bench_speech.py", "--compare", bundle, bundle, "--seeds", "2000", "2001",
        "--test-seconds", "15",
    )  # fmt: skip
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("candidates_top")]
    assert len(rows) == 4 and all(row[-1] == "(n=2)" for row in rows)  # 2 bundles x top-1/10
    differences = [line for line in out.splitlines() if "minus the first" in line]
    assert len(differences) == 4
    assert all("0.000 [0.000, 0.000] (n=2)" in line for line in differences)


@pytest.mark.slow
def test_bench_speech_calibration_writes_the_curve(tmp_path):
    out = _run(
        "bench_speech_calibration.py", "--minutes", "0.4", "--pretrain-subjects", "1",
        "--pretrain-seconds", "20", "--epochs", "1", "--seeds", "2000", "2001",
        "--test-seconds", "12", "--out", str(tmp_path),
    )  # fmt: skip
    assert "0.4 min pretrained - scratch (paired)" in out
    import json

    result = json.loads((tmp_path / "calibration_curve.json").read_text())
    assert {(r["start"], r["session_seed"]) for r in result["rows"]} == {
        (start, seed) for start in ("scratch", "pretrained") for seed in (2000, 2001)
    }
    assert (tmp_path / "calibration_curve.png").stat().st_size > 10_000
