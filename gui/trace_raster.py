"""Display decimation for the scope: min/max columns and their rasterisation to a pixel image.

The scope shows a page of channels stacked (or every channel of a type overlaid in one row), at
the pixel width of the screen. Drawing 306 polylines of a few thousand points each through
QPainter takes longer than a frame, so the traces are drawn here with numpy instead: each
channel's samples are reduced to one (min, max) pair per pixel column (:class:`ColumnDecimator`,
updated incrementally as samples arrive), and each pair becomes a vertical run of pixels joined to
the neighbouring column (:func:`rasterize_traces`). The cost depends on the number of pixels, not
on the sampling rate. :class:`DevicePixels` colours that image into the premultiplied ARGB
pixels the scope paints, at the device size, converting only the columns drawn since the last
frame. This is display code only: nothing here filters or alters the signal.
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
    for label in np.unique(labels):  # ascending: a higher label is drawn over a lower one
        group = labels == label
        _fill_runs(image, top[:, group], bottom[:, group], label)
    return image


def _fill_runs(image: np.ndarray, top: np.ndarray, bottom: np.ndarray, label: int) -> None:
    """Set ``label`` in rows ``top`` to ``bottom`` (included) of each column; top = height: none.

    ``top`` and ``bottom`` are ``(n_columns, n_channels)``. The pixels of the runs are indexed one
    by one (~3-9 ns each) when they are fewer than the image's; otherwise the runs are counted
    over the whole image (:func:`_fill_area`, ~7 ns per pixel of the image whatever the runs). A
    page of 25 channels x 1400 columns covers ~0.2 M of its 1.1 M pixels: ~2 ms one by one, ~8
    over the image; an overlay of 150 channels in one row covers many pixels several times, and
    is cheaper over the image. Both give the same image.
    """
    height, n_cols = image.shape
    lengths = bottom - top + 1
    lengths[top >= height] = 0  # missing
    n_pixels = int(lengths.sum())
    if n_pixels <= image.size and (lengths >= 0).all():
        lengths = lengths.ravel()
        firsts = (top * n_cols + np.arange(n_cols)[:, None]).ravel()
        before = np.cumsum(lengths) - lengths  # pixels of the runs before each run
        flat = np.repeat(firsts - before * n_cols, lengths) + np.arange(n_pixels) * n_cols
        image.reshape(-1)[flat] = label
    else:
        _fill_area(image, top, bottom, label)


def _fill_area(image: np.ndarray, top: np.ndarray, bottom: np.ndarray, label: int) -> None:
    """:func:`_fill_runs` by counting the runs that start and end at each pixel of the image.

    A block of 64 columns at a time: the int64 counts of the whole image (~9 MB at full screen)
    would miss the caches, ~3x slower.
    """
    height = image.shape[0]
    for first in range(0, image.shape[1], 64):
        block = image[:, first : first + 64]
        n_cols = block.shape[1]
        cols = np.arange(n_cols)[:, None]
        size = (height + 2) * n_cols
        starts = (top[first : first + 64] * n_cols + cols).ravel()
        stops = ((bottom[first : first + 64] + 1) * n_cols + cols).ravel()
        runs = np.bincount(starts, minlength=size) - np.bincount(stops, minlength=size)
        block[np.cumsum(runs.reshape(height + 2, n_cols)[:height], axis=0) > 0] = label


class TraceImage:
    """The scope's image of a :class:`ColumnDecimator`, redrawn only where columns are new.

    A full redraw (after :meth:`invalidate`, or when the columns or the image size change) fixes
    each channel's baseline at the mean of the columns on screen; afterwards only new columns are
    drawn, into a ring of image columns that mirrors the decimator's (:attr:`ring`; which of its
    columns were drawn since a given moment: :meth:`drawn_since`). When a channel's recent
    mean drifts more than half a row from its baseline, the baselines are measured again at once
    (new columns use them) and the columns already drawn are redrawn over the next frames, newest
    first, at most ``redraw_budget`` channel-columns and ``redraw_pixels`` pixels per frame: a
    drift never costs one long frame (a full redraw of 306 channels x 1400 columns takes ~20 ms,
    of a page of 25 channels ~5 ms, plus ~2 ms to colour it, and a drifting recording
    re-baselines every few seconds).

    Parameters
    ----------
    redraw_budget : int
        Channel-columns (columns x channels drawn) redrawn per :meth:`update` after a drift.
        16 000 is ~2.5 ms of drawing: 52 columns of 306 channels a frame, so the old columns of
        a full-screen view are redrawn over ~27 frames (0.9 s at 30 fps). At 40 000 the
        306-channel view's frame p99 was 15.1-15.3 ms against 14.1-14.5 ms
        (``scripts/bench_gui.py --channels 306 --views all --decode``, back to back).
    redraw_pixels : int
        Pixels (columns x image height) redrawn per :meth:`update` after a drift: few channels
        on a tall image cost by their pixels (the old columns of a 25-channel page, 800 pixels
        high, are redrawn over ~8 frames).
    """

    def __init__(self, redraw_budget: int = 16_000, redraw_pixels: int = 150_000) -> None:
        self._ring = np.zeros((1, 1), dtype=np.uint8)
        self._decimator: ColumnDecimator | None = None
        self._drawn_upto = 0
        self._checked_upto = 0
        self._stale = True
        self._redo = (0, 0)  # absolute columns [lo, hi) still drawn with the old baselines
        self.redraw_budget = int(redraw_budget)
        self.redraw_pixels = int(redraw_pixels)
        self.baseline = np.zeros(0)
        self.n_full_redraws = 0
        self.n_rebaselines = 0
        self._n_draws = 0  # draws so far: the stamp of the latest one
        self._drawn_at = np.zeros(1, dtype=np.int64)  # stamp of the draw of each ring column
        self._oldest = 0
        self._n_kept = 0

    @property
    def ring(self) -> np.ndarray:
        """The image in ring order, ``(height, n_columns)``: do not modify it.

        Column ``(oldest + k) % n_columns`` holds the k-th oldest of the ``n_kept`` columns shown
        (as of the last :meth:`draw`). A full redraw makes a new array; otherwise columns are
        redrawn in place.
        """
        return self._ring

    @property
    def oldest(self) -> int:
        """Ring column of the oldest column shown."""
        return self._oldest

    @property
    def n_kept(self) -> int:
        """Number of columns shown."""
        return self._n_kept

    def drawn_since(self, stamp: int) -> tuple[np.ndarray, int]:
        """Ring columns drawn after ``stamp``, and the stamp of now.

        ``stamp`` is 0 (before anything was drawn) or a stamp this method returned. A consumer of
        the ring (:class:`DevicePixels`) passes the stamp it got last time to learn which columns
        changed since; after a full redraw every column is reported.
        """
        return np.flatnonzero(self._drawn_at > stamp), self._n_draws

    def image(self) -> np.ndarray:
        """A copy of the image of the columns shown, oldest first: ``(height, n_kept)``."""
        if self._n_kept < self._ring.shape[1]:
            return self._ring[:, : self._n_kept].copy()  # not wrapped yet: the oldest is column 0
        seam = self._oldest
        return np.concatenate([self._ring[:, seam:], self._ring[:, :seam]], axis=1)

    def invalidate(self) -> None:
        """Redraw everything at the next :meth:`update` (gain, channels or size changed)."""
        self._stale = True

    def update(self, decimator: ColumnDecimator, picks: np.ndarray, **options) -> np.ndarray:
        """:meth:`draw` (with the same keyword options), then return :meth:`image`."""
        self.draw(decimator, picks, **options)
        return self.image()

    def draw(
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
    ) -> None:
        """Draw what is new into :attr:`ring`, to show the columns the decimator keeps.

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
        self._n_kept = decimator.n_kept
        self._oldest = (decimator.n_total - self._n_kept) % n_columns

    def _draw_columns(
        self, decimator: ColumnDecimator, picks: np.ndarray, args: dict, first: int, n: int
    ) -> None:
        """Draw ``n`` columns from absolute column ``first`` into the ring, with the baselines."""
        mins, maxs = decimator.between(first - 1, first + n)  # one more: joined to the previous
        image = rasterize_traces(mins[:, picks], maxs[:, picks], baseline=self.baseline, **args)
        slots = (first + np.arange(n)) % decimator.n_columns
        self._ring[:, slots] = image[:, -n:]
        self._n_draws += 1
        self._drawn_at[slots] = self._n_draws

    def _redraw_some(self, decimator: ColumnDecimator, picks: np.ndarray, args: dict) -> None:
        """Redraw the newest columns left from before a re-baselining, within the budget."""
        lo, hi = self._redo
        lo = max(lo, decimator.n_total - decimator.n_kept)  # older ones scrolled away
        if hi <= lo:
            self._redo = (0, 0)
            return
        n = min(
            hi - lo,
            max(1, self.redraw_budget // max(picks.size, 1)),
            max(1, self.redraw_pixels // args["height"]),
        )
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
        self._n_draws += 1
        self._drawn_at = np.full(decimator.n_columns, self._n_draws, dtype=np.int64)
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


def argb_table(rgba: np.ndarray) -> np.ndarray:
    """Pixel value (``0xAARRGGBB``, as QImage's ARGB32 formats store it) of each RGBA row.

    The colours are taken as they are: for a premultiplied image each must be opaque or, like the
    background, fully transparent black.
    """
    lut = np.asarray(rgba, dtype=np.uint32)
    return (lut[:, 3] << 24) | (lut[:, 0] << 16) | (lut[:, 1] << 8) | lut[:, 2]


def label_pixels(image: np.ndarray, table: np.ndarray, width: int, height: int) -> np.ndarray:
    """The pixels of a label image at ``width`` x ``height``, all at once (nearest neighbour).

    Output row ``i`` shows image row ``i * rows // height`` and output column ``j`` image column
    ``j * columns // width``; ``table`` is the pixel value of each label (:func:`argb_table`).
    :class:`DevicePixels` gives the same pixels without converting the whole image each frame.
    """
    rows, cols = image.shape
    image = image.take(np.arange(height) * rows // height, axis=0)
    image = image.take(np.arange(width) * cols // width, axis=1)
    return np.take(table, image)


class DevicePixels:
    """The pixels of a :class:`TraceImage` at a device size, converted only where columns changed.

    The scope's image scrolls: every frame its columns move left by the few that are new. Colouring
    and resampling the whole image each frame took 2-6 ms at full screen. Here each ring column is
    coloured once, at the device height, when it is drawn (into a ring of ARGB columns), and a
    frame only gathers those columns into :attr:`pixels` at the device width, nearest neighbour
    (0.6-1.2 ms for 1500 x 800 pixels; colouring them all takes ~2 ms, mostly spent casting the
    labels to indices). :attr:`pixels` are exactly :func:`label_pixels` of the image shown, oldest
    column first: the same screen-fixed columns are repeated (or skipped) as when the whole image
    was resampled, so the ARGB columns cannot simply scroll with the data.

    Parameters
    ----------
    table : array of uint32, shape (256,)
        Pixel value of each label (:func:`argb_table`).

    Attributes
    ----------
    pixels : array of uint32, shape (height, width)
        The pixels of the last :meth:`update`, row-major. The same array while the size is the
        same (a painter can keep an image on it).
    ring : array or None
        The label ring the pixels were made from (identity tells a full redraw).
    """

    def __init__(self, table: np.ndarray) -> None:
        self._table = np.asarray(table, dtype=np.uint32)
        self.pixels = np.zeros((0, 0), dtype=np.uint32)
        self.ring: np.ndarray | None = None
        self.n_full = 0  # full conversions (tests, benchmarks)
        self._coloured = np.zeros((0, 0), dtype=np.uint32)  # the ring coloured, device height
        self._row_map: np.ndarray | None = None  # ring row of each device row (None: the same)
        self._column_key: tuple = ()  # (n_kept, width) of _column_map
        self._column_map = np.zeros(0, dtype=np.intp)
        self._shown: tuple = ()  # (oldest, n_kept, width) of pixels

    @property
    def table(self) -> np.ndarray:
        """Pixel value of each label; setting it colours everything again at the next update."""
        return self._table

    @table.setter
    def table(self, table: np.ndarray) -> None:
        self._table = np.asarray(table, dtype=np.uint32)
        self.ring = None

    def update(
        self,
        ring: np.ndarray,
        oldest: int,
        n_kept: int,
        drawn: np.ndarray | None,
        width: int,
        height: int,
    ) -> bool:
        """Make :attr:`pixels` show ``n_kept`` columns of ``ring`` from column ``oldest``, wrapping.

        ``ring`` is a label image ``(rows, n_columns)`` (:attr:`TraceImage.ring`); ``drawn`` the
        ring columns changed since the previous call with the same ring
        (:meth:`TraceImage.drawn_since`), or None when unknown. Everything is coloured again when
        ``drawn`` is None or the ring object, its size, ``height`` or :attr:`table` changed.
        Returns whether :attr:`pixels` changed.
        """
        rows, n_columns = ring.shape
        if drawn is None or ring is not self.ring or self._coloured.shape != (height, n_columns):
            self.ring = ring
            self._row_map = None if height == rows else np.arange(height) * rows // height
            self._coloured = self._colour(ring)
            self._shown = ()
            self.n_full += 1
        elif drawn.size:
            if drawn[-1] - drawn[0] + 1 == drawn.size:  # contiguous (sorted): a slice is faster
                drawn = slice(int(drawn[0]), int(drawn[-1]) + 1)
            self._coloured[:, drawn] = self._colour(ring[:, drawn])
            self._shown = ()
        if self._shown == (oldest, n_kept, width):
            return False
        if self._column_key != (n_kept, width):
            self._column_map = np.arange(width, dtype=np.intp) * n_kept // width
            self._column_key = (n_kept, width)
        if self.pixels.shape != (height, width):
            self.pixels = np.empty((height, width), dtype=np.uint32)
        # "wrap" maps oldest + k past the ring's end back to its start; unlike the default
        # "raise", it also writes into ``out`` directly instead of through a temporary copy
        # (half the time).
        np.take(self._coloured, self._column_map + oldest, axis=1, out=self.pixels, mode="wrap")
        self._shown = (oldest, n_kept, width)
        return True

    def _colour(self, labels: np.ndarray) -> np.ndarray:
        """Pixel values of ``labels`` (ring columns), resampled to the device height."""
        if self._row_map is not None:
            labels = labels.take(self._row_map, axis=0)
        return np.take(self._table, labels)


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
