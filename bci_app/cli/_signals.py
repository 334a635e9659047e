"""SIGTERM handled like Ctrl-C: a clean stop with the command's hint, never a silent kill.

Python turns Ctrl-C (SIGINT) into ``KeyboardInterrupt``, but SIGTERM (``kill PID``, a job
scheduler, ``torchrun`` stopping its workers) kills it at once with no message: no hint that
``train --resume`` exists, no clean-up of a half-written output. :func:`interrupt_on_sigterm`
makes SIGTERM raise :class:`Terminated`, a ``KeyboardInterrupt``, so every command's Ctrl-C path
(clean-up, hint, exit code) serves both. Commands that watch a stop event (``run``, ``record``,
``replay``) install their own handler for both signals and end normally.
"""

from __future__ import annotations

import signal

#: Exit status after Ctrl-C and after SIGTERM: 128 + the signal's number, as a shell reports
#: a process that the signal ended.
EXIT_STATUS = {"Ctrl-C": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: handled like Ctrl-C, and named SIGTERM in the message."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def interrupt_on_sigterm() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread (call it from there)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def interruption(err: KeyboardInterrupt) -> str:
    """Name what interrupted a command: ``"SIGTERM"`` or ``"Ctrl-C"`` (a key in EXIT_STATUS)."""
    return "SIGTERM" if isinstance(err, Terminated) else "Ctrl-C"


def interrupt_error(signum: int) -> KeyboardInterrupt:
    """The exception a command raises to stop for ``signum``: Terminated for SIGTERM."""
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
