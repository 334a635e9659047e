"""Forward model of the simulator: sensor patterns of current dipoles from sensor positions.

- **EEG and MEG**: MNE's spherically symmetric conductor (``mne.make_sphere_model``: four shells
  with MNE's default radii and conductivities, centred at ``SPHERE_ORIGIN``, scalp radius
  ``HEAD_RADIUS``) and ``mne.make_forward_dipole``, which integrates over the real coil geometry of
  the Vectorview magnetometers and planar gradiometers (Sarvas' formula for MEG). EEG patterns are
  re-referenced to the common average, as most EEG pipelines do.
- **sEEG**: MNE's forward code does not model depth contacts, so sEEG uses the potential of a
  current dipole in an infinite homogeneous medium, ``V = p . d / (4 pi sigma (|d|^2 + a^2)^1.5)``
  (``sigma = 0.33 S/m``; the source radius ``a = 3 mm`` keeps contacts next to a source finite),
  referenced to a distant (ideal) reference. It decays with distance as local field potentials do.

Leadfields are free-orientation, shape ``(n_channels, n_sources, 3)`` in SI units per A*m
(V, T or T/m per ampere-metre); the pattern of a dipole with unit orientation ``o`` is
``leadfield[:, i, :] @ o``.
"""

from __future__ import annotations

from functools import lru_cache

import mne
import numpy as np

from acquisition.simulator.montages import HEAD_RADIUS, SPHERE_ORIGIN, check_modality, make_info

#: Tissue conductivity of the sEEG infinite-medium model (S/m).
SEEG_CONDUCTIVITY = 0.33
#: Radius of a source below which the sEEG potential stops growing (m).
SEEG_SOURCE_RADIUS = 0.003


def leadfield(modality: str, positions: np.ndarray) -> np.ndarray:
    """Return the free-orientation leadfield of dipoles at ``positions`` for a modality's montage.

    Parameters
    ----------
    modality : "eeg" | "meg" | "ieeg"
        Montage of :func:`acquisition.simulator.montages.make_channels`.
    positions : array, shape (n_sources, 3)
        Dipole positions in metres (head frame), inside the inner-skull sphere for EEG/MEG.

    Returns
    -------
    leadfield : array, shape (n_channels, n_sources, 3)
        Sensor values per unit (1 A*m) dipole along x, y and z.
    """
    modality = check_modality(modality)
    positions = np.ascontiguousarray(positions, dtype=float)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(
            f"Invalid value for 'positions': expected shape (n_sources, 3), got {positions.shape}."
        )
    if modality == "ieeg":
        return _seeg_leadfield(positions)
    return _sphere_leadfield(modality, positions.tobytes(), positions.shape[0]).copy()


@lru_cache(maxsize=16)
def _sphere_leadfield(modality: str, positions_bytes: bytes, n_sources: int) -> np.ndarray:
    positions = np.frombuffer(positions_bytes).reshape(n_sources, 3)
    inner = 0.9 * HEAD_RADIUS
    outside = np.linalg.norm(positions - SPHERE_ORIGIN, axis=1) >= inner - 0.005
    if outside.any():
        raise ValueError(
            f"Invalid source positions: {int(outside.sum())} dipole(s) lie within 5 mm of the "
            f"inner skull (radius {inner * 1000:.1f} mm around {SPHERE_ORIGIN.tolist()}). Move "
            "them inwards."
        )
    info = make_info(modality)
    sphere = mne.make_sphere_model(
        r0=SPHERE_ORIGIN, head_radius=HEAD_RADIUS, info=None, verbose="error"
    )
    repeated = np.repeat(positions, 3, axis=0)
    orientations = np.tile(np.eye(3), (n_sources, 1))
    n_dipoles = repeated.shape[0]
    dipoles = mne.Dipole(
        np.zeros(n_dipoles), repeated, np.ones(n_dipoles), orientations, np.ones(n_dipoles)
    )
    fwd, _ = mne.make_forward_dipole(dipoles, sphere, info, trans=None, verbose="error")
    if fwd["sol"]["data"].shape[1] != n_dipoles:
        raise RuntimeError(
            "MNE's forward model dropped some simulator dipoles; the source layout is invalid."
        )
    gain = fwd["sol"]["data"].astype(np.float64).reshape(len(info.ch_names), n_sources, 3)
    if modality == "eeg":
        gain = gain - gain.mean(axis=0, keepdims=True)  # common average reference
    gain.setflags(write=False)
    return gain


def _seeg_leadfield(positions: np.ndarray) -> np.ndarray:
    contacts = np.array([ch["loc"][:3] for ch in make_info("ieeg")["chs"]])
    offset = contacts[:, None, :] - positions[None, :, :]
    distance_sq = np.sum(offset**2, axis=-1, keepdims=True) + SEEG_SOURCE_RADIUS**2
    return offset / (4.0 * np.pi * SEEG_CONDUCTIVITY * distance_sq**1.5)


def patterns(leadfield_free: np.ndarray, orientations: np.ndarray) -> np.ndarray:
    """Return fixed-orientation patterns, shape (n_channels, n_sources), of a free leadfield."""
    return np.einsum("csk,sk->cs", leadfield_free, np.asarray(orientations, dtype=float))
