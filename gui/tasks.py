"""Run blocking calls (LSL resolution, connecting, opening files, stopping) off the GUI thread.

:func:`run_in_background` starts a call on a daemon thread and delivers its result, or its
exception, back on the GUI thread through Qt signals, so the window never waits on LSL or disk.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from PyQt6 import sip
from PyQt6.QtCore import QObject, pyqtSignal

logger = logging.getLogger(__name__)

_live: set[BackgroundTask] = set()
_live_lock = threading.Lock()


class BackgroundTask(QObject):
    """One blocking call on a worker thread; ``succeeded``/``failed`` arrive on the GUI thread.

    Parameters
    ----------
    fn : callable
        The call, without arguments (use a lambda or functools.partial).
    name : str
        What the call does, for logs and thread names.
    """

    succeeded = pyqtSignal(object)
    failed = pyqtSignal(object)

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        super().__init__()
        self._fn = fn
        self.name = name
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"gui-{name}", daemon=True)

    @property
    def done(self) -> bool:
        """Whether the call has returned or raised."""
        return self._finished.is_set()

    def start(self) -> BackgroundTask:
        """Start the worker thread."""
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the call to end (only at shutdown or in tests); return whether it did."""
        return self._finished.wait(timeout)

    def _run(self) -> None:
        try:
            result = self._fn()
        except Exception as exc:
            logger.warning("Background task %r failed: %s", self.name, exc, exc_info=exc)
            self._finished.set()
            self.failed.emit(exc)
        else:
            self._finished.set()
            self.succeeded.emit(result)


def run_in_background(
    fn: Callable[[], Any],
    *,
    name: str,
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    owner: QObject | None = None,
) -> BackgroundTask:
    """Call ``fn()`` on a worker thread; ``on_done(result)`` or ``on_error(exc)`` run in the GUI.

    The task is kept alive until its callbacks have run. The callbacks are skipped when
    ``owner`` (the widget they update) has been deleted meanwhile, e.g. its window was closed.
    """
    task = BackgroundTask(fn, name)
    for signal, callback in ((task.succeeded, on_done), (task.failed, on_error)):
        if callback is not None:
            signal.connect(_unless_deleted(owner, callback))
    task.succeeded.connect(lambda _result: _forget(task))
    task.failed.connect(lambda _exc: _forget(task))
    with _live_lock:
        _live.add(task)
    return task.start()


def _unless_deleted(owner: QObject | None, callback: Callable[[Any], None]):
    def call(value: Any) -> None:
        if owner is not None and sip.isdeleted(owner):
            logger.debug("Result of a background task dropped: its widget is gone.")
            return
        callback(value)

    return call


def _forget(task: BackgroundTask) -> None:
    with _live_lock:
        _live.discard(task)


def wait_for_all(timeout: float = 10.0) -> bool:
    """Wait for every running background task (at shutdown); return whether all ended."""
    with _live_lock:
        tasks = list(_live)
    return all(task.wait(timeout) for task in tasks)
