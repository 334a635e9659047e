"""Read, write and convert recordings by file type: the one dispatcher between XDF and MNE/BIDS.

Reading (:func:`open_recording`, :func:`read_recording`, :func:`iter_chunks`): ``.xdf`` and
``.xdfz`` go to :mod:`acquisition.xdf` (loaded whole); every format ``mne.io.read_raw`` reads, and
BIDS (a data file inside a BIDS dataset, a :class:`mne_bids.BIDSPath`, or a
``bids://<root>?subject=01&task=typing`` URI), go to :mod:`acquisition.convert`, which opens them
lazily and reads samples block by block. See :data:`SUPPORTED_FORMATS`, and
:mod:`acquisition.convert` for the clock and the markers of files read through MNE.

Writing (:func:`write_recording`) and converting (:func:`convert`): ``.xdf`` through
:mod:`acquisition.xdf`, ``.fif`` and BIDS folders through :mod:`acquisition.convert`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from acquisition.convert import (
    open_mne_recording,
    resolve_bids_uri,
    write_bids,
    write_fif,
)
from acquisition.recording import Recording, RecordingReader
from acquisition.xdf import read_xdf, write_xdf

__all__ = [
    "SUPPORTED_FORMATS",
    "RecordingReader",
    "convert",
    "iter_chunks",
    "open_recording",
    "read_recording",
    "write_recording",
]

_XDF_FORMATS = {".xdf": "XDF", ".xdfz": "XDF"}


def _mne_formats() -> dict[str, str]:
    """Extensions ``mne.io.read_raw`` reads, each with the name(s) of its format.

    Taken from MNE's own table of readers (it has no public accessor), so that every format MNE
    reads is listed without a copy of that list here. MNE maps each extension to its readers by
    format name; older versions map it to one reader function, ``read_raw_<format>``.
    """
    from mne.io._read_raw import _get_supported

    return {
        ext: "/".join(readers) if isinstance(readers, dict) else readers.__name__[9:]
        for ext, readers in _get_supported().items()
    }


#: File extensions :func:`open_recording` reads, and the format each one means: XDF, and every
#: format ``mne.io.read_raw`` reads (FIF, EDF, BDF, BrainVision, KIT, CTF, EEGLAB, ...).
SUPPORTED_FORMATS = {**_XDF_FORMATS, **_mne_formats()}


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


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(
            f"Invalid value for 'path': the recording {str(path)!r} does not exist. "
            "Check the path (relative paths start at the current directory)."
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
        path = resolve_bids_uri(path)
    elif not isinstance(path, str | os.PathLike):
        import mne_bids

        bids_path = path if isinstance(path, mne_bids.BIDSPath) else None
    fpath = Path(bids_path.fpath if bids_path is not None else path)
    _check_exists(fpath)
    fmt = _format_of(fpath)
    if fmt == "XDF":
        return RecordingReader.from_recording(read_xdf(fpath, stream=stream))
    if stream is not None:
        raise ValueError(
            f"Invalid value for 'stream': {stream!r}, but {str(fpath)!r} is not an XDF file and "
            "holds a single data stream. Leave 'stream' as None."
        )
    return open_mne_recording(fpath, fmt, bids_path)


def read_recording(path: Any, *, stream: str | None = None) -> Recording:
    """Read a whole recording file into memory.

    Parameters
    ----------
    path : path-like | mne_bids.BIDSPath | str
        An XDF file, any file ``mne.io.read_raw`` reads (FIF, EDF, BDF, BrainVision ``.vhdr``,
        KIT ``.sqd``/``.con``, CTF ``.ds``, ...), or BIDS: a data file inside a dataset, a
        BIDSPath or a ``bids://`` URI.
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


def write_recording(
    recording: Recording, path: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write a :class:`Recording` to ``.xdf`` (signal + marker streams) or ``.fif``.

    The format follows the extension: XDF through :func:`acquisition.xdf.write_xdf`, FIF
    through :func:`acquisition.convert.write_fif`. Returns the written path.
    """
    path = Path(path)
    lower = path.name.lower()
    if lower.endswith((".fif", ".fif.gz")):
        return write_fif(recording, path, overwrite=overwrite)
    if lower.endswith(".xdf"):
        return write_xdf(recording, path, overwrite=overwrite)
    raise ValueError(
        f"Invalid value for 'path': cannot tell the format of '{path}' from its extension. "
        "Use .xdf (LSL's format) or .fif (MNE's format)."
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
            "Only XDF recordings are converted (to FIF or BIDS)."
        )
    to_bids = _is_bids_target(out) if bids is None else bids
    lower = os.fspath(out).lower()
    if not to_bids and not lower.endswith((".fif", ".fif.gz")):
        raise ValueError(
            f"Invalid value for 'out': '{out}' is neither a .fif file nor a BIDS folder. Give "
            "a path ending in .fif, or a folder (ending in '/') for BIDS."
        )
    recording = read_xdf(in_path, stream)
    if to_bids:
        bids_path = write_bids(recording, out, subject, session, task, run, overwrite=overwrite)
        return Path(bids_path.fpath)
    return write_fif(recording, out, overwrite=overwrite)
