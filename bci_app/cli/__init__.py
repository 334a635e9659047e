"""The ``bci-app`` command line, one module per command group.

The only part of ``bci_app`` that may import ``gui`` and ``models``, and only lazily, inside
the command that needs them. Library modules take typed arguments and return values; the
commands here parse argv, print and choose exit codes.
"""
