"""Scope display decimation: min/max columns (chunked == one-shot), their rasterisation, pixels."""

from __future__ import annotations

import numpy as np
import pytest

from gui.scope_rows import color_table
from gui.trace_raster import (
    ColumnDecimator,
    DevicePixels,
    TraceImage,
    argb_table,
    label_pixels,
    rasterize_traces,
    typical_ranges,
)


def _direct_columns(data: np.ndarray, per_column: int):
    n = data.shape[0] // per_column
    blocks = data[: n * per_column].reshape(n, per_column, -1)
    return blocks.min(axis=1), blocks.max(axis=1)


def test_chunked_pushes_equal_one_push_and_direct_min_max():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((5003, 7)).astype(np.float32)
    stamps = 100.0 + np.arange(5003) / 1000.0
    whole = ColumnDecimator(7, 400, 11)
    assert whole.push(data, stamps) == 5003 // 11
    chunked = ColumnDecimator(7, 400, 11)
    start = 0
    for size in rng.integers(0, 60, size=10_000):
        if start >= data.shape[0]:
            break
        chunked.push(data[start : start + size], stamps[start : start + size])
        start += size
    for a, b in zip(whole.columns(), chunked.columns()):
        np.testing.assert_array_equal(a, b)
    mins, maxs = _direct_columns(data, 11)
    got_min, got_max, times = whole.columns()
    # The ring keeps the newest 400 of the 454 columns.
    np.testing.assert_array_equal(got_min, mins[-400:])
    np.testing.assert_array_equal(got_max, maxs[-400:])
    np.testing.assert_array_equal(times, stamps[: 454 * 11 : 11][-400:])


def test_nan_sample_makes_its_column_missing():
    data = np.ones((40, 2), dtype=np.float32)
    data[13, 1] = np.nan
    dec = ColumnDecimator(2, 10, 10)
    dec.push(data, np.arange(40.0))
    mins, maxs, _ = dec.columns()
    assert np.isnan(mins[1, 1]) and np.isnan(maxs[1, 1])
    assert np.isfinite(mins[:, 0]).all()


def test_bad_decimator_arguments():
    with pytest.raises(ValueError, match="'samples_per_column': 0; it must be an int >= 1"):
        ColumnDecimator(3, 10, 0)
    dec = ColumnDecimator(3, 10, 2)
    with pytest.raises(ValueError, match=r"'data': expected shape \(n, 3\), got \(5, 2\)"):
        dec.push(np.zeros((5, 2)), np.zeros(5))


def _draw(mins, maxs, **kwargs):
    n = mins.shape[1]
    args = {
        "baseline": np.zeros(n),
        "gain": np.full(n, 10.0),
        "centers": 20.0 + 40.0 * np.arange(n),
        "clip": 15.0,
        "height": 40 * n,
        "labels": np.arange(1, n + 1, dtype=np.uint8),
    }
    args.update(kwargs)
    return rasterize_traces(mins, maxs, **args)


def test_flat_channels_draw_one_row_each_with_their_label():
    zeros = np.zeros((50, 2), dtype=np.float32)
    image = _draw(zeros, zeros)
    assert image.shape == (80, 50)
    np.testing.assert_array_equal(np.flatnonzero(image[:, 0]), [20, 60])
    assert (image[20] == 1).all() and (image[60] == 2).all()
    assert image.sum(axis=0).tolist() == [3] * 50


def test_min_max_runs_are_joined_and_positive_values_go_up():
    mins = np.zeros((4, 1), dtype=np.float32)
    maxs = np.array([[0.0], [1.0], [1.0], [0.0]], dtype=np.float32)
    mins[2] = 1.0  # column 2 is a flat line at +1 (10 px above the centre)
    image = _draw(mins, maxs)
    rows = [np.flatnonzero(image[:, c]) for c in range(4)]
    assert rows[0].tolist() == [20]
    assert rows[1].min() == 10 and rows[1].max() == 20  # 0..+1: rows 10..20
    assert rows[2].tolist() == [10]  # joined to the previous column's top
    assert rows[3].min() == 10 and rows[3].max() == 20  # back down, joined


def test_missing_columns_leave_a_gap_and_excursions_are_clipped():
    mins = np.zeros((5, 1), dtype=np.float32)
    maxs = np.zeros((5, 1), dtype=np.float32)
    mins[2] = maxs[2] = np.nan
    maxs[4] = 100.0  # 1000 px up: clipped to 15 px above the centre
    image = _draw(mins, maxs)
    assert not image[:, 2].any()
    assert np.flatnonzero(image[:, 4]).min() == 5


