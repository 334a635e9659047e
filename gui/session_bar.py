"""Session bar: pick the data and marker streams, the decoder bundle, start/stop, record."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QWidget,
)

from gui import style
from gui.decoding import SIMULATORS
from gui.session import StreamChoice


def auto_record_name() -> str:
    """A fresh file name for a session recording."""
    return f"session-{dt.datetime.now():%Y%m%d-%H%M%S}.xdf"


class SessionBar(QWidget):
    """The controls above the scope; emits what the user asks for, holds no session state."""

    refresh_requested = pyqtSignal()
    start_stop_requested = pyqtSignal()
    record_requested = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.data_combo = QComboBox(minimumContentsLength=26)
        self.data_combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.marker_combo = QComboBox(minimumContentsLength=18)
        self.marker_combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.data_combo.currentIndexChanged.connect(self._match_markers)
        self.refresh_button = QPushButton("⟳ Find streams")
        self.refresh_button.setToolTip("Look for LSL streams on the network")
        self.refresh_button.clicked.connect(self.refresh_requested)
        self.bundle_edit = QLineEdit(placeholderText="Built-in (MEG sims)")
        self.bundle_edit.setToolTip(
            "Decoder bundle folder. Empty: the shipped bundles decode the built-in MEG "
            "simulators (typing-meg-small the typing one, speech-meg-small the listening one); "
            "other streams run without a decoder."
        )
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._choose_bundle)
        self.provider_label = QLabel("Provider: — (no decoder running)", objectName="muted")
        self.start_button = QPushButton("▶ Start")
        self.start_button.setToolTip("Start or stop the session (F5)")
        self.start_button.setMinimumWidth(110)
        self.start_button.clicked.connect(self.start_stop_requested)
        self.record_button = QPushButton("● Record", enabled=False, checkable=True)
        self.record_button.setToolTip("Record the session to XDF (Ctrl+R)")
        self.record_button.setMinimumWidth(110)
        self.record_button.clicked.connect(self._on_record_clicked)
        self.record_dir = Path.home() / "bci-app" / "sessions"
        self.record_name = QLineEdit(auto_record_name())
        self.record_name.setMinimumWidth(
            self.record_name.fontMetrics().horizontalAdvance(auto_record_name()) + 16
        )
        self.record_name.setToolTip("File name of the next recording (in the folder on the right)")
        self.record_name.textEdited.connect(lambda _t: setattr(self, "_auto_name", False))
        self._auto_name = True
        self.folder_button = QPushButton("Folder…")
        self.folder_button.clicked.connect(self._choose_folder)
        grid = QGridLayout(self)
        grid.setContentsMargins(6, 4, 6, 4)
        grid.addWidget(QLabel("Data stream"), 0, 0)
        grid.addWidget(self.data_combo, 0, 1, 1, 2)
        grid.addWidget(QLabel("Markers"), 0, 3)
        grid.addWidget(self.marker_combo, 0, 4, 1, 2)
        grid.addWidget(self.refresh_button, 0, 6)
        grid.addWidget(self.start_button, 0, 7)
        grid.addWidget(QLabel("Decoder"), 1, 0)
        grid.addWidget(self.bundle_edit, 1, 1)
        grid.addWidget(browse, 1, 2)
        grid.addWidget(QLabel("Record as"), 1, 3)
        grid.addWidget(self.record_name, 1, 4)
        grid.addWidget(self.folder_button, 1, 5)
        grid.addWidget(self.provider_label, 1, 6)
        grid.addWidget(self.record_button, 1, 7)
        grid.setColumnStretch(1, 3)
        grid.setColumnStretch(4, 2)
        self.set_streams([], [])

    # ----------------------------------------------------------------- streams
    def set_streams(
        self,
        data: list[StreamChoice],
        markers: list[StreamChoice],
        keep: str | None = None,
        marker_keep: str | None = None,
    ) -> None:
        """List the simulators and the discovered streams; select ``keep``/``marker_keep``."""
        keep = keep or self.data_key()
        marker_keep = marker_keep or self.marker_key()
        self.data_combo.blockSignals(True)
        self.data_combo.clear()
        for key in SIMULATORS:
            choice = StreamChoice.builtin(key)
            self.data_combo.addItem(choice.label, choice)
        for choice in data:
            self.data_combo.addItem(choice.label, choice)
        self.marker_combo.clear()
        self.marker_combo.addItem("None (or those of the built-in simulator)", None)
        for choice in markers:
            self.marker_combo.addItem(choice.label, choice)
        self.data_combo.blockSignals(False)
        self.select_data(keep)
        self._match_markers(0)
        self._select(self.marker_combo, marker_keep)

    def data_choice(self) -> StreamChoice:
        """The data stream chosen."""
        return self.data_combo.currentData()

    def marker_choice(self) -> StreamChoice | None:
        """The marker stream chosen (None: none, or the simulator's own)."""
        return self.marker_combo.currentData()

    def data_key(self) -> str | None:
        """Settings key of the chosen data stream."""
        choice = self.data_combo.currentData()
        return choice.key if choice is not None else None

    def marker_key(self) -> str | None:
        """Settings key of the chosen marker stream."""
        choice = self.marker_combo.currentData()
        return choice.key if choice is not None else None

    def select_data(self, key: str | None) -> bool:
        """Select the data stream with settings key ``key``; return whether it is listed."""
        return self._select(self.data_combo, key)

    def select_markers(self, key: str | None) -> bool:
        """Select the marker stream with settings key ``key``; return whether it is listed."""
        return self._select(self.marker_combo, key)

    def show_data_choice(self, choice: StreamChoice) -> None:
        """Show ``choice`` as the selected data stream, listing it if it is not (a replay)."""
        if not self.select_data(choice.key):
            self.data_combo.addItem(choice.label, choice)
            self.data_combo.setCurrentIndex(self.data_combo.count() - 1)

    @staticmethod
    def _select(combo: QComboBox, key: str | None) -> bool:
        for i in range(combo.count()):
            data = combo.itemData(i)
            if data is not None and data.key == key:
                combo.setCurrentIndex(i)
                return True
        return False

    def _match_markers(self, _index: int) -> None:
        """Pick the marker stream that belongs to the chosen data stream (``<id>-markers``)."""
        choice = self.data_choice()
        if choice is None or not choice.source_id:
            return
        for i in range(self.marker_combo.count()):
            data = self.marker_combo.itemData(i)
            if data is not None and data.source_id == f"{choice.source_id}-markers":
                self.marker_combo.setCurrentIndex(i)

    # ----------------------------------------------------------------- state
    def set_session_state(self, state: str) -> None:
        """Show ``idle``, ``starting``, ``running`` or ``stopping``."""
        running = state == "running"
        self.start_button.setText(
            {"starting": "Connecting…", "stopping": "Stopping…"}.get(
                state, "■ Stop" if running else "▶ Start"
            )
        )
        self.start_button.setEnabled(state in ("idle", "running"))
        for widget in (self.data_combo, self.marker_combo, self.refresh_button):
            widget.setEnabled(state == "idle")
        self.record_button.setEnabled(running)
        if not running:
            self.set_recording("")

    def set_recording(self, path: str) -> None:
        """Show that ``path`` is being recorded ("" when not)."""
        recording = bool(path)
        self.record_button.setChecked(recording)
        self.record_button.setText("■ Stop recording" if recording else "● Record")
        self.record_button.setStyleSheet(style.badge_css(style.BAD) if recording else "")
        self.record_name.setEnabled(not recording)
        self.folder_button.setEnabled(not recording)
        if not recording and self._auto_name:
            self.record_name.setText(auto_record_name())

    def record_path(self) -> Path:
        """Where the next recording goes."""
        name = self.record_name.text().strip() or auto_record_name()
        if not name.lower().endswith(".xdf"):
            name += ".xdf"
        return self.record_dir / name

    def _on_record_clicked(self) -> None:
        # The button shows the session's state, not the click: the window confirms it.
        self.record_button.setChecked(not self.record_button.isChecked())
        self.record_requested.emit()

    def _choose_bundle(self) -> None:
        start = self.bundle_edit.text()
        path = QFileDialog.getExistingDirectory(self, "Decoder bundle folder", start)
        if path:
            self.bundle_edit.setText(path)

    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for recordings", str(self.record_dir))
        if path:
            self.record_dir = Path(path)
            self.record_name.setToolTip(f"Recordings go to {self.record_dir}")
