"""XDF files: :func:`read_xdf` into a :class:`Recording`, :func:`write_xdf`, and the writer.

XDF (https://github.com/sccn/xdf/wiki/Specifications) is LSL's native file format: the magic
``XDF:`` then chunks ``[NumLengthBytes][Length][Tag][Content]``. No well-kept Python library
writes XDF (pyxdf only reads it, LabRecorder's writer is C++), so :class:`XdfWriter` is ours,
written from the specification. Reading goes through pyxdf (clock sync and dejittering included).

Each chunk is written with one unbuffered ``write`` (nothing waits in a user-space buffer), so a
recorder killed with SIGKILL leaves at most a partial last chunk. pyxdf loads most such files but
crashes when the cut falls inside a chunk's tag or a ClockOffset chunk, so :func:`read_xdf` first
walks the chunk structure and hands pyxdf only the complete chunks. When a write fails (full disk,
file-size limit) the writer cuts the file back to its last complete chunk, so it still loads.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import struct
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pylsl
import pyxdf

from acquisition.channels import ChannelSpec, make_stream_info, mne_channel_type, si_unit
from acquisition.recording import Marker, Recording
from acquisition.xdf_writer import TAG_CLOCK_OFFSET, TAG_STREAM_HEADER, XdfWriter

logger = logging.getLogger(__name__)


def _open_binary(path: Path):
    if path.suffix.lower() == ".xdfz" or path.name.lower().endswith(".xdf.gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _scan_chunks(path: Path) -> tuple[int, str | None, int]:
    """Walk the chunk headers: where the complete chunks end, what cut the file short.

    Also how many ClockOffset chunks the complete part holds.

    Raises ValueError for a file that is not XDF or whose chunk structure is corrupt.
    """
    size = None if path.suffix.lower() != ".xdf" else path.stat().st_size
    n_headers = n_offsets = 0
    with _open_binary(path) as f:
        try:
            magic = f.read(4)
        except OSError as err:  # gzip: not a gzip file
            raise ValueError(f"Cannot read '{path}': {err}. Is it an XDF file?") from None
        if magic != b"XDF:":
            raise ValueError(
                f"Cannot read '{path}': not an XDF file (it starts with {magic!r}, not "
                "b'XDF:'). Pass an .xdf file recorded by LabRecorder or bci-app."
            )
        pos = 4
        while size_byte := f.read(1):
            n_len = size_byte[0]
            if n_len not in (1, 4, 8):
                raise ValueError(
                    f"Cannot read '{path}': corrupt chunk at byte {pos} (length field of "
                    f"{n_len} bytes; XDF allows 1, 4 or 8). The file is damaged."
                )
            head = f.read(n_len + 2)
            length = int.from_bytes(head[:n_len], "little")
            end = pos + 1 + n_len + length
            if len(head) == n_len + 2 and not (length >= 2 and 1 <= head[-2] <= 6):
                raise ValueError(
                    f"Cannot read '{path}': corrupt chunk at byte {pos} (tag "
                    f"{int.from_bytes(head[-2:], 'little')}, length {length}). The file is damaged."
                )
            if len(head) < n_len + 2 or f.seek(end) != end or (size is not None and end > size):
                what = f"the file ends inside the chunk that starts at byte {pos}"
                if n_headers == 0:
                    raise ValueError(f"Cannot read '{path}': truncated: {what}, before any stream.")
                return pos, what, n_offsets
            n_headers += head[-2] == TAG_STREAM_HEADER
            n_offsets += head[-2] == TAG_CLOCK_OFFSET
            pos = end
    if n_headers == 0:
        raise ValueError(f"Cannot read '{path}': the file holds no stream (no StreamHeader chunk).")
    return pos, None, n_offsets


def truncation(path: str | os.PathLike) -> str | None:
    """Say where an XDF file was cut short (as a killed recorder leaves it), or None if whole."""
    return _scan_chunks(Path(path))[1]


class _PrefixReader(io.RawIOBase):
    """The first ``limit`` bytes of a binary file, so that pyxdf meets a clean end of file."""

    def __init__(self, raw, limit: int) -> None:
        self._raw, self._limit = raw, limit

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        room = max(0, self._limit - self._raw.tell())
        view = memoryview(buffer).cast("B")[:room]
        return self._raw.readinto(view) if len(view) else 0

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            offset, whence = self._limit + offset, io.SEEK_SET
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        self._raw.close()
        super().close()


def _first(node, key: str, default=None):
    """``node[key][0]`` of pyxdf's XML dicts, or ``default`` when missing or empty."""
    if not isinstance(node, dict):
        return default
    values = node.get(key) or [None]
    return default if values[0] is None else values[0]


