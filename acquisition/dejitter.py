"""Online timestamp dejitter and timestamp-jump detection for regular-rate LSL streams.

LSL stamps samples when they are pushed, so the timestamps of a regular stream carry the jitter
of the sender's scheduling (often milliseconds), and the sender's clock may run slightly off its
nominal rate. As LSL recommends, the time of sample ``k`` is modelled as a straight line
``t_k = a + b k`` fitted to the received timestamps; the fitted line is the dejittered time.

The fit is exponentially weighted least squares (equivalent to recursive least squares with a
forgetting factor ``lam = 0.5 ** (1 / (halftime * sfreq))`` per sample), updated once per chunk
in closed form from weighted sums, so the cost per chunk is a few vectorised numpy operations.
A weak prior pulls the slope towards the nominal ``1 / sfreq`` so the first samples after a reset
are usable; it is negligible once a second or so of data has arrived. The coordinates are rebased
on the newest sample after every chunk, which keeps the sums well conditioned over long runs.

The same model detects discontinuities: a sample whose timestamp departs from the prediction by
more than ``gap_periods`` sample periods plus a multiple of the measured jitter starts a jump
(samples missing, or the sender's clock stepped) or a backwards step, unless later chunks come
back to the line (the sender stamped some chunks late, which happens whenever its process is
descheduled between reading and pushing). Such chunks are held back until that is clear: back
on the line, or ``confirm_s`` on a shifted line (at most ``max_hold_s``). After a
discontinuity the model is reset, so the new segment is fitted on its own.

A sender that stalls and then pushes its backlog chunk after chunk, each stamped at its push
time, sends stamps that are late by up to the stall and that span only the few milliseconds
the burst took: every chunk steps back from the one before, and the stream is on its line only
after the last one. Held samples stamped late whose stamps span less than ``max_hold_s`` are
therefore held on (up to ``max_burst_s`` of samples): back on the line, they get their times on
it; continuing on another line (samples were lost as well), one gap is reported where they
begin and they are dated back from the new line.

liblsl's own ``proc_dejitter`` post-processing smooths over such jumps and cannot be reset from
Python on a reconnection, which is why the stream source runs this model instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Most discontinuities handled one by one inside a single chunk; beyond that the rest of the
#: chunk keeps its raw timestamps (a stream this broken is reported, not repaired).
_MAX_BREAKS_PER_CHUNK = 16


@dataclass(frozen=True)
class Gap:
    """A discontinuity in a stream.

    Attributes
    ----------
    start : float
        LSL time (seconds, local clock) at which the first missing sample was expected.
    duration : float
        Seconds of missing data; negative when timestamps stepped backwards.
    n_missing : int
        Number of samples missing (0 for a backwards step).
    kind : str
        ``"jump"`` (timestamps jumped forward), ``"backwards"`` (timestamps went back),
        ``"rate"`` (fewer samples arrived than the nominal rate implies), ``"outage"`` (the
        stream was lost and came back), ``"irregular"`` (too many jumps inside one chunk).
    """

    start: float
    duration: float
    n_missing: int
    kind: str


class Dejitter:
    """Online linear-regression dejitter of a regular stream's timestamps, chunk by chunk.

    Parameters
    ----------
    sfreq : float
        Nominal sampling rate in Hz (> 0).
    halftime : float
        Half-life of the exponential forgetting, in seconds of samples.
    prior_s : float
        Strength of the prior on the nominal slope, in seconds of data it is worth.
    gap_periods : float
        A timestamp more than this many sample periods (plus the jitter allowance) away from its
        predicted time is a discontinuity.
    jitter_k : float
        Jitter allowance, in multiples of the measured RMS jitter of the incoming timestamps.
    initial_jitter : float
        RMS jitter (seconds) assumed before any has been measured.
    confirm_s : float
        Seconds of samples that must sit on one shifted line before it counts as a gap.
    max_hold_s : float
        Longest run of off-line samples (seconds of samples) held back before it is judged a
        gap without further evidence; longer only for a run stamped late whose stamps span
        less than this (a backlog pushed in a burst).
    max_burst_s : float
        Longest run of such a burst (seconds of samples) held back.
    """

    def __init__(
        self,
        sfreq: float,
        *,
        halftime: float = 30.0,
        prior_s: float = 0.25,
        gap_periods: float = 1.5,
        jitter_k: float = 6.0,
        initial_jitter: float = 0.002,
        confirm_s: float = 0.1,
        max_hold_s: float = 0.25,
        max_burst_s: float = 10.0,
    ) -> None:
        if not np.isfinite(sfreq) or sfreq <= 0:
            raise ValueError(
                f"Invalid value for 'sfreq': {sfreq!r}; dejitter needs the nominal rate (> 0) of "
                "a regular stream. Irregular streams (markers) are not dejittered."
            )
        if halftime <= 0 or prior_s <= 0:
            raise ValueError(
                f"Invalid value for 'halftime' ({halftime}) or 'prior_s' ({prior_s}): both must "
                "be positive numbers of seconds."
            )
        self.sfreq = float(sfreq)
        self._period = 1.0 / self.sfreq
        self._lam = 0.5 ** (1.0 / (halftime * self.sfreq))
        n_prior = max(prior_s * self.sfreq, 1.0)
        self._prior = n_prior**3 / 3.0  # ~ sum of x**2 over n_prior samples
        self._gap_periods = float(gap_periods)
        self._jitter_k = float(jitter_k)
        self._jitter_var = float(initial_jitter) ** 2
        self._cache: dict[tuple[int, int], tuple] = {}
        self._held = np.zeros(0)
        self._confirm = max(2, int(confirm_s * self.sfreq))
        self._max_hold = max(self._confirm + 1, int(max_hold_s * self.sfreq))
        self._max_hold_s = float(max_hold_s)
        self._max_burst = max(self._max_hold, int(max_burst_s * self.sfreq))
        self.reset()

    def reset(self) -> None:
        """Forget the fitted line (after a gap or a reconnection); keep the jitter estimate.

        Held samples are kept: :meth:`flush` them first if they belong to the old segment.
        """
        self._sums = (0.0, 0.0, 0.0, 0.0, 0.0)  # S0, S1 (x), S2 (x^2), Sy, Sxy (rebased)
        self._a = 0.0
        self._b = self._period
        self._y0 = 0.0
        self._empty = True

    @property
    def slope(self) -> float:
        """Fitted seconds per sample (``1 / sfreq`` before any data)."""
        return self._b

    @property
    def jitter(self) -> float:
        """Measured RMS deviation (seconds) of raw timestamps from the fitted line."""
        return self._jitter_var**0.5

    @property
    def tolerance(self) -> float:
        """Largest deviation (seconds) from the prediction not reported as a discontinuity."""
        return self._gap_periods * self._period + self._jitter_k * self.jitter

    @property
    def n_held(self) -> int:
        """Number of samples held back, waiting for the next chunk to decide about them."""
        return self._held.shape[0]

    def process(self, timestamps: np.ndarray) -> tuple[np.ndarray, list[Gap]]:
        """Dejitter one chunk of raw timestamps and report the discontinuities in it.

        A chunk whose stamps leave the fitted line cannot be judged on its own: the sender may
        have stamped it late (jitter), or samples may be missing (a gap). It is held back until
        later chunks tell: back on the line, the held samples were late and get times on the
        line; ``confirm_s`` of samples on the shifted line of the first held sample, the line
        moved and a gap is reported where the held samples begin. Held samples come out first
        in a later call (or from :meth:`flush`).

        Parameters
        ----------
        timestamps : array, shape (n_samples,)
            Raw (clock-corrected) timestamps of consecutive samples.

        Returns
        -------
        dejittered : array, shape (n_out,)
            Fitted timestamps of the oldest ``n_out`` undecided samples (the held ones from
            before, then this chunk's), in order; ``n_out`` is ``n_samples`` unless samples
            are held.
        gaps : list of Gap
            Discontinuities found, oldest first.
        """
        new = np.asarray(timestamps, dtype=np.float64)
        held = self._held.shape[0]
        ts = np.concatenate([self._held, new]) if held else new
        self._held = ts[:0]
        out = np.empty_like(ts)
        gaps: list[Gap] = []
        pos = 0
        if held:
            resolved = self._resolve(ts, held, out, gaps) if new.size else None
            if resolved is None:
                self._held = ts
                return out[:0], gaps
            pos = resolved
        while pos < ts.shape[0]:
            if len(gaps) >= _MAX_BREAKS_PER_CHUNK:
                out[pos:] = ts[pos:]
                gaps.append(Gap(float(ts[pos]), float(ts[-1] - ts[pos]), 0, "irregular"))
                self.reset()
                pos = ts.shape[0]
                break
            stop = self._fit(ts, out, pos)
            if stop < ts.shape[0]:
                self._held = ts[stop:].copy()
                return out[:stop], gaps
            pos = stop
        return out, gaps

    def flush(self) -> tuple[np.ndarray, list[Gap]]:
        """Decide about held samples without waiting for more (the stream stopped or was lost).

        Nothing contradicts their stamps, so the line is taken to have moved: a gap is
        reported and they keep times fitted from their own stamps (a burst stamped late: dated
        back from its newest samples' line, the least late).
        """
        ts, self._held = self._held, self._held[:0]
        out = np.empty_like(ts)
        gaps: list[Gap] = []
        if ts.size:
            begin, late = self._newest_line(ts)
            pos = self._restart(ts, out, begin if late else 0, gaps)
            while pos < ts.shape[0]:  # not on one line: every step is a gap of its own
                if len(gaps) >= _MAX_BREAKS_PER_CHUNK:
                    out[pos:] = ts[pos:]
                    gaps.append(Gap(float(ts[pos]), float(ts[-1] - ts[pos]), 0, "irregular"))
                    self.reset()
                    break
                gaps.append(self._break(float(ts[pos])))
                pos = self._fit(ts, out, pos)
        return out, gaps

    def _predict(self, x: float) -> float:
        return self._y0 + self._a + self._b * x

    def _resolve(self, ts: np.ndarray, held: int, out: np.ndarray, gaps: list[Gap]) -> int | None:
        """Judge the held ``ts[:held]`` by what followed; return where to go on, or None.

        Back on the old line: the held samples were stamped late (by varying amounts while the
        sender caught up). Everything since the first held sample on one shifted line for at
        least ``confirm_s``: the line moved, a gap. Otherwise hold on, up to ``max_hold_s`` (a
        backlog stamped late in a burst: until its stamps span that long, at most
        ``max_burst_s``), then call it a gap: after a burst of late stamps, where the newest
        samples' line begins, and the late ones are dated back from that line.
        """
        tol = self.tolerance
        if abs(float(ts[held]) - self._predict(held + 1.0)) <= tol:
            return self._back_on_line(out, held)
        n = ts.shape[0]
        begin, late = self._newest_line(ts)
        if begin and late and abs(float(ts[begin]) - self._predict(begin + 1.0)) <= tol:
            return self._back_on_line(out, begin)  # caught up with the old line in this chunk
        if begin == 0 and n >= self._confirm:
            gaps.append(self._break(float(ts[0])))
            return 0
        lag = float(ts[0]) - self._predict(1.0)
        burst = lag > tol and float(ts[-1] - ts[0]) < self._max_hold_s and n < self._max_burst
        if n < self._max_hold or burst:
            return None
        if begin and late and n - begin >= self._confirm:
            # A late burst, then another line (samples were lost too): one gap where the burst
            # begins, and the burst dated back from the new line.
            return self._restart(ts, out, begin, gaps)
        gaps.append(self._break(float(ts[0])))
        return 0

    def _newest_line(self, ts: np.ndarray) -> tuple[int, bool]:
        """Where the line of the newest samples begins, and whether all before it are late.

        Stamps before it that are later than the line traced back (never earlier) are a backlog
        pushed in a burst after a stall, each chunk stamped when it was pushed.
        """
        n = ts.shape[0]
        resid = ts - (float(ts[-1]) - self._b * np.arange(n - 1.0, -1.0, -1.0))
        tol = self.tolerance
        off = np.flatnonzero(np.abs(resid) > tol)
        begin = int(off[-1]) + 1 if off.size else 0
        return begin, begin == 0 or float(resid[:begin].min()) >= -tol

    def _restart(self, ts: np.ndarray, out: np.ndarray, begin: int, gaps: list[Gap]) -> int:
        """Gap before ``ts[0]``; fit a new line from ``ts[begin]``, ``ts[:begin]`` dated back on it.

        Returns where the fit stopped (the first sample off the new line).
        """
        expected, slope = self._predict(1.0), self._b  # the sender's clock rate, as measured
        self.reset()
        start = None  # after a burst, where its samples lie, not on its first one (maybe late)
        if begin:
            start = float(np.median(ts[begin:] - slope * np.arange(ts.shape[0] - begin)))
        stop = self._fit(ts, out, begin, start)
        out[:begin] = out[begin] - slope * np.arange(begin, 0.0, -1.0)
        gaps.append(self._gap(expected, float(out[0]) if begin else float(ts[0])))
        return stop

    def _back_on_line(self, out: np.ndarray, n: int) -> int:
        """Put the first ``n`` (late) samples on the line; move the origin past them unfitted."""
        out[:n] = self._y0 + self._a + self._b * np.arange(1.0, n + 1.0)
        self._rebase(float(n))
        return n

    def _break(self, first: float) -> Gap:
        """Report the discontinuity before a sample stamped ``first`` and reset the line."""
        expected = self._predict(1.0)
        self.reset()
        return self._gap(expected, first)

    def _gap(self, expected: float, first: float) -> Gap:
        """The gap between the next sample expected at ``expected`` and one at ``first``."""
        jump = first - expected
        if jump > 0:
            return Gap(expected, jump, round(jump * self.sfreq), "jump")
        return Gap(expected, jump, 0, "backwards")

    def _fit(self, ts: np.ndarray, out: np.ndarray, pos: int, start: float | None = None) -> int:
        """Fit samples from ``pos`` up to the first one off the line; return its index.

        A new line starts at ``ts[pos]``, or at ``start`` if given.
        """
        if self._empty:
            self._y0 = float(ts[pos]) if start is None else start
        seg = ts[pos:] - self._y0
        first_x = 0 if self._empty else 1
        x = self._design(seg.shape[0], first_x)[0]
        resid = seg - (self._a + self._b * x)
        bad = np.flatnonzero(np.abs(resid) > self.tolerance)
        stop = int(bad[0]) if bad.size else seg.shape[0]
        if stop > 0:
            self._update(stop, first_x, seg[:stop])
            out[pos : pos + stop] = (self._y0 + self._a) + self._b * x[:stop]
            mean_sq = float(resid[:stop] @ resid[:stop]) / stop
            self._jitter_var = 0.95 * self._jitter_var + 0.05 * mean_sq
            self._rebase(float(x[stop - 1]))
        return pos + stop

    def _design(self, m: int, first_x: int) -> tuple:
        """Cached ``x``, weights ``w``, ``w * x``, their sums and ``lam ** m`` for m samples."""
        key = (m, first_x)
        cached = self._cache.get(key)
        if cached is None:
            x = np.arange(first_x, first_x + m, dtype=np.float64)
            w = self._lam ** np.arange(m - 1, -1, -1, dtype=np.float64)
            wx = w * x
            cached = (x, w, wx, float(w.sum()), float(wx.sum()), float(wx @ x), self._lam**m)
            if len(self._cache) > 512:
                self._cache.clear()
            self._cache[key] = cached
        return cached

    def _update(self, m: int, first_x: int, y: np.ndarray) -> None:
        """Add ``m`` samples (rebased ``x`` from ``first_x``, values ``y``) to the sums; refit."""
        _, w, wx, sw, swx, swxx, decay = self._design(m, first_x)
        s0, s1, s2, sy, sxy = self._sums
        s0 = s0 * decay + sw
        s1 = s1 * decay + swx
        s2 = s2 * decay + swxx
        sy = sy * decay + float(w @ y)
        sxy = sxy * decay + float(wx @ y)
        self._sums = (s0, s1, s2, sy, sxy)
        det = s0 * (s2 + self._prior) - s1 * s1
        self._b = (s0 * (sxy + self._prior * self._period) - s1 * sy) / det
        self._a = (sy - self._b * s1) / s0
        self._empty = False

    def _rebase(self, dx: float) -> None:
        """Move the origin to ``x = dx`` on the fitted line, so the newest sample sits at 0."""
        dy = self._a + self._b * dx
        s0, s1, s2, sy, sxy = self._sums
        self._sums = (
            s0,
            s1 - dx * s0,
            s2 - 2.0 * dx * s1 + dx * dx * s0,
            sy - dy * s0,
            sxy - dy * s1 - dx * sy + dx * dy * s0,
        )
        self._y0 += dy
        self._a = 0.0


#: Relative difference between a stream's effective and nominal rates above which the stream is
#: said not to send at its declared rate (a crystal is off by ppm; 2 % is a wrong setting, a
#: device dropping samples, or one sending twice).
RATE_TOLERANCE = 0.02


def rate_mismatch(rate: float, nominal: float, tolerance: float = RATE_TOLERANCE) -> str | None:
    """Say ``"effective rate X Hz, nominal Y Hz"`` when ``rate`` is off ``nominal``, else None."""
    if not (np.isfinite(rate) and rate > 0) or abs(rate / nominal - 1.0) <= tolerance:
        return None
    return f"effective rate {rate:.1f} Hz, nominal {nominal:g} Hz"


class RateMonitor:
    """Effective rate of a regular stream, and whether it is the rate the stream declares.

    The rate is the number of samples received per second of the stream's own (clock-corrected,
    not dejittered) timestamps, over windows of ``window_s``; ``confirm`` windows in a row off
    by more than ``tolerance`` in the same direction make a mismatch, as many within it clear
    it. Not the dejittered times: the fitted line follows whatever spacing the stamps have.
    Not the arrival times: a replay at 4x speed arrives faster than its stamps, rightly. A
    single forward or backward clock jump spoils one window only, so it is not a rate.

    Parameters
    ----------
    nominal : float
        The declared rate (Hz).
    window_s : float
        Seconds of timestamps per measurement.
    confirm : int
        Windows in a row that decide a mismatch (or its end).
    tolerance : float
        Relative difference allowed.
    """

    def __init__(
        self,
        nominal: float,
        *,
        window_s: float = 2.0,
        confirm: int = 3,
        tolerance: float = RATE_TOLERANCE,
    ) -> None:
        self.nominal, self.window_s = float(nominal), float(window_s)
        self.confirm, self.tolerance = int(confirm), float(tolerance)
        self.rate = float("nan")
        self.mismatch: str | None = None
        self.reset()

    def reset(self) -> None:
        """Start measuring afresh (a new connection); the last verdict is forgotten."""
        self._start: float | None = None
        self._count = 0
        self._streak = 0  # > 0: windows off upwards in a row, < 0: downwards
        self._ok = 0
        self.n_windows = 0
        self.mismatch = None

    @property
    def known(self) -> bool:
        """Whether enough windows were measured for a verdict."""
        return self.n_windows >= self.confirm

    def update(self, n: int, last: float) -> str | None:
        """Count ``n`` samples whose newest is stamped ``last``; return what changed, if anything.

        Returns ``"mismatch"`` when a mismatch is confirmed, ``"cleared"`` when it ends, else
        None.
        """
        if self._start is None or last < self._start:  # first chunk, or the clock went back
            self._start, self._count = last, 0
            return None
        self._count += n
        span = last - self._start
        if span < self.window_s:
            return None
        self.rate = self._count / span
        self._start, self._count = last, 0
        self.n_windows += 1
        off = rate_mismatch(self.rate, self.nominal, self.tolerance)
        if off is None:
            self._streak, self._ok = 0, self._ok + 1
            if self.mismatch is not None and self._ok >= self.confirm:
                self.mismatch = None
                return "cleared"
            return None
        up = self.rate > self.nominal
        self._ok = 0
        self._streak = (max(self._streak, 0) + 1) if up else (min(self._streak, 0) - 1)
        if self.mismatch is None and abs(self._streak) >= self.confirm:
            self.mismatch = off
            return "mismatch"
        if self.mismatch is not None:
            self.mismatch = off  # keep the words up to date with the latest measurement
        return None
