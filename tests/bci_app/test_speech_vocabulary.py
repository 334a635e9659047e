"""Simulated listening sessions play the shipped speech bundle's vocabulary; evaluate sums up.

``bci-app evaluate`` of several sessions gives each score's mean with its interval.

The user's finding (issue 14): ``bci-app evaluate`` of the shipped bundle on a fresh ``bci-app
simulate --task listening`` session scored below chance with a third of the words outside the
candidate set, because the simulator played the whole sentence bank at snr 1.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from acquisition.io import read_recording
from acquisition.recording import parse_marker
from bci_app.cli.main import main
from bci_app.decoders.bundle import load_bundle
from bci_app.decoders.manifest import thaw
from bci_app.decoders.shipped import SPEECH_BUNDLE, TYPING_BUNDLE
from bci_app.speech.vocabulary import BANK, listening_vocabulary

pytestmark = pytest.mark.skipif(not SPEECH_BUNDLE.is_dir(), reason="speech bundle missing")


def _shipped_demo() -> dict:
    return thaw(load_bundle(SPEECH_BUNDLE).manifest.demo.simulator)


def test_vocabulary_of_the_shipped_bundle_a_file_and_the_bank(tmp_path):
    demo = _shipped_demo()
    shipped = listening_vocabulary()
    assert shipped.sentences == demo["sentences"]
    assert shipped.settings == {"snr": demo["snr"], "subject": demo["subject"]}
    assert listening_vocabulary(SPEECH_BUNDLE) == shipped
    listing = tmp_path / "sentences.txt"
    listing.write_text("The cat sat.\n\n  Dogs   bark loudly.  \n")
    from_file = listening_vocabulary(listing)
    assert from_file.sentences == ["The cat sat.", "Dogs bark loudly."]
    assert from_file.settings == {}
    assert listening_vocabulary(BANK).sentences is None


def test_bad_vocabulary_says_what_to_give(tmp_path):
    with pytest.raises(ValueError, match=r"'vocabulary'.*neither a speech bundle folder"):
        listening_vocabulary(tmp_path / "missing")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match=r"empty.txt' holds no sentence"):
        listening_vocabulary(empty)
    with pytest.raises(ValueError, match=r"does not say which sentences"):
        listening_vocabulary(TYPING_BUNDLE)


def test_simulate_rejects_vocabulary_for_typing(tmp_path, capsys):
    out = tmp_path / "t.xdf"
    code = main(["simulate", "--vocabulary", BANK, "--duration", "1", "--out", str(out)])
    assert code == 2
    assert "--vocabulary is for --task listening" in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def simulated_sessions(tmp_path_factory):
    """Two default ``bci-app simulate --task listening`` sessions (25 s, seeds 2000 and 2001)."""
    folder = tmp_path_factory.mktemp("listening")
    paths = []
    for seed in (2000, 2001):
        path = folder / f"session-{seed}.xdf"
        argv = ["simulate", "--task", "listening", "--duration", "25", "--seed", str(seed)]
        assert main([*argv, "--out", str(path)]) == 0
        paths.append(path)
    return paths


def test_default_listening_session_plays_the_shipped_vocabulary(simulated_sessions):
    demo = _shipped_demo()
    rec = read_recording(simulated_sessions[0])
    heard = [parse_marker(m.value)[1] for m in rec.markers_of("sentence_start")]
    assert heard and set(heard) <= set(demo["sentences"])


def test_simulate_says_what_it_plays_and_snr_overrides_the_bundle(tmp_path, capsys):
    demo = _shipped_demo()
    argv = ["simulate", "--task", "listening", "--duration", "2", "--out"]
    assert main([*argv, str(tmp_path / "a.xdf")]) == 0
    assert f"vocabulary of speech-meg-small (snr {demo['snr']:g})" in capsys.readouterr().out
    listing = tmp_path / "mine.txt"
    listing.write_text("One two three.\n")
    assert main([*argv, str(tmp_path / "b.xdf"), "--vocabulary", str(listing), "--snr", "2"]) == 0
    assert f"the 1 sentences of {listing} (snr 2)" in capsys.readouterr().out


def test_evaluate_covers_every_word_and_gives_intervals_over_sessions(simulated_sessions, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(SPEECH_BUNDLE), *map(str, simulated_sessions), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    per_recording = report["recordings"]
    assert [r["candidates"]["coverage"] for r in per_recording] == [1.0, 1.0]
    summary = report["overall"]["sessions"]["candidates"]
    values = [r["candidates"]["top10"] for r in per_recording]
    assert summary["n"] == 2 and summary["values"]["top10"] == values
    top10 = summary["top10"]
    assert top10["mean"] == pytest.approx(np.mean(values))
    assert top10["low"] <= top10["mean"] <= top10["high"]
    assert main(["evaluate", str(SPEECH_BUNDLE), *map(str, simulated_sessions)]) == 0
    text = capsys.readouterr().out
    assert "Over the 2 recordings" in text
    assert f"top-10 {np.mean(values):.3f} [" in text and "(n=2)" in text
