"""Fixed-size history of preprocessed samples (ring buffer) that the windowers cut windows from."""

from __future__ import annotations

import numpy as np


class SampleHistory:
    """The last ``capacity`` samples of a stream: data, timestamps and validity, preallocated.

    Samples are addressed by their absolute index since the first push (0, 1, 2, ...).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"Invalid value for 'capacity': {capacity}; use an integer >= 1.")
        self.capacity = int(capacity)
        self.reset()

    def reset(self) -> None:
        """Drop every sample; the next push starts again at index 0."""
        self._data: np.ndarray | None = None
        self._ts = np.zeros(self.capacity)
        self._valid = np.zeros(self.capacity, dtype=bool)
        self.n_total = 0

    @property
    def n_channels(self) -> int | None:
        """Channel count fixed by the first push (None before it)."""
        return None if self._data is None else self._data.shape[1]

    @property
    def oldest(self) -> int:
        """Absolute index of the oldest sample still held."""
        return max(0, self.n_total - self.capacity)

    @property
    def last_timestamp(self) -> float | None:
        """Timestamp of the newest sample (None when empty)."""
        return None if self.n_total == 0 else float(self._ts[(self.n_total - 1) % self.capacity])

    def push(self, data: np.ndarray, timestamps: np.ndarray, valid: np.ndarray) -> None:
        """Append ``n <= capacity`` samples, overwriting the oldest ones."""
        n = data.shape[0]
        if n > self.capacity:
            raise ValueError(f"Cannot push {n} samples into a history of {self.capacity}.")
        if self._data is None:
            self._data = np.zeros((self.capacity, data.shape[1]), dtype=np.float32)
        start = self.n_total % self.capacity
        first = min(n, self.capacity - start)
        for dest, src in ((self._data, data), (self._ts, timestamps), (self._valid, valid)):
            dest[start : start + first] = src[:first]
            dest[: n - first] = src[first:]
        self.n_total += n

    def timestamps(self) -> np.ndarray:
        """Timestamps of the held samples, oldest first (a copy)."""
        return self._ts[np.arange(self.oldest, self.n_total) % self.capacity]

    def gather(self, starts: np.ndarray, n_times: int) -> tuple[np.ndarray, ...]:
        """Return data ``(n, n_times, n_channels)``, timestamps and validity of ``n`` windows.

        ``starts`` are absolute indices; every window must lie within the held samples.
        """
        index = (np.asarray(starts)[:, None] + np.arange(n_times)[None, :]) % self.capacity
        return self._data[index], self._ts[index], self._valid[index]
