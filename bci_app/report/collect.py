"""Collect a live session's report while it runs: its text events and its stream health.

A :class:`SessionCollector` listens to a :class:`~bci_app.live.session.DecodingSession` (every
text event goes through an :class:`~bci_app.report.data.EventDigest` on the decoding thread; no
event is kept) and polls the stream source's health once a second on its own thread. Create it
before the session starts, stop it after the session stopped and before the streams close, then
take :meth:`SessionCollector.record`.
"""

from __future__ import annotations

import math
import threading
from datetime import datetime

import numpy as np
import pylsl

from acquisition.stream import StreamHealth
from bci_app.decoders.events import TextEvent
from bci_app.live.session import DecodingSession
from bci_app.report.data import EventDigest, HealthTimeline, SessionRecord


class SessionCollector:
    """Gather what the report of a live decoding session needs (module docstring).

    Parameters
    ----------
    session : DecodingSession
        The session, best not started yet (events emitted before are not counted).
    interval_s : float
        Seconds between two health samples.
    """

    def __init__(self, session: DecodingSession, interval_s: float = 1.0) -> None:
        if not interval_s > 0:
            raise ValueError(f"Invalid value for 'interval_s': {interval_s!r}; it must be > 0 s.")
        self.session = session
        self.interval_s = float(interval_s)
        self.digest = EventDigest()
        self.t0 = pylsl.local_clock()
        self.started = datetime.now().astimezone().isoformat(timespec="seconds")
        self._rows: list[tuple[float, StreamHealth]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._health_error: str | None = None
        session.add_listener(self._on_event)

    def start(self) -> SessionCollector:
        """Start polling the stream's health (nothing to poll without a stream source)."""
        if self.session.source is not None and self._thread is None:
            self.t0 = pylsl.local_clock()
            self.started = datetime.now().astimezone().isoformat(timespec="seconds")
            self._thread = threading.Thread(target=self._poll, name="report-health", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling, after a last health sample (safe to call twice)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        self._thread = None
        self._sample()

    def __enter__(self) -> SessionCollector:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _on_event(self, event: TextEvent) -> None:
        with self._lock:
            self.digest.add_event(event)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def _sample(self) -> None:
        try:
            health = self.session.source.health()
        except Exception as exc:  # the stream's own error: the session reports it too
            self._health_error = str(exc)
            return
        with self._lock:
            self._rows.append((pylsl.local_clock(), health))

    def record(self) -> SessionRecord:
        """The report record of the session so far."""
        session = self.session
        summary = session.summary()
        with self._lock:
            rows = list(self._rows)
            t0 = self.t0 if session.source is not None else self.digest.first_sample
            t0 = t0 if math.isfinite(t0) else 0.0
            sentences, words = self.digest.sentences(t0), self.digest.words(t0)
            latencies = self.digest.latencies_ms()
            span = self.digest.last_sample - self.digest.first_sample
        timeline = _timeline(rows, self.t0, _nominal(session))
        last = rows[-1][1] if rows else None
        totals = _totals(summary, last)
        notes = []
        if session.source is None:
            notes.append(
                "The session had no stream source: the stream's health was not measured, and the "
                "latencies from the sample time are left out (its samples were not stamped on "
                "this machine's clock)."
            )
            latencies = {k: v for k, v in latencies.items() if not k.startswith("sample")}
        if self._health_error:
            notes.append(f"The stream reported an error: {self._health_error}")
        if last is not None and last.n_gaps > len(last.gaps):
            notes.append(f"The timeline shows the last {len(last.gaps)} of {last.n_gaps} gaps.")
        if last is not None and last.sfreq > 0:
            duration = last.n_samples / last.sfreq
        else:  # no stream source: the span of the decoded data
            duration = max(0.0, span)
        task = "listening" if session.bundle.task == "speech" else "typing"
        return SessionRecord(
            origin="live session",
            task=task,
            bundle=f"{session.bundle.name} ({session.bundle.path})",
            provider=session.provider,
            stream=_describe_stream(session),
            started=self.started,
            duration_s=float(duration),
            sentences=sentences,
            words=words,
            n_candidates=getattr(session.decoder, "n_candidates", None),
            latencies_ms=latencies,
            health=timeline,
            totals=totals,
            notes=tuple(notes),
        )


def _nominal(session: DecodingSession) -> float:
    if session.source is not None:
        return float(session.source.sfreq)
    return float(session.pipeline.preprocessor.config.sfreq_in)


def _describe_stream(session: DecodingSession) -> str:
    if session.source is None:
        return "fed by hand (no LSL stream)"
    info = session.source.info
    return f"{info.name()} ({info.channel_count()} ch, {info.nominal_srate():g} Hz)"


def _timeline(rows: list[tuple[float, StreamHealth]], t0: float, nominal: float) -> HealthTimeline:
    """The health samples as arrays; gaps from the last sample; outages and reconnections."""
    t = np.array([when - t0 for when, _ in rows])
    col = [h for _, h in rows]
    outages, reconnections = [], []
    start = None
    for when, health, previous in zip(t, col, [None, *col[:-1]]):
        if health.state != "connected" and start is None:
            start = (when, health.state)
        elif health.state == "connected" and start is not None:
            outages.append((start[0], when, start[1]))
            start = None
        if previous is not None and health.reconnections > previous.reconnections:
            reconnections.append(float(when))
    if start is not None:
        outages.append((start[0], float(t[-1]), start[1]))
    gaps = () if not col else tuple((g.start - t0, g.duration) for g in col[-1].gaps)
    # samples that arrived per second between two polls (0 while the stream is lost)
    received = np.array([h.n_samples for h in col], dtype=float)
    rate = np.full(len(col), np.nan)
    if len(col):
        rate[0] = col[0].effective_rate
        rate[1:] = np.diff(received) / np.maximum(np.diff(t), 1e-9)
    return HealthTimeline(
        origin="live",
        nominal_hz=nominal,
        t_s=t,
        rate_hz=rate,
        count_t_s=t,
        dropped=np.array([h.dropped_samples for h in col], dtype=float),
        invalid=np.array([h.n_invalid_samples for h in col], dtype=float),
        lag_t_s=t,
        lag_ms=np.array([h.lag_s * 1e3 for h in col]),
        lag_label="local clock − newest sample, polled every second",
        gaps=gaps,
        outages=tuple(outages),
        reconnections=tuple(reconnections),
    )


def _totals(summary: dict, last: StreamHealth | None) -> dict:
    totals = {} if last is None else {"samples": last.n_samples}
    totals.update(
        {
            "gaps": summary["gaps"],
            "dropped samples": summary["dropped_samples"],
            "invalid samples (NaN/Inf)": summary["invalid_samples"],
            "reconnections": summary["reconnections"],
            "windows decoded": summary["windows"],
            "invalid windows (not decoded)": summary["invalid_windows"],
            "inference errors": summary["inference_errors"],
            "events dropped (display)": summary["events_dropped_gui"],
            "events dropped (log)": summary["events_dropped_log"],
        }
    )
    return totals
