"""In-memory form of a recording, its block-wise reader, and the markers every part shares.

A :class:`Recording` is what readers return (XDF, FIF, EDF, ...), what the simulator produces,
what the player streams and what training reads. A :class:`RecordingReader` is a recording whose
samples are read on demand (the player streams long files through one). Markers are plain
strings so they travel unchanged through LSL string streams, XDF, FIF annotations and BIDS events:

- ``key:<c>``: one key press; ``<c>`` is the typed character, or ``space``, ``enter``,
  ``backspace``, ``shift`` for those keys (see :func:`key_marker`).
- ``sentence_start:<text>`` / ``sentence_end:<text>``: a typing (or listening) sentence.
- ``word:<word>``: the onset of a heard word (listening task).
- ``gap:<seconds>``: data missing here (written by the stream source / recorder).
- anything else: kept as is (vendor annotations, stim codes as ``stim:<channel>:<code>``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from acquisition.channels import ChannelSpec

_NAMED_KEYS = {" ": "space", "\n": "enter", "\b": "backspace"}
_KEY_NAMES = {v: k for k, v in _NAMED_KEYS.items()}


def exists_error(path: str | Path, what: str = "the file") -> FileExistsError:
    """The error for an output that exists and may not be replaced: name it, give both fixes."""
    return FileExistsError(
        f"Cannot write '{path}': {what} already exists. Choose another name, or allow replacing "
        "it (--overwrite on the command line; overwrite=True in Python)."
    )


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


class RecordingReader:
    """Header (rate, channels, markers, length) of a recording plus block-wise sample access.

    Made by :func:`acquisition.io.open_recording`. A file read through MNE has only its header and
    markers read up front: :meth:`read` and :meth:`chunks` read its samples from disk on demand
    through ``read_block``. An in-memory :class:`Recording` (XDF, which is loaded whole, included)
    is sliced instead.

    Parameters
    ----------
    sfreq, channels, markers, n_times, name, source_id, meta
        As in :class:`Recording`; ``n_times`` is the number of samples.
    read_block : callable | None
        ``read_block(start, stop)`` returns samples ``start..stop-1`` as ``(n, n_channels)``;
        their times are ``i / sfreq`` (first sample at 0 s).
    recording : Recording | None
        The in-memory recording, when there is no ``read_block``.
    path : Path | None
        The file read, if any.
    """

    def __init__(
        self,
        *,
        sfreq: float,
        channels: ChannelSpec,
        markers: list[Marker],
        n_times: int,
        name: str,
        source_id: str,
        meta: dict,
        read_block: Callable[[int, int], np.ndarray] | None = None,
        recording: Recording | None = None,
        path: Path | None = None,
    ) -> None:
        if (read_block is None) == (recording is None):
            raise ValueError(
                "Invalid RecordingReader: give exactly one of 'read_block' (samples from a file) "
                "and 'recording' (samples in memory)."
            )
        self.sfreq = float(sfreq)
        self.channels = channels
        self.markers = sorted(markers, key=lambda m: m.timestamp)
        self.n_times = int(n_times)
        self.name = name
        self.source_id = source_id
        self.meta = meta
        self.path = path
        self._read_block = read_block
        self._recording = recording

    @classmethod
    def from_recording(cls, recording: Recording) -> RecordingReader:
        """Wrap an in-memory recording."""
        return cls(
            sfreq=recording.sfreq,
            channels=recording.channels,
            markers=list(recording.markers),
            n_times=recording.n_times,
            name=recording.name,
            source_id=recording.source_id,
            meta=recording.meta,
            recording=recording,
        )

    def timestamps(self, start: int, stop: int) -> np.ndarray:
        """Recording-clock times (s) of samples ``start..stop-1``."""
        if self._recording is not None:
            return self._recording.timestamps[start:stop]
        return np.arange(start, stop) / self.sfreq

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Return samples ``start..stop-1`` as ``(data (n, n_channels), timestamps (n,))``."""
        stop = min(stop, self.n_times)
        if self._recording is not None:
            return self._recording.data[start:stop], self._recording.timestamps[start:stop]
        return self._read_block(start, stop), self.timestamps(start, stop)

    def chunks(self, chunk_samples: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Return an iterator of ``(data, timestamps)`` blocks of ``chunk_samples`` samples.

        The last block may be shorter. ``chunk_samples`` is checked now, not at the first block.
        """
        if isinstance(chunk_samples, bool) or not isinstance(chunk_samples, int | np.integer):
            raise TypeError(
                f"Invalid type for 'chunk_samples': expected an int, got {chunk_samples!r}."
            )
        if chunk_samples < 1:
            raise ValueError(
                f"Invalid value for 'chunk_samples': {chunk_samples}; it must be at least 1 sample."
            )
        return (
            self.read(start, start + int(chunk_samples))
            for start in range(0, self.n_times, int(chunk_samples))
        )

    def marker_samples(self) -> np.ndarray:
        """Index of the sample each marker belongs to (nearest in time, clipped to the data)."""
        times = np.array([m.timestamp for m in self.markers], dtype=float)
        if self.n_times == 1:
            index = np.zeros(len(times))
        elif self._recording is None:
            index = np.round(times * self.sfreq)
        else:
            stamps = self._recording.timestamps
            right = np.clip(np.searchsorted(stamps, times), 1, self.n_times - 1)
            left = right - 1
            closer_left = np.abs(times - stamps[left]) <= np.abs(stamps[right] - times)
            index = np.where(closer_left, left, right)
        return np.clip(index, 0, self.n_times - 1).astype(np.int64)

    def to_recording(self) -> Recording:
        """Load every sample into a :class:`Recording`."""
        if self._recording is not None:
            return self._recording
        data, timestamps = self.read(0, self.n_times)
        return Recording(
            data=np.ascontiguousarray(data),
            timestamps=timestamps,
            sfreq=self.sfreq,
            channels=self.channels,
            markers=self.markers,
            name=self.name,
            source_id=self.source_id,
            meta=self.meta,
        )
