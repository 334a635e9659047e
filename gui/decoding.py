"""The live decoder of a GUI session: which bundle, the simulator that fits it, open and close it.

:data:`SIMULATORS` lists the built-in simulated sessions the window can play (typing or
listening) and the shipped bundle that decodes each. :func:`open_decoding` builds a
:class:`bci_app.live.session.LiveSession` (or its speech counterpart) on the session's own
:class:`~acquisition.stream.StreamSource` (its ring buffer serves several readers) with a
:class:`~acquisition.markers.MarkerSource` of its own (``pull`` drains a marker queue, so the
scope's markers and the decoder's cannot share one). It blocks (the ONNX graphs load and warm up),
so :mod:`gui.session` calls it on its connecting thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from acquisition.markers import MarkerSource
from acquisition.stream import StreamSource
from bci_app.decoders.bundle import Bundle, load_bundle
from bci_app.decoders.shipped import SPEECH_BUNDLE, TYPING_BUNDLE
from bci_app.live.session import LiveSession as DecodingSession

logger = logging.getLogger(__name__)

#: Bundle task that decodes each simulator task.
BUNDLE_TASKS = {"typing": "typing", "listening": "speech"}


@dataclass(frozen=True)
class BuiltinSimulator:
    """A simulated session the window can play, and the shipped bundle that decodes it.

    Attributes
    ----------
    modality : str
        Simulator modality (``"meg"``, ``"eeg"``, ``"ieeg"``).
    task : str
        ``"typing"`` (keystroke markers) or ``"listening"`` (word-onset markers).
    description : str
        What the session bar shows in brackets (the health panel gives the channel count).
    bundle : Path | None
        The shipped bundle that decodes it when no bundle is chosen (None: scope only).
    """

    modality: str
    task: str
    description: str
    bundle: Path | None = None


#: Built-in simulators by key (``--simulate KEY``; ``sim:KEY`` in the settings).
SIMULATORS = {
    "meg": BuiltinSimulator("meg", "typing", "MEG, typing", TYPING_BUNDLE),
    "eeg": BuiltinSimulator("eeg", "typing", "EEG, typing"),
    "meg-listening": BuiltinSimulator("meg", "listening", "MEG, listening", SPEECH_BUNDLE),
    "eeg-listening": BuiltinSimulator("eeg", "listening", "EEG, listening"),
    "ieeg-listening": BuiltinSimulator("ieeg", "listening", "sEEG, listening"),
}


def simulator_key(modality: str, task: str = "typing") -> str:
    """Key of the built-in simulator of ``modality`` and ``task`` (``"meg-listening"``)."""
    return modality if task == "typing" else f"{modality}-{task}"


def bundle_for(chosen: str, simulator: str | None) -> Path | None:
    """The bundle a session decodes with: the one chosen, else the shipped one for the simulator.

    Parameters
    ----------
    chosen : str
        The bundle typed or picked in the session bar ("" if none).
    simulator : str | None
        Key of the built-in simulator (:data:`SIMULATORS`), if the session runs one.
    """
    if chosen.strip():
        return Path(chosen.strip()).expanduser()
    return SIMULATORS[simulator].bundle if simulator in SIMULATORS else None


def check_bundle_task(bundle: Bundle, simulator: str) -> None:
    """Raise ValueError when ``bundle`` cannot decode the task the built-in ``simulator`` plays.

    Both would run (same sensors and rate) and decode nothing sensible: a typing decoder
    waits for keystrokes a listener never makes, a speech decoder ranks words nobody heard.
    """
    sim = SIMULATORS[simulator]
    if bundle.task == BUNDLE_TASKS[sim.task]:
        return
    shipped = f" (leave it empty for the shipped '{sim.bundle.name}')" if sim.bundle else ""
    other = "a listening" if sim.task == "typing" else "the typing"
    raise ValueError(
        f"Invalid decoder for this stream: '{bundle.name}' is a {bundle.task} decoder, but the "
        f"built-in simulator ({sim.description}) plays a {sim.task} session, which needs a "
        f"{BUNDLE_TASKS[sim.task]} decoder. Choose a {BUNDLE_TASKS[sim.task]} bundle under "
        f"'Decoder'{shipped}, or {other} simulator under 'Data stream'."
    )


@dataclass
class Decoding:
    """A running decoder and the marker source it reads (both stop with :meth:`close`)."""

    engine: DecodingSession
    markers: MarkerSource | None

    @property
    def text_source_id(self) -> str | None:
        """source_id of the decoder's LSL text outlet (to record it with the session)."""
        info = self.engine.text_outlet_info
        return None if info is None else info.source_id()

    def close(self) -> None:
        """Stop decoding (commits an open sentence), then disconnect the marker source."""
        try:
            self.engine.stop()
        finally:
            if self.markers is not None:
                self.markers.disconnect()


def open_decoding(
    bundle: Bundle,
    source: StreamSource,
    marker_query: dict | None,
    *,
    timeout: float = 3.0,
    provider: str = "auto",
) -> Decoding:
    """Start decoding ``source`` with ``bundle``; raise ValueError when they do not fit.

    Parameters
    ----------
    bundle : Bundle
        Loaded decoder bundle (typing v1/v2, or speech: word-locked windows when the marker
        stream has word onsets, else sliding windows; candidates go to the candidates panel).
    source : StreamSource
        The session's connected data stream.
    marker_query : dict | None
        How to find the session's marker stream (``source_id=`` or ``name=``); optional for
        speech bundles.
    timeout : float
        Seconds to look for the marker stream.
    provider : str
        onnxruntime provider (``auto`` picks CUDA where there is one).
    """
    speech = bundle.task == "speech"
    if marker_query is None and not speech:
        raise ValueError(
            f"The decoder '{bundle.name}' is keystroke-locked and needs the keystroke marker "
            "stream: choose it under 'Markers' (or use the built-in simulator) and start again."
        )
    markers = None
    if marker_query is not None:
        markers = MarkerSource(**marker_query, resolve_timeout=timeout).connect()
    try:
        engine = session_class(bundle)(bundle, source, markers, provider=provider)
    except BaseException:
        if markers is not None:
            markers.disconnect()
        raise
    try:
        engine.start()
    except BaseException:
        Decoding(engine, markers).close()
        raise
    logger.info("Decoding '%s' with '%s' on %s", source.info.name(), bundle.name, engine.provider)
    return Decoding(engine, markers)


def session_class(bundle: Bundle) -> type[DecodingSession]:
    """The live session that runs ``bundle``: typing v1 (keystrokes), v2 (CTC) or speech."""
    if bundle.task == "speech":
        from bci_app.live.speech import SpeechSession

        return SpeechSession
    if bundle.manifest.get("arch") == "brain2qwerty_v2":
        from bci_app.live.ctc import CTCLiveSession

        return CTCLiveSession
    return DecodingSession


def load_for_session(path: Path | None) -> tuple[Bundle | None, str | None]:
    """Load the bundle at ``path``: ``(bundle, None)``, or ``(None, readable error)``."""
    if path is None:
        return None, None
    try:
        return load_bundle(path), None
    except (OSError, ValueError, KeyError) as exc:
        return None, f"Decoding is off: {exc}"
