"""A :class:`~bci_app.report.data.SessionRecord` from a session's XDF recording.

``bci-app run --record`` and the window's Record write the data stream, the marker stream and the
``bci-app-text`` stream: one JSON text event per sample, then, when the recorder outlived the
decoding session, the session summary (``{"event": "summary", ...}``: bundle, provider, counts).
:func:`read_session_xdf` reads the file with :func:`acquisition.xdf.read_xdf` (every string stream
comes back as markers; the text stream's rows are the ones that parse as JSON text events) and
derives the stream-health timeline from the recorded samples: rate per second, gaps, samples
holding NaN/Inf, and the lag at each decoded event.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from acquisition.recording import Marker, Recording, parse_marker
from acquisition.xdf import read_xdf
from bci_app.decoders.events import KINDS
from bci_app.report.data import EventDigest, HealthTimeline, ReportError, SessionRecord

#: Name of the decoded-text stream a session records.
TEXT_STREAM = "bci-app-text"
_XDF_SUFFIXES = (".xdf", ".xdfz", ".xdf.gz")
_RECORD_HINT = (
    "Give the .xdf file that 'bci-app run --record' or the window's Record wrote for a decoding "
    "session."
)


def _text_rows(markers: list[Marker]) -> tuple[list[dict], list[Marker]]:
    """Split the markers into the text stream's JSON rows and the other markers."""
    rows, others = [], []
    for marker in markers:
        row = None
        if marker.value.startswith("{"):
            try:
                row = json.loads(marker.value)
            except ValueError:
                row = None
        if isinstance(row, dict) and (row.get("kind") in KINDS or row.get("event") == "summary"):
            rows.append(row)
        else:
            others.append(marker)
    return rows, others


def _check_path(path: Path) -> None:
    if not path.is_file():
        what = "it is a folder" if path.is_dir() else "the file does not exist"
        raise ReportError(
            f"Cannot report on '{path}': {what}. Check the path (relative paths start "
            f"at the current directory). {_RECORD_HINT}"
        )
    if not path.name.lower().endswith(_XDF_SUFFIXES):
        raise ReportError(
            f"Cannot report on '{path}': it is not an XDF recording (extension "
            f"{''.join(path.suffixes) or '(none)'!r}, not .xdf). {_RECORD_HINT}"
        )


def _read(path: Path) -> Recording:
    _check_path(path)
    try:
        return read_xdf(path, dejitter=False)
    except (ValueError, OSError) as err:  # its message says what is wrong and the fix
        reason = str(err).removeprefix(f"Cannot read '{path}': ")
        raise ReportError(f"Cannot report on '{path}': {reason}") from None


def read_session_xdf(path: str | Path) -> SessionRecord:
    """Read a decoding session's XDF recording into a report record.

    Parameters
    ----------
    path : path-like
        The ``.xdf`` file of the session.

    Raises
    ------
    ReportError
        A missing file, a file that is not XDF, or an XDF without the ``bci-app-text`` stream
        (recorded without decoding). The message names the file and the fix.
    """
    path = Path(path)
    rec = _read(path)
    streams = rec.meta.get("xdf_streams") or []
    if TEXT_STREAM not in streams:
        raise ReportError(
            f"Cannot report on '{path}': it holds no '{TEXT_STREAM}' stream (streams: "
            f"{', '.join(map(str, streams)) or 'none'}), so nothing was decoded while it was "
            "recorded. Decode it first: 'bci-app replay FILE' with 'bci-app run --stream NAME "
            "--markers NAME-markers --record NEW.xdf', then report on NEW.xdf."
        )
    rows, markers = _text_rows(rec.markers)
    summaries = [row for row in rows if row.get("event") == "summary"]
    summary = summaries[-1] if summaries else {}
    digest = EventDigest()
    for row in rows:
        if "kind" in row:
            digest.add_json(row)
    t0 = float(rec.timestamps[0])
    timeline, totals = _timeline(rec, markers, digest, t0)
    notes = []
    if not summary:
        notes.append(
            "The recording holds no session summary (it stopped before the decoding session): "
            "bundle, provider and decoder counts are unknown."
        )
    if rec.meta.get("truncated"):
        notes.append(f"The file is truncated ({rec.meta['truncated']}); the rest was read.")
    totals.update(_summary_totals(summary))
    task = "listening" if "words" in summary else digest.task
    return SessionRecord(
        origin=str(path),
        task=task,
        bundle=summary.get("bundle"),
        provider=summary.get("provider"),
        stream=f"{rec.name} ({rec.channels.n_channels} ch, {rec.sfreq:g} Hz)",
        started=rec.meta.get("recorded_at"),
        duration_s=float(rec.duration),
        sentences=digest.sentences(t0),
        words=digest.words(t0),
        n_candidates=summary.get("candidates"),
        latencies_ms=digest.latencies_ms(),
        health=timeline,
        totals=totals,
        notes=tuple(notes),
    )


def _summary_totals(summary: dict) -> dict:
    """The decoder counts only the session summary knows."""
    keys = {
        "windows": "windows decoded",
        "invalid_windows": "invalid windows (not decoded)",
        "inference_errors": "inference errors",
        "reconnections": "reconnections",
        "events_dropped_gui": "events dropped (display)",
        "events_dropped_log": "events dropped (log)",
    }
    return {label: summary[key] for key, label in keys.items() if key in summary}


def _timeline(
    rec: Recording, markers: list[Marker], digest: EventDigest, t0: float
) -> tuple[HealthTimeline, dict]:
    """Rate per second, gaps, NaN/Inf samples and event lag, from the recorded samples."""
    times = rec.timestamps - t0
    sfreq = rec.sfreq or (len(times) / max(rec.duration, 1e-9))
    span = times[-1] + 1.0 / sfreq
    n_bins = max(1, round(span))  # 1 s bins, the last one 0.5-1.5 s long
    edges = np.arange(n_bins + 1, dtype=float)
    edges[-1] = max(edges[-1], span)
    counts, _ = np.histogram(times, edges)
    widths = np.diff(np.minimum(edges, span))
    rate = counts / np.maximum(widths, 1e-9)
    data = rec.data
    bad_rows = ~np.isfinite(data).all(axis=1) if np.issubdtype(data.dtype, np.floating) else None
    invalid = np.zeros(n_bins)
    if bad_rows is not None and bad_rows.any():
        invalid = np.histogram(times[bad_rows], edges)[0].astype(float)
    gaps = []
    dropped = np.zeros(n_bins)
    for marker in markers:
        kind, payload = parse_marker(marker.value)
        if kind != "gap":
            continue
        start, duration = marker.timestamp - t0, float(payload)
        gaps.append((start, duration))
        dropped[min(n_bins - 1, max(0, int(start)))] += round(duration * sfreq)
    lags = np.asarray(digest.lags).reshape(-1, 2)
    timeline = HealthTimeline(
        origin="recording",
        nominal_hz=float(rec.sfreq),
        t_s=edges[:-1] + widths / 2,
        rate_hz=rate,
        count_t_s=edges[:-1] + widths,
        dropped=np.cumsum(dropped),
        invalid=np.cumsum(invalid),
        lag_t_s=lags[:, 0] - t0,
        lag_ms=lags[:, 1] * 1e3,
        lag_label="newest sample → pulled at each decoded event (incl. the filter delay)",
        gaps=tuple(gaps),
    )
    totals = {
        "samples": int(rec.n_times),
        "gaps": len(gaps),
        "dropped samples": int(dropped.sum()),
        "invalid samples (NaN/Inf)": int(invalid.sum()),
    }
    return timeline, totals
