"""Command-line parsers whose ``--help`` shows every option's default.

:class:`ArgumentParser` is ``argparse.ArgumentParser`` with :class:`DefaultsHelpFormatter`; its
subcommands (``add_subparsers().add_parser``) are made of the same class, so every ``bci-app``
command shows its defaults without each ``add_parser`` call asking for it.
"""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Append ``(default: X)`` to an option's help, unless it says its default or has none.

    Options without a default (None), flags (False) and help that already names its default
    ("default: until Ctrl-C") are shown as written.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        positional = not action.option_strings and action.nargs not in ("?", "*")
        if (
            positional
            or "default" in text.lower()
            or action.default is None
            or action.default is False
            or action.default == argparse.SUPPRESS
        ):
            return action.help
        return f"{text} (default: %(default)s)".strip()


class RawDescriptionDefaultsHelpFormatter(
    argparse.RawDescriptionHelpFormatter, DefaultsHelpFormatter
):
    """:class:`DefaultsHelpFormatter` that keeps the description and epilog as written."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose help, and that of its subcommands, shows defaults."""

    def __init__(self, *args, formatter_class=DefaultsHelpFormatter, **kwargs) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)
