"""Paths of the decoder bundles shipped with bci-app (built by ``scripts/make_*_bundle.py``)."""

from __future__ import annotations

from pathlib import Path

BUNDLES_DIR = Path(__file__).resolve().parents[1] / "data" / "bundles"
#: Brain2Qwerty v1 on the simulated MEG subject 0: the default of ``bci-app run`` and the GUI.
TYPING_BUNDLE = BUNDLES_DIR / "typing-meg-small"
#: Contrastive speech decoder on the simulated MEG subject 0 (``bci-app run --task listening``).
SPEECH_BUNDLE = BUNDLES_DIR / "speech-meg-small"
