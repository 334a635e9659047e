"""One place to import optional heavy dependencies, with an install hint when they are missing."""

from __future__ import annotations

import importlib
from types import ModuleType

_HINTS = {
    "torch": "pip install 'bci-app[train]' (CPU: scripts/setup.sh picks the CPU build of torch)",
    "onnxruntime": "pip install 'bci-app[cpu]' (or 'bci-app[gpu]' for onnxruntime-gpu, not both)",
    "PyQt6": "pip install 'bci-app[gui]'",
    "pyqtgraph": "pip install 'bci-app[gui]'",
    "matplotlib": "pip install 'bci-app[train]'",
    "transformers": "pip install 'bci-app[audio-models]' (local wav2vec2-style speech models)",
    "kenlm": "pip install kenlm (optional: only for ARPA/binary language models)",
}


def import_optional(name: str) -> ModuleType:
    """Import ``name`` or raise ImportError saying which extra installs it."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        top = name.split(".")[0]
        hint = _HINTS.get(top, f"pip install {top}")
        raise ImportError(
            f"This feature needs the optional package '{top}'. Install it: {hint}."
        ) from err
