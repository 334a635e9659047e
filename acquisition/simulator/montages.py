"""Sensor montages of the simulator: 64-channel EEG, 306-channel MEG and ~100-contact sEEG.

All positions are in metres in MNE's head frame (x to the right ear, y to the nasion, z up). The
head is modelled as a sphere of radius :data:`HEAD_RADIUS` centred at :data:`SPHERE_ORIGIN`, which
is where MNE's ``biosemi64`` montage places its electrodes, so the EEG, the MEG helmet and the
sEEG shafts share one geometry with the forward model (:mod:`acquisition.simulator.forward`).

- **EEG**: MNE's ``biosemi64`` standard montage (10-20 names: Fp1, AF7, ..., Iz), units V.
- **MEG**: no 3D Neuromag sensor file ships with MNE's wheels, so the 2D ``Vectorview-all``
  layout (the Elekta/MEGIN Vectorview arrangement: 102 locations, each with one magnetometer and
  two orthogonal planar gradiometers) is projected onto a helmet-shaped sphere cap of radius
  :data:`MEG_RADIUS` around the head sphere's centre (azimuthal equidistant inverse projection; the
  layout's outermost sensors sit :data:`MEG_MAX_ANGLE_DEG` from the vertex). Names follow
  Neuromag: ``MEGxxx1`` is the magnetometer (T), ``MEGxxx2``/``MEGxxx3`` the planar gradiometers
  (T/m), measuring along the local longitude and latitude directions. Coil types are MNE's
  ``VV_MAG_T3`` and ``VV_PLANAR_T1``, so MNE's forward model integrates over the real coil shapes.
- **sEEG**: ten straight shafts of 10-12 contacts (106 in all) spaced 3.5 mm, named
  ``<shaft><k>`` with ``k=1`` the deepest contact (``LA1``..``LA10``), aimed at amygdala (A),
  hippocampus (H), Heschl's gyrus / superior temporal gyrus (T), the precentral hand knob (M) and
  lateral occipital cortex (O) of both hemispheres, so both the typing and the listening task
  reach some contacts. Units V.
"""

from __future__ import annotations

from functools import lru_cache

import mne
import numpy as np

from acquisition.channels import ChannelSpec

#: Centre of the spherical head model (metres, head frame).
SPHERE_ORIGIN = np.array([0.0, 0.0, 0.04])
#: Radius of the scalp sphere (metres); the biosemi64 electrodes lie on it.
HEAD_RADIUS = 0.095
#: Distance of the MEG sensors from the sphere centre (metres): ~2.5 cm outside the scalp.
MEG_RADIUS = 0.12
#: Angle from the vertex of the outermost MEG sensors (degrees).
MEG_MAX_ANGLE_DEG = 110.0
#: Layout point (normalised Vectorview-all coordinates) mapped to the vertex.
_LAYOUT_VERTEX = np.array([0.517, 0.5])
#: Spacing of sEEG contacts along a shaft (metres).
SEEG_SPACING = 0.0035

MODALITIES = ("eeg", "meg", "ieeg")

# (shaft name, deepest-contact position (m, head frame), outward direction, number of contacts)
_SHAFTS = (
    ("LA", (-0.018, 0.010, 0.015), (-1.0, 0.0, 0.0), 10),
    ("LH", (-0.024, -0.022, 0.018), (-1.0, -0.1, 0.0), 10),
    ("LT", (-0.030, -0.010, 0.038), (-1.0, 0.0, 0.1), 12),
    ("LM", (-0.022, -0.008, 0.070), (-0.8, 0.0, 0.6), 12),
    ("LO", (-0.010, -0.045, 0.040), (-0.6, -0.75, 0.1), 10),
    ("RA", (0.018, 0.010, 0.015), (1.0, 0.0, 0.0), 10),
    ("RH", (0.024, -0.022, 0.018), (1.0, -0.1, 0.0), 10),
    ("RT", (0.030, -0.010, 0.038), (1.0, 0.0, 0.1), 12),
    ("RM", (0.022, -0.008, 0.070), (0.8, 0.0, 0.6), 10),
    ("RO", (0.010, -0.045, 0.040), (0.6, -0.75, 0.1), 10),
)


def check_modality(modality: str) -> str:
    """Return ``modality`` lower-cased, or raise a clear error if it is not known."""
    value = str(modality).lower()
    if value not in MODALITIES:
        raise ValueError(
            f"Invalid value for 'modality': {modality!r}. Use one of {', '.join(MODALITIES)}."
        )
    return value


