"""Open a live decoding session: the one place that turns a bundle and streams into decoding.

``bci-app run`` and the window both call :func:`open_session`, so one set of rules decides:

- **Task**: the one asked for (``typing`` or ``listening``), else the bundle's (``listening``
  for a speech bundle), else ``typing``. A bundle of another task is refused
  (:func:`check_bundle_task`): a typing decoder waits for keystrokes a listener never makes, a
  speech decoder ranks words nobody heard.
- **Data stream**: the one given (a text is a source_id, else a stream name), else the built-in
  simulator plays the session the bundle was made for (:mod:`bci_app.live.builtin`).
- **Markers**: the marker stream given, else the simulator's, else none.
- **Strategy** (:func:`make_strategy`): a speech bundle decodes word-locked windows when there is
  a marker stream and sliding ones otherwise; a ``brain2qwerty_v2`` bundle the continuous stream
  (CTC); a ``brain2qwerty_v1`` bundle keystroke windows, which need the marker stream.
- **Checks** before anything decodes: the bundle against the stream's channels and rate, and the
  strategy against the marker stream.

The result, :class:`OpenedSession`, holds the streams, the simulator and the (not yet started)
:class:`~bci_app.live.session.DecodingSession`, and closes them all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from acquisition.markers import MarkerSource
from acquisition.stream import StreamNotFoundError, StreamSource
from bci_app.decoders.bundle import Bundle, load_bundle
from bci_app.live.builtin import (
    BUNDLE_TASKS,
    BuiltinStream,
    check_task,
    modality_label,
    plan_builtin,
    shipped_bundle,
    simulator_modality,
    start_builtin,
    task_of,
)
from bci_app.live.ctc import CTCStrategy
from bci_app.live.keystroke import KeystrokeStrategy
from bci_app.live.session import DecodingSession, Strategy
from bci_app.live.speech import SpeechStrategy
from bci_app.processing.recentering import RecenterConfig
from bci_app.typing.common import check_typing_bundle

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamQuery:
    """How to find an LSL stream: by source_id (alone when given), else by name and type.

    ``or_name``: when no stream has ``source_id``, look for one named so (a name typed by a
    user, who may not know which of the two it is).
    """

    source_id: str | None = None
    name: str | None = None
    stype: str | None = None
    or_name: bool = False

    @classmethod
    def from_text(cls, text: str) -> StreamQuery:
        """A stream given as a source_id or, failing that, a name."""
        return cls(source_id=text, name=text, or_name=True)

    def kwargs(self) -> dict:
        """Keyword arguments of the stream sources that find it."""
        if self.source_id:
            return {"source_id": self.source_id}
        return {"name": self.name, "stype": self.stype}


def connect(cls: type, query: StreamQuery | str, timeout: float = 5.0, **kwargs):
    """Connect a ``StreamSource`` or ``MarkerSource`` to the stream of ``query``; return it."""
    query = StreamQuery.from_text(query) if isinstance(query, str) else query
    fallback = query.or_name and bool(query.source_id)
    try:
        first = min(timeout, 2.0) if fallback else timeout
        return cls(**query.kwargs(), resolve_timeout=first, **kwargs).connect()
    except StreamNotFoundError:
        if not fallback:
            raise
        return cls(name=query.source_id, resolve_timeout=timeout, **kwargs).connect()


def check_bundle_task(bundle: Bundle, task: str, simulated: str | None = None) -> None:
    """Raise ValueError when ``bundle`` cannot decode a ``task`` session (module docstring).

    ``simulated``: modality of the built-in simulator playing the session, if one does.
    """
    needed = BUNDLE_TASKS[check_task(task)]
    if bundle.task == needed:
        return
    shipped = shipped_bundle(task, simulated)
    hint = f" (with none given, the shipped '{shipped.name}' decodes it)" if shipped else ""
    other = task_of(bundle)
    if simulated:
        where = f"the built-in simulator ({modality_label(simulated)}, {task}) plays a {task} "
        where += "session, which needs"
        instead = f"a {other} simulator"
    else:
        where, instead = f"a {task} session needs", f"the {other} task"
    raise ValueError(
        f"Invalid decoder for this stream: '{bundle.name}' is a {bundle.task} decoder, but "
        f"{where} a {needed} decoder. Choose a {needed} bundle{hint}, or {instead}."
    )


def make_strategy(bundle: Bundle, *, has_markers: bool, provider: str = "auto") -> Strategy:
    """The strategy that decodes ``bundle`` (module docstring); its decoder is opened here."""
    if bundle.task == "speech":
        mode = "auto" if has_markers else "sliding"
        return SpeechStrategy(bundle, mode=mode, provider=provider)
    if check_typing_bundle(bundle) == "brain2qwerty_v2":
        return CTCStrategy(bundle, provider=provider)
    return KeystrokeStrategy(bundle, provider=provider)


@dataclass
class OpenedSession:
    """The streams, simulator and decoding session :func:`open_session` opened.

    Attributes
    ----------
    source : StreamSource
        The connected data stream.
    markers : MarkerSource | None
        The connected marker stream, read by ``session`` when there is one (a marker source's
        ``pull`` drains its queue: another reader needs :meth:`connect_markers`).
    session : DecodingSession | None
        The decoding session, not started (None: no bundle, or ``decoder_error``).
    builtin : BuiltinStream | None
        The built-in simulated session playing the stream, if any.
    decoder_error : Exception | None
        Why nothing decodes although a bundle was given (``report_decoder_errors=True``).
    simulator : SimulatorStream | None
        The running built-in simulator, if any (stopped by :meth:`close`).
    timeout : float
        Seconds to look for a stream (for :meth:`connect_markers`).
    """

    source: StreamSource
    markers: MarkerSource | None = None
    session: DecodingSession | None = None
    builtin: BuiltinStream | None = None
    decoder_error: Exception | None = None
    simulator: object | None = None
    timeout: float = 5.0
    _readers: list[MarkerSource] = field(default_factory=list, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)

    def start(self) -> OpenedSession:
        """Start decoding (nothing to do without a session)."""
        if self.session is not None:
            self.session.start()
        return self

    def connect_markers(self) -> MarkerSource:
        """Connect another reader of the marker stream (closed with the session)."""
        if self.markers is None:
            raise RuntimeError("This session has no marker stream to read twice.")
        info = self.markers.info
        query = StreamQuery(source_id=info.source_id() or None, name=info.name())
        reader = connect(MarkerSource, query, self.timeout)
        self._readers.append(reader)
        return reader

    def record_ids(self) -> list[str]:
        """source_ids (else names) of the data, marker and text streams, for a Recorder.

        By id, not StreamInfo: an outlet's info taken in this process cannot open an inlet.
        """
        infos = [self.source.info, None if self.markers is None else self.markers.info]
        if self.session is not None:
            infos.append(self.session.text_outlet_info)
        return [info.source_id() or info.name() for info in infos if info is not None]

    def close(self) -> None:
        """Stop decoding, disconnect the streams, stop the simulator (safe to call twice).

        Every step runs even if one fails; the first error is raised at the end.
        """
        if self._closed:
            return
        self._closed = True
        steps = [] if self.session is None else [self.session.stop]
        steps += [reader.disconnect for reader in self._readers]
        steps += [] if self.markers is None else [self.markers.disconnect]
        steps += [self.source.disconnect]
        steps += [] if self.simulator is None else [self.simulator.stop]
        close_all(steps)

    def __enter__(self) -> OpenedSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_session(
    bundle: Bundle | str | Path | None,
    stream: StreamQuery | str | None = None,
    markers: StreamQuery | str | None = None,
    *,
    task: str | None = None,
    modality: str | None = None,
    seed: int | None = None,
    provider: str = "auto",
    timeout: float = 5.0,
    dejitter: bool = True,
    recenter: RecenterConfig | bool | None = None,
    log_path: str | Path | None = None,
    text_outlet: bool = True,
    start: bool = False,
    report_decoder_errors: bool = False,
) -> OpenedSession:
    """Start the simulator if no stream is given, connect the streams, open the decoding session.

    Parameters
    ----------
    bundle : Bundle | path | None
        The decoder (None: connect the streams only).
    stream, markers : StreamQuery | str | None
        Data and marker streams (a text: source_id, else name). No ``stream``: the built-in
        simulator, whose markers are used unless ``markers`` is given.
    task : "typing" | "listening" | None
        What the session plays (None: the bundle's task).
    modality : str | None
        Modality of the built-in simulator (None: the one the bundle was made for).
    seed : int | None
        Seed of the built-in simulated session (None: a random one).
    provider : str
        onnxruntime provider (``auto`` picks CUDA where there is one).
    timeout : float
        Seconds to look for each stream.
    dejitter : bool
        Dejitter the data timestamps (False for a replay not paced at the nominal rate).
    recenter : RecenterConfig | bool | None
        Drift re-centering of the scaler statistics (True: default settings).
    log_path, text_outlet
        As for :class:`~bci_app.live.session.DecodingSession`.
    start : bool
        Start decoding at once (False: call ``start()`` once the caller is ready, e.g. after
        starting a recorder).
    report_decoder_errors : bool
        When the bundle cannot decode the streams, keep the streams open and say why in
        ``decoder_error`` instead of raising (the window's scope still runs).

    Raises
    ------
    ValueError, FileNotFoundError
        A bundle that cannot decode the streams (unless ``report_decoder_errors``).
    StreamNotFoundError
        A stream was not found within ``timeout``.
    """
    error, bundle = _load(bundle, report_decoder_errors)
    task = check_task(task or (task_of(bundle) if bundle is not None else "typing"))
    simulated = None if stream is not None else modality or simulator_modality(bundle)
    if bundle is not None:
        try:
            check_bundle_task(bundle, task, simulated)
        except ValueError as exc:
            if not report_decoder_errors:
                raise
            error, bundle = exc, None
    builtin = None if stream is not None else plan_builtin(bundle, task, simulated, seed)
    opened = _connect_streams(builtin, stream, markers, timeout, dejitter)
    opened.decoder_error = error
    if bundle is None:
        return opened
    session = None
    try:
        session = _open_decoding(opened, bundle, provider, recenter, log_path, text_outlet)
        if start:
            session.start()
    except Exception as exc:
        if session is not None:
            session.stop()
        if not report_decoder_errors:
            opened.close()
            raise
        logger.warning("The decoder did not start: %s", exc, exc_info=exc)
        opened.decoder_error = exc
    else:
        opened.session = session
    return opened


def _load(bundle, report: bool) -> tuple[Exception | None, Bundle | None]:
    if bundle is None or isinstance(bundle, Bundle):
        return None, bundle
    try:
        return None, load_bundle(bundle)
    except (OSError, ValueError, KeyError) as exc:
        if not report:
            raise
        return exc, None


def _connect_streams(builtin, stream, markers, timeout: float, dejitter: bool) -> OpenedSession:
    """Start the built-in simulator if planned, then connect the marker and data streams."""
    simulator = None
    if builtin is not None:
        simulator = start_builtin(builtin)
        stream = StreamQuery(source_id=builtin.source_id)
        markers = markers or StreamQuery(source_id=builtin.marker_source_id)
    marker_source = source = None
    try:
        # markers first: a player waiting for a consumer starts when the data inlet connects
        if markers is not None:
            marker_source = connect(MarkerSource, markers, timeout)
        source = connect(StreamSource, stream, timeout, dejitter=dejitter)
    except BaseException:
        for close in (marker_source and marker_source.disconnect, simulator and simulator.stop):
            if close:
                close()
        raise
    return OpenedSession(
        source, marker_source, builtin=builtin, simulator=simulator, timeout=timeout
    )


def _open_decoding(
    opened: OpenedSession, bundle: Bundle, provider: str, recenter, log_path, text_outlet: bool
) -> DecodingSession:
    """Check ``bundle`` against the streams, open its strategy and the session on them."""
    source = opened.source
    # before the decoder loads (graphs, warm-up): a stream it cannot decode fails at once
    bundle.check_stream(
        source.channels, source.sfreq, stream_name=f"the stream '{source.info.name()}'"
    )
    strategy = make_strategy(bundle, has_markers=opened.markers is not None, provider=provider)
    return DecodingSession(
        strategy,
        source,
        opened.markers,
        recenter=recenter,
        log_path=log_path,
        text_outlet=text_outlet,
    )


def close_all(steps: list) -> None:
    """Run every closing step even when one fails; log each failure, then raise the first.

    A session holds several resources (decoder, readers, streams, simulator, recorder): one that
    fails to close must not leave the others open.
    """
    errors = []
    for step in steps:
        try:
            step()
        except Exception as exc:
            logger.warning("Closing the session: %s", exc, exc_info=exc)
            errors.append(exc)
    if errors:
        raise errors[0]
