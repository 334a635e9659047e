"""Irregular LSL marker streams -> :class:`~acquisition.recording.Marker` events.

:class:`MarkerSource` reads string marker streams (keystrokes ``key:a``, sentence start/end,
word onsets, see :mod:`acquisition.recording`) and the annotation streams of mne-lsl's
``PlayerLSL`` in both encodings:

- ``"string"``: one string channel; each sample is an annotation description.
- ``"one-hot"``: one numeric channel per annotation description (the channel labels); a sample
  with a non-zero value in a channel is an onset of that annotation (mne-lsl writes the duration
  there, or -1 for zero-length annotations).

Timestamps are corrected to the local clock. The resolution, loss detection and reconnection are
those of :class:`~acquisition._inlet_worker.InletWorker`, shared with the data stream source.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass

import numpy as np
import pylsl

from acquisition._inlet_worker import InletWorker
from acquisition._lsl import HAS_MIN_SAMPLES, NUMPY_DTYPES, describe, pull_into
from acquisition.channels import channels_from_info
from acquisition.recording import Marker

__all__ = ["MarkerHealth", "MarkerSource"]

logger = logging.getLogger(__name__)

_ENCODINGS = ("auto", "string", "one-hot")
_MAX_CHUNK = 256


@dataclass(frozen=True)
class MarkerHealth:
    """Snapshot of a marker source's state.

    Attributes
    ----------
    connected : bool
        Inlet open (markers are irregular, so silence is not a stall).
    state : str
        ``"connected"``, ``"lost"`` or ``"disconnected"``.
    n_markers : int
        Markers received since connect().
    n_overflow : int
        Markers dropped because nobody pulled them and the queue was full.
    reconnections : int
        Times the stream came back after being lost.
    last_error : str | None
        The most recent error, if any.
    """

    connected: bool
    state: str
    n_markers: int
    n_overflow: int
    reconnections: int
    last_error: str | None


class MarkerSource(InletWorker):
    """Receive markers from an LSL string stream or an mne-lsl annotation stream.

    Parameters
    ----------
    name, stype, source_id : str | None
        Stream query; every given property must match. mne-lsl players give their data and
        annotation streams the same ``source_id``; irregular-rate streams are preferred here.
    annotations_encoding : {"auto", "string", "one-hot"}
        How markers are encoded; ``"auto"`` picks ``"string"`` for string streams and
        ``"one-hot"`` for numeric ones.
    resolve_timeout : float
        Seconds to wait for the stream in :meth:`connect`.
    background : bool
        If True, a worker thread pulls markers into a queue that :meth:`pull` drains. If False,
        :meth:`pull` reads the inlet itself (and reconnects from there after a loss).
    max_queue : int
        Markers kept for :meth:`pull` before the oldest are dropped (counted in health).
    """

    _what = "marker stream"

    def __init__(
        self,
        name: str | None = None,
        stype: str | None = None,
        source_id: str | None = None,
        *,
        annotations_encoding: str = "auto",
        resolve_timeout: float = 5.0,
        background: bool = True,
        max_queue: int = 100_000,
    ) -> None:
        if annotations_encoding not in _ENCODINGS:
            raise ValueError(
                f"Invalid value for 'annotations_encoding': {annotations_encoding!r}; use one "
                f"of {_ENCODINGS}."
            )
        if int(max_queue) != max_queue or max_queue < 1:
            raise ValueError(f"Invalid value for 'max_queue': {max_queue!r}; it must be >= 1.")
        super().__init__(
            name,
            stype,
            source_id,
            resolve_timeout=resolve_timeout,
            max_buflen=360,
            background=background,
        )
        self._encoding = annotations_encoding
        self._queue: collections.deque[Marker] = collections.deque(maxlen=int(max_queue))
        self._n_markers = 0
        self._n_overflow = 0
        self._labels: tuple[str, ...] = ()

    @property
    def encoding(self) -> str:
        """The encoding in use (``"string"`` or ``"one-hot"``) once connected."""
        if self._info is None:
            return self._encoding
        return "string" if self._info.channel_format() == pylsl.cf_string else "one-hot"

    def pull(self) -> list[Marker]:
        """Return the markers received since the last call, oldest first (never blocks long).

        Without a background thread this reads the inlet now; after a loss each call also asks
        the network for the stream again, which blocks it for 0.2-0.5 s until it is back.
        """
        self._raise_pending()
        if self._state == "disconnected":
            raise RuntimeError("connect() the marker source before pulling markers.")
        if not self._background:
            try:
                while self._step(0.0):
                    pass
            except Exception as exc:
                self._fail(exc)
                self._raise_pending()
        out = []
        while self._queue:
            out.append(self._queue.popleft())
        return out

    def health(self) -> MarkerHealth:
        """Return a snapshot of the source's state; re-raises a stored worker error."""
        self._raise_pending()
        return MarkerHealth(
            connected=self.connected,
            state=self._state,
            n_markers=self._n_markers,
            n_overflow=self._n_overflow,
            reconnections=self._reconnections,
            last_error=self._last_error,
        )

    def __repr__(self) -> str:
        if self._info is None:
            return f"<MarkerSource query={self._query} (never connected)>"
        return f"<MarkerSource {describe(self._info)} state={self._state}>"

    # ----------------------------------------------------------------- worker hooks
    def _prefer(self, info: pylsl.StreamInfo) -> bool:
        return info.nominal_srate() == 0

    def _check_info(self, info: pylsl.StreamInfo) -> None:
        is_string = info.channel_format() == pylsl.cf_string
        if self._encoding == "string" and not is_string:
            raise ValueError(
                f"Invalid value for 'annotations_encoding': 'string' needs a string stream, but "
                f"{describe(info)} is numeric. Use annotations_encoding='one-hot' (or 'auto')."
            )
        if self._encoding == "one-hot" and is_string:
            raise ValueError(
                f"Invalid value for 'annotations_encoding': 'one-hot' needs a numeric stream "
                f"whose channels are annotation descriptions, but {describe(info)} carries "
                "strings. Use annotations_encoding='string' (or 'auto')."
            )
        if not is_string and info.channel_format() not in NUMPY_DTYPES:
            raise ValueError(f"Unsupported channel format in {describe(info)}.")
        if info.nominal_srate() > 0:
            logger.info("Marker stream %s has a regular rate; reading it anyway.", describe(info))

    def _on_open(self, info: pylsl.StreamInfo, first: bool) -> None:
        if info.channel_format() == pylsl.cf_string:
            if info.channel_count() > 1:
                n_ch = info.channel_count()
                logger.info("Marker stream %r: using channel 1 of %d.", info.name(), n_ch)
            return
        self._labels = channels_from_info(info).names
        self._dest = np.empty(
            (_MAX_CHUNK, info.channel_count()), dtype=NUMPY_DTYPES[info.channel_format()]
        )

    def _pull(self, inlet: pylsl.StreamInlet, timeout: float) -> int:
        if inlet.channel_format == pylsl.cf_string:
            kwargs = {"min_samples": 1} if timeout > 0 and HAS_MIN_SAMPLES else {}
            samples, ts = inlet.pull_chunk(timeout=timeout, max_samples=_MAX_CHUNK, **kwargs)
            markers = [Marker(float(t) + self._tc, str(s[0])) for s, t in zip(samples, ts)]
        else:
            ts = pull_into(inlet, self._dest, timeout)
            rows, cols = np.nonzero(self._dest[: ts.shape[0]])  # NaN counts as non-zero
            keep = np.isfinite(self._dest[rows, cols])
            rows, cols = rows[keep], cols[keep]
            markers = [
                Marker(float(t) + self._tc, self._labels[c])
                for t, c in zip(ts[rows].tolist(), cols.tolist())
            ]
        free = self._queue.maxlen - len(self._queue)
        if len(markers) > free:
            self._n_overflow += len(markers) - free
        self._queue.extend(markers)
        self._n_markers += len(markers)
        return len(ts)
