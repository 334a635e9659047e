"""Signal processing of the live and offline paths: causal stages, streaming resampler,
the :class:`Preprocessor` that chains them, drift re-centering and windowers.
"""
