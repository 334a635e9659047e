"""Preallocated ring buffer of samples, timestamps and validity flags, written by one thread.

One writer (a stream worker) and any number of readers. The writer copies each chunk into the
preallocated arrays while holding the lock; readers only take the write counter under the lock,
copy outside it, and then check under the lock that the writer did not overwrite what they copied
in the meantime (a sequence-lock check). Samples that were overwritten before or during a read are
reported as lost, never returned torn.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np


class NewSamples(NamedTuple):
    """What :meth:`RingBuffer.read_since` returns: the samples written since a counter.

    Attributes
    ----------
    data : array, shape (n_new, n_channels)
        Copies of the new samples, oldest first.
    timestamps : array, shape (n_new,)
        Their timestamps.
    valid : array of bool, shape (n_new,)
        Their validity flags.
    next_counter : int
        Counter to pass to the next :meth:`RingBuffer.read_since` call.
    n_lost : int
        Samples written since the counter that were overwritten before they could be read (the
        reader fell more than the buffer's capacity behind); 0 normally.
    """

    data: np.ndarray
    timestamps: np.ndarray
    valid: np.ndarray
    next_counter: int
    n_lost: int


class RingBuffer:
    """Fixed-capacity circular buffer of ``(n_times, n_channels)`` samples with timestamps.

    Parameters
    ----------
    n_channels : int
        Number of channels (columns) of every sample.
    capacity : int
        Number of samples kept; older ones are overwritten.
    dtype : numpy dtype
        Data type of the samples (float32 by default).

    Notes
    -----
    Every sample ever written has a counter: sample ``k`` is the ``k``-th written since creation.
    :attr:`n_written` is the counter of the next sample. A reader that remembers the counter it
    reached calls :meth:`read_since` with it to get exactly the new samples.

    The sample array's pages are all mapped by the constructor (filled with zeros), so that no
    write faults a page in: the first pass through a lazily mapped 2-minute 306-channel buffer
    (147 MB) took ~36 k page faults on the writer's path, and on a virtual machine a fault on
    memory the guest had not touched lately also waits for the host (``bci-app bench`` measured
    ~10 ms per 250-sample write into fresh pages vs 0.1 ms into mapped ones). Mapping 147 MB
    took 0.02 s to 1.2 s of kernel time on the 2-core VM of docs/BENCHMARKS.md, depending on
    whether the host still backed the pages, and while it runs every memory operation of the
    process waits longer. So create the buffer before the data flows: ``StreamSource`` does so
    before it opens its inlet.
    """

    def __init__(self, n_channels: int, capacity: int, dtype: np.dtype | type = np.float32) -> None:
        if int(n_channels) != n_channels or n_channels < 1:
            raise ValueError(
                f"Invalid value for 'n_channels': {n_channels!r}; it must be a positive integer."
            )
        if int(capacity) != capacity or capacity < 1:
            raise ValueError(
                f"Invalid value for 'capacity': {capacity!r}; it must be a positive integer "
                "(number of samples kept)."
            )
        self._n_channels = int(n_channels)
        self._capacity = int(capacity)
        # Every page is mapped here, not on the writer's first pass (see the class notes).
        self._data = np.empty((self._capacity, self._n_channels), dtype=dtype)
        self._data.fill(0)  # releases the interpreter lock
        self._timestamps = np.zeros(self._capacity, dtype=np.float64)
        self._valid = np.zeros(self._capacity, dtype=bool)
        self._lock = threading.Lock()
        self._written = threading.Condition(self._lock)  # notified on every write
        self._n_written = 0

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return self._n_channels

    @property
    def capacity(self) -> int:
        """Number of samples the buffer holds."""
        return self._capacity

    @property
    def dtype(self) -> np.dtype:
        """Data type of the samples."""
        return self._data.dtype

    @property
    def n_written(self) -> int:
        """Total number of samples written since creation (counter of the next sample)."""
        with self._lock:
            return self._n_written

    def wait_for_new(self, counter: int, timeout: float) -> bool:
        """Wait until samples past ``counter`` are written, or ``timeout`` seconds pass.

        Returns whether there are such samples. A reader waits on this rather than sleeping
        between polls, so it wakes as soon as the writer has written.
        """
        with self._written:
            return self._written.wait_for(lambda: self._n_written > counter, timeout)

    @property
    def n_available(self) -> int:
        """Number of samples that can be read now (at most :attr:`capacity`)."""
        with self._lock:
            return min(self._n_written, self._capacity)

    def write(
        self, data: np.ndarray, timestamps: np.ndarray, valid: np.ndarray | None = None
    ) -> None:
        """Append a chunk of samples.

        Parameters
        ----------
        data : array, shape (n_samples, n_channels)
            The samples; cast to the buffer's dtype.
        timestamps : array, shape (n_samples,)
            Time of each sample in seconds.
        valid : array of bool, shape (n_samples,) | None
            Whether each sample is usable; by default, samples whose values are all finite.
        """
        data = np.asarray(data)
        timestamps = np.asarray(timestamps, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != self._n_channels:
            raise ValueError(
                f"Invalid value for 'data': expected shape (n_samples, {self._n_channels}), got "
                f"{data.shape}. Pass one row per sample and one column per channel."
            )
        n = data.shape[0]
        if timestamps.shape != (n,):
            raise ValueError(
                f"Invalid value for 'timestamps': expected shape ({n},) for {n} samples, got "
                f"{timestamps.shape}."
            )
        if valid is None:
            valid = np.isfinite(data).all(axis=1)
        else:
            valid = np.asarray(valid, dtype=bool)
            if valid.shape != (n,):
                raise ValueError(
                    f"Invalid value for 'valid': expected shape ({n},) for {n} samples, got "
                    f"{valid.shape}."
                )
        if n == 0:
            return
        skipped = max(0, n - self._capacity)  # a chunk longer than the buffer keeps its tail
        with self._lock:
            start = (self._n_written + skipped) % self._capacity
            self._copy_in(start, data[skipped:], timestamps[skipped:], valid[skipped:])
            self._n_written += n
            self._written.notify_all()

    def _copy_in(self, start: int, data: np.ndarray, ts: np.ndarray, valid: np.ndarray) -> None:
        """Copy a chunk no longer than the capacity into the arrays from slot ``start``."""
        first = min(data.shape[0], self._capacity - start)
        self._data[start : start + first] = data[:first]
        self._timestamps[start : start + first] = ts[:first]
        self._valid[start : start + first] = valid[:first]
        rest = data.shape[0] - first
        if rest:
            self._data[:rest] = data[first:]
            self._timestamps[:rest] = ts[first:]
            self._valid[:rest] = valid[first:]

    def _copy_out(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copy samples with counters ``start..stop-1`` (which must still be in the buffer)."""
        n = stop - start
        first_slot = start % self._capacity
        if first_slot + n <= self._capacity:
            sl = slice(first_slot, first_slot + n)
            return self._data[sl].copy(), self._timestamps[sl].copy(), self._valid[sl].copy()
        idx = np.r_[first_slot : self._capacity, 0 : first_slot + n - self._capacity]
        return self._data[idx], self._timestamps[idx], self._valid[idx]

    def read_since(self, counter: int, max_samples: int | None = None) -> NewSamples:
        """Return every sample written since ``counter`` (at most ``max_samples``, oldest first).

        Parameters
        ----------
        counter : int
            The ``next_counter`` of the previous call (0 on the first call).
        max_samples : int | None
            Return at most this many (the oldest; ``next_counter`` then points at the rest).
            A reader that has fallen behind reads in bounded pieces: each copy is a fresh
            array, and one of many megabytes costs its page faults every time (~10x per
            sample on a virtual machine), where a piece of ~1 MB reuses freed memory.

        Returns
        -------
        NewSamples
            ``data``, ``timestamps`` and ``valid`` of the new samples, the ``next_counter`` to
            pass next time, and ``n_lost``, the samples overwritten before they could be read.
        """
        counter = int(counter)
        if counter < 0:
            raise ValueError(
                f"Invalid value for 'counter': {counter}; it must be >= 0 (use the next_counter "
                "returned by the previous read_since call, or 0)."
            )
        with self._lock:
            end = self._n_written
        if counter > end:
            raise ValueError(
                f"Invalid value for 'counter': {counter} is ahead of the {end} samples written so "
                "far. Pass the next_counter returned by the previous read_since call."
            )
        start = max(counter, end - self._capacity)
        if max_samples is not None:
            if max_samples < 1:
                raise ValueError(
                    f"Invalid value for 'max_samples': {max_samples!r}; it must be >= 1 (or None)."
                )
            end = min(end, start + int(max_samples))
        data, ts, valid = self._copy_out(start, end)
        with self._lock:
            overwritten_below = self._n_written - self._capacity
        torn = max(0, overwritten_below - start)
        if torn:
            data, ts, valid = data[torn:], ts[torn:], valid[torn:]
        return NewSamples(data, ts, valid, end, (start - counter) + min(torn, end - start))

    def read_latest(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return copies of the ``n`` most recent samples (fewer if fewer were written).

        Parameters
        ----------
        n : int
            Number of samples, at most :attr:`capacity`.

        Returns
        -------
        data : array, shape (n_read, n_channels)
        timestamps : array, shape (n_read,)
        valid : array of bool, shape (n_read,)
        """
        if int(n) != n or n < 0 or n > self._capacity:
            raise ValueError(
                f"Invalid value for 'n': {n!r}; it must be an integer between 0 and the buffer "
                f"capacity {self._capacity}. Make the buffer larger to read more."
            )
        with self._lock:
            end = self._n_written
        start = max(0, end - int(n))
        data, ts, valid = self._copy_out(start, end)
        with self._lock:
            overwritten_below = self._n_written - self._capacity
        torn = max(0, overwritten_below - start)
        return data[torn:], ts[torn:], valid[torn:]

    def __repr__(self) -> str:
        return (
            f"<RingBuffer {self._n_channels} ch x {self._capacity} samples "
            f"({self._data.dtype}), {self.n_written} written>"
        )