def make_channels(modality: str) -> ChannelSpec:
    """Return the simulator's channel spec (names, types, SI units, positions) of a modality.

    Parameters
    ----------
    modality : "eeg" | "meg" | "ieeg"
        Which montage: 64 EEG electrodes, 306 MEG sensors or 106 sEEG contacts.

    Returns
    -------
    channels : ChannelSpec
        Positions in metres, head frame.
    """
    info = make_info(modality)
    types = info.get_channel_types()
    units = tuple({"eeg": "V", "seeg": "V", "mag": "T", "grad": "T/m"}[t] for t in types)
    positions = np.array([ch["loc"][:3] for ch in info["chs"]])
    return ChannelSpec(tuple(info.ch_names), tuple(types), units, positions)


def make_info(modality: str, sfreq: float = 1000.0) -> mne.Info:
    """Return an ``mne.Info`` of a modality's montage, with sensor locations (and MEG coils).

    Parameters
    ----------
    modality : "eeg" | "meg" | "ieeg"
        Which montage.
    sfreq : float
        Sampling rate written into the info.

    Returns
    -------
    info : mne.Info
        A fresh copy (safe to modify).
    """
    return _cached_info(check_modality(modality), float(sfreq)).copy()


@lru_cache(maxsize=8)
def _cached_info(modality: str, sfreq: float) -> mne.Info:
    if modality == "eeg":
        montage = mne.channels.make_standard_montage("biosemi64")
        info = mne.create_info(montage.ch_names, sfreq, "eeg")
        info.set_montage(montage, verbose="error")
        return info
    if modality == "meg":
        return _meg_info(sfreq)
    names, positions = seeg_contacts()
    info = mne.create_info(names, sfreq, "seeg")
    for ch, pos in zip(info["chs"], positions):
        ch["loc"][:3] = pos
    return info


def _meg_info(sfreq: float) -> mne.Info:
    """Vectorview-like info: layout projected on a sphere cap, one coil frame per sensor."""
    layout = mne.channels.read_layout("Vectorview-all")
    names = [name.replace(" ", "") for name in layout.names]
    boxes = layout.pos[:, :2] + layout.pos[:, 2:] / 2.0
    # the layout draws a triplet's three sensors side by side; in the helmet they share a spot
    spot = {
        key: boxes[[n[:6] == key for n in names]].mean(axis=0) for key in {n[:6] for n in names}
    }
    centres = np.array([spot[n[:6]] for n in names]) - _LAYOUT_VERTEX
    radius = np.linalg.norm(centres, axis=1)
    azimuth = np.arctan2(centres[:, 1], centres[:, 0])
    polar = np.deg2rad(MEG_MAX_ANGLE_DEG) * radius / radius.max()
    normal = np.stack(
        [np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)], axis=1
    )
    types = ["mag" if name.endswith("1") else "grad" for name in names]
    info = mne.create_info(names, sfreq, types)
    info["dev_head_t"] = mne.transforms.Transform("meg", "head")  # device frame == head frame
    for ch, name, ez, phi in zip(info["chs"], names, normal, azimuth):
        along_latitude = np.array([-np.sin(phi), np.cos(phi), 0.0])
        ex = along_latitude - ez * ez.dot(along_latitude)
        ex /= np.linalg.norm(ex)
        if name.endswith("3"):
            ex = np.cross(ez, ex)  # the pair's second gradiometer measures the orthogonal slope
        ey = np.cross(ez, ex)
        ch["loc"][:] = np.concatenate([SPHERE_ORIGIN + MEG_RADIUS * ez, ex, ey, ez])
    return info


def seeg_contacts() -> tuple[list[str], np.ndarray]:
    """Return the sEEG contact names and positions (metres, head frame), shaft by shaft."""
    names: list[str] = []
    positions = []
    for shaft, tip, direction, n_contacts in _SHAFTS:
        unit = np.asarray(direction, dtype=float)
        unit /= np.linalg.norm(unit)
        steps = np.arange(n_contacts)[:, None] * SEEG_SPACING
        positions.append(np.asarray(tip) + steps * unit)
        names += [f"{shaft}{k + 1}" for k in range(n_contacts)]
    return names, np.concatenate(positions)


def seeg_shafts() -> dict[str, int]:
    """Return the number of contacts of each sEEG shaft, by shaft name."""
    return {shaft: n for shaft, _, _, n in _SHAFTS}
