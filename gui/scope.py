"""Live scope: a page of channels grouped by type, or a butterfly per type, with markers.

A QTimer reads what is new in the stream's ring buffer (``read_since``: a copy of a few dozen
samples per frame), folds it into per-pixel min/max columns and redraws the traces as one image
(:mod:`gui.trace_raster`). The scope never waits for the stream: a frozen or vanished stream only
stops the traces and raises a "no new data" banner.

As in MNE's raw browser, the channels are grouped by sensor type and shown a page at a time (25
rows by default), named on the left; the scroll bar, PageUp/PageDown, the arrow keys and the
mouse wheel move the page. The butterfly view (button, or B) overlays every channel of a type in
one row per type (:mod:`gui.scope_rows`). A click on a channel's name marks it bad (grey trace,
red name) or good again, and ``bads_changed`` tells the window, which excludes bad channels from
decoding, writes them into the recording and keeps them in its settings for that stream.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Iterable, Sequence

import numpy as np
import pylsl
import pyqtgraph as pg
from PyQt6.QtCore import QEvent, QObject, QRectF, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QImage, QKeyEvent, QWheelEvent
from PyQt6.QtWidgets import (
    QApplication,
    QGraphicsItem,
    QHBoxLayout,
    QLabel,
    QScrollBar,
    QVBoxLayout,
    QWidget,
)

from acquisition.recording import Marker
from acquisition.stream import StreamSource
from gui import style
from gui.channel_picker import ChannelPicker
from gui.scope_controls import CUSTOM, SPANS_S, ScopeControls
from gui.scope_markers import MarkerLines
from gui.scope_rows import ChannelAxis, ChannelRows, color_table
from gui.trace_raster import (
    ColumnDecimator,
    DevicePixels,
    TraceImage,
    argb_table,
    typical_ranges,
)

_PAD_PX = 9  # free pixels above the first and below the last row (tick labels)
#: Fraction of a row that a typical channel's envelope spans at gain 1, per view (a butterfly
#: row overlays a whole type).
_ROW_FILL = {"channels": 0.7, "butterfly": 0.15}
_CLIP_ROWS = {"channels": 2.0, "butterfly": 0.5}  # a butterfly type stays in its row


class _TraceItem(pg.ImageItem):
    """The traces' image, painted pixel for pixel; measures ``sample -> painted``.

    pyqtgraph would paint the label image as an indexed QImage scaled by the view's transform,
    which Qt does in ~2-4 ms per frame at full screen while holding the interpreter lock (the
    inlet worker waits that long: ``scripts/bench_gui.py``). Here the labels are turned into
    premultiplied ARGB pixels with numpy at the device size of the image's rectangle and drawn
    without any transform (~0.1 ms in Qt). Given the :class:`~gui.trace_raster.TraceImage` that
    made the image (:meth:`show_trace`), only the columns it drew since the last paint are
    coloured (:class:`~gui.trace_raster.DevicePixels`). :meth:`show_newest` gives the LSL time of
    the newest sample of the image just set; the next :meth:`paint` passes ``local_clock() - that
    time`` to ``on_painted``, once per new image.
    """

    def __init__(self, on_painted, lut: np.ndarray) -> None:
        super().__init__(axisOrder="row-major")
        self._on_painted = on_painted
        self._unpainted = math.nan
        self._device = DevicePixels(argb_table(lut))
        self._trace: TraceImage | None = None
        self._stamp = 0  # of the trace's columns drawn when they were last coloured
        self._qimage = QImage()
        self._qimage_pixels: np.ndarray | None = None  # the buffer _qimage shows

    def show_trace(self, trace: TraceImage) -> None:
        """Show ``trace``'s image: each paint colours the columns it drew since the last one."""
        if trace is not self._trace:
            self._trace, self._stamp = trace, 0
        # pyqtgraph sizes the item (bounds, setRect) from its image: one of the right size
        # without copying the ring in time order (paint reads the trace, not this).
        self.setImage(trace.ring[:, : trace.n_kept], autoLevels=False)

    def show_image(self, image: np.ndarray) -> None:
        """Show a label image (each new one is coloured whole)."""
        self._trace = None
        self.setImage(image, autoLevels=False)

    def show_newest(self, timestamp: float) -> None:
        """The image now shows samples up to ``timestamp`` (LSL local clock)."""
        self._unpainted = timestamp

    def paint(self, painter, *args) -> None:
        """Paint the image at device resolution, then account the newest sample it shows."""
        image = self.image
        if image is None or image.size == 0:
            return
        height, width = image.shape
        target = painter.transform().mapRect(QRectF(0, 0, width, height)).toAlignedRect()
        if target.width() < 1 or target.height() < 1:
            return
        ratio = painter.device().devicePixelRatio()  # device pixels per logical pixel
        size = (round(target.width() * ratio), round(target.height() * ratio))
        trace, device = self._trace, self._device
        if trace is not None:
            drawn, self._stamp = trace.drawn_since(self._stamp)
            device.update(trace.ring, trace.oldest, trace.n_kept, drawn, *size)
        else:  # nothing tells which columns changed: a new image is coloured whole
            drawn = None if image is not device.ring else np.zeros(0, dtype=np.intp)
            device.update(image, 0, width, drawn, *size)
        pixels = device.pixels
        if pixels is not self._qimage_pixels or self._qimage.devicePixelRatio() != ratio:
            # The pixels are updated in place: the QImage over them stays valid while their
            # size is the same.
            self._qimage = QImage(
                pixels.data,
                size[0],
                size[1],
                4 * size[0],
                QImage.Format.Format_ARGB32_Premultiplied,
            )
            self._qimage.setDevicePixelRatio(ratio)
            self._qimage_pixels = pixels
        painter.save()
        painter.resetTransform()
        painter.drawImage(target.topLeft(), self._qimage)
        painter.restore()
        if self._unpainted == self._unpainted:  # not NaN: a new sample to account
            newest, self._unpainted = self._unpainted, math.nan
            self._on_painted(pylsl.local_clock() - newest)


