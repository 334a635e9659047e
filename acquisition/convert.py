"""Recordings to MNE Raw, FIF and BIDS: recording_to_raw, write_fif, write_bids, convert.

A :class:`Recording` holds SI units and LSL-clock timestamps. In MNE's Raw the markers become
annotations placed on the sample clock (onset 0 = first sample), and the LSL time of the first
sample is kept in ``raw.info["description"]`` (read it back with :func:`lsl_first_timestamp`), so
the clock is not lost. BIDS goes through mne-bids: FIF for MEG, BrainVision (pybv, float32) for
EEG and iEEG, events.tsv from the annotations.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import warnings
from pathlib import Path

import mne
import mne_bids
import numpy as np

from acquisition.channels import ChannelSpec
from acquisition.recording import Recording
from acquisition.xdf import mne_channel_type, read_xdf, si_unit

logger = logging.getLogger(__name__)

#: Channel types whose positions MNE takes through a DigMontage (electrodes, not MEG coils).
_MONTAGE_TYPES = ("eeg", "seeg", "ecog", "dbs")
_CLOCK_KEY = "lsl_first_timestamp"


def lsl_first_timestamp(raw: mne.io.BaseRaw) -> float | None:
    """Return the LSL time of the first sample that :func:`recording_to_raw` stored, if any."""
    found = re.search(_CLOCK_KEY + r"=([-+0-9.eE]+)", raw.info["description"] or "")
    return float(found.group(1)) if found else None


def _set_positions(raw: mne.io.BaseRaw, channels: ChannelSpec) -> None:
    """Electrode positions through a head-frame DigMontage; other sensors straight into loc."""
    if channels.positions is None:
        return
    types = raw.get_channel_types()
    electrodes = {}
    for i, (name, pos) in enumerate(zip(channels.names, channels.positions)):
        if not np.isfinite(pos).all():
            continue
        if types[i] in _MONTAGE_TYPES:
            electrodes[name] = pos
        else:
            raw.info["chs"][i]["loc"][:3] = pos
    if electrodes:
        montage = mne.channels.make_dig_montage(ch_pos=electrodes, coord_frame="head")
        raw.set_montage(montage, on_missing="ignore")


def _annotations(recording: Recording) -> mne.Annotations:
    """Markers as zero-duration annotations, placed on the sample clock of the data."""
    stamps = recording.timestamps
    times = np.array([m.timestamp for m in recording.markers], dtype=np.float64)
    inside = (times >= stamps[0]) & (times <= stamps[-1])
    if (~inside).any():
        logger.warning(
            "%d of %d markers lie outside the data (%.3f..%.3f s) and are left out.",
            int((~inside).sum()),
            times.size,
            stamps[0],
            stamps[-1],
        )
    if stamps.size > 1 and (np.diff(stamps) > 0).all():
        onsets = np.interp(times[inside], stamps, np.arange(stamps.size)) / recording.sfreq
    else:
        onsets = times[inside] - stamps[0]
    values = [m.value for m, keep in zip(recording.markers, inside) if keep]
    return mne.Annotations(onsets, np.zeros(onsets.size), values)


def _meas_date(recording: Recording) -> dt.datetime | None:
    stamp = recording.meta.get("recorded_at") or recording.meta.get("meas_date")
    if isinstance(stamp, str):
        try:
            stamp = dt.datetime.fromisoformat(stamp)
        except ValueError:
            return None
    if not isinstance(stamp, dt.datetime):
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)


def recording_to_raw(recording: Recording) -> mne.io.RawArray:
    """Return the recording as an MNE ``RawArray`` with channel types, positions and annotations.

    Data is scaled to SI units where a channel's unit is a prefixed one (``"uV"`` -> V).
    """
    spec = recording.channels
    types = [mne_channel_type(t) for t in spec.types]
    scales = np.array([si_unit(u)[1] for u in spec.units])
    info = mne.create_info(list(spec.names), float(recording.sfreq), types)
    data = np.asarray(recording.data, dtype=np.float64).T * scales[:, np.newaxis]
    raw = mne.io.RawArray(data, info, verbose=False)
    _set_positions(raw, spec)
    meas_date = _meas_date(recording)
    if meas_date is not None:
        raw.set_meas_date(meas_date)
    raw.set_annotations(_annotations(recording))
    first = float(recording.timestamps[0])
    raw.info["description"] = f"bci-app recording {recording.name!r}; {_CLOCK_KEY}={first!r}"
    return raw


def write_fif(recording: Recording, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a recording to a FIF file (float32 data, or float64 when the recording is)."""
    path = Path(path)
    raw = recording_to_raw(recording)
    fmt = "double" if np.asarray(recording.data).dtype == np.float64 else "single"
    with warnings.catch_warnings():
        # Any .fif name is fine here; MNE's "-raw.fif" naming advice does not apply.
        warnings.filterwarnings("ignore", message=".*naming conventions.*", category=RuntimeWarning)
        raw.save(path, fmt=fmt, overwrite=overwrite, verbose=False)
    return path


