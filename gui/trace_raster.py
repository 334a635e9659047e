"""Display decimation for the scope: min/max columns and their rasterisation to a pixel image.

The scope shows a page of channels stacked (or every channel of a type overlaid in one row), at
the pixel width of the screen. Drawing 306 polylines of a few thousand points each through
QPainter takes longer than a frame, so the traces are drawn here with numpy instead: each
channel's samples are reduced to one (min, max) pair per pixel column (:class:`ColumnDecimator`,
updated incrementally as samples arrive), and each pair becomes a vertical run of pixels joined to
the neighbouring column (:func:`rasterize_traces`). The cost depends on the number of pixels, not
on the sampling rate. This is display code only: nothing here filters or alters the signal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ColumnDecimator:
    """Min and max of consecutive blocks of samples, for the most recent ``n_columns`` blocks.

    Parameters
    ----------
    n_channels : int
        Channels per sample.
    n_columns : int
        Columns kept (a ring; the oldest are overwritten).
    samples_per_column : int
        Samples reduced into one column.

    Notes
    -----
    Pushing samples in chunks of any size gives the same columns as pushing them at once.
    """

    def __init__(self, n_channels: int, n_columns: int, samples_per_column: int) -> None:
        for name, value in (
            ("n_channels", n_channels),
            ("n_columns", n_columns),
            ("samples_per_column", samples_per_column),
        ):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"Invalid value for {name!r}: {value!r}; it must be an int >= 1.")
        self.n_channels = int(n_channels)
        self.n_columns = int(n_columns)
        self.samples_per_column = int(samples_per_column)
        self._min = np.full((self.n_columns, self.n_channels), np.nan, dtype=np.float32)
        self._max = np.full((self.n_columns, self.n_channels), np.nan, dtype=np.float32)
        self._t = np.full(self.n_columns, np.nan)
        self._pending = np.empty((self.samples_per_column, self.n_channels), dtype=np.float32)
        self._pending_t = np.empty(self.samples_per_column)
        self._n_pending = 0
        self.n_total = 0  # columns completed since creation

    def push(self, data: np.ndarray, timestamps: np.ndarray) -> int:
        """Add samples ``(n, n_channels)`` with their times; return the columns completed."""
        data = np.asarray(data, dtype=np.float32)
        timestamps = np.asarray(timestamps, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != self.n_channels:
            raise ValueError(
                f"Invalid value for 'data': expected shape (n, {self.n_channels}), got "
                f"{data.shape}."
            )
        spc, done = self.samples_per_column, 0
        if self._n_pending:
            take = min(spc - self._n_pending, data.shape[0])
            self._pending[self._n_pending : self._n_pending + take] = data[:take]
            self._pending_t[self._n_pending : self._n_pending + take] = timestamps[:take]
            self._n_pending += take
            data, timestamps = data[take:], timestamps[take:]
            if self._n_pending == spc:
                self._store(self._pending[None], self._pending_t[:1])
                self._n_pending, done = 0, 1
        n_full = data.shape[0] // spc
        if n_full:
            blocks = data[: n_full * spc].reshape(n_full, spc, self.n_channels)
            self._store(blocks, timestamps[: n_full * spc : spc])
            done += n_full
        rest = data.shape[0] - n_full * spc
        if rest:
            self._pending[:rest] = data[n_full * spc :]
            self._pending_t[:rest] = timestamps[n_full * spc :]
            self._n_pending = rest
        return done

    def _store(self, blocks: np.ndarray, first_times: np.ndarray) -> None:
        """Write the min/max of ``blocks`` (n, spc, n_channels) as the newest columns."""
        blocks = blocks[-self.n_columns :]
        first_times = first_times[-self.n_columns :]
        n = blocks.shape[0]
        slots = (self.n_total + np.arange(n)) % self.n_columns
        self._min[slots] = blocks.min(axis=1)
        self._max[slots] = blocks.max(axis=1)
        self._t[slots] = first_times
        self.n_total += n

    @property
    def n_kept(self) -> int:
        """Number of columns held (at most ``n_columns``)."""
        return min(self.n_total, self.n_columns)

    def slots(self, n: int) -> np.ndarray:
        """Ring positions of the newest ``n`` columns, oldest first."""
        n = min(n, self.n_kept)
        return (self.n_total - n + np.arange(n)) % self.n_columns

    def times(self) -> np.ndarray:
        """Timestamps of the first sample of every kept column, oldest first."""
        return self._t[self.slots(self.n_kept)]

    def between(self, first: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Return copies of ``(mins, maxs)`` of columns ``first`` to ``stop`` (excluded).

        Columns are numbered from the first one ever completed; those no longer kept are left
        out.
        """
        first = max(first, self.n_total - self.n_kept)
        order = np.arange(first, max(first, min(stop, self.n_total))) % self.n_columns
        return self._min[order], self._max[order]

    def columns(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return copies of ``(mins, maxs, times)`` of the newest ``n`` columns (all kept: None).

        Oldest first. ``mins`` and ``maxs`` have shape ``(n, n_channels)`` (NaN where a sample was
        NaN); ``times`` holds the timestamp of each column's first sample.
        """
        order = self.slots(self.n_kept if n is None else n)
        return self._min[order], self._max[order], self._t[order]


def rasterize_traces(
    mins: np.ndarray,
    maxs: np.ndarray,
    *,
    baseline: np.ndarray,
    gain: np.ndarray,
    centers: np.ndarray,
    clip: float,
    height: int,
    labels: np.ndarray,
) -> np.ndarray:
    """Draw min/max columns of stacked channels into an image of colour labels.

    Parameters
    ----------
    mins, maxs : array, shape (n_columns, n_channels)
        Per-column extremes of each displayed channel (NaN: nothing drawn).
    baseline : array, shape (n_channels,)
        Value drawn at each channel's centre line.
    gain : array, shape (n_channels,)
        Pixels per unit of each channel (positive values go up).
    centers : array, shape (n_channels,)
        Pixel row of each channel's centre line (0 at the top).
    clip : float
        Largest excursion from the centre line drawn, in pixels.
    height : int
        Image height in pixels.
    labels : array of uint8, shape (n_channels,)
        Colour label (>= 1) of each channel; 0 is the background.

    Returns
    -------
    image : array of uint8, shape (height, n_columns)
        The label of a channel wherever its trace passes, 0 elsewhere. Each column's run of
        pixels reaches the neighbouring column's run, so a trace stays connected.
    """
    n_cols = mins.shape[0]
    image = np.zeros((height, n_cols), dtype=np.uint8)
    if n_cols == 0 or mins.shape[1] == 0:
        return image
    top = centers - (maxs - baseline) * gain  # pixel rows grow downwards
    bottom = centers - (mins - baseline) * gain
    missing = ~(np.isfinite(top) & np.isfinite(bottom))
    # Join each column to the previous one (NaN-safe: fmin/fmax ignore a missing neighbour).
    prev_top = np.vstack([top[:1], top[:-1]])
    prev_bottom = np.vstack([bottom[:1], bottom[:-1]])
    top, bottom = np.fmin(top, prev_bottom), np.fmax(bottom, prev_top)
    top = np.clip(np.nan_to_num(top), centers - clip, centers + clip)
    bottom = np.clip(np.nan_to_num(bottom), centers - clip, centers + clip)
    top = np.clip(np.floor(top), 0, height - 1).astype(np.int64)
    bottom = np.clip(np.floor(bottom), 0, height - 1).astype(np.int64)
    top[missing] = bottom[missing] = height  # a run below the image: draws nothing
    cols = np.arange(n_cols)[:, None]
    size = (height + 2) * n_cols
    for label in np.unique(labels):
        group = labels == label
        starts = (top[:, group] * n_cols + cols).ravel()
        stops = ((bottom[:, group] + 1) * n_cols + cols).ravel()
        runs = np.bincount(starts, minlength=size) - np.bincount(stops, minlength=size)
        covered = np.cumsum(runs.reshape(height + 2, n_cols)[:height], axis=0) > 0
        image[covered] = label
    return image


class TraceImage:
    """The scope's image of a :class:`ColumnDecimator`, redrawn only where columns are new.

    A full redraw (after :meth:`invalidate`, or when the columns or the image size change) fixes
    each channel's baseline at the mean of the columns on screen; afterwards only new columns are
    drawn, into a ring of image columns that mirrors the decimator's. When a channel's recent
    mean drifts more than half a row from its baseline, the baselines are measured again at once
    (new columns use them) and the columns already drawn are redrawn over the next frames, newest
    first, at most ``redraw_budget`` channel-columns per frame: a drift never costs one long frame
    (a full redraw of 306 channels x 1400 columns takes ~60 ms, four 60 fps frames).

    Parameters
    ----------
    redraw_budget : int
        Channel-columns (columns x channels drawn) redrawn per :meth:`update` after a drift.
    """

    def __init__(self, redraw_budget: int = 40_000) -> None:
        self._ring = np.zeros((1, 1), dtype=np.uint8)
        self._decimator: ColumnDecimator | None = None
        self._drawn_upto = 0
        self._checked_upto = 0
        self._stale = True
        self._redo = (0, 0)  # absolute columns [lo, hi) still drawn with the old baselines
        self.redraw_budget = int(redraw_budget)
        self.baseline = np.zeros(0)
        self.n_full_redraws = 0
        self.n_rebaselines = 0

    def invalidate(self) -> None:
        """Redraw everything at the next :meth:`update` (gain, channels or size changed)."""
        self._stale = True

    def update(
        self,
        decimator: ColumnDecimator,
        picks: np.ndarray,
        *,
        gain: np.ndarray,
        row_px: float,
        height: int,
        labels: np.ndarray,
        rows: np.ndarray | None = None,
        clip_rows: float = 2.0,
    ) -> np.ndarray:
        """Draw what is new and return the image of the kept columns, oldest first.

        ``picks`` are the channels drawn, ``gain`` their pixels per unit, ``row_px`` the height
        of a row, ``labels`` their colour labels and ``rows`` the row of each (0 at the top;
        None: one row each, top to bottom). Channels sharing a row are overlaid (butterfly).
        Excursions are clipped at ``clip_rows`` rows from a channel's centre line.
        """
        rows = np.arange(picks.size) if rows is None else rows
        args = {
            "gain": gain,
            "centers": (rows + 0.5) * row_px,
            "clip": max(clip_rows * row_px, 3.0),
            "height": height,
            "labels": labels,
        }
        n_columns = decimator.n_columns
        if (
            self._stale
            or decimator is not self._decimator
            or self._ring.shape != (height, n_columns)
            or self.baseline.size != picks.size
        ):
            self._redraw(decimator, picks, args)
        else:
            if decimator.n_total > self._drawn_upto:
                new = min(decimator.n_total - self._drawn_upto, n_columns)
                self._draw_columns(decimator, picks, args, decimator.n_total - new, new)
                self._drawn_upto = decimator.n_total
                self._check_drift(decimator, picks, gain, row_px)
            self._redraw_some(decimator, picks, args)
        n_kept = decimator.n_kept
        if n_kept < n_columns:
            return self._ring[:, :n_kept].copy()
        seam = decimator.n_total % n_columns
        return np.concatenate([self._ring[:, seam:], self._ring[:, :seam]], axis=1)

    def _draw_columns(
        self, decimator: ColumnDecimator, picks: np.ndarray, args: dict, first: int, n: int
    ) -> None:
        """Draw ``n`` columns from absolute column ``first`` into the ring, with the baselines."""
        mins, maxs = decimator.between(first - 1, first + n)  # one more: joined to the previous
        image = rasterize_traces(mins[:, picks], maxs[:, picks], baseline=self.baseline, **args)
        slots = (first + np.arange(n)) % decimator.n_columns
        self._ring[:, slots] = image[:, -n:]

    def _redraw_some(self, decimator: ColumnDecimator, picks: np.ndarray, args: dict) -> None:
        """Redraw the newest columns left from before a re-baselining, within the budget."""
        lo, hi = self._redo
        lo = max(lo, decimator.n_total - decimator.n_kept)  # older ones scrolled away
        if hi <= lo:
            self._redo = (0, 0)
            return
        n = min(hi - lo, max(1, self.redraw_budget // max(picks.size, 1)))
        self._draw_columns(decimator, picks, args, hi - n, n)
        self._redo = (lo, hi - n)

    def _redraw(self, decimator: ColumnDecimator, picks: np.ndarray, args: dict) -> None:
        mins, maxs, _ = decimator.columns()
        mins, maxs = mins[:, picks], maxs[:, picks]
        self.baseline = _finite_mean((mins + maxs) / 2)
        self._ring = np.zeros((args["height"], decimator.n_columns), dtype=np.uint8)
        if mins.shape[0]:
            image = rasterize_traces(mins, maxs, baseline=self.baseline, **args)
            self._ring[:, decimator.slots(mins.shape[0])] = image
        self._decimator = decimator
        self._drawn_upto = self._checked_upto = decimator.n_total
        self._stale = False
        self._redo = (0, 0)
        self.n_full_redraws += 1

    def _check_drift(self, decimator, picks, gain, row_px) -> None:
        """Re-baseline when a channel's recent mean left its row (checked every 5 % of the width).

        The new baselines apply to the columns drawn from now on; those drawn before are redrawn
        by :meth:`_redraw_some` over the next updates.
        """
        window = max(1, decimator.n_columns // 20)
        if decimator.n_total - self._checked_upto < window:
            return
        self._checked_upto = decimator.n_total
        mins, maxs, _ = decimator.columns(window)
        recent = _finite_mean((mins[:, picks] + maxs[:, picks]) / 2)
        if not (np.abs(recent - self.baseline) * gain > 0.5 * row_px).any():
            return
        mins, maxs, _ = decimator.columns()
        self.baseline = _finite_mean((mins[:, picks] + maxs[:, picks]) / 2)
        self._redo = (decimator.n_total - decimator.n_kept, decimator.n_total)
        self.n_rebaselines += 1


def typical_ranges(mins: np.ndarray, maxs: np.ndarray, types: Sequence[str]) -> dict[str, float]:
    """Typical envelope of each channel type.

    The median over its channels of the span from the 10th percentile of their column minima to
    the 90th of their maxima.

    ``mins`` and ``maxs`` are ``(n_columns, n_channels)``, ``types`` the type of each channel.
    Empty when fewer than 10 columns are complete (finite for every channel).
    """
    finite = np.isfinite(mins).all(axis=1) & np.isfinite(maxs).all(axis=1)
    if finite.sum() < 10:
        return {}
    spread = np.percentile(maxs[finite], 90, axis=0) - np.percentile(mins[finite], 10, axis=0)
    types = np.asarray(types)
    ranges = {}
    for ch_type in np.unique(types):
        typical = float(np.median(spread[types == ch_type]))
        ranges[str(ch_type)] = typical if typical > 0 else 1.0
    return ranges


def _finite_mean(values: np.ndarray) -> np.ndarray:
    """Mean over axis 0 ignoring NaN (0 where a channel has no finite value), without warnings."""
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=0)
    return total / np.maximum(finite.sum(axis=0), 1)
