"""Test helpers: tiny simulated typing sessions (64-channel EEG, short sentences) and edits of them.

Short sentences give several whole sentences in 40 s, enough for a train/validation/test split,
while keeping every test fast. Recordings are cached per parameters; tests copy before editing.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from acquisition.recording import Marker, Recording, parse_marker
from acquisition.simulator import Simulator

SENTENCES = (
    "the cat sat",
    "a dog ran far",
    "we like tea",
    "it is cold now",
    "see you soon",
    "big red box",
    "my hat is blue",
    "run to the park",
)


@functools.lru_cache(maxsize=8)
def _typing_session(modality: str, seed: int, duration: float, snr: float, subject: int):
    sim = Simulator(modality, "typing", snr=snr, seed=seed, subject=subject, sentences=SENTENCES)
    return sim.generate(duration)


def typing_session(
    modality: str = "eeg", seed: int = 1, duration: float = 40.0, snr: float = 3.0, subject: int = 0
) -> Recording:
    """A simulated typing session (a fresh copy: safe to edit)."""
    rec = _typing_session(modality, seed, duration, snr, subject)
    return dataclasses.replace(
        rec, data=rec.data.copy(), markers=list(rec.markers), meta=dict(rec.meta)
    )


def without_markers(recording: Recording, *kinds: str) -> Recording:
    """A copy of ``recording`` without the markers of these kinds."""
    kept = [m for m in recording.markers if parse_marker(m.value)[0] not in kinds]
    return dataclasses.replace(recording, markers=kept)


def with_markers(recording: Recording, markers: list[Marker]) -> Recording:
    """A copy of ``recording`` with extra markers."""
    return dataclasses.replace(recording, markers=[*recording.markers, *markers])


def ground_truth_keys(recording: Recording) -> list[tuple[str, np.ndarray, list[str]]]:
    """Per simulated sentence: its text, key times and typed characters."""
    truth = recording.meta["ground_truth"]["sentences"]
    return [
        (s["text"], np.array([k["time"] for k in s["keys"]]), [k["char"] for k in s["keys"]])
        for s in truth
        if s["keys"]
    ]
