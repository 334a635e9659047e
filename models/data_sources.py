"""Where training data come from: reading recordings, picking and checking their channels.

Helpers of :func:`models.typing.data.build_typing_dataset` and
:func:`models.speech.data.build_speech_dataset`: every recording must hold the same data channels
(the decoder reads a fixed set), each with a sensor position (the spatial attention needs one), at
one input rate.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from acquisition.channels import KNOWN_TYPES, MODALITY_TYPES, ChannelSpec
from acquisition.recording import Recording
from bci_app.decoders.bundle import sha256_file

#: Channel types a typing decoder reads by default.
DATA_TYPES = tuple(t for types in MODALITY_TYPES.values() for t in types)

RecordingLike = str | os.PathLike | Recording


def load_recording(item: RecordingLike) -> tuple[Recording, str, dict]:
    """Read a recording; return it, a label for messages and its provenance."""
    if isinstance(item, Recording):
        meta = item.meta or {}
        label = Path(meta["file"]).name if meta.get("file") else item.name
        if "simulator" in meta:
            provenance = {"name": item.name, "simulator": meta["simulator"]}
        else:
            provenance = {"name": label, "sfreq": item.sfreq, "n_times": item.n_times}
        return item, label, {**provenance, "duration_s": item.duration}
    from acquisition.io import read_recording

    path = Path(item)
    recording = read_recording(item)
    provenance = {"file": path.name, "duration_s": recording.duration}
    if path.is_file():
        provenance["sha256"] = sha256_file(path)
    return recording, str(path), provenance


def pick_channels(recording: Recording, picks: Sequence[str] | None, label: str) -> tuple[str, ...]:
    """Names of the channels to keep, in recording order."""
    spec = recording.channels
    if picks is None:
        wanted = [n for n, t in zip(spec.names, spec.types) if t in DATA_TYPES]
    else:
        picks = [picks] if isinstance(picks, str) else list(picks)
        unknown = [p for p in picks if p not in KNOWN_TYPES and p not in spec.names]
        if unknown:
            raise ValueError(
                f"Invalid value for 'picks': {unknown} are neither channel types {KNOWN_TYPES} "
                f"nor channels of '{label}'. Give channel types or names."
            )
        wanted = [n for n, t in zip(spec.names, spec.types) if n in picks or t in picks]
    if not wanted:
        found = sorted(Counter(spec.types))
        raise ValueError(
            f"Invalid recording '{label}': no channel to decode (types found: {found}; "
            f"picks={picks!r}, default types {DATA_TYPES}). Pick its brain channels with 'picks'."
        )
    index = [spec.names.index(n) for n in wanted]
    if not spec.has_positions(index):
        bad = list(wanted)
        if spec.positions is not None:
            bad = [n for n, i in zip(wanted, index) if not np.isfinite(spec.positions[i]).all()]
        raise ValueError(
            f"Invalid recording '{label}': channels {bad[:8]}{' ...' if len(bad) > 8 else ''} "
            f"({len(bad)} of {len(wanted)}) have no sensor position; the decoder's spatial "
            "attention needs one per channel. Set a montage (mne's set_montage) on the data, or "
            "leave those channels out with 'picks'."
        )
    return tuple(wanted)


def check_same_channels(reference, recording, label, names) -> tuple[str, ...]:
    """Raise unless ``names`` is the reference's channel set; return them in reference order."""
    ref_recording, ref_label, ref_names = reference
    missing = [n for n in ref_names if n not in names]
    extra = [n for n in names if n not in ref_names]
    if missing or extra:
        raise ValueError(
            f"Channel mismatch between recordings: '{label}' lacks {missing[:8]} and has "
            f"{extra[:8]} that '{ref_label}' does not ({len(missing)} missing, {len(extra)} "
            "extra). "
            "The decoder reads a fixed set of channels: use recordings of one montage, or keep "
            "the channels they share with 'picks'."
        )
    if not np.isclose(recording.sfreq, ref_recording.sfreq, rtol=1e-9, atol=0):
        raise ValueError(
            f"Invalid recordings: '{label}' runs at {recording.sfreq:g} Hz but '{ref_label}' at "
            f"{ref_recording.sfreq:g} Hz; a decoder bundle expects one stream rate. Resample "
            "them to one rate first."
        )
    return ref_names


def subset_channels(spec: ChannelSpec, index: list[int]) -> ChannelSpec:
    """Return the channels at ``index`` of ``spec`` (positions included)."""
    positions = None if spec.positions is None else spec.positions[index]
    return ChannelSpec(
        [spec.names[i] for i in index],
        [spec.types[i] for i in index],
        [spec.units[i] for i in index],
        positions,
    )
