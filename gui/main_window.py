"""The main window: session bar, live scope, decoded text, candidates, health, latency, tasks.

Starting a session with a decoder bundle (the one chosen, or the shipped MEG typing or speech
bundle on the built-in MEG typing or listening simulator) starts a decoding session on the
session's streams (:mod:`gui.session`); the window shows its text, candidates, confidence,
latency and provider through ``window.attach_decoder(events, latency, provider)``, which any
decoder's queue can also use.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
from pathlib import Path

from PyQt6.QtCore import QByteArray, QProcess, QSettings, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QCloseEvent, QKeySequence
from PyQt6.QtWidgets import (
    QDockWidget,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from bci_app.decoders.events import EventQueue, TextEvent
from bci_app.live.metrics import LatencyStats
from gui import style
from gui.calibration import CalibrationTask
from gui.decoding import bundle_for
from gui.health import HealthPanel, LatencyPanel
from gui.panels import CandidatesPanel, DecoderFeed, TextPanel
from gui.replay import ReplayPanel
from gui.scope import ScopeWidget
from gui.session import StreamChoice, StreamSession, discover_streams
from gui.session_bar import SessionBar
from gui.tasks import run_in_background, wait_for_all

logger = logging.getLogger(__name__)


class ErrorBanner(QFrame):
    """A dismissable line of red text above the scope: errors as sentences, not tracebacks."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="errorBanner")
        self.text = QLabel(objectName="errorText", wordWrap=True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        dismiss = QPushButton("Dismiss")
        dismiss.clicked.connect(self.hide)
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 4, 8, 4)
        row.addWidget(self.text, stretch=1)
        row.addWidget(dismiss)
        self.hide()

    def show_message(self, message: str, max_lines: int = 6) -> None:
        """Show ``message`` (its first ``max_lines`` lines; all of it in the tooltip)."""
        lines = message.splitlines()
        shown = "\n".join(lines[:max_lines]) + ("\n…" if len(lines) > max_lines else "")
        self.text.setText(shown)
        self.text.setToolTip(message)
        self.show()


