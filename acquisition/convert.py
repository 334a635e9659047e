"""MNE and BIDS: recordings read through MNE and mne-bids, and written to MNE Raw, FIF and BIDS.

Reading: every format ``mne.io.read_raw`` reads, opened lazily (:func:`open_mne_recording`, used
by :func:`acquisition.io.open_recording`), and BIDS through mne-bids (events and channels.tsv
included), given as a data file inside a BIDS dataset (a ``sub-*`` file below a folder holding
``dataset_description.json``), a :class:`mne_bids.BIDSPath`, or a URI
``bids://<root>?subject=01&task=typing[&session=..&run=..&datatype=meg]`` whose entities must
select exactly one data file.

Clock of recordings read through MNE: sample ``i`` is at ``i / sfreq`` seconds, i.e. the first
sample of the file is at 0 s. ``meta["meas_date"]`` (ISO 8601, or None) gives the wall-clock time
of that first sample. Markers come from annotations (the description is the marker value, e.g.
BrainVision ``"Stimulus/S  1"``) and from stim channels (``mne.find_events`` with MNE's defaults
and ``shortest_event=1``, one marker ``stim:<channel>:<code>`` per event).

Writing: a :class:`Recording` holds SI units and LSL-clock timestamps. In MNE's Raw the markers
become annotations placed on the sample clock (onset 0 = first sample), and the LSL time of the
first sample is kept in ``raw.info["description"]`` (read it back with
:func:`lsl_first_timestamp`), so the clock is not lost. BIDS goes through mne-bids: FIF for MEG,
BrainVision (pybv, float32) for EEG and iEEG, events.tsv from the annotations.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import shutil
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mne
import numpy as np
from mne.io.constants import FIFF

from acquisition.channels import (
    MODALITY_TYPES,
    ChannelSpec,
    mne_channel_type,
    modality_of,
    si_unit,
)
from acquisition.recording import Marker, Recording, RecordingReader, exists_error

if TYPE_CHECKING:
    import mne_bids

logger = logging.getLogger(__name__)

#: Channel types whose positions MNE takes through a DigMontage (electrodes, not MEG coils).
_MONTAGE_TYPES = ("eeg", *MODALITY_TYPES["ieeg"])
_CLOCK_KEY = "lsl_first_timestamp"

# MNE warnings that mean the file is cut short: raised as errors, since the data would be wrong.
_TRUNCATION_WARNINGS = (
    "does not match the file size",
    "possibly corrupted",
    "Invalid tag with only",
)
# MNE warnings about file names only, harmless for reading; mne-bids reading the iEEG positions
# write_bids stores in space "Other" (the frame is still unknown, as written).
_IGNORED_WARNINGS = (
    "does not conform to MNE naming conventions",
    "is not an MNE-Python coordinate frame",
)
#: How write_bids describes iEEG positions that no anatomical registration placed.
_IEEG_SPACE_DESCRIPTION = (
    "Electrode positions as the recorded stream declared them, in metres; not registered to an "
    "anatomical image or template."
)

_UNITS = {
    FIFF.FIFF_UNIT_V: "V",
    FIFF.FIFF_UNIT_T: "T",
    FIFF.FIFF_UNIT_T_M: "T/m",
    FIFF.FIFF_UNIT_AM: "Am",
    FIFF.FIFF_UNIT_CEL: "degC",
    FIFF.FIFF_UNIT_MOL: "M",
    FIFF.FIFF_UNIT_S: "S",
    FIFF.FIFF_UNIT_SEC: "s",
    FIFF.FIFF_UNIT_PX: "px",
    FIFF.FIFF_UNIT_NONE: "n/a",
}


# ---------------------------------------------------------------------------- reading


def _in_bids_dataset(path: Path) -> bool:
    """Whether ``path`` is a BIDS data file: ``sub-*`` below a ``dataset_description.json``."""
    return path.name.startswith("sub-") and any(
        (parent / "dataset_description.json").is_file() for parent in path.parents
    )


def resolve_bids_uri(uri: str) -> Path:
    """Return the one data file a ``bids://root?entity=value&...`` URI selects."""
    import mne_bids
    from mne_bids.config import ALLOWED_DATATYPE_EXTENSIONS

    root, _, query = uri[len("bids://") :].partition("?")
    entities = {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}
    if not Path(root).exists():
        raise FileNotFoundError(
            f"Invalid value for 'path': the BIDS root {root!r} of {uri!r} does not exist. "
            "Check the path (relative paths start at the current directory)."
        )
    try:
        candidates = mne_bids.BIDSPath(root=root, **entities).match(ignore_json=True)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"Invalid value for 'path': {uri!r} is not a valid BIDS URI ({err}). Write "
            "bids://<root>?subject=01&task=typing with BIDS entity names."
        ) from err
    files = [
        Path(c.fpath)
        for c in candidates
        if c.suffix in MODALITY_TYPES
        and c.extension in ALLOWED_DATATYPE_EXTENSIONS.get(c.suffix, ())
    ]
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise ValueError(
            f"Invalid value for 'path': {uri!r} must select exactly one BIDS data file; found "
            f"{found}. Add entities (session, run, datatype, ...) to narrow it down."
        )
    return files[0]


