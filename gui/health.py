"""Stream health and latency panels: rate, drops, gaps, lag, reconnections; p50/p99 per stage.

Both read snapshots (``StreamSource.health()``, ``chunk_latencies()``,
``LatencyStats.summary()``) from QTimers; nothing here waits on the stream. The health panel
turns red while the stream is lost and says so in words, and says when the stream does not send
at its declared rate (``effective rate X Hz, nominal Y Hz``: not decoded).
"""

from __future__ import annotations

import collections
import math
import time

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QBoxLayout,
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from acquisition.markers import MarkerSource
from acquisition.stream import StreamSource
from bci_app.decoders.events import TextEvent
from bci_app.live.metrics import LatencyStats
from gui import style

_STATE_COLORS = {"connected": style.OK, "stalled": style.WARN, "lost": style.BAD}
_ROWS = (
    "Stream",
    "source_id",
    "Rate",
    "Lag",
    "Gaps",
    "Dropped",
    "Invalid",
    "Reconnections",
    "Markers",
)
_MAX_CHARS = 44
ACQUISITION_STAGE = "sample -> buffer"
SHOWN_STAGE = "emitted -> shown"
TOTAL_STAGE = "sample -> shown"
#: A sample's time to the end of painting the scope frame that first shows it (the scope's own).
PAINTED_STAGE = "sample -> painted"
_RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter


def _set_elided(label: QLabel, text: str) -> None:
    """Show ``text`` cut to one short line; the whole of it in the tooltip."""
    label.setText(text if len(text) <= _MAX_CHARS else text[: _MAX_CHARS - 1] + "…")
    label.setToolTip(text)


def _ms(seconds: float) -> str:
    return "—" if not math.isfinite(seconds) else f"{seconds * 1e3:.1f} ms"


