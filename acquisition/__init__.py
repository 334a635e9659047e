"""LSL acquisition: stream sources, marker sources, outlets, recorder, player and simulator.

This layer knows nothing of decoders or Qt; ``bci_app`` builds on it.
"""
