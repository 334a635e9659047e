"""``bci-app gui``: open the main window (PyQt6), optionally on the built-in simulator.

Where Qt cannot open a window (system libraries missing, no display), :func:`main` raises
:class:`WindowUnavailable` before Qt would abort the process: it says why, gives the apt line
that fixes it, and names the terminal session (``bci-app run``) that plays the same session.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bci_app._argparse import RawDescriptionDefaultsHelpFormatter
from bci_app._optional import import_optional
from bci_app.decoders.bundle import load_bundle
from bci_app.live.builtin import plan_builtin, start_builtin
from gui.decoding import SIMULATORS, BuiltinSimulator
from gui.qt_platform import PlatformProblem, needs_display, probe_platform

logger = logging.getLogger(__name__)


def terminal_session(args: argparse.Namespace) -> tuple[list[str] | None, BuiltinSimulator | None]:
    """``bci-app run`` arguments of the session the window was asked for.

    Returns
    -------
    run_args : list of str | None
        Arguments of ``bci-app`` (None: the window was asked for no session).
    simulator : BuiltinSimulator | None
        A built-in simulator that ``bci-app run`` cannot start itself (one without a shipped
        bundle); the caller streams it and adds ``--stream``/``--markers``.
    """
    duration = ["--duration", f"{args.exit_after:g}"] if args.exit_after else []
    bundle = ["--bundle", args.bundle] if args.bundle else []
    if args.simulate:
        sim = SIMULATORS[args.simulate]
        if bundle or sim.bundle is not None:
            return ["run", "--task", sim.task, *bundle, *duration], None
        return ["run", "--no-decoder", *duration], sim
    if args.stream:
        markers = ["--markers", args.markers] if args.markers else []
        decoder = bundle or ["--no-decoder"]
        return ["run", "--stream", args.stream, *markers, *decoder, *duration], None
    return None, None


class WindowUnavailable(RuntimeError):
    """The window cannot open here: why, the fix, and the terminal session that replaces it.

    Parameters
    ----------
    problem : PlatformProblem
        What the platform probe found.
    args : argparse.Namespace
        The window's options, turned into ``bci-app run`` arguments (:func:`terminal_session`).
    """

    def __init__(self, problem: PlatformProblem, args: argparse.Namespace) -> None:
        self.problem = problem
        self.run_args, self.simulator = terminal_session(args)
        if self.run_args is None:
            then = "Start a session in the terminal instead: 'bci-app run' (see its --help)."
        else:
            then = "Running the same session in the terminal instead: bci-app " + " ".join(
                self.run_args
            )
            if self.simulator is not None:
                then += f" on the built-in {self.simulator.description} simulator"
            then += " (Ctrl-C stops)."
        super().__init__(f"{problem.message()}\n{then}")

    @contextmanager
    def terminal_session(self) -> Iterator[list[str] | None]:
        """``bci-app`` arguments of the terminal session, its simulator streaming meanwhile."""
        if self.run_args is None or self.simulator is None:
            yield self.run_args
            return
        plan = plan_builtin(None, self.simulator.task, self.simulator.modality)
        stream = start_builtin(plan)
        try:
            yield [*self.run_args, "--stream", plan.source_id, "--markers", plan.marker_source_id]
        finally:
            stream.stop()


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
        formatter_class=RawDescriptionDefaultsHelpFormatter,
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


#: Seconds a thread may hold the interpreter lock while another waits for it (Python's is 5 ms).
SWITCH_INTERVAL_S = 0.0005


def share_the_interpreter() -> None:
    """Make the window's Python code yield the interpreter lock to the stream workers sooner.

    The window, the stream's inlet worker and the decoder share one interpreter. A worker whose
    chunk arrives while the GUI thread runs Python waits for the lock up to the switch interval,
    5 ms by default, each time it wants it: drawing the scope added ~5 ms to every acquisition
    chunk. At 0.5 ms it waits ~10x less (``scripts/bench_gui.py`` measures both); forced switches
    only happen when another thread waits, so the GUI pays nothing when none does.
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def main(argv: list[str] | None = None) -> int:
    """Launch the window; return the exit code.

    Raises
    ------
    WindowUnavailable
        Qt cannot open a window here (checked in a subprocess first, since Qt aborts).
    """
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
    widgets = sys.modules.get("PyQt6.QtWidgets")
    running = widgets is not None and widgets.QApplication.instance() is not None
    if not running and needs_display():
        # Qt aborts the process when its platform plugin cannot load: try it in a subprocess
        problem = probe_platform()
        if problem is not None:
            raise WindowUnavailable(problem, args)
    import_optional("PyQt6.QtWidgets")
    from PyQt6.QtCore import QEventLoop, QSettings, QTimer
    from PyQt6.QtWidgets import QApplication

    from gui.main_window import MainWindow
    from gui.session import StreamChoice

    share_the_interpreter()
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