class HealthPanel(QFrame):
    """Health of the data stream (and marker stream); red with a clear message when lost."""

    def __init__(self, parent: QWidget | None = None, *, interval_ms: int = 250) -> None:
        super().__init__(parent)
        self.setObjectName("healthPanel")
        self.source: StreamSource | None = None
        self.markers: MarkerSource | None = None
        self.state = "disconnected"
        self._lost_since: float | None = None
        self.badge = QLabel("NOT CONNECTED", alignment=Qt.AlignmentFlag.AlignCenter)
        self.message = QLabel(wordWrap=True)
        self.message.hide()
        self.values: dict[str, QLabel] = {}
        grid = QGridLayout()
        grid.setColumnStretch(1, 1)
        grid.setVerticalSpacing(2)
        for row, name in enumerate(_ROWS):
            grid.addWidget(QLabel(name, objectName="muted"), row, 0)
            value = QLabel("—", textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
            grid.addWidget(value, row, 1)
            self.values[name] = value
        self.error = QLabel(wordWrap=True, objectName="errorText")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(self.badge)
        layout.addWidget(self.message)
        layout.addLayout(grid)
        layout.addWidget(self.error)
        layout.addStretch(1)
        self._timer = QTimer(self, interval=interval_ms)
        self._timer.timeout.connect(self.refresh)
        self._show_state("disconnected")

    def set_source(self, source: StreamSource | None, markers: MarkerSource | None = None) -> None:
        """Watch ``source`` (and ``markers``); None shows "not connected"."""
        self.source, self.markers = source, markers
        self._lost_since = None
        if source is None:
            self._timer.stop()
            for value in self.values.values():
                value.setText("—")
            self.error.clear()
            self._show_state("disconnected")
        else:
            self._timer.start()
            self.refresh()

    def refresh(self) -> None:
        """Read the health snapshots and update the panel."""
        if self.source is None:
            return
        try:
            health = self.source.health()
        except Exception as exc:  # a worker error re-raised: show it, keep the window alive
            self.error.setText(f"Stream worker error: {exc}")
            self._show_state("lost")
            return
        info = self.source.info
        _set_elided(
            self.values["Stream"], f"{info.name()} ({info.type()}, {info.channel_count()} ch)"
        )
        _set_elided(self.values["source_id"], info.source_id() or "—")
        rate = health.effective_rate
        self.values["Rate"].setText(
            ("—" if math.isnan(rate) else f"{rate:.1f} Hz") + f"  (nominal {health.sfreq:g} Hz)"
        )
        self.values["Lag"].setText(_ms(health.lag_s))
        self.values["Gaps"].setText(str(health.n_gaps))
        self.values["Dropped"].setText(f"{health.dropped_samples} samples")
        self.values["Invalid"].setText(f"{health.n_invalid_samples} samples (NaN/Inf)")
        self.values["Reconnections"].setText(str(health.reconnections))
        _set_elided(self.values["Markers"], self._marker_text())
        self.error.setText(f"Last error: {health.last_error}" if health.last_error else "")
        self._show_state(health.state)
        if health.rate_mismatch is not None and health.state == "connected":
            self.message.setText(
                f"Not at its declared rate: {health.rate_mismatch}. Its data is not decoded; "
                "set the device (or its LSL driver) to the rate it declares."
            )
            self.message.show()
            self.setStyleSheet("QFrame#healthPanel { border: 3px solid #f9a825; }")

    def _marker_text(self) -> str:
        if self.markers is None:
            return "no marker stream"
        try:
            marker_health = self.markers.health()
        except Exception as exc:
            return f"error: {exc}"
        return f"{marker_health.state}, {marker_health.n_markers} received"

    def _show_state(self, state: str) -> None:
        self.state = state
        colors = _STATE_COLORS.get(state, style.IDLE)
        self.badge.setText(state.upper() if state != "disconnected" else "NOT CONNECTED")
        self.badge.setStyleSheet(style.badge_css(colors) + "font-size: 14pt; padding: 6px;")
        if state == "lost":
            self._lost_since = self._lost_since or time.monotonic()
            waited = time.monotonic() - self._lost_since
            self.message.setText(
                f"Stream lost {waited:.0f} s ago: no connection to its outlet. Waiting for it to "
                "come back (same source_id); the buffer and recording are kept."
            )
            self.message.show()
            self.setStyleSheet(
                "QFrame#healthPanel { background: #c62828; } "
                "QFrame#healthPanel QLabel { color: #ffffff; }"
            )
        else:
            self._lost_since = None
            self.message.setVisible(state == "stalled")
            self.message.setText("No data for over a second: the outlet is stalled.")
            border = "#f9a825" if state == "stalled" else "transparent"
            self.setStyleSheet(f"QFrame#healthPanel {{ border: 3px solid {border}; }}")


class LatencyPanel(QWidget):
    """Latency per stage (p50/p99) and a live histogram of one stage.

    Rows come from the engine's :class:`~bci_app.live.metrics.LatencyStats` (:meth:`set_stats`) and
    from what the GUI measures itself: chunk arrival of the stream (``sample -> buffer``), the
    scope's ``sample -> painted`` (:meth:`add_painted`), and for each TextEvent the time from
    emission to display and from its sample time to display.
    """

    def __init__(self, parent: QWidget | None = None, *, interval_ms: int = 1000) -> None:
        super().__init__(parent)
        self.own = LatencyStats(maxlen=20_000)
        self.engine: LatencyStats | None = None
        self.source: StreamSource | None = None
        self._chunks_seen = 0
        self._recent: dict[str, collections.deque[float]] = {}
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["Stage", "n", "p50", "p99", "max"])
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, 5):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.stage_combo = QComboBox()
        self.histogram = pg.PlotWidget(background="w")
        self.histogram.setMinimumSize(220, 100)
        plot = self.histogram.getPlotItem()
        plot.setMenuEnabled(False)
        plot.setMouseEnabled(x=False, y=False)
        plot.hideButtons()
        plot.setLabel("bottom", "latency (ms)")  # no SI prefix: "kms" reads wrong
        plot.setLabel("left", "count")
        self._bars = pg.PlotDataItem(
            stepMode="center", fillLevel=0, brush=(30, 136, 229, 160), pen="#1565c0"
        )
        plot.addItem(self._bars)
        row = QHBoxLayout()
        row.addWidget(QLabel("Histogram of", objectName="muted"))
        row.addWidget(self.stage_combo, stretch=1)
        right = QVBoxLayout()
        right.addLayout(row)
        right.addWidget(self.histogram, stretch=1)
        self._layout = QBoxLayout(QBoxLayout.Direction.LeftToRight, self)
        self._layout.setContentsMargins(6, 6, 6, 6)
        self._layout.addWidget(self.table, stretch=3)
        self._layout.addLayout(right, stretch=2)
        self._timer = QTimer(self, interval=interval_ms)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()

    def resizeEvent(self, event) -> None:
        """Table beside the histogram when wide, above it when narrow."""
        super().resizeEvent(event)
        wide = event.size().width() >= 2 * event.size().height() and event.size().width() > 640
        self._layout.setDirection(
            QBoxLayout.Direction.LeftToRight if wide else QBoxLayout.Direction.TopToBottom
        )

    def set_stats(self, stats: LatencyStats | None) -> None:
        """Show the stage latencies of the live engine (None: only the GUI's own)."""
        self.engine = stats

    def set_source(self, source: StreamSource | None) -> None:
        """Measure the chunk arrival latency of ``source``."""
        self.source = source
        self._chunks_seen = 0

    def add_event(self, event: TextEvent, shown_at: float) -> None:
        """Account one TextEvent shown at ``shown_at`` (LSL local clock)."""
        if event.stages:
            self._add(SHOWN_STAGE, shown_at - max(event.stages.values()))
        if math.isfinite(event.timestamp):
            self._add(TOTAL_STAGE, shown_at - event.timestamp)

    def add_painted(self, seconds: float) -> None:
        """Account one scope frame's ``sample -> painted`` latency (connect ``painted`` here)."""
        self._add(PAINTED_STAGE, seconds)

    def _add(self, stage: str, seconds: float) -> None:
        self.own.add(stage, seconds)
        self._recent.setdefault(stage, collections.deque(maxlen=2000)).append(seconds)

    def refresh(self) -> None:
        """Read the latest latencies and redraw the table and the histogram."""
        if self.source is not None:
            try:
                latencies, self._chunks_seen = self.source.chunk_latencies(self._chunks_seen)
            except Exception:  # the health panel reports worker errors
                latencies = np.empty(0)
            for value in latencies[-2000:]:
                self._add(ACQUISITION_STAGE, float(value))
        rows = dict(self.engine.summary()) if self.engine is not None else {}
        rows.update(self.own.summary())
        self.table.setRowCount(len(rows))
        for r, (stage, s) in enumerate(rows.items()):
            cells = [stage, str(s["n"])]
            cells += [f"{s[key]:.1f} ms" for key in ("p50_ms", "p99_ms", "max_ms")]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c:
                    item.setTextAlignment(_RIGHT)
                self.table.setItem(r, c, item)
        self._update_histogram()

    def _update_histogram(self) -> None:
        stages = list(self._recent)
        if [self.stage_combo.itemText(i) for i in range(self.stage_combo.count())] != stages:
            current = self.stage_combo.currentText()
            self.stage_combo.clear()
            self.stage_combo.addItems(stages)
            preferred = current or (TOTAL_STAGE if TOTAL_STAGE in stages else stages[0])
            self.stage_combo.setCurrentText(preferred if preferred in stages else stages[0])
        values = self._recent.get(self.stage_combo.currentText())
        if not values:
            return
        ms = np.asarray(values) * 1e3
        high = max(float(np.percentile(ms, 99.5)), 1e-3)
        counts, edges = np.histogram(np.clip(ms, 0, high), bins=30, range=(0, high))
        self._bars.setData(edges, counts)
