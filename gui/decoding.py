"""The built-in simulated sessions the window offers, and the bundle that decodes each.

:data:`SIMULATORS` lists the simulated sessions the window can play (typing or listening) and
the shipped bundle that decodes each (:func:`bci_app.live.builtin.shipped_bundle`). The window
opens everything else through :func:`bci_app.live.factory.open_session`, as ``bci-app run``
does, from :mod:`gui.session`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bci_app.live.builtin import modality_label, shipped_bundle


@dataclass(frozen=True)
class BuiltinSimulator:
    """A simulated session the window can play, and the shipped bundle that decodes it.

    Attributes
    ----------
    modality : str
        Simulator modality (``"meg"``, ``"eeg"``, ``"ieeg"``).
    task : str
        ``"typing"`` (keystroke markers) or ``"listening"`` (word-onset markers).
    """

    modality: str
    task: str

    @property
    def description(self) -> str:
        """What the session bar shows in brackets (the health panel gives the channel count)."""
        return f"{modality_label(self.modality)}, {self.task}"

    @property
    def bundle(self) -> Path | None:
        """The shipped bundle that decodes it when no bundle is chosen (None: scope only)."""
        return shipped_bundle(self.task, self.modality)


#: Built-in simulators by key (``--simulate KEY``; ``sim:KEY`` in the settings).
SIMULATORS = {
    "meg": BuiltinSimulator("meg", "typing"),
    "eeg": BuiltinSimulator("eeg", "typing"),
    "meg-listening": BuiltinSimulator("meg", "listening"),
    "eeg-listening": BuiltinSimulator("eeg", "listening"),
    "ieeg-listening": BuiltinSimulator("ieeg", "listening"),
}


def simulator_key(modality: str, task: str = "typing") -> str:
    """Key of the built-in simulator of ``modality`` and ``task`` (``"meg-listening"``)."""
    return modality if task == "typing" else f"{modality}-{task}"


def bundle_for(chosen: str, simulator: str | None) -> Path | None:
    """The bundle a session decodes with: the one chosen, else the shipped one for the simulator.

    Parameters
    ----------
    chosen : str
        The bundle typed or picked in the session bar ("" if none).
    simulator : str | None
        Key of the built-in simulator (:data:`SIMULATORS`), if the session runs one.
    """
    if chosen.strip():
        return Path(chosen.strip()).expanduser()
    return SIMULATORS[simulator].bundle if simulator in SIMULATORS else None