class ScopeWidget(QWidget):
    """Live traces of a :class:`~acquisition.stream.StreamSource`, a page at a time, with markers.

    Parameters
    ----------
    fps : float
        Frames per second the timer asks for.
    span : float
        Seconds shown.

    Attributes
    ----------
    controls : ScopeControls
        The tool bar above the traces.
    channels : ChannelRows
        The chosen channels, the view, the page (``channels.first``), what is on screen
        (``channels.shown``) and the bad channels.

    Signals
    -------
    bads_changed(list) : the names of the bad channels, in stream order, after a click on a
        channel's name or :meth:`set_bads`.
    painted(float) : ``sample -> painted`` latency in seconds, once per painted frame that shows
        new samples: from the newest sample's time (LSL local clock) to the end of painting it.
    """

    bads_changed = pyqtSignal(list)
    painted = pyqtSignal(float)

    def __init__(self, parent: QWidget | None = None, *, fps: float = 30.0, span: float = 10.0):
        super().__init__(parent)
        self._source: StreamSource | None = None
        self._decimator: ColumnDecimator | None = None
        self._counter = 0
        self._span = float(span)
        self._gain = 1.0
        self.channels = ChannelRows()
        self._color_labels = np.zeros(0, dtype=np.uint8)
        self._wheel_rest = 0.0
        self._type_range: dict[str, float] = {}
        self._trace = TraceImage()
        self._last_data = time.monotonic()
        self._reconfigure = True
        self.frame_times: collections.deque[float] = collections.deque(maxlen=300)
        #: ``sample -> painted`` of the recent frames that showed new samples (seconds).
        self.paint_latencies: collections.deque[float] = collections.deque(maxlen=300)
        self._frame_stamps: collections.deque[float] = collections.deque(maxlen=120)
        self._image: np.ndarray | None = np.zeros((0, 0), dtype=np.uint8)  # None: the trace's
        self.controls = self._build_controls()
        self._build_plot()
        plot_row = QHBoxLayout()
        plot_row.setSpacing(0)
        plot_row.addWidget(self.plot, stretch=1)
        plot_row.addWidget(self.scrollbar)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.controls)
        layout.addLayout(plot_row, stretch=1)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._timer = QTimer(self, timerType=Qt.TimerType.PreciseTimer)
        self._timer.setInterval(max(1, round(1000.0 / fps)))
        self._timer.timeout.connect(self.refresh)

    # ----------------------------------------------------------------- construction
    def _build_controls(self) -> ScopeControls:
        controls = ScopeControls()
        controls.picks_chosen.connect(self._on_channel_choice)
        controls.view_chosen.connect(self.set_view)
        controls.rows_chosen.connect(lambda rows: self.set_rows_per_page(rows or None))
        controls.span_chosen.connect(self.set_span)
        controls.gain_stepped.connect(lambda factor: self.set_gain(self._gain * factor))
        controls.auto_requested.connect(self.auto_scale)
        controls.show_span(self._span)
        return controls

    def _build_plot(self) -> None:
        self._left_axis = ChannelAxis(self._on_row_clicked)
        self._left_axis.setWidth(80)
        self.plot = pg.PlotWidget(background="w", axisItems={"left": self._left_axis})
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
        self._image_item = _TraceItem(self._on_painted, color_table())
        item.addItem(self._image_item)
        item.getViewBox().sigResized.connect(self._on_resize)
        self.markers = MarkerLines(item)
        self.no_data = QLabel(self.plot)
        self.no_data.setStyleSheet(style.badge_css(style.BAD))
        self.no_data.move(90, 8)
        self.no_data.hide()
        self.fps_label = QLabel(self.plot)  # in the plot: the controls need the width
        self.fps_label.setStyleSheet("color: #9e9e9e; background: transparent;")
        # Keys and the wheel page through the channels, wherever the focus is in the scope.
        self.plot.installEventFilter(self)
        self.plot.viewport().installEventFilter(self)
        self.scrollbar = QScrollBar(Qt.Orientation.Vertical, toolTip="Scroll through the channels")
        self.scrollbar.valueChanged.connect(self.scroll_to)
        self.scrollbar.hide()

    # ----------------------------------------------------------------- public API
    @property
    def source(self) -> StreamSource | None:
        """The stream shown (None: nothing)."""
        return self._source

    @property
    def picks(self) -> list[int]:
        """Indices of the chosen channels, grouped by type: every page, top to bottom."""
        return self.channels.order.tolist()

    @property
    def view(self) -> str:
        """``"channels"`` (a page of channels) or ``"butterfly"`` (a row per type)."""
        return self.channels.view

    @property
    def rows_per_page(self) -> int | None:
        """Channels per page (None: all the chosen channels)."""
        return self.channels.rows_per_page

    @property
    def bads(self) -> list[str]:
        """Names of the bad channels, in stream order."""
        return self.channels.bad_names

    @property
    def image(self) -> np.ndarray:
        """The colour labels on screen, ``(height, columns)``, oldest column first (do not modify).

        The traces' image is made on demand (a copy of the ring in time order): nothing needs it
        in a frame.
        """
        return self._trace.image() if self._image is None else self._image

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
        """Show ``source`` (a connected StreamSource) from its recent history, or nothing.

        Every channel is chosen and none is bad (no ``bads_changed``: set the bad channels of
        this stream with :meth:`set_bads`).
        """
        self._source = source
        self.markers.clear()
        self._type_range = {}
        self._decimator = None
        self._reconfigure = True
        self._last_data = time.monotonic()
        old = self.channels
        names, types = (source.channels.names, source.channels.types) if source else ((), ())
        self.channels = ChannelRows(names, types, old.rows_per_page)
        self.channels.set_view(old.view)
        self._color_labels = self.channels.color_labels
        self.controls.set_types(types)
        if source is None:
            self._channels_changed()
            self._draw(np.zeros((1, 1), np.uint8), 0.0, 0, 0.0)
            self.no_data.hide()
            return
        self.set_picks("all")

    def set_picks(self, picks: str | Sequence[int]) -> None:
        """Show ``"all"`` channels, those of one type (``"mag"``), or the given indices.

        They are grouped by type (:data:`gui.style.TYPE_ORDER`); the page goes back to the top.
        """
        if self._source is None:
            raise RuntimeError("Set a source with set_source() before choosing its channels.")
        self.channels.choose(picks)
        self.controls.show_picks(picks if isinstance(picks, str) else CUSTOM)
        self._channels_changed()

    def set_view(self, view: str) -> None:
        """Show a page of channels (``"channels"``) or a butterfly row per type."""
        self.channels.set_view(view)
        self.controls.show_view(view)
        self._channels_changed()
        self._update_gain_label()

    def set_rows_per_page(self, rows: int | None) -> None:
        """Show ``rows`` channels per page (None: all the chosen channels)."""
        self.channels.set_rows_per_page(rows)
        self.controls.show_rows(rows)
        self._channels_changed()

    def scroll_to(self, first: int) -> None:
        """Put the chosen channel at position ``first`` at the top of the page."""
        if self.channels.scroll_to(first):
            self._channels_changed()

    def scroll_by(self, n_rows: int) -> None:
        """Move the page ``n_rows`` channels down (negative: up)."""
        self.scroll_to(self.channels.first + int(n_rows))

    def set_bads(self, names: Iterable[str]) -> None:
        """Mark these channels bad (names not in the stream are ignored); emit ``bads_changed``."""
        if self._source is None:
            raise RuntimeError("Set a source with set_source() before marking bad channels.")
        self.channels.set_bads(set(names))
        self._bads_changed()

    def toggle_bad(self, channel: int) -> None:
        """Mark channel index ``channel`` bad, or good again if it was; emit ``bads_changed``."""
        self.channels.toggle_bad(channel)
        self._bads_changed()

    def set_span(self, seconds: float) -> None:
        """Show the last ``seconds`` of data (redraws from the buffer's history)."""
        if not (isinstance(seconds, int | float) and 0 < seconds <= max(SPANS_S)):
            raise ValueError(
                f"Invalid value for 'span': {seconds!r}; give seconds in (0, {max(SPANS_S):g}]."
            )
        self._span = float(seconds)
        self.controls.show_span(self._span)
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
        if stamps.size:
            self._image_item.show_newest(float(stamps[-1]))
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
        dec, shown, view = self._decimator, self.channels.shown, self.channels.view
        dpr = self.devicePixelRatioF()
        height = max(1, int((self.plot.getViewBox().height() - 2 * _PAD_PX) * dpr))
        n_rows = max(shown.n_rows, 1)
        pad_rows = _PAD_PX * dpr * n_rows / height
        if dec.n_kept == 0 or shown.channels.size == 0:
            self._draw(np.zeros((height, 1), np.uint8), 0.0, n_rows, pad_rows)
            return
        if not self._type_range:  # measured on the good chosen channels: pages share a scale
            good = self.channels.good_chosen()
            mins, maxs, _ = dec.columns()
            types = [self.channels.types[i] for i in good]
            self._type_range = typical_ranges(mins[:, good], maxs[:, good], types)
            self._update_gain_label()
            self._trace.invalidate()
        types = self.channels.types
        ranges = np.array([self._type_range.get(types[i], 1.0) for i in shown.channels])
        row_px = height / n_rows
        self._trace.draw(
            dec,
            shown.channels,
            gain=row_px * _ROW_FILL[view] * self._gain / ranges,
            row_px=row_px,
            height=height,
            labels=self._color_labels[shown.channels],
            rows=shown.rows,
            clip_rows=_CLIP_ROWS[view],
        )
        column_s = dec.samples_per_column / self._source.sfreq
        self._draw(None, column_s * dec.n_kept, n_rows, pad_rows)
        self.markers.place(dec.times(), column_s)

    def _draw(self, image: np.ndarray | None, width_s: float, n_rows: int, pad_rows: float) -> None:
        """Show ``image`` (None: the trace's) over the last ``width_s`` seconds and ``n_rows``."""
        if image is None:
            self._image_item.show_trace(self._trace)
        else:
            self._image_item.show_image(image)
        self._image = image
        self._image_item.setRect(QRectF(-width_s, 0.0, max(width_s, 1e-9), max(n_rows, 1)))
        view = self.plot.getViewBox()
        x_range, y_range = [-self._span, 0.0], [-pad_rows, max(n_rows, 1) + pad_rows]
        if view.viewRange() != [x_range, y_range]:  # the same every frame but after a change
            view.setXRange(*x_range, padding=0)
            view.setYRange(*y_range, padding=0)

    # ----------------------------------------------------------------- channels and bads
    def _channels_changed(self) -> None:
        """Redraw, and update the scroll bar and the names, after the channels or page moved."""
        rows, size, n = self.channels, self.channels.page_size, self.channels.order.size
        self._trace.invalidate()
        bar = self.scrollbar
        bar.blockSignals(True)
        bar.setRange(0, n - size)
        bar.setPageStep(max(1, size))
        bar.setValue(rows.first)
        bar.blockSignals(False)
        bar.setVisible(rows.view == "channels" and size < n)
        self._set_channel_ticks()

    def _bads_changed(self) -> None:
        self._color_labels = self.channels.color_labels
        self._trace.invalidate()
        self._set_channel_ticks()
        self.bads_changed.emit(self.bads)

    def _on_row_clicked(self, row: int) -> None:
        channel = self.channels.channel_at(row)
        if channel is not None:
            self.toggle_bad(channel)

    # ----------------------------------------------------------------- keys and wheel
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Page with the keys and the wheel over the plot (before pyqtgraph sees them)."""
        if watched is self.plot and event.type() == QEvent.Type.KeyPress:
            return self._handle_key(event)
        if watched is self.plot.viewport() and event.type() == QEvent.Type.Wheel:
            self._on_wheel(event)
            return True
        return super().eventFilter(watched, event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        """PageUp/PageDown, arrows, Home/End move the page; B switches the butterfly view."""
        if not self._handle_key(event):
            super().keyPressEvent(event)

    def _handle_key(self, event: QKeyEvent) -> bool:
        key, page = event.key(), max(1, self.channels.page_size)
        steps = {Qt.Key.Key_PageDown: page, Qt.Key.Key_PageUp: -page}
        steps.update({Qt.Key.Key_Down: 1, Qt.Key.Key_Up: -1})
        if key in steps:
            self.scroll_by(steps[key])
        elif key in (Qt.Key.Key_Home, Qt.Key.Key_End):
            self.scroll_to(0 if key == Qt.Key.Key_Home else self.channels.order.size)
        elif key == Qt.Key.Key_B and event.modifiers() == Qt.KeyboardModifier.NoModifier:
            self.set_view("channels" if self.view == "butterfly" else "butterfly")
        else:
            return False
        return True

    def _on_wheel(self, event: QWheelEvent) -> None:
        """One wheel notch scrolls the system's lines per notch (3 channels by default)."""
        if self.view != "channels":
            return
        self._wheel_rest += event.angleDelta().y() / 120 * QApplication.wheelScrollLines()
        steps = int(self._wheel_rest)
        self._wheel_rest -= steps
        self.scroll_by(-steps)

    # ----------------------------------------------------------------- decorations
    def _set_channel_ticks(self) -> None:
        shown = self.channels.shown
        height = max(1.0, self.plot.getViewBox().height())
        stride = max(1, math.ceil(14.0 * shown.n_rows / height))
        self._left_axis.set_rows(shown.labels, self.channels.bads, stride)
        self.controls.page_label.setText(self.channels.page_text())

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
        channels = () if self._source is None else self._source.channels
        units = dict(zip(channels.types, channels.units)) if channels else {}
        per_row = _ROW_FILL[self.channels.view] * self._gain
        heights = {t: (value / per_row, units.get(t, "")) for t, value in self._type_range.items()}
        self.controls.show_scale(self._gain, heights)

    def _update_fps_label(self) -> None:
        stamps = self._frame_stamps
        if len(stamps) < 2 or stamps[-1] == stamps[0]:
            return
        fps = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        median_ms = float(np.median(self.frame_times)) * 1e3
        text = f"{fps:.0f} fps · {median_ms:.1f} ms/frame"
        if self.paint_latencies:
            painted_ms = float(np.median(self.paint_latencies)) * 1e3
            text += f" · sample to screen {painted_ms:.0f} ms"
        self.fps_label.setText(text)
        self.fps_label.adjustSize()
        label = self.fps_label  # bottom right, beside the time axis's title
        label.move(self.plot.width() - label.width() - 6, self.plot.height() - label.height() - 2)

    def _on_channel_choice(self, choice: str) -> None:
        if choice != CUSTOM:
            self.set_picks(choice)
            return
        channels = self._source.channels
        dialog = ChannelPicker(channels.names, channels.types, self.picks, self)
        dialog.picked.connect(self.set_picks)
        dialog.setModal(False)
        dialog.show()

    def _on_painted(self, seconds: float) -> None:
        self.paint_latencies.append(seconds)
        self.painted.emit(seconds)

    def _on_resize(self) -> None:
        self._reconfigure = True
        self._trace.invalidate()
        self._set_channel_ticks()
