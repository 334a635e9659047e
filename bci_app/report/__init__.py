"""Session reports: what a lab keeps with its data after every live or replayed session.

One self-contained HTML file (:func:`write_report`): decoded text vs target per sentence (typing)
or heard vs decoded word with top-1/top-k (listening), the CER over the session, latency
histograms per pipeline stage, a stream-health timeline, and the bundle and provider used. The
:class:`SessionRecord` it shows comes from a live session (:class:`SessionCollector`) or from the
session's XDF recording (:func:`read_session_xdf`).

>>> collector = SessionCollector(session).start()  # doctest: +SKIP
>>> ...  # the session runs, then stops
>>> collector.stop()  # doctest: +SKIP
>>> write_report(collector.record(), "session.html")  # doctest: +SKIP
"""

from __future__ import annotations

from bci_app.report.collect import SessionCollector
from bci_app.report.data import (
    EventDigest,
    HealthTimeline,
    ReportError,
    SentenceRow,
    SessionRecord,
    WordRow,
)
from bci_app.report.html import check_report_path, render_html, write_report
from bci_app.report.xdf import read_session_xdf

__all__ = [
    "EventDigest",
    "HealthTimeline",
    "ReportError",
    "SentenceRow",
    "SessionCollector",
    "SessionRecord",
    "WordRow",
    "check_report_path",
    "read_session_xdf",
    "render_html",
    "write_report",
]
