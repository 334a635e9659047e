"""Test helper: drive a decoding session chunk by chunk from a recording (no thread, no LSL)."""

from __future__ import annotations

from acquisition.recording import Recording
from bci_app.decoders.events import TextEvent
from bci_app.live.session import DecodingSession


def feed(
    session: DecodingSession, recording: Recording, chunk_s: float = 0.1, *, markers: bool = True
) -> tuple[list[TextEvent], dict]:
    """Step ``recording`` through the session's pipeline as a live stream would bring it.

    Each chunk of ``chunk_s`` seconds comes with the markers stamped up to its last sample (as
    a marker stream delivers them); then the session stops. Returns every text event it
    emitted, in order, and its summary.
    """
    pending = sorted(recording.markers, key=lambda m: m.timestamp) if markers else []
    step = max(1, round(chunk_s * recording.sfreq))
    for start in range(0, recording.n_times, step):
        stop = min(start + step, recording.n_times)
        t_end = recording.timestamps[stop - 1]
        arrived = [m for m in pending if m.timestamp <= t_end]
        pending = pending[len(arrived) :]
        session.pipeline.step(
            recording.data[start:stop], recording.timestamps[start:stop], markers=arrived
        )
    summary = session.stop()
    return session.events.drain(), summary
