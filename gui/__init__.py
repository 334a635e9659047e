"""PyQt6 + pyqtgraph window of bci-app (needs the ``gui`` extra).

Layers: the widgets here read snapshots of :mod:`acquisition` sources and :mod:`bci_app` results
from QTimers and never block on LSL, inference, training or disk; slow calls run on worker
threads (:mod:`gui.tasks`).
"""

import os

from bci_app._optional import import_optional

# pyqtgraph picks the first Qt binding it finds; the app is built on PyQt6.
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PyQt6")
import_optional("PyQt6.QtWidgets")
import_optional("pyqtgraph")