def _call_mne(path: Path, func, *args, **kwargs) -> Any:
    """Run an MNE reading call, turning its failures into errors that name ``path``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = func(*args, **kwargs)
        except OSError:
            raise
        except Exception as err:
            raise ValueError(
                f"Cannot read the recording {str(path)!r}: the file is corrupt, truncated or not "
                f"the format its extension says ({type(err).__name__}: {err}). Check the file, "
                "or record it again."
            ) from err
    for item in caught:
        message = str(item.message)
        if any(text in message for text in _TRUNCATION_WARNINGS):
            raise ValueError(
                f"Cannot read the recording {str(path)!r}: it is truncated ({message}). "
                "Check the file, or record it again."
            )
        if not any(text in message for text in _IGNORED_WARNINGS):
            warnings.warn(f"{path.name}: {message}", item.category, stacklevel=3)
    return result


def _channels_of(info: mne.Info) -> ChannelSpec:
    """Channel names, MNE types, SI units and positions (metres) of an MNE ``Info``."""
    positions = np.full((len(info["chs"]), 3), np.nan)
    for i, ch in enumerate(info["chs"]):
        loc = np.asarray(ch["loc"][:3], dtype=float)
        if np.isfinite(loc).all() and np.any(loc != 0):
            positions[i] = loc
    units = [_UNITS.get(ch["unit"], str(ch["unit"]).split("FIFF_UNIT_")[-1]) for ch in info["chs"]]
    return ChannelSpec(
        names=info["ch_names"],
        types=info.get_channel_types(),
        units=units,
        positions=positions if np.isfinite(positions).any() else None,
    )


def _markers_of(raw: mne.io.BaseRaw, path: Path) -> list[Marker]:
    """Markers from annotations and stim channels, on the recording clock (first sample = 0 s)."""
    annotations = raw.annotations
    offset = raw.first_time if annotations.orig_time is not None else 0.0
    markers = [
        Marker(float(onset - offset), str(desc))
        for onset, desc in zip(annotations.onset, annotations.description)
    ]
    for pick in mne.pick_types(raw.info, meg=False, stim=True):
        channel = raw.ch_names[pick]
        events = _call_mne(
            path, mne.find_events, raw, stim_channel=channel, shortest_event=1, verbose="warning"
        )
        samples = events[:, 0] - raw.first_samp
        markers += [
            Marker(float(s / raw.info["sfreq"]), f"stim:{channel}:{code}")
            for s, code in zip(samples, events[:, 2])
        ]
    return markers


def _reader_from_raw(
    raw: mne.io.BaseRaw, path: Path | None, fmt: str, name: str | None
) -> RecordingReader:
    """Header and markers of ``raw`` now, its samples on demand (from disk unless preloaded)."""
    file_name = path or Path(name or "recording")

    def read_block(start: int, stop: int) -> np.ndarray:
        return _call_mne(file_name, raw.get_data, start=start, stop=stop).T

    stem = name or (path.name.split(".")[0] if path is not None else "recording")
    meas_date = raw.info["meas_date"]
    meta = {
        "file": str(path) if path is not None else None,
        "format": fmt,
        "meas_date": meas_date.isoformat() if meas_date is not None else None,
        "first_samp": int(raw.first_samp),
        "clock": "first sample at 0 s; meas_date is its wall-clock time",
    }
    return RecordingReader(
        sfreq=raw.info["sfreq"],
        channels=_channels_of(raw.info),
        markers=_markers_of(raw, path or Path(stem)),
        n_times=raw.n_times,
        name=stem,
        source_id=stem,
        meta=meta,
        read_block=read_block,
        path=path,
    )


def open_mne_recording(
    path: Path, fmt: str, bids_path: mne_bids.BIDSPath | None = None
) -> RecordingReader:
    """Open a file MNE reads, or a BIDS data file through mne-bids, for block-wise reading.

    ``path`` is read through mne-bids when ``bids_path`` is given or when it lies inside a BIDS
    dataset (see the module docstring), else through ``mne.io.read_raw``. ``fmt`` names its
    format in ``meta["format"]``.
    """
    if bids_path is not None or _in_bids_dataset(path):
        import mne_bids

        if bids_path is None:
            bids_path = _call_mne(path, mne_bids.get_bids_path_from_fname, path)
        raw = _call_mne(path, mne_bids.read_raw_bids, bids_path, verbose="warning")
        return _reader_from_raw(raw, path, "BIDS", None)
    raw = _call_mne(path, mne.io.read_raw, path, preload=False, verbose="warning")
    return _reader_from_raw(raw, path, fmt, None)


def raw_to_recording(raw: mne.io.BaseRaw, name: str | None = None) -> Recording:
    """Convert an MNE ``Raw`` into a :class:`Recording` (first sample at 0 s, see module doc)."""
    filenames = [f for f in raw.filenames if f is not None]
    path = Path(filenames[0]) if filenames else None
    return _reader_from_raw(raw, path, "MNE", name).to_recording()


# ---------------------------------------------------------------------------- writing


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
    if path.exists() and not overwrite:  # before MNE, whose message names its own option
        raise exists_error(path)
    raw = recording_to_raw(recording)
    fmt = "double" if np.asarray(recording.data).dtype == np.float64 else "single"
    with warnings.catch_warnings():
        # Any .fif name is fine here; MNE's "-raw.fif" naming advice does not apply.
        warnings.filterwarnings("ignore", message=".*naming conventions.*", category=RuntimeWarning)
        raw.save(path, fmt=fmt, overwrite=overwrite, verbose=False)
    return path


def _bids_datatype(types: list[str]) -> str:
    """BIDS datatype of channels of MNE ``types``: their modality (``"meg"``, ``"ieeg"``, ...)."""
    modality = modality_of(types)
    if modality is not None:
        return modality
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
    ``trial_type`` is the marker string. iEEG electrode positions go to space ``Other`` (BIDS
    iEEG admits no head frame, and nothing registered them to an anatomical space), which names
    the iEEG files too (``..._space-Other_ieeg.vhdr``).
    """
    import mne_bids

    for name, value in (("subject", subject), ("session", session), ("task", task)):
        _check_label(name, value)
    raw = recording_to_raw(recording)
    if recording.meta.get("line_freq"):
        raw.info["line_freq"] = float(recording.meta["line_freq"])
    datatype = _bids_datatype(raw.get_channel_types())
    space = None
    if datatype == "ieeg" and raw.info["dig"]:
        _unregistered_positions(raw)
        space = "Other"
    bids_path = mne_bids.BIDSPath(
        subject=str(subject),
        session=session,
        task=task,
        run=run,
        datatype=datatype,
        space=space,
        root=Path(bids_root),
    )
    file_format = "FIF" if datatype == "meg" else "BrainVision"
    existing = sorted(Path(bids_root).glob(f"sub-{subject}/**/{bids_path.basename}_*"))
    if existing and not overwrite:  # before mne-bids, whose message names its own option
        raise exists_error(existing[0], f"the BIDS recording {bids_path.basename}")
    with _undone_on_failure(Path(bids_root), str(subject)), warnings.catch_warnings():
        # pybv notes that BrainVision only names volts; unitless channels (misc, stim) are
        # still written unscaled with unit "n/a", which is what we want.
        warnings.filterwarnings("ignore", message=".*unsupported non-voltage units.*")
        written = mne_bids.write_raw_bids(
            raw,
            bids_path,
            format=file_format,
            allow_preload=True,
            overwrite=overwrite,
            verbose=False,
        )
        if space is not None:
            coordsystem = written.copy().update(
                task=None, run=None, suffix="coordsystem", extension=".json", check=False
            )
            description = {"iEEGCoordinateSystemDescription": _IEEG_SPACE_DESCRIPTION}
            mne_bids.update_sidecar_json(coordsystem, description, verbose=False)
    return written


