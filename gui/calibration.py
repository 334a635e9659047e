"""Brain2Qwerty calibration task: read a sentence word by word, then type it from memory.

Protocol (Levy et al. 2025): a fixation cross, the sentence one word at a time, a blank, then the
participant types the sentence from memory with no feedback on screen and presses Enter. Every
key press becomes an LSL marker (``key:<c>``, :func:`acquisition.recording.key_marker`) stamped
with ``pylsl.local_clock()`` in the key event handler; ``sentence_start:<text>`` is stamped when
the first word appears and ``sentence_end:<text>`` when Enter is pressed (Enter and Shift get no
``key:`` marker, as in the simulator: a shifted letter is one key press of that letter). The
markers go out through a :class:`~acquisition.outlets.MarkerOutlet`, and a
:class:`~acquisition.recorder.Recorder` writes them with the brain data to one XDF file. At the
end the task offers to train a decoder on that file.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pylsl
from PyQt6.QtCore import Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QFont, QKeyEvent
from PyQt6.QtWidgets import (
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from acquisition.outlets import MarkerOutlet
from acquisition.recorder import Recorder
from acquisition.recording import Marker, key_marker
from acquisition.simulator import load_sentences
from gui.tasks import run_in_background

_IGNORED_KEYS = {
    Qt.Key.Key_Shift,
    Qt.Key.Key_Control,
    Qt.Key.Key_Alt,
    Qt.Key.Key_Meta,
    Qt.Key.Key_CapsLock,
    Qt.Key.Key_AltGr,
    Qt.Key.Key_Tab,
}
_ENTER_KEYS = {Qt.Key.Key_Return, Qt.Key.Key_Enter}


class _Stage(QLabel):
    """The participant's view: big centred text; receives the key presses."""

    def __init__(self, task: CalibrationTask) -> None:
        super().__init__(alignment=Qt.AlignmentFlag.AlignCenter, wordWrap=True)
        self._task = task
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumHeight(160)
        font = QFont()
        font.setPointSize(28)
        self.setFont(font)
        self.setStyleSheet("background: #fafafa; color: #212121; border: 1px solid #cfd8dc;")

    def keyPressEvent(self, event: QKeyEvent) -> None:
        stamp = pylsl.local_clock()  # first thing: the key event's time on the LSL clock
        if not self._task.handle_key(event, stamp):
            super().keyPressEvent(event)


