"""Every ``--help`` of ``bci-app`` shows each option's default, and says what a newcomer needs."""

from __future__ import annotations

import argparse

import pytest

from bci_app.cli.main import build_parser
from gui.app import build_parser as build_gui_parser


def _parsers(parser: argparse.ArgumentParser, path: str = "bci-app"):
    """``(command path, parser)`` of ``parser`` and of every subcommand below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


PARSERS = [*_parsers(build_parser()), ("bci-app gui", build_gui_parser())]


@pytest.mark.parametrize(("command", "parser"), PARSERS, ids=[c for c, _ in PARSERS])
def test_every_option_with_a_default_shows_it(command, parser):
    text = " ".join(parser.format_help().split())  # one line: wrapping never splits a check
    for action in parser._actions:
        shown = action.default not in (None, False, argparse.SUPPRESS)
        if not action.option_strings or not shown:
            continue
        assert action.help, f"{command} {action.option_strings[0]} has no help"
        assert "default" in action.help.lower() or f"(default: {action.default})" in text, (
            f"{command} {action.option_strings[0]}: default {action.default!r} not in its help"
        )


def test_simulate_help_shows_the_snr_default():
    parser = dict(_parsers(build_parser()))["bci-app simulate"]
    assert "evoked/background RMS ratio (default: 1.0)" in " ".join(parser.format_help().split())


def test_lm_train_help_says_how_a_bundle_takes_the_model():
    text = dict(_parsers(build_parser()))["bci-app lm train"].format_help()
    assert "cp LM.npz my-bundle/lm.npz" in text
    assert '"lm": {"file": "lm.npz", "order": N, "weight": 0.5}' in text
    assert "bci-app run --bundle my-bundle" in text
