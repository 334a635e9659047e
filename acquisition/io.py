"""Read any recording (XDF, FIF, EDF/BDF, BrainVision, KIT, CTF, BIDS) as a :class:`Recording`.

Formats are chosen by extension (see :data:`SUPPORTED_FORMATS`). XDF goes through
:func:`acquisition.xdf.read_xdf`; everything else through MNE. BIDS goes through mne-bids (events
and channels.tsv included), given as any of: a data file inside a BIDS dataset (a ``sub-*`` file
below a folder holding ``dataset_description.json``), a :class:`mne_bids.BIDSPath`, or a URI
``bids://<root>?subject=01&task=typing[&session=..&run=..&datatype=meg]`` whose entities must
select exactly one data file.

Clock of recordings read through MNE: sample ``i`` is at ``i / sfreq`` seconds, i.e. the first
sample of the file is at 0 s. ``meta["meas_date"]`` (ISO 8601, or None) gives the wall-clock time
of that first sample. Markers come from annotations (the description is the marker value, e.g.
BrainVision ``"Stimulus/S  1"``) and from stim channels (``mne.find_events`` with MNE's defaults
and ``shortest_event=1``, one marker ``stim:<channel>:<code>`` per event).

:func:`open_recording` and :func:`iter_chunks` read long files block by block instead of loading
them whole where the reader allows (all MNE formats; XDF is always loaded whole).
"""

from __future__ import annotations

import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mne
import numpy as np
from mne.io.constants import FIFF

from acquisition.channels import ChannelSpec
from acquisition.recording import Marker, Recording

#: File extensions understood by :func:`read_recording` and the format each one means.
SUPPORTED_FORMATS = {
    ".xdf": "XDF",
    ".xdfz": "XDF",
    ".fif": "FIF",
    ".fif.gz": "FIF",
    ".edf": "EDF",
    ".bdf": "BDF",
    ".vhdr": "BrainVision",
    ".sqd": "KIT",
    ".con": "KIT",
    ".ds": "CTF",
}

_DATA_EXTENSIONS = tuple(SUPPORTED_FORMATS)

_MNE_READERS = {
    "FIF": mne.io.read_raw_fif,
    "EDF": mne.io.read_raw_edf,
    "BDF": mne.io.read_raw_bdf,
    "BrainVision": mne.io.read_raw_brainvision,
    "KIT": mne.io.read_raw_kit,
    "CTF": mne.io.read_raw_ctf,
}

# MNE warnings that mean the file is cut short: raised as errors, since the data would be wrong.
_TRUNCATION_WARNINGS = (
    "does not match the file size",
    "possibly corrupted",
    "Invalid tag with only",
)
# MNE warnings about file names only, harmless for reading.
_IGNORED_WARNINGS = ("does not conform to MNE naming conventions",)

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


def _format_of(path: Path) -> str:
    """Return the format name of ``path`` from its extension, or raise a ValueError."""
    name = path.name.lower()
    for ext in sorted(SUPPORTED_FORMATS, key=len, reverse=True):
        if name.endswith(ext):
            return SUPPORTED_FORMATS[ext]
    supported = ", ".join(f"{ext} ({fmt})" for ext, fmt in SUPPORTED_FORMATS.items())
    raise ValueError(
        f"Invalid value for 'path': cannot tell the format of {str(path)!r} from its extension "
        f"{''.join(path.suffixes) or '(none)'!r}. Supported: {supported}, and BIDS files inside "
        "a dataset with dataset_description.json. Convert the file to one of these (e.g. FIF)."
    )


def _in_bids_dataset(path: Path) -> bool:
    """Whether ``path`` is a BIDS data file: ``sub-*`` below a ``dataset_description.json``."""
    return path.name.startswith("sub-") and any(
        (parent / "dataset_description.json").is_file() for parent in path.parents
    )


def _resolve_bids_uri(uri: str) -> Path:
    """Return the one data file a ``bids://root?entity=value&...`` URI selects."""
    import mne_bids

    root, _, query = uri[len("bids://") :].partition("?")
    entities = {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}
    _check_exists(Path(root))
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
        if c.suffix in ("eeg", "meg", "ieeg") and str(c.fpath).lower().endswith(_DATA_EXTENSIONS)
    ]
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise ValueError(
            f"Invalid value for 'path': {uri!r} must select exactly one BIDS data file; found "
            f"{found}. Add entities (session, run, datatype, ...) to narrow it down."
        )
    return files[0]


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(
            f"Invalid value for 'path': the recording {str(path)!r} does not exist. "
            "Check the path (relative paths start at the current directory)."
        )


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