def _bids_datatype(types: list[str]) -> str:
    for kinds, datatype in (
        ({"mag", "grad"}, "meg"),
        ({"seeg", "ecog", "dbs"}, "ieeg"),
        ({"eeg"}, "eeg"),
    ):
        if kinds & set(types):
            return datatype
    raise ValueError(
        f"Cannot write BIDS: the recording has no MEG, EEG or iEEG channel (types "
        f"{sorted(set(types))}). Set the channel types of the stream (ChannelSpec.types)."
    )


def _check_label(name: str, value: str | None) -> None:
    if value is not None and not re.fullmatch(r"[A-Za-z0-9]+", str(value)):
        raise ValueError(
            f"Invalid value for '{name}': {value!r}; BIDS labels hold letters and digits only "
            f"(e.g. '01'). Drop the '{name[:3]}-' prefix and any '-' or '_'."
        )


def write_bids(
    recording: Recording,
    bids_root: str | os.PathLike,
    subject: str,
    session: str | None = None,
    task: str = "typing",
    run: int | str | None = None,
    *,
    overwrite: bool = False,
) -> mne_bids.BIDSPath:
    """Write a recording into a BIDS dataset with mne-bids; returns the data file's BIDSPath.

    MEG goes to FIF, EEG/iEEG to BrainVision (float32); markers become events.tsv rows whose
    ``trial_type`` is the marker string.
    """
    for name, value in (("subject", subject), ("session", session), ("task", task)):
        _check_label(name, value)
    raw = recording_to_raw(recording)
    if recording.meta.get("line_freq"):
        raw.info["line_freq"] = float(recording.meta["line_freq"])
    datatype = _bids_datatype(raw.get_channel_types())
    bids_path = mne_bids.BIDSPath(
        subject=str(subject),
        session=session,
        task=task,
        run=run,
        datatype=datatype,
        root=Path(bids_root),
    )
    file_format = "FIF" if datatype == "meg" else "BrainVision"
    with warnings.catch_warnings():
        # pybv notes that BrainVision only names volts; unitless channels (misc, stim) are
        # still written unscaled with unit "n/a", which is what we want.
        warnings.filterwarnings("ignore", message=".*unsupported non-voltage units.*")
        return mne_bids.write_raw_bids(
            raw,
            bids_path,
            format=file_format,
            allow_preload=True,
            overwrite=overwrite,
            verbose=False,
        )


def _is_bids_target(out: str | os.PathLike) -> bool:
    text = os.fspath(out)
    return text.endswith(("/", os.sep)) or Path(text).is_dir() or Path(text).suffix == ""


def convert(
    in_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    bids: bool | None = None,
    subject: str = "01",
    session: str | None = None,
    task: str = "typing",
    run: int | str | None = None,
    stream: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert an XDF recording to FIF or to a BIDS dataset; returns the written data file.

    ``out`` ending in ``.fif`` gives FIF. ``out`` that is a folder (existing, ending in ``/``, or
    without extension), or ``bids=True``, is taken as a BIDS root, written with ``subject``,
    ``session``, ``task`` and ``run``. ``stream`` picks the signal stream (see ``read_xdf``).
    """
    in_path = Path(in_path)
    if not in_path.name.lower().endswith((".xdf", ".xdfz", ".xdf.gz")):
        raise ValueError(
            f"Invalid value for 'in_path': '{in_path}' is not an XDF file (.xdf, .xdfz). "
            "convert() turns XDF recordings into FIF or BIDS."
        )
    to_bids = _is_bids_target(out) if bids is None else bids
    lower = os.fspath(out).lower()
    if not to_bids and not lower.endswith((".fif", ".fif.gz")):
        raise ValueError(
            f"Invalid value for 'out': '{out}' is neither a .fif file nor a BIDS folder. Give "
            "a path ending in .fif, or a folder (ending in '/') or bids=True for BIDS."
        )
    recording = read_xdf(in_path, stream)
    if to_bids:
        bids_path = write_bids(recording, out, subject, session, task, run, overwrite=overwrite)
        return Path(bids_path.fpath)
    return write_fif(recording, out, overwrite=overwrite)
