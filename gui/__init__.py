"""PyQt6 + pyqtgraph window of bci-app (needs the ``gui`` extra)."""