def _open_bids(fpath: Path, bids_path: Any = None) -> mne.io.BaseRaw:
    """Open a BIDS data file (lazily) through mne-bids, with its events and channels.tsv."""
    import mne_bids

    if bids_path is None:
        bids_path = _call_mne(fpath, mne_bids.get_bids_path_from_fname, fpath)
    return _call_mne(fpath, mne_bids.read_raw_bids, bids_path, verbose="warning")


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


class RecordingReader:
    """Header (rate, channels, markers, length) of a recording plus block-wise sample access.

    Made by :func:`open_recording`. For MNE formats only the header and stim channels are read
    up front; :meth:`read` and :meth:`chunks` read samples from the file on demand. For an
    in-memory :class:`Recording` (and XDF, which is loaded whole) they slice its arrays.
    """

    def __init__(
        self,
        *,
        sfreq: float,
        channels: ChannelSpec,
        markers: list[Marker],
        n_times: int,
        name: str,
        source_id: str,
        meta: dict,
        raw: mne.io.BaseRaw | None = None,
        recording: Recording | None = None,
        path: Path | None = None,
    ) -> None:
        self.sfreq = float(sfreq)
        self.channels = channels
        self.markers = sorted(markers, key=lambda m: m.timestamp)
        self.n_times = int(n_times)
        self.name = name
        self.source_id = source_id
        self.meta = meta
        self.path = path
        self._raw = raw
        self._recording = recording

    @classmethod
    def from_recording(cls, recording: Recording) -> RecordingReader:
        """Wrap an in-memory recording."""
        return cls(
            sfreq=recording.sfreq,
            channels=recording.channels,
            markers=list(recording.markers),
            n_times=recording.n_times,
            name=recording.name,
            source_id=recording.source_id,
            meta=recording.meta,
            recording=recording,
        )

    def timestamps(self, start: int, stop: int) -> np.ndarray:
        """Recording-clock times (s) of samples ``start..stop-1``."""
        if self._recording is not None:
            return self._recording.timestamps[start:stop]
        return np.arange(start, stop) / self.sfreq

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Return samples ``start..stop-1`` as ``(data (n, n_channels), timestamps (n,))``."""
        stop = min(stop, self.n_times)
        if self._recording is not None:
            return self._recording.data[start:stop], self._recording.timestamps[start:stop]
        path = self.path or Path(self.name)
        data = _call_mne(path, self._raw.get_data, start=start, stop=stop)
        return data.T, self.timestamps(start, stop)

    def chunks(self, chunk_samples: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Return an iterator of ``(data, timestamps)`` blocks of ``chunk_samples`` samples.

        The last block may be shorter. ``chunk_samples`` is checked now, not at the first block.
        """
        if isinstance(chunk_samples, bool) or not isinstance(chunk_samples, int | np.integer):
            raise TypeError(
                f"Invalid type for 'chunk_samples': expected an int, got {chunk_samples!r}."
            )
        if chunk_samples < 1:
            raise ValueError(
                f"Invalid value for 'chunk_samples': {chunk_samples}; it must be at least 1 sample."
            )
        return (
            self.read(start, start + int(chunk_samples))
            for start in range(0, self.n_times, int(chunk_samples))
        )

    def marker_samples(self) -> np.ndarray:
        """Index of the sample each marker belongs to (nearest in time, clipped to the data)."""
        times = np.array([m.timestamp for m in self.markers], dtype=float)
        if self.n_times == 1:
            index = np.zeros(len(times))
        elif self._recording is None:
            index = np.round(times * self.sfreq)
        else:
            stamps = self._recording.timestamps
            right = np.clip(np.searchsorted(stamps, times), 1, self.n_times - 1)
            left = right - 1
            closer_left = np.abs(times - stamps[left]) <= np.abs(stamps[right] - times)
            index = np.where(closer_left, left, right)
        return np.clip(index, 0, self.n_times - 1).astype(np.int64)

    def to_recording(self) -> Recording:
        """Load every sample into a :class:`Recording`."""
        if self._recording is not None:
            return self._recording
        data, timestamps = self.read(0, self.n_times)
        return Recording(
            data=np.ascontiguousarray(data),
            timestamps=timestamps,
            sfreq=self.sfreq,
            channels=self.channels,
            markers=self.markers,
            name=self.name,
            source_id=self.source_id,
            meta=self.meta,
        )


