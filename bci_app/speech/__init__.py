"""Speech decoding: audio features and extractors, the heard audio of a recording, candidates.

The decoder, scoring and offline evaluation.
"""