def _trace_args(n_channels: int, height: int = 120) -> dict:
    row_px = height / n_channels
    return {
        "gain": np.full(n_channels, 8.0),
        "row_px": row_px,
        "height": height,
        "labels": np.ones(n_channels, dtype=np.uint8),
    }


def test_incremental_image_equals_a_full_redraw_with_the_same_baseline():
    rng = np.random.default_rng(3)
    data = rng.standard_normal((4000, 4)).astype(np.float32)
    dec = ColumnDecimator(4, 150, 10)
    trace = TraceImage()
    picks = np.array([0, 2, 3])
    args = _trace_args(3)
    dec.push(data[:500], np.arange(500.0))
    trace.update(dec, picks, **args)
    start = 500
    for size in rng.integers(1, 120, size=200):
        if start >= 3500:
            break
        dec.push(data[start : start + size], np.arange(start, start + size, dtype=float))
        start += size
        image = trace.update(dec, picks, **args)
    assert trace.n_full_redraws == 1  # only new columns were drawn after the first frame
    mins, maxs, _ = dec.columns()
    full = rasterize_traces(
        mins[:, picks],
        maxs[:, picks],
        baseline=trace.baseline,
        gain=args["gain"],
        centers=(np.arange(3) + 0.5) * args["row_px"],
        clip=2 * args["row_px"],
        height=args["height"],
        labels=args["labels"],
    )
    assert image.shape == full.shape == (120, 150)
    # The oldest column was joined to a column that has left the ring since.
    np.testing.assert_array_equal(image[:, 1:], full[:, 1:])


# 30 columns per update: of 2 channels, or of 100 pixels
@pytest.mark.parametrize("budget", [{"redraw_budget": 60}, {"redraw_pixels": 3000}])
def test_a_drifting_channel_is_rebaselined_and_redrawn_over_several_frames(budget):
    dec = ColumnDecimator(2, 100, 5)
    trace = TraceImage(**budget)
    picks = np.array([0, 1])
    args = _trace_args(2, height=100)
    dec.push(np.zeros((500, 2), np.float32), np.arange(500.0))
    trace.update(dec, picks, **args)
    drifted = np.zeros((50, 2), np.float32)
    drifted[:, 1] = 10.0  # 80 px from its line: far outside its 50 px row
    dec.push(drifted, np.arange(500.0, 550.0))
    first = trace.update(dec, picks, **args)
    assert trace.n_rebaselines == 1 and trace.n_full_redraws == 1  # no full redraw
    assert trace.baseline[1] > 0
    mins, maxs, _ = dec.columns()
    full = rasterize_traces(
        mins[:, picks],
        maxs[:, picks],
        baseline=trace.baseline,
        gain=args["gain"],
        centers=(np.arange(2) + 0.5) * args["row_px"],
        clip=2 * args["row_px"],
        height=args["height"],
        labels=args["labels"],
    )
    assert not np.array_equal(first, full)  # the oldest columns still have the old baseline
    images = [trace.update(dec, picks, **args) for _ in range(4)]  # 100 columns: 4 x 30
    np.testing.assert_array_equal(images[-1][:, 1:], full[:, 1:])
    assert not np.array_equal(images[1], full)  # it took more than one frame


@pytest.mark.parametrize("longest", [3, 8, 400])  # few pixels (one by one) to many (counted)
def test_runs_filled_pixel_by_pixel_equal_runs_counted_over_the_image(longest):
    from gui.trace_raster import _fill_area, _fill_runs

    rng = np.random.default_rng(longest)
    height, n_cols, n_channels = 90, 150, 12
    top = rng.integers(0, height, (n_cols, n_channels))
    bottom = np.minimum(top + rng.integers(0, longest, (n_cols, n_channels)), height - 1)
    top[rng.random(top.shape) < 0.1] = height  # missing: nothing drawn
    bottom[top == height] = height
    runs, area = np.zeros((height, n_cols), np.uint8), np.zeros((height, n_cols), np.uint8)
    runs[::7], area[::7] = 2, 2  # drawn before: kept where no run passes
    _fill_runs(runs, top, bottom, 5)
    _fill_area(area, top, bottom, 5)
    np.testing.assert_array_equal(runs, area)
    assert (runs == 5).any() and (runs == 2).any()


