"""``bci-app report SESSION.xdf [--out REPORT.html]``: a session's report, rebuilt from its file.

The recording of a decoding session (``bci-app run --record``, the window's Record) holds the
decoded-text stream; :func:`bci_app.report.read_session_xdf` turns it into the report that
``bci-app run`` writes at the end of a session. A file the report cannot be made from is one line
on stderr naming the file and the fix, exit status 2, and nothing written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any


def cmd_report(args: argparse.Namespace) -> int:
    """Entry point of ``bci-app report``."""
    from bci_app.report import ReportError, check_report_path, read_session_xdf, write_report

    if not getattr(args, "verbose", False):  # one line of output, not pyxdf's progress
        logging.getLogger("pyxdf").setLevel(logging.WARNING)
    session = Path(args.session)
    try:
        out = check_report_path(Path(args.out) if args.out else session.with_suffix(".html"))
        if out.resolve() == session.resolve():
            raise ReportError(
                f"Invalid value for '--out': '{out}' is the recording itself. Give another file, "
                "e.g. one ending in .html."
            )
        record = read_session_xdf(session)
    except ReportError as err:
        print(f"bci-app report: error: {err}", file=sys.stderr)
        return 2
    print(f"Wrote the session report to {write_report(record, out)}")
    return 0


def add_report_command(subparsers: Any) -> None:
    """Add ``report SESSION.xdf [--out REPORT.html]`` to ``bci-app``."""
    p = subparsers.add_parser(
        "report", help="write the HTML report of a recorded decoding session (XDF)"
    )
    p.add_argument("session", metavar="SESSION.xdf", help="recording of a decoding session")
    p.add_argument(
        "--out", metavar="REPORT.html", help="report file (default: SESSION.html beside it)"
    )
    p.set_defaults(func=cmd_report)
