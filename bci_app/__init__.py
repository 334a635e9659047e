"""bci-app core: preprocessing, windowing, runtime, decoders, live session wiring and the CLI."""

__version__ = "0.1.0"
