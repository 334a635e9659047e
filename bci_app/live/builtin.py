"""The built-in simulated session a live session plays when no stream is given.

The shipped bundles decode it.

The simulator plays the task, modality and simulated subject a bundle was made for: its
``demo.simulator`` settings (a speech bundle: the closed set of sentences its candidates come
from), else the subject and SNR of its first training recording, else its sensor types, so a
decoder trained on EEG or sEEG runs on the built-in stream too. The shipped bundles were trained
on simulated MEG, and decode the built-in MEG session of their task. A typing session types
sentences of the test part of the sentence bank (:mod:`acquisition.simulator.sentences`), so the
text a bundle decodes live was never in its calibration data.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bci_app.decoders.bundle import Bundle
from bci_app.decoders.manifest import JsonMap, thaw
from bci_app.decoders.shipped import SPEECH_BUNDLE, TYPING_BUNDLE

#: What a session plays: keystrokes (typing) or heard words (listening).
TASKS = ("typing", "listening")
#: Bundle task that decodes each session task.
BUNDLE_TASKS = {"typing": "typing", "listening": "speech"}
#: Shipped bundle of each session task, and the simulated modality both were trained on.
SHIPPED_BUNDLES = {"typing": TYPING_BUNDLE, "listening": SPEECH_BUNDLE}
SHIPPED_MODALITY = "meg"
_MODALITY_LABELS = {"meg": "MEG", "eeg": "EEG", "ieeg": "sEEG"}


def check_task(task: str) -> str:
    """Return ``task`` if it is a session task, else raise ValueError naming the choices."""
    if task not in TASKS:
        raise ValueError(f"Invalid value for 'task': {task!r}; use one of {TASKS}.")
    return task


def task_of(bundle: Bundle) -> str:
    """The session task a bundle decodes: ``listening`` for speech bundles, else ``typing``."""
    return "listening" if bundle.task == "speech" else "typing"


def shipped_bundle(task: str = "typing", modality: str | None = None) -> Path | None:
    """The shipped bundle that decodes ``task`` sessions (of ``modality``, when given).

    None when the shipped bundle of that task was trained on another modality.
    """
    check_task(task)
    if modality is not None and modality != SHIPPED_MODALITY:
        return None
    return SHIPPED_BUNDLES[task]


def modality_label(modality: str) -> str:
    """How people write a simulator modality (``"MEG"``, ``"sEEG"``)."""
    return _MODALITY_LABELS.get(modality, modality.upper())


def simulator_params(bundle: Bundle | None, modality: str, task: str = "typing") -> dict:
    """Simulator settings of the session a bundle was made for (when of ``modality``, ``task``).

    The bundle's ``demo.simulator`` settings when they are of that modality and task, else the
    subject and SNR of its first training recording (when simulated so); otherwise, and without
    a bundle, the simulator's defaults for a new session.
    """
    params = {"snr": 2.0, "subject": 0}
    if bundle is None:
        return params
    demo, sim = _simulators(bundle)
    if _plays(demo, modality, task):
        return {k: v for k, v in thaw(demo).items() if k not in ("modality", "task")}
    if _plays(sim, modality, task):
        params = {"snr": sim.get("snr", 2.0), "subject": sim.get("subject", 0)}
    return params


def _simulators(bundle: Bundle) -> tuple[JsonMap | None, JsonMap | None]:
    """The bundle's ``demo.simulator`` and its first training recording's simulator settings."""
    manifest = bundle.manifest
    demo = None if manifest.demo is None else manifest.demo.simulator
    provenance = manifest.provenance
    return demo, (None if provenance is None else provenance.first_simulator)


def _plays(settings: object, modality: str, task: str) -> bool:
    """Whether simulator ``settings`` from a manifest are of ``modality`` and ``task``."""
    return (
        isinstance(settings, Mapping)
        and settings.get("modality") == modality
        and settings.get("task", "typing") == task
    )


def simulator_modality(bundle: Bundle | None) -> str:
    """Modality of the simulated session a bundle was made for (else of its sensors; MEG)."""
    if bundle is None:
        return "meg"
    for settings in _simulators(bundle):
        if isinstance(settings, Mapping) and settings.get("modality") in ("meg", "eeg", "ieeg"):
            return settings["modality"]
    return bundle.channels.modality or "meg"  # trained from files: the sensors say


@dataclass(frozen=True)
class BuiltinStream:
    """A built-in simulated session: what it plays and the LSL streams it plays on.

    Attributes
    ----------
    modality, task : str
        ``meg``/``eeg``/``ieeg``, and ``typing`` or ``listening``.
    seed : int
        Seed of the simulated session.
    params : dict
        Simulator settings (subject, SNR, ...; :func:`simulator_params`).
    name, source_id : str
        Of the data stream; the markers are on ``<name>-markers`` / ``<source_id>-markers``.
    """

    modality: str
    task: str
    seed: int
    params: dict = field(default_factory=dict)
    name: str = ""
    source_id: str = ""

    @property
    def marker_source_id(self) -> str:
        """source_id of its marker stream."""
        return f"{self.source_id}-markers"

    @property
    def label(self) -> str:
        """``"MEG, listening"``: what it plays, for people."""
        return f"{modality_label(self.modality)}, {self.task}"


def plan_builtin(
    bundle: Bundle | None, task: str, modality: str | None = None, seed: int | None = None
) -> BuiltinStream:
    """The built-in session to play for ``bundle`` (module docstring); a fresh source_id.

    ``modality`` None: the one the bundle was made for; ``seed`` None: a random session.
    """
    modality = simulator_modality(bundle) if modality is None else modality
    name = f"bci-app-sim-{modality}" + ("" if check_task(task) == "typing" else f"-{task}")
    return BuiltinStream(
        modality,
        task,
        uuid.uuid4().int % 10_000 if seed is None else int(seed),
        simulator_params(bundle, modality, task),
        name,
        f"{name}-{uuid.uuid4().hex[:8]}",
    )


def start_builtin(plan: BuiltinStream):
    """Start streaming the simulated session ``plan`` to LSL; return its SimulatorStream."""
    from acquisition.simulator import Simulator, SimulatorStream

    # a typing session types sentences of the bank's test part, which no calibration uses
    split = {"sentence_split": "test"} if plan.task == "typing" else {}
    sim = Simulator(plan.modality, plan.task, seed=plan.seed, **{**split, **plan.params})
    return SimulatorStream(sim, name=plan.name, source_id=plan.source_id).start()
