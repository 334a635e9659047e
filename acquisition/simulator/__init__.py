"""Synthetic live source with ground truth: EEG, MEG and sEEG typing and listening sessions.

>>> from acquisition.simulator import Simulator
>>> sim = Simulator("meg", "typing", snr=1.0, seed=0)      # doctest: +SKIP
>>> recording = sim.generate(60.0)                          # doctest: +SKIP
>>> recording.meta["ground_truth"]["sentences"][0]["typed"]  # doctest: +SKIP

:class:`SimulatorStream` pushes a simulator's samples and markers to LSL in real time.
"""

from acquisition.simulator.montages import make_channels, make_info
from acquisition.simulator.sentences import SPLITS as SENTENCE_SPLITS
from acquisition.simulator.sentences import load_sentences, sentence_key, split_of
from acquisition.simulator.simulator import (
    COMPONENTS,
    DEFAULT_SFREQ,
    TASKS,
    SimulatedChunk,
    Simulator,
)
from acquisition.simulator.stream import SimulatorStream

__all__ = [
    "COMPONENTS",
    "DEFAULT_SFREQ",
    "SENTENCE_SPLITS",
    "TASKS",
    "SimulatedChunk",
    "Simulator",
    "SimulatorStream",
    "load_sentences",
    "make_channels",
    "make_info",
    "sentence_key",
    "split_of",
]
