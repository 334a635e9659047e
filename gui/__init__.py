"""PyQt6 + pyqtgraph window of bci-app (needs the ``gui`` extra).

Layers: the widgets here read snapshots of :mod:`acquisition` sources and :mod:`bci_app` results
from QTimers and never block on LSL, inference, training or disk; slow calls run on worker
threads (:mod:`gui.tasks`).
"""

import os

from bci_app._optional import import_optional

# pyqtgraph picks the first Qt binding it finds; the app is built on PyQt6.
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PyQt6")
try:
    import_optional("PyQt6.QtWidgets")
    import_optional("pyqtgraph")
except ImportError as err:
    # PyQt6 is installed but a system library Qt links to is missing or broken: gui.app still
    # imports, says which one and how to install it (gui.qt_platform), and offers the terminal.
    if not any(text in str(err.__cause__) for text in ("shared object", "file too short")):
        raise