def _channel_spec(info: dict, n_channels: int) -> tuple[ChannelSpec, np.ndarray]:
    """Channel names/types/SI units/positions from a stream header, and the factors to SI."""
    channels = _first(_first(info, "desc"), "channels")
    entries = channels.get("channel", []) if isinstance(channels, dict) else []
    if len(entries) != n_channels:
        ch_type = mne_channel_type(_first(info, "type", ""))
        return ChannelSpec.generic(n_channels, ch_type), np.ones(n_channels)
    names, types, units = [], [], []
    factors, positions = np.ones(n_channels), np.full((n_channels, 3), np.nan)
    for i, entry in enumerate(entries):
        names.append(str(_first(entry, "label", f"ch{i + 1}")))
        types.append(mne_channel_type(str(_first(entry, "type", "misc"))))
        unit, factors[i] = si_unit(str(_first(entry, "unit", "n/a")))
        units.append(unit)
        location = _first(entry, "location")
        try:
            positions[i] = [float(_first(location, axis)) / 1000.0 for axis in "XYZ"]
        except (TypeError, ValueError):
            pass  # no or incomplete position: stays NaN
    pos = positions if np.isfinite(positions).any() else None
    return ChannelSpec(names, types, units, pos), factors


def _describe(streams: list[dict]) -> str:
    return ", ".join(
        f"{_first(s['info'], 'name')!r} ({_first(s['info'], 'channel_format')}, "
        f"{_first(s['info'], 'channel_count')} ch, {len(s['time_stamps'])} samples)"
        for s in streams
    )


def _n_channels(stream: dict) -> int:
    """Channels a stream declares (0 for a missing or unreadable count)."""
    try:
        return int(_first(stream["info"], "channel_count", 0))
    except (TypeError, ValueError):
        return 0


def _pick_stream(streams: list[dict], wanted: str | None, path: Path) -> dict:
    numeric = [s for s in streams if _first(s["info"], "channel_format") != "string"]
    if wanted is None:
        if not numeric:
            raise ValueError(
                f"'{path}' holds no numeric (signal) stream, only: {_describe(streams)}. "
                "Record the amplifier's stream along with the markers."
            )
        usable = [s for s in numeric if _n_channels(s) > 0] or numeric
        return max(usable, key=lambda s: s["time_series"].size)
    found = [
        s for s in streams if wanted in (_first(s["info"], "name"), _first(s["info"], "source_id"))
    ]
    if not found:
        raise ValueError(
            f"Invalid value for 'stream': no stream named {wanted!r} in '{path}'. Streams "
            f"found: {_describe(streams)}."
        )
    if found[0] not in numeric:
        raise ValueError(
            f"Invalid value for 'stream': {wanted!r} in '{path}' is a string (marker) stream, "
            f"not signals. Numeric streams: {_describe(numeric) or 'none'}."
        )
    return found[0]


def _load(path: Path, end: int, sync: bool, dejitter: bool) -> tuple[list[dict], dict]:
    source = io.BufferedReader(_PrefixReader(_open_binary(path), end))
    try:
        return pyxdf.load_xdf(source, synchronize_clocks=sync, dejitter_timestamps=dejitter)
    except (ValueError, OSError, KeyError, IndexError, struct.error, ElementTree.ParseError) as err:
        raise ValueError(f"Cannot read '{path}': corrupt XDF content ({err!r}).") from err


def _gap_markers(timestamps: np.ndarray, sfreq: float) -> list[Marker]:
    """``gap:<seconds>`` markers where samples are missing.

    (a pause longer than 2 samples and 50 ms), placed where the missing data would have started.
    """
    if sfreq <= 0 or timestamps.size < 2:
        return []
    missing = np.diff(timestamps) - 1.0 / sfreq
    where = np.flatnonzero(missing > max(2.0 / sfreq, 0.05))
    return [Marker(float(timestamps[i]) + 1.0 / sfreq, f"gap:{missing[i]:.3f}") for i in where]