def _reader_from_raw(raw: mne.io.BaseRaw, path: Path | None, fmt: str, name: str | None):
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
        raw=raw,
        path=path,
    )


def open_recording(path: Any, *, stream: str | None = None) -> RecordingReader:
    """Open a recording file (or wrap a :class:`Recording`) for block-wise reading.

    Parameters
    ----------
    path : path-like | Recording | mne_bids.BIDSPath | str
        The recording. Its extension picks the reader (:data:`SUPPORTED_FORMATS`); BIDS as
        described in the module docstring (``bids://`` URI included).
    stream : str | None
        XDF only: name of the data stream to read when the file holds several.

    Returns
    -------
    RecordingReader
        Header and markers now, samples on demand (XDF: loaded whole).
    """
    if isinstance(path, Recording):
        return RecordingReader.from_recording(path)
    bids_path = None
    if isinstance(path, str) and path.startswith("bids://"):
        path = _resolve_bids_uri(path)
    elif not isinstance(path, str | Path):
        import mne_bids

        bids_path = path if isinstance(path, mne_bids.BIDSPath) else None
    fpath = Path(bids_path.fpath if bids_path is not None else path)
    _check_exists(fpath)
    fmt = _format_of(fpath)
    if fmt == "XDF":
        from acquisition.xdf import read_xdf

        return RecordingReader.from_recording(read_xdf(fpath, stream=stream))
    if stream is not None:
        raise ValueError(
            f"Invalid value for 'stream': {stream!r}, but {str(fpath)!r} is not an XDF file and "
            "holds a single data stream. Leave 'stream' as None."
        )
    if bids_path is not None or _in_bids_dataset(fpath):
        return _reader_from_raw(_open_bids(fpath, bids_path), fpath, "BIDS", None)
    raw = _call_mne(fpath, _MNE_READERS[fmt], fpath, preload=False, verbose="warning")
    return _reader_from_raw(raw, fpath, fmt, None)


def read_recording(path: Any, *, stream: str | None = None) -> Recording:
    """Read a whole recording file into memory.

    Parameters
    ----------
    path : path-like | mne_bids.BIDSPath | str
        An XDF, FIF, EDF, BDF, BrainVision (``.vhdr``), KIT (``.sqd``/``.con``) or CTF (``.ds``)
        file, or BIDS: a data file inside a dataset, a BIDSPath or a ``bids://`` URI.
    stream : str | None
        XDF only: name of the data stream to read when the file holds several.

    Returns
    -------
    Recording
        Data ``(n_times, n_channels)`` in SI units, timestamps, channels and markers.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the extension is not supported, or the file is corrupt or truncated.
    """
    return open_recording(path, stream=stream).to_recording()


def raw_to_recording(raw: mne.io.BaseRaw, name: str | None = None) -> Recording:
    """Convert an MNE ``Raw`` into a :class:`Recording` (first sample at 0 s, see module doc)."""
    filenames = [f for f in raw.filenames if f is not None]
    path = Path(filenames[0]) if filenames else None
    return _reader_from_raw(raw, path, "MNE", name).to_recording()


def iter_chunks(
    path_or_recording: Any, chunk_samples: int, *, stream: str | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(data (n, n_channels), timestamps (n,))`` blocks of a recording in order.

    MNE formats are read block by block from disk, so a long file is never held whole in
    memory; XDF files are loaded whole first (pyxdf reads the entire file), then sliced.

    Parameters
    ----------
    path_or_recording : path-like | Recording | mne_bids.BIDSPath
        The recording to read.
    chunk_samples : int
        Samples per block (the last block may be shorter).
    stream : str | None
        XDF only: name of the data stream to read.
    """
    return open_recording(path_or_recording, stream=stream).chunks(chunk_samples)
