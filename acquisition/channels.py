"""Channel metadata (names, types, units, positions), its LSL ``StreamInfo`` form, and modality.

LSL carries channel metadata in the stream header following the XDF meta-data conventions
(``desc/channels/channel/{label,type,unit,location/{X,Y,Z}}``, locations in millimetres). This is
the one place that reads and writes that layout, so the player, the simulator, the recorder and the
stream source agree on it.

It is also the one home of the modality rule (:func:`modality_of`, :attr:`ChannelSpec.modality`):
which of MEG, iEEG and EEG a set of channel types records, and of the names of channel types and
units that files spell in many ways (:func:`mne_channel_type`, :func:`si_unit`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pylsl

#: Channel types understood across the project (MNE's names).
KNOWN_TYPES = (
    "eeg",
    "mag",
    "grad",
    "seeg",
    "ecog",
    "dbs",
    "eog",
    "ecg",
    "emg",
    "stim",
    "misc",
    "ref_meg",
    "resp",
    "bio",
)

#: MNE channel types of the brain sensors of each modality. The order is the precedence when a
#: recording mixes them: MEG systems also record EEG, and iEEG montages often add scalp EEG.
MODALITY_TYPES = {"meg": ("mag", "grad"), "ieeg": ("seeg", "ecog", "dbs"), "eeg": ("eeg",)}
#: LSL stream type of each modality (streams without brain sensors are ``"misc"``).
MODALITY_STREAM_TYPES = {"meg": "MEG", "ieeg": "iEEG", "eeg": "EEG"}

_TYPE_ALIASES = {
    "meg": "mag",
    "megmag": "mag",
    "meggrad": "grad",
    "megrefmag": "ref_meg",
    "megrefgradm": "ref_meg",
    "ieeg": "seeg",
    "trigger": "stim",
    "trig": "stim",
}
#: Unit spellings found in files, mapped to (SI unit, factor to SI).
_UNIT_SCALES = {
    "v": ("V", 1.0),
    "volt": ("V", 1.0),
    "volts": ("V", 1.0),
    "mv": ("V", 1e-3),
    "millivolt": ("V", 1e-3),
    "millivolts": ("V", 1e-3),
    "uv": ("V", 1e-6),
    "µv": ("V", 1e-6),
    "μv": ("V", 1e-6),
    "microvolt": ("V", 1e-6),
    "microvolts": ("V", 1e-6),
    "nv": ("V", 1e-9),
    "t": ("T", 1.0),
    "tesla": ("T", 1.0),
    "pt": ("T", 1e-12),
    "ft": ("T", 1e-15),
    "femtotesla": ("T", 1e-15),
    "t/m": ("T/m", 1.0),
    "ft/cm": ("T/m", 1e-13),
    "ft/m": ("T/m", 1e-15),
}


def modality_of(types: Iterable[str]) -> str | None:
    """Return the modality that channels of ``types`` record: ``"meg"``, ``"ieeg"`` or ``"eeg"``.

    sEEG, ECoG and DBS channels are iEEG. When types of several modalities are present, MEG wins
    over iEEG and iEEG over EEG (:data:`MODALITY_TYPES`). None when no brain sensor is present
    (only stim, misc, EOG, ...).
    """
    present = {str(t).lower() for t in types}
    for modality, brain_types in MODALITY_TYPES.items():
        if present.intersection(brain_types):
            return modality
    return None


def si_unit(unit: str) -> tuple[str, float]:
    """Return ``(SI unit, factor)`` for a unit name: ``"microvolts"`` -> ``("V", 1e-6)``.

    Units that are not a known prefix of V, T or T/m come back unchanged with factor 1.
    """
    return _UNIT_SCALES.get(unit.strip().lower(), (unit, 1.0))


def mne_channel_type(ch_type: str) -> str:
    """Map a channel or stream type name (``"EEG"``, ``"MEGMAG"``, ``"EXG"``) to MNE's name."""
    name = ch_type.strip().lower()
    return name if name in KNOWN_TYPES else _TYPE_ALIASES.get(name, "misc")


