"""The window's stream session: discover streams, connect, record, stop, off the GUI thread.

:class:`StreamSession` opens its streams with :func:`bci_app.live.factory.open_session`, as
``bci-app run`` does: the :class:`~acquisition.stream.StreamSource` the scope and panels read, the
built-in simulator (typing or listening, :data:`gui.decoding.SIMULATORS`) when no amplifier stream
is chosen, and, with a decoder bundle, the live
:class:`~bci_app.live.session.DecodingSession` on those streams (started on the connecting
thread; it stops before the streams close). It also owns the
:class:`~acquisition.markers.MarkerSource` whose markers the scope draws, the
:class:`~acquisition.recorder.Recorder`, and the bad channels: excluded from decoding and
written into the recording as ``bads:[...]`` markers on a marker outlet of its own. Every blocking
step (resolving, connecting, starting and stopping) runs in :func:`gui.tasks.run_in_background`;
results come back as Qt signals.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pylsl
from PyQt6.QtCore import QObject, pyqtSignal

from acquisition.markers import MarkerSource
from acquisition.outlets import MarkerOutlet
from acquisition.recorder import Recorder
from acquisition.stream import StreamSource
from bci_app.live.factory import OpenedSession, StreamQuery, close_all, open_session
from bci_app.live.session import DecodingSession, bads_marker
from bci_app.report import SessionCollector, write_report
from gui.decoding import SIMULATORS, simulator_key
from gui.tasks import run_in_background

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamChoice:
    """A stream to connect to: one found on the LSL network, or the built-in simulator.

    Attributes
    ----------
    label : str
        What the session bar shows.
    source_id, name, stype : str | None
        LSL query (source_id first when the stream has one).
    simulator : str | None
        Modality of the built-in simulator (``"meg"``, ``"eeg"``, ``"ieeg"``) instead of an LSL
        stream.
    task : str
        What the built-in simulator plays: ``"typing"`` or ``"listening"``.
    dejitter : bool
        Dejitter the timestamps at the nominal rate (False for a replay faster or slower than
        real time, whose samples do not come at the nominal rate).
    or_name : bool
        If no stream has ``source_id``, look for one named so (a name typed by the user).
    """

    label: str
    source_id: str | None = None
    name: str | None = None
    stype: str | None = None
    simulator: str | None = None
    task: str = "typing"
    dejitter: bool = True
    or_name: bool = False

    @classmethod
    def from_text(cls, text: str) -> StreamChoice:
        """A stream given by the user as a source_id or, failing that, a name."""
        return cls(text, source_id=text, name=text, or_name=True)

    @classmethod
    def from_info(cls, info: pylsl.StreamInfo) -> StreamChoice:
        """Describe a resolved LSL stream."""
        rate = f"{info.nominal_srate():g} Hz" if info.nominal_srate() > 0 else "irregular"
        label = (
            f"{info.name()} ({info.type()}, {info.channel_count()} ch, {rate}) — "
            f"{info.source_id() or 'no source_id'} @ {info.hostname()}"
        )
        return cls(label, info.source_id() or None, info.name(), info.type() or None)

    @classmethod
    def builtin(cls, key: str) -> StreamChoice:
        """The built-in simulator ``key`` of :data:`~gui.decoding.SIMULATORS` (with its markers).

        ``"meg"``/``"eeg"`` play typing sessions, ``"meg-listening"`` etc. listening ones.
        """
        if key not in SIMULATORS:
            raise ValueError(
                f"Invalid value for 'key': {key!r}; the built-in simulator offers "
                f"{', '.join(SIMULATORS)}."
            )
        sim = SIMULATORS[key]
        label = f"Built-in simulator ({sim.description})"
        return cls(label, simulator=sim.modality, task=sim.task)

    @property
    def simulator_key(self) -> str | None:
        """Key of the built-in simulator in :data:`~gui.decoding.SIMULATORS` (None: LSL)."""
        return simulator_key(self.simulator, self.task) if self.simulator else None

    @property
    def key(self) -> str:
        """Stable identifier stored in the settings (``sim:meg``, ``sim:meg-listening``, ...)."""
        if self.simulator:
            return f"sim:{self.simulator_key}"
        return f"lsl:{self.source_id or ''}|{self.name or ''}"

    @property
    def stream_query(self) -> StreamQuery:
        """How to find this stream (source_id alone when it has one)."""
        return StreamQuery(self.source_id, self.name, self.stype, or_name=self.or_name)

    @property
    def record_id(self) -> str:
        """What the recorder resolves this stream by."""
        return self.source_id or self.name or ""


def discover_streams(wait_time: float = 1.0) -> tuple[list[StreamChoice], list[StreamChoice]]:
    """Resolve the LSL streams on the network (blocks ``wait_time``): (data, marker) streams."""
    data, markers = [], []
    for info in pylsl.resolve_streams(wait_time=wait_time):
        regular = info.nominal_srate() > 0 and info.channel_format() != pylsl.cf_string
        (data if regular else markers).append(StreamChoice.from_info(info))
    data.sort(key=lambda c: c.label.lower())
    markers.sort(key=lambda c: c.label.lower())
    return data, markers


@dataclass
class _Opened:
    streams: OpenedSession
    markers: MarkerSource | None  # what the scope draws
    collector: SessionCollector | None = None  # the session report's, when decoding

    @property
    def source(self) -> StreamSource:
        return self.streams.source


class StreamSession(QObject):
    """Connect to a data (and marker) stream or the simulator, record it, stop it.

    Signals
    -------
    started : the sources are connected (read :attr:`source`, :attr:`markers`, and
        :attr:`decoding` or :attr:`decoder_error` when a bundle was given).
    stopped : everything is closed.
    failed(str) : a readable message; the session is idle again (or keeps running if only the
        recording failed).
    recording_changed(str) : the file being recorded, or "" when recording stopped.
    report_written(str) : the session report written at stop beside the session's last recording.
    """

    started = pyqtSignal()
    stopped = pyqtSignal()
    failed = pyqtSignal(str)
    recording_changed = pyqtSignal(str)
    report_written = pyqtSignal(str)

    def __init__(self, parent: QObject | None = None, *, resolve_timeout: float = 3.0) -> None:
        super().__init__(parent)
        self.resolve_timeout = resolve_timeout
        self.state = "idle"
        self.source: StreamSource | None = None
        self.markers: MarkerSource | None = None
        self.data_choice: StreamChoice | None = None
        self.recorder: Recorder | None = None
        self._recorded: Path | None = None  # the last recording: the report goes beside it
        self.bads: tuple[str, ...] = ()
        self._bads_outlet: MarkerOutlet | None = None  # recorded: the bads:[...] markers
        self._opened: _Opened | None = None
        self._just_opened: _Opened | None = None  # set by the worker, taken by the GUI

    @property
    def decoding(self) -> DecodingSession | None:
        """The decoding session of the running session (None: no bundle, or it failed)."""
        return self._opened.streams.session if self._opened is not None else None

    @property
    def decoder_error(self) -> str | None:
        """Why the running session decodes nothing although a bundle was given."""
        error = self._opened.streams.decoder_error if self._opened is not None else None
        return None if error is None else _readable(error, "Decoding is off")

    @property
    def recording_path(self) -> Path | None:
        """The file being recorded, if any."""
        return self.recorder.path if self.recorder is not None else None

    def start(
        self,
        data: StreamChoice,
        markers: StreamChoice | None = None,
        *,
        bundle: Path | None = None,
        provider: str = "auto",
    ) -> None:
        """Connect (and start decoding with ``bundle``) in the background.

        ``started`` or ``failed`` follows. A bundle that cannot decode the stream does not stop
        the session: :attr:`decoder_error` says why in words.
        """
        if self.state != "idle":
            raise RuntimeError(f"The session is {self.state}; stop it before starting another.")
        self.state = "starting"
        self.data_choice = data

        def open_and_keep() -> _Opened:
            self._just_opened = _open(data, markers, self.resolve_timeout, bundle, provider)
            return self._just_opened

        run_in_background(
            open_and_keep,
            name="connect",
            owner=self,
            on_done=self._on_opened,
            on_error=lambda exc: self._on_failed(exc, "Could not start the session"),
        )

    def stop(self) -> None:
        """Stop recording, disconnect and stop the simulator in the background."""
        if self.state != "running":
            return
        self.state = "stopping"
        opened, recorder, recorded = self._opened, self.recorder, self._recorded
        self.source = self.markers = self.recorder = self._opened = self._recorded = None
        if recorder is not None:
            self.recording_changed.emit("")
        run_in_background(
            lambda: _close(opened, recorder, recorded),
            name="disconnect",
            owner=self,
            on_done=self._on_closed,
            on_error=lambda exc: (self._on_closed(), self.failed.emit(_readable(exc, "Stop"))),
        )

    def set_bad_channels(self, names: Sequence[str]) -> None:
        """Exclude these channels from decoding and write them into the recording being made.

        The recording gets a ``bads:[...]`` marker now and at its start
        (:func:`~bci_app.live.session.read_bads` reads it back).
        """
        self.bads = tuple(names)
        if self.decoding is not None:
            self.decoding.set_bad_channels(self.bads)
        outlet = self._bads_outlet
        if outlet is not None and self.recorder is not None and self.recorder.running:
            outlet.push(bads_marker(self.bads))

    def start_recording(self, path: str | Path) -> None:
        """Record the data and marker streams to the XDF file ``path`` (in the background)."""
        if self.state != "running" or self._opened is None:
            raise RuntimeError("Start a session before recording it.")
        if self.recorder is not None:
            raise RuntimeError(f"Already recording to '{self.recorder.path}'; stop that first.")
        # data, markers and the decoded text, as `bci-app run` records them, and the bad channels
        ids = self._opened.streams.record_ids()
        if self._bads_outlet is None:
            source_id = f"bci-app-session-{uuid.uuid4().hex[:8]}"
            self._bads_outlet = MarkerOutlet("bci-app-session", source_id)
        outlet = self._bads_outlet
        ids.append(outlet.info.source_id())
        recorder = Recorder(path, ids, resolve_timeout=self.resolve_timeout)
        self.recorder = recorder
        self._recorded = Path(path)

        def start() -> None:
            recorder.start()
            outlet.push(bads_marker(self.bads))  # the inlet is open: the file gets it

        def failed(exc: BaseException) -> None:
            if self.recorder is recorder:
                self.recorder = None
                self.recording_changed.emit("")
            self.failed.emit(_readable(exc, "Could not record"))

        run_in_background(
            start,
            name="record",
            owner=self,
            on_done=lambda _r: self.recording_changed.emit(str(recorder.path)),
            on_error=failed,
        )

    def stop_recording(self) -> None:
        """Close the recording (in the background)."""
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return
        self.recording_changed.emit("")
        run_in_background(
            recorder.stop,
            name="stop-recording",
            owner=self,
            on_error=lambda exc: self.failed.emit(_readable(exc, "The recording failed")),
        )

    def close_now(self) -> None:
        """Close whatever is open or being opened, now (the window is closing; this blocks)."""
        opened = self._opened or self._just_opened
        recorder, recorded = self.recorder, self._recorded
        self._opened = self._just_opened = self.recorder = self._recorded = None
        self.source = self.markers = None
        self.state = "idle"
        if opened is None and recorder is None:
            return
        try:
            _close(opened, recorder, recorded)
        except Exception as exc:
            logger.warning("Closing the session at exit: %s", exc)

    def _on_opened(self, opened: _Opened) -> None:
        self._just_opened = None
        if self.state != "starting":  # stopped meanwhile
            run_in_background(lambda: _close(opened, None), name="disconnect", owner=self)
            return
        self._opened = opened
        self.source, self.markers = opened.source, opened.markers
        self.state = "running"
        self.started.emit()

    def _on_failed(self, exc: BaseException, what: str) -> None:
        self.state = "idle"
        self.failed.emit(_readable(exc, what))

    def _on_closed(self, report: Path | None = None) -> None:
        self.state = "idle"
        self.stopped.emit()
        if report is not None:
            self.report_written.emit(str(report))


def _open(
    data: StreamChoice,
    markers: StreamChoice | None,
    timeout: float,
    bundle_path: Path | None = None,
    provider: str = "auto",
) -> _Opened:
    """Open the streams (the simulator when chosen) and start decoding, with ``open_session``.

    A bundle that cannot decode the streams leaves them open: ``decoder_error`` says why.
    """
    streams = open_session(
        bundle_path,
        None if data.simulator else data.stream_query,
        None if markers is None else markers.stream_query,
        task=data.task if data.simulator else None,
        modality=data.simulator,
        provider=provider,
        timeout=timeout,
        dejitter=data.dejitter,
        start=True,
        report_decoder_errors=True,
    )
    try:
        # the decoder reads the marker source open_session connected; the scope needs its own
        scope_markers = streams.markers
        if streams.session is not None and streams.markers is not None:
            scope_markers = streams.connect_markers()
    except BaseException:
        streams.close()
        raise
    collector = None if streams.session is None else SessionCollector(streams.session).start()
    return _Opened(streams, scope_markers, collector)


def _close(
    opened: _Opened | None, recorder: Recorder | None, recorded: Path | None = None
) -> Path | None:
    """Stop decoding, the recorder, the streams and the simulator (errors re-raised last).

    Decoding stops first, so a recording ends with the sentence committed at stop and the session
    summary. When the session decoded and ``recorded`` (its last recording) exists, its report is
    written beside it (``S.xdf`` -> ``S.html``); returns the report's path (None: none).
    """
    done = {}
    collector = None if opened is None else opened.collector

    def stop_decoding() -> None:
        opened.streams.session.stop()
        collector.stop()
        done["record"] = collector.record()

    def write() -> None:
        if "record" in done and recorded.is_file():
            done["report"] = write_report(done["record"], recorded.with_suffix(".html"))

    steps = [stop_decoding] if collector is not None else []
    steps += [recorder.stop] if recorder is not None else []
    steps += [opened.streams.close] if opened is not None else []
    steps += [write] if recorded is not None else []
    close_all(steps)
    return done.get("report")


def _readable(exc: BaseException, what: str) -> str:
    """One readable line for the window: what failed and the error's own message."""
    text = str(exc).strip() or type(exc).__name__
    return f"{what}: {text}"
