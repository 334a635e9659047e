"""Marker lines of the scope: one labelled vertical line per marker, placed by its timestamp."""

from __future__ import annotations

import collections
from collections.abc import Iterable

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QPointF, Qt
from PyQt6.QtGui import QFont
from PyQt6.QtWidgets import QGraphicsObject
from pyqtgraph.graphicsItems.InfiniteLine import InfLineLabel

from acquisition.recording import Marker, parse_marker
from gui import style

_MAX_MARKERS = 200


class MarkerLines:
    """The most recent markers, drawn as vertical lines with short labels on a plot.

    Lines are pooled; a line keeps its marker while it is shown and is only restyled for a new
    one, so a frame costs a cheap move (:meth:`_MarkerLine.move_to`) per visible marker.
    """

    def __init__(self, plot_item: pg.PlotItem) -> None:
        self._plot_item = plot_item
        self._markers: collections.deque[Marker] = collections.deque(maxlen=_MAX_MARKERS)
        self.lines: list[_MarkerLine] = []
        self._font = QFont()
        self._font.setBold(True)

    def add(self, markers: Iterable[Marker]) -> None:
        """Remember markers to draw (local-clock timestamps)."""
        self._markers.extend(markers)

    def clear(self) -> None:
        """Forget every marker."""
        self._markers.clear()

    def place(self, times: np.ndarray, column_s: float) -> None:
        """Put each marker at the x of its time, given each column's first-sample time.

        The newest column starts ``column_s`` seconds before x = 0; markers newer than the
        newest column are placed by their time difference.
        """
        shown = [m for m in self._markers if m.timestamp >= times[0]]
        column_x = -column_s * (np.arange(times.size)[::-1] + 1)
        stamps = np.array([m.timestamp for m in shown])
        xs = np.where(
            stamps <= times[-1],
            np.interp(stamps, times, column_x),
            column_x[-1] + (stamps - times[-1]),
        )
        # A line keeps its marker while the marker is shown (restyling every line each time the
        # oldest marker scrolled out took ~1/3 of this method), and the others are reused.
        wanted = {id(m) for m in shown}
        kept = {id(line.marker): line for line in self.lines if id(line.marker) in wanted}
        free = [line for line in self.lines if id(line.marker) not in wanted]
        for marker, x in zip(shown, xs):
            line = kept.get(id(marker))
            if line is None:
                line = free.pop() if free else self._new_line()
                line.marker = marker
                line.show()  # before styling: a hidden label ignores a new text
                _style(line, marker)
            # Moved without its signal: the label's handler re-renders its (fixed) text and
            # re-places it along the line on every move, ~3/4 of a move's cost, and as a child
            # item the label moves with the line anyway (5.7 ms a frame for a 10 s page of
            # keystrokes before both changes). See _MarkerLine for the rest.
            line.move_to(min(float(x), 0.0))
            line.show()
        for line in free:
            line.marker = None
            line.hide()

    def _new_line(self) -> _MarkerLine:
        line = _MarkerLine()
        line.setZValue(10)
        line.label.fill = pg.mkBrush(255, 255, 255, 240)
        line.label.setFont(self._font)
        line.marker = None
        self._plot_item.addItem(line)
        self.lines.append(line)
        return line


class _MarkerLabel(InfLineLabel):
    """A marker line's label, whose transform is recomputed only when the view is scaled.

    Before every paint, pyqtgraph recomputes a text item's transform whenever its parent's scene
    transform changed; that transform only undoes the parent's scale and rotation (the text keeps
    its size), so after a move of the line (every marker, every frame) it comes out the same, at
    ~10 us of Python per label per paint.
    """

    _linear: tuple | None = None  # scale and rotation of the line the transform was made for

    def updateTransform(self, force: bool = False) -> None:
        """Recompute the transform if the line's scale or rotation in the scene changed."""
        parent = self.parentItem()
        if parent is None or not self.isVisible():
            super().updateTransform(force)
            return
        scene = parent.sceneTransform()
        linear = (scene.m11(), scene.m12(), scene.m21(), scene.m22())
        if force or linear != self._linear:
            super().updateTransform(force=True)
            self._linear = linear


class _MarkerLine(pg.InfiniteLine):
    """A marker's vertical line with its label (:class:`_MarkerLabel`), cheap to move every frame.

    pyqtgraph's ``setPos`` makes the line recompute its bounds at the next paint (the view
    mapped into the line, the size of a pixel: ~40 us of Python). A vertical line's bounds, in
    its own coordinates, span the view's height and a few pixels across wherever it is, so
    :meth:`move_to` keeps them; they are still recomputed when the view changes.
    """

    def __init__(self) -> None:
        super().__init__(angle=90, movable=False)
        self.label = _MarkerLabel(self, text="", position=0.03)
        self.marker: Marker | None = None
        # Without it, every move calls pyqtgraph back twice (its itemChange) to tell the view the
        # line's bounds changed, for auto-range (~0.5 ms a frame for 30 markers); a line's data
        # bounds do not depend on where it is, and the scope sets the view's range itself.
        self.setFlag(self.GraphicsItemFlag.ItemSendsGeometryChanges, False)

    def move_to(self, x: float) -> None:
        """Put the line at ``x`` (view coordinates), without ``sigPositionChanged``."""
        if self.p[0] == x:
            return
        self.p = [x, 0]
        self._cachedView = None  # the view as the line sees it (the label's side) did move
        QGraphicsObject.setPos(self, QPointF(x, 0.0))

    def paint(self, painter, *args) -> None:
        """Draw the line between the ends found with its bounds (as pyqtgraph does, leaner)."""
        if self.markers:
            super().paint(painter, *args)
            return
        left, right = self._endPoints
        pen = self.currentPen
        pen.setJoinStyle(Qt.PenJoinStyle.MiterJoin)
        painter.setPen(pen)
        painter.drawLine(QPointF(left, 0.0), QPointF(right, 0.0))


def _style(line: pg.InfiniteLine, marker: Marker) -> None:
    kind, payload = parse_marker(marker.value)
    color = style.MARKER_COLORS.get(kind, style.OTHER_MARKER)
    line.setPen(pg.mkPen(color, width=1))
    line.label.setFormat(marker_text(kind, payload, marker.value))
    line.label.setColor(color)
    line.label.border = pg.mkPen(color)
    line.label.setPosition(0.03 if kind == "key" else 0.09)


def marker_text(kind: str, payload: str, value: str) -> str:
    """Short label of a marker: the key typed, the word heard, the sentence start, or the value."""
    if kind == "key":
        return {" ": "␣", "\n": "⏎", "\b": "⌫"}.get(payload, payload)
    if kind == "sentence_start":
        return "▶ " + (payload if len(payload) <= 28 else payload[:27] + "…")
    if kind == "sentence_end":
        return "■ end"
    if kind == "word":  # listening: word onsets come every ~0.3 s, so the word alone
        return payload if len(payload) <= 14 else payload[:13] + "…"
    return value if len(value) <= 18 else value[:17] + "…"
