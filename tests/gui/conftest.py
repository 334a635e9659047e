"""Fixtures of the GUI tests: live simulated LSL streams, settings files, screenshots, TextEvents.

Qt runs offscreen (QT_QPA_PLATFORM is set in tests/conftest.py). Screenshots go to the test's
tmp_path and, when ``BCI_APP_SCREENSHOT_DIR`` is set, are copied there for people to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pylsl
import pytest

from acquisition.markers import MarkerSource
from acquisition.simulator import Simulator, SimulatorStream
from acquisition.stream import StreamSource
from bci_app.decoders.events import TextEvent
from bci_app.typing.alphabet import LETTERS, normalize_text


@pytest.fixture
def screenshot(tmp_path):
    """``save(widget, name) -> Path``: a PNG of the widget as the user sees it.

    ``save.folder`` is where they go; ``save.keep(path)`` copies a PNG made otherwise.
    """
    folder = tmp_path / "screenshots"
    folder.mkdir()
    extra = os.environ.get("BCI_APP_SCREENSHOT_DIR")

    def keep(path: Path) -> Path:
        """Copy a PNG written by the test to ``BCI_APP_SCREENSHOT_DIR`` (when set)."""
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(extra) / path.name)
        return path

    def save(widget, name: str) -> Path:
        path = folder / f"{name}.png"
        if not widget.grab().save(str(path)):
            raise RuntimeError(f"could not save the screenshot {path}")
        return keep(path)

    save.folder, save.keep = folder, keep
    return save


@pytest.fixture
def settings(tmp_path):
    """Settings in a file of this test (never the user's)."""
    from PyQt6.QtCore import QSettings

    return QSettings(str(tmp_path / "bci-app-gui.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def eeg_stream(source_id):
    """A live simulated 64-channel EEG typing stream (and its markers) on loopback."""
    sim = Simulator("eeg", "typing", snr=2.0, seed=3)
    with SimulatorStream(sim, name=f"gui-test-{source_id}", source_id=source_id) as stream:
        yield stream


@pytest.fixture
def connected(eeg_stream):
    """``(StreamSource, MarkerSource)`` connected to ``eeg_stream`` (markers first)."""
    markers = MarkerSource(source_id=f"{eeg_stream.source_id}-markers").connect()
    source = StreamSource(source_id=eeg_stream.source_id).connect()
    yield source, markers
    source.disconnect()
    markers.disconnect()


@pytest.fixture(scope="session")
def typing_truth() -> list[dict]:
    """Ground truth of a simulated typing session: sentences, typed keys and their times."""
    recording = Simulator("eeg", "typing", seed=7).generate(45.0)
    return [s for s in recording.meta["ground_truth"]["sentences"] if s["complete"]]


@pytest.fixture
def make_text_events():
    """TEST INPUT standing in for a decoder's output; nothing is decoded here.

    ``make(truth, seed=0, error_rate=0.15) -> list[TextEvent]``: for every key the simulated
    participant typed, a ``keystroke`` event whose hypothesis is the typed text so far with some
    characters replaced by random letters (low confidence on those), random top-5 candidates,
    and plausible stage times; a ``sentence_end`` event after each sentence.
    """

    def make(truth: list[dict], *, seed: int = 0, error_rate: float = 0.15) -> list[TextEvent]:
        rng = np.random.default_rng(seed)
        events, committed = [], ""
        for sentence in truth:
            target, typed, confidence = sentence["text"], "", []
            for key in sentence["keys"]:
                char = normalize_text(key["char"])
                if not char:
                    continue
                wrong = rng.random() < error_rate
                shown = str(rng.choice(list(LETTERS))) if wrong else char
                typed += shown
                confidence.append(float(rng.uniform(0.15, 0.5) if wrong else rng.uniform(0.6, 1)))
                others = [c for c in LETTERS if c != shown]
                labels = [shown, *rng.choice(others, 4, replace=False).tolist()]
                probs = np.sort(rng.dirichlet(np.full(5, 0.6)))[::-1]
                events.append(
                    TextEvent(
                        "keystroke",
                        committed,
                        typed,
                        tuple(confidence),
                        tuple(zip(labels, probs.tolist())),
                        target,
                        **_stamps(),
                    )
                )
            committed = f"{committed} {typed}".strip()
            events.append(TextEvent("sentence_end", committed, "", (), (), target, **_stamps()))
        return events

    return make


def _stamps() -> dict:
    """Sample time and stage times of an event that was just emitted."""
    now = pylsl.local_clock()
    sample = now - 0.32
    stages = {"pulled": sample + 0.303, "preprocessed": sample + 0.305, "inferred": now - 0.006}
    return {"timestamp": sample, "stages": {**stages, "emitted": now - 0.004}}
