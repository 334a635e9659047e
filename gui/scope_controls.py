"""The scope's tool bar: channels, butterfly view, rows per page, span and trace size.

:class:`ScopeControls` only shows and reports choices; the :class:`~gui.scope.ScopeWidget` acts
on its signals and tells it what to show, so a choice made in code and one made with the mouse
look the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyqtgraph as pg
from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtGui import QKeySequence
from PyQt6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QWidget

from gui.scope_rows import DEFAULT_ROWS

SPANS_S = (1.0, 2.0, 5.0, 10.0, 20.0)
#: Rows per page offered (None: every chosen channel on one page).
ROWS_PER_PAGE = (10, 20, DEFAULT_ROWS, 30, 50, 100, None)
CUSTOM = "custom"


class ScopeControls(QWidget):
    """The row of controls above the scope's traces.

    Signals
    -------
    picks_chosen(str) : ``"all"``, a channel type, or ``"custom"`` (open the channel picker).
    view_chosen(str) : ``"channels"`` or ``"butterfly"``.
    rows_chosen(int) : channels per page (0: all).
    span_chosen(float) : seconds shown.
    gain_stepped(float) : multiply the trace size by this factor.
    auto_requested : fit the trace size to the data.
    """

    picks_chosen = pyqtSignal(str)
    view_chosen = pyqtSignal(str)
    rows_chosen = pyqtSignal(int)
    span_chosen = pyqtSignal(float)
    gain_stepped = pyqtSignal(float)
    auto_requested = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.channel_combo = QComboBox(minimumContentsLength=14)
        self.channel_combo.activated.connect(
            lambda i: self.picks_chosen.emit(self.channel_combo.itemData(i))
        )
        self.butterfly_button = QPushButton(
            "Butterfly", checkable=True, toolTip="All channels of a type in one row (B)"
        )
        self.butterfly_button.clicked.connect(
            lambda on: self.view_chosen.emit("butterfly" if on else "channels")
        )
        self.rows_combo = QComboBox(toolTip="Channels per page")
        for rows in ROWS_PER_PAGE:
            self.rows_combo.addItem("all" if rows is None else str(rows), rows or 0)
        self.rows_combo.activated.connect(
            lambda i: self.rows_chosen.emit(self.rows_combo.itemData(i))
        )
        self.page_label = QLabel(objectName="muted", toolTip="Channels on this page")
        self.span_combo = QComboBox()
        for span in SPANS_S:
            self.span_combo.addItem(f"{span:g} s", span)
        self.span_combo.activated.connect(
            lambda i: self.span_chosen.emit(self.span_combo.itemData(i))
        )
        smaller = QPushButton("−", toolTip="Smaller traces (-)")
        larger = QPushButton("+", toolTip="Larger traces (+)")
        for button, key, factor in ((smaller, "-", 1 / math.sqrt(2)), (larger, "+", math.sqrt(2))):
            button.setFixedWidth(30)
            button.setShortcut(QKeySequence(key))
            button.clicked.connect(lambda _c, f=factor: self.gain_stepped.emit(f))
        auto = QPushButton("Auto", toolTip="Fit the trace size to the data shown")
        auto.setMaximumWidth(56)
        auto.clicked.connect(self.auto_requested)
        self.gain_label = QLabel(minimumWidth=44, alignment=Qt.AlignmentFlag.AlignCenter)
        # the scale text gives way first when the window is narrow (in full in its tooltip)
        self.scale_label = QLabel(objectName="muted")
        self.scale_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        for widget in (
            *(QLabel("Channels"), self.channel_combo, self.butterfly_button),
            *(QLabel("  Rows"), self.rows_combo, self.page_label),
            *(QLabel("  Span"), self.span_combo, QLabel("  Scale")),
            *(smaller, self.gain_label, larger, auto),
        ):
            row.addWidget(widget)
        row.addWidget(self.scale_label, stretch=1)
        self.show_rows(DEFAULT_ROWS)

    def set_types(self, types: Sequence[str]) -> None:
        """Offer all channels, each type of ``types`` and a choice by name (none: nothing)."""
        self.channel_combo.clear()
        if not types:
            return
        self.channel_combo.addItem(f"All ({len(types)})", "all")
        for ch_type in dict.fromkeys(types):
            self.channel_combo.addItem(f"{ch_type} ({list(types).count(ch_type)})", ch_type)
        self.channel_combo.addItem("Choose…", CUSTOM)

    def show_picks(self, choice: str) -> None:
        """Show ``"all"``, a type or ``"custom"`` as the channels chosen."""
        self.channel_combo.setCurrentIndex(max(0, self.channel_combo.findData(choice)))

    def show_view(self, view: str) -> None:
        """Show the butterfly button pressed in the butterfly view."""
        self.butterfly_button.setChecked(view == "butterfly")

    def show_rows(self, rows: int | None) -> None:
        """Show the rows per page (None: all), if offered."""
        index = self.rows_combo.findData(rows or 0)
        if index >= 0:
            self.rows_combo.setCurrentIndex(index)

    def show_span(self, span: float) -> None:
        """Show the seconds shown."""
        self.span_combo.setCurrentIndex(self.span_combo.findData(span))

    def show_scale(self, gain: float, row_heights: dict[str, tuple[float, str]]) -> None:
        """Show the gain and what a row's height is worth per type: ``{type: (value, unit)}``."""
        self.gain_label.setText(f"×{gain:.2g}")
        parts = [
            pg.siFormat(value, suffix="" if unit in ("n/a", "") else unit) + f" {ch_type}"
            for ch_type, (value, unit) in row_heights.items()
        ]
        text = "row height: " + ", ".join(parts) if parts else ""
        self.scale_label.setText(text)
        self.scale_label.setToolTip(text)
