"""Live scope: every channel of a stream stacked, with markers, at the screen's pixel width.

A QTimer reads what is new in the stream's ring buffer (``read_since``: a copy of a few dozen
samples per frame), folds it into per-pixel min/max columns and redraws the traces as one image
(:mod:`gui.trace_raster`). The scope never waits for the stream: a frozen or vanished stream only
stops the traces and raises a "no new data" banner.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Iterable, Sequence

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QRectF, Qt, QTimer
from PyQt6.QtGui import QKeySequence
from PyQt6.QtWidgets import (
    QComboBox,
    QGraphicsItem,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from acquisition.recording import Marker
from acquisition.stream import StreamSource
from gui import style
from gui.channel_picker import ChannelPicker
from gui.scope_markers import MarkerLines
from gui.trace_raster import ColumnDecimator, TraceImage

SPANS_S = (1.0, 2.0, 5.0, 10.0, 20.0)
_PAD_PX = 9  # free pixels above the first and below the last row (tick labels)
_ROW_FILL = 0.7  # fraction of a row that a typical channel's envelope spans at gain 1
_CUSTOM = "custom"


class ScopeWidget(QWidget):
    """Stacked live traces of a :class:`~acquisition.stream.StreamSource` with marker lines.

    Parameters
    ----------
    fps : float
        Frames per second the timer asks for.
    span : float
        Seconds shown.
    """

    def __init__(self, parent: QWidget | None = None, *, fps: float = 30.0, span: float = 10.0):
        super().__init__(parent)
        self._source: StreamSource | None = None
        self._decimator: ColumnDecimator | None = None
        self._counter = 0
        self._span = float(span)
        self._gain = 1.0
        self._picks = np.zeros(0, dtype=np.int64)
        self._type_range: dict[str, float] = {}
        self._trace = TraceImage()
        self._last_data = time.monotonic()
        self._reconfigure = True
        self.frame_times: collections.deque[float] = collections.deque(maxlen=300)
        self._frame_stamps: collections.deque[float] = collections.deque(maxlen=120)
        self.image = np.zeros((0, 0), dtype=np.uint8)
        self._build_controls()
        self._build_plot()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(self._controls)
        layout.addWidget(self.plot, stretch=1)
        self._timer = QTimer(self, timerType=Qt.TimerType.PreciseTimer)
        self._timer.setInterval(max(1, round(1000.0 / fps)))
        self._timer.timeout.connect(self.refresh)

    # ----------------------------------------------------------------- construction
    def _build_controls(self) -> None:
        self.channel_combo = QComboBox(minimumContentsLength=16)
        self.channel_combo.activated.connect(self._on_channel_choice)
        self.span_combo = QComboBox()
        for span in SPANS_S:
            self.span_combo.addItem(f"{span:g} s", span)
        self.span_combo.setCurrentIndex(self.span_combo.findData(self._span))
        self.span_combo.activated.connect(lambda _i: self.set_span(self.span_combo.currentData()))
        smaller = QPushButton("−", toolTip="Smaller traces (-)")
        larger = QPushButton("+", toolTip="Larger traces (+)")
        for button, key in ((smaller, "-"), (larger, "+")):
            button.setFixedWidth(30)
            button.setShortcut(QKeySequence(key))
        smaller.clicked.connect(lambda: self.set_gain(self._gain / math.sqrt(2)))
        larger.clicked.connect(lambda: self.set_gain(self._gain * math.sqrt(2)))
        auto = QPushButton("Auto", toolTip="Fit the trace size to the data shown")
        auto.clicked.connect(self.auto_scale)
        self.gain_label = QLabel(minimumWidth=44, alignment=Qt.AlignmentFlag.AlignCenter)
        self.scale_label = QLabel(objectName="muted")
        self.fps_label = QLabel(objectName="muted")
        row = QHBoxLayout()
        for widget in (QLabel("Channels"), self.channel_combo, QLabel("  Span"), self.span_combo):
            row.addWidget(widget)
        row.addWidget(QLabel("  Scale"))
        for widget in (smaller, self.gain_label, larger, auto, self.scale_label):
            row.addWidget(widget)
        row.addStretch(1)
        row.addWidget(self.fps_label)
        self._controls = row
        self._update_gain_label()

    def _build_plot(self) -> None:
        self.plot = pg.PlotWidget(background="w")
        item = self.plot.getPlotItem()
        item.hideButtons()
        item.setMenuEnabled(False)
        item.setMouseEnabled(x=False, y=False)
        item.showGrid(x=True, y=False, alpha=0.25)
        item.invertY(True)
        item.setLabel("bottom", "Time relative to the newest sample", units="s")
        for axis in ("left", "bottom"):
            item.getAxis(axis).setTextPen("#263238")
            item.getAxis(axis).setPen("#90a4ae")
            # Axes change only with the channels or the size: repaint them from a cache.
            item.getAxis(axis).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self._left_axis = item.getAxis("left")
        self._left_axis.setWidth(72)
        self._image_item = pg.ImageItem(axisOrder="row-major")
        lut = np.zeros((256, 4), dtype=np.uint8)
        for label, rgb in enumerate([*style.TYPE_COLORS.values(), style.OTHER_TRACE], start=1):
            lut[label] = (*rgb, 255)
        self._image_item.setLookupTable(lut)
        self._image_item.setLevels((0, 255))
        item.addItem(self._image_item)
        item.getViewBox().sigResized.connect(self._on_resize)
        self.markers = MarkerLines(item)
        self.no_data = QLabel(self.plot)
        self.no_data.setStyleSheet(style.badge_css(style.BAD))
        self.no_data.move(90, 8)
        self.no_data.hide()

    # ----------------------------------------------------------------- public API
    @property
    def source(self) -> StreamSource | None:
        """The stream shown (None: nothing)."""
        return self._source

    @property
    def picks(self) -> list[int]:
        """Indices of the channels shown, top to bottom."""
        return self._picks.tolist()

    @property
    def span(self) -> float:
        """Seconds shown."""
        return self._span

    @property
    def gain(self) -> float:
        """Trace size relative to the auto scale."""
        return self._gain

    def start(self) -> None:
        """Start redrawing from the timer."""
        self._timer.start()

    def stop(self) -> None:
        """Stop redrawing."""
        self._timer.stop()

    def set_source(self, source: StreamSource | None) -> None:
        """Show ``source`` (a connected StreamSource) from its recent history, or nothing."""
        self._source = source
        self.markers.clear()
        self._type_range = {}
        self._decimator = None
        self._reconfigure = True
        self._last_data = time.monotonic()
        self.channel_combo.clear()
        if source is None:
            self._picks = np.zeros(0, dtype=np.int64)
            self._draw(np.zeros((1, 1), np.uint8), 0.0, 0, 0.0)
            self.no_data.hide()
            return
        types = source.channels.types
        self.channel_combo.addItem(f"All ({len(types)})", "all")
        for ch_type in dict.fromkeys(types):
            self.channel_combo.addItem(f"{ch_type} ({types.count(ch_type)})", ch_type)
        self.channel_combo.addItem("Choose…", _CUSTOM)
        self.set_picks("all")

    def set_picks(self, picks: str | Sequence[int]) -> None:
        """Show ``"all"`` channels, those of one type (``"mag"``), or the given indices."""
        if self._source is None:
            raise RuntimeError("Set a source with set_source() before choosing its channels.")
        names, types = self._source.channels.names, self._source.channels.types
        if isinstance(picks, str):
            chosen = [i for i, t in enumerate(types) if picks in ("all", t)]
            label = picks
        else:
            chosen = [int(i) for i in picks]
            label = _CUSTOM
        if not chosen or any(not 0 <= i < len(names) for i in chosen):
            raise ValueError(
                f"Invalid value for 'picks': {picks!r}; give 'all', a channel type of this stream "
                f"({', '.join(dict.fromkeys(types))}) or indices 0..{len(names) - 1}."
            )
        self._picks = np.asarray(chosen, dtype=np.int64)
        self._pick_types = [types[i] for i in chosen]
        self._pick_labels = np.array([_type_label(t) for t in self._pick_types], dtype=np.uint8)
        self._trace.invalidate()
        self.channel_combo.setCurrentIndex(max(0, self.channel_combo.findData(label)))
        self._set_channel_ticks()

    def set_span(self, seconds: float) -> None:
        """Show the last ``seconds`` of data (redraws from the buffer's history)."""
        if not (isinstance(seconds, int | float) and 0 < seconds <= max(SPANS_S)):
            raise ValueError(
                f"Invalid value for 'span': {seconds!r}; give seconds in (0, {max(SPANS_S):g}]."
            )
        self._span = float(seconds)
        self.span_combo.setCurrentIndex(self.span_combo.findData(self._span))
        self._reconfigure = True

    def set_gain(self, factor: float) -> None:
        """Scale every trace by ``factor`` relative to the auto scale."""
        if not (isinstance(factor, int | float) and 1e-3 <= factor <= 1e3):
            raise ValueError(f"Invalid value for 'gain': {factor!r}; use 0.001 to 1000.")
        self._gain = float(factor)
        self._trace.invalidate()
        self._update_gain_label()

    def auto_scale(self) -> None:
        """Fit each channel type's trace size to the data on screen, and reset the gain to 1."""
        self._type_range = {}
        self.set_gain(1.0)

    def add_markers(self, markers: Iterable[Marker]) -> None:
        """Draw these markers (local-clock timestamps) as labelled vertical lines."""
        self.markers.add(markers)

    # ----------------------------------------------------------------- frame
    def refresh(self) -> None:
        """Read what is new in the buffer and redraw (one frame)."""
        started = time.perf_counter()
        source = self._source
        if source is None:
            return
        buffer = source.buffer
        if self._reconfigure or self._decimator is None:
            self._configure(buffer)
        new = buffer.read_since(self._counter)
        data, stamps, self._counter = new.data, new.timestamps, new.next_counter
        if stamps.size:
            self._decimator.push(data, stamps)
            self._last_data = time.monotonic()
        self._render()
        self._update_no_data()
        self.frame_times.append(time.perf_counter() - started)
        self._frame_stamps.append(time.monotonic())
        self._update_fps_label()

    def _configure(self, buffer) -> None:
        """Size the columns to the plot's pixel width and refill them from the buffer."""
        sfreq = self._source.sfreq
        width = max(100, int(self.plot.getViewBox().width() * self.devicePixelRatioF()))
        n_samples = max(1, min(round(self._span * sfreq), buffer.capacity))
        per_column = max(1, math.ceil(n_samples / width))
        n_columns = max(1, math.ceil(n_samples / per_column))
        self._decimator = ColumnDecimator(buffer.n_channels, n_columns, per_column)
        self._counter = max(0, buffer.n_written - n_columns * per_column)
        self._reconfigure = False
        self._trace.invalidate()

    def _render(self) -> None:
        dec, picks = self._decimator, self._picks
        dpr = self.devicePixelRatioF()
        height = max(1, int((self.plot.getViewBox().height() - 2 * _PAD_PX) * dpr))
        pad_rows = _PAD_PX * dpr * picks.size / height
        if dec.n_kept == 0:
            self._draw(np.zeros((height, 1), np.uint8), 0.0, picks.size, pad_rows)
            return
        if not self._type_range:
            mins, maxs, _ = dec.columns()
            self._fit_ranges(mins[:, picks], maxs[:, picks])
            self._trace.invalidate()
        pick_types = self._pick_types
        ranges = np.array([self._type_range.get(t, 1.0) for t in pick_types])
        row_px = height / picks.size
        self.image = self._trace.update(
            dec,
            picks,
            gain=row_px * _ROW_FILL * self._gain / ranges,
            row_px=row_px,
            height=height,
            labels=self._pick_labels,
        )
        column_s = dec.samples_per_column / self._source.sfreq
        self._draw(self.image, column_s * dec.n_kept, picks.size, pad_rows)
        self.markers.place(dec.times(), column_s)

    def _draw(self, image: np.ndarray, width_s: float, n_rows: int, pad_rows: float) -> None:
        self._image_item.setImage(image, autoLevels=False)
        self._image_item.setRect(QRectF(-width_s, 0.0, max(width_s, 1e-9), max(n_rows, 1)))
        view = self.plot.getViewBox()
        view.setXRange(-self._span, 0.0, padding=0)
        view.setYRange(-pad_rows, max(n_rows, 1) + pad_rows, padding=0)

    def _fit_ranges(self, mins: np.ndarray, maxs: np.ndarray) -> None:
        """Typical envelope (10th percentile of minima to 90th of maxima) of each channel type."""
        finite = np.isfinite(mins).all(axis=1) & np.isfinite(maxs).all(axis=1)
        if finite.sum() < 10:
            return
        spread = np.percentile(maxs[finite], 90, axis=0) - np.percentile(mins[finite], 10, axis=0)
        types = self._source.channels.types
        pick_types = np.array([types[i] for i in self._picks])
        for ch_type in np.unique(pick_types):
            typical = float(np.median(spread[pick_types == ch_type]))
            self._type_range[str(ch_type)] = typical if typical > 0 else 1.0
        self._update_gain_label()

    # ----------------------------------------------------------------- decorations
    def _set_channel_ticks(self) -> None:
        names = self._source.channels.names
        height = max(1.0, self.plot.getViewBox().height())
        stride = max(1, math.ceil(14.0 * self._picks.size / height))
        ticks = [(k + 0.5, names[i]) for k, i in enumerate(self._picks) if k % stride == 0]
        self._left_axis.setTicks([ticks, []])

    def _update_no_data(self) -> None:
        silent = time.monotonic() - self._last_data
        if silent > 1.0:
            self.no_data.setText(f"No new data for {silent:.1f} s")
            self.no_data.adjustSize()
            self.no_data.show()
            self.no_data.raise_()
        else:
            self.no_data.hide()

    def _update_gain_label(self) -> None:
        self.gain_label.setText(f"×{self._gain:.2g}")
        if self._source is None or not self._type_range:
            self.scale_label.setText("")
            return
        units = dict(zip(self._source.channels.types, self._source.channels.units))
        parts = [
            pg.siFormat(value / (_ROW_FILL * self._gain), suffix=_unit(units.get(ch_type, "")))
            + f" {ch_type}"
            for ch_type, value in self._type_range.items()
        ]
        self.scale_label.setText("row height: " + ", ".join(parts))

    def _update_fps_label(self) -> None:
        stamps = self._frame_stamps
        if len(stamps) < 2 or stamps[-1] == stamps[0]:
            return
        fps = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        median_ms = float(np.median(self.frame_times)) * 1e3
        self.fps_label.setText(f"{fps:.0f} fps · {median_ms:.1f} ms/frame")

    def _on_channel_choice(self, index: int) -> None:
        choice = self.channel_combo.itemData(index)
        if choice != _CUSTOM:
            self.set_picks(choice)
            return
        channels = self._source.channels
        dialog = ChannelPicker(channels.names, channels.types, self.picks, self)
        dialog.picked.connect(self.set_picks)
        dialog.setModal(False)
        dialog.show()

    def _on_resize(self) -> None:
        self._reconfigure = True
        self._trace.invalidate()
        if self._source is not None:
            self._set_channel_ticks()


def _type_label(ch_type: str) -> int:
    keys = list(style.TYPE_COLORS)
    return keys.index(ch_type) + 1 if ch_type in keys else len(keys) + 1


def _unit(unit: str) -> str:
    return "" if unit in ("n/a", "") else unit
