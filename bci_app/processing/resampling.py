"""Streaming rational-ratio resampler (polyphase FIR) that keeps its state between chunks.

``scipy.signal.resample_poly`` and ``upfirdn`` design and apply exactly this kind of filter, but
only to a whole signal: they have no way to carry the filter state and the output phase from one
chunk to the next. So this module designs the filter with ``scipy.signal.firwin`` (the same
Kaiser-windowed sinc as ``resample_poly``) and applies it itself: each output is one
matrix-vector product of its filter phase with the input rows under it (a strided view of the
buffer), for all channels at once, and only the outputs are computed.

Timestamps: output sample ``k`` sits on the (fractional) input position ``k * down / up``, as in
``resample_poly``, and carries the timestamp interpolated at that position. It becomes available
:attr:`StreamingResampler.delay_s` seconds after the input sample stamped ``t`` arrives. Samples
before the first input are the first input repeated (edge padding). Two anti-alias designs:

- ``"linear"``: the linear-phase sinc, centred on the output position. Its delay is compensated
  in the timestamps (an output stamped ``t`` holds the low-passed signal at ``t``, no phase
  shift), so the output waits for ``zeros`` output periods of future input (``delay_s``,
  ``resample_zeros / sfreq_out`` when downsampling: 100 ms for 1 kHz -> 50 Hz with 5 zeros).
- ``"minphase"``: the minimum-phase filter with the same magnitude response
  (``scipy.signal.minimum_phase(..., half=False)`` of the same sinc), applied causally: an output
  stamped ``t`` depends on input up to ``t`` only (up to ``t + (up - 1) / (up * sfreq_in)``, the
  next input sample, when ``up > 1``), so ``delay_s`` is 0 (0.67 ms for 1 kHz -> 120 Hz). Its
  group delay is *not* compensated, like the causal band-pass IIR's: a component at ``f`` shows
  up :meth:`StreamingResampler.group_delay_s` ``(f)`` after its time (for 1 kHz -> 50 Hz, 5
  zeros: about 31 ms at 1-5 Hz, 34 ms at 10 Hz, 57 ms at 20 Hz). Training and live decoding use
  the same filter (the bundle's ``preprocessing.anti_alias``), so a decoder learns that shift.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np
from numpy.lib.stride_tricks import as_strided
from scipy.signal import firwin, group_delay, minimum_phase

from bci_app.processing.stages import Chunk, Stage, empty_chunk

#: Largest ``up`` or ``down`` factor accepted (the filter has ``2 * zeros * max + 1`` taps).
MAX_RATIO_TERM = 100_000
#: Anti-alias designs (see the module docstring).
ANTI_ALIAS = ("linear", "minphase")


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


@functools.lru_cache(maxsize=16)
def _design(
    n_taps: int, factor: int, gain: int, window: str | tuple, anti_alias: str
) -> np.ndarray:
    """Anti-alias FIR at the upsampled rate (cached: a 1017.25 Hz minimum phase takes ~2 s)."""
    taps = firwin(n_taps, 1.0 / factor, window=window) * gain
    if anti_alias == "minphase":
        taps = minimum_phase(taps, method="homomorphic", half=False)
    taps.setflags(write=False)
    return taps


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
        The buffer holds ``block_in`` plus twice the filter's rows: at 512 it stays in the CPU
        caches (306 ch x 1 kHz -> 50 Hz: 2.2 MB, against 11 MB at 4096), and back-to-back
        preprocessing of 100 ms chunks ran 480-560x real time instead of 350-460x.
    anti_alias : {"linear", "minphase"}
        The linear-phase sinc (delay compensated in the timestamps) or its minimum-phase version
        (causal, no wait; group delay not compensated). See the module docstring.
    """

    def __init__(
        self,
        sfreq_in: float,
        sfreq_out: float,
        *,
        zeros: int = 10,
        window: str | tuple = ("kaiser", 5.0),
        block_in: int = 512,
        anti_alias: str = "linear",
    ) -> None:
        if int(zeros) != zeros or zeros < 1:
            raise ValueError(f"Invalid value for 'zeros': {zeros!r}; use an integer >= 1.")
        if anti_alias not in ANTI_ALIAS:
            raise ValueError(
                f"Invalid value for 'anti_alias': {anti_alias!r}; use one of {ANTI_ALIAS}."
            )
        self.sfreq_in, self.sfreq_out = float(sfreq_in), float(sfreq_out)
        self.up, self.down = rational_ratio(sfreq_in, sfreq_out)
        self.anti_alias = anti_alias
        half = int(zeros) * max(self.up, self.down)
        n_taps = 2 * half + 1
        window = tuple(window) if isinstance(window, list) else window  # hashable for the cache
        taps = _design(n_taps, max(self.up, self.down), self.up, window, anti_alias)
        # Tap index (at the upsampled rate) that falls on the output position: the centre of the
        # linear-phase sinc; for the causal filter, the newest input sample it may use (the next
        # input sample when the output position falls between two, so timestamps interpolate).
        self._lead = half if anti_alias == "linear" else self.up - 1
        self.n_taps = n_taps
        self._n_rows = math.ceil(n_taps / self.up)  # most input rows one output touches
        self._taps = np.concatenate([taps, [0.0]])  # index n_taps -> 0 (outside the filter)
        # Weights of output phase ph over its n_rows input rows, oldest first: tap index
        # ph + (n_rows - 1 - row) * up (past the filter's end: the appended 0).
        phase = np.arange(self.up)[:, None]
        tap = phase + (self._n_rows - 1 - np.arange(self._n_rows))[None, :] * self.up
        self._weights = self._taps[np.minimum(tap, n_taps)]
        self._block_in = int(block_in)
        self.reset()

    @property
    def delay_s(self) -> float:
        """Seconds between an input sample stamped ``t`` and the output stamped ``t``."""
        return self._lead / self.up / self.sfreq_in

    def group_delay_s(self, freqs: float | np.ndarray) -> np.ndarray:
        """Seconds by which a component at ``freqs`` (Hz) lags its timestamp in the output.

        0 for ``"linear"`` (compensated); the minimum-phase filter's group delay less the
        lead of ``delay_s`` for ``"minphase"``.
        """
        freqs = np.atleast_1d(np.asarray(freqs, dtype=float))
        fs_up = self.up * self.sfreq_in
        _, samples = group_delay((self._taps[:-1], [1.0]), w=freqs, fs=fs_up)
        return (samples - self._lead) / fs_up

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
        return (k * self.down + self._lead) // self.up

    def _emit(self) -> Chunk:
        n_in = self._buf_start + self._buf_len  # absolute count of input samples
        k_end = (n_in * self.up - 1 - self._lead) // self.down + 1
        if k_end <= self._k_next:
            return empty_chunk(self._buf.shape[1])
        ks = np.arange(self._k_next, k_end, dtype=np.int64)
        self._k_next = k_end
        out = np.empty((ks.size, self._buf.shape[1]))
        # Output k is one weighted sum of the n_rows input rows that end at its newest input.
        # Outputs k, k + up, k + 2 up, ... share their weights and start every ``down`` rows,
        # so each such class is one product (weights @ strided view of the buffer): a
        # matrix-vector product per output over contiguous rows, no wasted multiplications and
        # no copy. (A dense block matrix wastes half its products on zeros, and OpenBLAS
        # threads its larger products, which on 2 busy cores cost 25-40x the single-thread time.)
        row_step, col_step = self._buf.strides
        for p in range(min(self.up, ks.size)):
            k = int(ks[p])
            first = int(self._last_input(k)) - (self._n_rows - 1) - self._buf_start
            count = (ks.size - 1 - p) // self.up + 1
            rows = as_strided(  # (count, n_rows, channels): from rows first, first + down, ...
                self._buf[first:],
                shape=(count, self._n_rows, out.shape[1]),
                strides=(self.down * row_step, row_step, col_step),
                writeable=False,
            )
            weights = self._weights[(k * self.down + self._lead) % self.up]
            np.matmul(weights, rows, out=out[p :: self.up])
        return Chunk(out, self._output_times(ks), self._output_valid(ks))

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
        phase = (ks * self.down + self._lead) % self.up
        first = last - (self.n_taps - 1 - phase) // self.up
        first_row = np.maximum(first - self._buf_start, 0)
        return counts[last - self._buf_start + 1] == counts[first_row]
