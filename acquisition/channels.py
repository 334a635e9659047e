"""Channel metadata (names, types, units, positions) and its LSL ``StreamInfo`` form.

LSL carries channel metadata in the stream header following the XDF meta-data conventions
(``desc/channels/channel/{label,type,unit,location/{X,Y,Z}}``, locations in millimetres). This is
the one place that reads and writes that layout, so the player, the simulator, the recorder and the
stream source agree on it.
"""

from __future__ import annotations

from collections.abc import Sequence
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
