"""Streaming rational-ratio resampler (polyphase FIR) that keeps its state between chunks.

``scipy.signal.resample_poly`` and ``upfirdn`` design and apply exactly this kind of filter, but
only to a whole signal: they have no way to carry the filter state and the output phase from one
chunk to the next. So this module designs the filter with ``scipy.signal.firwin`` (the same
Kaiser-windowed sinc as ``resample_poly``) and applies it itself, block by block, with matrix
products over all channels at once.

Alignment: output sample ``k`` is centred on the (fractional) input position ``k * down / up``,
as in ``resample_poly``, and carries the timestamp interpolated at that position. The filter is
linear-phase, so its delay is compensated in the timestamps: an output stamped ``t`` holds the
low-passed signal at ``t``, and becomes available :attr:`StreamingResampler.delay_s` seconds
after the input sample stamped ``t`` arrives (``resample_zeros / sfreq_out`` when
downsampling). Samples before the first input are the first input repeated (edge padding).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from scipy.signal import firwin

from bci_app.processing.stages import Chunk, Stage, empty_chunk

#: Largest ``up`` or ``down`` factor accepted (the filter has ``2 * zeros * max + 1`` taps).
MAX_RATIO_TERM = 100_000


def rational_ratio(sfreq_in: float, sfreq_out: float) -> tuple[int, int]:
    """Return the smallest integers ``(up, down)`` with ``sfreq_out / sfreq_in == up / down``.

    The rates are read as the decimals they print as (1017.25 Hz -> 4069/4), so
    ``rational_ratio(1017.25, 50.0) == (200, 4069)``.
    """
    for name, value in (("sfreq_in", sfreq_in), ("sfreq_out", sfreq_out)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"Invalid value for '{name}': {value!r}; it must be a positive rate.")
    ratio = Fraction(repr(float(sfreq_out))) / Fraction(repr(float(sfreq_in)))
    up, down = ratio.numerator, ratio.denominator
    if max(up, down) > MAX_RATIO_TERM:
        raise ValueError(
            f"Invalid value for 'sfreq_out': resampling {sfreq_in} Hz to {sfreq_out} Hz needs the "
            f"ratio {up}/{down}, whose terms exceed {MAX_RATIO_TERM} (the filter would be too "
            f"long). Round 'sfreq_in' to the rate the device nominally runs at (for example "
            f"{round(sfreq_in, 2)} Hz)."
        )
    return up, down


class StreamingResampler(Stage):
    """Resample a chunked multichannel stream by a rational ratio, causally and with state.

    Parameters
    ----------
    sfreq_in, sfreq_out : float
        Input and output rates in Hz; their ratio is made exact with :func:`rational_ratio`.
    zeros : int
        Zero crossings of the anti-alias sinc on each side of its centre (``resample_poly``
        uses 10). The filter has ``2 * zeros * max(up, down) + 1`` taps at the upsampled rate;
        fewer zeros shorten the delay and widen the transition band.
    window : str | tuple
        ``firwin`` window of the anti-alias filter.
    block_in : int
        Input samples handled per step; larger chunks are split (results do not depend on it).
    """

    def __init__(
        self,
        sfreq_in: float,
        sfreq_out: float,
        *,
        zeros: int = 10,
        window: str | tuple = ("kaiser", 5.0),
        block_in: int = 4096,
    ) -> None:
        if int(zeros) != zeros or zeros < 1:
            raise ValueError(f"Invalid value for 'zeros': {zeros!r}; use an integer >= 1.")
        self.sfreq_in, self.sfreq_out = float(sfreq_in), float(sfreq_out)
        self.up, self.down = rational_ratio(sfreq_in, sfreq_out)
        self._half = int(zeros) * max(self.up, self.down)
        n_taps = 2 * self._half + 1
        taps = firwin(n_taps, 1.0 / max(self.up, self.down), window=window) * self.up
        self.n_taps = n_taps
        self._n_rows = math.ceil(n_taps / self.up)  # most input rows one output touches
        self._taps = np.concatenate([taps, [0.0]])  # index n_taps -> 0 (outside the filter)
        self._block_out = max(1, math.ceil(self._n_rows * self.up / self.down))
        self._block_in = int(block_in)
        self._matrices: dict[tuple[int, int], np.ndarray] = {}
        self.reset()

    @property
    def delay_s(self) -> float:
        """Seconds between an input sample stamped ``t`` and the output stamped ``t``."""
        return self._half / self.up / self.sfreq_in

    @property
    def taps(self) -> np.ndarray:
        """The anti-alias FIR at the upsampled rate (gain ``up``), for inspection."""
        return self._taps[:-1].copy()

    def reset(self) -> None:
        """Forget all samples seen so far; the next chunk starts a new stream."""
        self._buf: np.ndarray | None = None
        self._tbuf = np.zeros(0)
        self._bad = np.zeros(0, dtype=bool)
        self._buf_start = 0  # absolute input index of row 0 of the buffer
        self._buf_len = 0
        self._k_next = 0  # next output sample to produce

    def _apply(self, chunk: Chunk) -> Chunk:
        """Push one chunk; return the output samples it completes (possibly none).

        An output sample is invalid when any input sample under its filter support is invalid.
        """
        data, timestamps, valid = chunk
        if self._buf is None and data.shape[0]:
            self._start(data, timestamps)
        if self._buf is None or data.shape[0] == 0:
            return empty_chunk(data.shape[1] if self._buf is None else self._buf.shape[1])
        pieces = []
        for start in range(0, data.shape[0], self._block_in):
            stop = start + self._block_in
            self._append(data[start:stop], timestamps[start:stop], valid[start:stop])
            pieces.append(self._emit())
        if len(pieces) == 1:
            return pieces[0]
        return Chunk(*(np.concatenate(parts) for parts in zip(*pieces)))

    def _start(self, data: np.ndarray, timestamps: np.ndarray) -> None:
        pad = self._n_rows - 1
        cap = pad + self._block_in + self._n_rows
        self._buf = np.empty((cap, data.shape[1]))
        self._tbuf = np.empty(cap)
        self._bad = np.zeros(cap, dtype=bool)
        self._buf[:pad] = data[0]
        self._tbuf[:pad] = timestamps[0] - np.arange(pad, 0, -1) / self.sfreq_in
        self._buf_start, self._buf_len = -pad, pad

    def _append(self, data: np.ndarray, timestamps: np.ndarray, valid: np.ndarray) -> None:
        n = data.shape[0]
        if self._buf_len + n > self._buf.shape[0]:
            keep_from = self._last_input(self._k_next) - (self._n_rows - 1)
            drop = min(keep_from - self._buf_start, self._buf_len)
            kept = self._buf_len - drop
            self._buf[:kept] = self._buf[drop : self._buf_len]
            self._tbuf[:kept] = self._tbuf[drop : self._buf_len]
            self._bad[:kept] = self._bad[drop : self._buf_len]
            self._buf_start += drop
            self._buf_len = kept
        end = self._buf_len + n
        self._buf[self._buf_len : end] = data
        self._tbuf[self._buf_len : end] = timestamps
        self._bad[self._buf_len : end] = ~valid
        self._buf_len = end

    def _last_input(self, k: int | np.ndarray) -> int | np.ndarray:
        """Absolute index of the newest input sample that output ``k`` needs."""
        return (k * self.down + self._half) // self.up

    def _emit(self) -> Chunk:
        n_in = self._buf_start + self._buf_len  # absolute count of input samples
        k_end = (n_in * self.up - 1 - self._half) // self.down + 1
        if k_end <= self._k_next:
            return empty_chunk(self._buf.shape[1])
        ks = np.arange(self._k_next, k_end, dtype=np.int64)
        self._k_next = k_end
        blocks = []
        for b in range(0, ks.size, self._block_out):
            k_first = int(ks[b])
            k_last = int(ks[min(b + self._block_out, ks.size) - 1])
            first = self._last_input(k_first) - (self._n_rows - 1) - self._buf_start
            last = self._last_input(k_last) - self._buf_start
            matrix = self._matrix(k_first, k_last - k_first + 1, last - first + 1)
            blocks.append(matrix @ self._buf[first : last + 1])
        out = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
        return Chunk(out, self._output_times(ks), self._output_valid(ks))

    def _matrix(self, k_first: int, n_out: int, n_rows: int) -> np.ndarray:
        """Filter weights mapping ``n_rows`` buffered input rows to ``n_out`` outputs."""
        key = (k_first % self.up, n_out)
        matrix = self._matrices.get(key)
        if matrix is None:
            ks = k_first + np.arange(n_out, dtype=np.int64)
            first_row = self._last_input(k_first) - (self._n_rows - 1)
            # Tap index linking output k and input row n: k * down + half - n * up.
            tap = (ks * self.down + self._half - first_row * self.up)[:, None] - (
                np.arange(n_rows, dtype=np.int64) * self.up
            )[None, :]
            tap[(tap < 0) | (tap >= self.n_taps)] = self.n_taps
            matrix = self._taps[tap]
            if len(self._matrices) >= 64:
                self._matrices.clear()
            self._matrices[key] = matrix
        return matrix

    def _output_times(self, ks: np.ndarray) -> np.ndarray:
        """Timestamps interpolated at the input positions ``k * down / up``."""
        pos = ks * self.down
        if self.up == 1:
            return self._tbuf[pos - self._buf_start]
        row = pos // self.up
        frac = (pos - row * self.up) / self.up
        row -= self._buf_start
        t0 = self._tbuf[row]
        return t0 + frac * (self._tbuf[np.minimum(row + 1, self._buf_len - 1)] - t0)

    def _output_valid(self, ks: np.ndarray) -> np.ndarray:
        bad = self._bad[: self._buf_len]
        if not bad.any():
            return np.ones(ks.size, dtype=bool)
        counts = np.concatenate([[0], np.cumsum(bad)])
        last = self._last_input(ks)
        phase = (ks * self.down + self._half) % self.up
        first = last - (self.n_taps - 1 - phase) // self.up
        first_row = np.maximum(first - self._buf_start, 0)
        return counts[last - self._buf_start + 1] == counts[first_row]
