"""Helpers shared by the tests: synthetic typing bundles and simulated typing sessions.

Imported as ``from helpers import typing_bundles`` (``pythonpath = ["tests"]`` in pyproject).
"""