def read_xdf(
    path: str | os.PathLike, stream: str | None = None, *, dejitter: bool = True, strict=False
) -> Recording:
    """Read an XDF file into a :class:`Recording`: one signal stream plus all string markers.

    Parameters
    ----------
    path : path-like
        ``.xdf`` (or gzip-compressed ``.xdfz``) file.
    stream : str | None
        Name or source_id of the signal stream; default: the numeric stream with the most
        channels x samples.
    dejitter : bool
        Let pyxdf dejitter the timestamps of regular streams (LSL's recommendation).
    strict : bool
        Raise on a file cut short inside its last chunks (as a killed recorder leaves it);
        by default the complete chunks are read and ``meta["truncated"]`` says what was lost.

    Returns
    -------
    Recording
        Data in SI units, timestamps and markers on the recorder's clock (pyxdf's clock sync),
        plus a ``gap:<seconds>`` marker wherever the signal stream misses samples.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such XDF file: '{path}'.")
    end, problem, n_offsets = _scan_chunks(path)
    if problem is not None:
        if strict:
            raise ValueError(f"Cannot read '{path}': truncated: {problem}.")
        logger.warning(
            "'%s' is truncated (%s); reading the complete chunks before it.", path, problem
        )
    streams, header = _load(path, end, n_offsets > 0, dejitter)
    chosen = _pick_stream(streams, stream, path)
    info, data = chosen["info"], np.asarray(chosen["time_series"])
    name = _first(info, "name", "")
    if _n_channels(chosen) < 1 or data.ndim != 2 or data.shape[1] == 0:
        raise ValueError(
            f"Cannot use stream {name!r} of '{path}': it declares "
            f"{_first(info, 'channel_count', 'no')} channels. The outlet that was recorded is "
            "broken; fix its channel count and record again."
        )
    if data.shape[0] == 0:
        raise ValueError(f"Cannot use stream {name!r} of '{path}': it holds no samples.")
    channels, factors = _channel_spec(info, data.shape[1])
    if (factors != 1).any():
        data = data.astype(np.float64) * factors
    markers = [
        Marker(float(time), value)
        for s in streams
        if _first(s["info"], "channel_format") == "string"
        for time, row in zip(s["time_stamps"], s["time_series"])
        for value in row
        if value
    ]
    sfreq = float(_first(info, "nominal_srate", 0)) or float(info.get("effective_srate") or 0)
    markers += _gap_markers(chosen["time_stamps"], sfreq)
    meta = {
        "file": str(path),
        "stream_type": _first(info, "type", ""),
        "xdf_streams": [_first(s["info"], "name") for s in streams],
        "effective_srate": float(info.get("effective_srate") or 0.0),
        "recorded_at": _first((header or {}).get("info"), "datetime"),
    }
    if problem is not None:
        meta["truncated"] = problem
    return Recording(
        data,
        chosen["time_stamps"],
        sfreq,
        channels,
        markers,
        name=name,
        source_id=_first(info, "source_id", "") or name,
        meta=meta,
    )


_DTYPE_FORMATS = {
    "float32": pylsl.cf_float32,
    "float64": pylsl.cf_double64,
    "int8": pylsl.cf_int8,
    "int16": pylsl.cf_int16,
    "int32": pylsl.cf_int32,
    "int64": pylsl.cf_int64,
}


def _stream_type(recording: Recording) -> str:
    """LSL type of the recording's stream: the one it was recorded with, else its modality's."""
    if recording.meta.get("stream_type"):
        return str(recording.meta["stream_type"])
    return recording.channels.stream_type


def write_xdf(recording: Recording, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a :class:`Recording` to an ``.xdf`` file: its signal stream and a marker stream.

    :func:`acquisition.io.write_recording` picks XDF or FIF by the extension.
    """
    path = Path(path)
    if not path.name.lower().endswith(".xdf"):
        raise ValueError(
            f"Invalid value for 'path': '{path}' must end in .xdf to be written as XDF. Use "
            "acquisition.io.write_recording to write another format (.fif) by its extension."
        )
    data = recording.data
    if data.dtype.name not in _DTYPE_FORMATS:
        data = data.astype(np.float64)
    info = make_stream_info(
        recording.name,
        _stream_type(recording),
        recording.channels,
        recording.sfreq,
        recording.source_id,
        channel_format=_DTYPE_FORMATS[data.dtype.name],
    )
    markers = sorted(recording.markers, key=lambda m: m.timestamp)
    marker_times = np.array([m.timestamp for m in markers], dtype=np.float64)
    with XdfWriter(path, overwrite=overwrite) as writer:
        writer.add_stream(1, info)
        writer.add_stream(
            2,
            name=f"{recording.name}-markers",
            stype="Markers",
            channel_format="string",
            source_id=f"{recording.source_id}-markers",
        )
        # one-second chunks, each followed by its markers, as the recorder writes them: a file
        # cut short keeps the markers of the part before the cut
        step = max(1, round(recording.sfreq))
        done = 0
        for start in range(0, recording.n_times, step):
            stamps = recording.timestamps[start : start + step]
            writer.write_samples(1, data[start : start + step], stamps)
            upto = int(np.searchsorted(marker_times, stamps[-1], "right"))
            if upto > done:
                writer.write_samples(
                    2, [[m.value] for m in markers[done:upto]], marker_times[done:upto]
                )
                done = upto
        if done < len(markers):  # markers after the last sample
            writer.write_samples(2, [[m.value] for m in markers[done:]], marker_times[done:])
    return path
