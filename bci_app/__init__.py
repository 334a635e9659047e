"""bci-app core: preprocessing, windowing, runtime, decoders, live session wiring and the CLI."""

import acquisition  # noqa: F401  (sets up liblsl's configuration before pylsl is first used)

__version__ = "0.1.0"
