"""Speech decoding: audio features and extractors, the heard audio of a recording,
candidates, the decoder, scoring and offline evaluation.
"""