@contextlib.contextmanager
def _undone_on_failure(root: Path, subject: str) -> Iterator[None]:
    """On an exception, leave the BIDS folder ``root`` as it was before the block.

    mne-bids writes a recording as a dozen files (sidecars, channels, events, data, scans) and
    updates the dataset's tables (participants.tsv, dataset_description.json, the subject's
    scans.tsv) as it goes; it does not undo them when a later step fails. Here the files the
    block created are removed, the tables it may have changed are restored from a copy taken
    before (they are small text files: the root's and the subject's .tsv/.json), and a root
    that did not exist is removed whole.
    """
    existed = root.exists()
    before = {p for p in root.rglob("*")} if existed else set()
    tables = [*root.glob("*.tsv"), *root.glob("*.json")] if existed else []
    tables += [*root.glob(f"sub-{subject}/**/*.tsv")] if existed else []
    saved = {p: p.read_bytes() for p in tables if p.is_file()}
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(root, ignore_errors=True)
            raise
        now = sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True)
        for path in now:  # deepest first, so folders are empty when their turn comes
            if path in before:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        for path, content in saved.items():
            if not path.is_file() or path.read_bytes() != content:
                path.write_bytes(content)
        raise


def _unregistered_positions(raw: mne.io.BaseRaw) -> None:
    """Mark the positions as in MNE's ``mri`` frame, which mne-bids writes to a given space.

    Their head frame (:func:`_set_positions`) would become BIDS ``CapTrak``, which BIDS iEEG does
    not admit; the numbers stay as they are.
    """
    for ch in raw.info["chs"]:
        if ch["coord_frame"] == FIFF.FIFFV_COORD_HEAD:
            ch["coord_frame"] = FIFF.FIFFV_COORD_MRI
    for point in raw.info["dig"]:
        point["coord_frame"] = FIFF.FIFFV_COORD_MRI
