"""Signal processing of the live and offline paths: causal stages, streaming resampler.

The :class:`Preprocessor` that chains them, drift re-centering and windowers.
"""
