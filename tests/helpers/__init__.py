"""Helpers shared by the tests: synthetic typing bundles, simulated typing sessions.

And a decoding session fed chunk by chunk.

Imported as ``from helpers import typing_bundles`` (``pythonpath = ["tests"]`` in pyproject).
"""
