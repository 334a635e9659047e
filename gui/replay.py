"""Replay controls: open a recording, stream it to LSL at a chosen speed, pause, seek.

Opening reads the header and markers (:func:`acquisition.io.open_recording`) in the background;
Play starts an :class:`~acquisition.player.Player` on a unique source_id and announces it with
``playing(data_source_id, marker_source_id)`` so the window connects to it like to any stream.
Seeking goes to a sentence (its ``sentence_start`` marker) or, for recordings without sentences,
to any marker, or anywhere with the position slider.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
from PyQt6.QtCore import Qt, QTimer, pyqtSignal
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QStyle,
    QWidget,
)

from acquisition.io import SUPPORTED_FORMATS, RecordingReader, open_recording
from acquisition.player import Player
from acquisition.recording import parse_marker
from gui.tasks import run_in_background

SPEEDS = (("0.5×", 0.5), ("1× (real time)", 1.0), ("2×", 2.0), ("5×", 5.0), ("10×", 10.0))
_FILTER = "Recordings (" + " ".join(f"*{ext}" for ext in SUPPORTED_FORMATS) + ")"


#: Display names of MNE's reader names (``meta["format"]``); others are shown upper-case.
FORMAT_NAMES = {
    "brainvision": "BrainVision",
    "eeglab": "EEGLAB",
    "nihon": "Nihon Kohden",
    "curry": "Curry",
    "nicolet": "Nicolet",
    "neuralynx": "Neuralynx",
    "persyst": "Persyst",
    "nirx": "NIRx",
    "snirf": "SNIRF",
    "eximia": "eXimia",
}


class ReplayPanel(QWidget):
    """Replay a recording to LSL with speed, pause/resume and seek controls."""

    playing = pyqtSignal(str, str)
    stopped = pyqtSignal()
    failed = pyqtSignal(str)
    opened = pyqtSignal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.path: Path | None = None
        self.reader: RecordingReader | None = None
        self.player: Player | None = None
        self._launched: Player | None = None  # set by the worker, taken by the GUI
        self._starting = False
        self.seek_points: list[tuple[str, int]] = []
        self._dragging = False
        self.open_button = QPushButton("Open recording…")
        self.open_button.clicked.connect(self._choose_file)
        self.file_label = QLabel("No recording open.", objectName="muted", wordWrap=True)
        self.speed_combo = QComboBox()
        for label, speed in SPEEDS:
            self.speed_combo.addItem(label, speed)
        self.speed_combo.setCurrentIndex(1)
        self.loop_box = QCheckBox("Loop")
        icons = self.style()
        self.play_button = QPushButton("Play", enabled=False)
        self.play_button.setIcon(icons.standardIcon(QStyle.StandardPixmap.SP_MediaPlay))
        self.play_button.clicked.connect(self.play)
        self.pause_button = QPushButton("Pause", enabled=False, checkable=True)
        self.pause_button.setIcon(icons.standardIcon(QStyle.StandardPixmap.SP_MediaPause))
        self.pause_button.toggled.connect(self._on_pause_toggled)
        self.stop_button = QPushButton("Stop", enabled=False)
        self.stop_button.setIcon(icons.standardIcon(QStyle.StandardPixmap.SP_MediaStop))
        self.stop_button.clicked.connect(self.stop)
        self.slider = QSlider(Qt.Orientation.Horizontal, enabled=False)
        self.slider.sliderPressed.connect(lambda: setattr(self, "_dragging", True))
        self.slider.sliderReleased.connect(self._on_slider_released)
        self.position_label = QLabel("0.0 / 0.0 s", minimumWidth=110)
        self.seek_combo = QComboBox(minimumContentsLength=30, enabled=False)
        self.seek_kind = QLabel("Seek to sentence")
        self.seek_button = QPushButton("Go", enabled=False)
        self.seek_button.clicked.connect(lambda: self.seek_to_point(self.seek_combo.currentIndex()))
        self._build_layout()
        self._timer = QTimer(self, interval=200)
        self._timer.timeout.connect(self._poll)

    def _build_layout(self) -> None:
        grid = QGridLayout(self)
        grid.setContentsMargins(6, 6, 6, 6)
        grid.addWidget(self.open_button, 0, 0)
        grid.addWidget(self.file_label, 0, 1, 1, 3)
        controls = QHBoxLayout()
        for widget in (QLabel("Speed"), self.speed_combo, self.loop_box, self.play_button):
            controls.addWidget(widget)
        controls.addWidget(self.pause_button)
        controls.addWidget(self.stop_button)
        controls.addStretch(1)
        grid.addLayout(controls, 1, 0, 1, 4)
        grid.addWidget(QLabel("Position"), 2, 0)
        grid.addWidget(self.slider, 2, 1, 1, 2)
        grid.addWidget(self.position_label, 2, 3)
        grid.addWidget(self.seek_kind, 3, 0)
        grid.addWidget(self.seek_combo, 3, 1, 1, 2)
        grid.addWidget(self.seek_button, 3, 3)
        grid.setColumnStretch(1, 1)
        grid.setRowStretch(4, 1)

    # ----------------------------------------------------------------- open
    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a recording", "", _FILTER)
        if path:
            self.open(path)

    def open(self, path: str | Path) -> None:
        """Read the recording's header and markers in the background (``opened`` follows)."""
        if self.player is not None:
            self.failed.emit("Stop the replay before opening another recording.")
            return
        self.file_label.setText(f"Opening {path}…")
        run_in_background(
            lambda: open_recording(path),
            name="open-recording",
            owner=self,
            on_done=lambda reader: self._on_opened(Path(path), reader),
            on_error=lambda exc: self._fail(f"Could not open the recording: {exc}"),
        )

    def _on_opened(self, path: Path, reader: RecordingReader) -> None:
        self.path, self.reader = path, reader
        fmt = reader.meta.get("format", "xdf")
        fmt = FORMAT_NAMES.get(fmt, fmt.upper())
        self.file_label.setText(
            f"<b>{path.name}</b> — {fmt}, {reader.channels.n_channels} channels, "
            f"{reader.sfreq:g} Hz, {reader.n_times / reader.sfreq:.1f} s, "
            f"{len(reader.markers)} markers"
        )
        samples = reader.marker_samples()
        sentences = [
            (parse_marker(m.value)[1], int(s))
            for m, s in zip(reader.markers, samples)
            if parse_marker(m.value)[0] == "sentence_start"
        ]
        if sentences:
            self.seek_kind.setText("Seek to sentence")
            self.seek_points = sentences
        else:
            self.seek_kind.setText("Seek to marker")
            self.seek_points = [(m.value, int(s)) for m, s in zip(reader.markers, samples)]
        self.seek_combo.clear()
        for label, sample in self.seek_points:
            self.seek_combo.addItem(f"{sample / reader.sfreq:7.2f} s  {label}")
        self.slider.setRange(0, max(0, reader.n_times - 1))
        self.slider.setValue(0)
        self._update_position(0)
        self._set_playing(False)
        self.opened.emit(str(path))

    # ----------------------------------------------------------------- transport
    def play(self) -> None:
        """Start streaming the open recording from the slider's position."""
        if self.reader is None or self.player is not None:
            return
        speed, loop = self.speed_combo.currentData(), self.loop_box.isChecked()
        start = self.slider.value()
        source_id = f"bci-app-replay-{uuid.uuid4().hex[:8]}"
        source = self.path
        if self.path.suffix.lower() in (".xdf", ".xdfz"):
            source = self.reader.to_recording()  # already in memory: do not parse it again

        def make() -> Player:
            player = Player(
                source, speed=speed, loop=loop, source_id=source_id, wait_for_consumer=True
            )
            if start:
                player.seek(start)
            self._launched = player.start()
            return player

        self._set_playing(True)
        self._starting = True
        run_in_background(
            make,
            name="replay-start",
            owner=self,
            on_done=self._on_started,
            on_error=lambda exc: self._fail(f"Could not replay: {exc}"),
        )

    def _on_started(self, player: Player) -> None:
        self._launched = None
        if not self._starting:  # stopped while it was starting
            run_in_background(player.stop, name="replay-stop", owner=self)
            return
        self._starting = False
        self.player = player
        self._timer.start()
        self.playing.emit(player.source_id, player.marker_info.source_id())

    def toggle_pause(self) -> None:
        """Pause a playing replay, or resume a paused one."""
        self.pause_button.setChecked(not self.pause_button.isChecked())

    def _on_pause_toggled(self, paused: bool) -> None:
        player = self.player
        if player is None or player.done.is_set() or player.paused == paused:
            return
        (player.pause if paused else player.resume)()
        self.pause_button.setText("Resume" if paused else "Pause")

    def seek_to_point(self, index: int) -> None:
        """Continue from the ``index``-th sentence (or marker) of the list."""
        if not 0 <= index < len(self.seek_points):
            return
        self.seek(self.seek_points[index][1])

    def seek(self, sample: int) -> None:
        """Continue from ``sample`` (or start there when not playing)."""
        self.slider.setValue(int(sample))
        self._update_position(int(sample))
        if self.player is not None and not self.player.done.is_set():
            self.player.seek(int(sample))

    def stop(self) -> None:
        """Stop the replay (its LSL streams close)."""
        player, self.player = self.player, None
        self._starting = False
        self._timer.stop()
        self._set_playing(False)
        if player is None:
            return
        run_in_background(
            player.stop,
            name="replay-stop",
            owner=self,
            on_done=lambda _r: self.stopped.emit(),
            on_error=lambda exc: self._fail(f"The replay failed: {exc}"),
        )

    def close_now(self) -> None:
        """Stop any player at once, also one still starting (the window is closing; blocks)."""
        player = self.player or self._launched
        self.player = self._launched = None
        self._starting = False
        self._timer.stop()
        if player is not None:
            player.stop()

    # ----------------------------------------------------------------- state
    def _poll(self) -> None:
        player = self.player
        if player is None:
            return
        if not self._dragging:
            self.slider.setValue(player.position)
        self._update_position(player.position)
        if player.done.is_set():
            self.stop()

    def _on_slider_released(self) -> None:
        self._dragging = False
        self.seek(self.slider.value())

    def _update_position(self, sample: int) -> None:
        if self.reader is None:
            return
        sfreq = self.reader.sfreq
        self.position_label.setText(f"{sample / sfreq:.1f} / {self.reader.n_times / sfreq:.1f} s")
        if self.seek_points:
            starts = np.array([s for _, s in self.seek_points])
            current = int(np.searchsorted(starts, sample, side="right")) - 1
            if current >= 0 and not self.seek_combo.view().isVisible():
                self.seek_combo.setCurrentIndex(current)

    def _set_playing(self, playing: bool) -> None:
        self.play_button.setEnabled(not playing and self.reader is not None)
        self.open_button.setEnabled(not playing)
        self.speed_combo.setEnabled(not playing)
        self.loop_box.setEnabled(not playing)
        self.pause_button.setEnabled(playing)
        self.stop_button.setEnabled(playing)
        self.pause_button.setChecked(False)
        self.pause_button.setText("Pause")
        has_points = bool(self.seek_points)
        self.slider.setEnabled(self.reader is not None)
        self.seek_combo.setEnabled(has_points)
        self.seek_button.setEnabled(has_points)

    def _fail(self, message: str) -> None:
        self._starting = False
        self._set_playing(False)
        self.player = None
        self.failed.emit(message)