class MainWindow(QMainWindow):
    """The bci-app window (``closed`` is emitted once it has closed).

    Parameters
    ----------
    settings : QSettings | None
        Where choices and the layout persist (default: the user's bci-app settings).
    discover : bool
        Look for LSL streams when the window opens.
    """

    closed = pyqtSignal()
    #: The experimenter asked to train a decoder on this calibration recording (path).
    train_requested = pyqtSignal(str)

    def __init__(self, settings: QSettings | None = None, *, discover: bool = True) -> None:
        super().__init__()
        self.setWindowTitle("bci-app — live decoding")
        self.setStyleSheet(style.APP_STYLE)
        self.settings = settings if settings is not None else QSettings("bci-app", "bci-app-gui")
        self.errors: list[str] = []
        self.session = StreamSession(self)
        self._pending: tuple[StreamChoice, StreamChoice | None] | None = None
        self._build_widgets()
        self._build_docks()
        self._build_actions()
        self._connect_signals()
        self._markers_timer = QTimer(self, interval=50)
        self._markers_timer.timeout.connect(self._pull_markers)
        self.restore_settings()
        self.scope.start()
        if discover:
            self.refresh_streams()

    # ----------------------------------------------------------------- construction
    def _build_widgets(self) -> None:
        self.bar = SessionBar()
        self._trainer: QProcess | None = None
        self.banner = ErrorBanner()
        self.scope = ScopeWidget()
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.bar)
        layout.addWidget(self.banner)
        layout.addWidget(self.scope, stretch=1)
        self.setCentralWidget(central)
        self.text_panel = TextPanel()
        self.candidates = CandidatesPanel()
        self.health = HealthPanel()
        self.latency = LatencyPanel()
        self.calibration = CalibrationTask()
        self.replay = ReplayPanel()
        self.feed = DecoderFeed(self.text_panel, self.candidates, self.latency)
        self.session_label = QLabel("Not connected")
        self.statusBar().addPermanentWidget(self.session_label)

    def _build_docks(self) -> None:
        self.docks: dict[str, QDockWidget] = {}
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self.setCorner(Qt.Corner.TopRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        right = Qt.DockWidgetArea.RightDockWidgetArea
        bottom = Qt.DockWidgetArea.BottomDockWidgetArea
        for key, title, widget, area in (
            ("text", "Decoded text", self.text_panel, right),
            ("candidates", "Candidates", self.candidates, right),
            ("health", "Stream health", self.health, right),
            ("replay", "Replay", self.replay, bottom),
            ("calibration", "Calibration", self.calibration, bottom),
            ("latency", "Latency", self.latency, bottom),
        ):
            dock = QDockWidget(title, self, objectName=f"dock-{key}")
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            self.docks[key] = dock
        self.splitDockWidget(self.docks["replay"], self.docks["latency"], Qt.Orientation.Horizontal)
        self.tabifyDockWidget(self.docks["replay"], self.docks["calibration"])
        self.docks["replay"].raise_()
        self.resizeDocks([self.docks["text"]], [560], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["replay"]], [270], Qt.Orientation.Vertical)

    def _build_actions(self) -> None:
        view = self.menuBar().addMenu("&View")
        for dock in self.docks.values():
            view.addAction(dock.toggleViewAction())
        session = self.menuBar().addMenu("&Session")
        for text, keys, slot in (
            ("Start / stop", "F5", self.toggle_session),
            ("Record on / off", "Ctrl+R", self.toggle_recording),
            ("Find streams", "Ctrl+L", self.refresh_streams),
            ("Open recording to replay…", "Ctrl+O", self._open_replay),
            ("Quit", "Ctrl+Q", self.close),
        ):
            action = QAction(text, self)
            action.setShortcut(QKeySequence(keys))
            action.triggered.connect(slot)
            session.addAction(action)
            self.addAction(action)

    def _connect_signals(self) -> None:
        self.bar.refresh_requested.connect(self.refresh_streams)
        self.bar.start_stop_requested.connect(self.toggle_session)
        self.bar.record_requested.connect(self.toggle_recording)
        self.bar.data_combo.activated.connect(
            lambda _i: setattr(self, "_saved_data_key", self.bar.data_key())
        )
        self.bar.marker_combo.activated.connect(
            lambda _i: setattr(self, "_saved_marker_key", self.bar.marker_key() or "")
        )
        self.session.started.connect(self._on_started)
        self.session.stopped.connect(self._on_stopped)
        self.session.failed.connect(self._on_session_failed)
        self.session.recording_changed.connect(self._on_recording_changed)
        self.session.report_written.connect(
            lambda path: self.statusBar().showMessage(f"Session report written to {path}", 15_000)
        )
        self.scope.bads_changed.connect(self._on_bads_changed)
        self.scope.painted.connect(self.latency.add_painted)
        self.calibration.marker_pushed.connect(lambda marker: self.scope.add_markers([marker]))
        self.calibration.failed.connect(self.show_error)
        self.calibration.train_requested.connect(self._on_train_requested)
        self.replay.failed.connect(self.show_error)
        self.replay.playing.connect(self._on_replay_playing)
        self.replay.stopped.connect(self._on_replay_stopped)

    # ----------------------------------------------------------------- public API
    @property
    def bundle_path(self) -> str:
        """The decoder bundle chosen in the session bar ("" if none)."""
        return self.bar.bundle_edit.text().strip()

    def attach_decoder(
        self,
        events: EventQueue | queue.Queue[TextEvent],
        latency: LatencyStats | None = None,
        provider: str | None = None,
    ) -> None:
        """Show the TextEvents of ``events`` and the stage latencies of ``latency``."""
        self.feed.attach(events, latency)
        self.bar.provider_label.setText(f"Provider: {provider}" if provider else "Provider: —")

    def detach_decoder(self, why: str = "no decoder running") -> None:
        """Stop reading the decoder's queue (``why`` is shown as the provider)."""
        self.feed.detach()
        self.bar.provider_label.setText(f"Provider: — ({why})")

    def show_error(self, message: str) -> None:
        """Show a readable error in the window (banner and status bar) and log it."""
        logger.warning("%s", message)
        self.errors.append(message)
        self.banner.show_message(message)
        self.statusBar().showMessage(message.splitlines()[0] if message else "", 15_000)

    def refresh_streams(self) -> None:
        """Look for LSL streams in the background and list them in the session bar."""
        self.bar.refresh_button.setEnabled(False)
        self.statusBar().showMessage("Looking for LSL streams…")

        def listed(result) -> None:
            data, markers = result
            self.bar.set_streams(data, markers, self._saved_data_key, self._saved_marker_key)
            self.bar.set_session_state(self.session.state)
            self.statusBar().showMessage(
                f"Found {len(data)} LSL data and {len(markers)} marker streams.", 5000
            )

        def failed(exc: BaseException) -> None:
            self.bar.refresh_button.setEnabled(self.session.state == "idle")
            self.show_error(f"Could not look for LSL streams: {exc}")

        run_in_background(
            discover_streams, name="discover", owner=self, on_done=listed, on_error=failed
        )

    def toggle_session(self) -> None:
        """Start the chosen stream, or stop the running session."""
        if self.session.state == "running":
            self._stop_session()
        elif self.session.state == "idle":
            self.start_session(self.bar.data_choice(), self.bar.marker_choice())

    def toggle_recording(self) -> None:
        """Start or stop recording the running session."""
        if self.session.state != "running":
            self.show_error("Start a session (F5) before recording it.")
            return
        if self.session.recorder is not None:
            self.session.stop_recording()
            return
        path = self.bar.record_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.session.start_recording(path)
        except (OSError, ValueError, RuntimeError) as exc:
            self.show_error(f"Could not record: {exc}")

    # ----------------------------------------------------------------- session events
    def start_session(self, data: StreamChoice, markers: StreamChoice | None = None) -> None:
        """Connect to ``data`` (and ``markers``) in the background, as Start does."""
        if self.session.state != "idle":
            self.show_error("A session is running; stop it (F5) before starting another.")
            return
        self.banner.hide()
        self.bar.set_session_state("starting")
        self.session_label.setText(f"Connecting to {data.label}…")
        self.session.start(data, markers, bundle=bundle_for(self.bundle_path, data.simulator_key))

    def _stop_session(self) -> None:
        self._markers_timer.stop()
        self.detach_decoder()
        self.scope.set_source(None)
        self.health.set_source(None)
        self.latency.set_source(None)
        self.calibration.set_data_stream(None)
        self.session.stop()
        self.bar.set_session_state(self.session.state)

    def _on_started(self) -> None:
        source, markers = self.session.source, self.session.markers
        self.scope.set_source(source)
        key = f"scope/bads/{self.session.data_choice.key}"
        try:  # this stream's bad channels, as the last session on it left them
            bads = json.loads(self.settings.value(key, "[]", str))
        except ValueError:
            bads = []
        self.scope.set_bads(bads if isinstance(bads, list) else [])
        self.health.set_source(source, markers)
        self.latency.set_source(source)
        info = source.info
        self.calibration.set_data_stream(info.source_id() or info.name())
        if markers is not None:
            self._markers_timer.start()
        self.bar.set_session_state("running")
        self.bar.show_data_choice(self.session.data_choice)
        self.session_label.setText(f"Connected: {info.name()} ({info.channel_count()} ch)")
        self.text_panel.clear()
        decoding = self.session.decoding
        if decoding is not None:
            self.attach_decoder(decoding.events, decoding.latency, decoding.provider)
            # a speech decoder's vocabulary size: the chance level of its top-k
            self.text_panel.set_candidate_count(getattr(decoding.decoder, "n_candidates", None))
            self.session_label.setText(self.session_label.text() + f" · {decoding.bundle.name}")
        else:
            self.detach_decoder("decoder off" if self.session.decoder_error else "no bundle chosen")
        if self.session.decoder_error:
            self.show_error(self.session.decoder_error)

    def _on_stopped(self) -> None:
        self.bar.set_session_state("idle")
        self.session_label.setText("Not connected")
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.start_session(*pending)

    def _on_session_failed(self, message: str) -> None:
        self.bar.set_session_state(self.session.state)
        if self.session.state == "idle":
            self.session_label.setText("Not connected")
        self.show_error(message)

    def _on_recording_changed(self, path: str) -> None:
        self.bar.set_recording(path)
        if path:
            self.statusBar().showMessage(f"Recording to {path}", 5000)

    def _on_train_requested(self, path: str) -> None:
        if self.receivers(self.train_requested):  # an embedding application trains itself
            self.statusBar().showMessage(f"Training a decoder on {path}…", 10_000)
            self.train_requested.emit(path)
            return
        self._train_decoder(path)

    def _train_decoder(self, path: str) -> None:
        """Train a typing decoder on a calibration recording in a separate process."""
        if self._trainer is not None and self._trainer.state() != QProcess.ProcessState.NotRunning:
            self.show_error("A decoder is already being trained; wait for it to finish.")
            return
        out = str(Path(path).with_suffix("")) + "_decoder"
        proc = QProcess(self)
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        proc.finished.connect(lambda code, _status: self._on_trained(proc, code, out))
        proc.start(
            sys.executable, ["-m", "bci_app.cli.main", "train", "typing", path, "--out", out]
        )
        self._trainer = proc
        self.statusBar().showMessage(f"Training a decoder on {path} (bci-app train)…")

    def _on_trained(self, proc: QProcess, code: int, out: str) -> None:
        text = bytes(proc.readAll()).decode(errors="replace").strip()
        if code == 0:
            self.bar.bundle_edit.setText(out)
            self.statusBar().showMessage(f"Decoder trained: {out} (chosen for the next session)")
            return
        lines = [line for line in text.splitlines() if "error" in line.lower()] or text.splitlines()
        self.show_error("Training failed: " + (lines[-1] if lines else f"exit status {code}"))

    def _on_bads_changed(self, names: list[str]) -> None:
        """Keep the stream's bad channels in the settings; exclude them from decoding."""
        choice = self.session.data_choice
        if self.session.state != "running" or choice is None:
            return
        self.settings.setValue(f"scope/bads/{choice.key}", json.dumps(names))
        self.session.set_bad_channels(names)

    def _pull_markers(self) -> None:
        markers = self.session.markers
        if markers is None:
            return
        try:
            self.scope.add_markers(markers.pull())
        except Exception as exc:  # the health panel shows the state; say it once here
            self._markers_timer.stop()
            self.show_error(f"The marker stream failed: {exc}")

    def _on_replay_playing(self, data_id: str, marker_id: str) -> None:
        name = self.replay.path.name if self.replay.path else "recording"
        real_time = self.replay.player is not None and self.replay.player.speed == 1.0
        choice = StreamChoice(f"Replay of {name}", source_id=data_id, dejitter=real_time)
        markers = StreamChoice(f"Markers of {name}", source_id=marker_id)
        if self.session.state == "idle":
            self.start_session(choice, markers)
        else:
            self._pending = (choice, markers)
            if self.session.state == "running":
                self._stop_session()

    def _on_replay_stopped(self) -> None:
        choice = self.session.data_choice
        if choice is not None and (choice.source_id or "").startswith("bci-app-replay-"):
            if self.session.state == "running":
                self._stop_session()

    def _open_replay(self) -> None:
        self.docks["replay"].show()
        self.docks["replay"].raise_()
        self.replay._choose_file()

    # ----------------------------------------------------------------- settings
    def restore_settings(self) -> None:
        """Apply the stored stream choices, bundle, folders, scope view and layout."""
        s = self.settings
        self.bar.bundle_edit.setText(s.value("session/bundle", "", str))
        self._saved_data_key = s.value("session/data_stream", "sim:meg", str)
        self._saved_marker_key = s.value("session/marker_stream", "", str)
        self.bar.select_data(self._saved_data_key)
        folder = s.value("session/record_dir", "", str)
        if folder:
            self.bar.record_dir = Path(folder)
        self.scope.set_span(float(s.value("scope/span", 10.0, float)))
        self.scope.set_gain(float(s.value("scope/gain", 1.0, float)))
        self.scope.set_view(s.value("scope/view", "channels", str))
        self.scope.set_rows_per_page(s.value("scope/rows", 25, int) or None)
        geometry = s.value("window/geometry", QByteArray(), QByteArray)
        if geometry.isEmpty() or not self.restoreGeometry(geometry):
            self.resize(1600, 1000)
        state = s.value("window/state", QByteArray(), QByteArray)
        if not state.isEmpty():
            self.restoreState(state)

    def save_settings(self) -> None:
        """Store the stream choices, bundle, folders, scope view and layout."""
        s = self.settings
        s.setValue("session/bundle", self.bundle_path)
        s.setValue("session/data_stream", self.bar.data_key() or self._saved_data_key)
        s.setValue("session/marker_stream", self.bar.marker_key() or "")
        s.setValue("session/record_dir", str(self.bar.record_dir))
        s.setValue("scope/span", self.scope.span)
        s.setValue("scope/gain", self.scope.gain)
        s.setValue("scope/view", self.scope.view)
        s.setValue("scope/rows", self.scope.rows_per_page or 0)
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        """Save the settings, stop the session and the tasks, then close."""
        self.save_settings()
        self.scope.stop()
        self.calibration.stop_session()
        self.replay.stop()
        if self.session.state == "running":
            self._stop_session()
        wait_for_all(timeout=10.0)
        self.calibration.close_now()
        self.replay.close_now()
        self.session.close_now()
        super().closeEvent(event)
        self.closed.emit()
