"""Online re-centering: robust-scaler statistics that follow the recent signal.

Brain signal statistics drift across days (electrode impedance, head position, amplifier gain);
the week-long intracranial study found a decoder's fixed calibration statistics go stale. A
:class:`~bci_app.processing.preprocessing.PreprocessConfig` whose ``recenter`` is a
:class:`RecenterConfig` builds a :class:`RecenteringScaler` in place of the fixed
:class:`~bci_app.processing.stages.RobustScaler`: it starts from the bundle's fitted median/IQR
and, every ``update_s`` seconds of stream, recomputes them over the last ``window_s`` seconds of
its input (decimated to ``history_hz`` so minutes of history cost little memory and a percentile
over them costs about a millisecond). Updates happen at fixed sample counts, so the output does
not depend on how the stream is chunked. Off by default (``recenter=None``): the config that
runs is the config a bundle stores, and :meth:`PreprocessConfig.with_recentering
<bci_app.processing.preprocessing.PreprocessConfig.with_recentering>` turns it on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from bci_app.processing.stages import Chunk, RobustScaler, Stage


@dataclass(frozen=True)
class RecenterConfig:
    """How the running statistics follow the signal.

    Parameters
    ----------
    window_s : float
        Seconds of recent signal the median and IQR are computed over.
    update_s : float
        Seconds of stream between two updates of the statistics.
    min_history_s : float
        Seconds of history needed before the first update (until then: the fitted statistics).
    history_hz : float
        Rate of the kept history (every n-th sample of the scaler's input).
    """

    window_s: float = 120.0
    update_s: float = 5.0
    min_history_s: float = 30.0
    history_hz: float = 10.0

    def __post_init__(self) -> None:
        for name in ("window_s", "update_s", "min_history_s", "history_hz"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(
                    f"Invalid value for '{name}': {value!r}; it must be a positive number of "
                    f"{'Hz' if name == 'history_hz' else 'seconds'}."
                )
        if self.min_history_s > self.window_s:
            raise ValueError(
                f"Invalid value for 'min_history_s': {self.min_history_s} s is longer than "
                f"'window_s' ({self.window_s} s); use min_history_s <= window_s."
            )

    def to_dict(self) -> dict:
        """JSON-friendly form (for bundles, logs and summaries)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RecenterConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"Invalid re-centering config: unknown keys {unknown}. Known keys: {sorted(known)}."
            )
        return cls(**d)


class RecenteringScaler(Stage):
    """Robust scaler whose median/IQR follow the last minutes of its input (module docstring).

    Parameters
    ----------
    center, scale : array
        Starting statistics (the bundle's fitted scaler), one value per channel.
    sfreq : float
        Rate of the samples this stage sees (the Preprocessor's output rate).
    config : RecenterConfig
        Window, update interval, history rate.
    """

    def __init__(
        self, center: np.ndarray, scale: np.ndarray, sfreq: float, config: RecenterConfig
    ) -> None:
        fixed = RobustScaler(center, scale)  # validates the starting statistics
        self.initial_center, self.initial_scale = fixed.center.copy(), fixed.scale.copy()
        if not (math.isfinite(sfreq) and sfreq > 0):
            raise ValueError(f"Invalid value for 'sfreq': {sfreq!r}; it must be a positive rate.")
        self.config = config
        self.decimate = max(1, round(sfreq / config.history_hz))
        self.update_every = max(1, round(config.update_s * sfreq))
        rate = sfreq / self.decimate
        self.capacity = max(2, round(config.window_s * rate))
        self.min_rows = max(2, min(self.capacity, round(config.min_history_s * rate)))
        self.reset()

    def reset(self) -> None:
        """Back to the fitted statistics with an empty history."""
        self.center, self.scale = self.initial_center.copy(), self.initial_scale.copy()
        self._history = np.empty((self.capacity, self.center.size), dtype=np.float64)
        self._n_rows = 0  # rows ever stored (ring position = n % capacity)
        self._n_seen = 0  # samples ever seen (for decimation and update points)
        self.n_updates = 0

    def _store(self, data: np.ndarray, valid: np.ndarray, first: int) -> None:
        """Keep every ``decimate``-th valid sample (global sample index ``first + i``)."""
        offset = (-first) % self.decimate
        rows = data[offset :: self.decimate][valid[offset :: self.decimate]]
        rows = rows[-self.capacity :]
        slots = (self._n_rows + np.arange(len(rows))) % self.capacity
        self._history[slots] = rows
        self._n_rows += len(rows)

    def _update(self) -> None:
        n = min(self._n_rows, self.capacity)
        if n < self.min_rows:
            return
        q25, center, q75 = np.percentile(self._history[:n], [25, 50, 75], axis=0)
        iqr = q75 - q25
        self.center = center
        self.scale = np.where(iqr > 0, iqr, self.initial_scale)
        self.n_updates += 1

    def _apply(self, chunk: Chunk) -> Chunk:
        if chunk.data.shape[1] != self.center.size:
            raise ValueError(
                f"Invalid chunk: the scaler was fitted on {self.center.size} channels but got "
                f"{chunk.data.shape[1]}."
            )
        out = np.empty(chunk.data.shape, dtype=np.float64)
        start, n = 0, chunk.data.shape[0]
        while start < n:
            # samples up to the next update point are scaled with the current statistics
            to_update = self.update_every - self._n_seen % self.update_every
            stop = min(n, start + to_update)
            piece = chunk.data[start:stop]
            out[start:stop] = (piece - self.center) / self.scale
            self._store(piece, chunk.valid[start:stop], self._n_seen)
            self._n_seen += stop - start
            if self._n_seen % self.update_every == 0:
                self._update()
            start = stop
        return Chunk(out, chunk.timestamps, chunk.valid)
