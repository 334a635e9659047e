"""Where the simulated brain's sources sit: dipole positions and orientations of one "subject".

Positions are in metres in the head frame of :mod:`acquisition.simulator.montages`, inside the
inner-skull sphere (radius 0.9 * HEAD_RADIUS around SPHERE_ORIGIN). Everything here depends only
on the ``subject`` number, never on the session seed: sessions of one subject share their anatomy
and their key/speech responses, so a decoder trained on one session applies to the next.

Source groups (each an array of positions and unit orientations):

- ``finger``: the primary-motor hand area of both hemispheres, one dipole per finger (order
  ``L1..L5, R1..R5``; 1 = thumb, 5 = little finger), laid out along the central sulcus from
  thumb (lateral) to little finger (medial), tangential currents whose direction turns from
  finger to finger. A hand's fingers sit in the opposite hemisphere.
- ``letter``: six occipito-temporal dipoles (V1, lateral occipital, fusiform; both sides) that
  carry the visual/orthographic response to the typed character and the sentence display.
- ``auditory``: Heschl's gyrus of both hemispheres, one dipole per audio frequency band
  (tonotopic shift of position and orientation), order ``left bands..., right bands...``.
- ``eye``: two frontal-polar dipoles just inside the sphere, pointing forwards, that stand in for
  the eyes' corneo-retinal dipoles (the sphere model cannot place sources in the orbits); they
  make blinks (EEG: largest at Fp1/Fpz/Fp2, ~20 % at Fz).
- ``alpha``: four parieto-occipital sources of the 8-12 Hz rhythm.
- ``background``: many random dipoles throughout the brain for 1/f spontaneous activity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from acquisition.simulator.montages import HEAD_RADIUS, SPHERE_ORIGIN

#: Finger names in the order of the ``finger`` group (1 = thumb ... 5 = little finger).
FINGERS = ("L1", "L2", "L3", "L4", "L5", "R1", "R2", "R3", "R4", "R5")
#: Number of audio frequency bands whose envelopes drive the auditory sources.
N_AUDIO_BANDS = 4
#: Number of random background sources.
N_BACKGROUND = 120
# Sources stay this far inside the inner skull (radius 0.9 * HEAD_RADIUS).
_MAX_SOURCE_RADIUS = 0.9 * HEAD_RADIUS - 0.01
_SUBJECT_SALT = 0x5B1EC7


@dataclass(frozen=True)
class SourceGroup:
    """Dipole positions (metres, head frame) and unit orientations of one source group."""

    positions: np.ndarray
    orientations: np.ndarray

    @property
    def n_sources(self) -> int:
        """Number of dipoles."""
        return self.positions.shape[0]


@dataclass(frozen=True)
class Anatomy:
    """All source groups of one simulated subject (see the module docstring)."""

    subject: int
    groups: dict[str, SourceGroup]

    def __getitem__(self, name: str) -> SourceGroup:
        return self.groups[name]


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=float)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def tangent_basis(position: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (radial, anterior-tangent, lateral-tangent) unit vectors at a source position."""
    radial = _unit(position - SPHERE_ORIGIN)
    anterior = np.array([0.0, 1.0, 0.0]) - radial * radial[1]
    anterior = _unit(anterior)
    return radial, anterior, np.cross(radial, anterior)


def _fingers(rng: np.random.Generator) -> SourceGroup:
    positions, orientations = [], []
    for side in (-1.0, 1.0):  # right hemisphere (left hand, L1..L5) first, then R1..R5
        knob = np.array([0.040 * -side, -0.010, 0.085])
        sulcus = _unit(np.array([0.55 * side, -0.10, 0.83]))  # lateral-inferior -> medial-superior
        for finger in range(5):
            pos = knob + (finger - 2) * 0.005 * sulcus + rng.normal(0.0, 0.001, 3)
            _, anterior, lateral = tangent_basis(pos)
            angle = 0.45 * (finger - 2) + rng.normal(0.0, 0.08)
            ori = np.cos(angle) * anterior + np.sin(angle) * lateral
            positions.append(pos)
            orientations.append(ori)
    return SourceGroup(np.array(positions), _unit(np.array(orientations)))


def _letter(rng: np.random.Generator) -> SourceGroup:
    base = np.array(
        [
            [-0.008, -0.068, 0.045],
            [0.008, -0.068, 0.045],
            [-0.035, -0.060, 0.030],
            [0.035, -0.060, 0.030],
            [-0.036, -0.045, 0.008],
            [0.036, -0.045, 0.008],
        ]
    )
    positions = base + rng.normal(0.0, 0.002, base.shape)
    orientations = []
    for pos in positions:
        radial, anterior, lateral = tangent_basis(pos)
        weights = rng.normal(0.0, 1.0, 3) * np.array([0.4, 1.0, 1.0])
        orientations.append(weights[0] * radial + weights[1] * anterior + weights[2] * lateral)
    return SourceGroup(positions, _unit(np.array(orientations)))


def _auditory(rng: np.random.Generator) -> SourceGroup:
    positions, orientations = [], []
    for side in (-1.0, 1.0):
        heschl = np.array([0.048 * side, -0.012, 0.038]) + rng.normal(0.0, 0.001, 3)
        for band in range(N_AUDIO_BANDS):
            shift = band - (N_AUDIO_BANDS - 1) / 2.0
            pos = heschl + np.array([-0.004 * side * shift, 0.002 * shift, 0.0])
            radial, anterior, _ = tangent_basis(pos)
            up = np.array([0.0, 0.0, 1.0]) - radial * radial[2]
            angle = 0.25 * shift
            ori = np.cos(angle) * _unit(up) + np.sin(angle) * anterior
            positions.append(pos)
            orientations.append(ori)
    return SourceGroup(np.array(positions), _unit(np.array(orientations)))


def _random_inside(rng: np.random.Generator, n: int, max_radius: float) -> np.ndarray:
    points = np.empty((0, 3))
    while points.shape[0] < n:
        candidates = rng.uniform(-max_radius, max_radius, (4 * n, 3))
        inside = np.linalg.norm(candidates, axis=1) < max_radius
        points = np.concatenate([points, candidates[inside]])
    return SPHERE_ORIGIN + points[:n]


def make_anatomy(subject: int = 0) -> Anatomy:
    """Return the source positions and orientations of simulated subject ``subject``.

    Parameters
    ----------
    subject : int
        Subject number; the same number always gives the same anatomy (small per-subject
        jitter of positions and orientations around the template described in the module
        docstring).

    Returns
    -------
    anatomy : Anatomy
    """
    rng = np.random.default_rng([_SUBJECT_SALT, int(subject)])
    eye_pos = np.array([[-0.025, 0.070, 0.020], [0.025, 0.070, 0.020]])
    alpha_pos = np.array(
        [
            [-0.020, -0.060, 0.060],
            [0.020, -0.060, 0.060],
            [-0.030, -0.050, 0.075],
            [0.030, -0.050, 0.075],
        ]
    )
    groups = {
        "finger": _fingers(rng),
        "letter": _letter(rng),
        "auditory": _auditory(rng),
        "eye": SourceGroup(eye_pos, _unit(np.tile([0.0, 1.0, 0.2], (2, 1)))),
        "alpha": SourceGroup(alpha_pos, _unit(rng.normal(0.0, 1.0, (4, 3)))),
        "background": SourceGroup(
            _random_inside(rng, N_BACKGROUND, _MAX_SOURCE_RADIUS),
            _unit(rng.normal(0.0, 1.0, (N_BACKGROUND, 3))),
        ),
    }
    return Anatomy(int(subject), groups)
