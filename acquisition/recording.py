"""In-memory form of a recording and the marker vocabulary every part of the project shares.

A :class:`Recording` is what readers return (XDF, FIF, EDF, ...), what the simulator produces,
what the player streams and what training reads. Markers are plain strings so they travel
unchanged through LSL string streams, XDF, FIF annotations and BIDS events:

- ``key:<c>``: one key press; ``<c>`` is the typed character, or ``space``, ``enter``,
  ``backspace``, ``shift`` for those keys (see :func:`key_marker`).
- ``sentence_start:<text>`` / ``sentence_end:<text>``: a typing (or listening) sentence.
- ``word:<word>``: the onset of a heard word (listening task).
- ``gap:<seconds>``: data missing here (written by the stream source / recorder).
- anything else: kept as is (vendor annotations, stim codes as ``stim:<channel>:<code>``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from acquisition.channels import ChannelSpec

_NAMED_KEYS = {" ": "space", "\n": "enter", "\b": "backspace"}
_KEY_NAMES = {v: k for k, v in _NAMED_KEYS.items()}


def key_marker(char: str) -> str:
    """Return the marker string for one key press of ``char`` (``"a"`` -> ``"key:a"``)."""
    return "key:" + _NAMED_KEYS.get(char, char)


def parse_marker(value: str) -> tuple[str, str]:
    """Split a marker into ``(kind, payload)``; keys are decoded back to their character.

    >>> parse_marker("key:space")
    ('key', ' ')
    >>> parse_marker("sentence_start:hello world")
    ('sentence_start', 'hello world')
    """
    kind, sep, payload = value.partition(":")
    if not sep:
        return value, ""
    if kind == "key":
        payload = _KEY_NAMES.get(payload, payload)
    return kind, payload


@dataclass(frozen=True)
class Marker:
    """One event: an LSL-clock (or recording-clock) time in seconds and a string value."""

    timestamp: float
    value: str


@dataclass
class Recording:
    """A continuous multichannel recording with markers.

    Parameters
    ----------
    data : array, shape (n_times, n_channels)
        Samples in the units of ``channels.units`` (volts, tesla, ...).
    timestamps : array, shape (n_times,)
        Time of each sample in seconds (float64), on the same clock as the markers.
    sfreq : float
        Nominal sampling rate in Hz.
    channels : ChannelSpec
        Channel names, types, units and positions.
    markers : list of Marker
        Events sorted by time.
    name : str
        Stream name used when the recording is replayed.
    source_id : str
        Source identifier of the stream it came from.
    meta : dict
        Free-form provenance (file, subject, simulator ground truth, ...).
    """

    data: np.ndarray
    timestamps: np.ndarray
    sfreq: float
    channels: ChannelSpec
    markers: list[Marker] = field(default_factory=list)
    name: str = "bci-app"
    source_id: str = "bci-app"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data)
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64)
        if self.data.ndim != 2:
            raise ValueError(
                f"Invalid recording data: expected (n_times, n_channels), got shape "
                f"{self.data.shape}."
            )
        if self.data.shape[1] != self.channels.n_channels:
            raise ValueError(
                f"Invalid recording: data has {self.data.shape[1]} channels but the channel spec "
                f"names {self.channels.n_channels}."
            )
        if self.timestamps.shape != (self.data.shape[0],):
            raise ValueError(
                f"Invalid recording: {self.data.shape[0]} samples but "
                f"{self.timestamps.shape[0]} timestamps."
            )
        if not self.sfreq > 0:
            raise ValueError(f"Invalid value for 'sfreq': {self.sfreq}; it must be positive.")
        self.markers = sorted(self.markers, key=lambda m: m.timestamp)

    @property
    def n_times(self) -> int:
        """Number of samples."""
        return self.data.shape[0]

    @property
    def duration(self) -> float:
        """Duration in seconds (n_times / sfreq)."""
        return self.n_times / self.sfreq

    def markers_of(self, kind: str) -> list[Marker]:
        """Markers whose kind (text before the first ``:``) is ``kind``."""
        return [m for m in self.markers if parse_marker(m.value)[0] == kind]