class CalibrationTask(QWidget):
    """Run a calibration session: sentences, key markers, recording, then an offer to train.

    Parameters
    ----------
    sentences : sequence of str | None
        Sentences to present, in order; default: a random draw from the bundled bank.
    word_s, fixation_s, blank_s, rest_s : float
        Seconds each word is shown, of the fixation cross, of the blank before typing, and of
        rest after Enter.
    tail_s : float
        Seconds recorded after the last key press, so that its brain response is in the file.
    marker_source_id : str | None
        source_id of the marker outlet (default: unique per session).
    on_train : callable | None
        Called with the recording path when the experimenter asks to train.
    """

    marker_pushed = pyqtSignal(object)
    finished = pyqtSignal(str)
    train_requested = pyqtSignal(str)
    failed = pyqtSignal(str)

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        sentences: Sequence[str] | None = None,
        word_s: float = 0.6,
        fixation_s: float = 0.5,
        blank_s: float = 0.5,
        rest_s: float = 1.0,
        tail_s: float = 1.0,
        marker_source_id: str | None = None,
        on_train: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(parent)
        self._bank = list(sentences) if sentences is not None else None
        self.fixation_s, self.blank_s, self.rest_s = fixation_s, blank_s, rest_s
        self.tail_s = tail_s
        self.marker_source_id = marker_source_id
        self.data_stream: str | None = None
        self.output_dir = Path.home() / "bci-app" / "calibration"
        self.state = "idle"
        self.sentences: list[str] = []
        self.index = 0
        self.markers: list[Marker] = []
        self.recording_path: Path | None = None
        self.outlet: MarkerOutlet | None = None
        self._recorder: Recorder | None = None
        self._words: list[str] = []
        self._word_index = 0
        self._timer = QTimer(self, singleShot=True)
        self._timer.timeout.connect(self._advance)
        self._save_timer = QTimer(self, singleShot=True)
        self._save_timer.timeout.connect(self._save)
        if on_train is not None:
            self.train_requested.connect(on_train)
        self._build(word_s)

    def _build(self, word_s: float) -> None:
        self.n_sentences = QSpinBox(minimum=1, maximum=200, value=10)
        self.word_s = QDoubleSpinBox(minimum=0.05, maximum=5.0, singleStep=0.1, value=word_s)
        self.word_s.setSuffix(" s")
        self.start_button = QPushButton("Start calibration")
        self.start_button.clicked.connect(self.start_session)
        self.stop_button = QPushButton("Stop", enabled=False)
        self.stop_button.clicked.connect(self.stop_session)
        self.train_button = QPushButton("Train a decoder on this recording", visible=False)
        self.train_button.clicked.connect(
            lambda: self.train_requested.emit(str(self.recording_path))
        )
        self.stage = _Stage(self)
        self.progress = QLabel(objectName="muted", wordWrap=True)
        row = QHBoxLayout()
        for widget in (QLabel("Sentences"), self.n_sentences, QLabel("  Word shown for")):
            row.addWidget(widget)
        row.addWidget(self.word_s)
        row.addStretch(1)
        row.addWidget(self.start_button)
        row.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(row)
        layout.addWidget(self.stage, stretch=1)
        layout.addWidget(self.progress)
        layout.addWidget(self.train_button, alignment=Qt.AlignmentFlag.AlignRight)
        self._show("Connect a data stream, then press Start calibration.", small=True)

    # ----------------------------------------------------------------- session
    def set_data_stream(self, record_id: str | None) -> None:
        """The data stream (source_id or name) recorded with the markers; None: not connected."""
        self.data_stream = record_id

    def draw_sentences(self, count: int) -> list[str]:
        """The ``count`` sentences of a session: the given ones in turn, else a random draw.

        The random draw comes from the bundled bank's calibration part: its test part is what
        held-out evaluation types, so a decoder trained on a calibration never saw them.
        """
        bank = self._bank if self._bank is not None else load_sentences(split="calibration")
        if self._bank is None:
            bank = random.sample(bank, min(count, len(bank)))
        return [bank[i % len(bank)] for i in range(count)]

    def start_session(self) -> None:
        """Open the marker outlet, start recording, then present the first sentence."""
        if self.state not in ("idle", "done"):
            raise RuntimeError("A calibration session is running; stop it first.")
        if not self.data_stream:
            message = (
                "Connect a data stream before calibrating: the brain data are recorded with the "
                "key presses (session bar: choose a stream and press Start)."
            )
            self.failed.emit(message)
            raise RuntimeError(message)
        self.sentences = self.draw_sentences(self.n_sentences.value())
        self.index, self.markers = 0, []
        source_id = self.marker_source_id or f"bci-app-calibration-{uuid.uuid4().hex[:8]}"
        self.outlet = MarkerOutlet("bci-app-calibration", source_id)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.recording_path = self.output_dir / f"calibration-{stamp}.xdf"
        recorder = Recorder(self.recording_path, [self.data_stream, source_id])
        self._recorder = recorder
        self.state = "starting"
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.train_button.hide()
        self._show("Preparing the recording…", small=True)
        run_in_background(
            recorder.start,
            name="calibration-recorder",
            owner=self,
            on_done=lambda _r: self._begin_sentence() if self.state == "starting" else None,
            on_error=self._recording_failed,
        )

    def stop_session(self) -> None:
        """Stop presenting, close the recording; the file keeps what was typed so far."""
        if self.state == "saving":  # no time for the tail: close the file now
            self._save_timer.stop()
            self._save()
        if self.state in ("idle", "done", "saving"):
            return
        self._timer.stop()
        self._finish(complete=False)

    def close_now(self) -> None:
        """Stop at once and close the recording synchronously (the window is closing)."""
        self._timer.stop()
        self._save_timer.stop()
        recorder, self._recorder = self._recorder, None
        self.state = "done" if self.state != "idle" else "idle"
        if recorder is not None and recorder.running:
            recorder.stop()

    # ----------------------------------------------------------------- trial steps
    def _begin_sentence(self) -> None:
        self._words = self.sentences[self.index].split()
        self.state = "fixation"
        self._show("+")
        self._update_progress()
        self._timer.start(round(self.fixation_s * 1000))

    def _advance(self) -> None:
        """Go to the next step of the trial (called by the timer)."""
        sentence = self.sentences[self.index] if self.index < len(self.sentences) else ""
        if self.state == "fixation":
            self.state, self._word_index = "showing", 0
            self._push(f"sentence_start:{sentence}", pylsl.local_clock())
        elif self.state == "showing":
            self._word_index += 1
        elif self.state == "rest":
            self._begin_sentence()
            return
        if self.state == "showing" and self._word_index < len(self._words):
            self._show(self._words[self._word_index])
            self._timer.start(round(self.word_s.value() * 1000))
        elif self.state == "showing":
            self.state = "blank"
            self._show("")
            self._timer.start(round(self.blank_s * 1000))
        elif self.state == "blank":
            self.state = "typing"
            self._show("Type the sentence from memory, then press Enter.", small=True)
            self.stage.setFocus()

    def handle_key(self, event: QKeyEvent, stamp: float) -> bool:
        """Turn a key press while typing into a marker stamped ``stamp``; True if handled."""
        if self.state != "typing" or event.isAutoRepeat():
            return False
        key = event.key()
        if key in _IGNORED_KEYS:
            return True
        if key in _ENTER_KEYS:
            self._push(f"sentence_end:{self.sentences[self.index]}", stamp)
            self.index += 1
            if self.index >= len(self.sentences):
                self._finish(complete=True)
            else:
                self.state = "rest"
                self._show("")
                self._timer.start(round(self.rest_s * 1000))
            return True
        if key == Qt.Key.Key_Backspace:
            char = "\b"
        elif event.text() and event.text().isprintable():
            char = event.text()
        else:
            return False
        self._push(key_marker(char), stamp)
        return True

    def _push(self, value: str, stamp: float) -> None:
        marker = Marker(stamp, value)
        self.outlet.push(value, stamp)
        self.markers.append(marker)
        self.marker_pushed.emit(marker)

    def _finish(self, complete: bool) -> None:
        """Thank the participant; close the file after ``tail_s`` more seconds of data."""
        self.state = "saving"
        self._show(
            "Calibration complete. Thank you!" if complete else "Calibration stopped.", small=True
        )
        n_keys = sum(m.value.startswith("key:") for m in self.markers)
        self.progress.setText(f"Saving {self.index} sentences and {n_keys} key presses…")
        self.stop_button.setEnabled(False)
        self._save_timer.start(round(self.tail_s * 1000))

    def _save(self) -> None:
        recorder, self._recorder = self._recorder, None
        n_keys = sum(m.value.startswith("key:") for m in self.markers)
        done = self.index

        def saved(_result: object) -> None:
            self.state = "done"
            self.outlet = None
            self.start_button.setEnabled(True)
            self.progress.setText(
                f"{done} of {len(self.sentences)} sentences, {n_keys} key presses, recorded to "
                f"{self.recording_path}"
            )
            self.train_button.setVisible(done > 0)
            self.finished.emit(str(self.recording_path))

        if recorder is None:
            saved(None)
            return
        run_in_background(
            recorder.stop,
            name="calibration-save",
            owner=self,
            on_done=saved,
            on_error=self._recording_failed,
        )

    def _recording_failed(self, exc: BaseException) -> None:
        self._timer.stop()
        self.state = "idle"
        self._recorder, self.outlet = None, None
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self._show("The recording failed; see the message above.", small=True)
        self.failed.emit(f"Calibration recording failed: {exc}")

    # ----------------------------------------------------------------- display
    def _show(self, text: str, small: bool = False) -> None:
        font = self.stage.font()
        font.setPointSize(16 if small else 32)
        self.stage.setFont(font)
        self.stage.setText(text)

    def _update_progress(self) -> None:
        n_keys = sum(m.value.startswith("key:") for m in self.markers)
        self.progress.setText(
            f"Sentence {min(self.index + 1, len(self.sentences))} of {len(self.sentences)} · "
            f"{n_keys} key presses · recording to {self.recording_path}"
        )
