"""Stream a recording to LSL as if it were live: data stream plus a string marker stream.

Timeline: sample ``i`` (counted from the start, across loops) carries the LSL timestamp
``t0 + i / sfreq`` at every speed (the recording's own time base), where ``t0`` is the
``local_clock()`` at the first push, so the data a consumer sees (and the windows and text it
decodes) are the same at 1x, Nx and ``max``. Only the pacing changes: at a numeric ``speed`` each
chunk is pushed once the clock reaches ``t0 + i_last / (sfreq * speed)``, computed from ``t0`` and
the sample count (never from summed sleeps), so pacing does not drift; at ``max`` chunks go out
back to back. Above 1x the timestamps run ahead of the clock.

``"max"`` policy: the player waits for a consumer before the first chunk and pauses whenever the
data outlet has none, so nothing is pushed into the void. LSL gives an outlet no word on how far
a consumer has read, so the player cannot slow down for a slow reader: a consumer that falls
further behind than the LSL buffers (the outlet's ``max_buffered`` and the inlet's
``max_buflen``, both in seconds of stream data, 360 s by default) loses the oldest samples.
Consumers that cannot keep up should use a numeric speed. Connect the marker inlet before the data
inlet: markers pushed before a consumer connects are not delivered (LSL keeps no history).

Controls: :meth:`Player.pause` holds the replay before its next chunk and :meth:`Player.resume`
continues it. At a numeric speed the timeline is re-anchored on resume: the paused wall time
(times the speed) is added to the timestamps, so a pause appears to consumers as what it is, time
without data (a gap), and pacing stays on the clock. :meth:`Player.seek` makes the next chunk
start at another sample of the recording, with the timestamps running on (no jump in time);
markers go out from the new position on.

Markers go out on ``<name>-markers`` (source_id ``<source_id>-markers``), each stamped with the
exact timestamp of the data sample it belongs to (the nearest sample), just before that sample's
chunk. Gaps in a recording's timestamps (e.g. XDF) are not reproduced: samples are played back to
back at the nominal rate.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np
import pylsl

from acquisition._outlet_worker import OutletWorker
from acquisition.io import RecordingReader, open_recording

#: Default chunk length in seconds of data (the chunk size is this times the rate, at least 1).
DEFAULT_CHUNK_S = 0.02
#: Default chunk length at ``"max"`` speed. Nothing is paced there, so a chunk's length only sets
#: how many pushes (and pulls, and pipeline steps on the consumer's side) carry the data: 100 ms
#: chunks made ``bci-app bench``'s max-speed replay + decode 181-212x real time on 2 cores, against
#: 108-165x with 20 ms ones (the player's CPU 0.39-0.47 s vs 0.56-0.86 s for 120 s of 306 ch).
MAX_SPEED_CHUNK_S = 0.1
# Samples are read from files in blocks of about this many seconds, then pushed chunk by chunk.
_READ_BLOCK_S = 1.0
_CONSUMER_POLL_S = 0.1


def check_speed(speed: Any) -> float | str:
    """Return a valid replay speed: a finite float > 0, or ``"max"``.

    Numeric strings (``"2"``, from a command line) are accepted as numbers.
    """
    value = speed
    if isinstance(speed, str):
        if speed.strip().lower() == "max":
            return "max"
        try:
            value = float(speed)
        except ValueError:
            value = None
    elif isinstance(speed, bool) or not isinstance(speed, int | float | np.integer | np.floating):
        value = None
    if value is None or not (np.isfinite(value) and value > 0):
        raise ValueError(
            f"Invalid value for 'speed': {speed!r}. Use a number > 0 (1 = real time, 10 = ten "
            "times faster) or 'max' (as fast as the consumer reads)."
        )
    return float(value)


def _default_stype(reader: RecordingReader) -> str:
    """LSL stream type for a recording: its own if known, else its channels' modality's."""
    for key in ("stype", "stream_type", "type"):
        if isinstance(reader.meta.get(key), str) and reader.meta[key]:
            return reader.meta[key]
    return reader.channels.stream_type


class Player(OutletWorker):
    """Replay a recording file (or :class:`Recording`) to LSL from a worker thread.

    The lifecycle (:meth:`start`, :meth:`stop`, :meth:`join`, :attr:`state`, :attr:`done`,
    :attr:`error`) and the error rule are those of
    :class:`~acquisition._outlet_worker.OutletWorker`; a Player plays once.

    Parameters
    ----------
    source : path-like | Recording | mne_bids.BIDSPath
        What to play; anything :func:`acquisition.io.open_recording` opens. MNE formats are read
        block by block while playing; XDF is loaded whole.
    speed : float | "max"
        1.0 plays in real time, N plays N times faster, ``"max"`` as fast as a consumer reads
        (see the module docstring for the policy).
    loop : bool
        Restart from the beginning at the end, with continuing timestamps, until :meth:`stop`.
    name, source_id : str | None
        LSL name and source_id of the data stream (default: the recording's). The marker
        stream is ``<name>-markers`` / ``<source_id>-markers``.
    chunk_size : int | None
        Samples per pushed chunk (default: 20 ms of data, 100 ms at ``"max"``; at least 1).
    stype : str | None
        LSL stream type (default: the recording's, else MEG/iEEG/EEG from its channel types).
    stream : str | None
        XDF only: the data stream to play when the file holds several.
    max_buffered : float
        Seconds of data the outlets buffer per consumer (LSL's ``max_buffered``).
    wait_for_consumer : bool
        Numeric speeds: hold the first sample until a consumer connects to the data stream (the
        clock starts then). ``"max"`` always waits, and also pauses while no consumer is there.
    """

    _what = "Player"

    def __init__(
        self,
        source: Any,
        *,
        speed: float | str = 1.0,
        loop: bool = False,
        name: str | None = None,
        source_id: str | None = None,
        chunk_size: int | None = None,
        stype: str | None = None,
        stream: str | None = None,
        max_buffered: float = 360,
        wait_for_consumer: bool = False,
    ) -> None:
        self._speed = check_speed(speed)
        self._reader: RecordingReader = open_recording(source, stream=stream)
        if self._reader.n_times == 0:
            raise ValueError(f"Invalid value for 'source': {source!r} holds no samples to play.")
        sfreq = self._reader.sfreq
        if chunk_size is None:
            chunk_s = MAX_SPEED_CHUNK_S if self._speed == "max" else DEFAULT_CHUNK_S
            chunk_size = max(1, round(chunk_s * sfreq))
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(
                f"Invalid value for 'chunk_size': {chunk_size!r}; it must be an int >= 1 "
                "(samples per chunk), or None for the default (20 ms of data, 100 ms at max)."
            )
        self._loop = bool(loop)
        self._wait_first = bool(wait_for_consumer)
        super().__init__(
            name=name or self._reader.name,
            stype=stype or _default_stype(self._reader),
            channels=self._reader.channels,
            sfreq=sfreq,
            source_id=source_id or self._reader.source_id,
            chunk_size=chunk_size,
            max_buffered=max_buffered,
        )
        samples = self._reader.marker_samples()
        order = np.argsort(samples, kind="stable")
        self._marker_samples = samples[order]
        self._marker_values = [self._reader.markers[i].value for i in order]
        self._resume_event = threading.Event()
        self._resume_event.set()
        self._control_lock = threading.Lock()
        self._seek_to: int | None = None
        self._position = 0

    # ------------------------------------------------------------------ public API
    @property
    def reader(self) -> RecordingReader:
        """The opened recording: rate, channels, markers, length."""
        return self._reader

    @property
    def speed(self) -> float | str:
        """Replay speed (a float, or ``"max"``)."""
        return self._speed

    @property
    def position(self) -> int:
        """Recording sample the next pushed chunk starts at (a pending :meth:`seek` included)."""
        with self._control_lock:
            return self._position if self._seek_to is None else self._seek_to

    @property
    def paused(self) -> bool:
        """Whether :meth:`pause` holds the replay."""
        return not self._resume_event.is_set()

    def pause(self) -> None:
        """Hold the replay before its next chunk (also before :meth:`start`); see the module doc."""
        self._check_playable("pause")
        if not self._resume_event.is_set():
            warnings.warn(
                "The player is already paused; pause() did nothing.", RuntimeWarning, stacklevel=2
            )
            return
        self._resume_event.clear()

    def resume(self) -> None:
        """Continue a paused replay; the next sample is stamped when it goes out."""
        self._check_playable("resume")
        if self._resume_event.is_set():
            warnings.warn(
                "The player is not paused; resume() did nothing.", RuntimeWarning, stacklevel=2
            )
            return
        self._resume_event.set()

    def seek(self, sample: int) -> None:
        """Make the next chunk start at ``sample`` of the recording (0-based).

        Works while playing, paused, or before :meth:`start`; timestamps run on without a jump
        and markers go out from the new position on.
        """
        n_times = self._reader.n_times
        if isinstance(sample, bool) or not isinstance(sample, int | np.integer):
            raise TypeError(
                f"Invalid type for 'sample': expected an int (sample index), got {sample!r}. "
                "Convert seconds with round(seconds * player.reader.sfreq)."
            )
        if not 0 <= sample < n_times:
            raise ValueError(
                f"Invalid value for 'sample': {sample}; the recording has {n_times} samples, so "
                f"seek to 0..{n_times - 1}."
            )
        self._check_playable("seek")
        with self._control_lock:
            self._seek_to = int(sample)

    def __repr__(self) -> str:
        return (
            f"<Player {self._info.name()!r} source_id={self._info.source_id()!r} "
            f"speed={self._speed!r} loop={self._loop} sent={self._n_samples_sent}>"
        )

    # ------------------------------------------------------------------ worker
    def _check_playable(self, action: str) -> None:
        if self._done.is_set():
            raise RuntimeError(
                f"Cannot {action}(): this Player has finished (end of the recording, stop() or "
                "an error). Create a new Player and seek() it to play again."
            )

    def _take_seek(self) -> int | None:
        """Return and clear a pending seek target."""
        with self._control_lock:
            target, self._seek_to = self._seek_to, None
            return target

    def _work(self) -> None:
        """Push every chunk (and its markers) at its due time; loop if asked."""
        sfreq, n_times = self._reader.sfreq, self._reader.n_times
        self._sfreq = sfreq
        self._rate = sfreq if self._speed == "max" else sfreq * self._speed
        chunk = self._chunk_size
        block = chunk * max(1, round(_READ_BLOCK_S * sfreq / chunk))
        # (wall-clock due time, timestamp, samples sent) where the current timeline starts
        self._anchor: tuple[float, float, int] | None = None
        pos = self._take_seek() or 0
        while True:
            while pos < n_times:
                next_pos = self._play_block(pos, block, chunk)
                if next_pos is None:
                    return
                pos = next_pos
            if not self._loop:
                return
            pos = 0

    def _play_block(self, start: int, block: int, chunk: int) -> int | None:
        """Push samples ``start..start+block-1``; return where to go on (None: stopped)."""
        samples = np.ascontiguousarray(self._reader.read(start, start + block)[0], np.float32)
        marker_pos = int(np.searchsorted(self._marker_samples, start, side="left"))
        for first in range(0, samples.shape[0], chunk):
            data = samples[first : first + chunk]
            stamps = self._next_stamps(data.shape[0])
            if stamps is None:
                return None
            target = self._take_seek()
            if target is not None:
                return target
            marker_pos, markers = self._markers_of_chunk(marker_pos, start + first, data.shape[0])
            self._push(data, stamps, markers)
            with self._control_lock:
                self._position = start + first + data.shape[0]
        return start + samples.shape[0]

    def _next_stamps(self, n: int) -> np.ndarray | None:
        """Wait until the next ``n`` samples are due (holding while paused); None if stopped."""
        while True:
            if not self._hold() or not self._wait_for_consumer():
                return None
            stamps, due = self._stamps(n)
            if not self._wait_until(due):
                return None
            if self._resume_event.is_set():  # not paused while waiting
                return stamps

    def _stamps(self, n: int) -> tuple[np.ndarray, float]:
        """Timestamps of the next ``n`` samples and the clock time the last one is due."""
        if self._anchor is None:
            self._start_timestamp = pylsl.local_clock()
            self._anchor = (self._start_timestamp, self._start_timestamp, 0)
        wall0, stamp0, sent0 = self._anchor
        k = self._n_samples_sent - sent0 + np.arange(n)
        return stamp0 + k / self._sfreq, wall0 + k[-1] / self._rate

    def _hold(self) -> bool:
        """Wait while paused; re-anchor the timeline on resume. False if stopped."""
        if not self._resume_event.is_set():
            while not self._resume_event.wait(_CONSUMER_POLL_S):
                if self._stop_requested.is_set():
                    return False
            if self._anchor is not None and self._speed != "max":
                wall0, stamp0, sent0 = self._anchor
                sent = self._n_samples_sent
                next_due = wall0 + (sent - sent0) / self._rate
                next_stamp = stamp0 + (sent - sent0) / self._sfreq
                now = pylsl.local_clock()
                late = max(0.0, now - next_due)
                self._anchor = (max(now, next_due), next_stamp + late * self._speed, sent)
        return not self._stop_requested.is_set()

    def _wait_for_consumer(self) -> bool:
        """Block until the data outlet has a consumer if the policy says so; False if stopped."""
        if self._speed == "max" or (self._wait_first and self._start_timestamp is None):
            while not self._outlet.have_consumers():
                if self._stop_requested.is_set():
                    return False
                self._outlet.wait_for_consumers(_CONSUMER_POLL_S)
        return not self._stop_requested.is_set()

    def _wait_until(self, due: float) -> bool:
        """Sleep until the LSL clock reaches ``due`` (paced speeds only); False if stopped."""
        if self._speed == "max":
            return self._sleep(0.0)
        return self._sleep(due - pylsl.local_clock())

    def _markers_of_chunk(self, pos: int, first: int, n: int) -> tuple[int, list[tuple[int, str]]]:
        """Markers of samples ``first..first+n-1`` as ``(row, value)``, from marker ``pos`` on.

        Returns the position of the next marker and the chunk's markers.
        """
        markers = []
        while pos < len(self._marker_values) and self._marker_samples[pos] < first + n:
            markers.append((int(self._marker_samples[pos]) - first, self._marker_values[pos]))
            pos += 1
        return pos, markers
