"""Which channels the scope draws on which row, and the column of channel names beside them.

The scope shows the chosen channels grouped by sensor type (:data:`gui.style.TYPE_ORDER`: mag,
grad, EEG, sEEG, ...), as MNE's raw browser does, in one of two views:

- ``"channels"``: a page of consecutive channels, one row each (:func:`page_rows`); the scope
  scrolls the page through the channels.
- ``"butterfly"``: one row per channel type with every channel of that type overlaid
  (:func:`butterfly_rows`).

:class:`ChannelAxis` is the left axis that names the rows: bad channels in red, and a click on a
channel's name reports its row (the scope toggles the channel bad).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QColor

from gui import style

VIEWS = ("channels", "butterfly")
DEFAULT_ROWS = 25
#: Colour label of a bad channel's trace: the lowest, so it is drawn beneath the others.
BAD_LABEL = 1


def type_order(types: Sequence[str]) -> list[str]:
    """The distinct channel types of ``types`` in display order (known types first)."""
    present = list(dict.fromkeys(types))
    known = [t for t in style.TYPE_ORDER if t in present]
    return known + [t for t in present if t not in known]


def grouped(chosen: Sequence[int], types: Sequence[str]) -> np.ndarray:
    """The channel indices ``chosen`` grouped by type, in stream order within a type."""
    rank = {t: k for k, t in enumerate(type_order([types[i] for i in chosen]))}
    return np.array(sorted(chosen, key=lambda i: (rank[types[i]], i)), dtype=np.int64)


@dataclass(frozen=True)
class Rows:
    """What the scope draws: channels, the row each is drawn on, and the name of each row.

    Attributes
    ----------
    channels : array of int
        Stream indices of the channels drawn.
    rows : array of int
        Row of each drawn channel (0 at the top).
    labels : tuple of str
        Text of each row, top to bottom: a channel name, or a type and its count.
    row_channels : tuple of int | None
        Channel of each row (None: a butterfly row, which holds a whole type).
    """

    channels: np.ndarray
    rows: np.ndarray
    labels: tuple[str, ...]
    row_channels: tuple[int | None, ...]

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return len(self.labels)


_NO_ROWS = Rows(np.zeros(0, np.int64), np.zeros(0, np.int64), (), ())


def page_rows(order: np.ndarray, names: Sequence[str], first: int, size: int) -> Rows:
    """One row per channel for ``size`` channels of ``order`` from position ``first``."""
    page = order[first : first + size]
    return Rows(
        page,
        np.arange(page.size),
        tuple(names[i] for i in page),
        tuple(int(i) for i in page),
    )


def butterfly_rows(order: np.ndarray, types: Sequence[str]) -> Rows:
    """One row per channel type, all channels of ``order`` of that type overlaid on it."""
    kinds = type_order([types[i] for i in order])
    rows = np.array([kinds.index(types[i]) for i in order], dtype=np.int64)
    counts = np.bincount(rows, minlength=len(kinds))
    labels = tuple(f"{kind} ({count})" for kind, count in zip(kinds, counts))
    return Rows(order, rows, labels, (None,) * len(kinds))


class ChannelRows:
    """The scope's channels: those chosen, grouped by type, the view, the page and the bads.

    Plain Python, no Qt: the scope widget draws what :attr:`shown` says and colours each
    channel's trace with :attr:`color_labels`.

    Parameters
    ----------
    names, types : sequence of str
        The stream's channel names and types (empty: no stream).
    rows_per_page : int | None
        Channels per page (None: all the chosen channels).
    """

    def __init__(
        self,
        names: Sequence[str] = (),
        types: Sequence[str] = (),
        rows_per_page: int | None = DEFAULT_ROWS,
    ) -> None:
        self.names, self.types = tuple(names), tuple(types)
        self.order = grouped(range(len(self.names)), self.types)  # chosen channels, grouped
        self.view = "channels"
        self.rows_per_page = rows_per_page
        self.first = 0
        self.bads: frozenset[str] = frozenset()
        self.shown = _NO_ROWS
        self._update()

    @property
    def page_size(self) -> int:
        """Channels on a full page."""
        n = self.order.size
        return n if self.rows_per_page is None else min(self.rows_per_page, n)

    @property
    def bad_names(self) -> list[str]:
        """Names of the bad channels, in stream order."""
        return [name for name in self.names if name in self.bads]

    @property
    def color_labels(self) -> np.ndarray:
        """Colour label of every channel's trace: the bad one, else its type's (LUT indices)."""
        labels = [type_label(t) for t in self.types]
        for i, name in enumerate(self.names):
            if name in self.bads:
                labels[i] = BAD_LABEL
        return np.array(labels, dtype=np.uint8)

    def choose(self, picks: str | Sequence[int]) -> None:
        """Choose ``"all"`` channels, those of one type (``"mag"``), or these indices."""
        if isinstance(picks, str):
            chosen = [i for i, t in enumerate(self.types) if picks in ("all", t)]
        else:
            chosen = [int(i) for i in picks]
        if not chosen or any(not 0 <= i < len(self.names) for i in chosen):
            raise ValueError(
                f"Invalid value for 'picks': {picks!r}; give 'all', a channel type of this stream "
                f"({', '.join(dict.fromkeys(self.types))}) or indices 0..{len(self.names) - 1}."
            )
        self.order = grouped(list(dict.fromkeys(chosen)), self.types)
        self.first = 0
        self._update()

    def set_view(self, view: str) -> None:
        """``"channels"``: a page of channels; ``"butterfly"``: one row per type."""
        if view not in VIEWS:
            raise ValueError(f"Invalid value for 'view': {view!r}; use one of {VIEWS}.")
        self.view = view
        self._update()

    def set_rows_per_page(self, rows: int | None) -> None:
        """Show ``rows`` channels per page (None: all the chosen channels)."""
        if rows is not None and (isinstance(rows, bool) or int(rows) != rows or rows < 1):
            raise ValueError(
                f"Invalid value for 'rows': {rows!r}; give a number of channels >= 1, or None "
                "for all of them."
            )
        self.rows_per_page = None if rows is None else int(rows)
        self._update()

    def scroll_to(self, first: int) -> bool:
        """Put the chosen channel at position ``first`` at the top; return whether it moved."""
        before = self.first
        self.first = int(first)
        self._update()
        return self.first != before

    def set_bads(self, names: Collection[str]) -> None:
        """Mark these channels bad (names not in the stream are ignored)."""
        self.bads = frozenset(names) & frozenset(self.names)

    def toggle_bad(self, channel: int) -> None:
        """Mark channel index ``channel`` bad, or good again if it was bad."""
        self.bads = self.bads ^ {self.names[channel]}

    def channel_at(self, row: int) -> int | None:
        """Channel index drawn on ``row`` alone (None: no such row, or a butterfly row)."""
        return self.shown.row_channels[row] if 0 <= row < self.shown.n_rows else None

    def good_chosen(self) -> list[int]:
        """The chosen channels that are not bad (all of them if every one is bad)."""
        return [i for i in self.order if self.names[i] not in self.bads] or list(self.order)

    def page_text(self) -> str:
        """Where the page is: ``"26–50 of 306 · 1 bad"``."""
        n, rows = self.order.size, self.shown.n_rows
        if n == 0:
            return ""
        if self.view == "butterfly":
            text = f"{n} ch, {rows} types"
        else:
            text = f"{self.first + 1}–{self.first + rows} of {n}"
        return text + (f" · {len(self.bads)} bad" if self.bads else "")

    def _update(self) -> None:
        size = self.page_size
        self.first = min(max(0, self.first), self.order.size - size)
        if self.order.size == 0:
            self.shown = _NO_ROWS
        elif self.view == "butterfly":
            self.shown = butterfly_rows(self.order, self.types)
        else:
            self.shown = page_rows(self.order, self.names, self.first, size)


def type_label(ch_type: str) -> int:
    """Colour label of a good channel of ``ch_type`` (after :data:`BAD_LABEL`)."""
    keys = list(style.TYPE_COLORS)
    return keys.index(ch_type) + 2 if ch_type in keys else len(keys) + 2


def color_table() -> np.ndarray:
    """RGBA lookup table of the colour labels (0: background, transparent)."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    lut[BAD_LABEL] = (*style.BAD_TRACE, 255)
    for label, rgb in enumerate([*style.TYPE_COLORS.values(), style.OTHER_TRACE], start=2):
        lut[label] = (*rgb, 255)
    return lut