def test_device_pixels_coloured_column_by_column_equal_a_full_conversion():
    rng = np.random.default_rng(5)
    n_channels = 3
    data = rng.standard_normal((9000, n_channels)).astype(np.float32)
    data[6000:, 1] += 12.0  # a drift: re-baselined, the old columns redrawn over several frames
    dec = ColumnDecimator(n_channels, 70, 10)
    trace = TraceImage(redraw_budget=60)
    picks = np.arange(n_channels)
    labels = np.array([2, 3, 4], dtype=np.uint8)
    args = {**_trace_args(n_channels, height=45), "labels": labels}
    table = argb_table(color_table())
    device, stamp = DevicePixels(table), 0
    # Wider than the image (columns repeated) and taller, then narrower and shorter (skipped).
    sizes = [(101, 67)] * 60 + [(61, 40)] * 30 + [(101, 67)] * 10
    start, last_size, pixels_kept = 0, None, True
    for frame, size in enumerate(sizes):
        if frame == 80:
            trace.invalidate()  # a full redraw (gain, page, view): a new ring
        chunk = int(rng.integers(0, 130))
        dec.push(data[start : start + chunk], np.arange(start, start + chunk, dtype=float))
        start += chunk
        trace.update(dec, picks, **args)
        if frame % 3 == 2:
            continue  # not painted this frame: the drawn columns add up
        drawn, stamp = trace.drawn_since(stamp)
        before = device.pixels
        device.update(trace.ring, trace.oldest, trace.n_kept, drawn, *size)
        if trace.n_kept:
            expected = label_pixels(trace.image(), table, *size)
            np.testing.assert_array_equal(device.pixels, expected, err_msg=f"frame {frame}")
        pixels_kept &= size != last_size or device.pixels is before
        last_size = size
    assert start > 3 * 70 * 10  # the ring wrapped around several times
    assert trace.n_rebaselines >= 1 and dec.n_total > dec.n_columns
    # Coloured whole only for the first image, the resize, the way back and the full redraw.
    assert trace.n_full_redraws == 2 and device.n_full == 4
    assert pixels_kept  # the same array while the size is the same (a QImage stays on it)
    assert not device.update(trace.ring, trace.oldest, trace.n_kept, np.zeros(0, int), *sizes[-1])


def test_device_pixels_colour_everything_again_for_a_new_table_or_image():
    image = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    table = np.array([0, 0xFF0000FF, 0xFF00FF00, *[0] * 253], dtype=np.uint32)
    device = DevicePixels(table)
    device.update(image, 1, 3, None, 6, 4)  # from column 1: columns 1, 2, then 0 (wrapped)
    red, green = 0xFF0000FF, 0xFF00FF00
    rows = [[red, red, green, green, 0, 0], [red, red, 0, 0, green, green]]
    np.testing.assert_array_equal(device.pixels, [rows[0], rows[0], rows[1], rows[1]])
    device.table = table[[0, 2, 1, *range(3, 256)]]
    device.update(image, 1, 3, np.zeros(0, int), 6, 4)
    assert device.n_full == 2
    np.testing.assert_array_equal(device.pixels[0], [green, green, red, red, 0, 0])
    other = image.copy()
    other[0, 0] = 1
    device.update(other, 0, 3, np.zeros(0, int), 3, 2)  # another array: the drawn columns unknown
    np.testing.assert_array_equal(device.pixels, label_pixels(other, device.table, 3, 2))
    assert device.n_full == 3


def test_channels_on_the_same_row_are_overlaid():
    dec = ColumnDecimator(3, 50, 4)
    dec.push(np.zeros((200, 3), np.float32), np.arange(200.0))
    trace = TraceImage()
    image = trace.update(
        dec,
        np.array([0, 1, 2]),
        gain=np.full(3, 8.0),
        row_px=40.0,
        height=80,
        labels=np.array([1, 2, 3], dtype=np.uint8),
        rows=np.array([0, 0, 1]),  # a butterfly: channels 0 and 1 share row 0
    )
    # Flat channels: one line per row; the higher label is drawn over the lower one.
    np.testing.assert_array_equal(np.flatnonzero(image[:, 0]), [20, 60])
    assert (image[20] == 2).all() and (image[60] == 3).all()


def test_typical_ranges_per_type():
    mins = np.tile(np.array([-1.0, -2.0, -10.0], np.float32), (20, 1))
    maxs = -mins
    ranges = typical_ranges(mins, maxs, ["mag", "mag", "grad"])
    assert ranges == {"grad": 20.0, "mag": 3.0}  # the median spread of each type's channels
    assert typical_ranges(mins[:5], maxs[:5], ["mag", "mag", "grad"]) == {}  # too few columns
