"""Argument checks of the command line: argparse ``type=`` functions with readable errors.

Each turns the text of an option into its value or raises ``argparse.ArgumentTypeError``
naming the value, the rule and an example, which argparse prints as a usage error (exit 2).
"""

from __future__ import annotations

import argparse
import math


def _number(value: str, kind: type, rule: str) -> float | int:
    try:
        number = kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: use {rule}") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: use {rule}")
    return number


def positive_int(value: str) -> int:
    """An integer >= 1 (epochs, batch sizes, counts)."""
    number = _number(value, int, "an integer >= 1")
    if number < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: use an integer >= 1")
    return number


def positive_seconds(value: str) -> float:
    """A finite number of seconds > 0 (durations, time-outs)."""
    rule = "a number of seconds > 0, e.g. 2.5"
    number = _number(value, float, rule)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: use {rule}")
    return number


def speed(value: str) -> float | str:
    """A replay speed: a positive multiple of real time (``10`` or ``10x``) or ``max``."""
    if value == "max":
        return "max"
    try:
        number = _number(value.rstrip("x"), float, "")
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"invalid speed {value!r}: use a positive number (1, 10, 2.5) or 'max'"
        ) from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"invalid speed {value!r}: it must be > 0 or 'max'")
    return number
