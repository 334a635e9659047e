"""``bci-app gui``: open the main window (PyQt6), optionally on the built-in simulator."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from bci_app._optional import import_optional
from bci_app.decoders.bundle import load_bundle
from gui.decoding import SIMULATORS

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the window."""
    simulators = "\n".join(
        f"  {key:<16}{sim.description}"
        + (f" (decoded by the shipped {sim.bundle.name})" if sim.bundle else "")
        for key, sim in SIMULATORS.items()
    )
    parser = argparse.ArgumentParser(
        prog="bci-app gui",
        description="Live scope, decoded text, stream health, calibration and replay.",
        epilog=f"built-in simulators (--simulate SIM):\n{simulators}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--simulate",
        choices=tuple(SIMULATORS),
        metavar="SIM",
        help="start a built-in simulated typing or listening session right away (see below)",
    )
    start.add_argument(
        "--stream", metavar="SOURCE_ID", help="connect to this LSL stream (source_id or name)"
    )
    parser.add_argument("--markers", metavar="SOURCE_ID", help="marker stream to show with it")
    parser.add_argument(
        "--bundle",
        metavar="DIR",
        help="decoder bundle (typing or speech) for the session; default: the shipped bundle of "
        "the MEG simulators, none for other streams",
    )
    parser.add_argument("--replay", metavar="FILE", help="open this recording in the replay panel")
    parser.add_argument("--settings", metavar="INI", help="settings file (default: the user's)")
    parser.add_argument(
        "--exit-after", type=float, metavar="S", help="close the window after S seconds"
    )
    parser.add_argument(
        "--screenshot", metavar="PNG", help="save a picture of the window before closing"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Launch the window; return the exit code."""
    args = build_parser().parse_args(argv)
    if args.exit_after is not None and not args.exit_after > 0:
        print(f"Invalid value for '--exit-after': {args.exit_after}; give seconds > 0.")
        return 2
    if args.bundle is not None:
        try:
            load_bundle(Path(args.bundle).expanduser(), verify=False)
        except (OSError, ValueError) as err:
            print(f"Invalid value for '--bundle': {err}")
            return 2
    import_optional("PyQt6.QtWidgets")
    from PyQt6.QtCore import QEventLoop, QSettings, QTimer
    from PyQt6.QtWidgets import QApplication

    from gui.main_window import MainWindow
    from gui.session import StreamChoice

    existing = QApplication.instance()
    app = existing or QApplication(sys.argv[:1])
    app.setApplicationName("bci-app")
    settings = QSettings(args.settings, QSettings.Format.IniFormat) if args.settings else None
    window = MainWindow(settings)
    window.show()
    previous_hook = sys.excepthook

    def show_unexpected(kind, value, tb) -> None:
        logger.error("Unexpected error:\n%s", "".join(traceback.format_exception(kind, value, tb)))
        window.show_error(f"Unexpected error ({kind.__name__}): {value}. Details are in the log.")

    sys.excepthook = show_unexpected
    if args.bundle is not None:
        window.bar.bundle_edit.setText(str(Path(args.bundle).expanduser().resolve()))
    if args.simulate:
        window.bar.select_data(f"sim:{args.simulate}")
        window.toggle_session()
    elif args.stream:
        markers = StreamChoice.from_text(args.markers) if args.markers else None
        window.start_session(StreamChoice.from_text(args.stream), markers)
    if args.replay:
        window.replay.open(Path(args.replay))
    if args.exit_after is not None:

        def finish() -> None:
            if args.screenshot:
                window.grab().save(args.screenshot)
            window.close()

        QTimer.singleShot(round(args.exit_after * 1000), finish)
    try:
        if existing is None:
            window.closed.connect(app.quit)
            return app.exec()
        # Inside a running application (tests, an embedding tool): a local event loop, so that
        # closing the window does not quit the host application.
        loop = QEventLoop()
        window.closed.connect(loop.quit)
        quit_on_close = app.quitOnLastWindowClosed()
        app.setQuitOnLastWindowClosed(False)
        try:
            loop.exec()
        finally:
            app.setQuitOnLastWindowClosed(quit_on_close)
        return 0
    finally:
        sys.excepthook = previous_hook