@dataclass(frozen=True)
class ChannelSpec:
    """Names, types, units and optional 3D positions (metres, head frame) of a stream's channels.

    Parameters
    ----------
    names : sequence of str
        Channel labels, unique.
    types : sequence of str
        MNE channel types (``"eeg"``, ``"mag"``, ``"grad"``, ``"seeg"``, ``"stim"``, ...).
    units : sequence of str
        Physical units (``"V"``, ``"T"``, ``"T/m"``, ``"n/a"``).
    positions : array, shape (n_channels, 3) | None
        Sensor positions in metres; rows of NaN where a channel has none.
    """

    names: tuple[str, ...]
    types: tuple[str, ...]
    units: tuple[str, ...]
    positions: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "types", tuple(str(t).lower() for t in self.types))
        object.__setattr__(self, "units", tuple(str(u) for u in self.units))
        n = len(self.names)
        if len(self.types) != n or len(self.units) != n:
            raise ValueError(
                f"Invalid channel spec: {n} names but {len(self.types)} types and "
                f"{len(self.units)} units. Give one type and one unit per channel."
            )
        if len(set(self.names)) != n:
            dup = sorted({x for x in self.names if self.names.count(x) > 1})
            raise ValueError(f"Invalid channel spec: duplicate channel names {dup}. Rename them.")
        if self.positions is not None:
            pos = np.asarray(self.positions, dtype=float)
            if pos.shape != (n, 3):
                raise ValueError(
                    f"Invalid value for 'positions': expected shape ({n}, 3), got {pos.shape}."
                )
            object.__setattr__(self, "positions", pos)

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return len(self.names)

    @property
    def modality(self) -> str | None:
        """Modality the channels record: ``"meg"``, ``"ieeg"``, ``"eeg"`` (:func:`modality_of`)."""
        return modality_of(self.types)

    @property
    def stream_type(self) -> str:
        """LSL stream type of the modality (``"MEG"``, ``"iEEG"``, ``"EEG"``, else ``"misc"``)."""
        return MODALITY_STREAM_TYPES.get(self.modality, "misc")

    def modality_channels(self) -> tuple[str, ...]:
        """Names of the brain sensors of the modality (the MEG sensors of a MEG recording, ...)."""
        brain_types = MODALITY_TYPES.get(self.modality, ())
        return tuple(name for name, t in zip(self.names, self.types) if t in brain_types)

    @classmethod
    def generic(cls, n_channels: int, ch_type: str = "misc", unit: str = "n/a") -> ChannelSpec:
        """Return a spec with labels ``ch1..chN`` for streams that carry no metadata."""
        return cls(
            names=tuple(f"ch{i + 1}" for i in range(n_channels)),
            types=(ch_type,) * n_channels,
            units=(unit,) * n_channels,
        )

    def has_positions(self, picks: Sequence[int] | None = None) -> bool:
        """Whether every (picked) channel has a finite position."""
        if self.positions is None:
            return False
        pos = self.positions if picks is None else self.positions[list(picks)]
        return bool(np.isfinite(pos).all())

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict (positions as lists, NaN as None)."""
        pos = None
        if self.positions is not None:
            pos = [[float(v) if np.isfinite(v) else None for v in row] for row in self.positions]
        return {
            "names": list(self.names),
            "types": list(self.types),
            "units": list(self.units),
            "positions": pos,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ChannelSpec:
        """Inverse of :meth:`to_dict`."""
        pos = d.get("positions")
        if pos is not None:
            pos = np.array([[np.nan if v is None else v for v in row] for row in pos], dtype=float)
        return cls(names=d["names"], types=d["types"], units=d["units"], positions=pos)


def make_stream_info(
    name: str,
    stype: str,
    channels: ChannelSpec,
    sfreq: float,
    source_id: str,
    *,
    channel_format: int = pylsl.cf_float32,
    manufacturer: str = "bci-app",
) -> pylsl.StreamInfo:
    """Create an LSL ``StreamInfo`` that carries ``channels`` in its description."""
    info = pylsl.StreamInfo(
        name, stype, channels.n_channels, float(sfreq), channel_format, str(source_id)
    )
    desc = info.desc()
    desc.append_child_value("manufacturer", manufacturer)
    chans = desc.append_child("channels")
    for i, (label, ctype, unit) in enumerate(zip(channels.names, channels.types, channels.units)):
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("type", ctype)
        ch.append_child_value("unit", unit)
        if channels.positions is not None and np.isfinite(channels.positions[i]).all():
            loc = ch.append_child("location")
            for axis, value in zip("XYZ", channels.positions[i]):
                loc.append_child_value(axis, f"{value * 1000.0:.6g}")  # metres -> mm
    return info


def channels_from_info(info: pylsl.StreamInfo) -> ChannelSpec:
    """Read the channel metadata of an LSL ``StreamInfo`` (generic labels if it has none)."""
    n = info.channel_count()
    names, types, units, pos = [], [], [], np.full((n, 3), np.nan)
    ch = info.desc().child("channels").child("channel")
    while not ch.empty() and len(names) < n:
        names.append(ch.child_value("label") or f"ch{len(names) + 1}")
        types.append((ch.child_value("type") or "misc").lower())
        units.append(ch.child_value("unit") or "n/a")
        loc = ch.child("location")
        if not loc.empty():
            try:
                pos[len(names) - 1] = [float(loc.child_value(a)) / 1000.0 for a in "XYZ"]
            except ValueError:
                pass
        ch = ch.next_sibling("channel")
    if len(names) != n:
        return ChannelSpec.generic(n)
    return ChannelSpec(names, types, units, pos if np.isfinite(pos).any() else None)