class ChannelAxis(pg.AxisItem):
    """Left axis naming the scope's rows; bad channels in red, a click reports the row.

    Parameters
    ----------
    on_click : callable
        Called with the row index (0 at the top) under a left click.
    """

    def __init__(self, on_click: Callable[[int], None]) -> None:
        super().__init__("left")
        self._on_click = on_click
        self._bad_names: frozenset[str] = frozenset()
        self._bad_pen = pg.mkPen(QColor(style.BAD[0]))
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("Click a channel name to mark the channel bad, or good again.")

    def set_rows(self, labels: Sequence[str], bad_names: Collection[str], stride: int) -> None:
        """Name every ``stride``-th row; names in ``bad_names`` are drawn in red."""
        self._bad_names = frozenset(bad_names)
        ticks = [(k + 0.5, label) for k, label in enumerate(labels) if k % stride == 0]
        self.setTicks([ticks, []])

    def drawPicture(self, p, axisSpec, tickSpecs, textSpecs) -> None:
        """Draw the axis and its ticks as pyqtgraph does, then the names in their colours."""
        super().drawPicture(p, axisSpec, tickSpecs, [])
        for rect, flags, text in textSpecs:
            p.setPen(self._bad_pen if text in self._bad_names else self.textPen())
            p.drawText(rect, int(flags), text)

    def mouseClickEvent(self, event) -> None:
        """A left click on a name reports its row; other clicks go to the plot."""
        view = self.linkedView()
        if view is None or event.button() != Qt.MouseButton.LeftButton:
            super().mouseClickEvent(event)
            return
        event.accept()
        self._on_click(math.floor(view.mapSceneToView(event.scenePos()).y()))
